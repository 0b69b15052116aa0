// The management HTTP API: validates at the edge (zod, unknown keys rejected), calls the
// node through NodeControl, and answers JSON. Every error is {error:{code,message}} with a
// stable TM_ERR_* code; the handler behind the validation assumes valid input.
import { ControlError } from "../core/errors.ts";
import Fastify, {
  LogController,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from "fastify";
import type { Logger } from "pino";
import { isStorageError } from "../node/group-stop.ts";
import type { z } from "zod";
import { lagHistoryIntervalMs, mgmtBodyBytesMax } from "../core/limits.ts";
import { tmErrorCodes } from "../core/errors.ts";
import { dashboardHeaders, loadDashboard } from "./dashboard.ts";
import { type ControlErrorCode, type NodeControl, type PairControl } from "./control.ts";
import { mgmtRoutes, type MgmtRoute, type RouteAnswer, type RouteInput } from "./contract.ts";
import { openApiDocument } from "./openapi.ts";

export interface MgmtApiOptions {
  readonly host: string;
  readonly port: number;
  readonly control: MgmtControl;
  readonly logger: Logger;
}

/** Everything the management API calls on the node. */
export type MgmtControl = NodeControl & PairControl;

export interface MgmtApi {
  readonly port: number;
  close(): Promise<void>;
}

/** The Fastify instance type with the node's pino logger. */
export type MgmtApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, Logger>;

export interface ApiErrorBody {
  readonly error: { readonly code: ControlErrorCode; readonly message: string };
}

/** HTTP status for each TM_ERR_* code (the table is core/errors.ts). */
export function statusForCode(code: ControlErrorCode): number {
  return tmErrorCodes[code].httpStatus;
}

/** One line naming the field and what is wrong with it. */
export function describeIssues(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return "request body is invalid";
  if (issue.code === "unrecognized_keys") {
    const where = issue.path.length > 0 ? ` in ${issue.path.join(".")}` : "";
    return `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((key) => `'${key}'`).join(", ")}${where}`;
  }
  if (issue.path.length === 0) return `request body: ${issue.message} (expected a JSON object)`;
  return `${issue.path.join(".")}: ${issue.message}`;
}

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (!result.success) throw new ControlError("TM_ERR_INVALID", describeIssues(result.error));
  return result.data;
}

/** A path parameter (`:group`, `:volume`): the name check's own line, e.g. "group name is empty". */
function parseParams<T>(schema: z.ZodType<T>, params: unknown): T {
  const result = schema.safeParse(params);
  if (!result.success) throw new ControlError("TM_ERR_INVALID", result.error.issues[0]?.message ?? "invalid path");
  return result.data;
}

/** Handles one route of the contract: gets its validated input, answers its answer type. */
type RouteHandler<R extends MgmtRoute> = (input: RouteInput<R>, reply: FastifyReply) => RouteAnswer<R> | Promise<RouteAnswer<R>>;

/**
 * Registers `route` exactly as the contract declares it (method, path, success status) and
 * validates its path parameters, query and body with the contract's schemas before `handler`
 * runs; a refusal is TM_ERR_INVALID naming the field. A text answer goes out with the route's
 * media type. The handler may set another status the route declares (alsoAnswers).
 */
function serve<R extends MgmtRoute>(app: MgmtApp, route: R, handler: RouteHandler<R>): void {
  app.route({
    method: route.method,
    url: route.path,
    handler: async (request, reply) => {
      const input = {
        params: route.params === undefined ? undefined : parseParams(route.params, request.params),
        query: route.query === undefined ? undefined : parseBody(route.query, request.query),
        body: route.body === undefined ? undefined : parseBody(route.body, request.body),
      } as RouteInput<R>; // each part is its schema's output, as RouteInput says
      reply.code(route.status);
      const answer = await handler(input, reply);
      if (!("safeParse" in route.answer)) reply.type(route.answer.contentType);
      return reply.send(answer);
    },
  });
}

function sendError(reply: FastifyReply, status: number, code: ControlErrorCode, message: string): FastifyReply {
  const body: ApiErrorBody = { error: { code, message } };
  return reply.code(status).type("application/json; charset=utf-8").send(body);
}

/** Fastify's own client errors (bad JSON, body too large, wrong media type) keep their status. */
function isClientError(error: unknown): error is FastifyError & { statusCode: number } {
  if (!(error instanceof Error)) return false;
  const statusCode: unknown = (error as Partial<FastifyError>).statusCode;
  return typeof statusCode === "number" && statusCode >= 400 && statusCode < 500;
}

function clientErrorMessage(error: FastifyError): string {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return `request body is larger than ${mgmtBodyBytesMax} bytes`;
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return "request body must be JSON (Content-Type: application/json)";
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return "request body is empty; send a JSON object";
    default:
      return error.message;
  }
}

/** A route the app serves, as fastify registered it (HEAD routes of GETs included). */
export interface RegisteredRoute {
  readonly method: string;
  readonly url: string;
}

const registeredRoutes = new WeakMap<MgmtApp, RegisteredRoute[]>();

/** A registered route's URL (`/v1/pairs/:group`) as a pattern of the paths it serves. */
function routePattern(url: string): RegExp {
  const escaped = url.split("/").map((part) => (part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))).join("/");
  return new RegExp(`^${escaped}/?$`);
}

/** Every route `app` serves: a test checks each is in the contract and the OpenAPI document. */
export function routesOf(app: MgmtApp): readonly RegisteredRoute[] {
  return registeredRoutes.get(app) ?? [];
}

/** Builds the app without listening; tests drive it with `inject`. */
export function buildMgmtApp(control: MgmtControl, logger: Logger): MgmtApp {
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: mgmtBodyBytesMax,
    // Names travel in bodies, never in paths, so a short limit on path parameters is enough.
    routerOptions: { maxParamLength: 256 },
    return503OnClosing: true,
  });

  const routes: RegisteredRoute[] = [];
  registeredRoutes.set(app, routes);
  app.addHook("onRoute", (options) => {
    for (const method of [options.method].flat()) routes.push({ method, url: options.url });
  });

  // Bodies are JSON only: a text/plain body would otherwise reach the handlers as a string.
  app.removeContentTypeParser("text/plain");

  app.addHook("onResponse", (request, reply, done) => {
    logger.debug(
      { method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      "mgmt request",
    );
    done();
  });

  app.setNotFoundHandler((request, reply) => {
    // A path the API has, asked with another method: 405 with the methods it takes (RFC 9110 15.5.6).
    const path = request.url.split("?")[0] ?? "";
    const allowed = [...new Set(routes.filter((route) => routePattern(route.url).test(path)).map((route) => route.method))].sort();
    if (allowed.length > 0) {
      void sendError(reply.header("allow", allowed.join(", ")), 405, "TM_ERR_INVALID", `${request.method} is not a method of ${path.slice(0, 200)}; it takes ${allowed.join(", ")}`);
      return;
    }
    void sendError(reply, 404, "TM_ERR_NOT_FOUND", `no such endpoint: ${request.method} ${request.url.slice(0, 200)}`);
  });

  app.setErrorHandler((error: unknown, request, reply) => {
    if (error instanceof ControlError) {
      return sendError(reply, statusForCode(error.code), error.code, error.message);
    }
    if (isClientError(error)) {
      return sendError(reply, error.statusCode, "TM_ERR_INVALID", clientErrorMessage(error));
    }
    if (isStorageError(error)) {
      // The disk refused while the command ran (a full disk, an I/O error): say so, with the
      // path, instead of an "internal error"; the command did not take effect.
      const errno = (error as NodeJS.ErrnoException).code ?? "EIO";
      const path = (error as { path?: unknown }).path;
      logger.warn({ err: error, method: request.method, url: request.url }, "mgmt request failed: the disk refused");
      const where = typeof path === "string" ? ` on ${path}` : "";
      return errno === "ENOSPC" || errno === "EDQUOT"
        ? sendError(reply, statusForCode("TM_ERR_NO_SPACE"), "TM_ERR_NO_SPACE", `out of space${where}: free space on that file system and try again`)
        : sendError(reply, statusForCode("TM_ERR_IO"), "TM_ERR_IO", `the disk refused (${errno}${where}): check the disk and its kernel log, then try again`);
    }
    logger.error({ err: error, method: request.method, url: request.url }, "mgmt request failed");
    const message = error instanceof Error ? error.message : String(error);
    return sendError(reply, 500, "TM_ERR_INTERNAL", `internal error: ${message}`);
  });

  registerNodeRoutes(app, control);
  registerVolumeRoutes(app, control);
  registerGroupRoutes(app, control);
  registerPairRoutes(app, control);
  return app;
}

function registerNodeRoutes(app: MgmtApp, control: NodeControl): void {
  const r = mgmtRoutes;
  serve(app, r.health, () => {
    const health = control.health();
    return health.status === "ok" ? { status: "ok", id: control.status().id } : { status: health.status, id: control.status().id, reasons: [...health.reasons] };
  });
  // Readiness, apart from liveness (/v1/health): 503 while the node starts or stops.
  serve(app, r.ready, (_input, reply) => {
    const readiness = control.ready();
    if (!readiness.ready) reply.code(503);
    return { status: readiness.status, id: control.status().id };
  });
  serve(app, r.status, () => control.status());
  serve(app, r.lagHistory, () => ({ intervalMs: lagHistoryIntervalMs, pairs: control.lagHistory() }));
  serve(app, r.metrics, async (_input, reply) => {
    const { contentType, body } = await control.metrics();
    reply.type(contentType);
    return body;
  });
  serve(app, r.openApi, () => openApiDocument(control.status().version));
  // Read when the app is built: a package without its page fails at start, not on the first visit.
  const dashboard = loadDashboard();
  serve(app, r.dashboard, (_input, reply) => {
    reply.headers(dashboardHeaders(dashboard));
    return dashboard.html;
  });
}

function registerVolumeRoutes(app: MgmtApp, control: NodeControl): void {
  const r = mgmtRoutes;
  serve(app, r.listVolumes, () => ({ volumes: control.listVolumes() }));
  serve(app, r.createVolume, async ({ body }) => ({ volume: await control.createVolume(body.name, body.sizeBytes) }));
  // Idempotent: a volume already gone answers 200 with deleted false.
  serve(app, r.deleteVolume, async ({ params, query }) => {
    const force = query.force === "true" || query.force === "1";
    return { volume: params.volume, deleted: await control.deleteVolume(params.volume, force) };
  });
  // Idempotent: the same size again answers 200 with changed false.
  serve(app, r.resizeVolume, async ({ params, body }) => control.resizeVolume(params.volume, body.sizeBytes));
}

function registerGroupRoutes(app: MgmtApp, control: NodeControl): void {
  const r = mgmtRoutes;
  serve(app, r.listGroups, () => ({ groups: control.listGroups() }));
  serve(app, r.createGroup, async ({ body }) => ({ group: await control.createGroup(body.name, body.volumes, body.journalBytesMax) }));
  // Idempotent: a group already gone answers 200 with deleted false.
  serve(app, r.deleteGroup, async ({ params }) => ({ group: params.group, deleted: await control.deleteGroup(params.group) }));
}

function registerPairRoutes(app: MgmtApp, control: PairControl): void {
  const r = mgmtRoutes;
  serve(app, r.listPairs, () => ({ pairs: control.listPairs() }));
  serve(app, r.createPair, ({ body }, reply) => control.createPair(body, { host: reply.request.headers.host }));
  serve(app, r.pair, ({ params }) => control.pair(params.group));
  serve(app, r.suspendPair, ({ params }) => control.suspendPair(params.group));
  serve(app, r.resumePair, ({ params }) => control.resumePair(params.group));
  // Lists (issue 8): `pair suspend g1,g2` / `pair resume g1,g2` on the primary, checked before any changes.
  serve(app, r.suspendPairs, async ({ body }) => ({ pairs: await control.suspendPairs(body.groups) }));
  serve(app, r.resumePairs, async ({ body }) => ({ pairs: await control.resumePairs(body.groups) }));
  // On the secondary: the group leaves (rejoins) its consistency domain.
  serve(app, r.detachPair, ({ params }) => control.detachPair(params.group));
  serve(app, r.attachPair, ({ params }) => control.attachPair(params.group));
  serve(app, r.takeover, async ({ body }) => ({ results: await control.takeover(body.groups, { force: body.force }) }));
  serve(app, r.unfencePair, ({ params, body }) => control.unfencePair(params.group, body?.force === true));
  // `pair delete`: idempotent, a pair already gone answers 200 with deleted false.
  serve(app, r.deletePair, ({ params, query }) => {
    const yes = (value: string | undefined): boolean => value === "true" || value === "1";
    return control.deletePair(params.group, { force: yes(query.force), promote: yes(query.promote) });
  });
  // `pair set GROUP --to URL`: the secondary moved.
  serve(app, r.setPair, ({ params, body }) => control.setPairSecondary(params.group, body.to));
  // A primary asks this (secondary) node whether it holds the pair (pair set), or to end its side of a pair it deletes.
  serve(app, r.checkPairSecondary, ({ body }) => control.checkPairSecondary(body));
  serve(app, r.endPairSecondary, ({ body }) => control.endPairSecondary(body));
  // A primary asks this (secondary) node to make or check the secondary group of a new pair.
  serve(app, r.preparePairSecondary, ({ body }) => control.preparePairSecondary(body));
  serve(app, r.preparePairTarget, ({ body }) => control.preparePairSecondary(body));
}

export async function startMgmtApi(options: MgmtApiOptions): Promise<MgmtApi> {
  const app = buildMgmtApp(options.control, options.logger);
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  if (address === null || typeof address === "string") {
    await app.close();
    throw new Error(`management API did not bind a TCP port on ${options.host}:${options.port}`);
  }
  options.logger.info({ host: options.host, port: address.port }, "management API listening");
  return {
    port: address.port,
    close: () => app.close(),
  };
}
