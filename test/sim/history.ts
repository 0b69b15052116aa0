// What the simulated hosts did, and the checks of the images against it (issue 7 item 3).
// Every host write puts self-describing 512-byte blocks into fresh blocks of a volume (a write
// never overwrites another), so an image tells exactly which writes it holds:
//  - I1 (dependent-write consistency): if write w2 was issued after write w1 was answered,
//    an image set (the volumes of one consistency domain) never holds w2 without w1;
//  - I3 (durability): after a crash of the primary, every write answered before a FLUSH or
//    FUA that succeeded is in its image;
//  - intact: every non-zero block is a whole block of this run, where its write put it.
import { checksum } from "../../src/protocol/bytes.ts";

export const simBlockBytes = 512;
const magic = 0x4d495354; // "TSIM"

export interface HostWrite {
  readonly id: number;
  readonly host: number;
  readonly volume: string;
  readonly firstBlock: number;
  readonly blocks: number;
  /** Virtual ms when the host issued it. */
  readonly issuedAtMs: number;
  /**
   * Where the issue and the answer fall in the history's order of events: several can happen
   * in one virtual millisecond, so "answered before that was issued" compares these, not ms.
   */
  readonly issuedStep: number;
  answeredStep: number | undefined;
  answeredAtMs: number | undefined;
  failed: boolean;
  /** A FLUSH or FUA that the host saw succeed covered it (I3). */
  flushed: boolean;
  /**
   * Answered, not flushed, and the primary lost power or a write failed afterwards: like any block device it may
   * or may not still hold it (without a FLUSH there is no order), so it constrains nothing.
   */
  uncertain: boolean;
}

export function encodeSimBlock(runId: number, writeId: number, volumeTag: number, blockIndex: number): Buffer {
  const block = Buffer.alloc(simBlockBytes);
  encodeSimBlockInto(block, 0, runId, writeId, volumeTag, blockIndex);
  return block;
}

/** encodeSimBlock into `into` at atBytes (every one of the block's bytes is written). */
export function encodeSimBlockInto(into: Buffer, atBytes: number, runId: number, writeId: number, volumeTag: number, blockIndex: number): void {
  into.writeUInt32LE(magic, atBytes);
  into.writeUInt32LE(runId >>> 0, atBytes + 4);
  into.writeUInt32LE(writeId, atBytes + 8);
  into.writeUInt32LE(volumeTag, atBytes + 12);
  into.writeUInt32LE(blockIndex, atBytes + 16);
  const fill = Math.imul(writeId, 2654435761);
  for (let at = 20; at < simBlockBytes - 4; at += 4) into.writeUInt32LE((fill ^ at) >>> 0, atBytes + at);
  into.writeUInt32LE(checksum(into, atBytes, atBytes + simBlockBytes - 4), atBytes + simBlockBytes - 4);
}

/** Write ids found in an image, with how many of their blocks; problems for torn or foreign blocks. */
export function decodeSimImage(image: Buffer, runId: number, volumeTag: number): { blocks: Map<number, number>; problems: string[] } {
  const blocks = new Map<number, number>();
  const problems: string[] = [];
  for (let index = 0; index * simBlockBytes < image.length; index++) {
    const block = image.subarray(index * simBlockBytes, (index + 1) * simBlockBytes);
    if (block.readUInt32LE(0) === 0 && block.every((b) => b === 0)) continue;
    if (block.readUInt32LE(0) !== magic || block.readUInt32LE(simBlockBytes - 4) !== checksum(block, 0, simBlockBytes - 4)) {
      problems.push(`volume tag ${volumeTag} block ${index}: torn or foreign bytes`);
      continue;
    }
    if (block.readUInt32LE(4) !== runId >>> 0 || block.readUInt32LE(12) !== volumeTag || block.readUInt32LE(16) !== index) {
      problems.push(`volume tag ${volumeTag} block ${index}: a block of write ${block.readUInt32LE(8)} that belongs elsewhere`);
      continue;
    }
    const id = block.readUInt32LE(8);
    blocks.set(id, (blocks.get(id) ?? 0) + 1);
  }
  return { blocks, problems };
}

/** How many blocks of write `write` hold it whole (its id, its place), in `blocks` (its range, read at once). */
export function countSimBlocks(blocks: Buffer | undefined, write: HostWrite, runId: number, volumeTag: number): number {
  if (blocks === undefined) return 0;
  let whole = 0;
  for (let k = 0; k < write.blocks; k++) {
    if (isSimBlockOf(blocks, k * simBlockBytes, write, k, runId, volumeTag)) whole += 1;
  }
  return whole;
}

/** Whether the 512 bytes at atBytes of `bytes` are block k of `write`, whole (its id, its place, its checksum). */
export function isSimBlockOf(bytes: Buffer, atBytes: number, write: HostWrite, k: number, runId: number, volumeTag: number): boolean {
  const at = atBytes;
  if (bytes.readUInt32LE(at) !== magic || bytes.readUInt32LE(at + 8) !== write.id || bytes.readUInt32LE(at + 4) !== runId >>> 0) return false;
  if (bytes.readUInt32LE(at + 12) !== volumeTag || bytes.readUInt32LE(at + 16) !== write.firstBlock + k) return false;
  return bytes.readUInt32LE(at + simBlockBytes - 4) === checksum(bytes, at, at + simBlockBytes - 4);
}

export class History {
  readonly runId: number;
  private readonly writes: HostWrite[] = [];
  private readonly byId = new Map<number, HostWrite>();
  private readonly byVolume = new Map<string, HostWrite[]>();

  constructor(runId: number) {
    this.runId = runId;
  }

  /** The order of events (issues, answers, flushes) so far. */
  private stepCount = 0;

  /** The next step in the history's order of events. */
  nextStep(): number {
    this.stepCount += 1;
    return this.stepCount;
  }

  add(write: Omit<HostWrite, "id" | "issuedStep" | "answeredStep" | "answeredAtMs" | "failed" | "flushed" | "uncertain">): HostWrite {
    const full: HostWrite = { ...write, id: this.writes.length + 1, issuedStep: this.nextStep(), answeredStep: undefined, answeredAtMs: undefined, failed: false, flushed: false, uncertain: false };
    this.writes.push(full);
    this.byId.set(full.id, full);
    const forVolume = this.byVolume.get(full.volume);
    if (forVolume === undefined) this.byVolume.set(full.volume, [full]);
    else forVolume.push(full);
    return full;
  }

  get(id: number): HostWrite | undefined {
    return this.byId.get(id);
  }

  all(): readonly HostWrite[] {
    return this.writes;
  }

  /** The writes issued to `volume`, in issue order. */
  ofVolume(volume: string): readonly HostWrite[] {
    return this.byVolume.get(volume) ?? [];
  }

  /**
   * I1 over one consistency domain: `present` maps each write id (of the domain's volumes)
   * found whole in the images. Returns one line per violation (at most a few).
   */
  checkDependentWrites(present: ReadonlySet<number>, volumes: ReadonlySet<string>): string[] {
    // The earliest answer of a write of the domain that is not there: nothing issued after it may be.
    let missingAnswered: HostWrite | undefined;
    for (const write of this.writes) {
      if (!volumes.has(write.volume) || write.answeredStep === undefined || write.uncertain || present.has(write.id)) continue;
      if (missingAnswered?.answeredStep === undefined || write.answeredStep < missingAnswered.answeredStep) missingAnswered = write;
    }
    if (missingAnswered?.answeredStep === undefined) return [];
    const bound = missingAnswered.answeredStep;
    const boundMs = missingAnswered.answeredAtMs ?? 0;
    const violations: string[] = [];
    for (const id of present) {
      const write = this.byId.get(id);
      if (write === undefined) {
        violations.push(`write ${id} is in the image but was never issued`);
        continue;
      }
      if (write.issuedStep > bound) {
        violations.push(`I1: write ${id} (${write.volume}, issued at ${write.issuedAtMs} ms) is in the image without write ${missingAnswered.id} ` +
          `(${missingAnswered.volume}, answered at ${boundMs} ms, before it was issued)`);
        if (violations.length >= 3) break;
      }
    }
    return violations;
  }

  /**
   * The primary lost power, or a journal write or fdatasync of it failed: what it answered and
   * no FLUSH covered may be gone, as on any block device.
   */
  primaryMayHaveLost(): void {
    for (const write of this.writes) if (!write.flushed) write.uncertain = true;
  }

  /** I3: writes of `volumes` that a successful FLUSH or FUA covered and that are not in `present`. */
  missingFlushed(present: ReadonlySet<number>, volumes: ReadonlySet<string>): HostWrite[] {
    return this.writes.filter((write) => volumes.has(write.volume) && write.flushed && !present.has(write.id));
  }
}
