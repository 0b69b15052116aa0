// The operator's takeover of several secondary groups as one pure machine (issue 8 kind 1;
// DESIGN.md "Domains, takeover and fencing"; the rules and why they are safe:
// docs/replication.md, "Takeover"). The shell (src/secondary/secondary-role.ts) executes the
// effects in order and feeds back their completions; each named group's own lifecycle stays
// in core/secondary-group-machine.ts, which this machine drives through the shell.
//
// A takeover is all or nothing, and durable:
//   idle --requested, every check passes--> fencing (the primary fenced, or with --force declared lost: secondary/fence-primary.ts)
//        --fenced--> draining (streams held, appends waited for, reflection drained)
//        --drained, the cut computed and checked--> saving (the intent and the cut of every group saved once)
//        --intentSaved--> reflecting (each group applied through its cut) --> converting (one group at a time)
//        --every group converted--> clearing (the intent removed) --> idle, answered
//   idle --restarted (node.json holds an unfinished intent)--> reflecting ... the same, at the saved cuts
//
// - Every check that can refuse runs before anything changes: named groups that do not
//   exist, are writable, are still in their initial copy, are in a lifecycle step, are being
//   taken over, or have not received what their consistency point needs. A refusal changes
//   nothing on either node.
// - The cut is computed only once nothing more arrives (streams held, appends done): per
//   time domain, the frontier over the named groups (core/reflect.ts takeoverPlan); seq
//   groups keep their arrived prefix. A cut short of a group's consistency point refuses the
//   takeover (the groups replicate on: the streams were only held, never refused for good).
// - The intent is persisted before anything is converted, and before the primary is told
//   the groups are taken over; a start that finds it finishes the conversion at exactly those
//   cuts. Memory follows the save: a save that fails leaves the takeover abandoned until a
//   restart, which finishes it if the save landed and recovers the groups if it did not.
import { log, type LogEffect } from "./log-effect.ts";
import { assert, unreachable } from "./assert.ts";
import { faultInjected } from "./faults.ts";
import type { Position } from "./position.ts";
import { takeoverPlan, type SequencedPosition } from "./reflect.ts";
import { asGroupId, asSequence } from "./types.ts";
import type { TmErrorCode } from "./errors.ts";
import { takeoverRefusal, type OperatorRefusalCode, type SecondaryGroupState, type TakeoverOutcome } from "./secondary-group-machine.ts";

/** One group of a decided takeover (node.json's `takeoverIntent.groups`). */
export interface TakeoverIntentGroup {
  readonly groupId: number;
  readonly name: string;
  /** The cut: the volumes keep every record through this sequence and none after it. */
  readonly keepThroughSequence: number;
  readonly droppedRecords: number;
}

/** A decided takeover, as saved before anything is converted. */
export interface TakeoverIntent {
  /** Wall clock, ISO 8601: the groups' `takeover.at`. */
  readonly at: string;
  readonly groups: readonly TakeoverIntentGroup[];
}

/** A group the operator named, as the shell finds it when the takeover is asked for. */
export type NamedGroup =
  | { readonly kind: "missing"; readonly name: string }
  /** A group of this node that is not the secondary of a pair. */
  | { readonly kind: "writable"; readonly name: string }
  /** Taken over before: answered with what it kept then. */
  | { readonly kind: "takenOver"; readonly name: string; readonly result: TakeoverOutcome }
  | { readonly kind: "secondary"; readonly name: string; readonly lifecycle: SecondaryGroupState; readonly arrivedSequence: number };

/** A named group once nothing more arrives and reflection is drained: what its cut is computed from. */
export interface DrainedGroup {
  readonly groupId: number;
  readonly name: string;
  /** Its primary node: positions of a domain over several primaries compare with it. */
  readonly node?: string | undefined;
  /** Its primary is fenced and everything it accepted arrived: it holds no frontier. */
  readonly complete?: boolean | undefined;
  /** Its consistency domain (core/consistency-domain.ts domainKeyOf) and mode. */
  readonly domainKey: string;
  readonly mode: "time" | "seq";
  readonly consistentFromSequence: number;
  readonly reflectedSequence: number;
  readonly arrivedSequence: number;
  readonly arrivedPosition: Position;
  /**
   * Time mode: the journal's records after reflectedSequence in sequence order, through
   * arrivedSequence or through the first one past the frontier of the named groups of its domain (the rest cannot be
   * kept). Seq mode: none (a seq group keeps its whole arrived prefix).
   */
  readonly entries: readonly SequencedPosition[];
  /** Records received past a gap (never arrived): dropped. */
  readonly reorderRecords: number;
}

export type TakeoverState =
  | { readonly phase: "idle" }
  /** The primary of the groups being fenced (fault refused-takeover-fails-pair: before the checks, `unchecked` the groups still to check). */
  | { readonly phase: "fencing"; readonly atIso: string; readonly named: readonly string[]; readonly taking: readonly string[]; readonly already: readonly TakeoverOutcome[]; readonly unchecked?: readonly NamedGroup[] }
  /** Named groups held (streams closed, not refused); waiting for appends and the drain. */
  | { readonly phase: "draining"; readonly atIso: string; readonly named: readonly string[]; readonly taking: readonly string[]; readonly already: readonly TakeoverOutcome[]; readonly keepAtLeast: readonly KeepAtLeast[] }
  | { readonly phase: "saving"; readonly named: readonly string[]; readonly intent: TakeoverIntent; readonly already: readonly TakeoverOutcome[] }
  | { readonly phase: "reflecting"; readonly named: readonly string[]; readonly intent: TakeoverIntent; readonly already: readonly TakeoverOutcome[]; readonly restarted: boolean }
  | {
    readonly phase: "converting"; readonly named: readonly string[]; readonly intent: TakeoverIntent; readonly already: readonly TakeoverOutcome[]; readonly restarted: boolean;
    /** The intent's groups left to convert (the first one is being converted). */
    readonly left: readonly TakeoverIntentGroup[];
    readonly converted: readonly TakeoverOutcome[];
  }
  | { readonly phase: "clearing"; readonly named: readonly string[]; readonly results: readonly TakeoverOutcome[]; readonly restarted: boolean }
  /** A save, the drain or a conversion failed after the groups left their domain: nothing more until the node restarts. */
  | { readonly phase: "abandoned"; readonly reason: string };

export const idleTakeover: TakeoverState = { phase: "idle" };

/** A named group's cut must keep at least this sequence: the last host write its fenced primary accepted (docs/replication.md, "Fencing"). */
export interface KeepAtLeast {
  readonly name: string;
  readonly sequence: number;
}

export type TakeoverEvent =
  /** The operator's `pair takeover g1,g2,...` (the names as given, each as the shell finds it). */
  | { readonly type: "requested"; readonly groups: readonly NamedGroup[]; readonly atIso: string; readonly force?: boolean }
  /** The primary of every group fenced (and what it accepted arrived), or declared lost with --force. */
  | { readonly type: "fenced"; readonly keepAtLeast: readonly KeepAtLeast[] }
  /** The primary could not be fenced (unreachable without --force, no answer, not all it accepted arrived). */
  | { readonly type: "fenceRefused"; readonly code: TakeoverRefusalCode; readonly text: string }
  | { readonly type: "drained"; readonly groups: readonly DrainedGroup[] }
  /** The wait for appends or the drain threw (not a disk error the group stopped for). */
  | { readonly type: "drainFailed"; readonly error: string }
  | { readonly type: "intentSaved" }
  | { readonly type: "intentSaveFailed"; readonly error: string }
  | { readonly type: "reflectedToCut" }
  | { readonly type: "reflectFailed"; readonly error: string }
  | { readonly type: "converted"; readonly result: TakeoverOutcome }
  | { readonly type: "convertFailed"; readonly name: string; readonly error: string }
  | { readonly type: "intentCleared" }
  | { readonly type: "intentClearFailed"; readonly error: string }
  /**
   * At start, node.json holds an unfinished intent; `convertedNames`: its groups node.json
   * already says are taken over (the others are recovered as secondaries outside their
   * domain, reflected only through their cut).
   */
  | { readonly type: "restarted"; readonly intent: TakeoverIntent; readonly convertedNames: readonly string[] };

/**
 * What the shell does, in order. Ordering rules:
 * - Every check before the first `hold`: a refusal in `requested` comes with no other effect
 *   but its log line.
 * - `hold` closes the group's streams without refusing the pair (the primary reconnects and
 *   is told to wait: GROUP_BUSY); only `tellPrimary`, after the intent is saved, ends the pair.
 * - `leaveDomain` (nothing more is applied to the group) before `persistIntent`; the intent
 *   saved before any `reflectToCut`, `tellPrimary` or `convert`.
 * - Effects with a completion (`drain`, `persistIntent`, `reflectToCut`, `convert`,
 *   `clearIntent`) end their list; the shell feeds the completion back.
 * - `answer` only after every named group's conversion is saved.
 */
export type TakeoverEffect =
  /**
   * Fence the groups' primary before anything else changes here (FENCE on an open stream; with
   * `force`, declare it lost: the pair's generation raised). Completion: fenced / fenceRefused.
   */
  | { readonly type: "fence"; readonly names: readonly string[]; readonly force: boolean }
  /** Hold the group for the takeover (its machine's `takeover`): streams closed, nothing more received. */
  | { readonly type: "hold"; readonly name: string }
  /** The takeover is refused after all: the group replicates on (its machine's `takeoverAbort`). */
  | { readonly type: "release"; readonly name: string }
  /** Wait for appends in flight on the held groups, drain reflection, read what the cut needs. Completion: drained / drainFailed. */
  | { readonly type: "drain"; readonly names: readonly string[] }
  /** The group leaves its consistency domain (its machine's `takeoverDrained`): nothing more is applied by the reflector. */
  | { readonly type: "leaveDomain"; readonly name: string; readonly keepThroughSequence: number }
  /** Save the intent to node.json (critical: may use the space reserve). Completion: intentSaved / intentSaveFailed. */
  | { readonly type: "persistIntent"; readonly intent: TakeoverIntent }
  /** At start: a group recovered for an unfinished intent is held outside its domain (its machine's `takeoverResumed`). */
  | { readonly type: "adopt"; readonly name: string }
  /** The primary is told the group is taken over (ERROR TAKEN_OVER on its streams). */
  | { readonly type: "tellPrimary"; readonly name: string }
  /**
   * Apply each group's journal from its saved checkpoint through its cut, in position order
   * across the groups (records applied before are applied again: idempotent). Completion:
   * reflectedToCut / reflectFailed.
   */
  | { readonly type: "reflectToCut"; readonly groups: readonly TakeoverIntentGroup[] }
  /** Convert the group into a writable one at its cut (its machine's `takeoverConvert`, through its save). Completion: converted / convertFailed. */
  | { readonly type: "convert"; readonly group: TakeoverIntentGroup; readonly atIso: string }
  /** Remove the intent from node.json. Completion: intentCleared / intentClearFailed. */
  | { readonly type: "clearIntent" }
  | { readonly type: "answer"; readonly results: readonly TakeoverOutcome[] }
  | { readonly type: "refuse"; readonly code: TakeoverRefusalCode; readonly text: string }
  | LogEffect;

export interface TakeoverStep {
  readonly state: TakeoverState;
  readonly effects: readonly TakeoverEffect[];
}

/** The codes a takeover is refused with: the checks' (OperatorRefusalCode, TM_ERR_INVALID) and the fence's (fence-primary.ts). */
export type TakeoverRefusalCode = TmErrorCode;

/** Effects whose completion the shell feeds back: each ends its effect list. */
export const takeoverEffectsWithCompletion: ReadonlySet<TakeoverEffect["type"]> = new Set(["fence", "drain", "persistIntent", "reflectToCut", "convert", "clearIntent"]);

/** "g1 through 15 (2 dropped), g2 through 7 (0 dropped)": a cut for a log line. */
export function cutText(groups: readonly TakeoverIntentGroup[]): string {
  return groups.map((g) => `${g.name} through ${g.keepThroughSequence} (${g.droppedRecords} dropped)`).join(", ");
}

function refuse(state: TakeoverState, code: TakeoverRefusalCode, text: string, before: readonly TakeoverEffect[] = []): TakeoverStep {
  return { state, effects: [...before, log("warn", "takeover_refused", { code, reason: text }, "takeover refused: nothing changed"), { type: "refuse", code, text }] };
}

/** Why the named group cannot be taken over, before anything happens; undefined: it can be. */
export function namedGroupRefusal(group: NamedGroup, nodeId: string): { readonly code: OperatorRefusalCode; readonly text: string } | undefined {
  switch (group.kind) {
    case "missing":
      return { code: "TM_ERR_NOT_FOUND", text: `group ${group.name} does not exist on node ${nodeId}` };
    case "writable":
      return { code: "TM_ERR_STATE", text: `group ${group.name} is not the secondary of a pair on node ${nodeId}; run takeover against the secondary` };
    case "takenOver":
      return undefined;
    case "secondary": {
      const refusal = takeoverRefusal(group.lifecycle);
      if (refusal !== undefined) return refusal;
      const needed = group.lifecycle.record.consistentFromSequence;
      if (group.arrivedSequence < needed) {
        return {
          code: "TM_ERR_STATE",
          text: `group ${group.name} has received ${group.arrivedSequence} of the ${needed} records its image needs after its initial copy; it is not consistent yet and cannot be taken over; ` +
            `wait until \`tidemark pair status ${group.name}\` here shows replicating, then take over`,
        };
      }
      return undefined;
    }
    default:
      return unreachable(group, "named group");
  }
}

/** The cut of every drained group: per time domain the frontier over the named groups, seq groups their arrived prefix. */
export function planCut(groups: readonly DrainedGroup[]): readonly TakeoverIntentGroup[] {
  const keep = new Map<number, number>();
  const domains = new Map<string, DrainedGroup[]>();
  for (const g of groups) {
    if (g.mode === "seq") {
      // Each seq group is consistent on its own, and its volumes may hold its whole arrived prefix already.
      keep.set(g.groupId, Math.max(g.reflectedSequence, g.arrivedSequence));
      continue;
    }
    const list = domains.get(g.domainKey) ?? [];
    list.push(g);
    domains.set(g.domainKey, list);
  }
  for (const members of domains.values()) {
    const plan = takeoverPlan(members.map((g) => ({
      groupId: asGroupId(g.groupId), node: g.node, complete: g.complete, reflectedSequence: asSequence(g.reflectedSequence), arrivedSequence: asSequence(g.arrivedSequence),
      arrivedPosition: g.arrivedPosition, entries: g.entries,
    })));
    for (const entry of plan.keep) keep.set(entry.groupId, entry.keepThroughSequence);
  }
  return groups.map((g) => {
    const k = keep.get(g.groupId);
    assert(k !== undefined, () => `the cut of group ${g.name} is planned`);
    return { groupId: g.groupId, name: g.name, keepThroughSequence: k, droppedRecords: Math.max(0, g.arrivedSequence - k) + g.reorderRecords };
  });
}

function requested(state: TakeoverState, event: Extract<TakeoverEvent, { type: "requested" }>, nodeId: string): TakeoverStep {
  if (state.phase !== "idle") {
    const why = state.phase === "abandoned" ? `an earlier takeover failed (${state.reason}); restart the node, which finishes or undoes it` : "another takeover is in progress";
    return refuse(state, "TM_ERR_STATE", `cannot take over now: ${why}`);
  }
  const seen = new Set<string>();
  const groups = event.groups.filter((g) => {
    if (seen.has(g.name)) return false;
    seen.add(g.name);
    return true;
  });
  if (groups.length === 0) return refuse(state, "TM_ERR_INVALID", "name at least one group to take over");
  const named = groups.map((g) => g.name);
  const already = groups.flatMap((g) => (g.kind === "takenOver" ? [g.result] : []));
  const taking = groups.flatMap((g) => (g.kind === "secondary" ? [g.name] : []));
  const force = event.force === true;
  if (faultInjected("refused-takeover-fails-pair") && taking.length > 0) {
    // The old order: the primary was fenced before every named group was checked, and a
    // refusal after it left those groups fenced (read-only) on the primary.
    return { state: { phase: "fencing", atIso: event.atIso, named, taking, already, unchecked: groups }, effects: [{ type: "fence", names: taking, force }] };
  }
  // Every check first: a refusal has changed nothing.
  for (const group of groups) {
    const refusal = namedGroupRefusal(group, nodeId);
    if (refusal !== undefined) return refuse(state, refusal.code, refusal.text);
  }
  if (taking.length === 0) return { state, effects: [{ type: "answer", results: already }] };
  return {
    state: { phase: "fencing", atIso: event.atIso, named, taking, already },
    effects: [log("info", "takeover_started", { groups: taking.join(",") }, "takeover: fencing the primary, then holding the groups and draining reflection to compute the cut"), { type: "fence", names: taking, force }],
  };
}

function fenced(state: TakeoverState, event: Extract<TakeoverEvent, { type: "fenced" }>, nodeId: string): TakeoverStep {
  assert(state.phase === "fencing", () => `a takeover was fencing the primary (${state.phase})`);
  for (const group of state.unchecked ?? []) {
    const refusal = namedGroupRefusal(group, nodeId);
    if (refusal !== undefined) return refuse(idleTakeover, refusal.code, refusal.text);
  }
  return {
    state: { phase: "draining", atIso: state.atIso, named: state.named, taking: state.taking, already: state.already, keepAtLeast: event.keepAtLeast },
    effects: [...state.taking.map((name): TakeoverEffect => ({ type: "hold", name })), { type: "drain", names: state.taking }],
  };
}

function drained(state: TakeoverState, event: Extract<TakeoverEvent, { type: "drained" }>): TakeoverStep {
  assert(state.phase === "draining", () => `a takeover was draining (${state.phase})`);
  assert(event.groups.length === state.taking.length && event.groups.every((g, i) => g.name === state.taking[i]), "the drain reports every held group, in order");
  const cut = planCut(event.groups);
  for (const [i, group] of event.groups.entries()) {
    const keep = cut[i]?.keepThroughSequence ?? 0;
    const atLeast = state.keepAtLeast.find((k) => k.name === group.name)?.sequence;
    if (atLeast !== undefined && keep < atLeast) {
      return refuse(idleTakeover, "TM_ERR_STATE",
        `group ${group.name} could keep only through sequence ${keep}, before the last write its fenced primary accepted (${atLeast}; another group of its domain holds the frontier); ` +
        "nothing was taken over and the primary stays fenced: take over the whole domain, or pair unfence on the primary",
        state.taking.map((name): TakeoverEffect => ({ type: "release", name })));
    }
    if (keep >= group.consistentFromSequence) continue;
    const text = `group ${group.name} would keep ${keep} of the ${group.consistentFromSequence} records its image needs after its initial copy; it is not consistent at the cut`;
    // Held, never refused: the streams come back and the pairs carry on.
    return refuse(idleTakeover, "TM_ERR_STATE", `${text} (the takeover's cut keeps it through sequence ${keep}); nothing was taken over`,
      state.taking.map((name): TakeoverEffect => ({ type: "release", name })));
  }
  const intent: TakeoverIntent = { at: state.atIso, groups: cut };
  const leave = cut.map((g): TakeoverEffect => ({ type: "leaveDomain", name: g.name, keepThroughSequence: g.keepThroughSequence }));
  if (faultInjected("takeover-not-durable")) {
    // The old way: no intent; the groups were converted one by one and a crash between two
    // conversions left the rest to reflect on alone past the cut.
    return { state: { phase: "reflecting", named: state.named, intent, already: state.already, restarted: false }, effects: [...leave, ...cut.map((g): TakeoverEffect => ({ type: "tellPrimary", name: g.name })), { type: "reflectToCut", groups: cut }] };
  }
  return {
    state: { phase: "saving", named: state.named, intent, already: state.already },
    effects: [
      ...leave,
      log("info", "takeover_intent", { cut: cutText(cut) }, "takeover decided: saving the intent and the cut of every group"),
      { type: "persistIntent", intent },
    ],
  };
}

function converting(state: Extract<TakeoverState, { phase: "reflecting" }>): TakeoverStep {
  const first = state.intent.groups[0];
  assert(first !== undefined, "an intent names a group");
  return {
    state: { phase: "converting", named: state.named, intent: state.intent, already: state.already, restarted: state.restarted, left: state.intent.groups, converted: [] },
    effects: [{ type: "convert", group: first, atIso: state.intent.at }],
  };
}

function results(named: readonly string[], outcomes: readonly TakeoverOutcome[]): TakeoverOutcome[] {
  const byName = new Map(outcomes.map((r) => [r.group, r]));
  return named.flatMap((name) => {
    const r = byName.get(name);
    return r === undefined ? [] : [r];
  });
}

/**
 * One step of the takeover. `nodeId` is this node's id (for refusal texts). Assertions: a
 * completion with no step of the takeover waiting for it (the shell's contract).
 */
export function stepTakeover(state: TakeoverState, event: TakeoverEvent, nodeId: string): TakeoverStep {
  switch (event.type) {
    case "requested":
      return requested(state, event, nodeId);
    case "fenced":
      return fenced(state, event, nodeId);
    case "fenceRefused":
      assert(state.phase === "fencing", () => `a takeover was fencing the primary (${state.phase})`);
      return refuse(idleTakeover, event.code, event.text);
    case "drained":
      return drained(state, event);
    case "drainFailed": {
      assert(state.phase === "draining", () => `a takeover was draining (${state.phase})`);
      return refuse(idleTakeover, "TM_ERR_INTERNAL", `takeover failed while draining reflection: ${event.error}; nothing was taken over`,
        state.taking.map((name): TakeoverEffect => ({ type: "release", name })));
    }
    case "intentSaved": {
      assert(state.phase === "saving", () => `a takeover intent was being saved (${state.phase})`);
      // Decided: the primary may hear of it now; then the cut is applied and the groups converted.
      return {
        state: { phase: "reflecting", named: state.named, intent: state.intent, already: state.already, restarted: false },
        effects: [...state.intent.groups.map((g): TakeoverEffect => ({ type: "tellPrimary", name: g.name })), { type: "reflectToCut", groups: state.intent.groups }],
      };
    }
    case "intentSaveFailed": {
      assert(state.phase === "saving", () => `a takeover intent was being saved (${state.phase})`);
      // The save may have landed (a rename done, its directory's fsync failed): only a restart knows.
      const reason = `its intent could not be saved: ${event.error}`;
      return {
        state: { phase: "abandoned", reason },
        effects: [
          log("error", "takeover_failed", { error: event.error }, "takeover failed before any group was converted; the groups take nothing until the node restarts"),
          { type: "refuse", code: "TM_ERR_INTERNAL", text: `takeover failed: ${reason}. Restart the node: it finishes the takeover if the intent reached the disk, or recovers the groups as secondaries if not` },
        ],
      };
    }
    case "reflectedToCut":
      assert(state.phase === "reflecting", () => `a takeover was reflecting to its cut (${state.phase})`);
      return converting(state);
    case "reflectFailed":
      assert(state.phase === "reflecting", () => `a takeover was reflecting to its cut (${state.phase})`);
      return abandon(`applying the journal through the cut failed: ${event.error}`);
    case "converted": {
      assert(state.phase === "converting" && state.left[0]?.name === event.result.group, () => `a takeover was converting group ${event.result.group}`);
      const converted = [...state.converted, event.result];
      const left = state.left.slice(1);
      const next = left[0];
      if (next !== undefined) return { state: { ...state, left, converted }, effects: [{ type: "convert", group: next, atIso: state.intent.at }] };
      const all = results(state.named, [...state.already, ...converted]);
      if (faultInjected("takeover-not-durable") && !state.restarted) return { state: idleTakeover, effects: [{ type: "answer", results: all }] };
      return { state: { phase: "clearing", named: state.named, results: all, restarted: state.restarted }, effects: [{ type: "clearIntent" }] };
    }
    case "convertFailed":
      assert(state.phase === "converting" && state.left[0]?.name === event.name, () => `a takeover was converting group ${event.name}`);
      return abandon(`the conversion of group ${event.name} failed: ${event.error}`);
    case "intentCleared":
    case "intentClearFailed": {
      assert(state.phase === "clearing", () => `a takeover intent was being cleared (${state.phase})`);
      const effects: TakeoverEffect[] = [];
      if (event.type === "intentClearFailed") {
        // Every group is converted: a start that still finds the intent only clears it.
        effects.push(log("warn", "takeover_intent_not_cleared", { error: event.error }, "takeover done, but its intent could not be removed from node.json; the next start removes it"));
      }
      const fields = { cut: state.results.map((r) => `${r.group} through ${r.reflectedSequence} (${r.droppedRecords} dropped)`).join(", ") };
      effects.push(state.restarted
        ? log("warn", "takeover_finished_at_start", fields, "a takeover interrupted by a crash was finished at its saved cuts")
        : log("warn", "takeover_done", fields, "takeover done: every named group is writable, at one cut"));
      if (!state.restarted) effects.push({ type: "answer", results: state.results });
      return { state: idleTakeover, effects };
    }
    case "restarted":
      return restarted(state, event);
    default:
      return unreachable(event, "takeover event");
  }
}

function abandon(reason: string): TakeoverStep {
  return {
    state: { phase: "abandoned", reason },
    effects: [
      log("error", "takeover_failed", { error: reason }, "takeover failed part-way; its intent is saved: the next start finishes it at the same cuts"),
      { type: "refuse", code: "TM_ERR_INTERNAL", text: `takeover failed: ${reason}. Its intent is saved: restart the node and it finishes the takeover at the same cuts` },
    ],
  };
}

function restarted(state: TakeoverState, event: Extract<TakeoverEvent, { type: "restarted" }>): TakeoverStep {
  assert(state.phase === "idle", "an unfinished takeover is finished at start, before any other");
  const converted = new Set(event.convertedNames);
  const left = event.intent.groups.filter((g) => !converted.has(g.name));
  const named = event.intent.groups.map((g) => g.name);
  const intro = log("warn", "takeover_resumed", { cut: cutText(event.intent.groups), converted: event.convertedNames.join(",") },
    "node.json holds an unfinished takeover: finishing it at its saved cuts");
  if (left.length === 0) {
    return { state: { phase: "clearing", named, results: [], restarted: true }, effects: [intro, { type: "clearIntent" }] };
  }
  const intent: TakeoverIntent = { at: event.intent.at, groups: left };
  return {
    state: { phase: "reflecting", named, intent, already: [], restarted: true },
    effects: [intro, ...left.map((g): TakeoverEffect => ({ type: "adopt", name: g.name })), { type: "reflectToCut", groups: left }],
  };
}
