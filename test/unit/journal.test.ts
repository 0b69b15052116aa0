// Proves the journal's normal life on real files in a temp dir: append/sync/reopen round
// trip, batching (few writevs, few fdatasyncs under load), group commit, segment rolling,
// readFrom across segments, trimThrough, the size limit, close.
import { JournalClosedError, JournalFullError, JournalTrimmedError } from "../../src/core/errors.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, stat } from "node:fs/promises";
import { GroupJournal } from "../../src/storage/journal.ts";
import { encodedRecordBytes } from "../../src/protocol/journal-record.ts";
import { isExpectedRecord, makeRecord, range, removeDir, reopen, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const options = { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1 };

void test("append, sync, close, reopen: every record comes back in order with its content", async () => {
  const dir = await tempDir("roundtrip");
  try {
    const { journal, report } = await GroupJournal.open(dir, { ...options, nextSequence: 5 });
    assert.equal(report.records, 0);
    assert.equal(report.firstSequence, 5);
    assert.equal(report.lastSequence, 4);
    assert.equal(journal.nextSequence, 5);
    const sizes = [0, 1, 100, 4096, 70_000, 3];
    for (let sequence = 5; sequence < 105; sequence += 1) await journal.append(makeRecord(sequence, sizes[sequence % sizes.length]));
    assert.equal(journal.writtenSequence, 104);
    await journal.sync();
    assert.equal(journal.durableSequence, 104);
    await journal.close();
    await assert.rejects(journal.append(makeRecord(105)), JournalClosedError);

    const again = await reopen(dir, { ...options, nextSequence: 999 });
    assert.deepEqual(again.sequences, range(5, 104));
    assert.ok(again.allExpected);
    assert.equal(again.report.firstSequence, 5);
    assert.equal(again.report.lastSequence, 104);
    assert.equal(again.report.records, 100);
    assert.equal(again.report.tornBytesCut, 0);
    assert.equal(again.report.maxWriteTimeUs, 1_000_000 + 104);
    assert.equal(again.report.maxAcceptNumber, 208);
    assert.equal(again.journal.durableSequence, 104, "recovered records are durable");
    assert.equal(again.journal.nextSequence, 105, "the directory's state wins over nextSequence");
    await again.journal.append(makeRecord(105));
    await again.journal.close();
    const third = await reopen(dir, options);
    assert.deepEqual(third.sequences, range(5, 105));
    await third.journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("1000 appends in one tick take a handful of writevs and one fdatasync", async () => {
  const dir = await tempDir("batch");
  try {
    const { journal } = await GroupJournal.open(dir, options);
    const appended = range(1, 1000).map((sequence) => journal.append(makeRecord(sequence, 4096)));
    const syncs = range(1, 20).map(() => journal.sync());
    await Promise.all([...appended, ...syncs]);
    assert.equal(journal.durableSequence, 1000);
    assert.ok(journal.writevCount <= 3, `writevs: ${journal.writevCount}`); // 512 records per batch at most
    assert.equal(journal.fsyncCount, 1, "twenty concurrent syncs share one fdatasync");
    assert.equal(journal.bytesWritten, 1000 * (64 + 4096));
    // One promise per batch of appends, not per record.
    assert.ok(new Set(appended).size <= 3);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("group commit: a sync arriving during an fdatasync waits only if it has uncovered records", async () => {
  const dir = await tempDir("group-commit");
  try {
    const { journal } = await GroupJournal.open(dir, options);
    await journal.append(makeRecord(1));
    const first = journal.sync();
    const same = journal.sync(); // nothing new: shares the fdatasync in flight
    await Promise.all([first, same]);
    assert.equal(journal.fsyncCount, 1);
    await journal.sync(); // already durable: no fdatasync
    assert.equal(journal.fsyncCount, 1);

    // Many clients, each appending then syncing, interleaved: far fewer fdatasyncs than syncs.
    let next = 2;
    let syncCalls = 0;
    const client = async (): Promise<void> => {
      for (let round = 0; round < 50; round += 1) {
        const sequence = next++;
        await journal.append(makeRecord(sequence, 512));
        syncCalls += 1;
        await journal.sync();
        assert.ok(journal.durableSequence >= sequence);
      }
    };
    await Promise.all(range(1, 16).map(client));
    assert.equal(syncCalls, 800);
    assert.ok(journal.fsyncCount < syncCalls / 4, `fsyncs ${journal.fsyncCount} for ${syncCalls} syncs`);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("segments roll at segmentBytesMax, are named by their first sequence, and reopen in order", async () => {
  const dir = await tempDir("roll");
  try {
    const recordBytes = encodedRecordBytes(makeRecord(1, 200));
    const segmentBytesMax = recordBytes * 4 + 10; // 4 records per segment
    const { journal } = await GroupJournal.open(dir, { ...options, segmentBytesMax });
    await Promise.all(range(1, 22).map((sequence) => journal.append(makeRecord(sequence, 200))));
    await journal.sync();
    assert.equal(journal.segmentCount, 6);
    const names = (await readdir(dir)).sort();
    assert.deepEqual(names, [1, 5, 9, 13, 17, 21].map((s) => `${String(s).padStart(20, "0")}.tmj`));
    for (const name of names.slice(0, -1)) assert.equal((await stat(`${dir}/${name}`)).size, recordBytes * 4);
    // A record larger than a segment still goes in, alone in its own segment.
    await journal.append(makeRecord(23, 2000));
    await journal.append(makeRecord(24, 200));
    await journal.close();
    const again = await reopen(dir, { ...options, segmentBytesMax });
    assert.deepEqual(again.sequences, range(1, 24));
    assert.ok(again.allExpected);
    assert.equal(again.report.segments, 8);
    await again.journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("readFrom returns verified records across segments, bounded by maxBytes and by durability", async () => {
  const dir = await tempDir("read");
  try {
    const segmentBytesMax = 200 * 1024; // ~2400 records per segment: the index has entries inside segments
    const { journal } = await GroupJournal.open(dir, { ...options, segmentBytesMax });
    // Small records, many per segment, so the sparse index (every 1024 records) is used.
    const sizeOf = (sequence: number): number => (sequence % 5 === 0 ? 0 : 20 + (sequence % 7));
    for (let sequence = 1; sequence <= 6000; sequence += 1) void journal.append(makeRecord(sequence, sizeOf(sequence)));
    await journal.sync();
    assert.ok(journal.segmentCount >= 3);

    const all = await journal.readFrom(1, 1 << 30);
    assert.equal(all.length, 6000);
    assert.ok(all.every((record, i) => isExpectedRecord(record, i + 1)));

    for (const from of [1, 2, 1023, 1024, 1025, 1026, 2047, 2048, 2049, 2500, 3001, 4097, 5999, 6000]) {
      const some = await journal.readFrom(from, 2000);
      assert.ok(some.length >= 1);
      assert.equal(some[0]?.sequence, from);
      const total = some.reduce((sum, record) => sum + encodedRecordBytes(record), 0);
      assert.ok(total <= 2000 || some.length === 1);
      assert.ok(some.every((record, i) => isExpectedRecord(record, from + i)));
      // Taking one more would have passed the budget (unless we reached the end).
      const last = some[some.length - 1]!;
      if (last.sequence < 6000) assert.ok(total + encodedRecordBytes(makeRecord(last.sequence + 1, sizeOf(last.sequence + 1))) > 2000);
    }
    const one = await journal.readFrom(10, 1);
    assert.equal(one.length, 1, "at least one record, whatever maxBytes");
    assert.deepEqual(await journal.readFrom(6001, 1 << 20), []);

    // Written but not synced: invisible by default, visible with "written".
    await journal.append(makeRecord(6001, 10));
    assert.equal(journal.durableSequence, 6000);
    assert.deepEqual(await journal.readFrom(6001, 1 << 20), []);
    const written = await journal.readFrom(6001, 1 << 20, "written");
    assert.equal(written.length, 1);
    assert.ok(isExpectedRecord(written[0]!, 6001));
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("trimThrough deletes whole segments behind the sequence, never the active one", async () => {
  const dir = await tempDir("trim");
  try {
    const recordBytes = encodedRecordBytes(makeRecord(1, 100));
    const segmentBytesMax = recordBytes * 10;
    const { journal } = await GroupJournal.open(dir, { ...options, segmentBytesMax });
    await Promise.all(range(1, 35).map((sequence) => journal.append(makeRecord(sequence))));
    await journal.sync();
    assert.equal(journal.segmentCount, 4); // 1-10, 11-20, 21-30, 31-35
    assert.equal(journal.usedBytes, 35 * recordBytes);

    await journal.trimThrough(15); // only 1-10 lies wholly behind 15
    assert.equal(journal.segmentCount, 3);
    assert.equal(journal.firstSequence, 11);
    assert.equal(journal.usedBytes, 25 * recordBytes);
    await assert.rejects(journal.readFrom(5, 1000), JournalTrimmedError);
    assert.equal((await journal.readFrom(11, 1))[0]?.sequence, 11);

    await journal.trimThrough(1000); // everything, but the active segment stays
    assert.equal(journal.segmentCount, 1);
    assert.equal(journal.firstSequence, 31);
    assert.equal((await readdir(dir)).length, 1);
    await journal.append(makeRecord(36));
    await journal.close();

    const again = await reopen(dir, { ...options, segmentBytesMax });
    assert.deepEqual(again.sequences, range(31, 36));
    assert.equal(again.report.firstSequence, 31);
    await again.journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("an append past bytesMax rejects with JournalFullError and consumes nothing", async () => {
  const dir = await tempDir("full");
  try {
    const recordBytes = encodedRecordBytes(makeRecord(1, 100));
    const { journal } = await GroupJournal.open(dir, { fileSystem: nodeFileSystem, bytesMax: recordBytes * 3, nextSequence: 1 });
    await journal.append(makeRecord(1));
    await journal.append(makeRecord(2));
    await journal.append(makeRecord(3));
    assert.equal(journal.freeBytes, 0);
    await assert.rejects(journal.append(makeRecord(4)), JournalFullError);
    assert.equal(journal.nextSequence, 4);
    assert.equal(journal.failed, undefined, "a full journal is not a failed one");
    await journal.append(makeRecord(4, 0)).catch(() => undefined); // 64 bytes still do not fit
    assert.equal(journal.nextSequence, 4);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("append asserts sequence order", async () => {
  const dir = await tempDir("order");
  try {
    const { journal } = await GroupJournal.open(dir, { ...options, nextSequence: 10 });
    assert.throws(() => journal.append(makeRecord(9)), /expected 10/);
    await journal.append(makeRecord(10));
    assert.throws(() => journal.append(makeRecord(12)), /expected 11/);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("close finishes queued appends and makes them durable", async () => {
  const dir = await tempDir("close");
  try {
    const { journal } = await GroupJournal.open(dir, options);
    const appended = range(1, 300).map((sequence) => journal.append(makeRecord(sequence, 1000)));
    await journal.close();
    await Promise.all(appended);
    assert.equal(journal.durableSequence, 300);
    await assert.rejects(journal.append(makeRecord(301)), JournalClosedError);
    await journal.close(); // twice is fine
    const again = await reopen(dir, options);
    assert.equal(again.report.records, 300);
    await again.journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("a sender reading behind a busy writer, with rolls and trims going on, sees every record once, in order", async () => {
  const dir = await tempDir("sender");
  try {
    const segmentBytesMax = 8 * 1024;
    const { journal } = await GroupJournal.open(dir, { ...options, segmentBytesMax });
    const total = 3000;
    const writer = async (): Promise<void> => {
      for (let sequence = 1; sequence <= total; sequence += 1) {
        const appended = journal.append(makeRecord(sequence, (sequence * 13) % 300));
        if (sequence % 50 === 0) await journal.sync();
        else if (sequence % 7 === 0) await appended;
      }
      await journal.sync();
    };
    let cursor = 1;
    let reads = 0;
    const sender = async (): Promise<void> => {
      while (cursor <= total) {
        const records = await journal.readFrom(cursor, 4096);
        reads += 1;
        for (const record of records) {
          assert.ok(record.sequence <= journal.durableSequence, "only durable records are read");
          assert.ok(isExpectedRecord(record, cursor), `record ${cursor}`);
          cursor += 1;
        }
        // The secondary acknowledged: the primary may trim what is behind.
        await journal.trimThrough(cursor - 1);
        if (records.length === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    };
    await Promise.all([writer(), sender()]);
    assert.equal(cursor, total + 1);
    assert.ok(reads > 10);
    assert.ok(journal.segmentCount <= 2, `trimmed as it went (${journal.segmentCount} segments left)`);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});

void test("whenDurable asks for no fdatasync of its own and settles, in order, with the next group commit", async () => {
  const dir = await tempDir("when-durable");
  try {
    const { journal } = await GroupJournal.open(dir, { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1 });
    const settled: number[] = [];
    const watchers = range(1, 5).map((sequence) => {
      void journal.append(makeRecord(sequence, 200));
      return journal.whenDurable(sequence).then(() => void settled.push(sequence));
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(journal.fsyncCount, 0, "no fdatasync was asked for");
    assert.deepEqual(settled, [], "nothing is durable yet");
    await journal.sync();
    await Promise.all(watchers);
    assert.deepEqual(settled, [1, 2, 3, 4, 5], "one group commit settled them all, in sequence order");
    assert.equal(journal.fsyncCount, 1);
    await journal.whenDurable(5); // already durable: at once
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});
