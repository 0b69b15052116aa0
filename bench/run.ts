// `npm run bench`: fio's nbd engine against tidemark (a volume in a group, so every write goes
// through the journal), nbdkit's file plugin and qemu-nbd on plain files, in one run on 127.0.0.1,
// data on the same filesystem. Prints a markdown table and saves it (and fio's JSON) to .bench-out/.
//
// Environment: BENCH_SECONDS (default 15) and BENCH_RAMP_SECONDS (default 3) per workload;
// BENCH_SIZE (default 1G); BENCH_TARGETS (default tidemark,nbdkit,qemu-nbd);
// BENCH_WORKLOADS (default all: randwrite-4k-qd32,write-1m-qd8,randread-4k-qd32);
// BENCH_PREFILL=0 skips writing every target once before the timed runs; BENCH_REPEAT (default 1)
// runs every workload that many times per target (in turn) and reports the median; BENCH_NODE_ARGS passes
// runtime flags to tidemark's node process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof");
// BENCH_BASELINE=DIR adds target "baseline": the tidemark of another checkout (an earlier
// commit), run in turn with the others, for before/after figures from one run.
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import {
  cleanupAll, cliOk, freePort, nodeBin, repoRoot, run, spawnDaemon, startNode, tmpDir, whichTool,
} from "../test/e2e/harness.ts";
import { runFio, workloads, type FioFigures, type Workload } from "./fio.ts";

const exportName = "bench";
const readyTimeoutMs = 15_000;

interface Server {
  readonly uri: string;
  readonly pid: number;
  /** Command line, for the report. */
  readonly command: string;
  peakRssBytes(): number | null;
}

/** CPU time (user + system, all threads) a live process has used so far, in µs. */
function cpuTimeUs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command (which may hold spaces) start past the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
    return Number.isFinite(ticks) ? (ticks * 1e6) / clockTicksPerSecond : null;
  } catch {
    return null;
  }
}
/** USER_HZ: 100 on every Linux this runs on. */
const clockTicksPerSecond = 100;

interface Target {
  readonly name: string;
  start(dir: string, sizeBytes: number): Promise<Server>;
}

function envNumber(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number, got "${text}"`);
  return value;
}

function parseSize(text: string): number {
  const match = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  if (match === null) throw new Error(`bad size "${text}" (use e.g. 1G, 512M)`);
  const powers: Record<string, number> = { "": 0, K: 1, M: 2, G: 3, T: 4 };
  return Number(match[1]) * 1024 ** (powers[(match[2] ?? "").toUpperCase()] ?? 0);
}

/** VmHWM (peak resident set) of a live process, in bytes. */
function peakRss(pid: number): number | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
    return match?.[1] === undefined ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

async function waitNbdReady(uri: string, logFile: string): Promise<void> {
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    const probe = await run("nbdinfo", ["--size", uri], { timeoutMs: 5_000 });
    if (probe.code === 0) return;
    if (Date.now() > deadline) throw new Error(`${uri} not ready: ${probe.stderr.trim()}\n${fs.readFileSync(logFile, "utf8")}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function plainFile(dir: string, sizeBytes: number): Promise<string> {
  const file = path.join(dir, "disk.raw");
  await fsp.writeFile(file, "");
  await fsp.truncate(file, sizeBytes);
  return file;
}

/** tidemark from `checkout` (default: this one), its node run by this checkout's Node. */
function tidemarkTarget(name: string, checkout?: string): Target {
  return {
    name,
    async start(_dir, sizeBytes) {
      // A process title of its own: on a shared machine, a `pkill -f "tidemark.js node"` meant for
      // someone else's nodes must not stop the benchmark's.
      const nodeArgs = ["--title=tidemark-bench-node", ...(process.env.BENCH_NODE_ARGS ?? "").split(" ").filter((arg) => arg !== "")];
      const node = await startNode({ id: "bench", nodeArgs, ...(checkout === undefined ? {} : { tidemarkBin: path.join(checkout, "bin", "tidemark.js") }) });
      await cliOk(["volume", "create", exportName, "--size", String(sizeBytes)], { node: node.mgmtUrl });
      await cliOk(["group", "create", "g-bench", "--volumes", exportName], { node: node.mgmtUrl });
      return {
        uri: node.nbdUri(exportName),
        pid: node.pid,
        command: `tidemark node${checkout === undefined ? "" : ` of ${checkout}`} (volume "${exportName}" in group "g-bench", write-time host)`,
        peakRssBytes: () => peakRss(node.pid),
      };
    },
  };
}

const tidemark = tidemarkTarget("tidemark");
/** BENCH_BASELINE=DIR: a checkout of an earlier commit (its own node_modules), run as target "baseline" in turn with the others, so before and after meet the same machine. */
const baselineCheckout = process.env.BENCH_BASELINE;

// Same semantics as tidemark's NBD export: page cache (no O_DIRECT), writeback, FLUSH = fdatasync.
const nbdkit: Target = {
  name: "nbdkit",
  async start(dir, sizeBytes) {
    const file = await plainFile(dir, sizeBytes);
    const port = await freePort();
    const args = ["-f", "-i", "127.0.0.1", "-p", String(port), "file", `file=${file}`, "cache=default"];
    const logFile = path.join(dir, "nbdkit.log");
    const daemon = spawnDaemon("nbdkit", args, logFile);
    const uri = `nbd://127.0.0.1:${port}/${exportName}`;
    await waitNbdReady(uri, logFile);
    return { uri, pid: daemon.pid, command: `nbdkit ${args.join(" ")}`, peakRssBytes: () => peakRss(daemon.pid) };
  },
};

const qemuNbd: Target = {
  name: "qemu-nbd",
  async start(dir, sizeBytes) {
    const file = await plainFile(dir, sizeBytes);
    const port = await freePort();
    const args = [
      "-f", "raw", "-x", exportName, "-t", "-b", "127.0.0.1", "-p", String(port),
      "--cache=writeback", "--aio=threads", "--shared=8", file,
    ];
    const logFile = path.join(dir, "qemu-nbd.log");
    const daemon = spawnDaemon("qemu-nbd", args, logFile);
    const uri = `nbd://127.0.0.1:${port}/${exportName}`;
    await waitNbdReady(uri, logFile);
    return { uri, pid: daemon.pid, command: `qemu-nbd ${args.join(" ")}`, peakRssBytes: () => peakRss(daemon.pid) };
  },
};

const allTargets: readonly Target[] = [tidemark, ...(baselineCheckout === undefined || baselineCheckout === "" ? [] : [tidemarkTarget("baseline", baselineCheckout)]), nbdkit, qemuNbd];

function pick<T extends { readonly name: string }>(all: readonly T[], envName: string): T[] {
  const text = process.env[envName];
  if (text === undefined || text === "") return [...all];
  const names = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  return names.map((name) => {
    const found = all.find((item) => item.name === name);
    if (found === undefined) throw new Error(`${envName}: unknown "${name}" (known: ${all.map((i) => i.name).join(", ")})`);
    return found;
  });
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(bytes >= 100 * 1024 * 1024 ? 0 : 1);
}

function formatCell(figures: FioFigures | undefined, workload: Workload): string {
  if (figures === undefined) return "–";
  const iops = figures.iops >= 10_000 ? `${(figures.iops / 1000).toFixed(1)}k` : figures.iops.toFixed(0);
  return workload.blockBytes >= 1024 * 1024
    ? `${mib(figures.bytesPerSecond)} MiB/s (${iops} IOPS)`
    : `${iops} IOPS (${mib(figures.bytesPerSecond)} MiB/s)`;
}

function ratio(a: FioFigures | undefined, b: FioFigures | undefined): string {
  if (a === undefined || b === undefined || b.bytesPerSecond === 0) return "–";
  return `${(a.bytesPerSecond / b.bytesPerSecond).toFixed(2)}×`;
}

/** fio's figures and the server's CPU time per request over the measured part of the run. */
interface Measured extends FioFigures {
  readonly cpuUsPerRequest: number | null;
}

type Results = Map<string, Map<string, Measured>>;

function renderReport(results: Results, targets: readonly Target[], chosen: readonly Workload[], notes: string[]): string {
  const names = targets.map((t) => t.name);
  const others = names.filter((n) => n !== "tidemark");
  const hasTidemark = names.includes("tidemark");
  // With a baseline (BENCH_BASELINE), its own ratio to nbdkit too: before and after side by side.
  const baselineRatio = names.includes("baseline") && names.includes("nbdkit");
  const header = ["workload", ...names, ...(hasTidemark ? others.map((o) => `tidemark/${o}`) : []), ...(baselineRatio ? ["baseline/nbdkit"] : [])];
  const lines = [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const workload of chosen) {
    const row = results.get(workload.name);
    const cells = names.map((n) => formatCell(row?.get(n), workload));
    const ratios = [...(hasTidemark ? others.map((o) => ratio(row?.get("tidemark"), row?.get(o))) : []), ...(baselineRatio ? [ratio(row?.get("baseline"), row?.get("nbdkit"))] : [])];
    lines.push(`| ${[workload.label, ...cells, ...ratios].join(" | ")} |`);
  }
  const latency = ["", "Completion latency p50 / p99 (µs):", "", `| workload | ${names.join(" | ")} |`, `|---|${names.map(() => "---").join("|")}|`];
  for (const workload of chosen) {
    const row = results.get(workload.name);
    const cells = names.map((n) => {
      const f = row?.get(n);
      return f === undefined ? "–" : `${f.latencyP50Us.toFixed(0)} / ${f.latencyP99Us.toFixed(0)}`;
    });
    latency.push(`| ${workload.label} | ${cells.join(" | ")} |`);
  }
  const cpu = ["", "Server CPU time per request, user + system, all threads (µs; kernel writeback not included):", "", `| workload | ${names.join(" | ")} |`, `|---|${names.map(() => "---").join("|")}|`];
  for (const workload of chosen) {
    const row = results.get(workload.name);
    const cells = names.map((n) => {
      const value = row?.get(n)?.cpuUsPerRequest;
      return value === undefined || value === null ? "–" : value.toFixed(value >= 100 ? 0 : 1);
    });
    cpu.push(`| ${workload.label} | ${cells.join(" | ")} |`);
  }
  return [...lines, ...latency, ...cpu, "", ...notes].join("\n") + "\n";
}

async function machineNotes(seconds: number, ramp: number, repeat: number, sizeBytes: number, servers: Map<string, Server>): Promise<string[]> {
  const fioVersion = (await run("fio", ["--version"])).stdout.trim();
  const nodeVersion = (await run(nodeBin, ["--version"])).stdout.trim();
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const notes = [
    `Run ${new Date().toISOString()} on ${os.cpus().length} × ${cpu}, ${os.release()}, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM; ` +
      `${fioVersion} (ioengine=nbd, numjobs=1, one connection), Node ${nodeVersion}.`,
    `Each workload: ${ramp} s ramp + ${seconds} s measured, on a ${mib(sizeBytes)} MiB export; targets run one after another per workload, after a \`sync\`` +
      (repeat > 1 ? `; ${repeat} runs each, the median shown.` : "."),
  ];
  for (const [name, server] of servers) notes.push(`- ${name}: \`${server.command}\``);
  return notes;
}

async function main(): Promise<void> {
  const seconds = envNumber("BENCH_SECONDS", 15);
  const ramp = envNumber("BENCH_RAMP_SECONDS", 3);
  const sizeBytes = parseSize(process.env.BENCH_SIZE ?? "1G");
  const prefill = process.env.BENCH_PREFILL !== "0";
  const repeat = Math.max(1, Math.floor(envNumber("BENCH_REPEAT", 1)));
  const targets = pick(allTargets, "BENCH_TARGETS");
  const chosen = pick(workloads, "BENCH_WORKLOADS");
  for (const tool of ["fio", "nbdinfo", ...targets.filter((t) => t.name !== "tidemark" && t.name !== "baseline").map((t) => t.name)]) {
    if (whichTool(tool) === null) throw new Error(`${tool} is not installed: run scripts/ensure-test-deps.sh (as root)`);
  }

  const work = await tmpDir("tidemark-bench-");
  const servers = new Map<string, Server>();
  for (const target of targets) {
    const dir = path.join(work, target.name);
    await fsp.mkdir(dir);
    servers.set(target.name, await target.start(dir, sizeBytes));
    process.stderr.write(`bench: ${target.name} serving ${servers.get(target.name)!.uri}\n`);
  }

  if (prefill) {
    for (const target of targets) {
      const server = servers.get(target.name)!;
      const started = Date.now();
      await runFio({ uri: server.uri, workload: workloads[1]!, sizeBytes, runtimeSeconds: 0, rampSeconds: 0, cwd: work });
      process.stderr.write(`bench: prefilled ${target.name} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    }
  }

  const outDir = path.join(repoRoot, ".bench-out");
  await fsp.mkdir(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const results: Results = new Map();
  for (const workload of chosen) {
    // Repeats run the targets in turn each time (so a noisy minute hits them all); the table
    // shows each target's median run.
    const runs = new Map<string, Measured[]>(targets.map((t) => [t.name, []]));
    for (let rep = 0; rep < repeat; rep++) {
      for (const target of targets) {
        const server = servers.get(target.name)!;
        // Start every measurement with no dirty pages left by the previous one (all targets write
        // through the page cache, so writeback of an earlier run would land in the next).
        await run("sync", [], { timeoutMs: 300_000 });
        // The server's CPU time over the measured part (the ramp excluded), per request.
        let cpuStartUs: number | null = null;
        const rampTimer = setTimeout(() => { cpuStartUs = cpuTimeUs(server.pid); }, ramp * 1000);
        const { figures, rawJson } = await runFio({ uri: server.uri, workload, sizeBytes, runtimeSeconds: seconds, rampSeconds: ramp, cwd: work });
        clearTimeout(rampTimer);
        const cpuEndUs = cpuTimeUs(server.pid);
        const requests = figures.iops * seconds;
        const cpuUsPerRequest = cpuStartUs === null || cpuEndUs === null || requests === 0 ? null : (cpuEndUs - cpuStartUs) / requests;
        runs.get(target.name)!.push({ ...figures, cpuUsPerRequest });
        const suffix = repeat > 1 ? `-${rep + 1}` : "";
        await fsp.writeFile(path.join(outDir, `${stamp}-${workload.name}-${target.name}${suffix}.json`), rawJson);
        process.stderr.write(`bench: ${workload.name} ${target.name}${repeat > 1 ? ` #${rep + 1}` : ""}: ${figures.iops.toFixed(0)} IOPS, ${mib(figures.bytesPerSecond)} MiB/s, p99 ${figures.latencyP99Us.toFixed(0)} µs, CPU ${cpuUsPerRequest === null ? "?" : cpuUsPerRequest.toFixed(1)} µs/request\n`);
      }
    }
    const row = new Map<string, Measured>();
    for (const [name, list] of runs) {
      const sorted = [...list].sort((a, b) => a.bytesPerSecond - b.bytesPerSecond);
      const median = sorted[Math.floor((sorted.length - 1) / 2)];
      if (median !== undefined) row.set(name, median);
    }
    results.set(workload.name, row);
  }

  const notes = await machineNotes(seconds, ramp, repeat, sizeBytes, servers);
  const rss = [...servers].map(([name, server]) => {
    const bytes = server.peakRssBytes();
    return `${name} ${bytes === null ? "?" : `${mib(bytes)} MiB`}`;
  });
  notes.push("", `Peak RSS (VmHWM, read before stopping): ${rss.join(", ")}.`);
  const report = `## tidemark benchmark\n\n${renderReport(results, targets, chosen, notes)}`;
  process.stdout.write(report);
  await fsp.writeFile(path.join(outDir, `${stamp}.md`), report);
  await fsp.writeFile(path.join(outDir, "latest.md"), report);
  process.stderr.write(`bench: saved .bench-out/${stamp}.md (and latest.md)\n`);
}

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`bench: ${signal}, cleaning up\n`);
    cleanupAll().then(() => process.exit(130), () => process.exit(130));
  });
}

try {
  await main();
  await cleanupAll();
} catch (error) {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
  await cleanupAll().catch((cleanupError: unknown) => process.stderr.write(`cleanup: ${String(cleanupError)}\n`));
  process.exitCode = 1;
}

