// Proves the metadata migration of data directories written by earlier versions
// (src/metadata/metadata.ts migrateMetadata): a group's `target` becomes `secondary`, once,
// and what is already in the new form or not an object is left alone for the schema to judge.
import assert from "node:assert/strict";
import { test } from "node:test";
import { migrateMetadata, nodeMetadataSchema } from "../../src/metadata/metadata.ts";

const secondaryRecord = {
  pairId: "p1", primaryNode: "a", primaryGroup: "g", state: "replicating",
};

void test("a group's target (versions up to c7f8e8c) becomes its secondary, with one migration line per group", () => {
  const parsed = { groups: [{ name: "g1", target: secondaryRecord }, { name: "g2" }, { name: "g3", target: { ...secondaryRecord, pairId: "p3" } }] };
  const migrations = migrateMetadata(parsed);
  assert.deepEqual(migrations.map((m) => m.group), ["g1", "g3"]);
  assert.deepEqual(parsed.groups[0], { name: "g1", secondary: secondaryRecord });
  assert.deepEqual(parsed.groups[1], { name: "g2" });
  assert.equal(migrateMetadata(parsed).length, 0, "a second pass changes nothing");
});

void test("input that is not metadata is left for the schema to refuse", () => {
  for (const garbage of [null, 7, "x", [], { groups: 3 }, { groups: [null, 1, "g"] }]) {
    assert.deepEqual(migrateMetadata(garbage), []);
  }
  const both = { groups: [{ name: "g", target: {}, secondary: {} }] };
  assert.deepEqual(migrateMetadata(both), [], "a record with both names is not guessed at");
  assert.equal(nodeMetadataSchema.safeParse(both).success, false);
});

void test("takeoverIntent (issue 8) is optional: node.json without it (every earlier version) is valid unchanged, with it too; an intent naming no group is refused", () => {
  const old = {
    formatVersion: 1, nodeId: "b", createdAt: "T", nextVolumeId: 1, nextGroupId: 1, volumes: [], groups: [],
    writeTime: { recordedWriteTimeUs: 0, lastAcceptNumber: 0 },
  };
  assert.deepEqual(migrateMetadata(structuredClone(old)), [], "nothing to migrate");
  const parsed = nodeMetadataSchema.parse(structuredClone(old));
  assert.ok(!("takeoverIntent" in parsed));
  const intent = { at: "T", groups: [{ groupId: 1, name: "g1", keepThroughSequence: 7, droppedRecords: 2 }] };
  assert.deepEqual(nodeMetadataSchema.parse({ ...old, takeoverIntent: intent }).takeoverIntent, intent);
  assert.equal(nodeMetadataSchema.safeParse({ ...old, takeoverIntent: { at: "T", groups: [] } }).success, false);
  assert.equal(nodeMetadataSchema.safeParse({ ...old, takeoverIntent: { ...intent, extra: 1 } }).success, false);
});
