// The node's clocks, passed in so that nothing in the shell reads them behind the core's
// back and the simulation can step them. Every timer, interval and deadline runs on the
// monotonic clock; the wall clock only gives write times under `--write-time clock` and
// human-readable times in status and logs (DESIGN.md, "Domains, takeover and fencing").
import { performance } from "node:perf_hooks";

export interface Clock {
  /** Milliseconds on a clock that never steps (CLOCK_MONOTONIC); only differences mean anything. */
  monotonicMs(): number;
  /** Milliseconds since the Unix epoch (CLOCK_REALTIME); may step back or forward at any time. */
  wallMs(): number;
}

/** The system's clocks. */
export const systemClock: Clock = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
};
