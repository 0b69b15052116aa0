// One simulation worker thread: runs the seeds it is sent, one at a time, and posts each result.
import { parentPort, workerData } from "node:worker_threads";
import { injectedFaults, type HistoricalFault } from "../../src/core/faults.ts";
import { runNodeSimulation } from "./node-world.ts";

const data = workerData as { fault?: HistoricalFault; faultyMs?: number };
if (data.fault !== undefined) injectedFaults.add(data.fault);
const port = parentPort;
if (port === null) throw new Error("worker.ts runs as a worker thread");
port.on("message", (seed: number) => {
  void runNodeSimulation({ seed, ...(data.faultyMs === undefined ? {} : { faultyMs: data.faultyMs }) }).then((result) => port.postMessage(result));
});
