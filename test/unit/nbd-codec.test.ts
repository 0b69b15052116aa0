// Proves the pure NBD codecs: byte queue, request/reply headers, request validation and the
// request assembler, by example and with fast-check (round trips, garbage, truncation at
// every byte, oversized lengths, streams split at every boundary).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Cmd, CmdFlag, NbdErrno, nbdRequestHeaderBytes, nbdSimpleReplyHeaderBytes } from "../../src/protocol/nbd/constants.ts";
import { ByteQueue } from "../../src/protocol/nbd/frame-assembler.ts";
import {
  decodeRequestHeader, decodeSimpleReplyHeader, encodeRequestHeader, encodeSimpleReplyHeader,
  RequestAssembler, validateRequest, type AssembledRequest, type ExportLimits, type NbdRequest,
} from "../../src/protocol/nbd/transmission.ts";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const exp: ExportLimits = { sizeBytes: 1 << 20, readOnly: false, requestBytesMax: 64 * 1024 };

function req(type: number, offsetBytes: number, lengthBytes: number, flags = 0, cookieLo = 7): NbdRequest {
  return { flags, type, cookieHi: 0xdead, cookieLo, offsetBytes, lengthBytes };
}

/** Splits a buffer at the given cut points (sorted, deduplicated, inside the buffer). */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < buf.length))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    out.push(buf.subarray(from, p));
    from = p;
  }
  out.push(buf.subarray(from));
  return out;
}

void describe("ByteQueue", () => {
  void it("returns the bytes in order whatever the chunking and take sizes", () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 300 }), fc.array(fc.nat(300)), fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 60 }),
      (bytes, cuts, takes) => {
        const data = Buffer.from(bytes);
        const q = new ByteQueue();
        for (const chunk of split(data, cuts)) q.push(chunk);
        const got: Buffer[] = [];
        for (const n of takes) {
          if (n > q.length) break;
          got.push(Buffer.from(q.take(n)));
        }
        got.push(Buffer.from(q.take(q.length)));
        assert.deepEqual(Buffer.concat(got), data);
        assert.equal(q.length, 0);
      },
    ));
  });

  void it("gives a view (no copy) when the bytes lie in one chunk, a copy of exact size otherwise", () => {
    // Buffer.alloc is never pooled, so buffer identity tells a view from a copy.
    const a = Buffer.alloc(4);
    a.set([1, 2, 3, 4]);
    const b = Buffer.alloc(4);
    b.set([5, 6, 7, 8]);
    const q = new ByteQueue();
    q.push(a);
    q.push(b);
    const first = q.take(3);
    assert.equal(first.buffer, a.buffer);
    assert.equal(first.byteOffset, a.byteOffset);
    const spanning = q.take(3);
    assert.deepEqual([...spanning], [4, 5, 6]);
    assert.equal(spanning.length, 3);
    assert.notEqual(spanning.buffer, b.buffer);
    assert.equal(q.length, 2);
  });

  void it("skips and peeks across chunks", () => {
    const q = new ByteQueue();
    q.push(Buffer.from([0, 1]));
    q.push(Buffer.from([2]));
    q.push(Buffer.from([3, 4, 5, 6]));
    assert.equal(q.peekU32BE(1), 0x01020304);
    assert.equal(q.skip(3), 3);
    assert.equal(q.peekU32BE(0), 0x03040506);
    assert.equal(q.skip(10), 4);
    assert.equal(q.length, 0);
  });

  void it("keeps working after many chunks (compaction)", () => {
    const q = new ByteQueue();
    let pushed = 0;
    let expected = 0;
    for (let i = 0; i < 1000; i++) {
      q.push(Buffer.from([pushed & 0xff, (pushed + 1) & 0xff]));
      pushed += 2;
      // Read a little less than arrives, so unread chunks pile up and get compacted.
      const n = i % 3 === 0 ? 1 : 2;
      for (const byte of q.take(Math.min(n, q.length))) {
        assert.equal(byte, expected & 0xff);
        expected++;
      }
    }
    for (const byte of q.take(q.length)) {
      assert.equal(byte, expected & 0xff);
      expected++;
    }
    assert.equal(expected, pushed);
  });
});

void describe("request and reply headers", () => {
  const request = fc.record({
    flags: u16, type: u16, cookieHi: u32, cookieLo: u32,
    offsetBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), lengthBytes: u32,
  });

  void it("round-trips a request header", () => {
    fc.assert(fc.property(request, (r) => {
      const decoded = decodeRequestHeader(encodeRequestHeader(r));
      assert.ok(decoded.ok);
      assert.deepEqual(decoded.request, { ...r });
    }));
  });

  void it("reports truncation at every byte and a bad magic", () => {
    const full = encodeRequestHeader(req(Cmd.read, 4096, 512));
    for (let n = 0; n < nbdRequestHeaderBytes; n++) {
      assert.deepEqual(decodeRequestHeader(full.subarray(0, n)), { ok: false, reason: "truncated" });
    }
    const bad = Buffer.from(full);
    bad[0] = 0x26;
    const decoded = decodeRequestHeader(bad);
    assert.equal(decoded.ok, false);
    assert.equal(!decoded.ok && decoded.reason, "bad-magic");
  });

  void it("never throws on garbage", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(70), (bytes, at) => {
      const buf = Buffer.from(bytes);
      decodeRequestHeader(buf, Math.min(at, buf.length));
      decodeSimpleReplyHeader(buf, Math.min(at, buf.length));
    }));
  });

  void it("decodes offsets past 2^53 to values past every volume", () => {
    const buf = encodeRequestHeader(req(Cmd.read, 0, 512));
    buf.writeUInt32BE(0xffff_ffff, 16);
    buf.writeUInt32BE(0xffff_ffff, 20);
    const decoded = decodeRequestHeader(buf);
    assert.ok(decoded.ok);
    assert.ok(decoded.request.offsetBytes > Number.MAX_SAFE_INTEGER);
    assert.equal(validateRequest(decoded.request, exp), NbdErrno.einval);
  });

  void it("round-trips a simple reply header", () => {
    fc.assert(fc.property(u32, u32, u32, (errno, hi, lo) => {
      const buf = encodeSimpleReplyHeader(errno, hi, lo);
      assert.equal(buf.length, nbdSimpleReplyHeaderBytes);
      assert.deepEqual(decodeSimpleReplyHeader(buf), { ok: true, errno, cookieHi: hi, cookieLo: lo });
      for (let n = 0; n < nbdSimpleReplyHeaderBytes; n++) assert.equal(decodeSimpleReplyHeader(buf.subarray(0, n)).ok, false);
    }));
  });
});

void describe("validateRequest", () => {
  const ro: ExportLimits = { ...exp, readOnly: true };
  const size = exp.sizeBytes;
  const cases: [string, NbdRequest, ExportLimits, number][] = [
    ["read in range", req(Cmd.read, 0, 4096), exp, 0],
    ["read to the last byte", req(Cmd.read, size - 1, 1), exp, 0],
    ["read past the end", req(Cmd.read, size - 1, 2), exp, NbdErrno.einval],
    ["read at the end", req(Cmd.read, size, 1), exp, NbdErrno.einval],
    ["read of zero bytes", req(Cmd.read, 0, 0), exp, NbdErrno.einval],
    ["read past the maximum payload", req(Cmd.read, 0, exp.requestBytesMax + 1), exp, NbdErrno.einval],
    ["read with FUA (no effect, allowed)", req(Cmd.read, 0, 1, CmdFlag.fua), exp, 0],
    ["read with DF (not negotiated)", req(Cmd.read, 0, 1, CmdFlag.df), exp, NbdErrno.einval],
    ["write in range with FUA", req(Cmd.write, 512, 512, CmdFlag.fua), exp, 0],
    ["write past the end", req(Cmd.write, size - 10, 20), exp, NbdErrno.enospc],
    ["write of zero bytes", req(Cmd.write, 0, 0), exp, NbdErrno.einval],
    ["write to read-only", req(Cmd.write, 0, 512), ro, NbdErrno.eperm],
    ["write with NO_HOLE", req(Cmd.write, 0, 512, CmdFlag.noHole), exp, NbdErrno.einval],
    ["trim in range", req(Cmd.trim, 0, size), exp, 0],
    ["trim longer than the maximum payload", req(Cmd.trim, 0, exp.requestBytesMax * 4), exp, 0],
    ["trim past the end", req(Cmd.trim, 1, size), exp, NbdErrno.einval],
    ["trim on read-only", req(Cmd.trim, 0, 1), ro, NbdErrno.eperm],
    ["zeroes with NO_HOLE and FUA", req(Cmd.writeZeroes, 0, 4096, CmdFlag.noHole | CmdFlag.fua), exp, 0],
    ["zeroes with FAST_ZERO (not offered)", req(Cmd.writeZeroes, 0, 4096, CmdFlag.fastZero), exp, NbdErrno.einval],
    ["zeroes past the end", req(Cmd.writeZeroes, size, 1), exp, NbdErrno.enospc],
    ["zeroes on read-only", req(Cmd.writeZeroes, 0, 1), ro, NbdErrno.eperm],
    ["flush", req(Cmd.flush, 0, 0), exp, 0],
    ["flush on read-only", req(Cmd.flush, 0, 0), ro, 0],
    ["flush with a range", req(Cmd.flush, 0, 1), exp, NbdErrno.einval],
    ["cache (not offered)", req(Cmd.cache, 0, 1), exp, NbdErrno.einval],
    ["block status (not negotiated)", req(Cmd.blockStatus, 0, 1), exp, NbdErrno.einval],
    ["unknown command", req(77, 0, 1), exp, NbdErrno.einval],
    ["disc", req(Cmd.disc, 0, 0), exp, 0],
  ];
  for (const [name, r, limits, errno] of cases) {
    void it(name, () => assert.equal(validateRequest(r, limits), errno));
  }

  void it("accepts a READ/WRITE only inside the export and the payload limit", () => {
    fc.assert(fc.property(
      fc.constantFrom(Cmd.read, Cmd.write, Cmd.trim, Cmd.writeZeroes), fc.integer({ min: 0, max: 2 ** 40 }), u32,
      (type, offsetBytes, lengthBytes) => {
        const errno = validateRequest(req(type, offsetBytes, lengthBytes), exp);
        const inside = lengthBytes > 0 && offsetBytes + lengthBytes <= size;
        const payloadOk = type === Cmd.trim || type === Cmd.writeZeroes || lengthBytes <= exp.requestBytesMax;
        assert.equal(errno === 0, inside && payloadOk);
      },
    ));
  });
});

interface Sent {
  readonly request: NbdRequest;
  readonly payload: Buffer | undefined;
}

function encodeStream(items: readonly Sent[]): Buffer {
  return Buffer.concat(items.flatMap((s) => s.payload === undefined ? [encodeRequestHeader(s.request)] : [encodeRequestHeader(s.request), s.payload]));
}

function drain(assembler: RequestAssembler): AssembledRequest[] {
  const out: AssembledRequest[] = [];
  for (;;) {
    const next = assembler.next();
    if (next.kind === "need-more") return out;
    out.push(next);
    if (next.kind === "fatal") return out;
  }
}

const smallExp: ExportLimits = { sizeBytes: 65536, readOnly: false, requestBytesMax: 1024 };
const sentArb: fc.Arbitrary<Sent> = fc.oneof(
  fc.record({ offsetBytes: fc.nat(70000), lengthBytes: fc.nat(1100), cookieLo: u32 }).map(({ offsetBytes, lengthBytes, cookieLo }) => ({
    request: req(Cmd.read, offsetBytes, lengthBytes, 0, cookieLo), payload: undefined,
  })),
  fc.record({ offsetBytes: fc.nat(70000), data: fc.uint8Array({ minLength: 0, maxLength: 1024 }), fua: fc.boolean(), cookieLo: u32 }).map(
    ({ offsetBytes, data, fua, cookieLo }) => ({
      request: req(Cmd.write, offsetBytes, data.length, fua ? CmdFlag.fua : 0, cookieLo), payload: Buffer.from(data),
    }),
  ),
  fc.record({ type: fc.constantFrom(Cmd.flush, Cmd.trim, Cmd.writeZeroes, Cmd.cache, 99), offsetBytes: fc.nat(70000), lengthBytes: fc.nat(100000) }).map(
    ({ type, offsetBytes, lengthBytes }) => ({ request: req(type, offsetBytes, lengthBytes), payload: undefined }),
  ),
);

function checkAssembled(items: readonly Sent[], got: readonly AssembledRequest[], limits: ExportLimits): void {
  assert.equal(got.length, items.length);
  items.forEach((sent, i) => {
    const a = got[i]!;
    assert.equal(a.kind, "request");
    if (a.kind !== "request") return;
    assert.deepEqual(a.request, sent.request);
    assert.equal(a.errno, validateRequest(sent.request, limits));
    if (a.errno === 0 && sent.request.type === Cmd.write) assert.deepEqual(a.payload, sent.payload);
    else assert.equal(a.payload, undefined);
  });
}

void describe("RequestAssembler", () => {
  void it("yields the same requests however the stream is split", () => {
    fc.assert(fc.property(fc.array(sentArb, { maxLength: 12 }), fc.array(fc.nat(15000), { maxLength: 30 }), (items, cuts) => {
      const stream = encodeStream(items);
      const assembler = new RequestAssembler(smallExp);
      const got: AssembledRequest[] = [];
      for (const chunk of split(stream, cuts)) {
        assembler.push(chunk);
        got.push(...drain(assembler));
      }
      checkAssembled(items, got, smallExp);
      assert.equal(assembler.bufferedBytes, 0);
    }), { numRuns: 300 });
  });

  void it("yields the same requests when split at every single boundary", () => {
    const items: Sent[] = [
      { request: req(Cmd.write, 100, 5, CmdFlag.fua, 1), payload: Buffer.from("hello") },
      { request: req(Cmd.read, 0, 10, 0, 2), payload: undefined },
      { request: req(Cmd.write, 65530, 10, 0, 3), payload: Buffer.from("0123456789") }, // ENOSPC, drained
      { request: req(Cmd.flush, 0, 0, 0, 4), payload: undefined },
      { request: req(Cmd.write, 0, 3, 0, 5), payload: Buffer.from("abc") },
    ];
    const stream = encodeStream(items);
    for (let cut = 0; cut <= stream.length; cut++) {
      for (const cuts of [[cut], [cut, cut + 1, cut + 29]]) {
        const assembler = new RequestAssembler(smallExp);
        const got: AssembledRequest[] = [];
        for (const chunk of split(stream, cuts)) {
          assembler.push(chunk);
          got.push(...drain(assembler));
        }
        checkAssembled(items, got, smallExp);
      }
    }
    // and byte by byte
    const assembler = new RequestAssembler(smallExp);
    const got: AssembledRequest[] = [];
    for (let i = 0; i < stream.length; i++) {
      assembler.push(stream.subarray(i, i + 1));
      got.push(...drain(assembler));
    }
    checkAssembled(items, got, smallExp);
  });

  void it("yields the same requests when socket reads land straight in a payload (directTarget)", () => {
    // A reader like the server's: when the assembler offers a payload's unfilled tail, the
    // next bytes of the stream are read into it; otherwise they arrive as a chunk.
    fc.assert(fc.property(fc.array(sentArb, { maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 1024 }), (items, reads, minBytes) => {
      const stream = encodeStream(items);
      const assembler = new RequestAssembler(smallExp);
      const got: AssembledRequest[] = [];
      let at = 0;
      let i = 0;
      while (at < stream.length) {
        const want = reads[i++ % reads.length]!;
        const target = assembler.directTarget(minBytes);
        if (target !== undefined) {
          assert.ok(target.length >= minBytes);
          const n = Math.min(want, target.length, stream.length - at);
          stream.copy(target, 0, at, at + n);
          assembler.directFilled(n);
          at += n;
        } else {
          const n = Math.min(want, stream.length - at);
          assembler.push(Buffer.from(stream.subarray(at, at + n)));
          at += n;
        }
        got.push(...drain(assembler));
      }
      checkAssembled(items, got, smallExp);
      assert.equal(assembler.bufferedBytes, 0);
      assert.equal(assembler.directTarget(1), undefined, "nothing left to fill");
    }), { numRuns: 300 });
  });

  void it("offers a direct target only while a payload is being gathered and nothing else is queued", () => {
    const assembler = new RequestAssembler(smallExp);
    assert.equal(assembler.directTarget(1), undefined, "no request yet");
    assembler.push(Buffer.concat([encodeRequestHeader(req(Cmd.write, 0, 1000, 0, 1)), Buffer.alloc(100, 1)]));
    assert.equal(assembler.next().kind, "need-more");
    const target = assembler.directTarget(900);
    assert.equal(target?.length, 900, "the unfilled rest of the payload");
    assert.equal(assembler.directTarget(901), undefined, "less than asked for is missing");
    target.fill(2, 0, 400);
    assembler.directFilled(400);
    assembler.push(Buffer.alloc(10, 3));
    assert.equal(assembler.directTarget(1), undefined, "queued bytes come first");
    assert.equal(assembler.next().kind, "need-more");
    assembler.directTarget(490)!.fill(4);
    assembler.directFilled(490);
    const done = assembler.next();
    assert.ok(done.kind === "request" && done.payload !== undefined);
    assert.deepEqual(done.payload, Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(400, 2), Buffer.alloc(10, 3), Buffer.alloc(490, 4)]));
    assert.throws(() => assembler.directFilled(1), /direct read/);
  });

  void it("drains a rejected WRITE's payload without buffering it", () => {
    const ro: ExportLimits = { ...smallExp, readOnly: true };
    const assembler = new RequestAssembler(ro);
    assembler.push(encodeRequestHeader(req(Cmd.write, 0, 1000)));
    assert.equal(assembler.next().kind, "need-more");
    assembler.push(Buffer.alloc(600));
    assert.equal(assembler.next().kind, "need-more");
    assert.equal(assembler.bufferedBytes, 0, "the dropped bytes are not kept");
    assembler.push(Buffer.concat([Buffer.alloc(400), encodeRequestHeader(req(Cmd.read, 0, 1, 0, 9))]));
    const first = assembler.next();
    assert.equal(first.kind === "request" && first.errno, NbdErrno.eperm);
    const second = assembler.next();
    assert.equal(second.kind === "request" && second.request.cookieLo, 9);
  });

  void it("is fatal on a WRITE longer than the maximum payload, and stays fatal", () => {
    const assembler = new RequestAssembler(smallExp);
    assembler.push(encodeRequestHeader(req(Cmd.write, 0, smallExp.requestBytesMax + 1)));
    assert.equal(assembler.next().kind, "fatal");
    assembler.push(encodeRequestHeader(req(Cmd.read, 0, 1)));
    assert.equal(assembler.next().kind, "fatal");
  });

  void it("is fatal on a bad magic, after yielding the good requests before it", () => {
    const good = encodeRequestHeader(req(Cmd.read, 0, 1));
    const bad = Buffer.from(good);
    bad.writeUInt32BE(0x12345678, 0);
    const assembler = new RequestAssembler(smallExp);
    assembler.push(Buffer.concat([good, good, bad]));
    const got = drain(assembler);
    assert.deepEqual(got.map((g) => g.kind), ["request", "request", "fatal"]);
    const fatal = got[2]!;
    assert.match(fatal.kind === "fatal" ? fatal.reason : "", /bad request magic 0x12345678/);
  });

  void it("never throws on garbage and never holds more than the stream plus nothing", () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 20 }), (chunks) => {
      const assembler = new RequestAssembler(smallExp);
      let pushed = 0;
      for (const c of chunks) {
        assembler.push(Buffer.from(c));
        pushed += c.length;
        const got = drain(assembler);
        assert.ok(assembler.bufferedBytes <= pushed);
        if (got.some((g) => g.kind === "fatal")) return;
      }
    }));
  });

  void it("accepts garbage headers with the right magic as requests with an errno or a payload", () => {
    fc.assert(fc.property(u16, u16, u32, u32, (flags, type, offsetLo, lengthBytes) => {
      const r = req(type, offsetLo, lengthBytes, flags);
      const assembler = new RequestAssembler(smallExp);
      assembler.push(encodeRequestHeader(r));
      const got = assembler.next();
      if (type === Cmd.write && lengthBytes > smallExp.requestBytesMax) assert.equal(got.kind, "fatal");
      else if (type === Cmd.write && lengthBytes > 0) assert.equal(got.kind, "need-more");
      else {
        assert.equal(got.kind, "request");
        assert.equal(got.kind === "request" && got.errno, validateRequest(r, smallExp));
      }
    }));
  });
});
