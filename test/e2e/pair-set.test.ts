// `tidemark pair set GROUP --to URL` against real nodes (issue 9 item 4): the secondary moves
// (stopped, started again on other ports with the same --data); pointed at its new management
// URL, the pair reconnects to its new replication address and carries on without a new initial
// copy (one copy_started in the primary's log, the same pair id), data written after the move
// arrives, the primary logs the link down once and back once (pair_disconnected, pair_reconnected),
// and a kill and restart of the primary keeps the new address. A URL of another node (or
// one not holding this pair), a group without a pair and a malformed URL are refused with one line.
import * as net from "node:net";
import { test } from "node:test";
import assert from "node:assert/strict";
import { HostClient } from "../../src/client/host-client.ts";
import { cli, cliOk, startNode, type RunningNode } from "./harness.ts";
import { makeGroup, pairCreate, pairInfo, pairWait, runDrill, startPairNodes } from "./drill-lib.ts";

const kib = 1024;

async function write(node: RunningNode, volume: string, offsetBytes: number, byte: number): Promise<void> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    await (await client.open(volume)).write(offsetBytes, Buffer.alloc(64 * kib, byte), { fua: true });
  } finally {
    await client.close();
  }
}

async function read(node: RunningNode, volume: string, offsetBytes: number): Promise<Buffer> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    return await (await client.open(volume)).read(offsetBytes, 64 * kib);
  } finally {
    await client.close();
  }
}

function count(node: RunningNode, event: string): number {
  return node.logTail(100_000).split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

function oneLineRefusal(result: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, result.stderr);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, pattern);
}

void test("pair set: a moved secondary, same pair, no new copy, replication resumes; wrong input refused", { timeout: 300_000 }, (t) => runDrill(t, async () => {
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g", [{ name: "v1", size: "16M" }]);
  await makeGroup(a, "h", [{ name: "v2", size: "8M" }]);
  await pairCreate(a, "g", b, { streams: 2 });
  await write(a, "v1", 1024 * kib, 0x5a);
  await pairWait(a, "g");
  const before = await pairInfo(a, "g");
  assert.equal(count(a, "copy_started"), 1);

  // The secondary moves: same --data, other ports.
  await b.stop();
  const moved = await startNode({ id: b.id, dataDir: b.dataDir });
  assert.notEqual(moved.mgmtUrl, b.mgmtUrl);
  await write(a, "v1", 2048 * kib, 0x6b); // accepted while the secondary is away

  for (const url of ["not a url", "ht!tp://x", "http://ht!tp"]) {
    const bad = await cli(["pair", "set", "g", "--to", url], { node: a.mgmtUrl });
    assert.equal(bad.code, 2, `${url}: ${bad.stderr}`);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    assert.match(bad.stderr, /--to .* (is not a URL|has no valid host name)/);
  }
  oneLineRefusal(await cli(["pair", "set", "g", "--to", a.mgmtUrl], { node: a.mgmtUrl }), /holds no pair secondary named g.*TM_ERR_CONFLICT/);
  oneLineRefusal(await cli(["pair", "set", "h", "--to", moved.mgmtUrl], { node: a.mgmtUrl }), /TM_ERR_NOT_FOUND/);
  oneLineRefusal(await cli(["pair", "set", "g", "--to", moved.mgmtUrl], { node: moved.mgmtUrl }), /run this against the primary.*TM_ERR_STATE/);

  // A --to that accepts connections and never answers: the node's own call gives up after
  // peerRequestTimeoutMs (30 s) and says so; the CLI waits longer than that (before, it gave up
  // after its 10 s and said the node itself did not answer).
  const silent = net.createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  try {
    const silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    oneLineRefusal(await cli(["pair", "set", "g", "--to", silentUrl], { node: a.mgmtUrl, timeoutMs: 120_000 }), /the secondary at .* did not answer within 30 s.*TM_ERR_UNREACHABLE/);
  } finally {
    silent.close();
  }

  const set = await cliOk(["pair", "set", "g", "--to", moved.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(set.stdout, `pair of group g now replicates to node ${b.id} at ${moved.mgmtUrl} (same pair ${before.pairId}; no new copy)\n`);
  await pairWait(a, "g");
  assert.deepEqual(await read(moved, "v1", 2048 * kib), Buffer.alloc(64 * kib, 0x6b), "what was accepted while it was away arrived");
  const after = await pairInfo(a, "g");
  assert.equal(after.pairId, before.pairId);
  assert.equal(after.state, "replicating");
  assert.equal(after.remoteUrl, moved.mgmtUrl);
  assert.equal(count(a, "copy_started"), 1, "no new initial copy");
  assert.equal(count(moved, "secondary_copy_done"), 0, "no new initial copy on the secondary");
  // One line when the secondary went away, one when the pair is back at the new address (before
  // the fix the link that pair set started afresh never said it was back).
  assert.equal(count(a, "pair_disconnected"), 1, a.logTail(40));
  assert.equal(count(a, "pair_reconnected"), 1, a.logTail(40));

  // The new address is saved: a crash and restart of the primary goes on with it.
  await a.kill();
  await a.restart();
  await write(a, "v1", 3072 * kib, 0x7c);
  await pairWait(a, "g");
  assert.deepEqual(await read(moved, "v1", 3072 * kib), Buffer.alloc(64 * kib, 0x7c));
  assert.equal((await pairInfo(a, "g")).remoteUrl, moved.mgmtUrl);
  await moved.stop();
}));
