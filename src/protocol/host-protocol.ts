// The timestamped host protocol (DESIGN.md: the patent's "mainframe host", whose write
// requests carry a write time). Pure codec and frame assembler: bytes in, messages out,
// no I/O. The wire format is specified in docs/host-protocol.md; in short, every frame in
// either direction is a 48-byte header, checksummed on its own, then `payloadBytes` bytes:
//
//    0 u32 magic "TMHP"        20 u32 payloadBytes
//    4 u8  op                  24 u64 offsetBytes
//    5 u8  flags               32 u64 value (READ: lengthBytes; WRITE: writeTimeUs)
//    6 u16 status (replies)    40 u32 payload CRC-32 (when flag payloadCrc; else 0)
//    8 u64 handle              44 u32 header CRC-32 of bytes 0..43
//   16 u32 slot
// All little-endian. A reply's op is the request's op | 0x80.
//
// Layers: decodeHeader (structure: magic, checksum), FrameAssembler (reassembly across
// chunks, length limits before buffering), parseRequest / parseReply (meaning: per-op
// fields, ranges, payload checksum). Failures are values, never exceptions.
import { hostErrorMessageBytesMax, hostRequestBytesMax, hostRequestsInFlightMax, hostVolumesPerConnectionMax, nameLengthMax } from "../core/limits.ts";
import { assert } from "../core/assert.ts";
import { ChunkQueue } from "./chunk-queue.ts";
import { checksum } from "./bytes.ts";

export const hostFrameMagic = 0x50484d54; // "TMHP" read little-endian
export const hostHeaderBytes = 48;
/** Carried in the HELLO payloads: the 8 ASCII bytes "tidemark". */
export const hostHelloMagic = Buffer.from("tidemark", "latin1");
export const hostProtocolVersionMin = 1;
export const hostProtocolVersionMax = 1;
export const hostHelloRequestBytes = 16;
export const hostHelloReplyBytes = 32;
export const hostOpenReplyBytes = 16;

/** Request op codes; a reply carries op | replyBit. */
export const HostOp = { hello: 1, open: 2, close: 3, write: 4, read: 5, flush: 6 } as const;
export type HostOpName = keyof typeof HostOp;
export const replyBit = 0x80;
/** Reply op of an error answer to a request whose op was not understood (stream still in step). */
export const rejectOp = 0xfe;
/** Connection-level error: the sender closes the connection after it. */
export const fatalOp = 0xff;
const opNames = new Map<number, HostOpName>(Object.entries(HostOp).map(([name, code]) => [code, name as HostOpName]));

export const HostFlag = {
  /** WRITE: answer only once the write is durable. */
  fua: 0x01,
  /** WRITE: the value field holds the host's write time (µs since the epoch). */
  writeTime: 0x02,
  /** Any frame: the payload CRC field holds the CRC-32 of the payload. */
  payloadCrc: 0x80,
} as const;
const flagsAllowed = new Map<HostOpName, number>([
  ["hello", HostFlag.payloadCrc],
  ["open", HostFlag.payloadCrc],
  ["close", HostFlag.payloadCrc],
  ["write", HostFlag.fua | HostFlag.writeTime | HostFlag.payloadCrc],
  ["read", HostFlag.payloadCrc],
  ["flush", HostFlag.payloadCrc],
]);

/** Volume flags in the OPEN reply. */
export const volumeFlagReadOnly = 0x01;

/** Reply status codes: 0 is success, the rest are Linux errno numbers. */
export const HostStatus = {
  ok: 0,
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EBUSY: 16,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  ENAMETOOLONG: 36,
  EPROTO: 71,
  EBADMSG: 74,
  EMSGSIZE: 90,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
} as const;
export type HostStatusName = Exclude<keyof typeof HostStatus, "ok">;
const statusNames = new Map<number, HostStatusName>(
  Object.entries(HostStatus).filter(([name]) => name !== "ok").map(([name, code]) => [code, name as HostStatusName]),
);

/** The name of a request op code, or undefined. */
export function requestOpName(op: number): HostOpName | undefined {
  return opNames.get(op);
}

/** "EPERM" for 1, ...; an unknown number gives "E<number>". */
export function statusName(status: number): string {
  return statusNames.get(status) ?? `E${status}`;
}

/** The header fields as they are on the wire (64-bit fields kept exact as bigint). */
export interface FrameHeader {
  readonly op: number;
  readonly flags: number;
  readonly status: number;
  readonly handle: bigint;
  readonly slot: number;
  readonly payloadBytes: number;
  readonly offset: bigint;
  readonly value: bigint;
  readonly payloadCrc: number;
}

export type HeaderDecodeResult =
  | { readonly ok: true; readonly header: FrameHeader }
  | { readonly ok: false; readonly reason: "truncated"; readonly bytesNeeded: number }
  | { readonly ok: false; readonly reason: "corrupt"; readonly detail: string };

const u64Max = 0xffff_ffff_ffff_ffffn;

/** Encodes a header; computes the header CRC. `payloadCrc` must already be right for `flags`. */
export function encodeHeader(header: FrameHeader, out: Buffer = Buffer.allocUnsafe(hostHeaderBytes), at = 0): Buffer {
  assert(header.op >= 0 && header.op <= 0xff && header.flags >= 0 && header.flags <= 0xff, "op and flags are bytes");
  assert(header.status >= 0 && header.status <= 0xffff, "status is a u16");
  assert(header.handle >= 0n && header.handle <= u64Max && header.offset >= 0n && header.offset <= u64Max, "u64 fields");
  assert(header.value >= 0n && header.value <= u64Max, "u64 value");
  out.writeUInt32LE(hostFrameMagic, at);
  out.writeUInt8(header.op, at + 4);
  out.writeUInt8(header.flags, at + 5);
  out.writeUInt16LE(header.status, at + 6);
  out.writeBigUInt64LE(header.handle, at + 8);
  out.writeUInt32LE(header.slot, at + 16);
  out.writeUInt32LE(header.payloadBytes, at + 20);
  out.writeBigUInt64LE(header.offset, at + 24);
  out.writeBigUInt64LE(header.value, at + 32);
  out.writeUInt32LE(header.payloadCrc, at + 40);
  out.writeUInt32LE(checksum(out, at, at + 44), at + 44);
  return out;
}

/** Structure only: magic and header checksum. Meaning is checked by parseRequest/parseReply. */
export function decodeHeader(buf: Buffer, at = 0): HeaderDecodeResult {
  const available = buf.length - at;
  if (available < hostHeaderBytes) return { ok: false, reason: "truncated", bytesNeeded: hostHeaderBytes - Math.max(0, available) };
  if (buf.readUInt32LE(at) !== hostFrameMagic) return { ok: false, reason: "corrupt", detail: "bad frame magic (not a tidemark host protocol frame)" };
  if (checksum(buf, at, at + 44) !== buf.readUInt32LE(at + 44)) return { ok: false, reason: "corrupt", detail: "frame header checksum mismatch" };
  return {
    ok: true,
    header: {
      op: buf.readUInt8(at + 4),
      flags: buf.readUInt8(at + 5),
      status: buf.readUInt16LE(at + 6),
      handle: buf.readBigUInt64LE(at + 8),
      slot: buf.readUInt32LE(at + 16),
      payloadBytes: buf.readUInt32LE(at + 20),
      offset: buf.readBigUInt64LE(at + 24),
      value: buf.readBigUInt64LE(at + 32),
      payloadCrc: buf.readUInt32LE(at + 40),
    },
  };
}

// ---------------------------------------------------------------------------------------
// Frame assembler

export type AssemblerEvent =
  | { readonly kind: "frame"; readonly header: FrameHeader; readonly payload: Buffer }
  /** The header is sound but declares more payload than allowed: the payload is skipped, the stream stays in step. */
  | { readonly kind: "oversized"; readonly header: FrameHeader; readonly payloadBytesMax: number }
  /** The stream cannot be trusted any more (bad magic or header checksum): close the connection. */
  | { readonly kind: "corrupt"; readonly detail: string };

/**
 * Reassembles frames from chunks as a socket delivers them. Each byte is copied at most
 * once (a frame inside one chunk is a view of it, never a copy); the declared payload
 * length is checked against `payloadBytesMax(header)` before a byte of it is buffered.
 */
export class FrameAssembler {
  readonly #payloadBytesMax: (header: FrameHeader) => number;
  readonly #queue = new ChunkQueue();
  #pending: FrameHeader | undefined;
  #skipBytes = 0;
  #broken: AssemblerEvent | undefined;

  constructor(payloadBytesMax: (header: FrameHeader) => number) {
    this.#payloadBytesMax = payloadBytesMax;
  }

  /** Bytes held and not yet returned as frames. */
  get bufferedBytes(): number {
    return this.#queue.buffered;
  }

  push(chunk: Buffer): void {
    if (this.#broken !== undefined || chunk.length === 0) return;
    if (this.#skipBytes > 0 && this.#queue.buffered === 0) {
      // Drop skipped payload on arrival rather than holding it.
      const drop = Math.min(this.#skipBytes, chunk.length);
      this.#skipBytes -= drop;
      chunk = chunk.subarray(drop);
      if (chunk.length === 0) return;
    }
    this.#queue.push(chunk);
  }

  /** The next complete event, or undefined when more bytes are needed. */
  next(): AssemblerEvent | undefined {
    if (this.#broken !== undefined) return this.#broken;
    if (this.#skipBytes > 0) {
      const drop = Math.min(this.#skipBytes, this.#queue.buffered);
      this.#queue.discard(drop);
      this.#skipBytes -= drop;
      if (this.#skipBytes > 0) return undefined;
    }
    if (this.#pending === undefined) {
      if (this.#queue.buffered < hostHeaderBytes) return undefined;
      const decoded = decodeHeader(this.#queue.take(hostHeaderBytes));
      if (!decoded.ok) {
        assert(decoded.reason === "corrupt", "a full header is never truncated");
        this.#broken = { kind: "corrupt", detail: decoded.detail };
        this.#queue.clear();
        return this.#broken;
      }
      const header = decoded.header;
      const payloadBytesMax = this.#payloadBytesMax(header);
      if (header.payloadBytes > payloadBytesMax) {
        this.#skipBytes = header.payloadBytes;
        const drop = Math.min(this.#skipBytes, this.#queue.buffered);
        this.#queue.discard(drop);
        this.#skipBytes -= drop;
        return { kind: "oversized", header, payloadBytesMax };
      }
      this.#pending = header;
    }
    const header = this.#pending;
    if (this.#queue.buffered < header.payloadBytes) return undefined;
    this.#pending = undefined;
    return { kind: "frame", header, payload: this.#queue.take(header.payloadBytes) };
  }
}

/** Payload limits of requests, as the server's assembler applies them. */
export function requestPayloadBytesMax(header: FrameHeader): number {
  switch (header.op) {
    case HostOp.hello: return hostHelloRequestBytes;
    case HostOp.open: return nameLengthMax;
    case HostOp.write: return hostRequestBytesMax;
    default: return 0;
  }
}

/** Payload limits of replies, as the client's assembler applies them. */
export function replyPayloadBytesMax(header: FrameHeader): number {
  if (header.status !== HostStatus.ok || header.op === fatalOp || header.op === rejectOp) return hostErrorMessageBytesMax;
  switch (header.op) {
    case HostOp.hello | replyBit: return hostHelloReplyBytes;
    case HostOp.open | replyBit: return hostOpenReplyBytes;
    case HostOp.read | replyBit: return hostRequestBytesMax;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------------------
// Requests

export type HostRequest =
  | { readonly op: "hello"; readonly handle: bigint; readonly versionMin: number; readonly versionMax: number }
  | { readonly op: "open"; readonly handle: bigint; readonly name: string }
  | { readonly op: "close"; readonly handle: bigint; readonly slot: number }
  | {
    readonly op: "write"; readonly handle: bigint; readonly slot: number; readonly offsetBytes: number;
    readonly data: Buffer; readonly fua: boolean; readonly writeTimeUs: number | undefined;
  }
  | { readonly op: "read"; readonly handle: bigint; readonly slot: number; readonly offsetBytes: number; readonly lengthBytes: number }
  | { readonly op: "flush"; readonly handle: bigint; readonly slot: number };

export type RequestParseResult =
  | { readonly ok: true; readonly request: HostRequest }
  /** The frame was whole and in step: answer `handle` with `status`, keep the connection. */
  | { readonly ok: false; readonly op: HostOpName | undefined; readonly handle: bigint; readonly status: number; readonly detail: string };

/** The frames (header, then payload if any) of a request. Payloads always carry a CRC. */
export function encodeRequest(request: HostRequest): Buffer[] {
  const base = { op: HostOp[request.op], status: 0, handle: request.handle, slot: 0, offset: 0n, value: 0n };
  switch (request.op) {
    case "hello": {
      const payload = Buffer.alloc(hostHelloRequestBytes);
      hostHelloMagic.copy(payload, 0);
      payload.writeUInt16LE(request.versionMin, 8);
      payload.writeUInt16LE(request.versionMax, 10);
      return withPayload({ ...base, flags: 0 }, payload);
    }
    case "open":
      return withPayload({ ...base, flags: 0 }, Buffer.from(request.name, "utf8"));
    case "close":
    case "flush":
      return withPayload({ ...base, slot: request.slot, flags: 0 }, undefined);
    case "read":
      return withPayload({ ...base, slot: request.slot, flags: 0, offset: BigInt(request.offsetBytes), value: BigInt(request.lengthBytes) }, undefined);
    case "write": {
      const hasTime = request.writeTimeUs !== undefined;
      const flags = (request.fua ? HostFlag.fua : 0) | (hasTime ? HostFlag.writeTime : 0);
      return withPayload({ ...base, slot: request.slot, flags, offset: BigInt(request.offsetBytes), value: BigInt(request.writeTimeUs ?? 0) }, request.data);
    }
  }
}

function withPayload(fields: Omit<FrameHeader, "payloadBytes" | "payloadCrc">, payload: Buffer | undefined): Buffer[] {
  if (payload === undefined || payload.length === 0) {
    return [encodeHeader({ ...fields, payloadBytes: 0, payloadCrc: 0 })];
  }
  const header = encodeHeader({ ...fields, flags: fields.flags | HostFlag.payloadCrc, payloadBytes: payload.length, payloadCrc: checksum(payload) });
  return [header, payload];
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const utf8Lenient = new TextDecoder("utf-8");

function safeNumber(value: bigint): number | undefined {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : undefined;
}

/** CRC check common to both directions: flag set → CRC must match; flag clear → field must be 0. */
function payloadCrcProblem(header: FrameHeader, payload: Buffer): string | undefined {
  if ((header.flags & HostFlag.payloadCrc) !== 0) {
    return checksum(payload) === header.payloadCrc ? undefined : "payload checksum mismatch";
  }
  return header.payloadCrc === 0 ? undefined : "payload CRC field set without the payloadCrc flag";
}

/** Meaning of a request frame: per-op fields and limits. Slots and volume ranges are the server's to check. */
export function parseRequest(header: FrameHeader, payload: Buffer): RequestParseResult {
  const op = opNames.get(header.op);
  const handle = header.handle;
  const fail = (status: number, detail: string): RequestParseResult => ({ ok: false, op, handle, status, detail });
  if (op === undefined) return fail(HostStatus.EPROTO, `unknown request op ${header.op}`);
  assert(payload.length === header.payloadBytes, "the assembler delivers the declared payload");
  if (header.status !== 0) return fail(HostStatus.EPROTO, "a request carries status 0");
  const allowed = flagsAllowed.get(op) ?? 0;
  if ((header.flags & ~allowed) !== 0) return fail(HostStatus.EINVAL, `flags 0x${header.flags.toString(16)} not valid for ${op}`);
  const crcProblem = payloadCrcProblem(header, payload);
  if (crcProblem !== undefined) return fail(HostStatus.EBADMSG, crcProblem);
  const needsSlot = op === "close" || op === "write" || op === "read" || op === "flush";
  if (needsSlot ? header.slot === 0 : header.slot !== 0) return fail(HostStatus.EINVAL, needsSlot ? `${op} needs a slot` : `${op} takes no slot`);
  const usesOffset = op === "write" || op === "read";
  if (!usesOffset && header.offset !== 0n) return fail(HostStatus.EINVAL, `${op} takes no offset`);
  const offsetBytes = safeNumber(header.offset);
  if (offsetBytes === undefined) return fail(HostStatus.EINVAL, "offset beyond 2^53");
  const usesValue = op === "read" || (op === "write" && (header.flags & HostFlag.writeTime) !== 0);
  if (!usesValue && header.value !== 0n) return fail(HostStatus.EINVAL, `${op} value field must be 0`);
  const value = safeNumber(header.value);
  if (value === undefined) return fail(HostStatus.EINVAL, "value beyond 2^53");
  switch (op) {
    case "hello": {
      if (payload.length !== hostHelloRequestBytes) return fail(HostStatus.EPROTO, `HELLO payload is ${payload.length} bytes, not ${hostHelloRequestBytes}`);
      if (!payload.subarray(0, 8).equals(hostHelloMagic)) return fail(HostStatus.EPROTO, "bad HELLO magic");
      if (payload.readUInt32LE(12) !== 0) return fail(HostStatus.EPROTO, "HELLO reserved field must be 0");
      const versionMin = payload.readUInt16LE(8);
      const versionMax = payload.readUInt16LE(10);
      if (versionMin > versionMax || versionMin === 0) return fail(HostStatus.EPROTO, `bad version range ${versionMin}..${versionMax}`);
      return { ok: true, request: { op, handle, versionMin, versionMax } };
    }
    case "open": {
      if (payload.length === 0) return fail(HostStatus.EINVAL, "empty volume name");
      if (payload.length > nameLengthMax) return fail(HostStatus.ENAMETOOLONG, `volume name longer than ${nameLengthMax} bytes`);
      let name: string;
      try {
        name = utf8Strict.decode(payload);
      } catch {
        return fail(HostStatus.EINVAL, "volume name is not valid UTF-8");
      }
      if (name.includes("\0")) return fail(HostStatus.EINVAL, "volume name holds a NUL");
      return { ok: true, request: { op, handle, name } };
    }
    case "close":
    case "flush":
      if (payload.length !== 0) return fail(HostStatus.EINVAL, `${op} takes no payload`);
      return { ok: true, request: { op, handle, slot: header.slot } };
    case "read":
      if (payload.length !== 0) return fail(HostStatus.EINVAL, "READ takes no payload");
      if (value === 0) return fail(HostStatus.EINVAL, "READ of 0 bytes");
      if (value > hostRequestBytesMax) return fail(HostStatus.EMSGSIZE, `READ of ${value} bytes is over the ${hostRequestBytesMax}-byte limit`);
      return { ok: true, request: { op, handle, slot: header.slot, offsetBytes, lengthBytes: value } };
    case "write": {
      if (payload.length === 0) return fail(HostStatus.EINVAL, "WRITE of 0 bytes");
      const hasTime = (header.flags & HostFlag.writeTime) !== 0;
      // Validity of the time itself (isValidHostWriteTimeUs) is the server's check: a 0 here is refused there.
      const writeTimeUs = hasTime ? value : undefined;
      return { ok: true, request: { op, handle, slot: header.slot, offsetBytes, data: payload, fua: (header.flags & HostFlag.fua) !== 0, writeTimeUs } };
    }
  }
}

// ---------------------------------------------------------------------------------------
// Replies

export interface HostServerLimits {
  readonly requestBytesMax: number;
  readonly requestsInFlightMax: number;
  readonly volumesPerConnectionMax: number;
  readonly nameLengthMax: number;
}

export const serverLimits: HostServerLimits = {
  requestBytesMax: hostRequestBytesMax,
  requestsInFlightMax: hostRequestsInFlightMax,
  volumesPerConnectionMax: hostVolumesPerConnectionMax,
  nameLengthMax,
};

export type HostOkReply =
  | { readonly kind: "ok"; readonly op: "hello"; readonly handle: bigint; readonly version: number; readonly limits: HostServerLimits }
  | { readonly kind: "ok"; readonly op: "open"; readonly handle: bigint; readonly slot: number; readonly sizeBytes: number; readonly readOnly: boolean }
  | { readonly kind: "ok"; readonly op: "close" | "write" | "flush"; readonly handle: bigint }
  | { readonly kind: "ok"; readonly op: "read"; readonly handle: bigint; readonly data: Buffer };

export interface HostErrorReply {
  readonly kind: "error";
  /** The request's op; "unknown" when the request's op was not understood; "fatal" closes the connection. */
  readonly op: HostOpName | "unknown" | "fatal";
  readonly handle: bigint;
  /** Non-zero HostStatus. */
  readonly status: number;
  readonly message: string;
}

export type HostReply = HostOkReply | HostErrorReply;

export type ReplyParseResult =
  | { readonly ok: true; readonly reply: HostReply }
  | { readonly ok: false; readonly detail: string };

function errorMessageBytes(message: string): Buffer {
  let bytes = Buffer.from(message, "utf8");
  if (bytes.length > hostErrorMessageBytesMax) {
    // Cut on a character boundary: drop continuation bytes (10xxxxxx) at the cut.
    let end = hostErrorMessageBytesMax;
    while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
    bytes = bytes.subarray(0, end);
  }
  return bytes;
}

export function encodeReply(reply: HostReply): Buffer[] {
  if (reply.kind === "error") {
    assert(reply.status !== HostStatus.ok && reply.status <= 0xffff, "an error reply has a non-zero u16 status");
    const op = reply.op === "fatal" ? fatalOp : reply.op === "unknown" ? rejectOp : HostOp[reply.op] | replyBit;
    return withPayload({ op, flags: 0, status: reply.status, handle: reply.handle, slot: 0, offset: 0n, value: 0n }, errorMessageBytes(reply.message));
  }
  const base = { op: HostOp[reply.op] | replyBit, flags: 0, status: 0, handle: reply.handle, slot: 0, offset: 0n, value: 0n };
  switch (reply.op) {
    case "hello": {
      const payload = Buffer.alloc(hostHelloReplyBytes);
      hostHelloMagic.copy(payload, 0);
      payload.writeUInt16LE(reply.version, 8);
      payload.writeUInt32LE(reply.limits.requestBytesMax, 12);
      payload.writeUInt32LE(reply.limits.requestsInFlightMax, 16);
      payload.writeUInt32LE(reply.limits.volumesPerConnectionMax, 20);
      payload.writeUInt32LE(reply.limits.nameLengthMax, 24);
      return withPayload(base, payload);
    }
    case "open": {
      const payload = Buffer.alloc(hostOpenReplyBytes);
      payload.writeBigUInt64LE(BigInt(reply.sizeBytes), 0);
      payload.writeUInt32LE(reply.readOnly ? volumeFlagReadOnly : 0, 8);
      return withPayload({ ...base, slot: reply.slot }, payload);
    }
    case "close":
    case "write":
    case "flush":
      return withPayload(base, undefined);
    case "read":
      return withPayload(base, reply.data);
  }
}

/**
 * Meaning of a reply frame (client side). The client is strict: a reply that is not
 * exactly as specified means the server speaks something else, and the connection goes.
 * The one in-step exception is a READ reply whose payload checksum fails: that becomes an
 * EBADMSG error for that request.
 */
export function parseReply(header: FrameHeader, payload: Buffer): ReplyParseResult {
  const bad = (detail: string): ReplyParseResult => ({ ok: false, detail });
  assert(payload.length === header.payloadBytes, "the assembler delivers the declared payload");
  const handle = header.handle;
  if (header.slot !== 0 && header.op !== (HostOp.open | replyBit)) return bad("reply carries a slot");
  if (header.offset !== 0n || header.value !== 0n) return bad("reply offset/value fields must be 0");
  if ((header.flags & ~HostFlag.payloadCrc) !== 0) return bad(`reply flags 0x${header.flags.toString(16)}`);
  const crcProblem = payloadCrcProblem(header, payload);
  const isError = header.status !== HostStatus.ok || header.op === fatalOp || header.op === rejectOp;
  if (isError) {
    if (header.status === HostStatus.ok) return bad("error frame with status 0");
    if (crcProblem !== undefined) return bad(crcProblem);
    let op: HostErrorReply["op"];
    if (header.op === fatalOp) op = "fatal";
    else if (header.op === rejectOp) op = "unknown";
    else {
      const name = (header.op & replyBit) !== 0 ? opNames.get(header.op & ~replyBit) : undefined;
      if (name === undefined) return bad(`unknown reply op ${header.op}`);
      op = name;
    }
    return { ok: true, reply: { kind: "error", op, handle, status: header.status, message: utf8Lenient.decode(payload) } };
  }
  const name = (header.op & replyBit) !== 0 ? opNames.get(header.op & ~replyBit) : undefined;
  if (name === undefined) return bad(`unknown reply op ${header.op}`);
  if (crcProblem !== undefined) {
    if (name === "read") return { ok: true, reply: { kind: "error", op: name, handle, status: HostStatus.EBADMSG, message: `READ reply ${crcProblem}` } };
    return bad(crcProblem);
  }
  switch (name) {
    case "hello": {
      if (payload.length !== hostHelloReplyBytes) return bad(`HELLO reply is ${payload.length} bytes`);
      if (!payload.subarray(0, 8).equals(hostHelloMagic)) return bad("bad HELLO reply magic");
      const limits: HostServerLimits = {
        requestBytesMax: payload.readUInt32LE(12),
        requestsInFlightMax: payload.readUInt32LE(16),
        volumesPerConnectionMax: payload.readUInt32LE(20),
        nameLengthMax: payload.readUInt32LE(24),
      };
      if (limits.requestBytesMax === 0 || limits.requestsInFlightMax === 0) return bad("HELLO reply limits of 0");
      return { ok: true, reply: { kind: "ok", op: name, handle, version: payload.readUInt16LE(8), limits } };
    }
    case "open": {
      if (payload.length !== hostOpenReplyBytes) return bad(`OPEN reply is ${payload.length} bytes`);
      if (header.slot === 0) return bad("OPEN reply without a slot");
      const sizeBytes = safeNumber(payload.readBigUInt64LE(0));
      if (sizeBytes === undefined) return bad("volume size beyond 2^53");
      const volumeFlags = payload.readUInt32LE(8);
      if ((volumeFlags & ~volumeFlagReadOnly) !== 0) return bad(`unknown volume flags 0x${volumeFlags.toString(16)}`);
      return { ok: true, reply: { kind: "ok", op: name, handle, slot: header.slot, sizeBytes, readOnly: (volumeFlags & volumeFlagReadOnly) !== 0 } };
    }
    case "close":
    case "write":
    case "flush":
      if (payload.length !== 0) return bad(`${name} reply carries a payload`);
      return { ok: true, reply: { kind: "ok", op: name, handle } };
    case "read":
      return { ok: true, reply: { kind: "ok", op: name, handle, data: payload } };
  }
}
