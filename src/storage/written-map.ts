// The written map of one volume, kept in memory and in `<volume file>.written` (docs/volumes.md).
// The initial copy of a pair reads only the extents marked here, so its time follows the data
// written, not the volume's size (Node has no SEEK_DATA/SEEK_HOLE to ask the file system).
//
// The rule that makes it safe to skip an extent: a clear bit means the extent is all zeroes.
// It holds across crashes because
//   - VolumeFile.write marks the extent in memory before the bytes reach the file, and a bit is
//     never cleared (except by `reset`, when the whole volume is emptied);
//   - for a volume in a group the journal is the write-ahead log: whoever persists a group's
//     checkpoint (or a target's reflected sequence) saves the map first, and recovery replays
//     every record past that point through VolumeFile.write, which marks again;
//   - for a volume outside any group (no journal) a write into an extent whose bit is not yet
//     durable waits for `ensureDurable`: the map is saved first (group commit: one save covers
//     every bit set while the previous one ran).
// The file is replaced atomically (temporary file, fdatasync, rename, directory fsync), so a
// crash leaves the old or the new map. A missing map (a data directory of an older version) or
// one that fails its checks is never trusted: every extent then counts as written (unless the
// volume file has no block allocated at all, which proves it all zeroes).
import { ExtentMap, type ByteRange } from "../core/extent-map.ts";
import { writtenMapExtentBytes } from "../core/limits.ts";
import { WrittenMapFlag, decodeWrittenMap, encodeWrittenMap, writtenMapSizeBytes } from "../protocol/written-map-file.ts";
import { readWholeFile, writeFileAtomic } from "./durable-fs.ts";
import { errorCode, type FileSystem } from "./fs.ts";

/** How the map in memory came to be, for the node's log. */
export type WrittenMapOrigin =
  /** A new volume: nothing written. */
  | "created"
  /** Read from its file and checked. */
  | "loaded"
  /** No map file (made by a version without written maps) and no block allocated: nothing written. */
  | "legacy-empty"
  /** No map file and blocks allocated: every extent counts as written. */
  | "legacy"
  /** The map file failed its checks (kept aside as `.corrupt`): every extent counts as written. */
  | "untrusted";

export class WrittenMap {
  private readonly fs: FileSystem;
  readonly path: string;
  readonly origin: WrittenMapOrigin;
  /** Why the file was not trusted (origin "untrusted"). */
  readonly problem: string | undefined;
  /** What the volume holds (a superset: bits are set before the bytes are written). */
  private map: ExtentMap;
  /** The map as of the last completed save: what a crash now would leave. */
  private durable: ExtentMap;
  /** Bumped whenever a bit is set or the flags change; a save covers the generation it started at. */
  private generation = 0;
  private savedGeneration = 0;
  private saving: Promise<void> | undefined;
  private flags: number;

  private constructor(fs: FileSystem, path: string, map: ExtentMap, durable: ExtentMap, flags: number, origin: WrittenMapOrigin, problem?: string) {
    this.fs = fs;
    this.path = path;
    this.map = map;
    this.durable = durable;
    this.flags = flags;
    this.origin = origin;
    this.problem = problem;
  }

  /** Where the map of the volume file at `volumePath` lives. */
  static pathFor(volumePath: string): string {
    return `${volumePath}.written`;
  }

  /** A new, empty map, saved durably (the caller fsyncs the directory with the volume file). */
  static async create(fs: FileSystem, path: string, sizeBytes: number): Promise<WrittenMap> {
    const map = new ExtentMap(sizeBytes, writtenMapExtentBytes);
    await writeFileAtomic(fs, path, encodeWrittenMap(map, 0));
    return new WrittenMap(fs, path, map, map.clone(), 0, "created");
  }

  /**
   * Loads and checks the map of a volume of `sizeBytes`. A missing or damaged map is replaced
   * by one that marks every extent (or none, when `allocatedBytes()` of the volume file is 0),
   * saved at once, so the note is logged only the first time. Errors: reading or saving the file.
   */
  static async load(fs: FileSystem, path: string, sizeBytes: number, allocatedBytes: () => Promise<number>): Promise<WrittenMap> {
    let bytes: Buffer | undefined;
    try {
      bytes = await readWholeFile(fs, path);
    } catch (error) {
      if (errorCode(error) !== "ENOENT") throw error;
    }
    if (bytes !== undefined) {
      // A map made for a smaller size: a grow (volume resize) saved node.json's new size and
      // stopped before it saved the map. The new extents were never written (writes past the
      // old end come only after the grow is done): the map grows, clear there.
      const madeForBytes = writtenMapSizeBytes(bytes);
      if (madeForBytes !== undefined && madeForBytes < sizeBytes) {
        const smaller = decodeWrittenMap(bytes, madeForBytes, writtenMapExtentBytes);
        if (smaller.ok) {
          const grown = new WrittenMap(fs, path, smaller.map.grownTo(sizeBytes), smaller.map.grownTo(sizeBytes), smaller.flags, "loaded");
          grown.generation = 1; // the file still says the old size
          await grown.save();
          return grown;
        }
      }
      const decoded = decodeWrittenMap(bytes, sizeBytes, writtenMapExtentBytes);
      if (decoded.ok) return new WrittenMap(fs, path, decoded.map, decoded.map.clone(), decoded.flags, "loaded");
      // Kept for a post-mortem; a later damaged map replaces an earlier one.
      await fs.rename(path, `${path}.corrupt`);
      return WrittenMap.replace(fs, path, sizeBytes, allocatedBytes, "untrusted", decoded.reason);
    }
    return WrittenMap.replace(fs, path, sizeBytes, allocatedBytes, "legacy");
  }

  private static async replace(fs: FileSystem, path: string, sizeBytes: number, allocatedBytes: () => Promise<number>, origin: "legacy" | "untrusted", problem?: string): Promise<WrittenMap> {
    const map = new ExtentMap(sizeBytes, writtenMapExtentBytes);
    // A file without a single allocated block reads as zeroes everywhere: nothing to copy.
    const empty = (await allocatedBytes()) === 0;
    if (!empty) map.markAll();
    const written = new WrittenMap(fs, path, map, new ExtentMap(sizeBytes, writtenMapExtentBytes), 0, origin === "legacy" && empty ? "legacy-empty" : origin, problem);
    written.generation = 1; // not saved yet
    try {
      await written.save();
    } catch (error) {
      // A node must start on a full disk: the map stays dirty and the next save (a checkpoint,
      // a write outside a group) writes it; until then the file is missing or set aside, which
      // the next start treats the same way again.
      const code = errorCode(error);
      if (code !== "ENOSPC" && code !== "EDQUOT") throw error;
    }
    return written;
  }

  /** Removes a map file and its temporary (volume create undoing itself). ENOENT is fine. */
  static async remove(fs: FileSystem, path: string): Promise<void> {
    for (const file of [path, `${path}.tmp`]) {
      await fs.unlink(file).catch((error: unknown) => {
        if (errorCode(error) !== "ENOENT") throw error;
      });
    }
  }

  /**
   * The volume grew to `sizeBytes` (volume resize): the new extents are clear (a grown sparse
   * file reads as zeroes there). In memory; the next save writes the new size (the caller
   * saves before anything is written past the old end).
   */
  grow(sizeBytes: number): void {
    if (sizeBytes <= this.map.sizeBytes) return;
    this.map = this.map.grownTo(sizeBytes);
    this.durable = this.durable.grownTo(sizeBytes);
    this.generation += 1;
  }

  get sizeBytes(): number {
    return this.map.sizeBytes;
  }

  /** Marks the extents [offsetBytes, offsetBytes + lengthBytes) touches, in memory. */
  mark(offsetBytes: number, lengthBytes: number): void {
    if (this.map.mark(offsetBytes, lengthBytes) > 0) this.generation += 1;
  }

  /**
   * Marks the range and, unless its bits are already durable, resolves once they are (for
   * writes that no journal covers). Returns undefined on the fast path: nothing to wait for.
   */
  ensureDurable(offsetBytes: number, lengthBytes: number): Promise<void> | undefined {
    this.mark(offsetBytes, lengthBytes);
    if (this.durable.covers(offsetBytes, lengthBytes)) return undefined;
    return this.save();
  }

  /** Resolves once every bit set before the call is durable (no I/O when none is new). */
  async save(): Promise<void> {
    const wanted = this.generation;
    while (this.savedGeneration < wanted) {
      this.saving ??= this.runSave().finally(() => {
        this.saving = undefined;
      });
      await this.saving;
    }
  }

  private async runSave(): Promise<void> {
    const generation = this.generation;
    const snapshot = this.map.clone();
    await writeFileAtomic(this.fs, this.path, encodeWrittenMap(snapshot, this.flags));
    if (generation > this.savedGeneration) {
      this.savedGeneration = generation;
      this.durable = snapshot;
    }
  }

  /** Whether the file says the volume was being emptied when the node stopped. */
  get resetPending(): boolean {
    return (this.flags & WrittenMapFlag.resetting) !== 0;
  }

  /** Step 1 of emptying the volume: persist the intent, so a crash part-way finishes it on open. */
  async beginReset(): Promise<void> {
    this.flags |= WrittenMapFlag.resetting;
    this.generation += 1;
    await this.save();
  }

  /** Step 3 (after the file was truncated and synced): nothing is written any more. */
  async finishReset(): Promise<void> {
    this.map.clear();
    this.durable = this.map.clone();
    this.flags &= ~WrittenMapFlag.resetting;
    this.generation += 1;
    await this.save();
  }

  get markedBytes(): number {
    return this.map.markedBytes;
  }

  get markedExtents(): number {
    return this.map.markedExtents;
  }

  get extentCount(): number {
    return this.map.extentCount;
  }

  /**
   * The parts of the range in extents marked now (the only ones that may hold a byte that is
   * not zero): what a write of zeroes must write. See ExtentMap.markedPartsOf.
   */
  markedPartsOf(offsetBytes: number, lengthBytes: number): ByteRange[] {
    return this.map.markedPartsOf(offsetBytes, lengthBytes);
  }

  /** A copy of the map as it is now (what an initial copy must read). */
  snapshot(): ExtentMap {
    return this.map.clone();
  }

  /** Bits set and not yet saved (they are covered by a journal, or waited for). */
  get dirty(): boolean {
    return this.savedGeneration < this.generation;
  }
}
