// Proves the lag figures stay true across what an operator does to real nodes (issue 9 item 1;
// docs/operations.md, "Consistent as of"): a primary restarted (cleanly, then by a crash) while
// its secondary is down rebuilds its lag exactly from the journal (the same records, bytes,
// reflected sequence and consistent-as-of as before, lag seconds still growing, not 0), and
// exact again once the secondary is back; a fenced primary restarted keeps what it knew
// reflected. On the secondary, an idle two-group domain shows 0 s of lag (time advances
// waiting for the other member's next one are no lag), and a group attached while its pair is
// suspended (cut off) keeps its consistent-as-of, with lag at least its age.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { NbdClient, describePair, makeGroup, pairCreate, pairInfo, pairWait, startPairNodes, takeover } from "./drill-lib.ts";
import { cliOk, sleep, waitFor, type RunningNode } from "./harness.ts";

async function writeSizes(node: RunningNode, volume: string, sizes: readonly number[], fill: number): Promise<void> {
  const client = await NbdClient.connect(node.nbdPort, volume);
  try {
    let offset = 64 * 1024;
    for (const size of sizes) {
      await client.write(offset, Buffer.alloc(size, fill));
      offset += size;
    }
    await client.flush();
  } finally {
    await client.close();
  }
}

function figures(info: PairInfo): string {
  return `${describePair(info)}; reflected ${info.reflectedSequence}, lag ${info.lagRecords} records ${info.lagBytes} bytes ${info.lagSeconds} s, consistent as of ${String(info.consistentAsOf)}`;
}

void test("a primary restarted while its secondary is down rebuilds its lag exactly from the journal, and a fenced one keeps what it knew", { timeout: 240_000 }, async (t) => {
  const { a, b } = await startPairNodes();
  await makeGroup(a, "gq", [{ name: "vq", size: "16M" }]);
  await pairCreate(a, "gq", b, { streams: 2 });
  // Records in the journal the secondary has reflected: a restart must not count them.
  for (let i = 0; i < 10; i++) await writeSizes(a, "vq", [4096, 4096], 1 + i);
  await pairWait(a, "gq", "30s");
  await waitFor("A knows everything reflected", async () => {
    const info = await pairInfo(a, "gq");
    return info.lagRecords === 0 ? info : undefined;
  }, { timeoutMs: 30_000 });

  await b.kill();
  await writeSizes(a, "vq", [4096, 4096, 8192], 0x77);
  const before = await pairInfo(a, "gq");
  t.diagnostic(`before the restart: ${figures(before)}`);
  assert.deepEqual([before.lagRecords, before.lagBytes], [3, 16384], figures(before));
  // Longer than pairReflectedSaveIntervalMs (2 s): what B last reported is saved by then, so a
  // crash first (no stop to save it) rebuilds the same figures.
  await sleep(2_500);

  for (const how of ["a crash", "a clean stop"] as const) {
    if (how === "a clean stop") await a.stop();
    else await a.kill();
    await a.restart();
    const after = await pairInfo(a, "gq");
    t.diagnostic(`after ${how}: ${figures(after)}`);
    assert.deepEqual([after.lagRecords, after.lagBytes], [3, 16384], `after ${how}, exactly the 3 host writes B has not reflected: ${figures(after)}`);
    assert.equal(after.reflectedSequence, before.reflectedSequence, `after ${how}, reflected is what A last knew, not 0`);
    assert.equal(after.consistentAsOf, before.consistentAsOf, `after ${how}, consistent-as-of is still just before the oldest unreflected write`);
    assert.ok(after.lagSeconds >= before.lagSeconds + 1, `after ${how}, lag seconds is the age of the oldest unreflected write (${after.lagSeconds} s), not 0`);
  }

  await b.restart();
  await pairWait(a, "gq", "60s");
  const caughtUp = await waitFor("exact again once B reports in", async () => {
    const info = await pairInfo(a, "gq");
    return info.lagRecords === 0 ? info : undefined;
  }, { timeoutMs: 30_000 });
  assert.deepEqual([caughtUp.lagBytes, caughtUp.lagSeconds], [0, 0], figures(caughtUp));

  // A takeover on B fences A; A restarted still knows everything was reflected (the old code: reflected 0, lag = the whole journal).
  await takeover(b, ["gq"]);
  const fenced = await waitFor("A fenced", async () => {
    const info = await pairInfo(a, "gq");
    return info.state === "fenced" ? info : undefined;
  }, { timeoutMs: 30_000 });
  await a.stop();
  await a.restart();
  const fencedAfter = await pairInfo(a, "gq");
  t.diagnostic(`fenced, after a restart: ${figures(fencedAfter)}`);
  assert.equal(fencedAfter.state, "fenced");
  assert.ok(fencedAfter.reflectedSequence >= fenced.reflectedSequence && fencedAfter.reflectedSequence > 0, figures(fencedAfter));
  assert.deepEqual([fencedAfter.lagRecords, fencedAfter.lagBytes, fencedAfter.lagSeconds], [0, 0, 0], figures(fencedAfter));
});

void test("on the secondary: an idle two-group domain lags 0 s; a group attached while cut off keeps its consistent-as-of and lags at least its age", { timeout: 180_000 }, async (t) => {
  const { a, b } = await startPairNodes();
  const on = { node: a.mgmtUrl };
  for (const g of [1, 2]) {
    await makeGroup(a, `g${g}`, [{ name: `v${g}`, size: "4M" }]);
    await pairCreate(a, `g${g}`, b, { streams: 1 });
  }
  await writeSizes(a, "v1", [4096], 1);
  await writeSizes(a, "v2", [4096], 2);
  await pairWait(a, "g1", "30s");
  await pairWait(a, "g2", "30s");

  // Idle: each group's last time advance waits for the other's next one (up to 5 s). Before,
  // lag seconds climbed 0 -> 5 s over and over with 0 records.
  let worst = 0;
  const until = Date.now() + 12_000;
  while (Date.now() < until) {
    for (const g of ["g1", "g2"]) {
      const info = await pairInfo(b, g);
      assert.equal(info.lagRecords, 0, figures(info));
      worst = Math.max(worst, info.lagSeconds);
    }
    await sleep(250);
  }
  t.diagnostic(`worst lag seconds on the idle secondary over 12 s: ${worst}`);
  assert.ok(worst < 1, `an idle pair lags 0 s (at most a write's flight), saw ${worst} s`);

  // g2 suspended on the primary: cut off on B. Detach, then attach it while still cut off.
  await cliOk(["pair", "suspend", "g2"], on);
  await cliOk(["pair", "detach", "g2"], { node: b.mgmtUrl });
  const cut = await waitFor("g2 disconnected on B with lag past 2 s", async () => {
    const info = await pairInfo(b, "g2");
    return info.state === "disconnected" && info.lagSeconds > 2 ? info : undefined;
  }, { timeoutMs: 30_000 });
  t.diagnostic(`detached and cut off: ${figures(cut)}`);
  assert.notEqual(cut.consistentAsOf, null, figures(cut));
  await cliOk(["pair", "attach", "g2"], { node: b.mgmtUrl });
  const attached = await pairInfo(b, "g2");
  t.diagnostic(`attached, still cut off: ${figures(attached)}`);
  assert.equal(attached.state, "disconnected", figures(attached));
  assert.equal(attached.consistentAsOf, cut.consistentAsOf, `consistent-as-of stays what it was: ${figures(attached)}`);
  const ageSeconds = (Date.now() - Date.parse(attached.consistentAsOf ?? "")) / 1000;
  assert.ok(attached.lagSeconds >= cut.lagSeconds && attached.lagSeconds >= ageSeconds - 1, `cut off, lag is at least the age of consistent-as-of (${ageSeconds.toFixed(1)} s): ${figures(attached)}`);

  await cliOk(["pair", "resume", "g2"], on);
  await pairWait(a, "g2", "30s");
  await writeSizes(a, "v2", [4096], 3);
  await waitFor("g2 back in step", async () => {
    const info = await pairInfo(b, "g2");
    return info.state === "replicating" && info.lagRecords === 0 && info.lagSeconds < 1 ? info : undefined;
  }, { timeoutMs: 30_000 });
});
