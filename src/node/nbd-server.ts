// The NBD server: sockets only. Negotiation and framing live in src/protocol/nbd (pure);
// this file moves bytes, runs requests against a VolumeCatalog with many in flight per
// connection, keeps each connection's failures to that connection, and bounds everything
// it holds (connections, requests and bytes in flight, buffered replies).
import net from "node:net";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import {
  nbdCloseGraceMs, nbdConnectionsMax, nbdHandshakeTimeoutMs, nbdInFlightBytesMax, nbdOptionBytesMax,
  nbdOptionsPerConnectionMax, nbdRequestBytesMax, nbdRequestsInFlightMax, nbdStringBytesMax,
} from "../core/limits.ts";
import { VolumeIoError, type ExportDescription, type VolumeCatalog, type VolumeHandle } from "../core/volume-io.ts";
import { Cmd, CmdFlag, NbdErrno, nbdSimpleReplyHeaderBytes } from "../protocol/nbd/constants.ts";
import { ByteQueue } from "../protocol/nbd/frame-assembler.ts";
import { encodeGreeting, NbdHandshake, type HandshakeStep } from "../protocol/nbd/handshake.ts";
import { encodeSimpleReplyHeader, RequestAssembler, type NbdRequest } from "../protocol/nbd/transmission.ts";

export type NbdOp = "read" | "write" | "flush" | "trim" | "write_zeroes";

export interface NbdServerOptions {
  host: string;
  port: number; // port 0 = pick one
  catalog: VolumeCatalog;
  logger: Logger;
  /** Called once per completed request (for metrics); must be cheap. */
  onRequest?: (op: NbdOp, bytes: number, latencySeconds: number, errno: number) => void;
}

export interface NbdServer {
  readonly port: number;
  connections(): number;
  close(): Promise<void>;
}

const opOfCmd: Partial<Record<number, NbdOp>> = {
  [Cmd.read]: "read",
  [Cmd.write]: "write",
  [Cmd.flush]: "flush",
  [Cmd.trim]: "trim",
  [Cmd.writeZeroes]: "write_zeroes",
};

const errnoOfCode = {
  EINVAL: NbdErrno.einval,
  EPERM: NbdErrno.eperm,
  ENOSPC: NbdErrno.enospc,
  EIO: NbdErrno.eio,
  ESHUTDOWN: NbdErrno.eshutdown,
} as const;

interface Context {
  readonly catalog: VolumeCatalog;
  readonly logger: Logger;
  readonly onRequest: NbdServerOptions["onRequest"];
  readonly closing: () => boolean;
}

type State = "handshake" | "transmission" | "closing" | "closed";

class NbdConnection {
  private state: State = "handshake";
  private readonly queue = new ByteQueue();
  private readonly handshake: NbdHandshake;
  private assembler: RequestAssembler | undefined;
  private handle: VolumeHandle | undefined;
  private inFlight = 0;
  private inFlightBytes = 0;
  private paused = false;
  /** DISC received, or the server is closing: serve what is in flight, read nothing more. */
  private draining = false;
  private corked = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly log: Logger;
  private readonly socket: net.Socket;
  private readonly ctx: Context;

  constructor(socket: net.Socket, ctx: Context, id: number) {
    this.socket = socket;
    this.ctx = ctx;
    this.log = ctx.logger.child({ nbdConnection: id, remote: `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}` });
    this.handshake = new NbdHandshake(() => ctx.catalog.list(), {
      optionBytesMax: nbdOptionBytesMax,
      optionsMax: nbdOptionsPerConnectionMax,
      stringBytesMax: nbdStringBytesMax,
      requestBytesMax: nbdRequestBytesMax,
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => this.updateFlow());
    socket.on("error", (err) => this.log.debug({ err }, "nbd socket error"));
    socket.on("close", () => this.onClose());
    this.handshakeTimer = setTimeout(() => this.fail(`handshake not finished within ${nbdHandshakeTimeoutMs} ms`), nbdHandshakeTimeoutMs);
    this.handshakeTimer.unref();
    socket.write(encodeGreeting());
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  /** Stops reading, lets requests in flight finish, then ends the connection. */
  shutdown(): void {
    if (this.state === "handshake") {
      this.destroy();
      return;
    }
    this.startDraining();
  }

  destroy(): void {
    if (this.state === "closed") return;
    this.socket.destroy();
  }

  /** Resolves once nothing is in flight (at once if nothing is). */
  idle(): Promise<void> {
    if (this.inFlight === 0 || this.state === "closed") return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onData(chunk: Buffer): void {
    if (this.state !== "handshake" && this.state !== "transmission") return;
    if (this.draining) return;
    this.queue.push(chunk);
    try {
      if (this.state === "handshake") this.runHandshake();
      if (this.state === "transmission") this.pump();
    } catch (err) {
      // A bug reached by some input: contain it to this connection, say so loudly.
      this.log.error({ err }, "nbd connection failed; closing it");
      this.destroy();
    }
  }

  private runHandshake(): void {
    for (;;) {
      const step: HandshakeStep = this.handshake.next(this.queue);
      switch (step.kind) {
        case "need-more":
          return;
        case "send":
          for (const data of step.data) this.socket.write(data);
          continue;
        case "close":
          for (const data of step.data) this.socket.write(data);
          if (step.clean) this.log.debug({ reason: step.reason }, "nbd handshake ended");
          else this.log.warn({ reason: step.reason }, "nbd handshake violation; closing the connection");
          this.endSoon();
          return;
        case "transmission":
          this.enterTransmission(step.data, step.export);
          return;
      }
    }
  }

  private enterTransmission(replies: readonly Buffer[], exp: ExportDescription): void {
    const handle = this.ctx.catalog.open(exp.name);
    if (handle === undefined || this.ctx.closing()) {
      this.log.warn({ export: exp.name }, "nbd export vanished during the handshake; closing the connection");
      this.destroy();
      return;
    }
    for (const data of replies) this.socket.write(data);
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.handle = handle;
    this.assembler = new RequestAssembler(
      { sizeBytes: handle.sizeBytes, readOnly: handle.readOnly, requestBytesMax: nbdRequestBytesMax },
      this.queue,
    );
    this.state = "transmission";
    this.log.info({ export: handle.name, readOnly: handle.readOnly }, "nbd client attached");
  }

  /** Decodes and starts every complete request held, until the in-flight limits stop it. */
  private pump(): void {
    const assembler = this.assembler;
    if (assembler === undefined) return;
    while (this.state === "transmission" && !this.draining && !this.blocked()) {
      const next = assembler.next();
      if (next.kind === "need-more") break;
      if (next.kind === "fatal") {
        this.log.warn({ reason: next.reason }, "nbd protocol violation; closing the connection");
        this.destroy();
        return;
      }
      this.dispatch(next.request, next.errno, next.payload);
    }
    this.updateFlow();
  }

  private blocked(): boolean {
    return this.inFlight >= nbdRequestsInFlightMax ||
      this.inFlightBytes + this.socket.writableLength >= nbdInFlightBytesMax;
  }

  /** Pauses the socket while the limits are reached and resumes (and decodes) once they clear. */
  private updateFlow(): void {
    if (this.state !== "transmission") return;
    const stop = this.draining || this.blocked();
    if (stop && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.socket.resume();
      // Requests that arrived before we paused are still queued: serve them now.
      this.pump();
    }
  }

  private dispatch(request: NbdRequest, errno: number, payload: Buffer | undefined): void {
    if (request.type === Cmd.disc) {
      this.startDraining();
      return;
    }
    if (errno !== 0) {
      this.reply(request, errno, undefined);
      const op = opOfCmd[request.type];
      if (op !== undefined) this.ctx.onRequest?.(op, 0, 0, errno);
      return;
    }
    const handle = this.handle;
    if (handle === undefined) throw new Error("transmission without a handle");
    const startMs = this.ctx.onRequest === undefined ? 0 : performance.now();
    const heldBytes = request.type === Cmd.read || request.type === Cmd.write ? request.lengthBytes : 0;
    this.inFlight++;
    this.inFlightBytes += heldBytes;
    const fua = (request.flags & CmdFlag.fua) !== 0;
    let done: Promise<Buffer | void>;
    try {
      switch (request.type) {
        case Cmd.read:
          done = handle.read(request.offsetBytes, request.lengthBytes);
          break;
        case Cmd.write:
          if (payload === undefined) throw new Error("a validated WRITE carries its payload");
          done = handle.write(request.offsetBytes, payload, { fua });
          break;
        case Cmd.flush:
          done = handle.flush();
          break;
        case Cmd.trim:
          done = handle.trim(request.offsetBytes, request.lengthBytes, { fua });
          break;
        case Cmd.writeZeroes:
          done = handle.writeZeroes(request.offsetBytes, request.lengthBytes, { fua });
          break;
        default:
          throw new Error(`validated request has unexpected type ${request.type}`);
      }
    } catch (err) {
      done = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    done.then(
      (result) => this.complete(request, heldBytes, startMs, 0, result),
      (err: unknown) => this.complete(request, heldBytes, startMs, this.errnoOf(err), undefined),
    );
  }

  private complete(request: NbdRequest, heldBytes: number, startMs: number, errno: number, result: Buffer | void): void {
    this.inFlight--;
    this.inFlightBytes -= heldBytes;
    let data: Buffer | undefined;
    if (request.type === Cmd.read && errno === 0) {
      if (!(result instanceof Buffer) || result.length !== request.lengthBytes) {
        this.log.error({ offsetBytes: request.offsetBytes, lengthBytes: request.lengthBytes }, "volume read returned the wrong number of bytes");
        errno = NbdErrno.eio;
      } else {
        data = result;
      }
    }
    this.reply(request, errno, data);
    const op = opOfCmd[request.type];
    if (op !== undefined && this.ctx.onRequest !== undefined) {
      const bytes = op === "flush" ? 0 : request.lengthBytes;
      this.ctx.onRequest(op, bytes, (performance.now() - startMs) / 1000, errno);
    }
    if (this.inFlight === 0) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      if (this.draining) this.endSoon();
    }
    this.updateFlow();
  }

  private errnoOf(err: unknown): number {
    if (err instanceof VolumeIoError) return errnoOfCode[err.code];
    this.log.error({ err }, "volume request failed unexpectedly; answering EIO");
    return NbdErrno.eio;
  }

  /** Header and data go out back to back, so replies never interleave; replies of one tick share a writev. */
  private reply(request: NbdRequest, errno: number, data: Buffer | undefined): void {
    // The peer may be gone (or have half-closed, which ends our side too): nothing to answer.
    if (this.state === "closed" || this.socket.destroyed || !this.socket.writable) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        if (!this.socket.destroyed) this.socket.uncork();
      });
    }
    const header = encodeSimpleReplyHeader(errno, request.cookieHi, request.cookieLo, Buffer.allocUnsafe(nbdSimpleReplyHeaderBytes));
    this.socket.write(header);
    if (data !== undefined) this.socket.write(data);
  }

  private startDraining(): void {
    if (this.draining) return;
    this.draining = true;
    this.updateFlow();
    if (this.inFlight === 0) this.endSoon();
  }

  /** Flushes what was written, then closes; a peer that does not read is cut off after a while. */
  private endSoon(): void {
    if (this.state === "closed") return;
    if (this.state !== "closing") {
      this.state = "closing";
      this.socket.end();
      setTimeout(() => this.destroy(), 2_000).unref();
    }
  }

  private fail(reason: string): void {
    this.log.warn({ reason }, "nbd connection closed");
    this.destroy();
  }

  private onClose(): void {
    this.state = "closed";
    clearTimeout(this.handshakeTimer);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const { catalog, logger, onRequest } = options;
  const live = new Set<NbdConnection>();
  let closing = false;
  let nextId = 1;
  const ctx: Context = { catalog, logger, onRequest, closing: () => closing };

  const server = net.createServer({ noDelay: true, keepAlive: true });
  server.on("connection", (socket) => {
    if (closing || live.size >= nbdConnectionsMax) {
      logger.warn({ connections: live.size, max: nbdConnectionsMax, closing }, "nbd connection refused");
      socket.destroy();
      return;
    }
    try {
      const conn = new NbdConnection(socket, ctx, nextId++);
      live.add(conn);
      socket.on("close", () => live.delete(conn));
    } catch (err) {
      logger.error({ err }, "nbd connection setup failed");
      socket.destroy();
    }
  });
  server.on("error", (err) => logger.error({ err }, "nbd server error"));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("nbd server has no TCP address");
  logger.info({ host: options.host, port: address.port }, "nbd server listening");

  let closed: Promise<void> | undefined;
  return {
    port: address.port,
    connections: () => live.size,
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const conn of live) conn.shutdown();
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, nbdCloseGraceMs); });
        await Promise.race([Promise.all([...live].map((c) => c.idle())), grace]);
        clearTimeout(timer);
        for (const conn of live) conn.destroy();
        await stopped;
        logger.info("nbd server closed");
      })();
      return closed;
    },
  };
}
