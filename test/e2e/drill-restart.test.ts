// Proves that every node of an active pair starts again after any stop, and that the pair
// carries on (issue 6, kind 1; I3 and I4): while two writers (NBD and the host protocol)
// write self-describing blocks and FLUSH every few writes, the primary and the secondary
// are stopped in turn by kill -9, SIGTERM and SIGHUP, each restarted on the same data
// directory. After every restart of the primary, every write answered before a FLUSH that
// succeeded is on its volume; after every restart `pair wait` returns; at the end the two
// images are equal byte for byte. Push and pull, seeded (docs/drills.md).
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClient } from "../../src/client/host-client.ts";
import {
  NbdClient, Prng, assertSameImages, decodeDrillImage, describePair, drillBlockBytes, encodeDrillBlock, makeGroup, pairCreate,
  pairInfo, pairWait, phaseClock, readExport, runDrill, sleep, startPairNodes,
} from "./drill-lib.ts";
import type { RunningNode } from "./harness.ts";

const mib = 1024 * 1024;
const volumeBytes = 32 * mib;
/** One write: 8 drill blocks, so a write is 4 KiB and its blocks say which write they belong to. */
const blocksPerWrite = 8;
const writeBytes = blocksPerWrite * drillBlockBytes;
const writesMax = volumeBytes / writeBytes;
const flushEvery = 8;
/** Writes per second and lane: slow enough that the volume does not fill before the last round. */
const laneWritesPerSecond = 300;

interface Lane {
  readonly volume: string;
  readonly tag: number;
  /** Writes 1..flushed, except the uncertain ones, were answered before a FLUSH that succeeded: they must survive any crash. */
  flushed: number;
  /** Writes that failed, or were answered with no FLUSH after them before the node went away: they may or may not be there. */
  readonly uncertain: Set<number>;
  /** Next write index to attempt (an attempt that failed is never reused: it may or may not be there). */
  next: number;
  failures: number;
}

/** Writes write i as blocks of tag/i at i * 4 KiB, flushing every few writes, reconnecting whenever the node goes away. */
function runLane(node: RunningNode, lane: Lane, via: "nbd" | "host", runId: number, stop: () => boolean): Promise<void> {
  const image = (index: number): Buffer => Buffer.concat(Array.from({ length: blocksPerWrite }, (_, k) => encodeDrillBlock(runId, index, lane.tag, (index - 1) * blocksPerWrite + k)));
  return (async () => {
    while (!stop() && lane.next <= writesMax) {
      let connection: { write(offsetBytes: number, data: Buffer): Promise<void>; flush(): Promise<void>; close(): Promise<void> } | undefined;
      try {
        if (via === "nbd") {
          const client = await NbdClient.connect(node.nbdPort, lane.volume);
          connection = { write: (o, d) => client.write(o, d), flush: () => client.flush(), close: () => client.close() };
        } else {
          const client = await HostClient.connect({ port: node.hostPort });
          const volume = await client.open(lane.volume);
          connection = {
            write: (o, d) => volume.write(o, d, { writeTimeUs: Date.now() * 1000 }),
            flush: () => volume.flush(),
            close: () => client.close(),
          };
        }
        let sinceFlush: number[] = [];
        while (!stop() && lane.next <= writesMax) {
          const index = lane.next++;
          await connection.write((index - 1) * writeBytes, image(index));
          sinceFlush.push(index);
          if (index % 10 === 0) await sleep((10 * 1000) / laneWritesPerSecond);
          if (sinceFlush.length >= flushEvery) {
            await connection.flush();
            lane.flushed = Math.max(lane.flushed, ...sinceFlush);
            sinceFlush = [];
          }
        }
        await connection.flush();
        lane.flushed = Math.max(lane.flushed, ...sinceFlush);
      } catch {
        for (let index = lane.flushed + 1; index < lane.next; index++) lane.uncertain.add(index);
        lane.failures++;
        await sleep(100); // the node is down or restarting
      } finally {
        await connection?.close().catch(() => undefined);
      }
    }
  })();
}

/** Every write 1..lane.flushed is on `node`'s volume, intact. */
async function assertFlushedWritesKept(node: RunningNode, lane: Lane, runId: number): Promise<void> {
  // The writers go on meanwhile: only what was flushed before the image is read must be in it.
  const flushed = lane.flushed;
  const { found, problems } = decodeDrillImage(await readExport(node, lane.volume), runId, lane.tag);
  assert.deepEqual(problems, [], `${lane.volume} on ${node.id}: no torn or foreign blocks`);
  const blocksByWrite = new Map<number, number>();
  for (const block of found) blocksByWrite.set(block.index, (blocksByWrite.get(block.index) ?? 0) + 1);
  const missing: number[] = [];
  for (let index = 1; index <= flushed; index++) if (!lane.uncertain.has(index) && blocksByWrite.get(index) !== blocksPerWrite) missing.push(index);
  assert.deepEqual(missing.slice(0, 10), [], `${lane.volume} on ${node.id}: every write answered before a successful FLUSH is kept (${missing.length} of ${flushed} missing)`);
}

type Stop = "kill -9" | "SIGTERM" | "SIGHUP";

async function stopNode(node: RunningNode, how: Stop): Promise<void> {
  if (how === "kill -9") await node.kill();
  else await node.stop(how);
}

for (const transfer of ["push", "pull"] as const) {
  void test(`drill 6 (${transfer}): primary and secondary stopped in turn by kill -9, SIGTERM and SIGHUP, restarted; flushed writes kept, pair wait returns, images equal`, { timeout: 300_000 }, (t) => runDrill(t, async (seed) => {
    const prng = new Prng(seed);
    const phase = phaseClock(t);
    const runId = prng.int(1, 0x7fff_ffff);
    const { a, b } = await startPairNodes();
    await makeGroup(a, "g1", [{ name: "v1", size: "32M" }, { name: "v2", size: "32M" }]);
    await pairCreate(a, "g1", b, { transfer, streams: 3 });
    phase(`pair replicating (${transfer}, 3 streams)`);

    const lanes: Lane[] = [
      { volume: "v1", tag: 1, flushed: 0, next: 1, failures: 0, uncertain: new Set() },
      { volume: "v2", tag: 2, flushed: 0, next: 1, failures: 0, uncertain: new Set() },
    ];
    let stopping = false;
    const running = [runLane(a, lanes[0]!, "nbd", runId, () => stopping), runLane(a, lanes[1]!, "host", runId, () => stopping)];
    t.after(async () => {
      stopping = true;
      await Promise.all(running);
    });

    const rounds: readonly { node: "A" | "B"; how: Stop }[] = [
      { node: "A", how: "kill -9" }, { node: "B", how: "kill -9" }, { node: "A", how: "SIGTERM" },
      { node: "B", how: "SIGHUP" }, { node: "A", how: "kill -9" }, { node: "B", how: "kill -9" }, { node: "A", how: "SIGHUP" },
    ];
    for (const round of rounds) {
      await sleep(prng.int(300, 1_200));
      const node = round.node === "A" ? a : b;
      const before = await pairInfo(a, "g1");
      await stopNode(node, round.how);
      phase(`${round.node} stopped by ${round.how}: ${describePair(before)}`);
      await sleep(prng.int(100, 800));
      await node.restart();
      phase(`${round.node} restarted`);
      if (round.node === "A") {
        for (const lane of lanes) await assertFlushedWritesKept(a, lane, runId);
        phase(`A holds every flushed write (v1 through ${lanes[0]!.flushed}, v2 through ${lanes[1]!.flushed})`);
      }
      const waited = await pairWait(a, "g1", "60s");
      phase(`pair wait: ${waited}`);
    }
    stopping = true;
    await Promise.all(running);
    phase(`writers stopped: v1 ${lanes[0]!.next - 1} writes (${lanes[0]!.failures} interruptions), v2 ${lanes[1]!.next - 1} writes (${lanes[1]!.failures} interruptions)`);
    assert.ok(lanes.every((lane) => lane.flushed > 0), "the writers made progress");

    await pairWait(a, "g1", "60s");
    const after = await pairInfo(a, "g1");
    assert.equal(after.state, "replicating", describePair(after));
    for (const lane of lanes) await assertFlushedWritesKept(a, lane, runId);
    await assertSameImages(a, b, "v1");
    await assertSameImages(a, b, "v2");
    phase("images equal");
  }));
}
