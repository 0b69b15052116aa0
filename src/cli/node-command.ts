// `tidemark node`: runs one storage system in the foreground (CONTRACT.md, "The node").
import { NodeStartError } from "../core/errors.ts";
import type { Command } from "commander";
import { writeTimePolicies, type WriteTimePolicy } from "../core/types.ts";
import { checkDistinctListeners, checkMgmtExposure, parseListenAddress } from "./address.ts";
import { OperationError, UsageError } from "./errors.ts";
import { installNodeSignals } from "./node-signals.ts";
import { resolve } from "node:path";

interface NodeFlags {
  id: string;
  data: string;
  mgmt: string;
  nbd: string;
  hostPort: string;
  repl: string;
  replAdvertise?: string;
  writeTime: string;
  truncateDamagedJournals?: boolean;
  insecureMgmt?: boolean;
}

/** A clean stop that takes longer than this is abandoned (the journal makes that safe). */
const stopTimeoutMs = 30_000;

export function registerNodeCommand(program: Command): void {
  program
    .command("node")
    .description("run a tidemark node (storage system) in the foreground until SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGALRM (clean stop)")
    .requiredOption("--id <ID>", "storage-system id of this node (kept in the data directory)")
    .requiredOption("--data <DIR>", "data directory (volumes, journals, metadata)")
    .option("--mgmt <HOST:PORT>", "management HTTP API", "127.0.0.1:7480")
    .option("--nbd <HOST:PORT>", "NBD server for hosts without write times", "127.0.0.1:10809")
    .option("--host-port <HOST:PORT>", "timestamped host protocol", "127.0.0.1:7410")
    .option("--repl <HOST:PORT>", "replication listener", "127.0.0.1:7400")
    .option("--repl-advertise <HOST:PORT>", "address primaries should connect to for replication (behind NAT or a proxy); default: the --repl address")
    .option("--write-time <POLICY>", `write-time policy: ${writeTimePolicies.join("|")}`, "host")
    .option("--insecure-mgmt", "let the management API (no authentication yet) listen on a non-loopback --mgmt address")
    .option("--truncate-damaged-journals", "after a power loss: cut a journal at damaged bytes even when whole records follow (they are dropped); only when start-up says so")
    .action(async (flags: NodeFlags) => {
      await runNode(flags);
    });
}

async function runNode(flags: NodeFlags): Promise<void> {
  if (!writeTimePolicies.includes(flags.writeTime as WriteTimePolicy)) {
    throw new UsageError(`--write-time "${flags.writeTime}" is not one of ${writeTimePolicies.join(", ")}`);
  }
  const id = flags.id.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id)) {
    throw new UsageError(`--id "${flags.id}" is not valid: use 1-64 letters, digits, '.', '_' or '-'`);
  }
  const options = {
    id,
    dataDir: resolve(flags.data),
    mgmt: parseListenAddress("--mgmt", flags.mgmt),
    nbd: parseListenAddress("--nbd", flags.nbd),
    host: parseListenAddress("--host-port", flags.hostPort),
    repl: parseListenAddress("--repl", flags.repl),
    replAdvertise: flags.replAdvertise === undefined ? undefined : parseListenAddress("--repl-advertise", flags.replAdvertise),
    writeTimePolicy: flags.writeTime as WriteTimePolicy,
    truncateDamagedJournals: flags.truncateDamagedJournals === true,
  };
  checkMgmtExposure(options.mgmt, flags.insecureMgmt === true);
  checkDistinctListeners([["--mgmt", options.mgmt], ["--nbd", options.nbd], ["--host-port", options.host], ["--repl", options.repl]]);
  // Loaded here, not at the top: every other command (`tidemark status`, ...) would otherwise
  // pay ~0.4 s to load the node (fastify, storage, protocols) on each run.
  const { createNodeLogger } = await import("../node/logger.ts");
  const { TidemarkNode } = await import("../node/node.ts");
  const logger = createNodeLogger(id);
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
