// NBD transmission phase: the 28-byte request, the 16-byte simple reply, the one place
// that validates a request against its export (and picks the errno), and the per-connection
// request assembler (header, then the WRITE payload gathered or drained). Pure: no I/O.
//
// Request (big-endian): u32 magic 0x25609513, u16 flags, u16 type, u64 cookie, u64 offset, u32 length
// Simple reply:         u32 magic 0x67446698, u32 error, u64 cookie
import { assert } from "../../core/assert.ts";
import {
  Cmd, CmdFlag, NbdErrno, nbdRequestHeaderBytes, nbdRequestMagic, nbdSimpleReplyHeaderBytes, nbdSimpleReplyMagic,
} from "./constants.ts";
import { ByteQueue } from "./frame-assembler.ts";

const twoTo32 = 0x1_0000_0000;

export interface NbdRequest {
  readonly flags: number;
  readonly type: number;
  /** The client's 64-bit cookie ("handle"), opaque to us, echoed in the reply as two u32 halves. */
  readonly cookieHi: number;
  readonly cookieLo: number;
  /**
   * The offset as a double. Offsets at or past 2^53 lose precision, but every one of them is
   * far past the largest volume (volumeBytesMax < 2^53), so range checks still reject them.
   */
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export type RequestHeaderResult =
  | { readonly ok: true; readonly request: NbdRequest }
  | { readonly ok: false; readonly reason: "truncated" }
  | { readonly ok: false; readonly reason: "bad-magic"; readonly magic: number };

export function decodeRequestHeader(buf: Buffer, at = 0): RequestHeaderResult {
  if (buf.length - at < nbdRequestHeaderBytes) return { ok: false, reason: "truncated" };
  const magic = buf.readUInt32BE(at);
  if (magic !== nbdRequestMagic) return { ok: false, reason: "bad-magic", magic };
  return {
    ok: true,
    request: {
      flags: buf.readUInt16BE(at + 4),
      type: buf.readUInt16BE(at + 6),
      cookieHi: buf.readUInt32BE(at + 8),
      cookieLo: buf.readUInt32BE(at + 12),
      offsetBytes: buf.readUInt32BE(at + 16) * twoTo32 + buf.readUInt32BE(at + 20),
      lengthBytes: buf.readUInt32BE(at + 24),
    },
  };
}

/** Encodes a request header (clients and tests; the offset must be an exact integer below 2^64). */
export function encodeRequestHeader(request: NbdRequest, out: Buffer = Buffer.allocUnsafe(nbdRequestHeaderBytes), at = 0): Buffer {
  out.writeUInt32BE(nbdRequestMagic, at);
  out.writeUInt16BE(request.flags, at + 4);
  out.writeUInt16BE(request.type, at + 6);
  out.writeUInt32BE(request.cookieHi >>> 0, at + 8);
  out.writeUInt32BE(request.cookieLo >>> 0, at + 12);
  out.writeUInt32BE(Math.floor(request.offsetBytes / twoTo32), at + 16);
  out.writeUInt32BE(request.offsetBytes % twoTo32, at + 20);
  out.writeUInt32BE(request.lengthBytes, at + 24);
  return out;
}

export function encodeSimpleReplyHeader(
  errno: number, cookieHi: number, cookieLo: number,
  out: Buffer = Buffer.allocUnsafe(nbdSimpleReplyHeaderBytes), at = 0,
): Buffer {
  out.writeUInt32BE(nbdSimpleReplyMagic, at);
  out.writeUInt32BE(errno, at + 4);
  out.writeUInt32BE(cookieHi, at + 8);
  out.writeUInt32BE(cookieLo, at + 12);
  return out;
}

export type SimpleReplyResult =
  | { readonly ok: true; readonly errno: number; readonly cookieHi: number; readonly cookieLo: number }
  | { readonly ok: false; readonly reason: "truncated" | "bad-magic" };

/** Decodes a simple reply header (clients and tests). */
export function decodeSimpleReplyHeader(buf: Buffer, at = 0): SimpleReplyResult {
  if (buf.length - at < nbdSimpleReplyHeaderBytes) return { ok: false, reason: "truncated" };
  if (buf.readUInt32BE(at) !== nbdSimpleReplyMagic) return { ok: false, reason: "bad-magic" };
  return { ok: true, errno: buf.readUInt32BE(at + 4), cookieHi: buf.readUInt32BE(at + 8), cookieLo: buf.readUInt32BE(at + 12) };
}

/** What validation needs to know of the export a connection chose. */
export interface ExportLimits {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Largest READ/WRITE payload (advertised as the maximum block size). */
  readonly requestBytesMax: number;
}

const flagsAllowed: Record<number, number> = {
  [Cmd.read]: CmdFlag.fua,
  [Cmd.write]: CmdFlag.fua,
  [Cmd.flush]: CmdFlag.fua,
  [Cmd.trim]: CmdFlag.fua,
  [Cmd.writeZeroes]: CmdFlag.fua | CmdFlag.noHole,
  [Cmd.disc]: CmdFlag.fua,
};

/**
 * The one place that decides whether a request is served and, if not, which errno it gets
 * (doc/proto.md "Error values"): unknown command or flag, zero length, a READ/WRITE larger
 * than the maximum payload, or a range past the end -> EINVAL; a range past the end for
 * WRITE and WRITE_ZEROES -> ENOSPC (the spec's SHOULD); any write to a read-only export ->
 * EPERM. FUA is accepted on every command (spec: valid for all once SEND_FUA is set).
 * TRIM and WRITE_ZEROES carry no payload, so they may be longer than the maximum payload.
 * Returns 0 when the request may be served.
 */
export function validateRequest(request: NbdRequest, exp: ExportLimits): number {
  const { type, flags, offsetBytes, lengthBytes } = request;
  const allowed = flagsAllowed[type];
  if (allowed === undefined) return NbdErrno.einval;
  if ((flags & ~allowed) !== 0) return NbdErrno.einval;
  switch (type) {
    case Cmd.disc:
      return NbdErrno.ok;
    case Cmd.flush:
      return offsetBytes === 0 && lengthBytes === 0 ? NbdErrno.ok : NbdErrno.einval;
    case Cmd.read:
      if (lengthBytes === 0 || lengthBytes > exp.requestBytesMax) return NbdErrno.einval;
      return inRange(offsetBytes, lengthBytes, exp.sizeBytes) ? NbdErrno.ok : NbdErrno.einval;
    case Cmd.write:
      if (exp.readOnly) return NbdErrno.eperm;
      if (lengthBytes === 0 || lengthBytes > exp.requestBytesMax) return NbdErrno.einval;
      return inRange(offsetBytes, lengthBytes, exp.sizeBytes) ? NbdErrno.ok : NbdErrno.enospc;
    case Cmd.writeZeroes:
      if (exp.readOnly) return NbdErrno.eperm;
      if (lengthBytes === 0) return NbdErrno.einval;
      return inRange(offsetBytes, lengthBytes, exp.sizeBytes) ? NbdErrno.ok : NbdErrno.enospc;
    case Cmd.trim:
      if (exp.readOnly) return NbdErrno.eperm;
      if (lengthBytes === 0) return NbdErrno.einval;
      return inRange(offsetBytes, lengthBytes, exp.sizeBytes) ? NbdErrno.ok : NbdErrno.einval;
    default:
      return NbdErrno.einval;
  }
}

function inRange(offsetBytes: number, lengthBytes: number, sizeBytes: number): boolean {
  return offsetBytes <= sizeBytes && lengthBytes <= sizeBytes - offsetBytes;
}

export type AssembledRequest =
  /** A complete request. errno 0: serve it (a WRITE carries exactly its payload); else reply errno. */
  | { readonly kind: "request"; readonly request: NbdRequest; readonly errno: number; readonly payload: Buffer | undefined }
  | { readonly kind: "need-more" }
  /** The stream can no longer be followed: close the connection. */
  | { readonly kind: "fatal"; readonly reason: string };

const needMore: AssembledRequest = { kind: "need-more" };

/**
 * Turns a connection's byte stream into validated requests. Push chunks as they arrive and
 * call next() until it says need-more: every complete request a read delivered comes out
 * before the caller acts. A rejected WRITE's payload is dropped as it arrives, never buffered;
 * a WRITE whose length is past the maximum payload cannot be followed safely and is fatal.
 */
export class RequestAssembler {
  readonly queue: ByteQueue;
  private readonly scratch = Buffer.allocUnsafe(nbdRequestHeaderBytes);
  private pending: NbdRequest | undefined;
  private pendingErrno = 0;
  private dropLeftBytes = 0;
  /** A WRITE payload being gathered across reads, and how much of it has arrived. */
  private payload: Buffer | undefined;
  private payloadFilledBytes = 0;
  private failed: string | undefined;
  private readonly exp: ExportLimits;

  private readonly allocatePayload: (bytes: number) => Buffer;

  /**
   * `queue` may already hold bytes that arrived behind the handshake. `allocatePayload`
   * gives the buffer a WRITE payload spanning chunks is gathered into (exactly the size
   * asked for; default Buffer.allocUnsafe).
   */
  constructor(exp: ExportLimits, queue: ByteQueue = new ByteQueue(), allocatePayload: (bytes: number) => Buffer = (bytes) => Buffer.allocUnsafe(bytes)) {
    assert(exp.requestBytesMax > 0, "a request may carry some payload");
    this.exp = exp;
    this.queue = queue;
    this.allocatePayload = allocatePayload;
  }

  /**
   * The WRITE payload being gathered, if any, and forgets it: for a connection that closes
   * part-way, to give the buffer back to where allocatePayload took it from.
   */
  abandonPayload(): Buffer | undefined {
    const payload = this.payload;
    this.payload = undefined;
    this.pending = undefined;
    this.failed ??= "abandoned";
    return payload;
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** Bytes received and not yet turned into requests. */
  get bufferedBytes(): number {
    return this.queue.length;
  }

  /**
   * Where the next socket read may land directly (no copy): the unfilled rest of a WRITE
   * payload being gathered, when nothing else is queued and at least `minBytes` are still
   * missing. Report what was read there with directFilled() before calling next().
   */
  directTarget(minBytes: number): Buffer | undefined {
    const payload = this.payload;
    if (payload === undefined || this.queue.length > 0) return undefined;
    const missingBytes = payload.length - this.payloadFilledBytes;
    return missingBytes >= minBytes ? payload.subarray(this.payloadFilledBytes) : undefined;
  }

  /** `n` bytes were read straight into the buffer directTarget() returned. */
  directFilled(n: number): void {
    const payload = this.payload;
    assert(payload !== undefined && this.queue.length === 0, "a direct read fills a payload being gathered");
    assert(Number.isInteger(n) && n > 0 && n <= payload.length - this.payloadFilledBytes, `direct read of ${n} bytes fits the payload`);
    this.payloadFilledBytes += n;
  }

  next(): AssembledRequest {
    if (this.failed !== undefined) return { kind: "fatal", reason: this.failed };
    if (this.pending === undefined) {
      if (this.queue.length < nbdRequestHeaderBytes) return needMore;
      const header = this.queue.take(nbdRequestHeaderBytes, this.scratch);
      const decoded = decodeRequestHeader(header);
      if (!decoded.ok) {
        this.failed = decoded.reason === "bad-magic"
          ? `bad request magic 0x${decoded.magic.toString(16).padStart(8, "0")}`
          : "truncated request header";
        return { kind: "fatal", reason: this.failed };
      }
      const request = decoded.request;
      const errno = validateRequest(request, this.exp);
      if (request.type !== Cmd.write) return { kind: "request", request, errno, payload: undefined };
      if (request.lengthBytes > this.exp.requestBytesMax) {
        this.failed = `WRITE of ${request.lengthBytes} bytes is past the ${this.exp.requestBytesMax}-byte maximum; its payload cannot be followed`;
        return { kind: "fatal", reason: this.failed };
      }
      this.pending = request;
      this.pendingErrno = errno;
      this.dropLeftBytes = errno === 0 ? 0 : request.lengthBytes;
    }
    const request = this.pending;
    if (this.pendingErrno !== 0) {
      this.dropLeftBytes -= this.queue.skip(this.dropLeftBytes);
      if (this.dropLeftBytes > 0) return needMore;
      this.pending = undefined;
      return { kind: "request", request, errno: this.pendingErrno, payload: undefined };
    }
    let payload = this.payload;
    if (payload === undefined) {
      if (this.queue.contiguousBytes >= request.lengthBytes) {
        // Whole payload inside one received chunk: a view of it, no copy.
        this.pending = undefined;
        return { kind: "request", request, errno: 0, payload: this.queue.take(request.lengthBytes) };
      }
      // Spans chunks (or reads still to come): one buffer of exactly its size, filled as
      // chunks arrive, so received chunks are released at once and never re-concatenated.
      payload = this.allocatePayload(request.lengthBytes);
      assert(payload.length === request.lengthBytes, "the payload allocator returns exactly the size asked for");
      this.payload = payload;
      this.payloadFilledBytes = 0;
    }
    const count = Math.min(this.queue.length, payload.length - this.payloadFilledBytes);
    this.queue.copyOut(payload, this.payloadFilledBytes, count);
    this.payloadFilledBytes += count;
    if (this.payloadFilledBytes < payload.length) return needMore;
    this.pending = undefined;
    this.payload = undefined;
    return { kind: "request", request, errno: 0, payload };
  }
}
