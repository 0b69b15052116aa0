// The OpenAPI 3.1 document of the management API, generated from the contract (contract.ts:
// mgmtRoutes and their zod schemas, through z.toJSONSchema); nothing here restates a schema.
// Served at GET /v1/openapi.json. Every schema is given as its reader accepts it (zod's input
// side): a request as the node accepts it (a field with a default may be left out, an unknown
// one is refused), an answer as a client accepts it (more fields may come from a newer node; a
// field with a default may be missing from an older one).
import { z } from "zod";
import { tmErrorCodes, type TmErrorCode } from "../core/errors.ts";
import { mgmtBodyBytesMax } from "../core/limits.ts";
import {
  apiErrorSchema, groupInfoSchema, groupListBodySchema, noOptionsBodySchema, pairSecondaryBodySchema, mgmtRoutes, nodeStatusSchema, pairInfoSchema, pairSecondaryInfoSchema, takeoverResultSchema, volumeInfoSchema,
  type MgmtRoute } from "./contract.ts";

/** A JSON Schema (2020-12) or OpenAPI object, as plain JSON. */
type Json = Record<string, unknown>;

export interface OpenApiDocument {
  readonly openapi: "3.1.0";
  readonly info: { readonly title: string; readonly version: string; readonly description: string };
  readonly paths: Record<string, Record<string, Json>>;
  readonly components: { readonly schemas: Record<string, Json> };
}

/** Schemas that several answers share get their own component under these names. */
const sharedAnswers: ReadonlyArray<readonly [string, z.ZodType]> = [
  ["VolumeInfo", volumeInfoSchema],
  ["GroupInfo", groupInfoSchema],
  ["NodeStatus", nodeStatusSchema],
  ["PairInfo", pairInfoSchema],
  ["TakeoverResult", takeoverResultSchema],
  ["PairSecondaryInfo", pairSecondaryInfoSchema],
  ["ApiError", apiErrorSchema],
];

/** Request bodies that several routes take. */
const sharedRequests: ReadonlyArray<readonly [string, z.ZodType]> = [
  ["NoOptions", noOptionsBodySchema],
  ["GroupList", groupListBodySchema],
  ["PairSecondaryRequest", pairSecondaryBodySchema],
];

const componentPrefix = "#/components/schemas/";

const capitalized = (name: string): string => `${name.charAt(0).toUpperCase()}${name.slice(1)}`;

/** `/v1/pairs/:group` → `/v1/pairs/{group}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, "{$1}");
}

/** Every body and answer schema, each once, named; shared parts become references. */
function components(named: Map<z.ZodType, string>): Record<string, Json> {
  const registry = z.registry<{ id: string }>();
  for (const [schema, id] of named) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, { target: "draft-2020-12", io: "input", uri: (id) => `${componentPrefix}${id}` });
  const out: Record<string, Json> = {};
  for (const [id, schema] of Object.entries(schemas)) {
    // Inside an OpenAPI document a component needs neither its own $schema nor $id.
    const { $schema: _schema, $id: _id, ...rest } = schema as Json;
    out[id] = rest;
  }
  return out;
}

/** A parameter's schema, inline (names and the force flag: no shared parts). */
function inlineSchema(schema: z.ZodType): Json {
  const { $schema: _schema, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", io: "input" }) as Json;
  return rest;
}

function parameters(route: MgmtRoute): Json[] {
  const out: Json[] = [];
  for (const [where, schema] of [["path", route.params], ["query", route.query]] as const) {
    if (schema === undefined) continue;
    if (!(schema instanceof z.ZodObject)) throw new TypeError(`${route.method} ${route.path}: ${where} schema must be an object`);
    const shape: Readonly<Record<string, z.ZodType>> = schema.shape;
    for (const [name, property] of Object.entries(shape)) {
      out.push({ name, in: where, required: where === "path" || !property.safeParse(undefined).success, schema: inlineSchema(property) });
    }
  }
  return out;
}

/** The error answers of a route by HTTP status, each naming its TM_ERR_* codes (docs/errors.md). */
function errorResponses(route: MgmtRoute): Record<string, Json> {
  const codes: TmErrorCode[] = [];
  if (route.params !== undefined || route.query !== undefined || route.body !== undefined) codes.push("TM_ERR_INVALID");
  codes.push(...route.errors, "TM_ERR_INTERNAL");
  const byStatus = new Map<number, TmErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = tmErrorCodes[code].httpStatus;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<string, Json> = {};
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    out[String(status)] = {
      description: list.map((code) => `${code}: ${tmErrorCodes[code].meaning}`).join("; "),
      "x-tidemark-error-codes": list,
      content: { "application/json": { schema: { $ref: `${componentPrefix}ApiError` } } },
    };
  }
  // The body itself refused before it is read as this route's input (fastify, mgmt-api.ts).
  if (route.body !== undefined) {
    for (const [status, why] of [["413", `TM_ERR_INVALID: the body is larger than ${mgmtBodyBytesMax} bytes (mgmtBodyBytesMax)`], ["415", "TM_ERR_INVALID: the body is not application/json"]] as const) {
      out[status] = { description: why, "x-tidemark-error-codes": ["TM_ERR_INVALID"], content: { "application/json": { schema: { $ref: `${componentPrefix}ApiError` } } } };
    }
  }
  return out;
}

/** Builds the document from the contract (every route, every schema); `version`: the node's. */
export function buildOpenApiDocument(version: string): OpenApiDocument {
  const routes = Object.entries(mgmtRoutes) as Array<[string, MgmtRoute]>;
  const inputs = new Map<z.ZodType, string>(sharedRequests.map(([id, schema]) => [schema, id]));
  const outputs = new Map<z.ZodType, string>(sharedAnswers.map(([id, schema]) => [schema, id]));
  for (const [name, route] of routes) {
    if (route.body !== undefined && !inputs.has(route.body)) inputs.set(route.body, `${capitalized(name)}Request`);
    if ("safeParse" in route.answer && !outputs.has(route.answer)) outputs.set(route.answer, `${capitalized(name)}Answer`);
  }
  const schemas = components(new Map([...inputs, ...outputs]));

  const paths: Record<string, Record<string, Json>> = {};
  for (const [name, route] of routes) {
    const answerContent = "safeParse" in route.answer
      ? { "application/json": { schema: { $ref: `${componentPrefix}${String(outputs.get(route.answer))}` } } }
      : { [route.answer.contentType]: { schema: { type: "string" } } };
    const responses: Record<string, Json> = { [String(route.status)]: { description: route.summary, content: answerContent } };
    for (const status of route.alsoAnswers ?? []) responses[String(status)] = { description: `the same body, with HTTP ${status}`, content: answerContent };
    Object.assign(responses, errorResponses(route));
    const operation: Json = { operationId: name, summary: route.summary, responses };
    const parameterList = parameters(route);
    if (parameterList.length > 0) operation.parameters = parameterList;
    if (route.body !== undefined) {
      operation.requestBody = {
        required: !route.body.safeParse(undefined).success,
        content: { "application/json": { schema: { $ref: `${componentPrefix}${String(inputs.get(route.body))}` } } },
      };
    }
    if (route.peer === true) operation["x-tidemark-peer"] = true;
    if (route.deprecated === true) operation.deprecated = true;
    const path = openApiPath(route.path);
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "tidemark management API",
      version,
      description: "Generated from src/mgmt/contract.ts. Every error answers {\"error\":{\"code\",\"message\"}} with a stable TM_ERR_* code (docs/errors.md). Until the API has authentication a node serves it on loopback only, unless started with --insecure-mgmt.",
    },
    paths,
    components: { schemas },
  };
}

let cached: OpenApiDocument | undefined;

/** The document, built once per process (the contract does not change while it runs). */
export function openApiDocument(version: string): OpenApiDocument {
  if (cached?.info.version !== version) cached = buildOpenApiDocument(version);
  return cached;
}
