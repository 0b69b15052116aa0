// The secondary's side of one pair (patent Fig. 6 steps 1102-1105, Fig. 8): received
// records go through the pure receiver (duplicates dropped, out-of-order ones held in a
// bounded buffer), the contiguous run is appended to this node's journal for the group,
// made durable, and only then counted as arrived and acknowledged. The reflector reads
// the journal back through a small read-ahead cursor.
//
// This is the data path. The group's lifecycle (copying, replicating, stopped, waiting for
// journal room, taking over) is the pure machine of core/secondary-group-machine.ts, whose
// state this object holds (`lifecycle`); the events the data path meets itself (the disk
// stopped or resumed, the journal filled or freed room, received records were lost) are
// stepped here and their effects handed to the observer, which executes them.
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { positionZero, type Position } from "../core/position.ts";
import { PullPlanner } from "../core/pull-planner.ts";
import { GroupReceiver, type ReceiveResult } from "../core/receiver.ts";
import { asAcceptNumber, asSequence, asWriteTimeUs } from "../core/types.ts";
import { RecordKind, encodedRecordBytes, recordPayloadBytes, resizeSizeBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { HostWriteLedger } from "../core/pair-view.ts";
import { volumeBytesMax } from "../core/limits.ts";
import { GroupJournal } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import {
  initialSecondaryState, isConsistent, reflects, roomWaitReason, stepSecondaryGroup, type SecondaryGroupEffect, type SecondaryGroupEvent, type SecondaryGroupState,
  type SecondaryLifecycleRecord,
} from "../core/secondary-group-machine.ts";
import type { Clock } from "../node/clock.ts";
import { faultInjected } from "../core/faults.ts";
import { joinPending, type JoinPoint } from "../core/consistency-domain.ts";
import { GroupStopControl, isStorageError, reopenJournalForResume, withPath, type GroupStop, type ResumeOutcome } from "../node/group-stop.ts";
import { RecordTail } from "../storage/record-tail.ts";

/** Bytes of journal the reflector reads ahead per group. */
const reflectReadAheadBytes = 4 * 1024 * 1024;
/** Newest received records kept in memory for the reflector (beyond it, read from the journal). */
export const reflectTailBytesMax = 16 * 1024 * 1024;

/** A batch taken, refused by the receiver, or refused because the group is stopped (full disk, I/O error). */
export type SecondaryReceiveResult =
  | ReceiveResult<JournalRecord>
  | { readonly ok: false; readonly reason: "stopped"; readonly detail: string; readonly errno: "ENOSPC" | "EIO" };

export interface SecondaryVolume {
  readonly volumeId: number;
  readonly name: string;
  readonly file: VolumeFile;
}

/**
 * Who executes the effects of the steps a secondary group takes itself (SecondaryRole), and
 * hears when records arrive. Typed observers instead of hook fields a downstream object sets.
 */
export interface SecondaryGroupObserver {
  /** Effects of a step the group took itself (stop, resume, journal full or room again, received records lost): none has a completion. */
  execute(group: SecondaryGroup, effects: readonly SecondaryGroupEffect[]): void;
  /** Records became durable (arrived) while the group replicates: reflection may go on. */
  arrived(group: SecondaryGroup): void;
}

export class SecondaryGroup {
  readonly groupId: number;
  readonly name: string;
  private readonly logger: Logger;
  private readonly nodeId: string;
  /** The lifecycle machine's state (core/secondary-group-machine.ts); changed only by `step`. */
  private lifecycleState: SecondaryGroupState;
  get lifecycle(): SecondaryGroupState {
    return this.lifecycleState;
  }
  /** node.json's record of this secondary, as last saved. */
  get record(): SecondaryLifecycleRecord {
    return this.lifecycleState.record;
  }
  private journalValue!: GroupJournal;
  /** The group's journal (replaced by a resume, a copy restart or a takeover). */
  get journal(): GroupJournal {
    return this.journalValue;
  }
  set journal(journal: GroupJournal) {
    this.journalValue = journal;
    // A failed write or fdatasync stops the group, whoever met it.
    journal.onFailure = (error) => {
      if (this.journalValue === journal) this.stopWith(error, journal.dir);
    };
  }
  receiver: GroupReceiver<JournalRecord>;
  /** The primary's volume id -> this node's volume. */
  readonly volumesByPrimaryId = new Map<number, SecondaryVolume>();
  readonly volumes: readonly SecondaryVolume[];
  /** Sequence applied to the volumes (may be ahead of the persisted checkpoint). */
  reflectedSequence: number;
  reflectedPosition: Position;
  /** The primary's wall time (Unix µs) of the last record applied: the consistent-as-of time (0: unknown, core/pair-view.ts). */
  reflectedWallTimeUs: number;
  /** Host writes arrived (durable here) and not reflected yet: exact lag (core/pair-view.ts). */
  readonly hostWrites: HostWriteLedger;
  /** Wall time of the last message from the primary for this group (status: lastContact), or null. */
  lastContactIso: string | null = null;
  /** Records read ahead from the journal for the reflector, in sequence order. */
  private readAhead: JournalRecord[] = [];
  private readAheadHead = 0;
  private readAheadFill: Promise<void> | undefined;
  /** Appends handed to the journal and not yet durable. */
  private appendsInFlight = 0;
  /** What the primary said when it last closed a stream of this group (CLOSE text), for status. */
  peerCloseText: string | undefined;
  /** Since when no stream of the primary is attached (for status); undefined while one is, or before the first. */
  noStreamSinceIso: string | undefined;
  /** Monotonic ms since when no stream of the primary is attached (from the group's start until the first). */
  noStreamSinceMs: number;
  /** Streams attached to this group (connections that opened it). */
  readonly streams = new Set<number>();
  /**
   * A takeover fenced the primary's group, which accepted nothing past this sequence, and
   * every record through it has arrived: nothing more can come, so the group no longer holds
   * its domain's frontier (docs/replication.md, "Fencing"). Set from the primary's FENCED
   * answer for the length of one takeover: cleared when it ends without converting the group,
   * and when a primary opens the group again.
   */
  primaryFencedThrough: number | undefined;
  /**
   * Whether nothing more can arrive (see primaryFencedThrough). Exactly through it: a record
   * past it means the primary accepts again (unfenced meanwhile), and the group holds the
   * frontier again like any other.
   */
  get complete(): boolean {
    return this.primaryFencedThrough !== undefined && this.arrivedSequence === this.primaryFencedThrough;
  }
  /**
   * Volumes (this node's ids) that held no allocated block when the copy began: all zeroes,
   * so COPY_ZEROES for them is skipped (no zero pages written, the file stays sparse).
   */
  readonly zeroVolumes = new Set<number>();
  /** Bytes received by the copy so far. */
  copyBytes = 0;
  /** Journal records (encoded) and copy data received for this pair since the node started (metrics). */
  receivedBytes = 0;
  lastError: string | null = null;
  private readonly tail = new RecordTail(reflectTailBytesMax);
  /** A host write or zeroes was applied since the last checkpoint (the volumes need an fdatasync). */
  volumesWrittenSinceCheckpoint = false;
  /** Serialises the lifecycle steps of this group (OPEN_GROUP, COPY_DONE, a takeover's conversion) across streams. */
  lifecycleChain: Promise<void> = Promise.resolve();
  private readonly stopControl: GroupStopControl;
  private readonly clock: Clock;
  private closed = false;
  /** Pull mode: which PULL goes out next (shared by the streams that opened the group). */
  readonly pulls = new PullPlanner();
  private readonly observer: SecondaryGroupObserver;
  private readonly growVolumeOf: (volumeId: number, sizeBytes: number) => Promise<void>;

  /**
   * Grows one of the group's volumes (this node's id): node.json, the file, its map and the
   * size in memory (VolumeRegistry.grow), then the lifecycle's view of it. Idempotent.
   */
  async growVolume(volumeId: number, sizeBytes: number): Promise<void> {
    const volume = this.volumes.find((v) => v.volumeId === volumeId);
    assert(volume !== undefined, () => `volume ${volumeId} belongs to secondary ${this.name}`);
    try {
      await this.growVolumeOf(volumeId, sizeBytes);
    } catch (error) {
      throw withPath(error as Error, volume.file.path);
    }
    this.step({ type: "volumeGrown", volumeId, sizeBytes: volume.file.sizeBytes });
  }

  /**
   * Records this node answered (ACKed as received) were dropped before they arrived: parked
   * ones whose positions did not follow, or everything past the disk's last record when the
   * group resumed after a stop. The lifecycle closes the group's streams so the primary
   * sends them again (docs/replication-protocol.md). Found by the whole-node simulation.
   */
  private announceReceivedLost(why: string): void {
    if (faultInjected("silent-received-loss")) return;
    this.takeStep({ type: "receivedLost", why });
  }

  constructor(options: {
    groupId: number;
    name: string;
    /** node.json's record of this secondary and its journal directory generation. */
    record: SecondaryLifecycleRecord;
    journalGeneration: number;
    journal: GroupJournal;
    volumes: readonly SecondaryVolume[];
    logger: Logger;
    clock: Clock;
    /** This node's id (for the texts of refusals). */
    nodeId: string;
    observer: SecondaryGroupObserver;
    /** Position of the journal's last record (its newest), when it has one. */
    lastRecordPosition: Position | undefined;
    /** The host writes the journal held at start, past the checkpoint (recovery). */
    hostWrites?: HostWriteLedger | undefined;
    /**
     * Grows one of the group's volumes (this node's id) to a size, idempotently: node.json first
     * (VolumeRegistry.grow). Default (a group with no node around it, in tests): the file alone.
     */
    growVolume?: (volumeId: number, sizeBytes: number) => Promise<void>;
  }) {
    this.hostWrites = options.hostWrites ?? new HostWriteLedger();
    this.groupId = options.groupId;
    this.name = options.name;
    this.nodeId = options.nodeId;
    this.lifecycleState = initialSecondaryState({
      groupId: options.groupId, name: options.name, record: options.record, journalGeneration: options.journalGeneration,
      volumes: options.volumes.map((v) => ({ volumeId: v.volumeId, name: v.name, sizeBytes: v.file.sizeBytes })),
    });
    this.clock = options.clock;
    this.noStreamSinceMs = options.clock.monotonicMs();
    this.observer = options.observer;
    this.growVolumeOf = options.growVolume ?? (async (volumeId, sizeBytes) => {
      await options.volumes.find((v) => v.volumeId === volumeId)?.file.grow(sizeBytes);
    });
    this.stopControl = new GroupStopControl({
      name: options.name, logger: options.logger, clock: options.clock, fileSystem: options.journal.fileSystem,
      attemptResume: () => this.attemptResume(),
      onStateChange: () => {
        const stop = this.stopped;
        this.takeStep(stop === undefined ? { type: "resumed" } : { type: "stopped", stop: { errno: stop.errno, reason: stop.reason } });
      },
    });
    this.journal = options.journal;
    this.volumes = options.volumes;
    this.logger = options.logger;
    this.mapVolumes();
    this.reflectedSequence = options.record.reflectedSequence;
    this.reflectedPosition = { writeTimeUs: asWriteTimeUs(options.record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(options.record.reflectedAcceptNumber) };
    this.reflectedWallTimeUs = options.record.reflectedWallTimeUs ?? 0;
    this.receiver = this.newReceiver(options.lastRecordPosition);
  }

  /** The primary's volume ids -> this node's volumes, from the saved record. */
  private mapVolumes(): void {
    this.volumesByPrimaryId.clear();
    for (const mapping of this.record.volumes) {
      const volume = this.volumes.find((v) => v.volumeId === mapping.volumeId);
      assert(volume !== undefined, () => `secondary ${this.name} maps primary volume ${mapping.primaryVolumeId} to a volume it has`);
      this.volumesByPrimaryId.set(mapping.primaryVolumeId, volume);
    }
  }

  /**
   * One step of the lifecycle machine: the new state is kept, the effects are returned for
   * the caller to execute in order (SecondaryRole). The only place the state changes.
   */
  step(event: SecondaryGroupEvent): readonly SecondaryGroupEffect[] {
    const { state, effects } = stepSecondaryGroup(this.lifecycleState, event, this.nodeId);
    this.lifecycleState = state;
    return effects;
  }

  /** A step the data path takes itself: its effects (no completions) go to the observer. */
  private takeStep(event: SecondaryGroupEvent): void {
    const effects = this.step(event);
    if (effects.length > 0) this.observer.execute(this, effects);
  }

  /** A receiver that continues after the journal's last record (everything in it is durable after recovery). */
  private newReceiver(lastRecordPosition: Position | undefined): GroupReceiver<JournalRecord> {
    const journalLast = this.journal.lastSequence;
    const startSequence = Math.max(journalLast + 1, this.record.startSequence, this.reflectedSequence + 1);
    let startPosition: Position = positionZero;
    if (journalLast >= this.record.startSequence && journalLast >= this.reflectedSequence && lastRecordPosition !== undefined) startPosition = lastRecordPosition;
    else if (this.reflectedSequence >= this.record.startSequence) startPosition = this.reflectedPosition;
    return new GroupReceiver<JournalRecord>({ startSequence: asSequence(startSequence), startPosition, recordBytes: (r) => encodedRecordBytes(r) });
  }

  /**
   * The initial copy starts over on a fresh journal (the saved record has its start sequence
   * and volume map): receiver, read-ahead, reflected position and copy counters start over,
   * and every volume counts as all zeroes (they were emptied before the record was saved).
   */
  startCopyOver(journal: GroupJournal): void {
    this.journal = journal;
    this.tail.clear();
    this.readAhead = [];
    this.readAheadHead = 0;
    this.mapVolumes();
    this.reflectedSequence = this.record.reflectedSequence;
    this.reflectedPosition = positionZero;
    this.reflectedWallTimeUs = 0;
    this.hostWrites.clear();
    this.receiver = this.newReceiver(undefined);
    this.pulls.restart();
    this.copyBytes = 0;
    this.zeroVolumes.clear();
    for (const volume of this.volumes) this.zeroVolumes.add(volume.volumeId);
  }

  /** One chunk of the initial copy (checked by the lifecycle): written, unless it is zeroes over a volume emptied for this copy. */
  async writeCopyChunk(volumeId: number, offsetBytes: number, lengthBytes: number, data: Buffer | undefined): Promise<void> {
    const volume = this.volumes.find((v) => v.volumeId === volumeId);
    assert(volume !== undefined, "the lifecycle checked the copy's volume");
    this.copyWritesInFlight += 1;
    try {
      // The copy visits every range once, so a range of a volume that was all zeroes stays zero.
      if (data !== undefined) await volume.file.write(offsetBytes, data);
      else if (!this.zeroVolumes.has(volumeId)) await volume.file.writeZeroes(offsetBytes, lengthBytes);
      this.copyBytes += lengthBytes;
    } finally {
      this.copyWritesInFlight -= 1;
    }
  }

  /** Copy chunks being written to the volumes now (a pair delete during the copy waits for them). */
  copyWritesInFlight = 0;

  get arrivedSequence(): number {
    return this.receiver.arrivedSequence;
  }

  get arrivedPosition(): Position {
    // The old fault: what was received past a gap counted as arrived.
    if (faultInjected("ignore-gaps")) return this.receiver.maxReceivedPosition;
    return this.receiver.arrivedPosition;
  }

  /**
   * Where this group joined its consistency domain, while it is a member (set by the
   * Reflector from the domain's machine; null: consistent with the others from the start).
   */
  domainJoinPoint: JoinPoint | null = null;

  /**
   * Whether the secondary's image is dependent-write consistent (copy done and caught up)
   * and, as a member of its domain, consistent with the other members (past its join point).
   */
  /** Whether the image is dependent-write consistent on its own (copy done and caught up, nothing applied again), whatever its domain. */
  get consistentAlone(): boolean {
    return isConsistent(this.lifecycleState, { reflectedSequence: this.reflectedSequence, rewinding: this.rewinding, volumesSuspect: this.volumesSuspect });
  }

  get consistent(): boolean {
    return this.consistentAlone && !joinPending(this.domainJoinPoint, { reflectedSequence: this.reflectedSequence, reflectedPosition: this.reflectedPosition });
  }

  /**
   * Applying again what a failed fdatasync may have dropped (rewindIfPending): the volumes
   * may lack records counted as applied until reflection is back at reapplyThrough.
   */
  get rewinding(): boolean {
    return this.rewindPending || this.reflectedSequence < this.reapplyThroughSequence;
  }

  /**
   * One BATCH: receive, append the contiguous run, make it durable, count it arrived.
   * Resolves with the receiver's verdict once what was appended is durable.
   */
  async receiveBatch(records: readonly JournalRecord[]): Promise<SecondaryReceiveResult> {
    const stop = this.stopped;
    if (stop !== undefined) return { ok: false, reason: "stopped", detail: stop.reason, errno: stop.errno };
    for (const record of records) {
      if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes || record.kind === RecordKind.resize) {
        // A write may lie past the volume's end here when a resize record before it (maybe
        // still on its way on another stream) grows the volume: checked against the largest
        // size a volume may have now, and against the size the volume has when it is applied
        // (applyNext), where every resize before it has been.
        const volume = this.volumesByPrimaryId.get(record.volumeId);
        if (volume === undefined || record.offsetBytes + record.lengthBytes > volumeBytesMax) {
          return { ok: false, reason: "bad-sequence", detail: `record ${record.sequence} names volume ${record.volumeId} range ${record.offsetBytes}+${record.lengthBytes}, outside this group` };
        }
      }
    }
    // Back-pressure: the receiver hands out no more than the journal can take now, checked
    // before anything is handed out; a batch that does not fit changes nothing.
    const result = this.receiver.receive(records, faultInjected("receiver-commits-before-append") ? Number.MAX_SAFE_INTEGER : this.journal.freeBytes);
    if (!result.ok) {
      if (result.reason === "journal-full") {
        this.noteSpaceWait(result.detail);
        // Records parked ahead of this batch may fit even though the batch does not.
        const drained = await this.drainParked();
        if (drained !== undefined) return drained;
      }
      return result;
    }
    if (this.receiver.parked) this.noteSpaceWait(`sequence ${this.receiver.nextSequence} waits in memory for journal room`);
    else if (result.append.length > 0) this.noteSpaceFree();
    if (result.append.length === 0) return result;
    return (await this.appendDurably(result.append)) ?? result;
  }

  /** The journal freed room: hand out parked records, if any, and make them durable. Returns a stop, if one happened. */
  async drainParked(): Promise<SecondaryReceiveResult | undefined> {
    if (!this.receiver.parked || this.stopped !== undefined) return undefined;
    const { append, dropped } = this.receiver.drain(this.journal.freeBytes);
    if (dropped > 0) {
      this.logger.warn({ event: "target_parked_dropped", records: dropped }, "buffered records out of position order dropped; the primary sends them again");
      this.announceReceivedLost(`${dropped} received records were dropped (positions out of order); send them again`);
    }
    if (!this.receiver.parked) this.noteSpaceFree();
    return append.length === 0 ? undefined : this.appendDurably(append);
  }

  /**
   * Appends a run the receiver handed out (all of it fits: checked before) and counts it
   * arrived once durable. Undefined when done; a "stopped" result when the disk refused.
   */
  private async appendDurably(run: readonly JournalRecord[]): Promise<SecondaryReceiveResult | undefined> {
    // Records are views into socket chunks; the journal writes them before the chunk is reused (writev holds them).
    this.appendsInFlight += run.length;
    let last = 0;
    const journal = this.journal;
    try {
      for (const record of run) {
        void journal.append(record).catch(() => undefined); // failures surface through sync()
        if (journal.lastSequence !== record.sequence) {
          // The receiver counted it as handed out and the room was checked: only a failed or
          // closed journal refuses it (the group stops, or is being converted, and starts over).
          if (journal.failed !== undefined) throw journal.failed;
          throw new Error(`journal of ${this.name} did not take sequence ${record.sequence} the receiver handed out (it holds through ${journal.lastSequence})`);
        }
        this.tail.push(record);
        this.noteHostWrite(record);
        last = record.sequence;
      }
      await journal.sync();
    } catch (error) {
      // The disk refused (a full journal limit is not this: that is checked before handing out).
      // What was handed out may not be on disk: the resume re-reads the journal and the
      // receiver starts after what really is there, so the primary's resends fill the rest.
      if (!isStorageError(error) && this.stopped === undefined) throw error;
      this.stopWith(error as Error, journal.dir);
      const stopped = this.stopped;
      return { ok: false, reason: "stopped", detail: stopped?.reason ?? (error as Error).message, errno: stopped?.errno ?? "EIO" };
    } finally {
      this.appendsInFlight -= run.length;
    }
    if (this.journal !== journal) return { ok: false, reason: "stopped", detail: "the group was stopped and resumed meanwhile", errno: "EIO" };
    this.stopControl.noteProgress(journal.dir);
    // Several batches may be syncing at once: mark the highest durable handed-out sequence.
    const durable = Math.min(this.journal.durableSequence, this.receiver.handedOutSequence);
    if (durable > this.receiver.arrivedSequence) {
      this.receiver.markDurable(asSequence(durable));
      // Whatever path brought them (a batch, parked records drained when a batch found the
      // journal full, a resume), arrived records wake the reflector: a drain inside a
      // refused batch once moved arrived with nobody to reflect it (simulation seed 3700).
      if (reflects(this.lifecycleState)) this.observer.arrived(this);
    }
    assert(this.receiver.arrivedSequence >= last, "what this batch appended is arrived once durable");
    return undefined;
  }

  /** A record in the journal (appended, or read at start or resume): a host write counts in the lag until reflected. */
  noteHostWrite(record: JournalRecord): void {
    if (record.kind !== RecordKind.write && record.kind !== RecordKind.zeroes) return;
    if (record.sequence <= this.reflectedSequence) return;
    if (record.sequence <= this.hostWrites.lastNoted) this.hostWrites.dropAfter(record.sequence - 1);
    this.hostWrites.note(record.sequence, recordPayloadBytes(record.kind, record.lengthBytes), record.wallTimeUs, undefined);
  }

  /** Reflector checkpoint: trims the journal behind the reflected sequence; freed room resumes the group. */
  async trimThrough(sequence: number): Promise<void> {
    const before = this.journal.usedBytes;
    await this.journal.trimThrough(sequence);
    if (this.journal.usedBytes < before) this.takeStep({ type: "roomFreed" });
  }

  /** Whether the group waits for journal room (back-pressure on the primary). */
  get waitingForSpace(): boolean {
    return this.lifecycleState.roomWait !== undefined;
  }

  /**
   * The status reason while the group waits for journal room. `holder`: the group of the
   * consistency domain that holds reflection back (its arrived position is the frontier),
   * when it is another one.
   */
  spaceReason(holder: string | undefined): string | null {
    return roomWaitReason(this.lifecycleState, this.journal.usedBytes, this.journal.bytesMax, holder);
  }

  /** The primary was told the journal is out of room (or what came was parked): the lifecycle logs once per episode. */
  noteSpaceWait(detail: string): void {
    this.takeStep({ type: "journalFull", nowMs: this.clock.monotonicMs(), detail, usedBytes: this.journal.usedBytes, bytesMax: this.journal.bytesMax });
  }

  private noteSpaceFree(): void {
    if (this.lifecycleState.roomWait === undefined) return;
    this.takeStep({ type: "journalRoomBack", nowMs: this.clock.monotonicMs(), usedBytes: this.journal.usedBytes });
  }


  /** Set while the group is stopped by a full disk or an I/O error (its journal or a volume). */
  get stopped(): GroupStop | undefined {
    return this.stopControl.stop;
  }

  /**
   * A full disk or an I/O error: the group stops alone. It takes no more records (batches
   * are refused with NO_SPACE or INTERNAL, and the primary resends them later), nothing more
   * is reflected in its domain (it holds the frontier where it is), and the stop control
   * tries to resume. Idempotent: every error path calls it.
   */
  stopWith(error: Error, path: string, volumesTouched = false): void {
    if (this.closed) return;
    // A failed volume write or fdatasync: the image may lack what was applied (status shows no
    // consistent-as-of until the resume's re-apply is done; a journal-side stop keeps it).
    if (volumesTouched) this.volumesSuspect = true;
    this.stopControl.stopWith(error, path);
  }

  /** Reflection applied a record: a stop spell that resumed is over. */
  noteProgress(): void {
    this.stopControl.noteProgress();
  }

  /**
   * Re-reads the journal from the disk itself (O_DIRECT: after a failed write or fdatasync
   * the page cache may hold what the disk never got), re-verifies every record, and starts
   * the receiver after its last one: what arrived is what the disk holds. Everything it
   * had acknowledged must be there; if not, it stays stopped and says so.
   */
  private async attemptResume(): Promise<ResumeOutcome> {
    while (this.appendsInFlight > 0) await this.clock.sleep(5);
    const old = this.journal;
    const acknowledged = this.receiver.arrivedSequence;
    const oldReceiver = this.receiver;
    await old.abandon();
    const opened = await reopenJournalForResume({
      // cutDamagedTail: after a failed fdatasync the disk may hold a hole followed by records written
      // back later; all of them came after what was acknowledged, which the check requires whole.
      open: () => GroupJournal.open(old.dir, { fileSystem: old.fileSystem, bytesMax: old.bytesMax, nextSequence: this.record.startSequence, directRead: true, cutDamagedTail: true }, (record) => this.noteHostWrite(record)),
      closed: () => this.closed,
      mustHoldThrough: acknowledged,
      lostReason: (lastSequence) => `the journal holds records only through sequence ${lastSequence} but ${acknowledged} had been acknowledged to the primary: ` +
        "the disk lost acknowledged data. The group stays stopped; recreate the pair (a new initial copy)",
    });
    if (opened.kind !== "opened") return opened;
    const { journal, report } = opened;
    const lastRecordPosition = report.records > 0 ? { writeTimeUs: asWriteTimeUs(report.maxWriteTimeUs), acceptNumber: asAcceptNumber(report.maxAcceptNumber) } : undefined;
    this.journal = journal;
    this.tail.clear();
    this.readAhead = [];
    this.readAheadHead = 0;
    this.receiver = this.newReceiver(lastRecordPosition);
    this.hostWrites.dropAfter(this.receiver.arrivedSequence);
    this.pulls.restart();
    this.logger.info({ event: "group_journal_reread", group: this.name, arrived: this.receiver.arrivedSequence, reflected: this.reflectedSequence }, "journal re-read from disk and verified");
    // A failed volume write or fdatasync may have dropped applied pages from the page cache:
    // the reflector applies again from the last checkpoint (rewindIfPending, in its own loop).
    this.rewindPending = true;
    this.volumesSuspect = false; // rewindPending says it now, until the re-apply is done
    const forgotten = oldReceiver.reorderRecords + Math.max(0, oldReceiver.handedOutSequence - this.receiver.arrivedSequence);
    if (forgotten > 0) this.announceReceivedLost(`the group resumed after a stop; ${forgotten} received records past sequence ${this.receiver.arrivedSequence} were not stored and must be sent again`);
    return { kind: "resumed" };
  }

  /** The node is stopping: no more resume attempts. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stopControl.close();
  }

  get pendingAppends(): number {
    return this.appendsInFlight;
  }

  /** The next record to reflect (reflectedSequence + 1), if it is arrived and read ahead. */
  peek(): JournalRecord | undefined {
    const record = this.readAhead[this.readAheadHead];
    if (record === undefined) return undefined;
    assert(record.sequence === this.reflectedSequence + 1, () => `read-ahead of ${this.name} is at the next sequence`);
    return record.sequence <= this.arrivedSequence ? record : undefined;
  }

  /** Whether arrived records exist past the read-ahead (the reflector should fill it). */
  get needsFill(): boolean {
    return this.readAheadHead >= this.readAhead.length && this.arrivedSequence > this.reflectedSequence;
  }

  /** Reads the next arrived records from the journal into the read-ahead. */
  fill(): Promise<void> {
    if (this.readAheadFill !== undefined) return this.readAheadFill;
    // Cleared in a .finally callback (a microtask later), never synchronously: a fill served
    // from memory completes without awaiting anything.
    const filling = this.readNext().finally(() => {
      if (this.readAheadFill === filling) this.readAheadFill = undefined;
    });
    this.readAheadFill = filling;
    return filling;
  }

  private async readNext(): Promise<void> {
    const from = this.reflectedSequence + 1;
    if (from > this.arrivedSequence) return;
    this.tail.dropThrough(this.reflectedSequence);
    const records = this.tail.read(from, reflectReadAheadBytes, this.arrivedSequence) ?? (await this.journal.readFrom(from, reflectReadAheadBytes));
    this.readAhead = records.filter((r) => r.sequence <= this.arrivedSequence);
    this.readAheadHead = 0;
  }

  /** Set by a resume after a stop: what was applied since the last checkpoint is applied again. */
  private rewindPending = false;
  /** Set when a volume write or fdatasync failed (the stop that came of it), until the resume. */
  private volumesSuspect = false;
  /** Whether a checkpoint may record what is applied now: not while stopped, nor while a rewind waits. */
  get checkpointable(): boolean {
    return this.stopped === undefined && !this.rewindPending;
  }

  /** After a rewind: the image is consistent again once reflection is back here. */
  private reapplyThroughSequence = 0;
  get reapplyThrough(): number {
    return this.reapplyThroughSequence;
  }
  /** Counts rewinds: the reflector's tracker of this group starts over after one. */
  reflectGeneration = 0;

  /**
   * After a stop (an I/O error or a full disk) the volumes may lack what was applied since
   * the last checkpoint (after a failed fdatasync the kernel may drop the dirty pages; the
   * fsyncgate lesson): reflection goes back to the checkpoint and applies those records
   * again (idempotent). Called by the reflector between cycles. Before, a resumed secondary
   * kept counting them as applied, and its next checkpoint made the loss permanent.
   */
  rewindIfPending(): void {
    if (!this.rewindPending || this.readAheadFill !== undefined || faultInjected("resume-keeps-applied")) return;
    this.rewindPending = false;
    // What follows the checkpoint is applied again before any checkpoint can claim it: a volume
    // whose fdatasync failed may prove durability again (storage/volume-file.ts).
    for (const volume of this.volumes) volume.file.syncFailureRepaired();
    if (this.reflectedSequence <= this.record.reflectedSequence) return;
    this.logger.warn({ event: "secondary_reflect_rewound", group: this.name, fromSequence: this.reflectedSequence, toSequence: this.record.reflectedSequence },
      "applying again what was applied since the last checkpoint (a failed write or fdatasync may have lost it)");
    this.reapplyThroughSequence = this.reflectedSequence;
    this.reflectedSequence = this.record.reflectedSequence;
    this.reflectedPosition = { writeTimeUs: asWriteTimeUs(this.record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(this.record.reflectedAcceptNumber) };
    this.reflectedWallTimeUs = this.record.reflectedWallTimeUs ?? 0;
    this.readAhead = [];
    this.readAheadHead = 0;
    this.reflectGeneration += 1;
  }

  /**
   * A takeover applies the journal through its cut from the saved checkpoint (core/takeover.ts):
   * what was applied since may not be on the volumes (a failed fdatasync drops pages), and
   * applying it again is idempotent. Call only once the reflector no longer touches the group.
   */
  async rewindToCheckpoint(): Promise<void> {
    while (this.readAheadFill !== undefined) await this.readAheadFill;
    // Every range applied since the checkpoint is written again before the takeover's fdatasync.
    for (const volume of this.volumes) volume.file.syncFailureRepaired();
    this.rewindPending = false;
    this.reflectedSequence = this.record.reflectedSequence;
    this.reflectedPosition = { writeTimeUs: asWriteTimeUs(this.record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(this.record.reflectedAcceptNumber) };
    this.reflectedWallTimeUs = this.record.reflectedWallTimeUs ?? 0;
    this.readAhead = [];
    this.readAheadHead = 0;
    this.reflectGeneration += 1;
  }

  /**
   * Applies the peeked record to the volume (markers and time advances change nothing; a
   * resize grows the volume, node.json first, before the reflected sequence passes it, so no
   * checkpoint passes the record before the new size is saved). A write past the volume's end
   * (no resize before it) is the primary's damage, never asserted: an EIO error that stops
   * the group, with the reason.
   */
  async applyNext(record: JournalRecord): Promise<void> {
    assert(record.sequence === this.reflectedSequence + 1, () => `I2: ${this.name} reflects ${record.sequence} right after ${this.reflectedSequence}`);
    if (record.kind === RecordKind.resize) {
      const volume = this.volumesByPrimaryId.get(record.volumeId);
      assert(volume !== undefined, "received records were checked against the volume map");
      this.volumesWrittenSinceCheckpoint = true;
      await this.growVolume(volume.volumeId, resizeSizeBytes(record));
    } else if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes) {
      const volume = this.volumesByPrimaryId.get(record.volumeId);
      assert(volume !== undefined, "received records were checked against the volume map");
      if (record.offsetBytes + record.lengthBytes > volume.file.sizeBytes) {
        throw Object.assign(new Error(`record ${record.sequence} from the primary writes ${record.offsetBytes}+${record.lengthBytes} past the end of volume ${volume.name} ` +
          `(${volume.file.sizeBytes} bytes) with no resize before it: the primary's journal is damaged; the group reflects nothing more (recreate the pair)`), { code: "EIO", path: volume.file.path });
      }
      this.volumesWrittenSinceCheckpoint = true;
      try {
        if (record.kind === RecordKind.write) await volume.file.write(record.offsetBytes, record.payload);
        else await volume.file.writeZeroes(record.offsetBytes, record.lengthBytes);
      } catch (error) {
        throw withPath(error as Error, volume.file.path);
      }
    }
    this.readAheadHead += 1;
    this.reflectedSequence = record.sequence;
    this.reflectedPosition = { writeTimeUs: record.writeTimeUs, acceptNumber: record.acceptNumber };
    if (record.wallTimeUs > this.reflectedWallTimeUs) this.reflectedWallTimeUs = record.wallTimeUs;
    this.hostWrites.dropThrough(record.sequence);
  }
}

