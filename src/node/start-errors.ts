// Why `tidemark node` could not start, in words an operator can act on: one line saying what
// is wrong and what to do (CONTRACT.md), for the mistakes a new user makes first: a data
// directory that cannot be made or used, a port another process holds. Pure: errors in,
// errors out; the node throws what these return and the CLI prints the message alone.
import { NodeStartError } from "../core/errors.ts";
import { errorCode } from "../storage/fs.ts";


/**
 * The node could not make or use its data directory `dataDir` (`error` came from a file system
 * call at or under it). An error without an errno (a bug) is returned unchanged.
 */
export function dataDirError(dataDir: string, error: unknown): Error {
  const code = errorCode(error);
  if (error instanceof NodeStartError || code === undefined) return error instanceof Error ? error : new Error(String(error));
  const path = (error as NodeJS.ErrnoException).path ?? dataDir;
  const what = `--data ${dataDir}`;
  switch (code) {
    case "ENOTDIR":
    case "EEXIST":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: ${path} is a file, not a directory (${code}); give --data a directory (it is created if missing)`, code);
    case "EACCES":
    case "EPERM":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: permission denied on ${path} (${code}); give --data a directory this user may write, or fix its owner or mode`, code);
    case "EROFS":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: ${path} is on a read-only file system (EROFS); give --data a directory on a writable file system`, code);
    case "ENOENT":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: cannot create ${path} (ENOENT: its parent takes no new directories, as under /proc or /sys, or a symbolic link on the way points nowhere); give --data a directory on a writable file system`, code);
    case "ENOSPC":
    case "EDQUOT":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: no space left for ${path} (${code}); free space there or give --data a directory on another file system`, code);
    case "ENAMETOOLONG":
    case "ELOOP":
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: ${path} cannot be used (${code}); give --data a shorter path without symbolic link loops`, code);
    default:
      return new NodeStartError("TM_ERR_DATA_DIR", `${what}: cannot use ${path} (${(error as Error).message}); check the directory and the disk, or give --data another directory`, code);
  }
}

/**
 * A listener could not be opened: `flag` is the option that named its address (--nbd, ...).
 * An error without an errno is returned unchanged.
 */
export function listenError(flag: string, host: string, port: number, error: unknown): Error {
  const code = errorCode(error);
  if (code === undefined) return error instanceof Error ? error : new Error(String(error));
  const address = `${host.includes(":") ? `[${host}]` : host}:${String(port)}`;
  switch (code) {
    case "EADDRINUSE":
      return new NodeStartError("TM_ERR_LISTEN", `${flag} ${address} is already in use by another process (EADDRINUSE); stop that process (another tidemark node? \`ss -ltnp\` shows who listens), or give ${flag} another HOST:PORT`, code);
    case "EACCES":
    case "EPERM":
      return new NodeStartError("TM_ERR_LISTEN", `not allowed to listen on ${flag} ${address} (${code}: ports below 1024 need privileges); give ${flag} a port of 1024 or more`, code);
    case "EADDRNOTAVAIL":
      return new NodeStartError("TM_ERR_LISTEN", `${flag} ${address}: ${host} is not an address of this machine (EADDRNOTAVAIL); give ${flag} one of its addresses, e.g. 127.0.0.1:${String(port)}${flag === "--mgmt" ? "" : ` (or 0.0.0.0:${String(port)}: all of them)`}`, code);
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_NONAME":
      return new NodeStartError("TM_ERR_LISTEN", `${flag} ${address}: the host name ${host} does not resolve (${code}); give ${flag} an IP address or a name this machine resolves`, code);
    default:
      return new NodeStartError("TM_ERR_LISTEN", `cannot listen on ${flag} ${address} (${(error as Error).message}); give ${flag} another HOST:PORT`, code);
  }
}
