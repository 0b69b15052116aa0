// The demo's two nodes: `tidemark node` child processes of this same CLI on loopback, on
// free ports, logging to files in the demo's temporary directory. Everything started here
// is killed by killAll() (async) or killAllNow() (synchronous, for process 'exit').
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ApiClient } from "./api-client.ts";
import { mgmtRoutes } from "../mgmt/contract.ts";
import { OperationError } from "./errors.ts";

/** How long a node may take to answer GET /v1/health after it was spawned. */
const nodeStartTimeoutMs = 30_000;
const healthPollMs = 100;
/** Attempts with fresh ports when a port picked as free was taken meanwhile. */
const nodeStartAttemptsMax = 3;
/** A killed child that has not exited after this long is left to the OS. */
const childExitWaitMs = 5_000;

const tidemarkBin = fileURLToPath(new URL("../../bin/tidemark.js", import.meta.url));

export interface DemoNode {
  readonly id: string;
  readonly dataDir: string;
  readonly logPath: string;
  readonly mgmtUrl: string;
  readonly api: ApiClient;
  readonly nbd: { readonly host: string; readonly port: number };
  readonly hostPort: { readonly host: string; readonly port: number };
  readonly pid: number;
  /** True once the process has exited (for any reason). */
  exited(): boolean;
  /** SIGKILL, then resolves when the process is gone. */
  kill(): Promise<void>;
}

const children = new Set<ChildProcess>();
/** Nodes that ended without being killed from here: "node-a (pid 12) killed by SIGKILL". */
const unexpectedExits: string[] = [];

/** Nodes that died on their own (or were killed by someone else) since the demo started them. */
export function nodesGoneUnexpectedly(): readonly string[] {
  return unexpectedExits;
}

/** `count` distinct TCP ports on 127.0.0.1 that were free a moment ago (held together while picking). */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      servers.push(server);
    }
    return servers.map((server) => {
      const address = server.address();
      if (address === null || typeof address === "string") throw new OperationError("could not pick a free port on 127.0.0.1");
      return address.port;
    });
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Starts `tidemark node --id ID --data DIR` on fresh loopback ports and waits for its health answer. */
export async function startNode(id: string, baseDir: string, signal: AbortSignal): Promise<DemoNode> {
  let lastProblem = "";
  for (let attempt = 1; attempt <= nodeStartAttemptsMax; attempt++) {
    const started = await tryStartNode(id, baseDir, attempt, signal);
    if (typeof started !== "string") return started;
    lastProblem = started;
    if (signal.aborted) break;
  }
  throw new OperationError(`could not start node ${id}: ${lastProblem}`);
}

async function tryStartNode(id: string, baseDir: string, attempt: number, signal: AbortSignal): Promise<DemoNode | string> {
  const [mgmtPort, nbdPort, hostPort, replPort] = await freePorts(4) as [number, number, number, number];
  const dataDir = path.join(baseDir, id);
  const logPath = path.join(baseDir, `${id}.log${attempt > 1 ? `.${attempt}` : ""}`);
  const logFd = openSync(logPath, "a");
  const args = [
    tidemarkBin, "node", "--id", id, "--data", dataDir,
    "--mgmt", `127.0.0.1:${mgmtPort}`, "--nbd", `127.0.0.1:${nbdPort}`,
    "--host-port", `127.0.0.1:${hostPort}`, "--repl", `127.0.0.1:${replPort}`, "--write-time", "host",
  ];
  let child: ChildProcess;
  try {
    // Detached: Ctrl-C in the terminal reaches the demo only, which then kills the nodes itself.
    child = spawn(process.execPath, args, { stdio: ["ignore", logFd, logFd], detached: true });
  } finally {
    closeSync(logFd);
  }
  children.add(child);
  let exitText: string | undefined;
  let killedHere = false;
  child.once("exit", (code, sig) => {
    exitText = sig !== null ? `killed by ${sig}` : `exited with status ${code}`;
    children.delete(child);
    if (!killedHere && !killingAll) unexpectedExits.push(`${id} (pid ${child.pid ?? "?"}) ${exitText}`);
  });
  child.once("error", (error) => {
    exitText = `could not be started: ${error.message}`;
    children.delete(child);
  });
  const mgmtUrl = `http://127.0.0.1:${mgmtPort}`;
  const api = new ApiClient(mgmtUrl, { timeoutMs: 2_000 });
  const deadline = Date.now() + nodeStartTimeoutMs;
  for (;;) {
    if (exitText !== undefined) return `the node process ${exitText} (log: ${logPath})`;
    if (signal.aborted) {
      killedHere = true;
      child.kill("SIGKILL");
      return "interrupted";
    }
    try {
      await api.call(mgmtRoutes.health, {});
      break;
    } catch {
      if (Date.now() > deadline) {
        killedHere = true;
        child.kill("SIGKILL");
        await waitExit(child, childExitWaitMs);
        return `no health answer from ${mgmtUrl} within ${nodeStartTimeoutMs / 1000}s (log: ${logPath})`;
      }
      await sleep(healthPollMs);
    }
  }
  const pid = child.pid ?? -1;
  return {
    id, dataDir, logPath, mgmtUrl, pid,
    api: new ApiClient(mgmtUrl),
    nbd: { host: "127.0.0.1", port: nbdPort },
    hostPort: { host: "127.0.0.1", port: hostPort },
    exited: () => exitText !== undefined,
    kill: async () => {
      killedHere = true;
      if (exitText === undefined) child.kill("SIGKILL");
      await waitExit(child, childExitWaitMs);
    },
  };
}

/** SIGKILLs every node still running and waits for them to go. */
let killingAll = false;

export async function killAll(): Promise<void> {
  killingAll = true;
  const all = [...children];
  for (const child of all) child.kill("SIGKILL");
  await Promise.all(all.map((child) => waitExit(child, childExitWaitMs)));
}

/** For process 'exit' (no waiting possible there): SIGKILL every node still running. */
export function killAllNow(): void {
  killingAll = true;
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}
