// The demo's bank: `tellers` concurrent loops, each taking the next transfer id t, writing
// its debit to ledger-a through the host protocol (with the host's write time) and, only
// once that write was answered, its credit to ledger-b through NBD. So the credit depends
// on the debit: a secondary image with the credit and not the debit breaks I1. Every
// `commitIntervalMs` both ledgers are flushed, as a database commits.
import type { HostVolume } from "../client/host-client.ts";
import type { NbdClient } from "./demo-nbd-client.ts";
import { encodeEntry, ledgerSlotBytes, slotOffsetBytes, transferTerms } from "./demo-ledger.ts";

const commitIntervalMs = 200;

/** Wall-clock milliseconds with sub-millisecond resolution (for acknowledgement times and the kill). */
export function preciseNowMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface WorkloadOptions {
  readonly debitLedger: HostVolume;
  readonly creditLedger: NbdClient;
  readonly tellers: number;
  readonly accounts: number;
  /** Transfers that fit on the ledgers; the workload stops taking new ones there. */
  readonly capacity: number;
}

export interface WorkloadStats {
  /** Transfers taken (debit sent or about to be). */
  readonly issued: number;
  /** Debits answered by the primary. */
  readonly debited: number;
  /** Credits answered by the primary: the transfer is acknowledged. */
  readonly acknowledged: number;
  /** Acknowledged transfers covered by a completed flush of both ledgers. */
  readonly committed: number;
  /** Bytes written to both ledgers and answered. */
  readonly bytesWritten: number;
  /** The ledgers were full and no new transfer was taken. */
  readonly full: boolean;
}

export class BankWorkload {
  readonly #options: WorkloadOptions;
  #nextId = 0;
  #debited = 0;
  #acknowledged = 0;
  #committed = 0;
  #bytesWritten = 0;
  #full = false;
  #stopping = false;
  #lastWriteTimeUs = 0;
  /** Acknowledgement time of each transfer (ms since the epoch), 0 until acknowledged. */
  readonly #ackAtMs: number[] = [];
  #tellers: Promise<void>[] = [];
  #committer: Promise<void> | undefined;
  #firstError: Error | undefined;

  constructor(options: WorkloadOptions) {
    this.#options = options;
  }

  start(): void {
    for (let i = 0; i < this.#options.tellers; i++) this.#tellers.push(this.#teller());
    this.#committer = this.#commitLoop();
  }

  /** Stops taking new transfers; resolves once every teller has stopped (writes in flight settle or fail). */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#tellers, this.#committer]);
  }

  stats(): WorkloadStats {
    return {
      issued: this.#nextId, debited: this.#debited, acknowledged: this.#acknowledged, committed: this.#committed,
      bytesWritten: this.#bytesWritten, full: this.#full,
    };
  }

  /** When transfer t was acknowledged (ms since the epoch), or undefined if it was not. */
  ackAtMs(transferId: number): number | undefined {
    const at = this.#ackAtMs[transferId];
    return at === undefined || at === 0 ? undefined : at;
  }

  /** The first write error seen after the workload was running (none is expected before the crash). */
  get firstError(): Error | undefined {
    return this.#firstError;
  }

  /** Host write times: the wall clock in µs, strictly increasing (two writes in one µs get distinct times). */
  #writeTimeUs(): number {
    const now = Date.now() * 1000;
    this.#lastWriteTimeUs = Math.max(now, this.#lastWriteTimeUs + 1);
    return this.#lastWriteTimeUs;
  }

  async #teller(): Promise<void> {
    const { debitLedger, creditLedger, accounts, capacity } = this.#options;
    while (!this.#stopping) {
      if (this.#nextId >= capacity) {
        this.#full = true;
        return;
      }
      const transferId = this.#nextId++;
      this.#ackAtMs[transferId] = 0;
      const terms = transferTerms(transferId, accounts);
      const writeTimeUs = this.#writeTimeUs();
      const offsetBytes = slotOffsetBytes(transferId);
      try {
        await debitLedger.write(offsetBytes, encodeEntry({ kind: "debit", transferId, account: terms.from, counterparty: terms.to, amountCents: terms.amountCents, writeTimeUs }), { writeTimeUs });
        this.#debited += 1;
        this.#bytesWritten += ledgerSlotBytes;
        // The dependent write: issued only after the debit was answered.
        await creditLedger.write(offsetBytes, encodeEntry({ kind: "credit", transferId, account: terms.to, counterparty: terms.from, amountCents: terms.amountCents, writeTimeUs: 0 }));
        this.#ackAtMs[transferId] = preciseNowMs();
        this.#acknowledged += 1;
        this.#bytesWritten += ledgerSlotBytes;
      } catch (error) {
        this.#firstError ??= error instanceof Error ? error : new Error(String(error));
        return;
      }
    }
  }

  async #commitLoop(): Promise<void> {
    while (!this.#stopping) {
      await new Promise((resolve) => setTimeout(resolve, commitIntervalMs));
      if (this.#stopping) return;
      const covered = this.#acknowledged;
      try {
        await Promise.all([this.#options.debitLedger.flush(), this.#options.creditLedger.flush()]);
        this.#committed = Math.max(this.#committed, covered);
      } catch {
        return; // the connection is gone; the tellers report why
      }
    }
  }
}
