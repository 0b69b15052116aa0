// Proves that a node never stops silently (issue 6, kind 1): when its terminal goes away
// (its stderr pipe is closed, so every log line fails with EPIPE) it keeps serving, and the
// SIGHUP a closed terminal sends is a clean stop (exit 0) after which the same data
// directory starts again with everything written. Every other signal that would end the
// process by default is a clean stop with a log line naming it (SIGQUIT, SIGALRM, ...) or is
// logged and ignored (SIGUSR2, ...), never a silent death (src/cli/node-signals.ts).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ignoredSignals, stopSignals } from "../../src/cli/node-signals.ts";
import { NbdClient, readExport } from "./drill-lib.ts";
import { cliOk, freePorts, mgmtJson, nodeBin, repoRoot, sleep, startNode, tidemarkBin, tmpDir, waitFor, type RunningNode } from "./harness.ts";

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

/** The JSON log lines of `node` with this event. */
function logLines(node: RunningNode, event: string): { signal?: string; msg?: string; alsoIgnored?: number }[] {
  return readFileSync(node.logFile, "utf8").split("\n").filter((line) => line.includes(`"event":"${event}"`)).map((line) => JSON.parse(line) as { signal?: string; msg?: string });
}

void test("SIGUSR2 and the other signals with no meaning are logged and ignored; SIGQUIT, SIGALRM and the other stop signals are clean stops, logged, and the node starts again with its data", { timeout: 120_000 }, async () => {
  const node = await startNode({ id: "signals" });
  await cliOk(["volume", "create", "v", "--size", "4M"], { node: node.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v"], { node: node.mgmtUrl });
  const client = await NbdClient.connect(node.nbdPort, "v");
  await client.write(0, Buffer.alloc(4096, 0x33), { fua: true });
  await client.close();

  // Ignored: the node goes on (before: SIGUSR2 killed it silently, no log line, no clean stop).
  for (const signal of ignoredSignals) process.kill(node.pid, signal);
  process.kill(node.pid, "SIGUSR2"); // again within the interval: counted, not logged
  await waitFor("a log line for each ignored signal", () => ignoredSignals.every((signal) => logLines(node, "signal_ignored").some((line) => line.signal === signal)), { timeoutMs: 10_000 });
  await sleep(300);
  assert.ok(node.running(), "still running");
  assert.equal(((await mgmtJson(node.mgmtUrl, "/v1/health")) as { status: string }).status, "ok", "and serving");
  assert.equal(logLines(node, "signal_ignored").filter((line) => line.signal === "SIGUSR2").length, 1, "one line per signal per interval, not one per signal sent");
  assert.match(logLines(node, "signal_ignored")[0]?.msg ?? "", /ignored.*stops cleanly on SIGTERM/);

  // Clean stops: exit 0 (node.stop checks it), a line naming the signal, and the data on restart.
  for (const signal of stopSignals.filter((s) => !["SIGTERM", "SIGINT", "SIGHUP"].includes(s))) {
    await node.stop(signal);
    const lines = logLines(node, "signal").filter((line) => line.signal === signal);
    assert.equal(lines.length, 1, `${signal}: one log line naming it`);
    assert.match(lines[0]?.msg ?? "", new RegExp(`stopping on ${signal} \\(clean stop\\)`));
    await node.restart();
    const image = await readExport(node, "v");
    assert.equal(image[0], 0x33, `${signal}: the data is there after the restart`);
  }
  await node.stop();
});
