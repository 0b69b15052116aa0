// Proves the npm package works outside the checkout (issue 9, item 7): `npm pack` in the
// checkout (its prepack compiles src/ to dist/), `npm install <tarball>` into a fresh project in a
// temporary directory (from the npm cache when it can, else the registry), then the three uses a
// user has: `npx tidemark --version`, `npx tidemark node ...` (a node that answers, serves a volume
// the installed CLI creates, and stops cleanly on SIGTERM) and `import { HostClient } from
// "tidemark"` in an ES module, writing and reading that volume over the host protocol. Also: the
// tarball holds no tests, sources or CI files, its dependencies do not carry the `node` binary, and
// with an old Node (the machine's Node 20) both the installed bin and the checkout's say in one
// line which Node to use (issue 9, item 8), not a stack trace. The installed node serves the
// dashboard (its HTML file ships in dist/).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test, type TestContext } from "node:test";
import { freePorts, onCleanup, readTail, repoRoot, requireThat, requireTool, run, runOk, sleep, tidemarkBin, tmpDir, waitFor, whichTool } from "./harness.ts";

/** npm pack (with the build) and npm install can be slow on a loaded machine or a cold cache. */
const npmTimeoutMs = 300_000;
const nodeStopTimeoutMs = 15_000;

interface PackageJson {
  version: string;
  engines?: { node?: string };
  dependencies?: Record<string, string>;
}

const checkoutPackage = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")) as PackageJson;

/**
 * The environment a user has: Node 26 (this test's runtime) first on PATH, and no directory of
 * the checkout's node_modules, so `npx tidemark` can only find the installed package.
 */
function userEnv(): NodeJS.ProcessEnv {
  const checkoutBins = path.join(repoRoot, "node_modules");
  const rest = (process.env.PATH ?? "").split(path.delimiter).filter((dir) => dir !== "" && !dir.startsWith(checkoutBins));
  return { ...process.env, PATH: [path.dirname(process.execPath), ...rest].join(path.delimiter), TIDEMARK_NODE: undefined };
}

interface Installed {
  readonly tarball: string;
  readonly project: string;
  readonly packageDir: string;
}

let installed: Promise<Installed> | undefined;

/** Packs the checkout and installs the tarball into a new project (once per file). */
function packAndInstall(): Promise<Installed> {
  installed ??= (async () => {
    const work = await tmpDir("tidemark-package-");
    const packDir = path.join(work, "pack");
    const project = path.join(work, "project");
    await runOk("mkdir", ["-p", packDir, project]);
    const env = userEnv();
    await runOk("npm", ["pack", "--pack-destination", packDir, "--no-fund"], { cwd: repoRoot, env, timeoutMs: npmTimeoutMs });
    const tarballs = readdirSync(packDir).filter((name) => name.endsWith(".tgz"));
    assert.deepEqual(tarballs, [`tidemark-${checkoutPackage.version}.tgz`], "npm pack made one tarball");
    const tarball = path.join(packDir, tarballs[0]!);
    writeFileSync(path.join(project, "package.json"), `${JSON.stringify({ name: "uses-tidemark", version: "1.0.0", private: true, type: "module" }, null, 2)}\n`);
    await runOk("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", tarball], { cwd: project, env, timeoutMs: npmTimeoutMs });
    return { tarball, project, packageDir: path.join(project, "node_modules", "tidemark") };
  })();
  return installed;
}

interface Spawned {
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitedYet(): boolean;
}

/**
 * `npx ...` in its own process group: npx runs the bin under a shell, and the node under that;
 * a signal to the group reaches the node itself. Cleanup kills the group by its id.
 */
function spawnGroup(cmd: string, args: readonly string[], cwd: string, logFile: string): Spawned {
  const logFd = openSync(logFile, "a");
  const child = spawn(cmd, args, { cwd, env: userEnv(), stdio: ["ignore", logFd, logFd], detached: true });
  closeSync(logFd);
  const pid = child.pid ?? -1;
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  onCleanup(`kill process group ${pid} (${cmd} ${args.join(" ")})`, () => {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  });
  return { pid, exited, exitedYet: () => done };
}

void test("npm pack gives a package that installs into another project: npx tidemark --version, npx tidemark node, import { HostClient } from \"tidemark\"", async (t: TestContext) => {
  if (!requireTool(t, "npm", "tar")) return;
  const { tarball, project, packageDir } = await packAndInstall();

  // What is in the tarball: the bin, the compiled JavaScript with declarations, contrib/ and docs/;
  // no tests, TypeScript sources, CI or build files.
  const files = (await runOk("tar", ["-tzf", tarball])).stdout.split("\n").filter((line) => line !== "").map((line) => line.replace(/^package\//, ""));
  for (const wanted of ["package.json", "README.md", "bin/tidemark.js", "dist/cli/main.js", "dist/index.js", "dist/index.d.ts", "dist/client/host-client.js", "dist/mgmt/dashboard.html", "docs/dashboard.png", "contrib/tidemark.service", "contrib/tidemark.toml"]) {
    assert.ok(files.includes(wanted), `the tarball holds ${wanted}`);
  }
  const strays = files.filter((file) => /^(test|src|bench|scripts|\.ci)\//.test(file) || /^tsconfig|^eslint|\.test\.[jt]s$/.test(file) || (file.endsWith(".ts") && !file.endsWith(".d.ts")));
  assert.deepEqual(strays, [], "no tests, sources, CI or build files in the package");
  const packed = JSON.parse(readFileSync(path.join(packageDir, "package.json"), "utf8")) as PackageJson;
  assert.equal(packed.dependencies?.node, undefined, "the node binary is a devDependency: an installed tidemark does not put a `node` into the user's node_modules/.bin");
  assert.match(packed.engines?.node ?? "", /^>=\d+\.\d+/, "engines says which Node it runs on");
  assert.deepEqual(readdirSync(path.join(project, "node_modules", ".bin")).filter((name) => name === "node"), [], "no node binary installed with it");

  // 1. npx tidemark --version
  const version = await runOk("npx", ["--no-install", "tidemark", "--version"], { cwd: project, env: userEnv() });
  assert.equal(version.stdout.trim(), checkoutPackage.version);

  // 2. npx tidemark node ...: a node from the installed package, driven by the installed CLI.
  const [mgmtPort, nbdPort, hostPort, replPort] = await freePorts(4);
  const mgmtUrl = `http://127.0.0.1:${mgmtPort}`;
  const logFile = path.join(project, "node.log");
  const node = spawnGroup("npx", ["--no-install", "tidemark", "node", "--id", "pkg-node", "--data", path.join(project, "data"),
    "--mgmt", `127.0.0.1:${mgmtPort}`, "--nbd", `127.0.0.1:${nbdPort}`, "--host-port", `127.0.0.1:${hostPort}`, "--repl", `127.0.0.1:${replPort}`], project, logFile);
  await waitFor("the installed node to answer GET /v1/health", async () => {
    if (node.exitedYet()) throw new Error(`npx tidemark node exited\n${readTail(logFile)}`);
    const response = await fetch(`${mgmtUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) });
    return response.status === 200 ? (await response.json()) : undefined;
  }, { timeoutMs: 60_000 });
  await runOk("npx", ["--no-install", "tidemark", "volume", "create", "accounts", "--size", "1M", "--node", mgmtUrl], { cwd: project, env: userEnv() });
  // The dashboard, read beside the installed module (dist/mgmt/dashboard.html).
  const dashboard = await fetch(`${mgmtUrl}/`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(dashboard.status, 200, "the installed node serves the dashboard");
  assert.equal(dashboard.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(dashboard.headers.get("content-security-policy") ?? "", /script-src 'sha256-/);
  assert.match(await dashboard.text(), /<title>tidemark<\/title>/);

  // 3. import { HostClient } from "tidemark" in the user's ES module, against that node.
  const script = path.join(project, "use-client.mjs");
  writeFileSync(script, [
    "import { HostClient, HostProtocolError } from \"tidemark\";",
    "const client = await HostClient.connect({ host: \"127.0.0.1\", port: Number(process.argv[2]) });",
    "const volume = await client.open(\"accounts\");",
    "await volume.write(4096, new TextEncoder().encode(\"debit 100\"), { writeTimeUs: 1_700_000_000_000_001, fua: true });",
    "const back = (await volume.read(4096, 9)).toString();",
    "const missing = await client.open(\"missing\").then(() => \"opened\", (error) => error instanceof HostProtocolError ? error.code : String(error));",
    "await client.close();",
    "console.log(JSON.stringify({ size: volume.sizeBytes, back, missing }));",
    "",
  ].join("\n"));
  const used = await runOk(process.execPath, [script, String(hostPort)], { cwd: project, env: userEnv() });
  assert.deepEqual(JSON.parse(used.stdout) as unknown, { size: 1024 * 1024, back: "debit 100", missing: "ENOENT" });

  // The node stops cleanly on SIGTERM (to npx's process group, as a terminal's Ctrl-C would).
  process.kill(-node.pid, "SIGTERM");
  const stopped = await Promise.race([node.exited, sleep(nodeStopTimeoutMs).then(() => null)]);
  assert.ok(stopped !== null, `npx tidemark node stopped within ${nodeStopTimeoutMs} ms of SIGTERM\n${readTail(logFile)}`);
  assert.match(readFileSync(logFile, "utf8"), /"event":"signal".*SIGTERM/, "the node logged the clean stop");
  await assert.rejects(fetch(`${mgmtUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) }), "nothing answers after the stop");
});

/** Node binaries on this machine other than the project's, older than what tidemark needs. */
function oldNodes(): string[] {
  const candidates = new Set<string>(["/usr/bin/node", "/usr/local/bin/node"]);
  const onPath = whichTool("node");
  if (onPath !== null) candidates.add(onPath);
  const old: string[] = [];
  for (const candidate of candidates) {
    if (candidate.startsWith(path.join(repoRoot, "node_modules"))) continue;
    const probe = spawnSync(candidate, ["-p", "process.versions.node"], { encoding: "utf8" });
    const [major = 0, minor = 0] = (probe.stdout ?? "").trim().split(".").map(Number);
    if (probe.status === 0 && (major < 22 || (major === 22 && minor < 12))) old.push(candidate);
  }
  return old;
}

function assertOneLine(result: { code: number | null; stdout: string; stderr: string }, pattern: RegExp, what: string): void {
  const context = `${what}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.equal(result.code, 1, context);
  assert.equal(result.stdout, "", context);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `one line, no stack trace: ${context}`);
  assert.match(lines[0]!, pattern, context);
}

void test("with the machine's old Node (20), the checkout's and the installed package's bin say in one line which Node to use", async (t: TestContext) => {
  const found = oldNodes();
  if (!requireThat(t, found.length > 0, "no Node older than 22.12 on this machine (Debian's nodejs, /usr/bin/node, is one)")) return;
  if (!requireTool(t, "npm", "tar")) return;
  const { packageDir } = await packAndInstall();
  for (const oldNode of found) {
    const checkout = await run(oldNode, [tidemarkBin, "--version"], { cwd: repoRoot });
    assertOneLine(checkout, /^tidemark: this checkout runs on the Node\.js the project brings \(26 or newer\), not on this Node \d+\.\d+\.\d+: after `npm ci`, run `npx tidemark \.\.\.`/, `${oldNode} bin/tidemark.js --version`);
    const noArgs = await run(oldNode, [tidemarkBin], { cwd: repoRoot });
    assertOneLine(noArgs, /^tidemark: this checkout runs on the Node\.js the project brings/, `${oldNode} bin/tidemark.js`);
    const minimum = (checkoutPackage.engines?.node ?? "").replace(/^>=/, "");
    const fromPackage = await run(oldNode, [path.join(packageDir, "bin", "tidemark.js"), "node", "--id", "x", "--data", "/nonexistent"], { cwd: packageDir });
    assertOneLine(fromPackage, new RegExp(`^tidemark: needs Node\\.js ${minimum.replace(/\./g, "\\.")} or newer, and this is Node \\d+\\.\\d+\\.\\d+: install a current Node\\.js`), `${oldNode} <installed>/bin/tidemark.js node`);
  }
});
