// The node's clocks and timers, passed in so that nothing in the shell reads time or
// schedules work behind the core's back, and the simulation can run the same code on
// virtual time it steps. Every timer, interval and deadline runs on the monotonic clock;
// the wall clock only gives write times under `--write-time clock` and human-readable times
// in status and logs (DESIGN.md, "Domains, takeover and fencing").
import { performance } from "node:perf_hooks";

/** A scheduled timer (opaque); pass it to Clock.clear. */
export interface Timer {
  readonly kind: "timer";
}

export interface Clock {
  /** Milliseconds on a clock that never steps (CLOCK_MONOTONIC); only differences mean anything. */
  monotonicMs(): number;
  /** Milliseconds since the Unix epoch (CLOCK_REALTIME); may step back or forward at any time. */
  wallMs(): number;
  /** Runs `fn` once, `delayMs` from now on the monotonic clock. Timers never keep the process alive. */
  setTimeout(fn: () => void, delayMs: number): Timer;
  /** Runs `fn` every `periodMs` on the monotonic clock until cleared. */
  setInterval(fn: () => void, periodMs: number): Timer;
  /** Cancels a timer (undefined or one already run: nothing). */
  clear(timer: Timer | undefined): void;
  /** Resolves after `delayMs` (a bounded wait, never a poll loop's substitute for an event). */
  sleep(delayMs: number): Promise<void>;
  /** Lets other work run: resolves after the I/O and timers that are due (setImmediate). */
  yieldToEvents(): Promise<void>;
}

interface SystemTimer extends Timer {
  readonly handle: NodeJS.Timeout;
  readonly repeat: boolean;
}

/** The system's clocks and Node's timers (unref'd: a pending timer never holds a process open). */
export const systemClock: Clock = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
  setTimeout(fn, delayMs) {
    const handle = setTimeout(fn, delayMs);
    handle.unref();
    return { kind: "timer", handle, repeat: false } satisfies SystemTimer;
  },
  setInterval(fn, periodMs) {
    const handle = setInterval(fn, periodMs);
    handle.unref();
    return { kind: "timer", handle, repeat: true } satisfies SystemTimer;
  },
  clear(timer) {
    if (timer === undefined) return;
    const { handle, repeat } = timer as SystemTimer;
    if (repeat) clearInterval(handle);
    else clearTimeout(handle);
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, delayMs)),
  yieldToEvents: () => new Promise((resolve) => setImmediate(resolve)),
};
