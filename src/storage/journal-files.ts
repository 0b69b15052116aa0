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

