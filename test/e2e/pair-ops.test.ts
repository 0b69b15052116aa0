// Proves the pair operations end to end with real nodes and real clients: writes that arrive
// during the initial copy are neither lost nor reordered (pull mode, 3 streams); the target is
// exported read-only (qemu-io's write fails with EPERM) and shows the reflected image;
// suspend keeps changes in the journal and resume sends them; takeover makes the target
// writable, the primary is fenced first (its writes get EPERM) and learns its pair was taken over.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { HostClient } from "../../src/index.ts";
import { cli, cliOk, mgmtJson, requireTool, run, runOk, sleep, startNode, waitFor, type RunningNode } from "./harness.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";

const MiB = 1024 * 1024;


function block(seed: number, bytes: number): Buffer {
  const digest = createHash("sha256").update(`block ${seed}`).digest();
  const out = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += digest.length) digest.copy(out, at);
  return out;
}

async function image(node: RunningNode, name: string): Promise<string> {
  const client = await HostClient.connect({ host: "127.0.0.1", port: node.hostPort });
  try {
    const volume = await client.open(name);
    const hash = createHash("sha256");
    for (let offset = 0; offset < volume.sizeBytes; offset += 4 * MiB) hash.update(await volume.read(offset, Math.min(4 * MiB, volume.sizeBytes - offset)));
    return hash.digest("hex");
  } finally {
    await client.close();
  }
}

test("pair operations: copy under writes, read-only target, suspend/resume, takeover", { timeout: 240_000 }, async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const primary = await startNode({ id: "ops-a" });
  const secondary = await startNode({ id: "ops-b" });
  const volumeBytes = 128 * MiB;
  await cliOk(["volume", "create", "v1", "--size", String(volumeBytes)], { node: primary.mgmtUrl });
  await cliOk(["volume", "create", "v2", "--size", String(volumeBytes / 2)], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v1,v2"], { node: primary.mgmtUrl });

  // Data before the pair, then writes that keep going while the initial copy runs.
  const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
  const v1 = await client.open("v1");
  const v2 = await client.open("v2");
  for (let i = 0; i < 16; i++) await v1.write(i * 4 * MiB, block(i, MiB));
  let writing = true;
  let written = 0;
  const writer = (async () => {
    // Overlapping rewrites of the same blocks: a lost or reordered one shows as a different image.
    while (writing) {
      const i = written % 48;
      await (i % 2 === 0 ? v1 : v2).write((i % 16) * MiB + (written % 7) * 4096, block(1000 + written, 64 * 1024));
      written += 1;
    }
  })();
  const created = await cli(["pair", "create", "g", "--to", secondary.mgmtUrl, "--transfer", "pull", "--streams", "3", "--json"], { node: primary.mgmtUrl, timeoutMs: 120_000 });
  assert.equal(created.code, 0, created.stderr);
  await sleep(500);
  writing = false;
  await writer;
  assert.ok(written > 10, `writes went on during the copy (${written})`);
  await v1.flush();
  await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: primary.mgmtUrl, timeoutMs: 90_000 });
  assert.equal(await image(secondary, "v1"), await image(primary, "v1"), "v1 equal after the copy under writes");
  assert.equal(await image(secondary, "v2"), await image(primary, "v2"), "v2 equal after the copy under writes");

  // The target is read-only over NBD and shows the reflected image.
  const refused = await run("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${secondary.nbdPort}/v1`, "-c", "write -P 0x55 0 4k"], { timeoutMs: 30_000 });
  assert.match(refused.stdout + refused.stderr, /Operation not permitted|read-only|Permission denied/i, "a write to the target is refused");
  await runOk("qemu-io", ["-f", "raw", "-r", `nbd://127.0.0.1:${secondary.nbdPort}/v1`, "-c", "read -P 0 64M 4k"], { timeoutMs: 30_000 });

  // Suspend: writes stay in the journal; nothing reaches the secondary until resume.
  const suspended = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g/suspend", {})) as PairInfo;
  assert.equal(suspended.state, "suspended");
  const before = await image(secondary, "v2");
  for (let i = 0; i < 8; i++) await v2.write(i * MiB, block(5000 + i, MiB));
  await v2.flush();
  await sleep(500);
  assert.equal(await image(secondary, "v2"), before, "nothing is sent while suspended");
  const status = await cliOk(["pair", "status", "g"], { node: primary.mgmtUrl });
  assert.match(status.stdout, /suspended/);
  await cliOk(["pair", "resume", "g"], { node: primary.mgmtUrl });
  await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: primary.mgmtUrl, timeoutMs: 90_000 });
  assert.equal(await image(secondary, "v2"), await image(primary, "v2"), "changes made while suspended are sent on resume");
  await client.close();

  // Takeover with the primary alive: the primary is fenced first (its writes get EPERM), the
  // target becomes writable, and the primary learns the secondary took over.
  const takeover = await cliOk(["pair", "takeover", "g"], { node: secondary.mgmtUrl });
  assert.match(takeover.stdout, /takeover/);
  assert.match(takeover.stdout, /the primary is fenced/);
  await runOk("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${secondary.nbdPort}/v1`, "-c", "write -P 0x55 0 4k", "-c", "read -P 0x55 0 4k"], { timeoutMs: 30_000 });
  const fenced = await waitFor("the primary to learn of the takeover", async () => {
    const s = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g")) as PairInfo;
    return s.state === "fenced" && s.fence?.peerTookOver === true ? s : undefined;
  }, { timeoutMs: 30_000 });
  assert.match(fenced.reason ?? "", /took over/i);
  const refusedOnPrimary = await run("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${primary.nbdPort}/v1`, "-c", "write -P 0x55 0 4k"], { timeoutMs: 30_000 });
  assert.match(refusedOnPrimary.stdout + refusedOnPrimary.stderr, /Operation not permitted/i, "the fenced primary refuses writes");
  const again = await cli(["pair", "takeover", "g"], { node: secondary.mgmtUrl });
  assert.equal(again.code, 0, "takeover is idempotent");
  await primary.stop();
  await secondary.stop();
});
