// Proves the secondary group's lifecycle machine (src/core/secondary-group-machine.ts) by its
// transitions, table by table (the primary's OPEN_GROUP, copy and batches; the disk; the
// reflector's checkpoints; the operator's takeover; status), and by fast-check properties
// over random event sequences fed through a model shell that completes (or fails) every
// effect with a completion: the machine never throws (peer messages that do not fit are
// refused, never asserted), the record it holds is always what the model's disk holds (it
// changes only through a completed save), effects with a completion end their list, and no
// answer precedes the save it depends on or announces a state the disk does not hold.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  applySecondaryChange, copyStalledReason, decidePrepare, describeSecondary, effectsWithCompletion, initialSecondaryState, isConsistent, mayPull, newSecondaryRecord,
  openRefusal, secondaryIdleCheckpointIntervalMs, stepSecondaryGroup, takeoverCutRefusal, takeoverRefusal,
  type BatchOutcome, type SecondaryFacts, type SecondaryGroupEffect, type SecondaryGroupEvent, type SecondaryGroupState, type SecondaryLifecycleRecord,
} from "../../src/core/secondary-group-machine.ts";
import { asAcceptNumber, asWriteTimeUs } from "../../src/core/types.ts";
import { secondaryCopyStalledMs } from "../../src/core/limits.ts";
import { replPairDeletedCloseText, replPairSuspendedCloseText } from "../../src/protocol/repl-protocol.ts";

const node = "B";
const volumes = [{ volumeId: 10, name: "v1", sizeBytes: 1 << 20 }, { volumeId: 11, name: "v2", sizeBytes: 2 << 20 }];
const primaryVolumes = [{ volumeId: 1, name: "v1", sizeBytes: 1 << 20 }, { volumeId: 2, name: "v2", sizeBytes: 2 << 20 }];

function record(overrides: Partial<SecondaryLifecycleRecord> = {}): SecondaryLifecycleRecord {
  return { ...newSecondaryRecord({ pairId: "p1", primaryNode: "A", primaryGroup: "g", transfer: "push", streams: 2, reflect: "time" }), ...overrides };
}

const replicatingRecord = record({
  state: "replicating", startSequence: 5, consistentFromSequence: 9, reflectedSequence: 12,
  volumes: [{ primaryVolumeId: 1, volumeId: 10 }, { primaryVolumeId: 2, volumeId: 11 }],
});

function state(r: SecondaryLifecycleRecord = record(), generation = 0): SecondaryGroupState {
  return initialSecondaryState({ groupId: 3, name: "g", volumes, record: r, journalGeneration: generation });
}

function step(s: SecondaryGroupState, event: SecondaryGroupEvent) {
  return stepSecondaryGroup(s, event, node);
}

const types = (effects: readonly SecondaryGroupEffect[]): string[] => effects.map((e) => e.type);
const open = (overrides: Partial<Extract<SecondaryGroupEvent, { type: "openGroup" }>> = {}): SecondaryGroupEvent =>
  ({ type: "openGroup", groupHandle: 7, pairId: "p1", startSequence: 5, volumes: primaryVolumes, ...overrides });

// ---- OPEN_GROUP --------------------------------------------------------------------------------

test("OPEN_GROUP on an empty secondary: volumes emptied and a fresh journal opened before `copying` is saved; GROUP_STATE only after the save", () => {
  const first = step(state(), open());
  assert.deepEqual(types(first.effects), ["emptyVolumes", "openJournal", "persist"]);
  assert.deepEqual(first.effects[1], { type: "openJournal", generation: 1, nextSequence: 5, reserve: false });
  assert.equal(first.state.record.state, "empty", "memory follows the save");
  const saved = step(first.state, { type: "persisted" });
  assert.equal(saved.state.record.state, "copying");
  assert.equal(saved.state.record.startSequence, 5);
  assert.equal(saved.state.record.reflectedSequence, 4);
  assert.deepEqual(saved.state.record.volumes, [{ primaryVolumeId: 1, volumeId: 10 }, { primaryVolumeId: 2, volumeId: 11 }]);
  assert.equal(saved.state.journalGeneration, 1);
  assert.deepEqual(types(saved.effects), ["useJournal", "removeJournal", "log", "answerPeer"]);
  assert.deepEqual(saved.effects[0], { type: "useJournal", generation: 1, replacing: 0 });
  assert.deepEqual(saved.effects[3], { type: "answerPeer", message: { type: "GROUP_STATE", state: "copying" } });
});

test("OPEN_GROUP whose save fails: the fresh journal is closed (its directory kept), the stream failed, the record unchanged", () => {
  const first = step(state(), open());
  const failed = step(first.state, { type: "persistFailed", error: "EIO" });
  assert.equal(failed.state.record.state, "empty");
  assert.equal(failed.state.step, undefined);
  assert.deepEqual(types(failed.effects), ["log", "dropJournal", "failStream"]);
  assert.deepEqual(failed.effects[1], { type: "dropJournal", generation: 1 });
});

test("OPEN_GROUP while copying: the same start goes on (no save, the primary sends every extent again); another start begins the copy again", () => {
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] }), 1);
  assert.deepEqual(step(copying, open()).effects, [{ type: "copyRunsAgain" }, { type: "answerPeer", message: { type: "GROUP_STATE", state: "copying" } }]);
  const again = step(copying, open({ startSequence: 8 }));
  assert.deepEqual(types(again.effects), ["emptyVolumes", "openJournal", "persist"]);
  assert.deepEqual(again.effects[1], { type: "openJournal", generation: 2, nextSequence: 8, reserve: false });
});

test("OPEN_GROUP refusals: a stale pair, a taken-over group (by pair), volumes that do not match; each a NACK with a log line", () => {
  const stale = step(state(replicatingRecord), open({ pairId: "p0" }));
  assert.deepEqual(types(stale.effects), ["log", "refusePeer"]);
  assert.equal((stale.effects[1] as { code: string }).code, "STALE_PAIR");
  assert.equal((stale.effects[1] as { refId: number }).refId, 7);
  const taken = state(record({ state: "takeover", takeover: { keptSequence: 40, droppedRecords: 2, at: "2026-01-01T00:00:00.000Z" } }));
  assert.equal(openRefusal(taken, "p1", node)?.code, "TAKEN_OVER");
  assert.match(openRefusal(taken, "p1", node)?.text ?? "", /kept through sequence 40/);
  assert.equal(openRefusal(taken, "p9", node)?.code, "UNKNOWN_GROUP");
  const mismatch = step(state(replicatingRecord), open({ volumes: [{ volumeId: 1, name: "v1", sizeBytes: 4096 }] }));
  assert.equal((mismatch.effects[1] as { code: string }).code, "VOLUME_MISMATCH");
  const missing = step(state(), open({ volumes: [{ volumeId: 1, name: "nope", sizeBytes: 1 << 20 }] }));
  assert.equal((missing.effects[1] as { code: string }).code, "VOLUME_MISMATCH");
  assert.equal(missing.state.step, undefined, "nothing begun");
});

test("OPEN_GROUP on a replicating secondary whose volumes match: GROUP_STATE replicating, nothing saved", () => {
  assert.deepEqual(step(state(replicatingRecord), open()).effects, [{ type: "answerPeer", message: { type: "GROUP_STATE", state: "replicating" } }]);
});

test("OPEN_GROUP after the primary grew a volume (volume resize): replicating goes on (the resize record grows it here); a copy grows the volume first, then empties it", () => {
  const grown = [{ volumeId: 1, name: "v1", sizeBytes: 8 << 20 }, { volumeId: 2, name: "v2", sizeBytes: 2 << 20 }];
  assert.deepEqual(step(state(replicatingRecord), open({ volumes: grown })).effects, [{ type: "answerPeer", message: { type: "GROUP_STATE", state: "replicating" } }]);
  const fresh = step(state(), open({ volumes: grown }));
  assert.deepEqual(types(fresh.effects), ["growVolumes", "emptyVolumes", "openJournal", "persist"]);
  assert.deepEqual(fresh.effects[0], { type: "growVolumes", volumes: [{ volumeId: 10, sizeBytes: 8 << 20 }] });
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] }), 1);
  assert.deepEqual(types(step(copying, open({ volumes: grown })).effects), ["growVolumes", "copyRunsAgain", "answerPeer"]);
  // Once grown (the shell's event), a copy chunk past the old end is taken.
  const chunk = { type: "copyChunk", message: "COPY_DATA", chunkId: 3, primaryVolumeId: 1, offsetBytes: 4 << 20, lengthBytes: 4096 } as const;
  assert.equal(types(step(copying, chunk).effects)[0], "refusePeer", "past the end before the grow");
  const after = step(copying, { type: "volumeGrown", volumeId: 10, sizeBytes: 8 << 20 });
  assert.deepEqual(after.effects, []);
  assert.equal(after.state.volumes.find((v) => v.volumeId === 10)?.sizeBytes, 8 << 20);
  assert.equal(types(step(after.state, chunk).effects)[0], "writeCopyChunk");
  // Smaller on the primary than here: never a grow in reverse.
  const shrunk = step(state(replicatingRecord), open({ volumes: [{ volumeId: 1, name: "v1", sizeBytes: 1 << 19 }, primaryVolumes[1]!] }));
  assert.equal((shrunk.effects[1] as { code: string }).code, "VOLUME_MISMATCH");
});

// ---- the initial copy ------------------------------------------------------------------------

test("copy chunks: written and acknowledged while copying; refused (NACK OUT_OF_RANGE) outside a volume or once the copy is done", () => {
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] }));
  const chunk = { type: "copyChunk", message: "COPY_DATA", chunkId: 3, primaryVolumeId: 1, offsetBytes: 4096, lengthBytes: 4096 } as const;
  assert.deepEqual(step(copying, chunk).effects, [
    { type: "writeCopyChunk", message: "COPY_DATA", volumeId: 10, offsetBytes: 4096, lengthBytes: 4096 },
    { type: "answerPeer", message: { type: "COPY_ACK", chunkId: 3 } },
  ]);
  const outside = step(copying, { ...chunk, offsetBytes: (1 << 20) - 10 });
  assert.equal((outside.effects[0] as { code: string }).code, "OUT_OF_RANGE");
  const unknownVolume = step(copying, { ...chunk, primaryVolumeId: 2 });
  assert.equal((unknownVolume.effects[0] as { code: string }).code, "OUT_OF_RANGE");
  const done = step(state(replicatingRecord), chunk);
  assert.deepEqual(types(done.effects), ["refusePeer"]);
  assert.equal((done.effects[0] as { text: string }).text, "the initial copy is already done");
});

test("COPY_DONE: volumes synced, then the domain join (which saves `replicating`), then COPY_ACK, a reflection kick and pulls", () => {
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] }));
  const done = step(copying, { type: "copyDone", chunkId: 9, consistentFromSequence: 30 });
  assert.deepEqual(types(done.effects), ["syncCopiedVolumes"]);
  const synced = step(done.state, { type: "copySynced" });
  assert.deepEqual(synced.effects, [{ type: "joinDomain", change: { secondary: { state: "replicating", consistentFromSequence: 30 } } }]);
  assert.equal(synced.state.record.state, "copying");
  const joined = step(synced.state, { type: "persisted" });
  assert.equal(joined.state.record.state, "replicating");
  assert.equal(joined.state.record.consistentFromSequence, 30);
  assert.deepEqual(types(joined.effects), ["log", "answerPeer", "kickReflection", "schedulePulls"]);
  assert.deepEqual(joined.effects[1], { type: "answerPeer", message: { type: "COPY_ACK", chunkId: 9 } });
});

test("COPY_DONE refused by the domain (a member stopped or not checkpointed): the stream fails, the group stays copying", () => {
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] }));
  let s = step(copying, { type: "copyDone", chunkId: 9, consistentFromSequence: 30 }).state;
  s = step(s, { type: "copySynced" }).state;
  const refused = step(s, { type: "joinRefused", reason: "group h is stopped" });
  assert.equal(refused.state.record.state, "copying");
  assert.equal(refused.state.step, undefined);
  assert.deepEqual(refused.effects.at(-1), { type: "failStream", code: "INTERNAL", text: "group h is stopped" });
});

test("COPY_DONE on an empty group is refused (no copy began); again on a replicating one it is answered without a save", () => {
  const empty = step(state(), { type: "copyDone", chunkId: 9, consistentFromSequence: 30 });
  assert.deepEqual(types(empty.effects), ["refusePeer"]);
  assert.equal(empty.state.step, undefined);
  const again = step(state(replicatingRecord), { type: "copyDone", chunkId: 9, consistentFromSequence: 9 });
  assert.deepEqual(types(again.effects), ["answerPeer", "kickReflection", "schedulePulls"]);
  const differs = step(state(replicatingRecord), { type: "copyDone", chunkId: 9, consistentFromSequence: 99 });
  assert.deepEqual(types(differs.effects), ["log", "answerPeer", "kickReflection", "schedulePulls"]);
  assert.equal(differs.state.record.consistentFromSequence, 9, "the secondary keeps its consistency point");
});

// ---- batches, journal room, the disk -----------------------------------------------------------

test("batches: received unless taken over; the receiver's outcome becomes ACK or the NACK the protocol names", () => {
  assert.deepEqual(step(state(replicatingRecord), { type: "batch", batchId: 4 }).effects, [{ type: "receiveBatch" }]);
  const outcome = (o: BatchOutcome) => step(state(replicatingRecord), { type: "batchReceived", batchId: 4, outcome: o }).effects;
  assert.deepEqual(outcome({ ok: true, records: 3 }), [{ type: "kickReflection" }, { type: "answerPeer", message: { type: "ACK", batchId: 4 } }]);
  assert.deepEqual(outcome({ ok: true, records: 0 }), [{ type: "answerPeer", message: { type: "ACK", batchId: 4 } }]);
  const noSpace = outcome({ ok: false, reason: "journal-full", detail: "d", roomText: "journal full (1.0 MiB of 1.0 MiB)" });
  assert.deepEqual(types(noSpace), ["refusePeer", "schedulePulls"]);
  assert.equal((noSpace[0] as { code: string; resendWhenRoom: boolean }).code, "NO_SPACE");
  assert.equal((noSpace[0] as { resendWhenRoom: boolean }).resendWhenRoom, true);
  assert.equal((outcome({ ok: false, reason: "stopped", errno: "EIO", detail: "I/O error" })[0] as { code: string }).code, "INTERNAL");
  assert.equal((outcome({ ok: false, reason: "stopped", errno: "ENOSPC", detail: "full" })[0] as { code: string }).code, "NO_SPACE");
  assert.deepEqual(types(outcome({ ok: false, reason: "bad-sequence", detail: "d" })), ["log", "refusePeer", "failStream"]);
  assert.deepEqual(types(outcome({ ok: false, reason: "reorder-bytes-full", detail: "d" })), ["log", "refusePeer"]);
  // While copying, records arrive but reflection has nothing to do.
  const copying = state(record({ state: "copying" }));
  assert.deepEqual(types(step(copying, { type: "batchReceived", batchId: 4, outcome: { ok: true, records: 2 } }).effects), ["answerPeer"]);
});

test("journal full: one log line per episode and a reflection kick; room back ends it with one line; freed room asks the streams again", () => {
  const first = step(state(replicatingRecord), { type: "journalFull", nowMs: 100, detail: "a", usedBytes: 10, bytesMax: 10 });
  assert.deepEqual(types(first.effects), ["kickReflection", "log"]);
  const second = step(first.state, { type: "journalFull", nowMs: 200, detail: "b", usedBytes: 10, bytesMax: 10 });
  assert.deepEqual(second.effects, []);
  assert.deepEqual(second.state.roomWait, { sinceMs: 100, detail: "b" });
  assert.equal(mayPull(second.state), true);
  const back = step(second.state, { type: "journalRoomBack", nowMs: 350, usedBytes: 2 });
  assert.equal(back.state.roomWait, undefined);
  const line = back.effects[0];
  assert.equal(line?.type === "log" ? line.fields.waitedMs : undefined, 250);
  assert.deepEqual(step(back.state, { type: "journalRoomBack", nowMs: 400, usedBytes: 2 }).effects, []);
  assert.deepEqual(step(back.state, { type: "roomFreed" }).effects, [{ type: "roomAgain" }]);
});

test("the disk stops and resumes the group: the domain hears of it, reflection is kicked, and a resume is room again", () => {
  const stopped = step(state(replicatingRecord), { type: "stopped", stop: { errno: "ENOSPC", reason: "out of space" } });
  assert.deepEqual(types(stopped.effects), ["domainMemberStopped", "kickReflection"]);
  assert.equal(mayPull(stopped.state), false);
  const resumed = step(stopped.state, { type: "resumed" });
  assert.deepEqual(types(resumed.effects), ["domainMemberResumed", "kickReflection", "roomAgain"]);
  assert.deepEqual(step(state(replicatingRecord), { type: "receivedLost", why: "w" }).effects, [{ type: "closeStreams", why: "resend", text: "w" }]);
});

test("stopped by its disk, the image stays consistent (consistent-as-of stays) unless a volume write or fdatasync failed", () => {
  // Before: any stop made the image "not consistent", so a secondary stopped by a full journal
  // disk showed no consistent-as-of (and no lag floor) though its volumes were untouched.
  const stopped = step(state(replicatingRecord), { type: "stopped", stop: { errno: "ENOSPC", reason: "out of space" } }).state;
  assert.equal(isConsistent(stopped, { reflectedSequence: 12, rewinding: false }), true, "a journal-side stop: the volumes hold everything through 12");
  assert.equal(isConsistent(stopped, { reflectedSequence: 12, rewinding: false, volumesSuspect: true }), false, "a volume write or fdatasync failed: they may lack applied records");
  assert.equal(isConsistent(stopped, { reflectedSequence: 12, rewinding: true }), false, "applying again after the resume");
  assert.equal(isConsistent(stopped, { reflectedSequence: 8, rewinding: false }), false, "not caught up after the copy");
});

// ---- checkpoints -------------------------------------------------------------------------------

const position = { writeTimeUs: asWriteTimeUs(500), acceptNumber: asAcceptNumber(44) };
const due = (overrides: Partial<Extract<SecondaryGroupEvent, { type: "checkpointDue" }>> = {}): SecondaryGroupEvent =>
  ({ type: "checkpointDue", nowMs: 1000, force: false, reflectedSequence: 20, reflectedPosition: position, reflectedWallTimeUs: 0, volumesWritten: true, checkpointable: true, ...overrides });

test("checkpoints: nothing new is done; a group not checkpointable waits; an idle group is checkpointed at most every interval unless forced", () => {
  const s = state(replicatingRecord);
  assert.deepEqual(step(s, due({ reflectedSequence: 12 })).effects, [{ type: "checkpointAnswer", done: true }]);
  assert.deepEqual(step(s, due({ checkpointable: false })).effects, [{ type: "checkpointAnswer", done: false }]);
  const idle = { ...s, lastCheckpointMs: 1000 };
  assert.deepEqual(step(idle, due({ volumesWritten: false, nowMs: 1000 + secondaryIdleCheckpointIntervalMs - 1 })).effects, [{ type: "checkpointAnswer", done: false }]);
  assert.deepEqual(types(step(idle, due({ volumesWritten: false, nowMs: 1001, force: true })).effects), ["persistCheckpoint"]);
  const waiting = { ...idle, roomWait: { sinceMs: 0, detail: "d" } };
  assert.deepEqual(types(step(waiting, due({ volumesWritten: false, nowMs: 1001 })).effects), ["persistCheckpoint"], "a group waiting for room is checkpointed at once");
});

test("a checkpoint syncs the volumes before its save, and trims only after it", () => {
  const first = step(state(replicatingRecord), due());
  assert.deepEqual(types(first.effects), ["syncVolumes", "persistCheckpoint"]);
  assert.equal(first.state.record.reflectedSequence, 12, "memory follows the save");
  const saved = step(first.state, { type: "checkpointSaved" });
  assert.equal(saved.state.record.reflectedSequence, 20);
  assert.equal(saved.state.record.reflectedAcceptNumber, 44);
  assert.deepEqual(saved.effects, [{ type: "trimJournal", throughSequence: 20 }, { type: "checkpointAnswer", done: true }]);
  const abandoned = step(first.state, { type: "checkpointAbandoned" });
  assert.equal(abandoned.state.checkpoint, undefined);
  assert.equal(abandoned.state.record.reflectedSequence, 12);
});

// ---- takeover ------------------------------------------------------------------------------------

test("takeover: refused while copying or in progress; streams held (the primary waits), the cut checked, the domain left, the primary told once decided, the conversion saved before it is answered", () => {
  assert.equal(takeoverRefusal(state(record({ state: "copying" })))?.code, "TM_ERR_STATE");
  const draining = step(state(replicatingRecord, 2), { type: "takeover" });
  assert.deepEqual(draining.effects, [{ type: "closeStreams", why: "hold", text: "a takeover is being decided on the secondary" }]);
  assert.equal(mayPull(draining.state), false);
  assert.equal(takeoverRefusal(draining.state)?.code, "TM_ERR_STATE");
  // Not decided yet: the primary is asked to wait, never told its pair is over.
  assert.equal(openRefusal(draining.state, "p1", node)?.code, "GROUP_BUSY");
  assert.equal((step(draining.state, { type: "batch", batchId: 1 }).effects[0] as { code: string }).code, "GROUP_BUSY");
  assert.equal(takeoverCutRefusal(draining.state, 8)?.code, "TM_ERR_STATE");
  const undecided = step(draining.state, { type: "takeoverDrained", reflectedSequence: 15 });
  assert.deepEqual(undecided.effects, [{ type: "leaveDomain", why: "taken over" }]);
  assert.equal(openRefusal(undecided.state, "p1", node)?.code, "GROUP_BUSY");
  const left = step(undecided.state, { type: "takeoverDecided" });
  assert.deepEqual(left.effects, [{ type: "closeStreams", why: "taken-over", text: "taken over on the secondary" }]);
  assert.equal(openRefusal(left.state, "p1", node)?.code, "GROUP_BUSY", "until it is converted: then NACK TAKEN_OVER with the cut");
  assert.equal((step(left.state, { type: "batch", batchId: 1 }).effects[0] as { code: string }).code, "TAKEN_OVER");
  const converting = step(left.state, { type: "takeoverConvert", keptSequence: 15, droppedRecords: 3, atIso: "2026-01-01T00:00:00.000Z" });
  assert.deepEqual(types(converting.effects), ["retireSecondary", "openJournal", "persist"]);
  assert.deepEqual(converting.effects[1], { type: "openJournal", generation: 3, nextSequence: 1, reserve: true });
  assert.equal((converting.effects[2] as { critical: boolean }).critical, true, "a takeover may use the space reserve");
  assert.equal(converting.state.record.state, "replicating");
  const done = step(converting.state, { type: "persisted" });
  assert.equal(done.state.record.state, "takeover");
  assert.deepEqual(done.state.record.takeover, { keptSequence: 15, droppedRecords: 3, at: "2026-01-01T00:00:00.000Z" });
  assert.deepEqual(types(done.effects), ["removeJournal", "becomeWritable", "log", "answerOperator"]);
  assert.deepEqual(done.effects[0], { type: "removeJournal", generation: 2 });
  assert.deepEqual(done.effects[3], { type: "answerOperator", result: { group: "g", reflectedSequence: 15, droppedRecords: 3, state: "takeover" } });
  assert.deepEqual(step(done.state, { type: "takeover" }).effects, [done.effects[3]], "taken over again: the same answer");
});

test("takeover: a cut short of the copy's consistency point is refused and the group replicates on; an abort likewise", () => {
  const draining = step(state(replicatingRecord), { type: "takeover" }).state;
  const refused = step(draining, { type: "takeoverDrained", reflectedSequence: 8 });
  assert.equal(refused.state.takeover, undefined);
  assert.equal((refused.effects[0] as { code: string }).code, "TM_ERR_STATE");
  assert.equal(step(draining, { type: "takeoverAbort" }).state.takeover, undefined);
});

test("a takeover whose save fails is abandoned: the group takes nothing until a restart, and the operator hears why", () => {
  let s = step(state(replicatingRecord), { type: "takeover" }).state;
  s = step(s, { type: "takeoverDrained", reflectedSequence: 15 }).state;
  s = step(s, { type: "takeoverConvert", keptSequence: 15, droppedRecords: 0, atIso: "t" }).state;
  const failed = step(s, { type: "persistFailed", error: "EIO" });
  assert.equal(failed.state.record.state, "replicating");
  assert.deepEqual(failed.state.takeover, { phase: "abandoned" });
  assert.equal(failed.effects.at(-1)?.type, "refuseOperator");
  assert.equal(openRefusal(failed.state, "p1", node)?.code, "GROUP_BUSY");
});

// ---- prepare and status ------------------------------------------------------------------------

test("prepare: the same pair is answered again, another pair or a writable group of that name is a conflict, none is created", () => {
  assert.deepEqual(decidePrepare(undefined, { pairId: "p1", group: "g" }, node), { kind: "create" });
  assert.deepEqual(decidePrepare({ secondary: { pairId: "p1", state: "copying" } }, { pairId: "p1", group: "g" }, node), { kind: "answer" });
  assert.match(JSON.stringify(decidePrepare({ secondary: { pairId: "p0", state: "replicating" } }, { pairId: "p1", group: "g" }, node)), /already the secondary of pair p0/);
  assert.match(JSON.stringify(decidePrepare({ secondary: { pairId: "p0", state: "takeover" } }, { pairId: "p1", group: "g" }, node)), /choose another --remote-group/);
  assert.match(JSON.stringify(decidePrepare({}, { pairId: "p1", group: "g" }, node)), /choose another --remote-group/);
});

const facts = (overrides: Partial<SecondaryFacts> = {}): SecondaryFacts => ({
  reflectedSequence: 12, arrivedSequence: 12, rewinding: false, reapplyThrough: 0, streams: 1, noStreamSinceIso: undefined, peerCloseText: undefined,
  held: undefined, joinPendingText: undefined, detachedFrom: undefined, frontierHolder: undefined, journalUsedBytes: 0, journalBytesMax: 1 << 20, lastError: null, ...overrides,
});

test("status: catching up, applying again, held by a stopped member, no stream, journal full, stopped, taken over", () => {
  const s = state(replicatingRecord);
  assert.deepEqual(describeSecondary(s, facts()), { state: "replicating", reason: null });
  assert.equal(isConsistent(s, facts()), true);
  assert.match(describeSecondary(s, facts({ reflectedSequence: 8 })).reason ?? "", /catching up after the initial copy: consistent once sequence 9/);
  assert.equal(isConsistent(s, facts({ reflectedSequence: 8 })), false);
  assert.match(describeSecondary(s, facts({ rewinding: true, reapplyThrough: 40 })).reason ?? "", /consistent again once sequence 40/);
  assert.match(describeSecondary(s, facts({ arrivedSequence: 20, held: { holder: "h", why: "stopped: out of space", sinceIso: "T0", shown: true } })).reason ?? "", /held since T0 by group h .*\(stopped: out of space\): 8 records wait/);
  assert.equal(describeSecondary(s, facts({ arrivedSequence: 20, held: { holder: "h", why: "stopped: out of space", sinceIso: "T0", shown: true } })).state, "held");
  assert.equal(describeSecondary(s, facts({ arrivedSequence: 20, held: { holder: "h", why: "behind", sinceIso: "T0", shown: false } })).state, "replicating", "a member just behind is not called held at once");
  // Held by a member, and cut off itself (its primary is down): disconnected, the hold in the reason.
  const cutAndHeld = describeSecondary(s, facts({ arrivedSequence: 20, streams: 0, noStreamSinceIso: "T1", held: { holder: "h", why: "no replication stream from its primary", sinceIso: "T0", shown: true } }));
  assert.equal(cutAndHeld.state, "disconnected");
  assert.match(cutAndHeld.reason ?? "", /^no replication stream from primary .* since T1 .*; reflection held since T0 by group h/);
  assert.match(describeSecondary(s, facts({ detachedFrom: ["g2"] })).reason ?? "", /detached from its consistency domain: reflects alone and is not consistent with g2/);
  assert.match(describeSecondary(s, facts({ joinPendingText: "joined its consistency domain at T" })).reason ?? "", /joined its consistency domain at T/);
  assert.match(describeSecondary(s, facts({ streams: 0, peerCloseText: "group stopped" })).reason ?? "", /no replication stream from primary A since this node started \(the primary said: group stopped\)/);
  const full = { ...s, roomWait: { sinceMs: 0, detail: "d" } };
  assert.match(describeSecondary(full, facts({ frontierHolder: "h", journalUsedBytes: 1 << 20 })).reason ?? "", /journal full \(1.0 MiB of 1.0 MiB\): waiting for reflection \(held by group h\)/);
  const stopped = { ...s, stop: { errno: "EIO" as const, reason: "I/O error on x" } };
  assert.deepEqual(describeSecondary(stopped, facts()), { state: "stopped", reason: "I/O error on x" });
  assert.equal(isConsistent(stopped, facts()), true, "a stop that touched no volume keeps the image consistent");
  assert.equal(isConsistent(stopped, { ...facts(), volumesSuspect: true }), false, "one of a volume write or fdatasync does not");
  const taken = state(record({ state: "takeover", takeover: { keptSequence: 40, droppedRecords: 2, at: "T" } }));
  assert.deepEqual(describeSecondary(taken, undefined), { state: "takeover", reason: "taken over at T: kept through sequence 40, dropped 2 records" });
  assert.equal(describeSecondary(state(record({ state: "copying" })), facts()).state, "copying");
});

test("status: a pair the primary suspended says so (this version's CLOSE text and the older one), not that the primary reconnects; the last error is shown", () => {
  const s = state(replicatingRecord);
  for (const text of [replPairSuspendedCloseText, "pair suspended"]) {
    const described = describeSecondary(s, facts({ streams: 0, noStreamSinceIso: "T1", peerCloseText: text }));
    assert.equal(described.state, "disconnected");
    assert.match(described.reason ?? "", /^suspended on primary A since T1 .*nothing arrives until `tidemark pair resume \S+` runs on that node/, text);
    assert.doesNotMatch(described.reason ?? "", /reconnects by itself/);
  }
  const silent = describeSecondary(s, facts({ streams: 0, noStreamSinceIso: "T1", lastError: "peer silent for 5016 ms" }));
  assert.match(silent.reason ?? "", /\(the link or the primary is down; last error: peer silent for 5016 ms\); the primary reconnects by itself/);
});

test("pair delete holds the group like a takeover, and its streams close saying a pair delete ends it", () => {
  const held = step(state(replicatingRecord, 2), { type: "takeover", for: "pairDelete" });
  assert.deepEqual(held.effects, [{ type: "closeStreams", why: "hold", text: "a pair delete is ending the pair on the secondary" }]);
  assert.equal(openRefusal(held.state, "p1", node)?.code, "GROUP_BUSY");
});

// ---- properties ------------------------------------------------------------------------------------

/** One thing that happens to the group, as a random schedule picks it; the model shell turns it into events. */
type Action =
  | { readonly kind: "open"; readonly pairId: string; readonly startSequence: number; readonly volumesMatch: boolean }
  | { readonly kind: "chunk"; readonly primaryVolumeId: number; readonly offsetBytes: number; readonly lengthBytes: number }
  | { readonly kind: "copyDone"; readonly consistentFromSequence: number }
  | { readonly kind: "batch" }
  | { readonly kind: "disk"; readonly event: "stopped" | "resumed" | "journalFull" | "journalRoomBack" | "roomFreed" | "receivedLost" }
  | { readonly kind: "checkpoint"; readonly reflectedSequence: number; readonly force: boolean; readonly volumesWritten: boolean; readonly checkpointable: boolean }
  | { readonly kind: "takeover"; readonly reflectedSequence: number; readonly abort: boolean };

const actionArb: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ kind: fc.constant("open" as const), pairId: fc.constantFrom("p1", "p1", "p0"), startSequence: fc.integer({ min: 1, max: 6 }), volumesMatch: fc.boolean() }),
  fc.record({ kind: fc.constant("chunk" as const), primaryVolumeId: fc.integer({ min: 0, max: 3 }), offsetBytes: fc.integer({ min: 0, max: 3 << 20 }), lengthBytes: fc.integer({ min: 0, max: 1 << 20 }) }),
  fc.record({ kind: fc.constant("copyDone" as const), consistentFromSequence: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ kind: fc.constant("batch" as const) }),
  fc.record({ kind: fc.constant("disk" as const), event: fc.constantFrom("stopped", "resumed", "journalFull", "journalRoomBack", "roomFreed", "receivedLost") }),
  fc.record({ kind: fc.constant("checkpoint" as const), reflectedSequence: fc.integer({ min: 0, max: 40 }), force: fc.boolean(), volumesWritten: fc.boolean(), checkpointable: fc.boolean() }),
  fc.record({ kind: fc.constant("takeover" as const), reflectedSequence: fc.integer({ min: 0, max: 40 }), abort: fc.boolean() }),
);

const batchOutcomeArb: fc.Arbitrary<BatchOutcome> = fc.oneof(
  fc.record({ ok: fc.constant(true as const), records: fc.integer({ min: 0, max: 5 }) }),
  fc.record({ ok: fc.constant(false as const), reason: fc.constant("stopped" as const), errno: fc.constantFrom("ENOSPC" as const, "EIO" as const), detail: fc.string() }),
  fc.record({ ok: fc.constant(false as const), reason: fc.constant("journal-full" as const), detail: fc.string(), roomText: fc.string() }),
  fc.record({ ok: fc.constant(false as const), reason: fc.constantFrom("bad-sequence" as const, "position-not-increasing" as const, "reorder-records-full" as const), detail: fc.string() }),
);

/** The model shell: the disk it saves to, and the checks on every effect list. */
class ModelShell {
  state: SecondaryGroupState;
  disk: SecondaryLifecycleRecord;
  private readonly succeed: () => boolean;
  private readonly outcome: () => BatchOutcome;

  constructor(initial: SecondaryLifecycleRecord, succeed: () => boolean, outcome: () => BatchOutcome) {
    this.state = state(initial);
    this.disk = initial;
    this.succeed = succeed;
    this.outcome = outcome;
  }

  /** A save the model's disk completed; the machine hears of it with the next event. */
  private saved: SecondaryLifecycleRecord | undefined;

  /** Steps `event` and its completions; checks every effect list. */
  run(event: SecondaryGroupEvent): void {
    let next: SecondaryGroupEvent | undefined = event;
    while (next !== undefined) {
      if (this.saved !== undefined) this.disk = this.saved;
      this.saved = undefined;
      const { state: after, effects } = stepSecondaryGroup(this.state, next, node);
      this.state = after;
      assert.deepEqual(this.state.record, this.disk, `after ${JSON.stringify(next)}: memory follows the save`);
      next = this.check(effects);
    }
  }

  private check(effects: readonly SecondaryGroupEffect[]): SecondaryGroupEvent | undefined {
    let completion: SecondaryGroupEvent | undefined;
    let saveSeen = false;
    effects.forEach((effect, i) => {
      if (effectsWithCompletion.has(effect.type)) assert.equal(i, effects.length - 1, `${effect.type} ends its list: ${types(effects).join(",")}`);
      if (effect.type === "persist" || effect.type === "joinDomain" || effect.type === "persistCheckpoint") saveSeen = true;
      if (effect.type === "answerPeer" || effect.type === "answerOperator") assert.equal(saveSeen, false, "no answer after a save in the same list");
      // A state the disk does not hold is never announced.
      if (effect.type === "answerPeer" && effect.message.type === "GROUP_STATE") {
        assert.equal(effect.message.state, this.disk.state === "replicating" ? "replicating" : this.disk.state === "copying" ? "copying" : "empty");
      }
      if (effect.type === "answerPeer" && effect.message.type === "COPY_ACK" && !effects.some((e) => e.type === "writeCopyChunk")) assert.equal(this.disk.state, "replicating");
      if (effect.type === "answerOperator") assert.equal(this.disk.state, "takeover");
      switch (effect.type) {
        case "persist":
        case "joinDomain":
          if (this.succeed()) {
            this.saved = applySecondaryChange(this.disk, effect.change);
            completion = { type: "persisted" };
          } else {
            completion = effect.type === "persist" ? { type: "persistFailed", error: "EIO" } : { type: "joinRefused", reason: "a member is stopped" };
          }
          return;
        case "persistCheckpoint":
          if (this.succeed()) {
            this.saved = applySecondaryChange(this.disk, effect.change);
            completion = { type: "checkpointSaved" };
          } else {
            completion = { type: "checkpointAbandoned" };
          }
          return;
        case "syncCopiedVolumes":
          completion = this.succeed() ? { type: "copySynced" } : { type: "copySyncFailed", error: "EIO" };
          return;
        case "receiveBatch":
          completion = { type: "batchReceived", batchId: 1, outcome: this.outcome() };
          return;
        default:
          return;
      }
    });
    return completion;
  }

  /** The shell's contract: lifecycle steps one at a time, one checkpoint at a time, the takeover's order. */
  act(action: Action): void {
    const s = this.state;
    switch (action.kind) {
      case "open":
        if (s.step !== undefined) return;
        this.run({ type: "openGroup", groupHandle: 1, pairId: action.pairId, startSequence: action.startSequence, volumes: action.volumesMatch ? primaryVolumes : [{ volumeId: 1, name: "v9", sizeBytes: 4096 }] });
        return;
      case "chunk":
        this.run({ type: "copyChunk", message: "COPY_ZEROES", chunkId: 1, primaryVolumeId: action.primaryVolumeId, offsetBytes: action.offsetBytes, lengthBytes: action.lengthBytes });
        return;
      case "copyDone":
        if (s.step !== undefined) return;
        this.run({ type: "copyDone", chunkId: 2, consistentFromSequence: action.consistentFromSequence });
        return;
      case "batch":
        this.run({ type: "batch", batchId: 1 });
        return;
      case "disk":
        switch (action.event) {
          case "stopped":
            this.run({ type: "stopped", stop: { errno: "EIO", reason: "I/O error" } });
            return;
          case "journalFull":
            this.run({ type: "journalFull", nowMs: 5, detail: "d", usedBytes: 1, bytesMax: 1 });
            return;
          case "journalRoomBack":
            this.run({ type: "journalRoomBack", nowMs: 9, usedBytes: 0 });
            return;
          case "receivedLost":
            this.run({ type: "receivedLost", why: "w" });
            return;
          default:
            this.run({ type: action.event });
            return;
        }
      case "checkpoint":
        if (s.checkpoint !== undefined) return;
        this.run({ type: "checkpointDue", nowMs: 50_000, force: action.force, reflectedSequence: action.reflectedSequence, reflectedPosition: position, reflectedWallTimeUs: 0, volumesWritten: action.volumesWritten, checkpointable: action.checkpointable });
        return;
      case "takeover": {
        const phase = (): string | undefined => this.state.takeover?.phase;
        this.run({ type: "takeover" });
        if (phase() !== "draining") return;
        if (action.abort) {
          this.run({ type: "takeoverAbort" });
          return;
        }
        this.run({ type: "takeoverDrained", reflectedSequence: action.reflectedSequence });
        if (phase() !== "leftDomain") return;
        this.run({ type: "takeoverDecided" });
        this.run({ type: "takeoverConvert", keptSequence: action.reflectedSequence, droppedRecords: 0, atIso: "T" });
        return;
      }
    }
  }
}

test("property: any schedule of peer messages, disk events, checkpoints and takeovers never throws, and memory is what the disk holds", () => {
  const reached = new Set<string>();
  fc.assert(
    fc.property(
      fc.constantFrom(record(), replicatingRecord, record({ state: "copying", startSequence: 3, volumes: [{ primaryVolumeId: 1, volumeId: 10 }] })),
      fc.array(actionArb, { maxLength: 60 }),
      fc.infiniteStream(fc.boolean()),
      fc.infiniteStream(batchOutcomeArb),
      (initial, actions, successes, outcomes) => {
        const shell = new ModelShell(initial, () => successes.next().value as boolean, () => outcomes.next().value as BatchOutcome);
        for (const action of actions) {
          shell.act(action);
          reached.add(shell.disk.state);
        }
        // Taken over is final: everything from a primary is refused from then on.
        if (shell.disk.state === "takeover") assert.equal(openRefusal(shell.state, "p1", node)?.code, "TAKEN_OVER");
        if (shell.state.record.state === "replicating" && shell.state.takeover === undefined && shell.state.stop === undefined) assert.equal(mayPull(shell.state), true);
      },
    ),
    { numRuns: 400 },
  );
  // The schedules really went through the lifecycle (a generator stuck in one state would pass anything).
  assert.deepEqual([...reached].sort(), ["copying", "empty", "replicating", "takeover"]);
});

test("property: a copy reaches replicating only through COPY_DONE, its sync and the domain's join, never from empty", () => {
  fc.assert(
    fc.property(fc.array(actionArb, { maxLength: 40 }), fc.infiniteStream(fc.boolean()), (actions, successes) => {
      const shell = new ModelShell(record(), () => successes.next().value as boolean, () => ({ ok: true, records: 1 }));
      let sawCopying = false;
      for (const action of actions) {
        const before = shell.disk.state;
        shell.act(action);
        if (shell.disk.state === "copying") sawCopying = true;
        if (before !== "replicating" && shell.disk.state === "replicating") {
          assert.equal(action.kind, "copyDone");
          assert.equal(sawCopying, true, "replicating only after a copy began");
        }
      }
    }),
    { numRuns: 300 },
  );
});

// ---- pair delete --force during the initial copy (issue 9 item 4: a copy the primary abandoned) ----

test("abandonCopy: a copying or empty group stops receiving (streams closed, the primary told to wait); refused once replicating or while a step runs; takeoverAbort undoes it", () => {
  const copying = state(record({ state: "copying", startSequence: 5, volumes: [{ primaryVolumeId: 1, volumeId: 10 }, { primaryVolumeId: 2, volumeId: 11 }] }));
  for (const s of [copying, state()]) {
    const held = step(s, { type: "abandonCopy" });
    assert.deepEqual(types(held.effects), ["closeStreams"]);
    // Chunks, OPEN_GROUP and COPY_DONE that still come are refused (GROUP_BUSY): nothing more is written.
    assert.deepEqual(types(step(held.state, { type: "copyChunk", message: "COPY_DATA", chunkId: 1, primaryVolumeId: 1, offsetBytes: 0, lengthBytes: 4096 }).effects), ["failStream"]);
    assert.equal(openRefusal(held.state, "p1", node)?.code, "GROUP_BUSY");
    assert.equal(step(held.state, { type: "takeoverAbort" }).state.takeover, undefined);
  }
  const refused = step(state(replicatingRecord), { type: "abandonCopy" });
  assert.deepEqual(types(refused.effects), ["refuseOperator"]);
  const starting = step(state(), open());
  assert.deepEqual(types(step(starting.state, { type: "abandonCopy" }).effects), ["refuseOperator"]);
});

test("status: a copy whose primary deleted the pair, or with no stream for long, says so and what ends it (health degraded); a short cut does not", () => {
  const copying = state(record({ state: "copying", startSequence: 5 }));
  assert.equal(copyStalledReason(copying, { streams: 1, peerCloseText: undefined, noStreamForMs: 0, noStreamSinceIso: undefined }), undefined);
  assert.equal(copyStalledReason(copying, { streams: 0, peerCloseText: undefined, noStreamForMs: 1_000, noStreamSinceIso: undefined }), undefined);
  const deleted = copyStalledReason(copying, { streams: 0, peerCloseText: replPairDeletedCloseText, noStreamForMs: 10, noStreamSinceIso: "T" });
  assert.match(deleted ?? "", /primary A ended the pair during the initial copy.*tidemark pair delete g --force/);
  assert.match(copyStalledReason(copying, { streams: 0, peerCloseText: undefined, noStreamForMs: secondaryCopyStalledMs, noStreamSinceIso: "T" }) ?? "", /has not moved for 60 s.*tidemark pair delete g --force/);
  assert.equal(copyStalledReason(state(replicatingRecord), { streams: 0, peerCloseText: replPairDeletedCloseText, noStreamForMs: 10, noStreamSinceIso: "T" }), undefined);
  const shown = describeSecondary(copying, facts({ streams: 0, peerCloseText: replPairDeletedCloseText }));
  assert.equal(shown.state, "copying");
  assert.equal(shown.reason, deleted?.replace("(it said: the pair was deleted on the primary)", `(it said: ${replPairDeletedCloseText})`));
});
