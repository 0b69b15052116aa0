// Exact 64-bit integers in JavaScript numbers: we read and write u64 fields as two u32
// halves and refuse anything at or past 2^53, so a value is never silently rounded.
import { crc32 } from "node:zlib";

const twoTo32 = 0x1_0000_0000;
/** High half limit: values stay below 2^53. */
const highMax = 0x1f_ffff;

export function readU64LE(buf: Buffer, at: number): number | undefined {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readUInt32LE(at + 4);
  return hi > highMax ? undefined : hi * twoTo32 + lo;
}

export function writeU64LE(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value >>> 0, at);
  buf.writeUInt32LE(Math.floor(value / twoTo32), at + 4);
}

export function readU64BE(buf: Buffer, at: number): number | undefined {
  const hi = buf.readUInt32BE(at);
  const lo = buf.readUInt32BE(at + 4);
  return hi > highMax ? undefined : hi * twoTo32 + lo;
}

export function writeU64BE(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / twoTo32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** CRC-32 (zlib's, hardware-assisted where available) of a byte range. */
export function checksum(buf: Buffer, start = 0, end = buf.length, seed = 0): number {
  return crc32(start === 0 && end === buf.length ? buf : buf.subarray(start, end), seed);
}
