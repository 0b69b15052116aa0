// The NBD server: sockets only. Negotiation and framing live in src/protocol/nbd (pure);
// this file moves bytes, runs requests against a VolumeCatalog with many in flight per
// connection, keeps each connection's failures to that connection, and bounds everything
// it holds (connections, requests and bytes in flight, buffered replies).
//
// Connections (docs/nbd.md, "Connection limits"): a connection in its handshake holds a slot of
// a pool of its own (nbdHandshakesMax, the oldest closed to admit a new one, deadline
// nbdHandshakeTimeoutMs); one in transmission counts against nbdConnectionsMax only. A slot is
// free the moment its socket closes or is destroyed. The socket is read until it closes, also
// while a connection drains after DISC, so a peer's FIN or RST is seen at once. Every buffer a
// connection uses is a slot of the server's pools (src/frontends/slot-pool.ts), given back when it
// closes, so connects and disconnects allocate none; pools give idle memory back to the system.
//
// Hot path (docs/benchmarks.md): socket reads land in our own buffers (net.Socket `onread`),
// not in a fresh 64 KiB ArrayBuffer per read: a large WRITE payload is read straight into
// its own buffer, everything else into a receive slab whose bytes are reused by the next read
// unless a request still references them. Replies of one event-loop turn are encoded into a
// reused reply slab and leave in one write. Allocation volume matters more than it seems:
// V8 starts a full mark-compact for every 64 MiB of ArrayBuffers allocated.
import { VolumeIoError } from "../core/errors.ts";
import net from "node:net";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import {
  nbdBufferIdleReleaseMs, nbdCloseGraceMs, nbdCloseLingerMs, nbdConnectionsMax, nbdHandshakeTimeoutMs, nbdHandshakesMax, nbdInFlightBytesMax,
  nbdOptionBytesMax, nbdOptionsPerConnectionMax, nbdRequestBytesMax, nbdRequestsInFlightMax, nbdStringBytesMax,
} from "../core/limits.ts";
import { assert } from "../core/assert.ts";
import { ConnectionSlots } from "../core/connection-slots.ts";
import { SlotPool, slotArenaBytes, slotBytesMax, slotBytesMin } from "./slot-pool.ts";
import { type ExportDescription, type VolumeCatalog, type VolumeHandle } from "../core/volume-io.ts";
import { Cmd, CmdFlag, NbdErrno, nbdSimpleReplyHeaderBytes, Opt, Rep } from "../protocol/nbd/constants.ts";
import { ByteQueue } from "../protocol/nbd/frame-assembler.ts";
import { encodeGreeting, encodeOptionReply, NbdHandshake, type HandshakeStep } from "../protocol/nbd/handshake.ts";
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
  /** Open connections: in the handshake and in transmission. */
  connections(): number;
  /** Open connections still in the handshake. */
  handshakes(): number;
  /** Pooled buffers (payloads, READ data, slabs): arenas held and slots in use. */
  buffers(): { arenas: number; slotsInUse: number };
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
  /** WRITE payloads and READ data. */
  readonly payloads: SlotPool;
  readonly receiveSlabs: SlotPool;
  readonly replySlabs: SlotPool;
  readonly slots: ConnectionSlots<NbdConnection>;
  readonly catalog: VolumeCatalog;
  readonly logger: Logger;
  readonly onRequest: NbdServerOptions["onRequest"];
  readonly closing: () => boolean;
}

type State = "handshake" | "transmission" | "closing" | "closed";

/** The server's greeting, the same for every connection (written, never changed). */
const greeting = encodeGreeting();
const noBytes = Buffer.alloc(0);

const KiB = 1024;
/**
 * Before transmission received bytes land in a small slab of this size (a pool slot, like every
 * slab): a connection that only connects, negotiates or says nothing holds no large buffer and
 * allocates none. Handshake messages are small; a long option arrives in several reads...
 */
const handshakeSlabBytes = 4 * KiB;
/** ...each offered at least this much of the slab (else a fresh one is taken). */
const handshakeReadBytesMin = 1 * KiB;
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

/** Arenas (of slotArenaBytes) per slot size for WRITE payloads and READ data, for all connections of a server together. */
const payloadArenasPerSizeMax = 1;
/**
 * Receive and reply slabs are pool slots too, shared by all connections of a server and given
 * back when a connection no longer refers to them (at the latest when it closes), so connection
 * churn allocates no slabs. Enough arenas for a slab of each kind per connection at the limit;
 * past them a slab is a fresh buffer (the GC frees it).
 */
const receiveSlabArenasMax = Math.ceil(nbdConnectionsMax * receiveSlabBytes / slotArenaBytes);
const replySlabArenasMax = Math.ceil(nbdConnectionsMax * replySlabBytes / slotArenaBytes);
/** Pools are swept every half of nbdBufferIdleReleaseMs; an arena unused for two sweeps is given back. */
const bufferSweepIntervalMs = nbdBufferIdleReleaseMs / 2;
const bufferIdleSweeps = 2;
for (const slabBytes of [handshakeSlabBytes, receiveSlabBytes, replySlabBytes]) {
  assert(slabBytes >= slotBytesMin && slabBytes <= slotBytesMax && Number.isInteger(Math.log2(slabBytes)), "slabs are pool slots of their exact size");
}
assert(handshakeReadBytesMin < handshakeSlabBytes && receiveReadBytesMin < receiveReadBytesMax && receiveReadBytesMax <= receiveSlabBytes, "a read fits its slab");

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
  /** `buf` is a payload pool slot (READ data): back to the pool once the socket is done with it. */
  readonly pooled: boolean;
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
  /** DISC received, or the server is closing: serve what is in flight, decode nothing more (what arrives is dropped). */
  private draining = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** Destroys the socket if the peer has not closed nbdCloseLingerMs after we ended it. */
  private lingerTimer: NodeJS.Timeout | undefined;
  /**
   * Receive slab (handshakeSlabBytes before transmission, receiveSlabBytes in it); bytes before
   * receiveKeptBytes may still be referenced and are never reused.
   */
  private receiveSlab: Buffer = noBytes;
  private receiveKeptBytes = 0;
  /** The buffer offered to the pending socket read is a WRITE payload's unfilled tail, or the receive slab. */
  private readTarget: "direct" | "slab" = "slab";
  /** A WRITE payload handed out during this read is a view of the receive slab. */
  private slabViewTaken = false;
  private replySlab: ReplySlab | undefined;
  /** Reply slab bytes [replyRunStart, replyUsed) are encoded and not yet queued. */
  private replyRunStart = 0;
  private replyUsed = 0;
  /**
   * Receive slabs left behind for a fresh one while their bytes may still be referenced (kept
   * bytes, WRITE payload views); given back to the pool once nothing is queued or in flight.
   */
  private readonly retiredReceiveSlabs: Buffer[] = [];
  /**
   * Payloads of failed WRITEs that were views of a receive slab: the journal or the volume may
   * still be writing them, so their slab is never reused (as a failed write's payload slot).
   */
  private readonly failedSlabViews: Buffer[] = [];
  /** The slabs went back to the server's pools (the connection closed with nothing in flight). */
  private buffersRecycled = false;
  private readonly out: OutSegment[] = [];
  /** Reply bytes encoded or queued, not yet handed to the socket. */
  private outBytes = 0;
  private flushScheduled = false;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly id: number;
  /** Peer address:port, for log lines. */
  private readonly remote: string;
  private childLogger: Logger | undefined;
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
    this.id = id;
    this.remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
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
    socket.write(greeting);
  }

  /** This connection's logger, made on first use (most connections log one line, or none). */
  private get log(): Logger {
    this.childLogger ??= this.ctx.logger.child({ nbdConnection: this.id, remote: this.remote });
    return this.childLogger;
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

  /** Closes the socket now; the connection's slot is free from this moment on. */
  destroy(): void {
    this.ctx.slots.release(this);
    if (this.state === "closed") return;
    this.socket.destroy();
  }

  /** Closed to admit a newer connection to the full handshake pool (its slot is already free). */
  evict(reason: string): void {
    this.log.warn({ reason, handshakesMax: nbdHandshakesMax }, "nbd connection closed: handshake pool full");
    this.destroy();
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
      this.readTarget = "direct";
      return direct;
    }
    this.readTarget = "slab";
    const transmission = this.assembler !== undefined;
    const slabBytes = transmission ? receiveSlabBytes : handshakeSlabBytes;
    const readBytesMin = transmission ? receiveReadBytesMin : handshakeReadBytesMin;
    if (this.receiveSlab.length !== slabBytes || this.receiveSlab.length - this.receiveKeptBytes < readBytesMin) {
      // The slab left behind may still be referenced (kept bytes): it waits for an idle moment.
      if (this.ctx.receiveSlabs.owns(this.receiveSlab)) this.retiredReceiveSlabs.push(this.receiveSlab);
      this.receiveSlab = this.ctx.receiveSlabs.allocate(slabBytes);
      this.receiveKeptBytes = 0;
    }
    return this.receiveSlab.subarray(this.receiveKeptBytes, Math.min(this.receiveSlab.length, this.receiveKeptBytes + receiveReadBytesMax));
  }

  /** `onread` callback: `bytesRead` bytes arrived at the start of `buf` (from nextReadBuffer). */
  private onRead(bytesRead: number, buf: Buffer): void {
    const target = this.readTarget;
    if (target === "direct") {
      const assembler = this.assembler;
      assert(assembler !== undefined, "direct reads happen in transmission");
      assembler.directFilled(bytesRead);
      this.process();
      return;
    }
    this.slabViewTaken = false;
    this.onData(buf.subarray(0, bytesRead));
    // Keep slab bytes if anything may still reference them (queued bytes, a WRITE payload
    // view); otherwise the next read reuses them. (The handshake keeps no view of its input
    // between reads: it takes a message out of the queue only once all of it is there.)
    if (this.queue.length > 0 || this.slabViewTaken) this.receiveKeptBytes += bytesRead;
    this.releaseRetiredReceiveSlabs();
  }

  /** Gives retired receive slabs back to the pool once nothing can refer to them any more. */
  private releaseRetiredReceiveSlabs(): void {
    if (this.retiredReceiveSlabs.length === 0 || this.inFlight > 0) return;
    if (this.state !== "closed" && this.queue.length > 0) return;
    for (const slab of this.retiredReceiveSlabs.splice(0)) {
      const tainted = this.failedSlabViews.some((view) => view.buffer === slab.buffer &&
        view.byteOffset >= slab.byteOffset && view.byteOffset < slab.byteOffset + slab.length);
      if (!tainted) this.ctx.receiveSlabs.release(slab);
    }
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
          this.enterTransmission(step);
          return;
      }
    }
  }

  private enterTransmission(step: Extract<HandshakeStep, { kind: "transmission" }>): void {
    const exp: ExportDescription = step.export;
    if (this.ctx.closing()) {
      this.destroy();
      return;
    }
    if (!this.ctx.slots.establish(this)) {
      // Every transmission slot is taken: answer GO with an error (EXPORT_NAME has none) and close.
      const message = `the node serves at most ${nbdConnectionsMax} NBD connections; try again later`;
      this.log.warn({ connections: this.ctx.slots.established, max: nbdConnectionsMax, export: exp.name }, "nbd connection refused");
      if (step.option === Opt.go) this.socket.write(encodeOptionReply(Opt.go, Rep.errPolicy, Buffer.from(message, "utf8")));
      this.endSoon();
      return;
    }
    const handle = this.ctx.catalog.open(exp.name);
    if (handle === undefined) {
      this.log.warn({ export: exp.name }, "nbd export vanished during the handshake; closing the connection");
      this.destroy();
      return;
    }
    for (const data of step.data) this.socket.write(data);
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.handle = handle;
    this.assembler = new RequestAssembler(
      { sizeBytes: handle.sizeBytes, readOnly: handle.readOnly, requestBytesMax: nbdRequestBytesMax },
      this.queue,
      (bytes) => this.ctx.payloads.allocate(bytes),
    );
    this.state = "transmission";
    this.ctx.logger.info({ nbdConnection: this.id, remote: this.remote, export: handle.name, readOnly: handle.readOnly }, "nbd client attached");
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

  /**
   * Pauses the socket while the limits are reached and resumes (and decodes) once they clear.
   * A draining connection is read (and what arrives dropped) to the end, so the peer's FIN or
   * RST closes it at once instead of holding its slot.
   */
  private updateFlow(): void {
    if (this.state !== "transmission") return;
    const stop = !this.draining && this.blocked();
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
    /** READ data lands in a pooled slot (a new buffer past the pool's sizes or when it is full). */
    let readInto: Buffer | undefined;
    /** A WRITE payload lent to the ingest: it gives the slot back itself (onPayloadFree). */
    let lent = false;
    try {
      switch (request.type) {
        case Cmd.read:
          readInto = this.ctx.payloads.allocate(request.lengthBytes);
          done = handle.read(request.offsetBytes, request.lengthBytes, readInto);
          break;
        case Cmd.write:
          if (payload === undefined) throw new Error("a validated WRITE carries its payload");
          if (payload.buffer === this.receiveSlab.buffer || this.ctx.receiveSlabs.owns(payload)) {
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
          if (this.ctx.payloads.owns(payload)) {
            // A pooled slot is lent to the ingest until it says the volume has it (journal before
            // volume: that is after the answer); the slot goes back to the pool then.
            const lentSlot = payload;
            lent = true;
            done = handle.write(request.offsetBytes, lentSlot, { fua, onPayloadFree: () => this.ctx.payloads.release(lentSlot) });
          } else {
            done = handle.write(request.offsetBytes, payload, { fua });
          }
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
        if (!lent && payload !== undefined && this.ctx.payloads.owns(payload)) this.ctx.payloads.release(payload);
        // The volume is done with a read's slot: it is the reply's data now, or unused.
        if (readInto !== undefined && result !== readInto) this.releasePooled(readInto);
        this.complete(request, heldBytes, startMs, 0, result);
      },
      (err: unknown) => {
        if (readInto !== undefined) this.releasePooled(readInto);
        if (payload !== undefined && this.ctx.receiveSlabs.owns(payload)) this.failedSlabViews.push(payload);
        this.complete(request, heldBytes, startMs, this.errnoOf(err), undefined);
      },
    );
  }

  /** Gives `buf` back to the payload pool if it is one of its slots. */
  private releasePooled(buf: Buffer): void {
    if (this.ctx.payloads.owns(buf)) this.ctx.payloads.release(buf);
  }

  private complete(request: NbdRequest, heldBytes: number, startMs: number, errno: number, result: Buffer | void): void {
    this.inFlight--;
    this.inFlightBytes -= heldBytes;
    let data: Buffer | undefined;
    if (request.type === Cmd.read && errno === 0) {
      if (!(result instanceof Buffer) || result.length !== request.lengthBytes) {
        this.log.error({ offsetBytes: request.offsetBytes, lengthBytes: request.lengthBytes }, "volume read returned the wrong number of bytes");
        errno = NbdErrno.eio;
        if (result instanceof Buffer) this.releasePooled(result);
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
      if (this.state === "closed") this.recycleBuffers();
      else this.releaseRetiredReceiveSlabs();
    }
    this.updateFlow();
  }

  private errnoOf(err: unknown): number {
    if (err instanceof VolumeIoError) return errnoOfCode[err.errno];
    this.log.error({ err }, "volume request failed unexpectedly; answering EIO");
    return NbdErrno.eio;
  }

  /**
   * Header and data go out back to back, so replies never interleave. Replies of one
   * event-loop turn are encoded into the reply slab and leave together at the flush.
   */
  private reply(request: NbdRequest, errno: number, data: Buffer | undefined): void {
    // The peer may be gone (or have half-closed, which ends our side too): nothing to answer,
    // and the data (a pooled slot) is dropped at once.
    if (this.state === "closed" || this.socket.destroyed || !this.socket.writable) {
      if (data !== undefined) this.releasePooled(data);
      return;
    }
    const copyData = data !== undefined && data.length <= replyCopyBytesMax;
    const slab = this.replySpace(nbdSimpleReplyHeaderBytes + (copyData ? data.length : 0));
    encodeSimpleReplyHeader(errno, request.cookieHi, request.cookieLo, slab.buf, this.replyUsed);
    this.replyUsed += nbdSimpleReplyHeaderBytes;
    this.outBytes += nbdSimpleReplyHeaderBytes;
    if (data !== undefined) {
      if (copyData) {
        data.copy(slab.buf, this.replyUsed);
        this.replyUsed += data.length;
        this.releasePooled(data);
      } else {
        this.endReplyRun();
        this.out.push({ buf: data, slab: undefined, pooled: this.ctx.payloads.owns(data) });
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
      this.retireReplySlab(current);
    }
    const slab: ReplySlab = { buf: this.ctx.replySlabs.allocate(replySlabBytes), pendingWrites: 0, retired: false };
    this.replySlab = slab;
    this.replyRunStart = 0;
    this.replyUsed = 0;
    return slab;
  }

  /** Queues the reply slab bytes encoded since the last run ended. */
  private endReplyRun(): void {
    const slab = this.replySlab;
    if (slab === undefined || this.replyUsed === this.replyRunStart) return;
    this.out.push({ buf: slab.buf.subarray(this.replyRunStart, this.replyUsed), slab, pooled: false });
    slab.pendingWrites += 1;
    this.replyRunStart = this.replyUsed;
  }

  /** No more replies go into `slab`; it goes back to the pool once its bytes are written out. */
  private retireReplySlab(slab: ReplySlab): void {
    assert(!slab.retired, "a reply slab is retired once");
    slab.retired = true;
    if (slab.pendingWrites === 0 && this.ctx.replySlabs.owns(slab.buf)) this.ctx.replySlabs.release(slab.buf);
  }

  /** The socket is done with one run of `slab`'s bytes (written, or failed and dropped). */
  private replyRunDone(slab: ReplySlab): void {
    assert(slab.pendingWrites > 0, "a reply slab run completes once");
    slab.pendingWrites -= 1;
    if (slab.retired && slab.pendingWrites === 0 && this.ctx.replySlabs.owns(slab.buf)) this.ctx.replySlabs.release(slab.buf);
  }

  /**
   * The connection is closed and nothing is in flight: its slabs go back to the server's pools
   * (a reply slab with bytes the socket still holds follows once they are done with). A receive
   * slab a failed WRITE carried a view of is never reused.
   */
  private recycleBuffers(): void {
    if (this.buffersRecycled || this.inFlight > 0) return;
    this.buffersRecycled = true;
    const slab = this.replySlab;
    this.replySlab = undefined;
    if (slab !== undefined) this.retireReplySlab(slab);
    if (this.ctx.receiveSlabs.owns(this.receiveSlab)) this.retiredReceiveSlabs.push(this.receiveSlab);
    this.receiveSlab = noBytes;
    this.receiveKeptBytes = 0;
    this.releaseRetiredReceiveSlabs();
  }

  /** Hands this turn's replies to the socket in one corked batch (one writev). */
  private flushReplies(): void {
    this.flushScheduled = false;
    this.endReplyRun();
    const segments = this.out.splice(0);
    this.outBytes = 0;
    if (this.socket.destroyed || !this.socket.writable) {
      // Replies to a socket that is gone are dropped, and their buffers freed, at once.
      for (const segment of segments) {
        if (segment.slab !== undefined) this.replyRunDone(segment.slab);
        else if (segment.pooled) this.releasePooled(segment.buf);
      }
      return;
    }
    if (segments.length > 1) this.socket.cork();
    for (const segment of segments) {
      const slab = segment.slab;
      if (slab === undefined) {
        // A pooled slot is reused once the socket is done with it: written, or failed and
        // dropped (a destroyed socket calls back every write it still held).
        if (segment.pooled) this.socket.write(segment.buf, () => this.releasePooled(segment.buf));
        else this.socket.write(segment.buf);
        continue;
      }
      // Reused once the socket is done with every byte of it: a failed write is done too
      // (a destroyed socket calls back every write it held, and libuv lets go of the bytes).
      this.socket.write(segment.buf, () => this.replyRunDone(slab));
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

  /**
   * Flushes what was written, then ends our side; the socket closes once the peer closes too
   * (read to the end meanwhile, so its FIN or RST is seen at once), and a peer that does not
   * close or read is cut off after nbdCloseLingerMs.
   */
  private endSoon(): void {
    if (this.state === "closed") return;
    if (this.state !== "closing") {
      this.state = "closing";
      this.flushReplies(); // answers still waiting for this turn's flush go out first
      this.socket.end();
      this.paused = false;
      this.socket.resume();
      this.lingerTimer = setTimeout(() => this.destroy(), nbdCloseLingerMs);
      this.lingerTimer.unref();
    }
  }

  private fail(reason: string): void {
    this.log.warn({ reason }, "nbd connection closed");
    this.destroy();
  }

  private onClose(): void {
    this.state = "closed";
    this.ctx.slots.release(this);
    this.handle?.release(); // requests still running finish; the volume may be deleted now
    clearTimeout(this.lingerTimer);
    // A payload gathered part-way was never handed on: its slot can be reused.
    const partial = this.assembler?.abandonPayload();
    if (partial !== undefined && this.ctx.payloads.owns(partial)) this.ctx.payloads.release(partial);
    clearTimeout(this.handshakeTimer);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
    this.recycleBuffers();
  }
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const { catalog, logger, onRequest } = options;
  const slots = new ConnectionSlots<NbdConnection>({ handshakesMax: nbdHandshakesMax, establishedMax: nbdConnectionsMax });
  let closing = false;
  let nextId = 1;
  const ctx: Context = {
    payloads: new SlotPool(payloadArenasPerSizeMax),
    receiveSlabs: new SlotPool(receiveSlabArenasMax),
    replySlabs: new SlotPool(replySlabArenasMax),
    slots, catalog, logger, onRequest, closing: () => closing,
  };
  // Buffers taken for a burst (of connections, of large requests) go back to the system after it.
  const sweeper = setInterval(() => {
    for (const pool of [ctx.payloads, ctx.receiveSlabs, ctx.replySlabs]) pool.sweepIdle(bufferIdleSweeps);
  }, bufferSweepIntervalMs);
  sweeper.unref();

  // pauseOnConnect: a connection's socket is re-wrapped to read into our buffers before it reads.
  const server = net.createServer({ noDelay: true, keepAlive: true, pauseOnConnect: true });
  server.on("connection", (socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    let conn: NbdConnection;
    try {
      conn = new NbdConnection(socket, ctx, nextId++);
    } catch (err) {
      logger.error({ err }, "nbd connection setup failed");
      socket.destroy();
      return;
    }
    // Every connection gets in: a full handshake pool closes its oldest member instead.
    slots.admit(conn)?.evict(`${nbdHandshakesMax} connections are in the handshake; the oldest makes room for a new one`);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    clearInterval(sweeper);
    throw err; // the caller says which option named the address (EADDRINUSE, ...)
  }
  server.on("error", (err) => logger.error({ err }, "nbd server error"));
  const address = server.address();
  if (address === null || typeof address === "string") {
    clearInterval(sweeper);
    throw new Error("nbd server has no TCP address");
  }
  logger.info({ host: options.host, port: address.port }, "nbd server listening");

  let closed: Promise<void> | undefined;
  return {
    port: address.port,
    connections: () => slots.total,
    handshakes: () => slots.handshakes,
    buffers: () => {
      const all = [ctx.payloads, ctx.receiveSlabs, ctx.replySlabs].map((pool) => pool.stats());
      return { arenas: all.reduce((n, s) => n + s.arenas, 0), slotsInUse: all.reduce((n, s) => n + s.slotsInUse, 0) };
    },
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        const open = slots.all();
        for (const conn of open) conn.shutdown();
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, nbdCloseGraceMs); });
        await Promise.race([Promise.all(open.map((c) => c.idle())), grace]);
        clearTimeout(timer);
        for (const conn of open) conn.destroy();
        clearInterval(sweeper);
        await stopped;
        logger.info("nbd server closed");
      })();
      return closed;
    },
  };
}
