// Awaiting on virtual time: the simulation's SimScheduler (scheduler.ts) plus what tests of code
// that completes through a Schedule (sim-disk.ts) need: run events until a promise settles, run
// everything there is. Between two events every continuation they released runs first, so a
// run is the same every time for the same seed.
import type { Schedule } from "./sim-disk.ts";
import { drainMicrotasks, SimScheduler } from "./scheduler.ts";

export class VirtualTime {
  readonly scheduler: SimScheduler;

  constructor(scheduler: SimScheduler = new SimScheduler()) {
    this.scheduler = scheduler;
  }

  get nowMs(): number {
    return this.scheduler.nowMs;
  }

  /** The scheduler as a Schedule (for SimDisk). */
  readonly schedule: Schedule = (delayMs, fn) => {
    this.scheduler.schedule(delayMs, fn);
  };

  /** Runs events until `durationMs` from now has passed (later events stay queued). */
  runFor(durationMs: number): Promise<void> {
    return this.scheduler.runFor(durationMs);
  }

  /** Runs events until `promise` settles; throws if it is still pending when no event is left (it never will settle). */
  async until<T>(promise: Promise<T>): Promise<T> {
    let settled = false;
    promise.then(() => { settled = true; }, () => { settled = true; });
    await drainMicrotasks();
    while (!settled) {
      const nextAtMs = this.scheduler.nextAtMs();
      if (nextAtMs === undefined) throw new Error(`virtual time ${this.nowMs} ms: waiting on a promise that no scheduled event can settle`);
      await this.scheduler.runUntilStopped(() => settled);
    }
    return promise;
  }

  /** Runs every event there is (and any they schedule). */
  async drain(): Promise<void> {
    for (let nextAtMs = this.scheduler.nextAtMs(); nextAtMs !== undefined; nextAtMs = this.scheduler.nextAtMs()) {
      await this.scheduler.runUntil(nextAtMs);
    }
  }
}
