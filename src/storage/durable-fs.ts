// Small file-system helpers on top of the FileSystem seam (fs.ts) whose whole point is
// durability: a file is only "there" after its directory entry is fsync'd, and metadata is
// replaced atomically by rename. Also whole-file reads and writes, which node:fs offers and
// the seam leaves out.
import { dirname } from "node:path";
import { errorCode, fileSystemError, type File, type FileSystem } from "./fs.ts";

/** Bytes read per call by readWholeFile (files of /proc report size 0, so it reads to the end). */
const wholeFileChunkBytes = 64 * 1024;

/**
 * Replaces `path` with `contents` atomically: write a temporary file, fdatasync it,
 * rename it over the target, fsync the directory. A crash leaves the old or the new file.
 */
export async function writeFileAtomic(fs: FileSystem, path: string, contents: string | Buffer): Promise<void> {
  const temporaryPath = `${path}.tmp`;
  const file = await fs.open(temporaryPath, "create-truncate", 0o644);
  try {
    await writeWholeFile(file, contents);
    await file.datasync();
  } finally {
    await file.close();
  }
  await fs.rename(temporaryPath, path);
  await fs.syncDirectory(dirname(path));
}

/**
 * mkdir -p, then fsync the parent of every directory it created (and the parent of `path` in
 * any case), so that every new name on the way is durable: a directory whose own name a power
 * loss can take takes everything in it along.
 */
export async function makeDirectoryDurable(fs: FileSystem, path: string): Promise<void> {
  const created: string[] = [];
  for (let dir = path; dirname(dir) !== dir; dir = dirname(dir)) {
    const exists = await fs.stat(dir).then(() => true, (error: unknown) => {
      // ENOTDIR: a file further up; makeDirectory below names it.
      if (errorCode(error) === "ENOENT" || errorCode(error) === "ENOTDIR") return false;
      throw error;
    });
    if (exists) break;
    created.push(dir);
  }
  await fs.makeDirectory(path);
  const parents = new Set([...created.reverse().map((dir) => dirname(dir)), dirname(path)]);
  for (const parent of parents) await fs.syncDirectory(parent);
}

/** Writes `contents` at the start of an open (empty) file, continuing short writes. Errors: those of File.write. */
export async function writeWholeFile(file: File, contents: string | Buffer): Promise<void> {
  const bytes = typeof contents === "string" ? Buffer.from(contents, "utf8") : contents;
  let doneBytes = 0;
  while (doneBytes < bytes.length) {
    const bytesWritten = await file.write(bytes, doneBytes, bytes.length - doneBytes, doneBytes);
    if (bytesWritten === 0) throw fileSystemError("EIO", "write", file.path, "no progress");
    doneBytes += bytesWritten;
  }
}

/** The whole contents of a file, read to its end. ENOENT and the errors of File.read. */
export async function readWholeFile(fs: FileSystem, path: string): Promise<Buffer> {
  const file = await fs.open(path, "read");
  try {
    const chunks: Buffer[] = [];
    let positionBytes = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(wholeFileChunkBytes);
      const bytesRead = await file.read(chunk, 0, chunk.length, positionBytes);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      positionBytes += bytesRead;
    }
    return Buffer.concat(chunks, positionBytes);
  } finally {
    await file.close();
  }
}
