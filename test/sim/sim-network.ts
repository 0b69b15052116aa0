// The network of the whole-node simulation (issue 7): each simulated node gets a Transport
// (src/transport/transport.ts) over it, so the real replication code runs over links that
// delay, reorder across streams, split writes into arbitrary chunks, cut streams, black-hole
// one direction of a stream (half-open: nothing arrives and nobody is told), partition nodes
// and lose a crashed node's streams with or without a reset. Within one stream bytes arrive
// in order and whole or not at all (TCP); every loss and duplicate above TCP is the node's own
// (reconnects, resends), which is what the simulation is there to exercise.
import type { ByteStream, Listener, ListenAddress, Transport } from "../../src/transport/transport.ts";
import type { Prng } from "./prng.ts";
import type { SimScheduler } from "./scheduler.ts";

export interface SimNetworkRates {
  /** One-way delay of a chunk, ms: uniform in [min, max]. */
  readonly delayMsMin: number;
  readonly delayMsMax: number;
  /** Probability that a write is delivered in several chunks. */
  readonly splitRate: number;
}

type Listeners = { data: ((chunk: Buffer) => void)[]; error: ((error: Error) => void)[]; close: (() => void)[]; end: (() => void)[]; connect: (() => void)[] };

let nextStreamId = 1;

/** One end of a simulated stream; the ByteStream the node's code holds. */
export class SimStream implements ByteStream {
  readonly id = nextStreamId++;
  readonly node: string;
  /** The incarnation of the node process that holds this end: once it is dead, nothing of it runs. */
  readonly incarnation: Incarnation;
  remoteAddress: string | undefined = "10.0.0.1";
  remotePort: number | undefined;
  peer: SimStream | undefined;
  readonly writableLength = 0;
  destroyed = false;
  /** Bytes this end writes vanish (a black-holed direction); nobody is told. */
  blackholed = false;
  /** Bytes written while the path to the peer is partitioned (TCP retransmits them once it is back). */
  private readonly heldForPartition: Buffer[] = [];
  private ended = false;
  private readonly listeners: Listeners = { data: [], error: [], close: [], end: [], connect: [] };
  private readonly network: SimNetwork;
  /** Deliveries of this end's writes keep order: none is scheduled before the previous. */
  private lastDeliveryMs = 0;
  /** Bytes delivered to this end (statistics). */
  bytesIn = 0;

  constructor(network: SimNetwork, node: string, incarnation: Incarnation) {
    this.network = network;
    this.node = node;
    this.incarnation = incarnation;
  }

  setNoDelay(): this {
    return this;
  }

  on(event: "data" | "error" | "close" | "end", listener: ((chunk: Buffer) => void) | ((error: Error) => void) | (() => void)): this {
    (this.listeners[event] as unknown[]).push(listener);
    return this;
  }

  once(event: "connect", listener: () => void): this {
    this.listeners[event].push(listener);
    return this;
  }

  cork(): void {}
  uncork(): void {}

  write(data: Buffer): boolean {
    if (this.destroyed || this.ended) return false;
    const peer = this.peer;
    if (peer === undefined || this.blackholed) return true;
    // The caller may reuse its buffer once write() returns: the bytes are copied, as a socket does.
    const bytes = Buffer.from(data);
    // Across a partition TCP keeps the bytes and retransmits them once the path is back: they
    // arrive late and in order, never with a gap (a silent, half-open stream is blackhole()).
    if (this.heldForPartition.length > 0 || this.network.partitioned(this.node, peer.node)) {
      this.heldForPartition.push(bytes);
      return true;
    }
    this.send(bytes, peer);
    return true;
  }

  /** The path to the peer is back: what TCP held goes out, in order. */
  flushHeld(): void {
    const peer = this.peer;
    const held = this.heldForPartition.splice(0);
    if (peer === undefined || this.destroyed) return;
    for (const bytes of held) this.send(bytes, peer);
  }

  private send(bytes: Buffer, peer: SimStream): void {
    for (const chunk of this.network.chunks(bytes)) {
      const atMs = Math.max(this.lastDeliveryMs, this.network.scheduler.nowMs + this.network.delayMs());
      this.lastDeliveryMs = atMs;
      this.network.scheduler.schedule(atMs - this.network.scheduler.nowMs, () => peer.deliver(chunk));
    }
  }

  end(): this {
    if (this.destroyed || this.ended) return this;
    this.ended = true;
    const peer = this.peer;
    if (peer !== undefined && !this.blackholed) {
      const atMs = Math.max(this.lastDeliveryMs, this.network.scheduler.nowMs + this.network.delayMs());
      this.lastDeliveryMs = atMs;
      this.network.scheduler.schedule(atMs - this.network.scheduler.nowMs, () => peer.peerEnded());
    }
    return this;
  }

  destroy(): this {
    this.close(undefined, true);
    return this;
  }

  destroySoon(): void {
    this.end();
    const delayMs = Math.max(0, this.lastDeliveryMs - this.network.scheduler.nowMs);
    this.network.scheduler.schedule(delayMs, () => this.close(undefined, true));
  }

  /** Closes this end (and tells the peer, after a delay, unless `tellPeer` is false: a power loss). */
  close(error: Error | undefined, tellPeer: boolean): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.network.forget(this);
    const peer = this.peer;
    if (tellPeer && peer !== undefined && !peer.destroyed) {
      const atMs = Math.max(this.lastDeliveryMs, this.network.scheduler.nowMs + this.network.delayMs());
      this.network.scheduler.schedule(atMs - this.network.scheduler.nowMs, () => peer.close(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), false));
    }
    this.network.scheduler.schedule(0, () => {
      if (this.incarnation.dead) return; // a dead process runs no handlers
      if (error !== undefined) for (const listener of this.listeners.error) listener(error);
      for (const listener of this.listeners.close) listener();
    });
  }

  private deliver(chunk: Buffer): void {
    if (this.destroyed || this.incarnation.dead) return;
    this.bytesIn += chunk.length;
    for (const listener of this.listeners.data) listener(chunk);
  }

  private peerEnded(): void {
    if (this.destroyed || this.incarnation.dead) return;
    for (const listener of this.listeners.end) listener();
  }

  /** The connect completed. */
  connected(): void {
    if (this.incarnation.dead) return;
    for (const listener of this.listeners.connect) listener();
  }

  /** The connect failed: error, then close. */
  refused(code: string): void {
    this.close(Object.assign(new Error(`connect ${code}`), { code }), false);
  }
}

/** One run of a node's process: when it dies, its streams and listeners go with it. */
export interface Incarnation {
  dead: boolean;
}

interface Bound {
  readonly node: string;
  readonly incarnation: Incarnation;
  readonly onStream: (stream: ByteStream) => void;
}

export class SimNetwork {
  readonly scheduler: SimScheduler;
  private readonly rng: Prng;
  rates: SimNetworkRates;
  private readonly bound = new Map<string, Bound>();
  private readonly open = new Set<SimStream>();
  private readonly partitions = new Set<string>();
  private nextPort = 40_000;
  /** Counts for the run's report. */
  readonly stats = { connects: 0, refused: 0, cuts: 0, blackholes: 0, partitions: 0 };

  constructor(scheduler: SimScheduler, rng: Prng, rates: SimNetworkRates) {
    this.scheduler = scheduler;
    this.rng = rng;
    this.rates = rates;
  }

  delayMs(): number {
    return this.rates.delayMsMin + this.rng.float() * (this.rates.delayMsMax - this.rates.delayMsMin);
  }

  /** A write as the receiver's reads see it: whole, or split at random points. */
  chunks(bytes: Buffer): Buffer[] {
    if (bytes.length < 2 || this.rng.float() >= this.rates.splitRate) return [bytes];
    const out: Buffer[] = [];
    let at = 0;
    while (at < bytes.length) {
      const size = 1 + Math.floor(this.rng.float() * Math.min(bytes.length - at, 64 * 1024));
      out.push(bytes.subarray(at, at + size));
      at += size;
    }
    return out;
  }

  private pairKey(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  partitioned(a: string, b: string): boolean {
    return a !== b && this.partitions.has(this.pairKey(a, b));
  }

  /** Cuts the link between two nodes (both ways): bytes vanish, connects time out. */
  partition(a: string, b: string): void {
    this.partitions.add(this.pairKey(a, b));
    this.stats.partitions += 1;
  }

  heal(a: string, b: string): void {
    this.partitions.delete(this.pairKey(a, b));
    for (const stream of this.open) if (stream.peer !== undefined && this.pairKey(stream.node, stream.peer.node) === this.pairKey(a, b)) stream.flushHeld();
  }

  healAll(): void {
    this.partitions.clear();
    for (const stream of this.open) stream.flushHeld();
  }

  forget(stream: SimStream): void {
    this.open.delete(stream);
  }

  /** Open streams with one end on `node`. */
  streamsOf(node: string): SimStream[] {
    return [...this.open].filter((stream) => stream.node === node);
  }

  /** Resets one open stream (both ends see an error and a close). */
  cut(stream: SimStream): void {
    this.stats.cuts += 1;
    stream.close(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), true);
  }

  /** Makes one direction of a stream silent: what `stream` writes vanishes, and nobody is told (half-open). */
  blackhole(stream: SimStream): void {
    this.stats.blackholes += 1;
    stream.blackholed = true;
  }

  /** A node is gone: its listeners vanish; its streams close with a reset the peers see (process crash) or silently (power loss). */
  nodeDown(node: string, kind: "process" | "power"): void {
    for (const [address, bound] of this.bound) {
      if (bound.node === node) {
        bound.incarnation.dead = true;
        this.bound.delete(address);
      }
    }
    for (const stream of this.streamsOf(node)) {
      stream.incarnation.dead = true;
      stream.close(undefined, kind === "process");
    }
  }

  /** The Transport one incarnation of a node uses; `incarnation.dead` ends everything it opened. */
  transportFor(node: string, incarnation: Incarnation): Transport {
    return {
      listen: (address: ListenAddress, onStream: (stream: ByteStream) => void): Promise<Listener> => {
        const port = address.port === 0 ? this.nextPort++ : address.port;
        const key = `${address.host}:${String(port)}`;
        if (this.bound.has(key)) return Promise.reject(Object.assign(new Error(`listen EADDRINUSE ${key}`), { code: "EADDRINUSE" }));
        if (incarnation.dead) return new Promise<Listener>(() => undefined);
        this.bound.set(key, { node, incarnation, onStream });
        return Promise.resolve({
          port,
          close: () => {
            if (this.bound.get(key)?.node === node) this.bound.delete(key);
            return Promise.resolve();
          },
        });
      },
      connect: (address: string): ByteStream => {
        this.stats.connects += 1;
        const client = new SimStream(this, node, incarnation);
        if (incarnation.dead) return client; // never connects: nothing of a dead process runs
        this.open.add(client);
        this.scheduler.schedule(this.delayMs(), () => {
          if (client.destroyed) return;
          const target = this.bound.get(address);
          if (target === undefined) {
            this.stats.refused += 1;
            client.refused("ECONNREFUSED");
            return;
          }
          if (this.partitioned(node, target.node)) {
            // A SYN into a partition: no answer; the connect times out.
            this.scheduler.schedule(3_000, () => {
              if (!client.destroyed) client.refused("ETIMEDOUT");
            });
            return;
          }
          if (target.incarnation.dead) {
            client.refused("ECONNREFUSED");
            return;
          }
          const server = new SimStream(this, target.node, target.incarnation);
          server.peer = client;
          client.peer = server;
          this.open.add(server);
          target.onStream(server);
          client.connected();
        });
        return client;
      },
    };
  }
}
