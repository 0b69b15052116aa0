// Pull mode on the secondary ([0047]; docs/replication-protocol.md, "Pull"): which PULL goes
// out next, on which stream, from which sequence, for how many bytes. Pure: the shell
// reports what happened (a stream opened or closed, a BATCH answered a PULL, the batch was
// journaled or refused for lack of journal room) and asks next() what to send.
//
// The primary answers each PULL with a batch starting exactly at its fromSequence, so the
// extent of an answer is known only when it arrives. Hence:
//  - at most one PULL is open (unanswered) at a time per group; the next one goes out as
//    soon as an answer arrives, before that batch is journaled (transfer and fdatasync
//    overlap), on the stream with the least work, so every stream carries traffic;
//  - the next PULL asks from the group's need (the first sequence it does not hold) when no
//    answer in hand covers it: a range lost with a stream is asked for again on a live
//    stream, whatever the reorder buffer holds (the gap's head is always pullable);
//    otherwise from the cursor (after the last record answered), while the reorder buffer
//    is small;
//  - it asks only for what the journal has room for (maxBytes), takes nothing while the
//    next record is parked for lack of room, and after a refusal for lack of room waits
//    until the journal has room for what was refused;
//  - answers in hand (received, not yet journaled) are bounded in count and bytes.
// A stream whose PULL goes unanswered is closed by the shell's AnswerWatch (liveness.ts);
// removeStream then forgets the PULL, and the next one asks for the same range elsewhere.
import { assert } from "./assert.ts";
import { faultInjected } from "./faults.ts";
import { replBatchBytesMax, replPullBytesMax, replPullsInHandMax } from "./limits.ts";

export interface PullRequest {
  readonly stream: number;
  readonly fromSequence: number;
  readonly maxBytes: number;
}

/** What the group looks like now, when next() is asked. */
export interface PullView {
  /** The first sequence the group needs (the receiver's nextSequence). */
  readonly needSequence: number;
  /** The record at needSequence is held but waits for journal room (receiver.parked). */
  readonly parked: boolean;
  /** What the journal can take now. */
  readonly journalFreeBytes: number;
  /** Records held past a gap (receiver.reorderBytes). */
  readonly reorderBytes: number;
}

interface Pull {
  readonly id: number;
  readonly stream: number;
  readonly from: number;
  /** Last sequence of the answer; undefined while the PULL is open. */
  to: number | undefined;
  bytes: number;
}

/** Records past a gap above which no PULL for later records goes out (the gap is asked for first). */
export const pullForwardReorderBytesMax = replBatchBytesMax * 8;

export class PullPlanner {
  private readonly bytesMax: number;
  private readonly inHandMax: number;
  private readonly streams: number[] = [];
  private readonly pulls: Pull[] = [];
  private nextId = 1;
  private cursor = 0;
  private roomNeededBytes = 0;
  private rotation = 0;
  private blockedOnRoomValue = false;

  constructor(options: { bytesMax?: number; inHandMax?: number } = {}) {
    this.bytesMax = options.bytesMax ?? replPullBytesMax;
    this.inHandMax = options.inHandMax ?? replPullsInHandMax;
    assert(this.bytesMax >= 1 && this.inHandMax >= 1, "pull limits are positive");
  }

  /** A PULL is unanswered. */
  get open(): boolean {
    return this.pulls.some((p) => p.to === undefined);
  }
  /** Answers received and not yet journaled. */
  get inHand(): number {
    return this.pulls.filter((p) => p.to !== undefined).length;
  }
  /** The last next() sent nothing because the journal has no room (or the next record is parked): the group waits for reflection. */
  get blockedOnRoom(): boolean {
    return this.blockedOnRoomValue;
  }
  /** A refused batch waits for this much journal room (0: none). */
  get roomNeeded(): number {
    return this.roomNeededBytes;
  }

  /** The group's receiver starts over (a new copy): forget every PULL and where they reached. */
  restart(): void {
    this.pulls.length = 0;
    this.cursor = 0;
    this.roomNeededBytes = 0;
  }

  addStream(stream: number): void {
    if (!this.streams.includes(stream)) this.streams.push(stream);
  }

  /** The stream is gone: its open PULL will not be answered (answers in hand still get journaled). */
  removeStream(stream: number): void {
    const at = this.streams.indexOf(stream);
    if (at >= 0) this.streams.splice(at, 1);
    // The old fault: the PULL lost with the stream stayed open, and nobody asked for its range again.
    if (faultInjected("pull-waits-on-silent-stream")) return;
    for (let i = this.pulls.length - 1; i >= 0; i -= 1) {
      const pull = this.pulls[i];
      if (pull !== undefined && pull.stream === stream && pull.to === undefined) this.pulls.splice(i, 1);
    }
  }

  /**
   * A BATCH arrived on `stream` carrying [firstSequence, lastSequence] (both undefined for
   * an empty answer), `bytes` in all. Returns the id to pass to journaled() or refused()
   * once the batch was handled, or undefined when it answered no open PULL of this planner
   * (an empty answer, or one nobody waits for).
   */
  answered(stream: number, lastSequence: number | undefined, bytes: number): number | undefined {
    const pull = this.pulls.find((p) => p.stream === stream && p.to === undefined);
    if (pull === undefined) return undefined;
    if (lastSequence === undefined || lastSequence < pull.from) {
      // Nothing from fromSequence on yet (or an answer that does not fit the request): ask again.
      this.pulls.splice(this.pulls.indexOf(pull), 1);
      return undefined;
    }
    pull.to = lastSequence;
    pull.bytes = bytes;
    this.cursor = Math.max(this.cursor, lastSequence + 1);
    return pull.id;
  }

  /** The answered batch is journaled (or dropped as duplicates). */
  journaled(id: number): void {
    const at = this.pulls.findIndex((p) => p.id === id);
    if (at >= 0) this.pulls.splice(at, 1);
  }

  /** The answered batch was refused: the journal lacks room for `roomNeededBytes`; ask for it again once it has. */
  refused(id: number, roomNeededBytes: number): void {
    this.journaled(id);
    this.roomNeededBytes = Math.max(this.roomNeededBytes, roomNeededBytes);
  }

  /** The next PULL to send, or undefined (one is open, no room, nothing to ask on). Call until undefined. */
  next(view: PullView): PullRequest | undefined {
    this.blockedOnRoomValue = view.parked;
    if (this.streams.length === 0 || this.open || view.parked) return undefined;
    const inHand = this.pulls.filter((p) => p.to !== undefined);
    if (inHand.length >= this.inHandMax) return undefined;
    const inHandBytes = inHand.reduce((sum, p) => sum + p.bytes, 0);
    const roomBytes = view.journalFreeBytes - inHandBytes;
    if (roomBytes <= 0 || roomBytes < this.roomNeededBytes) {
      // With answers in hand, their journaling decides; with none, only reflection frees room.
      this.blockedOnRoomValue = inHand.length === 0;
      return undefined;
    }
    const need = view.needSequence;
    const covered = inHand.some((p) => p.from <= need && need <= (p.to ?? need));
    let from = need;
    if (covered) {
      if (view.reorderBytes > pullForwardReorderBytesMax) return undefined; // let the gap fill first
      from = Math.max(this.cursor, need);
    }
    const stream = this.quietestStream();
    this.roomNeededBytes = 0;
    const pull: Pull = { id: this.nextId++, stream, from, to: undefined, bytes: 0 };
    this.pulls.push(pull);
    return { stream, fromSequence: from, maxBytes: Math.max(1, Math.min(this.bytesMax, roomBytes)) };
  }

  /** The stream with the fewest answers in hand, taking turns among equals. */
  private quietestStream(): number {
    assert(this.streams.length > 0, "a stream to pull on");
    this.rotation = (this.rotation + 1) % this.streams.length;
    let best: number | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.streams.length; i += 1) {
      const stream = this.streams[(this.rotation + i) % this.streams.length];
      assert(stream !== undefined, "stream in range");
      const load = this.pulls.filter((p) => p.stream === stream).length;
      if (load < bestLoad) {
        best = stream;
        bestLoad = load;
      }
    }
    assert(best !== undefined, "a stream was chosen");
    return best;
  }
}
