// Virtual time for the whole-node simulation (issue 7): every timer, disk completion and
// network delivery of the simulated world is an event at a virtual millisecond, run one at a
// time in (time, insertion) order, so one seed gives one schedule. Between events the real
// event loop runs only microtasks (the node's promise chains): a simulated node does no real
// I/O, so nothing else can happen in between, and the order is the same on every run.
import { setImmediate as realSetImmediate } from "node:timers";

interface SimEvent {
  readonly atMs: number;
  readonly order: number;
  readonly run: () => void;
  cancelled: boolean;
}

/** A binary heap ordered by (atMs, order). */
class EventHeap {
  private readonly items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  push(event: SimEvent): void {
    const items = this.items;
    items.push(event);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): SimEvent | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    items[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < items.length && before(items[left]!, items[smallest]!)) smallest = left;
      if (right < items.length && before(items[right]!, items[smallest]!)) smallest = right;
      if (smallest === i) break;
      [items[i], items[smallest]] = [items[smallest]!, items[i]!];
      i = smallest;
    }
    return top;
  }

  peek(): SimEvent | undefined {
    return this.items[0];
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

/** Lets every pending microtask (promise continuation) of the real event loop run. */
export function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve));
}

export class SimScheduler {
  private readonly heap = new EventHeap();
  private nowMsValue = 0;
  private nextOrder = 0;
  /** Events run so far. */
  eventsRun = 0;

  get nowMs(): number {
    return this.nowMsValue;
  }

  /** Runs `run` `delayMs` from now (never before now). Returns a handle for cancel(). */
  schedule(delayMs: number, run: () => void): { cancel(): void } {
    const event: SimEvent = { atMs: this.nowMsValue + Math.max(0, delayMs), order: this.nextOrder++, run, cancelled: false };
    this.heap.push(event);
    return { cancel: () => { event.cancelled = true; } };
  }

  /** The time of the next event, if any. */
  nextAtMs(): number | undefined {
    for (;;) {
      const top = this.heap.peek();
      if (top === undefined) return undefined;
      if (!top.cancelled) return top.atMs;
      this.heap.pop();
    }
  }

  /**
   * Runs events in order until virtual time would pass `untilMs` (or `stop()` says so after
   * an event), letting microtasks settle after each. Time then stands at untilMs.
   */
  async runUntil(untilMs: number, stop: () => boolean = () => false): Promise<void> {
    for (;;) {
      const next = this.nextAtMs();
      if (next === undefined || next > untilMs) break;
      const event = this.heap.pop();
      if (event === undefined) break;
      this.nowMsValue = event.atMs;
      this.eventsRun += 1;
      event.run();
      await drainMicrotasks();
      if (stop()) return;
    }
    this.nowMsValue = Math.max(this.nowMsValue, untilMs);
  }

  /** Runs for `durationMs` of virtual time. */
  runFor(durationMs: number, stop?: () => boolean): Promise<void> {
    return this.runUntil(this.nowMsValue + durationMs, stop);
  }
}
