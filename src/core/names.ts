// Volume and group names: they become NBD export names, file names and log fields, so
// they are a conservative ASCII subset. One rule, shared by the CLI, the API and the node.
import { ControlError } from "./errors.ts";
import { nameLengthMax } from "./limits.ts";

export const namePattern = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${nameLengthMax - 1}}$`);

/** Why `name` is not a valid name, or null when it is. `kind` is "volume", "group", ... */
export function nameProblem(kind: string, name: string): string | null {
  if (name.length === 0) return `${kind} name is empty`;
  if (name.length > nameLengthMax) return `${kind} name is longer than ${nameLengthMax} characters`;
  if (!namePattern.test(name)) {
    // JSON quoting keeps a name with control characters on one line.
    return `${kind} name ${JSON.stringify(name)} may only hold letters, digits, '.', '_' and '-', and must start with a letter or digit`;
  }
  return null;
}

/** Throws ControlError (TM_ERR_INVALID) saying why `name` is not a valid `kind` name. */
export function validateName(kind: string, name: string): void {
  const problem = nameProblem(kind, name);
  if (problem !== null) throw new ControlError("TM_ERR_INVALID", problem);
}
