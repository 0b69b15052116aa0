// `tidemark demo` (also `npm start`), CONTRACT.md "The demonstration": a primary and a
// secondary node on loopback, two groups paired to the secondary, a bank whose credits
// (NBD, group accounts-b) depend on debits (host protocol with write times, group
// accounts-a), a SIGKILL of the primary mid-stream, takeover on the secondary (with --force:
// the dead primary cannot be fenced, so its site is declared lost), and the
// check that no credit reached the secondary without its debit. Exit 0 only if it held.
import type { Command } from "commander";
import { jsonFlag, type CliIo } from "./command-kit.ts";
import { UsageError } from "./errors.ts";

const secondsDefault = 8;
const secondsMax = 3600;
const tellersDefault = 16;
const tellersMax = 256;

interface DemoFlags {
  seconds: string;
  tellers: string;
  keep?: boolean;
}

export function registerDemoCommand(program: Command, io: CliIo): void {
  program
    .command("demo")
    .description("run a primary and a secondary on loopback, a bank workload across two groups, kill the primary, take over and check consistency")
    .option("--seconds <N>", "how long the bank runs before the primary is killed", String(secondsDefault))
    .option("--tellers <N>", "transfers in flight at once", String(tellersDefault))
    .option("--json", "print the report as JSON on stdout (the live view goes to stderr)")
    .option("--keep", "keep the temporary directory (data and node logs) at the end")
    .action(async (flags: DemoFlags, command: Command) => {
      const seconds = parseNumberFlag("--seconds", flags.seconds, 1, secondsMax, false);
      const tellers = parseNumberFlag("--tellers", flags.tellers, 1, tellersMax, true);
      // Loaded here: other commands should not pay for the node client, NBD client and workload.
      const { runDemo } = await import("./demo-run.ts");
      await runDemo({ seconds, tellers, json: jsonFlag(command), keep: flags.keep === true }, io);
    });
}

function parseNumberFlag(flag: string, text: string, min: number, max: number, whole: boolean): number {
  const value = Number(text.trim());
  if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max || (whole && !Number.isInteger(value))) {
    throw new UsageError(`${flag} ${JSON.stringify(text)} is not valid; use a ${whole ? "whole " : ""}number from ${min} to ${max}`);
  }
  return value;
}

