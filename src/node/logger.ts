// JSON lines on stderr (CONTRACT.md). Synchronous writes: logs are rare (never per
// request) and a crash must not swallow the lines that explain it.
import { pino, type Logger } from "pino";

export function createNodeLogger(nodeId: string, level = process.env.TIDEMARK_LOG_LEVEL ?? "info"): Logger {
  return pino({ level, base: { node: nodeId, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
}
