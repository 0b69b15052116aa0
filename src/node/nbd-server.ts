// The NBD server: sockets only. Negotiation and framing live in src/protocol/nbd (pure);
// this file moves bytes, runs requests against a VolumeCatalog with many in flight per
// connection, keeps each connection's failures to that connection, and bounds everything
// it holds (connections, requests and bytes in flight, buffered replies).
//
// Hot path (docs/benchmarks.md): socket reads land in our own buffers (net.Socket `onread`),
// not in a fresh 64 KiB ArrayBuffer per read: a large WRITE payload is read straight into
// its own buffer, everything else into a receive slab whose bytes are reused by the next read
// unless a request still references them. Replies of one event-loop turn are encoded into a
// reused reply slab and leave in one write. Allocation volume matters more than it seems:
// V8 starts a full mark-compact for every 64 MiB of ArrayBuffers allocated.
import net from "node:net";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import {
  nbdCloseGraceMs, nbdConnectionsMax, nbdHandshakeTimeoutMs, nbdInFlightBytesMax, nbdOptionBytesMax,
  nbdOptionsPerConnectionMax, nbdRequestBytesMax, nbdRequestsInFlightMax, nbdStringBytesMax,
} from "../core/limits.ts";
import { assert } from "../core/assert.ts";
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
  readonly payloads: PayloadPool;
  readonly catalog: VolumeCatalog;
  readonly logger: Logger;
  readonly onRequest: NbdServerOptions["onRequest"];
  readonly closing: () => boolean;
}

type State = "handshake" | "transmission" | "closing" | "closed";

const KiB = 1024;
/** Received bytes land in slabs of this size: one ArrayBuffer per slab, not per socket read. */
const receiveSlabBytes = 1024 * KiB;
/** One socket read is offered at most this much of the receive slab... */
const receiveReadBytesMax = 256 * KiB;
/** ...and at least this much (else a new slab is started). */
const receiveReadBytesMin = 64 * KiB;
/** A WRITE payload with at least this much still to come is read straight into its own buffer. */
const directReadBytesMin = 64 * KiB;
/** Reply data up to this size is copied into the reply slab; larger data is written as it is. */
const replyCopyBytesMax = 64 * KiB;
/** Replies are encoded into slabs of this size, reused once the socket has written them. */
const replySlabBytes = 256 * KiB;
/** Written-out reply slabs kept for reuse, per connection. */
const replySlabsFreeMax = 2;

/** WRITE payloads from this size up to payloadSlotBytesMax are gathered into pooled slots... */
const payloadSlotBytesMin = 512;
/** ...of a power-of-two size, carved from arenas of payloadArenaBytes. */
const payloadSlotBytesMax = 4096 * KiB;
const payloadArenaBytes = 16384 * KiB;
/** Arenas per slot size, for all connections of a server together. */
const payloadArenasPerSizeMax = 2;

/**
 * Reused buffers for WRITE payloads (512 B..4 MiB). Without reuse every 1 MiB write allocated a
 * fresh 1 MiB ArrayBuffer, and V8 answers each ~64 MiB of those with a full mark-compact
 * (a third of the process's CPU at 1 MiB writes). A slot goes back to the pool only once
 * the write it carried succeeded: VolumeHandle.write's data is borrowed until its promise
 * settles (the journal and the volume file are done with it by then). Anyone who keeps a
 * payload longer must copy it (the pair's in-memory record tail copies every payload). Slots
 * are also views of a much larger buffer (an arena is at least four times the largest slot),
 * which keepers that copy only such views would catch as well.
 */
class PayloadPool {
  /** Free slots by slot size. */
  private readonly free = new Map<number, Buffer[]>();
  private readonly arenasBySize = new Map<number, number>();
  /** Arena -> its slot size, and the offsets of its slots in use. */
  private readonly arenas = new Map<ArrayBufferLike, { readonly slotBytes: number; readonly inUse: Set<number> }>();

  /** A buffer of exactly `bytes`: a pooled slot's start, or a fresh buffer outside the pooled sizes or when full. */
  allocate(bytes: number): Buffer {
    if (bytes < payloadSlotBytesMin || bytes > payloadSlotBytesMax) return Buffer.allocUnsafe(bytes);
    const slotBytes = 2 ** Math.ceil(Math.log2(bytes));
    let free = this.free.get(slotBytes);
    if (free === undefined) {
      free = [];
      this.free.set(slotBytes, free);
    }
    if (free.length === 0) this.grow(slotBytes, free);
    const slot = free.pop();
    if (slot === undefined) return Buffer.allocUnsafe(bytes);
    const arena = this.arenas.get(slot.buffer);
    assert(arena !== undefined && !arena.inUse.has(slot.byteOffset), "a free slot belongs to an arena and is not in use");
    arena.inUse.add(slot.byteOffset);
    return slot.subarray(0, bytes);
  }

  /** Whether `payload` is a slot of this pool (release() takes it back). */
  owns(payload: Buffer): boolean {
    return this.arenas.has(payload.buffer);
  }

  /** Gives a slot back; its bytes may be overwritten from now on. */
  release(payload: Buffer): void {
    const arena = this.arenas.get(payload.buffer);
    assert(arena !== undefined, "released payload is a pooled slot");
    const wasInUse = arena.inUse.delete(payload.byteOffset);
    assert(wasInUse, "a slot is released once per allocation");
    this.free.get(arena.slotBytes)?.push(Buffer.from(payload.buffer, payload.byteOffset, arena.slotBytes));
  }

  private grow(slotBytes: number, free: Buffer[]): void {
    const arenas = this.arenasBySize.get(slotBytes) ?? 0;
    if (arenas >= payloadArenasPerSizeMax) return;
    this.arenasBySize.set(slotBytes, arenas + 1);
    const arena = Buffer.allocUnsafeSlow(payloadArenaBytes); // pages become resident only as slots are used
    this.arenas.set(arena.buffer, { slotBytes, inUse: new Set() });
    for (let at = 0; at + slotBytes <= arena.length; at += slotBytes) free.push(arena.subarray(at, at + slotBytes));
  }
}
assert(payloadArenaBytes >= 4 * payloadSlotBytesMax, "every slot is a view of a much larger buffer (keepers copy those)");

/** A reply slab and the socket writes of its bytes not yet completed. */
interface ReplySlab {
  readonly buf: Buffer;
  pendingWrites: number;
  /** No more replies go into it; it is free again once pendingWrites drops to 0. */
  retired: boolean;
}

/** Bytes queued for the socket at the next flush: a run of a reply slab, or large reply data. */
interface OutSegment {
  readonly buf: Buffer;
  readonly slab: ReplySlab | undefined;
}

type AdoptableSocket = net.Socket & { _handle?: unknown };

/**
 * Re-wraps an accepted socket's handle in a socket that reads into our buffers (`onread`;
 * net.Server has no such option). The accepted socket must not have started reading
 * (pauseOnConnect); it is released without closing the handle. Returns undefined if this
 * Node.js does not expose the handle, and the caller keeps the accepted socket.
 */
function adoptWithOnread(accepted: net.Socket, onread: net.OnReadOpts): net.Socket | undefined {
  const source = accepted as AdoptableSocket;
  const handle = source._handle;
  if (handle === null || typeof handle !== "object" || accepted.readableFlowing === true) return undefined;
  source._handle = null; // the accepted socket lets go: destroy() below no longer closes the handle
  accepted.destroy();
  const socket = new net.Socket({ handle: handle as net.BoundSocket, onread, readable: true, writable: true });
  socket.setNoDelay(true);
  socket.setKeepAlive(true);
  return socket;
}

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
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** Receive slab; bytes before receiveKeptBytes may still be referenced and are never reused. */
  private receiveSlab: Buffer = Buffer.alloc(0);
  private receiveKeptBytes = 0;
  /** The buffer offered to the pending socket read was a WRITE payload's unfilled tail. */
  private readingDirect = false;
  /** A WRITE payload handed out during this read is a view of the receive slab. */
  private slabViewTaken = false;
  private replySlab: ReplySlab | undefined;
  /** Reply slab bytes [replyRunStart, replyUsed) are encoded and not yet queued. */
  private replyRunStart = 0;
  private replyUsed = 0;
  private readonly freeReplySlabs: ReplySlab[] = [];
  private readonly out: OutSegment[] = [];
  /** Reply bytes encoded or queued, not yet handed to the socket. */
  private outBytes = 0;
  private flushScheduled = false;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly log: Logger;
  readonly socket: net.Socket;
  private readonly ctx: Context;

  /** `accepted` comes from a server with pauseOnConnect: it has not read anything yet. */
  constructor(accepted: net.Socket, ctx: Context, id: number) {
    this.ctx = ctx;
    const adopted = adoptWithOnread(accepted, {
      buffer: () => this.nextReadBuffer(),
      callback: (bytesRead, buf) => {
        this.onRead(bytesRead, buf as Buffer);
        return true; // flow control pauses the socket itself (updateFlow)
      },
    });
    const socket = adopted ?? accepted;
    this.socket = socket;
    this.log = ctx.logger.child({ nbdConnection: id, remote: `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}` });
    this.handshake = new NbdHandshake(() => ctx.catalog.list(), {
      optionBytesMax: nbdOptionBytesMax,
      optionsMax: nbdOptionsPerConnectionMax,
      stringBytesMax: nbdStringBytesMax,
      requestBytesMax: nbdRequestBytesMax,
    });
    if (adopted === undefined) {
      this.log.debug("nbd socket reads into Node's own buffers (onread not available)");
      socket.on("data", (chunk: Buffer) => this.onData(chunk));
      socket.resume();
    }
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

  /** The buffer the next socket read fills (called after every read, and once at the start). */
  private nextReadBuffer(): Buffer {
    const direct = this.state === "transmission" ? this.assembler?.directTarget(directReadBytesMin) : undefined;
    if (direct !== undefined) {
      this.readingDirect = true;
      return direct;
    }
    this.readingDirect = false;
    if (this.receiveSlab.length - this.receiveKeptBytes < receiveReadBytesMin) {
      this.receiveSlab = Buffer.allocUnsafe(receiveSlabBytes);
      this.receiveKeptBytes = 0;
    }
    return this.receiveSlab.subarray(this.receiveKeptBytes, Math.min(this.receiveSlab.length, this.receiveKeptBytes + receiveReadBytesMax));
  }

  /** `onread` callback: `bytesRead` bytes arrived at the start of `buf` (from nextReadBuffer). */
  private onRead(bytesRead: number, buf: Buffer): void {
    if (this.readingDirect) {
      const assembler = this.assembler;
      assert(assembler !== undefined, "direct reads happen in transmission");
      assembler.directFilled(bytesRead);
      this.process();
      return;
    }
    const wasHandshake = this.state === "handshake";
    this.slabViewTaken = false;
    this.onData(buf.subarray(0, bytesRead));
    // Keep these bytes if anything may still reference them (handshake state, queued bytes,
    // a WRITE payload view); otherwise the next read reuses them.
    if (wasHandshake || this.queue.length > 0 || this.slabViewTaken) this.receiveKeptBytes += bytesRead;
  }

  private onData(chunk: Buffer): void {
    if (this.state !== "handshake" && this.state !== "transmission") return;
    if (this.draining) return;
    this.queue.push(chunk);
    this.process();
  }

  private process(): void {
    if (this.state !== "handshake" && this.state !== "transmission") return;
    if (this.draining) return;
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
      (bytes) => this.ctx.payloads.allocate(bytes),
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
      this.inFlightBytes + this.outBytes + this.socket.writableLength >= nbdInFlightBytesMax;
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
          if (payload.buffer === this.receiveSlab.buffer) {
            // A view of the receive slab: copy it into a pooled slot, so the slab's bytes are
            // reused by the next read instead of waiting for every write in them (and the GC).
            const slot = this.ctx.payloads.allocate(payload.length);
            if (this.ctx.payloads.owns(slot)) {
              payload.copy(slot);
              payload = slot;
            } else {
              this.slabViewTaken = true;
            }
          }
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
      (result) => {
        // The write succeeded, so nothing downstream holds its payload any more: reuse it.
        // (After a failure the journal or the volume may still be writing it: let it go.)
        if (payload !== undefined && this.ctx.payloads.owns(payload)) this.ctx.payloads.release(payload);
        this.complete(request, heldBytes, startMs, 0, result);
      },
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

  /**
   * Header and data go out back to back, so replies never interleave. Replies of one
   * event-loop turn are encoded into the reply slab and leave together at the flush.
   */
  private reply(request: NbdRequest, errno: number, data: Buffer | undefined): void {
    // The peer may be gone (or have half-closed, which ends our side too): nothing to answer.
    if (this.state === "closed" || this.socket.destroyed || !this.socket.writable) return;
    const copyData = data !== undefined && data.length <= replyCopyBytesMax;
    const slab = this.replySpace(nbdSimpleReplyHeaderBytes + (copyData ? data.length : 0));
    encodeSimpleReplyHeader(errno, request.cookieHi, request.cookieLo, slab.buf, this.replyUsed);
    this.replyUsed += nbdSimpleReplyHeaderBytes;
    this.outBytes += nbdSimpleReplyHeaderBytes;
    if (data !== undefined) {
      if (copyData) {
        data.copy(slab.buf, this.replyUsed);
        this.replyUsed += data.length;
      } else {
        this.endReplyRun();
        this.out.push({ buf: data, slab: undefined });
      }
      this.outBytes += data.length;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushReplies());
    }
  }

  /** A reply slab with `bytes` free after replyUsed (a fresh or reused one if the current is full). */
  private replySpace(bytes: number): ReplySlab {
    assert(bytes <= replySlabBytes, "a copied reply fits a reply slab");
    const current = this.replySlab;
    if (current !== undefined && this.replyUsed + bytes <= current.buf.length) return current;
    if (current !== undefined) {
      this.endReplyRun();
      current.retired = true;
      if (current.pendingWrites === 0) this.releaseReplySlab(current);
    }
    const slab = this.freeReplySlabs.pop() ?? { buf: Buffer.allocUnsafe(replySlabBytes), pendingWrites: 0, retired: false };
    slab.retired = false;
    this.replySlab = slab;
    this.replyRunStart = 0;
    this.replyUsed = 0;
    return slab;
  }

  /** Queues the reply slab bytes encoded since the last run ended. */
  private endReplyRun(): void {
    const slab = this.replySlab;
    if (slab === undefined || this.replyUsed === this.replyRunStart) return;
    this.out.push({ buf: slab.buf.subarray(this.replyRunStart, this.replyUsed), slab });
    slab.pendingWrites += 1;
    this.replyRunStart = this.replyUsed;
  }

  private releaseReplySlab(slab: ReplySlab): void {
    if (this.freeReplySlabs.length < replySlabsFreeMax) this.freeReplySlabs.push(slab);
  }

  /** Hands this turn's replies to the socket in one corked batch (one writev). */
  private flushReplies(): void {
    this.flushScheduled = false;
    this.endReplyRun();
    const segments = this.out.splice(0);
    this.outBytes = 0;
    if (this.socket.destroyed || !this.socket.writable) return;
    if (segments.length > 1) this.socket.cork();
    for (const segment of segments) {
      const slab = segment.slab;
      if (slab === undefined) {
        this.socket.write(segment.buf);
        continue;
      }
      this.socket.write(segment.buf, (err) => {
        slab.pendingWrites -= 1;
        // Reused only once the socket is done with every byte of it (never after an error).
        if (err === null || err === undefined) {
          if (slab.retired && slab.pendingWrites === 0) this.releaseReplySlab(slab);
        }
      });
    }
    if (segments.length > 1) this.socket.uncork();
    this.updateFlow();
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
      this.flushReplies(); // answers still waiting for this turn's flush go out first
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
    // A payload gathered part-way was never handed on: its slot can be reused.
    const partial = this.assembler?.abandonPayload();
    if (partial !== undefined && this.ctx.payloads.owns(partial)) this.ctx.payloads.release(partial);
    clearTimeout(this.handshakeTimer);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const { catalog, logger, onRequest } = options;
  const live = new Set<NbdConnection>();
  let closing = false;
  let nextId = 1;
  const ctx: Context = { payloads: new PayloadPool(), catalog, logger, onRequest, closing: () => closing };

  // pauseOnConnect: a connection's socket is re-wrapped to read into our buffers before it reads.
  const server = net.createServer({ noDelay: true, keepAlive: true, pauseOnConnect: true });
  server.on("connection", (socket) => {
    if (closing || live.size >= nbdConnectionsMax) {
      logger.warn({ connections: live.size, max: nbdConnectionsMax, closing }, "nbd connection refused");
      socket.destroy();
      return;
    }
    try {
      const conn = new NbdConnection(socket, ctx, nextId++);
      live.add(conn);
      // The connection's own socket (it may have re-wrapped the accepted one).
      conn.socket.on("close", () => live.delete(conn));
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
