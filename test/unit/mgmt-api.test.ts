// Proves the management API's HTTP layer: routes, validation (unknown keys, bad names and
// sizes -> 400 naming the field), ControlError -> status mapping, 404s, body limit and the
// listening server, by driving the fastify app (inject, and one real socket) over a fake control.
import { ControlError, tmErrorCodes } from "../../src/core/errors.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { type ControlErrorCode } from "../../src/mgmt/control.ts";
import { buildMgmtApp, startMgmtApi, statusForCode } from "../../src/mgmt/mgmt-api.ts";
import { mgmtBodyBytesMax, volumeBytesMin } from "../../src/core/limits.ts";
import fc from "fast-check";
import { FakeControl } from "./mgmt-fake-control.ts";

const logger = pino({ level: "silent" });

function setup() {
  const control = new FakeControl();
  const app = buildMgmtApp(control, logger);
  return { control, app };
}

interface ErrorShape {
  error: { code: string; message: string };
}

function errorOf(body: string): ErrorShape["error"] {
  const parsed = JSON.parse(body) as ErrorShape;
  assert.equal(typeof parsed.error.code, "string");
  assert.equal(typeof parsed.error.message, "string");
  return parsed.error;
}

void test("health and status answer with the node id", async () => {
  const { app } = setup();
  const health = await app.inject({ method: "GET", url: "/v1/health" });
  assert.equal(health.statusCode, 200);
  assert.deepEqual(health.json(), { status: "ok", id: "fake-a" });
  const status = await app.inject({ method: "GET", url: "/v1/status" });
  assert.equal(status.statusCode, 200);
  assert.equal((status.json<{ id: string }>()).id, "fake-a");
  await app.close();
});

void test("volumes and groups: create then list", async () => {
  const { app } = setup();
  const created = await app.inject({ method: "POST", url: "/v1/volumes", payload: { name: "db-1", sizeBytes: 1 << 20 } });
  assert.equal(created.statusCode, 201);
  assert.equal((created.json<{ volume: { name: string } }>()).volume.name, "db-1");
  await app.inject({ method: "POST", url: "/v1/volumes", payload: { name: "db-2", sizeBytes: 1 << 20 } });
  const group = await app.inject({ method: "POST", url: "/v1/groups", payload: { name: "g", volumes: ["db-1", "db-2"] } });
  assert.equal(group.statusCode, 201);
  const volumes = (await app.inject({ method: "GET", url: "/v1/volumes" })).json<{ volumes: Array<{ group: string }> }>();
  assert.deepEqual(volumes.volumes.map((v) => v.group), ["g", "g"]);
  const groups = (await app.inject({ method: "GET", url: "/v1/groups" })).json<{ groups: Array<{ name: string }> }>();
  assert.deepEqual(groups.groups.map((g) => g.name), ["g"]);
  await app.close();
});

void test("metrics pass the control's content type and text through", async () => {
  const { app } = setup();
  const response = await app.inject({ method: "GET", url: "/metrics" });
  assert.equal(response.statusCode, 200);
  assert.match(String(response.headers["content-type"]), /^text\/plain/);
  assert.match(response.body, /^tidemark_volumes 0$/m);
  await app.close();
});

const badVolumeBodies: Array<[string, unknown, RegExp]> = [
  ["unknown key", { name: "a", sizeBytes: 8192, colour: "red" }, /unknown field 'colour'/],
  ["missing size", { name: "a" }, /^sizeBytes: /],
  ["size as string", { name: "a", sizeBytes: "10G" }, /^sizeBytes: /],
  ["fractional size", { name: "a", sizeBytes: 8192.5 }, /^sizeBytes: must be a whole number/],
  ["tiny size", { name: "a", sizeBytes: 1 }, new RegExp(`^sizeBytes: must be at least ${volumeBytesMin}`)],
  ["negative size", { name: "a", sizeBytes: -4096 }, /^sizeBytes: /],
  ["bad name chars", { name: "a/b", sizeBytes: 8192 }, /^name: volume name "a\/b" may only hold/],
  ["name starts with dot", { name: ".a", sizeBytes: 8192 }, /^name: /],
  ["name too long", { name: "a".repeat(65), sizeBytes: 8192 }, /^name: volume name is longer than 64/],
  ["empty name", { name: "", sizeBytes: 8192 }, /^name: volume name is empty/],
  ["array body", [1, 2], /^request body: /],
];

for (const [label, payload, pattern] of badVolumeBodies) {
  void test(`POST /v1/volumes rejects ${label} with 400 TM_ERR_INVALID`, async () => {
    const { app, control } = setup();
    const response = await app.inject({ method: "POST", url: "/v1/volumes", payload: payload as object });
    assert.equal(response.statusCode, 400);
    const error = errorOf(response.body);
    assert.equal(error.code, "TM_ERR_INVALID");
    assert.match(error.message, pattern);
    assert.equal(control.volumes.size, 0, "nothing was created");
    await app.close();
  });
}

void test("POST /v1/groups validates the volume list", async () => {
  const { app } = setup();
  const cases: Array<[unknown, RegExp]> = [
    [{ name: "g", volumes: [] }, /^volumes: must list at least one volume/],
    [{ name: "g", volumes: ["a", "a"] }, /^volumes: must not list a volume twice/],
    [{ name: "g", volumes: ["ok", "b c"] }, /^volumes\.1: volume name "b c"/],
    [{ name: "g", volumes: "a,b" }, /^volumes: /],
    [{ name: "g", volumes: ["a"], mode: "sync" }, /unknown field 'mode'/],
  ];
  for (const [payload, pattern] of cases) {
    const response = await app.inject({ method: "POST", url: "/v1/groups", payload: payload as object });
    assert.equal(response.statusCode, 400, JSON.stringify(payload));
    assert.match(errorOf(response.body).message, pattern);
  }
  await app.close();
});

void test("a body that is not JSON, or empty, is a 4xx TM_ERR_INVALID", async () => {
  const { app } = setup();
  const garbage = await app.inject({
    method: "POST",
    url: "/v1/volumes",
    headers: { "content-type": "application/json" },
    payload: "{not json",
  });
  assert.equal(garbage.statusCode, 400);
  assert.equal(errorOf(garbage.body).code, "TM_ERR_INVALID");
  const text = await app.inject({ method: "POST", url: "/v1/volumes", headers: { "content-type": "text/plain" }, payload: "hi" });
  assert.equal(text.statusCode, 415);
  assert.match(errorOf(text.body).message, /must be JSON/);
  const none = await app.inject({ method: "POST", url: "/v1/volumes" });
  assert.equal(none.statusCode, 400);
  assert.match(errorOf(none.body).message, /^request body: /);
  await app.close();
});

void test("a body over mgmtBodyBytesMax is refused with 413", async () => {
  const { app } = setup();
  const response = await app.inject({
    method: "POST",
    url: "/v1/volumes",
    headers: { "content-type": "application/json" },
    payload: JSON.stringify({ name: "a", sizeBytes: 8192, pad: "x".repeat(mgmtBodyBytesMax) }),
  });
  assert.equal(response.statusCode, 413);
  assert.match(errorOf(response.body).message, new RegExp(`larger than ${mgmtBodyBytesMax} bytes`));
  await app.close();
});

void test("a path the API has, with a method it does not take, is 405 with Allow; an unknown path is 404 TM_ERR_NOT_FOUND", async () => {
  const { app } = setup();
  for (const [method, url, allow] of [["DELETE", "/v1/volumes", "GET, HEAD, POST"], ["PUT", "/v1/volumes", "GET, HEAD, POST"], ["POST", "/", "GET, HEAD"], ["GET", "/v1/pairs/g1/suspend", "POST"], ["PUT", "/v1/volumes/v1?force=true", "DELETE"]] as const) {
    const response = await app.inject({ method, url });
    assert.equal(response.statusCode, 405, `${method} ${url}`);
    assert.equal(response.headers.allow, allow);
    const error = errorOf(response.body);
    assert.equal(error.code, "TM_ERR_INVALID");
    assert.match(error.message, new RegExp(`^${method} is not a method of ${url.split("?")[0] ?? ""}; it takes ${allow}$`));
  }
  for (const [method, url] of [["GET", "/v1/nope"], ["GET", "/index.html"], ["DELETE", "/v1/volumes/a/b"]] as const) {
    const response = await app.inject({ method, url });
    assert.equal(response.statusCode, 404);
    const error = errorOf(response.body);
    assert.equal(error.code, "TM_ERR_NOT_FOUND");
    assert.match(error.message, new RegExp(`${method} ${url.replace(/\//g, "\\/")}`));
  }
  await app.close();
});

void test("every TM_ERR_* code maps to its status (core/errors.ts), with the message kept", async () => {
  const codes = Object.keys(tmErrorCodes) as ControlErrorCode[];
  for (const code of codes) {
    const { app, control } = setup();
    control.failWith = new ControlError(code, `failure ${code}`);
    const response = await app.inject({ method: "GET", url: "/v1/volumes" });
    assert.equal(response.statusCode, statusForCode(code));
    assert.equal(response.statusCode, tmErrorCodes[code].httpStatus);
    assert.deepEqual(errorOf(response.body), { code, message: `failure ${code}` });
    await app.close();
  }
});

void test("an unexpected exception is a 500 TM_ERR_INTERNAL, and the API keeps serving", async () => {
  const { app, control } = setup();
  control.failWith = new TypeError("boom");
  const response = await app.inject({ method: "GET", url: "/v1/status" });
  assert.equal(response.statusCode, 500);
  assert.equal(errorOf(response.body).code, "TM_ERR_INTERNAL");
  control.failWith = null;
  assert.equal((await app.inject({ method: "GET", url: "/v1/health" })).statusCode, 200);
  await app.close();
});

void test("409 for a volume that exists, 404 for a missing one, 409 for a volume already grouped", async () => {
  const { app } = setup();
  const body = { name: "v", sizeBytes: 8192 };
  assert.equal((await app.inject({ method: "POST", url: "/v1/volumes", payload: body })).statusCode, 201);
  const again = await app.inject({ method: "POST", url: "/v1/volumes", payload: body });
  assert.equal(again.statusCode, 409);
  assert.equal(errorOf(again.body).code, "TM_ERR_EXISTS");
  const missing = await app.inject({ method: "POST", url: "/v1/groups", payload: { name: "g", volumes: ["w"] } });
  assert.equal(missing.statusCode, 404);
  assert.equal((await app.inject({ method: "POST", url: "/v1/groups", payload: { name: "g", volumes: ["v"] } })).statusCode, 201);
  const grouped = await app.inject({ method: "POST", url: "/v1/groups", payload: { name: "h", volumes: ["v"] } });
  assert.equal(grouped.statusCode, 409);
  assert.equal(errorOf(grouped.body).code, "TM_ERR_CONFLICT");
  await app.close();
});

void test("startMgmtApi listens on port 0, answers over a socket, and closes", async () => {
  const api = await startMgmtApi({ host: "127.0.0.1", port: 0, control: new FakeControl(), logger });
  try {
    assert.ok(api.port > 0);
    const response = await fetch(`http://127.0.0.1:${api.port}/v1/health`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: "ok", id: "fake-a" });
  } finally {
    await api.close();
  }
  await assert.rejects(fetch(`http://127.0.0.1:${api.port}/v1/health`));
});

void test("arbitrary JSON and arbitrary bytes never make a 5xx, and errors keep their shape (property)", async () => {
  const { app } = setup();
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.jsonValue(),
        fc.record({ name: fc.string({ maxLength: 70 }), sizeBytes: fc.oneof(fc.integer(), fc.double(), fc.string()) }, { requiredKeys: [] }),
        fc.record({ name: fc.string({ maxLength: 70 }), volumes: fc.array(fc.string({ maxLength: 70 }), { maxLength: 5 }) }, { requiredKeys: [] }),
      ),
      fc.constantFrom("/v1/volumes", "/v1/groups"),
      async (payload, url) => {
        const response = await app.inject({
          method: "POST",
          url,
          headers: { "content-type": "application/json" },
          payload: JSON.stringify(payload),
        });
        assert.ok(response.statusCode < 500, `${response.statusCode} ${response.body}`);
        if (response.statusCode >= 400) assert.ok(["TM_ERR_INVALID", "TM_ERR_NOT_FOUND", "TM_ERR_EXISTS", "TM_ERR_CONFLICT"].includes(errorOf(response.body).code));
      },
    ),
    { numRuns: 300 },
  );
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
      const response = await app.inject({
        method: "POST",
        url: "/v1/volumes",
        headers: { "content-type": "application/json" },
        payload: Buffer.from(bytes),
      });
      assert.ok(response.statusCode >= 200 && response.statusCode < 500, `${response.statusCode} ${response.body}`);
    }),
    { numRuns: 300 },
  );
  await app.close();
});

void test("a disk that refuses while a command runs is TM_ERR_IO or TM_ERR_NO_SPACE naming the path, not an internal error", async () => {
  const { app, control } = setup();
  control.failWith = Object.assign(new Error("EIO: i/o error, fdatasync '/data/volumes/3.vol'"), { code: "EIO", path: "/data/volumes/3.vol" });
  let response = await app.inject({ method: "GET", url: "/v1/volumes" });
  assert.equal(response.statusCode, 500);
  assert.equal(errorOf(response.body).code, "TM_ERR_IO");
  assert.match(errorOf(response.body).message, /EIO on \/data\/volumes\/3\.vol/);
  control.failWith = Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC", path: "/data/node.json.tmp" });
  response = await app.inject({ method: "GET", url: "/v1/volumes" });
  assert.equal(response.statusCode, 507);
  assert.equal(errorOf(response.body).code, "TM_ERR_NO_SPACE");
  assert.match(errorOf(response.body).message, /\/data\/node\.json\.tmp/);
  await app.close();
});
