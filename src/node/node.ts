// One tidemark node: a storage system with an id and a data directory. It recovers its
// volumes and groups, then serves NBD, the host protocol, replication and management.
// This file is wiring only (docs/architecture.md, "The rooms"): it builds the rooms from the
// options (metadata store, volume registry, group registry, primary and secondary roles, the
// listeners), starts and stops them in order, holds the data directory's lock, and answers
// the management API by asking them. Group management is in primary/group-registry.ts.
import { removeDeletedLeftovers } from "./deleted-leftovers.ts";
import { ControlError, NodeStartError } from "../core/errors.ts";
import { join } from "node:path";
import type { Logger } from "pino";
import { journalBytesMaxDefault, journalBytesMin, lagHistoryIntervalMs, lagHistorySamplesMax } from "../core/limits.ts";
import { LagHistory, type LagHistoryView } from "../core/lag-history.ts";
import { asAcceptNumber, asWriteTimeUs, type WriteTimePolicy } from "../core/types.ts";
import { type VolumeCatalog } from "../core/volume-io.ts";
import { makeDirectoryDurable, readWholeFile, writeWholeFile } from "../storage/durable-fs.ts";
import { dataDirError, listenError } from "./start-errors.ts";
import type { FileSystem } from "../storage/fs.ts";
import { nodeFileSystem } from "../storage/node-fs.ts";
import { SpaceReserve } from "../storage/space-reserve.ts";
import { type CreatePairRequest, type GroupInfo, type NodeControl, type NodeHealth, type NodeReadiness, type NodeStatus, type PairControl, type PairEndInfo, type PairInfo, type PairSecondaryCheckRequest, type PairSecondaryEndRequest, type PairSecondaryInfo, type PairSecondaryRequest, type TakeoverOptions, type TakeoverResult, type VolumeInfo } from "../mgmt/control.ts";
import { GroupRegistry } from "../primary/group-registry.ts";
import { startHostServer, type HostServer } from "../frontends/host-server.ts";
import { MetadataStore } from "../metadata/metadata-store.ts";
import { httpPeerClient, type PeerClient } from "../transport/peer-client.ts";
import { validateName } from "../core/names.ts";
import { VolumeRegistry, type LiveVolume } from "../volumes/volume-registry.ts";
import { type NodeMetadata } from "../metadata/metadata.ts";
import { PrimaryRole } from "../primary/primary-role.ts";
import { ReplServer } from "../secondary/repl-server.ts";
import type { SecondaryGroup } from "../secondary/secondary-group.ts";
import { SecondaryRole, type RegistryVolume } from "../secondary/secondary-role.ts";
import { NodeMetrics } from "./metrics.ts";
import { startMgmtApi } from "../mgmt/mgmt-api.ts";
import { startNbdServer, type NbdServer } from "../frontends/nbd-server.ts";
import { clampLogger, NodeStamper, wallClockUs } from "../primary/stamper.ts";
import { CommitWait } from "../primary/commit-wait.ts";
import { systemClock, type Clock, type Timer } from "./clock.ts";
import { tcpTransport, type Transport } from "../transport/transport.ts";

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
  /**
   * `--max-clock-skew` in ms (0 or undefined: none): the most this node's clock may differ
   * from the other primaries' of a named domain; host writes are answered only once the clock
   * passed their time + this (commit wait, primary/commit-wait.ts).
   */
  readonly maxClockSkewMs?: number | undefined;
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

/** How often volume allocation (for status) is re-read from the files. */
const allocationRefreshMs = 5000;

export class TidemarkNode implements NodeControl, PairControl {
  private readonly options: NodeOptions;
  private readonly logger: Logger;
  private readonly stamper: NodeStamper;
  /** `--max-clock-skew` (or a skew declared earlier, keepDeclaredClockSkew): write answers wait out the skew (undefined without it). */
  private commitWait: CommitWait | undefined;
  /** The clock write times are stamped from (microseconds since the epoch, never back). */
  private readonly stampClockUs: () => number;
  private readonly metadataStore: MetadataStore;
  private readonly volumes: VolumeRegistry;
  /** The groups: the writable groups' writers, journal directories, group ids (src/primary/group-registry.ts). */
  private readonly groups: GroupRegistry;
  readonly nodeMetrics: NodeMetrics;
  private allocationTimer: Timer | undefined;
  private lagTimer: Timer | undefined;
  private readonly lagSamples = new LagHistory(lagHistorySamplesMax);
  private nbdServer: NbdServer | undefined;
  private hostServer: HostServer | undefined;
  private replServer: ReplServer | undefined;
  /** The groups that are the secondary of a pair, their lifecycle and reflection (src/secondary/secondary-role.ts). */
  readonly secondaries: SecondaryRole;
  /** The pairs this node is the primary of. */
  private readonly primary: PrimaryRole;
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
    const stampClockUs = wallClockUs(this.clock);
    this.stampClockUs = stampClockUs;
    const skewMs = options.maxClockSkewMs ?? 0;
    this.commitWait = skewMs > 0 ? new CommitWait({ skewMs, clock: this.clock, clockUs: stampClockUs, logger: this.logger }) : undefined;
    this.stamper = new NodeStamper(options.writeTimePolicy, stampClockUs, clampLogger(this.logger, this.clock), this.commitWait);
    this.nodeMetrics = new NodeMetrics(options.id, tidemarkVersion, () => this.groups.journalFigures(), () => this.listPairs(), (options.serve ?? "all") === "all");
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
      writer: (group) => this.groups.writer(group),
      isSecondary: (group) => this.secondaries.has(group),
      volume: (volumeId) => this.volumesById.get(volumeId),
      prepareSecondary: (baseUrl, request) => this.peers.preparePairSecondary(baseUrl, request),
      endSecondary: (baseUrl, request) => this.peers.endPairSecondary(baseUrl, request),
      checkSecondary: (baseUrl, request) => this.peers.checkPairSecondary(baseUrl, request),
      writeTimes: () => ({ writeTimePolicy: options.writeTimePolicy, maxClockSkewMs: this.commitWait === undefined ? 0 : this.commitWait.skewUs / 1000 }),
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
        grow: (volumeId, sizeBytes) => this.volumes.grow(volumeId, sizeBytes),
      },
      reserveGroupId: () => this.groups.reserveGroupId(),
      journalDir: (record) => this.groups.journalDir(record),
      openJournal: (record, journalOptions) => this.groups.openJournal(record, journalOptions),
      becomeWritable: (record, journal) => this.groups.becomeWritable(record, journal),
    });
    this.groups = new GroupRegistry({
      dataDir: options.dataDir,
      fileSystem: this.fileSystem,
      logger: this.logger,
      clock: this.clock,
      store: this.metadataStore,
      volumes: this.volumes,
      stamper: this.stamper,
      primary: this.primary,
      secondaries: this.secondaries,
      journalBytesMin: this.journalBytesMinValue,
      cutDamagedTail: options.truncateDamagedJournals === true,
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
    this.keepDeclaredClockSkew(metadata);
    await removeDeletedLeftovers(this.fileSystem, this.options.dataDir, metadata, this.logger);
    await this.volumes.open();
    await this.groups.recover();
    // A takeover a crash interrupted after its intent was saved is finished at its saved cuts.
    await this.secondaries.finishTakeover();
    // So is a pair delete decided on this (secondary) side.
    await this.secondaries.finishPairEnds();
    // A restarted secondary replays to the recomputed frontier before anyone reads its image.
    await this.secondaries.replayToFrontier();
    await this.startListeners();
    this.primary.start();
    await this.refreshAllocation();
    this.allocationTimer = this.clock.setInterval(() => void this.refreshAllocation(), allocationRefreshMs);
    this.sampleLag();
    this.lagTimer = this.clock.setInterval(() => this.sampleLag(), lagHistoryIntervalMs);
    this.started = true;
    this.logger.info({ event: "node_started", id: this.options.id, dataDir: this.options.dataDir, ports: this.ports, volumes: this.volumesByName.size, groups: this.groups.size, writeTime: this.options.writeTimePolicy, maxClockSkewMs: (this.commitWait?.skewUs ?? 0) / 1000 }, "node started");
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
    // "replication": the replication listener alone (the simulation drives the rest directly).
    const serveAll = (this.options.serve ?? "all") === "all";
    if (serveAll) {
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
    }
    // Replication streams are accepted through the node's Transport; the front ends and the
    // management API listen on their own (docs/architecture.md, "The transport seam").
    const replServer = new ReplServer(this.secondaries, this.logger.child({ component: "repl" }), this.clock, this.transport);
    this.replServer = replServer;
    this.secondaries.connectStreams(replServer);
    this.ports.repl = await listen("--repl", repl, () => replServer.listen(repl.host, repl.port));
    if (serveAll) {
      this.mgmtApi = await listen("--mgmt", mgmt, () => startMgmtApi({ host: mgmt.host, port: mgmt.port, control: this, logger: this.logger.child({ component: "mgmt" }) }));
      this.ports.mgmt = this.mgmtApi.port;
    }
  }

  /** Clean stop: no new connections, in-flight work finished, journals durable, checkpoint saved. */
  stop(): Promise<void> {
    this.stopping ??= this.runStop();
    return this.stopping;
  }

  private async runStop(): Promise<void> {
    this.logger.info({ event: "node_stopping" }, "stopping");
    this.clock.clear(this.allocationTimer);
    this.clock.clear(this.lagTimer);
    await this.mgmtApi?.close();
    await this.nbdServer?.close();
    await this.hostServer?.close();
    this.commitWait?.close();
    this.primary.stop();
    await this.replServer?.close();
    await this.secondaries.stop();
    await this.groups.close();
    await this.volumes.close();
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

  /**
   * A pair of this node in a named domain was created with --max-clock-skew D: its secondary
   * reflects the domain by write time on the promise that this node waits D out. Started
   * without the flag, or with less, the node keeps waiting the declared D (and says so):
   * dropping it silently would break the domain's consistency.
   */
  private keepDeclaredClockSkew(metadata: NodeMetadata): void {
    let declaredMs = 0;
    let group = "";
    for (const g of metadata.groups) {
      const skewMs = g.pair?.domain?.maxClockSkewMs ?? 0;
      if (skewMs > declaredMs) {
        declaredMs = skewMs;
        group = g.name;
      }
    }
    const givenMs = this.options.maxClockSkewMs ?? 0;
    if (declaredMs <= givenMs) return;
    this.logger.warn({ event: "clock_skew_kept", declaredMs, givenMs, group },
      `group ${group}'s pair joined a named consistency domain with --max-clock-skew ${declaredMs}ms; this node keeps waiting it out (start it with --max-clock-skew ${declaredMs}ms or more to say so)`);
    this.commitWait?.close();
    this.commitWait = new CommitWait({ skewMs: declaredMs, clock: this.clock, clockUs: this.stampClockUs, logger: this.logger });
    this.stamper.useCommitWait(this.commitWait);
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
    const stoppedHere = new Set<string>();
    for (const group of this.listGroups()) {
      if (group.state !== "stopped") continue;
      stoppedHere.add(group.name);
      reasons.push(`group ${group.name} stopped: ${group.reason ?? ""}`);
    }
    for (const pair of this.listPairs()) {
      if (pair.state === "failed") reasons.push(`pair of group ${pair.group} failed: ${pair.reason ?? ""}`);
      else if (pair.state === "fenced") reasons.push(`group ${pair.group} is fenced (host writes refused): ${pair.reason ?? ""}`);
      else if (pair.heldWrites > 0) reasons.push(`group ${pair.group}: ${pair.heldWrites} host writes held: ${pair.reason ?? ""}`);
      else if (pair.state === "disconnected") reasons.push(`pair of group ${pair.group} disconnected (${pair.role}): ${pair.reason ?? ""}`);
      // Stopped on the secondary, as the primary knows it (the group's own stop is listed above).
      else if (pair.state === "stopped" && pair.role === "primary" && !stoppedHere.has(pair.group)) reasons.push(`pair of group ${pair.group} stopped on the secondary: ${pair.reason ?? ""}`);
    }
    // Held writes of a group without a pair, and a pair's secondary whose journal is full.
    reasons.push(...this.groups.heldWithoutPairReasons());
    reasons.push(...this.secondaries.healthReasons());
    return { status: reasons.length === 0 ? "ok" : "degraded", reasons };
  }

  listVolumes(): VolumeInfo[] {
    return this.volumes.list();
  }

  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.volumes.create(name, sizeBytes);
  }

  resizeVolume(name: string, sizeBytes: number): Promise<{ volume: VolumeInfo; changed: boolean }> {
    return this.volumes.resize(name, sizeBytes, (group) => this.primary.resizeRefusal(group));
  }

  async deleteVolume(name: string, force: boolean): Promise<boolean> {
    // In a group with a pair: the whole way out, in order (the registry alone would name only the group's delete, which the pair refuses).
    const group = this.listGroups().find((g) => g.volumes.includes(name));
    if (group !== undefined && this.primary.hasPair(group.name)) {
      throw new ControlError("TM_ERR_STATE", `volume ${name} is in group ${group.name}, which has a pair: end it first, then delete the group (its volumes stay), then the volume: tidemark pair delete ${group.name}; tidemark group delete ${group.name}; tidemark volume delete ${name}${force ? " --force" : ""}`);
    }
    return await this.volumes.delete(name, force);
  }

  listGroups(): GroupInfo[] {
    return this.groups.list();
  }

  createGroup(name: string, volumeNames: readonly string[], journalBytesMax?: number): Promise<GroupInfo> {
    return this.groups.create(name, volumeNames, journalBytesMax);
  }

  deleteGroup(name: string): Promise<boolean> {
    return this.groups.delete(name);
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

  /** One lag sample of every pair, for the dashboard's chart (GET /v1/lag-history). */
  private sampleLag(): void {
    this.lagSamples.record(this.clock.monotonicMs(), this.listPairs().map((pair) => ({ group: pair.group, role: pair.role, lagSeconds: pair.lagSeconds })));
  }

  lagHistory(): readonly LagHistoryView[] {
    return this.lagSamples.view(this.clock.monotonicMs());
  }

  // ---- PairControl (primary side) ------------------------------------------------

  createPair(request: CreatePairRequest, seenAs?: { readonly host?: string | undefined }): Promise<PairInfo> {
    return this.primary.createPair(request, this.mgmtUrlFor(seenAs?.host));
  }

  /**
   * This node's management URL as an operator reaches it, for the secondary's hints: the
   * listening address when it is one address, else the Host the request came in on (a wildcard
   * listener has no one address); undefined when neither says.
   */
  private mgmtUrlFor(hostHeader: string | undefined): string | undefined {
    const host = this.options.mgmt.host;
    const port = this.ports.mgmt;
    if (host !== "" && host !== "0.0.0.0" && host !== "::" && port !== 0) return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
    if (hostHeader === undefined || !/^[A-Za-z0-9.:[\]-]{1,255}$/.test(hostHeader)) return undefined;
    return `http://${hostHeader}`;
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

  unfencePair(group: string, force: boolean): Promise<PairInfo> {
    return this.primary.unfencePair(group, force);
  }

  suspendPairs(groups: readonly string[]): Promise<readonly PairInfo[]> {
    return this.primary.suspendPairs(groups);
  }

  resumePairs(groups: readonly string[]): Promise<readonly PairInfo[]> {
    return this.primary.resumePairs(groups);
  }

  detachPair(group: string): Promise<PairInfo> {
    return this.secondaries.detach(group);
  }

  attachPair(group: string): Promise<PairInfo> {
    return this.secondaries.attach(group);
  }

  // ---- PairControl (secondary side): src/secondary/secondary-role.ts ----------------

  preparePairSecondary(request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    validateName("group", request.group);
    return this.secondaries.prepare(request);
  }

  /**
   * `pair delete GROUP` (docs/replication.md, "Ending a pair"): on the primary both sides end;
   * on the secondary only with `force` (this side only: the primary gone or unreachable). A
   * group a pair delete left read-only becomes writable with `promote`. No pair: deleted false.
   */
  async deletePair(group: string, options: { readonly force: boolean; readonly promote: boolean }): Promise<PairEndInfo> {
    validateName("group", group);
    if (this.primary.hasPair(group)) return this.primary.deletePair(group, options);
    const record = this.requireMetadata().groups.find((g) => g.name === group);
    const secondary = record?.secondary;
    if (secondary !== undefined) {
      // A taken-over group: its own rules (the old primary's side, asked or told): secondary-role.ts.
      if (secondary.state === "takeover") return this.secondaries.endPair(group, { promote: options.promote, force: options.force });
      if (!options.force) {
        const promote = options.promote ? " --promote" : "";
        if (secondary.state !== "replicating") {
          throw new ControlError("TM_ERR_STATE", `group ${group} is the secondary of a pair from node ${secondary.primaryNode}, still in its initial copy (${secondary.state}): run pair delete against the primary, which ends its side; ` +
            `to end it on this node (the primary's pair deleted already, or its site lost): tidemark pair delete ${group} --force${promote} (its volumes then keep an incomplete copy, consistent with no point in time)`);
        }
        throw new ControlError("TM_ERR_STATE", `group ${group} is the secondary of a pair from node ${secondary.primaryNode}: run pair delete against the primary, which ends both sides; ` +
          `to end it on this node only (the primary gone or unreachable): tidemark pair delete ${group} --force${promote}`);
      }
      return this.secondaries.endPair(group, { promote: options.promote, force: true });
    }
    const promoted = options.promote && (await this.groups.makeWritable(group));
    return {
      group, deleted: false, role: null, readOnly: record?.readOnly !== undefined && !promoted, keptSequence: null,
      ...(promoted ? { promoted: true } : {}), ...(record?.incompleteCopy === undefined ? {} : { incompleteCopy: true }),
    };
  }

  setPairSecondary(group: string, to: string): Promise<PairInfo> {
    validateName("group", group);
    return this.primary.setSecondary(group, to);
  }

  checkPairSecondary(request: PairSecondaryCheckRequest): PairSecondaryInfo {
    validateName("group", request.group);
    return this.secondaries.check(request);
  }

  endPairSecondary(request: PairSecondaryEndRequest): Promise<PairEndInfo> {
    validateName("group", request.group);
    return this.secondaries.endPair(request.group, { pairId: request.pairId, primaryNode: request.primaryNode, promote: request.promote, force: false });
  }

  takeover(groupNames: readonly string[], options: TakeoverOptions = {}): Promise<readonly TakeoverResult[]> {
    return this.secondaries.takeoverInDomains(groupNames, options);
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
