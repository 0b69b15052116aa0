// Proves that data directories written by the previous landed versions open and carry on:
// the primary and secondary of an active pair, both killed with kill -9 by that version,
// start with this one, the pairs catch up (`pair wait`), the images are equal and hold what
// the old version was given, and a further kill -9 and restart of each node changes none of
// that. Fixtures: test/fixtures/c1cab4b-pair.md (the primary's journal holds time-advance
// records, which c1cab4b itself could not recover) and test/fixtures/010f61e-pair.md (record
// format 1 and replication protocol 1 on disk, a consistency domain of two groups, one of
// them with two volumes, a third group detached from it on the secondary, writes the
// secondary never got); a paired volume of the 010f61e pair then grows (volume resize) on both.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { assertSameImages, describePair, firstDifference, NbdClient, pairInfo, pairWait, readExport, waitPairState } from "./drill-lib.ts";
import { cliOk, freePorts, mgmtJson, runOk, startNode, tmpDir, waitFor, type RunningNode } from "./harness.ts";

const mib = 1024 * 1024;
const kib = 1024;

/** A byte range of a volume and the pattern byte the old version wrote there (qemu-io write -P). */
interface Written { readonly offsetBytes: number; readonly lengthBytes: number; readonly byte: number }
type Expected = Readonly<Record<string, readonly Written[]>>;

/** What the volume holds: the written ranges, zero elsewhere. */
function expectedImage(expected: Expected, volume: string, sizeBytes: number): Buffer {
  const image = Buffer.alloc(sizeBytes);
  for (const range of expected[volume] ?? []) image.fill(range.byte, range.offsetBytes, range.offsetBytes + range.lengthBytes);
  return image;
}

/** Checks that `volume` on `node`, read over NBD, holds exactly what the old version was given. */
async function assertExpectedImage(node: RunningNode, expected: Expected, volume: string, what: string): Promise<void> {
  const image = await readExport(node, volume);
  const want = expectedImage(expected, volume, image.length);
  const at = firstDifference(image, want);
  if (at >= 0) assert.fail(`${volume} on ${node.id} ${what}: first difference at byte ${at} (0x${(image[at] ?? 0).toString(16)}, expected 0x${(want[at] ?? 0).toString(16)})`);
}

/**
 * Unpacks a fixture (primary/ and secondary/) into a fresh directory and points the
 * primary's pair records at the secondary's management and replication ports this test
 * picked (the fixture names the ports the old nodes had). Returns the directory and the
 * secondary's four ports.
 */
async function unpackPair(fixtureName: string): Promise<{ root: string; bPorts: readonly [number, number, number, number] }> {
  const root = await tmpDir("tidemark-old-pair-");
  await runOk("tar", ["-xzf", fileURLToPath(new URL(`../fixtures/${fixtureName}`, import.meta.url)), "-C", root]); // sparse files come back sparse
  const [bMgmt, bNbd, bHost, bRepl] = await freePorts(4);
  const primaryMetadata = join(root, "primary", "node.json");
  const metadata = JSON.parse(await readFile(primaryMetadata, "utf8")) as { groups: { pair?: { remoteUrl: string; remoteReplAddress: string } }[] };
  for (const group of metadata.groups) {
    if (group.pair === undefined) continue;
    group.pair.remoteUrl = `http://127.0.0.1:${String(bMgmt)}`;
    group.pair.remoteReplAddress = `127.0.0.1:${String(bRepl)}`;
  }
  await writeFile(primaryMetadata, JSON.stringify(metadata, null, 2));
  return { root, bPorts: [bMgmt!, bNbd!, bHost!, bRepl!] };
}

/** The node's `metadata_migrated` log lines, over every start so far. */
function migrationLines(node: RunningNode): string[] {
  return node.logTail(100_000).split("\n").filter((line) => line.includes('"event":"metadata_migrated"'));
}

/** The node's log lines at level error or fatal (pino 50, 60), over every start so far. */
function errorLines(node: RunningNode): string[] {
  return node.logTail(100_000).split("\n").filter((line) => /^\{"level":(50|60),/.test(line));
}

const c1cab4bExpected: Expected = {
  fv1: [
    { offsetBytes: 0, lengthBytes: mib, byte: 0x11 },
    { offsetBytes: mib, lengthBytes: 256 * kib, byte: 0x33 },
    { offsetBytes: 2 * mib, lengthBytes: 4 * kib, byte: 0x55 },
    { offsetBytes: 4 * mib, lengthBytes: 64 * kib, byte: 0x22 },
  ],
  fv2: [{ offsetBytes: 0, lengthBytes: 128 * kib, byte: 0x44 }],
};

void test("an active pair's data directories from c1cab4b, both killed -9: they start, the pair carries on, images equal and complete", { timeout: 120_000 }, async (t) => {
  const { root, bPorts } = await unpackPair("c1cab4b-pair.tar.gz");
  const b = await startNode({ id: "fx-b", dataDir: join(root, "secondary"), ports: bPorts });
  const a = await startNode({ id: "fx-a", dataDir: join(root, "primary") });
  // c1cab4b (like every version up to c7f8e8c) named the secondary's record `target`: migrated in place, said once.
  const migrated = migrationLines(b);
  assert.equal(migrated.length, 1, `the secondary logs one metadata_migrated line: ${migrated.join("\n")}`);
  assert.ok(migrated[0]!.includes("'target' is now 'secondary'"), migrated[0]!);
  const onDisk = JSON.parse(await readFile(join(root, "secondary", "node.json"), "utf8")) as { groups: Record<string, unknown>[] };
  assert.ok(onDisk.groups.every((g) => !("target" in g)) && onDisk.groups.some((g) => "secondary" in g), "node.json is saved in the new form");
  const waited = await pairWait(a, "fg", "30s");
  t.diagnostic(`after the upgrade: ${waited}; ${describePair(await pairInfo(a, "fg"))}`);
  for (const volume of ["fv1", "fv2"]) {
    await assertExpectedImage(a, c1cab4bExpected, volume, "holds what c1cab4b was given");
    await assertSameImages(a, b, volume);
  }

  for (const node of [a, b]) {
    await node.kill();
    await node.restart();
    await pairWait(a, "fg", "30s");
    if (node === b) assert.equal(migrationLines(b).length, 1, "migrated once, not again at the next start");
    t.diagnostic(`${node.id} killed and restarted: ${describePair(await pairInfo(a, "fg"))}`);
  }
  // `pair wait` returns at once when nothing is outstanding, possibly before the link is back.
  await waitPairState(a, "fg", "replicating");
  for (const volume of ["fv1", "fv2"]) await assertSameImages(a, b, volume);
  // Issue 9: the old journals hold record format 1 (no wall time); what this version stamps
  // since carries it, and the secondary's consistent-as-of time is known once one is reflected.
  const consistent = await waitFor("the old secondary to know its consistent-as-of time", async () => (await pairInfo(b, "fg")).consistentAsOf ?? undefined, { timeoutMs: 30_000 });
  assert.ok(Math.abs(Date.parse(consistent) - Date.now()) < 60_000, `consistent as of a time this version stamped: ${consistent}`);

  // The old secondary's data directory takes over (issue 8: the takeover's intent is saved in
  // node.json, a field the old version never wrote) and starts again afterwards.
  await a.kill();
  const taken = await mgmtJson(b.mgmtUrl, "/v1/takeover", { groups: ["fg"], force: true }) as { results: { state: string }[] };
  assert.equal(taken.results[0]?.state, "takeover");
  const after = JSON.parse(await readFile(join(root, "secondary", "node.json"), "utf8")) as Record<string, unknown>;
  assert.ok(!("takeoverIntent" in after), "a finished takeover leaves no intent behind");
  await b.kill();
  await b.restart();
  for (const volume of ["fv1", "fv2"]) await assertExpectedImage(b, c1cab4bExpected, volume, "taken over on the old secondary holds what c1cab4b was given");
});

// test/fixtures/010f61e-pair.md: what each qemu-io write put where. fg (fv1, fv2) and fh (fv3)
// share the primary's consistency domain on the secondary; fd (fv4) was detached from it there;
// fv5 is in no group and not replicated.
const expected010: Expected = {
  fv1: [
    { offsetBytes: 0, lengthBytes: mib, byte: 0x11 },
    { offsetBytes: mib, lengthBytes: 256 * kib, byte: 0x13 },
    { offsetBytes: 2 * mib, lengthBytes: 4 * kib, byte: 0x15 },
    { offsetBytes: 3 * mib, lengthBytes: 4 * kib, byte: 0x14 },
    { offsetBytes: 4 * mib, lengthBytes: 64 * kib, byte: 0x12 },
    { offsetBytes: 5 * mib, lengthBytes: 64 * kib, byte: 0x16 },
  ],
  fv2: [
    { offsetBytes: 0, lengthBytes: 128 * kib, byte: 0x22 },
    { offsetBytes: mib, lengthBytes: 64 * kib, byte: 0x21 },
    { offsetBytes: 1536 * kib, lengthBytes: 8 * kib, byte: 0x24 },
    { offsetBytes: 2 * mib, lengthBytes: 4 * kib, byte: 0x23 },
  ],
  fv3: [
    { offsetBytes: 0, lengthBytes: 256 * kib, byte: 0x31 },
    { offsetBytes: mib, lengthBytes: 4 * kib, byte: 0x33 },
    { offsetBytes: 1536 * kib, lengthBytes: 8 * kib, byte: 0x37 },
    { offsetBytes: 2 * mib, lengthBytes: 64 * kib, byte: 0x32 },
    { offsetBytes: 3 * mib, lengthBytes: 8 * kib, byte: 0x34 },
    { offsetBytes: 3 * mib + 8 * kib, lengthBytes: 4 * kib, byte: 0x35 },
    { offsetBytes: 3584 * kib, lengthBytes: 4 * kib, byte: 0x38 },
  ],
  fv4: [
    { offsetBytes: 0, lengthBytes: 64 * kib, byte: 0x41 },
    { offsetBytes: 512 * kib, lengthBytes: 8 * kib, byte: 0x43 },
    { offsetBytes: mib, lengthBytes: 4 * kib, byte: 0x42 },
    { offsetBytes: 1536 * kib, lengthBytes: 4 * kib, byte: 0x44 },
  ],
  fv5: [{ offsetBytes: 0, lengthBytes: 4 * kib, byte: 0x51 }],
};
const groups010 = { fg: ["fv1", "fv2"], fh: ["fv3"], fd: ["fv4"] } as const;

/**
 * Every pair of the 010f61e fixture catches up (`pair wait`), its images are equal on both
 * sides and hold `expected`, and its status is sane on both: replicating, and, once `stamped`
 * (a record this version stamped, so with a wall time, was reflected), consistent as of a
 * recent time on both sides; fd still detached on the secondary, the others not.
 */
async function check010Pairs(t: TestContext, a: RunningNode, b: RunningNode, expected: Expected, when: string, stamped: boolean): Promise<void> {
  for (const [group, volumes] of Object.entries(groups010)) {
    const waited = await pairWait(a, group, "30s");
    t.diagnostic(`${when}: ${group}: ${waited}`);
    for (const volume of volumes) {
      await assertExpectedImage(a, expected, volume, `${when}: holds what it was given`);
      await assertSameImages(a, b, volume);
    }
    for (const node of [a, b]) {
      // After a restart `pair wait` may return before the link is back (nothing was outstanding).
      const info = await waitPairState(node, group, "replicating");
      t.diagnostic(`${when}: ${node.id} ${describePair(info)}; consistent as of ${String(info.consistentAsOf)}; reason ${String(info.reason)}`);
      assert.equal(info.role, node === a ? "primary" : "secondary");
      assert.ok(info.reflectedSequence <= info.arrivedSequence && info.arrivedSequence <= info.acceptedSequence, `${when}: ${group} on ${node.id}: reflected <= arrived <= accepted`);
      if (node === b) assert.equal(/detached/.test(info.reason ?? ""), group === "fd", `${when}: ${group} on the secondary: reason ${String(info.reason)}`);
      if (!stamped) continue;
      const consistentAsOf = await waitFor(`${when}: ${group} on ${node.id} consistent as of a time`, async () => (await pairInfo(node, group)).consistentAsOf ?? undefined, { timeoutMs: 30_000 });
      assert.ok(Math.abs(Date.parse(consistentAsOf) - Date.now()) < 60_000, `${when}: ${group} on ${node.id} consistent as of a time this version stamped: ${consistentAsOf}`);
    }
  }
  await assertExpectedImage(a, expected, "fv5", `${when}: (in no group) holds what it was given`);
  for (const node of [a, b]) await cliOk(["pair", "status", "--check"], { node: node.mgmtUrl }); // exit 0: every pair healthy
}

void test("an active pair's data directories from 010f61e, both killed -9 with writes the secondary lacks: they start, every pair carries on, images equal and complete", { timeout: 240_000 }, async (t) => {
  const { root, bPorts } = await unpackPair("010f61e-pair.tar.gz");
  const b = await startNode({ id: "fx-b", dataDir: join(root, "secondary"), ports: bPorts });
  const a = await startNode({ id: "fx-a", dataDir: join(root, "primary") });
  // 010f61e's node.json is this version's: the fields added since (readOnly, secondary.ending,
  // reflectedWallTimeUs, ...) are optional, so nothing is migrated and nothing is said.
  for (const node of [a, b]) assert.deepEqual(migrationLines(node), [], `${node.id}: no metadata_migrated line`);
  await check010Pairs(t, a, b, expected010, "after the upgrade", false);

  // Writes this version stamps (record format 2, with a wall time) are replicated, one per group.
  const written: Expected = {
    fv2: [{ offsetBytes: 3 * mib, lengthBytes: 4 * kib, byte: 0x2f }],
    fv3: [{ offsetBytes: 3840 * kib, lengthBytes: 4 * kib, byte: 0x3f }],
    fv4: [{ offsetBytes: 1792 * kib, lengthBytes: 4 * kib, byte: 0x4f }],
  };
  for (const [volume, ranges] of Object.entries(written)) {
    const nbd = await NbdClient.connect(a.nbdPort, volume);
    try {
      for (const range of ranges) await nbd.write(range.offsetBytes, Buffer.alloc(range.lengthBytes, range.byte), { fua: true });
    } finally {
      await nbd.close();
    }
  }
  const expected: Expected = Object.fromEntries(Object.entries(expected010).map(([volume, ranges]) => [volume, [...ranges, ...(written[volume] ?? [])]]));
  await check010Pairs(t, a, b, expected, "after new writes", true);

  for (const node of [a, b]) {
    await node.kill();
    await node.restart();
    await check010Pairs(t, a, b, expected, `${node.id} killed and restarted`, true);
  }
  // A paired volume of the old data directories grows (volume resize: a journal record kind
  // 010f61e never wrote, protocol version 3): the secondary grows with it, a write past the old end arrives.
  const listed = await mgmtJson(a.mgmtUrl, "/v1/volumes") as { volumes: { name: string; sizeBytes: number }[] };
  const oldBytes = listed.volumes.find((v) => v.name === "fv3")?.sizeBytes ?? 0;
  await cliOk(["volume", "resize", "fv3", "--size", String(oldBytes + 4 * mib)], { node: a.mgmtUrl });
  const pastOldEnd: Written = { offsetBytes: oldBytes + mib, lengthBytes: 64 * kib, byte: 0x3e };
  const nbd = await NbdClient.connect(a.nbdPort, "fv3");
  try {
    await nbd.write(pastOldEnd.offsetBytes, Buffer.alloc(pastOldEnd.lengthBytes, pastOldEnd.byte), { fua: true });
  } finally {
    await nbd.close();
  }
  await check010Pairs(t, a, b, { ...expected, fv3: [...(expected.fv3 ?? []), pastOldEnd] }, "after a resize", true);
  assert.equal((await readExport(b, "fv3")).length, oldBytes + 4 * mib, "the secondary's fv3 grew");

  for (const node of [a, b]) {
    assert.deepEqual(migrationLines(node), [], `${node.id}: no metadata_migrated line at any start`);
    assert.deepEqual(errorLines(node), [], `${node.id}: no error logged`);
  }
});
