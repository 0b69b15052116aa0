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
import { cli, cliOk, type RunningNode } from "./harness.ts";
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
  assert.deepEqual(await pairGroups(a), ["g", "h", "k"]);

  // The delete: both sides, the primary writable, the secondary's image read-only.
  const deleted = await cliOk(["pair", "delete", "g"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(deleted.stdout, "deleted the pair of group g: replication ended, the group stays writable; the secondary's side is deleted too\n");
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
  assert.equal(promoted.stdout, "group g has no pair; nothing to delete\n");
  await write(b, "v1", 0, pattern(0x22));
  assert.deepEqual(await read(b, "v1", 0, 64 * kib), pattern(0x22));

  // The secondary down: refused with what to type; --force ends the primary's side only.
  await b.stop();
  oneLineRefusal(await cli(["pair", "delete", "h"], { node: a.mgmtUrl }), /not on the secondary yet.*TM_ERR_STATE/);
  oneLineRefusal(await cli(["pair", "delete", "k"], { node: a.mgmtUrl, timeoutMs: 60_000 }), /refused the connection.*nothing was deleted\. To end the pair on this node only: tidemark pair delete k --force.*TM_ERR_UNREACHABLE/);
  const forced = await cliOk(["pair", "delete", "h", "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.match(forced.stdout, /^deleted the pair of group h: replication ended, the group stays writable; the secondary's side: left as it is: .*tidemark pair delete h --force\n$/);
  assert.deepEqual(await pairGroups(a), ["k"]);

  // The secondary back: its side of h is still there; ended there with --force, kept read-only.
  // It stops right after saving its decision: the start finishes it (node.json edited to that state).
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
}));
