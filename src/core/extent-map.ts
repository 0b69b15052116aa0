// Which extents of a volume were ever written: one bit per extent (docs/volumes.md, "The
// written map"). Pure: the file it lives in and the rules that keep it right across crashes
// are in src/storage/written-map.ts. A bit set means "this extent may hold data"; a bit
// clear means "every byte of this extent is zero". Bits are only ever set, except when the
// whole volume is emptied (ExtentMap.clear, used only when a volume is re-created).
import { assert } from "./assert.ts";

/** A byte range of a volume. */
export interface ByteRange {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export class ExtentMap {
  readonly sizeBytes: number;
  readonly extentBytes: number;
  readonly extentCount: number;
  /** Bit e is (bits[e >> 3] >> (e & 7)) & 1; bits past extentCount in the last byte stay 0. */
  private readonly bits: Uint8Array;
  private markedCount: number;

  /** An empty map, or one over `bits` (taken, not copied; checked: no bit past the last extent). */
  constructor(sizeBytes: number, extentBytes: number, bits?: Uint8Array) {
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, "volume size is a whole number of bytes");
    assert(Number.isSafeInteger(extentBytes) && extentBytes > 0, "extent size is a positive whole number of bytes");
    this.sizeBytes = sizeBytes;
    this.extentBytes = extentBytes;
    this.extentCount = Math.ceil(sizeBytes / extentBytes);
    const bytes = ExtentMap.bitsBytes(sizeBytes, extentBytes);
    if (bits === undefined) {
      this.bits = new Uint8Array(bytes);
      this.markedCount = 0;
      return;
    }
    assert(bits.length === bytes, () => `an extent map of ${this.extentCount} extents has ${bytes} bytes of bits, not ${bits.length}`);
    assert(ExtentMap.strayBits(bits, this.extentCount) === 0, "no bit is set past the last extent");
    this.bits = bits;
    this.markedCount = popcount(bits);
  }

  /** Bytes of bits for a volume of `sizeBytes` in extents of `extentBytes`. */
  static bitsBytes(sizeBytes: number, extentBytes: number): number {
    return Math.ceil(Math.ceil(sizeBytes / extentBytes) / 8);
  }

  /** Bits set past `extentCount` in the last byte (a valid map has none). */
  static strayBits(bits: Uint8Array, extentCount: number): number {
    const usedInLast = extentCount & 7;
    if (usedInLast === 0 || bits.length === 0) return 0;
    const last = bits[bits.length - 1] ?? 0;
    return last & ~((1 << usedInLast) - 1) & 0xff;
  }

  /** Extents marked written. */
  get markedExtents(): number {
    return this.markedCount;
  }

  /** Bytes of the volume inside marked extents (the last extent may be shorter than the others). */
  get markedBytes(): number {
    let bytes = this.markedCount * this.extentBytes;
    const lastExtent = this.extentCount - 1;
    if (lastExtent >= 0 && this.has(lastExtent)) bytes -= this.extentCount * this.extentBytes - this.sizeBytes;
    return bytes;
  }

  has(extent: number): boolean {
    return ((this.bits[extent >> 3] ?? 0) & (1 << (extent & 7))) !== 0;
  }

  /** Marks every extent that [offsetBytes, offsetBytes + lengthBytes) touches; returns how many were new. */
  mark(offsetBytes: number, lengthBytes: number): number {
    this.checkRange(offsetBytes, lengthBytes);
    if (lengthBytes === 0) return 0;
    const last = Math.floor((offsetBytes + lengthBytes - 1) / this.extentBytes);
    let added = 0;
    for (let extent = Math.floor(offsetBytes / this.extentBytes); extent <= last; extent++) {
      const index = extent >> 3;
      const bit = 1 << (extent & 7);
      const byte = this.bits[index] ?? 0;
      if ((byte & bit) === 0) {
        this.bits[index] = byte | bit;
        added += 1;
      }
    }
    this.markedCount += added;
    return added;
  }

  /** Whether every extent the range touches is marked (an empty range is covered). */
  covers(offsetBytes: number, lengthBytes: number): boolean {
    this.checkRange(offsetBytes, lengthBytes);
    if (lengthBytes === 0) return true;
    const last = Math.floor((offsetBytes + lengthBytes - 1) / this.extentBytes);
    for (let extent = Math.floor(offsetBytes / this.extentBytes); extent <= last; extent++) {
      if (!this.has(extent)) return false;
    }
    return true;
  }

  /** Marks every extent: what a map we cannot trust (or never had) must say. */
  markAll(): void {
    this.bits.fill(0xff);
    const usedInLast = this.extentCount & 7;
    if (usedInLast !== 0 && this.bits.length > 0) this.bits[this.bits.length - 1] = (1 << usedInLast) - 1;
    this.markedCount = this.extentCount;
  }

  /** Clears every bit. Only for a volume whose whole content is discarded (re-created empty). */
  clear(): void {
    this.bits.fill(0);
    this.markedCount = 0;
  }

  /** Sets every bit that `other` has (a map of the same shape). */
  include(other: ExtentMap): void {
    assert(other.sizeBytes === this.sizeBytes && other.extentBytes === this.extentBytes, "maps of the same volume");
    let count = 0;
    for (let i = 0; i < this.bits.length; i++) {
      const merged = (this.bits[i] ?? 0) | (other.bits[i] ?? 0);
      this.bits[i] = merged;
      count += popcount8(merged);
    }
    this.markedCount = count;
  }

  /**
   * A copy for the volume grown to `sizeBytes` (at least this size): the same bits, the new
   * extents clear. Right because a grown volume's new bytes are zeroes (a sparse file made
   * longer), and the last extent of the old size, which now reaches past the old end, holds
   * zeroes there too: a clear bit stays true, a set one stays a superset.
   */
  grownTo(sizeBytes: number): ExtentMap {
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= this.sizeBytes, () => `a map grows (${this.sizeBytes} -> ${sizeBytes} bytes), never shrinks`);
    const bits = new Uint8Array(ExtentMap.bitsBytes(sizeBytes, this.extentBytes));
    bits.set(this.bits);
    return new ExtentMap(sizeBytes, this.extentBytes, bits);
  }

  clone(): ExtentMap {
    return new ExtentMap(this.sizeBytes, this.extentBytes, this.bits.slice());
  }

  /** A copy of the raw bits, for the file codec. */
  copyBits(): Uint8Array {
    return this.bits.slice();
  }

  /** Whether every bit set in `this` is also set in `other` (same shape). */
  isSubsetOf(other: ExtentMap): boolean {
    assert(other.sizeBytes === this.sizeBytes && other.extentBytes === this.extentBytes, "maps of the same volume");
    for (let i = 0; i < this.bits.length; i++) {
      const mine = this.bits[i] ?? 0;
      if ((mine & (other.bits[i] ?? 0)) !== mine) return false;
    }
    return true;
  }

  /**
   * The first range at or after `offsetBytes` that lies inside marked extents, at most
   * `lengthBytesMax` long, ending at an extent boundary or the volume's end; undefined when
   * no marked extent starts at or after it. A walk from 0 that continues at each range's end
   * visits every marked byte exactly once.
   */
  nextMarkedRange(offsetBytes: number, lengthBytesMax: number): ByteRange | undefined {
    assert(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0 && offsetBytes <= this.sizeBytes, "range start inside the volume");
    assert(Number.isSafeInteger(lengthBytesMax) && lengthBytesMax >= this.extentBytes, "a range may hold at least one extent");
    const first = this.nextMarked(Math.floor(offsetBytes / this.extentBytes));
    if (first === undefined) return undefined;
    const startBytes = Math.max(offsetBytes, first * this.extentBytes);
    let endBytes = Math.min((first + 1) * this.extentBytes, this.sizeBytes);
    for (let extent = first + 1; extent < this.extentCount && this.has(extent); extent++) {
      const nextEnd = Math.min((extent + 1) * this.extentBytes, this.sizeBytes);
      if (nextEnd - startBytes > lengthBytesMax) break;
      endBytes = nextEnd;
    }
    endBytes = Math.min(endBytes, startBytes + lengthBytesMax);
    return { offsetBytes: startBytes, lengthBytes: endBytes - startBytes };
  }

  /**
   * The parts of [offsetBytes, offsetBytes + lengthBytes) that lie in marked extents, as
   * maximal ranges in order (clipped to the range). What a write of zeroes must touch: the
   * rest of the range is in clear extents, which read as zeroes already.
   */
  markedPartsOf(offsetBytes: number, lengthBytes: number): ByteRange[] {
    this.checkRange(offsetBytes, lengthBytes);
    const parts: ByteRange[] = [];
    if (lengthBytes === 0) return parts;
    const endBytes = offsetBytes + lengthBytes;
    const lastExtent = Math.floor((endBytes - 1) / this.extentBytes);
    let extent = this.nextMarked(Math.floor(offsetBytes / this.extentBytes), lastExtent + 1);
    while (extent !== undefined) {
      let end = extent + 1;
      while (end <= lastExtent && this.has(end)) end++;
      const startBytes = Math.max(offsetBytes, extent * this.extentBytes);
      parts.push({ offsetBytes: startBytes, lengthBytes: Math.min(endBytes, end * this.extentBytes) - startBytes });
      extent = this.nextMarked(end, lastExtent + 1);
    }
    return parts;
  }

  /** Every maximal run of marked extents as a byte range, in order. */
  *runs(): Generator<ByteRange> {
    let extent = this.nextMarked(0);
    while (extent !== undefined) {
      let end = extent + 1;
      while (end < this.extentCount && this.has(end)) end++;
      const startBytes = extent * this.extentBytes;
      yield { offsetBytes: startBytes, lengthBytes: Math.min(end * this.extentBytes, this.sizeBytes) - startBytes };
      extent = this.nextMarked(end);
    }
  }

  /** The first marked extent at or after `from` and before `until`; skips empty bytes eight extents at a time. */
  private nextMarked(from: number, until = this.extentCount): number | undefined {
    let extent = from;
    const end = Math.min(until, this.extentCount);
    while (extent < end) {
      if ((extent & 7) === 0 && this.bits[extent >> 3] === 0) {
        extent += 8;
        continue;
      }
      if (this.has(extent)) return extent;
      extent += 1;
    }
    return undefined;
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(
      Number.isSafeInteger(offsetBytes) && Number.isSafeInteger(lengthBytes) && offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= this.sizeBytes,
      () => `range ${offsetBytes}+${lengthBytes} inside a volume of ${this.sizeBytes} bytes`,
    );
  }
}

function popcount8(byte: number): number {
  let v = byte - ((byte >> 1) & 0x55);
  v = (v & 0x33) + ((v >> 2) & 0x33);
  return (v + (v >> 4)) & 0x0f;
}

function popcount(bits: Uint8Array): number {
  let count = 0;
  for (const byte of bits) if (byte !== 0) count += popcount8(byte);
  return count;
}
