// The node-wide write-time state (patent 340) behind the pure stampWrite(): one per node,
// shared by every group, so write times are monotonic across the whole node.
import { stampWrite, mergeWriteTimeState, initialWriteTimeState, type Stamp, type WriteTimeState } from "../core/stamp.ts";
import type { WriteTimePolicy } from "../core/types.ts";
import type { Clock } from "./clock.ts";
import { hostWriteTimeAheadUsMax } from "../core/limits.ts";

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
  /** Called for each clamped host time (the node logs, rate-limited). */
  onHostTimeClamped: (hostWriteTimeUs: number, boundUs: number) => void = () => undefined;

  constructor(policy: WriteTimePolicy, clockUs: () => number) {
    this.policy = policy;
    this.clockUs = clockUs;
  }

  stamp(hostWriteTimeUs: number | undefined): Stamp {
    const { state, stamp } = stampWrite(this.current, {
      policy: this.policy,
      nowUs: this.policy === "clock" ? this.clockUs() : 0,
      hostWriteTimeUs,
      hostWriteTimeMaxUs: hostWriteTimeUs === undefined ? undefined : this.clockUs() + hostWriteTimeAheadUsMax,
    });
    this.current = state;
    if (stamp.hostTimeRaised) this.hostTimesRaised += 1;
    if (stamp.hostTimeClamped && hostWriteTimeUs !== undefined) {
      this.hostTimesClamped += 1;
      this.onHostTimeClamped(hostWriteTimeUs, stamp.writeTimeUs);
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
 * Microseconds since the epoch from the wall clock, never going back within a process: the
 * wall clock is read once, then advanced by the monotonic clock, so a step of the system
 * clock (NTP, a manual date change, a VM resume) moves no stamp back.
 */
export function wallClockUs(clock: Clock): () => number {
  const originUs = clock.wallMs() * 1000;
  const originMonotonicMs = clock.monotonicMs();
  return () => Math.floor(originUs + (clock.monotonicMs() - originMonotonicMs) * 1000);
}
