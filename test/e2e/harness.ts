// End-to-end harness: runs real tidemark nodes and real outside tools (nbdfuse, mount, fio, ...)
// as processes on 127.0.0.1, and undoes everything it started, newest first, in an after() hook
// that runs even when a test fails. Also used by bench/ (which calls cleanupAll() itself).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";

export const repoRoot: string = fileURLToPath(new URL("../../", import.meta.url));
/** Node 26 from npm (the project's runtime), not whatever `node` is on PATH. */
export const nodeBin: string = path.join(repoRoot, "node_modules", ".bin", "node");
export const tidemarkBin: string = path.join(repoRoot, "bin", "tidemark.js");

const healthTimeoutMsDefault = 20_000;
const healthPollMs = 100;
const stopTimeoutMs = 15_000;
const runTimeoutMsDefault = 120_000;
const cliTimeoutMsDefault = 60_000;
const nbdfuseReadyTimeoutMs = 10_000;
const logTailLinesDefault = 40;
const outputBytesMax = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Cleanup registry

type CleanupFn = () => Promise<void> | void;

export interface CleanupHandle {
  /** Runs the cleanup now (once) and removes it from the registry. */
  run(): Promise<void>;
  /** Removes it from the registry without running it. */
  release(): void;
}

interface CleanupEntry {
  readonly label: string;
  readonly fn: CleanupFn;
  done: boolean;
}

const cleanupStack: CleanupEntry[] = [];
const liveChildren = new Set<ChildProcess>();

/** Registers `fn` to run at the end of the test file (or on cleanupAll()), newest first. */
export function onCleanup(label: string, fn: CleanupFn): CleanupHandle {
  const entry: CleanupEntry = { label, fn, done: false };
  cleanupStack.push(entry);
  const remove = (): void => {
    const index = cleanupStack.indexOf(entry);
    if (index >= 0) cleanupStack.splice(index, 1);
  };
  return {
    run: async () => {
      remove();
      if (entry.done) return;
      entry.done = true;
      await entry.fn();
    },
    release: () => {
      remove();
      entry.done = true;
    },
  };
}

/** Runs every registered cleanup, newest first; throws an AggregateError if any failed. */
export async function cleanupAll(): Promise<void> {
  const errors: unknown[] = [];
  for (let entry = cleanupStack.pop(); entry !== undefined; entry = cleanupStack.pop()) {
    if (entry.done) continue;
    entry.done = true;
    try {
      await entry.fn();
    } catch (error) {
      errors.push(new Error(`cleanup "${entry.label}" failed: ${String(error)}`, { cause: error }));
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, `${errors.length} cleanup step(s) failed`);
}

function underTestRunner(): boolean {
  return process.env.NODE_TEST_CONTEXT !== undefined ||
    process.execArgv.some((arg) => arg === "--test" || arg.startsWith("--test=")) ||
    /\.test\.[cm]?[jt]s$/.test(process.argv[1] ?? "");
}

// Under `node --test` the hook belongs to the file's root test: it runs after all of the file's
// tests, failed or not. Scripts (bench/) call cleanupAll() themselves.
if (underTestRunner()) after(cleanupAll);

const keepTmp = process.env.TIDEMARK_E2E_KEEP === "1";

/** A fresh directory under os.tmpdir(), removed at cleanup (kept if TIDEMARK_E2E_KEEP=1). */
export async function tmpDir(prefix = "tidemark-e2e-"): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  onCleanup(`rm -rf ${dir}`, async () => {
    if (keepTmp) {
      process.stderr.write(`# kept ${dir}\n`);
      return;
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Ports

async function listenEphemeral(): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return server;
}

function portOf(server: net.Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("unexpected server address");
  return address.port;
}

async function closeServer(server: net.Server): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/** `count` distinct free ports (all held open together while picking, so none repeats). */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) servers.push(await listenEphemeral());
    return servers.map(portOf);
  } finally {
    await Promise.all(servers.map(closeServer));
  }
}

// ---------------------------------------------------------------------------------------------
// Running commands

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export interface RunOptions {
  readonly timeoutMs?: number;
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string | Buffer;
}

/** Runs a command to completion (killed with SIGKILL after timeoutMs), capturing its output. */
export async function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? runTimeoutMsDefault;
  const child = spawn(cmd, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  liveChildren.add(child);
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  let outputBytes = 0;
  const collect = (into: Buffer[]) => (chunk: Buffer): void => {
    outputBytes += chunk.length;
    if (outputBytes <= outputBytesMax) into.push(chunk);
  };
  child.stdout?.on("data", collect(stdout));
  child.stderr?.on("data", collect(stderr));
  if (options.input !== undefined) child.stdin?.end(options.input);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (c: number | null, s: NodeJS.Signals | null) => resolve([c, s]));
    });
    return {
      code,
      signal,
      stdout: Buffer.concat(stdout).toString("utf8"),
      stderr: Buffer.concat(stderr).toString("utf8"),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    liveChildren.delete(child);
  }
}

function describeRun(cmd: string, args: readonly string[], result: RunResult): string {
  const status = result.timedOut ? "timed out" : result.signal !== null ? `killed by ${result.signal}` : `exit ${String(result.code)}`;
  return `${cmd} ${args.join(" ")}: ${status}\n--- stdout\n${tail(result.stdout, 30)}\n--- stderr\n${tail(result.stderr, 30)}`;
}

/** Like run(), but throws (with the command's output) unless it exits 0. */
export async function runOk(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(cmd, args, options);
  if (result.code !== 0) throw new Error(describeRun(cmd, args, result));
  return result;
}

export interface CliOptions {
  /** Management URL, passed as --node. */
  readonly node?: string;
  readonly timeoutMs?: number;
}

/** Runs `tidemark ARGS [--node URL]` from the checkout, as a user would. */
export async function cli(args: readonly string[], options: CliOptions = {}): Promise<RunResult> {
  const full = [tidemarkBin, ...args, ...(options.node === undefined ? [] : ["--node", options.node])];
  return run(nodeBin, full, { timeoutMs: options.timeoutMs ?? cliTimeoutMsDefault, cwd: repoRoot });
}

/** Like cli(), but throws with the command's output unless it exits 0. */
export async function cliOk(args: readonly string[], options: CliOptions = {}): Promise<RunResult> {
  const result = await cli(args, options);
  if (result.code !== 0) throw new Error(describeRun("tidemark", args, result));
  return result;
}

function tail(text: string, lines: number): string {
  const all = text.trimEnd().split("\n");
  return all.slice(-lines).join("\n");
}

// ---------------------------------------------------------------------------------------------
// Skipping (never in CI)

const searchPath = (): string[] =>
  [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/sbin", "/usr/local/sbin"].filter((d) => d !== "");

/** Absolute path of an executable on PATH (or in sbin), or null. */
export function whichTool(name: string): string | null {
  for (const dir of searchPath()) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

export const inCi: boolean = process.env.CI === "true";

/**
 * Returns true when `ok`; otherwise skips the test with `why` and returns false — except with
 * CI=true, where end-to-end tests must not skip: it throws so the test fails.
 * Use as: `if (!requireThat(t, cond, "why")) return;`
 */
export function requireThat(t: TestContext, ok: boolean, why: string): boolean {
  if (ok) return true;
  if (inCi) throw new Error(`${why} (CI=true: end-to-end tests do not skip; run scripts/ensure-test-deps.sh)`);
  t.skip(why);
  return false;
}

/** requireThat() for executables: `if (!requireTool(t, "fio", "nbdfuse")) return;` */
export function requireTool(t: TestContext, ...names: string[]): boolean {
  const missing = names.filter((name) => whichTool(name) === null);
  return requireThat(t, missing.length === 0, `missing tool(s): ${missing.join(", ")}`);
}

/** requireThat() for root (mount, losetup). */
export function requireRoot(t: TestContext): boolean {
  return requireThat(t, process.getuid?.() === 0, "needs root (mount, loop devices)");
}

// ---------------------------------------------------------------------------------------------
// Long-running processes

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitInfo>;
  exitInfo(): ExitInfo | null;
}

/** Spawns a long-running process with stdout+stderr appended to logFile; stopped at cleanup (SIGTERM, then SIGKILL). */
export function spawnDaemon(cmd: string, args: readonly string[], logFile: string, cwd?: string): Daemon {
  const logFd = fs.openSync(logFile, "a");
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { cwd, stdio: ["ignore", logFd, logFd], env: process.env });
  } finally {
    fs.closeSync(logFd);
  }
  liveChildren.add(child);
  let info: ExitInfo | null = null;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code: number | null, signal: NodeJS.Signals | null) => {
      info = { code, signal };
      liveChildren.delete(child);
      resolve(info);
    });
    child.once("error", (error) => {
      fs.appendFileSync(logFile, `spawn error: ${String(error)}\n`);
      info = { code: 127, signal: null };
      liveChildren.delete(child);
      resolve(info);
    });
  });
  const daemon: Daemon = { child, pid: child.pid ?? -1, exited, exitInfo: () => info };
  onCleanup(`stop ${cmd} (pid ${daemon.pid})`, async () => {
    await stopDaemon(daemon);
  });
  return daemon;
}

async function waitExit(daemon: Daemon, timeoutMs: number): Promise<ExitInfo | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  try {
    return await Promise.race([daemon.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Sends `signal`, waits up to timeoutMs, then SIGKILLs. Returns how it ended and whether it obeyed. */
export async function stopDaemon(daemon: Daemon, signal: NodeJS.Signals = "SIGTERM", timeoutMs = stopTimeoutMs): Promise<{ exit: ExitInfo; obeyed: boolean }> {
  const already = daemon.exitInfo();
  if (already !== null) return { exit: already, obeyed: true };
  daemon.child.kill(signal);
  const exit = await waitExit(daemon, timeoutMs);
  if (exit !== null) return { exit, obeyed: true };
  daemon.child.kill("SIGKILL");
  return { exit: await daemon.exited, obeyed: false };
}

export function readTail(file: string, lines = logTailLinesDefault): string {
  try {
    return tail(fs.readFileSync(file, "utf8"), lines);
  } catch {
    return "(no log)";
  }
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` until it returns a value other than undefined/false, or throws after timeoutMs
 * with `what` and the last value or error seen. `await waitFor("pair replicating", async () => ...)`.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${options.timeoutMs ?? 30_000} ms waiting for ${what} (last: ${String(last)})`);
    await sleep(options.intervalMs ?? 100);
  }
}

/** GET (or POST with a JSON body) on a node's management API; throws unless 2xx. */
export async function mgmtJson(mgmtUrl: string, apiPath: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${mgmtUrl}${apiPath}`, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${body === undefined ? "GET" : "POST"} ${apiPath}: ${response.status} ${text}`);
  return text === "" ? null : JSON.parse(text) as unknown;
}

// ---------------------------------------------------------------------------------------------
// tidemark nodes

export type WriteTimePolicy = "host" | "clock" | "counter";

export interface NodeOptions {
  readonly id: string;
  /** Defaults to a fresh tmp dir. */
  readonly dataDir?: string;
  readonly writeTime?: WriteTimePolicy;
  /** More `tidemark node` arguments. */
  readonly extraArgs?: readonly string[];
  /** Arguments for the Node.js runtime itself, before the script (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
  /** mgmt, nbd, host and repl ports (default: four free ones). */
  readonly ports?: readonly [number, number, number, number];
  readonly healthTimeoutMs?: number;
  /** The `tidemark` script to run (default: this checkout's bin/tidemark.js; the bench's baseline runs another checkout's). */
  readonly tidemarkBin?: string;
}

export interface RunningNode {
  readonly id: string;
  readonly dataDir: string;
  readonly mgmtUrl: string;
  readonly mgmtPort: number;
  readonly nbdPort: number;
  readonly hostPort: number;
  readonly replPort: number;
  /** stdout+stderr (JSON log lines) of every run of this node, appended. */
  readonly logFile: string;
  /** Pid of the current process (changes on restart). */
  readonly pid: number;
  /** nbd://127.0.0.1:PORT/EXPORT */
  nbdUri(exportName: string): string;
  /** SIGTERM (or another stopping signal) and wait; throws (with the log tail) unless it exits 0 within the stop timeout. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** Starts it again with the same id, data dir and ports (stopping it first if running). */
  restart(): Promise<void>;
  running(): boolean;
  logTail(lines?: number): string;
}

class NodeProcess implements RunningNode {
  readonly id: string;
  readonly dataDir: string;
  readonly mgmtUrl: string;
  readonly mgmtPort: number;
  readonly nbdPort: number;
  readonly hostPort: number;
  readonly replPort: number;
  readonly logFile: string;
  readonly #args: readonly string[];
  readonly #healthTimeoutMs: number;
  #daemon: Daemon | null = null;

  constructor(options: NodeOptions, dataDir: string, logFile: string, ports: readonly number[]) {
    const [mgmtPort, nbdPort, hostPort, replPort] = ports;
    if (mgmtPort === undefined || nbdPort === undefined || hostPort === undefined || replPort === undefined) {
      throw new Error("need four ports");
    }
    this.id = options.id;
    this.dataDir = dataDir;
    this.logFile = logFile;
    this.mgmtPort = mgmtPort;
    this.nbdPort = nbdPort;
    this.hostPort = hostPort;
    this.replPort = replPort;
    this.mgmtUrl = `http://127.0.0.1:${mgmtPort}`;
    this.#healthTimeoutMs = options.healthTimeoutMs ?? healthTimeoutMsDefault;
    this.#args = [
      ...(options.nodeArgs ?? []),
      options.tidemarkBin ?? tidemarkBin, "node",
      "--id", options.id,
      "--data", dataDir,
      "--mgmt", `127.0.0.1:${mgmtPort}`,
      "--nbd", `127.0.0.1:${nbdPort}`,
      "--host-port", `127.0.0.1:${hostPort}`,
      "--repl", `127.0.0.1:${replPort}`,
      ...(options.writeTime === undefined ? [] : ["--write-time", options.writeTime]),
      ...(options.extraArgs ?? []),
    ];
  }

  get pid(): number {
    return this.#daemon?.pid ?? -1;
  }

  nbdUri(exportName: string): string {
    return `nbd://127.0.0.1:${this.nbdPort}/${exportName}`;
  }

  running(): boolean {
    return this.#daemon !== null && this.#daemon.exitInfo() === null;
  }

  logTail(lines = logTailLinesDefault): string {
    return readTail(this.logFile, lines);
  }

  async start(): Promise<void> {
    if (this.running()) throw new Error(`node ${this.id} is already running`);
    fs.appendFileSync(this.logFile, `# harness: starting ${nodeBin} ${this.#args.join(" ")}\n`);
    const daemon = spawnDaemon(nodeBin, this.#args, this.logFile, repoRoot);
    this.#daemon = daemon;
    await this.#waitHealthy(daemon);
  }

  async #waitHealthy(daemon: Daemon): Promise<void> {
    const deadline = Date.now() + this.#healthTimeoutMs;
    let lastProblem = "no answer yet";
    while (Date.now() < deadline) {
      const exit = daemon.exitInfo();
      if (exit !== null) {
        throw new Error(`node ${this.id} exited (code ${String(exit.code)}, signal ${String(exit.signal)}) before it was healthy\n--- log tail (${this.logFile})\n${this.logTail()}`);
      }
      try {
        const response = await fetch(`${this.mgmtUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) });
        await response.arrayBuffer();
        if (response.status === 200) return;
        lastProblem = `GET /v1/health answered ${response.status}`;
      } catch (error) {
        lastProblem = String(error);
      }
      await sleep(healthPollMs);
    }
    throw new Error(`node ${this.id} not healthy within ${this.#healthTimeoutMs} ms (${lastProblem})\n--- log tail (${this.logFile})\n${this.logTail()}`);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const daemon = this.#daemon;
    if (daemon === null) return;
    const { exit, obeyed } = await stopDaemon(daemon, signal);
    if (!obeyed) throw new Error(`node ${this.id} ignored ${signal} for ${stopTimeoutMs} ms and was killed\n--- log tail\n${this.logTail()}`);
    if (exit.code !== 0) {
      throw new Error(`node ${this.id} stopped with code ${String(exit.code)}, signal ${String(exit.signal)} after ${signal} (expected exit 0)\n--- log tail\n${this.logTail()}`);
    }
  }

  async kill(): Promise<void> {
    const daemon = this.#daemon;
    if (daemon === null) return;
    await stopDaemon(daemon, "SIGKILL");
  }

  async restart(): Promise<void> {
    if (this.running()) await this.stop();
    await this.start();
  }

  /** For cleanup: stop without judging how it went. */
  async reap(): Promise<void> {
    const daemon = this.#daemon;
    if (daemon === null) return;
    await stopDaemon(daemon, "SIGTERM");
  }
}

/** Starts `tidemark node` on four free loopback ports and waits for GET /v1/health 200. */
export async function startNode(options: NodeOptions): Promise<RunningNode> {
  const workDir = await tmpDir(`tidemark-${options.id}-`);
  const dataDir = options.dataDir ?? path.join(workDir, "data");
  await fsp.mkdir(dataDir, { recursive: true });
  const ports = options.ports ?? await freePorts(4);
  const node = new NodeProcess(options, dataDir, path.join(workDir, `${options.id}.log`), ports);
  onCleanup(`stop node ${options.id}`, () => node.reap());
  await node.start();
  return node;
}

// ---------------------------------------------------------------------------------------------
// FUSE and loop mounts

/** Mount points currently listed in /proc/self/mountinfo. */
export function mountPoints(): Set<string> {
  const text = fs.readFileSync("/proc/self/mountinfo", "utf8");
  const points = new Set<string>();
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (field !== undefined) points.add(field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))));
  }
  return points;
}

export function isMounted(dir: string): boolean {
  return mountPoints().has(path.resolve(dir));
}

export interface FuseMount {
  /** The FUSE mount point. */
  readonly dir: string;
  /** The export as a file: `${dir}/nbd`. */
  readonly file: string;
  /** Pid of the nbdfuse process (a crash teardown may SIGKILL it to abort pending FUSE I/O). */
  readonly pid: number;
  /** fusermount3 -u and wait for nbdfuse to exit. */
  unmount(): Promise<void>;
}

/** `nbdfuse DIR URI` in the background; resolves once DIR/nbd appears. */
export async function nbdfuseMount(uri: string, options: { readOnly?: boolean } = {}): Promise<FuseMount> {
  const work = await tmpDir("tidemark-fuse-");
  const dir = path.join(work, "mnt");
  await fsp.mkdir(dir);
  const logFile = path.join(work, "nbdfuse.log");
  const daemon = spawnDaemon("nbdfuse", [...(options.readOnly === true ? ["-r"] : []), dir, uri], logFile);
  const unmountNow = async (): Promise<void> => {
    if (isMounted(dir)) {
      const result = await run("fusermount3", ["-u", dir], { timeoutMs: 30_000 });
      if (result.code !== 0 && isMounted(dir)) {
        await run("fusermount3", ["-u", "-z", dir], { timeoutMs: 30_000 });
      }
    }
    const { obeyed } = await stopDaemon(daemon, "SIGTERM", 10_000).catch(() => ({ obeyed: false }));
    if (!obeyed) throw new Error(`nbdfuse for ${uri} had to be killed\n${readTail(logFile)}`);
  };
  const handle = onCleanup(`unmount nbdfuse ${dir}`, unmountNow);
  const file = path.join(dir, "nbd");
  const deadline = Date.now() + nbdfuseReadyTimeoutMs;
  for (;;) {
    if (daemon.exitInfo() !== null) {
      await handle.run().catch(() => undefined);
      throw new Error(`nbdfuse ${dir} ${uri} exited early\n${readTail(logFile)}`);
    }
    if (isMounted(dir) && fs.existsSync(file)) break;
    if (Date.now() > deadline) {
      await handle.run().catch(() => undefined);
      throw new Error(`nbdfuse ${dir} ${uri}: ${file} did not appear within ${nbdfuseReadyTimeoutMs} ms\n${readTail(logFile)}`);
    }
    await sleep(50);
  }
  return { dir, file, pid: daemon.pid, unmount: () => handle.run() };
}

export interface LoopMount {
  readonly dir: string;
  unmount(): Promise<void>;
}

async function detachLoops(image: string): Promise<void> {
  const result = await run("losetup", ["-j", image], { timeoutMs: 10_000 });
  for (const line of result.stdout.split("\n")) {
    const device = line.split(":")[0];
    if (device !== undefined && device.startsWith("/dev/loop")) await run("losetup", ["-d", device], { timeoutMs: 10_000 });
  }
}

/** `mount -o loop IMAGE DIR` (DIR fresh under tmp); umount and losetup -d at cleanup. */
export async function mountLoop(image: string, options: { readOnly?: boolean } = {}): Promise<LoopMount> {
  const dir = await tmpDir("tidemark-mnt-");
  const unmountNow = async (): Promise<void> => {
    if (isMounted(dir)) {
      const result = await run("umount", [dir], { timeoutMs: 60_000 });
      if (result.code !== 0) {
        await run("umount", ["-l", dir], { timeoutMs: 30_000 });
        throw new Error(`umount ${dir} failed (lazily unmounted): ${result.stderr.trim()}`);
      }
    }
    await detachLoops(image);
  };
  const handle = onCleanup(`umount ${dir}`, unmountNow);
  const mountOptions = options.readOnly === true ? "loop,ro" : "loop";
  const result = await run("mount", ["-o", mountOptions, image, dir], { timeoutMs: 60_000 });
  if (result.code !== 0) {
    await handle.run().catch(() => undefined);
    throw new Error(`mount -o ${mountOptions} ${image} ${dir}: exit ${String(result.code)}: ${result.stderr.trim()}`);
  }
  return { dir, unmount: () => handle.run() };
}

// Last resort if the process exits without running cleanup (uncaught error, runner timeout):
// lazily unmount what this process mounted (newest first), then no child outlives us.
process.on("exit", () => {
  for (const entry of [...cleanupStack].reverse()) {
    if (entry.done) continue;
    const loop = /^umount (.+)$/.exec(entry.label)?.[1];
    const fuse = /^unmount nbdfuse (.+)$/.exec(entry.label)?.[1];
    if (loop !== undefined && isMounted(loop)) spawnSync("umount", ["-l", loop]);
    if (fuse !== undefined && isMounted(fuse)) spawnSync("fusermount3", ["-u", "-z", fuse]);
  }
  for (const child of liveChildren) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});
