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

/** HOST:PORT as an operator types it back: an IPv6 host in brackets ([::]:7480, not :::7480). */
export function formatListenAddress(address: ListenAddress): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Whether `host` is this machine only: "localhost", 127.0.0.0/8 or ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase();
  return h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * The management API has no authentication yet (CONTRACT.md): it listens on a non-loopback
 * address only when the operator says so with --insecure-mgmt. Errors: UsageError.
 */
export function checkMgmtExposure(address: ListenAddress, insecureMgmt: boolean, label = "--mgmt"): void {
  if (insecureMgmt || isLoopbackHost(address.host)) return;
  throw new UsageError(`${label} ${formatListenAddress(address)} would let anyone who can reach it create, pair, take over and empty volumes: ` +
    "the management API has no authentication yet, so it listens only on a loopback address (127.0.0.1, ::1, localhost) unless you add --insecure-mgmt " +
    "(or insecure-mgmt = true in the --config file; then keep the port behind a firewall or an authenticating proxy)");
}

/**
 * Two listeners of one node on the same HOST:PORT (port 0 picks a free one, so never the
 * same): refused before anything starts. Otherwise the second listen fails with EADDRINUSE
 * and the message blames "another process" while the other user is the node itself.
 * Errors: UsageError.
 */
export function checkDistinctListeners(listeners: readonly (readonly [flag: string, address: ListenAddress])[]): void {
  for (let i = 0; i < listeners.length; i += 1) {
    for (let j = i + 1; j < listeners.length; j += 1) {
      const [flagA, a] = listeners[i] ?? ["", { host: "", port: 0 }];
      const [flagB, b] = listeners[j] ?? ["", { host: "", port: 0 }];
      if (a.port !== 0 && a.port === b.port && (a.host === b.host || a.host === "0.0.0.0" || b.host === "0.0.0.0" || a.host === "::" || b.host === "::")) {
        throw new UsageError(`${flagA} and ${flagB} both listen on port ${a.port}${a.host === b.host ? ` of ${a.host}` : ""}: give each its own port`);
      }
    }
  }
}
