// Proves the pure decisions of pair status (core/pair-view.ts): the exact host-write lag
// ledger (counts and bytes exact, time advances not counted, never understating once merged),
// the consistent-as-of time on each side, lag seconds (a cut-off secondary lags at least the
// age of its consistent-as-of time), which state each side shows, and when a group waiting
// behind another member of its consistency domain is shown held.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { domainHeldShownAfterMs, timeAdvanceIdleIntervalMs, timeAdvanceIntervalMs } from "../../src/core/limits.ts";
import {
  HostWriteLedger, disconnectedReason, domainHeldShown, isoOfWallUs, pairHealthy, primaryConsistentAsOfUs, primaryLagSeconds, primaryReflectedSequence, primaryShownState,
  recoveredAcceptedAtMs, secondaryConsistentAsOfUs, secondaryLagSeconds,
} from "../../src/core/pair-view.ts";

void test("the ledger counts exactly the host writes after what was dropped and through the sequence asked", () => {
  const ledger = new HostWriteLedger();
  assert.deepEqual(ledger.figures(100), { records: 0, bytes: 0, oldestWallTimeUs: 0, oldestAtMs: undefined }, "an idle pair shows 0");
  // Sequences 2, 3 and 6 are time advances (not noted): only host writes count.
  ledger.note(1, 4096, 1_000, 10);
  ledger.note(4, 512, 4_000, 40);
  ledger.note(5, 0, 5_000, 50); // zeroes: a record, no payload bytes
  ledger.note(7, 65536, 7_000, 70);
  assert.deepEqual(ledger.figures(7), { records: 4, bytes: 4096 + 512 + 65536, oldestWallTimeUs: 1_000, oldestAtMs: 10 });
  assert.deepEqual(ledger.figures(5), { records: 3, bytes: 4096 + 512, oldestWallTimeUs: 1_000, oldestAtMs: 10 }, "what the other side knows of: through 5");
  ledger.dropThrough(3);
  assert.deepEqual(ledger.figures(9), { records: 3, bytes: 512 + 65536, oldestWallTimeUs: 4_000, oldestAtMs: 40 });
  ledger.note(4, 512, 4_000, 40);
  assert.equal(ledger.figures(9).records, 3, "a sequence seen again (recovery, a resend) is not counted twice");
  ledger.dropAfter(4);
  assert.deepEqual(ledger.figures(9), { records: 1, bytes: 512, oldestWallTimeUs: 4_000, oldestAtMs: 40 }, "a resumed journal that lost 5 and 7");
  ledger.dropThrough(9);
  assert.deepEqual(ledger.figures(9), { records: 0, bytes: 0, oldestWallTimeUs: 0, oldestAtMs: undefined });
});

void test("against a plain list: exact below the limit; past it merged runs never understate and are exact at their ends", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ gap: fc.integer({ min: 1, max: 4 }), bytes: fc.integer({ min: 0, max: 1 << 20 }) }), { maxLength: 200 }),
      fc.array(fc.integer({ min: 0, max: 900 }), { maxLength: 6 }),
      fc.integer({ min: 2, max: 300 }),
      (writes, drops, limit) => {
        const ledger = new HostWriteLedger(limit);
        const plain: { sequence: number; bytes: number }[] = [];
        let sequence = 0;
        for (const w of writes) {
          sequence += w.gap;
          ledger.note(sequence, w.bytes, sequence * 10, sequence);
          plain.push({ sequence, bytes: w.bytes });
        }
        let dropped = 0;
        for (const d of [...drops].sort((a, b) => a - b)) {
          ledger.dropThrough(d);
          dropped = d;
          for (const through of [d, d + 3, sequence]) {
            const expected = plain.filter((p) => p.sequence > dropped && p.sequence <= through);
            const got = ledger.figures(through);
            const expectedBytes = expected.reduce((sum, p) => sum + p.bytes, 0);
            if (writes.length <= limit) {
              assert.equal(got.records, expected.length);
              assert.equal(got.bytes, expectedBytes);
            } else {
              // Merged: a run partly reflected still counts whole (never understated).
              assert.ok(got.records >= expected.length, `records ${got.records} >= ${expected.length}`);
              assert.ok(got.bytes >= expectedBytes, `bytes ${got.bytes} >= ${expectedBytes}`);
            }
          }
        }
        assert.ok(ledger.size <= limit);
      },
    ),
  );
});

void test("consistent-as-of: the primary says just before its oldest unreflected host write, or now; the secondary the wall time it reflected", () => {
  assert.equal(primaryConsistentAsOfUs({ consistent: false, oldestUnreflectedWallTimeUs: undefined, nowWallUs: 9_000, lastStampedWallTimeUs: 0 }), undefined, "copying: not consistent");
  assert.equal(primaryConsistentAsOfUs({ consistent: true, oldestUnreflectedWallTimeUs: undefined, nowWallUs: 9_000, lastStampedWallTimeUs: 8_000 }), 9_000, "nothing unreflected: every write accepted by now is there");
  assert.equal(primaryConsistentAsOfUs({ consistent: true, oldestUnreflectedWallTimeUs: undefined, nowWallUs: 9_000, lastStampedWallTimeUs: 9_500 }), 9_500, "a clock stepped back does not move it back");
  assert.equal(primaryConsistentAsOfUs({ consistent: true, oldestUnreflectedWallTimeUs: 5_000, nowWallUs: 9_000, lastStampedWallTimeUs: 8_000 }), 4_999);
  assert.equal(primaryConsistentAsOfUs({ consistent: true, oldestUnreflectedWallTimeUs: 0, nowWallUs: 9_000, lastStampedWallTimeUs: 8_000 }), undefined, "an old-format write: unknown");
  assert.equal(secondaryConsistentAsOfUs({ consistent: true, reflectedWallTimeUs: 7_000 }), 7_000);
  assert.equal(secondaryConsistentAsOfUs({ consistent: false, reflectedWallTimeUs: 7_000 }), undefined);
  assert.equal(secondaryConsistentAsOfUs({ consistent: true, reflectedWallTimeUs: 0 }), undefined, "nothing with a wall time reflected yet");
  assert.equal(isoOfWallUs(1_700_000_000_123_999), "2023-11-14T22:13:20.123Z", "rounded down to the ms: never later than the truth");
  assert.equal(isoOfWallUs(undefined), null);
});

void test("lag seconds: the oldest host write's age; a cut-off or stopped secondary lags at least the age of what it reflected last", () => {
  assert.equal(primaryLagSeconds(5_000, undefined), 0, "idle");
  assert.equal(primaryLagSeconds(5_000, 2_500), 2.5);
  const now = 100_000_000;
  const lag = (over: Partial<Parameters<typeof secondaryLagSeconds>[0]>): number =>
    secondaryLagSeconds({ nowWallUs: now, oldestUnreflectedWallTimeUs: undefined, cutOff: false, reflectedWallTimeUs: now - 4_000_000, heldForMs: 0, ...over });
  assert.equal(lag({}), 0, "connected and nothing waiting: 0, though an idle pair's consistent-as-of is a heartbeat old");
  assert.equal(lag({ oldestUnreflectedWallTimeUs: now - 1_500_000 }), 1.5);
  assert.equal(lag({ cutOff: true, reflectedWallTimeUs: now - 30_000_000 }), 30, "cut off or stopped: at least the age of consistent-as-of");
  assert.equal(lag({ cutOff: true, reflectedWallTimeUs: 0 }), 0, "nothing with a wall time reflected yet: no floor known");
  assert.equal(lag({ cutOff: true, oldestUnreflectedWallTimeUs: now - 40_000_000, reflectedWallTimeUs: now - 30_000_000 }), 40, "the oldest waiting host write when it is older");
  // A member of a two-group domain, idle: its last time advance waits for the other member's
  // next one (up to timeAdvanceIdleIntervalMs). No host write waits: 0, however long it waits.
  assert.equal(lag({ heldForMs: timeAdvanceIdleIntervalMs }), 0, "time advances waiting behind a domain member are no lag");
  assert.equal(lag({ oldestUnreflectedWallTimeUs: now - 1_000_000, heldForMs: 7_000 }), 1, "a host write waiting behind a member: its own age, not the hold's");
  assert.equal(lag({ oldestUnreflectedWallTimeUs: 0, heldForMs: 7_000 }), 7, "a host write of unknown wall time (format 1): the hold's duration stands in");
});

void test("after a restart the primary counts its lag from what it last knew reflected, and recovered writes age by their wall time", () => {
  const fence = { peerTookOver: true, cutSequence: 27 };
  assert.equal(primaryReflectedSequence({ reported: 0, savedHint: 50, copyStartSequence: 10, fence: null }), 50, "the saved hint, not 0");
  assert.equal(primaryReflectedSequence({ reported: 52, savedHint: 50, copyStartSequence: 10, fence: null }), 52, "what the secondary reports wins once it reports in");
  assert.equal(primaryReflectedSequence({ reported: 0, savedHint: 0, copyStartSequence: 10, fence: null }), 10, "the copy carries everything through its start");
  assert.equal(primaryReflectedSequence({ reported: 0, savedHint: 20, copyStartSequence: 0, fence }), 27, "a takeover applied everything through its cut");
  assert.equal(primaryReflectedSequence({ reported: 0, savedHint: 20, copyStartSequence: 0, fence: { peerTookOver: false, cutSequence: null } }), 20, "fenced by the operator: what it knew");

  // The ledger rebuilt from the journal at start: 43 host writes, 40 of them reflected before
  // the stop (hint 40); the 3 left are exact, and they age by their wall time from the start.
  const nowMs = 1_000;
  const nowWallUs = 1_700_000_000_000_000;
  const ledger = new HostWriteLedger();
  for (let sequence = 1; sequence <= 43; sequence++) {
    const wallTimeUs = nowWallUs - (60 - sequence) * 1_000_000;
    ledger.note(sequence, sequence <= 41 ? 4096 : sequence === 42 ? 4096 : 8192, wallTimeUs, recoveredAcceptedAtMs({ nowMs, nowWallUs, wallTimeUs }));
  }
  ledger.dropThrough(primaryReflectedSequence({ reported: 0, savedHint: 40, copyStartSequence: 0, fence: null }));
  const figures = ledger.figures(43);
  assert.equal(figures.records, 3);
  assert.equal(figures.bytes, 4096 + 4096 + 8192);
  assert.equal(primaryLagSeconds(nowMs, figures.oldestAtMs), 19, "the oldest (sequence 41) was accepted 19 s before the start by the wall clock");
  assert.equal(primaryLagSeconds(nowMs + 5_000, figures.oldestAtMs), 24, "and ages on the monotonic clock from there");
  assert.equal(recoveredAcceptedAtMs({ nowMs, nowWallUs, wallTimeUs: nowWallUs + 2_000_000 }), nowMs, "a wall clock stepped back behind the record: age 0, not negative");
  assert.equal(recoveredAcceptedAtMs({ nowMs, nowWallUs, wallTimeUs: 0 }), undefined, "a format-1 record: age unknown");
});

void test("the state shown: the record's own states first, then stopped, held, disconnected", () => {
  const down = { sinceIso: "2026-01-01T00:00:00.000Z", lastError: "connect ECONNREFUSED 127.0.0.1:7400" };
  const shown = (over: Partial<Parameters<typeof primaryShownState>[0]>): string =>
    primaryShownState({ recordState: "replicating", groupStopped: false, writesHeldForJournal: false, linkDown: undefined, ...over });
  assert.equal(shown({}), "replicating");
  assert.equal(shown({ recordState: "copying" }), "copying");
  assert.equal(shown({ linkDown: down }), "disconnected");
  assert.equal(shown({ linkDown: down, recordState: "copying" }), "copying", "the copy is what is missing: the reason says the link is down");
  assert.equal(shown({ linkDown: down, writesHeldForJournal: true }), "held");
  assert.equal(shown({ linkDown: down, writesHeldForJournal: true, groupStopped: true }), "stopped");
  assert.equal(shown({ peerStopped: true }), "stopped", "the secondary's group stopped by its disk: the primary says so too");
  assert.equal(shown({ peerStopped: true, writesHeldForJournal: true }), "held", "host writes held come first");
  for (const own of ["suspended", "failed", "fenced"] as const) assert.equal(shown({ recordState: own, groupStopped: true, linkDown: down }), own);
  assert.equal(disconnectedReason("node-b at 127.0.0.1:7400", down), "link to node-b at 127.0.0.1:7400 down since 2026-01-01T00:00:00.000Z (last error: connect ECONNREFUSED 127.0.0.1:7400); retrying");
  assert.deepEqual(["copying", "replicating", "disconnected", "held", "stopped", "suspended", "failed", "fenced", "takeover"].filter(pairHealthy), ["copying", "replicating"]);
});

void test("a group waiting behind a member of its domain is shown held at once when the holder is gone, stopped or cut off; behind one that receives, not while an idle domain waits for a heartbeat", () => {
  const receiving = { holderPresent: true, holderStopped: false, holderStreams: 2 };
  assert.equal(domainHeldShown({ ...receiving, holderPresent: false, heldForMs: 0 }), true, "holder gone");
  assert.equal(domainHeldShown({ ...receiving, holderStopped: true, heldForMs: 0 }), true, "holder stopped by its disk");
  assert.equal(domainHeldShown({ ...receiving, holderStreams: 0, heldForMs: 0 }), true, "no stream from the holder's primary");
  // An idle domain in step: a group's last record waits for the holder's next heartbeat, due
  // timeAdvanceIdleIntervalMs after the holder's last record, found on the primary's ticker
  // (every timeAdvanceIntervalMs / 2), then made durable on both nodes and reflected. With the
  // threshold equal to the interval, a healthy idle domain of two groups whose heartbeats fell
  // in one tick (after a restart) showed `held`, and `pair status --check` failed, at every
  // heartbeat (the 010f61e old-data-dir e2e).
  const heartbeatLateMs = timeAdvanceIdleIntervalMs + timeAdvanceIntervalMs / 2 + 2_000;
  assert.equal(domainHeldShown({ ...receiving, heldForMs: heartbeatLateMs }), false, "waiting for an idle holder's heartbeat, a tick and 2 s of delivery late");
  assert.equal(domainHeldShown({ ...receiving, heldForMs: domainHeldShownAfterMs - 1 }), false);
  assert.equal(domainHeldShown({ ...receiving, heldForMs: domainHeldShownAfterMs }), true, "a holder that receives but stays behind is named");
});
