// NBD fixed-newstyle handshake: the option codecs and the negotiation as a pure state
// machine. The shell pushes bytes into a ByteQueue, calls next(), sends what it is told
// and closes when told; nothing here touches a socket.
//
//   S: "NBDMAGIC" "IHAVEOPT" u16 handshake flags      C: u32 client flags
//   C: "IHAVEOPT" u32 option u32 length <data>         (repeated)
//   S: u64 0x3e889045565a9 u32 option u32 replyType u32 length <data>
//
// Policy (docs/nbd.md): simple replies only (STRUCTURED_REPLY, EXTENDED_HEADERS, meta
// contexts, STARTTLS -> ERR_UNSUP); the default export "" is the only export when exactly
// one exists, else unknown; an option longer than the limit gets ERR_TOO_BIG and a close.
import { assert } from "../../core/assert.ts";
import type { ExportDescription } from "../../core/volume-io.ts";
import {
  ClientFlag, clientFlagsKnown, HandshakeFlag, Info, nbdBlockSizeMinBytes, nbdBlockSizePreferredBytes,
  nbdClientFlagsBytes, nbdExportNameZeroesBytes, nbdGreetingBytes, nbdInitMagicHi, nbdInitMagicLo,
  nbdOptionHeaderBytes, nbdOptionReplyHeaderBytes, nbdOptMagicHi, nbdOptMagicLo, nbdRepMagicHi, nbdRepMagicLo,
  Opt, Rep, TransmissionFlag, transmissionFlagsServed,
} from "./constants.ts";
import type { ByteQueue } from "./frame-assembler.ts";

const twoTo32 = 0x1_0000_0000;

// ---- codecs ----------------------------------------------------------------------------

export function encodeGreeting(): Buffer {
  const out = Buffer.allocUnsafe(nbdGreetingBytes);
  out.writeUInt32BE(nbdInitMagicHi, 0);
  out.writeUInt32BE(nbdInitMagicLo, 4);
  out.writeUInt32BE(nbdOptMagicHi, 8);
  out.writeUInt32BE(nbdOptMagicLo, 12);
  out.writeUInt16BE(HandshakeFlag.fixedNewstyle | HandshakeFlag.noZeroes, 16);
  return out;
}

export type ClientFlagsResult =
  | { readonly ok: true; readonly noZeroes: boolean }
  | { readonly ok: false; readonly reason: string };

export function decodeClientFlags(buf: Buffer, at = 0): ClientFlagsResult {
  if (buf.length - at < nbdClientFlagsBytes) return { ok: false, reason: "truncated client flags" };
  const flags = buf.readUInt32BE(at);
  if ((flags & ~clientFlagsKnown) !== 0) return { ok: false, reason: `unknown client flags 0x${flags.toString(16)}` };
  return { ok: true, noZeroes: (flags & ClientFlag.noZeroes) !== 0 };
}

export interface OptionHeader {
  readonly option: number;
  readonly lengthBytes: number;
}

export type OptionHeaderResult =
  | { readonly ok: true; readonly header: OptionHeader }
  | { readonly ok: false; readonly reason: "truncated" | "bad-magic" };

export function decodeOptionHeader(buf: Buffer, at = 0): OptionHeaderResult {
  if (buf.length - at < nbdOptionHeaderBytes) return { ok: false, reason: "truncated" };
  if (buf.readUInt32BE(at) !== nbdOptMagicHi || buf.readUInt32BE(at + 4) !== nbdOptMagicLo) return { ok: false, reason: "bad-magic" };
  return { ok: true, header: { option: buf.readUInt32BE(at + 8), lengthBytes: buf.readUInt32BE(at + 12) } };
}

/** An option as a client sends it (clients and tests). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(nbdOptionHeaderBytes + data.length);
  out.writeUInt32BE(nbdOptMagicHi, 0);
  out.writeUInt32BE(nbdOptMagicLo, 4);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(data.length, 12);
  data.copy(out, nbdOptionHeaderBytes);
  return out;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(nbdOptionReplyHeaderBytes + data.length);
  out.writeUInt32BE(nbdRepMagicHi, 0);
  out.writeUInt32BE(nbdRepMagicLo, 4);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(replyType, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, nbdOptionReplyHeaderBytes);
  return out;
}

export interface OptionReplyHeader {
  readonly option: number;
  readonly replyType: number;
  readonly lengthBytes: number;
}

export type OptionReplyHeaderResult =
  | { readonly ok: true; readonly header: OptionReplyHeader }
  | { readonly ok: false; readonly reason: "truncated" | "bad-magic" };

/** Decodes an option reply header (clients and tests). */
export function decodeOptionReplyHeader(buf: Buffer, at = 0): OptionReplyHeaderResult {
  if (buf.length - at < nbdOptionReplyHeaderBytes) return { ok: false, reason: "truncated" };
  if (buf.readUInt32BE(at) !== nbdRepMagicHi || buf.readUInt32BE(at + 4) !== nbdRepMagicLo) return { ok: false, reason: "bad-magic" };
  return { ok: true, header: { option: buf.readUInt32BE(at + 8), replyType: buf.readUInt32BE(at + 12), lengthBytes: buf.readUInt32BE(at + 16) } };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes a protocol string: valid UTF-8, no NUL, at most stringBytesMax bytes. */
export function decodeName(bytes: Buffer, stringBytesMax: number): string | undefined {
  return nameProblem(bytes, stringBytesMax) === undefined ? utf8.decode(bytes) : undefined;
}

/** Why `bytes` is not an export name decodeName takes (too long, a NUL, not UTF-8), or undefined when it is one. */
export function nameProblem(bytes: Buffer, stringBytesMax: number): string | undefined {
  if (bytes.length > stringBytesMax) return `export name is ${bytes.length} bytes, longer than the ${stringBytesMax}-byte limit (proto.md: strings of at most 4096 bytes)`;
  if (bytes.includes(0)) return "export name holds a NUL byte";
  try {
    utf8.decode(bytes);
  } catch {
    return "export name is not valid UTF-8";
  }
  return undefined;
}

export interface InfoRequest {
  readonly name: string;
  /** Information types the client asked for, in its order. */
  readonly infos: readonly number[];
}

export type InfoRequestResult =
  | { readonly ok: true; readonly request: InfoRequest }
  | { readonly ok: false; readonly reason: string };

/** Data of NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count, count x u16 info type. */
export function decodeInfoRequest(data: Buffer, stringBytesMax: number): InfoRequestResult {
  if (data.length < 6) return { ok: false, reason: "INFO/GO data shorter than 6 bytes" };
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return { ok: false, reason: "export name length past the option data" };
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 6 + nameBytes + 2 * count) return { ok: false, reason: "information request count does not match the option length" };
  const nameData = data.subarray(4, 4 + nameBytes);
  const problem = nameProblem(nameData, stringBytesMax);
  if (problem !== undefined) return { ok: false, reason: problem };
  const name = utf8.decode(nameData);
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { ok: true, request: { name, infos } };
}

export function encodeInfoRequest(request: InfoRequest): Buffer {
  const name = Buffer.from(request.name, "utf8");
  const out = Buffer.allocUnsafe(6 + name.length + 2 * request.infos.length);
  out.writeUInt32BE(name.length, 0);
  name.copy(out, 4);
  out.writeUInt16BE(request.infos.length, 4 + name.length);
  request.infos.forEach((info, i) => out.writeUInt16BE(info, 6 + name.length + 2 * i));
  return out;
}

function writeSize(out: Buffer, sizeBytes: number, at: number): void {
  out.writeUInt32BE(Math.floor(sizeBytes / twoTo32), at);
  out.writeUInt32BE(sizeBytes % twoTo32, at + 4);
}

/** NBD_INFO_EXPORT: u16 type, u64 size, u16 transmission flags. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  out.writeUInt16BE(Info.export, 0);
  writeSize(out, sizeBytes, 2);
  out.writeUInt16BE(transmissionFlags, 10);
  return out;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum. */
export function encodeInfoBlockSize(minBytes: number, preferredBytes: number, maxBytes: number): Buffer {
  const out = Buffer.allocUnsafe(14);
  out.writeUInt16BE(Info.blockSize, 0);
  out.writeUInt32BE(minBytes, 2);
  out.writeUInt32BE(preferredBytes, 6);
  out.writeUInt32BE(maxBytes, 10);
  return out;
}

/** NBD_INFO_NAME: u16 type, the name. */
export function encodeInfoName(name: string): Buffer {
  const bytes = Buffer.from(name, "utf8");
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(Info.name, 0);
  bytes.copy(out, 2);
  return out;
}

/** NBD_REP_SERVER data: u32 name length, name. */
export function encodeRepServerData(name: string): Buffer {
  const bytes = Buffer.from(name, "utf8");
  const out = Buffer.allocUnsafe(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  bytes.copy(out, 4);
  return out;
}

/** Answer to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : nbdExportNameZeroesBytes));
  writeSize(out, sizeBytes, 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

/** A read-only export says so and does not offer TRIM or WRITE_ZEROES (they would get EPERM). */
export function transmissionFlagsFor(exp: ExportDescription): number {
  if (!exp.readOnly) return transmissionFlagsServed;
  return (transmissionFlagsServed & ~(TransmissionFlag.sendTrim | TransmissionFlag.sendWriteZeroes)) | TransmissionFlag.readOnly;
}

// ---- negotiation -----------------------------------------------------------------------

export interface HandshakeLimits {
  readonly optionBytesMax: number;
  readonly optionsMax: number;
  readonly stringBytesMax: number;
  /** Advertised maximum block size (= largest READ/WRITE payload). */
  readonly requestBytesMax: number;
}

export type HandshakeStep =
  | { readonly kind: "need-more" }
  /** Send these buffers and call next() again. */
  | { readonly kind: "send"; readonly data: readonly Buffer[] }
  /** Send these buffers (maybe none), then close. `clean` is false for a protocol violation. */
  | { readonly kind: "close"; readonly data: readonly Buffer[]; readonly reason: string; readonly clean: boolean }
  /**
   * Send these buffers; the connection is in transmission on this export from the next byte on.
   * `option` is the option that ended the handshake (NBD_OPT_GO or NBD_OPT_EXPORT_NAME): a server
   * that must refuse the connection after all answers GO with an error and EXPORT_NAME by closing.
   */
  | {
    readonly kind: "transmission"; readonly data: readonly Buffer[];
    readonly export: ExportDescription; readonly transmissionFlags: number; readonly option: number;
  };

type Phase = "client-flags" | "option-header" | "option-data" | "done";

/**
 * One connection's negotiation. `exports` is consulted on every option that names an
 * export, so exports created or dropped meanwhile are seen.
 */
export class NbdHandshake {
  private phase: Phase = "client-flags";
  private noZeroes = false;
  private optionsSeen = 0;
  private option: OptionHeader | undefined;
  private readonly exports: () => readonly ExportDescription[];
  private readonly limits: HandshakeLimits;

  constructor(exports: () => readonly ExportDescription[], limits: HandshakeLimits) {
    assert(limits.optionBytesMax >= limits.stringBytesMax + 8, "an option can carry a longest name");
    this.exports = exports;
    this.limits = limits;
  }

  get finished(): boolean {
    return this.phase === "done";
  }

  next(queue: ByteQueue): HandshakeStep {
    switch (this.phase) {
      case "done":
        return { kind: "need-more" };
      case "client-flags": {
        if (queue.length < nbdClientFlagsBytes) return { kind: "need-more" };
        const flags = decodeClientFlags(queue.take(nbdClientFlagsBytes));
        if (!flags.ok) return this.close([], flags.reason, false);
        this.noZeroes = flags.noZeroes;
        this.phase = "option-header";
        return this.next(queue);
      }
      case "option-header": {
        if (queue.length < nbdOptionHeaderBytes) return { kind: "need-more" };
        const decoded = decodeOptionHeader(queue.take(nbdOptionHeaderBytes));
        if (!decoded.ok) return this.close([], `option ${decoded.reason}`, false);
        const header = decoded.header;
        this.optionsSeen++;
        if (this.optionsSeen > this.limits.optionsMax) {
          return this.close([], `more than ${this.limits.optionsMax} options`, false);
        }
        if (header.lengthBytes > this.limits.optionBytesMax) {
          const reason = `option ${header.option} of ${header.lengthBytes} bytes is past the ${this.limits.optionBytesMax}-byte limit`;
          const reply = header.option === Opt.exportName ? [] : [encodeOptionReply(header.option, Rep.errTooBig, Buffer.from(reason))];
          return this.close(reply, reason, false);
        }
        this.option = header;
        this.phase = "option-data";
        return this.next(queue);
      }
      case "option-data": {
        const header = this.option;
        assert(header !== undefined, "an option header precedes its data");
        if (queue.length < header.lengthBytes) return { kind: "need-more" };
        const data = queue.take(header.lengthBytes);
        this.option = undefined;
        this.phase = "option-header";
        return this.handleOption(header.option, data);
      }
    }
  }

  private close(data: Buffer[], reason: string, clean: boolean): HandshakeStep {
    this.phase = "done";
    return { kind: "close", data, reason, clean };
  }

  private error(option: number, replyType: number, message: string): HandshakeStep {
    return { kind: "send", data: [encodeOptionReply(option, replyType, Buffer.from(message, "utf8"))] };
  }

  /** The export a name selects; "" is the default export when exactly one exists. */
  private resolve(name: string): ExportDescription | undefined {
    const all = this.exports();
    if (name === "") return all.length === 1 ? all[0] : undefined;
    return all.find((e) => e.name === name);
  }

  private handleOption(option: number, data: Buffer): HandshakeStep {
    switch (option) {
      case Opt.exportName: {
        const problem = nameProblem(data, this.limits.stringBytesMax);
        if (problem !== undefined) return this.close([], `NBD_OPT_EXPORT_NAME: ${problem}`, false);
        const name = utf8.decode(data);
        const exp = this.resolve(name);
        if (exp === undefined) return this.close([], `NBD_OPT_EXPORT_NAME: no export ${JSON.stringify(name)}`, false);
        return this.enter(option, [], exp, encodeExportNameReply(exp.sizeBytes, transmissionFlagsFor(exp), this.noZeroes));
      }
      case Opt.abort:
        return this.close([encodeOptionReply(option, Rep.ack)], "client aborted the handshake", true);
      case Opt.list: {
        if (data.length !== 0) return this.error(option, Rep.errInvalid, "NBD_OPT_LIST takes no data");
        const replies = this.exports().map((e) => encodeOptionReply(option, Rep.server, encodeRepServerData(e.name)));
        replies.push(encodeOptionReply(option, Rep.ack));
        return { kind: "send", data: replies };
      }
      case Opt.info:
      case Opt.go: {
        const decoded = decodeInfoRequest(data, this.limits.stringBytesMax);
        if (!decoded.ok) return this.error(option, Rep.errInvalid, decoded.reason);
        const exp = this.resolve(decoded.request.name);
        if (exp === undefined) {
          const message = decoded.request.name === "" ? "no default export: name one (NBD_OPT_LIST shows them)" : `no export named ${JSON.stringify(decoded.request.name)}`;
          return this.error(option, Rep.errUnknown, message);
        }
        const flags = transmissionFlagsFor(exp);
        const replies = [
          encodeOptionReply(option, Rep.info, encodeInfoExport(exp.sizeBytes, flags)),
          encodeOptionReply(option, Rep.info, encodeInfoBlockSize(nbdBlockSizeMinBytes, nbdBlockSizePreferredBytes, this.limits.requestBytesMax)),
        ];
        // NAME is answered with the export's own name (useful after a default-export GO);
        // DESCRIPTION and unknown types are ignored, as the spec allows.
        if (decoded.request.infos.includes(Info.name)) replies.push(encodeOptionReply(option, Rep.info, encodeInfoName(exp.name)));
        replies.push(encodeOptionReply(option, Rep.ack));
        if (option === Opt.info) return { kind: "send", data: replies };
        return this.enter(option, replies, exp);
      }
      default:
        // STRUCTURED_REPLY, EXTENDED_HEADERS, meta contexts, STARTTLS and anything unknown:
        // the payload was already read (drained) with the header.
        return this.error(option, Rep.errUnsup, `option ${option} is not supported`);
    }
  }

  private enter(option: number, replies: Buffer[], exp: ExportDescription, extra?: Buffer): HandshakeStep {
    this.phase = "done";
    if (extra !== undefined) replies.push(extra);
    return { kind: "transmission", data: replies, export: exp, transmissionFlags: transmissionFlagsFor(exp), option };
  }
}
