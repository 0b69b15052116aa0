// Runs seeds in this thread, one after another (for a CPU profile of the simulation):
//   node --cpu-prof --cpu-prof-dir=/tmp/prof test/sim/profile-seeds.ts [from] [count]
import { runNodeSimulation } from "./node-world.ts";

const from = Number(process.argv[2] ?? "1");
const count = Number(process.argv[3] ?? "50");
const started = performance.now();
for (let seed = from; seed < from + count; seed += 1) {
  const result = await runNodeSimulation({ seed });
  if (!result.ok) console.log(`seed ${seed}: ${result.invariant} ${result.message.slice(0, 200)}`);
}
console.log(`${count} seeds in ${((performance.now() - started) / 1000).toFixed(1)} s`);
