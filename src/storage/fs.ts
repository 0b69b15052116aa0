// The storage seam (issue 7; docs/journal.md, "Storage seam"): every file the node touches
// goes through a FileSystem. Production passes `nodeFileSystem` (node-fs.ts, the only module
// under src/storage and src/node that imports node:fs); the simulation passes a faulty twin
// (test/sim/sim-disk.ts) that loses what was not made durable at a power loss, tears writes
// in flight, and returns ENOSPC and EIO. The journal, the volume files, the written maps and
// the metadata store run unchanged over either.
//
// Errors are Error objects with the errno `code` a Linux file system would give (ENOENT,
// EEXIST, ENOSPC, EIO, EFBIG, EINVAL, ...), and `syscall` and `path` where known, as node:fs
// raises them; callers branch on `code` only (errorCode below).
//
// What is durable, and when (the rules the twin enforces):
//   - write/writev put bytes in the page cache; a reader of the file sees them at once, but
//     only `datasync` (or `sync`) makes the file's data and size durable;
//   - a created, renamed or unlinked name is durable only once its directory was fsync'd
//     (`syncDirectory`); the file's own datasync does not cover its name;
//   - after a datasync that failed (EIO), the pages it was writing may be gone from the disk
//     while reads through the page cache still return them, and a later datasync succeeds
//     without them ("fsyncgate"): only a "direct-read" file (O_DIRECT) reads the disk itself.

/**
 * How a file is opened.
 * - "read": O_RDONLY. ENOENT if missing. Not for directories (use readDirectory and
 *   syncDirectory; the twin refuses with EISDIR).
 * - "read-write": O_RDWR of an existing file. ENOENT if missing.
 * - "create-exclusive": O_RDWR|O_CREAT|O_EXCL, a new empty file. EEXIST if the name exists,
 *   ENOENT if the directory does not, ENOSPC if the file system is full.
 * - "create-truncate": O_WRONLY|O_CREAT|O_TRUNC: a new file, or an existing one emptied.
 * - "direct-read": O_RDONLY|O_DIRECT: reads bypass the page cache (Linux first writes back the
 *   dirty pages of the range, then reads the disk). Offsets, lengths and buffer addresses must
 *   be multiples of the logical block size (512 B; tidemark uses 4 KiB), else EINVAL. EINVAL
 *   at open where the file system refuses O_DIRECT (tmpfs): callers fall back to "read".
 */
export type OpenMode = "read" | "read-write" | "create-exclusive" | "create-truncate" | "direct-read";

export interface FileStat {
  readonly kind: "file" | "directory" | "other";
  /** st_size. */
  readonly sizeBytes: number;
  /** Bytes of blocks allocated (st_blocks * 512): a sparse file counts only what was written. */
  readonly allocatedBytes: number;
}

export interface FileSystemStat {
  /** statfs(2) f_type (0xef53 ext4, 0x58465342 xfs, ...). */
  readonly typeCode: number;
  /** Bytes an unprivileged writer may still use (f_bavail * f_bsize). */
  readonly freeBytes: number;
  /** f_blocks * f_bsize. */
  readonly totalBytes: number;
}

/**
 * An open file. Positions and lengths are bytes. The Sync forms run on the caller's thread and
 * return when the bytes are in the page cache (or read from it): the hot path uses them for
 * small transfers because a thread-pool hop costs more than the copy. Every method may raise
 * EIO (the disk said no) and EBADF (used after close, or a handle of a process that crashed).
 */
export interface File {
  readonly path: string;
  /**
   * Reads up to lengthBytes at positionBytes into into[offsetBytes...]; resolves with the bytes
   * read, fewer only at the end of the file (0 at or past it).
   */
  read(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number>;
  readSync(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number;
  /**
   * Writes from[offsetBytes, +lengthBytes) at positionBytes; resolves with the bytes written,
   * which may be fewer (a short write: the file system filled up part-way; call again to get
   * the error). ENOSPC (no byte fits), EFBIG (past the largest file the file system holds), EIO.
   */
  write(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number>;
  writeSync(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number;
  /** The buffers one after the other at positionBytes (pwritev); short writes and errors as write. */
  writev(buffers: readonly Buffer[], positionBytes: number): Promise<number>;
  writevSync(buffers: readonly Buffer[], positionBytes: number): number;
  /** ftruncate: shrinks (the bytes past sizeBytes are gone) or grows with a hole. EFBIG, ENOSPC, EIO. */
  truncate(sizeBytes: number): Promise<void>;
  /** fstat: size and allocated bytes. */
  stat(): Promise<FileStat>;
  /** fdatasync: the file's data and size are durable once it resolves. EIO: see the header. */
  datasync(): Promise<void>;
  /** fsync: as datasync, and the file's other metadata too. */
  sync(): Promise<void>;
  /** Closes the descriptor; later calls fail (EBADF). Closing again resolves and does nothing. */
  close(): Promise<void>;
}

/** The directory tree of a node's data: paths are absolute (or relative to the process's cwd). */
export interface FileSystem {
  /**
   * Opens `path` (see OpenMode for the errors). `permissionBits` apply to a created file
   * (default 0o666, less the umask).
   */
  open(path: string, mode: OpenMode, permissionBits?: number): Promise<File>;
  /** mkdir -p: every missing directory of `path`; an existing directory is fine. ENOTDIR, ENOSPC. */
  makeDirectory(path: string): Promise<void>;
  /** The names in a directory, in no particular order. ENOENT, ENOTDIR. */
  readDirectory(path: string): Promise<string[]>;
  /** Removes a file's name (the file lives on while open). ENOENT, EISDIR. Durable after syncDirectory. */
  unlink(path: string): Promise<void>;
  /** rm -rf: a file or a whole directory tree; a missing path is fine. Durable after syncDirectory of the parent. */
  removeTree(path: string): Promise<void>;
  /** Atomically points `toPath` at `fromPath`'s file, replacing what `toPath` named. ENOENT; durable after syncDirectory. */
  rename(fromPath: string, toPath: string): Promise<void>;
  /** fsync of a directory: the creations, renames and unlinks in it survive a crash. ENOENT, EIO. */
  syncDirectory(path: string): Promise<void>;
  /** stat(2). ENOENT. */
  stat(path: string): Promise<FileStat>;
  /** statfs(2) of the file system holding `path`. ENOENT. */
  statFileSystem(path: string): Promise<FileSystemStat>;
}

/**
 * The errno code of a file system error (ENOENT, ENOSPC, ...), or undefined for another error.
 * A tidemark error that carries an errno beside its TM_ERR_* code (VolumeIoError,
 * NodeStartError: core/errors.ts) gives that errno.
 */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const errno = (error as { errno?: unknown }).errno; // a number on node's own errors
  if (typeof errno === "string") return errno;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

const errorTexts: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  EEXIST: "file already exists",
  ENOTDIR: "not a directory",
  EISDIR: "illegal operation on a directory",
  ENOTEMPTY: "directory not empty",
  ENOSPC: "no space left on device",
  EIO: "i/o error",
  EFBIG: "file too large",
  EINVAL: "invalid argument",
  EBADF: "bad file descriptor",
  EXDEV: "cross-device link not permitted",
};

/** An error shaped as node:fs raises them (message "CODE: text, syscall 'path'"), for file systems other than node:fs. */
export function fileSystemError(code: string, syscall: string, path: string, detail?: string): NodeJS.ErrnoException {
  const text = errorTexts[code] ?? code.toLowerCase();
  const error: NodeJS.ErrnoException = new Error(`${code}: ${text}${detail === undefined ? "" : ` (${detail})`}, ${syscall} '${path}'`);
  error.code = code;
  error.syscall = syscall;
  error.path = path;
  return error;
}
