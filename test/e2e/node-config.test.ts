// Proves issue 9, item 6 against real `tidemark node` processes: two nodes run from config
// files made from contrib/tidemark.toml (as contrib/tidemark.service runs them) pair and
// replicate; flags override the file; a relative data path is the file's directory's;
// --log-level (and $TIDEMARK_LOG_LEVEL) decide which lines are logged; TIDEMARK_NODE stands for
// --node; --node and --json work before or after the subcommand. Wrong input for each (a bad
// file, key, type, value, level, URL, or an option where it does not belong) is one line on
// stderr and exit 2, and no node keeps running. The systemd unit passes `systemd-analyze verify`.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test, type TestContext } from "node:test";
import type { NodeStatus } from "../../src/mgmt/control.ts";
import { freePort, freePorts, mgmtJson, nodeBin, onCleanup, readTail, repoRoot, requireTool, run, runOk, sleep, tidemarkBin, tmpDir, waitFor, type RunResult } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";

const exampleConfig = readFileSync(path.join(repoRoot, "contrib", "tidemark.toml"), "utf8");
const unitFile = readFileSync(path.join(repoRoot, "contrib", "tidemark.service"), "utf8");
const startAttemptsMax = 3;
const stopTimeoutMs = 15_000;

/** The environment without the developer's own TIDEMARK_NODE / TIDEMARK_LOG_LEVEL, plus `extra`. */
function envWith(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, TIDEMARK_NODE: undefined, TIDEMARK_LOG_LEVEL: undefined, ...extra };
}

function tm(args: readonly string[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  return run(nodeBin, [tidemarkBin, ...args], { cwd: repoRoot, env: envWith(extraEnv), timeoutMs: 60_000 });
}

async function tmOk(args: readonly string[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  const result = await tm(args, extraEnv);
  assert.equal(result.code, 0, `tidemark ${args.join(" ")}: exit ${String(result.code)}\n${result.stderr}`);
  return result;
}

/** Exit `code`, nothing on stdout, one line on stderr starting "tidemark: " that matches `pattern`. */
function assertOneLine(result: RunResult, code: number, pattern: RegExp, what: string): void {
  const context = `${what}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.equal(result.code, code, context);
  assert.equal(result.stdout, "", context);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `one line: ${context}`);
  assert.match(lines[0]!, /^tidemark: /, context);
  assert.match(lines[0]!, pattern, context);
}

/** The example config with `settings` put in place of its values (keys it has, uncommented if needed). */
function configFrom(settings: Record<string, string | boolean>): string {
  let text = exampleConfig;
  for (const [key, value] of Object.entries(settings)) {
    const line = `${key} = ${typeof value === "boolean" ? String(value) : JSON.stringify(value)}`;
    const pattern = new RegExp(`^(# )?${key} = .*$`, "m");
    assert.match(text, pattern, `the example config has a line for ${key}`);
    text = text.replace(pattern, line);
  }
  return text;
}

interface ConfigNode {
  readonly mgmtUrl: string;
  readonly logFile: string;
  readonly pid: number;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Writes `${name}.toml` in `dir` from the example with four free ports and `settings`, and runs
 * `tidemark node --config FILE ...extraArgs` with `env` until GET /v1/health answers. Another
 * process taking a port first (EADDRINUSE) means fresh ports and another try.
 */
async function startFromConfig(dir: string, name: string, settings: Record<string, string | boolean>, extraArgs: readonly string[] = [], env: Record<string, string> = {}, format: "toml" | "yaml" = "toml"): Promise<ConfigNode> {
  for (let attempt = 1; ; attempt += 1) {
    const [mgmt, nbd, host, repl] = await freePorts(4);
    const file = path.join(dir, `${name}.${format}`);
    const toml = configFrom({ mgmt: `127.0.0.1:${mgmt}`, nbd: `127.0.0.1:${nbd}`, "host-port": `127.0.0.1:${host}`, repl: `127.0.0.1:${repl}`, ...settings });
    // The example's lines are `key = "text"` or `key = true`: as YAML, `key: "text"`.
    await writeFile(file, format === "toml" ? toml : toml.replace(/^(#\s*)?([a-z-]+) = /gm, "$1$2: "));
    const logFile = path.join(dir, `${name}.log`);
    const logFd = openSync(logFile, "a");
    const child = spawn(nodeBin, [tidemarkBin, "node", "--config", file, ...extraArgs], { cwd: repoRoot, env: envWith(env), stdio: ["ignore", logFd, logFd] });
    closeSync(logFd);
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once("exit", (code, signal) => {
        exit = { code, signal };
        resolve(exit);
      });
    });
    const pid = child.pid ?? -1;
    const cleanup = onCleanup(`stop node ${name} (pid ${pid})`, async () => {
      if (exit !== null) return;
      child.kill("SIGKILL");
      await exited;
    });
    const mgmtUrl = `http://127.0.0.1:${mgmt}`;
    try {
      await waitFor(`node ${name} to answer GET /v1/health`, async () => {
        if (exit !== null) throw new Error(`exited ${JSON.stringify(exit)}`);
        const response = await fetch(`${mgmtUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) });
        await response.arrayBuffer();
        return response.status === 200;
      }, { timeoutMs: 30_000 });
    } catch (error) {
      const log = readTail(logFile);
      await cleanup.run();
      if (attempt < startAttemptsMax && log.includes("EADDRINUSE")) continue;
      throw new Error(`${String(error)}\n--- ${logFile}\n${log}`, { cause: error });
    }
    return {
      mgmtUrl,
      logFile,
      pid,
      stop: async () => {
        if (exit !== null) return exit;
        child.kill("SIGTERM");
        const stopped = await Promise.race([exited, sleep(stopTimeoutMs).then(() => null)]);
        if (stopped === null) throw new Error(`node ${name} did not stop within ${stopTimeoutMs} ms of SIGTERM\n${readTail(logFile)}`);
        return stopped;
      },
    };
  }
}

function logLevelsIn(logFile: string): Set<number> {
  const levels = new Set<number>();
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (!line.startsWith("{")) continue;
    levels.add((JSON.parse(line) as { level: number }).level);
  }
  return levels;
}

void test("two nodes run from config files made from contrib/tidemark.toml (one as YAML) pair and replicate; flags override the file; data is relative to the file", async () => {
  const dir = await tmpDir("tidemark-config-");
  await mkdir(path.join(dir, "etc"));
  const a = await startFromConfig(path.join(dir, "etc"), "site-a", { id: "site-a", data: "../state/a" });
  // The file says clock and warn; the flags say counter and debug, and win.
  // site-b's file is YAML (the same settings, `key: value`).
  const b = await startFromConfig(dir, "site-b", { id: "site-b", data: "state-b", "write-time": "clock", "log-level": "warn" }, ["--write-time", "counter", "--log-level", "debug"], {}, "yaml");

  const statusA = await mgmtJson(a.mgmtUrl, "/v1/status") as NodeStatus;
  assert.equal(statusA.id, "site-a");
  assert.equal(statusA.dataDir, path.join(dir, "state", "a"), "a relative data path is relative to the config file's directory");
  assert.equal(statusA.writeTimePolicy, "host");
  assert.equal(statusA.listeners.mgmt, a.mgmtUrl.replace("http://", ""), "the listeners are the file's");
  const statusB = await mgmtJson(b.mgmtUrl, "/v1/status") as NodeStatus;
  assert.equal(statusB.dataDir, path.join(dir, "state-b"));
  assert.equal(statusB.writeTimePolicy, "counter", "--write-time overrides the file");

  // The CLI finds the primary through TIDEMARK_NODE, and --node before the subcommand beats it.
  await tmOk(["volume", "create", "db", "--size", "1M"], { TIDEMARK_NODE: a.mgmtUrl });
  await tmOk(["group", "create", "g-db", "--volumes", "db"], { TIDEMARK_NODE: a.mgmtUrl });
  await tmOk(["--node", a.mgmtUrl, "pair", "create", "g-db", "--to", b.mgmtUrl], { TIDEMARK_NODE: b.mgmtUrl });
  const secondary = JSON.parse((await tmOk(["pair", "status", "g-db", "--json"], { TIDEMARK_NODE: b.mgmtUrl })).stdout) as { role: string; state: string };
  assert.equal(secondary.role, "secondary");
  assert.equal(secondary.state, "replicating");

  for (const node of [a, b]) assert.deepEqual(await node.stop(), { code: 0, signal: null }, "a clean stop on SIGTERM, as systemd sends it");
  assert.deepEqual([...logLevelsIn(a.logFile)].filter((level) => level < 30), [], "site-a logs at the file's info: no debug lines");
  assert.ok(logLevelsIn(b.logFile).has(20), "site-b logs at --log-level debug, over the file's warn");
});

void test("--config wrong input: one line naming the file (and line) or the flag, exit 2, no node left running", async () => {
  const dir = await tmpDir("tidemark-config-bad-");
  const [port] = await freePorts(1);
  const base = { id: "bad", data: path.join(dir, "data"), mgmt: `127.0.0.1:${port}` };
  const cases: Array<{ name: string; text: string; args?: string[]; pattern: RegExp }> = [
    { name: "unknown-key", text: `${configFrom(base)}colour = "red"\n`, pattern: /unknown-key\.toml:\d+: unknown key 'colour'; the keys are id, data, mgmt/ },
    { name: "near-key", text: configFrom(base).replace("host-port =", "host_port ="), pattern: /near-key\.toml:\d+: unknown key 'host_port' \(did you mean 'host-port'\?\)/ },
    { name: "type", text: configFrom(base).replace(/^nbd = .*$/m, "nbd = 10809"), pattern: /type\.toml:\d+: nbd must be a string in quotes/ },
    { name: "bool", text: `${configFrom(base)}insecure-mgmt = "yes"\n`, pattern: /bool\.toml:\d+: insecure-mgmt must be true or false/ },
    { name: "value", text: configFrom({ ...base, "host-port": "nowhere" }), pattern: /value\.toml:\d+: host-port "nowhere" is not HOST:PORT/ },
    { name: "policy", text: configFrom({ ...base, "write-time": "sundial" }), pattern: /policy\.toml:\d+: write-time "sundial" is not one of host, clock, counter/ },
    { name: "level", text: configFrom({ ...base, "log-level": "loud" }), pattern: /level\.toml:\d+: log-level "loud" is not a log level; use one of trace, debug, info, warn, error, fatal/ },
    { name: "id", text: configFrom({ ...base, id: "no/slash" }), pattern: /id\.toml:\d+: id "no\/slash" is not valid/ },
    { name: "exposed", text: configFrom({ ...base, mgmt: "0.0.0.0:7480" }), pattern: /exposed\.toml:\d+: mgmt 0\.0\.0\.0:7480 would let anyone .* insecure-mgmt = true/ },
    { name: "table", text: `[node]\n${configFrom(base)}`, pattern: /table\.toml:1: tables \(\[node\]\) are not used/ },
    { name: "twice", text: `${configFrom(base)}id = "again"\n`, pattern: /twice\.toml:\d+: 'id' is set twice/ },
    { name: "no-data", text: configFrom(base).replace(/^data = .*$/m, ""), pattern: /`tidemark node` needs --data \(e\.g\. --data \/var\/lib\/tidemark\), or data = "\/var\/lib\/tidemark" in the --config file/ },
    { name: "empty-id", text: configFrom({ ...base, id: "" }), pattern: /empty-id\.toml:\d+: id is empty/ },
    // A flag over a file's wrong value is checked as the flag.
    { name: "flag-over", text: configFrom(base), args: ["--nbd", "nowhere"], pattern: /^tidemark: --nbd "nowhere" is not HOST:PORT/ },
  ];
  await Promise.all(cases.map(({ name, text }) => writeFile(path.join(dir, `${name}.toml`), text)));
  await writeFile(path.join(dir, "node.yaml"), "id: a\ncolour: red\n");
  const runs = await Promise.all([
    ...cases.map(({ name, args }) => tm(["node", "--config", path.join(dir, `${name}.toml`), ...(args ?? [])])),
    tm(["node", "--config", path.join(dir, "missing.toml")]),
    tm(["node", "--config", path.join(dir, "node.yaml")]),
    tm(["node", "--config", dir]),
    tm(["node", "--config"]),
  ]);
  const patterns = [
    ...cases.map((c) => c.pattern),
    /--config .*missing\.toml: cannot read it \(no such file, ENOENT\); give the path of the node's config file/,
    /node\.yaml:2: unknown key 'colour'; the keys are id, data/,
    /cannot read it \(it is a directory, EISDIR\)/,
    /option '--config <FILE>' argument missing/,
  ];
  runs.forEach((result, index) => assertOneLine(result, 2, patterns[index]!, cases[index]?.name ?? `case ${index}`));
  // Nothing listens: no node started from any of them.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/v1/health`, { signal: AbortSignal.timeout(1_000) }));
});

void test("--log-level takes trace..fatal (over $TIDEMARK_LOG_LEVEL); wrong levels are one line, exit 2", async () => {
  const dir = await tmpDir("tidemark-log-level-");
  const quiet = await startFromConfig(dir, "quiet", { id: "quiet", data: "data", "log-level": "debug" }, ["--log-level", "WARN"], { TIDEMARK_LOG_LEVEL: "trace" });
  assert.deepEqual(await quiet.stop(), { code: 0, signal: null });
  assert.deepEqual([...logLevelsIn(quiet.logFile)].filter((level) => level < 40), [], "--log-level warn: not one trace, debug or info line (not even 'node started')");
  const envLevel = await startFromConfig(dir, "env", { id: "env", data: "data-env", "log-level": "error" }, [], { TIDEMARK_LOG_LEVEL: "debug" });
  assert.deepEqual(await envLevel.stop(), { code: 0, signal: null });
  assert.ok(logLevelsIn(envLevel.logFile).has(20), "$TIDEMARK_LOG_LEVEL=debug over the file's error");

  const data = path.join(dir, "unused");
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [["--log-level", "loud"], {}, /^tidemark: --log-level "loud" is not a log level; use one of trace, debug, info, warn, error, fatal$/],
    [["--log-level", "silent"], {}, /--log-level "silent" is not a log level/],
    [["--log-level"], {}, /option '--log-level <LEVEL>' argument missing/],
    [[], { TIDEMARK_LOG_LEVEL: "verbose" }, /^tidemark: TIDEMARK_LOG_LEVEL "verbose" is not a log level; use one of trace, debug/],
  ];
  const runs = await Promise.all(cases.map(([args, env]) => tm(["node", "--id", "x", "--data", data, ...args], env)));
  runs.forEach((result, index) => assertOneLine(result, 2, cases[index]![2], cases[index]![0].join(" ")));
});

void test("TIDEMARK_NODE stands for --node; --node and --json go before or after the subcommand; wrong ones are one line", async () => {
  const node = await startNode({ id: "global-flags" });
  const url = node.mgmtUrl;
  await tmOk(["volume", "create", "v1", "--size", "1M", "--node", url]);
  const expected = (await tmOk(["volume", "list", "--json", "--node", url])).stdout;
  assert.deepEqual((JSON.parse(expected) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name), ["v1"]);
  const spellings: Array<[string[], Record<string, string>]> = [
    [["volume", "list", "--json"], { TIDEMARK_NODE: url }],
    [["--json", "volume", "list"], { TIDEMARK_NODE: url.replace("http://", "") }],
    [["--node", url, "--json", "volume", "list"], {}],
    [["--node", url, "volume", "list", "--json"], {}],
    [["volume", "--json", "list", "--node", url], {}],
    [["volume", "--node", url, "list", "--json"], {}],
    [["--json", "volume", "list", "--node", url], { TIDEMARK_NODE: "http://127.0.0.1:1" }],
  ];
  for (const [args, env] of spellings) {
    const result = await tmOk(args, env);
    assert.equal(result.stdout, expected, `tidemark ${args.join(" ")} ${JSON.stringify(env)} prints what \`volume list --json --node URL\` does`);
  }
  assert.deepEqual(JSON.parse((await tmOk(["--node", url, "pair", "--json", "status"])).stdout), { pairs: [] });

  const closed = await freePort();
  const cases: Array<[string[], Record<string, string>, number, RegExp]> = [
    [["status"], { TIDEMARK_NODE: "ftp://x" }, 2, /^tidemark: TIDEMARK_NODE "ftp:\/\/x" must use http:\/\/ or https:\/\//],
    [["status"], { TIDEMARK_NODE: "http://[bad" }, 2, /^tidemark: TIDEMARK_NODE "http:\/\/\[bad" is not a URL/],
    [["status"], { TIDEMARK_NODE: `http://127.0.0.1:${closed}` }, 1, new RegExp(`cannot reach node at http://127\\.0\\.0\\.1:${closed}.*use --node URL`)],
    [["--node", "ftp://x", "volume", "list"], {}, 2, /^tidemark: --node "ftp:\/\/x" must use http/],
    [["volume", "list", "--node"], {}, 2, /option '--node <URL>' argument missing/],
    [["--node", url], {}, 2, /`tidemark` needs a command/],
    [["--node", url, "node", "--id", "x", "--data", "/tmp/unused"], {}, 2, /^tidemark: --node is not an option of `tidemark node` \(it listens on --mgmt HOST:PORT\); see `tidemark node --help`/],
    [["--json", "node", "--id", "x", "--data", "/tmp/unused"], {}, 2, /^tidemark: --json is not an option of `tidemark node`/],
    [["--node", url, "demo"], {}, 2, /^tidemark: --node is not an option of `tidemark demo`/],
  ];
  const runs = await Promise.all(cases.map(([args, env]) => tm(args, env)));
  runs.forEach((result, index) => assertOneLine(result, cases[index]![2], cases[index]![3], `${cases[index]![0].join(" ")} ${JSON.stringify(cases[index]![1])}`));
});

void test("contrib/tidemark.service passes systemd-analyze verify and runs what this test runs: node --config /etc/tidemark/node.toml", async (t: TestContext) => {
  if (!requireTool(t, "systemd-analyze")) return;
  const execStart = /^ExecStart=(\S+) (.*)$/m.exec(unitFile);
  assert.ok(execStart !== null, "the unit has an ExecStart");
  assert.equal(execStart[1], "/usr/local/bin/tidemark", "where `npm install -g` puts the command");
  assert.equal(execStart[2], "node --config /etc/tidemark/node.toml");
  assert.match(unitFile, /^RestartPreventExitStatus=2$/m, "exit 2 (a wrong command line or config) is not restarted");
  assert.match(unitFile, /^KillSignal=SIGTERM$/m);
  const dir = await tmpDir("tidemark-unit-");
  const copy = path.join(dir, "tidemark.service");
  // verify checks that the command exists: point it at the checkout's.
  await writeFile(copy, unitFile.replace(`ExecStart=${execStart[1]}`, `ExecStart=${tidemarkBin}`));
  const verified = await runOk("systemd-analyze", ["verify", copy]);
  assert.equal(`${verified.stdout}${verified.stderr}`.trim(), "", "no warning about the unit");
});
