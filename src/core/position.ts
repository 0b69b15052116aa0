// A record's position: (write time, accept number). On one node write times never go
// back and accept numbers strictly increase, so position order is acceptance order, and
// within a group it is sequence order (docs/replication.md, "Positions and the frontier").
// Comparing write times alone is not enough: an open-system write stamped with the
// recorded time ties with the host write before it, and only the accept number tells
// which one came first.
//
// Positions of groups fed by different primaries meet only on a secondary, in a consistency
// domain named over several primaries (`pair create --domain`, docs/replication.md "Several
// primaries on one secondary"). There a position carries the id of the primary node that
// stamped it, and the order is (write time, node id, accept number): write time first (the
// patent's cross-system order, comparable because the operator declared it so), then a fixed
// node order for equal write times (two primaries whose hosts send no write time stamp
// 0/1, 0/2, ... in step), then the accept number, which orders one node's records. Within
// one node the node id is equal, so the order is (write time, accept number) as before; an
// exact tie of different nodes is impossible, and never an assertion.
import { assert } from "./assert.ts";
import { faultInjected } from "./faults.ts";
import { asAcceptNumber, asWriteTimeUs, type AcceptNumber, type WriteTimeUs } from "./types.ts";

export interface Position {
  readonly writeTimeUs: WriteTimeUs;
  readonly acceptNumber: AcceptNumber;
  /**
   * The primary node that stamped it, where positions of several primaries are compared
   * (the secondary's reflector); absent where all positions are one node's (compares as "").
   * Never mix positions with and without it in one comparison of one node's records.
   */
  readonly node?: string | undefined;
}

/** A position in a consistency domain on a secondary: it names its primary node. */
export interface DomainPosition extends Position {
  readonly node: string;
}

/** Below every record's position (accept numbers start at 1): "nothing yet". */
export const positionZero: Position = Object.freeze({ writeTimeUs: asWriteTimeUs(0), acceptNumber: asAcceptNumber(0) });

/**
 * Negative when a comes first, 0 when equal, positive when b comes first. The order is
 * (write time, node id, accept number), a total order: node ids compare by UTF-16 code units
 * (ids are printable ASCII), a missing one as "".
 */
export function comparePositions(a: Position, b: Position): number {
  if (a.writeTimeUs !== b.writeTimeUs) return a.writeTimeUs < b.writeTimeUs ? -1 : 1;
  const nodeA = a.node ?? "";
  const nodeB = b.node ?? "";
  // The old fault: positions of different primaries compared without the node order, so an exact tie was asserted.
  if (nodeA !== nodeB && !faultInjected("position-tie-asserts")) return nodeA < nodeB ? -1 : 1;
  if (a.acceptNumber !== b.acceptNumber) return a.acceptNumber < b.acceptNumber ? -1 : 1;
  return 0;
}

/** `p` as a position of `node`'s records (a copy). */
export function atNode(p: Position, node: string): DomainPosition {
  return { writeTimeUs: p.writeTimeUs, acceptNumber: p.acceptNumber, node };
}

export function positionAtOrBefore(a: Position, b: Position): boolean {
  return comparePositions(a, b) <= 0;
}

/** The smallest of `positions`, or undefined for an empty list. */
export function minPosition(positions: Iterable<Position>): Position | undefined {
  let min: Position | undefined;
  for (const p of positions) {
    if (min === undefined || comparePositions(p, min) < 0) min = p;
  }
  return min;
}

/** The position of anything that carries one (a journal record, a head). A copy, not a view. */
export function positionOf(p: Position): Position {
  assert(Number.isSafeInteger(p.writeTimeUs) && p.writeTimeUs >= 0, "write time is a non-negative safe integer");
  assert(Number.isSafeInteger(p.acceptNumber) && p.acceptNumber >= 0, "accept number is a non-negative safe integer");
  return p.node === undefined ? { writeTimeUs: p.writeTimeUs, acceptNumber: p.acceptNumber } : { writeTimeUs: p.writeTimeUs, acceptNumber: p.acceptNumber, node: p.node };
}

export function formatPosition(p: Position): string {
  return p.node === undefined ? `${p.writeTimeUs}/${p.acceptNumber}` : `${p.writeTimeUs}/${p.node}/${p.acceptNumber}`;
}
