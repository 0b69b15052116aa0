// Proves the replication wire codec and its frame assembler: fast-check round trips of every
// message, byte layouts pinned by an independent builder, input split at every boundary,
// truncation at every byte, garbage and bit flips reported as values (never thrown, never
// decoded as another message), oversized declared lengths refused before any payload is
// buffered, and a BATCH or COPY_DATA with corrupted content refused in step (NACKable).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  GroupState, ReflectMode, ReplErrorCode, ReplFrameAssembler, ReplType, TransferMode, batchFrameBytes, chooseReplVersion,
  decodeFrame, encodeMessage, nackableTypes, replBatchFixedBytes, replFrameMagic, replHeaderBytes, replPayloadBytesMax,
  replTextBytes, type ReplDecodeResult, type ReplMessage, type ReplMessageType,
} from "../../src/protocol/repl-protocol.ts";
import { RecordKind, encodeRecord, journalHeaderBytes, type JournalRecord, type RecordKind as Kind } from "../../src/protocol/journal-record.ts";
import { checksum } from "../../src/protocol/bytes.ts";
import {
  replBatchRecordsMax, replCopyChunkBytesMax, replFrameBytesMax, replMessageTextBytesMax, replStreamsMax, volumesPerGroupMax,
} from "../../src/core/limits.ts";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";

// ---------------------------------------------------------------------------------------
// Arbitraries

const u53 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const pos53 = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const handle = fc.integer({ min: 1, max: 0xffff_ffff });
const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const pairId = fc.stringMatching(/^[\x21-\x7e]{1,64}$/);
const text = fc.string({ maxLength: 200, unit: "grapheme" });
const errorCode = fc.constantFrom(...(Object.keys(ReplErrorCode) as (keyof typeof ReplErrorCode)[]));
const sequencePair = fc.tuple(u53, u53).map(([a, b]): readonly [number, number] => (a <= b ? [a, b] : [b, a]));
const progress = fc.record({ seqs: sequencePair, time: u53, accept: u53 }).map((p) => ({
  arrivedSequence: asSequence(p.seqs[1]),
  reflectedSequence: asSequence(p.seqs[0]),
  arrivedWriteTimeUs: asWriteTimeUs(p.time),
  arrivedAcceptNumber: asAcceptNumber(p.accept),
}));

function recordsFrom(start: number, shapes: readonly { kind: Kind; payload: Uint8Array; zeroLength: number; volumeId: number; offsetBytes: number; time: number; marker: number }[]): JournalRecord[] {
  return shapes.map((s, i) => ({
    kind: s.kind,
    volumeId: asVolumeId(s.volumeId),
    offsetBytes: s.offsetBytes,
    lengthBytes: s.kind === RecordKind.write ? s.payload.length : s.kind === RecordKind.zeroes ? s.zeroLength : 0,
    sequence: asSequence(start + i),
    writeTimeUs: asWriteTimeUs(s.time),
    acceptNumber: asAcceptNumber(start + i),
    markerNumber: asMarkerNumber(s.kind === RecordKind.marker ? s.marker : 0),
    wallTimeUs: s.kind === RecordKind.marker ? 0 : Math.max(1, s.time),
    payload: s.kind === RecordKind.write ? Buffer.from(s.payload) : Buffer.alloc(0),
  }));
}

const recordShape = fc.record({
  kind: fc.constantFrom<Kind>(RecordKind.write, RecordKind.zeroes, RecordKind.marker, RecordKind.timeAdvance),
  payload: fc.uint8Array({ minLength: 1, maxLength: 200 }),
  zeroLength: u32,
  volumeId: u32,
  offsetBytes: u53,
  time: u53,
  marker: u53,
});
const records = fc.tuple(fc.integer({ min: 1, max: 2 ** 40 }), fc.array(recordShape, { maxLength: 12 })).map(([start, shapes]) => recordsFrom(start, shapes));

const volume = fc.record({ volumeId: u32.map(asVolumeId), name, sizeBytes: u53 }).map((v) => ({ ...v }));

const messageArbitraries: { [T in ReplMessageType]: fc.Arbitrary<Extract<ReplMessage, { type: T }>> } = {
  HELLO: fc.record({ versions: fc.tuple(fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 1, max: 0xffff })), id: name, count: fc.integer({ min: 1, max: replStreamsMax }), index: fc.nat() })
    .map((h) => ({
      type: "HELLO" as const, versionMin: Math.min(...h.versions), versionMax: Math.max(...h.versions),
      primaryNodeId: h.id, streamIndex: h.index % h.count, streamCount: h.count,
    })),
  HELLO_OK: fc.record({ version: fc.integer({ min: 1, max: 0xffff }), secondaryNodeId: name, frameBytesMax: fc.integer({ min: 1024, max: 0xffff_ffff }) })
    .map((m) => ({ type: "HELLO_OK" as const, ...m })),
  OPEN_GROUP: fc.record({
    groupHandle: handle, pairId, primaryGroup: name, secondaryGroup: name,
    transfer: fc.constantFrom<keyof typeof TransferMode>("push", "pull"),
    reflect: fc.constantFrom<keyof typeof ReflectMode>("time", "seq", "marker"),
    startSequence: pos53.map(asSequence),
    volumes: fc.array(volume, { minLength: 1, maxLength: 6 }),
  }).map((m) => ({ type: "OPEN_GROUP" as const, ...m })),
  GROUP_STATE: fc.record({ groupHandle: handle, state: fc.constantFrom(...(Object.keys(GroupState) as (keyof typeof GroupState)[])), progress })
    .map((m) => ({ type: "GROUP_STATE" as const, groupHandle: m.groupHandle, state: m.state, ...m.progress })),
  BATCH: fc.record({ groupHandle: handle, batchId: u53, records }).map((m) => ({ type: "BATCH" as const, ...m })),
  ACK: fc.record({ groupHandle: handle, batchId: u53, progress })
    .map((m) => ({ type: "ACK" as const, groupHandle: m.groupHandle, batchId: m.batchId, ...m.progress })),
  NACK: fc.record({ groupHandle: handle, code: errorCode, refType: fc.constantFrom(...nackableTypes), refId: u53, arrivedSequence: u53.map(asSequence), text })
    .map((m) => ({ type: "NACK" as const, ...m })),
  PULL: fc.record({ groupHandle: handle, fromSequence: pos53.map(asSequence), maxBytes: fc.integer({ min: 1, max: 0xffff_ffff }) })
    .map((m) => ({ type: "PULL" as const, ...m })),
  COPY_DATA: fc.record({ groupHandle: handle, chunkId: u53, volumeId: u32.map(asVolumeId), offsetBytes: fc.integer({ min: 0, max: 2 ** 50 }), data: fc.uint8Array({ minLength: 1, maxLength: 300 }) })
    .map((m) => ({ type: "COPY_DATA" as const, ...m, data: Buffer.from(m.data) })),
  COPY_ZEROES: fc.record({ groupHandle: handle, chunkId: u53, volumeId: u32.map(asVolumeId), offsetBytes: fc.integer({ min: 0, max: 2 ** 50 }), lengthBytes: fc.integer({ min: 1, max: 2 ** 50 }) })
    .map((m) => ({ type: "COPY_ZEROES" as const, ...m })),
  COPY_DONE: fc.record({ groupHandle: handle, chunkId: u53, totalBytes: u53, consistentFromSequence: u53.map(asSequence) }).map((m) => ({ type: "COPY_DONE" as const, ...m })),
  COPY_ACK: fc.record({ groupHandle: handle, chunkId: u53 }).map((m) => ({ type: "COPY_ACK" as const, ...m })),
  PING: fc.record({ pingId: u53, sendTimeUs: u53 }).map((m) => ({ type: "PING" as const, ...m })),
  PONG: fc.record({ pingId: u53, echoTimeUs: u53, replyTimeUs: u53 }).map((m) => ({ type: "PONG" as const, ...m })),
  ERROR: fc.record({ code: errorCode, text }).map((m) => ({ type: "ERROR" as const, ...m })),
  CLOSE: fc.record({ text }).map((m) => ({ type: "CLOSE" as const, ...m })),
  FENCE: fc.record({ groupHandle: handle, fenceId: pos53, text }).map((m) => ({ type: "FENCE" as const, ...m })),
  FENCED: fc.record({ groupHandle: handle, fenceId: pos53, seqs: sequencePair })
    .map((m) => ({ type: "FENCED" as const, groupHandle: m.groupHandle, fenceId: m.fenceId, lastAcceptedSequence: asSequence(m.seqs[1]), lastWriteSequence: asSequence(m.seqs[0]) })),
};
const anyMessage: fc.Arbitrary<ReplMessage> = fc.oneof(...Object.values(messageArbitraries) as fc.Arbitrary<ReplMessage>[]);

// ---------------------------------------------------------------------------------------
// Helpers

const frameOf = (msg: ReplMessage): Buffer => Buffer.concat(encodeMessage(msg));

/** Feeds chunks, draining after each as a socket handler would; returns every result. */
function feed(assembler: ReplFrameAssembler, chunks: readonly Buffer[]): ReplDecodeResult[] {
  const out: ReplDecodeResult[] = [];
  for (const chunk of chunks) {
    assembler.push(chunk);
    for (let r = assembler.next(); r !== undefined; r = assembler.next()) {
      out.push(r);
      if (!r.ok && r.fatal) return out;
    }
  }
  return out;
}

function okMessages(results: readonly ReplDecodeResult[]): ReplMessage[] {
  return results.map((r) => {
    assert.ok(r.ok, `decoded: ${JSON.stringify(r)}`);
    return r.message;
  });
}

/** Splits `bytes` at the sorted cut points. */
function split(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  out.push(bytes.subarray(from));
  return out;
}

/** A header built byte by byte, independently of the codec. */
function rawHeader(type: number, payloadBytes: number, payloadCrc: number): Buffer {
  const h = Buffer.alloc(20);
  h.write("TMRP", 0, "latin1");
  h[4] = 1;
  h[5] = type;
  h.writeUInt32LE(payloadBytes, 8);
  h.writeUInt32LE(payloadCrc, 12);
  h.writeUInt32LE(checksum(h, 0, 16), 16);
  return h;
}

// ---------------------------------------------------------------------------------------
// Round trips

for (const [type, arbitrary] of Object.entries(messageArbitraries)) {
  void test(`${type}: round trip through one whole frame`, () => {
    fc.assert(fc.property(arbitrary as fc.Arbitrary<ReplMessage>, (msg) => {
      const frame = frameOf(msg);
      assert.ok(frame.length <= replFrameBytesMax);
      assert.equal(frame.readUInt32LE(8), frame.length - replHeaderBytes, "declared payload length");
      assert.equal(frame[5], ReplType[msg.type]);
      const decoded = decodeFrame(frame);
      assert.ok(decoded.ok, JSON.stringify(decoded));
      assert.deepStrictEqual(decoded.message, msg);
    }), { numRuns: 200 });
  });
}

void test("a stream of messages split at random points decodes to the same messages", () => {
  fc.assert(fc.property(fc.array(anyMessage, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (msgs, cuts) => {
    const stream = Buffer.concat(msgs.map(frameOf));
    assert.deepStrictEqual(okMessages(feed(new ReplFrameAssembler(), split(stream, cuts))), msgs);
  }), { numRuns: 300 });
});

void test("every two-chunk split and every one-byte-chunk feed of a stream decode the same", () => {
  fc.assert(fc.property(fc.array(anyMessage, { minLength: 2, maxLength: 3 }), (msgs) => {
    const stream = Buffer.concat(msgs.map(frameOf));
    for (let at = 0; at <= stream.length; at++) {
      assert.deepStrictEqual(okMessages(feed(new ReplFrameAssembler(), [stream.subarray(0, at), stream.subarray(at)])), msgs);
    }
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepStrictEqual(okMessages(feed(new ReplFrameAssembler(), bytes)), msgs);
  }), { numRuns: 40 });
});

void test("truncation at every byte yields nothing yet (never a message, never an error)", () => {
  fc.assert(fc.property(anyMessage, (msg) => {
    const frame = frameOf(msg);
    for (let length = 0; length < frame.length; length++) {
      const assembler = new ReplFrameAssembler();
      assembler.push(frame.subarray(0, length));
      assert.equal(assembler.next(), undefined);
      const whole = decodeFrame(frame.subarray(0, length));
      assert.ok(!whole.ok && whole.fatal);
    }
  }), { numRuns: 100 });
});

void test("text longer than the limit is cut on a character boundary", () => {
  const long = "é".repeat(replMessageTextBytesMax); // 2 bytes each
  const cut = replTextBytes(`x${long}`);
  assert.ok(cut.length <= replMessageTextBytesMax);
  assert.equal(cut.toString("utf8"), `x${"é".repeat((replMessageTextBytesMax - 1) / 2 | 0)}`);
  const decoded = decodeFrame(frameOf({ type: "ERROR", code: "INTERNAL", text: `x${long}` }));
  assert.ok(decoded.ok && decoded.message.type === "ERROR");
  assert.equal(decoded.message.text, cut.toString("utf8"));
});

// ---------------------------------------------------------------------------------------
// Byte layout, pinned by an independent builder

void test("PING, ACK and HELLO frames have the documented bytes", () => {
  const ping = Buffer.alloc(16);
  ping.writeBigUInt64LE(7n, 0);
  ping.writeBigUInt64LE(1_700_000_000_000_000n, 8);
  assert.deepEqual(frameOf({ type: "PING", pingId: 7, sendTimeUs: 1_700_000_000_000_000 }), Buffer.concat([rawHeader(13, 16, checksum(ping)), ping]));

  const ack = Buffer.alloc(48);
  ack.writeUInt32LE(3, 0);
  ack.writeBigUInt64LE(99n, 8);
  ack.writeBigUInt64LE(1000n, 16);
  ack.writeBigUInt64LE(900n, 24);
  ack.writeBigUInt64LE(123456n, 32);
  ack.writeBigUInt64LE(77n, 40);
  assert.deepEqual(frameOf({
    type: "ACK", groupHandle: 3, batchId: 99, arrivedSequence: asSequence(1000), reflectedSequence: asSequence(900),
    arrivedWriteTimeUs: asWriteTimeUs(123456), arrivedAcceptNumber: asAcceptNumber(77),
  }), Buffer.concat([rawHeader(6, 48, checksum(ack)), ack]));

  const hello = Buffer.concat([Buffer.from("tidemark"), Buffer.from([1, 0, 2, 0, 1, 0, 4, 0, 1, 0]), Buffer.from("A")]);
  assert.deepEqual(frameOf({ type: "HELLO", versionMin: 1, versionMax: 2, streamIndex: 1, streamCount: 4, primaryNodeId: "A" }),
    Buffer.concat([rawHeader(1, hello.length, checksum(hello)), hello]));
  assert.equal(replFrameMagic, rawHeader(1, 0, 0).readUInt32LE(0));
});

void test("BATCH is the frame header, the fixed part and journal records exactly as journal-record encodes them", () => {
  const recs = recordsFrom(41, [
    { kind: RecordKind.write, payload: Buffer.from("hello"), zeroLength: 0, volumeId: 2, offsetBytes: 4096, time: 10, marker: 0 },
    { kind: RecordKind.timeAdvance, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 11, marker: 0 },
    { kind: RecordKind.marker, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 12, marker: 5 },
    { kind: RecordKind.write, payload: Buffer.from("world!"), zeroLength: 0, volumeId: 3, offsetBytes: 0, time: 13, marker: 0 },
  ]);
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(9, 0);
  fixed.writeUInt32LE(4, 4);
  fixed.writeBigUInt64LE(1234n, 8);
  const body = Buffer.concat([fixed, ...recs.map(encodeRecord)]);
  const pieces = encodeMessage({ type: "BATCH", groupHandle: 9, batchId: 1234, records: recs });
  assert.deepEqual(Buffer.concat(pieces), Buffer.concat([rawHeader(5, body.length, checksum(fixed)), body]));
  assert.equal(batchFrameBytes(recs), replHeaderBytes + body.length);
  // Payloads are handed out as they are (no copy); the two payload-less headers share one piece.
  assert.equal(pieces.length, 4);
  assert.equal(pieces[1], recs[0]!.payload);
  assert.equal(pieces[3], recs[3]!.payload);
  assert.equal(pieces[2]!.length, 3 * journalHeaderBytes);
});

void test("FENCE and FENCED have the documented bytes, go one way each, and refuse a zero fence id or handle", () => {
  const withPayload = (type: number, payload: Buffer): Buffer => Buffer.concat([rawHeader(type, payload.length, checksum(payload)), payload]);
  const fence = Buffer.alloc(16 + 2 + 8);
  fence.writeUInt32LE(5, 0);
  fence.writeBigUInt64LE(3n, 8);
  fence.writeUInt16LE(8, 16);
  fence.write("takeover", 18, "utf8");
  const fenceFrame = frameOf({ type: "FENCE", groupHandle: 5, fenceId: 3, text: "takeover" });
  assert.deepEqual(fenceFrame, withPayload(17, fence));
  const fenced = Buffer.alloc(32);
  fenced.writeUInt32LE(5, 0);
  fenced.writeBigUInt64LE(3n, 8);
  fenced.writeBigUInt64LE(4242n, 16);
  fenced.writeBigUInt64LE(4200n, 24);
  const fencedFrame = frameOf({ type: "FENCED", groupHandle: 5, fenceId: 3, lastAcceptedSequence: asSequence(4242), lastWriteSequence: asSequence(4200) });
  assert.deepEqual(fencedFrame, withPayload(18, fenced));
  assert.equal(replPayloadBytesMax("FENCE"), 16 + 2 + replMessageTextBytesMax);
  assert.equal(replPayloadBytesMax("FENCED"), 32);
  // FENCE goes to the primary, FENCED to the secondary.
  assert.ok(decodeFrame(fenceFrame, { receiver: "primary" }).ok);
  const wrongFence = decodeFrame(fenceFrame, { receiver: "secondary" });
  assert.ok(!wrongFence.ok && wrongFence.fatal && wrongFence.code === "PROTOCOL");
  assert.ok(decodeFrame(fencedFrame, { receiver: "secondary" }).ok);
  const wrongFenced = decodeFrame(fencedFrame, { receiver: "primary" });
  assert.ok(!wrongFenced.ok && wrongFenced.fatal && wrongFenced.code === "PROTOCOL");
  // Zero fence id, zero handle, non-zero reserved, a trailing byte, a sequence at 2^53: malformed.
  const bad: Buffer[] = [];
  const zeroId = Buffer.from(fenced);
  zeroId.writeBigUInt64LE(0n, 8);
  bad.push(withPayload(18, zeroId));
  const zeroHandle = Buffer.from(fence);
  zeroHandle.writeUInt32LE(0, 0);
  bad.push(withPayload(17, zeroHandle));
  const reserved = Buffer.from(fenced);
  reserved[4] = 1;
  bad.push(withPayload(18, reserved));
  bad.push(withPayload(18, Buffer.concat([fenced, Buffer.alloc(1)])));
  bad.push(withPayload(17, Buffer.concat([fence, Buffer.alloc(1)])));
  const huge = Buffer.from(fenced);
  huge.writeBigUInt64LE(2n ** 53n, 16);
  bad.push(withPayload(18, huge));
  bad.push(withPayload(18, fenced.subarray(0, 24)));
  const writePastAccepted = Buffer.from(fenced);
  writePastAccepted.writeBigUInt64LE(4243n, 24);
  bad.push(withPayload(18, writePastAccepted));
  for (const f of bad) {
    const r = decodeFrame(f);
    // A FENCED one byte long is over its fixed size: refused from the header (TOO_LARGE).
    assert.ok(!r.ok && r.fatal && (r.code === "PROTOCOL" || r.code === "TOO_LARGE"), JSON.stringify(r));
  }
  // A NACK may refuse a FENCE (the primary could not save it).
  const nack = decodeFrame(frameOf({ type: "NACK", groupHandle: 5, code: "INTERNAL", refType: "FENCE", refId: 3, arrivedSequence: asSequence(0), text: "disk full" }));
  assert.ok(nack.ok && nack.message.type === "NACK" && nack.message.refType === "FENCE");
});

void test("a frame inside one chunk decodes to views of that chunk (no copy)", () => {
  const recs = recordsFrom(1, [{ kind: RecordKind.write, payload: Buffer.alloc(1000, 7), zeroLength: 0, volumeId: 1, offsetBytes: 0, time: 1, marker: 0 }]);
  const chunk = frameOf({ type: "BATCH", groupHandle: 1, batchId: 1, records: recs });
  const [result] = feed(new ReplFrameAssembler(), [chunk]);
  assert.ok(result?.ok && result.message.type === "BATCH");
  assert.equal(result.message.records[0]!.payload.buffer, chunk.buffer);
});

// ---------------------------------------------------------------------------------------
// Bad input

void test("random garbage never throws and never decodes into a message", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 6 }), (garbage, cuts) => {
    const assembler = new ReplFrameAssembler();
    const results = feed(assembler, split(Buffer.from(garbage), cuts));
    for (const r of results) assert.ok(!r.ok);
    if (results.length > 0) {
      assert.ok(assembler.broken);
      assert.deepEqual(assembler.next(), results.at(-1), "a fatal result is sticky");
      assembler.push(Buffer.alloc(100));
      assert.equal(assembler.bufferedBytes, 0, "a broken assembler drops input");
    }
  }), { numRuns: 500 });
});

void test("garbage after good frames: the good ones decode, then a fatal error", () => {
  fc.assert(fc.property(fc.array(anyMessage, { maxLength: 3 }), fc.uint8Array({ minLength: 20, maxLength: 200 }), (msgs, garbage) => {
    fc.pre(Buffer.from(garbage).readUInt32LE(0) !== replFrameMagic);
    const results = feed(new ReplFrameAssembler(), [Buffer.concat([...msgs.map(frameOf), Buffer.from(garbage)])]);
    assert.deepStrictEqual(okMessages(results.slice(0, msgs.length)), msgs);
    const last = results[msgs.length];
    assert.ok(last !== undefined && !last.ok && last.fatal && last.code === "PROTOCOL");
  }), { numRuns: 200 });
});

void test("any single bit flip in any frame is refused, never decoded as a message", () => {
  fc.assert(fc.property(anyMessage, fc.nat(), fc.integer({ min: 0, max: 7 }), (msg, at, bit) => {
    const frame = Buffer.from(frameOf(msg));
    const i = at % frame.length;
    frame[i] = frame[i]! ^ (1 << bit);
    const results = feed(new ReplFrameAssembler(), [frame]);
    // A flip in a declared length can leave the frame waiting for bytes that never come: also not a message.
    for (const r of results) assert.ok(!r.ok, `flip at ${i} of ${msg.type} decoded`);
  }), { numRuns: 2000 });
});

void test("oversized declared lengths are refused as soon as the header is in, before any payload is buffered", () => {
  for (const type of Object.keys(ReplType) as ReplMessageType[]) {
    const max = replPayloadBytesMax(type);
    for (const declared of [max + 1, 0xffff_ffff]) {
      const assembler = new ReplFrameAssembler();
      assembler.push(rawHeader(ReplType[type], declared, 0));
      assert.ok(assembler.broken, `${type} declaring ${declared} bytes`);
      assert.equal(assembler.bufferedBytes, 0);
      assembler.push(Buffer.alloc(64 * 1024));
      assert.equal(assembler.bufferedBytes, 0, "nothing more is taken in");
      const r = assembler.next();
      assert.ok(r !== undefined && !r.ok && r.fatal);
      assert.equal(r.code, "TOO_LARGE");
    }
  }
  // The per-connection frame limit (the peer's HELLO_OK) applies to BATCH too.
  const small = new ReplFrameAssembler({ frameBytesMax: 4096 });
  small.push(rawHeader(ReplType.BATCH, 4096, 0));
  assert.ok(small.broken);
  // A header split across chunks is checked when its last byte comes in.
  const split2 = new ReplFrameAssembler();
  const header = rawHeader(ReplType.PING, 17, 0);
  split2.push(header.subarray(0, 19));
  assert.ok(!split2.broken);
  split2.push(Buffer.concat([header.subarray(19), Buffer.alloc(1000)]));
  assert.ok(split2.broken);
});

void test("limits: a BATCH of one largest record fits; per-type maxima are what the spec says", () => {
  assert.equal(replPayloadBytesMax("BATCH"), replFrameBytesMax - replHeaderBytes);
  assert.ok(replPayloadBytesMax("BATCH") >= replBatchFixedBytes + journalHeaderBytes + 32 * 1024 * 1024);
  assert.equal(replPayloadBytesMax("COPY_DATA"), 32 + replCopyChunkBytesMax);
  assert.equal(replPayloadBytesMax("PING"), 16);
  assert.equal(replPayloadBytesMax("GROUP_STATE"), 40);
  assert.equal(replPayloadBytesMax("OPEN_GROUP"), 16 + 66 + 2 * 66 + volumesPerGroupMax * (12 + 66));
});

void test("unknown type, bad magic, bad header CRC, unknown frame version or flags: fatal PROTOCOL", () => {
  const ping = frameOf({ type: "PING", pingId: 1, sendTimeUs: 2 });
  const variants: Buffer[] = [];
  const unknownType = rawHeader(99, 0, 0);
  variants.push(unknownType);
  const badMagic = Buffer.from(ping);
  badMagic.write("XXXX", 0, "latin1");
  variants.push(badMagic);
  const badCrc = Buffer.from(ping);
  badCrc[16] = badCrc[16]! ^ 1;
  variants.push(badCrc);
  for (const [at, value] of [[4, 2], [6, 1]] as const) {
    const v = Buffer.from(ping);
    v[at] = value;
    v.writeUInt32LE(checksum(v, 0, 16), 16);
    variants.push(v);
  }
  for (const v of variants) {
    const r = decodeFrame(v);
    assert.ok(!r.ok && r.fatal && r.code === "PROTOCOL", JSON.stringify(r));
  }
});

void test("messages addressed to the other side are refused by a role-aware assembler", () => {
  const ack = frameOf({ type: "ACK", groupHandle: 1, batchId: 1, arrivedSequence: asSequence(1), reflectedSequence: asSequence(0), arrivedWriteTimeUs: asWriteTimeUs(0), arrivedAcceptNumber: asAcceptNumber(0) });
  const r = decodeFrame(ack, { receiver: "secondary" });
  assert.ok(!r.ok && r.fatal && r.code === "PROTOCOL");
  assert.ok(decodeFrame(ack, { receiver: "primary" }).ok);
  assert.ok(decodeFrame(frameOf({ type: "PING", pingId: 1, sendTimeUs: 1 }), { receiver: "secondary" }).ok);
});

void test("fields out of range in a sound frame are fatal PROTOCOL, not thrown", () => {
  const frames: Buffer[] = [];
  const withPayload = (type: number, payload: Buffer): Buffer => Buffer.concat([rawHeader(type, payload.length, checksum(payload)), payload]);
  // GROUP_STATE with reflected past arrived.
  const gs = Buffer.alloc(40);
  gs.writeUInt32LE(1, 0);
  gs[4] = 3;
  gs.writeBigUInt64LE(5n, 8);
  gs.writeBigUInt64LE(6n, 16);
  frames.push(withPayload(ReplType.GROUP_STATE, gs));
  // PULL from sequence 0, and a u64 at 2^53.
  frames.push(withPayload(ReplType.PULL, Buffer.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
  const big = Buffer.alloc(16);
  big.writeBigUInt64LE(2n ** 53n, 0);
  frames.push(withPayload(ReplType.PING, big));
  // Trailing byte after a fixed-size message; payload too short.
  frames.push(withPayload(ReplType.ERROR, Buffer.from([1, 0, 0, 0, 0])));
  frames.push(withPayload(ReplType.PONG, Buffer.alloc(8)));
  // HELLO with a bad name, stream index past the count, an empty version range.
  const hello = (min: number, max: number, index: number, count: number, id: string): Buffer => {
    const p = Buffer.alloc(18 + id.length);
    p.write("tidemark", 0, "latin1");
    p.writeUInt16LE(min, 8);
    p.writeUInt16LE(max, 10);
    p.writeUInt16LE(index, 12);
    p.writeUInt16LE(count, 14);
    p.writeUInt16LE(id.length, 16);
    p.write(id, 18, "latin1");
    return withPayload(ReplType.HELLO, p);
  };
  frames.push(hello(1, 1, 0, 1, "bad name"), hello(1, 1, 2, 2, "A"), hello(2, 1, 0, 1, "A"), hello(1, 1, 0, replStreamsMax + 1, "A"));
  assert.ok(decodeFrame(hello(1, 1, 0, 1, "A")).ok, "the control HELLO is fine");
  // Unknown error code; NACK of a type that cannot be NACKed.
  frames.push(withPayload(ReplType.ERROR, Buffer.from([0x99, 0, 0, 0])));
  const nack = Buffer.alloc(26);
  nack.writeUInt32LE(1, 0);
  nack.writeUInt16LE(1, 4);
  nack[6] = ReplType.PING;
  frames.push(withPayload(ReplType.NACK, nack));
  // BATCH declaring more records than allowed.
  const batch = Buffer.alloc(16);
  batch.writeUInt32LE(1, 0);
  batch.writeUInt32LE(replBatchRecordsMax + 1, 4);
  frames.push(Buffer.concat([rawHeader(ReplType.BATCH, 16, checksum(batch)), batch]));
  for (const f of frames) {
    const r = decodeFrame(f);
    assert.ok(!r.ok && r.fatal && r.code === "PROTOCOL", `frame type ${f[5]}: ${JSON.stringify(r)}`);
  }
});

// ---------------------------------------------------------------------------------------
// Corrupted content: refused in step

void test("BATCH with a corrupted record is BAD_RECORD (not fatal), and the stream goes on", () => {
  fc.assert(fc.property(handle, u53, records.filter((r) => r.length > 0), fc.nat(), (groupHandle, batchId, recs, at) => {
    const frame = Buffer.from(frameOf({ type: "BATCH", groupHandle, batchId, records: recs }));
    const recordsStart = replHeaderBytes + replBatchFixedBytes;
    const i = recordsStart + (at % (frame.length - recordsStart));
    frame[i] = frame[i]! ^ 0x10;
    const next: ReplMessage = { type: "PING", pingId: 5, sendTimeUs: 6 };
    const results = feed(new ReplFrameAssembler(), [frame, frameOf(next)]);
    assert.equal(results.length, 2);
    const [bad, good] = results;
    assert.ok(bad !== undefined && !bad.ok && !bad.fatal, JSON.stringify(bad));
    assert.equal(bad.code, "BAD_RECORD");
    assert.equal(bad.refType, "BATCH");
    assert.equal(bad.refId, batchId);
    assert.equal(bad.groupHandle, groupHandle);
    assert.ok(good?.ok);
    assert.deepStrictEqual(good.message, next);
  }), { numRuns: 300 });
});

void test("BATCH whose fixed part is corrupted is fatal (its group and batch id cannot be trusted)", () => {
  const frame = Buffer.from(frameOf({ type: "BATCH", groupHandle: 1, batchId: 2, records: [] }));
  frame[replHeaderBytes + 8] = 3;
  const r = decodeFrame(frame);
  assert.ok(!r.ok && r.fatal && r.code === "PROTOCOL");
});

void test("BATCH with records out of sequence or a wrong count is BAD_RECORD", () => {
  const recs = recordsFrom(10, [
    { kind: RecordKind.timeAdvance, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 1, marker: 0 },
    { kind: RecordKind.timeAdvance, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 2, marker: 0 },
  ]);
  const build = (count: number, body: Buffer[]): Buffer => {
    const fixed = Buffer.alloc(16);
    fixed.writeUInt32LE(1, 0);
    fixed.writeUInt32LE(count, 4);
    fixed.writeBigUInt64LE(8n, 8);
    const payload = Buffer.concat([fixed, ...body]);
    return Buffer.concat([rawHeader(ReplType.BATCH, payload.length, checksum(fixed)), payload]);
  };
  const [a, b] = recs.map(encodeRecord);
  for (const frame of [build(2, [b!, a!]), build(3, [a!, b!]), build(1, [a!, b!]), build(2, [a!, a!])]) {
    const r = decodeFrame(frame);
    assert.ok(!r.ok && !r.fatal && r.code === "BAD_RECORD" && r.refId === 8, JSON.stringify(r));
  }
  assert.ok(decodeFrame(build(2, [a!, b!])).ok);
});

void test("COPY_DATA with corrupted data is BAD_RECORD naming its chunk; a corrupted fixed part is fatal", () => {
  fc.assert(fc.property(messageArbitraries.COPY_DATA, fc.nat(), (msg, at) => {
    const frame = Buffer.from(frameOf(msg));
    const i = replHeaderBytes + 32 + (at % msg.data.length);
    frame[i] = frame[i]! ^ 0x01;
    const r = decodeFrame(frame);
    assert.ok(!r.ok && !r.fatal && r.refType === "COPY_DATA" && r.refId === msg.chunkId && r.groupHandle === msg.groupHandle);
    const fixedFlip = Buffer.from(frameOf(msg));
    fixedFlip[replHeaderBytes + 17] = fixedFlip[replHeaderBytes + 17]! ^ 0x01;
    const f = decodeFrame(fixedFlip);
    assert.ok(!f.ok && f.fatal);
  }), { numRuns: 200 });
});

// ---------------------------------------------------------------------------------------
// Version negotiation and encoder guards

void test("version negotiation picks the highest common version", () => {
  // A primary from before issue 9 (1..1) gets version 1; a new one version 2 (records with wall times).
  assert.equal(chooseReplVersion(1, 1), 1);
  assert.equal(chooseReplVersion(1, 9), 3, "this build speaks 1..3 (2: wall times, 3: resize records)");
  assert.equal(chooseReplVersion(2, 3), 3);
  assert.equal(chooseReplVersion(4, 5), undefined);
  // A secondary of an earlier version (1..1, or 1..2) and a primary of this one agree on it: no resize record is sent.
  assert.equal(chooseReplVersion(1, 3, 1, 1), 1);
  assert.equal(chooseReplVersion(1, 3, 1, 2), 2);
  assert.equal(chooseReplVersion(1, 5, 3, 7), 5);
  assert.equal(chooseReplVersion(6, 9, 3, 7), 7);
  assert.equal(chooseReplVersion(8, 9, 3, 7), undefined);
});

void test("encoding a message that breaks the rules is a loud bug, not a bad frame", () => {
  assert.throws(() => encodeMessage({ type: "PING", pingId: 2 ** 53, sendTimeUs: 0 }));
  assert.throws(() => encodeMessage({ type: "HELLO", versionMin: 1, versionMax: 1, primaryNodeId: "no spaces", streamIndex: 0, streamCount: 1 }));
  assert.throws(() => encodeMessage({ type: "COPY_DATA", groupHandle: 1, chunkId: 0, volumeId: asVolumeId(0), offsetBytes: 0, data: Buffer.alloc(0) }));
  const recs = recordsFrom(1, [
    { kind: RecordKind.timeAdvance, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 1, marker: 0 },
    { kind: RecordKind.timeAdvance, payload: Buffer.alloc(1), zeroLength: 0, volumeId: 0, offsetBytes: 0, time: 1, marker: 0 },
  ]);
  assert.throws(() => encodeMessage({ type: "BATCH", groupHandle: 1, batchId: 1, records: [recs[1]!, recs[0]!] }));
});
