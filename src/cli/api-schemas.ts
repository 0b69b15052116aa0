// Shapes of the management API's answers, checked by the CLI before it trusts them.
// Unknown keys are allowed (a newer node may say more); the compile-time checks at the
// bottom keep these in step with the node's own types in src/node/control.ts.
import { z } from "zod";
import type { GroupInfo, NodeStatus, VolumeInfo } from "../node/control.ts";

const count = z.number().int().nonnegative();

export const volumeInfoSchema = z.object({
  name: z.string(),
  sizeBytes: count,
  allocatedBytes: count,
  group: z.string().nullable(),
  readOnly: z.boolean(),
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

export const healthSchema = z.object({ status: z.string(), id: z.string() });
export const volumeListSchema = z.object({ volumes: z.array(volumeInfoSchema) });
export const volumeCreatedSchema = z.object({ volume: volumeInfoSchema });
export const groupListSchema = z.object({ groups: z.array(groupInfoSchema) });
export const groupCreatedSchema = z.object({ group: groupInfoSchema });

/** Every API error body: {error:{code,message}}. */
export const apiErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

// Compile-time: what the CLI accepts must be assignable to what the node declares it sends.
type Assignable<T, U extends T> = U;
export type CheckedVolume = Assignable<VolumeInfo, z.infer<typeof volumeInfoSchema>>;
export type CheckedGroup = Assignable<GroupInfo, z.infer<typeof groupInfoSchema>>;
export type CheckedStatus = Assignable<NodeStatus, z.infer<typeof nodeStatusSchema>>;
