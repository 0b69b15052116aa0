// Issue 8, kind 3 (joining a consistency domain), from ../shared/repro/late-pair-copy-window.ts:
// a group paired later than another was counted consistent with it while the other had
// already reflected past its cut. GB's COPY_DONE is held on the replication link (the
// window made wide); b1 on GB is answered, then a1 on GA, and GA reflects a1 alone; the
// primary is lost before b1 arrives. Before the fix `takeover GA,GB` succeeded with a1 and
// without b1 (I1 broken). Now GB joins with a join point (the highest position GA had
// reflected), its status says it is not consistent with the others yet, and a takeover of
// both is refused with that reason; each alone is consistent, and taking GA alone detaches it
// from GB and says so. The verdict stays: no image holds a1 without b1.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { readRange } from "./drill-lib.ts";
import { cli, cliOk, mgmtJson, startNode, waitFor, type RunningNode } from "./harness.ts";
import { ReplProxy } from "./repl-proxy.ts";

const copyDoneType = 11;

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfo;
}

void test("a group paired late is not consistent with the domain until it reflected past its join point; a takeover of both is refused with the reason", { timeout: 120_000 }, async () => {
  const proxy = await ReplProxy.start();
  proxy.keepHeld = true;
  const secondary = await startNode({ id: "lj-s", writeTime: "clock", extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] });
  proxy.setTarget(secondary.replPort);
  let copyDoneHeld = false;
  proxy.policy = (conn, direction, type) => {
    if (conn.group === "GB" && direction === "toSecondary" && type === copyDoneType) {
      copyDoneHeld = true;
      return "hold";
    }
    return "forward";
  };
  const primary = await startNode({ id: "lj-p", writeTime: "clock" });
  for (const [volume, group] of [["a", "GA"], ["b", "GB"]] as const) {
    await cliOk(["volume", "create", volume, "--size", "1M"], { node: primary.mgmtUrl });
    await cliOk(["group", "create", group, "--volumes", volume], { node: primary.mgmtUrl });
  }
  const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
  const a = await client.open("a");
  const b = await client.open("b");
  const block = (n: number): Buffer => Buffer.alloc(4096, n);

  await cliOk(["pair", "create", "GA", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 60_000 });
  await a.write(0, block(7), { fua: true });
  await waitFor("a0 reflected", async () => (await pair(secondary, "GA")).reflectedSequence >= 1, { timeoutMs: 20_000 });

  // GB is paired later; its copy finishes and COPY_DONE is held on the link.
  const create = cli(["pair", "create", "GB", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 60_000 });
  await waitFor("GB's COPY_DONE held on the link", () => copyDoneHeld, { timeoutMs: 60_000 });
  // Dependent writes after GB's copy cut: b1 answered, then a1.
  await b.write(0, block(1), { fua: true });
  await a.write(0, block(1), { fua: true });
  await waitFor("a1 reflected on the secondary (GB is not in the domain yet)", async () => (await readRange(secondary, "a", 0, 1))[0] === 1, { timeoutMs: 20_000 });

  // The held COPY_DONE reaches the secondary and the primary is lost at once: b1 is sent only
  // once the secondary has acknowledged the copy (after its fdatasyncs and the join), so it never arrives.
  for (const conn of proxy.connections.filter((c) => c.group === "GB")) proxy.release(conn, "toSecondary");
  await primary.kill();
  await client.close().catch(() => undefined);
  await create.catch(() => undefined);
  await waitFor("GB joined on the secondary", async () => (await pair(secondary, "GB")).state !== "copying", { timeoutMs: 20_000 });
  const gb = await pair(secondary, "GB");
  assert.match(gb.reason ?? "", /joined its consistency domain at .*: not consistent with the other groups until it has reflected a record past sequence \d+ at or past position/, JSON.stringify(gb));

  // --force: the primary is gone (the site is declared lost); the join rule is checked first.
  const both = await cli(["pair", "takeover", "GA,GB", "--force"], { node: secondary.mgmtUrl, timeoutMs: 60_000 });
  assert.notEqual(both.code, 0, `a takeover of both is refused: ${both.stdout}`);
  assert.match(both.stderr, /group GB is not consistent with GA yet: .*Take it over without the others .*\[TM_ERR_STATE\]/s, both.stderr);
  // Nothing changed: both still secondaries.
  assert.notEqual((await pair(secondary, "GA")).state, "takeover");
  assert.notEqual((await pair(secondary, "GB")).state, "takeover");

  // Each alone is consistent; taking GA over without GB detaches it and says so.
  const ga = await cliOk(["pair", "takeover", "GA", "--force"], { node: secondary.mgmtUrl, timeoutMs: 60_000 });
  assert.match(ga.stdout, /GA: kept through sequence \d+.*now takeover.*; taken over without the rest of its consistency domain: detached from GB/, ga.stdout);
  const gbAlone = await cliOk(["pair", "takeover", "GB", "--force"], { node: secondary.mgmtUrl, timeoutMs: 60_000 });
  assert.match(gbAlone.stdout, /GB: kept through sequence \d+/, gbAlone.stdout);
  // The verdict of the reproducer: no one image of both holds a1 without b1 (they were not taken at one cut).
  assert.equal((await readRange(secondary, "a", 0, 1))[0], 1, "GA alone keeps a1");
  assert.notEqual((await readRange(secondary, "b", 0, 1))[0], 1, "GB alone never got b1");
});
