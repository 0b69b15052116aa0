// Fencing the primary before a takeover (docs/replication.md, "Fencing"; issue 8 kind 2).
// With the primary reachable (a replication stream of the group is open), the takeover sends
// FENCE on that stream; the primary makes its group read-only, saves `fenced`, and answers
// FENCED with the last sequence it accepted. The takeover then waits (within a deadline) until
// every record through that sequence has arrived here: they were accepted before the fence and
// are in flight. So the cut can be at or past it, and a planned takeover loses nothing, and no
// state has two writable copies. With the primary unreachable the takeover needs --force (the
// operator declares the primary site lost): the pair's generation is raised (saved here), and
// an old primary that comes back is refused at its handshake and fences itself.
//
// Called once, from SecondaryRole.takeover(), after every check that can refuse the takeover
// and before anything is converted.
import { faultInjected } from "../core/faults.ts";
import type { Logger } from "pino";
import { ControlError } from "../core/errors.ts";
import { fenceAnswerTimeoutMs, fenceArrivalTimeoutMs, fenceTimeAdvanceGraceMs } from "../core/limits.ts";
import { primaryNodeOption } from "../core/secondary-group-machine.ts";
import type { Clock } from "../node/clock.ts";
import type { FenceAnswer, SecondaryStreams } from "./repl-server.ts";
import type { SecondaryGroup } from "./secondary-group.ts";

/** How the takeover dealt with the primary of one group (TakeoverResult.primary). */
export interface PrimaryFence {
  /** The primary answered FENCED: it is read-only and saved as fenced. */
  readonly fenced: boolean;
  /** The last sequence the primary accepted (FENCED), or null when it was not fenced. */
  readonly lastAcceptedSequence: number | null;
  /** Its last host write (FENCED; the records after it are time advances): the cut keeps at least this far. */
  readonly lastWriteSequence: number | null;
  /** Taken over with --force without fencing the primary. */
  readonly forced: boolean;
  /** The pair's generation after the takeover. */
  readonly generation: number;
}

export interface FencePrimaryOptions {
  readonly streams: Pick<SecondaryStreams, "fence"> | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly nodeId: string;
  /** The operator declared the primary site lost (`pair takeover --force`). */
  readonly force: boolean;
  /** Saves the group's pair generation one higher; resolves with the new one. */
  readonly raiseGeneration: (group: SecondaryGroup) => Promise<number>;
}

/** What --force means, in the one line that refuses a takeover without it. */
const forceMeans = "pair takeover --force declares the primary site lost: the takeover goes on without fencing it, the pair gets a new generation, " +
  "and a primary that comes back is refused and fences itself (the writes it took after the cut are reported, not kept)";

/**
 * Fences the primary of every group (or, with `force`, of those it can), waits for what the
 * primary accepted to arrive, and marks those groups complete (they no longer hold their
 * domain's frontier). Throws ControlError TM_ERR_PRIMARY_UNREACHABLE (a primary not reachable
 * or not answering, without --force; nothing was sent when none is reachable), TM_ERR_STATE
 * (what the fenced primary accepted did not arrive within fenceArrivalTimeoutMs; the primary
 * stays fenced). A group fenced before a refusal stays fenced on the primary (pair unfence there).
 */
export async function fencePrimary(groups: readonly SecondaryGroup[], options: FencePrimaryOptions): Promise<Map<SecondaryGroup, PrimaryFence>> {
  const { logger, clock, force } = options;
  const unreachable = groups.filter((g) => g.streams.size === 0 || options.streams === undefined);
  if (unreachable.length > 0 && !force) {
    const names = unreachable.map((g) => g.name).join(", ");
    logger.warn({ event: "takeover_refused_unreachable", groups: names }, "takeover refused: the primary cannot be reached to fence it");
    throw new ControlError("TM_ERR_PRIMARY_UNREACHABLE",
      `the primary of ${names} (node ${unreachable[0]?.record.primaryNode ?? "?"}) cannot be reached to fence it (no replication stream from it); nothing was taken over. ${forceMeans}`);
  }
  const answers = await Promise.all(groups.map((g) => (unreachable.includes(g) ? Promise.resolve<FenceAnswer>({ kind: "no-stream" }) : askFence(g, options))));
  const failed = groups.flatMap((g, i) => (answers[i]?.kind === "fenced" ? [] : [{ group: g, answer: answers[i] }]));
  if (failed.length > 0 && !force) {
    const detail = failed.map(({ group, answer }) => `${group.name}: ${describe(answer)}`).join("; ");
    const fencedGroups = groups.filter((_, i) => answers[i]?.kind === "fenced");
    const fencedNames = fencedGroups.map((g) => g.name);
    const unfence = fencedGroups.map((g) => `tidemark pair unfence ${g.record.primaryGroup} ${primaryNodeOption(g.record)}`).join("; ");
    logger.warn({ event: "takeover_refused_unreachable", detail }, "takeover refused: the primary did not fence its group");
    throw new ControlError("TM_ERR_PRIMARY_UNREACHABLE",
      `the primary could not be fenced (${detail}); nothing was taken over${fencedNames.length > 0 ? ` (${fencedNames.join(", ")} stay fenced on the primary: ${unfence})` : ""}. ${forceMeans}`);
  }
  // What the fenced primary accepted is on its way: wait for every host write of it (the cut
  // must keep them), and a little longer for the time advances after the last one.
  const startMs = clock.monotonicMs();
  const deadlineMs = startMs + fenceArrivalTimeoutMs;
  const fencedThrough = new Map<SecondaryGroup, number>();
  const writesThrough = new Map<SecondaryGroup, number>();
  groups.forEach((g, i) => {
    const answer = answers[i];
    if (answer?.kind === "fenced") {
      fencedThrough.set(g, answer.lastAcceptedSequence);
      writesThrough.set(g, answer.lastWriteSequence);
    }
  });
  // From the answer on, a fenced group whose records have all arrived no longer holds its
  // domain's frontier, so the others' records, which are still arriving, are reflected and
  // free their journal meanwhile. Without this, the wait below could never end: a group fenced
  // early (nothing more to send) held the frontier, the secondary's journal filled with the
  // others' records, and the rest of them could not arrive (seed 8050). The takeover clears
  // these marks when it ends without converting the group (SecondaryRole.takeover).
  const holdsUntilArrived = faultInjected("fenced-group-holds-frontier");
  if (!holdsUntilArrived) for (const [g, through] of fencedThrough) g.primaryFencedThrough = through;
  let writesInSinceMs: number | undefined;
  for (;;) {
    const behind = [...writesThrough].filter(([g, through]) => g.arrivedSequence < through);
    if (behind.length === 0) {
      writesInSinceMs ??= clock.monotonicMs();
      const allIn = [...fencedThrough].every(([g, through]) => g.arrivedSequence >= through);
      if (allIn || clock.monotonicMs() - writesInSinceMs >= fenceTimeAdvanceGraceMs) break;
      await clock.sleep(5);
      continue;
    }
    if (clock.monotonicMs() >= deadlineMs) {
      const detail = behind.map(([g, through]) => `${g.name} has ${g.arrivedSequence} of ${through}`).join(", ");
      if (!force) {
        for (const [g] of fencedThrough) g.primaryFencedThrough = undefined;
        logger.warn({ event: "takeover_refused_not_arrived", detail }, "takeover refused: what the fenced primary accepted did not arrive in time");
        throw new ControlError("TM_ERR_STATE",
          `the primary is fenced, but the records it accepted did not all arrive within ${fenceArrivalTimeoutMs / 1000} s (${detail}); nothing was taken over and the primary stays fenced: ` +
          "run the takeover again once the link carries them, or pair unfence on the primary");
      }
      logger.warn({ event: "takeover_forced_not_arrived", detail }, "forced takeover: not every record the fenced primary accepted arrived; the cut is before them");
      for (const [g] of behind) {
        g.primaryFencedThrough = undefined;
        fencedThrough.delete(g);
        writesThrough.delete(g);
      }
      break;
    }
    await clock.sleep(5);
  }
  const outcome = new Map<SecondaryGroup, PrimaryFence>();
  for (const [i, g] of groups.entries()) {
    const through = fencedThrough.get(g);
    const answer = answers[i];
    if (through !== undefined) {
      if (holdsUntilArrived) g.primaryFencedThrough = through;
      outcome.set(g, { fenced: true, lastAcceptedSequence: through, lastWriteSequence: answer?.kind === "fenced" ? answer.lastWriteSequence : through, forced: false, generation: g.record.generation ?? 1 });
      logger.info({ event: "primary_fenced", group: g.name, lastAcceptedSequence: through }, "the primary fenced its group; everything it accepted has arrived");
      continue;
    }
    const generation = await options.raiseGeneration(g);
    outcome.set(g, {
      fenced: answer?.kind === "fenced", lastAcceptedSequence: answer?.kind === "fenced" ? answer.lastAcceptedSequence : null,
      lastWriteSequence: answer?.kind === "fenced" ? answer.lastWriteSequence : null, forced: true, generation,
    });
    logger.warn({ event: "takeover_forced", group: g.name, primary: g.record.primaryNode, generation, why: describe(answer) },
      "forced takeover: the primary was not fenced (its site is declared lost); a primary that comes back is refused and fences itself");
  }
  return outcome;
}

/** Whether the takeover's cut keeps every host write the fenced primary accepted (time advances after the last one may go); else why not. */
export function fenceCutRefusal(group: SecondaryGroup, fence: PrimaryFence | undefined, keptSequence: number): { readonly code: "TM_ERR_STATE"; readonly text: string } | undefined {
  if (fence?.fenced !== true || fence.forced || fence.lastWriteSequence === null || keptSequence >= fence.lastWriteSequence) return undefined;
  return {
    code: "TM_ERR_STATE",
    text: `group ${group.name} could reflect only through sequence ${keptSequence}, before the last write its fenced primary accepted (${fence.lastWriteSequence}; another group of its domain holds the frontier); ` +
      "nothing was taken over and the primary stays fenced: take over the whole domain, or pair unfence on the primary",
  };
}

async function askFence(group: SecondaryGroup, options: FencePrimaryOptions): Promise<FenceAnswer> {
  const streams = options.streams;
  if (streams === undefined) return { kind: "no-stream" };
  const asked = streams.fence(group, `takeover of ${group.name} on node ${options.nodeId}`);
  let timer: ReturnType<Clock["setTimeout"]> | undefined;
  const timeout = new Promise<FenceAnswer>((resolve) => {
    timer = options.clock.setTimeout(() => resolve({ kind: "closed", text: `no answer within ${fenceAnswerTimeoutMs / 1000} s` }), fenceAnswerTimeoutMs);
  });
  try {
    return await Promise.race([asked.answer, timeout]);
  } finally {
    options.clock.clear(timer);
    asked.cancel();
  }
}

function describe(answer: FenceAnswer | undefined): string {
  switch (answer?.kind) {
    case undefined:
    case "no-stream":
      return "no replication stream from the primary";
    case "fenced":
      return `fenced at sequence ${answer.lastAcceptedSequence}`;
    case "refused":
      return `the primary refused: ${answer.text}`;
    case "closed":
      return `the stream closed before an answer (${answer.text})`;
  }
}
