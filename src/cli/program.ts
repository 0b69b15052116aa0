// The `tidemark` command tree and how it fails: every error is one line on stderr starting
// with "tidemark: ", and the exit status says what kind (errors.ts). Commander's own errors
// (unknown command or option, missing argument) are reworded here into that one line.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { CliError, UsageError, exitFailed, exitOk, exitUsage, oneLine } from "./errors.ts";
import { commandPath, processIo, withMgmtOptions, type CliIo } from "./command-kit.ts";
import { registerDemoCommand } from "./demo-command.ts";
import { registerGroupCommands } from "./group-command.ts";
import { registerLaterCommands } from "./later-commands.ts";
import { registerNodeCommand } from "./node-command.ts";
import { registerPairCommands } from "./pair-command.ts";
import { registerStatusCommand } from "./status-command.ts";
import { registerVolumeCommands } from "./volume-command.ts";

function packageVersion(): string {
  try {
    const text = readFileSync(new URL("../../package.json", import.meta.url), "utf8");
    const parsed = JSON.parse(text) as { version?: unknown };
    return typeof parsed.version === "string" ? parsed.version : "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * The whole command tree, one register function per file. The commands CONTRACT.md marks
 * later (consistency-point, snapshot, recover) answer "not available yet" (later-commands.ts).
 */
export function buildProgram(io: CliIo): Command {
  const program = new Command("tidemark")
    .description("asynchronous remote copy for block volumes, dependent-write consistent")
    .version(packageVersion(), "-V, --version", "print the version");
  // --node and --json before the subcommand (`tidemark --node URL pair status`) as well as after it,
  // but only for a command that has them itself (not `tidemark --node URL node ...`).
  withMgmtOptions(program);
  program.hook("preAction", (_program, action) => {
    for (const name of ["node", "json"]) {
      if (program.getOptionValueSource(name) === "cli" && !action.options.some((option) => option.attributeName() === name)) {
        throw new UsageError(`--${name} is not an option of \`${commandPath(action)}\`${name === "node" && action.name() === "node" ? " (it listens on --mgmt HOST:PORT)" : ""}; see \`${commandPath(action)} --help\``);
      }
    }
  });
  registerNodeCommand(program);
  registerVolumeCommands(program, io);
  registerGroupCommands(program, io);
  registerStatusCommand(program, io);
  registerPairCommands(program, io);
  registerDemoCommand(program, io);
  registerLaterCommands(program);
  return program;
}

/** What commander tried to say, and from which command, so it can be said in one line. */
interface CommanderReport {
  command: Command;
  helpAsError: boolean;
}

function configureTree(command: Command, io: CliIo, report: { last: CommanderReport | null }): void {
  command
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      // Only help shown as an error (a missing subcommand) comes here; it becomes one line.
      writeErr: () => {
        report.last = { command, helpAsError: true };
      },
      outputError: () => {
        report.last = { command, helpAsError: false };
      },
    });
  for (const sub of command.commands) configureTree(sub, io, report);
}

/** The subcommands help shows (not those CONTRACT.md marks later: they are hidden). */
function subcommandNames(command: Command): string {
  return command.createHelp().visibleCommands(command).map((sub) => sub.name()).filter((name) => name !== "help").join(", ");
}

function commanderLine(error: CommanderError, report: CommanderReport | null): string {
  const where = report?.command;
  const path = where === undefined ? "tidemark" : commandPath(where);
  if (error.code === "commander.help" && where !== undefined) {
    const what = where.parent === null ? "a command" : "a subcommand";
    return `\`${path}\` needs ${what} (${subcommandNames(where)}); see \`${path} --help\``;
  }
  const message = oneLine(error.message.replace(/^error:\s*/, ""));
  return `${message}; see \`${path} --help\``;
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit status. */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const program = buildProgram(io);
  const report: { last: CommanderReport | null } = { last: null };
  configureTree(program, io, report);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return exitOk;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help, --version and `tidemark help [command]` printed on stdout and end here.
      if (error.exitCode === 0) return exitOk;
      io.stderr(`tidemark: ${commanderLine(error, report.last)}\n`);
      return exitUsage;
    }
    if (error instanceof CliError) {
      io.stderr(`tidemark: ${oneLine(error.message)}\n`);
      return error.exitCode;
    }
    const message = error instanceof Error ? error.message : String(error);
    io.stderr(`tidemark: ${oneLine(message)}\n`);
    return exitFailed;
  }
}
