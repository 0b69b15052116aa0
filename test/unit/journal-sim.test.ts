// Proves the REAL group journal (src/storage/journal.ts) keeps its promises over the simulated
// disk (test/sim/sim-disk.ts), on virtual time, fast-check style over seeds: random appends
// (small records on the synchronous path, large batches on the thread-pool path, segment rolls),
// group commits, trims, clean reopens, process crashes and power losses, and ENOSPC, write EIO
// and fdatasync EIO followed by a resume (O_DIRECT reopen) or a crash. After every reopen:
// every record a resolved sync() covered is there, nothing is there that was not appended (each
// append carries a unique version), order and contents are intact, a torn tail is cut (the last
// segment is whole records only), a process crash loses nothing written, and a resume recovers
// exactly the records the disk holds. A failing run prints the disk seed and the operations.
import { JournalCorruptError } from "../../src/core/errors.ts";
import { injectedFaults } from "../../src/core/faults.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { join } from "node:path";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";
import { decodeRecord, RecordKind, type JournalRecord } from "../../src/protocol/journal-record.ts";
import { GroupJournal, type JournalOptions, type RecoveryReport } from "../../src/storage/journal.ts";
import { parseSegmentFileName } from "../../src/storage/journal-files.ts";
import type { FileSystem } from "../../src/storage/fs.ts";
import { SimDisk, type CrashKind } from "../sim/sim-disk.ts";
import { VirtualTime } from "../sim/virtual-time.ts";

type Op =
  | { readonly kind: "append"; readonly count: number; readonly payloadBytes: number }
  | { readonly kind: "sync" }
  | { readonly kind: "run"; readonly ms: number }
  | { readonly kind: "trim" }
  | { readonly kind: "crash"; readonly crash: CrashKind }
  | { readonly kind: "reopen" }
  | { readonly kind: "fault"; readonly fault: "enospc" | "write-eio" | "sync-eio"; readonly then: "resume" | CrashKind };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 30, arbitrary: fc.record({ kind: fc.constant("append" as const), count: fc.integer({ min: 1, max: 24 }), payloadBytes: fc.oneof(fc.integer({ min: 0, max: 700 }), fc.integer({ min: 700, max: 6000 }), fc.integer({ min: 20_000, max: 70_000 })) }) },
  { weight: 14, arbitrary: fc.constant({ kind: "sync" as const }) },
  { weight: 14, arbitrary: fc.record({ kind: fc.constant("run" as const), ms: fc.double({ min: 0, max: 8, noNaN: true }) }) },
  { weight: 4, arbitrary: fc.constant({ kind: "trim" as const }) },
  { weight: 8, arbitrary: fc.record({ kind: fc.constant("crash" as const), crash: fc.constantFrom<CrashKind>("process", "power") }) },
  { weight: 3, arbitrary: fc.constant({ kind: "reopen" as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("fault" as const), fault: fc.constantFrom("enospc" as const, "write-eio" as const, "sync-eio" as const), then: fc.constantFrom("resume" as const, "process" as const, "power" as const) }) },
);

const dir = "/data/journals/1";
const bytesMax = 4 * 1024 * 1024;
const segmentBytesMax = 64 * 1024;

/** A record whose payload is a function of its sequence and a version unique to this append. */
function versionedRecord(sequence: number, version: number, payloadBytes: number): JournalRecord {
  const payload = Buffer.alloc(payloadBytes);
  for (let i = 0; i < payloadBytes; i += 1) payload[i] = (sequence * 31 + version * 101 + i * 7) & 0xff;
  return {
    kind: payloadBytes === 0 ? RecordKind.timeAdvance : RecordKind.write,
    volumeId: asVolumeId(1), offsetBytes: sequence * 512, lengthBytes: payloadBytes, sequence: asSequence(sequence),
    writeTimeUs: asWriteTimeUs(1_000_000 + sequence), acceptNumber: asAcceptNumber(version), markerNumber: asMarkerNumber(0), wallTimeUs: 0, payload,
  };
}

/** Figures over all runs, so the test says what it exercised. */
const seen = { runs: 0, records: 0, reopens: 0, processCrashes: 0, powerLosses: 0, tornTailsCut: 0, damagedTailsCutAfterPowerLoss: 0, damagedTailsCutAfterFailedSync: 0, resumes: 0, failures: new Map<string, number>(), asyncWrites: 0, segmentsAtEnd: 0 };

class Run {
  readonly time = new VirtualTime();
  readonly disk: SimDisk;
  fs: FileSystem;
  journal!: GroupJournal;
  /** The version last appended at each sequence (older ones were lost by a crash and must never come back). */
  readonly versions = new Map<number, { readonly version: number; readonly payloadBytes: number }>();
  nextVersion = 1;
  /** Every record through this is durable: a sync() covering it resolved, or a recovery fdatasync'd it. */
  syncedThrough = 0;
  /** trimThrough was asked to drop records through this. */
  trimBound = 0;
  /** A fault was injected since the last reopen (then a process crash may lose written records). */
  faulted = false;
  incarnation = 0;

  constructor(seed: number) {
    this.disk = new SimDisk({ seed, schedule: this.time.schedule });
    this.fs = this.disk.mount();
  }

  options(extra: Partial<JournalOptions> = {}): JournalOptions {
    return { fileSystem: this.fs, bytesMax, segmentBytesMax, nextSequence: 1, ...extra };
  }

  async start(): Promise<void> {
    await this.time.until(this.fs.makeDirectory("/data/journals"));
    await this.time.until(this.fs.syncDirectory("/data"));
    await this.time.until(this.fs.syncDirectory("/"));
    await this.open("start", {});
  }

  /**
   * Opens the journal and checks what it recovered; `expected`: exactly these sequences.
   * `operatorMayCut`: after a power loss or a failed fdatasync a hole may come before records that
   * were never durable; recovery refuses (JournalCorruptError) until the operator says to cut.
   */
  async open(why: string, extra: Partial<JournalOptions>, expected?: readonly number[], operatorMayCut = false): Promise<RecoveryReport> {
    const recovered: number[] = [];
    const attempt = async (options: JournalOptions): Promise<{ journal: GroupJournal; report: RecoveryReport }> => {
      recovered.length = 0;
      return this.time.until(GroupJournal.open(dir, options, (record) => {
        const version = this.versions.get(record.sequence);
        assert.ok(version !== undefined, `${why}: recovered sequence ${record.sequence}, never appended`);
        const want = versionedRecord(record.sequence, version.version, version.payloadBytes);
        assert.ok(record.payload.equals(want.payload) && record.acceptNumber === want.acceptNumber,
          `${why}: sequence ${record.sequence} is not the version last appended (${version.version})`);
        recovered.push(record.sequence);
      }));
    };
    let opened: { journal: GroupJournal; report: RecoveryReport };
    try {
      opened = await attempt(this.options(extra));
    } catch (error) {
      // The node then refuses to start until the operator says to cut there (--truncate-damaged-journals).
      if (!(error instanceof JournalCorruptError) || !operatorMayCut) throw error;
      if (why === "power") seen.damagedTailsCutAfterPowerLoss += 1;
      else seen.damagedTailsCutAfterFailedSync += 1;
      opened = await attempt(this.options({ ...extra, cutDamagedTail: true }));
    }
    const { journal, report } = opened;
    this.journal = journal;
    this.incarnation += 1;
    seen.reopens += 1;
    if (report.tornBytesCut > 0) seen.tornTailsCut += 1;
    for (let i = 0; i < recovered.length; i += 1) assert.equal(recovered[i], report.firstSequence + i, `${why}: contiguous and in order`);
    assert.equal(report.records, recovered.length);
    if (this.syncedThrough > this.trimBound) {
      assert.ok(report.lastSequence >= this.syncedThrough, `${why}: records through ${this.syncedThrough} were durable, recovered through ${report.lastSequence}`);
      assert.ok(report.firstSequence <= this.trimBound + 1, `${why}: trimmed only through ${this.trimBound}, recovery starts at ${report.firstSequence}`);
    }
    if (expected !== undefined) assert.deepEqual(recovered, expected, `${why}: recovers exactly what the disk holds`);
    await this.checkLastSegmentWhole(why);
    if (report.records > 0) {
      const read = await this.time.until(journal.readFrom(report.firstSequence, 64 * 1024 * 1024));
      assert.deepEqual(read.map((record) => record.sequence), recovered, `${why}: readFrom returns what recovery found`);
    }
    // Recovery fdatasync'd what it found: the journal calls it durable from now on.
    this.syncedThrough = Math.max(this.syncedThrough, report.lastSequence);
    for (const sequence of [...this.versions.keys()]) if (sequence > report.lastSequence) this.versions.delete(sequence);
    this.faulted = false;
    return report;
  }

  /** After recovery the last segment holds whole records only: a torn tail was cut. */
  async checkLastSegmentWhole(why: string): Promise<void> {
    const names = (await this.time.until(this.fs.readDirectory(dir))).filter((name) => parseSegmentFileName(name) !== undefined).sort();
    const last = names[names.length - 1];
    assert.ok(last !== undefined, `${why}: a journal has an active segment`);
    const bytes = this.disk.cachedView(join(dir, last));
    assert.ok(bytes !== undefined);
    let at = 0;
    for (;;) {
      const result = decodeRecord(bytes, at);
      if (!result.ok) break;
      at += result.bytes;
    }
    assert.equal(at, bytes.length, `${why}: the last segment is whole records (${bytes.length - at} bytes of torn tail left)`);
  }

  /** The records a resume must find: the whole records of the disk's view, in segment order, up to the first that is not. */
  async diskRecords(): Promise<number[]> {
    const names = (await this.time.until(this.fs.readDirectory(dir))).filter((name) => parseSegmentFileName(name) !== undefined).sort();
    const sequences: number[] = [];
    for (const name of names) {
      const bytes = this.disk.directView(join(dir, name));
      assert.ok(bytes !== undefined);
      let at = 0;
      for (;;) {
        const result = decodeRecord(bytes, at);
        if (!result.ok) break;
        sequences.push(result.record.sequence);
        at += result.bytes;
      }
      if (at < bytes.length) break;
    }
    return sequences;
  }

  append(count: number, payloadBytes: number): void {
    for (let i = 0; i < count; i += 1) {
      const sequence = this.journal.nextSequence;
      const version = this.nextVersion++;
      void this.journal.append(versionedRecord(sequence, version, payloadBytes)).catch(() => undefined);
      if (this.journal.lastSequence === sequence) {
        this.versions.set(sequence, { version, payloadBytes });
        seen.records += 1;
      }
    }
    if (count * payloadBytes > 256 * 1024) seen.asyncWrites += 1;
  }

  sync(): void {
    const target = this.journal.lastSequence;
    const incarnation = this.incarnation;
    this.journal.sync().then(() => {
      if (incarnation === this.incarnation) this.syncedThrough = Math.max(this.syncedThrough, target);
    }, (error: unknown) => {
      const code = (error as { code?: string }).code ?? (error as Error).name;
      seen.failures.set(code, (seen.failures.get(code) ?? 0) + 1);
    });
  }

  async crash(kind: CrashKind): Promise<void> {
    const written = this.journal.writtenSequence;
    const faulted = this.faulted;
    this.disk.crash(kind);
    this.fs = this.disk.mount();
    if (kind === "process") seen.processCrashes += 1;
    else seen.powerLosses += 1;
    const report = await this.open(kind, {}, undefined, kind === "power" || faulted);
    if (kind === "process" && !faulted) assert.ok(report.lastSequence >= written, `process crash: records written through ${written} are in the page cache, recovered through ${report.lastSequence}`);
  }

  async reopen(): Promise<void> {
    const lastAppended = this.journal.lastSequence;
    const closed = await this.time.until(this.journal.close()).then(() => true, () => false);
    const report = await this.open("reopen", {});
    if (closed) assert.equal(report.lastSequence, lastAppended, "a clean close made every appended record durable");
  }

  async fault(fault: "enospc" | "write-eio" | "sync-eio", then: "resume" | CrashKind): Promise<void> {
    this.faulted = true;
    const capacityBytes = this.disk.capacityBytes;
    const leaveBytes = Math.floor(this.time.nowMs) % 3 * 4096;
    if (fault !== "enospc") this.disk.failPath(dir, [fault === "write-eio" ? "write" : "sync"]);
    for (let round = 0; round < 8 && this.journal.failed === undefined; round += 1) {
      if (fault === "enospc") this.disk.fill(leaveBytes); // again: a trim in flight may have freed space
      this.append(6, 3000);
      this.sync();
      await this.time.runFor(6);
    }
    assert.ok(this.journal.failed !== undefined, `${fault}: the journal failed`);
    const code = (this.journal.failed as { code?: string }).code ?? "?";
    seen.failures.set(`journal ${code}`, (seen.failures.get(`journal ${code}`) ?? 0) + 1);
    assert.ok(this.journal.durableSequence <= this.journal.writtenSequence);
    // A failed journal takes nothing more and pretends nothing: appends and syncs reject.
    await assert.rejects(this.journal.append(versionedRecord(this.journal.nextSequence, 0, 10)));
    this.disk.setCapacity(capacityBytes);
    this.disk.heal();
    if (then !== "resume") {
      await this.crash(then);
      return;
    }
    // As GroupWriter.attemptResume: abandon, then re-read from the disk itself (O_DIRECT), cutting at
    // the first record that is not whole; what was durable before must all be there.
    seen.resumes += 1;
    const durableBefore = this.journal.durableSequence;
    await this.time.until(this.journal.abandon());
    const expected = await this.diskRecords();
    const report = await this.open("resume", { directRead: true, cutDamagedTail: true }, expected);
    assert.ok(report.lastSequence >= durableBefore, `resume: ${durableBefore} was durable, the disk holds records through ${report.lastSequence}`);
  }
}

async function runOps(seed: number, ops: readonly Op[]): Promise<void> {
  const run = new Run(seed);
  await run.start();
  seen.runs += 1;
  for (const op of ops) {
    switch (op.kind) {
      case "append":
        run.append(op.count, op.payloadBytes);
        break;
      case "sync":
        run.sync();
        break;
      case "run":
        await run.time.runFor(op.ms);
        break;
      case "trim": {
        if (run.journal.failed !== undefined) break;
        const through = run.journal.durableSequence;
        run.trimBound = Math.max(run.trimBound, through);
        void run.journal.trimThrough(through).catch(() => undefined);
        break;
      }
      case "crash":
        await run.crash(op.crash);
        break;
      case "reopen":
        await run.reopen();
        break;
      case "fault":
        await run.fault(op.fault, op.then);
        break;
    }
    if (run.journal.failed !== undefined && op.kind !== "fault") await run.crash("process");
  }
  seen.segmentsAtEnd += run.journal.segmentCount;
  await run.crash("power");
}

// TM_JOURNAL_SIM_RUNS=N runs N instead of 300. TM_JOURNAL_SIM_REPLAY='{"seed":1,"ops":[...]}' replays one failing run (its message prints both).
const replay = process.env["TM_JOURNAL_SIM_REPLAY"];

void test("property: the real journal over the simulated disk keeps every synced record through crashes, power losses and I/O errors", async () => {
  if (replay !== undefined) {
    const { seed, ops } = JSON.parse(replay) as { seed: number; ops: Op[] };
    await runOps(seed, ops);
    return;
  }
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.array(opArb, { minLength: 5, maxLength: 60 }), async (seed, ops) => {
      try {
        await runOps(seed, ops);
      } catch (error) {
        throw new Error(`replay: TM_JOURNAL_SIM_REPLAY='${JSON.stringify({ seed, ops })}' node --test test/unit/journal-sim.test.ts: ${(error as Error).message}`, { cause: error });
      }
    }),
    { numRuns: Number(process.env["TM_JOURNAL_SIM_RUNS"] ?? 300) },
  );
  const failures = Object.fromEntries(seen.failures);
  console.log(JSON.stringify({ ...seen, failures }));
  assert.ok(seen.powerLosses > 200 && seen.processCrashes > 100 && seen.resumes > 20 && seen.tornTailsCut > 20, "the runs exercised crashes, power losses, torn tails and resumes");
});

// The historical fault replay-before-durable (seed 1985 found it): recovery handed records a
// dead process left in the page cache to the volumes before making them durable, and a power
// loss during the replay then took them from the journal while the volumes kept them. The
// whole-node simulation reaches that window rarely, so it is put back here, where it is
// reached on every run: a process crash with appended records never synced, a recovery that
// loses power while it hands them out, then a recovery that must still find every one of them.
async function powerLossDuringReplay(seed: number): Promise<{ handed: number; found: number }> {
  const run = new Run(seed);
  await run.start();
  run.append(12, 300);
  await run.time.runFor(1);
  run.disk.crash("process");
  let fs = run.disk.mount();
  const handed: number[] = [];
  let crashed = false;
  // Never settles: the power goes while it runs, and a dead process's calls never complete.
  void GroupJournal.open(dir, { ...run.options(), fileSystem: fs }, (record) => {
    handed.push(record.sequence);
    if (handed.length === 12 && !crashed) {
      crashed = true;
      run.disk.crash("power");
    }
  }).catch(() => undefined);
  for (let i = 0; i < 100 && !crashed; i += 1) await run.time.runFor(1);
  assert.ok(crashed, "the recovery handed out the 12 records the process left in the page cache");
  fs = run.disk.mount();
  const found: number[] = [];
  const { journal } = await run.time.until(GroupJournal.open(dir, { ...run.options(), fileSystem: fs, cutDamagedTail: true }, (record) => {
    found.push(record.sequence);
  }));
  await run.time.until(journal.close());
  return { handed: handed.length, found: found.length };
}

void test("a recovery makes the records it replays durable first: a power loss during the replay keeps them (replay-before-durable, put back, is caught)", async () => {
  for (let seed = 1; seed <= 20; seed += 1) {
    const { handed, found } = await powerLossDuringReplay(seed);
    assert.ok(found >= handed, `seed ${seed}: the replay handed out ${handed} records, the next recovery found ${found}`);
  }
  let lost = 0;
  try {
    injectedFaults.add("replay-before-durable");
    for (let seed = 1; seed <= 20; seed += 1) {
      const { handed, found } = await powerLossDuringReplay(seed);
      if (found < handed) lost += 1;
    }
  } finally {
    injectedFaults.clear();
  }
  assert.ok(lost > 0, "with the fault put back, a power loss during the replay took records it had handed out");
});
