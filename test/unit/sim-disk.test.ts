// Proves the simulated disk (test/sim/sim-disk.ts) keeps the rules the storage code relies on,
// so that what the journal, volume and metadata tests over it find is real: datasync and
// directory fsync are what make data and names durable, a process crash keeps the page cache,
// a power loss keeps the disk plus some of what was written (torn at sectors), faults give the
// errno a Linux file system gives, a failed datasync drops its pages ("fsyncgate") where only
// O_DIRECT sees it, and the same seed always gives the same disk. Plain calls use the real-timer
// scheduler; crash tests use virtual time to crash with operations in flight.
import { test } from "node:test";
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import type { FileSystem } from "../../src/storage/fs.ts";
import { readWholeFile, writeFileAtomic, writeWholeFile } from "../../src/storage/durable-fs.ts";
import { realTimeSchedule, SimDisk, simFileSystemTypeCode, simPageBytes } from "../sim/sim-disk.ts";
import { VirtualTime } from "../sim/virtual-time.ts";

function pattern(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 1) out[i] = (seed * 131 + i * 7 + 1) & 0xff;
  return out;
}

async function exists(fs: FileSystem, path: string): Promise<boolean> {
  return fs.stat(path).then(() => true, () => false);
}

/** A disk on virtual time; `run` settles a promise by running the disk's events. */
function virtualDisk(seed: number, capacityBytes?: number): { disk: SimDisk; time: VirtualTime; run: <T>(p: Promise<T>) => Promise<T> } {
  const time = new VirtualTime();
  const disk = new SimDisk({ seed, schedule: time.schedule, ...(capacityBytes === undefined ? {} : { capacityBytes }) });
  return { disk, time, run: (p) => time.until(p) };
}

void test("sim disk: files, directories and errors as a Linux file system gives them (real timers)", async () => {
  const disk = new SimDisk({ seed: 1, schedule: realTimeSchedule });
  const fs = disk.mount();
  await fs.makeDirectory("/data/journals/1");
  await fs.makeDirectory("/data/journals/1"); // mkdir -p of an existing directory is fine
  const file = await fs.open("/data/a", "create-exclusive");
  await assert.rejects(fs.open("/data/a", "create-exclusive"), { code: "EEXIST" });
  await assert.rejects(fs.open("/data/none", "read"), { code: "ENOENT" });
  await assert.rejects(fs.open("/nodir/x", "create-exclusive"), { code: "ENOENT" });
  await assert.rejects(fs.open("/data/journals", "read"), { code: "EISDIR" });
  await assert.rejects(fs.makeDirectory("/data/a/b"), { code: "EEXIST" });
  await assert.rejects(fs.unlink("/data/journals"), { code: "EISDIR" });
  assert.equal(await file.write(pattern(10_000, 1), 0, 10_000, 100), 10_000);
  assert.equal(file.writevSync([pattern(10, 2), pattern(20, 3)], 20_000), 30);
  assert.deepEqual(await file.stat(), { kind: "file", sizeBytes: 20_030, allocatedBytes: 4 * simPageBytes }, "sparse: pages 0-2 and 4");
  const back = Buffer.alloc(10_000);
  assert.equal(file.readSync(back, 0, 10_000, 100), 10_000);
  assert.ok(back.equals(pattern(10_000, 1)));
  assert.equal(await file.read(back, 0, 100, 20_000), 30, "a read stops at the end of the file");
  assert.equal(await file.read(back, 0, 100, 30_000), 0);
  await file.truncate(50);
  assert.equal((await file.stat()).sizeBytes, 50);
  await file.close();
  await file.close(); // closing again does nothing
  await assert.rejects(file.read(back, 0, 1, 0), { code: "EBADF" });
  assert.throws(() => file.writeSync(back, 0, 1, 0), { code: "EBADF" });
  const reader = await fs.open("/data/a", "read");
  assert.throws(() => reader.writeSync(back, 0, 1, 0), { code: "EBADF" }, "a read-only handle does not write");
  await reader.close();
  await fs.rename("/data/a", "/data/b");
  assert.deepEqual((await fs.readDirectory("/data")).sort(), ["b", "journals"]);
  await assert.rejects(fs.rename("/data/b", "/data/journals/b"), { code: "EXDEV" });
  await fs.removeTree("/data/journals");
  await fs.removeTree("/data/journals"); // rm -f: missing is fine
  assert.deepEqual(await fs.readDirectory("/data"), ["b"]);
  const info = await fs.statFileSystem("/data");
  assert.equal(info.typeCode, simFileSystemTypeCode);
  assert.equal(info.freeBytes + disk.usedBytes, info.totalBytes);
});

void test("sim disk: datasync and directory fsync are what survive a power loss; a process crash keeps the page cache", async () => {
  let lostData = 0;
  let lostNames = 0;
  for (let seed = 1; seed <= 40; seed += 1) {
    const { disk, run } = virtualDisk(seed);
    let fs = disk.mount();
    await run(fs.makeDirectory("/d"));
    await run(fs.syncDirectory("/"));
    // durable: synced data under a synced name
    const durable = await run(fs.open("/d/durable", "create-exclusive"));
    await run(durable.write(pattern(9000, 1), 0, 9000, 0));
    await run(durable.datasync());
    // written, not synced; and synced data under a name never fsync'd
    const written = await run(fs.open("/d/written", "create-exclusive"));
    await run(fs.syncDirectory("/d"));
    written.writeSync(pattern(9000, 2), 0, 9000, 0);
    durable.writeSync(pattern(100, 3), 0, 100, 9000); // appended, not synced
    const unnamed = await run(fs.open("/d/unnamed", "create-exclusive"));
    unnamed.writeSync(pattern(5000, 4), 0, 5000, 0);
    await run(unnamed.datasync());

    disk.crash("process");
    assert.throws(() => written.writeSync(pattern(1, 0), 0, 1, 0), { code: "EBADF" }, "the crashed process's handles are dead");
    fs = disk.mount();
    assert.ok((await run(readWholeFile(fs, "/d/written"))).equals(pattern(9000, 2)), "a process crash keeps what was written");
    assert.equal((await run(fs.stat("/d/durable"))).sizeBytes, 9100);
    assert.ok(await run(exists(fs, "/d/unnamed")));

    disk.crash("power");
    fs = disk.mount();
    const kept = await run(readWholeFile(fs, "/d/durable"));
    assert.ok(kept.subarray(0, 9000).equals(pattern(9000, 1)), `seed ${seed}: synced data survives`);
    assert.ok(kept.length === 9000 || kept.length === 9100, "the size is the synced one or the written one");
    const written2 = await run(readWholeFile(fs, "/d/written"));
    assert.ok(written2.length === 0 || written2.length === 9000);
    if (!written2.equals(pattern(9000, 2))) lostData += 1;
    if (!(await run(exists(fs, "/d/unnamed")))) lostNames += 1;
  }
  assert.ok(lostData > 5 && lostData < 40, `unsynced data is lost in some power losses, not all (${lostData}/40)`);
  assert.ok(lostNames > 5 && lostNames < 40, `a name never fsync'd is lost in some power losses, not all (${lostNames}/40)`);
});

void test("sim disk: a datasync writes back the pages as they were when it was called, whatever is written to them meanwhile (pages changed in place, whole zero pages)", async () => {
  const time = new VirtualTime();
  // Dirty pages never reach the disk at a power loss here: the disk is exactly what the datasyncs wrote.
  const disk = new SimDisk({ seed: 7, schedule: time.schedule, powerLoss: { pageWrittenBack: 0, pageTorn: 0, inFlightWriteLands: 0 } });
  const run = <T>(p: Promise<T>): Promise<T> => time.until(p);
  let fs = disk.mount();
  const file = await run(fs.open("/f", "create-exclusive"));
  await run(fs.syncDirectory("/"));
  const zeroes = Buffer.alloc(simPageBytes);
  // Page 0 written twice (the second in place), page 1 a whole page of zeroes.
  file.writeSync(pattern(1000, 1), 0, 1000, 0);
  file.writeSync(pattern(1000, 2), 0, 1000, 1000);
  file.writeSync(zeroes, 0, simPageBytes, simPageBytes);
  const asCalled = disk.cachedView("/f") ?? Buffer.alloc(0);
  const synced = file.datasync(); // takes the pages now
  // Meanwhile: page 0 written again and again, page 1's zeroes overwritten, page 2 a new page of zeroes.
  file.writeSync(pattern(500, 3), 0, 500, 100);
  file.writeSync(pattern(500, 4), 0, 500, 200);
  file.writeSync(pattern(simPageBytes, 5), 0, simPageBytes, simPageBytes);
  file.writeSync(zeroes, 0, simPageBytes, 2 * simPageBytes);
  const later = disk.cachedView("/f") ?? Buffer.alloc(0);
  await run(synced);
  assert.ok(disk.cachedView("/f")?.equals(later), "readers see the latest writes");
  disk.crash("power");
  fs = disk.mount();
  const after = await run(readWholeFile(fs, "/f"));
  // (Its size is the synced one or the written one: past the synced size, the disk has nothing.)
  assert.ok(after.subarray(0, asCalled.length).equals(asCalled) && after.subarray(asCalled.length).every((b) => b === 0),
    "the disk holds what the datasync took when it was called, not what was written after");
  // The zero page shared by whole zero pages is never written through.
  const other = await run(fs.open("/g", "create-exclusive"));
  other.writeSync(zeroes, 0, simPageBytes, 0);
  other.writeSync(pattern(100, 6), 0, 100, 10);
  assert.ok(disk.cachedView("/f")?.subarray(simPageBytes, 2 * simPageBytes).equals(zeroes), "page 1 of /f is still zeroes");
  assert.ok(disk.cachedRange("/g", simPageBytes, simPageBytes)?.equals(zeroes), "a hole reads as zeroes");
});

void test("sim disk: a datasync that completes after an O_DIRECT read wrote newer content back does not put its older capture on the disk (seed 9410)", async () => {
  const time = new VirtualTime();
  // A slow fdatasync and a fast read: the read's writeback happens while the datasync runs.
  const disk = new SimDisk({
    seed: 9, schedule: time.schedule, powerLoss: { pageWrittenBack: 0, pageTorn: 0, inFlightWriteLands: 0 },
    latency: { sync: { minMs: 50, maxMs: 50 }, read: { minMs: 0.1, maxMs: 0.1 } },
  });
  const run = <T>(p: Promise<T>): Promise<T> => time.until(p);
  let fs = disk.mount();
  const file = await run(fs.open("/f", "create-exclusive"));
  await run(fs.syncDirectory("/"));
  const direct = await run(fs.open("/f", "direct-read"));
  file.writeSync(pattern(simPageBytes, 1), 0, simPageBytes, 0);
  const synced = file.datasync(); // takes page 0 as written so far
  file.writeSync(pattern(512, 2), 0, 512, simPageBytes - 512); // the page's last sector, after the capture
  const scratch = Buffer.alloc(simPageBytes);
  await run(direct.read(scratch, 0, simPageBytes, 0)); // writes the page back as it is now: clean
  await run(synced);
  disk.crash("power");
  fs = disk.mount();
  const after = await run(readWholeFile(fs, "/f"));
  assert.ok(after.subarray(simPageBytes - 512, simPageBytes).equals(pattern(512, 2)), "the newer sector is on the disk: the late datasync did not overwrite it with its capture");
});

void test("sim disk: a write in flight at a power loss is torn at sectors, within its own bytes only", async () => {
  let torn = 0;
  for (let seed = 1; seed <= 40; seed += 1) {
    const { disk, run } = virtualDisk(seed);
    let fs = disk.mount();
    const file = await run(fs.open("/f", "create-exclusive"));
    await run(fs.syncDirectory("/"));
    const old = pattern(64 * 1024, 1);
    await run(file.write(old, 0, old.length, 0));
    await run(file.datasync());
    const next = pattern(40_000, 2);
    void file.write(next, 0, next.length, 1000); // in flight: not yet completed
    disk.crash("power");
    fs = disk.mount();
    const after = await run(readWholeFile(fs, "/f"));
    assert.equal(after.length, old.length);
    assert.ok(after.subarray(0, 1000).equals(old.subarray(0, 1000)) && after.subarray(41_000).equals(old.subarray(41_000)), "bytes outside the write never change");
    const kinds = new Set<string>();
    for (let at = 1000; at < 41_000;) {
      const end = Math.min(41_000, (Math.floor(at / 512) + 1) * 512);
      const got = after.subarray(at, end);
      kinds.add(got.equals(old.subarray(at, end)) ? "old" : got.equals(next.subarray(at - 1000, end - 1000)) ? "new" : "garbage");
      at = end;
    }
    if (kinds.size > 1) torn += 1;
  }
  assert.ok(torn > 5, `some writes in flight are torn (${torn}/40)`);
});

void test("sim disk: writeFileAtomic leaves the old or the new file at every power loss, never a mix", async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 60; seed += 1) {
    const { disk, time, run } = virtualDisk(seed);
    let fs = disk.mount();
    await run(fs.makeDirectory("/d"));
    await run(fs.syncDirectory("/"));
    const old = pattern(10_000, 1).toString("hex");
    const next = pattern(12_000, 2).toString("hex");
    await run(writeFileAtomic(fs, "/d/meta", old));
    void writeFileAtomic(fs, "/d/meta", next).catch(() => undefined);
    await time.runFor(seed % 12); // crash somewhere along the way (or after)
    disk.crash(seed % 3 === 0 ? "process" : "power");
    fs = disk.mount();
    const got = (await run(readWholeFile(fs, "/d/meta"))).toString();
    assert.ok(got === old || got === next, `seed ${seed}: old or new`);
    outcomes.add(got === old ? "old" : "new");
  }
  assert.deepEqual([...outcomes].sort(), ["new", "old"]);
});

void test("sim disk: capacity gives ENOSPC (short writes, creates, growth), statfs and stat follow it", async () => {
  const disk = new SimDisk({ seed: 3, schedule: realTimeSchedule, capacityBytes: 64 * simPageBytes });
  const fs = disk.mount();
  const file = await fs.open("/f", "create-exclusive");
  assert.equal((await fs.statFileSystem("/")).freeBytes, 64 * simPageBytes);
  assert.equal(await file.write(pattern(10 * simPageBytes, 1), 0, 10 * simPageBytes, 0), 10 * simPageBytes);
  assert.equal((await fs.statFileSystem("/")).freeBytes, 54 * simPageBytes);
  disk.fill(2 * simPageBytes);
  const big = pattern(5 * simPageBytes, 2);
  assert.equal(file.writeSync(big, 0, big.length, 10 * simPageBytes + 100), 2 * simPageBytes - 100, "a write that fits in part is short");
  assert.throws(() => file.writeSync(big, 0, big.length, 12 * simPageBytes), { code: "ENOSPC" });
  assert.equal(file.writeSync(big, 0, 50, 0), 50, "overwriting allocated pages needs no space");
  await assert.rejects(fs.open("/g", "create-exclusive"), { code: "ENOSPC" });
  await assert.rejects(file.truncate(100 * simPageBytes), { code: "ENOSPC" });
  await file.truncate(4 * simPageBytes); // shrinking frees pages
  assert.equal((await file.stat()).allocatedBytes, 4 * simPageBytes);
  assert.equal((await fs.statFileSystem("/")).freeBytes, 8 * simPageBytes);
  await file.truncate(100 * simPageBytes); // growth leaves a hole: no page
  assert.equal((await file.stat()).allocatedBytes, 4 * simPageBytes);
  await file.close();
  await fs.unlink("/f");
  assert.equal(disk.usedBytes, 0, "an unlinked, closed file gives its pages back");
  const limited = new SimDisk({ seed: 3, schedule: realTimeSchedule, fileBytesMax: 10_000 });
  const small = await limited.mount().open("/f", "create-exclusive");
  await assert.rejects(small.truncate(10_001), { code: "EFBIG" });
  assert.equal(await small.write(big, 0, 5000, 8000), 2000, "a write reaching the largest file size is short");
  await assert.rejects(small.write(big, 0, 10, 10_000), { code: "EFBIG" });
});

void test("sim disk: EIO by rate and by path; a failed datasync loses its pages where only O_DIRECT sees it (fsyncgate)", async () => {
  const disk = new SimDisk({ seed: 4, schedule: realTimeSchedule, failedSyncPages: "keep" });
  const fs = disk.mount();
  await fs.makeDirectory("/j");
  const file = await fs.open("/j/seg", "create-exclusive");
  const synced = pattern(6000, 1);
  await writeWholeFile(file, synced);
  await file.datasync();
  const lost = pattern(5000, 2);
  file.writeSync(lost, 0, lost.length, 6000);
  disk.failPath("/j", ["sync"]);
  await assert.rejects(file.datasync(), { code: "EIO" });
  await assert.rejects(fs.syncDirectory("/j"), { code: "EIO" });
  disk.healPath("/j");
  await file.datasync(); // succeeds: the dropped pages are clean now
  const cached = disk.cachedView("/j/seg");
  assert.ok(cached !== undefined && cached.subarray(6000).equals(lost), "the page cache still returns the lost bytes");
  const direct = await fs.open("/j/seg", "direct-read");
  const scratch = Buffer.alloc(16 * 1024);
  assert.equal(await direct.read(scratch, 0, 12 * 1024, 0), 11_000);
  assert.ok(scratch.subarray(0, 6000).equals(synced));
  assert.ok(!scratch.subarray(6000, 11_000).equals(lost), "O_DIRECT reads the disk, which never got them");
  assert.ok(scratch.subarray(8192, 11_000).every((byte) => byte === 0), "a page it never got reads as a hole");
  await assert.rejects(direct.read(scratch, 1, 512, 0), { code: "EINVAL" }, "O_DIRECT needs aligned buffers");
  await assert.rejects(direct.read(scratch, 0, 100, 0), { code: "EINVAL" }, "and aligned lengths");
  // O_DIRECT writes back the dirty pages of its range first: it sees what was written.
  file.writeSync(pattern(100, 3), 0, 100, 20_000);
  assert.equal(await direct.read(scratch, 0, 4096, 16_384), 3716);
  assert.ok(scratch.subarray(20_000 - 16_384, 20_100 - 16_384).equals(pattern(100, 3)));
  disk.setErrorRates({ read: 1 });
  await assert.rejects(file.read(scratch, 0, 10, 0), { code: "EIO" });
  assert.throws(() => file.readSync(scratch, 0, 10, 0), { code: "EIO" });
  disk.heal();
  disk.failPath("/j/seg", ["write"]);
  assert.throws(() => file.writeSync(scratch, 0, 10, 0), { code: "EIO" });
  disk.heal();
  assert.equal(file.writeSync(scratch, 0, 10, 0), 10);
  const noDirect = new SimDisk({ seed: 4, schedule: realTimeSchedule, directIo: false }).mount();
  await (await noDirect.open("/f", "create-exclusive")).close();
  await assert.rejects(noDirect.open("/f", "direct-read"), { code: "EINVAL" }, "as tmpfs refuses O_DIRECT");
});

void test("sim disk: pages a failed datasync dropped may be evicted, and a read then returns what the disk has", async () => {
  const disk = new SimDisk({ seed: 4, schedule: realTimeSchedule, failedSyncPages: "evict" });
  const fs = disk.mount();
  const file = await fs.open("/seg", "create-exclusive");
  const synced = pattern(8192, 1);
  await writeWholeFile(file, synced);
  await file.datasync();
  file.writeSync(pattern(4096, 2), 0, 4096, 0);
  disk.failPath("/seg", ["sync"]);
  await assert.rejects(file.datasync(), { code: "EIO" });
  disk.healPath("/seg");
  const scratch = Buffer.alloc(8192);
  assert.equal(await file.read(scratch, 0, 8192, 0), 8192);
  assert.ok(scratch.equals(synced), "the write the failed fdatasync carried is gone from the page cache too");
});

void test("sim disk: a crashed process's operations never complete; the same seed gives the same disk", async () => {
  const image = async (seed: number): Promise<string> => {
    const { disk, time, run } = virtualDisk(seed);
    let fs = disk.mount();
    const file = await run(fs.open("/f", "create-exclusive"));
    await run(fs.syncDirectory("/"));
    for (let i = 0; i < 20; i += 1) {
      file.writeSync(pattern(3000, i), 0, 3000, i * 2500);
      if (i === 4) void file.datasync();
      await time.runFor(0.3);
    }
    let settled = false;
    void file.datasync().then(() => { settled = true; }, () => { settled = true; });
    disk.crash("power");
    await time.drain();
    assert.equal(settled, false, "a datasync of the crashed process never settles");
    fs = disk.mount();
    return createHash("sha256").update(await run(readWholeFile(fs, "/f"))).digest("hex");
  };
  assert.equal(await image(7), await image(7), "same seed, same disk");
  const images = new Set<string>();
  for (let seed = 1; seed <= 8; seed += 1) images.add(await image(seed));
  assert.ok(images.size > 4, `other seeds, other disks (${images.size} of 8 differ)`);
});
