// Every error tidemark raises on purpose, in one place, each with a stable TM_ERR_* code:
// the management API answers `{"error":{"code","message"}}` with the HTTP status below, the
// CLI prints the code in brackets, logs carry it, and scripts may test it. A code is never
// renamed or reused for something else; a new one is added here (and to docs/errors.md,
// which a test keeps equal to this table).
//
// Not here, on purpose: InvariantError (core/assert.ts: a bug, the node stops), errors of
// the file system itself (they keep their errno: ENOSPC, EIO, ... decide what stops a group,
// group-stop.ts), FileTooLargeError and VolumeSyncLostError (storage/volume-file.ts: they pose
// as an errno, EFBIG and EIO, for the same reason), and the standalone host client's HostProtocolError (src/client/, a
// package of its own). The CLI's exit statuses are in cli/errors.ts.

/** Every TM_ERR_* code: the HTTP status the management API answers it with, and what it means. */
export const tmErrorCodes = {
  TM_ERR_INVALID: { httpStatus: 400, meaning: "the request or command line is malformed: a bad name, size, field or option" },
  TM_ERR_NOT_FOUND: { httpStatus: 404, meaning: "no such volume, group, pair or endpoint" },
  TM_ERR_EXISTS: { httpStatus: 409, meaning: "a volume or group of that name exists" },
  TM_ERR_CONFLICT: { httpStatus: 409, meaning: "it contradicts what is there: a volume already in a group, sizes that differ, a data directory of another node" },
  TM_ERR_LIMIT: { httpStatus: 409, meaning: "a limit of docs/limits.md is reached (volumes, groups per node)" },
  TM_ERR_STATE: { httpStatus: 409, meaning: "the pair or group is in a state that does not allow this (resume a pair that is not suspended, takeover on a primary, a write to a secondary's volume)" },
  TM_ERR_UNREACHABLE: { httpStatus: 502, meaning: "the other node could not be reached, or what answered is not a tidemark node" },
  TM_ERR_NO_SPACE: { httpStatus: 507, meaning: "the disk is full (ENOSPC) or a journal has no room" },
  TM_ERR_IO: { httpStatus: 500, meaning: "the disk refused (EIO, EROFS, EFBIG) while carrying out the command" },
  TM_ERR_INTERNAL: { httpStatus: 500, meaning: "a failure tidemark did not expect (logged at error level)" },
  TM_ERR_SHUTDOWN: { httpStatus: 503, meaning: "the node is stopping: the request was not carried out" },
  TM_ERR_JOURNAL_CORRUPT: { httpStatus: 500, meaning: "a journal is damaged where no crash can tear it (docs/journal.md)" },
  TM_ERR_JOURNAL_FORMAT: { httpStatus: 500, meaning: "a journal record is whole but this version cannot read it (written by a newer tidemark)" },
  TM_ERR_JOURNAL_FULL: { httpStatus: 507, meaning: "an append would take a journal past its size limit" },
  TM_ERR_JOURNAL_CLOSED: { httpStatus: 503, meaning: "a journal was used after it was closed" },
  TM_ERR_JOURNAL_ABANDONED: { httpStatus: 503, meaning: "a journal was abandoned by a stop: what it held on disk is what the next start recovers" },
  TM_ERR_JOURNAL_TRIMMED: { httpStatus: 500, meaning: "records were asked for that the journal already trimmed" },
  TM_ERR_DATA_DIR: { httpStatus: 500, meaning: "the node cannot make or use its data directory" },
  TM_ERR_LISTEN: { httpStatus: 500, meaning: "the node cannot listen on an address it was given" },
  TM_ERR_PRIMARY_UNREACHABLE: { httpStatus: 409, meaning: "a takeover could not fence the primary (no replication stream from it, or no answer in time); `--force` declares the primary site lost" },
  TM_ERR_PEER_TOOK_OVER: { httpStatus: 409, meaning: "the group is fenced because its secondary took over; `pair unfence --force` makes it writable on its own (no longer replicated)" },
  TM_ERR_DOMAIN_INCOMPARABLE: { httpStatus: 409, meaning: "pair create --domain: the named consistency domain would hold groups of primaries whose write times are not comparable (each primary needs --max-clock-skew and --write-time clock or host)" },
} as const satisfies Record<string, { readonly httpStatus: number; readonly meaning: string }>;

export type TmErrorCode = keyof typeof tmErrorCodes;

/** Whether `code` is one of tidemark's codes (a peer's or an old node's answer may hold anything). */
export function isTmErrorCode(code: unknown): code is TmErrorCode {
  return typeof code === "string" && Object.hasOwn(tmErrorCodes, code);
}

/** The base of every error tidemark raises on purpose: a stable code and a message that says what to do. */
export class TidemarkError extends Error {
  override name = "TidemarkError";
  readonly code: TmErrorCode;
  constructor(code: TmErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** What the control surface (management API, CLI) refuses or fails with; the HTTP layer maps `code` to a status. */
export class ControlError extends TidemarkError {
  override name = "ControlError";
}

/**
 * A start-up failure the operator can fix; its message is the whole story (no stack trace is
 * shown). `errno` is the system's code behind it when there is one (ENOTDIR, EADDRINUSE, ...).
 */
export class NodeStartError extends TidemarkError {
  override name = "NodeStartError";
  readonly errno: string | undefined;
  constructor(code: TmErrorCode, message: string, errno?: string) {
    super(code, message);
    this.errno = errno;
  }
}

/** The errno a front end answers a host with (NBD error, host protocol status), per VolumeIoError. */
export type VolumeIoErrno = "EINVAL" | "EPERM" | "ENOSPC" | "EIO" | "ESHUTDOWN";

const codeOfErrno: Readonly<Record<VolumeIoErrno, TmErrorCode>> = {
  EINVAL: "TM_ERR_INVALID",
  EPERM: "TM_ERR_STATE",
  ENOSPC: "TM_ERR_NO_SPACE",
  EIO: "TM_ERR_IO",
  ESHUTDOWN: "TM_ERR_SHUTDOWN",
};

/**
 * A volume read, write or flush refused or failed (core/volume-io.ts): `errno` is what the
 * front end tells the host (NBD: proto.md "Error values"; the host protocol's status), `code`
 * the TM_ERR_* code for logs and the API.
 */
export class VolumeIoError extends TidemarkError {
  override name = "VolumeIoError";
  readonly errno: VolumeIoErrno;
  constructor(errno: VolumeIoErrno, message: string) {
    super(codeOfErrno[errno], message);
    this.errno = errno;
  }
}

/** A journal error at a place in a file: the path, the byte offset and what is wrong there. */
abstract class JournalPlaceError extends TidemarkError {
  readonly path: string;
  readonly offsetBytes: number;
  readonly reason: string;
  constructor(code: TmErrorCode, message: string, path: string, offsetBytes: number, reason: string) {
    super(code, message);
    this.path = path;
    this.offsetBytes = offsetBytes;
    this.reason = reason;
  }
}

/**
 * Real damage found in a journal: a bad record in a segment that is not the last one,
 * a sequence gap or a segment that does not start where its name says. Never a torn
 * tail (that is cut and reported). The node must not start the group on it.
 */
export class JournalCorruptError extends JournalPlaceError {
  override name = "JournalCorruptError";
  constructor(path: string, offsetBytes: number, reason: string) {
    super("TM_ERR_JOURNAL_CORRUPT", `journal damaged: ${path} at byte ${offsetBytes}: ${reason}`, path, offsetBytes, reason);
  }
}

/**
 * A record written whole (its header checksum is valid) that this version of tidemark
 * cannot read: a newer record format or kind, or fields that break the format's rules.
 * It may hold answered writes, so it is never cut off as a torn tail: the node refuses to
 * start the group and says what to do.
 */
export class JournalFormatError extends JournalPlaceError {
  override name = "JournalFormatError";
  constructor(path: string, offsetBytes: number, reason: string) {
    super("TM_ERR_JOURNAL_FORMAT", `journal ${path} holds a record at byte ${offsetBytes} that this version of tidemark cannot read (${reason}); ` +
      "it was probably written by a newer tidemark: start the node with that version again. Nothing was changed on disk.", path, offsetBytes, reason);
  }
}

/** An append that would take the journal past its size limit; the sequence is not consumed. */
export class JournalFullError extends TidemarkError {
  override name = "JournalFullError";
  readonly usedBytes: number;
  readonly bytesMax: number;
  constructor(usedBytes: number, recordBytes: number, bytesMax: number) {
    super("TM_ERR_JOURNAL_FULL", `journal full: ${usedBytes} bytes used, a ${recordBytes}-byte record does not fit under ${bytesMax}`);
    this.usedBytes = usedBytes;
    this.bytesMax = bytesMax;
  }
}

/** append/sync/readFrom after close(). */
export class JournalClosedError extends TidemarkError {
  override name = "JournalClosedError";
  constructor(dir: string) {
    super("TM_ERR_JOURNAL_CLOSED", `journal ${dir} is closed`);
  }
}

/** A journal abandoned by a stop (appends and syncs waiting on it fail with this). */
export class JournalAbandonedError extends TidemarkError {
  override name = "JournalAbandonedError";
  constructor(dir: string) {
    super("TM_ERR_JOURNAL_ABANDONED", `journal ${dir} abandoned`);
  }
}

/** readFrom asked for records already trimmed away. */
export class JournalTrimmedError extends TidemarkError {
  override name = "JournalTrimmedError";
  readonly firstSequence: number;
  constructor(dir: string, sequence: number, firstSequence: number) {
    super("TM_ERR_JOURNAL_TRIMMED", `journal ${dir}: sequence ${sequence} is trimmed, the journal starts at ${firstSequence}`);
    this.firstSequence = firstSequence;
  }
}
