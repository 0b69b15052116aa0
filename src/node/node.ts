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
import { type CreatePairRequest, type GroupInfo, type NodeControl, type NodeHealth, type NodeReadiness, type NodeStatus, type PairControl, type PairInfo, type PairSecondaryInfo, type PairSecondaryRequest, type TakeoverResult, type VolumeInfo } from "../mgmt/control.ts";
import { GroupWriter, type GroupVolume } from "../primary/group-writer.ts";
import { startHostServer, type HostServer } from "../frontends/host-server.ts";
import { MetadataStore } from "../metadata/metadata-store.ts";
import { httpPeerClient, type PeerClient } from "../transport/peer-client.ts";
import { validateName } from "../core/names.ts";
import { VolumeRegistry, type LiveVolume } from "../volumes/volume-registry.ts";
import { type GroupRecord, type NodeMetadata } from "../metadata/metadata.ts";
import { PrimaryRole } from "../primary/primary-role.ts";
import { saveWrittenMaps } from "../volumes/volume-files.ts";
import { ReplServer } from "../secondary/repl-server.ts";
import type { SecondaryGroup } from "../secondary/secondary-group.ts";
import { SecondaryRole, type RegistryVolume } from "../secondary/secondary-role.ts";
import { NodeMetrics, type JournalFigures } from "./metrics.ts";
import { startMgmtApi } from "../mgmt/mgmt-api.ts";
import { startNbdServer, type NbdServer } from "../frontends/nbd-server.ts";
import { NodeStamper, wallClockUs } from "../primary/stamper.ts";
import { systemClock, type Clock, type Timer } from "./clock.ts";
import { tcpTransport, type Transport } from "../transport/transport.ts";
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

/** At most one log line per this interval about host write times lowered to the clock's bound. */
const hostTimeClampLogIntervalMs = 10_000;

/** How often volume allocation (for status) is re-read from the files. */
const allocationRefreshMs = 5000;

export class TidemarkNode implements NodeControl, PairControl {
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
  /** The groups that are the secondary of a pair, their lifecycle and reflection (src/secondary/secondary-role.ts). */
  readonly secondaries: SecondaryRole;
  /** The pairs this node is the primary of. */
  private readonly primary: PrimaryRole;
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
  /** start() finished: every listener is up and recovery is done (/v1/ready). */
  private started = false;
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
    this.nodeMetrics = new NodeMetrics(options.id, tidemarkVersion, () => this.journalFigures(), () => this.listPairs(), (options.serve ?? "all") === "all");
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
      isSecondary: (group) => this.secondaries.has(group),
      volume: (volumeId) => this.volumesById.get(volumeId),
      prepareSecondary: (baseUrl, request) => this.peers.preparePairSecondary(baseUrl, request),
    });
    this.secondaries = new SecondaryRole({
      nodeId: options.id,
      logger: this.logger,
      clock: this.clock,
      fileSystem: this.fileSystem,
      replAddress: () => {
        const advertised = this.options.replAdvertise;
        return advertised === undefined ? `${this.options.repl.host}:${this.ports.repl}` : `${advertised.host}:${advertised.port}`;
      },
      journalBytesMax: options.journalSizing?.secondaryBytesMax ?? journalBytesMaxDefault,
      metadata: () => this.requireMetadata(),
      updateMetadata: (change, critical) => this.updateMetadata(change, critical),
      withSpaceReserve: (what, write) => this.withSpaceReserve(what, write),
      volumes: {
        byName: (name) => registryVolume(this.volumesByName.get(name)),
        byId: (id) => registryVolume(this.volumesById.get(id)),
        create: async (name, sizeBytes) => {
          await this.createVolume(name, sizeBytes);
        },
        setSecondary: (volumeId, group) => {
          const live = this.volumesById.get(volumeId);
          if (live !== undefined) live.secondary = group;
        },
      },
      reserveGroupId: () => this.reserveGroupId(),
      journalDir: (record) => this.journalDir(record),
      openJournal: (record, journalOptions) => this.openJournal(record, journalOptions),
      becomeWritable: (record, journal) => {
        const volumes = new Map<number, GroupVolume>();
        for (const volumeId of record.volumeIds) {
          const live = this.volumesById.get(volumeId);
          assert(live !== undefined, "group volume exists");
          volumes.set(volumeId, { id: asVolumeId(volumeId), file: live.file, order: live.order });
        }
        this.newWriter(record, journal, volumes, 1);
      },
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
    await this.secondaries.replayToFrontier();
    await this.startListeners();
    this.primary.start();
    await this.refreshAllocation();
    this.allocationTimer = this.clock.setInterval(() => void this.refreshAllocation(), allocationRefreshMs);
    this.started = true;
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
        await this.secondaries.recover(record, record.secondary);
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
      this.replServer = new ReplServer(this.secondaries, this.logger.child({ component: "repl" }), this.clock, this.transport);
    this.secondaries.connectStreams(this.replServer);
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
    this.replServer = new ReplServer(this.secondaries, this.logger.child({ component: "repl" }), this.clock, this.transport);
    this.secondaries.connectStreams(this.replServer);
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
    await this.secondaries.stop();
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
   * more, with a log line. Only those: every other write that meets a full disk fails and
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

  ready(): NodeReadiness {
    if (this.stopping !== undefined) return { ready: false, status: "stopping" };
    return this.started ? { ready: true, status: "ready" } : { ready: false, status: "starting" };
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
    reasons.push(...this.secondaries.healthReasons());
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
      const secondary = this.secondaries.groupInfo(record, (id) => this.volumesById.get(id)?.name ?? `#${id}`);
      if (secondary !== undefined) return secondary;
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
    if (this.groups.has(name) || this.secondaries.has(name) || this.groupsInCreation.has(name)) throw new ControlError("TM_ERR_EXISTS", `group ${name} already exists`);
    if (this.groups.size + this.secondaries.size >= groupsPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${groupsPerNodeMax} groups`);
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
    return [...this.secondaries.journalFigures(), ...[...this.groups.values()].map((writer): JournalFigures => ({
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
      if (record.secondary !== undefined) pairs.push(this.secondaries.status(record, record.secondary));
    }
    return pairs;
  }

  pair(group: string): PairInfo {
    const primary = this.primary.pairStatus(group);
    if (primary !== undefined) return primary;
    const record = this.requireMetadata().groups.find((g) => g.name === group);
    if (record?.secondary !== undefined) return this.secondaries.status(record, record.secondary);
    if (record === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `group ${group} does not exist`);
    throw new ControlError("TM_ERR_NOT_FOUND", `group ${group} has no pair; create one with: tidemark pair create ${group} --to SECONDARY_URL`);
  }

  suspendPair(group: string): Promise<PairInfo> {
    return this.primary.suspendPair(group);
  }

  resumePair(group: string): Promise<PairInfo> {
    return this.primary.resumePair(group);
  }

  // ---- PairControl (secondary side): src/secondary/secondary-role.ts ----------------

  preparePairSecondary(request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    validateName("group", request.group);
    return this.secondaries.prepare(request);
  }

  takeover(groupNames: readonly string[]): Promise<readonly TakeoverResult[]> {
    return this.secondaries.takeover(groupNames);
  }

  /** The live secondary group of that name (the simulation reads its consistency). */
  findSecondary(name: string): SecondaryGroup | undefined {
    return this.secondaries.findSecondary(name);
  }
}

/** A volume of the registry as the secondary role sees it (undefined for a create's placeholder: no file yet). */
function registryVolume(volume: LiveVolume | undefined): RegistryVolume | undefined {
  if (volume === undefined || (volume.file as LiveVolume["file"] | undefined) === undefined) return undefined;
  return { id: volume.id, name: volume.name, sizeBytes: volume.sizeBytes, file: volume.file, owner: volume.group?.name ?? volume.secondary?.name };
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
