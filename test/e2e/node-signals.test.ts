// Proves that a node never stops silently (issue 6, kind 1): when its terminal goes away
// (its stderr pipe is closed, so every log line fails with EPIPE) it keeps serving, and the
// SIGHUP a closed terminal sends is a clean stop (exit 0) after which the same data
// directory starts again with everything written.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { NbdClient, readExport } from "./drill-lib.ts";
import { cliOk, freePorts, mgmtJson, nodeBin, repoRoot, startNode, tidemarkBin, tmpDir, waitFor } from "./harness.ts";

void test("a node whose stderr is gone keeps serving; SIGHUP stops it cleanly and it starts again with its data", { timeout: 60_000 }, async () => {
  const dataDir = await tmpDir("tidemark-hup-");
  const [mgmt, nbd, host, repl] = await freePorts(4);
  const child = spawn(nodeBin, [tidemarkBin, "node", "--id", "hup", "--data", dataDir, "--mgmt", `127.0.0.1:${String(mgmt)}`, "--nbd", `127.0.0.1:${String(nbd)}`,
    "--host-port", `127.0.0.1:${String(host)}`, "--repl", `127.0.0.1:${String(repl)}`], { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  try {
    const mgmtUrl = `http://127.0.0.1:${String(mgmt)}`;
    await waitFor("the node is healthy", async () => (await fetch(`${mgmtUrl}/v1/health`)).ok, { timeoutMs: 20_000 });
    child.stderr.destroy(); // the terminal is gone: log lines now fail with EPIPE
    // Every step below logs a line.
    await cliOk(["volume", "create", "v", "--size", "4M"], { node: mgmtUrl });
    await cliOk(["group", "create", "g", "--volumes", "v"], { node: mgmtUrl });
    const client = await NbdClient.connect(nbd!, "v");
    await client.write(0, Buffer.alloc(4096, 0x5a), { fua: true });
    await client.close();
    assert.equal(((await mgmtJson(mgmtUrl, "/v1/health")) as { status: string }).status, "ok", "still serving");
    child.kill("SIGHUP");
    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, "SIGHUP is a clean stop");
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  const again = await startNode({ id: "hup", dataDir });
  const image = await readExport(again, "v");
  assert.equal(image[0], 0x5a, "the data is there after the restart");
  await again.stop("SIGHUP");
});
