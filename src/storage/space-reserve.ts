// Space kept aside in the data directory so that a node on a full disk can still save its
// metadata and take over (issue 6, kind 5; docs/out-of-space.md). A file of real (written,
// not sparse) blocks; when a metadata save or a takeover meets ENOSPC it is deleted and the
// write tried again; it is made again once the file system has room for it and more.
import { join } from "node:path";
import { metadataReserveBytes } from "../core/limits.ts";
import type { FileSystem } from "./fs.ts";

const reserveFileName = "space-reserve";
const writeChunk = Buffer.alloc(1024 * 1024);

export class SpaceReserve {
  readonly path: string;
  private readonly fs: FileSystem;
  private held: boolean | undefined;

  constructor(fs: FileSystem, dataDir: string) {
    this.fs = fs;
    this.path = join(dataDir, reserveFileName);
  }

  /** Whether the reserve is on disk now (after ensure or release). */
  get isHeld(): boolean {
    return this.held === true;
  }

  /**
   * Makes the reserve if it is missing and the file system has room for it twice over (it
   * never takes the last free space). Returns true if the reserve is held afterwards.
   * Errors are not thrown: a reserve that cannot be made now is made later.
   */
  async ensure(): Promise<boolean> {
    if (this.held === true) return true;
    try {
      const existing = await this.fs.open(this.path, "read").then(async (file) => {
        const { sizeBytes } = await file.stat();
        await file.close();
        return sizeBytes;
      }, () => undefined);
      if (existing === metadataReserveBytes) {
        this.held = true;
        return true;
      }
      const space = await this.fs.statFileSystem(join(this.path, ".."));
      if (space.freeBytes < metadataReserveBytes * 2) return false;
      const file = await this.fs.open(this.path, "create-truncate", 0o600);
      try {
        // A short write (the disk filled up meanwhile) is continued: the next call fails, and the reserve is not held.
        for (let doneBytes = 0; doneBytes < metadataReserveBytes;) {
          const bytesWritten = await file.write(writeChunk, 0, Math.min(writeChunk.length, metadataReserveBytes - doneBytes), doneBytes);
          if (bytesWritten === 0) throw new Error(`space reserve ${this.path}: write made no progress`);
          doneBytes += bytesWritten;
        }
        await file.datasync();
      } finally {
        await file.close();
      }
      this.held = true;
      return true;
    } catch {
      await this.fs.unlink(this.path).catch(() => undefined);
      this.held = false;
      return false;
    }
  }

  /** Gives the reserve's space back to the file system; true if there was one to give. */
  async release(): Promise<boolean> {
    try {
      await this.fs.unlink(this.path);
      this.held = false;
      return true;
    } catch {
      this.held = false;
      return false;
    }
  }
}
