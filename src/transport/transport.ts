// One seam for every link the node opens or accepts (issue 7): replication streams today,
// TLS with mutual authentication later, in this one place. A connector is built once from
// the node's options; the simulation builds one over its simulated network instead, so the
// replication code runs unchanged over delays, drops, partitions and half-open streams.
// A ByteStream is the part of a TCP socket the replication code uses; node:net's Socket is one.
import { connect, createServer, type Server, type Socket } from "node:net";
import { assert } from "../core/assert.ts";

/** A byte stream between two nodes: the subset of node:net's Socket the replication code uses. */
export interface ByteStream {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  /** Bytes queued and not yet handed to the network. */
  readonly writableLength: number;
  readonly destroyed: boolean;
  setNoDelay(noDelay: boolean): unknown;
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "close" | "end", listener: () => void): unknown;
  once(event: "connect", listener: () => void): unknown;
  /** False when the stream's buffer is past its high-water mark (keep sending; it is queued). */
  write(data: Buffer): boolean;
  cork(): void;
  uncork(): void;
  /** Half-closes: no more writes; the peer sees the end. */
  end(): unknown;
  /** Closes at once, dropping what is queued. */
  destroy(): unknown;
  /** Closes once what is queued is written. */
  destroySoon(): void;
}

export interface ListenAddress {
  readonly host: string;
  /** 0: a free port the system picks. */
  readonly port: number;
}

export interface Listener {
  /** The port bound (the asked one, or the one picked for 0). */
  readonly port: number;
  /** Stops accepting; open streams are the caller's to close. */
  close(): Promise<void>;
}

export interface Transport {
  /**
   * Accepts streams on `address`; rejects with the bind error (EADDRINUSE, EACCES...). Once
   * bound, an error of the listener (an accept that failed: EMFILE, ENFILE) goes to `onError`,
   * and the listener goes on: it never crashes the node.
   */
  listen(address: ListenAddress, onStream: (stream: ByteStream) => void, onError: (error: Error) => void): Promise<Listener>;
  /** Opens a stream to `address` ("host:port", IPv6 in brackets); it emits "connect" once open, or "error" and "close". */
  connect(address: string): ByteStream;
}

/** Splits "host:port" / "[v6]:port"; throws RangeError on anything else (addresses are validated where they enter). */
export function splitHostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65_535) throw new RangeError(`${address} is not host:port`);
  return { host: address.slice(0, at).replace(/^\[|\]$/g, ""), port };
}

/** Plain TCP over node:net. */
export const tcpTransport: Transport = {
  listen(address, onStream, onError) {
    const server: Server = createServer((socket: Socket) => onStream(socket));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.port, address.host, () => {
        server.off("error", reject);
        server.on("error", onError);
        const bound = server.address();
        assert(bound !== null && typeof bound === "object", "the listener is bound");
        resolve({
          port: bound.port,
          close: () => new Promise<void>((done) => server.close(() => done())),
        });
      });
    });
  },
  connect(address) {
    const { host, port } = splitHostPort(address);
    return connect({ host, port });
  },
};
