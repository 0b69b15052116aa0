// The journal record (patent: write data management information 330, Fig. 5 and 17):
// a fixed 64-byte header, checksummed on its own, then the payload, checksummed too.
// The same encoding is stored in journal segments and carried by replication batches,
// so a record is self-describing wherever it is.
//
//   0  u32 magic 'TMJR'          32 u64 writeTimeUs
//   4  u8  version (1 or 2)      40 u64 acceptNumber
//   5  u8  kind                  48 u64 version 1: markerNumber (0 unless kind = marker)
//   6  u16 reserved (0)                 version 2: wallTimeUs (never a marker)
//   8  u32 volumeId              56 u32 payload CRC-32 (0 when there is no payload)
//  12  u32 lengthBytes           60 u32 header CRC-32 of bytes 0..59
//  16  u64 offsetBytes
//  24  u64 sequence
// All little-endian. A write's payload has lengthBytes bytes; other kinds have none.
//
// Version 2 (issue 9) carries the primary's wall time when it accepted the record
// (`wallTimeUs`, Unix µs, strictly increasing per group): what a secondary's consistent-as-of
// time is made of (docs/journal.md, "Record format versions"). Bytes 48..55 hold it, where
// version 1 held a marker number that only markers use; a marker, and any record whose wall
// time is unknown (0), is still written as version 1, byte for byte as before. Both versions
// decode: journals written before issue 9 open unchanged (their records' wallTimeUs is 0),
// and a replication peer that speaks protocol version 1 is sent version-1 records only
// (repl-protocol.ts, `recordForPeer`).
//
// A resize (kind 5) grows volume volumeId to offsetBytes bytes (its new size; lengthBytes 0);
// replication protocol version 3 carries it (repl-protocol.ts, replResizeVersion).
import { journalRecordBytesMax, journalRecordPayloadBytesMax, volumeBytesMax, volumeBytesMin } from "../core/limits.ts";
import { assert } from "../core/assert.ts";
import {
  asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs,
  type AcceptNumber, type MarkerNumber, type SequenceNumber, type VolumeId, type WriteTimeUs,
} from "../core/types.ts";
import { checksum, readU64LE, writeU64LE } from "./bytes.ts";

export const journalRecordMagic = 0x524a4d54; // "TMJR" read little-endian
/** The newest record format version this build writes and reads (it reads every version from 1). */
export const journalRecordVersion = 2;
/** The format of records without a wall time (markers, records from before issue 9, records for a version-1 peer). */
export const journalRecordVersionNoWallTime = 1;
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
  /**
   * Volume `volumeId` grows to `offsetBytes` bytes (its new size; `lengthBytes` 0, no payload).
   * Ordered in the group's sequence like a write: a write past the old end comes after it
   * (docs/journal.md, "Resize"). Replication protocol version 3 and later carry it.
   */
  resize: 5,
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
  /**
   * The primary's wall clock when it accepted the record (Unix µs, strictly increasing per
   * group); 0 when unknown: markers, records written before issue 9, or sent to a version-1 peer.
   */
  readonly wallTimeUs: number;
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

/** A resize record's new volume size, bytes (its offsetBytes field). */
export function resizeSizeBytes(record: Pick<JournalRecord, "kind" | "offsetBytes">): number {
  return record.offsetBytes;
}

/** Whether `sizeBytes` is a size a volume may have (and so a resize may ask for): whole 512-byte sectors within the limits. */
export function validVolumeSize(sizeBytes: number): boolean {
  return Number.isSafeInteger(sizeBytes) && sizeBytes >= volumeBytesMin && sizeBytes <= volumeBytesMax && sizeBytes % 512 === 0;
}

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
  const withWallTime = record.wallTimeUs > 0;
  if (withWallTime && (record.kind === RecordKind.marker || record.markerNumber !== 0)) throw new RangeError("a marker carries no wall time");
  if (record.kind === RecordKind.resize && (record.lengthBytes !== 0 || !validVolumeSize(record.offsetBytes))) throw new RangeError(`resize to ${record.offsetBytes} bytes is not a valid volume size`);
  out.writeUInt32LE(journalRecordMagic, at);
  out.writeUInt8(withWallTime ? journalRecordVersion : journalRecordVersionNoWallTime, at + 4);
  out.writeUInt8(record.kind, at + 5);
  out.writeUInt16LE(0, at + 6);
  out.writeUInt32LE(record.volumeId, at + 8);
  out.writeUInt32LE(record.lengthBytes, at + 12);
  writeU64LE(out, record.offsetBytes, at + 16);
  writeU64LE(out, record.sequence, at + 24);
  writeU64LE(out, record.writeTimeUs, at + 32);
  writeU64LE(out, record.acceptNumber, at + 40);
  writeU64LE(out, withWallTime ? record.wallTimeUs : record.markerNumber, at + 48);
  out.writeUInt32LE(payloadBytes === 0 ? 0 : checksum(record.payload), at + 56);
  out.writeUInt32LE(checksum(out, at, at + 60), at + 60);
  return out;
}

/** The record as a peer that knows only version 1 (no wall time) may be sent it. */
export function withoutWallTime(record: JournalRecord): JournalRecord {
  return record.wallTimeUs === 0 ? record : { ...record, wallTimeUs: 0 };
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
  if (version !== journalRecordVersion && version !== journalRecordVersionNoWallTime) {
    return { ok: false, reason: "unsupported", detail: `record format version ${version} (this tidemark reads versions ${journalRecordVersionNoWallTime} to ${journalRecordVersion})` };
  }
  const kind = buf.readUInt8(at + 5);
  if (!kinds.has(kind)) return { ok: false, reason: "unsupported", detail: `unknown record kind ${kind}` };
  const lengthBytes = buf.readUInt32LE(at + 12);
  const offsetBytes = readU64LE(buf, at + 16);
  const sequence = readU64LE(buf, at + 24);
  const writeTimeUs = readU64LE(buf, at + 32);
  const acceptNumber = readU64LE(buf, at + 40);
  const field48 = readU64LE(buf, at + 48);
  if (offsetBytes === undefined || sequence === undefined || writeTimeUs === undefined || acceptNumber === undefined || field48 === undefined) {
    return { ok: false, reason: "unsupported", detail: "64-bit field out of range" };
  }
  const recordKind = kind as RecordKind;
  const withWallTime = version === journalRecordVersion;
  if (withWallTime && (recordKind === RecordKind.marker || field48 === 0)) {
    return { ok: false, reason: "unsupported", detail: recordKind === RecordKind.marker ? "a version-2 marker" : "a version-2 record without a wall time" };
  }
  if (recordKind === RecordKind.write && (lengthBytes === 0 || lengthBytes > journalRecordPayloadBytesMax)) {
    return { ok: false, reason: "unsupported", detail: `write length ${lengthBytes} out of range` };
  }
  if (recordKind === RecordKind.resize && (lengthBytes !== 0 || !validVolumeSize(offsetBytes))) {
    return { ok: false, reason: "unsupported", detail: `resize to ${offsetBytes} bytes (length ${lengthBytes}) out of range` };
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
      markerNumber: asMarkerNumber(withWallTime ? 0 : field48),
      wallTimeUs: withWallTime ? field48 : 0,
      payload,
    },
  };
}
