// The receive side of a framed protocol: socket chunks are queued, never concatenated on
// arrival; `take` returns a view when the bytes lie in one chunk, else one exact copy.
// Shared by the host-protocol and replication assemblers (node-postgres' buffer-reader idea).
import { assert } from "../core/assert.ts";

const emptyBuffer = Buffer.alloc(0);

export class ChunkQueue {
  #chunks: Buffer[] = [];
  #head = 0; // index of the first chunk with unread bytes
  #headOffset = 0; // bytes of chunks[#head] already read
  #buffered = 0;

  /** Bytes queued and not yet taken. */
  get buffered(): number {
    return this.#buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    // Compact before growing, so the array does not keep consumed slots forever.
    if (this.#head > 32 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /** Takes `bytes` from the front: a view when they lie in one chunk, else one copy. */
  take(bytes: number): Buffer {
    assert(bytes <= this.#buffered, "take only what is buffered");
    if (bytes === 0) return Buffer.alloc(0);
    const first = this.#chunks[this.#head];
    assert(first !== undefined, "buffered bytes live in chunks");
    if (first.length - this.#headOffset >= bytes) {
      const view = first.subarray(this.#headOffset, this.#headOffset + bytes);
      this.discard(bytes);
      return view;
    }
    const out = Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.#chunks[this.#head];
      assert(chunk !== undefined, "buffered bytes live in chunks");
      const n = Math.min(bytes - filled, chunk.length - this.#headOffset);
      chunk.copy(out, filled, this.#headOffset, this.#headOffset + n);
      filled += n;
      this.discard(n);
    }
    return out;
  }

  /** Drops `bytes` from the front. */
  discard(bytes: number): void {
    assert(bytes <= this.#buffered, "discard only what is buffered");
    let left = bytes;
    while (left > 0) {
      const chunk = this.#chunks[this.#head];
      assert(chunk !== undefined, "discard only what is buffered");
      const n = Math.min(left, chunk.length - this.#headOffset);
      this.#headOffset += n;
      left -= n;
      if (this.#headOffset === chunk.length) {
        this.#chunks[this.#head] = emptyBuffer;
        this.#head += 1;
        this.#headOffset = 0;
      }
    }
    this.#buffered -= bytes;
    if (this.#buffered === 0) this.clear();
  }

  /** Forgets everything queued (a broken stream holds nothing). */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#headOffset = 0;
    this.#buffered = 0;
  }
}
