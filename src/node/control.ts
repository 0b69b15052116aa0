// What the management API (and through it the CLI) may ask of a running node.
// The node implements it; the HTTP layer only validates, calls and serialises.

export interface VolumeInfo {
  readonly name: string;
  readonly sizeBytes: number;
  /** Bytes actually allocated on disk (the file is sparse). */
  readonly allocatedBytes: number;
  /** Group the volume belongs to, or null. */
  readonly group: string | null;
  readonly readOnly: boolean;
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

/** Errors the control surface reports; the HTTP layer maps `code` to a status. */
export type ControlErrorCode =
  | "TM_ERR_INVALID"        // 400: bad name, size, etc.
  | "TM_ERR_NOT_FOUND"      // 404
  | "TM_ERR_EXISTS"         // 409
  | "TM_ERR_CONFLICT"       // 409: e.g. volume already in a group
  | "TM_ERR_LIMIT"          // 409: too many volumes/groups
  | "TM_ERR_NO_SPACE"       // 507
  | "TM_ERR_INTERNAL";      // 500

export class ControlError extends Error {
  override name = "ControlError";
  readonly code: ControlErrorCode;
  constructor(code: ControlErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface NodeControl {
  status(): NodeStatus;
  listVolumes(): readonly VolumeInfo[];
  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo>;
  listGroups(): readonly GroupInfo[];
  createGroup(name: string, volumes: readonly string[]): Promise<GroupInfo>;
  /** Prometheus text exposition of the node's metrics. */
  metrics(): Promise<{ contentType: string; body: string }>;
}
