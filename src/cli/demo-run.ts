// The run behind `tidemark demo` (src/cli/demo-command.ts registers it): nodes, groups,
// pairs, the bank with its live view, the crash, takeover, reading back and the check.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { HostClient, type HostVolume } from "../client/host-client.ts";
import type { ApiClient } from "./api-client.ts";
import { mgmtRoutes } from "../mgmt/contract.ts";
import type { CliIo } from "./command-kit.ts";
import { killAll, killAllNow, nodesGoneUnexpectedly, startNode, type DemoNode } from "./demo-cluster.ts";
import { checkLedgers, decodeSlot, encodeLedgerHeader, ledgerCapacity, ledgerSlotBytes, slotOffsetBytes } from "./demo-ledger.ts";
import { NbdClient, nbdClientRequestBytesMax } from "./demo-nbd-client.ts";
import { LiveView, renderReport, type DemoReport, type PairSample, type ViewTarget } from "./demo-view.ts";
import { BankWorkload, preciseNowMs } from "./demo-workload.ts";
import { OperationError, oneLine } from "./errors.ts";
import { formatJson } from "./format.ts";

const accounts = 1000;
/**
 * Ledger volumes are sized for the run: room for this many transfers per second planned
 * (well above what one machine reaches), so the bank does not run out of slots; a smaller
 * volume keeps the initial copy of the (empty, sparse) volumes short.
 */
const transfersPerSecondRoom = 25_000;
const volumeBytesMin = 32 * 1024 * 1024;
const volumeBytesMax = 8 * 1024 * 1024 * 1024;
const mibBytes = 1024 * 1024;

function ledgerVolumeBytes(seconds: number): number {
  const wanted = slotOffsetBytes(Math.ceil(seconds * transfersPerSecondRoom));
  return Math.min(volumeBytesMax, Math.max(volumeBytesMin, Math.ceil(wanted / mibBytes) * mibBytes));
}
const pairReadyTimeoutMs = 60_000;
const pollMs = 100;
const viewTtyIntervalMs = 250;
const viewPlainIntervalMs = 1_000;
/** Reads of the secondary's images in flight at once. */
const readsInFlightMax = 8;
/** How much of the end of a node log is searched for its last error. */
const logTailBytes = 256 * 1024;

const groups = [
  { group: "accounts-a", volume: "ledger-a" },
  { group: "accounts-b", volume: "ledger-b" },
] as const;

export interface DemoOptions {
  readonly seconds: number;
  readonly tellers: number;
  readonly json: boolean;
  readonly keep: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Where progress and the live view go: stdout, or stderr with --json (stdout holds only the JSON). */
function progressTarget(io: CliIo, json: boolean): ViewTarget & { line(text: string): void } {
  const stream = json ? (process.stderr.isTTY ? process.stderr : null) : (io.progressStream?.() ?? null);
  const write = json ? (text: string) => io.stderr(text) : (text: string) => io.stdout(text);
  return { write, tty: stream !== null, line: (text) => write(`${text}\n`) };
}

export async function runDemo(options: DemoOptions, io: CliIo): Promise<void> {
  const startedMs = Date.now();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "tidemark-demo-"));
  const out = progressTarget(io, options.json);
  const abort = new AbortController();
  let cleaned = false;
  const cleanupNow = (): void => {
    if (cleaned) return;
    cleaned = true;
    killAllNow();
    if (!options.keep) rmSync(dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    abort.abort();
    // Wait for the nodes to be gone before removing their directory (they write into it).
    void killAll().finally(() => {
      cleanupNow();
      io.stderr(`\ntidemark: demo interrupted (${signal}); nodes killed${options.keep ? `, data kept in ${dataDir}` : ", temporary directory removed"}\n`);
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", cleanupNow);
  try {
    let report: DemoReport;
    try {
      report = await demo(options, dataDir, out, abort.signal, startedMs);
    } catch (error) {
      // The logs are about to be removed: say what the nodes said last, in the one line.
      const gone = nodesGoneUnexpectedly();
      await killAll();
      const message = error instanceof Error ? error.message : String(error);
      const said = [...gone.map((text) => `node ${text}`), nodeErrors(dataDir)].filter((text) => text !== "").join("; ");
      const hint = options.keep ? `logs kept in ${dataDir}` : "rerun with --keep to keep the node logs";
      throw new OperationError(oneLine(`demo failed: ${message}${said === "" ? "" : `; ${said}`}; ${hint}`));
    }
    await killAll();
    io.stdout(options.json ? formatJson(report) : renderReport(report));
    if (!report.passed) {
      throw new OperationError(`demo check FAILED: ${failureSummary(report)}; see the report above`);
    }
  } finally {
    await killAll();
    cleanupNow();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("exit", cleanupNow);
  }
}

/** The last error a node logged (level error or fatal), per log file in the demo directory. */
function nodeErrors(dataDir: string): string {
  const said: string[] = [];
  let files: string[];
  try {
    files = readdirSync(dataDir).filter((name) => name.endsWith(".log") || /\.log\.\d+$/.test(name)).sort();
  } catch {
    return "";
  }
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(path.join(dataDir, file), "utf8").slice(-logTailBytes);
    } catch {
      continue;
    }
    const line = text.split("\n").reverse().find((l) => /"level":(50|60)/.test(l));
    if (line === undefined) continue;
    try {
      const entry = JSON.parse(line) as { msg?: unknown; err?: { message?: unknown } };
      const detail = typeof entry.err?.message === "string" ? `: ${entry.err.message}` : "";
      said.push(`${file.replace(/\.log.*$/, "")} logged "${String(entry.msg)}${detail}"`);
    } catch {
      said.push(`${file} ends with an unreadable error line`);
    }
  }
  return said.join("; ");
}

/** One line on what went wrong, for stderr. */
function failureSummary(report: DemoReport): string {
  const parts = [...report.problems];
  const check = report.check;
  if (report.onSecondary.creditsWithoutDebit > 0) {
    const first = check.violations.find((v) => v.includes("debit is missing"));
    parts.push(`${report.onSecondary.creditsWithoutDebit} of ${check.creditsChecked} credits on the secondary have no debit${first === undefined ? "" : ` (first: ${first.replace(/:.*/, "")})`}`);
  }
  const other = check.violationCount - report.onSecondary.creditsWithoutDebit;
  if (other > 0) parts.push(`${other} other ${other === 1 ? "violation" : "violations"} (corrupt or misplaced records)`);
  return parts.join("; ");
}

async function demo(options: DemoOptions, dataDir: string, out: ReturnType<typeof progressTarget>, signal: AbortSignal, startedMs: number): Promise<DemoReport> {
  out.line(`tidemark demo: bank transfers across two consistency groups; the primary will be killed after ${options.seconds}s`);
  out.line(`  starting a primary and a secondary node on 127.0.0.1 (data in ${dataDir})`);
  const [primary, secondary] = await Promise.all([startNode("node-a", dataDir, signal), startNode("node-b", dataDir, signal)]);
  const nodesReadyMs = Date.now();
  out.line(`  primary ${primary.id} at ${primary.mgmtUrl} (pid ${primary.pid}), secondary ${secondary.id} at ${secondary.mgmtUrl} (pid ${secondary.pid})`);

  const volumeBytes = ledgerVolumeBytes(options.seconds);
  const { hostClient, debitLedger, creditLedger } = await setUpPrimary(primary, volumeBytes);
  await pairAll(primary, secondary, out);
  const setupDoneMs = Date.now();

  // ---- the bank runs, with the live view ----
  const capacity = ledgerCapacity(volumeBytes);
  const workload = new BankWorkload({ debitLedger, creditLedger, tellers: options.tellers, accounts, capacity });
  out.line(`  running the bank: ${options.tellers} tellers, ${accounts} accounts; each credit is written only after its debit was answered`);
  const plannedMs = options.seconds * 1000;
  const workloadStartMs = Date.now();
  workload.start();
  const lag = new Map<string, LagSeen>(groups.map(({ group }) => [group, { maxRecords: 0, maxSeconds: 0, atCrashRecords: null, atCrashSeconds: null }]));
  const view = new LiveView(out);
  const viewIntervalMs = out.tty ? viewTtyIntervalMs : viewPlainIntervalMs;
  let last = { atMs: workloadStartMs, acknowledged: 0, bytes: 0 };
  const sampler = new AbortController();
  const samplerDone = (async () => {
    while (!sampler.signal.aborted) {
      await sleepOrAbort(viewIntervalMs, sampler.signal);
      if (sampler.signal.aborted) return;
      const pairs = await samplePairs(primary.api);
      if (sampler.signal.aborted) return; // the primary was killed while this sample was taken
      const stats = workload.stats();
      const now = Date.now();
      const spanS = Math.max(0.001, (now - last.atMs) / 1000);
      if (pairs !== null) {
        for (const pair of pairs) {
          const seen = lag.get(pair.group);
          if (seen === undefined) continue;
          seen.maxRecords = Math.max(seen.maxRecords, pair.lagRecords);
          seen.maxSeconds = Math.max(seen.maxSeconds, pair.lagSeconds);
          seen.atCrashRecords = pair.lagRecords;
          seen.atCrashSeconds = pair.lagSeconds;
        }
      }
      view.update({
        elapsedMs: now - workloadStartMs, plannedMs,
        transfersPerSecond: (stats.acknowledged - last.acknowledged) / spanS,
        bytesPerSecond: (stats.bytesWritten - last.bytes) / spanS,
        acknowledged: stats.acknowledged, pairs,
      });
      last = { atMs: now, acknowledged: stats.acknowledged, bytes: stats.bytesWritten };
    }
  })();
  while (Date.now() - workloadStartMs < plannedMs && workload.firstError === undefined && !workload.stats().full && !signal.aborted) await sleep(20);
  const earlyError = workload.firstError;
  if (earlyError !== undefined) {
    sampler.abort();
    await samplerDone;
    throw new OperationError(`the bank workload failed before the crash: ${earlyError.message}`);
  }

  // ---- the crash ----
  const beforeKill = workload.stats();
  const killAtMs = preciseNowMs();
  sampler.abort();
  await primary.kill();
  await samplerDone;
  await workload.stop();
  hostClient.close().catch(() => undefined);
  creditLedger.destroy();
  const stats = workload.stats();
  const workloadMs = killAtMs - workloadStartMs;
  const inFlight = Math.max(0, beforeKill.issued - beforeKill.acknowledged);
  out.line(`  killed the primary (SIGKILL) after ${(workloadMs / 1000).toFixed(1)}s with ${inFlight} transfers in flight; ${stats.acknowledged.toLocaleString("en-US")} transfers acknowledged`);

  // ---- takeover on the secondary ----
  // The primary is dead, so it cannot be fenced: the takeover needs --force (the operator
  // declares the primary site lost; a primary that came back would be refused and fence itself).
  const takeoverStartMs = Date.now();
  out.line("  taking over with --force: the primary was killed, so it cannot be fenced first; --force declares its site lost");
  const takeover = await secondary.api.call(mgmtRoutes.takeover, { body: { groups: groups.map((g) => g.group), force: true } }, { what: "take over both groups on the secondary" });
  const takeoverMs = Date.now() - takeoverStartMs;
  const volumes = await secondary.api.call(mgmtRoutes.listVolumes, {}, { what: "list the secondary's volumes" });
  const volumesWritable = groups.every(({ volume }) => volumes.value.volumes.some((v) => v.name === volume && !v.readOnly));
  out.line(`  took over ${groups.map((g) => g.group).join(" and ")} on the secondary in ${takeoverMs} ms`);

  // ---- read both ledgers back from the secondary and check ----
  const readStartMs = Date.now();
  const imageBytes = slotOffsetBytes(stats.issued);
  const [debitImage, creditImage] = await Promise.all([
    readImage(secondary, "ledger-a", imageBytes),
    readImage(secondary, "ledger-b", imageBytes),
  ]);
  const check = checkLedgers(debitImage, creditImage, { transfersIssued: stats.issued, accounts });
  const presence = compareWithAcknowledged(creditImage, stats.issued, workload, killAtMs);
  const readMs = Date.now() - readStartMs;

  const problems: string[] = [];
  if (check.credits === 0) problems.push("no credit reached the secondary, so the check had nothing to verify (see the node logs with --keep)");
  if (!volumesWritable) problems.push("after takeover the ledgers are still read-only on the secondary");
  const notTakenOver = takeover.value.results.filter((r) => r.state !== "takeover");
  if (notTakenOver.length > 0) problems.push(`takeover left ${notTakenOver.map((r) => `${r.group} ${r.state}`).join(", ")}`);
  const passed = check.ok && problems.length === 0;
  const totalMs = Date.now() - startedMs;
  return {
    passed, problems,
    primary: { id: primary.id, mgmtUrl: primary.mgmtUrl, pid: primary.pid },
    secondary: { id: secondary.id, mgmtUrl: secondary.mgmtUrl, pid: secondary.pid },
    dataDir, dataKept: options.keep,
    workload: {
      seconds: round(workloadMs / 1000, 3), tellers: options.tellers, accounts,
      transfersStarted: stats.issued, debitsAnswered: stats.debited, transfersAcknowledged: stats.acknowledged, transfersCommitted: stats.committed,
      transfersPerSecond: round(stats.acknowledged / Math.max(0.001, workloadMs / 1000), 1),
      mibPerSecond: round(stats.bytesWritten / (1024 * 1024) / Math.max(0.001, workloadMs / 1000), 3),
      ledgerFull: stats.full,
    },
    lag: [...lag.entries()].map(([group, seen]) => ({ group, ...seen })),
    crash: { signal: "SIGKILL", atSeconds: round(workloadMs / 1000, 3), transfersInFlight: inFlight },
    takeover: { ms: takeoverMs, groups: takeover.value.results, volumesWritable },
    onSecondary: {
      debits: check.debits, credits: check.credits, completeTransfers: check.complete,
      debitsWithoutCredit: check.debitsWithoutCredit, creditsWithoutDebit: check.creditsWithoutDebit,
      acknowledgedPresent: presence.acknowledgedPresent, unacknowledgedPresent: presence.unacknowledgedPresent,
    },
    rpo: { transfersLost: presence.lost, seconds: round(presence.lostWindowMs / 1000, 4) },
    check: { passed: check.ok, creditsChecked: check.credits, violationCount: check.violationCount, violations: check.violations },
    timingsMs: {
      startNodes: nodesReadyMs - startedMs, setup: setupDoneMs - nodesReadyMs, workload: Math.round(workloadMs),
      takeover: takeoverMs, readAndCheck: readMs, total: totalMs,
    },
  };
}

function round(value: number, decimals: number): number {
  const scale = 10 ** decimals;
  return Math.round(value * scale) / scale;
}

interface LagSeen {
  maxRecords: number;
  maxSeconds: number;
  /** The last sample before the crash. */
  atCrashRecords: number | null;
  atCrashSeconds: number | null;
}

function sleepOrAbort(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Volumes, groups and ledger headers on the primary; the clients the bank writes through. */
async function setUpPrimary(primary: DemoNode, volumeBytes: number): Promise<{ hostClient: HostClient; debitLedger: HostVolume; creditLedger: NbdClient }> {
  for (const { group, volume } of groups) {
    await primary.api.call(mgmtRoutes.createVolume, { body: { name: volume, sizeBytes: volumeBytes } }, { what: `create volume '${volume}'` });
    await primary.api.call(mgmtRoutes.createGroup, { body: { name: group, volumes: [volume] } }, { what: `create group '${group}'` });
  }
  const hostClient = await HostClient.connect({ host: primary.hostPort.host, port: primary.hostPort.port });
  const debitLedger = await hostClient.open("ledger-a");
  const creditLedger = await NbdClient.connect({ host: primary.nbd.host, port: primary.nbd.port, exportName: "ledger-b" });
  // The headers go in before the pairs, so the initial copy carries them (and each group
  // has a record before its pair starts).
  await debitLedger.write(0, encodeLedgerHeader("ledger-a"), { writeTimeUs: Date.now() * 1000, fua: true });
  await creditLedger.write(0, encodeLedgerHeader("ledger-b"), { fua: true });
  return { hostClient, debitLedger, creditLedger };
}

/** POST /v1/pairs for both groups, then wait until both replicate and the secondary's images are consistent. */
async function pairAll(primary: DemoNode, secondary: DemoNode, out: { line(text: string): void }): Promise<void> {
  for (const { group } of groups) {
    await primary.api.call(mgmtRoutes.createPair, { body: { group, to: secondary.mgmtUrl } }, { what: `pair group '${group}' with the secondary` });
  }
  const deadline = Date.now() + pairReadyTimeoutMs;
  for (;;) {
    const [onPrimary, onSecondary] = await Promise.all([
      primary.api.call(mgmtRoutes.listPairs, {}, { what: "list the primary's pairs" }),
      secondary.api.call(mgmtRoutes.listPairs, {}, { what: "list the secondary's pairs" }),
    ]);
    const failed = onPrimary.value.pairs.find((p) => p.state === "failed" || p.state === "suspended");
    if (failed !== undefined) throw new OperationError(`the pair of group ${failed.group} is ${failed.state}: ${failed.reason ?? "no reason given"}`);
    const ready = groups.every(({ group }) =>
      onPrimary.value.pairs.some((p) => p.group === group && p.state === "replicating") &&
      onSecondary.value.pairs.some((p) => p.group === group && p.state === "replicating" && p.reason === null));
    if (ready) break;
    if (Date.now() > deadline) throw new OperationError(`the pairs did not reach replicating within ${pairReadyTimeoutMs / 1000}s`);
    await sleep(pollMs);
  }
  out.line(`  paired ${groups.map((g) => g.group).join(" and ")} to the secondary (async, reflect by write time): replicating`);
}

async function samplePairs(api: ApiClient): Promise<PairSample[] | null> {
  try {
    const { value } = await api.call(mgmtRoutes.listPairs, {});
    return value.pairs.map((p) => ({ group: p.group, state: p.state, lagRecords: p.lagRecords, lagSeconds: p.lagSeconds, reason: p.reason }));
  } catch {
    return null;
  }
}

/** The first `lengthBytes` of a volume, read over NBD from the (taken over) secondary. */
async function readImage(node: DemoNode, exportName: string, lengthBytes: number): Promise<Buffer> {
  const client = await NbdClient.connect({ host: node.nbd.host, port: node.nbd.port, exportName });
  try {
    const image = Buffer.alloc(Math.min(lengthBytes, client.sizeBytes));
    let nextOffset = 0;
    const reader = async (): Promise<void> => {
      while (nextOffset < image.length) {
        const offset = nextOffset;
        const length = Math.min(nbdClientRequestBytesMax, image.length - offset);
        nextOffset += length;
        (await client.read(offset, length)).copy(image, offset);
      }
    };
    await Promise.all(Array.from({ length: readsInFlightMax }, reader));
    return image;
  } finally {
    await client.close().catch(() => undefined);
  }
}

/** Which acknowledged transfers made it (their credit is on the secondary) and which did not. */
function compareWithAcknowledged(creditImage: Buffer, issued: number, workload: BankWorkload, killAtMs: number):
  { acknowledgedPresent: number; unacknowledgedPresent: number; lost: number; lostWindowMs: number } {
  let acknowledgedPresent = 0;
  let unacknowledgedPresent = 0;
  let lost = 0;
  let oldestLostAckMs = Number.POSITIVE_INFINITY;
  for (let transferId = 0; transferId < issued; transferId++) {
    const at = slotOffsetBytes(transferId);
    const slot = creditImage.subarray(at, at + ledgerSlotBytes);
    const decoded = slot.length === ledgerSlotBytes ? decodeSlot(slot) : undefined;
    const present = decoded?.kind === "entry" && decoded.entry.kind === "credit";
    const ackAtMs = workload.ackAtMs(transferId);
    if (present && ackAtMs !== undefined) acknowledgedPresent += 1;
    else if (present) unacknowledgedPresent += 1;
    else if (ackAtMs !== undefined) {
      lost += 1;
      oldestLostAckMs = Math.min(oldestLostAckMs, ackAtMs);
    }
  }
  return { acknowledgedPresent, unacknowledgedPresent, lost, lostWindowMs: lost === 0 ? 0 : Math.max(0, killAtMs - oldestLostAckMs) };
}

