// A secondary group's lifecycle as a pure machine (issue 7 item 1; the shape is
// ../../docs/architecture.md's "Lifecycle machines"): the primary's messages, the group's
// disk and journal, the reflector's checkpoints and the operator's takeover come in as
// events; the new state and the effects the shell executes, in order, come out. The shell
// (src/secondary/: SecondaryGroup, ReplServer, SecondaryRole) keeps the I/O and the data
// path (receiver, journal, read-ahead, copy writes, pull planning) and makes no lifecycle
// decision of its own.
//
// States (persisted in node.json's `secondary.state`, the rest volatile):
//   empty --OPEN_GROUP--> copying --COPY_DONE, synced, joined, saved--> replicating
//   copying --OPEN_GROUP with another start--> copying (the copy starts over: volumes emptied, fresh journal)
//   replicating: catching up (reflected < consistentFromSequence) or consistent
//   any live state: stopped (a full disk or an I/O error; resumes by itself), waiting for journal room
//   replicating --takeover--> taking over (streams closed, drained, left the domain) --converted, saved--> taken over
//
// Peer messages that do not fit the state are refused (NACK or ERROR with a protocol code and
// a log line), never asserted. Assertions guard the shell's own contract: one lifecycle step
// (an event and its follow-ups through the save) at a time per group, completions only for a
// step in progress.
import { log, type LogEffect } from "./log-effect.ts";
import { assert, unreachable } from "./assert.ts";
import { asAcceptNumber, asWriteTimeUs } from "./types.ts";
import type { Position } from "./position.ts";
import type { NamedDomainDeclaration } from "./named-domain.ts";
import type { TmErrorCode } from "./errors.ts";
import type { GroupState, NackableType, ReplErrorCode } from "../protocol/repl-protocol.ts";
import { replPairDeletedCloseText, replPairSuspendedCloseText, replPairSuspendedCloseTextV1 } from "../protocol/repl-protocol.ts";
import { secondaryCopyStalledMs } from "./limits.ts";

/** The persisted lifecycle of a secondary (metadata's SecondaryRecord has exactly these fields). */
export interface SecondaryLifecycleRecord {
  readonly pairId: string;
  readonly primaryNode: string;
  readonly primaryGroup: string;
  /** The primary's management URL as its operator reaches it (absent: unknown), for hints that name it. */
  readonly primaryUrl?: string | undefined;
  readonly transfer: "push" | "pull";
  readonly streams: number;
  readonly reflect: "time" | "seq" | "marker";
  readonly state: "empty" | "copying" | "replicating" | "takeover";
  /** First sequence of the replicated stream (S0 + 1). */
  readonly startSequence: number;
  /** The image is consistent once reflection is through this sequence (set when the copy ends). */
  readonly consistentFromSequence: number;
  /** The last checkpoint: the volumes hold every record through it, fdatasync'd. */
  readonly reflectedSequence: number;
  readonly reflectedWriteTimeUs: number;
  readonly reflectedAcceptNumber: number;
  /** The primary's wall time of the last record through the checkpoint (record format 2; absent or 0: unknown). */
  readonly reflectedWallTimeUs?: number | undefined;
  /** The primary's volume id (as in the records) -> this node's volume id. */
  readonly volumes: readonly { readonly primaryVolumeId: number; readonly volumeId: number }[];
  readonly takeover: { readonly keptSequence: number; readonly droppedRecords: number; readonly at: string } | null;
  /** The pair's generation (1 when absent); a forced takeover raises it (docs/replication.md, "Fencing"). */
  readonly generation?: number;
  /** `pair create --domain NAME`: the named domain and the primary's write-time declaration (core/named-domain.ts); absent: the primary's own domain. */
  readonly domain?: NamedDomainDeclaration | undefined;
  /** Where it joined its consistency domain (core/consistency-domain.ts JoinPoint); saved by the domain's join, read at start. */
  readonly domainJoin?: { readonly afterSequence: number; readonly writeTimeUs: number; readonly acceptNumber: number; readonly at: string } | null | undefined;
  /** Detached from its consistency domain by the operator (`pair detach`); saved by the role, read at start. */
  readonly detached?: boolean | undefined;
}

/** A change to node.json: fields of the group's `secondary` record, and of the group record itself. */
export interface SecondaryRecordChange {
  readonly secondary: Partial<SecondaryLifecycleRecord>;
  /** A fresh journal's directory generation; after a takeover, the writable group's sequence start. */
  readonly group?: { readonly journalGeneration?: number; readonly checkpointSequence?: number; readonly nextSequence?: number };
}

/** One of the group's volumes on this node. */
export interface SecondaryVolumeInfo {
  readonly volumeId: number;
  readonly name: string;
  readonly sizeBytes: number;
}

/** One volume as the primary names it in OPEN_GROUP. */
export interface OpenVolume {
  readonly volumeId: number;
  readonly name: string;
  readonly sizeBytes: number;
}

export interface SecondaryStop {
  readonly errno: "ENOSPC" | "EIO";
  readonly reason: string;
}

/** A lifecycle step waiting for an I/O completion (one at a time per group). */
export type PendingStep =
  | { readonly kind: "beginCopy"; readonly change: SecondaryRecordChange; readonly fromGeneration: number; readonly generation: number }
  | { readonly kind: "finishCopy"; readonly chunkId: number; readonly consistentFromSequence: number; readonly phase: "syncing" | "joining" };

/** A takeover in progress (volatile: a restart before its save leaves the group replicating). */
export type TakeoverProgress =
  /** Streams closed; the shell waits for appends in flight and drains reflection. */
  | { readonly phase: "draining" }
  /**
   * Out of the domain: nothing more is applied by the reflector. `decided`: the takeover's
   * intent is saved (core/takeover.ts) and the primary was told; until then the primary is
   * only asked to wait (GROUP_BUSY), so a takeover refused or failed before its save ends no pair.
   */
  | { readonly phase: "leftDomain"; readonly decided: boolean }
  | { readonly phase: "converting"; readonly fromGeneration: number; readonly generation: number; readonly change: SecondaryRecordChange; readonly result: TakeoverOutcome }
  /** The conversion failed part-way: the group takes nothing until the node restarts. */
  | { readonly phase: "abandoned" };

export interface TakeoverOutcome {
  readonly group: string;
  readonly reflectedSequence: number;
  readonly droppedRecords: number;
  readonly state: "takeover";
}

export interface SecondaryGroupState {
  readonly groupId: number;
  readonly name: string;
  readonly volumes: readonly SecondaryVolumeInfo[];
  /** What node.json holds: changed only by a completed save (memory follows the save). */
  readonly record: SecondaryLifecycleRecord;
  /** node.json's journal directory generation of the group (persisted). */
  readonly journalGeneration: number;
  // ---- volatile (rebuilt at start) ----
  readonly stop: SecondaryStop | undefined;
  /** Waiting for journal room (back-pressure on the primary): since when (monotonic ms) and why. */
  readonly roomWait: { readonly sinceMs: number; readonly detail: string } | undefined;
  readonly takeover: TakeoverProgress | undefined;
  readonly step: PendingStep | undefined;
  /** A checkpoint whose save is in flight. */
  readonly checkpoint: { readonly sequence: number; readonly position: Position; readonly wallTimeUs: number } | undefined;
  /** When the last checkpoint was taken (monotonic ms). */
  readonly lastCheckpointMs: number;
}

/** The state after a start (or a prepare): node.json's record, nothing volatile yet. */
export function initialSecondaryState(init: {
  readonly groupId: number; readonly name: string; readonly volumes: readonly SecondaryVolumeInfo[];
  readonly record: SecondaryLifecycleRecord; readonly journalGeneration: number;
}): SecondaryGroupState {
  return { ...init, stop: undefined, roomWait: undefined, takeover: undefined, step: undefined, checkpoint: undefined, lastCheckpointMs: 0 };
}

/** A batch as the receiver left it (the shell's SecondaryReceiveResult, without the records). */
export type BatchOutcome =
  | { readonly ok: true; readonly records: number }
  | { readonly ok: false; readonly reason: "stopped"; readonly errno: "ENOSPC" | "EIO"; readonly detail: string }
  | { readonly ok: false; readonly reason: "journal-full"; readonly detail: string; readonly roomText: string }
  | { readonly ok: false; readonly reason: "bad-sequence" | "position-not-increasing" | "reorder-records-full" | "reorder-bytes-full" | "durable-pending-full"; readonly detail: string };

export type SecondaryGroupEvent =
  // ---- from the primary (decoded by the codec) ----
  /** OPEN_GROUP (after the shell's per-stream checks); the shell runs these one at a time per group. */
  | { readonly type: "openGroup"; readonly groupHandle: number; readonly pairId: string; readonly startSequence: number; readonly volumes: readonly OpenVolume[] }
  | { readonly type: "copyChunk"; readonly message: "COPY_DATA" | "COPY_ZEROES"; readonly chunkId: number; readonly primaryVolumeId: number; readonly offsetBytes: number; readonly lengthBytes: number }
  /** COPY_DONE; one lifecycle step at a time per group, like openGroup. */
  | { readonly type: "copyDone"; readonly chunkId: number; readonly consistentFromSequence: number }
  | { readonly type: "batch"; readonly batchId: number }
  | { readonly type: "batchReceived"; readonly batchId: number; readonly outcome: BatchOutcome }
  // ---- I/O completions ----
  | { readonly type: "persisted" }
  | { readonly type: "persistFailed"; readonly error: string }
  | { readonly type: "copySynced" }
  | { readonly type: "copySyncFailed"; readonly error: string }
  /** The domain refused the join (a member stopped or not checkpointed, or its save failed). */
  | { readonly type: "joinRefused"; readonly reason: string }
  | { readonly type: "checkpointSaved" }
  /** An effect of the step in progress threw: the step is over (the shell reports the error). */
  | { readonly type: "stepAbandoned"; readonly error: string }
  | { readonly type: "checkpointAbandoned" }
  // ---- the group's disk and journal ----
  | { readonly type: "stopped"; readonly stop: SecondaryStop }
  | { readonly type: "resumed" }
  | { readonly type: "journalFull"; readonly nowMs: number; readonly detail: string; readonly usedBytes: number; readonly bytesMax: number }
  | { readonly type: "journalRoomBack"; readonly nowMs: number; readonly usedBytes: number }
  /** A trim freed journal room (or the group resumed): what waited may come in. */
  | { readonly type: "roomFreed" }
  /** Records answered to the primary were dropped before they arrived. */
  | { readonly type: "receivedLost"; readonly why: string }
  /** A volume of the group grew (a resize record reflected, or before a copy): its size is this now. */
  | { readonly type: "volumeGrown"; readonly volumeId: number; readonly sizeBytes: number }
  // ---- the reflector ----
  | {
    readonly type: "checkpointDue"; readonly nowMs: number; readonly force: boolean;
    readonly reflectedSequence: number; readonly reflectedPosition: Position;
    /** The primary's wall time of the last record reflected (0: unknown). */
    readonly reflectedWallTimeUs: number;
    /** A write or zeroes was applied since the last checkpoint: the volumes need an fdatasync. */
    readonly volumesWritten: boolean;
    /** False while the data path may not record what it applied (stopped, or a rewind waits). */
    readonly checkpointable: boolean;
  }
  // ---- the operator: pair takeover (the shell checks every named group before any begins) ----
  /** `pairDelete`: the pair's end (`pair delete`) holds the group the same way; the streams close saying so. */
  | { readonly type: "takeover"; readonly for?: "pairDelete" | undefined }
  /** The streams are closed and reflection drained: check the cut. */
  | { readonly type: "takeoverDrained"; readonly reflectedSequence: number }
  /** Another group of the same takeover was refused: this one goes on replicating. */
  | { readonly type: "takeoverAbort" }
  /**
   * `pair delete --force` on the secondary during the initial copy (or before it began): the
   * group stops receiving (its streams close, the primary is told to wait) while the shell
   * waits for the copy's writes in flight and converts it into an ordinary group that holds an
   * incomplete copy. Refused once the copy is done (the ordinary end applies) or while a step
   * runs. `takeoverAbort` undoes it when the conversion fails before its save.
   */
  | { readonly type: "abandonCopy" }
  /** The takeover's intent is saved: the primary is told the group is taken over. */
  | { readonly type: "takeoverDecided" }
  /** At start, node.json holds an unfinished takeover of this group: held outside its domain, decided. */
  | { readonly type: "takeoverResumed" }
  | { readonly type: "takeoverConvert"; readonly keptSequence: number; readonly droppedRecords: number; readonly atIso: string };

export type PeerAnswer =
  | { readonly type: "GROUP_STATE"; readonly state: GroupState }
  | { readonly type: "COPY_ACK"; readonly chunkId: number }
  | { readonly type: "ACK"; readonly batchId: number };

/** The stable codes (core/errors.ts) an operator's or a primary's request is refused with. */
export type OperatorRefusalCode = Extract<TmErrorCode, "TM_ERR_STATE" | "TM_ERR_CONFLICT" | "TM_ERR_NOT_FOUND" | "TM_ERR_INTERNAL">;

/**
 * What the shell does, in order. Ordering rules:
 * - Persist before announce: `answerPeer`/`answerOperator` of a step that saves come only
 *   after its `persisted` event; a state the disk does not hold is never announced.
 * - Every effect with a completion (`persist`, `syncCopiedVolumes`, `joinDomain`,
 *   `persistCheckpoint`, `receiveBatch`) ends its list; the shell feeds the completion back.
 * - Volumes emptied before `copying` is persisted (the copy sends only written extents).
 * - Checkpoint before join: `joinDomain` hands the save to the consistency domain, which
 *   checkpoints its members first (core/consistency-domain.ts).
 * - Volumes synced (and their written maps saved) before a checkpoint's or a takeover's save.
 */
export type SecondaryGroupEffect =
  /** Save `change` to node.json (`critical`: may use the space reserve). Completion: persisted / persistFailed. */
  | { readonly type: "persist"; readonly change: SecondaryRecordChange; readonly critical: boolean }
  /** Make every byte of the group's volumes zero (the copy sends only the written extents). */
  | { readonly type: "emptyVolumes" }
  /**
   * Grow these volumes of the group (this node's ids) to these sizes before an initial copy of
   * larger primary volumes (node.json first; a `volumeGrown` event follows each). Idempotent.
   */
  | { readonly type: "growVolumes"; readonly volumes: readonly { readonly volumeId: number; readonly sizeBytes: number }[] }
  /**
   * The same copy goes on: the primary runs it again from the start (docs/replication-protocol.md,
   * GROUP_STATE `copying`), writing every extent again, so a volume whose fdatasync failed during
   * the copy may prove durability again once it is done (storage/volume-file.ts).
   */
  | { readonly type: "copyRunsAgain" }
  /** Open a fresh, empty journal in directory `generation`, numbering from `nextSequence`, beside the live one. */
  | { readonly type: "openJournal"; readonly generation: number; readonly nextSequence: number; readonly reserve: boolean }
  /**
   * The journal opened for `generation` becomes the group's, the one of `replacing` is kept
   * aside (open); the receiver, read-ahead, volume map and copy counters start over from the
   * saved record.
   */
  | { readonly type: "useJournal"; readonly generation: number; readonly replacing: number }
  /** Close the journal of `generation` (if one is open aside) and remove its directory: node.json no longer names it. */
  | { readonly type: "removeJournal"; readonly generation: number }
  /** Close the journal opened for `generation` and keep its directory (a save that failed may still have landed). */
  | { readonly type: "dropJournal"; readonly generation: number }
  /** The initial copy's writes made durable: volumes fdatasync'd, written maps saved. Completion: copySynced / copySyncFailed. */
  | { readonly type: "syncCopiedVolumes" }
  /** Join the consistency domain: it saves `change` once its members are checkpointed. Completion: persisted / persistFailed / joinRefused. */
  | { readonly type: "joinDomain"; readonly change: SecondaryRecordChange }
  /** Leave the consistency domain (nothing more is applied to this group). */
  | { readonly type: "leaveDomain"; readonly why: string }
  | { readonly type: "domainMemberStopped"; readonly reason: string }
  | { readonly type: "domainMemberResumed" }
  /** Write one chunk of the initial copy to local volume `volumeId` (COPY_ZEROES of a volume emptied for this copy writes nothing). */
  | { readonly type: "writeCopyChunk"; readonly message: "COPY_DATA" | "COPY_ZEROES"; readonly volumeId: number; readonly offsetBytes: number; readonly lengthBytes: number }
  /** Hand the batch to the receiver and journal. Completion: batchReceived. */
  | { readonly type: "receiveBatch" }
  /** Volumes fdatasync'd and written maps saved, before a checkpoint is persisted. */
  | { readonly type: "syncVolumes" }
  /** Save the reflected checkpoint. Completion: checkpointSaved (a failure throws to the reflector). */
  | { readonly type: "persistCheckpoint"; readonly change: SecondaryRecordChange }
  | { readonly type: "trimJournal"; readonly throughSequence: number }
  /** The reflector's checkpoint request is answered: done (true), or not now, ask again (false). */
  | { readonly type: "checkpointAnswer"; readonly done: boolean }
  | { readonly type: "kickReflection" }
  /** Journal room again: take what waited in memory, tell the streams that were refused, pull again. */
  | { readonly type: "roomAgain" }
  /** Pull mode: ask for what the planner wants now. */
  | { readonly type: "schedulePulls" }
  /**
   * Close every stream of the group: `taken-over` (ERROR TAKEN_OVER: the primary's pair ends),
   * `resend` (the primary rewinds to what arrived), `hold` (a takeover is being decided: the
   * primary reconnects and is asked to wait, GROUP_BUSY).
   */
  | { readonly type: "closeStreams"; readonly why: "taken-over" | "resend" | "hold"; readonly text: string }
  | { readonly type: "answerPeer"; readonly message: PeerAnswer }
  /** NACK the message (the stream stays in step); `resendWhenRoom`: tell this stream when there is room again. */
  | { readonly type: "refusePeer"; readonly code: ReplErrorCode; readonly refType: NackableType; readonly refId: number; readonly text: string; readonly reportArrived: boolean; readonly resendWhenRoom: boolean }
  /** ERROR and close the stream. */
  | { readonly type: "failStream"; readonly code: ReplErrorCode; readonly text: string }
  /** The takeover's retirement of the secondary: stop control closed, volumes synced, maps saved (space reserve), old journal closed. */
  | { readonly type: "retireSecondary" }
  /** The taken-over group becomes an ordinary writable group over the journal of `generation`. */
  | { readonly type: "becomeWritable"; readonly generation: number }
  | { readonly type: "answerOperator"; readonly result: TakeoverOutcome }
  | { readonly type: "refuseOperator"; readonly code: OperatorRefusalCode; readonly text: string }
  | LogEffect;

export interface SecondaryGroupStep {
  readonly state: SecondaryGroupState;
  readonly effects: readonly SecondaryGroupEffect[];
}

/** Effects whose completion the shell feeds back: each ends its effect list. */
export const effectsWithCompletion: ReadonlySet<SecondaryGroupEffect["type"]> = new Set(["persist", "syncCopiedVolumes", "joinDomain", "persistCheckpoint", "receiveBatch"]);

/** A secondary group that is not receiving may idle-checkpoint at most this often (unless forced). */
export const secondaryIdleCheckpointIntervalMs = 30_000;

/** node.json's record after `change` (what the shell's save writes). */
export function applySecondaryChange(record: SecondaryLifecycleRecord, change: SecondaryRecordChange): SecondaryLifecycleRecord {
  return { ...record, ...change.secondary };
}

/** Whether the group is taken over (persisted) or being taken over: it takes nothing from a primary. */
export function takenOrTakingOver(state: SecondaryGroupState): boolean {
  return state.record.state === "takeover" || state.takeover !== undefined;
}

/** Whether a takeover of the group is decided (saved) or done: the primary may be told it is taken over. */
function takeoverDecided(state: SecondaryGroupState): boolean {
  const t = state.takeover;
  return state.record.state === "takeover" || (t !== undefined && t.phase !== "draining" && (t.phase !== "leftDomain" || t.decided));
}

/** ERROR for a primary's message to a group taken over or being taken over: TAKEN_OVER once decided, else GROUP_BUSY (try again). */
function takenOverFailure(state: SecondaryGroupState): SecondaryGroupEffect {
  if (takeoverDecided(state)) return { type: "failStream", code: "TAKEN_OVER", text: `group ${state.name} was taken over` };
  return { type: "failStream", code: "GROUP_BUSY", text: `a takeover of group ${state.name} is being decided; try again` };
}

/** Whether arrived records are reflected (the copy is done and joined): arrivals and freed room wake the reflector. */
export function reflects(state: SecondaryGroupState): boolean {
  return state.record.state === "replicating";
}

/** Pull mode: whether the group asks its primary for records now (replicating, not stopped, not being taken over). */
export function mayPull(state: SecondaryGroupState): boolean {
  return state.record.state === "replicating" && state.takeover === undefined && state.stop === undefined;
}


function takenOverText(state: SecondaryGroupState): string {
  const t = state.record.takeover;
  return t === null ? "taken over" : `at ${t.at}, kept through sequence ${t.keptSequence}`;
}

/**
 * Why OPEN_GROUP for pair `pairId` is refused before anything else happens, or undefined.
 * The shell asks this on arrival (before it attaches the stream); the openGroup event asks again.
 */
export function openRefusal(state: SecondaryGroupState, pairId: string, nodeId: string): { readonly code: ReplErrorCode; readonly text: string; readonly cutSequence?: number } | undefined {
  if (state.record.state === "takeover") {
    if (state.record.pairId !== pairId) return { code: "UNKNOWN_GROUP", text: `group ${state.name} is not a pair secondary on node ${nodeId}` };
    // The NACK's arrivedSequence carries the cut: the primary fences itself and counts its writes past it (docs/replication.md, "Fencing").
    return { code: "TAKEN_OVER", text: `group ${state.name} was taken over on node ${nodeId} (${takenOverText(state)}, pair generation ${state.record.generation ?? 1}); it is no longer a pair secondary`, cutSequence: state.record.takeover?.keptSequence ?? state.record.reflectedSequence };
  }
  if (state.record.pairId !== pairId) return { code: "STALE_PAIR", text: `group ${state.name} belongs to pair ${state.record.pairId}, not ${pairId}` };
  // Not over yet (it may still be refused): the primary tries again after a backoff and learns how it ended.
  if (state.takeover !== undefined) return { code: "GROUP_BUSY", text: `group ${state.name} is being taken over; try again` };
  return undefined;
}

/** NACK of an OPEN_GROUP (its refId is the group handle it asked for), with its log line. */
export function refuseOpen(code: ReplErrorCode, text: string, name: string, groupHandle: number): SecondaryGroupEffect[] {
  return [
    log("warn", "repl_open_refused", { group: name, code, reason: text }, "OPEN_GROUP refused"),
    { type: "refusePeer", code, refType: "OPEN_GROUP", refId: groupHandle, text, reportArrived: false, resendWhenRoom: false },
  ];
}

function assertNoStep(state: SecondaryGroupState, what: string): void {
  assert(state.step === undefined, () => `${what} for group ${state.name} while its ${state.step?.kind ?? ""} step is in progress: the shell runs one lifecycle step at a time`);
}

function openGroup(state: SecondaryGroupState, event: Extract<SecondaryGroupEvent, { type: "openGroup" }>, nodeId: string): SecondaryGroupStep {
  assertNoStep(state, "OPEN_GROUP");
  const early = openRefusal(state, event.pairId, nodeId);
  if (early !== undefined) return { state, effects: refuseOpen(early.code, early.text, state.name, event.groupHandle) };
  const record = state.record;
  if (record.state === "replicating") {
    for (const volume of event.volumes) {
      const mapped = record.volumes.find((m) => m.primaryVolumeId === volume.volumeId);
      const local = mapped === undefined ? undefined : state.volumes.find((v) => v.volumeId === mapped.volumeId);
      // Larger on the primary: it grew (volume resize), and this group grows when it reflects
      // the resize record, at the same point of the history (docs/replication.md, "Growing a volume").
      if (local === undefined || local.name !== volume.name || local.sizeBytes > volume.sizeBytes) {
        return { state, effects: refuseOpen("VOLUME_MISMATCH", `volume ${volume.name} (${volume.sizeBytes} bytes, primary id ${volume.volumeId}) does not match the secondary group`, state.name, event.groupHandle) };
      }
    }
    return { state, effects: [{ type: "answerPeer", message: { type: "GROUP_STATE", state: "replicating" } }] };
  }
  // empty, or copying: the copy writes the primary's volumes whole, at their size now: a
  // volume smaller here (the primary grew it before this copy began) grows first.
  const grow: { volumeId: number; sizeBytes: number }[] = [];
  const mapping: { primaryVolumeId: number; volumeId: number }[] = [];
  for (const volume of event.volumes) {
    const local = state.volumes.find((v) => v.name === volume.name);
    if (local === undefined || local.sizeBytes > volume.sizeBytes) {
      return { state, effects: refuseOpen("VOLUME_MISMATCH", `volume ${volume.name} (${volume.sizeBytes} bytes) is not in secondary group ${state.name}`, state.name, event.groupHandle) };
    }
    if (local.sizeBytes < volume.sizeBytes) grow.push({ volumeId: local.volumeId, sizeBytes: volume.sizeBytes });
    mapping.push({ primaryVolumeId: volume.volumeId, volumeId: local.volumeId });
  }
  const growEffects: SecondaryGroupEffect[] = grow.length === 0 ? [] : [{ type: "growVolumes", volumes: grow }];
  // The same copy goes on (the same start sequence): the primary runs it again from the start.
  if (record.state === "copying" && record.startSequence === event.startSequence && record.volumes.length > 0) {
    return { state, effects: [...growEffects, { type: "copyRunsAgain" }, { type: "answerPeer", message: { type: "GROUP_STATE", state: "copying" } }] };
  }
  const generation = state.journalGeneration + 1;
  const change: SecondaryRecordChange = {
    secondary: {
      state: "copying", startSequence: event.startSequence, consistentFromSequence: 0,
      reflectedSequence: event.startSequence - 1, reflectedWriteTimeUs: 0, reflectedAcceptNumber: 0, volumes: mapping,
    },
    group: { journalGeneration: generation },
  };
  return {
    state: { ...state, step: { kind: "beginCopy", change, fromGeneration: state.journalGeneration, generation } },
    // The copy sends only the primary's written extents: every other byte must be zero before
    // `copying` is saved (a crash part-way empties again on the next OPEN_GROUP).
    effects: [
      ...growEffects,
      { type: "emptyVolumes" },
      { type: "openJournal", generation, nextSequence: event.startSequence, reserve: false },
      { type: "persist", change, critical: false },
    ],
  };
}

function copyChunk(state: SecondaryGroupState, event: Extract<SecondaryGroupEvent, { type: "copyChunk" }>): SecondaryGroupStep {
  if (takenOrTakingOver(state)) return { state, effects: [takenOverFailure(state)] };
  if (state.record.state === "replicating") {
    return { state, effects: [{ type: "refusePeer", code: "OUT_OF_RANGE", refType: event.message, refId: event.chunkId, text: "the initial copy is already done", reportArrived: true, resendWhenRoom: false }] };
  }
  const mapped = state.record.volumes.find((m) => m.primaryVolumeId === event.primaryVolumeId);
  const local = mapped === undefined ? undefined : state.volumes.find((v) => v.volumeId === mapped.volumeId);
  if (local === undefined || event.offsetBytes + event.lengthBytes > local.sizeBytes) {
    return {
      state,
      effects: [{
        type: "refusePeer", code: "OUT_OF_RANGE", refType: event.message, refId: event.chunkId,
        text: `copy range ${event.offsetBytes}+${event.lengthBytes} outside volume ${event.primaryVolumeId}`, reportArrived: false, resendWhenRoom: false,
      }],
    };
  }
  return {
    state,
    effects: [
      { type: "writeCopyChunk", message: event.message, volumeId: local.volumeId, offsetBytes: event.offsetBytes, lengthBytes: event.lengthBytes },
      { type: "answerPeer", message: { type: "COPY_ACK", chunkId: event.chunkId } },
    ],
  };
}

function copyDone(state: SecondaryGroupState, event: Extract<SecondaryGroupEvent, { type: "copyDone" }>): SecondaryGroupStep {
  assertNoStep(state, "COPY_DONE");
  if (takenOrTakingOver(state)) return { state, effects: [takenOverFailure(state)] };
  const record = state.record;
  if (record.state === "replicating") {
    // A COPY_DONE the primary sent again: the copy is done and joined; its answer is the same.
    const effects: SecondaryGroupEffect[] = [];
    if (event.consistentFromSequence !== record.consistentFromSequence) {
      effects.push(log("warn", "secondary_copy_done_again", { group: state.name, consistentFromSequence: record.consistentFromSequence, asked: event.consistentFromSequence },
        "COPY_DONE for a copy already done; the secondary keeps its consistency point"));
    }
    effects.push({ type: "answerPeer", message: { type: "COPY_ACK", chunkId: event.chunkId } }, { type: "kickReflection" }, { type: "schedulePulls" });
    return { state, effects };
  }
  if (record.state === "empty") {
    return { state, effects: [{ type: "refusePeer", code: "OUT_OF_RANGE", refType: "COPY_DONE", refId: event.chunkId, text: "no initial copy was begun: send OPEN_GROUP first", reportArrived: false, resendWhenRoom: false }] };
  }
  return {
    state: { ...state, step: { kind: "finishCopy", chunkId: event.chunkId, consistentFromSequence: event.consistentFromSequence, phase: "syncing" } },
    // The copy's writes have no journal: they are durable before the copy counts as done
    // (until then a crash restarts the copy, which rewrites every extent it sent).
    effects: [{ type: "syncCopiedVolumes" }],
  };
}

function batchReceived(state: SecondaryGroupState, event: Extract<SecondaryGroupEvent, { type: "batchReceived" }>): SecondaryGroupStep {
  const outcome = event.outcome;
  if (outcome.ok) {
    const effects: SecondaryGroupEffect[] = [];
    if (outcome.records > 0 && state.record.state === "replicating") effects.push({ type: "kickReflection" });
    effects.push({ type: "answerPeer", message: { type: "ACK", batchId: event.batchId } });
    return { state, effects };
  }
  switch (outcome.reason) {
    case "stopped":
      // Full disk or I/O error here: nothing taken; the primary keeps the records and sends
      // them again once this group resumed (ACK batchId 0), or after its backoff.
      return { state, effects: [{ type: "refusePeer", code: outcome.errno === "ENOSPC" ? "NO_SPACE" : "INTERNAL", refType: "BATCH", refId: event.batchId, text: outcome.detail.slice(0, 200), reportArrived: true, resendWhenRoom: true }] };
    case "journal-full":
      return { state, effects: [{ type: "refusePeer", code: "NO_SPACE", refType: "BATCH", refId: event.batchId, text: outcome.roomText.slice(0, 512), reportArrived: true, resendWhenRoom: true }, { type: "schedulePulls" }] };
    case "bad-sequence":
    case "position-not-increasing":
      return {
        state,
        effects: [
          log("warn", "repl_batch_refused", { group: state.name, reason: outcome.reason, detail: outcome.detail }, "batch refused"),
          { type: "refusePeer", code: "BAD_RECORD", refType: "BATCH", refId: event.batchId, text: outcome.detail.slice(0, 200), reportArrived: true, resendWhenRoom: false },
          { type: "failStream", code: "BAD_RECORD", text: outcome.detail },
        ],
      };
    case "reorder-records-full":
    case "reorder-bytes-full":
    case "durable-pending-full":
      return {
        state,
        effects: [
          log("warn", "repl_batch_refused", { group: state.name, reason: outcome.reason, detail: outcome.detail }, "batch refused"),
          { type: "refusePeer", code: "REORDER_FULL", refType: "BATCH", refId: event.batchId, text: outcome.detail.slice(0, 200), reportArrived: true, resendWhenRoom: false },
        ],
      };
    default:
      return unreachable(outcome, "batch outcome");
  }
}

function persisted(state: SecondaryGroupState): SecondaryGroupStep {
  const step = state.step;
  const takeover = state.takeover;
  if (step?.kind === "beginCopy") {
    const record = applySecondaryChange(state.record, step.change);
    return {
      state: { ...state, record, journalGeneration: step.generation, step: undefined },
      effects: [
        { type: "useJournal", generation: step.generation, replacing: step.fromGeneration },
        { type: "removeJournal", generation: step.fromGeneration },
        log("info", "secondary_copy_started", { group: state.name, startSequence: record.startSequence }, "initial copy into secondary started"),
        { type: "answerPeer", message: { type: "GROUP_STATE", state: "copying" } },
      ],
    };
  }
  if (step?.kind === "finishCopy") {
    assert(step.phase === "joining", "the copy's join was being saved");
    const record = applySecondaryChange(state.record, { secondary: { state: "replicating", consistentFromSequence: step.consistentFromSequence } });
    return {
      state: { ...state, record, step: undefined },
      effects: [
        log("info", "secondary_copy_done", { group: state.name, consistentFromSequence: step.consistentFromSequence }, "initial copy into secondary done"),
        { type: "answerPeer", message: { type: "COPY_ACK", chunkId: step.chunkId } },
        { type: "kickReflection" },
        { type: "schedulePulls" },
      ],
    };
  }
  assert(takeover?.phase === "converting", () => `a save of group ${state.name} completed while no step of its lifecycle waited for one`);
  const result = takeover.result;
  return {
    state: { ...state, record: applySecondaryChange(state.record, takeover.change), journalGeneration: takeover.generation, takeover: undefined, roomWait: undefined },
    effects: [
      { type: "removeJournal", generation: takeover.fromGeneration },
      { type: "becomeWritable", generation: takeover.generation },
      log("warn", "takeover", { group: state.name, keptSequence: result.reflectedSequence, droppedRecords: result.droppedRecords }, "group taken over: volumes are writable"),
      { type: "answerOperator", result },
    ],
  };
}

function stepFailed(state: SecondaryGroupState, error: string): SecondaryGroupStep {
  const step = state.step;
  if (step?.kind === "beginCopy") {
    return {
      state: { ...state, step: undefined },
      effects: [
        log("error", "repl_group_error", { group: state.name, error }, "the initial copy could not begin"),
        { type: "dropJournal", generation: step.generation },
        { type: "failStream", code: "INTERNAL", text: error },
      ],
    };
  }
  if (step?.kind === "finishCopy") {
    return {
      state: { ...state, step: undefined },
      effects: [log("error", "repl_group_error", { group: state.name, error }, "the initial copy could not end"), { type: "failStream", code: "INTERNAL", text: error }],
    };
  }
  const takeover = state.takeover;
  assert(takeover?.phase === "converting", () => `a failure of group ${state.name} came while no step of its lifecycle waited`);
  // Converted in part: the group takes nothing more until a restart, which finds node.json as
  // it was (replicating) and recovers it as a secondary.
  return {
    state: { ...state, takeover: { phase: "abandoned" } },
    effects: [
      log("error", "takeover_failed", { group: state.name, error }, "takeover failed; the group takes nothing more until the node restarts, which recovers it as a secondary"),
      { type: "refuseOperator", code: "TM_ERR_INTERNAL", text: `takeover of group ${state.name} failed: ${error}; restart the node and take over again` },
    ],
  };
}

function checkpointDue(state: SecondaryGroupState, event: Extract<SecondaryGroupEvent, { type: "checkpointDue" }>): SecondaryGroupStep {
  const done = (value: boolean): SecondaryGroupStep => ({ state, effects: [{ type: "checkpointAnswer", done: value }] });
  if (event.reflectedSequence <= state.record.reflectedSequence) return done(true);
  // A group being taken over is checkpointed by the takeover itself.
  if (takenOrTakingOver(state)) return done(true);
  assert(state.checkpoint === undefined, () => `one checkpoint of group ${state.name} at a time`);
  // Never while stopped or before it applied again after a resume: after a failed fdatasync
  // the next one succeeds without the pages the failed one dropped, so a checkpoint then
  // would record as durable what the volume lost (simulation seed 1829).
  if (!event.checkpointable || state.stop !== undefined) return done(false);
  // An idle pair costs no metadata save per second (time advances are replayed idempotently
  // after a crash); a group waiting for journal room is checkpointed at once: the trim frees it.
  if (!event.force && !event.volumesWritten && state.roomWait === undefined && event.nowMs - state.lastCheckpointMs < secondaryIdleCheckpointIntervalMs) return done(false);
  const change: SecondaryRecordChange = {
    secondary: {
      reflectedSequence: event.reflectedSequence, reflectedWriteTimeUs: event.reflectedPosition.writeTimeUs, reflectedAcceptNumber: event.reflectedPosition.acceptNumber,
      ...(event.reflectedWallTimeUs > 0 ? { reflectedWallTimeUs: event.reflectedWallTimeUs } : {}),
    },
  };
  const effects: SecondaryGroupEffect[] = [];
  // Before the reflected sequence moves on (and the journal trims behind it): docs/volumes.md.
  if (event.volumesWritten) effects.push({ type: "syncVolumes" });
  effects.push({ type: "persistCheckpoint", change });
  return {
    state: { ...state, checkpoint: { sequence: event.reflectedSequence, position: event.reflectedPosition, wallTimeUs: event.reflectedWallTimeUs }, lastCheckpointMs: event.nowMs },
    effects,
  };
}

function checkpointSaved(state: SecondaryGroupState): SecondaryGroupStep {
  const checkpoint = state.checkpoint;
  assert(checkpoint !== undefined, () => `a checkpoint of group ${state.name} was being saved`);
  const record = applySecondaryChange(state.record, {
    secondary: {
      reflectedSequence: checkpoint.sequence, reflectedWriteTimeUs: checkpoint.position.writeTimeUs, reflectedAcceptNumber: checkpoint.position.acceptNumber,
      ...(checkpoint.wallTimeUs > 0 ? { reflectedWallTimeUs: checkpoint.wallTimeUs } : {}),
    },
  });
  return {
    state: { ...state, record, checkpoint: undefined },
    effects: [{ type: "trimJournal", throughSequence: checkpoint.sequence }, { type: "checkpointAnswer", done: true }],
  };
}

/** Why a takeover of this group is refused now, or undefined (checked for every named group before any begins). */
export function takeoverRefusal(state: SecondaryGroupState): { readonly code: OperatorRefusalCode; readonly text: string } | undefined {
  if (state.record.state === "takeover") return undefined;
  if (state.takeover !== undefined) return { code: "TM_ERR_STATE", text: `group ${state.name} is being taken over already` };
  if (state.record.state !== "replicating" || state.step !== undefined) {
    const phase = state.step !== undefined ? (state.step.kind === "finishCopy" ? "finishing" : "starting")
      : state.record.state === "empty" ? "not begun: nothing has arrived from the primary yet" : state.record.state;
    return {
      code: "TM_ERR_STATE",
      text: `group ${state.name} is still in its initial copy (${phase}): its image is partly old, partly new, consistent with no point in time, so it cannot be taken over; ` +
        `wait until \`tidemark pair status ${state.name}\` here shows replicating, then take over`,
    };
  }
  return undefined;
}

/** Why a drained takeover cannot keep this group's image (reflection did not reach the copy's consistency point), or undefined. */
export function takeoverCutRefusal(state: SecondaryGroupState, reflectedSequence: number): { readonly code: OperatorRefusalCode; readonly text: string } | undefined {
  if (reflectedSequence >= state.record.consistentFromSequence) return undefined;
  return { code: "TM_ERR_STATE", text: `group ${state.name} has reflected ${reflectedSequence} of the ${state.record.consistentFromSequence} records it needs after its initial copy; its image is not consistent yet` };
}

function alreadyTakenOver(state: SecondaryGroupState): TakeoverOutcome {
  return { group: state.name, reflectedSequence: state.record.takeover?.keptSequence ?? 0, droppedRecords: state.record.takeover?.droppedRecords ?? 0, state: "takeover" };
}

/**
 * One step of a secondary group's lifecycle. `nodeId` is this node's id (for refusal texts).
 * Assertions: completions with no step waiting for them, a lifecycle step while another is in
 * progress, a checkpoint while another is saved: the shell's contract, never the peer's.
 */
export function stepSecondaryGroup(state: SecondaryGroupState, event: SecondaryGroupEvent, nodeId: string): SecondaryGroupStep {
  switch (event.type) {
    case "openGroup":
      return openGroup(state, event, nodeId);
    case "copyChunk":
      return copyChunk(state, event);
    case "copyDone":
      return copyDone(state, event);
    case "batch":
      if (takenOrTakingOver(state)) return { state, effects: [takenOverFailure(state)] };
      return { state, effects: [{ type: "receiveBatch" }] };
    case "batchReceived":
      return batchReceived(state, event);
    case "persisted":
      return persisted(state);
    case "persistFailed":
      return stepFailed(state, `could not save the group's state: ${event.error}`);
    case "copySynced": {
      const step = state.step;
      assert(step?.kind === "finishCopy" && step.phase === "syncing", () => `group ${state.name} was syncing its copy`);
      // Replicating: the group joins its consistency domain, with the domain checkpointed first.
      return {
        state: { ...state, step: { ...step, phase: "joining" } },
        effects: [{ type: "joinDomain", change: { secondary: { state: "replicating", consistentFromSequence: step.consistentFromSequence } } }],
      };
    }
    case "copySyncFailed":
      return stepFailed(state, event.error);
    case "joinRefused": {
      assert(state.step?.kind === "finishCopy" && state.step.phase === "joining", () => `group ${state.name} was joining its domain`);
      return stepFailed(state, event.reason);
    }
    case "stepAbandoned":
      return stepFailed(state, event.error);
    case "checkpointSaved":
      return checkpointSaved(state);
    case "checkpointAbandoned":
      return { state: { ...state, checkpoint: undefined }, effects: [] };
    case "volumeGrown":
      return { state: { ...state, volumes: state.volumes.map((v) => (v.volumeId === event.volumeId && v.sizeBytes < event.sizeBytes ? { ...v, sizeBytes: event.sizeBytes } : v)) }, effects: [] };
    case "stopped":
      return { state: { ...state, stop: event.stop }, effects: [{ type: "domainMemberStopped", reason: event.stop.reason }, { type: "kickReflection" }] };
    case "resumed":
      // Resumed: like a trim, room again (parked records, the primary's refused batches, pulls).
      return { state: { ...state, stop: undefined }, effects: [{ type: "domainMemberResumed" }, { type: "kickReflection" }, { type: "roomAgain" }] };
    case "journalFull": {
      if (state.roomWait !== undefined) return { state: { ...state, roomWait: { ...state.roomWait, detail: event.detail } }, effects: [] };
      return {
        state: { ...state, roomWait: { sinceMs: event.nowMs, detail: event.detail } },
        effects: [
          // Reflected records free room only once checkpointed, and the reflector may have gone
          // idle before the journal filled: wake it, so it checkpoints (on its timer) while the
          // group waits (whole-node simulation).
          { type: "kickReflection" },
          log("warn", "secondary_journal_full", { usedBytes: event.usedBytes, bytesMax: event.bytesMax, detail: event.detail }, "secondary journal full: taking no more records until reflection frees space"),
        ],
      };
    }
    case "journalRoomBack": {
      const wait = state.roomWait;
      if (wait === undefined) return { state, effects: [] };
      return {
        state: { ...state, roomWait: undefined },
        effects: [log("info", "secondary_journal_room", { waitedMs: Math.round(event.nowMs - wait.sinceMs), usedBytes: event.usedBytes }, "secondary journal has room again; receiving")],
      };
    }
    case "roomFreed":
      return { state, effects: [{ type: "roomAgain" }] };
    case "receivedLost":
      // The primary counts them as answered and waits for their arrival, which never comes
      // unless it sends them again: the streams close, and the handshake that follows rewinds
      // the primary to what arrived here (docs/replication-protocol.md).
      return { state, effects: [{ type: "closeStreams", why: "resend", text: event.why }] };
    case "checkpointDue":
      return checkpointDue(state, event);
    case "takeover": {
      if (state.record.state === "takeover") return { state, effects: [{ type: "answerOperator", result: alreadyTakenOver(state) }] };
      const refusal = takeoverRefusal(state);
      if (refusal !== undefined) return { state, effects: [{ type: "refuseOperator", code: refusal.code, text: refusal.text }] };
      // Stop receiving; the shell lets what was appended become durable and reflects to the last
      // consistent point. The primary is only told to wait: the takeover is not decided yet.
      // The text goes to the primary (CLOSE) and into this node's log line of the streams' end.
      const text = event.for === "pairDelete" ? pairDeleteHoldText : "a takeover is being decided on the secondary";
      return { state: { ...state, takeover: { phase: "draining" } }, effects: [{ type: "closeStreams", why: "hold", text }] };
    }
    case "takeoverDrained": {
      assert(state.takeover?.phase === "draining", () => `group ${state.name} was draining for a takeover`);
      const refusal = takeoverCutRefusal(state, event.reflectedSequence);
      if (refusal !== undefined) return { state: { ...state, takeover: undefined }, effects: [{ type: "refuseOperator", code: refusal.code, text: refusal.text }] };
      // Frozen at the cut: whatever runs while the groups are converted one by one (a smaller
      // domain would have a later frontier) applies nothing more to it.
      return { state: { ...state, takeover: { phase: "leftDomain", decided: false } }, effects: [{ type: "leaveDomain", why: "taken over" }] };
    }
    case "takeoverDecided":
      assert(state.takeover?.phase === "leftDomain", () => `group ${state.name} left its domain for a takeover`);
      return { state: { ...state, takeover: { phase: "leftDomain", decided: true } }, effects: [{ type: "closeStreams", why: "taken-over", text: "taken over on the secondary" }] };
    case "takeoverResumed":
      assert(state.record.state === "replicating" && state.takeover === undefined && state.step === undefined, () => `group ${state.name} is recovered as a replicating secondary for an unfinished takeover`);
      return { state: { ...state, takeover: { phase: "leftDomain", decided: true } }, effects: [] };
    case "abandonCopy": {
      if (state.record.state === "replicating" || state.record.state === "takeover" || state.takeover !== undefined || state.step !== undefined) {
        const what = state.step !== undefined ? `its initial copy is ${state.step.kind === "finishCopy" ? "finishing" : "starting"}` : state.takeover !== undefined ? "it is being taken over or its pair deleted" : `it is ${state.record.state === "takeover" ? "taken over" : "past its initial copy"}`;
        return { state, effects: [{ type: "refuseOperator", code: "TM_ERR_STATE", text: `group ${state.name} cannot end its initial copy now: ${what}; try again in a moment (tidemark pair status ${state.name})` }] };
      }
      return { state: { ...state, takeover: { phase: "draining" } }, effects: [{ type: "closeStreams", why: "hold", text: "the pair is being deleted on the secondary" }] };
    }
    case "takeoverAbort":
      assert(state.takeover?.phase === "draining", () => `group ${state.name} was draining for a takeover`);
      return { state: { ...state, takeover: undefined }, effects: [{ type: "kickReflection" }] };
    case "takeoverConvert": {
      assert(state.takeover?.phase === "leftDomain", () => `group ${state.name} left its domain for a takeover`);
      const generation = state.journalGeneration + 1;
      const result: TakeoverOutcome = { group: state.name, reflectedSequence: event.keptSequence, droppedRecords: event.droppedRecords, state: "takeover" };
      const change: SecondaryRecordChange = {
        secondary: { state: "takeover", reflectedSequence: event.keptSequence, takeover: { keptSequence: event.keptSequence, droppedRecords: event.droppedRecords, at: event.atIso } },
        group: { journalGeneration: generation, checkpointSequence: 0, nextSequence: 1 },
      };
      return {
        state: { ...state, takeover: { phase: "converting", fromGeneration: state.journalGeneration, generation, change, result } },
        // A takeover must work on a full disk (the disk filling is a reason to take over): its writes may use the space reserve.
        effects: [{ type: "retireSecondary" }, { type: "openJournal", generation, nextSequence: 1, reserve: true }, { type: "persist", change, critical: true }],
      };
    }
    default:
      return unreachable(event, "secondary group event");
  }
}

/** The volumes' reflected checkpoint as a position. */
export function checkpointPosition(record: SecondaryLifecycleRecord): Position {
  return { writeTimeUs: asWriteTimeUs(record.reflectedWriteTimeUs), acceptNumber: asAcceptNumber(record.reflectedAcceptNumber) };
}

// ---- prepare (POST /v1/pair-secondaries) -------------------------------------------------

export type PrepareDecision =
  /** The same pair asked again: nothing to do, the same answer. */
  | { readonly kind: "answer" }
  | { readonly kind: "refuse"; readonly code: "TM_ERR_CONFLICT"; readonly text: string }
  /** No group of that name: create it (volumes, journal directory, record), state `empty`. */
  | { readonly kind: "create" };

/**
 * What a primary's request to prepare group `group` for pair `pairId` comes to, given what
 * this node has under that name (undefined: nothing; `secondary` undefined: a writable group).
 * The volume checks (sizes, owners, data held) are the shell's: they are about its registry.
 */
export function decidePrepare(existing: { readonly secondary?: { readonly pairId: string; readonly state: SecondaryLifecycleRecord["state"] } | undefined; readonly readOnly?: object | undefined } | undefined, request: { readonly pairId: string; readonly group: string }, nodeId: string): PrepareDecision {
  if (existing === undefined) return { kind: "create" };
  const secondary = existing.secondary;
  if (secondary !== undefined && secondary.pairId === request.pairId) return { kind: "answer" };
  if (secondary !== undefined && secondary.state !== "takeover") {
    return { kind: "refuse", code: "TM_ERR_CONFLICT", text: `group ${request.group} on node ${nodeId} is already the secondary of pair ${secondary.pairId}` };
  }
  // The primary adds what to type there (it knows this node's URL): PrimaryRole.prepareSecondary.
  return { kind: "refuse", code: "TM_ERR_CONFLICT", text: `group ${request.group} already exists on node ${nodeId}${existing.readOnly !== undefined ? " (read-only: the image a deleted pair left)" : ""}; choose another --remote-group` };
}

/**
 * `--node URL` for a command an operator runs against this pair's primary: its management URL
 * when the primary sent it at pair create, else a placeholder naming the node.
 */
export function primaryNodeOption(record: Pick<SecondaryLifecycleRecord, "primaryNode" | "primaryUrl">): string {
  return `--node ${record.primaryUrl ?? `<management URL of node ${record.primaryNode}>`}`;
}

/** The record of a freshly prepared secondary: empty, waiting for the primary's OPEN_GROUP. */
export function newSecondaryRecord(request: {
  readonly pairId: string; readonly primaryNode: string; readonly primaryGroup: string; readonly primaryUrl?: string | undefined;
  readonly transfer: "push" | "pull"; readonly streams: number; readonly reflect: "time" | "seq" | "marker";
  readonly domain?: NamedDomainDeclaration | undefined;
}): SecondaryLifecycleRecord {
  return {
    pairId: request.pairId, primaryNode: request.primaryNode, primaryGroup: request.primaryGroup, transfer: request.transfer, streams: request.streams,
    reflect: request.reflect, state: "empty", startSequence: 1, consistentFromSequence: 0, reflectedSequence: 0, reflectedWriteTimeUs: 0, reflectedAcceptNumber: 0,
    volumes: [], takeover: null,
    ...(request.primaryUrl === undefined ? {} : { primaryUrl: request.primaryUrl }),
    ...(request.domain === undefined ? {} : { domain: { name: request.domain.name, writeTimePolicy: request.domain.writeTimePolicy, maxClockSkewMs: request.domain.maxClockSkewMs } }),
  };
}

/**
 * Whether the primary's CLOSE text (`peerCloseText`) says it suspended the pair: this version's
 * text, or the one primaries before it sent ("pair suspended").
 */
export function primarySuspended(peerCloseText: string | undefined): boolean {
  return peerCloseText !== undefined && (peerCloseText.startsWith(replPairSuspendedCloseText) || peerCloseText === replPairSuspendedCloseTextV1);
}

/** Why the streams close when `pair delete` ends a replicating pair on the secondary. */
export const pairDeleteHoldText = "a pair delete is ending the pair on the secondary";

// ---- what status says --------------------------------------------------------------------

/** What the data path knows that status needs (undefined for a group not live: taken over). */
export interface SecondaryFacts {
  readonly reflectedSequence: number;
  readonly arrivedSequence: number;
  /** Reflection applies again what a disk error may have lost (a rewind waits, or runs through `reapplyThrough`). */
  readonly rewinding: boolean;
  readonly reapplyThrough: number;
  readonly streams: number;
  readonly noStreamSinceIso: string | undefined;
  readonly peerCloseText: string | undefined;
  /** How long no stream of the primary has been attached (0 while one is). */
  readonly noStreamForMs?: number | undefined;
  /**
   * The member of the group's domain that holds its waiting records back, when another one
   * (issue 8, kind 4): its name, why (stopped, no stream, ...), since when reflection of this
   * group has not moved, and whether status calls the group `held` yet.
   */
  readonly held: { readonly holder: string; readonly why: string; readonly sinceIso: string; readonly shown: boolean } | undefined;
  /** Status text while its join of the domain is pending (core/consistency-domain.ts joinPendingText). */
  readonly joinPendingText: string | undefined;
  /** Detached from its domain (`pair detach`): the other members' names it is no longer consistent with. */
  readonly detachedFrom: readonly string[] | undefined;
  /** The member whose arrived position is the frontier, when another one (for the journal-full text). */
  readonly frontierHolder: string | undefined;
  /**
   * In a domain named over several primaries: the frontier holder's primary node, when it is
   * another primary than this group's (status names who holds; undefined otherwise).
   */
  readonly frontierHolderPrimary?: string | undefined;
  readonly journalUsedBytes: number;
  readonly journalBytesMax: number;
  /** The last error seen on the group's link (a refused batch, a closed stream), or null. */
  readonly lastError: string | null;
}

/** The states a secondary shows (mgmt/control.ts pairStates). */
export type SecondaryShownState = "copying" | "replicating" | "disconnected" | "held" | "stopped" | "takeover";

/** Whether the secondary's image is dependent-write consistent (copy done, caught up, nothing being applied again). */
export function isConsistent(state: SecondaryGroupState, facts: { readonly reflectedSequence: number; readonly rewinding: boolean; readonly volumesSuspect?: boolean }): boolean {
  if (state.record.state === "takeover") return true;
  // A failed volume write or fdatasync (the stop that came of it, then applying again what it
  // may have dropped): the volumes may lack records counted as applied until then. A stop that
  // touched no volume (the journal's disk full, a journal I/O error) leaves the image as it was:
  // consistent as of the last record reflected.
  if (facts.volumesSuspect === true || facts.rewinding) return false;
  return state.record.state === "replicating" && facts.reflectedSequence >= state.record.consistentFromSequence;
}

function formatMiB(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** The status reason while the group waits for journal room; `holder`: the group holding reflection back, when another one. */
export function roomWaitReason(state: SecondaryGroupState, usedBytes: number, bytesMax: number, holder: string | undefined): string | null {
  if (state.roomWait === undefined) return null;
  const why = holder === undefined ? "waiting for reflection to free space" : `waiting for reflection (held by group ${holder})`;
  return `journal full (${formatMiB(usedBytes)} of ${formatMiB(bytesMax)}): ${why}`;
}

/**
 * Why a secondary's initial copy (or its wait for one) will not move on by itself, or undefined:
 * the primary said it deleted the pair, or no stream came for secondaryCopyStalledMs (the
 * primary's pair deleted while this node was away, or its site lost). Status shows it as the
 * reason and /v1/health as degraded: only `pair delete --force` here ends such a group.
 */
export function copyStalledReason(state: SecondaryGroupState, facts: Pick<SecondaryFacts, "streams" | "peerCloseText" | "noStreamForMs" | "noStreamSinceIso">): string | undefined {
  const record = state.record;
  if ((record.state !== "copying" && record.state !== "empty") || facts.streams > 0 || state.takeover !== undefined) return undefined;
  const endHere = `end this side with: tidemark pair delete ${state.name} --force (its volumes then keep an incomplete copy, consistent with no point in time, read-only unless --promote)`;
  if (facts.peerCloseText?.startsWith(replPairDeletedCloseText) === true) {
    return `the primary ${record.primaryNode} ended the pair during the initial copy (it said: ${facts.peerCloseText}): nothing more arrives and the copy will not finish; ${endHere}`;
  }
  if ((facts.noStreamForMs ?? 0) >= secondaryCopyStalledMs) {
    const since = facts.noStreamSinceIso === undefined ? "since this node started" : `since ${facts.noStreamSinceIso}`;
    return `the initial copy has not moved for ${Math.floor((facts.noStreamForMs ?? 0) / 1000)} s: no replication stream from primary ${record.primaryNode} ${since}. ` +
      `If that node runs, check the link (it reconnects by itself); if its pair was deleted or its site is lost, ${endHere}`;
  }
  return undefined;
}

/** The pair state and the one-line reason status shows for a secondary group. */
export function describeSecondary(state: SecondaryGroupState, facts: SecondaryFacts | undefined): { readonly state: SecondaryShownState; readonly reason: string | null } {
  const record = state.record;
  const stop = facts === undefined ? undefined : state.stop;
  let shown: SecondaryShownState = stop !== undefined ? "stopped" : record.state === "takeover" ? "takeover" : record.state === "replicating" ? "replicating" : "copying";
  let reason: string | null = null;
  const reflected = facts?.reflectedSequence ?? record.reflectedSequence;
  if (shown === "replicating" && reflected < record.consistentFromSequence) {
    reason = `catching up after the initial copy: consistent once sequence ${record.consistentFromSequence} is reflected`;
  } else if (shown === "replicating" && facts !== undefined && !isConsistent(state, facts)) {
    reason = `applying again what was applied since the last checkpoint (a disk error may have lost it): the image is consistent again once sequence ${facts.reapplyThrough} is reflected`;
  }
  if (shown === "takeover" && record.takeover !== null) reason = `taken over at ${record.takeover.at}: kept through sequence ${record.takeover.keptSequence}, dropped ${record.takeover.droppedRecords} records`;
  if (stop !== undefined) reason = stop.reason;
  if (facts === undefined) return { state: shown, reason };
  if (reason === null && shown === "replicating" && facts.joinPendingText !== undefined) reason = facts.joinPendingText;
  if (reason === null && shown === "replicating" && facts.detachedFrom !== undefined) {
    reason = `detached from its consistency domain: reflects alone and is not consistent with ${facts.detachedFrom.length === 0 ? "the other groups" : facts.detachedFrom.join(", ")} (\`tidemark pair attach ${state.name}\` brings it back)`;
  }
  // A member that holds the domain (stopped, suspended, cut off, or just behind): every group
  // it holds says so, naming it, since when (DESIGN.md).
  if (shown === "replicating" && facts.held !== undefined && facts.arrivedSequence > facts.reflectedSequence) {
    const waiting = facts.arrivedSequence - facts.reflectedSequence;
    const text = `reflection held since ${facts.held.sinceIso} by group ${facts.held.holder} of the same consistency domain (${facts.held.why}): ${waiting} records wait. ` +
      `To let this group go on: bring ${facts.held.holder} back (resume it on the primary), or \`tidemark pair detach ${facts.held.holder}\` on this node (it is then no longer consistent with the others)`;
    if (facts.held.shown) {
      shown = "held";
      reason = text;
    }
  }
  // A group of another primary holds the frontier of a named domain (its write times are behind): say who.
  if (reason === null && shown === "replicating" && facts.frontierHolderPrimary !== undefined && facts.frontierHolder !== undefined && facts.arrivedSequence > facts.reflectedSequence) {
    reason = `reflection waits for group ${facts.frontierHolder} of primary ${facts.frontierHolderPrimary} (domain ${record.domain?.name ?? "?"}): nothing written after its last arrived write time may be applied before it`;
  }
  // Cut off: no stream from the primary (the link, or the primary, is down; it reconnects by
  // itself). Shown as its own state: the consistent-as-of time stops moving meanwhile.
  // (During the initial copy the state stays `copying`, with this reason: the copy is what is missing.)
  // A group that is cut off itself is `disconnected` even when another member holds it too: the
  // link is what the operator fixes first, and the hold stays in the reason.
  if ((shown === "replicating" || shown === "copying" || shown === "held") && facts.streams === 0 && state.takeover === undefined) {
    const since = facts.noStreamSinceIso === undefined ? " since this node started" : ` since ${facts.noStreamSinceIso}`;
    const stalled = copyStalledReason(state, facts);
    if (stalled !== undefined) {
      reason = stalled;
    } else if (primarySuspended(facts.peerCloseText)) {
      // The primary closed its streams because the operator suspended the pair there: it does
      // not reconnect by itself, and the link is not what to fix.
      const suspended = `suspended on primary ${record.primaryNode}${since} (it closed its streams: ${facts.peerCloseText ?? ""}); nothing arrives until \`tidemark pair resume ${record.primaryGroup}\` runs on that node`;
      reason = reason === null ? suspended : `${suspended}; ${reason}`;
    } else {
      const said = facts.peerCloseText === undefined ? "the link or the primary is down" : `the primary said: ${facts.peerCloseText}`;
      const cutOff = `no replication stream from primary ${record.primaryNode}${since} (${said}${facts.lastError === null ? "" : `; last error: ${facts.lastError}`}); the primary reconnects by itself`;
      reason = reason === null ? cutOff : `${cutOff}; ${reason}`;
    }
    if (shown === "replicating" || shown === "held") shown = "disconnected";
  }
  if (stop === undefined && shown !== "takeover") reason = roomWaitReason(state, facts.journalUsedBytes, facts.journalBytesMax, facts.frontierHolder) ?? reason;
  return { state: shown, reason };
}
