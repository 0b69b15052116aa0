// The whole-node simulation (test/sim/node-world.ts) in every test run: two real nodes
// (src/node's TidemarkNode, the code production runs) over a simulated disk, network and
// clocks, with crashes, power losses, full disks, I/O errors, partitions, silent streams and
// clock steps, checked for I1 (dependent-write consistency), I3 (nothing flushed lost) and
// I4 (convergence, equal images) — thousands of seeds, bounded in time. It also proves the
// checker can fail: each historical fault (src/core/faults.ts), put back, is caught; and a
// seed replays exactly. `npm run sim -- --seed N` replays a failing seed with its trace.
import { test } from "node:test";
import assert from "node:assert/strict";
import { historicalFaults } from "../../src/core/faults.ts";
import { runNodeSimulation, type NodeSimResult } from "../sim/node-world.ts";
import { replayCommand, runSeeds } from "../sim/runner.ts";

// 2000 seeds take about a minute on a quiet 2-core machine (some 40 ms of CPU a seed); a loaded
// one stops handing out seeds after the budget (never fewer than seedsMin). Widen with
// `npm run sim -- --seeds 20000`.
const seedsTarget = Number(process.env.TM_SIM_SEEDS ?? "2000");
const budgetMs = Number(process.env.TM_SIM_BUDGET_MS ?? "150000");
const seedsMin = 300;
// A fixed first seed keeps CI reproducible; TM_SIM_FIRST_SEED moves the window.
const firstSeed = Number(process.env.TM_SIM_FIRST_SEED ?? "1");

function failureText(result: NodeSimResult): string {
  if (result.ok) return `seed ${result.seed}: ok`;
  return `seed ${result.seed} broke ${result.invariant} at ${(result.atMs / 1000).toFixed(3)} virtual s: ${result.message}\n  ${result.config}\n  replay: ${replayCommand(result.seed, undefined, undefined)}`;
}

void test(`whole-node simulation: I1, I3 and I4 hold over ${seedsTarget} seeds (at most ${budgetMs / 1000} s)`, async () => {
  const summary = await runSeeds({ from: firstSeed, count: seedsTarget, budgetMs, failuresMax: 3 });
  assert.deepEqual(summary.failures.map(failureText), []);
  assert.ok(summary.seedsRun >= seedsMin, `only ${summary.seedsRun} seeds ran within ${budgetMs} ms (at least ${seedsMin})`);
  const c = summary.counts;
  // The schedules really did what they claim (a generator that stopped injecting faults would pass anything).
  for (const [what, n] of Object.entries({ hostWrites: c.hostWrites, flushes: c.flushes, initialCopies: c.initialCopies, takeovers: c.takeovers, suspends: c.suspends,
    primaryRestarts: c.restarts.primary, secondaryRestarts: c.restarts.secondary, primaryPowerLosses: c.powerLosses.primary, secondaryPowerLosses: c.powerLosses.secondary,
    streamCuts: c.streamCuts, silentStreams: c.silentStreams, partitions: c.partitions, clockSteps: c.clockSteps, groupStops: c.groupStops, pullPairs: c.pullPairs,
    takeoversMidRun: c.takeoversMidRun, partialTakeovers: c.partialTakeovers, takeoverCrashes: c.takeoverCrashes, takeoversRefused: c.takeoversRefused,
    detaches: c.detaches, attaches: c.attaches, domainSuspends: c.domainSuspends, latePairDisasters: c.latePairDisasters, takeoversRefusedJoinPending: c.takeoversRefusedJoinPending })) {
    assert.ok(n > 0, `no ${what} in ${summary.seedsRun} seeds`);
  }
  console.log(`# whole-node simulation: ${summary.seedsRun} seeds from ${firstSeed} in ${(summary.realMs / 1000).toFixed(1)} s; ${JSON.stringify(c)}`);
});

// Seeds that once failed, each for a bug since fixed (the commit that fixed it names the seed).
// The schedule a seed makes depends on the code, so these keep the exact cases only while it
// stays close; the window above is what keeps the kinds covered.
for (const seed of [20, 136, 209, 869, 1267, 1331, 1354, 1829, 1875, 1978, 1985, 637, 3255, 3700, 6300, 15167, 59474, 1411, 9947, 7422, 8904, 5060, 10358, 11241, 8050, 9410]) {
  void test(`whole-node simulation: seed ${seed}, once a failure, holds`, async () => {
    const result = await runNodeSimulation({ seed });
    assert.ok(result.ok, failureText(result));
  });
}

// Every historical fault, put back, must be caught. Most are caught within the first few
// dozen seeds. The rarer ones need a narrow window (a stop while records wait past a gap, a
// crash between two saves), and scanning 2,000 seeds for each would take minutes, so the
// test starts at the seed that caught it when it was added. A change to the schedule or the
// node moves these seeds: `npm run sim -- --fault NAME --seeds 2000 [--from N]` finds the new one.
const firstCatchingSeed: Partial<Record<(typeof historicalFaults)[number], number>> = {
  // The resize step (issue 9, volume resize, on three seeds in ten) moved its window: caught by seed 30 (was 534).
  "wall-clock-time-advance": 30,
  // Issue 8's domain steps (detach/attach, a domain suspended together, a late pair then the
  // primary lost) moved the schedule: join-before-checkpoint is caught by seed 12 (was 697).
  "join-before-checkpoint": 12,
};
// Faults whose window the simulation's schedule reaches rarely, or no longer within a bounded
// scan: their first catching seed moved with every change to the schedule (so this test kept
// breaking), and a deterministic test elsewhere puts each back in the exact situation and shows
// that it is caught. `npm run sim -- --fault NAME --seeds 2000` must still catch each (issue 7).
const caughtElsewhere: Partial<Record<(typeof historicalFaults)[number], string>> = {
  // Seed 15167 found it; with the lifecycle machines the schedule moved and 20,000 seeds miss it.
  "resume-keeps-last-write-sequence": "test/unit/storage-faults.test.ts",
  // Seed 59474 found it (the first seed past 20,000 to fail without any fault put back).
  "checkpoint-error-keeps-group": "test/unit/storage-faults.test.ts",
  // Seed 1985 found it; its window (a power loss while recovery replays) moved past 1287..1486 with
  // the takeover's fenced groups reflecting earlier (seed 8050's fix).
  "replay-before-durable": "test/unit/journal-sim.test.ts",
  // Seed 3255 found it (caught by 460, 6865, then 5477 as the schedule moved): the domain's machine refuses the join.
  "join-past-stopped-member": "test/unit/consistency-domain.test.ts",
  // Seeds 5060, 10358 and 11241 found it (a detach then an attach within milliseconds; caught by 838 since).
  "join-cut-before-hold": "test/unit/consistency-domain.test.ts",
  // Seed 1267 found it (caught by 2349 since): a restart between a checkpoint's save and its trim.
  "no-trim-at-start": "test/unit/secondary-faults.test.ts",
  // Seeds 869, 1354 and 1875 found it (caught by 671 since): records answered as received lost to a failed fdatasync.
  "silent-received-loss": "test/unit/secondary-faults.test.ts",
  // Seed 8050 found it (caught by 2736 since): a takeover of part of a domain, one group fenced long before the other.
  "fenced-group-holds-frontier": "test/unit/secondary-faults.test.ts",
};
for (const fault of historicalFaults.filter((f) => caughtElsewhere[f] === undefined)) {
  void test(`whole-node simulation: the checker catches the historical fault ${fault}`, async () => {
    const from = firstCatchingSeed[fault] ?? 1;
    const summary = await runSeeds({ from, count: 200, fault, failuresMax: 1 });
    assert.ok(summary.failures.length > 0, `${fault} was not caught in seeds ${from}..${from + summary.seedsRun - 1}: find the seed that catches it now with npm run sim -- --fault ${fault} --seeds 2000`);
  });
}

void test("whole-node simulation: a seed replays exactly (same events, same images)", async () => {
  const a = await runNodeSimulation({ seed: 4242, imagesDigest: true });
  const b = await runNodeSimulation({ seed: 4242, imagesDigest: true });
  assert.ok(a.ok && b.ok, `${failureText(a)}\n${failureText(b)}`);
  assert.deepEqual({ counts: a.counts, digest: a.imagesDigest, config: a.config }, { counts: b.counts, digest: b.imagesDigest, config: b.config });
  assert.ok(a.counts.hostWrites > 0 && a.imagesDigest !== undefined);
});
