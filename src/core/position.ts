// A record's position: (write time, accept number). On one node write times never go
// back and accept numbers strictly increase, so position order is acceptance order, and
// within a group it is sequence order (docs/replication.md, "Positions and the frontier").
// Comparing write times alone is not enough: an open-system write stamped with the
// recorded time ties with the host write before it, and only the accept number tells
// which one came first.
//
// Positions of groups fed by different primaries compare by write time first (the
// patent's cross-system order); their accept numbers only break exact ties and carry no
// dependency information between those nodes.
import { assert } from "./assert.ts";
import { asAcceptNumber, asWriteTimeUs, type AcceptNumber, type WriteTimeUs } from "./types.ts";

export interface Position {
  readonly writeTimeUs: WriteTimeUs;
  readonly acceptNumber: AcceptNumber;
}

/** Below every record's position (accept numbers start at 1): "nothing yet". */
export const positionZero: Position = Object.freeze({ writeTimeUs: asWriteTimeUs(0), acceptNumber: asAcceptNumber(0) });

/** Negative when a comes first, 0 when equal, positive when b comes first. */
export function comparePositions(a: Position, b: Position): number {
  if (a.writeTimeUs !== b.writeTimeUs) return a.writeTimeUs < b.writeTimeUs ? -1 : 1;
  if (a.acceptNumber !== b.acceptNumber) return a.acceptNumber < b.acceptNumber ? -1 : 1;
  return 0;
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
  return { writeTimeUs: p.writeTimeUs, acceptNumber: p.acceptNumber };
}

export function formatPosition(p: Position): string {
  return `${p.writeTimeUs}/${p.acceptNumber}`;
}
