// The node's metadata (node.json) and who may change it: one serialised read-modify-write
// at a time, the write time state saved with every change, memory following the disk.
// Loading migrates what earlier versions wrote (metadata.ts), with a log line each.
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { ControlError, NodeStartError } from "../core/errors.ts";
import type { FileSystem } from "../storage/fs.ts";
import { emptyMetadata, loadMetadata, raiseSmallJournals, saveMetadata, type NodeMetadata } from "./metadata.ts";

/** The stamper's state saved with every change (patent: write time information 340). */
export interface WriteTimeState {
  readonly recordedWriteTimeUs: number;
  readonly lastAcceptNumber: number;
}

export class MetadataStore {
  private metadata: NodeMetadata | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly fileSystem: FileSystem;
  private readonly dataDir: string;
  private readonly logger: Logger;
  private readonly writeTime: () => WriteTimeState;
  /** Runs a save the node cannot do without, giving back the space reserve on a full disk (TidemarkNode.withSpaceReserve). */
  private readonly critical: (what: string, write: () => Promise<void>) => Promise<void>;

  constructor(options: {
    fileSystem: FileSystem; dataDir: string; logger: Logger;
    writeTime: () => WriteTimeState;
    critical: (what: string, write: () => Promise<void>) => Promise<void>;
  }) {
    this.fileSystem = options.fileSystem;
    this.dataDir = options.dataDir;
    this.logger = options.logger;
    this.writeTime = options.writeTime;
    this.critical = options.critical;
  }

  /**
   * Loads node.json, or makes it for a new data directory. Data written by an earlier
   * version is migrated in place and saved, each change logged (`metadata_migrated`, and
   * `journal_limit_raised` for journal limits below `journalBytesMin`).
   * Throws NodeStartError (TM_ERR_CONFLICT) when the directory belongs to another node id,
   * and Error naming the file when it is not valid metadata.
   */
  async load(nodeId: string, nowIso: string, journalBytesMin: number): Promise<NodeMetadata> {
    const loadResult = await loadMetadata(this.fileSystem, this.dataDir);
    const loaded = loadResult?.metadata;
    for (const m of loadResult?.migrations ?? []) {
      this.logger.warn({ event: "metadata_migrated", group: m.group, change: m.what }, `metadata of group ${m.group} migrated in place: ${m.what}`);
    }
    if (loaded !== undefined && loaded.nodeId !== nodeId) {
      throw new NodeStartError("TM_ERR_CONFLICT", `data directory ${this.dataDir} belongs to node "${loaded.nodeId}", not "${nodeId}"; use --id ${loaded.nodeId} or another --data`);
    }
    const metadata = loaded ?? emptyMetadata(nodeId, nowIso);
    const raised = raiseSmallJournals(metadata, journalBytesMin);
    for (const r of raised) {
      this.logger.warn({ event: "journal_limit_raised", group: r.group, fromBytes: r.fromBytes, toBytes: r.toBytes }, `journal limit of group ${r.group} raised from ${r.fromBytes} to ${r.toBytes} bytes: a smaller journal cannot take the largest write (32 MiB) and would hold it forever`);
    }
    if (loaded === undefined || raised.length > 0 || (loadResult?.migrations.length ?? 0) > 0) await saveMetadata(this.fileSystem, this.dataDir, metadata);
    this.metadata = metadata;
    return metadata;
  }

  get loaded(): boolean {
    return this.metadata !== undefined;
  }

  /** What was last saved (read only: change it through update). Asserts that load() ran. */
  get current(): NodeMetadata {
    assert(this.metadata !== undefined, "metadata is loaded");
    return this.metadata;
  }

  /**
   * Serialised read-modify-write of the metadata; the write time state is saved with every
   * change. `change` edits the draft only: live state (a link's or a secondary's record) is
   * updated from the saved metadata after this resolves, never inside `change`, so a failed
   * save leaves memory as the disk is (an EIO on the save once left a secondary saying
   * "replicating" in memory and "copying" on disk; found by the whole-node simulation).
   * `critical` saves give back the space reserve on a full disk. Rejects with the save's
   * error (errno from the file system); memory is then unchanged.
   */
  update(change: (metadata: NodeMetadata) => void, critical = false): Promise<void> {
    const run = async (): Promise<void> => {
      const next = structuredClone(this.current);
      change(next);
      // Checked on the draft, inside the serialised update: commands racing each other (a group
      // create and a volume delete) cannot both land and leave node.json naming what is gone.
      const dangling = danglingVolume(next);
      if (dangling !== undefined) throw new ControlError("TM_ERR_CONFLICT", dangling);
      const writeTime = this.writeTime();
      next.writeTime = { recordedWriteTimeUs: writeTime.recordedWriteTimeUs, lastAcceptNumber: writeTime.lastAcceptNumber };
      const save = (): Promise<void> => saveMetadata(this.fileSystem, this.dataDir, next);
      await (critical ? this.critical("save the node's metadata", save) : save());
      this.metadata = next;
    };
    const result = this.chain.then(run);
    this.chain = result.catch(() => undefined);
    return result;
  }
}

/** Why `metadata` names a volume it does not hold (a group's member deleted meanwhile), or undefined. */
function danglingVolume(metadata: NodeMetadata): string | undefined {
  const volumeIds = new Set(metadata.volumes.map((v) => v.id));
  for (const group of metadata.groups) {
    const missing = group.volumeIds.find((id) => !volumeIds.has(id));
    if (missing !== undefined) return `group ${group.name} would name volume #${missing}, which is deleted (or being deleted); try again`;
  }
  return undefined;
}
