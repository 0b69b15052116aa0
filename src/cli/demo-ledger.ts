// The demo's bank ledgers: the on-disk record of a transfer and the check run on the
// secondary's images after takeover. Pure (Buffers in, values out), so the check is tested
// on crafted images as well as on what the demo reads back.
//
// Each ledger volume is an array of 512-byte slots. Slot 0 holds a ledger header written
// before the pair is created; transfer t lives in slot t + 1 of both ledgers: its debit on
// ledger-a (written through the host protocol), its credit on ledger-b (through NBD, only
// after the debit was answered). A record (big-endian):
//
//   0  8  magic "TMDEBIT1" or "TMCREDT1"
//   8  8  transfer id
//  16  4  account (debited on ledger-a, credited on ledger-b)
//  20  4  counterparty account
//  24  8  amount in cents
//  32  8  host write time of the debit, microseconds (0 in a credit)
//  40 20  zero
//  60  4  CRC-32 of bytes 0..60 and 64..512
//  64 448 a readable description, padded with spaces (what `hexdump -C` shows)
import { crc32 } from "node:zlib";

export const ledgerSlotBytes = 512;
export const ledgerHeaderSlots = 1;
const checksumAt = 60;
const textAt = 64;
const ledgerHeaderMagic = "TMLEDGR1";
const magics = { debit: "TMDEBIT1", credit: "TMCREDT1" } as const;
/** Violations listed in a check result; the count goes on past it. */
export const ledgerViolationsListedMax = 20;

export type EntryKind = "debit" | "credit";

export interface LedgerEntry {
  readonly kind: EntryKind;
  readonly transferId: number;
  readonly account: number;
  readonly counterparty: number;
  readonly amountCents: number;
  /** The debit's host write time (µs); 0 in a credit. */
  readonly writeTimeUs: number;
}

/** What transfer t is: deterministic from t, so nothing per transfer has to be remembered. */
export interface TransferTerms {
  readonly from: number;
  readonly to: number;
  readonly amountCents: number;
}

/** A small integer hash (mulberry32 step): spreads transfers over accounts and amounts. */
function mix(value: number): number {
  let x = (value + 0x6d2b79f5) | 0;
  x = Math.imul(x ^ (x >>> 15), x | 1);
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
  return (x ^ (x >>> 14)) >>> 0;
}

export function transferTerms(transferId: number, accounts: number): TransferTerms {
  const from = mix(transferId * 2) % accounts;
  const step = 1 + (mix(transferId * 2 + 1) % (accounts - 1));
  return { from, to: (from + step) % accounts, amountCents: 100 + (mix(transferId ^ 0x5bd1e995) % 99_900) };
}

export function slotOffsetBytes(transferId: number): number {
  return (transferId + ledgerHeaderSlots) * ledgerSlotBytes;
}

/** How many transfers fit on a ledger of this size. */
export function ledgerCapacity(volumeBytes: number): number {
  return Math.floor(volumeBytes / ledgerSlotBytes) - ledgerHeaderSlots;
}

function checksum(slot: Buffer): number {
  return crc32(slot.subarray(textAt), crc32(slot.subarray(0, checksumAt)));
}

function formatCents(cents: number): string {
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`;
}

export function encodeEntry(entry: LedgerEntry): Buffer {
  const slot = Buffer.alloc(ledgerSlotBytes, 0x20);
  slot.fill(0, 0, textAt);
  slot.write(magics[entry.kind], 0, "latin1");
  slot.writeBigUInt64BE(BigInt(entry.transferId), 8);
  slot.writeUInt32BE(entry.account, 16);
  slot.writeUInt32BE(entry.counterparty, 20);
  slot.writeBigUInt64BE(BigInt(entry.amountCents), 24);
  slot.writeBigUInt64BE(BigInt(entry.writeTimeUs), 32);
  const text = entry.kind === "debit"
    ? `transfer ${entry.transferId}: debit account ${entry.account} by ${formatCents(entry.amountCents)} for account ${entry.counterparty}\n`
    : `transfer ${entry.transferId}: credit account ${entry.account} with ${formatCents(entry.amountCents)} from account ${entry.counterparty}\n`;
  slot.write(text, textAt, ledgerSlotBytes - textAt, "latin1");
  slot.writeUInt32BE(checksum(slot), checksumAt);
  return slot;
}

export function encodeLedgerHeader(ledgerName: string): Buffer {
  const slot = Buffer.alloc(ledgerSlotBytes, 0x20);
  slot.write(`${ledgerHeaderMagic}tidemark demo ledger ${ledgerName}, ${ledgerSlotBytes}-byte slots, transfer t in slot t+1\n`, 0, "latin1");
  return slot;
}

export type DecodedSlot =
  | { readonly kind: "empty" }
  | { readonly kind: "entry"; readonly entry: LedgerEntry }
  | { readonly kind: "corrupt"; readonly reason: string };

export function decodeSlot(slot: Buffer): DecodedSlot {
  if (slot.length !== ledgerSlotBytes) return { kind: "corrupt", reason: `slot of ${slot.length} bytes` };
  if (slot.every((byte) => byte === 0)) return { kind: "empty" };
  const magic = slot.toString("latin1", 0, 8);
  const kind: EntryKind | undefined = magic === magics.debit ? "debit" : magic === magics.credit ? "credit" : undefined;
  if (kind === undefined) return { kind: "corrupt", reason: `unknown magic ${JSON.stringify(magic)}` };
  if (slot.readUInt32BE(checksumAt) !== checksum(slot)) return { kind: "corrupt", reason: "checksum mismatch" };
  const transferId = slot.readBigUInt64BE(8);
  const amountCents = slot.readBigUInt64BE(24);
  const writeTimeUs = slot.readBigUInt64BE(32);
  if (transferId > BigInt(Number.MAX_SAFE_INTEGER) || amountCents > BigInt(Number.MAX_SAFE_INTEGER) || writeTimeUs > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { kind: "corrupt", reason: "a field is past 2^53" };
  }
  return {
    kind: "entry",
    entry: {
      kind, transferId: Number(transferId), account: slot.readUInt32BE(16), counterparty: slot.readUInt32BE(20),
      amountCents: Number(amountCents), writeTimeUs: Number(writeTimeUs),
    },
  };
}

export interface LedgerCheckOptions {
  /** Transfers the workload started; an entry for a later id was never written by it. */
  readonly transfersIssued?: number;
  /** Number of accounts, to compare each entry with the terms of its transfer. */
  readonly accounts?: number;
}

export interface LedgerCheck {
  /** No violation: every credit has its debit, every record is intact and where it belongs. */
  readonly ok: boolean;
  readonly debits: number;
  readonly credits: number;
  /** Transfers with both debit and credit. */
  readonly complete: number;
  /** Debits whose credit is not there (in flight at the crash: allowed). */
  readonly debitsWithoutCredit: number;
  /** Credits whose debit is not there: the dependent-write violation this demo looks for. */
  readonly creditsWithoutDebit: number;
  /** Highest transfer id with a credit, or -1. */
  readonly lastCreditId: number;
  readonly violationCount: number;
  /** The first violations, one line each. */
  readonly violations: readonly string[];
}

/**
 * Checks the two ledger images as read from the secondary: both headers present, every
 * non-empty slot an intact record of the right kind for its slot, and for every credit on
 * the credit ledger, the matching debit (same transfer, accounts and amount) on the debit
 * ledger. Slots past the shorter image count as empty.
 */
export function checkLedgers(debitImage: Buffer, creditImage: Buffer, options: LedgerCheckOptions = {}): LedgerCheck {
  const violations: string[] = [];
  let violationCount = 0;
  const violation = (text: string): void => {
    violationCount += 1;
    if (violations.length < ledgerViolationsListedMax) violations.push(text);
  };
  for (const [name, image] of [["debit ledger", debitImage], ["credit ledger", creditImage]] as const) {
    if (image.length < ledgerSlotBytes || image.toString("latin1", 0, 8) !== ledgerHeaderMagic) violation(`${name}: header missing in slot 0`);
  }
  const slots = Math.floor(Math.max(debitImage.length, creditImage.length) / ledgerSlotBytes);
  let debits = 0;
  let credits = 0;
  let complete = 0;
  let debitsWithoutCredit = 0;
  let creditsWithoutDebit = 0;
  let lastCreditId = -1;
  for (let slotIndex = ledgerHeaderSlots; slotIndex < slots; slotIndex++) {
    const transferId = slotIndex - ledgerHeaderSlots;
    const debit = readEntry(debitImage, slotIndex, "debit", transferId, options, violation);
    const credit = readEntry(creditImage, slotIndex, "credit", transferId, options, violation);
    if (debit !== undefined) debits += 1;
    if (credit !== undefined) {
      credits += 1;
      lastCreditId = transferId;
    }
    if (debit !== undefined && credit === undefined) debitsWithoutCredit += 1;
    if (credit === undefined) continue;
    if (debit === undefined) {
      creditsWithoutDebit += 1;
      violation(`transfer ${transferId}: credit of ${formatCents(credit.amountCents)} to account ${credit.account} is on the credit ledger but its debit is missing`);
      continue;
    }
    if (debit.account !== credit.counterparty || debit.counterparty !== credit.account || debit.amountCents !== credit.amountCents) {
      violation(`transfer ${transferId}: credit (${credit.counterparty} -> ${credit.account}, ${formatCents(credit.amountCents)}) does not match its debit (${debit.account} -> ${debit.counterparty}, ${formatCents(debit.amountCents)})`);
      continue;
    }
    complete += 1;
  }
  return { ok: violationCount === 0, debits, credits, complete, debitsWithoutCredit, creditsWithoutDebit, lastCreditId, violationCount, violations };
}

function readEntry(
  image: Buffer, slotIndex: number, kind: EntryKind, transferId: number, options: LedgerCheckOptions, violation: (text: string) => void,
): LedgerEntry | undefined {
  const at = slotIndex * ledgerSlotBytes;
  if (at + ledgerSlotBytes > image.length) return undefined;
  const decoded = decodeSlot(image.subarray(at, at + ledgerSlotBytes));
  const where = `${kind} ledger slot ${slotIndex}`;
  if (decoded.kind === "empty") return undefined;
  if (decoded.kind === "corrupt") {
    violation(`${where}: corrupt record (${decoded.reason})`);
    return undefined;
  }
  const entry = decoded.entry;
  if (entry.kind !== kind) {
    violation(`${where}: holds a ${entry.kind}, not a ${kind}`);
    return undefined;
  }
  if (entry.transferId !== transferId) {
    violation(`${where}: holds transfer ${entry.transferId}, expected ${transferId}`);
    return undefined;
  }
  if (options.transfersIssued !== undefined && transferId >= options.transfersIssued) {
    violation(`${where}: transfer ${transferId} was never started (only ${options.transfersIssued} were)`);
    return undefined;
  }
  if (options.accounts !== undefined) {
    const terms = transferTerms(transferId, options.accounts);
    const [account, counterparty] = kind === "debit" ? [terms.from, terms.to] : [terms.to, terms.from];
    if (entry.account !== account || entry.counterparty !== counterparty || entry.amountCents !== terms.amountCents) {
      violation(`${where}: transfer ${transferId} is not the transfer the workload wrote`);
      return undefined;
    }
  }
  return entry;
}
