// Small file-system helpers whose whole point is durability: a file is only "there"
// after its directory entry is fsync'd, and metadata is replaced atomically by rename.
import { open, rename, mkdir } from "node:fs/promises";
import { dirname } from "node:path";

/** fsync a directory so that creations, renames and deletions in it survive a crash. */
export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `contents` atomically: write a temporary file, fdatasync it,
 * rename it over the target, fsync the directory. A crash leaves the old or the new file.
 */
export async function writeFileAtomic(path: string, contents: string | Buffer): Promise<void> {
  const temporaryPath = `${path}.tmp`;
  const handle = await open(temporaryPath, "w", 0o644);
  try {
    await handle.writeFile(contents);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await rename(temporaryPath, path);
  await fsyncDirectory(dirname(path));
}

/** mkdir -p, then fsync the parent so the new directory itself is durable. */
export async function makeDirectoryDurable(path: string): Promise<void> {
  await mkdir(path, { recursive: true });
  await fsyncDirectory(dirname(path));
}
