// The journal record (patent: write data management information 330, Fig. 5 and 17):
// a fixed 64-byte header, checksummed on its own, then the payload, checksummed too.
// The same encoding is stored in journal segments and carried by replication batches,
// so a record is self-describing wherever it is.
//
//   0  u32 magic 'TMJR'          32 u64 writeTimeUs
//   4  u8  version (1)           40 u64 acceptNumber
//   5  u8  kind                  48 u64 markerNumber (0 unless kind = marker)
//   6  u16 reserved (0)          56 u32 payload CRC-32 (0 when there is no payload)
//   8  u32 volumeId              60 u32 header CRC-32 of bytes 0..59
//  12  u32 lengthBytes
//  16  u64 offsetBytes
//  24  u64 sequence
// All little-endian. A write's payload has lengthBytes bytes; other kinds have none.
import { journalRecordBytesMax, journalRecordPayloadBytesMax } from "../core/limits.ts";
import { assert } from "../core/assert.ts";
import {
  asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs,
  type AcceptNumber, type MarkerNumber, type SequenceNumber, type VolumeId, type WriteTimeUs,
} from "../core/types.ts";
import { checksum, readU64LE, writeU64LE } from "./bytes.ts";

export const journalRecordMagic = 0x524a4d54; // "TMJR" read little-endian
export const journalRecordVersion = 1;
export const journalHeaderBytes = 64;
assert(journalHeaderBytes + journalRecordPayloadBytesMax === journalRecordBytesMax, "limits.ts counts the record header right");

export const RecordKind = {
  /** Host data for [offset, offset+length). */
  write: 1,
  /** Zeroes for [offset, offset+length) (NBD WRITE_ZEROES and TRIM). */
  zeroes: 2,
  /** A consistency point: shipped and ordered, never applied to a volume. */
  marker: 3,
  /** Moves a group's arrived write time on when it has no writes (heartbeat). */
  timeAdvance: 4,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];
const kinds = new Set<number>(Object.values(RecordKind));

export interface JournalRecord {
  readonly kind: RecordKind;
  readonly volumeId: VolumeId;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly sequence: SequenceNumber;
  readonly writeTimeUs: WriteTimeUs;
  readonly acceptNumber: AcceptNumber;
  readonly markerNumber: MarkerNumber;
  /** The data of a write; empty for the other kinds. */
  readonly payload: Buffer;
}

export type DecodeResult =
  | { readonly ok: true; readonly record: JournalRecord; readonly bytes: number }
  | { readonly ok: false; readonly reason: "truncated"; readonly bytesNeeded: number }
  | { readonly ok: false; readonly reason: "corrupt"; readonly detail: string }
  /**
   * The header's checksum is valid, so these bytes were written whole, but this version of
   * tidemark does not know their format (a newer record version or kind) or their fields
   * break the format's rules. Never a torn write: recovery must not cut it off.
   */
  | { readonly ok: false; readonly reason: "unsupported"; readonly detail: string };

export function recordPayloadBytes(kind: RecordKind, lengthBytes: number): number {
  return kind === RecordKind.write ? lengthBytes : 0;
}

/** Total encoded size of a record. */
export function encodedRecordBytes(record: Pick<JournalRecord, "kind" | "lengthBytes">): number {
  return journalHeaderBytes + recordPayloadBytes(record.kind, record.lengthBytes);
}

/** Encodes the header into `out` at `at` (64 bytes); the payload is written separately (writev). */
export function encodeRecordHeader(record: JournalRecord, out: Buffer = Buffer.allocUnsafe(journalHeaderBytes), at = 0): Buffer {
  const payloadBytes = recordPayloadBytes(record.kind, record.lengthBytes);
  if (record.payload.length !== payloadBytes) throw new RangeError(`payload is ${record.payload.length} bytes, kind ${record.kind} needs ${payloadBytes}`);
  if (record.lengthBytes > journalRecordPayloadBytesMax && record.kind === RecordKind.write) throw new RangeError("record payload over the limit");
  out.writeUInt32LE(journalRecordMagic, at);
  out.writeUInt8(journalRecordVersion, at + 4);
  out.writeUInt8(record.kind, at + 5);
  out.writeUInt16LE(0, at + 6);
  out.writeUInt32LE(record.volumeId, at + 8);
  out.writeUInt32LE(record.lengthBytes, at + 12);
  writeU64LE(out, record.offsetBytes, at + 16);
  writeU64LE(out, record.sequence, at + 24);
  writeU64LE(out, record.writeTimeUs, at + 32);
  writeU64LE(out, record.acceptNumber, at + 40);
  writeU64LE(out, record.markerNumber, at + 48);
  out.writeUInt32LE(payloadBytes === 0 ? 0 : checksum(record.payload), at + 56);
  out.writeUInt32LE(checksum(out, at, at + 60), at + 60);
  return out;
}

/** Header and payload in one buffer (for tests and small frames; the hot path uses writev). */
export function encodeRecord(record: JournalRecord): Buffer {
  const out = Buffer.allocUnsafe(encodedRecordBytes(record));
  encodeRecordHeader(record, out, 0);
  record.payload.copy(out, journalHeaderBytes);
  return out;
}

/**
 * Decodes one record at `at`. Never throws on bad input: the caller learns whether more
 * bytes are needed (a tail still arriving, or torn) or the bytes are not a record.
 * The payload is a view into `buf`, not a copy.
 */
export function decodeRecord(buf: Buffer, at = 0): DecodeResult {
  const available = buf.length - at;
  if (available < journalHeaderBytes) return { ok: false, reason: "truncated", bytesNeeded: journalHeaderBytes - Math.max(0, available) };
  if (buf.readUInt32LE(at) !== journalRecordMagic) return { ok: false, reason: "corrupt", detail: "bad magic" };
  if (checksum(buf, at, at + 60) !== buf.readUInt32LE(at + 60)) return { ok: false, reason: "corrupt", detail: "header checksum mismatch" };
  // From here on the header is known to be whole: what does not fit is "unsupported", not torn.
  const version = buf.readUInt8(at + 4);
  if (version !== journalRecordVersion) return { ok: false, reason: "unsupported", detail: `record format version ${version} (this tidemark reads version ${journalRecordVersion})` };
  const kind = buf.readUInt8(at + 5);
  if (!kinds.has(kind)) return { ok: false, reason: "unsupported", detail: `unknown record kind ${kind}` };
  const lengthBytes = buf.readUInt32LE(at + 12);
  const offsetBytes = readU64LE(buf, at + 16);
  const sequence = readU64LE(buf, at + 24);
  const writeTimeUs = readU64LE(buf, at + 32);
  const acceptNumber = readU64LE(buf, at + 40);
  const markerNumber = readU64LE(buf, at + 48);
  if (offsetBytes === undefined || sequence === undefined || writeTimeUs === undefined || acceptNumber === undefined || markerNumber === undefined) {
    return { ok: false, reason: "unsupported", detail: "64-bit field out of range" };
  }
  const recordKind = kind as RecordKind;
  if (recordKind === RecordKind.write && (lengthBytes === 0 || lengthBytes > journalRecordPayloadBytesMax)) {
    return { ok: false, reason: "unsupported", detail: `write length ${lengthBytes} out of range` };
  }
  if (sequence === 0) return { ok: false, reason: "unsupported", detail: "sequence 0" };
  const payloadBytes = recordPayloadBytes(recordKind, lengthBytes);
  if (available < journalHeaderBytes + payloadBytes) {
    return { ok: false, reason: "truncated", bytesNeeded: journalHeaderBytes + payloadBytes - available };
  }
  const payload = buf.subarray(at + journalHeaderBytes, at + journalHeaderBytes + payloadBytes);
  const payloadCrc = buf.readUInt32LE(at + 56);
  if (payloadBytes > 0 ? checksum(payload) !== payloadCrc : payloadCrc !== 0) {
    return { ok: false, reason: "corrupt", detail: "payload checksum mismatch" };
  }
  return {
    ok: true,
    bytes: journalHeaderBytes + payloadBytes,
    record: {
      kind: recordKind,
      volumeId: asVolumeId(buf.readUInt32LE(at + 8)),
      offsetBytes,
      lengthBytes,
      sequence: asSequence(sequence),
      writeTimeUs: asWriteTimeUs(writeTimeUs),
      acceptNumber: asAcceptNumber(acceptNumber),
      markerNumber: asMarkerNumber(markerNumber),
      payload,
    },
  };
}
