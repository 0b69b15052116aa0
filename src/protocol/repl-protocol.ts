// The replication wire protocol (docs/replication-protocol.md is the byte-exact spec).
// Pure codec: messages in, Buffer[] out (for writev/cork, record payloads never copied);
// bytes in, messages out through ReplFrameAssembler. No I/O, no clock, no timers.
//
// Every frame, in either direction, is a 20-byte header checksummed on its own, then
// `payloadBytes` bytes of payload:
//
//    0 u32 magic "TMRP"        8 u32 payloadBytes
//    4 u8  frame version (1)  12 u32 payload CRC-32 (of the covered part; see below)
//    5 u8  type               16 u32 header CRC-32 of bytes 0..15
//    6 u16 flags (0)
// All little-endian. The payload CRC covers the whole payload, except for BATCH (its
// 16-byte fixed part; the records carry their own CRCs) and COPY_DATA (its 32-byte fixed
// part, which holds the CRC of the data).
//
// Layers: decodeReplHeader (structure), ReplFrameAssembler (reassembly, limits before
// buffering), decodeReplPayload (meaning). Failures are values, never exceptions.
import { assert } from "../core/assert.ts";
import {
  journalRecordPayloadBytesMax, nameLengthMax, replBatchRecordsMax, replCopyChunkBytesMax, replFrameBytesMax,
  replMessageTextBytesMax, replPairIdBytesMax, replStreamsMax, volumesPerGroupMax,
} from "../core/limits.ts";
import { namePattern } from "../core/names.ts";
import {
  asAcceptNumber, asSequence, asVolumeId, asWriteTimeUs,
  type AcceptNumber, type SequenceNumber, type VolumeId, type WriteTimeUs,
} from "../core/types.ts";
import { ChunkQueue } from "./chunk-queue.ts";
import { checksum, readU64LE, writeU64LE } from "./bytes.ts";
import { decodeRecord, encodeRecordHeader, encodedRecordBytes, journalHeaderBytes, recordPayloadBytes, type JournalRecord } from "./journal-record.ts";

// ---------------------------------------------------------------------------------------
// Wire constants

export const replFrameMagic = 0x50524d54; // "TMRP" read little-endian
export const replFrameVersion = 1;
export const replHeaderBytes = 20;
/** Carried at the start of the HELLO payload: the 8 ASCII bytes "tidemark". */
export const replHelloMagic = Buffer.from("tidemark", "latin1");
/** Protocol versions this build speaks (negotiated in HELLO / HELLO_OK; docs/replication-protocol.md, "Version negotiation"). */
export const replProtocolVersionMin = 1;
/**
 * 2 (issue 9): BATCH records may be record format 2 (journal-record.ts: the primary's wall
 * time). A primary sends format-1 records only (`withoutWallTime`) on a connection that agreed
 * on version 1, so a secondary from before issue 9 is served as before.
 * 3 (issue 9, volume resize): BATCH may carry resize records (journal record kind 5). A
 * primary never sends one on a connection that agreed on 1 or 2: such a secondary would not
 * know the kind (pair-link.ts fails the pair once instead, saying to upgrade it).
 */
export const replProtocolVersionMax = 3;
/**
 * The CLOSE text with which a primary closes its streams to open them again at once (the end
 * of the initial copy): not a loss of the link, so neither side reports the pair disconnected.
 */
export const replReopenCloseText = "initial copy done; reopening";
/**
 * The CLOSE text with which a primary closes its streams when its side of the pair is deleted
 * (`pair delete`, with --force during the copy or with the secondary refusing): nothing more
 * comes, and the secondary's status says so and what ends its side.
 */
export const replPairDeletedCloseText = "the pair was deleted on the primary";
/**
 * The CLOSE text with which a primary closes its streams when the pair is suspended (`pair
 * suspend`): the secondary's status says the pair is suspended on the primary rather than that
 * the link is down. Older primaries said replPairSuspendedCloseTextV1; a secondary reads both,
 * and an older secondary shows this text as what the primary said.
 */
export const replPairSuspendedCloseText = "the pair was suspended on the primary";
/** What primaries before this version said on suspend (still recognised). */
export const replPairSuspendedCloseTextV1 = "pair suspended";
/** The first protocol version whose BATCH records carry the primary's wall time. */
export const replVersionWallTime = 2;
/** The first protocol version whose BATCH may carry resize records (journal record kind 5). */
export const replResizeVersion = 3;

/** Message type codes (header byte 5). */
export const ReplType = {
  HELLO: 1,
  HELLO_OK: 2,
  OPEN_GROUP: 3,
  GROUP_STATE: 4,
  BATCH: 5,
  ACK: 6,
  NACK: 7,
  PULL: 8,
  COPY_DATA: 9,
  COPY_ZEROES: 10,
  COPY_DONE: 11,
  COPY_ACK: 12,
  PING: 13,
  PONG: 14,
  ERROR: 15,
  CLOSE: 16,
  FENCE: 17,
  FENCED: 18,
} as const;
export type ReplMessageType = keyof typeof ReplType;
const typeNames = new Map<number, ReplMessageType>(Object.entries(ReplType).map(([name, code]) => [code, name as ReplMessageType]));

/** The side a message is addressed to; "both" for messages either side may send. */
export type ReplRole = "primary" | "secondary";
export const replReceiver: Readonly<Record<ReplMessageType, ReplRole | "both">> = {
  HELLO: "secondary",
  HELLO_OK: "primary",
  OPEN_GROUP: "secondary",
  GROUP_STATE: "primary",
  BATCH: "secondary",
  ACK: "primary",
  NACK: "both",
  PULL: "primary",
  COPY_DATA: "secondary",
  COPY_ZEROES: "secondary",
  COPY_DONE: "secondary",
  COPY_ACK: "primary",
  PING: "both",
  PONG: "both",
  ERROR: "both",
  CLOSE: "both",
  FENCE: "primary",
  FENCED: "secondary",
};

/** Error codes carried by ERROR (connection-fatal) and NACK (one message refused, stream in step). */
export const ReplErrorCode = {
  PROTOCOL: 1,
  VERSION: 2,
  TOO_LARGE: 3,
  UNKNOWN_GROUP: 4,
  STALE_PAIR: 5,
  TAKEN_OVER: 6,
  VOLUME_MISMATCH: 7,
  BAD_RECORD: 8,
  REORDER_FULL: 9,
  OUT_OF_RANGE: 10,
  GROUP_BUSY: 11,
  NO_SPACE: 12,
  SHUTTING_DOWN: 13,
  INTERNAL: 14,
} as const;
export type ReplErrorCode = keyof typeof ReplErrorCode;
const errorNames = new Map<number, ReplErrorCode>(Object.entries(ReplErrorCode).map(([name, code]) => [code, name as ReplErrorCode]));

export const TransferMode = { push: 1, pull: 2 } as const;
export type TransferMode = keyof typeof TransferMode;
const transferNames = new Map<number, TransferMode>([[1, "push"], [2, "pull"]]);

export const ReflectMode = { time: 1, seq: 2, marker: 3 } as const;
export type ReflectMode = keyof typeof ReflectMode;
const reflectNames = new Map<number, ReflectMode>([[1, "time"], [2, "seq"], [3, "marker"]]);

/**
 * The secondary's state of a group, in GROUP_STATE: empty (never copied: run the initial
 * copy), copying (a copy began and did not finish: copy again from the start), replicating
 * (send records from arrivedSequence + 1). A taken-over group is refused with NACK TAKEN_OVER.
 */
export const GroupState = { empty: 1, copying: 2, replicating: 3 } as const;
export type GroupState = keyof typeof GroupState;
const groupStateNames = new Map<number, GroupState>([[1, "empty"], [2, "copying"], [3, "replicating"]]);

/** Message types a NACK may refuse. */
export const nackableTypes = ["OPEN_GROUP", "BATCH", "PULL", "COPY_DATA", "COPY_ZEROES", "COPY_DONE", "FENCE"] as const satisfies readonly ReplMessageType[];
export type NackableType = (typeof nackableTypes)[number];
const nackable = new Set<ReplMessageType>(nackableTypes);

// Fixed parts of the payloads (bytes).
export const replBatchFixedBytes = 16;
export const replCopyDataFixedBytes = 32;
const helloFixedBytes = 16;
const helloOkFixedBytes = 8;
const openGroupFixedBytes = 16;
const openGroupVolumeFixedBytes = 12;
const groupStateBytes = 40;
const ackBytes = 48;
const nackFixedBytes = 24;
const pullBytes = 16;
const copyZeroesBytes = 32;
const copyDoneBytes = 32;
const copyAckBytes = 16;
const pingBytes = 16;
const pongBytes = 24;
const errorFixedBytes = 2;
const fenceFixedBytes = 16;
const fencedBytes = 32;
const strPrefix = 2;

assert(replFrameBytesMax >= replHeaderBytes + replBatchFixedBytes + journalHeaderBytes + journalRecordPayloadBytesMax, "a BATCH frame holds one largest record");
assert(replFrameBytesMax >= replHeaderBytes + replCopyDataFixedBytes + replCopyChunkBytesMax, "a COPY_DATA frame holds one largest chunk");
assert(replFrameBytesMax <= 0xffff_ffff, "payload length is a u32");

// ---------------------------------------------------------------------------------------
// Messages

/** Where a group's arrived record lies: its (writeTimeUs, acceptNumber) position. */
export interface ArrivedPosition {
  readonly arrivedWriteTimeUs: WriteTimeUs;
  readonly arrivedAcceptNumber: AcceptNumber;
}

/** One volume of the group: the primary's volume id (as in the records) and the name and size on both sides. */
export interface ReplVolume {
  readonly volumeId: VolumeId;
  readonly name: string;
  readonly sizeBytes: number;
}

export type ReplMessage =
  | {
    readonly type: "HELLO"; readonly versionMin: number; readonly versionMax: number;
    readonly primaryNodeId: string; readonly streamIndex: number; readonly streamCount: number;
  }
  | { readonly type: "HELLO_OK"; readonly version: number; readonly secondaryNodeId: string; readonly frameBytesMax: number }
  | {
    readonly type: "OPEN_GROUP"; readonly groupHandle: number; readonly pairId: string;
    readonly primaryGroup: string; readonly secondaryGroup: string;
    readonly transfer: TransferMode; readonly reflect: ReflectMode;
    readonly startSequence: SequenceNumber; readonly volumes: readonly ReplVolume[];
  }
  | ({
    readonly type: "GROUP_STATE"; readonly groupHandle: number; readonly state: GroupState;
    readonly arrivedSequence: SequenceNumber; readonly reflectedSequence: SequenceNumber;
  } & ArrivedPosition)
  | { readonly type: "BATCH"; readonly groupHandle: number; readonly batchId: number; readonly records: readonly JournalRecord[] }
  | ({
    readonly type: "ACK"; readonly groupHandle: number; readonly batchId: number;
    readonly arrivedSequence: SequenceNumber; readonly reflectedSequence: SequenceNumber;
  } & ArrivedPosition)
  | {
    readonly type: "NACK"; readonly groupHandle: number; readonly code: ReplErrorCode;
    readonly refType: NackableType; readonly refId: number; readonly arrivedSequence: SequenceNumber; readonly text: string;
  }
  | { readonly type: "PULL"; readonly groupHandle: number; readonly fromSequence: SequenceNumber; readonly maxBytes: number }
  | {
    readonly type: "COPY_DATA"; readonly groupHandle: number; readonly chunkId: number;
    readonly volumeId: VolumeId; readonly offsetBytes: number; readonly data: Buffer;
  }
  | {
    readonly type: "COPY_ZEROES"; readonly groupHandle: number; readonly chunkId: number;
    readonly volumeId: VolumeId; readonly offsetBytes: number; readonly lengthBytes: number;
  }
  | {
    readonly type: "COPY_DONE"; readonly groupHandle: number; readonly chunkId: number; readonly totalBytes: number;
    /** The target is consistent once it has reflected this sequence (the last one accepted when the copy ended). */
    readonly consistentFromSequence: SequenceNumber;
  }
  | { readonly type: "COPY_ACK"; readonly groupHandle: number; readonly chunkId: number }
  | { readonly type: "PING"; readonly pingId: number; readonly sendTimeUs: number }
  | { readonly type: "PONG"; readonly pingId: number; readonly echoTimeUs: number; readonly replyTimeUs: number }
  | { readonly type: "ERROR"; readonly code: ReplErrorCode; readonly text: string }
  | { readonly type: "CLOSE"; readonly text: string }
  /**
   * The secondary asks the primary to fence its group (a takeover with the primary reachable):
   * the primary persists `fenced`, makes the group read-only, then answers FENCED.
   */
  | { readonly type: "FENCE"; readonly groupHandle: number; readonly fenceId: number; readonly text: string }
  /**
   * The primary's group is fenced (saved before this answer): it accepted nothing past
   * `lastAcceptedSequence`; `lastWriteSequence` (<= it) is its last host write (the rest are time advances).
   */
  | { readonly type: "FENCED"; readonly groupHandle: number; readonly fenceId: number; readonly lastAcceptedSequence: SequenceNumber; readonly lastWriteSequence: SequenceNumber };

export type ReplMessageOf<T extends ReplMessageType> = Extract<ReplMessage, { readonly type: T }>;

export type ReplDecodeResult =
  | { readonly ok: true; readonly message: ReplMessage }
  /** The stream cannot go on: send ERROR(code, reason) if the link still works, then close. */
  | { readonly ok: false; readonly fatal: true; readonly code: ReplErrorCode; readonly reason: string }
  /**
   * The frame was sound but its content is not (a record or copy data failed its checksum or
   * structure): the stream is in step; answer NACK(code, refType, refId) and go on.
   */
  | {
    readonly ok: false; readonly fatal: false; readonly code: "BAD_RECORD"; readonly reason: string;
    readonly refType: "BATCH" | "COPY_DATA"; readonly groupHandle: number; readonly refId: number;
  };

/** Highest version in both ranges, or undefined when they do not meet. */
export function chooseReplVersion(peerMin: number, peerMax: number, ownMin = replProtocolVersionMin, ownMax = replProtocolVersionMax): number | undefined {
  const high = Math.min(peerMax, ownMax);
  return high >= Math.max(peerMin, ownMin) ? high : undefined;
}

/** Frame bytes (header included) of a BATCH of these records; the sender keeps it <= the peer's frameBytesMax. */
export function batchFrameBytes(records: readonly Pick<JournalRecord, "kind" | "lengthBytes">[]): number {
  let bytes = replHeaderBytes + replBatchFixedBytes;
  for (const record of records) bytes += encodedRecordBytes(record);
  return bytes;
}

// ---------------------------------------------------------------------------------------
// Frame header

export interface ReplFrameHeader {
  readonly type: number;
  readonly flags: number;
  readonly payloadBytes: number;
  readonly payloadCrc: number;
}

export type ReplHeaderResult =
  | { readonly ok: true; readonly header: ReplFrameHeader }
  | { readonly ok: false; readonly reason: string };

function encodeHeader(type: number, payloadBytes: number, payloadCrc: number, out: Buffer): void {
  out.writeUInt32LE(replFrameMagic, 0);
  out.writeUInt8(replFrameVersion, 4);
  out.writeUInt8(type, 5);
  out.writeUInt16LE(0, 6);
  out.writeUInt32LE(payloadBytes, 8);
  out.writeUInt32LE(payloadCrc, 12);
  out.writeUInt32LE(checksum(out, 0, 16), 16);
}

/** Structure of a 20-byte header at `at`: magic, checksum, version, flags. `buf` must hold the 20 bytes. */
export function decodeReplHeader(buf: Buffer, at = 0): ReplHeaderResult {
  assert(buf.length - at >= replHeaderBytes, "a header is decoded once its 20 bytes are there");
  if (buf.readUInt32LE(at) !== replFrameMagic) return { ok: false, reason: "bad frame magic (not a tidemark replication frame)" };
  if (checksum(buf, at, at + 16) !== buf.readUInt32LE(at + 16)) return { ok: false, reason: "frame header checksum mismatch" };
  const version = buf.readUInt8(at + 4);
  if (version !== replFrameVersion) return { ok: false, reason: `unknown frame version ${version}` };
  const flags = buf.readUInt16LE(at + 6);
  if (flags !== 0) return { ok: false, reason: `unknown frame flags 0x${flags.toString(16)}` };
  return {
    ok: true,
    header: { type: buf.readUInt8(at + 5), flags, payloadBytes: buf.readUInt32LE(at + 8), payloadCrc: buf.readUInt32LE(at + 12) },
  };
}

/** Largest payload a message of this type may declare (checked before a byte of it is buffered). */
export function replPayloadBytesMax(type: ReplMessageType, frameBytesMax = replFrameBytesMax): number {
  const str = (bytes: number): number => strPrefix + bytes;
  switch (type) {
    case "HELLO": return helloFixedBytes + str(nameLengthMax);
    case "HELLO_OK": return helloOkFixedBytes + str(nameLengthMax);
    case "OPEN_GROUP": return openGroupFixedBytes + str(replPairIdBytesMax) + 2 * str(nameLengthMax) + volumesPerGroupMax * (openGroupVolumeFixedBytes + str(nameLengthMax));
    case "GROUP_STATE": return groupStateBytes;
    case "BATCH": return frameBytesMax - replHeaderBytes;
    case "ACK": return ackBytes;
    case "NACK": return nackFixedBytes + str(replMessageTextBytesMax);
    case "PULL": return pullBytes;
    case "COPY_DATA": return Math.min(replCopyDataFixedBytes + replCopyChunkBytesMax, frameBytesMax - replHeaderBytes);
    case "COPY_ZEROES": return copyZeroesBytes;
    case "COPY_DONE": return copyDoneBytes;
    case "COPY_ACK": return copyAckBytes;
    case "PING": return pingBytes;
    case "PONG": return pongBytes;
    case "ERROR": return errorFixedBytes + str(replMessageTextBytesMax);
    case "CLOSE": return str(replMessageTextBytesMax);
    case "FENCE": return fenceFixedBytes + str(replMessageTextBytesMax);
    case "FENCED": return fencedBytes;
  }
}

/** Bytes of the payload the header's payload CRC covers. */
function crcCoveredBytes(type: ReplMessageType, payloadBytes: number): number {
  if (type === "BATCH") return Math.min(payloadBytes, replBatchFixedBytes);
  if (type === "COPY_DATA") return Math.min(payloadBytes, replCopyDataFixedBytes);
  return payloadBytes;
}

// ---------------------------------------------------------------------------------------
// Encoding

const u16Max = 0xffff;
const u32Max = 0xffff_ffff;

/** Writes fields in order into a buffer of known size. Values are asserted: encoding a bad message is our bug. */
class Out {
  readonly buf: Buffer;
  at = 0;
  constructor(bytes: number) {
    this.buf = Buffer.alloc(bytes);
  }
  u8(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xff, `u8 ${value}`);
    this.buf.writeUInt8(value, this.at);
    this.at += 1;
  }
  u16(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= u16Max, `u16 ${value}`);
    this.buf.writeUInt16LE(value, this.at);
    this.at += 2;
  }
  u32(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= u32Max, `u32 ${value}`);
    this.buf.writeUInt32LE(value, this.at);
    this.at += 4;
  }
  u64(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, `u64 ${value} (must stay below 2^53)`);
    writeU64LE(this.buf, value, this.at);
    this.at += 8;
  }
  str(bytes: Buffer): void {
    this.u16(bytes.length);
    bytes.copy(this.buf, this.at);
    this.at += bytes.length;
  }
  done(): Buffer {
    assert(this.at === this.buf.length, `encoded ${this.at} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

function nameBytes(kind: string, name: string): Buffer {
  assert(namePattern.test(name), `${kind} ${JSON.stringify(name)} is a valid name`);
  return Buffer.from(name, "latin1");
}

function pairIdBytes(pairId: string): Buffer {
  assert(pairIdPattern.test(pairId), `pair id ${JSON.stringify(pairId)} is 1..${replPairIdBytesMax} printable ASCII characters`);
  return Buffer.from(pairId, "latin1");
}
const pairIdPattern = new RegExp(`^[\\x21-\\x7e]{1,${replPairIdBytesMax}}$`);

/** UTF-8 of `text`, cut on a character boundary to replMessageTextBytesMax. */
export function replTextBytes(text: string): Buffer {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= replMessageTextBytesMax) return bytes;
  let end = replMessageTextBytesMax;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  return bytes.subarray(0, end);
}

/** A frame whose payload is one buffer, all of it covered by the payload CRC. */
function simpleFrame(type: ReplMessageType, payload: Buffer): Buffer[] {
  assert(payload.length <= replPayloadBytesMax(type), `${type} payload of ${payload.length} bytes within its limit`);
  const header = Buffer.allocUnsafe(replHeaderBytes);
  encodeHeader(ReplType[type], payload.length, payload.length === 0 ? 0 : checksum(payload), header);
  return payload.length === 0 ? [header] : [header, payload];
}

/** The frame of one message: the header first, then payload pieces; write them with writev/cork. */
export function encodeMessage(msg: ReplMessage): Buffer[] {
  switch (msg.type) {
    case "HELLO": {
      assert(msg.versionMin >= 1 && msg.versionMin <= msg.versionMax, "version range");
      assert(msg.streamCount >= 1 && msg.streamCount <= replStreamsMax && msg.streamIndex < msg.streamCount, "stream index and count");
      const id = nameBytes("node id", msg.primaryNodeId);
      const out = new Out(helloFixedBytes + strPrefix + id.length);
      replHelloMagic.copy(out.buf, 0);
      out.at = 8;
      out.u16(msg.versionMin);
      out.u16(msg.versionMax);
      out.u16(msg.streamIndex);
      out.u16(msg.streamCount);
      out.str(id);
      return simpleFrame(msg.type, out.done());
    }
    case "HELLO_OK": {
      assert(msg.version >= 1 && msg.frameBytesMax >= replHeaderBytes + replBatchFixedBytes + journalHeaderBytes, "HELLO_OK fields");
      const id = nameBytes("node id", msg.secondaryNodeId);
      const out = new Out(helloOkFixedBytes + strPrefix + id.length);
      out.u16(msg.version);
      out.u16(0);
      out.u32(msg.frameBytesMax);
      out.str(id);
      return simpleFrame(msg.type, out.done());
    }
    case "OPEN_GROUP": {
      assert(msg.groupHandle > 0 && msg.startSequence >= 1, "group handle and start sequence are positive");
      assert(msg.volumes.length >= 1 && msg.volumes.length <= volumesPerGroupMax, "a group has 1..volumesPerGroupMax volumes");
      const pairId = pairIdBytes(msg.pairId);
      const primaryGroup = nameBytes("group", msg.primaryGroup);
      const secondaryGroup = nameBytes("group", msg.secondaryGroup);
      const volumeNames = msg.volumes.map((v) => nameBytes("volume", v.name));
      const bytes = openGroupFixedBytes + 3 * strPrefix + pairId.length + primaryGroup.length + secondaryGroup.length
        + volumeNames.reduce((sum, name) => sum + openGroupVolumeFixedBytes + strPrefix + name.length, 0);
      const out = new Out(bytes);
      out.u32(msg.groupHandle);
      out.u8(TransferMode[msg.transfer]);
      out.u8(ReflectMode[msg.reflect]);
      out.u16(msg.volumes.length);
      out.u64(msg.startSequence);
      out.str(pairId);
      out.str(primaryGroup);
      out.str(secondaryGroup);
      msg.volumes.forEach((volume, i) => {
        out.u32(volume.volumeId);
        out.u64(volume.sizeBytes);
        out.str(volumeNames[i] ?? Buffer.alloc(0));
      });
      return simpleFrame(msg.type, out.done());
    }
    case "GROUP_STATE": {
      assert(msg.groupHandle > 0 && msg.reflectedSequence <= msg.arrivedSequence, "GROUP_STATE: reflected <= arrived");
      const out = new Out(groupStateBytes);
      out.u32(msg.groupHandle);
      out.u8(GroupState[msg.state]);
      out.u8(0);
      out.u16(0);
      out.u64(msg.arrivedSequence);
      out.u64(msg.reflectedSequence);
      out.u64(msg.arrivedWriteTimeUs);
      out.u64(msg.arrivedAcceptNumber);
      return simpleFrame(msg.type, out.done());
    }
    case "BATCH":
      return encodeBatch(msg);
    case "ACK": {
      assert(msg.groupHandle > 0 && msg.reflectedSequence <= msg.arrivedSequence, "ACK: reflected <= arrived");
      const out = new Out(ackBytes);
      out.u32(msg.groupHandle);
      out.u32(0);
      out.u64(msg.batchId);
      out.u64(msg.arrivedSequence);
      out.u64(msg.reflectedSequence);
      out.u64(msg.arrivedWriteTimeUs);
      out.u64(msg.arrivedAcceptNumber);
      return simpleFrame(msg.type, out.done());
    }
    case "NACK": {
      assert(msg.groupHandle > 0 && nackable.has(msg.refType), "NACK refers to a group and a nackable type");
      const text = replTextBytes(msg.text);
      const out = new Out(nackFixedBytes + strPrefix + text.length);
      out.u32(msg.groupHandle);
      out.u16(ReplErrorCode[msg.code]);
      out.u8(ReplType[msg.refType]);
      out.u8(0);
      out.u64(msg.refId);
      out.u64(msg.arrivedSequence);
      out.str(text);
      return simpleFrame(msg.type, out.done());
    }
    case "PULL": {
      assert(msg.groupHandle > 0 && msg.fromSequence >= 1 && msg.maxBytes >= 1, "PULL fields");
      const out = new Out(pullBytes);
      out.u32(msg.groupHandle);
      out.u32(msg.maxBytes);
      out.u64(msg.fromSequence);
      return simpleFrame(msg.type, out.done());
    }
    case "COPY_DATA": {
      assert(msg.groupHandle > 0 && msg.data.length >= 1 && msg.data.length <= replCopyChunkBytesMax, "COPY_DATA: 1..replCopyChunkBytesMax bytes");
      assert(Number.isSafeInteger(msg.offsetBytes + msg.data.length), "COPY_DATA range stays below 2^53");
      const out = new Out(replCopyDataFixedBytes);
      out.u32(msg.groupHandle);
      out.u32(msg.volumeId);
      out.u64(msg.chunkId);
      out.u64(msg.offsetBytes);
      out.u32(checksum(msg.data));
      out.u32(0);
      const fixed = out.done();
      const header = Buffer.allocUnsafe(replHeaderBytes);
      encodeHeader(ReplType.COPY_DATA, fixed.length + msg.data.length, checksum(fixed), header);
      return [header, fixed, msg.data];
    }
    case "COPY_ZEROES": {
      assert(msg.groupHandle > 0 && msg.lengthBytes >= 1 && Number.isSafeInteger(msg.offsetBytes + msg.lengthBytes), "COPY_ZEROES range");
      const out = new Out(copyZeroesBytes);
      out.u32(msg.groupHandle);
      out.u32(msg.volumeId);
      out.u64(msg.chunkId);
      out.u64(msg.offsetBytes);
      out.u64(msg.lengthBytes);
      return simpleFrame(msg.type, out.done());
    }
    case "COPY_DONE": {
      assert(msg.groupHandle > 0, "COPY_DONE group handle");
      const out = new Out(copyDoneBytes);
      out.u32(msg.groupHandle);
      out.u32(0);
      out.u64(msg.chunkId);
      out.u64(msg.totalBytes);
      out.u64(msg.consistentFromSequence);
      return simpleFrame(msg.type, out.done());
    }
    case "COPY_ACK": {
      assert(msg.groupHandle > 0, "COPY_ACK group handle");
      const out = new Out(copyAckBytes);
      out.u32(msg.groupHandle);
      out.u32(0);
      out.u64(msg.chunkId);
      return simpleFrame(msg.type, out.done());
    }
    case "PING": {
      const out = new Out(pingBytes);
      out.u64(msg.pingId);
      out.u64(msg.sendTimeUs);
      return simpleFrame(msg.type, out.done());
    }
    case "PONG": {
      const out = new Out(pongBytes);
      out.u64(msg.pingId);
      out.u64(msg.echoTimeUs);
      out.u64(msg.replyTimeUs);
      return simpleFrame(msg.type, out.done());
    }
    case "ERROR": {
      const text = replTextBytes(msg.text);
      const out = new Out(errorFixedBytes + strPrefix + text.length);
      out.u16(ReplErrorCode[msg.code]);
      out.str(text);
      return simpleFrame(msg.type, out.done());
    }
    case "CLOSE": {
      const text = replTextBytes(msg.text);
      const out = new Out(strPrefix + text.length);
      out.str(text);
      return simpleFrame(msg.type, out.done());
    }
    case "FENCE": {
      assert(msg.groupHandle > 0 && msg.fenceId >= 1, "FENCE group handle and fence id");
      const text = replTextBytes(msg.text);
      const out = new Out(fenceFixedBytes + strPrefix + text.length);
      out.u32(msg.groupHandle);
      out.u32(0);
      out.u64(msg.fenceId);
      out.str(text);
      return simpleFrame(msg.type, out.done());
    }
    case "FENCED": {
      assert(msg.groupHandle > 0 && msg.fenceId >= 1 && msg.lastWriteSequence <= msg.lastAcceptedSequence, "FENCED group handle, fence id, last write at or before last accepted");
      const out = new Out(fencedBytes);
      out.u32(msg.groupHandle);
      out.u32(0);
      out.u64(msg.fenceId);
      out.u64(msg.lastAcceptedSequence);
      out.u64(msg.lastWriteSequence);
      return simpleFrame(msg.type, out.done());
    }
  }
}

/**
 * BATCH: one buffer holds the frame header, the fixed part and every record header;
 * the pieces handed out are views of it with each write's payload (never copied) in
 * between. Consecutive headers of payload-less records share one piece.
 */
function encodeBatch(msg: ReplMessageOf<"BATCH">): Buffer[] {
  const records = msg.records;
  assert(msg.groupHandle > 0 && records.length <= replBatchRecordsMax, "BATCH group handle and record count");
  for (let i = 1; i < records.length; i++) {
    assert((records[i]?.sequence ?? 0) === (records[i - 1]?.sequence ?? 0) + 1, "BATCH records are consecutive in sequence");
  }
  const headBytes = replHeaderBytes + replBatchFixedBytes + records.length * journalHeaderBytes;
  const head = Buffer.allocUnsafe(headBytes);
  let payloadBytes = replBatchFixedBytes;
  for (const record of records) payloadBytes += encodedRecordBytes(record);
  assert(replHeaderBytes + payloadBytes <= replFrameBytesMax, `BATCH of ${payloadBytes} bytes fits in a frame`);
  head.writeUInt32LE(msg.groupHandle, replHeaderBytes);
  head.writeUInt32LE(records.length, replHeaderBytes + 4);
  assert(Number.isSafeInteger(msg.batchId) && msg.batchId >= 0, "batch id below 2^53");
  writeU64LE(head, msg.batchId, replHeaderBytes + 8);
  encodeHeader(ReplType.BATCH, payloadBytes, checksum(head, replHeaderBytes, replHeaderBytes + replBatchFixedBytes), head);
  const pieces: Buffer[] = [];
  let pieceStart = 0;
  let at = replHeaderBytes + replBatchFixedBytes;
  for (const record of records) {
    encodeRecordHeader(record, head, at);
    at += journalHeaderBytes;
    if (recordPayloadBytes(record.kind, record.lengthBytes) > 0) {
      pieces.push(head.subarray(pieceStart, at), record.payload);
      pieceStart = at;
    }
  }
  if (pieceStart < at) pieces.push(head.subarray(pieceStart, at));
  return pieces;
}

// ---------------------------------------------------------------------------------------
// Decoding the payload

/** Internal control flow of the payload decoder only; never escapes decodeReplPayload. */
class Malformed extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.reason = reason;
  }
}

/** Reads fields in order; running past the end or an out-of-range value throws Malformed, caught in decodeReplPayload only. */
class In {
  readonly buf: Buffer;
  at = 0;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  need(bytes: number, what: string): void {
    if (this.buf.length - this.at < bytes) throw new Malformed(`payload ends inside ${what}`);
  }
  u8(what: string): number {
    this.need(1, what);
    const value = this.buf.readUInt8(this.at);
    this.at += 1;
    return value;
  }
  u16(what: string): number {
    this.need(2, what);
    const value = this.buf.readUInt16LE(this.at);
    this.at += 2;
    return value;
  }
  u32(what: string): number {
    this.need(4, what);
    const value = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return value;
  }
  u64(what: string): number {
    this.need(8, what);
    const value = readU64LE(this.buf, this.at);
    if (value === undefined) throw new Malformed(`${what} is 2^53 or more`);
    this.at += 8;
    return value;
  }
  zero(bytes: number, what: string): void {
    this.need(bytes, what);
    for (let i = 0; i < bytes; i++) if (this.buf[this.at + i] !== 0) throw new Malformed(`${what} must be 0`);
    this.at += bytes;
  }
  bytes(what: string, max: number): Buffer {
    const length = this.u16(`${what} length`);
    if (length > max) throw new Malformed(`${what} is ${length} bytes, over ${max}`);
    this.need(length, what);
    const out = this.buf.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }
  name(what: string): string {
    const value = this.bytes(what, nameLengthMax).toString("latin1");
    if (!namePattern.test(value)) throw new Malformed(`${what} ${JSON.stringify(value)} is not a valid name`);
    return value;
  }
  text(what: string): string {
    return utf8Lenient.decode(this.bytes(what, replMessageTextBytesMax));
  }
  end(what: string): void {
    if (this.at !== this.buf.length) throw new Malformed(`${this.buf.length - this.at} bytes past the end of ${what}`);
  }
}
const utf8Lenient = new TextDecoder("utf-8");

function positive(value: number, what: string): number {
  if (value === 0) throw new Malformed(`${what} is 0`);
  return value;
}

function lookup<T>(map: ReadonlyMap<number, T>, code: number, what: string): T {
  const value = map.get(code);
  if (value === undefined) throw new Malformed(`unknown ${what} ${code}`);
  return value;
}

/**
 * Meaning of a whole payload of a known type (its CRC already checked by the caller).
 * Record payloads and copy data are views of `payload`, not copies.
 */
export function decodeReplPayload(type: ReplMessageType, payload: Buffer): ReplDecodeResult {
  try {
    return { ok: true, message: decodePayload(type, new In(payload)) };
  } catch (error) {
    if (error instanceof Malformed) return { ok: false, fatal: true, code: "PROTOCOL", reason: `${type}: ${error.reason}` };
    if (error instanceof BadContent) return error.result;
    throw error;
  }
}

/** Content (records, copy data) that fails its own checks: NACKed, the stream stays in step. */
class BadContent extends Error {
  readonly result: ReplDecodeResult;
  constructor(result: ReplDecodeResult) {
    super("bad content");
    this.result = result;
  }
}

function decodePayload(type: ReplMessageType, r: In): ReplMessage {
  switch (type) {
    case "HELLO": {
      r.need(8, "HELLO magic");
      if (!r.buf.subarray(0, 8).equals(replHelloMagic)) throw new Malformed("bad HELLO magic");
      r.at = 8;
      const versionMin = positive(r.u16("versionMin"), "versionMin");
      const versionMax = r.u16("versionMax");
      if (versionMax < versionMin) throw new Malformed(`version range ${versionMin}..${versionMax} is empty`);
      const streamIndex = r.u16("streamIndex");
      const streamCount = positive(r.u16("streamCount"), "streamCount");
      if (streamCount > replStreamsMax) throw new Malformed(`streamCount ${streamCount} over ${replStreamsMax}`);
      if (streamIndex >= streamCount) throw new Malformed(`streamIndex ${streamIndex} not below streamCount ${streamCount}`);
      const primaryNodeId = r.name("primary node id");
      r.end(type);
      return { type, versionMin, versionMax, primaryNodeId, streamIndex, streamCount };
    }
    case "HELLO_OK": {
      const version = positive(r.u16("version"), "version");
      r.zero(2, "reserved");
      const frameBytesMax = r.u32("frameBytesMax");
      if (frameBytesMax < replHeaderBytes + replBatchFixedBytes + journalHeaderBytes) throw new Malformed(`frameBytesMax ${frameBytesMax} cannot hold a record`);
      const secondaryNodeId = r.name("secondary node id");
      r.end(type);
      return { type, version, secondaryNodeId, frameBytesMax };
    }
    case "OPEN_GROUP": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const transfer = lookup(transferNames, r.u8("transfer"), "transfer mode");
      const reflect = lookup(reflectNames, r.u8("reflect"), "reflect mode");
      const volumeCount = positive(r.u16("volumeCount"), "volumeCount");
      if (volumeCount > volumesPerGroupMax) throw new Malformed(`volumeCount ${volumeCount} over ${volumesPerGroupMax}`);
      const startSequence = asSequence(positive(r.u64("startSequence"), "startSequence"));
      const pairId = r.bytes("pair id", replPairIdBytesMax).toString("latin1");
      if (!pairIdPattern.test(pairId)) throw new Malformed("pair id is not 1 or more printable ASCII characters");
      const primaryGroup = r.name("primary group");
      const secondaryGroup = r.name("secondary group");
      const volumes: ReplVolume[] = [];
      for (let i = 0; i < volumeCount; i++) {
        const volumeId = asVolumeId(r.u32("volumeId"));
        const sizeBytes = r.u64("sizeBytes");
        volumes.push({ volumeId, sizeBytes, name: r.name("volume name") });
      }
      r.end(type);
      return { type, groupHandle, pairId, primaryGroup, secondaryGroup, transfer, reflect, startSequence, volumes };
    }
    case "GROUP_STATE": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const state = lookup(groupStateNames, r.u8("state"), "group state");
      r.zero(3, "reserved");
      const progress = sequences(r);
      r.end(type);
      return { type, groupHandle, state, ...progress };
    }
    case "BATCH":
      return decodeBatch(r);
    case "ACK": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      r.zero(4, "reserved");
      const batchId = r.u64("batchId");
      const progress = sequences(r);
      r.end(type);
      return { type, groupHandle, batchId, ...progress };
    }
    case "NACK": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const code = lookup(errorNames, r.u16("code"), "error code");
      const refType = lookup(typeNames, r.u8("refType"), "message type");
      if (!nackable.has(refType)) throw new Malformed(`NACK of ${refType}, which is not nackable`);
      r.zero(1, "reserved");
      const refId = r.u64("refId");
      const arrivedSequence = asSequence(r.u64("arrivedSequence"));
      const text = r.text("text");
      r.end(type);
      return { type, groupHandle, code, refType: refType as NackableType, refId, arrivedSequence, text };
    }
    case "PULL": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const maxBytes = positive(r.u32("maxBytes"), "maxBytes");
      const fromSequence = asSequence(positive(r.u64("fromSequence"), "fromSequence"));
      r.end(type);
      return { type, groupHandle, fromSequence, maxBytes };
    }
    case "COPY_DATA": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const volumeId = asVolumeId(r.u32("volumeId"));
      const chunkId = r.u64("chunkId");
      const offsetBytes = r.u64("offsetBytes");
      const dataCrc = r.u32("dataCrc");
      r.zero(4, "reserved");
      const data = r.buf.subarray(r.at);
      if (data.length === 0) throw new Malformed("no data");
      if (data.length > replCopyChunkBytesMax) throw new Malformed(`${data.length} bytes of data, over ${replCopyChunkBytesMax}`);
      if (!Number.isSafeInteger(offsetBytes + data.length)) throw new Malformed("range end is 2^53 or more");
      if (checksum(data) !== dataCrc) {
        throw new BadContent({ ok: false, fatal: false, code: "BAD_RECORD", reason: "COPY_DATA: data checksum mismatch", refType: "COPY_DATA", groupHandle, refId: chunkId });
      }
      return { type, groupHandle, chunkId, volumeId, offsetBytes, data };
    }
    case "COPY_ZEROES": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      const volumeId = asVolumeId(r.u32("volumeId"));
      const chunkId = r.u64("chunkId");
      const offsetBytes = r.u64("offsetBytes");
      const lengthBytes = positive(r.u64("lengthBytes"), "lengthBytes");
      if (!Number.isSafeInteger(offsetBytes + lengthBytes)) throw new Malformed("range end is 2^53 or more");
      r.end(type);
      return { type, groupHandle, chunkId, volumeId, offsetBytes, lengthBytes };
    }
    case "COPY_DONE": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      r.zero(4, "reserved");
      const chunkId = r.u64("chunkId");
      const totalBytes = r.u64("totalBytes");
      const consistentFromSequence = asSequence(r.u64("consistentFromSequence"));
      r.end(type);
      return { type, groupHandle, chunkId, totalBytes, consistentFromSequence };
    }
    case "COPY_ACK": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      r.zero(4, "reserved");
      const chunkId = r.u64("chunkId");
      r.end(type);
      return { type, groupHandle, chunkId };
    }
    case "PING": {
      const pingId = r.u64("pingId");
      const sendTimeUs = r.u64("sendTimeUs");
      r.end(type);
      return { type, pingId, sendTimeUs };
    }
    case "PONG": {
      const pingId = r.u64("pingId");
      const echoTimeUs = r.u64("echoTimeUs");
      const replyTimeUs = r.u64("replyTimeUs");
      r.end(type);
      return { type, pingId, echoTimeUs, replyTimeUs };
    }
    case "ERROR": {
      const code = lookup(errorNames, r.u16("code"), "error code");
      const text = r.text("text");
      r.end(type);
      return { type, code, text };
    }
    case "CLOSE": {
      const text = r.text("text");
      r.end(type);
      return { type, text };
    }
    case "FENCE": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      r.zero(4, "reserved");
      const fenceId = positive(r.u64("fenceId"), "fenceId");
      const text = r.text("text");
      r.end(type);
      return { type, groupHandle, fenceId, text };
    }
    case "FENCED": {
      const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
      r.zero(4, "reserved");
      const fenceId = positive(r.u64("fenceId"), "fenceId");
      const lastAcceptedSequence = asSequence(r.u64("lastAcceptedSequence"));
      const lastWriteSequence = asSequence(r.u64("lastWriteSequence"));
      if (lastWriteSequence > lastAcceptedSequence) throw new Malformed(`lastWriteSequence ${lastWriteSequence} past lastAcceptedSequence ${lastAcceptedSequence}`);
      r.end(type);
      return { type, groupHandle, fenceId, lastAcceptedSequence, lastWriteSequence };
    }
  }
}

function sequences(r: In): { arrivedSequence: SequenceNumber; reflectedSequence: SequenceNumber } & ArrivedPosition {
  const arrivedSequence = r.u64("arrivedSequence");
  const reflectedSequence = r.u64("reflectedSequence");
  if (reflectedSequence > arrivedSequence) throw new Malformed(`reflectedSequence ${reflectedSequence} past arrivedSequence ${arrivedSequence}`);
  const arrivedWriteTimeUs = r.u64("arrivedWriteTimeUs");
  const arrivedAcceptNumber = r.u64("arrivedAcceptNumber");
  return {
    arrivedSequence: asSequence(arrivedSequence),
    reflectedSequence: asSequence(reflectedSequence),
    arrivedWriteTimeUs: asWriteTimeUs(arrivedWriteTimeUs),
    arrivedAcceptNumber: asAcceptNumber(arrivedAcceptNumber),
  };
}

function decodeBatch(r: In): ReplMessage {
  const groupHandle = positive(r.u32("groupHandle"), "groupHandle");
  const count = r.u32("recordCount");
  if (count > replBatchRecordsMax) throw new Malformed(`recordCount ${count} over ${replBatchRecordsMax}`);
  const batchId = r.u64("batchId");
  const bad = (reason: string): BadContent => new BadContent({ ok: false, fatal: false, code: "BAD_RECORD", reason: `BATCH ${batchId}: ${reason}`, refType: "BATCH", groupHandle, refId: batchId });
  const records: JournalRecord[] = [];
  let at = r.at;
  for (let i = 0; i < count; i++) {
    if (at === r.buf.length) throw bad(`${count} records declared, ${i} present`);
    const decoded = decodeRecord(r.buf, at);
    if (!decoded.ok) throw bad(`record ${i}: ${decoded.reason === "truncated" ? "cut short by the end of the frame" : decoded.detail}`);
    const previous = records[i - 1];
    if (previous !== undefined && decoded.record.sequence !== previous.sequence + 1) {
      throw bad(`record ${i} has sequence ${decoded.record.sequence} after ${previous.sequence}`);
    }
    records.push(decoded.record);
    at += decoded.bytes;
  }
  if (at !== r.buf.length) throw bad(`${r.buf.length - at} bytes after the ${count} declared records`);
  return { type: "BATCH", groupHandle, batchId, records };
}

// ---------------------------------------------------------------------------------------
// Frame assembler

export interface ReplAssemblerOptions {
  /** Which side this assembler reads for: messages addressed to the other side are refused. Default: accept all. */
  readonly receiver?: ReplRole;
  /** Largest frame accepted (header included). Default and ceiling: replFrameBytesMax. */
  readonly frameBytesMax?: number;
}

/**
 * Reassembles frames from socket chunks. Push every chunk as it arrives, then call next()
 * until it returns undefined. Chunks are queued, never concatenated on arrival: a frame
 * inside one chunk is decoded from a view of it (record payloads and copy data are views
 * of the chunk), one that spans chunks is copied once into a buffer of exactly its size
 * when its last byte arrives. A frame's declared length is checked against the limits as
 * soon as its header is complete, before any more bytes are taken in (push decodes a
 * pending header at once): at most one chunk past a checked frame is ever held.
 *
 * A fatal result is sticky: next() keeps returning it and push() drops input, so the
 * caller sends ERROR and closes. A non-fatal result (BAD_RECORD) consumed its frame and
 * the stream goes on.
 */
export class ReplFrameAssembler {
  readonly #receiver: ReplRole | undefined;
  readonly #frameBytesMax: number;
  readonly #queue = new ChunkQueue();
  #pending: { readonly type: ReplMessageType; readonly header: ReplFrameHeader } | undefined;
  #broken: ReplDecodeResult | undefined;

  constructor(options: ReplAssemblerOptions = {}) {
    this.#receiver = options.receiver;
    this.#frameBytesMax = Math.min(options.frameBytesMax ?? replFrameBytesMax, replFrameBytesMax);
    assert(this.#frameBytesMax >= replHeaderBytes + replBatchFixedBytes + journalHeaderBytes, "frameBytesMax holds a record");
  }

  /** Bytes held and not yet returned as messages. */
  get bufferedBytes(): number {
    return this.#queue.buffered;
  }

  /** True once a fatal result was returned: the stream is dead. */
  get broken(): boolean {
    return this.#broken !== undefined;
  }

  push(chunk: Buffer): void {
    if (this.#broken !== undefined || chunk.length === 0) return;
    this.#queue.push(chunk);
    if (this.#pending === undefined) this.#readHeader();
  }

  /** The next decoded message or decode failure, or undefined when more bytes are needed. */
  next(): ReplDecodeResult | undefined {
    if (this.#broken !== undefined) return this.#broken;
    if (this.#pending === undefined && !this.#readHeader()) return this.#broken;
    const pending = this.#pending;
    if (pending === undefined || this.#queue.buffered < pending.header.payloadBytes) return undefined;
    this.#pending = undefined;
    const payload = this.#queue.take(pending.header.payloadBytes);
    const covered = crcCoveredBytes(pending.type, payload.length);
    const crc = covered === 0 ? 0 : checksum(payload, 0, covered);
    if (crc !== pending.header.payloadCrc) return this.#fail("PROTOCOL", `${pending.type}: payload checksum mismatch`);
    const result = decodeReplPayload(pending.type, payload);
    if (!result.ok && result.fatal) {
      this.#broken = result;
      this.#queue.clear();
    }
    return result;
  }

  /** Decodes and checks the header if its 20 bytes are here; false when the stream broke. */
  #readHeader(): boolean {
    if (this.#queue.buffered < replHeaderBytes) return true;
    const decoded = decodeReplHeader(this.#queue.take(replHeaderBytes));
    if (!decoded.ok) {
      this.#fail("PROTOCOL", decoded.reason);
      return false;
    }
    const header = decoded.header;
    const type = typeNames.get(header.type);
    if (type === undefined) {
      this.#fail("PROTOCOL", `unknown message type ${header.type}`);
      return false;
    }
    const receiver = replReceiver[type];
    if (this.#receiver !== undefined && receiver !== "both" && receiver !== this.#receiver) {
      this.#fail("PROTOCOL", `${type} is not sent to the ${this.#receiver}`);
      return false;
    }
    const payloadBytesMax = replPayloadBytesMax(type, this.#frameBytesMax);
    if (header.payloadBytes > payloadBytesMax) {
      this.#fail("TOO_LARGE", `${type} declares ${header.payloadBytes} payload bytes, over its limit of ${payloadBytesMax}`);
      return false;
    }
    this.#pending = { type, header };
    return true;
  }

  #fail(code: ReplErrorCode, reason: string): ReplDecodeResult {
    this.#broken = { ok: false, fatal: true, code, reason };
    this.#queue.clear();
    return this.#broken;
  }
}

/**
 * Decodes a buffer that must hold exactly one whole frame (tests, the simulation, tools).
 * A partial frame or trailing bytes are a fatal PROTOCOL failure.
 */
export function decodeFrame(frame: Buffer, options: ReplAssemblerOptions = {}): ReplDecodeResult {
  const assembler = new ReplFrameAssembler(options);
  assembler.push(frame);
  const result = assembler.next();
  if (result === undefined) return { ok: false, fatal: true, code: "PROTOCOL", reason: `frame of ${frame.length} bytes is incomplete` };
  if (result.ok && assembler.bufferedBytes > 0) return { ok: false, fatal: true, code: "PROTOCOL", reason: `${assembler.bufferedBytes} bytes after the frame` };
  return result;
}
