// Issue 9: /metrics on both nodes of a pair, scraped in each state the pair reaches by what
// operators and faults do to it, and compared with what `pair status` says at the same time:
// held (on the secondary, behind a suspended member of its consistency domain), suspended,
// disconnected (each side, its peer killed -9 and started again), fenced and takeover (a
// takeover with the primary reachable), failed (`pair unfence --force` after it). Replicating
// and suspended have their values checked in metrics.test.ts, held on the primary (journal
// full) in wedge-held-writes.test.ts, stopped (disk full) in disk-full.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cliOk, mgmtJson, waitFor, type RunningNode } from "./harness.ts";
import { describePair, makeGroup, pairCreate, pairInfo, pairWait, startPairNodes, waitPairState, type PairInfoView } from "./drill-lib.ts";
import { scrape, stateOf, value } from "./metrics-lib.ts";
import { HostClient } from "../../src/index.ts";

const kib = 1024;

/**
 * Scrapes `node` and checks, for each of `groups`, that `tidemark_pair_state` has exactly
 * `expected` at 1 and agrees with `pair status`, as do the lag, held-writes and link series;
 * returns the node's pair views.
 */
async function agree(node: RunningNode, role: "primary" | "secondary", expected: Record<string, string>): Promise<Map<string, PairInfoView>> {
  const views = new Map<string, PairInfoView>();
  for (const [group, state] of Object.entries(expected)) {
    // The state first, then a scrape and a status read that must agree: retried while the two
    // reads straddle a change (a lag that moved between them).
    await waitPairState(node, group, state as PairInfoView["state"]);
    const { text, info } = await waitFor(`${node.id}'s metrics for ${group} agree with its pair status`, async () => {
      const before = await pairInfo(node, group);
      const scraped = await scrape(node);
      const after = await pairInfo(node, group);
      const compared = (view: PairInfoView): string => JSON.stringify([view.state, view.lagRecords, view.lagBytes, view.heldWrites, view.link.connectedStreams, role === "secondary" ? view.consistentAsOf : null]);
      return compared(before) === compared(after) ? { text: scraped, info: after } : undefined;
    }, { timeoutMs: 15_000 });
    const labels = { group, role };
    assert.equal(stateOf(text, group, role), state, `${node.id} ${group}: ${describePair(info)}`);
    assert.equal(value(text, "tidemark_pair_lag_records", labels), info.lagRecords, `${group} lag records`);
    assert.equal(value(text, "tidemark_pair_lag_bytes", labels), info.lagBytes, `${group} lag bytes`);
    assert.equal(value(text, "tidemark_pair_link_streams_connected", labels), info.link.connectedStreams, `${group} streams`);
    assert.equal(value(text, "tidemark_group_held_writes", { group }), info.heldWrites, `${group} held writes`);
    // Absent while unknown (null in status: copying, or no stamped record reflected yet).
    if (info.consistentAsOf !== null && role === "secondary") assert.equal(value(text, "tidemark_pair_consistent_as_of_seconds", labels), Date.parse(info.consistentAsOf) / 1000, `${group} consistent as of`);
    views.set(group, info);
  }
  return views;
}

async function health(node: RunningNode): Promise<{ status: string; reasons?: string[] }> {
  return await mgmtJson(node.mgmtUrl, "/v1/health") as { status: string; reasons?: string[] };
}

void test("metrics in every state a pair reaches: held, suspended, disconnected (each side), fenced, takeover, failed; both nodes agree with pair status", { timeout: 240_000 }, async (t) => {
  const { a, b } = await startPairNodes();
  for (const [group, volume] of [["g1", "v1"], ["g2", "v2"], ["gf", "vf"]] as const) {
    await makeGroup(a, group, [{ name: volume, size: "4M" }]);
    await pairCreate(a, group, b);
  }
  // One connection a write: the primary is killed and started again on the way.
  const write = async (volume: string, offsetBytes: number, byte: number): Promise<void> => {
    const host = await HostClient.connect({ host: "127.0.0.1", port: a.hostPort });
    try {
      await (await host.open(volume)).write(offsetBytes, Buffer.alloc(64 * kib, byte));
    } finally {
      await host.close();
    }
  };
  for (const group of ["g1", "g2", "gf"]) await pairWait(a, group);
  await agree(a, "primary", { g1: "replicating", g2: "replicating", gf: "replicating" });
  await agree(b, "secondary", { g1: "replicating", g2: "replicating", gf: "replicating" });
  assert.equal((await health(a)).status, "ok");

  // g1 suspended on the primary: on the secondary g2's records wait behind g1 (same domain).
  await cliOk(["pair", "suspend", "g1"], { node: a.mgmtUrl });
  await write("v1", 0, 0x11);
  await write("v2", 0, 0x21);
  await write("v2", 64 * kib, 0x22);
  const suspendedA = await agree(a, "primary", { g1: "suspended", g2: "replicating" });
  assert.equal(suspendedA.get("g1")?.lagRecords, 1, "the primary counts the write it kept");
  const heldB = await agree(b, "secondary", { g2: "held" });
  assert.equal(heldB.get("g2")?.lagRecords, 2, "both writes of g2 wait on the secondary");
  assert.match(heldB.get("g2")?.reason ?? "", /g1/, "the held group names its holder");
  const degradedB = await health(b);
  assert.equal(degradedB.status, "degraded");
  assert.ok(degradedB.reasons?.some((reason) => reason.includes("g2")), JSON.stringify(degradedB));
  await cliOk(["pair", "resume", "g1"], { node: a.mgmtUrl });
  for (const group of ["g1", "g2"]) await pairWait(a, group);
  await agree(b, "secondary", { g1: "replicating", g2: "replicating" });

  // The secondary killed -9: the primary shows disconnected and counts what it accepts meanwhile.
  await b.kill();
  await write("v1", 128 * kib, 0x12);
  const cutA = await agree(a, "primary", { g1: "disconnected", g2: "disconnected", gf: "disconnected" });
  assert.equal(cutA.get("g1")?.lagRecords, 1);
  assert.equal(cutA.get("g1")?.lagBytes, 64 * kib);
  assert.equal((await health(a)).status, "degraded");
  await b.restart();
  await pairWait(a, "g1");
  await agree(a, "primary", { g1: "replicating", g2: "replicating", gf: "replicating" });

  // The primary killed -9: the secondary shows disconnected; its consistent-as-of time stays.
  await a.kill();
  const cutB = await agree(b, "secondary", { g1: "disconnected", g2: "disconnected", gf: "disconnected" });
  assert.ok(cutB.get("g1")?.consistentAsOf !== null, "a consistent-as-of time is known");
  await a.restart();
  await agree(b, "secondary", { g1: "replicating", g2: "replicating", gf: "replicating" });
  await agree(a, "primary", { g1: "replicating", g2: "replicating", gf: "replicating" });

  // A takeover of gf with the primary reachable fences it there; unfence --force ends the pair.
  await cliOk(["pair", "takeover", "gf"], { node: b.mgmtUrl, timeoutMs: 120_000 });
  await agree(a, "primary", { gf: "fenced", g1: "replicating" });
  await agree(b, "secondary", { gf: "takeover", g1: "replicating" });
  const fencedHealth = await health(a);
  assert.equal(fencedHealth.status, "degraded");
  assert.ok(fencedHealth.reasons?.some((reason) => reason.includes("gf")), JSON.stringify(fencedHealth));
  await cliOk(["pair", "unfence", "gf", "--force"], { node: a.mgmtUrl });
  const failed = await agree(a, "primary", { gf: "failed" });
  t.diagnostic(`after unfence --force: ${describePair(failed.get("gf") as PairInfoView)}`);
  // The rest carries on.
  await write("v2", 0, 0x23);
  await pairWait(a, "g2");
  await agree(b, "secondary", { g1: "replicating", g2: "replicating" });
});
