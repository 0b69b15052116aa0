// The journal's files and errors: segment names, listing a journal directory,
// and the typed errors callers branch on.
// A segment is named by the first sequence number it holds, zero-padded to 20 digits
// so that a plain sort of the names is the sequence order.
import { join } from "node:path";
import { safeIntegerMax } from "../core/limits.ts";
import type { FileSystem } from "./fs.ts";

export const segmentFileSuffix = ".tmj";
const segmentNameDigits = 20;
const segmentNamePattern = /^(\d{20})\.tmj$/;

export function segmentFileName(firstSequence: number): string {
  if (!Number.isSafeInteger(firstSequence) || firstSequence < 1) throw new RangeError(`segment first sequence ${firstSequence} is not a positive integer`);
  return String(firstSequence).padStart(segmentNameDigits, "0") + segmentFileSuffix;
}

/** The first sequence a segment file name announces, or undefined if the name is not a segment's. */
export function parseSegmentFileName(name: string): number | undefined {
  const match = segmentNamePattern.exec(name);
  if (match === null || match[1] === undefined) return undefined;
  const sequence = Number(match[1]);
  if (!Number.isSafeInteger(sequence) || sequence < 1 || sequence > safeIntegerMax) return undefined;
  return sequence;
}

export interface SegmentFile {
  readonly firstSequence: number;
  readonly path: string;
}

/** Segment files of a journal directory in sequence order; other files are left alone. */
export async function listSegmentFiles(fs: FileSystem, dir: string): Promise<SegmentFile[]> {
  const names = await fs.readDirectory(dir);
  const segments: SegmentFile[] = [];
  for (const name of names) {
    const firstSequence = parseSegmentFileName(name);
    if (firstSequence !== undefined) segments.push({ firstSequence, path: join(dir, name) });
  }
  segments.sort((a, b) => a.firstSequence - b.firstSequence);
  return segments;
}

/**
 * Real damage found in a journal: a bad record in a segment that is not the last one,
 * a sequence gap or a segment that does not start where its name says. Never a torn
 * tail (that is cut and reported). The node must not start the group on it.
 */
export class JournalCorruptError extends Error {
  override name = "JournalCorruptError";
  readonly code = "TM_ERR_JOURNAL_CORRUPT";
  readonly path: string;
  readonly offsetBytes: number;
  readonly reason: string;
  constructor(path: string, offsetBytes: number, reason: string) {
    super(`journal damaged: ${path} at byte ${offsetBytes}: ${reason}`);
    this.path = path;
    this.offsetBytes = offsetBytes;
    this.reason = reason;
  }
}

/**
 * A record written whole (its header checksum is valid) that this version of tidemark
 * cannot read: a newer record format or kind, or fields that break the format's rules.
 * It may hold answered writes, so it is never cut off as a torn tail: the node refuses to
 * start the group and says what to do.
 */
export class JournalFormatError extends Error {
  override name = "JournalFormatError";
  readonly code = "TM_ERR_JOURNAL_FORMAT";
  readonly path: string;
  readonly offsetBytes: number;
  readonly reason: string;
  constructor(path: string, offsetBytes: number, reason: string) {
    super(`journal ${path} holds a record at byte ${offsetBytes} that this version of tidemark cannot read (${reason}); ` +
      "it was probably written by a newer tidemark: start the node with that version again. Nothing was changed on disk.");
    this.path = path;
    this.offsetBytes = offsetBytes;
    this.reason = reason;
  }
}

/** An append that would take the journal past its size limit; the sequence is not consumed. */
export class JournalFullError extends Error {
  override name = "JournalFullError";
  readonly code = "TM_ERR_JOURNAL_FULL";
  readonly usedBytes: number;
  readonly bytesMax: number;
  constructor(usedBytes: number, recordBytes: number, bytesMax: number) {
    super(`journal full: ${usedBytes} bytes used, a ${recordBytes}-byte record does not fit under ${bytesMax}`);
    this.usedBytes = usedBytes;
    this.bytesMax = bytesMax;
  }
}

/** append/sync/readFrom after close(). */
export class JournalClosedError extends Error {
  override name = "JournalClosedError";
  readonly code = "TM_ERR_JOURNAL_CLOSED";
  constructor(dir: string) {
    super(`journal ${dir} is closed`);
  }
}

/** readFrom asked for records already trimmed away. */
export class JournalTrimmedError extends Error {
  override name = "JournalTrimmedError";
  readonly code = "TM_ERR_JOURNAL_TRIMMED";
  readonly firstSequence: number;
  constructor(dir: string, sequence: number, firstSequence: number) {
    super(`journal ${dir}: sequence ${sequence} is trimmed, the journal starts at ${firstSequence}`);
    this.firstSequence = firstSequence;
  }
}
