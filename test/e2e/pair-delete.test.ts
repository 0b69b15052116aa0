// `tidemark pair delete` against real nodes (issue 9 item 4; docs/replication.md, "Ending a
// pair"): run on the primary it ends both sides, the primary's group stays writable and the
// secondary keeps the image, read-only (until `--promote`), also after a kill and restart;
// deleting again is not an error; a pair that would leave the secondary behind, a secondary that
// cannot be reached and a delete run on the secondary are refused with one line saying what to
// type, and `--force` ends one side only. A crash of the secondary right after it saved its
// decision (node.json edited to that state while it is down) is finished by the next start.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { HostClient } from "../../src/client/host-client.ts";
import { cli, cliOk, waitFor, type RunningNode } from "./harness.ts";
import { makeGroup, pairCreate, pairWait, runDrill, startPairNodes } from "./drill-lib.ts";

const kib = 1024;

function pattern(byte: number): Buffer {
  return Buffer.alloc(64 * kib, byte);
}

async function write(node: RunningNode, volume: string, offsetBytes: number, data: Buffer): Promise<void> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    await (await client.open(volume)).write(offsetBytes, data, { fua: true });
  } finally {
    await client.close();
  }
}

async function read(node: RunningNode, volume: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    return await (await client.open(volume)).read(offsetBytes, lengthBytes);
  } finally {
    await client.close();
  }
}

async function writeRefused(node: RunningNode, volume: string): Promise<string> {
  try {
    await write(node, volume, 0, pattern(0x77));
  } catch (error) {
    return (error as Error).message;
  }
  return "";
}

async function pairGroups(node: RunningNode): Promise<string[]> {
  const listed = JSON.parse((await cliOk(["pair", "status", "--json"], { node: node.mgmtUrl })).stdout) as { pairs: { group: string }[] };
  return listed.pairs.map((p) => p.group).sort();
}

function oneLineRefusal(result: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, result.stderr);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, pattern);
}

void test("pair delete: both sides end, both images stay; refusals say what to type; --force ends one side; restarts keep it", { timeout: 300_000 }, (t) => runDrill(t, async () => {
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g", [{ name: "v1", size: "16M" }]);
  await makeGroup(a, "h", [{ name: "v2", size: "16M" }]);
  await pairCreate(a, "g", b, { streams: 2 });
  await pairCreate(a, "h", b, { streams: 2 });
  await makeGroup(a, "k", [{ name: "v3", size: "8M" }]);
  await pairCreate(a, "k", b, { streams: 1 });
  await makeGroup(a, "p", [{ name: "v4", size: "8M" }]);
  await pairCreate(a, "p", b, { streams: 1 });
  await makeGroup(a, "gf", [{ name: "v5", size: "8M" }]);
  await pairCreate(a, "gf", b, { streams: 1 });
  await write(a, "v1", 1024 * kib, pattern(0x5a));
  await write(a, "v2", 1024 * kib, pattern(0x6b));
  await pairWait(a, "g");
  await pairWait(a, "h");
  await pairWait(a, "k");

  // Wrong input, and the secondary without --force: one line each, nothing changed.
  const bad = await cli(["pair", "delete", "no/such"], { node: a.mgmtUrl });
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  oneLineRefusal(await cli(["pair", "delete", "g"], { node: b.mgmtUrl }), /run pair delete against the primary.*tidemark pair delete g --force.*TM_ERR_STATE/);

  // A suspended pair whose secondary lacks what was accepted since: refused, saying how many.
  await cliOk(["pair", "suspend", "h"], { node: a.mgmtUrl });
  await write(a, "v2", 2048 * kib, pattern(0x6c));
  oneLineRefusal(await cli(["pair", "delete", "h"], { node: a.mgmtUrl }), /1 record accepted here .* is not on the secondary yet.*tidemark pair delete h --force.*TM_ERR_STATE/);
  assert.deepEqual(await pairGroups(a), ["g", "gf", "h", "k", "p"]);

  // The delete: both sides, the primary writable, the secondary's image read-only.
  const deleted = await cliOk(["pair", "delete", "g"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(deleted.stdout, `deleted the pair of group g: replication ended, the group stays writable; the secondary's side is deleted too on node ${b.id}: ` +
    `its volumes keep the image, read-only (writable with: tidemark pair delete g --promote --node ${b.mgmtUrl})\n`);
  // --promote on the primary says what became of the secondary's volumes.
  const promotedBoth = await cliOk(["pair", "delete", "p", "--promote"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(promotedBoth.stdout, `deleted the pair of group p: replication ended, the group stays writable; the secondary's side is deleted too on node ${b.id}: its volumes are writable (promoted)\n`);

  // A takeover on B: its delete says the group was taken over (not "run it on the primary");
  // the old primary's forced delete tells B, which forgets the pair without --force there.
  await cliOk(["pair", "takeover", "gf"], { node: b.mgmtUrl, timeoutMs: 120_000 });
  oneLineRefusal(await cli(["pair", "delete", "gf"], { node: b.mgmtUrl }),
    new RegExp(`was taken over on node ${b.id}.*only forgets the takeover.*fences itself; once forgotten, it only fails.*tidemark pair delete gf --force --node ${a.mgmtUrl}\\).*TM_ERR_STATE`));
  const oldPrimary = await cliOk(["pair", "delete", "gf", "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(oldPrimary.stdout, `deleted the pair of group gf: replication ended, the group stays writable; the secondary on node ${b.id} had taken the group over: it forgot the pair (its group stays writable there)\n`);
  assert.doesNotMatch(oldPrimary.stdout, /there\)?$|--force there/);
  assert.equal((await cliOk(["pair", "delete", "gf"], { node: b.mgmtUrl })).stdout, "group gf has no pair; nothing to delete\n");
  await write(a, "v5", 0, pattern(0x33));
  await write(b, "v5", 0, pattern(0x44));

  assert.deepEqual(await pairGroups(a), ["h", "k"]);
  assert.deepEqual(await pairGroups(b), ["h", "k"]);
  await write(a, "v1", 0, pattern(0x11));
  assert.deepEqual(await read(b, "v1", 1024 * kib, 64 * kib), pattern(0x5a), "the secondary kept the image");
  assert.match(await writeRefused(b, "v1"), /read-only/);
  const bVolumes = JSON.parse((await cliOk(["volume", "list", "--json"], { node: b.mgmtUrl })).stdout) as { volumes: { name: string; readOnly: boolean; group: string | null }[] };
  assert.deepEqual(bVolumes.volumes.find((v) => v.name === "v1"), { ...bVolumes.volumes.find((v) => v.name === "v1"), readOnly: true, group: "g" });
  const again = await cliOk(["pair", "delete", "g"], { node: a.mgmtUrl });
  assert.equal(again.stdout, "group g has no pair; nothing to delete\n");

  // A kill and a restart of the secondary: still read-only, no pair, the image there; then --promote.
  await b.kill();
  await b.restart();
  assert.deepEqual(await pairGroups(b), ["h", "k"]);
  assert.deepEqual(await read(b, "v1", 1024 * kib, 64 * kib), pattern(0x5a));
  assert.match(await writeRefused(b, "v1"), /read-only/);
  const promoted = await cliOk(["pair", "delete", "g", "--promote"], { node: b.mgmtUrl });
  assert.equal(promoted.stdout, "group g has no pair; its volumes are writable now (the image its deleted pair left)\n");
  assert.equal((await cliOk(["pair", "delete", "g", "--promote"], { node: b.mgmtUrl })).stdout, "group g has no pair; nothing to delete\n");
  await write(b, "v1", 0, pattern(0x22));
  assert.deepEqual(await read(b, "v1", 0, 64 * kib), pattern(0x22));

  // The secondary frozen (SIGSTOP: its sockets stay open, nothing answers) with a record it
  // lacks: the node waits pairDeleteAckWaitMsMax (10 s) and refuses; the CLI waits longer than
  // that (before, it gave up at the same 10 s and said the node was stuck).
  await cliOk(["pair", "resume", "h"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  await pairWait(a, "h");
  process.kill(b.pid, "SIGSTOP");
  try {
    await write(a, "v2", 3072 * kib, pattern(0x6d));
    const frozenAtMs = performance.now();
    const frozen = await cli(["pair", "delete", "h"], { node: a.mgmtUrl, timeoutMs: 120_000 });
    t.diagnostic(`pair delete against a frozen secondary answered after ${Math.round(performance.now() - frozenAtMs)} ms: ${frozen.stderr.trim()}`);
    oneLineRefusal(frozen, new RegExp(`not on the secondary yet.*node ${b.id} \\(${b.mgmtUrl.replace(/\./g, "\\.")}\\) (cannot be reached|did not acknowledge them in time).*TM_ERR_STATE`));
    assert.doesNotMatch(frozen.stderr, /did not answer/);
  } finally {
    process.kill(b.pid, "SIGCONT");
  }

  // The secondary down: refused with what to type, naming it; --force ends the primary's side only.
  await b.stop();
  await write(a, "v2", 4096 * kib, pattern(0x6e));
  oneLineRefusal(await cli(["pair", "delete", "h"], { node: a.mgmtUrl }), new RegExp(`not on the secondary yet \\(it holds through \\d+\\): the secondary node ${b.id} .* cannot be reached.*TM_ERR_STATE`));
  oneLineRefusal(await cli(["pair", "delete", "k"], { node: a.mgmtUrl, timeoutMs: 60_000 }),
    new RegExp(`refused the connection.*nothing was deleted\\. To end the pair on this node only: tidemark pair delete k --force \\(then, once node ${b.id} is back: tidemark pair delete k --force --node ${b.mgmtUrl.replace(/\./g, "\\.")}\\).*TM_ERR_UNREACHABLE`));
  const forced = await cliOk(["pair", "delete", "h", "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.match(forced.stdout, new RegExp(`^deleted the pair of group h: replication ended, the group stays writable; the secondary's side: not reached .*: this node tells it once it can \\(every 15 s\\); to end it there now: tidemark pair delete h --force --node http://127\\.0\\.0\\.1:\\d+\n$`));
  assert.deepEqual(await pairGroups(a), ["k"]);

  // The secondary back while the primary is down (it cannot tell it yet): its side of h is still
  // there; ended there with --force, kept read-only. It stops right after saving its decision:
  // the start finishes it (node.json edited to that state). (The primary's own telling is
  // test/e2e/pair-delete-unreachable.test.ts.)
  await a.stop();
  await b.restart();
  assert.deepEqual(await pairGroups(b), ["h", "k"]);
  await b.stop();
  const nodeJson = path.join(b.dataDir, "node.json");
  const metadata = JSON.parse(readFileSync(nodeJson, "utf8")) as { groups: { name: string; secondary?: { reflectedSequence: number; ending?: unknown } }[] };
  const h = metadata.groups.find((g) => g.name === "h");
  assert.ok(h?.secondary !== undefined);
  h.secondary.ending = { keepThroughSequence: h.secondary.reflectedSequence, promote: false, at: new Date().toISOString() };
  writeFileSync(nodeJson, JSON.stringify(metadata, null, 2) + "\n");
  await b.restart();
  assert.match(b.logTail(200), /"event":"pair_delete_resumed"/);
  assert.deepEqual(await pairGroups(b), ["k"]);
  assert.deepEqual(await read(b, "v2", 1024 * kib, 64 * kib), pattern(0x6b), "the image the pair left");
  assert.match(await writeRefused(b, "v2"), /read-only/);
  const gone = await cliOk(["pair", "delete", "h", "--force"], { node: b.mgmtUrl });
  assert.equal(gone.stdout, "group h has no pair; nothing to delete; it is read-only (writable with --promote)\n");
  await b.kill();
  await b.restart();
  assert.match(await writeRefused(b, "v2"), /read-only/);
  // The primary back: the end it owed finds no pair h there and is forgotten; k carries on.
  await a.restart();
  await waitFor("the primary forgets the end it owed", () => ((JSON.parse(readFileSync(path.join(a.dataDir, "node.json"), "utf8")) as { pairEndsOwed?: unknown[] }).pairEndsOwed === undefined ? true : undefined), { timeoutMs: 30_000 });
  assert.match(a.logTail(400), /"event":"pair_end_delivered".*"deletedThere":false/);
  await pairWait(a, "k");
  assert.match(await writeRefused(b, "v2"), /read-only/, "still read-only: the late end changed nothing there");
}));
