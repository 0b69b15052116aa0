// The secondary's reflector (patent Fig. 9): T = the frontier (minimum arrived position over
// the consistency domain); every record at or before it is applied to the volumes in
// position order across groups. `seq` groups apply their arrived prefix in sequence order
// ([0046], [0053]). Progress is checkpointed (volumes fdatasync'd, reflected sequence
// persisted, journal trimmed behind it) now and then, not per record.
import type { Logger } from "pino";
import { comparePositions, type Position } from "../core/position.ts";
import { frontier, nextToReflect, ReflectTracker, type ReflectHead, type ReflectMode } from "../core/reflect.ts";
import type { JournalRecord } from "../protocol/journal-record.ts";
import { asAcceptNumber, asGroupId, asSequence } from "../core/types.ts";
import { faultInjected } from "../core/faults.ts";
import type { SecondaryGroup } from "./secondary-group.ts";
import type { Clock, Timer } from "../node/clock.ts";
import { isStorageError } from "../node/group-stop.ts";

/** Records applied before the reflector yields to the event loop. */
const reflectRecordsPerSliceMax = 512;
/** Checkpoint at least this often while reflecting. */
const reflectCheckpointIntervalMs = 1000;

export class Reflector {
  private readonly groups: () => readonly SecondaryGroup[];
  private readonly logger: Logger;
  private readonly checkpointGroup: (group: SecondaryGroup, force: boolean) => Promise<boolean>;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** One per domain: "seq", or "time" and the primary node. */
  private readonly trackers = new Map<string, { key: string; tracker: ReflectTracker }>();
  /** When the last checkpoint started (monotonic ms). */
  private lastCheckpointMs = 0;
  /** A checkpoint due for what was reflected since the last one (it frees journal space). */
  private checkpointTimer: Timer | undefined;
  private readonly clock: Clock;
  private readonly onReflected: (group: SecondaryGroup) => void;
  private readonly dirty = new Set<SecondaryGroup>();
  private failure: Error | undefined;
  private checkpointing: Promise<void> | undefined;

  constructor(options: {
    groups: () => readonly SecondaryGroup[]; logger: Logger; clock: Clock;
    checkpointGroup: (group: SecondaryGroup, force: boolean) => Promise<boolean>;
    /** A group's reflected sequence moved on (the primary is told). */
    onReflected?: (group: SecondaryGroup) => void;
  }) {
    this.clock = options.clock;
    this.onReflected = options.onReflected ?? (() => undefined);
    this.groups = options.groups;
    this.logger = options.logger;
    this.checkpointGroup = options.checkpointGroup;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Something arrived or changed: run a cycle now (or once more after the running one). */
  kick(): void {
    if (this.stopped || this.failure !== undefined) return;
    if (this.joining !== undefined) {
      this.again = true;
      return;
    }
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** Runs cycles until nothing more can be reflected, then checkpoints everything. */
  async drain(): Promise<void> {
    while (this.running !== undefined) await this.running;
    await this.cycle();
    await this.checkpointing;
    await this.checkpointAll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clear(this.checkpointTimer);
    while (this.running !== undefined) await this.running;
    await this.checkpointing;
    await this.checkpointAll();
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.cycle();
        // Checkpoints (an fdatasync of the volumes) run beside reflection, not in its way:
        // a checkpoint only records what was applied before it started.
        if (this.clock.monotonicMs() - this.lastCheckpointMs >= reflectCheckpointIntervalMs && this.checkpointing === undefined) {
          this.checkpointing = this.checkpointAll(false)
            .catch((error: unknown) => {
              this.failure = error as Error;
              this.logger.fatal({ event: "reflector_checkpoint_failed", err: error }, "reflection checkpoint failed");
            })
            .finally(() => {
              this.checkpointing = undefined;
            });
        }
      } while (this.again && !this.stopped && this.joining === undefined);
      // Reflected records free journal space only once checkpointed: when a group waits for
      // room, nothing else may kick the reflector (its full journal refuses every batch), so a
      // timer does. (Idle groups are not polled: their next records kick it.)
      if (!this.stopped && [...this.dirty].some((g) => g.waitingForSpace)) this.scheduleCheckpoint();
    } catch (error) {
      this.failure = error as Error;
      this.logger.fatal({ event: "reflector_failed", err: error }, "reflection stopped");
      throw error;
    }
  }

  /** One pass per mode: apply everything that may be applied now. */
  async cycle(): Promise<void> {
    // Time mode: one consistency domain per primary node (CONTRACT.md: groups of different
    // primaries share a domain only when named so, which is not built yet). Positions of
    // different primaries are not comparable (each numbers its own accepts; NBD writes under
    // --write-time host carry time 0), so one shared frontier mixed them: the secondary hit
    // the reflector's ordering assertion, or silently stopped applying one primary's groups.
    const time = this.groups().filter((g) => g.record.state === "replicating" && !g.frozen && g.record.reflect === "time");
    for (const primary of new Set(time.map((g) => g.record.primaryNode))) {
      await this.reflectDomain("time", time.filter((g) => g.record.primaryNode === primary));
    }
    const seq = this.groups().filter((g) => g.record.state === "replicating" && !g.frozen && (g.record.reflect === "seq" || g.record.reflect === "marker"));
    if (seq.length > 0) await this.reflectDomain("seq", seq);
  }

  /** A join in progress (see beforeJoin): no cycle runs until it is durable. */
  private joining: Promise<void> | undefined;

  /**
   * Makes a group's joining the time domain durable (`persistJoin`, the metadata save that
   * says its copy is done) with reflection held: everything the domain applied before is
   * checkpointed first, and nothing more is applied until the join is saved. Otherwise a
   * power loss after the save and before the reflector's own pre-join checkpoint
   * (checkpointBeforeJoin) restarts the secondary with the new member's low arrived position
   * as the frontier, below records the others applied but never checkpointed: they stay
   * half written back. Found by the whole-node simulation (seed 209).
   * Errors: those of the checkpoint and of `persistJoin`; an Error when a member of the
   * domain is stopped or could not be checkpointed (the join is refused; the primary
   * finishes the copy again later).
   */
  async beforeJoin(persistJoin: () => Promise<void>): Promise<void> {
    if (faultInjected("join-before-checkpoint")) return persistJoin();
    while (this.joining !== undefined) await this.joining;
    let release = (): void => undefined;
    this.joining = new Promise<void>((resolve) => {
      release = resolve;
    });
    try {
      while (this.running !== undefined) await this.running;
      await this.checkpointing;
      await this.checkpointAll(true);
      // A member whose checkpoint could not be made (stopped by a disk error, or not done)
      // may hold applies that are not durable: the join waits for it, or a power loss after
      // the join would leave them half written back (simulation seed 3255).
      const holding = this.groups().find((g) => g.record.state === "replicating" && g.record.reflect === "time" && (g.stopped !== undefined || this.dirty.has(g)));
      if (holding !== undefined && !faultInjected("join-past-stopped-member")) {
        throw new Error(`a group cannot join the consistency domain now: group ${holding.name} ${holding.stopped === undefined ? "could not be checkpointed" : `is stopped (${holding.stopped.reason})`}; the initial copy ends once it can`);
      }
      await persistJoin();
    } finally {
      this.joining = undefined;
      release();
      if (this.again) this.kick();
    }
  }

  /** The members of the time domain the last cycle reflected with. */
  private timeMembers = new Map<string, Set<SecondaryGroup>>();

  /**
   * A group joins the time domain (its initial copy is done): its arrived position may lie
   * below what the others already applied, so from now on the frontier can be lower than
   * before. After a power loss the secondary re-applies only up to the frontier it computes
   * then: records the others applied before the join but after their last checkpoint would
   * stay half written back. So everything applied before a join is checkpointed first
   * (volumes fdatasync'd, reflected positions persisted). Found by the whole-node simulation.
   */
  private async checkpointBeforeJoin(domain: readonly SecondaryGroup[]): Promise<void> {
    const primary = domain[0]?.record.primaryNode ?? "";
    const previous = this.timeMembers.get(primary) ?? new Set<SecondaryGroup>();
    const joined = domain.some((g) => !previous.has(g));
    this.timeMembers.set(primary, new Set(domain));
    if (!joined || ![...previous].some((g) => this.dirty.has(g))) return;
    await this.checkpointing;
    await this.checkpointAll(true);
  }

  private trackerFor(mode: ReflectMode, domain: readonly SecondaryGroup[]): ReflectTracker {
    // A group joining or leaving starts a new tracker: its first records may lie before
    // what the others already reflected, which is right for it (it was not consistent yet).
    const domainKey = mode === "time" ? `time/${domain[0]?.record.primaryNode ?? ""}` : mode;
    const current = this.trackers.get(domainKey);
    // A group that went back to its checkpoint (SecondaryGroup.rewindIfPending) starts one too.
    const members = domain.map((g) => `${g.groupId}.${g.reflectGeneration}`).join(",");
    if (current !== undefined && current.key === members) return current.tracker;
    const tracker = new ReflectTracker(mode, domain.map((g) => ({ groupId: asGroupId(g.groupId), reflectedSequence: asSequence(g.reflectedSequence) })));
    this.trackers.set(domainKey, { key: members, tracker });
    return tracker;
  }

  private async reflectDomain(mode: ReflectMode, allMembers: readonly SecondaryGroup[]): Promise<void> {
    // A stopped group (full disk, I/O error) holds its time domain where it is: nothing past
    // its next record may be applied anywhere in the domain (I1), so the domain waits for it.
    // In seq mode each group stands alone, and only the stopped one waits.
    if (mode === "time" && allMembers.some((g) => g.stopped !== undefined)) return;
    for (const group of allMembers) group.rewindIfPending();
    const domain = mode === "time" ? allMembers : allMembers.filter((g) => g.stopped === undefined);
    if (domain.length === 0) return;
    if (mode === "time") await this.checkpointBeforeJoin(domain);
    const tracker = this.trackerFor(mode, domain);
    let frontierPosition = mode === "time" ? frontier(domain) : undefined;
    // The old fault: write times only; a tie let a later-accepted record of another group through.
    if (frontierPosition !== undefined && faultInjected("time-only-frontier")) frontierPosition = { writeTimeUs: frontierPosition.writeTimeUs, acceptNumber: asAcceptNumber(Number.MAX_SAFE_INTEGER) };
    let applied = 0;
    for (;;) {
      // Every group with arrived records must show its head before choosing: an unread
      // group might hold the smallest position.
      const fills = domain.filter((g) => g.needsFill).map((g) => g.fill().catch((error: unknown) => this.stopOnStorageError(g, error, g.journal.dir)));
      if (fills.length > 0) await Promise.all(fills);
      if (domain.some((g) => g.stopped !== undefined)) return;
      const heads: ReflectHead[] = [];
      const byId = new Map<number, SecondaryGroup>();
      for (const group of domain) {
        const record = group.peek();
        if (record === undefined) continue;
        byId.set(group.groupId, group);
        heads.push({
          groupId: asGroupId(group.groupId),
          sequence: record.sequence,
          position: { writeTimeUs: record.writeTimeUs, acceptNumber: record.acceptNumber },
          arrivedSequence: asSequence(group.arrivedSequence),
        });
      }
      const chosen = nextToReflect(heads, frontierPosition, mode);
      if (chosen === undefined) return;
      const group = byId.get(chosen.groupId);
      const record = group?.peek();
      if (group === undefined || record === undefined) return;
      // The chosen group may run on alone while its records come before every other head
      // (and, by time, before the frontier): the same order nextToReflect would pick, one
      // choice per run instead of one per record.
      let bound: Position | undefined;
      for (const head of heads) {
        if (head.groupId !== chosen.groupId && (bound === undefined || comparePositions(head.position, bound) < 0)) bound = head.position;
      }
      let next: JournalRecord | undefined = record;
      while (next !== undefined) {
        const position: Position = { writeTimeUs: next.writeTimeUs, acceptNumber: next.acceptNumber };
        if (next !== record) {
          if (bound !== undefined && comparePositions(position, bound) >= 0) break;
          if (frontierPosition !== undefined && comparePositions(position, frontierPosition) > 0) break;
        }
        try {
          await group.applyNext(next);
        } catch (error) {
          this.stopOnStorageError(group, error, group.journal.dir);
          this.dirty.add(group);
          return;
        }
        if (applied === 0) group.noteProgress();
        tracker.noteReflected(chosen.groupId, next.sequence, position);
        applied += 1;
        if (applied % reflectRecordsPerSliceMax === 0) {
          await this.clock.yieldToEvents();
          if (this.stopped) break;
        }
        next = group.peek();
      }
      this.dirty.add(group);
      this.onReflected(group);
      if (this.stopped) return;
    }
  }

  private scheduleCheckpoint(): void {
    if (this.checkpointTimer !== undefined) return;
    const dueInMs = Math.max(1, reflectCheckpointIntervalMs - (this.clock.monotonicMs() - this.lastCheckpointMs));
    this.checkpointTimer = this.clock.setTimeout(() => {
      this.checkpointTimer = undefined;
      this.kick();
    }, dueInMs);
  }

  /**
   * The group of `group`'s consistency domain whose arrived position is the frontier, when
   * that is another group (time mode): reflection of `group` waits for it.
   */
  frontierHolder(group: SecondaryGroup): SecondaryGroup | undefined {
    if (group.record.reflect !== "time" || group.record.state !== "replicating") return undefined;
    const domain = this.groups().filter((g) => g.record.state === "replicating" && !g.frozen && g.record.reflect === "time" && g.record.primaryNode === group.record.primaryNode);
    let holder: SecondaryGroup | undefined;
    for (const g of domain) {
      if (holder === undefined || comparePositions(g.arrivedPosition, holder.arrivedPosition) < 0) holder = g;
    }
    return holder === group ? undefined : holder;
  }

  /** Checkpoints every group that reflected something; `force` (drain, stop) also the ones that reflected only time advances lately. */
  async checkpointAll(force = true): Promise<void> {
    this.lastCheckpointMs = this.clock.monotonicMs();
    const groups = [...this.dirty];
    this.dirty.clear();
    for (const group of groups) {
      try {
        if (!(await this.checkpointGroup(group, force))) this.dirty.add(group);
      } catch (error) {
        this.stopOnStorageError(group, error, group.journal.dir);
      }
    }
  }

  /** The disk refused (ENOSPC, EIO): that group stops and resumes by itself; anything else is a bug and stops the node. */
  private stopOnStorageError(group: SecondaryGroup, error: unknown, path: string): void {
    if (!isStorageError(error)) throw error;
    group.stopWith(error as Error, path);
  }
}
