// The primary's sender for one pair (patent Fig. 6 steps 1100-1101, 1105-1106; [0037] for
// parallel transfer, [0047] for pull). It decides which sequence range goes next on which
// stream, and tracks what the secondary has acknowledged; the shell reads the records
// from the journal and moves the bytes.
//
// Sequences: acked <= sent <= durable (the primary journal's fdatasync'd prefix).
//  - acked: cumulative, from the secondary's ACKs (its durable arrived sequence) and the
//    handshake; never goes back. The journal may trim through trimFloor (= acked).
//  - sent: the highest sequence put into a batch since the last handshake.
//  - Only durable records are sent: a primary crash can never leave the secondary holding
//    a record the primary forgot and would number again.
//
// A batch goes through plan -> commit (the shell reads the journal in between):
//   const plan = s.planBatch(stream, durableSequence);      // undefined: nothing to do now
//   ... read records plan.fromSequence.. while <= plan.lastSequenceMax, count <= plan.recordsMax,
//       bytes <= plan.bytesMax (but at least one record) ...
//   if (s.commitBatch(plan, lastSequence, bytes)) send(stream, batch with plan.batchId)
// Push: call planBatch for each open stream whenever something changes (new durable
// records, an ACK, a stream back). Pull: call planPull for each PULL(fromSequence,
// maxBytes): the answer starts exactly at fromSequence ("wait": hold the PULL, then answer
// "nothing yet"). A NACK NO_SPACE (the secondary's journal is full) marks its batch lost
// (onBatchRefused); the shell backs off before it sends again.
// Window: per stream at most batchesInFlightPerStreamMax unanswered batches; per pair
// at most inFlightBytesMax / inFlightRecordsMax unacknowledged (plus one record), which is
// what bounds the secondary's reorder buffer (limits.ts).
// Link loss: onStreamLost marks that stream's unanswered batches lost; they are resent
// first (what of them is not acknowledged yet, as one batch) on any stream. A full loss (onConnectionLost) waits for the handshake:
// onReconnect(secondary's arrived) rewinds sent to it and resends everything after it.
import { assert } from "./assert.ts";
import {
  replBatchBytesMax, replBatchRecordsMax, replBatchesInFlightPerStreamMax, replInFlightBytesMax,
  replInFlightRecordsMax, replStreamsMax, timeAdvanceIdleIntervalMs, timeAdvanceIntervalMs,
} from "./limits.ts";
import { asSequence, type SequenceNumber } from "./types.ts";

export interface SenderOptions {
  readonly streams: number;
  /** What the secondary is known to hold durably (S0 after an initial copy; the trim floor after a restart). */
  readonly ackedSequence: SequenceNumber;
  readonly batchBytesMax?: number;
  readonly batchRecordsMax?: number;
  readonly batchesInFlightPerStreamMax?: number;
  readonly inFlightBytesMax?: number;
  readonly inFlightRecordsMax?: number;
}

export interface BatchPlan {
  readonly batchId: number;
  readonly stream: number;
  readonly fromSequence: SequenceNumber;
  /** Never read past this sequence (the durable end, or the end of a resent range). */
  readonly lastSequenceMax: SequenceNumber;
  /** Stop before a record that would pass this, unless it is the first. */
  readonly bytesMax: number;
  readonly recordsMax: number;
  /** A resend of a lost batch: commit all of [fromSequence, lastSequenceMax] (its bytes are at most bytesMax). */
  readonly resend: boolean;
  /** The answer to a PULL: starts exactly at the PULL's fromSequence; the secondary paces and tracks it. */
  readonly pull: boolean;
}

/** What to do with one PULL (planPull). */
export type PullPlanResult =
  | { readonly kind: "plan"; readonly plan: BatchPlan }
  /** Nothing durable at fromSequence yet: hold the PULL (up to replPullWaitMs), then answer an empty BATCH. */
  | { readonly kind: "wait" }
  /** The secondary already holds fromSequence durably (an ACK overtook its PULL) and it is trimmed here: answer an empty BATCH. */
  | { readonly kind: "empty" }
  /** NACK OUT_OF_RANGE: the range is gone here but was never acknowledged, or lies past anything accepted. */
  | { readonly kind: "refuse"; readonly reason: string };

type RangeState = "inflight" | "answered" | "lost";

interface SentRange {
  from: number;
  to: number;
  bytes: number;
  state: RangeState;
  stream: number;
  batchId: number;
}

export type SenderResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export interface SenderStatus {
  readonly connected: boolean;
  readonly ackedSequence: SequenceNumber;
  readonly sentSequence: SequenceNumber;
  readonly inFlightBytes: number;
  readonly inFlightRecords: number;
  readonly lostBatches: number;
}

export class PairSender {
  readonly streams: number;
  private readonly batchBytesMax: number;
  private readonly batchRecordsMax: number;
  private readonly perStreamMax: number;
  private readonly inFlightBytesMax: number;
  private readonly inFlightRecordsMax: number;
  private connectedValue = false;
  private acked: number;
  private sent: number;
  /** Unacknowledged batches in sequence order; bounded by inFlightRecordsMax (a batch has >= 1 record). */
  private ranges: SentRange[] = [];
  private unackedBytes = 0;
  private readonly unansweredPerStream: number[];
  private openPlan: BatchPlan | undefined;
  private nextBatchId = 1;

  constructor(options: SenderOptions) {
    assert(Number.isSafeInteger(options.streams) && options.streams >= 1 && options.streams <= replStreamsMax, "stream count within limits");
    assert(Number.isSafeInteger(options.ackedSequence) && options.ackedSequence >= 0, "acked sequence is a count");
    this.streams = options.streams;
    this.batchBytesMax = options.batchBytesMax ?? replBatchBytesMax;
    this.batchRecordsMax = options.batchRecordsMax ?? replBatchRecordsMax;
    this.perStreamMax = options.batchesInFlightPerStreamMax ?? replBatchesInFlightPerStreamMax;
    this.inFlightBytesMax = options.inFlightBytesMax ?? replInFlightBytesMax;
    this.inFlightRecordsMax = options.inFlightRecordsMax ?? replInFlightRecordsMax;
    assert(this.batchBytesMax >= 1 && this.batchRecordsMax >= 1 && this.perStreamMax >= 1, "sender limits are positive");
    assert(this.batchRecordsMax <= this.inFlightRecordsMax, "a batch fits the record window");
    this.acked = options.ackedSequence;
    this.sent = options.ackedSequence;
    this.unansweredPerStream = new Array<number>(options.streams).fill(0);
  }

  get connected(): boolean {
    return this.connectedValue;
  }
  get ackedSequence(): SequenceNumber {
    return asSequence(this.acked);
  }
  get sentSequence(): SequenceNumber {
    return asSequence(this.sent);
  }
  /** The primary journal may trim records at or below this (and below its own applied checkpoint). */
  get trimFloor(): SequenceNumber {
    return asSequence(this.acked);
  }
  /** A batch id no batch has had yet (an empty answer to a PULL), and from then on never given out again. */
  freshBatchId(): number {
    return this.nextBatchId++;
  }
  /** Every batch planned from now on has an id at or above this. */
  get nextBatchIdFloor(): number {
    return this.nextBatchId;
  }
  unansweredBatches(stream: number): number {
    return this.unansweredPerStream[stream] ?? 0;
  }
  status(): SenderStatus {
    return {
      connected: this.connectedValue,
      ackedSequence: asSequence(this.acked),
      sentSequence: asSequence(this.sent),
      inFlightBytes: this.unackedBytes,
      inFlightRecords: this.unackedRecords(),
      lostBatches: this.ranges.filter((r) => r.state === "lost").length,
    };
  }

  /** The next batch for `stream`, or undefined (not connected, a plan open, window full, nothing durable to send). */
  planBatch(stream: number, durableSequence: SequenceNumber, bytesMax: number = this.batchBytesMax): BatchPlan | undefined {
    this.checkStream(stream);
    assert(durableSequence >= this.sent, "durable sequence is never behind what was sent");
    if (!this.connectedValue || this.openPlan !== undefined) return undefined;
    if ((this.unansweredPerStream[stream] ?? 0) >= this.perStreamMax) return undefined;
    const lost = this.ranges.find((r) => r.state === "lost");
    let plan: BatchPlan;
    if (lost !== undefined) {
      // Records at or below acked may be trimmed from the journal already: resend the rest.
      const from = Math.max(lost.from, this.acked + 1);
      assert(from <= lost.to, "a lost range still holds unacknowledged records");
      plan = {
        batchId: this.nextBatchId++,
        stream,
        fromSequence: asSequence(from),
        lastSequenceMax: asSequence(lost.to),
        // Whole, unless the caller asks for less (a secondary out of room: a smaller probe).
        bytesMax: Math.max(1, Math.min(lost.bytes, bytesMax)),
        recordsMax: lost.to - from + 1,
        resend: true,
        pull: false,
      };
    } else {
      if (durableSequence <= this.sent) return undefined;
      const recordsRoom = this.inFlightRecordsMax - this.unackedRecords();
      const bytesRoom = this.inFlightBytesMax - this.unackedBytes;
      if (recordsRoom <= 0 || bytesRoom <= 0) return undefined;
      const recordsMax = Math.min(this.batchRecordsMax, recordsRoom, durableSequence - this.sent);
      plan = {
        batchId: this.nextBatchId++,
        stream,
        fromSequence: asSequence(this.sent + 1),
        lastSequenceMax: asSequence(this.sent + recordsMax),
        bytesMax: Math.max(1, Math.min(bytesMax, this.batchBytesMax, bytesRoom)),
        recordsMax,
        resend: false,
        pull: false,
      };
    }
    this.openPlan = plan;
    return plan;
  }

  /**
   * Pull mode: the answer to PULL(fromSequence, bytesMax) on `stream` starts exactly at
   * fromSequence (docs/replication-protocol.md), whatever was sent before: the secondary
   * asks again for a range it lost with a stream, and paces the transfer itself (the push
   * windows do not apply). `firstHeldSequence` is the journal's first record (those before
   * it are trimmed); `acceptedSequence` the last one accepted.
   */
  planPull(stream: number, fromSequence: number, durableSequence: SequenceNumber, firstHeldSequence: number, acceptedSequence: number, bytesMax: number): PullPlanResult {
    this.checkStream(stream);
    assert(durableSequence >= this.sent && acceptedSequence >= durableSequence, "durable is between sent and accepted");
    if (!Number.isSafeInteger(fromSequence) || fromSequence < 1) return { kind: "refuse", reason: `PULL from sequence ${fromSequence}` };
    if (!this.connectedValue || this.openPlan !== undefined) return { kind: "wait" };
    if (fromSequence < firstHeldSequence) {
      if (fromSequence <= this.acked) return { kind: "empty" };
      return { kind: "refuse", reason: `PULL from sequence ${fromSequence}, but this journal holds only ${firstHeldSequence} on and the secondary acknowledged only ${this.acked}` };
    }
    if (fromSequence > acceptedSequence + 1) return { kind: "refuse", reason: `PULL from sequence ${fromSequence}, past the last accepted ${acceptedSequence}` };
    if (fromSequence > durableSequence) return { kind: "wait" };
    const plan: BatchPlan = {
      batchId: this.nextBatchId++,
      stream,
      fromSequence: asSequence(fromSequence),
      lastSequenceMax: durableSequence,
      bytesMax: Math.max(1, bytesMax),
      recordsMax: Math.min(this.batchRecordsMax, durableSequence - fromSequence + 1),
      resend: false,
      pull: true,
    };
    this.openPlan = plan;
    return { kind: "plan", plan };
  }

  /**
   * The shell read [plan.fromSequence, lastSequence] (`bytes` in all) and will send it.
   * False when the plan was cancelled meanwhile (its stream or the connection was lost):
   * then send nothing.
   */
  commitBatch(plan: BatchPlan, lastSequence: SequenceNumber, bytes: number): boolean {
    if (this.openPlan !== plan) return false;
    this.openPlan = undefined;
    assert(lastSequence >= plan.fromSequence && lastSequence <= plan.lastSequenceMax, "a batch carries at least one record, within its plan");
    assert(lastSequence - plan.fromSequence + 1 <= plan.recordsMax, "a batch keeps to its record limit");
    assert(Number.isSafeInteger(bytes) && bytes > 0, "a batch has bytes");
    assert(bytes <= plan.bytesMax || lastSequence === plan.fromSequence, "a batch keeps to its byte limit unless it is one record");
    if (plan.pull) {
      this.sent = Math.max(this.sent, lastSequence);
      return true;
    }
    if (plan.resend) {
      const range = this.ranges.find((r) => r.state === "lost" && r.to === plan.lastSequenceMax);
      assert(range !== undefined && range.from <= plan.fromSequence, "a resent range is still lost when committed");
      assert(lastSequence <= range.to && bytes <= range.bytes, "a resend carries a prefix of the unacknowledged rest of the lost range");
      if (lastSequence < range.to) {
        // A prefix goes out now; the rest stays lost (its bytes: what the range counted less
        // the prefix, an upper bound when part of the range was acknowledged meanwhile).
        const rest: SentRange = { from: lastSequence + 1, to: range.to, bytes: range.bytes - bytes, state: "lost", stream: range.stream, batchId: range.batchId };
        assert(rest.bytes > 0, "the rest of a split range keeps bytes");
        this.ranges.splice(this.ranges.indexOf(range) + 1, 0, rest);
        range.to = lastSequence;
      } else {
        this.unackedBytes -= range.bytes - bytes;
      }
      range.from = plan.fromSequence;
      range.bytes = bytes;
      range.state = "inflight";
      range.stream = plan.stream;
      range.batchId = plan.batchId;
    } else {
      assert(plan.fromSequence === this.sent + 1, "new batches continue where sending stopped");
      this.ranges.push({ from: plan.fromSequence, to: lastSequence, bytes, state: "inflight", stream: plan.stream, batchId: plan.batchId });
      this.unackedBytes += bytes;
      this.sent = lastSequence;
    }
    this.unansweredPerStream[plan.stream] = (this.unansweredPerStream[plan.stream] ?? 0) + 1;
    assert((this.unansweredPerStream[plan.stream] ?? 0) <= this.perStreamMax, "per-stream window holds");
    assert(this.ranges.length <= this.inFlightRecordsMax, "sent ranges stay bounded");
    return true;
  }

  /** The shell gave up on a plan (read error, shutting down). */
  abandonPlan(plan: BatchPlan): void {
    if (this.openPlan === plan) this.openPlan = undefined;
  }

  /**
   * An ACK on `stream` for `batchId` carrying the secondary's durable arrived sequence.
   * Acks may be stale, duplicated, out of order, or for batches of an earlier connection:
   * the cumulative value only moves acked forward. It may pass `sent`: after a reconnect
   * the secondary can make durable records it was handed before the handshake; then sent
   * moves up with it (those need no resend). Not ok: the peer acknowledged something this
   * primary has not made durable (close the connection; it is broken or not our secondary).
   */
  onAck(stream: number, batchId: number, arrivedSequence: number, durableSequence: SequenceNumber): SenderResult {
    this.checkStream(stream);
    if (!Number.isSafeInteger(arrivedSequence) || arrivedSequence < 0) return { ok: false, reason: `bad acknowledged sequence ${arrivedSequence}` };
    if (arrivedSequence > durableSequence) {
      return { ok: false, reason: `acknowledged ${arrivedSequence} but the journal is durable only through ${durableSequence}` };
    }
    const range = this.ranges.find((r) => r.batchId === batchId && r.stream === stream && r.state === "inflight");
    if (range !== undefined) {
      range.state = "answered";
      this.unansweredPerStream[stream] = (this.unansweredPerStream[stream] ?? 0) - 1;
      this.loseUnansweredBefore(stream, batchId);
    }
    if (arrivedSequence > this.acked) {
      this.acked = arrivedSequence;
      let drop = 0;
      for (const r of this.ranges) {
        if (r.to > this.acked) break;
        drop += 1;
        this.unackedBytes -= r.bytes;
        if (r.state === "inflight") this.unansweredPerStream[r.stream] = (this.unansweredPerStream[r.stream] ?? 0) - 1;
      }
      if (drop > 0) this.ranges.splice(0, drop);
      if (this.acked > this.sent) {
        assert(this.ranges.length === 0, "nothing is unacknowledged below an ack past sent");
        this.sent = this.acked;
        if (this.openPlan !== undefined && !this.openPlan.resend) this.openPlan = undefined; // it starts at or below acked now
      }
      if (this.openPlan?.resend === true && this.openPlan.lastSequenceMax <= this.acked) this.openPlan = undefined;
    }
    this.checkAccounting();
    return { ok: true };
  }

  /**
   * The secondary refused a batch for lack of space (NACK NO_SPACE): it took none of it.
   * The batch leaves the stream's window and is resent (whole, first) like a lost one.
   * False when no such batch is in flight (a pulled one, or one already resent).
   */
  onBatchRefused(stream: number, batchId: number): boolean {
    this.checkStream(stream);
    const range = this.ranges.find((r) => r.batchId === batchId && r.stream === stream && r.state === "inflight");
    if (range === undefined) return false;
    range.state = "lost";
    this.unansweredPerStream[stream] = (this.unansweredPerStream[stream] ?? 0) - 1;
    this.loseUnansweredBefore(stream, batchId);
    this.checkAccounting();
    return true;
  }

  /**
   * The secondary answers the batches of one stream in the order they were sent: one sent
   * before `batchId` on `stream` and still unanswered never will be (it went missing on
   * the way). It is resent like a lost one, without waiting for a deadline.
   */
  private loseUnansweredBefore(stream: number, batchId: number): void {
    for (const r of this.ranges) {
      if (r.state !== "inflight" || r.stream !== stream || r.batchId >= batchId) continue;
      r.state = "lost";
      this.unansweredPerStream[stream] = (this.unansweredPerStream[stream] ?? 0) - 1;
    }
  }

  /** One stream broke: its unanswered batches are resent (whole, first) on the others or when it is back. */
  onStreamLost(stream: number): void {
    this.checkStream(stream);
    for (const r of this.ranges) {
      if (r.state === "inflight" && r.stream === stream) r.state = "lost";
    }
    this.unansweredPerStream[stream] = 0;
    if (this.openPlan?.stream === stream) this.openPlan = undefined;
    this.checkAccounting();
  }

  /**
   * A stream's handshake while others kept the pair connected: the secondary says it holds
   * through `secondaryArrivedSequence` durably. Batches it answered but has not made durable
   * (held past a gap, or waiting for journal room) may be gone: it may have restarted since
   * (a crash or a power loss drops what was not durable). So every answered range past what
   * it holds is sent again, first; the secondary drops what it still has as duplicates.
   * Without this, a restart of the secondary seen by one stream at a time never rewound the
   * sender, and the pair waited for ever for records nobody would resend (found by the
   * whole-node simulation). Not ok: the secondary holds more than this primary has durable.
   */
  onStreamHandshake(stream: number, secondaryArrivedSequence: number, durableSequence: SequenceNumber): SenderResult {
    this.checkStream(stream);
    if (!Number.isSafeInteger(secondaryArrivedSequence) || secondaryArrivedSequence < 0) {
      return { ok: false, reason: `bad handshake sequence ${secondaryArrivedSequence}` };
    }
    if (secondaryArrivedSequence > durableSequence) {
      return { ok: false, reason: `secondary holds through ${secondaryArrivedSequence} but the primary's journal is durable only through ${durableSequence}` };
    }
    // Below what was acknowledged: an ACK on another stream overtook this handshake (streams
    // are not ordered with each other); what is durable there stays durable.
    const holds = Math.max(secondaryArrivedSequence, this.acked);
    for (const r of this.ranges) if (r.state === "answered" && r.to > holds) r.state = "lost";
    this.checkAccounting();
    return { ok: true };
  }

  /** Every stream broke: nothing is sent until onReconnect. */
  onConnectionLost(): void {
    this.connectedValue = false;
    this.openPlan = undefined;
    for (const r of this.ranges) if (r.state === "inflight") r.state = "lost";
    this.unansweredPerStream.fill(0);
  }

  /**
   * The handshake after a (re)connect: the secondary's durable arrived sequence wins.
   * sent rewinds to it, and everything after it is sent again. Not ok (fail the pair, it
   * needs a new initial copy): the secondary holds less than it once acknowledged, or more
   * than this primary has durable.
   */
  onReconnect(secondaryArrivedSequence: number, durableSequence: SequenceNumber): SenderResult {
    if (!Number.isSafeInteger(secondaryArrivedSequence) || secondaryArrivedSequence < 0) {
      return { ok: false, reason: `bad handshake sequence ${secondaryArrivedSequence}` };
    }
    if (secondaryArrivedSequence < this.acked) {
      return { ok: false, reason: `secondary holds through ${secondaryArrivedSequence} but acknowledged ${this.acked}` };
    }
    if (secondaryArrivedSequence > durableSequence) {
      return { ok: false, reason: `secondary holds through ${secondaryArrivedSequence} but the primary's journal is durable only through ${durableSequence}` };
    }
    this.acked = secondaryArrivedSequence;
    this.sent = secondaryArrivedSequence;
    this.ranges = [];
    this.unackedBytes = 0;
    this.unansweredPerStream.fill(0);
    this.openPlan = undefined;
    this.connectedValue = true;
    return { ok: true };
  }

  private unackedRecords(): number {
    const first = this.ranges[0];
    return first === undefined ? 0 : this.sent - Math.max(first.from - 1, this.acked);
  }

  private checkStream(stream: number): void {
    assert(Number.isSafeInteger(stream) && stream >= 0 && stream < this.streams, () => `stream ${stream} exists`);
  }

  private checkAccounting(): void {
    assert(this.acked <= this.sent, "acked never passes sent");
    assert(this.unackedBytes >= 0, "unacked bytes never negative");
    assert(this.unansweredPerStream.every((n) => n >= 0 && n <= this.perStreamMax), "per-stream windows hold");
  }
}

/**
 * Whether an idle replicating group needs a time-advance record now (kind 4, DESIGN.md
 * "The data path"). It must move its arrived position past any write accepted elsewhere
 * in its domain, or that write waits for it at the frontier: so one is due `intervalMs`
 * after its last record once another group of this node has accepted a record since
 * (`othersAcceptedSince`: the node-wide accept number passed the group's last record).
 * With nothing accepted anywhere it holds nobody back, and only a heartbeat every
 * `idleIntervalMs` keeps the secondary's consistent-as-of time moving: a node of idle
 * groups sends almost nothing (issue 6, kind 8: 20 idle pairs under 3 % of a core).
 * All times on the monotonic clock.
 */
export function timeAdvanceDue(input: {
  readonly sinceLastRecordMs: number;
  readonly othersAcceptedSince: boolean;
  readonly intervalMs?: number;
  readonly idleIntervalMs?: number;
}): boolean {
  const intervalMs = input.intervalMs ?? timeAdvanceIntervalMs;
  const idleIntervalMs = input.idleIntervalMs ?? timeAdvanceIdleIntervalMs;
  assert(intervalMs > 0 && idleIntervalMs >= intervalMs, "time-advance intervals are positive and ordered");
  return input.sinceLastRecordMs >= (input.othersAcceptedSince ? intervalMs : idleIntervalMs);
}
