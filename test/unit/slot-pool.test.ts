// Proves the NBD server's buffer pool (src/frontends/slot-pool.ts) on real buffers: slots of the
// power-of-two size at or above the request, reused most-recently-freed first, never handed out
// twice; fresh buffers outside the sizes and once every arena is taken; an arena left unused for
// the given number of sweeps is given back to the system at once (its memory detached), while
// an arena with a slot in use, or used since, is kept.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SlotPool, slotArenaBytes, slotBytesMax, slotBytesMin } from "../../src/frontends/slot-pool.ts";

const MiB = 1024 * 1024;

void describe("SlotPool", () => {
  void it("hands out slots of the next power of two, reuses the last one freed, never one in use", () => {
    const pool = new SlotPool(1);
    const a = pool.allocate(3000);
    assert.equal(a.length, 3000);
    assert.ok(pool.owns(a));
    const b = pool.allocate(4096);
    assert.equal(b.buffer, a.buffer, "same size class, same arena");
    assert.equal(Math.abs(b.byteOffset - a.byteOffset), 4096, "distinct 4 KiB slots");
    pool.release(a);
    const c = pool.allocate(4000);
    assert.equal(c.byteOffset, a.byteOffset, "the slot freed last is reused first");
    assert.throws(() => pool.release(a.subarray(1)), /from its start/);
    pool.release(c);
    assert.throws(() => pool.release(c), /released once/);
    assert.deepEqual(pool.stats(), { arenas: 1, slotsInUse: 1, unpooledAllocations: 0 });
  });

  void it("gives fresh buffers outside the slot sizes and when the arenas of a size are full", () => {
    const pool = new SlotPool(1);
    assert.equal(pool.owns(pool.allocate(slotBytesMin - 1)), false);
    assert.equal(pool.owns(pool.allocate(slotBytesMax + 1)), false);
    const slots = Array.from({ length: slotArenaBytes / slotBytesMax }, () => pool.allocate(slotBytesMax));
    assert.ok(slots.every((s) => pool.owns(s)));
    const extra = pool.allocate(slotBytesMax);
    assert.equal(pool.owns(extra), false, "past the arena limit: a fresh buffer");
    assert.equal(pool.stats().unpooledAllocations, 3);
    assert.throws(() => pool.release(extra), /slot of this pool/);
  });

  void it("sweepIdle gives back an arena unused for the given sweeps, and keeps one in use or used since", () => {
    const pool = new SlotPool(2);
    const big = pool.allocate(MiB);
    const small = pool.allocate(8192);
    const bigArena = big.buffer;
    pool.release(big);
    assert.equal(pool.sweepIdle(2), 0, "used during this sweep period");
    assert.equal(pool.sweepIdle(2), slotArenaBytes, "idle for two sweeps: given back");
    assert.equal(bigArena.byteLength, 0, "its memory is detached (freed), not left to the GC");
    assert.equal(pool.owns(big), false);
    assert.deepEqual(pool.stats(), { arenas: 1, slotsInUse: 1, unpooledAllocations: 0 });
    assert.equal(pool.sweepIdle(2), 0);
    assert.equal(pool.sweepIdle(2), 0, "an arena with a slot in use is kept however long");
    pool.release(small);
    pool.sweepIdle(2);
    assert.equal(pool.sweepIdle(2), slotArenaBytes);
    const again = pool.allocate(MiB);
    assert.ok(pool.owns(again), "a new arena is made on demand after one was given back");
    assert.equal(again.length, MiB);
    again.fill(7);
    pool.release(again);
  });
});
