// The durable, append-only journal of one consistency group (patent: the "logical volume
// for write data storage" [0048]; DESIGN.md "The data path"). It is the write-ahead log of
// the primary and the landing zone of the secondary. docs/journal.md describes the format,
// recovery rules and exactly what "written" and "durable" mean.
//
// Hot path: append() only queues; one writer gathers whatever was appended while the
// previous write was in flight and issues ONE positioned writev per batch (headers encoded
// into a reused slab, payloads passed as they are). sync() is group commit: callers share
// fdatasyncs, and an fdatasync only starts once it covers the oldest waiting caller.
import { faultInjected } from "../core/faults.ts";
import { dirname, join } from "node:path";
import { assert } from "../core/assert.ts";
import {
  journalBatchBytesMax, journalBatchRecordsMax, journalIndexStrideBytes, journalIndexStrideRecords,
  journalReadChunkBytes, journalRecordPayloadBytesMax, journalSegmentBytesMax, safeIntegerMax,
} from "../core/limits.ts";
import { asSequence, type SequenceNumber } from "../core/types.ts";
import {
  encodeRecordHeader, encodedRecordBytes, journalHeaderBytes, recordPayloadBytes, RecordKind, type JournalRecord,
} from "../protocol/journal-record.ts";
import { listSegmentFiles, segmentFileName } from "./journal-files.ts";
import { JournalAbandonedError, JournalClosedError, JournalCorruptError, JournalFormatError, JournalFullError, JournalTrimmedError } from "../core/errors.ts";
import { findWholeRecordAfter, SegmentReader } from "./journal-reader.ts";
import { DirectFileReader } from "./direct-reader.ts";
import { errorCode, type File, type FileSystem } from "./fs.ts";

/**
 * Batches up to this size are written with a synchronous writev on the main thread (a
 * page-cache copy); larger ones go to the thread pool so the event loop keeps serving.
 */
const journalSyncWriteBytesMax = 256 * 1024;
/**
 * Once this many bytes were written since the last fdatasync started, one starts in the
 * background (nobody waits for it). Leaving a segment fdatasyncs it and holds every append
 * meanwhile; without this, that was up to a whole segment (256 MiB) of dirty pages at once.
 */
const journalBackgroundSyncBytes = 32 * 1024 * 1024;


export interface JournalOptions {
  /** Where the segment files live (production: nodeFileSystem; the simulation: its disk). */
  readonly fileSystem: FileSystem;
  /** Size limit of all segments together; an append past it rejects with JournalFullError. */
  readonly bytesMax: number;
  /** A segment is left for a new one before it would grow past this (default journalSegmentBytesMax). */
  readonly segmentBytesMax?: number;
  /** Sequence of the first record when the directory holds no segment yet (ignored otherwise). */
  readonly nextSequence: number;
  /**
   * Recovery: cut the last segment at a damaged record even when whole records follow it
   * (the operator's choice after a power loss; `tidemark node --truncate-damaged-journals`).
   * Without it such damage is JournalCorruptError: whole records after it may be answered writes.
   */
  readonly cutDamagedTail?: boolean;
  /**
   * Recovery reads every segment with O_DIRECT (after a failed fdatasync: never trust the page
   * cache). Without it only the last segment is read so, which is always done: see recover().
   */
  readonly directRead?: boolean;
}

/** Bytes read at once when recovery reads with O_DIRECT (whole blocks; one largest record fits). */
const journalDirectReadBytes = 4 * 1024 * 1024;

export interface RecoveryReport {
  /** First record's sequence; with no records, the next sequence to append. */
  readonly firstSequence: SequenceNumber;
  /** Last record's sequence; with no records, firstSequence - 1. */
  readonly lastSequence: SequenceNumber;
  readonly records: number;
  /** Bytes of valid records recovered. */
  readonly bytes: number;
  /** Bytes cut from the end of the last segment (a torn tail). */
  readonly tornBytesCut: number;
  /** Why the tail was cut (codec reason), if it was. */
  readonly tornReason: string | undefined;
  /** Largest write time and accept number seen (0 with no records): the stamper resumes above them. */
  readonly maxWriteTimeUs: number;
  /** Largest primary wall time (record format 2; 0 with none): a primary's next records are stamped above it. */
  readonly maxWallTimeUs: number;
  readonly maxAcceptNumber: number;
  /** Highest marker number among marker records (0 if none). */
  readonly maxMarkerNumber: number;
  /** Sequence of the last host-visible change (a write, zeroes or resize record) recovered; 0 with none. */
  readonly lastWriteSequence: number;
  readonly segments: number;
}

export type RecordCallback = (record: JournalRecord) => void | Promise<void>;

interface Segment {
  readonly firstSequence: number;
  readonly path: string;
  /** firstSequence - 1 while empty. */
  lastSequence: number;
  /** Bytes of whole records written (writes completed, not necessarily durable). */
  sizeBytes: number;
  /** Sparse index: the sequence and file offset of every Nth record (the first is implicit). */
  readonly indexSequences: number[];
  readonly indexOffsets: number[];
  recordsSinceIndex: number;
  bytesSinceIndex: number;
}

interface Waiter {
  /** Append group: resolves once this sequence is written. Sync: once durable. */
  sequence: number;
  readonly promise: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/**
 * A segment is at most a quarter of the journal's size limit: only whole, non-active
 * segments can be trimmed, so a full journal must always have most of its bytes behind
 * the active segment. (A record larger than a segment still goes in, alone.)
 */
function effectiveSegmentBytesMax(options: JournalOptions): number {
  return Math.max(journalHeaderBytes, Math.min(options.segmentBytesMax ?? journalSegmentBytesMax, Math.floor(options.bytesMax / 4)));
}

function newWaiter(sequence: number): Waiter {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  return { sequence, promise, resolve, reject };
}

function newSegment(firstSequence: number, path: string): Segment {
  return { firstSequence, path, lastSequence: firstSequence - 1, sizeBytes: 0, indexSequences: [], indexOffsets: [], recordsSinceIndex: 0, bytesSinceIndex: 0 };
}

/** Notes a record at `offsetBytes` in the sparse index (called in file order). */
function indexRecord(segment: Segment, sequence: number, offsetBytes: number, bytes: number): void {
  if (segment.recordsSinceIndex >= journalIndexStrideRecords || segment.bytesSinceIndex >= journalIndexStrideBytes) {
    segment.indexSequences.push(sequence);
    segment.indexOffsets.push(offsetBytes);
    segment.recordsSinceIndex = 0;
    segment.bytesSinceIndex = 0;
  }
  segment.recordsSinceIndex += 1;
  segment.bytesSinceIndex += bytes;
}

/** Offset and sequence of the indexed record at or before `sequence` in a segment. */
function indexFloor(segment: Segment, sequence: number): { sequence: number; offsetBytes: number } {
  const sequences = segment.indexSequences;
  let lo = 0;
  let hi = sequences.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if ((sequences[mid] ?? Infinity) <= sequence) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (found < 0) return { sequence: segment.firstSequence, offsetBytes: 0 };
  return { sequence: sequences[found] ?? segment.firstSequence, offsetBytes: segment.indexOffsets[found] ?? 0 };
}

export class GroupJournal {
  readonly dir: string;
  /** The file system the journal's files are on (a resume reopens the directory through it). */
  readonly fileSystem: FileSystem;
  readonly bytesMax: number;
  readonly segmentBytesMax: number;

  /** Old to new; the last one is the active segment. Never empty. */
  private readonly segments: Segment[];
  private activeHandle: File;

  private lastAppendedSequence: number;
  private writtenSequenceValue: number;
  private durableSequenceValue: number;
  /** Bytes of whole records in all segment files. */
  private diskBytes: number;

  /** Appended, not yet handed to a writev. queue[queueHead] is the oldest. */
  private readonly queue: JournalRecord[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  /** Appends since the writer last took a batch share one promise. */
  private openGroup: Waiter | undefined;
  /** Closed append groups, oldest first, waiting for their last record to be written. */
  private readonly appendGroups: Waiter[] = [];
  private readonly syncWaiters: Waiter[] = [];
  /** whenDurable() callers, in sequence order: settled by durability, never a reason for an fdatasync. */
  private readonly durableWatchers: Waiter[] = [];

  private writer: Promise<void> | undefined;
  private syncInFlight: Promise<void> | undefined;
  private rolling = false;
  /** Settles when the roll in progress is done (trimThrough waits for it: the old segment becomes trimmable). */
  private rollFinished: Promise<void> | undefined;
  /** Bytes written since the last fdatasync started. */
  private unsyncedBytes = 0;
  private closing = false;
  private closed = false;
  /** trimThrough calls in progress (settled, never rejecting): close() and abandon() wait for them. */
  private readonly trims = new Set<Promise<void>>();
  private closePromise: Promise<void> | undefined;
  private failure: Error | undefined;

  /** Header slab: one 64-byte view per record of a batch, reused for every writev. */
  private readonly headerViews: Buffer[];
  private readonly iov: Buffer[] = [];

  private fsyncCountValue = 0;
  private writevCountValue = 0;
  private bytesWrittenValue = 0;

  private constructor(dir: string, options: JournalOptions, segments: Segment[], activeHandle: File, diskBytes: number) {
    assert(segments.length > 0, "a journal always has an active segment");
    this.dir = dir;
    this.fileSystem = options.fileSystem;
    this.bytesMax = options.bytesMax;
    this.segmentBytesMax = effectiveSegmentBytesMax(options);
    this.segments = segments;
    this.activeHandle = activeHandle;
    const last = segments[segments.length - 1];
    assert(last !== undefined, "active segment exists");
    this.lastAppendedSequence = last.lastSequence;
    // Recovery fdatasyncs the active segment before the journal is handed out.
    this.writtenSequenceValue = last.lastSequence;
    this.durableSequenceValue = last.lastSequence;
    this.diskBytes = diskBytes;
    const slab = Buffer.alloc(journalBatchRecordsMax * journalHeaderBytes);
    this.headerViews = [];
    for (let i = 0; i < journalBatchRecordsMax; i += 1) {
      this.headerViews.push(slab.subarray(i * journalHeaderBytes, (i + 1) * journalHeaderBytes));
    }
  }

  /**
   * Opens (creating if needed) the journal in `dir` and recovers it: every record of every
   * segment is verified and handed to `onRecord` in sequence order (its payload may be a
   * view of a reused buffer: consume it before returning or before the returned promise
   * settles). A torn tail of the last segment is cut and fdatasync'd; anything else that is
   * not a valid, contiguous record throws JournalCorruptError.
   */
  static async open(dir: string, options: JournalOptions, onRecord: RecordCallback = () => undefined): Promise<{ journal: GroupJournal; report: RecoveryReport }> {
    assert(Number.isSafeInteger(options.nextSequence) && options.nextSequence >= 1, "nextSequence is a positive integer");
    assert(options.bytesMax > 0, "bytesMax is positive");
    assert(effectiveSegmentBytesMax(options) >= journalHeaderBytes, "a segment holds at least one header");
    const fs = options.fileSystem;
    await fs.makeDirectory(dir);
    await fs.syncDirectory(dirname(dir));
    const files = await listSegmentFiles(fs, dir);
    if (files.length === 0) {
      const path = join(dir, segmentFileName(options.nextSequence));
      const handle = await fs.open(path, "create-exclusive");
      try {
        await fs.syncDirectory(dir);
      } catch (error) {
        await handle.close();
        throw error;
      }
      const segment = newSegment(options.nextSequence, path);
      const journal = new GroupJournal(dir, options, [segment], handle, 0);
      const report: RecoveryReport = {
        firstSequence: asSequence(options.nextSequence), lastSequence: asSequence(options.nextSequence - 1), records: 0, bytes: 0,
        tornBytesCut: 0, tornReason: undefined, maxWriteTimeUs: 0, maxWallTimeUs: 0, maxAcceptNumber: 0, maxMarkerNumber: 0, lastWriteSequence: 0, segments: 1,
      };
      return { journal, report };
    }
    return GroupJournal.recover(dir, options, files, onRecord);
  }

  private static async recover(
    dir: string, options: JournalOptions, files: { firstSequence: number; path: string }[], onRecord: RecordCallback,
  ): Promise<{ journal: GroupJournal; report: RecoveryReport }> {
    const segments: Segment[] = [];
    let expectedSequence = files[0]?.firstSequence ?? 0;
    let records = 0;
    let bytes = 0;
    let tornBytesCut = 0;
    let tornReason: string | undefined;
    let maxWriteTimeUs = 0;
    let maxWallTimeUs = 0;
    let maxAcceptNumber = 0;
    let maxMarkerNumber = 0;
    let lastWriteSequence = 0;
    let activeHandle: File | undefined;
    const fs = options.fileSystem;
    try {
      for (let i = 0; i < files.length; i += 1) {
        const file = files[i];
        assert(file !== undefined, "segment file in range");
        const isLast = i === files.length - 1;
        if (file.firstSequence !== expectedSequence) {
          throw new JournalCorruptError(file.path, 0, `segment starts at sequence ${file.firstSequence}, expected ${expectedSequence} (gap or overlap)`);
        }
        const handle = await fs.open(file.path, isLast ? "read-write" : "read");
        let keepOpen = false;
        try {
          // Journal before volume holds for recovery too: onRecord replays into the volumes, so
          // what it is handed must be durable first. Records a dead process left in the page
          // cache were never fdatasync'd (and O_DIRECT's writeback does not make the file's size
          // durable): a replay of them, then a power loss, left volume blocks no journal
          // explained (whole-node simulation, seed 1985). Pages a failed fdatasync dropped are
          // clean, so this writes none of them; the O_DIRECT read below still sees the hole.
          if (isLast && !faultInjected("replay-before-durable")) await handle.datasync();
          const { sizeBytes: fileBytes } = await handle.stat();
          const segment = newSegment(file.firstSequence, file.path);
          // After a failed fdatasync only the disk itself can say what is durable: read past the page
          // cache. The last segment always: a process that died after an fdatasync failed left pages in
          // the cache that the disk never got and that no later fdatasync writes (they are clean), so
          // reading them through the cache and fdatasyncing would call them durable, and a power loss
          // would then take records a sync() had covered (found by the simulated disk). Every other
          // segment was fdatasync'd whole, successfully, before the next one was created.
          const direct = options.directRead === true || isLast;
          const source = direct ? await DirectFileReader.open(fs, file.path, journalDirectReadBytes) : handle;
          const reader = new SegmentReader(source, 0, fileBytes, { chunkBytes: journalReadChunkBytes, reuseBuffer: true });
          try {
          for (;;) {
            const step = await reader.next();
            if (step.kind === "end") break;
            if (step.kind === "unsupported") throw new JournalFormatError(file.path, step.offsetBytes, step.reason);
            if (step.kind === "bad") {
              if (!isLast) throw new JournalCorruptError(file.path, step.offsetBytes, `${step.reason} (not the last segment, so not a torn tail)`);
              // A torn write leaves garbage or zeroes behind it, never a whole record.
              const whole = await findWholeRecordAfter(source, step.offsetBytes + 1, fileBytes, journalReadChunkBytes, expectedSequence);
              if (whole !== undefined && options.cutDamagedTail !== true) {
                throw new JournalCorruptError(file.path, step.offsetBytes,
                  `${step.reason}, but a whole record (${whole.detail}) follows at byte ${whole.offsetBytes}: this is damage, not a torn write, ` +
                  `and cutting here would drop records from sequence ${expectedSequence} on. Nothing was changed on disk. ` +
                  "If the machine lost power, or an fdatasync failed before the node stopped (records after an unwritten hole were never made durable), start the node once with " +
                  "--truncate-damaged-journals to cut the journal here; otherwise restore the data directory from a backup");
              }
              tornBytesCut = fileBytes - step.offsetBytes;
              tornReason = step.reason;
              await handle.truncate(step.offsetBytes);
              break;
            }
            const record = step.record;
            if (record.sequence !== expectedSequence) {
              // A valid record with the wrong number is not a torn write: files were mixed up or damaged.
              throw new JournalCorruptError(file.path, step.offsetBytes, `record has sequence ${record.sequence}, expected ${expectedSequence}`);
            }
            indexRecord(segment, record.sequence, step.offsetBytes, step.bytes);
            segment.lastSequence = record.sequence;
            segment.sizeBytes = step.offsetBytes + step.bytes;
            expectedSequence += 1;
            records += 1;
            bytes += step.bytes;
            if (record.writeTimeUs > maxWriteTimeUs) maxWriteTimeUs = record.writeTimeUs;
            if (record.wallTimeUs > maxWallTimeUs) maxWallTimeUs = record.wallTimeUs;
            if (record.acceptNumber > maxAcceptNumber) maxAcceptNumber = record.acceptNumber;
            if (record.kind === RecordKind.marker && record.markerNumber > maxMarkerNumber) maxMarkerNumber = record.markerNumber;
            // A resize changes what a host sees too: `pair wait` and a fence wait for it like a write (GroupWriter.resize).
            if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes || record.kind === RecordKind.resize) lastWriteSequence = record.sequence;
            const pending = onRecord(record);
            if (pending !== undefined) await pending;
          }
          } finally {
            if (source !== handle) await source.close();
          }
          if (!isLast && segment.sizeBytes === 0) {
            throw new JournalCorruptError(file.path, 0, "empty segment before the last one");
          }
          segments.push(segment);
          if (isLast) {
            // What a crashed process left in the page cache is made durable before anyone
            // (a sender, a reflector) relies on it; this also persists a cut tail.
            await handle.sync();
            activeHandle = handle;
            keepOpen = true;
          }
        } finally {
          if (!keepOpen) await handle.close();
        }
      }
      await fs.syncDirectory(dir);
    } catch (error) {
      await activeHandle?.close();
      throw error;
    }
    assert(activeHandle !== undefined, "the last segment stays open for appending");
    const first = segments[0];
    const last = segments[segments.length - 1];
    assert(first !== undefined && last !== undefined, "recovered segments exist");
    const journal = new GroupJournal(dir, options, segments, activeHandle, bytes);
    // A journal written before full segments were left at once (or under a smaller limit).
    if (last.sizeBytes >= journal.segmentBytesMax) await journal.roll();
    const report: RecoveryReport = {
      firstSequence: asSequence(first.firstSequence), lastSequence: asSequence(last.lastSequence), records, bytes,
      tornBytesCut, tornReason, maxWriteTimeUs, maxWallTimeUs, maxAcceptNumber, maxMarkerNumber, lastWriteSequence, segments: segments.length,
    };
    assert(report.lastSequence - report.firstSequence + 1 === records, "recovered records are contiguous");
    return { journal, report };
  }

  // ---- state -------------------------------------------------------------------------

  /** First sequence held; with no records, the next one to append. */
  get firstSequence(): SequenceNumber {
    const first = this.segments[0];
    assert(first !== undefined, "journal has a segment");
    return asSequence(first.firstSequence);
  }
  /** Last sequence appended (queued, written or durable); firstSequence - 1 when empty. */
  get lastSequence(): SequenceNumber {
    return asSequence(this.lastAppendedSequence);
  }
  get nextSequence(): SequenceNumber {
    return asSequence(this.lastAppendedSequence + 1);
  }
  /** Highest sequence whose bytes a write has put in the file (not necessarily durable). */
  get writtenSequence(): SequenceNumber {
    return asSequence(this.writtenSequenceValue);
  }
  /** Highest sequence known durable: an fdatasync covering it returned. */
  get durableSequence(): SequenceNumber {
    return asSequence(this.durableSequenceValue);
  }
  /** Bytes in segment files plus bytes appended and not yet written. */
  get usedBytes(): number {
    return this.diskBytes + this.queuedBytes;
  }
  get freeBytes(): number {
    return Math.max(0, this.bytesMax - this.usedBytes);
  }
  get segmentCount(): number {
    return this.segments.length;
  }
  get fsyncCount(): number {
    return this.fsyncCountValue;
  }
  get writevCount(): number {
    return this.writevCountValue;
  }
  get bytesWritten(): number {
    return this.bytesWrittenValue;
  }
  /** The I/O error that stopped the journal, if one did. */
  get failed(): Error | undefined {
    return this.failure;
  }

  // ---- append --------------------------------------------------------------------------

  /**
   * Queues a record; it must carry sequence lastSequence + 1. Resolves once its bytes are
   * in the file (not yet durable: call sync()). The payload is written as it is, not
   * copied: the caller must not change it before this resolves. Rejects with
   * JournalFullError (nothing consumed; trim and retry), JournalClosedError, or the I/O
   * error that failed the journal. Appends queued together share one promise; its
   * rejection is also reported by sync() and by later appends, so ignoring it is safe.
   */
  append(record: JournalRecord): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new JournalClosedError(this.dir));
    const sequence: number = record.sequence;
    // Messages are built only on failure: this runs once per write.
    if (sequence !== this.lastAppendedSequence + 1) assert(false, () => `journal ${this.dir}: append of sequence ${sequence}, expected ${this.lastAppendedSequence + 1}`);
    assert(sequence <= safeIntegerMax, "sequence stays exact");
    const payloadBytes = recordPayloadBytes(record.kind, record.lengthBytes);
    if (record.payload.length !== payloadBytes) assert(false, () => `record payload is ${record.payload.length} bytes, kind ${record.kind} with length ${record.lengthBytes} needs ${payloadBytes}`);
    assert(payloadBytes <= journalRecordPayloadBytesMax, "record payload within the limit");
    const bytes = journalHeaderBytes + payloadBytes;
    if (this.usedBytes + bytes > this.bytesMax) return Promise.reject(new JournalFullError(this.usedBytes, bytes, this.bytesMax));
    this.queue.push(record);
    this.queuedBytes += bytes;
    this.lastAppendedSequence = sequence;
    let group = this.openGroup;
    if (group === undefined) {
      group = newWaiter(sequence);
      // Callers may rely on sync() alone; a rejection nobody awaits must not crash the process.
      group.promise.catch(() => undefined);
      this.openGroup = group;
    } else {
      group.sequence = sequence;
    }
    if (this.writer === undefined) this.writer = this.runWriter();
    return group.promise;
  }

  private async runWriter(): Promise<void> {
    // Let the rest of this turn's appends join the first batch.
    await Promise.resolve();
    try {
      while (this.queueHead < this.queue.length && this.failure === undefined) {
        await this.writeBatch();
      }
    } catch (error) {
      this.fail(error as Error);
    } finally {
      this.writer = undefined;
    }
    // An append that raced the finally above restarts the writer.
    if (this.queueHead < this.queue.length && this.failure === undefined && this.writer === undefined) this.writer = this.runWriter();
  }

  private async writeBatch(): Promise<void> {
    const firstRecord = this.queue[this.queueHead];
    assert(firstRecord !== undefined, "writer has work");
    const firstBytes = encodedRecordBytes(firstRecord);
    let segment = this.activeSegment();
    if (segment.sizeBytes > 0 && segment.sizeBytes + firstBytes > this.segmentBytesMax) {
      await this.roll();
      if (this.failure !== undefined) return;
      segment = this.activeSegment();
    }
    // Everything appended so far is in this batch or a later one: the open group closes.
    if (this.openGroup !== undefined) {
      this.appendGroups.push(this.openGroup);
      this.openGroup = undefined;
    }
    const iov = this.iov;
    iov.length = 0;
    let count = 0;
    let batchBytes = 0;
    while (count < journalBatchRecordsMax && this.queueHead + count < this.queue.length) {
      const record = this.queue[this.queueHead + count];
      assert(record !== undefined, "queued record");
      const recordBytes = encodedRecordBytes(record);
      if (count > 0 && (batchBytes + recordBytes > journalBatchBytesMax || segment.sizeBytes + batchBytes + recordBytes > this.segmentBytesMax)) break;
      const header = this.headerViews[count];
      assert(header !== undefined, "header slab holds a batch");
      encodeRecordHeader(record, header, 0);
      iov.push(header);
      if (record.payload.length > 0) iov.push(record.payload);
      count += 1;
      batchBytes += recordBytes;
    }
    const positionBytes = segment.sizeBytes;
    if (batchBytes <= journalSyncWriteBytesMax) this.writeFullyNow(iov, positionBytes, batchBytes);
    else await this.writeFully(iov, positionBytes, batchBytes);
    // fail() (an fdatasync error, abandon) already rejected this batch's appends and
    // cleared the queue: nothing more to book.
    if (this.failure !== undefined) return;
    this.writevCountValue += 1;
    this.bytesWrittenValue += batchBytes;
    // Book the batch: index, sizes, sequence, then release the queue slots.
    let offsetBytes = positionBytes;
    let lastSequence = this.writtenSequenceValue;
    for (let i = 0; i < count; i += 1) {
      const index = this.queueHead + i;
      const record = this.queue[index];
      assert(record !== undefined, "written record");
      assert(record.sequence === lastSequence + 1, "records are written in sequence order");
      const recordBytes = encodedRecordBytes(record);
      indexRecord(segment, record.sequence, offsetBytes, recordBytes);
      offsetBytes += recordBytes;
      lastSequence = record.sequence;
    }
    assert(offsetBytes === positionBytes + batchBytes, "batch bytes add up");
    this.queueHead += count;
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead >= journalBatchRecordsMax * 4) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    this.queuedBytes -= batchBytes;
    this.diskBytes += batchBytes;
    segment.sizeBytes = offsetBytes;
    segment.lastSequence = lastSequence;
    this.writtenSequenceValue = lastSequence;
    this.unsyncedBytes += batchBytes;
    iov.length = 0;
    this.settleAppendGroups();
    this.kickSync();
    // A full segment is left now, not at the next append: a full journal can then trim
    // everything but a segment under a quarter of its size, so a largest record always
    // fits again once the trim floor allows (journalBytesMin, limits.ts).
    if (segment.sizeBytes >= this.segmentBytesMax) await this.roll();
  }

  /**
   * writeFully on the main thread, for small batches: a page-cache copy of a few tens of
   * microseconds costs less than the thread-pool hop, which also left the event loop idle
   * while the host waited for the batch (fio 4 KiB randwrite QD32: tidemark CPU per write
   * 48-57 -> 38-52 µs, p99 15 -> 4-13 ms).
   */
  private writeFullyNow(iov: Buffer[], positionBytes: number, totalBytes: number): void {
    let buffers = iov;
    let doneBytes = 0;
    for (;;) {
      const bytesWritten = this.activeHandle.writevSync(buffers, positionBytes + doneBytes);
      doneBytes += bytesWritten;
      if (doneBytes === totalBytes) return;
      assert(doneBytes < totalBytes, "writev never writes more than asked");
      if (bytesWritten === 0) throw Object.assign(new Error(`journal ${this.dir}: writev made no progress at byte ${positionBytes + doneBytes}`), { code: "EIO" });
      buffers = skipBytes(buffers, bytesWritten);
    }
  }

  /** One writev; a short write (libuv already retries) is continued, no progress is an error. */
  private async writeFully(iov: Buffer[], positionBytes: number, totalBytes: number): Promise<void> {
    let buffers = iov;
    let doneBytes = 0;
    for (;;) {
      const bytesWritten = await this.activeHandle.writev(buffers, positionBytes + doneBytes);
      doneBytes += bytesWritten;
      if (doneBytes === totalBytes) return;
      assert(doneBytes < totalBytes, "writev never writes more than asked");
      if (bytesWritten === 0) throw Object.assign(new Error(`journal ${this.dir}: writev made no progress at byte ${positionBytes + doneBytes}`), { code: "EIO" });
      buffers = skipBytes(buffers, bytesWritten);
    }
  }

  private settleAppendGroups(): void {
    let settled = 0;
    for (const group of this.appendGroups) {
      if (group.sequence > this.writtenSequenceValue) break;
      group.resolve();
      settled += 1;
    }
    if (settled > 0) this.appendGroups.splice(0, settled);
  }

  private activeSegment(): Segment {
    const segment = this.segments[this.segments.length - 1];
    assert(segment !== undefined, "journal has an active segment");
    return segment;
  }

  /**
   * Leaves the active segment for a new one: fdatasync it (so no non-last segment can
   * have a torn tail), close it, create the next file and fsync the directory.
   */
  private async roll(): Promise<void> {
    const old = this.activeSegment();
    assert(old.lastSequence === this.writtenSequenceValue, "every queued write to the old segment is done");
    this.rolling = true;
    const finished = Promise.withResolvers<void>();
    this.rollFinished = finished.promise;
    try {
      if (this.syncInFlight !== undefined) await this.syncInFlight;
      this.throwIfFailed();
      this.fsyncCountValue += 1;
      this.unsyncedBytes = 0;
      await this.activeHandle.datasync();
      this.markDurable(old.lastSequence);
      await this.activeHandle.close();
      const first = old.lastSequence + 1;
      const path = join(this.dir, segmentFileName(first));
      this.activeHandle = await this.fileSystem.open(path, "create-exclusive");
      this.segments.push(newSegment(first, path));
      await this.fileSystem.syncDirectory(this.dir);
    } finally {
      this.rolling = false;
      this.rollFinished = undefined;
      finished.resolve();
    }
    this.kickSync();
  }

  // ---- sync ----------------------------------------------------------------------------

  /**
   * Group commit: resolves once every record appended before this call is durable.
   * Concurrent callers share fdatasyncs; never one per record.
   */
  sync(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const target = this.lastAppendedSequence;
    if (this.durableSequenceValue >= target) return Promise.resolve();
    if (this.closed) return Promise.reject(new JournalClosedError(this.dir));
    const last = this.syncWaiters[this.syncWaiters.length - 1];
    if (last !== undefined && last.sequence === target) return last.promise;
    const waiter = newWaiter(target);
    this.syncWaiters.push(waiter);
    this.kickSync();
    return waiter.promise;
  }

  /** Starts an fdatasync if none runs and the oldest waiter's records are all written. */
  private kickSync(): void {
    if (this.syncInFlight !== undefined || this.rolling || this.failure !== undefined) return;
    const oldest = this.syncWaiters[0];
    const waiterReady = oldest !== undefined && oldest.sequence <= this.writtenSequenceValue;
    if (!waiterReady && this.unsyncedBytes < journalBackgroundSyncBytes) return;
    // Covers the writes completed before it starts; later ones wait for the next one.
    const covered = this.writtenSequenceValue;
    this.fsyncCountValue += 1;
    this.unsyncedBytes = 0;
    this.syncInFlight = this.activeHandle.datasync().then(
      () => {
        this.syncInFlight = undefined;
        this.markDurable(covered);
        this.kickSync();
      },
      (error: unknown) => {
        this.syncInFlight = undefined;
        // After a failed fdatasync the page cache may have dropped the data: no retry can
        // prove it durable (the "fsyncgate" lesson), so the journal stops.
        this.fail(error as Error);
      },
    );
  }

  private markDurable(sequence: number): void {
    assert(sequence <= this.writtenSequenceValue, "only written records become durable");
    if (sequence > this.durableSequenceValue) this.durableSequenceValue = sequence;
    let settled = 0;
    for (const waiter of this.syncWaiters) {
      if (waiter.sequence > this.durableSequenceValue) break;
      waiter.resolve();
      settled += 1;
    }
    if (settled > 0) this.syncWaiters.splice(0, settled);
    settled = 0;
    for (const watcher of this.durableWatchers) {
      if (watcher.sequence > this.durableSequenceValue) break;
      watcher.resolve();
      settled += 1;
    }
    if (settled > 0) this.durableWatchers.splice(0, settled);
  }

  /**
   * Resolves once `sequence` (appended already) is durable, without asking for an
   * fdatasync: whatever makes the journal durable next (a sync() caller's group commit, the
   * background sync every 32 MiB, a segment roll) settles it. Watchers share one promise per
   * sequence and are settled in sequence order; a failure rejects them.
   */
  whenDurable(sequence: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    // An append refused outright (full, closed) took no sequence: nothing will make it durable.
    if (sequence > this.lastAppendedSequence) return Promise.reject(this.closing ? new JournalClosedError(this.dir) : new Error(`journal ${this.dir}: sequence ${sequence} was not appended`));
    if (sequence <= this.durableSequenceValue) return Promise.resolve();
    const last = this.durableWatchers[this.durableWatchers.length - 1];
    if (last !== undefined && last.sequence >= sequence) {
      // Appends are in sequence order, so watchers are too: a later one covers this one.
      if (last.sequence === sequence) return last.promise;
      assert(false, "durable watchers are registered in sequence order");
    }
    const watcher = newWaiter(sequence);
    watcher.promise.catch(() => undefined);
    this.durableWatchers.push(watcher);
    return watcher.promise;
  }

  // ---- failure and close -----------------------------------------------------------------

  /**
   * Called once when a write or an fdatasync of the journal fails (not for abandon() or
   * close()): whoever owns the group stops it, whichever caller met the error first. A
   * failure seen only by a caller that merely reported it (the pair's sync before a
   * handshake, on an idle group) otherwise left the group "ok" with a dead journal, and the
   * pair retried for ever (whole-node simulation).
   */
  onFailure: ((error: Error) => void) | undefined;

  private fail(error: Error, notify = true): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    const onFailure = this.onFailure;
    // Later, not inside the journal's own bookkeeping: the owner may abandon the journal.
    if (notify && onFailure !== undefined) queueMicrotask(() => onFailure(error));
    const waiters = [...this.appendGroups, ...this.syncWaiters, ...this.durableWatchers];
    if (this.openGroup !== undefined) waiters.push(this.openGroup);
    this.appendGroups.length = 0;
    this.syncWaiters.length = 0;
    this.durableWatchers.length = 0;
    this.openGroup = undefined;
    this.queue.length = 0;
    this.queueHead = 0;
    this.queuedBytes = 0;
    for (const waiter of waiters) waiter.reject(error);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Waits until no write, no fdatasync and no trim is in flight. */
  private async quiesce(): Promise<void> {
    while (this.writer !== undefined || this.syncInFlight !== undefined || this.trims.size > 0) {
      await this.writer;
      await this.syncInFlight;
      await Promise.all(this.trims);
    }
  }

  /**
   * Finishes queued writes, fdatasyncs them and closes the file. Later appends reject.
   * The file is closed in every case; if the journal failed (before or during close),
   * close rejects with that error, so nobody takes the close for "all durable".
   */
  close(): Promise<void> {
    this.closePromise ??= this.closeOnce(false);
    return this.closePromise;
  }

  /**
   * For crash tests: stops at once, as kill -9 would. Nothing more is written or synced
   * (writes already handed to the kernel may still land); every pending append and sync
   * rejects; the file is closed. Reopen the directory to recover.
   */
  abandon(): Promise<void> {
    this.fail(new JournalAbandonedError(this.dir), false);
    this.closePromise ??= this.closeOnce(true);
    return this.closePromise.catch(() => undefined);
  }

  private async closeOnce(abandoning: boolean): Promise<void> {
    this.closing = true;
    try {
      if (!abandoning && this.failure === undefined) await this.sync().catch(() => undefined);
      await this.quiesce();
    } finally {
      this.closed = true;
      await this.activeHandle.close();
    }
    this.throwIfFailed();
  }

  // ---- read and trim ---------------------------------------------------------------------

  /**
   * Records from `sequence` on, read from disk and verified: at least one (if there is
   * one), then as many as fit in maxBytes. By default only durable records are returned
   * (a record not yet durable may vanish in a crash and its sequence be reused, so it must
   * not reach a secondary); pass "written" to read what is written but not yet synced.
   * Records are fresh buffers the caller may keep. Throws JournalTrimmedError below
   * firstSequence.
   */
  async readFrom(sequence: number, maxBytes: number, upTo: "durable" | "written" = "durable"): Promise<JournalRecord[]> {
    if (this.closed) throw new JournalClosedError(this.dir);
    assert(Number.isSafeInteger(sequence) && sequence >= 1, "readFrom takes a positive sequence");
    const boundSequence = upTo === "durable" ? this.durableSequenceValue : this.writtenSequenceValue;
    const records: JournalRecord[] = [];
    let budgetBytes = maxBytes;
    let next = sequence;
    while (next <= boundSequence && (records.length === 0 || budgetBytes > 0)) {
      const segment = this.segmentHolding(next);
      const endSequence = Math.min(segment.lastSequence, boundSequence);
      const segmentRecords = await this.readSegment(segment, next, endSequence, records.length === 0, budgetBytes);
      for (const record of segmentRecords) {
        assert(record.sequence === next, "readFrom returns contiguous records");
        records.push(record);
        budgetBytes -= encodedRecordBytes(record);
        next += 1;
      }
      if (next <= endSequence) break; // the budget ended inside this segment
    }
    return records;
  }

  private segmentHolding(sequence: number): Segment {
    const first = this.segments[0];
    assert(first !== undefined, "journal has a segment");
    if (sequence < first.firstSequence) throw new JournalTrimmedError(this.dir, sequence, first.firstSequence);
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      const candidate = this.segments[mid];
      assert(candidate !== undefined, "segment in range");
      if (candidate.firstSequence <= sequence) lo = mid;
      else hi = mid - 1;
    }
    const segment = this.segments[lo];
    assert(segment !== undefined && segment.firstSequence <= sequence && sequence <= segment.lastSequence, () => `sequence ${sequence} is in a segment`);
    return segment;
  }

  private async readSegment(segment: Segment, fromSequence: number, endSequence: number, needOne: boolean, budgetBytes: number): Promise<JournalRecord[]> {
    const start = indexFloor(segment, fromSequence);
    const endOffsetBytes = segment.sizeBytes;
    let handle: File;
    try {
      // Our own handle: the writer may close the active one when it rolls.
      handle = await this.fileSystem.open(segment.path, "read");
    } catch (error) {
      const first = this.segments[0]?.firstSequence ?? 0;
      if (errorCode(error) === "ENOENT" && fromSequence < first) throw new JournalTrimmedError(this.dir, fromSequence, first);
      throw error;
    }
    const records: JournalRecord[] = [];
    try {
      const skipping = start.sequence < fromSequence;
      const chunkBytes = skipping ? journalReadChunkBytes : Math.max(journalHeaderBytes, Math.min(journalReadChunkBytes, budgetBytes));
      const reader = new SegmentReader(handle, start.offsetBytes, endOffsetBytes, { chunkBytes, reuseBuffer: false });
      let expected = start.sequence;
      let budget = budgetBytes;
      while (expected <= endSequence) {
        const step = await reader.next();
        if (step.kind === "unsupported") throw new JournalFormatError(segment.path, step.offsetBytes, step.reason);
        if (step.kind !== "record") {
          throw new JournalCorruptError(segment.path, step.offsetBytes, step.kind === "end" ? `segment ends before sequence ${expected}` : step.reason);
        }
        if (step.record.sequence !== expected) {
          throw new JournalCorruptError(segment.path, step.offsetBytes, `record has sequence ${step.record.sequence}, expected ${expected}`);
        }
        expected += 1;
        if (step.record.sequence < fromSequence) continue;
        if (step.bytes > budget && !(needOne && records.length === 0)) break;
        records.push(step.record);
        budget -= step.bytes;
      }
    } finally {
      await handle.close();
    }
    return records;
  }

  /** Bytes trimThrough(sequence) would free now: whole non-active segments whose records are all <= sequence. */
  bytesTrimmableThrough(sequence: number): number {
    let bytes = 0;
    for (let i = 0; i < this.segments.length - 1; i += 1) {
      const segment = this.segments[i];
      assert(segment !== undefined, "segment in range");
      if (segment.lastSequence > sequence) break;
      bytes += segment.sizeBytes;
    }
    return bytes;
  }

  /**
   * Bytes trimThrough(sequence) would free: whole segments before the active one, all at or
   * below `sequence` (and the active one while it is being left: trimThrough waits for that).
   */
  trimmableBytes(sequence: number): number {
    let bytes = 0;
    const candidates = this.rolling ? this.segments.length : this.segments.length - 1;
    for (let i = 0; i < candidates; i += 1) {
      const segment = this.segments[i];
      assert(segment !== undefined, "segment in range");
      if (segment.lastSequence > sequence) break;
      bytes += segment.sizeBytes;
    }
    return bytes;
  }

  /**
   * Deletes whole segments whose records all have sequence <= `sequence` (never the active
   * one), oldest first, then fsyncs the directory. A crash part-way leaves a contiguous
   * suffix, which recovery accepts. close() and abandon() wait for trims in progress, and a
   * trim after close() or abandon() does nothing: the directory then belongs to whoever
   * reopens it (a resume), whose recovery must not meet a segment being unlinked under it.
   */
  async trimThrough(sequence: number): Promise<void> {
    if (this.closing) return;
    const trim = this.trimNow(sequence);
    const settled = trim.then(() => undefined, () => undefined);
    this.trims.add(settled);
    try {
      await trim;
    } finally {
      this.trims.delete(settled);
    }
  }

  private async trimNow(sequence: number): Promise<void> {
    if (this.rollFinished !== undefined) await this.rollFinished;
    const victims: Segment[] = [];
    for (;;) {
      const oldest = this.segments[0];
      if (oldest === undefined || this.segments.length === 1 || oldest.lastSequence > sequence) break;
      assert(oldest.lastSequence <= this.durableSequenceValue, "a segment left behind is durable");
      this.segments.shift();
      this.diskBytes -= oldest.sizeBytes;
      victims.push(oldest);
    }
    if (victims.length === 0) return;
    for (const victim of victims) await this.fileSystem.unlink(victim.path);
    await this.fileSystem.syncDirectory(this.dir);
  }
}

/** The buffers left after the first `bytes` bytes of `buffers` (views, no copy). */
function skipBytes(buffers: Buffer[], bytes: number): Buffer[] {
  let left = bytes;
  let i = 0;
  while (i < buffers.length) {
    const buffer = buffers[i];
    assert(buffer !== undefined, "buffer in range");
    if (left < buffer.length) break;
    left -= buffer.length;
    i += 1;
  }
  const rest = buffers.slice(i);
  const head = rest[0];
  if (head !== undefined && left > 0) rest[0] = head.subarray(left);
  return rest;
}
