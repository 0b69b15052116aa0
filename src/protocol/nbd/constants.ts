// NBD wire constants (NetworkBlockDevice/nbd doc/proto.md). Every number on the wire
// has a name here; the codecs and the server use only these names.

/** "NBDMAGIC", first 8 bytes the server sends. */
export const nbdInitMagicHi = 0x4e42444d;
export const nbdInitMagicLo = 0x41474943;
/** "IHAVEOPT": the newstyle magic, sent by the server after NBDMAGIC and by the client before every option. */
export const nbdOptMagicHi = 0x49484156;
export const nbdOptMagicLo = 0x454f5054;
/** Magic of every fixed-newstyle option reply (0x0003e889045565a9). */
export const nbdRepMagicHi = 0x0003e889;
export const nbdRepMagicLo = 0x045565a9;
/** Transmission request and simple reply magics. */
export const nbdRequestMagic = 0x25609513;
export const nbdSimpleReplyMagic = 0x67446698;

/** Fixed sizes of wire structures, in bytes. */
export const nbdGreetingBytes = 18;
export const nbdClientFlagsBytes = 4;
export const nbdOptionHeaderBytes = 16;
export const nbdOptionReplyHeaderBytes = 20;
export const nbdRequestHeaderBytes = 28;
export const nbdSimpleReplyHeaderBytes = 16;
/** Reserved zeroes after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const nbdExportNameZeroesBytes = 124;

/** Handshake flags (server, u16). */
export const HandshakeFlag = {
  fixedNewstyle: 1 << 0,
  noZeroes: 1 << 1,
} as const;

/** Client flags (u32). Any other bit makes the server drop the connection. */
export const ClientFlag = {
  fixedNewstyle: 1 << 0,
  noZeroes: 1 << 1,
} as const;
export const clientFlagsKnown = ClientFlag.fixedNewstyle | ClientFlag.noZeroes;

/** Option types (u32). */
export const Opt = {
  exportName: 1,
  abort: 2,
  list: 3,
  peekExport: 4,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
  extendedHeaders: 11,
} as const;

/** Option reply types (u32). Errors have bit 31 set. */
export const Rep = {
  ack: 1,
  server: 2,
  info: 3,
  metaContext: 4,
  errUnsup: 0x8000_0001,
  errPolicy: 0x8000_0002,
  errInvalid: 0x8000_0003,
  errPlatform: 0x8000_0004,
  errTlsReqd: 0x8000_0005,
  errUnknown: 0x8000_0006,
  errShutdown: 0x8000_0007,
  errBlockSizeReqd: 0x8000_0008,
  errTooBig: 0x8000_0009,
} as const;

/** Information types inside NBD_REP_INFO and in NBD_OPT_INFO/GO requests (u16). */
export const Info = {
  export: 0,
  name: 1,
  description: 2,
  blockSize: 3,
} as const;

/** Transmission flags (u16) sent with the export's size. */
export const TransmissionFlag = {
  hasFlags: 1 << 0,
  readOnly: 1 << 1,
  sendFlush: 1 << 2,
  sendFua: 1 << 3,
  rotational: 1 << 4,
  sendTrim: 1 << 5,
  sendWriteZeroes: 1 << 6,
  sendDf: 1 << 7,
  canMultiConn: 1 << 8,
  sendResize: 1 << 9,
  sendCache: 1 << 10,
  sendFastZero: 1 << 11,
} as const;

/** What tidemark serves on every export; READ_ONLY is added per export. */
export const transmissionFlagsServed =
  TransmissionFlag.hasFlags | TransmissionFlag.sendFlush | TransmissionFlag.sendFua |
  TransmissionFlag.sendTrim | TransmissionFlag.sendWriteZeroes | TransmissionFlag.canMultiConn;

/** Command types (u16). */
export const Cmd = {
  read: 0,
  write: 1,
  disc: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
  resize: 8,
} as const;

/** Command flags (u16). */
export const CmdFlag = {
  fua: 1 << 0,
  noHole: 1 << 1,
  df: 1 << 2,
  reqOne: 1 << 3,
  fastZero: 1 << 4,
  payloadLen: 1 << 5,
} as const;

/** Error values in simple replies (the protocol's own numbering, Linux values). */
export const NbdErrno = {
  ok: 0,
  eperm: 1,
  eio: 5,
  enomem: 12,
  einval: 22,
  enospc: 28,
  eoverflow: 75,
  enotsup: 95,
  eshutdown: 108,
} as const;

/** Block sizes advertised in NBD_INFO_BLOCK_SIZE (the maximum comes from limits.ts). */
export const nbdBlockSizeMinBytes = 1;
export const nbdBlockSizePreferredBytes = 4096;
