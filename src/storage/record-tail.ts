// The newest journal records kept in memory, so the sender (primary) and the reflector
// (secondary) read what was just appended without a trip to the disk and the thread pool.
// Bounded by bytes: past the bound the oldest records are dropped from memory (they stay
// in the journal, where readers fall back to). Payloads are always copied: front ends may
// reuse their buffers once a write is answered (the NBD server recycles large-payload arenas),
// and socket chunks must not be pinned.
import { assert } from "../core/assert.ts";
import { encodedRecordBytes, type JournalRecord } from "../protocol/journal-record.ts";

export class RecordTail {
  private readonly bytesMax: number;
  private records: (JournalRecord | undefined)[] = [];
  private head = 0;
  private bytes = 0;

  constructor(bytesMax: number) {
    assert(bytesMax > 0, "tail bound is positive");
    this.bytesMax = bytesMax;
  }

  get firstSequence(): number | undefined {
    return this.records[this.head]?.sequence;
  }

  get lastSequence(): number | undefined {
    return this.records[this.records.length - 1]?.sequence;
  }

  get size(): number {
    return this.records.length - this.head;
  }

  get heldBytes(): number {
    return this.bytes;
  }

  /** Appends the next record (sequence last + 1); a break in sequence starts the tail afresh. */
  push(record: JournalRecord): void {
    const last = this.lastSequence;
    if (last !== undefined && record.sequence !== last + 1) this.clear();
    const payload = record.payload.length === 0 ? record.payload : Buffer.from(record.payload);
    this.records.push({ ...record, payload });
    this.bytes += encodedRecordBytes(record);
    while (this.bytes > this.bytesMax && this.size > 1) this.dropHead();
  }

  /** Forgets records at or below `sequence` (acknowledged or reflected). */
  dropThrough(sequence: number): void {
    while (this.size > 0 && (this.records[this.head]?.sequence ?? Infinity) <= sequence) this.dropHead();
  }

  clear(): void {
    this.records = [];
    this.head = 0;
    this.bytes = 0;
  }

  /**
   * Records from `fromSequence` on, at most `bytesMax` (at least one) and none past
   * `lastSequenceMax`; undefined when `fromSequence` is not in memory.
   */
  read(fromSequence: number, bytesMax: number, lastSequenceMax: number): JournalRecord[] | undefined {
    const first = this.firstSequence;
    if (first === undefined || fromSequence < first || fromSequence > (this.lastSequence ?? 0)) return undefined;
    const out: JournalRecord[] = [];
    let bytes = 0;
    for (let i = this.head + (fromSequence - first); i < this.records.length; i++) {
      const record = this.records[i];
      assert(record !== undefined && record.sequence === fromSequence + out.length, "tail is contiguous");
      if (record.sequence > lastSequenceMax) break;
      const recordBytes = encodedRecordBytes(record);
      if (out.length > 0 && bytes + recordBytes > bytesMax) break;
      out.push(record);
      bytes += recordBytes;
    }
    return out;
  }

  private dropHead(): void {
    const record = this.records[this.head];
    assert(record !== undefined, "dropping from a non-empty tail");
    this.bytes -= encodedRecordBytes(record);
    this.records[this.head] = undefined; // let the payload go
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }
}
