// Proves that a step of the wall clock changes nothing but the write times shown (issue 6,
// kind 4): with two groups paired (one written, one idle, so the idle one lives on time
// advances), the primary's and then the secondary's wall clocks step back and forward an
// hour (a preload that moves Date, never the monotonic clocks); after each step a write is
// reflected within seconds, and under `--write-time clock` the recorded write time never
// goes back. Also: a host write stamped far in the future (the year 2255) is lowered to the
// node's clock plus a minute, with a log line, so it is not recorded for good.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { HostClient } from "../../src/client/host-client.ts";
import { makeGroup, pairCreate, pairInfo, startPairNodes } from "./drill-lib.ts";
import { mgmtJson, startNode, waitFor, type RunningNode } from "./harness.ts";

const preload = fileURLToPath(new URL("./support/clock-step-preload.mjs", import.meta.url));
const reflectWithinMs = 5_000;

async function recordedWriteTimeUs(node: RunningNode): Promise<number> {
  return ((await mgmtJson(node.mgmtUrl, "/v1/status")) as { recordedWriteTimeUs: number }).recordedWriteTimeUs;
}

void test("wall clock steps of an hour, back and forward, on the primary and the secondary: reflection goes on within seconds, write times never go back", { timeout: 120_000 }, async (t) => {
  const { a, b } = await startPairNodes({ a: { writeTime: "clock", nodeArgs: ["--import", preload] }, b: { nodeArgs: ["--import", preload] } });
  await makeGroup(a, "ga", [{ name: "va", size: "4M" }]);
  await makeGroup(a, "gb", [{ name: "vb", size: "4M" }]);
  await pairCreate(a, "ga", b, { streams: 2 });
  await pairCreate(a, "gb", b, { streams: 2 }); // never written: it moves only by time advances
  const host = await HostClient.connect({ port: a.hostPort });
  const va = await host.open("va");
  try {
    let round = 0;
    for (const [node, signal, what] of [
      [a, "SIGUSR2", "primary back"], [a, "SIGUSR1", "primary forward"], [a, "SIGUSR1", "primary forward again"],
      [b, "SIGUSR2", "secondary back"], [b, "SIGUSR1", "secondary forward"], [a, "SIGUSR2", "primary back once more"],
    ] as const) {
      const timeBefore = await recordedWriteTimeUs(a);
      process.kill(node.pid, signal);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await va.write(0, Buffer.alloc(4096, ++round), { fua: true });
      const accepted = (await pairInfo(a, "ga")).acceptedSequence;
      const startMs = performance.now();
      await waitFor(`a write reflected after the wall clock stepped (${what})`, async () => (await pairInfo(b, "ga")).reflectedSequence >= accepted, { timeoutMs: reflectWithinMs, intervalMs: 50 });
      const timeAfter = await recordedWriteTimeUs(a);
      assert.ok(timeAfter >= timeBefore, `${what}: the recorded write time did not go back (${timeBefore} -> ${timeAfter})`);
      t.diagnostic(`${what}: reflected after ${(performance.now() - startMs).toFixed(0)} ms; recorded write time moved ${((timeAfter - timeBefore) / 1e6).toFixed(3)} s`);
    }
    assert.ok((await pairInfo(b, "gb")).arrivedSequence > 1, "the idle group kept moving on time advances");
  } finally {
    await host.close();
  }
});

void test("a host write time in the year 2255 is lowered to the node's clock plus a minute, with a log line, and not recorded for good", { timeout: 60_000 }, async () => {
  const node = await startNode({ id: "future" });
  await makeGroup(node, "g", [{ name: "v", size: "4M" }]);
  const host = await HostClient.connect({ port: node.hostPort });
  try {
    const volume = await host.open("v");
    const year2255Us = Date.UTC(2255, 0, 1) * 1000;
    await volume.write(0, Buffer.alloc(4096, 7), { writeTimeUs: year2255Us, fua: true });
    const recorded = await recordedWriteTimeUs(node);
    assert.ok(recorded < year2255Us, "the far-future time was not recorded");
    assert.ok(recorded <= (Date.now() + 61_000) * 1000, `the recorded time is at most a minute ahead of the clock (${new Date(recorded / 1000).toISOString()})`);
    await volume.write(4096, Buffer.alloc(4096, 8), { writeTimeUs: Date.now() * 1000, fua: true });
    const lines = readFileSync(node.logFile, "utf8").split("\n").filter((line) => line.includes("host_write_time_clamped"));
    assert.equal(lines.length, 1, "one log line says so");
    assert.match(lines[0] ?? "", /2255-01-01/);
  } finally {
    await host.close();
  }
});
