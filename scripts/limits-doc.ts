// Writes docs/limits.md from src/core/limits.ts: every named limit and deadline with its value
// and its doc comment, so the page cannot drift from the code (test/unit/limits-doc.test.ts
// checks that the committed page equals what this prints). Run: node scripts/limits-doc.ts > docs/limits.md
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as limits from "../src/core/limits.ts";

const sourcePath = fileURLToPath(new URL("../src/core/limits.ts", import.meta.url));

function formatValue(name: string, value: number): string {
  const KiB = 1024;
  if (/Ms(Max|Min|Default)?$/.test(name)) return value >= 1000 && value % 1000 === 0 ? `${String(value / 1000)} s` : `${String(value)} ms`;
  if (/UsMax$/.test(name)) return `${String(value / 1e6)} s`;
  if (/Bytes(Max|Min|Default|Limit)?$/.test(name) || name === "journalBytesLimit") {
    for (const [unit, size] of [["TiB", KiB ** 4], ["GiB", KiB ** 3], ["MiB", KiB ** 2], ["KiB", KiB]] as const) {
      if (value >= size && value % size === 0) return `${String(value / size)} ${unit}`;
    }
    return `${String(value)} B`;
  }
  return value.toLocaleString("en-US");
}

export function limitsDoc(): string {
  const source = readFileSync(sourcePath, "utf8");
  const rows: string[] = [];
  const pattern = /((?:\/\*\*[\s\S]*?\*\/\s*)?)export const (\w+)\b/g;
  for (let match = pattern.exec(source); match !== null; match = pattern.exec(source)) {
    const [, comment = "", name = ""] = match;
    const value = (limits as Record<string, unknown>)[name];
    if (typeof value !== "number") continue;
    const text = comment.trim().replace(/^\/\*\*|\*\/$/g, "").split("\n").map((line) => line.replace(/^\s*\*\s?/, "").trim()).join(" ").trim().replace(/\|/g, "\\|");
    rows.push(`| \`${name}\` | ${formatValue(name, value)} | ${text === "" ? "(with the one above)" : text} |`);
  }
  return [
    "# Limits and deadlines",
    "",
    "Every queue, buffer, frame, hold and connection count of a node has a limit, and every wait",
    "a deadline, each a named constant in `src/core/limits.ts`, where the relations between them",
    "are asserted when the module loads. This page is generated from that file",
    "(`node scripts/limits-doc.ts > docs/limits.md`; a unit test keeps the two equal). The rules",
    "behind them: docs/nbd.md (connections, handshakes), docs/host-protocol.md,",
    "docs/replication-protocol.md (liveness, windows, back-pressure), docs/journal.md (journal",
    "before volume, group commit), docs/out-of-space.md (stopped groups and the way back).",
    "",
    "| name | value | what it bounds |",
    "|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(limitsDoc());
