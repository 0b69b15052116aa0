// The log line a lifecycle machine asks its shell to write (core/primary-pair.ts,
// core/secondary-group-machine.ts): one shape for every machine, so a shell logs them all the
// same way (pino: level, `event`, the fields, then the message).

export interface LogEffect {
  readonly type: "log";
  readonly level: "info" | "warn" | "error";
  readonly event: string;
  readonly fields: Readonly<Record<string, string | number | boolean | null>>;
  readonly message: string;
}

/** A LogEffect. */
export function log(level: LogEffect["level"], event: string, fields: LogEffect["fields"], message: string): LogEffect {
  return { type: "log", level, event, fields, message };
}
