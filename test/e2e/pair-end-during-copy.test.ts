// Ending or restarting a pair while its initial copy runs (issue 9 item 4, found by hand):
//
// 1. On the primary, `pair set --to SAME_URL`, `pair suspend` and `pair delete --force` during the
//    copy left the copy's open volume handles to the garbage collector, which Node treats as
//    fatal ("A FileHandle object was closed during garbage collection"): the primary died
//    seconds later. Checked deterministically by counting the primary's open descriptors of the
//    volume file (/proc/PID/fd): one (the volume's own) when no copy runs, three while one reads
//    it; after each command no handle of an ended copy stays open, and the node stays up.
// 2. The secondary of a pair the primary deleted during the copy stayed `copying` for ever, with
//    nothing that could remove it. Now its status names why (the primary ended the pair), health
//    is degraded, and `pair delete G --force` there ends it: an ordinary group marked as holding
//    an incomplete copy, read-only until `--promote`, which group and volume delete can remove.
//
// The copy is kept running by a proxy on the replication link that drops every COPY_ACK: the
// primary has sent its chunks and waits for their answers with its readers open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readlinkSync } from "node:fs";
import path from "node:path";
import { HostClient } from "../../src/client/host-client.ts";
import { cli, cliOk, mgmtJson, startNode, waitFor, type RunningNode } from "./harness.ts";
import { makeGroup, pairInfo, runDrill } from "./drill-lib.ts";
import { ReplProxy } from "./repl-proxy.ts";

const MiB = 1024 * 1024;
const copyAck = 12; // COPY_ACK (docs/replication-protocol.md §4)

/** How many descriptors of process `pid` are open on a volume file of `node`'s data directory. */
function volumeHandles(node: RunningNode): number {
  const volumesDir = path.join(node.dataDir, "volumes");
  let count = 0;
  for (const fd of readdirSync(`/proc/${node.pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${node.pid}/fd/${fd}`);
      if (target.startsWith(volumesDir + path.sep) && target.endsWith(".vol")) count += 1;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

async function fill(node: RunningNode, volume: string, mebibytes: number): Promise<void> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    const handle = await client.open(volume);
    for (let i = 0; i < mebibytes; i++) await handle.write(i * MiB, Buffer.alloc(MiB, 0x40 + (i % 64)), { fua: i === mebibytes - 1 });
  } finally {
    await client.close();
  }
}

async function writeError(node: RunningNode, volume: string): Promise<string> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    await (await client.open(volume)).write(0, Buffer.alloc(4096, 0x11), { fua: true });
    return "";
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.close();
  }
}

function oneLineRefusal(result: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, result.stderr);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, pattern);
}

function assertAlive(node: RunningNode): void {
  assert.ok(node.running(), `node ${node.id} is up\n${node.logTail(20)}`);
  assert.doesNotMatch(node.logTail(100_000), /"event":"fatal"/);
}

void test("pair set, suspend and delete --force during the initial copy close the copy's handles; the secondary's copy can be ended there", { timeout: 300_000 }, (t) => runDrill(t, async () => {
  const proxy = await ReplProxy.start();
  const b = await startNode({ id: "copy-b", extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] });
  proxy.setTarget(b.replPort);
  const a = await startNode({ id: "copy-a" });
  proxy.policy = (_conn, direction, type) => (direction === "toPrimary" && type === copyAck ? "drop" : "forward");
  await makeGroup(a, "g", [{ name: "v1", size: "32M" }]);
  await fill(a, "v1", 12);
  assert.equal(volumeHandles(a), 1, "the volume's own handle");

  // `pair create` in the background, as the user ran it; its copy never finishes here.
  const creating = cli(["pair", "create", "g", "--to", b.mgmtUrl, "--streams", "2"], { node: a.mgmtUrl, timeoutMs: 240_000 });
  await waitFor("the copy's readers open", () => volumeHandles(a) === 3, { timeoutMs: 60_000 });

  // pair set to the same URL: the old link's copy handles close; the new link copies again.
  await cliOk(["pair", "set", "g", "--to", b.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 60_000 });
  await waitFor("the new link's copy reading", () => volumeHandles(a) === 3, { timeoutMs: 60_000 });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  assert.ok(volumeHandles(a) <= 3, `no handle of the ended link's copy stays open (${volumeHandles(a)} open)`);
  assertAlive(a);

  // suspend: the copy stops and its handles close; resume copies again.
  await cliOk(["pair", "suspend", "g"], { node: a.mgmtUrl });
  await waitFor("the suspended copy's handles closed", () => volumeHandles(a) === 1, { timeoutMs: 10_000 });
  await cliOk(["pair", "resume", "g"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  await waitFor("the resumed copy reading", () => volumeHandles(a) === 3, { timeoutMs: 60_000 });

  // delete --force on the primary: this side ends, every handle of the copy closes.
  const forced = await cliOk(["pair", "delete", "g", "--force"], { node: a.mgmtUrl, timeoutMs: 120_000 });
  assert.match(forced.stdout, /^deleted the pair of group g: replication ended, the group stays writable; the secondary's side: left as it is: .*initial copy.*tidemark pair delete g --force --node http:\/\/127\.0\.0\.1:\d+/);
  await waitFor("the deleted pair's copy handles closed", () => volumeHandles(a) === 1, { timeoutMs: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  assertAlive(a);
  await creating.catch(() => undefined);

  // The secondary: still copying, but it says why, and health is degraded.
  const bInfo = await pairInfo(b, "g");
  assert.equal(bInfo.state, "copying");
  assert.match(bInfo.reason ?? "", /primary .* ended the pair.*tidemark pair delete g --force/);
  const health = await mgmtJson(b.mgmtUrl, "/v1/health") as { status: string; reasons?: string[] };
  assert.equal(health.status, "degraded");
  assert.match((health.reasons ?? []).join("\n"), /group g: .*ended the pair/);

  // On the secondary without --force: refused with what to type; with --force: an incomplete copy, read-only.
  oneLineRefusal(await cli(["pair", "delete", "g"], { node: b.mgmtUrl }), /initial copy.*tidemark pair delete g --force.*TM_ERR_STATE/);
  oneLineRefusal(await cli(["pair", "takeover", "g", "--force"], { node: b.mgmtUrl, timeoutMs: 60_000 }), /initial copy/);
  const ended = await cliOk(["pair", "delete", "g", "--force"], { node: b.mgmtUrl, timeoutMs: 60_000 });
  assert.match(ended.stdout, /^deleted the pair of group g on this node during its initial copy: its volumes hold an incomplete copy, consistent with no point in time, read-only \(writable with: tidemark pair delete g --promote\)\n$/);
  const pairs = JSON.parse((await cliOk(["pair", "status", "--json"], { node: b.mgmtUrl })).stdout) as { pairs: { group: string }[] };
  assert.deepEqual(pairs.pairs.map((p) => p.group), []);
  assert.match(await writeError(b, "v1"), /read-only/);
  const groups = (await cliOk(["group", "list"], { node: b.mgmtUrl })).stdout;
  assert.match(groups, /incomplete initial copy/);
  assert.match(b.logTail(100_000), /"event":"pair_deleted".*"incompleteCopy":true/);
  assert.equal((await mgmtJson(b.mgmtUrl, "/v1/health") as { status: string }).status, "ok");

  // A restart keeps it; --promote makes it writable and says so; then it can be removed.
  await b.kill();
  await b.restart();
  assert.match(await writeError(b, "v1"), /read-only/);
  const promoted = await cliOk(["pair", "delete", "g", "--promote"], { node: b.mgmtUrl });
  assert.match(promoted.stdout, /^group g has no pair; its volumes are writable now \(they hold an incomplete initial copy/);
  assert.equal(await writeError(b, "v1"), "");
  await cliOk(["group", "delete", "g"], { node: b.mgmtUrl });
  await cliOk(["volume", "delete", "v1", "--force"], { node: b.mgmtUrl });

  // A new pair of the same group from the primary now works (copy not blocked by the old one).
  proxy.policy = () => "forward";
  await cliOk(["pair", "create", "g", "--to", b.mgmtUrl, "--streams", "2"], { node: a.mgmtUrl, timeoutMs: 120_000 });
  assert.equal((await pairInfo(a, "g")).state, "replicating");
  assertAlive(a);
  await a.stop();
  await b.stop();
}));
