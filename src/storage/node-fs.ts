// The production FileSystem: node:fs and node:fs/promises, call for call what the storage code
// did before the seam (fs.ts). The only module under src/storage and src/node that may import
// node:fs (eslint.config.js holds that line). The Sync methods are the plain synchronous calls
// on the descriptor: the journal's writevSync and the volume's readSync/writeSync stay one
// system call on the main thread, with nothing in between.
import { constants, readSync, writeSync, writevSync } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, statfs, unlink, type FileHandle } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { errorCode, fileSystemError, type File, type FileStat, type FileSystem, type FileSystemStat, type OpenMode } from "./fs.ts";

const openFlags: Readonly<Record<OpenMode, string | number>> = {
  "read": "r",
  "read-write": "r+",
  "create-exclusive": "wx+",
  "create-truncate": "w",
  "direct-read": constants.O_RDONLY | constants.O_DIRECT,
};

class NodeFile implements File {
  readonly path: string;
  private readonly handle: FileHandle;

  constructor(path: string, handle: FileHandle) {
    this.path = path;
    this.handle = handle;
  }

  // `handle.fd` is read on every call (never cached): after close it is -1 and the call fails
  // with EBADF, where a cached number could name a file opened since.
  async read(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number> {
    return (await this.handle.read(into, offsetBytes, lengthBytes, positionBytes)).bytesRead;
  }

  readSync(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    return readSync(this.handle.fd, into, offsetBytes, lengthBytes, positionBytes);
  }

  async write(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number> {
    return (await this.handle.write(from, offsetBytes, lengthBytes, positionBytes)).bytesWritten;
  }

  writeSync(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    return writeSync(this.handle.fd, from, offsetBytes, lengthBytes, positionBytes);
  }

  async writev(buffers: readonly Buffer[], positionBytes: number): Promise<number> {
    return (await this.handle.writev(buffers, positionBytes)).bytesWritten;
  }

  writevSync(buffers: readonly Buffer[], positionBytes: number): number {
    return writevSync(this.handle.fd, buffers, positionBytes);
  }

  truncate(sizeBytes: number): Promise<void> {
    return this.handle.truncate(sizeBytes);
  }

  async stat(): Promise<FileStat> {
    return fileStat(await this.handle.stat());
  }

  datasync(): Promise<void> {
    return this.handle.datasync();
  }

  sync(): Promise<void> {
    return this.handle.sync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

function fileStat(info: { isFile(): boolean; isDirectory(): boolean; size: number; blocks: number }): FileStat {
  return { kind: info.isFile() ? "file" : info.isDirectory() ? "directory" : "other", sizeBytes: info.size, allocatedBytes: info.blocks * 512 };
}

/** The machine's own file systems, through node:fs. */
export const nodeFileSystem: FileSystem = {
  async open(path: string, mode: OpenMode, permissionBits?: number): Promise<File> {
    return new NodeFile(path, await open(path, openFlags[mode], permissionBits));
  },
  /**
   * mkdir -p by hand, one level at a time from the deepest existing directory. Not
   * mkdir({ recursive: true }): where mkdir answers ENOENT although the parent exists (under
   * /proc or /sys, through a dangling symlink) Node's recursive mkdir retries for ever, a libuv
   * thread spinning and the promise never settling. Here each missing level is made once, and
   * its error is the answer. ENOTDIR when a level is a file (also `path` itself).
   */
  async makeDirectory(path: string): Promise<void> {
    const missing: string[] = [];
    for (let dir = resolve(path); ; dir = dirname(dir)) {
      const info = await stat(dir).catch((error: unknown) => {
        // ENOTDIR: a file further up; the walk goes on up to it and names it.
        if (errorCode(error) === "ENOENT" || errorCode(error) === "ENOTDIR") return undefined;
        throw error;
      });
      if (info !== undefined) {
        if (!info.isDirectory()) throw fileSystemError("ENOTDIR", "mkdir", dir, "a file is in the way");
        break;
      }
      if (dirname(dir) === dir) break;
      missing.push(dir);
    }
    for (const dir of missing.reverse()) {
      try {
        await mkdir(dir);
      } catch (error) {
        // Made by someone else meanwhile: fine if it is a directory.
        if (errorCode(error) !== "EEXIST" || !(await stat(dir)).isDirectory()) throw error;
      }
    }
  },
  readDirectory(path: string): Promise<string[]> {
    return readdir(path);
  },
  unlink(path: string): Promise<void> {
    return unlink(path);
  },
  removeTree(path: string): Promise<void> {
    return rm(path, { recursive: true, force: true });
  },
  rename(fromPath: string, toPath: string): Promise<void> {
    return rename(fromPath, toPath);
  },
  async syncDirectory(path: string): Promise<void> {
    const handle = await open(path, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
  async stat(path: string): Promise<FileStat> {
    return fileStat(await stat(path));
  },
  async statFileSystem(path: string): Promise<FileSystemStat> {
    const info = await statfs(path);
    return { typeCode: info.type, freeBytes: info.bavail * info.bsize, totalBytes: info.blocks * info.bsize };
  },
};
