// The node's volumes: their files, the handles the front ends read and write through (a
// write goes to the volume's group writer, or straight to the file outside any group; a
// secondary's volume is read-only), creation, and the allocation figures status shows.
import { join } from "node:path";
import type { Logger } from "pino";
import { volumeBytesMax, volumeBytesMin, volumesPerNodeMax } from "../core/limits.ts";
import { ControlError, VolumeIoError } from "../core/errors.ts";
import { validateName } from "../core/names.ts";
import type { ExportDescription, VolumeCatalog, VolumeHandle, WriteOptions } from "../core/volume-io.ts";
import type { Clock } from "../node/clock.ts";
import type { MetadataStore } from "../metadata/metadata-store.ts";
import type { VolumeInfo } from "../mgmt/control.ts";
import { ApplyOrder } from "../primary/apply-order.ts";
import type { GroupWriter } from "../primary/group-writer.ts";
import type { SecondaryGroup } from "../secondary/secondary-group.ts";
import { binaryBytes, fileSystemSpace, overcommitWarning } from "../storage/file-system.ts";
import { errorCode, type FileSystem } from "../storage/fs.ts";
import { validVolumeSize } from "../protocol/journal-record.ts";
import { assert } from "../core/assert.ts";
import { VolumeFile } from "../storage/volume-file.ts";
import { WrittenMap } from "../storage/written-map.ts";
import { createVolumeFile, logWrittenMapOrigins, undoVolumeFile, volumeCreateError } from "./volume-files.ts";

/** A volume open on this node, and who writes it: its group's writer (primary) or nothing (secondary: read-only). */
export interface LiveVolume {
  readonly id: number;
  readonly name: string;
  /** Grows with a volume resize (finishGrow), never shrinks; handles opened before keep the size they were opened with. */
  sizeBytes: number;
  readonly file: VolumeFile;
  readonly order: ApplyOrder;
  group: GroupWriter | undefined;
  /** Set while the volume is the secondary of a pair: read-only, shows the reflected image. */
  secondary: SecondaryGroup | undefined;
  allocatedBytes: number;
  /** Front-end handles open on it (NBD connections, host-protocol slots): it cannot be deleted while any is. */
  leases: number;
  /** Deleted: every operation through a handle still held answers EIO. */
  deleted: boolean;
}

export class VolumeRegistry {
  /** By name; during a create, a placeholder holds the name (it is not in byId yet). */
  readonly byName = new Map<string, LiveVolume>();
  readonly byId = new Map<number, LiveVolume>();
  /**
   * Volumes a command is putting into a group right now (group create): claimed before its first
   * await, so a concurrent group create or a volume delete cannot take them meanwhile.
   */
  readonly claims = new Set<number>();
  /** Volumes a resize runs on now (one at a time per volume). */
  private readonly resizing = new Set<number>();
  /** Ids handed out but maybe not yet persisted (creates run concurrently). */
  private idReserved = 0;
  /** Free bytes of the volumes' file system at the last look (statfs), for the overcommit warning. */
  private freeBytes: number | undefined;
  private readonly fileSystem: FileSystem;
  private readonly dataDir: string;
  private readonly logger: Logger;
  private readonly store: MetadataStore;
  private readonly clock: Clock;

  constructor(options: { fileSystem: FileSystem; dataDir: string; logger: Logger; store: MetadataStore; clock: Clock }) {
    this.fileSystem = options.fileSystem;
    this.dataDir = options.dataDir;
    this.logger = options.logger;
    this.store = options.store;
    this.clock = options.clock;
  }

  /** Opens every volume file named in the metadata (at start, before recovery). Throws the file system's error. */
  async open(): Promise<void> {
    const metadata = this.store.current;
    for (const record of metadata.volumes) {
      const file = await VolumeFile.open(this.fileSystem, join(this.dataDir, "volumes", record.fileName), record.sizeBytes);
      const live: LiveVolume = { id: record.id, name: record.name, sizeBytes: record.sizeBytes, file, order: new ApplyOrder(), group: undefined, secondary: undefined, allocatedBytes: 0, leases: 0, deleted: false };
      this.byName.set(record.name, live);
      this.byId.set(record.id, live);
    }
    logWrittenMapOrigins(this.logger, [...this.byId.values()]);
  }

  /**
   * At stop, after the groups closed: every volume synced, its written map saved, its file
   * closed. A disk that fails now loses nothing the journals do not hold: each failure is
   * logged and the stop goes on.
   */
  async close(): Promise<void> {
    for (const volume of this.byId.values()) {
      await volume.file.datasync().catch((error: unknown) => {
        this.logger.error({ event: "volume_sync_failed", volume: volume.name, err: error }, "volume not synced at stop; the journal still covers it");
      });
      await volume.file.written.save().catch((error: unknown) => {
        this.logger.error({ event: "written_map_save_failed", volume: volume.name, err: error }, "written map not saved at stop; the journal still covers it");
      });
      await volume.file.close();
    }
  }

  catalog(): VolumeCatalog {
    return {
      open: (name) => {
        const volume = this.byName.get(name);
        if (volume === undefined || volume.file === undefined || volume.deleted) return undefined;
        volume.leases += 1;
        return this.handleFor(volume);
      },
      list: (): ExportDescription[] => [...this.byId.values()].map((v) => ({ name: v.name, sizeBytes: v.sizeBytes, readOnly: isReadOnly(v) })),
    };
  }

  private handleFor(volume: LiveVolume): VolumeHandle {
    let released = false;
    const checkLive = (): void => {
      if (volume.deleted) throw new VolumeIoError("EIO", `volume ${volume.name} was deleted`);
    };
    const checkRange = (offsetBytes: number, lengthBytes: number): void => {
      checkLive();
      if (!(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= volume.sizeBytes)) {
        throw new VolumeIoError("EINVAL", `range ${offsetBytes}+${lengthBytes} is outside volume ${volume.name} of ${volume.sizeBytes} bytes`);
      }
    };
    const writeRange = (offsetBytes: number, lengthBytes: number, options: WriteOptions, kind: "data" | "zeroes", data?: Buffer): Promise<void> => {
      checkRange(offsetBytes, lengthBytes);
      if (volume.secondary !== undefined) {
        return Promise.reject(new VolumeIoError("EPERM", `volume ${volume.name} is the secondary of a pair and read-only; take it over first (tidemark pair takeover ${volume.secondary.name})`));
      }
      const readOnly = volume.group?.readOnlyReason;
      if (readOnly !== undefined) return Promise.reject(new VolumeIoError("EPERM", `volume ${volume.name} is read-only: ${readOnly}`));
      if (lengthBytes === 0) return Promise.resolve();
      const group = volume.group;
      if (group !== undefined) {
        return kind === "data"
          ? group.write(volume.id, offsetBytes, data as Buffer, options.fua, options.hostWriteTimeUs)
          : group.writeZeroes(volume.id, offsetBytes, lengthBytes, options.fua, options.hostWriteTimeUs);
      }
      // Outside any group: written straight to the volume, no journal. No journal replays such
      // a write after a crash, so the written map's bits for it are made durable first (docs/volumes.md).
      const applied = volume.order.run(offsetBytes, offsetBytes + lengthBytes, async () => {
        if (kind === "zeroes") return volume.file.writeZeroes(offsetBytes, lengthBytes);
        await volume.file.written.ensureDurable(offsetBytes, lengthBytes);
        return volume.file.write(offsetBytes, data as Buffer);
      });
      return options.fua ? applied.then(() => volume.file.datasync()) : applied;
    };
    return {
      name: volume.name,
      sizeBytes: volume.sizeBytes,
      get readOnly() {
        return isReadOnly(volume);
      },
      read: async (offsetBytes, lengthBytes, into) => {
        checkRange(offsetBytes, lengthBytes);
        // Answered writes not yet on the volume (it follows the journal's fdatasync) come first.
        const pending = lengthBytes === 0 ? undefined : volume.order.settledOver(offsetBytes, offsetBytes + lengthBytes);
        if (pending !== undefined) {
          volume.group?.hurryApplies();
          await pending;
        }
        return volume.file.read(offsetBytes, lengthBytes, into);
      },
      write: (offsetBytes, data, options) => {
        const free = options.onPayloadFree;
        const group = volume.group;
        // A lent payload: the group's writer frees it once the volume has it; every other path
        // is done with it when the write settles (or throws at the edge).
        if (free !== undefined && volume.secondary === undefined && group !== undefined && group.readOnlyReason === undefined && data.length > 0 &&
          offsetBytes >= 0 && offsetBytes + data.length <= volume.sizeBytes) {
          return group.write(volume.id, offsetBytes, data, options.fua, options.hostWriteTimeUs, free);
        }
        let result: Promise<void>;
        try {
          result = writeRange(offsetBytes, data.length, options, "data", data);
        } catch (error) {
          free?.();
          throw error;
        }
        if (free !== undefined) void result.then(free, free);
        return result;
      },
      writeZeroes: (offsetBytes, lengthBytes, options) => writeRange(offsetBytes, lengthBytes, options, "zeroes"),
      trim: (offsetBytes, lengthBytes, options) => writeRange(offsetBytes, lengthBytes, options, "zeroes"),
      release: () => {
        if (released) return;
        released = true;
        volume.leases -= 1;
      },
      flush: async () => {
        checkLive();
        const group = volume.group;
        if (volume.secondary !== undefined) return;
        if (group !== undefined) await group.flush();
        else await volume.file.datasync();
      },
    };
  }

  /** Every volume, as status and the API show it. */
  list(): VolumeInfo[] {
    // Not the placeholders of creates in progress: they have no file yet.
    return [...this.byName.values()].filter((v) => this.byId.get(v.id) === v).map((v) => this.info(v));
  }

  private info(volume: LiveVolume): VolumeInfo {
    return {
      name: volume.name, sizeBytes: volume.sizeBytes, allocatedBytes: volume.allocatedBytes, group: volume.group?.name ?? volume.secondary?.name ?? null, readOnly: isReadOnly(volume),
      writtenBytes: volume.file.written.markedBytes,
      warning: this.freeBytes === undefined ? null : overcommitWarning(volume, this.freeBytes, join(this.dataDir, "volumes")),
    };
  }

  /**
   * Makes a volume: its sparse file and written map, then the metadata entry. Nothing is left
   * behind on failure. Throws ControlError: TM_ERR_INVALID (name, size), TM_ERR_EXISTS,
   * TM_ERR_LIMIT, TM_ERR_NO_SPACE / TM_ERR_IO (volume-files.ts volumeCreateError).
   */
  async create(name: string, sizeBytes: number): Promise<VolumeInfo> {
    validateName("volume", name);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < volumeBytesMin || sizeBytes > volumeBytesMax || sizeBytes % 512 !== 0) {
      throw new ControlError("TM_ERR_INVALID", `volume size ${sizeBytes} is not valid: it must be a multiple of 512 bytes between ${volumeBytesMin} and ${volumeBytesMax} bytes`);
    }
    if (this.byName.has(name)) throw new ControlError("TM_ERR_EXISTS", `volume ${name} already exists`);
    if (this.byName.size >= volumesPerNodeMax) throw new ControlError("TM_ERR_LIMIT", `a node holds at most ${volumesPerNodeMax} volumes`);
    const metadata = this.store.current;
    // Reserved before the first await: concurrent creates get distinct ids and files.
    const id = Math.max(metadata.nextVolumeId, this.idReserved);
    this.idReserved = id + 1;
    const fileName = `${id}.vol`;
    // Reserve the name before the first await so a concurrent create of the same name fails.
    const placeholder = { id, name, sizeBytes } as LiveVolume;
    this.byName.set(name, placeholder);
    const volumesDir = join(this.dataDir, "volumes");
    const path = join(volumesDir, fileName);
    let file: VolumeFile | undefined;
    try {
      file = await createVolumeFile(this.fileSystem, path, sizeBytes, this.store.current, this.logger);
      await this.store.update((m) => {
        m.nextVolumeId = Math.max(m.nextVolumeId, id + 1);
        m.volumes.push({ id, name, sizeBytes, fileName, createdAt: new Date(this.clock.wallMs()).toISOString() });
      });
    } catch (error) {
      this.byName.delete(name);
      // Nothing is left behind: no file, no map, no metadata entry (unless the metadata did land).
      if (file !== undefined) await undoVolumeFile(file, this.dataDir, this.logger);
      throw volumeCreateError(error, name, sizeBytes);
    }
    const live: LiveVolume = { id, name, sizeBytes, file, order: new ApplyOrder(), group: undefined, secondary: undefined, allocatedBytes: 0, leases: 0, deleted: false };
    this.byName.set(name, live);
    this.byId.set(id, live);
    const space = await fileSystemSpace(this.fileSystem, volumesDir).catch(() => undefined);
    if (space !== undefined) this.freeBytes = space.freeBytes;
    const info = this.info(live);
    this.logger.info({ event: "volume_created", volume: name, sizeBytes }, "volume created");
    if (info.warning !== null && info.warning !== undefined) {
      this.logger.warn({ event: "volume_overcommitted", volume: name, sizeBytes, freeBytes: this.freeBytes, dir: volumesDir }, info.warning);
    }
    return info;
  }

  /**
   * Deletes volume `name`: node.json forgets it, then its file and written map are removed.
   * Returns false when there is no such volume (deleting again is not an error). Refuses with
   * ControlError: TM_ERR_STATE (in a group, a pair's secondary, being put into a group, or
   * open by a host: an NBD connection or a host-protocol slot), TM_ERR_CONFLICT (it holds data
   * and `force` is not set: deleting it loses what a user wrote). The file system's error is
   * thrown as it is (node.json then still holds the volume, or no longer does and the file is
   * left behind: the next start removes it, src/node/deleted-leftovers.ts).
   */
  async delete(name: string, force: boolean): Promise<boolean> {
    validateName("volume", name);
    const volume = this.byName.get(name);
    if (volume === undefined) return false;
    if (volume.file === undefined || this.byId.get(volume.id) !== volume) throw new ControlError("TM_ERR_STATE", `volume ${name} is being created right now`);
    const owner = volume.group?.name ?? volume.secondary?.name;
    if (owner !== undefined) {
      throw new ControlError("TM_ERR_STATE", volume.secondary !== undefined
        ? `volume ${name} is the secondary of the pair of group ${owner}; it cannot be deleted while the pair lasts`
        : `volume ${name} is in group ${owner}; delete the group first (tidemark group delete ${owner}: the volumes stay)`);
    }
    if (this.claims.has(volume.id)) throw new ControlError("TM_ERR_STATE", `volume ${name} is being put into a group right now`);
    const leases = volume.leases;
    if (leases > 0) throw new ControlError("TM_ERR_STATE", `volume ${name} is open by ${leases} host connection${leases === 1 ? "" : "s"} (NBD or host protocol); disconnect them first`);
    const writtenBytes = volume.file.written.markedBytes;
    if (writtenBytes > 0 && !force) {
      throw new ControlError("TM_ERR_CONFLICT", `volume ${name} holds data (up to ${binaryBytes(writtenBytes)} written); deleting it loses that. To delete it anyway: tidemark volume delete ${name} --force`);
    }
    // Gone from the catalog at once: no new handle, no group create finds it.
    volume.deleted = true;
    this.byName.delete(name);
    this.byId.delete(volume.id);
    try {
      await this.store.update((m) => {
        m.volumes = m.volumes.filter((v) => v.id !== volume.id);
      });
    } catch (error) {
      volume.deleted = false;
      this.byName.set(name, volume);
      this.byId.set(volume.id, volume);
      throw error;
    }
    const path = volume.file.path;
    await volume.order.drain();
    await volume.file.close();
    await this.fileSystem.unlink(path).catch((error: unknown) => this.logger.warn({ event: "volume_file_left", volume: name, path, err: error }, "the deleted volume's file could not be removed; nothing reads it again"));
    await this.fileSystem.unlink(WrittenMap.pathFor(path)).catch(() => undefined); // a volume never written may have none
    await this.fileSystem.syncDirectory(join(this.dataDir, "volumes")).catch(() => undefined);
    this.logger.info({ event: "volume_deleted", volume: name, writtenBytes, forced: force && writtenBytes > 0 }, "volume deleted");
    return true;
  }

  /**
   * `volume resize NAME --size SIZE`: grows a volume (docs/volumes.md, "Growing a volume").
   * The same size again is a success that changes nothing (`changed` false). A volume in no
   * group grows here: the file is extended (durably), node.json saves the new size, then the
   * written map and the size in memory grow, and the answer comes after. A volume in a
   * writable group grows through its group's writer, which records the resize in the group's
   * sequence between the file's extension and the save (`pairRefusal` first says whether the
   * group's pair can carry it). Refuses with ControlError: TM_ERR_INVALID (name, a size that
   * is no volume size, a smaller size), TM_ERR_NOT_FOUND, TM_ERR_STATE (a pair's secondary,
   * being created or put into a group, a group that cannot record it now), TM_ERR_CONFLICT (a
   * resize of it runs now), TM_ERR_LIMIT / TM_ERR_NO_SPACE (the file system refused the size).
   */
  async resize(name: string, sizeBytes: number, pairRefusal: (group: string) => string | undefined): Promise<{ volume: VolumeInfo; changed: boolean }> {
    validateName("volume", name);
    if (!validVolumeSize(sizeBytes)) {
      throw new ControlError("TM_ERR_INVALID", `volume size ${sizeBytes} is not valid: it must be a multiple of 512 bytes between ${volumeBytesMin} and ${volumeBytesMax} bytes`);
    }
    const volume = this.byName.get(name);
    if (volume === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `volume ${name} does not exist; see tidemark volume list`);
    if (volume.file === undefined || this.byId.get(volume.id) !== volume) throw new ControlError("TM_ERR_STATE", `volume ${name} is being created right now; try again`);
    if (sizeBytes < volume.sizeBytes) {
      throw new ControlError("TM_ERR_INVALID", `volume ${name} is ${binaryBytes(volume.sizeBytes)} (${volume.sizeBytes} bytes); a volume only grows, it cannot shrink to ${binaryBytes(sizeBytes)} (${sizeBytes} bytes)`);
    }
    if (sizeBytes === volume.sizeBytes) return { volume: this.info(volume), changed: false };
    if (volume.secondary !== undefined) {
      throw new ControlError("TM_ERR_STATE", `volume ${name} is the secondary of the pair of group ${volume.secondary.name}: resize it on the primary, and this one grows with it`);
    }
    if (this.claims.has(volume.id)) throw new ControlError("TM_ERR_STATE", `volume ${name} is being put into a group right now; try again`);
    if (this.resizing.has(volume.id)) throw new ControlError("TM_ERR_CONFLICT", `a resize of volume ${name} runs now; wait for it, then see tidemark volume list`);
    this.resizing.add(volume.id);
    try {
      const group = volume.group;
      if (group !== undefined) {
        const refusal = pairRefusal(group.name);
        if (refusal !== undefined) throw new ControlError("TM_ERR_STATE", refusal);
        // The writer checks what it must (stopped, fenced, read-only, writes held) before anything changes.
        group.checkResize(volume.id);
        await this.extend(volume, sizeBytes);
        try {
          await group.resize(volume.id, sizeBytes);
        } catch (error) {
          // Refused before the record was appended (the group's state changed meanwhile, e.g.
          // writes became held): nothing records the grow, so the extension is undone. After the
          // append the record is the truth (a resume's replay grows the volume): left as it is.
          if (error instanceof ControlError) await volume.file.cutBackExtension().catch(() => undefined);
          throw error;
        }
      } else {
        await this.extend(volume, sizeBytes);
        await this.finishGrow(volume.id, sizeBytes);
      }
    } finally {
      this.resizing.delete(volume.id);
    }
    return { volume: this.info(volume), changed: true };
  }

  /**
   * A whole grow of volume `volumeId` to `sizeBytes` (nothing when it is that large already):
   * the file extended, node.json saved, then the map and the size in memory. What a journal's
   * resize record does at replay and on a pair's secondary, and a resize of a volume in no group.
   * Errors: the file system's (ENOSPC, EIO ...) and node.json's, as they are: the group that
   * applies the record stops and resumes by itself (a replay, a reflection).
   */
  async grow(volumeId: number, sizeBytes: number): Promise<void> {
    const volume = this.byId.get(volumeId);
    assert(volume !== undefined, () => `volume ${volumeId} to grow exists`);
    if (sizeBytes <= volume.sizeBytes) return;
    await volume.file.extendFile(sizeBytes);
    await this.finishGrow(volumeId, sizeBytes);
  }

  /** Step 1 for the operator: the file extended durably (a size the file system refuses is refused here, before anything is recorded, with what to do). */
  private async extend(volume: LiveVolume, sizeBytes: number): Promise<void> {
    try {
      await volume.file.extendFile(sizeBytes);
    } catch (error) {
      const code = errorCode(error);
      if (code === "EFBIG") throw new ControlError("TM_ERR_LIMIT", `volume ${volume.name} cannot grow to ${sizeBytes} bytes (${binaryBytes(sizeBytes)}): the file system of ${join(this.dataDir, "volumes")} holds no file that large; use a smaller --size`);
      if (code === "ENOSPC") throw new ControlError("TM_ERR_NO_SPACE", `no space to grow volume ${volume.name}`);
      throw error;
    }
  }

  /**
   * Steps 3 and 4 (after the group's resize record is durable, if it has a group): node.json
   * saves the new size, then the written map and the size in memory grow, so writes past the
   * old end are accepted from now on. Idempotent. Errors: node.json's or the file system's.
   */
  async finishGrow(volumeId: number, sizeBytes: number): Promise<void> {
    const volume = this.byId.get(volumeId);
    assert(volume !== undefined, () => `volume ${volumeId} to grow exists`);
    const fromBytes = volume.sizeBytes;
    if (sizeBytes <= fromBytes) return;
    await this.store.update((m) => {
      const record = m.volumes.find((v) => v.id === volumeId);
      assert(record !== undefined, () => `volume ${volumeId} is in node.json`);
      record.sizeBytes = Math.max(record.sizeBytes, sizeBytes);
    });
    await volume.file.grow(sizeBytes);
    volume.sizeBytes = sizeBytes;
    this.logger.info({ event: "volume_resized", volume: volume.name, fromBytes, sizeBytes, group: volume.group?.name ?? volume.secondary?.name }, "volume grown");
  }

  /** Allocation and the free space left for it, read off the files now and then, so status never waits on the disk. */
  async refreshAllocation(): Promise<void> {
    const space = await fileSystemSpace(this.fileSystem, join(this.dataDir, "volumes")).catch(() => undefined);
    this.freeBytes = space?.freeBytes;
    for (const volume of this.byId.values()) {
      try {
        volume.allocatedBytes = await volume.file.allocatedBytes();
      } catch {
        // a volume closing under us; the next refresh will tell
      }
    }
  }
}

/** A pair's secondary, or a group left read-only by a pair delete without --promote: exported read-only, host writes refused (EPERM). */
function isReadOnly(volume: LiveVolume): boolean {
  return volume.secondary !== undefined || volume.group?.readOnlyReason !== undefined;
}
