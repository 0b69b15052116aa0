// The primary's side of one pair (patent Fig. 6): the shell around the pure machine in
// core/primary-pair.ts. The machine decides the pair's life (start, suspend, resume, the
// initial copy's end, failure, the group's stops, reconnecting, holding back while the
// secondary is out of space); this shell executes its effects in order and feeds what
// happened back as events. It keeps the I/O and the data path: N replication streams, the
// initial copy's reads, batches of durable journal records pushed or pulled, windowed by the
// pure PairSender. Link loss: every stream reconnects with backoff and the handshake says
// where to resume; nothing is lost, skipped or applied twice (the receiver drops
// duplicates). Only what the secondary holds durably lets the journal trim (the pair's
// retention hold on the group's ingest). A stream that stops answering is closed
// (ReplConnection's deadlines) and its batches go to the others. A secondary out of journal
// space refuses batches (NACK NO_SPACE): the pair holds back, sends one batch again after a
// backoff or at once when the secondary reports room (ACK batchId 0), and says so in its
// status. Pull: each PULL is answered with a batch starting exactly at its fromSequence, or
// after replPullWaitMs with an empty one.
import { writeLogEffect } from "../node/logger.ts";
import type { Logger } from "pino";
import { assert, unreachable } from "../core/assert.ts";
import {
  pairCommandsInFlightMax, replBatchesInFlightPerStreamMax, replCopyChunkBytesMax, replPullWaitMs, replReconnectDelayMsMax, replReconnectDelayMsMin,
} from "../core/limits.ts";
import type { ExtentMap } from "../core/extent-map.ts";
import { nonZeroRuns } from "../core/data-runs.ts";
import { PairSender, timeAdvanceDue, type BatchPlan } from "../core/sender.ts";
import {
  connectedStreams, fencedReason, holdsJournal, initialPrimaryPair, pairRunning, pushAllowance, stepPrimaryPair, timeAdvanceAllowed,
  type PairTimer, type PrimaryPairChange, type PrimaryPairEffect, type PrimaryPairEvent, type PrimaryPairRecord, type PrimaryPairState, type ReopenWhy,
} from "../core/primary-pair.ts";
import { asSequence, asVolumeId } from "../core/types.ts";
import { RecordKind, encodedRecordBytes, recordPayloadBytes, withoutWallTime, type JournalRecord } from "../protocol/journal-record.ts";
import { replProtocolVersionMax, replProtocolVersionMin, replReopenCloseText, replVersionWallTime, replResizeVersion, type ReplMessage } from "../protocol/repl-protocol.ts";
import { HostWriteLedger, disconnectedReason, type LinkDown, isoOfWallUs, pairHealthy, primaryConsistentAsOfUs, primaryLagSeconds, primaryReflectedSequence, primaryShownState } from "../core/pair-view.ts";
import type { GroupJournal } from "../storage/journal.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import { DirectReader } from "../storage/direct-reader.ts";
import { errorCode } from "../storage/fs.ts";
import { ControlError } from "../core/errors.ts";
import type { PairInfo } from "../mgmt/control.ts";
import type { Detach, GroupWriter } from "./group-writer.ts";
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
const groupHandle = 1;
/** Newest records kept in memory for the sender (beyond it, batches are read from the journal). */
export const senderTailBytesMax = 16 * 1024 * 1024;
/** Why streams are closed (and reopened) once the initial copy is done. */
const copyDoneReopen = replReopenCloseText;
const reopenText: Readonly<Record<ReopenWhy, string>> = {
  "copy-done": copyDoneReopen,
  "copy-done-not-saved": "could not save the end of the initial copy",
};

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
  /** Tells this stream's connections apart: the machine's effects name the one they are for. */
  connectionId: number;
  /** OPEN_GROUP answered and the pair is replicating on it. */
  ready: boolean;
  /** The replication protocol version agreed in HELLO_OK (1: records go without their wall time). */
  version: number;
  /** Pull mode: the secondary's PULLs, answered in order (at most replBatchesInFlightPerStreamMax). */
  pulls: { readonly fromSequence: number; readonly maxBytes: number; readonly sinceMs: number }[];
}

/** A pair's settings, fixed when it is created (its lifecycle fields are the machine's record). */
type PairSettings = Omit<PairRecord, keyof PrimaryPairRecord | "ackedSequence" | "reflectedSequence">;

export class PairLink {
  private readonly config: PairSettings;
  readonly groupName: string;
  private readonly nodeId: string;
  private readonly writer: GroupWriter;
  private readonly volumes: readonly LinkVolume[];
  private readonly logger: Logger;
  /** Saves a change of the pair's record in node.json (resolves once it is on disk). */
  private readonly persist: (change: PrimaryPairChange) => Promise<void>;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private machine: PrimaryPairState;
  /** Events raised while effects run wait here: one step at a time, in order. */
  private readonly inbox: PrimaryPairEvent[] = [];
  private stepping = false;
  private readonly timers = new Map<string, Timer>();
  /** Operator commands waiting for the machine's answer. */
  private readonly commands = new Map<number, { readonly resolve: () => void; readonly reject: (error: Error) => void }>();
  private nextCommandId = 1;
  /** Set while attached to the group's ingest (records, stops, the retention hold, slowdown). */
  private detachIngest: Detach | undefined;
  private sender: PairSender;
  private readonly streams: Stream[];
  private connectionIds = 0;
  private pumping = false;
  private pumpAgain = false;
  /** After a failed send (a journal read error): the next try, on a backoff. */
  private pumpRetryTimer: Timer | undefined;
  private pumpRetryDelayMs = replReconnectDelayMsMin;
  private copy: CopyProgress | undefined;
  /** The figures of the last initial copy that finished (this process), for status. */
  private lastCopy: { doneBytes: number; totalBytes: number; volumeBytes: number; dataBytes: number } | undefined;
  /** The highest sequence the secondary reported reflected to this process. */
  private reflectedSequence = 0;
  /** What node.json says the node last knew reflected before this start (0 in node.json from before it was kept). */
  private readonly savedReflectedSequence: number;
  private arrivedSequence = 0;
  /** Host writes accepted and not known to be reflected on the secondary: exact lag (core/pair-view.ts). */
  private readonly hostWrites: HostWriteLedger;
  /** Wall time of the last message from the secondary (status: lastContact), or null. */
  private lastContactIso: string | null = null;
  reconnects = 0;
  /**
   * `pair delete` runs: the secondary ends its side first and closes the streams. Those closes
   * are not a loss of the link (no pair_disconnected, no last error); the pair's end is logged
   * instead (pair_deleted). Set by beginEnd(), cleared by endRefused().
   */
  private ending = false;
  /** Streams whose reconnect came due while `ending`: connected by endRefused(). */
  private readonly connectsAfterEnd = new Set<number>();
  /** Journal records (encoded) and copy data sent for this pair since the node started (metrics). */
  private sentBytes = 0;
  lastError: string | null = null;
  private readonly tail = new RecordTail(senderTailBytesMax);
  /** Pull mode: wakes the pump when a held PULL is due for an empty answer. */
  private pullWaitTimer: Timer | undefined;

  constructor(options: {
    record: PairRecord;
    groupName: string;
    nodeId: string;
    writer: GroupWriter;
    volumes: readonly LinkVolume[];
    logger: Logger;
    persist: (change: PrimaryPairChange) => Promise<void>;
    clock: Clock;
    transport: Transport;
    /** The host writes the group's journal held at start (recovery), for the lag figures. */
    hostWrites?: HostWriteLedger | undefined;
    /** `pair set`: the replaced link was down (and logged so); the link back is logged once it is. */
    linkDown?: LinkDown | undefined;
  }) {
    this.clock = options.clock;
    this.transport = options.transport;
    const { state: _state, copyStartSequence: _start, consistentFromSequence: _from, copyDone: _done, reason: _reason, ackedSequence: _acked, reflectedSequence: _reflected, fence: _fence, ...settings } = structuredClone(options.record);
    this.config = settings;
    this.groupName = options.groupName;
    this.nodeId = options.nodeId;
    this.writer = options.writer;
    this.volumes = options.volumes;
    this.logger = options.logger;
    this.persist = options.persist;
    const record = options.record;
    this.machine = initialPrimaryPair({
      group: options.groupName, transfer: record.transfer, streams: record.streams, groupStopped: options.writer.stopped !== undefined, linkDown: options.linkDown,
      record: { state: record.state, copyStartSequence: record.copyStartSequence, consistentFromSequence: record.consistentFromSequence, copyDone: record.copyDone, reason: record.reason, fence: record.fence ?? null },
    });
    // A group node.json says is fenced refuses writes from the start, before any host can write.
    const fenced = fencedReason(this.machine);
    if (fenced !== undefined) this.writer.fence(fenced);
    this.sender = new PairSender({ streams: record.streams, ackedSequence: asSequence(Math.max(record.ackedSequence, record.copyStartSequence)) });
    this.arrivedSequence = this.sender.ackedSequence;
    this.streams = Array.from({ length: record.streams }, (_, index) => ({ index, connection: undefined, connectionId: 0, ready: false, version: replProtocolVersionMin, pulls: [] }));
    this.hostWrites = options.hostWrites ?? new HostWriteLedger();
    // After a restart: what the node last knew reflected, not 0 (the ledger was rebuilt from the
    // whole journal; the secondary's next report moves it on).
    this.savedReflectedSequence = record.reflectedSequence ?? 0;
    this.hostWrites.dropThrough(this.reflectedNow());
    // A failed pair holds nothing: it hears no records and keeps no journal.
    if (holdsJournal(this.machine)) {
      this.detachIngest = this.writer.attach({
        recordAppended: (journalRecord) => this.onRecord(journalRecord),
        groupStateChanged: (stopped) => {
          // Host writes whose append failed (ENOSPC, EIO) are not in the journal and their hosts
          // got the error: no lag. The stop is called before the journal is abandoned, in the same
          // turn, so what it wrote is final. A resumed journal holds what the disk gave back.
          this.hostWrites.dropAfter(stopped !== undefined ? this.journal.writtenSequence : this.lastSequence());
          if (stopped !== undefined) this.step({ type: "groupStopped", reason: stopped.reason });
          else this.step({ type: "groupResumed", lastSequence: this.lastSequence() });
        },
        keepFromSequence: () => this.sender.trimFloor + 1,
        slowdownMs: () => this.slowdownMs(),
      });
    }
  }

  /** The group's journal, through the writer: a group that resumed from a stop has a new one. */
  private get journal(): GroupJournal {
    return this.writer.journal;
  }

  get ackedSequence(): number {
    return this.sender.ackedSequence;
  }

  /** The reflected sequence as this node knows it (saved in node.json as the next start's hint). */
  reflectedNow(): number {
    const record = this.machine.record;
    return primaryReflectedSequence({ reported: this.reflectedSequence, savedHint: this.savedReflectedSequence, copyStartSequence: record.copyStartSequence, fence: record.state === "fenced" ? record.fence : null });
  }

  private lastSequence(): number {
    return this.writer.nextSequence - 1;
  }

  // ---- lifecycle: events in, effects out ------------------------------------------

  start(): void {
    this.step({ type: "start", lastSequence: this.lastSequence() });
  }

  /** The node stops: streams close, nothing starts again, and the copy's volume handles close. */
  stop(reason: string): void {
    this.step({ type: "stop", reason });
    this.dropCopyReaders();
  }

  /**
   * The pair is deleted (`pair delete`): streams close, nothing starts again, and the group's
   * journal is no longer held for it (its records are trimmed by the group's checkpoints alone).
   */
  end(reason: string): void {
    this.stop(reason);
    // The copy (if one ran) is over for good: no read of it may be answered any more.
    this.copy = undefined;
    for (const key of [...this.timers.keys()]) this.clock.clear(this.timers.get(key));
    this.timers.clear();
    this.clock.clear(this.pumpRetryTimer);
    this.clock.clear(this.pullWaitTimer);
    const detach = this.detachIngest;
    this.detachIngest = undefined;
    detach?.();
  }

  /** `pair delete` began: streams the secondary closes now are closed on purpose (see `ending`). */
  beginEnd(): void {
    this.ending = true;
  }

  /** `pair delete` was refused before this side ended: a stream lost from now on is a loss of the link again. */
  endRefused(): void {
    this.ending = false;
    const due = [...this.connectsAfterEnd];
    this.connectsAfterEnd.clear();
    if (!pairRunning(this.machine)) return;
    for (const index of due) {
      const stream = this.streams[index];
      if (stream !== undefined && stream.connection === undefined) this.connectStream(stream);
    }
  }

  /** The link is down (logged so) while the pair should run, or undefined: carried into the link that replaces this one (`pair set`). */
  get linkDown(): LinkDown | undefined {
    return this.machine.linkDown;
  }

  /** Resolves once `suspended` is saved; a ControlError if the pair cannot be suspended (failed) or the save failed. */
  async suspend(): Promise<void> {
    const was = this.machine.record.state;
    await this.command((commandId) => ({ type: "suspend", commandId }));
    // One line per state change (a suspend of a suspended pair changes nothing and says nothing).
    if (was !== "suspended") this.logger.info({ event: "pair_suspended", was }, "pair suspended: host writes go on and wait in the journal until pair resume");
  }

  /** Resolves once the pair is saved as running again and its streams open; a ControlError if it is not suspended or the save failed. */
  async resume(): Promise<void> {
    const was = this.machine.record.state;
    await this.command((commandId) => ({ type: "resume", commandId }));
    if (was === "suspended") this.logger.info({ event: "pair_resumed", state: this.machine.record.state }, "pair resumed: what waited in the journal is sent");
  }

  /** Resolves once the unfence is saved and the group writable; a ControlError if it is not fenced, its peer took over and `force` is false, or the save failed. */
  unfence(force: boolean): Promise<void> {
    return this.command((commandId) => ({ type: "unfence", commandId, force }));
  }

  private command(event: (commandId: number) => PrimaryPairEvent): Promise<void> {
    if (this.commands.size >= pairCommandsInFlightMax) {
      return Promise.reject(new ControlError("TM_ERR_LIMIT", `the pair of ${this.groupName} has ${pairCommandsInFlightMax} commands waiting for their save; try again`));
    }
    const commandId = this.nextCommandId++;
    const answered = new Promise<void>((resolve, reject) => {
      this.commands.set(commandId, { resolve, reject });
    });
    this.step(event(commandId));
    return answered;
  }

  private failPair(reason: string): void {
    this.lastError = reason;
    this.step({ type: "fail", reason });
  }

  /** Steps the machine; events raised by the effects are stepped after them, in order. */
  private step(event: PrimaryPairEvent): void {
    this.inbox.push(event);
    if (this.stepping) return;
    this.stepping = true;
    try {
      for (let next = this.inbox.shift(); next !== undefined; next = this.inbox.shift()) {
        const { state, effects } = stepPrimaryPair(this.machine, next);
        this.machine = state;
        for (const effect of effects) this.execute(effect);
      }
    } finally {
      this.stepping = false;
    }
  }

  private execute(effect: PrimaryPairEffect): void {
    switch (effect.type) {
      case "persist": {
        const { saveId, change } = effect;
        this.persist(change).then(
          () => this.step({ type: "persisted", saveId, lastSequence: this.lastSequence() }),
          (error: unknown) => this.step({ type: "persistFailed", saveId, lastSequence: this.lastSequence(), error: { code: errorCode(error), message: error instanceof Error ? error.message : String(error) } }),
        );
        return;
      }
      case "openStreams":
        for (const stream of this.streams) this.connectStream(stream);
        return;
      case "connectStream": {
        const stream = this.streams[effect.stream];
        assert(stream !== undefined && stream.connection === undefined, "a stream reconnects once its connection is gone");
        // pair delete runs: the secondary is ending its side and would refuse (or, once ended,
        // not know) the group; the reconnect waits until the delete is refused (endRefused).
        if (this.ending) this.connectsAfterEnd.add(stream.index);
        else this.connectStream(stream);
        return;
      }
      case "closeStreams":
        this.closeStreams(effect.reason);
        return;
      case "reopenStreams":
        for (const stream of this.streams) stream.connection?.close(reopenText[effect.why]);
        return;
      case "armTimer": {
        const key = timerKey(effect.timer);
        assert(!this.timers.has(key), () => `timer ${key} is armed once`);
        const timer = effect.timer;
        this.timers.set(key, this.clock.setTimeout(() => {
          this.timers.delete(key);
          this.step({ type: "timerFired", timer });
        }, effect.delayMs));
        return;
      }
      case "cancelTimer": {
        const key = timerKey(effect.timer);
        this.clock.clear(this.timers.get(key));
        this.timers.delete(key);
        return;
      }
      case "resetSender":
        this.sender = new PairSender({ streams: this.config.streams, ackedSequence: asSequence(effect.ackedSequence) });
        this.arrivedSequence = effect.ackedSequence;
        return;
      case "startCopy": {
        const connection = this.currentConnection(0, effect.connectionId);
        if (connection !== undefined) this.startCopy(connection);
        return;
      }
      case "copyFinished":
        this.copy = undefined;
        this.dropCopyReaders();
        return;
      case "streamReady": {
        const stream = this.streams[effect.stream];
        const connection = this.currentConnection(effect.stream, effect.connectionId);
        if (stream !== undefined && connection !== undefined) this.streamReady(stream, connection, effect.arrivedSequence);
        return;
      }
      case "failConnection":
        this.currentConnection(effect.stream, effect.connectionId)?.fail("INTERNAL", effect.text);
        return;
      case "pump":
        this.pump();
        return;
      case "releaseJournal": {
        const detach = this.detachIngest;
        this.detachIngest = undefined;
        detach?.(); // held writes hear of it
        return;
      }
      case "answerOperator":
      case "refuseOperator": {
        const command = this.commands.get(effect.commandId);
        assert(command !== undefined, () => `command ${effect.commandId} is waiting for its answer`);
        this.commands.delete(effect.commandId);
        if (effect.type === "answerOperator") command.resolve();
        else command.reject(new ControlError(effect.code, effect.text));
        return;
      }
      case "log":
        writeLogEffect(this.logger, effect);
        return;
      case "fenceWriter":
        this.writer.fence(effect.reason);
        return;
      case "unfenceWriter":
        this.writer.unfence();
        return;
      case "answerFence":
        this.currentConnection(effect.stream, effect.connectionId)?.send({ type: "FENCED", groupHandle, fenceId: effect.fenceId, lastAcceptedSequence: asSequence(effect.lastAcceptedSequence), lastWriteSequence: asSequence(effect.lastWriteSequence) });
        return;
      case "refuseFence":
        this.currentConnection(effect.stream, effect.connectionId)?.send({ type: "NACK", groupHandle, code: "INTERNAL", refType: "FENCE", refId: effect.fenceId, arrivedSequence: asSequence(0), text: effect.text.slice(0, 512) });
        return;
      case "countLateWrites": {
        const { cutSequence, lastSequence } = effect;
        this.countLateWrites(cutSequence, lastSequence).then(
          (counted) => this.step({ type: "lateWritesCounted", lateWrites: counted.writes, exact: counted.exact }),
          (error: unknown) => {
            this.logger.error({ event: "late_writes_not_counted", group: this.groupName, err: error }, "could not count the writes after the takeover's cut");
            this.step({ type: "lateWritesCounted", lateWrites: 0, exact: false });
          },
        );
        return;
      }
      default:
        unreachable(effect, "primary pair effect");
    }
  }

  /** The stream's connection if it is still `connectionId` and open. */
  private currentConnection(index: number, connectionId: number): ReplConnection | undefined {
    const stream = this.streams[index];
    const connection = stream?.connection;
    if (stream === undefined || connection === undefined || connection.closed || stream.connectionId !== connectionId) return undefined;
    return connection;
  }

  /**
   * Every stream closes; what was in flight is resent after the next handshake, the in-memory
   * tail is dropped (records not yet durable may never reach the disk after a group stop),
   * and held writes hear that the sender's hold may have moved.
   */
  private closeStreams(reason: string): void {
    this.clock.clear(this.pumpRetryTimer);
    this.pumpRetryTimer = undefined;
    this.clock.clear(this.pullWaitTimer);
    this.pullWaitTimer = undefined;
    for (const stream of this.streams) {
      stream.connection?.close(reason);
      stream.connection = undefined;
      stream.ready = false;
      stream.pulls = [];
    }
    this.sender.onConnectionLost();
    this.tail.clear();
    this.writer.releaseHeld();
    // Suspended, failed, fenced, stopped: a copy that runs again starts over and opens its own.
    this.dropCopyReaders();
  }

  // ---- streams --------------------------------------------------------------------

  private connectStream(stream: Stream): void {
    const socket = this.transport.connect(this.config.remoteReplAddress);
    const logger = this.logger.child({ stream: stream.index });
    this.connectionIds += 1;
    const connectionId = this.connectionIds;
    const connection = new ReplConnection(socket, "primary", logger, {
      onMessage: (message) => this.onMessage(stream, connection, connectionId, message),
      onBadContent: (result) => connection.fail("PROTOCOL", `unexpected bad content: ${result.reason}`),
      onClose: (reason) => {
        if (stream.connection !== connection) return;
        stream.connection = undefined;
        const wasReady = stream.ready;
        stream.ready = false;
        stream.pulls = [];
        if (wasReady) {
          if (this.streams.some((s) => s.ready)) this.sender.onStreamLost(stream.index);
          else this.sender.onConnectionLost();
        }
        if (stream.index === 0 && this.copy?.running === true) {
          this.copy.running = false;
          // The copy starts over on the next connection (startCopy): its handles close now, not at a GC.
          this.dropCopyReaders();
        }
        // Closed on purpose: reopened at once (end of the copy), or the pair is being deleted
        // (the secondary ends its side first and closes): neither is a loss of the link.
        const planned = this.ending || Object.values(reopenText).some((text) => reason.startsWith(text));
        if (pairRunning(this.machine) && !planned) {
          this.lastError = reason;
          // A reconnect: a stream that carried the pair (its handshake done) is lost and opened
          // again; a connection attempt that never completed the handshake is a retry, not one.
          if (this.machine.streams[stream.index]?.up === true) this.reconnects += 1;
        }
        // The machine decides whether and when it reconnects, and whether the link is down.
        this.step({ type: "streamClosed", stream: stream.index, reason, wasReady, planned, atIso: new Date(this.clock.wallMs()).toISOString() });
        this.pump();
      },
    }, { clock: this.clock, remote: this.config.remoteReplAddress });
    stream.connection = connection;
    stream.connectionId = connectionId;
    socket.once("connect", () => {
      connection.send({ type: "HELLO", versionMin: replProtocolVersionMin, versionMax: replProtocolVersionMax, primaryNodeId: this.nodeId, streamIndex: stream.index, streamCount: this.config.streams });
    });
  }

  private onMessage(stream: Stream, connection: ReplConnection, connectionId: number, message: ReplMessage): void {
    this.lastContactIso = new Date(this.clock.wallMs()).toISOString();
    switch (message.type) {
      case "HELLO_OK":
        stream.version = message.version;
        this.peerVersion = message.version;
        connection.send({
          type: "OPEN_GROUP",
          groupHandle,
          pairId: this.config.pairId,
          primaryGroup: this.groupName,
          secondaryGroup: this.config.remoteGroup,
          transfer: this.config.transfer,
          reflect: this.config.reflect,
          startSequence: asSequence(this.machine.record.copyStartSequence + 1),
          volumes: this.volumes.map((v) => ({ volumeId: asVolumeId(v.volumeId), name: v.remoteVolume, sizeBytes: v.file.sizeBytes })),
        });
        return;
      case "GROUP_STATE":
        this.noteProgress(message.arrivedSequence, message.reflectedSequence);
        this.step({ type: "groupState", stream: stream.index, connectionId, state: message.state, arrivedSequence: message.arrivedSequence, lastSequence: this.lastSequence() });
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
        this.step({ type: "ackReceived", batchId: message.batchId, nowMs: this.clock.monotonicMs() });
        this.writer.releaseHeld();
        this.trimIfFilling();
        this.pump();
        return;
      }
      case "PULL":
        if (this.config.transfer !== "pull") {
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
        // TAKEN_OVER as ERROR: a takeover began and closed the streams (it may still be refused);
        // the reconnect's OPEN_GROUP learns how it ended (NACK TAKEN_OVER with the cut, or GROUP_STATE).
        if (message.code === "STALE_PAIR" && !this.ending) this.failPair(`secondary refused the pair: ${message.text}`);
        connection.close("peer error");
        return;
      case "FENCE":
        this.step({ type: "fence", stream: stream.index, connectionId, fenceId: message.fenceId, text: message.text, lastSequence: this.lastSequence(), lastWriteSequence: this.writer.lastWriteSequence, atIso: new Date(this.clock.wallMs()).toISOString() });
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
      this.sender.onBatchRefused(stream.index, message.refId);
      this.lastError = `secondary cannot store records: ${message.code} ${message.text}`;
      this.step({ type: "batchRefused", batchId: message.refId, code: message.code, text: message.text, batchIdFloor: this.sender.nextBatchIdFloor, nowMs: this.clock.monotonicMs() });
      return;
    }
    this.lastError = `${message.code}: ${message.text}`;
    if (message.code === "TAKEN_OVER" && message.refType === "OPEN_GROUP") {
      // The secondary took this pair over (its arrivedSequence field is the cut): fence this group.
      this.step({ type: "peerTookOver", text: message.text, cutSequence: message.arrivedSequence, lastSequence: this.lastSequence(), lastWriteSequence: this.writer.lastWriteSequence, atIso: new Date(this.clock.wallMs()).toISOString() });
      connection.close("the secondary took over");
      return;
    }
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
        if (this.ending) {
          // pair delete: the secondary ended its side already, and refuses a reconnect that
          // raced with it (UNKNOWN_GROUP). The pair ends here in a moment; it has not failed.
          connection.close(`the secondary ended its side of the pair: ${message.code} ${message.text}`);
          return;
        }
        this.failPair(`secondary refused ${message.refType}: ${message.code} ${message.text}`);
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
          this.failPair(result.reason);
          return;
        }
      } else {
        const result = this.sender.onReconnect(this.arrivedSequence, asSequence(this.journal.durableSequence));
        if (!result.ok) {
          this.failPair(result.reason);
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
    this.hostWrites.dropThrough(this.reflectedSequence);
  }

  // ---- initial copy ---------------------------------------------------------------

  private copyChunkIds = new Map<number, number>();
  private nextChunkId = 1;
  private copyCursor: { volume: number; offsetBytes: number } = { volume: 0, offsetBytes: 0 };
  private copyConnection: ReplConnection | undefined;
  private copyDoneChunk = 0;
  /** Per volume, an O_DIRECT reader for the copy (so the copy leaves no pages in the cache). */
  private copyReaders: (DirectReader | undefined)[] = [];
  /**
   * Bumped whenever the copy's readers are dropped: readers whose open finishes after a drop
   * (the pair ended or the stream closed meanwhile) are closed at once, never left to the
   * garbage collector (Node closes a FileHandle it collects and treats that as fatal).
   */
  private copyReadersEpoch = 0;

  private startCopy(connection: ReplConnection): void {
    const volumeBytes = this.volumes.reduce((sum, v) => sum + v.file.sizeBytes, 0);
    const copy: CopyProgress = { doneBytes: 0, totalBytes: this.volumes.reduce((sum, v) => sum + v.file.written.markedBytes, 0), volumeBytes, running: true, readsInFlight: 0, dataBytes: 0, plans: undefined };
    this.copy = copy;
    this.copyChunkIds.clear();
    this.copyCursor = { volume: 0, offsetBytes: 0 };
    this.copyConnection = connection;
    this.copyDoneChunk = 0;
    void this.closeCopyReaders()
      .then(() => this.waitApplied(copy))
      .then(async () => {
        if (this.copy !== copy || !copy.running) return;
        // Only the extents ever written (docs/volumes.md): every record through S0 is applied,
        // so marked, now. The secondary's other bytes are zero (it empties its volumes first).
        copy.plans = this.volumes.map((v) => v.file.written.snapshot());
        copy.totalBytes = copy.plans.reduce((sum, plan) => sum + plan.markedBytes, 0);
        this.logger.info({ event: "copy_started", group: this.groupName, totalBytes: copy.totalBytes, volumeBytes, copyStartSequence: this.machine.record.copyStartSequence }, "initial copy started");
        await this.openCopyReaders(copy);
      })
      .then(() => this.copyMore())
      .catch((error: unknown) => connection.fail("INTERNAL", (error as Error).message));
  }

  /** Every record up to S0 must be in the volumes before the copy reads them (or the copy is over meanwhile). */
  private async waitApplied(copy: CopyProgress): Promise<void> {
    while (this.writer.appliedSequence < this.machine.record.copyStartSequence && this.copy === copy && copy.running) await this.clock.sleep(5);
  }

  /**
   * Opens the copy's readers, one per volume. Every handle opened is owned by the link or closed
   * here: when one open fails the others close, and when the copy ended while they opened (the
   * pair deleted, suspended, its stream closed) they close at once.
   */
  private async openCopyReaders(copy: CopyProgress): Promise<void> {
    const epoch = this.copyReadersEpoch;
    const opened = await Promise.allSettled(this.volumes.map((v) => DirectReader.open(v.file.fileSystem, v.file.path, replCopyChunkBytesMax)));
    const readers = opened.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    const failed = opened.find((result) => result.status === "rejected");
    if (failed !== undefined || epoch !== this.copyReadersEpoch || this.copy !== copy || !copy.running) {
      await Promise.all(readers.map((reader) => reader.close().catch((error: unknown) => this.logger.warn({ event: "copy_reader_close_failed", group: this.groupName, err: error }, "a volume handle of the initial copy did not close cleanly"))));
      if (failed !== undefined) throw failed.reason;
      return;
    }
    this.copyReaders = readers;
  }

  /** Closes the copy's readers now (in the background; a close that fails is logged). */
  private dropCopyReaders(): void {
    this.closeCopyReaders().catch((error: unknown) => this.logger.warn({ event: "copy_reader_close_failed", group: this.groupName, err: error }, "a volume handle of the initial copy did not close cleanly"));
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
      const consistentFromSequence = Math.max(this.lastSequence(), this.machine.record.copyStartSequence);
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
      this.sentBytes += run.lengthBytes;
      connection.expectAnswer();
    }
  }

  private async closeCopyReaders(): Promise<void> {
    this.copyReadersEpoch += 1;
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
      // Saved, then every stream reopens its group (the machine's copyDone).
      this.step({ type: "copyAcknowledged", consistentFromSequence: this.pendingConsistentFrom, totalBytes: copy.totalBytes, dataBytes: copy.dataBytes, volumeBytes: copy.volumeBytes });
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
    if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes) {
      // A group resumed after a stop gives again the sequences its journal lost: forget those first.
      if (record.sequence <= this.hostWrites.lastNoted) this.hostWrites.dropAfter(record.sequence - 1);
      this.hostWrites.note(record.sequence, recordPayloadBytes(record.kind, record.lengthBytes), record.wallTimeUs, this.clock.monotonicMs());
    }
    this.pump();
  }

  /** Called by the primary role's time-advance ticker (one timer for all pairs, every half interval). */
  maybeTimeAdvance(): void {
    if (!timeAdvanceAllowed(this.machine) || !this.sender.connected) return;
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
        if (pairRunning(this.machine) && this.pumpRetryTimer === undefined) {
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
        const didSend = this.config.transfer === "pull" ? await this.answerPull(stream) : await this.pushBatch(stream);
        sent ||= didSend;
      }
      if (!sent) break;
      if (this.journal.lastSequence > this.journal.durableSequence) await this.journal.sync();
    }
    if (this.config.transfer === "pull") this.armPullWait();
  }

  /** Push: the next batch the windows allow on this stream (one probe while the secondary is out of space). */
  private async pushBatch(stream: Stream): Promise<boolean> {
    const allowance = pushAllowance(this.machine);
    if (!allowance.send) return false;
    const plan = this.sender.planBatch(stream.index, asSequence(this.journal.durableSequence), allowance.bytesMax);
    if (plan === undefined) return false;
    const sent = await this.sendPlanned(stream, plan);
    if (sent && allowance.probeEpisode !== undefined) this.step({ type: "probeSent", batchId: plan.batchId, episode: allowance.probeEpisode });
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
    if (stream.version < replResizeVersion && records.some((r) => r.kind === RecordKind.resize)) {
      // An older secondary would refuse the record (an unknown kind) and the stream would
      // resend it for ever: the pair fails once, saying why and what to do.
      this.sender.abandonPlan(plan);
      this.failPair(`the secondary runs a tidemark that cannot grow volumes (replication protocol ${stream.version}; resize needs ${replResizeVersion}), ` +
        `and a volume of group ${this.groupName} was resized: upgrade the secondary, then tidemark pair delete ${this.groupName} and pair create it again (a new initial copy)`);
      return false;
    }
    if (!this.sender.commitBatch(plan, last.sequence, bytes)) return false;
    // A peer of protocol version 1 reads record format 1 only: the wall times stay here.
    connection.send({ type: "BATCH", groupHandle, batchId: plan.batchId, records: stream.version >= replVersionWallTime ? records : records.map(withoutWallTime) });
    this.sentBytes += bytes;
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
    if (dueMs === Number.POSITIVE_INFINITY || this.pullWaitTimer !== undefined || !pairRunning(this.machine)) return;
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

  /**
   * Host writes (and zeroes) in the journal after `cutSequence` through `lastSequence`: what
   * this node accepted that the takeover did not keep. Records the journal no longer holds
   * (trimmed once the secondary had them) are not counted: `exact` is false then.
   */
  private async countLateWrites(cutSequence: number, lastSequence: number): Promise<{ writes: number; exact: boolean }> {
    let writes = 0;
    const first = Math.max(cutSequence + 1, this.journal.firstSequence);
    const exact = first <= cutSequence + 1 || lastSequence <= cutSequence;
    let next = first;
    while (next <= lastSequence && next <= this.journal.lastSequence) {
      const records = await this.journal.readFrom(next, replCopyChunkBytesMax);
      if (records.length === 0) break;
      for (const record of records) {
        if (record.sequence > lastSequence) break;
        if (record.kind === RecordKind.write || record.kind === RecordKind.zeroes) writes += 1;
      }
      const last = records[records.length - 1];
      if (last === undefined || last.sequence < next) break;
      next = last.sequence + 1;
    }
    return { writes, exact };
  }

  // ---- backpressure and status ----------------------------------------------------

  private slowdownMs(): number {
    const fraction = this.journal.usedBytes / this.journal.bytesMax;
    if (fraction < journalSlowdownFraction) return 0;
    return Math.ceil(slowdownDelayMsMax * Math.min(1, (fraction - journalSlowdownFraction) / (1 - journalSlowdownFraction)));
  }

  /** The link-down text while the pair runs and no stream is up, else undefined. */
  private linkDownText(): string | undefined {
    const down = this.machine.linkDown;
    if (down === undefined || !pairRunning(this.machine)) return undefined;
    return disconnectedReason(`${this.config.remoteNode} at ${this.config.remoteReplAddress}`, down);
  }

  /**
   * The secondary refuses records because its journal is full (it drains by itself as it
   * reflects), not because its group stopped on its disk: its refusal says "journal full".
   */
  private peerJournalFull(): boolean {
    return /journal full/.test(this.machine.noSpace?.text ?? "");
  }

  private reason(): string | null {
    const record = this.machine.record;
    const fence = record.fence;
    if (record.state === "fenced" && fence !== null) {
      const late = fence.lateWrites === null ? "" : `; ${fence.lateWritesExact ? "" : "at least "}${fence.lateWrites} host writes were accepted here after the takeover's cut`;
      return `${fence.reason} (since ${fence.since})${late}`;
    }
    if (record.reason !== null) return record.reason;
    const stopped = this.writer.stopped;
    if (stopped !== undefined) return stopped.reason;
    const fraction = this.journal.usedBytes / this.journal.bytesMax;
    let noSpace: string | undefined;
    const refusing = this.machine.noSpace;
    if (refusing?.code === "NO_SPACE") {
      noSpace = `the secondary cannot store records now: ${this.config.remoteNode} is out of ${this.peerJournalFull() ? "journal " : ""}space for ${this.config.remoteGroup} (${refusing.text}); they wait here and are sent once it has room`;
    } else if (refusing !== undefined) {
      noSpace = `the secondary cannot store records now (${refusing.text}); they wait here and are sent when it can`;
    }
    // Held or slowed with the link down too: the link is what lets the journal drain, so the
    // reason says so (since when, the last error), after what holds the writes.
    const down = this.linkDownText();
    const andDown = down === undefined ? "" : `; ${down}`;
    if (this.writer.heldWrites > 0 && this.writer.holdReason === "slowdown") {
      return `journal ${formatPercent(fraction)} full: ${this.writer.heldWrites} host writes slowed (at most ${slowdownDelayMsMax} ms each) while the secondary catches up${noSpace === undefined ? "" : `; ${noSpace}`}${andDown}`;
    }
    if (this.writer.heldWrites > 0 && this.writer.holdReason === "apply-behind") {
      return `${this.writer.heldWrites} host writes held until the volumes catch up with the journal (held, never failed)${andDown}`;
    }
    if (this.writer.heldWrites > 0) {
      return `journal full (${formatPercent(fraction)}): ${this.writer.heldWrites} host writes held until the secondary acknowledges more (held, never failed)${noSpace === undefined ? "" : `; ${noSpace}`}${andDown}`;
    }
    if (noSpace !== undefined) return `${noSpace}${andDown}`;
    if (fraction >= journalSlowdownFraction) return `journal ${formatPercent(fraction)} full: host writes slowed while the secondary catches up${andDown}`;
    return down ?? null;
  }

  /** The protocol version the secondary last chose (undefined before a stream reached it since the start). */
  private peerVersion: number | undefined;

  /**
   * Why a volume of this pair's group cannot be resized now, or undefined: while the initial
   * copy runs (it copies the volumes at their size when it began), or when the secondary speaks
   * a protocol that cannot carry a resize (it would refuse the record).
   */
  resizeRefusal(): string | undefined {
    const state = this.machine.record.state;
    if (state === "copying") return `the pair of group ${this.groupName} is in its initial copy; resize once it is replicating (tidemark pair status ${this.groupName})`;
    if (this.peerVersion !== undefined && this.peerVersion < replResizeVersion) {
      return `the secondary of group ${this.groupName} runs a tidemark that cannot grow volumes (replication protocol ${this.peerVersion}); upgrade it first`;
    }
    return undefined;
  }

  status(): PairInfo {
    const accepted = this.writer.nextSequence - 1;
    const record = this.machine.record;
    const reflected = this.reflectedNow();
    // Exact: the host writes accepted after what the secondary reported reflected (core/pair-view.ts).
    this.hostWrites.dropThrough(reflected);
    const lag = this.hostWrites.figures(accepted);
    const state = primaryShownState({
      recordState: record.state, groupStopped: this.writer.stopped !== undefined,
      // Refused for space or an I/O error other than a full journal there (that one drains by itself as it reflects).
      peerStopped: this.machine.noSpace !== undefined && !this.peerJournalFull(),
      writesHeldForJournal: this.writer.heldWrites > 0 && this.writer.holdReason === "journal-full",
      linkDown: pairRunning(this.machine) ? this.machine.linkDown : undefined,
    });
    const consistentAsOfUs = primaryConsistentAsOfUs({
      consistent: record.copyDone && reflected >= record.consistentFromSequence,
      oldestUnreflectedWallTimeUs: lag.records > 0 ? lag.oldestWallTimeUs : undefined,
      nowWallUs: Math.floor(this.clock.wallMs() * 1000), lastStampedWallTimeUs: this.writer.lastWallTimeUs,
    });
    return {
      group: this.groupName,
      role: "primary",
      state,
      healthy: pairHealthy(state),
      pairId: this.config.pairId,
      remoteNode: this.config.remoteNode,
      remoteUrl: this.config.remoteUrl,
      remoteGroup: this.config.remoteGroup,
      mode: "async",
      transfer: this.config.transfer,
      streams: this.config.streams,
      reflect: this.config.reflect,
      acceptedSequence: accepted,
      writeSequence: Math.max(this.writer.lastWriteSequence, record.copyStartSequence),
      // What was reflected has arrived and was sent (after a restart the sender knows only node.json's hints).
      sentSequence: Math.max(this.sender.sentSequence, this.arrivedSequence, this.sender.ackedSequence, reflected),
      arrivedSequence: Math.max(this.arrivedSequence, this.sender.ackedSequence, reflected),
      reflectedSequence: reflected,
      lagRecords: lag.records,
      lagBytes: lag.bytes,
      lagSeconds: primaryLagSeconds(this.clock.monotonicMs(), lag.oldestAtMs),
      consistentAsOf: isoOfWallUs(consistentAsOfUs),
      lastContact: this.lastContactIso,
      journalBytes: this.journal.usedBytes,
      journalBytesMax: this.journal.bytesMax,
      copy: this.copy === undefined ? null : { doneBytes: this.copy.doneBytes, totalBytes: this.copy.totalBytes, volumeBytes: this.copy.volumeBytes, dataBytes: this.copy.dataBytes },
      lastCopy: this.lastCopy ?? null,
      heldWrites: this.writer.heldWrites,
      reason: this.reason(),
      link: {
        connectedStreams: connectedStreams(this.machine), reconnects: this.reconnects, lastError: this.lastError, sentBytes: this.sentBytes, receivedBytes: 0,
        // Whenever the link is down while the pair runs: `disconnected`, and also `held` or `copying` with the link down.
        downSince: pairRunning(this.machine) ? (this.machine.linkDown?.sinceIso ?? null) : null,
      },
      fence: record.state === "fenced" ? record.fence : null,
    };
  }
}


function timerKey(timer: PairTimer): string {
  return timer.kind === "reconnect" ? `reconnect:${timer.stream}` : timer.kind;
}

function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(0)}%`;
}
