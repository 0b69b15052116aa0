// The primary's side of one pair as a pure machine (issue 7 item 1; docs/architecture.md,
// "Lifecycle machines"): operator commands, the secondary's handshake answers and refusals,
// the group's stops and resumes, timers and the saves of node.json come in as events; the
// new state and the effects the shell (src/primary/pair-link.ts) executes, in order, come
// out. The shell keeps the I/O and the data path (streams, batches, the copy's reads, answers
// to PULLs, the sender's windows in core/sender.ts) and decides nothing about the pair's life.
//
// States (persisted in node.json's `pair.state`; the rest is volatile, rebuilt at start):
//   copying --copy acknowledged, saved--> replicating
//   copying --handshake says the secondary finished the copy, saved--> replicating
//   copying | replicating --operator suspend, saved--> suspended --operator resume, saved--> copying | replicating
//   any but failed --fail(reason) (refused by the secondary, a broken handshake), saved--> failed
//   copying | replicating --FENCE from the secondary (a takeover), writer fenced, saved--> fenced, then FENCED answered
//   any but failed --NACK TAKEN_OVER at the handshake (the secondary took over), writer fenced, saved--> fenced (peer took over)
//   fenced --operator unfence, saved--> replicating | copying (writer unfenced after the save);
//          with --force when the peer took over, saved--> failed (the group writable on its own)
// and, while copying or replicating, the link: idle (streams closed: not started, the group
// stopped by its disk, the node stopping), lowering the copy start (a save, see `start`), or
// running (streams open or reconnecting on a backoff), with the secondary possibly out of
// space (NO_SPACE / INTERNAL: hold back, one probe batch after a backoff or when it reports
// room).
//
// Peer messages that do not fit the state are ignored or refused with a log line, never
// asserted. Assertions guard the shell's contract: completions (`persisted`, `timerFired`)
// only for a save or a timer the machine asked for, stream indexes in range.
import { log, type LogEffect } from "./log-effect.ts";
import { faultInjected } from "./faults.ts";
import { assert, unreachable } from "./assert.ts";
import type { TmErrorCode } from "./errors.ts";
import type { LinkDown } from "./pair-view.ts";
import { replPairSuspendedCloseText } from "../protocol/repl-protocol.ts";
import { replBatchBytesMax, replNoSpaceRetryMsMax, replNoSpaceRetryMsMin, replReconnectDelayMsMax, replReconnectDelayMsMin } from "./limits.ts";

export type PrimaryPairPhase = "copying" | "replicating" | "suspended" | "failed" | "fenced";

/** Why and since when a primary's group is fenced (docs/replication.md, "Fencing"): in node.json's pair record. */
export interface PairFence {
  readonly reason: string;
  /** Wall-clock ISO time the fence was decided (status: since). */
  readonly since: string;
  /** The last sequence the group had accepted when it was fenced (nothing is accepted past it while fenced). */
  readonly fencedSequence: number;
  /** Its last host write then (<= fencedSequence; later records are time advances): a takeover keeps at least this far. */
  readonly fencedWriteSequence: number;
  /** The secondary took over (it refused this node at the handshake): unfence needs --force. */
  readonly peerTookOver: boolean;
  /** The takeover's cut: the last sequence the secondary kept, once known (its TAKEN_OVER refusal says it). */
  readonly cutSequence: number | null;
  /** Host writes this node accepted after the cut (what a failback must reconcile), once counted. */
  readonly lateWrites: number | null;
  /** False when the journal no longer held every record after the cut: lateWrites is a lower bound. */
  readonly lateWritesExact: boolean;
}

/** The persisted lifecycle of a primary's pair: these fields of metadata's PairRecord. */
export interface PrimaryPairRecord {
  readonly state: PrimaryPairPhase;
  /** S0: the last sequence the initial copy covers; the stream starts at S0 + 1. */
  readonly copyStartSequence: number;
  /** The secondary is consistent once it reflected this far (set when the copy ends). */
  readonly consistentFromSequence: number;
  readonly copyDone: boolean;
  readonly reason: string | null;
  /** Set while the state is `fenced` (and kept after an unfence --force for the record); null otherwise. */
  readonly fence: PairFence | null;
}

/** A change to the pair's record in node.json. */
export interface PrimaryPairChange {
  readonly record: Partial<PrimaryPairRecord>;
  /** The record's acknowledged-sequence hint is lowered to this if it is above (never raised). */
  readonly ackedSequenceAtMost?: number;
}

export type PairTimer =
  /** Reconnect stream `stream` (its backoff ran out). */
  | { readonly kind: "reconnect"; readonly stream: number }
  /** The secondary is out of space: send one probe batch. */
  | { readonly kind: "noSpaceRetry" };

/** What a save is for: what happens once it is on disk, or when it fails. */
export type SavePurpose =
  | { readonly kind: "lowerCopyStart"; readonly ackedSequence: number }
  | { readonly kind: "copyDone"; readonly totalBytes: number; readonly dataBytes: number; readonly volumeBytes: number }
  | { readonly kind: "copyDoneAtHandshake"; readonly stream: number; readonly connectionId: number; readonly arrivedSequence: number }
  | { readonly kind: "suspend"; readonly commandId: number }
  | { readonly kind: "resume"; readonly commandId: number }
  | { readonly kind: "fail" }
  /** The secondary's FENCE: answered FENCED once `fenced` is on disk. */
  | { readonly kind: "fence"; readonly stream: number; readonly connectionId: number; readonly fenceId: number; readonly fencedSequence: number; readonly fencedWriteSequence: number }
  /** The secondary refused this node because it took over: once saved, the late writes are counted. */
  | { readonly kind: "peerTookOver"; readonly cutSequence: number; readonly lastSequence: number }
  | { readonly kind: "lateWrites" }
  | { readonly kind: "unfence"; readonly commandId: number; readonly alone: boolean };

export interface PendingSave {
  readonly saveId: number;
  readonly change: PrimaryPairChange;
  readonly purpose: SavePurpose;
}

/** The secondary refuses batches: its journal or disk is full (NO_SPACE), or an I/O error there (INTERNAL). */
export interface NoSpaceState {
  /** Tells one spell from the next (a probe counts only for the spell it was sent in). */
  readonly episode: number;
  /** Monotonic ms when it began. */
  readonly sinceMs: number;
  readonly code: "NO_SPACE" | "INTERNAL";
  /** The secondary's words (its journal use and what holds it, or the path and errno). */
  readonly text: string;
  /** ACKs of batches with an id at or above this one show it has room again. */
  readonly batchIdFloor: number;
  readonly retryMs: number;
  /** Push: nothing is sent until the retry timer fires or the secondary reports room. */
  readonly retryArmed: boolean;
  /** Push: the one batch sent to find out whether it has room now. */
  readonly probeBatchId: number | undefined;
  /**
   * Push: the most a probe carries. Halved after each refused probe, down to one record: a
   * secondary journal with less room than a batch (small, or holding what it cannot reflect
   * yet) must still take something, or the pair waits for ever for a batch that never fits.
   */
  readonly probeBytesMax: number;
}

export interface StreamLink {
  /** The next reconnect waits this long (doubles to replReconnectDelayMsMax; reset by a handshake). */
  readonly reconnectDelayMs: number;
  readonly reconnectArmed: boolean;
  /** Its connection finished the handshake (GROUP_STATE) and has not closed since. */
  readonly up: boolean;
}

export type PairActivity =
  | { readonly kind: "idle" }
  /** Saving a lowered copy start before the streams open (see `start`). */
  | { readonly kind: "lowering"; readonly saveId: number }
  | { readonly kind: "running" };

export interface PrimaryPairState {
  readonly group: string;
  readonly transfer: "push" | "pull";
  /** What node.json holds: changed only by a completed save (memory follows the save). */
  readonly record: PrimaryPairRecord;
  // ---- volatile (rebuilt at start) ----
  readonly activity: PairActivity;
  /** The group is stopped by a full disk or an I/O error. */
  readonly groupStopped: boolean;
  /** The streams were closed because the group stopped: they reopen when it resumes. */
  readonly restartOnGroupResume: boolean;
  /** The node is stopping: nothing starts again. */
  readonly closing: boolean;
  /** Failed in memory (the save of `failed` is in flight, or was refused): nothing starts again. */
  readonly failing: string | undefined;
  /** Saves asked for and not yet answered, oldest first. */
  readonly saves: readonly PendingSave[];
  readonly nextSaveId: number;
  readonly streams: readonly StreamLink[];
  readonly noSpace: NoSpaceState | undefined;
  readonly nextEpisode: number;
  /**
   * No stream is up since a stream closed that was not closed on purpose (since when, the last
   * error; while the pair runs status shows `disconnected`). One log line when the link goes
   * down and one when it is back, none per reconnect attempt. It outlives a suspend, a group
   * stop and a `pair set` (the link starts again, carrying it over): the link is back only
   * once a stream completes its handshake, and that is logged once (`pair_reconnected`), so a
   * `pair_disconnected` is never logged twice without a `pair_reconnected` between.
   */
  readonly linkDown: LinkDown | undefined;
}

/** The state at start: node.json's record, nothing volatile yet. */
export function initialPrimaryPair(init: {
  readonly group: string; readonly transfer: "push" | "pull"; readonly streams: number; readonly record: PrimaryPairRecord; readonly groupStopped: boolean;
  /** The link of the pair this one replaces (`pair set`) was down and logged so: it is still. */
  readonly linkDown?: LinkDown | undefined;
}): PrimaryPairState {
  assert(init.streams >= 1, "a pair has a stream");
  return {
    group: init.group, transfer: init.transfer, record: init.record,
    activity: { kind: "idle" }, groupStopped: init.groupStopped, restartOnGroupResume: false, closing: false, failing: undefined,
    saves: [], nextSaveId: 1,
    streams: Array.from({ length: init.streams }, () => ({ reconnectDelayMs: replReconnectDelayMsMin, reconnectArmed: false, up: false })),
    noSpace: undefined, nextEpisode: 1, linkDown: init.linkDown,
  };
}

/** The secondary's state of the group, as its GROUP_STATE answer to OPEN_GROUP says. */
export type SecondaryGroupPhase = "empty" | "copying" | "replicating";

export type PrimaryPairEvent =
  /** Start the pair (node start, pair created). `lastSequence`: the group's last sequence now. */
  | { readonly type: "start"; readonly lastSequence: number }
  /** The node stops: streams close, nothing starts again. */
  | { readonly type: "stop"; readonly reason: string }
  /** Operator commands; each is answered (answerOperator) or refused (refuseOperator) exactly once. */
  | { readonly type: "suspend"; readonly commandId: number }
  | { readonly type: "resume"; readonly commandId: number }
  | { readonly type: "groupStopped"; readonly reason: string }
  | { readonly type: "groupResumed"; readonly lastSequence: number }
  /** A save asked for by `persist` is on disk. `lastSequence`: the group's last sequence now. */
  | { readonly type: "persisted"; readonly saveId: number; readonly lastSequence: number }
  /** A save asked for by `persist` failed; node.json holds what it held before. */
  | { readonly type: "persistFailed"; readonly saveId: number; readonly lastSequence: number; readonly error: { readonly code: string | undefined; readonly message: string } }
  /**
   * A stream's connection closed (the link, the peer, a deadline, or this node). `wasReady`: it
   * carried batches. `planned`: closed to be opened again at once (the end of the initial copy),
   * not a loss of the link. `atIso`: the wall time now (status: down since).
   */
  | { readonly type: "streamClosed"; readonly stream: number; readonly reason: string; readonly wasReady: boolean; readonly planned: boolean; readonly atIso: string }
  | { readonly type: "timerFired"; readonly timer: PairTimer }
  /** The secondary's answer to OPEN_GROUP on a stream. `lastSequence`: the group's last sequence now. */
  | { readonly type: "groupState"; readonly stream: number; readonly connectionId: number; readonly state: SecondaryGroupPhase; readonly arrivedSequence: number; readonly lastSequence: number }
  /** The secondary acknowledged COPY_DONE: every block is copied. */
  | { readonly type: "copyAcknowledged"; readonly consistentFromSequence: number; readonly totalBytes: number; readonly dataBytes: number; readonly volumeBytes: number }
  /** NACK NO_SPACE or INTERNAL of a batch (the sender already counts it lost). `batchIdFloor`: the sender's next batch id. */
  | { readonly type: "batchRefused"; readonly batchId: number; readonly code: "NO_SPACE" | "INTERNAL"; readonly text: string; readonly batchIdFloor: number; readonly nowMs: number }
  /** An ACK (batchId 0: a report of progress or of room, answering no batch). */
  | { readonly type: "ackReceived"; readonly batchId: number; readonly nowMs: number }
  /** Push, while the secondary is out of space: the probe of spell `episode` went out as `batchId`. */
  | { readonly type: "probeSent"; readonly batchId: number; readonly episode: number }
  /** The pair cannot go on (the secondary refused it, a handshake that cannot be, a refused record). */
  | { readonly type: "fail"; readonly reason: string }
  /** FENCE from the secondary on a stream (a takeover with this node reachable). `lastSequence`: the group's last sequence now. */
  | { readonly type: "fence"; readonly stream: number; readonly connectionId: number; readonly fenceId: number; readonly text: string; readonly lastSequence: number; readonly lastWriteSequence: number; readonly atIso: string }
  /** NACK TAKEN_OVER of OPEN_GROUP: the secondary took over this pair at `cutSequence`. */
  | { readonly type: "peerTookOver"; readonly text: string; readonly cutSequence: number; readonly lastSequence: number; readonly lastWriteSequence: number; readonly atIso: string }
  /** The shell counted the host writes after the cut (countLateWrites). */
  | { readonly type: "lateWritesCounted"; readonly lateWrites: number; readonly exact: boolean }
  /** Operator: make a fenced group writable again; `force` when its peer took over. */
  | { readonly type: "unfence"; readonly commandId: number; readonly force: boolean };

export type OperatorRefusalCode = Extract<TmErrorCode, "TM_ERR_STATE" | "TM_ERR_NO_SPACE" | "TM_ERR_IO" | "TM_ERR_INTERNAL" | "TM_ERR_PEER_TOOK_OVER">;

/** Why every stream is closed and opened again while the pair runs. */
export type ReopenWhy = "copy-done" | "copy-done-not-saved";

/**
 * What the shell does, in order. Ordering rules:
 * - Persist, then act: a `persist` is followed in its list only by logs (and other saves);
 *   what depends on the save (answers, reopening, releasing the journal) comes with its
 *   `persisted` event. A state the disk does not hold is never announced: operator answers
 *   come after the save, and status reads the saved record.
 * - Close before save: suspend and fail close the streams before the save is asked for, so
 *   nothing is sent in a state that is being left.
 * - The journal is released (its retention hold dropped) only once `failed` is on disk.
 * - Fence before save, save before answer: `fenceWriter` comes before the save of `fenced`
 *   (nothing is accepted past the sequence the save records), and FENCED (`answerFence`) only
 *   with the `persisted` of that save. `unfenceWriter` only once the unfence is on disk.
 */
export type PrimaryPairEffect =
  /** Save `change` into the pair's record in node.json. Completion: persisted / persistFailed with `saveId`. */
  | { readonly type: "persist"; readonly saveId: number; readonly change: PrimaryPairChange }
  /** Connect every stream (HELLO, OPEN_GROUP). */
  | { readonly type: "openStreams" }
  | { readonly type: "connectStream"; readonly stream: number }
  /** Close every stream; what was in flight is resent after the next handshake; held writes are told. */
  | { readonly type: "closeStreams"; readonly reason: string }
  /** Close every open stream; each reconnects on its backoff (the pair keeps running). */
  | { readonly type: "reopenStreams"; readonly why: ReopenWhy }
  | { readonly type: "armTimer"; readonly timer: PairTimer; readonly delayMs: number }
  | { readonly type: "cancelTimer"; readonly timer: PairTimer }
  /** The sender starts over: the secondary holds everything through `ackedSequence`. */
  | { readonly type: "resetSender"; readonly ackedSequence: number }
  /** Run the initial copy on stream 0's connection `connectionId` (if it is still the current one). */
  | { readonly type: "startCopy"; readonly connectionId: number }
  /** The initial copy is over: its readers close, status shows its figures as the last copy. */
  | { readonly type: "copyFinished" }
  /** The stream's handshake ends: compare arrived with what is durable here, then send (if `connectionId` is still current). */
  | { readonly type: "streamReady"; readonly stream: number; readonly connectionId: number; readonly arrivedSequence: number }
  /** ERROR INTERNAL and close that connection (if still current). */
  | { readonly type: "failConnection"; readonly stream: number; readonly connectionId: number; readonly text: string }
  /** Send what the windows allow now. */
  | { readonly type: "pump" }
  /** Detach from the group's ingest: no retention hold, no slowdown, no records. */
  | { readonly type: "releaseJournal" }
  | { readonly type: "answerOperator"; readonly commandId: number }
  | { readonly type: "refuseOperator"; readonly commandId: number; readonly code: OperatorRefusalCode; readonly text: string }
  /** The group's writer refuses every host write and time advance from now on (EPERM), held ones included. */
  | { readonly type: "fenceWriter"; readonly reason: string }
  /** The group's writer accepts writes again. */
  | { readonly type: "unfenceWriter" }
  /** FENCED on the stream's connection `connectionId` (if still current). */
  | { readonly type: "answerFence"; readonly stream: number; readonly connectionId: number; readonly fenceId: number; readonly lastAcceptedSequence: number; readonly lastWriteSequence: number }
  /** NACK of the FENCE on the stream's connection `connectionId` (if still current). */
  | { readonly type: "refuseFence"; readonly stream: number; readonly connectionId: number; readonly fenceId: number; readonly text: string }
  /** Count the host writes after `cutSequence` through `lastSequence` in the journal; completion: lateWritesCounted. */
  | { readonly type: "countLateWrites"; readonly cutSequence: number; readonly lastSequence: number }
  | LogEffect;

export interface PrimaryPairStep {
  readonly state: PrimaryPairState;
  readonly effects: readonly PrimaryPairEffect[];
}

/** The reason a suspended pair's record carries. */
export const suspendedReason = "suspended by the operator; writes are kept in the journal and sent on resume";

// ---- queries the shell asks (no state change) ---------------------------------------

/** Streams are open or reconnecting. */
export function pairRunning(state: PrimaryPairState): boolean {
  return state.activity.kind === "running";
}

/**
 * The streams status counts as connected (`link.connectedStreams`,
 * tidemark_pair_link_streams_connected): those whose handshake completed (the secondary
 * answered OPEN_GROUP with GROUP_STATE) and that have not closed since. A TCP connection to a
 * peer that does not answer (stopped, stuck, not a tidemark node) does not count, nor does one
 * that went silent (it closes after replPeerTimeoutMs). So 0 whenever the state is
 * `disconnected`, and at least 1 while a stream carries the pair.
 */
export function connectedStreams(state: PrimaryPairState): number {
  return pairRunning(state) ? state.streams.filter((link) => link.up).length : 0;
}

/** An idle group may send a time advance now (the sender must be connected too). */
export function timeAdvanceAllowed(state: PrimaryPairState): boolean {
  return state.activity.kind === "running" && state.record.state === "replicating" && !state.saves.some((save) => save.purpose.kind === "fence");
}

/** Why the group must refuse writes at start (node.json says fenced), else undefined. */
export function fencedReason(state: PrimaryPairState): string | undefined {
  return state.record.state === "fenced" ? (state.record.fence?.reason ?? "fenced") : undefined;
}

/** Whether the pair holds the group's journal (a failed pair, once saved, holds nothing). */
export function holdsJournal(state: PrimaryPairState): boolean {
  return state.record.state !== "failed";
}

/**
 * Push: whether a batch may go now, and the most it may carry. While the secondary is out
 * of space only one probe goes, once the backoff ran out or it reported room.
 */
export function pushAllowance(state: PrimaryPairState): { readonly send: false } | { readonly send: true; readonly bytesMax: number | undefined; readonly probeEpisode: number | undefined } {
  const noSpace = state.noSpace;
  if (noSpace === undefined) return { send: true, bytesMax: undefined, probeEpisode: undefined };
  if (noSpace.retryArmed || noSpace.probeBatchId !== undefined) return { send: false };
  return { send: true, bytesMax: noSpace.probeBytesMax, probeEpisode: noSpace.episode };
}

/** node.json's record after `change` (what the shell's save writes). */
export function applyPrimaryPairChange(record: PrimaryPairRecord, change: PrimaryPairChange): PrimaryPairRecord {
  return { ...record, ...change.record };
}

// ---- the step ---------------------------------------------------------------------

export function stepPrimaryPair(state: PrimaryPairState, event: PrimaryPairEvent): PrimaryPairStep {
  const out: PrimaryPairEffect[] = [];
  const next = step(state, event, out);
  return { state: next, effects: out };
}

function step(s: PrimaryPairState, e: PrimaryPairEvent, out: PrimaryPairEffect[]): PrimaryPairState {
  switch (e.type) {
    case "start":
      return tryStart(s, e.lastSequence, out);
    case "stop":
      return { ...stopLinks(s, e.reason, out), closing: true, restartOnGroupResume: false };
    case "suspend":
      return onSuspend(s, e.commandId, out);
    case "resume":
      return onResume(s, e.commandId, out);
    case "groupStopped":
      return onGroupStopped(s, e.reason, out);
    case "groupResumed": {
      const resumed = { ...s, groupStopped: false, restartOnGroupResume: false };
      return s.restartOnGroupResume ? tryStart(resumed, e.lastSequence, out) : resumed;
    }
    case "persisted":
      return onPersisted(s, e.saveId, e.lastSequence, out);
    case "persistFailed":
      return onPersistFailed(s, e.saveId, e.lastSequence, e.error, out);
    case "streamClosed":
      return onStreamClosed(s, e, out);
    case "timerFired":
      return onTimer(s, e.timer, out);
    case "groupState":
      return onGroupState(s, e, out);
    case "copyAcknowledged": {
      if (s.activity.kind !== "running") return s; // a late answer on a stream being closed
      return persist(s, { record: { state: s.record.state === "fenced" ? "fenced" : "replicating", copyDone: true, consistentFromSequence: e.consistentFromSequence, ...(s.record.state === "fenced" ? {} : { reason: null }) } },
        { kind: "copyDone", totalBytes: e.totalBytes, dataBytes: e.dataBytes, volumeBytes: e.volumeBytes }, out);
    }
    case "batchRefused":
      return onBatchRefused(s, e, out);
    case "ackReceived":
      return onAck(s, e.batchId, e.nowMs, out);
    case "probeSent": {
      const noSpace = s.noSpace;
      if (noSpace?.episode !== e.episode) return s; // the spell ended while the probe was read
      return { ...s, noSpace: { ...noSpace, probeBatchId: e.batchId } };
    }
    case "fail":
      return onFail(s, e.reason, out);
    case "fence":
      return onFence(s, e, out);
    case "peerTookOver":
      return onPeerTookOver(s, e, out);
    case "lateWritesCounted": {
      const fence = s.record.fence;
      if (s.record.state !== "fenced" || fence === null) return s; // unfenced meanwhile
      out.push(log("error", "stale_primary_late_writes", { group: s.group, cutSequence: fence.cutSequence, lateWrites: e.lateWrites, exact: e.exact },
        `the secondary took over at sequence ${String(fence.cutSequence)}; this node accepted ${e.exact ? "" : "at least "}${e.lateWrites} host writes after that cut (a failback must reconcile them)`));
      return persist(s, { record: { fence: { ...fence, lateWrites: e.lateWrites, lateWritesExact: e.exact } } }, { kind: "lateWrites" }, out);
    }
    case "unfence":
      return onUnfence(s, e.commandId, e.force, out);
    default:
      return unreachable(e, "primary pair event");
  }
}

/** Whether the pair should run: copying or replicating on disk, and nothing on its way that stops it. */
function wantsRunning(s: PrimaryPairState): boolean {
  // A fenced pair keeps sending what it accepted before the fence (the takeover waits for it),
  // and learns at its next handshake whether the secondary took over; once it knows, it stops.
  const fencedRunning = s.record.state === "fenced" && s.record.fence?.peerTookOver !== true;
  return (s.record.state === "copying" || s.record.state === "replicating" || fencedRunning) && !s.closing && s.failing === undefined &&
    !s.saves.some((save) => save.purpose.kind === "suspend" || save.purpose.kind === "fail" || save.purpose.kind === "peerTookOver");
}

/**
 * Opens the streams if the pair should run. The copy covers everything through S0, and the
 * stream starts after it. If the journal holds less than S0 now (a power loss or a failed
 * fdatasync lost records not yet durable, and their sequences will be given again), waiting
 * for S0 to be applied could wait for ever, and the records given those sequences would be
 * neither copied nor sent: the copy, not done yet, starts over from what the journal holds,
 * saved first. Found by the whole-node simulation.
 */
function tryStart(s: PrimaryPairState, lastSequence: number, out: PrimaryPairEffect[]): PrimaryPairState {
  if (s.activity.kind !== "idle" || !wantsRunning(s)) return s;
  if (s.groupStopped) return { ...s, restartOnGroupResume: true };
  if (!s.record.copyDone && s.record.copyStartSequence > lastSequence) {
    out.push(log("warn", "copy_start_lowered", { group: s.group, from: s.record.copyStartSequence, to: lastSequence },
      "the journal holds less than the initial copy's start point: the copy starts over from what it holds"));
    const saveId = s.nextSaveId;
    const saved = persist(s, { record: { copyStartSequence: lastSequence }, ackedSequenceAtMost: lastSequence }, { kind: "lowerCopyStart", ackedSequence: lastSequence }, out);
    return { ...saved, activity: { kind: "lowering", saveId } };
  }
  out.push({ type: "openStreams" });
  return { ...s, activity: { kind: "running" }, restartOnGroupResume: false };
}

/** Closes every stream and cancels the pair's timers; the pair is idle (a link down stays down until a stream is back: see `linkDown`). */
function stopLinks(s: PrimaryPairState, reason: string, out: PrimaryPairEffect[]): PrimaryPairState {
  for (const [stream, link] of s.streams.entries()) {
    if (link.reconnectArmed) out.push({ type: "cancelTimer", timer: { kind: "reconnect", stream } });
  }
  if (s.noSpace?.retryArmed === true) out.push({ type: "cancelTimer", timer: { kind: "noSpaceRetry" } });
  out.push({ type: "closeStreams", reason });
  return {
    ...s, activity: { kind: "idle" }, noSpace: undefined,
    streams: s.streams.map((link) => (link.reconnectArmed || link.up ? { ...link, reconnectArmed: false, up: false } : link)),
  };
}

function persist(s: PrimaryPairState, change: PrimaryPairChange, purpose: SavePurpose, out: PrimaryPairEffect[]): PrimaryPairState {
  const saveId = s.nextSaveId;
  out.push({ type: "persist", saveId, change });
  return { ...s, saves: [...s.saves, { saveId, change, purpose }], nextSaveId: saveId + 1 };
}

function onSuspend(s: PrimaryPairState, commandId: number, out: PrimaryPairEffect[]): PrimaryPairState {
  if (s.record.state === "suspended") {
    out.push({ type: "answerOperator", commandId });
    return s;
  }
  if (s.record.state === "failed" || s.failing !== undefined) {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} has failed (${s.record.reason ?? s.failing ?? "unknown"}); it cannot be suspended` });
    return s;
  }
  if (s.record.state === "fenced") {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} is fenced (${s.record.fence?.reason ?? "fenced"}); run pair unfence ${s.group} first` });
    return s;
  }
  const stopped = { ...stopLinks(s, replPairSuspendedCloseText, out), restartOnGroupResume: false };
  return persist(stopped, { record: { state: "suspended", reason: suspendedReason } }, { kind: "suspend", commandId }, out);
}

function onResume(s: PrimaryPairState, commandId: number, out: PrimaryPairEffect[]): PrimaryPairState {
  // Resuming a pair that runs changes nothing and succeeds (issue 9: idempotent where
  // repeating is natural), unless a suspend is being saved: that one ends suspended.
  if ((s.record.state === "replicating" || s.record.state === "copying") && s.failing === undefined) {
    if (s.saves.some((p) => p.purpose.kind === "suspend")) {
      out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} is being suspended right now; resume it once that is done` });
    } else {
      out.push({ type: "answerOperator", commandId });
    }
    return s;
  }
  if (s.record.state !== "suspended") {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} is ${s.record.state}, not suspended` });
    return s;
  }
  return persist(s, { record: { state: s.record.copyDone ? "replicating" : "copying", reason: null } }, { kind: "resume", commandId }, out);
}

/**
 * The group stopped (I/O error, full disk). Nothing is sent: records not yet durable may
 * never have reached the disk, and their sequences are given again after the resume. The
 * streams close and reopen when it resumes; the handshake says where to go on from.
 */
function onGroupStopped(s: PrimaryPairState, reason: string, out: PrimaryPairEffect[]): PrimaryPairState {
  const stopped = { ...s, groupStopped: true };
  switch (s.activity.kind) {
    case "running":
      return { ...stopLinks(stopped, `group stopped: ${reason}`, out), restartOnGroupResume: true };
    case "lowering":
      // The lowered start is saved anyway; the streams open once the group resumes (and the start is checked again).
      return { ...stopped, activity: { kind: "idle" }, restartOnGroupResume: true };
    case "idle":
      return stopped;
    default:
      return unreachable(s.activity, "pair activity");
  }
}

function takeSave(s: PrimaryPairState, saveId: number): { readonly save: PendingSave; readonly rest: readonly PendingSave[] } {
  const save = s.saves.find((p) => p.saveId === saveId);
  assert(save !== undefined, () => `save ${saveId} of pair ${s.group} was asked for and not answered yet`);
  return { save, rest: s.saves.filter((p) => p !== save) };
}

function onPersisted(s: PrimaryPairState, saveId: number, lastSequence: number, out: PrimaryPairEffect[]): PrimaryPairState {
  const { save, rest } = takeSave(s, saveId);
  const saved: PrimaryPairState = { ...s, saves: rest, record: applyPrimaryPairChange(s.record, save.change) };
  const purpose = save.purpose;
  switch (purpose.kind) {
    case "lowerCopyStart": {
      out.push({ type: "resetSender", ackedSequence: purpose.ackedSequence });
      if (saved.activity.kind !== "lowering" || saved.activity.saveId !== saveId) return saved;
      return tryStart({ ...saved, activity: { kind: "idle" } }, lastSequence, out);
    }
    case "copyDone":
      out.push(log("info", "copy_done", { group: s.group, bytes: purpose.totalBytes, dataBytes: purpose.dataBytes, volumeBytes: purpose.volumeBytes, consistentFromSequence: saved.record.consistentFromSequence }, "initial copy done"));
      out.push({ type: "copyFinished" });
      // Every stream reopens its group: the secondary now answers `replicating`.
      if (saved.activity.kind === "running") out.push({ type: "reopenStreams", why: "copy-done" });
      return saved;
    case "copyDoneAtHandshake":
      if (saved.activity.kind === "running") out.push({ type: "streamReady", stream: purpose.stream, connectionId: purpose.connectionId, arrivedSequence: purpose.arrivedSequence });
      return saved;
    case "suspend":
      out.push({ type: "answerOperator", commandId: purpose.commandId });
      return saved;
    case "resume": {
      const started = tryStart(saved, lastSequence, out);
      out.push({ type: "answerOperator", commandId: purpose.commandId });
      return started;
    }
    case "fail":
      // The failed state is on disk: the pair no longer holds the journal.
      out.push({ type: "releaseJournal" });
      return saved;
    case "fence":
      // `fenced` is on disk: only now may the secondary hear it (fault fence-after-answer answered before).
      if (!faultInjected("fence-after-answer")) {
        out.push({ type: "answerFence", stream: purpose.stream, connectionId: purpose.connectionId, fenceId: purpose.fenceId, lastAcceptedSequence: purpose.fencedSequence, lastWriteSequence: purpose.fencedWriteSequence });
      }
      return saved;
    case "peerTookOver":
      out.push({ type: "countLateWrites", cutSequence: purpose.cutSequence, lastSequence: purpose.lastSequence });
      return saved;
    case "lateWrites":
      return saved;
    case "unfence": {
      out.push({ type: "unfenceWriter" });
      if (purpose.alone) {
        out.push({ type: "releaseJournal" });
        out.push({ type: "answerOperator", commandId: purpose.commandId });
        return saved;
      }
      const started = tryStart(saved, lastSequence, out);
      out.push({ type: "answerOperator", commandId: purpose.commandId });
      return started;
    }
    default:
      return unreachable(purpose, "save purpose");
  }
}

function onPersistFailed(s: PrimaryPairState, saveId: number, lastSequence: number, error: { readonly code: string | undefined; readonly message: string }, out: PrimaryPairEffect[]): PrimaryPairState {
  const { save, rest } = takeSave(s, saveId);
  const left: PrimaryPairState = { ...s, saves: rest };
  const purpose = save.purpose;
  const notSaved = (what: string, message: string): LogEffect =>
    log("error", "pair_state_not_saved", { group: s.group, what, error: error.message }, message);
  switch (purpose.kind) {
    case "lowerCopyStart":
      out.push(notSaved("lowered copy start", "could not save the lowered copy start; retrying at the next start"));
      if (left.activity.kind === "lowering" && left.activity.saveId === saveId) return { ...left, activity: { kind: "idle" } };
      return left;
    case "copyDone":
      // The reopened stream finds the secondary replicating and saves this again.
      out.push(notSaved("end of the initial copy", "could not save the end of the initial copy; retrying over a new stream"));
      out.push({ type: "copyFinished" });
      if (left.activity.kind === "running") out.push({ type: "reopenStreams", why: "copy-done-not-saved" });
      return left;
    case "copyDoneAtHandshake":
      out.push({ type: "failConnection", stream: purpose.stream, connectionId: purpose.connectionId, text: `could not save the pair state: ${error.message}` });
      return left;
    case "suspend": {
      out.push(refusal(purpose.commandId, `could not save the suspension of the pair of ${s.group}`, error));
      // node.json still says the pair runs: so does memory.
      return tryStart(left, lastSequence, out);
    }
    case "resume":
      out.push(refusal(purpose.commandId, `could not save the resumption of the pair of ${s.group}`, error));
      return left;
    case "fail":
      // Not saved (a full disk): failed in memory, so nothing restarts it; the handshake refuses it again after a restart.
      out.push(notSaved("failed pair state", "could not save the failed pair state"));
      return left;
    case "fence":
      // node.json does not say fenced: the secondary hears no FENCED (its takeover is refused) and the group is writable again.
      out.push(notSaved("fence", "could not save the fence; the takeover that asked for it is refused"));
      out.push({ type: "refuseFence", stream: purpose.stream, connectionId: purpose.connectionId, fenceId: purpose.fenceId, text: `could not save the fence: ${error.message}` });
      if (left.record.state !== "fenced" && !left.saves.some((p) => p.purpose.kind === "fence" || p.purpose.kind === "peerTookOver")) out.push({ type: "unfenceWriter" });
      return left;
    case "peerTookOver":
      // Fenced in memory (the writer refuses writes); the next handshake is refused again and saves it then.
      out.push(notSaved("fence after the secondary took over", "could not save the fence; the group stays read-only and tries again at the next handshake"));
      return tryStart(left, lastSequence, out);
    case "lateWrites":
      out.push(notSaved("late writes count", "could not save the count of late writes"));
      return left;
    case "unfence":
      out.push(refusal(purpose.commandId, `could not save the unfencing of ${s.group}`, error));
      return left;
    default:
      return unreachable(purpose, "save purpose");
  }
}

/** A refused command whose save failed: the disk's words, with the code the management API gives a full disk or an I/O error. */
function refusal(commandId: number, what: string, error: { readonly code: string | undefined; readonly message: string }): PrimaryPairEffect {
  const code: OperatorRefusalCode = error.code === "ENOSPC" || error.code === "EDQUOT" ? "TM_ERR_NO_SPACE"
    : error.code === "EIO" || error.code === "EROFS" || error.code === "EFBIG" ? "TM_ERR_IO" : "TM_ERR_INTERNAL";
  return { type: "refuseOperator", commandId, code, text: `${what}: ${error.message}; nothing changed, try again` };
}

/**
 * A stream closed: it reconnects on its backoff. When no stream is up any more and this was
 * not a planned reopen, the link is down: logged once, with since when and why; the retries
 * that follow log nothing (their errors show in status as the last error).
 */
function onStreamClosed(s: PrimaryPairState, e: Extract<PrimaryPairEvent, { type: "streamClosed" }>, out: PrimaryPairEffect[]): PrimaryPairState {
  const { stream, reason } = e;
  const link = s.streams[stream];
  assert(link !== undefined, () => `stream ${stream} of pair ${s.group} exists`);
  assert(!link.reconnectArmed, "a stream with a connection has no reconnect armed");
  let next = link.up ? withStream(s, stream, { ...link, up: false }) : s;
  // A probe lost with the stream is sent again with the other lost batches.
  if (e.wasReady && next.noSpace !== undefined) next = { ...next, noSpace: { ...next.noSpace, probeBatchId: undefined } };
  if (next.activity.kind !== "running") return next;
  if (!e.planned && !next.streams.some((l) => l.up)) {
    if (next.linkDown === undefined) {
      out.push(log("warn", "pair_disconnected", { group: s.group, reason }, "replication link down: no stream to the secondary; retrying"));
      next = { ...next, linkDown: { sinceIso: e.atIso, lastError: reason } };
    } else {
      next = { ...next, linkDown: { ...next.linkDown, lastError: reason } };
    }
  }
  out.push({ type: "armTimer", timer: { kind: "reconnect", stream }, delayMs: link.reconnectDelayMs });
  return withStream(next, stream, { up: false, reconnectArmed: true, reconnectDelayMs: Math.min(replReconnectDelayMsMax, link.reconnectDelayMs * 2) });
}

function withStream(s: PrimaryPairState, stream: number, link: StreamLink): PrimaryPairState {
  return { ...s, streams: s.streams.map((l, i) => (i === stream ? link : l)) };
}

function onTimer(s: PrimaryPairState, timer: PairTimer, out: PrimaryPairEffect[]): PrimaryPairState {
  switch (timer.kind) {
    case "reconnect": {
      const link = s.streams[timer.stream];
      assert(link?.reconnectArmed === true, () => `the reconnect timer of stream ${timer.stream} of pair ${s.group} was armed`);
      const next = withStream(s, timer.stream, { ...link, reconnectArmed: false });
      if (next.activity.kind === "running") out.push({ type: "connectStream", stream: timer.stream });
      return next;
    }
    case "noSpaceRetry": {
      const noSpace = s.noSpace;
      assert(noSpace?.retryArmed === true, () => `the no-space retry timer of pair ${s.group} was armed`);
      out.push({ type: "pump" });
      return { ...s, noSpace: { ...noSpace, retryArmed: false } };
    }
    default:
      return unreachable(timer, "pair timer");
  }
}

function onGroupState(s: PrimaryPairState, e: Extract<PrimaryPairEvent, { type: "groupState" }>, out: PrimaryPairEffect[]): PrimaryPairState {
  const link = s.streams[e.stream];
  assert(link !== undefined, () => `stream ${e.stream} of pair ${s.group} exists`);
  if (s.activity.kind !== "running") return s; // an answer on a stream being closed
  let next = withStream(s, e.stream, { ...link, reconnectDelayMs: replReconnectDelayMsMin, up: true });
  if (next.linkDown !== undefined) {
    out.push(log("info", "pair_reconnected", { group: s.group, downSince: next.linkDown.sinceIso }, "replication link back"));
    next = { ...next, linkDown: undefined };
  }
  if (e.state === "replicating" && !next.record.copyDone) {
    // The secondary finished the copy but this node crashed before recording it: record it, then send.
    const consistentFromSequence = Math.max(e.lastSequence, next.record.copyStartSequence);
    return persist(next, { record: { state: next.record.state === "fenced" ? "fenced" : "replicating", copyDone: true, consistentFromSequence, ...(next.record.state === "fenced" ? {} : { reason: null }) } },
      { kind: "copyDoneAtHandshake", stream: e.stream, connectionId: e.connectionId, arrivedSequence: e.arrivedSequence }, out);
  }
  if (e.state === "replicating") out.push({ type: "streamReady", stream: e.stream, connectionId: e.connectionId, arrivedSequence: e.arrivedSequence });
  else if (e.stream === 0) out.push({ type: "startCopy", connectionId: e.connectionId });
  // Other streams of a copying pair wait: they reopen when the copy is done.
  return next;
}

/**
 * NACK NO_SPACE or INTERNAL for a batch: the secondary took none of it. The batch is sent
 * again (first); meanwhile the pair holds back: one batch after a backoff, or at once when
 * the secondary reports room (ACK batchId 0). One log line per spell, not per batch.
 */
function onBatchRefused(s: PrimaryPairState, e: Extract<PrimaryPairEvent, { type: "batchRefused" }>, out: PrimaryPairEffect[]): PrimaryPairState {
  if (s.activity.kind !== "running") return s; // a late answer on a stream being closed
  let noSpace = s.noSpace;
  let nextEpisode = s.nextEpisode;
  if (noSpace === undefined) {
    noSpace = { episode: nextEpisode, sinceMs: e.nowMs, code: e.code, text: e.text, batchIdFloor: e.batchIdFloor, retryMs: replNoSpaceRetryMsMin, retryArmed: false, probeBatchId: undefined, probeBytesMax: replBatchBytesMax / 2 };
    nextEpisode += 1;
    out.push(log("warn", "secondary_refuses_records", { group: s.group, code: e.code, reason: e.text }, "the secondary cannot store records now; they wait in this node's journal"));
  } else {
    const probeRefused = e.batchId === noSpace.probeBatchId;
    noSpace = {
      ...noSpace, code: e.code, text: e.text,
      retryMs: probeRefused ? Math.min(replNoSpaceRetryMsMax, noSpace.retryMs * 2) : noSpace.retryMs,
      probeBytesMax: probeRefused ? Math.max(1, Math.floor(noSpace.probeBytesMax / 2)) : noSpace.probeBytesMax,
    };
  }
  if (e.batchId === noSpace.probeBatchId) noSpace = { ...noSpace, probeBatchId: undefined };
  // Pull: the secondary asks again itself.
  if (s.transfer === "push" && !noSpace.retryArmed && noSpace.probeBatchId === undefined) {
    out.push({ type: "armTimer", timer: { kind: "noSpaceRetry" }, delayMs: noSpace.retryMs });
    noSpace = { ...noSpace, retryArmed: true };
  }
  return { ...s, noSpace, nextEpisode };
}

/** An ACK: one for a batch sent after the refusals began means the secondary has room again; batchId 0 says so outright. */
function onAck(s: PrimaryPairState, batchId: number, nowMs: number, out: PrimaryPairEffect[]): PrimaryPairState {
  const noSpace = s.noSpace;
  if (noSpace === undefined) return s;
  const storingAgain = (): LogEffect => log("info", "secondary_storing_again", { group: s.group, waitedMs: Math.round(nowMs - noSpace.sinceMs) }, "the secondary stores records again");
  if (batchId === 0 && s.transfer === "pull") {
    // The secondary paces a pull itself: room again is all there is to know.
    out.push(storingAgain());
    return { ...s, noSpace: undefined };
  }
  if (batchId === 0) {
    // Send one batch now to find out (its ACK ends the spell, a NO_SPACE backs off again).
    if (noSpace.retryArmed) out.push({ type: "cancelTimer", timer: { kind: "noSpaceRetry" } });
    return { ...s, noSpace: { ...noSpace, retryArmed: false, retryMs: replNoSpaceRetryMsMin } };
  }
  if (batchId < noSpace.batchIdFloor) return s;
  if (noSpace.retryArmed) out.push({ type: "cancelTimer", timer: { kind: "noSpaceRetry" } });
  out.push(storingAgain());
  return { ...s, noSpace: undefined };
}

function onFail(s: PrimaryPairState, reason: string, out: PrimaryPairEffect[]): PrimaryPairState {
  if (s.record.state === "failed" || s.failing !== undefined) return s;
  out.push(log("error", "pair_failed", { group: s.group, reason }, "pair failed"));
  const stopped = { ...stopLinks(s, reason, out), failing: reason, restartOnGroupResume: false };
  return persist(stopped, { record: { state: "failed", reason } }, { kind: "fail" }, out);
}


/**
 * FENCE from the secondary (its takeover, with this node reachable): the writer refuses
 * writes first, so the sequence it records is final; `fenced` is saved; FENCED answers with
 * that sequence once it is on disk. The streams stay open: what was accepted before the fence
 * still has to reach the secondary (its takeover waits for it). Already fenced: answered at once.
 */
function onFence(s: PrimaryPairState, e: Extract<PrimaryPairEvent, { type: "fence" }>, out: PrimaryPairEffect[]): PrimaryPairState {
  const fence = s.record.fence;
  if (s.record.state === "fenced" && fence !== null) {
    out.push({ type: "answerFence", stream: e.stream, connectionId: e.connectionId, fenceId: e.fenceId, lastAcceptedSequence: fence.fencedSequence, lastWriteSequence: fence.fencedWriteSequence });
    return s;
  }
  if ((s.record.state !== "copying" && s.record.state !== "replicating") || s.failing !== undefined || s.activity.kind !== "running") {
    out.push(log("warn", "fence_refused", { group: s.group, state: s.record.state }, "FENCE refused: the pair is not running"));
    out.push({ type: "refuseFence", stream: e.stream, connectionId: e.connectionId, fenceId: e.fenceId, text: `pair of ${s.group} is ${s.failing === undefined ? s.record.state : "failing"}; it cannot be fenced now` });
    return s;
  }
  const pending = s.saves.find((p) => p.purpose.kind === "fence");
  const fencedSequence = pending?.purpose.kind === "fence" ? pending.purpose.fencedSequence : e.lastSequence;
  const fencedWriteSequence = Math.min(fencedSequence, pending?.purpose.kind === "fence" ? pending.purpose.fencedWriteSequence : e.lastWriteSequence);
  const reason = `fenced by a takeover on the secondary (${e.text === "" ? "no reason given" : e.text}) at sequence ${fencedSequence}`;
  out.push(log("warn", "pair_fenced", { group: s.group, fencedSequence, reason: e.text }, "the secondary fences this group for a takeover: writes are refused from now on"));
  out.push({ type: "fenceWriter", reason });
  if (faultInjected("fence-after-answer")) {
    // The historical fault: the answer goes out before the save is on disk.
    out.push({ type: "answerFence", stream: e.stream, connectionId: e.connectionId, fenceId: e.fenceId, lastAcceptedSequence: fencedSequence, lastWriteSequence: fencedWriteSequence });
  }
  const record: PairFence = { reason, since: e.atIso, fencedSequence, fencedWriteSequence, peerTookOver: false, cutSequence: null, lateWrites: null, lateWritesExact: true };
  return persist(s, { record: { state: "fenced", fence: record } }, { kind: "fence", stream: e.stream, connectionId: e.connectionId, fenceId: e.fenceId, fencedSequence, fencedWriteSequence }, out);
}

/**
 * The secondary refused this node's OPEN_GROUP because it took the pair over (a forced
 * takeover while this node was away, or the end of a planned one): this node fences itself
 * (writer first, then saved) and counts the host writes it accepted after the cut. The
 * streams close for good: nothing more is ever replicated from here over the new data.
 */
function onPeerTookOver(s: PrimaryPairState, e: Extract<PrimaryPairEvent, { type: "peerTookOver" }>, out: PrimaryPairEffect[]): PrimaryPairState {
  if (faultInjected("stale-primary-resumes")) return onFail(s, `secondary refused the pair: ${e.text}`, out);
  const fence = s.record.fence;
  if (s.record.state === "fenced" && fence?.peerTookOver === true) return s.activity.kind === "running" ? stopLinks(s, "the secondary took over", out) : s;
  if (s.saves.some((p) => p.purpose.kind === "peerTookOver")) return s;
  if (s.record.state === "failed" || s.failing !== undefined) return s;
  const fencedSequence = fence?.fencedSequence ?? e.lastSequence;
  const reason = `the secondary took over this pair (it kept sequences through ${e.cutSequence}): this group is fenced, its writes are refused; ` +
    `pair unfence ${s.group} --force makes it writable on its own`;
  out.push(log("error", "stale_primary_fenced", { group: s.group, cutSequence: e.cutSequence, lastSequence: e.lastSequence, refusal: e.text },
    "the secondary refused this node at the handshake: it took over; this group fences itself"));
  out.push({ type: "fenceWriter", reason });
  const stopped = s.activity.kind === "idle" ? s : stopLinks(s, "the secondary took over", out);
  const fencedWriteSequence = fence?.fencedWriteSequence ?? Math.min(fencedSequence, e.lastWriteSequence);
  const record: PairFence = { reason, since: fence?.since ?? e.atIso, fencedSequence, fencedWriteSequence, peerTookOver: true, cutSequence: e.cutSequence, lateWrites: null, lateWritesExact: true };
  return persist({ ...stopped, restartOnGroupResume: false }, { record: { state: "fenced", fence: record, reason } }, { kind: "peerTookOver", cutSequence: e.cutSequence, lastSequence: e.lastSequence }, out);
}

/**
 * The operator unfences: a pair whose peer did not take over goes back to replicating (or
 * copying); one whose peer took over only with --force, and then it ends (`failed`, the
 * group writable on its own: nothing it takes is replicated). The writer accepts writes
 * once the change is on disk.
 */
function onUnfence(s: PrimaryPairState, commandId: number, force: boolean, out: PrimaryPairEffect[]): PrimaryPairState {
  const fence = s.record.fence;
  if (s.record.state !== "fenced" || fence === null) {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} is ${s.record.state}, not fenced` });
    return s;
  }
  if (s.saves.some((p) => p.purpose.kind === "unfence")) {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_STATE", text: `pair of ${s.group} is being unfenced already` });
    return s;
  }
  if (fence.peerTookOver && !force) {
    out.push({ type: "refuseOperator", commandId, code: "TM_ERR_PEER_TOOK_OVER",
      text: `the secondary took over ${s.group} (it kept sequences through ${String(fence.cutSequence)}); unfencing makes this copy writable on its own, and nothing written to it is replicated. To do that, run pair unfence ${s.group} --force` });
    return s;
  }
  if (fence.peerTookOver) {
    const reason = `unfenced with --force after the secondary took over (cut at sequence ${String(fence.cutSequence)}): writable on its own, no longer replicated; pair delete ends the pair`;
    out.push(log("warn", "pair_unfenced", { group: s.group, force: true, peerTookOver: true }, "fenced group unfenced with --force: writable on its own"));
    return persist(s, { record: { state: "failed", reason } }, { kind: "unfence", commandId, alone: true }, out);
  }
  out.push(log("warn", "pair_unfenced", { group: s.group, force, peerTookOver: false }, "fenced group unfenced: writable and replicating again"));
  return persist(s, { record: { state: s.record.copyDone ? "replicating" : "copying", fence: null, reason: null } }, { kind: "unfence", commandId, alone: false }, out);
}
