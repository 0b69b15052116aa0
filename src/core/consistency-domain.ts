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
// The join rule (found by the whole-node simulation, seeds 209 and 3255): a join lowers the
// frontier the domain may compute after a restart (the joiner's arrived position may lie
// below what the others applied), and a restarted secondary re-applies only up to the
// frontier it computes then. So everything the members applied is checkpointed before the
// join is saved, with reflection held until the save is done, and a join is refused while a
// member is stopped or could not be checkpointed (its applies may not be durable).
import { assert, unreachable } from "./assert.ts";
import { faultInjected } from "./faults.ts";
import { comparePositions, type Position } from "./position.ts";

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

export interface DomainMember {
  readonly groupId: number;
  readonly name: string;
  /** Why the member is stopped (a full disk or an I/O error), while it is. */
  readonly stoppedReason: string | undefined;
}

/** A join being made durable; reflection of the domain is held meanwhile (when `held`). */
export interface DomainJoin {
  readonly groupId: number;
  readonly name: string;
  readonly phase: "checkpointing" | "saving";
  readonly held: boolean;
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
  /** At start: a group node.json says replicates (nothing it applied is past its checkpoint). */
  | { readonly type: "recovered"; readonly groupId: number; readonly name: string; readonly stoppedReason: string | undefined }
  /** A group's initial copy is done and synced: it asks to join. */
  | { readonly type: "joinRequested"; readonly groupId: number; readonly name: string }
  /** The checkpoint a join asked for is done; `notDurable`: members of this domain whose applies are not durable. */
  | { readonly type: "checkpointed"; readonly notDurable: readonly NotDurableMember[] }
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
  /** Save the joiner's `replicating` state (its lifecycle's persist). */
  | { readonly type: "saveJoin" }
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
      return { state: withMember(state, { groupId: event.groupId, name: event.name, stoppedReason: event.stoppedReason }), effects: [] };
    case "joinRequested": {
      assert(state.joining === undefined, () => `one join at a time in domain ${state.key}`);
      assert(!state.members.some((m) => m.groupId === event.groupId), () => `group ${event.name} asks to join domain ${state.key}, of which it is a member`);
      // Seq mode has no shared frontier: a join lowers nothing, so nothing needs a checkpoint first.
      // The old fault: the join was saved before the domain was checkpointed (seed 209).
      if (state.mode === "seq" || faultInjected("join-before-checkpoint")) {
        return { state: { ...state, joining: { groupId: event.groupId, name: event.name, phase: "saving", held: false } }, effects: [{ type: "saveJoin" }] };
      }
      return {
        state: { ...state, joining: { groupId: event.groupId, name: event.name, phase: "checkpointing", held: true } },
        effects: [{ type: "holdReflection" }, { type: "checkpointMembers" }],
      };
    }
    case "checkpointed": {
      const joining = state.joining;
      assert(joining?.phase === "checkpointing", () => `a checkpoint for a join of domain ${state.key} was asked for`);
      const members = new Set(state.members.map((m) => m.groupId));
      // A member stopped by a disk error, or whose checkpoint could not be made, may hold
      // applies that are not durable: the join waits for it (seed 3255).
      const holding = event.notDurable.find((m) => members.has(m.groupId));
      if (holding !== undefined && !faultInjected("join-past-stopped-member")) {
        const reason = `a group cannot join the consistency domain now: group ${holding.name} ${holding.why}; the initial copy ends once it can`;
        return {
          state: { ...state, joining: undefined },
          effects: [{ type: "releaseReflection" }, { type: "refuseJoin", reason }],
        };
      }
      return { state: { ...state, joining: { ...joining, phase: "saving" } }, effects: [{ type: "saveJoin" }] };
    }
    case "joinSaved": {
      const joining = state.joining;
      assert(joining?.phase === "saving", () => `a join of domain ${state.key} was being saved`);
      const joined = withMember({ ...state, joining: undefined }, { groupId: joining.groupId, name: joining.name, stoppedReason: event.stoppedReason });
      const effects: DomainEffect[] = joining.held ? [{ type: "releaseReflection" }] : [];
      effects.push({ type: "log", level: "info", event: "domain_joined", fields: { domain: state.key, group: joining.name, members: joined.members.length }, message: "group joined its consistency domain" });
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
