// core/lag-history.ts: the node's lag samples for the dashboard's chart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LagHistory } from "../../src/core/lag-history.ts";

void test("lag history: at most samplesMax a pair, oldest first with their ages; a pair gone is forgotten; time only moves on", () => {
  const history = new LagHistory(3);
  for (let i = 0; i < 5; i++) {
    history.record(1_000 + i * 5_000, [
      { group: "b", role: "secondary", lagSeconds: i },
      ...(i < 4 ? [{ group: "a", role: "primary" as const, lagSeconds: Number.NaN }] : []),
    ]);
  }
  assert.deepEqual(history.view(21_500), [
    { group: "b", role: "secondary", samples: [{ agoMs: 10_500, lagSeconds: 2 }, { agoMs: 5_500, lagSeconds: 3 }, { agoMs: 500, lagSeconds: 4 }] },
  ], "a (not listed at the last sample) is gone; b keeps its last 3");
  history.record(21_000, [{ group: "a", role: "primary", lagSeconds: -1 }, { group: "b", role: "secondary", lagSeconds: 7 }]);
  assert.deepEqual(history.view(21_000).map((pair) => [pair.group, pair.samples.map((s) => s.lagSeconds)]), [["a", [0]], ["b", [3, 4, 7]]], "a starts again; nonsense lag reads 0; sorted by group");
  assert.throws(() => history.record(20_000, []), /monotonic/);
  assert.throws(() => new LagHistory(0), /at least one/);
});
