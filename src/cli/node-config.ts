// `tidemark node --config FILE`: the node's settings from a TOML file (config-toml.ts) or, for a
// name ending .yaml or .yml, a YAML file (config-yaml.ts), checked
// with zod: unknown keys are refused with the key named (and the nearest known key), each value
// must have its setting's type. The values are then checked exactly as the flags are (node-command.ts),
// and a flag given on the command line overrides the file's value. Every problem is a UsageError
// (exit 2) whose one line starts with the file's path (and line). docs/operations.md has the keys.
import { readFileSync } from "node:fs";
import { dirname, extname, resolve } from "node:path";
import { z } from "zod";
import { nodeConfigBytesMax } from "../core/limits.ts";
import { ConfigSyntaxError, parseConfigToml, type ConfigScalar } from "./config-toml.ts";
import { parseConfigYaml } from "./config-yaml.ts";
import { UsageError } from "./errors.ts";

/** The log levels `--log-level` and `log-level` take, least to most severe (pino's names). */
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal"] as const;
export type LogLevel = (typeof logLevels)[number];

/**
 * The keys of a config file: the long flags of `tidemark node` without their dashes. Not here:
 * --config itself, and --truncate-damaged-journals (a decision for one start after a power loss,
 * never a standing setting).
 */
export const nodeConfigSchema = z.strictObject({
  id: z.string(),
  data: z.string(),
  mgmt: z.string(),
  nbd: z.string(),
  "host-port": z.string(),
  repl: z.string(),
  "repl-advertise": z.string(),
  "write-time": z.string(),
  "max-clock-skew": z.string(),
  "log-level": z.string(),
  "insecure-mgmt": z.boolean(),
}).partial();

export type NodeConfigValues = z.infer<typeof nodeConfigSchema>;
export type NodeConfigKey = keyof NodeConfigValues;
export const nodeConfigKeys: readonly NodeConfigKey[] = Object.keys(nodeConfigSchema.shape) as NodeConfigKey[];

/** A config file as read: its path, the checked values, and the line of each key. */
export interface NodeConfig {
  readonly path: string;
  readonly values: NodeConfigValues;
  readonly lines: ReadonlyMap<string, number>;
}

/** How a message names where a key's value came from: "/etc/tidemark/node.toml:3: mgmt". */
export function configLabel(config: NodeConfig, key: NodeConfigKey): string {
  const line = config.lines.get(key);
  return `${config.path}${line === undefined ? "" : `:${String(line)}`}: ${key}`;
}

/** A path in the file (data) is relative to the file's directory, as a path in a unit file would not be to the service's. */
export function configPath(config: NodeConfig, value: string): string {
  return resolve(dirname(config.path), value);
}

const readErrors: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of the path is not a directory",
  ELOOP: "too many symbolic links",
};

/**
 * Reads and checks the config file at `file` (resolved against the working directory).
 * Errors: UsageError for a file that cannot be read, is too large, is not the TOML this reads,
 * has an unknown key, or a value of the wrong type.
 */
export function readNodeConfig(file: string): NodeConfig {
  const path = resolve(file);
  const where = `--config ${file}`;
  const extension = extname(path).toLowerCase();
  if (extension === ".json") {
    throw new UsageError(`${where}: tidemark reads its config as TOML or YAML (.yaml, .yml), not JSON; write each setting as key = "value" (see contrib/tidemark.toml)`);
  }
  const yaml = extension === ".yaml" || extension === ".yml";
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    throw new UsageError(`${where}: cannot read it (${readErrors[code] ?? (error as Error).message}${code === "" ? "" : `, ${code}`}); give the path of the node's config file (TOML, or YAML named .yaml or .yml), e.g. --config /etc/tidemark/node.toml`);
  }
  if (bytes.length > nodeConfigBytesMax) {
    throw new UsageError(`${where}: is ${String(bytes.length)} bytes, more than a config file's ${String(nodeConfigBytesMax)}; is it the right file?`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new UsageError(`${where}: is not UTF-8 text; is it the right file?`);
  }
  let entries: Map<string, { value: ConfigScalar; line: number }>;
  try {
    entries = yaml ? parseConfigYaml(text) : parseConfigToml(text);
  } catch (error) {
    if (error instanceof ConfigSyntaxError) throw new UsageError(`${path}:${String(error.line)}: ${error.message.replace(/^line \d+: /, "")}`);
    throw error;
  }
  const lines = new Map([...entries].map(([key, entry]) => [key, entry.line]));
  const parsed = nodeConfigSchema.safeParse(Object.fromEntries([...entries].map(([key, entry]) => [key, entry.value])));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue?.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      const near = nearestKey(key);
      throw new UsageError(`${path}:${String(lines.get(key) ?? 0)}: unknown key '${key}'${near === null ? "" : ` (did you mean '${near}'?)`}; the keys are ${nodeConfigKeys.join(", ")}`);
    }
    const key = String(issue?.path[0] ?? "");
    // The example in the file's own syntax (YAML text needs no quotes, but quoting is safe).
    const assign = yaml ? ": " : " = ";
    const example = key === "insecure-mgmt" ? `${key}${assign}true` : `${key}${assign}"${key === "id" ? "site-a" : "..."}"`;
    throw new UsageError(`${path}:${String(lines.get(key) ?? 0)}: ${key} must be ${key === "insecure-mgmt" ? "true or false" : yaml ? "text" : "a string in quotes"}, e.g. ${example}`);
  }
  return { path, values: parsed.data, lines };
}

/** The known key `key` was probably meant to be (host_port, hostport, Mgmt, log-levle), or null. */
function nearestKey(key: string): string | null {
  const plain = key.toLowerCase().replace(/_/g, "-");
  let best: { key: string; distance: number } | null = null;
  for (const known of nodeConfigKeys) {
    if (known.replace(/-/g, "") === plain.replace(/-/g, "")) return known;
    const distance = editDistance(plain, known);
    if (distance <= 2 && (best === null || distance < best.distance)) best = { key: known, distance };
  }
  return best?.key ?? null;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The log level a node runs at: --log-level, else $TIDEMARK_LOG_LEVEL, else the file's
 * log-level, else info. `label` names where it came from for the message. Errors: UsageError.
 */
export function checkLogLevel(text: string, label: string): LogLevel {
  const level = text.trim().toLowerCase();
  if ((logLevels as readonly string[]).includes(level)) return level as LogLevel;
  throw new UsageError(`${label} ${JSON.stringify(text)} is not a log level; use one of ${logLevels.join(", ")}`);
}
