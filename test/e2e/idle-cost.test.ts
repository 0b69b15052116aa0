// Proves that idle pairs cost next to nothing (issue 6, kind 8: 20 idle paired groups took
// 7-9 % of a core on each node, from time advances that every group's time advance called
// for again): with 20 groups paired and nothing written, each node uses under 3 % of a core
// over 10 s (user + system time from /proc, so the machine's other load does not count),
// and a write to one group is still reflected promptly (the idle groups' time advances
// follow host writes, not each other).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { NbdClient, pairInfo, startPairNodes } from "./drill-lib.ts";
import { cliOk, sleep, waitFor, type RunningNode } from "./harness.ts";

const groups = 20;
const measureMs = 10_000;
const cpuShareMax = 0.03;

/** CPU time (user + system) of a process so far, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${String(pid)}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  // utime and stime are fields 14 and 15 of /proc/PID/stat (1-based); fields[0] here is field 3.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function cpuShare(node: RunningNode, windowMs: number): Promise<number> {
  const before = cpuSeconds(node.pid);
  await sleep(windowMs);
  return (cpuSeconds(node.pid) - before) / (windowMs / 1000);
}

void test(`${String(groups)} idle paired groups cost each node under 3 % of a core, and a write is still reflected promptly`, { timeout: 240_000 }, async (t) => {
  const { a, b } = await startPairNodes();
  for (let i = 1; i <= groups; i++) {
    await cliOk(["volume", "create", `v${String(i)}`, "--size", "8M"], { node: a.mgmtUrl });
    await cliOk(["group", "create", `g${String(i)}`, "--volumes", `v${String(i)}`], { node: a.mgmtUrl });
    await cliOk(["pair", "create", `g${String(i)}`, "--to", b.mgmtUrl, "--streams", "2"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  }
  await sleep(3_000); // the copies' reopens settle
  const [shareA, shareB] = await Promise.all([cpuShare(a, measureMs), cpuShare(b, measureMs)]);
  t.diagnostic(`idle: A ${(shareA * 100).toFixed(1)} % of a core, B ${(shareB * 100).toFixed(1)} % of a core`);
  assert.ok(shareA < cpuShareMax, `A uses ${(shareA * 100).toFixed(1)} % of a core with ${String(groups)} idle pairs`);
  assert.ok(shareB < cpuShareMax, `B uses ${(shareB * 100).toFixed(1)} % of a core with ${String(groups)} idle pairs`);

  const client = await NbdClient.connect(a.nbdPort, "v7");
  await client.write(0, Buffer.alloc(4096, 7), { fua: true });
  await client.close();
  const accepted = (await pairInfo(a, "g7")).acceptedSequence;
  const startMs = performance.now();
  await waitFor("the write reflected on B", async () => (await pairInfo(b, "g7")).reflectedSequence >= accepted, { timeoutMs: 5_000, intervalMs: 20 });
  t.diagnostic(`a write to one of ${String(groups)} groups reflected after ${(performance.now() - startMs).toFixed(0)} ms`);
});
