// `tidemark node`: runs one storage system in the foreground (CONTRACT.md, "The node").
// Its settings come from the flags, from `--config FILE` (node-config.ts) for the flags not
// given, and from the defaults for the rest; each is checked the same way wherever it came from,
// and a bad one is one line naming the flag or the file and line (exit 2).
import { NodeStartError } from "../core/errors.ts";
import type { Command } from "commander";
import { writeTimePolicies, type WriteTimePolicy } from "../core/types.ts";
import { checkDistinctListeners, checkMgmtExposure, parseListenAddress, type ListenAddress } from "./address.ts";
import { OperationError, UsageError } from "./errors.ts";
import { checkLogLevel, configLabel, configPath, logLevels, readNodeConfig, type NodeConfig, type NodeConfigKey } from "./node-config.ts";
import { installNodeSignals } from "./node-signals.ts";
import { resolve } from "node:path";
import { parseDuration } from "./durations.ts";
import { maxClockSkewMsMax } from "../core/limits.ts";

interface NodeFlags {
  id?: string;
  data?: string;
  mgmt: string;
  nbd: string;
  hostPort: string;
  repl: string;
  replAdvertise?: string;
  writeTime: string;
  maxClockSkew?: string;
  config?: string;
  logLevel?: string;
  truncateDamagedJournals?: boolean;
  insecureMgmt?: boolean;
}

/** A clean stop that takes longer than this is abandoned (the journal makes that safe). */
const stopTimeoutMs = 30_000;

export function registerNodeCommand(program: Command): void {
  program
    .command("node")
    .description("run a tidemark node (storage system) in the foreground until SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGALRM (clean stop)")
    .option("--id <ID>", "storage-system id of this node (kept in the data directory); required, here or in --config")
    .option("--data <DIR>", "data directory (volumes, journals, metadata); required, here or in --config")
    .option("--mgmt <HOST:PORT>", "management HTTP API", "127.0.0.1:7480")
    .option("--nbd <HOST:PORT>", "NBD server for hosts without write times", "127.0.0.1:10809")
    .option("--host-port <HOST:PORT>", "timestamped host protocol", "127.0.0.1:7410")
    .option("--repl <HOST:PORT>", "replication listener", "127.0.0.1:7400")
    .option("--repl-advertise <HOST:PORT>", "address primaries should connect to for replication (behind NAT or a proxy); default: the --repl address")
    .option("--write-time <POLICY>", `write-time policy: ${writeTimePolicies.join("|")}`, "host")
    .option("--max-clock-skew <DURATION>", `the most this node's clock may differ from the other primaries' of a named consistency domain (e.g. 5ms, at most ${maxClockSkewMsMax} ms); host writes are answered only after waiting it out (commit wait)`)
    .option("--config <FILE>", "read these settings from a TOML file, or YAML when it is named .yaml or .yml (keys: the flags without --, e.g. host-port = \"0.0.0.0:7410\"); flags given here override it")
    .option("--log-level <LEVEL>", `${logLevels.join("|")} (default: $TIDEMARK_LOG_LEVEL, else the --config file's, else info)`)
    .option("--insecure-mgmt", "let the management API (no authentication yet) listen on a non-loopback --mgmt address")
    .option("--truncate-damaged-journals", "after a power loss: cut a journal at damaged bytes even when whole records follow (they are dropped); only when start-up says so")
    .action(async (_flags: NodeFlags, command: Command) => {
      await runNode(command);
    });
}

/** The options of runNode() once flags, file and defaults are merged and checked. */
interface NodeSettings {
  readonly id: string;
  readonly dataDir: string;
  readonly mgmt: ListenAddress;
  readonly nbd: ListenAddress;
  readonly host: ListenAddress;
  readonly repl: ListenAddress;
  readonly replAdvertise: ListenAddress | undefined;
  readonly writeTimePolicy: WriteTimePolicy;
  /** `--max-clock-skew` in ms; undefined: none (no commit wait). */
  readonly maxClockSkewMs: number | undefined;
  readonly truncateDamagedJournals: boolean;
  readonly logLevel: string;
}

/** A setting's text and how a message names its origin: "--mgmt" or "/etc/tidemark/node.toml:3: mgmt". */
interface Given<T> {
  readonly value: T;
  readonly label: string;
  readonly fromFile: boolean;
}

/**
 * Flags, then the config file, then commander's default. `option` is commander's name for the
 * flag (hostPort), `flag` how it is typed (--host-port), `key` the file's key (host-port).
 */
function pick<T extends string | boolean>(command: Command, config: NodeConfig | null, option: keyof NodeFlags, flag: string, key: NodeConfigKey): Given<T> | undefined {
  const flagValue = command.getOptionValue(option) as T | undefined;
  if (command.getOptionValueSource(option) === "cli" && flagValue !== undefined) return { value: flagValue, label: flag, fromFile: false };
  const fileValue = config?.values[key] as T | undefined;
  if (config !== null && fileValue !== undefined) return { value: fileValue, label: configLabel(config, key), fromFile: true };
  return flagValue === undefined ? undefined : { value: flagValue, label: flag, fromFile: false };
}

function required(given: Given<string> | undefined, flag: string, key: string, example: string): Given<string> {
  if (given === undefined) throw new UsageError(`\`tidemark node\` needs ${flag} (e.g. ${flag} ${example}), or ${key} = "${example}" in the --config file; see \`tidemark node --help\``);
  if (given.value.trim() === "") throw new UsageError(`${given.label} is empty; give it a value, e.g. ${given.fromFile ? `${key} = "${example}"` : `${flag} ${example}`}`);
  return given;
}

/** Merges and checks the node's settings. Errors: UsageError (exit 2) naming the flag or the file and line. */
export function nodeSettings(command: Command, env: NodeJS.ProcessEnv = process.env): NodeSettings {
  const flags = command.opts<NodeFlags>();
  const config = flags.config === undefined ? null : readNodeConfig(flags.config);
  const take = <T extends string | boolean>(option: keyof NodeFlags, flag: string, key: NodeConfigKey): Given<T> | undefined => pick<T>(command, config, option, flag, key);
  const idGiven = required(take<string>("id", "--id", "id"), "--id", "id", "site-a");
  const dataGiven = required(take<string>("data", "--data", "data"), "--data", "data", "/var/lib/tidemark");
  const writeTime = take<string>("writeTime", "--write-time", "write-time") ?? { value: "host", label: "--write-time", fromFile: false };
  if (!writeTimePolicies.includes(writeTime.value as WriteTimePolicy)) {
    throw new UsageError(`${writeTime.label} "${writeTime.value}" is not one of ${writeTimePolicies.join(", ")}`);
  }
  const skewGiven = take<string>("maxClockSkew", "--max-clock-skew", "max-clock-skew");
  let maxClockSkewMs: number | undefined;
  if (skewGiven !== undefined) {
    const parsed = parseDuration(skewGiven.value);
    if (!parsed.ok) throw new UsageError(`${skewGiven.label}: ${parsed.reason}`);
    if (parsed.ms <= 0 || parsed.ms > maxClockSkewMsMax) throw new UsageError(`${skewGiven.label} "${skewGiven.value}" must be more than 0 and at most ${maxClockSkewMsMax} ms (every host write's answer waits it out)`);
    if (writeTime.value === "counter") throw new UsageError(`${skewGiven.label} needs --write-time clock or host: counter write times are no time, and a clock skew says nothing of them`);
    maxClockSkewMs = parsed.ms;
  }
  const id = idGiven.value.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id)) {
    throw new UsageError(`${idGiven.label} "${idGiven.value}" is not valid: use 1-64 letters, digits, '.', '_' or '-'`);
  }
  const address = (option: keyof NodeFlags, flag: string, key: NodeConfigKey): { address: ListenAddress; label: string } | undefined => {
    const given = take<string>(option, flag, key);
    return given === undefined ? undefined : { address: parseListenAddress(given.label, given.value), label: given.label };
  };
  const mgmt = address("mgmt", "--mgmt", "mgmt");
  const nbd = address("nbd", "--nbd", "nbd");
  const host = address("hostPort", "--host-port", "host-port");
  const repl = address("repl", "--repl", "repl");
  if (mgmt === undefined || nbd === undefined || host === undefined || repl === undefined) throw new Error("listener options have defaults");
  const replAdvertise = address("replAdvertise", "--repl-advertise", "repl-advertise");
  const insecure = take<boolean>("insecureMgmt", "--insecure-mgmt", "insecure-mgmt");
  checkMgmtExposure(mgmt.address, insecure?.value === true, mgmt.label);
  checkDistinctListeners([[mgmt.label, mgmt.address], [nbd.label, nbd.address], [host.label, host.address], [repl.label, repl.address]]);
  const envLevel = env.TIDEMARK_LOG_LEVEL;
  const levelGiven = command.getOptionValueSource("logLevel") === "cli" && flags.logLevel !== undefined ? { value: flags.logLevel, label: "--log-level" }
    : envLevel !== undefined && envLevel !== "" ? { value: envLevel, label: "TIDEMARK_LOG_LEVEL" }
      : config?.values["log-level"] !== undefined ? { value: config.values["log-level"], label: configLabel(config, "log-level") }
        : { value: "info", label: "--log-level" };
  return {
    id,
    dataDir: dataGiven.fromFile && config !== null ? configPath(config, dataGiven.value) : resolve(dataGiven.value),
    mgmt: mgmt.address,
    nbd: nbd.address,
    host: host.address,
    repl: repl.address,
    replAdvertise: replAdvertise?.address,
    writeTimePolicy: writeTime.value as WriteTimePolicy,
    maxClockSkewMs,
    truncateDamagedJournals: flags.truncateDamagedJournals === true,
    logLevel: checkLogLevel(levelGiven.value, levelGiven.label),
  };
}

async function runNode(command: Command): Promise<void> {
  const { logLevel, ...options } = nodeSettings(command);
  const id = options.id;
  // Loaded here, not at the top: every other command (`tidemark status`, ...) would otherwise
  // pay ~0.4 s to load the node (fastify, storage, protocols) on each run.
  const { createNodeLogger } = await import("../node/logger.ts");
  const { TidemarkNode } = await import("../node/node.ts");
  const logger = createNodeLogger(id, logLevel);
  const node = new TidemarkNode({ ...options, logger });
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.info({ event: "signal", signal }, `${signal} while stopping: the clean stop goes on`);
      return;
    }
    stopping = true;
    logger.info({ event: "signal", signal }, `stopping on ${signal} (clean stop)`);
    const timer = setTimeout(() => {
      logger.error({ event: "stop_timeout", timeoutMs: stopTimeoutMs }, "clean stop took too long; exiting (the journal recovers on restart)");
      process.exit(1);
    }, stopTimeoutMs);
    timer.unref();
    node.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ event: "stop_failed", err: error }, "clean stop failed");
        process.exit(1);
      },
    );
  };
  // Never a silent exit (Node's default for most signals): SIGTERM, SIGINT, SIGHUP (the
  // terminal was closed), SIGQUIT, SIGALRM, ... stop cleanly; SIGUSR2 and the like are logged
  // and ignored (node-signals.ts, docs/cli.md "Signals").
  installNodeSignals(logger, stop);
  process.on("uncaughtException", (error) => {
    // An assertion or an unexpected bug: stop loudly rather than serve possibly wrong data.
    logger.fatal({ event: "fatal", err: error }, "fatal error; node stops");
    process.exit(70);
  });
  try {
    await node.start();
  } catch (error) {
    // The operator's to fix, and the message says how: no stack trace, one line from the CLI.
    if (error instanceof NodeStartError) logger.fatal({ event: "start_failed", code: error.code, errno: error.errno }, error.message);
    else logger.fatal({ event: "start_failed", err: error }, (error as Error).message);
    await node.stop().catch(() => undefined);
    throw error instanceof NodeStartError ? new OperationError(error.message) : error;
  }
}
