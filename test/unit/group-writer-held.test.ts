// Proves that a host write held for journal space waits for an event, never a poll, and is
// released by it (issue 6, kind 3), on the real GroupWriter over a real journal: while the
// trim floor (the pair's acknowledged sequence) allows no segment to go, nothing spins (the
// old code ran checkpoint after checkpoint, each rewriting the node metadata, for as long as
// a record at or below the floor existed, even when trimming could free nothing); when the
// pair reports the floor moved (an ACK or a handshake calls releaseHeld), the write goes
// through. The hold is reported once per episode. A write that can never fit the journal is
// refused at once, not held forever. The log follows the held writes (the tester's cases):
// a line when writes start being held with the reason they wait for now, one when that
// reason changes (slowed, then waiting for a full journal), one when none is held any more,
// never "released" while one is held, and at most one line per interval however fast the
// state flaps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import pino from "pino";
import { ApplyOrder } from "../../src/primary/apply-order.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupWriter, type GroupVolume } from "../../src/primary/group-writer.ts";
import { heldLogIntervalMs } from "../../src/core/limits.ts";
import { NodeStamper } from "../../src/primary/stamper.ts";
import { asVolumeId } from "../../src/core/types.ts";
import { journalHeaderBytes } from "../../src/protocol/journal-record.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { removeDir, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const KiB = 1024;

/** A held-writes log line and what the writer said at the moment it was written. */
interface HoldLine {
  readonly event: "writes_held" | "writes_hold_changed" | "writes_released";
  readonly reason: string | undefined;
  readonly heldWritesNow: number;
  readonly holdReasonNow: string | undefined;
}

async function setup(dir: string, journalBytes: number): Promise<{ writer: GroupWriter; journal: GroupJournal; file: VolumeFile; checkpoints: () => number; holds: () => boolean[]; holdLines: HoldLine[] }> {
  const file = await VolumeFile.create(nodeFileSystem, join(dir, "v.vol"), 4096 * KiB);
  const { journal } = await GroupJournal.open(join(dir, "journal"), { fileSystem: nodeFileSystem, bytesMax: journalBytes, nextSequence: 1 });
  const volumes = new Map<number, GroupVolume>([[1, { id: asVolumeId(1), file, order: new ApplyOrder() }]]);
  let checkpoints = 0;
  // The hold is reported in the log: one line when writes start being held for space, one when released.
  const lines: string[] = [];
  const holdLines: HoldLine[] = [];
  // pino writes each line synchronously: what the writer says then is what the line claims.
  const logger = pino({ level: "info" }, {
    write: (line: string) => {
      lines.push(line);
      const parsed = JSON.parse(line) as { event?: string; reason?: string };
      if (parsed.event === "writes_held" || parsed.event === "writes_hold_changed" || parsed.event === "writes_released") {
        holdLines.push({ event: parsed.event, reason: parsed.reason, heldWritesNow: writer.heldWrites, holdReasonNow: writer.holdReason });
      }
    },
  });
  const writer: GroupWriter = new GroupWriter({
    groupId: 1, name: "g", journal, stamper: new NodeStamper("counter", () => 0), volumes, nextSequence: 1, appliedSequence: 0,
    checkpointSequence: 0, clock: systemClock, logger,
    persistCheckpoint: () => {
      checkpoints += 1;
      return Promise.resolve();
    },
  });
  const holds = (): boolean[] => lines.flatMap((line) => (line.includes('"event":"writes_held"') ? [true] : line.includes('"event":"writes_released"') ? [false] : []));
  return { writer, journal, file, checkpoints: () => checkpoints, holds, holdLines };
}

/** Every line told the truth when it was written: "released" only with no write held, "held" with the reason the writer gave. */
function assertLinesTruthful(holdLines: readonly HoldLine[]): void {
  for (const [i, line] of holdLines.entries()) {
    if (line.event === "writes_released") assert.equal(line.heldWritesNow, 0, `line ${i}: "released" while ${line.heldWritesNow} writes were held`);
    else {
      assert.ok(line.heldWritesNow > 0, `line ${i}: ${line.event} with no write held`);
      assert.equal(line.reason, line.holdReasonNow, `line ${i}: the reason logged is the reason then`);
    }
  }
}

/** Fills the journal with 20 KiB writes until one more would not fit; returns the next free offset. */
async function fillJournal(writer: GroupWriter, journal: GroupJournal): Promise<number> {
  const data = Buffer.alloc(20 * KiB, 7);
  let offset = 0;
  while (journal.freeBytes >= data.length + 64) {
    await writer.write(1, offset, data, false, undefined);
    offset += data.length;
  }
  return offset;
}

async function waitUntil(what: string, done: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

void test("a write held for space waits for the trim floor without polling, and goes through when the pair reports it moved", async () => {
  const dir = await tempDir("held");
  try {
    // 256 KiB journal, 64 KiB segments; 20 KiB writes: three share a segment.
    const { writer, journal, file, checkpoints, holds } = await setup(dir, 256 * KiB);
    let floor = 0;
    writer.attach({ keepFromSequence: () => floor + 1 }); // the pair's hold: keep what is not acknowledged
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
    await waitUntil("the end of the hold to be logged", () => holds().length === 2, heldLogIntervalMs + 2_000);
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
    await waitUntil("the last hold to end in the log", () => holds().length % 2 === 0, heldLogIntervalMs + 2_000);
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

void test("writes slowed, then waiting for a full journal: the hold is logged with the reason they wait for now, and the change", { timeout: 30_000 }, async () => {
  const dir = await tempDir("held-slowdown");
  try {
    const { writer, journal, file, holdLines } = await setup(dir, 256 * KiB);
    let floor = 0;
    writer.attach({ keepFromSequence: () => floor + 1 }); // the pair's hold: keep what is not acknowledged
    const offset = await fillJournal(writer, journal);
    // Room for exactly one more 4 KiB record, and the pair slows writes (the journal is filling).
    const data = Buffer.alloc(4 * KiB, 9);
    const recordBytes = journalHeaderBytes + data.length;
    while (journal.freeBytes >= 2 * recordBytes) await writer.write(1, offset, data, false, undefined);
    assert.ok(journal.freeBytes >= recordBytes, "room for one");
    let slowdownMs = 5;
    writer.attach({ slowdownMs: () => slowdownMs });
    const first = writer.write(1, offset, data, false, undefined);
    let secondDone = false;
    const second = writer.write(1, offset + data.length, data, false, undefined).then(() => {
      secondDone = true;
    });
    await first; // slowed 5 ms, then it took the last room
    assert.equal(writer.heldWrites, 1, "the second write waits");
    await waitUntil("the second write to wait for the full journal", () => writer.holdReason === "journal-full");
    // The old code filed both under "slowdown" for good: no line at all, held for ever.
    await waitUntil("the log to say the writes wait for the full journal", () => holdLines.at(-1)?.reason === "journal-full");
    assert.deepEqual(holdLines.map((l) => [l.event, l.reason]), [["writes_held", "slowdown"], ["writes_hold_changed", "journal-full"]]);
    assert.equal(secondDone, false);
    slowdownMs = 0;
    floor = writer.nextSequence - 1;
    writer.releaseHeld();
    await second;
    await waitUntil("the log to say none is held", () => holdLines.at(-1)?.event === "writes_released");
    assertLinesTruthful(holdLines);
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});

void test("held, released, held again at once: the log never says released while writes are held, and ends saying what is true", { timeout: 30_000 }, async () => {
  const dir = await tempDir("held-again");
  try {
    const { writer, journal, file, holdLines } = await setup(dir, 256 * KiB);
    let floor = 0;
    writer.attach({ keepFromSequence: () => floor + 1 }); // the pair's hold: keep what is not acknowledged
    const offset = await fillJournal(writer, journal);
    const data = Buffer.alloc(20 * KiB, 5);
    const held = writer.write(1, offset, data, false, undefined);
    assert.equal(writer.heldWrites, 1);
    // The secondary acknowledges: space frees, the write goes, the log says released.
    floor = writer.nextSequence - 1;
    writer.releaseHeld();
    await held;
    await waitUntil("the release to be logged", () => holdLines.at(-1)?.event === "writes_released");
    // The secondary stops (kill -STOP) and the pair slows writes: the journal fills again; of
    // two writes slowed together the first takes the last room, the second stays held. (The
    // old code filed it under "slowdown", logged nothing, and the log's last word was "released".)
    floor = 0; // nothing more will be acknowledged: no segment can go
    let slowdownMs = 5;
    writer.attach({ slowdownMs: () => slowdownMs });
    const small = Buffer.alloc(4 * KiB, 6);
    const recordBytes = journalHeaderBytes + small.length;
    while (journal.freeBytes >= 2 * recordBytes) await writer.write(1, offset, small, false, undefined);
    const stuck = [writer.write(1, offset, small, false, undefined), writer.write(1, offset + small.length, small, false, undefined)];
    await stuck[0];
    assert.equal(writer.heldWrites, 1);
    await waitUntil("the log to say a write is held again, for the full journal", () => holdLines.at(-1)?.event !== "writes_released" && holdLines.at(-1)?.reason === "journal-full");
    assert.equal(writer.heldWrites, 1, "still held");
    assertLinesTruthful(holdLines);
    slowdownMs = 0;
    floor = Number.MAX_SAFE_INTEGER - 1;
    writer.releaseHeld();
    await Promise.all(stuck);
    await waitUntil("the log to say none is held", () => holdLines.at(-1)?.event === "writes_released");
    assertLinesTruthful(holdLines);
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});

void test("a hold that flaps many times a second is logged at most once per interval, each line true when written, the last one the state now", { timeout: 30_000 }, async () => {
  const dir = await tempDir("held-flap");
  try {
    const { writer, journal, file, holdLines } = await setup(dir, 256 * KiB);
    writer.attach({ slowdownMs: () => 2 }); // every write slowed: held, released, held, ...
    const data = Buffer.alloc(4 * KiB, 3);
    const startMs = performance.now();
    let writes = 0;
    while (performance.now() - startMs < 3_000) {
      await writer.write(1, (writes % 512) * data.length, data, false, undefined);
      writes += 1;
    }
    const elapsedMs = performance.now() - startMs;
    // Many more holds than the log may have lines (not a speed check: a loaded machine does fewer).
    assert.ok(writes > 4 * (Math.ceil(elapsedMs / heldLogIntervalMs) + 1), `many writes were slowed one by one (${writes})`);
    assert.ok(holdLines.length <= Math.ceil(elapsedMs / heldLogIntervalMs) + 1, `${holdLines.length} lines in ${Math.round(elapsedMs)} ms for ${writes} holds`);
    assertLinesTruthful(holdLines);
    await waitUntil("the log to end on released", () => holdLines.at(-1)?.event === "writes_released", 2 * heldLogIntervalMs + 1_000);
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});
