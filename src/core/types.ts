// Branded numeric types so that a sequence number, a write time and a byte offset
// can never be passed where another is expected. All are plain numbers at run time
// (every value we use stays below 2^53; see limits.ts).

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Per-group sequence number: 1, 2, 3, ... without gaps (patent: sequential number). */
export type SequenceNumber = Brand<number, "SequenceNumber">;
/** Write time in microseconds (since the epoch for `host`/`clock`, a counter for `counter`). */
export type WriteTimeUs = Brand<number, "WriteTimeUs">;
/** Node-wide order in which writes were accepted; breaks write-time ties across groups. */
export type AcceptNumber = Brand<number, "AcceptNumber">;
/** Node-local numeric id of a volume, stable for the volume's life. */
export type VolumeId = Brand<number, "VolumeId">;
/** Node-local numeric id of a consistency group, stable for the group's life. */
export type GroupId = Brand<number, "GroupId">;
/** Marker (consistency point) number: 1, 2, 3, ... per group. */
export type MarkerNumber = Brand<number, "MarkerNumber">;

export const asSequence = (n: number): SequenceNumber => n as SequenceNumber;
export const asWriteTimeUs = (n: number): WriteTimeUs => n as WriteTimeUs;
export const asAcceptNumber = (n: number): AcceptNumber => n as AcceptNumber;
export const asVolumeId = (n: number): VolumeId => n as VolumeId;
export const asGroupId = (n: number): GroupId => n as GroupId;
export const asMarkerNumber = (n: number): MarkerNumber => n as MarkerNumber;

export type WriteTimePolicy = "host" | "clock" | "counter";
export const writeTimePolicies: readonly WriteTimePolicy[] = ["host", "clock", "counter"];
