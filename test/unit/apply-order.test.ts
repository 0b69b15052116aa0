// Proves that overlapping applies reach a real file in acceptance order even when the
// earlier one is slower, while disjoint ones run side by side.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ApplyOrder } from "../../src/primary/apply-order.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

test("a later overlapping write waits for the earlier one; the file ends with the later data", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tm-order-"));
  const file = await VolumeFile.create(nodeFileSystem, join(dir, "v.vol"), 1 << 20);
  try {
    const order = new ApplyOrder();
    const events: string[] = [];
    const first = order.run(0, 8192, async () => {
      await sleep(30);
      await file.write(0, Buffer.alloc(8192, 1));
      events.push("first");
    });
    const disjoint = order.run(65536, 69632, async () => {
      await file.write(65536, Buffer.alloc(4096, 3));
      events.push("disjoint");
    });
    const second = order.run(4096, 12288, async () => {
      await file.write(4096, Buffer.alloc(8192, 2));
      events.push("second");
    });
    await Promise.all([first, disjoint, second]);
    assert.deepEqual(events, ["disjoint", "first", "second"]);
    const data = await file.read(0, 12288);
    assert.equal(data[0], 1);
    assert.equal(data[4096], 2);
    assert.equal(data[12287], 2);
    assert.equal(order.size, 0);
  } finally {
    await file.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("a failed earlier apply does not block the later one", async () => {
  const order = new ApplyOrder();
  const failing = order.run(0, 10, () => Promise.reject(new Error("disk said no")));
  let ran = false;
  const later = order.run(5, 15, () => {
    ran = true;
    return Promise.resolve();
  });
  await assert.rejects(failing, /disk said no/);
  await later;
  assert.equal(ran, true);
});
