// A group stopped by a full disk or an I/O error (DESIGN.md: "Out of space or an I/O error
// stops the affected group alone, visibly, and it resumes when the cause is gone"). One
// description for both sides of a pair: the primary's writer and the secondary's target.
// docs/out-of-space.md has the rules.

/** Why a group stopped, for status, logs, health and the errno hosts get meanwhile. */
export interface GroupStop {
  /** What a host write gets while the group is stopped. */
  readonly errno: "ENOSPC" | "EIO";
  /** The file or directory the error came from. */
  readonly path: string;
  /** One line: what happened and what resumes it. */
  readonly reason: string;
  readonly sinceIso: string;
  /** False when resuming would pretend data is durable: the operator must act. */
  readonly resumable: boolean;
}

/** Errors that stop a group (and resume it once gone) rather than stopping the node: the disk said no. */
export function isStorageError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOSPC" || code === "EDQUOT" || code === "EIO" || code === "EROFS" || code === "EFBIG";
}

/** The stop an error means, naming the path it came from (the error's own, or `path`). */
export function stopFromError(error: Error, path: string, wallMs: number): GroupStop {
  const errorPath = (error as { path?: unknown }).path;
  const code = (error as NodeJS.ErrnoException).code;
  const errno = code === "ENOSPC" || code === "EDQUOT" ? "ENOSPC" : "EIO";
  const where = typeof errorPath === "string" ? errorPath : path;
  return {
    errno,
    path: where,
    reason: errno === "ENOSPC"
      ? `out of space writing ${where}: free space on that file system; the group resumes by itself`
      : `I/O error on ${where} (${code ?? error.message}): check the disk; the group resumes by itself once it reads back`,
    sinceIso: new Date(wallMs).toISOString(),
    resumable: true,
  };
}

/** Attaches `path` to an error that has none, so the stop can name the file. */
export function withPath(error: Error, path: string): Error {
  if ((error as { path?: unknown }).path === undefined) Object.assign(error, { path });
  return error;
}
