// Proves the start-time sweep of what an interrupted delete left (src/node/deleted-leftovers.ts)
// on the real file system: the volume files and journal directories of ids node.json no longer
// names and that lie below its next ids are removed, with a log line each; the live ones, ids
// at or past the next id (a create that crashed before its save) and anything else stay.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { emptyMetadata, type NodeMetadata } from "../../src/metadata/metadata.ts";
import { removeDeletedLeftovers } from "../../src/node/deleted-leftovers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

void test("a start removes the volume files and journal directories deletes left behind, and nothing else", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "tm-leftovers-"));
  try {
    await mkdir(join(dataDir, "volumes"));
    for (const name of ["1.vol", "1.vol.written", "3.vol", "3.vol.written", "7.vol", "notes.txt"]) await writeFile(join(dataDir, "volumes", name), "x");
    for (const name of ["2", "2.1", "4", "4.2", "9", "keep"]) {
      await mkdir(join(dataDir, "journals", name), { recursive: true });
      await writeFile(join(dataDir, "journals", name, "00000000000000000001.tmj"), "x");
    }
    const metadata: NodeMetadata = {
      ...emptyMetadata("n", "2026-01-01T00:00:00.000Z"),
      nextVolumeId: 5,
      nextGroupId: 6,
      volumes: [{ id: 1, name: "v1", sizeBytes: 4096, fileName: "1.vol", createdAt: "2026-01-01T00:00:00.000Z" }],
      groups: [groupOf(2)],
    };
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const removed = await removeDeletedLeftovers(nodeFileSystem, dataDir, metadata, logger);
    assert.deepEqual(removed.map((r) => r.path.slice(dataDir.length + 1)).sort(), ["journals/4", "journals/4.2", "volumes/3.vol", "volumes/3.vol.written"]);
    assert.deepEqual((await readdir(join(dataDir, "volumes"))).sort(), ["1.vol", "1.vol.written", "7.vol", "notes.txt"]);
    assert.deepEqual((await readdir(join(dataDir, "journals"))).sort(), ["2", "2.1", "9", "keep"]);
    assert.equal(lines.filter((l) => l["event"] === "deleted_leftover_removed").length, 4, "one log line each");
    // A second start finds nothing more.
    assert.deepEqual(await removeDeletedLeftovers(nodeFileSystem, dataDir, metadata, logger), []);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

void test("a data directory without the folders yet (a first start) is fine", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "tm-leftovers-"));
  try {
    assert.deepEqual(await removeDeletedLeftovers(nodeFileSystem, dataDir, emptyMetadata("n", "2026-01-01T00:00:00.000Z"), pino({ level: "silent" })), []);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

function groupOf(id: number): NodeMetadata["groups"][number] {
  return { id, name: `g${id}`, volumeIds: [], checkpointSequence: 0, nextSequence: 1, journalBytesMax: 64 * 1024 * 1024, createdAt: "2026-01-01T00:00:00.000Z" };
}
