// Proves fencing against split brain with real processes (issue 8 kind 2; docs/replication.md,
// "Fencing"):
// 1. Takeover with the primary alive, while a host writes to it: the primary is fenced first
//    (state `fenced` with a reason and since when, /v1/health degraded), every write it answered
//    is on the secondary after the takeover, and a write to its export gets EPERM (qemu-io, and
//    the host protocol) with a log line; `pair unfence` is refused without --force (its peer took
//    over) and with --force makes it writable on its own.
// 2. Takeover with the primary killed: refused without --force (one line that says what --force
//    means); with it, the pair gets a new generation. The old primary, cut off from the secondary
//    before it was killed, had accepted writes the secondary never got; restarted, it is refused at
//    the handshake, fences itself, reports those writes, and nothing of it reaches the new data.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { HostClient } from "../../src/index.ts";
import { cli, cliOk, mgmtJson, requireTool, run, runOk, sleep, waitFor, type RunningNode } from "./harness.ts";
import { makeGroup, pairCreate, pairInfo, pairWait, runDrill, startPairNodes } from "./drill-lib.ts";
import { TcpProxy } from "./tcp-proxy.ts";

const kib = 1024;

function logEvents(node: RunningNode, event: string): number {
  return node.logTail(100_000).split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

/** Block `index`: 4 KiB that say which write they are. */
function block(index: number): Buffer {
  const digest = createHash("sha256").update(`fencing block ${index}`).digest();
  const out = Buffer.alloc(4 * kib);
  for (let at = 0; at < out.length; at += digest.length) digest.copy(out, at);
  return out;
}

async function readBlock(node: RunningNode, volume: string, index: number): Promise<Buffer> {
  const client = await HostClient.connect({ host: "127.0.0.1", port: node.hostPort });
  try {
    return await (await client.open(volume)).read(index * 4 * kib, 4 * kib);
  } finally {
    await client.close();
  }
}

async function volumeDigest(node: RunningNode, volume: string, blocks: number): Promise<string> {
  const client = await HostClient.connect({ host: "127.0.0.1", port: node.hostPort });
  try {
    const handle = await client.open(volume);
    const hash = createHash("sha256");
    for (let at = 0; at < blocks; at += 256) hash.update(await handle.read(at * 4 * kib, Math.min(256, blocks - at) * 4 * kib));
    return hash.digest("hex");
  } finally {
    await client.close();
  }
}

void test("fencing: takeover with the primary alive fences it first; nothing it answered is lost; its writes get EPERM; unfence needs --force", { timeout: 180_000 }, (t) => runDrill(t, async () => {
  if (!requireTool(t, "qemu-io")) return;
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g", [{ name: "v1", size: "64M" }]);
  await pairCreate(a, "g", b, { streams: 2 });

  // A host writes block after block, each after the previous answer, until a write is refused.
  const client = await HostClient.connect({ host: "127.0.0.1", port: a.hostPort });
  const volume = await client.open("v1");
  const answered: number[] = [];
  let refusal: { code: string; message: string } | undefined;
  let stop = false;
  const writer = (async () => {
    for (let index = 1; !stop && index < 16_000; index++) {
      try {
        await volume.write(index * 4 * kib, block(index));
        answered.push(index);
      } catch (error) {
        refusal = { code: (error as { code?: string }).code ?? "?", message: (error as Error).message };
        return;
      }
    }
  })();
  await waitFor("the host has written a while", () => Promise.resolve(answered.length >= 200 ? true : undefined), { timeoutMs: 30_000 });

  const taken = await cliOk(["pair", "takeover", "g", "--json"], { node: b.mgmtUrl, timeoutMs: 120_000 });
  const result = (JSON.parse(taken.stdout) as { results: { group: string; reflectedSequence: number; primary?: { fenced: boolean; lastAcceptedSequence: number | null; lastWriteSequence: number | null; forced: boolean } }[] }).results[0];
  t.diagnostic(`takeover: ${JSON.stringify(result)}`);
  assert.ok(result?.primary?.fenced === true && !result.primary.forced, "the primary was fenced, not forced");
  assert.ok(result.reflectedSequence >= (result.primary.lastWriteSequence ?? Number.POSITIVE_INFINITY), "the cut is at or past the last write the fenced primary accepted");
  await waitFor("the host's writes are refused", () => Promise.resolve(refusal ?? (answered.length >= 15_999 ? { code: "none", message: "" } : undefined)), { timeoutMs: 30_000 });
  stop = true;
  await writer;
  await client.close().catch(() => undefined);
  t.diagnostic(`${answered.length} writes answered before the fence; then: ${JSON.stringify(refusal)}`);
  assert.equal(refusal?.code, "EPERM", "a write to the fenced primary gets EPERM over the host protocol");

  // Every write the primary answered is on the secondary.
  const client2 = await HostClient.connect({ host: "127.0.0.1", port: b.hostPort });
  try {
    const onB = await client2.open("v1");
    for (const index of answered) {
      const got = await onB.read(index * 4 * kib, 4 * kib);
      assert.ok(got.equals(block(index)), `write ${index} answered by the primary before the fence is on the secondary`);
    }
  } finally {
    await client2.close();
  }

  // The primary: fenced, with a reason and since when; health degraded; its writes get EPERM with a log line.
  const fenced = await waitFor("the primary learns the secondary took over", async () => {
    const info = await pairInfo(a, "g");
    return info.state === "fenced" && info.fence?.peerTookOver === true && info.fence.lateWrites !== null ? info : undefined;
  }, { timeoutMs: 30_000 });
  t.diagnostic(`A: ${fenced.state}: ${String(fenced.reason)}`);
  assert.match(fenced.reason ?? "", /fenced/);
  assert.ok(fenced.fence !== null && fenced.fence !== undefined && fenced.fence.since !== "", "since when");
  assert.equal(fenced.fence.lateWrites, 0, "no write was accepted after the fence");
  const health = (await mgmtJson(a.mgmtUrl, "/v1/health")) as { status: string; reasons?: string[] };
  assert.equal(health.status, "degraded");
  assert.ok(health.reasons?.some((r) => /g is fenced/.test(r)), JSON.stringify(health));
  const refused = await run("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${a.nbdPort}/v1`, "-c", "write -P 0x55 0 4k"], { timeoutMs: 30_000 });
  assert.match(refused.stdout + refused.stderr, /Operation not permitted/i, `qemu-io's write to the fenced primary gets EPERM: ${refused.stdout}${refused.stderr}`);
  assert.ok(logEvents(a, "fenced_write_refused") >= 1, "a log line says a write was refused");
  assert.ok(logEvents(a, "pair_fenced") >= 1, "a log line says the group was fenced");

  // The status command shows it.
  const status = await cliOk(["pair", "status", "g"], { node: a.mgmtUrl });
  assert.match(status.stdout, /fenced/);

  // Unfence: refused without --force (the secondary took over), then writable on its own.
  const plain = await cli(["pair", "unfence", "g"], { node: a.mgmtUrl });
  assert.notEqual(plain.code, 0);
  assert.match(plain.stderr, /--force/);
  assert.match(plain.stderr, /TM_ERR_PEER_TOOK_OVER/);
  const forced = await cliOk(["pair", "unfence", "g", "--force"], { node: a.mgmtUrl });
  t.diagnostic(`unfence --force: ${forced.stdout.trim()}`);
  await runOk("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${a.nbdPort}/v1`, "-c", "write -P 0x55 0 4k"], { timeoutMs: 30_000 });
  // Nothing of it reaches the secondary: the pair ended.
  await sleep(1_000);
  assert.ok(!(await readBlock(b, "v1", 0)).equals(Buffer.alloc(4 * kib, 0x55)), "the unfenced primary's write is not replicated");
  await a.stop();
  await b.stop();
}));

void test("fencing: takeover with the primary killed needs --force; the old primary restarted is refused, fences itself, reports its late writes, and nothing reaches the new data", { timeout: 180_000 }, (t) => runDrill(t, async () => {
  const proxy = await TcpProxy.start();
  const { a, b } = await startPairNodes({ b: { extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] } });
  proxy.setTarget(b.replPort);
  await makeGroup(a, "g", [{ name: "v1", size: "16M" }]);
  await pairCreate(a, "g", b, { streams: 1 });
  const client = await HostClient.connect({ host: "127.0.0.1", port: a.hostPort });
  const volume = await client.open("v1");
  for (let index = 1; index <= 50; index++) await volume.write(index * 4 * kib, block(index));
  await pairWait(a, "g");

  // Cut off, the primary takes writes the secondary never gets; then it is killed.
  await proxy.cut();
  await waitFor("A sees the link down", async () => ((await pairInfo(a, "g")).link.connectedStreams === 0 ? true : undefined), { timeoutMs: 15_000 });
  const late = 7;
  for (let index = 100; index < 100 + late; index++) await volume.write(index * 4 * kib, block(index));
  await volume.flush();
  await client.close();
  await a.kill();
  // B notices its stream is gone (the proxy reset it).
  await waitFor("B has no stream from A", async () => ((await pairInfo(b, "g")).link.connectedStreams === 0 ? true : undefined), { timeoutMs: 30_000 });

  const refused = await cli(["pair", "takeover", "g"], { node: b.mgmtUrl, timeoutMs: 60_000 });
  t.diagnostic(`takeover without --force: ${refused.stderr.trim()}`);
  assert.notEqual(refused.code, 0, "a takeover without --force is refused while the primary cannot be reached");
  assert.match(refused.stderr, /cannot be reached/);
  assert.match(refused.stderr, /--force declares the primary site lost/);
  assert.match(refused.stderr, /TM_ERR_PRIMARY_UNREACHABLE/);
  // Cut off from its primary the secondary shows disconnected (issue 9's states); the refused takeover changed nothing of that.
  assert.equal((await pairInfo(b, "g")).state, "disconnected", "the refused takeover changed nothing");

  const taken = await cliOk(["pair", "takeover", "g", "--force"], { node: b.mgmtUrl, timeoutMs: 60_000 });
  t.diagnostic(`takeover --force: ${taken.stdout.trim()}`);
  assert.match(taken.stdout, /forced/);
  assert.match(taken.stdout, /generation 2/);
  // New data on the secondary, now the writable copy.
  const onB = await HostClient.connect({ host: "127.0.0.1", port: b.hostPort });
  const bVolume = await onB.open("v1");
  for (let index = 100; index < 110; index++) await bVolume.write(index * 4 * kib, block(10_000 + index));
  await bVolume.flush();
  await onB.close();
  const before = await volumeDigest(b, "v1", 4096);

  // The old primary comes back, with the link working again.
  await proxy.restore();
  await a.restart();
  const fenced = await waitFor("the old primary is refused and fences itself", async () => {
    const info = await pairInfo(a, "g");
    return info.state === "fenced" && info.fence?.peerTookOver === true && info.fence.lateWrites !== null ? info : undefined;
  }, { timeoutMs: 30_000 });
  t.diagnostic(`A: ${String(fenced.reason)}`);
  assert.ok((fenced.fence?.lateWrites ?? 0) >= late, `the late writes are reported (${String(fenced.fence?.lateWrites)} >= ${late})`);
  assert.match(fenced.reason ?? "", /host writes were accepted here after the takeover's cut/);
  assert.ok(logEvents(a, "stale_primary_late_writes") >= 1, "a log line reports them");
  assert.ok(logEvents(a, "stale_primary_fenced") >= 1, "a log line says it fenced itself");
  assert.ok(logEvents(b, "repl_open_refused") >= 1, "the secondary refused it at the handshake");
  const aClient = await HostClient.connect({ host: "127.0.0.1", port: a.hostPort });
  try {
    await assert.rejects((await aClient.open("v1")).write(0, block(1)), (error: { code?: string }) => error.code === "EPERM", "the old primary refuses writes");
  } finally {
    await aClient.close();
  }
  await sleep(2_000);
  assert.equal(await volumeDigest(b, "v1", 4096), before, "nothing of the old primary reached the secondary's new data");
  assert.ok((await readBlock(b, "v1", 100)).equals(block(10_100)), "the new data is there");
  await a.stop();
  await b.stop();
}));
