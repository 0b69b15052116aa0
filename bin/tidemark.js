#!/usr/bin/env node
// Entry point for `npx tidemark`: runs the TypeScript CLI directly (Node 26 strips types).
// The libuv thread pool serves file I/O (journal writev, fdatasync, large reads and writes);
// its default of 4 threads lets one slow fdatasync hold up the rest, so it is widened before
// anything uses it.
process.env.UV_THREADPOOL_SIZE ??= "16";
await import("../src/cli/main.ts");
