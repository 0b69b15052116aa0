// The frame assembler under both NBD phases: socket chunks go in as they arrive and
// are never re-concatenated; a reader takes exactly n bytes out. A frame that lies inside
// one chunk comes back as a view of that chunk (no copy); one that spans chunks is
// copied once into a buffer of exactly its size. Pure: no I/O, no timers.
import { assert } from "../../core/assert.ts";

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first chunk still holding unread bytes. */
  private headIndex = 0;
  /** Bytes of chunks[headIndex] already read. */
  private headOffset = 0;
  private lengthBytes = 0;

  /** Unread bytes held. */
  get length(): number {
    return this.lengthBytes;
  }

  /** Unread bytes in the first chunk: a take() of at most this many is a view, not a copy. */
  get contiguousBytes(): number {
    const head = this.chunks[this.headIndex];
    return head === undefined ? 0 : head.length - this.headOffset;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.lengthBytes += chunk.length;
  }

  /**
   * Takes n bytes (n <= length). If they lie in one chunk, the result is a view of it;
   * otherwise they are copied into `scratch` when it is large enough (valid only until
   * the next call), or into one new buffer of exactly n bytes.
   */
  take(n: number, scratch?: Buffer): Buffer {
    assert(Number.isInteger(n) && n >= 0 && n <= this.lengthBytes, `take ${n} of ${this.lengthBytes} bytes`);
    if (n === 0) return Buffer.alloc(0);
    const head = this.chunks[this.headIndex];
    assert(head !== undefined, "queue holds bytes, so it has a head chunk");
    const inHead = head.length - this.headOffset;
    if (n <= inHead) {
      const view = head.subarray(this.headOffset, this.headOffset + n);
      this.advance(n);
      return view;
    }
    const out = scratch !== undefined && scratch.length >= n ? scratch.subarray(0, n) : Buffer.allocUnsafe(n);
    this.copyOut(out, 0, n);
    return out;
  }

  /** Copies n bytes (n <= length) into `target` at `at` and consumes them. */
  copyOut(target: Buffer, at: number, n: number): void {
    assert(Number.isInteger(n) && n >= 0 && n <= this.lengthBytes && at >= 0 && at + n <= target.length, `copy ${n} of ${this.lengthBytes} bytes`);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[this.headIndex];
      assert(chunk !== undefined, "enough bytes are queued");
      const count = Math.min(n - filled, chunk.length - this.headOffset);
      chunk.copy(target, at + filled, this.headOffset, this.headOffset + count);
      filled += count;
      this.advance(count);
    }
  }

  /** Drops up to n bytes without copying them; returns how many were dropped. */
  skip(n: number): number {
    assert(Number.isInteger(n) && n >= 0, `skip ${n}`);
    let left = Math.min(n, this.lengthBytes);
    const dropped = left;
    while (left > 0) {
      const chunk = this.chunks[this.headIndex];
      assert(chunk !== undefined, "enough bytes are queued");
      const count = Math.min(left, chunk.length - this.headOffset);
      this.advance(count);
      left -= count;
    }
    return dropped;
  }

  /** Reads a big-endian u32 at `at` bytes past the read position, without consuming. */
  peekU32BE(at: number): number {
    assert(at >= 0 && at + 4 <= this.lengthBytes, "peek inside the queued bytes");
    let value = 0;
    let index = this.headIndex;
    let offset = this.headOffset + at;
    for (let i = 0; i < 4; i++) {
      let chunk = this.chunks[index];
      while (chunk !== undefined && offset >= chunk.length) {
        offset -= chunk.length;
        index++;
        chunk = this.chunks[index];
      }
      assert(chunk !== undefined, "peeked byte is queued");
      value = value * 256 + (chunk[offset] ?? 0);
      offset++;
    }
    return value;
  }

  private advance(n: number): void {
    this.headOffset += n;
    this.lengthBytes -= n;
    const head = this.chunks[this.headIndex];
    if (head !== undefined && this.headOffset === head.length) {
      this.headIndex++;
      this.headOffset = 0;
    }
    if (this.lengthBytes === 0) {
      // Release every consumed chunk at once; the common case (all read) costs nothing.
      this.chunks = [];
      this.headIndex = 0;
      this.headOffset = 0;
    } else if (this.headIndex >= 64) {
      this.chunks = this.chunks.slice(this.headIndex);
      this.headIndex = 0;
    }
  }
}
