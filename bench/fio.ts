// fio's nbd engine as the benchmark client: one job description, its command line, and the
// figures taken from fio's --output-format=json report.
import { run } from "../test/e2e/harness.ts";

export interface Workload {
  /** Short name used in tables and file names. */
  readonly name: string;
  readonly label: string;
  readonly rw: "randwrite" | "write" | "randread" | "read";
  readonly blockBytes: number;
  readonly iodepth: number;
}

export const workloads: readonly Workload[] = [
  { name: "randwrite-4k-qd32", label: "4 KiB random write, QD32", rw: "randwrite", blockBytes: 4096, iodepth: 32 },
  { name: "write-1m-qd8", label: "1 MiB sequential write, QD8", rw: "write", blockBytes: 1024 * 1024, iodepth: 8 },
  { name: "randread-4k-qd32", label: "4 KiB random read, QD32", rw: "randread", blockBytes: 4096, iodepth: 32 },
];

export interface FioFigures {
  readonly iops: number;
  readonly bytesPerSecond: number;
  readonly latencyP50Us: number;
  readonly latencyP99Us: number;
  readonly ioBytes: number;
}

interface FioDirection {
  readonly io_bytes: number;
  readonly bw_bytes: number;
  readonly iops: number;
  readonly clat_ns?: { readonly percentile?: Record<string, number> };
}

interface FioReport {
  readonly jobs: readonly {
    readonly error: number;
    readonly read: FioDirection;
    readonly write: FioDirection;
  }[];
}

export interface FioRun {
  readonly uri: string;
  readonly workload: Workload;
  readonly sizeBytes: number;
  /** Time-based run of this many seconds after the ramp; 0 = once over sizeBytes. */
  readonly runtimeSeconds: number;
  readonly rampSeconds: number;
  readonly cwd: string;
}

export function fioArgs(job: FioRun): string[] {
  const timed = job.runtimeSeconds > 0
    ? ["--time_based", `--runtime=${job.runtimeSeconds}`, `--ramp_time=${job.rampSeconds}`]
    : [];
  return [
    `--name=${job.workload.name}`,
    "--ioengine=nbd",
    `--uri=${job.uri}`,
    `--rw=${job.workload.rw}`,
    `--bs=${job.workload.blockBytes}`,
    `--iodepth=${job.workload.iodepth}`,
    `--size=${job.sizeBytes}`,
    "--numjobs=1",
    "--norandommap",
    "--randrepeat=0",
    "--output-format=json",
    ...timed,
  ];
}

/** Runs fio once and returns the figures of the direction the workload exercises. */
export async function runFio(job: FioRun): Promise<{ figures: FioFigures; rawJson: string }> {
  const args = fioArgs(job);
  const timeoutMs = (job.runtimeSeconds + job.rampSeconds) * 1000 + 600_000;
  const result = await run("fio", args, { timeoutMs, cwd: job.cwd });
  const start = result.stdout.indexOf("{");
  if (result.code !== 0 || start < 0) {
    throw new Error(`fio ${args.join(" ")}: exit ${String(result.code)}${result.timedOut ? " (timed out)" : ""}\n${result.stderr.trim()}`);
  }
  const rawJson = result.stdout.slice(start);
  const report = JSON.parse(rawJson) as FioReport;
  const job0 = report.jobs[0];
  if (job0 === undefined || job0.error !== 0) throw new Error(`fio reported an error: ${rawJson.slice(0, 2000)}`);
  const direction = job.workload.rw.endsWith("read") ? job0.read : job0.write;
  const percentile = direction.clat_ns?.percentile ?? {};
  return {
    figures: {
      iops: direction.iops,
      bytesPerSecond: direction.bw_bytes,
      latencyP50Us: (percentile["50.000000"] ?? 0) / 1000,
      latencyP99Us: (percentile["99.000000"] ?? 0) / 1000,
      ioBytes: direction.io_bytes,
    },
    rawJson,
  };
}
