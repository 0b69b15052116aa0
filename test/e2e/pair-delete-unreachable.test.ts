// `pair delete --force` on the primary while the secondary is down: the primary owes the
// secondary the pair's end (node.json `pairEndsOwed`, kept across its own restart) and tells it
// once it can reach it. Before, the secondary's group waited for ever for a primary that would
// never come ("disconnected ... reconnects by itself") and held every other group of its
// consistency domain ("bring it back (resume it on the primary)": impossible).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { HostClient } from "../../src/client/host-client.ts";
import { cli, cliOk, waitFor, type RunningNode } from "./harness.ts";
import { makeGroup, pairCreate, pairInfo, pairWait, runDrill, startPairNodes, waitPairState } from "./drill-lib.ts";

async function write(node: RunningNode, volume: string, byte: number): Promise<void> {
  const client = await HostClient.connect({ port: node.hostPort });
  try {
    await (await client.open(volume)).write(0, Buffer.alloc(64 * 1024, byte), { fua: true });
  } finally {
    await client.close();
  }
}

function owedEnds(node: RunningNode): unknown[] {
  const metadata = JSON.parse(readFileSync(path.join(node.dataDir, "node.json"), "utf8")) as { pairEndsOwed?: unknown[] };
  return metadata.pairEndsOwed ?? [];
}

void test("pair delete --force with the secondary down: the primary tells it once it is back (across its own restart); the rest of the domain goes on", { timeout: 180_000 }, (t) => runDrill(t, async () => {
  const { a, b } = await startPairNodes();
  for (const [group, volume] of [["g1", "v1"], ["g2", "v2"]] as const) {
    await makeGroup(a, group, [{ name: volume, size: "4M" }]);
    await pairCreate(a, group, b);
    await write(a, volume, 0x11);
    await pairWait(a, group);
  }

  await b.kill();
  const deleted = await cliOk(["pair", "delete", "g1", "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  t.diagnostic(deleted.stdout.trim());
  assert.match(deleted.stdout, /not reached .*: this node tells it once it can \(every 15 s\); to end it there now: tidemark pair delete g1 --force --node http/);
  assert.equal(owedEnds(a).length, 1, "the end owed is saved");
  // The primary is killed and started again before the secondary is back: the end is still owed.
  await a.kill();
  await a.restart();
  assert.equal(owedEnds(a).length, 1, "still owed after a restart");
  await write(a, "v2", 0x22);

  await b.restart();
  await waitFor("the secondary learns that g1's pair is deleted", async () => {
    const answer = await fetch(`${b.mgmtUrl}/v1/pairs/g1`);
    return answer.status === 404 ? true : undefined;
  }, { timeoutMs: 60_000 });
  await waitFor("the primary to forget the end it delivered", () => (owedEnds(a).length === 0 ? true : undefined), { timeoutMs: 10_000 });
  // g2 is not held behind g1: it catches up and replicates.
  await pairWait(a, "g2");
  const g2 = await waitPairState(b, "g2", "replicating");
  assert.equal(g2.reason, null, `g2 on the secondary: ${String(g2.reason)}`);
  // g1 on the secondary keeps the image, read-only, as after any pair delete.
  const groups = JSON.parse((await cliOk(["group", "list", "--json"], { node: b.mgmtUrl })).stdout) as { groups: { name: string; readOnly?: unknown }[] };
  assert.ok(groups.groups.some((g) => g.name === "g1"), "the group stays on the secondary");
  assert.equal((await pairInfo(a, "g2")).state, "replicating");

  // Pairing g1 again into the group the delete left says what to type, in order, and each step works.
  const again = await cli(["pair", "create", "g1", "--to", b.mgmtUrl, "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(again.code, 1, again.stderr);
  const steps = `tidemark pair delete g1 --promote --node ${b.mgmtUrl}, then tidemark group delete g1 --node ${b.mgmtUrl} (its volumes stay), then this pair create again with --force`;
  assert.ok(again.stderr.includes(`group g1 already exists on node ${b.id} (read-only: the image a deleted pair left); choose another --remote-group. To pair into it: ${steps}`), again.stderr);
  await cliOk(["pair", "delete", "g1", "--promote"], { node: b.mgmtUrl });
  await cliOk(["group", "delete", "g1"], { node: b.mgmtUrl });
  await cliOk(["pair", "create", "g1", "--to", b.mgmtUrl, "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  await waitPairState(a, "g1", "replicating");
  // A volume of a paired group: the whole way out, in order.
  const volume = await cli(["volume", "delete", "v2"], { node: a.mgmtUrl });
  assert.match(volume.stderr, /volume v2 is in group g2, which has a pair: end it first.*: tidemark pair delete g2; tidemark group delete g2; tidemark volume delete v2 \[TM_ERR_STATE\]/);
}));
