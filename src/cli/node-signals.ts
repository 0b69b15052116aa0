// What `tidemark node` does on each signal (docs/cli.md, "Signals"). A signal whose default
// action ends the process would otherwise kill the node silently: no log line, no clean stop
// (journals recover, but the operator learns nothing). So every such signal Node lets a
// program catch is either a clean stop with a log line naming it, or ignored with a log line;
// only those that report a crash of the process itself keep their default (a core dump).
import { performance } from "node:perf_hooks";

/** Stop cleanly, as on SIGTERM: a terminal closed, quit, a timer or CPU limit hit, a power failure announced. */
export const stopSignals = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGVTALRM", "SIGXCPU", "SIGPWR"] as const satisfies readonly NodeJS.Signals[];

/**
 * Logged and ignored: no meaning for a storage node (SIGUSR2, SIGIO, SIGSTKFLT), or sent by a
 * profiler (SIGPROF). SIGPIPE and SIGXFSZ Node already ignores (the write fails instead).
 */
export const ignoredSignals = ["SIGUSR2", "SIGIO", "SIGSTKFLT", "SIGPROF"] as const satisfies readonly NodeJS.Signals[];

/**
 * Left to their default, with the reason: uncatchable (SIGKILL: the crash the journal is for;
 * SIGSTOP), Node's own (SIGUSR1 opens the inspector), or a crash of the process itself whose
 * core file is what is needed (Node cannot safely run JavaScript after a real SIGSEGV, SIGBUS,
 * SIGFPE or SIGILL; SIGABRT is abort(); SIGTRAP a debugger's; SIGSYS a forbidden system call).
 */
export const defaultSignals = ["SIGKILL", "SIGSTOP", "SIGUSR1", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGIOT", "SIGTRAP", "SIGSYS"] as const satisfies readonly NodeJS.Signals[];

/** An ignored signal is logged at most once per this interval (monotonic), with the count of those not logged. */
export const ignoredSignalLogIntervalMs = 10_000;

interface SignalLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Installs the handlers: `stop(signal)` for a stop signal (it logs and stops once), a log line for an ignored one. */
export function installNodeSignals(logger: SignalLog, stop: (signal: NodeJS.Signals) => void): void {
  for (const signal of stopSignals) process.on(signal, () => stop(signal));
  const stopNames = stopSignals.join(", ");
  const lastLogMs = new Map<NodeJS.Signals, number>();
  const notLogged = new Map<NodeJS.Signals, number>();
  for (const signal of ignoredSignals) {
    process.on(signal, () => {
      const nowMs = performance.now();
      const lastMs = lastLogMs.get(signal);
      if (lastMs !== undefined && nowMs - lastMs < ignoredSignalLogIntervalMs) {
        notLogged.set(signal, (notLogged.get(signal) ?? 0) + 1);
        return;
      }
      lastLogMs.set(signal, nowMs);
      const alsoIgnored = notLogged.get(signal) ?? 0;
      notLogged.delete(signal);
      logger.warn({ event: "signal_ignored", signal, alsoIgnored }, `${signal} ignored: the node goes on (it stops cleanly on ${stopNames})`);
    });
  }
}
