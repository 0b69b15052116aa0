// How a node asks another node's management API to act (today: a primary asks the secondary
// to make or check the pair's secondary group, POST /v1/pair-secondaries). HTTP in production;
// the simulation passes its own PeerClient. Failures become ControlError with a message
// that says what is wrong and what to check (docs/errors.md: TM_ERR_UNREACHABLE, ...).
import { ControlError } from "../core/errors.ts";
import { peerRequestTimeoutMs } from "../core/limits.ts";
import type { PairEndInfo, PairSecondaryCheckRequest, PairSecondaryEndRequest, PairSecondaryInfo, PairSecondaryRequest } from "../mgmt/control.ts";
import { apiErrorSchema, mgmtRoutes, routePath, type MgmtRoute, type RouteCall, type RouteResult } from "../mgmt/contract.ts";

export interface PeerClient {
  /** POST /v1/pair-secondaries on the node at `baseUrl`; ControlError (TM_ERR_UNREACHABLE, TM_ERR_CONFLICT, TM_ERR_INVALID, TM_ERR_DOMAIN_INCOMPARABLE) naming it on failure. */
  preparePairSecondary(baseUrl: string, request: PairSecondaryRequest): Promise<PairSecondaryInfo>;
  /** POST /v1/pair-secondaries/end on the node at `baseUrl` (`pair delete`); ControlError (TM_ERR_UNREACHABLE, TM_ERR_STATE, TM_ERR_INVALID) naming it on failure. */
  endPairSecondary(baseUrl: string, request: PairSecondaryEndRequest): Promise<PairEndInfo>;
  /** POST /v1/pair-secondaries/check on the node at `baseUrl` (`pair set`); ControlError (TM_ERR_UNREACHABLE, TM_ERR_CONFLICT) naming it on failure. */
  checkPairSecondary(baseUrl: string, request: PairSecondaryCheckRequest): Promise<PairSecondaryInfo>;
}

/** The management API over HTTP. */
export const httpPeerClient: PeerClient = {
  preparePairSecondary: (baseUrl, request) => callPeer(baseUrl, mgmtRoutes.preparePairSecondary, { body: request }),
  endPairSecondary: (baseUrl, request) => callPeer(baseUrl, mgmtRoutes.endPairSecondary, { body: request }),
  checkPairSecondary: (baseUrl, request) => callPeer(baseUrl, mgmtRoutes.checkPairSecondary, { body: request }),
};

/**
 * Calls a route of another node's management API (src/mgmt/contract.ts) and checks its answer
 * against the route's schema (a peer's answer is input, never an assertion); errors become
 * ControlErrors that say which node. Only JSON routes.
 */
export async function callPeer<R extends MgmtRoute>(baseUrl: string, route: R, input: RouteCall<R>): Promise<RouteResult<R>> {
  const path = routePath(route, input.params as Readonly<Record<string, unknown>> | undefined, input.query as Readonly<Record<string, unknown>> | undefined);
  if (!("safeParse" in route.answer)) throw new TypeError(`callPeer: ${route.method} ${route.path} does not answer JSON`);
  let response: Response;
  try {
    response = await fetch(new URL(path, baseUrl), {
      method: route.method,
      ...(input.body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(input.body) }),
      signal: AbortSignal.timeout(peerRequestTimeoutMs),
    });
  } catch (error) {
    throw new ControlError("TM_ERR_UNREACHABLE", peerUnreachable(baseUrl, error));
  }
  const text = await response.text().catch(() => "");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ControlError("TM_ERR_UNREACHABLE", `${baseUrl} answered HTTP ${response.status} with something that is not JSON: it is not a tidemark node's management API; give --to the secondary's management URL (its --mgmt address, http://HOST:PORT)`);
  }
  if (!response.ok) {
    const refusal = apiErrorSchema.safeParse(parsed);
    const error = refusal.success ? refusal.data.error : undefined;
    const message = error?.message ?? `HTTP ${response.status}`;
    // A refusal the operator acts on by its own code keeps it (a named domain whose write times are not comparable).
    const code = error?.code === "TM_ERR_DOMAIN_INCOMPARABLE" || error?.code === "TM_ERR_STATE" ? error.code : response.status === 409 ? "TM_ERR_CONFLICT" : response.status === 400 ? "TM_ERR_INVALID" : "TM_ERR_UNREACHABLE";
    throw new ControlError(code, `secondary ${baseUrl}: ${message}`);
  }
  const answer = route.answer.safeParse(parsed);
  if (!answer.success) {
    const issue = answer.error.issues[0];
    const where = issue === undefined ? "" : ` (${issue.path.join(".") || "body"}: ${issue.message})`;
    throw new ControlError("TM_ERR_UNREACHABLE", `${baseUrl} answered ${path} with an unexpected body${where}: is it a tidemark node of the same version? give --to the secondary's management URL`);
  }
  return answer.data as RouteResult<R>;
}

/**
 * Why the secondary's management API could not be reached from this node (the primary), and
 * what to check: one line for pair create. `error` is what fetch threw.
 */
export function peerUnreachable(baseUrl: string, error: unknown): string {
  const name = error instanceof Error ? error.name : "";
  if (name === "TimeoutError" || name === "AbortError") {
    return `the secondary at ${baseUrl} did not answer within ${String(peerRequestTimeoutMs / 1000)} s; check that its node runs and is not stuck, that --to is its management URL, and that no firewall drops traffic from this node to that port`;
  }
  const cause = (error as { cause?: { code?: unknown; message?: unknown; name?: unknown } }).cause;
  const code = typeof cause?.code === "string" ? cause.code : "";
  if (cause?.name === "HTTPParserError") {
    return `what answers at ${baseUrl} does not speak HTTP: it is not a management API (a replication or NBD port?); give --to the secondary's management URL (its --mgmt address)`;
  }
  switch (code) {
    case "ECONNREFUSED":
      return `the secondary at ${baseUrl} refused the connection (ECONNREFUSED): nothing listens there; check that \`tidemark node\` runs on the secondary and that --to is its management address (its --mgmt, not --repl or --nbd)`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `the host name in --to ${baseUrl} does not resolve from this node (${code}); check the name, or give its IP address`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ETIMEDOUT":
    case "UND_ERR_CONNECT_TIMEOUT":
      return `cannot connect from this node to the secondary at ${baseUrl} (${code}); check --to, the network route and the firewalls between the nodes`;
    default: {
      const detail = typeof cause?.message === "string" ? cause.message : error instanceof Error ? error.message : String(error);
      return `no answer from the secondary at ${baseUrl} (${code === "" ? detail : `${code}: ${detail}`}); check that --to is its management URL (its --mgmt address, not --repl or --nbd) and that its node runs`;
    }
  }
}

