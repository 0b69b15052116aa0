// What the CLI reports when it fails: one line on stderr and an exit status.
// 0 ok, 1 the operation failed (node unreachable, API error), 2 the command line was wrong.

export const exitOk = 0;
export const exitFailed = 1;
export const exitUsage = 2;

export class CliError extends Error {
  override name = "CliError";
  readonly exitCode: number;
  constructor(exitCode: number, message: string) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** The command line was wrong: say what and what to type instead. Exit 2. */
export class UsageError extends CliError {
  override name = "UsageError";
  constructor(message: string) {
    super(exitUsage, message);
  }
}

/** The operation was attempted and failed. Exit 1. */
export class OperationError extends CliError {
  override name = "OperationError";
  constructor(message: string) {
    super(exitFailed, message);
  }
}

/** Collapse any text to one printable line (a message from a server may hold anything). */
export function oneLine(text: string, lengthMax = 1000): string {
  // eslint-disable-next-line no-control-regex
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, " ").replace(/\s+/g, " ").trim();
  return flat.length > lengthMax ? `${flat.slice(0, lengthMax - 1)}…` : flat;
}
