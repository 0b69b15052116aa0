// The deterministic replication simulation: one primary node, one secondary node, G groups
// (one pair each, N streams), hosts issuing dependent writes across groups, a network that
// delays, reorders, duplicates, drops and cuts, streams that go silent (messages vanish, no
// cut: the answer deadlines of core/liveness.ts must find them), a secondary journal that
// fills (back-pressure: NO_SPACE, parked records), pulls planned by core/pull-planner.ts and
// answered exactly at fromSequence, and crashes of either node at any tick.
// It is built from the real core (stamp, receiver, reflect, sender); only disks, sockets
// and clocks are simulated. After every tick the checker compares the secondary's image
// with the model of the primary's history (I1, I2); a heal phase must converge (I4).
// One seed decides the shape, the rates and every choice, so a failure replays exactly.
import { InvariantError } from "../../src/core/assert.ts";
import { AnswerWatch } from "../../src/core/liveness.ts";
import { PullPlanner } from "../../src/core/pull-planner.ts";
import { comparePositions, formatPosition, positionOf, positionZero, type Position } from "../../src/core/position.ts";
import { GroupReceiver } from "../../src/core/receiver.ts";
import { frontier, nextToReflect, ReflectTracker, type ReflectHead, type ReflectMode } from "../../src/core/reflect.ts";
import { timeAdvanceDue, PairSender, type BatchPlan } from "../../src/core/sender.ts";
import { initialWriteTimeState, mergeWriteTimeState, stampWrite, type WriteTimeState } from "../../src/core/stamp.ts";
import {
  asGroupId, asSequence, writeTimePolicies,
  type AcceptNumber, type GroupId, type SequenceNumber, type WriteTimePolicy, type WriteTimeUs,
} from "../../src/core/types.ts";
import { RecordKind } from "../../src/protocol/journal-record.ts";
import { Prng } from "./prng.ts";

/** A deliberately broken reflector, to prove the checker can fail. */
export type ReflectorFault = "none" | "time-only-frontier" | "ignore-gaps" | "skip-recovery-replay";

export interface SimOptions {
  readonly seed: number;
  readonly faultyTicks?: number;
  readonly healTicksMax?: number;
  readonly fault?: ReflectorFault;
}

export type Invariant = "I1" | "I2" | "I4" | "model" | "assert";

export type SimResult =
  | { readonly ok: true; readonly seed: number; readonly ticks: number; readonly stats: SimStats; readonly config: string }
  | { readonly ok: false; readonly seed: number; readonly tick: number; readonly invariant: Invariant; readonly message: string; readonly config: string };

export interface SimStats {
  records: number;
  dataRecords: number;
  reflected: number;
  batches: number;
  duplicatesDropped: number;
  refusals: number;
  streamCuts: number;
  fullCuts: number;
  primaryCrashes: number;
  secondaryCrashes: number;
  recordsLostOnPrimaryCrash: number;
  timeAdvances: number;
  noSpaceRefusals: number;
  silentStreams: number;
  stuckStreamsClosed: number;
}

class SimFailure extends Error {
  readonly invariant: Invariant;
  constructor(invariant: Invariant, message: string) {
    super(message);
    this.invariant = invariant;
  }
}

const tickUs = 1000;
const hostTimeBaseUs = 1_000_000_000;
const recordHeaderBytes = 64;
const blockBytes = 512;

interface SimRecord {
  readonly kind: RecordKind;
  readonly groupId: GroupId;
  readonly volumeId: number;
  readonly block: number;
  readonly blocks: number;
  readonly uid: number;
  readonly sequence: SequenceNumber;
  readonly writeTimeUs: WriteTimeUs;
  readonly acceptNumber: AcceptNumber;
  readonly bytes: number;
}

const isData = (r: SimRecord): boolean => r.kind === RecordKind.write || r.kind === RecordKind.zeroes;
const blockKey = (volumeId: number, block: number): number => volumeId * 1024 + block;
function recordKeys(r: SimRecord): number[] {
  const keys: number[] = [];
  for (let i = 0; i < r.blocks; i += 1) keys.push(blockKey(r.volumeId, r.block + i));
  return keys;
}

interface Config {
  groups: number;
  volumesPerGroup: number[];
  blocksPerVolume: number;
  streams: number;
  transfer: "push" | "pull";
  reflect: ReflectMode;
  policy: WriteTimePolicy;
  hosts: number;
  writeRate: number;
  fuaFraction: number;
  zeroesFraction: number;
  primarySyncRate: number;
  secondarySyncRate: number;
  checkpointRate: number;
  reflectPerTickMax: number;
  delayTicksMax: number;
  dupRate: number;
  dropRate: number;
  cutAllRate: number;
  primaryCrashRate: number;
  secondaryCrashRate: number;
  batchRecordsMax: number;
  batchBytesMax: number;
  perStreamMax: number;
  inFlightRecordsMax: number;
  inFlightBytesMax: number;
  reorderRecordsMax: number;
  reorderBytesMax: number;
  timeAdvanceIntervalUs: number;
  resetReorderOnReconnect: boolean;
  pullRate: number;
  /** The secondary's journal limit per group (Infinity: never full). */
  secondaryJournalBytesMax: number;
  silentRate: number;
  /** Ticks a request may go unanswered before its stream counts as stuck and is closed. */
  answerTimeoutTicks: number;
}

function makeConfig(rng: Prng): Config {
  const groups = rng.int(2, 4);
  const batchRecordsMax = rng.int(1, 8);
  const inFlightRecordsMax = rng.int(batchRecordsMax, 64);
  const batchBytesMax = rng.int(recordHeaderBytes, 4096);
  const inFlightBytesMax = rng.int(1024, 16384);
  const tight = rng.chance(0.2);
  const recordMaxBytes = recordHeaderBytes + blockBytes;
  return {
    groups,
    volumesPerGroup: Array.from({ length: groups }, () => rng.int(1, 2)),
    blocksPerVolume: rng.int(2, 6),
    streams: rng.int(1, 4),
    transfer: rng.chance(0.5) ? "push" : "pull",
    reflect: rng.chance(0.75) ? "time" : "seq",
    policy: rng.pick(writeTimePolicies),
    hosts: rng.int(2, 4),
    writeRate: 0.05 + rng.float() * 0.6,
    fuaFraction: rng.float() * 0.5,
    zeroesFraction: rng.float() * 0.2,
    primarySyncRate: 0.05 + rng.float() * 0.5,
    secondarySyncRate: 0.05 + rng.float() * 0.5,
    checkpointRate: 0.005 + rng.float() * 0.1,
    reflectPerTickMax: rng.int(1, 5),
    delayTicksMax: rng.int(1, 30),
    dupRate: rng.float() * 0.05,
    dropRate: rng.float() * 0.01,
    cutAllRate: rng.float() * 0.003,
    primaryCrashRate: rng.float() * 0.002,
    secondaryCrashRate: rng.float() * 0.002,
    batchRecordsMax,
    batchBytesMax,
    perStreamMax: rng.int(1, 4),
    inFlightRecordsMax,
    inFlightBytesMax,
    reorderRecordsMax: tight ? rng.int(1, Math.max(1, inFlightRecordsMax >> 1)) : inFlightRecordsMax,
    reorderBytesMax: tight ? rng.int(recordMaxBytes, Math.max(recordMaxBytes, inFlightBytesMax >> 1)) : inFlightBytesMax + recordMaxBytes,
    timeAdvanceIntervalUs: rng.int(3, 50) * tickUs,
    resetReorderOnReconnect: rng.chance(0.5),
    pullRate: 0.2 + rng.float() * 0.8,
    // Room for a batch (or one record) once everything is reflected, as journalBytesMin gives.
    secondaryJournalBytesMax: rng.chance(0.4) ? rng.int(batchBytesMax + recordMaxBytes, 3 * (batchBytesMax + recordMaxBytes)) : Number.POSITIVE_INFINITY,
    silentRate: rng.float() * 0.004,
    answerTimeoutTicks: rng.int(40, 120),
  };
}

function describe(c: Config): string {
  return [
    `groups=${c.groups}`, `volumes=${c.volumesPerGroup.join("+")}`, `blocks=${c.blocksPerVolume}`, `streams=${c.streams}`,
    `transfer=${c.transfer}`, `reflect=${c.reflect}`, `policy=${c.policy}`, `hosts=${c.hosts}`,
    `batch=${c.batchRecordsMax}rec/${c.batchBytesMax}B`, `window=${c.perStreamMax}x, ${c.inFlightRecordsMax}rec/${c.inFlightBytesMax}B`,
    `reorder=${c.reorderRecordsMax}rec/${c.reorderBytesMax}B`, `delay<=${c.delayTicksMax}`,
    `timeAdvance=${c.timeAdvanceIntervalUs / tickUs}ticks`, `secondaryJournal=${c.secondaryJournalBytesMax}B`,
    `answerTimeout=${c.answerTimeoutTicks}ticks`,
  ].join(" ");
}

interface Volume {
  readonly id: number;
  readonly groupId: GroupId;
}

interface Host {
  readonly timestamped: boolean;
  readonly skewUs: number;
  readonly volumes: readonly Volume[];
  next: number;
  /** The write this host waits on (dependent writes: one at a time). */
  waiting: { readonly groupId: GroupId; readonly sequence: number; readonly needDurable: boolean } | undefined;
}

interface PrimaryGroup {
  readonly id: GroupId;
  /** Records after trimBase, in sequence order; the first durableCount are durable. */
  journal: SimRecord[];
  trimBase: number;
  durableCount: number;
  lastRecordAtUs: number;
  sender: PairSender | undefined;
}

interface SecondaryGroup {
  readonly id: GroupId;
  journal: SimRecord[];
  trimBase: number;
  durableCount: number;
  receiver: GroupReceiver<SimRecord>;
  checkpoint: { sequence: number; position: Position };
  reflected: number;
  reflectedPosition: Position;
  pendingAcks: { stream: number; epoch: number; batchId: number }[];
  /** For the "ignore-gaps" fault only: the highest position received, gaps or not. */
  maxReceivedPosition: Position;
  /** Pull mode: which PULL goes out next (the real planner). */
  planner: PullPlanner;
}

interface Link {
  connected: boolean;
  reconnectAtTick: number;
  readonly streamUp: boolean[];
  readonly streamEpoch: number[];
  readonly streamReconnectAtTick: number[];
  /** A silent stream loses every message until this tick, without a cut. */
  readonly silentUntilTick: number[];
  /** Per stream: the primary's batches, the secondary's PULLs awaiting an answer (the real deadline logic). */
  readonly primaryWatch: AnswerWatch[];
  readonly secondaryWatch: AnswerWatch[];
  /** Per stream: batch ids sent and not answered (the network may duplicate an answer; TCP would not). */
  readonly awaitingAnswer: Set<number>[];
  /** Per stream: PULLs sent and not answered. */
  readonly awaitingPull: Set<number>[];
  /** Push: the secondary refused a batch for lack of room; nothing is sent before this tick (a trim wakes it). */
  noSpaceUntilTick: number;
}

type Message =
  /** `answers`: the id of the PULL it answers (pull mode), so a duplicate answer is known as one. */
  | { readonly t: "batch"; readonly batchId: number; readonly records: readonly SimRecord[]; readonly answers?: number }
  | { readonly t: "ack"; readonly batchId: number; readonly arrived: number }
  | { readonly t: "nack-space"; readonly batchId: number }
  | { readonly t: "pull"; readonly pullId: number; readonly fromSequence: number; readonly maxBytes: number }
  | { readonly t: "nothing"; readonly answers: number };

interface InFlight {
  readonly atTick: number;
  readonly g: number;
  readonly stream: number;
  readonly epoch: number;
  readonly toSecondary: boolean;
  readonly msg: Message;
}

/** The model: every record the primary holds (or held and has since trimmed), in acceptance order. */
interface HistoryEntry {
  readonly uid: number;
  readonly groupId: GroupId;
  readonly keys: readonly number[];
}

export class World {
  private readonly rng: Prng;
  private readonly config: Config;
  private readonly fault: ReflectorFault;
  readonly stats: SimStats = {
    records: 0, dataRecords: 0, reflected: 0, batches: 0, duplicatesDropped: 0, refusals: 0, streamCuts: 0,
    fullCuts: 0, primaryCrashes: 0, secondaryCrashes: 0, recordsLostOnPrimaryCrash: 0, timeAdvances: 0,
    noSpaceRefusals: 0, silentStreams: 0, stuckStreamsClosed: 0,
  };
  tick = 0;
  private healing = false;
  private hostsStopped = false;
  private nextUid = 1;
  private nextPullId = 1;

  // Primary node.
  private primaryUp = true;
  private primaryRestartAtTick = 0;
  private stampState: WriteTimeState = initialWriteTimeState;
  /** Persisted with a trim: the stamp state of every record trimmed (recovery never goes below it). */
  private trimmedStampFloor: WriteTimeState = initialWriteTimeState;
  private clockJitterUs = 0;
  private readonly pgroups: PrimaryGroup[] = [];
  private readonly hosts: Host[] = [];
  private readonly allVolumes: Volume[] = [];

  // Secondary node.
  private secondaryUp = true;
  private secondaryRestartAtTick = 0;
  private readonly sgroups: SecondaryGroup[] = [];
  private readonly image = new Map<number, number>();
  /** Per block written since the last volume sync: every value it held since then (the first is the synced one). */
  private readonly unsynced = new Map<number, number[]>();
  private tracker: ReflectTracker | undefined;

  // Network.
  private readonly links: Link[] = [];
  private net: InFlight[] = [];

  // Model.
  private history: HistoryEntry[] = [];
  private uidIndex = new Map<number, number>();
  private blockWrites = new Map<number, number[]>();

  constructor(seed: number, fault: ReflectorFault) {
    this.rng = new Prng(seed);
    this.config = makeConfig(this.rng);
    this.fault = fault;
    const c = this.config;
    let volumeId = 1;
    for (let g = 0; g < c.groups; g += 1) {
      const id = asGroupId(g + 1);
      for (let v = 0; v < (c.volumesPerGroup[g] ?? 1); v += 1) this.allVolumes.push({ id: volumeId++, groupId: id });
      this.pgroups.push({ id, journal: [], trimBase: 0, durableCount: 0, lastRecordAtUs: 0, sender: this.newSender(0) });
      this.sgroups.push(this.newSecondaryGroup(id, 0, positionZero, { sequence: 0, position: positionZero }, [], 0));
      this.links.push({
        connected: false, reconnectAtTick: 0,
        streamUp: new Array<boolean>(c.streams).fill(false),
        streamEpoch: new Array<number>(c.streams).fill(0),
        streamReconnectAtTick: new Array<number>(c.streams).fill(0),
        silentUntilTick: new Array<number>(c.streams).fill(0),
        primaryWatch: Array.from({ length: c.streams }, () => new AnswerWatch(c.answerTimeoutTicks)),
        secondaryWatch: Array.from({ length: c.streams }, () => new AnswerWatch(c.answerTimeoutTicks)),
        awaitingAnswer: Array.from({ length: c.streams }, () => new Set<number>()),
        awaitingPull: Array.from({ length: c.streams }, () => new Set<number>()),
        noSpaceUntilTick: 0,
      });
    }
    for (let h = 0; h < c.hosts; h += 1) {
      // Each host alternates over volumes that span at least two groups.
      const vols = this.rng.shuffle([...this.allVolumes]).slice(0, this.rng.int(2, Math.min(4, this.allVolumes.length)));
      const first = vols[0];
      if (first !== undefined && vols.every((v) => v.groupId === first.groupId)) {
        const other = this.allVolumes.find((v) => v.groupId !== first.groupId);
        if (other !== undefined) vols.push(other);
      }
      this.hosts.push({
        timestamped: c.policy === "host" ? this.rng.chance(0.5) : false,
        skewUs: this.rng.int(-5000, 5000),
        volumes: vols,
        next: 0,
        waiting: undefined,
      });
    }
    this.tracker = this.newTracker();
  }

  get description(): string {
    return describe(this.config);
  }

  private newSender(acked: number): PairSender {
    const c = this.config;
    return new PairSender({
      streams: c.streams,
      ackedSequence: asSequence(acked),
      batchBytesMax: c.batchBytesMax,
      batchRecordsMax: c.batchRecordsMax,
      batchesInFlightPerStreamMax: c.perStreamMax,
      inFlightBytesMax: c.inFlightBytesMax,
      inFlightRecordsMax: c.inFlightRecordsMax,
    });
  }

  private newReceiver(arrived: number, arrivedPosition: Position): GroupReceiver<SimRecord> {
    const c = this.config;
    return new GroupReceiver<SimRecord>({
      startSequence: asSequence(arrived + 1),
      startPosition: arrivedPosition,
      recordBytes: (r) => r.bytes,
      reorderRecordsMax: c.reorderRecordsMax,
      reorderBytesMax: c.reorderBytesMax,
      durablePendingRecordsMax: c.inFlightRecordsMax + c.batchRecordsMax,
    });
  }

  private newSecondaryGroup(id: GroupId, arrived: number, arrivedPosition: Position, checkpoint: { sequence: number; position: Position }, journal: SimRecord[], trimBase: number): SecondaryGroup {
    return {
      id, journal, trimBase, durableCount: journal.length,
      receiver: this.newReceiver(arrived, arrivedPosition),
      checkpoint, reflected: checkpoint.sequence, reflectedPosition: checkpoint.position,
      pendingAcks: [], maxReceivedPosition: arrivedPosition, planner: new PullPlanner({ bytesMax: this.config.batchBytesMax }),
    };
  }

  private newTracker(): ReflectTracker | undefined {
    if (this.fault !== "none") return undefined; // the checker, not the core's asserts, must catch a broken reflector
    return new ReflectTracker(this.config.reflect, this.sgroups.map((g) => ({ groupId: g.id, reflectedSequence: asSequence(g.reflected) })));
  }

  // ---- the primary ---------------------------------------------------------------

  private durableSequence(g: PrimaryGroup): SequenceNumber {
    return asSequence(g.trimBase + g.durableCount);
  }

  private append(g: PrimaryGroup, kind: RecordKind, volume: Volume | undefined, block: number, blocks: number, hostWriteTimeUs: number | undefined): SimRecord {
    const nowUs = this.tick * tickUs;
    this.clockJitterUs = Math.max(-3000, Math.min(3000, this.clockJitterUs + this.rng.int(-400, 400)));
    const { state, stamp } = stampWrite(this.stampState, { policy: this.config.policy, nowUs: nowUs + this.clockJitterUs + hostTimeBaseUs, hostWriteTimeUs });
    this.stampState = state;
    const record: SimRecord = {
      kind, groupId: g.id, volumeId: volume?.id ?? 0, block, blocks, uid: this.nextUid++,
      sequence: asSequence(g.trimBase + g.journal.length + 1),
      writeTimeUs: stamp.writeTimeUs, acceptNumber: stamp.acceptNumber,
      bytes: recordHeaderBytes + (kind === RecordKind.write ? blockBytes : 0),
    };
    g.journal.push(record);
    g.lastRecordAtUs = nowUs;
    this.stats.records += 1;
    if (isData(record)) {
      this.stats.dataRecords += 1;
      const idx = this.history.length;
      const keys = recordKeys(record);
      this.history.push({ uid: record.uid, groupId: g.id, keys });
      this.uidIndex.set(record.uid, idx);
      for (const k of keys) {
        let list = this.blockWrites.get(k);
        if (list === undefined) this.blockWrites.set(k, (list = []));
        list.push(idx);
      }
    }
    return record;
  }

  private hostsStep(): void {
    if (!this.primaryUp) return;
    const c = this.config;
    for (const h of this.hosts) {
      if (h.waiting !== undefined) {
        const g = this.pgroups[h.waiting.groupId - 1];
        if (g === undefined) throw new SimFailure("model", "host waits on an unknown group");
        if (!h.waiting.needDurable || this.durableSequence(g) >= h.waiting.sequence) h.waiting = undefined; // answered
        continue;
      }
      if (this.hostsStopped || !this.rng.chance(c.writeRate)) continue;
      const volume = h.volumes[h.next % h.volumes.length];
      if (volume === undefined) continue;
      h.next += 1;
      const g = this.pgroups[volume.groupId - 1];
      if (g === undefined) continue;
      const zeroes = this.rng.chance(c.zeroesFraction);
      const block = this.rng.int(0, c.blocksPerVolume - 1);
      const blocks = zeroes ? Math.min(this.rng.int(1, 2), c.blocksPerVolume - block) : 1;
      const hostTime = h.timestamped ? hostTimeBaseUs + this.tick * tickUs + h.skewUs : undefined;
      const record = this.append(g, zeroes ? RecordKind.zeroes : RecordKind.write, volume, block, blocks, hostTime);
      h.waiting = { groupId: g.id, sequence: record.sequence, needDurable: this.rng.chance(c.fuaFraction) };
      // A write without FUA is answered once appended; the host may issue its next one next tick.
      if (!h.waiting.needDurable) h.waiting = undefined;
    }
  }

  private primaryStep(): void {
    if (!this.primaryUp) return;
    const nowUs = this.tick * tickUs;
    for (const g of this.pgroups) {
      // The simulation's writers are always busy somewhere: the short interval applies.
      const intervalMs = this.config.timeAdvanceIntervalUs / 1000;
      if (timeAdvanceDue({ sinceLastRecordMs: (nowUs - g.lastRecordAtUs) / 1000, othersAcceptedSince: true, intervalMs, idleIntervalMs: Math.max(intervalMs, 1_000) })) {
        this.append(g, RecordKind.timeAdvance, undefined, 0, 0, undefined);
        this.stats.timeAdvances += 1;
      }
      if (this.healing || this.rng.chance(this.config.primarySyncRate)) g.durableCount = g.journal.length; // group commit
      this.trimPrimary(g);
    }
  }

  private trimPrimary(g: PrimaryGroup): void {
    if (g.sender === undefined) return;
    const through = Math.min(g.sender.trimFloor, this.durableSequence(g));
    const n = through - g.trimBase;
    if (n <= 0 || !this.rng.chance(0.3)) return;
    for (const r of g.journal.slice(0, n)) {
      this.trimmedStampFloor = mergeWriteTimeState(this.trimmedStampFloor, { recordedWriteTimeUs: r.writeTimeUs, lastAcceptNumber: r.acceptNumber });
    }
    g.journal = g.journal.slice(n);
    g.durableCount -= n;
    g.trimBase = through;
  }

  private crashPrimary(): void {
    this.stats.primaryCrashes += 1;
    this.primaryUp = false;
    this.primaryRestartAtTick = this.tick + this.rng.int(1, 60);
    const lost = new Set<number>();
    for (const g of this.pgroups) {
      for (const r of g.journal.slice(g.durableCount)) lost.add(r.uid);
      this.stats.recordsLostOnPrimaryCrash += g.journal.length - g.durableCount;
      g.journal = g.journal.slice(0, g.durableCount);
      g.sender = undefined;
    }
    for (const h of this.hosts) h.waiting = undefined; // the answer never comes
    for (let i = 0; i < this.links.length; i += 1) this.cutAll(i);
    if (lost.size > 0) this.rebuildHistory(lost);
  }

  private restartPrimary(): void {
    this.primaryUp = true;
    let state = this.trimmedStampFloor;
    for (const g of this.pgroups) {
      for (const r of g.journal) state = mergeWriteTimeState(state, { recordedWriteTimeUs: r.writeTimeUs, lastAcceptNumber: r.acceptNumber });
      g.lastRecordAtUs = this.tick * tickUs;
      // The persisted acknowledged floor is at least the trim point; the handshake brings the rest.
      g.sender = this.newSender(g.trimBase);
    }
    this.stampState = state;
  }

  private rebuildHistory(lost: ReadonlySet<number>): void {
    this.history = this.history.filter((e) => !lost.has(e.uid));
    this.uidIndex = new Map();
    this.blockWrites = new Map();
    this.history.forEach((e, idx) => {
      this.uidIndex.set(e.uid, idx);
      for (const k of e.keys) {
        let list = this.blockWrites.get(k);
        if (list === undefined) this.blockWrites.set(k, (list = []));
        list.push(idx);
      }
    });
  }

  // ---- transfer ------------------------------------------------------------------

  private send(g: number, stream: number, toSecondary: boolean, msg: Message): void {
    const link = this.links[g];
    if (link === undefined || !link.streamUp[stream]) return;
    const epoch = link.streamEpoch[stream] ?? 0;
    if (this.tick < (link.silentUntilTick[stream] ?? 0)) return; // vanishes: no cut, no error
    if (!this.healing && this.rng.chance(this.config.dropRate)) {
      this.cutStream(g, stream); // a lost message means a broken connection (TCP does not drop silently)
      return;
    }
    const copies = !this.healing && this.rng.chance(this.config.dupRate) ? 2 : 1;
    for (let i = 0; i < copies; i += 1) {
      this.net.push({ atTick: this.tick + this.rng.int(1, this.config.delayTicksMax), g, stream, epoch, toSecondary, msg });
    }
  }

  /** The shell's part of a batch: read records from the journal within the plan. */
  private buildBatch(g: PrimaryGroup, plan: BatchPlan): { records: SimRecord[]; bytes: number } {
    const records: SimRecord[] = [];
    let bytes = 0;
    for (let seq: number = plan.fromSequence; seq <= plan.lastSequenceMax && records.length < plan.recordsMax; seq += 1) {
      const r = g.journal[seq - g.trimBase - 1];
      if (r === undefined || r.sequence !== seq) throw new SimFailure("model", `primary journal lacks sequence ${seq} of group ${g.id}`);
      if (records.length > 0 && bytes + r.bytes > plan.bytesMax) break;
      records.push(r);
      bytes += r.bytes;
    }
    return { records, bytes };
  }

  private sendBatch(gi: number, stream: number): boolean {
    const g = this.pgroups[gi];
    if (g?.sender === undefined) return false;
    const plan = g.sender.planBatch(stream, this.durableSequence(g));
    if (plan === undefined) return false;
    return this.sendPlan(gi, stream, g, plan);
  }

  private sendPlan(gi: number, stream: number, g: PrimaryGroup, plan: BatchPlan, answers?: number): boolean {
    if (g.sender === undefined) return false;
    const { records, bytes } = this.buildBatch(g, plan);
    const last = records[records.length - 1];
    if (last === undefined) throw new SimFailure("model", "empty batch");
    if (!g.sender.commitBatch(plan, last.sequence, bytes)) return false;
    this.stats.batches += 1;
    this.send(gi, stream, true, answers === undefined ? { t: "batch", batchId: plan.batchId, records } : { t: "batch", batchId: plan.batchId, records, answers });
    if (!plan.pull) {
      this.links[gi]?.primaryWatch[stream]?.requestSent(this.tick);
      this.links[gi]?.awaitingAnswer[stream]?.add(plan.batchId);
    }
    return true;
  }

  private senderStep(): void {
    if (!this.primaryUp || this.config.transfer !== "push") return;
    for (let gi = 0; gi < this.pgroups.length; gi += 1) {
      const link = this.links[gi];
      if (link === undefined || !link.connected || this.tick < link.noSpaceUntilTick) continue;
      for (let s = 0; s < this.config.streams; s += 1) {
        for (let i = 0; i < 8 && link.streamUp[s] === true; i += 1) if (!this.sendBatch(gi, s)) break;
      }
    }
  }

  /** Pull: the secondary's planner decides every PULL (one open per group, from the need or the cursor, within the journal's room). */
  private pullStep(): void {
    if (!this.secondaryUp || this.config.transfer !== "pull") return;
    for (let gi = 0; gi < this.links.length; gi += 1) {
      const link = this.links[gi];
      const g = this.sgroups[gi];
      if (link === undefined || g === undefined || !link.connected || !(this.healing || this.rng.chance(this.config.pullRate))) continue;
      for (;;) {
        const req = g.planner.next({ needSequence: g.receiver.nextSequence, parked: g.receiver.parked, journalFreeBytes: this.secondaryFree(g), reorderBytes: g.receiver.reorderBytes });
        if (req === undefined) break;
        if (link.streamUp[req.stream] !== true) {
          g.planner.removeStream(req.stream);
          continue;
        }
        const pullId = this.nextPullId++;
        this.send(gi, req.stream, false, { t: "pull", pullId, fromSequence: req.fromSequence, maxBytes: req.maxBytes });
        link.secondaryWatch[req.stream]?.requestSent(this.tick);
        link.awaitingPull[req.stream]?.add(pullId);
      }
    }
  }

  /** The answer deadlines: a stream whose requests go unanswered is closed (what it carried goes elsewhere). */
  private watchStep(): void {
    for (let gi = 0; gi < this.links.length; gi += 1) {
      const link = this.links[gi];
      if (link === undefined || !link.connected) continue;
      for (let s = 0; s < link.streamUp.length; s += 1) {
        if (link.streamUp[s] !== true) continue;
        const stuck = link.primaryWatch[s]?.check(this.tick).kind === "stuck" || link.secondaryWatch[s]?.check(this.tick).kind === "stuck";
        if (stuck) {
          this.stats.stuckStreamsClosed += 1;
          this.cutStream(gi, s);
        }
      }
      if (!this.healing && this.rng.chance(this.config.silentRate)) {
        const s = this.rng.int(0, link.streamUp.length - 1);
        link.silentUntilTick[s] = this.tick + this.rng.int(10, 300);
        this.stats.silentStreams += 1;
      }
    }
  }

  /** What the secondary's journal of a group can take now. */
  private secondaryFree(g: SecondaryGroup): number {
    let used = 0;
    for (const r of g.journal) used += r.bytes;
    return Math.max(0, this.config.secondaryJournalBytesMax - used);
  }

  private deliverStep(): void {
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const m of this.net) (m.atTick <= this.tick ? due : rest).push(m);
    this.net = rest;
    for (const m of this.rng.shuffle(due)) {
      const link = this.links[m.g];
      if (link === undefined || link.streamEpoch[m.stream] !== m.epoch || link.streamUp[m.stream] !== true) continue; // its connection is gone
      if (m.toSecondary) this.atSecondary(m);
      else this.atPrimary(m);
    }
  }

  private atPrimary(m: InFlight): void {
    const g = this.pgroups[m.g];
    if (!this.primaryUp || g?.sender === undefined) return;
    const link = this.links[m.g];
    switch (m.msg.t) {
      case "ack": {
        if (link?.awaitingAnswer[m.stream]?.delete(m.msg.batchId) === true) link.primaryWatch[m.stream]?.answered(this.tick);
        const res = g.sender.onAck(m.stream, m.msg.batchId, m.msg.arrived, this.durableSequence(g));
        if (!res.ok) throw new SimFailure("model", `primary refused an ack: ${res.reason}`);
        return;
      }
      case "nack-space":
        // The secondary took none of it: resend it, after a backoff or when it reports room.
        if (link?.awaitingAnswer[m.stream]?.delete(m.msg.batchId) === true) link.primaryWatch[m.stream]?.answered(this.tick);
        g.sender.onBatchRefused(m.stream, m.msg.batchId);
        if (link !== undefined) link.noSpaceUntilTick = this.tick + this.rng.int(1, 30);
        return;
      case "pull": {
        // The answer starts exactly at fromSequence (or says there is nothing yet).
        const d = g.sender.planPull(m.stream, m.msg.fromSequence, this.durableSequence(g), g.trimBase + 1, g.trimBase + g.journal.length, m.msg.maxBytes);
        if (d.kind === "refuse") throw new SimFailure("model", `primary refused a PULL of its own secondary: ${d.reason}`);
        if (d.kind !== "plan" || !this.sendPlan(m.g, m.stream, g, d.plan, m.msg.pullId)) this.send(m.g, m.stream, true, { t: "nothing", answers: m.msg.pullId });
        return;
      }
      default:
        throw new SimFailure("model", `primary got ${m.msg.t}`);
    }
  }

  private atSecondary(m: InFlight): void {
    const g = this.sgroups[m.g];
    const link = this.links[m.g];
    if (!this.secondaryUp || g === undefined || link === undefined) return;
    let pullId: number | undefined;
    const answers = m.msg.t === "batch" || m.msg.t === "nothing" ? m.msg.answers : undefined;
    if (answers !== undefined && link.awaitingPull[m.stream]?.delete(answers) === true) {
      // The answer to an open PULL (a duplicate of an earlier answer is just a batch).
      link.secondaryWatch[m.stream]?.answered(this.tick);
      const records = m.msg.t === "batch" ? m.msg.records : [];
      pullId = g.planner.answered(m.stream, records[records.length - 1]?.sequence, records.reduce((sum, r) => sum + r.bytes, 0));
    }
    if (m.msg.t === "nothing") return;
    if (m.msg.t !== "batch") throw new SimFailure("model", `secondary got ${m.msg.t}`);
    const res = g.receiver.receive(m.msg.records, this.secondaryFree(g));
    if (!res.ok && res.reason === "journal-full") {
      // Back-pressure: nothing taken; the primary is told and sends it again.
      this.stats.noSpaceRefusals += 1;
      if (pullId !== undefined) g.planner.refused(pullId, res.bytesNeeded ?? 0);
      this.send(m.g, m.stream, false, { t: "nack-space", batchId: m.msg.batchId });
      return;
    }
    if (pullId !== undefined) g.planner.journaled(pullId);
    if (!res.ok) {
      if (res.reason === "reorder-records-full" || res.reason === "reorder-bytes-full" || res.reason === "durable-pending-full") {
        this.stats.refusals += 1;
        this.cutStream(m.g, m.stream); // the shell closes the stream; the sender resends what it lost
        return;
      }
      throw new SimFailure("model", `receiver refused a batch from our own primary: ${res.reason}: ${res.detail}`);
    }
    this.stats.duplicatesDropped += res.duplicates;
    for (const r of m.msg.records) if (comparePositions(r, g.maxReceivedPosition) > 0) g.maxReceivedPosition = positionOf(r);
    this.appendSecondary(g, res.append);
    g.pendingAcks.push({ stream: m.stream, epoch: m.epoch, batchId: m.msg.batchId });
  }

  private appendSecondary(g: SecondaryGroup, run: readonly SimRecord[]): void {
    for (const r of run) {
      if (r.sequence !== g.trimBase + g.journal.length + 1) throw new SimFailure("I2", `secondary journal of group ${g.id} would get ${r.sequence} after ${g.trimBase + g.journal.length}`);
      g.journal.push(r);
    }
    let used = 0;
    for (const r of g.journal) used += r.bytes;
    if (used > this.config.secondaryJournalBytesMax) throw new SimFailure("model", `secondary journal of group ${g.id} holds ${used} bytes, limit ${this.config.secondaryJournalBytesMax}`);
  }

  private secondaryJournalStep(): void {
    if (!this.secondaryUp) return;
    for (let gi = 0; gi < this.sgroups.length; gi += 1) {
      const g = this.sgroups[gi];
      if (g === undefined || !(this.healing || this.rng.chance(this.config.secondarySyncRate))) continue;
      g.durableCount = g.journal.length; // fdatasync
      const end = g.trimBase + g.durableCount;
      if (end > g.receiver.arrivedSequence) g.receiver.markDurable(asSequence(end));
      // ACK every batch received before the fdatasync, with the durable arrived sequence.
      for (const a of g.pendingAcks) {
        if (this.links[gi]?.streamEpoch[a.stream] === a.epoch) this.send(gi, a.stream, false, { t: "ack", batchId: a.batchId, arrived: g.receiver.arrivedSequence });
      }
      g.pendingAcks = [];
    }
  }

  private cutStream(gi: number, stream: number): void {
    const link = this.links[gi];
    if (link === undefined || link.streamUp[stream] !== true) return;
    this.stats.streamCuts += 1;
    link.streamUp[stream] = false;
    link.streamEpoch[stream] = (link.streamEpoch[stream] ?? 0) + 1;
    link.streamReconnectAtTick[stream] = this.tick + this.rng.int(1, 40);
    link.silentUntilTick[stream] = 0;
    link.primaryWatch[stream]?.reset();
    link.secondaryWatch[stream]?.reset();
    link.awaitingAnswer[stream]?.clear();
    link.awaitingPull[stream]?.clear();
    this.sgroups[gi]?.planner.removeStream(stream);
    this.pgroups[gi]?.sender?.onStreamLost(stream);
  }

  private cutAll(gi: number): void {
    const link = this.links[gi];
    if (link === undefined) return;
    this.stats.fullCuts += 1;
    link.connected = false;
    link.reconnectAtTick = this.tick + this.rng.int(1, 80);
    for (let s = 0; s < link.streamUp.length; s += 1) {
      link.streamUp[s] = false;
      link.streamEpoch[s] = (link.streamEpoch[s] ?? 0) + 1;
      link.silentUntilTick[s] = 0;
      link.primaryWatch[s]?.reset();
      link.secondaryWatch[s]?.reset();
      link.awaitingAnswer[s]?.clear();
      link.awaitingPull[s]?.clear();
      this.sgroups[gi]?.planner.removeStream(s);
    }
    this.pgroups[gi]?.sender?.onConnectionLost();
  }

  private linkStep(): void {
    for (let gi = 0; gi < this.links.length; gi += 1) {
      const link = this.links[gi];
      const pg = this.pgroups[gi];
      const sg = this.sgroups[gi];
      if (link === undefined || pg === undefined || sg === undefined) continue;
      if (!this.primaryUp || !this.secondaryUp || pg.sender === undefined) continue;
      if (!link.connected) {
        if (this.tick < link.reconnectAtTick) continue;
        // Handshake: the secondary's durable arrived sequence wins.
        const res = pg.sender.onReconnect(sg.receiver.arrivedSequence, this.durableSequence(pg));
        if (!res.ok) throw new SimFailure("model", `handshake refused: ${res.reason}`);
        if (this.config.resetReorderOnReconnect) sg.receiver.resetReorderBuffer();
        link.connected = true;
        for (let s = 0; s < link.streamUp.length; s += 1) {
          link.streamUp[s] = true;
          sg.planner.addStream(s);
        }
        continue;
      }
      for (let s = 0; s < link.streamUp.length; s += 1) {
        if (link.streamUp[s] !== true && this.tick >= (link.streamReconnectAtTick[s] ?? 0)) {
          link.streamUp[s] = true;
          sg.planner.addStream(s);
        }
      }
    }
  }

  // ---- the secondary's reflector -------------------------------------------------

  private heads(): ReflectHead[] {
    const heads: ReflectHead[] = [];
    for (const g of this.sgroups) {
      const seq = g.reflected + 1;
      if (seq > g.receiver.arrivedSequence) continue;
      const r = g.journal[seq - g.trimBase - 1];
      if (r === undefined || r.sequence !== seq) throw new SimFailure("model", `secondary journal of group ${g.id} lacks ${seq}`);
      heads.push({ groupId: g.id, sequence: asSequence(seq), position: positionOf(r), arrivedSequence: g.receiver.arrivedSequence });
    }
    return heads;
  }

  /** The reflector's choice: the real core, or a deliberately broken variant. */
  private choose(): ReflectHead | undefined {
    const heads = this.heads();
    switch (this.fault) {
      case "none":
      case "skip-recovery-replay":
        return nextToReflect(heads, frontier(this.sgroups.map((g) => ({ arrivedPosition: g.receiver.arrivedPosition }))), this.config.reflect);
      case "ignore-gaps":
        // Broken: the frontier counts records received past a gap as if they had arrived.
        return nextToReflect(heads, frontier(this.sgroups.map((g) => ({ arrivedPosition: g.maxReceivedPosition }))), this.config.reflect);
      case "time-only-frontier": {
        // Broken: write times alone, with <=, as if ties could not hide an earlier record.
        const f = Math.min(...this.sgroups.map((g) => g.receiver.arrivedPosition.writeTimeUs));
        let best: ReflectHead | undefined;
        for (const h of heads) {
          if (h.position.writeTimeUs <= f && (best === undefined || comparePositions(h.position, best.position) < 0)) best = h;
        }
        return best;
      }
    }
  }

  private reflectOne(): boolean {
    const head = this.choose();
    if (head === undefined) return false;
    const g = this.sgroups[head.groupId - 1];
    if (g === undefined) throw new SimFailure("model", "unknown group");
    if (head.sequence !== g.reflected + 1) throw new SimFailure("I2", `group ${g.id} reflects ${head.sequence} after ${g.reflected}`);
    if (head.sequence > g.receiver.arrivedSequence) throw new SimFailure("I2", `group ${g.id} reflects ${head.sequence} past arrived ${g.receiver.arrivedSequence}`);
    const r = g.journal[head.sequence - g.trimBase - 1];
    if (r === undefined) throw new SimFailure("model", "reflected record missing");
    if (isData(r)) for (const k of recordKeys(r)) this.writeBlock(k, r.uid);
    this.tracker?.noteReflected(g.id, r.sequence, r);
    g.reflected = r.sequence;
    g.reflectedPosition = positionOf(r);
    this.stats.reflected += 1;
    return true;
  }

  private writeBlock(key: number, uid: number): void {
    let values = this.unsynced.get(key);
    if (values === undefined) this.unsynced.set(key, (values = [this.image.get(key) ?? 0]));
    values.push(uid);
    this.image.set(key, uid);
  }

  private reflectStep(): void {
    if (!this.secondaryUp) return;
    const n = this.healing ? this.config.reflectPerTickMax + 4 : this.rng.int(0, this.config.reflectPerTickMax);
    for (let i = 0; i < n; i += 1) if (!this.reflectOne()) break;
    if (this.rng.chance(this.config.checkpointRate)) this.checkpoint();
  }

  /** Volumes fdatasync'd, then the reflected checkpoint persisted; the journal trims behind it. */
  private checkpoint(): void {
    this.unsynced.clear();
    for (let gi = 0; gi < this.sgroups.length; gi += 1) {
      const g = this.sgroups[gi];
      if (g === undefined) continue;
      g.checkpoint = { sequence: g.reflected, position: g.reflectedPosition };
      const n = g.checkpoint.sequence - g.trimBase;
      if (n > 0 && this.rng.chance(0.7)) {
        g.journal = g.journal.slice(n);
        g.durableCount -= n;
        g.trimBase = g.checkpoint.sequence;
        // The trim frees room: parked records go to the journal, the primary may send again,
        // and hears of them (a progress ACK, batchId 0, once durable): no batch carries them.
        const drained = g.receiver.drain(this.secondaryFree(g)).append;
        this.appendSecondary(g, drained);
        const link = this.links[gi];
        if (link !== undefined) link.noSpaceUntilTick = Math.min(link.noSpaceUntilTick, this.tick);
        const stream = link?.streamUp.findIndex((up) => up) ?? -1;
        if (drained.length > 0 && link !== undefined && stream >= 0) g.pendingAcks.push({ stream, epoch: link.streamEpoch[stream] ?? 0, batchId: 0 });
      }
    }
  }

  private crashSecondary(): void {
    this.stats.secondaryCrashes += 1;
    this.secondaryUp = false;
    this.secondaryRestartAtTick = this.tick + this.rng.int(1, 60);
    // Volume writes since the last sync: each block keeps any one of the values it held.
    for (const [key, values] of this.unsynced) {
      const v = this.rng.pick(values);
      if (v === 0) this.image.delete(key);
      else this.image.set(key, v);
    }
    this.unsynced.clear();
    for (const g of this.sgroups) {
      g.journal = g.journal.slice(0, g.durableCount);
      g.pendingAcks = [];
    }
    for (let i = 0; i < this.links.length; i += 1) this.cutAll(i);
  }

  /** Recovery: receivers from the durable journals, then replay from the checkpoints to the recomputed frontier. */
  private restartSecondary(): void {
    for (let i = 0; i < this.sgroups.length; i += 1) {
      const old = this.sgroups[i];
      if (old === undefined) continue;
      const last = old.journal[old.journal.length - 1];
      const arrived = old.trimBase + old.journal.length;
      const arrivedPosition = last === undefined ? old.checkpoint.position : positionOf(last);
      this.sgroups[i] = this.newSecondaryGroup(old.id, arrived, arrivedPosition, old.checkpoint, old.journal, old.trimBase);
    }
    this.tracker = this.newTracker();
    let guard = 0;
    // Broken variant: serve the volumes as the crash left them, without replaying.
    while (this.fault !== "skip-recovery-replay" && this.reflectOne()) {
      guard += 1;
      if (guard > 10_000_000) throw new SimFailure("model", "replay does not end");
    }
    this.secondaryUp = true; // reads are served only now
  }

  // ---- faults and phases ---------------------------------------------------------

  private faultStep(): void {
    const c = this.config;
    if (this.healing) {
      if (!this.primaryUp && this.tick >= this.primaryRestartAtTick) this.restartPrimary();
      if (!this.secondaryUp && this.tick >= this.secondaryRestartAtTick) this.restartSecondary();
      return;
    }
    if (this.primaryUp && this.rng.chance(c.primaryCrashRate)) this.crashPrimary();
    else if (!this.primaryUp && this.tick >= this.primaryRestartAtTick) this.restartPrimary();
    if (this.secondaryUp && this.rng.chance(c.secondaryCrashRate)) this.crashSecondary();
    else if (!this.secondaryUp && this.tick >= this.secondaryRestartAtTick) this.restartSecondary();
    for (let gi = 0; gi < this.links.length; gi += 1) if (this.rng.chance(c.cutAllRate)) this.cutAll(gi);
  }

  step(): void {
    this.tick += 1;
    this.faultStep();
    this.linkStep();
    this.hostsStep();
    this.primaryStep();
    this.pullStep();
    this.senderStep();
    this.deliverStep();
    this.watchStep();
    this.secondaryJournalStep();
    this.reflectStep();
    this.check();
  }

  startHeal(): void {
    this.healing = true;
  }

  stopHosts(): void {
    this.hostsStopped = true;
  }

  // ---- the checker ----------------------------------------------------------------

  /**
   * Which prefixes of the history (in acceptance order) the image of `groupIds` equals:
   * [lo, hi] is the range of prefix lengths k such that every block shows the last
   * write among the first k records (or its initial value). Empty (lo > hi): I1 broken.
   */
  private prefixRange(groupIds: ReadonlySet<number>): { lo: number; hi: number; witness: string } {
    let lo = 0;
    let hi = this.history.length;
    let loWitness = "";
    let hiWitness = "";
    const describeEntry = (idx: number): string => {
      const e = this.history[idx];
      return e === undefined ? `history[${idx}]` : `history[${idx}] (uid ${e.uid}, group ${e.groupId})`;
    };
    for (const v of this.allVolumes) {
      if (!groupIds.has(v.groupId)) continue;
      for (let b = 0; b < this.config.blocksPerVolume; b += 1) {
        const key = blockKey(v.id, b);
        const uid = this.image.get(key);
        const writes = this.blockWrites.get(key) ?? [];
        let after: number;
        if (uid === undefined) {
          after = writes[0] ?? Infinity;
        } else {
          const idx = this.uidIndex.get(uid);
          if (idx === undefined) throw new SimFailure("I1", `volume ${v.id} block ${b} holds record ${uid}, which the primary does not hold`);
          if (idx + 1 > lo) {
            lo = idx + 1;
            loWitness = `volume ${v.id} block ${b} holds ${describeEntry(idx)}`;
          }
          after = firstAfter(writes, idx);
        }
        if (after < hi) {
          hi = after;
          hiWitness = `volume ${v.id} block ${b} lacks ${describeEntry(after)}, accepted earlier`;
        }
      }
    }
    return { lo, hi, witness: `${loWitness}; ${hiWitness}` };
  }

  private check(): void {
    const c = this.config;
    for (let gi = 0; gi < this.pgroups.length; gi += 1) {
      const pg = this.pgroups[gi];
      const sg = this.sgroups[gi];
      if (pg === undefined || sg === undefined) continue;
      if (sg.reflected > sg.receiver.arrivedSequence) throw new SimFailure("I2", `group ${sg.id} reflected ${sg.reflected} past arrived ${sg.receiver.arrivedSequence}`);
      if (pg.sender !== undefined && pg.sender.ackedSequence > sg.receiver.arrivedSequence) {
        throw new SimFailure("model", `group ${pg.id}: primary has ${pg.sender.ackedSequence} acknowledged, secondary holds only ${sg.receiver.arrivedSequence}`);
      }
      if (this.primaryUp && sg.receiver.arrivedSequence > this.durableSequence(pg)) {
        throw new SimFailure("model", `group ${pg.id}: secondary holds ${sg.receiver.arrivedSequence}, primary durable only ${this.durableSequence(pg)}`);
      }
    }
    if (!this.secondaryUp) return; // its volumes are not readable until recovery ends
    if (c.reflect === "time") {
      const r = this.prefixRange(new Set(this.sgroups.map((g) => g.id)));
      if (r.lo > r.hi) throw new SimFailure("I1", `the secondary image is no prefix of the acceptance order: ${r.witness}`);
    } else {
      for (const g of this.sgroups) {
        const r = this.prefixRange(new Set([g.id]));
        if (r.lo > r.hi) throw new SimFailure("I1", `group ${g.id}'s image is no prefix of its history: ${r.witness}`);
      }
    }
  }

  /** I4: everything the primary holds is reflected, and the image is the whole history. */
  converged(): string | undefined {
    if (!this.primaryUp || !this.secondaryUp) return "a node is down";
    if (this.hosts.some((h) => h.waiting !== undefined)) return "a host waits";
    for (let gi = 0; gi < this.pgroups.length; gi += 1) {
      const pg = this.pgroups[gi];
      const sg = this.sgroups[gi];
      if (pg === undefined || sg === undefined) continue;
      let lastData = 0;
      for (const r of pg.journal) if (isData(r)) lastData = r.sequence;
      if (pg.durableCount < pg.journal.length) return `group ${pg.id}: primary journal not durable`;
      if (sg.reflected < lastData) return `group ${pg.id}: reflected ${sg.reflected} < last data record ${lastData} (arrived ${sg.receiver.arrivedSequence}, acked ${pg.sender?.ackedSequence}, sent ${pg.sender?.sentSequence})`;
    }
    const r = this.prefixRange(new Set(this.sgroups.map((g) => g.id)));
    if (r.lo > r.hi || r.hi < this.history.length) return `image is not the whole history (prefix range ${r.lo}..${r.hi} of ${this.history.length})`;
    return undefined;
  }

  /** Grows while the pipeline moves: acknowledged, arrived and reflected sequences. */
  progress(): number {
    let p = 0;
    for (let i = 0; i < this.sgroups.length; i += 1) {
      const sg = this.sgroups[i];
      p += (sg?.reflected ?? 0) + (sg?.receiver.arrivedSequence ?? 0) + (this.pgroups[i]?.sender?.ackedSequence ?? 0);
    }
    return p;
  }

  summary(): string {
    const f = frontier(this.sgroups.map((g) => ({ arrivedPosition: g.receiver.arrivedPosition })));
    return `frontier ${f === undefined ? "-" : formatPosition(f)}; ` + this.sgroups.map((g, i) => {
      const pg = this.pgroups[i];
      return `g${g.id}: primary durable ${pg ? this.durableSequence(pg) : "?"} acked ${pg?.sender?.ackedSequence ?? "-"} | secondary arrived ${g.receiver.arrivedSequence} reflected ${g.reflected}`;
    }).join("; ");
  }
}

/** The first entry of the ascending list greater than `idx`, or Infinity. */
function firstAfter(list: readonly number[], idx: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid] ?? Infinity) > idx) hi = mid;
    else lo = mid + 1;
  }
  return list[lo] ?? Infinity;
}

export function runSimulation(options: SimOptions): SimResult {
  const { seed } = options;
  const faultyTicks = options.faultyTicks ?? 1500;
  // I4 is liveness: the heal phase fails when nothing moves for this long (a stuck pipeline),
  // not when a slow configuration (one stream, small windows, long delays) needs time.
  const stallTicksMax = options.healTicksMax ?? 3000;
  const healTicksCap = 400_000;
  const healWriteTicks = 100;
  let world: World | undefined;
  try {
    world = new World(seed, options.fault ?? "none");
    for (let i = 0; i < faultyTicks; i += 1) world.step();
    world.startHeal();
    let why: string | undefined = "not started";
    let lastProgress = -1;
    let lastProgressTick = 0;
    for (let i = 0; i < healTicksCap; i += 1) {
      if (i === healWriteTicks) world.stopHosts();
      world.step();
      if (i <= healWriteTicks) continue;
      why = world.converged();
      if (why === undefined) break;
      const progress = world.progress();
      if (progress !== lastProgress) {
        lastProgress = progress;
        lastProgressTick = i;
      } else if (i - lastProgressTick > stallTicksMax) {
        break;
      }
    }
    if (why !== undefined) throw new SimFailure("I4", `no convergence: nothing moved for ${stallTicksMax} heal ticks: ${why}; ${world.summary()}`);
    return { ok: true, seed, ticks: world.tick, stats: world.stats, config: world.description };
  } catch (err) {
    const config = world?.description ?? "";
    const tick = world?.tick ?? 0;
    if (err instanceof SimFailure) return { ok: false, seed, tick, invariant: err.invariant, message: err.message, config };
    if (err instanceof InvariantError) return { ok: false, seed, tick, invariant: "assert", message: err.message, config };
    throw err;
  }
}
