// A small NBD client over the project's own codecs (src/protocol/nbd): the fixed newstyle
// handshake with NBD_OPT_GO, then READ, WRITE, FLUSH and DISC with simple replies, many
// requests in flight, replies matched by cookie. The demo writes ledger-b through it, as an
// open-system host (no write time) would; outside tools (qemu-io, nbdcopy, fio) are what
// the e2e tests use to check the server, this client only has to be correct for the demo.
import net from "node:net";
import { assert } from "../core/assert.ts";
import {
  ClientFlag, Cmd, CmdFlag, HandshakeFlag, Info, nbdGreetingBytes, nbdInitMagicHi, nbdInitMagicLo, nbdOptionReplyHeaderBytes,
  nbdOptMagicHi, nbdOptMagicLo, nbdSimpleReplyHeaderBytes, Opt, Rep, TransmissionFlag,
} from "../protocol/nbd/constants.ts";
import { ByteQueue } from "../protocol/nbd/frame-assembler.ts";
import { decodeOptionReplyHeader, encodeInfoRequest, encodeOption } from "../protocol/nbd/handshake.ts";
import { decodeSimpleReplyHeader, encodeRequestHeader } from "../protocol/nbd/transmission.ts";

/** Option replies longer than this are a server we do not want to follow. */
const optionReplyBytesMax = 64 * 1024;
/** Option replies accepted before GO is answered (INFO replies, then ACK). */
const optionRepliesMax = 64;
/** READ and WRITE larger than this are split by the caller (the server's own maximum is larger). */
export const nbdClientRequestBytesMax = 4 * 1024 * 1024;
const connectTimeoutMsDefault = 10_000;

export interface NbdClientOptions {
  readonly host: string;
  readonly port: number;
  readonly exportName: string;
  readonly connectTimeoutMs?: number;
}

/** `code` is an errno name from the server's reply ("EPERM", "EINVAL", ...) or a socket/protocol code. */
export class NbdClientError extends Error {
  override name = "NbdClientError";
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const errnoNames: Readonly<Record<number, string>> = {
  1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW", 95: "ENOTSUP", 108: "ESHUTDOWN",
};

interface Pending {
  readonly type: number;
  /** Bytes of data that follow the reply header (READ only). */
  readonly replyDataBytes: number;
  readonly resolve: (data: Buffer | undefined) => void;
  readonly reject: (error: NbdClientError) => void;
}

/** Exact reads from a socket: `read(n)` resolves with exactly n bytes, in arrival order. */
class SocketReader {
  readonly #queue = new ByteQueue();
  #waiting: { bytes: number; resolve: (data: Buffer) => void; reject: (error: NbdClientError) => void } | undefined;
  #failure: NbdClientError | undefined;

  constructor(socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#wake();
    });
  }

  read(bytes: number): Promise<Buffer> {
    assert(this.#waiting === undefined, "one reader at a time");
    if (this.#queue.length >= bytes) return Promise.resolve(this.#queue.take(bytes));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiting = { bytes, resolve, reject };
    });
  }

  fail(error: NbdClientError): void {
    this.#failure ??= error;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(this.#failure);
  }

  #wake(): void {
    const waiting = this.#waiting;
    if (waiting === undefined || this.#queue.length < waiting.bytes) return;
    this.#waiting = undefined;
    waiting.resolve(this.#queue.take(waiting.bytes));
  }
}

export class NbdClient {
  readonly exportName: string;
  readonly sizeBytes: number;
  readonly transmissionFlags: number;
  readonly #socket: net.Socket;
  readonly #reader: SocketReader;
  readonly #pending = new Map<number, Pending>();
  #nextCookie = 1;
  #failure: NbdClientError | undefined;
  #closing: Promise<void> | undefined;
  readonly #closed: Promise<void>;

  private constructor(socket: net.Socket, reader: SocketReader, closed: Promise<void>, exportName: string, sizeBytes: number, flags: number) {
    this.#socket = socket;
    this.#reader = reader;
    this.#closed = closed;
    this.exportName = exportName;
    this.sizeBytes = sizeBytes;
    this.transmissionFlags = flags;
    void this.#readReplies();
  }

  get readOnly(): boolean {
    return (this.transmissionFlags & TransmissionFlag.readOnly) !== 0;
  }

  /** Requests sent and not yet answered. */
  inFlight(): number {
    return this.#pending.size;
  }

  /** Connects, negotiates with NBD_OPT_GO and enters transmission on `exportName`. */
  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    const socket = net.connect({ host: options.host, port: options.port });
    socket.setNoDelay(true);
    const reader = new SocketReader(socket);
    let onFailure: (error: NbdClientError) => void = () => undefined;
    socket.on("error", (error: NodeJS.ErrnoException) => {
      const failure = new NbdClientError(error.code ?? "EIO", `NBD connection to ${options.host}:${options.port} failed: ${error.message}`);
      reader.fail(failure);
      onFailure(failure);
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => {
      const failure = new NbdClientError("ECONNRESET", `NBD connection to ${options.host}:${options.port} was closed`);
      reader.fail(failure);
      onFailure(failure);
      resolve();
    }));
    const timeoutMs = options.connectTimeoutMs ?? connectTimeoutMsDefault;
    const timer = setTimeout(() => {
      reader.fail(new NbdClientError("ETIMEDOUT", `no NBD handshake from ${options.host}:${options.port} within ${timeoutMs} ms`));
      socket.destroy();
    }, timeoutMs);
    try {
      const { sizeBytes, flags } = await negotiate(socket, reader, options.exportName);
      const client = new NbdClient(socket, reader, closed, options.exportName, sizeBytes, flags);
      onFailure = (error) => client.#fail(error);
      return client;
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    checkRange(offsetBytes, data.length, this.sizeBytes);
    await this.#request(Cmd.write, options.fua === true ? CmdFlag.fua : 0, offsetBytes, data.length, data);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    checkRange(offsetBytes, lengthBytes, this.sizeBytes);
    const data = await this.#request(Cmd.read, 0, offsetBytes, lengthBytes, undefined);
    assert(data?.length === lengthBytes, "a READ reply carries exactly the requested bytes");
    return data;
  }

  /** Every write answered before this call is durable on the server once it resolves. */
  async flush(): Promise<void> {
    await this.#request(Cmd.flush, 0, 0, 0, undefined);
  }

  /** Waits for the requests in flight, sends NBD_CMD_DISC and closes the connection. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // Answered requests leave the map; the demo closes rarely, so polling is enough.
      while (this.#pending.size > 0 && this.#failure === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
      if (this.#failure === undefined) {
        this.#socket.write(encodeRequestHeader({ flags: 0, type: Cmd.disc, cookieHi: 0, cookieLo: 0, offsetBytes: 0, lengthBytes: 0 }));
        this.#socket.end();
      }
      this.#failure ??= new NbdClientError("ESHUTDOWN", "the NBD client is closed");
      await this.#closed;
    })();
    return this.#closing;
  }

  /** Drops the connection at once; requests in flight fail. */
  destroy(): void {
    this.#fail(new NbdClientError("ESHUTDOWN", "the NBD client was destroyed"));
  }

  #request(type: number, flags: number, offsetBytes: number, lengthBytes: number, payload: Buffer | undefined): Promise<Buffer | undefined> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#closing !== undefined) return Promise.reject(new NbdClientError("ESHUTDOWN", "the NBD client is closing"));
    const cookie = this.#nextCookie;
    this.#nextCookie = cookie >= 0xffff_ffff ? 1 : cookie + 1;
    return new Promise((resolve, reject) => {
      this.#pending.set(cookie, { type, replyDataBytes: type === Cmd.read ? lengthBytes : 0, resolve, reject });
      const header = encodeRequestHeader({ flags, type, cookieHi: 0, cookieLo: cookie, offsetBytes, lengthBytes });
      if (payload === undefined) {
        this.#socket.write(header);
      } else {
        this.#socket.cork();
        this.#socket.write(header);
        this.#socket.write(payload);
        this.#socket.uncork();
      }
    });
  }

  async #readReplies(): Promise<void> {
    try {
      for (;;) {
        const decoded = decodeSimpleReplyHeader(await this.#reader.read(nbdSimpleReplyHeaderBytes));
        if (!decoded.ok) throw new NbdClientError("EPROTO", `NBD server sent a reply with ${decoded.reason === "bad-magic" ? "a bad magic" : "a truncated header"}`);
        const pending = this.#pending.get(decoded.cookieLo);
        if (decoded.cookieHi !== 0 || pending === undefined) throw new NbdClientError("EPROTO", `NBD server answered unknown cookie ${decoded.cookieHi}:${decoded.cookieLo}`);
        this.#pending.delete(decoded.cookieLo);
        if (decoded.errno !== 0) {
          // An errored READ carries no data with simple replies.
          pending.reject(new NbdClientError(errnoNames[decoded.errno] ?? `errno ${decoded.errno}`, `NBD server refused ${commandName(pending.type)} (${errnoNames[decoded.errno] ?? decoded.errno})`));
          continue;
        }
        const data = pending.replyDataBytes > 0 ? Buffer.from(await this.#reader.read(pending.replyDataBytes)) : undefined;
        pending.resolve(data);
      }
    } catch (error) {
      this.#fail(error instanceof NbdClientError ? error : new NbdClientError("EIO", String(error)));
    }
  }

  #fail(error: NbdClientError): void {
    this.#failure ??= error;
    const open = [...this.#pending.values()];
    this.#pending.clear();
    for (const pending of open) pending.reject(error);
    this.#reader.fail(error);
    if (!this.#socket.destroyed) this.#socket.destroy();
  }
}

function commandName(type: number): string {
  const name = Object.entries(Cmd).find(([, value]) => value === type)?.[0];
  return name === undefined ? `command ${type}` : name.toUpperCase();
}

function checkRange(offsetBytes: number, lengthBytes: number, sizeBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes <= 0) {
    throw new NbdClientError("EINVAL", `bad range: offset ${offsetBytes}, length ${lengthBytes}`);
  }
  if (lengthBytes > nbdClientRequestBytesMax) throw new NbdClientError("EINVAL", `length ${lengthBytes} is over this client's ${nbdClientRequestBytesMax}-byte request limit`);
  if (offsetBytes + lengthBytes > sizeBytes) throw new NbdClientError("EINVAL", `range ${offsetBytes}+${lengthBytes} is past the export's ${sizeBytes} bytes`);
}

/** The handshake: greeting, client flags, NBD_OPT_GO; resolves with the export's size and flags. */
async function negotiate(socket: net.Socket, reader: SocketReader, exportName: string): Promise<{ sizeBytes: number; flags: number }> {
  const greeting = await reader.read(nbdGreetingBytes);
  if (greeting.readUInt32BE(0) !== nbdInitMagicHi || greeting.readUInt32BE(4) !== nbdInitMagicLo ||
    greeting.readUInt32BE(8) !== nbdOptMagicHi || greeting.readUInt32BE(12) !== nbdOptMagicLo) {
    throw new NbdClientError("EPROTO", "the server did not greet as a newstyle NBD server");
  }
  const handshakeFlags = greeting.readUInt16BE(16);
  if ((handshakeFlags & HandshakeFlag.fixedNewstyle) === 0) throw new NbdClientError("EPROTO", "the NBD server does not speak fixed newstyle");
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(ClientFlag.fixedNewstyle | (handshakeFlags & HandshakeFlag.noZeroes ? ClientFlag.noZeroes : 0));
  socket.write(clientFlags);
  socket.write(encodeOption(Opt.go, encodeInfoRequest({ name: exportName, infos: [Info.blockSize] })));
  let export_: { sizeBytes: number; flags: number } | undefined;
  for (let replies = 0; replies < optionRepliesMax; replies++) {
    const decoded = decodeOptionReplyHeader(await reader.read(nbdOptionReplyHeaderBytes));
    if (!decoded.ok) throw new NbdClientError("EPROTO", `bad NBD option reply (${decoded.reason})`);
    const header = decoded.header;
    if (header.lengthBytes > optionReplyBytesMax) throw new NbdClientError("EPROTO", `NBD option reply of ${header.lengthBytes} bytes is too long`);
    const data = header.lengthBytes > 0 ? await reader.read(header.lengthBytes) : Buffer.alloc(0);
    if (header.option !== Opt.go) throw new NbdClientError("EPROTO", `NBD server answered option ${header.option} instead of GO`);
    if (header.replyType === Rep.ack) {
      if (export_ === undefined) throw new NbdClientError("EPROTO", "NBD server acknowledged GO without NBD_INFO_EXPORT");
      return export_;
    }
    if (header.replyType === Rep.info) {
      if (data.length >= 12 && data.readUInt16BE(0) === Info.export) {
        const sizeBytes = data.readUInt32BE(2) * 0x1_0000_0000 + data.readUInt32BE(6);
        export_ = { sizeBytes, flags: data.readUInt16BE(10) };
      }
      continue;
    }
    if ((header.replyType & 0x8000_0000) !== 0) {
      const message = data.toString("utf8").replace(/[^\x20-\x7e]/g, "?");
      throw new NbdClientError(header.replyType === Rep.errUnknown ? "ENOENT" : "EPROTO", `NBD server refused export ${JSON.stringify(exportName)}: ${message}`);
    }
    // Other reply types (META_CONTEXT, ...) were not asked for: skip them.
  }
  throw new NbdClientError("EPROTO", `NBD server sent more than ${optionRepliesMax} replies to GO`);
}
