// Proves a silent or stuck replication stream is found within seconds and what it carried
// is asked for and sent again on a live stream (issue 6, kind 3; the scenario of the
// reproducer pull-stall-after-silent-stream.ts, and its other cases). A proxy on the
// replication link picks one stream of GA at its first BATCH and either black-holes it from
// there on (a half-open TCP path: nothing more arrives, PINGs included) or loses just that
// BATCH (a stuck peer: PINGs still pass, the work does not). Before the fix, pull mode
// stopped for good (the gap's head was never asked for again, the primary ignored
// PULL.fromSequence) and every silent stream took the 30 s peer timeout. Now the secondary
// catches up within a few seconds of the last write, in pull and push mode, and the images
// are equal.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { assertSameImages, pairWait } from "./drill-lib.ts";
import { cliOk, mgmtJson, startNode, type RunningNode } from "./harness.ts";
import { FrameType, ReplProxy } from "./repl-proxy.ts";

const MiB = 1024 * 1024;
/** Detection within seconds: the deadlines are 5 s (pull answer, peer silence) and 10 s (ACK); generous margin. */
const catchUpMsMax = 25_000;

async function pair(node: RunningNode, group: string): Promise<PairInfo> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfo;
}

function logEvents(node: RunningNode, event: string): number {
  return fs.readFileSync(node.logFile, "utf8").split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;
}

interface Case {
  readonly transfer: "push" | "pull";
  readonly streams: number;
  /** "silent": the stream carries nothing more from its first BATCH on; "lost": only that BATCH is lost. */
  readonly fault: "silent" | "lost";
}

const cases: readonly Case[] = [
  { transfer: "pull", streams: 3, fault: "silent" },
  { transfer: "pull", streams: 2, fault: "lost" },
  { transfer: "push", streams: 3, fault: "silent" },
  { transfer: "push", streams: 4, fault: "lost" },
];

for (const c of cases) {
  void test(`${c.transfer}, ${c.streams} streams, one stream ${c.fault === "silent" ? "goes silent" : "loses a batch"}: found within seconds, resent on a live stream`, { timeout: 90_000 }, async (t) => {
    const proxy = await ReplProxy.start();
    const secondary = await startNode({ id: `ss-${c.transfer}-${c.fault}-s`, extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] });
    proxy.setTarget(secondary.replPort);
    const primary = await startNode({ id: `ss-${c.transfer}-${c.fault}-p` });
    await cliOk(["volume", "create", "a", "--size", "32M"], { node: primary.mgmtUrl });
    await cliOk(["group", "create", "GA", "--volumes", "a"], { node: primary.mgmtUrl });
    await cliOk(["pair", "create", "GA", "--to", secondary.mgmtUrl, "--streams", String(c.streams), "--transfer", c.transfer], { node: primary.mgmtUrl, timeoutMs: 60_000 });

    let armed = false;
    let victim: number | undefined;
    proxy.policy = (conn, direction, type) => {
      if (!armed || direction !== "toSecondary" || type !== FrameType.BATCH || conn.group !== "GA") return "forward";
      if (victim === undefined) {
        victim = conn.index;
        return c.fault === "silent" ? "hold" : "drop";
      }
      return "forward";
    };

    const client = await HostClient.connect({ port: primary.hostPort });
    const volume = await client.open("a");
    armed = true;
    const block = Buffer.alloc(MiB, 4);
    for (let i = 0; i < 30; i++) await volume.write((i % 32) * MiB, block);
    assert.ok(victim !== undefined, "the proxy caught a BATCH of GA");
    const lastWriteMs = performance.now();
    const accepted = (await pair(primary, "GA")).acceptedSequence;
    let arrived = 0;
    while (performance.now() - lastWriteMs < catchUpMsMax) {
      arrived = (await pair(secondary, "GA")).arrivedSequence;
      if (arrived >= accepted) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const tookMs = Math.round(performance.now() - lastWriteMs);
    t.diagnostic(`caught up ${tookMs} ms after the last write (arrived ${arrived} of ${accepted}); stuck/silent streams closed: primary ${logEvents(primary, "repl_stream_stuck") + logEvents(primary, "repl_peer_timeout")}, secondary ${logEvents(secondary, "repl_stream_stuck") + logEvents(secondary, "repl_peer_timeout")}`);
    assert.ok(arrived >= accepted, `the secondary caught up within ${catchUpMsMax} ms of the last write (arrived ${arrived} of ${accepted})`);

    // Writes after the fault flow as usual, and the images end equal.
    for (let i = 0; i < 3; i++) await volume.write(0, Buffer.alloc(4096, 9));
    await volume.flush();
    await client.close();
    await pairWait(primary, "GA", "30s");
    await assertSameImages(primary, secondary, "a");
    await primary.stop();
    await secondary.stop();
  });
}
