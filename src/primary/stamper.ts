// The node-wide write-time state (patent 340) behind the pure stampWrite(): one per node,
// shared by every group, so write times are monotonic across the whole node.
import { stampWrite, mergeWriteTimeState, initialWriteTimeState, type Stamp, type WriteTimeState } from "../core/stamp.ts";
import type { WriteTimePolicy } from "../core/types.ts";
import type { Logger } from "pino";
import type { Clock } from "../node/clock.ts";
import { hostWriteTimeAheadUsMax } from "../core/limits.ts";
import type { CommitWait } from "./commit-wait.ts";

/** What the stamper tells whoever watches it (a typed observer, given at construction). */
export interface StamperObserver {
  /** A host write time more than hostWriteTimeAheadUsMax ahead of the clock was recorded as `boundUs` instead (microseconds). */
  hostTimeClamped(hostWriteTimeUs: number, boundUs: number): void;
}

export class NodeStamper {
  readonly policy: WriteTimePolicy;
  private readonly clockUs: () => number;
  private current: WriteTimeState = initialWriteTimeState;
  /** Host writes whose time was behind the recorded time (raised to keep time monotonic). */
  hostTimesRaised = 0;
  /** Host writes whose time was too far ahead of this node's clock (lowered to the bound). */
  hostTimesClamped = 0;
  /**
   * The accept number of the newest host write (write or zeroes) on this node, any group:
   * an idle group needs a time advance only once a host write was accepted after its last
   * record. Time advances do not count, or every group's time advance would call for one
   * from every other group, for ever.
   */
  lastHostWriteAcceptNumber = 0;
  private readonly observer: StamperObserver | undefined;
  /**
   * `--max-clock-skew`: a host write is answered only once the clock passed its time + the
   * skew (group-writer.ts asks it); undefined without the flag (the write path then pays one
   * check). With it, under `host`, writes without a host time are stamped from the clock.
   */
  get commitWait(): CommitWait | undefined {
    return this.commitWaitValue;
  }

  private commitWaitValue: CommitWait | undefined;

  /** `observer`: hears of what the stamper changed on a host's behalf (the node logs it, rate-limited). */
  constructor(policy: WriteTimePolicy, clockUs: () => number, observer?: StamperObserver, commitWait?: CommitWait) {
    this.policy = policy;
    this.clockUs = clockUs;
    this.observer = observer;
    this.commitWaitValue = commitWait;
  }

  /** At start, before any write: commit wait for a skew this node declared to a named domain earlier (node.json), when the flag is missing now. */
  useCommitWait(commitWait: CommitWait): void {
    this.commitWaitValue = commitWait;
  }

  stamp(hostWriteTimeUs: number | undefined): Stamp {
    const { state, stamp } = stampWrite(this.current, {
      policy: this.policy,
      nowUs: this.policy === "clock" ? this.clockUs() : 0,
      hostWriteTimeUs,
      untimedNowUs: this.commitWait !== undefined && this.policy === "host" && hostWriteTimeUs === undefined ? this.clockUs() : undefined,
      hostWriteTimeMaxUs: hostWriteTimeUs === undefined ? undefined : this.clockUs() + hostWriteTimeAheadUsMax,
    });
    this.current = state;
    if (stamp.hostTimeRaised) this.hostTimesRaised += 1;
    if (stamp.hostTimeClamped && hostWriteTimeUs !== undefined) {
      this.hostTimesClamped += 1;
      this.observer?.hostTimeClamped(hostWriteTimeUs, stamp.writeTimeUs);
    }
    return stamp;
  }

  /** Recovery: never hand out a time or accept number at or below one already used. */
  raiseTo(state: WriteTimeState): void {
    this.current = mergeWriteTimeState(this.current, state);
  }

  get state(): WriteTimeState {
    return this.current;
  }
}

/**
 * Microseconds since the epoch for `--write-time clock`: the wall clock, never going back
 * within a process. While the wall clock is at or ahead of the last value it gave, advanced
 * by the monotonic clock since, it follows the wall clock: NTP's forward corrections, a
 * forward step, and time a suspended VM missed (the monotonic clock stands still then) all
 * reach the stamps, so a node running for weeks stays with the other nodes' clocks, which its
 * write times are compared with. When the wall clock steps back, it goes on from that last
 * value advanced by the monotonic clock (never back, never frozen: a frozen time would hold
 * every group of the domain back) until the wall clock catches up, then follows it again.
 * Reads the clock only; never throws.
 */
export function wallClockUs(clock: Clock): () => number {
  // The last value taken from the wall clock, and the monotonic time it was taken at.
  let baseUs = clock.wallMs() * 1000;
  let baseMonotonicMs = clock.monotonicMs();
  return () => {
    const monotonicMs = clock.monotonicMs();
    const wallUs = clock.wallMs() * 1000;
    const advancedUs = baseUs + (monotonicMs - baseMonotonicMs) * 1000;
    if (wallUs < advancedUs) return Math.floor(advancedUs); // stepped back: not caught up yet
    baseUs = wallUs;
    baseMonotonicMs = monotonicMs;
    return Math.floor(wallUs);
  };
}

/** At most one log line per this interval about host write times lowered to the clock's bound. */
const hostTimeClampLogIntervalMs = 10_000;

/**
 * The node's observer of its stamper: a host write time it lowered to the clock's bound is
 * logged (host_write_time_clamped, warn), at most once per hostTimeClampLogIntervalMs on the
 * monotonic clock, with how many such writes there were since the last line.
 */
export function clampLogger(logger: Logger, clock: Clock): StamperObserver {
  let clampLoggedAtMs = -Infinity;
  let clampsSinceLog = 0;
  return {
    hostTimeClamped: (hostWriteTimeUs, boundUs) => {
      clampsSinceLog += 1;
      const nowMs = clock.monotonicMs();
      if (nowMs - clampLoggedAtMs < hostTimeClampLogIntervalMs) return;
      logger.warn({ event: "host_write_time_clamped", hostWriteTimeUs, recordedUs: boundUs, clamped: clampsSinceLog },
        `a host sent write time ${new Date(hostWriteTimeUs / 1000).toISOString()}, more than ${hostWriteTimeAheadUsMax / 1e6} s ahead of this node's clock; recorded ${new Date(boundUs / 1000).toISOString()} instead (${clampsSinceLog} such writes since the last line): check the host's clock`);
      clampLoggedAtMs = nowMs;
      clampsSinceLog = 0;
    },
  };
}
