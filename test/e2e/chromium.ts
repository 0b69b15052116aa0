// Headless Chromium (the Debian package `chromium`) driven over the DevTools protocol: a real
// browser for the dashboard test. Started in its own process group with a temporary profile and
// a free debugging port; cleanup kills that group by its id. Commands go over the page's
// WebSocket (Node's global WebSocket), each with a deadline.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import path from "node:path";
import { freePort, onCleanup, readTail, tmpDir, waitFor, whichTool } from "./harness.ts";

/** Deadline of one DevTools command. */
const cdpCommandTimeoutMs = 30_000;
/** How long Chromium may take to open its debugging port. */
const chromiumStartTimeoutMs = 30_000;

export function chromiumBinary(): string | null {
  return whichTool("chromium") ?? whichTool("chromium-browser");
}

interface CdpMessage {
  readonly id?: number;
  readonly method?: string;
  readonly params?: Record<string, unknown>;
  readonly result?: Record<string, unknown>;
  readonly error?: { readonly message: string };
}

/** One page of the browser. */
export interface BrowserPage {
  /** Sends a DevTools command and resolves with its result (throws on an error answer or after the deadline). */
  send(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Evaluates an expression in the page (awaiting a promise) and returns its JSON value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Console errors and uncaught exceptions seen so far (CSP refusals show here). */
  readonly problems: string[];
  close(): void;
}

export interface Browser {
  readonly pid: number;
  readonly logFile: string;
  /** Opens a page at `url` with the window size given. */
  open(url: string, size: { widthPx: number; heightPx: number }): Promise<BrowserPage>;
}

/** Starts headless Chromium (as root it needs --no-sandbox). */
export async function startChromium(): Promise<Browser> {
  const binary = chromiumBinary();
  if (binary === null) throw new Error("chromium is not installed (scripts/ensure-test-deps.sh installs it)");
  const profile = await tmpDir("tidemark-chromium-");
  const port = await freePort();
  const logFile = path.join(profile, "chromium.log");
  const logFd = openSync(logFile, "a");
  const child = spawn(binary, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-sync", "--hide-scrollbars", "--mute-audio",
    `--user-data-dir=${path.join(profile, "profile")}`, `--remote-debugging-port=${port}`, "--remote-debugging-address=127.0.0.1", "about:blank",
  ], { stdio: ["ignore", logFd, logFd], detached: true });
  closeSync(logFd);
  const pid = child.pid ?? -1;
  let exited = false;
  child.once("exit", () => { exited = true; });
  onCleanup(`kill chromium process group ${pid}`, () => {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor("chromium's DevTools port", async () => {
    if (exited) throw new Error(`chromium exited\n${readTail(logFile)}`);
    const response = await fetch(`${base}/json/version`, { signal: AbortSignal.timeout(2_000) });
    return response.ok;
  }, { timeoutMs: chromiumStartTimeoutMs, intervalMs: 200 });
  return {
    pid,
    logFile,
    open: async (url, size) => {
      const response = await fetch(`${base}/json/new?about:blank`, { method: "PUT", signal: AbortSignal.timeout(cdpCommandTimeoutMs) });
      if (!response.ok) throw new Error(`chromium /json/new: HTTP ${response.status} ${await response.text()}`);
      const target = (await response.json()) as { webSocketDebuggerUrl: string };
      const page = await connectPage(target.webSocketDebuggerUrl);
      await page.send("Runtime.enable");
      await page.send("Log.enable");
      await page.send("Page.enable");
      await page.send("Emulation.setDeviceMetricsOverride", { width: size.widthPx, height: size.heightPx, deviceScaleFactor: 1, mobile: false });
      await page.send("Page.navigate", { url });
      return page;
    },
  };
}

async function connectPage(wsUrl: string): Promise<BrowserPage> {
  const socket = new WebSocket(wsUrl);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no WebSocket to ${wsUrl} within ${cdpCommandTimeoutMs} ms`)), cdpCommandTimeoutMs);
    socket.addEventListener("open", () => { clearTimeout(timer); resolve(); }, { once: true });
    socket.addEventListener("error", () => { clearTimeout(timer); reject(new Error(`WebSocket to ${wsUrl} failed`)); }, { once: true });
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (result: Record<string, unknown>) => void; reject: (error: Error) => void }>();
  const problems: string[] = [];
  socket.addEventListener("message", (event: MessageEvent) => {
    const message = JSON.parse(String(event.data)) as CdpMessage;
    if (message.id !== undefined) {
      const waiter = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.error !== undefined) waiter?.reject(new Error(message.error.message));
      else waiter?.resolve(message.result ?? {});
      return;
    }
    if (message.method === "Runtime.exceptionThrown") problems.push(`exception: ${JSON.stringify(message.params)}`);
    if (message.method === "Log.entryAdded") {
      const entry = message.params?.entry as { level?: string; text?: string; url?: string } | undefined;
      // The favicon's absence is not the page's problem; everything else logged as an error is.
      if (entry?.level === "error" && !(entry.url ?? "").endsWith("/favicon.ico")) problems.push(`log: ${entry.text ?? ""} ${entry.url ?? ""}`);
    }
    if (message.method === "Runtime.consoleAPICalled" && message.params?.type === "error") problems.push(`console.error: ${JSON.stringify(message.params.args)}`);
  });
  socket.addEventListener("close", () => {
    for (const waiter of waiting.values()) waiter.reject(new Error("the page's WebSocket closed"));
    waiting.clear();
  });
  const send = (method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> => {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error(`DevTools ${method}: no answer within ${cdpCommandTimeoutMs} ms`));
      }, cdpCommandTimeoutMs);
      waiting.set(id, {
        resolve: (result) => { clearTimeout(timer); resolve(result); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
      socket.send(JSON.stringify({ id, method, params }));
    });
  };
  return {
    send,
    problems,
    evaluate: async <T>(expression: string): Promise<T> => {
      const answer = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
      if (answer.exceptionDetails !== undefined) throw new Error(`evaluate failed: ${JSON.stringify(answer.exceptionDetails)}`);
      return (answer.result as { value: T }).value;
    },
    close: () => socket.close(),
  };
}
