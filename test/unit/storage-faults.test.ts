// Regression tests for what running the real journal over the simulated disk found (each fails
// on the code before its fix): (1) after a failed fdatasync and a process restart, recovery read
// the journal through the page cache, found records the disk never got, fdatasync'd (which
// succeeds: those pages are clean) and called them durable, so a power loss then took records a
// sync() covered; (2) a trim in progress when the journal was closed or abandoned unlinked segments
// under the recovery of a reopen (a resume), which failed with ENOENT; (3) a resume after a failed
// fdatasync met a hole (pages the failed sync dropped) followed by records written back later,
// refused with JournalCorruptError, and the group stayed stopped for good.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { ApplyOrder } from "../../src/primary/apply-order.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupWriter, type GroupVolume } from "../../src/primary/group-writer.ts";
import { NodeStamper } from "../../src/primary/stamper.ts";
import { asVolumeId } from "../../src/core/types.ts";
import { injectedFaults } from "../../src/core/faults.ts";
import { GroupJournal, type JournalOptions } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import type { FileSystem } from "../../src/storage/fs.ts";
import { realTimeSchedule, SimDisk } from "../sim/sim-disk.ts";
import { VirtualTime } from "../sim/virtual-time.ts";
import { makeRecord } from "./journal-helpers.ts";

/** A record of exactly one 4 KiB page (64-byte header + 4032 bytes). */
const pagePayloadBytes = 4096 - 64;

async function openJournal(time: VirtualTime, fs: FileSystem, options: Partial<JournalOptions> = {}): Promise<{ journal: GroupJournal; sequences: number[] }> {
  const sequences: number[] = [];
  const { journal } = await time.until(GroupJournal.open("/j", { fileSystem: fs, bytesMax: 1 << 30, nextSequence: 1, ...options }, (record) => {
    sequences.push(record.sequence);
  }));
  return { journal, sequences };
}

void test("a failed fdatasync, then a process restart: recovery reads past the page cache and calls nothing durable that the disk lacks", async () => {
  const time = new VirtualTime();
  const disk = new SimDisk({ seed: 11, schedule: time.schedule });
  let fs = disk.mount();
  let { journal } = await openJournal(time, fs);
  void journal.append(makeRecord(1, pagePayloadBytes));
  await time.until(journal.sync());
  void journal.append(makeRecord(2, pagePayloadBytes)).catch(() => undefined);
  disk.failPath("/j", ["sync"]);
  await assert.rejects(time.until(journal.sync()), { code: "EIO" });
  disk.heal();
  // The process dies; the kernel keeps record 2's page in its cache, clean, never written.
  disk.crash("process");
  fs = disk.mount();
  const restarted = await openJournal(time, fs);
  journal = restarted.journal;
  assert.deepEqual(restarted.sequences, [1], "only what the disk holds is recovered (the old code found record 2 in the cache)");
  assert.equal(journal.durableSequence, 1);
  disk.crash("power");
  const afterPowerLoss = await openJournal(time, disk.mount());
  assert.ok(afterPowerLoss.sequences.length >= journal.durableSequence, "everything the restarted journal called durable survives a power loss");
});

void test("close and abandon wait for a trim in progress, and a trim after them does nothing: a reopen never meets a segment being unlinked", async () => {
  for (const end of ["close", "abandon"] as const) {
    const time = new VirtualTime();
    const disk = new SimDisk({ seed: 12, schedule: time.schedule, latency: { metadata: { minMs: 1, maxMs: 1 } } });
    const fs = disk.mount();
    const options = { segmentBytesMax: 2 * 4096 };
    const { journal } = await openJournal(time, fs, options);
    for (let sequence = 1; sequence <= 40; sequence += 1) void journal.append(makeRecord(sequence, pagePayloadBytes));
    await time.until(journal.sync());
    assert.ok(journal.segmentCount >= 20);
    const trimmed = journal.trimThrough(30); // unlinks about 15 segments, one after the other
    await time.runFor(2);
    await time.until(end === "close" ? journal.close() : journal.abandon());
    await time.until(trimmed);
    await time.until(journal.trimThrough(40)); // after close: nothing
    const reopened = await openJournal(time, fs, options);
    assert.equal(reopened.sequences[reopened.sequences.length - 1], 40, `${end}: every record is there`);
    assert.ok((reopened.sequences[0] ?? 0) <= 31, `${end}: trimmed through 30 at most`);
    await time.until(reopened.journal.close());
  }
});

/** Group "g" of one 1 MiB volume (id 1) with its journal, on the simulated disk (real timers). */
async function groupOnSimDisk(disk: SimDisk, logger = pino({ level: "silent" })): Promise<{ writer: GroupWriter; file: VolumeFile }> {
  const fs = disk.mount();
  await fs.makeDirectory("/g");
  const file = await VolumeFile.create(fs, "/g/v.vol", 1024 * 1024);
  const { journal } = await GroupJournal.open("/g/journal", { fileSystem: fs, bytesMax: 1 << 30, nextSequence: 1 });
  const writer = new GroupWriter({
    groupId: 1, name: "g", journal, stamper: new NodeStamper("counter", () => 0),
    volumes: new Map<number, GroupVolume>([[1, { id: asVolumeId(1), file, order: new ApplyOrder() }]]),
    nextSequence: 1, appliedSequence: 0, checkpointSequence: 0, clock: systemClock,
    logger, persistCheckpoint: () => Promise.resolve(),
  });
  return { writer, file };
}

/** Writes, loses records 2 and 3 to a failed fdatasync, heals; returns the writer's last write sequence after it resumed. */
async function lastWriteSequenceAfterLostSync(): Promise<number> {
  const disk = new SimDisk({ seed: 13, schedule: realTimeSchedule, latency: { sync: { minMs: 30, maxMs: 30 } } });
  const { writer, file } = await groupOnSimDisk(disk);
  const page = Buffer.alloc(pagePayloadBytes, 1);
  await writer.write(1, 0, page, true, undefined);
  disk.failPath("/g/journal", ["sync"]);
  const lost = writer.write(1, 8192, page, true, undefined);
  await new Promise((resolve) => setImmediate(resolve));
  const later = writer.write(1, 16_384, page, false, undefined);
  await lost.catch(() => undefined);
  await later.catch(() => undefined);
  disk.heal();
  const deadline = performance.now() + 10_000;
  while (writer.stopped !== undefined && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(writer.stopped, undefined, "the group resumed");
  const last = writer.lastWriteSequence;
  await writer.close();
  await writer.journal.close();
  await file.close();
  return last;
}

// The historical fault resume-keeps-last-write-sequence (src/core/faults.ts) is rare in the
// whole-node simulation (one seed in the first 20,000 found it), so this check, which catches it
// every time, is where it is shown to be caught.
void test("the check above catches the historical fault resume-keeps-last-write-sequence", async () => {
  injectedFaults.add("resume-keeps-last-write-sequence");
  try {
    assert.equal(await lastWriteSequenceAfterLostSync(), 3, "with the fault put back, the lost records' write sequence stays");
  } finally {
    injectedFaults.delete("resume-keeps-last-write-sequence");
  }
  assert.equal(await lastWriteSequenceAfterLostSync(), 1, "without it, the journal's");
});

void test("a group whose journal's fdatasync failed resumes by itself even when records written later follow a lost page on the disk", async () => {
  // Real timers: the group's resume runs on the node's clock (first attempt after 500 ms).
  const disk = new SimDisk({ seed: 13, schedule: realTimeSchedule, latency: { sync: { minMs: 30, maxMs: 30 } } });
  const lines: string[] = [];
  const { writer, file } = await groupOnSimDisk(disk, pino({ level: "info" }, { write: (line: string) => lines.push(line) }));
  const page = Buffer.alloc(pagePayloadBytes, 1);
  await writer.write(1, 0, page, true, undefined); // record 1, durable, page 0 of the segment
  disk.failPath("/g/journal", ["sync"]);
  const lost = writer.write(1, 8192, page, true, undefined); // record 2, page 1: its fdatasync fails
  await new Promise((resolve) => setImmediate(resolve));
  const later = writer.write(1, 16_384, page, false, undefined); // record 3, page 2, written while that fdatasync runs
  await assert.rejects(lost, { errno: "EIO", code: "TM_ERR_IO" });
  await later.catch(() => undefined);
  assert.ok(writer.stopped !== undefined, "the group stopped on the I/O error");
  disk.heal();
  const deadline = performance.now() + 10_000;
  while (writer.stopped !== undefined && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  const stopped = writer.stopped;
  assert.equal(stopped, undefined, `the group resumed (old code: stopped for good: ${stopped?.reason ?? ""})`);
  assert.equal(writer.journal.lastSequence, 1, "the journal holds what the disk had: record 1, cut at the lost page");
  // The last host write is one the journal still holds (old code: 3, a write that no longer
  // existed, which pair status showed and pair wait waited for; simulation seed 15167).
  assert.equal(writer.lastWriteSequence, 1, "the last write sequence is the journal's, not the lost records'");
  assert.equal(writer.nextSequence, 2);
  await writer.write(1, 0, page, true, undefined); // and takes writes again
  assert.equal(writer.lastWriteSequence, 2, "the next write takes the next sequence");
  await writer.close();
  await writer.journal.close();
  await file.close();
});

/**
 * A checkpoint asked for from outside the writer's own paths (the pair's trim when the journal
 * fills) fails on the volume's fdatasync, which drops the applied page; the disk heals and a
 * checkpoint is asked for again. Returns whether the group stopped on the failure, and whether
 * the disk itself holds the record once that later checkpoint succeeded.
 */
async function checkpointAfterFailedVolumeSync(): Promise<{ stopped: boolean; onDisk: boolean; laterSync: string }> {
  const disk = new SimDisk({ seed: 14, schedule: realTimeSchedule, failedSyncPages: "evict" });
  const { writer, file } = await groupOnSimDisk(disk);
  const page = Buffer.alloc(pagePayloadBytes, 7);
  await writer.write(1, 8192, page, true, undefined); // record 1: durable in the journal, then applied
  const applied = performance.now() + 10_000;
  while (writer.appliedSequence < 1 && performance.now() < applied) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(writer.appliedSequence, 1, "record 1 is applied to the volume (its page is dirty in the cache)");
  disk.failPath("/g/v.vol", ["sync"]);
  await assert.rejects(writer.checkpoint(), { code: "EIO" });
  const stopped = writer.stopped !== undefined;
  // Straight after the heal, before any resume: a retried fdatasync must not call the dropped page durable.
  disk.heal();
  const laterSync = await file.datasync().then(() => "succeeded", (error: unknown) => (error as Error).name);
  const deadline = performance.now() + 10_000;
  while (writer.stopped !== undefined && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(writer.stopped, undefined, "the group resumed after the heal");
  await writer.checkpoint();
  const view = disk.directView("/g/v.vol");
  const onDisk = view !== undefined && view.subarray(8192, 8192 + page.length).equals(page);
  await writer.close();
  await writer.journal.close();
  await file.close();
  return { stopped, onDisk, laterSync };
}

void test("a checkpoint that fails on a volume's fdatasync stops the group; its resume writes the dropped pages again before a checkpoint claims them (seed 59474)", async () => {
  const outcome = await checkpointAfterFailedVolumeSync();
  assert.equal(outcome.stopped, true, "the failed checkpoint stopped the group (old code: only the pair logged it)");
  assert.equal(outcome.laterSync, "VolumeSyncLostError", "an fdatasync after the failed one fails too, until the pages are written again");
  assert.equal(outcome.onDisk, true, "after the resume and a checkpoint that succeeded, the disk holds the record");
});

void test("the check above catches the historical fault checkpoint-error-keeps-group", async () => {
  injectedFaults.add("checkpoint-error-keeps-group");
  try {
    const outcome = await checkpointAfterFailedVolumeSync();
    assert.equal(outcome.stopped, false, "with the fault put back, the group goes on");
    assert.equal(outcome.onDisk, false, "and the checkpoint that followed claimed a page the disk never got");
  } finally {
    injectedFaults.delete("checkpoint-error-keeps-group");
  }
});

void test("a volume file whose fdatasync failed refuses every later one until its owner wrote the lost range again or emptied it", async () => {
  const time = new VirtualTime();
  const disk = new SimDisk({ seed: 15, schedule: time.schedule, failedSyncPages: "keep" });
  const fs = disk.mount();
  await time.until(fs.makeDirectory("/v"));
  const file = await time.until(VolumeFile.create(fs, "/v/a.vol", 64 * 1024));
  await time.until(file.write(0, Buffer.alloc(4096, 1)));
  disk.failPath("/v/a.vol", ["sync"]);
  await assert.rejects(time.until(file.datasync()), { code: "EIO" });
  disk.heal();
  // "keep": the page is still readable through the cache, clean, and the disk never got it.
  await assert.rejects(time.until(file.datasync()), (error: Error) => error.name === "VolumeSyncLostError" && (error as { code?: string }).code === "EIO" && /earlier fdatasync/.test(error.message));
  assert.ok(file.syncFailed !== undefined);
  await time.until(file.write(0, Buffer.alloc(4096, 1))); // the owner writes the range again
  file.syncFailureRepaired();
  await time.until(file.datasync());
  assert.ok(disk.directView("/v/a.vol")?.subarray(0, 4096).equals(Buffer.alloc(4096, 1)), "now the disk holds it");
  disk.failPath("/v/a.vol", ["sync"]);
  await assert.rejects(time.until(file.datasync()), { code: "EIO" });
  disk.heal();
  await time.until(file.discardContents()); // an initial copy starts over: nothing before counts
  await time.until(file.datasync());
  await time.until(file.close());
});
