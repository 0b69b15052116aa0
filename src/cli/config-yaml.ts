// The YAML that `tidemark node --config FILE.yaml` reads (file names ending .yaml or .yml),
// parsed by the `yaml` package (YAML 1.2, core schema: `yes` and `on` are text, not true). The
// node's settings are all top-level scalars, as in the TOML form (config-toml.ts), so this takes
// a top-level mapping of strings, whole numbers and true/false, and refuses, with the line and
// what to write instead, the rest (nested mappings, lists, floats, null, anchors and aliases, a
// key set twice, several documents). Pure: text in, entries or an error out.
import { isAlias, isMap, isScalar, LineCounter, parseAllDocuments, type Node } from "yaml";
import { ConfigSyntaxError, type ConfigEntry } from "./config-toml.ts";

const scalarsOnly = "tidemark's settings are text, whole numbers and true or false";

/** Parses `text` (the whole file). Errors: ConfigSyntaxError naming the line. */
export function parseConfigYaml(text: string): Map<string, ConfigEntry> {
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text.replace(/^\uFEFF/, ""), { lineCounter, uniqueKeys: true, prettyErrors: false });
  const lineAt = (offset: number | undefined): number => (offset === undefined ? 1 : lineCounter.linePos(offset).line);
  if (!Array.isArray(documents)) return new Map(); // an empty stream: no settings
  if (documents.length > 1) throw new ConfigSyntaxError(lineAt(documents[1]?.range[0]), "several YAML documents (---): put every setting in one");
  const document = documents[0];
  if (document === undefined) return new Map();
  const error = document.errors[0];
  if (error !== undefined) {
    const duplicate = error.code === "DUPLICATE_KEY";
    throw new ConfigSyntaxError(lineAt(error.pos[0]), duplicate ? "a key is set twice; keep one" : `not valid YAML (${(error.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+.*$/, "")})`);
  }
  const root = document.contents;
  if (root === null || (isScalar(root) && root.value === null)) return new Map();
  if (!isMap(root)) throw new ConfigSyntaxError(lineAt(root.range?.[0]), "the file must be a mapping of settings (key: value lines)");
  const entries = new Map<string, ConfigEntry>();
  for (const pair of root.items) {
    const keyNode = pair.key as Node | null;
    const line = lineAt(keyNode?.range?.[0]);
    if (!isScalar(keyNode) || typeof keyNode.value !== "string") throw new ConfigSyntaxError(line, "every key is a setting's name (text)");
    const key = keyNode.value;
    const valueNode = pair.value as Node | null;
    if (isAlias(valueNode) || (valueNode !== null && valueNode.anchor !== undefined)) throw new ConfigSyntaxError(line, `anchors and aliases are not used: write the value of '${key}' itself`);
    if (!isScalar(valueNode)) {
      throw new ConfigSyntaxError(line, isMap(valueNode) ? `nested mappings are not used: write every setting as a top-level key: value line` : `lists are not used: ${scalarsOnly}`);
    }
    const value: unknown = valueNode.value;
    if (typeof value === "string") {
      // eslint-disable-next-line no-control-regex
      if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) throw new ConfigSyntaxError(line, `the text of '${key}' holds a control character`);
      entries.set(key, { value, line });
    } else if (typeof value === "boolean") {
      entries.set(key, { value, line });
    } else if (typeof value === "number" && Number.isSafeInteger(value)) {
      entries.set(key, { value, line });
    } else if (value === null) {
      throw new ConfigSyntaxError(line, `'${key}' has no value: give one, or leave the key out for the default`);
    } else {
      const source = valueNode.source ?? (typeof value === "number" || typeof value === "bigint" ? String(value) : "");
      throw new ConfigSyntaxError(line, `the value of '${key}' (${source}) is not one tidemark reads: ${scalarsOnly}; put text in quotes, e.g. ${key}: "${source}"`);
    }
  }
  return entries;
}
