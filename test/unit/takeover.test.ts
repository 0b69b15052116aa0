// Proves the multi-group takeover machine (src/core/takeover.ts): table tests of its
// transitions (every check before anything changes, the cut, the intent saved before any
// conversion or word to the primary, the finish at start, failures), and fast-check properties:
// the cut is consistent (every arrived record at or before the frontier of the named groups is
// kept, nothing after it beyond what is reflected); and over random runs through a model shell
// that completes or fails every effect and crashes at any point, then restarts from its model
// disk: the machine never throws, node.json's intent changes only through its saves, and after
// the restart every named group is converted at the saved cut or none is (all or nothing).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  idleTakeover, namedGroupRefusal, planCut, stepTakeover, takeoverEffectsWithCompletion,
  type DrainedGroup, type NamedGroup, type TakeoverEffect, type TakeoverEvent, type TakeoverIntent, type TakeoverState,
} from "../../src/core/takeover.ts";
import { initialSecondaryState, newSecondaryRecord, type SecondaryLifecycleRecord, type TakeoverOutcome } from "../../src/core/secondary-group-machine.ts";
import { comparePositions, type Position } from "../../src/core/position.ts";
import { asAcceptNumber, asSequence, asWriteTimeUs } from "../../src/core/types.ts";
import { injectedFaults } from "../../src/core/faults.ts";

const node = "B";

function lifecycle(name: string, overrides: Partial<SecondaryLifecycleRecord> = {}): ReturnType<typeof initialSecondaryState> {
  const record = { ...newSecondaryRecord({ pairId: `p-${name}`, primaryNode: "A", primaryGroup: name, transfer: "push", streams: 1, reflect: "time" }), state: "replicating" as const, consistentFromSequence: 3, ...overrides };
  return initialSecondaryState({ groupId: name.charCodeAt(1), name, volumes: [], record, journalGeneration: 0 });
}

const secondary = (name: string, arrived = 10, overrides: Partial<SecondaryLifecycleRecord> = {}): NamedGroup => ({ kind: "secondary", name, lifecycle: lifecycle(name, overrides), arrivedSequence: arrived });
const pos = (t: number, n: number): Position => ({ writeTimeUs: asWriteTimeUs(t), acceptNumber: asAcceptNumber(n) });

function drainedGroup(name: string, overrides: Partial<DrainedGroup> = {}): DrainedGroup {
  return {
    groupId: name.charCodeAt(1), name, domainKey: "time/A", mode: "time", consistentFromSequence: 3,
    reflectedSequence: 5, arrivedSequence: 5, arrivedPosition: pos(50, 50), entries: [], reorderRecords: 0, ...overrides,
  };
}

const types = (effects: readonly TakeoverEffect[]): string[] => effects.map((e) => e.type);
const step = (s: TakeoverState, e: TakeoverEvent) => stepTakeover(s, e, node);
const request = (groups: readonly NamedGroup[]): TakeoverEvent => ({ type: "requested", groups, atIso: "T" });
/** A request whose checks pass, with its primary fenced (docs/replication.md, "Fencing"). */
function fencedRequest(groups: readonly NamedGroup[], keepAtLeast: readonly { name: string; sequence: number }[] = []) {
  const asked = step(idleTakeover, request(groups));
  assert.deepEqual(types(asked.effects), ["log", "fence"], "every check, then the fence, before anything else");
  return step(asked.state, { type: "fenced", keepAtLeast });
}

// ---- every check first ---------------------------------------------------------------------------

test("a takeover naming a group that does not exist, a writable one, one in its copy or one still short of its consistency point is refused with nothing held", () => {
  const cases: [NamedGroup, string][] = [
    [{ kind: "missing", name: "gx" }, "TM_ERR_NOT_FOUND"],
    [{ kind: "writable", name: "gw" }, "TM_ERR_STATE"],
    [secondary("gc", 0, { state: "copying" }), "TM_ERR_STATE"],
    [secondary("ge", 0, { state: "empty" }), "TM_ERR_STATE"],
    [secondary("gk", 2, { consistentFromSequence: 3 }), "TM_ERR_STATE"],
  ];
  for (const [bad, code] of cases) {
    for (const order of [[secondary("g1"), bad], [bad, secondary("g1")]]) {
      const out = step(idleTakeover, request(order));
      assert.equal(out.state, idleTakeover);
      assert.deepEqual(types(out.effects), ["log", "refuse"], `${bad.name}: a refusal holds nothing, drains nothing`);
      assert.equal((out.effects[1] as { code: string }).code, code);
    }
  }
  assert.deepEqual(types(step(idleTakeover, request([])).effects), ["log", "refuse"]);
  assert.match(JSON.stringify(namedGroupRefusal({ kind: "missing", name: "gx" }, node)), /group gx does not exist on node B/);
});

test("a takeover while another is in progress, or after one failed, is refused", () => {
  const draining = fencedRequest([secondary("g1")]).state;
  assert.equal(draining.phase, "draining");
  const again = step(draining, request([secondary("g2")]));
  assert.equal(again.state, draining);
  assert.match(JSON.stringify(again.effects.at(-1)), /another takeover is in progress/);
  const abandoned: TakeoverState = { phase: "abandoned", reason: "its intent could not be saved: EIO" };
  assert.match(JSON.stringify(step(abandoned, request([secondary("g1")])).effects.at(-1)), /restart the node/);
});

test("groups taken over before are answered with what they kept; duplicate names count once", () => {
  const done: TakeoverOutcome = { group: "g1", reflectedSequence: 7, droppedRecords: 1, state: "takeover" };
  const out = step(idleTakeover, request([{ kind: "takenOver", name: "g1", result: done }, { kind: "takenOver", name: "g1", result: done }]));
  assert.deepEqual(out.effects, [{ type: "answer", results: [done] }]);
  const mixed = fencedRequest([secondary("g2"), secondary("g2"), { kind: "takenOver", name: "g1", result: done }]);
  assert.deepEqual(types(mixed.effects), ["hold", "drain"]);
  assert.deepEqual(mixed.effects[1], { type: "drain", names: ["g2"] });
});

// ---- the whole run -------------------------------------------------------------------------------

test("takeover of two groups: held, drained, the cut computed and saved as the intent before the primary hears of it or anything is converted; answered after the intent is cleared", () => {
  let out = fencedRequest([secondary("g1"), secondary("g2")]);
  assert.deepEqual(types(out.effects), ["hold", "hold", "drain"]);
  // g1 arrived through 8 (positions 10, 20, 30 after its reflected 5), g2 through 6 (its 6th at 25): frontier (25).
  out = step(out.state, {
    type: "drained", groups: [
      drainedGroup("g1", { reflectedSequence: 5, arrivedSequence: 8, arrivedPosition: pos(30, 30), entries: [{ sequence: asSequence(6), position: pos(10, 10) }, { sequence: asSequence(7), position: pos(20, 20) }, { sequence: asSequence(8), position: pos(30, 30) }], reorderRecords: 2 }),
      drainedGroup("g2", { reflectedSequence: 5, arrivedSequence: 6, arrivedPosition: pos(25, 25), entries: [{ sequence: asSequence(6), position: pos(25, 25) }] }),
    ],
  });
  assert.deepEqual(types(out.effects), ["leaveDomain", "leaveDomain", "log", "persistIntent"]);
  const intent = (out.effects[3] as { intent: TakeoverIntent }).intent;
  assert.deepEqual(intent, {
    at: "T",
    groups: [
      { groupId: "g1".charCodeAt(1), name: "g1", keepThroughSequence: 7, droppedRecords: 1 + 2 },
      { groupId: "g2".charCodeAt(1), name: "g2", keepThroughSequence: 6, droppedRecords: 0 },
    ],
  });
  out = step(out.state, { type: "intentSaved" });
  assert.deepEqual(types(out.effects), ["tellPrimary", "tellPrimary", "reflectToCut"]);
  out = step(out.state, { type: "reflectedToCut" });
  assert.deepEqual(out.effects, [{ type: "convert", group: intent.groups[0], atIso: "T" }]);
  const r1: TakeoverOutcome = { group: "g1", reflectedSequence: 7, droppedRecords: 3, state: "takeover" };
  const r2: TakeoverOutcome = { group: "g2", reflectedSequence: 6, droppedRecords: 0, state: "takeover" };
  out = step(out.state, { type: "converted", result: r1 });
  assert.deepEqual(out.effects, [{ type: "convert", group: intent.groups[1], atIso: "T" }]);
  out = step(out.state, { type: "converted", result: r2 });
  assert.deepEqual(out.effects, [{ type: "clearIntent" }]);
  out = step(out.state, { type: "intentCleared" });
  assert.deepEqual(types(out.effects), ["log", "answer"]);
  assert.deepEqual(out.effects[1], { type: "answer", results: [r1, r2] });
  assert.equal(out.state, idleTakeover);
});

test("a cut short of a group's consistency point refuses the takeover after the drain: the groups are released (never refused to the primary) and stay in their domain", () => {
  const draining = fencedRequest([secondary("g1"), secondary("g2")]).state;
  const out = step(draining, {
    type: "drained", groups: [
      drainedGroup("g1", { consistentFromSequence: 9, reflectedSequence: 5, arrivedSequence: 9, arrivedPosition: pos(90, 90), entries: [6, 7, 8, 9].map((s) => ({ sequence: asSequence(s), position: pos(s * 10, s * 10) })) }),
      drainedGroup("g2", { arrivedPosition: pos(65, 65) }),
    ],
  });
  assert.deepEqual(types(out.effects), ["release", "release", "log", "refuse"]);
  assert.match(JSON.stringify(out.effects.at(-1)), /keep 6 of the 9 records/);
  assert.equal(out.state, idleTakeover);
  assert.deepEqual(types(step(draining, { type: "drainFailed", error: "EIO" }).effects), ["release", "release", "log", "refuse"]);
});

test("an intent that cannot be saved abandons the takeover (a restart decides); a failed conversion abandons it with the intent saved", () => {
  let s = fencedRequest([secondary("g1")]).state;
  s = step(s, { type: "drained", groups: [drainedGroup("g1")] }).state;
  const failed = step(s, { type: "intentSaveFailed", error: "ENOSPC" });
  assert.equal(failed.state.phase, "abandoned");
  assert.deepEqual(types(failed.effects), ["log", "refuse"], "nothing converted, the primary not told");
  assert.match(JSON.stringify(failed.effects.at(-1)), /finishes the takeover if the intent reached the disk/);
  s = step(s, { type: "intentSaved" }).state;
  s = step(s, { type: "reflectedToCut" }).state;
  const convert = step(s, { type: "convertFailed", name: "g1", error: "EIO" });
  assert.equal(convert.state.phase, "abandoned");
  assert.match(JSON.stringify(convert.effects.at(-1)), /Its intent is saved: restart the node/);
});

test("at start an unfinished intent is finished at its saved cuts: the groups not converted yet are adopted, applied through their cut, converted, and the intent cleared", () => {
  const intent: TakeoverIntent = { at: "T", groups: [{ groupId: 1, name: "g1", keepThroughSequence: 7, droppedRecords: 0 }, { groupId: 2, name: "g2", keepThroughSequence: 4, droppedRecords: 3 }] };
  let out = step(idleTakeover, { type: "restarted", intent, convertedNames: ["g1"] });
  assert.deepEqual(types(out.effects), ["log", "adopt", "reflectToCut"]);
  assert.deepEqual(out.effects[2], { type: "reflectToCut", groups: [intent.groups[1]] });
  out = step(out.state, { type: "reflectedToCut" });
  assert.deepEqual(out.effects, [{ type: "convert", group: intent.groups[1], atIso: "T" }]);
  out = step(out.state, { type: "converted", result: { group: "g2", reflectedSequence: 4, droppedRecords: 3, state: "takeover" } });
  assert.deepEqual(out.effects, [{ type: "clearIntent" }]);
  out = step(out.state, { type: "intentCleared" });
  assert.deepEqual(types(out.effects), ["log"], "nobody to answer at start: the log says it");
  assert.match(JSON.stringify(out.effects[0]), /takeover_finished_at_start/);
  const all = step(idleTakeover, { type: "restarted", intent, convertedNames: ["g1", "g2"] });
  assert.deepEqual(types(all.effects), ["log", "clearIntent"]);
});

test("planCut: per time domain the frontier over the named groups; a seq group keeps its arrived prefix; domains of different primaries apart", () => {
  const cut = planCut([
    drainedGroup("g1", { reflectedSequence: 2, arrivedSequence: 4, arrivedPosition: pos(40, 4), entries: [{ sequence: asSequence(3), position: pos(30, 3) }, { sequence: asSequence(4), position: pos(40, 4) }] }),
    drainedGroup("g2", { reflectedSequence: 1, arrivedSequence: 1, arrivedPosition: pos(35, 2) }),
    drainedGroup("g3", { domainKey: "time/C", reflectedSequence: 0, arrivedSequence: 2, arrivedPosition: pos(9, 9), entries: [{ sequence: asSequence(1), position: pos(5, 5) }, { sequence: asSequence(2), position: pos(9, 9) }] }),
    drainedGroup("g4", { domainKey: "seq", mode: "seq", reflectedSequence: 3, arrivedSequence: 8 }),
  ]);
  assert.deepEqual(cut.map((g) => g.keepThroughSequence), [3, 1, 2, 8]);
  assert.deepEqual(cut.map((g) => g.droppedRecords), [1, 0, 0, 0]);
});

// ---- properties ----------------------------------------------------------------------------------

/** Groups of one time domain: records with global positions (one accept order), each group's arrived and reflected prefix. */
const domainArbitrary = fc.record({
  owners: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 0, maxLength: 40 }),
  arrivedFraction: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 4, maxLength: 4 }),
  reflectedFraction: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 4, maxLength: 4 }),
  truncate: fc.boolean(),
});

test("property: the cut keeps every arrived record at or before the named groups' frontier and none after it past what is reflected (dependent-write consistent)", () => {
  fc.assert(fc.property(domainArbitrary, ({ owners, arrivedFraction, reflectedFraction, truncate }) => {
    const records: Position[][] = [[], [], [], []];
    owners.forEach((owner, i) => records[owner]?.push(pos(100 + i, i + 1)));
    const arrived = records.map((r, g) => Math.floor((arrivedFraction[g] ?? 0) * r.length));
    const arrivedPosition = (g: number): Position => (arrived[g] ?? 0) === 0 ? pos(0, 0) : (records[g]?.[(arrived[g] ?? 1) - 1] as Position);
    let f = arrivedPosition(0);
    for (let g = 1; g < 4; g++) if (comparePositions(arrivedPosition(g), f) < 0) f = arrivedPosition(g);
    // What is reflected is at or before the frontier (the reflector's rule).
    const reflected = records.map((r, g) => {
      const atOrBefore = r.slice(0, arrived[g]).filter((p) => comparePositions(p, f) <= 0).length;
      return Math.floor((reflectedFraction[g] ?? 0) * atOrBefore);
    });
    const groups = records.map((r, g) => {
      const entries: { sequence: ReturnType<typeof asSequence>; position: Position }[] = [];
      for (let s = (reflected[g] ?? 0) + 1; s <= (arrived[g] ?? 0); s++) {
        const position = r[s - 1] as Position;
        entries.push({ sequence: asSequence(s), position });
        if (truncate && comparePositions(position, f) > 0) break;
      }
      return drainedGroup(`g${g}`, { groupId: g + 1, consistentFromSequence: 0, reflectedSequence: reflected[g] ?? 0, arrivedSequence: arrived[g] ?? 0, arrivedPosition: arrivedPosition(g), entries });
    });
    const cut = planCut(groups);
    cut.forEach((c, g) => {
      const r = records[g] ?? [];
      assert.ok(c.keepThroughSequence >= (reflected[g] ?? 0) && c.keepThroughSequence <= (arrived[g] ?? 0));
      for (let s = 1; s <= (arrived[g] ?? 0); s++) {
        const atOrBefore = comparePositions(r[s - 1] as Position, f) <= 0;
        if (atOrBefore) assert.ok(s <= c.keepThroughSequence, `g${g} keeps its record ${s} at or before the frontier`);
        else assert.ok(s > c.keepThroughSequence, `g${g} drops its record ${s} past the frontier`);
      }
    });
  }), { numRuns: 500 });
});

/** A named group of a random run: what kind the shell finds, and its facts. */
const namedArbitrary = fc.record({
  kind: fc.constantFrom("secondary", "secondary", "secondary", "missing", "writable", "takenOver", "copying"),
  arrived: fc.integer({ min: 0, max: 12 }),
  reflected: fc.integer({ min: 0, max: 12 }),
  consistentFrom: fc.integer({ min: 0, max: 6 }),
});

type Outcome = "ok" | "fail" | "crash";
const runArbitrary = fc.record({
  named: fc.array(namedArbitrary, { minLength: 1, maxLength: 4 }),
  outcomes: fc.array(fc.constantFrom<Outcome>("ok", "ok", "ok", "ok", "fail", "crash"), { minLength: 30, maxLength: 30 }),
});

/**
 * A model shell: node.json's intent and the groups' persisted `takeover` state (its disk),
 * completions that succeed, fail or crash the node (then a restart from the disk). Checks the
 * contract as it goes.
 */
interface NamedValue { readonly kind: string; readonly arrived: number; readonly reflected: number; readonly consistentFrom: number }

function runModel(named: readonly NamedValue[], outcomes: readonly Outcome[], checkOrder = true): { taking: string[]; converted: Map<string, number>; intent: TakeoverIntent | undefined } {
  const names = named.map((_, i) => `g${i}`);
  const groups: NamedGroup[] = named.map((n, i) => {
    const name = names[i] as string;
    switch (n.kind) {
      case "missing": return { kind: "missing", name };
      case "writable": return { kind: "writable", name };
      case "takenOver": return { kind: "takenOver", name, result: { group: name, reflectedSequence: 1, droppedRecords: 0, state: "takeover" } };
      case "copying": return secondary(name, n.arrived, { state: "copying" });
      default: return secondary(name, n.arrived, { consistentFromSequence: n.consistentFrom });
    }
  });
  const taking = groups.filter((g) => g.kind === "secondary" && g.lifecycle.record.state === "replicating").map((g) => g.name);
  const disk: { intent: TakeoverIntent | undefined; converted: Map<string, number> } = { intent: undefined, converted: new Map() };
  let outcomeIndex = 0;
  const next = (): Outcome => outcomes[outcomeIndex++ % outcomes.length] ?? "ok";
  let state: TakeoverState = idleTakeover;
  let crashed = false;
  const drive = (first: TakeoverEvent): void => {
    let event: TakeoverEvent | undefined = first;
    while (event !== undefined && !crashed) {
      const out = stepTakeover(state, event, node);
      state = out.state;
      event = undefined;
      out.effects.forEach((effect, i) => {
        if (takeoverEffectsWithCompletion.has(effect.type)) assert.equal(i, out.effects.length - 1, `${effect.type} ends its list`);
        if (checkOrder && (effect.type === "tellPrimary" || effect.type === "reflectToCut" || effect.type === "convert")) assert.ok(disk.intent !== undefined, `${effect.type} only once the intent is on disk`);
        if (effect.type === "hold") assert.ok(taking.includes(effect.name), "only a group that passed every check is held");
        if (checkOrder && effect.type === "answer") assert.ok(taking.every((name) => disk.converted.has(name)), "answered once every conversion is saved");
        if (crashed) return;
        const outcome = takeoverEffectsWithCompletion.has(effect.type) ? next() : "ok";
        if (outcome === "crash") {
          crashed = true;
          return;
        }
        switch (effect.type) {
          case "fence":
            event = outcome === "ok" ? { type: "fenced", keepAtLeast: [] } : { type: "fenceRefused", code: "TM_ERR_PRIMARY_UNREACHABLE", text: "no stream" };
            break;
          case "drain": {
            const drained = effect.names.map((name): DrainedGroup => {
              const n = named[names.indexOf(name)] as NamedValue;
              const reflected = Math.min(n.reflected, n.arrived);
              return drainedGroup(name, { groupId: names.indexOf(name) + 1, consistentFromSequence: n.consistentFrom, reflectedSequence: reflected, arrivedSequence: n.arrived, arrivedPosition: pos(n.arrived, n.arrived), entries: [], domainKey: "seq", mode: "seq" });
            });
            event = outcome === "ok" ? { type: "drained", groups: drained } : { type: "drainFailed", error: "EIO" };
            break;
          }
          case "persistIntent":
            if (outcome === "ok") disk.intent = effect.intent;
            event = outcome === "ok" ? { type: "intentSaved" } : { type: "intentSaveFailed", error: "EIO" };
            break;
          case "reflectToCut":
            event = outcome === "ok" ? { type: "reflectedToCut" } : { type: "reflectFailed", error: "EIO" };
            break;
          case "convert":
            if (outcome === "ok") disk.converted.set(effect.group.name, effect.group.keepThroughSequence);
            event = outcome === "ok" ? { type: "converted", result: { group: effect.group.name, reflectedSequence: effect.group.keepThroughSequence, droppedRecords: effect.group.droppedRecords, state: "takeover" } } : { type: "convertFailed", name: effect.group.name, error: "EIO" };
            break;
          case "clearIntent":
            if (outcome === "ok") disk.intent = undefined;
            event = outcome === "ok" ? { type: "intentCleared" } : { type: "intentClearFailed", error: "EIO" };
            break;
          default:
            break;
        }
      });
    }
  };
  drive({ type: "requested", groups, atIso: "T" });
  // A crash, or a failure that abandoned it: the node restarts (from its disk) until nothing is left to finish.
  for (let restarts = 0; restarts < 10 && (crashed || state.phase === "abandoned" || disk.intent !== undefined); restarts++) {
    crashed = false;
    state = idleTakeover;
    const intent = disk.intent;
    if (intent === undefined) break;
    drive({ type: "restarted", intent, convertedNames: intent.groups.filter((g) => disk.converted.has(g.name)).map((g) => g.name) });
  }
  return { taking, converted: disk.converted, intent: disk.intent };
}

test("property: over random checks, failures and crashes at any step with restarts, a takeover converts every group it took at its saved cut, or none", () => {
  fc.assert(fc.property(runArbitrary, ({ named, outcomes }) => {
    const { taking, converted, intent } = runModel(named, outcomes);
    if (converted.size === 0) return;
    // The model restarts the node at most 10 times; with that many failures in a row the intent
    // may still be on disk: the takeover is not over, the next start goes on with it. What is
    // converted so far is then part of it, each at its saved cut.
    if (intent !== undefined) {
      for (const [name, kept] of converted) assert.equal(intent.groups.find((g) => g.name === name)?.keepThroughSequence, kept, `${name} converted at the intent's cut`);
      return;
    }
    assert.deepEqual([...converted.keys()].sort(), [...taking].sort(), "all or nothing");
  }), { numRuns: 1000 });
});

test("property: the check catches the historical fault takeover-not-durable (converted one by one with no intent: a crash between two conversions leaves some)", () => {
  injectedFaults.add("takeover-not-durable");
  try {
    const found = fc.check(fc.property(runArbitrary, ({ named, outcomes }) => {
      const { taking, converted } = runModel(named, outcomes, false);
      return converted.size === 0 || converted.size === taking.length;
    }), { numRuns: 2000 });
    assert.ok(found.failed, "with the fault a crash between two conversions leaves a takeover half done");
  } finally {
    injectedFaults.delete("takeover-not-durable");
  }
});

test("a primary that cannot be fenced refuses the takeover before anything is held; a cut short of the fenced primary's last write is refused after the drain", () => {
  const asked = step(idleTakeover, request([secondary("g1")]));
  const refused = step(asked.state, { type: "fenceRefused", code: "TM_ERR_PRIMARY_UNREACHABLE", text: "cannot be reached" });
  assert.deepEqual(types(refused.effects), ["log", "refuse"]);
  assert.equal(refused.state, idleTakeover);
  const draining = fencedRequest([secondary("g1")], [{ name: "g1", sequence: 9 }]).state;
  const short = step(draining, { type: "drained", groups: [drainedGroup("g1", { arrivedSequence: 8, arrivedPosition: pos(80, 80), entries: [6, 7, 8].map((n) => ({ sequence: asSequence(n), position: pos(n * 10, n * 10) })) })] });
  assert.deepEqual(types(short.effects), ["release", "log", "refuse"]);
  assert.match(JSON.stringify(short.effects.at(-1)), /before the last write its fenced primary accepted \(9/);
});

test("the historical fault refused-takeover-fails-pair fences the primary before every check ran (a refusal leaves it fenced); without it a refusal comes before the fence", () => {
  const groups = [secondary("g1"), { kind: "missing", name: "gx" } as NamedGroup];
  assert.deepEqual(types(step(idleTakeover, request(groups)).effects), ["log", "refuse"]);
  injectedFaults.add("refused-takeover-fails-pair");
  try {
    const asked = step(idleTakeover, request(groups));
    assert.deepEqual(types(asked.effects), ["fence"]);
    assert.deepEqual(types(step(asked.state, { type: "fenced", keepAtLeast: [] }).effects), ["log", "refuse"]);
  } finally {
    injectedFaults.delete("refused-takeover-fails-pair");
  }
});
