// The TOML that `tidemark node --config FILE` reads, parsed by smol-toml (TOML 1.0). The
// node's settings are all top-level scalars, so this takes strings, whole numbers and
// true/false at the top level and refuses, with the line and what to write instead, what
// TOML has beyond that (tables, arrays, inline tables, floats, dates): a setting is never
// read another way than it was meant. Pure: text in, entries or an error out.
import { parse, TomlError } from "smol-toml";

export type ConfigScalar = string | number | boolean;

/** One `key = value` line: the value and the line it is on (1-based), for messages. */
export interface ConfigEntry {
  readonly value: ConfigScalar;
  readonly line: number;
}

/** The file is not the TOML this reads; `line` is 1-based, the message says what to write. */
export class ConfigSyntaxError extends Error {
  override name = "ConfigSyntaxError";
  readonly line: number;
  constructor(line: number, message: string) {
    super(`line ${String(line)}: ${message}`);
    this.line = line;
  }
}

const scalarsOnly = "tidemark's settings are strings in quotes, whole numbers and true or false";

/** The 1-based line where top-level `key` is set (bare or quoted, or as a table header). */
function lineOf(lines: readonly string[], key: string): number {
  const escaped = key.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
  const pattern = new RegExp(`^[ \\t]*(?:\\[\\[?[ \\t]*)?(?:${escaped}|"${escaped}"|'${escaped}')[ \\t]*[=.\\]]`);
  const index = lines.findIndex((line) => pattern.test(line));
  return index < 0 ? 1 : index + 1;
}

function firstTableLine(lines: readonly string[]): number {
  const index = lines.findIndex((line) => /^[ \t]*\[/.test(line));
  return index < 0 ? 1 : index + 1;
}

/** What to say about a value that is not a scalar this reads. */
function describe(key: string, value: unknown, lines: readonly string[]): ConfigSyntaxError {
  const line = lineOf(lines, key);
  const text = lines[line - 1]?.trim() ?? "";
  if (Array.isArray(value)) {
    return /^\[\[/.test(text) ? new ConfigSyntaxError(line, `tables (${text}) are not used: write every setting as a top-level key = value line`)
      : new ConfigSyntaxError(line, `arrays are not used: ${scalarsOnly}`);
  }
  if (value instanceof Date) return new ConfigSyntaxError(line, `the value of '${key}' (a date) is not one tidemark reads: ${scalarsOnly}; put text in quotes`);
  if (typeof value === "object" && value !== null) {
    if (/^\[/.test(text)) return new ConfigSyntaxError(line, `tables (${text.split("]")[0] ?? text}]) are not used: write every setting as a top-level key = value line`);
    if (new RegExp(`^["']?${key.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")}["']?[ \\t]*\\.`).test(text)) {
      return new ConfigSyntaxError(line, `dotted keys (${key}.…) are not used: write every setting as a top-level key = value line`);
    }
    return new ConfigSyntaxError(line, `inline tables are not used: ${scalarsOnly}`);
  }
  if (typeof value === "number" || typeof value === "bigint") {
    return Number.isInteger(value) || typeof value === "bigint" ? new ConfigSyntaxError(line, `${String(value)} is too large a number for '${key}'`)
      : new ConfigSyntaxError(line, `the value of '${key}' (${String(value)}) is not one tidemark reads: ${scalarsOnly}; put text in quotes, e.g. ${key} = "${String(value)}"`);
  }
  return new ConfigSyntaxError(line, `the value of '${key}' is not one tidemark reads: ${scalarsOnly}`);
}

/** Parses `text` (the whole file). Errors: ConfigSyntaxError naming the line (smol-toml's, for TOML that does not parse). */
export function parseConfigToml(text: string): Map<string, ConfigEntry> {
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  let document: Record<string, unknown>;
  try {
    document = parse(text.replace(/^\uFEFF/, ""), { integersAsBigInt: "asNeeded" });
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const line = lines.length === 0 ? 1 : Math.min(Math.max(error.line, 1), lines.length);
    const source = lines[line - 1]?.trim() ?? "";
    const key = /^([A-Za-z0-9_-]+)[ \t]*=/.exec(source)?.[1];
    if (key !== undefined && /redefine/.test(error.message)) {
      const first = lineOf(lines, key);
      throw new ConfigSyntaxError(line, `'${key}' is set twice (also on line ${String(first)}); keep one`);
    }
    const hint = /^[A-Za-z0-9_-]+[ \t]*=[ \t]*[A-Za-z]/.test(source) ? `; put text in quotes, e.g. ${source.replace(/[ \t]*=[ \t]*/, " = \"").replace(/[ \t]*(#.*)?$/, "")}"` : "";
    throw new ConfigSyntaxError(line, `not valid TOML (${(error.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "")})${hint}`);
  }
  const entries = new Map<string, ConfigEntry>();
  const tableLine = firstTableLine(lines);
  for (const [key, value] of Object.entries(document)) {
    if (typeof value === "string") {
      // eslint-disable-next-line no-control-regex
      if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) throw new ConfigSyntaxError(lineOf(lines, key), `the string of '${key}' holds a control character; write it as an escape (\\t, \\u0001)`);
      entries.set(key, { value, line: lineOf(lines, key) });
    } else if (typeof value === "boolean") {
      entries.set(key, { value, line: lineOf(lines, key) });
    } else if (typeof value === "number" && Number.isSafeInteger(value)) {
      entries.set(key, { value, line: lineOf(lines, key) });
    } else {
      const error = describe(key, value, lines);
      // A table's keys are not top-level: point at the table when it comes first.
      throw typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date) && error.line > tableLine ? describe(key, value, lines) : error;
    }
  }
  return entries;
}
