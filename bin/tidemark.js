#!/usr/bin/env node
// Entry point for `npx tidemark`. In a checkout it runs the TypeScript sources directly (Node 26,
// the project's own, strips the types); in the installed npm package, which carries no src/, it
// runs dist/, the JavaScript `npm pack` compiled (scripts/build-dist.ts). This file is plain
// JavaScript that any Node since 16 parses: on a Node too old for what comes next it prints one
// line saying which Node to use, not a stack trace (docs/operations.md, "Which Node").
import { existsSync } from "node:fs";

const sourceEntry = new URL("../src/cli/main.ts", import.meta.url);
const packageEntry = new URL("../dist/cli/main.js", import.meta.url);
const fromSource = existsSync(sourceEntry);
// A checkout runs on the Node the project brings (devDependency "node", node_modules/.bin/node,
// what `npx` and the npm scripts use). The package's JavaScript runs on package.json "engines".
const checkoutNodeMajorMin = 26;
const packageNodeMin = [22, 12];
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
if (fromSource && major < checkoutNodeMajorMin) {
  process.stderr.write(`tidemark: this checkout runs on the Node.js the project brings (${checkoutNodeMajorMin} or newer), not on this Node ${process.versions.node}: ` +
    "after `npm ci`, run `npx tidemark ...` or `node_modules/.bin/node bin/tidemark.js ...`\n");
  process.exit(1);
}
if (!fromSource && (major < packageNodeMin[0] || (major === packageNodeMin[0] && minor < packageNodeMin[1]))) {
  process.stderr.write(`tidemark: needs Node.js ${packageNodeMin.join(".")} or newer, and this is Node ${process.versions.node}: ` +
    "install a current Node.js (https://nodejs.org, or the `node` package from npm) and run tidemark with it\n");
  process.exit(1);
}
if (!fromSource && !existsSync(packageEntry)) {
  process.stderr.write("tidemark: this copy has neither src/ nor dist/: reinstall the package, or build dist/ with `node scripts/build-dist.ts` in a checkout\n");
  process.exit(1);
}
// The libuv thread pool serves file I/O (journal writev, fdatasync, large reads and writes);
// its default of 4 threads lets one slow fdatasync hold up the rest, so it is widened before
// anything uses it.
process.env.UV_THREADPOOL_SIZE ??= "16";
// `tidemark node` is a long-running server: V8's young generation grows once, under the first
// burst of allocation (connection churn), to 3 x 16 MiB and never shrinks on an idle node. A
// smaller ceiling keeps memory after churn near where it started (issue 6, kind 8) at no cost
// to the data path, whose buffers are pooled (docs/nbd.md). The flag must be given when the
// process starts, so the node re-executes itself with it (same pid, same arguments).
const semiSpaceFlag = "--max-semi-space-size=8";
if (process.argv[2] === "node" && !process.execArgv.some((arg) => arg.startsWith("--max-semi-space-size")) && typeof process.execve === "function") {
  process.execve(process.execPath, [process.execPath, semiSpaceFlag, ...process.execArgv, ...process.argv.slice(1)], process.env);
}
await import(fromSource ? sourceEntry.href : packageEntry.href);
