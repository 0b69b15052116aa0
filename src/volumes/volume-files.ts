// The node's steps on volume files and their written maps (docs/volumes.md), kept out of
// node.ts, which only calls them: create without ever truncating an existing file, undo a
// create that failed, empty a pair's secondary before its initial copy, save the maps before a
// checkpoint, and say what a failed create or a migrated data directory means.
import { ControlError } from "../core/errors.ts";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { binaryBytes } from "../storage/file-system.ts";
import { errorCode, type FileSystem } from "../storage/fs.ts";
import { FileTooLargeError, VolumeFile } from "../storage/volume-file.ts";
import { loadMetadata, type NodeMetadata } from "../metadata/metadata.ts";

/**
 * A volume's file and map, created exclusively. A file of that name with no volume behind it
 * (left by a create that crashed before its metadata was saved: ids are never reused) is
 * removed first if it holds no block, and refused (TM_ERR_CONFLICT) if it holds data: a file
 * with data is never overwritten.
 */
export async function createVolumeFile(fs: FileSystem, path: string, sizeBytes: number, metadata: NodeMetadata, logger: Logger): Promise<VolumeFile> {
  try {
    return await VolumeFile.create(fs, path, sizeBytes);
  } catch (error) {
    if (errorCode(error) !== "EEXIST") throw error;
  }
  assert(!metadata.volumes.some((v) => v.fileName === basename(path)), () => `volume ids are never reused: ${path} belongs to no volume`);
  const info = await fs.stat(path);
  if (info.allocatedBytes > 0) {
    throw new ControlError("TM_ERR_CONFLICT", `${path} exists and holds ${info.allocatedBytes} bytes of data, but no volume uses it (left by an earlier create that did not finish?); move it out of ${dirname(path)} and try again`);
  }
  logger.warn({ event: "orphan_volume_file_removed", path, sizeBytes: info.sizeBytes }, "removed an empty volume file that no volume uses (left by a create that did not finish)");
  await VolumeFile.remove(fs, path);
  return VolumeFile.create(fs, path, sizeBytes);
}

/** Undoes a created volume file after a later step failed, unless the metadata on disk names it after all. */
export async function undoVolumeFile(file: VolumeFile, dataDir: string, logger: Logger): Promise<void> {
  try {
    await file.close();
    const onDisk = await loadMetadata(file.fileSystem, dataDir);
    if (onDisk?.metadata.volumes.some((v) => v.fileName === basename(file.path)) === true) return; // the save landed: keep what it names
    await VolumeFile.remove(file.fileSystem, file.path);
  } catch (error) {
    logger.error({ event: "volume_create_undo_failed", path: file.path, err: error }, "could not remove the files of a volume whose create failed");
  }
}

/** A failed volume create as the operator should see it: what was wrong and what to do. */
export function volumeCreateError(error: unknown, name: string, sizeBytes: number): unknown {
  if (error instanceof FileTooLargeError) {
    const suggestionBytes = error.limitBytes - (error.limitBytes % 512);
    return new ControlError("TM_ERR_LIMIT",
      `volume ${name} of ${sizeBytes} bytes (${binaryBytes(sizeBytes)}) does not fit: the file system of ${error.dir} (${error.fileSystem}) ` +
      `holds files of at most ${error.limitBytes} bytes (${binaryBytes(sizeBytes - error.limitBytes)} less than ${binaryBytes(sizeBytes)}); ` +
      `use a smaller --size (at most ${suggestionBytes}) or put --data on xfs, btrfs or tmpfs`);
  }
  if (errorCode(error) === "ENOSPC") return new ControlError("TM_ERR_NO_SPACE", `no space for volume ${name}`);
  return error;
}

/**
 * Empties every volume of a pair's secondary that may hold a byte (the pair was created over an
 * existing volume with --force, or an earlier copy wrote to it): the initial copy sends only the
 * primary's written extents, so every other byte must read as zero. Crash-safe (VolumeFile).
 */
export async function emptySecondaryVolumes(secondary: { readonly name: string; readonly volumes: readonly { readonly name: string; readonly file: VolumeFile }[] }, logger: Logger): Promise<void> {
  for (const volume of secondary.volumes) {
    const allocatedBytes = await volume.file.allocatedBytes();
    if (allocatedBytes === 0 && volume.file.written.markedExtents === 0) {
      volume.file.syncFailureRepaired(); // empty already: the copy writes everything it holds again
      continue;
    }
    logger.warn({ event: "secondary_volume_emptied", group: secondary.name, volume: volume.name, allocatedBytes, writtenBytes: volume.file.written.markedBytes },
      "secondary volume emptied for the initial copy: its earlier contents are replaced by the primary's");
    await volume.file.discardContents();
  }
}

/**
 * Saves the written maps of these volumes (no I/O for a map with nothing new). Call it before
 * persisting anything that lets a journal drop records: a checkpoint, a reflected sequence, a
 * takeover's fresh journal, the end of an initial copy (docs/volumes.md, rule 4).
 */
export async function saveWrittenMaps(volumes: Iterable<{ readonly file: VolumeFile }>): Promise<void> {
  await Promise.all([...volumes].map((volume) => volume.file.written.save()));
}

export function volumeBytes(volumes: readonly { readonly file: VolumeFile }[]): number {
  return volumes.reduce((sum, volume) => sum + volume.file.sizeBytes, 0);
}

/** One line for the volumes whose map was missing (an older data directory); one per damaged map. */
export function logWrittenMapOrigins(logger: Logger, volumes: readonly { readonly name: string; readonly file: VolumeFile }[]): void {
  const legacy = volumes.filter((v) => v.file.written.origin === "legacy").map((v) => v.name);
  const legacyEmpty = volumes.filter((v) => v.file.written.origin === "legacy-empty").map((v) => v.name);
  if (legacy.length + legacyEmpty.length > 0) {
    logger.warn({ event: "written_maps_migrated", everyExtentWritten: legacy, nothingWritten: legacyEmpty },
      `data directory from a version without written maps: ${legacy.length} volume(s) with data count every extent as written ` +
      `(their initial copies read them whole, as before), ${legacyEmpty.length} without a block allocated count none`);
  }
  for (const volume of volumes) {
    if (volume.file.written.origin !== "untrusted") continue;
    logger.error({ event: "written_map_untrusted", volume: volume.name, problem: volume.file.written.problem, path: volume.file.written.path },
      "written map failed its checks and was set aside (.corrupt): every extent of the volume counts as written");
  }
}
