// A volume is a sparse file of fixed size, read and written by position, with its written
// map (written-map.ts: which extents were ever written, so the initial copy skips the rest).
// Writes of zeroes touch only extents the map marks (clear ones read as zeroes already, so a
// discard of a sparse volume allocates nothing); there is no hole punching from Node, so in
// marked extents zeroes are written from one shared zero buffer.
import { dirname } from "node:path";
import { assert } from "../core/assert.ts";
import { faultInjected } from "../core/faults.ts";
import { fileSystemSpace, probeFileBytesMax } from "./file-system.ts";
import { errorCode, type File, type FileSystem } from "./fs.ts";
import { WrittenMap } from "./written-map.ts";

/** The file system cannot hold a file of the asked size (EFBIG from ftruncate). */
export class FileTooLargeError extends Error {
  override name = "FileTooLargeError";
  readonly code = "EFBIG";
  /** Directory whose file system refused the size. */
  readonly dir: string;
  readonly fileSystem: string;
  readonly requestedBytes: number;
  /** The largest file size that file system accepted. */
  readonly limitBytes: number;
  constructor(dir: string, fileSystem: string, requestedBytes: number, limitBytes: number) {
    super(`the file system of ${dir} (${fileSystem}) holds files of at most ${limitBytes} bytes, not ${requestedBytes}`);
    this.dir = dir;
    this.fileSystem = fileSystem;
    this.requestedBytes = requestedBytes;
    this.limitBytes = limitBytes;
  }
}

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

/**
 * An fdatasync refused because an earlier one of the same file failed and nothing re-wrote what
 * it may have dropped. errno EIO (code), so every caller treats it as the I/O error it stands for.
 */
export class VolumeSyncLostError extends Error {
  readonly code = "EIO";
  readonly errno = "EIO";
  readonly path: string;
  constructor(path: string, first: Error) {
    super(`EIO: an earlier fdatasync of ${path} failed (${first.message}); the writes it covered may be lost, so no later fdatasync can prove them durable until they are written again`, { cause: first });
    this.name = "VolumeSyncLostError";
    this.path = path;
  }
}

export class VolumeFile {
  /** The file system the volume file is on (the initial copy opens its own reader through it). */
  readonly fileSystem: FileSystem;
  readonly path: string;
  private sizeBytesValue: number;
  /** The file's length: the size, or more after a grow that extended the file and did not finish. */
  private fileBytes: number;
  /** The volume's size, bytes (grows with `grow`, never shrinks). */
  get sizeBytes(): number {
    return this.sizeBytesValue;
  }
  /** Which extents were ever written (marked by write(), saved by the rules of written-map.ts). */
  readonly written: WrittenMap;
  private readonly handle: File;
  private closed = false;
  /**
   * The first fdatasync of this file that failed, until its owner wrote again everything the
   * last good one did not cover (syncFailureRepaired). After a failed fdatasync the kernel may
   * have dropped the dirty pages it was writing (the "fsyncgate" lesson): a later fdatasync
   * succeeds without them, so it proves nothing and must fail too (simulation seed 59474).
   */
  private syncFailure: Error | undefined;

  private constructor(fs: FileSystem, path: string, sizeBytes: number, handle: File, written: WrittenMap) {
    this.fileSystem = fs;
    this.path = path;
    this.sizeBytesValue = sizeBytes;
    this.fileBytes = sizeBytes;
    this.handle = handle;
    this.written = written;
  }

  /**
   * Creates a sparse file of `sizeBytes` and its empty written map, durably. Never touches a
   * file that exists: EEXIST is thrown as it is (the caller decides about an orphan). On any
   * failure nothing is left behind; a size the file system cannot hold is a FileTooLargeError.
   */
  static async create(fs: FileSystem, path: string, sizeBytes: number): Promise<VolumeFile> {
    const handle = await fs.open(path, "create-exclusive", 0o600); // read-write, and never an existing file
    const mapPath = WrittenMap.pathFor(path);
    let written: WrittenMap;
    try {
      try {
        await handle.truncate(sizeBytes);
      } catch (error) {
        if (errorCode(error) !== "EFBIG") throw error;
        const limitBytes = await probeFileBytesMax(handle, sizeBytes);
        const space = await fileSystemSpace(fs, dirname(path)).catch(() => ({ typeName: "unknown type" }));
        throw new FileTooLargeError(dirname(path), space.typeName, sizeBytes, limitBytes);
      }
      await handle.sync();
      written = await WrittenMap.create(fs, mapPath, sizeBytes);
    } catch (error) {
      await handle.close();
      await VolumeFile.remove(fs, path).catch(() => undefined); // the first error is the one to report
      throw error;
    }
    await fs.syncDirectory(dirname(path));
    return new VolumeFile(fs, path, sizeBytes, handle, written);
  }

  /** Removes a volume file and its written map (ENOENT is fine), then fsyncs the directory. */
  static async remove(fs: FileSystem, path: string): Promise<void> {
    await fs.unlink(path).catch((error: unknown) => {
      if (errorCode(error) !== "ENOENT") throw error;
    });
    await WrittenMap.remove(fs, WrittenMap.pathFor(path));
    await fs.syncDirectory(dirname(path));
  }

  /**
   * Opens a volume file and loads its written map (see WrittenMap.load for a missing or damaged
   * one: `file.written.origin` says which). Finishes an emptying (discardContents) that a crash
   * interrupted.
   */
  static async open(fs: FileSystem, path: string, sizeBytes: number): Promise<VolumeFile> {
    const handle = await fs.open(path, "read-write");
    try {
      const written = await WrittenMap.load(fs, WrittenMap.pathFor(path), sizeBytes, async () => (await handle.stat()).allocatedBytes);
      if (written.resetPending) await VolumeFile.emptyFile(handle, sizeBytes, written);
      const { sizeBytes: fileBytes } = await handle.stat();
      // Longer than node.json says: a grow (volume resize) made the file longer first and
      // stopped before it saved the new size. Nothing was ever written past node.json's size
      // (writes there are accepted only after that save): those bytes are zeroes nobody wrote,
      // and the file is cut back to the volume's size, so file and volume agree again; a grow
      // (the journal's resize record at replay, or the operator's next resize) extends it
      // again. Shorter is never made by a grow: refused.
      if (fileBytes < sizeBytes) throw new Error(`volume file ${path} is ${fileBytes} bytes, metadata says ${sizeBytes}`);
      if (fileBytes > sizeBytes) {
        await handle.truncate(sizeBytes);
        await handle.sync();
      }
      return new VolumeFile(fs, path, sizeBytes, handle, written);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Grows the volume to `sizeBytes` (volume resize): the file is made longer (the new bytes
   * read as zeroes, nothing allocated) and that is made durable, then the written map grows
   * (clear there; saved with the next save). Idempotent: a size at or below the current one
   * does nothing. The caller saves the new size in node.json first, so a crash part-way leaves
   * a file open() finishes. Errors: the file system's (ENOSPC, EFBIG, EIO), as they are.
   */
  grow(sizeBytes: number): Promise<void> {
    assert(!this.closed, `volume file ${this.path} grown after close`);
    return this.changeLength(async () => {
      if (sizeBytes <= this.sizeBytesValue) return;
      await this.lengthen(sizeBytes);
      this.written.grow(sizeBytes);
      this.sizeBytesValue = sizeBytes;
    });
  }

  /**
   * Step 1 of a grow: the file is made at least `sizeBytes` long, durably (a sparse extension:
   * zeroes, nothing allocated), while the volume keeps its size. Done before anything is
   * recorded (journal, node.json), so a size the file system refuses (EFBIG, ENOSPC) is
   * refused with nothing changed; a crash after it leaves a longer file, which open() cuts back.
   */
  extendFile(sizeBytes: number): Promise<void> {
    assert(!this.closed, `volume file ${this.path} extended after close`);
    assert(Number.isSafeInteger(sizeBytes), "a volume size is a whole number of bytes");
    return this.changeLength(() => this.lengthen(sizeBytes));
  }

  /**
   * Undoes an extendFile whose grow was refused before anything recorded it (a group that
   * could not take the resize record): the file is cut back to the volume's size. Nothing was
   * ever written past that size (writes there come only after a grow), so nothing is lost.
   */
  cutBackExtension(): Promise<void> {
    assert(!this.closed, `volume file ${this.path} cut back after close`);
    return this.changeLength(async () => {
      if (this.fileBytes <= this.sizeBytesValue) return;
      await this.handle.truncate(this.sizeBytesValue);
      await this.handle.sync();
      this.fileBytes = this.sizeBytesValue;
    });
  }

  private async lengthen(sizeBytes: number): Promise<void> {
    if (sizeBytes <= this.fileBytes) return;
    await this.handle.truncate(sizeBytes);
    await this.handle.sync();
    this.fileBytes = sizeBytes;
  }

  /** Changes of the file's length run one at a time, in call order (a grow, an extension, a cut back). */
  private lengthChain: Promise<void> = Promise.resolve();
  private changeLength(change: () => Promise<void>): Promise<void> {
    const next = this.lengthChain.then(change);
    this.lengthChain = next.catch(() => undefined);
    return next;
  }

  /**
   * Empties the volume in place, in O(1): every byte reads as zero afterwards, the file is
   * sparse again and its written map is clear. Crash-safe: the intent is persisted in the map
   * first, and open() finishes it. Destroys data: only for a volume whose contents are about
   * to be replaced (a pair's target at the start of its initial copy). Nothing may write to
   * the volume meanwhile.
   */
  async discardContents(): Promise<void> {
    assert(!this.closed, `volume file ${this.path} emptied after close`);
    await this.written.beginReset();
    await VolumeFile.emptyFile(this.handle, this.sizeBytesValue, this.written);
    this.fileBytes = this.sizeBytesValue;
    // Emptied: nothing written before counts any more.
    this.syncFailure = undefined;
  }

  private static async emptyFile(handle: File, sizeBytes: number, written: WrittenMap): Promise<void> {
    await handle.truncate(0);
    await handle.truncate(sizeBytes);
    await handle.sync();
    await written.finishReset();
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(!this.closed, `volume file ${this.path} used after close`);
    assert(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= this.sizeBytes,
      `range ${offsetBytes}+${lengthBytes} inside volume of ${this.sizeBytes} bytes`);
  }

  /** The bytes of [offsetBytes, +lengthBytes), read into `into` (exactly lengthBytes long) when given. */
  async read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.checkRange(offsetBytes, lengthBytes);
    assert(into === undefined || into.length === lengthBytes, "a read's target buffer is exactly as long as the read");
    const out = into ?? Buffer.allocUnsafe(lengthBytes);
    if (lengthBytes <= syncReadBytesMax) {
      this.readNow(offsetBytes, out);
      return out;
    }
    let doneBytes = 0;
    while (doneBytes < lengthBytes) {
      const bytesRead = await this.handle.read(out, doneBytes, lengthBytes - doneBytes, offsetBytes + doneBytes);
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
      const bytesRead = this.handle.readSync(out, doneBytes, out.length - doneBytes, offsetBytes + doneBytes);
      if (bytesRead === 0) {
        out.fill(0, doneBytes); // a sparse file never ends early, but be exact if it does
        return;
      }
      doneBytes += bytesRead;
    }
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    // Marked before a byte reaches the file: the map is always a superset of what the file holds.
    this.written.mark(offsetBytes, data.length);
    if (data.length <= syncWriteBytesMax) {
      // Small writes go straight into the page cache from the main thread: a libuv
      // thread-pool hop costs more than the pwrite itself (measured: 18k -> 32k IOPS at
      // 4 KiB QD32). Large ones stay off the event loop.
      this.writeNow(offsetBytes, data);
      return;
    }
    let doneBytes = 0;
    while (doneBytes < data.length) {
      const bytesWritten = await this.handle.write(data, doneBytes, data.length - doneBytes, offsetBytes + doneBytes);
      assert(bytesWritten > 0, "pwrite makes progress");
      doneBytes += bytesWritten;
    }
  }

  private writeNow(offsetBytes: number, data: Buffer): void {
    let doneBytes = 0;
    while (doneBytes < data.length) {
      const bytesWritten = this.handle.writeSync(data, doneBytes, data.length - doneBytes, offsetBytes + doneBytes);
      assert(bytesWritten > 0, "pwrite makes progress");
      doneBytes += bytesWritten;
    }
  }

  /**
   * Writes zeroes, only where the volume may hold something else: the parts of the range in
   * extents the written map marks. The rest is in clear extents, which hold nothing but zeroes
   * (written-map.ts), so it is skipped and never allocated: a TRIM of a whole sparse device
   * (mkfs discards everything first) writes nothing. Node has no fallocate(PUNCH_HOLE), so in
   * marked extents real zeroes are written. Does not mark the map: zeroes written into a clear
   * extent would keep it all zeroes anyway, and a marked one stays marked. Which extents are
   * marked is read once, at the call: a later write that marks one of them and overlaps this
   * range is ordered after it (ApplyOrder) and writes its own bytes.
   */
  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    for (const part of this.written.markedPartsOf(offsetBytes, lengthBytes)) {
      await this.writeZeroRange(part.offsetBytes, part.offsetBytes + part.lengthBytes);
    }
  }

  private async writeZeroRange(offsetBytes: number, endBytes: number): Promise<void> {
    let positionBytes = offsetBytes;
    while (positionBytes < endBytes) {
      const buffers: Buffer[] = [];
      let batchBytes = 0;
      while (positionBytes + batchBytes < endBytes && buffers.length < zeroChunksPerWritevMax) {
        const chunkBytes = Math.min(zeroChunkBytes, endBytes - positionBytes - batchBytes);
        buffers.push(chunkBytes === zeroChunkBytes ? zeroChunk : zeroChunk.subarray(0, chunkBytes));
        batchBytes += chunkBytes;
      }
      const bytesWritten = await this.handle.writev(buffers, positionBytes);
      assert(bytesWritten > 0, "writev makes progress");
      positionBytes += bytesWritten;
    }
  }

  /**
   * fdatasync. Errors: the file system's (EIO, ENOSPC) as they are; after one failed, every later
   * call fails with EIO too (VolumeSyncLostError) until syncFailureRepaired(), because what the
   * failed one was writing may be gone from the page cache without reaching the disk.
   */
  async datasync(): Promise<void> {
    assert(!this.closed, `volume file ${this.path} synced after close`);
    if (this.syncFailure !== undefined && !faultInjected("checkpoint-error-keeps-group")) throw new VolumeSyncLostError(this.path, this.syncFailure);
    try {
      await this.handle.datasync();
    } catch (error) {
      this.syncFailure ??= error as Error;
      throw error;
    }
  }

  /** Whether an fdatasync failed and no repair followed (what was written since the last good one may be lost). */
  get syncFailed(): Error | undefined {
    return this.syncFailure;
  }

  /**
   * The owner wrote again everything written since the last fdatasync that succeeded (a group
   * re-applied its journal from the checkpoint, a copy emptied the volume to start over): the
   * next fdatasync may prove durability again.
   */
  syncFailureRepaired(): void {
    this.syncFailure = undefined;
  }

  async allocatedBytes(): Promise<number> {
    return (await this.fileSystem.stat(this.path)).allocatedBytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
