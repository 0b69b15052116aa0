// The consistency domain on a secondary as a pure machine (DESIGN.md, "Domains, takeover and
// fencing"; issue 7 item 1): which groups are reflected together up to one frontier, how a
// group joins it (checkpoint before join), what holds it (a stopped member), and how a group
// leaves it (takeover). The Reflector (src/secondary/reflector.ts) is the shell: it applies
// records, checkpoints, and executes these effects in order; core/reflect.ts has the
// frontier and the reflection order.
//
// Membership: a group becomes a member once its initial copy is done and the join is saved
// (or at start, when node.json says it replicates), and stops being one when a takeover has
// reflected it to its cut. One domain per primary node in time mode (CONTRACT.md: each
// primary is its own domain unless named otherwise); seq groups each stand alone and share
// the key "seq" only for bookkeeping. A named shared domain (`pair create --domain`,
// core/named-domain.ts) is one more key from domainKeyOf.
//
// The join point (issue 8, kind 3; docs/replication.md "Consistency domains: joining and
// leaving"): a group that joins (its initial copy done, or `pair attach`) is consistent with
// the others only once every member has reflected through the later of its own cut and the
// highest position any other member had reflected when it joined. The machine records that
// point when the join is checkpointed (reflection is held then, so nothing moves past it) and
// the shell saves it with the membership; joinPending() says whether it is still ahead.
// Reflection runs in position order across the domain, so once the joiner applies a record
// past its cut at or past that position, every member has applied everything before it.
//
// Leaving: a takeover, or `pair detach` (the group then reflects alone, in a domain of its
// own, and is no longer consistent with the others).
//
// The join rule (found by the whole-node simulation, seeds 209 and 3255): a join lowers the
// frontier the domain may compute after a restart (the joiner's arrived position may lie
// below what the others applied), and a restarted secondary re-applies only up to the
// frontier it computes then. So everything the members applied is checkpointed before the
// join is saved, with reflection held until the save is done, and a join is refused while a
// member is stopped or could not be checkpointed (its applies may not be durable).
import { assert, unreachable } from "./assert.ts";
import { faultInjected } from "./faults.ts";
import { comparePositions, formatPosition, type Position } from "./position.ts";
import { asAcceptNumber, asWriteTimeUs } from "./types.ts";

export type DomainMode = "time" | "seq";

/**
 * The domain a group belongs to, from its persisted secondary record (so a restart keeps it).
 * Time mode: the groups replicated from one primary node, unless the pair was created with
 * `--domain NAME` (then every group of that name, of any primary whose write times are
 * comparable: core/named-domain.ts checks that at pair create). Seq and marker: each group is
 * consistent on its own.
 */
export function domainKeyOf(group: { readonly reflect: "time" | "seq" | "marker"; readonly primaryNode: string; readonly domain?: { readonly name: string } | undefined }): string {
  if (group.reflect !== "time") return "seq";
  // The old fault: every primary's groups in one time domain by default.
  if (faultInjected("position-tie-asserts")) return group.domain === undefined ? "time" : `named/${group.domain.name}`;
  return group.domain === undefined ? `time/${group.primaryNode}` : `named/${group.domain.name}`;
}

export function domainModeOf(reflect: "time" | "seq" | "marker"): DomainMode {
  return reflect === "time" ? "time" : "seq";
}

/**
 * Where a group joined its domain (persisted with the membership: node.json's
 * `secondary.domainJoin`). The joiner is consistent with the other members once it has
 * reflected a record past `afterSequence` at or past (`writeTimeUs`, `acceptNumber`).
 */
export interface JoinPoint {
  /** The joiner's cut: its reflected sequence when it joined, at least its copy's consistentFromSequence. */
  readonly afterSequence: number;
  /** The highest position any other member had reflected when it joined. */
  readonly writeTimeUs: number;
  readonly acceptNumber: number;
  /** When it joined (wall clock, ISO 8601; for status only). */
  readonly at: string;
}

export interface DomainMember {
  readonly groupId: number;
  readonly name: string;
  /** Why the member is stopped (a full disk or an I/O error), while it is. */
  readonly stoppedReason: string | undefined;
  /** Where it joined; null: consistent with the others from the start (the first member, seq mode, or joined before issue 8). */
  readonly joinPoint: JoinPoint | null;
}

/** What the shell knows of a member's reflection (its volumes, not the checkpoint). */
export interface MemberReflected {
  readonly groupId: number;
  readonly position: Position;
}

/** A join being made durable; reflection of the domain is held meanwhile (when `held`). */
export interface DomainJoin {
  readonly groupId: number;
  readonly name: string;
  readonly phase: "checkpointing" | "saving";
  readonly held: boolean;
  /** The joiner's cut (see JoinPoint.afterSequence) and when it asked. */
  readonly afterSequence: number;
  readonly at: string;
  /** Computed once the members are checkpointed (reflection held): what the save records. */
  readonly joinPoint: JoinPoint | null;
}

export interface DomainState {
  readonly key: string;
  readonly mode: DomainMode;
  /** The groups reflected together, in join order. Volatile: rebuilt at start from node.json. */
  readonly members: readonly DomainMember[];
  readonly joining: DomainJoin | undefined;
  /** Counts membership changes: the shell's ordering tracker starts over when it moves. */
  readonly epoch: number;
}

export function emptyDomain(key: string, mode: DomainMode): DomainState {
  return { key, mode, members: [], joining: undefined, epoch: 0 };
}

/** A member of the domain that could not be checkpointed for a join, and why. */
export interface NotDurableMember {
  readonly groupId: number;
  readonly name: string;
  /** "stopped (REASON)" or "could not be checkpointed". */
  readonly why: string;
}

export type DomainEvent =
  /** At start: a group node.json says replicates (nothing it applied is past its checkpoint), with its saved join point; also a group detached into a domain of its own. */
  | { readonly type: "recovered"; readonly groupId: number; readonly name: string; readonly stoppedReason: string | undefined; readonly joinPoint: JoinPoint | null }
  /**
   * A group's initial copy is done and synced, or the operator attaches it: it asks to join.
   * `afterSequence`: its cut (see JoinPoint); `at`: the wall time, for status; `reflected`:
   * the members' reflected positions now (used only when the join holds nothing: seq mode).
   */
  | { readonly type: "joinRequested"; readonly groupId: number; readonly name: string; readonly afterSequence: number; readonly at: string; readonly reflected: readonly MemberReflected[] }
  /**
   * The checkpoint a join asked for is done; `notDurable`: members of this domain whose
   * applies are not durable; `reflected`: the members' reflected positions (reflection is
   * held: they stay there until the join is saved); `joinerReflectedSequence`: the joiner's
   * reflected sequence now (a detached group reflects alone until the hold takes effect, so
   * the one it asked with may be behind: seeds 5060, 10358, 11241).
   */
  | { readonly type: "checkpointed"; readonly notDurable: readonly NotDurableMember[]; readonly reflected: readonly MemberReflected[]; readonly joinerReflectedSequence: number }
  /** The join is saved; `stoppedReason`: the joiner's stop, if its disk stopped it meanwhile (it holds the domain from now on). */
  | { readonly type: "joinSaved"; readonly stoppedReason: string | undefined }
  | { readonly type: "joinSaveFailed"; readonly error: string }
  /** The shell failed part-way through a join (an error that is not the disk's): it is over, nothing joined. */
  | { readonly type: "joinAbandoned" }
  /** A takeover reflected the group to its cut: nothing more is applied to it here. */
  | { readonly type: "left"; readonly groupId: number; readonly why: string }
  | { readonly type: "memberStopped"; readonly groupId: number; readonly reason: string }
  | { readonly type: "memberResumed"; readonly groupId: number };

/**
 * What the shell does, in the order given. Ordering rules:
 * - checkpoint before join: `checkpointMembers` comes before `saveJoin`, with reflection held
 *   from `holdReflection` until `releaseReflection` (nothing is applied between the
 *   checkpoint and the save).
 * - `checkpointMembers` and `saveJoin` end their list: the shell feeds back `checkpointed`,
 *   or `joinSaved` / `joinSaveFailed`, and the machine goes on from there.
 */
export type DomainEffect =
  | { readonly type: "holdReflection" }
  | { readonly type: "releaseReflection" }
  /** Checkpoint every member (forced), then report the ones whose applies are not durable. */
  | { readonly type: "checkpointMembers" }
  /** Save the joiner's membership (its lifecycle's persist) with its join point (null: none to wait for). */
  | { readonly type: "saveJoin"; readonly joinPoint: JoinPoint | null }
  /** The join is refused; the joiner's initial copy ends later (the primary sends COPY_DONE again). */
  | { readonly type: "refuseJoin"; readonly reason: string }
  | { readonly type: "log"; readonly level: "info" | "warn"; readonly event: string; readonly fields: Readonly<Record<string, string | number>>; readonly message: string };

export interface DomainStep {
  readonly state: DomainState;
  readonly effects: readonly DomainEffect[];
}

function withMember(state: DomainState, member: DomainMember): DomainState {
  assert(!state.members.some((m) => m.groupId === member.groupId), () => `group ${member.name} joins domain ${state.key} once`);
  return { ...state, members: [...state.members, member], epoch: state.epoch + 1 };
}

function updateMember(state: DomainState, groupId: number, change: (m: DomainMember) => DomainMember): DomainState {
  if (!state.members.some((m) => m.groupId === groupId)) return state;
  return { ...state, members: state.members.map((m) => (m.groupId === groupId ? change(m) : m)) };
}

/**
 * One step of a domain. Assertions: a join while another is in progress (the shell runs one
 * at a time), a completion with no join in progress, a group recovered twice.
 */
export function stepDomain(state: DomainState, event: DomainEvent): DomainStep {
  switch (event.type) {
    case "recovered":
      return { state: withMember(state, { groupId: event.groupId, name: event.name, stoppedReason: event.stoppedReason, joinPoint: state.mode === "time" ? event.joinPoint : null }), effects: [] };
    case "joinRequested": {
      assert(state.joining === undefined, () => `one join at a time in domain ${state.key}`);
      assert(!state.members.some((m) => m.groupId === event.groupId), () => `group ${event.name} asks to join domain ${state.key}, of which it is a member`);
      // Seq mode has no shared frontier: a join lowers nothing, so nothing needs a checkpoint first.
      // The old fault: the join was saved before the domain was checkpointed (seed 209).
      const base = { groupId: event.groupId, name: event.name, afterSequence: event.afterSequence, at: event.at };
      if (state.mode === "seq" || faultInjected("join-before-checkpoint")) {
        const joinPoint = joinPointOf(state, base, event.reflected);
        return { state: { ...state, joining: { ...base, phase: "saving", held: false, joinPoint } }, effects: [{ type: "saveJoin", joinPoint }] };
      }
      return {
        state: { ...state, joining: { ...base, phase: "checkpointing", held: true, joinPoint: null } },
        effects: [{ type: "holdReflection" }, { type: "checkpointMembers" }],
      };
    }
    case "checkpointed": {
      const joining = state.joining;
      assert(joining?.phase === "checkpointing", () => `a checkpoint for a join of domain ${state.key} was asked for`);
      const members = new Set(state.members.map((m) => m.groupId));
      // A member stopped by a disk error, or whose checkpoint could not be made, may hold
      // applies that are not durable: the join waits for it (seed 3255).
      const holding = event.notDurable.find((m) => members.has(m.groupId) || m.groupId === joining.groupId);
      if (holding !== undefined && !faultInjected("join-past-stopped-member")) {
        const reason = `a group cannot join the consistency domain now: group ${holding.name} ${holding.why}; the initial copy ends once it can`;
        return {
          state: { ...state, joining: undefined },
          effects: [{ type: "releaseReflection" }, { type: "refuseJoin", reason }],
        };
      }
      // The cut is where the joiner is with reflection held, not where it was when it asked:
      // a group attached again went on reflecting alone until the hold, and a cut below
      // what it reflected counts it consistent while the others are still behind it.
      const afterSequence = faultInjected("join-cut-before-hold") ? joining.afterSequence : Math.max(joining.afterSequence, event.joinerReflectedSequence);
      const joinPoint = joinPointOf(state, { ...joining, afterSequence }, event.reflected);
      return { state: { ...state, joining: { ...joining, afterSequence, phase: "saving", joinPoint } }, effects: [{ type: "saveJoin", joinPoint }] };
    }
    case "joinSaved": {
      const joining = state.joining;
      assert(joining?.phase === "saving", () => `a join of domain ${state.key} was being saved`);
      const joined = withMember({ ...state, joining: undefined }, { groupId: joining.groupId, name: joining.name, stoppedReason: event.stoppedReason, joinPoint: joining.joinPoint });
      const effects: DomainEffect[] = joining.held ? [{ type: "releaseReflection" }] : [];
      const point = joining.joinPoint;
      effects.push({
        type: "log", level: "info", event: "domain_joined",
        fields: { domain: state.key, group: joining.name, members: joined.members.length, ...(point === null ? {} : { joinAfterSequence: point.afterSequence, joinPosition: `${point.writeTimeUs}/${point.acceptNumber}` }) },
        message: point === null ? "group joined its consistency domain" : "group joined its consistency domain: consistent with the others once it reflected past its join point",
      });
      return { state: joined, effects };
    }
    case "joinSaveFailed": {
      const joining = state.joining;
      assert(joining?.phase === "saving", () => `a join of domain ${state.key} was being saved`);
      return {
        state: { ...state, joining: undefined },
        effects: [...(joining.held ? [{ type: "releaseReflection" } as const] : []), { type: "refuseJoin", reason: `the join could not be saved: ${event.error}` }],
      };
    }
    case "joinAbandoned": {
      const joining = state.joining;
      if (joining === undefined) return { state, effects: [] };
      return { state: { ...state, joining: undefined }, effects: joining.held ? [{ type: "releaseReflection" }] : [] };
    }
    case "left": {
      const member = state.members.find((m) => m.groupId === event.groupId);
      if (member === undefined) return { state, effects: [] };
      return {
        state: { ...state, members: state.members.filter((m) => m.groupId !== event.groupId), epoch: state.epoch + 1 },
        effects: [{ type: "log", level: "info", event: "domain_left", fields: { domain: state.key, group: member.name, why: event.why }, message: "group left its consistency domain" }],
      };
    }
    case "memberStopped":
      return { state: updateMember(state, event.groupId, (m) => ({ ...m, stoppedReason: event.reason })), effects: [] };
    case "memberResumed":
      return { state: updateMember(state, event.groupId, (m) => ({ ...m, stoppedReason: undefined })), effects: [] };
    default:
      return unreachable(event, "domain event");
  }
}

/**
 * The member that holds the whole domain where it is, if any: in time mode a stopped member
 * (nothing past its next record may be applied anywhere in the domain: I1). In seq mode each
 * group stands alone and nothing holds the others.
 */
export function domainHolder(state: DomainState): DomainMember | undefined {
  if (state.mode !== "time") return undefined;
  return state.members.find((m) => m.stoppedReason !== undefined);
}

/** The members reflection may apply to now: time mode all of them unless one holds the domain; seq mode the ones not stopped. */
export function reflectingMembers(state: DomainState): readonly DomainMember[] {
  if (state.mode === "time") return domainHolder(state) === undefined ? state.members : [];
  return state.members.filter((m) => m.stoppedReason === undefined);
}

/** Whether `groupId` is a member. */
export function isMember(state: DomainState, groupId: number): boolean {
  return state.members.some((m) => m.groupId === groupId);
}

/**
 * The member whose arrived position is the frontier (the smallest), when that is another
 * group than `groupId`: reflection of `groupId` waits for it. Time mode only.
 */
export function frontierHolder<G extends { readonly groupId: number; readonly arrivedPosition: Position }>(state: DomainState, groupId: number, members: readonly G[]): G | undefined {
  if (state.mode !== "time" || !isMember(state, groupId)) return undefined;
  let holder: G | undefined;
  for (const g of members) {
    if (!isMember(state, g.groupId)) continue;
    if (holder === undefined || comparePositions(g.arrivedPosition, holder.arrivedPosition) < 0) holder = g;
  }
  return holder === undefined || holder.groupId === groupId ? undefined : holder;
}

/**
 * The join point of `joiner` given the members' reflected positions (issue 8, kind 3): the
 * highest position any member reflected, and the joiner's cut. Null when there is nothing
 * to be consistent with: seq mode (each group stands alone) or no other member. The old
 * fault `late-join-counts-consistent` records none: the joiner counted as consistent with
 * the others as soon as its own copy was caught up.
 */
function joinPointOf(state: DomainState, joiner: { readonly afterSequence: number; readonly at: string }, reflected: readonly MemberReflected[]): JoinPoint | null {
  if (state.mode !== "time" || faultInjected("late-join-counts-consistent")) return null;
  let highest: Position | undefined;
  for (const member of state.members) {
    const position = reflected.find((r) => r.groupId === member.groupId)?.position;
    if (position !== undefined && (highest === undefined || comparePositions(position, highest) > 0)) highest = position;
  }
  if (state.members.length === 0) return null;
  return { afterSequence: joiner.afterSequence, writeTimeUs: highest?.writeTimeUs ?? 0, acceptNumber: highest?.acceptNumber ?? 0, at: joiner.at };
}

/** The join point as a position. */
export function joinPosition(point: JoinPoint): Position {
  return { writeTimeUs: asWriteTimeUs(point.writeTimeUs), acceptNumber: asAcceptNumber(point.acceptNumber) };
}

/**
 * Whether a member with join point `point` is not yet consistent with the other members:
 * it has not reflected a record past `afterSequence` at or past the join position.
 * (`reflectedSequence`, `reflectedPosition`: what its volumes hold, as the reflector applied it.)
 */
export function joinPending(point: JoinPoint | null, reflected: { readonly reflectedSequence: number; readonly reflectedPosition: Position }): boolean {
  if (point === null) return false;
  return reflected.reflectedSequence <= point.afterSequence || comparePositions(reflected.reflectedPosition, joinPosition(point)) < 0;
}

/** What status says of a member whose join is pending. */
export function joinPendingText(point: JoinPoint, reflected: { readonly reflectedSequence: number; readonly reflectedPosition: Position }): string {
  const needsRecord = reflected.reflectedSequence <= point.afterSequence ? `a record past sequence ${point.afterSequence}` : "a record";
  return `joined its consistency domain at ${point.at}: not consistent with the other groups until it has reflected ${needsRecord} at or past position ${point.writeTimeUs}/${point.acceptNumber} ` +
    `(the highest any other member had reflected when it joined; it has reflected sequence ${reflected.reflectedSequence} at ${formatPosition(reflected.reflectedPosition)})`;
}

/**
 * Why a takeover of the named groups may not keep them at one cut, or undefined. A member
 * whose join is pending is not consistent with the other members yet: a takeover that names
 * it together with another member of its domain is refused (alone it is consistent with
 * itself, once its copy is caught up). `facts` gives each named member's reflection.
 */
export function takeoverJoinRefusal(state: DomainState, named: ReadonlySet<number>, facts: (groupId: number) => { readonly reflectedSequence: number; readonly reflectedPosition: Position } | undefined): string | undefined {
  const namedMembers = state.members.filter((m) => named.has(m.groupId));
  if (namedMembers.length < 2) return undefined;
  for (const member of namedMembers) {
    const f = facts(member.groupId);
    if (member.joinPoint === null || f === undefined || !joinPending(member.joinPoint, f)) continue;
    const others = namedMembers.filter((m) => m.groupId !== member.groupId).map((m) => m.name).join(", ");
    return `group ${member.name} is not consistent with ${others} yet: it ${joinPendingText(member.joinPoint, f)}. ` +
      `Take it over without the others (its own image is consistent), or the others without it, or wait until it has reflected past its join point`;
  }
  return undefined;
}

/**
 * Refusal text when a new pair's group would mix reflect modes in one consistency domain
 * (CONTRACT.md: all groups of a domain use one reflect mode), or undefined. `existing`: the
 * live secondary groups of this node (not taken over). A domain is the groups of one primary
 * node, or the groups named into one `--domain`; its time groups and seq groups would be
 * two orderings of what the operator sees as one domain.
 */
export function reflectModeConflict(
  existing: readonly { readonly name: string; readonly reflect: "time" | "seq" | "marker"; readonly primaryNode: string; readonly domain?: { readonly name: string } | undefined }[],
  request: { readonly group: string; readonly reflect: "time" | "seq" | "marker"; readonly primaryNode: string; readonly domain?: { readonly name: string } | undefined },
): string | undefined {
  const identity = (g: { readonly primaryNode: string; readonly domain?: { readonly name: string } | undefined }): string => (g.domain === undefined ? `primary ${g.primaryNode}` : `domain ${g.domain.name}`);
  const other = existing.find((g) => identity(g) === identity(request) && g.name !== request.group && domainModeOf(g.reflect) !== domainModeOf(request.reflect));
  if (other === undefined) return undefined;
  const where = request.domain === undefined ? `the consistency domain of primary ${request.primaryNode}` : `consistency domain ${request.domain.name}`;
  return `group ${request.group} would reflect by ${request.reflect} in ${where}, whose group ${other.name} reflects by ${other.reflect}; ` +
    `all groups of a domain use one reflect mode: create the pair with --reflect ${other.reflect}`;
}
