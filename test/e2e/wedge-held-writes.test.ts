// Proves no host write waits forever, and none waits without saying why (issue 6, kind 3).
//  1. A journal that cannot hold the largest request the front ends accept (32 MiB) is
//     refused at `group create`; at the smallest allowed size, back-to-back largest writes
//     (NBD and host protocol, alone and paired) are all answered. Before the fix a 16 MiB
//     journal was accepted and such a write hung forever with `group list` at 0 % and health
//     "ok" (and at 64 MiB, a second 32 MiB write waited behind the untrimmable first).
//  2. Writes held for a full journal are released when the secondary turns out to hold
//     everything: ACKs are black-holed (one way) while the journal fills, then the link comes
//     back and the handshake, not an ACK, moves the trim floor. Before the fix nothing woke
//     the held write (no ACK ever came: everything had been sent) and it waited forever.
//     While held: a reason in pair status and group list, one log line, the held-writes
//     metric and a degraded health; all gone once released.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import { heldLogIntervalMs, journalBytesMin } from "../../src/core/limits.ts";
import type { GroupInfo, PairInfo } from "../../src/mgmt/control.ts";
import { NbdClient, assertSameImages, pairWait } from "./drill-lib.ts";
import { cli, cliOk, mgmtJson, sleep, startNode, waitFor, type RunningNode } from "./harness.ts";
import { FrameType, ReplProxy } from "./repl-proxy.ts";
import { scrape, stateOf } from "./metrics-lib.ts";

const MiB = 1024 * 1024;
const largestWriteBytes = 32 * MiB;

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfo;
}

async function groupInfo(node: RunningNode, group: string): Promise<GroupInfo> {
  const { groups } = await mgmtJson(node.mgmtUrl, "/v1/groups") as { groups: GroupInfo[] };
  const found = groups.find((g) => g.name === group);
  assert.ok(found !== undefined, `group ${group} listed`);
  return found;
}

async function heldMetric(node: RunningNode, group: string): Promise<number> {
  const text = await (await fetch(`${node.mgmtUrl}/metrics`)).text();
  const match = new RegExp(`^tidemark_group_held_writes\\{[^}]*group="${group}"[^}]*\\} (\\S+)$`, "m").exec(text);
  return match === null ? Number.NaN : Number(match[1]);
}

/** write(2)-family calls the process made so far (/proc/PID/io). */
function writeSyscalls(pid: number): number {
  const match = /^syscw:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, "utf8"));
  return Number(match?.[1] ?? Number.NaN);
}

function logEvents(node: RunningNode, event: string): number {
  return fs.readFileSync(node.logFile, "utf8").split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

/** Resolves with the promise's value, or rejects once `ms` passed: a hang is a failure, not a timeout of the whole test. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}

void test("journal sizes that cannot hold the largest write are refused; largest writes never hang", { timeout: 90_000 }, async () => {
  const primary = await startNode({ id: "hw-big-p" });
  const secondary = await startNode({ id: "hw-big-s" });
  await cliOk(["volume", "create", "v", "--size", "256M"], { node: primary.mgmtUrl });
  await cliOk(["volume", "create", "w", "--size", "256M"], { node: primary.mgmtUrl });

  const refused = await cli(["group", "create", "g", "--volumes", "v", "--journal-size", "16M"], { node: primary.mgmtUrl });
  assert.notEqual(refused.code, 0, "a 16 MiB journal is refused");
  assert.match(refused.stderr, /--journal-size 16M is below the minimum of 64/, refused.stderr);
  const api = await fetch(`${primary.mgmtUrl}/v1/groups`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "g", volumes: ["v"], journalBytesMax: journalBytesMin - 1 }),
  });
  const apiText = await api.text();
  assert.equal(api.status, 400, apiText);
  assert.match(apiText, /largest write/, apiText);

  await cliOk(["group", "create", "g", "--volumes", "v", "--journal-size", "64M"], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "h", "--volumes", "w", "--journal-size", "64M"], { node: primary.mgmtUrl });
  await cliOk(["pair", "create", "h", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 60_000 });

  // Back to back, the largest writes: each must wait at most for a checkpoint (alone) or the
  // secondary (paired), never for ever.
  const nbd = await NbdClient.connect(primary.nbdPort, "v");
  const host = await HostClient.connect({ port: primary.hostPort });
  const paired = await host.open("w");
  for (let i = 0; i < 5; i++) {
    const data = Buffer.alloc(largestWriteBytes, i + 1);
    await within(20_000, `largest NBD write ${i + 1}`, nbd.write((i % 8) * largestWriteBytes, data));
    await within(20_000, `largest host write ${i + 1} to a paired group`, paired.write((i % 8) * largestWriteBytes, data));
  }
  await within(20_000, "five largest writes in flight at once", Promise.all(Array.from({ length: 5 }, (_, i) => paired.write(i * largestWriteBytes, Buffer.alloc(largestWriteBytes, 50 + i)))));
  await nbd.flush();
  await nbd.close();
  await paired.flush();
  await host.close();
  for (const name of ["g", "h"]) {
    const info = await groupInfo(primary, name);
    assert.equal(info.heldWrites, 0, `${name}: nothing held at the end`);
  }
  await pairWait(primary, "h", "60s");
  await assertSameImages(primary, secondary, "w");
  await primary.stop();
  await secondary.stop();
});

void test("writes held for a full journal are released when the handshake shows the secondary holds everything", { timeout: 90_000 }, async (t) => {
  const proxy = await ReplProxy.start();
  const secondary = await startNode({ id: "hw-rel-s", extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] });
  proxy.setTarget(secondary.replPort);
  const primary = await startNode({ id: "hw-rel-p" });
  await cliOk(["volume", "create", "v", "--size", "128M"], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v", "--journal-size", "64M"], { node: primary.mgmtUrl });
  await cliOk(["pair", "create", "g", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 60_000 });

  // Both streams reopened after the copy and their handshakes (GROUP_STATE) reached the primary.
  await waitFor("both replicating streams open", () => {
    const live = proxy.connections.filter((c) => !c.client.destroyed);
    return live.length === 2 && live.every((c) => (c.seen.toPrimary.get(FrameType.GROUP_STATE) ?? 0) >= 1);
  }, { timeoutMs: 10_000 });
  await sleep(500);

  // The secondary's answers stop reaching the primary (a one-way black hole on the live
  // streams): it receives and keeps everything, the primary learns nothing and cannot trim.
  let blackhole = true;
  proxy.policy = (_conn, direction) => (blackhole && direction === "toPrimary" ? "hold" : "forward");

  // Two writes fill the 64 MiB journal and are both sent (they fit the send window); the
  // third is held. Nothing accepted stays unsent, so no later ACK could wake it.
  const host = await HostClient.connect({ port: primary.hostPort });
  const volume = await host.open("v");
  const writeBytes = 31 * MiB;
  let thirdDone = false;
  const first = Promise.all([volume.write(0, Buffer.alloc(writeBytes, 1)), volume.write(writeBytes, Buffer.alloc(writeBytes, 2))]);
  const third = volume.write(2 * writeBytes, Buffer.alloc(writeBytes, 3)).then(() => {
    thirdDone = true;
  });
  await within(20_000, "the first two writes", first);
  const held = await waitFor("the third write held, with a reason", async () => {
    const info = await pair(primary, "g");
    return info.heldWrites > 0 && info.reason !== null ? info : undefined;
  }, { timeoutMs: 10_000 });
  t.diagnostic(`held: ${held.reason}`);
  assert.ok(!thirdDone);
  assert.match(held.reason ?? "", /held/);
  const listed = await groupInfo(primary, "g");
  assert.ok(listed.heldWrites > 0 && listed.reason !== null, `group list says why (${JSON.stringify(listed)})`);
  assert.ok(await heldMetric(primary, "g") > 0, "the held-writes metric shows it");
  assert.equal(held.state, "held");
  assert.equal(stateOf(await scrape(primary), "g", "primary"), "held", "tidemark_pair_state says held");
  const health = await mgmtJson(primary.mgmtUrl, "/v1/health") as { status: string; reasons?: string[] };
  assert.equal(health.status, "degraded", JSON.stringify(health));
  assert.equal(logEvents(primary, "writes_held"), 1, "one log line when writes start being held");
  const accepted = (await pair(primary, "g")).acceptedSequence;
  await waitFor("the secondary to hold every accepted record", async () => (await pair(secondary, "g")).arrivedSequence >= accepted, { timeoutMs: 20_000 });
  // Waiting is an event, not a poll: nothing can free space now, so the node does not spin
  // checkpoints (each one rewrites node.json) while the write is held.
  const writesBefore = writeSyscalls(primary.pid);
  await sleep(2_000);
  const writesWhileHeld = writeSyscalls(primary.pid) - writesBefore;
  t.diagnostic(`write system calls of the primary in 2 s while held: ${writesWhileHeld}`);
  assert.ok(writesWhileHeld < 500, `no busy loop while held (${writesWhileHeld} write system calls in 2 s)`);

  // The link heals; the handshake tells the primary the secondary holds everything.
  blackhole = false;
  proxy.resetAll();
  await within(20_000, "the held write after the handshake", third);
  // The log says so within heldLogIntervalMs of the hold's line (at most one line per interval).
  await waitFor("the release in the log", () => logEvents(primary, "writes_released") >= 1, { timeoutMs: heldLogIntervalMs + 5_000 });
  assert.equal(logEvents(primary, "writes_released"), 1, "one log line when the held writes are released");
  assert.equal(await heldMetric(primary, "g"), 0);
  await volume.flush();
  await host.close();
  await pairWait(primary, "g", "60s");
  await assertSameImages(primary, secondary, "v");
  await primary.stop();
  await secondary.stop();
});
