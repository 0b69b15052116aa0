// Proves the secondary's back-pressure (issue 6, kind 3): the receiver takes no more than the
// journal can hold, asked BEFORE anything is handed out; a refused batch changes no receiver
// state; records past the cut wait in memory ("parked") only when they came from the buffer,
// and drain() hands them out as the journal frees; a fast-check property over random batch
// orders, duplicates and resends with a small journal that fills and frees (everything
// arrives, the journal never overflows, refusals change nothing); the real SecondaryGroup over a
// real journal (receiver and journal never disagree, a trim tells the listener); and the
// journal side of the guarantee: at journalBytesMin (here scaled down) a record of the
// largest size always fits again once everything is trimmed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import pino from "pino";
import { positionZero, type Position } from "../../src/core/position.ts";
import { GroupReceiver } from "../../src/core/receiver.ts";
import { asAcceptNumber, asSequence, asWriteTimeUs, type SequenceNumber } from "../../src/core/types.ts";
import { encodedRecordBytes, journalHeaderBytes } from "../../src/protocol/journal-record.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { SecondaryGroup } from "../../src/secondary/secondary-group.ts";
import { systemClock } from "../../src/node/clock.ts";
import { makeRecord, removeDir, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

interface Rec extends Position {
  readonly sequence: SequenceNumber;
  readonly bytes: number;
}
const rec = (n: number, bytes = 100): Rec => ({ sequence: asSequence(n), writeTimeUs: asWriteTimeUs(n), acceptNumber: asAcceptNumber(n), bytes });
const receiver = (): GroupReceiver<Rec> =>
  new GroupReceiver<Rec>({ startSequence: asSequence(1), startPosition: positionZero, recordBytes: (r) => r.bytes, reorderRecordsMax: 1000, reorderBytesMax: 1_000_000 });
const seqs = (rs: readonly Rec[]): number[] => rs.map((r) => r.sequence);

/** Everything observable about a receiver's state. */
function snapshot(r: GroupReceiver<Rec>): unknown {
  return {
    arrived: r.arrivedSequence, arrivedPosition: r.arrivedPosition, handedOut: r.handedOutSequence, next: r.nextSequence,
    reorderRecords: r.reorderRecords, reorderBytes: r.reorderBytes, pending: r.durablePendingRecords, parked: r.parked,
  };
}

void test("a batch the journal has no room for is refused whole and changes nothing", () => {
  const r = receiver();
  assert.ok(r.receive([rec(4), rec(5)]).ok); // buffered past a gap
  const before = snapshot(r);
  const refused = r.receive([rec(1), rec(2), rec(3)], 250);
  assert.equal(refused.ok, false);
  assert.ok(!refused.ok && refused.reason === "journal-full" && refused.bytesNeeded === 300, JSON.stringify(refused));
  assert.deepEqual(snapshot(r), before, "a refused batch changes no state");
  // The same batch, once there is room, goes through (and takes the buffered run with it).
  const taken = r.receive([rec(1), rec(2), rec(3)], 10_000);
  assert.ok(taken.ok);
  assert.deepEqual(seqs(taken.append), [1, 2, 3, 4, 5]);
});

void test("a gap-filling batch is never refused for buffered records behind it: they wait in memory (parked) and drain as the journal frees", () => {
  const r = receiver();
  assert.ok(r.receive([rec(2), rec(3), rec(4), rec(5)]).ok);
  const res = r.receive([rec(1)], 250); // room for the batch and one buffered record
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), [1, 2]);
  assert.equal(r.parked, true, "3 is next in line but waits for room");
  assert.equal(r.reorderRecords, 3);
  // A resend of a parked record is a duplicate, taken fine while there is still no room.
  const dup = r.receive([rec(3)], 0);
  assert.ok(dup.ok && dup.duplicates === 1 && dup.append.length === 0, JSON.stringify(dup));
  assert.equal(r.parked, true);
  const drained = r.drain(150);
  assert.deepEqual(seqs(drained.append), [3], "drain takes only what fits");
  assert.deepEqual(seqs(r.drain(0).append), [], "nothing fits in no room");
  assert.deepEqual(seqs(r.drain(10_000).append), [4, 5]);
  assert.equal(r.parked, false);
  assert.equal(r.reorderRecords, 0);
  assert.equal(r.reorderBytes, 0);
});

void test("a batch past a parked run is refused if its records would be handed out past the room", () => {
  const r = receiver();
  assert.ok(r.receive([rec(2)]).ok);
  assert.ok(r.receive([rec(1)], 100).ok);
  assert.equal(r.parked, true);
  const before = snapshot(r);
  const res = r.receive([rec(3)], 150); // 2 fits, 3 would not: refused, 2 stays parked
  assert.ok(!res.ok && res.reason === "journal-full");
  assert.deepEqual(snapshot(r), before);
  const ok = r.receive([rec(3)], 200);
  assert.ok(ok.ok);
  assert.deepEqual(seqs(ok.append), [2, 3]);
});

void test("drain drops buffered records whose positions do not follow (a broken peer), never asserts on them", () => {
  const r = receiver();
  const bad: Rec = { ...rec(3), writeTimeUs: asWriteTimeUs(0), acceptNumber: asAcceptNumber(1) };
  assert.ok(r.receive([rec(2), bad, rec(4)]).ok);
  assert.ok(r.receive([rec(1)], 100).ok);
  const drained = r.drain(10_000);
  assert.deepEqual(seqs(drained.append), [2]);
  assert.equal(drained.dropped, 2);
  assert.equal(r.reorderRecords, 0);
  assert.equal(r.nextSequence, 3, "3 is needed again: the sender resends it");
});

void test("property: random orders, duplicates and resends into a small journal that fills and frees: nothing overflows, refusals change nothing, everything arrives", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 5, max: 80 }),
      fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 80, maxLength: 80 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 4 })), { maxLength: 300 }),
      fc.integer({ min: 0, max: 1000 }),
      (count, sizes, steps, seed) => {
        const records = Array.from({ length: count }, (_, i) => rec(i + 1, sizes[i] ?? 100));
        const largest = Math.max(...records.map((x) => x.bytes));
        const capacity = largest * 2 + (seed % 300); // a journal a little over two largest records
        const r = new GroupReceiver<Rec>({ startSequence: asSequence(1), startPosition: positionZero, recordBytes: (x) => x.bytes, reorderRecordsMax: 1000, reorderBytesMax: 1_000_000 });
        const journal: Rec[] = []; // handed out, not yet reflected and trimmed
        let used = 0;
        const append = (run: readonly Rec[]): void => {
          for (const x of run) {
            assert.equal(x.sequence, (journal[journal.length - 1]?.sequence ?? r.arrivedSequence) + 1, "appends are consecutive");
            journal.push(x);
            used += x.bytes;
          }
          assert.ok(used <= capacity, `the journal never holds more than its limit (${used} > ${capacity})`);
          if (run.length > 0) r.markDurable(run[run.length - 1]!.sequence);
        };
        // Batches as the sender cuts them: consecutive records up to the batch size, at least one.
        const deliver = (from: number, n: number): void => {
          const batch: Rec[] = [];
          let batchBytes = 0;
          for (let s = from; s < from + n && s <= count; s += 1) {
            const x = records[s - 1]!;
            if (batch.length > 0 && batchBytes + x.bytes > largest) break;
            batch.push(x);
            batchBytes += x.bytes;
          }
          if (batch.length === 0) return;
          const before = JSON.stringify(snapshot(r));
          const res = r.receive(batch, capacity - used);
          if (!res.ok) {
            assert.equal(res.reason, "journal-full");
            assert.equal(JSON.stringify(snapshot(r)), before, "a refusal changes nothing");
            return;
          }
          append(res.append);
        };
        const reflect = (n: number): void => {
          for (let i = 0; i < n && journal.length > 0; i += 1) used -= journal.shift()!.bytes;
          append(r.drain(capacity - used).append);
        };
        // Random phase: batches of random ranges in random order, sometimes reflection frees some.
        for (const [at, n, free] of steps) {
          deliver((at % count) + 1, n);
          if (free > 0) reflect(free);
        }
        // Heal: the sender resends everything not arrived, in order; reflection keeps up.
        for (let round = 0; round < count * 4 && r.arrivedSequence < count; round += 1) {
          reflect(count);
          deliver(r.nextSequence, 3);
        }
        assert.equal(r.arrivedSequence, count, "every record arrives once the journal frees");
      },
    ),
    { numRuns: 300 },
  );
});

void test("at the smallest journal size, a largest record always fits again once everything is trimmed", async () => {
  // journalBytesMin relies on: active segment < a quarter of the limit, and a quarter plus
  // the largest record fits. Scaled down: limit 64 KiB, largest record 48 KiB - 64 B + header.
  const bytesMax = 64 * 1024;
  const largestPayload = bytesMax - bytesMax / 4 - journalHeaderBytes;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 0, max: largestPayload }), { minLength: 1, maxLength: 12 }), async (payloads) => {
      const dir = await tempDir("fit");
      try {
        const { journal } = await GroupJournal.open(dir, { fileSystem: nodeFileSystem, bytesMax, nextSequence: 1 });
        let sequence = 1;
        for (const payloadBytes of [...payloads, largestPayload]) {
          const record = makeRecord(sequence, payloadBytes);
          if (journal.freeBytes < encodedRecordBytes(record)) {
            await journal.sync();
            await journal.trimThrough(sequence - 1);
          }
          assert.ok(journal.freeBytes >= encodedRecordBytes(record), `a ${encodedRecordBytes(record)}-byte record fits after trimming everything (free ${journal.freeBytes}, trimmable ${journal.trimmableBytes(sequence - 1)})`);
          await journal.append(record);
          sequence += 1;
        }
        await journal.close();
      } finally {
        await removeDir(dir);
      }
    }),
    { numRuns: 25 },
  );
});

void test("SecondaryGroup: a full journal refuses the batch, receiver and journal agree, a trim resumes it", async () => {
  const dir = await tempDir("target");
  try {
    const file = await VolumeFile.create(nodeFileSystem, join(dir, "v.vol"), 1024 * 1024);
    const journalBytes = 64 * 1024;
    const { journal } = await GroupJournal.open(join(dir, "journal"), { fileSystem: nodeFileSystem, bytesMax: journalBytes, nextSequence: 1 });
    const logger = pino({ level: "silent" });
    // The lifecycle's effects of the steps the group takes itself: a trim that frees room asks for roomAgain.
    let spaceEvents = 0;
    const target = new SecondaryGroup({
      groupId: 1, name: "t", journal, logger, lastRecordPosition: undefined, clock: systemClock, nodeId: "S", journalGeneration: 0,
      observer: {
        execute: (_group, effects) => {
          for (const effect of effects) if (effect.type === "roomAgain") spaceEvents += 1;
        },
        arrived: () => undefined,
      },
      volumes: [{ volumeId: 1, name: "v", file }],
      record: {
        pairId: "p", primaryNode: "P", primaryGroup: "g", transfer: "push", streams: 1, reflect: "time", state: "replicating",
        startSequence: 1, consistentFromSequence: 0, reflectedSequence: 0, reflectedWriteTimeUs: 0, reflectedAcceptNumber: 0,
        volumes: [{ primaryVolumeId: 7, volumeId: 1 }], takeover: null,
      },
    });
    const record = (n: number) => ({ ...makeRecord(n, 8 * 1024), offsetBytes: n * 8192 % (1024 * 1024 - 8192) });
    let next = 1;
    for (;;) {
      const res = await target.receiveBatch([record(next)]);
      assert.equal(journal.lastSequence, target.receiver.handedOutSequence, "the journal holds exactly what the receiver handed out");
      if (!res.ok) {
        assert.equal(res.reason, "journal-full");
        break;
      }
      next += 1;
      assert.ok(next < 100, "the journal fills");
    }
    assert.ok(journal.usedBytes <= journalBytes);
    assert.ok(target.waitingForSpace);
    assert.match(target.spaceReason("GB") ?? "", /journal full .*held by group GB/);
    const before = target.receiver.arrivedSequence;
    // Reflection went through everything; the checkpoint trims and tells the listener.
    await target.trimThrough(before);
    assert.equal(spaceEvents, 1);
    const res = await target.receiveBatch([record(next)]);
    assert.ok(res.ok, "the refused record is taken once there is room");
    assert.equal(target.receiver.arrivedSequence, next);
    assert.equal(target.waitingForSpace, false);
    assert.equal(target.spaceReason(undefined), null);
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});
