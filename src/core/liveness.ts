// Liveness of one replication stream (docs/replication-protocol.md, "Liveness"), as pure
// state: the shell passes the monotonic time (performance.now(), ms) in and acts on the
// verdicts. Two deadlines, because a keepalive alone misses a stream that still carries
// PINGs but no longer carries work (a stuck peer, a flow black-holed past the PINGs):
//  - PeerLiveness: nothing at all received for peerTimeoutMs -> the stream is dead.
//    PING goes out when nothing was sent for pingIntervalMs, so an idle but healthy
//    stream is never silent.
//  - AnswerWatch: requests that expect an answer (BATCH -> ACK/NACK, PULL -> BATCH) are
//    outstanding and none was answered for answerTimeoutMs -> the stream is stuck.
// Either verdict closes the stream; what it carried is sent again on another one.
import { assert } from "./assert.ts";

export type LivenessVerdict =
  | { readonly kind: "ok" }
  | { readonly kind: "ping" }
  | { readonly kind: "dead"; readonly silentMs: number }
  | { readonly kind: "stuck"; readonly waitingMs: number; readonly outstanding: number };

export class PeerLiveness {
  private readonly pingIntervalMs: number;
  private readonly peerTimeoutMs: number;
  private lastHeardMs: number;
  private lastSentMs: number;

  constructor(options: { nowMs: number; pingIntervalMs: number; peerTimeoutMs: number }) {
    assert(options.pingIntervalMs > 0 && options.peerTimeoutMs > options.pingIntervalMs, "the peer timeout is longer than the ping interval");
    this.pingIntervalMs = options.pingIntervalMs;
    this.peerTimeoutMs = options.peerTimeoutMs;
    this.lastHeardMs = options.nowMs;
    this.lastSentMs = options.nowMs;
  }

  /** Any bytes arrived: a sign of life. */
  heard(nowMs: number): void {
    if (nowMs > this.lastHeardMs) this.lastHeardMs = nowMs;
  }

  /** A frame went out (a PING need not follow it for an interval). */
  sent(nowMs: number): void {
    if (nowMs > this.lastSentMs) this.lastSentMs = nowMs;
  }

  /** Called on every tick: dead, or a PING is due, or nothing to do. */
  check(nowMs: number): LivenessVerdict {
    const silentMs = nowMs - this.lastHeardMs;
    if (silentMs > this.peerTimeoutMs) return { kind: "dead", silentMs };
    if (nowMs - this.lastSentMs >= this.pingIntervalMs) return { kind: "ping" };
    return { kind: "ok" };
  }
}

/**
 * Requests that expect an answer, in order. The stream is stuck when requests are
 * outstanding and no answer came for the timeout: measured from the last answer, or from
 * the request that made the count go from 0 to 1 (a long queue answered steadily is fine).
 */
export class AnswerWatch {
  private readonly timeoutMs: number;
  private outstandingValue = 0;
  private sinceMs = 0;

  constructor(timeoutMs: number) {
    assert(timeoutMs > 0, "answer timeout is positive");
    this.timeoutMs = timeoutMs;
  }

  get outstanding(): number {
    return this.outstandingValue;
  }

  requestSent(nowMs: number): void {
    if (this.outstandingValue === 0) this.sinceMs = nowMs;
    this.outstandingValue += 1;
  }

  /** One request was answered. An answer nobody waits for (a late or unsolicited one) changes nothing. */
  answered(nowMs: number): void {
    if (this.outstandingValue === 0) return;
    this.outstandingValue -= 1;
    this.sinceMs = nowMs;
  }

  /** Every outstanding request is void (the stream is gone, or its requests were given up). */
  reset(): void {
    this.outstandingValue = 0;
  }

  check(nowMs: number): LivenessVerdict {
    if (this.outstandingValue === 0) return { kind: "ok" };
    const waitingMs = nowMs - this.sinceMs;
    return waitingMs > this.timeoutMs ? { kind: "stuck", waitingMs, outstanding: this.outstandingValue } : { kind: "ok" };
  }
}
