// A small typed client for the management API. Every failure becomes an OperationError
// with one line that says what went wrong and what to do: the node is not running, it did
// not answer in time, something that is not a tidemark node answered, or the API refused.
import type { z } from "zod";
import { mgmtRequestTimeoutMsDefault, mgmtResponseBytesMax } from "../core/limits.ts";
import { apiErrorSchema, routePath, type MgmtRoute, type RouteCall, type RouteResult } from "../mgmt/contract.ts";
import { OperationError, UsageError, oneLine } from "./errors.ts";

export const defaultNodeUrl = "http://127.0.0.1:7480";

export interface ApiResult<T> {
  /** The answer, checked against the schema (unknown keys dropped). */
  readonly value: T;
  /** The answer as the node sent it: what `--json` prints. */
  readonly raw: unknown;
  readonly status: number;
}

export interface RequestOptions {
  /** What the command was doing, for messages: "create volume 'db'". */
  readonly what?: string;
  /** Extra advice per API error code, appended after the node's message. */
  readonly hints?: Readonly<Partial<Record<string, string>>>;
}

/** The node refused the request: its code and message, plus the HTTP status. */
export class ApiError extends OperationError {
  override name = "ApiError";
  readonly status: number;
  readonly code: string;
  readonly apiMessage: string;
  constructor(status: number, code: string, apiMessage: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.apiMessage = apiMessage;
  }
}

/**
 * `--node` accepts http(s)://HOST:PORT[/prefix], or HOST:PORT (http is assumed).
 * `flag` names the option in the message ("--node", "--to", "--secondary").
 */
export function parseNodeUrl(text: string, flag = "--node"): URL {
  const trimmed = text.trim();
  // A scheme with a slash missing or mistyped (htp:/x, http:x) would read as a host named
  // after the scheme: refuse it, while host:port (a digit after the colon) is a node address.
  if (/^[a-z][a-z0-9+.-]*:(?!\/\/)(?!\d)/i.test(trimmed) || (trimmed.includes("://") && !/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed))) {
    throw new UsageError(`${flag} ${JSON.stringify(text)} is not a URL (a scheme needs ://); use one like ${defaultNodeUrl}`);
  }
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`${flag} ${JSON.stringify(text)} is not a URL; use one like ${defaultNodeUrl}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${flag} ${JSON.stringify(text)} must use http:// or https://, e.g. ${defaultNodeUrl}`);
  }
  // A host name (letters, digits, dots, hyphens, underscores as container names have) or an IP address; WHATWG URLs allow more (ht!tp).
  if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/i.test(url.hostname) && !/^\[[0-9a-f:.]+\]$/i.test(url.hostname)) {
    throw new UsageError(`${flag} ${JSON.stringify(text)} has no valid host name (${JSON.stringify(url.hostname)}); use one like ${defaultNodeUrl}`);
  }
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    throw new UsageError(`${flag} ${JSON.stringify(text)} must not carry a user, query or fragment; use one like ${defaultNodeUrl}`);
  }
  return url;
}

interface NetworkCause {
  code?: unknown;
  message?: unknown;
}

const reasonByCode: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ECONNRESET: "connection reset",
  ETIMEDOUT: "connection timed out",
  UND_ERR_CONNECT_TIMEOUT: "connection timed out",
  UND_ERR_SOCKET: "connection closed unexpectedly",
  EPROTO: "protocol error (is it https?)",
};

export class ApiClient {
  readonly baseUrl: URL;
  readonly timeoutMs: number;

  constructor(baseUrl: URL | string, options: { timeoutMs?: number } = {}) {
    this.baseUrl = typeof baseUrl === "string" ? parseNodeUrl(baseUrl) : baseUrl;
    this.timeoutMs = options.timeoutMs ?? mgmtRequestTimeoutMsDefault;
  }

  /** The node's address as people typed it, without a trailing slash. */
  get label(): string {
    return this.baseUrl.href.replace(/\/$/, "");
  }

  /**
   * Calls a route of the management contract (src/mgmt/contract.ts): its method, its path with
   * `params` filled in, `query` and `body`; the answer is checked against the route's schema
   * (a text route answers the text).
   */
  async call<R extends MgmtRoute>(route: R, input: RouteCall<R>, options: RequestOptions = {}): Promise<ApiResult<RouteResult<R>>> {
    const path = routePath(route, input.params as Readonly<Record<string, unknown>> | undefined, input.query as Readonly<Record<string, unknown>> | undefined);
    if (!("safeParse" in route.answer)) {
      const text = await this.getText(path, options);
      return { value: text as RouteResult<R>, raw: text, status: 200 };
    }
    const schema = route.answer as z.ZodType<RouteResult<R>>;
    return this.request(route.method, path, input.body, schema, options);
  }

  get<T>(path: string, schema: z.ZodType<T>, options: RequestOptions = {}): Promise<ApiResult<T>> {
    return this.request("GET", path, undefined, schema, options);
  }

  post<T>(path: string, body: unknown, schema: z.ZodType<T>, options: RequestOptions = {}): Promise<ApiResult<T>> {
    return this.request("POST", path, body, schema, options);
  }

  delete<T>(path: string, schema: z.ZodType<T>, options: RequestOptions = {}): Promise<ApiResult<T>> {
    return this.request("DELETE", path, undefined, schema, options);
  }

  /** Plain-text GET (for /metrics). */
  async getText(path: string, options: RequestOptions = {}): Promise<string> {
    const { status, statusText, contentType, text } = await this.exchange("GET", path, undefined);
    if (status >= 200 && status < 300) return text;
    throw this.failure("GET", path, status, statusText, contentType, text, options);
  }

  private async request<T>(
    method: string,
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    options: RequestOptions,
  ): Promise<ApiResult<T>> {
    const { status, statusText, contentType, text } = await this.exchange(method, path, body);
    if (status < 200 || status >= 300) throw this.failure(method, path, status, statusText, contentType, text, options);
    const raw = parseJson(contentType, text);
    if (raw === notJson) {
      throw new OperationError(
        `node at ${this.label} answered ${method} ${path} with HTTP ${status} but not JSON; is --node pointing at a tidemark node?`,
      );
    }
    const checked = schema.safeParse(raw);
    if (!checked.success) {
      const issue = checked.error.issues[0];
      const where = issue === undefined ? "" : ` (${issue.path.join(".") || "body"}: ${issue.message})`;
      throw new OperationError(
        oneLine(`node at ${this.label} answered ${method} ${path} with an unexpected body${where}; is the node the same version as this CLI?`),
      );
    }
    return { value: checked.data, raw, status };
  }

  private url(path: string): URL {
    const prefix = this.baseUrl.pathname.replace(/\/$/, "");
    return new URL(`${prefix}${path}`, this.baseUrl);
  }

  private async exchange(
    method: string,
    path: string,
    body: unknown,
  ): Promise<{ status: number; statusText: string; contentType: string; text: string }> {
    const headers: Record<string, string> = { accept: "application/json" };
    const init: RequestInit = { method, headers, redirect: "error", signal: AbortSignal.timeout(this.timeoutMs) };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(this.url(path), init);
      const text = await readCapped(response);
      if (text === null) {
        throw new OperationError(
          `node at ${this.label} answered ${method} ${path} with more than ${mgmtResponseBytesMax} bytes; is --node pointing at a tidemark node?`,
        );
      }
      return { status: response.status, statusText: response.statusText, contentType: response.headers.get("content-type") ?? "", text };
    } catch (error) {
      if (error instanceof OperationError) throw error;
      throw this.networkFailure(method, path, error);
    }
  }

  private networkFailure(method: string, path: string, error: unknown): OperationError {
    if (error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")) {
      return new OperationError(
        `node at ${this.label} did not answer ${method} ${path} within ${formatMs(this.timeoutMs)}; is it overloaded or stuck? check its log and try again`,
      );
    }
    const cause: NetworkCause =
      error instanceof Error && typeof error.cause === "object" && error.cause !== null ? error.cause : {};
    const code = typeof cause.code === "string" ? cause.code : "";
    const reason = reasonByCode[code] ?? (typeof cause.message === "string" ? cause.message : error instanceof Error ? error.message : String(error));
    const advice =
      code === "ECONNREFUSED"
        ? "is `tidemark node` running? use --node URL"
        : code === "ENOTFOUND" || code === "EAI_AGAIN"
          ? "check the host of the node URL (--node, or $TIDEMARK_NODE when --node is not given)"
          : "check that the node is running and use --node URL";
    return new OperationError(oneLine(`cannot reach node at ${this.label} (${reason}); ${advice}`));
  }

  private failure(
    method: string,
    path: string,
    status: number,
    statusText: string,
    contentType: string,
    text: string,
    options: RequestOptions,
  ): OperationError {
    const parsed = apiErrorSchema.safeParse(parseJson(contentType, text));
    if (!parsed.success) {
      return new OperationError(
        oneLine(`node at ${this.label} answered ${method} ${path} with HTTP ${status} ${statusText}; is --node pointing at a tidemark node?`),
      );
    }
    const { code, message } = parsed.data.error;
    const prefix = options.what === undefined ? "" : `cannot ${options.what}: `;
    // The node's own message may already say what to type; then the generic hint would repeat it.
    const hint = /`?tidemark \w|: tidemark \w|create it with|run takeover against/.test(message) ? undefined : options.hints?.[code];
    const line = oneLine(`${prefix}${message} [${code}]${hint === undefined ? "" : `; ${hint}`}`);
    return new ApiError(status, code, message, line);
  }
}

const notJson: unique symbol = Symbol("not JSON");

function parseJson(contentType: string, text: string): unknown {
  if (!/\bjson\b/i.test(contentType)) return notJson;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return notJson;
  }
}

/** The body as text, or null once it passes mgmtResponseBytesMax (the rest is not read). */
async function readCapped(response: Response): Promise<string | null> {
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > mgmtResponseBytesMax) {
    await response.body?.cancel();
    return null;
  }
  if (response.body === null) return "";
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > mgmtResponseBytesMax) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
