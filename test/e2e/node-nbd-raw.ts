// A deliberately small NBD client over a raw socket, written from the protocol document
// (NetworkBlockDevice doc/proto.md) and not from tidemark's codecs, so the e2e tests can send
// what no real client would: garbage, bad magics, oversized lengths. Byte layouts by hand.
import * as net from "node:net";

const nbdMagic = Buffer.from("NBDMAGIC", "latin1");
const iHaveOpt = Buffer.from("IHAVEOPT", "latin1");
const requestMagic = 0x25609513;
const simpleReplyMagic = 0x67446698;
const clientFlagFixedNewstyle = 1;
const clientFlagNoZeroes = 2;
const optExportName = 1;

export const nbdCmd = { read: 0, write: 1, disc: 2, flush: 3, trim: 4, writeZeroes: 6 } as const;

/** A socket plus a byte queue that can be awaited for exactly n bytes. */
export class RawConnection {
  readonly socket: net.Socket;
  #buffered: Buffer = Buffer.alloc(0);
  #closed = false;
  #waiter: (() => void) | undefined;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#wake();
    });
    socket.on("error", () => undefined); // a reset is one way of being closed
    this.closed = new Promise((resolve) => socket.once("close", () => {
      this.#closed = true;
      this.#wake();
      resolve();
    }));
  }

  static async connect(port: number): Promise<RawConnection> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    return new RawConnection(socket);
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  /** Exactly `count` bytes, or throws if the peer closes first or `timeoutMs` passes. */
  async read(count: number, timeoutMs = 5_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffered.length < count) {
      if (this.#closed) throw new Error(`connection closed with ${this.#buffered.length} of ${count} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${count} bytes (have ${this.#buffered.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const out = this.#buffered.subarray(0, count);
    this.#buffered = this.#buffered.subarray(count);
    return Buffer.from(out);
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Resolves true once the peer closed the connection, false if still open after timeoutMs. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.closed.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Fixed-newstyle handshake with NO_ZEROES, then NBD_OPT_EXPORT_NAME: returns the export size. */
export async function handshakeExportName(conn: RawConnection, exportName: string): Promise<{ sizeBytes: bigint; transmissionFlags: number }> {
  const greeting = await conn.read(18);
  if (!greeting.subarray(0, 8).equals(nbdMagic) || !greeting.subarray(8, 16).equals(iHaveOpt)) {
    throw new Error(`not an NBD newstyle greeting: ${greeting.toString("hex")}`);
  }
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(clientFlagFixedNewstyle | clientFlagNoZeroes);
  const name = Buffer.from(exportName, "utf8");
  const option = Buffer.alloc(16);
  iHaveOpt.copy(option, 0);
  option.writeUInt32BE(optExportName, 8);
  option.writeUInt32BE(name.length, 12);
  conn.write(Buffer.concat([clientFlags, option, name]));
  const reply = await conn.read(10);
  return { sizeBytes: reply.readBigUInt64BE(0), transmissionFlags: reply.readUInt16BE(8) };
}

export interface RequestHeader {
  readonly magic?: number;
  readonly flags?: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offsetBytes: bigint;
  readonly lengthBytes: number;
}

/** The 28-byte transmission request header. */
export function requestHeader(header: RequestHeader): Buffer {
  const bytes = Buffer.alloc(28);
  bytes.writeUInt32BE(header.magic ?? requestMagic, 0);
  bytes.writeUInt16BE(header.flags ?? 0, 4);
  bytes.writeUInt16BE(header.type, 6);
  bytes.writeBigUInt64BE(header.cookie, 8);
  bytes.writeBigUInt64BE(header.offsetBytes, 16);
  bytes.writeUInt32BE(header.lengthBytes, 24);
  return bytes;
}

/** Reads one simple reply (16 bytes) and, if it is a successful READ, `dataBytes` of data. */
export async function readSimpleReply(conn: RawConnection, dataBytes: number): Promise<{ error: number; cookie: bigint; data: Buffer }> {
  const head = await conn.read(16);
  const magic = head.readUInt32BE(0);
  if (magic !== simpleReplyMagic) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  const error = head.readUInt32BE(4);
  const cookie = head.readBigUInt64BE(8);
  const data = error === 0 && dataBytes > 0 ? await conn.read(dataBytes) : Buffer.alloc(0);
  return { error, cookie, data };
}
