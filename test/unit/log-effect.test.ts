// node/logger.ts writeLogEffect: a core machine's log effect as one pino line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { pino } from "pino";
import { writeLogEffect } from "../../src/node/logger.ts";

void test("a log effect's field the logger already carries is written once; other fields and values stay", () => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _encoding, done) { lines.push(chunk.toString("utf8")); done(); } });
  const logger = pino({ base: null, timestamp: false }, sink).child({ group: "g2" });
  writeLogEffect(logger, { level: "info", event: "pair_disconnected", fields: { group: "g2", reason: "peer silent" }, message: "down" });
  writeLogEffect(logger, { level: "warn", event: "held", fields: { group: "g1" }, message: "held by" });
  assert.equal(lines[0]?.match(/"group"/g)?.length, 1, lines[0] ?? "");
  assert.deepEqual(JSON.parse(lines[0] ?? "{}"), { level: 30, group: "g2", event: "pair_disconnected", reason: "peer silent", msg: "down" });
  assert.equal(lines[1]?.match(/"group"/g)?.length, 2, "a different value is kept (it says something else)");
});
