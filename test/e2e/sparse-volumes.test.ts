// Proves that a paired volume stays sparse where it holds nothing (docs/volumes.md, "Zeroes"),
// with real nodes, qemu-io as the host and the files' allocated blocks (stat) as the measure:
//   - a discard (NBD TRIM) or WRITE_ZEROES over parts never written allocates nothing, on the
//     primary (its apply) or on the secondary (its reflector), and neither does the replay of
//     the same zero records after kill -9 of both nodes (recovery on the primary, the
//     reflector's replay on the secondary), nor the discard of the whole device mkfs does;
//   - the images stay equal byte for byte, data outside the zeroed ranges is kept, and the
//     zeroed data reads zero on both.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, stat } from "node:fs/promises";
import * as path from "node:path";
import { NbdClient, readRange } from "./drill-lib.ts";
import { cliOk, inCi, runOk, startNode, whichTool, type RunningNode } from "./harness.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Bytes allocated (stat blocks) by the volume files of a node's data directory. */
async function allocatedVolumeBytes(node: RunningNode): Promise<number> {
  const dir = path.join(node.dataDir, "volumes");
  let bytes = 0;
  for (const name of await readdir(dir)) {
    if (name.endsWith(".vol")) bytes += (await stat(path.join(dir, name))).blocks * 512;
  }
  return bytes;
}

/** Compares two exports in 4 MiB reads (never the whole image in memory); fails at the first difference. */
async function assertImagesEqual(a: RunningNode, b: RunningNode, volume: string, what: string): Promise<void> {
  const [ca, cb] = [await NbdClient.connect(a.nbdPort, volume), await NbdClient.connect(b.nbdPort, volume)];
  try {
    assert.equal(ca.sizeBytes, cb.sizeBytes, `${what}: sizes`);
    for (let at = 0; at < ca.sizeBytes; at += 4 * MiB) {
      const n = Math.min(4 * MiB, ca.sizeBytes - at);
      const [x, y] = [await ca.read(at, n), await cb.read(at, n)];
      if (!x.equals(y)) assert.fail(`${what}: ${volume} differs in ${at}+${n}`);
    }
  } finally {
    await ca.close();
    await cb.close();
  }
}

function qemuIo(node: RunningNode, volume: string, ...commands: string[]): Promise<unknown> {
  return runOk("qemu-io", ["-f", "raw", node.nbdUri(volume), ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 120_000 });
}

void test("discard and WRITE_ZEROES on a paired sparse volume allocate nothing on either node, also when replayed after kill -9; images equal", { timeout: 300_000 }, async (t) => {
  if (whichTool("qemu-io") === null && !inCi) {
    t.skip("qemu-io is not installed (scripts/ensure-test-deps.sh installs it)");
    return;
  }
  const a = await startNode({ id: "sparse-a" });
  const b = await startNode({ id: "sparse-b" });
  await cliOk(["volume", "create", "v", "--size", "2G"], { node: a.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v"], { node: a.mgmtUrl });
  await cliOk(["pair", "create", "g", "--to", b.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 120_000 });
  // Data in two extents: one the discard covers, one it leaves alone.
  await qemuIo(a, "v", "write -P 0xab 100M 64k", "write -P 0xcd 1700M 4k", "flush");
  await qemuIo(a, "v", "discard 0 1G", "write -z 1G 512M", "flush");
  await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: a.mgmtUrl, timeoutMs: 90_000 });
  // The data touched at most two 1 MiB extents; the maps and the rest stay unallocated.
  const boundBytes = 4 * MiB;
  const [allocatedA, allocatedB] = [await allocatedVolumeBytes(a), await allocatedVolumeBytes(b)];
  t.diagnostic(`after discard 0 1G and write -z 1G 512M: primary ${allocatedA} bytes allocated, secondary ${allocatedB}`);
  assert.ok(allocatedA <= boundBytes, `the primary's volume file stays sparse (${allocatedA} bytes allocated, bound ${boundBytes})`);
  assert.ok(allocatedB <= boundBytes, `the secondary's volume file stays sparse (${allocatedB} bytes allocated, bound ${boundBytes})`);
  assert.ok((await readRange(b, "v", 100 * MiB, 64 * KiB)).every((byte) => byte === 0), "the discarded data reads zero on the secondary");
  assert.ok((await readRange(b, "v", 1700 * MiB, 4 * KiB)).every((byte) => byte === 0xcd), "data outside the zeroed ranges is kept");
  await assertImagesEqual(a, b, "v", "after the zeroes");

  // kill -9 both: the primary's recovery replays the journal, the secondary's reflector replays what it had not.
  await qemuIo(a, "v", "write -P 0xef 300M 4k", "discard 0 1536M", "write -z 1536M 512M", "flush");
  await a.kill();
  await b.kill();
  await a.restart();
  await b.restart();
  await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: a.mgmtUrl, timeoutMs: 90_000 });
  const [replayedA, replayedB] = [await allocatedVolumeBytes(a), await allocatedVolumeBytes(b)];
  t.diagnostic(`after the whole device was zeroed and both nodes were killed and restarted: primary ${replayedA} bytes allocated, secondary ${replayedB}`);
  assert.ok(replayedA <= boundBytes + MiB, `the primary stays sparse after recovery (${replayedA} bytes allocated)`);
  assert.ok(replayedB <= boundBytes + MiB, `the secondary stays sparse after its replay (${replayedB} bytes allocated)`);
  const client = await NbdClient.connect(b.nbdPort, "v");
  try {
    for (let at = 0; at < 2 * GiB; at += 4 * MiB) {
      const chunk = await client.read(at, 4 * MiB);
      if (!chunk.every((byte) => byte === 0)) assert.fail(`the secondary reads data at ${at} after the whole device was zeroed`);
    }
  } finally {
    await client.close();
  }
  await assertImagesEqual(a, b, "v", "after kill -9 and replay");
});

void test("pairing a 1 TiB volume with scattered 4 KiB writes sends and allocates only the data, not the written extents; progress ends at its total; images equal", { timeout: 300_000 }, async (t) => {
  const TiB = 1024 * GiB;
  const a = await startNode({ id: "scatter-a" });
  const b = await startNode({ id: "scatter-b" });
  await cliOk(["volume", "create", "big", "--size", "1T"], { node: a.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "big"], { node: a.mgmtUrl });
  // 600 random 4 KiB writes, each in an extent of its own (the tester's case: 5,000 in 1 TiB).
  const writesCount = 600;
  const blocks = new Set<number>();
  const extents = new Set<number>();
  let seed = 12345;
  while (blocks.size < writesCount) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const extent = Math.floor((seed / 2 ** 31) * (TiB / MiB));
    if (extents.has(extent)) continue;
    extents.add(extent);
    blocks.add(extent * (MiB / 4096) + (seed % 256));
  }
  const client = await NbdClient.connect(a.nbdPort, "big");
  try {
    for (const blockIndex of blocks) await client.write(blockIndex * 4096, Buffer.alloc(4096, (blockIndex % 251) + 1));
    await client.flush();
  } finally {
    await client.close();
  }
  const dataBytes = writesCount * 4096;
  const created = await cliOk(["pair", "create", "g", "--to", b.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 240_000 });
  t.diagnostic(created.stdout.trim());
  const info = (await (await fetch(`${a.mgmtUrl}/v1/pairs/g`)).json()) as { state: string; lastCopy: { doneBytes: number; totalBytes: number; volumeBytes: number; dataBytes?: number } };
  assert.equal(info.state, "replicating");
  const extentBytes = writesCount * MiB;
  const allocatedB = await allocatedVolumeBytes(b);
  t.diagnostic(`${dataBytes} bytes written in ${writesCount} extents (${extentBytes} bytes): the secondary's volume file has ${allocatedB} bytes allocated`);
  assert.ok(allocatedB <= 2 * dataBytes, `the secondary allocates about the data written (${allocatedB} bytes for ${dataBytes})`);
  assert.deepEqual(info.lastCopy, { doneBytes: extentBytes, totalBytes: extentBytes, volumeBytes: TiB, dataBytes }, "progress ends at the written extents; only the data was sent");
  assert.match(created.stdout, /initial copy of up to 600\.0 MiB written of 1\.0 TiB \(2\.3 MiB of data sent\) took /);
  // Equal over every written extent (all the data there is) and a sample of the rest.
  const [ca, cb] = [await NbdClient.connect(a.nbdPort, "big"), await NbdClient.connect(b.nbdPort, "big")];
  try {
    for (const blockIndex of blocks) {
      const extentStart = Math.floor((blockIndex * 4096) / MiB) * MiB;
      const [x, y] = [await ca.read(extentStart, MiB), await cb.read(extentStart, MiB)];
      if (!x.equals(y)) assert.fail(`the images differ in the extent at ${extentStart}`);
      if (!y.subarray(blockIndex * 4096 - extentStart, blockIndex * 4096 - extentStart + 4096).every((byte) => byte === (blockIndex % 251) + 1)) assert.fail(`the secondary lacks the write at block ${blockIndex}`);
    }
    for (let i = 0; i < 64; i++) {
      const at = Math.floor((i * 16769023) % (TiB / MiB)) * MiB;
      const [x, y] = [await ca.read(at, 64 * KiB), await cb.read(at, 64 * KiB)];
      assert.ok(x.equals(y), `the images differ at ${at}`);
    }
  } finally {
    await ca.close();
    await cb.close();
  }
});
