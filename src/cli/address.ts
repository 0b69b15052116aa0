import { UsageError } from "./errors.ts";
// HOST:PORT arguments of `tidemark node`, checked with a message that says what to type.
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export function parseListenAddress(flag: string, text: string): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const host = match?.[1] ?? match?.[2];
  const port = match?.[3] === undefined ? Number.NaN : Number.parseInt(match[3], 10);
  if (host === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`${flag} "${text}" is not HOST:PORT (for example 127.0.0.1:7480; port 0 picks a free one)`);
  }
  return { host, port };
}
