// What pair status says, decided by pure functions (issue 9 item 1; docs/operations.md,
// "Pair states"): the state each side shows, its consistent-as-of time, and the lag in host
// writes, records, bytes and seconds. The shells (src/primary/pair-link.ts,
// src/secondary/secondary-role.ts) gather the facts; nothing here reads a clock or a file.
//
// Lag counts host writes only (writes and zeroes; time advances and markers carry no data):
// the ledger below keeps one entry per host write a side knows of and the other side has not
// reflected yet, so the figures are exact, not estimated from journal use (an idle pair shows
// 0). Beyond pairLagWritesTrackedMax entries, neighbouring entries are merged: the figures
// stay exact at every merged boundary and never understate in between.
import { assert } from "./assert.ts";
import { domainHeldShownAfterMs, pairLagWritesTrackedMax } from "./limits.ts";

/** The lag of one side as far as it knows: host writes it knows of that are not reflected. */
export interface LagFigures {
  /** Host writes (writes and zeroes). */
  readonly records: number;
  /** Their payload bytes (a write's data; zeroes and trims carry none). */
  readonly bytes: number;
  /** The oldest one's primary wall time (Unix µs; 0 when not known: an old record format). */
  readonly oldestWallTimeUs: number;
  /** The oldest one's acceptance on this node's monotonic clock (ms), when this side accepted it. */
  readonly oldestAtMs: number | undefined;
}

export const noLag: LagFigures = { records: 0, bytes: 0, oldestWallTimeUs: 0, oldestAtMs: undefined };

/**
 * Host writes in sequence order, each with its payload bytes, primary wall time and (on the
 * primary) monotonic accept time. Entries are runs of host writes: one write each, until the
 * limit is reached and neighbours are merged.
 */
export class HostWriteLedger {
  private firstSequence: number[] = [];
  private lastSequence: number[] = [];
  private cumulativeRecords: number[] = [];
  private cumulativeBytes: number[] = [];
  private firstWallTimeUs: number[] = [];
  private firstAtMs: (number | undefined)[] = [];
  private head = 0;
  /** Totals through the last dropped entry. */
  private droppedRecords = 0;
  private droppedBytes = 0;
  private totalRecords = 0;
  private totalBytes = 0;
  private readonly entriesMax: number;

  constructor(entriesMax = pairLagWritesTrackedMax) {
    assert(entriesMax >= 2, "a ledger holds at least two entries");
    this.entriesMax = entriesMax;
  }

  /** Entries held (runs of host writes). */
  get size(): number {
    return this.lastSequence.length - this.head;
  }

  /** The highest sequence noted, 0 if none. */
  get lastNoted(): number {
    return this.lastSequence[this.lastSequence.length - 1] ?? 0;
  }

  /** Notes a host write; sequences must increase (a repeated or older one is ignored: recovery and a resend may see it twice). */
  note(sequence: number, payloadBytes: number, wallTimeUs: number, atMs: number | undefined): void {
    if (sequence <= this.lastNoted) return;
    if (this.size >= this.entriesMax) this.merge();
    this.totalRecords += 1;
    this.totalBytes += payloadBytes;
    this.firstSequence.push(sequence);
    this.lastSequence.push(sequence);
    this.cumulativeRecords.push(this.totalRecords);
    this.cumulativeBytes.push(this.totalBytes);
    this.firstWallTimeUs.push(wallTimeUs);
    this.firstAtMs.push(atMs);
  }

  /** Forgets the host writes through `sequence` (reflected on the other side). */
  dropThrough(sequence: number): void {
    while (this.head < this.lastSequence.length && (this.lastSequence[this.head] ?? 0) <= sequence) {
      this.droppedRecords = this.cumulativeRecords[this.head] ?? this.droppedRecords;
      this.droppedBytes = this.cumulativeBytes[this.head] ?? this.droppedBytes;
      this.head += 1;
    }
    if (this.head > 1024 && this.head * 2 > this.lastSequence.length) this.compact();
  }

  /** Forgets every host write after `sequence` (a resumed journal holds less than was noted). */
  dropAfter(sequence: number): void {
    while (this.lastSequence.length > this.head && (this.lastSequence[this.lastSequence.length - 1] ?? 0) > sequence) {
      this.firstSequence.pop();
      this.lastSequence.pop();
      this.cumulativeRecords.pop();
      this.cumulativeBytes.pop();
      this.firstWallTimeUs.pop();
      this.firstAtMs.pop();
    }
    this.totalRecords = this.cumulativeRecords[this.cumulativeRecords.length - 1] ?? this.droppedRecords;
    this.totalBytes = this.cumulativeBytes[this.cumulativeBytes.length - 1] ?? this.droppedBytes;
  }

  clear(): void {
    this.firstSequence = [];
    this.lastSequence = [];
    this.cumulativeRecords = [];
    this.cumulativeBytes = [];
    this.firstWallTimeUs = [];
    this.firstAtMs = [];
    this.head = 0;
    this.droppedRecords = 0;
    this.droppedBytes = 0;
    this.totalRecords = 0;
    this.totalBytes = 0;
  }

  /** The host writes noted that are past what was dropped and at or before `throughSequence`. */
  figures(throughSequence: number): LagFigures {
    // Entries that begin at or before throughSequence (binary search over the live part): a
    // merged run that ends after it counts whole, so the figures never understate.
    let low = this.head;
    let high = this.lastSequence.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.firstSequence[middle] ?? 0) <= throughSequence) low = middle + 1;
      else high = middle;
    }
    const end = low; // entries [head, end) count
    if (end === this.head) return noLag;
    return {
      records: (this.cumulativeRecords[end - 1] ?? 0) - this.droppedRecords,
      bytes: (this.cumulativeBytes[end - 1] ?? 0) - this.droppedBytes,
      oldestWallTimeUs: this.firstWallTimeUs[this.head] ?? 0,
      oldestAtMs: this.firstAtMs[this.head],
    };
  }

  /** The first host write noted that is not dropped (its primary wall time), when there is one. */
  get oldest(): { readonly wallTimeUs: number; readonly atMs: number | undefined } | undefined {
    if (this.size === 0) return undefined;
    return { wallTimeUs: this.firstWallTimeUs[this.head] ?? 0, atMs: this.firstAtMs[this.head] };
  }

  private compact(): void {
    this.firstSequence = this.firstSequence.slice(this.head);
    this.lastSequence = this.lastSequence.slice(this.head);
    this.cumulativeRecords = this.cumulativeRecords.slice(this.head);
    this.cumulativeBytes = this.cumulativeBytes.slice(this.head);
    this.firstWallTimeUs = this.firstWallTimeUs.slice(this.head);
    this.firstAtMs = this.firstAtMs.slice(this.head);
    this.head = 0;
  }

  /** Halves the entries: each pair of neighbours becomes one run (the later end, the earlier start). */
  private merge(): void {
    this.compact();
    // The length before any array is replaced: keep() must not see a halved lastSequence
    // (it did, and the cumulative counts of a merged run came from its first write: lag
    // understated, found by the property test).
    const length = this.lastSequence.length;
    const keep = (i: number): number => Math.min(i * 2 + 1, length - 1);
    const count = Math.ceil(length / 2);
    const pick = <T>(values: readonly T[], at: (i: number) => number): T[] => Array.from({ length: count }, (_, i) => values[at(i)] as T);
    this.firstSequence = pick(this.firstSequence, (i) => i * 2);
    this.firstWallTimeUs = pick(this.firstWallTimeUs, (i) => i * 2);
    this.firstAtMs = pick(this.firstAtMs, (i) => i * 2);
    this.lastSequence = pick(this.lastSequence, keep);
    this.cumulativeRecords = pick(this.cumulativeRecords, keep);
    this.cumulativeBytes = pick(this.cumulativeBytes, keep);
  }
}

// ---- consistent-as-of -----------------------------------------------------------------

/**
 * The primary's view of the secondary's consistent-as-of time (Unix µs), or undefined while
 * the secondary's image is not consistent (copying, catching up). Every host write the
 * primary accepted by T is reflected: T is just before the oldest host write not known to be
 * reflected, or now when there is none (the primary knows every write it accepted).
 */
export function primaryConsistentAsOfUs(input: {
  readonly consistent: boolean;
  readonly oldestUnreflectedWallTimeUs: number | undefined;
  readonly nowWallUs: number;
  /** The newest wall time the group stamped (a clock stepped back must not make T go back past it). */
  readonly lastStampedWallTimeUs: number;
}): number | undefined {
  if (!input.consistent) return undefined;
  if (input.oldestUnreflectedWallTimeUs !== undefined) return input.oldestUnreflectedWallTimeUs > 0 ? input.oldestUnreflectedWallTimeUs - 1 : undefined;
  return Math.max(input.nowWallUs, input.lastStampedWallTimeUs);
}

/**
 * The secondary's consistent-as-of time (Unix µs): the primary wall time of the last record
 * it reflected (wall times increase strictly per group, so every write the primary accepted
 * by then has a sequence at or before it). Undefined while the image is not consistent, or
 * before any record with a wall time (record format 2) was reflected.
 */
export function secondaryConsistentAsOfUs(input: { readonly consistent: boolean; readonly reflectedWallTimeUs: number }): number | undefined {
  if (!input.consistent || input.reflectedWallTimeUs <= 0) return undefined;
  return input.reflectedWallTimeUs;
}

/**
 * Lag in seconds on the secondary: the age of the oldest host write it holds unreflected (by
 * the primary's wall time); time advances and markers never count, so an idle member of a
 * domain whose last time advance waits for another member's next one shows 0. While it is cut
 * off (no stream from the primary) or stopped (it takes no records), at least the age of the
 * primary wall time of the last record it reflected (its consistent-as-of time): the primary
 * may hold writes it cannot know of. `heldForMs` (how long reflection has waited behind another
 * member) stands in only for a waiting host write whose wall time is unknown (record format 1).
 */
export function secondaryLagSeconds(input: {
  readonly nowWallUs: number;
  /** The oldest unreflected host write's primary wall time (0: unknown), undefined when none waits. */
  readonly oldestUnreflectedWallTimeUs: number | undefined;
  /** No stream from the primary, or the group is stopped: it hears of no new writes. */
  readonly cutOff: boolean;
  /** The primary wall time of the last record reflected (Unix µs; 0 when not known). */
  readonly reflectedWallTimeUs: number;
  readonly heldForMs: number;
}): number {
  let lagUs = 0;
  const oldest = input.oldestUnreflectedWallTimeUs;
  if (oldest !== undefined && oldest > 0) lagUs = input.nowWallUs - oldest;
  if (oldest === 0) lagUs = input.heldForMs * 1000;
  if (input.cutOff && input.reflectedWallTimeUs > 0) lagUs = Math.max(lagUs, input.nowWallUs - input.reflectedWallTimeUs);
  return roundSeconds(Math.max(0, lagUs / 1e6));
}

/**
 * The reflected sequence the primary shows and counts its lag from: the highest of what the
 * secondary reported (this process), the hint saved in node.json (what the node last knew
 * before a restart; saved with every checkpoint, the stop's last one included, so after a crash
 * it may be behind and the lag overstates, never understates, until the secondary reports in),
 * the copy's start (the copy carries everything through it) and, once a takeover on the
 * secondary fenced this group, its cut (the takeover applied every record through it).
 */
export function primaryReflectedSequence(input: {
  readonly reported: number;
  readonly savedHint: number;
  readonly copyStartSequence: number;
  readonly fence: { readonly peerTookOver: boolean; readonly cutSequence: number | null } | null;
}): number {
  const cut = input.fence !== null && input.fence.peerTookOver && input.fence.cutSequence !== null ? input.fence.cutSequence : 0;
  return Math.max(input.reported, input.savedHint, input.copyStartSequence, cut);
}

/**
 * The monotonic accept time (ms) given to a host write read back from the journal at start:
 * the previous process's monotonic clock is gone, and the primary's wall time of acceptance in
 * the record is the only clock that outlives a restart (the same node's clock stamped it). Its
 * age by that clock now is carried onto this process's monotonic clock, so that later steps of
 * the wall clock do not move the lag. A wall clock now behind the record (stepped back) gives
 * age 0; a record without a wall time (format 1) gives undefined (age unknown).
 */
export function recoveredAcceptedAtMs(input: { readonly nowMs: number; readonly nowWallUs: number; readonly wallTimeUs: number }): number | undefined {
  if (input.wallTimeUs <= 0) return undefined;
  return input.nowMs - Math.max(0, (input.nowWallUs - input.wallTimeUs) / 1000);
}

/** Lag in seconds on the primary: the age of the oldest accepted host write not known to be reflected (monotonic clock). */
export function primaryLagSeconds(nowMs: number, oldestAtMs: number | undefined): number {
  return oldestAtMs === undefined ? 0 : roundSeconds(Math.max(0, (nowMs - oldestAtMs) / 1000));
}

function roundSeconds(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}

/** A Unix µs time as ISO 8601 (ms precision, rounded down: never later than the truth), or null. */
export function isoOfWallUs(wallUs: number | undefined): string | null {
  return wallUs === undefined || wallUs <= 0 ? null : new Date(Math.floor(wallUs / 1000)).toISOString();
}

// ---- the state shown --------------------------------------------------------------------

/** The link of a pair while it should run: down since when (wall ISO), with the last error. */
export interface LinkDown {
  readonly sinceIso: string;
  readonly lastError: string | null;
}

export type PrimaryShownState = "copying" | "replicating" | "suspended" | "failed" | "fenced" | "stopped" | "held" | "disconnected";

/**
 * The state the primary shows, most important first: what the operator decided or the pair's
 * record says (fenced, failed, suspended), the group's disk (stopped), host writes held
 * because the journal is full (held), the secondary's group stopped by its disk (stopped:
 * it refuses records, saying so), the link down while the pair replicates (disconnected),
 * then copying or replicating.
 */
export function primaryShownState(input: {
  readonly recordState: "copying" | "replicating" | "suspended" | "failed" | "fenced";
  readonly groupStopped: boolean;
  /** The secondary's group is stopped (out of space or an I/O error there: it refuses records until it resumes by itself). */
  readonly peerStopped?: boolean;
  readonly writesHeldForJournal: boolean;
  readonly linkDown: LinkDown | undefined;
}): PrimaryShownState {
  if (input.recordState === "fenced" || input.recordState === "failed" || input.recordState === "suspended") return input.recordState;
  if (input.groupStopped) return "stopped";
  if (input.writesHeldForJournal) return "held";
  // What the primary knows of its peer: the copy is not being kept up, visibly, on both sides.
  if (input.peerStopped === true) return "stopped";
  // During the initial copy the state stays `copying` (the reason says the link is down).
  if (input.linkDown !== undefined && input.recordState === "replicating") return "disconnected";
  return input.recordState;
}

/** The reason a disconnected pair shows: since when, the last error, and that it retries. */
export function disconnectedReason(peer: string, down: LinkDown): string {
  return `link to ${peer} down since ${down.sinceIso}${down.lastError === null ? "" : ` (last error: ${down.lastError})`}; retrying`;
}

/**
 * Whether a secondary group whose records wait behind another member of its consistency
 * domain (the holder) is shown `held` (pair status, group list, health, `pair status
 * --check`): at once when the holder is gone, stopped by its disk or has no stream from its
 * primary; a holder that still receives only once the group has not reflected for
 * `domainHeldShownAfterMs` (ms), so a domain in step, idle ones included (a group's last record
 * waits for the holder's next heartbeat), is not shown held.
 */
export function domainHeldShown(input: {
  readonly holderPresent: boolean;
  readonly holderStopped: boolean;
  readonly holderStreams: number;
  /** How long the group's reflection has not moved while it is held (ms, monotonic). */
  readonly heldForMs: number;
}): boolean {
  return !input.holderPresent || input.holderStopped || input.holderStreams === 0 || input.heldForMs >= domainHeldShownAfterMs;
}

/** Whether a pair in this state needs an operator's eye (`pair status --check`, health). */
export function pairHealthy(state: string): boolean {
  return state === "replicating" || state === "copying";
}
