// The reflector's planning on the secondary (patent Fig. 9, [0040], [0046], [0053]):
// which record to apply next, how far it is safe to go, and what a takeover keeps.
// Pure functions plus a small tracker that asserts the invariants on what is reflected.
//
// Time mode: F = frontier(groups) = min over the domain of each group's arrived position
// (the position of the last record of its contiguous *durable* prefix). Every record at
// or before F is applied, in position order across groups. Safe (I1): a record not yet
// arrived in group g has a sequence past g's arrived record, so its position is past
// g's arrived position >= F; it was accepted after every record at or before F, so none
// of those can depend on it. A group that has never arrived anything contributes its
// start position (positionZero, or the position of S0 after an initial copy), so it holds
// the frontier there: its first record may come before anyone else's. Time-advance
// records (sent by the primary to idle groups) keep that from stalling the domain.
//
// Seq mode: each group applies its contiguous arrived prefix in sequence order without
// waiting for the others (consistent per group only).
//
// Order: positions compare by (write time, primary node, accept number) (position.ts); the
// reflector gives every position of a domain its primary node, so a domain named over
// several primaries has one total order, and equal write times of different primaries are
// broken by the node id. Records are then taken in (position, group id) order: two groups
// of one primary never share a position (accept numbers are node-wide), but that is the
// peer's promise, not this node's, so the group id keeps the order total whatever arrives;
// nothing a peer sends can make it assert.
import { assert, unreachable } from "./assert.ts";
import { atNode, comparePositions, formatPosition, minPosition, positionOf, type Position } from "./position.ts";
import { asSequence, type GroupId, type SequenceNumber } from "./types.ts";
import { faultInjected } from "./faults.ts";

export type ReflectMode = "time" | "seq";

/**
 * The frontier: the minimum arrived position over the domain; undefined for an empty domain.
 * A `complete` group (its primary is fenced and everything it accepted has arrived: nothing
 * more can come, docs/replication.md "Fencing") does not hold it: no record of it is still on
 * its way, so none can lie at or before the others' arrived positions. When every member is
 * complete, the frontier is the latest arrived position: everything there is, is here.
 */
export function frontier(groups: Iterable<{ readonly arrivedPosition: Position; readonly complete?: boolean }>): Position | undefined {
  const positions: Position[] = [];
  let latestComplete: Position | undefined;
  for (const g of groups) {
    if (g.complete === true) {
      if (latestComplete === undefined || comparePositions(g.arrivedPosition, latestComplete) > 0) latestComplete = g.arrivedPosition;
    } else {
      positions.push(g.arrivedPosition);
    }
  }
  return positions.length > 0 ? minPosition(positions) : latestComplete;
}

/** A group's next unreflected record, as the shell sees it in the group's journal. */
export interface ReflectHead {
  readonly groupId: GroupId;
  /** The next sequence to reflect: the group's reflected sequence + 1. */
  readonly sequence: SequenceNumber;
  readonly position: Position;
  /** The group's arrived sequence: heads past it are never chosen. */
  readonly arrivedSequence: SequenceNumber;
}

/**
 * Which head to reflect next, or undefined when none may go yet.
 * time: the head with the smallest position among those at or before `frontierPosition`.
 * seq: the head with the smallest position among those at or below their arrived sequence
 * (any order is consistent per group; the position order is just fair and deterministic).
 * Pass one head per group (its next record), or none for a group with nothing arrived.
 */
export function nextToReflect(heads: readonly ReflectHead[], frontierPosition: Position | undefined, mode: ReflectMode): ReflectHead | undefined {
  let best: ReflectHead | undefined;
  for (const head of heads) {
    if (head.sequence > head.arrivedSequence) continue;
    switch (mode) {
      case "time":
        if (frontierPosition === undefined || comparePositions(head.position, frontierPosition) > 0) continue;
        break;
      case "seq":
        break;
      default:
        unreachable(mode, "reflect mode");
    }
    if (best === undefined || compareHeads(head, best) < 0) best = head;
  }
  return best;
}

/** The reflection order: position, then group id (a total order whatever the peers sent). */
export function compareHeads(a: { readonly groupId: GroupId; readonly position: Position }, b: { readonly groupId: GroupId; readonly position: Position }): number {
  const byPosition = comparePositions(a.position, b.position);
  // The old fault: no tie-break past the position, so an exact tie of two groups was asserted.
  if (byPosition !== 0 || faultInjected("position-tie-asserts")) return byPosition;
  return a.groupId === b.groupId ? 0 : a.groupId < b.groupId ? -1 : 1;
}

/**
 * Keeps the reflected sequence of each group of a domain and asserts, on every record
 * reflected: per group the sequence is exactly the next one (never back, no gap: I2), and
 * in time mode positions across the domain never decrease. Start one afresh on each
 * (re)start, from the persisted reflected checkpoints.
 */
export class ReflectTracker {
  readonly mode: ReflectMode;
  private readonly reflected = new Map<GroupId, number>();
  private last: { readonly groupId: GroupId; readonly position: Position } | undefined;

  constructor(mode: ReflectMode, groups: Iterable<{ readonly groupId: GroupId; readonly reflectedSequence: SequenceNumber }>) {
    this.mode = mode;
    for (const g of groups) {
      assert(!this.reflected.has(g.groupId), "a group appears once in a domain");
      assert(Number.isSafeInteger(g.reflectedSequence) && g.reflectedSequence >= 0, "reflected sequence is a count");
      this.reflected.set(g.groupId, g.reflectedSequence);
    }
  }

  reflectedSequence(groupId: GroupId): SequenceNumber {
    const seq = this.reflected.get(groupId);
    assert(seq !== undefined, () => `group ${groupId} is in the domain`);
    return asSequence(seq);
  }

  /** The position of the last record reflected by this tracker (time mode order check). */
  get lastReflectedPosition(): Position | undefined {
    return this.last?.position;
  }

  /** Call after applying (or skipping, for markers and time advances) one record. */
  noteReflected(groupId: GroupId, sequence: SequenceNumber, position: Position): void {
    const prev = this.reflected.get(groupId);
    assert(prev !== undefined, () => `group ${groupId} is in the domain`);
    assert(sequence === prev + 1, () => `I2: group ${groupId} reflects ${sequence} right after ${prev}`);
    const last = this.last;
    const current = { groupId, position: positionOf(position) };
    if (this.mode === "time" && last !== undefined) {
      // The node's own order (peer input was checked on arrival: positions increase within a
      // group; across groups and primaries the order is total), so an assertion.
      assert(
        compareHeads(current, last) > 0,
        () => `time mode reflects in position order: ${formatPosition(position)} of group ${groupId} after ${formatPosition(last.position)} of group ${last.groupId}`,
      );
    }
    this.reflected.set(groupId, sequence);
    this.last = current;
  }
}

/** One journal entry as the takeover helper sees it. */
export interface SequencedPosition {
  readonly sequence: SequenceNumber;
  readonly position: Position;
}

/**
 * Takeover, per group: the last sequence to keep. `entries` are the group's journal
 * records after `reflectedSequence` up to its arrived sequence, in sequence order
 * (so in position order). Keeps every record at or before the frontier; never less than
 * what is already reflected (in seq mode the volumes may already hold more than the
 * frontier; that cannot be undone, and is only consistent per group). Everything after
 * the returned sequence is dropped from the journal. `node`: the group's primary node, when
 * the frontier is a domain position (its entries are that node's).
 */
export function keepThroughSequence(reflectedSequence: SequenceNumber, entries: readonly SequencedPosition[], frontierPosition: Position | undefined, node?: string): SequenceNumber {
  let keep: number = reflectedSequence;
  let prev: SequencedPosition | undefined;
  for (const entry of entries) {
    assert(entry.sequence === (prev === undefined ? reflectedSequence + 1 : prev.sequence + 1), "takeover entries are contiguous after the reflected sequence");
    assert(prev === undefined || comparePositions(entry.position, prev.position) > 0, "positions increase with the sequence in a group");
    prev = entry;
    const position = node === undefined ? entry.position : atNode(entry.position, node);
    if (frontierPosition === undefined || comparePositions(position, frontierPosition) > 0) break;
    keep = entry.sequence;
  }
  return asSequence(keep);
}

export interface TakeoverGroup {
  readonly groupId: GroupId;
  /** The group's primary node: positions of a domain over several primaries compare with it (position.ts). */
  readonly node?: string | undefined;
  /** Nothing more can arrive (its primary is fenced and all it accepted is here): it does not hold the frontier (see frontier()). */
  readonly complete?: boolean | undefined;
  readonly reflectedSequence: SequenceNumber;
  readonly arrivedSequence: SequenceNumber;
  readonly arrivedPosition: Position;
  /**
   * Journal records after reflectedSequence in sequence order: through arrivedSequence, or
   * through the first one past the frontier of the groups (none after it can be kept, so the
   * shell need not read them).
   */
  readonly entries: readonly SequencedPosition[];
}

export interface TakeoverPlanEntry {
  readonly groupId: GroupId;
  /** Reflect through this sequence, then drop every journal record after it. */
  readonly keepThroughSequence: SequenceNumber;
}

/**
 * Takeover of a whole domain: the frontier over the groups' arrived positions, and per
 * group what to keep. The shell stops receiving first (and waits for pending appends to
 * become durable or be discarded), reflects to the kept sequences in position order,
 * persists, drops the rest, and makes the volumes writable.
 */
export function takeoverPlan(groups: readonly TakeoverGroup[]): { readonly frontier: Position | undefined; readonly keep: readonly TakeoverPlanEntry[] } {
  const f = frontier(groups.map((g) => ({ arrivedPosition: g.node === undefined ? g.arrivedPosition : atNode(g.arrivedPosition, g.node), complete: g.complete === true })));
  const keep = groups.map((g) => {
    const last = g.entries[g.entries.length - 1];
    const lastPosition = last === undefined ? undefined : g.node === undefined ? last.position : atNode(last.position, g.node);
    assert(g.entries.length === g.arrivedSequence - g.reflectedSequence || (lastPosition !== undefined && g.entries.length < g.arrivedSequence - g.reflectedSequence && (f === undefined || comparePositions(lastPosition, f) > 0)),
      "takeover gets every journal record after reflected through arrived, or through the first past the frontier");
    const k = keepThroughSequence(g.reflectedSequence, g.entries, f, g.node);
    assert(k <= g.arrivedSequence, "takeover never keeps past arrived");
    return { groupId: g.groupId, keepThroughSequence: k };
  });
  return { frontier: f, keep };
}
