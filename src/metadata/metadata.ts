// The node's persistent metadata (patent: group management information 310, remote
// logical volume information 320, write time information 340), kept in one JSON file
// that is replaced atomically. Validated on load: unknown keys or bad values stop the node.
import { join } from "node:path";
import { z } from "zod";
import { journalBytesMin } from "../core/limits.ts";
import { readWholeFile, writeFileAtomic } from "../storage/durable-fs.ts";
import { errorCode, type FileSystem } from "../storage/fs.ts";

export const metadataFormatVersion = 1;
export const metadataFileName = "node.json";

const nonNegativeInteger = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const volumeRecordSchema = z.strictObject({
  id: nonNegativeInteger,
  name: z.string().min(1),
  sizeBytes: nonNegativeInteger,
  fileName: z.string().min(1),
  createdAt: z.string(),
});

const reflectModeSchema = z.enum(["time", "seq", "marker"]);
const transferModeSchema = z.enum(["push", "pull"]);

/** The primary's side of a pair (patent 310: remote storage device id, remote group id). */
const pairRecordSchema = z.strictObject({
  pairId: z.string().min(1),
  remoteNode: z.string(),
  remoteUrl: z.string(),
  remoteGroup: z.string(),
  remoteReplAddress: z.string(),
  transfer: transferModeSchema,
  streams: nonNegativeInteger.min(1),
  reflect: reflectModeSchema,
  state: z.enum(["copying", "replicating", "suspended", "failed", "fenced"]),
  /** S0: the last sequence the initial copy covers; the stream starts at S0 + 1. */
  copyStartSequence: nonNegativeInteger,
  /** The secondary is consistent once it reflected this far (set when the copy ends). */
  consistentFromSequence: nonNegativeInteger,
  /** The initial copy finished (acknowledged by the secondary). */
  copyDone: z.boolean(),
  /** Last acknowledged (durable on the secondary) sequence seen; a hint, the handshake wins. */
  ackedSequence: nonNegativeInteger,
  /**
   * Last sequence the secondary reported reflected, as this node last knew it (saved with every
   * checkpoint and at stop; absent before issue 9's lag fix: 0): a restart counts the lag from
   * it. A hint too: the secondary's next report wins (docs/operations.md, "Consistent as of").
   */
  reflectedSequence: nonNegativeInteger.optional(),
  reason: z.string().nullable(),
  /**
   * Why and since when the group is fenced (state `fenced`, docs/replication.md "Fencing"),
   * null otherwise; absent in node.json written before fencing existed (read as null).
   */
  fence: z.strictObject({
    reason: z.string(),
    since: z.string(),
    fencedSequence: nonNegativeInteger,
    fencedWriteSequence: nonNegativeInteger,
    peerTookOver: z.boolean(),
    cutSequence: nonNegativeInteger.nullable(),
    lateWrites: nonNegativeInteger.nullable(),
    lateWritesExact: z.boolean(),
  }).nullable().optional(),
  /** Remote volume information (patent 320): this node's volume id -> the secondary's volume name. */
  volumes: z.array(z.strictObject({ volumeId: nonNegativeInteger, remoteVolume: z.string() })),
  /** `pair create --domain NAME`: the named domain and the --max-clock-skew (ms) this node declared for it; a restart keeps waiting it out. */
  domain: z.strictObject({ name: z.string().min(1), maxClockSkewMs: nonNegativeInteger }).optional(),
});

/** The secondary's side of a pair. */
const secondaryRecordSchema = z.strictObject({
  pairId: z.string().min(1),
  primaryNode: z.string(),
  primaryGroup: z.string(),
  /** The primary's management URL, for hints (absent before issue 9's last stop, or when the primary could not tell). */
  primaryUrl: z.string().optional(),
  transfer: transferModeSchema,
  streams: nonNegativeInteger.min(1),
  reflect: reflectModeSchema,
  state: z.enum(["empty", "copying", "replicating", "takeover"]),
  /** First sequence of the replicated stream (S0 + 1). */
  startSequence: nonNegativeInteger.min(1),
  consistentFromSequence: nonNegativeInteger,
  /** Volumes hold every record through this sequence, fdatasync'd. */
  reflectedSequence: nonNegativeInteger,
  reflectedWriteTimeUs: nonNegativeInteger,
  reflectedAcceptNumber: nonNegativeInteger,
  /** The primary's wall time (Unix µs) of the last record reflected through the checkpoint: the consistent-as-of time after a restart (absent before issue 9: unknown until the next record). */
  reflectedWallTimeUs: nonNegativeInteger.optional(),
  /** The primary's volume id (as in the records) -> this node's volume id. */
  volumes: z.array(z.strictObject({ primaryVolumeId: nonNegativeInteger, volumeId: nonNegativeInteger })),
  /**
   * The pair's generation as this secondary knows it: 1 at pair create (absent in older
   * node.json), one more with every forced takeover (the primary was not fenced). A primary
   * that comes back is refused at the handshake by the taken-over state (docs/replication.md, "Fencing").
   */
  generation: nonNegativeInteger.min(1).optional(),
  /** After a takeover: the last sequence kept and how many received records were dropped. */
  takeover: z.strictObject({ keptSequence: nonNegativeInteger, droppedRecords: nonNegativeInteger, at: z.string() }).nullable(),
  /** `pair create --domain NAME`: the named consistency domain and what the primary declared of its write times (absent: the primary's own domain). */
  domain: z.strictObject({ name: z.string().min(1), writeTimePolicy: z.enum(["host", "clock", "counter"]), maxClockSkewMs: nonNegativeInteger }).optional(),
  /**
   * Where the group joined its consistency domain (issue 8): consistent with the other
   * members once it reflected a record past `afterSequence` at or past the position
   * (core/consistency-domain.ts JoinPoint). Absent or null: consistent with them from the start.
   */
  domainJoin: z.strictObject({ afterSequence: nonNegativeInteger, writeTimeUs: nonNegativeInteger, acceptNumber: nonNegativeInteger, at: z.string() }).nullable().optional(),
  /** `pair detach`: the group left its consistency domain and reflects alone until `pair attach`. Absent: attached. */
  detached: z.boolean().optional(),
  /**
   * `pair delete` decided on this side (docs/replication.md, "Ending a pair"): the group left its
   * domain and keeps every record through `keepThroughSequence`; a start finishes the conversion
   * into an ordinary group (read-only unless `promote`). Absent: no delete in progress.
   */
  ending: z.strictObject({ keepThroughSequence: nonNegativeInteger, promote: z.boolean(), at: z.string() }).optional(),
});

const groupRecordSchema = z.strictObject({
  id: nonNegativeInteger,
  name: z.string().min(1),
  volumeIds: z.array(nonNegativeInteger),
  /** Every record up to this sequence is applied to the volumes and the volumes are fdatasync'd. */
  checkpointSequence: nonNegativeInteger,
  /** The next sequence number at the checkpoint (a floor: sequences never go back). */
  nextSequence: nonNegativeInteger.min(1),
  journalBytesMax: nonNegativeInteger,
  createdAt: z.string(),
  /** Set when this group is the source of a pair. */
  pair: pairRecordSchema.optional(),
  /** Set when this group is the secondary of a pair (its volumes are read-only until takeover). */
  secondary: secondaryRecordSchema.optional(),
  /** Journal directory generation: a takeover starts a fresh journal in a new directory. */
  journalGeneration: nonNegativeInteger.optional(),
  /**
   * Host writes are refused (EPERM): the group was the secondary of a pair deleted without
   * `--promote` (its volumes keep the image the pair left). `pair delete GROUP --promote` clears
   * it. Absent: writable.
   */
  readOnly: z.strictObject({ reason: z.string(), since: z.string() }).optional(),
  /**
   * The group was the secondary of a pair ended during its initial copy (`pair delete --force`
   * there): its volumes hold an incomplete copy from `primaryNode`, consistent with no point in
   * time. Kept after `--promote` (status says so); absent otherwise.
   */
  incompleteCopy: z.strictObject({ primaryNode: z.string(), pairId: z.string(), at: z.string() }).optional(),
});

/**
 * A takeover decided and not finished yet (docs/replication.md, "Takeover"): saved once,
 * before any named group is converted; a start finds it and finishes the conversion at
 * exactly these cuts. Absent when no takeover is unfinished (earlier versions never wrote it:
 * their node.json opens unchanged).
 */
const takeoverIntentSchema = z.strictObject({
  /** When the takeover was decided (wall clock, ISO 8601): the groups' `takeover.at`. */
  at: z.string(),
  groups: z.array(z.strictObject({
    groupId: nonNegativeInteger,
    name: z.string().min(1),
    /** The cut: the volumes keep every record through this sequence and none after it. */
    keepThroughSequence: nonNegativeInteger,
    /** Records received past the cut (and past a gap) that the takeover drops. */
    droppedRecords: nonNegativeInteger,
  })).min(1),
});

/**
 * A pair end this primary owes its secondary (docs/replication.md, "Ending a pair"): `pair
 * delete --force` ended the pair here while the secondary could not be reached; the primary
 * tells it once it can (PrimaryRole), so the secondary's group does not wait for a primary
 * that will never come, holding its consistency domain. Absent in earlier node.json.
 */
const pairEndOwedSchema = z.strictObject({
  pairId: z.string().min(1),
  /** The group on this node whose pair it was. */
  group: z.string().min(1),
  remoteNode: z.string(),
  remoteUrl: z.string(),
  remoteGroup: z.string(),
  /** When the pair was ended here (wall clock, ISO 8601). */
  since: z.string(),
});

export const nodeMetadataSchema = z.strictObject({
  formatVersion: z.literal(metadataFormatVersion),
  nodeId: z.string().min(1),
  createdAt: z.string(),
  nextVolumeId: nonNegativeInteger.min(1),
  nextGroupId: nonNegativeInteger.min(1),
  volumes: z.array(volumeRecordSchema),
  groups: z.array(groupRecordSchema),
  writeTime: z.strictObject({
    recordedWriteTimeUs: nonNegativeInteger,
    lastAcceptNumber: nonNegativeInteger,
  }),
  takeoverIntent: takeoverIntentSchema.optional(),
  pairEndsOwed: z.array(pairEndOwedSchema).optional(),
});

export type NodeMetadata = z.infer<typeof nodeMetadataSchema>;
export type VolumeRecord = z.infer<typeof volumeRecordSchema>;
export type GroupRecord = z.infer<typeof groupRecordSchema>;
export type PairRecord = z.infer<typeof pairRecordSchema>;
export type SecondaryRecord = z.infer<typeof secondaryRecordSchema>;
export type TakeoverIntentRecord = z.infer<typeof takeoverIntentSchema>;
export type PairEndOwedRecord = z.infer<typeof pairEndOwedSchema>;

export function emptyMetadata(nodeId: string, nowIso: string): NodeMetadata {
  return {
    formatVersion: metadataFormatVersion,
    nodeId,
    createdAt: nowIso,
    nextVolumeId: 1,
    nextGroupId: 1,
    volumes: [],
    groups: [],
    writeTime: { recordedWriteTimeUs: 0, lastAcceptNumber: 0 },
  };
}

/** What loading changed in a data directory written by an earlier version; the node logs each and saves. */
export interface MetadataMigration {
  readonly group: string;
  readonly what: string;
}

/**
 * Renames what earlier versions wrote under other names, in place, before validation:
 * a group's `target` (versions up to c7f8e8c) is its `secondary` (DESIGN.md's vocabulary).
 * Anything it does not recognise is left for the schema to refuse.
 */
export function migrateMetadata(parsed: unknown): MetadataMigration[] {
  const migrations: MetadataMigration[] = [];
  if (typeof parsed !== "object" || parsed === null) return migrations;
  const groups = (parsed as { groups?: unknown }).groups;
  if (!Array.isArray(groups)) return migrations;
  for (const group of groups as unknown[]) {
    if (typeof group !== "object" || group === null) continue;
    const record = group as Record<string, unknown>;
    if (!("target" in record) || "secondary" in record) continue;
    record.secondary = record.target;
    delete record.target;
    migrations.push({ group: typeof record.name === "string" ? record.name : "?", what: "the field 'target' is now 'secondary'" });
  }
  return migrations;
}

/**
 * Loads the metadata, or returns undefined for a data directory that has none yet. Data
 * written by an earlier version is migrated in memory (`migrations` says what changed; the
 * caller logs it and saves). Throws Error naming the file when it is not JSON or not valid.
 */
export async function loadMetadata(fs: FileSystem, dataDir: string): Promise<{ readonly metadata: NodeMetadata; readonly migrations: readonly MetadataMigration[] } | undefined> {
  let text: string;
  try {
    text = (await readWholeFile(fs, join(dataDir, metadataFileName))).toString("utf8");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${join(dataDir, metadataFileName)} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  const migrations = migrateMetadata(parsed);
  const result = nodeMetadataSchema.safeParse(parsed);
  if (!result.success) {
    throw new Error(`${join(dataDir, metadataFileName)} is not valid tidemark metadata: ${z.prettifyError(result.error)}`);
  }
  return { metadata: result.data, migrations };
}

/**
 * A group journal limit below journalBytesMin (allowed by older versions, or edited by
 * hand) cannot take the largest write the front ends accept next to what a full journal
 * keeps: such a write, and every one after it, would wait forever. Raises each such limit
 * to the minimum, in place; returns what it changed so the node logs it and saves.
 */
export function raiseSmallJournals(metadata: NodeMetadata, bytesMin: number = journalBytesMin): { readonly group: string; readonly fromBytes: number; readonly toBytes: number }[] {
  const raised: { group: string; fromBytes: number; toBytes: number }[] = [];
  for (const group of metadata.groups) {
    if (group.journalBytesMax >= bytesMin) continue;
    raised.push({ group: group.name, fromBytes: group.journalBytesMax, toBytes: bytesMin });
    group.journalBytesMax = bytesMin;
  }
  return raised;
}

/** Persists atomically; serialised by the caller (one save at a time). */
export async function saveMetadata(fs: FileSystem, dataDir: string, metadata: NodeMetadata): Promise<void> {
  nodeMetadataSchema.parse(metadata); // never write what we could not read back
  await writeFileAtomic(fs, join(dataDir, metadataFileName), JSON.stringify(metadata, null, 2) + "\n");
}
