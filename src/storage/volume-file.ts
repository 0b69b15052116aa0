// A volume is a sparse file of fixed size, read and written by position.
// Writes of zeroes reuse one shared zero buffer; there is no hole punching from Node,
// so zeroes are written (both sites then hold identical bytes, which is what matters).
import { readSync, writeSync } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import { assert } from "../core/assert.ts";
import { fsyncDirectory } from "./durable-fs.ts";
import { dirname } from "node:path";

/** Zeroes are written in chunks of this size, from one shared buffer. */
const zeroChunkBytes = 1024 * 1024;
const zeroChunk = Buffer.alloc(zeroChunkBytes);
/** Writes up to this size are done synchronously (page-cache copies of a few microseconds). */
export const syncWriteBytesMax = 64 * 1024;
/**
 * Reads up to this size are done synchronously too: a page-cache hit costs a few
 * microseconds, the thread-pool hop several times that (4 KiB random reads QD32 under
 * fio: 40 % of the process's CPU went to waking and switching pool threads; with sync
 * reads 45 -> 10 µs of CPU per read and 0.51x -> 1.54x nbdkit's IOPS, same run). A miss
 * blocks the event loop for one disk read, as it would block a pool thread.
 */
export const syncReadBytesMax = 64 * 1024;
/** writev takes at most this many buffers per call. */
const zeroChunksPerWritevMax = 64;

export class VolumeFile {
  readonly path: string;
  readonly sizeBytes: number;
  private readonly handle: FileHandle;
  private closed = false;

  private constructor(path: string, sizeBytes: number, handle: FileHandle) {
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.handle = handle;
  }

  /** Creates (or re-creates an orphaned) sparse file of `sizeBytes`, durably. */
  static async create(path: string, sizeBytes: number): Promise<VolumeFile> {
    const handle = await open(path, "w+", 0o600);
    try {
      await handle.truncate(sizeBytes);
      await handle.sync();
    } catch (error) {
      await handle.close();
      throw error;
    }
    await fsyncDirectory(dirname(path));
    return new VolumeFile(path, sizeBytes, handle);
  }

  static async open(path: string, sizeBytes: number): Promise<VolumeFile> {
    const handle = await open(path, "r+");
    const { size } = await handle.stat();
    if (size !== sizeBytes) {
      await handle.close();
      throw new Error(`volume file ${path} is ${size} bytes, metadata says ${sizeBytes}`);
    }
    return new VolumeFile(path, sizeBytes, handle);
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(!this.closed, `volume file ${this.path} used after close`);
    assert(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= this.sizeBytes,
      `range ${offsetBytes}+${lengthBytes} inside volume of ${this.sizeBytes} bytes`);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkRange(offsetBytes, lengthBytes);
    const out = Buffer.allocUnsafe(lengthBytes);
    if (lengthBytes <= syncReadBytesMax) {
      this.readNow(offsetBytes, out);
      return out;
    }
    let doneBytes = 0;
    while (doneBytes < lengthBytes) {
      const { bytesRead } = await this.handle.read(out, doneBytes, lengthBytes - doneBytes, offsetBytes + doneBytes);
      if (bytesRead === 0) {
        out.fill(0, doneBytes); // a sparse file never ends early, but be exact if it does
        break;
      }
      doneBytes += bytesRead;
    }
    return out;
  }

  private readNow(offsetBytes: number, out: Buffer): void {
    let doneBytes = 0;
    while (doneBytes < out.length) {
      const bytesRead = readSync(this.handle.fd, out, doneBytes, out.length - doneBytes, offsetBytes + doneBytes);
      if (bytesRead === 0) {
        out.fill(0, doneBytes); // a sparse file never ends early, but be exact if it does
        return;
      }
      doneBytes += bytesRead;
    }
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    if (data.length <= syncWriteBytesMax) {
      // Small writes go straight into the page cache from the main thread: a libuv
      // thread-pool hop costs more than the pwrite itself (measured: 18k -> 32k IOPS at
      // 4 KiB QD32). Large ones stay off the event loop.
      this.writeNow(offsetBytes, data);
      return;
    }
    let doneBytes = 0;
    while (doneBytes < data.length) {
      const { bytesWritten } = await this.handle.write(data, doneBytes, data.length - doneBytes, offsetBytes + doneBytes);
      assert(bytesWritten > 0, "pwrite makes progress");
      doneBytes += bytesWritten;
    }
  }

  private writeNow(offsetBytes: number, data: Buffer): void {
    let doneBytes = 0;
    while (doneBytes < data.length) {
      const bytesWritten = writeSync(this.handle.fd, data, doneBytes, data.length - doneBytes, offsetBytes + doneBytes);
      assert(bytesWritten > 0, "pwrite makes progress");
      doneBytes += bytesWritten;
    }
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    let positionBytes = offsetBytes;
    const endBytes = offsetBytes + lengthBytes;
    while (positionBytes < endBytes) {
      const buffers: Buffer[] = [];
      let batchBytes = 0;
      while (positionBytes + batchBytes < endBytes && buffers.length < zeroChunksPerWritevMax) {
        const chunkBytes = Math.min(zeroChunkBytes, endBytes - positionBytes - batchBytes);
        buffers.push(chunkBytes === zeroChunkBytes ? zeroChunk : zeroChunk.subarray(0, chunkBytes));
        batchBytes += chunkBytes;
      }
      const { bytesWritten } = await this.handle.writev(buffers, positionBytes);
      assert(bytesWritten > 0, "writev makes progress");
      positionBytes += bytesWritten;
    }
  }

  async datasync(): Promise<void> {
    assert(!this.closed, `volume file ${this.path} synced after close`);
    await this.handle.datasync();
  }

  async allocatedBytes(): Promise<number> {
    const info = await stat(this.path);
    return info.blocks * 512;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
