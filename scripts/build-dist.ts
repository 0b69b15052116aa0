// Builds dist/, the JavaScript the npm package runs (`npm pack` runs this as `prepack`):
// src/**/*.ts compiled by tsc with tsconfig.build.json (relative `.ts` imports become `.js`,
// declarations beside them for `import { HostClient } from "tidemark"` in TypeScript), and every
// file of src/ that is not TypeScript copied as it is (assets a module reads beside itself).
// The checkout itself never uses dist/: it runs src/ with Node's type stripping (bin/tidemark.js).
// tsconfig.build.json emits without type checking (`noCheck`, twice as fast): `npm test` and
// `npm publish` (prepublishOnly) run the type check. Run: node scripts/build-dist.ts
import { spawnSync } from "node:child_process";
import { cpSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const srcDir = path.join(root, "src");
const distDir = path.join(root, "dist");
const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc");

rmSync(distDir, { recursive: true, force: true });
const compiled = spawnSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.build.json")], { cwd: root, stdio: "inherit" });
if (compiled.status !== 0) {
  process.stderr.write(`build-dist: tsc failed (exit ${String(compiled.status)}); dist/ is incomplete\n`);
  process.exit(1);
}
let assets = 0;
for (const entry of readdirSync(srcDir, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || entry.name.endsWith(".ts")) continue;
  const from = path.join(entry.parentPath, entry.name);
  cpSync(from, path.join(distDir, path.relative(srcDir, from)));
  assets += 1;
}
process.stderr.write(`build-dist: dist/ built from src/ (${String(assets)} non-TypeScript file(s) copied)\n`);
