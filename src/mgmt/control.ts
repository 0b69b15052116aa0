// What the management API (and through it the CLI) may ask of a running node.
// The node implements it; the HTTP layer only validates, calls and serialises.

import type { LagHistoryView } from "../core/lag-history.ts";
import type { TmErrorCode } from "../core/errors.ts";
import type { PairFence } from "../core/primary-pair.ts";
import type { WriteTimePolicy } from "../core/types.ts";

export interface VolumeInfo {
  readonly name: string;
  readonly sizeBytes: number;
  /** Bytes actually allocated on disk (the file is sparse). */
  readonly allocatedBytes: number;
  /** Group the volume belongs to, or null. */
  readonly group: string | null;
  readonly readOnly: boolean;
  /** Bytes inside extents marked in the volume's written map: what an initial copy sends (docs/volumes.md). */
  readonly writtenBytes?: number;
  /** Set when the volume's unallocated part is larger than the free space of its file system. */
  readonly warning?: string | null;
}

export interface GroupInfo {
  readonly name: string;
  readonly volumes: readonly string[];
  /** Sequence number the next accepted write gets. */
  readonly nextSequence: number;
  /** Highest sequence number applied to the volumes. */
  readonly appliedSequence: number;
  /** Highest sequence number known durable (fdatasync'd) in the journal. */
  readonly durableSequence: number;
  readonly journalBytes: number;
  readonly journalBytesMax: number;
  readonly journalSegments: number;
  /** Write time stamped on the newest record, microseconds. */
  readonly lastWriteTimeUs: number;
  /** `stopped`: a full disk or an I/O error stopped the group (it resumes by itself); `reason` says where. */
  readonly state: "ok" | "stopped";
  /** Host writes waiting (journal full, slowed, volumes behind); 0 on a pair's secondary. */
  readonly heldWrites: number;
  /** Why the group is stopped, holds host writes, or (a pair's secondary) takes no more records; null when none. */
  readonly reason: string | null;
}

export interface ListenerInfo {
  readonly mgmt: string;
  readonly nbd: string;
  readonly host: string;
  readonly repl: string;
}

export interface NodeStatus {
  readonly id: string;
  readonly version: string;
  readonly writeTimePolicy: string;
  readonly dataDir: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly listeners: ListenerInfo;
  /** Recorded write time (patent: write time information 340), microseconds. */
  readonly recordedWriteTimeUs: number;
  readonly volumes: readonly VolumeInfo[];
  readonly groups: readonly GroupInfo[];
  readonly connections: { readonly nbd: number; readonly host: number };
}

/** The codes the control surface reports: core/errors.ts has the table (and their HTTP statuses). */
export type ControlErrorCode = TmErrorCode;

/** GET /v1/health: 200 either way; `degraded` while any group is held, stopped, failed or fenced, or a pair disconnected. */
export interface NodeHealth {
  readonly status: "ok" | "degraded";
  /** One line per group that is not healthy, saying why. */
  readonly reasons: readonly string[];
}

/** GET /v1/ready: whether the node serves (started, not stopping); liveness is /v1/health. */
export interface NodeReadiness {
  readonly ready: boolean;
  /** "ready", "starting" or "stopping". */
  readonly status: "ready" | "starting" | "stopping";
}

export interface NodeControl {
  status(): NodeStatus;
  /** Every pair's lag in seconds over the last minutes, sampled by the node (core/lag-history.ts). */
  lagHistory(): readonly LagHistoryView[];
  health(): NodeHealth;
  ready(): NodeReadiness;
  listVolumes(): readonly VolumeInfo[];
  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo>;
  /**
   * Deletes a volume in no group; false when there is no such volume. `force`: also when it
   * holds data. TM_ERR_STATE (in a group, a pair's secondary, open by a host), TM_ERR_CONFLICT
   * (it holds data and not `force`).
   */
  deleteVolume(name: string, force: boolean): Promise<boolean>;
  /**
   * Grows a volume to `sizeBytes` (grow only; the same size again changes nothing: `changed`
   * false). A volume in a group grows at a point of its sequence, and a pair's secondary with
   * it (docs/volumes.md, "Growing a volume"). TM_ERR_INVALID (smaller, not a volume size),
   * TM_ERR_NOT_FOUND, TM_ERR_STATE (a pair's secondary, the pair copying, the group stopped,
   * fenced or holding writes), TM_ERR_CONFLICT (a resize of it runs), TM_ERR_LIMIT / TM_ERR_NO_SPACE.
   */
  resizeVolume(name: string, sizeBytes: number): Promise<{ readonly volume: VolumeInfo; readonly changed: boolean }>;
  listGroups(): readonly GroupInfo[];
  /** journalBytesMax: the journal's size limit (default journalBytesMaxDefault). */
  createGroup(name: string, volumes: readonly string[], journalBytesMax?: number): Promise<GroupInfo>;
  /**
   * Deletes a writable group (its volumes stay, in no group); false when there is no such group.
   * TM_ERR_STATE while it has a pair, is a pair's secondary, or is stopped by its disk.
   */
  deleteGroup(name: string): Promise<boolean>;
  /** Prometheus text exposition of the node's metrics. */
  metrics(): Promise<{ contentType: string; body: string }>;
}

// ---- remote copy (pairs) ------------------------------------------------------------

/**
 * Every state a pair may show (pair status; one `tidemark_pair_state` series each; docs/operations.md, "Pair states"):
 * `held`: host writes held on the primary (its journal is full), or (secondary) its records wait behind another group
 * of its consistency domain; `reason` names it and says since when.
 * `stopped`: the group is stopped by a full disk or an I/O error on this node (it resumes by itself; `reason` says where).
 * `disconnected`: the pair should run but no replication stream is up (primary: since `link.downSince`, with the last
 * error, retrying; secondary: no stream from the primary).
 */
export const pairStates = ["copying", "replicating", "disconnected", "suspended", "failed", "takeover", "stopped", "fenced", "held"] as const;
export type PairState = (typeof pairStates)[number];

/** A fenced primary group (docs/replication.md, "Fencing"): why, since when, and what a failback must know; as node.json keeps it. */
export type PairFenceInfo = PairFence;
export type PairRole = "primary" | "secondary";
export type TransferMode = "push" | "pull";
export type ReflectMode = "time" | "seq" | "marker";
export type CopyMode = "async" | "sync";

export interface PairInfo {
  /** The group on this node. */
  readonly group: string;
  readonly role: PairRole;
  readonly state: PairState;
  /**
   * Whether the pair runs as it should (`pair status --check`, health): its state is copying or
   * replicating, and on a secondary its initial copy has not stalled (no stream from the
   * primary for secondaryCopyStalledMs). Absent from nodes before it: judge by the state.
   */
  readonly healthy?: boolean;
  readonly pairId: string;
  readonly remoteNode: string;
  /** Management URL of the other node when known (the primary knows the secondary's; the secondary knows the primary's when it sent it at pair create). */
  readonly remoteUrl: string | null;
  readonly remoteGroup: string;
  readonly mode: CopyMode;
  readonly transfer: TransferMode;
  readonly streams: number;
  readonly reflect: ReflectMode;
  /** Last sequence accepted on the primary (as known on this node). */
  readonly acceptedSequence: number;
  /** Sequence of the newest host write (primary): once the secondary reflected it, it holds every write accepted so far; `pair wait` waits for it. */
  readonly writeSequence?: number;
  /** Last sequence sent by the primary. */
  readonly sentSequence: number;
  /** Last sequence of the contiguous prefix durable on the secondary. */
  readonly arrivedSequence: number;
  /** Last sequence applied to the secondary's volumes. */
  readonly reflectedSequence: number;
  readonly lagRecords: number;
  readonly lagBytes: number;
  /** Age of the oldest accepted host write not yet reflected (as this node knows); on a secondary cut off from its primary, at least the age of consistentAsOf. */
  readonly lagSeconds: number;
  /**
   * ISO 8601: the latest primary wall time T such that every write the primary accepted by T
   * is in the secondary's image (as this node knows); null while the image is not consistent
   * (copying, catching up) or not known yet.
   */
  readonly consistentAsOf: string | null;
  /** ISO 8601: when this node last heard from the peer of the pair (any replication message); null if not since it started. */
  readonly lastContact: string | null;
  readonly journalBytes: number;
  readonly journalBytesMax: number;
  /**
   * Initial copy progress while copying, else null. totalBytes: what the copy reads (the
   * written extents of the volumes; on a secondary, the volumes' size until the copy ends);
   * doneBytes: of those, the bytes done; volumeBytes: the volumes' size; dataBytes (primary):
   * the bytes sent so far, only the 4 KiB blocks that hold data.
   */
  readonly copy: { readonly doneBytes: number; readonly totalBytes: number; readonly volumeBytes?: number; readonly dataBytes?: number } | null;
  /** The figures of the last initial copy that finished while this node ran (primary), else null. */
  readonly lastCopy?: { readonly doneBytes: number; readonly totalBytes: number; readonly volumeBytes: number; readonly dataBytes?: number } | null;
  /** Host writes waiting for journal space right now. */
  readonly heldWrites: number;
  /** Why the pair is slowed, held, suspended or failed; null when all is well. */
  readonly reason: string | null;
  /**
   * The replication link. sentBytes / receivedBytes: journal records (encoded) and initial-copy
   * data this node sent / received for the pair since it started.
   */
  readonly link: {
    readonly connectedStreams: number; readonly reconnects: number; readonly lastError: string | null; readonly sentBytes: number; readonly receivedBytes: number;
    /** ISO 8601: since when the link is down while the state is `disconnected`, else null. */
    readonly downSince: string | null;
  };
  /** Set while the pair's group is fenced (primary side). */
  readonly fence?: PairFenceInfo | null;
}

export interface CreatePairRequest {
  readonly group: string;
  /** Management URL of the secondary node. */
  readonly to: string;
  readonly remoteGroup?: string | undefined;
  readonly mode: CopyMode;
  readonly transfer: TransferMode;
  readonly streams: number;
  readonly reflect: ReflectMode;
  /** Overwrite secondary volumes of the same names that already hold data (CONTRACT.md: `--force`). */
  readonly force?: boolean | undefined;
  /** The named consistency domain the group joins on the secondary (`--domain`); absent: the primary's own domain. */
  readonly domain?: string | undefined;
}

/** Sent by a primary to the secondary's management API: make (or check) the secondary group. */
export interface PairSecondaryRequest {
  readonly pairId: string;
  readonly primaryNode: string;
  readonly primaryGroup: string;
  /**
   * The primary's management URL as its operator reaches it (absent from primaries before this
   * field, and when the primary could not tell): named in the secondary's hints after a takeover.
   */
  readonly primaryUrl?: string | undefined;
  /** Group name on the secondary. */
  readonly group: string;
  readonly volumes: readonly { readonly name: string; readonly sizeBytes: number }[];
  readonly reflect: ReflectMode;
  readonly transfer: TransferMode;
  readonly streams: number;
  /** The operator allowed overwriting existing volumes that hold data (`pair create --force`). */
  readonly force?: boolean | undefined;
  /**
   * `pair create --domain NAME`: the named domain, with the primary's write-time policy and
   * `--max-clock-skew` in ms (0: none), which the secondary checks (core/named-domain.ts).
   */
  readonly domain?: { readonly name: string; readonly writeTimePolicy: WriteTimePolicy; readonly maxClockSkewMs: number } | undefined;
}

export interface PairSecondaryInfo {
  readonly nodeId: string;
  readonly group: string;
  /** HOST:PORT of the secondary's replication listener. */
  readonly replAddress: string;
}

/** Sent by a primary to the secondary's management API: end the pair on that side, keeping its image (`pair delete`). */
export interface PairSecondaryEndRequest {
  readonly pairId: string;
  /** The primary node (checked against the pair's). */
  readonly primaryNode: string;
  /** Group name on the secondary. */
  readonly group: string;
  /** The secondary's volumes become an ordinary writable group (else they stay read-only). */
  readonly promote: boolean;
}

/** Sent by a primary to a secondary's (new) management address: do you hold this pair? (`pair set`). */
export interface PairSecondaryCheckRequest {
  readonly pairId: string;
  readonly primaryNode: string;
  /** Group name on the secondary. */
  readonly group: string;
}

/** What ending a pair did on one node (`pair delete`, on either side). */
export interface PairEndInfo {
  readonly group: string;
  /** The pair was there and is gone now; false: there was no such pair (nothing to do). */
  readonly deleted: boolean;
  /** This node's role in the pair that ended, or null when there was none. */
  readonly role: PairRole | null;
  /** The group's volumes refuse host writes (a secondary's image kept without --promote). */
  readonly readOnly: boolean;
  /** On a secondary: the last sequence of the primary's the image holds, else null. */
  readonly keptSequence: number | null;
  /** On a primary: what became of the secondary's side (the call's answer, or why it was left as it is with --force); `readOnly`: its volumes' state after it, when it answered. */
  readonly secondary?: {
    readonly deleted: boolean;
    readonly note: string | null;
    readonly readOnly?: boolean | undefined;
    /** The secondary had taken the group over: it only forgot the pair (its group was writable already). */
    readonly takenOver?: boolean | undefined;
    /** The secondary's node id and management URL (for what to type there). */
    readonly node?: string | undefined;
    readonly url?: string | undefined;
  } | undefined;
  /** This call made the group's volumes writable (`--promote`). */
  readonly promoted?: boolean | undefined;
  /** The volumes hold an initial copy that never finished: consistent with no point in time. */
  readonly incompleteCopy?: boolean | undefined;
  /** On a secondary: the group had been taken over (it was writable before; only the pair is forgotten). */
  readonly takenOver?: boolean | undefined;
}

export interface TakeoverResult {
  readonly group: string;
  /** Last sequence kept (reflected) on the secondary. */
  readonly reflectedSequence: number;
  /** Records received but beyond the last consistent point, dropped. */
  readonly droppedRecords: number;
  readonly state: PairState;
  /** How the primary was dealt with: fenced (its answer's last accepted sequence is kept), or forced (not fenced: the site was declared lost). */
  readonly primary?: { readonly fenced: boolean; readonly lastAcceptedSequence: number | null; readonly lastWriteSequence: number | null; readonly forced: boolean; readonly generation: number } | undefined;
  /** A takeover of part of a consistency domain: from which groups this one is detached (issue 8). */
  readonly domainNote?: string;
}

/** `pair takeover` options. */
export interface TakeoverOptions {
  /** The operator declares the primary site lost: take over without fencing it if it cannot be reached. */
  readonly force?: boolean | undefined;
}

/** The pair operations; the node implements them alongside NodeControl. */
export interface PairControl {
  /** `seenAs`: how the caller reached this node (the request's Host header), for the URL the secondary records. */
  createPair(request: CreatePairRequest, seenAs?: { readonly host?: string | undefined }): Promise<PairInfo>;
  listPairs(): readonly PairInfo[];
  /** Throws ControlError TM_ERR_NOT_FOUND when the group has no pair. */
  pair(group: string): PairInfo;
  suspendPair(group: string): Promise<PairInfo>;
  resumePair(group: string): Promise<PairInfo>;
  takeover(groups: readonly string[], options?: TakeoverOptions): Promise<readonly TakeoverResult[]>;
  /** Makes a fenced primary group writable again; `force` when its secondary took over. */
  unfencePair(group: string, force: boolean): Promise<PairInfo>;
  /** Suspends (resumes) the pairs of every listed group together: every name is checked before any is changed (on the primary). */
  suspendPairs(groups: readonly string[]): Promise<readonly PairInfo[]>;
  resumePairs(groups: readonly string[]): Promise<readonly PairInfo[]>;
  /** On the secondary: the group leaves (rejoins) its consistency domain (issue 8). */
  detachPair(group: string): Promise<PairInfo>;
  attachPair(group: string): Promise<PairInfo>;
  preparePairSecondary(request: PairSecondaryRequest): Promise<PairSecondaryInfo>;
  /**
   * `pair delete GROUP`: on the primary, ends the pair on both sides (the secondary through
   * endPairSecondary); on the secondary only with `force` (this side only). `promote`: the
   * secondary's volumes become writable. A pair already gone answers deleted false.
   */
  deletePair(group: string, options: { readonly force: boolean; readonly promote: boolean }): Promise<PairEndInfo>;
  /**
   * `pair set GROUP --to URL` on the primary: the secondary moved; the node at `to` must be the
   * same node holding the same pair. Saved, then the pair reconnects to its new replication address.
   */
  setPairSecondary(group: string, to: string): Promise<PairInfo>;
  /** A primary asks this node whether it holds its side of pair `pairId` (node to node): its id and replication address, or a refusal. */
  checkPairSecondary(request: PairSecondaryCheckRequest): PairSecondaryInfo;
  /** A primary asks this node to end its side of pair `pairId` (node to node). */
  endPairSecondary(request: PairSecondaryEndRequest): Promise<PairEndInfo>;
}
