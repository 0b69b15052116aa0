// Proves the journal-before-volume rule (issue 6, kind 2; docs/journal.md) on the real
// GroupWriter over a real journal and volume file: an answered write is in the journal file
// but not in the volume file until the journal holds it durably; a power loss at that moment
// (the journal's unsynced tail gone) therefore leaves a volume that the surviving journal
// explains block for block. Once a group commit (FLUSH) makes it durable, the write reaches
// the volume; a read after the answer sees it either way; and within groupApplyDelayMsMax
// after the answer a group commit is made even without a FLUSH.
import { test } from "node:test";
import assert from "node:assert/strict";
import { open } from "node:fs/promises";
import { join } from "node:path";
import pino from "pino";
import { asVolumeId } from "../../src/core/types.ts";
import { ApplyOrder } from "../../src/primary/apply-order.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupWriter, type GroupVolume } from "../../src/primary/group-writer.ts";
import { NodeStamper } from "../../src/primary/stamper.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { removeDir, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const KiB = 1024;

/** The volume file's bytes as the file (the page cache) holds them, read through a separate handle. */
async function fileBytes(path: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const out = Buffer.alloc(lengthBytes);
    await handle.read(out, 0, lengthBytes, offsetBytes);
    return out;
  } finally {
    await handle.close();
  }
}

void test("an answered write reaches the volume only once the journal holds it durably; a read sees it at once; the apply deadline bounds the wait", async () => {
  const dir = await tempDir("order");
  try {
    const volumePath = join(dir, "v.vol");
    const file = await VolumeFile.create(nodeFileSystem, volumePath, 1024 * KiB);
    const { journal } = await GroupJournal.open(join(dir, "journal"), { fileSystem: nodeFileSystem, bytesMax: 64 * 1024 * KiB, nextSequence: 1 });
    const order = new ApplyOrder();
    const volumes = new Map<number, GroupVolume>([[1, { id: asVolumeId(1), file, order }]]);
    const writer = new GroupWriter({
      groupId: 1, name: "g", journal, stamper: new NodeStamper("counter", () => 0), volumes, nextSequence: 1, appliedSequence: 0,
      checkpointSequence: 0, clock: systemClock, logger: pino({ level: "silent" }), persistCheckpoint: () => Promise.resolve(),
    });
    const data = Buffer.alloc(4 * KiB, 0xab);
    await writer.write(1, 8 * KiB, data, false, undefined);
    // Answered: in the journal file, not yet durable, and not on the volume.
    assert.equal(journal.writtenSequence, 1);
    assert.equal(journal.durableSequence, 0, "no group commit yet");
    assert.ok((await fileBytes(volumePath, 8 * KiB, 4 * KiB)).every((b) => b === 0), "the volume does not hold a write its journal could still lose");
    assert.equal(writer.appliedSequence, 0);
    // A read after the answer sees the write (it waits for the apply, which it hurries).
    assert.ok(order.settledOver(8 * KiB, 12 * KiB) !== undefined, "the answered write is pending for readers");
    await writer.flush();
    await order.settledOver(8 * KiB, 12 * KiB);
    assert.equal(journal.durableSequence, 1);
    assert.ok((await fileBytes(volumePath, 8 * KiB, 4 * KiB)).equals(data), "durable in the journal, then on the volume");
    assert.equal(writer.appliedSequence, 1);

    // Without a FLUSH: the apply deadline makes the group commit.
    await writer.write(1, 16 * KiB, data, false, undefined);
    // No fdatasync of its own: answered while the journal holds it durably only through record 1.
    assert.equal(journal.durableSequence, 1, "answered before any group commit");
    assert.ok((await fileBytes(volumePath, 16 * KiB, 4 * KiB)).every((b) => b === 0));
    while (writer.appliedSequence < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.ok(journal.durableSequence >= 2, "durable before applied");
    assert.ok((await fileBytes(volumePath, 16 * KiB, 4 * KiB)).equals(data));

    // A power loss now would keep the journal's durable records; every volume block is explained by them.
    await writer.close();
    await journal.close();
    await file.close();
  } finally {
    await removeDir(dir);
  }
});
