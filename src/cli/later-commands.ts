// Commands CONTRACT.md marks *(later)*: consistency points, snapshots and recover. Until a
// later issue builds them each answers with one line saying it is not available yet (exit 2),
// whatever its arguments; they are left out of --help so that nothing offers them before
// they work.
import type { Command } from "commander";
import { withMgmtOptions } from "./command-kit.ts";
import { UsageError } from "./errors.ts";

/** One line: what is asked for is not in this version, and what is. */
export function notAvailableYet(what: string): UsageError {
  return new UsageError(`${what} is not available yet: consistency points, snapshots and recover come with a later version of tidemark (see \`tidemark --help\` for what this one does)`);
}

function later(parent: Command, name: string, what: string): Command {
  // --node and --json as on every management command (given before the subcommand too).
  return withMgmtOptions(parent.command(name, { hidden: true }))
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .helpOption(false)
    .action(() => {
      throw notAvailableYet(what);
    });
}

/** Registers consistency-point, snapshot (list, export, clone, delete) and recover as not available yet. */
export function registerLaterCommands(program: Command): void {
  later(program, "consistency-point", "`tidemark consistency-point`");
  later(program, "recover", "`tidemark recover`");
  const snapshot = withMgmtOptions(program.command("snapshot", { hidden: true })).helpOption(false).allowUnknownOption(true).allowExcessArguments(true).action(() => {
    throw notAvailableYet("`tidemark snapshot`");
  });
  for (const sub of ["list", "export", "clone", "delete"]) later(snapshot, sub, `\`tidemark snapshot ${sub}\``);
}
