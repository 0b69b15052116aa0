// Proves what the node's GroupRegistry (src/primary/group-registry.ts) promises on its own,
// over the real metadata store, volume registry, journal and both roles on the simulated disk:
// a group id is never handed out twice (not to concurrent reservations, not after a create
// whose save failed and left its journal directory behind, not after a restart), and a create
// claims its volumes and its name before its first await, so a concurrent create of either is
// refused (TM_ERR_CONFLICT, TM_ERR_EXISTS) and both are free again once the create is over.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { journalBytesMin } from "../../src/core/limits.ts";
import { MetadataStore } from "../../src/metadata/metadata-store.ts";
import { systemClock } from "../../src/node/clock.ts";
import { GroupRegistry } from "../../src/primary/group-registry.ts";
import type { GroupWriter } from "../../src/primary/group-writer.ts";
import { PrimaryRole } from "../../src/primary/primary-role.ts";
import { NodeStamper, wallClockUs } from "../../src/primary/stamper.ts";
import { makeDirectoryDurable } from "../../src/storage/durable-fs.ts";
import { SecondaryRole } from "../../src/secondary/secondary-role.ts";
import { tcpTransport } from "../../src/transport/transport.ts";
import { VolumeRegistry } from "../../src/volumes/volume-registry.ts";
import { SimDisk, type Schedule } from "../sim/sim-disk.ts";

const dataDir = "/srv/node-a";
const volumeBytes = 1024 * 1024;

/** The disk's operations complete on the next turn of the event loop. */
const nextTurn: Schedule = (_delayMs, fn) => {
  setImmediate(fn);
};

interface Parts {
  readonly store: MetadataStore;
  readonly volumes: VolumeRegistry;
  readonly groups: GroupRegistry;
}

/** The parts of a node the registry works with, wired as node.ts wires them, started as it starts them (no lock, no listeners). */
async function openParts(disk: SimDisk): Promise<Parts> {
  const fileSystem = disk.mount();
  const logger = pino({ level: "silent" });
  const clock = systemClock;
  const stamper = new NodeStamper("counter", wallClockUs(clock));
  const store = new MetadataStore({ fileSystem, dataDir, logger, writeTime: () => stamper.state, critical: (_what, write) => write() });
  const volumes = new VolumeRegistry({ fileSystem, dataDir, logger, store, clock });
  const metadata = () => store.current;
  const updateMetadata = (change: Parameters<MetadataStore["update"]>[0], critical?: boolean): Promise<void> => store.update(change, critical);
  const primary: PrimaryRole = new PrimaryRole({
    nodeId: "node-a", logger, clock, transport: tcpTransport, metadata, updateMetadata, writeTimes: () => ({ writeTimePolicy: "counter", maxClockSkewMs: 0 }),
    writer: (group): GroupWriter | undefined => groups.writer(group),
    isSecondary: (group) => secondaries.has(group),
    volume: (volumeId) => volumes.byId.get(volumeId),
    prepareSecondary: () => Promise.reject(new Error("no other node in this test")),
    endSecondary: () => Promise.reject(new Error("no other node in this test")),
    checkSecondary: () => Promise.reject(new Error("no other node in this test")),
  });
  const secondaries = new SecondaryRole({
    nodeId: "node-a", logger, clock, fileSystem, replAddress: () => "127.0.0.1:1", journalBytesMax: journalBytesMin, metadata, updateMetadata,
    withSpaceReserve: (_what, write) => write(),
    volumes: {
      byName: () => undefined,
      byId: () => undefined,
      create: () => Promise.reject(new Error("no secondaries in this test")),
      setSecondary: () => undefined,
      grow: () => Promise.reject(new Error("no secondaries in this test")),
    },
    reserveGroupId: () => groups.reserveGroupId(),
    journalDir: (record) => groups.journalDir(record),
    openJournal: (record, options) => groups.openJournal(record, options),
    becomeWritable: (record, journal) => groups.becomeWritable(record, journal),
  });
  const groups: GroupRegistry = new GroupRegistry({
    dataDir, fileSystem, logger, clock, store, volumes, stamper, primary, secondaries, journalBytesMin, cutDamagedTail: false,
  });
  for (const dir of [dataDir, `${dataDir}/volumes`, `${dataDir}/journals`]) await makeDirectoryDurable(fileSystem, dir);
  await store.load("node-a", new Date(clock.wallMs()).toISOString(), journalBytesMin);
  await volumes.open();
  await groups.recover();
  return { store, volumes, groups };
}

async function closeParts(parts: Parts): Promise<void> {
  await parts.groups.close();
  await parts.volumes.close();
}

/** The ids node.json holds, by group name. */
function savedIds(store: MetadataStore): Record<string, number> {
  return Object.fromEntries(store.current.groups.map((g) => [g.name, g.id]));
}

void test("group ids are never handed out twice: not to reservations in flight, not after a create whose save failed, not after a restart", async () => {
  const disk = new SimDisk({ seed: 1, schedule: nextTurn });
  const parts = await openParts(disk);
  for (const name of ["v1", "v2"]) await parts.volumes.create(name, volumeBytes);

  // The save fails after the journal directory of id 1 was made: that id is spent.
  disk.failPath(`${dataDir}/node.json.tmp`, ["write"]);
  await assert.rejects(parts.groups.create("g1", ["v1"], journalBytesMin), /EIO/);
  disk.heal();
  assert.deepEqual(savedIds(parts.store), {}, "nothing saved");
  assert.ok((await disk.mount().readDirectory(`${dataDir}/journals`)).includes("1"), "the failed create left journal directory 1");

  // The failed create let its volume and name go; the retry gets a new id and a new journal.
  const g1 = await parts.groups.create("g1", ["v1"], journalBytesMin);
  assert.equal(g1.nextSequence, 1);
  assert.equal(savedIds(parts.store).g1, 2, "not id 1 again: its directory may hold a journal");

  // A reservation not yet saved (a secondary being prepared) is not handed out again.
  assert.equal(parts.groups.reserveGroupId(), 3);
  await parts.groups.create("g2", ["v2"], journalBytesMin);
  assert.deepEqual(savedIds(parts.store), { g1: 2, g2: 4 });
  assert.equal(parts.store.current.nextGroupId, 5);
  await closeParts(parts);

  // After a restart the ids go on from what node.json says.
  const restarted = await openParts(disk);
  try {
    assert.deepEqual(restarted.groups.list().map((g) => [g.name, g.state]), [["g1", "ok"], ["g2", "ok"]]);
    assert.equal(restarted.groups.reserveGroupId(), 5);
    assert.equal(restarted.groups.reserveGroupId(), 6);
  } finally {
    await closeParts(restarted);
  }
});

void test("a create claims its volumes and its name before its first await: concurrent creates of either are refused, and both are free once it is over", async () => {
  const disk = new SimDisk({ seed: 2, schedule: nextTurn });
  const parts = await openParts(disk);
  try {
    for (const name of ["v1", "v2", "v3"]) await parts.volumes.create(name, volumeBytes);
    const first = parts.groups.create("g1", ["v1", "v2"], journalBytesMin);
    await assert.rejects(parts.groups.create("g2", ["v3", "v2"], journalBytesMin),
      (error: Error & { code?: string }) => error.code === "TM_ERR_CONFLICT" && /volume v2 is being put into another group right now/.test(error.message));
    await assert.rejects(parts.groups.create("g1", ["v3"], journalBytesMin),
      (error: Error & { code?: string }) => error.code === "TM_ERR_EXISTS" && /group g1 already exists/.test(error.message));
    // Refused before it claimed anything: v3 is still free, for a create that runs alongside.
    await parts.groups.create("g3", ["v3"], journalBytesMin);
    await first;
    assert.deepEqual(parts.groups.list().map((g) => [g.name, g.volumes]).sort(), [["g1", ["v1", "v2"]], ["g3", ["v3"]]]);
    // Once it is over the volume belongs to the group (a different refusal) and the name is taken.
    await assert.rejects(parts.groups.create("g2", ["v2"], journalBytesMin),
      (error: Error & { code?: string }) => error.code === "TM_ERR_CONFLICT" && /volume v2 already belongs to group g1/.test(error.message));
    await assert.rejects(parts.groups.create("g1", ["v3"], journalBytesMin), (error: Error & { code?: string }) => error.code === "TM_ERR_EXISTS");
  } finally {
    await closeParts(parts);
  }
});

void test("deletes racing creates: a volume being put into a group is not deleted, node.json never names a deleted volume, a deleted group's volumes are free again", async () => {
  const disk = new SimDisk({ seed: 3, schedule: nextTurn });
  const parts = await openParts(disk);
  try {
    for (const name of ["v1", "v2"]) await parts.volumes.create(name, volumeBytes);
    const creating = parts.groups.create("g1", ["v1"], journalBytesMin);
    await assert.rejects(parts.volumes.delete("v1", true),
      (error: Error & { code?: string }) => error.code === "TM_ERR_STATE" && /being put into a group right now/.test(error.message));
    await creating;
    await assert.rejects(parts.volumes.delete("v1", true),
      (error: Error & { code?: string }) => error.code === "TM_ERR_STATE" && /in group g1; delete the group first/.test(error.message));
    // A delete that starts first: the create no longer finds the volume.
    const deleting = parts.volumes.delete("v2", false);
    await assert.rejects(parts.groups.create("g2", ["v2"], journalBytesMin), (error: Error & { code?: string }) => error.code === "TM_ERR_NOT_FOUND");
    assert.equal(await deleting, true);
    // The check inside the serialised save: a group naming a volume that is gone is never saved.
    await assert.rejects(parts.store.update((m) => {
      m.groups.push({ id: 99, name: "ghost", volumeIds: [2], checkpointSequence: 0, nextSequence: 1, journalBytesMax: journalBytesMin, createdAt: "2026-01-01T00:00:00.000Z" });
    }), (error: Error & { code?: string }) => error.code === "TM_ERR_CONFLICT" && /volume #2, which is deleted/.test(error.message));
    assert.deepEqual(parts.store.current.groups.map((g) => g.name), ["g1"], "memory as the disk: unchanged");
    // Deleting the group frees its volume, which can then go too.
    assert.equal(await parts.groups.delete("g1"), true);
    assert.equal(await parts.groups.delete("g1"), false, "again: nothing to delete");
    assert.equal(await parts.volumes.delete("v1", false), true, "never written: no --force needed");
    assert.deepEqual(parts.store.current.volumes, []);
  } finally {
    await closeParts(parts);
  }
});

void test("a read-only group (left by a pair delete) is not deleted: that would make its volumes writable, which is --promote's decision", async () => {
  const disk = new SimDisk({ seed: 4, schedule: nextTurn });
  const parts = await openParts(disk);
  try {
    await parts.volumes.create("v1", 64 * 1024);
    await parts.groups.create("g1", ["v1"], journalBytesMin);
    // As a pair delete leaves it: readOnly saved in node.json, the writer refusing host writes.
    await parts.store.update((m) => {
      const record = m.groups.find((g) => g.name === "g1");
      assert.ok(record !== undefined);
      record.readOnly = { reason: "the secondary of a deleted pair", since: "2026-01-01T00:00:00.000Z" };
    });
    const writer = parts.groups.writer("g1");
    assert.ok(writer !== undefined);
    writer.readOnlyReason = "the secondary of a deleted pair";
    await assert.rejects(parts.groups.delete("g1"), (error: Error & { code?: string }) =>
      error.code === "TM_ERR_STATE" && /read-only \(the secondary of a deleted pair\); deleting it would make its volumes writable\. To make them writable: tidemark pair delete g1 --promote/.test(error.message));
    assert.equal(await parts.groups.makeWritable("g1"), true);
    assert.equal(await parts.groups.delete("g1"), true, "once promoted, it is an ordinary group");
  } finally {
    await closeParts(parts);
  }
});
