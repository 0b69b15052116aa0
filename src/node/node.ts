// One tidemark node: a storage system with an id and a data directory. It recovers its
// volumes and journals, then serves NBD, the host protocol, replication and management.
// This file wires the pieces; the write path is in group-writer.ts, the servers in their own files.
import { mkdir, open, readFile, unlink } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import {
  groupsPerNodeMax, journalBytesMaxDefault, nameLengthMax, volumeBytesMax, volumeBytesMin, volumesPerGroupMax, volumesPerNodeMax,
} from "../core/limits.ts";
import { asAcceptNumber, asVolumeId, asWriteTimeUs, type WriteTimePolicy } from "../core/types.ts";
import { VolumeIoError, type ExportDescription, type VolumeCatalog, type VolumeHandle, type WriteOptions } from "../core/volume-io.ts";
import { RecordKind, type JournalRecord } from "../protocol/journal-record.ts";
import { GroupJournal } from "../storage/journal.ts";
import { VolumeFile } from "../storage/volume-file.ts";
import { makeDirectoryDurable } from "../storage/durable-fs.ts";
import { ApplyOrder } from "./apply-order.ts";
import { ControlError, type GroupInfo, type NodeControl, type NodeStatus, type VolumeInfo } from "./control.ts";
import { GroupWriter, type GroupVolume } from "./group-writer.ts";
import { startHostServer, type HostServer } from "./host-server.ts";
import { emptyMetadata, loadMetadata, saveMetadata, type NodeMetadata } from "./metadata.ts";
import { NodeMetrics, type JournalFigures } from "./metrics.ts";
import { startMgmtApi } from "./mgmt-api.ts";
import { startNbdServer, type NbdServer } from "./nbd-server.ts";
import { NodeStamper, wallClockUs } from "./stamper.ts";

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
  readonly writeTimePolicy: WriteTimePolicy;
  readonly logger: Logger;
}

interface LiveVolume {
  readonly id: number;
  readonly name: string;
  readonly sizeBytes: number;
  readonly file: VolumeFile;
  readonly order: ApplyOrder;
  group: GroupWriter | undefined;
  allocatedBytes: number;
}

/** How often volume allocation (for status) is re-read from the files. */
const allocationRefreshMs = 5000;

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function validateName(kind: string, name: string): void {
  if (name.length === 0 || name.length > nameLengthMax || !namePattern.test(name)) {
    throw new ControlError("TM_ERR_INVALID", `${kind} name "${name}" is not valid: use 1-${nameLengthMax} letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

export class TidemarkNode implements NodeControl {
  private readonly options: NodeOptions;
  private readonly logger: Logger;
  private readonly stamper: NodeStamper;
  private metadata: NodeMetadata | undefined;
  private readonly volumesByName = new Map<string, LiveVolume>();
  private readonly volumesById = new Map<number, LiveVolume>();
  private readonly groups = new Map<string, GroupWriter>();
  private metadataChain: Promise<void> = Promise.resolve();
  readonly nodeMetrics: NodeMetrics;
  private allocationTimer: NodeJS.Timeout | undefined;
  private nbdServer: NbdServer | undefined;
  private hostServer: HostServer | undefined;
  private replServer: Server | undefined;
  private readonly replSockets = new Set<Socket>();
  private mgmtApi: { port: number; close(): Promise<void> } | undefined;
  private startedAt = new Date();
  private lockPath: string;
  private lockTaken = false;
  private stopping: Promise<void> | undefined;
  readonly ports = { mgmt: 0, nbd: 0, host: 0, repl: 0 };

  constructor(options: NodeOptions) {
    this.options = options;
    this.logger = options.logger;
    this.stamper = new NodeStamper(options.writeTimePolicy, wallClockUs());
    this.nodeMetrics = new NodeMetrics(options.id, () => this.journalFigures());
    this.lockPath = join(options.dataDir, "lock");
  }

  // ---- start and stop -------------------------------------------------------------

  async start(): Promise<void> {
    this.startedAt = new Date();
    await mkdir(this.options.dataDir, { recursive: true });
    await this.takeLock();
    await makeDirectoryDurable(join(this.options.dataDir, "volumes"));
    await makeDirectoryDurable(join(this.options.dataDir, "journals"));
    const loaded = await loadMetadata(this.options.dataDir);
    if (loaded !== undefined && loaded.nodeId !== this.options.id) {
      throw new Error(`data directory ${this.options.dataDir} belongs to node "${loaded.nodeId}", not "${this.options.id}"; use --id ${loaded.nodeId} or another --data`);
    }
    this.metadata = loaded ?? emptyMetadata(this.options.id, this.startedAt.toISOString());
    if (loaded === undefined) await saveMetadata(this.options.dataDir, this.metadata);
    this.stamper.raiseTo({
      recordedWriteTimeUs: asWriteTimeUs(this.metadata.writeTime.recordedWriteTimeUs),
      lastAcceptNumber: asAcceptNumber(this.metadata.writeTime.lastAcceptNumber),
    });
    await this.openVolumes();
    await this.recoverGroups();
    await this.startListeners();
    await this.refreshAllocation();
    this.allocationTimer = setInterval(() => void this.refreshAllocation(), allocationRefreshMs);
    this.allocationTimer.unref();
    this.logger.info({ event: "node_started", id: this.options.id, dataDir: this.options.dataDir, ports: this.ports, volumes: this.volumesByName.size, groups: this.groups.size, writeTime: this.options.writeTimePolicy }, "node started");
  }

  private async takeLock(): Promise<void> {
    try {
      const handle = await open(this.lockPath, "wx");
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      this.lockTaken = true;
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const pid = Number.parseInt((await readFile(this.lockPath, "utf8")).trim(), 10);
    if (Number.isInteger(pid) && pid !== process.pid && (await processAlive(pid))) {
      throw new Error(`data directory ${this.options.dataDir} is in use by process ${pid}; stop that node first or use another --data`);
    }
    this.logger.warn({ event: "stale_lock", stalePid: pid }, "previous node did not stop cleanly; recovering");
    await unlink(this.lockPath);
    await this.takeLock();
  }

  private async openVolumes(): Promise<void> {
    const metadata = this.requireMetadata();
    for (const record of metadata.volumes) {
      const file = await VolumeFile.open(join(this.options.dataDir, "volumes", record.fileName), record.sizeBytes);
      const live: LiveVolume = { id: record.id, name: record.name, sizeBytes: record.sizeBytes, file, order: new ApplyOrder(), group: undefined, allocatedBytes: 0 };
      this.volumesByName.set(record.name, live);
      this.volumesById.set(record.id, live);
    }
  }

  private async recoverGroups(): Promise<void> {
    const metadata = this.requireMetadata();
    for (const record of metadata.groups) {
      const volumes = new Map<number, GroupVolume>();
      for (const volumeId of record.volumeIds) {
        const live = this.volumesById.get(volumeId);
        assert(live !== undefined, `group ${record.name} names volume ${volumeId} that exists`);
        volumes.set(volumeId, { id: asVolumeId(volumeId), file: live.file, order: live.order });
      }
      let replayed = 0;
      const replay = async (journalRecord: JournalRecord): Promise<void> => {
        // Re-apply in sequence order: idempotent, whatever the volumes already held.
        if (journalRecord.sequence <= record.checkpointSequence) return;
        const volume = volumes.get(journalRecord.volumeId);
        if (volume === undefined) throw new Error(`journal of group ${record.name} has a record for unknown volume ${journalRecord.volumeId}`);
        if (journalRecord.kind === RecordKind.write) await volume.file.write(journalRecord.offsetBytes, journalRecord.payload);
        else if (journalRecord.kind === RecordKind.zeroes) await volume.file.writeZeroes(journalRecord.offsetBytes, journalRecord.lengthBytes);
        replayed += 1;
      };
      const { journal, report } = await GroupJournal.open(this.journalDir(record.id), { bytesMax: record.journalBytesMax, nextSequence: record.checkpointSequence + 1 }, replay);
      const lastSequence = report.lastSequence ?? 0;
      const nextSequence = Math.max(lastSequence + 1, record.checkpointSequence + 1);
      this.stamper.raiseTo({ recordedWriteTimeUs: asWriteTimeUs(report.maxWriteTimeUs), lastAcceptNumber: asAcceptNumber(report.maxAcceptNumber) });
      const writer = new GroupWriter({
        groupId: record.id,
        name: record.name,
        journal,
        stamper: this.stamper,
        volumes,
        nextSequence,
        appliedSequence: nextSequence - 1,
        persistCheckpoint: (result) => this.updateMetadata((m) => {
          const group = m.groups.find((g) => g.id === record.id);
          assert(group !== undefined, "checkpointed group is in the metadata");
          assert(result.checkpointSequence >= group.checkpointSequence, "checkpoints never go back");
          group.checkpointSequence = result.checkpointSequence;
          group.nextSequence = result.nextSequence;
        }),
      });
      this.groups.set(record.name, writer);
      for (const volumeId of record.volumeIds) {
        const live = this.volumesById.get(volumeId);
        if (live !== undefined) live.group = writer;
      }
      if (report.records > 0 || report.tornBytesCut > 0) {
        this.logger.info({ event: "journal_recovered", group: record.name, replayed, records: report.records, tornBytesCut: report.tornBytesCut, nextSequence }, "journal recovered");
      }
    }
  }

  private journalDir(groupId: number): string {
    return join(this.options.dataDir, "journals", String(groupId));
  }

  private async startListeners(): Promise<void> {
    const catalog = this.catalog();
    this.nbdServer = await startNbdServer({
      host: this.options.nbd.host, port: this.options.nbd.port, catalog, logger: this.logger.child({ component: "nbd" }),
      onRequest: (op, bytes, latencySeconds, errno) => this.nodeMetrics.observe("nbd", op, bytes, latencySeconds, errno === 0),
    });
    this.ports.nbd = this.nbdServer.port;
    this.hostServer = await startHostServer({
      host: this.options.host.host, port: this.options.host.port, catalog, logger: this.logger.child({ component: "host" }),
      onRequest: (op, bytes, latencySeconds, ok) => this.nodeMetrics.observe("host", op, bytes, latencySeconds, ok),
    });
    this.ports.host = this.hostServer.port;
    this.ports.repl = await this.startReplListener();
    this.mgmtApi = await startMgmtApi({ host: this.options.mgmt.host, port: this.options.mgmt.port, control: this, logger: this.logger.child({ component: "mgmt" }) });
    this.ports.mgmt = this.mgmtApi.port;
  }

  /** Replication listener. Pairs (the replication protocol) come with the remote-copy work. */
  private startReplListener(): Promise<number> {
    const server = createServer((socket) => {
      this.replSockets.add(socket);
      socket.on("close", () => this.replSockets.delete(socket));
      socket.on("error", () => socket.destroy());
      socket.end();
    });
    this.replServer = server;
    return listen(server, this.options.repl);
  }

  /** Clean stop: no new connections, in-flight work finished, journals durable, checkpoint saved. */
  stop(): Promise<void> {
    this.stopping ??= this.runStop();
    return this.stopping;
  }

  private async runStop(): Promise<void> {
    this.logger.info({ event: "node_stopping" }, "stopping");
    clearInterval(this.allocationTimer);
    await this.mgmtApi?.close();
    await this.nbdServer?.close();
    await this.hostServer?.close();
    for (const socket of this.replSockets) socket.destroy();
    await new Promise<void>((resolve) => (this.replServer ? this.replServer.close(() => resolve()) : resolve()));
    for (const writer of this.groups.values()) {
      try {
        await writer.close();
        await writer.journalStats.close();
      } catch (error) {
        this.logger.error({ event: "group_close_failed", group: writer.name, err: error }, "group did not close cleanly");
      }
    }
    for (const volume of this.volumesById.values()) {
      await volume.file.datasync();
      await volume.file.close();
    }
    if (this.metadata !== undefined) await this.updateMetadata(() => undefined);
    if (this.lockTaken) await unlink(this.lockPath).catch(() => undefined);
    this.logger.info({ event: "node_stopped" }, "stopped");
  }

  // ---- metadata -------------------------------------------------------------------

  private requireMetadata(): NodeMetadata {
    assert(this.metadata !== undefined, "metadata is loaded");
    return this.metadata;
  }

  /** Serialised read-modify-write of the metadata; the write time state is saved with every change. */
  private updateMetadata(change: (metadata: NodeMetadata) => void): Promise<void> {
    const run = async (): Promise<void> => {
      const next = structuredClone(this.requireMetadata());
      change(next);
      next.writeTime = { recordedWriteTimeUs: this.stamper.state.recordedWriteTimeUs, lastAcceptNumber: this.stamper.state.lastAcceptNumber };
      await saveMetadata(this.options.dataDir, next);
      this.metadata = next;
    };
    const result = this.metadataChain.then(run);
    this.metadataChain = result.catch(() => undefined);
    return result;
  }

  // ---- front ends -----------------------------------------------------------------

  catalog(): VolumeCatalog {
    return {
      open: (name) => {
        const volume = this.volumesByName.get(name);
        return volume === undefined ? undefined : this.handleFor(volume);
      },
      list: (): ExportDescription[] => [...this.volumesByName.values()].map((v) => ({ name: v.name, sizeBytes: v.sizeBytes, readOnly: false })),
    };
  }

  private handleFor(volume: LiveVolume): VolumeHandle {
    const checkRange = (offsetBytes: number, lengthBytes: number): void => {
      if (!(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= volume.sizeBytes)) {
        throw new VolumeIoError("EINVAL", `range ${offsetBytes}+${lengthBytes} is outside volume ${volume.name} of ${volume.sizeBytes} bytes`);
      }
    };
    const writeRange = (offsetBytes: number, lengthBytes: number, options: WriteOptions, kind: "data" | "zeroes", data?: Buffer): Promise<void> => {
      checkRange(offsetBytes, lengthBytes);
      if (lengthBytes === 0) return Promise.resolve();
      const group = volume.group;
      if (group !== undefined) {
        return kind === "data"
          ? group.write(volume.id, offsetBytes, data as Buffer, options.fua, options.hostWriteTimeUs)
          : group.writeZeroes(volume.id, offsetBytes, lengthBytes, options.fua, options.hostWriteTimeUs);
      }
      // Outside any group: written straight to the volume, no journal.
      const applied = volume.order.run(offsetBytes, offsetBytes + lengthBytes, () =>
        kind === "data" ? volume.file.write(offsetBytes, data as Buffer) : volume.file.writeZeroes(offsetBytes, lengthBytes));
      return options.fua ? applied.then(() => volume.file.datasync()) : applied;
    };
    return {
      name: volume.name,
      sizeBytes: volume.sizeBytes,
      get readOnly() {
        return false;
      },
      read: async (offsetBytes, lengthBytes) => {
        checkRange(offsetBytes, lengthBytes);
        return volume.file.read(offsetBytes, lengthBytes);
      },
      write: (offsetBytes, data, options) => writeRange(offsetBytes, data.length, options, "data", data),
      writeZeroes: (offsetBytes, lengthBytes, options) => writeRange(offsetBytes, lengthBytes, options, "zeroes"),
      trim: (offsetBytes, lengthBytes, options) => writeRange(offsetBytes, lengthBytes, options, "zeroes"),
      flush: async () => {
        const group = volume.group;
        if (group !== undefined) await group.flush();
        else await volume.file.datasync();
      },
    };
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
      uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
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

  listVolumes(): VolumeInfo[] {
    return [...this.volumesByName.values()].map((v) => this.volumeInfo(v));
  }

  private volumeInfo(volume: LiveVolume): VolumeInfo {
    return { name: volume.name, sizeBytes: volume.sizeBytes, allocatedBytes: volume.allocatedBytes, group: volume.group?.name ?? null, readOnly: false };
  }

  async createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    validateName("volume", name);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < volumeBytesMin || sizeBytes > volumeBytesMax || sizeBytes % 512 !== 0) {
      throw new ControlError("TM_ERR_INVALID", `volume size ${sizeBytes} is not valid: it must be a multiple of 512 bytes between ${volumeBytesMin} and ${volumeBytesMax} bytes`);
    }
    if (this.volumesByName.has(name)) throw new ControlError("TM_ERR_EXISTS", `volume ${name} already exists`);
    if (this.volumesByName.size >= volumesPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${volumesPerNodeMax} volumes`);
    const metadata = this.requireMetadata();
    const id = metadata.nextVolumeId;
    const fileName = `${id}.vol`;
    // Reserve the name before the first await so a concurrent create of the same name fails.
    const placeholder = { id, name, sizeBytes } as LiveVolume;
    this.volumesByName.set(name, placeholder);
    let file: VolumeFile;
    try {
      file = await VolumeFile.create(join(this.options.dataDir, "volumes", fileName), sizeBytes);
      await this.updateMetadata((m) => {
        m.nextVolumeId = id + 1;
        m.volumes.push({ id, name, sizeBytes, fileName, createdAt: new Date().toISOString() });
      });
    } catch (error) {
      this.volumesByName.delete(name);
      if ((error as NodeJS.ErrnoException).code === "ENOSPC") throw new ControlError("TM_ERR_NO_SPACE", `no space for volume ${name}`);
      throw error;
    }
    const live: LiveVolume = { id, name, sizeBytes, file, order: new ApplyOrder(), group: undefined, allocatedBytes: 0 };
    this.volumesByName.set(name, live);
    this.volumesById.set(id, live);
    this.logger.info({ event: "volume_created", volume: name, sizeBytes }, "volume created");
    return this.volumeInfo(live);
  }

  listGroups(): GroupInfo[] {
    const metadata = this.requireMetadata();
    return metadata.groups.map((record) => {
      const writer = this.groups.get(record.name);
      assert(writer !== undefined, `group ${record.name} is live`);
      const journal = writer.journalStats;
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
      };
    });
  }

  async createGroup(name: string, volumeNames: readonly string[]): Promise<GroupInfo> {
    validateName("group", name);
    if (this.groups.has(name)) throw new ControlError("TM_ERR_EXISTS", `group ${name} already exists`);
    if (this.groups.size >= groupsPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${groupsPerNodeMax} groups`);
    if (volumeNames.length === 0) throw new ControlError("TM_ERR_INVALID", "a group needs at least one volume: --volumes V1[,V2...]");
    if (volumeNames.length > volumesPerGroupMax) throw new ControlError("TM_ERR_LIMIT", `a group holds at most ${volumesPerGroupMax} volumes`);
    if (new Set(volumeNames).size !== volumeNames.length) throw new ControlError("TM_ERR_INVALID", "a volume is named twice in --volumes");
    const members: LiveVolume[] = [];
    for (const volumeName of volumeNames) {
      const volume = this.volumesByName.get(volumeName);
      if (volume === undefined || volume.file === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `volume ${volumeName} does not exist; create it with: tidemark volume create ${volumeName} --size SIZE`);
      if (volume.group !== undefined) throw new ControlError("TM_ERR_CONFLICT", `volume ${volumeName} already belongs to group ${volume.group.name}; a volume belongs to at most one group`);
      members.push(volume);
    }
    const metadata = this.requireMetadata();
    const id = metadata.nextGroupId;
    const journalBytesMax = journalBytesMaxDefault;
    await makeDirectoryDurable(this.journalDir(id));
    const { journal } = await GroupJournal.open(this.journalDir(id), { bytesMax: journalBytesMax, nextSequence: 1 }, () => undefined);
    const volumes = new Map<number, GroupVolume>(members.map((v) => [v.id, { id: asVolumeId(v.id), file: v.file, order: v.order }]));
    // Writes already in flight to these volumes finish outside the journal; later ones are journaled.
    await Promise.all(members.map((v) => v.order.drain()));
    for (const v of members) await v.file.datasync();
    await this.updateMetadata((m) => {
      m.nextGroupId = id + 1;
      m.groups.push({ id, name, volumeIds: members.map((v) => v.id), checkpointSequence: 0, nextSequence: 1, journalBytesMax, createdAt: new Date().toISOString() });
    });
    const writer = new GroupWriter({
      groupId: id, name, journal, stamper: this.stamper, volumes, nextSequence: 1, appliedSequence: 0,
      persistCheckpoint: (result) => this.updateMetadata((m) => {
        const group = m.groups.find((g) => g.id === id);
        assert(group !== undefined, "checkpointed group is in the metadata");
        group.checkpointSequence = result.checkpointSequence;
        group.nextSequence = result.nextSequence;
      }),
    });
    this.groups.set(name, writer);
    for (const v of members) v.group = writer;
    this.logger.info({ event: "group_created", group: name, volumes: volumeNames }, "group created");
    const info = this.listGroups().find((g) => g.name === name);
    assert(info !== undefined, "new group is listed");
    return info;
  }

  metrics(): Promise<{ contentType: string; body: string }> {
    return this.nodeMetrics.text();
  }

  /** Allocation is read off the files now and then, so status never waits on the disk. */
  private async refreshAllocation(): Promise<void> {
    for (const volume of this.volumesById.values()) {
      try {
        volume.allocatedBytes = await volume.file.allocatedBytes();
      } catch {
        // a volume closing under us; the next refresh will tell
      }
    }
  }

  private journalFigures(): JournalFigures[] {
    return [...this.groups.values()].map((writer) => ({
      group: writer.name,
      usedBytes: writer.journalStats.usedBytes,
      bytesMax: writer.journalStats.bytesMax,
      fsyncs: writer.journalStats.fsyncCount,
      bytesWritten: writer.journalStats.bytesWritten,
      nextSequence: writer.nextSequence,
      appliedSequence: writer.appliedSequence,
    }));
  }

  // ---- PairControl stubs: added by the mgmt-api/CLI helper to keep the build green; the lead replaces this block ----
  createPair(_request: import("./control.ts").CreatePairRequest): Promise<import("./control.ts").PairInfo> {
    return Promise.reject(new ControlError("TM_ERR_INTERNAL", "pairs not implemented yet"));
  }
  listPairs(): readonly import("./control.ts").PairInfo[] {
    return [];
  }
  pair(group: string): import("./control.ts").PairInfo {
    throw new ControlError("TM_ERR_NOT_FOUND", `group '${group}' has no pair`);
  }
  suspendPair(_group: string): Promise<import("./control.ts").PairInfo> {
    return Promise.reject(new ControlError("TM_ERR_INTERNAL", "pairs not implemented yet"));
  }
  resumePair(_group: string): Promise<import("./control.ts").PairInfo> {
    return Promise.reject(new ControlError("TM_ERR_INTERNAL", "pairs not implemented yet"));
  }
  takeover(_groups: readonly string[]): Promise<readonly import("./control.ts").TakeoverResult[]> {
    return Promise.reject(new ControlError("TM_ERR_INTERNAL", "pairs not implemented yet"));
  }
  preparePairTarget(_request: import("./control.ts").PairTargetRequest): Promise<import("./control.ts").PairTargetInfo> {
    return Promise.reject(new ControlError("TM_ERR_INTERNAL", "pairs not implemented yet"));
  }
  // ---- end of PairControl stubs ----
}

/** Whether a process holds the lock: alive, and not a zombie waiting to be reaped. */
async function processAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

function listen(server: Server, address: Address): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      const bound = server.address();
      assert(bound !== null && typeof bound === "object", "server is bound to a TCP address");
      resolve(bound.port);
    });
  });
}
