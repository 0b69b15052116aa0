// Proves the journal limit of a pair (issue: remote copy, "Journal limits"): with the
// secondary frozen (SIGSTOP) and more data written than the primary's journal holds, host
// writes are slowed and then held, never failed or dropped; `pair status` says why (the journal
// full, and the link down too once the peer timeout closed it); the
// primary's memory stays bounded; and once the secondary is back every write reaches it
// (`pair wait` returns and the images are equal byte for byte).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { createHash } from "node:crypto";
import { HostClient } from "../../src/index.ts";
import { cliOk, mgmtJson, sleep, startNode, type RunningNode } from "./harness.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";


const MiB = 1024 * 1024;
const volumeBytes = 64 * MiB;
/** The smallest journal a group may have (journalBytesMin). */
const journalBytes = 64 * MiB;
const writeBytes = 1 * MiB;
/** More than twice the journal: the writer must wait for the secondary. */
const totalWrites = 160;

function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match?.[1] ?? 0) * 1024;
}

async function readVolume(node: RunningNode, name: string): Promise<Buffer> {
  const client = await HostClient.connect({ host: "127.0.0.1", port: node.hostPort });
  try {
    const volume = await client.open(name);
    const parts: Buffer[] = [];
    for (let offset = 0; offset < volume.sizeBytes; offset += 4 * MiB) parts.push(await volume.read(offset, Math.min(4 * MiB, volume.sizeBytes - offset)));
    return Buffer.concat(parts);
  } finally {
    await client.close();
  }
}

test("a frozen secondary: writes are held, not failed; the backlog drains when it is back", { timeout: 180_000 }, async () => {
  const primary = await startNode({ id: "jf-a" });
  const secondary = await startNode({ id: "jf-b" });
  await cliOk(["volume", "create", "v", "--size", String(volumeBytes)], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v", "--journal-size", String(journalBytes)], { node: primary.mgmtUrl });
  await cliOk(["pair", "create", "g", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 120_000 });

  process.kill(secondary.pid, "SIGSTOP");
  let resumed = false;
  try {
    const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
    const volume = await client.open("v");
    let answered = 0;
    let failed: unknown;
    const writes = Array.from({ length: totalWrites }, (_, i) => {
      const data = createHash("sha512").update(String(i)).digest();
      const block = Buffer.alloc(writeBytes);
      for (let at = 0; at < block.length; at += data.length) data.copy(block, at);
      return volume.write((i % (volumeBytes / writeBytes)) * writeBytes, block).then(() => {
        answered += 1;
      }, (error: unknown) => {
        failed = error;
      });
    });

    // The journal fills; writes are held and the status says so.
    let held: PairInfo | undefined;
    let last: PairInfo | undefined;
    let rssMaxBytes = 0;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      rssMaxBytes = Math.max(rssMaxBytes, rssBytes(primary.pid));
      const status = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g")) as PairInfo;
      if (status.heldWrites > 0 && status.reason !== null && /journal full/.test(status.reason)) {
        held = status;
        break;
      }
      last = status;
      await sleep(100);
    }
    assert.ok(held !== undefined, `writes were held with a reason in pair status; last status: ${JSON.stringify(last)}`);
    assert.ok(held.journalBytes <= held.journalBytesMax, `journal within its limit (${held.journalBytes} of ${held.journalBytesMax})`);
    assert.ok(answered < totalWrites, "not every write could be answered while the secondary was frozen");
    await sleep(2000);
    rssMaxBytes = Math.max(rssMaxBytes, rssBytes(primary.pid));
    assert.equal(failed, undefined, "no write failed while held");
    // Bounded: the backlog is on disk; in memory are at most the send window and the writes in flight.
    assert.ok(rssMaxBytes < 512 * MiB, `primary RSS stayed bounded (${(rssMaxBytes / MiB).toFixed(0)} MiB)`);
    // The frozen secondary answers nothing: the link goes down (peer timeout) while the writes
    // are held. `held` wins the state, and the reason says the link is down too, since when and
    // why (before, only "journal full").
    let heldAndDown: PairInfo | undefined;
    const downDeadline = Date.now() + 30_000;
    while (heldAndDown === undefined && Date.now() < downDeadline) {
      const status = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g")) as PairInfo;
      if (status.link.downSince !== null) heldAndDown = status;
      else await sleep(200);
    }
    assert.ok(heldAndDown !== undefined, "the link to the frozen secondary is seen down");
    assert.equal(heldAndDown.state, "held");
    assert.match(heldAndDown.reason ?? "", /^journal full .* held .*; link to jf-b at \S+ down since \S+ \(last error: [^)]+\); retrying$/, heldAndDown.reason ?? "");
    assert.equal(heldAndDown.link.connectedStreams, 0);

    process.kill(secondary.pid, "SIGCONT");
    resumed = true;
    await Promise.all(writes);
    assert.equal(failed, undefined, "no write failed");
    assert.equal(answered, totalWrites);
    await volume.flush();
    await client.close();
    await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: primary.mgmtUrl, timeoutMs: 90_000 });
  } finally {
    if (!resumed) process.kill(secondary.pid, "SIGCONT");
  }
  const [onPrimary, onSecondary] = await Promise.all([readVolume(primary, "v"), readVolume(secondary, "v")]);
  assert.ok(onPrimary.equals(onSecondary), "the secondary's image equals the primary's");
  await primary.stop();
  await secondary.stop();
});

test("SIGTERM while host writes are held (journal full) stops cleanly; after a restart the pair carries on and the images are equal", { timeout: 180_000 }, async () => {
  const primary = await startNode({ id: "jf-term-a" });
  const secondary = await startNode({ id: "jf-term-b" });
  await cliOk(["volume", "create", "v", "--size", String(volumeBytes)], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v", "--journal-size", String(journalBytes)], { node: primary.mgmtUrl });
  await cliOk(["pair", "create", "g", "--to", secondary.mgmtUrl, "--streams", "2"], { node: primary.mgmtUrl, timeoutMs: 120_000 });
  process.kill(secondary.pid, "SIGSTOP");
  let resumed = false;
  try {
    const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
    const volume = await client.open("v");
    const outcomes: ("answered" | "failed")[] = [];
    const writes = Array.from({ length: totalWrites }, (_, i) =>
      volume.write((i % (volumeBytes / writeBytes)) * writeBytes, Buffer.alloc(writeBytes, i + 1)).then(() => void outcomes.push("answered"), () => void outcomes.push("failed")));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const status = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g")) as PairInfo;
      if (status.heldWrites > 0) break;
      assert.ok(Date.now() < deadline, `writes held before the deadline; last status ${JSON.stringify(status)}`);
      await sleep(100);
    }
    await primary.stop(); // throws unless the node exits 0 within the stop timeout
    await Promise.all(writes);
    await client.close().catch(() => undefined);
    assert.ok(outcomes.includes("failed"), "the held writes were not accepted (the host got an error, nothing was journaled for them)");
    process.kill(secondary.pid, "SIGCONT");
    resumed = true;
    await primary.restart();
    await cliOk(["pair", "wait", "g", "--timeout", "60s"], { node: primary.mgmtUrl, timeoutMs: 90_000 });
  } finally {
    if (!resumed) process.kill(secondary.pid, "SIGCONT");
  }
  const [onPrimary, onSecondary] = await Promise.all([readVolume(primary, "v"), readVolume(secondary, "v")]);
  assert.ok(onPrimary.equals(onSecondary), "the secondary's image equals the primary's");
});
