// Streams the records of one segment file in chunks: recovery and readFrom use it so
// that memory stays bounded by one chunk (or one largest record), never a segment.
// Every record is verified by the codec (header CRC, then payload CRC) before it is
// handed out; what is not a valid record is reported with its offset, never skipped.
import { assert } from "../core/assert.ts";
import { journalRecordPayloadBytesMax } from "../core/limits.ts";
import { decodeRecord, journalHeaderBytes, journalRecordMagic, type JournalRecord } from "../protocol/journal-record.ts";

export type ScanStep =
  | { readonly kind: "record"; readonly record: JournalRecord; readonly offsetBytes: number; readonly bytes: number }
  /** Every byte up to the end was a whole, valid record. */
  | { readonly kind: "end"; readonly offsetBytes: number }
  /** The bytes at offsetBytes are not a whole valid record (torn, or damaged). */
  | { readonly kind: "bad"; readonly offsetBytes: number; readonly reason: string }
  /** A record written whole (its header checksum is valid) in a format this version does not read. */
  | { readonly kind: "unsupported"; readonly offsetBytes: number; readonly reason: string };

/** What the reader needs of a file: positioned reads resolving with the bytes read (a File, or an O_DIRECT reader). */
export interface PositionedReader {
  read(into: Buffer, offset: number, length: number, position: number): Promise<number>;
}

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
  private readonly handle: PositionedReader;
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

  constructor(handle: PositionedReader, startOffsetBytes: number, endOffsetBytes: number, options: SegmentReaderOptions) {
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
      if (result.reason === "unsupported") return { kind: "unsupported", offsetBytes: this.offsetBytes, reason: result.detail };
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
      const bytesRead = await this.handle.read(target, filledBytes, stopBytes - filledBytes, this.readOffsetBytes);
      if (bytesRead === 0) break; // the file is shorter than we were told: the caller sees an incomplete record
      filledBytes += bytesRead;
      this.readOffsetBytes += bytesRead;
    }
    if (filledBytes < stopBytes) this.readOffsetBytes = this.endOffsetBytes;
    this.buffer = target;
    this.view = target.subarray(0, filledBytes);
  }
}

/** The first bytes of every record: the magic, little-endian. */
const magicBytes = Buffer.alloc(4);
magicBytes.writeUInt32LE(journalRecordMagic, 0);

/**
 * Looks for a record written whole (header and payload checksums valid, or a header in a
 * format this version does not read) anywhere in [fromOffsetBytes, endOffsetBytes) of a
 * segment. Recovery calls it past a bad spot of the last segment: a torn write leaves only
 * garbage or zeroes behind it, so a whole record there means damage in the middle, which
 * must not be cut off as a torn tail. Reads in chunks; memory stays at one chunk plus one
 * largest record. Returns the first such record's offset and sequence, or undefined.
 * Only records with a sequence of at least `sequenceMin` count.
 */
export async function findWholeRecordAfter(
  handle: PositionedReader, fromOffsetBytes: number, endOffsetBytes: number, chunkBytes: number, sequenceMin: number,
): Promise<{ offsetBytes: number; sequence: number | undefined; detail: string } | undefined> {
  assert(chunkBytes >= journalHeaderBytes, "a chunk holds a header");
  const chunk = Buffer.allocUnsafe(chunkBytes + journalHeaderBytes);
  let chunkStartBytes = fromOffsetBytes;
  while (chunkStartBytes < endOffsetBytes) {
    const wantBytes = Math.min(chunk.length, endOffsetBytes - chunkStartBytes);
    const bytesRead = await handle.read(chunk, 0, wantBytes, chunkStartBytes);
    if (bytesRead === 0) return undefined;
    const view = chunk.subarray(0, bytesRead);
    for (let at = view.indexOf(magicBytes); at >= 0; at = view.indexOf(magicBytes, at + 1)) {
      // A hit near the end of the chunk is looked at again at the start of the next one.
      if (at + journalHeaderBytes > view.length && chunkStartBytes + bytesRead < endOffsetBytes) break;
      let result = decodeRecord(view, at);
      if (!result.ok && result.reason === "truncated" && at + journalHeaderBytes <= view.length) {
        // The header is whole and valid; read the record alone to check its payload.
        const recordBytes = journalHeaderBytes + result.bytesNeeded + (view.length - at - journalHeaderBytes);
        if (recordBytes > recordBytesMax || chunkStartBytes + at + recordBytes > endOffsetBytes) continue;
        const whole = Buffer.allocUnsafe(recordBytes);
        const wholeBytesRead = await handle.read(whole, 0, recordBytes, chunkStartBytes + at);
        result = decodeRecord(whole.subarray(0, wholeBytesRead), 0);
      }
      // Host data may hold bytes that look like a record (a journal stored on a volume): only a
      // record that would come after the bad one in this journal counts.
      if (result.ok && result.record.sequence >= sequenceMin) return { offsetBytes: chunkStartBytes + at, sequence: result.record.sequence, detail: `record of sequence ${result.record.sequence}` };
      if (!result.ok && result.reason === "unsupported") return { offsetBytes: chunkStartBytes + at, sequence: undefined, detail: result.detail };
    }
    if (chunkStartBytes + bytesRead >= endOffsetBytes) return undefined;
    // Overlap by a header so a record starting near the end of this chunk is seen whole.
    chunkStartBytes += Math.max(1, bytesRead - journalHeaderBytes);
  }
  return undefined;
}
