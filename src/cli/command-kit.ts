// What every management command shares: `--node URL` and `--json`, a client for that node,
// where output goes, and the local checks of names and sizes that make a usage error (exit 2)
// before anything is sent. New commands (pair, snapshot, consistency-point, ...) use these.
import type { Command } from "commander";
import { nameProblem } from "../core/names.ts";
import { cliDeadlineMs } from "../core/limits.ts";
import { ApiClient, defaultNodeUrl, parseNodeUrl } from "./api-client.ts";
import { UsageError } from "./errors.ts";
import { formatBytes, formatJson } from "./format.ts";
import { parseSize } from "./sizes.ts";

/** Where the CLI writes; tests and embedders may capture it. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** The terminal behind stdout, where a progress bar may draw; absent or null when stdout is not a terminal. */
  progressStream?(): NodeJS.WriteStream | null;
}

export const processIo: CliIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  progressStream: () => (process.stdout.isTTY ? process.stdout : null),
};

export interface MgmtContext {
  readonly client: ApiClient;
  readonly json: boolean;
  readonly io: CliIo;
  /** Prints the API's answer with --json, or the human text otherwise. */
  print(raw: unknown, human: () => string): void;
  /**
   * A client for a command the node answers only after waiting itself (at most `nodeWaitMsMax`,
   * src/core/limits.ts): its deadline outlasts the node's, so the node's own answer (a refusal
   * that says why) arrives instead of "did not answer".
   */
  waitingClient(nodeWaitMsMax: number): ApiClient;
}

/** `--node URL`'s help: where the default comes from. */
const nodeOptionHelp = `management API of the node (default: $TIDEMARK_NODE, else ${defaultNodeUrl})`;

/**
 * Adds `--node URL` and `--json` to a command. Every management command has them, and so has
 * the program itself, so that they may come before the subcommand too
 * (`tidemark --node URL volume list`); mgmtContext() takes the one given last.
 */
export function withMgmtOptions(command: Command): Command {
  return command
    .option("--node <URL>", nodeOptionHelp)
    .option("--json", "print the API's JSON answer on stdout");
}

/**
 * The --node URL and --json a management command runs with: given on the command itself (after
 * it), else on a command above it (before it: `tidemark --json pair status`), else --node from
 * $TIDEMARK_NODE (when set and not empty), else the default URL. Errors: UsageError for a URL
 * that is not one, naming where it came from (--node or TIDEMARK_NODE).
 */
export function mgmtTarget(command: Command, env: NodeJS.ProcessEnv = process.env): { url: URL; json: boolean } {
  let node: string | undefined;
  for (let at: Command | null = command; at !== null && node === undefined; at = at.parent) {
    if (at.getOptionValueSource("node") === "cli") node = at.opts<{ node?: string }>().node;
  }
  const json = jsonFlag(command);
  if (node !== undefined) return { url: parseNodeUrl(node, "--node"), json };
  const fromEnv = env.TIDEMARK_NODE;
  if (fromEnv !== undefined && fromEnv.trim() !== "") return { url: parseNodeUrl(fromEnv, "TIDEMARK_NODE"), json };
  return { url: parseNodeUrl(defaultNodeUrl, "--node"), json };
}

/** Whether --json was given, after the command or before it (`tidemark --json demo`). */
export function jsonFlag(command: Command): boolean {
  for (let at: Command | null = command; at !== null; at = at.parent) {
    if (at.opts<{ json?: boolean }>().json === true) return true;
  }
  return false;
}

/** The context for a command's action; `command` is the last argument commander passes. */
export function mgmtContext(command: Command, io: CliIo): MgmtContext {
  const target = mgmtTarget(command);
  const client = new ApiClient(target.url);
  const json = target.json;
  return {
    client,
    json,
    io,
    print(raw, human) {
      io.stdout(json ? formatJson(raw) : human());
    },
    waitingClient(nodeWaitMsMax) {
      return new ApiClient(target.url, { timeoutMs: Math.max(client.timeoutMs, cliDeadlineMs(nodeWaitMsMax)) });
    },
  };
}

/** A name given on the command line, checked with the same rule the node uses. */
export function checkName(kind: string, name: string): string {
  const problem = nameProblem(kind, name);
  if (problem !== null) throw new UsageError(problem);
  return name;
}

/** "a,b, c" -> ["a","b","c"]; each a valid name, none twice, at least one. */
export function parseNameList(kind: string, flag: string, text: string): string[] {
  const names = text.split(",").map((part) => part.trim());
  if (names.length === 0 || names.every((name) => name === "")) {
    throw new UsageError(`${flag} needs at least one ${kind} name, e.g. ${flag} db,logs`);
  }
  if (names.includes("")) throw new UsageError(`${flag} ${JSON.stringify(text)} has an empty name; separate names with single commas`);
  for (const name of names) checkName(kind, name);
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new UsageError(`${flag} lists ${kind} '${name}' twice`);
    seen.add(name);
  }
  return names;
}

/** A size flag ("--size 10G") as bytes, within [minBytes, maxBytes]. */
export function parseSizeFlag(flag: string, text: string, minBytes: number, maxBytes: number): number {
  const parsed = parseSize(text);
  // Past what a number holds exactly: the same line as every size above the maximum.
  if (!parsed.ok && parsed.tooLarge === true) throw new UsageError(`${flag} ${text} is above the maximum of ${formatBytes(maxBytes)}`);
  if (!parsed.ok) throw new UsageError(parsed.reason.replace(/^size /, `${flag} `));
  if (parsed.bytes < minBytes) throw new UsageError(`${flag} ${text} is below the minimum of ${formatBytes(minBytes)} (${minBytes} bytes)`);
  if (parsed.bytes > maxBytes) throw new UsageError(`${flag} ${text} is above the maximum of ${formatBytes(maxBytes)}`);
  return parsed.bytes;
}

/** "tidemark volume create" for a command deep in the tree. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at !== null; at = at.parent) names.unshift(at.name());
  return names.join(" ");
}
