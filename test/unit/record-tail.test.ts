// Proves the in-memory record tail used by the sender and the reflector: it serves contiguous
// ranges within byte and sequence bounds, never more than its byte bound, owns its payloads
// (a front end reusing its buffer after the write cannot change what the tail sends), and
// says "not here" (undefined) for anything it no longer or never held.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { RecordTail } from "../../src/storage/record-tail.ts";
import { RecordKind, encodedRecordBytes, type JournalRecord } from "../../src/protocol/journal-record.ts";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";

function record(sequence: number, payload: Buffer): JournalRecord {
  return {
    kind: RecordKind.write, volumeId: asVolumeId(1), offsetBytes: sequence * 4096, lengthBytes: payload.length,
    sequence: asSequence(sequence), writeTimeUs: asWriteTimeUs(sequence), acceptNumber: asAcceptNumber(sequence),
    markerNumber: asMarkerNumber(0), wallTimeUs: 1_700_000_000_000_000 + sequence, payload,
  };
}

test("serves contiguous ranges, bounded by bytes and by the last sequence", () => {
  const tail = new RecordTail(1 << 20);
  for (let s = 1; s <= 10; s++) tail.push(record(s, Buffer.alloc(1000, s)));
  assert.equal(tail.firstSequence, 1);
  assert.equal(tail.lastSequence, 10);
  assert.deepEqual(tail.read(3, 1 << 20, 6)?.map((r) => r.sequence), [3, 4, 5, 6]);
  const perRecord = encodedRecordBytes(record(1, Buffer.alloc(1000)));
  assert.deepEqual(tail.read(2, perRecord * 2, 10)?.map((r) => r.sequence), [2, 3]);
  assert.deepEqual(tail.read(9, 1, 10)?.map((r) => r.sequence), [9], "at least one record even past the byte bound");
  assert.equal(tail.read(11, 1 << 20, 20), undefined, "not yet appended");
  tail.dropThrough(4);
  assert.equal(tail.read(4, 1 << 20, 10), undefined, "dropped");
  assert.equal(tail.firstSequence, 5);
});

test("owns its payloads: reusing the writer's buffer afterwards changes nothing", () => {
  const tail = new RecordTail(1 << 20);
  const arena = Buffer.alloc(8192, 0xaa);
  tail.push(record(1, arena.subarray(0, 4096)));
  const exact = Buffer.alloc(4096, 0xbb);
  tail.push(record(2, exact));
  arena.fill(0);
  exact.fill(0);
  const [first, second] = tail.read(1, 1 << 20, 2) ?? [];
  assert.ok(first?.payload.every((b) => b === 0xaa));
  assert.ok(second?.payload.every((b) => b === 0xbb));
});

test("a break in sequence starts afresh", () => {
  const tail = new RecordTail(1 << 20);
  tail.push(record(1, Buffer.alloc(10)));
  tail.push(record(2, Buffer.alloc(10)));
  tail.push(record(7, Buffer.alloc(10)));
  assert.equal(tail.firstSequence, 7);
  assert.equal(tail.read(2, 100, 10), undefined);
});

test("property: never holds more than its bound (beyond one record), and what it serves is what was pushed", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 * 1024 }), fc.array(fc.integer({ min: 1, max: 8192 }), { minLength: 1, maxLength: 200 }), (bound, sizes) => {
      const tail = new RecordTail(bound);
      sizes.forEach((size, i) => {
        tail.push(record(i + 1, Buffer.alloc(size, (i + 1) & 0xff)));
        assert.ok(tail.heldBytes <= bound || tail.size === 1, "bounded");
      });
      const first = tail.firstSequence ?? 0;
      const served = tail.read(first, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER) ?? [];
      assert.equal(served.length, tail.size);
      served.forEach((r, i) => {
        assert.equal(r.sequence, first + i);
        assert.equal(r.payload.length, sizes[r.sequence - 1]);
        assert.ok(r.payload.every((b) => b === (r.sequence & 0xff)));
      });
    }),
  );
});
