// One tidemark node: a storage system with an id and a data directory. It recovers its
// volumes and journals, then serves NBD, the host protocol, replication and management.
// This file wires the pieces; the write path is in group-writer.ts, the servers in their own files.
import { ControlError, JournalCorruptError, JournalFormatError, NodeStartError } from "../core/errors.ts";
import { join } from "node:path";
import type { Logger } from "pino";
import { assert, unreachable } from "../core/assert.ts";
import { groupsPerNodeMax, hostWriteTimeAheadUsMax, journalBytesLimit, journalBytesMaxDefault, journalBytesMin, volumesPerGroupMax } from "../core/limits.ts";
import { asAcceptNumber, asVolumeId, asWriteTimeUs, type WriteTimePolicy } from "../core/types.ts";
import { type VolumeCatalog } from "../core/volume-io.ts";
import { RecordKind, type JournalRecord } from "../protocol/journal-record.ts";
import { GroupJournal, type JournalOptions, type RecordCallback, type RecoveryReport } from "../storage/journal.ts";
import { makeDirectoryDurable, readWholeFile, writeWholeFile } from "../storage/durable-fs.ts";
import { dataDirError, listenError } from "./start-errors.ts";
import type { FileSystem } from "../storage/fs.ts";
import { nodeFileSystem } from "../storage/node-fs.ts";
import { SpaceReserve } from "../storage/space-reserve.ts";
import { type CreatePairRequest, type GroupInfo, type NodeControl, type NodeHealth, type NodeStatus, type PairControl, type PairInfo, type PairSecondaryInfo, type PairSecondaryRequest, type TakeoverResult, type VolumeInfo } from "../mgmt/control.ts";
import { GroupWriter, type GroupVolume } from "../primary/group-writer.ts";
import { startHostServer, type HostServer } from "../frontends/host-server.ts";
import { MetadataStore } from "../metadata/metadata-store.ts";
import { httpPeerClient, type PeerClient } from "../transport/peer-client.ts";
import { validateName } from "../core/names.ts";
import { VolumeRegistry, type LiveVolume } from "../volumes/volume-registry.ts";
import { type GroupRecord, type NodeMetadata, type SecondaryRecord } from "../metadata/metadata.ts";
import { PrimaryRole } from "../primary/primary-role.ts";
import { emptySecondaryVolumes, saveWrittenMaps, volumeBytes } from "../volumes/volume-files.ts";
import { Reflector } from "../secondary/reflector.ts";
import { ReplServer, type SecondaryHost } from "../secondary/repl-server.ts";
import { SecondaryGroup, type SecondaryVolume } from "../secondary/secondary-group.ts";
import { positionZero } from "../core/position.ts";
import { NodeMetrics, type JournalFigures } from "./metrics.ts";
import { startMgmtApi } from "../mgmt/mgmt-api.ts";
import { startNbdServer, type NbdServer } from "../frontends/nbd-server.ts";
import { NodeStamper, wallClockUs } from "../primary/stamper.ts";
import { systemClock, type Clock, type Timer } from "./clock.ts";
import { tcpTransport, type Transport } from "../transport/transport.ts";
import { formatBytes } from "../cli/sizes.ts";
import { isStorageError } from "./group-stop.ts";
import { faultInjected } from "../core/faults.ts";

export const tidemarkVersion = "0.1.0";

export interface Address {
  readonly host: string;
  readonly port: number;
}

export interface NodeOptions {
  readonly id: string;
  readonly dataDir: string;
  readonly mgmt: Address;
  readonly nbd: Address;
  readonly host: Address;
  readonly repl: Address;
  /** Replication address told to primaries, when it differs from the listener (NAT, proxy). */
  readonly replAdvertise?: Address | undefined;
  readonly writeTimePolicy: WriteTimePolicy;
  readonly logger: Logger;
  /** The clocks (default: the system's). */
  readonly clock?: Clock;
  /** How replication streams are opened and accepted (default: plain TCP). */
  readonly transport?: Transport;
  /**
   * What the node serves: "all" (default: NBD, host protocol, replication, management API) or
   * "replication" (only the replication listener: the simulation drives volumes through their
   * handles and the node through its control methods).
   */
  readonly serve?: "all" | "replication";
  /** How this node asks another node's management API to act (default: HTTP). */
  readonly peers?: PeerClient;
  /** Every file of the data directory is reached through this (default: node:fs; the simulation: its disk). */
  readonly fileSystem?: FileSystem;
  /** Recovery cuts a damaged journal tail even when whole records follow it (after a power loss; the operator's call). */
  readonly truncateDamagedJournals?: boolean;
  /**
   * Journal sizing for the simulation (production leaves both unset): the smallest group
   * journal allowed (default journalBytesMin, which takes the largest write a front end
   * accepts) and a secondary's journal size (default journalBytesMaxDefault). The
   * simulation's hosts write at most a few KiB, so journals of a few hundred KiB fill and
   * drain within a short schedule and run the same full-journal code as 4 GiB ones; a write
   * that can never fit a journal is refused (EINVAL), as always.
   */
  readonly journalSizing?: { readonly bytesMin: number; readonly secondaryBytesMax: number };
}

/** A secondary group that reflected only time advances is checkpointed at most this often (unless forced). */
const secondaryIdleCheckpointIntervalMs = 30_000;

/** At most one log line per this interval about host write times lowered to the clock's bound. */
const hostTimeClampLogIntervalMs = 10_000;

/** How often volume allocation (for status) is re-read from the files. */
const allocationRefreshMs = 5000;

export class TidemarkNode implements NodeControl, PairControl, SecondaryHost {
  private readonly options: NodeOptions;
  private readonly logger: Logger;
  /** Free bytes of the volumes' file system at the last look (statfs), for the overcommit warning. */
  private freeBytes: number | undefined;
  private readonly stamper: NodeStamper;
  private readonly metadataStore: MetadataStore;
  private readonly volumes: VolumeRegistry;
  private readonly groups = new Map<string, GroupWriter>();
  readonly nodeMetrics: NodeMetrics;
  private allocationTimer: Timer | undefined;
  private nbdServer: NbdServer | undefined;
  private hostServer: HostServer | undefined;
  private replServer: ReplServer | undefined;
  /** Groups that are the secondary of a pair (secondary side). */
  private readonly secondaryGroups = new Map<string, SecondaryGroup>();
  /** The pairs this node is the primary of. */
  private readonly primary: PrimaryRole;
  private readonly reflector: Reflector;
  /** Ids handed out but maybe not yet persisted (creates run concurrently). */
  private groupIdReserved = 0;
  /** Volumes a group create in progress has claimed, and group names being created. */
  private readonly claimedVolumes = new Set<number>();
  private readonly groupsInCreation = new Set<string>();
  private mgmtApi: { port: number; close(): Promise<void> } | undefined;
  private startedAt = new Date(0);
  private startedAtMs = 0;
  private lockPath: string;
  private readonly spaceReserve: SpaceReserve;
  private lockTaken = false;
  private stopping: Promise<void> | undefined;
  readonly ports = { mgmt: 0, nbd: 0, host: 0, repl: 0 };
  private readonly clock: Clock;
  private readonly transport: Transport;
  private readonly peers: PeerClient;
  private readonly fileSystem: FileSystem;

  constructor(options: NodeOptions) {
    this.options = options;
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.transport = options.transport ?? tcpTransport;
    this.fileSystem = options.fileSystem ?? nodeFileSystem;
    let clampLoggedAtMs = -Infinity;
    let clampsSinceLog = 0;
    this.stamper = new NodeStamper(options.writeTimePolicy, wallClockUs(options.clock ?? systemClock), {
      hostTimeClamped: (hostWriteTimeUs, boundUs) => {
        clampsSinceLog += 1;
        const nowMs = this.clock.monotonicMs();
        if (nowMs - clampLoggedAtMs < hostTimeClampLogIntervalMs) return;
        this.logger.warn({ event: "host_write_time_clamped", hostWriteTimeUs, recordedUs: boundUs, clamped: clampsSinceLog },
          `a host sent write time ${new Date(hostWriteTimeUs / 1000).toISOString()}, more than ${hostWriteTimeAheadUsMax / 1e6} s ahead of this node's clock; recorded ${new Date(boundUs / 1000).toISOString()} instead (${clampsSinceLog} such writes since the last line): check the host's clock`);
        clampLoggedAtMs = nowMs;
        clampsSinceLog = 0;
      },
    });
    this.nodeMetrics = new NodeMetrics(options.id, () => this.journalFigures(), (options.serve ?? "all") === "all");
    this.peers = options.peers ?? httpPeerClient;
    this.lockPath = join(options.dataDir, "lock");
    this.spaceReserve = new SpaceReserve(this.fileSystem, options.dataDir);
    this.metadataStore = new MetadataStore({
      fileSystem: this.fileSystem, dataDir: options.dataDir, logger: this.logger,
      writeTime: () => this.stamper.state,
      critical: (what, write) => this.withSpaceReserve(what, write),
    });
    this.volumes = new VolumeRegistry({ fileSystem: this.fileSystem, dataDir: options.dataDir, logger: this.logger, store: this.metadataStore, clock: this.clock });
    this.primary = new PrimaryRole({
      nodeId: options.id,
      logger: this.logger,
      clock: this.clock,
      transport: this.transport,
      metadata: () => this.requireMetadata(),
      updateMetadata: (change, critical) => this.updateMetadata(change, critical),
      writer: (group) => this.groups.get(group),
      isSecondary: (group) => this.secondaryGroups.has(group),
      volume: (volumeId) => this.volumesById.get(volumeId),
      prepareSecondary: (baseUrl, request) => this.peers.preparePairSecondary(baseUrl, request),
    });
    this.reflector = new Reflector({
      groups: () => [...this.secondaryGroups.values()],
      logger: this.logger.child({ component: "reflector" }),
      clock: this.clock,
      checkpointGroup: (group, force) => this.checkpointSecondary(group, force),
      onReflected: (group) => this.replServer?.reportReflected(group),
    });
  }

  private get volumesByName(): Map<string, LiveVolume> {
    return this.volumes.byName;
  }

  private get volumesById(): Map<number, LiveVolume> {
    return this.volumes.byId;
  }

  get nodeId(): string {
    return this.options.id;
  }

  // ---- start and stop -------------------------------------------------------------

  async start(): Promise<void> {
    this.startedAt = new Date(this.clock.wallMs());
    this.startedAtMs = this.clock.monotonicMs();
    try {
      await makeDirectoryDurable(this.fileSystem, this.options.dataDir); // a new one's name, too
      await this.takeLock();
      if (!(await this.spaceReserve.ensure())) this.logger.warn({ event: "space_reserve_missing", path: this.spaceReserve.path }, "no room for the space reserve now; it is made once there is");
      await makeDirectoryDurable(this.fileSystem, join(this.options.dataDir, "volumes"));
      await makeDirectoryDurable(this.fileSystem, join(this.options.dataDir, "journals"));
    } catch (error) {
      // An uncreatable directory, a file in the way, no permission: one line that says so.
      throw dataDirError(this.options.dataDir, error);
    }
    const metadata = await this.metadataStore.load(this.options.id, this.startedAt.toISOString(), this.journalBytesMinValue);
    this.stamper.raiseTo({
      recordedWriteTimeUs: asWriteTimeUs(metadata.writeTime.recordedWriteTimeUs),
      lastAcceptNumber: asAcceptNumber(metadata.writeTime.lastAcceptNumber),
    });
    await this.volumes.open();
    await this.recoverGroups();
    // A restarted secondary replays to the recomputed frontier before anyone reads its image.
    if (!faultInjected("skip-recovery-replay")) await this.reflector.drain();
    await this.startListeners();
    this.primary.start();
    await this.refreshAllocation();
    this.allocationTimer = this.clock.setInterval(() => void this.refreshAllocation(), allocationRefreshMs);
    this.logger.info({ event: "node_started", id: this.options.id, dataDir: this.options.dataDir, ports: this.ports, volumes: this.volumesByName.size, groups: this.groups.size, writeTime: this.options.writeTimePolicy }, "node started");
  }

  private async takeLock(): Promise<void> {
    try {
      await this.withSpaceReserve("take the data directory's lock", async () => {
        const handle = await this.fileSystem.open(this.lockPath, "create-exclusive");
        try {
          await writeWholeFile(handle, `${process.pid}\n`);
        } catch (error) {
          await handle.close();
          await this.fileSystem.unlink(this.lockPath).catch(() => undefined);
          throw error;
        }
        await handle.close();
      });
      this.lockTaken = true;
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const pid = Number.parseInt((await readWholeFile(this.fileSystem, this.lockPath)).toString("utf8").trim(), 10);
    if (Number.isInteger(pid) && pid !== process.pid && (await processAlive(this.fileSystem, pid))) {
      throw new NodeStartError("TM_ERR_CONFLICT", `data directory ${this.options.dataDir} is in use by process ${pid}; stop that node first or use another --data`);
    }
    this.logger.warn({ event: "stale_lock", stalePid: pid }, "previous node did not stop cleanly; recovering");
    await this.fileSystem.unlink(this.lockPath);
    await this.takeLock();
  }

  private async recoverGroups(): Promise<void> {
    const metadata = this.requireMetadata();
    for (const record of metadata.groups) {
      if (record.secondary !== undefined && record.secondary.state !== "takeover") {
        await this.recoverSecondary(record, record.secondary);
        continue;
      }
      const volumes = new Map<number, GroupVolume>();
      for (const volumeId of record.volumeIds) {
        const live = this.volumesById.get(volumeId);
        assert(live !== undefined, `group ${record.name} names volume ${volumeId} that exists`);
        volumes.set(volumeId, { id: asVolumeId(volumeId), file: live.file, order: live.order });
      }
      let replayed = 0;
      // A full disk or an I/O error while re-applying stops this group alone: the node starts,
      // and the group replays again when it resumes (it keeps the journal, so nothing is lost).
      let replayError: Error | undefined;
      const replay = async (journalRecord: JournalRecord): Promise<void> => {
        // Re-apply in sequence order: idempotent, whatever the volumes already held.
        if (journalRecord.sequence <= record.checkpointSequence || replayError !== undefined) return;
        try {
          await replayRecord(record.name, volumes, journalRecord);
        } catch (error) {
          if (!isStorageError(error)) throw error;
          replayError = error as Error;
          return;
        }
        replayed += 1;
      };
      const { journal, report } = await this.openJournal(record, { bytesMax: record.journalBytesMax, nextSequence: record.checkpointSequence + 1 }, replay);
      const lastSequence = report.lastSequence ?? 0;
      const nextSequence = Math.max(lastSequence + 1, record.checkpointSequence + 1);
      this.stamper.raiseTo({ recordedWriteTimeUs: asWriteTimeUs(report.maxWriteTimeUs), lastAcceptNumber: asAcceptNumber(report.maxAcceptNumber) });
      const writer = this.newWriter(record, journal, volumes, nextSequence, report.lastWriteSequence > 0 ? report.lastWriteSequence : Math.min(record.checkpointSequence, nextSequence - 1));
      if (replayError !== undefined) writer.stopAfterRecoveryError(replayError);
      if (record.pair !== undefined) this.primary.openPair(record, record.pair, writer);
      if (report.records > 0 || report.tornBytesCut > 0) {
        this.logger.info({ event: "journal_recovered", group: record.name, replayed, records: report.records, tornBytesCut: report.tornBytesCut, nextSequence }, "journal recovered");
      }
    }
  }

  /** Opens (recovers) a group's journal; a journal it cannot trust stops the start with what to do. */
  private async openJournal(record: GroupRecord, options: Omit<JournalOptions, "fileSystem">, onRecord?: RecordCallback): Promise<{ journal: GroupJournal; report: RecoveryReport }> {
    try {
      return await GroupJournal.open(this.journalDir(record), { ...options, fileSystem: this.fileSystem, cutDamagedTail: this.options.truncateDamagedJournals === true }, onRecord);
    } catch (error) {
      if (error instanceof JournalFormatError || error instanceof JournalCorruptError) {
        throw new Error(`group ${record.name}: ${error.message}`, { cause: error });
      }
      throw error;
    }
  }

  private reserveGroupId(): number {
    const id = Math.max(this.requireMetadata().nextGroupId, this.groupIdReserved);
    this.groupIdReserved = id + 1;
    return id;
  }

  private journalDir(record: Pick<GroupRecord, "id" | "journalGeneration">): string {
    const generation = record.journalGeneration ?? 0;
    return join(this.options.dataDir, "journals", generation === 0 ? String(record.id) : `${record.id}.${generation}`);
  }

  /** A writable group: its write path, with checkpoints persisted in the metadata. */
  private newWriter(record: GroupRecord, journal: GroupJournal, volumes: Map<number, GroupVolume>, nextSequence: number, lastWriteSequence = nextSequence - 1): GroupWriter {
    const writer = new GroupWriter({
      groupId: record.id,
      name: record.name,
      journal,
      stamper: this.stamper,
      volumes,
      nextSequence,
      appliedSequence: nextSequence - 1,
      checkpointSequence: record.checkpointSequence,
      lastWriteSequence,
      clock: this.clock,
      logger: this.logger.child({ component: "group", group: record.name }),
      // The written maps first: once the checkpoint is persisted, the journal behind it (which
      // recovery would replay, marking again) may be trimmed.
      persistCheckpoint: async (result) => {
        await saveWrittenMaps(volumes.values());
        await this.updateMetadata((m) => {
          const group = groupRecordById(m, record.id);
          assert(result.checkpointSequence >= group.checkpointSequence, "checkpoints never go back");
          group.checkpointSequence = result.checkpointSequence;
          group.nextSequence = result.nextSequence;
          const acked = this.primary.ackedSequence(record.name);
          if (group.pair !== undefined && acked !== undefined) group.pair.ackedSequence = Math.max(group.pair.ackedSequence, acked);
        });
      },
    });
    this.groups.set(record.name, writer);
    for (const volumeId of record.volumeIds) {
      const live = this.volumesById.get(volumeId);
      if (live !== undefined) {
        live.group = writer;
        live.secondary = undefined;
      }
    }
    return writer;
  }

  /** The secondary side of a pair: journal recovered (not replayed: the reflector does that), volumes read-only. */
  private async recoverSecondary(record: GroupRecord, secondary: SecondaryRecord): Promise<void> {
    const volumes: SecondaryVolume[] = record.volumeIds.map((volumeId) => {
      const live = this.volumesById.get(volumeId);
      assert(live !== undefined, `secondary ${record.name} names volume ${volumeId} that exists`);
      return { volumeId, name: live.name, file: live.file };
    });
    const { journal, report } = await this.openJournal(record, { bytesMax: record.journalBytesMax, nextSequence: secondary.startSequence });
    const lastRecordPosition = report.records > 0 ? { writeTimeUs: asWriteTimeUs(report.maxWriteTimeUs), acceptNumber: asAcceptNumber(report.maxAcceptNumber) } : undefined;
    const group = new SecondaryGroup({
      groupId: record.id, name: record.name, record: structuredClone(secondary), journal, volumes, logger: this.logger.child({ component: "secondary", group: record.name }), lastRecordPosition,
      clock: this.clock,
      // Stopped: the domain is held where it is (nothing to do); resumed: reflect what waited.
      onStateChange: () => this.reflector.kick(),
    });
    this.secondaryGroups.set(record.name, group);
    for (const volume of volumes) {
      const live = this.volumesById.get(volume.volumeId);
      if (live !== undefined) live.secondary = group;
    }
    // A crash between a checkpoint's metadata save and its trim leaves records the checkpoint
    // covers in the journal: trim them now. Nothing else would (a restarted reflector has
    // nothing dirty to checkpoint), and a journal full of them refused every batch for ever
    // (whole-node simulation, a crash point right after the save).
    if (secondary.state === "replicating" && secondary.reflectedSequence >= journal.firstSequence && !faultInjected("no-trim-at-start")) {
      try {
        await group.trimThrough(secondary.reflectedSequence);
      } catch (error) {
        group.stopWith(error as Error, journal.dir);
      }
    }
    if (report.records > 0 || report.tornBytesCut > 0) {
      this.logger.info({ event: "secondary_journal_recovered", group: record.name, records: report.records, tornBytesCut: report.tornBytesCut, reflected: secondary.reflectedSequence, arrived: group.arrivedSequence }, "secondary journal recovered");
    }
  }

  private async startListeners(): Promise<void> {
    // A port another process holds (or one this user may not bind): one line naming the option.
    const listen = async <T>(flag: string, address: Address, open: () => Promise<T>): Promise<T> => {
      try {
        return await open();
      } catch (error) {
        throw listenError(flag, address.host, address.port, error);
      }
    };
    const { nbd, host, repl, mgmt } = this.options;
    if ((this.options.serve ?? "all") === "replication") {
      this.replServer = new ReplServer(this, this.logger.child({ component: "repl" }), this.clock, this.transport);
      const replServer = this.replServer;
      this.ports.repl = await listen("--repl", repl, () => replServer.listen(repl.host, repl.port));
      return;
    }
    const catalog = this.catalog();
    this.nbdServer = await listen("--nbd", nbd, () => startNbdServer({
      host: nbd.host, port: nbd.port, catalog, logger: this.logger.child({ component: "nbd" }),
      onRequest: (op, bytes, latencySeconds, errno) => this.nodeMetrics.observe("nbd", op, bytes, latencySeconds, errno === 0),
    }));
    this.ports.nbd = this.nbdServer.port;
    this.hostServer = await listen("--host-port", host, () => startHostServer({
      host: host.host, port: host.port, catalog, logger: this.logger.child({ component: "host" }),
      onRequest: (op, bytes, latencySeconds, ok) => this.nodeMetrics.observe("host", op, bytes, latencySeconds, ok),
    }));
    this.ports.host = this.hostServer.port;
    this.replServer = new ReplServer(this, this.logger.child({ component: "repl" }), this.clock, this.transport);
    const replServer = this.replServer;
    this.ports.repl = await listen("--repl", repl, () => replServer.listen(repl.host, repl.port));
    this.mgmtApi = await listen("--mgmt", mgmt, () => startMgmtApi({ host: mgmt.host, port: mgmt.port, control: this, logger: this.logger.child({ component: "mgmt" }) }));
    this.ports.mgmt = this.mgmtApi.port;
  }

  /** Clean stop: no new connections, in-flight work finished, journals durable, checkpoint saved. */
  stop(): Promise<void> {
    this.stopping ??= this.runStop();
    return this.stopping;
  }

  private async runStop(): Promise<void> {
    this.logger.info({ event: "node_stopping" }, "stopping");
    this.clock.clear(this.allocationTimer);
    await this.mgmtApi?.close();
    await this.nbdServer?.close();
    await this.hostServer?.close();
    this.primary.stop();
    await this.replServer?.close();
    await this.reflector.stop();
    for (const secondary of this.secondaryGroups.values()) {
      try {
        await secondary.close();
        await secondary.journal.close();
      } catch (error) {
        this.logger.error({ event: "secondary_close_failed", group: secondary.name, err: error }, "secondary journal did not close cleanly");
      }
    }
    for (const writer of this.groups.values()) {
      try {
        await writer.close();
        // A stopped group's journal was abandoned: what is on disk is what a restart recovers.
        if (writer.stopped === undefined) await writer.journal.close();
      } catch (error) {
        this.logger.error({ event: "group_close_failed", group: writer.name, err: error }, "group did not close cleanly");
      }
    }
    for (const volume of this.volumesById.values()) {
      // A disk that fails now loses nothing the journals do not hold: say so and go on stopping.
      await volume.file.datasync().catch((error: unknown) => {
        this.logger.error({ event: "volume_sync_failed", volume: volume.name, err: error }, "volume not synced at stop; the journal still covers it");
      });
      await volume.file.written.save().catch((error: unknown) => {
        this.logger.error({ event: "written_map_save_failed", volume: volume.name, err: error }, "written map not saved at stop; the journal still covers it");
      });
      await volume.file.close();
    }
    if (this.metadataStore.loaded) {
      await this.updateMetadata(() => undefined).catch((error: unknown) => {
        this.logger.error({ event: "metadata_save_failed", err: error }, "metadata not saved at stop; the last saved checkpoint and the journals still cover it");
      });
    }
    if (this.lockTaken) await this.fileSystem.unlink(this.lockPath).catch(() => undefined);
    this.logger.info({ event: "node_stopped" }, "stopped");
  }

  // ---- metadata -------------------------------------------------------------------

  private requireMetadata(): NodeMetadata {
    return this.metadataStore.current;
  }

  /**
   * Runs a write the node cannot do without (the lock at start, a takeover's journal files
   * and metadata); on a full disk the space reserve is given back and the write tried once
   * more, with a log line. Only those: any other write that meets a full disk fails and
   * stops its group, so the reserve is still there when a takeover needs it.
   */
  private async withSpaceReserve<T>(what: string, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOSPC" || !(await this.spaceReserve.release())) throw error;
      this.logger.warn({ event: "space_reserve_released", what, path: this.spaceReserve.path }, `the disk is full: released the space reserve to ${what}; it is made again once there is room`);
      return write();
    }
  }

  /** The smallest group journal this node allows (NodeOptions.journalSizing). */
  private get journalBytesMinValue(): number {
    return this.options.journalSizing?.bytesMin ?? journalBytesMin;
  }

  /** After a metadata save: the secondary's live record becomes what was saved. */
  private secondaryRecordSaved(secondary: SecondaryGroup): void {
    const saved = this.requireMetadata().groups.find((g) => g.id === secondary.groupId)?.secondary;
    if (saved !== undefined) secondary.record = structuredClone(saved);
  }

  /** A metadata change, saved before memory follows (MetadataStore.update). */
  private updateMetadata(change: (metadata: NodeMetadata) => void, critical = false): Promise<void> {
    return this.metadataStore.update(change, critical);
  }

  // ---- front ends -----------------------------------------------------------------

  catalog(): VolumeCatalog {
    return this.volumes.catalog();
  }

  // ---- NodeControl ----------------------------------------------------------------

  status(): NodeStatus {
    const address = (a: Address, port: number): string => `${a.host}:${port}`;
    return {
      id: this.options.id,
      version: tidemarkVersion,
      writeTimePolicy: this.options.writeTimePolicy,
      dataDir: this.options.dataDir,
      startedAt: this.startedAt.toISOString(),
      uptimeSeconds: Math.round((this.clock.monotonicMs() - this.startedAtMs) / 1000),
      listeners: {
        mgmt: address(this.options.mgmt, this.ports.mgmt),
        nbd: address(this.options.nbd, this.ports.nbd),
        host: address(this.options.host, this.ports.host),
        repl: address(this.options.repl, this.ports.repl),
      },
      recordedWriteTimeUs: this.stamper.state.recordedWriteTimeUs,
      volumes: this.listVolumes(),
      groups: this.listGroups(),
      connections: { nbd: this.nbdServer?.connections() ?? 0, host: this.hostServer?.connections() ?? 0 },
    };
  }

  health(): NodeHealth {
    const reasons: string[] = [];
    for (const group of this.listGroups()) {
      if (group.state === "stopped") reasons.push(`group ${group.name} stopped: ${group.reason ?? ""}`);
    }
    for (const pair of this.listPairs()) {
      if (pair.state === "failed") reasons.push(`pair of group ${pair.group} failed: ${pair.reason ?? ""}`);
      else if (pair.heldWrites > 0) reasons.push(`group ${pair.group}: ${pair.heldWrites} host writes held: ${pair.reason ?? ""}`);
    }
    // Held writes of a group without a pair, and a pair's secondary whose journal is full.
    for (const writer of this.groups.values()) {
      if (writer.heldWrites > 0 && writer.stopped === undefined && !this.primary.hasPair(writer.name)) reasons.push(`group ${writer.name}: ${this.heldReason(writer)}`);
    }
    for (const secondary of this.secondaryGroups.values()) {
      const reason = secondary.stopped === undefined ? secondary.spaceReason(this.frontierHolder(secondary)) : null;
      if (reason !== null) reasons.push(`group ${secondary.name}: ${reason}`);
    }
    return { status: reasons.length === 0 ? "ok" : "degraded", reasons };
  }

  listVolumes(): VolumeInfo[] {
    return this.volumes.list();
  }

  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.volumes.create(name, sizeBytes);
  }

  listGroups(): GroupInfo[] {
    const metadata = this.requireMetadata();
    return metadata.groups.map((record) => {
      const secondary = this.secondaryGroups.get(record.name);
      if (secondary !== undefined) {
        return {
          name: record.name,
          volumes: record.volumeIds.map((id) => this.volumesById.get(id)?.name ?? `#${id}`),
          nextSequence: secondary.arrivedSequence + 1,
          appliedSequence: secondary.reflectedSequence,
          durableSequence: secondary.journal.durableSequence,
          journalBytes: secondary.journal.usedBytes,
          journalBytesMax: secondary.journal.bytesMax,
          journalSegments: secondary.journal.segmentCount,
          lastWriteTimeUs: secondary.reflectedPosition.writeTimeUs,
          state: secondary.stopped === undefined ? "ok" : "stopped",
          heldWrites: 0,
          reason: secondary.stopped?.reason ?? secondary.spaceReason(this.frontierHolder(secondary)),
        };
      }
      const writer = this.groups.get(record.name);
      assert(writer !== undefined, `group ${record.name} is live`);
      const journal = writer.journal;
      return {
        name: record.name,
        volumes: record.volumeIds.map((id) => this.volumesById.get(id)?.name ?? `#${id}`),
        nextSequence: writer.nextSequence,
        appliedSequence: writer.appliedSequence,
        durableSequence: journal.durableSequence,
        journalBytes: journal.usedBytes,
        journalBytesMax: journal.bytesMax,
        journalSegments: journal.segmentCount,
        lastWriteTimeUs: writer.lastWriteTimeUs,
        state: writer.stopped === undefined ? "ok" : "stopped",
        heldWrites: writer.heldWrites,
        reason: writer.stopped?.reason ?? (writer.heldWrites > 0 ? this.heldReason(writer) : null),
      };
    });
  }

  async createGroup(name: string, volumeNames: readonly string[], journalBytesMax: number = journalBytesMaxDefault): Promise<GroupInfo> {
    validateName("group", name);
    if (this.groups.has(name) || this.secondaryGroups.has(name) || this.groupsInCreation.has(name)) throw new ControlError("TM_ERR_EXISTS", `group ${name} already exists`);
    if (this.groups.size + this.secondaryGroups.size >= groupsPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${groupsPerNodeMax} groups`);
    if (volumeNames.length === 0) throw new ControlError("TM_ERR_INVALID", "a group needs at least one volume: --volumes V1[,V2...]");
    if (volumeNames.length > volumesPerGroupMax) throw new ControlError("TM_ERR_LIMIT", `a group holds at most ${volumesPerGroupMax} volumes`);
    if (new Set(volumeNames).size !== volumeNames.length) throw new ControlError("TM_ERR_INVALID", "a volume is named twice in --volumes");
    if (!Number.isSafeInteger(journalBytesMax) || journalBytesMax < this.journalBytesMinValue || journalBytesMax > journalBytesLimit) {
      throw new ControlError("TM_ERR_INVALID", `journal size ${journalBytesMax} is not valid: it must be between ${this.journalBytesMinValue} bytes (a full journal must still take the largest write) and ${journalBytesLimit} bytes`);
    }
    const members: LiveVolume[] = [];
    for (const volumeName of volumeNames) {
      const volume = this.volumesByName.get(volumeName);
      if (volume === undefined || volume.file === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `volume ${volumeName} does not exist; create it with: tidemark volume create ${volumeName} --size SIZE`);
      const owner = volume.group?.name ?? volume.secondary?.name;
      if (owner !== undefined) throw new ControlError("TM_ERR_CONFLICT", `volume ${volumeName} already belongs to group ${owner}; a volume belongs to at most one group`);
      if (this.claimedVolumes.has(volume.id)) throw new ControlError("TM_ERR_CONFLICT", `volume ${volumeName} is being put into another group right now`);
      members.push(volume);
    }
    // Claimed before the first await, so concurrent creates cannot both take a volume or a name.
    for (const v of members) this.claimedVolumes.add(v.id);
    this.groupsInCreation.add(name);
    try {
      return await this.createGroupClaimed(name, volumeNames, members, journalBytesMax);
    } finally {
      for (const v of members) this.claimedVolumes.delete(v.id);
      this.groupsInCreation.delete(name);
    }
  }

  private async createGroupClaimed(name: string, volumeNames: readonly string[], members: readonly LiveVolume[], journalBytesMax: number): Promise<GroupInfo> {
    const id = this.reserveGroupId();
    await makeDirectoryDurable(this.fileSystem, this.journalDir({ id }));
    const { journal } = await GroupJournal.open(this.journalDir({ id }), { fileSystem: this.fileSystem, bytesMax: journalBytesMax, nextSequence: 1 }, () => undefined);
    const volumes = new Map<number, GroupVolume>(members.map((v) => [v.id, { id: asVolumeId(v.id), file: v.file, order: v.order }]));
    // Writes already in flight to these volumes finish outside the journal; later ones are journaled.
    await Promise.all(members.map((v) => v.order.drain()));
    for (const v of members) await v.file.datasync();
    const record: GroupRecord = { id, name, volumeIds: members.map((v) => v.id), checkpointSequence: 0, nextSequence: 1, journalBytesMax, createdAt: new Date(this.clock.wallMs()).toISOString() };
    await this.updateMetadata((m) => {
      m.nextGroupId = Math.max(m.nextGroupId, id + 1);
      m.groups.push(record);
    });
    this.newWriter(record, journal, volumes, 1);
    this.logger.info({ event: "group_created", group: name, volumes: volumeNames }, "group created");
    const info = this.listGroups().find((g) => g.name === name);
    assert(info !== undefined, "new group is listed");
    return info;
  }

  metrics(): Promise<{ contentType: string; body: string }> {
    return this.nodeMetrics.text();
  }

  /** Allocation (and the free space left for it) is read off the files now and then, so status never waits on the disk. */
  private async refreshAllocation(): Promise<void> {
    if (!this.spaceReserve.isHeld && (await this.spaceReserve.ensure())) {
      this.logger.info({ event: "space_reserve_made", path: this.spaceReserve.path }, "space reserve in place again");
    }
    await this.volumes.refreshAllocation();
  }

  /** Why a group's host writes are held (pair status says the same, with the pair's part). */
  private heldReason(writer: GroupWriter): string {
    const linkReason = this.primary.pairStatus(writer.name)?.reason ?? null;
    if (linkReason !== null) return linkReason;
    const journal = writer.journal;
    const why = writer.holdReason === "apply-behind" ? "until the volumes catch up with the journal" : "until a checkpoint frees journal space";
    return `journal ${Math.round((journal.usedBytes / journal.bytesMax) * 100)}% full: ${writer.heldWrites} host writes held ${why} (held, never failed)`;
  }

  private journalFigures(): JournalFigures[] {
    const secondaries: JournalFigures[] = [...this.secondaryGroups.values()].map((secondary) => ({
      group: secondary.name,
      usedBytes: secondary.journal.usedBytes,
      bytesMax: secondary.journal.bytesMax,
      fsyncs: secondary.journal.fsyncCount,
      bytesWritten: secondary.journal.bytesWritten,
      nextSequence: secondary.arrivedSequence + 1,
      appliedSequence: secondary.reflectedSequence,
      heldWrites: 0,
      stopped: secondary.stopped === undefined ? 0 : 1,
      role: "secondary",
    }));
    return [...secondaries, ...[...this.groups.values()].map((writer): JournalFigures => ({
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

  // ---- PairControl (primary side) ------------------------------------------------

  createPair(request: CreatePairRequest): Promise<PairInfo> {
    return this.primary.createPair(request);
  }

  listPairs(): readonly PairInfo[] {
    const pairs: PairInfo[] = this.primary.pairStatuses();
    for (const record of this.requireMetadata().groups) {
      if (record.secondary !== undefined) pairs.push(this.secondaryStatus(record.name, record.secondary));
    }
    return pairs;
  }

  pair(group: string): PairInfo {
    const primary = this.primary.pairStatus(group);
    if (primary !== undefined) return primary;
    const record = this.requireMetadata().groups.find((g) => g.name === group);
    if (record?.secondary !== undefined) return this.secondaryStatus(group, record.secondary);
    if (record === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `group ${group} does not exist`);
    throw new ControlError("TM_ERR_NOT_FOUND", `group ${group} has no pair; create one with: tidemark pair create ${group} --to SECONDARY_URL`);
  }

  suspendPair(group: string): Promise<PairInfo> {
    return this.primary.suspendPair(group);
  }

  resumePair(group: string): Promise<PairInfo> {
    return this.primary.resumePair(group);
  }

  // ---- PairControl (secondary side) ---------------------------------------------

  async preparePairSecondary(request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    validateName("group", request.group);
    if (request.primaryNode === this.options.id) {
      // Before anything else: pairing a node with itself would find its own group and volumes.
      throw new ControlError("TM_ERR_INVALID", `--to names node ${this.options.id}, the primary itself (or a node with the same --id): a pair needs two different nodes; give --to the secondary's management URL`);
    }
    const advertised = this.options.replAdvertise;
    const replAddress = advertised === undefined ? `${this.options.repl.host}:${this.ports.repl}` : `${advertised.host}:${advertised.port}`;
    const info: PairSecondaryInfo = { nodeId: this.options.id, group: request.group, replAddress };
    const existing = this.requireMetadata().groups.find((g) => g.name === request.group);
    if (existing !== undefined) {
      if (existing.secondary !== undefined && existing.secondary.pairId === request.pairId) return info;
      if (existing.secondary !== undefined && existing.secondary.state !== "takeover") {
        throw new ControlError("TM_ERR_CONFLICT", `group ${request.group} on node ${this.options.id} is already the secondary of pair ${existing.secondary.pairId}`);
      }
      throw new ControlError("TM_ERR_CONFLICT", `group ${request.group} already exists on node ${this.options.id}; choose another --remote-group`);
    }
    const members: LiveVolume[] = [];
    for (const volume of request.volumes) {
      const live = this.volumesByName.get(volume.name);
      if (live === undefined) continue;
      if (live.sizeBytes !== volume.sizeBytes) {
        throw new ControlError("TM_ERR_CONFLICT",
          `volume ${volume.name} on the secondary (node ${this.options.id}) is ${formatBytes(live.sizeBytes)} (${live.sizeBytes} bytes) but the primary's ${volume.name} is ${formatBytes(volume.sizeBytes)} (${volume.sizeBytes} bytes); ` +
          `a pair needs equal sizes: pair with a secondary that has no volume ${volume.name} (pair create makes it) or one of ${formatBytes(volume.sizeBytes)}`);
      }
      const owner = live.group?.name ?? live.secondary?.name;
      if (owner !== undefined) throw new ControlError("TM_ERR_CONFLICT", `volume ${volume.name} on node ${this.options.id} already belongs to group ${owner}`);
      // The initial copy replaces every byte: data a user wrote there is lost unless they said so.
      const heldBytes = live.file.written.markedBytes;
      if (heldBytes > 0 && request.force !== true) {
        throw new ControlError("TM_ERR_CONFLICT",
          `volume ${volume.name} on node ${this.options.id} already holds data (up to ${formatBytes(heldBytes)} written); the initial copy would overwrite it. ` +
          "To overwrite it, run pair create again with --force; to keep it, use --remote-group with another name or move the volume away");
      }
      if (heldBytes > 0) this.logger.warn({ event: "pair_target_overwrites_data", volume: volume.name, writtenBytes: heldBytes, primary: request.primaryNode }, "pair create --force: the initial copy overwrites data on this volume");
    }
    for (const volume of request.volumes) {
      const live = this.volumesByName.get(volume.name);
      if (live === undefined) await this.createVolume(volume.name, volume.sizeBytes);
      const created = this.volumesByName.get(volume.name);
      assert(created !== undefined, "secondary volume exists");
      members.push(created);
    }
    const id = this.reserveGroupId();
    const secondary: SecondaryRecord = {
      pairId: request.pairId, primaryNode: request.primaryNode, primaryGroup: request.primaryGroup, transfer: request.transfer, streams: request.streams,
      reflect: request.reflect, state: "empty", startSequence: 1, consistentFromSequence: 0, reflectedSequence: 0, reflectedWriteTimeUs: 0, reflectedAcceptNumber: 0,
      volumes: [], takeover: null,
    };
    const record: GroupRecord = { id, name: request.group, volumeIds: members.map((v) => v.id), checkpointSequence: 0, nextSequence: 1, journalBytesMax: this.options.journalSizing?.secondaryBytesMax ?? journalBytesMaxDefault, createdAt: new Date(this.clock.wallMs()).toISOString(), secondary };
    await makeDirectoryDurable(this.fileSystem, this.journalDir(record));
    await this.updateMetadata((m) => {
      m.nextGroupId = Math.max(m.nextGroupId, id + 1);
      m.groups.push(record);
    });
    await this.recoverSecondary(record, secondary);
    this.logger.info({ event: "pair_secondary_created", group: request.group, pairId: request.pairId, primary: request.primaryNode }, "pair secondary created");
    return info;
  }

  findSecondary(name: string): SecondaryGroup | undefined {
    return this.secondaryGroups.get(name);
  }

  takenOver(name: string, pairId: string): string | undefined {
    const secondary = this.requireMetadata().groups.find((g) => g.name === name)?.secondary;
    if (secondary === undefined || secondary.state !== "takeover" || secondary.pairId !== pairId) return undefined;
    return secondary.takeover === null ? "taken over" : `at ${secondary.takeover.at}, kept through sequence ${secondary.takeover.keptSequence}`;
  }

  async beginCopy(secondary: SecondaryGroup, startSequence: number, volumes: readonly { volumeId: number; name: string; sizeBytes: number }[]): Promise<string | undefined> {
    const mapping: { primaryVolumeId: number; volumeId: number }[] = [];
    for (const volume of volumes) {
      const local = secondary.volumes.find((v) => v.name === volume.name);
      if (local === undefined || local.file.sizeBytes !== volume.sizeBytes) return `volume ${volume.name} (${volume.sizeBytes} bytes) is not in secondary group ${secondary.name}`;
      mapping.push({ primaryVolumeId: volume.volumeId, volumeId: local.volumeId });
    }
    // The copy sends only the primary's written extents: every other byte of the secondary must be
    // zero before `copying` is persisted (a crash part-way finishes the emptying on open).
    await emptySecondaryVolumes(secondary, this.logger);
    const record = groupRecordById(this.requireMetadata(), secondary.groupId);
    // A fresh journal from the stream's first sequence, in a new directory.
    await secondary.journal.close();
    const generation = (record.journalGeneration ?? 0) + 1;
    const nextRecord = { ...record, journalGeneration: generation };
    await makeDirectoryDurable(this.fileSystem, this.journalDir(nextRecord));
    const { journal } = await GroupJournal.open(this.journalDir(nextRecord), { fileSystem: this.fileSystem, bytesMax: record.journalBytesMax, nextSequence: startSequence });
    const oldDir = this.journalDir(record);
    await this.updateMetadata((m) => {
      const group = groupRecordById(m, secondary.groupId);
      assert(group.secondary !== undefined, "secondary group is in the metadata");
      group.journalGeneration = generation;
      group.secondary.state = "copying";
      group.secondary.startSequence = startSequence;
      group.secondary.consistentFromSequence = 0;
      group.secondary.reflectedSequence = startSequence - 1;
      group.secondary.reflectedWriteTimeUs = 0;
      group.secondary.reflectedAcceptNumber = 0;
      group.secondary.volumes = mapping;
    });
    this.secondaryRecordSaved(secondary);
    await this.fileSystem.removeTree(oldDir);
    secondary.volumesByPrimaryId.clear();
    for (const m of mapping) {
      const volume = secondary.volumes.find((v) => v.volumeId === m.volumeId);
      assert(volume !== undefined, "mapped volume exists");
      secondary.volumesByPrimaryId.set(m.primaryVolumeId, volume);
    }
    secondary.reflectedSequence = startSequence - 1;
    secondary.reflectedPosition = positionZero;
    secondary.resetJournal(journal);
    secondary.copyBytes = 0;
    secondary.zeroVolumes.clear();
    for (const volume of secondary.volumes) secondary.zeroVolumes.add(volume.volumeId); // emptied above
    this.logger.info({ event: "secondary_copy_started", group: secondary.name, startSequence }, "initial copy into secondary started");
    return undefined;
  }

  async finishCopy(secondary: SecondaryGroup, consistentFromSequence: number): Promise<void> {
    for (const volume of secondary.volumes) await volume.file.datasync();
    // The copy's writes have no journal: their bits are durable before the copy counts as done
    // (until then a crash restarts the copy, which rewrites every extent it sent).
    await saveWrittenMaps(secondary.volumes);
    // Replicating: the group joins its consistency domain, with the domain checkpointed first.
    await this.reflector.beforeJoin(() => this.updateMetadata((m) => {
      const group = groupRecordById(m, secondary.groupId);
      assert(group.secondary !== undefined, "secondary group is in the metadata");
      group.secondary.state = "replicating";
      group.secondary.consistentFromSequence = consistentFromSequence;
    }).then(() => this.secondaryRecordSaved(secondary)));
    secondary.zeroVolumes.clear();
    this.logger.info({ event: "secondary_copy_done", group: secondary.name, copiedBytes: secondary.copyBytes, consistentFromSequence }, "initial copy into secondary done");
  }

  kickReflector(): void {
    this.reflector.kick();
  }

  frontierHolder(secondary: SecondaryGroup): string | undefined {
    return this.reflector.frontierHolder(secondary)?.name;
  }

  /**
   * Reflector checkpoint: volumes durable through the reflected sequence, then persisted,
   * then the journal trimmed. Unless forced (a drain, a stop), a group that reflected only
   * time advances since its last checkpoint is checkpointed at most every
   * secondaryIdleCheckpointIntervalMs: an idle pair costs no metadata save per second (the
   * records are replayed idempotently after a crash). False: not done now, ask again.
   */
  private async checkpointSecondary(secondary: SecondaryGroup, force: boolean): Promise<boolean> {
    const sequence = secondary.reflectedSequence;
    const position = secondary.reflectedPosition;
    if (sequence <= secondary.record.reflectedSequence) return true;
    // A group being taken over is checkpointed by the takeover itself.
    if (this.secondaryGroups.get(secondary.name) !== secondary || secondary.takingOver) return true;
    // Never while stopped or before it applied again after a resume: after a failed
    // fdatasync the next one succeeds without the pages the failed one dropped, so a
    // checkpoint then would record as durable what the volume lost (simulation seed 1829).
    if (!secondary.checkpointable) return false;
    const nowMs = this.clock.monotonicMs();
    const volumesWritten = secondary.volumesWrittenSinceCheckpoint;
    // A secondary waiting for journal room is checkpointed at once: the trim is what frees it.
    if (!force && !volumesWritten && !secondary.waitingForSpace && nowMs - secondary.lastCheckpointMs < secondaryIdleCheckpointIntervalMs) return false;
    secondary.volumesWrittenSinceCheckpoint = false;
    try {
      if (volumesWritten) {
        for (const volume of secondary.volumes) await volume.file.datasync();
        // Before the reflected sequence moves on (and the journal trims behind it): see docs/volumes.md.
        await saveWrittenMaps(secondary.volumes);
      }
    } catch (error) {
      secondary.volumesWrittenSinceCheckpoint = true;
      throw error;
    }
    secondary.lastCheckpointMs = nowMs;
    await this.updateMetadata((m) => {
      const group = m.groups.find((g) => g.id === secondary.groupId);
      if (group?.secondary === undefined) return; // taken over meanwhile
      group.secondary.reflectedSequence = sequence;
      group.secondary.reflectedWriteTimeUs = position.writeTimeUs;
      group.secondary.reflectedAcceptNumber = position.acceptNumber;
    });
    this.secondaryRecordSaved(secondary);
    await secondary.trimThrough(sequence);
    return true;
  }

  async takeover(groupNames: readonly string[]): Promise<readonly TakeoverResult[]> {
    if (groupNames.length === 0) throw new ControlError("TM_ERR_INVALID", "name at least one group to take over");
    const results: TakeoverResult[] = [];
    const taking: SecondaryGroup[] = [];
    for (const name of groupNames) {
      const record = this.requireMetadata().groups.find((g) => g.name === name);
      if (record === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `group ${name} does not exist on node ${this.options.id}`);
      if (record.secondary === undefined) throw new ControlError("TM_ERR_STATE", `group ${name} is not the secondary of a pair on node ${this.options.id}; run takeover against the secondary`);
      if (record.secondary.state === "takeover") {
        results.push({ group: name, reflectedSequence: record.secondary.takeover?.keptSequence ?? 0, droppedRecords: record.secondary.takeover?.droppedRecords ?? 0, state: "takeover" });
        continue;
      }
      const secondary = this.secondaryGroups.get(name);
      assert(secondary !== undefined, "a secondary group is live");
      if (secondary.record.state !== "replicating") {
        throw new ControlError("TM_ERR_STATE", `group ${name} is still in its initial copy (${secondary.record.state}); its image is not consistent and cannot be taken over`);
      }
      taking.push(secondary);
    }
    // Stop receiving, let what was appended become durable, reflect to the last consistent point.
    for (const secondary of taking) {
      secondary.takingOver = true;
      this.replServer?.detachGroup(secondary, "taken over on the secondary");
    }
    for (const secondary of taking) {
      while (secondary.pendingAppends > 0) await this.clock.sleep(2);
    }
    await this.reflector.drain();
    // Frozen at the cut: whatever runs while the groups are converted one by one (a smaller
    // domain would have a later frontier) must not apply anything more to them.
    for (const secondary of taking) secondary.frozen = true;
    for (const secondary of taking) {
      if (secondary.reflectedSequence < secondary.record.consistentFromSequence) {
        for (const t of taking) {
          t.takingOver = false;
          t.frozen = false;
        }
        throw new ControlError("TM_ERR_STATE", `group ${secondary.name} has reflected ${secondary.reflectedSequence} of the ${secondary.record.consistentFromSequence} records it needs after its initial copy; its image is not consistent yet`);
      }
    }
    for (const secondary of taking) results.push(await this.convertSecondary(secondary));
    this.reflector.kick();
    return results;
  }

  /** Makes a reflected secondary an ordinary writable group: fresh journal, volumes writable. */
  private async convertSecondary(secondary: SecondaryGroup): Promise<TakeoverResult> {
    const kept = secondary.reflectedSequence;
    const dropped = Math.max(0, secondary.arrivedSequence - kept) + secondary.receiver.reorderRecords;
    // The secondary's own stop and resume end here: its journal is replaced below.
    await secondary.close();
    for (const volume of secondary.volumes) await volume.file.datasync();
    // A takeover must work on a full disk (the secondary's disk filling is a reason to take over):
    // its writes may use the space reserve.
    await this.withSpaceReserve("take over", () => saveWrittenMaps(secondary.volumes)); // the old journal (which would mark again) goes below
    // A stopped group's journal may be abandoned already; it is removed below either way.
    await secondary.journal.close().catch((error: unknown) => this.logger.warn({ event: "takeover_journal_close_failed", group: secondary.name, err: error }, "the old journal did not close cleanly; it is removed"));
    const record = groupRecordById(this.requireMetadata(), secondary.groupId);
    assert(record.secondary !== undefined, "secondary group is in the metadata");
    const oldDir = this.journalDir(record);
    const generation = (record.journalGeneration ?? 0) + 1;
    const fresh = { ...record, journalGeneration: generation };
    const { journal } = await this.withSpaceReserve("take over", async () => {
      await makeDirectoryDurable(this.fileSystem, this.journalDir(fresh));
      return GroupJournal.open(this.journalDir(fresh), { fileSystem: this.fileSystem, bytesMax: record.journalBytesMax, nextSequence: 1 });
    });
    await this.updateMetadata((m) => {
      const group = groupRecordById(m, secondary.groupId);
      assert(group.secondary !== undefined, "secondary group is in the metadata");
      group.journalGeneration = generation;
      group.checkpointSequence = 0;
      group.nextSequence = 1;
      group.secondary.state = "takeover";
      group.secondary.reflectedSequence = kept;
      group.secondary.takeover = { keptSequence: kept, droppedRecords: dropped, at: new Date(this.clock.wallMs()).toISOString() };
    }, true);
    await this.fileSystem.removeTree(oldDir);
    this.secondaryGroups.delete(secondary.name);
    const updated = groupRecordById(this.requireMetadata(), secondary.groupId);
    const volumes = new Map<number, GroupVolume>();
    for (const volumeId of updated.volumeIds) {
      const live = this.volumesById.get(volumeId);
      assert(live !== undefined, "group volume exists");
      volumes.set(volumeId, { id: asVolumeId(volumeId), file: live.file, order: live.order });
    }
    this.newWriter(updated, journal, volumes, 1);
    this.logger.warn({ event: "takeover", group: secondary.name, keptSequence: kept, droppedRecords: dropped }, "group taken over: volumes are writable");
    return { group: secondary.name, reflectedSequence: kept, droppedRecords: dropped, state: "takeover" };
  }

  private secondaryStatus(name: string, record: SecondaryRecord): PairInfo {
    const secondary = this.secondaryGroups.get(name);
    const reflected = secondary?.reflectedSequence ?? record.reflectedSequence;
    const arrived = secondary?.arrivedSequence ?? record.reflectedSequence;
    const stopped = secondary?.stopped;
    const state = stopped !== undefined ? "stopped" : record.state === "takeover" ? "takeover" : record.state === "replicating" ? "replicating" : "copying";
    let reason: string | null = null;
    if (state === "replicating" && reflected < record.consistentFromSequence) reason = `catching up after the initial copy: consistent once sequence ${record.consistentFromSequence} is reflected`;
    else if (state === "replicating" && secondary !== undefined && !secondary.consistent) reason = `applying again what was applied since the last checkpoint (a disk error may have lost it): the image is consistent again once sequence ${secondary.reapplyThrough} is reflected`;
    if (state === "takeover" && record.takeover !== null) reason = `taken over at ${record.takeover.at}: kept through sequence ${record.takeover.keptSequence}, dropped ${record.takeover.droppedRecords} records`;
    if (stopped !== undefined) reason = stopped.reason;
    // A stopped member holds its time domain (DESIGN.md): every group it holds names it.
    const holder = state === "replicating" && record.reflect === "time"
      ? [...this.secondaryGroups.values()].find((other) => other !== secondary && other.stopped !== undefined && other.record.state === "replicating" && other.record.reflect === "time" && other.record.primaryNode === record.primaryNode)
      : undefined;
    if (holder !== undefined && arrived > reflected) reason = `reflection held by group ${holder.name} of the same consistency domain, which is stopped (${holder.stopped?.reason ?? ""})`;
    if (reason === null && state === "replicating" && secondary !== undefined && secondary.streams.size === 0) {
      const said = secondary.peerCloseText === undefined ? "the link or the primary is down" : `the primary said: ${secondary.peerCloseText}`;
      reason = `no replication stream from primary ${record.primaryNode}${secondary.noStreamSinceIso === undefined ? " since this node started" : ` since ${secondary.noStreamSinceIso}`} (${said})`;
    }
    if (secondary !== undefined && stopped === undefined && state !== "takeover") reason = secondary.spaceReason(this.frontierHolder(secondary)) ?? reason;
    return {
      group: name, role: "secondary", state, pairId: record.pairId, remoteNode: record.primaryNode, remoteUrl: null, remoteGroup: record.primaryGroup,
      mode: "async", transfer: record.transfer, streams: record.streams, reflect: record.reflect,
      acceptedSequence: arrived, sentSequence: arrived, arrivedSequence: arrived, reflectedSequence: reflected,
      lagRecords: Math.max(0, arrived - reflected), lagBytes: 0,
      // Write-time distance between what arrived and what is reflected; unknown (0) before the first stamped record.
      lagSeconds: secondary === undefined || arrived <= reflected || secondary.reflectedPosition.writeTimeUs === 0
        ? 0
        : Math.max(0, (secondary.arrivedPosition.writeTimeUs - secondary.reflectedPosition.writeTimeUs) / 1e6),
      journalBytes: secondary?.journal.usedBytes ?? 0, journalBytesMax: secondary?.journal.bytesMax ?? 0,
      // The primary decides what it sends (its written extents) and says how much only in
      // COPY_DONE: until then the secondary can only show the volumes' size as the total.
      copy: state === "copying" && secondary !== undefined
        ? { doneBytes: secondary.copyBytes, totalBytes: Math.max(secondary.copyBytes, volumeBytes(secondary.volumes)), volumeBytes: volumeBytes(secondary.volumes) }
        : null,
      heldWrites: 0, reason,
      link: { connectedStreams: secondary?.streams.size ?? 0, reconnects: 0, lastError: secondary?.lastError ?? null },
    };
  }
}

/**
 * Re-applies one recovered journal record of a writable group to its volume. Every record
 * kind the journal can hold is handled: markers and time advances change no volume.
 * A write for a volume the group does not have is damage, refused with what to do.
 */
async function replayRecord(groupName: string, volumes: ReadonlyMap<number, GroupVolume>, record: JournalRecord): Promise<void> {
  if (faultInjected("replay-unknown-record-kind") && record.kind !== RecordKind.write && record.kind !== RecordKind.zeroes) {
    throw new Error(`journal of group ${groupName} has a record for unknown volume ${record.volumeId}`);
  }
  switch (record.kind) {
    case RecordKind.timeAdvance:
    case RecordKind.marker:
      return;
    case RecordKind.write:
    case RecordKind.zeroes: {
      const volume = volumes.get(record.volumeId);
      if (volume === undefined || record.offsetBytes + record.lengthBytes > volume.file.sizeBytes) {
        throw new Error(`journal of group ${groupName} has a record (sequence ${record.sequence}) for volume ${record.volumeId} range ` +
          `${record.offsetBytes}+${record.lengthBytes}, which the group does not hold; the data directory is damaged or was edited: restore it from a backup`);
      }
      if (record.kind === RecordKind.write) await volume.file.write(record.offsetBytes, record.payload);
      else await volume.file.writeZeroes(record.offsetBytes, record.lengthBytes);
      return;
    }
    default:
      unreachable(record.kind, "journal record kind");
  }
}

/** The metadata record of a group that must exist (a live group always has one). */
function groupRecordById(metadata: NodeMetadata, id: number): GroupRecord {
  const group = metadata.groups.find((g) => g.id === id);
  assert(group !== undefined, () => `group ${id} is in the metadata`);
  return group;
}

/** Whether a process holds the lock: alive, and not a zombie waiting to be reaped. */
async function processAlive(fs: FileSystem, pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = (await readWholeFile(fs, `/proc/${pid}/stat`)).toString("utf8");
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

/** What a node asks of another node's management API (the secondary's, when a pair is created). */
