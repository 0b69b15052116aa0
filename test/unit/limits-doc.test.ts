// Proves docs/limits.md is the limits the code has: the committed page equals what
// scripts/limits-doc.ts makes of src/core/limits.ts (regenerate it when a limit changes).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { limitsDoc } from "../../scripts/limits-doc.ts";

void test("docs/limits.md lists every limit and deadline of src/core/limits.ts with its value", () => {
  const committed = readFileSync(new URL("../../docs/limits.md", import.meta.url), "utf8");
  assert.equal(committed, limitsDoc(), "docs/limits.md is stale: run `node scripts/limits-doc.ts > docs/limits.md`");
});
