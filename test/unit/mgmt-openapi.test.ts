// Proves the one management contract (src/mgmt/contract.ts): every route the server registers
// is declared there and appears in the OpenAPI document; the document is structurally valid
// (every operation has responses, every path parameter is declared, every $ref resolves); the
// node serves it at GET /v1/openapi.json; the server's answers pass the contract's schemas; and
// a node calling another (callPeer) refuses an answer that does not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { ControlError, tmErrorCodes, type TmErrorCode } from "../../src/core/errors.ts";
import { mgmtRoutes, openApiDocumentSchema, routePath, type MgmtRoute } from "../../src/mgmt/contract.ts";
import { buildMgmtApp, routesOf } from "../../src/mgmt/mgmt-api.ts";
import { buildOpenApiDocument, openApiPath, type OpenApiDocument } from "../../src/mgmt/openapi.ts";
import { callPeer } from "../../src/transport/peer-client.ts";
import { FakeControl } from "./mgmt-fake-control.ts";

const logger = pino({ level: "silent" });
const routes = Object.entries(mgmtRoutes) as Array<[string, MgmtRoute]>;
const httpMethods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function setup() {
  const control = new FakeControl();
  const app = buildMgmtApp(control, logger);
  return { control, app, document: buildOpenApiDocument(control.status().version) };
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function operation(document: OpenApiDocument, method: string, url: string): Json | undefined {
  const item = document.paths[openApiPath(url)];
  const found = item?.[method.toLowerCase()];
  return isObject(found) ? found : undefined;
}

/** Resolves a local JSON pointer (`#/components/schemas/X`) in `document`, or undefined. */
function resolvePointer(document: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let at: unknown = document;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (!isObject(at) || !Object.hasOwn(at, key)) return undefined;
    at = at[key];
  }
  return at;
}

/** Every `$ref` value anywhere in `value`, with where it was found. */
function refsIn(value: unknown, where: string, out: Array<{ ref: string; where: string }> = []): Array<{ ref: string; where: string }> {
  if (Array.isArray(value)) value.forEach((item, index) => refsIn(item, `${where}/${index}`, out));
  else if (isObject(value)) {
    for (const [key, child] of Object.entries(value)) {
      if (key === "$ref") out.push({ ref: String(child), where });
      else refsIn(child, `${where}/${key}`, out);
    }
  }
  return out;
}

void test("every route the server registers is declared in the contract and is in the OpenAPI document, and the other way round", async () => {
  const { app, document } = setup();
  await app.ready();
  // HEAD answers a GET of the same path (fastify adds it): the GET covers it.
  const served = routesOf(app).filter((route) => route.method !== "HEAD");
  assert.ok(served.length >= routes.length, `the app registered ${served.length} routes`);
  for (const route of served) {
    const declared = routes.find(([, spec]) => spec.method === route.method && spec.path === route.url);
    assert.ok(declared !== undefined, `${route.method} ${route.url} is served but not declared in src/mgmt/contract.ts`);
    assert.ok(operation(document, route.method, route.url) !== undefined, `${route.method} ${route.url} is served but not in the OpenAPI document`);
  }
  for (const [name, spec] of routes) {
    assert.ok(served.some((route) => route.method === spec.method && route.url === spec.path), `${name} (${spec.method} ${spec.path}) is declared but not served`);
    assert.equal(operation(document, spec.method, spec.path)?.operationId, name);
  }
  await app.close();
});

void test("the OpenAPI document is structurally valid: responses everywhere, path parameters declared, every $ref resolves", () => {
  const { document } = setup();
  assert.match(document.openapi, /^3\.1\.\d+$/);
  assert.ok(document.info.title.length > 0 && document.info.version.length > 0);
  const operationIds = new Set<string>();
  let operations = 0;
  for (const [path, item] of Object.entries(document.paths)) {
    assert.match(path, /^\/[^:]*$/, `${path}: a path starts with / and names parameters as {name}`);
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => String(match[1]));
    for (const [method, value] of Object.entries(item)) {
      assert.ok(httpMethods.includes(method), `${path}: ${method} is not an HTTP method`);
      assert.ok(isObject(value));
      operations += 1;
      const where = `${method.toUpperCase()} ${path}`;
      assert.equal(typeof value.operationId, "string", `${where}: operationId`);
      assert.ok(!operationIds.has(String(value.operationId)), `${where}: operationId ${String(value.operationId)} used twice`);
      operationIds.add(String(value.operationId));
      const responses = value.responses;
      assert.ok(isObject(responses) && Object.keys(responses).length > 0, `${where}: no responses`);
      assert.ok(Object.keys(responses).some((status) => /^2\d\d$/.test(status)), `${where}: no success response`);
      for (const [status, response] of Object.entries(responses)) {
        assert.match(status, /^[1-5]\d\d$/, `${where}: response key ${status}`);
        assert.ok(isObject(response) && typeof response.description === "string" && response.description.length > 0, `${where} ${status}: description`);
        assert.ok(isObject(response.content) && Object.keys(response.content).length > 0, `${where} ${status}: content`);
        for (const media of Object.values(response.content)) assert.ok(isObject(media) && isObject(media.schema), `${where} ${status}: schema`);
        const errorBody = JSON.stringify(response.content).includes("#/components/schemas/ApiError");
        // A 4xx or 5xx is an error ({error:{code,message}}) unless the route answers its own body with it (GET /v1/ready: 503).
        const ownBody = mgmtRoutes[String(value.operationId) as keyof typeof mgmtRoutes] as MgmtRoute;
        if (/^[45]/.test(status) && !(ownBody.alsoAnswers ?? []).includes(Number(status))) assert.ok(errorBody, `${where} ${status}: an error answers ApiError`);
        if (errorBody) {
          const codes = response["x-tidemark-error-codes"];
          assert.ok(Array.isArray(codes) && codes.length > 0, `${where} ${status}: error codes`);
          for (const code of codes as string[]) {
            assert.ok(Object.hasOwn(tmErrorCodes, code), `${where} ${status}: ${code} is not a TM_ERR_* code`);
            // A body too large or not JSON is refused before it is read: TM_ERR_INVALID with HTTP's own status.
            const bodyRefused = (status === "413" || status === "415") && code === "TM_ERR_INVALID";
            if (!bodyRefused) assert.equal(String(tmErrorCodes[code as TmErrorCode].httpStatus), status, `${where}: ${code} is answered with another status`);
          }
        }
      }
      const parameters = (value.parameters ?? []) as Json[];
      const inPath = parameters.filter((parameter) => parameter.in === "path").map((parameter) => String(parameter.name));
      assert.deepEqual(inPath.sort(), [...templated].sort(), `${where}: path parameters`);
      for (const parameter of parameters) {
        assert.ok(["path", "query"].includes(String(parameter.in)) && isObject(parameter.schema), `${where}: parameter ${String(parameter.name)}`);
        if (parameter.in === "path") assert.equal(parameter.required, true, `${where}: a path parameter is required`);
      }
      if (value.requestBody !== undefined) {
        assert.ok(isObject(value.requestBody) && isObject(value.requestBody.content), `${where}: requestBody`);
        assert.ok(isObject(value.requestBody.content["application/json"]), `${where}: requestBody is JSON`);
      }
    }
  }
  assert.equal(operations, routes.length, "one operation per declared route");
  const refs = refsIn(document, "#");
  assert.ok(refs.length > routes.length, "schemas are shared by reference");
  for (const { ref, where } of refs) {
    assert.ok(ref.startsWith("#/components/schemas/"), `${where}: ${ref} points outside components`);
    assert.ok(isObject(resolvePointer(document, ref)), `${where}: ${ref} does not resolve`);
  }
  for (const [name, schema] of Object.entries(document.components.schemas)) {
    assert.ok(!("$schema" in schema) && !("$id" in schema), `components/schemas/${name} keeps $schema or $id`);
    assert.ok(refs.some(({ ref }) => ref === `#/components/schemas/${name}`), `components/schemas/${name} is never used`);
  }
  // The document is JSON (what the node serves) and the same built twice.
  assert.deepEqual(JSON.parse(JSON.stringify(document)), buildOpenApiDocument(document.info.version));
});

void test("the document says what the schemas check: a request refuses unknown fields, a name has its pattern, an answer names its fields", () => {
  const { document } = setup();
  const schemas = document.components.schemas;
  const createVolume = schemas.CreateVolumeRequest;
  assert.ok(createVolume !== undefined);
  assert.equal(createVolume.additionalProperties, false);
  assert.deepEqual(createVolume.required, ["name", "sizeBytes"]);
  const properties = createVolume.properties as Record<string, Json>;
  assert.equal(typeof properties.name?.pattern, "string");
  assert.equal(properties.sizeBytes?.type, "integer");
  // pair create: the defaults are shown and may be left out.
  const createPair = schemas.CreatePairRequest as { required: string[]; properties: Record<string, Json> };
  assert.deepEqual(createPair.required, ["group", "to"]);
  assert.equal(createPair.properties.mode?.default, "async");
  // An answer: a newer node may send more, so unknown fields are not refused.
  const pairInfo = schemas.PairInfo as { properties: Record<string, unknown>; additionalProperties?: unknown };
  assert.ok("lagSeconds" in pairInfo.properties && "reflectedSequence" in pairInfo.properties);
  assert.equal(pairInfo.additionalProperties, undefined);
  const createdPair = operation(document, "POST", "/v1/pairs") as { responses: Record<string, Json> };
  assert.deepEqual(Object.keys(createdPair.responses).filter((status) => status.startsWith("2")), ["201"]);
  assert.ok((createdPair.responses["502"]?.["x-tidemark-error-codes"] as string[]).includes("TM_ERR_UNREACHABLE"));
});

void test("GET /v1/openapi.json serves the generated document as JSON", async () => {
  const { app, document } = setup();
  const response = await app.inject({ method: "GET", url: "/v1/openapi.json" });
  assert.equal(response.statusCode, 200);
  assert.match(String(response.headers["content-type"]), /^application\/json/);
  const served: unknown = response.json();
  assert.ok(openApiDocumentSchema.safeParse(served).success);
  assert.deepEqual(served, JSON.parse(JSON.stringify(document)));
  await app.close();
});

void test("what the server answers passes the contract's answer schemas", async () => {
  const { app } = setup();
  const created = async (route: MgmtRoute, body: unknown): Promise<void> => {
    const response = await app.inject({ method: route.method, url: route.path, payload: body as Json });
    assert.equal(response.statusCode, route.status, response.body);
    assert.ok("safeParse" in route.answer);
    const checked = route.answer.safeParse(response.json());
    assert.ok(checked.success, `${route.path}: ${checked.error?.message ?? ""}`);
  };
  await created(mgmtRoutes.createVolume, { name: "v1", sizeBytes: 1 << 20 });
  await created(mgmtRoutes.createGroup, { name: "g1", volumes: ["v1"] });
  await created(mgmtRoutes.createPair, { group: "g1", to: "http://127.0.0.1:9" });
  for (const [name, route] of routes) {
    if (route.method !== "GET") continue;
    const url = routePath(route, { group: "g1", volume: "v1" });
    const response = await app.inject({ method: "GET", url });
    assert.equal(response.statusCode, route.status, `${name}: ${response.body}`);
    if ("safeParse" in route.answer) {
      const checked = route.answer.safeParse(response.json());
      assert.ok(checked.success, `${name}: ${checked.error?.message ?? ""}`);
    } else {
      assert.equal(String(response.headers["content-type"]).split(";")[0], route.answer.contentType.split(";")[0]);
    }
  }
  await app.close();
});

void test("every route that takes a body refuses an unknown field with TM_ERR_INVALID, as its document says", async () => {
  const { app, document } = setup();
  for (const [name, route] of routes) {
    if (route.body === undefined) continue;
    const url = routePath(route, { group: "g1", volume: "v1" });
    const response = await app.inject({ method: route.method, url, payload: { surplus: 1 } });
    assert.equal(response.statusCode, 400, `${name}: ${response.body}`);
    const body = response.json<{ error: { code: string; message: string } }>();
    assert.equal(body.error.code, "TM_ERR_INVALID");
    // It names the field: the unknown one, or the first one missing.
    assert.match(body.error.message, /^unknown field 'surplus'|^[a-zA-Z.]+: /);
    const documented = operation(document, route.method, route.path) as { responses: Record<string, Json> };
    assert.deepEqual(documented.responses["400"]?.["x-tidemark-error-codes"], ["TM_ERR_INVALID"], name);
  }
  await app.close();
});

void test("routePath fills in and encodes path parameters and the query", () => {
  assert.equal(routePath(mgmtRoutes.pair, { group: "db.1" }), "/v1/pairs/db.1");
  assert.equal(routePath(mgmtRoutes.deleteVolume, { volume: "a b" }, { force: "true" }), "/v1/volumes/a%20b?force=true");
  assert.equal(routePath(mgmtRoutes.deleteVolume, { volume: "v" }, {}), "/v1/volumes/v");
  assert.throws(() => routePath(mgmtRoutes.pair, {}), /path parameter 'group' missing/);
});

async function serveJson(status: number, body: unknown): Promise<{ url: string; server: Server }> {
  const server = createServer((_request, response) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const prepareRequest = {
  pairId: "p-1", primaryNode: "a", primaryGroup: "g", group: "g", volumes: [{ name: "v", sizeBytes: 1 << 20 }], reflect: "time", transfer: "push", streams: 1,
} as const;

void test("a node calling another checks the answer against the contract: a wrong body is refused, not cast", async () => {
  const wrong = await serveJson(200, { nodeId: 7, group: "g" });
  try {
    await assert.rejects(callPeer(wrong.url, mgmtRoutes.preparePairSecondary, { body: prepareRequest }), (error: unknown) => {
      assert.ok(error instanceof ControlError);
      assert.equal(error.code, "TM_ERR_UNREACHABLE");
      assert.match(error.message, /unexpected body \(nodeId: .*\)/);
      return true;
    });
  } finally {
    wrong.server.close();
  }
  const right = await serveJson(200, { nodeId: "b", group: "g", replAddress: "127.0.0.1:7400", later: "ignored" });
  try {
    assert.deepEqual(await callPeer(right.url, mgmtRoutes.preparePairSecondary, { body: prepareRequest }), { nodeId: "b", group: "g", replAddress: "127.0.0.1:7400" });
  } finally {
    right.server.close();
  }
  const refused = await serveJson(409, { error: { code: "TM_ERR_DOMAIN_INCOMPARABLE", message: "not comparable" } });
  try {
    await assert.rejects(callPeer(refused.url, mgmtRoutes.preparePairSecondary, { body: prepareRequest }), (error: unknown) => {
      assert.ok(error instanceof ControlError);
      assert.equal(error.code, "TM_ERR_DOMAIN_INCOMPARABLE");
      assert.match(error.message, /secondary http:\/\/127\.0\.0\.1:\d+: not comparable/);
      return true;
    });
  } finally {
    refused.server.close();
  }
});
