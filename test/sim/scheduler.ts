// Virtual time for the whole-node simulation (issue 7): every timer, disk completion and
// network delivery of the simulated world is an event at a virtual millisecond, run one at a
// time in (time, insertion) order, so one seed gives one schedule. Between events the real
// event loop runs only microtasks (the node's promise chains): a simulated node does no real
// I/O, so nothing else can happen in between, and the order is the same on every run.
import { setImmediate as realSetImmediate } from "node:timers";

/** One event; its handle (cancel()) is the event itself. */
class SimEvent {
  readonly atMs: number;
  readonly order: number;
  readonly run: () => void;
  cancelled = false;

  constructor(atMs: number, order: number, run: () => void) {
    this.atMs = atMs;
    this.order = order;
    this.run = run;
  }

  cancel(): void {
    this.cancelled = true;
  }
}

/** A binary heap ordered by (atMs, order): `order` is unique, so the order of pops is fixed. */
class EventHeap {
  private readonly items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  push(event: SimEvent): void {
    const items = this.items;
    let i = items.length;
    items.push(event);
    while (i > 0) {
      const parentAt = (i - 1) >> 1;
      const parent = items[parentAt] as SimEvent;
      if (!before(event, parent)) break;
      items[i] = parent;
      i = parentAt;
    }
    items[i] = event;
  }

  pop(): SimEvent | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    const length = items.length;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= length) break;
      const right = left + 1;
      let child = left;
      let smallest = items[left] as SimEvent;
      if (right < length) {
        const r = items[right] as SimEvent;
        if (before(r, smallest)) {
          child = right;
          smallest = r;
        }
      }
      if (!before(smallest, last)) break;
      items[i] = smallest;
      i = child;
    }
    items[i] = last;
    return top;
  }

  peek(): SimEvent | undefined {
    return this.items[0];
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

/**
 * Node's own step between two setImmediate callbacks (runNextTicks: every microtask to the
 * end, then next ticks and unhandled rejections if there are any), what runs after each
 * event anyway when each has a callback of its own. Undocumented (Node 26 has it); where it
 * is missing, each event gets its own setImmediate.
 */
const tickCallback = (process as unknown as { _tickCallback?: () => void })._tickCallback;
/** Events run in one setImmediate callback before the real event loop gets a turn. */
const eventsPerImmediateMax = 1000;

/**
 * Runs every pending microtask now, as Node does after a macrotask callback; true if it did.
 * A no-op inside a microtask (V8 runs no checkpoint there): a sentinel queued last tells.
 */
function drainNow(): boolean {
  if (tickCallback === undefined) return false;
  sentinelRan = false;
  queueMicrotask(sentinel);
  tickCallback.call(process);
  return sentinelRan;
}

let sentinelRan = false;
const sentinel = (): void => {
  sentinelRan = true;
};

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
    const event = new SimEvent(this.nowMsValue + Math.max(0, delayMs), this.nextOrder++, run);
    this.heap.push(event);
    return event;
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
   *
   * Each event after the first runs in its own real setImmediate callback: Node runs every
   * microtask the previous one queued (and their own, to the end) before the next immediate,
   * which is what drainMicrotasks() between events did, without a promise per event.
   */
  runUntil(untilMs: number, stop: () => boolean = () => false): Promise<void> {
    return this.runEvents(untilMs, stop, true);
  }

  /**
   * Runs events in order until `stop()` says so after one, or none is left; time stays at the
   * last event's. The same as runUntil(nextAtMs(), stop) again and again while the next event
   * exists and stop() is false, without a promise per event.
   */
  runUntilStopped(stop: () => boolean): Promise<void> {
    return this.runEvents(Number.POSITIVE_INFINITY, stop, false);
  }

  private runEvents(untilMs: number, stop: () => boolean, advance: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let ranOne = false;
      // inMacrotask: called from a real setImmediate callback (not from a microtask), where the
      // microtasks an event queued can be run to the end before the next event (drainNow).
      const step = (inMacrotask: boolean): void => {
        for (let batch = 0; ; batch += 1) {
          if (ranOne && stop()) {
            resolve();
            return;
          }
          const next = this.nextAtMs();
          const event = next === undefined || next > untilMs ? undefined : this.heap.pop();
          if (event === undefined) {
            if (advance) this.nowMsValue = Math.max(this.nowMsValue, untilMs);
            resolve();
            return;
          }
          ranOne = true;
          this.nowMsValue = event.atMs;
          this.eventsRun += 1;
          try {
            event.run();
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
            return;
          }
          if (!inMacrotask || batch >= eventsPerImmediateMax || !drainNow()) {
            realSetImmediate(stepLater);
            return;
          }
        }
      };
      const stepLater = (): void => {
        step(true);
      };
      step(false);
    });
  }

  /** Runs for `durationMs` of virtual time. */
  runFor(durationMs: number, stop?: () => boolean): Promise<void> {
    return this.runUntil(this.nowMsValue + durationMs, stop);
  }
}
