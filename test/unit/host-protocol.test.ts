// Proves the host-protocol codec (src/protocol/host-protocol.ts) with fast-check and exhaustive loops: requests and replies round-trip, any split of the byte stream gives the same frames, every truncation asks for more bytes, garbage and bit flips become values (never exceptions), and oversized lengths are refused before buffering with the stream kept in step.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { hostErrorMessageBytesMax, hostRequestBytesMax, nameLengthMax } from "../../src/core/limits.ts";
import {
  FrameAssembler, HostFlag, HostOp, HostStatus, decodeHeader, encodeHeader, encodeReply, encodeRequest, fatalOp, hostHeaderBytes,
  parseReply, parseRequest, replyBit, replyPayloadBytesMax, requestPayloadBytesMax, serverLimits, statusName,
  type AssemblerEvent, type FrameHeader, type HostReply, type HostRequest,
} from "../../src/protocol/host-protocol.ts";

const u64Max = 2n ** 64n - 1n;
const handleArb = fc.bigInt({ min: 0n, max: u64Max });
const slotArb = fc.integer({ min: 1, max: 0xffff_ffff });
const offsetArb = fc.oneof(fc.integer({ min: 0, max: 1 << 20 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const dataArb = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a));
const nameArb = fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 })
  .filter((s) => Buffer.byteLength(s) <= nameLengthMax && !s.includes("\0"));

const requestArb: fc.Arbitrary<HostRequest> = fc.oneof(
  fc.record({ op: fc.constant("hello" as const), handle: handleArb, a: fc.integer({ min: 1, max: 0xffff }), b: fc.integer({ min: 1, max: 0xffff }) })
    .map(({ op, handle, a, b }) => ({ op, handle, versionMin: Math.min(a, b), versionMax: Math.max(a, b) })),
  fc.record({ op: fc.constant("open" as const), handle: handleArb, name: nameArb }),
  fc.record({ op: fc.constantFrom("close" as const, "flush" as const), handle: handleArb, slot: slotArb }),
  fc.record({ op: fc.constant("read" as const), handle: handleArb, slot: slotArb, offsetBytes: offsetArb, lengthBytes: fc.integer({ min: 1, max: hostRequestBytesMax }) }),
  fc.record({
    op: fc.constant("write" as const), handle: handleArb, slot: slotArb, offsetBytes: offsetArb, data: dataArb, fua: fc.boolean(),
    writeTimeUs: fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
  }),
);

const statusArb = fc.constantFrom(...Object.values(HostStatus).filter((s) => s !== 0), 4242);
const replyArb: fc.Arbitrary<HostReply> = fc.oneof(
  fc.record({ kind: fc.constant("ok" as const), op: fc.constant("hello" as const), handle: handleArb, version: fc.integer({ min: 1, max: 0xffff }), limits: fc.constant(serverLimits) }),
  fc.record({ kind: fc.constant("ok" as const), op: fc.constant("open" as const), handle: handleArb, slot: slotArb, sizeBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), readOnly: fc.boolean() }),
  fc.record({ kind: fc.constant("ok" as const), op: fc.constantFrom("close" as const, "write" as const, "flush" as const), handle: handleArb }),
  fc.record({ kind: fc.constant("ok" as const), op: fc.constant("read" as const), handle: handleArb, data: dataArb }),
  fc.record({
    kind: fc.constant("error" as const), op: fc.constantFrom("hello" as const, "open" as const, "close" as const, "write" as const, "read" as const, "flush" as const, "unknown" as const, "fatal" as const),
    handle: handleArb, status: statusArb, message: fc.string({ maxLength: 100 }),
  }),
);

/** Feeds `chunks` to a fresh assembler and collects every event (stopping after a corrupt one). */
function assemble(chunks: Buffer[], payloadBytesMax: (h: FrameHeader) => number): AssemblerEvent[] {
  const assembler = new FrameAssembler(payloadBytesMax);
  const events: AssemblerEvent[] = [];
  for (const chunk of chunks) {
    assembler.push(chunk);
    for (let e = assembler.next(); e !== undefined; e = assembler.next()) {
      events.push(e);
      if (e.kind === "corrupt") return events;
    }
  }
  return events;
}

function requestsOf(events: AssemblerEvent[]): HostRequest[] {
  return events.map((e) => {
    assert.equal(e.kind, "frame");
    if (e.kind !== "frame") throw new Error("unreachable");
    const parsed = parseRequest(e.header, e.payload);
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.detail);
    return parsed.request;
  });
}

function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}

void test("requests round-trip through encode, assembler and parse", () => {
  fc.assert(fc.property(requestArb, (request) => {
    const [back] = requestsOf(assemble([Buffer.concat(encodeRequest(request))], requestPayloadBytesMax));
    assert.deepEqual(back, { ...request }); // fc.record builds null-prototype objects
  }), { numRuns: 2000 });
});

void test("replies round-trip through encode, assembler and parse", () => {
  fc.assert(fc.property(replyArb, (reply) => {
    const events = assemble([Buffer.concat(encodeReply(reply))], replyPayloadBytesMax);
    assert.equal(events.length, 1);
    const event = events[0]!;
    assert.equal(event.kind, "frame");
    if (event.kind !== "frame") return;
    const parsed = parseReply(event.header, event.payload);
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.detail);
    assert.deepEqual(parsed.reply, { ...reply });
  }), { numRuns: 2000 });
});

void test("any split of a stream of requests into chunks gives the same requests", () => {
  fc.assert(fc.property(fc.array(requestArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (requests, cuts) => {
    const stream = Buffer.concat(requests.flatMap(encodeRequest));
    assert.deepEqual(requestsOf(assemble(splitAt(stream, cuts), requestPayloadBytesMax)), requests.map((r) => ({ ...r })));
  }), { numRuns: 500 });
});

void test("split at every byte boundary, and fed one byte at a time, a stream gives the same requests", () => {
  const requests: HostRequest[] = [
    { op: "hello", handle: 1n, versionMin: 1, versionMax: 1 },
    { op: "open", handle: 2n, name: "vol-ä" },
    { op: "write", handle: u64Max, slot: 1, offsetBytes: 2 ** 40, data: Buffer.from("payload across chunks"), fua: true, writeTimeUs: 1_700_000_000_000_000 },
    { op: "read", handle: 4n, slot: 1, offsetBytes: 512, lengthBytes: 4096 },
    { op: "flush", handle: 5n, slot: 1 },
    { op: "write", handle: 6n, slot: 2, offsetBytes: 0, data: Buffer.alloc(1, 7), fua: false, writeTimeUs: undefined },
    { op: "close", handle: 7n, slot: 2 },
  ];
  const stream = Buffer.concat(requests.flatMap(encodeRequest));
  for (let cut = 0; cut <= stream.length; cut++) {
    assert.deepEqual(requestsOf(assemble([stream.subarray(0, cut), stream.subarray(cut)], requestPayloadBytesMax)), requests, `cut at ${cut}`);
  }
  const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
  assert.deepEqual(requestsOf(assemble(bytes, requestPayloadBytesMax)), requests);
});

void test("truncation at every byte: the complete frames come out, then the assembler waits, never errs", () => {
  const requests: HostRequest[] = [
    { op: "open", handle: 2n, name: "data" },
    { op: "write", handle: 3n, slot: 1, offsetBytes: 8, data: Buffer.alloc(100, 9), fua: false, writeTimeUs: 77 },
    { op: "read", handle: 4n, slot: 1, offsetBytes: 0, lengthBytes: 1 },
  ];
  const frames = requests.map((r) => Buffer.concat(encodeRequest(r)));
  const stream = Buffer.concat(frames);
  const ends = frames.reduce<number[]>((acc, f) => [...acc, (acc.at(-1) ?? 0) + f.length], []);
  for (let length = 0; length < stream.length; length++) {
    const assembler = new FrameAssembler(requestPayloadBytesMax);
    assembler.push(stream.subarray(0, length));
    const events: AssemblerEvent[] = [];
    for (let e = assembler.next(); e !== undefined; e = assembler.next()) events.push(e);
    const complete = ends.filter((end) => end <= length).length;
    assert.equal(events.length, complete, `prefix of ${length}`);
    assert.ok(events.every((e) => e.kind === "frame"));
    assert.equal(assembler.next(), undefined);
  }
  // decodeHeader on a short buffer says how much is missing.
  for (let length = 0; length < hostHeaderBytes; length++) {
    const result = decodeHeader(stream.subarray(0, length));
    assert.deepEqual(result, { ok: false, reason: "truncated", bytesNeeded: hostHeaderBytes - length });
  }
});

void test("garbage never throws: the assembler reports corruption as a value and stays broken", () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }), (chunks) => {
    const events = assemble(chunks.map((c) => Buffer.from(c)), requestPayloadBytesMax);
    for (const e of events) {
      if (e.kind === "frame") {
        const parsed = parseRequest(e.header, e.payload); // a frame by chance: its meaning is checked, not thrown
        assert.equal(typeof parsed.ok, "boolean");
      }
    }
  }), { numRuns: 2000 });
  const assembler = new FrameAssembler(requestPayloadBytesMax);
  assembler.push(Buffer.from("this is not a frame, not at all, and it is longer than one header"));
  const first = assembler.next();
  assert.equal(first?.kind, "corrupt");
  assembler.push(Buffer.concat(encodeRequest({ op: "flush", handle: 1n, slot: 1 })));
  assert.deepEqual(assembler.next(), first, "once out of step, always out of step");
});

void test("valid headers with arbitrary fields and payloads parse to values in both directions, never throw", () => {
  const headerArb = fc.record({
    op: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(...Object.values(HostOp)), fc.constantFrom(...Object.values(HostOp).map((o) => o | replyBit))),
    flags: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, HostFlag.payloadCrc, HostFlag.fua | HostFlag.writeTime)),
    status: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
    handle: handleArb,
    slot: fc.oneof(fc.constant(0), slotArb),
    offset: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: u64Max })),
    value: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: u64Max })),
  });
  fc.assert(fc.property(headerArb, fc.uint8Array({ maxLength: 64 }), fc.boolean(), (fields, payloadBytes, goodCrc) => {
    const payload = Buffer.from(payloadBytes);
    const header: FrameHeader = { ...fields, payloadBytes: payload.length, payloadCrc: goodCrc && (fields.flags & HostFlag.payloadCrc) !== 0 ? crcOf(payload) : 0 };
    const decoded = decodeHeader(encodeHeader(header));
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.header, header);
    const request = parseRequest(header, payload);
    const reply = parseReply(header, payload);
    if (!request.ok) assert.ok(request.status > 0 && request.handle === header.handle);
    if (request.ok) assert.equal(request.request.handle, header.handle);
    assert.equal(typeof reply.ok, "boolean");
  }), { numRuns: 5000 });
});

function crcOf(payload: Buffer): number {
  const [header] = encodeRequest({ op: "write", handle: 0n, slot: 1, offsetBytes: 0, data: payload, fua: false, writeTimeUs: undefined });
  return header!.readUInt32LE(40);
}

void test("every single bit flipped in a header is caught (magic or header CRC)", () => {
  const [header] = encodeRequest({ op: "write", handle: 9n, slot: 3, offsetBytes: 4096, data: Buffer.alloc(16), fua: true, writeTimeUs: 123 });
  for (let bit = 0; bit < hostHeaderBytes * 8; bit++) {
    const flipped = Buffer.from(header!);
    flipped.writeUInt8(flipped.readUInt8(bit >> 3) ^ (1 << (bit & 7)), bit >> 3);
    const decoded = decodeHeader(flipped);
    assert.equal(decoded.ok, false, `bit ${bit}`);
    assert.equal(decoded.ok ? "" : decoded.reason, "corrupt");
  }
});

void test("a flipped payload byte under a sound header is EBADMSG, in step (requests) and for READ replies", () => {
  fc.assert(fc.property(dataArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (data, at, mask) => {
    const [header, payload] = encodeRequest({ op: "write", handle: 5n, slot: 1, offsetBytes: 0, data, fua: false, writeTimeUs: undefined });
    const bad = Buffer.from(payload!);
    const i = at % bad.length;
    bad.writeUInt8(bad.readUInt8(i) ^ mask, i);
    const decoded = decodeHeader(header!);
    assert.ok(decoded.ok);
    const parsed = parseRequest(decoded.header, bad);
    assert.ok(!parsed.ok && parsed.status === HostStatus.EBADMSG && parsed.op === "write" && parsed.handle === 5n);
    const [replyHeader] = encodeReply({ kind: "ok", op: "read", handle: 6n, data });
    const replyDecoded = decodeHeader(replyHeader!);
    assert.ok(replyDecoded.ok);
    const reply = parseReply(replyDecoded.header, bad);
    assert.ok(reply.ok && reply.reply.kind === "error" && reply.reply.op === "read" && reply.reply.status === HostStatus.EBADMSG);
  }), { numRuns: 500 });
});

void test("oversized declared lengths are refused at the header, skipped without buffering, and the next frame decodes", () => {
  fc.assert(fc.property(
    fc.constantFrom(HostOp.hello, HostOp.open, HostOp.close, HostOp.read, HostOp.flush, 0x42),
    fc.integer({ min: 1, max: 5000 }), fc.array(fc.nat(), { maxLength: 6 }),
    (op, excess, cuts) => {
      const header: FrameHeader = { op, flags: 0, status: 0, handle: 77n, slot: 1, payloadBytes: 0, offset: 0n, value: 0n, payloadCrc: 0 };
      const max = requestPayloadBytesMax(header);
      const payloadBytes = max + excess;
      const oversized = encodeHeader({ ...header, payloadBytes });
      const next = Buffer.concat(encodeRequest({ op: "flush", handle: 78n, slot: 1 }));
      const stream = Buffer.concat([oversized, Buffer.alloc(payloadBytes, 0xee), next]);
      const events = assemble(splitAt(stream, cuts), requestPayloadBytesMax);
      assert.equal(events.length, 2);
      const first = events[0]!;
      assert.ok(first.kind === "oversized" && first.header.handle === 77n && first.payloadBytesMax === max);
      assert.deepEqual(requestsOf([events[1]!]), [{ op: "flush", handle: 78n, slot: 1 }]);
    },
  ), { numRuns: 500 });
  // The largest case: a WRITE one byte over the limit, its 32 MiB skipped as it arrives (nothing held).
  const assembler = new FrameAssembler(requestPayloadBytesMax);
  assembler.push(encodeHeader({ op: HostOp.write, flags: 0, status: 0, handle: 1n, slot: 1, payloadBytes: hostRequestBytesMax + 1, offset: 0n, value: 0n, payloadCrc: 0 }));
  assert.equal(assembler.next()?.kind, "oversized");
  const mib = Buffer.alloc(1 << 20);
  for (let sent = 0; sent < hostRequestBytesMax; sent += mib.length) {
    assembler.push(mib);
    assert.equal(assembler.bufferedBytes, 0);
    assert.equal(assembler.next(), undefined);
  }
  assembler.push(Buffer.concat([Buffer.alloc(1), ...encodeRequest({ op: "flush", handle: 2n, slot: 1 })]));
  assert.equal(assembler.next()?.kind, "frame");
  // A u32 length at its maximum is refused the same way.
  const huge = assemble([encodeHeader({ op: HostOp.write, flags: 0, status: 0, handle: 3n, slot: 1, payloadBytes: 0xffff_ffff, offset: 0n, value: 0n, payloadCrc: 0 })], requestPayloadBytesMax);
  assert.equal(huge[0]?.kind, "oversized");
});

void test("request fields each op does not use must be zero; limits on names and reads hold", () => {
  const sound = (fields: Partial<FrameHeader>, payload = Buffer.alloc(0)) => {
    const header: FrameHeader = { op: HostOp.flush, flags: 0, status: 0, handle: 1n, slot: 1, payloadBytes: payload.length, offset: 0n, value: 0n, payloadCrc: 0, ...fields };
    return parseRequest(header, payload);
  };
  const statusOf = (r: ReturnType<typeof parseRequest>) => (r.ok ? 0 : r.status);
  assert.equal(statusOf(sound({})), 0);
  assert.equal(statusOf(sound({ offset: 1n })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ value: 1n })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ slot: 0 })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ status: 5 })), HostStatus.EPROTO);
  assert.equal(statusOf(sound({ flags: HostFlag.fua })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ payloadCrc: 1 })), HostStatus.EBADMSG, "a CRC without the payloadCrc flag");
  assert.equal(statusOf(sound({ op: HostOp.read, value: 0n })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ op: HostOp.read, value: BigInt(hostRequestBytesMax + 1) })), HostStatus.EMSGSIZE);
  assert.equal(statusOf(sound({ op: HostOp.read, value: 8n, offset: 2n ** 53n })), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ op: HostOp.write, value: 5n }, Buffer.alloc(1))), HostStatus.EINVAL, "a time without the writeTime flag");
  assert.equal(statusOf(sound({ op: HostOp.write }, Buffer.alloc(0))), HostStatus.EINVAL, "a write of 0 bytes");
  assert.equal(statusOf(sound({ op: HostOp.open, slot: 0 }, Buffer.from([0xc3, 0x28]))), HostStatus.EINVAL, "invalid UTF-8");
  assert.equal(statusOf(sound({ op: HostOp.open, slot: 0 }, Buffer.from("a\0b"))), HostStatus.EINVAL);
  assert.equal(statusOf(sound({ op: HostOp.open, slot: 0 }, Buffer.alloc(nameLengthMax + 1, 0x61))), HostStatus.ENAMETOOLONG);
  assert.equal(statusOf(sound({ op: HostOp.hello, slot: 0 }, Buffer.alloc(16))), HostStatus.EPROTO, "HELLO without its magic");
  assert.equal(statusOf(sound({ op: HostOp.hello | replyBit })), HostStatus.EPROTO, "a reply sent as a request");
  assert.equal(statusOf(sound({ op: fatalOp })), HostStatus.EPROTO);
});

void test("error messages are cut to the limit on a character boundary; unknown statuses keep their number", () => {
  const [header, payload] = encodeReply({ kind: "error", op: "write", handle: 1n, status: HostStatus.EIO, message: "é".repeat(2000) });
  assert.ok(payload!.length <= hostErrorMessageBytesMax);
  const decoded = decodeHeader(header!);
  assert.ok(decoded.ok);
  const parsed = parseReply(decoded.header, payload!);
  assert.ok(parsed.ok && parsed.reply.kind === "error");
  assert.match(parsed.reply.message, /^é+$/);
  assert.equal(statusName(HostStatus.ENOENT), "ENOENT");
  assert.equal(statusName(4242), "E4242");
});

void test("the WRITE example of docs/host-protocol.md, byte for byte", () => {
  const hex = (b: Buffer[]) => Buffer.concat(b).toString("hex");
  const write = encodeRequest({ op: "write", handle: 3n, slot: 1, offsetBytes: 4096, data: Buffer.from("deadbeef", "hex"), fua: true, writeTimeUs: 1_700_000_000_000_000 });
  assert.equal(hex(write), [
    "544d4850", "04", "83", "0000", "0300000000000000", "01000000", "04000000", "0010000000000000", "00401e18240a0600", "5aa39c7c", "a661c187", "deadbeef",
  ].join(""));
  const reply = encodeReply({ kind: "ok", op: "write", handle: 3n });
  assert.equal(hex(reply), "544d4850" + "84" + "00" + "0000" + "0300000000000000" + "00".repeat(28) + "cc3178af");
});
