// One replication TCP connection, either side: frames in through the pure assembler,
// messages out through the pure encoder, liveness by PING/PONG and by a deadline on the
// answers the owner waits for (core/liveness.ts; monotonic clock). A decode failure that
// breaks the stream sends ERROR and closes this connection only; the node goes on.
import type { ByteStream } from "./transport.ts";
import { systemClock, type Clock, type Timer } from "../node/clock.ts";
import type { Logger } from "pino";
import { replAnswerTimeoutMs, replPeerTimeoutMs, replPingIntervalMs } from "../core/limits.ts";
import { AnswerWatch, PeerLiveness } from "../core/liveness.ts";
import {
  ReplFrameAssembler, encodeMessage, type ReplDecodeResult, type ReplErrorCode, type ReplMessage, type ReplRole,
} from "../protocol/repl-protocol.ts";

export interface ReplConnectionHandlers {
  /** A decoded message; PING/PONG are answered here and not passed on. */
  onMessage(message: ReplMessage): void;
  /** A sound frame whose content failed its checks (stream still in step): answer NACK. */
  onBadContent(result: Extract<ReplDecodeResult, { ok: false; fatal: false }>): void;
  /** The connection is gone (closed by either side, or broken). Called once. */
  onClose(reason: string): void;
}

export class ReplConnection {
  readonly socket: ByteStream;
  readonly remote: string;
  private readonly assembler: ReplFrameAssembler;
  private readonly logger: Logger;
  private readonly handlers: ReplConnectionHandlers;
  private closedReason: string | undefined;
  private readonly liveness: PeerLiveness;
  private readonly answers: AnswerWatch;
  private readonly pingTimer: Timer;
  private readonly clock: Clock;
  private pingId = 0;
  /** Bytes handed to the socket and not yet flushed; the sender uses it for backpressure. */
  get writableBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * `answerTimeoutMs`: how long requests noted with expectAnswer() may go unanswered before the
   * stream counts as stuck. `remote`: the peer's address for log lines ("host:port"); an
   * outgoing socket has no remote address before it connects, so the connecting side passes the
   * address it dials (else the socket's, known for an accepted one).
   */
  constructor(socket: ByteStream, receiver: ReplRole, logger: Logger, handlers: ReplConnectionHandlers, options: { answerTimeoutMs?: number; clock?: Clock; remote?: string } = {}) {
    this.clock = options.clock ?? systemClock;
    this.socket = socket;
    this.remote = options.remote ?? `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    this.assembler = new ReplFrameAssembler({ receiver });
    this.logger = logger;
    this.handlers = handlers;
    this.liveness = new PeerLiveness({ nowMs: this.clock.monotonicMs(), pingIntervalMs: replPingIntervalMs, peerTimeoutMs: replPeerTimeoutMs });
    this.answers = new AnswerWatch(options.answerTimeoutMs ?? replAnswerTimeoutMs);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (error) => this.finish(`socket error: ${error.message}`));
    socket.on("close", () => this.finish("connection closed"));
    socket.on("end", () => socket.end());
    this.pingTimer = this.clock.setInterval(() => this.tick(), replPingIntervalMs);
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** A request went out that the peer must answer (BATCH, COPY_DATA, PULL ...). */
  expectAnswer(): void {
    this.answers.requestSent(this.clock.monotonicMs());
  }

  /** The peer answered one of them. */
  answered(): void {
    this.answers.answered(this.clock.monotonicMs());
  }

  /** Requests sent and not answered yet. */
  get unanswered(): number {
    return this.answers.outstanding;
  }

  /** Requests outstanding are given up (e.g. the peer refused them and they will be sent again). */
  forgetRequests(): void {
    this.answers.reset();
  }

  private onData(chunk: Buffer): void {
    this.liveness.heard(this.clock.monotonicMs());
    this.assembler.push(chunk);
    for (;;) {
      if (this.closed) return;
      const result = this.assembler.next();
      if (result === undefined) return;
      if (result.ok) {
        const message = result.message;
        if (message.type === "PING") {
          this.send({ type: "PONG", pingId: message.pingId, echoTimeUs: message.sendTimeUs, replyTimeUs: Math.round(this.clock.monotonicMs() * 1000) });
        } else if (message.type !== "PONG") {
          this.handlers.onMessage(message);
        }
      } else if (result.fatal) {
        this.fail(result.code, result.reason);
        return;
      } else {
        this.handlers.onBadContent(result);
      }
    }
  }

  private tick(): void {
    if (this.closed) return;
    const nowMs = this.clock.monotonicMs();
    const stuck = this.answers.check(nowMs);
    if (stuck.kind === "stuck") {
      // The peer still may send PINGs, but the work on this stream does not move: a
      // half-open or black-holed flow, or a stuck peer. What it carried goes elsewhere.
      // Debug: a closed stream is retried, and every retry may end this way; what the operator
      // needs is the pair's state change (pair_disconnected, with this as the reason).
      this.logger.debug({ event: "repl_stream_stuck", remote: this.remote, waitingMs: Math.round(stuck.waitingMs), unanswered: stuck.outstanding }, "replication stream stuck: no answer; closing");
      this.socket.destroy();
      this.finish(`no answer to ${stuck.outstanding} request(s) for ${Math.round(stuck.waitingMs)} ms`);
      return;
    }
    const verdict = this.liveness.check(nowMs);
    if (verdict.kind === "dead") {
      // Debug, as above: one line per state change of the pair, none per retry (docs/operations.md).
      this.logger.debug({ event: "repl_peer_timeout", remote: this.remote, silentMs: Math.round(verdict.silentMs), timeoutMs: replPeerTimeoutMs }, "replication peer silent; closing");
      this.socket.destroy();
      this.finish(`peer silent for ${Math.round(verdict.silentMs)} ms`);
      return;
    }
    if (verdict.kind === "ping") {
      this.pingId = (this.pingId + 1) >>> 0;
      this.send({ type: "PING", pingId: this.pingId, sendTimeUs: Math.round(this.clock.monotonicMs() * 1000) });
    }
  }

  /** Queues one message; false when the socket's buffer is past its high-water mark. */
  send(message: ReplMessage): boolean {
    if (this.closed) return false;
    const buffers = encodeMessage(message);
    this.liveness.sent(this.clock.monotonicMs());
    this.socket.cork();
    let ok = true;
    for (const buffer of buffers) ok = this.socket.write(buffer);
    this.socket.uncork();
    return ok;
  }

  /** Sends ERROR and closes: the peer broke the protocol or must stop. */
  fail(code: ReplErrorCode, text: string): void {
    if (this.closed) return;
    this.logger.warn({ event: "repl_error_sent", remote: this.remote, code, reason: text }, "closing replication connection");
    this.send({ type: "ERROR", code, text: text.slice(0, 512) });
    this.socket.end();
    this.socket.destroySoon();
    this.finish(`${code}: ${text}`);
  }

  close(text = "closing"): void {
    if (this.closed) return;
    this.send({ type: "CLOSE", text });
    this.socket.end();
    this.socket.destroySoon();
    this.finish(text);
  }

  private finish(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.clock.clear(this.pingTimer);
    if (!this.socket.destroyed) this.socket.destroy();
    this.handlers.onClose(reason);
  }
}


