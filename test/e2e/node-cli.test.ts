// Proves CONTRACT.md's command line against a real `tidemark node` process, as a user types it:
// wrong input (missing or bad sizes, duplicate names, missing or taken volumes, unknown
// commands, an unreachable node, bad node flags, a second node on the same --data) fails with a
// non-zero exit and one line on stderr saying what was wrong and what to do; --json output
// parses; GET /metrics counts real I/O. A node that cannot start (an uncreatable or file
// --data, a port in use) fails at once with one line naming the option, no stack trace.
// Also pins down races between concurrent creates.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { test } from "node:test";
import type { GroupInfo, NodeStatus, VolumeInfo } from "../../src/mgmt/control.ts";
import { cli, cliOk, freePort, freePorts, mgmtJson, nodeBin, requireTool, run, tidemarkBin, tmpDir, type RunResult, type RunningNode } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";

const MiB = 1024 * 1024;

function oneLineFailure(result: RunResult, args: readonly string[], reason: RegExp, remedy: RegExp, exitCode?: number): void {
  const context = `tidemark ${args.join(" ")}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.notEqual(result.code, 0, `must fail: ${context}`);
  if (exitCode !== undefined) assert.equal(result.code, exitCode, context);
  assert.equal(result.stdout, "", `nothing on stdout: ${context}`);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `exactly one line on stderr: ${context}`);
  const line = lines[0]!;
  assert.match(line, /^tidemark: /, context);
  assert.match(line, reason, `says what was wrong: ${context}`);
  assert.match(line, remedy, `says what to do: ${context}`);
}

interface Case {
  readonly args: readonly string[];
  readonly reason: RegExp;
  readonly remedy: RegExp;
  readonly exitCode?: number;
  /** Run without --node (the harness appends it after the arguments). */
  readonly withoutNode?: boolean;
}

async function expectFailures(node: RunningNode, cases: readonly Case[]): Promise<void> {
  const results = await Promise.all(cases.map((c) => cli(c.args, c.withoutNode === true ? {} : { node: node.mgmtUrl })));
  cases.forEach((c, i) => oneLineFailure(results[i]!, c.args, c.reason, c.remedy, c.exitCode));
}

let shared: Promise<RunningNode> | undefined;
function sharedNode(): Promise<RunningNode> {
  shared ??= startNode({ id: "cli-e2e" });
  return shared;
}

void test("volume and group commands: wrong input fails with one line that says what to do; state is unchanged", async () => {
  const node = await sharedNode();
  await cliOk(["volume", "create", "v1", "--size", "1M"], { node: node.mgmtUrl });
  await cliOk(["volume", "create", "v2", "--size", "2M"], { node: node.mgmtUrl });
  await cliOk(["group", "create", "g1", "--volumes", "v1"], { node: node.mgmtUrl });
  await expectFailures(node, [
    { args: ["volume", "create", "v3"], reason: /--size/, remedy: /--help|--size/, exitCode: 2 },
    { args: ["volume", "create", "v3", "--size", "12X"], reason: /12X.*unit/, remedy: /K, M, G or T|e\.g\./, exitCode: 2 },
    { args: ["volume", "create", "v3", "--size", "4097"], reason: /4097/, remedy: /multiple of 512/ },
    { args: ["volume", "create", "v3", "--size", "1000"], reason: /1000/, remedy: /minimum|at least/ },
    { args: ["volume", "create", "v3", "--size", "-5"], reason: /negative/, remedy: /use a number/, exitCode: 2 },
    { args: ["volume", "create", "v1", "--size", "1M"], reason: /v1.*already exists/, remedy: /another name|volume list/ },
    { args: ["volume", "create", "bad/name", "--size", "1M"], reason: /bad\/name/, remedy: /letters, digits/, exitCode: 2 },
    { args: ["group", "create", "g2", "--volumes", "v2,ghost"], reason: /ghost.*(does not exist|not found)/, remedy: /volume create/ },
    { args: ["group", "create", "g2", "--volumes", "v1"], reason: /v1.*already belongs to group g1/, remedy: /at most one group|volume list/ },
    { args: ["group", "create", "g1", "--volumes", "v2"], reason: /g1.*already exists/, remedy: /another name|group list/ },
    { args: ["group", "create", "g2"], reason: /--volumes/, remedy: /--help/, exitCode: 2 },
    { args: ["frobnicate"], reason: /unknown command 'frobnicate'/, remedy: /--help/, exitCode: 2 },
    { args: ["volume", "grow", "v1"], reason: /grow|unknown/, remedy: /--help/, exitCode: 2 },
    { args: ["volume"], reason: /needs a subcommand/, remedy: /create, resize, delete, list/, exitCode: 2, withoutNode: true },
    // --node (the harness puts it after) is taken before or after the subcommand; the subcommand is still missing.
    { args: ["volume"], reason: /needs a subcommand/, remedy: /create, resize, delete, list/, exitCode: 2 },
  ]);
  // Nothing above changed anything.
  const volumes = JSON.parse((await cliOk(["volume", "list", "--json"], { node: node.mgmtUrl })).stdout) as { volumes: VolumeInfo[] };
  assert.deepEqual(volumes.volumes.map((v) => [v.name, v.sizeBytes, v.group]).sort(), [["v1", MiB, "g1"], ["v2", 2 * MiB, null]]);
  const groups = JSON.parse((await cliOk(["group", "list", "--json"], { node: node.mgmtUrl })).stdout) as { groups: GroupInfo[] };
  assert.deepEqual(groups.groups.map((g) => [g.name, g.volumes]), [["g1", ["v1"]]]);
});

void test("an unreachable node: exit 1, one line naming the URL and what to check", async () => {
  const port = await freePort();
  const args = ["status"];
  const result = await cli(args, { node: `http://127.0.0.1:${port}` });
  oneLineFailure(result, args, new RegExp(`cannot reach node at http://127\\.0\\.0\\.1:${port}.*connection refused`), /tidemark node.*running|--node/, 1);
  const volumeArgs = ["volume", "create", "x", "--size", "1M"];
  oneLineFailure(await cli(volumeArgs, { node: `127.0.0.1:${port}` }), volumeArgs, /cannot reach/, /--node/, 1);
});

void test("status, volume list --json and group list --json parse and agree with each other", async () => {
  const node = await sharedNode();
  const opts = { node: node.mgmtUrl };
  const [statusOut, volumesOut, groupsOut, human, volumeTable, groupTable] = await Promise.all([
    cliOk(["status", "--json"], opts), cliOk(["volume", "list", "--json"], opts), cliOk(["group", "list", "--json"], opts),
    cliOk(["status"], opts), cliOk(["volume", "list"], opts), cliOk(["group", "list"], opts),
  ]);
  const status = JSON.parse(statusOut.stdout) as NodeStatus;
  const { volumes } = JSON.parse(volumesOut.stdout) as { volumes: VolumeInfo[] };
  const { groups } = JSON.parse(groupsOut.stdout) as { groups: GroupInfo[] };
  assert.equal(status.id, "cli-e2e");
  assert.equal(status.writeTimePolicy, "host");
  assert.equal(status.listeners.nbd, `127.0.0.1:${node.nbdPort}`);
  assert.equal(status.listeners.mgmt, `127.0.0.1:${node.mgmtPort}`);
  assert.equal(status.listeners.host, `127.0.0.1:${node.hostPort}`);
  assert.equal(status.listeners.repl, `127.0.0.1:${node.replPort}`);
  assert.equal(status.dataDir, node.dataDir);
  assert.deepEqual(status.volumes.map((v) => v.name).sort(), volumes.map((v) => v.name).sort());
  assert.deepEqual(status.groups.map((g) => g.name), groups.map((g) => g.name));
  const g1 = groups.find((g) => g.name === "g1");
  assert.ok(g1 !== undefined && g1.nextSequence >= 1 && g1.journalBytesMax > 0, JSON.stringify(g1));
  for (const name of ["v1", "v2"]) {
    assert.match(human.stdout, new RegExp(`\\b${name}\\b`));
    assert.match(volumeTable.stdout, new RegExp(`\\b${name}\\b`));
  }
  assert.match(human.stdout, /cli-e2e/);
  assert.match(groupTable.stdout, /\bg1\b/);
});

void test("GET /metrics after NBD I/O: request counter, latency histogram, journal bytes and fsyncs", async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const node = await sharedNode();
  const writes = 5;
  const commands = [...Array.from({ length: writes }, (_, i) => `write -P ${i + 1} ${i * 65536} 65536`), "read -P 1 0 65536", "flush"];
  const io = await run("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), node.nbdUri("v1")], { timeoutMs: 30_000 });
  assert.equal(io.code, 0, io.stdout + io.stderr);
  const response = await fetch(`${node.mgmtUrl}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/plain/);
  const text = await response.text();
  const value = (pattern: RegExp): number => {
    const line = text.split("\n").find((l) => pattern.test(l));
    assert.ok(line !== undefined, `no line matching ${String(pattern)} in\n${text.split("\n").filter((l) => l.startsWith("tidemark_") && !l.startsWith("tidemark_process_") && !l.startsWith("tidemark_nodejs_")).join("\n")}`);
    return Number(line.split(" ").at(-1));
  };
  assert.match(text, /# TYPE tidemark_requests_total counter/);
  assert.match(text, /# TYPE tidemark_request_duration_seconds histogram/);
  assert.ok(value(/^tidemark_requests_total\{.*frontend="nbd".*op="write".*result="ok"/) >= writes, "NBD writes counted");
  assert.ok(value(/^tidemark_requests_total\{.*frontend="nbd".*op="read".*result="ok"/) >= 1, "NBD reads counted");
  assert.ok(value(/^tidemark_request_duration_seconds_count\{.*op="write"/) >= writes, "write latencies observed");
  assert.ok(value(/^tidemark_request_duration_seconds_bucket\{.*le="\+Inf".*op="write"|^tidemark_request_duration_seconds_bucket\{.*op="write".*le="\+Inf"/) >= writes);
  assert.ok(value(/^tidemark_request_duration_seconds_sum\{.*op="write"/) > 0);
  assert.ok(value(/^tidemark_journal_used_bytes\{.*group="g1"/) >= writes * 65536, "the journal holds the written bytes");
  assert.ok(value(/^tidemark_journal_fsyncs_total\{.*group="g1"/) >= 1, "FLUSH synced the journal");
  assert.ok(value(/^tidemark_journal_written_bytes_total\{.*group="g1"/) >= writes * 65536);
  assert.ok(value(/^tidemark_group_next_sequence\{.*group="g1"/) >= writes + 1);
});

void test("tidemark node: bad --write-time, --mgmt, --id exit 2 with one line; a second node on the same --data refuses", async () => {
  const node = await sharedNode();
  const scratch = await tmpDir("tidemark-cli-node-");
  const [mgmt, nbd, host, repl] = await freePorts(4);
  const ports = ["--mgmt", `127.0.0.1:${mgmt}`, "--nbd", `127.0.0.1:${nbd}`, "--host-port", `127.0.0.1:${host}`, "--repl", `127.0.0.1:${repl}`];
  const bad: Case[] = [
    { args: ["node", "--id", "x", "--data", scratch, ...ports, "--write-time", "sundial"], reason: /--write-time "sundial"/, remedy: /host, clock, counter/, exitCode: 2 },
    { args: ["node", "--id", "x", "--data", scratch, ...ports, "--mgmt", "nohost"], reason: /--mgmt "nohost"/, remedy: /HOST:PORT.*for example/, exitCode: 2 },
    { args: ["node", "--id", "x", "--data", scratch, ...ports, "--mgmt", "127.0.0.1:99999"], reason: /--mgmt "127\.0\.0\.1:99999"/, remedy: /HOST:PORT/, exitCode: 2 },
    { args: ["node", "--id", "bad id!", "--data", scratch, ...ports], reason: /--id/, remedy: /letters, digits/, exitCode: 2 },
    { args: ["node", "--data", scratch, ...ports], reason: /--id/, remedy: /--help/, exitCode: 2 },
  ];
  const results = await Promise.all(bad.map((c) => run(nodeBin, [tidemarkBin, ...c.args], { timeoutMs: 30_000 })));
  bad.forEach((c, i) => oneLineFailure(results[i]!, c.args, c.reason, c.remedy, c.exitCode));

  // Same --data as the running node, other ports: refused before touching anything.
  const second = await run(nodeBin, [tidemarkBin, "node", "--id", "intruder", "--data", node.dataDir, ...ports], { timeoutMs: 30_000 });
  const context = `exit ${String(second.code)}\n${second.stderr}`;
  assert.notEqual(second.code, 0, context);
  // Logs are JSON lines on stderr; the last line is the CLI's own one-line message.
  const lines = second.stderr.trimEnd().split("\n");
  const last = lines.at(-1) ?? "";
  assert.match(last, new RegExp(`^tidemark: data directory ${node.dataDir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is in use by process ${node.pid}`), context);
  assert.match(last, /stop that node first or use another --data/, context);
  for (const line of lines.slice(0, -1)) assert.doesNotThrow(() => JSON.parse(line) as unknown, `other stderr lines are JSON logs: ${line}`);
  // The first node is untouched and still owns its data.
  const health = await fetch(`${node.mgmtUrl}/v1/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { id: string }).id, "cli-e2e");
  await node.restart();
  const status = await mgmtJson(node.mgmtUrl, "/v1/status") as NodeStatus;
  assert.deepEqual(status.volumes.map((v) => v.name).sort(), ["v1", "v2"]);
});

// Regression: ids were once read from the metadata before an await and bumped after it, so
// concurrent creates shared 1.vol (silent data mixing) and journals/1. Ids are now reserved first.
void test("concurrent volume creates get their own files; concurrent group creates all succeed", async (t) => {
  if (!requireTool(t, "nbdinfo", "qemu-io")) return;
  const node = await startNode({ id: "cli-race" });
  const names = ["r1", "r2", "r3", "r4"];
  await Promise.all(names.map((name) => mgmtJson(node.mgmtUrl, "/v1/volumes", { name, sizeBytes: MiB })));
  const listed = await run("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${node.nbdPort}`]);
  const exports = (JSON.parse(listed.stdout) as { exports: { "export-name": string }[] }).exports.map((e) => e["export-name"]).sort();
  assert.deepEqual(exports, names, "every volume is an export");
  for (const [i, name] of names.entries()) {
    const result = await run("qemu-io", ["-f", "raw", "-c", `write -P ${i + 1} 0 4096`, node.nbdUri(name)]);
    assert.equal(result.code, 0, result.stderr);
  }
  for (const [i, name] of names.entries()) {
    const result = await run("qemu-io", ["-f", "raw", "-c", `read -P ${i + 1} 0 4096`, node.nbdUri(name)]);
    assert.doesNotMatch(result.stdout, /Pattern verification failed/, `${name} kept its own data`);
  }
  const groups = await Promise.allSettled(names.map((name, i) => mgmtJson(node.mgmtUrl, "/v1/groups", { name: `gr${i}`, volumes: [name] })));
  assert.deepEqual(groups.map((g) => (g.status === "fulfilled" ? "ok" : String(g.reason))), names.map(() => "ok"));
  // Two groups racing for one volume: exactly one wins.
  await mgmtJson(node.mgmtUrl, "/v1/volumes", { name: "shared", sizeBytes: MiB });
  const racing = await Promise.allSettled(["gx", "gy"].map((name) => mgmtJson(node.mgmtUrl, "/v1/groups", { name, volumes: ["shared"] })));
  assert.equal(racing.filter((r) => r.status === "fulfilled").length, 1, "a volume belongs to at most one group");
  await node.stop();
});

/** A start that fails: exit 1, nothing on stdout, the last stderr line the CLI's one line, every other one a JSON log line without a stack trace. */
function startFailure(result: RunResult, what: string, reason: RegExp, remedy: RegExp): void {
  const context = `${what}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.equal(result.code, 1, `fails with exit 1: ${context}`);
  assert.equal(result.stdout, "", context);
  const lines = result.stderr.trimEnd().split("\n");
  const last = lines.at(-1) ?? "";
  assert.match(last, /^tidemark: /, context);
  assert.match(last, reason, `says what was wrong: ${context}`);
  assert.match(last, remedy, `says what to do: ${context}`);
  for (const line of lines.slice(0, -1)) {
    assert.doesNotThrow(() => JSON.parse(line) as unknown, `other stderr lines are JSON logs: ${line}`);
    assert.doesNotMatch(line, /"stack"|\\n\s+at /, `no stack trace: ${line}`);
  }
}

void test("tidemark node: an uncreatable --data (/proc), a file as --data, a port in use: fails at once with one line naming the option and what to do", { timeout: 120_000 }, async () => {
  const scratch = await tmpDir("tidemark-cli-start-");
  const [mgmt, nbd, host, repl] = await freePorts(4);
  const addresses: Record<string, string> = { "--mgmt": `127.0.0.1:${mgmt}`, "--nbd": `127.0.0.1:${nbd}`, "--host-port": `127.0.0.1:${host}`, "--repl": `127.0.0.1:${repl}` };
  const nodeArgs = (dataDir: string, overrides: Record<string, string> = {}): string[] =>
    ["node", "--id", "x", "--data", dataDir, ...Object.entries({ ...addresses, ...overrides }).flat()];
  // A node that cannot start must fail fast: 20 s is far more than a start takes (the old node
  // retried mkdir under /proc for ever).
  const start = (args: readonly string[]): Promise<RunResult> => run(nodeBin, [tidemarkBin, ...args], { timeoutMs: 20_000 });

  const file = `${scratch}/a-file`;
  await writeFile(file, "not a directory\n");
  const dataCases = [
    { dataDir: "/proc/tidemark-e2e-zz", reason: /--data \/proc\/tidemark-e2e-zz: cannot create \/proc\/tidemark-e2e-zz \(ENOENT/, remedy: /give --data a directory on a writable file system/ },
    { dataDir: "/proc/tidemark-e2e-zz/deeper/still", reason: /cannot create \/proc\/tidemark-e2e-zz \(ENOENT/, remedy: /writable file system/ },
    { dataDir: file, reason: new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is a file, not a directory \\(ENOTDIR\\)`), remedy: /give --data a directory \(it is created if missing\)/ },
    { dataDir: `${file}/sub`, reason: new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is a file, not a directory`), remedy: /give --data a directory/ },
  ];
  const dataResults = await Promise.all(dataCases.map((c) => start(nodeArgs(c.dataDir))));
  dataCases.forEach((c, i) => startFailure(dataResults[i]!, `--data ${c.dataDir}`, c.reason, c.remedy));

  // Each listener's port held by another process (here: this test).
  const holder = createServer();
  const heldPort = await new Promise<number>((resolve) => holder.listen(0, "127.0.0.1", () => resolve((holder.address() as { port: number }).port)));
  try {
    for (const flag of Object.keys(addresses)) {
      const result = await start(nodeArgs(`${scratch}/data-${flag.slice(2)}`, { [flag]: `127.0.0.1:${heldPort}` }));
      startFailure(result, `${flag} in use`, new RegExp(`${flag} 127\\.0\\.0\\.1:${heldPort} is already in use by another process \\(EADDRINUSE\\)`), new RegExp(`give ${flag} another HOST:PORT`));
    }
  } finally {
    await new Promise<void>((resolve) => holder.close(() => resolve()));
  }
});
