// Virtual time for tests of code that completes through a Schedule (test/sim/sim-disk.ts):
// events run in (time, order of scheduling) order, and between two events every promise
// continuation they released runs first, so a run is the same every time for the same seed.
import type { Schedule } from "./sim-disk.ts";

interface Pending {
  readonly atMs: number;
  readonly order: number;
  readonly fn: () => void;
}

/** Lets every continuation already released run (setImmediate comes after the microtask queue). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class VirtualTime {
  private nowMsValue = 0;
  private order = 0;
  /** Sorted by (atMs, order). */
  private readonly queue: Pending[] = [];
  /** Events run so far. */
  eventsRun = 0;

  get nowMs(): number {
    return this.nowMsValue;
  }

  get pendingEvents(): number {
    return this.queue.length;
  }

  readonly schedule: Schedule = (delayMs, fn) => {
    const event: Pending = { atMs: this.nowMsValue + Math.max(0, delayMs), order: this.order++, fn };
    let at = this.queue.length;
    while (at > 0) {
      const before = this.queue[at - 1]!;
      if (before.atMs < event.atMs || (before.atMs === event.atMs && before.order < event.order)) break;
      at -= 1;
    }
    this.queue.splice(at, 0, event);
  };

  /** Runs the next event (after letting released continuations run); false if none is left. */
  async step(): Promise<boolean> {
    await settle();
    const event = this.queue.shift();
    if (event === undefined) return false;
    this.nowMsValue = event.atMs;
    this.eventsRun += 1;
    event.fn();
    await settle();
    return true;
  }

  /** Runs events until `durationMs` from now has passed (events later than that stay queued). */
  async runFor(durationMs: number): Promise<void> {
    const untilMs = this.nowMsValue + durationMs;
    for (;;) {
      await settle();
      const next = this.queue[0];
      if (next === undefined || next.atMs > untilMs) break;
      await this.step();
    }
    this.nowMsValue = Math.max(this.nowMsValue, untilMs);
  }

  /** Runs events until `promise` settles; throws if it is still pending when no event is left (it never will settle). */
  async until<T>(promise: Promise<T>): Promise<T> {
    let settled = false;
    promise.then(() => { settled = true; }, () => { settled = true; });
    for (;;) {
      await settle();
      if (settled) return promise;
      if (!(await this.step())) {
        await settle();
        if (settled) return promise;
        throw new Error(`virtual time ${this.nowMsValue} ms: waiting on a promise that no scheduled event can settle`);
      }
    }
  }

  /** Runs every event there is (and any they schedule). */
  async drain(): Promise<void> {
    while (await this.step()) {
      // next
    }
  }
}
