// Proves that a host write held for journal space waits for an event, never a poll, and is
// released by it (issue 6, kind 3), on the real GroupWriter over a real journal: while the
// trim floor (the pair's acknowledged sequence) allows no segment to go, nothing spins (the
// old code ran checkpoint after checkpoint, each rewriting the node metadata, for as long as
// a record at or below the floor existed, even when trimming could free nothing); when the
// pair reports the floor moved (an ACK or a handshake calls releaseHeld), the write goes
// through. The hold is reported once per episode. A write that can never fit the journal is
// refused at once, not held forever.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import pino from "pino";
import { ApplyOrder } from "../../src/node/apply-order.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupWriter, type GroupVolume } from "../../src/node/group-writer.ts";
import { NodeStamper } from "../../src/node/stamper.ts";
import { asVolumeId } from "../../src/core/types.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { removeDir, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const KiB = 1024;

async function setup(dir: string, journalBytes: number): Promise<{ writer: GroupWriter; journal: GroupJournal; file: VolumeFile; checkpoints: () => number; holds: () => boolean[] }> {
  const file = await VolumeFile.create(nodeFileSystem, join(dir, "v.vol"), 4096 * KiB);
  const { journal } = await GroupJournal.open(join(dir, "journal"), { fileSystem: nodeFileSystem, bytesMax: journalBytes, nextSequence: 1 });
  const volumes = new Map<number, GroupVolume>([[1, { id: asVolumeId(1), file, order: new ApplyOrder() }]]);
  let checkpoints = 0;
  // The hold is reported in the log: one line when writes start being held for space, one when released.
  const lines: string[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
  const writer = new GroupWriter({
    groupId: 1, name: "g", journal, stamper: new NodeStamper("counter", () => 0), volumes, nextSequence: 1, appliedSequence: 0,
    checkpointSequence: 0, clock: systemClock, logger,
    persistCheckpoint: () => {
      checkpoints += 1;
      return Promise.resolve();
    },
  });
  const holds = (): boolean[] => lines.flatMap((line) => (line.includes('"event":"writes_held"') ? [true] : line.includes('"event":"writes_released"') ? [false] : []));
  return { writer, journal, file, checkpoints: () => checkpoints, holds };
}

void test("a write held for space waits for the trim floor without polling, and goes through when the pair reports it moved", async () => {
  const dir = await tempDir("held");
  try {
    // 256 KiB journal, 64 KiB segments; 20 KiB writes: three share a segment.
    const { writer, journal, file, checkpoints, holds } = await setup(dir, 256 * KiB);
    let floor = 0;
    writer.trimFloor = () => floor;
    const data = Buffer.alloc(20 * KiB, 7);
    let offset = 0;
    while (journal.freeBytes >= data.length + 64) {
      await writer.write(1, offset, data, false, undefined);
      offset += data.length;
    }
    // The secondary acknowledged the first record only: a record at or below the floor
    // exists, but no whole segment lies behind it, so no checkpoint can free anything.
    floor = 1;
    let done = false;
    const held = writer.write(1, offset, data, false, undefined).then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(done, false, "held while the journal is full");
    assert.equal(writer.heldWrites, 1);
    assert.deepEqual(holds(), [true], "the hold is reported once");
    const before = checkpoints();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(checkpoints() - before <= 1, `no checkpoint loop while nothing can be trimmed (${checkpoints() - before} in 300 ms)`);
    // The pair's handshake shows the secondary holds everything: the floor moves, and the pair says so.
    floor = writer.nextSequence - 1;
    writer.releaseHeld();
    await held;
    assert.equal(writer.heldWrites, 0);
    assert.deepEqual(holds(), [true, false], "and its end once");
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});

void test("without a pair, a held write is released by the checkpoint it starts", async () => {
  const dir = await tempDir("held-nopair");
  try {
    const { writer, journal, file, holds } = await setup(dir, 256 * KiB);
    const data = Buffer.alloc(60 * KiB, 3);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 12; i++) writes.push(writer.write(1, (i % 60) * data.length, data, false, undefined));
    await Promise.all(writes);
    assert.equal(writer.heldWrites, 0);
    assert.equal(holds().length % 2, 0, "every hold ended");
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});

void test("a write that can never fit the journal is refused at once, never held", async () => {
  const dir = await tempDir("never-fits");
  try {
    const { writer, journal, file } = await setup(dir, 64 * KiB);
    await assert.rejects(writer.write(1, 0, Buffer.alloc(60 * KiB), false, undefined), /can never fit the journal/);
    assert.equal(writer.heldWrites, 0);
    await writer.write(1, 0, Buffer.alloc(16 * KiB), false, undefined);
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});
