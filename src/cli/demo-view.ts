// What the demo shows: the live view while the bank runs (a small block redrawn in place
// on a terminal, one plain line per second otherwise) and the final report (text or JSON).
// Pure apart from the writer it is given.
const mib = 1024 * 1024;

export interface PairSample {
  readonly group: string;
  readonly state: string;
  readonly lagRecords: number;
  readonly lagSeconds: number;
  readonly reason: string | null;
}

export interface LiveSample {
  readonly elapsedMs: number;
  readonly plannedMs: number;
  readonly transfersPerSecond: number;
  readonly bytesPerSecond: number;
  readonly acknowledged: number;
  /** Null when the primary did not answer in time. */
  readonly pairs: readonly PairSample[] | null;
}

export interface ViewTarget {
  write(text: string): void;
  /** True: redraw a block in place (ANSI); false: append plain lines. */
  readonly tty: boolean;
}

function int(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function pairText(pair: PairSample): string {
  const lag = `lag ${int(pair.lagRecords).padStart(6)} records ${pair.lagSeconds.toFixed(3)}s`;
  return `${pair.group.padEnd(10)}  ${pair.state.padEnd(11)}  ${lag}${pair.reason === null ? "" : `  (${pair.reason})`}`;
}

export class LiveView {
  readonly #target: ViewTarget;
  #linesDrawn = 0;

  constructor(target: ViewTarget) {
    this.#target = target;
  }

  update(sample: LiveSample): void {
    const head = `${(sample.elapsedMs / 1000).toFixed(1)}s of ${(sample.plannedMs / 1000).toFixed(0)}s  ` +
      `${int(sample.transfersPerSecond).padStart(6)} transfers/s  ${(sample.bytesPerSecond / mib).toFixed(2).padStart(6)} MiB/s  ` +
      `${int(sample.acknowledged)} acknowledged`;
    if (!this.#target.tty) {
      const pairs = sample.pairs === null ? "primary did not answer" : sample.pairs.map((p) => `${p.group} ${p.state} lag ${int(p.lagRecords)} rec/${p.lagSeconds.toFixed(3)}s`).join(", ");
      this.#target.write(`  [${head}] ${pairs}\n`);
      return;
    }
    const lines = [`  ${head}`];
    if (sample.pairs === null) lines.push("    (primary did not answer)");
    else for (const pair of sample.pairs) lines.push(`    ${pairText(pair)}`);
    // Move up over the previous block, then rewrite each line cleared to its end.
    const up = this.#linesDrawn > 0 ? `\x1b[${this.#linesDrawn}F` : "";
    const extra = Math.max(0, this.#linesDrawn - lines.length);
    this.#target.write(up + lines.map((line) => `\x1b[2K${line}\n`).join("") + "\x1b[2K\n".repeat(extra));
    this.#linesDrawn = lines.length + extra;
  }
}

// ---- the report ----------------------------------------------------------------------

export interface DemoReport {
  readonly passed: boolean;
  /** What was wrong, one line each; empty when passed. */
  readonly problems: readonly string[];
  readonly primary: { readonly id: string; readonly mgmtUrl: string; readonly pid: number };
  readonly secondary: { readonly id: string; readonly mgmtUrl: string; readonly pid: number };
  readonly dataDir: string;
  readonly dataKept: boolean;
  readonly workload: {
    readonly seconds: number;
    readonly tellers: number;
    readonly accounts: number;
    readonly transfersStarted: number;
    readonly debitsAnswered: number;
    readonly transfersAcknowledged: number;
    readonly transfersCommitted: number;
    readonly transfersPerSecond: number;
    readonly mibPerSecond: number;
    readonly ledgerFull: boolean;
  };
  readonly lag: readonly {
    readonly group: string;
    readonly maxRecords: number;
    readonly maxSeconds: number;
    readonly atCrashRecords: number | null;
    readonly atCrashSeconds: number | null;
  }[];
  readonly crash: { readonly signal: "SIGKILL"; readonly atSeconds: number; readonly transfersInFlight: number };
  readonly takeover: {
    readonly ms: number;
    readonly groups: readonly { readonly group: string; readonly reflectedSequence: number; readonly droppedRecords: number; readonly state: string }[];
    readonly volumesWritable: boolean;
  };
  readonly onSecondary: {
    readonly debits: number;
    readonly credits: number;
    readonly completeTransfers: number;
    readonly debitsWithoutCredit: number;
    readonly creditsWithoutDebit: number;
    readonly acknowledgedPresent: number;
    readonly unacknowledgedPresent: number;
  };
  readonly rpo: { readonly transfersLost: number; readonly seconds: number };
  readonly check: { readonly passed: boolean; readonly creditsChecked: number; readonly violationCount: number; readonly violations: readonly string[] };
  readonly timingsMs: { readonly startNodes: number; readonly setup: number; readonly workload: number; readonly takeover: number; readonly readAndCheck: number; readonly total: number };
}

function plural(count: number, one: string, many = `${one}s`): string {
  return `${int(count)} ${count === 1 ? one : many}`;
}

/** The human report: a few aligned lines, the verdict last. */
export function renderReport(report: DemoReport): string {
  const w = report.workload;
  const s = report.onSecondary;
  const lines: string[] = [];
  const field = (label: string, text: string): void => {
    lines.push(`  ${label.padEnd(10)} ${text}`);
  };
  lines.push("");
  field("nodes", `primary ${report.primary.id} (${report.primary.mgmtUrl}), secondary ${report.secondary.id} (${report.secondary.mgmtUrl})`);
  field("", "accounts-a: ledger-a, written through the host protocol with write times");
  field("", "accounts-b: ledger-b, written through NBD; each credit sent only after its debit was answered");
  field("workload", `${w.seconds.toFixed(1)}s, ${w.tellers} tellers, ${int(w.transfersAcknowledged)} transfers acknowledged ` +
    `(${int(w.transfersPerSecond)}/s, ${w.mibPerSecond.toFixed(2)} MiB/s)${w.ledgerFull ? ", ledgers full" : ""}`);
  for (const [index, lag] of report.lag.entries()) {
    const atCrash = lag.atCrashRecords === null ? "unknown" : `${int(lag.atCrashRecords)} records / ${(lag.atCrashSeconds ?? 0).toFixed(3)}s`;
    field(index === 0 ? "lag" : "", `${lag.group}: at most ${int(lag.maxRecords)} records / ${lag.maxSeconds.toFixed(3)}s, last seen before the crash ${atCrash}`);
  }
  field("crash", `SIGKILL of the primary at ${report.crash.atSeconds.toFixed(1)}s, ${plural(report.crash.transfersInFlight, "transfer")} in flight`);
  const kept = report.takeover.groups.map((g) => `${g.group} kept through sequence ${int(g.reflectedSequence)}, dropped ${plural(g.droppedRecords, "record")}`).join("; ");
  field("takeover", `${report.takeover.ms} ms: ${kept}; volumes ${report.takeover.volumesWritable ? "writable" : "NOT writable"}`);
  field("secondary", `${int(s.completeTransfers)} complete transfers, ${int(s.debitsWithoutCredit)} debits without credit (in flight: allowed), ` +
    `${int(s.creditsWithoutDebit)} credits without debit`);
  if (s.unacknowledgedPresent > 0) field("", `${plural(s.unacknowledgedPresent, "transfer")} on the secondary had not been acknowledged when the primary died`);
  field("RPO", report.rpo.transfersLost === 0
    ? "0 acknowledged transfers lost"
    : `${plural(report.rpo.transfersLost, "acknowledged transfer")} lost, acknowledged in the last ${formatWindow(report.rpo.seconds)} before the crash`);
  const t = report.timingsMs;
  field("timings", `nodes ${sec(t.startNodes)}, setup and pairs ${sec(t.setup)}, workload ${sec(t.workload)}, takeover ${sec(t.takeover)}, read and check ${sec(t.readAndCheck)}, total ${sec(t.total)}`);
  if (report.dataKept) field("data", `kept in ${report.dataDir} (node logs: *.log)`);
  lines.push("");
  const c = report.check;
  if (report.passed) {
    lines.push(`  PASSED  every one of ${plural(c.creditsChecked, "credit")} on ledger-b has its debit on ledger-a ` +
      "(same transfer, accounts and amount; every record's checksum valid)");
  } else {
    lines.push("  FAILED");
    for (const problem of report.problems) lines.push(`    - ${problem}`);
    for (const violation of c.violations) lines.push(`    * ${violation}`);
    if (c.violationCount > c.violations.length) lines.push(`    * ... and ${int(c.violationCount - c.violations.length)} more`);
  }
  lines.push("");
  return lines.join("\n");
}

/** "0.3 ms", "42 ms", "1.250s". */
function formatWindow(seconds: number): string {
  if (seconds < 0.01) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${seconds.toFixed(3)}s`;
}

function sec(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

