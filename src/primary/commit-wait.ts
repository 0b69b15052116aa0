// Commit wait (`tidemark node --max-clock-skew DURATION`; docs/replication.md "Several
// primaries on one secondary"): a host write is answered only once this node's clock has
// passed the write's time + the declared skew. A write that depends on that answer, on any
// primary whose clock is within the skew of this one, is then stamped with a later time, so
// the write times of several primaries are comparable and a secondary may reflect their
// groups together by write time (a domain named with `pair create --domain`).
//
// Without --max-clock-skew the node has no CommitWait and the write path pays one
// `undefined` check. With it, an answer whose time is already past answers at once; the others
// wait in one queue, ordered by when they are due, under one timer for the earliest (a timer
// per batch of answers, never one per write, and never a busy wait). Every wait has a
// deadline (commitWaitMsMax): past it the write is answered with EIO and a log line.
import type { Logger } from "pino";
import { VolumeIoError } from "../core/errors.ts";
import { commitWaitMsMax, commitWaitsPendingMax } from "../core/limits.ts";
import type { Clock, Timer } from "../node/clock.ts";

interface Waiting {
  readonly dueUs: number;
  readonly deadlineMs: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

export class CommitWait {
  /** The declared skew, microseconds. */
  readonly skewUs: number;
  private readonly clock: Clock;
  /** The clock write times are stamped from (wallClockUs: never goes back), microseconds since the epoch. */
  private readonly clockUs: () => number;
  private readonly logger: Logger;
  /** Answers waiting, in dueUs order. Bounded by commitWaitsPendingMax (every request the front ends let be in flight). */
  private readonly waiting: Waiting[] = [];
  private timer: Timer | undefined;
  private timerDueMs = Infinity;
  private closed = false;
  /** Answers that waited (for status and tests). */
  waited = 0;

  /** `skewMs`: the node's --max-clock-skew (> 0). `clockUs`: the stamper's clock. */
  constructor(options: { skewMs: number; clock: Clock; clockUs: () => number; logger: Logger }) {
    this.skewUs = Math.round(options.skewMs * 1000);
    this.clock = options.clock;
    this.clockUs = options.clockUs;
    this.logger = options.logger;
  }

  /**
   * Undefined when the answer of a write stamped `writeTimeUs` may go now (the clock passed
   * writeTimeUs + skew), else a promise that resolves once it has. Rejects (VolumeIoError EIO)
   * past the deadline, when too many answers wait, or ESHUTDOWN once closed.
   */
  wait(writeTimeUs: number): Promise<void> | undefined {
    const dueUs = writeTimeUs + this.skewUs;
    if (this.clockUs() > dueUs) return undefined;
    if (this.closed) return Promise.reject(new VolumeIoError("ESHUTDOWN", "the node is stopping: the write's answer was not sent"));
    if (this.waiting.length >= commitWaitsPendingMax) {
      this.logger.error({ event: "commit_wait_full", waiting: this.waiting.length, code: "TM_ERR_IO" }, "more write answers wait out the clock skew than the front ends let be in flight; answered with EIO");
      return Promise.reject(new VolumeIoError("EIO", "too many write answers wait out the clock skew"));
    }
    return new Promise<void>((resolve, reject) => {
      const entry: Waiting = { dueUs, deadlineMs: this.clock.monotonicMs() + commitWaitMsMax, resolve, reject };
      // Stamps never go back on a node: the new one is almost always the last.
      let at = this.waiting.length;
      while (at > 0 && (this.waiting[at - 1]?.dueUs ?? 0) > dueUs) at -= 1;
      this.waiting.splice(at, 0, entry);
      this.arm();
    });
  }

  /** How many answers wait now. */
  get pending(): number {
    return this.waiting.length;
  }

  /** The node stops: every waiting answer fails (ESHUTDOWN); nothing waits afterwards. */
  close(): void {
    this.closed = true;
    this.clock.clear(this.timer);
    this.timer = undefined;
    for (const entry of this.waiting.splice(0)) entry.reject(new VolumeIoError("ESHUTDOWN", "the node is stopping: the write's answer was not sent"));
  }

  /** One timer for the earliest answer due (or the earliest deadline, which comes later). */
  private arm(): void {
    const first = this.waiting[0];
    if (first === undefined || this.closed) return;
    const nowMs = this.clock.monotonicMs();
    const dueInMs = Math.max(0, (first.dueUs - this.clockUs()) / 1000);
    const atMs = nowMs + Math.max(1, Math.ceil(Math.min(dueInMs + 0.001, first.deadlineMs - nowMs)));
    if (this.timer !== undefined && this.timerDueMs <= atMs) return;
    this.clock.clear(this.timer);
    this.timerDueMs = atMs;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerDueMs = Infinity;
      this.release();
    }, atMs - nowMs);
  }

  private release(): void {
    const nowUs = this.clockUs();
    const nowMs = this.clock.monotonicMs();
    let due = 0;
    while (due < this.waiting.length && (this.waiting[due]?.dueUs ?? Infinity) < nowUs) due += 1;
    for (const entry of this.waiting.splice(0, due)) entry.resolve();
    this.waited += due;
    // Past its deadline (the clock stood still: never with wallClockUs, which follows the monotonic clock).
    for (let i = 0; i < this.waiting.length;) {
      const entry = this.waiting[i];
      if (entry !== undefined && entry.deadlineMs <= nowMs) {
        this.waiting.splice(i, 1);
        this.logger.error({ event: "commit_wait_deadline", dueUs: entry.dueUs, nowUs, code: "TM_ERR_IO" }, `a write's answer waited ${commitWaitMsMax} ms for the clock to pass its time + the clock skew; answered with EIO`);
        entry.reject(new VolumeIoError("EIO", "the write's answer could not wait out the clock skew in time"));
      } else {
        i += 1;
      }
    }
    this.arm();
  }
}
