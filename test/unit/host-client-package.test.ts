// Proves what users import works: the package entry (src/index.ts, which package.json "exports" names as dist/index.js once `npm pack` compiled it; test/e2e/package.test.ts imports "tidemark" from an installed tarball) is the client library, and it talks to a real host-protocol server over TCP on 127.0.0.1 with a file-backed volume.
import { test } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import path from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { pino } from "pino";
import { HostClient, HostProtocolError, type HostVolume } from "../../src/index.ts";
import * as direct from "../../src/client/host-client.ts";
import { startHostServer } from "../../src/frontends/host-server.ts";
import { FileCatalog } from "./host-fixtures.ts";

void test("the package entry exports the host client, and it writes with a write time and reads back", async () => {
  assert.equal(HostClient, direct.HostClient, "the package entry re-exports src/client/host-client.ts");
  assert.equal(HostProtocolError, direct.HostProtocolError);
  const dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-host-pkg-"));
  const catalog = new FileCatalog();
  const server = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: pino({ level: "silent" }) });
  try {
    await catalog.add(dir, "accounts", 64 * 1024, false);
    const client = await HostClient.connect({ host: "127.0.0.1", port: server.port });
    const volume: HostVolume = await client.open("accounts");
    await volume.write(4096, new TextEncoder().encode("debit 100"), { writeTimeUs: 1_700_000_000_000_001, fua: true });
    assert.equal((await volume.read(4096, 9)).toString(), "debit 100");
    assert.equal(catalog.calls.at(-1)?.options.hostWriteTimeUs, 1_700_000_000_000_001);
    const error = await client.open("missing").then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof HostProtocolError && error.code === "ENOENT");
    await client.close();
  } finally {
    await server.close();
    await catalog.closeFiles();
    await rm(dir, { recursive: true, force: true });
  }
});
