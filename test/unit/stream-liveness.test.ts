// Proves the pure pieces that keep replication moving when a stream goes silent (issue 6,
// kind 3): PeerLiveness (a PING when idle, dead after the peer timeout), AnswerWatch (a
// stream whose requests go unanswered is stuck, even while PINGs pass), the secondary's
// PullPlanner (one open PULL, the range of a lost stream asked for again on a live one, the
// gap's head always pullable whatever the reorder buffer holds, pulls sized to the journal's
// room), and the sender's side of pull and refusals (an answer starts exactly at
// PULL.fromSequence; a NO_SPACE refusal and an answer that overtakes an unanswered batch on
// its stream both make that batch resendable at once).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { AnswerWatch, PeerLiveness } from "../../src/core/liveness.ts";
import { replPeerTimeoutMs, replPingIntervalMs } from "../../src/core/limits.ts";
import { PullPlanner, pullForwardReorderBytesMax, type PullView } from "../../src/core/pull-planner.ts";
import { PairSender } from "../../src/core/sender.ts";
import { asSequence } from "../../src/core/types.ts";

void test("PeerLiveness: PING after an idle interval, dead after the peer timeout, any byte heard resets it", () => {
  const l = new PeerLiveness({ nowMs: 0, pingIntervalMs: replPingIntervalMs, peerTimeoutMs: replPeerTimeoutMs });
  assert.equal(l.check(500).kind, "ok");
  assert.equal(l.check(replPingIntervalMs).kind, "ping");
  l.sent(replPingIntervalMs);
  assert.equal(l.check(replPingIntervalMs + 10).kind, "ok", "a frame sent defers the PING");
  l.heard(3000);
  assert.equal(l.check(3000 + replPeerTimeoutMs).kind, "ping", "heard at 3 s: not dead at the timeout's edge");
  const dead = l.check(3001 + replPeerTimeoutMs);
  assert.equal(dead.kind, "dead");
  assert.ok(replPeerTimeoutMs <= 10_000, "a silent stream is found within seconds");
});

void test("AnswerWatch: stuck when requests go unanswered, not while answers keep coming", () => {
  const w = new AnswerWatch(5000);
  assert.equal(w.check(100_000).kind, "ok", "nothing outstanding is never stuck");
  w.requestSent(0);
  w.requestSent(100);
  assert.equal(w.check(5000).kind, "ok");
  w.answered(4000);
  assert.equal(w.check(8999).kind, "ok", "measured from the last answer");
  const stuck = w.check(9001);
  assert.ok(stuck.kind === "stuck" && stuck.outstanding === 1);
  w.answered(9100);
  w.answered(9200); // an answer nobody waits for changes nothing
  assert.equal(w.outstanding, 0);
  w.requestSent(20_000);
  assert.equal(w.check(24_000).kind, "ok", "a new request after a quiet time starts its own clock");
  w.reset();
  assert.equal(w.check(1e9).kind, "ok");
});

const view = (need: number, extra: Partial<PullView> = {}): PullView => ({ needSequence: need, parked: false, journalFreeBytes: 64 << 20, reorderBytes: 0, ...extra });

void test("PullPlanner: one PULL open at a time; the next goes out when the answer arrives, from after it, on another stream", () => {
  const p = new PullPlanner();
  p.addStream(10);
  p.addStream(11);
  const first = p.next(view(1));
  assert.ok(first !== undefined && first.fromSequence === 1);
  assert.equal(p.next(view(1)), undefined, "one open PULL at a time");
  const id = p.answered(first.stream, 40, 1 << 20);
  assert.ok(id !== undefined);
  const second = p.next(view(1)); // 1..40 in hand, not journaled yet
  assert.ok(second !== undefined && second.fromSequence === 41, JSON.stringify(second));
  assert.notEqual(second.stream, first.stream, "the stream with less work carries it");
  p.journaled(id);
  assert.equal(p.answered(second.stream, undefined, 0), undefined, "an empty answer");
  const third = p.next(view(41));
  assert.ok(third !== undefined && third.fromSequence === 41, "asked again after an empty answer");
});

void test("PullPlanner: a stream that goes silent loses its PULL; the same range is asked for on a live stream, whatever the reorder buffer holds", () => {
  const p = new PullPlanner();
  for (const s of [1, 2, 3]) p.addStream(s);
  const a = p.next(view(1));
  assert.ok(a !== undefined);
  const idA = p.answered(a.stream, 50, 1000);
  const b = p.next(view(1));
  assert.ok(b !== undefined && b.fromSequence === 51);
  // b's stream goes silent (its answer never comes); a's batch is journaled meanwhile, and
  // later ranges fill the reorder buffer far past the forward limit.
  p.journaled(idA!);
  assert.equal(p.next(view(51, { reorderBytes: pullForwardReorderBytesMax * 4 })), undefined, "still open: wait for it");
  p.removeStream(b.stream); // the AnswerWatch closed it
  const again = p.next(view(51, { reorderBytes: pullForwardReorderBytesMax * 4 }));
  assert.ok(again !== undefined, "the gap's head is always pullable");
  assert.equal(again.fromSequence, 51, "exactly the lost range");
  assert.notEqual(again.stream, b.stream, "on a live stream");
});

void test("PullPlanner: no forward PULL while the reorder buffer is large, but the gap is asked for", () => {
  const p = new PullPlanner();
  p.addStream(1);
  const a = p.next(view(1));
  const id = p.answered(a!.stream, 10, 100);
  assert.equal(p.next(view(1, { reorderBytes: pullForwardReorderBytesMax + 1 })), undefined, "1..10 in hand: the next would be a forward PULL");
  p.journaled(id!);
  const gap = p.next(view(5, { reorderBytes: pullForwardReorderBytesMax + 1 }));
  assert.ok(gap !== undefined && gap.fromSequence === 5);
});

void test("PullPlanner: asks only for what the journal has room for; after a refusal waits for that much room; nothing while parked", () => {
  const p = new PullPlanner({ bytesMax: 4096 });
  p.addStream(1);
  assert.equal(p.next(view(1, { journalFreeBytes: 0 })), undefined);
  assert.equal(p.blockedOnRoom, true);
  assert.equal(p.next(view(1, { parked: true })), undefined);
  assert.equal(p.blockedOnRoom, true);
  const small = p.next(view(1, { journalFreeBytes: 1000 }));
  assert.ok(small !== undefined && small.maxBytes === 1000);
  const id = p.answered(small.stream, 1, 3000); // one record larger than maxBytes still comes
  p.refused(id!, 3000);
  assert.equal(p.next(view(1, { journalFreeBytes: 2000 })), undefined, "not before the refused record fits");
  assert.equal(p.blockedOnRoom, true);
  const retry = p.next(view(1, { journalFreeBytes: 5000 }));
  assert.ok(retry !== undefined && retry.fromSequence === 1 && retry.maxBytes === 4096);
  assert.equal(p.blockedOnRoom, false);
});

void test("PullPlanner property: with streams failing at random, every sequence is eventually asked for and received, one PULL open at a time", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 8 })), { maxLength: 200 }), (streamCount, events) => {
      const total = 60;
      const p = new PullPlanner({ inHandMax: 3 });
      let nextStreamId = 1;
      const live: number[] = [];
      const open = (): void => {
        const s = nextStreamId++;
        live.push(s);
        p.addStream(s);
      };
      for (let i = 0; i < streamCount; i++) open();
      let arrived = 0; // contiguous prefix journaled
      const held = new Set<number>(); // received past a gap
      const inHand: { id: number; from: number; to: number }[] = [];
      const outstanding = new Map<number, { from: number }>(); // stream -> open PULL
      const journal = (item: { id: number; from: number; to: number }): void => {
        for (let s = item.from; s <= item.to; s++) held.add(s);
        while (held.has(arrived + 1)) held.delete(++arrived);
        p.journaled(item.id);
      };
      const pump = (): void => {
        for (;;) {
          const req = p.next(view(arrived + 1, { reorderBytes: held.size * 10 }));
          if (req === undefined) return;
          assert.equal(outstanding.size, 0, "one PULL open at a time");
          assert.ok(live.includes(req.stream), "asked on a live stream");
          outstanding.set(req.stream, { from: req.fromSequence });
        }
      };
      pump();
      const step = (kind: number, n: number): void => {
        if (kind === 0 && live.length > 0) {
          // a stream dies: its open PULL is lost; a new one opens
          const dead = live.splice(n % live.length, 1)[0]!;
          outstanding.delete(dead);
          p.removeStream(dead);
          open();
        } else if (kind <= 3) {
          const [stream, pull] = [...outstanding][0] ?? [];
          if (stream !== undefined && pull !== undefined) {
            outstanding.delete(stream);
            const to = Math.min(total, pull.from + n - 1);
            const id = pull.from > total ? undefined : p.answered(stream, to, n * 10);
            if (pull.from > total) p.answered(stream, undefined, 0);
            if (id !== undefined) inHand.push({ id, from: pull.from, to });
          }
        } else if (inHand.length > 0) {
          journal(inHand.shift()!);
        }
        pump();
      };
      for (const [kind, n] of events) step(kind, n);
      for (let i = 0; i < 2000 && arrived < total; i++) step(i % 2 === 0 ? 1 : 4, 5);
      assert.equal(arrived, total, "every record arrives");
    }),
    { numRuns: 200 },
  );
});

void test("sender: the answer to a PULL starts exactly at fromSequence, also for a range sent before", () => {
  const s = new PairSender({ streams: 2, ackedSequence: asSequence(0) });
  assert.ok(s.onReconnect(0, asSequence(0)).ok);
  const first = s.planPull(0, 1, asSequence(100), 1, 100, 1 << 20);
  assert.ok(first.kind === "plan" && first.plan.fromSequence === 1 && first.plan.pull);
  assert.ok(s.commitBatch(first.plan, asSequence(40), 4000));
  // The stream died with that answer: the secondary asks for 1 again on stream 1.
  const again = s.planPull(1, 1, asSequence(100), 1, 100, 1 << 20);
  assert.ok(again.kind === "plan" && again.plan.fromSequence === 1, "not the sender's own next range");
  assert.ok(s.commitBatch(again.plan, asSequence(40), 4000));
  const gap = s.planPull(0, 17, asSequence(100), 1, 100, 1 << 20);
  assert.ok(gap.kind === "plan" && gap.plan.fromSequence === 17 && gap.plan.lastSequenceMax === 100);
  s.abandonPlan(gap.plan);
  assert.equal(s.planPull(0, 101, asSequence(100), 1, 100, 1 << 20).kind, "wait", "nothing durable there yet");
  assert.equal(s.planPull(0, 101, asSequence(100), 1, 105, 1 << 20).kind, "wait", "accepted, not durable yet");
  assert.equal(s.planPull(0, 107, asSequence(100), 1, 105, 1 << 20).kind, "refuse", "past anything accepted");
  assert.ok(s.onAck(0, 999, 30, asSequence(100)).ok);
  assert.equal(s.planPull(0, 20, asSequence(100), 31, 100, 1 << 20).kind, "empty", "acknowledged and trimmed: the secondary holds it");
  assert.equal(s.planPull(0, 40, asSequence(100), 45, 100, 1 << 20).kind, "refuse", "trimmed but never acknowledged");
  assert.ok(s.sentSequence >= 40);
});

void test("sender: a NO_SPACE refusal and an answer that overtakes an unanswered batch make those batches resendable first", () => {
  const s = new PairSender({ streams: 2, ackedSequence: asSequence(0), batchBytesMax: 100 });
  assert.ok(s.onReconnect(0, asSequence(0)).ok);
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) {
    const plan = s.planBatch(0, asSequence(30));
    assert.ok(plan !== undefined);
    assert.ok(s.commitBatch(plan, asSequence(plan.fromSequence + 4), 100));
    ids.push(plan.batchId);
  }
  assert.equal(s.unansweredBatches(0), 3);
  assert.ok(s.onBatchRefused(0, ids[0]!), "refused for space: resent");
  assert.equal(s.onBatchRefused(0, ids[0]!), false, "only once");
  assert.equal(s.unansweredBatches(0), 2);
  const resend = s.planBatch(1, asSequence(30));
  assert.ok(resend !== undefined && resend.resend && resend.fromSequence === 1, JSON.stringify(resend));
  assert.ok(s.commitBatch(resend, asSequence(5), 100));
  // The secondary answers a stream's batches in order: an ACK for the third means the second went missing.
  assert.ok(s.onAck(0, ids[2]!, 0, asSequence(30)).ok);
  assert.equal(s.unansweredBatches(0), 0);
  assert.equal(s.status().lostBatches, 1);
  const lost = s.planBatch(0, asSequence(30));
  assert.ok(lost !== undefined && lost.resend && lost.fromSequence === 6);
});

void test("sender: a refused batch is resent in smaller pieces when asked (a secondary whose journal has less room than the batch)", () => {
  // Before: a lost range was always resent whole, so a batch bigger than the secondary's free
  // journal room was refused for ever (whole-node simulation, small journals).
  const s = new PairSender({ streams: 1, ackedSequence: asSequence(0), batchBytesMax: 1000 });
  assert.ok(s.onReconnect(0, asSequence(0)).ok);
  const plan = s.planBatch(0, asSequence(10));
  assert.ok(plan !== undefined);
  assert.ok(s.commitBatch(plan, asSequence(10), 1000)); // records 1..10, 100 bytes each
  assert.ok(s.onBatchRefused(0, plan.batchId));
  const probe = s.planBatch(0, asSequence(10), 250);
  assert.ok(probe !== undefined && probe.resend && probe.fromSequence === 1 && probe.bytesMax === 250, JSON.stringify(probe));
  assert.ok(s.commitBatch(probe, asSequence(2), 200), "a prefix of the lost range goes out");
  assert.equal(s.status().lostBatches, 1, "the rest stays lost");
  assert.equal(s.status().inFlightBytes, 1000, "the bytes in flight still count the whole range");
  assert.ok(s.onAck(0, probe.batchId, 2, asSequence(10)).ok);
  assert.equal(s.ackedSequence, 2);
  const rest = s.planBatch(0, asSequence(10));
  assert.ok(rest !== undefined && rest.resend && rest.fromSequence === 3 && rest.lastSequenceMax === 10, JSON.stringify(rest));
  assert.ok(s.commitBatch(rest, asSequence(10), 800));
  assert.ok(s.onAck(0, rest.batchId, 10, asSequence(10)).ok);
  assert.equal(s.status().inFlightBytes, 0);
  assert.equal(s.status().lostBatches, 0);
});
