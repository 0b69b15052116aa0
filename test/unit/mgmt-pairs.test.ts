// Proves the management API's pair routes: bodies validated (unknown keys, stream range,
// enums, URLs, names -> 400 naming the field), defaults filled in, ControlError codes mapped
// (TM_ERR_STATE 409, TM_ERR_UNREACHABLE 502, ...), by driving the fastify app with inject
// over the in-memory fake control.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { replStreamsMax } from "../../src/core/limits.ts";
import type { PairInfo, TakeoverResult } from "../../src/mgmt/control.ts";
import { fakeAppWithGroup } from "./mgmt-fake-control.ts";


const setup = fakeAppWithGroup;

function errorOf(body: string): { code: string; message: string } {
  const parsed = JSON.parse(body) as { error: { code: string; message: string } };
  assert.equal(typeof parsed.error.code, "string");
  assert.equal(typeof parsed.error.message, "string");
  return parsed.error;
}

const goodPair = { group: "g1", to: "http://127.0.0.1:7481" };

void test("POST /v1/pairs creates a pair (201 PairInfo) and fills in the defaults", async () => {
  const { app, control } = await setup();
  const response = await app.inject({ method: "POST", url: "/v1/pairs", payload: goodPair });
  assert.equal(response.statusCode, 201, response.body);
  const pair = response.json<PairInfo>();
  assert.equal(pair.group, "g1");
  assert.equal(pair.state, "copying");
  assert.deepEqual(control.pairRequests.at(-1), {
    group: "g1", to: "http://127.0.0.1:7481", mode: "async", transfer: "push", streams: 4, reflect: "time",
  });
  const explicit = await setup();
  const full = { ...goodPair, remoteGroup: "dr-g1", mode: "async", transfer: "pull", streams: replStreamsMax, reflect: "marker" };
  assert.equal((await explicit.app.inject({ method: "POST", url: "/v1/pairs", payload: full })).statusCode, 201);
  assert.deepEqual(explicit.control.pairRequests.at(-1), full);
  await app.close();
  await explicit.app.close();
});

const badPairBodies: Array<[string, unknown, RegExp]> = [
  ["unknown key", { ...goodPair, colour: "red" }, /unknown field 'colour'/],
  ["streams 0", { ...goodPair, streams: 0 }, new RegExp(`^streams: must be between 1 and ${replStreamsMax}`)],
  ["streams over the maximum", { ...goodPair, streams: replStreamsMax + 1 }, new RegExp(`^streams: must be between 1 and ${replStreamsMax}`)],
  ["fractional streams", { ...goodPair, streams: 2.5 }, /^streams: must be a whole number/],
  ["streams as a string", { ...goodPair, streams: "4" }, /^streams: must be a whole number/],
  ["unknown transfer", { ...goodPair, transfer: "teleport" }, /^transfer: must be one of "push", "pull"/],
  ["unknown mode", { ...goodPair, mode: "semi" }, /^mode: must be one of "async", "sync"/],
  ["unknown reflect", { ...goodPair, reflect: "random" }, /^reflect: must be one of "time", "seq", "marker"/],
  ["missing to", { group: "g1" }, /^to: /],
  ["to not a URL", { ...goodPair, to: "not a url" }, /^to: must be an http:\/\/ or https:\/\/ URL/],
  ["to with another scheme", { ...goodPair, to: "ftp://host:21" }, /^to: must use http:\/\/ or https:\/\//],
  ["to with a user", { ...goodPair, to: "http://me:pw@host:7480" }, /^to: must not carry a user/],
  ["to too long", { ...goodPair, to: `http://h/${"x".repeat(3000)}` }, /^to: must be at most 2048 characters/],
  ["bad group name", { ...goodPair, group: "a/b" }, /^group: group name "a\/b" may only hold/],
  ["bad remote group name", { ...goodPair, remoteGroup: "" }, /^remoteGroup: group name is empty/],
  ["missing group", { to: goodPair.to }, /^group: /],
];

for (const [label, payload, pattern] of badPairBodies) {
  void test(`POST /v1/pairs rejects ${label} with 400 TM_ERR_INVALID`, async () => {
    const { app, control } = await setup();
    const response = await app.inject({ method: "POST", url: "/v1/pairs", payload: payload as object });
    assert.equal(response.statusCode, 400, response.body);
    const error = errorOf(response.body);
    assert.equal(error.code, "TM_ERR_INVALID");
    assert.match(error.message, pattern);
    assert.equal(control.pairRequests.length, 0, "the node was not asked");
    await app.close();
  });
}

void test("POST /v1/pairs: mode sync passes validation and the node answers; node errors keep their status", async () => {
  const { app, control } = await setup();
  const sync = await app.inject({ method: "POST", url: "/v1/pairs", payload: { ...goodPair, mode: "sync" } });
  assert.equal(sync.statusCode, 400);
  assert.match(errorOf(sync.body).message, /sync/);
  assert.equal(control.pairRequests.length, 1, "the schema let it through to the node");

  const missing = await app.inject({ method: "POST", url: "/v1/pairs", payload: { ...goodPair, group: "nope" } });
  assert.equal(missing.statusCode, 404);
  assert.equal(errorOf(missing.body).code, "TM_ERR_NOT_FOUND");

  control.secondaryUnreachable = true;
  const unreachable = await app.inject({ method: "POST", url: "/v1/pairs", payload: goodPair });
  assert.equal(unreachable.statusCode, 502);
  assert.equal(errorOf(unreachable.body).code, "TM_ERR_UNREACHABLE");
  control.secondaryUnreachable = false;

  assert.equal((await app.inject({ method: "POST", url: "/v1/pairs", payload: goodPair })).statusCode, 201);
  const again = await app.inject({ method: "POST", url: "/v1/pairs", payload: goodPair });
  assert.equal(again.statusCode, 409);
  assert.equal(errorOf(again.body).code, "TM_ERR_EXISTS");
  await app.close();
});

void test("GET /v1/pairs lists, GET /v1/pairs/:group answers one, 404 without a pair, 400 for a bad name", async () => {
  const { app, control } = await setup();
  assert.deepEqual((await app.inject({ method: "GET", url: "/v1/pairs" })).json(), { pairs: [] });
  control.addPair({ group: "g1", acceptedSequence: 10, reflectedSequence: 7 });
  const list = (await app.inject({ method: "GET", url: "/v1/pairs" })).json<{ pairs: PairInfo[] }>();
  assert.deepEqual(list.pairs.map((pair) => [pair.group, pair.lagRecords]), [["g1", 3]]);
  const one = await app.inject({ method: "GET", url: "/v1/pairs/g1" });
  assert.equal(one.statusCode, 200);
  assert.equal(one.json<PairInfo>().group, "g1");
  const none = await app.inject({ method: "GET", url: "/v1/pairs/g2" });
  assert.equal(none.statusCode, 404);
  assert.equal(errorOf(none.body).code, "TM_ERR_NOT_FOUND");
  for (const url of ["/v1/pairs/.hidden", "/v1/pairs/a%20b", `/v1/pairs/${"x".repeat(65)}`]) {
    const bad = await app.inject({ method: "GET", url });
    assert.equal(bad.statusCode, 400, url);
    assert.match(errorOf(bad.body).message, /^group name /);
  }
  await app.close();
});

void test("suspend and resume answer the PairInfo; the wrong state is 409 TM_ERR_STATE", async () => {
  const { app, control } = await setup();
  control.addPair({ group: "g1" });
  const suspended = await app.inject({ method: "POST", url: "/v1/pairs/g1/suspend" });
  assert.equal(suspended.statusCode, 200);
  assert.equal(suspended.json<PairInfo>().state, "suspended");
  const twice = await app.inject({ method: "POST", url: "/v1/pairs/g1/suspend", payload: {} });
  assert.equal(twice.statusCode, 409);
  assert.equal(errorOf(twice.body).code, "TM_ERR_STATE");
  const resumed = await app.inject({ method: "POST", url: "/v1/pairs/g1/resume", payload: {} });
  assert.equal(resumed.statusCode, 200);
  assert.equal(resumed.json<PairInfo>().state, "replicating");
  const notSuspended = await app.inject({ method: "POST", url: "/v1/pairs/g1/resume" });
  assert.equal(notSuspended.statusCode, 409);
  assert.equal((await app.inject({ method: "POST", url: "/v1/pairs/zz/resume" })).statusCode, 404);
  const withOption = await app.inject({ method: "POST", url: "/v1/pairs/g1/suspend", payload: { force: true } });
  assert.equal(withOption.statusCode, 400);
  assert.match(errorOf(withOption.body).message, /unknown field 'force'/);
  assert.equal((await app.inject({ method: "GET", url: "/v1/pairs/g1/suspend" })).statusCode, 405, "suspend is a POST");
  await app.close();
});

void test("POST /v1/takeover validates the group list and answers {results}", async () => {
  const { app, control } = await setup();
  const cases: Array<[unknown, RegExp]> = [
    [{ groups: [] }, /^groups: must list at least one group/],
    [{ groups: ["a", "a"] }, /^groups: must not list a group twice/],
    [{ groups: "a,b" }, /^groups: /],
    [{ groups: ["ok", "b c"] }, /^groups\.1: group name "b c"/],
    [{ groups: ["a"], force: "yes" }, /^force: /],
    [{ groups: ["a"], forceIt: true }, /unknown field 'forceIt'/],
    [{}, /^groups: /],
  ];
  for (const [payload, pattern] of cases) {
    const response = await app.inject({ method: "POST", url: "/v1/takeover", payload: payload as object });
    assert.equal(response.statusCode, 400, JSON.stringify(payload));
    assert.match(errorOf(response.body).message, pattern);
  }
  control.addPair({ group: "g1" });
  const onPrimary = await app.inject({ method: "POST", url: "/v1/takeover", payload: { groups: ["g1"] } });
  assert.equal(onPrimary.statusCode, 409);
  assert.equal(errorOf(onPrimary.body).code, "TM_ERR_STATE");
  control.addPair({ group: "s1", role: "secondary", acceptedSequence: 50, arrivedSequence: 40, reflectedSequence: 30 });
  control.addPair({ group: "s2", role: "secondary", acceptedSequence: 5, arrivedSequence: 5, reflectedSequence: 5 });
  const done = await app.inject({ method: "POST", url: "/v1/takeover", payload: { groups: ["s1", "s2"] } });
  assert.equal(done.statusCode, 200);
  assert.deepEqual(done.json<{ results: TakeoverResult[] }>(), {
    results: [
      { group: "s1", reflectedSequence: 30, droppedRecords: 10, state: "takeover" },
      { group: "s2", reflectedSequence: 5, droppedRecords: 0, state: "takeover" },
    ],
  });
  await app.close();
});

const goodTarget = {
  pairId: "node-a/g1#1",
  primaryNode: "node-a",
  primaryGroup: "g1",
  group: "g1-dr",
  volumes: [{ name: "d1", sizeBytes: 1 << 20 }, { name: "d2", sizeBytes: 1 << 21 }],
  reflect: "time",
  transfer: "push",
  streams: 4,
};

void test("POST /v1/pair-targets makes the target group and answers PairSecondaryInfo", async () => {
  const { app, control } = await setup();
  const response = await app.inject({ method: "POST", url: "/v1/pair-targets", payload: goodTarget });
  assert.equal(response.statusCode, 200, response.body);
  assert.deepEqual(response.json(), { nodeId: "fake-a", group: "g1-dr", replAddress: "127.0.0.1:7400" });
  assert.deepEqual(control.pairRequests.at(-1), goodTarget);
  assert.deepEqual(control.groups.get("g1-dr")?.volumes, ["d1", "d2"]);
  const conflict = await app.inject({
    method: "POST",
    url: "/v1/pair-targets",
    payload: { ...goodTarget, group: "other", volumes: [{ name: "d1", sizeBytes: 1 << 22 }] },
  });
  assert.equal(conflict.statusCode, 409);
  assert.equal(errorOf(conflict.body).code, "TM_ERR_CONFLICT");
  await app.close();
});

void test("POST /v1/pair-targets rejects bad bodies with 400 naming the field", async () => {
  const { app, control } = await setup();
  const cases: Array<[unknown, RegExp]> = [
    [{ ...goodTarget, pairId: "has space" }, /^pairId: must be 1 to 64 printable ASCII/],
    [{ ...goodTarget, pairId: "" }, /^pairId: /],
    [{ ...goodTarget, pairId: "x".repeat(65) }, /^pairId: /],
    [{ ...goodTarget, primaryNode: "bad node" }, /^primaryNode: node name/],
    [{ ...goodTarget, volumes: [] }, /^volumes: must list at least one volume/],
    [{ ...goodTarget, volumes: [{ name: "d", sizeBytes: 8192 }, { name: "d", sizeBytes: 8192 }] }, /^volumes: must not list a volume twice/],
    [{ ...goodTarget, volumes: [{ name: "d", sizeBytes: 1 }] }, /^volumes\.0\.sizeBytes: must be at least 4096/],
    [{ ...goodTarget, volumes: [{ name: "d", sizeBytes: 8192, extra: 1 }] }, /unknown field 'extra' in volumes\.0/],
    [{ ...goodTarget, streams: 0 }, /^streams: must be between 1 and/],
    [{ ...goodTarget, reflect: undefined }, /^reflect: must be one of/],
    [{ ...goodTarget, transfer: "carrier-pigeon" }, /^transfer: must be one of "push", "pull"/],
    [{ ...goodTarget, mode: "async" }, /unknown field 'mode'/],
  ];
  for (const [payload, pattern] of cases) {
    const response = await app.inject({ method: "POST", url: "/v1/pair-targets", payload: payload as object });
    assert.equal(response.statusCode, 400, JSON.stringify(payload));
    assert.match(errorOf(response.body).message, pattern);
  }
  assert.equal(control.pairRequests.length, 0);
  await app.close();
});

void test("arbitrary JSON to the pair routes never makes a 5xx (property)", async () => {
  const { app } = await setup();
  const known = ["TM_ERR_INVALID", "TM_ERR_NOT_FOUND", "TM_ERR_EXISTS", "TM_ERR_CONFLICT", "TM_ERR_STATE"];
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.jsonValue(),
        fc.record(
          {
            group: fc.oneof(fc.constant("g1"), fc.string({ maxLength: 70 })),
            to: fc.oneof(fc.webUrl(), fc.string({ maxLength: 40 })),
            streams: fc.oneof(fc.integer({ min: -2, max: 20 }), fc.double(), fc.string()),
            transfer: fc.constantFrom("push", "pull", "x"),
            groups: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
          },
          { requiredKeys: [] },
        ),
      ),
      fc.constantFrom("/v1/pairs", "/v1/takeover", "/v1/pair-targets", "/v1/pairs/g1/suspend", "/v1/pairs/g1/resume"),
      async (payload, url) => {
        const response = await app.inject({ method: "POST", url, headers: { "content-type": "application/json" }, payload: JSON.stringify(payload) });
        assert.ok(response.statusCode < 500, `${url} ${response.statusCode} ${response.body}`);
        if (response.statusCode >= 400) assert.ok(known.includes(errorOf(response.body).code), response.body);
      },
    ),
    { numRuns: 300 },
  );
  await app.close();
});
