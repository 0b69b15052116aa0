// A replication-aware TCP proxy on 127.0.0.1 for the wedge and stall tests: forwards every
// connection to a target port, cuts both directions into replication frames (20-byte
// header, payload length at offset 8, type at offset 5), and lets a policy decide per
// frame: forward it, hold it (queued; the connection keeps order behind it, as a
// black-holed TCP flow would), or drop it (the frames after it still pass: a peer that
// lost one message but still answers PINGs). Closed at cleanup.
import * as net from "node:net";
import { decodeFrame } from "../../src/protocol/repl-protocol.ts";
import { onCleanup } from "./harness.ts";

/** Frame types (docs/replication-protocol.md §4). */
export const FrameType = { OPEN_GROUP: 3, GROUP_STATE: 4, BATCH: 5, ACK: 6, NACK: 7, PULL: 8, PING: 13, PONG: 14 } as const;

export type Direction = "toSecondary" | "toPrimary";
export type Verdict = "forward" | "hold" | "drop";

export interface ProxiedConnection {
  /** 0, 1, ... in the order connections were accepted. */
  readonly index: number;
  /** The secondary group named by this connection's OPEN_GROUP, once seen. */
  group: string | undefined;
  /** Once set, every later frame of that direction is held (a silent path). */
  readonly holdAll: { toSecondary: boolean; toPrimary: boolean };
  /** Frames held so far, per direction, while the proxy keeps them (`keepHeld`): `release` sends them on. */
  readonly heldFrames: Record<Direction, Buffer[]>;
  /** Frames of each type seen so far, per direction (before the verdict). */
  readonly seen: Record<Direction, Map<number, number>>;
  readonly client: net.Socket;
  readonly upstream: net.Socket;
}

export type FramePolicy = (conn: ProxiedConnection, direction: Direction, type: number) => Verdict;

const frameHeaderBytes = 20;

export class ReplProxy {
  #port = 0;
  #targetPort: number | undefined;
  #server: net.Server | undefined;
  readonly connections: ProxiedConnection[] = [];
  /** Decides each frame; forwards everything until set. */
  policy: FramePolicy = () => "forward";
  /** Keep held frames for `release` (they are dropped otherwise, as on a black-holed path). */
  keepHeld = false;

  private constructor() {}

  /** Listens on a free port; the target may be set later (start the secondary with --repl-advertise on this port first). */
  static async start(targetPort?: number): Promise<ReplProxy> {
    const proxy = new ReplProxy();
    proxy.#targetPort = targetPort;
    const server = net.createServer((client) => proxy.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("repl proxy: unexpected address");
    proxy.#port = address.port;
    proxy.#server = server;
    onCleanup(`close repl proxy ${proxy.#port}`, () => proxy.close());
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  setTarget(port: number): void {
    this.#targetPort = port;
  }

  /** Resets every open connection (the nodes reconnect through the proxy). */
  resetAll(): void {
    for (const conn of this.connections) {
      conn.client.resetAndDestroy();
      conn.upstream.resetAndDestroy();
    }
  }

  /** Sends on what `conn` held in `direction` (kept with `keepHeld`), in order, and forwards from then on. */
  release(conn: ProxiedConnection, direction: Direction): void {
    const to = direction === "toSecondary" ? conn.upstream : conn.client;
    conn.holdAll[direction] = false;
    const frames = conn.heldFrames[direction].splice(0);
    if (!to.destroyed) for (const frame of frames) to.write(frame);
  }

  async close(): Promise<void> {
    this.resetAll();
    const server = this.#server;
    this.#server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(client: net.Socket): void {
    if (this.#targetPort === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: "127.0.0.1", port: this.#targetPort });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const conn: ProxiedConnection = {
      index: this.connections.length, group: undefined, holdAll: { toSecondary: false, toPrimary: false }, heldFrames: { toSecondary: [], toPrimary: [] },
      seen: { toSecondary: new Map(), toPrimary: new Map() }, client, upstream,
    };
    this.connections.push(conn);
    this.#pipe(conn, client, upstream, "toSecondary");
    this.#pipe(conn, upstream, client, "toPrimary");
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }

  #pipe(conn: ProxiedConnection, from: net.Socket, to: net.Socket, direction: Direction): void {
    // Chunks are kept as they come and joined once per frame (a 32 MiB BATCH arrives in
    // hundreds of chunks: joining on every chunk would copy gigabytes).
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let frameBytes: number | undefined;
    from.on("data", (chunk: Buffer) => {
      pending.push(chunk);
      pendingBytes += chunk.length;
      for (;;) {
        if (frameBytes === undefined) {
          if (pendingBytes < frameHeaderBytes) return;
          const head = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
          pending = [head];
          frameBytes = frameHeaderBytes + head.readUInt32LE(8);
        }
        if (pendingBytes < frameBytes) return;
        const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        const frame = all.subarray(0, frameBytes);
        const rest = all.subarray(frameBytes);
        pending = rest.length > 0 ? [rest] : [];
        pendingBytes -= frameBytes;
        frameBytes = undefined;
        const type = frame[5]!;
        conn.seen[direction].set(type, (conn.seen[direction].get(type) ?? 0) + 1);
        if (direction === "toSecondary" && type === FrameType.OPEN_GROUP) {
          const decoded = decodeFrame(Buffer.from(frame), { receiver: "secondary" });
          if (decoded.ok && decoded.message.type === "OPEN_GROUP") conn.group = decoded.message.secondaryGroup;
        }
        const verdict: Verdict = conn.holdAll[direction] ? "hold" : this.policy(conn, direction, type);
        if (verdict === "hold") conn.holdAll[direction] = true; // TCP keeps order: nothing passes behind a held frame
        if (verdict === "hold" && this.keepHeld) conn.heldFrames[direction].push(Buffer.from(frame));
        if (verdict === "forward" && !to.destroyed) to.write(frame);
      }
    });
  }
}
