// What the file system under the data directory allows: its name, its free space, and the
// largest file it holds (ext4 with 4 KiB blocks: 16 TiB - 4 KiB, below tidemark's 16 TiB
// maximum volume size). Used to refuse a volume size with a message that names the limit,
// and to warn when volumes are larger than the space left for them (docs/volumes.md).
import { errorCode, type File, type FileSystem } from "./fs.ts";
import { assert } from "../core/assert.ts";

/** statfs(2) f_type values of the file systems an operator is likely to put --data on. */
const fileSystemNames: ReadonlyMap<number, string> = new Map([
  [0xef53, "ext4"],
  [0x58465342, "xfs"],
  [0x9123683e, "btrfs"],
  [0x01021994, "tmpfs"],
  [0x2fc12fc1, "zfs"],
  [0xf2f52010, "f2fs"],
  [0x6969, "nfs"],
  [0x794c7630, "overlayfs"],
  [0x65735546, "fuse"],
]);

export interface FileSystemSpace {
  /** A name for the file system type ("ext4", "xfs", ...), or its f_type in hex. */
  readonly typeName: string;
  /** Bytes an unprivileged writer may still use (f_bavail * f_bsize). */
  readonly freeBytes: number;
  readonly totalBytes: number;
}

/** statfs of the file system holding `path`. Errors: those of statfs(2) (ENOENT, EACCES, ...). */
export async function fileSystemSpace(fs: FileSystem, path: string): Promise<FileSystemSpace> {
  const info = await fs.statFileSystem(path);
  return {
    typeName: fileSystemNames.get(info.typeCode) ?? `type 0x${info.typeCode.toString(16)}`,
    freeBytes: info.freeBytes,
    totalBytes: info.totalBytes,
  };
}

/**
 * The largest size `handle`'s file may be truncated to, found by bisection between 0 (which
 * works) and `tooLargeBytes` (which failed with EFBIG): about 45 ftruncate calls on an empty
 * file, a few milliseconds. Leaves the file at 0 bytes. Errors other than EFBIG are thrown.
 */
export async function probeFileBytesMax(handle: File, tooLargeBytes: number): Promise<number> {
  assert(Number.isSafeInteger(tooLargeBytes) && tooLargeBytes > 0, "probe below a positive size");
  let fitsBytes = 0;
  let failsBytes = tooLargeBytes;
  while (failsBytes - fitsBytes > 1) {
    const middleBytes = fitsBytes + Math.floor((failsBytes - fitsBytes) / 2);
    try {
      await handle.truncate(middleBytes);
      fitsBytes = middleBytes;
    } catch (error) {
      if (errorCode(error) !== "EFBIG") throw error;
      failsBytes = middleBytes;
    }
  }
  await handle.truncate(0);
  return fitsBytes;
}

/**
 * The warning for a volume whose unallocated part is larger than the free space of its file
 * system: writes to it will fail with "no space" before it is full. Null when it fits.
 */
export function overcommitWarning(volume: { readonly name: string; readonly sizeBytes: number; readonly allocatedBytes: number }, freeBytes: number, dir: string): string | null {
  const unallocatedBytes = Math.max(0, volume.sizeBytes - volume.allocatedBytes);
  if (unallocatedBytes <= freeBytes) return null;
  return `volume ${volume.name} (${binaryBytes(volume.sizeBytes)}) is larger than the free space of the file system of ${dir} ` +
    `(${binaryBytes(freeBytes)} free, ${binaryBytes(unallocatedBytes)} of the volume not yet allocated): ` +
    "writes to it will fail with \"no space\" once that space is used; free space or move --data to a larger file system";
}

/** 1536 -> "1.5 KiB" (the CLI has its own formatter; the node's messages need only this). */
export function binaryBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit] ?? ""}`;
}
