// The config file of `tidemark node --config FILE`: the TOML subset it reads means what TOML
// means (strings with escapes, literal strings, whole numbers, booleans, comments, CRLF, BOM),
// everything else TOML has is refused with its line and what to write, and the zod check names
// unknown keys (with the nearest known one) and values of the wrong type. The example config in
// contrib/ is read without error and holds every key.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ConfigSyntaxError, parseConfigToml } from "../../src/cli/config-toml.ts";
import { UsageError } from "../../src/cli/errors.ts";
import { checkLogLevel, nodeConfigKeys, readNodeConfig } from "../../src/cli/node-config.ts";

const exampleConfig = fileURLToPath(new URL("../../contrib/tidemark.toml", import.meta.url));

function values(text: string): Record<string, unknown> {
  return Object.fromEntries([...parseConfigToml(text)].map(([key, entry]) => [key, entry.value]));
}

void test("the config reads strings, escapes, literal strings, whole numbers, booleans and comments as TOML 1.0 does (smol-toml)", () => {
  const text = [
    "\uFEFF# a comment",
    "",
    "  id = \"site-a\"   # trailing comment",
    "data='C:\\tidemark\\data'",
    "quote = \"say \\\"hi\\\"\\t\\\\ \\u00e9 \\U0001F600\"",
    "hash = \"a # not a comment\"",
    "count = 1_000",
    "negative = -5",
    "yes = true",
    "no = false\r",
    "empty = \"\"",
    "tab\t=\t\"x\"",
  ].join("\n");
  assert.deepEqual(values(text), {
    id: "site-a",
    data: "C:\\tidemark\\data",
    quote: "say \"hi\"\t\\ \u00e9 \u{1F600}",
    hash: "a # not a comment",
    count: 1000,
    negative: -5,
    yes: true,
    no: false,
    empty: "",
    tab: "x",
  });
  assert.equal(parseConfigToml("\n\nmgmt = \"x\"\n").get("mgmt")?.line, 3, "each entry knows its line");
});

void test("what is not TOML, or not a top-level scalar, is refused with the line and what to write, never read another way", () => {
  const cases: Array<[string, number, RegExp]> = [
    ["[node]\nid = \"a\"", 1, /tables \(\[node\]\) are not used/],
    ["id = \"a\"\n[[nodes]]", 2, /tables \(\[\[nodes\]\]\) are not used/],
    ["node.id = \"a\"", 1, /dotted keys/],
    ["id = [\"a\"]", 1, /arrays are not used/],
    ["id = { a = 1 }", 1, /inline tables are not used/],
    ["id = 1.5", 1, /\(1\.5\) is not one tidemark reads.*put text in quotes/],
    ["id = 1979-05-27", 1, /a date.*is not one tidemark reads/],
    ["id = site-a", 1, /not valid TOML.*put text in quotes, e\.g\. id = "site-a"/],
    ["id = 01", 1, /not valid TOML \(illegal leading zero\)/],
    ["id = 99999999999999999999", 1, /too large/],
    ["id = \"a", 1, /not valid TOML \(unfinished string\)/],
    ["id = 'a", 1, /unfinished string/],
    ["id = \"a\\q\"", 1, /escape/],
    ["id = \"\\uD800\"", 1, /escape/],
    ["id = \"a\u0001\"", 1, /control character/],
    ["id =", 1, /not valid TOML/],
    ["id \"a\"", 1, /not valid TOML/],
    ["= \"a\"", 1, /not valid TOML/],
    ["id = \"a\" \"b\"", 1, /not valid TOML.*end-of-line/],
    ["id = \"a\"\nid = \"b\"", 2, /'id' is set twice \(also on line 1\); keep one/],
  ];
  for (const [text, line, pattern] of cases) {
    assert.throws(() => parseConfigToml(text), (error: unknown) => {
      assert.ok(error instanceof ConfigSyntaxError, `${JSON.stringify(text)}: ${String(error)}`);
      assert.equal(error.line, line, JSON.stringify(text));
      assert.match(error.message, pattern, JSON.stringify(text));
      return true;
    });
  }
});

void test("readNodeConfig: unknown keys named with the nearest known key, wrong types, unreadable files: one UsageError line with the file and line", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-config-"));
  try {
    const cases: Array<[string, string, RegExp]> = [
      ["a.toml", "id = \"a\"\ncolour = \"red\"\n", /a\.toml:2: unknown key 'colour'; the keys are id, data, mgmt, nbd, host-port, repl, repl-advertise, write-time, max-clock-skew, log-level, insecure-mgmt$/],
      ["b.toml", "host_port = \"127.0.0.1:1\"\n", /b\.toml:1: unknown key 'host_port' \(did you mean 'host-port'\?\)/],
      ["c.toml", "log-levle = \"debug\"\n", /unknown key 'log-levle' \(did you mean 'log-level'\?\)/],
      ["d.toml", "\nmgmt = 7480\n", /d\.toml:2: mgmt must be a string in quotes, e\.g\. mgmt = "\.\.\."/],
      ["e.toml", "insecure-mgmt = \"yes\"\n", /e\.toml:1: insecure-mgmt must be true or false/],
      ["f.toml", "[node]\n", /f\.toml:1: tables \(\[node\]\) are not used/],
      ["g.json", "{}", /--config .*g\.json: tidemark reads its config as TOML or YAML \(\.yaml, \.yml\), not JSON/],
      ["i.yaml", "id: a\ncolour: red\n", /i\.yaml:2: unknown key 'colour'/],
      ["j.yml", "node:\n  id: a\n", /j\.yml:1: nested mappings are not used/],
      ["k.yaml", "id: a\nid: b\n", /k\.yaml:2: a key is set twice; keep one/],
      ["l.yaml", "id: a\nmgmt: [1, 2]\n", /l\.yaml:2: lists are not used/],
      ["m.yaml", "id: a\nmax-clock-skew: 2.5\n", /m\.yaml:2: the value of 'max-clock-skew' \(2\.5\) is not one tidemark reads.*put text in quotes/],
      ["n.yaml", "id: a\ndata:\n", /n\.yaml:2: 'data' has no value/],
      ["o.yaml", "- id\n", /o\.yaml:1: the file must be a mapping of settings/],
      ["p.yaml", "id: &x a\nnbd: *x\n", /p\.yaml:1: anchors and aliases are not used/],
      ["q.yaml", "id: a\n---\nid: b\n", /q\.yaml:2: several YAML documents/],
      ["r.yaml", "id: \"a\n", /r\.yaml:\d: not valid YAML \(Missing closing "quote\)/],
      ["h.toml", "\u00ff", /unknown|expected key/],
    ];
    for (const [name, text, pattern] of cases) {
      const file = path.join(dir, name);
      await writeFile(file, name === "h.toml" ? Buffer.from([0xff, 0xfe]) : text);
      assert.throws(() => readNodeConfig(file), (error: unknown) => {
        assert.ok(error instanceof UsageError, `${name}: ${String(error)}`);
        assert.equal(error.exitCode, 2);
        assert.doesNotMatch(error.message, /\n/, "one line");
        assert.match(error.message, name === "h.toml" ? /is not UTF-8 text/ : pattern, name);
        return true;
      });
    }
    assert.throws(() => readNodeConfig(path.join(dir, "missing.toml")), /cannot read it \(no such file, ENOENT\); give the path of the node's config file/);
    assert.throws(() => readNodeConfig(dir), /cannot read it \(it is a directory, EISDIR\)/);
    const big = path.join(dir, "big.toml");
    await writeFile(big, "# x\n".repeat(20_000));
    assert.throws(() => readNodeConfig(big), /is 80000 bytes, more than a config file's 65536/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("a YAML config (.yaml, .yml) means what the same TOML means; YAML 1.2's yes is text, not true", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-config-"));
  try {
    const toml = path.join(dir, "node.toml");
    const yaml = path.join(dir, "node.yaml");
    await writeFile(toml, 'id = "a"\ndata = "/srv/tm"\nmgmt = "127.0.0.1:7480"\ninsecure-mgmt = false\nlog-level = "debug"\n');
    await writeFile(yaml, "# the same settings\nid: a\ndata: /srv/tm\nmgmt: \"127.0.0.1:7480\"\ninsecure-mgmt: false\nlog-level: debug\n");
    assert.deepEqual(readNodeConfig(yaml).values, readNodeConfig(toml).values);
    assert.equal(readNodeConfig(yaml).lines.get("mgmt"), 4, "lines for messages");
    await writeFile(yaml, "id: a\ninsecure-mgmt: yes\n");
    assert.throws(() => readNodeConfig(yaml), /node\.yaml:2: insecure-mgmt must be true or false, e\.g\. insecure-mgmt: true$/);
    await writeFile(yaml, "id: a\nmgmt: 7480\n");
    assert.throws(() => readNodeConfig(yaml), /node\.yaml:2: mgmt must be text, e\.g\. mgmt: "\.\.\."$/, "the example in YAML's syntax, not TOML's");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("the example config in contrib/ reads without error, sets every key but insecure-mgmt, repl-advertise and max-clock-skew (commented out), and names them all", () => {
  const config = readNodeConfig(exampleConfig);
  assert.deepEqual(Object.keys(config.values).sort(), nodeConfigKeys.filter((key) => key !== "insecure-mgmt" && key !== "repl-advertise" && key !== "max-clock-skew").sort());
  assert.equal(config.values.data, "/var/lib/tidemark");
  assert.equal(config.values.mgmt, "127.0.0.1:7480", "the example keeps the management API on loopback");
  assert.equal(config.values["log-level"], "info");
  const text = readFileSync(exampleConfig, "utf8");
  for (const key of nodeConfigKeys) assert.match(text, new RegExp(`^(# )?${key} = `, "m"), `the example shows ${key}`);
  // Its YAML form says the same.
  const yamlExample = fileURLToPath(new URL("../../contrib/tidemark.yaml", import.meta.url));
  assert.deepEqual(readNodeConfig(yamlExample).values, config.values);
  const yamlText = readFileSync(yamlExample, "utf8");
  for (const key of nodeConfigKeys) assert.match(yamlText, new RegExp(`^(# )?${key}: `, "m"), `the YAML example shows ${key}`);
});

void test("log levels: pino's names, any case; anything else is one line naming where it came from", () => {
  assert.equal(checkLogLevel("debug", "--log-level"), "debug");
  assert.equal(checkLogLevel(" WARN ", "--log-level"), "warn");
  assert.throws(() => checkLogLevel("loud", "TIDEMARK_LOG_LEVEL"), /^UsageError: TIDEMARK_LOG_LEVEL "loud" is not a log level; use one of trace, debug, info, warn, error, fatal$/);
  assert.throws(() => checkLogLevel("silent", "--log-level"), /is not a log level/);
});
