// The primary's side of one pair (patent Fig. 6): N replication streams to the secondary,
// the initial copy, then batches of durable journal records, pushed or pulled, windowed by
// the pure PairSender. Link loss: every stream reconnects with backoff and the handshake
// says where to resume; nothing is lost, skipped or applied twice (the receiver drops
// duplicates). Only what the secondary holds durably lets the journal trim.
// A stream that stops answering is closed (ReplConnection's deadlines) and its batches go
// to the others. A secondary out of journal space refuses batches (NACK NO_SPACE): the pair
// holds back, sends one batch again after a backoff or at once when the secondary reports
// room (ACK batchId 0), and says so in its status. Pull: each PULL is answered with a batch
// starting exactly at its fromSequence, or after replPullWaitMs with an empty one.
import type { Logger } from "pino";
import { assert, unreachable } from "../core/assert.ts";
import {
  replBatchBytesMax, replBatchesInFlightPerStreamMax, replCopyChunkBytesMax, replNoSpaceRetryMsMax, replNoSpaceRetryMsMin, replPullWaitMs,
  replReconnectDelayMsMax, replReconnectDelayMsMin,
} from "../core/limits.ts";
import type { ExtentMap } from "../core/extent-map.ts";
import { nonZeroRuns } from "../core/data-runs.ts";
import { PairSender, timeAdvanceDue, type BatchPlan } from "../core/sender.ts";
import { asSequence, asVolumeId } from "../core/types.ts";
import { encodedRecordBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { replProtocolVersionMax, replProtocolVersionMin, type ReplMessage } from "../protocol/repl-protocol.ts";
import type { GroupJournal } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import { DirectReader } from "../storage/direct-reader.ts";
import type { PairInfo } from "../mgmt/control.ts";
import type { GroupWriter } from "./group-writer.ts";
import type { Clock, Timer } from "../node/clock.ts";
import type { Transport } from "../transport/transport.ts";
import { faultInjected } from "../core/faults.ts";
import type { PairRecord } from "../metadata/metadata.ts";
import { ReplConnection } from "../transport/repl-connection.ts";
import { RecordTail } from "../storage/record-tail.ts";

/** Journal use at which new writes start being slowed down, and the longest delay. */
export const journalSlowdownFraction = 0.8;
const slowdownDelayMsMax = 20;
/** Copy chunks in flight on the copy stream. */
const copyChunksInFlightMax = replBatchesInFlightPerStreamMax * 2;
/** (sequence, accepted-at) samples kept to tell the lag in seconds. */
const lagSamplesMax = 4096;
const lagSampleIntervalMs = 10;
const groupHandle = 1;
/** Newest records kept in memory for the sender (beyond it, batches are read from the journal). */
export const senderTailBytesMax = 16 * 1024 * 1024;
/** Why streams are closed (and reopened) once the initial copy is done. */
const copyDoneReopen = "initial copy done; reopening";

export interface LinkVolume {
  readonly volumeId: number;
  readonly remoteVolume: string;
  readonly file: VolumeFile;
}

/** An initial copy in progress: bytes acknowledged of the bytes it will send, and the volumes' size. */
interface CopyProgress {
  doneBytes: number;
  /** Bytes of the written extents it sends (an estimate until `plans` is set). */
  totalBytes: number;
  readonly volumeBytes: number;
  running: boolean;
  /** Chunks being read (their runs are sent once read). */
  readsInFlight: number;
  /** Bytes sent as COPY_DATA: the runs that hold data (the rest of the written extents is zeroes, not sent). */
  dataBytes: number;
  /** Per volume, the extents to send: the written map once the volumes hold every record through S0. */
  plans: readonly ExtentMap[] | undefined;
}

interface Stream {
  readonly index: number;
  connection: ReplConnection | undefined;
  /** OPEN_GROUP answered and the pair is replicating on it. */
  ready: boolean;
  reconnectDelayMs: number;
  reconnectTimer: Timer | undefined;
  /** Pull mode: the secondary's PULLs, answered in order (at most replBatchesInFlightPerStreamMax). */
  pulls: { readonly fromSequence: number; readonly maxBytes: number; readonly sinceMs: number }[];
}

/** The secondary refuses batches: its journal is full, its disk is full (NO_SPACE), or an I/O error there (INTERNAL). */
interface NoSpace {
  /** Monotonic ms when it began. */
  readonly sinceMs: number;
  code: "NO_SPACE" | "INTERNAL";
  /** The secondary's words (its journal use and what holds it, or the path and errno). */
  text: string;
  /** ACKs of batches with an id at or above this one show it has room again. */
  readonly batchIdFloor: number;
  retryMs: number;
  /** Push: nothing is sent until this timer fires or the secondary reports room. */
  retryTimer: Timer | undefined;
  /** Push: the one batch sent to find out whether it has room now. */
  probeBatchId: number | undefined;
  /**
   * Push: the most a probe carries. Halved after each refused probe, down to one record: a
   * secondary journal with less room than a batch (small, or holding what it cannot reflect
   * yet) must still take something, or the pair waits for ever for a batch that never fits.
   */
  probeBytesMax: number;
}

export class PairLink {
  record: PairRecord;
  readonly groupName: string;
  private readonly nodeId: string;
  private readonly writer: GroupWriter;
  private readonly volumes: readonly LinkVolume[];
  private readonly logger: Logger;
  private readonly persist: (change: (record: PairRecord) => void) => Promise<void>;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private sender: PairSender;
  private readonly streams: Stream[];
  private running = false;
  /** The streams were closed because the group stopped; they reopen when it resumes. */
  private stoppedByWriter = false;
  /** Saving a lowered copy start (see start()). */
  private reconciling: Promise<void> | undefined;
  private pumping = false;
  private pumpAgain = false;
  /** After a failed send (a journal read error): the next try, on a backoff. */
  private pumpRetryTimer: Timer | undefined;
  private pumpRetryDelayMs = replReconnectDelayMsMin;
  private copy: CopyProgress | undefined;
  /** The figures of the last initial copy that finished (this process), for status. */
  private lastCopy: { doneBytes: number; totalBytes: number; volumeBytes: number; dataBytes: number } | undefined;
  private reflectedSequence = 0;
  private arrivedSequence = 0;
  private readonly lagSamples: { sequence: number; atMs: number }[] = [];
  reconnects = 0;
  lastError: string | null = null;
  private readonly tail = new RecordTail(senderTailBytesMax);
  private noSpace: NoSpace | undefined;
  /** Pull mode: wakes the pump when a held PULL is due for an empty answer. */
  private pullWaitTimer: Timer | undefined;

  constructor(options: {
    record: PairRecord;
    groupName: string;
    nodeId: string;
    writer: GroupWriter;
    volumes: readonly LinkVolume[];
    logger: Logger;
    persist: (change: (record: PairRecord) => void) => Promise<void>;
    clock: Clock;
    transport: Transport;
  }) {
    this.clock = options.clock;
    this.transport = options.transport;
    this.record = options.record;
    this.groupName = options.groupName;
    this.nodeId = options.nodeId;
    this.writer = options.writer;
    this.volumes = options.volumes;
    this.logger = options.logger;
    this.persist = options.persist;
    this.sender = new PairSender({ streams: this.record.streams, ackedSequence: asSequence(Math.max(this.record.ackedSequence, this.record.copyStartSequence)) });
    this.arrivedSequence = this.sender.ackedSequence;
    this.streams = Array.from({ length: this.record.streams }, (_, index) => ({
      index, connection: undefined, ready: false, reconnectDelayMs: replReconnectDelayMsMin, reconnectTimer: undefined, pulls: [],
    }));
    this.writer.trimFloor = () => (this.record.state === "failed" ? Number.MAX_SAFE_INTEGER : this.sender.trimFloor);
    this.writer.onRecord = (record) => this.onRecord(record);
    this.writer.slowdownMs = () => this.slowdownMs();
    this.writer.onStateChange = () => this.onWriterStateChange();
  }

  /**
   * The group stopped (I/O error, full disk) or resumed. Stopped: nothing is sent (records
   * not yet durable may never have reached the disk, and their sequences are given again
   * after the resume), so the streams close and the in-memory tail is dropped. Resumed: the
   * streams reconnect and the handshake says where to go on from.
   */
  private onWriterStateChange(): void {
    if (this.writer.stopped !== undefined) {
      if (!this.running) return;
      this.stop(`group stopped: ${this.writer.stopped.reason}`);
      this.stoppedByWriter = true;
    } else if (this.stoppedByWriter) {
      this.stoppedByWriter = false;
      this.start();
    }
  }

  /** The group's journal, through the writer: a group that resumed from a stop has a new one. */
  private get journal(): GroupJournal {
    return this.writer.journal;
  }

  get ackedSequence(): number {
    return this.sender.ackedSequence;
  }

  // ---- lifecycle ------------------------------------------------------------------

  start(): void {
    if (this.running || this.record.state === "suspended" || this.record.state === "failed") return;
    if (this.writer.stopped !== undefined) {
      this.stoppedByWriter = true;
      return;
    }
    // The copy covers everything through S0, and the stream starts after it. If the journal
    // holds less than S0 now (a power loss or a failed fdatasync lost records not yet durable,
    // and their sequences will be given again), waiting for S0 to be applied could wait for
    // ever, and the records given those sequences would be neither copied nor sent: the copy,
    // not done yet, starts over from what the journal holds. Found by the whole-node simulation.
    const last = this.writer.nextSequence - 1;
    if (!this.record.copyDone && this.record.copyStartSequence > last) {
      this.logger.warn({ event: "copy_start_lowered", group: this.groupName, from: this.record.copyStartSequence, to: last }, "the journal holds less than the initial copy's start point: the copy starts over from what it holds");
      this.reconciling ??= this.persist((r) => {
        r.copyStartSequence = last;
        r.ackedSequence = Math.min(r.ackedSequence, last);
      }).then(() => {
        this.reconciling = undefined;
        this.sender = new PairSender({ streams: this.record.streams, ackedSequence: asSequence(last) });
        this.arrivedSequence = last;
        this.start();
      }, (error: unknown) => {
        this.reconciling = undefined;
        this.logger.error({ event: "pair_state_not_saved", group: this.groupName, err: error }, "could not save the lowered copy start; retrying at the next start");
      });
      return;
    }
    this.running = true;
    for (const stream of this.streams) this.connectStream(stream);

  }

  stop(reason: string): void {
    this.running = false;
    this.clock.clear(this.pumpRetryTimer);
    this.pumpRetryTimer = undefined;
    this.clock.clear(this.pullWaitTimer);
    this.pullWaitTimer = undefined;
    this.clock.clear(this.noSpace?.retryTimer);
    this.noSpace = undefined;
    for (const stream of this.streams) {
      this.clock.clear(stream.reconnectTimer);
      stream.reconnectTimer = undefined;
      stream.connection?.close(reason);
      stream.connection = undefined;
      stream.ready = false;
      stream.pulls = [];
    }
    this.sender.onConnectionLost();
    this.tail.clear();
    this.writer.releaseHeld();
  }

  async suspend(): Promise<void> {
    this.stop("pair suspended");
    await this.persist((r) => {
      r.state = "suspended";
      r.reason = "suspended by the operator; writes are kept in the journal and sent on resume";
    });
  }

  async resume(): Promise<void> {
    await this.persist((r) => {
      r.state = r.copyDone ? "replicating" : "copying";
      r.reason = null;
    });
    this.start();
  }

  private async failPair(reason: string): Promise<void> {
    this.logger.error({ event: "pair_failed", group: this.groupName, reason }, "pair failed");
    this.lastError = reason;
    this.stop(reason);
    try {
      await this.persist((r) => {
        r.state = "failed";
        r.reason = reason;
      });
    } catch (error) {
      // Not saved (a full disk): the pair is failed in memory; the handshake refuses it again after a restart.
      this.logger.error({ event: "pair_state_not_saved", group: this.groupName, err: error }, "could not save the failed pair state");
    }
    this.writer.releaseHeld(); // a failed pair no longer holds the journal
  }

  // ---- streams --------------------------------------------------------------------

  private connectStream(stream: Stream): void {
    if (!this.running) return;
    const socket = this.transport.connect(this.record.remoteReplAddress);
    const logger = this.logger.child({ stream: stream.index });
    let opened = false;
    const connection = new ReplConnection(socket, "primary", logger, {
      onMessage: (message) => this.onMessage(stream, connection, message),
      onBadContent: (result) => connection.fail("PROTOCOL", `unexpected bad content: ${result.reason}`),
      onClose: (reason) => {
        if (stream.connection === connection) {
          stream.connection = undefined;
          const wasReady = stream.ready;
          stream.ready = false;
          stream.pulls = [];
          if (wasReady) {
            if (this.streams.some((s) => s.ready)) this.sender.onStreamLost(stream.index);
            else this.sender.onConnectionLost();
            // A probe lost with the stream is sent again with the other lost batches.
            if (this.noSpace !== undefined) this.noSpace.probeBatchId = undefined;
          }
          if (stream.index === 0 && this.copy?.running === true) this.copy.running = false;
          if (this.running) {
            if (!reason.startsWith(copyDoneReopen)) this.lastError = reason;
            if (opened && !reason.startsWith(copyDoneReopen)) this.reconnects += 1;
            logger.warn({ event: "repl_stream_lost", reason, retryInMs: stream.reconnectDelayMs }, "replication stream lost; reconnecting");
            stream.reconnectTimer = this.clock.setTimeout(() => {
              stream.reconnectTimer = undefined;
              this.connectStream(stream);
            }, stream.reconnectDelayMs);
            stream.reconnectDelayMs = Math.min(replReconnectDelayMsMax, stream.reconnectDelayMs * 2);
          }
          this.pump();
        }
      },
    }, { clock: this.clock });
    stream.connection = connection;
    socket.once("connect", () => {
      opened = true;
      connection.send({ type: "HELLO", versionMin: replProtocolVersionMin, versionMax: replProtocolVersionMax, primaryNodeId: this.nodeId, streamIndex: stream.index, streamCount: this.record.streams });
    });
  }

  private onMessage(stream: Stream, connection: ReplConnection, message: ReplMessage): void {
    switch (message.type) {
      case "HELLO_OK":
        connection.send({
          type: "OPEN_GROUP",
          groupHandle,
          pairId: this.record.pairId,
          primaryGroup: this.groupName,
          secondaryGroup: this.record.remoteGroup,
          transfer: this.record.transfer,
          reflect: this.record.reflect,
          startSequence: asSequence(this.record.copyStartSequence + 1),
          volumes: this.volumes.map((v) => ({ volumeId: asVolumeId(v.volumeId), name: v.remoteVolume, sizeBytes: v.file.sizeBytes })),
        });
        return;
      case "GROUP_STATE":
        stream.reconnectDelayMs = replReconnectDelayMsMin;
        this.noteProgress(message.arrivedSequence, message.reflectedSequence);
        if (message.state === "replicating" && !this.record.copyDone) {
          // The secondary finished the copy but this node crashed before recording it.
          const consistentFrom = Math.max(this.writer.nextSequence - 1, this.record.copyStartSequence);
          void this.persist((r) => {
            r.state = "replicating";
            r.copyDone = true;
            r.consistentFromSequence = consistentFrom;
            r.reason = null;
          }).then(() => this.streamReady(stream, connection, message.arrivedSequence), (error: unknown) => connection.fail("INTERNAL", `could not save the pair state: ${(error as Error).message}`));
        } else if (message.state === "replicating") {
          this.streamReady(stream, connection, message.arrivedSequence);
        } else if (stream.index === 0) {
          this.startCopy(connection);
        }
        return;
      case "ACK": {
        // batchId 0 answers no batch: the secondary reports progress, and room after NO_SPACE.
        if (message.batchId !== 0) connection.answered();
        const result = this.sender.onAck(stream.index, message.batchId, message.arrivedSequence, asSequence(this.journal.durableSequence));
        if (!result.ok) {
          connection.fail("PROTOCOL", result.reason);
          return;
        }
        this.noteProgress(message.arrivedSequence, message.reflectedSequence);
        this.tail.dropThrough(this.sender.ackedSequence);
        this.onRoomReported(message.batchId);
        this.writer.releaseHeld();
        this.trimIfFilling();
        this.pump();
        return;
      }
      case "PULL":
        if (this.record.transfer !== "pull") {
          connection.fail("PROTOCOL", "PULL on a pair that pushes");
          return;
        }
        if (stream.pulls.length >= replBatchesInFlightPerStreamMax) {
          connection.fail("PROTOCOL", `more than ${replBatchesInFlightPerStreamMax} PULLs unanswered on one stream`);
          return;
        }
        stream.pulls.push({ fromSequence: message.fromSequence, maxBytes: message.maxBytes, sinceMs: this.clock.monotonicMs() });
        this.pump();
        return;
      case "COPY_ACK":
        if (message.chunkId !== this.copyDoneChunk) connection.answered();
        this.onCopyAck(message.chunkId);
        return;
      case "NACK":
        this.onNack(stream, connection, message);
        return;
      case "ERROR":
        this.lastError = `${message.code}: ${message.text}`;
        if (message.code === "TAKEN_OVER" || message.code === "STALE_PAIR") void this.failPair(`secondary refused the pair: ${message.text}`);
        connection.close("peer error");
        return;
      case "CLOSE":
        connection.close("peer closed");
        return;
      default:
        connection.fail("PROTOCOL", `${message.type} is not expected by the primary`);
    }
  }

  private onNack(stream: Stream, connection: ReplConnection, message: Extract<ReplMessage, { type: "NACK" }>): void {
    // refId 0 refers to no batch (a report): not an answer.
    if ((message.refType === "BATCH" || message.refType === "COPY_DATA" || message.refType === "COPY_ZEROES") && message.refId !== 0) connection.answered();
    if ((message.code === "NO_SPACE" || message.code === "INTERNAL") && message.refType === "BATCH") {
      // The secondary cannot store records now (its journal full, a full disk, an I/O error
      // there): it took none of the batch. The records wait in this node's journal; the pair
      // holds back and sends again (one log line per spell, not per batch).
      this.onRefusedForSpace(stream, message.refId, message.code, message.text);
      return;
    }
    this.lastError = `${message.code}: ${message.text}`;
    switch (message.code) {
      case "REORDER_FULL":
      case "GROUP_BUSY":
        // Back off this stream; what it had in flight is resent.
        connection.close(`secondary is busy: ${message.text}`);
        return;
      case "BAD_RECORD":
        connection.close(`secondary refused data: ${message.text}`);
        return;
      default:
        void this.failPair(`secondary refused ${message.refType}: ${message.code} ${message.text}`);
    }
  }

  private streamReady(stream: Stream, connection: ReplConnection, arrivedAtHandshake: number): void {
    // The handshake compares the secondary's arrived sequence with what is durable here:
    // make everything written durable first (group commit).
    this.journal.sync().then(() => {
      if (connection.closed || stream.connection !== connection) return;
      if (this.sender.connected) {
        const result = this.sender.onStreamHandshake(stream.index, arrivedAtHandshake, asSequence(this.journal.durableSequence));
        if (!result.ok) {
          void this.failPair(result.reason);
          return;
        }
      } else {
        const result = this.sender.onReconnect(this.arrivedSequence, asSequence(this.journal.durableSequence));
        if (!result.ok) {
          void this.failPair(result.reason);
          return;
        }
        // The handshake may move the trim floor past what ACKs said (their ACKs were lost
        // with the link): held writes must hear of it, or they wait for an ACK that never comes.
        this.writer.releaseHeld();
      }
      stream.ready = true;
      this.pump();
    }, (error: unknown) => connection.fail("INTERNAL", `journal sync failed: ${(error as Error).message}`));
  }

  private noteProgress(arrived: number, reflected: number): void {
    this.arrivedSequence = Math.max(this.arrivedSequence, arrived);
    this.reflectedSequence = Math.max(this.reflectedSequence, reflected);
  }

  // ---- initial copy ---------------------------------------------------------------

  private copyChunkIds = new Map<number, number>();
  private nextChunkId = 1;
  private copyCursor: { volume: number; offsetBytes: number } = { volume: 0, offsetBytes: 0 };
  private copyConnection: ReplConnection | undefined;
  private copyDoneChunk = 0;
  /** Per volume, an O_DIRECT reader for the copy (so the copy leaves no pages in the cache). */
  private copyReaders: (DirectReader | undefined)[] = [];

  private startCopy(connection: ReplConnection): void {
    const volumeBytes = this.volumes.reduce((sum, v) => sum + v.file.sizeBytes, 0);
    const copy: CopyProgress = { doneBytes: 0, totalBytes: this.volumes.reduce((sum, v) => sum + v.file.written.markedBytes, 0), volumeBytes, running: true, readsInFlight: 0, dataBytes: 0, plans: undefined };
    this.copy = copy;
    this.copyChunkIds.clear();
    this.copyCursor = { volume: 0, offsetBytes: 0 };
    this.copyConnection = connection;
    this.copyDoneChunk = 0;
    void this.closeCopyReaders()
      .then(() => this.waitApplied())
      .then(async () => {
        // Only the extents ever written (docs/volumes.md): every record through S0 is applied,
        // so marked, now. The secondary's other bytes are zero (it empties its volumes first).
        copy.plans = this.volumes.map((v) => v.file.written.snapshot());
        copy.totalBytes = copy.plans.reduce((sum, plan) => sum + plan.markedBytes, 0);
        this.logger.info({ event: "copy_started", group: this.groupName, totalBytes: copy.totalBytes, volumeBytes, copyStartSequence: this.record.copyStartSequence }, "initial copy started");
        this.copyReaders = await Promise.all(this.volumes.map((v) => DirectReader.open(v.file.fileSystem, v.file.path, replCopyChunkBytesMax)));
      })
      .then(() => this.copyMore())
      .catch((error: unknown) => connection.fail("INTERNAL", (error as Error).message));
  }

  /** Every record up to S0 must be in the volumes before the copy reads them. */
  private async waitApplied(): Promise<void> {
    while (this.writer.appliedSequence < this.record.copyStartSequence) await this.clock.sleep(5);
  }

  private copyMore(): void {
    const copy = this.copy;
    const connection = this.copyConnection;
    if (copy?.plans === undefined || !copy.running || connection === undefined || connection.closed) return;
    while (this.copyChunkIds.size + copy.readsInFlight < copyChunksInFlightMax) {
      const volumeIndex = this.copyCursor.volume;
      const volume = this.volumes[volumeIndex];
      const plan = copy.plans[volumeIndex];
      if (volume === undefined || plan === undefined) break;
      const range = plan.nextMarkedRange(this.copyCursor.offsetBytes, replCopyChunkBytesMax);
      if (range === undefined) {
        this.copyCursor = { volume: volumeIndex + 1, offsetBytes: 0 };
        continue;
      }
      const { offsetBytes, lengthBytes } = range;
      copy.readsInFlight += 1;
      this.copyCursor = offsetBytes + lengthBytes >= volume.file.sizeBytes ? { volume: this.copyCursor.volume + 1, offsetBytes: 0 } : { volume: this.copyCursor.volume, offsetBytes: offsetBytes + lengthBytes };
      const reader = this.copyReaders[volumeIndex];
      const reading = reader === undefined ? volume.file.read(offsetBytes, lengthBytes) : reader.read(offsetBytes, lengthBytes);
      void reading.then((data) => {
        copy.readsInFlight -= 1;
        if (connection.closed || this.copy !== copy) return;
        this.sendCopyRuns(connection, copy, volume.volumeId, offsetBytes, data);
        this.copyMore();
      }, (error: unknown) => connection.fail("INTERNAL", `copy read failed: ${(error as Error).message}`));
    }
    if (this.copyChunkIds.size === 0 && copy.readsInFlight === 0 && this.copyCursor.volume >= this.volumes.length && this.copyDoneChunk === 0) {
      // Every block is copied: the secondary is consistent once it reflects what was accepted by now.
      const consistentFromSequence = Math.max(this.writer.nextSequence - 1, this.record.copyStartSequence);
      this.copyDoneChunk = this.nextChunkId++;
      this.pendingConsistentFrom = consistentFromSequence;
      connection.send({ type: "COPY_DONE", groupHandle, chunkId: this.copyDoneChunk, totalBytes: copy.totalBytes, consistentFromSequence: asSequence(consistentFromSequence) });
    }
  }

  private pendingConsistentFrom = 0;

  /**
   * Sends the runs of a chunk that hold data (4 KiB blocks, adjacent ones together) as
   * COPY_DATA, and nothing for its zeroes: the secondary is empty before the copy (docs/volumes.md),
   * so it allocates only what holds data and the wire carries only that. The chunk's bytes
   * count towards the progress once every run is acknowledged (at once when it holds none):
   * the first run carries the zero bytes, so the acknowledged bytes end at the total.
   */
  private sendCopyRuns(connection: ReplConnection, copy: CopyProgress, volumeId: number, offsetBytes: number, data: Buffer): void {
    const runs = nonZeroRuns(data);
    let zeroBytes = data.length;
    for (const run of runs) zeroBytes -= run.lengthBytes;
    if (runs.length === 0) {
      copy.doneBytes += data.length;
      return;
    }
    for (const [index, run] of runs.entries()) {
      const chunkId = this.nextChunkId++;
      this.copyChunkIds.set(chunkId, run.lengthBytes + (index === 0 ? zeroBytes : 0));
      copy.dataBytes += run.lengthBytes;
      connection.send({ type: "COPY_DATA", groupHandle, chunkId, volumeId: asVolumeId(volumeId), offsetBytes: offsetBytes + run.offsetBytes, data: data.subarray(run.offsetBytes, run.offsetBytes + run.lengthBytes) });
      connection.expectAnswer();
    }
  }

  private async closeCopyReaders(): Promise<void> {
    const readers = this.copyReaders;
    this.copyReaders = [];
    await Promise.all(readers.map((r) => (r === undefined ? Promise.resolve() : r.close())));
  }

  private onCopyAck(chunkId: number): void {
    const copy = this.copy;
    if (copy === undefined) return;
    if (chunkId === this.copyDoneChunk && this.copyDoneChunk !== 0) {
      copy.running = false;
      assert(copy.doneBytes === copy.totalBytes, () => `the copy acknowledged ${copy.doneBytes} of the ${copy.totalBytes} bytes it sent`);
      this.lastCopy = { doneBytes: copy.doneBytes, totalBytes: copy.totalBytes, volumeBytes: copy.volumeBytes, dataBytes: copy.dataBytes };
      const consistentFrom = this.pendingConsistentFrom;
      void this.persist((r) => {
        r.state = "replicating";
        r.copyDone = true;
        r.consistentFromSequence = consistentFrom;
        r.reason = null;
      }).then(() => {
        this.logger.info({ event: "copy_done", group: this.groupName, bytes: copy.totalBytes, dataBytes: copy.dataBytes, volumeBytes: copy.volumeBytes, consistentFromSequence: consistentFrom }, "initial copy done");
        this.copy = undefined;
        void this.closeCopyReaders();
        // Every stream reopens its group: the secondary now answers `replicating`.
        for (const stream of this.streams) stream.connection?.close(copyDoneReopen);
      }, (error: unknown) => {
        // The reopened stream finds the secondary replicating and saves this again.
        this.logger.error({ event: "pair_state_not_saved", group: this.groupName, err: error }, "could not save the end of the initial copy; retrying over a new stream");
        for (const stream of this.streams) stream.connection?.close("could not save the end of the initial copy");
      });
      return;
    }
    const lengthBytes = this.copyChunkIds.get(chunkId);
    if (lengthBytes === undefined) return;
    this.copyChunkIds.delete(chunkId);
    copy.doneBytes += lengthBytes;
    this.copyMore();
  }

  // ---- sending --------------------------------------------------------------------

  private onRecord(record: JournalRecord): void {
    // Kept in memory only while the sender keeps up; a backlog is read from the journal.
    if (this.sender.connected) this.tail.push(record);
    const now = this.clock.monotonicMs();
    const last = this.lagSamples[this.lagSamples.length - 1];
    if (last === undefined || now - last.atMs >= lagSampleIntervalMs) {
      this.lagSamples.push({ sequence: this.writer.nextSequence - 1, atMs: now });
      if (this.lagSamples.length > lagSamplesMax) this.lagSamples.splice(0, this.lagSamples.length - lagSamplesMax);
    } else {
      last.sequence = this.writer.nextSequence - 1;
    }
    this.pump();
  }

  /** Called by the node's time-advance ticker (one timer for all pairs, every half interval). */
  maybeTimeAdvance(): void {
    if (!this.running) return;
    if (this.record.state !== "replicating" || !this.sender.connected) return;
    const sinceLastRecordMs = faultInjected("wall-clock-time-advance") ? this.clock.wallMs() - this.writer.lastRecordAtWallMs : this.clock.monotonicMs() - this.writer.lastRecordAtMs;
    const due = timeAdvanceDue({ sinceLastRecordMs, othersAcceptedSince: this.writer.othersAcceptedSince });
    if (due) this.writer.appendTimeAdvance();
  }

  /** Sends whatever the sender's windows allow; only durable records leave the node. */
  pump(): void {
    if (!this.sender.connected) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    void this.pumpLoop()
      .then(() => {
        this.pumpRetryDelayMs = replReconnectDelayMsMin;
      }, (error: unknown) => {
        this.lastError = (error as Error).message;
        // A read of the journal failed (an I/O error): nothing else may call pump again (a
        // group whose journal is full waits for exactly this pair), so try again on a
        // backoff. Before, one failed read left the pair idle for good (simulation seed 6300).
        const retryInMs = this.pumpRetryDelayMs;
        this.pumpRetryDelayMs = Math.min(replReconnectDelayMsMax, this.pumpRetryDelayMs * 2);
        this.logger.error({ event: "pump_failed", group: this.groupName, err: error, retryInMs }, "sending failed; trying again");
        if (this.running && this.pumpRetryTimer === undefined) {
          this.pumpRetryTimer = this.clock.setTimeout(() => {
            this.pumpRetryTimer = undefined;
            this.pump();
          }, retryInMs);
        }
      })
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.pump();
        }
      });
  }

  private async pumpLoop(): Promise<void> {
    if (!this.sender.connected) return;
    if (this.journal.writtenSequence > this.journal.durableSequence || this.journal.lastSequence > this.journal.durableSequence) {
      await this.journal.sync();
    }
    for (;;) {
      let sent = false;
      for (const stream of this.streams) {
        if (!stream.ready || stream.connection === undefined) continue;
        const didSend = this.record.transfer === "pull" ? await this.answerPull(stream) : await this.pushBatch(stream);
        sent ||= didSend;
      }
      if (!sent) break;
      if (this.journal.lastSequence > this.journal.durableSequence) await this.journal.sync();
    }
    if (this.record.transfer === "pull") this.armPullWait();
  }

  /** Push: the next batch the windows allow on this stream (one probe while the secondary is out of space). */
  private async pushBatch(stream: Stream): Promise<boolean> {
    const noSpace = this.noSpace;
    if (noSpace !== undefined && (noSpace.retryTimer !== undefined || noSpace.probeBatchId !== undefined)) return false;
    const plan = this.sender.planBatch(stream.index, asSequence(this.journal.durableSequence), noSpace?.probeBytesMax);
    if (plan === undefined) return false;
    const sent = await this.sendPlanned(stream, plan);
    if (sent && noSpace !== undefined && this.noSpace === noSpace) noSpace.probeBatchId = plan.batchId;
    return sent;
  }

  /**
   * Pull: the oldest PULL of this stream gets a batch starting exactly at its fromSequence;
   * one with nothing durable there yet waits up to replPullWaitMs, then an empty batch.
   */
  private async answerPull(stream: Stream): Promise<boolean> {
    const connection = stream.connection;
    const pull = stream.pulls[0];
    if (pull === undefined || connection === undefined) return false;
    const decision = this.sender.planPull(stream.index, pull.fromSequence, asSequence(this.journal.durableSequence), this.journal.firstSequence, this.writer.nextSequence - 1, pull.maxBytes);
    switch (decision.kind) {
      case "plan": {
        const sent = await this.sendPlanned(stream, decision.plan);
        if (sent && stream.pulls[0] === pull) stream.pulls.shift();
        return sent;
      }
      case "wait":
        if (this.clock.monotonicMs() - pull.sinceMs < replPullWaitMs) return false;
        stream.pulls.shift();
        connection.send({ type: "BATCH", groupHandle, batchId: this.sender.freshBatchId(), records: [] });
        connection.expectAnswer();
        return true;
      case "empty":
        stream.pulls.shift();
        connection.send({ type: "BATCH", groupHandle, batchId: this.sender.freshBatchId(), records: [] });
        connection.expectAnswer();
        return true;
      case "refuse":
        stream.pulls.shift();
        this.logger.warn({ event: "pull_refused", fromSequence: pull.fromSequence, reason: decision.reason }, "PULL refused: out of range");
        connection.send({ type: "NACK", groupHandle, code: "OUT_OF_RANGE", refType: "PULL", refId: pull.fromSequence, arrivedSequence: asSequence(0), text: decision.reason.slice(0, 512) });
        return true;
      default:
        return unreachable(decision, "pull decision");
    }
  }

  /** Reads a planned batch and sends it on the stream; false if the plan fell through meanwhile. */
  private async sendPlanned(stream: Stream, plan: BatchPlan): Promise<boolean> {
    const records = await this.readPlan(plan);
    if (records === undefined) return false;
    const last = records[records.length - 1];
    assert(last !== undefined, "a planned batch has a record");
    const bytes = records.reduce((sum, r) => sum + encodedRecordBytes(r), 0);
    // The stream may have closed while the records were read: commit only what goes out now,
    // or the sender counts a batch in flight on a stream that never carried it, whose answer
    // never comes (it held the window and the acknowledgements for ever; found by the
    // whole-node simulation).
    const connection = stream.connection;
    if (connection === undefined || connection.closed || !stream.ready) {
      this.sender.abandonPlan(plan);
      return false;
    }
    if (!this.sender.commitBatch(plan, last.sequence, bytes)) return false;
    connection.send({ type: "BATCH", groupHandle, batchId: plan.batchId, records });
    connection.expectAnswer();
    return true;
  }

  /** Pull: wake the pump when the oldest held PULL is due for its empty answer. */
  private armPullWait(): void {
    let dueMs = Number.POSITIVE_INFINITY;
    for (const stream of this.streams) {
      const pull = stream.pulls[0];
      if (pull !== undefined) dueMs = Math.min(dueMs, pull.sinceMs + replPullWaitMs);
    }
    if (dueMs === Number.POSITIVE_INFINITY || this.pullWaitTimer !== undefined || !this.running) return;
    this.pullWaitTimer = this.clock.setTimeout(() => {
      this.pullWaitTimer = undefined;
      this.pump();
    }, Math.max(1, Math.ceil(dueMs - this.clock.monotonicMs())));
  }

  /**
   * A journal past the slowdown mark whose acknowledged records could be trimmed is
   * checkpointed now: host writes are not slowed (or held) for records the secondary holds.
   */
  private trimIfFilling(): void {
    if (this.journal.usedBytes < this.journal.bytesMax * journalSlowdownFraction) return;
    if (this.journal.bytesTrimmableThrough(Math.min(this.writer.appliedSequence, this.sender.trimFloor)) === 0) return;
    this.writer.checkpoint().catch((error: unknown) => {
      this.logger.error({ event: "checkpoint_failed", err: error }, "checkpoint after the secondary caught up failed");
    });
  }

  // ---- a secondary out of space ---------------------------------------------------

  /**
   * NACK NO_SPACE or INTERNAL for a batch: the secondary took none of it. The batch is sent
   * again (first); meanwhile the pair holds back: one batch after a backoff, or at once when
   * the secondary reports room (ACK batchId 0). refId 0 refers to no batch (pull: a report).
   */
  private onRefusedForSpace(stream: Stream, batchId: number, code: "NO_SPACE" | "INTERNAL", text: string): void {
    this.sender.onBatchRefused(stream.index, batchId);
    let noSpace = this.noSpace;
    if (noSpace === undefined) {
      noSpace = { sinceMs: this.clock.monotonicMs(), code, text, batchIdFloor: this.sender.nextBatchIdFloor, retryMs: replNoSpaceRetryMsMin, retryTimer: undefined, probeBatchId: undefined, probeBytesMax: replBatchBytesMax / 2 };
      this.noSpace = noSpace;
      this.logger.warn({ event: "secondary_refuses_records", group: this.groupName, code, reason: text }, "the secondary cannot store records now; they wait in this node's journal");
    } else {
      noSpace.code = code;
      noSpace.text = text;
      if (batchId === noSpace.probeBatchId) {
        noSpace.retryMs = Math.min(replNoSpaceRetryMsMax, noSpace.retryMs * 2);
        noSpace.probeBytesMax = Math.max(1, Math.floor(noSpace.probeBytesMax / 2));
      }
    }
    this.lastError = `secondary cannot store records: ${code} ${text}`;
    if (batchId === noSpace.probeBatchId) noSpace.probeBatchId = undefined;
    if (this.record.transfer === "pull") return; // the secondary asks again itself
    if (noSpace.retryTimer === undefined && noSpace.probeBatchId === undefined) {
      const waiting = noSpace;
      noSpace.retryTimer = this.clock.setTimeout(() => {
        waiting.retryTimer = undefined;
        this.pump();
      }, noSpace.retryMs);
    }
  }

  /** An ACK: one for a batch sent after the refusals began means the secondary has room again; batchId 0 says so outright. */
  private onRoomReported(batchId: number): void {
    const noSpace = this.noSpace;
    if (noSpace === undefined) return;
    if (batchId === 0 && this.record.transfer === "pull") {
      // The secondary paces a pull itself: room again is all there is to know.
      this.noSpace = undefined;
      this.logger.info({ event: "secondary_storing_again", group: this.groupName, waitedMs: Math.round(this.clock.monotonicMs() - noSpace.sinceMs) }, "the secondary stores records again");
      return;
    }
    if (batchId === 0) {
      // Send one batch now to find out (its ACK ends the episode, a NO_SPACE backs off again).
      this.clock.clear(noSpace.retryTimer);
      noSpace.retryTimer = undefined;
      noSpace.retryMs = replNoSpaceRetryMsMin;
      return;
    }
    if (batchId < noSpace.batchIdFloor) return;
    this.clock.clear(noSpace.retryTimer);
    this.noSpace = undefined;
    this.logger.info({ event: "secondary_storing_again", group: this.groupName, waitedMs: Math.round(this.clock.monotonicMs() - noSpace.sinceMs) }, "the secondary stores records again");
  }

  private async readPlan(plan: BatchPlan): Promise<JournalRecord[] | undefined> {
    let records: JournalRecord[];
    try {
      records = this.tail.read(plan.fromSequence, plan.bytesMax, Math.min(plan.lastSequenceMax, this.journal.durableSequence))
        ?? (await this.journal.readFrom(plan.fromSequence, plan.bytesMax));
    } catch (error) {
      this.sender.abandonPlan(plan);
      throw error;
    }
    const cut: JournalRecord[] = [];
    let bytes = 0;
    for (const record of records) {
      if (record.sequence > plan.lastSequenceMax || cut.length >= plan.recordsMax) break;
      const recordBytes = encodedRecordBytes(record);
      if (cut.length > 0 && bytes + recordBytes > plan.bytesMax) break;
      cut.push(record);
      bytes += recordBytes;
    }
    if (cut.length === 0 || cut[0]?.sequence !== plan.fromSequence) {
      this.sender.abandonPlan(plan);
      return undefined;
    }
    return cut;
  }

  // ---- backpressure and status ----------------------------------------------------

  private slowdownMs(): number {
    if (this.record.state === "failed") return 0;
    const fraction = this.journal.usedBytes / this.journal.bytesMax;
    if (fraction < journalSlowdownFraction) return 0;
    return Math.ceil(slowdownDelayMsMax * Math.min(1, (fraction - journalSlowdownFraction) / (1 - journalSlowdownFraction)));
  }

  private reason(): string | null {
    if (this.record.reason !== null) return this.record.reason;
    const stopped = this.writer.stopped;
    if (stopped !== undefined) return stopped.reason;
    const fraction = this.journal.usedBytes / this.journal.bytesMax;
    let noSpace: string | undefined;
    if (this.noSpace?.code === "NO_SPACE") {
      noSpace = `the secondary cannot store records now: ${this.record.remoteNode} is out of ${/journal full/.test(this.noSpace.text) ? "journal " : ""}space for ${this.record.remoteGroup} (${this.noSpace.text}); they wait here and are sent once it has room`;
    } else if (this.noSpace !== undefined) {
      noSpace = `the secondary cannot store records now (${this.noSpace.text}); they wait here and are sent when it can`;
    }
    if (this.writer.heldWrites > 0 && this.writer.holdReason === "slowdown") {
      return `journal ${formatPercent(fraction)} full: ${this.writer.heldWrites} host writes slowed (at most ${slowdownDelayMsMax} ms each) while the secondary catches up${noSpace === undefined ? "" : `; ${noSpace}`}`;
    }
    if (this.writer.heldWrites > 0 && this.writer.holdReason === "apply-behind") {
      return `${this.writer.heldWrites} host writes held until the volumes catch up with the journal (held, never failed)`;
    }
    if (this.writer.heldWrites > 0) {
      return `journal full (${formatPercent(fraction)}): ${this.writer.heldWrites} host writes held until the secondary acknowledges more (held, never failed)${noSpace === undefined ? "" : `; ${noSpace}`}`;
    }
    if (noSpace !== undefined) return noSpace;
    if (fraction >= journalSlowdownFraction) return `journal ${formatPercent(fraction)} full: host writes slowed while the secondary catches up`;
    if (this.running && !this.streams.some((s) => s.connection !== undefined && (s.ready || this.copy?.running === true))) {
      return `secondary unreachable at ${this.record.remoteReplAddress}${this.lastError === null ? "" : ` (${this.lastError})`}; retrying`;
    }
    return null;
  }

  status(): PairInfo {
    const accepted = this.writer.nextSequence - 1;
    const reflected = Math.max(this.reflectedSequence, this.record.copyStartSequence);
    const lagRecords = Math.max(0, accepted - reflected);
    let lagSeconds = 0;
    if (lagRecords > 0) {
      const firstUnreflected = this.lagSamples.find((s) => s.sequence > reflected);
      if (firstUnreflected !== undefined) lagSeconds = (this.clock.monotonicMs() - firstUnreflected.atMs) / 1000;
    }
    let lagBytes = 0;
    if (lagRecords > 0) lagBytes = Math.round(this.journal.usedBytes * Math.min(1, lagRecords / Math.max(1, this.journal.lastSequence - this.journal.firstSequence + 1)));
    return {
      group: this.groupName,
      role: "primary",
      state: this.writer.stopped !== undefined ? "stopped" : this.record.state,
      pairId: this.record.pairId,
      remoteNode: this.record.remoteNode,
      remoteUrl: this.record.remoteUrl,
      remoteGroup: this.record.remoteGroup,
      mode: "async",
      transfer: this.record.transfer,
      streams: this.record.streams,
      reflect: this.record.reflect,
      acceptedSequence: accepted,
      writeSequence: Math.max(this.writer.lastWriteSequence, this.record.copyStartSequence),
      sentSequence: Math.max(this.sender.sentSequence, this.record.copyStartSequence),
      arrivedSequence: Math.max(this.arrivedSequence, this.sender.ackedSequence),
      reflectedSequence: reflected,
      lagRecords,
      lagBytes,
      lagSeconds: Math.round(lagSeconds * 1000) / 1000,
      journalBytes: this.journal.usedBytes,
      journalBytesMax: this.journal.bytesMax,
      copy: this.copy === undefined ? null : { doneBytes: this.copy.doneBytes, totalBytes: this.copy.totalBytes, volumeBytes: this.copy.volumeBytes, dataBytes: this.copy.dataBytes },
      lastCopy: this.lastCopy ?? null,
      heldWrites: this.writer.heldWrites,
      reason: this.reason(),
      link: { connectedStreams: this.streams.filter((s) => s.connection !== undefined && !s.connection.closed).length, reconnects: this.reconnects, lastError: this.lastError },
    };
  }
}


function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(0)}%`;
}
