// The client library of the timestamped host protocol (docs/host-protocol.md): what a
// host imports to write to tidemark volumes with its own write time on each write
// (`import { HostClient } from "tidemark"`). Plain Node, one TCP connection, many
// requests in flight, replies matched by handle in whatever order they come.
import net from "node:net";
import { isValidHostWriteTimeUs } from "../core/stamp.ts";
import {
  FrameAssembler, encodeRequest, hostProtocolVersionMax, hostProtocolVersionMin, parseReply, replyPayloadBytesMax, statusName,
  type HostOkReply, type HostOpName, type HostReply, type HostRequest, type HostServerLimits,
} from "../protocol/host-protocol.ts";

export interface HostClientOptions {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 7410 (the node's --host-port). */
  readonly port?: number;
  /** Time for TCP connect plus HELLO; default 10 000 ms. */
  readonly connectTimeoutMs?: number;
}

export interface HostWriteOptions {
  /** The host's write time, microseconds since the epoch (a positive integer below 2^53). */
  readonly writeTimeUs?: number;
  /** Resolve only once the write is durable on the node. */
  readonly fua?: boolean;
}

export interface HostVolume {
  readonly name: string;
  readonly slot: number;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Do not modify `data` until the promise settles (it is sent without a copy). */
  write(offsetBytes: number, data: Uint8Array, options?: HostWriteOptions): Promise<void>;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /** Every write answered before this call is durable once it resolves. */
  flush(): Promise<void>;
  /** Releases the slot on the server; later calls on this volume fail with EBADF. */
  close(): Promise<void>;
}

/**
 * Every failure of the client: `code` is the server's status name ("EPERM", "ENOENT",
 * "EINVAL", "ENOSPC", "EIO", "EPROTO", ...) or a socket error code ("ECONNREFUSED",
 * "ECONNRESET", "ETIMEDOUT"), or "ESHUTDOWN" once the client is closed.
 */
export class HostProtocolError extends Error {
  override name = "HostProtocolError";
  readonly code: string;
  /** The numeric status from the server, when the server sent one. */
  readonly status: number | undefined;
  constructor(code: string, message: string, status?: number) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

const connectTimeoutMsDefault = 10_000;

interface Pending {
  readonly op: HostOpName;
  readonly resolve: (reply: HostOkReply) => void;
  readonly reject: (error: HostProtocolError) => void;
}

interface Queued {
  readonly handle: bigint;
  readonly frames: Buffer[];
  readonly pending: Pending;
}

export class HostClient {
  readonly #socket: net.Socket;
  readonly #assembler = new FrameAssembler(replyPayloadBytesMax);
  readonly #pending = new Map<bigint, Pending>();
  readonly #queue: (Queued | undefined)[] = [];
  #queueHead = 0;
  #nextHandle = 1n;
  /** Until HELLO is answered only HELLO is in flight; then the server's own limit applies. */
  #limits: HostServerLimits = { requestBytesMax: 0, requestsInFlightMax: 1, volumesPerConnectionMax: 0, nameLengthMax: 0 };
  #version = 0;
  #failure: HostProtocolError | undefined;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;
  readonly #closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      this.#fail(new HostProtocolError(error.code ?? "EIO", `host connection failed: ${error.message}`));
    });
    this.#closed = new Promise((resolve) => socket.once("close", () => {
      this.#fail(new HostProtocolError("ECONNRESET", "the host connection was closed"));
      resolve();
    }));
  }

  /** Connects and negotiates the protocol version; rejects with a HostProtocolError. */
  static async connect(options: HostClientOptions = {}): Promise<HostClient> {
    const host = options.host ?? "127.0.0.1";
    const port = options.port ?? 7410;
    const timeoutMs = options.connectTimeoutMs ?? connectTimeoutMsDefault;
    const socket = net.connect({ host, port });
    const client = new HostClient(socket);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new HostProtocolError("ETIMEDOUT", `no HELLO answer from ${host}:${port} within ${timeoutMs} ms`);
        client.#fail(error);
        socket.destroy();
        reject(error);
      }, timeoutMs);
    });
    try {
      await Promise.race([client.#hello(), timeout]);
      return client;
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The protocol version the server picked. */
  get protocolVersion(): number {
    return this.#version;
  }

  /** The limits the server announced in HELLO. */
  get limits(): HostServerLimits {
    return this.#limits;
  }

  /** Requests sent or queued and not yet answered. */
  inFlight(): number {
    return this.#pending.size;
  }

  async open(name: string): Promise<HostVolume> {
    const reply = await this.#request({ op: "open", handle: this.#handle(), name });
    if (reply.op !== "open") throw this.#protocolViolation(`OPEN answered by ${reply.op}`);
    return this.#volume(name, reply.slot, reply.sizeBytes, reply.readOnly);
  }

  /** Waits for every request in flight, then closes the connection. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#pending.size > 0 && this.#failure === undefined) {
        await new Promise<void>((resolve) => { this.#idle = resolve; });
      }
      this.#socket.end();
      await this.#closed;
    })();
    return this.#closing;
  }

  async #hello(): Promise<void> {
    const reply = await this.#request({ op: "hello", handle: this.#handle(), versionMin: hostProtocolVersionMin, versionMax: hostProtocolVersionMax });
    if (reply.op !== "hello") throw this.#protocolViolation(`HELLO answered by ${reply.op}`);
    if (reply.version < hostProtocolVersionMin || reply.version > hostProtocolVersionMax) {
      throw this.#protocolViolation(`server picked version ${reply.version}, outside the offered ${hostProtocolVersionMin}..${hostProtocolVersionMax}`);
    }
    this.#version = reply.version;
    this.#limits = reply.limits;
    this.#sendQueued();
  }

  #volume(name: string, slot: number, sizeBytes: number, readOnly: boolean): HostVolume {
    return {
      name, slot, sizeBytes, readOnly,
      write: async (offsetBytes, data, options = {}) => {
        const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        checkOffset(offsetBytes);
        checkLength(bytes.length, this.#limits.requestBytesMax);
        const writeTimeUs = options.writeTimeUs;
        if (writeTimeUs !== undefined && !isValidHostWriteTimeUs(writeTimeUs)) {
          throw new HostProtocolError("EINVAL", `writeTimeUs ${writeTimeUs} is not a positive integer below 2^53`);
        }
        await this.#request({ op: "write", handle: this.#handle(), slot, offsetBytes, data: bytes, fua: options.fua === true, writeTimeUs });
      },
      read: async (offsetBytes, lengthBytes) => {
        checkOffset(offsetBytes);
        checkLength(lengthBytes, this.#limits.requestBytesMax);
        const reply = await this.#request({ op: "read", handle: this.#handle(), slot, offsetBytes, lengthBytes });
        if (reply.op !== "read" || reply.data.length !== lengthBytes) throw this.#protocolViolation("READ answered with the wrong length");
        return reply.data;
      },
      flush: async () => {
        await this.#request({ op: "flush", handle: this.#handle(), slot });
      },
      close: async () => {
        await this.#request({ op: "close", handle: this.#handle(), slot });
      },
    };
  }

  #handle(): bigint {
    const handle = this.#nextHandle;
    this.#nextHandle = handle === 0xffff_ffff_ffff_ffffn ? 1n : handle + 1n;
    return handle;
  }

  #request(request: HostRequest): Promise<HostOkReply> {
    if (this.#closing !== undefined) return Promise.reject(new HostProtocolError("ESHUTDOWN", "the client is closed (close() was called)"));
    if (this.#failure !== undefined) return Promise.reject(new HostProtocolError(this.#failure.code, this.#failure.message, this.#failure.status));
    return new Promise<HostOkReply>((resolve, reject) => {
      const pending: Pending = { op: request.op, resolve, reject };
      this.#pending.set(request.handle, pending);
      const frames = encodeRequest(request);
      // Beyond the server's in-flight limit requests wait here, not in the socket's buffer.
      if (this.#pending.size - (this.#queue.length - this.#queueHead) <= this.#limits.requestsInFlightMax && this.#queueHead === this.#queue.length) {
        this.#write(frames);
      } else {
        this.#queue.push({ handle: request.handle, frames, pending });
      }
    });
  }

  #write(frames: Buffer[]): void {
    if (frames.length > 1) this.#socket.cork();
    for (const frame of frames) this.#socket.write(frame);
    if (frames.length > 1) this.#socket.uncork();
  }

  #sendQueued(): void {
    while (this.#queueHead < this.#queue.length) {
      const sent = this.#pending.size - (this.#queue.length - this.#queueHead);
      if (sent >= this.#limits.requestsInFlightMax) break;
      const next = this.#queue[this.#queueHead];
      if (next === undefined) break;
      this.#queue[this.#queueHead] = undefined;
      this.#queueHead += 1;
      this.#write(next.frames);
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    }
  }

  #onData(chunk: Buffer): void {
    if (this.#failure !== undefined) return;
    this.#assembler.push(chunk);
    for (;;) {
      const event = this.#assembler.next();
      if (event === undefined) return;
      if (event.kind === "corrupt") {
        this.#fail(this.#protocolViolation(event.detail));
        return;
      }
      if (event.kind === "oversized") {
        this.#fail(this.#protocolViolation(`reply payload of ${event.header.payloadBytes} bytes over the ${event.payloadBytesMax}-byte limit`));
        return;
      }
      const parsed = parseReply(event.header, event.payload);
      if (!parsed.ok) {
        this.#fail(this.#protocolViolation(parsed.detail));
        return;
      }
      this.#onReply(parsed.reply);
      if (this.#failure !== undefined) return;
    }
  }

  #onReply(reply: HostReply): void {
    if (reply.kind === "error" && reply.op === "fatal") {
      // The server closes after this; every request still open fails with its reason.
      this.#fail(new HostProtocolError(statusName(reply.status), `server closed the connection: ${reply.message}`, reply.status));
      this.#socket.destroy();
      return;
    }
    const pending = this.#pending.get(reply.handle);
    if (pending === undefined) {
      this.#fail(this.#protocolViolation(`reply for unknown handle ${reply.handle}`));
      return;
    }
    if (reply.op !== "unknown" && reply.op !== pending.op) {
      this.#fail(this.#protocolViolation(`${pending.op.toUpperCase()} answered by ${reply.op.toUpperCase()}`));
      return;
    }
    this.#pending.delete(reply.handle);
    if (reply.kind === "error") pending.reject(new HostProtocolError(statusName(reply.status), reply.message, reply.status));
    else pending.resolve(reply);
    this.#sendQueued();
    if (this.#pending.size === 0 && this.#idle !== undefined) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
  }

  #protocolViolation(detail: string): HostProtocolError {
    return new HostProtocolError("EPROTO", `host protocol violation by the server: ${detail}`);
  }

  /** The connection is unusable: fail everything open with `error` and close. */
  #fail(error: HostProtocolError): void {
    if (this.#failure !== undefined) return;
    this.#failure = error;
    const open = [...this.#pending.values()];
    this.#pending.clear();
    this.#queue.length = 0;
    this.#queueHead = 0;
    for (const pending of open) pending.reject(new HostProtocolError(error.code, error.message, error.status));
    if (!this.#socket.destroyed) this.#socket.destroy();
    const idle = this.#idle;
    this.#idle = undefined;
    idle?.();
  }
}

function checkOffset(offsetBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) throw new HostProtocolError("EINVAL", `offsetBytes ${offsetBytes} is not a non-negative integer`);
}

function checkLength(lengthBytes: number, lengthBytesMax: number): void {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes <= 0) throw new HostProtocolError("EINVAL", `length ${lengthBytes} is not a positive integer`);
  if (lengthBytes > lengthBytesMax) throw new HostProtocolError("EMSGSIZE", `length ${lengthBytes} is over the server's ${lengthBytesMax}-byte request limit`);
}
