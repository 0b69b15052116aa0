// The secondary's replication listener (docs/replication-protocol.md): HELLO, then per
// group OPEN_GROUP -> GROUP_STATE, then the initial copy (COPY_*) and batches of journal
// records, pushed by the primary or pulled at this node's own pace ([0047]).
// A bad peer gets ERROR or NACK and loses its connection; the node keeps serving.
// Back-pressure: a batch the group's journal has no room for is refused with NACK NO_SPACE
// and changes nothing; once reflection frees room, every stream that refused one gets an
// ACK with batchId 0 (a progress report: "send again"), and pulls resume. In pull mode,
// where the secondary simply stops asking, it tells the primary once with a NACK NO_SPACE
// of refId 0 (no batch: a report), so both sides say why the group waits.
//
// Connections (docs/replication-protocol.md, "Connections"): one that has not sent HELLO holds a
// slot of a pool of its own (replHandshakesMax; when it is full the oldest is closed to admit the
// new one; deadline replHelloTimeoutMs); one past HELLO counts against replConnectionsMax only,
// and HELLO past that limit is refused. A slot is free the moment its connection is gone.
//
// What a group's message means in its state (refused, a copy begun or finished, a batch taken)
// is the lifecycle machine's decision (core/secondary-group-machine.ts), run by the host
// (SecondaryRole); this listener keeps the connections, the per-stream order, the pull
// planning and the answers on the wire (PeerReply), and the group-wide stream actions the
// lifecycle asks for (SecondaryStreams).
import type { Logger } from "pino";
import { ConnectionSlots } from "../core/connection-slots.ts";
import {
  replConnectionsMax, replFrameBytesMax, replHandshakesMax, replHelloTimeoutMs, replPullAnswerGraceMs, replPullWaitMs,
} from "../core/limits.ts";
import { asSequence } from "../core/types.ts";
import { encodedRecordBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { chooseReplVersion, replProtocolVersionMax, replProtocolVersionMin, replReopenCloseText, type ReplErrorCode, type ReplMessage, type ReplMessageOf } from "../protocol/repl-protocol.ts";
import { mayPull, openRefusal, pairDeleteHoldText, primarySuspended, reflects, type BatchOutcome, type PeerAnswer, type SecondaryGroupEffect, type SecondaryGroupEvent } from "../core/secondary-group-machine.ts";
import { ReplConnection } from "../transport/repl-connection.ts";
import { systemClock, type Clock, type Timer } from "../node/clock.ts";
import { assert } from "../core/assert.ts";

/** The secondary tells the primary how far it reflected at most this often per group (ms). */
const reflectReportIntervalMs = 20;
import { tcpTransport, type ByteStream, type Listener, type Transport } from "../transport/transport.ts";
import type { SecondaryGroup, SecondaryReceiveResult } from "./secondary-group.ts";

/**
 * How the lifecycle answers the stream a peer's message came on, and the stream data it
 * carries: the listener implements it per message.
 */
export interface PeerReply {
  answer(message: PeerAnswer): void;
  refuse(effect: Extract<SecondaryGroupEffect, { type: "refusePeer" }>): void;
  fail(code: ReplErrorCode, text: string): void;
  /**
   * Whether the stream is gone: a lifecycle step still waiting for its turn is dropped (its
   * answer could not arrive, and the primary asks again on a new stream). Otherwise a
   * COPY_DONE of a closed stream could end a copy a newer OPEN_GROUP had started over.
   */
  readonly gone: () => boolean;
  /** BATCH: hands its records to the receiver and journal; resolves with the outcome. */
  readonly receive?: () => Promise<SecondaryGroupEvent>;
  /** COPY_DATA / COPY_ZEROES: writes the chunk the lifecycle accepted. */
  readonly writeCopy?: (effect: Extract<SecondaryGroupEffect, { type: "writeCopyChunk" }>) => Promise<void>;
}

/** Group-wide stream actions the lifecycle asks for (the listener implements them). */
export interface SecondaryStreams {
  /** Journal room again: take what waited in memory, tell refused streams, pull again. */
  roomAgain(secondary: SecondaryGroup): void;
  schedulePulls(secondary: SecondaryGroup): void;
  /** Close every stream of the group: ERROR TAKEN_OVER, or a close the primary answers by resending from what arrived. */
  closeStreams(secondary: SecondaryGroup, why: "taken-over" | "resend" | "hold", text: string): void;
  /** Reflection moved on: tell the primary. */
  reportReflected(secondary: SecondaryGroup): void;
  /**
   * Sends FENCE on one of the group's open streams; resolves with the primary's answer, or
   * `no-stream` at once when none is open, or `closed` when the stream closes first. The
   * caller keeps the deadline (core/limits.ts fenceAnswerTimeoutMs) and calls `cancel`.
   */
  fence(secondary: SecondaryGroup, text: string): { readonly answer: Promise<FenceAnswer>; readonly cancel: () => void };
}

/** The primary's answer to FENCE. */
export type FenceAnswer =
  | { readonly kind: "fenced"; readonly lastAcceptedSequence: number; readonly lastWriteSequence: number }
  | { readonly kind: "refused"; readonly text: string }
  | { readonly kind: "closed"; readonly text: string }
  | { readonly kind: "no-stream" };

/** What the replication listener needs from the node's secondary role. */
export interface SecondaryHost {
  readonly nodeId: string;
  findSecondary(name: string): SecondaryGroup | undefined;
  /** OPEN_GROUP of a group that is no live secondary here: why (UNKNOWN_GROUP, or TAKEN_OVER with its cut for the pair it was). */
  refuseOpen(name: string, pairId: string): { readonly code: ReplErrorCode; readonly text: string; readonly cutSequence?: number };
  /** Runs one event of the group's lifecycle and its follow-ups, answering on `reply`. */
  deliver(secondary: SecondaryGroup, event: SecondaryGroupEvent, reply: PeerReply): Promise<void>;
  /** Like deliver, for a lifecycle step (OPEN_GROUP, COPY_DONE): one at a time per group. */
  lifecycle(secondary: SecondaryGroup, event: SecondaryGroupEvent, reply: PeerReply): Promise<void>;
  kickReflector(): void;
  /** The group of `secondary`'s consistency domain that holds its reflection back, if another one (for status and NACK text). */
  frontierHolder(secondary: SecondaryGroup): string | undefined;
}

interface OpenGroup {
  readonly handle: number;
  readonly secondary: SecondaryGroup;
  readonly transfer: "push" | "pull";
  readonly connection: ReplConnection;
  readonly connectionId: number;
  /** Serialises this stream's work on the group (batches are acknowledged in order). */
  chain: Promise<void>;
  /** A batch on this stream was refused with NO_SPACE: tell the primary when there is room again. */
  refusedForSpace: boolean;
}

export class ReplServer implements SecondaryStreams {
  private readonly host: SecondaryHost;
  private readonly logger: Logger;
  private listener: Listener | undefined;
  private readonly slots = new ConnectionSlots<ReplConnection>({ handshakesMax: replHandshakesMax, establishedMax: replConnectionsMax });
  private closing = false;
  private nextConnectionId = 1;

  private readonly clock: Clock;
  private readonly transport: Transport;

  constructor(host: SecondaryHost, logger: Logger, clock: Clock = systemClock, transport: Transport = tcpTransport) {
    this.clock = clock;
    this.transport = transport;
    this.host = host;
    this.logger = logger;
  }

  async listen(hostName: string, port: number): Promise<number> {
    this.listener = await this.transport.listen({ host: hostName, port }, (stream) => this.accept(stream),
      (error) => this.logger.error({ event: "repl_listener_error", err: error }, "replication listener error; it goes on accepting"));
    return this.listener.port;
  }

  closeStreams(secondary: SecondaryGroup, why: "taken-over" | "resend" | "hold", text: string): void {
    if (why === "resend") {
      this.closeStreamsOf(secondary, text);
      return;
    }
    if (why === "hold") {
      // A takeover is being decided: the streams close without refusing the pair; the
      // primary reconnects and its OPEN_GROUP is answered GROUP_BUSY until it is decided.
      for (const open of this.opensBySecondary.get(secondary) ?? []) if (!open.connection.closed) open.connection.close(`secondary holds the group: ${text}`);
      return;
    }
    for (const [connection, groups] of this.groupsByConnection) {
      for (const open of groups.values()) {
        if (open.secondary === secondary) connection.fail("TAKEN_OVER", text);
      }
    }
  }

  private nextFenceId = 1;
  /** FENCEs sent and not answered, per connection, by fence id. */
  private readonly fences = new Map<ReplConnection, Map<number, (answer: FenceAnswer) => void>>();

  fence(secondary: SecondaryGroup, text: string): { readonly answer: Promise<FenceAnswer>; readonly cancel: () => void } {
    const open = [...(this.opensBySecondary.get(secondary) ?? [])].find((o) => !o.connection.closed);
    if (open === undefined) return { answer: Promise.resolve({ kind: "no-stream" }), cancel: () => undefined };
    const fenceId = this.nextFenceId++;
    const connection = open.connection;
    let pending = this.fences.get(connection);
    if (pending === undefined) {
      pending = new Map();
      this.fences.set(connection, pending);
    }
    const waiting = pending;
    const answer = new Promise<FenceAnswer>((resolve) => waiting.set(fenceId, resolve));
    connection.send({ type: "FENCE", groupHandle: open.handle, fenceId, text });
    this.logger.info({ event: "fence_sent", group: secondary.name, fenceId, replConnection: open.connectionId }, "asked the primary to fence its group");
    return { answer, cancel: () => { waiting.delete(fenceId); } };
  }

  /** The answer to a FENCE (FENCED, or NACK of it) on `connection`. */
  private fenceAnswered(connection: ReplConnection, fenceId: number, answer: FenceAnswer, logger: Logger): void {
    const resolve = this.fences.get(connection)?.get(fenceId);
    if (resolve === undefined) {
      logger.warn({ event: "fence_answer_unexpected", fenceId, answer: answer.kind }, "an answer to a FENCE this node is not waiting for: ignored");
      return;
    }
    this.fences.get(connection)?.delete(fenceId);
    resolve(answer);
  }

  roomAgain(secondary: SecondaryGroup): void {
    this.onJournalSpace(secondary);
  }

  private readonly groupsByConnection = new Map<ReplConnection, Map<number, OpenGroup>>();
  /** The streams that have each secondary group open. */
  private readonly opensBySecondary = new Map<SecondaryGroup, Set<OpenGroup>>();

  /** Open connections: before HELLO and past it. */
  connectionCount(): number {
    return this.slots.total;
  }

  /** Open connections that have not completed HELLO. */
  handshakeCount(): number {
    return this.slots.handshakes;
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const connection of this.slots.all()) connection.close("node stopping");
    await this.listener?.close();
  }

  private accept(socket: ByteStream): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const connectionId = this.nextConnectionId++;
    const logger = this.logger.child({ replConnection: connectionId });
    const groups = new Map<number, OpenGroup>();
    let helloDone = false;
    const helloTimer = this.clock.setTimeout(() => connection.fail("PROTOCOL", `no HELLO within ${replHelloTimeoutMs} ms`), replHelloTimeoutMs);
    const connection: ReplConnection = new ReplConnection(socket, "secondary", logger, {
      onMessage: (message) => {
        if (!helloDone) {
          if (message.type !== "HELLO") {
            connection.fail("PROTOCOL", `${message.type} before HELLO`);
            return;
          }
          const version = chooseReplVersion(message.versionMin, message.versionMax);
          if (version === undefined) {
            connection.fail("VERSION", `this node speaks replication protocol ${replProtocolVersionMin}..${replProtocolVersionMax}, the peer ${message.versionMin}..${message.versionMax}`);
            return;
          }
          if (!this.slots.establish(connection)) {
            connection.fail("INTERNAL", `this node serves at most ${replConnectionsMax} replication connections; try again later`);
            return;
          }
          helloDone = true;
          this.clock.clear(helloTimer);
          // Per connection: debug. What an operator needs is the group's state change (pair_disconnected / pair_reconnected).
          logger.debug({ event: "repl_hello", remote: connection.remote, primary: message.primaryNodeId, stream: message.streamIndex, streams: message.streamCount }, "replication stream attached");
          connection.send({ type: "HELLO_OK", version, secondaryNodeId: this.host.nodeId, frameBytesMax: replFrameBytesMax });
          return;
        }
        this.dispatch(connection, groups, message, logger, connectionId);
      },
      onBadContent: (result) => {
        const open = groups.get(result.groupHandle);
        connection.send({ type: "NACK", groupHandle: result.groupHandle, code: "BAD_RECORD", refType: result.refType, refId: result.refId, arrivedSequence: asSequence(open?.secondary.arrivedSequence ?? 0), text: result.reason.slice(0, 200) });
      },
      onClose: (reason) => {
        this.clock.clear(helloTimer);
        this.slots.release(connection);
        this.groupsByConnection.delete(connection);
        const fences = this.fences.get(connection);
        this.fences.delete(connection);
        for (const resolve of fences?.values() ?? []) resolve({ kind: "closed", text: reason });
        for (const open of groups.values()) {
          const secondary = open.secondary;
          secondary.streams.delete(connectionId);
          const reopening = secondary.peerCloseText?.startsWith(replReopenCloseText) === true;
          // The link's last error (status: link.lastError, and the disconnected reason): why the
          // stream ended, in the primary's words when it said why (CLOSE), else this side's
          // (a peer timeout, a socket error). Not for the reopen at the end of the copy.
          const why = secondary.peerCloseText === undefined ? reason : `the primary closed the stream: ${secondary.peerCloseText}`;
          if (!reopening) secondary.lastError = why;
          if (secondary.streams.size === 0) {
            secondary.noStreamSinceIso = new Date(this.clock.wallMs()).toISOString();
            secondary.noStreamSinceMs = this.clock.monotonicMs();
            // One line when the last stream of the group goes (pair status: disconnected), none per
            // retry, and none when the primary reopens its streams at once (the end of the copy).
            if (reopening) continue;
            const suspended = primarySuspended(secondary.peerCloseText);
            const deleting = why.includes(pairDeleteHoldText);
            this.logger.info({ event: deleting ? "pair_streams_closed" : "pair_disconnected", group: secondary.name, reason: why },
              deleting ? "replication streams closed: the pair is being deleted"
                : suspended ? "no replication stream from the primary: the pair is suspended there" : "no replication stream from the primary; it reconnects by itself");
          }
        }
        for (const open of groups.values()) this.forgetOpen(open);
        logger.debug({ event: "repl_stream_closed", reason }, "replication stream closed");
      },
    }, { answerTimeoutMs: replPullWaitMs + replPullAnswerGraceMs, clock: this.clock });
    this.groupsByConnection.set(connection, groups);
    // Every connection gets in: a full pool of connections before HELLO closes its oldest one.
    this.slots.admit(connection)?.fail("PROTOCOL", `no HELLO yet while ${replHandshakesMax} connections wait for HELLO: the oldest is closed to admit a new one`);
  }

  private dispatch(connection: ReplConnection, groups: Map<number, OpenGroup>, message: ReplMessage, logger: Logger, connectionId: number): void {
    if (groups.size > 0) {
      // Status: the last message from the primary (lastContact).
      const nowIso = new Date(this.clock.wallMs()).toISOString();
      for (const open of groups.values()) open.secondary.lastContactIso = nowIso;
    }
    switch (message.type) {
      case "OPEN_GROUP":
        this.openGroup(connection, groups, message, logger, connectionId);
        return;
      case "BATCH": {
        const open = groups.get(message.groupHandle);
        if (open === undefined) {
          connection.fail("UNKNOWN_GROUP", `BATCH for group handle ${message.groupHandle} that was not opened`);
          return;
        }
        // Pull mode: the answer is in hand; ask for the next range now, while this one is journaled.
        let pullId: number | undefined;
        if (open.transfer === "pull") {
          connection.answered();
          const last = message.records[message.records.length - 1];
          pullId = open.secondary.pulls.answered(connectionId, last?.sequence, message.records.reduce((sum, r) => sum + encodedRecordBytes(r), 0));
          this.schedulePulls(open.secondary);
        }
        for (const record of message.records) open.secondary.receivedBytes += encodedRecordBytes(record);
        this.chain(connection, open, logger, () => this.handleBatch(open, message, pullId));
        return;
      }
      case "COPY_DATA":
      case "COPY_ZEROES":
      case "COPY_DONE": {
        const open = groups.get(message.groupHandle);
        if (open === undefined) {
          connection.fail("UNKNOWN_GROUP", `${message.type} for group handle ${message.groupHandle} that was not opened`);
          return;
        }
        if (message.type === "COPY_DATA") open.secondary.receivedBytes += message.data.length;
        this.chain(connection, open, logger, () => this.handleGroupMessage(open, message));
        return;
      }
      case "ERROR":
        logger.warn({ event: "repl_peer_error", code: message.code, reason: message.text }, "primary reported an error");
        connection.close("peer error");
        return;
      case "CLOSE":
        // Why the primary ends the stream (its group stopped, it is stopping...): shown in this group's status.
        for (const open of groups.values()) open.secondary.peerCloseText = message.text === "" ? undefined : message.text;
        connection.close("peer closed");
        return;
      case "FENCED":
        this.fenceAnswered(connection, message.fenceId, { kind: "fenced", lastAcceptedSequence: message.lastAcceptedSequence, lastWriteSequence: message.lastWriteSequence }, logger);
        return;
      case "NACK":
        logger.warn({ event: "repl_peer_nack", code: message.code, refType: message.refType, reason: message.text }, "primary refused a message");
        if (message.refType === "FENCE") {
          this.fenceAnswered(connection, message.refId, { kind: "refused", text: `${message.code}: ${message.text}` }, logger);
          return;
        }
        if (message.refType === "PULL") {
          // The primary cannot serve the range (it is gone there, or past its journal): the
          // pair needs a new copy. Asking again at once would only repeat the refusal; the
          // primary reconnects with backoff, and the status shows why.
          const open = groups.get(message.groupHandle);
          if (open !== undefined) open.secondary.lastError = `primary refused PULL from ${message.refId}: ${message.code} ${message.text}`;
          connection.close(`PULL refused: ${message.code}`);
        }
        return;
      default:
        connection.fail("PROTOCOL", `${message.type} is not expected by the secondary`);
    }
  }

  private openGroup(connection: ReplConnection, groups: Map<number, OpenGroup>, message: ReplMessageOf<"OPEN_GROUP">, logger: Logger, connectionId: number): void {
    // TAKEN_OVER carries the takeover's cut in arrivedSequence (the primary counts its writes past it).
    const nack = (code: ReplErrorCode, text: string, cutSequence?: number): void => {
      // GROUP_BUSY (a takeover or a pair delete holds the group) is answered to every retry of
      // the primary while it lasts: debug, like the other retries; the rest are warnings.
      logger[code === "GROUP_BUSY" ? "debug" : "warn"]({ event: "repl_open_refused", group: message.secondaryGroup, code, reason: text, primary: connection.remote }, "OPEN_GROUP refused");
      connection.send({ type: "NACK", groupHandle: message.groupHandle, code, refType: "OPEN_GROUP", refId: message.groupHandle, arrivedSequence: asSequence(cutSequence ?? 0), text });
    };
    const secondary = this.host.findSecondary(message.secondaryGroup);
    if (secondary === undefined) {
      const refusal = this.host.refuseOpen(message.secondaryGroup, message.pairId);
      return nack(refusal.code, refusal.text, refusal.cutSequence);
    }
    // Asked again by the lifecycle step below; here so a refused stream is never attached.
    const early = openRefusal(secondary.lifecycle, message.pairId, this.host.nodeId);
    if (early !== undefined) return nack(early.code, early.text, early.cutSequence);
    // A primary that opens the group again may send more (an unfenced primary): the group no longer counts as complete.
    secondary.primaryFencedThrough = undefined;
    if (groups.has(message.groupHandle)) return nack("GROUP_BUSY", `group handle ${message.groupHandle} is already open on this stream`);
    const open: OpenGroup = { handle: message.groupHandle, secondary, transfer: message.transfer, connection, connectionId, chain: Promise.resolve(), refusedForSpace: false };
    groups.set(message.groupHandle, open);
    if (secondary.streams.size === 0 && secondary.noStreamSinceIso !== undefined && secondary.peerCloseText?.startsWith(replReopenCloseText) !== true) {
      this.logger.info({ event: "pair_reconnected", group: secondary.name, downSince: secondary.noStreamSinceIso }, "a replication stream from the primary is back");
    }
    secondary.streams.add(connectionId);
    secondary.lastContactIso = new Date(this.clock.wallMs()).toISOString();
    secondary.noStreamSinceIso = undefined;
    secondary.peerCloseText = undefined;
    let opens = this.opensBySecondary.get(secondary);
    if (opens === undefined) {
      opens = new Set();
      this.opensBySecondary.set(secondary, opens);
    }
    opens.add(open);
    const reply: PeerReply = {
      ...this.replyFor(open),
      answer: (answer) => {
        assert(answer.type === "GROUP_STATE", "OPEN_GROUP is answered with GROUP_STATE");
        connection.send({
          type: "GROUP_STATE",
          groupHandle: message.groupHandle,
          state: answer.state,
          arrivedSequence: secondary.receiver.arrivedSequence,
          reflectedSequence: asSequence(Math.min(secondary.reflectedSequence, secondary.arrivedSequence)),
          arrivedWriteTimeUs: secondary.arrivedPosition.writeTimeUs,
          arrivedAcceptNumber: secondary.arrivedPosition.acceptNumber,
        });
        if (open.transfer === "pull" && groups.get(message.groupHandle) === open && !connection.closed) secondary.pulls.addStream(connectionId);
        this.schedulePulls(secondary);
      },
      refuse: (effect) => {
        groups.delete(message.groupHandle);
        this.forgetOpen(open);
        connection.send({ type: "NACK", groupHandle: message.groupHandle, code: effect.code, refType: "OPEN_GROUP", refId: effect.refId, arrivedSequence: asSequence(0), text: effect.text });
      },
    };
    // Streams open a group concurrently: the lifecycle decides (and begins a copy) one step at a time per group.
    open.chain = this.host.lifecycle(secondary, {
      type: "openGroup", groupHandle: message.groupHandle, pairId: message.pairId, startSequence: message.startSequence,
      volumes: message.volumes.map((v) => ({ volumeId: v.volumeId, name: v.name, sizeBytes: v.sizeBytes })),
    }, reply).catch((error: unknown) => {
      connection.fail("INTERNAL", (error as Error).message);
    });
  }

  /** How the lifecycle answers on `open`'s stream (batches and copy messages add their data). */
  private replyFor(open: OpenGroup, pullId?: number): PeerReply {
    const connection = open.connection;
    const secondary = open.secondary;
    return {
      answer: (answer) => {
        switch (answer.type) {
          case "ACK":
            this.sendAck(open, answer.batchId);
            if (pullId !== undefined) secondary.pulls.journaled(pullId);
            this.schedulePulls(secondary);
            return;
          case "COPY_ACK":
            connection.send({ type: "COPY_ACK", groupHandle: open.handle, chunkId: answer.chunkId });
            return;
          case "GROUP_STATE":
            assert(false, "GROUP_STATE answers OPEN_GROUP only");
        }
      },
      refuse: (effect) => {
        if (effect.resendWhenRoom) open.refusedForSpace = true;
        connection.send({
          type: "NACK", groupHandle: open.handle, code: effect.code, refType: effect.refType, refId: effect.refId,
          arrivedSequence: effect.reportArrived ? secondary.receiver.arrivedSequence : asSequence(0), text: effect.text,
        });
      },
      fail: (code, text) => {
        connection.fail(code, text);
      },
      gone: () => connection.closed,
    };
  }

  private async handleGroupMessage(open: OpenGroup, message: ReplMessage): Promise<void> {
    const secondary = open.secondary;
    switch (message.type) {
      case "COPY_DATA":
      case "COPY_ZEROES": {
        const reply: PeerReply = {
          ...this.replyFor(open),
          writeCopy: (effect) => secondary.writeCopyChunk(effect.volumeId, effect.offsetBytes, effect.lengthBytes, message.type === "COPY_DATA" ? message.data : undefined),
        };
        const lengthBytes = message.type === "COPY_DATA" ? message.data.length : message.lengthBytes;
        await this.host.deliver(secondary, { type: "copyChunk", message: message.type, chunkId: message.chunkId, primaryVolumeId: message.volumeId, offsetBytes: message.offsetBytes, lengthBytes }, reply);
        return;
      }
      case "COPY_DONE":
        await this.host.lifecycle(secondary, { type: "copyDone", chunkId: message.chunkId, consistentFromSequence: message.consistentFromSequence }, this.replyFor(open));
        return;
      default:
        return;
    }
  }

  /** Work on one group from one stream runs in arrival order. */
  private chain(connection: ReplConnection, open: OpenGroup, logger: Logger, work: () => Promise<void>): void {
    open.chain = open.chain.then(work).catch((error: unknown) => {
      logger.error({ event: "repl_group_error", group: open.secondary.name, err: error }, "replication message failed");
      open.secondary.lastError = (error as Error).message;
      connection.fail("INTERNAL", (error as Error).message);
    });
  }

  /**
   * One BATCH (pushed, or the answer to a PULL): taken within the journal's room and
   * ACKed once durable, or refused whole: NO_SPACE (nothing taken; the primary sends it
   * again when told there is room), REORDER_FULL, or BAD_RECORD (the stream is closed).
   */
  private async handleBatch(open: OpenGroup, message: ReplMessageOf<"BATCH">, pullId: number | undefined): Promise<void> {
    const secondary = open.secondary;
    let refusedBytesNeeded = 0;
    const base = this.replyFor(open, pullId);
    const reply: PeerReply = {
      ...base,
      refuse: (effect) => {
        if (pullId !== undefined) {
          if (effect.resendWhenRoom) secondary.pulls.refused(pullId, refusedBytesNeeded);
          else secondary.pulls.journaled(pullId);
        }
        base.refuse(effect);
      },
      receive: async () => {
        if (message.records.length === 0) return { type: "batchReceived", batchId: message.batchId, outcome: { ok: true, records: 0 } };
        const result = await secondary.receiveBatch(message.records);
        if (!result.ok && result.reason === "journal-full") refusedBytesNeeded = result.bytesNeeded ?? 0;
        return { type: "batchReceived", batchId: message.batchId, outcome: this.batchOutcome(secondary, result, message.records) };
      },
    };
    await this.host.deliver(secondary, { type: "batch", batchId: message.batchId }, reply);
  }

  private batchOutcome(secondary: SecondaryGroup, result: SecondaryReceiveResult, records: readonly JournalRecord[]): BatchOutcome {
    if (result.ok) return { ok: true, records: records.length };
    switch (result.reason) {
      case "stopped":
        return { ok: false, reason: "stopped", errno: result.errno, detail: result.detail };
      case "journal-full":
        return { ok: false, reason: "journal-full", detail: result.detail, roomText: secondary.spaceReason(this.host.frontierHolder(secondary)) ?? `journal full: ${result.detail}` };
      default:
        return { ok: false, reason: result.reason, detail: result.detail };
    }
  }

  /** ACK: the batch is durable (batchId 0: no batch, a progress report that also says "there is room again"). */
  private sendAck(open: OpenGroup, batchId: number): void {
    const secondary = open.secondary;
    open.connection.send({
      type: "ACK",
      groupHandle: open.handle,
      batchId,
      arrivedSequence: secondary.receiver.arrivedSequence,
      reflectedSequence: asSequence(Math.min(secondary.reflectedSequence, secondary.arrivedSequence)),
      arrivedWriteTimeUs: secondary.arrivedPosition.writeTimeUs,
      arrivedAcceptNumber: secondary.arrivedPosition.acceptNumber,
    });
  }

  /**
   * Reflection trimmed the group's journal (or it resumed after a stop): take what waited in
   * memory, then let the primary send again. Records taken from memory are reported with an
   * ACK of batchId 0 on the push streams: no batch's ACK carries them, and a primary whose
   * window is full of answered batches would otherwise never hear that they arrived.
   */
  /**
   * Records answered on the group's streams were dropped here before they arrived: its
   * streams close (with every other group they carry, which reconnect likewise), and the
   * primary's handshake rewinds to what arrived. One log line.
   */
  private closeStreamsOf(secondary: SecondaryGroup, why: string): void {
    const connections = new Set<ReplConnection>();
    for (const open of this.opensBySecondary.get(secondary) ?? []) if (!open.connection.closed) connections.add(open.connection);
    this.logger.warn({ event: "repl_group_rewind", group: secondary.name, streams: connections.size, reason: why }, "received records were dropped: closing the group's streams so the primary sends them again");
    for (const connection of connections) connection.close(`secondary asks for a resend: ${why}`);
  }

  private onJournalSpace(secondary: SecondaryGroup): void {
    const arrivedBefore = secondary.receiver.arrivedSequence;
    secondary.drainParked().then(() => {
      if (reflects(secondary.lifecycle)) this.host.kickReflector();
      this.schedulePulls(secondary);
      const progressed = secondary.receiver.arrivedSequence > arrivedBefore;
      for (const open of this.opensBySecondary.get(secondary) ?? []) {
        if (open.connection.closed) continue;
        if (open.transfer === "pull" ? open.refusedForSpace && !secondary.pulls.blockedOnRoom : open.refusedForSpace || progressed) {
          open.refusedForSpace = false;
          this.sendAck(open, 0);
        }
      }
    }, (error: unknown) => {
      this.logger.error({ event: "repl_group_error", group: secondary.name, err: error }, "journaling parked records failed");
      secondary.lastError = (error as Error).message;
      for (const open of this.opensBySecondary.get(secondary) ?? []) open.connection.fail("INTERNAL", (error as Error).message);
    });
  }

  /**
   * Reflection moved on: tell the primary (an ACK of batchId 0 on one of the group's streams),
   * so `pair wait` and its status learn it now, not with the next batch's ACK (which on an idle
   * pair is the next time advance, seconds away). At most one report per reflectReportIntervalMs
   * per group; a report during a refusal for space is left out (batchId 0 would also say "room").
   */
  reportReflected(secondary: SecondaryGroup): void {
    if (this.reportTimers.has(secondary)) {
      this.reportDue.add(secondary);
      return;
    }
    const reflected = Math.min(secondary.reflectedSequence, secondary.arrivedSequence);
    if (reflected <= (this.reportedReflected.get(secondary) ?? 0)) return;
    const open = [...(this.opensBySecondary.get(secondary) ?? [])].find((o) => !o.connection.closed && !o.refusedForSpace);
    if (open === undefined) return;
    this.sendAck(open, 0);
    this.reportedReflected.set(secondary, reflected);
    this.reportTimers.set(secondary, this.clock.setTimeout(() => {
      this.reportTimers.delete(secondary);
      if (this.reportDue.delete(secondary)) this.reportReflected(secondary);
    }, reflectReportIntervalMs));
  }

  private readonly reportTimers = new Map<SecondaryGroup, Timer>();
  private readonly reportDue = new Set<SecondaryGroup>();
  private readonly reportedReflected = new WeakMap<SecondaryGroup, number>();

  private forgetOpen(open: OpenGroup): void {
    const opens = this.opensBySecondary.get(open.secondary);
    opens?.delete(open);
    if (opens !== undefined && opens.size === 0) this.opensBySecondary.delete(open.secondary);
    if (open.transfer === "pull") {
      // Its open PULL is lost with it: ask for the same range on another stream.
      open.secondary.pulls.removeStream(open.connectionId);
      this.schedulePulls(open.secondary);
    }
  }

  /** Pull mode: send the PULLs the planner wants (core/pull-planner.ts). */
  schedulePulls(secondary: SecondaryGroup): void {
    if (!mayPull(secondary.lifecycle)) return;
    for (;;) {
      const request = secondary.pulls.next({
        needSequence: secondary.receiver.nextSequence,
        parked: secondary.receiver.parked,
        journalFreeBytes: secondary.journal.freeBytes,
        reorderBytes: secondary.receiver.reorderBytes,
      });
      if (request === undefined) break;
      let open: OpenGroup | undefined;
      for (const candidate of this.opensBySecondary.get(secondary) ?? []) {
        if (candidate.connectionId === request.stream && candidate.transfer === "pull" && !candidate.connection.closed) open = candidate;
      }
      if (open === undefined) {
        secondary.pulls.removeStream(request.stream); // gone meanwhile: the planner picks another
        continue;
      }
      open.connection.send({ type: "PULL", groupHandle: open.handle, fromSequence: asSequence(request.fromSequence), maxBytes: request.maxBytes });
      open.connection.expectAnswer();
    }
    if (secondary.pulls.blockedOnRoom) {
      secondary.noteSpaceWait(`no room to pull sequence ${secondary.receiver.nextSequence} on`);
      const opens = [...(this.opensBySecondary.get(secondary) ?? [])].filter((o) => o.transfer === "pull" && !o.connection.closed);
      const report = opens[0];
      if (report !== undefined && !opens.some((o) => o.refusedForSpace)) {
        report.refusedForSpace = true;
        const text = secondary.spaceReason(this.host.frontierHolder(secondary)) ?? "journal full";
        report.connection.send({ type: "NACK", groupHandle: report.handle, code: "NO_SPACE", refType: "BATCH", refId: 0, arrivedSequence: secondary.receiver.arrivedSequence, text: text.slice(0, 512) });
      }
    }
  }
}
