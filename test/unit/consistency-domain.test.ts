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
  domainHolder, domainKeyOf, emptyDomain, frontierHolder, isMember, joinPending, joinPosition, reflectingMembers, reflectModeConflict, stepDomain, takeoverJoinRefusal,
  type DomainEffect, type DomainEvent, type DomainState, type JoinPoint,
} from "../../src/core/consistency-domain.ts";
import { injectedFaults } from "../../src/core/faults.ts";
import { asAcceptNumber, asWriteTimeUs } from "../../src/core/types.ts";
import { comparePositions, type Position } from "../../src/core/position.ts";

const at = (t: number, a: number): Position => ({ writeTimeUs: asWriteTimeUs(t), acceptNumber: asAcceptNumber(a) });

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
  { type: "recovered", groupId: 1, name: "g1", stoppedReason: undefined, joinPoint: null },
  { type: "recovered", groupId: 2, name: "g2", stoppedReason: undefined, joinPoint: null },
]).state;

test("the domain of a group: one per primary node in time mode, seq groups each alone", () => {
  assert.equal(domainKeyOf({ reflect: "time", primaryNode: "A" }), "time/A");
  assert.notEqual(domainKeyOf({ reflect: "time", primaryNode: "A" }), domainKeyOf({ reflect: "time", primaryNode: "C" }));
  assert.equal(domainKeyOf({ reflect: "seq", primaryNode: "A" }), "seq");
  assert.equal(domainKeyOf({ reflect: "marker", primaryNode: "A" }), "seq");
});

test("a join in time mode: reflection held, every member checkpointed, then the save; the hold ends once it is saved", () => {
  const asked = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] });
  assert.deepEqual(types(asked.effects), ["holdReflection", "checkpointMembers"]);
  assert.equal(isMember(asked.state, 3), false);
  const checked = stepDomain(asked.state, { type: "checkpointed", notDurable: [], reflected: [], joinerReflectedSequence: 0 });
  assert.deepEqual(types(checked.effects), ["saveJoin"]);
  const saved = stepDomain(checked.state, { type: "joinSaved", stoppedReason: undefined });
  assert.deepEqual(types(saved.effects), ["releaseReflection", "log"]);
  assert.equal(isMember(saved.state, 3), true);
  assert.equal(saved.state.epoch, withMembers.epoch + 1, "the ordering tracker starts over");
  assert.equal(saved.state.joining, undefined);
});

test("a joiner its disk stopped while the join was saved holds the domain from the start", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
  s = stepDomain(s, { type: "checkpointed", notDurable: [], reflected: [], joinerReflectedSequence: 0 }).state;
  s = stepDomain(s, { type: "joinSaved", stoppedReason: "I/O error" }).state;
  assert.equal(domainHolder(s)?.name, "g3");
  assert.deepEqual(reflectingMembers(s), []);
});

test("a join is refused while a member is stopped or could not be checkpointed (seed 3255), and releases the hold", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
  const refused = stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 2, name: "g2", why: "is stopped (out of space)" }], reflected: [], joinerReflectedSequence: 0 });
  assert.deepEqual(types(refused.effects), ["releaseReflection", "refuseJoin"]);
  assert.match((refused.effects[1] as { reason: string }).reason, /group g2 is stopped \(out of space\); the initial copy ends once it can/);
  assert.equal(isMember(refused.state, 3), false);
  // A group that is not a member (another domain's) does not hold this join.
  s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
  assert.deepEqual(types(stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 9, name: "other", why: "is stopped" }], reflected: [], joinerReflectedSequence: 0 }).effects), ["saveJoin"]);
});

test("a joiner whose own applies could not be checkpointed (attached again after reflecting alone) is not saved into the domain (seeds 5060, 9947)", () => {
  const s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 40, at: "T", reflected: [] }).state;
  const refused = stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 3, name: "g3", why: "could not be checkpointed" }], reflected: [], joinerReflectedSequence: 0 });
  assert.deepEqual(types(refused.effects), ["releaseReflection", "refuseJoin"]);
  assert.match((refused.effects[1] as { reason: string }).reason, /group g3 could not be checkpointed/);
  assert.equal(isMember(refused.state, 3), false);
});

test("a join whose save fails is refused and releases the hold; an abandoned join too", () => {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
  s = stepDomain(s, { type: "checkpointed", notDurable: [], reflected: [], joinerReflectedSequence: 0 }).state;
  const failed = stepDomain(s, { type: "joinSaveFailed", error: "EIO" });
  assert.deepEqual(types(failed.effects), ["releaseReflection", "refuseJoin"]);
  assert.equal(isMember(failed.state, 3), false);
  const asked = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
  assert.deepEqual(types(stepDomain(asked, { type: "joinAbandoned" }).effects), ["releaseReflection"]);
});

test("seq mode: no shared frontier, so a join is saved at once, with no hold and no checkpoint", () => {
  const asked = stepDomain(emptyDomain("seq", "seq"), { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] });
  assert.deepEqual(types(asked.effects), ["saveJoin"]);
  assert.deepEqual(types(stepDomain(asked.state, { type: "joinSaved", stoppedReason: undefined }).effects), ["log"]);
});

test("the historical faults of the join, put back, skip exactly the checkpoint (join-before-checkpoint) or the refusal (join-past-stopped-member)", () => {
  try {
    injectedFaults.add("join-before-checkpoint");
    assert.deepEqual(types(stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).effects), ["saveJoin"]);
    injectedFaults.clear();
    injectedFaults.add("join-past-stopped-member");
    const s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 0, at: "T", reflected: [] }).state;
    assert.deepEqual(types(stepDomain(s, { type: "checkpointed", notDurable: [{ groupId: 2, name: "g2", why: "is stopped" }], reflected: [], joinerReflectedSequence: 0 }).effects), ["saveJoin"]);
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
    { type: "recovered", groupId: 1, name: "s1", stoppedReason: undefined, joinPoint: null },
    { type: "recovered", groupId: 2, name: "s2", stoppedReason: "full", joinPoint: null },
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
  const groups = [{ groupId: 1, name: "g1", arrivedPosition: at(10, 5) }, { groupId: 2, name: "g2", arrivedPosition: at(10, 3) }, { groupId: 7, name: "x", arrivedPosition: at(1, 1) }];
  assert.equal(frontierHolder(withMembers, 1, groups)?.name, "g2");
  assert.equal(frontierHolder(withMembers, 2, groups), undefined, "a group does not wait for itself");
  assert.equal(frontierHolder(withMembers, 7, groups), undefined, "not a member: no frontier of its own");
});

// ---- issue 8, kind 3: the join point ------------------------------------------------------

/** g3 joins withMembers (g1 reflected at 10/1, g2 at 30/2): the join's effects and end state. */
function joinG3(reflected = [{ groupId: 1, position: at(10, 1) }, { groupId: 2, position: at(30, 2) }], afterSequence = 7): { state: DomainState; saveJoin: JoinPoint | null } {
  let s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence, at: "T1", reflected: [] }).state;
  const checked = stepDomain(s, { type: "checkpointed", notDurable: [], reflected, joinerReflectedSequence: 0 });
  const save = checked.effects.find((e) => e.type === "saveJoin");
  assert.ok(save?.type === "saveJoin");
  s = stepDomain(checked.state, { type: "joinSaved", stoppedReason: undefined }).state;
  return { state: s, saveJoin: save.joinPoint };
}

test("a join records its join point: the joiner's cut and the highest position any member had reflected, taken while reflection is held", () => {
  const { state, saveJoin } = joinG3();
  assert.deepEqual(saveJoin, { afterSequence: 7, writeTimeUs: 30, acceptNumber: 2, at: "T1" });
  assert.deepEqual(state.members.find((m) => m.groupId === 3)?.joinPoint, saveJoin, "the member carries what was saved");
  // The positions of the request are not used in time mode (reflection was not held yet): the checkpointed ones are.
  const early = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 7, at: "T1", reflected: [{ groupId: 2, position: at(99, 9) }] }).state;
  const late = stepDomain(early, { type: "checkpointed", notDurable: [], reflected: [{ groupId: 2, position: at(40, 4) }], joinerReflectedSequence: 0 });
  assert.deepEqual(late.effects, [{ type: "saveJoin", joinPoint: { afterSequence: 7, writeTimeUs: 40, acceptNumber: 4, at: "T1" } }]);
  // The first member of a domain, and seq mode: nothing to be consistent with.
  const first = stepDomain(emptyDomain("time/A", "time"), { type: "joinRequested", groupId: 1, name: "g1", afterSequence: 0, at: "T", reflected: [] }).state;
  assert.deepEqual(stepDomain(first, { type: "checkpointed", notDurable: [], reflected: [], joinerReflectedSequence: 0 }).effects, [{ type: "saveJoin", joinPoint: null }]);
  const seq = stepDomain(run(emptyDomain("seq", "seq"), [{ type: "recovered", groupId: 1, name: "s1", stoppedReason: undefined, joinPoint: null }]).state,
    { type: "joinRequested", groupId: 2, name: "s2", afterSequence: 3, at: "T", reflected: [{ groupId: 1, position: at(5, 5) }] });
  assert.deepEqual(seq.effects, [{ type: "saveJoin", joinPoint: null }]);
});

test("a joiner is consistent with the others only once it reflected a record past its cut at or past the join point", () => {
  const point: JoinPoint = { afterSequence: 7, writeTimeUs: 30, acceptNumber: 2, at: "T1" };
  const table: [number, Position, boolean][] = [
    [7, at(50, 9), true], // at its cut: a record past it is needed (its first one after the join)
    [8, at(29, 9), true], // past the cut, before the join position
    [8, at(30, 1), true],
    [8, at(30, 2), false], // at the join position
    [9, at(31, 0), false],
  ];
  for (const [reflectedSequence, reflectedPosition, pending] of table) {
    assert.equal(joinPending(point, { reflectedSequence, reflectedPosition }), pending, `${reflectedSequence} at ${reflectedPosition.writeTimeUs}/${reflectedPosition.acceptNumber}`);
  }
  assert.equal(joinPending(null, { reflectedSequence: 0, reflectedPosition: at(0, 0) }), false);
});

test("a takeover naming a joiner with another member is refused while its join is pending; alone, or once past it, it is not", () => {
  const { state } = joinG3();
  const behind = { reflectedSequence: 7, reflectedPosition: at(5, 5) };
  const past = { reflectedSequence: 9, reflectedPosition: at(31, 3) };
  const refusal = takeoverJoinRefusal(state, new Set([1, 3]), (id) => (id === 3 ? behind : past));
  assert.match(refusal ?? "", /group g3 is not consistent with g1 yet: it joined its consistency domain at T1: not consistent with the other groups until it has reflected a record past sequence 7 at or past position 30\/2/);
  assert.equal(takeoverJoinRefusal(state, new Set([3]), () => behind), undefined, "alone it is consistent with itself");
  assert.equal(takeoverJoinRefusal(state, new Set([1, 2]), () => behind), undefined, "the others without it");
  assert.equal(takeoverJoinRefusal(state, new Set([1, 2, 3]), () => past), undefined);
});

test("a group attached again takes its cut where it is once reflection is held, not where it was when asked (seeds 5060, 10358, 11241); the fault join-cut-before-hold, put back, keeps the stale one", () => {
  // g3 asked at sequence 9 while it reflected alone (detached); by the time reflection was
  // held it had reflected through 211, far past where g1 and g2 are. With the stale cut,
  // sequence 211 counted as "past the cut at or past the join position": consistent at once.
  const attach = (): JoinPoint | null => {
    const s = stepDomain(withMembers, { type: "joinRequested", groupId: 3, name: "g3", afterSequence: 9, at: "T1", reflected: [] }).state;
    const checked = stepDomain(s, { type: "checkpointed", notDurable: [], reflected: [{ groupId: 1, position: at(10, 1) }, { groupId: 2, position: at(30, 2) }], joinerReflectedSequence: 211 });
    const save = checked.effects.find((e) => e.type === "saveJoin");
    assert.ok(save?.type === "saveJoin");
    return save.joinPoint;
  };
  const point = attach();
  assert.equal(point?.afterSequence, 211);
  assert.equal(joinPending(point, { reflectedSequence: 211, reflectedPosition: at(2900, 15) }), true, "not consistent with members still at 30/2");
  try {
    injectedFaults.add("join-cut-before-hold");
    const stale = attach();
    assert.equal(stale?.afterSequence, 9);
    assert.equal(joinPending(stale, { reflectedSequence: 211, reflectedPosition: at(2900, 15) }), false, "the fault counts it consistent");
  } finally {
    injectedFaults.clear();
  }
});

test("the historical fault late-join-counts-consistent, put back, records no join point", () => {
  try {
    injectedFaults.add("late-join-counts-consistent");
    assert.equal(joinG3().saveJoin, null);
  } finally {
    injectedFaults.clear();
  }
});

test("a recovered member keeps its saved join point in time mode; a group detached leaves and reflects in a domain of its own", () => {
  const point: JoinPoint = { afterSequence: 3, writeTimeUs: 1, acceptNumber: 2, at: "T" };
  const s = stepDomain(emptyDomain("time/A", "time"), { type: "recovered", groupId: 4, name: "g4", stoppedReason: undefined, joinPoint: point }).state;
  assert.deepEqual(s.members[0]?.joinPoint, point);
  const left = stepDomain(withMembers, { type: "left", groupId: 2, why: "detached by the operator" });
  assert.deepEqual(left.state.members.map((m) => m.name), ["g1"]);
  assert.match(JSON.stringify(left.effects), /detached by the operator/);
});

test("mixing reflect modes in one domain (one primary's groups) is refused at pair create", () => {
  const existing = [{ name: "g1", reflect: "time" as const, primaryNode: "A" }, { name: "s1", reflect: "seq" as const, primaryNode: "C" }];
  assert.match(reflectModeConflict(existing, { group: "g2", reflect: "seq", primaryNode: "A" }) ?? "", /whose group g1 reflects by time; all groups of a domain use one reflect mode: create the pair with --reflect time/);
  assert.equal(reflectModeConflict(existing, { group: "g2", reflect: "time", primaryNode: "A" }), undefined);
  assert.equal(reflectModeConflict(existing, { group: "g2", reflect: "time", primaryNode: "B" }), undefined, "another primary is another domain");
  assert.match(reflectModeConflict(existing, { group: "s2", reflect: "time", primaryNode: "C" }) ?? "", /reflects by seq/);
  assert.equal(reflectModeConflict(existing, { group: "s2", reflect: "marker", primaryNode: "C" }), undefined, "seq and marker are one mode (each group alone)");
  // A named domain (--domain) is one domain over its primaries, and not the primary's own.
  const named = [{ name: "n1", reflect: "time" as const, primaryNode: "A", domain: { name: "bank" } }];
  assert.match(reflectModeConflict(named, { group: "n2", reflect: "seq", primaryNode: "B", domain: { name: "bank" } }) ?? "", /in consistency domain bank, whose group n1 reflects by time/);
  assert.equal(reflectModeConflict(named, { group: "g2", reflect: "seq", primaryNode: "A" }), undefined, "A's own domain is another one");
});

type Action =
  | { readonly kind: "join"; readonly groupId: number; readonly outcome: "ok" | "notDurable" | "saveFailed" | "abandon"; readonly reflectedTime: number }
  | { readonly kind: "stop" | "resume" | "leave"; readonly groupId: number };

test("property: random joins, stops, resumes and leaves never throw, holds are released, the save comes after the checkpoint, members are unique", () => {
  const actions = fc.array(fc.oneof(
    fc.record({ kind: fc.constant("join" as const), groupId: fc.integer({ min: 1, max: 6 }), outcome: fc.constantFrom("ok" as const, "notDurable" as const, "saveFailed" as const, "abandon" as const), reflectedTime: fc.integer({ min: 0, max: 1000 }) }),
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
      const reflected = state.members.map((m) => ({ groupId: m.groupId, position: at(action.reflectedTime + m.groupId, m.groupId) }));
      let effects = step({ type: "joinRequested", groupId: action.groupId, name: `g${action.groupId}`, afterSequence: 5, at: "T", reflected });
      let checkpointed = false;
      if (action.outcome === "abandon") {
        step({ type: "joinAbandoned" });
      } else {
        for (;;) {
          const last = effects.at(-1);
          if (last?.type === "checkpointMembers") {
            checkpointed = true;
            const stopped = state.members.filter((m) => m.stoppedReason !== undefined).map((m) => ({ groupId: m.groupId, name: m.name, why: "is stopped" }));
            effects = step({ type: "checkpointed", notDurable: action.outcome === "notDurable" ? [...stopped, ...state.members.slice(0, 1).map((m) => ({ groupId: m.groupId, name: m.name, why: "could not be checkpointed" }))] : stopped, reflected, joinerReflectedSequence: 0 });
          } else if (last?.type === "saveJoin") {
            if (mode === "time") assert.equal(checkpointed, true, "checkpoint before join");
            // The join point: the highest position any member reflected (time mode, with members), none otherwise.
            const highest = reflected.reduce<Position | undefined>((h, r) => (h === undefined || comparePositions(r.position, h) > 0 ? r.position : h), undefined);
            if (mode === "seq" || reflected.length === 0) assert.equal(last.joinPoint, null);
            else assert.deepEqual(last.joinPoint === null ? undefined : joinPosition(last.joinPoint), highest);
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
