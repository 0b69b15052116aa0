// Proves write-time stamping (Fig. 3, 10, 11) under each policy: host times are recorded
// and reused for writes without one, the clock and counter policies behave as the patent
// says, and for any sequence of inputs times never go back and accept numbers strictly rise.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { initialWriteTimeState, mergeWriteTimeState, stampWrite, type WriteTimeState } from "../../src/core/stamp.ts";
import { asAcceptNumber, asWriteTimeUs, type WriteTimePolicy } from "../../src/core/types.ts";

function run(policy: WriteTimePolicy, inputs: { nowUs: number; hostWriteTimeUs?: number }[], start: WriteTimeState = initialWriteTimeState) {
  let state = start;
  return inputs.map((input) => {
    const result = stampWrite(state, { policy, ...input });
    state = result.state;
    return result.stamp;
  });
}

test("host policy: a host time is recorded; writes without one get the recorded time (Fig. 3)", () => {
  const stamps = run("host", [{ nowUs: 0, hostWriteTimeUs: 1000 }, { nowUs: 0 }, { nowUs: 0, hostWriteTimeUs: 2000 }, { nowUs: 0 }]);
  assert.deepEqual(stamps.map((s) => s.writeTimeUs), [1000, 1000, 2000, 2000]);
  assert.deepEqual(stamps.map((s) => s.acceptNumber), [1, 2, 3, 4]);
});

test("host policy: a host time behind the recorded one is raised, and says so", () => {
  const stamps = run("host", [{ nowUs: 0, hostWriteTimeUs: 5000 }, { nowUs: 0, hostWriteTimeUs: 4000 }]);
  assert.equal(stamps[1]!.writeTimeUs, 5000);
  assert.equal(stamps[1]!.hostTimeRaised, true);
  assert.equal(stamps[0]!.hostTimeRaised, false);
});

test("clock policy: the node's clock, never going back when the clock steps back (Fig. 10)", () => {
  const stamps = run("clock", [{ nowUs: 100 }, { nowUs: 250 }, { nowUs: 90 }, { nowUs: 300, hostWriteTimeUs: 1 }]);
  assert.deepEqual(stamps.map((s) => s.writeTimeUs), [100, 250, 250, 300]);
});

test("counter policy: a node-wide counter from the recorded value, host times ignored (Fig. 11)", () => {
  const stamps = run("counter", [{ nowUs: 5 }, { nowUs: 5, hostWriteTimeUs: 99999 }, { nowUs: 5 }], {
    recordedWriteTimeUs: asWriteTimeUs(41),
    lastAcceptNumber: asAcceptNumber(7),
  });
  assert.deepEqual(stamps.map((s) => s.writeTimeUs), [42, 43, 44]);
  assert.deepEqual(stamps.map((s) => s.acceptNumber), [8, 9, 10]);
});

test("property: under every policy, write times never go back and accept numbers strictly increase", () => {
  const input = fc.record({
    nowUs: fc.integer({ min: 0, max: 2 ** 40 }),
    hostWriteTimeUs: fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: undefined }),
  });
  fc.assert(
    fc.property(fc.constantFrom<WriteTimePolicy>("host", "clock", "counter"), fc.array(input, { maxLength: 200 }), (policy, inputs) => {
      const stamps = run(policy, inputs);
      for (let i = 1; i < stamps.length; i++) {
        assert.ok(stamps[i]!.writeTimeUs >= stamps[i - 1]!.writeTimeUs);
        assert.equal(stamps[i]!.acceptNumber, stamps[i - 1]!.acceptNumber + 1);
      }
    }),
  );
});

test("recovery merge takes the larger of each field", () => {
  const merged = mergeWriteTimeState(
    { recordedWriteTimeUs: asWriteTimeUs(10), lastAcceptNumber: asAcceptNumber(50) },
    { recordedWriteTimeUs: asWriteTimeUs(20), lastAcceptNumber: asAcceptNumber(5) },
  );
  assert.deepEqual(merged, { recordedWriteTimeUs: 20, lastAcceptNumber: 50 });
});
