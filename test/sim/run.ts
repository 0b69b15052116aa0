// `npm run sim`: the whole-node simulation (test/sim/node-world.ts) on worker threads.
//   --seeds N [--from F]   run seeds F..F+N-1 (default 1..100)
//   --seed S               replay one seed, single-threaded, and print what it did
//   --fault NAME           put back a historical fault (src/core/faults.ts): the run must fail
//   --faulty-ms MS         virtual ms of the faulty phase (default 3000)
//   --workers W            worker threads (default: the machine's cores)
//   --json                 as the last line, the run's event counts as one JSON object
// A failure prints the seed and the command that replays it; the exit status is then 1
// (with --fault, 0 when the fault was caught and 1 when it was not).
import { parseArgs } from "node:util";
import { historicalFaults, injectedFaults } from "../../src/core/faults.ts";
import { runNodeSimulation, type NodeSimResult } from "./node-world.ts";
import { isHistoricalFault, replayCommand, runSeeds } from "./runner.ts";

const { values } = parseArgs({
  options: {
    seeds: { type: "string" }, seed: { type: "string" }, from: { type: "string" }, fault: { type: "string" },
    "faulty-ms": { type: "string" }, workers: { type: "string" }, json: { type: "boolean" },
  },
});

const faultName = values.fault;
if (faultName !== undefined && !isHistoricalFault(faultName)) {
  console.error(`unknown --fault ${faultName}: use one of ${historicalFaults.join(", ")}`);
  process.exit(2);
}
const fault = faultName;
const faultyMs = values["faulty-ms"] === undefined ? undefined : Number(values["faulty-ms"]);

function describe(result: NodeSimResult): string {
  if (result.ok) return `seed ${result.seed}: ok (${result.counts.hostWrites} writes, ${result.counts.events} events, ${(result.counts.virtualMs / 1000).toFixed(1)} virtual s)\n  ${result.config}`;
  return `seed ${result.seed}: FAILED ${result.invariant} at ${(result.atMs / 1000).toFixed(3)} virtual s: ${result.message}\n  ${result.config}\n  replay: ${replayCommand(result.seed, fault, faultyMs)}`;
}

if (values.seed !== undefined) {
  if (fault !== undefined) injectedFaults.add(fault);
  const result = await runNodeSimulation({ seed: Number(values.seed), ...(faultyMs === undefined ? {} : { faultyMs }) });
  console.log(describe(result));
  if (values.json === true) console.log(JSON.stringify(result.counts));
  process.exitCode = result.ok === (fault === undefined) ? 0 : 1;
} else {
  const count = Number(values.seeds ?? "100");
  const from = Number(values.from ?? "1");
  let done = 0;
  const summary = await runSeeds({
    from, count, fault, faultyMs,
    ...(values.workers === undefined ? {} : { workers: Number(values.workers) }),
    failuresMax: fault === undefined ? 10 : 1,
    onResult: (result) => {
      done += 1;
      if (!result.ok) console.log(describe(result));
      if (done % 500 === 0) console.log(`${done} seeds...`);
    },
  });
  const s = summary.realMs / 1000;
  if (fault === undefined) {
    console.log(`${summary.seedsRun} seeds from ${from}: ${summary.failures.length} failed, ${s.toFixed(1)} s (${(summary.seedsRun / s).toFixed(1)} seeds/s)`);
    process.exitCode = summary.failures.length === 0 ? 0 : 1;
  } else {
    const caught = summary.failures[0];
    console.log(caught === undefined
      ? `--fault ${fault}: NOT caught in ${summary.seedsRun} seeds (${s.toFixed(1)} s)`
      : `--fault ${fault}: caught by seed ${caught.seed} (${caught.ok ? "" : caught.invariant}) after ${summary.seedsRun} seeds, ${s.toFixed(1)} s`);
    process.exitCode = caught === undefined ? 1 : 0;
  }
  if (values.json === true) console.log(JSON.stringify(summary.counts));
}
