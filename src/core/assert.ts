// Assertions stay on in production: a broken invariant stops the node loudly
// instead of letting it corrupt a volume or a replica (STYLE.md, TigerBeetle).

export class InvariantError extends Error {
  override name = "InvariantError";
}

/**
 * A message that needs formatting is passed as a function: hot paths then pay for the
 * string only when the invariant is broken.
 */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new InvariantError(`invariant violated: ${typeof message === "string" ? message : message()}`);
}

export function unreachable(value: never, what = "value"): never {
  throw new InvariantError(`unreachable: unexpected ${what} ${JSON.stringify(value)}`);
}
