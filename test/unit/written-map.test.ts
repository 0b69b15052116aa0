// Proves the written map (docs/volumes.md): random marks against a plain Set model (mark,
// covers, counts, the copy's walk over marked ranges), the file codec round trip and its
// refusal of every truncation and every flipped byte, and the durable map on real files:
// saved bits load back, a missing map (older data directory) or a damaged one is never
// trusted, ensureDurable shares saves, VolumeFile marks on write but not on zeroes, never
// truncates an existing file, and finishes an interrupted emptying on open; zeroes touch only
// marked extents (a discard of a sparse volume allocates nothing).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, stat, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { copyAmount } from "../../src/cli/pair-command.ts";
import { renderVolumes } from "../../src/cli/volume-command.ts";
import { ExtentMap } from "../../src/core/extent-map.ts";
import { volumeBytesMax, writtenMapExtentBytes } from "../../src/core/limits.ts";
import { decodeWrittenMap, encodeWrittenMap, writtenMapHeaderBytes } from "../../src/protocol/written-map-file.ts";
import { FileTooLargeError, VolumeFile } from "../../src/storage/volume-file.ts";
import { WrittenMap } from "../../src/storage/written-map.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tm-written-map-"));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- the pure map against a model ---------------------------------------------------

/** A small volume (sizes not a multiple of the extent, so the short last extent is exercised) and marks in it. */
const scenarioArb = fc
  .record({ extentBytes: fc.constantFrom(512, 4096, 65536), extents: fc.integer({ min: 1, max: 200 }), tailBytes: fc.integer({ min: 0, max: 3 }) })
  .chain(({ extentBytes, extents, tailBytes }) => {
    const sizeBytes = Math.max(512, (extents - 1) * extentBytes + (tailBytes === 0 ? extentBytes : tailBytes * 128));
    const range = fc.integer({ min: 0, max: sizeBytes }).chain((offsetBytes) =>
      fc.integer({ min: 0, max: sizeBytes - offsetBytes }).map((lengthBytes) => ({ offsetBytes, lengthBytes })));
    return fc.record({ extentBytes: fc.constant(extentBytes), sizeBytes: fc.constant(sizeBytes), marks: fc.array(range, { maxLength: 40 }), probes: fc.array(range, { maxLength: 20 }) });
  });

function modelExtents(extentBytes: number, offsetBytes: number, lengthBytes: number): number[] {
  if (lengthBytes === 0) return [];
  const out: number[] = [];
  for (let e = Math.floor(offsetBytes / extentBytes); e <= Math.floor((offsetBytes + lengthBytes - 1) / extentBytes); e++) out.push(e);
  return out;
}

void test("ExtentMap: random marks agree with a Set of extents (mark, has, covers, counts, runs)", () => {
  fc.assert(fc.property(scenarioArb, ({ extentBytes, sizeBytes, marks, probes }) => {
    const map = new ExtentMap(sizeBytes, extentBytes);
    const model = new Set<number>();
    for (const { offsetBytes, lengthBytes } of marks) {
      const fresh = modelExtents(extentBytes, offsetBytes, lengthBytes).filter((e) => !model.has(e));
      for (const e of fresh) model.add(e);
      assert.equal(map.mark(offsetBytes, lengthBytes), fresh.length, "mark returns the count of new extents");
    }
    assert.equal(map.markedExtents, model.size);
    for (let e = 0; e < map.extentCount; e++) assert.equal(map.has(e), model.has(e), `extent ${e}`);
    let modelBytes = 0;
    for (const e of model) modelBytes += Math.min((e + 1) * extentBytes, sizeBytes) - e * extentBytes;
    assert.equal(map.markedBytes, modelBytes, "marked bytes count the short last extent as it is");
    for (const { offsetBytes, lengthBytes } of probes) {
      assert.equal(map.covers(offsetBytes, lengthBytes), modelExtents(extentBytes, offsetBytes, lengthBytes).every((e) => model.has(e)));
    }
    // Runs: maximal, ordered, exactly the marked bytes.
    let runBytes = 0;
    let lastEnd = -1;
    for (const run of map.runs()) {
      assert.ok(run.offsetBytes > lastEnd, "runs are ordered and separated by a clear extent");
      assert.ok(map.covers(run.offsetBytes, run.lengthBytes));
      runBytes += run.lengthBytes;
      lastEnd = run.offsetBytes + run.lengthBytes;
    }
    assert.equal(runBytes, map.markedBytes);
    // Copy and bits round trip.
    assert.ok(map.clone().isSubsetOf(map) && map.isSubsetOf(map.clone()));
    assert.equal(new ExtentMap(sizeBytes, extentBytes, map.copyBits()).markedExtents, model.size);
  }), { numRuns: 300 });
});

void test("ExtentMap.nextMarkedRange: the copy's walk visits every marked byte once, in chunks of at most the maximum, and nothing else", () => {
  fc.assert(fc.property(scenarioArb, fc.integer({ min: 1, max: 5 }), ({ extentBytes, sizeBytes, marks }, chunkExtents) => {
    const map = new ExtentMap(sizeBytes, extentBytes);
    for (const { offsetBytes, lengthBytes } of marks) map.mark(offsetBytes, lengthBytes);
    const chunkBytesMax = chunkExtents * extentBytes;
    const visited = new ExtentMap(sizeBytes, extentBytes);
    let cursor = 0;
    let bytes = 0;
    for (let steps = 0; cursor < sizeBytes; steps++) {
      assert.ok(steps <= map.extentCount, "the walk ends");
      const range = map.nextMarkedRange(cursor, chunkBytesMax);
      if (range === undefined) break;
      assert.ok(range.offsetBytes >= cursor && range.lengthBytes > 0 && range.lengthBytes <= chunkBytesMax);
      assert.ok(range.offsetBytes + range.lengthBytes <= sizeBytes);
      assert.ok(map.covers(range.offsetBytes, range.lengthBytes), "only marked extents are visited");
      assert.ok(!visited.covers(range.offsetBytes, range.lengthBytes) || range.lengthBytes === 0, "nothing twice");
      visited.mark(range.offsetBytes, range.lengthBytes);
      bytes += range.lengthBytes;
      cursor = range.offsetBytes + range.lengthBytes;
    }
    assert.equal(bytes, map.markedBytes, "the walk's bytes are the total the progress shows");
    assert.ok(map.isSubsetOf(visited) && visited.isSubsetOf(map), "every marked extent is visited");
  }), { numRuns: 300 });
});

void test("ExtentMap.markedPartsOf: exactly the bytes of the range that lie in marked extents, as maximal ranges in order", () => {
  fc.assert(fc.property(scenarioArb, ({ extentBytes, sizeBytes, marks, probes }) => {
    const map = new ExtentMap(sizeBytes, extentBytes);
    for (const { offsetBytes, lengthBytes } of marks) map.mark(offsetBytes, lengthBytes);
    for (const { offsetBytes, lengthBytes } of probes) {
      const parts = map.markedPartsOf(offsetBytes, lengthBytes);
      const expected: { offsetBytes: number; lengthBytes: number }[] = [];
      for (let at = offsetBytes; at < offsetBytes + lengthBytes;) {
        const extent = Math.floor(at / extentBytes);
        const end = Math.min((extent + 1) * extentBytes, offsetBytes + lengthBytes);
        if (map.has(extent)) {
          const last = expected[expected.length - 1];
          if (last !== undefined && last.offsetBytes + last.lengthBytes === at) last.lengthBytes += end - at;
          else expected.push({ offsetBytes: at, lengthBytes: end - at });
        }
        at = end;
      }
      assert.deepEqual(parts, expected, `parts of ${offsetBytes}+${lengthBytes}`);
    }
  }), { numRuns: 300 });
});

void test("ExtentMap: markAll and clear; the largest volume's map is 2 MiB; refuses bits past the last extent", () => {
  const map = new ExtentMap(10 * 4096 + 512, 4096);
  assert.equal(map.extentCount, 11);
  map.markAll();
  assert.equal(map.markedExtents, 11);
  assert.equal(map.markedBytes, 10 * 4096 + 512);
  assert.equal(ExtentMap.strayBits(map.copyBits(), 11), 0, "markAll sets no bit past the end");
  map.clear();
  assert.equal(map.markedExtents, 0);
  assert.equal(ExtentMap.bitsBytes(volumeBytesMax, writtenMapExtentBytes), 2 * MiB);
  assert.throws(() => new ExtentMap(11 * 4096, 4096, Uint8Array.from([0, 0xff])), /past the last extent/);
  assert.throws(() => map.mark(10 * 4096, 4096), /inside a volume/);
});

// ---- the file codec ------------------------------------------------------------------

void test("written-map file: round trip, and every truncation and every flipped byte is refused, never trusted", () => {
  fc.assert(fc.property(scenarioArb, fc.nat(), fc.integer({ min: 1, max: 255 }), ({ extentBytes, sizeBytes, marks }, at, flip) => {
    const map = new ExtentMap(sizeBytes, extentBytes);
    for (const { offsetBytes, lengthBytes } of marks) map.mark(offsetBytes, lengthBytes);
    const file = encodeWrittenMap(map, 0);
    const decoded = decodeWrittenMap(file, sizeBytes, extentBytes);
    assert.ok(decoded.ok);
    assert.ok(decoded.map.isSubsetOf(map) && map.isSubsetOf(decoded.map));
    assert.equal(decoded.flags, 0);
    const cut = at % file.length;
    const truncated = decodeWrittenMap(file.subarray(0, cut), sizeBytes, extentBytes);
    assert.ok(!truncated.ok, `a map cut at ${cut} of ${file.length} bytes is refused`);
    const damaged = Buffer.from(file);
    damaged[cut] = (damaged[cut] ?? 0) ^ flip;
    const result = decodeWrittenMap(damaged, sizeBytes, extentBytes);
    assert.ok(!result.ok, `byte ${cut} flipped (^${flip}) is refused`);
    assert.ok(!decodeWrittenMap(Buffer.concat([file, Buffer.alloc(1)]), sizeBytes, extentBytes).ok, "trailing bytes are refused");
  }), { numRuns: 300 });
  const map = new ExtentMap(8 * MiB, MiB);
  map.mark(3 * MiB, 1);
  const file = encodeWrittenMap(map, 1);
  assert.equal(file.length, writtenMapHeaderBytes + 1);
  assert.deepEqual(decodeWrittenMap(file, 16 * MiB, MiB), { ok: false, reason: "made for a volume of 8388608 bytes, this one has 16777216" });
  assert.match((decodeWrittenMap(file, 8 * MiB, 4096) as { reason: string }).reason, /extents of 1048576 bytes/);
  const decoded = decodeWrittenMap(file, 8 * MiB, MiB);
  assert.ok(decoded.ok && decoded.flags === 1, "flags survive");
});

// ---- the durable map on real files -----------------------------------------------------

void test("WrittenMap: saved bits load back; a save covers every bit set before it; ensureDurable shares saves and has a fast path", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "1.vol.written");
    const sizeBytes = 64 * MiB;
    const map = await WrittenMap.create(nodeFileSystem, path, sizeBytes);
    assert.equal(map.origin, "created");
    map.mark(5 * MiB + 7, 3);
    assert.ok(map.dirty);
    await map.save();
    assert.ok(!map.dirty);
    let loaded = await WrittenMap.load(nodeFileSystem, path, sizeBytes, () => Promise.resolve(4096));
    assert.equal(loaded.origin, "loaded");
    assert.deepEqual([...loaded.snapshot().runs()], [{ offsetBytes: 5 * MiB, lengthBytes: MiB }]);

    // 40 writes into new extents at once: each waits, and once they resolve every bit is on disk.
    const waits = Array.from({ length: 40 }, (_, i) => map.ensureDurable((10 + i) * MiB, 4096));
    assert.ok(waits.every((w) => w !== undefined), "bits not yet durable: wait");
    await Promise.all(waits);
    loaded = await WrittenMap.load(nodeFileSystem, path, sizeBytes, () => Promise.resolve(4096));
    assert.equal(loaded.markedExtents, 41);
    assert.equal(map.ensureDurable(12 * MiB + 100, 10), undefined, "a durable extent needs no wait");
    assert.equal(map.ensureDurable(5 * MiB, MiB), undefined);
  });
});

void test("WrittenMap: no map file (an older data directory) counts every extent written, or none when no block is allocated; logged origin, saved once", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "2.vol.written");
    const legacy = await WrittenMap.load(nodeFileSystem, path, 10 * MiB + 512, () => Promise.resolve(8192));
    assert.equal(legacy.origin, "legacy");
    assert.equal(legacy.markedBytes, 10 * MiB + 512, "every extent counts as written");
    const again = await WrittenMap.load(nodeFileSystem, path, 10 * MiB + 512, () => Promise.resolve(8192));
    assert.equal(again.origin, "loaded", "the migration was saved: the note appears once");
    const empty = await WrittenMap.load(nodeFileSystem, join(dir, "3.vol.written"), 10 * MiB, () => Promise.resolve(0));
    assert.equal(empty.origin, "legacy-empty");
    assert.equal(empty.markedExtents, 0);
  });
});

void test("WrittenMap: a truncated or damaged map file is set aside and every extent counts as written", async () => {
  await withDir(async (dir) => {
    const sizeBytes = 32 * MiB;
    for (const damage of ["truncate", "flip"] as const) {
      const path = join(dir, `${damage}.vol.written`);
      const map = await WrittenMap.create(nodeFileSystem, path, sizeBytes);
      map.mark(MiB, 1);
      await map.save();
      const bytes = await readFile(path);
      await writeFile(path, damage === "truncate" ? bytes.subarray(0, bytes.length - 1) : Buffer.from(bytes.map((b, i) => (i === writtenMapHeaderBytes ? b ^ 0x80 : b))));
      const loaded = await WrittenMap.load(nodeFileSystem, path, sizeBytes, () => Promise.resolve(4096));
      assert.equal(loaded.origin, "untrusted", damage);
      assert.match(loaded.problem ?? "", damage === "truncate" ? /truncated/ : /checksum/);
      assert.equal(loaded.markedExtents, 32, "never trusted: all written");
      assert.ok((await readdir(dir)).includes(`${damage}.vol.written.corrupt`), "the damaged file is kept aside");
      assert.equal((await WrittenMap.load(nodeFileSystem, path, sizeBytes, () => Promise.resolve(4096))).origin, "loaded", "the replacement is a valid map");
    }
  });
});

void test("VolumeFile: write marks its extents, zeroes do not; the map survives close and open", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "4.vol");
    const file = await VolumeFile.create(nodeFileSystem, path, 16 * MiB);
    await file.write(3 * MiB - 1, Buffer.alloc(2, 7));
    await file.writeZeroes(8 * MiB, 4 * MiB);
    assert.deepEqual([...file.written.snapshot().runs()], [{ offsetBytes: 2 * MiB, lengthBytes: 2 * MiB }]);
    await file.written.save();
    await file.close();
    const reopened = await VolumeFile.open(nodeFileSystem, path, 16 * MiB);
    assert.equal(reopened.written.origin, "loaded");
    assert.equal(reopened.written.markedBytes, 2 * MiB);
    await reopened.close();
  });
});

void test("VolumeFile.writeZeroes allocates nothing where the volume holds nothing: only marked extents get zeroes", async () => {
  await withDir(async (dir) => {
    const TiB = 1024 * 1024 * MiB;
    const path = join(dir, "8.vol");
    const file = await VolumeFile.create(nodeFileSystem, path, TiB);
    try {
      // A discard of the first 256 MiB of a fresh, sparse volume (the old code wrote them all).
      await file.writeZeroes(0, 256 * MiB);
      assert.equal(await file.allocatedBytes(), 0, "zeroes over clear extents allocate nothing");
      // mkfs discards the whole device: 1 TiB of zeroes, none written.
      await file.writeZeroes(0, TiB);
      assert.equal(await file.allocatedBytes(), 0, "a discard of the whole device allocates nothing");
      assert.equal(file.written.markedExtents, 0, "zeroes do not mark");
      // Data in one extent, then zeroes over it and the clear extents around it.
      await file.write(700 * MiB + 4096, Buffer.alloc(8192, 0xee));
      await file.write(700 * MiB + 512 * KiB, Buffer.alloc(4096, 0xdd));
      const allocatedWithData = await file.allocatedBytes();
      await file.writeZeroes(690 * MiB + 4096, 20 * MiB);
      assert.ok((await file.read(700 * MiB, MiB)).every((b) => b === 0), "the marked extent now reads zeroes");
      const allocated = await file.allocatedBytes();
      assert.ok(allocated <= allocatedWithData + MiB, `zeroes went into the marked extent only (${allocated} bytes allocated)`);
      // A range that starts and ends inside marked extents: zeroes only in the range.
      await file.write(MiB - 4096, Buffer.alloc(3 * MiB, 0x11));
      await file.writeZeroes(MiB, MiB + 512);
      const around = await file.read(MiB - 4096, 3 * MiB);
      assert.ok(around.subarray(0, 4096).every((b) => b === 0x11), "bytes before the range are kept");
      assert.ok(around.subarray(4096, 4096 + MiB + 512).every((b) => b === 0), "the range reads zeroes");
      assert.ok(around.subarray(4096 + MiB + 512).every((b) => b === 0x11), "bytes after the range are kept");
    } finally {
      await file.close();
    }
  });
});

void test("VolumeFile.create never truncates a file that exists, and a failed create leaves nothing behind", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "5.vol");
    await writeFile(path, "data a user wrote");
    await assert.rejects(VolumeFile.create(nodeFileSystem, path, MiB), { code: "EEXIST" });
    assert.equal(await readFile(path, "utf8"), "data a user wrote");
    assert.deepEqual((await readdir(dir)).sort(), ["5.vol"]);

    // The largest size tidemark allows: refused with the file system's limit (ext4), or created (xfs, btrfs, tmpfs).
    const bigPath = join(dir, "6.vol");
    const isExt4 = (await statfs(dir)).type === 0xef53;
    try {
      const big = await VolumeFile.create(nodeFileSystem, bigPath, volumeBytesMax);
      assert.ok(!isExt4, "ext4 cannot hold a 16 TiB file");
      assert.equal((await stat(bigPath)).size, volumeBytesMax);
      await big.close();
      await VolumeFile.remove(nodeFileSystem, bigPath);
    } catch (error) {
      assert.ok(error instanceof FileTooLargeError, String(error));
      if (isExt4) {
        assert.equal(error.fileSystem, "ext4");
        assert.equal(error.limitBytes, volumeBytesMax - 4096, "ext4 with 4 KiB blocks: 16 TiB - 4 KiB");
      }
      const limited = await VolumeFile.create(nodeFileSystem, bigPath, error.limitBytes - (error.limitBytes % 512));
      await limited.close();
      await VolumeFile.remove(nodeFileSystem, bigPath);
    }
    assert.deepEqual((await readdir(dir)).sort(), ["5.vol"], "no orphan volume or map file");
  });
});

void test("VolumeFile.discardContents empties the volume (sparse, map clear), and open() finishes one a crash interrupted", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "7.vol");
    const file = await VolumeFile.create(nodeFileSystem, path, 8 * MiB);
    await file.write(MiB, Buffer.alloc(64 * KiB, 0xab));
    await file.discardContents();
    assert.equal((await file.read(MiB, 64 * KiB)).every((b) => b === 0), true);
    assert.equal(file.written.markedExtents, 0);
    assert.equal(await file.allocatedBytes(), 0);
    assert.equal((await stat(path)).size, 8 * MiB);

    // A crash after the intent was saved and the file cut to 0 bytes, before it was grown back.
    await file.write(2 * MiB, Buffer.alloc(4096, 0xcd));
    await file.written.beginReset();
    await file.close();
    await writeFile(path, "");
    const reopened = await VolumeFile.open(nodeFileSystem, path, 8 * MiB);
    assert.equal((await stat(path)).size, 8 * MiB, "grown back to its size");
    assert.equal(reopened.written.markedExtents, 0);
    assert.equal(reopened.written.resetPending, false);
    assert.equal((await reopened.read(2 * MiB, 4096)).every((b) => b === 0), true);
    await reopened.close();
    const again = await VolumeFile.open(nodeFileSystem, path, 8 * MiB);
    assert.equal(again.written.resetPending, false, "the finished reset was saved");
    await again.close();
  });
});

// ---- what the CLI shows ------------------------------------------------------------------

void test("CLI: the copy's amount names the written part (an upper bound: whole extents) and the volumes' size; volume tables show WRITTEN EXTENTS and warnings", () => {
  assert.equal(copyAmount({ doneBytes: 0, totalBytes: 6 * MiB, volumeBytes: 1024 * 1024 * MiB }), "up to 6.0 MiB written of 1.0 TiB");
  assert.equal(copyAmount({ doneBytes: 0, totalBytes: MiB }), "1.0 MiB", "an older node says no volume size");
  assert.equal(copyAmount({ doneBytes: 0, totalBytes: MiB, volumeBytes: MiB }), "1.0 MiB");
  const text = renderVolumes([
    { name: "big", sizeBytes: 1024 * 1024 * MiB, allocatedBytes: 8192, group: null, readOnly: false, writtenBytes: 2 * MiB, warning: "volume big (1.0 TiB) is larger than the free space" },
    { name: "small", sizeBytes: MiB, allocatedBytes: 0, group: "g", readOnly: true, writtenBytes: 0, warning: null },
  ]);
  assert.equal(text, [
    "NAME      SIZE  ALLOCATED  WRITTEN EXTENTS  GROUP  RO",
    "big    1.0 TiB    8.0 KiB          2.0 MiB  -      no",
    "small  1.0 MiB        0 B              0 B  g      yes",
    "warning: volume big (1.0 TiB) is larger than the free space",
    "",
  ].join("\n"));
});

void test("grow (volume resize): the map keeps its bits and the new extents are clear; a map file of the old size loads grown; a file longer than node.json (a grow that did not finish) is cut back to node.json's size", async () => {
  // The pure map: a short last extent becomes whole, its bit kept.
  const map = new ExtentMap(2 * MiB + 512, MiB);
  map.mark(2 * MiB, 512);
  map.mark(0, 1);
  const grown = map.grownTo(5 * MiB);
  assert.deepEqual([grown.extentCount, grown.markedExtents, grown.has(0), grown.has(2), grown.has(3), grown.has(4)], [5, 2, true, true, false, false]);
  assert.equal(map.grownTo(map.sizeBytes).markedExtents, 2, "growing to the same size copies");
  assert.throws(() => map.grownTo(MiB), /never shrinks/);

  await withDir(async (dir) => {
    const path = join(dir, "1.vol");
    const file = await VolumeFile.create(nodeFileSystem, path, 2 * MiB);
    await file.write(MiB, Buffer.alloc(4096, 7));
    await file.written.save();
    // Extended first (the file only), as a resize does before it records anything.
    await file.extendFile(6 * MiB);
    assert.equal(file.sizeBytes, 2 * MiB, "extending the file does not grow the volume");
    assert.equal((await stat(path)).size, 6 * MiB);
    // A grow refused before anything recorded it undoes the extension (whole-node simulation seed 3143: the file stayed longer than the volume).
    await file.cutBackExtension();
    assert.equal((await stat(path)).size, 2 * MiB, "cut back to the volume's size");
    await file.extendFile(6 * MiB);
    await file.close();
    // A crash now: node.json still says 2 MiB; the longer file opens at that size, cut back to it.
    const reopened = await VolumeFile.open(nodeFileSystem, path, 2 * MiB);
    assert.equal(reopened.sizeBytes, 2 * MiB);
    assert.equal((await stat(path)).size, 2 * MiB, "the unfinished grow is undone");
    assert.ok((await reopened.read(MiB, 4096)).equals(Buffer.alloc(4096, 7)), "data inside the size kept");
    await reopened.grow(6 * MiB);
    assert.deepEqual([reopened.sizeBytes, reopened.written.sizeBytes, reopened.written.markedExtents], [6 * MiB, 6 * MiB, 1]);
    await reopened.write(5 * MiB, Buffer.alloc(4096, 9));
    assert.ok((await reopened.read(4 * MiB, 4096)).equals(Buffer.alloc(4096)), "the grown part reads zeroes");
    await reopened.close();
    // node.json says 6 MiB, the map file still says 2 MiB (saved before the grow): it loads grown, clear past the old end.
    const beforeGrow = await VolumeFile.create(nodeFileSystem, join(dir, "2.vol"), 2 * MiB);
    await beforeGrow.write(0, Buffer.alloc(512, 1));
    await beforeGrow.written.save();
    await beforeGrow.extendFile(6 * MiB);
    await beforeGrow.close();
    const loaded = await VolumeFile.open(nodeFileSystem, join(dir, "2.vol"), 6 * MiB);
    assert.deepEqual([loaded.written.origin, loaded.written.sizeBytes, loaded.written.markedExtents], ["loaded", 6 * MiB, 1]);
    assert.equal(decodeWrittenMap(await readFile(WrittenMap.pathFor(join(dir, "2.vol"))), 6 * MiB, writtenMapExtentBytes).ok, true, "saved again at the new size");
    await loaded.close();
    // A file shorter than node.json says is never made by a grow: refused.
    await assert.rejects(VolumeFile.open(nodeFileSystem, join(dir, "2.vol"), 8 * MiB), /is 6291456 bytes, metadata says 8388608/);
  });
});
