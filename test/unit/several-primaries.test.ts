// Issue 8 kind 5: groups from several primary nodes on one secondary (docs/replication.md,
// "Several primaries on one secondary"). Positions of different primaries are input, never an
// assertion: they order by (write time, node id, accept number), and reflection by (position,
// group id), so an exact tie (two primaries whose hosts send no write time stamp 0/1, 0/2, ...
// in step) is broken by a fixed node order. By default each primary is its own time domain;
// a named domain (`pair create --domain`) holds several primaries only when their write times
// are comparable (each runs --max-clock-skew, under `clock` or `host`); commit wait answers a
// write only once the clock passed its time + the skew. The historical fault
// position-tie-asserts, put back, makes the tie an assertion again (and the whole-node
// simulation catches it too: test/sim/node-world.ts runs a second primary C on some seeds).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import pino from "pino";
import { InvariantError } from "../../src/core/assert.ts";
import { domainKeyOf } from "../../src/core/consistency-domain.ts";
import { describeSecondary, initialSecondaryState, newSecondaryRecord } from "../../src/core/secondary-group-machine.ts";
import { injectedFaults } from "../../src/core/faults.ts";
import { incomparableWhy, namedDomainRefusal, type NamedDomainDeclaration, type NamedDomainMember } from "../../src/core/named-domain.ts";
import { atNode, comparePositions, type Position } from "../../src/core/position.ts";
import { nextToReflect, ReflectTracker, takeoverPlan, type ReflectHead } from "../../src/core/reflect.ts";
import { initialWriteTimeState, stampWrite } from "../../src/core/stamp.ts";
import { asAcceptNumber, asGroupId, asSequence, asWriteTimeUs } from "../../src/core/types.ts";
import { CommitWait } from "../../src/primary/commit-wait.ts";
import { commitWaitMsMax } from "../../src/core/limits.ts";
import { SimScheduler } from "../sim/scheduler.ts";
import { SimClock } from "../sim/sim-clock.ts";

const pos = (writeTimeUs: number, acceptNumber: number, node?: string): Position =>
  node === undefined ? { writeTimeUs: asWriteTimeUs(writeTimeUs), acceptNumber: asAcceptNumber(acceptNumber) } : atNode({ writeTimeUs: asWriteTimeUs(writeTimeUs), acceptNumber: asAcceptNumber(acceptNumber) }, node);

void test("positions of different primaries order by write time, then node id, then accept number; one node's as before", () => {
  assert.equal(comparePositions(pos(5, 9, "A"), pos(6, 1, "C")), -1, "write time first");
  assert.equal(comparePositions(pos(0, 1, "A"), pos(0, 1, "C")), -1, "an exact tie of two primaries: node order");
  assert.equal(comparePositions(pos(0, 7, "C"), pos(0, 1, "P")), -1, "node before accept number");
  assert.equal(comparePositions(pos(0, 2, "A"), pos(0, 1, "A")), 1, "one node: accept number");
  assert.equal(comparePositions(pos(3, 2), pos(3, 1)), 1, "no node: (write time, accept number) as before");
  assert.equal(comparePositions(pos(0, 1, "A"), pos(0, 1, "A")), 0);
});

void test("the position order is total whatever the peers sent (antisymmetric, transitive)", () => {
  const position = fc.record({ t: fc.integer({ min: 0, max: 3 }), a: fc.integer({ min: 0, max: 3 }), n: fc.constantFrom("A", "C", "P", undefined) })
    .map(({ t, a, n }) => pos(t, a, n));
  fc.assert(fc.property(position, position, position, (a, b, c) => {
    assert.equal(Math.sign(comparePositions(a, b)) + Math.sign(comparePositions(b, a)), 0);
    if (comparePositions(a, b) <= 0 && comparePositions(b, c) <= 0) assert.ok(comparePositions(a, c) <= 0);
  }), { numRuns: 2000 });
});

/** Reflects every head of `groups` (records in sequence order) as the reflector does: frontier, next head, tracker. */
function reflectAll(groups: readonly { readonly id: number; readonly node: string; readonly records: readonly Position[] }[]): string[] {
  const tracker = new ReflectTracker("time", groups.map((g) => ({ groupId: asGroupId(g.id), reflectedSequence: asSequence(0) })));
  const next = new Map<number, number>(groups.map((g) => [g.id, 0]));
  const order: string[] = [];
  const frontier = groups.map((g) => atNode(g.records[g.records.length - 1] ?? pos(0, 0), g.node)).reduce((m, p) => (comparePositions(p, m) < 0 ? p : m));
  for (;;) {
    const heads: ReflectHead[] = [];
    for (const g of groups) {
      const i = next.get(g.id) ?? 0;
      const record = g.records[i];
      if (record === undefined) continue;
      heads.push({ groupId: asGroupId(g.id), sequence: asSequence(i + 1), position: atNode(record, g.node), arrivedSequence: asSequence(g.records.length) });
    }
    const chosen = nextToReflect(heads, frontier, "time");
    if (chosen === undefined) return order;
    tracker.noteReflected(chosen.groupId, chosen.sequence, chosen.position);
    next.set(chosen.groupId, (next.get(chosen.groupId) ?? 0) + 1);
    order.push(`${chosen.groupId as number}:${chosen.sequence as number}`);
  }
}

// Two primaries whose hosts send no write time (every NBD client, --write-time host): both stamp
// 0/1, 0/2, 0/3 in step. Group 1 is P2's, group 2 is P1's: the node order puts P1's first.
// P1's last record is a time advance at 1/4, so the frontier passes P2's records.
const tied = [
  { id: 1, node: "P2", records: [pos(0, 1), pos(0, 2), pos(0, 3), pos(1, 4)] },
  { id: 2, node: "P1", records: [pos(0, 1), pos(0, 2), pos(0, 3), pos(1, 4)] },
];

void test("an exact tie of two primaries in one domain is broken by the node order, never asserted", () => {
  injectedFaults.clear();
  assert.deepEqual(reflectAll(tied), ["2:1", "2:2", "2:3", "1:1", "1:2", "1:3", "2:4"]);
  // Without P1's time advance the frontier is P1's 0/3: P2's records wait for it (they come after it).
  assert.deepEqual(reflectAll(tied.map((g) => ({ ...g, records: g.records.slice(0, 3) }))), ["2:1", "2:2", "2:3"]);
});

void test("two groups of one primary that tie (a peer's broken promise) are ordered by group id, never asserted", () => {
  injectedFaults.clear();
  assert.deepEqual(reflectAll([{ id: 1, node: "A", records: [pos(4, 1)] }, { id: 2, node: "A", records: [pos(4, 1)] }]), ["1:1", "2:1"]);
});

void test("the check above catches the historical fault position-tie-asserts: the tie asserts again", () => {
  injectedFaults.add("position-tie-asserts");
  try {
    assert.throws(() => reflectAll(tied), InvariantError);
    assert.equal(domainKeyOf({ reflect: "time", primaryNode: "P1" }), domainKeyOf({ reflect: "time", primaryNode: "P2" }), "and every primary shared one time domain");
  } finally {
    injectedFaults.clear();
  }
});

void test("random positions from several primaries, ties included, reflect without an assertion, each group in sequence order", () => {
  const group = (id: number) => fc.record({ node: fc.constantFrom("A", "C", "P"), steps: fc.array(fc.record({ dt: fc.integer({ min: 0, max: 2 }), da: fc.integer({ min: 1, max: 2 }) }), { maxLength: 8 }) })
    .map(({ node, steps }) => {
      let t = 0;
      let a = 0;
      return { id, node, records: steps.map(({ dt, da }) => { t += dt; a += da; return pos(t, a); }) };
    });
  fc.assert(fc.property(group(1), group(2), group(3), (g1, g2, g3) => {
    injectedFaults.clear();
    const order = reflectAll([g1, g2, g3]);
    for (const g of [g1, g2, g3]) {
      const mine = order.filter((o) => o.startsWith(`${g.id}:`)).map((o) => Number(o.split(":")[1]));
      assert.deepEqual(mine, mine.map((_, i) => i + 1).slice(0, mine.length));
    }
  }), { numRuns: 500 });
});

void test("takeover's plan keeps by the same order: a tie at the frontier keeps the earlier node's record only", () => {
  const entries = (records: readonly Position[]) => records.map((position, i) => ({ sequence: asSequence(i + 1), position }));
  const groups = [
    { groupId: asGroupId(1), node: "P2", reflectedSequence: asSequence(0), arrivedSequence: asSequence(1), arrivedPosition: pos(0, 1), entries: entries([pos(0, 1)]) },
    { groupId: asGroupId(2), node: "P1", reflectedSequence: asSequence(0), arrivedSequence: asSequence(2), arrivedPosition: pos(0, 2), entries: entries([pos(0, 1), pos(0, 2)]) },
  ];
  const plan = takeoverPlan(groups);
  // The frontier is P1's 0/2 (P1 < P2 at write time 0): P2's 0/1 comes after it and is not kept.
  assert.deepEqual(plan.keep.map((k) => k.keepThroughSequence as number), [0, 2]);
});

void test("the default time domain is the primary node's; a named domain is shared; seq stands alone; the key comes from the persisted record", () => {
  injectedFaults.clear();
  assert.equal(domainKeyOf({ reflect: "time", primaryNode: "A" }), "time/A");
  assert.notEqual(domainKeyOf({ reflect: "time", primaryNode: "A" }), domainKeyOf({ reflect: "time", primaryNode: "C" }));
  const domain = { name: "payments", writeTimePolicy: "clock" as const, maxClockSkewMs: 5 };
  assert.equal(domainKeyOf({ reflect: "time", primaryNode: "A", domain }), domainKeyOf({ reflect: "time", primaryNode: "C", domain }));
  assert.equal(domainKeyOf({ reflect: "time", primaryNode: "A", domain }), "named/payments");
  assert.equal(domainKeyOf({ reflect: "seq", primaryNode: "A", domain }), "seq");
  // What a restart reads back from node.json gives the same key.
  assert.equal(domainKeyOf(JSON.parse(JSON.stringify({ reflect: "time", primaryNode: "C", domain })) as { reflect: "time"; primaryNode: string; domain: NamedDomainDeclaration }), "named/payments");
});

void test("a named domain over several primaries: only with comparable write times (--max-clock-skew, clock or host)", () => {
  const declared = (name: string, writeTimePolicy: "host" | "clock" | "counter", maxClockSkewMs: number): NamedDomainDeclaration => ({ name, writeTimePolicy, maxClockSkewMs });
  const member = (group: string, primaryNode: string, domain: NamedDomainDeclaration): NamedDomainMember => ({ group, primaryNode, domain });
  assert.equal(incomparableWhy({ writeTimePolicy: "clock", maxClockSkewMs: 5 }), undefined);
  assert.equal(incomparableWhy({ writeTimePolicy: "host", maxClockSkewMs: 1 }), undefined);
  assert.match(incomparableWhy({ writeTimePolicy: "host", maxClockSkewMs: 0 }) ?? "", /without --max-clock-skew/);
  assert.match(incomparableWhy({ writeTimePolicy: "counter", maxClockSkewMs: 5 }) ?? "", /counter/);
  // One primary's groups: always comparable, whatever it declared.
  assert.equal(namedDomainRefusal("A", "g2", declared("d", "host", 0), [member("g1", "A", declared("d", "host", 0))]), undefined);
  assert.equal(namedDomainRefusal("A", "g1", declared("d", "counter", 0), []), undefined);
  // A second primary: both must declare.
  assert.equal(namedDomainRefusal("C", "c1", declared("d", "clock", 5), [member("g1", "A", declared("d", "host", 2))]), undefined);
  assert.match(namedDomainRefusal("C", "c1", declared("d", "host", 0), [member("g1", "A", declared("d", "clock", 5))]) ?? "", /^domain d has groups of primary A; group c1 of primary C may join it only with comparable write times, but C runs --write-time host without --max-clock-skew/);
  assert.match(namedDomainRefusal("C", "c1", declared("d", "clock", 5), [member("g1", "A", declared("d", "host", 0))]) ?? "", /^domain d has group g1 of primary A, which runs --write-time host without --max-clock-skew/);
  assert.match(namedDomainRefusal("C", "c1", declared("d", "counter", 5), [member("g1", "A", declared("d", "clock", 5))]) ?? "", /counter/);
  // Members of another domain do not count.
  assert.equal(namedDomainRefusal("C", "c1", declared("d", "host", 0), [member("g1", "A", declared("e", "host", 0))]), undefined);
});

void test("--write-time host with --max-clock-skew: a write without a host time is stamped from the clock, never below the recorded time", () => {
  const withClock = stampWrite({ ...initialWriteTimeState, recordedWriteTimeUs: asWriteTimeUs(100) }, { policy: "host", nowUs: 0, untimedNowUs: 5_000 });
  assert.equal(withClock.stamp.writeTimeUs, 5_000);
  const behind = stampWrite({ ...initialWriteTimeState, recordedWriteTimeUs: asWriteTimeUs(9_000) }, { policy: "host", nowUs: 0, untimedNowUs: 5_000 });
  assert.equal(behind.stamp.writeTimeUs, 9_000, "never back");
  const without = stampWrite({ ...initialWriteTimeState, recordedWriteTimeUs: asWriteTimeUs(100) }, { policy: "host", nowUs: 0 });
  assert.equal(without.stamp.writeTimeUs, 100, "without the skew: the recorded time, as before");
});

/** A CommitWait on virtual time; `wallAheadMs`: how far the stamp clock runs ahead of the monotonic one. */
function commitWaitOnVirtualTime(skewMs: number): { scheduler: SimScheduler; clock: SimClock; wait: CommitWait; nowUs: () => number } {
  const scheduler = new SimScheduler();
  const clock = new SimClock(scheduler);
  const nowUs = (): number => Math.floor(clock.wallMs() * 1000);
  const wait = new CommitWait({ skewMs, clock, clockUs: nowUs, logger: pino({ level: "silent" }) });
  return { scheduler, clock, wait, nowUs };
}

void test("commit wait: an answer goes only once the clock passed the write time + the skew; many answers share one timer", async () => {
  const { scheduler, wait, nowUs } = commitWaitOnVirtualTime(5);
  const t0 = nowUs();
  assert.equal(wait.wait(t0 - 6_000), undefined, "a write time more than the skew ago answers at once");
  const answered: number[] = [];
  const pending = [0, 0, 1_000, 3_000].map((offsetUs, i) => wait.wait(t0 + offsetUs)?.then(() => answered.push(i)));
  assert.ok(pending.every((p) => p !== undefined));
  assert.equal(wait.pending, 4);
  await scheduler.runFor(4);
  assert.deepEqual(answered, [], "nothing before write time + 5 ms");
  await scheduler.runFor(2.5);
  assert.deepEqual(answered, [0, 1], "the two stamped at t0 after 5 ms");
  await scheduler.runFor(10);
  assert.deepEqual(answered, [0, 1, 2, 3]);
  assert.equal(wait.pending, 0);
  assert.ok(scheduler.nextAtMs() === undefined, "no timer left behind");
});

void test("commit wait: every wait has a deadline (EIO past it), and a stop fails what waits (ESHUTDOWN)", async () => {
  const { scheduler, clock, wait, nowUs } = commitWaitOnVirtualTime(5);
  // A write time far ahead of a clock that then stands still (the stamp clock never does; this is the bound).
  const far = wait.wait(nowUs() + 10 * commitWaitMsMax * 1000);
  assert.ok(far !== undefined);
  const outcome = far.then(() => "answered", (error: unknown) => (error as { errno?: string }).errno ?? "other");
  await scheduler.runFor(commitWaitMsMax + 10);
  assert.equal(await outcome, "EIO");
  const stopped = wait.wait(nowUs() + 1_000)?.then(() => "answered", (error: unknown) => (error as { errno?: string }).errno ?? "other");
  wait.close();
  assert.equal(await stopped, "ESHUTDOWN");
  void clock;
});

void test("status: a group held at the frontier by a group of another primary (a named domain) names it", () => {
  const record = {
    ...newSecondaryRecord({ pairId: "p1", primaryNode: "A", primaryGroup: "g", transfer: "push", streams: 1, reflect: "time", domain: { name: "shared", writeTimePolicy: "clock", maxClockSkewMs: 5 } }),
    state: "replicating" as const, startSequence: 1, consistentFromSequence: 1, reflectedSequence: 12,
  };
  const state = initialSecondaryState({ groupId: 1, name: "g", volumes: [], record, journalGeneration: 0 });
  const facts = {
    reflectedSequence: 12, arrivedSequence: 20, rewinding: false, reapplyThrough: 0, streams: 1, noStreamSinceIso: undefined, peerCloseText: undefined,
    held: undefined, joinPendingText: undefined, detachedFrom: undefined, frontierHolder: "c0", frontierHolderPrimary: "C", journalUsedBytes: 0, journalBytesMax: 1 << 20, lastError: null,
  };
  assert.match(describeSecondary(state, facts).reason ?? "", /^reflection waits for group c0 of primary C \(domain shared\)/);
  assert.equal(describeSecondary(state, { ...facts, arrivedSequence: 12 }).reason, null, "nothing waits: nothing to say");
  assert.equal(describeSecondary(state, { ...facts, frontierHolderPrimary: undefined }).reason, null, "a holder of the same primary: the ordinary order, not a hold");
});
