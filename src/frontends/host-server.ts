// The timestamped host protocol server (docs/host-protocol.md): the front end for hosts
// that put a write time on each write (the patent's mainframe host). It validates every
// request at the edge, in one place that picks the status code, then calls the volume;
// bad input gets an error reply while the stream is in step, and closes only its own
// connection when it is not. Nothing a peer sends can stop the node.
//
// Connections (docs/host-protocol.md, "Limits"): one that has not completed HELLO holds a slot
// of a pool of its own (hostHandshakesMax; when it is full the oldest is closed to admit the new
// one; deadline hostHelloTimeoutMs); one past HELLO counts against hostConnectionsMax only, and
// HELLO past that limit is answered EBUSY. A slot is free the moment its socket closes.
import { VolumeIoError } from "../core/errors.ts";
import net from "node:net";
import type { Logger } from "pino";
import {
  hostCloseGraceMs, hostConnectionsMax, hostHandshakesMax, hostHelloTimeoutMs, hostInFlightBytesMax,
  hostRequestsInFlightMax, hostVolumesPerConnectionMax,
} from "../core/limits.ts";
import { assert } from "../core/assert.ts";
import { ConnectionSlots } from "../core/connection-slots.ts";
import { isValidHostWriteTimeUs } from "../core/stamp.ts";
import { type VolumeCatalog, type VolumeHandle } from "../core/volume-io.ts";
import {
  FrameAssembler, HostStatus, encodeReply, hostProtocolVersionMax, hostProtocolVersionMin, parseRequest,
  requestOpName, requestPayloadBytesMax, serverLimits, statusName,
  type AssemblerEvent, type HostErrorReply, type HostOkReply, type HostOpName, type HostReply, type HostRequest,
} from "../protocol/host-protocol.ts";

export interface HostServerOptions {
  host: string;
  port: number;
  catalog: VolumeCatalog;
  logger: Logger;
  onRequest?: (op: "read" | "write" | "flush", bytes: number, latencySeconds: number, ok: boolean) => void;
}

export interface HostServer {
  readonly port: number;
  /** Open connections: before HELLO and past it. */
  connections(): number;
  /** Open connections that have not completed HELLO. */
  handshakes(): number;
  close(): Promise<void>;
}

type IoOp = "read" | "write" | "flush";

export async function startHostServer(options: HostServerOptions): Promise<HostServer> {
  const slots = new ConnectionSlots<HostConnection>({ handshakesMax: hostHandshakesMax, establishedMax: hostConnectionsMax });
  let closing = false;
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    const remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    const connection = new HostConnection(socket, options, options.logger.child({ remote }), slots);
    // Every connection gets in: a full pool of connections before HELLO closes its oldest one.
    slots.admit(connection)?.evict(`${hostHandshakesMax} connections are waiting for HELLO; the oldest is closed to admit a new one`);
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once("error", onError);
    server.listen(options.port, options.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  // After the listen: a bind error is the caller's to report (it names the option).
  server.on("error", (error) => options.logger.error({ event: "host_server_error", err: error }, "host server error"));
  const address = server.address();
  assert(address !== null && typeof address === "object", "a TCP server has an address");
  options.logger.info({ event: "host_listening", host: options.host, port: address.port }, "host protocol listening");
  let stopping: Promise<void> | undefined;
  return {
    port: address.port,
    connections: () => slots.total,
    handshakes: () => slots.handshakes,
    close: () => {
      stopping ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await Promise.all(slots.all().map((connection) => connection.shutdown()));
        await stopped;
      })();
      return stopping;
    },
  };
}

/** One client connection: reassembly, validation, dispatch, replies. */
class HostConnection {
  readonly #socket: net.Socket;
  readonly #options: HostServerOptions;
  readonly #logger: Logger;
  /** The server's connection accounting (not to be confused with #slots, the open volumes). */
  readonly #connectionSlots: ConnectionSlots<HostConnection>;
  readonly #assembler = new FrameAssembler(requestPayloadBytesMax);
  readonly #slots = new Map<number, VolumeHandle>();
  #nextSlot = 1;
  /** hello → ready → (draining when the server stops) → closed. */
  #state: "hello" | "ready" | "draining" | "closed" = "hello";
  #inFlight = 0;
  #inFlightBytes = 0;
  #helloTimer: NodeJS.Timeout | undefined;
  #graceTimer: NodeJS.Timeout | undefined;
  #idle: (() => void) | undefined;

  constructor(socket: net.Socket, options: HostServerOptions, logger: Logger, slots: ConnectionSlots<HostConnection>) {
    this.#socket = socket;
    this.#options = options;
    this.#logger = logger;
    this.#connectionSlots = slots;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("drain", () => this.#pump());
    socket.on("error", (error: NodeJS.ErrnoException) => this.#logger.debug({ event: "host_socket_error", code: error.code }, "host connection error"));
    socket.on("close", () => this.#onClose());
    this.#helloTimer = setTimeout(() => {
      if (this.#state === "hello") this.#fatal(HostStatus.ETIMEDOUT, `no HELLO within ${hostHelloTimeoutMs} ms`);
    }, hostHelloTimeoutMs);
    this.#helloTimer.unref();
    this.#logger.debug({ event: "host_connected" }, "host connected");
  }

  /**
   * Closed now to admit a newer connection to the full pool of connections before HELLO (its
   * slot is already free). The FATAL frame goes out before the close; there is no grace.
   */
  evict(reason: string): void {
    this.#logger.warn({ event: "host_connection_evicted", reason, handshakesMax: hostHandshakesMax }, "host connection closed: too many connections before HELLO");
    this.#send({ kind: "error", op: "fatal", handle: 0n, status: HostStatus.EBUSY, message: reason });
    this.#state = "closed";
    this.#socket.destroy();
  }

  /** Server stop: read no more requests, finish those in flight, then close. */
  async shutdown(): Promise<void> {
    if (this.#socket.destroyed) return;
    const closed = new Promise<void>((resolve) => this.#socket.once("close", () => resolve()));
    if (this.#state === "hello" || this.#state === "ready") {
      this.#state = "draining";
      this.#socket.pause();
    }
    if (this.#inFlight > 0) {
      const idle = new Promise<void>((resolve) => { this.#idle = resolve; });
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, hostCloseGraceMs).unref());
      await Promise.race([idle, deadline]);
    }
    this.#endSoon();
    await closed;
  }

  #onData(chunk: Buffer): void {
    // After a fatal error we keep reading (and dropping) so the peer gets our error frame, not a reset.
    if (this.#state === "closed" || this.#state === "draining") return;
    this.#assembler.push(chunk);
    this.#pump();
  }

  /** Acts on every complete frame while under the in-flight limits; pauses the socket at them. */
  #pump(): void {
    while (this.#state === "hello" || this.#state === "ready") {
      const busy = this.#inFlight >= hostRequestsInFlightMax || this.#inFlightBytes >= hostInFlightBytesMax || this.#socket.writableNeedDrain;
      if (busy) {
        this.#socket.pause();
        return;
      }
      const event = this.#assembler.next();
      if (event === undefined) break;
      this.#onEvent(event);
    }
    if (this.#state === "hello" || this.#state === "ready") this.#socket.resume();
  }

  #onEvent(event: AssemblerEvent): void {
    switch (event.kind) {
      case "corrupt":
        this.#fatal(HostStatus.EPROTO, event.detail);
        return;
      case "oversized": {
        const op = requestOpName(event.header.op);
        const status = op === "open" ? HostStatus.ENAMETOOLONG : HostStatus.EMSGSIZE;
        const detail = `${op ?? "request"} payload of ${event.header.payloadBytes} bytes is over the ${event.payloadBytesMax}-byte limit`;
        if (this.#state === "hello") this.#fatal(status, detail, event.header.handle);
        else if (op === undefined) this.#sendError("unknown", event.header.handle, HostStatus.EPROTO, `unknown request op ${event.header.op}`);
        else this.#sendError(op, event.header.handle, status, detail);
        return;
      }
      case "frame": {
        const parsed = parseRequest(event.header, event.payload);
        if (!parsed.ok) {
          if (this.#state === "hello") this.#fatal(parsed.status, parsed.detail, parsed.handle);
          else this.#sendError(parsed.op ?? "unknown", parsed.handle, parsed.status, parsed.detail);
          return;
        }
        this.#dispatch(parsed.request);
        return;
      }
    }
  }

  #dispatch(request: HostRequest): void {
    if (this.#state === "hello" && request.op !== "hello") {
      this.#fatal(HostStatus.EPROTO, `expected HELLO first, got ${request.op.toUpperCase()}`, request.handle);
      return;
    }
    switch (request.op) {
      case "hello": return this.#hello(request);
      case "open": return this.#open(request);
      case "close": {
        const volume = this.#slots.get(request.slot);
        if (volume === undefined) {
          this.#sendError("close", request.handle, HostStatus.EBADF, `slot ${request.slot} is not open`);
          return;
        }
        this.#slots.delete(request.slot);
        volume.release();
        this.#send({ kind: "ok", op: "close", handle: request.handle });
        return;
      }
      case "write": return this.#write(request);
      case "read": return this.#read(request);
      case "flush": {
        const volume = this.#volume(request.op, request.handle, request.slot);
        if (volume !== undefined) this.#run("flush", request.handle, 0, async () => { await volume.flush(); return { kind: "ok", op: "flush", handle: request.handle }; });
        return;
      }
    }
  }

  #hello(request: Extract<HostRequest, { op: "hello" }>): void {
    if (this.#state !== "hello") {
      this.#sendError("hello", request.handle, HostStatus.EPROTO, "HELLO was already done on this connection");
      return;
    }
    const version = Math.min(request.versionMax, hostProtocolVersionMax);
    if (version < Math.max(request.versionMin, hostProtocolVersionMin)) {
      this.#closeWith({
        kind: "error", op: "hello", handle: request.handle, status: HostStatus.EPROTO,
        message: `no common protocol version: the client offers ${request.versionMin}..${request.versionMax}, this node speaks ${hostProtocolVersionMin}..${hostProtocolVersionMax}`,
      });
      return;
    }
    if (!this.#connectionSlots.establish(this)) {
      this.#closeWith({
        kind: "error", op: "hello", handle: request.handle, status: HostStatus.EBUSY,
        message: `the node serves at most ${hostConnectionsMax} host-protocol connections; try again later`,
      });
      return;
    }
    this.#state = "ready";
    clearTimeout(this.#helloTimer);
    this.#send({ kind: "ok", op: "hello", handle: request.handle, version, limits: serverLimits });
  }

  #open(request: Extract<HostRequest, { op: "open" }>): void {
    if (this.#slots.size >= hostVolumesPerConnectionMax) {
      this.#sendError("open", request.handle, HostStatus.EMFILE, `a connection may hold at most ${hostVolumesPerConnectionMax} open volumes`);
      return;
    }
    if (this.#nextSlot > 0xffff_ffff) {
      this.#sendError("open", request.handle, HostStatus.EMFILE, "slot numbers of this connection are used up; reconnect");
      return;
    }
    let volume: VolumeHandle | undefined;
    try {
      volume = this.#options.catalog.open(request.name);
    } catch (error) {
      this.#logger.error({ event: "host_open_failed", volume: request.name, err: error }, "opening a volume failed");
      this.#sendError("open", request.handle, HostStatus.EIO, `opening volume ${JSON.stringify(request.name)} failed`);
      return;
    }
    if (volume === undefined) {
      this.#sendError("open", request.handle, HostStatus.ENOENT, `no volume named ${JSON.stringify(request.name)}`);
      return;
    }
    const slot = this.#nextSlot;
    this.#nextSlot += 1;
    this.#slots.set(slot, volume);
    this.#send({ kind: "ok", op: "open", handle: request.handle, slot, sizeBytes: volume.sizeBytes, readOnly: volume.readOnly });
  }

  #write(request: Extract<HostRequest, { op: "write" }>): void {
    const volume = this.#volume("write", request.handle, request.slot);
    if (volume === undefined) return;
    const { handle, offsetBytes, data, fua, writeTimeUs } = request;
    if (volume.readOnly) {
      this.#sendError("write", handle, HostStatus.EPERM, `volume ${volume.name} is read-only`);
      return;
    }
    if (writeTimeUs !== undefined && !isValidHostWriteTimeUs(writeTimeUs)) {
      this.#sendError("write", handle, HostStatus.EINVAL, `write time ${writeTimeUs} µs is not valid (a positive integer below 2^53)`);
      return;
    }
    if (offsetBytes + data.length > volume.sizeBytes) {
      this.#sendError("write", handle, HostStatus.ENOSPC, `write of ${data.length} bytes at ${offsetBytes} runs past the end of ${volume.name} (${volume.sizeBytes} bytes)`);
      return;
    }
    this.#run("write", handle, data.length, async () => {
      await volume.write(offsetBytes, data, { fua, hostWriteTimeUs: writeTimeUs });
      return { kind: "ok", op: "write", handle };
    });
  }

  #read(request: Extract<HostRequest, { op: "read" }>): void {
    const volume = this.#volume("read", request.handle, request.slot);
    if (volume === undefined) return;
    const { handle, offsetBytes, lengthBytes } = request;
    if (offsetBytes + lengthBytes > volume.sizeBytes) {
      this.#sendError("read", handle, HostStatus.EINVAL, `read of ${lengthBytes} bytes at ${offsetBytes} runs past the end of ${volume.name} (${volume.sizeBytes} bytes)`);
      return;
    }
    this.#run("read", handle, lengthBytes, async () => {
      const data = await volume.read(offsetBytes, lengthBytes);
      assert(data.length === lengthBytes, "a volume read returns the bytes asked for");
      return { kind: "ok", op: "read", handle, data };
    });
  }

  #volume(op: HostOpName, handle: bigint, slot: number): VolumeHandle | undefined {
    const volume = this.#slots.get(slot);
    if (volume === undefined) this.#sendError(op, handle, HostStatus.EBADF, `slot ${slot} is not open`);
    return volume;
  }

  /** Runs one volume operation in flight; its reply goes out whenever it completes (out of order). */
  #run(op: IoOp, handle: bigint, bytes: number, work: () => Promise<HostOkReply>): void {
    this.#inFlight += 1;
    this.#inFlightBytes += bytes;
    const startedNs = process.hrtime.bigint();
    const settle = (reply: HostReply): void => {
      this.#inFlight -= 1;
      this.#inFlightBytes -= bytes;
      assert(this.#inFlight >= 0 && this.#inFlightBytes >= 0, "in-flight accounting stays balanced");
      this.#observe(op, bytes, Number(process.hrtime.bigint() - startedNs) / 1e9, reply.kind === "ok");
      this.#send(reply);
      if (this.#inFlight === 0 && this.#idle !== undefined) {
        const idle = this.#idle;
        this.#idle = undefined;
        idle();
      }
      this.#pump();
    };
    let started: Promise<HostOkReply>;
    try {
      started = work();
    } catch (error) {
      started = Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    void started.then(settle, (error: unknown) => settle(this.#ioError(op, handle, error))).catch((error: unknown) => {
      this.#logger.error({ event: "host_reply_failed", err: error }, "answering a host request failed");
      this.#socket.destroy();
    });
  }

  /** Metrics hook: every READ/WRITE/FLUSH answered, including those refused at the edge (0 bytes, 0 s). */
  #observe(op: IoOp, bytes: number, latencySeconds: number, ok: boolean): void {
    try {
      this.#options.onRequest?.(op, bytes, latencySeconds, ok);
    } catch (error) {
      this.#logger.error({ event: "host_on_request_failed", err: error }, "onRequest callback threw");
    }
  }

  #ioError(op: IoOp, handle: bigint, error: unknown): HostErrorReply {
    if (error instanceof VolumeIoError) {
      return { kind: "error", op, handle, status: HostStatus[error.errno], message: error.message };
    }
    this.#logger.error({ event: "host_io_failed", op, err: error }, "volume operation failed");
    return { kind: "error", op, handle, status: HostStatus.EIO, message: `${op} failed: ${error instanceof Error ? error.message : String(error)}` };
  }

  #sendError(op: HostErrorReply["op"], handle: bigint, status: number, message: string): void {
    this.#logger.debug({ event: "host_request_refused", op, status: statusName(status), detail: message }, "host request refused");
    if (op === "read" || op === "write" || op === "flush") this.#observe(op, 0, 0, false);
    this.#send({ kind: "error", op, handle, status, message });
  }

  #send(reply: HostReply): void {
    if (this.#state === "closed" || this.#socket.destroyed || !this.#socket.writable) return;
    const frames = encodeReply(reply);
    // Header and payload leave in one writev; a reply is never interleaved with another.
    if (frames.length > 1) this.#socket.cork();
    for (const frame of frames) this.#socket.write(frame);
    if (frames.length > 1) this.#socket.uncork();
  }

  /** The stream is out of step (or the peer must go): an error frame, then close. */
  #fatal(status: number, detail: string, handle = 0n): void {
    this.#closeWith({ kind: "error", op: "fatal", handle, status, message: detail });
  }

  #closeWith(reply: HostErrorReply): void {
    if (this.#state === "closed") return;
    this.#logger.warn({ event: "host_protocol_error", status: statusName(reply.status), detail: reply.message }, "closing host connection");
    this.#send(reply);
    this.#state = "closed";
    this.#endSoon();
  }

  /** Half-closes now; destroys once the peer had its grace to read our last frames. */
  #endSoon(): void {
    this.#state = "closed";
    clearTimeout(this.#helloTimer);
    this.#socket.resume(); // drain and drop whatever the peer still sends
    this.#socket.end();
    if (this.#graceTimer === undefined) {
      this.#graceTimer = setTimeout(() => this.#socket.destroy(), hostCloseGraceMs);
      this.#graceTimer.unref();
    }
  }

  #onClose(): void {
    this.#state = "closed";
    this.#connectionSlots.release(this);
    clearTimeout(this.#helloTimer);
    clearTimeout(this.#graceTimer);
    for (const volume of this.#slots.values()) volume.release();
    this.#slots.clear();
    this.#logger.debug({ event: "host_disconnected" }, "host disconnected");
  }
}
