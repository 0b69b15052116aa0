// Proves that `pair wait` on an idle pair returns as soon as the secondary reflected the
// last host write (a finding of issue 6's review): the secondary reports reflection as it
// happens, not with the next batch's ACK, which on an idle push pair is the next time-advance
// heartbeat, seconds away. Push and pull; the wait is read from pair wait's own report.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NbdClient, makeGroup, pairCreate, pairWait, startPairNodes } from "./drill-lib.ts";
import { sleep } from "./harness.ts";

for (const transfer of ["push", "pull"] as const) {
  void test(`pair wait on an idle ${transfer} pair returns within a second of the write being reflected`, { timeout: 60_000 }, async (t) => {
    const { a, b } = await startPairNodes();
    await makeGroup(a, "g", [{ name: "v", size: "4M" }]);
    await pairCreate(a, "g", b, { transfer, streams: 2 });
    await sleep(6_000); // idle: past a heartbeat, so no batch is on its way
    const client = await NbdClient.connect(a.nbdPort, "v");
    await client.write(0, Buffer.alloc(4096, 9), { fua: true });
    await client.close();
    const waited = await pairWait(a, "g", "30s");
    t.diagnostic(waited);
    const seconds = Number(/after ([\d.]+)s/.exec(waited)?.[1] ?? "NaN");
    assert.ok(seconds < 1, `pair wait took ${String(seconds)} s: the secondary's reflection was reported late`);
  });
}
