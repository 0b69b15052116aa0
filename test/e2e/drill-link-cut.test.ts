// Proves a cut link is reported and healed (I4): B advertises a TCP proxy as its replication
// address; while random writes run on A, the proxy resets every connection and refuses new
// ones for a few seconds; `pair status` must show the link down with a reason and the lag
// growing; once the proxy is back the pair reconnects, `pair wait` returns, and A's and B's
// images are equal byte for byte. Seeded; see docs/drills.md.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Prng, runDrill, assertSameImages, describePair, makeGroup, pairCreate, pairInfo, pairWait, phaseClock, sleep,
  startLoad, startPairNodes, waitReflectedProgress, type PairInfoView,
} from "./drill-lib.ts";
import { cliOk, waitFor } from "./harness.ts";
import { TcpProxy } from "./tcp-proxy.ts";

const mib = 1024 * 1024;
const streams = 4;

async function pairStatusJson(mgmtUrl: string, group: string): Promise<PairInfoView> {
  const { stdout } = await cliOk(["pair", "status", group, "--json"], { node: mgmtUrl });
  return JSON.parse(stdout) as PairInfoView;
}

void test("drill 3: cut the link through a TCP proxy while writes run; status shows it down with a reason and growing lag; heals; images equal", { timeout: 180_000 }, (t) => runDrill(t, async (seed) => {
  const prng = new Prng(seed);
  const phase = phaseClock(t);
  const proxy = await TcpProxy.start();
  const { a, b } = await startPairNodes({ b: { extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] } });
  proxy.setTarget(b.replPort);
  await makeGroup(a, "g1", [{ name: "v1", size: "64M" }, { name: "v2", size: "32M" }]);
  await pairCreate(a, "g1", b, { transfer: "push", streams });
  phase(`nodes up, pair replicating through proxy :${proxy.port} -> B :${b.replPort} (push, ${streams} streams)`);
  assert.ok(proxy.accepted >= streams, `the pair's streams go through the proxy (${proxy.accepted} connections accepted)`);

  const load = await startLoad(a, [
    { volume: "v1", via: "host", sizeBytes: 64 * mib },
    { volume: "v2", via: "nbd", sizeBytes: 32 * mib },
  ], prng);
  await waitReflectedProgress(b, ["g1"], 50);
  await sleep(prng.int(200, 1_500));

  await proxy.cut();
  phase("link cut (connections reset, new ones refused)");
  const down = await waitFor("A to report the link down", async () => {
    const info = await pairStatusJson(a.mgmtUrl, "g1");
    return info.link.connectedStreams === 0 ? info : undefined;
  }, { timeoutMs: 15_000, intervalMs: 100 });
  t.diagnostic(`status, link down: ${describePair(down)}`);
  assert.ok(down.reason !== null && down.reason !== "", `pair status gives a reason while the link is down (${describePair(down)})`);
  assert.ok(down.link.lastError !== null, "pair status gives the link's last error");

  const cutMs = prng.int(2_000, 4_000);
  await sleep(cutMs);
  const later = await pairStatusJson(a.mgmtUrl, "g1");
  t.diagnostic(`status ${cutMs} ms later: ${describePair(later)}`);
  const { stdout: human } = await cliOk(["pair", "status", "g1"], { node: a.mgmtUrl });
  t.diagnostic(`pair status (human):\n${human}`);
  assert.equal(later.link.connectedStreams, 0, "still down while the proxy refuses");
  assert.ok(later.reason !== null && later.reason !== "", "still a reason");
  assert.ok(later.lagRecords > down.lagRecords, `lag in records grows while the link is down (${down.lagRecords} -> ${later.lagRecords})`);
  assert.ok(later.lagSeconds > down.lagSeconds, `lag in seconds grows while the link is down (${down.lagSeconds} -> ${later.lagSeconds})`);
  assert.equal(load.report.failure, "", "writes on A go on while the link is down");

  await proxy.restore();
  phase("link restored");
  await waitFor("A reconnected through the proxy", async () => (await pairInfo(a, "g1")).link.connectedStreams === streams, { timeoutMs: 30_000 });
  phase(`reconnected: ${describePair(await pairInfo(a, "g1"))}`);
  await sleep(prng.int(300, 1_500));
  const report = await load.stop();
  phase(`load stopped: ${report.writes} writes, ${(report.bytes / mib).toFixed(1)} MiB`);
  assert.equal(report.failure, "", "no write failed on A");

  const waited = await pairWait(a, "g1", "90s");
  phase(`pair wait: ${waited}`);
  const healed = await pairStatusJson(a.mgmtUrl, "g1");
  t.diagnostic(`after wait: ${describePair(healed)}`);
  assert.equal(healed.state, "replicating");
  assert.equal(healed.reason, null, "no reason left once the link is healthy");
  await assertSameImages(a, b, "v1");
  await assertSameImages(a, b, "v2");
  phase("images equal");
}));
