// Proves the journal record codec: round trips of every kind, and that garbage, truncation
// at every byte, flipped bits and oversized lengths are reported as values, never thrown,
// and never decoded as a record.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  RecordKind, decodeRecord, encodeRecord, journalHeaderBytes, resizeSizeBytes, withoutWallTime, type JournalRecord, type RecordKind as Kind,
} from "../../src/protocol/journal-record.ts";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";
import { journalRecordPayloadBytesMax, volumeBytesMax, volumeBytesMin } from "../../src/core/limits.ts";
import { checksum } from "../../src/protocol/bytes.ts";

const u53 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

const recordArbitrary: fc.Arbitrary<JournalRecord> = fc
  .record({
    kind: fc.constantFrom<Kind>(RecordKind.write, RecordKind.zeroes, RecordKind.marker, RecordKind.timeAdvance, RecordKind.resize),
    volumeId: fc.integer({ min: 0, max: 0xffff_ffff }),
    offsetBytes: u53,
    sequence: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    writeTimeUs: u53,
    acceptNumber: u53,
    markerNumber: u53,
    // Record format 2 carries the primary's wall time (never on a marker); 0: format 1.
    wallTimeUs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
    payload: fc.uint8Array({ minLength: 1, maxLength: 300 }),
    zeroLength: fc.integer({ min: 0, max: 0xffff_ffff }),
    resizeSectors: fc.integer({ min: volumeBytesMin / 512, max: volumeBytesMax / 512 }),
  })
  .map((r) => ({
    kind: r.kind,
    volumeId: asVolumeId(r.volumeId),
    // A resize carries the new size in offsetBytes, and no length.
    offsetBytes: r.kind === RecordKind.resize ? r.resizeSectors * 512 : r.offsetBytes,
    lengthBytes: r.kind === RecordKind.write ? r.payload.length : r.kind === RecordKind.resize ? 0 : r.zeroLength,
    sequence: asSequence(r.sequence),
    writeTimeUs: asWriteTimeUs(r.writeTimeUs),
    acceptNumber: asAcceptNumber(r.acceptNumber),
    markerNumber: asMarkerNumber(r.kind !== RecordKind.marker && r.wallTimeUs > 0 ? 0 : r.markerNumber),
    wallTimeUs: r.kind === RecordKind.marker ? 0 : r.wallTimeUs,
    payload: r.kind === RecordKind.write ? Buffer.from(r.payload) : Buffer.alloc(0),
  }));

test("round trip of every kind, payload a view of the input", () => {
  fc.assert(
    fc.property(recordArbitrary, (record) => {
      const bytes = encodeRecord(record);
      const decoded = decodeRecord(bytes);
      assert.ok(decoded.ok);
      assert.equal(decoded.bytes, bytes.length);
      assert.deepEqual({ ...decoded.record, payload: Buffer.from(decoded.record.payload) }, record);
    }),
  );
});

test("truncation at every byte is 'truncated', never a record", () => {
  fc.assert(
    fc.property(recordArbitrary, (record) => {
      const bytes = encodeRecord(record);
      for (let length = 0; length < bytes.length; length++) {
        const decoded = decodeRecord(bytes.subarray(0, length));
        assert.equal(decoded.ok, false);
        if (!decoded.ok && length >= journalHeaderBytes) assert.equal(decoded.reason, "truncated");
      }
    }),
    { numRuns: 50 },
  );
});

test("any flipped bit is detected", () => {
  fc.assert(
    fc.property(recordArbitrary, fc.nat(), fc.integer({ min: 0, max: 7 }), (record, at, bit) => {
      const bytes = encodeRecord(record);
      const index = at % bytes.length;
      bytes[index] = bytes[index]! ^ (1 << bit);
      assert.equal(decodeRecord(bytes).ok, false);
    }),
  );
});

test("random garbage never decodes and never throws", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (garbage) => {
      assert.equal(decodeRecord(Buffer.from(garbage)).ok, false);
    }),
  );
});

test("a checksummed header declaring an oversized write is rejected before reading the payload", () => {
  const record: JournalRecord = {
    kind: RecordKind.write, volumeId: asVolumeId(1), offsetBytes: 0, lengthBytes: 4, sequence: asSequence(1),
    writeTimeUs: asWriteTimeUs(1), acceptNumber: asAcceptNumber(1), markerNumber: asMarkerNumber(0), wallTimeUs: 0, payload: Buffer.alloc(4),
  };
  const bytes = encodeRecord(record);
  bytes.writeUInt32LE(journalRecordPayloadBytesMax + 1, 12);
  // Re-seal the header so only the length check can catch it.
  bytes.writeUInt32LE(checksum(bytes, 0, 60), 60);
  const decoded = decodeRecord(bytes.subarray(0, journalHeaderBytes));
  assert.equal(decoded.ok, false);
  assert.ok(!decoded.ok && decoded.reason === "unsupported" && /out of range/.test(decoded.detail));
});

test("record format 2 carries the primary's wall time; format 1 (journals before issue 9, version-1 peers) still decodes, with none", () => {
  const base: JournalRecord = {
    kind: RecordKind.write, volumeId: asVolumeId(3), offsetBytes: 8192, lengthBytes: 4, sequence: asSequence(42),
    writeTimeUs: asWriteTimeUs(77), acceptNumber: asAcceptNumber(9), markerNumber: asMarkerNumber(0), wallTimeUs: 1_750_000_000_000_001, payload: Buffer.from([1, 2, 3, 4]),
  };
  const v2 = encodeRecord(base);
  assert.equal(v2.readUInt8(4), 2, "written as format 2");
  const decoded = decodeRecord(v2);
  assert.ok(decoded.ok);
  assert.equal(decoded.record.wallTimeUs, base.wallTimeUs);
  // What a version-1 peer is sent: byte for byte the record as tidemark before issue 9 wrote it.
  const v1 = encodeRecord(withoutWallTime(base));
  assert.equal(v1.readUInt8(4), 1);
  const old = Buffer.alloc(v1.length);
  old.writeUInt32LE(0x524a4d54, 0); old.writeUInt8(1, 4); old.writeUInt8(1, 5); old.writeUInt32LE(3, 8); old.writeUInt32LE(4, 12);
  old.writeBigUInt64LE(8192n, 16); old.writeBigUInt64LE(42n, 24); old.writeBigUInt64LE(77n, 32); old.writeBigUInt64LE(9n, 40);
  old.writeUInt32LE(checksum(Buffer.from([1, 2, 3, 4])), 56); old.writeUInt32LE(checksum(old, 0, 60), 60); Buffer.from([1, 2, 3, 4]).copy(old, 64);
  assert.ok(v1.equals(old), "format 1 is unchanged");
  const decodedOld = decodeRecord(old);
  assert.ok(decodedOld.ok);
  assert.equal(decodedOld.record.wallTimeUs, 0, "an old record's wall time is unknown");
  // A marker keeps format 1 (its marker number sits where format 2 has the wall time).
  const marker = encodeRecord({ ...base, kind: RecordKind.marker, lengthBytes: 0, payload: Buffer.alloc(0), markerNumber: asMarkerNumber(5), wallTimeUs: 0 });
  assert.equal(marker.readUInt8(4), 1);
  assert.throws(() => encodeRecord({ ...base, kind: RecordKind.marker, lengthBytes: 0, payload: Buffer.alloc(0), markerNumber: asMarkerNumber(5) }), RangeError);
  // A format-2 header that claims to be a marker, or has no wall time, is whole but unreadable: unsupported, not torn.
  const bad = Buffer.from(v2);
  bad.writeBigUInt64LE(0n, 48);
  bad.writeUInt32LE(checksum(bad, 0, 60), 60);
  assert.deepEqual(decodeRecord(bad), { ok: false, reason: "unsupported", detail: "a version-2 record without a wall time" });
});

/** A record whose header says `kind`, with `lengthBytes` and `offsetBytes` set and the header checksum sealed again. */
function sealedHeader(kind: number, offsetBytes: number, lengthBytes: number): Buffer {
  const bytes = encodeRecord({
    kind: RecordKind.timeAdvance, volumeId: asVolumeId(1), offsetBytes: 0, lengthBytes: 0, sequence: asSequence(7),
    writeTimeUs: asWriteTimeUs(1), acceptNumber: asAcceptNumber(1), markerNumber: asMarkerNumber(0), wallTimeUs: 0, payload: Buffer.alloc(0),
  });
  bytes.writeUInt8(kind, 5);
  bytes.writeUInt32LE(lengthBytes, 12);
  bytes.writeUInt32LE(offsetBytes % 2 ** 32, 16);
  bytes.writeUInt32LE(Math.floor(offsetBytes / 2 ** 32), 20);
  bytes.writeUInt32LE(checksum(bytes, 0, 60), 60);
  return bytes;
}

test("a resize record carries the new size in offsetBytes and round-trips; sizes that no volume may have are refused as unsupported", () => {
  const resize: JournalRecord = {
    kind: RecordKind.resize, volumeId: asVolumeId(3), offsetBytes: 3 * 1024 * 1024 * 1024, lengthBytes: 0, sequence: asSequence(9),
    writeTimeUs: asWriteTimeUs(5), acceptNumber: asAcceptNumber(6), markerNumber: asMarkerNumber(0), wallTimeUs: 1_700_000_000_000_000, payload: Buffer.alloc(0),
  };
  const decoded = decodeRecord(encodeRecord(resize));
  assert.ok(decoded.ok);
  assert.equal(decoded.record.kind, RecordKind.resize);
  assert.equal(resizeSizeBytes(decoded.record), 3 * 1024 * 1024 * 1024);
  assert.equal(decoded.bytes, journalHeaderBytes);
  for (const [offsetBytes, lengthBytes] of [[0, 0], [volumeBytesMin - 512, 0], [volumeBytesMax + 512, 0], [volumeBytesMin + 1, 0], [volumeBytesMin, 4096]] as const) {
    const bad = decodeRecord(sealedHeader(RecordKind.resize, offsetBytes, lengthBytes));
    assert.ok(!bad.ok && bad.reason === "unsupported" && /resize/.test(bad.detail), `resize to ${offsetBytes} (length ${lengthBytes}) refused`);
    assert.throws(() => encodeRecord({ ...resize, offsetBytes, lengthBytes }), RangeError);
  }
});

test("a whole header of a kind this version does not know (as an older tidemark meets kind 5) is unsupported, never torn and never a record", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }).filter((kind) => !(Object.values(RecordKind) as number[]).includes(kind)), (kind) => {
      const decoded = decodeRecord(sealedHeader(kind, 4096, 0));
      assert.ok(!decoded.ok && decoded.reason === "unsupported" && decoded.detail === `unknown record kind ${kind}`);
    }),
  );
});
