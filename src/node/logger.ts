// JSON lines on stderr (CONTRACT.md). Synchronous writes: logs are rare (never per
// request) and a crash must not swallow the lines that explain it.
import { pino, type Logger } from "pino";
import type { LogEffect } from "../core/log-effect.ts";

/** Log bytes kept while stderr cannot take them; past it lines are dropped, never the node. */
const logBufferBytesMax = 1024 * 1024;

/**
 * The node's logger. When stderr goes away (the terminal was closed, the pipe's reader
 * exited) writes fail with EIO or EPIPE: logging then stops, and the node goes on: a log
 * line must never be the reason a storage node exits.
 */
export function createNodeLogger(nodeId: string, level = process.env.TIDEMARK_LOG_LEVEL ?? "info"): Logger {
  const destination = pino.destination({ fd: 2, sync: true, maxLength: logBufferBytesMax });
  destination.on("error", () => undefined);
  return pino({ level, base: { node: nodeId, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** Writes the log line a lifecycle machine asked for (core/log-effect.ts): level, `event` first, its fields, the message. */
export function writeLogEffect(logger: Logger, effect: Omit<LogEffect, "type">): void {
  // A field the logger already carries (a child's `group`) is not written twice in one JSON line.
  const bound = logger.bindings();
  const fields = Object.fromEntries(Object.entries(effect.fields).filter(([key, value]) => !(key in bound && bound[key] === value)));
  logger[effect.level]({ event: effect.event, ...fields }, effect.message);
}
