// The node-wide write-time state (patent 340) behind the pure stampWrite(): one per node,
// shared by every group, so write times are monotonic across the whole node.
import { stampWrite, mergeWriteTimeState, initialWriteTimeState, type Stamp, type WriteTimeState } from "../core/stamp.ts";
import type { WriteTimePolicy } from "../core/types.ts";

export class NodeStamper {
  readonly policy: WriteTimePolicy;
  private readonly clockUs: () => number;
  private current: WriteTimeState = initialWriteTimeState;
  /** Host writes whose time was behind the recorded time (raised to keep time monotonic). */
  hostTimesRaised = 0;

  constructor(policy: WriteTimePolicy, clockUs: () => number) {
    this.policy = policy;
    this.clockUs = clockUs;
  }

  stamp(hostWriteTimeUs: number | undefined): Stamp {
    const { state, stamp } = stampWrite(this.current, {
      policy: this.policy,
      nowUs: this.policy === "clock" ? this.clockUs() : 0,
      hostWriteTimeUs,
    });
    this.current = state;
    if (stamp.hostTimeRaised) this.hostTimesRaised += 1;
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

/** Microseconds since the epoch from the wall clock, never going back within a process. */
export function wallClockUs(): () => number {
  const originMs = Date.now();
  const originNs = process.hrtime.bigint();
  return () => originMs * 1000 + Number((process.hrtime.bigint() - originNs) / 1000n);
}
