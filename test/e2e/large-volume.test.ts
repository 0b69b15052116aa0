// Proves that large volumes work as the docs say (docs/volumes.md), with real nodes over the
// CLI, NBD and the host protocol (the scenario of ../shared/repro/large-sparse-volume.sh and
// more of its kind):
//   - `volume create --size 16T` (volumeBytesMax) either works, or on a file system that cannot
//     hold it (ext4: 16 TiB - 4 KiB) fails with a message naming that limit, a TM_ERR_* code
//     that is not internal, and nothing left behind; the size it names can be created;
//   - a volume larger than the free space gets a warning at create (stderr, JSON, log) and in
//     `volume list` / `status`;
//   - a 1 TiB volume with a few MiB written pairs within a generous bound (the copy sends only
//     the written extents), the progress's last figures equal the total, and both images are
//     equal over the written ranges and a sample of the rest;
//   - a secondary volume that already held data is emptied for the copy: images equal byte for byte;
//   - the written maps survive kill -9 (a group's through journal replay, an ungrouped volume's
//     because its bits are durable before the write);
//   - a data directory written by c1cab4b (no maps) opens, says so in one log line, and pairs
//     with its volumes copied whole.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile, readdir, statfs } from "node:fs/promises";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { volumeBytesMax, writtenMapExtentBytes } from "../../src/core/limits.ts";
import type { PairInfo, VolumeInfo } from "../../src/mgmt/control.ts";
import { NbdClient, readRange } from "./drill-lib.ts";
import { cli, cliOk, inCi, mgmtJson, runOk, startNode, tmpDir, whichTool, type RunningNode } from "./harness.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
/** A generous bound for pairing a 1 TiB volume with a few MiB written (it took over 5 minutes before the written map). */
const sparseCopyBoundMs = 60_000;
const fixture = fileURLToPath(new URL("../fixtures/c1cab4b-data-dir.tar.gz", import.meta.url));

/** Distinct, recognisable bytes (never all zero). */
function pattern(seed: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += 32) createHash("sha256").update(`${seed}${at}`).digest().copy(out, at);
  return out;
}

interface Range {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** Bytes of the written-map extents these ranges touch (what an initial copy sends). */
function extentBytesOf(ranges: readonly Range[], sizeBytes: number): number {
  const extents = new Set<number>();
  for (const { offsetBytes, lengthBytes } of ranges) {
    for (let e = Math.floor(offsetBytes / writtenMapExtentBytes); e <= Math.floor((offsetBytes + lengthBytes - 1) / writtenMapExtentBytes); e++) extents.add(e);
  }
  let bytes = 0;
  for (const e of extents) bytes += Math.min((e + 1) * writtenMapExtentBytes, sizeBytes) - e * writtenMapExtentBytes;
  return bytes;
}

async function writeRanges(node: RunningNode, volume: string, writes: readonly (Range & { data: Buffer })[]): Promise<void> {
  const client = await NbdClient.connect(node.nbdPort, volume);
  try {
    for (const write of writes) await client.write(write.offsetBytes, write.data);
    await client.flush();
  } finally {
    await client.close();
  }
}

/** Reads the same ranges on both nodes over NBD, in pieces of at most 4 MiB; fails at the first difference. */
async function assertRangesEqual(a: RunningNode, b: RunningNode, volume: string, ranges: readonly Range[], what: string): Promise<void> {
  const [ca, cb] = [await NbdClient.connect(a.nbdPort, volume), await NbdClient.connect(b.nbdPort, volume)];
  try {
    for (const { offsetBytes, lengthBytes } of ranges) {
      for (let at = offsetBytes; at < offsetBytes + lengthBytes; at += 4 * MiB) {
        const n = Math.min(4 * MiB, offsetBytes + lengthBytes - at);
        const [x, y] = [await ca.read(at, n), await cb.read(at, n)];
        assert.ok(x.equals(y), `${what}: ${volume} differs in ${at}+${n}`);
      }
    }
  } finally {
    await ca.close();
    await cb.close();
  }
}

async function volumes(node: RunningNode): Promise<VolumeInfo[]> {
  return ((await mgmtJson(node.mgmtUrl, "/v1/volumes")) as { volumes: VolumeInfo[] }).volumes;
}

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return (await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`)) as PairInfo;
}

/** The last copy's progress over the written extents (without the data bytes it sent). */
function extentFigures(info: PairInfo): { doneBytes: number; totalBytes: number; volumeBytes: number } | null | undefined {
  if (info.lastCopy === null || info.lastCopy === undefined) return info.lastCopy;
  const { doneBytes, totalBytes, volumeBytes } = info.lastCopy;
  return { doneBytes, totalBytes, volumeBytes };
}

/** `pair create`, with --force when the node asks for it (a secondary volume that holds data). */
async function pairCreate(primary: RunningNode, group: string, secondary: RunningNode): Promise<{ stdout: string; elapsedMs: number }> {
  const startMs = performance.now();
  let result = await cli(["pair", "create", group, "--to", secondary.mgmtUrl], { node: primary.mgmtUrl, timeoutMs: 180_000 });
  if (result.code !== 0 && /--force/.test(result.stderr)) {
    result = await cli(["pair", "create", group, "--to", secondary.mgmtUrl, "--force"], { node: primary.mgmtUrl, timeoutMs: 180_000 });
  }
  assert.equal(result.code, 0, `pair create ${group}: ${result.stderr}\n--- primary log\n${primary.logTail()}`);
  return { stdout: result.stdout, elapsedMs: performance.now() - startMs };
}

/** The node's JSON log lines (every run of it) with this `event`. */
async function logEvents(node: RunningNode, event: string): Promise<Record<string, unknown>[]> {
  const lines: Record<string, unknown>[] = [];
  for (const text of (await readFile(node.logFile, "utf8")).split("\n")) {
    if (!text.startsWith("{")) continue;
    try {
      const line = JSON.parse(text) as Record<string, unknown>;
      if (line.event === event) lines.push(line);
    } catch {
      // a line cut by a kill
    }
  }
  return lines;
}

void test("volume create 16T (the maximum): works, or names the file system's limit with nothing left behind", { timeout: 120_000 }, async () => {
  const node = await startNode({ id: "big-max" });
  const volumesDir = path.join(node.dataDir, "volumes");
  const before = (await readdir(volumesDir)).sort();
  const isExt4 = (await statfs(node.dataDir)).type === 0xef53;
  const created = await cli(["volume", "create", "max", "--size", "16T"], { node: node.mgmtUrl });
  if (created.code === 0) {
    assert.ok(!isExt4, "ext4 cannot hold a 16 TiB file");
    const max = (await volumes(node)).find((v) => v.name === "max");
    assert.equal(max?.sizeBytes, volumeBytesMax);
    await writeRanges(node, "max", [{ offsetBytes: volumeBytesMax - 4096, lengthBytes: 4096, data: pattern("last", 4096) }]);
    assert.ok((await readRange(node, "max", volumeBytesMax - 4096, 4096)).equals(pattern("last", 4096)), "the last block is usable");
    return;
  }
  assert.equal(created.code, 1, created.stderr);
  assert.equal(created.stdout, "");
  assert.match(created.stderr, /^tidemark: [^\n]+\n$/, "one line on stderr");
  assert.doesNotMatch(created.stderr, /internal|EFBIG/i);
  assert.match(created.stderr, /\[TM_ERR_LIMIT\]/);
  const limit = /the file system of (\S+) \((\w+)\) holds files of at most (\d+) bytes .*use a smaller --size \(at most (\d+)\) or put --data on xfs, btrfs or tmpfs/.exec(created.stderr);
  assert.ok(limit !== null, created.stderr);
  assert.equal(limit[1], volumesDir);
  if (isExt4) {
    assert.equal(limit[2], "ext4");
    assert.equal(Number(limit[3]), volumeBytesMax - 4096, "ext4 with 4 KiB blocks: 16 TiB - 4 KiB");
  }
  assert.deepEqual((await readdir(volumesDir)).sort(), before, "no orphan volume file or map left in volumes/");
  assert.equal((await volumes(node)).some((v) => v.name === "max"), false, "no volume in the metadata");
  // The size the message names works, under the same name.
  await cliOk(["volume", "create", "max", "--size", limit[4] ?? ""], { node: node.mgmtUrl });
  assert.equal((await volumes(node)).find((v) => v.name === "max")?.sizeBytes, Number(limit[4]));
  await node.stop();
  await node.restart();
  assert.equal((await volumes(node)).find((v) => v.name === "max")?.sizeBytes, Number(limit[4]), "it opens again after a restart");
});

void test("a volume larger than the free space: a warning at create (stderr, JSON, log) and in volume list and status", { timeout: 120_000 }, async () => {
  const node = await startNode({ id: "big-free" });
  const fs = await statfs(node.dataDir);
  const freeBytes = fs.bavail * fs.bsize;
  // Well past the free space, and within what every file system here holds (ext4: 16 TiB - 4 KiB).
  const sizeBytes = Math.min(Math.ceil((freeBytes * 2 + GiB) / MiB) * MiB, 15 * TiB);
  assert.ok(sizeBytes > freeBytes, `the file system of ${node.dataDir} has ${freeBytes} bytes free: more than 15 TiB, no overcommitted volume fits`);
  const created = await cliOk(["volume", "create", "huge", "--size", String(sizeBytes)], { node: node.mgmtUrl });
  assert.match(created.stdout, /^created volume huge /);
  assert.match(created.stderr, /^tidemark: warning: volume huge \([^)]+\) is larger than the free space of the file system of \S+ \([^)]+ free, [^)]+ not yet allocated\)/);
  const small = await cliOk(["volume", "create", "small", "--size", "1M", "--json"], { node: node.mgmtUrl });
  assert.equal((JSON.parse(small.stdout) as { volume: VolumeInfo }).volume.warning, null, "a volume that fits gets none");
  assert.equal(small.stderr, "");
  const second = await cliOk(["volume", "create", "huge2", "--size", String(sizeBytes), "--json"], { node: node.mgmtUrl });
  assert.match((JSON.parse(second.stdout) as { volume: VolumeInfo }).volume.warning ?? "", /huge2 .* larger than the free space/, "JSON carries it");
  assert.deepEqual((await logEvents(node, "volume_overcommitted")).map((line) => line.volume), ["huge", "huge2"], "one log line per overcommitted volume");
  const list = await cliOk(["volume", "list"], { node: node.mgmtUrl });
  assert.match(list.stdout, /^warning: volume huge \(/m);
  assert.match(list.stdout, /^warning: volume huge2 \(/m);
  assert.doesNotMatch(list.stdout, /warning: volume small/);
  const status = await cliOk(["status"], { node: node.mgmtUrl });
  assert.match(status.stdout, /^warning: volume huge \(/m);
  const listed = await volumes(node);
  assert.match(listed.find((v) => v.name === "huge")?.warning ?? "", /larger than the free space/);
  assert.equal(listed.find((v) => v.name === "small")?.warning, null);
});

void test("a 1 TiB volume with a few MiB written pairs within seconds; progress ends at its total; images equal", { timeout: 240_000 }, async () => {
  const a = await startNode({ id: "big-a" });
  const b = await startNode({ id: "big-b" });
  await cliOk(["volume", "create", "big", "--size", "1T"], { node: a.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "big"], { node: a.mgmtUrl });
  const writes = [
    { offsetBytes: 12345 * MiB, lengthBytes: 4096, data: pattern("repro", 4096) }, // the reproducer's block
    { offsetBytes: 0, lengthBytes: MiB, data: pattern("first", MiB) },
    { offsetBytes: 700 * GiB + 512 * KiB, lengthBytes: 2 * MiB + 8 * KiB, data: pattern("straddle", 2 * MiB + 8 * KiB) }, // three extents
    { offsetBytes: TiB - 4096, lengthBytes: 4096, data: pattern("last", 4096) },
  ];
  await writeRanges(a, "big", writes);
  // Zeroes (WRITE_ZEROES, TRIM) do not mark the map: mkfs discards the whole device first, and
  // that must not make the next copy a full one. qemu-io sends them (a client no one here wrote).
  if (whichTool("qemu-io") !== null || inCi) {
    await runOk("qemu-io", ["-f", "raw", a.nbdUri("big"), "-c", "write -z 300G 8M", "-c", "discard 400G 64M"], { timeoutMs: 60_000 });
  }
  const expectedBytes = extentBytesOf(writes, TiB);
  assert.equal(expectedBytes, 6 * MiB);
  assert.equal((await volumes(a)).find((v) => v.name === "big")?.writtenBytes, expectedBytes, "volume list shows the written part");

  const created = await pairCreate(a, "g", b);
  assert.ok(created.elapsedMs < sparseCopyBoundMs, `pairing took ${Math.round(created.elapsedMs)} ms, bound ${sparseCopyBoundMs} ms`);
  assert.match(created.stdout, /^pair of group g is replicating to group g on big-b \(.*\), initial copy of up to 6\.0 MiB written of 1\.0 TiB \(3\.0 MiB of data sent\) took \d/);
  const info = await pair(a, "g");
  assert.equal(info.state, "replicating");
  assert.deepEqual(extentFigures(info), { doneBytes: expectedBytes, totalBytes: expectedBytes, volumeBytes: TiB }, "the last figures equal the total");
  assert.equal(info.lastCopy?.dataBytes, writes.reduce((sum, w) => sum + w.lengthBytes, 0), "only the blocks that hold data were sent");
  const done = await logEvents(a, "copy_done");
  assert.equal(done.length, 1);
  assert.equal(done[0]?.bytes, expectedBytes);

  // Equal over the written ranges (whole extents) and a sample of the rest, which reads zero on both.
  const extents = writes.map((w) => ({
    offsetBytes: Math.floor(w.offsetBytes / writtenMapExtentBytes) * writtenMapExtentBytes,
    lengthBytes: Math.ceil((w.offsetBytes + w.lengthBytes) / writtenMapExtentBytes) * writtenMapExtentBytes - Math.floor(w.offsetBytes / writtenMapExtentBytes) * writtenMapExtentBytes,
  }));
  await assertRangesEqual(a, b, "big", extents, "after the copy");
  for (const w of writes) assert.ok((await readRange(b, "big", w.offsetBytes, w.lengthBytes)).equals(w.data), `the secondary holds the write at ${w.offsetBytes}`);
  const samples: Range[] = [];
  for (let i = 0; i < 48; i++) samples.push({ offsetBytes: Math.floor((((i * 2654435761) % 1000003) / 1000003) * (TiB / MiB - 64)) * MiB + 5 * MiB, lengthBytes: 64 * KiB });
  for (const sample of samples) {
    if (extents.some((e) => sample.offsetBytes < e.offsetBytes + e.lengthBytes && e.offsetBytes < sample.offsetBytes + sample.lengthBytes)) continue;
    assert.ok((await readRange(b, "big", sample.offsetBytes, sample.lengthBytes)).every((byte) => byte === 0), `unwritten ${sample.offsetBytes} reads zero on the secondary`);
  }
  await assertRangesEqual(a, b, "big", samples, "unwritten samples");

  // Replication goes on as usual afterwards.
  const later = { offsetBytes: 512 * GiB, lengthBytes: 64 * KiB, data: pattern("later", 64 * KiB) };
  await writeRanges(a, "big", [later]);
  await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: a.mgmtUrl, timeoutMs: 90_000 });
  assert.ok((await readRange(b, "big", later.offsetBytes, later.lengthBytes)).equals(later.data));
  assert.equal((await volumes(b)).find((v) => v.name === "big")?.writtenBytes, expectedBytes + MiB, "the secondary's map holds the copy and the reflected write");
});

void test("a secondary volume that already holds data is emptied for the initial copy: images equal byte for byte", { timeout: 240_000 }, async () => {
  const a = await startNode({ id: "old-a" });
  const b = await startNode({ id: "old-b" });
  const sizeBytes = 64 * MiB;
  for (const node of [a, b]) await cliOk(["volume", "create", "v", "--size", String(sizeBytes)], { node: node.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v"], { node: a.mgmtUrl });
  await writeRanges(a, "v", [{ offsetBytes: 3 * MiB, lengthBytes: 256 * KiB, data: pattern("primary", 256 * KiB) }]);
  // Data on the secondary where the primary wrote nothing, and under what it wrote.
  await writeRanges(b, "v", [
    { offsetBytes: 0, lengthBytes: 2 * MiB, data: pattern("stale-1", 2 * MiB) },
    { offsetBytes: 3 * MiB + 512 * KiB, lengthBytes: 64 * KiB, data: pattern("stale-2", 64 * KiB) },
    { offsetBytes: sizeBytes - 4096, lengthBytes: 4096, data: pattern("stale-3", 4096) },
  ]);
  await pairCreate(a, "g", b);
  await cliOk(["pair", "wait", "g"], { node: a.mgmtUrl, timeoutMs: 90_000 });
  await assertRangesEqual(a, b, "v", [{ offsetBytes: 0, lengthBytes: sizeBytes }], "whole volume");
  assert.equal((await logEvents(b, "secondary_volume_emptied")).length, 1, "the secondary said it emptied the volume");
});

void test("written maps survive kill -9: a group's by journal replay, an ungrouped volume's by saving bits before the write", { timeout: 240_000 }, async () => {
  const a = await startNode({ id: "crash-a" });
  const b = await startNode({ id: "crash-b" });
  const sizeBytes = 256 * GiB;
  for (const name of ["u", "w"]) await cliOk(["volume", "create", name, "--size", String(sizeBytes)], { node: a.mgmtUrl });
  await cliOk(["group", "create", "gw", "--volumes", "w"], { node: a.mgmtUrl });
  const writesU = [
    { offsetBytes: 5 * GiB, lengthBytes: 128 * KiB, data: pattern("u1", 128 * KiB) },
    { offsetBytes: 100 * GiB + 1024 * KiB - 4096, lengthBytes: 8192, data: pattern("u2", 8192) },
  ];
  const writesW = [
    { offsetBytes: 7 * GiB, lengthBytes: 64 * KiB, data: pattern("w1", 64 * KiB) },
    { offsetBytes: 200 * GiB, lengthBytes: 3 * MiB, data: pattern("w2", 3 * MiB) },
  ];
  // No FLUSH for u: the write itself waits until its map bits are durable.
  const client = await NbdClient.connect(a.nbdPort, "u");
  for (const w of writesU) await client.write(w.offsetBytes, w.data);
  client.destroy();
  await writeRanges(a, "w", writesW);
  await a.kill();
  await a.restart();
  await cliOk(["group", "create", "gu", "--volumes", "u"], { node: a.mgmtUrl });
  for (const [group, volume, writes] of [["gu", "u", writesU], ["gw", "w", writesW]] as const) {
    await pairCreate(a, group, b);
    const expectedBytes = extentBytesOf(writes, sizeBytes);
    assert.deepEqual(extentFigures(await pair(a, group)), { doneBytes: expectedBytes, totalBytes: expectedBytes, volumeBytes: sizeBytes }, `${group}: only the written extents were copied`);
    for (const w of writes) assert.ok((await readRange(b, volume, w.offsetBytes, w.lengthBytes)).equals(w.data), `${volume}: the write at ${w.offsetBytes} reached the secondary`);
  }
});

void test("a data directory written by c1cab4b opens: one log line, volumes with data copied whole, images equal", { timeout: 240_000 }, async () => {
  const work = await tmpDir("tidemark-legacy-");
  const dataDir = path.join(work, "data");
  await runOk("mkdir", ["-p", dataDir]);
  await runOk("tar", ["-xzf", fixture, "-C", dataDir]); // restores the files sparse, as the old node left them
  const a = await startNode({ id: "legacy-a", dataDir });
  const b = await startNode({ id: "legacy-b" });
  const migrated = await logEvents(a, "written_maps_migrated");
  assert.equal(migrated.length, 1, "one log line");
  assert.deepEqual(migrated[0]?.everyExtentWritten, ["lv1", "lv2"]);
  assert.deepEqual(migrated[0]?.nothingWritten, ["lv3"]);
  // What the old node wrote (lv1 through its journal, replayed now; lv2 outside any group).
  const expected: Record<string, (Range & { data: Buffer })[]> = {
    lv1: [
      { offsetBytes: 0, lengthBytes: 4096, data: pattern("lv1-a", 4096) },
      { offsetBytes: 3 * MiB + 512, lengthBytes: 8192, data: pattern("lv1-b", 8192) },
      { offsetBytes: 8 * MiB - 4096, lengthBytes: 4096, data: pattern("lv1-c", 4096) },
    ],
    lv2: [
      { offsetBytes: MiB, lengthBytes: 16384, data: pattern("lv2-a", 16384) },
      { offsetBytes: 4 * MiB - 512, lengthBytes: 512, data: pattern("lv2-b", 512) },
    ],
  };
  for (const [volume, writes] of Object.entries(expected)) {
    for (const w of writes) assert.ok((await readRange(a, volume, w.offsetBytes, w.lengthBytes)).equals(w.data), `${volume} at ${w.offsetBytes} as c1cab4b wrote it`);
  }
  await cliOk(["group", "create", "lg2", "--volumes", "lv2"], { node: a.mgmtUrl });
  await pairCreate(a, "lg", b);
  await pairCreate(a, "lg2", b);
  assert.deepEqual(extentFigures(await pair(a, "lg")), { doneBytes: 8 * MiB, totalBytes: 8 * MiB, volumeBytes: 12 * MiB }, "lv1 whole, lv3 (no block) nothing");
  assert.deepEqual(extentFigures(await pair(a, "lg2")), { doneBytes: 4 * MiB, totalBytes: 4 * MiB, volumeBytes: 4 * MiB });
  for (const volume of ["lv1", "lv2", "lv3"]) {
    const size = volume === "lv1" ? 8 * MiB : 4 * MiB;
    await assertRangesEqual(a, b, volume, [{ offsetBytes: 0, lengthBytes: size }], "legacy volume");
  }
  // The migration was saved: a restart says nothing more.
  await a.stop();
  await a.restart();
  assert.equal((await logEvents(a, "written_maps_migrated")).length, 1, "still one line after a restart");
});
