// The secondary's side of one pair (patent Fig. 6 steps 1102-1105, Fig. 8): received
// records go through the pure receiver (duplicates dropped, out-of-order ones held in a
// bounded buffer), the contiguous run is appended to this node's journal for the group,
// made durable, and only then counted as arrived and acknowledged. The reflector reads
// the journal back through a small read-ahead cursor.
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { positionZero, type Position } from "../core/position.ts";
import { PullPlanner } from "../core/pull-planner.ts";
import { GroupReceiver, type ReceiveResult } from "../core/receiver.ts";
import { asAcceptNumber, asSequence, asWriteTimeUs } from "../core/types.ts";
import { RecordKind, encodedRecordBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { GroupJournal, type RecoveryReport } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import type { SecondaryRecord } from "../metadata/metadata.ts";
import type { Clock } from "../node/clock.ts";
import { faultInjected } from "../core/faults.ts";
import { GroupStopControl, isStorageError, withPath, type GroupStop, type ResumeOutcome } from "../node/group-stop.ts";
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

export class SecondaryGroup {
  readonly groupId: number;
  readonly name: string;
  private readonly logger: Logger;
  record: SecondaryRecord;
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
  /** Streams attached to this group (connections that opened it). */
  readonly streams = new Set<number>();
  /**
   * Volumes (this node's ids) that held no allocated block when the copy began: all zeroes,
   * so COPY_ZEROES for them is skipped (no zero pages written, the file stays sparse).
   */
  readonly zeroVolumes = new Set<number>();
  /** Bytes received by the copy so far. */
  copyBytes = 0;
  lastError: string | null = null;
  private readonly tail = new RecordTail(reflectTailBytesMax);
  /** Set while a takeover runs: the replication listener refuses this group. */
  takingOver = false;
  /** A host write or zeroes was applied since the last checkpoint (the volumes need an fdatasync). */
  volumesWrittenSinceCheckpoint = false;
  /** When the last checkpoint was saved (monotonic ms). */
  lastCheckpointMs = 0;
  /** Set once a takeover has reflected this group to its last consistent point: nothing more is applied. */
  frozen = false;
  /** Serialises OPEN_GROUP handling across streams. */
  openChain: Promise<void> = Promise.resolve();
  private readonly stopControl: GroupStopControl;
  private readonly clock: Clock;
  private closed = false;
  /** Pull mode: which PULL goes out next (shared by the streams that opened the group). */
  readonly pulls = new PullPlanner();
  /**
   * Back-pressure: set while the journal could not take what arrived (a batch refused, or
   * the next record parked in memory): since when (monotonic ms) and why.
   */
  private spaceWait: { readonly sinceMs: number; detail: string } | undefined;
  /** Called after a trim freed journal space (the replication listener resumes the group). */
  onJournalSpace: () => void = () => undefined;
  /** Wakes the reflector: records arrived, or the group began waiting for journal room. */
  private readonly kickReflection: () => void;
  /**
   * Called when records this node answered (ACKed as received) were dropped before they
   * arrived: parked ones whose positions did not follow, or everything past the disk's last
   * record when the group resumed after a stop. The primary counts them as answered and
   * waits for their arrival, which never comes unless it sends them again: the replication
   * listener closes the group's streams, and the handshake that follows rewinds the primary
   * to what arrived here (docs/replication-protocol.md). Found by the whole-node simulation.
   */
  onReceivedLost: (why: string) => void = () => undefined;

  private announceReceivedLost(why: string): void {
    if (faultInjected("silent-received-loss")) return;
    this.onReceivedLost(why);
  }

  constructor(options: {
    groupId: number;
    name: string;
    record: SecondaryRecord;
    journal: GroupJournal;
    volumes: readonly SecondaryVolume[];
    logger: Logger;
    clock: Clock;
    /** Called when the group stops or resumes (the reflector goes on; status changes), when records arrive, and when it starts waiting for journal room. */
    onStateChange: () => void;
    /** Position of the journal's last record (its newest), when it has one. */
    lastRecordPosition: Position | undefined;
  }) {
    this.groupId = options.groupId;
    this.name = options.name;
    this.record = options.record;
    this.clock = options.clock;
    this.kickReflection = options.onStateChange;
    this.stopControl = new GroupStopControl({
      name: options.name, logger: options.logger, clock: options.clock, fileSystem: options.journal.fileSystem,
      attemptResume: () => this.attemptResume(),
      onStateChange: () => {
        options.onStateChange();
        // Resumed: like a trim, room again (parked records, the primary's refused batches, pulls).
        if (this.stopped === undefined) this.onJournalSpace();
      },
    });
    this.journal = options.journal;
    this.volumes = options.volumes;
    this.logger = options.logger;
    for (const mapping of options.record.volumes) {
      const volume = options.volumes.find((v) => v.volumeId === mapping.volumeId);
      assert(volume !== undefined, () => `secondary ${options.name} maps primary volume ${mapping.primaryVolumeId} to a volume it has`);
      this.volumesByPrimaryId.set(mapping.primaryVolumeId, volume);
    }
    this.reflectedSequence = options.record.reflectedSequence;
    this.reflectedPosition = { writeTimeUs: asWriteTimeUs(options.record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(options.record.reflectedAcceptNumber) };
    this.receiver = this.newReceiver(options.lastRecordPosition);
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

  /** Replaces the journal (after the copy's start sequence is known, or a takeover). */
  resetJournal(journal: GroupJournal): void {
    this.journal = journal;
    this.tail.clear();
    this.readAhead = [];
    this.readAheadHead = 0;
    this.receiver = this.newReceiver(undefined);
    this.pulls.restart();
  }

  get arrivedSequence(): number {
    return this.receiver.arrivedSequence;
  }

  get arrivedPosition(): Position {
    // The old fault: what was received past a gap counted as arrived.
    if (faultInjected("ignore-gaps")) return this.receiver.maxReceivedPosition;
    return this.receiver.arrivedPosition;
  }

  /** Whether the secondary's image is dependent-write consistent (copy done and caught up). */
  get consistent(): boolean {
    if (this.record.state === "takeover") return true;
    // Stopped by a disk error, or applying again what a failed fdatasync may have dropped
    // (rewindIfPending): the volumes may lack records counted as applied until then.
    if (this.stopped !== undefined || this.rewindPending || this.reflectedSequence < this.reapplyThroughSequence) return false;
    return this.record.state === "replicating" && this.reflectedSequence >= this.record.consistentFromSequence;
  }

  /**
   * One BATCH: receive, append the contiguous run, make it durable, count it arrived.
   * Resolves with the receiver's verdict once what was appended is durable.
   */
  async receiveBatch(records: readonly JournalRecord[]): Promise<SecondaryReceiveResult> {
    const stop = this.stopped;
    if (stop !== undefined) return { ok: false, reason: "stopped", detail: stop.reason, errno: stop.errno };
    for (const record of records) {
      if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes) {
        const volume = this.volumesByPrimaryId.get(record.volumeId);
        if (volume === undefined || record.offsetBytes + record.lengthBytes > volume.file.sizeBytes) {
          return { ok: false, reason: "bad-sequence", detail: `record ${record.sequence} secondaries volume ${record.volumeId} range ${record.offsetBytes}+${record.lengthBytes}, outside this group` };
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
      if (this.record.state === "replicating") this.kickReflection();
    }
    assert(this.receiver.arrivedSequence >= last, "what this batch appended is arrived once durable");
    return undefined;
  }

  /** Reflector checkpoint: trims the journal behind the reflected sequence; freed room resumes the group. */
  async trimThrough(sequence: number): Promise<void> {
    const before = this.journal.usedBytes;
    await this.journal.trimThrough(sequence);
    if (this.journal.usedBytes < before) this.onJournalSpace();
  }

  /** Whether the group waits for journal room (back-pressure on the primary). */
  get waitingForSpace(): boolean {
    return this.spaceWait !== undefined;
  }

  /**
   * The status reason while the group waits for journal room. `holder`: the group of the
   * consistency domain that holds reflection back (its arrived position is the frontier),
   * when it is another one.
   */
  spaceReason(holder: string | undefined): string | null {
    if (this.spaceWait === undefined) return null;
    const usage = `${formatMiB(this.journal.usedBytes)} of ${formatMiB(this.journal.bytesMax)}`;
    const why = holder === undefined ? "waiting for reflection to free space" : `waiting for reflection (held by group ${holder})`;
    return `journal full (${usage}): ${why}`;
  }

  /** The primary was told the journal is out of room (or what came was parked): log once per episode. */
  noteSpaceWait(detail: string): void {
    if (this.spaceWait !== undefined) {
      this.spaceWait.detail = detail;
      return;
    }
    this.spaceWait = { sinceMs: this.clock.monotonicMs(), detail };
    // Reflected records free room only once checkpointed, and the reflector may have gone
    // idle before the journal filled: wake it, so it checkpoints (on its timer) while the
    // group waits. Without this a secondary whose last reflection ran just before the
    // refusal waited for ever with every record reflected (whole-node simulation).
    this.kickReflection();
    this.logger.warn({ event: "secondary_journal_full", usedBytes: this.journal.usedBytes, bytesMax: this.journal.bytesMax, detail }, "secondary journal full: taking no more records until reflection frees space");
  }

  private noteSpaceFree(): void {
    const wait = this.spaceWait;
    if (wait === undefined) return;
    this.spaceWait = undefined;
    this.logger.info({ event: "secondary_journal_room", waitedMs: Math.round(this.clock.monotonicMs() - wait.sinceMs), usedBytes: this.journal.usedBytes }, "secondary journal has room again; receiving");
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
  stopWith(error: Error, path: string): void {
    if (this.closed) return;
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
    let opened: { journal: GroupJournal; report: RecoveryReport };
    try {
      // cutDamagedTail: after a failed fdatasync the disk may hold a hole followed by records written
      // back later; all of them came after what was acknowledged, which the check below requires whole.
      opened = await GroupJournal.open(old.dir, { fileSystem: old.fileSystem, bytesMax: old.bytesMax, nextSequence: this.record.startSequence, directRead: true, cutDamagedTail: true });
    } catch (error) {
      if (isStorageError(error)) return { kind: "retry", error };
      throw error;
    }
    const { journal, report } = opened;
    if (this.closed) {
      await journal.close().catch(() => undefined);
      return { kind: "retry", error: new Error("closing") };
    }
    if (report.lastSequence < acknowledged) {
      await journal.close().catch(() => undefined);
      return {
        kind: "final",
        reason: `the journal holds records only through sequence ${report.lastSequence} but ${acknowledged} had been acknowledged to the primary: ` +
          "the disk lost acknowledged data. The group stays stopped; recreate the pair (a new initial copy)",
      };
    }
    const lastRecordPosition = report.records > 0 ? { writeTimeUs: asWriteTimeUs(report.maxWriteTimeUs), acceptNumber: asAcceptNumber(report.maxAcceptNumber) } : undefined;
    this.journal = journal;
    this.tail.clear();
    this.readAhead = [];
    this.readAheadHead = 0;
    this.receiver = this.newReceiver(lastRecordPosition);
    this.pulls.restart();
    this.logger.info({ event: "group_journal_reread", group: this.name, arrived: this.receiver.arrivedSequence, reflected: this.reflectedSequence }, "journal re-read from disk and verified");
    // A failed volume write or fdatasync may have dropped applied pages from the page cache:
    // the reflector applies again from the last checkpoint (rewindIfPending, in its own loop).
    this.rewindPending = true;
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
    if (this.reflectedSequence <= this.record.reflectedSequence) return;
    this.logger.warn({ event: "target_reflect_rewound", group: this.name, fromSequence: this.reflectedSequence, toSequence: this.record.reflectedSequence },
      "applying again what was applied since the last checkpoint (a failed write or fdatasync may have lost it)");
    this.reapplyThroughSequence = this.reflectedSequence;
    this.reflectedSequence = this.record.reflectedSequence;
    this.reflectedPosition = { writeTimeUs: asWriteTimeUs(this.record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(this.record.reflectedAcceptNumber) };
    this.readAhead = [];
    this.readAheadHead = 0;
    this.reflectGeneration += 1;
  }

  /** Applies the peeked record to the volume (markers and time advances change nothing). */
  async applyNext(record: JournalRecord): Promise<void> {
    assert(record.sequence === this.reflectedSequence + 1, () => `I2: ${this.name} reflects ${record.sequence} right after ${this.reflectedSequence}`);
    if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes) {
      const volume = this.volumesByPrimaryId.get(record.volumeId);
      assert(volume !== undefined, "received records were checked against the volume map");
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
  }
}

function formatMiB(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
