// Issue 8 kind 5, from ../shared/repro/two-primaries-position-tie.ts: two primaries feeding one
// secondary, written through the host protocol without a write time (as every NBD client
// writes), produce equal positions in step (0/1 and 0/1, ...). The secondary once asserted on
// that tie, died, and never started again. Now each primary is its own time domain by default,
// and a tie in a domain named over several primaries is broken by the node order, never
// asserted (docs/replication.md, "Several primaries on one secondary"). Also: a named domain
// across two primaries whose write times are not comparable (no --max-clock-skew) is refused
// at pair create, and one across two primaries that run --max-clock-skew (commit wait) is
// taken and replicates, through a kill -9 and restart of the secondary; a primary of it started
// again without the flag keeps waiting out the skew it declared.
import assert from "node:assert/strict";
import { test } from "node:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HostClient } from "../../src/client/host-client.ts";
import { assertSameImages } from "./drill-lib.ts";
import { cli, cliOk, startNode, type RunningNode } from "./harness.ts";

async function makeGroup(node: RunningNode, volume: string, group: string): Promise<void> {
  await cliOk(["volume", "create", volume, "--size", "4M"], { node: node.mgmtUrl });
  await cliOk(["group", "create", group, "--volumes", volume], { node: node.mgmtUrl });
}

/** `rounds` writes to each of the two volumes in turn, without a write time (ties in step). */
async function writeInStep(first: RunningNode, firstVolume: string, second: RunningNode, secondVolume: string, round: number, rounds = 20): Promise<void> {
  const c1 = await HostClient.connect({ host: "127.0.0.1", port: first.hostPort });
  const c2 = await HostClient.connect({ host: "127.0.0.1", port: second.hostPort });
  try {
    const a = await c1.open(firstVolume);
    const b = await c2.open(secondVolume);
    for (let i = 0; i < rounds; i++) {
      const offset = ((round * rounds + i) % 64) * 65536;
      await a.write(offset, Buffer.alloc(4096, (round * rounds + i) % 250 + 1));
      await b.write(offset, Buffer.alloc(4096, (round * rounds + i) % 250 + 2));
    }
    await a.flush();
    await b.flush();
  } finally {
    await c1.close();
    await c2.close();
  }
}

async function pairWait(node: RunningNode, group: string): Promise<void> {
  await cliOk(["pair", "wait", group, "--timeout", "60s"], { node: node.mgmtUrl, timeoutMs: 70_000 });
}

void test("two primaries into one secondary, writes without times tie in step: the secondary stays up, survives kill -9 and restarts, images equal", { timeout: 180_000 }, async () => {
  const s = await startNode({ id: "sp-s" });
  const p1 = await startNode({ id: "sp-p1" });
  const p2 = await startNode({ id: "sp-p2" });
  await makeGroup(p1, "a", "GA");
  await makeGroup(p2, "b", "GB");
  await cliOk(["pair", "create", "GA", "--to", s.mgmtUrl, "--streams", "1"], { node: p1.mgmtUrl, timeoutMs: 60_000 });
  await cliOk(["pair", "create", "GB", "--to", s.mgmtUrl, "--streams", "1"], { node: p2.mgmtUrl, timeoutMs: 60_000 });
  await writeInStep(p1, "a", p2, "b", 0);
  await pairWait(p1, "GA");
  await pairWait(p2, "GB");
  assert.ok(s.running(), "the secondary is up");
  assert.doesNotMatch(s.logTail(400), /"event":"(fatal|reflector_failed)"/);
  await s.kill();
  await writeInStep(p1, "a", p2, "b", 1);
  await s.restart();
  await writeInStep(p1, "a", p2, "b", 2);
  await pairWait(p1, "GA");
  await pairWait(p2, "GB");
  assert.ok(s.running(), "the secondary is still up after its restart");
  await assertSameImages(p1, s, "a");
  await assertSameImages(p2, s, "b");
});

void test("pair create --domain over two primaries: refused without comparable write times; with --max-clock-skew on both, taken, and it replicates through a restart", { timeout: 180_000 }, async () => {
  const s = await startNode({ id: "sd-s" });
  // Default nodes: --write-time host, no --max-clock-skew. Their write times are not comparable.
  const p1 = await startNode({ id: "sd-p1" });
  const p2 = await startNode({ id: "sd-p2" });
  await makeGroup(p1, "a1", "GA1");
  await makeGroup(p2, "b1", "GB1");
  // One primary's groups in a named domain: always comparable.
  await cliOk(["pair", "create", "GA1", "--to", s.mgmtUrl, "--domain", "shared"], { node: p1.mgmtUrl, timeoutMs: 60_000 });
  const refused = await cli(["pair", "create", "GB1", "--to", s.mgmtUrl, "--domain", "shared"], { node: p2.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /domain shared has groups of primary sd-p1; group GB1 of primary sd-p2 may join it only with comparable write times, but sd-p2 runs --write-time host without --max-clock-skew/);
  assert.match(refused.stderr, /TM_ERR_DOMAIN_INCOMPARABLE/);
  // Refused before anything was made: no group GB1 on the secondary, no pair on the primary.
  const groups = await cliOk(["group", "list"], { node: s.mgmtUrl });
  assert.doesNotMatch(groups.stdout, /GB1/);
  const status = await cli(["pair", "status", "GB1"], { node: p2.mgmtUrl });
  assert.notEqual(status.code, 0, "no pair was made on the primary");

  // Two primaries that declare their clock skew (commit wait): one named domain.
  const skew = ["--write-time", "clock", "--max-clock-skew", "5ms"];
  const p3 = await startNode({ id: "sd-p3", extraArgs: skew });
  const p4 = await startNode({ id: "sd-p4", extraArgs: ["--write-time", "host", "--max-clock-skew", "5ms"] });
  await makeGroup(p3, "c1", "GC1");
  await makeGroup(p4, "d1", "GD1");
  await cliOk(["pair", "create", "GC1", "--to", s.mgmtUrl, "--domain", "together"], { node: p3.mgmtUrl, timeoutMs: 60_000 });
  await cliOk(["pair", "create", "GD1", "--to", s.mgmtUrl, "--domain", "together"], { node: p4.mgmtUrl, timeoutMs: 60_000 });
  await writeInStep(p3, "c1", p4, "d1", 0);
  await pairWait(p3, "GC1");
  await pairWait(p4, "GD1");
  await s.kill();
  await writeInStep(p3, "c1", p4, "d1", 1);
  await s.restart();
  await writeInStep(p3, "c1", p4, "d1", 2);
  await pairWait(p3, "GC1");
  await pairWait(p4, "GD1");
  assert.ok(s.running(), "the secondary is up");
  assert.doesNotMatch(s.logTail(600), /"event":"(fatal|reflector_failed)"/);
  // Both groups joined one domain, and node.json keeps it for every restart.
  assert.match(s.logTail(600), /"event":"domain_joined","domain":"named\/together","group":"GD1","members":2/);
  const saved = JSON.parse(readFileSync(join(s.dataDir, "node.json"), "utf8")) as { groups: { name: string; secondary?: { domain?: { name: string; maxClockSkewMs: number } } }[] };
  for (const name of ["GC1", "GD1"]) assert.deepEqual(saved.groups.find((g) => g.name === name)?.secondary?.domain?.name, "together", name);
  assert.equal(saved.groups.find((g) => g.name === "GA1")?.secondary?.domain?.name, "shared");
  await assertSameImages(p3, s, "c1");
  await assertSameImages(p4, s, "d1");

  // A primary of the domain started again without --max-clock-skew keeps waiting out the skew it declared (node.json), and says so.
  await p3.stop();
  const p3again = await startNode({ id: "sd-p3", dataDir: p3.dataDir, writeTime: "clock" });
  assert.match(p3again.logTail(50), /"event":"clock_skew_kept","declaredMs":5,"givenMs":0,"group":"GC1"/);
  await writeInStep(p3again, "c1", p4, "d1", 3);
  await pairWait(p3again, "GC1");
  await pairWait(p4, "GD1");
  await assertSameImages(p3again, s, "c1");
});
