#!/usr/bin/env node
// Entry point for `npx tidemark`: runs the TypeScript CLI directly (Node 26 strips types).
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
await import("../src/cli/main.ts");
