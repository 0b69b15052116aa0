// The node's groups (issue 7 item 5): the one owner of the writable groups' writers
// (Map<name, GroupWriter>), their journal directories and the group ids. It recovers every
// group of node.json at start (a writable group's journal replayed to its volumes,
// group-recovery.ts; a pair's secondary handed to the secondary role), creates groups for the
// operator, turns a taken-over secondary into a writable group, lists the groups for status,
// health and metrics, and closes the writers at stop. node.ts wires it: node.json's store,
// the volume registry, the stamper and the two roles are given to it, never reached for.
import { join } from "node:path";
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { ControlError, JournalCorruptError, JournalFormatError } from "../core/errors.ts";
import { groupsPerNodeMax, journalBytesLimit, journalBytesMaxDefault, volumesPerGroupMax } from "../core/limits.ts";
import { validateName } from "../core/names.ts";
import { HostWriteLedger, recoveredAcceptedAtMs } from "../core/pair-view.ts";
import { RecordKind, recordPayloadBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { asAcceptNumber, asVolumeId, asWriteTimeUs } from "../core/types.ts";
import type { GroupRecord, NodeMetadata, PairRecord } from "../metadata/metadata.ts";
import type { MetadataStore } from "../metadata/metadata-store.ts";
import type { GroupInfo } from "../mgmt/control.ts";
import type { Clock } from "../node/clock.ts";
import type { JournalFigures } from "../node/metrics.ts";
import type { SecondaryRole } from "../secondary/secondary-role.ts";
import { makeDirectoryDurable } from "../storage/durable-fs.ts";
import type { FileSystem } from "../storage/fs.ts";
import { GroupJournal, type JournalOptions, type RecordCallback, type RecoveryReport } from "../storage/journal.ts";
import { saveWrittenMaps } from "../volumes/volume-files.ts";
import type { LiveVolume, VolumeRegistry } from "../volumes/volume-registry.ts";
import { JournalReplay } from "./group-recovery.ts";
import { GroupWriter, type CheckpointResult, type GroupVolume } from "./group-writer.ts";
import type { PrimaryRole } from "./primary-role.ts";
import type { NodeStamper } from "./stamper.ts";

/** What the registry asks of the primary role: a recovered group's pair, its acknowledged sequence, why its writes are held. */
export type RegistryPrimary = Pick<PrimaryRole, "openPair" | "ackedSequence" | "reflectedSequence" | "pairStatus" | "hasPair">;

/** What the registry asks of the secondary role: the groups that are the secondary of a pair. */
export type RegistrySecondaries = Pick<SecondaryRole, "recover" | "has" | "size" | "groupInfo" | "journalFigures">;

export interface GroupRegistryOptions {
  readonly dataDir: string;
  readonly fileSystem: FileSystem;
  readonly logger: Logger;
  readonly clock: Clock;
  /** node.json: read as last saved, changed only through its serialised update. */
  readonly store: MetadataStore;
  readonly volumes: VolumeRegistry;
  /** The node's stamper: every writer stamps with it; recovery raises it to what the journals hold. */
  readonly stamper: NodeStamper;
  readonly primary: RegistryPrimary;
  readonly secondaries: RegistrySecondaries;
  /** The smallest group journal allowed (bytes): a full journal must still take the largest write. */
  readonly journalBytesMin: number;
  /** Recovery cuts a damaged journal tail even when whole records follow it (NodeOptions.truncateDamagedJournals). */
  readonly cutDamagedTail: boolean;
}

export class GroupRegistry {
  private readonly options: GroupRegistryOptions;
  private readonly logger: Logger;
  /** The writable groups (those taking host writes) by name; a pair's secondary is the secondary role's. */
  private readonly writers = new Map<string, GroupWriter>();
  /** Ids handed out but maybe not yet persisted (creates run concurrently). */
  private groupIdReserved = 0;
  /** Volumes a group create in progress has claimed, and group names being created. */
  private readonly groupsInCreation = new Set<string>();
  private readonly groupsInDeletion = new Set<string>();

  constructor(options: GroupRegistryOptions) {
    this.options = options;
    this.logger = options.logger;
  }

  /** The writable group of that name, if any. */
  writer(name: string): GroupWriter | undefined {
    return this.writers.get(name);
  }

  /** How many writable groups there are. */
  get size(): number {
    return this.writers.size;
  }

  // ---- start and stop -------------------------------------------------------------

  /**
   * At start, after the volumes are open: every group of node.json in its order. A pair's
   * secondary goes to the secondary role; a writable group (or one taken over) gets its
   * journal recovered and replayed past the checkpoint, its writer, and its pair opened (not
   * started). A journal it cannot trust throws (the start stops with what to do).
   */
  async recover(): Promise<void> {
    const metadata = this.metadata();
    for (const record of metadata.groups) {
      if (record.secondary !== undefined && record.secondary.state !== "takeover") {
        await this.options.secondaries.recover(record, record.secondary);
        continue;
      }
      const volumes = this.groupVolumes(record, (volumeId) => `group ${record.name} names volume ${volumeId} that exists`);
      const replay = new JournalReplay(record.name, record.checkpointSequence, volumes, (volumeId, sizeBytes) => this.options.volumes.grow(volumeId, sizeBytes));
      // A pair's lag counts the host writes its journal holds past what the secondary was last
      // known to have reflected (core/pair-view.ts; the link drops the rest): noted while it is
      // read, each aged by the primary's wall time in it (the only clock that outlives a restart).
      const hostWrites = record.pair === undefined ? undefined : new HostWriteLedger();
      const nowMs = this.options.clock.monotonicMs();
      const nowWallUs = Math.floor(this.options.clock.wallMs() * 1000);
      const onRecord = hostWrites === undefined ? replay.onRecord : (journalRecord: JournalRecord): Promise<void> | void => {
        if (journalRecord.kind === RecordKind.write || journalRecord.kind === RecordKind.zeroes) {
          const atMs = recoveredAcceptedAtMs({ nowMs, nowWallUs, wallTimeUs: journalRecord.wallTimeUs });
          hostWrites.note(journalRecord.sequence, recordPayloadBytes(journalRecord.kind, journalRecord.lengthBytes), journalRecord.wallTimeUs, atMs);
        }
        return replay.onRecord(journalRecord);
      };
      const { journal, report } = await this.openJournal(record, { bytesMax: record.journalBytesMax, nextSequence: record.checkpointSequence + 1 }, onRecord);
      const lastSequence = report.lastSequence ?? 0;
      const nextSequence = Math.max(lastSequence + 1, record.checkpointSequence + 1);
      this.options.stamper.raiseTo({ recordedWriteTimeUs: asWriteTimeUs(report.maxWriteTimeUs), lastAcceptNumber: asAcceptNumber(report.maxAcceptNumber) });
      const writer = this.newWriter(record, journal, volumes, nextSequence, report.lastWriteSequence > 0 ? report.lastWriteSequence : Math.min(record.checkpointSequence, nextSequence - 1), report.maxWallTimeUs);
      if (replay.error !== undefined) writer.stopAfterRecoveryError(replay.error);
      writer.readOnlyReason = record.readOnly?.reason;
      if (record.pair !== undefined) this.options.primary.openPair(record, record.pair, writer, hostWrites);
      if (report.records > 0 || report.tornBytesCut > 0) {
        this.logger.info({ event: "journal_recovered", group: record.name, replayed: replay.replayed, records: report.records, tornBytesCut: report.tornBytesCut, nextSequence }, "journal recovered");
      }
    }
  }

  /**
   * At stop, after the pairs and the secondaries: every writer closed, and its journal with it
   * (a stopped group's journal was abandoned: what is on disk is what a restart recovers).
   * A writer that fails to close is logged and the stop goes on.
   */
  async close(): Promise<void> {
    // What each pair last knew acknowledged and reflected, for the next start's lag (a stopped
    // group takes no checkpoint at close, so it is saved here for every pair).
    if (this.writers.size > 0) {
      try {
        await this.options.store.update((m) => {
          for (const group of m.groups) if (group.pair !== undefined && this.writers.has(group.name)) savePairProgress(group.pair, this.options.primary, group.name);
        });
      } catch (error) {
        this.logger.error({ event: "pair_progress_save_failed", err: error }, "could not save the pairs' progress at stop; the next start shows more lag until the secondaries report in");
      }
    }
    for (const writer of this.writers.values()) {
      try {
        await writer.close();
        if (writer.stopped === undefined) await writer.journal.close();
      } catch (error) {
        this.logger.error({ event: "group_close_failed", group: writer.name, err: error }, "group did not close cleanly");
      }
    }
  }

  // ---- journals and ids (also the secondary role's) --------------------------------

  /** Opens (recovers) a group's journal; a journal it cannot trust stops the start with what to do. */
  async openJournal(record: GroupRecord, options: Omit<JournalOptions, "fileSystem">, onRecord?: RecordCallback): Promise<{ journal: GroupJournal; report: RecoveryReport }> {
    try {
      return await GroupJournal.open(this.journalDir(record), { ...options, fileSystem: this.options.fileSystem, cutDamagedTail: this.options.cutDamagedTail }, onRecord);
    } catch (error) {
      if (error instanceof JournalFormatError || error instanceof JournalCorruptError) {
        throw new Error(`group ${record.name}: ${error.message}`, { cause: error });
      }
      throw error;
    }
  }

  /** A group id for a new group: never one node.json holds or one handed out before, even if that create has not saved (or failed). */
  reserveGroupId(): number {
    const id = Math.max(this.metadata().nextGroupId, this.groupIdReserved);
    this.groupIdReserved = id + 1;
    return id;
  }

  /** The directory of a group's journal (of its generation: a secondary's copy starts a new one). */
  journalDir(record: Pick<GroupRecord, "id" | "journalGeneration">): string {
    const generation = record.journalGeneration ?? 0;
    return join(this.options.dataDir, "journals", generation === 0 ? String(record.id) : `${record.id}.${generation}`);
  }

  /** A taken-over group becomes an ordinary writable group over `journal` (the secondary role's takeover). */
  becomeWritable(record: GroupRecord, journal: GroupJournal): void {
    const writer = this.newWriter(record, journal, this.groupVolumes(record, () => "group volume exists"), 1);
    writer.readOnlyReason = record.readOnly?.reason;
  }

  /**
   * `pair delete GROUP --promote` on a group a pair delete left read-only: node.json forgets
   * `readOnly`, then host writes are accepted. Returns whether it was read-only (false: nothing
   * to do, or no such writable group). The save's error is thrown as it is.
   */
  async makeWritable(name: string): Promise<boolean> {
    const writer = this.writers.get(name);
    const record = this.metadata().groups.find((g) => g.name === name);
    if (writer === undefined || record?.readOnly === undefined) return false;
    await this.options.store.update((m) => {
      delete groupRecordById(m, record.id).readOnly;
    });
    writer.readOnlyReason = undefined;
    this.logger.info({ event: "group_promoted", group: name }, "group is writable: the image its deleted pair left is promoted");
    return true;
  }

  // ---- the operator's groups ------------------------------------------------------

  /**
   * Creates a writable group over existing volumes that belong to no group, with a new
   * journal of `journalBytesMax` bytes. Refuses with ControlError: TM_ERR_EXISTS (the name is
   * taken, or being created), TM_ERR_LIMIT (groups per node, volumes per group),
   * TM_ERR_INVALID (no volumes, one named twice, a journal size out of bounds),
   * TM_ERR_NOT_FOUND (no such volume), TM_ERR_CONFLICT (a volume in a group, or being put into
   * one by a create in progress). The file system's error is thrown as it is.
   */
  async create(name: string, volumeNames: readonly string[], journalBytesMax: number = journalBytesMaxDefault): Promise<GroupInfo> {
    validateName("group", name);
    const secondaries = this.options.secondaries;
    if (this.writers.has(name) || secondaries.has(name) || this.groupsInCreation.has(name)) throw new ControlError("TM_ERR_EXISTS", `group ${name} already exists`);
    if (this.writers.size + secondaries.size >= groupsPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${groupsPerNodeMax} groups`);
    if (volumeNames.length === 0) throw new ControlError("TM_ERR_INVALID", "a group needs at least one volume: --volumes V1[,V2...]");
    if (volumeNames.length > volumesPerGroupMax) throw new ControlError("TM_ERR_LIMIT", `a group holds at most ${volumesPerGroupMax} volumes`);
    if (new Set(volumeNames).size !== volumeNames.length) throw new ControlError("TM_ERR_INVALID", "a volume is named twice in --volumes");
    const journalBytesMin = this.options.journalBytesMin;
    if (!Number.isSafeInteger(journalBytesMax) || journalBytesMax < journalBytesMin || journalBytesMax > journalBytesLimit) {
      throw new ControlError("TM_ERR_INVALID", `journal size ${journalBytesMax} is not valid: it must be between ${journalBytesMin} bytes (a full journal must still take the largest write) and ${journalBytesLimit} bytes`);
    }
    const members: LiveVolume[] = [];
    for (const volumeName of volumeNames) {
      const volume = this.options.volumes.byName.get(volumeName);
      if (volume === undefined || volume.file === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `volume ${volumeName} does not exist; create it with: tidemark volume create ${volumeName} --size SIZE`);
      const owner = volume.group?.name ?? volume.secondary?.name;
      if (owner !== undefined) throw new ControlError("TM_ERR_CONFLICT", `volume ${volumeName} already belongs to group ${owner}; a volume belongs to at most one group`);
      if (this.options.volumes.claims.has(volume.id)) throw new ControlError("TM_ERR_CONFLICT", `volume ${volumeName} is being put into another group right now`);
      members.push(volume);
    }
    // Claimed before the first await, so concurrent creates cannot both take a volume or a name.
    for (const v of members) this.options.volumes.claims.add(v.id);
    this.groupsInCreation.add(name);
    try {
      return await this.createClaimed(name, volumeNames, members, journalBytesMax);
    } finally {
      for (const v of members) this.options.volumes.claims.delete(v.id);
      this.groupsInCreation.delete(name);
    }
  }

  private async createClaimed(name: string, volumeNames: readonly string[], members: readonly LiveVolume[], journalBytesMax: number): Promise<GroupInfo> {
    const id = this.reserveGroupId();
    await makeDirectoryDurable(this.options.fileSystem, this.journalDir({ id }));
    const { journal } = await GroupJournal.open(this.journalDir({ id }), { fileSystem: this.options.fileSystem, bytesMax: journalBytesMax, nextSequence: 1 }, () => undefined);
    const volumes = new Map<number, GroupVolume>(members.map((v) => [v.id, { id: asVolumeId(v.id), file: v.file, order: v.order }]));
    // Writes already in flight to these volumes finish outside the journal; later ones are journaled.
    await Promise.all(members.map((v) => v.order.drain()));
    for (const v of members) await v.file.datasync();
    const record: GroupRecord = { id, name, volumeIds: members.map((v) => v.id), checkpointSequence: 0, nextSequence: 1, journalBytesMax, createdAt: new Date(this.options.clock.wallMs()).toISOString() };
    await this.options.store.update((m) => {
      m.nextGroupId = Math.max(m.nextGroupId, id + 1);
      m.groups.push(record);
    });
    this.newWriter(record, journal, volumes, 1);
    this.logger.info({ event: "group_created", group: name, volumes: volumeNames }, "group created");
    const info = this.list().find((g) => g.name === name);
    assert(info !== undefined, "new group is listed");
    return info;
  }

  /**
   * Deletes writable group `name`: its writer is closed (what it took is applied and
   * checkpointed into the volumes), node.json forgets it, its volumes stay, ungrouped, and its
   * journal directory is removed. Returns false when no such group exists (deleting again is
   * not an error). Refuses with ControlError: TM_ERR_STATE (the group has a pair, is a pair's
   * secondary, or is stopped by its disk: its journal may hold writes the volumes lack),
   * TM_ERR_CONFLICT (a create or delete of that name runs now). Host writes to its volumes
   * while it closes fail (ESHUTDOWN, "the group is being deleted"); later ones go straight to
   * the volumes. The file system's error is thrown as it is (the group then stays, or is gone
   * with its journal directory left behind, which the next start removes: src/node/deleted-leftovers.ts).
   */
  async delete(name: string): Promise<boolean> {
    validateName("group", name);
    if (this.groupsInCreation.has(name) || this.groupsInDeletion.has(name)) throw new ControlError("TM_ERR_CONFLICT", `group ${name} is being created or deleted right now`);
    if (this.options.secondaries.has(name)) {
      throw new ControlError("TM_ERR_STATE", `group ${name} is the secondary of a pair: its volumes show the primary's image. End the pair first (tidemark pair delete ${name}, against the primary: the group stays here, read-only), then delete the group`);
    }
    const writer = this.writers.get(name);
    if (writer === undefined) return false;
    if (this.options.primary.hasPair(name)) throw new ControlError("TM_ERR_STATE", `group ${name} has a pair; end it first (tidemark pair delete ${name}), then delete the group`);
    if (writer.readOnlyReason !== undefined) {
      // Its volumes would leave the group writable: that is --promote's decision, not a delete's.
      throw new ControlError("TM_ERR_STATE", `group ${name} is read-only (${writer.readOnlyReason}); deleting it would make its volumes writable. To make them writable: tidemark pair delete ${name} --promote; to keep them as they are, keep the group`);
    }
    // As volume delete: a host connection open on a member would see its writes fail mid-way.
    const open = (this.metadata().groups.find((g) => g.name === name)?.volumeIds ?? []).flatMap((id) => {
      const volume = this.options.volumes.byId.get(id);
      return volume !== undefined && volume.leases > 0 ? [`${volume.name} (${volume.leases})`] : [];
    });
    if (open.length > 0) {
      throw new ControlError("TM_ERR_STATE", `group ${name} has volumes open by host connections (NBD or host protocol): ${open.join(", ")}; disconnect them first`);
    }
    const stop = writer.stopped;
    if (stop !== undefined) {
      throw new ControlError("TM_ERR_STATE", `group ${name} is stopped (${stop.reason}); its journal may hold writes its volumes lack. It resumes by itself once the disk is back; delete it then`);
    }
    this.groupsInDeletion.add(name);
    try {
      const record = this.metadata().groups.find((g) => g.name === name);
      assert(record !== undefined, `group ${name} is in node.json`);
      // Closed first: the checkpoint puts every write it took into the volumes, durably. A crash
      // before the save below finds the group as it was (the journal replays from the checkpoint).
      await writer.close("the group is being deleted");
      if (writer.stopped !== undefined) {
        throw new ControlError("TM_ERR_IO", `group ${name} could not be closed (${writer.stopped.reason}); it stays, stopped, and resumes by itself`);
      }
      await writer.journal.close();
      await this.options.store.update((m) => {
        m.groups = m.groups.filter((g) => g.id !== record.id);
      });
      this.writers.delete(name);
      for (const volumeId of record.volumeIds) {
        const live = this.options.volumes.byId.get(volumeId);
        if (live !== undefined && live.group === writer) live.group = undefined;
      }
      await this.options.fileSystem.removeTree(this.journalDir(record));
      const volumes = record.volumeIds.map((id) => this.options.volumes.byId.get(id)?.name ?? `#${id}`);
      this.logger.info({ event: "group_deleted", group: name, volumes }, "group deleted; its volumes stay, in no group");
      return true;
    } finally {
      this.groupsInDeletion.delete(name);
    }
  }

  // ---- status, health, metrics ----------------------------------------------------

  /** Every group of node.json in its order: a pair's secondary as the secondary role says it, a writable group from its writer. */
  list(): GroupInfo[] {
    const volumeName = (id: number): string => this.options.volumes.byId.get(id)?.name ?? `#${id}`;
    return this.metadata().groups.map((record) => {
      const secondary = this.options.secondaries.groupInfo(record, volumeName);
      if (secondary !== undefined) return secondary;
      const writer = this.writers.get(record.name);
      assert(writer !== undefined, `group ${record.name} is live`);
      const journal = writer.journal;
      return {
        name: record.name,
        volumes: record.volumeIds.map(volumeName),
        nextSequence: writer.nextSequence,
        appliedSequence: writer.appliedSequence,
        durableSequence: journal.durableSequence,
        journalBytes: journal.usedBytes,
        journalBytesMax: journal.bytesMax,
        journalSegments: journal.segmentCount,
        lastWriteTimeUs: writer.lastWriteTimeUs,
        state: writer.stopped === undefined ? "ok" : "stopped",
        heldWrites: writer.heldWrites,
        reason: writer.stopped?.reason ?? (writer.heldWrites > 0 ? this.heldReason(writer) : null) ?? (writer.readOnlyReason === undefined ? null : `read-only: ${writer.readOnlyReason}`) ??
          (record.incompleteCopy === undefined ? null : `holds an incomplete initial copy from node ${record.incompleteCopy.primaryNode} (its pair was deleted during the copy, ${record.incompleteCopy.at}): consistent with no point in time`),
      };
    });
  }

  /** Health reasons of the writable groups without a pair whose host writes are held (a pair says its own). */
  heldWithoutPairReasons(): string[] {
    const reasons: string[] = [];
    for (const writer of this.writers.values()) {
      if (writer.heldWrites > 0 && writer.stopped === undefined && !this.options.primary.hasPair(writer.name)) reasons.push(`group ${writer.name}: ${this.heldReason(writer)}`);
    }
    return reasons;
  }

  /** Every group's journal figures for the metrics: the secondaries' first, then the writable groups'. */
  journalFigures(): JournalFigures[] {
    return [...this.options.secondaries.journalFigures(), ...[...this.writers.values()].map((writer): JournalFigures => ({
      group: writer.name,
      usedBytes: writer.journal.usedBytes,
      bytesMax: writer.journal.bytesMax,
      fsyncs: writer.journal.fsyncCount,
      bytesWritten: writer.journal.bytesWritten,
      nextSequence: writer.nextSequence,
      appliedSequence: writer.appliedSequence,
      heldWrites: writer.heldWrites,
      stopped: writer.stopped === undefined ? 0 : 1,
      role: "primary",
    }))];
  }

  /** Why a group's host writes are held (pair status says the same, with the pair's part). */
  private heldReason(writer: GroupWriter): string {
    const linkReason = this.options.primary.pairStatus(writer.name)?.reason ?? null;
    if (linkReason !== null) return linkReason;
    const journal = writer.journal;
    const why = writer.holdReason === "apply-behind" ? "until the volumes catch up with the journal" : "until a checkpoint frees journal space";
    return `journal ${Math.round((journal.usedBytes / journal.bytesMax) * 100)}% full: ${writer.heldWrites} host writes held ${why} (held, never failed)`;
  }

  // ---- writers --------------------------------------------------------------------

  /** A writable group: its write path, with checkpoints persisted in the metadata; its volumes now write through it. */
  private newWriter(record: GroupRecord, journal: GroupJournal, volumes: Map<number, GroupVolume>, nextSequence: number, lastWriteSequence = nextSequence - 1, lastWallTimeUs = 0): GroupWriter {
    const writer = new GroupWriter({
      groupId: record.id,
      name: record.name,
      journal,
      stamper: this.options.stamper,
      volumes,
      nextSequence,
      appliedSequence: nextSequence - 1,
      checkpointSequence: record.checkpointSequence,
      lastWriteSequence,
      lastWallTimeUs,
      clock: this.options.clock,
      logger: this.logger.child({ component: "group", group: record.name }),
      persistCheckpoint: (result) => this.persistCheckpoint(record, volumes, result),
      growVolume: (volumeId, sizeBytes) => this.options.volumes.grow(volumeId, sizeBytes),
    });
    this.writers.set(record.name, writer);
    for (const volumeId of record.volumeIds) {
      const live = this.options.volumes.byId.get(volumeId);
      if (live !== undefined) {
        live.group = writer;
        live.secondary = undefined;
      }
    }
    return writer;
  }

  /**
   * A writer's checkpoint: the written maps first, then node.json (the checkpoint, and the
   * pair's acknowledged sequence). Once the checkpoint is persisted, the journal behind it
   * (which recovery would replay, marking again) may be trimmed.
   */
  private async persistCheckpoint(record: GroupRecord, volumes: Map<number, GroupVolume>, result: CheckpointResult): Promise<void> {
    await saveWrittenMaps(volumes.values());
    await this.options.store.update((m) => {
      const group = groupRecordById(m, record.id);
      assert(result.checkpointSequence >= group.checkpointSequence, "checkpoints never go back");
      group.checkpointSequence = result.checkpointSequence;
      group.nextSequence = result.nextSequence;
      if (group.pair !== undefined) savePairProgress(group.pair, this.options.primary, record.name);
    });
  }

  /** The volumes of a group's record, as its writer takes them; each must be open (`missing` says which was not). */
  private groupVolumes(record: GroupRecord, missing: (volumeId: number) => string): Map<number, GroupVolume> {
    const volumes = new Map<number, GroupVolume>();
    for (const volumeId of record.volumeIds) {
      const live = this.options.volumes.byId.get(volumeId);
      assert(live !== undefined, () => missing(volumeId));
      volumes.set(volumeId, { id: asVolumeId(volumeId), file: live.file, order: live.order });
    }
    return volumes;
  }

  private metadata(): NodeMetadata {
    return this.options.store.current;
  }
}

/** The metadata record of a group that must exist (a live group always has one). */
function groupRecordById(metadata: NodeMetadata, id: number): GroupRecord {
  const group = metadata.groups.find((g) => g.id === id);
  assert(group !== undefined, () => `group ${id} is in the metadata`);
  return group;
}

/**
 * Saves in a pair's record what the node knows of its secondary: the acknowledged sequence and
 * the reflected one (the next start counts its lag from it, core/pair-view.ts primaryReflectedSequence).
 * Both only move up here.
 */
function savePairProgress(pair: PairRecord, primary: RegistryPrimary, group: string): void {
  const acked = primary.ackedSequence(group);
  if (acked !== undefined) pair.ackedSequence = Math.max(pair.ackedSequence, acked);
  const reflected = primary.reflectedSequence(group);
  if (reflected !== undefined) pair.reflectedSequence = Math.max(pair.reflectedSequence ?? 0, reflected);
}
