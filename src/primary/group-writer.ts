// The write path of a primary for one consistency group (patent Fig. 3, 10, 11):
// stamp -> next sequence number -> append to the group's journal -> answer; the volume is
// written only once the journal holds the record durably (docs/journal.md, "Journal before
// volume"). FUA and FLUSH wait for the journal's group commit. The journal is the
// write-ahead log: a checkpoint fdatasyncs the volumes, records how far they hold the
// journal, and lets the journal drop what is behind that point.
//
// An I/O error or a full disk (ENOSPC, EIO, also from fdatasync) stops this group alone
// (state `stopped`, with the path and the reason); it resumes by itself: the journal is
// re-read from the disk with O_DIRECT, re-verified and re-applied before writes are taken
// again (docs/out-of-space.md).
import { ControlError, VolumeIoError } from "../core/errors.ts";
import { errorCode } from "../storage/fs.ts";
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { fencedWriteLogIntervalMs, groupApplyDelayMsMax, journalCheckpointBytes, groupApplyPendingBytesMax, heldLogIntervalMs, heldWritesPerGroupMax, ingestObserversPerGroupMax } from "../core/limits.ts";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs, type VolumeId } from "../core/types.ts";
import { RecordKind, encodedRecordBytes, journalHeaderBytes, resizeSizeBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { GroupJournal } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import type { ApplyOrder } from "./apply-order.ts";
import type { Clock, Timer } from "../node/clock.ts";
import { faultInjected } from "../core/faults.ts";
import { GroupStopControl, reopenJournalForResume, withPath, type GroupStop, type ResumeOutcome } from "../node/group-stop.ts";
import type { NodeStamper } from "./stamper.ts";

/** A host write or write-zeroes as the front ends hand it over. */
interface HostWrite {
  readonly kind: typeof RecordKind.write | typeof RecordKind.zeroes;
  readonly volumeId: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  /** Borrowed from the front end until the write is answered. */
  readonly payload: Buffer;
  readonly fua: boolean;
  readonly hostWriteTimeUs: number | undefined;
  /** The front end lends the payload until this is called (else the writer copies it). */
  readonly onPayloadFree: (() => void) | undefined;
}

const emptyPayload = Buffer.alloc(0);

/**
 * What is downstream of a group's ingest: a pair it feeds (any number of them: the cascade
 * hop C -> A -> B feeds A's group from C and sends it on to B). The writer calls it; it never
 * reaches into the writer. Attached with GroupWriter.attach, which returns its Detach.
 */
export interface IngestObserver {
  /** A record was stamped, sequenced and appended (not durable yet); its payload is owned. On the write path: no I/O, no allocation. */
  readonly recordAppended?: (record: JournalRecord) => void;
  /** The group stopped (a full disk, an I/O error: `stopped` says why) or resumed (undefined). */
  readonly groupStateChanged?: (stopped: GroupStop | undefined) => void;
  /**
   * Retention hold: the journal keeps every record from this sequence on (what the secondary
   * does not hold yet); undefined holds nothing. The journal trims behind the lowest hold
   * and the checkpoint. A hold that moves up calls GroupWriter.releaseHeld (space may free).
   */
  readonly keepFromSequence?: () => number | undefined;
  /** Delay for each new host write, ms (0: none), while the journal fills; the writer uses the largest asked. */
  readonly slowdownMs?: () => number;
}

/** Ends an attachment: the observer hears nothing more, and its hold and slowdown are gone. Idempotent. */
export type Detach = () => void;

export interface GroupVolume {
  readonly id: VolumeId;
  readonly file: VolumeFile;
  readonly order: ApplyOrder;
}

export interface CheckpointResult {
  readonly checkpointSequence: number;
  readonly nextSequence: number;
}

/** Why host writes wait (held, never failed), for status, logs and metrics. */
export type HoldReason = "journal-full" | "slowdown" | "apply-behind";

interface Held {
  readonly recordBytes: number;
  readonly notBeforeMs: number;
  /** Why it waits now: set when it is held, and again by releaseHeld each time it finds the oldest still waiting. */
  reason: HoldReason;
  readonly run: () => void;
  readonly fail: (error: Error) => void;
}

export interface GroupWriterOptions {
  readonly groupId: number;
  readonly name: string;
  readonly journal: GroupJournal;
  readonly stamper: NodeStamper;
  readonly volumes: ReadonlyMap<number, GroupVolume>;
  readonly nextSequence: number;
  /** Every record through this sequence is in the volumes (the persisted checkpoint, or more). */
  readonly appliedSequence: number;
  /** The persisted checkpoint: a resume after a stop re-applies the journal from the record after it. */
  readonly checkpointSequence: number;
  /** Sequence of the newest host write the journal holds (recovery), or the checkpoint when it holds none. */
  readonly lastWriteSequence?: number;
  /** The newest primary wall time the journal holds (recovery's maxWallTimeUs): records are stamped above it. */
  readonly lastWallTimeUs?: number;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Persists a checkpoint in the node metadata. */
  readonly persistCheckpoint: (result: CheckpointResult) => Promise<void>;
  /**
   * Grows a volume of the group to `sizeBytes` (a resize record's effect: node.json's size,
   * then the file, the written map and the size in memory; idempotent). VolumeRegistry.grow.
   * Default (a writer with no node around it, in tests): the volume file alone grows.
   */
  readonly growVolume?: (volumeId: number, sizeBytes: number) => Promise<void>;
}

export class GroupWriter {
  readonly groupId: number;
  readonly name: string;
  private journalValue: GroupJournal;
  private readonly stamper: NodeStamper;
  private readonly volumes: ReadonlyMap<number, GroupVolume>;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private nextSequenceValue: number;
  private appliedSequenceValue: number;
  /** The last checkpoint persisted (recovery after a stop replays the journal from here). */
  private checkpointSequenceValue: number;
  /** Sequences applied out of order, waiting for the ones before them. Bounded by writes in flight. */
  private readonly appliedAhead = new Set<number>();
  /** Payload bytes accepted and not yet applied to the volumes (owned copies held meanwhile). */
  private applyPendingBytes = 0;
  private lastWriteTimeUsValue = 0;
  /** The primary wall time (Unix µs) of the last record: strictly increasing per group (consistent-as-of, core/pair-view.ts). */
  private lastWallTimeUsValue = 0;
  private bytesSinceCheckpoint = 0;
  private checkpointRunning: Promise<CheckpointResult> | undefined;
  private readonly held: Held[] = [];
  private releaseTimer: Timer | undefined;
  private applyDeadlineTimer: Timer | undefined;
  /** What the log last said of held writes: the reason in its last writes_held / writes_hold_changed line, undefined after writes_released (or none yet). */
  private loggedHoldReason: HoldReason | undefined;
  /** When the last held-writes line was written (monotonic clock, ms). */
  private holdLineAtMs = Number.NEGATIVE_INFINITY;
  /** Writes the state the log does not say yet, once heldLogIntervalMs after the last line. */
  private holdLogTimer: Timer | undefined;
  /** When the last record was accepted (monotonic clock, ms). */
  lastRecordAtMs = 0;
  /** The same on the wall clock: only the simulation's wall-clock-time-advance fault reads it. */
  lastRecordAtWallMs = 0;
  /** The node-wide accept number of this group's last record. */
  private lastAcceptNumber = 0;
  /** Sequence of the newest host write (write or zeroes) of this group: what `pair wait` waits for. */
  private lastWriteSequenceValue: number;
  /** Downstream of the ingest (attach): replaced, never changed in place, so a detach during a callback is safe. */
  private observers: readonly IngestObserver[] = [];
  private spaceRequested = false;
  private readonly stopControl: GroupStopControl;
  private closed = false;
  private readonly persistCheckpoint: (result: CheckpointResult) => Promise<void>;
  private readonly growVolume: (volumeId: number, sizeBytes: number) => Promise<void>;

  constructor(options: GroupWriterOptions) {
    assert(options.nextSequence >= 1, "sequence numbers start at 1");
    assert(options.appliedSequence < options.nextSequence, "applied sequence is behind the next one");
    this.groupId = options.groupId;
    this.name = options.name;
    this.journalValue = options.journal;
    this.watchJournal(options.journal);
    this.stamper = options.stamper;
    this.volumes = options.volumes;
    this.clock = options.clock;
    this.logger = options.logger;
    this.nextSequenceValue = options.nextSequence;
    this.appliedSequenceValue = options.appliedSequence;
    this.checkpointSequenceValue = options.checkpointSequence;
    this.lastWriteSequenceValue = options.lastWriteSequence ?? options.nextSequence - 1;
    this.lastWallTimeUsValue = options.lastWallTimeUs ?? 0;
    this.persistCheckpoint = options.persistCheckpoint;
    this.growVolume = options.growVolume ?? (async (volumeId, sizeBytes) => {
      const volume = this.volumes.get(volumeId);
      assert(volume !== undefined, () => `volume ${volumeId} belongs to group ${this.name}`);
      await volume.file.grow(sizeBytes);
    });
    this.stopControl = new GroupStopControl({
      name: options.name, logger: options.logger, clock: options.clock, fileSystem: options.journal.fileSystem,
      attemptResume: (stop) => this.attemptResume(stop),
      onStateChange: () => this.groupStateChanged(),
    });
  }

  get nextSequence(): number {
    return this.nextSequenceValue;
  }

  /**
   * Adds a downstream: it hears of every record appended from now on and of the group's
   * stops and resumes, and its retention hold and slowdown count, until the returned Detach.
   */
  attach(observer: IngestObserver): Detach {
    assert(!this.observers.includes(observer), "an observer is attached once");
    assert(this.observers.length < ingestObserversPerGroupMax, () => `group ${this.name} feeds at most ${ingestObserversPerGroupMax} downstreams`);
    this.observers = [...this.observers, observer];
    let attached = true;
    return () => {
      if (!attached) return;
      attached = false;
      this.observers = this.observers.filter((o) => o !== observer);
      // Its hold and its slowdown are gone: held writes may go now.
      this.releaseHeld();
    };
  }

  /** The journal may trim through this: behind every downstream's hold (the checkpoint bounds it too). */
  private retainedThrough(): number {
    const observers = this.observers;
    let through = Number.MAX_SAFE_INTEGER;
    for (let i = 0; i < observers.length; i++) {
      const keepFrom = observers[i]?.keepFromSequence?.();
      if (keepFrom !== undefined) through = Math.min(through, keepFrom - 1);
    }
    return through;
  }

  /** The largest delay a downstream asks for new writes (0: none). Per host write: no allocation. */
  private slowdownMs(): number {
    const observers = this.observers;
    let delayMs = 0;
    for (let i = 0; i < observers.length; i++) {
      const asked = observers[i]?.slowdownMs?.() ?? 0;
      if (asked > delayMs) delayMs = asked;
    }
    return delayMs;
  }

  /** Per record: every downstream hears of it, in attach order. */
  private recordAppended(record: JournalRecord): void {
    const observers = this.observers;
    for (let i = 0; i < observers.length; i++) observers[i]?.recordAppended?.(record);
  }

  private groupStateChanged(): void {
    const stopped = this.stopped;
    for (const observer of this.observers) observer.groupStateChanged?.(stopped);
  }
  get appliedSequence(): number {
    return this.appliedSequenceValue;
  }
  get lastWriteTimeUs(): number {
    return this.lastWriteTimeUsValue;
  }
  /** Sequence of the newest host write: once the secondary reflected it, it holds every write accepted so far (time advances need no reflection). */
  /** The primary wall time (Unix µs) stamped on the group's last record (0 before any). */
  get lastWallTimeUs(): number {
    return this.lastWallTimeUsValue;
  }

  get lastWriteSequence(): number {
    return this.lastWriteSequenceValue;
  }
  /** Whether any group of this node accepted a host write after this group's last record (then its secondary waits for a time advance from it). */
  get othersAcceptedSince(): boolean {
    return this.stamper.lastHostWriteAcceptNumber > this.lastAcceptNumber;
  }
  /** The group's journal (a new object after the group resumed from a stop). */
  get journal(): GroupJournal {
    return this.journalValue;
  }
  /** Set while the group is stopped by an I/O error or a full disk. */
  get stopped(): GroupStop | undefined {
    return this.stopControl.stop;
  }
  /**
   * Set while the group is read-only because the pair it was the secondary of was deleted
   * without --promote (node.json's `readOnly`): its volumes refuse host writes with EPERM
   * (volumes/volume-registry.ts) and are exported read-only. Undefined: writable.
   */
  readOnlyReason: string | undefined = undefined;

  /** Why the group is fenced (read-only: host writes get EPERM), or undefined while it is writable. */
  get fenced(): string | undefined {
    return this.fencedReason;
  }

  private fencedReason: string | undefined;
  /** Host writes refused since the last log line about them, and when that line was written (monotonic ms). */
  private fencedRefusals = 0;
  private fencedLineAtMs = Number.NEGATIVE_INFINITY;

  /**
   * The pair fenced the group (docs/replication.md, "Fencing"): from now on every host write
   * (and time advance) is refused with EPERM, held writes included; the sequence stops here.
   * Reads and FLUSH go on. Idempotent (the reason is updated).
   */
  fence(reason: string): void {
    const was = this.fencedReason;
    this.fencedReason = reason;
    if (was === undefined) {
      this.fencedRefusals = 0;
      this.fencedLineAtMs = Number.NEGATIVE_INFINITY;
      this.logger.warn({ event: "group_fenced", group: this.name, reason, lastSequence: this.nextSequence - 1 }, "group fenced: host writes are refused (EPERM) until pair unfence");
    }
    const held = this.held.splice(0);
    for (const waiting of held) waiting.fail(this.fencedError());
    if (held.length > 0) this.noteHoldReason();
  }

  /** The group is writable again (pair unfence, saved first). */
  unfence(): void {
    if (this.fencedReason === undefined) return;
    this.fencedReason = undefined;
    this.logger.warn({ event: "group_unfenced", group: this.name, refusedWrites: this.fencedRefusals }, "group unfenced: host writes are accepted again");
  }

  private fencedError(): VolumeIoError {
    return new VolumeIoError("EPERM", `group ${this.name} is fenced (${this.fencedReason ?? "fenced"}); its writes are refused. Run tidemark pair unfence ${this.name} on this node to make it writable again`);
  }

  /** A host write refused by the fence: one log line per fencedWriteLogIntervalMs, with the count. */
  private refuseFenced(write: HostWrite): Promise<void> {
    write.onPayloadFree?.();
    this.fencedRefusals += 1;
    const nowMs = this.clock.monotonicMs();
    if (nowMs - this.fencedLineAtMs >= fencedWriteLogIntervalMs) {
      this.fencedLineAtMs = nowMs;
      this.logger.warn({ event: "fenced_write_refused", group: this.name, volumeId: write.volumeId, offsetBytes: write.offsetBytes, refusedWrites: this.fencedRefusals, reason: this.fencedReason }, "host write refused with EPERM: the group is fenced");
    }
    return Promise.reject(this.fencedError());
  }

  /** Writes waiting (journal full, slowed, or the volumes behind), oldest first. */
  get heldWrites(): number {
    return this.held.length;
  }
  /** Why the oldest held write waits now, if one does (slowed, the journal full, or the volumes behind). */
  get holdReason(): HoldReason | undefined {
    return this.held[0]?.reason;
  }

  /** `onPayloadFree`: see WriteOptions.onPayloadFree (called exactly once, also when the write is refused). */
  write(volumeId: number, offsetBytes: number, data: Buffer, fua: boolean, hostWriteTimeUs: number | undefined, onPayloadFree?: () => void): Promise<void> {
    const accepted = this.accept({ kind: RecordKind.write, volumeId, offsetBytes, lengthBytes: data.length, payload: data, fua, hostWriteTimeUs, onPayloadFree });
    if (onPayloadFree !== undefined) accepted.catch(() => undefined); // the caller sees the rejection; freeing is the writer's
    return accepted;
  }

  writeZeroes(volumeId: number, offsetBytes: number, lengthBytes: number, fua: boolean, hostWriteTimeUs: number | undefined): Promise<void> {
    return this.accept({ kind: RecordKind.zeroes, volumeId, offsetBytes, lengthBytes, payload: emptyPayload, fua, hostWriteTimeUs, onPayloadFree: undefined });
  }

  /** Every write answered before this call is durable once it resolves (group commit). */
  async flush(): Promise<void> {
    this.throwIfStopped();
    try {
      await this.journalValue.sync();
    } catch (error) {
      this.fail(error as Error, this.journalValue.dir);
      throw this.ioError(error as Error);
    }
  }

  /** A refusal (a stopped group, a write that can never fit) is a rejected promise, never a throw: callers chain on it. */
  private accept(write: HostWrite): Promise<void> {
    try {
      return this.acceptOrHold(write);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private acceptOrHold(write: HostWrite): Promise<void> {
    if (this.fencedReason !== undefined && !this.closed && this.stopped === undefined) return this.refuseFenced(write);
    if (write.onPayloadFree !== undefined && (this.closed || this.stopped !== undefined)) write.onPayloadFree();
    this.throwIfStopped();
    const recordBytes = journalHeaderBytes + write.payload.length;
    if (recordBytes > this.journalValue.bytesMax - this.journalValue.segmentBytesMax) {
      // Never true for a journal of at least journalBytesMin (a full journal trimmed to its
      // active segment takes one largest write): refused, never held forever.
      return Promise.reject(new VolumeIoError("EINVAL", `a write of ${write.payload.length} bytes can never fit the journal of group ${this.name} (${this.journalValue.bytesMax} bytes); give the group a larger journal`));
    }
    const delayMs = this.slowdownMs();
    const reason = this.holdFor(recordBytes, delayMs);
    if (this.held.length === 0 && reason === undefined) return this.acceptNow(write);
    // The journal is filling or full, or the volumes are behind: slow the write down, or hold
    // it (never fail it, never drop it). It is stamped and sequenced when released, behind
    // every write held before it.
    assert(this.held.length < heldWritesPerGroupMax, "held writes stay bounded (the front ends bound requests in flight)");
    return new Promise<void>((resolve, reject) => {
      this.held.push({
        recordBytes,
        notBeforeMs: delayMs > 0 ? this.clock.monotonicMs() + delayMs : 0,
        reason: reason ?? this.held[this.held.length - 1]?.reason ?? "journal-full",
        run: () => {
          this.acceptNow(write).then(resolve, reject);
        },
        fail: (error) => {
          write.onPayloadFree?.();
          reject(error);
        },
      });
      this.noteHoldReason();
      this.releaseHeld();
    });
  }

  /** Why a write of `recordBytes` would wait now, or undefined if it can go at once. */
  private holdFor(recordBytes: number, delayMs: number): HoldReason | undefined {
    if (this.journalValue.freeBytes < recordBytes) return "journal-full";
    if (this.applyPendingBytes > 0 && this.applyPendingBytes + recordBytes > groupApplyPendingBytesMax) return "apply-behind";
    if (delayMs > 0) return "slowdown";
    return undefined;
  }

  /**
   * The log follows the held writes: `writes_held` when writes start being held (with why
   * the oldest waits then), `writes_hold_changed` when that reason changes, `writes_released`
   * once none is held. Each line is true when written, and at most one is written per
   * heldLogIntervalMs however fast the state flaps: a change within the interval is written
   * when it ends (by a timer), if it still holds then, so the last line always says the
   * state the writer settled in.
   */
  private noteHoldReason(): void {
    const reason = this.holdReason;
    if (reason === this.loggedHoldReason) return;
    const waitMs = this.holdLineAtMs + heldLogIntervalMs - this.clock.monotonicMs();
    if (waitMs > 0) {
      if (this.holdLogTimer === undefined && !this.closed) {
        this.holdLogTimer = this.clock.setTimeout(() => {
          this.holdLogTimer = undefined;
          this.noteHoldReason();
        }, Math.ceil(waitMs));
      }
      return;
    }
    this.writeHoldLine(reason);
  }

  /** `failedWrites`: held writes the node failed as it stopped (they were not released). */
  private writeHoldLine(reason: HoldReason | undefined, failedWrites = 0): void {
    const before = this.loggedHoldReason;
    this.loggedHoldReason = reason;
    this.holdLineAtMs = this.clock.monotonicMs();
    if (reason === undefined) {
      const text = failedWrites > 0 ? `no host write is held any more: the node is stopping, ${failedWrites} held writes failed (not accepted)` : "no host write is held any more";
      this.logger.info({ event: "writes_released", group: this.name, lastReason: before, failedWrites }, text);
    } else if (before === undefined) {
      this.logger.warn({ event: "writes_held", group: this.name, reason, heldWrites: this.held.length }, `host writes held: ${describeHold(reason)}`);
    } else {
      this.logger.warn({ event: "writes_hold_changed", group: this.name, reason, previousReason: before, heldWrites: this.held.length }, `host writes still held, for another reason: ${describeHold(reason)}`);
    }
  }

  private scheduleRelease(delayMs: number): void {
    if (this.releaseTimer !== undefined) return;
    this.releaseTimer = this.clock.setTimeout(() => {
      this.releaseTimer = undefined;
      this.releaseHeld();
    }, Math.max(1, Math.ceil(delayMs)));
  }

  /**
   * A time-advance record (kind 4): stamped and sequenced like a write, applied to no
   * volume. It moves an idle group's arrived position on at the secondary.
   */
  appendTimeAdvance(): void {
    if (this.fencedReason !== undefined || this.stopped !== undefined || this.closed || this.held.length > 0 || this.journalValue.freeBytes < journalHeaderBytes) return;
    const record = this.nextRecord(RecordKind.timeAdvance, asVolumeId(0), 0, 0, emptyPayload, undefined);
    const appended = this.journalValue.append(record);
    this.recordAppended(record);
    appended.then(() => this.markApplied(record.sequence), (error: unknown) => this.fail(error as Error, this.journalValue.dir));
  }

  /**
   * Why a resize of `volumeId` cannot be recorded now (ControlError TM_ERR_STATE, with what to
   * do), checked before anything changes: the group is closing, stopped, fenced or read-only,
   * or host writes are held (a resize waits for nobody: run it again once they flow).
   */
  checkResize(volumeId: number): void {
    assert(this.volumes.has(volumeId), () => `volume ${volumeId} belongs to group ${this.name}`);
    const refuse = (why: string): never => {
      throw new ControlError("TM_ERR_STATE", `group ${this.name} cannot record a resize now: ${why}`);
    };
    if (this.closed) refuse(this.closedBecause);
    if (this.stopped !== undefined) refuse(`it is stopped (${this.stopped.reason})`);
    if (this.fencedReason !== undefined) refuse(`it is fenced (${this.fencedReason}); see tidemark pair status ${this.name}`);
    if (this.readOnlyReason !== undefined) refuse(`it is read-only (${this.readOnlyReason})`);
    if (this.held.length > 0 || this.journalValue.freeBytes < journalHeaderBytes) {
      refuse(`${this.held.length} host writes are held (${this.holdReason ?? "journal-full"}); run the resize again once they flow (tidemark pair status ${this.name})`);
    }
  }

  /**
   * Records that volume `volumeId` grows to `sizeBytes` (the caller extended its file and ran
   * checkResize): a resize record (kind 5) takes the next sequence, is appended and made
   * durable, then the volume grows (growVolume: node.json first). Writes past the old end are
   * accepted only once this resolves, so in the sequence they all come after the record, and
   * a secondary grows at the same point of the history. The record counts as applied only
   * once the volume grew: no checkpoint passes it before node.json holds the new size, so
   * recovery always finds it in the journal or the size in node.json. Errors: the journal's
   * (the group stops), or the grow's (the group stops; its resume replays the record, which
   * grows the volume again).
   */
  async resize(volumeId: number, sizeBytes: number): Promise<void> {
    this.checkResize(volumeId);
    const record = this.nextRecord(RecordKind.resize, asVolumeId(volumeId), sizeBytes, 0, emptyPayload, undefined);
    // A change the secondary must reflect: `pair wait` waits for it, a fence keeps it.
    this.lastWriteSequenceValue = record.sequence;
    const journal = this.journalValue;
    const appended = journal.append(record);
    this.recordAppended(record);
    try {
      await appended;
      await journal.sync();
    } catch (error) {
      this.fail(error as Error, journal.dir);
      throw this.ioError(error as Error);
    }
    const volume = this.volumes.get(volumeId);
    assert(volume !== undefined, "checked by checkResize");
    try {
      await this.growVolume(volumeId, sizeBytes);
    } catch (error) {
      this.fail(error as Error, (error as { path?: unknown }).path === undefined ? volume.file.path : String((error as { path?: unknown }).path));
      throw error;
    }
    this.markApplied(record.sequence);
    this.afterApply();
  }

  /** Frees journal space (checkpoint and trim), then releases held writes in order. */
  private requestSpace(): void {
    if (this.spaceRequested) return;
    this.spaceRequested = true;
    this.checkpoint()
      .then(() => {
        this.spaceRequested = false;
        this.releaseHeld();
      })
      .catch((error: unknown) => {
        this.spaceRequested = false;
        this.fail(error as Error, this.journalValue.dir);
      });
  }

  /**
   * Called when space may have freed (after a checkpoint, when the trim floor moves, when
   * applies complete). Every held write is woken by one of those events, never by polling.
   */
  releaseHeld(): void {
    while (this.held.length > 0 && this.stopped === undefined && !this.closed) {
      const first = this.held[0];
      assert(first !== undefined, "held queue is not empty");
      const nowMs = this.clock.monotonicMs();
      const reason = this.waitsFor(first, nowMs);
      if (reason !== undefined) {
        first.reason = reason;
        // Still full: whatever holds the journal (a checkpoint in flight, or a slow secondary
        // acknowledging, which calls this) releases it later. Behind the applies: they call
        // again. Slowed: a timer does (once space is there; a full journal comes first).
        if (reason === "journal-full" && this.canTrimMore()) this.requestSpace();
        if (reason === "slowdown") this.scheduleRelease(first.notBeforeMs - nowMs);
        break;
      }
      this.held.shift();
      first.run();
    }
    this.noteHoldReason();
  }

  /** Why the held write `held` cannot go now, or undefined if it can (the same order as holdFor). */
  private waitsFor(held: Held, nowMs: number): HoldReason | undefined {
    if (this.journalValue.freeBytes < held.recordBytes) return "journal-full";
    if (this.applyPendingBytes > 0 && this.applyPendingBytes + held.recordBytes > groupApplyPendingBytesMax) return "apply-behind";
    if (held.notBeforeMs > nowMs) return "slowdown";
    return undefined;
  }

  /** Whether a checkpoint would free journal space now (a whole segment behind both the applied sequence and the trim floor). */
  private canTrimMore(): boolean {
    return this.journalValue.bytesTrimmableThrough(Math.min(this.appliedSequenceValue, this.retainedThrough())) > 0;
  }

  private acceptNow(write: HostWrite): Promise<void> {
    if (this.fencedReason !== undefined && !this.closed && this.stopped === undefined) return this.refuseFenced(write);
    if (write.onPayloadFree !== undefined && (this.closed || this.stopped !== undefined)) write.onPayloadFree();
    this.throwIfStopped();
    const { kind, offsetBytes, lengthBytes } = write;
    const volume = this.volumes.get(write.volumeId);
    assert(volume !== undefined, () => `volume ${write.volumeId} belongs to group ${this.name}`);
    assert(lengthBytes > 0 && offsetBytes + lengthBytes <= volume.file.sizeBytes, "write range checked at the edge");
    // The volume is written after the answer (once the journal is durable): the record keeps a
    // payload the front end lent (it frees it when told), or a copy (a fresh 1 MiB buffer per
    // write halved sequential throughput: page faults on new memory).
    const lent = write.onPayloadFree;
    const payload = write.payload.length === 0 || lent !== undefined ? write.payload : Buffer.from(write.payload);
    const record = this.nextRecord(kind, volume.id, offsetBytes, lengthBytes, payload, write.hostWriteTimeUs);
    const journal = this.journalValue;
    const appended = journal.append(record);
    // Journal before volume: the apply waits until the journal holds this record durably,
    // so no crash and no power loss can leave a volume block its journal does not explain.
    // It does not ask for an fdatasync of its own: the next group commit (a FLUSH or FUA, the
    // pair's sender, the journal's background sync) or, at the latest, the apply deadline does.
    const durable = faultInjected("volume-before-journal") ? Promise.resolve() : journal.whenDurable(record.sequence);
    this.armApplyDeadline();
    this.applyPendingBytes += payload.length;
    const applied = volume.order.run(offsetBytes, offsetBytes + lengthBytes, async () => {
      await durable;
      if (kind === RecordKind.write) await volume.file.write(offsetBytes, payload);
      else await volume.file.writeZeroes(offsetBytes, lengthBytes);
    });
    applied.then(
      () => {
        lent?.();
        this.applyPendingBytes -= payload.length;
        this.markApplied(record.sequence);
        this.stopControl.noteProgress();
        this.afterApply();
      },
      (error: unknown) => {
        lent?.();
        this.applyPendingBytes -= payload.length;
        // A journal error is reported by its own path; a volume error stops the group here.
        this.fail(error as Error, journal.failed === undefined ? volume.file.path : journal.dir);
      },
    );
    this.recordAppended(record);
    const answer = this.complete(appended, journal, write.fua);
    // --max-clock-skew: the answer waits until the clock passed the write's time + the skew.
    const commitWait = this.stamper.commitWait;
    if (commitWait === undefined) return answer;
    const writeTimeUs = record.writeTimeUs;
    return answer.then(() => commitWait.wait(writeTimeUs));
  }

  /** Stamps and sequences the next record, synchronously, in acceptance order: nothing may interleave here. */
  private nextRecord(kind: RecordKind, volumeId: VolumeId, offsetBytes: number, lengthBytes: number, payload: Buffer, hostWriteTimeUs: number | undefined): JournalRecord {
    const stamp = this.stamper.stamp(hostWriteTimeUs);
    const sequence = this.nextSequenceValue;
    this.nextSequenceValue = sequence + 1;
    this.lastWriteTimeUsValue = stamp.writeTimeUs;
    // The wall time of acceptance, strictly increasing per group whatever the clock does: a
    // secondary's consistent-as-of time is the wall time of the last record it reflected.
    const wallTimeUs = kind === RecordKind.marker ? 0 : Math.max(this.lastWallTimeUsValue + 1, Math.floor(this.clock.wallMs() * 1000));
    if (wallTimeUs > 0) this.lastWallTimeUsValue = wallTimeUs;
    this.lastRecordAtMs = this.clock.monotonicMs();
    // Only the simulation's wall-clock fault reads it: no clock read per write otherwise.
    if (faultInjected("wall-clock-time-advance")) this.lastRecordAtWallMs = this.clock.wallMs();
    this.lastAcceptNumber = stamp.acceptNumber;
    if (kind === RecordKind.write || kind === RecordKind.zeroes) {
      this.stamper.lastHostWriteAcceptNumber = stamp.acceptNumber;
      this.lastWriteSequenceValue = sequence;
    }
    const record: JournalRecord = {
      kind, volumeId, offsetBytes, lengthBytes, sequence: asSequence(sequence),
      writeTimeUs: stamp.writeTimeUs, acceptNumber: stamp.acceptNumber, markerNumber: asMarkerNumber(0), wallTimeUs, payload,
    };
    this.bytesSinceCheckpoint += encodedRecordBytes(record);
    return record;
  }

  /**
   * Answered writes wait for a group commit before they reach the volume; this bounds the
   * wait: groupApplyDelayMsMax after the first of them, the journal is made durable.
   */
  private armApplyDeadline(): void {
    if (this.applyDeadlineTimer !== undefined) return;
    this.applyDeadlineTimer = this.clock.setTimeout(() => {
      this.applyDeadlineTimer = undefined;
      if (this.applyPendingBytes > 0) this.hurryApplies();
    }, groupApplyDelayMsMax);
  }

  /** A read waits for an answered write to reach the volume: make the journal durable now. */
  hurryApplies(): void {
    if (this.stopped !== undefined || this.closed) return;
    this.journalValue.sync().catch(() => undefined); // an error stops the group through the apply's own path
  }

  /** The answer: once the record is in the journal file (and durable, for FUA). */
  private async complete(appended: Promise<void>, journal: GroupJournal, fua: boolean): Promise<void> {
    try {
      await appended;
      if (fua) await journal.sync();
    } catch (error) {
      this.fail(error as Error, journal.dir);
      throw this.ioError(error as Error);
    }
  }

  private afterApply(): void {
    // A quarter of a small journal, so a checkpoint frees room before writes have to wait for it.
    if (this.bytesSinceCheckpoint >= Math.min(journalCheckpointBytes, this.journalValue.bytesMax / 4) && this.checkpointRunning === undefined && this.stopped === undefined && !this.closed) {
      this.checkpoint().catch((error: unknown) => this.fail(error as Error, this.journalValue.dir));
    }
    if (this.held.length > 0) this.releaseHeld();
  }

  private markApplied(sequence: number): void {
    if (sequence <= this.appliedSequenceValue) return; // re-applied after a resume
    if (sequence !== this.appliedSequenceValue + 1) {
      this.appliedAhead.add(sequence);
      return;
    }
    let next = sequence;
    while (this.appliedAhead.delete(next + 1)) next += 1;
    this.appliedSequenceValue = next;
  }

  /**
   * Makes the volumes durable up to the applied sequence, records that in the node
   * metadata, then lets the journal drop whole segments behind it.
   */
  checkpoint(): Promise<CheckpointResult> {
    if (this.checkpointRunning !== undefined) return this.checkpointRunning;
    const running = this.runCheckpoint(this.retainedThrough()).catch((error: unknown) => {
      // Whoever asked for it (the pair's trim, a full journal, the bytes since the last one):
      // a failed checkpoint stops the group. A failed fdatasync may have dropped applied pages,
      // which only the resume's re-apply from the persisted checkpoint writes again (seed 59474:
      // the pair's trim only logged the error, the next checkpoint succeeded without those pages,
      // and the journal that held them was trimmed).
      if (!faultInjected("checkpoint-error-keeps-group")) {
        const errorPath = (error as { path?: unknown }).path;
        this.fail(error as Error, typeof errorPath === "string" ? errorPath : this.journalValue.dir);
      }
      throw error;
    }).finally(() => {
      this.checkpointRunning = undefined;
    });
    this.checkpointRunning = running;
    return running;
  }

  /** `retainedThrough`: the journal trims no further (the downstreams' holds). */
  private async runCheckpoint(retainedThrough: number): Promise<CheckpointResult> {
    const checkpointSequence = this.appliedSequenceValue;
    const bytesAtStart = this.bytesSinceCheckpoint;
    const journal = this.journalValue;
    // Host records are applied only once durable; time advances count as applied once
    // written, so make those durable too before the checkpoint claims them.
    await journal.sync();
    assert(checkpointSequence <= journal.durableSequence, "a checkpoint covers only durable records");
    for (const volume of this.volumes.values()) {
      try {
        await volume.file.datasync();
      } catch (error) {
        throw withPath(error as Error, volume.file.path);
      }
    }
    const result: CheckpointResult = { checkpointSequence, nextSequence: this.nextSequenceValue };
    await this.persistCheckpoint(result);
    this.checkpointSequenceValue = Math.max(this.checkpointSequenceValue, checkpointSequence);
    await journal.trimThrough(Math.min(checkpointSequence, retainedThrough));
    this.bytesSinceCheckpoint = Math.max(0, this.bytesSinceCheckpoint - bytesAtStart);
    return result;
  }

  // ---- stop and resume ---------------------------------------------------------------

  /** A failed write or fdatasync of the journal stops the group, whoever met it (the pair's sync, a reader). */
  private watchJournal(journal: GroupJournal): void {
    journal.onFailure = (error) => {
      if (this.journalValue === journal) this.fail(error, journal.dir);
    };
  }

  /**
   * An I/O error or a full disk: the group stops alone. Pending appends and held writes
   * fail with the errno; reads go on; the stop control tries to resume. Called for every
   * error path, so it is idempotent.
   */
  private fail(error: Error, path: string): void {
    if (this.closed || !this.stopControl.stopWith(error, path)) return;
    void this.journalValue.abandon();
    for (const waiting of this.held.splice(0)) waiting.fail(this.stoppedError());
    this.noteHoldReason();
    this.clock.clear(this.releaseTimer);
    this.releaseTimer = undefined;
  }

  /**
   * Re-reads the journal from the disk itself (O_DIRECT: the page cache may hold pages a
   * failed fdatasync never wrote), re-verifies every record, re-applies what follows the
   * checkpoint, and only then takes writes again. Records the group had called durable
   * must all be there; if they are not, it stays stopped and says so.
   */
  private async attemptResume(stop: GroupStop): Promise<ResumeOutcome> {
    const old = this.journalValue;
    const durableBefore = old.durableSequence;
    await Promise.all([...this.volumes.values()].map((volume) => volume.order.drain()));
    await old.abandon();
    let replayed = 0;
    const opened = await reopenJournalForResume({
      // cutDamagedTail: a failed fdatasync may have dropped pages that later, written-back pages
      // follow on the disk (a hole, then whole records). Every record after such a hole came after
      // what was durable, and the check below refuses a journal that lost anything durable.
      open: () => GroupJournal.open(old.dir, { fileSystem: old.fileSystem, bytesMax: old.bytesMax, nextSequence: this.checkpointSequenceValue + 1, directRead: true, cutDamagedTail: true }, async (record) => {
        if (record.sequence <= this.checkpointSequenceValue || record.kind === RecordKind.timeAdvance || record.kind === RecordKind.marker) return;
        const volume = this.volumes.get(record.volumeId);
        assert(volume !== undefined, "records of this group name its volumes (written by this process)");
        try {
          if (record.kind === RecordKind.resize) await this.growVolume(record.volumeId, resizeSizeBytes(record));
          else if (record.kind === RecordKind.write) await volume.file.write(record.offsetBytes, record.payload);
          else await volume.file.writeZeroes(record.offsetBytes, record.lengthBytes);
        } catch (error) {
          throw withPath(error as Error, volume.file.path);
        }
        replayed += 1;
      }),
      closed: () => this.closed,
      mustHoldThrough: durableBefore,
      lostReason: (lastSequence) => `after ${stop.reason.split(":")[0]}, the journal holds records only through sequence ${lastSequence} ` +
        `but ${durableBefore} had been made durable: the disk lost acknowledged data. The group stays stopped; take over on the secondary or restore from a backup`,
    });
    if (opened.kind !== "opened") return opened;
    const { journal, report } = opened;
    // Everything after the persisted checkpoint is written again: what a failed fdatasync of a
    // volume dropped is back in the page cache, so the next checkpoint's fdatasync proves it.
    for (const volume of this.volumes.values()) volume.file.syncFailureRepaired();
    this.journalValue = journal;
    this.watchJournal(journal);
    this.stamper.raiseTo({ recordedWriteTimeUs: asWriteTimeUs(report.maxWriteTimeUs), lastAcceptNumber: asAcceptNumber(report.maxAcceptNumber) });
    this.lastWallTimeUsValue = Math.max(this.lastWallTimeUsValue, report.maxWallTimeUs);
    this.nextSequenceValue = Math.max(report.lastSequence + 1, this.checkpointSequenceValue + 1);
    // What the failed fdatasync dropped is gone from the journal: the last host write is what
    // the journal still holds (a write sequence past it would be waited for for ever: pair
    // wait, and status; simulation seed 15167). Nothing written left: at most what went before.
    if (!faultInjected("resume-keeps-last-write-sequence")) {
      this.lastWriteSequenceValue = report.lastWriteSequence > 0 ? report.lastWriteSequence : Math.min(this.lastWriteSequenceValue, this.nextSequenceValue - 1);
    }
    this.appliedAhead.clear();
    this.appliedSequenceValue = this.nextSequenceValue - 1;
    this.applyPendingBytes = 0;
    this.logger.info({ event: "group_journal_reread", group: this.name, replayed, nextSequence: this.nextSequenceValue }, "journal re-read from disk and verified");
    return { kind: "resumed" };
  }

  /** Start-up could not re-apply the journal (a full disk, an I/O error): the group starts stopped and resumes by itself. */
  stopAfterRecoveryError(error: Error): void {
    this.fail(error, this.journalValue.dir);
  }

  /** Why writes are refused once closed (host errors say it). */
  private closedBecause = "the node is stopping";

  /**
   * Finishes what is in flight, makes it durable, checkpoints. Held writes fail, and later ones,
   * with ESHUTDOWN and `because` (default: the node is stopping; a group delete says so).
   */
  async close(because = "the node is stopping"): Promise<CheckpointResult | undefined> {
    if (this.closed) return undefined;
    this.closedBecause = because;
    this.hurryApplies(); // answered writes still waiting for a group commit reach the volumes now
    this.closed = true;
    this.clock.clear(this.releaseTimer);
    this.clock.clear(this.applyDeadlineTimer);
    this.applyDeadlineTimer = undefined;
    const failed = this.held.splice(0);
    for (const waiting of failed) waiting.fail(new VolumeIoError("ESHUTDOWN", `group ${this.name}: ${this.closedBecause}; the write was not accepted`));
    // The log's last word on held writes is the truth, whatever the interval (one line more at most).
    this.clock.clear(this.holdLogTimer);
    this.holdLogTimer = undefined;
    if (this.loggedHoldReason !== undefined) this.writeHoldLine(undefined, failed.length);
    await this.stopControl.close();
    await Promise.all([...this.volumes.values()].map((volume) => volume.order.drain()));
    if (this.stopped !== undefined) return undefined;
    return this.runCheckpoint(this.retainedThrough());
  }

  private stoppedError(): VolumeIoError {
    const stop = this.stopped;
    assert(stop !== undefined, "the group is stopped");
    return new VolumeIoError(stop.errno, `group ${this.name} is stopped: ${stop.reason}`);
  }

  private throwIfStopped(): void {
    if (this.closed) throw new VolumeIoError("ESHUTDOWN", `group ${this.name}: ${this.closedBecause}`);
    if (this.stopped !== undefined) throw this.stoppedError();
  }

  private ioError(error: Error): VolumeIoError {
    if (this.stopped !== undefined) return this.stoppedError();
    const code = errorCode(error);
    return new VolumeIoError(code === "ENOSPC" ? "ENOSPC" : "EIO", `group ${this.name}: ${error.message}`);
  }
}

function describeHold(reason: HoldReason): string {
  switch (reason) {
    case "journal-full":
      return "the journal is full; they wait until the secondary acknowledges more or a checkpoint frees space";
    case "apply-behind":
      return "the volumes are behind the journal; they wait for its fdatasync and the applies";
    case "slowdown":
      return "the journal is filling; they are slowed while the secondary catches up";
  }
}
