// Two primaries pairing groups to one secondary (a user tried it; issue 6's review): by
// default each primary is its own consistency domain (CONTRACT.md). The secondary once put
// them in one time domain, where their positions are not comparable (each primary numbers
// its own accepts; NBD writes under --write-time host carry time 0): it stopped on the
// reflector's ordering assertion within seconds and could not start again, or it silently
// stopped applying one primary's groups. Both pairs must replicate, through a kill -9 and a
// restart of the secondary, and the images end equal.
import assert from "node:assert/strict";
import { test } from "node:test";
import { assertSameImages, NbdClient } from "./drill-lib.ts";
import { cliOk, startNode } from "./harness.ts";

void test("two primaries pair to one secondary: each is its own domain; both replicate, the secondary survives kill -9 and restarts", { timeout: 180_000 }, async () => {
  const p = await startNode({ id: "tp-p" });
  const t = await startNode({ id: "tp-t" });
  const s = await startNode({ id: "tp-s" });
  for (const [node, volume, group] of [[p, "v1", "g1"], [t, "t1", "gt"]] as const) {
    await cliOk(["volume", "create", volume, "--size", "16M"], { node: node.mgmtUrl });
    await cliOk(["group", "create", group, "--volumes", volume], { node: node.mgmtUrl });
    await cliOk(["pair", "create", group, "--to", s.mgmtUrl], { node: node.mgmtUrl, timeoutMs: 60_000 });
  }
  const write = async (node: typeof p, volume: string, round: number): Promise<void> => {
    const client = await NbdClient.connect(node.nbdPort, volume);
    for (let i = 0; i < 16; i += 1) await client.write((round * 16 + i) * 65536, Buffer.alloc(65536, (round * 16 + i) % 250 + 1));
    await client.flush();
    await client.close();
  };
  await Promise.all([write(p, "v1", 0), write(t, "t1", 0)]);
  await cliOk(["pair", "wait", "g1", "--timeout", "30s"], { node: p.mgmtUrl });
  await cliOk(["pair", "wait", "gt", "--timeout", "30s"], { node: t.mgmtUrl });
  assert.ok(s.running(), "the secondary is up");
  await s.kill();
  await Promise.all([write(p, "v1", 1), write(t, "t1", 1)]);
  await s.restart();
  await Promise.all([write(p, "v1", 2), write(t, "t1", 2)]);
  await cliOk(["pair", "wait", "g1", "--timeout", "60s"], { node: p.mgmtUrl });
  await cliOk(["pair", "wait", "gt", "--timeout", "60s"], { node: t.mgmtUrl });
  assert.ok(s.running(), "the secondary is still up");
  await assertSameImages(p, s, "v1");
  await assertSameImages(t, s, "t1");
});
