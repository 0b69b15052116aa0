// Proves the connection accounting every listener uses (src/core/connection-slots.ts), as a
// pure state machine: a full handshake pool names its oldest member for closing and admits the
// newcomer, established connections count against their own limit only, a refused handshake
// keeps its handshake slot, and release() frees a slot at once (and twice is harmless).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConnectionSlots } from "../../src/core/connection-slots.ts";

void describe("ConnectionSlots", () => {
  void it("admits every connection; a full handshake pool gives up its oldest member, oldest first", () => {
    const slots = new ConnectionSlots<string>({ handshakesMax: 3, establishedMax: 2 });
    assert.equal(slots.admit("a"), undefined);
    assert.equal(slots.admit("b"), undefined);
    assert.equal(slots.admit("c"), undefined);
    assert.equal(slots.admit("d"), "a", "the oldest handshaking connection makes room");
    assert.equal(slots.admit("e"), "b");
    assert.equal(slots.handshakes, 3);
    assert.deepEqual(slots.all(), ["c", "d", "e"]);
    assert.equal(slots.holds("a"), false);
    assert.equal(slots.establish("a"), false, "an evicted connection cannot establish");
  });

  void it("established connections leave the handshake pool and count against their own limit only", () => {
    const slots = new ConnectionSlots<string>({ handshakesMax: 2, establishedMax: 2 });
    slots.admit("a");
    slots.admit("b");
    assert.ok(slots.establish("a"));
    assert.ok(slots.establish("b"));
    assert.deepEqual([slots.handshakes, slots.established, slots.total], [0, 2, 2]);
    // The handshake pool is empty again: two more get in without evicting anyone.
    assert.equal(slots.admit("c"), undefined);
    assert.equal(slots.admit("d"), undefined);
    assert.equal(slots.establish("c"), false, "past establishedMax the handshake is refused");
    assert.ok(slots.isHandshaking("c"), "a refused connection keeps its handshake slot until it is gone");
    assert.equal(slots.admit("e"), "c", "and it is evictable like any handshaking connection");
    slots.release("a");
    assert.ok(slots.establish("d"), "a released slot is free at once");
    assert.deepEqual([slots.handshakes, slots.established], [1, 2]);
  });

  void it("release() is idempotent and frees handshake and established slots alike", () => {
    const slots = new ConnectionSlots<number>({ handshakesMax: 1, establishedMax: 1 });
    slots.admit(1);
    slots.release(1);
    slots.release(1);
    assert.equal(slots.total, 0);
    assert.equal(slots.admit(2), undefined, "nothing to evict after a release");
    assert.ok(slots.establish(2));
    slots.release(2);
    slots.release(2);
    assert.equal(slots.total, 0);
    assert.throws(() => { slots.admit(3); slots.admit(3); }, /admitted once/);
  });

  void it("refuses limits that cannot work", () => {
    assert.throws(() => new ConnectionSlots({ handshakesMax: 0, establishedMax: 1 }), /handshake pool/);
    assert.throws(() => new ConnectionSlots({ handshakesMax: 1, establishedMax: 0 }), /established/);
  });
});
