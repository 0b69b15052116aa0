// Proves the management API's `pair delete` routes and the CLI's rendering of their answers:
// DELETE /v1/pairs/:group takes only force/promote in its query (400 naming the key otherwise),
// answers deleted false for a pair already gone (idempotent), refuses the secondary's side
// without force (409 TM_ERR_STATE); POST /v1/pair-secondaries/end validates its body (unknown keys,
// pair id); renderPairEnd says in one line what happened on each side. Driven with inject over
// the in-memory fake control (the real nodes: test/e2e/pair-delete.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { PairEndInfo } from "../../src/mgmt/control.ts";
import { renderPairEnd } from "../../src/cli/pair-admin-command.ts";
import { fakeAppWithGroup } from "./mgmt-fake-control.ts";
import {
  cliDeadlineMs, mgmtRequestTimeoutMsDefault, pairCreateNodeWaitMsMax, pairDeleteAckWaitMsMax, pairDeleteNodeWaitMsMax, pairSetNodeWaitMsMax, peerRequestTimeoutMs, takeoverNodeWaitMsMax,
} from "../../src/core/limits.ts";


const setup = fakeAppWithGroup;

void test("DELETE /v1/pairs/:group: deletes, then answers deleted false; a bad query or name is 400", async () => {
  const { app } = await setup();
  const created = await app.inject({ method: "POST", url: "/v1/pairs", payload: { group: "g1", to: "http://127.0.0.1:7481" } });
  assert.equal(created.statusCode, 201, created.body);
  const first = await app.inject({ method: "DELETE", url: "/v1/pairs/g1" });
  assert.equal(first.statusCode, 200, first.body);
  assert.deepEqual(first.json<PairEndInfo>(), { group: "g1", deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary: { deleted: true, note: null } });
  const again = await app.inject({ method: "DELETE", url: "/v1/pairs/g1" });
  assert.equal(again.statusCode, 200, again.body);
  assert.equal(again.json<PairEndInfo>().deleted, false);
  const badQuery = await app.inject({ method: "DELETE", url: "/v1/pairs/g1?forse=true" });
  assert.equal(badQuery.statusCode, 400, badQuery.body);
  assert.match(badQuery.body, /forse/);
  const badValue = await app.inject({ method: "DELETE", url: "/v1/pairs/g1?promote=yes" });
  assert.equal(badValue.statusCode, 400, badValue.body);
  const badName = await app.inject({ method: "DELETE", url: "/v1/pairs/-x" });
  assert.equal(badName.statusCode, 400, badName.body);
});

void test("DELETE /v1/pairs/:group on a secondary: 409 without force, deleted with force and promote", async () => {
  const { app, control } = await setup();
  await control.preparePairSecondary({ pairId: "a/g2/1", primaryNode: "a", primaryGroup: "g2", group: "g2", volumes: [{ name: "v2", sizeBytes: 1 << 20 }], reflect: "time", transfer: "push", streams: 1 });
  const refused = await app.inject({ method: "DELETE", url: "/v1/pairs/g2" });
  assert.equal(refused.statusCode, 409, refused.body);
  assert.match(refused.body, /TM_ERR_STATE/);
  const forced = await app.inject({ method: "DELETE", url: "/v1/pairs/g2?force=true&promote=true" });
  assert.equal(forced.statusCode, 200, forced.body);
  assert.equal(forced.json<PairEndInfo>().readOnly, false);
});

void test("POST /v1/pair-secondaries/end validates its body", async () => {
  const { app } = await setup();
  const unknown = await app.inject({ method: "POST", url: "/v1/pair-secondaries/end", payload: { pairId: "a/g/1", primaryNode: "a", group: "g1", promote: false, extra: 1 } });
  assert.equal(unknown.statusCode, 400, unknown.body);
  assert.match(unknown.body, /extra/);
  const badId = await app.inject({ method: "POST", url: "/v1/pair-secondaries/end", payload: { pairId: "has space", primaryNode: "a", group: "g1", promote: false } });
  assert.equal(badId.statusCode, 400, badId.body);
  const none = await app.inject({ method: "POST", url: "/v1/pair-secondaries/end", payload: { pairId: "a/g/1", primaryNode: "a", group: "g1", promote: false } });
  assert.equal(none.statusCode, 200, none.body);
  assert.equal(none.json<PairEndInfo>().deleted, false);
});

void test("renderPairEnd: one line per outcome", () => {
  assert.equal(renderPairEnd({ group: "g", deleted: false, role: null, readOnly: false, keptSequence: null }), "group g has no pair; nothing to delete\n");
  assert.equal(renderPairEnd({ group: "g", deleted: false, role: null, readOnly: true, keptSequence: null }), "group g has no pair; nothing to delete; it is read-only (writable with --promote)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary: { deleted: true, note: null } }),
    "deleted the pair of group g: replication ended, the group stays writable; the secondary's side is deleted too\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "secondary", readOnly: true, keptSequence: 42 }),
    "deleted the pair of group g on this node: its volumes keep the image (through the primary's sequence 42), read-only (writable with: tidemark pair delete g --promote)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "secondary", readOnly: false, keptSequence: 42 }),
    "deleted the pair of group g on this node: its volumes keep the image (through the primary's sequence 42), writable\n");
  // What --promote did, on either side; a taken-over group; a copy ended on the secondary.
  assert.equal(renderPairEnd({ group: "g", deleted: false, role: null, readOnly: false, keptSequence: null, promoted: true }),
    "group g has no pair; its volumes are writable now (the image its deleted pair left)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: false, role: null, readOnly: false, keptSequence: null, promoted: true, incompleteCopy: true }),
    "group g has no pair; its volumes are writable now (they hold an incomplete initial copy, consistent with no point in time)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary: { deleted: true, note: null, readOnly: false, node: "B", url: "http://b:7480" } }),
    "deleted the pair of group g: replication ended, the group stays writable; the secondary's side is deleted too on node B: its volumes are writable (promoted)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary: { deleted: true, note: null, readOnly: true, node: "B", url: "http://b:7480" } }),
    "deleted the pair of group g: replication ended, the group stays writable; the secondary's side is deleted too on node B: its volumes keep the image, read-only (writable with: tidemark pair delete g --promote --node http://b:7480)\n");
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary: { deleted: true, note: null, takenOver: true, node: "B" } }),
    "deleted the pair of group g: replication ended, the group stays writable; the secondary on node B had taken the group over: it forgot the pair (its group stays writable there)\n");
  assert.match(renderPairEnd({ group: "g", deleted: true, role: "secondary", readOnly: false, keptSequence: 3, takenOver: true }), /had taken the group over and forgets that now \(a returning old primary then only fails/);
  assert.equal(renderPairEnd({ group: "g", deleted: true, role: "secondary", readOnly: true, keptSequence: null, incompleteCopy: true }),
    "deleted the pair of group g on this node during its initial copy: its volumes hold an incomplete copy, consistent with no point in time, read-only (writable with: tidemark pair delete g --promote)\n");
});

void test("CLI deadlines outlast the node's own waits (a refusal arrives instead of 'did not answer')", () => {
  assert.ok(cliDeadlineMs(pairDeleteNodeWaitMsMax) > pairDeleteAckWaitMsMax + peerRequestTimeoutMs);
  assert.ok(cliDeadlineMs(pairSetNodeWaitMsMax) > peerRequestTimeoutMs);
  assert.ok(cliDeadlineMs(pairCreateNodeWaitMsMax) > peerRequestTimeoutMs);
  assert.ok(cliDeadlineMs(takeoverNodeWaitMsMax) > takeoverNodeWaitMsMax);
  assert.ok(cliDeadlineMs(0) >= mgmtRequestTimeoutMsDefault);
});

void test("POST /v1/pairs/:group/set takes only a management URL; POST /v1/pair-secondaries/check refuses another pair", async () => {
  const { app } = await setup();
  await app.inject({ method: "POST", url: "/v1/pairs", payload: { group: "g1", to: "http://127.0.0.1:7481" } });
  const badUrl = await app.inject({ method: "POST", url: "/v1/pairs/g1/set", payload: { to: "ftp://x" } });
  assert.equal(badUrl.statusCode, 400, badUrl.body);
  assert.match(badUrl.body, /to: must use http/);
  const extra = await app.inject({ method: "POST", url: "/v1/pairs/g1/set", payload: { to: "http://127.0.0.1:7482", force: true } });
  assert.equal(extra.statusCode, 400, extra.body);
  const ok = await app.inject({ method: "POST", url: "/v1/pairs/g1/set", payload: { to: "http://127.0.0.1:7482" } });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json<{ remoteUrl: string }>().remoteUrl, "http://127.0.0.1:7482");
  const other = await app.inject({ method: "POST", url: "/v1/pair-secondaries/check", payload: { pairId: "z/g1/1", primaryNode: "z", group: "g1" } });
  assert.equal(other.statusCode, 409, other.body);
  assert.match(other.body, /TM_ERR_CONFLICT/);
});
