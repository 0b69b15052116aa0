// The lag of each pair over the last minutes, sampled by the node (GET /v1/lag-history), so a
// dashboard opened now shows the minutes before it was opened (docs/dashboard.md). Pure: the
// shell passes the monotonic time of each sample and of each read.
import { assert } from "./assert.ts";

/** One pair's lag at one time. */
export interface LagSample {
  /** Monotonic milliseconds of the sample (the node's clock; not a wall time). */
  readonly atMs: number;
  readonly lagSeconds: number;
}

/** What a read gives: each sample's age at the read, oldest first. */
export interface LagHistoryView {
  readonly group: string;
  readonly role: "primary" | "secondary";
  readonly samples: readonly { readonly agoMs: number; readonly lagSeconds: number }[];
}

/**
 * At most `samplesMax` samples per pair (a ring); a pair no longer listed at a sample is
 * forgotten. Keyed by group name and role (a node holds one pair per group).
 */
export class LagHistory {
  private readonly byPair = new Map<string, { group: string; role: "primary" | "secondary"; samples: LagSample[] }>();
  private lastAtMs = Number.NEGATIVE_INFINITY;

  private readonly samplesMax: number;

  constructor(samplesMax: number) {
    this.samplesMax = samplesMax;
    assert(Number.isInteger(samplesMax) && samplesMax > 0, "lag history keeps at least one sample");
  }

  /** Records one sample of every pair listed at monotonic time `atMs` (not before the last one). */
  record(atMs: number, pairs: readonly { readonly group: string; readonly role: "primary" | "secondary"; readonly lagSeconds: number }[]): void {
    assert(atMs >= this.lastAtMs, "lag samples are taken in monotonic order");
    this.lastAtMs = atMs;
    const present = new Set<string>();
    for (const pair of pairs) {
      const key = `${pair.role}\u0000${pair.group}`;
      present.add(key);
      let entry = this.byPair.get(key);
      if (entry === undefined) {
        entry = { group: pair.group, role: pair.role, samples: [] };
        this.byPair.set(key, entry);
      }
      entry.samples.push({ atMs, lagSeconds: Number.isFinite(pair.lagSeconds) && pair.lagSeconds > 0 ? pair.lagSeconds : 0 });
      if (entry.samples.length > this.samplesMax) entry.samples.shift();
    }
    for (const key of [...this.byPair.keys()]) if (!present.has(key)) this.byPair.delete(key);
  }

  /** Every pair's samples as ages at monotonic time `nowMs`, by group name. */
  view(nowMs: number): LagHistoryView[] {
    return [...this.byPair.values()]
      .map((entry) => ({ group: entry.group, role: entry.role, samples: entry.samples.map((s) => ({ agoMs: Math.max(0, Math.round(nowMs - s.atMs)), lagSeconds: s.lagSeconds })) }))
      .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
  }
}
