// Faults the code once had, put back on demand so the simulation can show it catches them
// (issue 7: `npm run sim -- --fault NAME`; in the spirit of FoundationDB's BUGGIFY). Off
// unless the simulation turns one on: production never sets them. Each check is one Set
// lookup where the fault lived; docs/simulation.md lists them with the fix each undoes.

export const historicalFaults = [
  /** Recovery knew no time-advance record ("journal of group g has a record for unknown volume 0"): a restarted primary never started. */
  "replay-unknown-record-kind",
  /** The volume was written beside the journal append, not after the journal held it durably: a crash or power loss left bytes no record carried. */
  "volume-before-journal",
  /** The secondary handed records out of its receiver before the journal took them: once full, every resend was dropped as a duplicate. */
  "receiver-commits-before-append",
  /** In pull mode the gap's head was asked for again only on the stream that went silent: the pair stopped for good. */
  "pull-waits-on-silent-stream",
  /** Time advances were timed on the wall clock: a step back stopped them, and the frontier, for the length of the step. */
  "wall-clock-time-advance",
  /** The frontier compared write times only, not (write time, accept number): ties let a dependent write through first. */
  "time-only-frontier",
  /** The reflector took what was handed out (past a gap) as arrived. */
  "ignore-gaps",
  /** A restarted secondary served its image without reflecting to the recomputed frontier first. */
  "skip-recovery-replay",
  /** A group's join of the time domain was saved before the domain was checkpointed: a power loss between the two left applies half written back below the new frontier (simulation seed 209). */
  "join-before-checkpoint",
  /** The secondary dropped records it had answered (a resume after a stop, parked records out of order) without telling the primary, which waited for their arrival for ever (seeds 869, 1354, 1875). */
  "silent-received-loss",
  /** A secondary's group resumed after a stop kept counting as applied what a failed fdatasync may have dropped (seed 3255 found the kind). */
  "resume-keeps-applied",
  /** A group joined the time domain while another member was stopped with applies not yet checkpointed (seed 3255). */
  "join-past-stopped-member",
  /** A secondary restarted between a checkpoint's save and its trim never trimmed: a full journal stayed full (seed 1267). */
  "no-trim-at-start",
  /** Recovery replayed journal records into the volumes before making them durable: a power loss then left volume blocks no journal explained (seed 1985). */
  "replay-before-durable",
  /** A primary group resumed after a failed fdatasync kept its last write sequence although the journal had lost those records: pair wait and status waited for a write that no longer existed (seed 15167). */
  "resume-keeps-last-write-sequence",
  /** A checkpoint the pair started (the journal filling) that failed on a volume's fdatasync was only logged: the next one succeeded without the pages the failed fdatasync dropped, and the journal that held them was trimmed (seed 59474). */
  "checkpoint-error-keeps-group",
  /** A primary answered FENCED before `fenced` was on its disk: a crash in between brought it back writable after the secondary took over (split brain). */
  "fence-after-answer",
  /** A primary the secondary refused at the handshake (it took over) failed the pair and stayed writable, taking writes nobody would ever replicate. */
  "stale-primary-resumes",
  /** Groups of different primaries shared one time domain by default, and positions of different primaries compared without the node order: an exact tie (hosts that send no write time) was asserted, the secondary stopped and never started again (two-primaries-position-tie.ts). */
  "position-tie-asserts",
  /** A takeover converted its groups one by one with no intent saved first, and a start did not finish it: a crash between two conversions let the rest reflect on alone past the cut (repro crash-mid-takeover.ts). */
  "takeover-not-durable",
  /** A takeover held (and refused to the primary) each group as it checked it: a later refusal left the earlier groups' pairs failed. */
  "refused-takeover-fails-pair",
  /** A group that joined its time domain later (a new pair, `pair attach`) counted as consistent with the others as soon as its own copy was caught up, while another member had already reflected past its cut: a takeover of both kept a later write without an earlier one (issue 8, late-pair-copy-window). */
  "late-join-counts-consistent",
  /** `pair attach` took the joiner's cut when asked, not once reflection was held: the group, reflecting alone meanwhile, counted as consistent with members still behind what it reflected (seeds 5060, 10358, 11241). */
  "join-cut-before-hold",
  /** A takeover counted a fenced group as complete (no longer holding the frontier) only once the others' records had all arrived too: a group fenced early held the frontier, the secondary's journal filled with the others' records, and the takeover waited for them until it was refused (seed 8050). */
  "fenced-group-holds-frontier",
] as const;

export type HistoricalFault = (typeof historicalFaults)[number];

/** The faults turned on (empty outside the simulation's --fault runs). */
export const injectedFaults = new Set<HistoricalFault>();

/** Whether `fault` is put back. Cheap enough for the write path: a size check first. */
export function faultInjected(fault: HistoricalFault): boolean {
  return injectedFaults.size > 0 && injectedFaults.has(fault);
}
