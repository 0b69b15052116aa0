// The management contract: the one place where the management API's routes, requests and
// answers are declared. Each route (mgmtRoutes, at the bottom) is declared once: method,
// path, path/query/body schemas, answer schema, success status and the TM_ERR_* codes it
// may answer. The node's HTTP server (mgmt-api.ts) registers exactly these routes and
// validates requests with their schemas; the CLI (cli/api-client.ts) and a node calling
// another node (transport/peer-client.ts) check the answers with them; the OpenAPI document
// (openapi.ts, served at GET /v1/openapi.json) is generated from them. docs/cli.md
// ("The management API") describes the rules.
import { z } from "zod";
import type { TmErrorCode } from "../core/errors.ts";
import {
  groupsPerNodeMax, maxClockSkewMsMax, mgmtUrlLengthMax, replPairIdBytesMax, replStreamsDefault, replStreamsMax, volumeBytesMax,
  volumeBytesMin, volumesPerGroupMax, journalBytesLimit, journalBytesMin, journalRecordPayloadBytesMax, lagHistoryIntervalMs, lagHistorySamplesMax } from "../core/limits.ts";
import { nameProblem, namePattern } from "../core/names.ts";
import type { WriteTimePolicy } from "../core/types.ts";
import {
  pairStates, type CopyMode, type CreatePairRequest, type GroupInfo, type NodeStatus, type PairInfo, type PairSecondaryCheckRequest, type PairSecondaryEndRequest, type PairSecondaryInfo, type PairSecondaryRequest,
  type ReflectMode, type TakeoverResult, type TransferMode, type VolumeInfo } from "./control.ts";

// ---- requests (the server validates them; unknown keys are refused) ------------------

export const nameSchema = (kind: string) =>
  z
    .string()
    .superRefine((value, ctx) => {
      const problem = nameProblem(kind, value);
      if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
    })
    // What the check above enforces, for the OpenAPI document (the check gives the messages).
    .meta({ description: `a ${kind} name`, pattern: namePattern.source });

/** A volume's size in a body: whole bytes within the node's limits. */
export const volumeSizeSchema = z
  .number()
  .int("must be a whole number of bytes")
  .min(volumeBytesMin, `must be at least ${volumeBytesMin} bytes`)
  .max(volumeBytesMax, `must be at most ${volumeBytesMax} bytes`);

export const createVolumeBodySchema = z.strictObject({
  name: nameSchema("volume"),
  sizeBytes: volumeSizeSchema,
});

/** POST /v1/volumes/:volume/resize: the new size (grow only). */
export const resizeVolumeBodySchema = z.strictObject({
  sizeBytes: volumeSizeSchema,
});

export const createGroupBodySchema = z.strictObject({
  name: nameSchema("group"),
  volumes: z
    .array(nameSchema("volume"))
    .min(1, "must list at least one volume")
    .max(volumesPerGroupMax, `must list at most ${volumesPerGroupMax} volumes`)
    .refine((names) => new Set(names).size === names.length, "must not list a volume twice"),
  /** Size limit of the group's journal; default journalBytesMaxDefault. */
  journalBytesMax: z.number().int().min(journalBytesMin, `must be at least ${journalBytesMin} bytes (a full journal must still take the largest write of ${journalRecordPayloadBytesMax} bytes)`).max(journalBytesLimit, `must be at most ${journalBytesLimit} bytes`).optional(),
});

const copyModes = ["async", "sync"] as const satisfies readonly CopyMode[];
const transferModes = ["push", "pull"] as const satisfies readonly TransferMode[];
const reflectModes = ["time", "seq", "marker"] as const satisfies readonly ReflectMode[];
const writeTimePolicies = ["host", "clock", "counter"] as const satisfies readonly WriteTimePolicy[];

export const enumSchema = <T extends string>(values: readonly [T, ...T[]]) =>
  z.enum(values, { error: () => `must be one of ${values.map((value) => `"${value}"`).join(", ")}` });

export const streamsSchema = z
  .number({ error: "must be a whole number" })
  .int("must be a whole number")
  .min(1, `must be between 1 and ${replStreamsMax}`)
  .max(replStreamsMax, `must be between 1 and ${replStreamsMax}`);

/** Management URL of another node: http(s), no user, query or fragment. */
export const nodeUrlSchema = z
  .string()
  .max(mgmtUrlLengthMax, `must be at most ${mgmtUrlLengthMax} characters`)
  .superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: "custom", message: "must be an http:// or https:// URL, e.g. http://10.0.0.2:7480" });
      return;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      ctx.addIssue({ code: "custom", message: "must use http:// or https://" });
    } else if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
      ctx.addIssue({ code: "custom", message: "must not carry a user, query or fragment" });
    }
  });

const pairIdPattern = new RegExp(`^[\\x21-\\x7e]{1,${replPairIdBytesMax}}$`);

const uniqueNames = (names: readonly string[]): boolean => new Set(names).size === names.length;

export const createPairBodySchema = z.strictObject({
  group: nameSchema("group"),
  to: nodeUrlSchema,
  remoteGroup: nameSchema("group").optional(),
  mode: enumSchema(copyModes).default("async"),
  transfer: enumSchema(transferModes).default("push"),
  streams: streamsSchema.default(replStreamsDefault),
  reflect: enumSchema(reflectModes).default("time"),
  force: z.boolean().optional(),
  domain: nameSchema("domain").optional(),
}) satisfies z.ZodType<CreatePairRequest, unknown>;

/** suspend and resume take no options: no body, or an empty object. */
export const noOptionsBodySchema = z.strictObject({}).optional();

/** `pair suspend|resume g1,g2`: the groups, each once. */
export const groupListBodySchema = z.strictObject({
  groups: z
    .array(nameSchema("group"))
    .min(1, "must list at least one group")
    .max(groupsPerNodeMax, `must list at most ${groupsPerNodeMax} groups`)
    .refine(uniqueNames, "must not list a group twice"),
});

export const takeoverBodySchema = z.strictObject({
  groups: z
    .array(nameSchema("group"))
    .min(1, "must list at least one group")
    .max(groupsPerNodeMax, `must list at most ${groupsPerNodeMax} groups`)
    .refine(uniqueNames, "must not list a group twice"),
  /** The primary site is declared lost: take over without fencing the primary when it cannot be reached. */
  force: z.boolean().optional(),
});

/** `pair unfence GROUP [--force]`. */
export const unfenceBodySchema = z.strictObject({ force: z.boolean().optional() }).optional();

export const pairSecondaryBodySchema = z.strictObject({
  pairId: z.string().regex(pairIdPattern, `must be 1 to ${replPairIdBytesMax} printable ASCII characters without spaces`),
  primaryNode: nameSchema("node"),
  primaryGroup: nameSchema("group"),
  primaryUrl: nodeUrlSchema.optional(),
  group: nameSchema("group"),
  volumes: z
    .array(
      z.strictObject({
        name: nameSchema("volume"),
        sizeBytes: volumeSizeSchema,
      }),
    )
    .min(1, "must list at least one volume")
    .max(volumesPerGroupMax, `must list at most ${volumesPerGroupMax} volumes`)
    .refine((volumes) => uniqueNames(volumes.map((volume) => volume.name)), "must not list a volume twice"),
  reflect: enumSchema(reflectModes),
  transfer: enumSchema(transferModes),
  streams: streamsSchema,
  force: z.boolean().optional(),
  domain: z.strictObject({
    name: nameSchema("domain"),
    writeTimePolicy: enumSchema(writeTimePolicies),
    maxClockSkewMs: z.number().int().min(0).max(maxClockSkewMsMax),
  }).optional(),
}) satisfies z.ZodType<PairSecondaryRequest, unknown>;


/** `?force=true` (or 1); anything else but absent is refused. */
export const forceQuerySchema = z.strictObject({ force: z.enum(["true", "false", "1", "0"]).optional() });

/** A primary asks the secondary to end its side of a pair (`pair delete`). */
export const pairSecondaryEndBodySchema = z.strictObject({
  pairId: z.string().regex(pairIdPattern, `must be 1 to ${replPairIdBytesMax} printable ASCII characters without spaces`),
  primaryNode: nameSchema("node"),
  group: nameSchema("group"),
  promote: z.boolean(),
}) satisfies z.ZodType<PairSecondaryEndRequest, unknown>;

/** A primary asks a secondary's (new) address whether it holds the pair (`pair set`). */
export const pairSecondaryCheckBodySchema = z.strictObject({
  pairId: z.string().regex(pairIdPattern, `must be 1 to ${replPairIdBytesMax} printable ASCII characters without spaces`),
  primaryNode: nameSchema("node"),
  group: nameSchema("group"),
}) satisfies z.ZodType<PairSecondaryCheckRequest, unknown>;

/** `pair set GROUP --to URL`. */
export const pairSetBodySchema = z.strictObject({ to: nodeUrlSchema });

/** `DELETE /v1/pairs/:group?force=true&promote=true`. */
export const pairDeleteQuerySchema = z.strictObject({ force: z.enum(["true", "false", "1", "0"]).optional(), promote: z.enum(["true", "false", "1", "0"]).optional() });

// ---- answers (the CLI and peers check them; unknown keys are allowed: a newer node may say more) ----

const count = z.number().int().nonnegative();

export const volumeInfoSchema = z.object({
  name: z.string(),
  sizeBytes: count,
  allocatedBytes: count,
  group: z.string().nullable(),
  readOnly: z.boolean(),
  writtenBytes: count.optional(),
  warning: z.string().nullable().optional(),
});

export const groupInfoSchema = z.object({
  name: z.string(),
  volumes: z.array(z.string()),
  nextSequence: count,
  appliedSequence: count,
  durableSequence: count,
  journalBytes: count,
  journalBytesMax: count,
  journalSegments: count,
  lastWriteTimeUs: count,
  state: z.enum(["ok", "stopped"]).default("ok"),
  // Older nodes do not send these.
  heldWrites: count.default(0),
  reason: z.string().nullable().default(null),
});

export const nodeStatusSchema = z.object({
  id: z.string(),
  version: z.string(),
  writeTimePolicy: z.string(),
  dataDir: z.string(),
  startedAt: z.string(),
  uptimeSeconds: z.number().nonnegative(),
  listeners: z.object({ mgmt: z.string(), nbd: z.string(), host: z.string(), repl: z.string() }),
  recordedWriteTimeUs: count,
  volumes: z.array(volumeInfoSchema),
  groups: z.array(groupInfoSchema),
  connections: z.object({ nbd: count, host: count }),
});

const pairStateSchema = z.enum(pairStates);

export const pairInfoSchema = z.object({
  group: z.string(),
  role: z.enum(["primary", "secondary"]),
  state: pairStateSchema,
  healthy: z.boolean().optional(),
  pairId: z.string(),
  remoteNode: z.string(),
  remoteUrl: z.string().nullable(),
  remoteGroup: z.string(),
  mode: z.enum(["async", "sync"]),
  transfer: z.enum(["push", "pull"]),
  streams: count,
  reflect: z.enum(["time", "seq", "marker"]),
  acceptedSequence: count,
  writeSequence: count.optional(),
  sentSequence: count,
  arrivedSequence: count,
  reflectedSequence: count,
  lagRecords: z.number().int(),
  lagBytes: z.number().int(),
  lagSeconds: z.number(),
  // null from a node that predates them (issue 9).
  consistentAsOf: z.string().nullable().default(null),
  lastContact: z.string().nullable().default(null),
  journalBytes: count,
  journalBytesMax: count,
  copy: z.object({ doneBytes: count, totalBytes: count, volumeBytes: count.optional(), dataBytes: count.optional() }).nullable(),
  lastCopy: z.object({ doneBytes: count, totalBytes: count, volumeBytes: count, dataBytes: count.optional() }).nullable().optional(),
  heldWrites: count,
  reason: z.string().nullable(),
  // sentBytes / receivedBytes: 0 from a node that predates them.
  link: z.object({ connectedStreams: count, reconnects: count, lastError: z.string().nullable(), sentBytes: count.default(0), receivedBytes: count.default(0), downSince: z.string().nullable().default(null) }),
  fence: z.object({
    reason: z.string(), since: z.string(), fencedSequence: count, fencedWriteSequence: count, peerTookOver: z.boolean(),
    cutSequence: count.nullable(), lateWrites: count.nullable(), lateWritesExact: z.boolean(),
  }).nullable().optional(),
});

export const takeoverResultSchema = z.object({
  group: z.string(),
  reflectedSequence: count,
  droppedRecords: count,
  state: pairStateSchema,
  primary: z.object({ fenced: z.boolean(), lastAcceptedSequence: count.nullable(), lastWriteSequence: count.nullable(), forced: z.boolean(), generation: count }).optional(),
  domainNote: z.string().optional(),
});

export const pairListSchema = z.object({ pairs: z.array(pairInfoSchema) });
export const takeoverAnswerSchema = z.object({ results: z.array(takeoverResultSchema) });

/** GET /v1/lag-history: each pair's lag samples of the last minutes, oldest first, each with its age in ms at the answer. */
export const lagHistorySchema = z.object({
  intervalMs: z.number(),
  pairs: z.array(z.object({
    group: z.string(),
    role: z.enum(["primary", "secondary"]),
    samples: z.array(z.object({ agoMs: z.number(), lagSeconds: z.number() })),
  })),
});

/** GET /v1/health: "ok", or "degraded" with one reason per unhealthy group. */
export const healthSchema = z.object({ status: z.string(), id: z.string(), reasons: z.array(z.string()).optional() });
/** GET /v1/ready: 200 when ready, 503 while starting or stopping (the same body). */
export const readinessSchema = z.object({ status: z.enum(["ready", "starting", "stopping"]), id: z.string() });
export const volumeListSchema = z.object({ volumes: z.array(volumeInfoSchema) });
export const volumeCreatedSchema = z.object({ volume: volumeInfoSchema });
/** POST /v1/volumes/:volume/resize: the volume as it is now, and whether it grew (false: it had that size already). */
export const volumeResizedSchema = z.object({ volume: volumeInfoSchema, changed: z.boolean() });
export const groupListSchema = z.object({ groups: z.array(groupInfoSchema) });
export const groupCreatedSchema = z.object({ group: groupInfoSchema });
/** The secondary's answer to POST /v1/pair-secondaries (a primary checks it before it trusts it). */
export const pairSecondaryInfoSchema = z.object({ nodeId: z.string().min(1), group: z.string().min(1), replAddress: z.string().min(1) });
export const volumeDeletedSchema = z.object({ volume: z.string(), deleted: z.boolean() });
export const groupDeletedSchema = z.object({ group: z.string(), deleted: z.boolean() });
/** `pair delete` (DELETE /v1/pairs/:group), and a secondary's answer to its primary (POST /v1/pair-secondaries/end). */
export const pairEndSchema = z.object({
  group: z.string(),
  deleted: z.boolean(),
  role: z.enum(["primary", "secondary"]).nullable(),
  readOnly: z.boolean(),
  keptSequence: z.number().int().nonnegative().nullable(),
  secondary: z.object({
    deleted: z.boolean(), note: z.string().nullable(), readOnly: z.boolean().optional(), takenOver: z.boolean().optional(), node: z.string().optional(), url: z.string().optional(),
  }).optional(),
  promoted: z.boolean().optional(),
  incompleteCopy: z.boolean().optional(),
  takenOver: z.boolean().optional(),
});

/** Every API error body: {error:{code,message}}. */
export const apiErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

// Compile-time: what the CLI accepts must be assignable to what the node declares it sends.
type Assignable<T, U extends T> = U;
export type CheckedVolume = Assignable<VolumeInfo, z.infer<typeof volumeInfoSchema>>;
export type CheckedGroup = Assignable<GroupInfo, z.infer<typeof groupInfoSchema>>;
export type CheckedStatus = Assignable<NodeStatus, z.infer<typeof nodeStatusSchema>>;
export type CheckedPair = Assignable<PairInfo, z.infer<typeof pairInfoSchema>>;
export type CheckedPairSecondary = Assignable<PairSecondaryInfo, z.infer<typeof pairSecondaryInfoSchema>>;
export type CheckedTakeover = Assignable<TakeoverResult, z.infer<typeof takeoverResultSchema>>;

// ---- routes ---------------------------------------------------------------------------

/** A route whose answer is not JSON: its media type. */
export interface TextAnswer {
  readonly contentType: string;
}

/** One management API route, as the server registers it and clients call it. */
export interface MgmtRoute {
  readonly method: "GET" | "POST" | "DELETE";
  /** Fastify's form: `:name` for a path parameter. */
  readonly path: `/${string}`;
  readonly summary: string;
  readonly params?: z.ZodType;
  readonly query?: z.ZodType;
  readonly body?: z.ZodType;
  /** The status of a success. */
  readonly status: 200 | 201;
  /** The success answer: a JSON schema, or a media type for text. */
  readonly answer: z.ZodType | TextAnswer;
  /** Other statuses answered with the same body (GET /v1/ready: 503 while not ready). */
  readonly alsoAnswers?: readonly number[];
  /** The TM_ERR_* codes the route answers on purpose, besides TM_ERR_INVALID (any route with input) and TM_ERR_INTERNAL. */
  readonly errors: readonly TmErrorCode[];
  /** Called by another tidemark node, not by people. */
  readonly peer?: boolean;
  /** Kept for nodes of an older version; do not call. */
  readonly deprecated?: boolean;
}

const groupParams = z.strictObject({ group: nameSchema("group") });
const volumeParams = z.strictObject({ volume: nameSchema("volume") });

/** The storage errors any command that writes metadata may meet. */
const diskErrors = ["TM_ERR_NO_SPACE", "TM_ERR_IO"] as const satisfies readonly TmErrorCode[];

/** GET /v1/openapi.json: an OpenAPI 3.1 document (openapi.ts); checked loosely here. */
export const openApiDocumentSchema = z.object({ openapi: z.string(), info: z.object({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) });

/** Every management API route, each once. */
export const mgmtRoutes = {
  health: { method: "GET", path: "/v1/health", summary: "Liveness: 200 while the node runs; degraded (with reasons) while a group is held, stopped, failed or fenced, or a pair disconnected", status: 200, answer: healthSchema, errors: [] },
  ready: { method: "GET", path: "/v1/ready", summary: "Readiness: 200 once every listener is up and recovery is done, 503 while starting or stopping", status: 200, answer: readinessSchema, alsoAnswers: [503], errors: [] },
  status: { method: "GET", path: "/v1/status", summary: "The node: listeners, volumes, groups and connections", status: 200, answer: nodeStatusSchema, errors: [] },
  metrics: { method: "GET", path: "/metrics", summary: "Prometheus text exposition of the node's metrics (docs/metrics.md)", status: 200, answer: { contentType: "text/plain; version=0.0.4; charset=utf-8" }, errors: [] },
  dashboard: { method: "GET", path: "/", summary: "The live dashboard of the node's pairs, for a browser (docs/dashboard.md): one HTML page that polls /v1/health and /v1/pairs", status: 200, answer: { contentType: "text/html; charset=utf-8" }, errors: [] },
  lagHistory: { method: "GET", path: "/v1/lag-history", summary: `Every pair's lag in seconds, sampled by the node every ${lagHistoryIntervalMs / 1000} s over the last ${(lagHistoryIntervalMs * lagHistorySamplesMax) / 60_000} minutes (the dashboard's chart)`, status: 200, answer: lagHistorySchema, errors: [] },
  openApi: { method: "GET", path: "/v1/openapi.json", summary: "This document: the management API in OpenAPI 3.1, generated from src/mgmt/contract.ts", status: 200, answer: openApiDocumentSchema, errors: [] },

  listVolumes: { method: "GET", path: "/v1/volumes", summary: "Every volume on the node", status: 200, answer: volumeListSchema, errors: [] },
  createVolume: { method: "POST", path: "/v1/volumes", summary: "Create a volume (a sparse file)", body: createVolumeBodySchema, status: 201, answer: volumeCreatedSchema, errors: ["TM_ERR_EXISTS", "TM_ERR_LIMIT", ...diskErrors] },
  resizeVolume: { method: "POST", path: "/v1/volumes/:volume/resize", summary: "Grow a volume (grow only); in a group at a point of its sequence, and a pair's secondary with it. Idempotent: changed false when it has that size already", params: volumeParams, body: resizeVolumeBodySchema, status: 200, answer: volumeResizedSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", "TM_ERR_CONFLICT", "TM_ERR_LIMIT", ...diskErrors] },
  deleteVolume: { method: "DELETE", path: "/v1/volumes/:volume", summary: "Delete a volume in no group; one holding data only with ?force=true. Idempotent: deleted false when already gone", params: volumeParams, query: forceQuerySchema, status: 200, answer: volumeDeletedSchema, errors: ["TM_ERR_STATE", "TM_ERR_CONFLICT", ...diskErrors] },

  listGroups: { method: "GET", path: "/v1/groups", summary: "Every group on the node", status: 200, answer: groupListSchema, errors: [] },
  createGroup: { method: "POST", path: "/v1/groups", summary: "Create a group of volumes with one journal", body: createGroupBodySchema, status: 201, answer: groupCreatedSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_EXISTS", "TM_ERR_CONFLICT", "TM_ERR_LIMIT", "TM_ERR_STATE", ...diskErrors] },
  deleteGroup: { method: "DELETE", path: "/v1/groups/:group", summary: "Delete a group; its volumes stay, ungrouped. Refused while paired. Idempotent: deleted false when already gone", params: groupParams, status: 200, answer: groupDeletedSchema, errors: ["TM_ERR_STATE", ...diskErrors] },

  listPairs: { method: "GET", path: "/v1/pairs", summary: "Every pair on the node, primary or secondary side", status: 200, answer: pairListSchema, errors: [] },
  createPair: { method: "POST", path: "/v1/pairs", summary: "Pair a group with a secondary node: make the remote group, copy, then replicate", body: createPairBodySchema, status: 201, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_EXISTS", "TM_ERR_CONFLICT", "TM_ERR_STATE", "TM_ERR_LIMIT", "TM_ERR_UNREACHABLE", "TM_ERR_DOMAIN_INCOMPARABLE", ...diskErrors] },
  pair: { method: "GET", path: "/v1/pairs/:group", summary: "One pair's status", params: groupParams, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND"] },
  suspendPairs: { method: "POST", path: "/v1/pairs/suspend", summary: "Suspend the pairs of several groups together (on the primary); every name is checked first", body: groupListBodySchema, status: 200, answer: pairListSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  resumePairs: { method: "POST", path: "/v1/pairs/resume", summary: "Resume the pairs of several groups together (on the primary); every name is checked first", body: groupListBodySchema, status: 200, answer: pairListSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  suspendPair: { method: "POST", path: "/v1/pairs/:group/suspend", summary: "Suspend a pair: the primary keeps accepting writes and journals them", params: groupParams, body: noOptionsBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  resumePair: { method: "POST", path: "/v1/pairs/:group/resume", summary: "Resume a suspended pair", params: groupParams, body: noOptionsBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  detachPair: { method: "POST", path: "/v1/pairs/:group/detach", summary: "On the secondary: the group leaves its consistency domain", params: groupParams, body: noOptionsBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  attachPair: { method: "POST", path: "/v1/pairs/:group/attach", summary: "On the secondary: the group rejoins its consistency domain", params: groupParams, body: noOptionsBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", ...diskErrors] },
  unfencePair: { method: "POST", path: "/v1/pairs/:group/unfence", summary: "Make a fenced group writable again (force: when its secondary took over)", params: groupParams, body: unfenceBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", "TM_ERR_PEER_TOOK_OVER", ...diskErrors] },
  deletePair: { method: "DELETE", path: "/v1/pairs/:group", summary: "End a pair and keep both images: on the primary both sides end; on the secondary only with ?force=true (this side only); ?promote=true makes the secondary's volumes writable. Idempotent: deleted false when already gone", params: groupParams, query: pairDeleteQuerySchema, status: 200, answer: pairEndSchema, errors: ["TM_ERR_STATE", "TM_ERR_CONFLICT", "TM_ERR_UNREACHABLE", ...diskErrors] },
  setPair: { method: "POST", path: "/v1/pairs/:group/set", summary: "The secondary moved: point the pair at its new management URL (the same node holding the same pair; no new copy)", params: groupParams, body: pairSetBodySchema, status: 200, answer: pairInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", "TM_ERR_CONFLICT", "TM_ERR_UNREACHABLE", ...diskErrors] },
  takeover: { method: "POST", path: "/v1/takeover", summary: "On the secondary: take over groups at one consistent cut (the primary fenced first, or force)", body: takeoverBodySchema, status: 200, answer: takeoverAnswerSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_STATE", "TM_ERR_CONFLICT", "TM_ERR_PRIMARY_UNREACHABLE", ...diskErrors] },

  preparePairSecondary: { method: "POST", path: "/v1/pair-secondaries", summary: "Node to node: a primary asks this node to make (or check) the secondary group of a pair", body: pairSecondaryBodySchema, status: 200, answer: pairSecondaryInfoSchema, errors: ["TM_ERR_EXISTS", "TM_ERR_CONFLICT", "TM_ERR_STATE", "TM_ERR_LIMIT", "TM_ERR_DOMAIN_INCOMPARABLE", ...diskErrors], peer: true },
  checkPairSecondary: { method: "POST", path: "/v1/pair-secondaries/check", summary: "Node to node (pair set): a primary asks this node whether it holds its side of the pair", body: pairSecondaryCheckBodySchema, status: 200, answer: pairSecondaryInfoSchema, errors: ["TM_ERR_NOT_FOUND", "TM_ERR_CONFLICT", "TM_ERR_STATE"], peer: true },
  endPairSecondary: { method: "POST", path: "/v1/pair-secondaries/end", summary: "Node to node (pair delete): a primary asks this node to end its side of the pair, keeping its image", body: pairSecondaryEndBodySchema, status: 200, answer: pairEndSchema, errors: ["TM_ERR_CONFLICT", "TM_ERR_STATE", ...diskErrors], peer: true },
  preparePairTarget: { method: "POST", path: "/v1/pair-targets", summary: "The path of /v1/pair-secondaries before the vocabulary was settled: a primary of the previous version still calls it", body: pairSecondaryBodySchema, status: 200, answer: pairSecondaryInfoSchema, errors: ["TM_ERR_EXISTS", "TM_ERR_CONFLICT", "TM_ERR_STATE", "TM_ERR_LIMIT", "TM_ERR_DOMAIN_INCOMPARABLE", ...diskErrors], peer: true, deprecated: true },
} as const satisfies Record<string, MgmtRoute>;

export type MgmtRouteName = keyof typeof mgmtRoutes;

/** The parsed (output) type of a route's part, or undefined when the route has none. */
type Parsed<S> = S extends z.ZodType ? z.output<S> : undefined;
/** What a caller sends for a route's part (input type: defaults may be left out). */
type Sent<S> = S extends z.ZodType ? z.input<S> : undefined;

/** What a handler receives: the route's path parameters, query and body, validated. */
export interface RouteInput<R extends MgmtRoute> {
  readonly params: Parsed<R["params"]>;
  readonly query: Parsed<R["query"]>;
  readonly body: Parsed<R["body"]>;
}

/** T with every array and object read-only (what the node's own types hand out). */
type DeepReadonly<T> = T extends ReadonlyArray<infer E> ? ReadonlyArray<DeepReadonly<E>> : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

/** What a handler answers: the answer schema's input type (its defaults may be left out), or text. */
export type RouteAnswer<R extends MgmtRoute> = R["answer"] extends z.ZodType ? DeepReadonly<z.input<R["answer"]>> : string;

/** What a client gets back: the answer schema's output type. */
export type RouteResult<R extends MgmtRoute> = R["answer"] extends z.ZodType ? z.output<R["answer"]> : string;

/** What a client passes to call a route: only the parts the route declares. */
export type RouteCall<R extends MgmtRoute> = (R["params"] extends z.ZodType ? { readonly params: DeepReadonly<Sent<R["params"]>> } : { readonly params?: undefined }) &
  (R["query"] extends z.ZodType ? { readonly query?: DeepReadonly<Sent<R["query"]>> } : { readonly query?: undefined }) &
  (R["body"] extends z.ZodType ? { readonly body: DeepReadonly<Sent<R["body"]>> } : { readonly body?: undefined });

/** The path with its parameters filled in (each URL-encoded): `/v1/pairs/:group` → `/v1/pairs/db`. */
export function routePath(route: MgmtRoute, params: Readonly<Record<string, unknown>> | undefined, query?: Readonly<Record<string, unknown>>): string {
  const path = route.path.replace(/:([A-Za-z]+)/g, (_match, name: string) => {
    const value = params?.[name];
    if (typeof value !== "string") throw new TypeError(`${route.method} ${route.path}: path parameter '${name}' missing`);
    return encodeURIComponent(value);
  });
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") search.set(key, String(value));
    else if (value !== undefined) throw new TypeError(`${route.method} ${route.path}: query parameter '${key}' must be a string, number or boolean`);
  }
  const text = search.toString();
  return text === "" ? path : `${path}?${text}`;
}
