// Issue 8, kind 4 (leaving a consistency domain), from ../shared/repro/suspend-one-group-freezes-others.sh:
// suspending one pair (g1) froze every other group of its domain on the secondary (g2)
// silently: no reason on either side, and 0 s of lag with records waiting. Holding g2 may be
// what consistency needs; silence is not. Now g2 is `held`, says by which group and since
// when, and its lag counts the wait. The operator chooses: detach g1 on the secondary (g2
// goes on; g1 says it is no longer consistent with g2), attach it again (it rejoins under the
// join rule), or suspend and resume the domain together (`pair suspend g1,g2`). A pair that
// would mix reflect modes in one domain is refused at create.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { NbdClient, pairWait } from "./drill-lib.ts";
import { cli, cliOk, mgmtJson, startNode, waitFor, type RunningNode } from "./harness.ts";

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfo;
}

async function writeBlocks(node: RunningNode, volume: string, first: number, count: number, fill: number): Promise<void> {
  const client = await NbdClient.connect(node.nbdPort, volume);
  for (let i = 0; i < count; i += 1) await client.write((first + i) * 4096, Buffer.alloc(4096, fill));
  await client.flush();
  await client.close();
}

void test("a suspended group holds the others visibly; detach lets them go on, attach brings it back; a domain suspends together", { timeout: 180_000 }, async () => {
  const primary = await startNode({ id: "sd-p" });
  const secondary = await startNode({ id: "sd-s" });
  const on = { node: primary.mgmtUrl };
  for (const g of [1, 2]) {
    await cliOk(["volume", "create", `v${g}`, "--size", "4M"], on);
    await cliOk(["group", "create", `g${g}`, "--volumes", `v${g}`], on);
    await cliOk(["pair", "create", `g${g}`, "--to", secondary.mgmtUrl], { ...on, timeoutMs: 60_000 });
  }
  await cliOk(["pair", "suspend", "g1"], on);
  // NBD writes (no write times under --write-time host) to g2, which is not suspended.
  await writeBlocks(primary, "v2", 0, 50, 0x21);

  // g2 is held by g1: it says so, since when, and its lag is not 0 s with records waiting.
  const held = await waitFor("g2 held on the secondary", async () => {
    const info = await pair(secondary, "g2");
    return info.state === "held" && info.lagRecords >= 50 ? info : undefined;
  }, { timeoutMs: 30_000 });
  assert.match(held.reason ?? "", /reflection held since \d{4}-\d\d-\d\dT\S+ by group g1 of the same consistency domain \(no replication stream from its primary .*: the pair is suspended on its primary\): \d+ records wait/, JSON.stringify(held));
  await waitFor("the lag counts the wait", async () => (await pair(secondary, "g2")).lagSeconds > 0, { timeoutMs: 10_000 });
  assert.match((await pair(primary, "g2")).reason ?? "", /may be held behind g1 \(suspended\) of the same consistency domain/, "the primary points at g1 too");
  const groups = await mgmtJson(secondary.mgmtUrl, "/v1/groups") as { groups: { name: string; reason: string | null }[] };
  assert.match(groups.groups.find((g) => g.name === "g2")?.reason ?? "", /held since .* by group g1/, "group list says it too");
  const health = await mgmtJson(secondary.mgmtUrl, "/v1/health") as { status: string; reasons?: string[] };
  assert.equal(health.status, "degraded", JSON.stringify(health));
  const status = await cliOk(["pair", "status", "g2"], { node: secondary.mgmtUrl });
  assert.match(status.stdout, /held/, status.stdout);

  // detach runs on the secondary, where the domain is; on the primary it is refused with what to do.
  const onPrimary = await cli(["pair", "detach", "g1"], on);
  assert.notEqual(onPrimary.code, 0);
  assert.match(onPrimary.stderr, /run pair detach against the secondary.*\[TM_ERR_STATE\]/, onPrimary.stderr);
  const detached = await cliOk(["pair", "detach", "g1"], { node: secondary.mgmtUrl });
  // g1 is suspended on the primary: no stream comes, so the secondary shows it disconnected, saying it is suspended there (not that the primary reconnects), and detached.
  assert.match(detached.stdout, /detached group g1: now disconnected \(suspended on primary [^(]*\(it closed its streams: [^)]*suspended[^)]*\); nothing arrives until `tidemark pair resume g1` runs on that node; detached from its consistency domain: reflects alone and is not consistent with g2/, detached.stdout);
  await pairWait(primary, "g2", "30s");
  assert.equal((await pair(secondary, "g2")).state, "replicating", "g2 goes on without g1");

  // g1 resumes and replicates alone; attach brings it back under the join rule.
  await cliOk(["pair", "resume", "g1"], on);
  await writeBlocks(primary, "v1", 0, 10, 0x11);
  await pairWait(primary, "g1", "30s");
  const attached = await cliOk(["pair", "attach", "g1"], { node: secondary.mgmtUrl });
  assert.match(attached.stdout, /attached group g1/, attached.stdout);
  await writeBlocks(primary, "v1", 10, 5, 0x12);
  await writeBlocks(primary, "v2", 50, 5, 0x22);
  await pairWait(primary, "g1", "30s");
  await pairWait(primary, "g2", "30s");
  await waitFor("g1 consistent with the domain again", async () => (await pair(secondary, "g1")).reason === null, { timeoutMs: 30_000 });

  // The domain suspended together, and resumed together (lists: every name checked first).
  const unknown = await cli(["pair", "suspend", "g1,nope"], on);
  assert.notEqual(unknown.code, 0);
  assert.equal((await pair(primary, "g1")).state, "replicating", "a list with an unknown group changes nothing");
  const suspended = await cliOk(["pair", "suspend", "g1,g2"], on);
  assert.match(suspended.stdout, /suspended pair of group g1: now suspended[^]*suspended pair of group g2: now suspended/, suspended.stdout);
  await cliOk(["pair", "resume", "g1,g2"], on);
  await writeBlocks(primary, "v2", 60, 5, 0x23);
  await pairWait(primary, "g2", "30s");

  // Mixing reflect modes in one domain is refused at pair create.
  await cliOk(["volume", "create", "v3", "--size", "4M"], on);
  await cliOk(["group", "create", "g3", "--volumes", "v3"], on);
  const mixed = await cli(["pair", "create", "g3", "--to", secondary.mgmtUrl, "--reflect", "seq"], { ...on, timeoutMs: 60_000 });
  assert.notEqual(mixed.code, 0);
  assert.match(mixed.stderr, /all groups of a domain use one reflect mode: create the pair with --reflect time.*\[TM_ERR_CONFLICT\]/, mixed.stderr);
});
