// Runs seeds of the whole-node simulation (node-world.ts) on worker threads, one seed at a
// time per worker, and sums their event counts. Used by `npm run sim` (run.ts) and by the
// unit test (test/unit/node-sim.test.ts). A worker runs each seed in a fresh world; a
// historical fault (src/core/faults.ts) is turned on in every worker for a --fault run.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { historicalFaults, type HistoricalFault } from "../../src/core/faults.ts";
import { emptyCounts, type EventCounts, type NodeSimResult } from "./node-world.ts";

export interface RunOptions {
  readonly from: number;
  readonly count: number;
  readonly workers?: number;
  readonly fault?: HistoricalFault;
  readonly faultyMs?: number;
  /** Stop handing out seeds after this many failures. */
  readonly failuresMax?: number;
  /** Stop handing out seeds after this long (real ms); the seeds started still finish. */
  readonly budgetMs?: number;
  readonly onResult?: (result: NodeSimResult) => void;
}

export interface RunSummary {
  readonly seedsRun: number;
  readonly failures: readonly NodeSimResult[];
  readonly counts: EventCounts;
  readonly realMs: number;
}

export function isHistoricalFault(name: string): name is HistoricalFault {
  return (historicalFaults as readonly string[]).includes(name);
}

/** Adds `b` into `a`, field by field (nested counts too). */
export function addCounts(a: EventCounts, b: EventCounts): void {
  const into = a as unknown as Record<string, number | Record<string, number>>;
  for (const [key, value] of Object.entries(b as unknown as Record<string, number | Record<string, number>>)) {
    const current = into[key];
    if (typeof value === "number" && typeof current === "number") into[key] = current + value;
    else if (typeof value === "object" && typeof current === "object") for (const [k, v] of Object.entries(value)) current[k] = (current[k] ?? 0) + v;
  }
}

/** The command that replays one seed. */
export function replayCommand(seed: number, fault: HistoricalFault | undefined, faultyMs: number | undefined): string {
  return `npm run sim -- --seed ${seed}${fault === undefined ? "" : ` --fault ${fault}`}${faultyMs === undefined ? "" : ` --faulty-ms ${faultyMs}`}`;
}

export async function runSeeds(options: RunOptions): Promise<RunSummary> {
  const started = performance.now();
  const workerCount = Math.max(1, Math.min(options.workers ?? availableParallelism(), options.count));
  const counts = emptyCounts();
  const failures: NodeSimResult[] = [];
  let next = options.from;
  const end = options.from + options.count;
  let seedsRun = 0;
  const more = (): boolean => next < end && failures.length < (options.failuresMax ?? 10) &&
    (options.budgetMs === undefined || performance.now() - started < options.budgetMs);
  const workers = Array.from({ length: workerCount }, () => new Worker(new URL("./worker.ts", import.meta.url), {
    workerData: { fault: options.fault, faultyMs: options.faultyMs },
  }));
  try {
    await Promise.all(workers.map((worker) => new Promise<void>((resolve, reject) => {
      const give = (): void => {
        if (!more()) {
          resolve();
          return;
        }
        worker.postMessage(next++);
      };
      worker.on("message", (result: NodeSimResult) => {
        seedsRun += 1;
        addCounts(counts, result.counts);
        if (!result.ok) failures.push(result);
        options.onResult?.(result);
        give();
      });
      worker.on("error", reject);
      give();
    })));
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return { seedsRun, failures, counts, realMs: performance.now() - started };
}
