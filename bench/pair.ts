// Benchmark of an active pair (remote copy to a second node on loopback), in one run:
//  1. 4 KiB random write IOPS at QD32 on the primary with the pair replicating, against
//     nbdkit's file plugin measured in the same run;
//  2. replication lag under steady load at half that rate: the age of the oldest write the
//     secondary has not reflected yet, sampled every 50 ms (p50 / p99 / max);
//  3. the time to drain after the load stops, and the secondary's apply rate against the
//     primary's ingest rate at full load;
//  4. the primary's RSS while the secondary is stopped (SIGSTOP) under load, then catch-up.
// Knobs: BENCH_SECONDS (default 15), BENCH_OUTAGE_SECONDS (default 60), BENCH_SIZE (default 1G).
import fs from "node:fs";
import path from "node:path";
import { cleanupAll, cliOk, freePort, mgmtJson, run, sleep, spawnDaemon, startNode, tmpDir, type RunningNode } from "../test/e2e/harness.ts";
import { fioArgs, runFio, workloads, type Workload } from "./fio.ts";
import type { PairInfo } from "../src/mgmt/control.ts";

const seconds = Number(process.env.BENCH_SECONDS ?? 15);
const outageSeconds = Number(process.env.BENCH_OUTAGE_SECONDS ?? 60);
const sizeText = process.env.BENCH_SIZE ?? "1G";
const sizeBytes = parseSize(sizeText);
const lagSampleMs = 50;


function parseSize(text: string): number {
  const match = /^(\d+)([KMGT]?)$/i.exec(text);
  if (match === null) throw new Error(`BENCH_SIZE ${text} is not a size`);
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[(match[2] ?? "").toUpperCase()] ?? 1;
  return Number(match[1]) * unit;
}

function rssBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB$`, "m").exec(status);
  return match?.[1] === undefined ? 0 : Number(match[1]) * 1024;
}

async function fio(uri: string, workload: Workload, runtimeSeconds: number, cwd: string, extra: readonly string[] = []): Promise<{ iops: number; p99Us: number }> {
  const args = [...fioArgs({ uri, workload, sizeBytes, runtimeSeconds, rampSeconds: 2, cwd }), ...extra];
  const result = await run("fio", args, { timeoutMs: (runtimeSeconds + 60) * 1000, cwd });
  const start = result.stdout.indexOf("{");
  if (result.code !== 0 || start < 0) throw new Error(`fio failed: ${result.stderr.trim()}`);
  const report = JSON.parse(result.stdout.slice(start)) as { jobs: { write: { iops: number; clat_ns?: { percentile?: Record<string, number> } } }[] };
  const write = report.jobs[0]?.write;
  if (write === undefined) throw new Error("fio report has no job");
  return { iops: write.iops, p99Us: (write.clat_ns?.percentile?.["99.000000"] ?? 0) / 1000 };
}

async function pairStatus(node: RunningNode, group: string): Promise<PairInfo> {
  return (await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`)) as PairInfo;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function main(): Promise<void> {
  const dir = await tmpDir("tidemark-bench-pair-");
  const randwrite = workloads.find((w) => w.rw === "randwrite");
  if (randwrite === undefined) throw new Error("no randwrite workload");
  const log = (line: string): void => void process.stderr.write(`bench-pair: ${line}\n`);

  // nbdkit on a plain file, same machine, same run.
  const plain = path.join(dir, "plain.img");
  fs.writeFileSync(plain, "");
  fs.truncateSync(plain, sizeBytes);
  const nbdkitPort = await freePort();
  spawnDaemon("nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(nbdkitPort), "file", `file=${plain}`, "cache=default"], path.join(dir, "nbdkit.log"));
  await sleep(500);

  const primary = await startNode({ id: "A", writeTime: "clock" });
  const secondary = await startNode({ id: "B" });
  await cliOk(["volume", "create", "bench", "--size", sizeText], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g-bench", "--volumes", "bench"], { node: primary.mgmtUrl });
  // As bench/run.ts does: every target is filled once with 1 MiB sequential writes before
  // the timed runs, so both measure writes over allocated, cached data (a volume worth
  // replicating holds data), and the initial copy then has real data to send.
  const sequential = workloads.find((w) => w.rw === "write");
  if (sequential === undefined) throw new Error("no sequential write workload");
  log("prefilling nbdkit's file and the primary volume with 1 MiB sequential writes ...");
  await runFio({ uri: `nbd://127.0.0.1:${nbdkitPort}/`, workload: sequential, sizeBytes, runtimeSeconds: 0, rampSeconds: 0, cwd: dir });
  await runFio({ uri: primary.nbdUri("bench"), workload: sequential, sizeBytes, runtimeSeconds: 0, rampSeconds: 0, cwd: dir });
  log("initial copy ...");
  await cliOk(["pair", "create", "g-bench", "--to", secondary.mgmtUrl], { node: primary.mgmtUrl, timeoutMs: 600_000 });
  const uri = primary.nbdUri("bench");

  await run("sync", []);
  log(`4 KiB random write QD32, ${seconds} s each: nbdkit, then tidemark with the pair active`);
  const nbdkitFigures = await fio(`nbd://127.0.0.1:${nbdkitPort}/`, randwrite, seconds, dir);
  const before = await pairStatus(primary, "g-bench");
  const startMs = Date.now();
  const full = await fio(uri, randwrite, seconds, dir);
  const elapsedS = (Date.now() - startMs) / 1000;
  const atEnd = await pairStatus(primary, "g-bench");
  const ingestPerS = (atEnd.acceptedSequence - before.acceptedSequence) / elapsedS;
  const applyPerS = (atEnd.reflectedSequence - before.reflectedSequence) / elapsedS;
  const drainStart = Date.now();
  for (;;) {
    const status = await pairStatus(primary, "g-bench");
    if (status.reflectedSequence >= atEnd.acceptedSequence) break;
    if (Date.now() - drainStart > 600_000) throw new Error("did not drain in 10 minutes");
    await sleep(20);
  }
  const drainS = (Date.now() - drainStart) / 1000;

  const halfRate = Math.max(100, Math.floor(full.iops / 2));
  log(`steady load at ${halfRate} IOPS (half the maximum) for ${seconds} s, sampling the lag every ${lagSampleMs} ms`);
  const lags: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const status = await pairStatus(primary, "g-bench");
      lags.push(status.lagSeconds * 1000);
      await sleep(lagSampleMs);
    }
  })();
  await fio(uri, randwrite, seconds, dir, [`--rate_iops=${halfRate}`]);
  sampling = false;
  await sampler;
  lags.sort((a, b) => a - b);

  log(`secondary stopped (SIGSTOP) for ${outageSeconds} s under load at ${halfRate} IOPS; sampling the primary's RSS`);
  const rssSamples: number[] = [];
  process.kill(secondary.pid, "SIGSTOP");
  let outage = true;
  const rssSampler = (async () => {
    while (outage) {
      rssSamples.push(rssBytes(primary.pid, "VmRSS"));
      await sleep(1000);
    }
  })();
  await fio(uri, randwrite, outageSeconds, dir, [`--rate_iops=${halfRate}`]);
  outage = false;
  await rssSampler;
  const duringOutage = await pairStatus(primary, "g-bench");
  process.kill(secondary.pid, "SIGCONT");
  const catchUpStart = Date.now();
  for (;;) {
    const status = await pairStatus(primary, "g-bench");
    if (status.reflectedSequence >= duringOutage.acceptedSequence) break;
    if (Date.now() - catchUpStart > 900_000) throw new Error("did not catch up in 15 minutes");
    await sleep(100);
  }
  const catchUpS = (Date.now() - catchUpStart) / 1000;
  const rssMaxMiB = Math.max(...rssSamples) / 1024 / 1024;
  const rssFirstMiB = (rssSamples[0] ?? 0) / 1024 / 1024;

  const table = [
    "| figure | value |",
    "|---|---|",
    `| 4 KiB randwrite QD32, nbdkit (no replication) | ${nbdkitFigures.iops.toFixed(0)} IOPS |`,
    `| 4 KiB randwrite QD32, tidemark with an active pair | ${full.iops.toFixed(0)} IOPS (p99 ${(full.p99Us / 1000).toFixed(2)} ms) |`,
    `| ratio tidemark-with-pair / nbdkit | ${(full.iops / nbdkitFigures.iops).toFixed(2)}x |`,
    `| primary ingest rate at full load | ${ingestPerS.toFixed(0)} records/s |`,
    `| secondary apply rate at full load | ${applyPerS.toFixed(0)} records/s (${(applyPerS / Math.max(1, ingestPerS)).toFixed(2)}x ingest) |`,
    `| drain after load stops | ${drainS.toFixed(2)} s |`,
    `| lag at ${halfRate} IOPS (half max): p50 / p99 / max | ${percentile(lags, 50).toFixed(0)} / ${percentile(lags, 99).toFixed(0)} / ${(lags[lags.length - 1] ?? 0).toFixed(0)} ms (${lags.length} samples) |`,
    `| primary RSS with the secondary stopped ${outageSeconds} s | first ${rssFirstMiB.toFixed(0)} MiB, max ${rssMaxMiB.toFixed(0)} MiB; backlog ${duringOutage.lagRecords} records, journal ${(duringOutage.journalBytes / 1024 / 1024).toFixed(0)} MiB |`,
    `| catch-up after the outage | ${catchUpS.toFixed(1)} s |`,
  ].join("\n");
  process.stdout.write(`\n## Active pair (secondary on loopback), ${seconds} s runs\n\n${table}\n\n`);
  fs.mkdirSync(".bench-out", { recursive: true });
  fs.writeFileSync(path.join(".bench-out", "pair.md"), table + "\n");
  await primary.stop();
  await secondary.stop();
}

try {
  await main();
} finally {
  await cleanupAll();
}
