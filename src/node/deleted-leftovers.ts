// What a delete leaves behind when the node stops between its two steps. A volume delete and a
// group delete save node.json first (the catalog no longer names it: the delete is decided) and
// then remove the files; a crash, power loss or I/O error in between leaves a volume file (and
// its written map) or a journal directory that nothing reads again. The node removes them at
// its next start, with one log line each, so a deleted volume's space comes back.
//
// Only what a delete can have left: an id below node.json's next id (ids are never reused,
// and a create that crashed before its save has an id at or past it: createVolumeFile and the
// group create handle those) that node.json does not name. Anything else in those folders is
// left alone.
import { join } from "node:path";
import type { Logger } from "pino";
import type { NodeMetadata } from "../metadata/metadata.ts";
import { errorCode, type FileSystem } from "../storage/fs.ts";

/** `<id>.vol` and its written map `<id>.vol.written`. */
const volumeFilePattern = /^(\d+)\.vol(\.written)?$/;
/** `<id>` and a staged generation `<id>.<generation>`. */
const journalDirPattern = /^(\d+)(\.\d+)?$/;

/** One thing removed (for the log and the tests). */
export interface RemovedLeftover {
  readonly path: string;
  readonly kind: "volume file" | "journal directory";
}

/**
 * Removes the volume files and journal directories of deleted volumes and groups under
 * `dataDir` (see above). Returns what it removed. Errors: a folder that cannot be read is
 * skipped (logged); a removal that fails is logged and left for the next start. Never throws
 * for a leftover: a start does not fail over space it could not give back.
 */
export async function removeDeletedLeftovers(fs: FileSystem, dataDir: string, metadata: NodeMetadata, logger: Logger): Promise<RemovedLeftover[]> {
  const removed: RemovedLeftover[] = [];
  const volumeFiles = new Set(metadata.volumes.map((v) => v.fileName));
  const groupIds = new Set(metadata.groups.map((g) => g.id));
  const volumesDir = join(dataDir, "volumes");
  const journalsDir = join(dataDir, "journals");
  for (const name of await listOrEmpty(fs, volumesDir, logger)) {
    const match = volumeFilePattern.exec(name);
    if (match === null) continue;
    const id = Number(match[1]);
    const volumeFile = `${id}.vol`;
    if (id >= metadata.nextVolumeId || volumeFiles.has(volumeFile)) continue;
    if (await removeOne(fs, join(volumesDir, name), "volume file", logger)) removed.push({ path: join(volumesDir, name), kind: "volume file" });
  }
  for (const name of await listOrEmpty(fs, journalsDir, logger)) {
    const match = journalDirPattern.exec(name);
    if (match === null) continue;
    const id = Number(match[1]);
    if (id >= metadata.nextGroupId || groupIds.has(id)) continue;
    if (await removeOne(fs, join(journalsDir, name), "journal directory", logger)) removed.push({ path: join(journalsDir, name), kind: "journal directory" });
  }
  if (removed.some((r) => r.kind === "volume file")) await fs.syncDirectory(volumesDir).catch(() => undefined);
  if (removed.some((r) => r.kind === "journal directory")) await fs.syncDirectory(journalsDir).catch(() => undefined);
  return removed;
}

async function listOrEmpty(fs: FileSystem, dir: string, logger: Logger): Promise<string[]> {
  try {
    return await fs.readDirectory(dir);
  } catch (error) {
    if (errorCode(error) !== "ENOENT") logger.warn({ event: "leftover_scan_failed", path: dir, err: error }, "could not look for what deletes left behind");
    return [];
  }
}

async function removeOne(fs: FileSystem, path: string, kind: RemovedLeftover["kind"], logger: Logger): Promise<boolean> {
  try {
    await fs.removeTree(path);
    logger.info({ event: "deleted_leftover_removed", path, kind }, `removed the ${kind} of a deleted ${kind === "volume file" ? "volume" : "group"} (a delete stopped before it removed it)`);
    return true;
  } catch (error) {
    logger.warn({ event: "deleted_leftover_left", path, kind, err: error }, `could not remove the ${kind} of a deleted ${kind === "volume file" ? "volume" : "group"}; the next start tries again`);
    return false;
  }
}
