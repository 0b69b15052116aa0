// Proves the journal's recovery rules on real files: a torn tail at every byte of the last
// record is cut and appending goes on; a flipped bit in the last record is cut, before whole
// records or in an earlier segment it is JournalCorruptError; a whole record in a format
// this version cannot read is JournalFormatError and never cut; gaps are errors; and a fast-check property
// of random append/sync/crash/reopen runs never loses a synced record nor returns one
// twice or out of order.
import { JournalCorruptError, JournalFormatError } from "../../src/core/errors.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import { cp, open, readFile, rename, stat, truncate, unlink, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import fc from "fast-check";
import { GroupJournal } from "../../src/storage/journal.ts";
import { checksum } from "../../src/protocol/bytes.ts";
import { encodedRecordBytes } from "../../src/protocol/journal-record.ts";
import { makeRecord, range, recordOffsets, removeDir, reopen, segmentPaths, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const payloadBytes = 150;
const recordBytes = encodedRecordBytes(makeRecord(1, payloadBytes));
/** Two segments: 1-4 and 5-7, so the last segment holds several records. */
const options = { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1, segmentBytesMax: recordBytes * 4 };
const recordCount = 7;

async function template(label: string): Promise<string> {
  const dir = await tempDir(label);
  const { journal } = await GroupJournal.open(dir, options);
  await Promise.all(range(1, recordCount).map((sequence) => journal.append(makeRecord(sequence, payloadBytes))));
  await journal.close();
  return dir;
}

async function flipBit(path: string, offsetBytes: number, bit: number): Promise<void> {
  const handle = await open(path, "r+");
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offsetBytes);
    one[0] = (one[0] ?? 0) ^ (1 << bit);
    await handle.write(one, 0, 1, offsetBytes);
  } finally {
    await handle.close();
  }
}

void test("a torn tail at every byte of the last record is cut, and appending continues", async () => {
  const source = await template("torn-src");
  const work = await tempDir("torn");
  try {
    const paths = await segmentPaths(source);
    assert.equal(paths.length, 2);
    const last = paths[1]!;
    const { offsets, endBytes } = await recordOffsets(last);
    const lastStart = offsets[offsets.length - 1]!;
    assert.equal(endBytes - lastStart, recordBytes);
    for (let cut = lastStart; cut < endBytes; cut += 1) {
      const dir = join(work, `cut-${cut}`);
      await cp(source, dir, { recursive: true });
      const segment = join(dir, basename(last));
      await truncate(segment, cut);
      const recovered = await reopen(dir, options);
      assert.deepEqual(recovered.sequences, range(1, recordCount - 1), `cut at ${cut}`);
      assert.ok(recovered.allExpected);
      assert.equal(recovered.report.tornBytesCut, cut - lastStart, `cut at ${cut}`);
      assert.equal(recovered.report.tornReason !== undefined, cut > lastStart);
      assert.equal((await stat(segment)).size, lastStart, "the file is truncated at the last whole record");
      assert.equal(recovered.journal.nextSequence, recordCount);
      await recovered.journal.append(makeRecord(recordCount, 40));
      await recovered.journal.append(makeRecord(recordCount + 1, 0));
      await recovered.journal.close();
      const again = await reopen(dir, options);
      assert.deepEqual(again.sequences, range(1, recordCount + 1));
      assert.ok(again.allExpected);
      assert.equal(again.report.tornBytesCut, 0);
      await again.journal.close();
      await removeDir(dir);
    }
  } finally {
    await removeDir(source);
    await removeDir(work);
  }
});

void test("a flipped bit anywhere in the last record is a torn tail: the record is cut", async () => {
  const source = await template("flip-src");
  const work = await tempDir("flip");
  try {
    const last = (await segmentPaths(source))[1]!;
    const { offsets } = await recordOffsets(last);
    const lastStart = offsets[offsets.length - 1]!;
    for (let byte = 0; byte < recordBytes; byte += 1) {
      const dir = join(work, `flip-${byte}`);
      await cp(source, dir, { recursive: true });
      await flipBit(join(dir, basename(last)), lastStart + byte, byte % 8);
      const recovered = await reopen(dir, options);
      assert.deepEqual(recovered.sequences, range(1, recordCount - 1), `flip at byte ${byte}`);
      assert.equal(recovered.report.tornBytesCut, recordBytes);
      assert.match(recovered.report.tornReason ?? "", byte < 64 ? /magic|header|version|kind/ : /payload checksum/);
      await recovered.journal.close();
      await removeDir(dir);
    }
  } finally {
    await removeDir(source);
    await removeDir(work);
  }
});

void test("damage before whole records of the last segment is not a torn tail: refused, nothing cut; cut only when the operator says so", async () => {
  const dir = await template("flip-mid");
  try {
    const last = (await segmentPaths(dir))[1]!;
    const { offsets, endBytes } = await recordOffsets(last);
    const secondStart = offsets[1]!;
    await flipBit(last, secondStart + 100, 3);
    const error = await GroupJournal.open(dir, options).then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof JournalCorruptError, String(error));
    assert.equal(error.offsetBytes, secondStart);
    assert.match(error.reason, /whole record \(record of sequence 7\) follows/);
    assert.match(error.reason, /--truncate-damaged-journals/);
    assert.equal((await stat(last)).size, endBytes, "nothing was cut");
    const recovered = await reopen(dir, { ...options, cutDamagedTail: true });
    assert.deepEqual(recovered.sequences, range(1, 5));
    assert.equal(recovered.report.tornBytesCut, endBytes - secondStart);
    await recovered.journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("a record in a format this version cannot read (valid header checksum) stops recovery with JournalFormatError and is never cut", async () => {
  for (const change of ["version", "kind", "zero-sequence"] as const) {
    const dir = await template(`format-${change}`);
    try {
      const last = (await segmentPaths(dir))[1]!;
      const { offsets, endBytes } = await recordOffsets(last);
      const lastStart = offsets[offsets.length - 1]!;
      const header = Buffer.alloc(64);
      const handle = await open(last, "r+");
      try {
        await handle.read(header, 0, 64, lastStart);
        if (change === "version") header.writeUInt8(3, 4); // versions 1 and 2 are read (issue 9: 2 carries the primary's wall time)
        else if (change === "kind") header.writeUInt8(9, 5);
        else header.fill(0, 24, 32);
        header.writeUInt32LE(checksum(header, 0, 60), 60); // whole, as a newer tidemark would write it
        await handle.write(header, 0, 64, lastStart);
      } finally {
        await handle.close();
      }
      const seen: number[] = [];
      const error = await GroupJournal.open(dir, options, (record) => void seen.push(record.sequence)).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof JournalFormatError, `${change}: ${String(error)}`);
      assert.equal(error.code, "TM_ERR_JOURNAL_FORMAT");
      assert.equal(error.offsetBytes, lastStart);
      assert.match(error.message, /newer tidemark/);
      assert.equal((await stat(last)).size, endBytes, `${change}: nothing was cut`);
    } finally {
      await removeDir(dir);
    }
  }
});

void test("a flipped bit in an earlier segment is JournalCorruptError naming file, offset and reason", async () => {
  for (const where of ["header", "payload", "truncated"] as const) {
    const dir = await template(`corrupt-${where}`);
    try {
      const first = (await segmentPaths(dir))[0]!;
      const { offsets } = await recordOffsets(first);
      const third = offsets[2]!;
      if (where === "header") await flipBit(first, third + 30, 0);
      else if (where === "payload") await flipBit(first, third + 64 + 5, 7);
      else await truncate(first, third + 10);
      const seen: number[] = [];
      const error = await GroupJournal.open(dir, options, (record) => void seen.push(record.sequence)).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(error instanceof JournalCorruptError, `${where}: ${String(error)}`);
      assert.equal(error.path, first);
      assert.equal(error.offsetBytes, third);
      assert.match(error.reason, /not the last segment/);
      assert.equal(error.code, "TM_ERR_JOURNAL_CORRUPT");
      assert.deepEqual(seen, [1, 2], "records before the damage were handed out, nothing after");
      assert.equal((await stat(first)).size, where === "truncated" ? third + 10 : recordBytes * 4, "nothing was cut");
    } finally {
      await removeDir(dir);
    }
  }
});

void test("a missing or misnamed segment is a sequence gap: JournalCorruptError", async () => {
  const dir = await tempDir("gap");
  try {
    const { journal } = await GroupJournal.open(dir, options);
    await Promise.all(range(1, 14).map((sequence) => journal.append(makeRecord(sequence, payloadBytes))));
    await journal.close();
    const paths = await segmentPaths(dir); // 1, 5, 9, 13
    assert.equal(paths.length, 4);
    await unlink(paths[1]!);
    await assert.rejects(GroupJournal.open(dir, options), (e: unknown) => e instanceof JournalCorruptError && /expected 5/.test(e.reason));
    // A segment whose name does not match its first record.
    const moved = join(dir, "00000000000000000005.tmj");
    await rename(paths[2]!, moved);
    await assert.rejects(GroupJournal.open(dir, options), (e: unknown) => e instanceof JournalCorruptError && /sequence 9, expected 5/.test(e.reason));
  } finally {
    await removeDir(dir);
  }
});

void test("zeroes or garbage after the last record (a crash after the size grew) are cut", async () => {
  for (const tail of [Buffer.alloc(4096), Buffer.from("not a record at all, just bytes".repeat(10))]) {
    const dir = await template("tail");
    try {
      const last = (await segmentPaths(dir))[1]!;
      const before = await readFile(last);
      await writeFile(last, Buffer.concat([before, tail]));
      const recovered = await reopen(dir, options);
      assert.deepEqual(recovered.sequences, range(1, recordCount));
      assert.equal(recovered.report.tornBytesCut, tail.length);
      await recovered.journal.close();
    } finally {
      await removeDir(dir);
    }
  }
});

// ---- property: random append / sync / crash / reopen ----------------------------------

type Command =
  | { readonly op: "append"; readonly sizes: readonly number[]; readonly wait: boolean }
  | { readonly op: "sync" }
  | { readonly op: "crash"; readonly cutFraction: number; readonly garbageBytes: number }
  | { readonly op: "reopen" };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("append" as const), sizes: fc.array(fc.integer({ min: 0, max: 700 }), { minLength: 1, maxLength: 12 }), wait: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("sync" as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("crash" as const), cutFraction: fc.double({ min: 0, max: 1, noNaN: true }), garbageBytes: fc.integer({ min: 0, max: 200 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("reopen" as const) }) },
);

/** A payload that depends on the sequence and on the generation (a reused sequence gets new bytes). */
function generationRecord(sequence: number, size: number, generation: number): ReturnType<typeof makeRecord> {
  const record = makeRecord(sequence, size);
  for (let i = 0; i < record.payload.length; i += 1) record.payload[i] = (record.payload[i] ?? 0) ^ (generation & 0xff);
  return record;
}

/** End offset, in the last segment, of the durable records (what a crash cannot take). */
async function durableEndBytes(dir: string, durableSequence: number): Promise<{ path: string; durableEnd: number; size: number }> {
  const paths = await segmentPaths(dir);
  const path = paths[paths.length - 1]!;
  const { offsets, sequences, endBytes } = await recordOffsets(path);
  let durableEnd = 0;
  for (let i = 0; i < sequences.length; i += 1) {
    if (sequences[i]! <= durableSequence) durableEnd = (offsets[i + 1] ?? endBytes);
  }
  return { path, durableEnd, size: (await stat(path)).size };
}

void test("property: append/sync/crash/reopen never loses a synced record, never repeats or reorders one", async () => {
  const segmentBytesMax = 2500;
  const propertyOptions = { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1, segmentBytesMax };
  await fc.assert(
    fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 25 }), async (commands) => {
      const dir = await tempDir("prop");
      let { journal } = await GroupJournal.open(dir, propertyOptions);
      /** What the journal was last given for each sequence still possibly present. */
      const appended = new Map<number, Buffer>();
      let syncedThrough = 0;
      let generation = 0;
      const pending: Promise<void>[] = [];
      try {
        const check = async (): Promise<void> => {
          const seen: number[] = [];
          const recovered = await GroupJournal.open(dir, propertyOptions, (record) => {
            assert.equal(record.sequence, seen.length === 0 ? 1 : seen[seen.length - 1]! + 1, "contiguous, in order, once");
            const expected = appended.get(record.sequence);
            assert.ok(expected !== undefined && expected.equals(record.payload), `record ${record.sequence} is what was appended`);
            seen.push(record.sequence);
          });
          journal = recovered.journal;
          const last = seen.length === 0 ? 0 : seen[seen.length - 1]!;
          assert.ok(last >= syncedThrough, `synced through ${syncedThrough}, recovered through ${last}`);
          assert.equal(journal.nextSequence, last + 1);
          for (const sequence of [...appended.keys()]) if (sequence > last) appended.delete(sequence);
          syncedThrough = last; // all recovered records are durable now
          const read = await journal.readFrom(1, 1 << 30);
          assert.deepEqual(read.map((r) => r.sequence), seen);
        };
        for (const command of commands) {
          if (command.op === "append") {
            for (const size of command.sizes) {
              const record = generationRecord(journal.nextSequence, size, generation);
              appended.set(record.sequence, record.payload);
              const done = journal.append(record);
              pending.push(done.catch(() => undefined));
              if (command.wait) await done;
            }
          } else if (command.op === "sync") {
            const target = journal.lastSequence;
            await journal.sync();
            syncedThrough = Math.max(syncedThrough, target);
            assert.ok(journal.durableSequence >= target);
          } else if (command.op === "crash") {
            syncedThrough = Math.max(syncedThrough, journal.durableSequence);
            await journal.abandon();
            await Promise.all(pending);
            const { path, durableEnd, size } = await durableEndBytes(dir, syncedThrough);
            const cut = durableEnd + Math.floor(command.cutFraction * (size - durableEnd));
            await truncate(path, cut);
            if (command.garbageBytes > 0) {
              const handle = await open(path, "r+");
              const garbage = Buffer.alloc(command.garbageBytes);
              for (let i = 0; i < garbage.length; i += 1) garbage[i] = (i * 151 + cut) & 0xff;
              await handle.write(garbage, 0, garbage.length, cut);
              await handle.close();
            }
            generation += 1;
            await check();
          } else {
            await journal.close();
            await Promise.all(pending);
            await check();
          }
        }
        await journal.close();
        await Promise.all(pending);
        await check();
        await journal.close();
      } finally {
        await journal.abandon().catch(() => undefined);
        await removeDir(dir);
      }
    }),
    { numRuns: 60 },
  );
});
