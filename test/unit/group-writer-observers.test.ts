// Proves the group's one ingest path feeds several downstreams (issue 7 item 5: the cascade
// hop C -> A -> B needs a group that feeds more than one pair), on the real GroupWriter over a
// real journal: every attached observer hears every record in order; the journal trims
// behind the lowest retention hold and the checkpoint; detaching an observer releases its
// hold (the next checkpoint trims past it, and a write held for a full journal goes
// through at once); the writer slows writes by the largest slowdown asked, and a detached
// observer's slowdown no longer counts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import pino from "pino";
import { ApplyOrder } from "../../src/primary/apply-order.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupWriter, type GroupVolume } from "../../src/primary/group-writer.ts";
import { NodeStamper } from "../../src/primary/stamper.ts";
import { asVolumeId } from "../../src/core/types.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";
import { removeDir, tempDir } from "./journal-helpers.ts";

const KiB = 1024;
/** Three 20 KiB records fill a 64 KiB segment of a 256 KiB journal. */
const record = Buffer.alloc(20 * KiB, 7);

async function setup(dir: string): Promise<{ writer: GroupWriter; journal: GroupJournal; close: () => Promise<void> }> {
  const file = await VolumeFile.create(nodeFileSystem, join(dir, "v.vol"), 4096 * KiB);
  const { journal } = await GroupJournal.open(join(dir, "journal"), { fileSystem: nodeFileSystem, bytesMax: 256 * KiB, nextSequence: 1 });
  const volumes = new Map<number, GroupVolume>([[1, { id: asVolumeId(1), file, order: new ApplyOrder() }]]);
  const writer = new GroupWriter({
    groupId: 1, name: "g", journal, stamper: new NodeStamper("counter", () => 0), volumes, nextSequence: 1, appliedSequence: 0,
    checkpointSequence: 0, clock: systemClock, logger: pino({ level: "silent" }), persistCheckpoint: () => Promise.resolve(),
  });
  return {
    writer, journal,
    close: async () => {
      await writer.close();
      await journal.close();
      await file.close();
    },
  };
}

async function writeRecords(writer: GroupWriter, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await writer.write(1, ((writer.nextSequence - 1) % 200) * record.length, record, false, undefined);
}

/** A checkpoint covers what is applied: make the writes durable, let them reach the volume, then checkpoint. */
async function checkpointAll(writer: GroupWriter): Promise<void> {
  await writer.flush();
  const deadline = performance.now() + 5_000;
  while (writer.appliedSequence < writer.nextSequence - 1) {
    if (performance.now() > deadline) assert.fail("the writes did not reach the volume");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await writer.checkpoint();
}

void test("two downstreams hear every record; the journal trims behind the lower hold; detaching one releases its hold", async () => {
  const dir = await tempDir("observers");
  try {
    const { writer, journal, close } = await setup(dir);
    const seenA: number[] = [];
    const seenB: number[] = [];
    // A pair whose secondary acknowledged through 3, and one through 6.
    const detachA = writer.attach({ recordAppended: (r) => seenA.push(r.sequence), keepFromSequence: () => 4 });
    const detachB = writer.attach({ recordAppended: (r) => seenB.push(r.sequence), keepFromSequence: () => 7 });
    await writeRecords(writer, 9); // segments [1-3] [4-6] [7-9]
    assert.deepEqual(seenA, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(seenB, seenA);
    await checkpointAll(writer);
    assert.equal(journal.firstSequence, 4, "trimmed behind the lower hold, not the higher one");
    detachA();
    detachA(); // idempotent
    await checkpointAll(writer);
    assert.equal(journal.firstSequence, 7, "A's hold is gone: trimmed behind B's");
    await writeRecords(writer, 3); // [7-9] is no longer the active segment
    assert.deepEqual(seenA, [1, 2, 3, 4, 5, 6, 7, 8, 9], "a detached downstream hears nothing more");
    assert.deepEqual(seenB, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    await checkpointAll(writer);
    assert.equal(journal.firstSequence, 7, "B still holds what it has not acknowledged");
    detachB();
    await checkpointAll(writer);
    assert.equal(journal.firstSequence, 10, "no hold: trimmed behind the checkpoint");
    await close();
  } finally {
    await removeDir(dir);
  }
});

void test("a write held for a full journal goes through once the downstream holding it detaches (a failed pair holds nothing)", async () => {
  const dir = await tempDir("observers-held");
  try {
    const { writer, journal, close } = await setup(dir);
    writer.attach({ keepFromSequence: () => 8 }); // a healthy pair that acknowledged through 7
    const detachFailed = writer.attach({ keepFromSequence: () => 1 }); // a pair that acknowledged nothing
    while (journal.freeBytes >= record.length + 64) await writeRecords(writer, 1);
    let done = false;
    const held = writer.write(1, 0, record, false, undefined).then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(done, false, "held while the lower hold keeps the journal full");
    assert.equal(writer.holdReason, "journal-full");
    detachFailed();
    await held;
    assert.ok(journal.firstSequence > 1 && journal.firstSequence <= 8, `trimmed behind the remaining hold (first ${journal.firstSequence})`);
    await close();
  } finally {
    await removeDir(dir);
  }
});

void test("writes are slowed by the largest slowdown any downstream asks; a detached one no longer counts", async () => {
  const dir = await tempDir("observers-slow");
  try {
    const { writer, close } = await setup(dir);
    writer.attach({ slowdownMs: () => 0 });
    const detachSlow = writer.attach({ slowdownMs: () => 20 });
    const slowed = writer.write(1, 0, record, false, undefined);
    assert.equal(writer.holdReason, "slowdown", "the larger slowdown wins");
    await slowed;
    detachSlow();
    const fast = writer.write(1, 0, record, false, undefined);
    assert.equal(writer.heldWrites, 0, "no slowdown once it detached");
    await fast;
    await close();
  } finally {
    await removeDir(dir);
  }
});
