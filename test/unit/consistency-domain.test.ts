// Proves the consistency domain's machine (src/core/consistency-domain.ts): a join in time mode
// holds reflection, checkpoints every member and only then saves (checkpoint before join), and
// is refused while a member is stopped or not checkpointed; seq mode saves at once; a stopped
// member holds a time domain and is named; a takeover's group leaves. The two historical
// faults of the join (join-before-checkpoint, join-past-stopped-member) live here and, put
// back, skip exactly those steps. A fast-check property drives random joins, stops, resumes,
// leaves and completions: the machine never throws when the shell keeps its contract, a hold
// is always released, a save never comes before the checkpoint, and members are unique.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  domainHolder, domainKeyOf, emptyDomain, frontierHolder, isMember, reflectingMembers, stepDomain,
  type DomainEffect, type DomainEvent, type DomainState,
} from "../../src/core/consistency-domain.ts";
import { injectedFaults } from "../../src/core/faults.ts";
import { asAcceptNumber, asWriteTimeUs } from "../../src/core/types.ts";

const types = (effects: readonly DomainEffect[]): string[] => effects.map((e) => e.type);

function run(state: DomainState, events: readonly DomainEvent[]): { state: DomainState; effects: DomainEffect[] } {
  const effects: DomainEffect[] = [];
  for (const event of events) {
    const result = stepDomain(state, event);
    state = result.state;
    effects.push(...result.effects);
  }
  return { state, effects };
}

const withMembers = run(emptyDomain("time/A", "time"), [
  { type: "recovered", groupId: 1, name: "g1", stoppedReason: undefined },
  { type: "recovered", groupId: 2, name: "g2", stoppedReason: undefined },
]).state;

test("the domain of a group: one per primary node in time mode, seq groups each alone", () => {
  assert.equal(domainKeyOf({ reflect: "time", primaryNode: "A" }), "time/A");
  assert.notEqual(domainKeyOf({ reflect: "time", primaryNode: "A" }), domainKeyOf({ reflect: "time", primaryNode: "C" }));
  assert.equal(domainKeyOf({ reflect: "seq", primaryNode: "A" }), "seq");
  assert.equal(domainKeyOf({ reflect: "marker", primaryNode: "A" }), "seq");
});

test("a join in time mode: reflection held, every member checkpointed, then the save; the hold ends once it is saved", () => {
  const asked = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" });
  assert.deepEqual(types(asked.effects), ["holdReflection", "checkpointMembers"]);
  assert.equal(isMember(asked.state, 3), false);
  const checked = stepDomain(asked.state, { type: "checkpointed", notDurable: [] });
  assert.deepEqual(types(checked.effects), ["saveJoin"]);
  const saved = stepDomain(checked.state, { type: "joinSaved", stoppedReason: undefined });
  assert.deepEqual(types(saved.effects), ["releaseReflection", "log"]);
  assert.equal(isMember(saved.state, 3), true);
  assert.equal(saved.state.epoch, withMembers.epoch + 1, "the ordering tracker starts over");
  assert.equal(saved.state.joining, undefined);
});

test("a joiner its disk stopped while the join was saved holds the domain from the start", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
  s = stepDomain(s, { type: "checkpointed", notDurable: [] }).state;
  s = stepDomain(s, { type: "joinSaved", stoppedReason: "I/O error" }).state;
  assert.equal(domainHolder(s)?.name, "g3");
  assert.deepEqual(reflectingMembers(s), []);
});

test("a join is refused while a member is stopped or could not be checkpointed (seed 3255), and releases the hold", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
  const refused = stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 2, name: "g2", why: "is stopped (out of space)" }] });
  assert.deepEqual(types(refused.effects), ["releaseReflection", "refuseJoin"]);
  assert.match((refused.effects[1] as { reason: string }).reason, /group g2 is stopped \(out of space\); the initial copy ends once it can/);
  assert.equal(isMember(refused.state, 3), false);
  // A group that is not a member (another domain's) does not hold this join.
  s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
  assert.deepEqual(types(stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 9, name: "other", why: "is stopped" }] }).effects), ["saveJoin"]);
});

test("a join whose save fails is refused and releases the hold; an abandoned join too", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
  s = stepDomain(s, { type: "checkpointed", notDurable: [] }).state;
  const failed = stepDomain(s, { type: "joinSaveFailed", error: "EIO" });
  assert.deepEqual(types(failed.effects), ["releaseReflection", "refuseJoin"]);
  assert.equal(isMember(failed.state, 3), false);
  const asked = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
  assert.deepEqual(types(stepDomain(asked, { type: "joinAbandoned" }).effects), ["releaseReflection"]);
});

test("seq mode: no shared frontier, so a join is saved at once, with no hold and no checkpoint", () => {
  const asked = stepDomain(emptyDomain("seq", "seq"), { type: "joinRequested", groupId: 3, name: "g3" });
  assert.deepEqual(types(asked.effects), ["saveJoin"]);
  assert.deepEqual(types(stepDomain(asked.state, { type: "joinSaved", stoppedReason: undefined }).effects), ["log"]);
});

test("the historical faults of the join, put back, skip exactly the checkpoint (join-before-checkpoint) or the refusal (join-past-stopped-member)", () => {
  try {
    injectedFaults.add("join-before-checkpoint");
    assert.deepEqual(types(stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).effects), ["saveJoin"]);
    injectedFaults.clear();
    injectedFaults.add("join-past-stopped-member");
    const s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3" }).state;
    assert.deepEqual(types(stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 2, name: "g2", why: "is stopped" }] }).effects), ["saveJoin"]);
  } finally {
    injectedFaults.clear();
  }
});

test("a stopped member holds its time domain and is named; in seq mode only the stopped group waits", () => {
  const stopped = stepDomain(withMembers, { type: "memberStopped", groupId: 2, reason: "I/O error" }).state;
  assert.equal(domainHolder(stopped)?.name, "g2");
  assert.deepEqual(reflectingMembers(stopped), []);
  const resumed = stepDomain(stopped, { type: "memberResumed", groupId: 2 }).state;
  assert.equal(domainHolder(resumed), undefined);
  assert.equal(reflectingMembers(resumed).length, 2);
  const seq = run(emptyDomain("seq", "seq"), [
    { type: "recovered", groupId: 1, name: "s1", stoppedReason: undefined },
    { type: "recovered", groupId: 2, name: "s2", stoppedReason: "full" },
  ]).state;
  assert.equal(domainHolder(seq), undefined);
  assert.deepEqual(reflectingMembers(seq).map((m) => m.name), ["s1"]);
});

test("a group taken over leaves: the others reflect on without it", () => {
  const left = stepDomain(withMembers, { type: "left", groupId: 1, why: "taken over" });
  assert.equal(isMember(left.state, 1), false);
  assert.equal(left.state.epoch, withMembers.epoch + 1);
  assert.deepEqual(stepDomain(left.state, { type: "left", groupId: 1, why: "again" }).effects, [], "leaving twice changes nothing");
});

test("the frontier holder is the member with the smallest arrived position, when another group", () => {
  const at = (t: number, a: number) => ({ writeTimeUs: asWriteTimeUs(t), acceptNumber: asAcceptNumber(a) });
  const groups = [{ groupId: 1, name: "g1", arrivedPosition: at(10, 5) }, { groupId: 2, name: "g2", arrivedPosition: at(10, 3) }, { groupId: 7, name: "x", arrivedPosition: at(1, 1) }];
  assert.equal(frontierHolder(withMembers, 1, groups)?.name, "g2");
  assert.equal(frontierHolder(withMembers, 2, groups), undefined, "a group does not wait for itself");
  assert.equal(frontierHolder(withMembers, 7, groups), undefined, "not a member: no frontier of its own");
});

type Action =
  | { readonly kind: "join"; readonly groupId: number; readonly outcome: "ok" | "notDurable" | "saveFailed" | "abandon" }
  | { readonly kind: "stop" | "resume" | "leave"; readonly groupId: number };

test("property: random joins, stops, resumes and leaves never throw, holds are released, the save comes after the checkpoint, members are unique", () => {
  const actions = fc.array(fc.oneof(
    fc.record({ kind: fc.constant("join" as const), groupId: fc.integer({ min: 1, max: 6 }), outcome: fc.constantFrom("ok" as const, "notDurable" as const, "saveFailed" as const, "abandon" as const) }),
    fc.record({ kind: fc.constantFrom("stop" as const, "resume" as const, "leave" as const), groupId: fc.integer({ min: 1, max: 6 }) }),
  ), { maxLength: 50 });
  fc.assert(fc.property(fc.constantFrom("time" as const, "seq" as const), actions, (mode, list: Action[]) => {
    let state = emptyDomain(mode === "time" ? "time/A" : "seq", mode);
    let held = false;
    const step = (event: DomainEvent): DomainEffect[] => {
      const result = stepDomain(state, event);
      state = result.state;
      for (const effect of result.effects) {
        if (effect.type === "holdReflection") {
          assert.equal(held, false);
          held = true;
        }
        if (effect.type === "releaseReflection") {
          assert.equal(held, true);
          held = false;
        }
      }
      return [...result.effects];
    };
    for (const action of list) {
      if (action.kind !== "join") {
        if (action.kind === "stop") step({ type: "memberStopped", groupId: action.groupId, reason: "x" });
        else if (action.kind === "resume") step({ type: "memberResumed", groupId: action.groupId });
        else step({ type: "left", groupId: action.groupId, why: "taken over" });
        continue;
      }
      if (isMember(state, action.groupId)) continue; // the shell joins a group once, after its copy
      let effects = step({ type: "joinRequested", groupId: action.groupId, name: `g${action.groupId}` });
      let checkpointed = false;
      if (action.outcome === "abandon") {
        step({ type: "joinAbandoned" });
      } else {
        for (;;) {
          const last = effects.at(-1);
          if (last?.type === "checkpointMembers") {
            checkpointed = true;
            const stopped = state.members.filter((m) => m.stoppedReason !== undefined).map((m) => ({ groupId: m.groupId, name: m.name, why: "is stopped" }));
            effects = step({ type: "checkpointed", notDurable: action.outcome === "notDurable" ? [...stopped, ...state.members.slice(0, 1).map((m) => ({ groupId: m.groupId, name: m.name, why: "could not be checkpointed" }))] : stopped });
          } else if (last?.type === "saveJoin") {
            if (mode === "time") assert.equal(checkpointed, true, "checkpoint before join");
            effects = step(action.outcome === "saveFailed" ? { type: "joinSaveFailed", error: "EIO" } : { type: "joinSaved", stoppedReason: undefined });
          } else {
            break;
          }
        }
      }
      assert.equal(held, false, "the hold ends with the join");
      assert.equal(state.joining, undefined);
      const ids = state.members.map((m) => m.groupId);
      assert.equal(new Set(ids).size, ids.length);
      if (mode === "time" && state.members.some((m) => m.stoppedReason !== undefined)) assert.deepEqual(reflectingMembers(state), []);
    }
  }), { numRuns: 400 });
});
