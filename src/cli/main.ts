// Entry point of the `tidemark` command line (bin/tidemark.js imports this file).
import { runCli } from "./program.ts";

// `tidemark status | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

// exitCode, not exit(): pending output is flushed, and `tidemark node` keeps running.
process.exitCode = await runCli(process.argv.slice(2));
