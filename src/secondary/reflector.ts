// The secondary's reflector (patent Fig. 9): T = the frontier (minimum arrived position over
// the consistency domain); every record at or before it is applied to the volumes in
// position order across groups. `seq` groups apply their arrived prefix in sequence order
// ([0046], [0053]). Progress is checkpointed (volumes fdatasync'd, reflected sequence
// persisted, journal trimmed behind it) now and then, not per record.
//
// Which groups form a domain, how one joins (checkpoint before join) and leaves, and what
// holds a domain (a stopped member) is the pure machine of core/consistency-domain.ts; this
// class keeps one state per domain and executes its effects.
import { writeLogEffect } from "../node/logger.ts";
import type { Logger } from "pino";
import { atNode, comparePositions, type DomainPosition } from "../core/position.ts";
import { compareHeads, frontier, nextToReflect, ReflectTracker, type ReflectHead, type ReflectMode } from "../core/reflect.ts";
import {
  domainHolder, domainKeyOf, domainModeOf, emptyDomain, frontierHolder, isMember, reflectingMembers, stepDomain, takeoverJoinRefusal,
  type DomainEvent, type DomainState, type JoinPoint, type MemberReflected, type NotDurableMember,
} from "../core/consistency-domain.ts";
import { domainHeldShown } from "../core/pair-view.ts";
import type { JournalRecord } from "../protocol/journal-record.ts";
import { asAcceptNumber, asGroupId, asSequence } from "../core/types.ts";
import { assert } from "../core/assert.ts";
import { faultInjected } from "../core/faults.ts";
import type { SecondaryGroup } from "./secondary-group.ts";
import type { Clock, Timer } from "../node/clock.ts";
import { isStorageError } from "../node/group-stop.ts";
import { errorCode } from "../storage/fs.ts";

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
  /** One machine state per consistency domain (core/consistency-domain.ts), by domain key. */
  private readonly domains = new Map<string, DomainState>();
  /**
   * Groups with records waiting that another member holds back (issue 8, kind 4), by group
   * id: the holder, and since when reflection of the group has not moved (monotonic ms for
   * durations, wall ISO for status), at which reflected sequence.
   */
  private readonly held = new Map<number, { holder: string; sinceMs: number; sinceIso: string; reflectedAt: number }>();

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

  /** Resolves once no cycle or checkpoint runs (a group that left its domain is then touched by nobody else). */
  async idle(): Promise<void> {
    while (this.running !== undefined || this.checkpointing !== undefined) {
      while (this.running !== undefined) await this.running;
      await this.checkpointing;
    }
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

  /**
   * One pass per domain: apply everything that may be applied now. Time mode: one domain per
   * primary node (CONTRACT.md: groups of different primaries share a domain only when named
   * so, which is not built yet). Positions of different primaries are not comparable (each
   * numbers its own accepts; NBD writes under --write-time host carry time 0), so one shared
   * frontier mixed them: the secondary hit the reflector's ordering assertion, or silently
   * stopped applying one primary's groups.
   */
  async cycle(): Promise<void> {
    for (const key of [...this.domains.keys()]) {
      await this.reflectDomain(key);
      this.noteHeld(key);
    }
  }

  /**
   * After a pass over a domain: which members have records waiting that another member holds
   * back (a stopped member, or the one whose arrived position is the frontier), and since
   * when reflection of each has not moved (issue 8, kind 4: every held group says so).
   */
  private noteHeld(key: string): void {
    const state = this.domains.get(key);
    if (state === undefined) return;
    const live = this.groups().filter((g) => isMember(state, g.groupId));
    for (const group of live) {
      const stopped = domainHolder(state);
      const holder = stopped !== undefined && stopped.groupId !== group.groupId ? stopped.name : frontierHolder(state, group.groupId, live)?.name;
      if (holder === undefined || group.arrivedSequence <= group.reflectedSequence || group.stopped !== undefined) {
        this.held.delete(group.groupId);
        continue;
      }
      const entry = this.held.get(group.groupId);
      if (entry !== undefined && entry.reflectedAt === group.reflectedSequence) {
        entry.holder = holder;
        continue;
      }
      this.held.set(group.groupId, { holder, sinceMs: this.clock.monotonicMs(), sinceIso: new Date(this.clock.wallMs()).toISOString(), reflectedAt: group.reflectedSequence });
    }
  }

  /**
   * The member holding `group`'s reflection back while its records wait, since when, and
   * for how long (ms, monotonic); `shown` once status calls it held: at once when the holder
   * is stopped or has no stream from its primary, else after domainHeldShownAfterMs (core/pair-view.ts, domainHeldShown).
   */
  heldState(group: SecondaryGroup): { readonly holder: SecondaryGroup | undefined; readonly holderName: string; readonly sinceIso: string; readonly forMs: number; readonly shown: boolean } | undefined {
    const entry = this.held.get(group.groupId);
    if (entry === undefined || group.arrivedSequence <= group.reflectedSequence) return undefined;
    const holder = this.groups().find((g) => g.name === entry.holder);
    const forMs = Math.max(0, this.clock.monotonicMs() - entry.sinceMs);
    const shown = domainHeldShown({ holderPresent: holder !== undefined, holderStopped: holder?.stopped !== undefined, holderStreams: holder?.streams.size ?? 0, heldForMs: forMs });
    return { holder, holderName: entry.holder, sinceIso: entry.sinceIso, forMs, shown };
  }

  // ---- membership (core/consistency-domain.ts) --------------------------------------------

  /** The key of `group`'s domain: its primary's (domainKeyOf), or one of its own while detached (`pair detach`). */
  private keyOf(group: SecondaryGroup, detached = this.detached.has(group.groupId)): string {
    return detached ? `detached/${group.name}` : domainKeyOf(group.record);
  }

  /** Groups detached from their domain (`pair detach`; node.json's `secondary.detached`). */
  private readonly detached = new Set<number>();

  private domainOf(group: SecondaryGroup, detached?: boolean): DomainState {
    const key = this.keyOf(group, detached);
    return this.domains.get(key) ?? emptyDomain(key, domainModeOf(group.record.reflect));
  }

  /** Steps a domain's machine; returns its effects for the caller to execute. */
  private stepDomain(group: SecondaryGroup, event: DomainEvent, detached?: boolean): ReturnType<typeof stepDomain>["effects"] {
    const { state, effects } = stepDomain(this.domainOf(group, detached), event);
    this.domains.set(state.key, state);
    for (const effect of effects) {
      if (effect.type === "log") writeLogEffect(this.logger, effect);
    }
    // The data path's view of the join point (SecondaryGroup.consistent, status).
    const member = state.members.find((m) => m.groupId === group.groupId);
    group.domainJoinPoint = member?.joinPoint ?? null;
    return effects;
  }

  /** At start: a group node.json says replicates is a member of its domain (or of its own, when detached), with its saved join point. */
  recovered(group: SecondaryGroup): void {
    if (group.record.detached === true) this.detached.add(group.groupId);
    this.stepDomain(group, { type: "recovered", groupId: group.groupId, name: group.name, stoppedReason: group.stopped?.reason, joinPoint: group.record.domainJoin ?? null });
  }

  /** The members' reflected positions (what their volumes hold), for a join point. */
  private reflectedOf(group: SecondaryGroup): MemberReflected[] {
    const domain = this.domainOf(group);
    return this.groups().filter((g) => isMember(domain, g.groupId)).map((g) => ({ groupId: g.groupId, position: g.reflectedPosition }));
  }

  /** The group's disk stopped it (or it resumed): a stopped member holds its time domain. */
  memberStopChanged(group: SecondaryGroup): void {
    const stop = group.stopped;
    this.stepDomain(group, stop === undefined ? { type: "memberResumed", groupId: group.groupId } : { type: "memberStopped", groupId: group.groupId, reason: stop.reason });
  }

  /** A takeover reflected the group to its cut: nothing more is applied to it. */
  leave(group: SecondaryGroup, why: string): void {
    this.stepDomain(group, { type: "left", groupId: group.groupId, why });
    this.held.delete(group.groupId);
  }

  /** Whether `group` is detached from its domain (`pair detach`). */
  isDetached(group: SecondaryGroup): boolean {
    return this.detached.has(group.groupId);
  }

  /** The other members of `group`'s domain, by name. */
  otherMembers(group: SecondaryGroup): string[] {
    return this.domainOf(group).members.filter((m) => m.groupId !== group.groupId).map((m) => m.name);
  }

  /**
   * `pair detach`: the group leaves its domain and reflects alone in one of its own; the
   * others are no longer held by it. `save` persists `detached` first (persist before
   * change: a restart must not find it a member with the others reflected past it). Errors: the save's.
   */
  async detach(group: SecondaryGroup, save: () => Promise<void>): Promise<void> {
    while (this.joining !== undefined) await this.joining;
    await save();
    this.stepDomain(group, { type: "left", groupId: group.groupId, why: "detached by the operator" });
    this.detached.add(group.groupId);
    this.stepDomain(group, { type: "recovered", groupId: group.groupId, name: group.name, stoppedReason: group.stopped?.reason, joinPoint: null });
    this.held.delete(group.groupId);
    this.kick();
  }

  /**
   * `pair attach`: a detached group joins its domain again, under the join rule (checkpoint
   * before join, and a join point: it is consistent with the others once it reflected past
   * it). Resolves with why the join is refused, or undefined. `save` persists the membership
   * (detached no more, the join point).
   */
  async attach(group: SecondaryGroup, save: (joinPoint: JoinPoint | null) => Promise<void>): Promise<string | undefined> {
    while (this.joining !== undefined) await this.joining;
    this.stepDomain(group, { type: "left", groupId: group.groupId, why: "attaching to its consistency domain" }, true);
    this.detached.delete(group.groupId);
    let refusal: string | undefined;
    try {
      refusal = await this.join(group, save, group.reflectedSequence);
    } finally {
      if (!isMember(this.domainOf(group), group.groupId)) {
        this.detached.add(group.groupId);
        this.stepDomain(group, { type: "recovered", groupId: group.groupId, name: group.name, stoppedReason: group.stopped?.reason, joinPoint: null });
      }
      this.kick();
    }
    return refusal;
  }

  /**
   * Why a takeover of `named` together may not keep them at one cut (a member whose join is
   * pending, named with another member of its domain), or undefined.
   */
  takeoverRefusal(named: readonly SecondaryGroup[]): string | undefined {
    const ids = new Set(named.map((g) => g.groupId));
    const byId = new Map(named.map((g) => [g.groupId, g]));
    for (const key of new Set(named.map((g) => this.keyOf(g)))) {
      const state = this.domains.get(key);
      if (state === undefined) continue;
      const refusal = takeoverJoinRefusal(state, ids, (id) => byId.get(id));
      if (refusal !== undefined) return refusal;
    }
    return undefined;
  }

  /** A join in progress (see join): no cycle runs until it is durable. */
  private joining: Promise<void> | undefined;

  /**
   * A group whose initial copy is done joins its domain: the domain's machine decides
   * (checkpoint before join, refused while a member is stopped or not checkpointed) and this
   * executes it; `save` is the group's save of `replicating`, made with reflection held.
   * Without the checkpoint first, a power loss after the save restarted the secondary with
   * the new member's low arrived position as the frontier, below records the others applied
   * but never checkpointed: they stayed half written back (simulation seed 209).
   * Resolves with undefined once joined, or with why the join is refused (the primary ends
   * the copy again later). Errors: the checkpoint's, when not the disk's (a bug).
   */
  async join(group: SecondaryGroup, save: (joinPoint: JoinPoint | null) => Promise<void>, afterSequence: number): Promise<string | undefined> {
    while (this.joining !== undefined) await this.joining;
    let release = (): void => undefined;
    let held = false;
    let refusal: string | undefined;
    try {
      const at = new Date(this.clock.wallMs()).toISOString();
      let effects = this.stepDomain(group, { type: "joinRequested", groupId: group.groupId, name: group.name, afterSequence, at, reflected: this.reflectedOf(group) });
      while (effects.length > 0) {
        let next: DomainEvent | undefined;
        for (const effect of effects) {
          assert(next === undefined, "an effect with a completion ends its list");
          switch (effect.type) {
            case "holdReflection":
              // The machine holds the joiner's domain; this shell holds every domain (one loop
              // reflects them all), which is more than needed and never less.
              this.joining = new Promise<void>((resolve) => {
                release = resolve;
              });
              held = true;
              while (this.running !== undefined) await this.running;
              await this.checkpointing;
              break;
            case "checkpointMembers":
              await this.checkpointAll(true);
              next = { type: "checkpointed", notDurable: this.notDurable(group), reflected: this.reflectedOf(group), joinerReflectedSequence: group.reflectedSequence };
              break;
            case "saveJoin":
              try {
                await save(effect.joinPoint);
                next = { type: "joinSaved", stoppedReason: group.stopped?.reason };
              } catch (error) {
                next = { type: "joinSaveFailed", error: (error as Error).message };
              }
              break;
            case "releaseReflection":
              held = false;
              this.releaseJoin(release);
              break;
            case "refuseJoin":
              refusal = effect.reason;
              break;
            case "log":
              break;
          }
        }
        effects = next === undefined ? [] : this.stepDomain(group, next);
      }
    } catch (error) {
      this.stepDomain(group, { type: "joinAbandoned" });
      throw error;
    } finally {
      if (held) this.releaseJoin(release);
    }
    return refusal;
  }

  private releaseJoin(release: () => void): void {
    this.joining = undefined;
    release();
    if (this.again) this.kick();
  }

  /**
   * Members of `group`'s domain whose applies may not be durable after a forced checkpoint:
   * stopped by a disk error, or not checkpointed (simulation seed 3255).
   */
  private notDurable(group: SecondaryGroup): NotDurableMember[] {
    const domain = this.domainOf(group);
    const live = new Map(this.groups().map((g) => [g.groupId, g]));
    const result: NotDurableMember[] = [];
    // The joiner too: a group attached again after it reflected alone holds applies past its
    // checkpoint; saved into the domain before they are durable, a power loss leaves them written
    // back in part past the frontier the restart replays to (seeds 5060, 9947, 10358, 11241).
    const ids = [...domain.members.map((m) => m.groupId), ...(domain.members.some((m) => m.groupId === group.groupId) ? [] : [group.groupId])];
    for (const id of ids) {
      const g = live.get(id);
      if (g === undefined) continue;
      if (g.stopped !== undefined) result.push({ groupId: g.groupId, name: g.name, why: `is stopped (${g.stopped.reason})` });
      else if (this.dirty.has(g)) result.push({ groupId: g.groupId, name: g.name, why: "could not be checkpointed" });
    }
    return result;
  }

  private trackerFor(mode: ReflectMode, domainKey: string, epoch: number, domain: readonly SecondaryGroup[]): ReflectTracker {
    // A group joining or leaving starts a new tracker: its first records may lie before
    // what the others already reflected, which is right for it (it was not consistent yet).
    // (The epoch too: a group detached and attached again comes back with the same members.)
    const current = this.trackers.get(domainKey);
    // A group that went back to its checkpoint (SecondaryGroup.rewindIfPending) starts one too.
    const members = `${epoch}|${domain.map((g) => `${g.groupId}.${g.reflectGeneration}`).join(",")}`;
    if (current !== undefined && current.key === members) return current.tracker;
    const tracker = new ReflectTracker(mode, domain.map((g) => ({ groupId: asGroupId(g.groupId), reflectedSequence: asSequence(g.reflectedSequence) })));
    this.trackers.set(domainKey, { key: members, tracker });
    return tracker;
  }

  private async reflectDomain(key: string): Promise<void> {
    const state = this.domains.get(key);
    if (state === undefined || state.members.length === 0) return;
    // A stopped group (full disk, I/O error) holds its time domain where it is: nothing past
    // its next record may be applied anywhere in the domain (I1), so the domain waits for it.
    // In seq mode each group stands alone, and only the stopped one waits.
    if (domainHolder(state) !== undefined) return;
    const live = new Map(this.groups().map((g) => [g.groupId, g]));
    const members = (ids: readonly { readonly groupId: number }[]): SecondaryGroup[] => ids.flatMap((m) => {
      const g = live.get(m.groupId);
      return g === undefined ? [] : [g];
    });
    for (const group of members(state.members)) group.rewindIfPending();
    const domain = members(reflectingMembers(state));
    if (domain.length === 0) return;
    const mode: ReflectMode = state.mode;
    const tracker = this.trackerFor(mode, key, state.epoch, domain);
    // Every position of the domain names its primary node: a domain named over several
    // primaries orders them (write time, node, accept number); ties are never asserted.
    // A group a takeover fenced, whose records have all arrived, holds no frontier (core/reflect.ts frontier).
    let frontierPosition = mode === "time" ? frontier(domain.map((g) => ({ arrivedPosition: atNode(g.arrivedPosition, g.record.primaryNode), complete: g.complete }))) : undefined;
    // The old fault: write times only; a tie let a later-accepted record of another group through.
    if (frontierPosition !== undefined && faultInjected("time-only-frontier")) frontierPosition = { writeTimeUs: frontierPosition.writeTimeUs, acceptNumber: asAcceptNumber(Number.MAX_SAFE_INTEGER), node: "\u{10FFFF}" };
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
          position: atNode(record, group.record.primaryNode),
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
      let bound: ReflectHead | undefined;
      for (const head of heads) {
        if (head.groupId !== chosen.groupId && (bound === undefined || compareHeads(head, bound) < 0)) bound = head;
      }
      let next: JournalRecord | undefined = record;
      while (next !== undefined) {
        const position: DomainPosition = atNode(next, group.record.primaryNode);
        if (next !== record) {
          if (bound !== undefined && compareHeads({ groupId: chosen.groupId, position }, bound) >= 0) break;
          if (frontierPosition !== undefined && comparePositions(position, frontierPosition) > 0) break;
        }
        try {
          await group.applyNext(next);
        } catch (error) {
          // A write the file system refused for want of space leaves what was written before
          // with its blocks (the image stays consistent as of the last record reflected, the
          // refused one at most partly written); an I/O error may have lost more.
          const code = errorCode(error);
          this.stopOnStorageError(group, error, group.journal.dir, code !== "ENOSPC" && code !== "EDQUOT");
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
    const members = this.groups().filter((g) => !g.complete).map((g) => ({ groupId: g.groupId, arrivedPosition: atNode(g.arrivedPosition, g.record.primaryNode), group: g }));
    return frontierHolder(this.domainOf(group), group.groupId, members)?.group;
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
        // The checkpoint's fdatasync of the volumes may be what failed.
        this.stopOnStorageError(group, error, group.journal.dir, true);
      }
    }
  }

  /** The disk refused (ENOSPC, EIO): that group stops and resumes by itself; anything else is a bug and stops the node. `volumesTouched`: a volume write or fdatasync may be what failed. */
  private stopOnStorageError(group: SecondaryGroup, error: unknown, path: string, volumesTouched = false): void {
    if (!isStorageError(error)) throw error;
    group.stopWith(error as Error, path, volumesTouched);
  }
}
