// The write path of a primary for one consistency group (patent Fig. 3, 10, 11):
// stamp -> next sequence number -> append to the group's journal -> apply to the volume
// -> answer. FUA and FLUSH wait for the journal's group commit. The journal is the
// write-ahead log: a checkpoint fdatasyncs the volumes, records how far they hold the
// journal, and lets the journal drop what is behind that point.
import { assert } from "../core/assert.ts";
import { journalCheckpointBytes } from "../core/limits.ts";
import { asMarkerNumber, asSequence, asVolumeId, type VolumeId } from "../core/types.ts";
import { RecordKind, encodedRecordBytes, journalHeaderBytes, type JournalRecord } from "../protocol/journal-record.ts";
import type { GroupJournal } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import type { ApplyOrder } from "./apply-order.ts";
import type { NodeStamper } from "./stamper.ts";
import { VolumeIoError } from "../core/volume-io.ts";

/** A host write or write-zeroes as the front ends hand it over. */
interface HostWrite {
  readonly kind: typeof RecordKind.write | typeof RecordKind.zeroes;
  readonly volumeId: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly payload: Buffer;
  readonly fua: boolean;
  readonly hostWriteTimeUs: number | undefined;
}

const emptyPayload = Buffer.alloc(0);

/** Held writes: at most one per request the front ends let be in flight. */
const heldWritesMax = 1 << 20;

export interface GroupVolume {
  readonly id: VolumeId;
  readonly file: VolumeFile;
  readonly order: ApplyOrder;
}

export interface CheckpointResult {
  readonly checkpointSequence: number;
  readonly nextSequence: number;
}

export class GroupWriter {
  readonly groupId: number;
  readonly name: string;
  private readonly journal: GroupJournal;
  private readonly stamper: NodeStamper;
  private readonly volumes: ReadonlyMap<number, GroupVolume>;
  private nextSequenceValue: number;
  private appliedSequenceValue: number;
  /** Sequences applied out of order, waiting for the ones before them. Bounded by writes in flight. */
  private readonly appliedAhead = new Set<number>();
  private lastWriteTimeUsValue = 0;
  private bytesSinceCheckpoint = 0;
  private checkpointRunning: Promise<CheckpointResult> | undefined;
  private readonly held: { readonly recordBytes: number; readonly notBeforeMs: number; readonly run: () => Promise<void> }[] = [];
  private releaseTimer: NodeJS.Timeout | undefined;
  /** When the last record was accepted (wall clock, ms). */
  lastRecordAtMs = 0;
  /** Called after each record is stamped and appended (the pair's sender listens). */
  onRecord: (record: JournalRecord) => void = () => undefined;
  /** Delay for new writes while a pair lets the journal fill (0: none). */
  slowdownMs: () => number = () => 0;
  private spaceRequested = false;
  /** The journal may not trim past this (a pair's acknowledged sequence); set by the pair. */
  trimFloor: () => number = () => Number.MAX_SAFE_INTEGER;
  private failure: Error | undefined;
  /** Persists a checkpoint in the node metadata; supplied by the node. */
  private readonly persistCheckpoint: (result: CheckpointResult) => Promise<void>;

  constructor(options: {
    groupId: number;
    name: string;
    journal: GroupJournal;
    stamper: NodeStamper;
    volumes: ReadonlyMap<number, GroupVolume>;
    nextSequence: number;
    appliedSequence: number;
    persistCheckpoint: (result: CheckpointResult) => Promise<void>;
  }) {
    assert(options.nextSequence >= 1, "sequence numbers start at 1");
    assert(options.appliedSequence < options.nextSequence, "applied sequence is behind the next one");
    this.groupId = options.groupId;
    this.name = options.name;
    this.journal = options.journal;
    this.stamper = options.stamper;
    this.volumes = options.volumes;
    this.nextSequenceValue = options.nextSequence;
    this.appliedSequenceValue = options.appliedSequence;
    this.persistCheckpoint = options.persistCheckpoint;
  }

  get nextSequence(): number {
    return this.nextSequenceValue;
  }
  get appliedSequence(): number {
    return this.appliedSequenceValue;
  }
  get lastWriteTimeUs(): number {
    return this.lastWriteTimeUsValue;
  }
  get journalStats(): GroupJournal {
    return this.journal;
  }
  get failed(): Error | undefined {
    return this.failure;
  }

  write(volumeId: number, offsetBytes: number, data: Buffer, fua: boolean, hostWriteTimeUs: number | undefined): Promise<void> {
    return this.accept({ kind: RecordKind.write, volumeId, offsetBytes, lengthBytes: data.length, payload: data, fua, hostWriteTimeUs });
  }

  writeZeroes(volumeId: number, offsetBytes: number, lengthBytes: number, fua: boolean, hostWriteTimeUs: number | undefined): Promise<void> {
    return this.accept({ kind: RecordKind.zeroes, volumeId, offsetBytes, lengthBytes, payload: emptyPayload, fua, hostWriteTimeUs });
  }

  /** Every write answered before this call is durable once it resolves (group commit). */
  async flush(): Promise<void> {
    this.throwIfFailed();
    await this.journal.sync();
  }

  private accept(write: HostWrite): Promise<void> {
    this.throwIfFailed();
    const recordBytes = journalHeaderBytes + write.payload.length;
    const delayMs = this.slowdownMs();
    if (this.held.length === 0 && delayMs === 0 && this.journal.freeBytes >= recordBytes) {
      return this.acceptNow(write);
    }
    // The journal is filling or full: slow the write down, or hold it (never fail it, never
    // drop it). It is stamped and sequenced when released, behind every write held before it.
    assert(this.held.length < heldWritesMax, "held writes stay bounded (front ends bound requests in flight)");
    return new Promise<void>((resolve, reject) => {
      this.held.push({
        recordBytes,
        notBeforeMs: delayMs > 0 ? Date.now() + delayMs : 0,
        run: () => this.acceptNow(write).then(resolve, reject),
      });
      if (this.journal.freeBytes < recordBytes) this.requestSpace();
      else this.scheduleRelease(delayMs);
    });
  }

  private scheduleRelease(delayMs: number): void {
    if (this.releaseTimer !== undefined) return;
    this.releaseTimer = setTimeout(() => {
      this.releaseTimer = undefined;
      this.releaseHeld();
    }, Math.max(1, delayMs));
  }

  /**
   * A time-advance record (kind 4): stamped and sequenced like a write, applied to no
   * volume. It moves an idle group's arrived position on at the secondary.
   */
  appendTimeAdvance(): void {
    if (this.failure !== undefined || this.held.length > 0 || this.journal.freeBytes < journalHeaderBytes) return;
    const record = this.nextRecord(RecordKind.timeAdvance, asVolumeId(0), 0, 0, emptyPayload, undefined);
    const appended = this.journal.append(record);
    this.onRecord(record);
    this.complete(record.sequence, appended, Promise.resolve(), false).catch(() => undefined);
  }

  /** Writes waiting for journal space, oldest first. */
  get heldWrites(): number {
    return this.held.length;
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
        this.fail(error as Error);
        for (const waiting of this.held.splice(0)) waiting.run().catch(() => undefined);
      });
  }

  /** Called when space may have freed (after a checkpoint or when the trim floor moves). */
  releaseHeld(): void {
    while (this.held.length > 0) {
      const first = this.held[0];
      assert(first !== undefined, "held queue is not empty");
      if (this.failure === undefined && first.notBeforeMs > Date.now()) {
        this.scheduleRelease(first.notBeforeMs - Date.now());
        return;
      }
      if (this.failure === undefined && this.journal.freeBytes < first.recordBytes) {
        // Still full: whatever holds the journal (a checkpoint in flight, or later a slow
        // secondary) will call again when it moves.
        if (this.appliedSequenceValue < this.nextSequenceValue - 1 || this.canTrimMore()) this.requestSpace();
        return;
      }
      this.held.shift();
      void first.run();
    }
  }

  /** Whether a checkpoint could free anything (records behind the trim floor exist). */
  private canTrimMore(): boolean {
    return this.journal.firstSequence <= Math.min(this.appliedSequenceValue, this.trimFloor());
  }

  private acceptNow(write: HostWrite): Promise<void> {
    this.throwIfFailed();
    const { kind, offsetBytes, lengthBytes, payload } = write;
    const volume = this.volumes.get(write.volumeId);
    assert(volume !== undefined, () => `volume ${write.volumeId} belongs to group ${this.name}`);
    assert(lengthBytes > 0 && offsetBytes + lengthBytes <= volume.file.sizeBytes, "write range checked at the edge");
    const record = this.nextRecord(kind, volume.id, offsetBytes, lengthBytes, payload, write.hostWriteTimeUs);
    const appended = this.journal.append(record);
    const applied = volume.order.run(offsetBytes, offsetBytes + lengthBytes, () =>
      kind === RecordKind.write ? volume.file.write(offsetBytes, payload) : volume.file.writeZeroes(offsetBytes, lengthBytes),
    );
    this.onRecord(record);
    return this.complete(record.sequence, appended, applied, write.fua);
  }

  /** Stamps and sequences the next record, synchronously, in acceptance order: nothing may interleave here. */
  private nextRecord(kind: RecordKind, volumeId: VolumeId, offsetBytes: number, lengthBytes: number, payload: Buffer, hostWriteTimeUs: number | undefined): JournalRecord {
    const stamp = this.stamper.stamp(hostWriteTimeUs);
    const sequence = this.nextSequenceValue;
    this.nextSequenceValue = sequence + 1;
    this.lastWriteTimeUsValue = stamp.writeTimeUs;
    this.lastRecordAtMs = Date.now();
    const record: JournalRecord = {
      kind, volumeId, offsetBytes, lengthBytes, sequence: asSequence(sequence),
      writeTimeUs: stamp.writeTimeUs, acceptNumber: stamp.acceptNumber, markerNumber: asMarkerNumber(0), payload,
    };
    this.bytesSinceCheckpoint += encodedRecordBytes(record);
    return record;
  }

  private async complete(sequence: number, appended: Promise<void>, applied: Promise<void>, fua: boolean): Promise<void> {
    try {
      await Promise.all([appended, applied]);
    } catch (error) {
      // The journal and the volume may now disagree about this sequence: stop the group
      // rather than let a replay or a secondary see something the host never got answered.
      this.fail(error as Error);
      throw this.ioError(error as Error);
    }
    this.markApplied(sequence);
    if (fua) await this.flush();
    // A quarter of a small journal, so a checkpoint frees room before writes have to wait for it.
    if (this.bytesSinceCheckpoint >= Math.min(journalCheckpointBytes, this.journal.bytesMax / 4) && this.checkpointRunning === undefined) {
      this.checkpoint().catch((error: unknown) => this.fail(error as Error));
    }
  }

  private markApplied(sequence: number): void {
    assert(sequence > this.appliedSequenceValue, "a sequence is applied once");
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
    const running = this.runCheckpoint(this.trimFloor()).finally(() => {
      this.checkpointRunning = undefined;
    });
    this.checkpointRunning = running;
    return running;
  }

  private async runCheckpoint(trimFloor: number): Promise<CheckpointResult> {
    const checkpointSequence = this.appliedSequenceValue;
    const bytesAtStart = this.bytesSinceCheckpoint;
    // Journal first: a volume must never hold data the journal could lose.
    await this.journal.sync();
    await Promise.all([...this.volumes.values()].map((volume) => volume.file.datasync()));
    const result: CheckpointResult = { checkpointSequence, nextSequence: this.nextSequenceValue };
    await this.persistCheckpoint(result);
    await this.journal.trimThrough(Math.min(checkpointSequence, trimFloor));
    this.bytesSinceCheckpoint = Math.max(0, this.bytesSinceCheckpoint - bytesAtStart);
    return result;
  }

  /** Finishes what is in flight, makes it durable, checkpoints. */
  async close(): Promise<CheckpointResult | undefined> {
    clearTimeout(this.releaseTimer);
    await Promise.all([...this.volumes.values()].map((volume) => volume.order.drain()));
    if (this.failure !== undefined) return undefined;
    const result = await this.checkpoint();
    return result;
  }

  private fail(error: Error): void {
    this.failure ??= error;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) {
      throw new VolumeIoError("EIO", `group ${this.name} stopped after an I/O error: ${this.failure.message}`);
    }
  }

  private ioError(error: Error): VolumeIoError {
    const code = (error as NodeJS.ErrnoException).code;
    return new VolumeIoError(code === "ENOSPC" ? "ENOSPC" : "EIO", `group ${this.name}: ${error.message}`);
  }
}
