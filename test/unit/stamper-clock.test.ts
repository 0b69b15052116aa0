// Proves the clock behind `--write-time clock` (wallClockUs) against a fake Clock whose wall
// and monotonic clocks are stepped by hand: it follows the wall clock when that is ahead (NTP
// running it forward, a forward step, a VM suspend that the monotonic clock sleeps through),
// so a node running for weeks stays with the other nodes' clocks; and it never goes back when
// the wall clock steps back: it goes on from its last value on the monotonic clock until the
// wall clock catches up, then follows it again. A property test holds both over any schedule.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { Clock, Timer } from "../../src/node/clock.ts";
import { NodeStamper, wallClockUs } from "../../src/primary/stamper.ts";

const hourMs = 3_600_000;
const dayMs = 24 * hourMs;

/** A clock that moves only when told: `advance` moves both clocks, `stepWall` the wall clock alone. */
class SteppedClock implements Clock {
  private monotonicNowMs = 1_000;
  private wallNowMs = Date.UTC(2026, 0, 1);

  monotonicMs(): number {
    return this.monotonicNowMs;
  }
  wallMs(): number {
    return this.wallNowMs;
  }
  /** Real time passes: both clocks move (the wall clock `wallRate` times as fast, as NTP slews it). */
  advance(ms: number, wallRate = 1): void {
    this.monotonicNowMs += ms;
    this.wallNowMs += ms * wallRate;
  }
  /** A step of the wall clock alone (NTP step, date change, time a suspended VM missed). */
  stepWall(deltaMs: number): void {
    this.wallNowMs += deltaMs;
  }
  setTimeout(): Timer {
    throw new Error("no timers here");
  }
  setInterval(): Timer {
    throw new Error("no timers here");
  }
  clear(): void {
    // no timers
  }
  sleep(): Promise<void> {
    return Promise.reject(new Error("no timers here"));
  }
  yieldToEvents(): Promise<void> {
    return Promise.resolve();
  }
}

void test("a forward step of the wall clock, and time a suspended VM missed, reach the stamps", () => {
  const clock = new SteppedClock();
  const nowUs = wallClockUs(clock);
  assert.equal(nowUs(), clock.wallMs() * 1000);
  clock.advance(1_000);
  assert.equal(nowUs(), clock.wallMs() * 1000);
  clock.stepWall(hourMs); // NTP steps the clock forward an hour (it was behind)
  assert.equal(nowUs(), clock.wallMs() * 1000, "the stamp follows the wall clock forward (before: stayed an hour behind)");
  clock.stepWall(10 * 60_000); // the VM was suspended 10 minutes: the monotonic clock stood still
  clock.advance(5);
  assert.equal(nowUs(), clock.wallMs() * 1000, "and the time the monotonic clock slept through");
});

void test("a node running for weeks follows NTP's corrections of its wall clock", () => {
  const clock = new SteppedClock();
  const nowUs = wallClockUs(clock);
  // NTP runs the wall clock 500 ppm faster than the monotonic clock for three weeks.
  for (let day = 0; day < 21; day++) {
    clock.advance(dayMs, 1.0005);
    assert.equal(nowUs(), clock.wallMs() * 1000, `day ${day + 1}: the stamp is the wall clock`);
  }
  // Before: the wall clock read once at start and advanced by the monotonic clock, 15 minutes behind by now.
});

void test("a backward step: the stamp goes on from its last value on the monotonic clock, never back, until the wall clock catches up", () => {
  const clock = new SteppedClock();
  const nowUs = wallClockUs(clock);
  clock.advance(1_000);
  const beforeUs = nowUs();
  clock.stepWall(-hourMs);
  assert.equal(nowUs(), beforeUs, "no step back, no jump");
  clock.advance(250);
  assert.equal(nowUs(), beforeUs + 250_000, "it moves on with the monotonic clock (never frozen)");
  clock.advance(10_000);
  assert.equal(nowUs(), beforeUs + 10_250_000);
  const aheadUs = nowUs() - clock.wallMs() * 1000;
  assert.equal(aheadUs, hourMs * 1000, "an hour ahead of the wall clock, as it was before the step");
  // The wall clock is stepped forward again, to 2 s past where the stamp is: it follows.
  clock.stepWall(hourMs + 2_000);
  assert.equal(nowUs(), clock.wallMs() * 1000, "caught up: the wall clock again");
  clock.advance(100);
  assert.equal(nowUs(), clock.wallMs() * 1000);
  // A small step back (NTP corrects 80 ms), then the wall clock runs 1 % fast and catches up.
  const lastUs = nowUs();
  clock.stepWall(-80);
  assert.equal(nowUs(), lastUs);
  clock.advance(4_000, 1.01); // wall gains 40 ms: still 40 ms behind
  assert.equal(nowUs(), lastUs + 4_000_000);
  clock.advance(6_000, 1.01); // gains 60 ms more: 20 ms ahead
  assert.equal(nowUs(), clock.wallMs() * 1000, "the wall clock caught up by itself: followed again");
});

void test("write times under --write-time clock: a step back an hour never takes them back, a step forward moves them on", () => {
  const clock = new SteppedClock();
  const stamper = new NodeStamper("clock", wallClockUs(clock));
  const first = stamper.stamp(undefined).writeTimeUs;
  clock.stepWall(-hourMs);
  clock.advance(1);
  const second = stamper.stamp(undefined).writeTimeUs;
  assert.equal(second, first + 1_000, "on from the monotonic clock, 1 ms later");
  clock.stepWall(2 * hourMs);
  const third = stamper.stamp(undefined).writeTimeUs;
  assert.equal(third, clock.wallMs() * 1000, "the wall clock, an hour past the start");
});

void test("property: over any schedule of time passing and wall-clock steps, stamps never go back, are never behind the wall clock, and equal it whenever it is ahead of the monotonic run", () => {
  const event = fc.oneof(
    fc.record({ kind: fc.constant("advance" as const), ms: fc.double({ min: 0, max: 60_000, noNaN: true }), rate: fc.double({ min: 0.99, max: 1.01, noNaN: true }) }),
    fc.record({ kind: fc.constant("step" as const), ms: fc.integer({ min: -2 * hourMs, max: 2 * hourMs }) }),
  );
  fc.assert(fc.property(fc.array(event, { maxLength: 60 }), (events) => {
    const clock = new SteppedClock();
    const nowUs = wallClockUs(clock);
    let lastUs = nowUs();
    let lastMonotonicMs = clock.monotonicMs();
    for (const e of events) {
      if (e.kind === "advance") clock.advance(e.ms, e.rate);
      else clock.stepWall(e.ms);
      const stampUs = nowUs();
      const wallUs = Math.floor(clock.wallMs() * 1000);
      const runUs = lastUs + (clock.monotonicMs() - lastMonotonicMs) * 1000;
      assert.ok(stampUs >= lastUs, `never back: ${lastUs} -> ${stampUs}`);
      assert.ok(stampUs >= wallUs, "never behind the wall clock");
      // Ahead of the wall clock only by what the monotonic clock ran since the last stamp (µs rounding aside).
      if (stampUs > wallUs) assert.ok(stampUs <= runUs + 1, `${stampUs} is more than the monotonic run ${runUs}`);
      lastUs = stampUs;
      lastMonotonicMs = clock.monotonicMs();
    }
  }), { numRuns: 300 });
});
