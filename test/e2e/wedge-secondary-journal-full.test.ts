// Proves a secondary whose journal fills applies back-pressure and resumes by itself (issue 6,
// kind 3; the scenario of the reproducer secondary-journal-full-wedge.ts). GB of the same
// consistency domain is suspended, so the secondary cannot reflect GA and GA's journal there
// fills. Before the fix the receiver counted refused records as handed out and the group
// never moved again. Now: the secondary takes no more than its journal holds, both sides
// say why (the secondary names GB; the primary says the secondary is out of journal space,
// not "unreachable"), the primary holds host writes with a reason, a metric and a degraded
// health, and once GB resumes everything arrives with no restart and the images are equal.
// Also: a target journal below the minimum in an older node.json is raised at start, with
// a log line. Push and pull.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import { heldLogIntervalMs, journalBytesMin } from "../../src/core/limits.ts";
import type { GroupInfo, PairInfo } from "../../src/mgmt/control.ts";
import { assertSameImages, pairWait } from "./drill-lib.ts";
import { cliOk, mgmtJson, startNode, waitFor, type RunningNode } from "./harness.ts";

const MiB = 1024 * 1024;
/** More than the secondary's journal (64 MiB) plus the primary's (64 MiB): some host writes are held. */
const writes = 150;

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfo;
}

async function groupInfo(node: RunningNode, group: string): Promise<GroupInfo> {
  const { groups } = await mgmtJson(node.mgmtUrl, "/v1/groups") as { groups: GroupInfo[] };
  const found = groups.find((g) => g.name === group);
  assert.ok(found !== undefined, `group ${group} listed`);
  return found;
}

async function metric(node: RunningNode, name: string, group: string): Promise<number> {
  const text = await (await fetch(`${node.mgmtUrl}/metrics`)).text();
  const match = new RegExp(`^${name}\\{[^}]*group="${group}"[^}]*\\} (\\S+)$`, "m").exec(text);
  return match === null ? Number.NaN : Number(match[1]);
}

function logEvents(node: RunningNode, event: string): number {
  return fs.readFileSync(node.logFile, "utf8").split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

for (const transfer of ["push", "pull"] as const) {
  void test(`${transfer}: a full secondary journal holds the pair back with reasons on both sides and resumes by itself`, { timeout: 120_000 }, async (t) => {
    const secondary = await startNode({ id: `jf-${transfer}-s`, writeTime: "clock" });
    const primary = await startNode({ id: `jf-${transfer}-p`, writeTime: "clock" });
    await cliOk(["volume", "create", "a", "--size", "8M"], { node: primary.mgmtUrl });
    await cliOk(["volume", "create", "b", "--size", "1M"], { node: primary.mgmtUrl });
    await cliOk(["group", "create", "GA", "--volumes", "a", "--journal-size", "64M"], { node: primary.mgmtUrl });
    await cliOk(["group", "create", "GB", "--volumes", "b"], { node: primary.mgmtUrl });
    await cliOk(["pair", "create", "GA", "--to", secondary.mgmtUrl, "--streams", "2", "--transfer", transfer], { node: primary.mgmtUrl, timeoutMs: 60_000 });
    await cliOk(["pair", "create", "GB", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 60_000 });

    // As the reproducer: shrink the secondary's journal of GA in node.json (16 MiB, as an
    // older version allowed); it is raised to the minimum at start, with a log line.
    await secondary.stop();
    const metaPath = path.join(secondary.dataDir, "node.json");
    const meta = JSON.parse(fs.readFileSync(metaPath, "utf8")) as { groups: { name: string; journalBytesMax: number }[] };
    const ga = meta.groups.find((g) => g.name === "GA");
    assert.ok(ga !== undefined);
    ga.journalBytesMax = 16 * MiB;
    fs.writeFileSync(metaPath, JSON.stringify(meta, null, 2) + "\n");
    await secondary.restart();
    assert.equal(logEvents(secondary, "journal_limit_raised"), 1, "the raise is logged once");
    assert.equal((await groupInfo(secondary, "GA")).journalBytesMax, journalBytesMin, "the target journal is raised to the minimum");
    await waitFor("GA streams back", async () => (await pair(primary, "GA")).link.connectedStreams >= 1, { timeoutMs: 20_000 });

    await cliOk(["pair", "suspend", "GB"], { node: primary.mgmtUrl });
    const client = await HostClient.connect({ port: primary.hostPort });
    const volume = await client.open("a");
    let answered = 0;
    let failure: unknown;
    const pending = Array.from({ length: writes }, (_, i) => {
      const block = Buffer.alloc(MiB, (i % 250) + 1);
      return volume.write((i % 8) * MiB, block).then(() => {
        answered += 1;
      }, (error: unknown) => {
        failure = error;
      });
    });

    // Both sides say why; the secondary never takes more than its journal holds.
    let seen: { s: PairInfo; p: PairInfo } | undefined;
    await waitFor("reasons on both sides and writes held", async () => {
      const [s, p] = await Promise.all([pair(secondary, "GA"), pair(primary, "GA")]);
      assert.ok(s.journalBytes <= s.journalBytesMax, `the secondary's journal stays within its limit (${s.journalBytes} of ${s.journalBytesMax})`);
      seen = { s, p };
      return s.reason !== null && /journal full/.test(s.reason) && p.reason !== null && /out of journal space/.test(p.reason) && p.heldWrites > 0;
    }, { timeoutMs: 30_000, intervalMs: 200 }).catch((error: unknown) => {
      throw new Error(`${String(error)}; last: ${JSON.stringify(seen)}`);
    });
    assert.ok(seen !== undefined);
    t.diagnostic(`secondary: ${seen.s.reason}`);
    t.diagnostic(`primary: ${seen.p.reason}`);
    assert.match(seen.s.reason ?? "", /held by group GB/, "the secondary names the group that holds reflection");
    assert.doesNotMatch(seen.p.reason ?? "", /unreachable/, "the primary does not call a full secondary unreachable");
    assert.ok(answered < writes && failure === undefined, "writes are held, none failed");
    const pGroup = await groupInfo(primary, "GA");
    assert.ok(pGroup.heldWrites > 0 && pGroup.reason !== null, `group list shows the held writes and why (${JSON.stringify(pGroup)})`);
    assert.ok(await metric(primary, "tidemark_group_held_writes", "GA") > 0, "the held-writes metric shows them");
    const health = await mgmtJson(primary.mgmtUrl, "/v1/health") as { status: string; reasons?: string[] };
    assert.equal(health.status, "degraded", `health is degraded while writes are held (${JSON.stringify(health)})`);
    assert.equal((await mgmtJson(secondary.mgmtUrl, "/v1/health") as { status: string }).status, "degraded", "and on the secondary while its journal is full");

    // GB comes back: reflection frees the secondary's journal and GA moves on by itself.
    await cliOk(["pair", "resume", "GB"], { node: primary.mgmtUrl });
    await Promise.all(pending);
    assert.equal(failure, undefined, "no write failed");
    assert.equal(answered, writes);
    await volume.flush();
    await client.close();
    await pairWait(primary, "GA", "60s");
    await waitFor("the reasons to clear on both sides", async () => {
      const [s, p] = await Promise.all([pair(secondary, "GA"), pair(primary, "GA")]);
      return s.reason === null && p.reason === null ? true : `secondary: ${s.reason}; primary: ${p.reason}`;
    }, { timeoutMs: 10_000, intervalMs: 200 }).then((v) => assert.equal(v, true));
    assert.equal(await metric(primary, "tidemark_group_held_writes", "GA"), 0);
    assert.equal((await mgmtJson(primary.mgmtUrl, "/v1/health") as { status: string }).status, "ok");
    await assertSameImages(primary, secondary, "a");
    // One log line per change of state, not per write or per batch.
    assert.ok(logEvents(secondary, "secondary_journal_full") >= 1 && logEvents(secondary, "secondary_journal_full") <= 3, "the secondary logs the full journal once per episode");
    // The last held-writes line comes at most heldLogIntervalMs after the one before it.
    await waitFor("the log to end its last hold", () => logEvents(primary, "writes_held") === logEvents(primary, "writes_released"), { timeoutMs: heldLogIntervalMs + 5_000 });
    assert.ok(logEvents(primary, "writes_held") >= 1 && logEvents(primary, "writes_held") <= 3, `the primary logs held writes once per episode (${logEvents(primary, "writes_held")})`);
    assert.equal(logEvents(primary, "writes_held"), logEvents(primary, "writes_released"), "every hold is followed by a release");
    await primary.stop();
    await secondary.stop();
  });
}
