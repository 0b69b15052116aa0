// The narrow contract between the front ends (NBD, host protocol) and the ingest that
// owns volumes and journals. Front ends validate wire input at the edge, then call this;
// errors come back as VolumeIoError with a code each front end maps to its own errno.


export interface WriteOptions {
  /** Answer only once this write is durable (NBD FUA). */
  readonly fua: boolean;
  /** Write time supplied by a timestamping host, microseconds since the epoch. */
  readonly hostWriteTimeUs?: number | undefined;
  /**
   * The front end lends the payload past the answer: the ingest keeps `data` (no copy) and
   * calls this exactly once when it no longer reads it (after the write reached the volume,
   * or failed); until then the front end must not reuse the buffer. Without it the ingest
   * copies what it must keep (the volume is written after the answer: journal before volume).
   */
  readonly onPayloadFree?: (() => void) | undefined;
}

/** One volume as a front end sees it. Offsets and lengths are already range-checked. */
export interface VolumeHandle {
  readonly name: string;
  readonly sizeBytes: number;
  /** A pair's target is read-only (it shows the reflected image). */
  readonly readOnly: boolean;
  /**
   * The volume's bytes [offsetBytes, offsetBytes + lengthBytes). With `into` (exactly
   * lengthBytes long) they are read into it and it is returned; it is borrowed until the
   * promise settles (the NBD server reads into pooled buffers it reuses, so churn of large
   * READs allocates nothing). Without it, or if an implementation ignores it, a new buffer.
   */
  read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer>;
  /**
   * `data` is borrowed until the returned promise settles: the front end may reuse the
   * buffer afterwards (the NBD server recycles payload slots), so anything that keeps a
   * payload longer (the sender's record tail) copies it.
   */
  write(offsetBytes: number, data: Buffer, options: WriteOptions): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void>;
  /** Treated as writing zeroes, so both sites hold the same bytes. */
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void>;
  /** Every write answered before this call is durable once it resolves. */
  flush(): Promise<void>;
  /**
   * The front end is done with this handle (its connection, or its host-protocol slot, closed).
   * Idempotent. A volume with handles not released cannot be deleted (volume delete says who
   * holds it); operations already started through it finish.
   */
  release(): void;
}

export interface ExportDescription {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
}

/** What the front ends can open. */
export interface VolumeCatalog {
  open(name: string): VolumeHandle | undefined;
  list(): readonly ExportDescription[];
}
