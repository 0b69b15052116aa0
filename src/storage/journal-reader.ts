// Streams the records of one segment file in chunks: recovery and readFrom use it so
// that memory stays bounded by one chunk (or one largest record), never a segment.
// Every record is verified by the codec (header CRC, then payload CRC) before it is
// handed out; what is not a valid record is reported with its offset, never skipped.
import type { FileHandle } from "node:fs/promises";
import { assert } from "../core/assert.ts";
import { journalRecordPayloadBytesMax } from "../core/limits.ts";
import { decodeRecord, journalHeaderBytes, type JournalRecord } from "../protocol/journal-record.ts";

export type ScanStep =
  | { readonly kind: "record"; readonly record: JournalRecord; readonly offsetBytes: number; readonly bytes: number }
  /** Every byte up to the end was a whole, valid record. */
  | { readonly kind: "end"; readonly offsetBytes: number }
  /** The bytes at offsetBytes are not a whole valid record (torn, or damaged). */
  | { readonly kind: "bad"; readonly offsetBytes: number; readonly reason: string };

export interface SegmentReaderOptions {
  /** Bytes read per call (grown once if one record is larger). */
  readonly chunkBytes: number;
  /**
   * true (recovery): one buffer is reused, so a record's payload is a view that is only
   * valid until the next call to next(). false (readFrom): every chunk is a fresh buffer
   * and records stay valid for as long as the caller keeps them.
   */
  readonly reuseBuffer: boolean;
}

const recordBytesMax = journalHeaderBytes + journalRecordPayloadBytesMax;

export class SegmentReader {
  private readonly handle: FileHandle;
  private readonly endOffsetBytes: number;
  private readonly chunkBytes: number;
  private readonly reuseBuffer: boolean;
  private buffer: Buffer;
  private view: Buffer;
  /** File offset of buffer[0]. */
  private bufferOffsetBytes: number;
  /** Next file offset to read. */
  private readOffsetBytes: number;
  /** Position of the next record in `view`. */
  private at = 0;

  constructor(handle: FileHandle, startOffsetBytes: number, endOffsetBytes: number, options: SegmentReaderOptions) {
    assert(startOffsetBytes >= 0 && startOffsetBytes <= endOffsetBytes, "reader range is ordered");
    assert(options.chunkBytes >= journalHeaderBytes, "a chunk holds at least one header");
    this.handle = handle;
    this.endOffsetBytes = endOffsetBytes;
    this.chunkBytes = options.chunkBytes;
    this.reuseBuffer = options.reuseBuffer;
    this.buffer = Buffer.alloc(0);
    this.view = this.buffer;
    this.bufferOffsetBytes = startOffsetBytes;
    this.readOffsetBytes = startOffsetBytes;
  }

  /** File offset of the next record. */
  get offsetBytes(): number {
    return this.bufferOffsetBytes + this.at;
  }

  async next(): Promise<ScanStep> {
    for (;;) {
      const result = decodeRecord(this.view, this.at);
      if (result.ok) {
        const offsetBytes = this.offsetBytes;
        this.at += result.bytes;
        return { kind: "record", record: result.record, offsetBytes, bytes: result.bytes };
      }
      if (result.reason === "corrupt") return { kind: "bad", offsetBytes: this.offsetBytes, reason: result.detail };
      if (this.readOffsetBytes >= this.endOffsetBytes) {
        if (this.at === this.view.length) return { kind: "end", offsetBytes: this.offsetBytes };
        return { kind: "bad", offsetBytes: this.offsetBytes, reason: `incomplete record: ${this.view.length - this.at} bytes, ${result.bytesNeeded} more needed` };
      }
      await this.fill(result.bytesNeeded);
    }
  }

  /** Keeps the unconsumed tail, then reads at least `bytesNeeded` more (or up to the end). */
  private async fill(bytesNeeded: number): Promise<void> {
    const keptBytes = this.view.length - this.at;
    const remainingBytes = this.endOffsetBytes - this.readOffsetBytes;
    // A chunk, but no more than what is left of the range, and always the whole record asked for.
    const capacityBytes = Math.max(keptBytes + bytesNeeded, Math.min(this.chunkBytes, keptBytes + remainingBytes));
    // The codec checked the header CRC and the length limit before asking for a payload.
    assert(keptBytes + bytesNeeded <= recordBytesMax, "a record never needs more than the largest record");
    let target: Buffer;
    if (this.reuseBuffer && this.buffer.length >= capacityBytes) {
      target = this.buffer;
      target.copyWithin(0, this.at, this.view.length);
    } else {
      target = Buffer.allocUnsafe(capacityBytes);
      this.view.copy(target, 0, this.at);
    }
    this.bufferOffsetBytes += this.at;
    this.at = 0;
    let filledBytes = keptBytes;
    const wantBytes = Math.min(target.length - keptBytes, this.endOffsetBytes - this.readOffsetBytes);
    const stopBytes = keptBytes + wantBytes;
    while (filledBytes < stopBytes) {
      const { bytesRead } = await this.handle.read(target, filledBytes, stopBytes - filledBytes, this.readOffsetBytes);
      if (bytesRead === 0) break; // the file is shorter than we were told: the caller sees an incomplete record
      filledBytes += bytesRead;
      this.readOffsetBytes += bytesRead;
    }
    if (filledBytes < stopBytes) this.readOffsetBytes = this.endOffsetBytes;
    this.buffer = target;
    this.view = target.subarray(0, filledBytes);
  }
}
