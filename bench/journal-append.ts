// Journal hot-path figure: appends/s of 4 KiB write records with a group-commit sync()
// every 32 records, on real files (os.tmpdir() unless JOURNAL_BENCH_DIR is set).
// Two shapes: "serial" (await each batch of 32 appends and its sync, like one client at
// queue depth 32) and "pipelined" (8 such clients at once, like 8 connections).
// Run: node bench/journal-append.ts [records]
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../src/core/types.ts";
import { RecordKind, type JournalRecord } from "../src/protocol/journal-record.ts";
import { GroupJournal } from "../src/storage/journal.ts";
import { nodeFileSystem } from "../src/storage/node-fs.ts";

const recordCount = Number(process.argv[2] ?? 100_000);
const payloadBytes = 4096;
const syncEvery = 32;
const payload = Buffer.alloc(payloadBytes, 0xab);

function record(sequence: number): JournalRecord {
  return {
    kind: RecordKind.write, volumeId: asVolumeId(1), offsetBytes: (sequence % 1000) * payloadBytes, lengthBytes: payloadBytes,
    sequence: asSequence(sequence), writeTimeUs: asWriteTimeUs(sequence), acceptNumber: asAcceptNumber(sequence), markerNumber: asMarkerNumber(0), wallTimeUs: 1_700_000_000_000_000 + sequence, payload,
  };
}

async function run(shape: "serial" | "pipelined", clients: number): Promise<void> {
  const dir = await mkdtemp(join(process.env["JOURNAL_BENCH_DIR"] ?? tmpdir(), "tm-journal-bench-"));
  try {
    const { journal } = await GroupJournal.open(dir, { fileSystem: nodeFileSystem, bytesMax: 64 * 1024 ** 3, nextSequence: 1 }, () => undefined);
    let next = 1;
    const started = process.hrtime.bigint();
    const latenciesUs: number[] = [];
    const client = async (): Promise<void> => {
      while (next <= recordCount) {
        const t0 = process.hrtime.bigint();
        const appended: Promise<void>[] = [];
        for (let i = 0; i < syncEvery && next <= recordCount; i += 1) appended.push(journal.append(record(next++)));
        await Promise.all(appended);
        await journal.sync();
        latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
    };
    await Promise.all(Array.from({ length: clients }, client));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    await journal.close();
    latenciesUs.sort((a, b) => a - b);
    const p = (q: number): number => Math.round(latenciesUs[Math.min(latenciesUs.length - 1, Math.floor(q * latenciesUs.length))] ?? 0);
    console.log(JSON.stringify({
      shape, clients, records: recordCount, payloadBytes, syncEvery,
      appendsPerSecond: Math.round(recordCount / seconds), mibPerSecond: +((journal.bytesWritten / 1048576) / seconds).toFixed(1),
      writevs: journal.writevCount, fsyncs: journal.fsyncCount, recordsPerWritev: +(recordCount / journal.writevCount).toFixed(1),
      syncBatchLatencyUs: { p50: p(0.5), p99: p(0.99) },
    }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await run("serial", 1);
await run("pipelined", 8);
