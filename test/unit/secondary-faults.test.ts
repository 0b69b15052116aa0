// Three historical faults of the secondary (src/core/faults.ts), each put back in the exact
// situation that exposes it, where the whole-node simulation reaches it only on rare seeds
// (their windows move whenever the schedule changes). The REAL secondary role
// (src/secondary/secondary-role.ts: its groups, receivers, journals, reflector, checkpoints and
// metadata store; for a takeover, its fence step, secondary/fence-primary.ts, called as the
// role's takeover calls it) runs over the simulated disk on virtual time; a few lines of test
// play the primary and the replication listener. Each scenario is checked without the fault (the invariant holds) and with it put
// back (the same check fails):
// - no-trim-at-start (seed 1267): a restart between a checkpoint's save and its trim must trim
//   at start, or a journal full of checkpointed records refuses every batch for ever;
// - silent-received-loss (seeds 869, 1354, 1875): records answered as received and lost to a
//   failed fdatasync must be asked for again (the streams close), or the primary, which
//   counts them as received, never sends them again and the pair stops for good;
// - fenced-group-holds-frontier (seed 8050): during a takeover's wait for what the fenced
//   primary accepted, a fenced group whose records have all arrived must stop holding the
//   frontier, or the other group's full journal keeps the rest from arriving and the takeover
//   is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { injectedFaults, type HistoricalFault } from "../../src/core/faults.ts";
import { asAcceptNumber, asMarkerNumber, asSequence, asVolumeId, asWriteTimeUs } from "../../src/core/types.ts";
import type { GroupRecord, SecondaryRecord } from "../../src/metadata/metadata.ts";
import { MetadataStore } from "../../src/metadata/metadata-store.ts";
import { RecordKind, type JournalRecord } from "../../src/protocol/journal-record.ts";
import { fencePrimary, type PrimaryFence } from "../../src/secondary/fence-primary.ts";
import type { FenceAnswer, SecondaryStreams } from "../../src/secondary/repl-server.ts";
import type { SecondaryGroup } from "../../src/secondary/secondary-group.ts";
import { SecondaryRole, type RegistryVolume } from "../../src/secondary/secondary-role.ts";
import { makeDirectoryDurable } from "../../src/storage/durable-fs.ts";
import type { FileSystem } from "../../src/storage/fs.ts";
import { GroupJournal } from "../../src/storage/journal.ts";
import { VolumeFile } from "../../src/storage/volume-file.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { SimDisk, type SimDiskOptions } from "../sim/sim-disk.ts";
import { VirtualTime } from "../sim/virtual-time.ts";

const dataDir = "/data";
const volumeBytes = 1024 * 1024;
/** The primary's id of every group's one volume (as the records name it). */
const primaryVolumeId = 7;
/** A record of exactly one 4 KiB page (64-byte header + 4032 bytes). */
const pagePayloadBytes = 4096 - 64;

/** A host write of one page from primary A: sequence `sequence` at write time `writeTimeUs`. */
function write(sequence: number, writeTimeUs: number): JournalRecord {
  return {
    kind: RecordKind.write, volumeId: asVolumeId(primaryVolumeId), offsetBytes: (sequence % 200) * 4096, lengthBytes: pagePayloadBytes,
    sequence: asSequence(sequence), writeTimeUs: asWriteTimeUs(writeTimeUs), acceptNumber: asAcceptNumber(sequence), markerNumber: asMarkerNumber(0),
    wallTimeUs: 0, payload: Buffer.alloc(pagePayloadBytes, sequence & 0xff),
  };
}

/** A secondary node's role over the simulated disk, on virtual time, with the replication listener played by the test. */
class Secondary {
  readonly time = new VirtualTime();
  readonly disk: SimDisk;
  readonly clock: SimClock;
  readonly fs: FileSystem;
  /** closeStreams the role asked of the replication listener. */
  readonly closed: { readonly group: string; readonly why: string }[] = [];
  /** What the primary answers to FENCE, by group name. */
  readonly fenceAnswers = new Map<string, FenceAnswer>();
  /** The replication listener as the role sees it (FENCE answered from fenceAnswers). */
  readonly streams: SecondaryStreams;
  private readonly volumes = new Map<number, RegistryVolume>();
  private readonly store: MetadataStore;
  readonly role: SecondaryRole;

  constructor(seed: number, disk: Partial<SimDiskOptions> = {}) {
    this.disk = new SimDisk({ seed, schedule: this.time.schedule, ...disk });
    this.clock = new SimClock(this.time.scheduler);
    this.fs = this.disk.mount();
    const logger = pino({ level: "silent" });
    this.store = new MetadataStore({ fileSystem: this.fs, dataDir, logger, writeTime: () => ({ recordedWriteTimeUs: asWriteTimeUs(0), lastAcceptNumber: asAcceptNumber(0) }), critical: (_what, save) => save() });
    const journalDir = (record: Pick<GroupRecord, "id">): string => `${dataDir}/journals/${record.id}`;
    this.role = new SecondaryRole({
      nodeId: "B", logger, clock: this.clock, fileSystem: this.fs, replAddress: () => "B:7400", journalBytesMax: 1 << 20,
      metadata: () => this.store.current,
      updateMetadata: (change, critical) => this.store.update(change, critical),
      withSpaceReserve: (_what, save) => save(),
      volumes: {
        byName: (name) => [...this.volumes.values()].find((v) => v.name === name),
        byId: (id) => this.volumes.get(id),
        create: () => Promise.reject(new Error("no volume create in this test")),
        setSecondary: () => undefined,
        grow: () => Promise.reject(new Error("no resize in this test")),
      },
      reserveGroupId: () => this.store.current.nextGroupId,
      journalDir,
      openJournal: (record, options, onRecord) => GroupJournal.open(journalDir(record), { ...options, fileSystem: this.fs }, onRecord),
      becomeWritable: () => {
        throw new Error("no takeover conversion in this test");
      },
    });
    this.streams = {
      roomAgain: () => undefined,
      schedulePulls: () => undefined,
      closeStreams: (group, why) => {
        this.closed.push({ group: group.name, why });
      },
      reportReflected: () => undefined,
      fence: (group) => ({ answer: Promise.resolve(this.fenceAnswers.get(group.name) ?? { kind: "no-stream" }), cancel: () => undefined }),
    };
    this.role.connectStreams(this.streams);
  }

  /** Runs the simulation until `promise` settles. */
  run<T>(promise: Promise<T>): Promise<T> {
    return this.time.until(promise);
  }

  async start(): Promise<void> {
    for (const dir of [dataDir, `${dataDir}/volumes`, `${dataDir}/journals`]) await this.run(makeDirectoryDurable(this.fs, dir));
    await this.run(this.store.load("B", "2026-01-01T00:00:00.000Z", 64 * 1024));
  }

  /**
   * A replicating secondary group of primary A (reflect time: A's groups are one consistency
   * domain), one volume, a journal of `journalBytesMax`; `fill` writes records into its journal
   * before the group is recovered (what a previous run of the node left), and `reflectedSequence`
   * is its last checkpoint. Recovered as at a node start.
   */
  async addGroup(id: number, journalBytesMax: number, options: { fill?: (journal: GroupJournal) => Promise<void>; reflectedSequence?: number; reflectedWriteTimeUs?: number } = {}): Promise<SecondaryGroup> {
    const name = `g${id}`;
    const file = await this.run(VolumeFile.create(this.fs, `${dataDir}/volumes/${name}.vol`, volumeBytes));
    this.volumes.set(id, { id, name, sizeBytes: volumeBytes, file, owner: name });
    const dir = `${dataDir}/journals/${id}`;
    await this.run(makeDirectoryDurable(this.fs, dir));
    if (options.fill !== undefined) {
      const { journal } = await this.run(GroupJournal.open(dir, { fileSystem: this.fs, bytesMax: journalBytesMax, nextSequence: 1 }));
      await this.run(options.fill(journal));
      await this.run(journal.close());
    }
    const secondary: SecondaryRecord = {
      pairId: `p-${name}`, primaryNode: "A", primaryGroup: name, transfer: "push", streams: 1, reflect: "time", state: "replicating",
      startSequence: 1, consistentFromSequence: 0, reflectedSequence: options.reflectedSequence ?? 0, reflectedWriteTimeUs: options.reflectedWriteTimeUs ?? 0,
      reflectedAcceptNumber: options.reflectedSequence ?? 0, volumes: [{ primaryVolumeId, volumeId: id }], takeover: null,
    };
    const record: GroupRecord = {
      id, name, volumeIds: [id], checkpointSequence: 0, nextSequence: 1, journalBytesMax, createdAt: "2026-01-01T00:00:00.000Z", secondary,
    };
    await this.run(this.store.update((m) => {
      m.nextGroupId = Math.max(m.nextGroupId, id + 1);
      m.nextVolumeId = Math.max(m.nextVolumeId, id + 1);
      m.volumes.push({ id, name, sizeBytes: volumeBytes, fileName: `${name}.vol`, createdAt: record.createdAt });
      m.groups.push(record);
    }));
    await this.run(this.role.recover(structuredClone(record), structuredClone(secondary)));
    const group = this.role.findSecondary(name);
    assert.ok(group !== undefined);
    group.streams.add(1); // one replication stream open (the primary is reachable)
    return group;
  }

  /**
   * The primary sends `records` in order, one batch each, from the first the group has not
   * arrived: a refused batch (journal full, stopped) is sent again 5 ms later. Gives up after
   * `forMs` of virtual time; resolves with the group's arrived sequence.
   */
  async send(group: SecondaryGroup, records: readonly JournalRecord[], forMs: number): Promise<number> {
    const untilMs = this.clock.monotonicMs() + forMs;
    for (const record of records) {
      for (;;) {
        if (record.sequence <= group.arrivedSequence) break;
        const result = await group.receiveBatch([record]);
        if (result.ok) break;
        if (this.clock.monotonicMs() >= untilMs) return group.arrivedSequence;
        await this.clock.sleep(5);
      }
    }
    return group.arrivedSequence;
  }

  async stop(): Promise<void> {
    await this.run(this.role.stop());
    for (const volume of this.volumes.values()) await this.run(volume.file.close());
  }
}

/** Runs `scenario` with `fault` put back (and taken out again after, whatever happens). */
async function withFault<T>(fault: HistoricalFault, scenario: () => Promise<T>): Promise<T> {
  injectedFaults.add(fault);
  try {
    return await scenario();
  } finally {
    injectedFaults.delete(fault);
  }
}

// ---- no-trim-at-start ------------------------------------------------------------------------

/**
 * The node stopped between a checkpoint's save (node.json says reflected through 12) and its
 * trim, with the journal full of exactly those 12 records. Starts the node's secondary role on
 * that and has the primary send record 13. Returns the group's arrived sequence after 5 s.
 */
async function startAfterCheckpointSavedNotTrimmed(): Promise<{ arrived: number; freeBytesAtStart: number }> {
  const secondary = new Secondary(21);
  await secondary.start();
  const journalBytesMax = 12 * 4096 + 4096 / 2; // 12 one-page records and half a page: full
  const group = await secondary.addGroup(1, journalBytesMax, {
    reflectedSequence: 12, reflectedWriteTimeUs: 120,
    fill: async (journal) => {
      for (let sequence = 1; sequence <= 12; sequence += 1) await journal.append(write(sequence, sequence * 10));
      assert.ok(journal.freeBytes < 4096, `the journal is full (${journal.freeBytes} bytes free)`);
      await journal.sync();
    },
  });
  const freeBytesAtStart = group.journal.freeBytes;
  const arrived = await secondary.run(secondary.send(group, [write(13, 130)], 5000));
  await secondary.stop();
  return { arrived, freeBytesAtStart };
}

void test("a secondary restarted between a checkpoint's save and its trim trims at start: the next record is taken (seed 1267)", async () => {
  const { arrived, freeBytesAtStart } = await startAfterCheckpointSavedNotTrimmed();
  assert.ok(freeBytesAtStart >= 4096, `the start trimmed what the checkpoint covers (${freeBytesAtStart} bytes free)`);
  assert.equal(arrived, 13, "record 13 arrived");
});

void test("the check above catches the historical fault no-trim-at-start: the full journal refuses every batch", async () => {
  const { arrived, freeBytesAtStart } = await withFault("no-trim-at-start", startAfterCheckpointSavedNotTrimmed);
  assert.ok(freeBytesAtStart < 4096, `the checkpointed records stay in the full journal (${freeBytesAtStart} bytes free)`);
  assert.equal(arrived, 12, "record 13 never arrives: nothing else trims (the reflector has nothing to checkpoint)");
});

// ---- silent-received-loss --------------------------------------------------------------------

/**
 * Records 2 and 3 arrive past a gap and are answered as received (held in the receiver); then
 * the journal's fdatasync fails under the batch of record 1 that hands all three out (the disk
 * drops the pages), the group stops and resumes once the disk heals. The primary then sends
 * what it has not been answered for (record 1), or, when the secondary closed the group's
 * streams for a resend, everything past what arrived (the handshake's rewind). Returns what
 * arrived in the end.
 */
async function lossAfterAnsweredReceived(): Promise<{ arrivedAfterResume: number; arrived: number; resend: boolean }> {
  const secondary = new Secondary(22, { failedSyncPages: "evict" });
  await secondary.start();
  const group = await secondary.addGroup(1, 1 << 20);
  const records = [write(1, 10), write(2, 20), write(3, 30)];
  const answered = await secondary.run(group.receiveBatch([records[1] as JournalRecord, records[2] as JournalRecord]));
  assert.ok(answered.ok, "records 2 and 3 are answered as received (they wait past the gap)");
  secondary.disk.failPath(group.journal.dir, ["sync"]);
  const refused = await secondary.run(group.receiveBatch([records[0] as JournalRecord]));
  assert.ok(!refused.ok && refused.reason === "stopped", "the fdatasync under record 1 failed: the group stopped");
  secondary.disk.heal();
  await secondary.run((async () => {
    while (group.stopped !== undefined) await secondary.clock.sleep(50);
  })());
  const arrivedAfterResume = group.arrivedSequence;
  const resend = secondary.closed.some((c) => c.group === group.name && c.why === "resend");
  const arrived = await secondary.run(secondary.send(group, resend ? records : records.slice(0, 1), 5000));
  await secondary.stop();
  return { arrivedAfterResume, arrived, resend };
}

void test("records answered as received that a failed fdatasync lost are asked for again: the streams close, and everything arrives (seeds 869, 1354, 1875)", async () => {
  const { arrivedAfterResume, arrived, resend } = await lossAfterAnsweredReceived();
  assert.ok(arrivedAfterResume < 3, `the resumed journal lacks records answered as received (it holds through ${arrivedAfterResume})`);
  assert.equal(arrived, 3, "every record the primary accepted arrived");
  assert.equal(resend, true, "the group's streams were closed for a resend");
});

void test("the check above catches the historical fault silent-received-loss: the primary never sends the lost records again", async () => {
  const { arrived, resend } = await withFault("silent-received-loss", lossAfterAnsweredReceived);
  assert.equal(resend, false, "nobody told the primary");
  assert.ok(arrived < 3, `records 2 and 3 never arrive (arrived through ${arrived})`);
});

// ---- fenced-group-holds-frontier -------------------------------------------------------------

/**
 * A takeover of g1 and g2 (one consistency domain, primary A) with the primary reachable: it
 * answers FENCED for g1 at its last record (3, write time 30), whose records have all arrived,
 * and for g2 at 30, of which 6 have arrived, all written after g1's last (write times 100 on).
 * g2's journal holds 8 records. While the takeover waits for g2's records, the primary sends
 * them as the journal takes them. Returns how the fence ended: fenced, or refused and why.
 */
async function takeoverWaitsForFencedRecords(): Promise<{ fences?: Map<SecondaryGroup, PrimaryFence>; refused?: string; g2Arrived: number }> {
  const secondary = new Secondary(23);
  await secondary.start();
  const g1 = await secondary.addGroup(1, 1 << 20);
  const g2 = await secondary.addGroup(2, 8 * 4096 + 4096 / 2);
  const g1Records = [1, 2, 3].map((sequence) => write(sequence, sequence * 10));
  const g2Records = Array.from({ length: 30 }, (_, i) => write(i + 1, 100 + i * 10));
  assert.equal(await secondary.run(secondary.send(g1, g1Records, 1000)), 3);
  assert.equal(await secondary.run(secondary.send(g2, g2Records.slice(0, 6), 1000)), 6);
  assert.equal(g1.reflectedSequence, 3, "g1 reflected everything (g2's arrived position is later)");
  assert.equal(g2.reflectedSequence, 0, "g1 holds the frontier at write time 30: none of g2's records is reflected");
  secondary.fenceAnswers.set("g1", { kind: "fenced", lastAcceptedSequence: 3, lastWriteSequence: 3 });
  secondary.fenceAnswers.set("g2", { kind: "fenced", lastAcceptedSequence: 30, lastWriteSequence: 30 });
  const fencing = fencePrimary([g1, g2], {
    streams: secondary.streams,
    clock: secondary.clock, logger: pino({ level: "silent" }), nodeId: "B", force: false,
    raiseGeneration: () => Promise.reject(new Error("not forced")),
  });
  const sending = secondary.send(g2, g2Records, 60_000);
  let outcome: { fences?: Map<SecondaryGroup, PrimaryFence>; refused?: string };
  try {
    outcome = { fences: await secondary.run(fencing) };
  } catch (error) {
    outcome = { refused: `${(error as { code?: string }).code ?? ""}: ${(error as Error).message}` };
  }
  await secondary.run(sending);
  const g2Arrived = g2.arrivedSequence;
  g1.primaryFencedThrough = undefined;
  g2.primaryFencedThrough = undefined;
  await secondary.stop();
  return { ...outcome, g2Arrived };
}

void test("a takeover's fenced group whose records have all arrived no longer holds the frontier while the takeover waits for the others' (seed 8050)", async () => {
  const { fences, refused, g2Arrived } = await takeoverWaitsForFencedRecords();
  assert.equal(refused, undefined);
  assert.deepEqual([...(fences?.values() ?? [])].map((f) => [f.fenced, f.lastAcceptedSequence]), [[true, 3], [true, 30]], "both groups fenced, everything accepted arrived");
  assert.equal(g2Arrived, 30);
});

void test("the check above catches the historical fault fenced-group-holds-frontier: g2's full journal keeps its records out and the takeover is refused", async () => {
  const { refused, g2Arrived } = await withFault("fenced-group-holds-frontier", takeoverWaitsForFencedRecords);
  assert.match(refused ?? "", /^TM_ERR_STATE: the primary is fenced, but the records it accepted did not all arrive within 30 s \(g2 has \d+ of 30\)/);
  assert.ok(g2Arrived < 30, `g2 arrived through ${g2Arrived}`);
});
