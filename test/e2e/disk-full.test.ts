// Proves the out-of-space rules on real processes and real full file systems (issue 6,
// kind 5; docs/out-of-space.md), on either node: a data directory on a small tmpfs fills
// up. The node stays up; only the affected group stops (state `stopped`, a reason naming
// the path, a log line, /v1/health degraded), on both sides of the pair; the node can be
// stopped and started again on the full disk; a healthy group can still be taken over
// there; writes answered before a FLUSH survive; and once the tmpfs is grown the group
// resumes by itself, the pair catches up and the images are equal byte for byte.
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { NbdClient, NbdError, assertSameImages, describePair, pairInfo, pairWait, readExport } from "./drill-lib.ts";
import { cli, cliOk, mgmtJson, onCleanup, requireRoot, requireTool, run, runOk, startNode, tmpDir, waitFor, type RunningNode } from "./harness.ts";
import { stateOf } from "./metrics-lib.ts";

const mib = 1024 * 1024;

/** A tmpfs of `sizeMiB` at a fresh directory, unmounted at cleanup; grow() gives it more room. */
async function smallDisk(sizeMiB: number): Promise<{ dir: string; grow(sizeMiB: number): Promise<void> }> {
  const dir = join(await tmpDir("tidemark-small-disk-"), "mnt");
  await mkdir(dir);
  await runOk("mount", ["-t", "tmpfs", "-o", `size=${String(sizeMiB)}m`, "tmpfs", dir]);
  onCleanup(`umount ${dir}`, async () => {
    await run("umount", ["-l", dir]);
  });
  return { dir, grow: async (size) => void (await runOk("mount", ["-o", `remount,size=${String(size)}m`, dir])) };
}

interface GroupView {
  readonly name: string;
  readonly state: string;
  readonly reason: string | null;
}

async function groupView(node: RunningNode, name: string): Promise<GroupView> {
  const { groups } = (await mgmtJson(node.mgmtUrl, "/v1/groups")) as { groups: GroupView[] };
  const group = groups.find((g) => g.name === name);
  assert.ok(group !== undefined, `group ${name} on ${node.id}`);
  return group;
}

async function health(node: RunningNode): Promise<{ status: string; reasons?: string[] }> {
  return (await mgmtJson(node.mgmtUrl, "/v1/health")) as { status: string; reasons?: string[] };
}

async function metricsText(node: RunningNode): Promise<string> {
  return (await fetch(`${node.mgmtUrl}/metrics`)).text();
}

function logEvents(node: RunningNode, event: string): number {
  return node.logTail(100_000).split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

/** Writes `count` MiB of distinct data to `volume` over NBD, 1 MiB at a time, each followed by FLUSH; returns how many were flushed before the first error (and that error). */
async function fill(node: RunningNode, volume: string, count: number): Promise<{ flushed: number; error: NbdError | undefined }> {
  const client = await NbdClient.connect(node.nbdPort, volume);
  try {
    for (let i = 0; i < count; i++) {
      try {
        await client.write(i * mib, Buffer.alloc(mib, 1 + (i % 250)));
        await client.flush();
      } catch (error) {
        if (error instanceof NbdError) return { flushed: i, error };
        throw error;
      }
    }
    return { flushed: count, error: undefined };
  } finally {
    await client.close();
  }
}

async function makePair(a: RunningNode, b: RunningNode, group: string, volume: string, size: string): Promise<void> {
  await cliOk(["volume", "create", volume, "--size", size], { node: a.mgmtUrl });
  await cliOk(["group", "create", group, "--volumes", volume], { node: a.mgmtUrl });
  await cliOk(["pair", "create", group, "--to", b.mgmtUrl, "--streams", "2"], { node: a.mgmtUrl, timeoutMs: 60_000 });
}

void test("the secondary's disk fills: it stays up, the group stops on both sides' status, it restarts on the full disk, a healthy group is taken over, and after the disk grows the pair catches up", { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireTool(t, "mount", "umount")) return;
  const disk = await smallDisk(48);
  const a = await startNode({ id: "full-a" });
  const b = await startNode({ id: "full-b", dataDir: join(disk.dir, "b") });
  await makePair(a, b, "gsmall", "small", "1M");
  await makePair(a, b, "gbig", "big", "64M");

  const written = await fill(a, "big", 60);
  assert.equal(written.error, undefined, "the primary takes every write: only the secondary is full");
  const stopped = await waitFor("gbig stopped on the secondary", async () => {
    const view = await groupView(b, "gbig");
    return view.state === "stopped" ? view : undefined;
  }, { timeoutMs: 30_000 });
  assert.match(stopped.reason ?? "", new RegExp(`out of space writing ${disk.dir}/b/`), "the reason names the path");
  const onB = await pairInfo(b, "gbig");
  assert.equal(onB.state, "stopped", describePair(onB));
  // Stopped, it hears of no new writes: lag at least the age of what it reflected last, and
  // the consistent-as-of time stays (before: 0 s and "—", though a write refused for want of
  // space, journal or volume, leaves what was written before as it was).
  const lagging = await waitFor("the stopped secondary's lag seconds grow", async () => {
    const info = await pairInfo(b, "gbig");
    return info.lagSeconds >= 1 ? info : undefined;
  }, { timeoutMs: 15_000 });
  t.diagnostic(`B stopped: lag ${lagging.lagRecords} records, ${lagging.lagSeconds} s, consistent as of ${String(lagging.consistentAsOf)}`);
  assert.notEqual(lagging.consistentAsOf, null, "stopped by a full disk, the consistent-as-of time stays");
  assert.ok(lagging.lagSeconds >= (Date.now() - Date.parse(lagging.consistentAsOf ?? "")) / 1000 - 1, "and lag is at least its age");
  const onA = await waitFor("the primary says why", async () => {
    const info = await pairInfo(a, "gbig");
    return /cannot store records/.test(info.reason ?? "") ? info : undefined;
  }, { timeoutMs: 15_000 });
  t.diagnostic(`A: ${describePair(onA)}`);
  // The primary shows what it knows of its peer: stopped there, not replicating; unhealthy.
  assert.equal(onA.state, "stopped", "the primary says the secondary's group is stopped");
  const primaryHealth = await health(a);
  assert.equal(primaryHealth.status, "degraded");
  assert.ok(primaryHealth.reasons?.some((reason) => /pair of group gbig stopped on the secondary/.test(reason)), JSON.stringify(primaryHealth));
  for (const node of [a, b]) {
    const check = await cli(["pair", "status", "--check"], { node: node.mgmtUrl });
    assert.equal(check.code, 1, `${node.id}: pair status --check exits 1 while gbig is stopped`);
    assert.match(check.stdout, /^gbig \((primary|secondary)\): stopped: /m);
  }
  const degraded = await health(b);
  assert.equal(degraded.status, "degraded");
  assert.ok(degraded.reasons?.some((reason) => reason.includes("gbig")), JSON.stringify(degraded));
  assert.equal(logEvents(b, "group_stopped") >= 1, true, "a log line said so at once");
  assert.match(await metricsText(b), /tidemark_group_stopped\{[^}]*group="gbig"[^}]*role="secondary"[^}]*\} 1/, "and a metric");
  assert.equal(stateOf(await metricsText(b), "gbig", "secondary"), "stopped", "tidemark_pair_state says stopped");

  await b.stop();
  await b.restart();
  t.diagnostic(`B started again on the full disk: gbig ${(await groupView(b, "gbig")).state}`);
  // The primary is alive: the takeover fences it over a replication stream, so wait for one.
  await waitFor("A's gsmall reconnected to B", async () => ((await pairInfo(b, "gsmall")).link.connectedStreams > 0 ? true : undefined), { timeoutMs: 30_000 });
  const takeover = await cliOk(["pair", "takeover", "gsmall"], { node: b.mgmtUrl });
  t.diagnostic(`takeover of the healthy group on the full disk: ${takeover.stdout.trim()}`);
  assert.equal((await pairInfo(b, "gsmall")).state, "takeover");
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // a stopped target's retry timer would have fired by now
  assert.equal(logEvents(b, "group_stopped_for_good"), 0, "the taken-over group's old stop control ended with the takeover (no false 'lost acknowledged data')");

  await disk.grow(256);
  const waited = await pairWait(a, "gbig", "60s");
  t.diagnostic(`after the disk grew: ${waited}`);
  await waitFor("gbig no longer stopped on B", async () => (await groupView(b, "gbig")).state === "ok", { timeoutMs: 30_000 });
  assert.equal((await pairInfo(a, "gbig")).state, "replicating");
  await assertSameImages(a, b, "big");
  assert.equal(logEvents(b, "group_resumed") >= 1, true, "a log line said it resumed");
});

void test("a host write refused with ENOSPC on a full primary is no lag: the pair counts exactly the writes its journal took, before and after a restart", { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireTool(t, "mount", "umount")) return;
  const disk = await smallDisk(72);
  const a = await startNode({ id: "plag-a", dataDir: join(disk.dir, "a") });
  const b = await startNode({ id: "plag-b" });
  await makePair(a, b, "g1", "v1", "24M");
  // The whole volume written once (it takes its space now; the journal is trimmed behind the
  // secondary): from here on, only the journal needs room, so its append is what the full disk
  // refuses (the write gets a sequence, then ENOSPC).
  assert.equal((await fill(a, "v1", 24)).error, undefined);
  await pairWait(a, "g1", "60s");
  // Suspended: nothing is sent or reflected, so the lag is every host write the journal takes.
  await cliOk(["pair", "suspend", "g1"], { node: a.mgmtUrl });
  const base = await pairInfo(a, "g1");
  const client = await NbdClient.connect(a.nbdPort, "v1");
  let journaled = 0; // writes answered: in the journal (a flush that fails after one does not take it out)
  let failure: NbdError | undefined;
  try {
    for (let i = 0; i < 200 && failure === undefined; i++) {
      try {
        await client.write((i % 24) * mib, Buffer.alloc(mib, 1 + (i % 250)));
        journaled += 1;
        await client.flush();
      } catch (error) {
        if (!(error instanceof NbdError)) throw error;
        failure = error;
      }
    }
  } finally {
    await client.close();
  }
  assert.ok(failure !== undefined, "the disk filled");
  assert.match(failure.message, /errno 28/, "the host gets ENOSPC");
  const stopped = await pairInfo(a, "g1");
  t.diagnostic(`${journaled} writes answered, then: ${failure.message}; A: ${describePair(stopped)} (before them: lag ${base.lagRecords}); ${String((await groupView(a, "g1")).reason)}`);
  assert.deepEqual([stopped.lagRecords - base.lagRecords, stopped.lagBytes - base.lagBytes], [journaled, journaled * mib], "exactly the writes the journal took; the refused one is in neither image");

  await a.stop();
  await a.restart();
  const restarted = await pairInfo(a, "g1");
  t.diagnostic(`restarted on the full disk: ${describePair(restarted)}, lag ${restarted.lagSeconds} s`);
  assert.deepEqual([restarted.lagRecords, restarted.lagBytes], [stopped.lagRecords, stopped.lagBytes], "rebuilt from the journal: the same");
  assert.ok(restarted.lagSeconds > 0, "aged by the writes' wall time, not 0");

  await disk.grow(256);
  await waitFor("g1 resumed", async () => (await groupView(a, "g1")).state === "ok", { timeoutMs: 30_000 });
  await cliOk(["pair", "resume", "g1"], { node: a.mgmtUrl });
  await pairWait(a, "g1", "60s");
  const caughtUp = await waitFor("no lag once caught up", async () => {
    const info = await pairInfo(a, "g1");
    return info.lagRecords === 0 ? info : undefined;
  }, { timeoutMs: 30_000 });
  assert.equal(caughtUp.lagBytes, 0);
  await assertSameImages(a, b, "v1");
});

void test("the primary's disk fills: the group stops (writes fail with ENOSPC, nothing flushed is lost), the node stays up and restarts on the full disk, and after the disk grows the group resumes and the pair catches up", { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireTool(t, "mount", "umount")) return;
  const disk = await smallDisk(72);
  const a = await startNode({ id: "pfull-a", dataDir: join(disk.dir, "a") });
  const b = await startNode({ id: "pfull-b" });
  await makePair(a, b, "g2", "v2", "1M");
  await makePair(a, b, "g1", "v1", "64M");
  const before = await readExport(a, "v2");

  // Each MiB goes to the journal and the volume: the 72 MiB disk fills well before 64 MiB.
  const written = await fill(a, "v1", 64);
  assert.ok(written.error !== undefined, "a write or a flush failed once the disk was full");
  assert.match(written.error.message, /errno 28/, "the host gets ENOSPC");
  t.diagnostic(`${written.flushed} MiB flushed before the disk was full: ${written.error.message}`);
  const stopped = await groupView(a, "g1");
  assert.equal(stopped.state, "stopped");
  assert.match(stopped.reason ?? "", new RegExp(`out of space writing ${disk.dir}/a/`));
  assert.equal((await pairInfo(a, "g1")).state, "stopped");
  assert.equal((await health(a)).status, "degraded");
  assert.match(await metricsText(a), /tidemark_group_stopped\{[^}]*group="g1"[^}]*role="primary"[^}]*\} 1/);
  // The secondary says so too: the primary's streams closed with the reason.
  let lastOnB = "";
  const onB = await waitFor("the secondary names the primary's stop", async () => {
    const info = await pairInfo(b, "g1");
    lastOnB = describePair(info);
    return /primary said: group stopped: out of space/.test(info.reason ?? "") ? info : undefined;
  }, { timeoutMs: 15_000 }).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}; B showed: ${lastOnB}`, { cause: error });
  });
  t.diagnostic(`B: ${String(onB.reason)}`);
  assert.ok((await readExport(a, "v2")).equals(before), "the other group still serves reads");

  await a.stop(); // a clean stop on the full disk
  await a.restart();
  t.diagnostic(`A started again on the full disk: g1 ${(await groupView(a, "g1")).state}`);

  await disk.grow(512);
  await waitFor("g1 resumed", async () => (await groupView(a, "g1")).state === "ok", { timeoutMs: 30_000 });
  const image = await readExport(a, "v1");
  for (let i = 0; i < written.flushed; i++) assert.equal(image[i * mib], 1 + (i % 250), `MiB ${i} was flushed before the disk filled and is kept`);
  const again = await fill(a, "v1", 4);
  assert.equal(again.error, undefined, "writes succeed again");
  const waited = await pairWait(a, "g1", "60s");
  t.diagnostic(`after the disk grew: ${waited}; ${describePair(await pairInfo(a, "g1"))}`);
  await assertSameImages(a, b, "v1");
  await assertSameImages(a, b, "v2");
});
