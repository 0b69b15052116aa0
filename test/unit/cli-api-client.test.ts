// Proves the CLI's HTTP client turns every way a request can fail into one clear line:
// connection refused, a node that never answers (timeout), answers that are not JSON, too
// large or of the wrong shape, and API error bodies, using small real HTTP servers on port 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { z } from "zod";
import { ApiClient, ApiError, parseNodeUrl } from "../../src/cli/api-client.ts";
import { OperationError, UsageError } from "../../src/cli/errors.ts";
import { healthSchema, volumeListSchema } from "../../src/mgmt/contract.ts";
import { mgmtResponseBytesMax } from "../../src/core/limits.ts";
import { startMgmtApi } from "../../src/mgmt/mgmt-api.ts";
import { FakeControl } from "./mgmt-fake-control.ts";

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

async function withServer(handler: Handler, body: (url: string) => Promise<void>): Promise<void> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    await body(`http://127.0.0.1:${port}`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function failure(promise: Promise<unknown>): Promise<OperationError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof OperationError, `expected an OperationError, got ${String(error)}`);
    assert.ok(!error.message.includes("\n"), "one line");
    return error;
  }
  assert.fail("expected the request to fail");
}

void test("parseNodeUrl accepts http(s) URLs and HOST:PORT, and refuses the rest as usage errors", () => {
  assert.equal(parseNodeUrl("http://127.0.0.1:7480").href, "http://127.0.0.1:7480/");
  assert.equal(parseNodeUrl("127.0.0.1:7481").href, "http://127.0.0.1:7481/");
  assert.equal(parseNodeUrl("https://node.example:8443/tm/").href, "https://node.example:8443/tm/");
  assert.equal(parseNodeUrl("localhost:7480").href, "http://localhost:7480/");
  assert.equal(parseNodeUrl("http://[::1]:7480").href, "http://[::1]:7480/");
  assert.equal(parseNodeUrl("http://tidemark_b:7480").href, "http://tidemark_b:7480/");
  for (const bad of ["ftp://x", "http://a:b@host:1", "http://h:1/?q=1", "not a url", "host:port", "htp:/bad", "http:x", "ht!tp://x", "http://ht!tp", "1http://x"]) {
    assert.throws(() => parseNodeUrl(bad, "--to"), (error: unknown) => error instanceof UsageError && /^--to /.test(error.message), bad);
  }
});

void test("connection refused names the node and says to start it or use --node", async () => {
  const port = await closedPort();
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  const error = await failure(client.get("/v1/health", healthSchema));
  assert.equal(
    error.message,
    `cannot reach node at http://127.0.0.1:${port} (connection refused); is \`tidemark node\` running? use --node URL`,
  );
});

void test("a node that never answers times out with a clear line", async () => {
  await withServer(
    () => undefined,
    async (url) => {
      const client = new ApiClient(url, { timeoutMs: 150 });
      const error = await failure(client.get("/v1/health", healthSchema));
      assert.match(error.message, /did not answer GET \/v1\/health within 150ms/);
    },
  );
});

void test("answers that are not JSON, too large, or of the wrong shape are reported as such", async () => {
  await withServer(
    (request, response) => {
      if (request.url === "/v1/health") {
        response.writeHead(200, { "content-type": "text/html" }).end("<html>hello</html>");
      } else if (request.url === "/v1/volumes") {
        response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ volumes: "none" }));
      } else if (request.url === "/v1/big") {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(Buffer.alloc(mgmtResponseBytesMax + 1, 0x20));
      } else if (request.url === "/v1/broken") {
        response.writeHead(200, { "content-type": "application/json" }).end("{nope");
      } else {
        response.writeHead(502, { "content-type": "text/plain" }).end("bad gateway");
      }
    },
    async (url) => {
      const client = new ApiClient(url);
      assert.match((await failure(client.get("/v1/health", healthSchema))).message, /with HTTP 200 but not JSON; is --node pointing at a tidemark node\?/);
      assert.match((await failure(client.get("/v1/broken", healthSchema))).message, /but not JSON/);
      assert.match((await failure(client.get("/v1/volumes", volumeListSchema))).message, /unexpected body \(volumes: .*\); is the node the same version/);
      assert.match((await failure(client.get("/v1/big", z.unknown()))).message, new RegExp(`more than ${mgmtResponseBytesMax} bytes`));
      assert.match((await failure(client.get("/v1/other", z.unknown()))).message, /answered GET \/v1\/other with HTTP 502 Bad Gateway/);
    },
  );
});

void test("API error bodies become ApiError with status, code, the node's message and the caller's hint", async () => {
  const api = await startMgmtApi({ host: "127.0.0.1", port: 0, control: new FakeControl(), logger: pino({ level: "silent" }) });
  try {
    const client = new ApiClient(`http://127.0.0.1:${api.port}`);
    const body = { name: "v", sizeBytes: 8192 };
    const created = await client.post("/v1/volumes", body, z.object({ volume: z.object({ name: z.string() }) }));
    assert.equal(created.status, 201);
    assert.equal(created.value.volume.name, "v");
    const error = await failure(
      client.post("/v1/volumes", body, z.unknown(), { what: "create volume 'v'", hints: { TM_ERR_EXISTS: "pick another name" } }),
    );
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 409);
    assert.equal(error.code, "TM_ERR_EXISTS");
    assert.equal(error.message, "cannot create volume 'v': volume 'v' already exists [TM_ERR_EXISTS]; pick another name");
    const notFound = await failure(client.get("/v1/nothing", z.unknown()));
    assert.match(notFound.message, /no such endpoint: GET \/v1\/nothing \[TM_ERR_NOT_FOUND\]/);
  } finally {
    await api.close();
  }
});

void test("a URL prefix is kept in front of every path (reverse proxies)", async () => {
  await withServer(
    (request, response) => {
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ status: "ok", id: request.url ?? "" }));
    },
    async (url) => {
      const client = new ApiClient(`${url}/tm/`);
      const { value } = await client.get("/v1/health", healthSchema);
      assert.equal(value.id, "/tm/v1/health");
    },
  );
});
