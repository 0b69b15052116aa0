// The simulation's command line: `npm run sim -- --seeds N` runs seeds 1..N (or from
// --from), `--seed S` replays one seed and prints its statistics. A failure prints the
// seed and the command that replays it, and the exit status is 1.
import { parseArgs } from "node:util";
import { runSimulation, type ReflectorFault } from "./world.ts";

const { values } = parseArgs({
  options: {
    seeds: { type: "string" },
    seed: { type: "string" },
    from: { type: "string" },
    ticks: { type: "string" },
    fault: { type: "string" },
  },
});

const fault = (values.fault ?? "none") as ReflectorFault;
if (!["none", "time-only-frontier", "ignore-gaps", "skip-recovery-replay"].includes(fault)) {
  console.error(`unknown --fault ${fault}: use none, time-only-frontier, ignore-gaps or skip-recovery-replay`);
  process.exit(2);
}
const faultyTicks = values.ticks === undefined ? undefined : Number(values.ticks);
const replay = (seed: number): string =>
  `npm run sim -- --seed ${seed}${values.ticks === undefined ? "" : ` --ticks ${values.ticks}`}${fault === "none" ? "" : ` --fault ${fault}`}`;

if (values.seed !== undefined) {
  const seed = Number(values.seed);
  const started = performance.now();
  const result = runSimulation({ seed, faultyTicks, fault });
  const ms = performance.now() - started;
  if (result.ok) {
    console.log(`seed ${seed}: ok in ${result.ticks} ticks, ${ms.toFixed(0)} ms\n  ${result.config}\n  ${JSON.stringify(result.stats)}`);
  } else {
    console.log(`seed ${seed}: FAILED ${result.invariant} at tick ${result.tick}: ${result.message}\n  ${result.config}\n  replay: ${replay(seed)}`);
    process.exitCode = 1;
  }
} else {
  const count = Number(values.seeds ?? "100");
  const from = Number(values.from ?? "1");
  const started = performance.now();
  let failures = 0;
  for (let seed = from; seed < from + count; seed += 1) {
    const result = runSimulation({ seed, faultyTicks, fault });
    if (!result.ok) {
      failures += 1;
      console.log(`seed ${seed}: FAILED ${result.invariant} at tick ${result.tick}: ${result.message}\n  ${result.config}\n  replay: ${replay(seed)}`);
      if (failures >= 10) break;
    }
    if ((seed - from + 1) % 1000 === 0) console.log(`${seed - from + 1} seeds, ${failures} failed, ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  const s = (performance.now() - started) / 1000;
  console.log(`${count} seeds from ${from}: ${failures} failed, ${s.toFixed(1)} s (${(count / s).toFixed(1)} seeds/s)`);
  if (failures > 0) process.exitCode = 1;
}
