// Proves a whole TidemarkNode runs over the simulated disk (NodeOptions.fileSystem): it starts on
// an empty machine, creates a volume and a group, answers FUA writes, stops, and after a power
// loss it starts again on what the disk kept: its data directory, metadata, volume, group and
// every FUA write. Seed by seed; the old code made the data directory's own name durable nowhere,
// so a power loss soon after the first start could take the whole directory.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { TidemarkNode } from "../../src/node/node.ts";
import type { GroupRegistry } from "../../src/primary/group-registry.ts";
import { SimDisk, type Schedule } from "../sim/sim-disk.ts";

/** The disk's operations complete on the next turn of the event loop (latency does not matter here). */
const nextTurn: Schedule = (_delayMs, fn) => {
  setImmediate(fn);
};

function newNode(disk: SimDisk): TidemarkNode {
  const any = { host: "127.0.0.1", port: 0 };
  return new TidemarkNode({
    id: "node-a", dataDir: "/srv/node-a", mgmt: any, nbd: any, host: any, repl: any, writeTimePolicy: "counter",
    logger: pino({ level: "silent" }), fileSystem: disk.mount(),
  });
}

void test("TidemarkNode over the simulated disk: volume, group and FUA writes survive a power loss after a clean stop", async () => {
  for (let seed = 1; seed <= 6; seed += 1) {
    const disk = new SimDisk({ seed, schedule: nextTurn });
    const node = newNode(disk);
    await node.start();
    await node.createVolume("v1", 1024 * 1024);
    await node.createGroup("g1", ["v1"]);
    const handle = node.catalog().open("v1");
    assert.ok(handle !== undefined);
    const data = Buffer.alloc(64 * 1024, seed);
    await handle.write(128 * 1024, data, { fua: true });
    await node.stop();
    disk.crash("power");

    const restarted = newNode(disk);
    await restarted.start();
    try {
      assert.deepEqual(restarted.listVolumes().map((v) => v.name), ["v1"], `seed ${seed}: the volume is there`);
      assert.deepEqual(restarted.listGroups().map((g) => g.name), ["g1"], `seed ${seed}: the group is there`);
      const again = restarted.catalog().open("v1");
      assert.ok(again !== undefined);
      assert.ok((await again.read(128 * 1024, data.length)).equals(data), `seed ${seed}: the FUA write is there`);
    } finally {
      await restarted.stop();
    }
  }
});

void test("a journal fdatasync that fails under a caller other than the host write path (the pair's sync on an idle group) stops the group, which resumes once the disk heals", async () => {
  // Before: only the group writer's own calls stopped the group; an idle group whose journal
  // failed in the pair's sync stayed "ok" with a dead journal, and the pair retried for ever.
  const disk = new SimDisk({ seed: 7, schedule: nextTurn });
  const node = newNode(disk);
  await node.start();
  try {
    await node.createVolume("v1", 1024 * 1024);
    await node.createGroup("g1", ["v1"]);
    const handle = node.catalog().open("v1");
    assert.ok(handle !== undefined);
    await handle.write(0, Buffer.alloc(4096, 1), { fua: true });
    const writer = (node as unknown as { groups: GroupRegistry }).groups.writer("g1");
    assert.ok(writer !== undefined);
    writer.appendTimeAdvance(); // what the pair does on an idle group: appended, not yet durable, nobody in the writer waits for it
    await new Promise((resolve) => setImmediate(resolve));
    disk.failPath(writer.journal.dir, ["sync"]);
    await assert.rejects(writer.journal.sync(), /EIO/);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(node.listGroups().find((g) => g.name === "g1")?.state, "stopped", "the group stopped at once");
    await assert.rejects(handle.write(8192, Buffer.alloc(4096, 2), { fua: true }), /EIO|stopped/, "a stopped group refuses writes");
    disk.heal();
    for (let i = 0; i < 200 && node.listGroups().find((g) => g.name === "g1")?.state === "stopped"; i += 1) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(node.listGroups().find((g) => g.name === "g1")?.state, "ok", "the group resumed by itself");
    await handle.write(8192, Buffer.alloc(4096, 3), { fua: true });
  } finally {
    await node.stop();
  }
});
