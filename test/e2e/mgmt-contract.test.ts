// Proves the management contract on a real `tidemark node` process: GET /v1/openapi.json
// answers the OpenAPI 3.1 document with every route of src/mgmt/contract.ts, and the node
// refuses to serve the management API (no authentication yet) on a non-loopback address
// unless started with --insecure-mgmt: one line, exit 2, nothing left listening.
import assert from "node:assert/strict";
import { test } from "node:test";
import { mgmtRoutes } from "../../src/mgmt/contract.ts";
import { openApiPath } from "../../src/mgmt/openapi.ts";
import { freePorts, mgmtJson, nodeBin, run, tidemarkBin, tmpDir } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";

interface Document {
  openapi: string;
  info: { version: string };
  paths: Record<string, Record<string, { operationId: string }>>;
}

void test("a running node serves GET /v1/openapi.json: OpenAPI 3.1 with every route of the contract", async () => {
  const node = await startNode({ id: "openapi-e2e" });
  const response = await fetch(`${node.mgmtUrl}/v1/openapi.json`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const document = (await response.json()) as Document;
  assert.match(document.openapi, /^3\.1\./);
  const status = (await mgmtJson(node.mgmtUrl, "/v1/status")) as { version: string };
  assert.equal(document.info.version, status.version);
  for (const [name, route] of Object.entries(mgmtRoutes)) {
    assert.equal(document.paths[openApiPath(route.path)]?.[route.method.toLowerCase()]?.operationId, name, `${route.method} ${route.path}`);
  }
  await node.stop();
});

void test("--mgmt on a non-loopback address is refused without --insecure-mgmt (one line, exit 2) and served with it", async () => {
  const data = await tmpDir("tidemark-insecure-");
  const four = await freePorts(4);
  const [mgmt, nbd, host, repl] = four as [number, number, number, number];
  const ports = ["--nbd", `127.0.0.1:${nbd}`, "--host-port", `127.0.0.1:${host}`, "--repl", `127.0.0.1:${repl}`];
  const refused = await run(nodeBin, [tidemarkBin, "node", "--id", "exposed", "--data", data, "--mgmt", `0.0.0.0:${mgmt}`, ...ports], { timeoutMs: 30_000 });
  const context = `exit ${String(refused.code)}\n${refused.stderr}`;
  assert.equal(refused.code, 2, context);
  assert.equal(refused.stdout, "", context);
  const lines = refused.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, context);
  assert.match(lines[0] ?? "", new RegExp(`^tidemark: --mgmt 0\\.0\\.0\\.0:${mgmt} would let anyone who can reach it .* no authentication yet.* --insecure-mgmt`), context);
  await assert.rejects(fetch(`http://127.0.0.1:${mgmt}/v1/health`, { signal: AbortSignal.timeout(2_000) }), "nothing listens after the refusal");

  // With --insecure-mgmt the same address is served (reached here through loopback).
  const node = await startNode({ id: "exposed", dataDir: data, extraArgs: ["--mgmt", `0.0.0.0:${mgmt}`, "--insecure-mgmt"], ports: [mgmt, nbd, host, repl] });
  const status = (await mgmtJson(node.mgmtUrl, "/v1/status")) as { listeners: { mgmt: string } };
  assert.match(status.listeners.mgmt, new RegExp(`0\\.0\\.0\\.0:${mgmt}$`));
  await node.stop();
});
