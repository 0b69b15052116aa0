// Proves `tidemark demo` does what CONTRACT.md says: it runs two real nodes, kills the primary,
// takes over and exits 0 with a report whose numbers add up, leaving no process or directory
// behind (also on Ctrl-C); and that its check is not vacuous: checkLedgers() reports a credit
// whose debit is missing, a corrupt record and a mismatched transfer on crafted images.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import {
  checkLedgers, encodeEntry, encodeLedgerHeader, ledgerSlotBytes, slotOffsetBytes, transferTerms, type LedgerEntry,
} from "../../src/cli/demo-ledger.ts";
import { cli, nodeBin, repoRoot, tidemarkBin } from "./harness.ts";

const accounts = 1000;

/** Whether the process still exists, after giving a just-killed one a moment to be reaped. */
async function aliveAfterGrace(pid: number): Promise<boolean> {
  for (let i = 0; i < 40 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  return alive(pid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Images of `slots` transfers' worth of ledger, headers in slot 0. */
function blankImages(transfers: number): { debits: Buffer; credits: Buffer } {
  const debits = Buffer.alloc(slotOffsetBytes(transfers));
  const credits = Buffer.alloc(slotOffsetBytes(transfers));
  encodeLedgerHeader("ledger-a").copy(debits, 0);
  encodeLedgerHeader("ledger-b").copy(credits, 0);
  return { debits, credits };
}

function entries(transferId: number): { debit: LedgerEntry; credit: LedgerEntry } {
  const terms = transferTerms(transferId, accounts);
  return {
    debit: { kind: "debit", transferId, account: terms.from, counterparty: terms.to, amountCents: terms.amountCents, writeTimeUs: 1_700_000_000_000_000 + transferId },
    credit: { kind: "credit", transferId, account: terms.to, counterparty: terms.from, amountCents: terms.amountCents, writeTimeUs: 0 },
  };
}

function put(image: Buffer, entry: LedgerEntry): void {
  encodeEntry(entry).copy(image, slotOffsetBytes(entry.transferId));
}

test("checkLedgers: a consistent prefix passes; debits without credits are allowed", () => {
  const { debits, credits } = blankImages(10);
  for (let t = 0; t < 7; t++) put(debits, entries(t).debit);
  for (let t = 0; t < 5; t++) put(credits, entries(t).credit);
  const check = checkLedgers(debits, credits, { transfersIssued: 10, accounts });
  assert.equal(check.ok, true, check.violations.join("; "));
  assert.deepEqual(
    { debits: check.debits, credits: check.credits, complete: check.complete, debitsWithoutCredit: check.debitsWithoutCredit, creditsWithoutDebit: check.creditsWithoutDebit, lastCreditId: check.lastCreditId },
    { debits: 7, credits: 5, complete: 5, debitsWithoutCredit: 2, creditsWithoutDebit: 0, lastCreditId: 4 },
  );
});

test("checkLedgers: a credit whose debit is missing is reported as the violation", () => {
  const { debits, credits } = blankImages(10);
  for (const t of [0, 1, 2, 4]) put(debits, entries(t).debit);
  for (const t of [0, 1, 2, 3, 4]) put(credits, entries(t).credit);
  const check = checkLedgers(debits, credits, { transfersIssued: 10, accounts });
  assert.equal(check.ok, false);
  assert.equal(check.creditsWithoutDebit, 1);
  assert.equal(check.complete, 4);
  assert.equal(check.violationCount, 1);
  assert.match(check.violations[0] ?? "", /^transfer 3: credit of [\d.]+ to account \d+ is on the credit ledger but its debit is missing$/);
});

test("checkLedgers: corrupt records, mismatched transfers, missing headers and unknown transfers are violations", () => {
  const { debits, credits } = blankImages(10);
  for (let t = 0; t < 4; t++) {
    put(debits, entries(t).debit);
    put(credits, entries(t).credit);
  }
  // A bit flip in the debit of transfer 0: its checksum no longer matches.
  debits.writeUInt8(debits.readUInt8(slotOffsetBytes(0) + 100) ^ 0x01, slotOffsetBytes(0) + 100);
  // Transfer 1's credit with another amount (the checksum is right, the terms are not).
  put(credits, { ...entries(1).credit, amountCents: entries(1).credit.amountCents + 1 });
  // Transfer 2's credit in transfer 3's slot.
  encodeEntry(entries(2).credit).copy(credits, slotOffsetBytes(3));
  const check = checkLedgers(debits, credits, { transfersIssued: 10, accounts });
  assert.equal(check.ok, false);
  const text = check.violations.join("\n");
  assert.match(text, /debit ledger slot 1: corrupt record \(checksum mismatch\)/);
  assert.match(text, /transfer 0: credit .* its debit is missing/);
  assert.match(text, /credit ledger slot 2: transfer 1 is not the transfer the workload wrote/);
  assert.match(text, /credit ledger slot 4: holds transfer 2, expected 3/);

  const noHeader = Buffer.from(debits);
  noHeader.fill(0, 0, ledgerSlotBytes);
  assert.match(checkLedgers(noHeader, credits).violations[0] ?? "", /debit ledger: header missing/);

  const { debits: d2, credits: c2 } = blankImages(10);
  put(d2, entries(8).debit);
  put(c2, entries(8).credit);
  assert.match(checkLedgers(d2, c2, { transfersIssued: 5 }).violations.join("\n"), /transfer 8 was never started/);
});

test("tidemark demo --seconds 4 --json: kills the primary, takes over, the check passes, nothing is left behind", { timeout: 180_000 }, async () => {
  const result = await cli(["demo", "--seconds", "4", "--json"], { timeoutMs: 170_000 });
  assert.equal(result.code, 0, `exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr.slice(-4000)}`);
  const report = JSON.parse(result.stdout) as {
    passed: boolean; problems: string[]; dataDir: string; dataKept: boolean;
    primary: { pid: number }; secondary: { pid: number };
    workload: { seconds: number; transfersStarted: number; debitsAnswered: number; transfersAcknowledged: number; transfersPerSecond: number; mibPerSecond: number };
    lag: { group: string; maxRecords: number; maxSeconds: number }[];
    crash: { signal: string; atSeconds: number; transfersInFlight: number };
    takeover: { ms: number; groups: { group: string; state: string; reflectedSequence: number }[]; volumesWritable: boolean };
    onSecondary: { credits: number; completeTransfers: number; creditsWithoutDebit: number; acknowledgedPresent: number; unacknowledgedPresent: number };
    rpo: { transfersLost: number; seconds: number };
    check: { passed: boolean; creditsChecked: number; violationCount: number; violations: string[] };
    timingsMs: Record<string, number>;
  };
  assert.equal(report.passed, true);
  assert.deepEqual(report.problems, []);
  assert.equal(report.check.passed, true);
  assert.equal(report.check.violationCount, 0);
  assert.equal(report.onSecondary.creditsWithoutDebit, 0);
  assert.ok(report.check.creditsChecked > 0, "something reached the secondary and was checked");
  assert.equal(report.check.creditsChecked, report.onSecondary.credits);
  assert.equal(report.crash.signal, "SIGKILL");
  assert.ok(report.workload.seconds >= 3.9 && report.workload.seconds < 10, `ran ${report.workload.seconds}s`);
  assert.ok(report.workload.transfersAcknowledged > 0);
  assert.ok(report.workload.transfersAcknowledged <= report.workload.debitsAnswered);
  assert.ok(report.workload.debitsAnswered <= report.workload.transfersStarted);
  assert.ok(report.workload.transfersPerSecond > 0 && report.workload.mibPerSecond > 0);
  assert.deepEqual(report.lag.map((l) => l.group), ["accounts-a", "accounts-b"]);
  assert.deepEqual(report.takeover.groups.map((g) => [g.group, g.state]), [["accounts-a", "takeover"], ["accounts-b", "takeover"]]);
  assert.equal(report.takeover.volumesWritable, true);
  // Every acknowledged transfer is either on the secondary or counted as lost.
  assert.equal(report.onSecondary.acknowledgedPresent + report.rpo.transfersLost, report.workload.transfersAcknowledged);
  assert.equal(report.onSecondary.acknowledgedPresent + report.onSecondary.unacknowledgedPresent, report.onSecondary.credits);
  assert.ok(report.rpo.seconds >= 0 && report.rpo.seconds <= report.crash.atSeconds);
  // No loss means no RPO window; a loss can still round to 0 s (acknowledged microseconds before the kill).
  if (report.rpo.transfersLost === 0) assert.equal(report.rpo.seconds, 0);
  for (const key of ["startNodes", "setup", "workload", "takeover", "readAndCheck", "total"]) assert.equal(typeof report.timingsMs[key], "number", key);
  assert.equal(report.dataKept, false);
  assert.equal(existsSync(report.dataDir), false, "the temporary directory is removed");
  assert.equal(await aliveAfterGrace(report.primary.pid), false, "the primary is gone");
  assert.equal(await aliveAfterGrace(report.secondary.pid), false, "the secondary is gone");
  assert.match(result.stderr, /running the bank/, "progress goes to stderr with --json");
});

test("tidemark demo: Ctrl-C (SIGINT) while the bank runs kills both nodes and removes the directory", { timeout: 120_000 }, async () => {
  const child = spawn(nodeBin, [tidemarkBin, "demo", "--seconds", "60"], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => { stdout += chunk.toString("utf8"); });
  child.stderr.on("data", (chunk: Buffer) => { stderr += chunk.toString("utf8"); });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  try {
    const deadline = Date.now() + 90_000;
    while (!/\[\d+\.\d+s of 60s/.test(stdout) && child.exitCode === null && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.match(stdout, /\[\d+\.\d+s of 60s/, `the live view appeared\n${stdout}\n${stderr}`);
    const dataDir = /data in (\S+)\)/.exec(stdout)?.[1];
    const pids = [...stdout.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
    assert.ok(dataDir !== undefined && existsSync(dataDir));
    assert.equal(pids.length, 2);
    child.kill("SIGINT");
    const code = await exited;
    const output = `\n--- stdout\n${stdout.slice(-3000)}\n--- stderr\n${stderr.slice(-3000)}`;
    assert.equal(code, 130, output);
    assert.match(stderr, /demo interrupted \(SIGINT\); nodes killed, temporary directory removed/, output);
    assert.equal(existsSync(dataDir), false, output);
    for (const pid of pids) assert.equal(await aliveAfterGrace(pid), false, `node pid ${pid} is gone`);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});

test("tidemark demo: a bad --seconds is a usage error (exit 2)", async () => {
  const result = await cli(["demo", "--seconds", "0"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^tidemark: --seconds "0" is not valid; use a number from 1 to 3600\n$/);
});
