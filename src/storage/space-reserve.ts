// Space kept aside in the data directory so that a node on a full disk can still save its
// metadata and take over (issue 6, kind 5; docs/out-of-space.md). A file of real (written,
// not sparse) blocks; when a metadata save or a takeover meets ENOSPC it is deleted and the
// write tried again; it is made again once the file system has room for it and more.
import { open, statfs, unlink } from "node:fs/promises";
import { join } from "node:path";
import { metadataReserveBytes } from "../core/limits.ts";

const reserveFileName = "space-reserve";
const writeChunk = Buffer.alloc(1024 * 1024);

export class SpaceReserve {
  readonly path: string;
  private held: boolean | undefined;

  constructor(dataDir: string) {
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
      const existing = await open(this.path, "r").then(async (handle) => {
        const { size } = await handle.stat();
        await handle.close();
        return size;
      }, () => undefined);
      if (existing === metadataReserveBytes) {
        this.held = true;
        return true;
      }
      const fs = await statfs(join(this.path, ".."));
      if (fs.bavail * fs.bsize < metadataReserveBytes * 2) return false;
      const handle = await open(this.path, "w", 0o600);
      try {
        for (let doneBytes = 0; doneBytes < metadataReserveBytes; doneBytes += writeChunk.length) {
          await handle.write(writeChunk, 0, Math.min(writeChunk.length, metadataReserveBytes - doneBytes), doneBytes);
        }
        await handle.datasync();
      } finally {
        await handle.close();
      }
      this.held = true;
      return true;
    } catch {
      await unlink(this.path).catch(() => undefined);
      this.held = false;
      return false;
    }
  }

  /** Gives the reserve's space back to the file system; true if there was one to give. */
  async release(): Promise<boolean> {
    try {
      await unlink(this.path);
      this.held = false;
      return true;
    } catch {
      this.held = false;
      return false;
    }
  }
}
