// The whole-node simulation (issue 7 item 3): real TidemarkNode objects, the production code
// of their journals, volumes, metadata, write path, pairs, receivers and reflectors, run on
// a simulated disk (test/sim/sim-disk.ts), network (sim-network.ts) and clocks (sim-clock.ts)
// under one virtual-time scheduler (scheduler.ts). One seed decides the shape (groups,
// streams, push or pull, write-time policy, rates) and every choice, so a failure replays
// exactly. Hosts write self-describing blocks (history.ts) while the schedule crashes
// nodes (process or power loss) and restarts them, cuts and black-holes streams,
// partitions the nodes, suspends and resumes pairs, adds pairs later, steps wall clocks,
// fills disks and makes them fail. The checker looks at the images after every step
// (I1 on the secondary, I3 on a restarted primary, intact blocks), and after a heal phase
// the pairs must converge (I4) to images equal byte for byte. A takeover ends some runs.
import { ControlError } from "../../src/core/errors.ts";
import { performance } from "node:perf_hooks";
import pino from "pino";
import { InvariantError } from "../../src/core/assert.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { TidemarkNode } from "../../src/node/node.ts";
import { type PeerClient } from "../../src/transport/peer-client.ts";
import type { WriteTimePolicy } from "../../src/core/types.ts";
import type { VolumeHandle } from "../../src/core/volume-io.ts";
import { encodeSimBlockInto, History, isSimBlockOf, simBlockBytes, type HostWrite } from "./history.ts";
import { createHash } from "node:crypto";
import { isStorageError } from "../../src/node/group-stop.ts";
import { Prng } from "./prng.ts";
import { SimScheduler, drainMicrotasks } from "./scheduler.ts";
import { SimClock } from "./sim-clock.ts";
import { cachedSpan, eachCachedPage, samePages, SimDisk, type CachedPages } from "./sim-disk.ts";
import { SimNetwork, type Incarnation } from "./sim-network.ts";

export interface NodeSimOptions {
  readonly seed: number;
  /** Virtual ms of the faulty phase (default 3000). */
  readonly faultyMs?: number;
  /** Virtual ms the heal phase may take to converge (default 60000). */
  readonly healMsMax?: number;
  /** Return a digest of the final images (for the replay test: hashing every image costs a few ms per seed). */
  readonly imagesDigest?: boolean;
}

/** How often each kind of event happened, summed over a run of seeds (the `--json` report). */
export interface EventCounts {
  seeds: number;
  hostWrites: number;
  hostWritesFailed: number;
  flushes: number;
  pairsCreated: number;
  pairsCreatedLater: number;
  initialCopies: number;
  suspends: number;
  resumes: number;
  takeovers: number;
  /** Takeovers with the primary up: it was fenced first. */
  fencedTakeovers: number;
  /** Old primaries that came back after a takeover and fenced themselves. */
  oldPrimariesFenced: number;
  /** Takeovers during the faulty phase (the whole domain or part of it), and those of part of a domain. */
  takeoversMidRun: number;
  partialTakeovers: number;
  /** Takeovers the secondary crashed in (process or power), finished or undone by its restart. */
  takeoverCrashes: number;
  /** Takeovers refused (a group that does not exist, one still copying ...): the pairs carry on. */
  takeoversRefused: number;
  /** Issue 8: groups detached from / attached to their consistency domain, domains suspended together, takeovers right after a late pair. */
  detaches: number;
  attaches: number;
  domainSuspends: number;
  latePairDisasters: number;
  /** Volumes grown (`volume resize`, answered) on the primary while hosts write. */
  resizes: number;
  /** Takeovers refused because a group named was not consistent with the others yet (its join pending). */
  takeoversRefusedJoinPending: number;
  restarts: { primary: number; secondary: number };
  processCrashes: { primary: number; secondary: number };
  powerLosses: { primary: number; secondary: number };
  /** Power losses placed right after a durable save (NodeWorld.armCrashPoint). */
  crashPoints: number;
  streamCuts: number;
  silentStreams: number;
  partitions: number;
  clockSteps: number;
  diskFullEpisodes: { primary: number; secondary: number };
  ioErrorEpisodes: { primary: number; secondary: number };
  /** Seeds in which a group stopped (a full disk or an I/O error) on either node. */
  groupStops: number;
  /** Seeds in which a secondary's journal was full (it took no more records for a while). */
  secondaryJournalFull: number;
  /** Seeds in which a primary held or slowed host writes for journal room. */
  primaryWritesHeld: number;
  /** Seeds run with small journals (NodeWorld.journalSizing). */
  smallJournals: number;
  pullPairs: number;
  pushPairs: number;
  checks: number;
  tornWritesSeen: number;
  operatorCuts: number;
  virtualMs: number;
  events: number;
}

export function emptyCounts(): EventCounts {
  return {
    seeds: 0, hostWrites: 0, hostWritesFailed: 0, flushes: 0, pairsCreated: 0, pairsCreatedLater: 0, initialCopies: 0, suspends: 0, resumes: 0, takeovers: 0, fencedTakeovers: 0, oldPrimariesFenced: 0, takeoversMidRun: 0, partialTakeovers: 0, takeoverCrashes: 0, takeoversRefused: 0, detaches: 0, attaches: 0, domainSuspends: 0, latePairDisasters: 0, resizes: 0, takeoversRefusedJoinPending: 0,
    restarts: { primary: 0, secondary: 0 }, processCrashes: { primary: 0, secondary: 0 }, powerLosses: { primary: 0, secondary: 0 },
    crashPoints: 0, streamCuts: 0, silentStreams: 0, partitions: 0, clockSteps: 0, diskFullEpisodes: { primary: 0, secondary: 0 }, ioErrorEpisodes: { primary: 0, secondary: 0 },
    groupStops: 0, secondaryJournalFull: 0, primaryWritesHeld: 0, smallJournals: 0, pullPairs: 0, pushPairs: 0, checks: 0, tornWritesSeen: 0, operatorCuts: 0, virtualMs: 0, events: 0,
  };
}

export type NodeSimResult =
  | { readonly ok: true; readonly seed: number; readonly config: string; readonly counts: EventCounts; readonly realMs: number; readonly imagesDigest: string | undefined }
  | { readonly ok: false; readonly seed: number; readonly config: string; readonly atMs: number; readonly invariant: string; readonly message: string; readonly counts: EventCounts };

class SimFailure extends Error {
  readonly invariant: string;
  constructor(invariant: string, message: string) {
    super(message);
    this.invariant = invariant;
  }
}

type Role = "primary" | "secondary";

const silentLogger = pino({ level: "silent" });
/** TIDEMARK_SIM_LOG=info (or debug): the nodes' own log lines on stderr, for reading a failing seed. */
function nodeLogger(name: string, scheduler: SimScheduler): pino.Logger {
  const level = process.env.TIDEMARK_SIM_LOG;
  if (level === undefined) return silentLogger;
  return pino({ level, base: { node: name }, timestamp: () => `,"simMs":${scheduler.nowMs.toFixed(1)}` }, pino.destination({ fd: 2, sync: true }));
}

/** One simulated machine: its disk (which outlives the process), and the node process when up. */
class SimMachine {
  readonly name: string;
  readonly role: Role;
  readonly disk: SimDisk;
  readonly dataDir = "/data";
  clock: SimClock | undefined;
  /** The wall clock's steps so far (they survive restarts: it is the machine's clock). */
  wallOffsetMs = 0;
  node: TidemarkNode | undefined;
  /** Set while start() runs. */
  starting: Promise<void> | undefined;
  /**
   * A crash point: the machine loses power right after this many more durable saves in its
   * data directory (a directory fsync there: the metadata, a journal or volume created or
   * removed). Lifecycle steps end in such a save, and the moments right after them are where
   * a half-done transition hides (the join of the time domain was one); a power loss at a
   * random time rarely lands there. Undefined: none armed.
   */
  crashAfterSaves: number | undefined;
  /**
   * A crash point of the other kind: power is lost right after the save that records the
   * next lifecycle transition (a pair's or a secondary group's state in node.json changes:
   * copying to replicating, suspended, taken over ...), the how-manyeth from now. Undefined: none armed.
   */
  crashAtTransition: number | undefined;
  /** How an armed crash point crashes the machine (default: power). */
  crashPointKind: "process" | "power" | undefined;
  /** The pair and secondary states node.json held at its last save (to see a transition). */
  savedStates = "";
  /** Lost power at a crash point; the schedule restarts it at its next step. */
  needsRestart = false;
  /** The operator's --truncate-damaged-journals for the next start. */
  truncateDamagedJournals = false;
  /** The running process (a crash marks it dead: none of its handlers run again). */
  private incarnation: Incarnation = { dead: true };
  /** Rejects when this incarnation dies: a host's request to a dead node ends (its connection would break). */
  died: Promise<never> = new Promise<never>(() => undefined);
  private kill: (error: Error) => void = () => undefined;
  private readonly world: NodeWorld;

  constructor(world: NodeWorld, name: string, role: Role, seed: number) {
    this.world = world;
    this.name = name;
    this.role = role;
    this.disk = new SimDisk({ seed, schedule: (delayMs, fn) => world.scheduler.schedule(delayMs, fn) });
  }

  get up(): boolean {
    return this.node !== undefined && this.starting === undefined;
  }

  get url(): string {
    return `sim://${this.name}`;
  }

  start(): Promise<void> {
    this.incarnation = { dead: false };
    this.died = new Promise<never>((_, reject) => { this.kill = reject; });
    this.died.catch(() => undefined);
    const clock = new SimClock(this.world.scheduler);
    clock.stepWall(this.wallOffsetMs);
    this.clock = clock;
    const node = new TidemarkNode({
      id: this.name,
      dataDir: this.dataDir,
      mgmt: { host: this.name, port: 7480 },
      nbd: { host: this.name, port: 10809 },
      host: { host: this.name, port: 7410 },
      repl: { host: this.name, port: 7400 },
      writeTimePolicy: this.world.writeTimePolicy,
      maxClockSkewMs: this.role === "primary" ? this.world.maxClockSkewMs : undefined,
      logger: nodeLogger(this.name, this.world.scheduler),
      clock,
      transport: this.world.network.transportFor(this.name, this.incarnation),
      fileSystem: this.disk.mount(),
      serve: "replication",
      peers: this.world.peersFor(this.name),
      truncateDamagedJournals: this.truncateDamagedJournals,
      ...(this.world.journalSizing === undefined ? {} : { journalSizing: this.world.journalSizing }),
    });
    this.node = node;
    const starting = node.start().finally(() => {
      if (this.starting === starting) this.starting = undefined;
    });
    this.starting = starting;
    return starting;
  }

  /** The process dies: nothing of it runs any more; the disk keeps what a crash of this kind keeps. */
  crash(kind: "process" | "power"): void {
    this.incarnation.dead = true;
    this.kill(new Error(`${this.name} crashed`));
    this.clock?.stopAll();
    this.world.network.nodeDown(this.name, kind);
    this.disk.crash(kind);
    this.node = undefined;
    this.starting = undefined;
    this.clock = undefined;
  }
}

interface SimGroup {
  readonly name: string;
  readonly volumes: readonly string[];
  paired: boolean;
  /**
   * Joined its consistency domain after the hosts began writing (paired late, or attached
   * again): it counts with the others only once the secondary says it is consistent (issue
   * 8's join point), and on its own before.
   */
  late: boolean;
  suspended: boolean;
  takenOver: boolean;
  /** The takeover that took it (groups taken over together are one consistency domain: I1 is checked over them). */
  takeoverBatch?: number;
  /** Detached from its consistency domain on the secondary (`pair detach`): checked on its own. */
  detached: boolean;
  /** No host writes to it for now (a scenario arranges its own). */
  quiet: boolean;
}

const volumeBlocks = 2048;
const volumeBytes = volumeBlocks * simBlockBytes;

export class NodeWorld {
  readonly scheduler = new SimScheduler();
  readonly rng: Prng;
  readonly network: SimNetwork;
  readonly history: History;
  readonly writeTimePolicy: WriteTimePolicy;
  readonly counts = emptyCounts();
  readonly primary: SimMachine;
  readonly secondary: SimMachine;
  readonly groups: SimGroup[] = [];
  private readonly volumeTags = new Map<string, number>();
  private readonly nextBlock = new Map<string, number>();
  private readonly transfer: "push" | "pull";
  private readonly streams: number;
  private hostsRunning = false;
  private readonly hosts: Promise<void>[] = [];
  /** Errors thrown by node code (an assertion is a failed run). */
  readonly nodeErrors: unknown[] = [];
  readonly peers: PeerClient;
  readonly config: string;
  /**
   * Some seeds (a PRNG of its own) add a second primary, C, replicating its own groups into
   * B (issue 8 kind 5): NBD-like hosts (no write times) write to it, so its positions tie
   * with A's (0/1, 0/2, ... under `host`; 1/1, 2/2, ... under `counter`). By default each
   * primary is its own time domain on B; on some of those seeds (policy host or clock) every
   * pair names one domain and both primaries run --max-clock-skew (commit wait), so A's and
   * C's groups are reflected together by write time and I1 is checked across both.
   */
  readonly third: SimMachine | undefined;
  /** C's groups (kept apart from `groups`, which are A's: the schedule's operator actions stay A's). */
  readonly thirdGroups: SimGroup[] = [];
  /** The named domain of every pair (A's and C's), when this seed names one. */
  readonly namedDomain: string | undefined;
  /** --max-clock-skew of both primaries on named-domain seeds. */
  readonly maxClockSkewMs: number | undefined;
  private readonly thirdRng: Prng;
  private thirdHostsRunning = false;
  private readonly thirdHosts: Promise<void>[] = [];
  /**
   * Some seeds run small journals (a few hundred KiB), so that a full journal on either node
   * (held host writes, a secondary refusing batches, back-pressure) happens within the
   * schedule. Drawn from a PRNG of its own: the other seeds keep their schedules.
   */
  readonly journalSizing: { readonly bytesMin: number; readonly secondaryBytesMax: number } | undefined;
  private readonly primaryJournalBytes: number | undefined;
  private secondaryJournalFullSeen = false;
  private primaryWritesHeldSeen = false;
  private groupStopSeen = false;
  /** Some seeds keep one group of several idle (no host writes to it after setup). */
  private idleGroup: SimGroup | undefined;
  private readonly crashPointRng: Prng;
  /** The fencing scenarios' own choices (the other seeds keep their schedules). */
  private readonly fenceRng: Prng;
  /** Seeds that grow volumes (`volume resize`) in their schedule, and the PRNG of those steps. */
  private readonly resizes: boolean;
  private readonly resizeRng: Prng;
  /** Each volume's size in blocks as the primary last answered a resize (hosts write up to it). */
  private readonly blocksOf = new Map<string, number>();
  /** Takeovers during the faulty phase: their own PRNG (the other seeds keep their schedules), and when each is due (virtual ms). */
  private readonly takeoverRng: Prng;
  private takeoverDueMs: number | undefined;
  private refusedTakeoverDueMs: number | undefined;
  private takeoverBatches = 0;

  constructor(seed: number) {
    this.rng = new Prng(seed);
    this.crashPointRng = new Prng(seed ^ 0x43525348);
    this.fenceRng = new Prng(seed ^ 0x46454e43);
    this.takeoverRng = new Prng(seed ^ 0x54414b45);
    const sizing = new Prng(seed ^ 0x4a524e4c);
    if (sizing.chance(0.35)) {
      this.journalSizing = { bytesMin: 64 * 1024, secondaryBytesMax: sizing.int(24, 128) * 4096 };
      this.primaryJournalBytes = sizing.int(32, 192) * 4096;
    } else {
      this.journalSizing = undefined;
      this.primaryJournalBytes = undefined;
    }
    this.network = new SimNetwork(this.scheduler, this.rng, { delayMsMin: 0.1, delayMsMax: 1 + this.rng.float() * 20, splitRate: this.rng.float() * 0.5 });
    this.history = new History(seed);
    this.writeTimePolicy = (["host", "clock", "counter"] as const)[this.rng.int(0, 2)] ?? "host";
    this.transfer = this.rng.chance(0.5) ? "push" : "pull";
    this.streams = this.rng.int(1, 4);
    this.primary = new SimMachine(this, "A", "primary", seed * 2 + 1);
    this.secondary = new SimMachine(this, "B", "secondary", seed * 2 + 2);
    for (const machine of [this.primary, this.secondary]) machine.disk.onDirectorySynced = (path) => this.onSaved(machine, path);
    const groupCount = this.rng.int(1, 3);
    for (let g = 0; g < groupCount; g++) {
      const volumes = Array.from({ length: this.rng.int(1, 2) }, (_, v) => `v${String(g)}${String(v)}`);
      this.groups.push({ name: `g${String(g)}`, volumes, paired: false, late: false, suspended: false, takenOver: false, detached: false, quiet: false });
      for (const volume of volumes) {
        this.volumeTags.set(volume, this.volumeTags.size + 1);
        this.nextBlock.set(volume, 0);
      }
    }
    this.peers = this.peersFor("A");
    if (this.groups.length > 1 && new Prng(seed ^ 0x49444c45).chance(0.3)) this.idleGroup = this.groups[this.groups.length - 1];
    this.thirdRng = new Prng(seed ^ 0x50524d32);
    // Some seeds grow volumes while hosts write (a PRNG of its own: the other seeds keep their schedules).
    this.resizeRng = new Prng(seed ^ 0x5253495a);
    this.resizes = this.resizeRng.chance(0.3);
    if (this.thirdRng.chance(0.3)) {
      this.third = new SimMachine(this, "C", "primary", (seed ^ 0x43434343) * 2 + 1);
      this.third.disk.onDirectorySynced = (path) => {
        if (this.third !== undefined) this.onSaved(this.third, path);
      };
      const volumes = Array.from({ length: this.thirdRng.int(1, 2) }, (_, v) => `c0${String(v)}`);
      this.thirdGroups.push({ name: "c0", volumes, paired: false, late: false, suspended: false, takenOver: false, detached: false, quiet: false });
      for (const volume of volumes) {
        this.volumeTags.set(volume, this.volumeTags.size + 1);
        this.nextBlock.set(volume, 0);
      }
      if (this.writeTimePolicy !== "counter" && this.thirdRng.chance(0.5)) {
        this.namedDomain = "shared";
        this.maxClockSkewMs = this.thirdRng.int(1, 5);
      } else {
        this.namedDomain = undefined;
        this.maxClockSkewMs = undefined;
      }
    } else {
      this.third = undefined;
      this.namedDomain = undefined;
      this.maxClockSkewMs = undefined;
    }
    this.config = `policy ${this.writeTimePolicy}, ${this.transfer} x${String(this.streams)}, groups ${this.groups.map((g) => `${g.name}[${g.volumes.join(",")}]`).join(" ")}` +
      (this.idleGroup === undefined ? "" : `, ${this.idleGroup.name} idle`) +
      (this.journalSizing === undefined ? "" : `, journals ${(this.primaryJournalBytes ?? 0) / 1024} KiB / ${this.journalSizing.secondaryBytesMax / 1024} KiB`) +
      (this.third === undefined ? "" : `, second primary C ${this.thirdGroups.map((g) => `${g.name}[${g.volumes.join(",")}]`).join(" ")}` +
        (this.namedDomain === undefined ? " (own domain)" : ` (domain ${this.namedDomain}, --max-clock-skew ${String(this.maxClockSkewMs)}ms)`));
    if (this.journalSizing !== undefined) this.counts.smallJournals = 1;
  }

  /** How node `from` reaches another node's management API (unreachable across a partition). */
  peersFor(from: string): PeerClient {
    return {
      preparePairSecondary: async (baseUrl, request) => {
        const machine = [this.secondary, this.primary, this.third].find((m) => m !== undefined && baseUrl === m.url);
        if (machine?.node === undefined || !machine.up || this.network.partitioned(from, machine.name)) {
          throw new ControlError("TM_ERR_UNREACHABLE", `cannot reach node at ${baseUrl}`);
        }
        return machine.node.preparePairSecondary(request);
      },
      endPairSecondary: async (baseUrl, request) => {
        const machine = [this.secondary, this.primary, this.third].find((m) => m !== undefined && baseUrl === m.url);
        if (machine?.node === undefined || !machine.up || this.network.partitioned(from, machine.name)) {
          throw new ControlError("TM_ERR_UNREACHABLE", `cannot reach node at ${baseUrl}`);
        }
        return machine.node.endPairSecondary(request);
      },
      checkPairSecondary: (baseUrl, request) => {
        const machine = [this.secondary, this.primary, this.third].find((m) => m !== undefined && baseUrl === m.url);
        if (machine?.node === undefined || !machine.up || this.network.partitioned(from, machine.name)) {
          return Promise.reject(new ControlError("TM_ERR_UNREACHABLE", `cannot reach node at ${baseUrl}`));
        }
        return Promise.resolve(machine.node.checkPairSecondary(request));
      },
    };
  }

  /** Every machine of the seed (A, B, and C when the seed has it). */
  private get machines(): SimMachine[] {
    return this.third === undefined ? [this.primary, this.secondary] : [this.primary, this.secondary, this.third];
  }

  /** The whole run: setup, the faulty phase with checks after every step, heal and converge, maybe a takeover. */
  async run(faultyMs: number, healMsMax: number): Promise<void> {
    await this.setup();
    this.startHosts(this.rng.int(1, 3));
    this.startThirdHosts();
    const faultyEndMs = this.scheduler.nowMs + faultyMs;
    if (this.takeoverRng.chance(0.35)) this.takeoverDueMs = this.scheduler.nowMs + this.takeoverRng.float() * faultyMs;
    if (this.takeoverRng.chance(0.25)) this.refusedTakeoverDueMs = this.scheduler.nowMs + this.takeoverRng.float() * faultyMs;
    while (this.scheduler.nowMs < faultyEndMs) {
      await this.until(this.step(), 60_000, "a step of the schedule");
      // A scenario that lost the primary for good and took over (issue 8's late pair) ends the run.
      if (this.ended) {
        await this.stopHosts();
        return;
      }
      if (this.secondary.up) this.checkSecondary();
      this.noteFullJournals();
    }
    // A machine that lost power at a crash point after the last step is started again first:
    // a host write held for journal room waits for its secondary.
    for (const machine of this.machines) {
      machine.crashAfterSaves = undefined;
      machine.crashAtTransition = undefined;
    }
    await this.restartCrashed();
    // A pair left suspended (its resume met a dead primary) holds host writes once its journal fills.
    for (const group of this.groups) if (group.suspended) await this.resume(group);
    await this.stopHosts();
    await this.stopThirdHosts();
    await this.heal(healMsMax);
    // The end of some runs: a takeover, with the primary lost (--force) or alive (fenced first).
    if (this.rng.chance(0.3)) await this.takeoverAtEnd();
    else if (this.fenceRng.chance(0.35)) await this.takeoverWithPrimaryAlive();
  }

  // ---- setup -------------------------------------------------------------------------

  async setup(): Promise<void> {
    await this.until(Promise.all([this.primary.start(), this.secondary.start()]), 10_000, "the nodes start");
    const a = this.requireNode(this.primary);
    for (const group of this.groups) {
      for (const volume of group.volumes) await this.until(a.createVolume(volume, volumeBytes), 5_000, `volume ${volume} is created`);
      await this.until(a.createGroup(group.name, group.volumes, this.primaryJournalBytes), 5_000, `group ${group.name} is created`);
    }
    // Most groups are paired before the hosts write; some later (their initial copy runs under writes).
    for (const group of this.groups) {
      if (this.groups.length > 1 && this.rng.chance(0.3)) continue;
      await this.pair(group, false);
    }
    await this.setupThird();
    // The domain is consistent before the hosts write: every initial copy done and reflected.
    await this.until(this.converged(this.groups.filter((g) => g.paired)), 30_000, "the initial copies");
    await this.until(this.convergedThird(), 30_000, "the initial copies of C");
  }

  /** Resolves once every pair of `groups` replicates and the secondary reflected every host write accepted. */
  private async converged(groups: readonly SimGroup[]): Promise<string> {
    for (;;) {
      const a = this.primary.node;
      const b = this.secondary.node;
      if (a !== undefined && b !== undefined && this.primary.up && this.secondary.up) {
        const views: string[] = [];
        let done = true;
        for (const group of groups) {
          const onA = safePair(a, group.name);
          const onB = safePair(b, group.name);
          views.push(`${group.name}: A ${describe(onA)} / B ${describe(onB)}`);
          if (onA?.state !== "replicating" || onB === undefined || onB.reflectedSequence < (onA.writeSequence ?? onA.acceptedSequence)) done = false;
        }
        this.lastConvergence = views.join("; ");
        if (done) return this.lastConvergence;
      }
      await this.sleep(20);
    }
  }

  private lastConvergence = "";

  private async pair(group: SimGroup, late: boolean): Promise<void> {
    const a = this.primary.node;
    if (a === undefined || !this.primary.up || group.paired) return;
    try {
      await this.until(a.createPair({ group: group.name, to: this.secondary.url, mode: "async", transfer: this.transfer, streams: this.streams, reflect: "time", domain: this.namedDomain }), 5_000, `pair ${group.name} is created`);
    } catch (error) {
      if (commandFailed(error)) return; // the secondary is down or cut off, or a disk refused: later
      throw error;
    }
    group.paired = true;
    group.late = late;
    this.counts.pairsCreated += 1;
    this.counts.initialCopies += 1;
    if (late) this.counts.pairsCreatedLater += 1;
    if (this.transfer === "pull") this.counts.pullPairs += 1;
    else this.counts.pushPairs += 1;
  }

  // ---- hosts ---------------------------------------------------------------------------

  startHosts(count: number): void {
    this.hostsRunning = true;
    for (let host = 1; host <= count; host++) this.hosts.push(this.runHost(host));
  }

  async stopHosts(): Promise<void> {
    this.hostsRunning = false;
    await this.until(Promise.all(this.hosts), 30_000, "the hosts stop");
  }

  /**
   * One host: writes to fresh blocks of any group's volume, one at a time, each issued after
   * the previous one's answer (so every write depends on every write this host saw answered
   * before), with FUA or a FLUSH now and then; writes that fail are noted and never reused.
   */
  private async runHost(host: number): Promise<void> {
    const withTimes = host % 2 === 0; // the timestamped host protocol's hosts; the others are NBD-like
    while (this.hostsRunning) {
      await this.sleep(this.rng.int(1, 20));
      const node = this.primary.node;
      if (node === undefined || !this.primary.up) continue;
      // An idle group (some seeds): its domain moves on only by its time advances.
      const next = this.nextHostWrite(this.rng, node, this.groups.filter((g) => !g.takenOver && g !== this.idleGroup && !g.quiet), host);
      if (next === "stop") return;
      if (next === "skip") continue;
      const { group, volume, handle, first, blocks, write, data } = next;
      const fua = this.rng.chance(0.05);
      try {
        const hostWriteTimeUs = withTimes && this.rng.chance(0.7) ? Math.floor((this.primary.clock?.wallMs() ?? 0) * 1000) : undefined;
        const died = this.primary.died;
        await Promise.race([handle.write(first * simBlockBytes, data, { fua, hostWriteTimeUs }), died]);
        write.answeredAtMs = this.scheduler.nowMs;
        write.answeredStep = this.history.nextStep();
        if (process.env.TIDEMARK_SIM_TRACE === "2") this.trace(`host ${host}: write ${write.id} issued at ${write.issuedAtMs.toFixed(1)} answered (${volume} block ${first}+${blocks}${fua ? ", FUA" : ""})`);
        if (fua) {
          // FUA: this write, and what was answered before it was issued (the journal's group commit covers them).
          this.markFlushed(group, write.issuedStep);
          if (!write.uncertain) write.flushed = true;
        }
        if (this.rng.chance(0.1)) {
          this.counts.flushes += 1;
          const flushIssuedAtMs = this.scheduler.nowMs;
          const flushIssuedStep = this.history.nextStep();
          await Promise.race([handle.flush(), died]);
          if (process.env.TIDEMARK_SIM_TRACE === "2") this.trace(`host ${host}: FLUSH of ${group.name} issued at ${flushIssuedAtMs.toFixed(1)} ms answered`);
          this.markFlushed(group, flushIssuedStep);
        }
      } catch {
        write.failed = write.answeredAtMs === undefined;
        this.counts.hostWritesFailed += 1;
      }
      handle.release();
    }
  }

  /**
   * The next write of a host: a group of `groups` and one of its volumes (drawn from `rng`),
   * fresh blocks of it, the write in the history and its self-describing data; "stop" when no
   * group is left to write, "skip" when this turn cannot write (no export, the volume is full).
   */
  private nextHostWrite(rng: Prng, node: TidemarkNode, groups: readonly SimGroup[], host: number):
    { group: SimGroup; volume: string; handle: VolumeHandle; first: number; blocks: number; write: HostWrite; data: Buffer } | "stop" | "skip" {
    const group = groups[rng.int(0, groups.length - 1)];
    if (group === undefined) return "stop";
    const volume = group.volumes[rng.int(0, group.volumes.length - 1)];
    if (volume === undefined) return "skip";
    const handle = node.catalog().open(volume);
    if (handle === undefined) return "skip";
    const first = this.nextBlock.get(volume) ?? 0;
    const blocks = rng.int(1, 4);
    if (first + blocks > this.volumeBlocksOf(volume)) {
      handle.release();
      return "skip";
    }
    this.nextBlock.set(volume, first + blocks);
    const write = this.history.add({ host, volume, firstBlock: first, blocks, issuedAtMs: this.scheduler.nowMs });
    const tag = this.volumeTags.get(volume) ?? 0;
    const data = Buffer.allocUnsafe(blocks * simBlockBytes); // every byte is written
    for (let k = 0; k < blocks; k++) encodeSimBlockInto(data, k * simBlockBytes, this.history.runId, write.id, tag, first + k);
    this.writeData.set(write.id, data);
    this.counts.hostWrites += 1;
    return { group, volume, handle, first, blocks, write, data };
  }

  /** A FLUSH (or FUA) that succeeded covers every write of the group answered before it was issued (any host). */
  private markFlushed(group: SimGroup, issuedStep: number): void {
    const volumes = new Set(group.volumes);
    for (const write of this.history.all()) {
      // A write the primary may have lost at a power loss stays in doubt: a later FLUSH does not bring it back.
      if (volumes.has(write.volume) && write.answeredStep !== undefined && write.answeredStep < issuedStep && !write.uncertain) write.flushed = true;
    }
  }

  // ---- faults ----------------------------------------------------------------------------

  /** TIDEMARK_SIM_TRACE=1: one line per schedule action (to read a failing seed). */
  private trace(what: string): void {
    if (process.env.TIDEMARK_SIM_TRACE === "1" || process.env.TIDEMARK_SIM_TRACE === "2") process.stderr.write(`${this.scheduler.nowMs.toFixed(1).padStart(9)} ms  ${what}\n`);
  }

  /**
   * Sometimes (a PRNG of its own, so other seeds keep their schedules) arms a crash point on
   * one machine before a lifecycle step: it loses power right after one of its next few
   * durable saves.
   */
  private armCrashPoint(): void {
    if (!this.crashPointRng.chance(0.6)) return;
    const machine = this.crashPointRng.chance(0.7) ? this.secondary : this.primary;
    if (this.crashPointRng.chance(0.5)) {
      machine.crashAtTransition = this.crashPointRng.int(1, 3);
      machine.savedStates = this.savedStates(machine);
      this.trace(`${machine.name} loses power right after it saves its state transition number ${machine.crashAtTransition} from now`);
    } else {
      machine.crashAfterSaves = this.crashPointRng.int(1, 6);
      this.trace(`${machine.name} loses power after its next ${machine.crashAfterSaves} saves`);
    }
  }

  /**
   * Sometimes, during a lifecycle step, the secondary's volumes fail every fdatasync for a
   * while (a checkpoint fails, the group stops, the pages those fdatasyncs carried may be
   * evicted): the step then meets a stopped member of the domain, and the group resumes
   * after it. A disk failing at random rarely fails exactly there.
   */
  private failVolumeSyncsForAWhile(): void {
    if (!this.crashPointRng.chance(0.35)) return;
    const machine = this.secondary;
    const path = `${machine.dataDir}/volumes`;
    const forMs = this.crashPointRng.int(20, 600);
    machine.disk.failPath(path, ["sync"]);
    this.counts.ioErrorEpisodes.secondary += 1;
    this.trace(`${machine.name}'s volumes fail fdatasync for ${forMs} ms`);
    this.scheduler.schedule(forMs, () => machine.disk.healPath(path));
  }

  /** The pair and secondary states in `machine`'s node.json as the page cache has it (what the last save wrote). */
  private savedStates(machine: SimMachine): string {
    const metadata = machine.disk.cachedView(`${machine.dataDir}/node.json`);
    if (metadata === undefined) return "";
    try {
      const parsed = JSON.parse(metadata.toString("utf8")) as { groups?: { name: string; pair?: { state: string }; secondary?: { state: string } }[] };
      return (parsed.groups ?? []).map((g) => `${g.name}:${g.pair?.state ?? ""}/${g.secondary?.state ?? ""}`).join(",");
    } catch {
      return "";
    }
  }

  /** A durable save on `machine`'s disk: an armed crash point counts it, and fires right after. */
  private onSaved(machine: SimMachine, path: string): void {
    if (!machine.up || !path.startsWith(machine.dataDir)) return;
    if (machine.crashAtTransition !== undefined && path === machine.dataDir) {
      const states = this.savedStates(machine);
      const changed = states !== machine.savedStates;
      machine.savedStates = states;
      if (!changed) return;
      machine.crashAtTransition -= 1;
      if (machine.crashAtTransition > 0) return;
      machine.crashAtTransition = undefined;
    } else {
      if (machine.crashAfterSaves === undefined) return;
      machine.crashAfterSaves -= 1;
      if (machine.crashAfterSaves > 0) return;
      machine.crashAfterSaves = undefined;
    }
    // Right after the save completes, before the node's next disk operation does.
    const kind = machine.crashPointKind ?? "power";
    machine.crashPointKind = undefined;
    this.scheduler.schedule(0, () => {
      if (!machine.up) return;
      machine.crash(kind);
      if (machine.role === "primary" && kind === "power") this.history.primaryMayHaveLost();
      machine.needsRestart = true;
      this.trace(`${machine.name} ${kind === "power" ? "lost power" : "was killed"} right after a save (${path})`);
      this.counts.crashPoints += 1;
      this.counts[kind === "power" ? "powerLosses" : "processCrashes"][machine.role] += 1;
    });
  }

  /** Restarts the machines that lost power at a crash point. */
  private async restartCrashed(): Promise<void> {
    for (const machine of this.machines) {
      if (!machine.needsRestart) continue;
      machine.needsRestart = false;
      await this.sleep(this.rng.int(1, 300));
      if (machine.node === undefined) await this.restart(machine);
    }
  }

  /** One random fault or operator action. */
  async step(): Promise<void> {
    await this.restartCrashed();
    if (this.third !== undefined && this.thirdRng.chance(0.2)) {
      await this.stepThird(this.third);
      return;
    }
    if (this.resizes && this.resizeRng.chance(0.05)) return this.resizeVolume();
    if (this.refusedTakeoverDueMs !== undefined && this.scheduler.nowMs >= this.refusedTakeoverDueMs) return this.refusedTakeover();
    if (this.takeoverDueMs !== undefined && this.scheduler.nowMs >= this.takeoverDueMs) return this.midRunTakeover();
    const roll = this.rng.float();
    const machine = this.rng.chance(0.5) ? this.primary : this.secondary;
    if (roll < 0.08) {
      if (!machine.up) return;
      const kind = this.rng.chance(0.5) ? "process" : "power";
      machine.crash(kind);
      if (kind === "power" && machine.role === "primary") this.history.primaryMayHaveLost();
      this.trace(`${machine.name} ${kind === "process" ? "killed" : "lost power"}`);
      this.counts[kind === "process" ? "processCrashes" : "powerLosses"][machine.role] += 1;
      await this.sleep(this.rng.int(1, 300));
      await this.restart(machine);
    } else if (roll < 0.2) {
      const streams = this.network.streamsOf(machine.name);
      const stream = streams[this.rng.int(0, streams.length - 1)];
      if (stream === undefined) return;
      if (this.rng.chance(0.5)) {
        this.network.cut(stream);
        this.trace(`cut a stream of ${machine.name}`);
        this.counts.streamCuts += 1;
      } else {
        this.network.blackhole(stream);
        this.trace(`a stream of ${machine.name} goes silent`);
        this.counts.silentStreams += 1;
      }
    } else if (roll < 0.26) {
      this.network.partition("A", "B");
      this.trace("A and B partitioned");
      this.counts.partitions += 1;
      await this.sleep(this.rng.int(100, 2_000));
      this.network.heal("A", "B");
    } else if (roll < 0.34) {
      const group = this.groups.find((g) => g.paired && !g.takenOver && !g.suspended);
      const a = this.primary.node;
      if (group === undefined || a === undefined || !this.primary.up) return;
      this.trace(`suspend ${group.name}`);
      this.armCrashPoint();
      this.failVolumeSyncsForAWhile();
      await this.tryControl(a.suspendPair(group.name));
      group.suspended = true;
      this.counts.suspends += 1;
      await this.sleep(this.rng.int(50, 800));
      await this.resume(group);
    } else if (roll < 0.4) {
      const group = this.groups.find((g) => !g.paired);
      if (group !== undefined) {
        this.trace(`pair ${group.name} (late)`);
        this.armCrashPoint();
        this.failVolumeSyncsForAWhile();
        await this.pair(group, true);
      }
    } else if (roll < 0.46) {
      // A named domain's primaries declared their clocks within --max-clock-skew of each other.
      if (machine.clock === undefined || (this.namedDomain !== undefined && machine.role === "primary")) return;
      const stepMs = (this.rng.chance(0.5) ? -1 : 1) * this.rng.int(1_000, 3_600_000);
      machine.clock.stepWall(stepMs);
      this.trace(`${machine.name}'s wall clock steps ${stepMs} ms`);
      machine.wallOffsetMs += stepMs;
      this.counts.clockSteps += 1;
    } else if (roll < 0.5) {
      machine.disk.fill(this.rng.int(0, 64 * 1024));
      this.trace(`${machine.name}'s disk full`);
      this.counts.diskFullEpisodes[machine.role] += 1;
      await this.sleep(this.rng.int(50, 1_000));
      machine.disk.setCapacity(1024 * 1024 * 1024 * 1024);
      // A failed fdatasync loses what it did not write (docs/journal.md): answered writes no FLUSH covered are in doubt.
      if (machine.role === "primary") this.history.primaryMayHaveLost();
    } else if (roll < 0.53) {
      machine.disk.setErrorRates({ write: this.rng.float() * 0.2, sync: this.rng.float() * 0.2, read: this.rng.float() * 0.05 });
      this.trace(`${machine.name}'s disk fails now and then`);
      this.counts.ioErrorEpisodes[machine.role] += 1;
      await this.sleep(this.rng.int(10, 300));
      machine.disk.heal();
      if (machine.role === "primary") this.history.primaryMayHaveLost();
    } else if (roll < 0.56) {
      await this.detachOrAttach();
    } else if (roll < 0.58) {
      await this.suspendDomainTogether();
    } else if (roll < 0.6) {
      await this.latePairThenDisaster();
    } else {
      await this.sleep(this.rng.int(5, 100));
    }
  }

  /** Blocks of `volume` the hosts may write: its size as last grown (volume resize), or the size it was created with. */
  private volumeBlocksOf(volume: string): number {
    return this.blocksOf.get(volume) ?? volumeBlocks;
  }

  /**
   * `volume resize` of one of A's volumes while hosts write (maybe with a crash point armed):
   * once answered, hosts write past the old end. Paired or not, the secondary must grow at the
   * same point of the history: the images are compared at convergence, sizes included.
   */
  private async resizeVolume(): Promise<void> {
    const a = this.primary.node;
    const candidates = this.groups.filter((g) => !g.takenOver);
    const group = candidates[this.resizeRng.int(0, Math.max(0, candidates.length - 1))];
    const volume = group?.volumes[this.resizeRng.int(0, Math.max(0, (group?.volumes.length ?? 1) - 1))];
    if (a === undefined || !this.primary.up || group === undefined || volume === undefined) return;
    const blocks = this.volumeBlocksOf(volume) + this.resizeRng.int(1, 4) * 256;
    if (blocks > 4 * volumeBlocks) return;
    this.trace(`resize ${volume} of ${group.name} to ${blocks} blocks`);
    this.armCrashPoint();
    try {
      const oldBlocks = this.volumeBlocksOf(volume);
      await this.until(a.resizeVolume(volume, blocks * simBlockBytes), 5_000, `volume ${volume} grows`);
      this.blocksOf.set(volume, blocks);
      // The hosts' next writes to it go past the old end (blocks skipped stay zero: no write overwrites another).
      this.nextBlock.set(volume, Math.max(this.nextBlock.get(volume) ?? 0, oldBlocks));
      this.counts.resizes += 1;
    } catch (error) {
      if (!commandFailed(error)) throw error;
      this.trace(`resize of ${volume} refused or cut short: ${(error as Error).message}`);
    }
  }

  private async resume(group: SimGroup): Promise<void> {
    for (let attempt = 0; attempt < 50 && group.suspended; attempt++) {
      const a = this.primary.node;
      if (a !== undefined && this.primary.up) {
        try {
          await this.until(a.resumePair(group.name), 5_000, `pair ${group.name} resumes`);
          group.suspended = false;
          this.counts.resumes += 1;
          return;
        } catch (error) {
          if (!commandFailed(error)) throw error;
        }
      }
      await this.sleep(100);
    }
  }

  // ---- consistency domains (issue 8, kinds 3 and 4) -----------------------------------------

  /** Set once a scenario lost the primary for good and took over: the run ends there. */
  private ended = false;

  /** `pair detach` of a group on the secondary (the others go on without it), or `pair attach` of a detached one (it joins again under the join rule). */
  private async detachOrAttach(): Promise<void> {
    const b = this.secondary.node;
    if (b === undefined || !this.secondary.up) return;
    const detached = this.groups.find((g) => g.detached && !g.takenOver);
    if (detached !== undefined) {
      this.trace(`attach ${detached.name}`);
      this.armCrashPoint();
      try {
        await this.until(b.attachPair(detached.name), 5_000, `group ${detached.name} attaches`);
      } catch (error) {
        if (!commandFailed(error)) throw error;
        return;
      }
      detached.detached = false;
      detached.late = true; // a join: consistent with the others once past its join point
      this.counts.attaches += 1;
      return;
    }
    const group = this.groups.find((g) => g.paired && !g.takenOver && safePair(b, g.name)?.state !== "copying");
    if (group === undefined) return;
    this.trace(`detach ${group.name}`);
    this.armCrashPoint();
    try {
      await this.until(b.detachPair(group.name), 5_000, `group ${group.name} detaches`);
    } catch (error) {
      if (!commandFailed(error)) throw error;
      return;
    }
    group.detached = true;
    this.counts.detaches += 1;
  }

  /** `pair suspend g1,g2`: every paired group suspended together on the primary, a while, then resumed. */
  private async suspendDomainTogether(): Promise<void> {
    const a = this.primary.node;
    const groups = this.groups.filter((g) => g.paired && !g.takenOver && !g.suspended);
    if (a === undefined || !this.primary.up || groups.length < 2) return;
    this.trace(`suspend ${groups.map((g) => g.name).join(",")} together`);
    // Refused, or cut short (a save failed, the node died): some may be suspended all the
    // same, so every one is resumed below, as after a single suspend.
    await this.tryControl(a.suspendPairs(groups.map((g) => g.name)));
    for (const group of groups) group.suspended = true;
    this.counts.domainSuspends += 1;
    this.counts.suspends += groups.length;
    await this.sleep(this.rng.int(50, 800));
    // Each one, as after a single suspend (a suspend cut short may still land meanwhile).
    for (const group of groups) await this.resume(group);
  }

  /** One host write to `group` from a host of its own (the scenario's), answered; undefined if it failed. */
  private async scenarioWrite(group: SimGroup): Promise<HostWrite | undefined> {
    const node = this.primary.node;
    const volume = group.volumes[0];
    if (node === undefined || volume === undefined) return undefined;
    const handle = node.catalog().open(volume);
    const first = this.nextBlock.get(volume) ?? 0;
    if (handle === undefined || first + 1 > this.volumeBlocksOf(volume)) return undefined;
    this.nextBlock.set(volume, first + 1);
    const write = this.history.add({ host: 99, volume, firstBlock: first, blocks: 1, issuedAtMs: this.scheduler.nowMs });
    const data = Buffer.allocUnsafe(simBlockBytes);
    encodeSimBlockInto(data, 0, this.history.runId, write.id, this.volumeTags.get(volume) ?? 0, first);
    this.writeData.set(write.id, data);
    this.counts.hostWrites += 1;
    try {
      await Promise.race([handle.write(first * simBlockBytes, data, { fua: false, hostWriteTimeUs: undefined }), this.primary.died]);
      write.answeredAtMs = this.scheduler.nowMs;
      write.answeredStep = this.history.nextStep();
      return write;
    } catch {
      write.failed = true;
      this.counts.hostWritesFailed += 1;
      return undefined;
    }
  }

  /**
   * Issue 8's scenario (late-pair-copy-window): a group is paired late with no writes during
   * its copy; once the primary has copied everything (COPY_DONE goes out), b is written to it
   * and answered, then a to a group already paired; the primary is lost for good as soon as
   * the secondary has the late group joined (b has not arrived), and everything is taken over.
   * The takeover must be refused while the late group is not consistent with the others (then
   * the others are taken over without it), or keep an image where a is never there without b.
   * Ends the run.
   */
  private async latePairThenDisaster(): Promise<void> {
    const late = this.groups.find((g) => !g.paired);
    const other = this.groups.find((g) => g.paired && !g.takenOver && !g.suspended && !g.detached);
    if (late === undefined || other === undefined || !this.primary.up || !this.secondary.up) return;
    late.quiet = true;
    this.trace(`pair ${late.name} (late, then the primary is lost)`);
    await this.pair(late, true);
    const a = this.primary.node;
    if (!late.paired || a === undefined) {
      late.quiet = false;
      return;
    }
    const copied = (): boolean => {
      const info = safePair(a, late.name);
      return info !== undefined && (info.state !== "copying" || (info.copy !== null && info.copy.doneBytes >= info.copy.totalBytes));
    };
    for (let waitedMs = 0; !copied() && waitedMs < 5_000 && this.primary.up; waitedMs += 1) await this.sleep(1);
    if (!copied() || !this.primary.up) {
      late.quiet = false;
      return;
    }
    await this.scenarioWrite(late);
    await this.scenarioWrite(other);
    late.quiet = false;
    const b = this.secondary.node;
    const joined = (): boolean => b !== undefined && this.secondary.up && (safePair(b, late.name)?.state ?? "copying") !== "copying";
    for (let waitedMs = 0; !joined() && waitedMs < 5_000; waitedMs += 1) await this.sleep(1);
    if (!joined() || b === undefined || !this.primary.up) return;
    this.primary.crash("process");
    this.trace("A killed for good, right after the late pair joined on B");
    this.counts.processCrashes.primary += 1;
    this.counts.latePairDisasters += 1;
    this.ended = true;
    await this.sleep(this.rng.int(0, 30));
    // What an operator can take over: the groups whose copy is done on the secondary.
    await this.takeoverOnSecondary(this.groups.filter((g) => g.paired && !g.takenOver && (safePair(b, g.name)?.state ?? "copying") !== "copying"), { force: true });
  }

  /**
   * Takes `groups` over on the secondary (the primary is gone) and checks I1 over what was
   * taken: all of them at one cut, or, when the takeover is refused because a group is not
   * consistent yet (with the others: a pending join; or catching up after its copy), the
   * others without it (a partial takeover), and the one left out on its own.
   */
  private async takeoverOnSecondary(groups: readonly SimGroup[], options: { readonly force?: boolean } = {}): Promise<readonly SimGroup[]> {
    if (groups.length === 0) return [];
    const b = this.requireNode(this.secondary);
    let taking = groups;
    try {
      const results = await this.until(b.takeover(taking.map((g) => g.name), options), 20_000, "the takeover");
      this.trace(`${options.force === true ? "forced " : ""}takeover of ${taking.map((g) => g.name).join(",")}: ${results.map((r) => `${r.group} kept ${r.reflectedSequence}`).join(", ")}`);
    } catch (error) {
      // Refused because a group is not consistent yet: with the others (a pending join), or at all (catching up after its copy).
      if (!(error instanceof ControlError) || !/is not consistent with .* yet|not consistent yet/.test(error.message)) throw error;
      if (/is not consistent with .* yet/.test(error.message)) this.counts.takeoversRefusedJoinPending += 1;
      this.trace(`takeover refused: ${error.message}`);
      const pending = groups.filter((g) => b.findSecondary(g.name)?.consistent === false);
      if (pending.length === 0) throw new SimFailure("takeover", `refused for a pending join, but every group says it is consistent: ${error.message}`);
      taking = groups.filter((g) => !pending.includes(g));
      if (taking.length > 0) await this.until(b.takeover(taking.map((g) => g.name), options), 20_000, "the takeover without the pending groups");
      for (const group of pending) {
        const own = this.history.checkDependentWrites(this.present(this.secondary, group.volumes), new Set(group.volumes));
        if (b.findSecondary(group.name)?.consistentAlone === true && own.length > 0) throw new SimFailure("I1", `group ${group.name} alone: ${own.join("; ")}`);
      }
    }
    this.markTakenOver(taking);
    // One cut across the groups taken together, unless one was detached before (not consistent with the others).
    const together = taking.filter((g) => !g.detached);
    const volumes = together.flatMap((g) => g.volumes);
    const violations = this.history.checkDependentWrites(this.present(this.secondary, volumes), new Set(volumes));
    if (violations.length > 0) throw new SimFailure("I1", `after the takeover of ${together.map((g) => g.name).join(",")}: ${violations.join("; ")}`);
    for (const group of taking.filter((g) => g.detached)) {
      const own = this.history.checkDependentWrites(this.present(this.secondary, group.volumes), new Set(group.volumes));
      if (own.length > 0) throw new SimFailure("I1", `detached group ${group.name} after the takeover: ${own.join("; ")}`);
    }
    return taking;
  }

  private async restart(machine: SimMachine): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await this.until(machine.start(), 20_000, `${machine.name} restarts`);
        machine.truncateDamagedJournals = false;
        this.trace(`${machine.name} restarted${machine.node?.listGroups().some((g) => g.state === "stopped") === true ? " (a group is stopped)" : ""}`);
        this.counts.restarts[machine.role] += 1;
        if (machine === this.primary) this.checkFlushedKept();
        return;
      } catch (error) {
        if (error instanceof SimFailure || error instanceof InvariantError) throw error;
        lastError = error;
        // After a power loss a journal may have whole records past an unwritten hole: the
        // operator reads the message and starts once with --truncate-damaged-journals.
        if (error instanceof Error && /--truncate-damaged-journals/.test(error.message)) {
          machine.truncateDamagedJournals = true;
          this.counts.operatorCuts += 1;
          this.trace(`${machine.name}: the operator starts it with --truncate-damaged-journals`);
        }
        // A start that met an injected disk fault: the operator starts it again.
        machine.crash("process");
        machine.disk.heal();
        await this.sleep(200);
      }
    }
    throw new SimFailure("restart", `${machine.name} does not start again after 20 attempts: ${describeError(lastError)}`);
  }

  private async tryControl(operation: Promise<unknown>): Promise<void> {
    try {
      await this.until(operation, 5_000, "an operator command");
    } catch (error) {
      if (!commandFailed(error)) throw error;
    }
  }

  // ---- checks ----------------------------------------------------------------------------

  private requireNode(machine: SimMachine): TidemarkNode {
    const node = machine.node;
    if (node === undefined) throw new SimFailure("setup", `${machine.name} is not up`);
    return node;
  }

  /** A digest of every image at the end (both nodes): two runs of one seed must agree on it. */
  imagesDigest(): string {
    const hash = createHash("sha256");
    for (const machine of this.machines) {
      for (const volume of [...this.groups, ...this.thirdGroups].flatMap((g) => g.volumes)) {
        hash.update(`${machine.name}/${volume}:`);
        const image = this.imagePages(machine, volume);
        if (image !== undefined) eachCachedPage(image, (bytes) => hash.update(bytes));
      }
    }
    return hash.digest("hex").slice(0, 16);
  }

  /** A volume's bytes as a reader of the file sees them now (the page cache), by name, from the node's metadata on its disk. */
  private image(machine: SimMachine, volume: string): Buffer | undefined {
    const path = this.readVolumePath(machine, volume);
    return path === undefined ? undefined : machine.disk.cachedView(path);
  }

  /** The same as image(), as the page cache itself (valid until the disk's next operation). */
  private imagePages(machine: SimMachine, volume: string): CachedPages | undefined {
    const path = this.readVolumePath(machine, volume);
    return path === undefined ? undefined : machine.disk.cachedPages(path);
  }

  /** The path of a volume's file on a machine, from the node's metadata on its disk. */
  private volumePath(machine: SimMachine, volume: string): string | undefined {
    const key = `${machine.name}/${volume}`;
    const known = this.volumePaths.get(key);
    if (known !== undefined) return known;
    const path = this.readVolumePath(machine, volume);
    if (path !== undefined) this.volumePaths.set(key, path); // a volume's file never moves
    return path;
  }

  private readonly volumePaths = new Map<string, string>();
  private blockScratch = Buffer.alloc(4 * simBlockBytes);
  /** What each host write wrote (write id -> its blocks): a block equal to its own is whole without decoding it. */
  private readonly writeData = new Map<number, Buffer>();

  private readVolumePath(machine: SimMachine, volume: string): string | undefined {
    const metadata = machine.disk.cachedView(`${machine.dataDir}/node.json`);
    if (metadata === undefined) return undefined;
    const parsed = JSON.parse(metadata.toString("utf8")) as { volumes: { name: string; fileName: string }[] };
    const record = parsed.volumes.find((v) => v.name === volume);
    return record === undefined ? undefined : `${machine.dataDir}/volumes/${record.fileName}`;
  }

  /**
   * The writes whole in a machine's images of `volumes`, reading only the blocks writes went
   * to (a write never overwrites another, so no other block can hold one; garbage elsewhere is
   * caught when the images are compared at convergence).
   */
  private present(machine: SimMachine, volumes: readonly string[]): Set<number> {
    const present = new Set<number>();
    const runId = this.history.runId;
    for (const volume of volumes) {
      const path = this.volumePath(machine, volume);
      if (path === undefined) continue;
      const tag = this.volumeTags.get(volume) ?? 0;
      // Read in place (the page cache as a reader sees it), one block at a time: a block never straddles a page.
      const file = machine.disk.cachedPages(path);
      for (const write of this.history.ofVolume(volume)) {
        let whole = 0;
        if (file !== undefined) {
          const lengthBytes = write.blocks * simBlockBytes;
          if (this.blockScratch.length < lengthBytes) this.blockScratch = Buffer.alloc(lengthBytes);
          const span = cachedSpan(file, write.firstBlock * simBlockBytes, lengthBytes, this.blockScratch);
          const data = this.writeData.get(write.id);
          // Bytes equal to the write's own are its blocks, whole; anything else is decoded block
          // by block (a first block of another write, or none, cannot be equal: not compared).
          if (data !== undefined && span.buffer.readUInt32LE(span.offsetBytes + 8) === write.id &&
            span.buffer.compare(data, 0, lengthBytes, span.offsetBytes, span.offsetBytes + lengthBytes) === 0) {
            whole = write.blocks;
          } else {
            for (let k = 0; k < write.blocks; k++) {
              if (isSimBlockOf(span.buffer, span.offsetBytes + k * simBlockBytes, write, k, runId, tag)) whole += 1;
            }
          }
        }
        // A write partly there (an apply cut short by a full disk, a crash mid-write) counts as
        // not there: sector by sector, like any disk's write in flight. If a write that depends
        // on it is there, I1 says so; at convergence the images must be equal.
        if (whole === write.blocks) present.add(write.id);
        else if (whole > 0) this.counts.tornWritesSeen += 1;
      }
    }
    return present;
  }

  /**
   * I1 on the secondary: the groups paired from the start form one consistency domain. A group
   * stopped by a full disk or an I/O error there may hold a partly applied record until it
   * resumes (its image is not one to use then; docs/out-of-space.md): it is left out.
   */
  /** Counts, once per seed, a secondary whose journal is full, a primary holding host writes for room, and a stopped group. */
  private noteFullJournals(): void {
    const a = this.primary.node;
    const b = this.secondary.node;
    if (!this.groupStopSeen && (a?.listGroups().some((g) => g.state === "stopped") === true || (b !== undefined && this.groups.some((g) => g.paired && safePair(b, g.name)?.state === "stopped")))) {
      this.groupStopSeen = true;
      this.counts.groupStops += 1;
    }
    for (const group of this.groups.filter((g) => g.paired && !g.takenOver)) {
      if (!this.secondaryJournalFullSeen && b !== undefined && safePair(b, group.name)?.reason?.startsWith("journal full") === true) {
        this.secondaryJournalFullSeen = true;
        this.counts.secondaryJournalFull += 1;
      }
      if (!this.primaryWritesHeldSeen && a !== undefined && /host writes (held|slowed)/.test(safePair(a, group.name)?.reason ?? "")) {
        this.primaryWritesHeldSeen = true;
        this.counts.primaryWritesHeld += 1;
      }
    }
  }

  checkSecondary(): void {
    this.counts.checks += 1;
    const b = this.secondary.node;
    const stopped = new Set(b?.listGroups().filter((g) => g.state === "stopped").map((g) => g.name) ?? []);
    // Groups taken over together are a domain of their own, frozen at their cut.
    for (let batch = 1; batch <= this.takeoverBatches; batch++) {
      const taken = this.groups.filter((g) => g.takeoverBatch === batch);
      const takenVolumes = taken.flatMap((g) => g.volumes);
      if (takenVolumes.length === 0) continue;
      const violations = this.history.checkDependentWrites(this.present(this.secondary, takenVolumes), new Set(takenVolumes));
      if (violations.length > 0) throw new SimFailure("I1", `groups taken over together (${taken.map((g) => g.name).join(",")}): ${violations.join("; ")}; B: ${this.secondaryView()}`);
    }
    // C's groups: in A's domain when the seed names one, else a domain of their own.
    const thirdDomain = this.thirdGroups.filter((g) => g.paired && !g.late && !g.takenOver && !stopped.has(g.name));
    if (this.namedDomain === undefined && thirdDomain.length > 0 && !thirdDomain.some((g) => b?.findSecondary(g.name)?.consistent === false)) {
      const volumesC = thirdDomain.flatMap((g) => g.volumes);
      const own = this.history.checkDependentWrites(this.present(this.secondary, volumesC), new Set(volumesC));
      if (own.length > 0) throw new SimFailure("I1", `C's domain: ${own.join("; ")}; B: ${this.secondaryView()}`);
    }
    // The domain: the groups paired from the start, and those that joined later once the
    // secondary says they are consistent (with the others: issue 8's join point). A detached
    // group is no longer consistent with them.
    const live = this.groups.filter((g) => g.paired && !g.takenOver && !stopped.has(g.name) && !g.detached);
    const domain = [...live.filter((g) => !g.late || b?.findSecondary(g.name)?.consistent === true), ...(this.namedDomain === undefined ? [] : thirdDomain)];
    const volumes = domain.flatMap((g) => g.volumes);
    if (volumes.length > 0) {
      // A member that says its image is not consistent now (applying again after a disk error)
      // makes the domain's images no promise until it is back.
      if (!domain.some((g) => b?.findSecondary(g.name)?.consistent === false)) {
        const violations = this.history.checkDependentWrites(this.present(this.secondary, volumes), new Set(volumes));
        if (violations.length > 0) throw new SimFailure("I1", `${violations.join("; ")}; B: ${this.secondaryView()}`);
      }
    }
    // A group that joined later and is not consistent with the others yet, or a detached one,
    // on its own once its copy is done and caught up (before, its image is a copy in progress).
    for (const group of this.groups.filter((g) => g.paired && !stopped.has(g.name) && !domain.includes(g) && b?.findSecondary(g.name)?.consistentAlone === true)) {
      const own = this.history.checkDependentWrites(this.present(this.secondary, group.volumes), new Set(group.volumes));
      if (own.length > 0) throw new SimFailure("I1", `group ${group.name}: ${own.join("; ")}; B: ${this.secondaryView()}`);
    }
  }

  private secondaryView(): string {
    const b = this.secondary.node;
    if (b === undefined) return "down";
    return this.groups.filter((g) => g.paired).map((g) => `${g.name} ${describe(safePair(b, g.name))}`).join("; ");
  }

  /** I3 on the primary after it restarted: every write a FLUSH or FUA covered is on its volumes. */
  private checkFlushedKept(): void {
    const volumes = this.groups.filter((g) => !g.takenOver).flatMap((g) => g.volumes);
    const missing = this.history.missingFlushed(this.present(this.primary, volumes), new Set(volumes));
    if (missing.length > 0) {
      const w = missing[0] as HostWrite;
      throw new SimFailure("I3", `${missing.length} flushed write(s) missing on the restarted primary, e.g. write ${w.id} (${w.volume} block ${w.firstBlock})`);
    }
  }

  // ---- heal and converge -------------------------------------------------------------------

  async heal(healMsMax: number): Promise<void> {
    this.network.healAll();
    for (const machine of this.machines) {
      machine.disk.heal();
      machine.disk.setCapacity(1024 * 1024 * 1024 * 1024);
      if (machine.node === undefined) await this.restart(machine);
    }
    for (const group of this.groups) if (group.suspended) await this.resume(group);
    for (const group of this.groups) if (!group.paired) await this.pair(group, true);
    for (const group of this.thirdGroups) if (!group.paired) await this.pairThird(group, true);
    try {
      await this.until(this.converged(this.groups.filter((g) => g.paired && !g.takenOver)), healMsMax, "convergence");
      await this.until(this.convergedThird(), healMsMax, "convergence of C");
    } catch (error) {
      if (error instanceof Timeout) throw new SimFailure("I4", `the pairs did not converge within ${healMsMax} ms of healing: ${this.lastConvergence}`);
      throw error;
    }
    this.checkSecondary();
    for (const group of this.groups.filter((g) => g.paired && !g.takenOver)) {
      for (const volume of group.volumes) {
        const onA = this.imagePages(this.primary, volume);
        const onB = this.imagePages(this.secondary, volume);
        if (onA === undefined || onB === undefined || !samePages(onA, onB)) {
          const first = firstDifference(this.image(this.primary, volume), this.image(this.secondary, volume));
          throw new SimFailure("I4", `${volume}: the images differ after convergence (first difference at byte ${first})`);
        }
      }
    }
    const c = this.third;
    for (const group of this.thirdGroups.filter((g) => g.paired && !g.takenOver)) {
      for (const volume of group.volumes) {
        const onC = c === undefined ? undefined : this.imagePages(c, volume);
        const onB = this.imagePages(this.secondary, volume);
        if (c === undefined || onC === undefined || onB === undefined || !samePages(onC, onB)) {
          const first = c === undefined ? -1 : firstDifference(this.image(c, volume), this.image(this.secondary, volume));
          throw new SimFailure("I4", `${volume} (C): the images differ after convergence (first difference at byte ${first})`);
        }
      }
    }
  }

  /**
   * Some runs end with the primary lost and every paired group taken over on the secondary
   * (those that joined late too: issue 8): with --force (the primary cannot be reached;
   * without it the takeover is refused). Some of those first cut the link and have the
   * primary accept writes the secondary never gets, and then start the old primary again: it
   * must be refused, fence itself, report those writes, and replicate nothing over the new data.
   */
  async takeoverAtEnd(): Promise<void> {
    const named = this.namedDomain === undefined ? [] : this.thirdGroups.filter((g) => g.paired && !g.late && !g.takenOver);
    if (!this.groups.some((g) => g.paired && !g.takenOver) && named.length === 0) return;
    // The old primary's return is checked on A's groups alone (C's group of a named domain is lost with its node).
    const comesBack = this.fenceRng.chance(0.6) && named.length === 0;
    // Groups that joined late are taken over too (issue 8: a takeover of all after a late pair),
    // except in runs whose old primary comes back (its late writes are counted over all of them).
    const groups = [...this.groups.filter((g) => g.paired && !g.takenOver && (!comesBack || !g.late)), ...named];
    if (groups.length === 0) return;
    let lateWrites = 0;
    if (comesBack) {
      this.network.partition("A", "B");
      this.trace("A and B partitioned before the primary is lost");
      lateWrites = await this.lateWrites(groups);
    }
    const kind = this.rng.chance(0.5) ? "process" : "power";
    this.primary.crash(comesBack ? "process" : kind);
    if (named.length > 0) this.third?.crash("process");
    const b = this.requireNode(this.secondary);
    // Without --force the primary's absence refuses the takeover, and nothing changes (or,
    // checked first, a group that joined later is not consistent with the others yet).
    if (this.fenceRng.chance(0.3)) {
      try {
        await this.until(b.takeover(groups.map((g) => g.name)), 30_000, "the takeover without --force");
        throw new SimFailure("fence", "a takeover without --force went on while the primary could not be reached");
      } catch (error) {
        if (!(error instanceof ControlError) || (error.code !== "TM_ERR_PRIMARY_UNREACHABLE" && !/is not consistent with .* yet/.test(error.message))) throw error;
      }
    }
    const taken = await this.takeoverOnSecondary(groups, { force: true });
    this.checkSecondary();
    // (A takeover left some group out, its join pending: the late writes counted over all of them do not apply.)
    if (comesBack && taken.length === groups.length) {
      this.network.healAll();
      await this.oldPrimaryReturns(taken, lateWrites);
    }
  }

  /** Writes the primary accepts while it is cut off (FUA: durable there), never replicated; returns how many. */
  private async lateWrites(groups: readonly SimGroup[]): Promise<number> {
    const a = this.requireNode(this.primary);
    let written = 0;
    for (const group of groups) {
      const volume = group.volumes[0];
      if (volume === undefined) continue;
      const count = this.fenceRng.int(0, 3);
      for (let i = 0; i < count; i++) {
        const first = this.nextBlock.get(volume) ?? 0;
        if (first + 1 > this.volumeBlocksOf(volume)) break;
        this.nextBlock.set(volume, first + 1);
        const handle = a.catalog().open(volume);
        if (handle === undefined) continue;
        try {
          await this.until(handle.write(first * simBlockBytes, Buffer.alloc(simBlockBytes, 0x6c), { fua: true, hostWriteTimeUs: undefined }), 5_000, "a late write");
          written += 1;
        } catch (error) {
          if (!(error instanceof Timeout) && !isStorageError(error) && !(error instanceof Error)) throw error;
        }
      }
    }
    this.trace(`the cut-off primary accepted ${written} late writes`);
    return written;
  }

  /** A digest of the secondary's images of `groups` (they must not change when an old primary comes back). */
  private secondaryImagesDigest(groups: readonly SimGroup[]): string {
    const hash = createHash("sha256");
    for (const volume of groups.flatMap((g) => g.volumes)) {
      hash.update(`${volume}:`);
      const image = this.imagePages(this.secondary, volume);
      if (image !== undefined) eachCachedPage(image, (bytes) => hash.update(bytes));
    }
    return hash.digest("hex");
  }

  /**
   * The old primary starts again after the secondary took its groups over: it is refused at
   * the handshake, fences itself (saved), reports the writes it took after the cut, refuses
   * host writes with EPERM, and nothing of it reaches the secondary's images.
   */
  private async oldPrimaryReturns(groups: readonly SimGroup[], lateWritesAtLeast: number, before = this.secondaryImagesDigest(groups)): Promise<void> {
    if (this.primary.node === undefined) await this.restart(this.primary);
    const a = this.requireNode(this.primary);
    const fenced = async (): Promise<void> => {
      for (;;) {
        const pending = groups.filter((g) => {
          const fence = safePair(a, g.name)?.fence;
          return fence?.peerTookOver !== true || fence.lateWrites === null;
        });
        if (pending.length === 0) return;
        await this.sleep(20);
      }
    };
    try {
      await this.until(fenced(), 30_000, "the old primary fences itself");
    } catch (error) {
      if (error instanceof Timeout) {
        throw new SimFailure("fence", `the old primary did not fence itself within 30 s of coming back after the takeover: ${groups.map((g) => `${g.name} ${describe(safePair(a, g.name))}`).join("; ")}`);
      }
      throw error;
    }
    let reported = 0;
    for (const group of groups) reported += safePair(a, group.name)?.fence?.lateWrites ?? 0;
    if (reported < lateWritesAtLeast) throw new SimFailure("fence", `the old primary reports ${reported} writes after the cut; it accepted at least ${lateWritesAtLeast}`);
    await this.expectWritesRefused(groups, "the old primary, refused by the secondary");
    // Time for anything it might still send.
    await this.sleep(500);
    await this.expectWritesRefused(groups, "the old primary, refused by the secondary");
    if (this.secondaryImagesDigest(groups) !== before) throw new SimFailure("fence", "the secondary's images changed after the old primary came back (something was replicated over the new data)");
    this.counts.oldPrimariesFenced += 1;
  }

  /** A write to each of `groups`' volumes on the primary must be refused with EPERM. */
  private async expectWritesRefused(groups: readonly SimGroup[], who: string): Promise<void> {
    const a = this.requireNode(this.primary);
    for (const group of groups) {
      const volume = group.volumes[0];
      const handle = volume === undefined ? undefined : a.catalog().open(volume);
      if (handle === undefined || volume === undefined) continue;
      const first = this.nextBlock.get(volume) ?? 0;
      if (first + 1 > this.volumeBlocksOf(volume)) continue;
      this.nextBlock.set(volume, first + 1);
      try {
        await this.until(handle.write(first * simBlockBytes, Buffer.alloc(simBlockBytes, 0x73), { fua: false, hostWriteTimeUs: undefined }), 5_000, "a write to a fenced group");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "EPERM") continue;
        if (error instanceof Timeout) throw new SimFailure("fence", `${who}: a write to ${volume} neither succeeded nor failed`);
        continue; // a stopped group refuses for its own reason
      }
      throw new SimFailure("fence", `${who}: a write to ${volume} of group ${group.name} was accepted (two writable copies)`);
    }
  }

  /**
   * Some runs end with a takeover while the primary is up and hosts write to it: the takeover
   * fences the primary first. Every write the primary answered before the fence must be on the
   * secondary afterwards; the primary refuses writes from then on, also after a power loss right
   * when the secondary heard FENCED (fault fence-after-answer); an unfenced old primary that
   * reconnects is refused and stays fenced.
   */
  async takeoverWithPrimaryAlive(): Promise<void> {
    const groups = this.groups.filter((g) => g.paired && !g.takenOver);
    const b = this.secondary.node;
    if (groups.length === 0 || b === undefined || this.primary.node === undefined) return;
    const uncertainBefore = new Set(this.history.all().filter((w) => w.uncertain).map((w) => w.id));
    this.startHosts(this.fenceRng.int(1, 2));
    await this.sleep(this.fenceRng.int(5, 200));
    const crashWhenFenced = this.fenceRng.chance(0.5);
    let crashed = false;
    let takeoverDone = false;
    const watcher = async (): Promise<void> => {
      // Power off the primary the moment the secondary holds FENCED and what it promised.
      while (!takeoverDone && crashWhenFenced) {
        if (groups.some((g) => b.findSecondary(g.name)?.primaryFencedThrough !== undefined) && this.primary.up) {
          this.primary.crash("power");
          this.history.primaryMayHaveLost();
          crashed = true;
          this.trace("A lost power right when the secondary held its FENCED answer");
          return;
        }
        await this.sleep(0.2);
      }
    };
    const watching = watcher();
    this.trace(`takeover of ${groups.map((g) => g.name).join(",")} with the primary alive`);
    let results: Awaited<ReturnType<TidemarkNode["takeover"]>>;
    try {
      results = await this.until(b.takeover(groups.map((g) => g.name)), 60_000, "the takeover with the primary alive");
    } catch (error) {
      takeoverDone = true;
      await watching;
      await this.stopHosts();
      if (!(error instanceof ControlError)) throw error;
      // Refused (the primary lost power before it saved the fence, a group not consistent yet ...): nothing was taken over.
      this.trace(`takeover refused: ${error.message}`);
      if (this.primary.node === undefined) await this.restart(this.primary);
      const a = this.requireNode(this.primary);
      for (const group of groups) {
        if (safePair(a, group.name)?.state === "fenced") await this.tryControl(a.unfencePair(group.name, false));
      }
      return;
    }
    takeoverDone = true;
    await watching;
    this.markTakenOver(groups);
    await this.stopHosts();
    this.counts.fencedTakeovers += 1;
    if (results.some((r) => r.primary?.fenced !== true)) throw new SimFailure("fence", `a takeover without --force did not fence the primary: ${JSON.stringify(results)}`);
    // Nothing the primary answered before the fence is lost.
    const volumes = groups.flatMap((g) => g.volumes);
    const present = this.present(this.secondary, volumes);
    const lost = this.history.all().filter((w) => volumes.includes(w.volume) && w.answeredAtMs !== undefined && !w.failed && !uncertainBefore.has(w.id) && !present.has(w.id));
    if (lost.length > 0) {
      const w = lost[0] as HostWrite;
      throw new SimFailure("fence", `${lost.length} write(s) the primary answered before the fence are not on the secondary after the takeover, e.g. write ${w.id} (${w.volume} block ${w.firstBlock}); ${JSON.stringify(results)}`);
    }
    this.checkSecondary();
    if (crashed) {
      // It answered FENCED: it must come back fenced, before it hears anything from the secondary.
      const before = this.secondaryImagesDigest(groups);
      this.network.partition("A", "B");
      await this.restart(this.primary);
      await this.expectWritesRefused(groups, "the primary after a power loss right after it answered FENCED");
      this.network.healAll();
      await this.oldPrimaryReturns(groups, 0, before);
    } else if (this.primary.node !== undefined) {
      await this.expectWritesRefused(groups, "the fenced primary");
    }
  }

  // ---- the second primary, C (issue 8 kind 5) ----------------------------------------------

  /** C's volumes and group, and its pair into B (own domain, or the seed's named one). */
  private async setupThird(): Promise<void> {
    const c = this.third;
    if (c === undefined) return;
    await this.until(c.start(), 10_000, "C starts");
    const node = this.requireNode(c);
    for (const group of this.thirdGroups) {
      for (const volume of group.volumes) await this.until(node.createVolume(volume, volumeBytes), 5_000, `volume ${volume} is created`);
      await this.until(node.createGroup(group.name, group.volumes, this.primaryJournalBytes), 5_000, `group ${group.name} is created`);
      await this.pairThird(group, false);
    }
  }

  private async pairThird(group: SimGroup, late: boolean): Promise<void> {
    const c = this.third?.node;
    if (c === undefined || this.third?.up !== true || group.paired) return;
    try {
      await this.until(c.createPair({ group: group.name, to: this.secondary.url, mode: "async", transfer: this.transfer, streams: this.streams, reflect: "time", domain: this.namedDomain }), 5_000, `pair ${group.name} is created`);
    } catch (error) {
      if (commandFailed(error)) return;
      throw error;
    }
    group.paired = true;
    group.late = late;
    this.counts.pairsCreated += 1;
    this.counts.initialCopies += 1;
  }

  /** Resolves once C's paired groups replicate and B reflected every write C accepted. */
  private async convergedThird(): Promise<void> {
    const groups = this.thirdGroups.filter((g) => g.paired && !g.takenOver);
    for (;;) {
      const c = this.third?.node;
      const b = this.secondary.node;
      if (groups.length === 0) return;
      if (c !== undefined && b !== undefined && this.third?.up === true && this.secondary.up) {
        let done = true;
        const views: string[] = [];
        for (const group of groups) {
          const onC = safePair(c, group.name);
          const onB = safePair(b, group.name);
          views.push(`${group.name}: C ${describe(onC)} / B ${describe(onB)}`);
          if (onC?.state !== "replicating" || onB === undefined || onB.reflectedSequence < (onC.writeSequence ?? onC.acceptedSequence)) done = false;
        }
        this.lastConvergence = views.join("; ");
        if (done) return;
      }
      await this.sleep(20);
    }
  }

  /** One fault of C: a crash of its process and a restart, a cut stream, or a partition from B. */
  private async stepThird(c: SimMachine): Promise<void> {
    const roll = this.thirdRng.float();
    if (roll < 0.3) {
      if (!c.up) return;
      // A process crash keeps the page cache: nothing C answered is lost.
      c.crash("process");
      this.trace("C killed");
      this.counts.processCrashes.primary += 1;
      await this.sleep(this.thirdRng.int(1, 300));
      await this.restart(c);
    } else if (roll < 0.6) {
      const streams = this.network.streamsOf(c.name);
      const stream = streams[this.thirdRng.int(0, streams.length - 1)];
      if (stream === undefined) return;
      this.network.cut(stream);
      this.trace("cut a stream of C");
      this.counts.streamCuts += 1;
    } else if (roll < 0.75) {
      this.network.partition("C", "B");
      this.trace("C and B partitioned");
      this.counts.partitions += 1;
      await this.sleep(this.thirdRng.int(100, 1_500));
      this.network.heal("C", "B");
    } else {
      const group = this.thirdGroups.find((g) => !g.paired);
      if (group !== undefined) {
        this.trace(`pair ${group.name} (late)`);
        await this.pairThird(group, true);
      } else {
        await this.sleep(this.thirdRng.int(5, 100));
      }
    }
  }

  startThirdHosts(): void {
    if (this.third === undefined) return;
    this.thirdHostsRunning = true;
    for (let host = 1; host <= this.thirdRng.int(1, 2); host++) this.thirdHosts.push(this.runThirdHost(100 + host));
  }

  async stopThirdHosts(): Promise<void> {
    this.thirdHostsRunning = false;
    await this.until(Promise.all(this.thirdHosts), 30_000, "C's hosts stop");
  }

  /** An NBD-like host of C (no write times): one write at a time to C's groups, like runHost. */
  private async runThirdHost(host: number): Promise<void> {
    while (this.thirdHostsRunning) {
      await this.sleep(this.thirdRng.int(1, 20));
      const c = this.third;
      const node = c?.node;
      if (c === undefined || node === undefined || !c.up) continue;
      const next = this.nextHostWrite(this.thirdRng, node, this.thirdGroups.filter((g) => !g.takenOver), host);
      if (next === "stop") return;
      if (next === "skip") continue;
      const { handle, first, write, data } = next;
      try {
        await Promise.race([handle.write(first * simBlockBytes, data, { fua: false, hostWriteTimeUs: undefined }), c.died]);
        write.answeredAtMs = this.scheduler.nowMs;
        write.answeredStep = this.history.nextStep();
      } catch {
        write.failed = write.answeredAtMs === undefined;
        this.counts.hostWritesFailed += 1;
      }
      handle.release();
    }
  }

  private markTakenOver(groups: readonly SimGroup[]): void {
    this.takeoverBatches += 1;
    const together = this.takeoverBatches;
    for (const group of groups) {
      group.takenOver = true;
      // A group detached from its domain is not consistent with the others (the takeover's
      // answer says so: issue 8): it is a batch of its own.
      if (group.detached) this.takeoverBatches += 1;
      group.takeoverBatch = group.detached ? this.takeoverBatches : together;
    }
    this.counts.takeovers += 1;
  }

  // ---- takeovers during the faulty phase (issue 8 kind 1) -------------------------------------

  /** The named groups' states on the secondary, or undefined while it is down. */
  private takenOverCount(groups: readonly SimGroup[]): number | undefined {
    const b = this.secondary.node;
    if (b === undefined || !this.secondary.up) return undefined;
    return groups.filter((g) => safePair(b, g.name)?.state === "takeover").length;
  }

  /**
   * A takeover of the whole domain or of part of it, with the primary alive or lost, often
   * after one named group was suspended on the primary (its records stop arriving while the
   * others' go on: the cut matters), and often with a crash of the secondary (process or power)
   * right after one of the takeover's saves. After the restart the takeover is done for every
   * named group, at one cut (I1 over them), or for none (the operator takes over again).
   */
  private async midRunTakeover(): Promise<void> {
    const rng = this.takeoverRng;
    if (!this.secondary.up || !this.primary.up) {
      await this.sleep(20); // due: tried again at the next step
      return;
    }
    this.takeoverDueMs = undefined;
    const candidates = this.groups.filter((g) => g.paired && !g.late && !g.takenOver);
    if (candidates.length === 0) return;
    const whole = candidates.length === 1 || rng.chance(0.5);
    const named = whole ? [...candidates] : candidates.filter(() => rng.chance(0.5));
    if (named.length === 0) named.push(candidates[rng.int(0, candidates.length - 1)] as SimGroup);
    for (let i = named.length - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [named[i], named[j]] = [named[j] as SimGroup, named[i] as SimGroup];
    }
    const names = named.map((g) => g.name);
    const a = this.requireNode(this.primary);
    const gap = named.find((g) => !g.suspended);
    let suspendedOne = named.some((g) => g.suspended);
    if (gap !== undefined && rng.chance(0.5)) {
      suspendedOne = true;
      this.trace(`suspend ${gap.name} before the takeover`);
      await this.tryControl(a.suspendPair(gap.name));
      gap.suspended = true;
      await this.sleep(rng.int(20, 300));
    }
    // A crash point armed by an earlier step may have fired meanwhile: the machines are up again first.
    await this.restartCrashed();
    for (const machine of [this.primary, this.secondary]) {
      machine.crashAfterSaves = undefined;
      machine.crashAtTransition = undefined;
      if (!machine.up) await this.restart(machine);
    }
    const primaryLost = rng.chance(0.6);
    // The primary lost, or a suspended pair (no stream to fence it over): the operator declares the site lost (--force).
    const force = primaryLost || suspendedOne;
    if (primaryLost && this.primary.up) {
      const kind = rng.chance(0.5) ? "process" : "power";
      this.primary.crash(kind);
      if (kind === "power") this.history.primaryMayHaveLost();
      this.counts[kind === "process" ? "processCrashes" : "powerLosses"].primary += 1;
    }
    const crash = rng.int(0, 3);
    if (crash > 0 && crash < 3) {
      this.secondary.crashAfterSaves = rng.int(1, 12);
      this.secondary.crashPointKind = crash === 1 ? "power" : "process";
    }
    let delayedCrash: { cancel(): void } | undefined;
    if (crash === 3) {
      const delayMs = rng.float() * 30;
      const incarnation = this.secondary.node;
      delayedCrash = this.scheduler.schedule(delayMs, () => {
        if (this.secondary.node !== incarnation || !this.secondary.up) return;
        this.secondary.crash("process");
        this.secondary.needsRestart = true;
        this.counts.processCrashes.secondary += 1;
      });
    }
    this.trace(`takeover of ${names.join(",")}${whole ? " (the whole domain)" : " (part of the domain)"}${primaryLost ? ", the primary lost" : ""}${crash === 0 ? "" : `, the secondary crashes in it (${String(crash)})`}`);
    const b = this.requireNode(this.secondary);
    const died = this.secondary.died;
    let answer: string;
    try {
      await this.until(Promise.race([b.takeover(names, { force }), died]), 60_000, "the takeover");
      answer = "done";
    } catch (error) {
      if (this.secondary.up && !commandFailed(error)) throw error;
      answer = error instanceof Error ? error.message : String(error);
    }
    this.secondary.crashAfterSaves = undefined;
    this.secondary.crashPointKind = undefined;
    delayedCrash?.cancel();
    const crashed = !this.secondary.up;
    if (crashed) {
      this.counts.takeoverCrashes += 1;
      this.secondary.needsRestart = false;
      await this.sleep(rng.int(1, 100));
      await this.restart(this.secondary);
    } else if (/restart the node/.test(answer)) {
      // A takeover that failed part-way (a disk error): the operator restarts the node, which finishes it.
      this.secondary.crash("process");
      await this.restart(this.secondary);
    }
    this.trace(`takeover of ${names.join(",")}: ${answer.slice(0, 160)}${crashed ? " (the secondary crashed in it and restarted)" : ""}`);
    let taken = this.takenOverCount(named) ?? 0;
    if (taken !== 0 && taken !== named.length) {
      throw new SimFailure("takeover", `takeover of ${names.join(",")} is not all or nothing after ${crashed ? "a crash and a restart" : "its answer"}: ${this.secondaryView()}`);
    }
    // Nothing was taken over (a crash before the intent was saved, a refusal): the operator asks again.
    for (let attempt = 0; attempt < 3 && taken === 0; attempt++) {
      if (!this.secondary.up) await this.restart(this.secondary);
      try {
        await this.until(this.requireNode(this.secondary).takeover(names, { force }), 60_000, "the takeover, again");
      } catch (error) {
        if (!commandFailed(error)) throw error;
        this.trace(`takeover again: ${error instanceof Error ? error.message.slice(0, 160) : String(error)}`);
        if (error instanceof Error && /restart the node/.test(error.message)) {
          this.secondary.crash("process");
          await this.restart(this.secondary);
        } else {
          await this.sleep(100);
        }
      }
      taken = this.takenOverCount(named) ?? 0;
      if (taken !== 0 && taken !== named.length) throw new SimFailure("takeover", `takeover of ${names.join(",")} is not all or nothing: ${this.secondaryView()}`);
    }
    if (taken === named.length) {
      this.markTakenOver(named);
      this.counts.takeoversMidRun += 1;
      if (!whole) this.counts.partialTakeovers += 1;
    } else if (this.primary.up) {
      // Not taken over: a primary fenced by an attempt is unfenced by the operator, and the pairs carry on.
      const a2 = this.requireNode(this.primary);
      for (const group of named) if (safePair(a2, group.name)?.state === "fenced") await this.tryControl(a2.unfencePair(group.name, false));
    }
    // A pair suspended on the primary is resumed (its journal would hold host writes once full):
    // a group taken over meanwhile is then refused by the secondary and its pair ends there.
    if (!this.primary.up) {
      await this.sleep(rng.int(1, 200));
      await this.restart(this.primary);
    }
    for (const group of named) if (group.suspended) await this.resume(group);
    if (this.secondary.up) this.checkSecondary();
  }

  /**
   * A takeover the secondary must refuse (a group that does not exist, or one still in its
   * initial copy, named with replicating ones): nothing changes on either node, and the pairs
   * carry on (none is failed on the primary, none leaves its domain).
   */
  private async refusedTakeover(): Promise<void> {
    const rng = this.takeoverRng;
    this.refusedTakeoverDueMs = undefined;
    const a = this.primary.node;
    const b = this.secondary.node;
    if (a === undefined || b === undefined || !this.primary.up || !this.secondary.up) return;
    const replicating = this.groups.filter((g) => g.paired && !g.takenOver && safePair(b, g.name)?.state === "replicating");
    const copying = this.groups.filter((g) => g.paired && !g.takenOver && safePair(b, g.name)?.state === "copying");
    const bad = copying.length > 0 && rng.chance(0.5) ? (copying[0] as SimGroup).name : "nosuch";
    const names = [...replicating.filter(() => rng.chance(0.7)).map((g) => g.name), bad];
    const failedBefore = new Set(this.groups.filter((g) => ["failed", "fenced", "suspended"].includes(safePair(a, g.name)?.state ?? "")).map((g) => g.name));
    this.trace(`takeover of ${names.join(",")} (must be refused)`);
    try {
      await this.until(b.takeover(names), 10_000, "a takeover that is refused");
    } catch (error) {
      if (!commandFailed(error)) throw error;
      this.counts.takeoversRefused += 1;
      this.trace(`refused: ${error instanceof Error ? error.message.slice(0, 160) : String(error)}`);
    }
    const named = this.groups.filter((g) => names.includes(g.name));
    const taken = this.takenOverCount(named);
    if (taken !== undefined && taken === named.length && named.length > 0) {
      // The copy finished meanwhile: a takeover like any other.
      this.markTakenOver(named);
      return;
    }
    if (taken !== undefined && taken > 0) throw new SimFailure("refused-takeover", `a refused takeover of ${names.join(",")} took some of them over: ${this.secondaryView()}`);
    // The primary hears of whatever the secondary did within a few round trips.
    await this.sleep(300);
    const a2 = this.primary.node;
    if (a2 === undefined || a2 !== a) return;
    const failed = named.filter((g) => !failedBefore.has(g.name) && ["failed", "fenced", "suspended"].includes(safePair(a2, g.name)?.state ?? ""));
    if (failed.length > 0) {
      throw new SimFailure("refused-takeover", `a refused takeover of ${names.join(",")} changed the pair of ${failed.map((g) => g.name).join(",")} on the primary: ${describe(safePair(a2, (failed[0] as SimGroup).name))}`);
    }
  }

  // ---- virtual time --------------------------------------------------------------------

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.scheduler.schedule(delayMs, resolve));
  }

  /** `promise`, or Timeout once `limitMs` of virtual time passed without it settling (the driver runs the time). */
  until<T>(promise: Promise<T>, limitMs: number, what: string): Promise<T> {
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.scheduler.schedule(limitMs, () => reject(new Timeout(`${what}: not done within ${limitMs} virtual ms`)));
    });
    return Promise.race([promise, timeout]).finally(() => timer?.cancel());
  }

  /**
   * The one driver of virtual time: runs events until `promise` settles. A promise still
   * pending with no event left is a deadlock (something waits for what can never happen).
   */
  async drive<T>(promise: Promise<T>): Promise<T> {
    let settled = false;
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    promise.then((value) => { settled = true; outcome = { ok: true, value }; }, (error: unknown) => { settled = true; outcome = { ok: false, error }; });
    await drainMicrotasks();
    while (!settled) {
      if (this.nodeErrors.length > 0) throw new SimFailure("assert", describeError(this.nodeErrors[0]));
      const next = this.scheduler.nextAtMs();
      if (next === undefined) throw new SimFailure("stuck", "nothing left to run, but the schedule waits (a deadlock)");
      await this.scheduler.runUntilStopped(() => settled || this.nodeErrors.length > 0);
    }
    const result = outcome;
    if (result === undefined) throw new SimFailure("stuck", "settled without an outcome");
    if (!result.ok) throw result.error;
    return result.value;
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.message}\n${error.stack ?? ""}` : String(error);
}

class Timeout extends Error {}

/** An operator command that failed as the operator would see it fail: refused, timed out, or a disk refused (TM_ERR_IO / TM_ERR_NO_SPACE over HTTP). */
function commandFailed(error: unknown): boolean {
  return error instanceof ControlError || error instanceof Timeout || isStorageError(error);
}

function safePair(node: TidemarkNode, group: string): PairInfo | undefined {
  try {
    return node.pair(group);
  } catch {
    return undefined;
  }
}

function describe(info: PairInfo | undefined): string {
  if (info === undefined) return "none";
  return `${info.state} acc ${info.acceptedSequence} arr ${info.arrivedSequence} refl ${info.reflectedSequence}${info.reason === null ? "" : ` (${info.reason})`}`;
}

function firstDifference(a: Buffer | undefined, b: Buffer | undefined): number {
  if (a === undefined || b === undefined) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}

/** Runs one seed. */
export async function runNodeSimulation(options: NodeSimOptions): Promise<NodeSimResult> {
  const startedMs = performance.now();
  const world = new NodeWorld(options.seed);
  const onRejection = (error: unknown): void => {
    // Code of a process that crashed can still be on the microtask queue (a crash lands
    // between two continuations of a reflection run: a detach or a resume can free a long
    // one); its next synchronous disk call throws EBADF (sim-disk.ts). A real crash runs
    // nothing more: not the node's error.
    if (error instanceof Error && /a handle of a process that crashed/.test(error.message)) return;
    world.nodeErrors.push(error);
  };
  process.on("unhandledRejection", onRejection);
  try {
    await world.drive(world.run(options.faultyMs ?? 3_000, options.healMsMax ?? 60_000));
    if (world.nodeErrors.length > 0) throw new SimFailure("assert", describeError(world.nodeErrors[0]));
    world.counts.seeds = 1;
    world.counts.virtualMs = world.scheduler.nowMs;
    world.counts.events = world.scheduler.eventsRun;
    return { ok: true, seed: options.seed, config: world.config, counts: world.counts, realMs: performance.now() - startedMs, imagesDigest: options.imagesDigest === true ? world.imagesDigest() : undefined };
  } catch (error) {
    const invariant = error instanceof SimFailure ? error.invariant : error instanceof InvariantError ? "assert" : "error";
    const message = error instanceof Error ? `${error.message}${error instanceof SimFailure ? "" : `\n${error.stack ?? ""}`}` : String(error);
    world.counts.seeds = 1;
    return { ok: false, seed: options.seed, config: world.config, atMs: world.scheduler.nowMs, invariant, message, counts: world.counts };
  } finally {
    process.off("unhandledRejection", onRejection);
  }
}
