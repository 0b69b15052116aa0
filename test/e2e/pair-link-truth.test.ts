// Proves the link of a pair is told truly and once (issue 9 item 1, as an operator found it by
// hand), with real nodes: a secondary stalled by SIGSTOP makes the primary log one
// pair_disconnected and, for its retries, only debug lines naming the address it dials (not
// "?:?"); status, metrics and the dashboard's figure count no stream connected while the state is
// `disconnected` (a TCP connection to a stalled peer completes no handshake), and the retries
// are not counted as reconnects. A stalled primary shows on the secondary with the peer timeout
// as the link's last error. A pair the primary suspends says so on the secondary; a link down
// across a suspend and resume is logged once down and once back; a pair delete logs no
// pair_disconnected on the primary, and the secondary's line says a pair delete ended the
// streams. Each assertion failed before the fix (72 warnings per minute, 4/4 streams connected,
// `last error: none`, "the primary reconnects by itself", no pair_reconnected, a level-40
// pair_disconnected per delete, "a takeover is being decided" on a delete).
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { makeGroup, pairCreate, pairInfo, pairWait, runDrill, startPairNodes, waitPairState } from "./drill-lib.ts";
import { cliOk, onCleanup, sleep, waitFor, type RunningNode } from "./harness.ts";
import { scrape, value } from "./metrics-lib.ts";

interface LogLine {
  readonly level: number;
  readonly event?: string;
  readonly group?: string;
  readonly reason?: string;
  readonly remote?: string;
}

/** Byte offset of the end of the node's log now: lines after it are what happens next. */
function mark(node: RunningNode): number {
  return fs.statSync(node.logFile).size;
}

/** The JSON log lines of `node` after byte `from` of its log file. */
function linesSince(node: RunningNode, from: number): LogLine[] {
  const text = fs.readFileSync(node.logFile).subarray(from).toString("utf8");
  return text.split("\n").flatMap((line) => {
    if (!line.startsWith("{")) return [];
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

function events(lines: readonly LogLine[], event: string, group?: string): LogLine[] {
  return lines.filter((line) => line.event === event && (group === undefined || line.group === group));
}

/** SIGSTOP the node's process; the returned function (also run at cleanup) sends SIGCONT once. */
function freeze(node: RunningNode): () => void {
  const pid = node.pid;
  process.kill(pid, "SIGSTOP");
  let thawed = false;
  const thaw = (): void => {
    if (thawed) return;
    thawed = true;
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // gone already
    }
  };
  onCleanup(`SIGCONT pid ${pid}`, thaw);
  return thaw;
}

void test("a stalled peer: one line per state change, no stream counted connected, the retries at debug with the address, the last error on the secondary", { timeout: 180_000 }, (t) => runDrill(t, async () => {
  const { a, b } = await startPairNodes({ a: { extraArgs: ["--log-level", "debug"] } });
  await makeGroup(a, "g1", [{ name: "v1", size: "8M" }]);
  await pairCreate(a, "g1", b, { streams: 4 });
  await pairWait(a, "g1", "30s");
  assert.equal((await pairInfo(a, "g1")).link.connectedStreams, 4);

  // ---- the secondary stalled -----------------------------------------------------------
  const fromA = mark(a);
  const reconnectsBefore = (await pairInfo(a, "g1")).link.reconnects;
  const thawB = freeze(b);
  await waitPairState(a, "g1", "disconnected", 30_000);
  await sleep(12_000); // several retries: each connects at TCP level and gets no answer
  const down = await pairInfo(a, "g1");
  t.diagnostic(`A while B is stalled: ${down.state}, ${down.link.connectedStreams} streams, ${down.link.reconnects} reconnects, ${String(down.reason)}`);
  assert.equal(down.state, "disconnected");
  assert.equal(down.link.connectedStreams, 0, "no stream completes a handshake with a stalled peer");
  assert.equal(value(await scrape(a), "tidemark_pair_link_streams_connected", { group: "g1", role: "primary" }), 0);
  assert.ok(down.link.reconnects - reconnectsBefore <= 4, `the 4 streams lost count; the retries do not (${down.link.reconnects - reconnectsBefore})`);
  assert.ok(down.link.downSince !== null);
  const whileDown = linesSince(a, fromA);
  assert.equal(events(whileDown, "pair_disconnected", "g1").length, 1, "one line when the link goes down");
  const timeouts = [...events(whileDown, "repl_peer_timeout"), ...events(whileDown, "repl_stream_stuck")];
  assert.ok(timeouts.length >= 4, `the retries ended by the peer timeout are logged at debug (${timeouts.length})`);
  for (const line of timeouts) {
    assert.equal(line.level, 20, "a retry's end is a debug line");
    assert.equal(line.remote, `127.0.0.1:${b.replPort}`, "the address dialled, not ?:?");
  }
  assert.deepEqual(whileDown.filter((line) => line.level >= 40).map((line) => line.event), ["pair_disconnected"], "no warning but the state change");
  thawB();
  await waitPairState(a, "g1", "replicating", 30_000);
  await waitFor("A's 4 streams back", async () => ((await pairInfo(a, "g1")).link.connectedStreams === 4 ? true : undefined), { timeoutMs: 30_000 });
  assert.equal(events(linesSince(a, fromA), "pair_reconnected", "g1").length, 1, "one line when it is back");

  // ---- the primary stalled: the secondary's last error is the peer timeout ----------------
  const fromB = mark(b);
  const thawA = freeze(a);
  try {
    const cut = await waitPairState(b, "g1", "disconnected", 30_000);
    t.diagnostic(`B while A is stalled: ${cut.state}, last error ${String(cut.link.lastError)}, ${String(cut.reason)}`);
    assert.match(cut.link.lastError ?? "none", /peer silent for \d+ ms/);
    assert.match(cut.reason ?? "", /last error: peer silent for \d+ ms/);
    assert.equal(cut.link.connectedStreams, 0);
  } finally {
    thawA();
  }
  await waitPairState(b, "g1", "replicating", 30_000);
  const linesB = linesSince(b, fromB);
  assert.equal(events(linesB, "pair_disconnected", "g1").length, 1);
  assert.equal(events(linesB, "pair_reconnected", "g1").length, 1);
  assert.deepEqual(linesB.filter((line) => line.level >= 40).map((line) => line.event), [], "the secondary warns of nothing either");
}));

void test("suspend shows on the secondary; a link down across suspend and resume is logged once each way; pair delete is not a disconnection", { timeout: 180_000 }, (t) => runDrill(t, async () => {
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g1", [{ name: "v1", size: "8M" }]);
  await makeGroup(a, "g2", [{ name: "v2", size: "8M" }]);
  await pairCreate(a, "g1", b, { streams: 2 });
  await pairCreate(a, "g2", b, { streams: 2 });
  await pairWait(a, "g1", "30s");
  await pairWait(a, "g2", "30s");

  // ---- suspended on the primary: the secondary says so ----------------------------------
  await cliOk(["pair", "suspend", "g1"], { node: a.mgmtUrl });
  const suspended = await waitFor("B sees g1 suspended", async () => {
    const info = await pairInfo(b, "g1");
    return /^suspended on primary/.test(info.reason ?? "") ? info : undefined;
  }, { timeoutMs: 15_000 });
  t.diagnostic(`B's g1 while suspended on A: ${suspended.state}: ${String(suspended.reason)}`);
  assert.match(suspended.reason ?? "", /^suspended on primary drill-a since \S+ .*tidemark pair resume g1/);
  assert.doesNotMatch(suspended.reason ?? "", /reconnects by itself/);
  await cliOk(["pair", "resume", "g1"], { node: a.mgmtUrl });
  await waitPairState(b, "g1", "replicating", 30_000);

  // ---- the secondary away; g2 suspended and resumed meanwhile -----------------------------
  const fromA = mark(a);
  await b.stop();
  await waitPairState(a, "g2", "disconnected", 30_000);
  await cliOk(["pair", "suspend", "g2"], { node: a.mgmtUrl });
  await cliOk(["pair", "resume", "g2"], { node: a.mgmtUrl });
  await waitPairState(a, "g2", "disconnected", 30_000);
  await sleep(1_000);
  await b.restart();
  await waitPairState(a, "g2", "replicating", 30_000);
  await waitPairState(a, "g1", "replicating", 30_000);
  const across = linesSince(a, fromA);
  for (const group of ["g1", "g2"]) {
    assert.equal(events(across, "pair_disconnected", group).length, 1, `${group}: down once\n${a.logTail(30)}`);
    assert.equal(events(across, "pair_reconnected", group).length, 1, `${group}: back once\n${a.logTail(30)}`);
  }
  // The suspend and the resume are state changes too: one line each, on the primary.
  assert.equal(events(across, "pair_suspended", "g2").length, 1, a.logTail(30));
  assert.equal(events(across, "pair_resumed", "g2").length, 1, a.logTail(30));

  // ---- pair delete: the pair's end, not a disconnection ---------------------------------
  const deleteFromA = mark(a);
  const deleteFromB = mark(b);
  await cliOk(["pair", "delete", "g1"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  await sleep(500);
  const deletedA = linesSince(a, deleteFromA);
  assert.deepEqual(events(deletedA, "pair_disconnected", "g1"), [], "no pair_disconnected on the primary for a delete");
  assert.deepEqual(deletedA.filter((line) => line.level >= 40), [], "no warning on the primary for a delete");
  assert.equal(events(deletedA, "pair_deleted", "g1").length, 1, "the pair's end is logged");
  const deletedB = linesSince(b, deleteFromB);
  assert.deepEqual(deletedB.filter((line) => line.level >= 40 && line.event !== "pair_deleted").map((line) => line.event), [], "the secondary's retries during the delete are not warnings");
  // Not a disconnection there either: one line saying the delete closed the streams.
  assert.deepEqual(events(deletedB, "pair_disconnected", "g1"), [], "no pair_disconnected on the secondary for a delete");
  for (const line of events(deletedB, "pair_streams_closed", "g1")) {
    assert.match(line.reason ?? "", /pair delete/, "the secondary's line says a pair delete ended the streams");
    assert.doesNotMatch(line.reason ?? "", /takeover/);
  }
  assert.equal((await pairInfo(a, "g2")).state, "replicating", "the other pair goes on");
}));
