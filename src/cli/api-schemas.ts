// Shapes of the management API's answers, checked by the CLI before it trusts them.
// Unknown keys are allowed (a newer node may say more); the compile-time checks at the
// bottom keep these in step with the node's own types in src/mgmt/control.ts.
import { z } from "zod";
import { pairStates, type GroupInfo, type NodeStatus, type PairInfo, type TakeoverResult, type VolumeInfo } from "../mgmt/control.ts";

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
export const volumeDeletedSchema = z.object({ volume: z.string(), deleted: z.boolean() });
export const groupDeletedSchema = z.object({ group: z.string(), deleted: z.boolean() });

/** Every API error body: {error:{code,message}}. */
export const apiErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

// Compile-time: what the CLI accepts must be assignable to what the node declares it sends.
type Assignable<T, U extends T> = U;
export type CheckedVolume = Assignable<VolumeInfo, z.infer<typeof volumeInfoSchema>>;
export type CheckedGroup = Assignable<GroupInfo, z.infer<typeof groupInfoSchema>>;
export type CheckedStatus = Assignable<NodeStatus, z.infer<typeof nodeStatusSchema>>;
export type CheckedPair = Assignable<PairInfo, z.infer<typeof pairInfoSchema>>;
export type CheckedTakeover = Assignable<TakeoverResult, z.infer<typeof takeoverResultSchema>>;
