// The written-map file of one volume (docs/volumes.md): a 64-byte header, then one bit per
// extent. Pure: bytes in, a checked map out. Everything is checked (magic, version, flags,
// shape, both CRC-32s, the count of set bits), so a truncated or damaged file is refused
// here and never silently trusted.
//
// Header, little endian:
//   0  8  magic "TMWMAP\r\n"
//   8  u32 format version (1)
//  12  u32 flags (bit 0: reset in progress: the volume's contents are being discarded)
//  16  u64 volume size, bytes
//  24  u32 extent size, bytes
//  28  u32 bits length, bytes
//  32  u64 extents marked (the number of bits set)
//  40  16 bytes zero
//  56  u32 CRC-32 of the bits
//  60  u32 CRC-32 of header bytes 0..60
import { ExtentMap } from "../core/extent-map.ts";
import { checksum, readU64LE, writeU64LE } from "./bytes.ts";

export const writtenMapHeaderBytes = 64;
export const writtenMapFormatVersion = 1;
const magic = Buffer.from("TMWMAP\r\n", "latin1");

export const WrittenMapFlag = {
  /** The volume is being emptied (truncated to 0 and back to its size); finish that on open. */
  resetting: 1,
} as const;
const knownFlags = WrittenMapFlag.resetting;

export function encodeWrittenMap(map: ExtentMap, flags: number): Buffer {
  const bits = map.copyBits();
  const out = Buffer.alloc(writtenMapHeaderBytes + bits.length);
  magic.copy(out, 0);
  out.writeUInt32LE(writtenMapFormatVersion, 8);
  out.writeUInt32LE(flags, 12);
  writeU64LE(out, map.sizeBytes, 16);
  out.writeUInt32LE(map.extentBytes, 24);
  out.writeUInt32LE(bits.length, 28);
  writeU64LE(out, map.markedExtents, 32);
  out.set(bits, writtenMapHeaderBytes);
  out.writeUInt32LE(checksum(out, writtenMapHeaderBytes), 56);
  out.writeUInt32LE(checksum(out, 0, 60), 60);
  return out;
}

/**
 * The volume size a written-map file says it was made for, when its header is whole and its
 * checksum right (else undefined: decodeWrittenMap says what is wrong).
 */
export function writtenMapSizeBytes(buf: Buffer): number | undefined {
  if (buf.length < writtenMapHeaderBytes || !buf.subarray(0, 8).equals(magic) || checksum(buf, 0, 60) !== buf.readUInt32LE(60)) return undefined;
  return readU64LE(buf, 16);
}

export type DecodedWrittenMap =
  | { readonly ok: true; readonly map: ExtentMap; readonly flags: number }
  | { readonly ok: false; readonly reason: string };

/** Decodes a written-map file for a volume of `sizeBytes` in extents of `extentBytes`. */
export function decodeWrittenMap(buf: Buffer, sizeBytes: number, extentBytes: number): DecodedWrittenMap {
  const refuse = (reason: string): DecodedWrittenMap => ({ ok: false, reason });
  if (buf.length < writtenMapHeaderBytes) return refuse(`truncated: ${buf.length} bytes, shorter than the ${writtenMapHeaderBytes}-byte header`);
  if (!buf.subarray(0, 8).equals(magic)) return refuse("not a written-map file (bad magic)");
  if (checksum(buf, 0, 60) !== buf.readUInt32LE(60)) return refuse("header checksum mismatch");
  const version = buf.readUInt32LE(8);
  if (version !== writtenMapFormatVersion) return refuse(`format version ${version}, this tidemark reads ${writtenMapFormatVersion}`);
  const flags = buf.readUInt32LE(12);
  if ((flags & ~knownFlags) !== 0) return refuse(`unknown flags 0x${flags.toString(16)}`);
  const fileSizeBytes = readU64LE(buf, 16);
  if (fileSizeBytes !== sizeBytes) return refuse(`made for a volume of ${String(fileSizeBytes)} bytes, this one has ${sizeBytes}`);
  const fileExtentBytes = buf.readUInt32LE(24);
  if (fileExtentBytes !== extentBytes) return refuse(`extents of ${fileExtentBytes} bytes, this tidemark uses ${extentBytes}`);
  const bitsBytes = ExtentMap.bitsBytes(sizeBytes, extentBytes);
  if (buf.readUInt32LE(28) !== bitsBytes) return refuse(`header says ${buf.readUInt32LE(28)} bytes of bits, the volume needs ${bitsBytes}`);
  if (buf.length !== writtenMapHeaderBytes + bitsBytes) {
    return refuse(`${buf.length < writtenMapHeaderBytes + bitsBytes ? "truncated" : "trailing bytes"}: ${buf.length} bytes, expected ${writtenMapHeaderBytes + bitsBytes}`);
  }
  if (buf.subarray(40, 56).some((byte) => byte !== 0)) return refuse("reserved header bytes are not zero");
  if (checksum(buf, writtenMapHeaderBytes) !== buf.readUInt32LE(56)) return refuse("bits checksum mismatch");
  const bits = new Uint8Array(bitsBytes);
  bits.set(buf.subarray(writtenMapHeaderBytes));
  const extentCount = Math.ceil(sizeBytes / extentBytes);
  if (ExtentMap.strayBits(bits, extentCount) !== 0) return refuse("bits set past the last extent");
  const map = new ExtentMap(sizeBytes, extentBytes, bits);
  if (readU64LE(buf, 32) !== map.markedExtents) return refuse(`header counts ${String(readU64LE(buf, 32))} marked extents, the bits hold ${map.markedExtents}`);
  return { ok: true, map, flags };
}
