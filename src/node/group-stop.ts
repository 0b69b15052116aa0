// A group stopped by a full disk or an I/O error (DESIGN.md: "Out of space or an I/O error
// stops the affected group alone, visibly, and it resumes when the cause is gone"). One
// description for both sides of a pair: the primary's writer and the secondary's secondary.
// docs/out-of-space.md has the rules.
import { dirname } from "node:path";
import type { Logger } from "pino";
import { groupResumeDelayMsMax, groupResumeDelayMsMin } from "../core/limits.ts";
import { errorCode, type FileSystem } from "../storage/fs.ts";
import type { Clock, Timer } from "./clock.ts";

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
  const code = errorCode(error);
  return code === "ENOSPC" || code === "EDQUOT" || code === "EIO" || code === "EROFS" || code === "EFBIG";
}

/** The stop an error means, naming the path it came from (the error's own, or `path`). */
export function stopFromError(error: Error, path: string, wallMs: number): GroupStop {
  const errorPath = (error as { path?: unknown }).path;
  const code = errorCode(error);
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

/** What one attempt to resume a stopped group came to. */
export type ResumeOutcome =
  | { readonly kind: "resumed" }
  /** The disk still says no: try again later. */
  | { readonly kind: "retry"; readonly error: unknown }
  /** Resuming would pretend something is durable or consistent: the operator must act. */
  | { readonly kind: "final"; readonly reason: string };

/**
 * Reopens a stopped group's journal from the disk for a resume (both sides) and checks that it
 * still holds every record through `mustHoldThrough` (made durable, or acknowledged to the
 * primary). A storage error is a retry; a journal that lost such a record is final, with
 * `lostReason(lastSequence)`; a group closed meanwhile is a retry. The journal is closed on
 * every outcome but "opened". Other errors are thrown.
 */
export async function reopenJournalForResume<J extends { readonly lastSequence: number }, R extends { readonly lastSequence: number }>(options: {
  readonly open: () => Promise<{ readonly journal: J & { close(): Promise<void> }; readonly report: R }>;
  readonly closed: () => boolean;
  readonly mustHoldThrough: number;
  readonly lostReason: (lastSequence: number) => string;
}): Promise<{ readonly kind: "opened"; readonly journal: J & { close(): Promise<void> }; readonly report: R } | Exclude<ResumeOutcome, { kind: "resumed" }>> {
  let opened: { readonly journal: J & { close(): Promise<void> }; readonly report: R };
  try {
    opened = await options.open();
  } catch (error) {
    if (isStorageError(error)) return { kind: "retry", error };
    throw error;
  }
  const { journal, report } = opened;
  if (options.closed()) {
    await journal.close().catch(() => undefined);
    return { kind: "retry", error: new Error("closing") };
  }
  if (report.lastSequence < options.mustHoldThrough) {
    await journal.close().catch(() => undefined);
    return { kind: "final", reason: options.lostReason(report.lastSequence) };
  }
  return { kind: "opened", journal, report };
}

export interface GroupStopControlOptions {
  readonly name: string;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Where the group's files are: an ENOSPC stop is retried once its file system has room. */
  readonly fileSystem: FileSystem;
  /** Re-reads and re-verifies from the disk; called only while stopped, one at a time. */
  readonly attemptResume: (stop: GroupStop) => Promise<ResumeOutcome>;
  /** Called when the group stops or resumes. */
  readonly onStateChange: () => void;
}

/**
 * The stopped state of one group and the way back, shared by the primary's writer and the
 * secondary's secondary: the stop is logged once per spell (a resume that stops again before
 * any write or apply succeeded is the same spell, with no new lines), a timer on the
 * monotonic clock retries with a backoff that doubles to groupResumeDelayMsMax, an ENOSPC
 * stop is retried only once its file system has room again, and the spell ends (one log
 * line, backoff reset) at the first success after a resume.
 */
export class GroupStopControl {
  private readonly options: GroupStopControlOptions;
  private current: GroupStop | undefined;
  private spell: { readonly sinceIso: string; readonly path: string; resumed: boolean } | undefined;
  private timer: Timer | undefined;
  private delayMs = groupResumeDelayMsMin;
  private resuming: Promise<void> | undefined;
  private closed = false;

  constructor(options: GroupStopControlOptions) {
    this.options = options;
  }

  get stop(): GroupStop | undefined {
    return this.current;
  }

  /** Stops the group for `error` (from `path`); false if it was stopped already or closing. */
  stopWith(error: Error, path: string): boolean {
    if (this.current !== undefined || this.closed) return false;
    const stop = stopFromError(error, path, this.options.clock.wallMs());
    this.current = this.spell === undefined ? stop : { ...stop, sinceIso: this.spell.sinceIso };
    if (this.spell === undefined) {
      this.spell = { sinceIso: stop.sinceIso, path: stop.path, resumed: false };
      this.options.logger.error({ event: "group_stopped", group: this.options.name, errno: stop.errno, path: stop.path, err: error }, `group stopped: ${stop.reason}`);
    } else {
      this.options.logger.debug({ event: "group_stopped_again", group: this.options.name, err: error }, "group stopped again before it made progress");
    }
    this.options.onStateChange();
    this.schedule();
    return true;
  }

  /** A final stop (the operator must act): never resumed by itself. */
  stopFinally(reason: string): void {
    const stop = this.current;
    this.current = { errno: stop?.errno ?? "EIO", path: stop?.path ?? "", sinceIso: stop?.sinceIso ?? new Date(this.options.clock.wallMs()).toISOString(), reason, resumable: false };
    this.options.logger.fatal({ event: "group_stopped_for_good", group: this.options.name, reason }, reason);
    this.options.onStateChange();
  }

  /**
   * A write to `path` succeeded (the file a spell began with, or a file in that directory;
   * undefined: whichever): a spell that resumed is over.
   */
  noteProgress(path?: string): void {
    const spell = this.spell;
    if (spell === undefined || !spell.resumed || this.current !== undefined) return;
    if (path !== undefined && !spell.path.startsWith(path)) return;
    this.spell = undefined;
    this.delayMs = groupResumeDelayMsMin;
    this.options.logger.warn({ event: "group_resumed", group: this.options.name, stoppedSince: spell.sinceIso }, "group resumed: its journal was re-read from the disk and verified, and it works again");
  }

  private schedule(): void {
    if (this.timer !== undefined || this.closed || this.current?.resumable !== true) return;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = undefined;
      this.resuming ??= this.attempt().finally(() => {
        this.resuming = undefined;
      });
    }, this.delayMs);
    this.delayMs = Math.min(groupResumeDelayMsMax, this.delayMs * 2);
  }

  private async attempt(): Promise<void> {
    const stop = this.current;
    if (stop === undefined || !stop.resumable || this.closed) return;
    if (stop.errno === "ENOSPC" && !(await hasRoom(this.options.fileSystem, stop.path))) {
      this.schedule();
      return;
    }
    let outcome: ResumeOutcome;
    try {
      outcome = await this.options.attemptResume(stop);
    } catch (error) {
      outcome = isStorageError(error) ? { kind: "retry", error } : { kind: "final", reason: `${stop.reason}; resuming failed: ${(error as Error).message}` };
    }
    if (this.closed) return;
    switch (outcome.kind) {
      case "resumed":
        this.current = undefined;
        if (this.spell !== undefined) this.spell.resumed = true;
        this.options.logger.info({ event: "group_resuming", group: this.options.name }, "group takes work again after a stop");
        this.options.onStateChange();
        return;
      case "retry":
        this.options.logger.debug({ event: "group_resume_failed", group: this.options.name, err: outcome.error, retryInMs: this.delayMs }, "group still stopped");
        this.schedule();
        return;
      case "final":
        this.stopFinally(outcome.reason);
    }
  }

  /** The node is stopping: no more attempts. */
  async close(): Promise<void> {
    this.closed = true;
    this.options.clock.clear(this.timer);
    await this.resuming;
  }
}

/** Free space below which an ENOSPC stop is not retried yet. */
const resumeFreeBytesMin = 1024 * 1024;

async function hasRoom(fs: FileSystem, path: string): Promise<boolean> {
  for (let dir = path; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      return (await fs.statFileSystem(dir)).freeBytes >= resumeFreeBytesMin;
    } catch {
      // not there (a journal directory being replaced): ask its parent
    }
  }
  return true;
}
