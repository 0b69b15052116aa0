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
  /** The journal has no room for what this batch would hand out: nothing taken; NACK NO_SPACE, resent when there is room. */
  | "journal-full"
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
  | {
      readonly ok: false;
      readonly reason: ReceiveRefusal;
      readonly detail: string;
      /** journal-full: the journal room the batch needs (what would be handed out up to its last record). */
      readonly bytesNeeded?: number;
    };

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
  /** The latest position of any record held, past a gap too (only the simulation's ignore-gaps fault reads it). */
  get maxReceivedPosition(): Position {
    let max = this.handedOutPosition;
    for (const record of this.reorder.values()) if (comparePositions(record, max) > 0) max = positionOf(record);
    return max;
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
   * Whether the next record in line (nextSequence) is held here, ready to be handed out,
   * but the journal had no room for it: drain() hands it out once there is.
   */
  get parked(): boolean {
    return this.reorder.has(this.handedOut + 1);
  }

  /**
   * Takes one batch (records in any order). All or nothing: a refused batch changes no
   * state, and the shell answers NACK; the sender resends what was refused. A batch that
   * starts at nextSequence is never refused for the reorder buffer (what it brings is
   * handed out, not buffered), so the gap always gets filled.
   *
   * Back-pressure: `appendBytesMax` is what the journal can take now (checked BEFORE
   * anything is handed out, so the receiver and the journal never disagree). The records
   * handed out stop within it. If a record of this batch would be handed out past it, the
   * batch is refused ("journal-full") and nothing changes; records of the buffer after the
   * batch's last one stay buffered instead ("parked": drain() hands them out as the
   * journal frees), so a long buffered run never makes a gap-filling batch unacceptable.
   */
  receive(records: readonly R[], appendBytesMax: number = Number.POSITIVE_INFINITY): ReceiveResult<R> {
    assert(appendBytesMax >= 0, "append budget is not negative");
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

    // The run that becomes contiguous, from the batch and the buffer together, cut where the
    // journal's room ends; past the cut only buffered records may remain (they stay parked).
    const run: R[] = [];
    let runBytes = 0;
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
      const bytes = this.recordBytes(record);
      if (runBytes + bytes > appendBytesMax) {
        // Refused if a record of this batch is at or after the cut (it would have to wait in
        // memory for journal space); a run of buffered records alone just stops here.
        let continuedBytes = runBytes;
        let neededBytes = 0;
        for (let later = seq; ; later += 1) {
          const next = fresh.get(later) ?? this.reorder.get(later);
          if (next === undefined) break;
          continuedBytes += this.recordBytes(next);
          if (fresh.has(later)) neededBytes = continuedBytes;
        }
        if (neededBytes > 0) {
          return { ok: false, reason: "journal-full", detail: `${neededBytes} bytes to journal from sequence ${this.handedOut + 1}, room for ${appendBytesMax}`, bytesNeeded: neededBytes };
        }
        break;
      }
      lastPosition = record;
      run.push(record);
      runBytes += bytes;
      if (fromBatch === undefined) {
        drainedBytes += bytes;
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
    this.handOut(run);
    for (const [seq, record] of fresh) {
      if (seq > runEnd) {
        this.reorder.set(seq, record);
        this.reorderBytesValue += this.recordBytes(record);
      }
    }
    assert(this.reorder.size === recordsAfter && this.reorderBytesValue === bytesAfter, "reorder accounting matches the plan");
    assert(this.reorder.size <= this.reorderRecordsMax || addRecords === 0, "reorder buffer never grows past its bound");
    assert(runBytes <= appendBytesMax, "never more is handed out than the journal can take");
    assert(!fresh.has(this.handedOut + 1), "no record of the batch waits next in line: it was handed out or the batch refused");
    return { ok: true, append: run, duplicates, buffered: addRecords };
  }

  /**
   * Hands out parked records (buffered, next in line) within `appendBytesMax`: call when
   * the journal freed room. Empty when nothing is parked or the next one does not fit yet.
   * Buffered records were not checked against each other yet: one whose position does not
   * follow is dropped with everything buffered after it (`dropped`; the sender resends
   * them, and receive() refuses them if the peer is really broken).
   */
  drain(appendBytesMax: number): { readonly append: readonly R[]; readonly dropped: number } {
    assert(appendBytesMax >= 0, "append budget is not negative");
    const run: R[] = [];
    let runBytes = 0;
    let lastPosition = this.handedOutPosition;
    let dropped = 0;
    for (let seq = this.handedOut + 1; this.durablePendingRecords + run.length < this.durablePendingRecordsMax; seq += 1) {
      const record = this.reorder.get(seq);
      if (record === undefined) break;
      if (comparePositions(record, lastPosition) <= 0) {
        for (const [later, buffered] of this.reorder) {
          if (later < seq) continue;
          this.reorder.delete(later);
          this.reorderBytesValue -= this.recordBytes(buffered);
          dropped += 1;
        }
        break;
      }
      const bytes = this.recordBytes(record);
      if (runBytes + bytes > appendBytesMax) break;
      lastPosition = record;
      run.push(record);
      runBytes += bytes;
    }
    this.handOut(run);
    return { append: run, dropped };
  }

  private handOut(run: readonly R[]): void {
    for (const record of run) {
      const seq = record.sequence;
      assert(seq === this.handedOut + 1, "I2: only the next sequence is handed out, never one past a gap");
      if (this.reorder.delete(seq)) this.reorderBytesValue -= this.recordBytes(record);
      this.handedOut = seq;
      this.handedOutPosition = positionOf(record);
      this.pending.push({ sequence: seq, position: this.handedOutPosition });
    }
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
