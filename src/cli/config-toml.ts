// The TOML that `tidemark node --config FILE` reads: top-level `key = value` lines, the values
// strings ("basic" with escapes, or 'literal'), whole numbers and true/false, `#` comments and
// blank lines. That is a strict subset of TOML 1.0 (https://toml.io/en/v1.0.0): every file this
// accepts is valid TOML meaning the same, and everything else TOML has (tables, arrays, dotted or
// quoted keys, floats, dates, multi-line strings) is refused with its line number and what to
// write instead, never read differently. No TOML library is among the project's dependencies;
// the node's settings are all scalars, which this covers (docs/operations.md, "Config file").
// Pure: text in, entries or an error out.

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

const bareKey = /^[A-Za-z0-9_-]+/;
const integerText = /^[+-]?(?:0|[1-9](?:_?[0-9])*)$/;
const escapes: Readonly<Record<string, string>> = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", "\"": "\"", "\\": "\\" };
const scalarsOnly = "tidemark's settings are strings in quotes, whole numbers and true or false";

/** Parses `text` (the whole file). Errors: ConfigSyntaxError naming the line. */
export function parseConfigToml(text: string): Map<string, ConfigEntry> {
  const entries = new Map<string, ConfigEntry>();
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const rest = line.replace(/^[ \t]+/, "");
    if (rest === "" || rest.startsWith("#")) return;
    if (rest.startsWith("[")) {
      throw new ConfigSyntaxError(lineNo, `tables (${rest.split("]")[0] ?? rest}]) are not used: write every setting as a top-level key = value line`);
    }
    if (rest.startsWith("\"") || rest.startsWith("'")) throw new ConfigSyntaxError(lineNo, "write the key without quotes (letters, digits, '-' and '_')");
    const key = bareKey.exec(rest)?.[0];
    if (key === undefined) throw new ConfigSyntaxError(lineNo, `expected key = value, found ${JSON.stringify(rest.slice(0, 40))}`);
    let at = skipBlanks(rest, key.length);
    if (rest[at] === ".") throw new ConfigSyntaxError(lineNo, `dotted keys (${key}.…) are not used: write every setting as a top-level key = value line`);
    if (rest[at] !== "=") throw new ConfigSyntaxError(lineNo, `expected '=' after the key '${key}'`);
    at = skipBlanks(rest, at + 1);
    const { value, end } = parseValue(rest, at, lineNo, key);
    const after = skipBlanks(rest, end);
    if (after < rest.length && rest[after] !== "#") {
      throw new ConfigSyntaxError(lineNo, `unexpected ${JSON.stringify(rest.slice(after, after + 20))} after the value of '${key}'; one key = value per line, a comment starts with #`);
    }
    const earlier = entries.get(key);
    if (earlier !== undefined) throw new ConfigSyntaxError(lineNo, `'${key}' is set twice (also on line ${String(earlier.line)}); keep one`);
    entries.set(key, { value, line: lineNo });
  });
  return entries;
}

function skipBlanks(text: string, from: number): number {
  let at = from;
  while (text[at] === " " || text[at] === "\t") at += 1;
  return at;
}

function parseValue(text: string, at: number, lineNo: number, key: string): { value: ConfigScalar; end: number } {
  const first = text[at];
  if (first === undefined || first === "#") throw new ConfigSyntaxError(lineNo, `'${key}' has no value; e.g. ${key} = "..."`);
  if (text.startsWith("\"\"\"", at) || text.startsWith("'''", at)) throw new ConfigSyntaxError(lineNo, `multi-line strings are not used: ${scalarsOnly}`);
  if (first === "\"") return parseBasicString(text, at + 1, lineNo, key);
  if (first === "'") {
    const close = text.indexOf("'", at + 1);
    if (close < 0) throw new ConfigSyntaxError(lineNo, `the string of '${key}' has no closing '`);
    const value = text.slice(at + 1, close);
    checkNoControl(value, lineNo, key);
    return { value, end: close + 1 };
  }
  if (first === "[") throw new ConfigSyntaxError(lineNo, `arrays are not used: ${scalarsOnly}`);
  if (first === "{") throw new ConfigSyntaxError(lineNo, `inline tables are not used: ${scalarsOnly}`);
  const word = /^[^\s#]+/.exec(text.slice(at))?.[0] ?? "";
  if (word === "true" || word === "false") return { value: word === "true", end: at + word.length };
  if (integerText.test(word)) {
    const value = Number(word.replace(/_/g, ""));
    if (!Number.isSafeInteger(value)) throw new ConfigSyntaxError(lineNo, `${word} is too large a number for '${key}'`);
    return { value, end: at + word.length };
  }
  throw new ConfigSyntaxError(lineNo, `the value of '${key}' (${word}) is not one tidemark reads: ${scalarsOnly}; put text in quotes, e.g. ${key} = "${word.replace(/"/g, "")}"`);
}

function parseBasicString(text: string, from: number, lineNo: number, key: string): { value: string; end: number } {
  let value = "";
  for (let at = from; at < text.length; at += 1) {
    const char = text[at] ?? "";
    if (char === "\"") return { value, end: at + 1 };
    if (char !== "\\") {
      checkNoControl(char, lineNo, key);
      value += char;
      continue;
    }
    const code = text[at + 1] ?? "";
    const simple = escapes[code];
    if (simple !== undefined) {
      value += simple;
      at += 1;
      continue;
    }
    const digits = code === "u" ? 4 : code === "U" ? 8 : 0;
    const hex = text.slice(at + 2, at + 2 + digits);
    const point = digits > 0 && /^[0-9A-Fa-f]+$/.test(hex) && hex.length === digits ? Number.parseInt(hex, 16) : -1;
    if (point < 0 || point > 0x10ffff || (point >= 0xd800 && point <= 0xdfff)) {
      throw new ConfigSyntaxError(lineNo, `the string of '${key}' has an invalid escape \\${code}${hex}; write a backslash as \\\\ or use 'single quotes'`);
    }
    value += String.fromCodePoint(point);
    at += 1 + digits;
  }
  throw new ConfigSyntaxError(lineNo, `the string of '${key}' has no closing "`);
}

function checkNoControl(value: string, lineNo: number, key: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) throw new ConfigSyntaxError(lineNo, `the string of '${key}' holds a control character; write it as an escape (\\t, \\u0001)`);
}
