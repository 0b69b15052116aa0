// Connection accounting for one listener (NBD, host protocol, replication): the rule of
// docs/nbd.md "Connection limits", the same for all three. Pure: no sockets, no clocks; the
// server closes what this tells it to and calls release() when a connection is gone.
//
// - A connection still in its handshake holds a slot of the handshake pool (handshakesMax).
//   When the pool is full, the OLDEST handshaking connection is named for closing to admit the
//   new one, so connections that open and say nothing cannot lock a real client out (on
//   loopback every client has the same address: limits per address would not help).
// - A connection that finished its handshake counts against establishedMax only; past it, the
//   handshake is answered with a refusal.
// - A slot is free the moment release() is called: the server calls it when the socket closes
//   or when it destroys the socket itself, never after a delay.
import { assert } from "./assert.ts";

export interface ConnectionSlotLimits {
  /** Connections in their handshake at once; the oldest is closed to admit a new one. */
  readonly handshakesMax: number;
  /** Connections past their handshake at once; more are refused at the end of the handshake. */
  readonly establishedMax: number;
}

export class ConnectionSlots<C> {
  readonly limits: ConnectionSlotLimits;
  /** Insertion order is age: the first entry is the oldest handshaking connection. */
  private readonly handshaking = new Set<C>();
  private readonly establishedSet = new Set<C>();

  constructor(limits: ConnectionSlotLimits) {
    assert(Number.isInteger(limits.handshakesMax) && limits.handshakesMax >= 1, "the handshake pool holds at least one connection");
    assert(Number.isInteger(limits.establishedMax) && limits.establishedMax >= 1, "at least one connection may be established");
    this.limits = limits;
  }

  /** Connections in their handshake. */
  get handshakes(): number {
    return this.handshaking.size;
  }

  /** Connections past their handshake. */
  get established(): number {
    return this.establishedSet.size;
  }

  /** Every connection holding a slot. */
  get total(): number {
    return this.handshaking.size + this.establishedSet.size;
  }

  /** Every connection holding a slot, handshaking ones oldest first, then established ones. */
  all(): C[] {
    return [...this.handshaking, ...this.establishedSet];
  }

  /**
   * A new connection enters the handshake pool. When the pool is full, the oldest handshaking
   * connection leaves it and is returned: the caller closes it (its slot is already free).
   */
  admit(connection: C): C | undefined {
    assert(!this.holds(connection), "a connection is admitted once");
    let evicted: C | undefined;
    if (this.handshaking.size >= this.limits.handshakesMax) {
      const oldest = this.handshaking.values().next();
      assert(oldest.done !== true, "a full pool has an oldest connection");
      evicted = oldest.value;
      this.handshaking.delete(evicted);
    }
    this.handshaking.add(connection);
    assert(this.handshaking.size <= this.limits.handshakesMax, "the handshake pool stays within its limit");
    return evicted;
  }

  /**
   * The connection finished its handshake: it moves to the established set and true is
   * returned, or, with establishedMax established already, it keeps its handshake slot and
   * false is returned (the caller refuses it and closes it). False too for a connection that
   * holds no slot any more (evicted or released meanwhile).
   */
  establish(connection: C): boolean {
    if (!this.handshaking.has(connection)) return false;
    if (this.establishedSet.size >= this.limits.establishedMax) return false;
    this.handshaking.delete(connection);
    this.establishedSet.add(connection);
    return true;
  }

  /** The connection is gone (or being destroyed): its slot is free from now on. Idempotent. */
  release(connection: C): void {
    this.handshaking.delete(connection);
    this.establishedSet.delete(connection);
  }

  /** Whether the connection holds a slot (handshaking or established). */
  holds(connection: C): boolean {
    return this.handshaking.has(connection) || this.establishedSet.has(connection);
  }

  /** Whether the connection is still in the handshake pool. */
  isHandshaking(connection: C): boolean {
    return this.handshaking.has(connection);
  }
}
