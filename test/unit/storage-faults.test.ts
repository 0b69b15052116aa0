// Regression tests for what running the real journal over the simulated disk found (each fails
// on the code before its fix): (1) after a failed fdatasync and a process restart, recovery read
// the journal through the page cache, found records the disk never got, fdatasync'd (which
// succeeds: those pages are clean) and called them durable, so a power loss then took records a
// sync() covered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupJournal, type JournalOptions } from "../../src/storage/journal.ts";
import type { FileSystem } from "../../src/storage/fs.ts";
import { SimDisk } from "../sim/sim-disk.ts";
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
