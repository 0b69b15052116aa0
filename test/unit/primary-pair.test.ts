// Proves the primary pair's lifecycle machine (src/core/primary-pair.ts) on its own, with no
// I/O: table tests of each transition (start and the lowered copy start, suspend and resume
// with their answers and refusals, the handshake's answers, the copy's end, failure, group
// stops, reconnect backoff, the NO_SPACE back-off and probe), and fast-check properties over
// random event sequences, arbitrary peer answers included: nothing throws; the record
// changes only with a `persisted` event, by exactly the change that was saved; a persist is
// followed in its effect list only by logs; every operator command is answered or refused
// exactly once, and an answer never announces a state the disk does not hold; streams open
// only while the pair should run; the journal is released only once `failed` is on disk;
// timers are armed once and cancelled only while armed.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { InvariantError } from "../../src/core/assert.ts";
import { replBatchBytesMax, replNoSpaceRetryMsMin, replReconnectDelayMsMin } from "../../src/core/limits.ts";
import { replPairSuspendedCloseText } from "../../src/protocol/repl-protocol.ts";
import {
  applyPrimaryPairChange, connectedStreams, initialPrimaryPair, pairRunning, pushAllowance, stepPrimaryPair, suspendedReason, timeAdvanceAllowed,
  type PairTimer, type PrimaryPairEffect, type PrimaryPairEvent, type PrimaryPairRecord, type PrimaryPairState,
} from "../../src/core/primary-pair.ts";

const replicating: PrimaryPairRecord = { state: "replicating", copyStartSequence: 10, consistentFromSequence: 12, copyDone: true, reason: null, fence: null };
const copying: PrimaryPairRecord = { state: "copying", copyStartSequence: 10, consistentFromSequence: 0, copyDone: false, reason: null, fence: null };

function pair(record: PrimaryPairRecord = replicating, options: { transfer?: "push" | "pull"; streams?: number; groupStopped?: boolean } = {}): PrimaryPairState {
  return initialPrimaryPair({ group: "g", transfer: options.transfer ?? "push", streams: options.streams ?? 2, record, groupStopped: options.groupStopped ?? false });
}

/** Steps through events, returning the last state and every effect list. */
function run(state: PrimaryPairState, ...events: PrimaryPairEvent[]): { state: PrimaryPairState; effects: PrimaryPairEffect[][] } {
  const effects: PrimaryPairEffect[][] = [];
  let s = state;
  for (const event of events) {
    const stepped = stepPrimaryPair(s, event);
    s = stepped.state;
    effects.push([...stepped.effects]);
  }
  return { state: s, effects };
}

const kinds = (effects: readonly PrimaryPairEffect[]): string[] => effects.map((e) => (e.type === "log" ? `log:${e.event}` : e.type));
const last = <T>(items: readonly T[]): T => {
  const item = items[items.length - 1];
  assert.ok(item !== undefined);
  return item;
};
function persistOf(effects: readonly PrimaryPairEffect[]): Extract<PrimaryPairEffect, { type: "persist" }> {
  const found = effects.find((e) => e.type === "persist");
  assert.ok(found?.type === "persist", `a persist in ${kinds(effects).join(",")}`);
  return found;
}
const started = (record: PrimaryPairRecord = replicating, options: Parameters<typeof pair>[1] = {}): PrimaryPairState => run(pair(record, options), { type: "start", lastSequence: 20 }).state;

void test("start opens every stream; a suspended or failed pair stays idle; a stopped group waits for its resume", () => {
  const { state, effects } = run(pair(), { type: "start", lastSequence: 20 });
  assert.deepEqual(kinds(last(effects)), ["openStreams"]);
  assert.ok(pairRunning(state));
  assert.ok(timeAdvanceAllowed(state));
  assert.deepEqual(run(state, { type: "start", lastSequence: 20 }).effects, [[]], "a second start does nothing");
  for (const record of [{ ...replicating, state: "suspended" as const }, { ...replicating, state: "failed" as const }]) {
    const idle = run(pair(record), { type: "start", lastSequence: 20 });
    assert.deepEqual(idle.effects, [[]]);
    assert.ok(!pairRunning(idle.state));
  }
  const stopped = run(pair(replicating, { groupStopped: true }), { type: "start", lastSequence: 20 }, { type: "groupResumed", lastSequence: 20 });
  assert.deepEqual(stopped.effects.map(kinds), [[], ["openStreams"]]);
});

void test("a copy whose start point the journal no longer holds starts over from what it holds, saved before the streams open", () => {
  const { state, effects } = run(pair(copying), { type: "start", lastSequence: 7 });
  assert.deepEqual(kinds(last(effects)), ["log:copy_start_lowered", "persist"]);
  const save = persistOf(last(effects));
  assert.deepEqual(save.change, { record: { copyStartSequence: 7 }, ackedSequenceAtMost: 7 });
  assert.ok(!pairRunning(state), "nothing is sent before the save");
  assert.equal(state.record.copyStartSequence, 10, "memory follows the save");
  const saved = run(state, { type: "start", lastSequence: 7 }, { type: "persisted", saveId: save.saveId, lastSequence: 7 });
  assert.deepEqual(saved.effects[0], [], "a start while the save runs waits for it");
  assert.deepEqual(last(saved.effects), [{ type: "resetSender", ackedSequence: 7 }, { type: "openStreams" }]);
  assert.equal(saved.state.record.copyStartSequence, 7);
  // A failed save leaves the pair idle until the next start.
  const failed = run(state, { type: "persistFailed", saveId: save.saveId, lastSequence: 7, error: { code: "EIO", message: "EIO" } });
  assert.deepEqual(kinds(last(failed.effects)), ["log:pair_state_not_saved"]);
  assert.ok(!pairRunning(failed.state));
});

void test("suspend closes the streams, saves, and only then answers; resume saves, opens and answers", () => {
  const { state, effects } = run(started(), { type: "suspend", commandId: 1 });
  assert.deepEqual(kinds(last(effects)), ["closeStreams", "persist"]);
  assert.deepEqual(persistOf(last(effects)).change, { record: { state: "suspended", reason: suspendedReason } });
  assert.equal(state.record.state, "replicating", "not announced before the save");
  const suspended = run(state, { type: "persisted", saveId: persistOf(last(effects)).saveId, lastSequence: 30 });
  assert.deepEqual(last(suspended.effects), [{ type: "answerOperator", commandId: 1 }]);
  assert.equal(suspended.state.record.state, "suspended");
  assert.ok(!timeAdvanceAllowed(suspended.state));
  // Suspending a suspended pair answers at once.
  assert.deepEqual(run(suspended.state, { type: "suspend", commandId: 2 }).effects, [[{ type: "answerOperator", commandId: 2 }]]);
  const resumed = run(suspended.state, { type: "resume", commandId: 3 });
  const save = persistOf(last(resumed.effects));
  assert.deepEqual(save.change, { record: { state: "replicating", reason: null } });
  const done = run(resumed.state, { type: "persisted", saveId: save.saveId, lastSequence: 30 });
  assert.deepEqual(last(done.effects), [{ type: "openStreams" }, { type: "answerOperator", commandId: 3 }]);
  assert.ok(pairRunning(done.state));
  // A copy that was suspended resumes copying.
  const copyingSuspended = run(pair({ ...copying, state: "suspended" }), { type: "resume", commandId: 4 });
  assert.deepEqual(persistOf(last(copyingSuspended.effects)).change.record.state, "copying");
});

void test("commands that do not fit the state are refused with TM_ERR_STATE and change nothing", () => {
  const running = started();
  // Resuming a pair that runs is idempotent: answered, nothing saved, nothing changed.
  const notSuspended = run(running, { type: "resume", commandId: 1 });
  assert.deepEqual(last(notSuspended.effects), [{ type: "answerOperator", commandId: 1 }]);
  assert.equal(notSuspended.state, running);
  // ... unless a suspend is being saved: that one ends suspended, so the resume is refused.
  const suspending = run(running, { type: "suspend", commandId: 5 });
  const resumedMeanwhile = run(suspending.state, { type: "resume", commandId: 6 });
  assert.deepEqual(last(resumedMeanwhile.effects), [{ type: "refuseOperator", commandId: 6, code: "TM_ERR_STATE", text: "pair of g is being suspended right now; resume it once that is done" }]);
  const failedResume = run(pair({ ...replicating, state: "failed", reason: "x" }), { type: "resume", commandId: 7 });
  assert.deepEqual(last(failedResume.effects), [{ type: "refuseOperator", commandId: 7, code: "TM_ERR_STATE", text: "pair of g is failed, not suspended" }]);
  const failed = run(pair({ ...replicating, state: "failed", reason: "secondary refused the pair: taken over" }), { type: "suspend", commandId: 2 });
  assert.deepEqual(last(failed.effects), [{ type: "refuseOperator", commandId: 2, code: "TM_ERR_STATE", text: "pair of g has failed (secondary refused the pair: taken over); it cannot be suspended" }]);
});

void test("a suspend whose save fails is refused with the disk's code, and the pair runs again as the disk says", () => {
  const { state, effects } = run(started(), { type: "suspend", commandId: 1 });
  const failed = run(state, { type: "persistFailed", saveId: persistOf(last(effects)).saveId, lastSequence: 30, error: { code: "ENOSPC", message: "no space left on device" } });
  const refusal = last(failed.effects).find((e) => e.type === "refuseOperator");
  assert.ok(refusal?.type === "refuseOperator" && refusal.code === "TM_ERR_NO_SPACE", JSON.stringify(refusal));
  assert.ok(last(failed.effects).some((e) => e.type === "openStreams"));
  assert.ok(pairRunning(failed.state));
  assert.equal(failed.state.record.state, "replicating");
});

void test("the handshake: a copy the secondary finished is recorded before anything is sent; empty or copying starts the copy on stream 0", () => {
  const s = started(copying);
  const finished = run(s, { type: "groupState", stream: 1, connectionId: 7, state: "replicating", arrivedSequence: 15, lastSequence: 30 });
  const save = persistOf(last(finished.effects));
  assert.deepEqual(kinds(last(finished.effects)), ["persist"], "nothing is sent before the save");
  assert.deepEqual(save.change.record, { state: "replicating", copyDone: true, consistentFromSequence: 30, reason: null });
  const ready = run(finished.state, { type: "persisted", saveId: save.saveId, lastSequence: 31 });
  assert.deepEqual(last(ready.effects), [{ type: "streamReady", stream: 1, connectionId: 7, arrivedSequence: 15 }]);
  const notSaved = run(finished.state, { type: "persistFailed", saveId: save.saveId, lastSequence: 31, error: { code: "EIO", message: "EIO" } });
  assert.deepEqual(kinds(last(notSaved.effects)), ["failConnection"]);
  assert.deepEqual(run(s, { type: "groupState", stream: 0, connectionId: 3, state: "empty", arrivedSequence: 0, lastSequence: 30 }).effects, [[{ type: "startCopy", connectionId: 3 }]]);
  assert.deepEqual(run(s, { type: "groupState", stream: 1, connectionId: 4, state: "copying", arrivedSequence: 0, lastSequence: 30 }).effects, [[]]);
  assert.deepEqual(run(started(), { type: "groupState", stream: 1, connectionId: 5, state: "replicating", arrivedSequence: 19, lastSequence: 30 }).effects,
    [[{ type: "streamReady", stream: 1, connectionId: 5, arrivedSequence: 19 }]]);
  // A handshake answer after the streams closed (suspended meanwhile) is ignored.
  const idle = run(started(), { type: "suspend", commandId: 1 }).state;
  assert.deepEqual(run(idle, { type: "groupState", stream: 0, connectionId: 9, state: "empty", arrivedSequence: 0, lastSequence: 30 }).effects, [[]]);
});

void test("the end of the copy is saved, then logged, and every stream reopens; a failed save reopens them too, and the handshake saves it again", () => {
  const s = started(copying);
  const acked = run(s, { type: "copyAcknowledged", consistentFromSequence: 25, totalBytes: 4096, dataBytes: 1024, volumeBytes: 8192 });
  const save = persistOf(last(acked.effects));
  assert.deepEqual(save.change.record, { state: "replicating", copyDone: true, consistentFromSequence: 25, reason: null });
  const done = run(acked.state, { type: "persisted", saveId: save.saveId, lastSequence: 30 });
  assert.deepEqual(kinds(last(done.effects)), ["log:copy_done", "copyFinished", "reopenStreams"]);
  assert.equal(done.state.record.state, "replicating");
  const notSaved = run(acked.state, { type: "persistFailed", saveId: save.saveId, lastSequence: 30, error: { code: "EIO", message: "EIO" } });
  assert.deepEqual(kinds(last(notSaved.effects)), ["log:pair_state_not_saved", "copyFinished", "reopenStreams"]);
  assert.equal(notSaved.state.record.state, "copying");
});

void test("a lost stream reconnects on a backoff that doubles; the handshake resets it; an idle pair does not reconnect", () => {
  const s = started();
  const lost = run(s, { type: "streamClosed", stream: 1, reason: "peer silent", wasReady: true, planned: false, atIso: "2026-01-01T00:00:00.000Z" });
  // No stream was up: the link is down, said once.
  assert.deepEqual(kinds(last(lost.effects)), ["log:pair_disconnected", "armTimer"]);
  assert.deepEqual(lost.state.linkDown, { sinceIso: "2026-01-01T00:00:00.000Z", lastError: "peer silent" });
  assert.deepEqual(last(lost.effects)[1], { type: "armTimer", timer: { kind: "reconnect", stream: 1 }, delayMs: replReconnectDelayMsMin });
  const fired = run(lost.state, { type: "timerFired", timer: { kind: "reconnect", stream: 1 } }, { type: "streamClosed", stream: 1, reason: "refused", wasReady: false, planned: false, atIso: "2026-01-01T00:00:00.000Z" });
  assert.deepEqual(fired.effects[0], [{ type: "connectStream", stream: 1 }]);
  // The retry that fails logs nothing; its error is the last one.
  assert.deepEqual(last(fired.effects), [{ type: "armTimer", timer: { kind: "reconnect", stream: 1 }, delayMs: 2 * replReconnectDelayMsMin }]);
  assert.equal(fired.state.linkDown?.lastError, "refused");
  const reset = run(fired.state, { type: "timerFired", timer: { kind: "reconnect", stream: 1 } },
    { type: "groupState", stream: 1, connectionId: 2, state: "replicating", arrivedSequence: 20, lastSequence: 20 });
  assert.equal(reset.state.streams[1]?.reconnectDelayMs, replReconnectDelayMsMin);
  assert.deepEqual(kinds(last(reset.effects)), ["log:pair_reconnected", "streamReady"], "the link is back: one line");
  assert.equal(reset.state.linkDown, undefined);
  // Suspend cancels the armed reconnect, and a close after it arms nothing.
  const suspended = run(lost.state, { type: "suspend", commandId: 1 }, { type: "streamClosed", stream: 0, reason: "pair suspended", wasReady: true, planned: false, atIso: "2026-01-01T00:00:00.000Z" });
  assert.deepEqual(kinds(suspended.effects[0] ?? []), ["cancelTimer", "closeStreams", "persist"]);
  assert.deepEqual(last(suspended.effects), []);
});

void test("one pair_disconnected per loss of the link and one pair_reconnected when it is back, across a suspend, a group stop and a pair set", () => {
  const at = "2026-01-01T00:00:00.000Z";
  const handshake = (stream: number, connectionId: number): PrimaryPairEvent => ({ type: "groupState", stream, connectionId, state: "replicating", arrivedSequence: 20, lastSequence: 20 });
  const logs = (effects: readonly PrimaryPairEffect[][]): string[] => effects.flat().flatMap((e) => (e.type === "log" ? [e.event] : []));
  const down = run(started(), { type: "streamClosed", stream: 0, reason: "peer silent for 5016 ms", wasReady: true, planned: false, atIso: at },
    { type: "streamClosed", stream: 1, reason: "peer silent for 5016 ms", wasReady: true, planned: false, atIso: at });
  assert.deepEqual(logs(down.effects), ["pair_disconnected"]);
  // Suspended while down, resumed, still down: no second pair_disconnected; then back: pair_reconnected.
  const suspend = run(down.state, { type: "suspend", commandId: 1 });
  assert.deepEqual(suspend.effects[0]?.find((e) => e.type === "closeStreams"), { type: "closeStreams", reason: replPairSuspendedCloseText }, "the primary says why it closes: the secondary shows it");
  const suspended = run(suspend.state, { type: "persisted", saveId: persistOf(last(suspend.effects)).saveId, lastSequence: 20 });
  assert.ok(!pairRunning(suspended.state));
  const resume = run(suspended.state, { type: "resume", commandId: 2 });
  const resumed = run(resume.state, { type: "persisted", saveId: persistOf(last(resume.effects)).saveId, lastSequence: 20 },
    { type: "streamClosed", stream: 0, reason: "ECONNREFUSED", wasReady: false, planned: false, atIso: "2026-01-01T00:01:00.000Z" });
  assert.deepEqual(logs(resumed.effects), [], "still down after the resume: not logged again");
  assert.deepEqual(resumed.state.linkDown, { sinceIso: at, lastError: "ECONNREFUSED" });
  const back = run(resumed.state, { type: "timerFired", timer: { kind: "reconnect", stream: 0 } }, handshake(0, 7));
  assert.deepEqual(logs(back.effects), ["pair_reconnected"], "resumed and the link back: said once");
  // A group stop and resume while down: the same.
  const stopped = run(down.state, { type: "groupStopped", reason: "ENOSPC" }, { type: "groupResumed", lastSequence: 20 },
    { type: "streamClosed", stream: 1, reason: "ECONNREFUSED", wasReady: false, planned: false, atIso: at });
  assert.deepEqual(logs(stopped.effects), []);
  assert.deepEqual(logs(run(stopped.state, { type: "timerFired", timer: { kind: "reconnect", stream: 1 } }, handshake(1, 8)).effects), ["pair_reconnected"]);
  // pair set: the new link starts from the old one's link down, and logs the link back.
  const moved = initialPrimaryPair({ group: "g", transfer: "push", streams: 2, record: replicating, groupStopped: false, linkDown: down.state.linkDown });
  const movedBack = run(moved, { type: "start", lastSequence: 20 }, handshake(0, 1));
  assert.deepEqual(logs(movedBack.effects), ["pair_reconnected"]);
});

void test("connected streams are those whose handshake completed: 0 whenever the link is down, TCP connections that never answered included", () => {
  const s = started(replicating, { streams: 4 });
  assert.equal(connectedStreams(s), 0, "opened, no handshake yet");
  let step = run(s, { type: "groupState", stream: 0, connectionId: 1, state: "replicating", arrivedSequence: 20, lastSequence: 20 },
    { type: "groupState", stream: 2, connectionId: 2, state: "replicating", arrivedSequence: 20, lastSequence: 20 });
  assert.equal(connectedStreams(step.state), 2);
  step = run(step.state, { type: "streamClosed", stream: 0, reason: "peer silent", wasReady: true, planned: false, atIso: "2026-01-01T00:00:00.000Z" },
    { type: "streamClosed", stream: 2, reason: "peer silent", wasReady: true, planned: false, atIso: "2026-01-01T00:00:00.000Z" });
  assert.ok(step.state.linkDown !== undefined);
  assert.equal(connectedStreams(step.state), 0, "disconnected: none counts");
  const suspended = run(step.state, { type: "suspend", commandId: 1 });
  assert.equal(connectedStreams(suspended.state), 0);
});

void test("a secondary out of space: one log line, a backoff, then one probe that shrinks while refused; an ACK past the refusals ends it", () => {
  let s = started();
  let step = run(s, { type: "batchRefused", batchId: 5, code: "NO_SPACE", text: "journal full", batchIdFloor: 8, nowMs: 1000 });
  assert.deepEqual(kinds(last(step.effects)), ["log:secondary_refuses_records", "armTimer"]);
  s = step.state;
  assert.deepEqual(pushAllowance(s), { send: false });
  step = run(s, { type: "batchRefused", batchId: 6, code: "NO_SPACE", text: "journal full", batchIdFloor: 8, nowMs: 1001 });
  assert.deepEqual(step.effects, [[]], "one line per spell, one timer");
  step = run(step.state, { type: "timerFired", timer: { kind: "noSpaceRetry" } });
  assert.deepEqual(last(step.effects), [{ type: "pump" }]);
  const allowance = pushAllowance(step.state);
  assert.ok(allowance.send && allowance.bytesMax === replBatchBytesMax / 2 && allowance.probeEpisode !== undefined);
  step = run(step.state, { type: "probeSent", batchId: 9, episode: allowance.probeEpisode });
  assert.deepEqual(pushAllowance(step.state), { send: false }, "one probe at a time");
  step = run(step.state, { type: "batchRefused", batchId: 9, code: "NO_SPACE", text: "journal full", batchIdFloor: 10, nowMs: 1300 });
  assert.deepEqual(last(step.effects), [{ type: "armTimer", timer: { kind: "noSpaceRetry" }, delayMs: 2 * replNoSpaceRetryMsMin }]);
  assert.equal(step.state.noSpace?.probeBytesMax, replBatchBytesMax / 4);
  // The secondary reports room (ACK batchId 0): the backoff ends, a probe goes at once.
  step = run(step.state, { type: "ackReceived", batchId: 0, nowMs: 1400 });
  assert.deepEqual(last(step.effects), [{ type: "cancelTimer", timer: { kind: "noSpaceRetry" } }]);
  assert.ok(pushAllowance(step.state).send);
  assert.equal(step.state.noSpace?.retryMs, replNoSpaceRetryMsMin);
  // An ACK of a batch sent before the refusals says nothing; one past the floor ends the spell.
  assert.deepEqual(run(step.state, { type: "ackReceived", batchId: 7, nowMs: 1500 }).effects, [[]]);
  step = run(step.state, { type: "ackReceived", batchId: 8, nowMs: 1500 });
  assert.deepEqual(last(step.effects), [{ type: "log", level: "info", event: "secondary_storing_again", fields: { group: "g", waitedMs: 500 }, message: "the secondary stores records again" }]);
  assert.deepEqual(pushAllowance(step.state), { send: true, bytesMax: undefined, probeEpisode: undefined });
});

void test("pull: a refusal arms no timer (the secondary asks again) and its report of room ends the spell", () => {
  const s = started(replicating, { transfer: "pull" });
  const refused = run(s, { type: "batchRefused", batchId: 5, code: "INTERNAL", text: "EIO on x", batchIdFloor: 8, nowMs: 10 });
  assert.deepEqual(kinds(last(refused.effects)), ["log:secondary_refuses_records"]);
  const room = run(refused.state, { type: "ackReceived", batchId: 0, nowMs: 60 });
  assert.deepEqual(kinds(last(room.effects)), ["log:secondary_storing_again"]);
  assert.equal(room.state.noSpace, undefined);
});

void test("a failure closes the streams and saves; the journal is released only once `failed` is on disk; nothing restarts a failing pair", () => {
  const s = started();
  const failing = run(s, { type: "fail", reason: "secondary refused the pair: taken over" });
  assert.deepEqual(kinds(last(failing.effects)), ["log:pair_failed", "closeStreams", "persist"]);
  const save = persistOf(last(failing.effects));
  assert.deepEqual(run(failing.state, { type: "fail", reason: "again" }).effects, [[]], "one failure");
  const refused = run(failing.state, { type: "suspend", commandId: 1 });
  assert.equal(last(refused.effects)[0]?.type, "refuseOperator");
  assert.deepEqual(run(failing.state, { type: "start", lastSequence: 30 }).effects, [[]]);
  const saved = run(failing.state, { type: "persisted", saveId: save.saveId, lastSequence: 30 });
  assert.deepEqual(last(saved.effects), [{ type: "releaseJournal" }]);
  assert.equal(saved.state.record.state, "failed");
  const notSaved = run(failing.state, { type: "persistFailed", saveId: save.saveId, lastSequence: 30, error: { code: "ENOSPC", message: "full" } });
  assert.deepEqual(kinds(last(notSaved.effects)), ["log:pair_state_not_saved"], "the hold stays while the disk does not say failed");
  assert.deepEqual(run(notSaved.state, { type: "groupResumed", lastSequence: 30 }, { type: "start", lastSequence: 30 }).effects, [[], []]);
});

void test("a group stop closes the streams and they reopen when it resumes; a suspended pair stays suspended", () => {
  const stopped = run(started(), { type: "groupStopped", reason: "out of space writing j" });
  assert.deepEqual(last(stopped.effects), [{ type: "closeStreams", reason: "group stopped: out of space writing j" }]);
  assert.deepEqual(run(stopped.state, { type: "groupResumed", lastSequence: 20 }).effects, [[{ type: "openStreams" }]]);
  // Suspended while stopped: the resume of the group does not reopen.
  const suspended = run(stopped.state, { type: "suspend", commandId: 1 });
  assert.deepEqual(run(suspended.state, { type: "groupResumed", lastSequence: 20 }).effects, [[]]);
  // A copy whose journal lost records while stopped checks its start again after the resume.
  const copyStopped = run(started(copying), { type: "groupStopped", reason: "EIO" }, { type: "groupResumed", lastSequence: 5 });
  assert.deepEqual(kinds(last(copyStopped.effects)), ["log:copy_start_lowered", "persist"]);
});

void test("after the node stops, a resume saved late opens nothing", () => {
  const suspended = run(pair({ ...replicating, state: "suspended" }), { type: "resume", commandId: 1 }, { type: "stop", reason: "node stopping" });
  const save = persistOf(suspended.effects[0] ?? []);
  const done = run(suspended.state, { type: "persisted", saveId: save.saveId, lastSequence: 5 });
  assert.deepEqual(last(done.effects), [{ type: "answerOperator", commandId: 1 }]);
  assert.ok(!pairRunning(done.state));
});

void test("completions the machine did not ask for are the shell's bug: an assertion", () => {
  assert.throws(() => stepPrimaryPair(started(), { type: "persisted", saveId: 42, lastSequence: 1 }), InvariantError);
  assert.throws(() => stepPrimaryPair(started(), { type: "timerFired", timer: { kind: "noSpaceRetry" } }), InvariantError);
  assert.throws(() => stepPrimaryPair(started(), { type: "timerFired", timer: { kind: "reconnect", stream: 0 } }), InvariantError);
  assert.throws(() => stepPrimaryPair(started(), { type: "streamClosed", stream: 5, reason: "x", wasReady: false, planned: false, atIso: "2026-01-01T00:00:00.000Z" }), InvariantError);
});

void test("FENCE: the writer is fenced, `fenced` saved, and only then FENCED answered with the last sequence; the streams keep running; again: answered at once", () => {
  const s = started();
  const fence = stepPrimaryPair(s, { type: "fence", stream: 1, connectionId: 7, fenceId: 3, text: "takeover", lastSequence: 20, lastWriteSequence: 18, atIso: "T" });
  assert.deepEqual(kinds(fence.effects), ["log:pair_fenced", "fenceWriter", "persist"]);
  assert.equal(fence.state.record.state, "replicating", "memory follows the save");
  assert.ok(!timeAdvanceAllowed(fence.state), "no time advance while the fence is saved");
  const save = persistOf(fence.effects);
  const saved = stepPrimaryPair(fence.state, { type: "persisted", saveId: save.saveId, lastSequence: 20 });
  assert.deepEqual(saved.effects, [{ type: "answerFence", stream: 1, connectionId: 7, fenceId: 3, lastAcceptedSequence: 20, lastWriteSequence: 18 }]);
  assert.equal(saved.state.record.state, "fenced");
  assert.ok(pairRunning(saved.state), "what was accepted before the fence is still sent");
  assert.ok(!timeAdvanceAllowed(saved.state));
  const again = stepPrimaryPair(saved.state, { type: "fence", stream: 0, connectionId: 9, fenceId: 4, text: "again", lastSequence: 20, lastWriteSequence: 18, atIso: "T2" });
  assert.deepEqual(again.effects, [{ type: "answerFence", stream: 0, connectionId: 9, fenceId: 4, lastAcceptedSequence: 20, lastWriteSequence: 18 }]);
  // A fence whose save fails is refused and the writer accepts writes again.
  const failed = stepPrimaryPair(fence.state, { type: "persistFailed", saveId: save.saveId, lastSequence: 20, error: { code: "ENOSPC", message: "full" } });
  assert.deepEqual(kinds(failed.effects), ["log:pair_state_not_saved", "refuseFence", "unfenceWriter"]);
  // A suspended pair (no streams) cannot be fenced.
  const suspended = run(pair({ ...replicating, state: "suspended" }), { type: "start", lastSequence: 20 }).state;
  assert.deepEqual(kinds(stepPrimaryPair(suspended, { type: "fence", stream: 0, connectionId: 1, fenceId: 1, text: "", lastSequence: 20, lastWriteSequence: 20, atIso: "T" }).effects), ["log:fence_refused", "refuseFence"]);
});

void test("the secondary took over (NACK TAKEN_OVER): fenced, saved, streams closed for good, the late writes counted and saved; unfence needs --force and then the pair ends", () => {
  const s = started();
  const refused = stepPrimaryPair(s, { type: "peerTookOver", text: "taken over", cutSequence: 15, lastSequence: 20, lastWriteSequence: 19, atIso: "T" });
  assert.deepEqual(kinds(refused.effects), ["log:stale_primary_fenced", "fenceWriter", "closeStreams", "persist"]);
  assert.ok(!pairRunning(refused.state));
  const saved = stepPrimaryPair(refused.state, { type: "persisted", saveId: persistOf(refused.effects).saveId, lastSequence: 20 });
  assert.deepEqual(saved.effects, [{ type: "countLateWrites", cutSequence: 15, lastSequence: 20 }]);
  assert.equal(saved.state.record.fence?.peerTookOver, true);
  const counted = stepPrimaryPair(saved.state, { type: "lateWritesCounted", lateWrites: 4, exact: true });
  assert.deepEqual(kinds(counted.effects), ["log:stale_primary_late_writes", "persist"]);
  const final = stepPrimaryPair(counted.state, { type: "persisted", saveId: persistOf(counted.effects).saveId, lastSequence: 20 }).state;
  assert.equal(final.record.fence?.lateWrites, 4);
  assert.deepEqual(stepPrimaryPair(final, { type: "start", lastSequence: 20 }).effects, [], "a restarted fenced primary whose peer took over stays idle");
  const plain = stepPrimaryPair(final, { type: "unfence", commandId: 1, force: false });
  assert.deepEqual(plain.effects.map((e) => (e.type === "refuseOperator" ? e.code : e.type)), ["TM_ERR_PEER_TOOK_OVER"]);
  const forced = stepPrimaryPair(final, { type: "unfence", commandId: 2, force: true });
  assert.deepEqual(kinds(forced.effects), ["log:pair_unfenced", "persist"]);
  const done = stepPrimaryPair(forced.state, { type: "persisted", saveId: persistOf(forced.effects).saveId, lastSequence: 20 });
  assert.deepEqual(kinds(done.effects), ["unfenceWriter", "releaseJournal", "answerOperator"]);
  assert.equal(done.state.record.state, "failed");
});

void test("unfence of a pair whose peer did not take over: saved, then writable and replicating again", () => {
  const s = started();
  const fence = stepPrimaryPair(s, { type: "fence", stream: 0, connectionId: 1, fenceId: 1, text: "", lastSequence: 20, lastWriteSequence: 20, atIso: "T" });
  const fenced = stepPrimaryPair(fence.state, { type: "persisted", saveId: persistOf(fence.effects).saveId, lastSequence: 20 }).state;
  const unfence = stepPrimaryPair(fenced, { type: "unfence", commandId: 5, force: false });
  assert.deepEqual(kinds(unfence.effects), ["log:pair_unfenced", "persist"]);
  assert.deepEqual(persistOf(unfence.effects).change, { record: { state: "replicating", fence: null, reason: null } });
  const done = stepPrimaryPair(unfence.state, { type: "persisted", saveId: persistOf(unfence.effects).saveId, lastSequence: 20 });
  assert.deepEqual(kinds(done.effects), ["unfenceWriter", "answerOperator"]);
  assert.ok(timeAdvanceAllowed(done.state));
  assert.deepEqual(stepPrimaryPair(started(), { type: "unfence", commandId: 6, force: true }).effects.map((e) => (e.type === "refuseOperator" ? e.code : e.type)), ["TM_ERR_STATE"]);
});

// ---- properties over random event sequences -------------------------------------------

/** An event as generated: completions pick among what is pending when they run. */
type Gen =
  | { readonly kind: "event"; readonly event: PrimaryPairEvent }
  | { readonly kind: "complete"; readonly pick: number; readonly ok: boolean; readonly code: string }
  | { readonly kind: "fire"; readonly pick: number }
  | { readonly kind: "close"; readonly stream: number; readonly wasReady: boolean };

const sequence = fc.nat({ max: 100 });
const genEvent: fc.Arbitrary<Gen> = fc.oneof(
  fc.record({ kind: fc.constant("event" as const), event: fc.oneof(
    fc.record({ type: fc.constant("start" as const), lastSequence: sequence }),
    fc.record({ type: fc.constant("stop" as const), reason: fc.constant("node stopping") }),
    fc.record({ type: fc.constant("suspend" as const), commandId: fc.constant(0) }),
    fc.record({ type: fc.constant("resume" as const), commandId: fc.constant(0) }),
    fc.record({ type: fc.constant("groupStopped" as const), reason: fc.constant("EIO") }),
    fc.record({ type: fc.constant("groupResumed" as const), lastSequence: sequence }),
    fc.record({ type: fc.constant("groupState" as const), stream: fc.nat({ max: 1 }), connectionId: fc.nat(), state: fc.constantFrom("empty" as const, "copying" as const, "replicating" as const), arrivedSequence: fc.nat(), lastSequence: sequence }),
    fc.record({ type: fc.constant("copyAcknowledged" as const), consistentFromSequence: sequence, totalBytes: fc.nat(), dataBytes: fc.nat(), volumeBytes: fc.nat() }),
    fc.record({ type: fc.constant("batchRefused" as const), batchId: fc.nat({ max: 20 }), code: fc.constantFrom("NO_SPACE" as const, "INTERNAL" as const), text: fc.string(), batchIdFloor: fc.nat({ max: 20 }), nowMs: fc.nat() }),
    fc.record({ type: fc.constant("ackReceived" as const), batchId: fc.nat({ max: 20 }), nowMs: fc.nat() }),
    fc.record({ type: fc.constant("probeSent" as const), batchId: fc.nat({ max: 20 }), episode: fc.nat({ max: 5 }) }),
    fc.record({ type: fc.constant("fail" as const), reason: fc.string() }),
    fc.record({ type: fc.constant("fence" as const), stream: fc.nat({ max: 1 }), connectionId: fc.nat(), fenceId: fc.integer({ min: 1, max: 5 }), text: fc.constant("takeover"), lastSequence: sequence, lastWriteSequence: sequence, atIso: fc.constant("2026-01-01T00:00:00.000Z") }),
    fc.record({ type: fc.constant("peerTookOver" as const), text: fc.constant("taken over"), cutSequence: sequence, lastSequence: sequence, lastWriteSequence: sequence, atIso: fc.constant("2026-01-01T00:00:00.000Z") }),
    fc.record({ type: fc.constant("lateWritesCounted" as const), lateWrites: fc.nat({ max: 9 }), exact: fc.boolean() }),
    fc.record({ type: fc.constant("unfence" as const), commandId: fc.constant(0), force: fc.boolean() }),
  ) }),
  fc.record({ kind: fc.constant("complete" as const), pick: fc.nat(), ok: fc.boolean(), code: fc.constantFrom("ENOSPC", "EIO", "EPERM") }),
  fc.record({ kind: fc.constant("fire" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("close" as const), stream: fc.nat({ max: 1 }), wasReady: fc.boolean() }),
);

const timerKey = (timer: PairTimer): string => (timer.kind === "reconnect" ? `reconnect:${timer.stream}` : timer.kind);

void test("property: random events never throw, the record follows only the saves, effects keep their order rules, every command is answered once", () => {
  fc.assert(fc.property(
    fc.constantFrom(replicating, copying, { ...replicating, state: "suspended" as const }, { ...copying, state: "suspended" as const }),
    fc.constantFrom("push" as const, "pull" as const),
    fc.boolean(),
    fc.array(genEvent, { maxLength: 60 }),
    (record, transfer, groupStopped, gens) => {
      let s = pair(record, { transfer, groupStopped });
      const pending = new Set<number>(); // saves asked for, not yet answered
      const armed = new Set<string>();
      const waiting = new Map<number, "suspend" | "resume" | "unfence">();
      let writerFenced = s.record.state === "fenced";
      let nextCommand = 1;
      const apply = (event: PrimaryPairEvent): void => {
        const before = s;
        const { state, effects } = stepPrimaryPair(s, event);
        s = state;
        // The record changes only with a `persisted` event, by exactly what was saved.
        if (event.type === "persisted") {
          const save = before.saves.find((p) => p.saveId === event.saveId);
          assert.ok(save !== undefined);
          assert.deepEqual(s.record, applyPrimaryPairChange(before.record, save.change));
        } else {
          assert.deepEqual(s.record, before.record, `${event.type} changed the record without a save`);
        }
        let persisted = false;
        for (const effect of effects) {
          // A persist is followed only by logs and saves: what depends on it waits for `persisted`.
          if (persisted) assert.ok(effect.type === "log" || effect.type === "persist", `${effect.type} after a persist in one list`);
          switch (effect.type) {
            case "persist":
              persisted = true;
              assert.ok(!pending.has(effect.saveId));
              pending.add(effect.saveId);
              break;
            case "armTimer":
              assert.ok(!armed.has(timerKey(effect.timer)), "a timer is armed once");
              armed.add(timerKey(effect.timer));
              break;
            case "cancelTimer":
              assert.ok(armed.delete(timerKey(effect.timer)), "only an armed timer is cancelled");
              break;
            case "openStreams":
            case "connectStream":
              assert.ok(pairRunning(s), "streams open only while running");
              assert.ok(s.record.state === "copying" || s.record.state === "replicating" || (s.record.state === "fenced" && s.record.fence?.peerTookOver !== true), `streams open while ${s.record.state}`);
              assert.ok(!s.groupStopped && s.failing === undefined && !s.closing);
              break;
            case "releaseJournal":
              assert.equal(s.record.state, "failed", "the journal is released only once failed is saved");
              break;
            case "answerOperator": {
              const command = waiting.get(effect.commandId);
              assert.ok(command !== undefined, "an answer for a waiting command, once");
              waiting.delete(effect.commandId);
              // Never announced before the disk holds it.
              if (command === "suspend") assert.equal(s.record.state, "suspended");
              else if (command === "unfence") assert.ok(s.record.state !== "fenced" && !writerFenced, "unfenced on disk and in the writer before the answer");
              else assert.ok(s.record.state === "copying" || s.record.state === "replicating");
              break;
            }
            case "answerFence":
              // FENCED is never sent before `fenced` is on disk, nor for a sequence past the fence.
              assert.equal(s.record.state, "fenced", "FENCED only once fenced is saved");
              assert.equal(effect.lastAcceptedSequence, s.record.fence?.fencedSequence);
              assert.ok(writerFenced, "the writer refuses writes before FENCED");
              break;
            case "fenceWriter":
              writerFenced = true;
              break;
            case "unfenceWriter":
              assert.ok(s.record.state !== "fenced", "the writer accepts writes only once the disk no longer says fenced");
              writerFenced = false;
              break;
            case "refuseOperator":
              assert.ok(waiting.delete(effect.commandId), "a refusal for a waiting command, once");
              break;
            default:
              break;
          }
        }
      };
      for (const gen of gens) {
        switch (gen.kind) {
          case "event": {
            const event = gen.event;
            if (event.type === "suspend" || event.type === "resume" || event.type === "unfence") {
              const commandId = nextCommand++;
              waiting.set(commandId, event.type);
              apply({ ...event, commandId });
            } else {
              apply(event);
            }
            break;
          }
          case "complete": {
            const ids = [...pending];
            if (ids.length === 0) break;
            const saveId = ids[gen.pick % ids.length] ?? 0;
            pending.delete(saveId);
            apply(gen.ok ? { type: "persisted", saveId, lastSequence: 50 } : { type: "persistFailed", saveId, lastSequence: 50, error: { code: gen.code, message: gen.code } });
            break;
          }
          case "fire": {
            const keys = [...armed];
            if (keys.length === 0) break;
            const key = keys[gen.pick % keys.length] ?? "";
            armed.delete(key);
            const timer: PairTimer = key === "noSpaceRetry" ? { kind: "noSpaceRetry" } : { kind: "reconnect", stream: Number(key.split(":")[1]) };
            apply({ type: "timerFired", timer });
            break;
          }
          case "close":
            // The shell reports a close only for a stream with a connection (none while its reconnect is armed).
            if (armed.has(`reconnect:${gen.stream}`)) break;
            apply({ type: "streamClosed", stream: gen.stream, reason: "lost", wasReady: gen.wasReady, planned: false, atIso: "2026-01-01T00:00:00.000Z" });
            break;
        }
      }
      // Drain every save: then every command has its answer.
      for (const saveId of [...pending]) {
        pending.delete(saveId);
        apply({ type: "persisted", saveId, lastSequence: 50 });
      }
      assert.deepEqual([...waiting.keys()], [], "every command answered or refused");
      // A group the disk says is fenced refuses writes.
      if (s.record.state === "fenced") assert.ok(writerFenced, "a fenced pair's writer refuses writes");
      assert.equal(s.saves.length, 0);
    },
  ), { numRuns: 2000 });
});
