// Proves one real `tidemark node` process serves NBD correctly to clients no one here wrote
// (nbdinfo, qemu-io, nbdcopy), for volumes in a group (journal on the write path) and outside
// any group: sizes and export list, patterns aligned and unaligned, write-zeroes, discard, FUA,
// 16 MiB of random data byte for byte, data kept across a clean restart and across kill -9
// after a flush (with group sequence numbers never reused), eight clients at once, and garbage,
// bad magics and oversized lengths on raw sockets closing only that connection.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { test, type TestContext } from "node:test";
import type { GroupInfo, NodeStatus } from "../../src/mgmt/control.ts";
import { cliOk, mgmtJson, requireTool, run, runOk, tmpDir, type RunResult, type RunningNode } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";
import { RawConnection, handshakeExportName, nbdCmd, readSimpleReply, requestHeader } from "./node-nbd-raw.ts";

const MiB = 1024 * 1024;
const groupName = "g1";
/** In group g1: patterns, concurrency (regions from 8 MiB on) and the crash test. */
const volumeA = { name: "alpha", sizeBytes: 32 * MiB };
/** In group g1: nbdcopy target. */
const volumeB = { name: "bravo", sizeBytes: 16 * MiB };
/** In no group: the same checks without a journal. */
const volumeSolo = { name: "solo", sizeBytes: 16 * MiB };
const copyBytes = 16 * MiB;
const tools = ["qemu-io", "nbdinfo", "nbdcopy"];

let shared: Promise<{ node: RunningNode; work: string; randomFile: string }> | undefined;

/** One node for the whole file (tests run in order): created on first use. */
function setup(): Promise<{ node: RunningNode; work: string; randomFile: string }> {
  shared ??= (async () => {
    const work = await tmpDir("tidemark-node-nbd-");
    const node = await startNode({ id: "nbd-e2e" });
    const opts = { node: node.mgmtUrl };
    for (const volume of [volumeA, volumeB, volumeSolo]) {
      await cliOk(["volume", "create", volume.name, "--size", String(volume.sizeBytes)], opts);
    }
    await cliOk(["group", "create", groupName, "--volumes", `${volumeA.name},${volumeB.name}`], opts);
    const randomFile = path.join(work, "random.bin");
    await fsp.writeFile(randomFile, randomBytes(copyBytes));
    return { node, work, randomFile };
  })();
  return shared;
}

function describe(result: RunResult): string {
  return `exit ${String(result.code)}${result.timedOut ? " (timed out)" : ""}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/** qemu-io with each command as -c; fails the test unless every command succeeded. */
async function qemuIo(node: RunningNode, exportName: string, commands: readonly string[]): Promise<RunResult> {
  const result = await run("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), node.nbdUri(exportName)], { timeoutMs: 60_000 });
  const context = `qemu-io ${commands.join(" ; ")} on ${exportName}: ${describe(result)}\n--- node log\n${node.logTail(15)}`;
  assert.equal(result.code, 0, context);
  assert.doesNotMatch(result.stdout + result.stderr, /fail|error/i, context);
  return result;
}

async function status(node: RunningNode): Promise<NodeStatus> {
  return await mgmtJson(node.mgmtUrl, "/v1/status") as NodeStatus;
}

function group(s: NodeStatus, name: string): GroupInfo {
  const found = s.groups.find((g) => g.name === name);
  assert.ok(found !== undefined, `group ${name} in ${JSON.stringify(s.groups)}`);
  return found;
}

async function assertHealthy(node: RunningNode): Promise<void> {
  const response = await fetch(`${node.mgmtUrl}/v1/health`, { signal: AbortSignal.timeout(5_000) });
  await response.arrayBuffer();
  assert.equal(response.status, 200, "GET /v1/health");
  assert.ok(node.running(), `node still running\n${node.logTail()}`);
}

/** nbdcopy the export out to a file and compare its first `bytes` with `expectedFile`. */
async function assertExportEquals(node: RunningNode, work: string, exportName: string, expectedFile: string): Promise<void> {
  const out = path.join(work, `${exportName}-${Date.now()}.out`);
  await runOk("nbdcopy", [node.nbdUri(exportName), out], { timeoutMs: 60_000 });
  const [actual, expected] = await Promise.all([fsp.readFile(out), fsp.readFile(expectedFile)]);
  await fsp.rm(out);
  assert.ok(actual.length >= expected.length, `${exportName}: copied out ${actual.length} bytes`);
  const head = actual.subarray(0, expected.length);
  if (!head.equals(expected)) {
    let first = 0;
    while (first < expected.length && head[first] === expected[first]) first++;
    assert.fail(`${exportName}: bytes differ from ${expectedFile}, first at offset ${first}`);
  }
}

/** The patterns the pattern test leaves on `exportName` (checked again after restarts). */
function patternChecks(): string[] {
  return [
    "read -P 0x00 0 8192",          // write -z then discard left zeroes
    "read -P 0x11 8192 4096",       // FUA write, aligned
    "read -P 0xab 1000000 3000",    // unaligned: 1000000..1003000
    "read -P 0x00 999000 1000",     // untouched bytes around it
    "read -P 0x00 1003000 1000",
    "read -P 0xcd 2097152 4096",    // aligned 64 KiB at 2 MiB ...
    "read -P 0x00 2101248 4096",    // ... zeroed by write -z inside it ...
    "read -P 0xcd 2105344 57344",   // ... to its end
    "read -P 0x00 2162688 4096",
  ];
}

function skipWithoutTools(t: TestContext): boolean {
  return !requireTool(t, ...tools);
}

void test("nbdinfo: --size of each export and --list with every export and its size", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  for (const volume of [volumeA, volumeB, volumeSolo]) {
    const result = await runOk("nbdinfo", ["--size", node.nbdUri(volume.name)]);
    assert.equal(result.stdout.trim(), String(volume.sizeBytes), `nbdinfo --size ${volume.name}`);
  }
  const listed = await runOk("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${node.nbdPort}`]);
  const report = JSON.parse(listed.stdout) as { exports: { "export-name": string; "export-size": number; is_read_only: boolean; can_flush: boolean; can_fua: boolean; can_trim: boolean; can_zero: boolean }[] };
  const byName = new Map(report.exports.map((e) => [e["export-name"], e]));
  assert.deepEqual([...byName.keys()].sort(), [volumeA.name, volumeB.name, volumeSolo.name].sort());
  for (const volume of [volumeA, volumeB, volumeSolo]) {
    const entry = byName.get(volume.name)!;
    assert.equal(entry["export-size"], volume.sizeBytes, `${volume.name} size in --list`);
    assert.equal(entry.is_read_only, false);
    assert.ok(entry.can_flush && entry.can_fua && entry.can_trim && entry.can_zero, `${volume.name} flags ${JSON.stringify(entry)}`);
  }
});

void test("qemu-io: aligned and unaligned patterns, write -z, discard, write -f, in a group and outside", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  const before = group(await status(node), groupName);
  for (const volume of [volumeA, volumeSolo]) {
    await qemuIo(node, volume.name, [
      "write -P 0x77 0 8192",
      "read -P 0x77 0 8192",
      "write -z 0 4096",
      "read -P 0x00 0 4096",
      "read -P 0x77 4096 4096",
      "discard 4096 4096",
      "read -P 0x00 0 8192",
      "write -f -P 0x11 8192 4096",
      "write -P 0xab 1000000 3000",
      "write -P 0xcd 2097152 65536",
      "write -z 2101248 4096",
      "flush",
    ]);
    if (volume === volumeA) {
      const flushed = group(await status(node), groupName);
      assert.ok(flushed.durableSequence >= flushed.nextSequence - 1, `after FLUSH every g1 record is durable: ${JSON.stringify(flushed)}`);
    }
    // A separate process reads it back: nothing comes from the client's cache.
    await qemuIo(node, volume.name, patternChecks());
    // Unaligned overwrite inside an aligned block, across a 4 KiB boundary.
    await qemuIo(node, volume.name, ["write -P 0xee 4000 200", "read -P 0xee 4000 200", "read -P 0x00 3000 1000", "read -P 0x00 4200 3992", "write -z 4000 200"]);
  }
  const after = group(await status(node), groupName);
  // alpha's writes went through g1's journal (one record each); solo's did not.
  assert.ok(after.nextSequence >= before.nextSequence + 9, `g1 sequence moved from ${before.nextSequence} to ${after.nextSequence}`);
});

void test("nbdcopy: 16 MiB of random data in and out, byte for byte, in a group and outside", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node, work, randomFile } = await setup();
  for (const volume of [volumeB, volumeSolo]) {
    await runOk("nbdcopy", [randomFile, node.nbdUri(volume.name)], { timeoutMs: 60_000 });
    await assertExportEquals(node, work, volume.name, randomFile);
  }
  // solo held the patterns; put them back for the restart checks below.
  await qemuIo(node, volumeSolo.name, ["write -P 0x00 0 4194304", "write -P 0x11 8192 4096", "write -P 0xab 1000000 3000", "write -P 0xcd 2097152 65536", "write -z 2101248 4096", "flush"]);
  await qemuIo(node, volumeSolo.name, patternChecks());
});

void test("eight qemu-io clients at once on different regions, then every region verified", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  const clients = 8;
  const regionBytes = 1 * MiB;
  const chunkBytes = 64 * 1024;
  const regionStart = 8 * MiB;
  const runs: Promise<RunResult>[] = [];
  for (let i = 0; i < clients; i++) {
    const base = regionStart + i * regionBytes;
    const pattern = `0x${(0x21 + i).toString(16)}`;
    const commands: string[] = [];
    // Ascending for even clients, descending for odd ones: the writes interleave on the node.
    for (let c = 0; c < regionBytes / chunkBytes; c++) {
      const index = i % 2 === 0 ? c : regionBytes / chunkBytes - 1 - c;
      commands.push(`write -P ${pattern} ${base + index * chunkBytes} ${chunkBytes}`);
    }
    // One unaligned write at the region's end, so neighbours share a 4 KiB block at the seam.
    commands.push(`write -P ${pattern} ${base + regionBytes - 100} 100`);
    runs.push(qemuIo(node, volumeA.name, commands));
  }
  await Promise.all(runs);
  for (let i = 0; i < clients; i++) {
    const base = regionStart + i * regionBytes;
    await qemuIo(node, volumeA.name, [`read -P 0x${(0x21 + i).toString(16)} ${base} ${regionBytes}`]);
  }
  await assertHealthy(node);
});

void test("clean restart (SIGTERM, same --data): every export keeps its data", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node, work, randomFile } = await setup();
  const before = group(await status(node), groupName);
  await node.restart();
  const after = group(await status(node), groupName);
  assert.ok(after.nextSequence >= before.nextSequence, `nextSequence ${before.nextSequence} -> ${after.nextSequence} across a clean restart`);
  for (const volume of [volumeA, volumeSolo]) await qemuIo(node, volume.name, patternChecks());
  await qemuIo(node, volumeA.name, ["read -P 0x21 8388608 1048576", "read -P 0x28 15728640 1048576"]);
  for (const volume of [volumeB]) await assertExportEquals(node, work, volume.name, randomFile);
});

void test("kill -9 after write + flush: data kept, group sequence numbers continue without reuse", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  const offset = 20 * MiB;
  await qemuIo(node, volumeA.name, [`write -P 0x5a ${offset} 1048576`, `write -P 0x5b ${offset + MiB + 123} 4000`, "flush"]);
  await qemuIo(node, volumeSolo.name, [`write -P 0x5c ${4 * MiB} 1048576`, "flush"]);
  const beforeText = (await cliOk(["status", "--json"], { node: node.mgmtUrl })).stdout;
  const before = group(JSON.parse(beforeText) as NodeStatus, groupName);
  assert.ok(before.durableSequence >= before.nextSequence - 1, `everything flushed is durable: ${JSON.stringify(before)}`);
  await node.kill();
  await node.restart();
  const afterText = (await cliOk(["status", "--json"], { node: node.mgmtUrl })).stdout;
  const after = group(JSON.parse(afterText) as NodeStatus, groupName);
  assert.ok(after.nextSequence >= before.nextSequence, `nextSequence after restart ${after.nextSequence} >= before ${before.nextSequence}`);
  assert.ok(after.durableSequence >= before.durableSequence, `durableSequence ${before.durableSequence} -> ${after.durableSequence}`);
  await qemuIo(node, volumeA.name, [`read -P 0x5a ${offset} 1048576`, `read -P 0x5b ${offset + MiB + 123} 4000`, `read -P 0x00 ${offset + MiB} 123`]);
  await qemuIo(node, volumeSolo.name, [`read -P 0x5c ${4 * MiB} 1048576`]);
  // The next write gets a sequence number no earlier write had.
  await qemuIo(node, volumeA.name, [`write -P 0x5d ${offset} 512`, "flush"]);
  const next = group(await status(node), groupName);
  assert.ok(next.nextSequence > before.nextSequence && next.nextSequence > after.nextSequence,
    `a write after the crash moved nextSequence to ${next.nextSequence} (before crash ${before.nextSequence})`);
  assert.ok(next.appliedSequence >= before.nextSequence, `applied ${next.appliedSequence} is past every sequence used before the crash (< ${before.nextSequence})`);
  for (const volume of [volumeA, volumeSolo]) await qemuIo(node, volume.name, patternChecks());
});

void test("raw sockets: garbage, bad request magic and a 1 GiB write header close only that connection", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  // A connection opened before the abuse must still answer after it ...
  const survivor = await RawConnection.connect(node.nbdPort);
  await handshakeExportName(survivor, volumeB.name);
  // ... and a real client keeps working the whole time, on another connection.
  const busy = qemuIo(node, volumeA.name, Array.from({ length: 256 }, (_, i) => `write -P 0x3c ${24 * MiB + i * 4096} 4096`));

  // 1. Garbage instead of the client flags: closed during the handshake.
  const garbage = await RawConnection.connect(node.nbdPort);
  await garbage.read(18);
  garbage.write(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(4096)]));
  assert.ok(await garbage.closedWithin(5_000), "garbage in the handshake closes the connection");

  // 2. Garbage without even reading the greeting.
  const blind = await RawConnection.connect(node.nbdPort);
  blind.write(randomBytes(64 * 1024));
  assert.ok(await blind.closedWithin(5_000), "64 KiB of garbage closes the connection");

  // 3. A good session first (so the raw client is known to speak NBD), then a bad request magic.
  const badMagic = await RawConnection.connect(node.nbdPort);
  const { sizeBytes } = await handshakeExportName(badMagic, volumeA.name);
  assert.equal(sizeBytes, BigInt(volumeA.sizeBytes));
  badMagic.write(requestHeader({ type: nbdCmd.read, cookie: 7n, offsetBytes: 8192n, lengthBytes: 4096 }));
  const good = await readSimpleReply(badMagic, 4096);
  assert.equal(good.error, 0);
  assert.equal(good.cookie, 7n);
  assert.ok(good.data.every((b) => b === 0x11), "raw READ sees the FUA pattern");
  badMagic.write(requestHeader({ magic: 0xdeadbeef, type: nbdCmd.read, cookie: 8n, offsetBytes: 0n, lengthBytes: 512 }));
  assert.ok(await badMagic.closedWithin(5_000), "a bad request magic closes the connection");

  // 4. Out-of-range requests get errors and the connection stays in step; then a 1 GiB WRITE header closes it.
  const oversized = await RawConnection.connect(node.nbdPort);
  await handshakeExportName(oversized, volumeSolo.name);
  oversized.write(requestHeader({ type: nbdCmd.read, cookie: 1n, offsetBytes: BigInt(volumeSolo.sizeBytes - 512), lengthBytes: 4096 }));
  const pastEnd = await readSimpleReply(oversized, 4096);
  assert.equal(pastEnd.cookie, 1n);
  assert.equal(pastEnd.error, 22, "READ past the end: EINVAL");
  oversized.write(Buffer.concat([requestHeader({ type: nbdCmd.write, cookie: 2n, offsetBytes: BigInt(volumeSolo.sizeBytes), lengthBytes: 4096 }), Buffer.alloc(4096, 0x99)]));
  const writePastEnd = await readSimpleReply(oversized, 0);
  assert.equal(writePastEnd.cookie, 2n);
  assert.equal(writePastEnd.error, 28, "WRITE past the end: ENOSPC (payload drained)");
  oversized.write(requestHeader({ type: nbdCmd.read, cookie: 3n, offsetBytes: 8192n, lengthBytes: 4096 }));
  const stillInStep = await readSimpleReply(oversized, 4096);
  assert.equal(stillInStep.cookie, 3n);
  assert.equal(stillInStep.error, 0);
  assert.ok(stillInStep.data.every((b) => b === 0x11), "the drained payload was not taken as a request");
  oversized.write(requestHeader({ type: nbdCmd.write, cookie: 4n, offsetBytes: 0n, lengthBytes: 1024 * MiB }));
  oversized.write(Buffer.alloc(64 * 1024, 0x42));
  assert.ok(await oversized.closedWithin(5_000), "a 1 GiB WRITE header closes the connection");

  await busy;
  // One at a time: NBD does not order concurrent requests, so each waits for the one before.
  survivor.write(Buffer.concat([requestHeader({ type: nbdCmd.write, cookie: 11n, offsetBytes: 0n, lengthBytes: 4096 }), Buffer.alloc(4096, 0x6e)]));
  assert.deepEqual(await readSimpleReply(survivor, 0), { error: 0, cookie: 11n, data: Buffer.alloc(0) });
  survivor.write(requestHeader({ type: nbdCmd.flush, cookie: 12n, offsetBytes: 0n, lengthBytes: 0 }));
  assert.deepEqual(await readSimpleReply(survivor, 0), { error: 0, cookie: 12n, data: Buffer.alloc(0) });
  survivor.write(requestHeader({ type: nbdCmd.read, cookie: 13n, offsetBytes: 0n, lengthBytes: 4096 }));
  const readReply = await readSimpleReply(survivor, 4096);
  assert.equal(readReply.cookie, 13n);
  assert.equal(readReply.error, 0);
  assert.ok(readReply.data.every((b) => b === 0x6e), "the connection opened before the abuse still writes and reads");
  survivor.write(requestHeader({ type: nbdCmd.disc, cookie: 14n, offsetBytes: 0n, lengthBytes: 0 }));
  assert.ok(await survivor.closedWithin(5_000), "NBD_CMD_DISC closes cleanly");
  await qemuIo(node, volumeA.name, [`read -P 0x3c ${24 * MiB} ${256 * 4096}`, "read -P 0x11 8192 4096"]);
  await qemuIo(node, volumeSolo.name, patternChecks());
  await assertHealthy(node);
});

void test("qemu-io read past the end fails, and the node keeps serving", async (t) => {
  if (skipWithoutTools(t)) return;
  const { node } = await setup();
  const result = await run("qemu-io", ["-f", "raw", "-c", `read ${volumeSolo.sizeBytes - 512} 4096`, node.nbdUri(volumeSolo.name)], { timeoutMs: 30_000 });
  assert.notEqual(result.code, 0, `read past the end must fail: ${describe(result)}`);
  assert.match(result.stdout + result.stderr, /error|fail/i, describe(result));
  await qemuIo(node, volumeSolo.name, ["read -P 0x11 8192 4096"]);
  await assertHealthy(node);
  await node.stop();
});
