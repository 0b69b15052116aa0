// Proves the volume files, their written maps and the node's metadata store keep their promises
// over the simulated disk across power losses and process crashes at random moments, seed by
// seed: metadata reads back as the old or the new version, never a torn or unreadable one (and a
// save refused for ENOSPC or EIO leaves the old); a volume holds, sector by sector, what it held
// at its last datasync or what was written since, with a written map that covers every byte
// written before the map's last save; an emptying interrupted anywhere is finished on open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writtenMapExtentBytes } from "../../src/core/limits.ts";
import { emptyMetadata, loadMetadata, saveMetadata, type NodeMetadata } from "../../src/metadata/metadata.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { type CrashKind, SimDisk } from "../sim/sim-disk.ts";
import { Prng } from "../sim/prng.ts";
import { VirtualTime } from "../sim/virtual-time.ts";

/** A metadata version big enough to span several pages (so a torn write would show). */
function metadataVersion(version: number): NodeMetadata {
  const metadata = emptyMetadata("node-a", "2026-01-01T00:00:00.000Z");
  metadata.nextVolumeId = version + 1;
  for (let id = 1; id <= 40; id += 1) {
    metadata.volumes.push({ id, name: `volume-${id}-of-version-${version}`, sizeBytes: id * 1024 * 1024, fileName: `${id}.vol`, createdAt: "2026-01-01T00:00:00.000Z" });
  }
  return metadata;
}

void test("metadata over the simulated disk: a crash at any moment of a save leaves the old or the new version, a refused save the old", async () => {
  const outcomes = { old: 0, new: 0, refused: 0 };
  for (let seed = 1; seed <= 80; seed += 1) {
    const prng = new Prng(seed);
    const time = new VirtualTime();
    const disk = new SimDisk({ seed, schedule: time.schedule });
    let fs = disk.mount();
    await time.until(fs.makeDirectory("/data"));
    await time.until(fs.syncDirectory("/"));
    await time.until(saveMetadata(fs, "/data", metadataVersion(0)));
    let saved = 0;
    let started = 0;
    for (let version = 1; version <= 6; version += 1) {
      const fault = prng.int(0, 9);
      if (fault === 0) disk.fill();
      if (fault === 1) disk.failPath("/data", [prng.pick(["write", "sync"] as const)]);
      started = version;
      let settled: "saved" | "refused" | undefined;
      void saveMetadata(fs, "/data", metadataVersion(version)).then(() => { settled = "saved"; }, () => { settled = "refused"; });
      await time.runFor(prng.float() * 12);
      if (settled === undefined) break; // crash in the middle of the save
      if (settled === "saved") saved = version;
      else {
        outcomes.refused += 1;
        started = saved; // refused: never on the disk
      }
      disk.heal();
      disk.setCapacity(1024 ** 4);
    }
    const kind: CrashKind = prng.chance(0.3) ? "process" : "power";
    disk.crash(kind);
    disk.heal();
    disk.setCapacity(1024 ** 4);
    fs = disk.mount();
    const loaded = (await time.until(loadMetadata(fs, "/data")))?.metadata;
    assert.ok(loaded !== undefined, `seed ${seed}: the metadata is there`);
    const version = loaded.nextVolumeId - 1;
    assert.ok(version === saved || (version === started && started > saved), `seed ${seed}: version ${version} is the last saved (${saved}) or the one being saved (${started})`);
    assert.deepEqual(loaded, metadataVersion(version), `seed ${seed}: version ${version} whole`);
    if (version === saved) outcomes.old += 1;
    else outcomes.new += 1;
  }
  assert.ok(outcomes.old > 5 && outcomes.new > 5 && outcomes.refused > 3, `both outcomes and refusals seen: ${JSON.stringify(outcomes)}`);
});

const volumeBytes = 512 * 1024;
const sectorBytes = 512;

/**
 * Random writes into `volume`, mirrored in `image`; both the synchronous (<= 64 KiB) and the
 * asynchronous path. One at a time: overlapping writes in flight together land in any order.
 */
async function randomWrites(prng: Prng, time: VirtualTime, volume: VolumeFile, image: Buffer, count: number, tag: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    const lengthBytes = prng.pick([512, 4096, 10_000, 70_000, 130_000]);
    const offsetBytes = prng.int(0, volumeBytes - lengthBytes);
    const data = Buffer.alloc(lengthBytes);
    for (let j = 0; j < lengthBytes; j += 1) data[j] = (tag * 37 + i * 11 + j) & 0xff;
    data.copy(image, offsetBytes);
    await time.until(volume.write(offsetBytes, data));
  }
}

void test("volume files over the simulated disk: after a power loss every sector is as of the last datasync or as written since; the map covers what it saved", async () => {
  let sectorsKept = 0;
  let sectorsNew = 0;
  for (let seed = 1; seed <= 25; seed += 1) {
    const prng = new Prng(seed);
    const time = new VirtualTime();
    const disk = new SimDisk({ seed, schedule: time.schedule });
    let fs = disk.mount();
    await time.until(fs.makeDirectory("/data/volumes"));
    await time.until(fs.syncDirectory("/data"));
    await time.until(fs.syncDirectory("/"));
    const path = "/data/volumes/1.vol";
    let volume = await time.until(VolumeFile.create(fs, path, volumeBytes));
    const synced = Buffer.alloc(volumeBytes);
    await randomWrites(prng, time, volume, synced, 6, 1);
    await time.until(volume.datasync());
    await time.until(volume.written.save());
    const savedMap = volume.written.snapshot();
    const later = Buffer.from(synced);
    await randomWrites(prng, time, volume, later, 6, 2);
    disk.crash("power");
    fs = disk.mount();
    volume = await time.until(VolumeFile.open(fs, path, volumeBytes));
    const got = await time.until(volume.read(0, volumeBytes));
    for (let at = 0; at < volumeBytes; at += sectorBytes) {
      const sector = got.subarray(at, at + sectorBytes);
      const old = sector.equals(synced.subarray(at, at + sectorBytes));
      assert.ok(old || sector.equals(later.subarray(at, at + sectorBytes)), `seed ${seed}: sector at ${at} is the synced or the later one`);
      if (!synced.subarray(at, at + sectorBytes).equals(later.subarray(at, at + sectorBytes))) {
        if (old) sectorsKept += 1;
        else sectorsNew += 1;
      }
    }
    for (let at = 0; at < volumeBytes; at += writtenMapExtentBytes) {
      const extent = synced.subarray(at, at + writtenMapExtentBytes);
      if (extent.some((byte) => byte !== 0)) assert.ok(volume.written.snapshot().covers(at, extent.length) && savedMap.covers(at, extent.length), `seed ${seed}: written extent at ${at} is marked`);
    }
    await time.until(volume.close());
  }
  assert.ok(sectorsKept > 50 && sectorsNew > 50, `power losses kept some unsynced sectors and lost others (${sectorsNew} new, ${sectorsKept} old)`);
});

void test("volume files over the simulated disk: an emptying interrupted by a power loss anywhere is finished on open, or never began", async () => {
  const outcomes = { emptied: 0, untouched: 0 };
  for (let seed = 1; seed <= 40; seed += 1) {
    const prng = new Prng(seed);
    const time = new VirtualTime();
    const disk = new SimDisk({ seed, schedule: time.schedule });
    let fs = disk.mount();
    await time.until(fs.makeDirectory("/v"));
    await time.until(fs.syncDirectory("/"));
    let volume = await time.until(VolumeFile.create(fs, "/v/1.vol", volumeBytes));
    const image = Buffer.alloc(volumeBytes);
    await randomWrites(prng, time, volume, image, 5, 3);
    await time.until(volume.datasync());
    await time.until(volume.written.save());
    void volume.discardContents().catch(() => undefined);
    await time.runFor(prng.float() * 25);
    disk.crash("power");
    fs = disk.mount();
    volume = await time.until(VolumeFile.open(fs, "/v/1.vol", volumeBytes));
    const got = await time.until(volume.read(0, volumeBytes));
    if (got.every((byte) => byte === 0)) {
      outcomes.emptied += 1;
      assert.equal(volume.written.markedExtents, 0, `seed ${seed}: emptied, map clear`);
      assert.equal(await time.until(volume.allocatedBytes()), 0, `seed ${seed}: emptied, sparse again`);
    } else {
      outcomes.untouched += 1;
      assert.ok(got.equals(image), `seed ${seed}: not emptied, so untouched`);
    }
    await time.until(volume.close());
  }
  assert.ok(outcomes.emptied > 5 && outcomes.untouched > 5, JSON.stringify(outcomes));
});

void test("volume files over the simulated disk: zeroes over a large sparse volume allocate nothing, in marked extents only what they cover", async () => {
  const TiB = 1024 ** 4;
  const MiB = 1024 ** 2;
  const time = new VirtualTime();
  // A small disk: zeroes written for real (the old code) run out of space at once.
  const disk = new SimDisk({ seed: 7, schedule: time.schedule, capacityBytes: 16 * MiB });
  const fs = disk.mount();
  await time.until(fs.makeDirectory("/v"));
  await time.until(fs.syncDirectory("/"));
  const volume = await time.until(VolumeFile.create(fs, "/v/1.vol", TiB));
  const usedAtStart = disk.usedBytes;
  await time.until(volume.writeZeroes(0, TiB)); // mkfs discarding the whole device
  await time.until(volume.writeZeroes(5 * MiB + 512, 3 * MiB)); // WRITE_ZEROES
  assert.equal(await time.until(volume.allocatedBytes()), 0, "the volume file holds no page");
  assert.equal(disk.usedBytes, usedAtStart, "nothing allocated on the disk");
  // One 4 KiB write marks one extent: zeroes across it and its clear neighbours allocate at most that extent.
  await time.until(volume.write(600 * 1024 * MiB, Buffer.alloc(4096, 0x5a)));
  await time.until(volume.writeZeroes(600 * 1024 * MiB - 8 * MiB, 16 * MiB));
  assert.ok((await time.until(volume.read(600 * 1024 * MiB, 4096))).every((byte) => byte === 0), "the write is zeroed");
  const allocated = await time.until(volume.allocatedBytes());
  assert.ok(allocated > 0 && allocated <= MiB, `zeroes only in the marked extent (${allocated} bytes allocated)`);
  await time.until(volume.close());
});
