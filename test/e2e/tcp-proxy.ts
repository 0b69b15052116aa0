// A TCP proxy on 127.0.0.1 for link-cut drills: forwards every connection to a target port,
// and can cut the link (destroy every connection and stop listening, so new connections are
// refused) and restore it on the same port. Closed at cleanup.
import * as net from "node:net";
import { onCleanup } from "./harness.ts";

export class TcpProxy {
  #port: number;
  #targetPort: number | undefined;
  #server: net.Server | undefined;
  readonly #sockets = new Set<net.Socket>();
  /** Connections accepted since start. */
  accepted = 0;
  /** Bytes forwarded each way since start. */
  bytesToTarget = 0;
  bytesFromTarget = 0;

  private constructor(port: number, targetPort: number | undefined) {
    this.#port = port;
    this.#targetPort = targetPort;
  }

  /** Listens on a free port (or `port`); forwards to `targetPort`, which may be set later. */
  static async start(options: { port?: number; targetPort?: number } = {}): Promise<TcpProxy> {
    const proxy = new TcpProxy(options.port ?? 0, options.targetPort);
    await proxy.#listen();
    onCleanup(`close tcp proxy ${proxy.port}`, () => proxy.close());
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  get listening(): boolean {
    return this.#server !== undefined;
  }

  /** Connections open right now (both halves counted once). */
  get openConnections(): number {
    return this.#sockets.size / 2;
  }

  setTarget(port: number): void {
    this.#targetPort = port;
  }

  async #listen(): Promise<void> {
    const server = net.createServer((client) => this.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("tcp proxy: unexpected address");
    this.#port = address.port;
    this.#server = server;
  }

  #accept(client: net.Socket): void {
    this.accepted++;
    if (this.#targetPort === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: "127.0.0.1", port: this.#targetPort });
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.setNoDelay(true);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (chunk: Buffer) => {
      this.bytesToTarget += chunk.length;
    });
    upstream.on("data", (chunk: Buffer) => {
      this.bytesFromTarget += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }

  /** The link goes down: every connection is reset and new ones are refused until restore(). */
  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.resetAndDestroy();
    this.#sockets.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The link comes back on the same port. */
  async restore(): Promise<void> {
    if (this.#server === undefined) await this.#listen();
  }

  async close(): Promise<void> {
    await this.cut();
  }
}
