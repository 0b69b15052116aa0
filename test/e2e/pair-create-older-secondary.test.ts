// A primary tells its secondary its own management URL at pair create (`primaryUrl`), so the
// secondary's hints after a takeover can name it (`--node URL`, not a placeholder). A
// secondary older than that field refuses it as unknown (its request schema is strict, as
// 010f61e's was): the primary asks again without it and the pair is made. The older
// secondary is the real node behind an HTTP proxy that answers that one request exactly as an
// older node's management API answers an unknown field (400, TM_ERR_INVALID).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import path from "node:path";
import { cli, cliOk, onCleanup } from "./harness.ts";
import { makeGroup, pairWait, startPairNodes } from "./drill-lib.ts";

interface NodeJson {
  readonly groups: readonly { readonly name: string; readonly secondary?: { readonly primaryUrl?: string } }[];
}

function secondaryRecord(dataDir: string, group: string): { readonly primaryUrl?: string } | undefined {
  const metadata = JSON.parse(readFileSync(path.join(dataDir, "node.json"), "utf8")) as NodeJson;
  return metadata.groups.find((g) => g.name === group)?.secondary;
}

/** A proxy to `targetUrl` that refuses a pair-secondaries request carrying primaryUrl as 010f61e does; counts what it refused. */
async function olderSecondaryProxy(targetUrl: string): Promise<{ url: string; refused: () => number }> {
  let refused = 0;
  const target = new URL(targetUrl);
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      if (request.url === "/v1/pair-secondaries" && body.includes("primaryUrl")) {
        refused += 1;
        response.writeHead(400, { "content-type": "application/json; charset=utf-8" });
        response.end(JSON.stringify({ error: { code: "TM_ERR_INVALID", message: "unknown field 'primaryUrl'" } }));
        return;
      }
      const forward = http.request({ host: target.hostname, port: target.port, method: request.method, path: request.url, headers: request.headers }, (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      });
      forward.on("error", () => response.destroy());
      forward.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onCleanup("older-secondary proxy", () => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, refused: () => refused };
}

void test("pair create records the primary's URL on the secondary, and a secondary older than that field still pairs", { timeout: 120_000 }, async () => {
  const { a, b } = await startPairNodes();
  await makeGroup(a, "g", [{ name: "v1", size: "4M" }]);
  await makeGroup(a, "old", [{ name: "v2", size: "4M" }]);

  await cliOk(["pair", "create", "g", "--to", b.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal(secondaryRecord(b.dataDir, "g")?.primaryUrl, a.mgmtUrl, "the secondary keeps the primary's URL");

  const proxy = await olderSecondaryProxy(b.mgmtUrl);
  const created = await cliOk(["pair", "create", "old", "--to", proxy.url], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.match(created.stdout, /^pair of group old is replicating/);
  assert.equal(proxy.refused(), 1, "asked once with primaryUrl, then without it");
  assert.equal(secondaryRecord(b.dataDir, "old")?.primaryUrl, undefined, "the older secondary was not given it");
  await pairWait(a, "old");

  // After a takeover, B's refusal to forget it names the primary: its URL where B knows it.
  for (const group of ["g", "old"]) await cliOk(["pair", "takeover", group], { node: b.mgmtUrl, timeoutMs: 120_000 });
  const named = await cli(["pair", "delete", "g"], { node: b.mgmtUrl });
  assert.match(named.stderr, new RegExp(`tidemark pair delete g --force --node ${a.mgmtUrl}\\)`));
  const placeholder = await cli(["pair", "delete", "old"], { node: b.mgmtUrl });
  assert.match(placeholder.stderr, new RegExp(`tidemark pair delete old --force --node <management URL of node ${a.id}>\\)`));
});
