// Proves the journal fdatasyncs in the background once enough bytes are written with nobody
// calling sync(): after 40 MiB of appends (past the 32 MiB threshold) the durable sequence
// moves on by itself and an fdatasync was counted; a few small appends start none. Real files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupJournal } from "../../src/storage/journal.ts";
import { makeRecord, removeDir, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const options = { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1 };
const MiB = 1024 * 1024;

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

void test("a few small appends start no fdatasync; 40 MiB of appends make themselves durable without sync()", async () => {
  const dir = await tempDir("background-sync");
  try {
    const { journal } = await GroupJournal.open(dir, options);
    for (let sequence = 1; sequence <= 10; sequence += 1) await journal.append(makeRecord(sequence, 4096));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(journal.fsyncCount, 0, "no fdatasync for a few KiB");
    assert.equal(journal.durableSequence, 0);
    const appends: Promise<void>[] = [];
    for (let sequence = 11; sequence <= 50; sequence += 1) appends.push(journal.append(makeRecord(sequence, MiB)));
    await Promise.all(appends);
    assert.ok(await waitFor(() => journal.durableSequence >= 32, 10_000), `durable sequence moved on by itself (at ${journal.durableSequence})`);
    assert.ok(journal.fsyncCount >= 1);
    await journal.close();
  } finally {
    await removeDir(dir);
  }
});
