// Proves the pure replication core: position order, the receiver (dedup, bounded reorder,
// contiguous hand-out, durable arrived), reflect planning (frontier, next record, takeover,
// tracker asserts) and the sender (windows, acks, resend, handshake), with examples and
// fast-check properties over random delivery orders and event sequences.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { InvariantError } from "../../src/core/assert.ts";
import { comparePositions, minPosition, positionZero, type Position } from "../../src/core/position.ts";
import { GroupReceiver } from "../../src/core/receiver.ts";
import { frontier, keepThroughSequence, nextToReflect, ReflectTracker, takeoverPlan, type ReflectHead } from "../../src/core/reflect.ts";
import { timeAdvanceDue, PairSender } from "../../src/core/sender.ts";
import { asAcceptNumber, asGroupId, asSequence, asWriteTimeUs, type SequenceNumber } from "../../src/core/types.ts";

const pos = (t: number, a: number): Position => ({ writeTimeUs: asWriteTimeUs(t), acceptNumber: asAcceptNumber(a) });

interface Rec extends Position {
  readonly sequence: SequenceNumber;
  readonly bytes: number;
}
/** Record n of a group: time n div 3 (ties on purpose), accept 10 n. */
const rec = (n: number, bytes = 100): Rec => ({ sequence: asSequence(n), ...pos(Math.floor(n / 3), n * 10), bytes });
const receiver = (start = 1, opts: { records?: number; bytes?: number; pending?: number } = {}): GroupReceiver<Rec> =>
  new GroupReceiver<Rec>({
    startSequence: asSequence(start),
    startPosition: start === 1 ? positionZero : rec(start - 1),
    recordBytes: (r) => r.bytes,
    reorderRecordsMax: opts.records ?? 100,
    reorderBytesMax: opts.bytes ?? 1_000_000,
    durablePendingRecordsMax: opts.pending ?? 1000,
  });
const seqs = (rs: readonly Rec[]): number[] => rs.map((r) => r.sequence);

void test("positions order by write time, then accept number", () => {
  assert.ok(comparePositions(pos(1, 9), pos(2, 1)) < 0);
  assert.ok(comparePositions(pos(2, 1), pos(2, 3)) < 0);
  assert.equal(comparePositions(pos(2, 3), pos(2, 3)), 0);
  assert.deepEqual(minPosition([pos(3, 1), pos(2, 7), pos(2, 5)]), pos(2, 5));
  assert.equal(minPosition([]), undefined);
  assert.ok(comparePositions(positionZero, pos(0, 1)) < 0);
});

void test("receiver hands out the contiguous run, buffers past a gap, drops duplicates", () => {
  const r = receiver();
  let res = r.receive([rec(3), rec(2)]);
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), []);
  assert.equal(res.buffered, 2);
  assert.equal(r.reorderRecords, 2);
  res = r.receive([rec(1), rec(3)]);
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), [1, 2, 3]);
  assert.equal(res.duplicates, 1);
  assert.equal(r.reorderRecords, 0);
  assert.equal(r.reorderBytes, 0);
  // Handed out is not arrived until durable.
  assert.equal(r.arrivedSequence, 0);
  assert.deepEqual(r.arrivedPosition, positionZero);
  r.markDurable(asSequence(2));
  assert.equal(r.arrivedSequence, 2);
  assert.deepEqual(r.arrivedPosition, pos(0, 20));
  res = r.receive([rec(2), rec(3), rec(1)]);
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), []);
  assert.equal(res.duplicates, 3);
  r.markDurable(asSequence(3));
  r.markDurable(asSequence(3));
  assert.equal(r.arrivedSequence, 3);
  assert.throws(() => r.markDurable(asSequence(4)), InvariantError);
});

void test("receiver starts at a configured sequence (initial copy S0 + 1) and its position", () => {
  const r = receiver(11);
  assert.equal(r.arrivedSequence, 10);
  assert.deepEqual(r.arrivedPosition, pos(3, 100));
  const res = r.receive([rec(5), rec(10), rec(11)]);
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), [11]);
  assert.equal(res.duplicates, 2);
});

void test("receiver refuses a batch over the reorder bound without changing state, but never the gap filler", () => {
  const r = receiver(1, { records: 2, bytes: 250 });
  assert.ok(r.receive([rec(3), rec(4)]).ok);
  const refused = r.receive([rec(6)]);
  assert.equal(refused.ok, false);
  assert.equal(!refused.ok && refused.reason, "reorder-records-full");
  assert.equal(r.reorderRecords, 2);
  const big = r.receive([rec(7, 100)]);
  assert.equal(!big.ok && big.reason, "reorder-records-full");
  const r2 = receiver(1, { records: 10, bytes: 250 });
  assert.ok(r2.receive([rec(3), rec(4)]).ok);
  const bytes = r2.receive([rec(6, 60)]);
  assert.equal(!bytes.ok && bytes.reason, "reorder-bytes-full");
  // The gap filler drains the buffer, together with more records past it.
  const res = r.receive([rec(1), rec(2), rec(5), rec(7)]);
  assert.ok(res.ok);
  assert.deepEqual(seqs(res.append), [1, 2, 3, 4, 5]);
  assert.equal(r.reorderRecords, 1);
});

void test("receiver refuses when too many records await fdatasync", () => {
  const r = receiver(1, { pending: 3 });
  assert.ok(r.receive([rec(1), rec(2)]).ok);
  const res = r.receive([rec(3), rec(4)]);
  assert.equal(!res.ok && res.reason, "durable-pending-full");
  r.markDurable(asSequence(2));
  assert.ok(r.receive([rec(3), rec(4)]).ok);
});

void test("receiver rejects bad sequences and positions that do not increase", () => {
  const r = receiver();
  const zero = r.receive([{ ...rec(1), sequence: asSequence(0) }]);
  assert.equal(!zero.ok && zero.reason, "bad-sequence");
  assert.ok(r.receive([rec(1)]).ok);
  const back = r.receive([{ ...rec(2), ...pos(0, 5) }]);
  assert.equal(!back.ok && back.reason, "position-not-increasing");
  assert.equal(r.handedOutSequence, 1);
});

void test("receiver: any delivery order with duplicates and refusals hands out 1..n exactly once, in order", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 60 }),
      fc.array(fc.tuple(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 5 })), { maxLength: 150 }),
      fc.integer({ min: 1, max: 20 }),
      fc.boolean(),
      (n, deliveries, bound, durableEager) => {
        const r = receiver(1, { records: bound });
        const out: number[] = [];
        const send = (batch: Rec[]): void => {
          const res = r.receive(batch);
          if (res.ok) {
            out.push(...seqs(res.append));
            if (durableEager && res.append.length > 0) r.markDurable(r.handedOutSequence);
          }
          assert.ok(r.reorderRecords <= bound);
        };
        for (const [start, len] of deliveries) {
          const batch: Rec[] = [];
          for (let s = start; s < start + len && s <= n; s += 1) batch.push(rec(s));
          send(batch);
        }
        // Then the sender's recovery: resend everything in order, one batch at a time.
        for (let s = 1; s <= n; s += 1) send([rec(s)]);
        assert.deepEqual(out, Array.from({ length: n }, (_, i) => i + 1));
        r.markDurable(asSequence(n));
        assert.equal(r.arrivedSequence, n);
        assert.deepEqual(r.arrivedPosition, pos(Math.floor(n / 3), n * 10));
      },
    ),
  );
});

const head = (g: number, s: number, p: Position, arrived: number): ReflectHead => ({
  groupId: asGroupId(g), sequence: asSequence(s), position: p, arrivedSequence: asSequence(arrived),
});

void test("frontier is the minimum arrived position; an empty domain has none", () => {
  assert.deepEqual(frontier([{ arrivedPosition: pos(5, 9) }, { arrivedPosition: pos(5, 4) }, { arrivedPosition: pos(6, 1) }]), pos(5, 4));
  assert.equal(frontier([]), undefined);
  // A group that never arrived anything (start position zero) holds everything back.
  const f = frontier([{ arrivedPosition: pos(9, 9) }, { arrivedPosition: positionZero }]);
  assert.equal(nextToReflect([head(1, 1, pos(1, 1), 5)], f, "time"), undefined);
});

void test("frontier: a complete group (its primary fenced, everything it accepted here) holds nothing; all complete: the latest arrived position", () => {
  // The fenced group's arrived position (5, 4) no longer holds the others back.
  assert.deepEqual(frontier([{ arrivedPosition: pos(5, 4), complete: true }, { arrivedPosition: pos(7, 1) }, { arrivedPosition: pos(6, 1), complete: false }]), pos(6, 1));
  assert.deepEqual(frontier([{ arrivedPosition: pos(5, 4), complete: true }, { arrivedPosition: pos(9, 2), complete: true }]), pos(9, 2));
  assert.deepEqual(frontier([{ arrivedPosition: pos(9, 2), complete: true }, { arrivedPosition: positionZero }]), positionZero, "a member still receiving holds it");
});

void test("nextToReflect: time mode goes in position order up to the frontier, ties broken by accept number", () => {
  const heads = [head(1, 4, pos(5, 12), 9), head(2, 7, pos(5, 11), 7), head(3, 2, pos(4, 30), 1)];
  // Group 3's head is past its arrived sequence: never chosen.
  assert.equal(nextToReflect(heads, pos(9, 99), "time")?.groupId, 2);
  assert.equal(nextToReflect(heads, pos(5, 11), "time")?.groupId, 2);
  assert.equal(nextToReflect(heads, pos(5, 10), "time"), undefined);
  assert.equal(nextToReflect(heads, undefined, "time"), undefined);
  // Seq mode ignores the frontier, but not arrived.
  assert.equal(nextToReflect(heads, positionZero, "seq")?.groupId, 2);
  assert.equal(nextToReflect([head(3, 2, pos(4, 30), 1)], undefined, "seq"), undefined);
});

void test("ReflectTracker asserts no gap, no going back, and position order in time mode", () => {
  const t = new ReflectTracker("time", [{ groupId: asGroupId(1), reflectedSequence: asSequence(0) }, { groupId: asGroupId(2), reflectedSequence: asSequence(4) }]);
  t.noteReflected(asGroupId(1), asSequence(1), pos(1, 1));
  t.noteReflected(asGroupId(2), asSequence(5), pos(1, 2));
  assert.throws(() => t.noteReflected(asGroupId(1), asSequence(3), pos(2, 1)), /I2/);
  assert.throws(() => t.noteReflected(asGroupId(1), asSequence(1), pos(2, 1)), /I2/);
  assert.throws(() => t.noteReflected(asGroupId(1), asSequence(2), pos(1, 1)), /position order/);
  assert.equal(t.reflectedSequence(asGroupId(2)), 5);
  const s = new ReflectTracker("seq", [{ groupId: asGroupId(1), reflectedSequence: asSequence(0) }, { groupId: asGroupId(2), reflectedSequence: asSequence(0) }]);
  s.noteReflected(asGroupId(1), asSequence(1), pos(5, 5));
  s.noteReflected(asGroupId(2), asSequence(1), pos(1, 1)); // seq mode: groups are independent
});

void test("takeover keeps, per group, the last sequence at or before the frontier", () => {
  const entries = [3, 4, 5, 6].map((s) => ({ sequence: asSequence(s), position: pos(s, s) }));
  assert.equal(keepThroughSequence(asSequence(2), entries, pos(4, 4)), 4);
  assert.equal(keepThroughSequence(asSequence(2), entries, pos(4, 3)), 3);
  assert.equal(keepThroughSequence(asSequence(2), entries, pos(1, 1)), 2);
  assert.equal(keepThroughSequence(asSequence(2), [], pos(9, 9)), 2);
  const plan = takeoverPlan([
    { groupId: asGroupId(1), reflectedSequence: asSequence(2), arrivedSequence: asSequence(6), arrivedPosition: pos(6, 6), entries },
    { groupId: asGroupId(2), reflectedSequence: asSequence(0), arrivedSequence: asSequence(1), arrivedPosition: pos(4, 5), entries: [{ sequence: asSequence(1), position: pos(4, 5) }] },
  ]);
  assert.deepEqual(plan.frontier, pos(4, 5));
  assert.deepEqual(plan.keep.map((k) => k.keepThroughSequence), [4, 1]);
});

void test("sender: push batches within windows, only durable records, acks cumulative and never back", () => {
  const s = new PairSender({ streams: 2, ackedSequence: asSequence(0), batchRecordsMax: 3, batchBytesMax: 1000, batchesInFlightPerStreamMax: 1, inFlightRecordsMax: 5, inFlightBytesMax: 10_000 });
  assert.equal(s.planBatch(0, asSequence(10)), undefined, "nothing before the handshake");
  assert.ok(s.onReconnect(0, asSequence(10)).ok);
  const p1 = s.planBatch(0, asSequence(10));
  assert.ok(p1);
  assert.equal(s.planBatch(1, asSequence(10)), undefined, "one open plan at a time");
  assert.deepEqual([p1.fromSequence, p1.lastSequenceMax, p1.recordsMax], [1, 3, 3]);
  assert.ok(s.commitBatch(p1, asSequence(3), 300));
  assert.equal(s.planBatch(0, asSequence(10)), undefined, "stream 0 window full");
  const p2 = s.planBatch(1, asSequence(10));
  assert.ok(p2);
  assert.deepEqual([p2.fromSequence, p2.recordsMax], [4, 2], "record window leaves room for 2");
  assert.ok(s.commitBatch(p2, asSequence(5), 200));
  assert.equal(s.sentSequence, 5);
  assert.ok(s.onAck(1, p2.batchId, 0, asSequence(10)).ok);
  assert.equal(s.planBatch(1, asSequence(10)), undefined, "record window still full");
  assert.ok(s.onAck(0, p1.batchId, 3, asSequence(10)).ok);
  assert.equal(s.ackedSequence, 3);
  assert.ok(s.onAck(0, p1.batchId, 1, asSequence(10)).ok, "a stale ack is harmless");
  assert.equal(s.ackedSequence, 3);
  assert.equal(s.onAck(0, 999, 11, asSequence(10)).ok, false, "an ack past the durable journal is refused");
  assert.equal(s.trimFloor, 3);
  const p3 = s.planBatch(0, asSequence(5));
  assert.equal(p3, undefined, "nothing durable past sent");
});

void test("sender: a lost stream's batches are resent first (whole, or in pieces when asked); a full reconnect rewinds to the handshake", () => {
  const s = new PairSender({ streams: 2, ackedSequence: asSequence(0), batchRecordsMax: 2, batchBytesMax: 1000, batchesInFlightPerStreamMax: 2, inFlightRecordsMax: 100, inFlightBytesMax: 10_000 });
  assert.ok(s.onReconnect(0, asSequence(20)).ok);
  const send = (stream: number): number => {
    const p = s.planBatch(stream, asSequence(20));
    assert.ok(p);
    const last = Math.min(p.lastSequenceMax, p.fromSequence + 1);
    assert.ok(s.commitBatch(p, asSequence(last), 100 * (last - p.fromSequence + 1)));
    return p.batchId;
  };
  send(0); // 1-2
  send(1); // 3-4
  send(0); // 5-6
  s.onStreamLost(0);
  const resend = s.planBatch(1, asSequence(20));
  assert.ok(resend?.resend);
  assert.deepEqual([resend.fromSequence, resend.lastSequenceMax], [1, 2]);
  // A resend may carry a prefix (a secondary short of room asks for less): the rest stays lost, first in line.
  assert.ok(s.commitBatch(resend, asSequence(1), 100));
  // Stream 1 is at its window now, so use stream 0 again.
  const again = s.planBatch(0, asSequence(20));
  assert.ok(again?.resend);
  assert.deepEqual([again.fromSequence, again.lastSequenceMax], [2, 2]);
  assert.ok(s.commitBatch(again, asSequence(2), 100));
  const next = s.planBatch(0, asSequence(20));
  assert.ok(next?.resend);
  assert.equal(next.fromSequence, 5);
  s.abandonPlan(next);
  s.onConnectionLost();
  assert.equal(s.planBatch(0, asSequence(20)), undefined);
  assert.equal(s.onReconnect(7, asSequence(6)).ok, false, "secondary ahead of the primary's durable journal");
  assert.ok(s.onReconnect(4, asSequence(20)).ok);
  assert.equal(s.sentSequence, 4);
  assert.equal(s.ackedSequence, 4);
  assert.equal(s.onReconnect(3, asSequence(20)).ok, false, "secondary behind what it acknowledged");
  const fresh = s.planBatch(1, asSequence(20));
  assert.equal(fresh?.fromSequence, 5);
  // The secondary makes durable what it was handed before the handshake: acked (and sent) pass it.
  assert.ok(s.onAck(1, 12345, 9, asSequence(20)).ok);
  assert.equal(s.ackedSequence, 9);
  assert.equal(s.sentSequence, 9);
  assert.ok(fresh && !s.commitBatch(fresh, asSequence(5), 100), "a plan below the new ack is cancelled");
  assert.equal(s.planBatch(1, asSequence(20))?.fromSequence, 10);
});

void test("sender: random events keep acked <= sent <= durable, acked monotonic, windows bounded", () => {
  const event = fc.oneof(
    fc.record({ k: fc.constant("send" as const), stream: fc.integer({ min: 0, max: 2 }), n: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ k: fc.constant("ack" as const), stream: fc.integer({ min: 0, max: 2 }), back: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ k: fc.constant("lose" as const), stream: fc.integer({ min: 0, max: 2 }) }),
    fc.record({ k: fc.constant("all" as const) }),
    fc.record({ k: fc.constant("durable" as const), n: fc.integer({ min: 0, max: 5 }) }),
  );
  fc.assert(
    fc.property(fc.array(event, { maxLength: 200 }), (events) => {
      const s = new PairSender({ streams: 3, ackedSequence: asSequence(0), batchRecordsMax: 4, batchBytesMax: 400, batchesInFlightPerStreamMax: 2, inFlightRecordsMax: 12, inFlightBytesMax: 1000 });
      let durable = 0;
      let secondaryArrived = 0; // what a secondary that got everything sent would hold
      const batches: { id: number; stream: number; last: number }[] = [];
      assert.ok(s.onReconnect(0, asSequence(0)).ok);
      let prevAcked = 0;
      for (const e of events) {
        if (e.k === "durable") durable += e.n;
        if (e.k === "send") {
          const p = s.planBatch(e.stream, asSequence(durable));
          if (p !== undefined) {
            const last = p.resend ? p.lastSequenceMax : Math.min(p.lastSequenceMax, p.fromSequence + e.n - 1);
            const bytes = p.resend ? p.bytesMax : 100 * (last - p.fromSequence + 1);
            if (!p.resend && bytes > p.bytesMax && last > p.fromSequence) {
              s.abandonPlan(p);
            } else {
              assert.ok(s.commitBatch(p, asSequence(last), bytes));
              batches.push({ id: p.batchId, stream: e.stream, last });
              secondaryArrived = Math.max(secondaryArrived, Math.min(last, s.sentSequence));
            }
          }
        }
        if (e.k === "ack") {
          const b = batches[batches.length - 1 - e.back];
          if (b !== undefined) assert.ok(s.onAck(b.stream, b.id, Math.min(b.last, s.sentSequence), asSequence(durable)).ok);
        }
        if (e.k === "lose") s.onStreamLost(e.stream);
        if (e.k === "all") {
          s.onConnectionLost();
          assert.ok(s.onReconnect(Math.max(s.ackedSequence, Math.min(secondaryArrived, s.sentSequence)), asSequence(durable)).ok);
        }
        assert.ok(s.ackedSequence >= prevAcked);
        prevAcked = s.ackedSequence;
        assert.ok(s.ackedSequence <= s.sentSequence && s.sentSequence <= durable);
        for (let st = 0; st < 3; st += 1) assert.ok(s.unansweredBatches(st) <= 2);
        assert.ok(s.status().inFlightRecords <= 12);
      }
    }),
  );
});

void test("time advance: due after the interval once another group accepted a write, else only as a slow heartbeat", () => {
  assert.equal(timeAdvanceDue({ sinceLastRecordMs: 49, othersAcceptedSince: true, intervalMs: 50, idleIntervalMs: 1_000 }), false);
  assert.equal(timeAdvanceDue({ sinceLastRecordMs: 50, othersAcceptedSince: true, intervalMs: 50, idleIntervalMs: 1_000 }), true);
  assert.equal(timeAdvanceDue({ sinceLastRecordMs: 999, othersAcceptedSince: false, intervalMs: 50, idleIntervalMs: 1_000 }), false);
  assert.equal(timeAdvanceDue({ sinceLastRecordMs: 1_000, othersAcceptedSince: false, intervalMs: 50, idleIntervalMs: 1_000 }), true);
  assert.equal(timeAdvanceDue({ sinceLastRecordMs: 100, othersAcceptedSince: true }), true);
});

void test("a stream's handshake with others connected resends what the secondary answered but may have lost (a restart seen one stream at a time)", () => {
  const s = new PairSender({ streams: 2, ackedSequence: asSequence(10) });
  assert.ok(s.onReconnect(10, asSequence(10)).ok);
  const p1 = s.planBatch(0, asSequence(20));
  assert.ok(p1 !== undefined && s.commitBatch(p1, asSequence(20), 1000));
  // Answered (held past a gap or waiting for room), not yet durable over there.
  assert.ok(s.onAck(0, p1.batchId, 10, asSequence(20)).ok);
  assert.equal(s.status().lostBatches, 0);
  assert.equal(s.planBatch(1, asSequence(20)), undefined, "nothing left to send: all of it is answered");
  // Stream 1 reconnects while stream 0 stays up: the secondary holds only through 10.
  assert.ok(s.onStreamHandshake(1, 10, asSequence(20)).ok);
  assert.equal(s.status().lostBatches, 1, "the answered range is sent again");
  const resend = s.planBatch(1, asSequence(20));
  assert.ok(resend?.resend === true && resend.fromSequence === 11 && resend.lastSequenceMax === 20);
  // A handshake overtaken by an ACK on another stream (below what was acknowledged) is no error.
  s.abandonPlan(resend);
  assert.ok(s.onAck(0, 999, 15, asSequence(20)).ok);
  assert.ok(s.onStreamHandshake(1, 12, asSequence(20)).ok);
  assert.equal(s.onStreamHandshake(1, 21, asSequence(20)).ok, false, "more than is durable here: a broken or foreign secondary");
});
