// Proves that pair status tells the truth on both sides (issue 9 item 1), with real nodes and
// the secondary's replication port behind a TCP proxy: an idle healthy pair shows lag 0 and a
// consistent-as-of time that moves (time advances carry the primary's wall time), a normal
// pair create logs no warning, `pair status --check` exits 0 and `--watch` prints a block per
// interval on a non-terminal until SIGINT; with the link cut, both sides say `disconnected`
// (since when, the last error), the secondary's consistent-as-of stops while its lag seconds
// grows past its age, the primary's lag counts exactly the host writes it took, `--check`
// exits 1 with one line, each node logs the change once (not per retry), and all heals.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import { describePair, makeGroup, pairCreate, pairInfo, pairWait, startPairNodes, type PairInfoView } from "./drill-lib.ts";
import { cli, mgmtJson, nodeBin, onCleanup, repoRoot, sleep, tidemarkBin, waitFor, type RunningNode } from "./harness.ts";
import { TcpProxy } from "./tcp-proxy.ts";

function logEvents(node: RunningNode, event: string): string[] {
  return node.logTail(1_000_000).split("\n").filter((line) => line.includes(`"event":"${event}"`));
}

function warnings(node: RunningNode): string[] {
  return node.logTail(1_000_000).split("\n").filter((line) => /"level":(4|5|6)\d/.test(line));
}

/** Runs `tidemark pair status --watch` with stdout a pipe for `forMs`, then SIGINT; its exit and output. */
async function watchFor(node: RunningNode, args: readonly string[], forMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(nodeBin, [tidemarkBin, "pair", "status", ...args, "--watch", "--node", node.mgmtUrl], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const cleanup = onCleanup(`watch pid ${String(child.pid)}`, () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("close", (code: number | null) => resolve(code)));
  await sleep(forMs);
  child.kill("SIGINT");
  const code = await Promise.race([exited, sleep(10_000).then(() => "hung" as const)]);
  await cleanup.run();
  assert.notEqual(code, "hung", "--watch stops on SIGINT");
  return { code: code === "hung" ? null : code, stdout, stderr };
}

void test("pair states on both sides: idle and healthy, then the link cut (disconnected, consistent-as-of stops, lag grows), then healed", { timeout: 240_000 }, async (t) => {
  const proxy = await TcpProxy.start();
  const { a, b } = await startPairNodes({ b: { extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] } });
  proxy.setTarget(b.replPort);
  await makeGroup(a, "g1", [{ name: "v1", size: "16M" }]);
  await pairCreate(a, "g1", b, { streams: 2 });
  const host = await HostClient.connect({ port: a.hostPort });
  onCleanup("host client", () => host.close());
  const v1 = await host.open("v1");
  for (let i = 0; i < 4; i++) await v1.write(i * 8192, Buffer.alloc(4096, 1 + i), { fua: true });
  await pairWait(a, "g1", "30s");
  assert.deepEqual([...warnings(a), ...warnings(b)], [], "a normal pair create logs no warning on either node");

  // ---- idle and healthy ------------------------------------------------------------------
  const idleA = await pairInfo(a, "g1");
  const idleB = await pairInfo(b, "g1");
  t.diagnostic(`idle: A ${describePair(idleA)} consistentAsOf ${String(idleA.consistentAsOf)}; B ${describePair(idleB)} consistentAsOf ${String(idleB.consistentAsOf)}`);
  for (const [side, info] of [["primary", idleA], ["secondary", idleB]] as const) {
    assert.equal(info.state, "replicating", side);
    assert.equal(info.lagRecords, 0, `${side}: an idle pair has no lag in records`);
    assert.equal(info.lagBytes, 0, `${side}: nor in bytes`);
    assert.equal(info.lagSeconds, 0, `${side}: nor in seconds`);
    assert.ok(info.consistentAsOf !== null && info.lastContact !== null, `${side}: consistent-as-of and last contact are known`);
  }
  const firstB = Date.parse(idleB.consistentAsOf ?? "");
  assert.ok(Date.now() - firstB < 30_000, `the secondary is consistent as of a recent time (${String(idleB.consistentAsOf)})`);
  // Nothing is written: time advances (an idle heartbeat every 5 s) carry the primary's wall time.
  const movedB = await waitFor("the secondary's consistent-as-of to move on an idle pair", async () => {
    const info = await pairInfo(b, "g1");
    return Date.parse(info.consistentAsOf ?? "") > firstB ? info : undefined;
  }, { timeoutMs: 30_000, intervalMs: 250 });
  assert.equal(movedB.lagRecords, 0, "still no lag: time advances are not host writes");
  assert.ok(Date.parse((await pairInfo(a, "g1")).consistentAsOf ?? "") >= firstB, "the primary's view moves too");

  for (const node of [a, b]) {
    const check = await cli(["pair", "status", "--check"], { node: node.mgmtUrl });
    assert.equal(check.code, 0, `--check on ${node.id}: every pair healthy (${check.stdout}${check.stderr})`);
    assert.equal(check.stdout, "", "silent when healthy");
  }
  const watched = await watchFor(a, ["g1", "--interval", "500ms"], 2_500);
  const blocks = watched.stdout.split(/^--- /m).filter((block) => block !== "");
  t.diagnostic(`--watch printed ${blocks.length} blocks; the first:\n${blocks[0] ?? ""}`);
  assert.equal(watched.code, 0, `--watch ends with 0 on SIGINT (${watched.stderr})`);
  assert.ok(blocks.length >= 3, `a new block every 500 ms while stdout is a pipe: ${blocks.length}`);
  for (const block of blocks) assert.match(block, /^\d{4}-\d\d-\d\dT[^\n]*every 0\.5s[^\n]*\npair g1 \(primary, id [^)]+\)\n {2}state: +replicating\n[\s\S]*consistent as of: +\d{4}-/);
  const badInterval = await cli(["pair", "status", "--watch", "--interval", "1ms"], { node: a.mgmtUrl });
  assert.equal(badInterval.code, 2, "an interval out of range is a usage error");
  assert.match(badInterval.stderr, /^tidemark: --interval 1ms is out of range; use 0\.1s to /);

  // ---- the link cut ------------------------------------------------------------------------
  await proxy.cut();
  const cutAtMs = Date.now();
  for (let i = 0; i < 2; i++) await v1.write(12 * 4096 + i * 4096, Buffer.alloc(4096, 0x70 + i), { fua: true });
  const downA = await waitFor("the primary to show disconnected", async () => {
    const info = await pairInfo(a, "g1");
    return info.state === "disconnected" ? info : undefined;
  }, { timeoutMs: 20_000, intervalMs: 100 });
  const downB = await waitFor("the secondary to show disconnected", async () => {
    const info = await pairInfo(b, "g1");
    return info.state === "disconnected" ? info : undefined;
  }, { timeoutMs: 20_000, intervalMs: 100 });
  t.diagnostic(`cut: A ${describePair(downA)}; B ${describePair(downB)}`);
  for (const [side, info] of [["primary", downA], ["secondary", downB]] as const) {
    assert.ok(info.link.downSince !== null && Date.parse(info.link.downSince) >= cutAtMs - 2_000, `${side}: down since when (${String(info.link.downSince)})`);
    assert.equal(info.link.connectedStreams, 0, side);
  }
  assert.match(downA.reason ?? "", /^link to drill-b at 127\.0\.0\.1:\d+ down since \S+ \(last error: [^)]+\); retrying$/);
  assert.ok(downA.link.lastError !== null, "the primary says the last error");
  assert.match(downB.reason ?? "", /^no replication stream from primary drill-a since \S+ .*the primary reconnects by itself/);
  const frozen = downB.consistentAsOf;
  assert.ok(frozen !== null);
  await sleep(2_500);
  const laterA = await pairInfo(a, "g1");
  const laterB = await pairInfo(b, "g1");
  t.diagnostic(`2.5 s later: A ${describePair(laterA)}; B ${describePair(laterB)} consistentAsOf ${String(laterB.consistentAsOf)}`);
  assert.equal(laterB.consistentAsOf, frozen, "cut off, the secondary's consistent-as-of stops moving");
  const ageSeconds = (Date.now() - Date.parse(frozen)) / 1000;
  assert.ok(laterB.lagSeconds >= ageSeconds - 1, `cut off, the secondary's lag (${laterB.lagSeconds}s) is at least the age of consistent-as-of (${ageSeconds.toFixed(1)}s)`);
  assert.ok(laterB.lagSeconds > downB.lagSeconds, `and it grows (${downB.lagSeconds} -> ${laterB.lagSeconds})`);
  assert.equal(laterA.lagRecords, 2, "the primary's lag is exactly the two host writes it took");
  assert.equal(laterA.lagBytes, 2 * 4096, "and their bytes");
  assert.ok(laterA.lagSeconds >= 2 && laterA.lagSeconds > downA.lagSeconds, `and its lag in seconds grows (${downA.lagSeconds} -> ${laterA.lagSeconds})`);
  assert.ok(Date.parse(laterA.consistentAsOf ?? "") < cutAtMs + 1_000, "the primary's consistent-as-of is before its first unreflected write");

  const checkA = await cli(["pair", "status", "--check"], { node: a.mgmtUrl });
  assert.equal(checkA.code, 1, `--check on the primary: unhealthy (${checkA.stderr})`);
  assert.match(checkA.stdout, /^g1 \(primary\): disconnected: link to drill-b at [^\n]*; retrying\n$/);
  assert.equal(checkA.stderr, "tidemark: 1 of 1 pair is not healthy\n");
  const checkB = await cli(["pair", "status", "g1", "--check"], { node: b.mgmtUrl });
  assert.equal(checkB.code, 1);
  assert.match(checkB.stdout, /^g1 \(secondary\): disconnected: no replication stream from primary drill-a/);
  // /v1/health is degraded on both nodes, naming the disconnected pair.
  for (const [node, role] of [[a, "primary"], [b, "secondary"]] as const) {
    const health = await mgmtJson(node.mgmtUrl, "/v1/health") as { status: string; reasons: string[] };
    assert.equal(health.status, "degraded", `${role}: ${JSON.stringify(health)}`);
    assert.ok(health.reasons.some((r) => r.startsWith(`pair of group g1 disconnected (${role}): `)), `${role}: ${JSON.stringify(health.reasons)}`);
  }
  assert.equal(logEvents(a, "pair_disconnected").length, 1, `the primary logs the link going down once, not per retry:\n${logEvents(a, "pair_disconnected").join("\n")}`);
  assert.equal(logEvents(b, "pair_disconnected").length, 1, "the secondary too");

  // ---- healed --------------------------------------------------------------------------------
  await proxy.restore();
  await pairWait(a, "g1", "60s");
  const healedA = await waitFor("the primary replicating again", async () => {
    const info = await pairInfo(a, "g1");
    return info.state === "replicating" ? info : undefined;
  }, { timeoutMs: 30_000 });
  const healedB: PairInfoView = await waitFor("the secondary replicating, consistent-as-of moving again", async () => {
    const info = await pairInfo(b, "g1");
    return info.state === "replicating" && Date.parse(info.consistentAsOf ?? "") > Date.parse(frozen) ? info : undefined;
  }, { timeoutMs: 30_000 });
  t.diagnostic(`healed: A ${describePair(healedA)}; B ${describePair(healedB)}`);
  assert.equal(healedA.lagRecords, 0);
  assert.equal(healedA.reason, null);
  assert.equal(healedB.link.downSince, null);
  assert.equal(logEvents(a, "pair_reconnected").length, 1, "one line when the link is back");
  assert.equal(logEvents(b, "pair_reconnected").length, 1);
  assert.equal(logEvents(a, "repl_stream_lost").length, 0, "no line per lost stream or retry");
});
