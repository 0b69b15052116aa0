// Proves the timestamped host protocol against a real `tidemark node` process, and the three
// write-time policies end to end: with --write-time host the recorded write time is the largest
// host time sent and a write without a time (host protocol or NBD, any group) is stamped with
// it; with counter it counts the grouped writes; with clock it is the node's clock. Host-written
// data and the recorded time survive kill -9 after FLUSH. Judged through `tidemark status --json`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClient, type HostVolume } from "../../src/index.ts";
import type { GroupInfo, NodeStatus } from "../../src/mgmt/control.ts";
import { cliOk, mgmtJson, requireTool, run, type RunningNode, type WriteTimePolicy } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const volumeBytes = 4 * MiB;
/** 2023-11-14T22:13:20Z in microseconds: well away from the clock, so clock stamps can't pass for it. */
const t1Us = 1_700_000_000_000_000;

/** GET /v1/status: what `tidemark status --json` prints (that path is taken once per test, after the crash). */
async function statusJson(node: RunningNode): Promise<NodeStatus> {
  return await mgmtJson(node.mgmtUrl, "/v1/status") as NodeStatus;
}

async function statusCli(node: RunningNode): Promise<NodeStatus> {
  const result = await cliOk(["status", "--json"], { node: node.mgmtUrl });
  return JSON.parse(result.stdout) as NodeStatus;
}

function group(status: NodeStatus, name: string): GroupInfo {
  const found = status.groups.find((g) => g.name === name);
  assert.ok(found !== undefined, `group ${name} in ${JSON.stringify(status.groups)}`);
  return found;
}

/** Volumes h1 (group gh1), h2 (group gh2) and hsolo (no group). */
async function nodeWithVolumes(id: string, writeTime: WriteTimePolicy): Promise<RunningNode> {
  const node = await startNode({ id, writeTime });
  // Through the API (the CLI has its own tests), one after another: concurrent creates race
  // in the node (see node-cli.test.ts).
  for (const name of ["h1", "h2", "hsolo"]) await mgmtJson(node.mgmtUrl, "/v1/volumes", { name, sizeBytes: volumeBytes });
  await mgmtJson(node.mgmtUrl, "/v1/groups", { name: "gh1", volumes: ["h1"] });
  await mgmtJson(node.mgmtUrl, "/v1/groups", { name: "gh2", volumes: ["h2"] });
  return node;
}

function filled(lengthBytes: number, byte: number): Buffer {
  return Buffer.alloc(lengthBytes, byte);
}

async function assertBytes(volume: HostVolume, offsetBytes: number, expected: Buffer): Promise<void> {
  const actual = await volume.read(offsetBytes, expected.length);
  assert.ok(actual.equals(expected), `${volume.name} @${offsetBytes}+${expected.length}: read back differs`);
}

async function qemuIoOk(node: RunningNode, exportName: string, commands: readonly string[]): Promise<void> {
  const result = await run("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), node.nbdUri(exportName)], { timeoutMs: 30_000 });
  assert.equal(result.code, 0, `qemu-io ${commands.join(" ; ")}: ${result.stdout}${result.stderr}`);
  assert.doesNotMatch(result.stdout + result.stderr, /fail|error/i);
}

void test("--write-time host: recorded time is the largest host time; writes without a time get it; kill -9 after flush keeps data and time", async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const node = await nodeWithVolumes("host-wt", "host");
  const client = await HostClient.connect({ port: node.hostPort });
  t.after(() => client.close().catch(() => undefined));
  const h1 = await client.open("h1");
  const h2 = await client.open("h2");
  const solo = await client.open("hsolo");
  assert.equal(h1.sizeBytes, volumeBytes);
  assert.equal(h1.readOnly, false);

  const t2Us = t1Us + 500;
  // Out of order on purpose: the larger time goes first, in flight together with the smaller.
  await Promise.all([
    h1.write(4096, filled(4096, 0xb2), { writeTimeUs: t2Us }),
    h1.write(0, filled(4096, 0xb1), { writeTimeUs: t1Us }),
  ]);
  await h1.write(10_000, filled(3000, 0xb3)); // no time, unaligned
  await h1.flush();
  let status = await statusJson(node);
  assert.equal(status.writeTimePolicy, "host");
  assert.equal(status.recordedWriteTimeUs, t2Us, "recorded write time = largest host time sent");
  assert.equal(group(status, "gh1").lastWriteTimeUs, t2Us, "a write without a time is stamped with the recorded time");
  await assertBytes(h1, 0, filled(4096, 0xb1));
  await assertBytes(h1, 4096, filled(4096, 0xb2));
  await assertBytes(h1, 8192, Buffer.alloc(10_000 - 8192));
  await assertBytes(h1, 10_000, filled(3000, 0xb3));

  // Another group, no time: the node-wide recorded time, not its own (still 0) group time.
  await h2.write(0, filled(512, 0xc1));
  status = await statusJson(node);
  assert.equal(group(status, "gh2").lastWriteTimeUs, t2Us, "gh2's timeless write carries the node-wide recorded time");
  // A host time behind the recorded one does not take the time back.
  await h2.write(512, filled(512, 0xc2), { writeTimeUs: t1Us - 1_000_000 });
  status = await statusJson(node);
  assert.equal(status.recordedWriteTimeUs, t2Us, "an older host time does not lower the recorded time");
  assert.equal(group(status, "gh2").lastWriteTimeUs, t2Us, "an older host time is raised to the recorded time");

  // NBD writes carry no time: stamped with the recorded one.
  const t3Us = t2Us + 1_000_000;
  await h2.write(1024, filled(512, 0xc3), { writeTimeUs: t3Us, fua: true });
  await qemuIoOk(node, "h1", ["write -P 0xd1 65536 4096", "flush"]);
  status = await statusJson(node);
  assert.equal(status.recordedWriteTimeUs, t3Us);
  assert.equal(group(status, "gh1").lastWriteTimeUs, t3Us, "an NBD write is stamped with the recorded time");

  // Outside any group nothing is journaled, so nothing is stamped: a later time there is not recorded.
  await solo.write(0, filled(8192, 0xe1), { writeTimeUs: t3Us + 5_000_000 });
  await solo.flush();
  status = await statusJson(node);
  assert.equal(status.recordedWriteTimeUs, t3Us, "a write to a volume in no group does not move the recorded time");
  await assertBytes(solo, 0, filled(8192, 0xe1));

  // Crash after FLUSH: the data, and the recorded write time, come back.
  await h1.write(MiB + 7, filled(70_000, 0xf1), { writeTimeUs: t3Us + 10 });
  await h2.write(2 * MiB, filled(MiB, 0xf2));
  await solo.write(MiB, filled(4096, 0xf3), { writeTimeUs: t3Us + 20 });
  await Promise.all([h1.flush(), h2.flush(), solo.flush()]);
  const before = await statusJson(node);
  await client.close();
  await node.kill();
  await node.restart();
  const after = await statusCli(node);
  assert.equal(after.recordedWriteTimeUs, t3Us + 10, "recorded write time recovered from the journal after kill -9");
  for (const name of ["gh1", "gh2"]) {
    assert.ok(group(after, name).nextSequence >= group(before, name).nextSequence, `${name} nextSequence not reused`);
  }
  const again = await HostClient.connect({ port: node.hostPort });
  t.after(() => again.close().catch(() => undefined));
  const r1 = await again.open("h1");
  const r2 = await again.open("h2");
  const rs = await again.open("hsolo");
  await assertBytes(r1, 0, filled(4096, 0xb1));
  await assertBytes(r1, 4096, filled(4096, 0xb2));
  await assertBytes(r1, 10_000, filled(3000, 0xb3));
  await assertBytes(r1, MiB + 7, filled(70_000, 0xf1));
  await assertBytes(r2, 0, Buffer.concat([filled(512, 0xc1), filled(512, 0xc2), filled(512, 0xc3)]));
  await assertBytes(r2, 2 * MiB, filled(MiB, 0xf2));
  await assertBytes(rs, 0, filled(8192, 0xe1));
  await assertBytes(rs, MiB, filled(4096, 0xf3));
  // After recovery a timeless write still gets the recovered time, never an earlier one.
  await r2.write(0, filled(512, 0xc4));
  assert.equal(group(await statusJson(node), "gh2").lastWriteTimeUs, t3Us + 10);
  await again.close();
  await node.stop();
});

void test("--write-time counter: the recorded time counts grouped writes (host, NBD, zeroes), ignoring host times and ungrouped writes", async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const node = await nodeWithVolumes("counter-wt", "counter");
  const client = await HostClient.connect({ port: node.hostPort });
  t.after(() => client.close().catch(() => undefined));
  const h1 = await client.open("h1");
  const solo = await client.open("hsolo");
  await h1.write(0, filled(4096, 1), { writeTimeUs: t1Us });
  await h1.write(4096, filled(100, 2));
  await solo.write(0, filled(4096, 3), { writeTimeUs: t1Us });
  await h1.flush();
  let status = await statusJson(node);
  assert.equal(status.writeTimePolicy, "counter");
  assert.equal(status.recordedWriteTimeUs, 2, "two grouped writes so far; the host time and the ungrouped write do not count");
  // NBD: write, write -z, discard on h2, each one record; a write on hsolo does not count.
  await qemuIoOk(node, "h2", ["write -P 0x44 0 8192", "write -z 8192 4096", "discard 0 4096", "flush"]);
  await qemuIoOk(node, "hsolo", ["write -P 0x45 8192 4096"]);
  status = await statusJson(node);
  assert.equal(status.recordedWriteTimeUs, 5);
  assert.equal(group(status, "gh2").lastWriteTimeUs, 5);
  assert.equal(group(status, "gh1").lastWriteTimeUs, 2);
  await client.close();
  await node.kill();
  await node.restart();
  status = await statusCli(node);
  assert.equal(status.recordedWriteTimeUs, 5, "the counter is recovered after kill -9");
  await qemuIoOk(node, "h1", ["write -P 0x46 0 512", "read -P 0x46 0 512", "read -P 1 512 3584"]);
  assert.equal((await statusJson(node)).recordedWriteTimeUs, 6, "and continues from there");
  await node.stop();
});

void test("--write-time clock: the recorded time is the node's clock at the write, host times ignored", async (t) => {
  const node = await nodeWithVolumes("clock-wt", "clock");
  const client = await HostClient.connect({ port: node.hostPort });
  t.after(() => client.close().catch(() => undefined));
  const h1 = await client.open("h1");
  const slackUs = 2_000_000;
  const beforeUs = Date.now() * 1000;
  await h1.write(0, filled(4096, 7), { writeTimeUs: beforeUs + 3600 * 1_000_000 }); // an hour ahead: ignored
  await h1.write(4096, filled(4096, 8));
  const afterUs = Date.now() * 1000;
  const status = await statusCli(node);
  assert.equal(status.writeTimePolicy, "clock");
  const recorded = status.recordedWriteTimeUs;
  assert.ok(recorded >= beforeUs - slackUs && recorded <= afterUs + slackUs,
    `recorded ${recorded} within [${beforeUs}, ${afterUs}] (±${slackUs} µs)`);
  assert.equal(group(status, "gh1").lastWriteTimeUs, recorded);
  await assertBytes(h1, 0, Buffer.concat([filled(4096, 7), filled(4096, 8)]));
  await client.close();
  await node.stop();
});
