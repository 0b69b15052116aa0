// Write-time stamping (patent Fig. 3, 10, 11): every accepted write gets a write time
// by the node's policy and a node-wide accept number. Whatever the policy, write times
// never go back on a node, and the accept number breaks ties across groups, so a
// secondary never reflects an open-system write ahead of the host write it followed.
import { assert, unreachable } from "./assert.ts";
import { safeIntegerMax } from "./limits.ts";
import { asAcceptNumber, asWriteTimeUs, type AcceptNumber, type WriteTimePolicy, type WriteTimeUs } from "./types.ts";

/** Write time information (patent 340) plus the last accept number handed out. */
export interface WriteTimeState {
  readonly recordedWriteTimeUs: WriteTimeUs;
  readonly lastAcceptNumber: AcceptNumber;
}

export interface Stamp {
  readonly writeTimeUs: WriteTimeUs;
  readonly acceptNumber: AcceptNumber;
  /** True when a host-supplied time was behind the recorded time and was raised to it. */
  readonly hostTimeRaised: boolean;
  /** True when a host-supplied time was too far ahead of the node's clock and was lowered to the bound. */
  readonly hostTimeClamped: boolean;
}

export const initialWriteTimeState: WriteTimeState = {
  recordedWriteTimeUs: asWriteTimeUs(0),
  lastAcceptNumber: asAcceptNumber(0),
};

export interface StampInput {
  readonly policy: WriteTimePolicy;
  /** The node's clock, microseconds since the epoch (used by `clock`). */
  readonly nowUs: number;
  /** The write time the host put on the write, if any (used by `host`). */
  readonly hostWriteTimeUs?: number | undefined;
  /**
   * The latest host time recorded as it is (`host`): a later one is lowered to it. A host
   * clock that runs far ahead (a write stamped in the year 2255) would otherwise become the
   * node's recorded time for good, and every write without a time would carry it. Lowering
   * keeps stamps monotonic and in acceptance order, so consistency is unchanged.
   */
  readonly hostWriteTimeMaxUs?: number | undefined;
  /**
   * `host` on a node with --max-clock-skew: a write without a host time (every NBD write) is
   * stamped from the node's clock (this, microseconds since the epoch), never below the
   * recorded time, instead of with the recorded time alone, so that it is comparable with
   * other primaries' write times (core/named-domain.ts). Undefined: the recorded time.
   */
  readonly untimedNowUs?: number | undefined;
}

/** Pure: the stamp for one write and the state after it. */
export function stampWrite(state: WriteTimeState, input: StampInput): { state: WriteTimeState; stamp: Stamp } {
  const recorded = state.recordedWriteTimeUs;
  let writeTimeUs: number;
  let hostTimeRaised = false;
  let hostTimeClamped = false;
  switch (input.policy) {
    case "host": {
      // Fig. 3: a host's time is recorded and used; a write without one gets the recorded time.
      let hostUs = input.hostWriteTimeUs;
      const hostMaxUs = input.hostWriteTimeMaxUs;
      if (hostUs !== undefined && hostMaxUs !== undefined && hostUs > hostMaxUs) {
        hostUs = Math.max(0, Math.floor(hostMaxUs));
        hostTimeClamped = true;
      }
      if (hostUs === undefined) {
        writeTimeUs = input.untimedNowUs === undefined ? recorded : Math.max(Math.floor(input.untimedNowUs), recorded);
      } else {
        hostTimeRaised = hostUs < recorded;
        writeTimeUs = Math.max(hostUs, recorded);
      }
      break;
    }
    case "clock":
      // Fig. 10: the node's own clock; a clock that steps back does not take the time back.
      writeTimeUs = Math.max(Math.floor(input.nowUs), recorded);
      break;
    case "counter":
      // Fig. 11: a node-wide counter, one step per write.
      writeTimeUs = recorded + 1;
      break;
    default:
      unreachable(input.policy, "write-time policy");
  }
  const acceptNumber = state.lastAcceptNumber + 1;
  assert(Number.isSafeInteger(writeTimeUs) && writeTimeUs <= safeIntegerMax, "write time stays an exact integer");
  assert(writeTimeUs >= recorded, "write time never goes back on a node");
  assert(acceptNumber > state.lastAcceptNumber, "accept numbers strictly increase");
  const stamp: Stamp = { writeTimeUs: asWriteTimeUs(writeTimeUs), acceptNumber: asAcceptNumber(acceptNumber), hostTimeRaised, hostTimeClamped };
  return { state: { recordedWriteTimeUs: stamp.writeTimeUs, lastAcceptNumber: stamp.acceptNumber }, stamp };
}

/** Recovery: the state must be at least what any surviving record or saved metadata shows. */
export function mergeWriteTimeState(a: WriteTimeState, b: WriteTimeState): WriteTimeState {
  return {
    recordedWriteTimeUs: asWriteTimeUs(Math.max(a.recordedWriteTimeUs, b.recordedWriteTimeUs)),
    lastAcceptNumber: asAcceptNumber(Math.max(a.lastAcceptNumber, b.lastAcceptNumber)),
  };
}

/** Validates a host-supplied write time at the edge, before it reaches stamping. */
export function isValidHostWriteTimeUs(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0;
}
