// The management contract: the one place where the management API's requests and answers
// are declared. The node's HTTP server validates request bodies with the request schemas,
// the CLI checks answers with the response schemas, and a node that calls another node
// (a primary asking its secondary) checks the answer with them too. docs/cli.md
// ("The management API") describes the rules.
import { z } from "zod";
import {
  groupsPerNodeMax, maxClockSkewMsMax, mgmtUrlLengthMax, replPairIdBytesMax, replStreamsDefault, replStreamsMax, volumeBytesMax,
  volumeBytesMin, volumesPerGroupMax, journalBytesLimit, journalBytesMin, journalRecordPayloadBytesMax } from "../core/limits.ts";
import { nameProblem } from "../core/names.ts";
import type { WriteTimePolicy } from "../core/types.ts";
import {
  pairStates, type CopyMode, type CreatePairRequest, type GroupInfo, type NodeStatus, type PairInfo, type PairSecondaryCheckRequest, type PairSecondaryEndRequest, type PairSecondaryInfo, type PairSecondaryRequest,
  type ReflectMode, type TakeoverResult, type TransferMode, type VolumeInfo } from "./control.ts";

// ---- requests (the server validates them; unknown keys are refused) ------------------

export const nameSchema = (kind: string) =>
  z.string().superRefine((value, ctx) => {
    const problem = nameProblem(kind, value);
    if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
  });

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
  journalBytes: count,
  journalBytesMax: count,
  copy: z.object({ doneBytes: count, totalBytes: count, volumeBytes: count.optional(), dataBytes: count.optional() }).nullable(),
  lastCopy: z.object({ doneBytes: count, totalBytes: count, volumeBytes: count, dataBytes: count.optional() }).nullable().optional(),
  heldWrites: count,
  reason: z.string().nullable(),
  // sentBytes / receivedBytes: 0 from a node that predates them.
  link: z.object({ connectedStreams: count, reconnects: count, lastError: z.string().nullable(), sentBytes: count.default(0), receivedBytes: count.default(0) }),
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

export const healthSchema = z.object({ status: z.string(), id: z.string() });
export const volumeListSchema = z.object({ volumes: z.array(volumeInfoSchema) });
export const volumeCreatedSchema = z.object({ volume: volumeInfoSchema });
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
  secondary: z.object({ deleted: z.boolean(), note: z.string().nullable() }).optional(),
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
