// Proves I1 across two groups on real nodes: a dependent writer alternates between va (group ga,
// host protocol, with and without write times) and vb (group gb, NBD), each write awaiting the
// previous answer and storing a self-describing block; the primary is kill -9'd at a random
// moment, B takes over both groups, and the writes found on B's volumes must be exactly a prefix
// 1..k of the acknowledged order (push and pull, one and several streams). Seeded; see docs/drills.md.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClient, type HostVolume } from "../../src/index.ts";
import {
  NbdClient, Prng, runDrill, phaseClock, checkPrefix, decodeDrillImage, drillBlockBytes, encodeDrillBlock, makeGroup, pairCreate,
  pairInfo, readExport, sleep, startPairNodes, takeover, waitReflectedProgress, type FoundWrite, type PairOptions,
  restartOldPrimary,
} from "./drill-lib.ts";

const volumeSizeBytes = 32 * 1024 * 1024;
const blocksPerVolume = volumeSizeBytes / drillBlockBytes;
/** Odd, so j -> j * stride mod 2^16 is a permutation of the blocks. */
const blockStride = 40_503;
const tagVa = 1;
const tagVb = 2;

interface Placement {
  readonly volumeTag: number;
  readonly blockIndex: number;
}

/** Write i (1-based): odd ones to va, even ones to vb, at a block derived from i. */
function placement(index: number, blockOffset: number): Placement {
  const perVolume = Math.floor((index - 1) / 2);
  return {
    volumeTag: index % 2 === 1 ? tagVa : tagVb,
    blockIndex: (perVolume * blockStride + blockOffset) % blocksPerVolume,
  };
}

interface WriterResult {
  acknowledged: number;
  inFlight: number;
  failure: string;
  withTime: number;
  withoutTime: number;
  viaNbd: number;
}

/**
 * An independent bulk writer (256 KiB writes, two in flight, about 6 MiB/s) on a third volume
 * vc in one of the groups, so that group's records arrive behind the other's and the
 * secondary must hold the faster group back (the frontier) to keep I1. Rate-limited so the
 * lag stays at seconds on a loaded 2-core machine.
 */
const bulkVolumeSizeBytes = 64 * 1024 * 1024;
const bulkWriteBytes = 256 * 1024;
const bulkInFlight = 2;
const bulkBytesPerSecond = 6 * 1024 * 1024;

const variants: readonly (PairOptions & { readonly label: string; readonly bulkGroup: "ga" | "gb" })[] = [
  { label: "push, 4 streams", transfer: "push", streams: 4, bulkGroup: "ga" },
  { label: "pull, 3 streams", transfer: "pull", streams: 3, bulkGroup: "gb" },
  { label: "push, 1 stream", transfer: "push", streams: 1, bulkGroup: "gb" },
];

/** Writes 256 KiB blocks at random places in `volume` until `stopped()` or the node dies; returns how many were answered. */
async function bulkWriter(volume: HostVolume, prng: Prng, stopped: () => boolean): Promise<number> {
  const data = Buffer.alloc(bulkWriteBytes, 0x5a);
  const startMs = Date.now();
  let answered = 0;
  const lane = async (): Promise<void> => {
    while (!stopped()) {
      const offsetBytes = prng.int(0, bulkVolumeSizeBytes / bulkWriteBytes - 1) * bulkWriteBytes;
      await volume.write(offsetBytes, data);
      answered++;
      const aheadMs = (answered * bulkWriteBytes / bulkBytesPerSecond) * 1000 - (Date.now() - startMs);
      if (aheadMs > 0) await sleep(aheadMs);
    }
  };
  await Promise.all(Array.from({ length: bulkInFlight }, lane)).catch(() => undefined);
  return answered;
}

for (const variant of variants) {
  void test(`drill 1 (${variant.label}): dependent writes over host protocol and NBD in two groups, kill -9 the primary, takeover keeps a prefix`, { timeout: 180_000 }, (t) => runDrill(t, async (seed) => {
    const prng = new Prng(seed);
    const runId = prng.int(1, 0xffff_fffe);
    const blockOffset = prng.int(0, blocksPerVolume - 1);
    const phase = phaseClock(t);

    const { a, b } = await startPairNodes();
    const bulk = { name: "vc", size: String(bulkVolumeSizeBytes) };
    await makeGroup(a, "ga", [{ name: "va", size: String(volumeSizeBytes) }, ...(variant.bulkGroup === "ga" ? [bulk] : [])]);
    await makeGroup(a, "gb", [{ name: "vb", size: String(volumeSizeBytes) }, ...(variant.bulkGroup === "gb" ? [bulk] : [])]);
    await pairCreate(a, "ga", b, { ...variant, reflect: "time" });
    await pairCreate(a, "gb", b, { ...variant, reflect: "time" });

    phase("nodes up, both pairs replicating");
    const host = await HostClient.connect({ port: a.hostPort });
    const va: HostVolume = await host.open("va");
    const vb = await NbdClient.connect(a.nbdPort, "vb");
    const bulkHost = await HostClient.connect({ port: a.hostPort });
    const vc = await bulkHost.open("vc");

    const result: WriterResult = { acknowledged: 0, inFlight: 0, failure: "", withTime: 0, withoutTime: 0, viaNbd: 0 };
    let stop = false;
    const writer = (async (): Promise<void> => {
      for (let index = 1; !stop && index <= 2 * blocksPerVolume; index++) {
        const where = placement(index, blockOffset);
        const block = encodeDrillBlock(runId, index, where.volumeTag, where.blockIndex);
        const offsetBytes = where.blockIndex * drillBlockBytes;
        result.inFlight = 1;
        if (where.volumeTag === tagVa) {
          // Every other host write carries the host's time; the rest get the node's recorded time.
          if (index % 4 === 1) {
            await va.write(offsetBytes, block, { writeTimeUs: Date.now() * 1000 });
            result.withTime++;
          } else {
            await va.write(offsetBytes, block);
            result.withoutTime++;
          }
        } else {
          await vb.write(offsetBytes, block);
          result.viaNbd++;
        }
        result.acknowledged = index;
        result.inFlight = 0;
      }
    })().catch((error: unknown) => {
      result.failure = String(error);
    });

    let bulkStop = false;
    const bulkDone = bulkWriter(vc, new Prng(seed ^ 0x9e3779b9), () => bulkStop);

    // Let replication get going in both groups, then pick the moment.
    await waitReflectedProgress(b, ["ga", "gb"], 30, 60_000);
    phase("B reflecting in both groups");
    const extraMs = prng.int(0, 4_000);
    await sleep(extraMs);
    assert.equal(result.failure, "", "the writer failed before the kill");
    const before = { ga: await pairInfo(a, "ga"), gb: await pairInfo(a, "gb") };
    await a.kill();
    await writer;
    stop = true;
    bulkStop = true;
    const bulkAnswered = await bulkDone;
    host.close().catch(() => undefined);
    bulkHost.close().catch(() => undefined);
    vb.destroy();
    t.diagnostic(`killed A ${extraMs} ms after progress: ${result.acknowledged} acknowledged, ${result.inFlight} in flight (${result.failure})`);
    t.diagnostic(`writes: ${result.withTime} host with time, ${result.withoutTime} host without, ${result.viaNbd} NBD; ${bulkAnswered} bulk 256 KiB writes to vc in ${variant.bulkGroup}`);
    for (const [group, info] of Object.entries(before)) {
      t.diagnostic(`A's view before the kill, ${group}: accepted ${info.acceptedSequence} arrived ${info.arrivedSequence} reflected ${info.reflectedSequence}, lag ${info.lagRecords} records ${(info.lagBytes / 1048576).toFixed(1)} MiB ${info.lagSeconds.toFixed(3)} s`);
    }
    assert.ok(result.failure !== "", "the writer stopped because A died, not because it ran out of blocks");

    phase("A killed");
    const takeoverText = await takeover(b, ["ga", "gb"], { force: true }); // A was killed: its site is declared lost
    phase("takeover done");
    t.diagnostic(`takeover: ${takeoverText.replaceAll("\n", "; ")}`);

    const found: FoundWrite[] = [];
    const problems: string[] = [];
    for (const [name, tag] of [["va", tagVa], ["vb", tagVb]] as const) {
      const decoded = decodeDrillImage(await readExport(b, name), runId, tag);
      found.push(...decoded.found);
      problems.push(...decoded.problems.map((p) => `${name}: ${p}`));
    }
    assert.deepEqual(problems.slice(0, 10), [], `B's images hold blocks that are not intact drill writes (seed ${seed})`);
    const describe = (index: number): string => {
      const where = placement(index, blockOffset);
      return `${where.volumeTag === tagVa ? "va" : "vb"} block ${where.blockIndex}`;
    };
    const verdict = checkPrefix(found, result.acknowledged, result.inFlight, describe);
    t.diagnostic(`B holds writes 1..${verdict.prefix} (${verdict.present} present) of ${result.acknowledged} acknowledged`);
    assert.deepEqual(verdict.violations, [], `seed ${seed}`);
    assert.ok(verdict.prefix >= 1, `B holds no write at all although it had reflected records before the kill (seed ${seed})`);
    phase(`A restarted: ${await restartOldPrimary(a, ["ga", "gb"])}`);
  }));
}
