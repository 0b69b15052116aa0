// Test fixtures for the NBD server tests: a real file-backed VolumeCatalog (tmp files,
// fs.promises FileHandle; flush = fdatasync) and a small raw-socket reader.
import { VolumeIoError } from "../../src/core/errors.ts";
import { mkdtemp, open, rm, type FileHandle } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { type ExportDescription, type VolumeCatalog, type VolumeHandle, type WriteOptions } from "../../src/core/volume-io.ts";
import { startNbdServer, type NbdServer, type NbdServerOptions } from "../../src/frontends/nbd-server.ts";

const zeroChunk = Buffer.alloc(1024 * 1024);

class FileVolume implements VolumeHandle {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly file: FileHandle;
  failNext: VolumeIoError | undefined;
  constructor(name: string, sizeBytes: number, readOnly: boolean, file: FileHandle) {
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.readOnly = readOnly;
    this.file = file;
  }
  private check(): void {
    const err = this.failNext;
    this.failNext = undefined;
    if (err !== undefined) throw err;
  }
  async read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.check();
    const out = into ?? Buffer.alloc(lengthBytes);
    out.fill(0); // a sparse tail reads as zeroes
    let done = 0;
    while (done < lengthBytes) {
      const { bytesRead } = await this.file.read(out, done, lengthBytes - done, offsetBytes + done);
      if (bytesRead === 0) break; // sparse tail reads as zeroes
      done += bytesRead;
    }
    return out;
  }
  async write(offsetBytes: number, data: Buffer, options: WriteOptions): Promise<void> {
    this.check();
    if (this.readOnly) throw new VolumeIoError("EPERM", "read-only");
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.file.write(data, done, data.length - done, offsetBytes + done);
      done += bytesWritten;
    }
    if (options.fua) await this.file.datasync();
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    this.check();
    let done = 0;
    while (done < lengthBytes) {
      const n = Math.min(zeroChunk.length, lengthBytes - done);
      await this.write(offsetBytes + done, zeroChunk.subarray(0, n), { fua: false });
      done += n;
    }
    if (options.fua) await this.file.datasync();
  }
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes, options);
  }
  /** Handles released by the front end (its connection or slot closed). */
  releases = 0;
  release(): void {
    this.releases += 1;
  }

  async flush(): Promise<void> {
    this.check();
    await this.file.datasync();
  }
}

export interface FileCatalog extends VolumeCatalog {
  readonly volumes: Map<string, FileVolume>;
  readonly dir: string;
  cleanup(): Promise<void>;
}

export interface VolumeSpec {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly?: boolean;
}

export async function fileCatalog(specs: readonly VolumeSpec[]): Promise<FileCatalog> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-nbd-"));
  const volumes = new Map<string, FileVolume>();
  for (const spec of specs) {
    const file = await open(path.join(dir, `${spec.name}.img`), "w+");
    await file.truncate(spec.sizeBytes);
    volumes.set(spec.name, new FileVolume(spec.name, spec.sizeBytes, spec.readOnly ?? false, file));
  }
  return {
    volumes,
    dir,
    open: (name) => volumes.get(name),
    list: (): ExportDescription[] => [...volumes.values()].map((v) => ({ name: v.name, sizeBytes: v.sizeBytes, readOnly: v.readOnly })),
    async cleanup() {
      for (const v of volumes.values()) await v.file.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const quietLogger = pino({ level: process.env.TM_TEST_LOG ?? "silent" });

export async function serve(catalog: VolumeCatalog, extra: Partial<NbdServerOptions> = {}): Promise<NbdServer> {
  return startNbdServer({ host: "127.0.0.1", port: 0, catalog, logger: quietLogger, ...extra });
}

/** A raw TCP client that reads exact byte counts, for hand-written protocol exchanges. */
export class RawClient {
  readonly socket: net.Socket;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: (() => void) | undefined;
  ended = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.buffered.push(chunk);
      this.bufferedBytes += chunk.length;
      this.wake();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("error", () => undefined);
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true }, () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  send(data: Buffer): void {
    this.socket.write(data);
  }

  /** Reads exactly n bytes; rejects if the connection closes first or after timeoutMs. */
  async read(n: number, timeoutMs = 5_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bufferedBytes < n) {
      if (this.ended) throw new Error(`connection closed with ${this.bufferedBytes} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.bufferedBytes})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const all = Buffer.concat(this.buffered);
    const out = all.subarray(0, n);
    this.buffered = [all.subarray(n)];
    this.bufferedBytes -= n;
    return out;
  }

  /** Resolves true once the server closed the connection (with nothing more to read), false on timeout. */
  async closedByServer(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
