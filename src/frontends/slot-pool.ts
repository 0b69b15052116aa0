// Reused buffers for the NBD server: WRITE payloads, READ data, receive and reply slabs.
//
// Why: without reuse every 1 MiB write allocated a fresh 1 MiB ArrayBuffer, and V8 answers each
// ~64 MiB of those with a full mark-compact (a third of the process's CPU at 1 MiB writes). And
// every buffer left to the GC grows malloc's heap, which glibc keeps resident and fragmented long
// after (connection churn took a node from 122 to 399 MiB; docs/nbd.md, "Connection limits").
//
// How: slots of a power-of-two size are carved from arenas of slotArenaBytes, allocated as
// needed up to a maximum per size. An arena is larger than glibc's largest dynamic mmap
// threshold (32 MiB), so it is always a mapping of its own. An arena none of whose slots was
// used for `idleSweeps` calls of sweepIdle() is given back to the system at once (its
// ArrayBuffer detached, which frees the memory without waiting for a GC that an idle process
// may never run): memory taken for a burst is returned after it.
//
// A slot is borrowed: whoever allocate()s it release()s it once nothing refers to its bytes
// (a VolumeHandle.write's data until its promise settles, a socket write until its callback).
// A slot that is never released (a failed write the journal may still be writing) keeps its
// arena for good, which is safe. Slots are views of a much larger buffer (an arena is at least
// four times the largest slot), which keepers that copy only such views would catch as well.
import { assert } from "../core/assert.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Smallest and largest slot; requests outside get a fresh buffer. */
export const slotBytesMin = 512;
export const slotBytesMax = 4 * MiB;
/** Size of one arena: above glibc's largest dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB on 64-bit). */
export const slotArenaBytes = 64 * MiB;

interface Arena {
  readonly buffer: ArrayBuffer;
  readonly slotBytes: number;
  /** Byte offsets of the slots handed out and not released. */
  readonly inUse: Set<number>;
  /** sweepIdle() count when a slot of it was last allocated or released. */
  lastUseSweep: number;
}

export interface SlotPoolStats {
  readonly arenas: number;
  readonly slotsInUse: number;
  /** Buffers handed out that were not slots (outside the sizes, or every arena full). */
  readonly unpooledAllocations: number;
}

export class SlotPool {
  private readonly arenasPerSizeMax: number;
  /** Free slots by slot size; the most recently freed is reused first. */
  private readonly free = new Map<number, Buffer[]>();
  private readonly arenasBySize = new Map<number, number>();
  private readonly arenas = new Map<ArrayBufferLike, Arena>();
  private sweeps = 0;
  private unpooled = 0;

  /** `arenasPerSizeMax`: arenas (of slotArenaBytes) per slot size at most. */
  constructor(arenasPerSizeMax: number) {
    assert(Number.isInteger(arenasPerSizeMax) && arenasPerSizeMax >= 1, "a pool may hold at least one arena per size");
    this.arenasPerSizeMax = arenasPerSizeMax;
  }

  /** A buffer of exactly `bytes`: a slot's start, or a fresh buffer outside the slot sizes or when the arenas are full. */
  allocate(bytes: number): Buffer {
    if (bytes < slotBytesMin || bytes > slotBytesMax) {
      this.unpooled += 1;
      return Buffer.allocUnsafe(bytes);
    }
    const slotBytes = 2 ** Math.ceil(Math.log2(bytes));
    let free = this.free.get(slotBytes);
    if (free === undefined) {
      free = [];
      this.free.set(slotBytes, free);
    }
    if (free.length === 0) this.grow(slotBytes, free);
    const slot = free.pop();
    if (slot === undefined) {
      this.unpooled += 1;
      return Buffer.allocUnsafe(bytes);
    }
    const arena = this.arenas.get(slot.buffer);
    assert(arena !== undefined && !arena.inUse.has(slot.byteOffset), "a free slot belongs to an arena and is not in use");
    arena.inUse.add(slot.byteOffset);
    arena.lastUseSweep = this.sweeps;
    return slot.subarray(0, bytes);
  }

  /** Whether `buf` is (a view of) a slot of this pool: release() takes it back. */
  owns(buf: Buffer): boolean {
    return this.arenas.has(buf.buffer);
  }

  /** Gives a slot back (`buf` as allocate() returned it); its bytes may be overwritten from now on. */
  release(buf: Buffer): void {
    const arena = this.arenas.get(buf.buffer);
    assert(arena !== undefined, "a released buffer is a slot of this pool");
    assert(buf.byteOffset % arena.slotBytes === 0, "a slot is released from its start");
    const wasInUse = arena.inUse.delete(buf.byteOffset);
    assert(wasInUse, "a slot is released once per allocation");
    arena.lastUseSweep = this.sweeps;
    this.free.get(arena.slotBytes)?.push(Buffer.from(arena.buffer, buf.byteOffset, arena.slotBytes));
  }

  /**
   * Counts one sweep and gives back every arena none of whose slots was allocated or released
   * during the last `idleSweeps` sweeps (and none is in use). Returns the bytes given back.
   */
  sweepIdle(idleSweeps: number): number {
    assert(Number.isInteger(idleSweeps) && idleSweeps >= 1, "an arena is idle for at least one sweep");
    this.sweeps += 1;
    let freedBytes = 0;
    for (const arena of [...this.arenas.values()]) {
      if (arena.inUse.size > 0 || this.sweeps - arena.lastUseSweep < idleSweeps) continue;
      const free = this.free.get(arena.slotBytes) ?? [];
      const kept = free.filter((slot) => slot.buffer !== arena.buffer);
      assert(free.length - kept.length === Math.floor(arena.buffer.byteLength / arena.slotBytes), "an idle arena has every slot on the free list");
      this.free.set(arena.slotBytes, kept);
      this.arenas.delete(arena.buffer);
      this.arenasBySize.set(arena.slotBytes, (this.arenasBySize.get(arena.slotBytes) ?? 1) - 1);
      freedBytes += arena.buffer.byteLength;
      // Detaching frees the memory now; no view of it is in use (every slot is free).
      arena.buffer.transfer(0);
    }
    return freedBytes;
  }

  stats(): SlotPoolStats {
    let slotsInUse = 0;
    for (const arena of this.arenas.values()) slotsInUse += arena.inUse.size;
    return { arenas: this.arenas.size, slotsInUse, unpooledAllocations: this.unpooled };
  }

  private grow(slotBytes: number, free: Buffer[]): void {
    const arenas = this.arenasBySize.get(slotBytes) ?? 0;
    if (arenas >= this.arenasPerSizeMax) return;
    const memory = Buffer.allocUnsafeSlow(slotArenaBytes).buffer; // pages become resident only as slots are used
    assert(memory instanceof ArrayBuffer && memory.byteLength === slotArenaBytes, "an arena is a whole ArrayBuffer of its own");
    this.arenasBySize.set(slotBytes, arenas + 1);
    this.arenas.set(memory, { buffer: memory, slotBytes, inUse: new Set(), lastUseSweep: this.sweeps });
    // Pushed from the end, so the lowest slots are handed out first (fewer pages touched).
    for (let at = slotArenaBytes - slotBytes; at >= 0; at -= slotBytes) free.push(Buffer.from(memory, at, slotBytes));
  }
}
assert(slotArenaBytes >= 4 * slotBytesMax, "every slot is a view of a much larger buffer (keepers copy those)");
assert(slotArenaBytes > 32 * MiB, "an arena is above glibc's largest mmap threshold: always its own mapping");
