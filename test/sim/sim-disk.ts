// The simulated, faulty twin of the storage seam (src/storage/fs.ts; docs/journal.md, "Storage
// seam"): an in-memory FileSystem that keeps, per file, a page cache and a disk, and per
// directory the entries a crash would keep. Deterministic from a seed; every asynchronous
// operation completes through the `schedule` it is given (virtual time in the simulation),
// after a latency drawn per operation. It models what the storage code relies on:
//
//   - writes go to the page cache (4 KiB pages); `datasync` writes back the pages that were
//     dirty when it was called and the size, and only then are they on the disk; a created,
//     renamed or unlinked name is on the disk only after its directory's fsync;
//   - crash("process"): the page cache and every name stay (the kernel lives on); writes in
//     flight land whole or not at all; nothing the dead process started ever completes;
//   - crash("power"): each file is its disk plus a seeded random subset of its dirty pages
//     (written back early, in any order, some torn at 512-byte sectors), its size the old or
//     the new one; writes in flight land in part, sector by sector, some sectors as garbage
//     (only within the bytes the write covered: the twin assumes "powersafe overwrite", as
//     SQLite does); each directory keeps a random prefix of the changes since its last fsync;
//   - faults, settable at any time: a capacity (ENOSPC from writes that need a new page, from
//     creating names, from growing a file by truncate on a full disk; a write that fits in part
//     is short), EIO at given rates or for given paths on reads, writes and syncs; a failed
//     datasync marks the pages it was writing clean without writing them ("fsyncgate"): reads
//     through the cache still see them, the disk never gets them, a later datasync succeeds;
//   - "direct-read" (O_DIRECT) first writes back the dirty pages of the range, then reads the
//     disk, so it sees what a failed datasync lost; offsets, lengths and buffer addresses must
//     be multiples of 512 B (EINVAL);
//   - statfs free bytes = capacity - pages held by files (sparse: only written pages count,
//     as stat's allocatedBytes); rename across directories is refused (EXDEV; tidemark never
//     does it and the twin does not model its crash behaviour).
//
// A process "restarts" by calling mount() again after a crash: the FileSystem (and every File)
// of the crashed process is dead: its asynchronous calls never settle, its synchronous calls
// throw EBADF.
import { posix } from "node:path";
import { fileSystemError, type File, type FileStat, type FileSystem, type FileSystemStat, type OpenMode } from "../../src/storage/fs.ts";
import { Prng } from "./prng.ts";

/** Runs `fn` after `delayMs` of (virtual) time. */
export type Schedule = (delayMs: number, fn: () => void) => void;

/** A scheduler on real timers, for the twin's own unit tests. */
export const realTimeSchedule: Schedule = (delayMs, fn) => {
  setTimeout(fn, delayMs);
};

export type CrashKind = "process" | "power";
export type FaultOp = "read" | "write" | "sync";
type LatencyKind = "read" | "write" | "sync" | "metadata";

export interface LatencyRange {
  readonly minMs: number;
  readonly maxMs: number;
}

export type SimLatency = Readonly<Record<LatencyKind, LatencyRange>>;

/** Odds of what a power loss does to each dirty page and each write in flight. */
export interface PowerLossOdds {
  /** A dirty page was written back before the power went (whole). */
  readonly pageWrittenBack: number;
  /** A dirty page was being written back: some of its sectors new, the rest old. */
  readonly pageTorn: number;
  /** A write in flight reached the disk at all (then sector by sector). */
  readonly inFlightWriteLands: number;
  /** A sector of a landing write in flight holds garbage instead of the data. */
  readonly sectorGarbage: number;
}

export interface SimDiskOptions {
  readonly seed: number;
  readonly schedule: Schedule;
  readonly latency?: Partial<SimLatency>;
  /** Total bytes the file system holds (default 1 TiB). */
  readonly capacityBytes?: number;
  /** false: "direct-read" opens fail with EINVAL, as on tmpfs (default true). */
  readonly directIo?: boolean;
  /** Largest file: EFBIG above it (default ext4's 16 TiB - 4 KiB). */
  readonly fileBytesMax?: number;
  readonly powerLoss?: Partial<PowerLossOdds>;
  /**
   * After a failed fdatasync its pages are clean, and the kernel may evict them at any time:
   * "keep" leaves them in the page cache (a reader still sees the lost bytes: only O_DIRECT
   * shows the loss), "evict" drops them at once (the next read returns what the disk has),
   * "either" (default) picks one per failed call from the seed.
   */
  readonly failedSyncPages?: "keep" | "evict" | "either";
}

/** How often the disk did what, for a simulation's event counts. */
export interface SimDiskCounts {
  operations: number;
  datasyncs: number;
  processCrashes: number;
  powerLosses: number;
  /** Dirty pages lost, torn or written back at power losses. */
  pagesLost: number;
  pagesTorn: number;
  /** Writes in flight at a crash (landed or not). */
  writesInFlightAtCrash: number;
  /** Directory changes not fsync'd that a power loss undid. */
  directoryChangesLost: number;
  enospc: number;
  eio: number;
  /** Pages a failed datasync marked clean without writing them. */
  pagesDroppedByFailedSync: number;
}

export const simPageBytes = 4096;
export const simSectorBytes = 512;
/** statfs f_type of the twin ("simd"). */
export const simFileSystemTypeCode = 0x73696d64;

const defaultLatency: SimLatency = {
  read: { minMs: 0.02, maxMs: 0.5 },
  write: { minMs: 0.02, maxMs: 0.5 },
  sync: { minMs: 0.2, maxMs: 5 },
  metadata: { minMs: 0.02, maxMs: 1 },
};
const defaultPowerLoss: PowerLossOdds = { pageWrittenBack: 0.4, pageTorn: 0.15, inFlightWriteLands: 0.6, sectorGarbage: 0.1 };
const tebibyte = 1024 ** 4;

interface FileNode {
  readonly kind: "file";
  readonly id: number;
  /**
   * What readers see: page index -> 4 KiB. Absent: zeroes. A page is changed in place only
   * while it is in `owned`; once anything else may hold it (a datasync in flight, the disk),
   * a write stores a new buffer, so holders keep what they took (pages are compared by identity).
   */
  cache: Map<number, Buffer>;
  /** Pages of `cache` whose buffer nothing else holds (written since it was last handed out). */
  owned: Set<number>;
  /** What the disk holds. */
  disk: Map<number, Buffer>;
  sizeBytes: number;
  diskSizeBytes: number;
  /** Pages whose cache content is still to be written back (absent in the cache: to be dropped from the disk). */
  dirty: Set<number>;
  opens: number;
  /** Its pages count against the capacity (it has a name, or is open). */
  counted: boolean;
  /** The last collect() pass that found it named (countedPass) or reachable at all (keptPass). */
  countedPass: number;
  keptPass: number;
}

interface DirOp {
  /** name -> node id, or undefined for a removed name; applied together (a rename is one change). */
  readonly changes: readonly (readonly [string, number | undefined])[];
}

interface DirNode {
  readonly kind: "dir";
  readonly id: number;
  live: Map<string, number>;
  /** The entries as of the last fsync of this directory (plus what crashes kept). */
  durable: Map<string, number>;
  /** Changes since then, in order: a power loss keeps a prefix of them. */
  pending: DirOp[];
  opens: number;
  counted: boolean;
  countedPass: number;
  keptPass: number;
}

type SimNode = FileNode | DirNode;

interface InFlight {
  /** What happens to the operation when the machine crashes before it completed. */
  readonly onCrash: ((kind: CrashKind) => void) | undefined;
}

/** The dirty pages a datasync writes back, as they were when it was called (in the order they were dirtied). */
interface CapturedPages {
  readonly indexes: number[];
  /** The cache's buffer for each (undefined: the page is to be dropped from the disk). */
  readonly contents: (Buffer | undefined)[];
}

/** A write in flight at a power loss, landing on the disk sector by sector after recovery. */
interface TornWrite {
  readonly node: FileNode;
  readonly data: Buffer;
  readonly positionBytes: number;
}

function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}

/** Zeroes [startBytes, endBytes) of `buffer` (the typed array's own fill: Buffer's checks its arguments at some cost). */
function fillZeroes(buffer: Buffer, startBytes: number, endBytes: number): void {
  Uint8Array.prototype.fill.call(buffer, 0, startBytes, endBytes);
}

/** Zeroes, never written to (absent pages read as these). */
const zeroPage = Buffer.alloc(simPageBytes);

/**
 * Copies data[dataOffsetBytes, +lengthBytes) into `node`'s page cache at positionBytes and
 * marks the pages dirty; returns how many pages it added. A page in node.owned is changed in
 * place; any other gets a new buffer (pages are compared by identity: whoever holds the old
 * one keeps what it took), which joins node.owned.
 */
function writeCachePages(node: FileNode, data: Buffer, dataOffsetBytes: number, lengthBytes: number, positionBytes: number): number {
  const { cache, owned, dirty } = node;
  let added = 0;
  let doneBytes = 0;
  while (doneBytes < lengthBytes) {
    const atBytes = positionBytes + doneBytes;
    const page = Math.floor(atBytes / simPageBytes);
    const inPageBytes = atBytes - page * simPageBytes;
    const countBytes = Math.min(simPageBytes - inPageBytes, lengthBytes - doneBytes);
    const from = dataOffsetBytes + doneBytes;
    const old = cache.get(page);
    if (old !== undefined && owned.has(page)) {
      data.copy(old, inPageBytes, from, from + countBytes);
    } else if (countBytes === simPageBytes && data.compare(zeroPage, 0, simPageBytes, from, from + simPageBytes) === 0) {
      // A whole page of zeroes (a space reserve, a zeroed range): a new view of the zero page,
      // a buffer of its own by identity but no memory of its own; never owned, so never changed.
      cache.set(page, zeroPage.subarray(0, simPageBytes));
      owned.delete(page);
    } else {
      cache.set(page, pageWith(old, data, from, inPageBytes, countBytes));
      owned.add(page);
    }
    dirty.add(page);
    if (old === undefined) added += 1;
    doneBytes += countBytes;
  }
  return added;
}

/** Copies `data` into the pages of `pages` at positionBytes (new page buffers: the disk's pages are shared with the cache). */
function writePages(pages: Map<number, Buffer>, data: Buffer, positionBytes: number): void {
  let doneBytes = 0;
  while (doneBytes < data.length) {
    const atBytes = positionBytes + doneBytes;
    const page = Math.floor(atBytes / simPageBytes);
    const inPageBytes = atBytes - page * simPageBytes;
    const countBytes = Math.min(simPageBytes - inPageBytes, data.length - doneBytes);
    pages.set(page, pageWith(pages.get(page), data, doneBytes, inPageBytes, countBytes));
    doneBytes += countBytes;
  }
}

/** A new page: `old` (or zeroes) with data[from, +countBytes) at inPageBytes. */
function pageWith(old: Buffer | undefined, data: Buffer, from: number, inPageBytes: number, countBytes: number): Buffer {
  // Zeroed only where neither the old page nor the data covers it.
  const next = newPage();
  if (old !== undefined) old.copy(next);
  else if (countBytes !== simPageBytes) fillZeroes(next, 0, simPageBytes);
  data.copy(next, inPageBytes, from, from + countBytes);
  return next;
}

/** Pages are cut from slabs: one ArrayBuffer per page costs more than the copy into it. */
const slabPages = 16;
let slab: Buffer | undefined;
let slabNext = slabPages;

/** A 4 KiB buffer, not zeroed. */
function newPage(): Buffer {
  if (slabNext === slabPages || slab === undefined) {
    slab = Buffer.allocUnsafeSlow(slabPages * simPageBytes);
    slabNext = 0;
  }
  const page = slab.subarray(slabNext * simPageBytes, (slabNext + 1) * simPageBytes);
  slabNext += 1;
  return page;
}

/** Copies [positionBytes, +lengthBytes) of `pages` into `into` at offsetBytes (holes read as zeroes). */
function readPages(pages: ReadonlyMap<number, Buffer>, into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): void {
  let doneBytes = 0;
  while (doneBytes < lengthBytes) {
    const atBytes = positionBytes + doneBytes;
    const page = Math.floor(atBytes / simPageBytes);
    const inPageBytes = atBytes - page * simPageBytes;
    const countBytes = Math.min(simPageBytes - inPageBytes, lengthBytes - doneBytes);
    const content = pages.get(page);
    if (content === undefined) fillZeroes(into, offsetBytes + doneBytes, offsetBytes + doneBytes + countBytes);
    else content.copy(into, offsetBytes + doneBytes, inPageBytes, inPageBytes + countBytes);
    doneBytes += countBytes;
  }
}

/** A file's page cache as a reader sees it now (SimDisk.cachedPages): valid until the disk's next operation. */
export interface CachedPages {
  readonly sizeBytes: number;
  /** Page index -> 4 KiB (absent: zeroes); pages past sizeBytes read as zeroes. */
  readonly pages: ReadonlyMap<number, Buffer>;
}

/**
 * Where bytes [positionBytes, +lengthBytes) of `file` are, without copying when they lie in
 * one page inside the file: that page (or zeroes) and the offset in it; otherwise a copy in
 * `scratch` (at least lengthBytes long; zeroes past the end) and 0.
 */
export function cachedSpan(file: CachedPages, positionBytes: number, lengthBytes: number, scratch: Buffer): { readonly buffer: Buffer; readonly offsetBytes: number } {
  const page = Math.floor(positionBytes / simPageBytes);
  const inPageBytes = positionBytes - page * simPageBytes;
  if (inPageBytes + lengthBytes <= simPageBytes && positionBytes + lengthBytes <= file.sizeBytes) {
    return { buffer: file.pages.get(page) ?? zeroPage, offsetBytes: inPageBytes };
  }
  fillZeroes(scratch, 0, lengthBytes);
  const inFile = Math.max(0, Math.min(lengthBytes, file.sizeBytes - positionBytes));
  if (inFile > 0) readPages(file.pages, scratch, 0, inFile, positionBytes);
  return { buffer: scratch, offsetBytes: 0 };
}

/** Whether two files' page caches read the same bytes (sizes included). */
export function samePages(a: CachedPages, b: CachedPages): boolean {
  if (a.sizeBytes !== b.sizeBytes) return false;
  const differs = (page: number, x: Buffer | undefined, y: Buffer | undefined): boolean => {
    if (x === y) return false;
    const endBytes = Math.min(simPageBytes, a.sizeBytes - page * simPageBytes);
    if (endBytes <= 0) return false;
    return (x ?? zeroPage).compare(y ?? zeroPage, 0, endBytes, 0, endBytes) !== 0;
  };
  for (const [page, x] of a.pages) if (differs(page, x, b.pages.get(page))) return false;
  for (const [page, y] of b.pages) if (!a.pages.has(page) && differs(page, undefined, y)) return false;
  return true;
}

/** Feeds a file's bytes, as a reader sees them, page by page to `update` (the same bytes cachedView returns). */
export function eachCachedPage(file: CachedPages, update: (bytes: Buffer) => void): void {
  for (let page = 0; page * simPageBytes < file.sizeBytes; page += 1) {
    const endBytes = Math.min(simPageBytes, file.sizeBytes - page * simPageBytes);
    const content = file.pages.get(page) ?? zeroPage;
    update(endBytes === simPageBytes ? content : content.subarray(0, endBytes));
  }
}

/** Drops the pages of `pages` past sizeBytes and zeroes the tail of the last one. Returns the dropped or changed pages. */
function cutPages(pages: Map<number, Buffer>, sizeBytes: number): number[] {
  const changed: number[] = [];
  const firstWholePage = Math.ceil(sizeBytes / simPageBytes);
  for (const page of pages.keys()) {
    if (page >= firstWholePage) changed.push(page);
  }
  for (const page of changed) pages.delete(page);
  const tailBytes = sizeBytes % simPageBytes;
  const lastPage = Math.floor(sizeBytes / simPageBytes);
  const last = tailBytes === 0 ? undefined : pages.get(lastPage);
  if (last !== undefined && !last.subarray(tailBytes).equals(zeroPage.subarray(tailBytes))) {
    const next = Buffer.from(last);
    next.fill(0, tailBytes);
    pages.set(lastPage, next);
    changed.push(lastPage);
  }
  return changed;
}

/** The disk's state and every operation on it; SimDisk is its control panel, SimFileSystem a process's view. */
class DiskState {
  readonly prng: Prng;
  private readonly schedule: Schedule;
  latency: SimLatency;
  readonly powerLoss: PowerLossOdds;
  readonly directIo: boolean;
  readonly failedSyncPages: "keep" | "evict" | "either";
  readonly fileBytesMax: number;
  capacityBytes: number;
  readonly errorRates: Record<FaultOp, number> = { read: 0, write: 0, sync: 0 };
  readonly pathFaults = new Map<string, Set<FaultOp>>();
  readonly counts: SimDiskCounts = {
    operations: 0, datasyncs: 0, processCrashes: 0, powerLosses: 0, pagesLost: 0, pagesTorn: 0, writesInFlightAtCrash: 0,
    directoryChangesLost: 0, enospc: 0, eio: 0, pagesDroppedByFailedSync: 0,
  };
  epoch = 0;
  private readonly nodes = new Map<number, SimNode>();
  private collectPasses = 0;
  private nextId = 1;
  private readonly root: DirNode;
  private inFlight = new Set<InFlight>();
  private tornWrites: TornWrite[] = [];
  usedPages = 0;

  constructor(options: SimDiskOptions) {
    this.prng = new Prng(options.seed);
    this.schedule = options.schedule;
    this.latency = { ...defaultLatency, ...options.latency };
    this.powerLoss = { ...defaultPowerLoss, ...options.powerLoss };
    this.directIo = options.directIo ?? true;
    this.failedSyncPages = options.failedSyncPages ?? "either";
    this.fileBytesMax = options.fileBytesMax ?? 16 * tebibyte - simPageBytes;
    this.capacityBytes = options.capacityBytes ?? tebibyte;
    this.root = this.newDir();
    this.root.counted = true;
  }

  // ---- the operation runner -------------------------------------------------------------

  /**
   * Runs `effect` after a latency of `kind`, settling with its value or error; a crash before
   * then drops it (onCrash says what it did to the disk) and the promise never settles.
   */
  run<T>(epoch: number, kind: LatencyKind, effect: () => T, onCrash?: (crash: CrashKind) => void): Promise<T> {
    if (epoch !== this.epoch) return never<T>();
    this.counts.operations += 1;
    const entry: InFlight = { onCrash };
    this.inFlight.add(entry);
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const range = this.latency[kind];
    this.schedule(range.minMs + this.prng.float() * (range.maxMs - range.minMs), () => {
      if (!this.inFlight.delete(entry)) return; // the machine crashed first: the process never hears back
      let value: T;
      try {
        value = effect();
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      resolve(value);
    });
    return promise;
  }

  /** Throws EBADF for a synchronous call of a process that crashed. */
  checkAlive(epoch: number, syscall: string, path: string): void {
    if (epoch !== this.epoch) throw fileSystemError("EBADF", syscall, path, "a handle of a process that crashed");
  }

  /** Whether an injected fault fails this operation now (draws from the PRNG only while a rate is set). */
  fails(op: FaultOp, path: string): boolean {
    for (const [prefix, ops] of this.pathFaults) {
      if (ops.has(op) && (path === prefix || path.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`))) return true;
    }
    const rate = this.errorRates[op];
    return rate > 0 && this.prng.chance(rate);
  }

  eio(syscall: string, path: string): NodeJS.ErrnoException {
    this.counts.eio += 1;
    return fileSystemError("EIO", syscall, path, "injected");
  }

  enospc(syscall: string, path: string): NodeJS.ErrnoException {
    this.counts.enospc += 1;
    return fileSystemError("ENOSPC", syscall, path);
  }

  get freePages(): number {
    return Math.max(0, Math.floor(this.capacityBytes / simPageBytes) - this.usedPages);
  }

  // ---- the namespace -------------------------------------------------------------------

  private newDir(): DirNode {
    const node: DirNode = { kind: "dir", id: this.nextId++, live: new Map(), durable: new Map(), pending: [], opens: 0, counted: true, countedPass: 0, keptPass: 0 };
    this.nodes.set(node.id, node);
    return node;
  }

  private newFile(): FileNode {
    const node: FileNode = {
      kind: "file", id: this.nextId++, cache: new Map(), owned: new Set(), disk: new Map(), sizeBytes: 0, diskSizeBytes: 0, dirty: new Set(), opens: 0, counted: true, countedPass: 0, keptPass: 0,
    };
    this.nodes.set(node.id, node);
    return node;
  }

  private node(id: number): SimNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`sim disk: node ${id} is gone`);
    return node;
  }

  /** The directory holding `path` and the name in it; ENOENT/ENOTDIR for a missing or non-directory component. */
  private parentOf(path: string, syscall: string): { parent: DirNode; name: string; normalized: string } {
    const normalized = posix.resolve("/", path);
    if (normalized === "/") throw fileSystemError("EINVAL", syscall, path, "the root has no parent");
    const parts = normalized.split("/").slice(1);
    const name = parts.pop();
    if (name === undefined) throw fileSystemError("EINVAL", syscall, path);
    let dir = this.root;
    for (const part of parts) {
      const id = dir.live.get(part);
      if (id === undefined) throw fileSystemError("ENOENT", syscall, path);
      const next = this.node(id);
      if (next.kind !== "dir") throw fileSystemError("ENOTDIR", syscall, path);
      dir = next;
    }
    return { parent: dir, name, normalized };
  }

  lookup(path: string, syscall: string): SimNode {
    if (posix.resolve("/", path) === "/") return this.root;
    const { parent, name } = this.parentOf(path, syscall);
    const id = parent.live.get(name);
    if (id === undefined) throw fileSystemError("ENOENT", syscall, path);
    return this.node(id);
  }

  private change(dir: DirNode, changes: readonly (readonly [string, number | undefined])[]): void {
    for (const [name, id] of changes) {
      if (id === undefined) dir.live.delete(name);
      else dir.live.set(name, id);
    }
    dir.pending.push({ changes });
  }

  open(path: string, mode: OpenMode): FileNode {
    const { parent, name } = this.parentOf(path, "open");
    const id = parent.live.get(name);
    const existing = id === undefined ? undefined : this.node(id);
    if (existing?.kind === "dir") throw fileSystemError("EISDIR", "open", path);
    let node: FileNode;
    if (mode === "create-exclusive" || (mode === "create-truncate" && existing === undefined)) {
      if (existing !== undefined) throw fileSystemError("EEXIST", "open", path);
      if (this.freePages === 0) throw this.enospc("open", path);
      node = this.newFile();
      this.change(parent, [[name, node.id]]);
    } else {
      if (existing === undefined) throw fileSystemError("ENOENT", "open", path);
      if (mode === "direct-read" && !this.directIo) throw fileSystemError("EINVAL", "open", path, "O_DIRECT refused");
      node = existing;
      if (mode === "create-truncate") this.resize(node, 0);
    }
    node.opens += 1;
    return node;
  }

  makeDirectory(path: string): void {
    const normalized = posix.resolve("/", path);
    let dir = this.root;
    for (const part of normalized.split("/").slice(1).filter((p) => p !== "")) {
      const id = dir.live.get(part);
      if (id !== undefined) {
        const next = this.node(id);
        if (next.kind !== "dir") throw fileSystemError("EEXIST", "mkdir", path, `${part} is a file`);
        dir = next;
        continue;
      }
      if (this.freePages === 0) throw this.enospc("mkdir", path);
      const created = this.newDir();
      this.change(dir, [[part, created.id]]);
      dir = created;
    }
  }

  readDirectory(path: string): string[] {
    const node = this.lookup(path, "scandir");
    if (node.kind !== "dir") throw fileSystemError("ENOTDIR", "scandir", path);
    // Real directories list in no particular order: neither does the twin.
    return this.prng.shuffle([...node.live.keys()]);
  }

  unlink(path: string): void {
    const { parent, name } = this.parentOf(path, "unlink");
    const id = parent.live.get(name);
    if (id === undefined) throw fileSystemError("ENOENT", "unlink", path);
    if (this.node(id).kind === "dir") throw fileSystemError("EISDIR", "unlink", path);
    this.change(parent, [[name, undefined]]);
    this.collect();
  }

  removeTree(path: string): void {
    let place: { parent: DirNode; name: string };
    try {
      place = this.parentOf(path, "rm");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // rm -f
      throw error;
    }
    if (!place.parent.live.has(place.name)) return;
    this.change(place.parent, [[place.name, undefined]]);
    this.collect();
  }

  rename(fromPath: string, toPath: string): void {
    const from = this.parentOf(fromPath, "rename");
    const to = this.parentOf(toPath, "rename");
    const id = from.parent.live.get(from.name);
    if (id === undefined) throw fileSystemError("ENOENT", "rename", fromPath);
    if (from.parent !== to.parent) throw fileSystemError("EXDEV", "rename", fromPath, "the twin renames within one directory only");
    if (from.name === to.name) return;
    const replaced = to.parent.live.get(to.name);
    const moving = this.node(id);
    if (replaced !== undefined) {
      const target = this.node(replaced);
      if (target.kind === "dir" && moving.kind !== "dir") throw fileSystemError("EISDIR", "rename", toPath);
      if (target.kind !== "dir" && moving.kind === "dir") throw fileSystemError("ENOTDIR", "rename", toPath);
      if (target.kind === "dir" && target.live.size > 0) throw fileSystemError("ENOTEMPTY", "rename", toPath);
    }
    this.change(from.parent, [[from.name, undefined], [to.name, id]]);
    this.collect();
  }

  syncDirectory(path: string): void {
    const node = this.lookup(path, "fsync");
    if (node.kind !== "dir") throw fileSystemError("ENOTDIR", "fsync", path);
    if (this.fails("sync", posix.resolve("/", path))) throw this.eio("fsync", path);
    node.durable = new Map(node.live);
    node.pending = [];
    this.collect();
    this.onDirectorySynced?.(posix.resolve("/", path));
  }

  /** Told of every directory fsync that succeeded (a rename made durable: the end of an atomic file save). */
  onDirectorySynced: ((path: string) => void) | undefined;

  stat(node: SimNode): FileStat {
    if (node.kind === "dir") return { kind: "directory", sizeBytes: simPageBytes, allocatedBytes: simPageBytes };
    return { kind: "file", sizeBytes: node.sizeBytes, allocatedBytes: node.cache.size * simPageBytes };
  }

  statFileSystem(path: string): FileSystemStat {
    this.lookup(path, "statfs");
    return { typeCode: simFileSystemTypeCode, freeBytes: this.freePages * simPageBytes, totalBytes: this.capacityBytes };
  }

  /**
   * Which nodes still count against the capacity (named or open), and which may ever be seen
   * again (named now, or by what a power loss could bring back); the rest are dropped.
   */
  collect(): void {
    // A node is counted (kept) in this pass when its countedPass (keptPass) is this pass's number.
    const pass = ++this.collectPasses;
    const visit = (id: number | undefined, live: boolean): void => {
      if (id === undefined) return;
      const child = this.node(id);
      if (live ? child.countedPass === pass : child.keptPass === pass) return;
      if (live) child.countedPass = pass;
      else child.keptPass = pass;
      if (child.kind === "dir") walk(child, live);
    };
    // Live names, and for `kept` also the durable ones and those of changes not yet durable.
    const walk = (dir: DirNode, live: boolean): void => {
      for (const id of dir.live.values()) visit(id, live);
      if (live) return;
      for (const id of dir.durable.values()) visit(id, live);
      for (const op of dir.pending) for (const change of op.changes) visit(change[1], live);
    };
    this.root.countedPass = pass;
    walk(this.root, true);
    this.root.keptPass = pass;
    walk(this.root, false);
    let usedPages = 0;
    for (const node of this.nodes.values()) {
      node.counted = node.countedPass === pass || node.opens > 0;
      if (!node.counted && node.keptPass !== pass) {
        this.nodes.delete(node.id);
        continue;
      }
      if (node.counted && node.kind === "file") usedPages += node.cache.size;
    }
    this.usedPages = usedPages;
  }

  // ---- file data -----------------------------------------------------------------------

  read(node: FileNode, path: string, into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    if (this.fails("read", path)) throw this.eio("read", path);
    if (positionBytes >= node.sizeBytes || lengthBytes <= 0) return 0;
    const countBytes = Math.min(lengthBytes, node.sizeBytes - positionBytes);
    readPages(node.cache, into, offsetBytes, countBytes, positionBytes);
    return countBytes;
  }

  /** O_DIRECT: writes back the range's dirty pages, then reads the disk (up to the file's size). */
  readDirect(node: FileNode, path: string, into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    if ((into.byteOffset + offsetBytes) % simSectorBytes !== 0 || lengthBytes % simSectorBytes !== 0 || positionBytes % simSectorBytes !== 0) {
      throw fileSystemError("EINVAL", "read", path, "O_DIRECT needs 512-byte aligned buffers, offsets and lengths");
    }
    if (this.fails("read", path)) throw this.eio("read", path);
    if (positionBytes >= node.sizeBytes || lengthBytes <= 0) return 0;
    const countBytes = Math.min(lengthBytes, node.sizeBytes - positionBytes);
    const firstPage = Math.floor(positionBytes / simPageBytes);
    const lastPage = Math.floor((positionBytes + countBytes - 1) / simPageBytes);
    for (let page = firstPage; page <= lastPage; page += 1) {
      if (!node.dirty.has(page)) continue;
      const content = node.cache.get(page);
      if (content === undefined) node.disk.delete(page);
      else node.disk.set(page, content);
      node.owned.delete(page);
      node.dirty.delete(page);
    }
    readPages(node.disk, into, offsetBytes, countBytes, positionBytes);
    return countBytes;
  }

  /** pwrite into the page cache: short when the disk fills up part-way or the file reaches its largest size. */
  write(node: FileNode, path: string, data: Buffer, positionBytes: number): number {
    if (data.length === 0) return 0;
    if (this.fails("write", path)) throw this.eio("write", path);
    if (positionBytes >= this.fileBytesMax) throw fileSystemError("EFBIG", "write", path);
    let lengthBytes = Math.min(data.length, this.fileBytesMax - positionBytes);
    // Space: a page not yet in the cache needs one; stop before the first that does not fit.
    let newPages = 0;
    const firstPage = Math.floor(positionBytes / simPageBytes);
    const lastPage = Math.floor((positionBytes + lengthBytes - 1) / simPageBytes);
    for (let page = firstPage; page <= lastPage; page += 1) {
      if (node.cache.has(page)) continue;
      if (newPages === this.freePages) {
        lengthBytes = page * simPageBytes - positionBytes;
        break;
      }
      newPages += 1;
    }
    if (lengthBytes <= 0) throw this.enospc("write", path);
    const added = writeCachePages(node, data, 0, lengthBytes, positionBytes);
    if (node.counted) this.usedPages += added;
    if (positionBytes + lengthBytes > node.sizeBytes) node.sizeBytes = positionBytes + lengthBytes;
    return lengthBytes;
  }

  truncate(node: FileNode, path: string, sizeBytes: number): void {
    if (sizeBytes > this.fileBytesMax) throw fileSystemError("EFBIG", "ftruncate", path);
    if (sizeBytes > node.sizeBytes && this.freePages === 0) throw this.enospc("ftruncate", path);
    if (this.fails("write", path)) throw this.eio("ftruncate", path);
    this.resize(node, sizeBytes);
  }

  private resize(node: FileNode, sizeBytes: number): void {
    if (sizeBytes < node.sizeBytes) {
      const before = node.cache.size;
      for (const page of cutPages(node.cache, sizeBytes)) {
        node.dirty.add(page);
        node.owned.delete(page);
      }
      // Pages only the disk still has past the new end must go from the disk too.
      const firstWholePage = Math.ceil(sizeBytes / simPageBytes);
      for (const page of node.disk.keys()) if (page >= firstWholePage) node.dirty.add(page);
      if (node.counted) this.usedPages -= before - node.cache.size;
    }
    node.sizeBytes = sizeBytes;
  }

  /** fdatasync: called with the dirty pages and size as they were when the call was made. */
  datasync(node: FileNode, path: string, pages: CapturedPages, sizeBytes: number): void {
    const { indexes, contents } = pages;
    this.counts.datasyncs += 1;
    if (this.fails("sync", path)) {
      // fsyncgate: the pages it was writing are marked clean and the disk never gets them;
      // clean pages may be evicted at any moment, and the next read returns what the disk has
      // (failedSyncPages).
      const evict = this.failedSyncPages === "evict" || (this.failedSyncPages === "either" && this.prng.chance(0.5));
      for (let i = 0; i < indexes.length; i += 1) {
        const page = indexes[i] as number;
        const content = contents[i];
        if (node.cache.get(page) !== content || !node.dirty.delete(page)) continue;
        this.counts.pagesDroppedByFailedSync += 1;
        if (!evict) continue;
        const onDisk = node.disk.get(page);
        if (onDisk !== undefined) node.cache.set(page, onDisk);
        else if (node.cache.delete(page) && node.counted) this.usedPages -= 1;
      }
      throw this.eio("fdatasync", path);
    }
    for (let i = 0; i < indexes.length; i += 1) {
      const page = indexes[i] as number;
      const content = contents[i];
      // Written back meanwhile with newer content (an O_DIRECT read flushes the range's dirty
      // pages): clean, and the cache no longer holds what this call captured. Writing the
      // capture now would put older bytes on the disk under a clean page, which no later
      // fdatasync writes again; a kernel writes a page's current content (seed 9410: a copy's
      // O_DIRECT read during a checkpoint's fdatasync lost a write the next checkpoint covered).
      if (!node.dirty.has(page) && node.cache.get(page) !== content) continue;
      if (content === undefined) node.disk.delete(page);
      else node.disk.set(page, content);
      if (node.cache.get(page) === content) node.dirty.delete(page);
    }
    node.diskSizeBytes = sizeBytes;
    cutPages(node.disk, sizeBytes);
  }

  close(node: FileNode): void {
    node.opens -= 1;
    if (node.opens === 0) this.collect();
  }

  // ---- crashes -------------------------------------------------------------------------

  /** A write in flight at a crash: lands whole or not (process), or sector by sector (power). */
  writeInFlight(node: FileNode, path: string, data: () => Buffer, positionBytes: number): (crash: CrashKind) => void {
    return (crash) => {
      this.counts.writesInFlightAtCrash += 1;
      if (crash === "process") {
        if (!this.prng.chance(0.5)) return;
        try {
          this.write(node, path, data(), positionBytes);
        } catch {
          // it would have failed: nothing landed
        }
        return;
      }
      if (this.prng.chance(this.powerLoss.inFlightWriteLands)) this.tornWrites.push({ node, data: Buffer.from(data()), positionBytes });
    };
  }

  /** A namespace change in flight at a crash: happened or not. */
  changeInFlight(effect: () => void): (crash: CrashKind) => void {
    return () => {
      if (!this.prng.chance(0.5)) return;
      try {
        effect();
      } catch {
        // it would have failed
      }
    };
  }

  crash(kind: CrashKind): void {
    const entries = [...this.inFlight];
    this.inFlight = new Set();
    this.tornWrites = [];
    for (const entry of entries) entry.onCrash?.(kind);
    this.epoch += 1;
    for (const node of this.nodes.values()) node.opens = 0;
    if (kind === "process") {
      this.counts.processCrashes += 1;
    } else {
      this.counts.powerLosses += 1;
      for (const node of this.nodes.values()) {
        if (node.kind === "dir") this.loseDirectoryChanges(node);
        else this.losePages(node);
      }
      for (const torn of this.tornWrites) this.landTorn(torn);
      this.tornWrites = [];
    }
    this.collect();
  }

  private loseDirectoryChanges(dir: DirNode): void {
    const keptChanges = this.prng.int(0, dir.pending.length);
    this.counts.directoryChangesLost += dir.pending.length - keptChanges;
    const entries = new Map(dir.durable);
    for (const op of dir.pending.slice(0, keptChanges)) {
      for (const [name, id] of op.changes) {
        if (id === undefined) entries.delete(name);
        else entries.set(name, id);
      }
    }
    dir.durable = entries;
    dir.live = new Map(entries);
    dir.pending = [];
  }

  /** The file after a power loss: its disk, plus some of the dirty pages (whole or torn), at its old or new size. */
  private losePages(node: FileNode): void {
    const disk = node.disk; // changed in place: nothing else holds it
    for (const page of node.dirty) {
      const draw = this.prng.float();
      const content = node.cache.get(page);
      if (draw < this.powerLoss.pageWrittenBack) {
        if (content === undefined) disk.delete(page);
        else disk.set(page, content);
      } else if (draw < this.powerLoss.pageWrittenBack + this.powerLoss.pageTorn) {
        this.counts.pagesTorn += 1;
        const torn = Buffer.alloc(simPageBytes);
        disk.get(page)?.copy(torn);
        for (let sector = 0; sector < simPageBytes / simSectorBytes; sector += 1) {
          if (!this.prng.chance(0.5)) continue;
          const start = sector * simSectorBytes;
          if (content === undefined) torn.fill(0, start, start + simSectorBytes);
          else content.copy(torn, start, start, start + simSectorBytes);
        }
        disk.set(page, torn);
      } else {
        this.counts.pagesLost += 1;
      }
    }
    const sizeBytes = node.sizeBytes === node.diskSizeBytes || this.prng.chance(0.5) ? node.diskSizeBytes : node.sizeBytes;
    cutPages(disk, sizeBytes);
    node.disk = disk;
    node.cache = new Map(disk);
    node.owned = new Set();
    node.dirty = new Set();
    node.sizeBytes = sizeBytes;
    node.diskSizeBytes = sizeBytes;
  }

  /** A write in flight at a power loss: each 512-byte sector of it landed, or not, or as garbage. */
  private landTorn(torn: TornWrite): void {
    if (this.nodes.get(torn.node.id) !== torn.node) return;
    const node = torn.node;
    let endBytes = 0;
    let doneBytes = 0;
    while (doneBytes < torn.data.length) {
      const atBytes = torn.positionBytes + doneBytes;
      const countBytes = Math.min(simSectorBytes - (atBytes % simSectorBytes), torn.data.length - doneBytes);
      const draw = this.prng.float();
      if (draw < 0.5) {
        let piece = torn.data.subarray(doneBytes, doneBytes + countBytes);
        if (draw < this.powerLoss.sectorGarbage * 0.5) {
          piece = Buffer.alloc(countBytes);
          for (let i = 0; i < countBytes; i += 1) piece[i] = this.prng.u32() & 0xff;
        }
        writePages(node.disk, piece, atBytes);
        endBytes = atBytes + countBytes;
      }
      doneBytes += countBytes;
    }
    if (endBytes > node.diskSizeBytes && this.prng.chance(0.5)) node.diskSizeBytes = endBytes;
    cutPages(node.disk, node.diskSizeBytes);
    node.sizeBytes = node.diskSizeBytes;
    node.cache = new Map(node.disk);
    node.owned = new Set();
  }

  // ---- inspection (tests) ----------------------------------------------------------------

  /** What a "direct-read" of the whole file would return now (disk, with the dirty pages written back), without doing it. */
  directView(path: string): Buffer | undefined {
    const node = this.tryLookupFile(path);
    if (node === undefined) return undefined;
    const pages = new Map(node.disk);
    for (const page of node.dirty) {
      const content = node.cache.get(page);
      if (content === undefined) pages.delete(page);
      else pages.set(page, content);
    }
    const out = Buffer.alloc(node.sizeBytes);
    readPages(pages, out, 0, node.sizeBytes, 0);
    return out;
  }

  /** What a read through the page cache returns for the whole file. */
  /** [positionBytes, +lengthBytes) of a file as a reader sees it now (zeroes past its end); undefined if it does not exist. */
  cachedRange(path: string, positionBytes: number, lengthBytes: number): Buffer | undefined {
    const node = this.tryLookupFile(path);
    if (node === undefined) return undefined;
    const out = Buffer.alloc(lengthBytes);
    const inFile = Math.max(0, Math.min(lengthBytes, node.sizeBytes - positionBytes));
    if (inFile > 0) readPages(node.cache, out, 0, inFile, positionBytes);
    return out;
  }

  cachedPages(path: string): CachedPages | undefined {
    const node = this.tryLookupFile(path);
    return node === undefined ? undefined : { sizeBytes: node.sizeBytes, pages: node.cache };
  }

  cachedView(path: string): Buffer | undefined {
    const node = this.tryLookupFile(path);
    if (node === undefined) return undefined;
    const out = Buffer.alloc(node.sizeBytes);
    readPages(node.cache, out, 0, node.sizeBytes, 0);
    return out;
  }

  private tryLookupFile(path: string): FileNode | undefined {
    try {
      const node = this.lookup(path, "inspect");
      return node.kind === "file" ? node : undefined;
    } catch {
      return undefined;
    }
  }
}

class SimFile implements File {
  readonly path: string;
  private readonly state: DiskState;
  private readonly node: FileNode;
  private readonly mode: OpenMode;
  private readonly epoch: number;
  private closed = false;

  constructor(state: DiskState, path: string, node: FileNode, mode: OpenMode, epoch: number) {
    this.state = state;
    this.path = path;
    this.node = node;
    this.mode = mode;
    this.epoch = epoch;
  }

  private get writable(): boolean {
    return this.mode === "read-write" || this.mode === "create-exclusive" || this.mode === "create-truncate";
  }

  /** EBADF for a closed handle, one of a crashed process, or a write through a read-only one. */
  private check(syscall: string, writing: boolean): void {
    this.state.checkAlive(this.epoch, syscall, this.path);
    if (this.closed) throw fileSystemError("EBADF", syscall, this.path, "closed");
    if (writing && !this.writable) throw fileSystemError("EBADF", syscall, this.path, "not open for writing");
  }

  /** Runs `effect` through the scheduler, after the checks a call makes at once. */
  private later<T>(syscall: string, writing: boolean, kind: LatencyKind, effect: () => T, onCrash?: (crash: CrashKind) => void): Promise<T> {
    if (this.epoch !== this.state.epoch) return never<T>();
    try {
      this.check(syscall, writing);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return this.state.run(this.epoch, kind, effect, onCrash);
  }

  private readNow(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    return this.mode === "direct-read"
      ? this.state.readDirect(this.node, this.path, into, offsetBytes, lengthBytes, positionBytes)
      : this.state.read(this.node, this.path, into, offsetBytes, lengthBytes, positionBytes);
  }

  read(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number> {
    return this.later("read", false, "read", () => this.readNow(into, offsetBytes, lengthBytes, positionBytes));
  }

  readSync(into: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    this.check("read", false);
    return this.readNow(into, offsetBytes, lengthBytes, positionBytes);
  }

  write(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): Promise<number> {
    const data = (): Buffer => from.subarray(offsetBytes, offsetBytes + lengthBytes);
    return this.later("write", true, "write", () => this.state.write(this.node, this.path, data(), positionBytes),
      this.state.writeInFlight(this.node, this.path, data, positionBytes));
  }

  writeSync(from: Buffer, offsetBytes: number, lengthBytes: number, positionBytes: number): number {
    this.check("write", true);
    return this.state.write(this.node, this.path, from.subarray(offsetBytes, offsetBytes + lengthBytes), positionBytes);
  }

  writev(buffers: readonly Buffer[], positionBytes: number): Promise<number> {
    // The kernel reads the buffers while the call runs: so does the twin (at completion or crash).
    const data = (): Buffer => Buffer.concat(buffers);
    return this.later("write", true, "write", () => this.state.write(this.node, this.path, data(), positionBytes),
      this.state.writeInFlight(this.node, this.path, data, positionBytes));
  }

  writevSync(buffers: readonly Buffer[], positionBytes: number): number {
    this.check("write", true);
    return this.state.write(this.node, this.path, Buffer.concat(buffers), positionBytes);
  }

  truncate(sizeBytes: number): Promise<void> {
    return this.later("ftruncate", true, "metadata", () => this.state.truncate(this.node, this.path, sizeBytes),
      this.state.changeInFlight(() => this.state.truncate(this.node, this.path, sizeBytes)));
  }

  stat(): Promise<FileStat> {
    return this.later("fstat", false, "metadata", () => this.state.stat(this.node));
  }

  datasync(): Promise<void> {
    // What it writes back is what was dirty when it was called; later writes wait for the next one.
    const pages: CapturedPages = { indexes: [], contents: [] };
    for (const page of this.node.dirty) {
      pages.indexes.push(page);
      pages.contents.push(this.node.cache.get(page));
      this.node.owned.delete(page); // it holds them now: later writes go to new buffers
    }
    const sizeBytes = this.node.sizeBytes;
    return this.later("fdatasync", false, "sync", () => this.state.datasync(this.node, this.path, pages, sizeBytes));
  }

  sync(): Promise<void> {
    return this.datasync();
  }

  close(): Promise<void> {
    if (this.epoch !== this.state.epoch) return never<void>();
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return this.state.run(this.epoch, "metadata", () => this.state.close(this.node));
  }
}

/** One process's view of the disk (mount() again after a crash). */
class SimFileSystem implements FileSystem {
  private readonly state: DiskState;
  private readonly epoch: number;

  constructor(state: DiskState, epoch: number) {
    this.state = state;
    this.epoch = epoch;
  }

  private change<T>(effect: () => T): Promise<T> {
    return this.state.run(this.epoch, "metadata", effect, this.state.changeInFlight(effect));
  }

  open(path: string, mode: OpenMode, _permissionBits?: number): Promise<File> {
    const effect = (): File => new SimFile(this.state, path, this.state.open(path, mode), mode, this.epoch);
    const creates = mode === "create-exclusive" || mode === "create-truncate";
    return this.state.run(this.epoch, "metadata", effect, creates ? this.state.changeInFlight(() => {
      this.state.open(path, mode);
    }) : undefined);
  }

  makeDirectory(path: string): Promise<void> {
    return this.change(() => this.state.makeDirectory(path));
  }

  readDirectory(path: string): Promise<string[]> {
    return this.state.run(this.epoch, "metadata", () => this.state.readDirectory(path));
  }

  unlink(path: string): Promise<void> {
    return this.change(() => this.state.unlink(path));
  }

  removeTree(path: string): Promise<void> {
    return this.change(() => this.state.removeTree(path));
  }

  rename(fromPath: string, toPath: string): Promise<void> {
    return this.change(() => this.state.rename(fromPath, toPath));
  }

  syncDirectory(path: string): Promise<void> {
    return this.state.run(this.epoch, "sync", () => this.state.syncDirectory(path));
  }

  stat(path: string): Promise<FileStat> {
    return this.state.run(this.epoch, "metadata", () => this.state.stat(this.state.lookup(path, "stat")));
  }

  statFileSystem(path: string): Promise<FileSystemStat> {
    return this.state.run(this.epoch, "metadata", () => this.state.statFileSystem(path));
  }
}

/**
 * The simulated disk of one machine: mount() gives the running process its FileSystem;
 * crash() ends that process (and, for "power", loses what the disk did not have); the fault
 * setters change how it behaves from now on.
 */
export class SimDisk {
  private readonly state: DiskState;

  constructor(options: SimDiskOptions) {
    this.state = new DiskState(options);
  }

  /** The FileSystem of the process running now; dead after the next crash. */
  mount(): FileSystem {
    return new SimFileSystem(this.state, this.state.epoch);
  }

  /** Ends the running process: "process" keeps the page cache and every name, "power" keeps what the disk had (see the header). */
  crash(kind: CrashKind): void {
    this.state.crash(kind);
  }

  /** Told of every directory fsync that succeeded: the simulation places crashes right after durable steps with it. */
  set onDirectorySynced(listener: ((path: string) => void) | undefined) {
    this.state.onDirectorySynced = listener;
  }

  /** Total bytes; writes needing a page past it fail with ENOSPC (lowering it below what is used fills the disk). */
  setCapacity(capacityBytes: number): void {
    this.state.capacityBytes = capacityBytes;
  }

  get capacityBytes(): number {
    return this.state.capacityBytes;
  }

  /** Bytes held by files (whole pages). */
  get usedBytes(): number {
    return this.state.usedPages * simPageBytes;
  }

  get freeBytes(): number {
    return this.state.freePages * simPageBytes;
  }

  /** Fills the disk: the capacity becomes what is used now (plus `leaveBytes`). */
  fill(leaveBytes = 0): void {
    this.state.capacityBytes = this.usedBytes + leaveBytes;
  }

  /** EIO on a share of the operations of each kind from now on (0: none). */
  setErrorRates(rates: Partial<Record<FaultOp, number>>): void {
    Object.assign(this.state.errorRates, rates);
  }

  /** EIO on every such operation on `path` or below it (a file or a directory), until healed. */
  failPath(path: string, ops: readonly FaultOp[]): void {
    this.state.pathFaults.set(posix.resolve("/", path), new Set(ops));
  }

  healPath(path: string): void {
    this.state.pathFaults.delete(posix.resolve("/", path));
  }

  /** No more injected errors (the capacity stays). */
  heal(): void {
    this.state.pathFaults.clear();
    this.setErrorRates({ read: 0, write: 0, sync: 0 });
  }

  setLatency(latency: Partial<SimLatency>): void {
    this.state.latency = { ...this.state.latency, ...latency };
  }

  get counts(): Readonly<SimDiskCounts> {
    return this.state.counts;
  }

  /** For checks: what an O_DIRECT read of the whole file would return now (the disk's view). */
  directView(path: string): Buffer | undefined {
    return this.state.directView(path);
  }

  /** For checks: what a read through the page cache returns now. */
  cachedRange(path: string, positionBytes: number, lengthBytes: number): Buffer | undefined {
    return this.state.cachedRange(path, positionBytes, lengthBytes);
  }

  cachedView(path: string): Buffer | undefined {
    return this.state.cachedView(path);
  }

  /** For checks that read many small ranges: the page cache itself (cachedSpan, samePages), valid until the next operation. */
  cachedPages(path: string): CachedPages | undefined {
    return this.state.cachedPages(path);
  }
}
