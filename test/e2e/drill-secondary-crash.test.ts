// Proves a secondary crash loses nothing (I4): while random writes run on A over the host
// protocol and NBD, the secondary B is kill -9'd mid-stream at a random moment, stays down a
// while, and is restarted on the same data dir; the pair reconnects and catches up, `pair wait`
// returns, and after a quiesce A's and B's images are equal byte for byte. Seeded; docs/drills.md.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Prng, runDrill, assertSameImages, describePair, makeGroup, pairCreate, pairInfo, pairWait, phaseClock, sleep,
  startLoad, startPairNodes, waitReflectedProgress,
} from "./drill-lib.ts";
import { waitFor } from "./harness.ts";

const mib = 1024 * 1024;

void test("drill 2: kill -9 the secondary mid-stream, restart it, the pair catches up and the images are equal", { timeout: 180_000 }, (t) => runDrill(t, async (seed) => {
  const prng = new Prng(seed);
  const phase = phaseClock(t);
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g1", [{ name: "v1", size: "64M" }, { name: "v2", size: "32M" }]);
  await pairCreate(a, "g1", b, { transfer: "pull", streams: 3 });
  phase("nodes up, pair replicating (pull, 3 streams)");

  const load = await startLoad(a, [
    { volume: "v1", via: "host", sizeBytes: 64 * mib },
    { volume: "v1", via: "host", sizeBytes: 64 * mib },
    { volume: "v2", via: "nbd", sizeBytes: 32 * mib },
  ], prng);
  await waitReflectedProgress(b, ["g1"], 50);
  await sleep(prng.int(200, 2_000));
  const beforeKill = await pairInfo(a, "g1");
  await b.kill();
  phase(`B killed: ${describePair(beforeKill)}`);

  const downMs = prng.int(1_000, 4_000);
  await sleep(downMs);
  const whileDown = await pairInfo(a, "g1");
  t.diagnostic(`A while B down ${downMs} ms: ${describePair(whileDown)}`);
  assert.equal(load.report.failure, "", "writes on A go on while the secondary is down");
  assert.equal(whileDown.link.connectedStreams, 0, "A sees no stream while B is down");
  assert.ok(whileDown.acceptedSequence > beforeKill.acceptedSequence, "A kept accepting writes while B was down");

  await b.restart();
  phase("B restarted");
  await waitFor("A reconnected to B", async () => (await pairInfo(a, "g1")).link.connectedStreams === 3, { timeoutMs: 30_000 });
  phase(`A reconnected: ${describePair(await pairInfo(a, "g1"))}`);
  await sleep(prng.int(500, 2_000));
  const report = await load.stop();
  phase(`load stopped: ${report.writes} writes, ${(report.bytes / mib).toFixed(1)} MiB`);
  assert.equal(report.failure, "", "no write failed on A");

  const waited = await pairWait(a, "g1", "90s");
  phase(`pair wait: ${waited}`);
  const after = await pairInfo(a, "g1");
  t.diagnostic(`A after wait: ${describePair(after)}`);
  assert.equal(after.state, "replicating");
  await assertSameImages(a, b, "v1");
  await assertSameImages(a, b, "v2");
  phase("images equal");
}));
