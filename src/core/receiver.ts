// The secondary's receiver for one group (patent Fig. 6 steps 1102-1105, Fig. 8, [0036]).
// Records come in any order, duplicated, or again after a reconnect. The receiver drops
// duplicates, keeps out-of-order records in a bounded reorder buffer, and hands back the
// contiguous run that the shell appends to the group's journal. Only records the shell
// has made durable (markDurable, after the journal's fdatasync) count as arrived: the
// arrived sequence and position are the contiguous *durable* prefix, so the frontier is
// a function of the durable journals alone (crash-safe reflection).
//
// Pure and synchronous: the shell owns the journal, the sockets and the ACKs.
//
//   const r = new GroupReceiver({ startSequence, startPosition, recordBytes });
//   const res = r.receive(batch);          // ok: res.append -> journal; not ok: close/throttle the stream
//   ... journal.append(res.append); await fdatasync ...
//   r.markDurable(lastAppendedSequence);   // then ACK with r.arrivedSequence
//
// Recovery after a restart: construct again with startSequence = arrived + 1 and
// startPosition = the position of record `arrived` (from the journal, or from the
// reflected checkpoint if the journal was trimmed empty).
import { assert } from "./assert.ts";
import { replDurablePendingRecordsMax, replReorderBytesMax, replReorderRecordsMax } from "./limits.ts";
import { comparePositions, formatPosition, positionOf, type Position } from "./position.ts";
import { asSequence, type SequenceNumber } from "./types.ts";

/** What the receiver needs of a record: its sequence and its position. */
export interface SequencedRecord extends Position {
  readonly sequence: SequenceNumber;
}

export interface ReceiverOptions<R extends SequencedRecord> {
  /** The first sequence of this group's stream: 1, or S0 + 1 after an initial copy, or arrived + 1 on recovery. */
  readonly startSequence: SequenceNumber;
  /**
   * The position of record startSequence - 1 (positionZero when there is none). Until a
   * record arrives this is the group's arrived position, so it holds the frontier there:
   * with positionZero a group that never received anything lets nothing be reflected in
   * time mode, which is right, since its first record may come before any other's.
   */
  readonly startPosition: Position;
  /** Bytes a record takes in memory (for JournalRecord: encodedRecordBytes). */
  readonly recordBytes: (record: R) => number;
  readonly reorderRecordsMax?: number;
  readonly reorderBytesMax?: number;
  readonly durablePendingRecordsMax?: number;
}

export type ReceiveRefusal =
  /** The reorder buffer would pass its record or byte bound: close or throttle the stream. */
  | "reorder-records-full"
  | "reorder-bytes-full"
  /** Too many records handed out and not yet made durable: fdatasync, then try again. */
  | "durable-pending-full"
  /** The peer sent nonsense: fail the pair. */
  | "bad-sequence"
  | "position-not-increasing";

export type ReceiveResult<R> =
  | {
      readonly ok: true;
      /** Append these to the journal, in this order (consecutive sequences from handedOut+1). */
      readonly append: readonly R[];
      /** Records dropped: at or below what was handed out, already buffered, or twice in the batch. */
      readonly duplicates: number;
      /** Records this batch left in the reorder buffer (past a gap). */
      readonly buffered: number;
    }
  | { readonly ok: false; readonly reason: ReceiveRefusal; readonly detail: string };

interface Pending {
  readonly sequence: SequenceNumber;
  readonly position: Position;
}

export class GroupReceiver<R extends SequencedRecord> {
  private readonly recordBytes: (record: R) => number;
  private readonly reorderRecordsMax: number;
  private readonly reorderBytesMax: number;
  private readonly durablePendingRecordsMax: number;
  /** Highest sequence handed out for appending (contiguous; maybe not durable yet). */
  private handedOut: number;
  private handedOutPosition: Position;
  private arrived: number;
  private arrivedPos: Position;
  /** Out-of-order records, keyed by sequence; every key is > handedOut. */
  private readonly reorder = new Map<number, R>();
  private reorderBytesValue = 0;
  /** Handed-out records awaiting durability, in sequence order; head index avoids shifting. */
  private pending: Pending[] = [];
  private pendingHead = 0;

  constructor(options: ReceiverOptions<R>) {
    assert(Number.isSafeInteger(options.startSequence) && options.startSequence >= 1, "start sequence is >= 1");
    this.recordBytes = options.recordBytes;
    this.reorderRecordsMax = options.reorderRecordsMax ?? replReorderRecordsMax;
    this.reorderBytesMax = options.reorderBytesMax ?? replReorderBytesMax;
    this.durablePendingRecordsMax = options.durablePendingRecordsMax ?? replDurablePendingRecordsMax;
    assert(this.reorderRecordsMax >= 0 && this.reorderBytesMax >= 0 && this.durablePendingRecordsMax >= 1, "receiver limits are sane");
    this.handedOut = options.startSequence - 1;
    this.arrived = this.handedOut;
    this.handedOutPosition = positionOf(options.startPosition);
    this.arrivedPos = this.handedOutPosition;
  }

  /** Highest sequence of the contiguous durable prefix (patent: what arrived write time 350 belongs to). */
  get arrivedSequence(): SequenceNumber {
    return asSequence(this.arrived);
  }
  /** Position of record arrivedSequence (or the start position): the group's input to the frontier. */
  get arrivedPosition(): Position {
    return this.arrivedPos;
  }
  /** Highest sequence handed out to the journal (durable or not). */
  get handedOutSequence(): SequenceNumber {
    return asSequence(this.handedOut);
  }
  /** The next sequence the group needs (for a PULL or a status line). */
  get nextSequence(): SequenceNumber {
    return asSequence(this.handedOut + 1);
  }
  get reorderRecords(): number {
    return this.reorder.size;
  }
  get reorderBytes(): number {
    return this.reorderBytesValue;
  }
  get durablePendingRecords(): number {
    return this.pending.length - this.pendingHead;
  }

  /**
   * Takes one batch (records in any order). All or nothing: a refused batch changes no
   * state, and the shell closes or throttles the stream it came on; the sender resends
   * what was lost. A batch that starts at nextSequence is never refused for space (what it
   * brings is handed out, not buffered), so the gap always gets filled.
   */
  receive(records: readonly R[]): ReceiveResult<R> {
    const fresh = new Map<number, R>();
    let duplicates = 0;
    for (const record of records) {
      const seq = record.sequence;
      if (!Number.isSafeInteger(seq) || seq < 1) return { ok: false, reason: "bad-sequence", detail: `sequence ${String(seq)}` };
      if (!Number.isSafeInteger(record.writeTimeUs) || record.writeTimeUs < 0 || !Number.isSafeInteger(record.acceptNumber) || record.acceptNumber < 1) {
        return { ok: false, reason: "bad-sequence", detail: `record ${seq} carries a bad position` };
      }
      if (seq <= this.handedOut || this.reorder.has(seq) || fresh.has(seq)) {
        duplicates += 1;
        continue;
      }
      fresh.set(seq, record);
    }

    // The run that becomes contiguous, from the batch and the buffer together.
    const run: R[] = [];
    let drainedBytes = 0;
    let drainedRecords = 0;
    let lastPosition = this.handedOutPosition;
    for (let seq = this.handedOut + 1; ; seq += 1) {
      const fromBatch = fresh.get(seq);
      const record = fromBatch ?? this.reorder.get(seq);
      if (record === undefined) break;
      if (comparePositions(record, lastPosition) <= 0) {
        return {
          ok: false,
          reason: "position-not-increasing",
          detail: `record ${seq} at ${formatPosition(record)} is not after ${formatPosition(lastPosition)}`,
        };
      }
      lastPosition = record;
      run.push(record);
      if (fromBatch === undefined) {
        drainedBytes += this.recordBytes(record);
        drainedRecords += 1;
      }
    }

    // What is left of the batch lies past a gap and must be buffered.
    let addBytes = 0;
    let addRecords = 0;
    const runEnd = this.handedOut + run.length;
    for (const [seq, record] of fresh) {
      if (seq > runEnd) {
        addBytes += this.recordBytes(record);
        addRecords += 1;
      }
    }
    const recordsAfter = this.reorder.size - drainedRecords + addRecords;
    const bytesAfter = this.reorderBytesValue - drainedBytes + addBytes;
    if (addRecords > 0 && recordsAfter > this.reorderRecordsMax) {
      return { ok: false, reason: "reorder-records-full", detail: `${recordsAfter} records past a gap, limit ${this.reorderRecordsMax}` };
    }
    if (addRecords > 0 && bytesAfter > this.reorderBytesMax) {
      return { ok: false, reason: "reorder-bytes-full", detail: `${bytesAfter} bytes past a gap, limit ${this.reorderBytesMax}` };
    }
    if (this.durablePendingRecords + run.length > this.durablePendingRecordsMax) {
      return {
        ok: false,
        reason: "durable-pending-full",
        detail: `${this.durablePendingRecords + run.length} records awaiting fdatasync, limit ${this.durablePendingRecordsMax}`,
      };
    }

    // Commit.
    for (const record of run) {
      const seq = record.sequence;
      assert(seq === this.handedOut + 1, "I2: only the next sequence is handed out, never one past a gap");
      if (this.reorder.delete(seq)) this.reorderBytesValue -= this.recordBytes(record);
      this.handedOut = seq;
      this.handedOutPosition = positionOf(record);
      this.pending.push({ sequence: seq, position: this.handedOutPosition });
    }
    for (const [seq, record] of fresh) {
      if (seq > runEnd) {
        this.reorder.set(seq, record);
        this.reorderBytesValue += this.recordBytes(record);
      }
    }
    assert(this.reorder.size === recordsAfter && this.reorderBytesValue === bytesAfter, "reorder accounting matches the plan");
    assert(this.reorder.size <= this.reorderRecordsMax || addRecords === 0, "reorder buffer never grows past its bound");
    assert(!this.reorder.has(this.handedOut + 1), "nothing buffered is next in line after a run");
    return { ok: true, append: run, duplicates, buffered: addRecords };
  }

  /**
   * The shell's fdatasync made every handed-out record through `sequence` durable.
   * `sequence` must be a handed-out sequence; calls at or below arrived are no-ops.
   */
  markDurable(sequence: SequenceNumber): void {
    assert(Number.isSafeInteger(sequence) && sequence <= this.handedOut, "only handed-out records become durable");
    if (sequence <= this.arrived) return;
    let last: Pending | undefined;
    while (this.pendingHead < this.pending.length) {
      const head = this.pending[this.pendingHead];
      assert(head !== undefined, "pending entry exists");
      if (head.sequence > sequence) break;
      last = head;
      this.pendingHead += 1;
    }
    assert(last !== undefined && last.sequence === sequence, "durable sequence was handed out and pending");
    assert(comparePositions(last.position, this.arrivedPos) > 0, "arrived position moves forward with the sequence");
    this.arrived = sequence;
    this.arrivedPos = last.position;
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /**
   * Forgets the out-of-order records (a full reconnect: the sender resends everything
   * after the handshake's arrived sequence). Handed-out records stay; they are the shell's.
   */
  resetReorderBuffer(): void {
    this.reorder.clear();
    this.reorderBytesValue = 0;
  }
}
