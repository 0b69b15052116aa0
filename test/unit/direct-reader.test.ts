// Proves the initial copy's O_DIRECT reader returns exactly the bytes an ordinary read does
// (data, holes and an odd-sized tail), including reads issued concurrently, on a real file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { DirectReader } from "../../src/storage/direct-reader.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

test("reads equal buffered reads: data, holes, an odd-sized tail, concurrent calls", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tm-direct-"));
  try {
    const path = join(dir, "v.vol");
    const sizeBytes = 8 * 1024 * 1024 + 1536; // not a whole number of 4 KiB blocks
    const handle = await open(path, "w+");
    await handle.truncate(sizeBytes);
    const data = randomBytes(1024 * 1024);
    await handle.write(data, 0, data.length, 2 * 1024 * 1024);
    await handle.write(data.subarray(0, 1536), 0, 1536, sizeBytes - 1536);
    await handle.close();
    const chunkBytes = 1024 * 1024;
    const reader = await DirectReader.open(nodeFileSystem, path, chunkBytes);
    const check = await open(path, "r");
    try {
      const reads: Promise<void>[] = [];
      for (let offset = 0; offset < sizeBytes; offset += chunkBytes) {
        const length = Math.min(chunkBytes, sizeBytes - offset);
        reads.push((async () => {
          const got = await reader.read(offset, length);
          const want = Buffer.alloc(length);
          await check.read(want, 0, length, offset);
          assert.ok(got.equals(want), `chunk at ${offset} (+${length}) matches (direct I/O: ${reader.usesDirectIo})`);
        })());
      }
      await Promise.all(reads);
    } finally {
      await reader.close();
      await check.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
