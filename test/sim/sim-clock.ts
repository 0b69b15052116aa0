// The node's Clock over virtual time: the monotonic clock is the scheduler's, the wall clock
// is the scheduler's plus an offset the schedule steps (an NTP step, a VM resume), and timers
// are scheduler events. One per simulated node, so each node's wall clock steps on its own.
import type { Clock, Timer } from "../../src/node/clock.ts";
import type { SimScheduler } from "./scheduler.ts";

interface SimTimer extends Timer {
  handle: { cancel(): void } | undefined;
  cancelled: boolean;
}

/** Wall clock at virtual time 0: 2026-01-01, so stamps look like times. */
const wallOriginMs = Date.UTC(2026, 0, 1);

export class SimClock implements Clock {
  private readonly scheduler: SimScheduler;
  private wallOffsetMs = 0;
  /** Timers of this clock, so a crash of its node can drop them all. */
  private readonly timers = new Set<SimTimer>();
  /** The node is dead: timers it asks for never fire (its code must not run again). */
  private dead = false;

  constructor(scheduler: SimScheduler) {
    this.scheduler = scheduler;
  }

  monotonicMs(): number {
    return this.scheduler.nowMs;
  }

  wallMs(): number {
    return wallOriginMs + this.scheduler.nowMs + this.wallOffsetMs;
  }

  /** Steps the wall clock by `deltaMs` (negative: back); the monotonic clock does not move. */
  stepWall(deltaMs: number): void {
    this.wallOffsetMs += deltaMs;
  }

  setTimeout(fn: () => void, delayMs: number): Timer {
    const timer: SimTimer = { kind: "timer", handle: undefined, cancelled: this.dead };
    if (this.dead) return timer;
    timer.handle = this.scheduler.schedule(delayMs, () => {
      this.timers.delete(timer);
      if (!timer.cancelled) fn();
    });
    this.timers.add(timer);
    return timer;
  }

  setInterval(fn: () => void, periodMs: number): Timer {
    const timer: SimTimer = { kind: "timer", handle: undefined, cancelled: this.dead };
    if (this.dead) return timer;
    const period = Math.max(1, periodMs);
    const arm = (): void => {
      timer.handle = this.scheduler.schedule(period, () => {
        if (timer.cancelled) return;
        arm();
        fn();
      });
    };
    arm();
    this.timers.add(timer);
    return timer;
  }

  clear(timer: Timer | undefined): void {
    if (timer === undefined) return;
    const simTimer = timer as SimTimer;
    simTimer.cancelled = true;
    simTimer.handle?.cancel();
    this.timers.delete(simTimer);
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, delayMs));
  }

  yieldToEvents(): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, 0));
  }

  /** The node crashed: none of its timers fire any more. */
  stopAll(): void {
    this.dead = true;
    for (const timer of this.timers) {
      timer.cancelled = true;
      timer.handle?.cancel();
    }
    this.timers.clear();
  }
}
