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
import { mgmtBodyBytesMax } from "../core/limits.ts";
import { nameProblem } from "../core/names.ts";
import { tmErrorCodes } from "../core/errors.ts";
import { type ControlErrorCode, type NodeControl, type PairControl } from "./control.ts";
import {
  createGroupBodySchema, createPairBodySchema, createVolumeBodySchema, forceQuerySchema, groupListBodySchema, noOptionsBodySchema, pairDeleteQuerySchema, pairSecondaryBodySchema, pairSecondaryCheckBodySchema, pairSecondaryEndBodySchema, pairSetBodySchema,
  takeoverBodySchema, unfenceBodySchema } from "./contract.ts";

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

/** A group name in a path (/v1/pairs/:group), checked like one in a body. */
/** The `:group` or `:volume` of a path, validated as such a name (TM_ERR_INVALID). */
function nameParam(kind: "group" | "volume", params: unknown): string {
  const value = (params as Record<string, unknown>)[kind];
  const name = typeof value === "string" ? value : "";
  const problem = nameProblem(kind, name);
  if (problem !== null) throw new ControlError("TM_ERR_INVALID", problem);
  return name;
}

function groupParam(params: unknown): string {
  return nameParam("group", params);
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
  app.get("/v1/health", () => {
    const health = control.health();
    return health.status === "ok" ? { status: "ok", id: control.status().id } : { status: health.status, id: control.status().id, reasons: health.reasons };
  });
  // Readiness, apart from liveness (/v1/health): 503 while the node starts or stops.
  app.get("/v1/ready", (_request, reply) => {
    const readiness = control.ready();
    return reply.code(readiness.ready ? 200 : 503).send({ status: readiness.status, id: control.status().id });
  });
  app.get("/v1/status", () => control.status());
  app.get("/metrics", async (_request, reply) => {
    const { contentType, body } = await control.metrics();
    return reply.type(contentType).send(body);
  });
}

function registerVolumeRoutes(app: MgmtApp, control: NodeControl): void {
  app.get("/v1/volumes", () => ({ volumes: control.listVolumes() }));
  app.post("/v1/volumes", async (request, reply) => {
    const body = parseBody(createVolumeBodySchema, request.body);
    const volume = await control.createVolume(body.name, body.sizeBytes);
    return reply.code(201).send({ volume });
  });
  // Idempotent: a volume already gone answers 200 with deleted false.
  app.delete("/v1/volumes/:volume", async (request) => {
    const name = nameParam("volume", request.params);
    const query = parseBody(forceQuerySchema, request.query);
    const force = query.force === "true" || query.force === "1";
    return { volume: name, deleted: await control.deleteVolume(name, force) };
  });
}


function registerGroupRoutes(app: MgmtApp, control: NodeControl): void {
  app.get("/v1/groups", () => ({ groups: control.listGroups() }));
  app.post("/v1/groups", async (request, reply) => {
    const body = parseBody(createGroupBodySchema, request.body);
    const group = await control.createGroup(body.name, body.volumes, body.journalBytesMax);
    return reply.code(201).send({ group });
  });
  // Idempotent: a group already gone answers 200 with deleted false.
  app.delete("/v1/groups/:group", async (request) => {
    const name = groupParam(request.params);
    return { group: name, deleted: await control.deleteGroup(name) };
  });
}

function registerPairRoutes(app: MgmtApp, control: PairControl): void {
  app.get("/v1/pairs", () => ({ pairs: control.listPairs() }));
  app.post("/v1/pairs", async (request, reply) => {
    const body = parseBody(createPairBodySchema, request.body);
    const pair = await control.createPair(body);
    return reply.code(201).send(pair);
  });
  app.get("/v1/pairs/:group", (request) => control.pair(groupParam(request.params)));
  app.post("/v1/pairs/:group/suspend", (request) => {
    parseBody(noOptionsBodySchema, request.body);
    return control.suspendPair(groupParam(request.params));
  });
  app.post("/v1/pairs/:group/resume", (request) => {
    parseBody(noOptionsBodySchema, request.body);
    return control.resumePair(groupParam(request.params));
  });
  // Lists (issue 8): `pair suspend g1,g2` / `pair resume g1,g2` on the primary, checked before any changes.
  app.post("/v1/pairs/suspend", async (request) => {
    const body = parseBody(groupListBodySchema, request.body);
    return { pairs: await control.suspendPairs(body.groups) };
  });
  app.post("/v1/pairs/resume", async (request) => {
    const body = parseBody(groupListBodySchema, request.body);
    return { pairs: await control.resumePairs(body.groups) };
  });
  // On the secondary: the group leaves (rejoins) its consistency domain.
  app.post("/v1/pairs/:group/detach", (request) => {
    parseBody(noOptionsBodySchema, request.body);
    return control.detachPair(groupParam(request.params));
  });
  app.post("/v1/pairs/:group/attach", (request) => {
    parseBody(noOptionsBodySchema, request.body);
    return control.attachPair(groupParam(request.params));
  });
  app.post("/v1/takeover", async (request) => {
    const body = parseBody(takeoverBodySchema, request.body);
    return { results: await control.takeover(body.groups, { force: body.force }) };
  });
  app.post("/v1/pairs/:group/unfence", (request) => {
    const body = parseBody(unfenceBodySchema, request.body);
    return control.unfencePair(groupParam(request.params), body?.force === true);
  });
  // `pair delete`: idempotent, a pair already gone answers 200 with deleted false.
  app.delete("/v1/pairs/:group", (request) => {
    const name = groupParam(request.params);
    const query = parseBody(pairDeleteQuerySchema, request.query);
    const yes = (value: string | undefined): boolean => value === "true" || value === "1";
    return control.deletePair(name, { force: yes(query.force), promote: yes(query.promote) });
  });
  // `pair set GROUP --to URL`: the secondary moved.
  app.post("/v1/pairs/:group/set", (request) => {
    const body = parseBody(pairSetBodySchema, request.body);
    return control.setPairSecondary(groupParam(request.params), body.to);
  });
  app.post("/v1/pair-secondaries/check", (request) => control.checkPairSecondary(parseBody(pairSecondaryCheckBodySchema, request.body)));
  // A primary asks this (secondary) node to end its side of a pair it deletes.
  app.post("/v1/pair-secondaries/end", (request) => control.endPairSecondary(parseBody(pairSecondaryEndBodySchema, request.body)));
  // A primary asks this (secondary) node to make or check the secondary group of a new pair.
  app.post("/v1/pair-secondaries", (request) => control.preparePairSecondary(parseBody(pairSecondaryBodySchema, request.body)));
  // The path before the vocabulary was settled: a primary of the previous version still calls it.
  app.post("/v1/pair-targets", (request) => control.preparePairSecondary(parseBody(pairSecondaryBodySchema, request.body)));
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
