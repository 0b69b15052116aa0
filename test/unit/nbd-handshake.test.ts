// Proves the pure NBD handshake: option codecs round-trip and survive garbage and truncation,
// and the negotiation state machine answers GO/INFO/LIST/ABORT/EXPORT_NAME/unknown options
// as doc/proto.md says, enforces its limits, and gives the same answers however the client's
// bytes are split.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { ExportDescription } from "../../src/core/volume-io.ts";
import {
  ClientFlag, Info, nbdGreetingBytes, nbdOptionHeaderBytes, Opt, Rep, TransmissionFlag, transmissionFlagsServed,
} from "../../src/protocol/nbd/constants.ts";
import { ByteQueue } from "../../src/protocol/nbd/frame-assembler.ts";
import {
  decodeClientFlags, decodeInfoRequest, decodeName, decodeOptionHeader, nameProblem, decodeOptionReplyHeader, encodeGreeting,
  encodeInfoRequest, encodeOption, encodeOptionReply, NbdHandshake, type HandshakeLimits, type HandshakeStep,
} from "../../src/protocol/nbd/handshake.ts";

const limits: HandshakeLimits = { optionBytesMax: 8192, optionsMax: 16, stringBytesMax: 4096, requestBytesMax: 32 << 20 };
const two: ExportDescription[] = [
  { name: "alpha", sizeBytes: 1 << 20, readOnly: false },
  { name: "beta", sizeBytes: 5 * 4096, readOnly: true },
];

function clientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0);
  return b;
}

interface Reply {
  readonly option: number;
  readonly replyType: number;
  readonly data: Buffer;
}

/** Parses a sequence of option replies (the test's independent reader). */
function parseReplies(bytes: Buffer): Reply[] {
  const out: Reply[] = [];
  let at = 0;
  while (at < bytes.length) {
    const h = decodeOptionReplyHeader(bytes, at);
    assert.ok(h.ok, "well-formed option reply");
    out.push({ option: h.header.option, replyType: h.header.replyType, data: bytes.subarray(at + 20, at + 20 + h.header.lengthBytes) });
    at += 20 + h.header.lengthBytes;
  }
  return out;
}

interface Run {
  readonly steps: HandshakeStep[];
  readonly sent: Buffer;
  readonly end: HandshakeStep | undefined;
  readonly left: number;
}

/** Feeds chunks to a handshake, collecting every step until it ends. */
function run(chunks: readonly Buffer[], exports: readonly ExportDescription[] = two, lim = limits): Run {
  const hs = new NbdHandshake(() => exports, lim);
  const queue = new ByteQueue();
  const steps: HandshakeStep[] = [];
  for (const chunk of chunks) {
    queue.push(chunk);
    for (;;) {
      const step = hs.next(queue);
      if (step.kind === "need-more") break;
      steps.push(step);
      if (step.kind !== "send") {
        const sent = Buffer.concat(steps.flatMap((s) => s.kind === "need-more" ? [] : [...s.data]));
        return { steps, sent, end: step, left: queue.length };
      }
    }
  }
  const sent = Buffer.concat(steps.flatMap((s) => s.kind === "need-more" ? [] : [...s.data]));
  return { steps, sent, end: undefined, left: queue.length };
}

const fixed = clientFlags(ClientFlag.fixedNewstyle | ClientFlag.noZeroes);
const goAlpha = encodeOption(Opt.go, encodeInfoRequest({ name: "alpha", infos: [Info.blockSize, Info.name, Info.description, 77] }));

void describe("handshake codecs", () => {
  void it("greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES", () => {
    const g = encodeGreeting();
    assert.equal(g.length, nbdGreetingBytes);
    assert.equal(g.subarray(0, 16).toString("latin1"), "NBDMAGICIHAVEOPT");
    assert.equal(g.readUInt16BE(16), 3);
  });

  void it("accepts known client flags and refuses any other bit", () => {
    assert.deepEqual(decodeClientFlags(clientFlags(0)), { ok: true, noZeroes: false });
    assert.deepEqual(decodeClientFlags(clientFlags(3)), { ok: true, noZeroes: true });
    fc.assert(fc.property(fc.integer({ min: 4, max: 0xffff_ffff }), (flags) => {
      assert.equal(decodeClientFlags(clientFlags(flags)).ok, false);
    }));
    assert.equal(decodeClientFlags(Buffer.alloc(3)).ok, false);
  });

  void it("round-trips option headers and INFO/GO requests", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), fc.uint8Array({ maxLength: 100 }), (option, data) => {
      const encoded = encodeOption(option, Buffer.from(data));
      const h = decodeOptionHeader(encoded);
      assert.deepEqual(h, { ok: true, header: { option, lengthBytes: data.length } });
      for (let n = 0; n < nbdOptionHeaderBytes; n++) assert.deepEqual(decodeOptionHeader(encoded.subarray(0, n)), { ok: false, reason: "truncated" });
    }));
    fc.assert(fc.property(fc.string({ unit: "grapheme", maxLength: 40 }).filter((s) => !s.includes("\0")), fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 10 }), (name, infos) => {
      const decoded = decodeInfoRequest(encodeInfoRequest({ name, infos }), 4096);
      assert.deepEqual(decoded, { ok: true, request: { name, infos } });
    }));
  });

  void it("rejects INFO/GO data truncated at every byte, or with bytes to spare", () => {
    const full = encodeInfoRequest({ name: "alpha", infos: [1, 3] });
    for (let n = 0; n < full.length; n++) assert.equal(decodeInfoRequest(full.subarray(0, n), 4096).ok, false, `truncated at ${n}`);
    assert.equal(decodeInfoRequest(Buffer.concat([full, Buffer.alloc(1)]), 4096).ok, false);
  });

  void it("never throws on garbage INFO/GO data or names", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      decodeInfoRequest(Buffer.from(bytes), 16);
      decodeName(Buffer.from(bytes), 16);
      decodeOptionReplyHeader(Buffer.from(bytes));
    }));
  });

  void it("rejects names with NUL, invalid UTF-8 or past the length limit", () => {
    assert.equal(decodeName(Buffer.from("a\0b"), 100), undefined);
    assert.equal(decodeName(Buffer.from([0xc3, 0x28]), 100), undefined);
    assert.equal(decodeName(Buffer.alloc(5, 0x61), 4), undefined);
    assert.equal(decodeName(Buffer.from("vol-é"), 100), "vol-é");
    // What the client hears says which rule the name broke (a 4097-byte name is too long, not "invalid").
    const long = Buffer.alloc(4097, 0x61);
    const request = Buffer.concat([Buffer.from([0, 0, 0x10, 0x01]), long, Buffer.from([0, 0])]);
    assert.deepEqual(decodeInfoRequest(request, 4096), { ok: false, reason: "export name is 4097 bytes, longer than the 4096-byte limit (proto.md: strings of at most 4096 bytes)" });
    assert.equal(nameProblem(Buffer.from("a\0b"), 100), "export name holds a NUL byte");
    assert.equal(nameProblem(Buffer.from([0xc3, 0x28]), 100), "export name is not valid UTF-8");
    assert.equal(nameProblem(Buffer.alloc(4096, 0x61), 4096), undefined);
  });
});

void describe("negotiation", () => {
  void it("GO: INFO_EXPORT, BLOCK_SIZE and NAME, then ACK and transmission; DESCRIPTION and unknown types ignored", () => {
    const r = run([fixed, goAlpha]);
    assert.equal(r.end?.kind, "transmission");
    const replies = parseReplies(r.sent);
    assert.deepEqual(replies.map((x) => [x.option, x.replyType]), [[Opt.go, Rep.info], [Opt.go, Rep.info], [Opt.go, Rep.info], [Opt.go, Rep.ack]]);
    const [exportInfo, blockSize, name] = replies.map((x) => x.data);
    assert.equal(exportInfo!.readUInt16BE(0), Info.export);
    assert.equal(exportInfo!.readUInt32BE(2) * 2 ** 32 + exportInfo!.readUInt32BE(6), 1 << 20);
    assert.equal(exportInfo!.readUInt16BE(10), transmissionFlagsServed);
    assert.equal(blockSize!.readUInt16BE(0), Info.blockSize);
    assert.deepEqual([blockSize!.readUInt32BE(2), blockSize!.readUInt32BE(6), blockSize!.readUInt32BE(10)], [1, 4096, 32 << 20]);
    assert.equal(name!.readUInt16BE(0), Info.name);
    assert.equal(name!.subarray(2).toString(), "alpha");
    if (r.end?.kind === "transmission") assert.equal(r.end.export.name, "alpha");
  });

  void it("INFO answers and stays in negotiation; a read-only export says READ_ONLY and offers no TRIM/ZEROES", () => {
    const info = encodeOption(Opt.info, encodeInfoRequest({ name: "beta", infos: [] }));
    const r = run([fixed, info]);
    assert.equal(r.end, undefined);
    const replies = parseReplies(r.sent);
    assert.deepEqual(replies.map((x) => x.replyType), [Rep.info, Rep.info, Rep.ack]);
    const flags = replies[0]!.data.readUInt16BE(10);
    assert.ok(flags & TransmissionFlag.readOnly);
    assert.equal(flags & (TransmissionFlag.sendTrim | TransmissionFlag.sendWriteZeroes), 0);
    assert.ok(flags & TransmissionFlag.sendFlush);
  });

  void it("LIST sends one SERVER per export then ACK; LIST with data is invalid", () => {
    const r = run([fixed, encodeOption(Opt.list), encodeOption(Opt.list, Buffer.from("x"))]);
    const replies = parseReplies(r.sent);
    assert.deepEqual(replies.map((x) => x.replyType), [Rep.server, Rep.server, Rep.ack, Rep.errInvalid]);
    const names = replies.slice(0, 2).map((x) => x.data.subarray(4, 4 + x.data.readUInt32BE(0)).toString());
    assert.deepEqual(names, ["alpha", "beta"]);
  });

  void it("ABORT: ACK then a clean close", () => {
    const r = run([fixed, encodeOption(Opt.abort)]);
    assert.equal(r.end?.kind, "close");
    assert.ok(r.end?.kind === "close" && r.end.clean);
    assert.deepEqual(parseReplies(r.sent).map((x) => [x.option, x.replyType]), [[Opt.abort, Rep.ack]]);
  });

  void it("EXPORT_NAME: size, flags and 124 zeroes unless NO_ZEROES", () => {
    for (const [flags, length] of [[ClientFlag.fixedNewstyle, 134], [ClientFlag.fixedNewstyle | ClientFlag.noZeroes, 10], [0, 134]] as const) {
      const r = run([clientFlags(flags), encodeOption(Opt.exportName, Buffer.from("beta"))]);
      assert.equal(r.end?.kind, "transmission");
      assert.equal(r.sent.length, length);
      assert.equal(r.sent.readUInt32BE(4), 5 * 4096);
      assert.ok(r.sent.readUInt16BE(8) & TransmissionFlag.readOnly);
      assert.ok(r.sent.subarray(10).every((b) => b === 0));
    }
  });

  void it("EXPORT_NAME of an unknown export closes without a reply", () => {
    const r = run([fixed, encodeOption(Opt.exportName, Buffer.from("nope"))]);
    assert.equal(r.end?.kind, "close");
    assert.equal(r.sent.length, 0);
  });

  void it("unknown options, STRUCTURED_REPLY, EXTENDED_HEADERS, STARTTLS and meta contexts get ERR_UNSUP with their data drained", () => {
    const opts = [Opt.structuredReply, Opt.extendedHeaders, Opt.startTls, Opt.listMetaContext, Opt.setMetaContext, Opt.peekExport, 4242];
    const r = run([fixed, ...opts.map((o) => encodeOption(o, Buffer.from("payload bytes"))), goAlpha]);
    assert.equal(r.end?.kind, "transmission");
    const replies = parseReplies(r.sent);
    assert.deepEqual(replies.slice(0, opts.length).map((x) => [x.option, x.replyType]), opts.map((o) => [o, Rep.errUnsup]));
  });

  void it("unknown export gets ERR_UNKNOWN; the default export is the only one, else unknown", () => {
    const go = (name: string) => encodeOption(Opt.go, encodeInfoRequest({ name, infos: [] }));
    const r1 = run([fixed, go("nope"), go("")]);
    assert.deepEqual(parseReplies(r1.sent).map((x) => x.replyType), [Rep.errUnknown, Rep.errUnknown]);
    assert.equal(r1.end, undefined);
    const r2 = run([fixed, go("")], [two[0]!]);
    assert.equal(r2.end?.kind === "transmission" && r2.end.export.name, "alpha");
    const r3 = run([fixed, encodeOption(Opt.exportName)], [two[1]!]);
    assert.equal(r3.end?.kind === "transmission" && r3.end.export.name, "beta");
  });

  void it("malformed INFO/GO data gets ERR_INVALID and negotiation goes on", () => {
    const r = run([fixed, encodeOption(Opt.go, Buffer.from([0, 0, 0, 9, 1])), goAlpha]);
    const replies = parseReplies(r.sent);
    assert.equal(replies[0]!.replyType, Rep.errInvalid);
    assert.equal(r.end?.kind, "transmission");
  });

  void it("an option longer than the limit gets ERR_TOO_BIG and a close", () => {
    const header = encodeOption(Opt.go).subarray(0, 16);
    header.writeUInt32BE(limits.optionBytesMax + 1, 12);
    const r = run([fixed, header]);
    assert.equal(r.end?.kind, "close");
    assert.deepEqual(parseReplies(r.sent).map((x) => x.replyType), [Rep.errTooBig]);
    const huge = encodeOption(Opt.exportName).subarray(0, 16);
    huge.writeUInt32BE(0xffff_ffff, 12);
    const r2 = run([fixed, huge]);
    assert.equal(r2.end?.kind, "close");
    assert.equal(r2.sent.length, 0, "EXPORT_NAME has no error reply");
  });

  void it("too many options close the connection", () => {
    const r = run([fixed, ...Array.from({ length: limits.optionsMax + 1 }, () => encodeOption(Opt.list))]);
    assert.equal(r.end?.kind, "close");
    assert.ok(r.end?.kind === "close" && !r.end.clean);
    assert.equal(parseReplies(r.sent).filter((x) => x.replyType === Rep.ack).length, limits.optionsMax);
  });

  void it("unknown client flags and a bad option magic close the connection", () => {
    assert.equal(run([clientFlags(4)]).end?.kind, "close");
    const bad = encodeOption(Opt.list);
    bad[0] = 0;
    assert.equal(run([fixed, bad]).end?.kind, "close");
  });

  void it("bytes after GO stay queued for the transmission phase", () => {
    const r = run([Buffer.concat([fixed, goAlpha, Buffer.from("next request bytes")])]);
    assert.equal(r.end?.kind, "transmission");
    assert.equal(r.left, "next request bytes".length);
  });

  void it("gives the same answers however the client's bytes are split", () => {
    const stream = Buffer.concat([fixed, encodeOption(Opt.list), encodeOption(999, Buffer.from("zz")), encodeOption(Opt.info, encodeInfoRequest({ name: "beta", infos: [1] })), goAlpha]);
    const whole = run([stream]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const parts = run([stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(parts.sent, whole.sent);
      assert.equal(parts.end?.kind, "transmission");
    }
    fc.assert(fc.property(fc.array(fc.nat(stream.length), { maxLength: 20 }), (cuts) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let from = 0;
      for (const p of points) {
        chunks.push(stream.subarray(from, p));
        from = p;
      }
      chunks.push(stream.subarray(from));
      assert.deepEqual(run(chunks).sent, whole.sent);
    }));
  });

  void it("never throws on garbage, and only ends by close or transmission", () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), fc.boolean(), (chunks, lead) => {
      const r = run([...(lead ? [fixed] : []), ...chunks.map((c) => Buffer.from(c))]);
      if (r.end !== undefined) assert.ok(r.end.kind === "close" || r.end.kind === "transmission");
    }));
    // Garbage after a valid option magic exercises the option paths.
    fc.assert(fc.property(fc.integer({ min: 0, max: 20 }), fc.uint8Array({ maxLength: 64 }), (option, data) => {
      run([fixed, encodeOption(option, Buffer.from(data))]);
    }));
  });

  void it("encodes option replies with the reply magic", () => {
    const b = encodeOptionReply(Opt.list, Rep.errUnsup, Buffer.from("msg"));
    assert.equal(b.readUInt32BE(0), 0x0003e889);
    assert.equal(b.readUInt32BE(4), 0x045565a9);
    assert.deepEqual(decodeOptionReplyHeader(b), { ok: true, header: { option: Opt.list, replyType: Rep.errUnsup, lengthBytes: 3 } });
  });
});
