// Proves that data directories written by the previous landed version (c1cab4b) open and
// carry on: the primary and secondary of an active pair, both killed with kill -9 by that
// version, start with this one (the primary's journal holds time-advance records, which
// c1cab4b itself could not recover), the pair catches up (`pair wait`), the images are
// equal and hold what the old version was given, and a further kill -9 and restart of
// each node changes none of that. Fixture: test/fixtures/c1cab4b-pair.md.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { assertSameImages, describePair, pairInfo, pairWait, readExport } from "./drill-lib.ts";
import { freePorts, mgmtJson, runOk, startNode, tmpDir, waitFor } from "./harness.ts";

const fixture = fileURLToPath(new URL("../fixtures/c1cab4b-pair.tar.gz", import.meta.url));
const mib = 1024 * 1024;

/** Byte ranges of fv1 and fv2 and the pattern byte the old version wrote there (the rest is zero). */
const expected: Record<string, readonly { offsetBytes: number; lengthBytes: number; byte: number }[]> = {
  fv1: [
    { offsetBytes: 0, lengthBytes: mib, byte: 0x11 },
    { offsetBytes: mib, lengthBytes: 256 * 1024, byte: 0x33 },
    { offsetBytes: 2 * mib, lengthBytes: 4096, byte: 0x55 },
    { offsetBytes: 4 * mib, lengthBytes: 64 * 1024, byte: 0x22 },
  ],
  fv2: [{ offsetBytes: 0, lengthBytes: 128 * 1024, byte: 0x44 }],
};

function expectedImage(volume: string, sizeBytes: number): Buffer {
  const image = Buffer.alloc(sizeBytes);
  for (const range of expected[volume] ?? []) image.fill(range.byte, range.offsetBytes, range.offsetBytes + range.lengthBytes);
  return image;
}

void test("an active pair's data directories from c1cab4b, both killed -9: they start, the pair carries on, images equal and complete", { timeout: 120_000 }, async (t) => {
  const root = await tmpDir("tidemark-old-pair-");
  await runOk("tar", ["-xzf", fixture, "-C", root]); // sparse files come back sparse
  const [bMgmt, bNbd, bHost, bRepl] = await freePorts(4);
  // The fixture's primary names its secondary by the ports the old nodes had; point it at this test's.
  const primaryMetadata = join(root, "primary", "node.json");
  const metadata = JSON.parse(await readFile(primaryMetadata, "utf8")) as { groups: { pair?: { remoteUrl: string; remoteReplAddress: string } }[] };
  for (const group of metadata.groups) {
    if (group.pair === undefined) continue;
    group.pair.remoteUrl = `http://127.0.0.1:${String(bMgmt)}`;
    group.pair.remoteReplAddress = `127.0.0.1:${String(bRepl)}`;
  }
  await writeFile(primaryMetadata, JSON.stringify(metadata, null, 2));

  const b = await startNode({ id: "fx-b", dataDir: join(root, "secondary"), ports: [bMgmt!, bNbd!, bHost!, bRepl!] as const });
  const a = await startNode({ id: "fx-a", dataDir: join(root, "primary") });
  // c1cab4b (like every version up to c7f8e8c) named the secondary's record `target`: migrated in place, said once.
  const migrated = b.logTail(100_000).split("\n").filter((line) => line.includes('"event":"metadata_migrated"'));
  assert.equal(migrated.length, 1, `the secondary logs one metadata_migrated line: ${migrated.join("\n")}`);
  assert.ok(migrated[0]!.includes("'target' is now 'secondary'"), migrated[0]!);
  const onDisk = JSON.parse(await readFile(join(root, "secondary", "node.json"), "utf8")) as { groups: Record<string, unknown>[] };
  assert.ok(onDisk.groups.every((g) => !("target" in g)) && onDisk.groups.some((g) => "secondary" in g), "node.json is saved in the new form");
  const waited = await pairWait(a, "fg", "30s");
  t.diagnostic(`after the upgrade: ${waited}; ${describePair(await pairInfo(a, "fg"))}`);
  for (const volume of ["fv1", "fv2"]) {
    const image = await readExport(a, volume);
    assert.ok(image.equals(expectedImage(volume, image.length)), `${volume} on the primary holds what c1cab4b was given`);
    await assertSameImages(a, b, volume);
  }

  for (const node of [a, b]) {
    await node.kill();
    await node.restart();
    await pairWait(a, "fg", "30s");
    if (node === b) assert.equal(b.logTail(100_000).split("\n").filter((line) => line.includes('"event":"metadata_migrated"')).length, 1, "migrated once, not again at the next start");
    t.diagnostic(`${node.id} killed and restarted: ${describePair(await pairInfo(a, "fg"))}`);
  }
  assert.equal((await pairInfo(a, "fg")).state, "replicating");
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
  for (const volume of ["fv1", "fv2"]) {
    const image = await readExport(b, volume);
    assert.ok(image.equals(expectedImage(volume, image.length)), `${volume} taken over on the old secondary holds what c1cab4b was given`);
  }
});
