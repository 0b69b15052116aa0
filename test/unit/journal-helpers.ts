// Shared helpers of the journal tests: deterministic records, temp dirs, segment files.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";
import { decodeRecord, RecordKind, type JournalRecord } from "../../src/protocol/journal-record.ts";
import { GroupJournal, type JournalOptions, type RecoveryReport } from "../../src/storage/journal.ts";

/** A record whose payload bytes are a function of its sequence, so content can be checked after a reopen. */
export function makeRecord(sequence: number, payloadBytes = 100): JournalRecord {
  const payload = Buffer.alloc(payloadBytes);
  for (let i = 0; i < payloadBytes; i += 1) payload[i] = (sequence * 31 + i * 7) & 0xff;
  return {
    kind: payloadBytes === 0 ? RecordKind.timeAdvance : RecordKind.write,
    volumeId: asVolumeId(7),
    offsetBytes: sequence * 512,
    lengthBytes: payloadBytes,
    sequence: asSequence(sequence),
    writeTimeUs: asWriteTimeUs(1_000_000 + sequence),
    acceptNumber: asAcceptNumber(sequence * 2),
    markerNumber: asMarkerNumber(0),
    wallTimeUs: 1_700_000_000_000_000 + sequence,
    payload,
  };
}

/** True if `record` is what makeRecord(sequence, its length) produced. */
export function isExpectedRecord(record: JournalRecord, sequence: number): boolean {
  const expected = makeRecord(sequence, record.payload.length);
  return record.sequence === sequence && record.kind === expected.kind && record.offsetBytes === expected.offsetBytes &&
    record.writeTimeUs === expected.writeTimeUs && record.acceptNumber === expected.acceptNumber && record.payload.equals(expected.payload);
}

export async function tempDir(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `tm-journal-${label}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface Reopened {
  readonly journal: GroupJournal;
  readonly report: RecoveryReport;
  readonly sequences: number[];
  readonly allExpected: boolean;
}

/** Opens a journal, collecting the recovered sequences and checking each record's content. */
export async function reopen(dir: string, options: JournalOptions): Promise<Reopened> {
  const sequences: number[] = [];
  let allExpected = true;
  const { journal, report } = await GroupJournal.open(dir, options, (record) => {
    sequences.push(record.sequence);
    if (!isExpectedRecord(record, record.sequence)) allExpected = false;
  });
  return { journal, report, sequences, allExpected };
}

/** Segment file paths of a journal directory, in order. */
export async function segmentPaths(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith(".tmj")).sort().map((name) => join(dir, name));
}

/** Byte offset at which each record of a segment file starts, plus the file's end. */
export async function recordOffsets(path: string): Promise<{ offsets: number[]; sequences: number[]; endBytes: number }> {
  const bytes = await readFile(path);
  const offsets: number[] = [];
  const sequences: number[] = [];
  let at = 0;
  for (;;) {
    const result = decodeRecord(bytes, at);
    if (!result.ok) break;
    offsets.push(at);
    sequences.push(result.record.sequence);
    at += result.bytes;
  }
  return { offsets, sequences, endBytes: at };
}

export function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i += 1) out.push(i);
  return out;
}
