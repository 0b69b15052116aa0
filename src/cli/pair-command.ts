// `tidemark pair create|status|wait|suspend|resume|detach|attach|takeover` (CONTRACT.md, "Pairs").
// create and wait poll GET /v1/pairs/GROUP: create shows the initial copy (a bar on a
// terminal, one final line otherwise) and leaves the pair running if interrupted; wait
// notes the primary's accepted sequence once and returns when the secondary reflected it.
import { Option, type Command } from "commander";
import {
  pairCreateLinkWaitMsMax, pairCreateNodeWaitMsMax, pairResumeLinkWaitMsMax, pairWatchIntervalMsDefault, pairWatchIntervalMsMax, pairWatchIntervalMsMin,
  replStreamsDefault, replStreamsMax, takeoverNodeWaitMsMax,
} from "../core/limits.ts";
import { pairHealthy } from "../core/pair-view.ts";
import type { CopyMode, PairInfo, ReflectMode, TakeoverResult, TransferMode } from "../mgmt/control.ts";
import { ApiClient, parseNodeUrl, type RequestOptions } from "./api-client.ts";
import { mgmtRoutes } from "../mgmt/contract.ts";
import { checkName, mgmtContext, withMgmtOptions, type CliIo, type MgmtContext } from "./command-kit.ts";
import { parseDuration } from "./durations.ts";
import { registerPairAdminCommands } from "./pair-admin-command.ts";
import { OperationError, UsageError, oneLine } from "./errors.ts";
import { formatBytes, formatPercent, formatSeconds, formatUsage } from "./format.ts";

/** How often create and wait ask the node how far the pair got. */
const pairPollIntervalMs = 200;
/** The copy rate is measured over this much recent time. */
const rateWindowMs = 5_000;

const copyModes: readonly CopyMode[] = ["async", "sync"];
const transferModes: readonly TransferMode[] = ["push", "pull"];
const reflectModes: readonly ReflectMode[] = ["time", "seq", "marker"];

interface StatusFlags {
  check?: boolean;
  watch?: boolean;
  interval: string;
}

interface CreateFlags {
  to: string;
  remoteGroup?: string;
  mode: string;
  transfer: string;
  streams: string;
  reflect: string;
  force?: boolean;
  domain?: string;
  onLinkLoss?: string;
}

/** What `pair create` offers (and names in a refusal); sync and marker are refused above as not available yet. */
const availableCopyModes = copyModes.filter((mode) => mode !== "sync");
const availableReflectModes = reflectModes.filter((mode) => mode !== "marker");

export function registerPairCommands(program: Command, io: CliIo): void {
  const pair = program.command("pair").description("remote copy of a consistency group to another node (pairs)");

  withMgmtOptions(
    pair
      .command("create")
      .description("pair a group on this node (--node, the primary) with a secondary node: make the secondary group and volumes, copy, then replicate")
      .argument("<GROUP>", "group on the primary")
      .requiredOption("--to <SECONDARY_MGMT_URL>", "management API of the secondary node, e.g. http://10.0.0.2:7480")
      .option("--remote-group <NAME>", "group name on the secondary (default: the same name)")
      // sync and marker are taken and refused with one line until they work (CONTRACT.md: later); help offers what works.
      .option("--mode <MODE>", "async (asynchronous remote copy)", "async")
      .option("--transfer <HOW>", "push (the primary sends) or pull (the secondary asks)", "push")
      .option("--streams <N>", `parallel connections, 1 to ${replStreamsMax}`, String(replStreamsDefault))
      .option("--reflect <ORDER>", "time (consistent across the groups of a domain) or seq (this group alone)", "time")
      .option("--domain <NAME>", "consistency domain on the secondary shared with groups of other primaries (their write times must be comparable: every primary runs --max-clock-skew); default: one domain per primary")
      .option("--force", "overwrite secondary volumes of the same names that already hold data")
      // CONTRACT.md: later, with --mode sync; taken only to say so.
      .addOption(new Option("--on-link-loss <WHAT>").hideHelp()),
  ).action(async (groupText: string, flags: CreateFlags, command: Command) => {
    if (flags.onLinkLoss !== undefined) throw new UsageError("--on-link-loss is not available yet: it comes with --mode sync (the synchronous cascade hop) in a later version of tidemark; pairs are asynchronous now (--mode async)");
    if (flags.mode === "sync") throw new UsageError("--mode sync is not available yet: the synchronous cascade hop comes with a later version of tidemark; use --mode async (the default)");
    if (flags.reflect === "marker") throw new UsageError("--reflect marker is not available yet: it needs consistency points, which come with a later version of tidemark; use --reflect time (the default) or seq");
    const group = checkName("group", groupText);
    const to = parseNodeUrl(flags.to, "--to").href.replace(/\/$/, "");
    const remoteGroup = flags.remoteGroup === undefined ? undefined : checkName("group", flags.remoteGroup);
    const body = {
      group,
      to,
      ...(remoteGroup === undefined ? {} : { remoteGroup }),
      mode: pickOne("--mode", flags.mode, availableCopyModes),
      transfer: pickOne("--transfer", flags.transfer, transferModes),
      streams: parseStreams(flags.streams),
      reflect: pickOne("--reflect", flags.reflect, availableReflectModes),
      ...(flags.force === true ? { force: true } : {}),
      ...(flags.domain === undefined ? {} : { domain: checkName("domain", flags.domain) }),
    };
    const context = mgmtContext(command, io);
    const created = await context.waitingClient(pairCreateNodeWaitMsMax).call(mgmtRoutes.createPair, { body }, {
      what: `create a pair for group '${group}'`,
      hints: {
        TM_ERR_NOT_FOUND: "create the group first with `tidemark group create`, or see `tidemark group list`",
        TM_ERR_EXISTS: `see \`tidemark pair status ${group}\``,
        TM_ERR_STATE: `see \`tidemark pair status ${group}\``,
        TM_ERR_DOMAIN_INCOMPARABLE: "run every primary of the domain with --max-clock-skew, or pair without --domain",
      },
    });
    await watchInitialCopy(context, created.value, created.raw);
  });

  withMgmtOptions(
    pair
      .command("status")
      .description("show pairs: state, role, sequence numbers, lag, consistent-as-of time, journal use, link")
      .argument("[GROUP]", "only this group's pair")
      .option("--check", "exit 0 when every pair is healthy (copying or replicating), else 1 with one line per unhealthy pair (for cron and monitoring)")
      .option("--watch", "refresh in place until Ctrl-C (a new block each time when stdout is not a terminal)")
      .option("--interval <DURATION>", `with --watch: how often, e.g. 1s, 500ms (${formatElapsed(pairWatchIntervalMsMin)} to ${formatSeconds(pairWatchIntervalMsMax / 1000)})`, `${pairWatchIntervalMsDefault / 1000}s`),
  ).action(async (groupText: string | undefined, flags: StatusFlags, command: Command) => {
    const context = mgmtContext(command, io);
    const group = groupText === undefined ? undefined : checkName("group", groupText);
    if (flags.check === true && flags.watch === true) throw new UsageError("--check and --watch do not go together; use one of them");
    const fetchPairs = async (): Promise<{ pairs: readonly PairInfo[]; raw: unknown; one: boolean }> => {
      if (group === undefined) {
        const { value, raw } = await context.client.call(mgmtRoutes.listPairs, {}, { what: "list pairs" });
        return { pairs: value.pairs, raw, one: false };
      }
      const { value, raw } = await context.client.call(mgmtRoutes.pair, { params: { group } }, getPairOptions(group));
      return { pairs: [value], raw, one: true };
    };
    if (flags.watch === true) {
      const interval = parseDuration(flags.interval);
      if (!interval.ok) throw new UsageError(interval.reason.replace(/^duration /, "--interval "));
      if (interval.ms < pairWatchIntervalMsMin || interval.ms > pairWatchIntervalMsMax) {
        throw new UsageError(`--interval ${flags.interval} is out of range; use ${formatElapsed(pairWatchIntervalMsMin)} to ${formatSeconds(pairWatchIntervalMsMax / 1000)}`);
      }
      await watchPairs(context, fetchPairs, interval.ms);
      return;
    }
    const { pairs, raw, one } = await fetchPairs();
    if (flags.check === true) {
      const unhealthy = pairs.filter((p) => !(p.healthy ?? pairHealthy(p.state)));
      context.print(raw, () => unhealthy.map(checkLine).join(""));
      if (unhealthy.length > 0) throw new OperationError(`${unhealthy.length} of ${pairs.length} ${pairs.length === 1 ? "pair is" : "pairs are"} not healthy`);
      return;
    }
    const [only] = pairs;
    context.print(raw, () => (one && only !== undefined ? renderPair(only) : renderPairs(pairs)));
  });

  withMgmtOptions(
    pair
      .command("wait")
      .description("wait until every write the primary had accepted is reflected on the secondary (run against the primary)")
      .argument("<GROUP>", "group on the primary")
      .option("--timeout <DURATION>", "give up after this long, e.g. 30s, 500ms, 2m", "30s"),
  ).action(async (groupText: string, flags: { timeout: string }, command: Command) => {
    const group = checkName("group", groupText);
    const timeout = parseDuration(flags.timeout);
    if (!timeout.ok) throw new UsageError(timeout.reason.replace(/^duration /, "--timeout "));
    await waitReflected(mgmtContext(command, io), group, timeout.ms);
  });

  for (const [verb, past] of [["suspend", "suspended"], ["resume", "resumed"]] as const) {
    withMgmtOptions(
      pair
        .command(verb)
        .description(verb === "suspend"
          ? "stop sending to the secondary; writes go on and are kept for later (a list suspends them together, e.g. a whole consistency domain)"
          : "start sending again after a suspend (a list resumes them together)")
        .argument("<GROUP[,GROUP...]>", "groups with a pair, comma-separated"),
    ).action(async (groupsText: string, _flags: unknown, command: Command) => {
      // Every name is checked on the node before any pair changes (issue 8: a domain is
      // suspended together, so the secondary holds none of its groups behind another).
      const groups = parseGroupList(groupsText, verb);
      const context = mgmtContext(command, io);
      const line = (info: PairInfo): string => `${past} pair of group ${info.group}: now ${info.state}${info.reason === null ? "" : ` (${info.reason})`}\n`;
      const [only] = groups;
      if (groups.length === 1 && only !== undefined) {
        // One group: its own route (the --json answer is its PairInfo, as before lists).
        const { value, raw } = await context.client.call(verb === "suspend" ? mgmtRoutes.suspendPair : mgmtRoutes.resumePair, { params: { group: only }, body: {} }, {
          what: `${verb} the pair of group '${only}'`,
          hints: { TM_ERR_NOT_FOUND: "see `tidemark pair status`", TM_ERR_STATE: `see \`tidemark pair status ${only}\`` },
        });
        const [settled] = verb === "resume" ? await awaitLinks(context, [value]) : [value];
        context.print(raw, () => line(settled ?? value));
        return;
      }
      const { value, raw } = await context.client.call(verb === "suspend" ? mgmtRoutes.suspendPairs : mgmtRoutes.resumePairs, { body: { groups } }, {
        what: `${verb} the pairs of ${groups.map((name) => `'${name}'`).join(", ")}`,
        hints: {
          TM_ERR_NOT_FOUND: "see `tidemark pair status`",
          TM_ERR_STATE: "see `tidemark pair status`; run it against the primary",
        },
      });
      const settled = verb === "resume" ? await awaitLinks(context, value.pairs) : value.pairs;
      context.print(raw, () => settled.map(line).join(""));
    });
  }

  for (const verb of ["detach", "attach"] as const) {
    withMgmtOptions(
      pair
        .command(verb)
        .description(verb === "detach"
          ? "on the secondary: the group leaves its consistency domain; the others go on without it, and it is no longer consistent with them"
          : "on the secondary: a detached group rejoins its consistency domain; consistent with the others once it reflected past its join point")
        .argument("<GROUP>", "a secondary group on this node"),
    ).action(async (groupText: string, _flags: unknown, command: Command) => {
      const group = checkName("group", groupText);
      const context = mgmtContext(command, io);
      const { value, raw } = await context.client.call(verb === "detach" ? mgmtRoutes.detachPair : mgmtRoutes.attachPair, { params: { group }, body: {} }, {
        what: `${verb} group '${group}'`,
        hints: {
          TM_ERR_NOT_FOUND: "see `tidemark pair status` on the secondary",
          TM_ERR_STATE: `run it with --node pointing at the secondary; see \`tidemark pair status ${group}\``,
        },
      });
      context.print(raw, () => `${verb === "detach" ? "detached" : "attached"} group ${value.group}: now ${value.state}${value.reason === null ? "" : ` (${value.reason})`}\n`);
    });
  }

  withMgmtOptions(
    pair
      .command("takeover")
      .description("on the secondary: fence the primary (its volumes read-only), stop at the last consistent point at or past what it accepted, make the volumes writable")
      .argument("<GROUP[,GROUP...]>", "groups on this (secondary) node, comma-separated")
      .option("--force", "the primary cannot be reached: declare its site lost and take over without fencing it (a primary that comes back is refused and fences itself)"),
  ).action(async (groupsText: string, flags: { force?: boolean }, command: Command) => {
    const groups = parseGroupList(groupsText, "takeover");
    const context = mgmtContext(command, io);
    // The takeover may wait for the primary's FENCED answer and for what it accepted to arrive.
    const client = context.waitingClient(takeoverNodeWaitMsMax);
    const { value, raw } = await client.call(mgmtRoutes.takeover, { body: flags.force === true ? { groups, force: true } : { groups } }, {
      what: `take over ${groups.length === 1 ? "group" : "groups"} ${groups.map((name) => `'${name}'`).join(", ")}`,
      hints: {
        TM_ERR_NOT_FOUND: "see `tidemark pair status` on the secondary",
        TM_ERR_STATE: "run takeover with --node pointing at the secondary",
      },
    });
    context.print(raw, () => renderTakeover(value.results));
  });

  withMgmtOptions(
    pair
      .command("unfence")
      .description("on a fenced primary: make the group writable again (--force when its secondary took over: it is then writable on its own, no longer replicated)")
      .argument("<GROUP>", "the fenced group on this node")
      .option("--force", "unfence although the secondary took over"),
  ).action(async (groupText: string, flags: { force?: boolean }, command: Command) => {
    const group = checkName("group", groupText);
    const context = mgmtContext(command, io);
    const { value, raw } = await context.client.call(mgmtRoutes.unfencePair, { params: { group }, body: flags.force === true ? { force: true } : {} }, {
      what: `unfence group '${group}'`,
      hints: {
        TM_ERR_NOT_FOUND: "see `tidemark pair status`",
        TM_ERR_STATE: `see \`tidemark pair status ${group}\``,
      },
    });
    context.print(raw, () => `unfenced group ${value.group}: now ${value.state}${value.reason === null ? "" : ` (${value.reason})`}\n`);
  });
  // delete and set: pair-admin-command.ts.
  registerPairAdminCommands(pair, io);
}

// ---- command-line values ----

function pickOne<T extends string>(flag: string, text: string, allowed: readonly T[]): T {
  const found = allowed.find((value) => value === text.trim());
  if (found === undefined) throw new UsageError(`${flag} ${JSON.stringify(text)} is not valid; use ${allowed.join(", ").replace(/, ([^,]*)$/, " or $1")}`);
  return found;
}

function parseStreams(text: string): number {
  const trimmed = text.trim();
  const streams = /^\d{1,6}$/.test(trimmed) ? Number(trimmed) : Number.NaN;
  if (!Number.isInteger(streams) || streams < 1 || streams > replStreamsMax) {
    throw new UsageError(`--streams ${JSON.stringify(text)} is not valid; use a whole number from 1 to ${replStreamsMax}`);
  }
  return streams;
}

/** "g1,g2" -> ["g1","g2"]: at least one, each a valid name, none twice. */
function parseGroupList(text: string, verb: "takeover" | "suspend" | "resume"): string[] {
  const names = text.split(",").map((part) => part.trim());
  if (names.every((name) => name === "")) throw new UsageError(`${verb} needs at least one group name, e.g. \`tidemark pair ${verb} g1,g2\``);
  if (names.includes("")) throw new UsageError(`groups ${JSON.stringify(text)} have an empty name; separate names with single commas`);
  for (const name of names) checkName("group", name);
  const twice = names.find((name, index) => names.indexOf(name) !== index);
  if (twice !== undefined) throw new UsageError(`group '${twice}' is listed twice`);
  return names;
}

function getPairOptions(group: string): RequestOptions {
  return {
    what: `get the pair of group '${group}'`,
    hints: { TM_ERR_NOT_FOUND: "see `tidemark pair status` for the pairs on this node" },
  };
}

// ---- polling ----

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** "0.4s", "12.3s" below a minute, "3m 20s" above. */
export function formatElapsed(ms: number): string {
  return ms < 60_000 ? `${(ms / 1000).toFixed(1)}s` : formatSeconds(ms / 1000);
}

interface CopySample {
  readonly atMs: number;
  readonly doneBytes: number;
}

/** Copy rate over the recent window, bytes per second; null until there is something to measure. */
function copyRate(samples: readonly CopySample[]): number | null {
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (first === undefined || last === undefined || last.atMs - first.atMs < 100) return null;
  return ((last.doneBytes - first.doneBytes) * 1000) / (last.atMs - first.atMs);
}

/** Copy figures as the node reports them: bytes sent of the bytes to send (the written extents), and the volumes' size. */
interface CopyFigures {
  readonly doneBytes: number;
  readonly totalBytes: number;
  readonly volumeBytes?: number | undefined;
}

interface ProgressBar {
  update(copy: CopyFigures, rateBytesPerSecond: number | null): void;
  stop(): void;
}

/**
 * "4.0 MiB" or, when only the written part of the volumes is read, "up to 4.0 MiB written of
 * 1.0 TiB": the written map counts whole 1 MiB extents, so the data is at most that.
 */
export function copyAmount(copy: CopyFigures): string {
  const written = formatBytes(copy.totalBytes);
  return copy.volumeBytes === undefined || copy.volumeBytes === copy.totalBytes ? written : `up to ${written} written of ${formatBytes(copy.volumeBytes)}`;
}

async function openBar(stream: NodeJS.WriteStream, group: string): Promise<ProgressBar> {
  // Loaded only here: every other command starts faster without it.
  const { default: progress } = await import("cli-progress");
  const bar = new progress.SingleBar({
    stream,
    format: `copying ${group} [{bar}] {percentage}% | {doneText} / {totalText} | {rateText} | ETA {etaText}`,
    hideCursor: true,
    barsize: 30,
    fps: 10,
  }, progress.Presets.shades_classic);
  let started = false;
  return {
    update(copy, rate) {
      const payload = {
        doneText: formatBytes(copy.doneBytes),
        totalText: copyAmount(copy),
        rateText: rate === null ? "-" : `${formatBytes(Math.max(0, rate))}/s`,
        etaText: rate === null || rate <= 0 ? "-" : formatSeconds((copy.totalBytes - copy.doneBytes) / rate),
      };
      // The bar counts bytes; a total of 0 (empty volumes) would divide by zero in the percentage.
      const total = Math.max(1, copy.totalBytes);
      if (!started) {
        bar.start(total, copy.doneBytes, payload);
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(copy.doneBytes, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/**
 * After a resume: the node answers before the replication streams reconnected, so its answer
 * may call a reachable secondary unreachable. Polls each pair until the node gives no reason
 * (or it is no longer replicating or copying), or pairResumeLinkWaitMsMax passed; returns what
 * the node says then: a reason still there after the wait is a true one. `--json` prints the
 * resume answer itself; this is for the human line.
 */
async function awaitLinks(context: MgmtContext, pairs: readonly PairInfo[]): Promise<PairInfo[]> {
  const deadlineMs = performance.now() + pairResumeLinkWaitMsMax;
  const settled = (pair: PairInfo): boolean => pair.reason === null || (pair.state !== "replicating" && pair.state !== "copying");
  const out = [...pairs];
  if (context.json) return out;
  for (let index = 0; index < out.length; index += 1) {
    let pair = out[index];
    while (pair !== undefined && !settled(pair) && performance.now() < deadlineMs) {
      await sleep(pairPollIntervalMs);
      pair = (await context.client.call(mgmtRoutes.pair, { params: { group: pair.group } }, getPairOptions(pair.group))).value;
    }
    if (pair !== undefined) out[index] = pair;
  }
  return out;
}

/** After POST /v1/pairs: follow the initial copy until the pair replicates, fails, or Ctrl-C. */
async function watchInitialCopy(context: MgmtContext, created: PairInfo, createdRaw: unknown): Promise<void> {
  const group = created.group;
  const startMs = performance.now();
  const stream = context.json ? null : (context.io.progressStream?.() ?? null);
  const bar = stream === null ? null : await openBar(stream, group);
  const interrupt = new AbortController();
  const onSigint = (): void => interrupt.abort();
  process.once("SIGINT", onSigint);
  let pair = created;
  let raw = createdRaw;
  const samples: CopySample[] = [];
  // The last figures seen; a fast copy may end between two polls (then the node's lastCopy says).
  let seen: CopyFigures | null = created.copy;
  // Since when no replication stream of the pair is connected (a wait with a deadline).
  let noLinkSinceMs: number | undefined;
  try {
    while (pair.state === "copying") {
      const nowMs = performance.now();
      if (pair.link.connectedStreams > 0) noLinkSinceMs = undefined;
      else noLinkSinceMs ??= nowMs;
      if (noLinkSinceMs !== undefined && nowMs - noLinkSinceMs > pairCreateLinkWaitMsMax) {
        const why = (pair.reason ?? pair.link.lastError ?? "no replication stream connected").replace(/; retrying$/, "");
        throw new OperationError(
          `the pair of group '${group}' was created, but in ${formatElapsed(nowMs - noLinkSinceMs)} the primary could not open a replication stream to the secondary: ${why}. ` +
          `Check the secondary's --repl address (and --repl-advertise behind NAT or a proxy) and the firewalls between the nodes; the pair keeps retrying: follow it with \`tidemark pair status ${group} --node ${context.client.label}\``,
        );
      }
      if (pair.copy !== null) {
        seen = pair.copy;
        samples.push({ atMs: performance.now(), doneBytes: pair.copy.doneBytes });
        while (samples.length > 2 && (samples[samples.length - 1]?.atMs ?? 0) - (samples[0]?.atMs ?? 0) > rateWindowMs) samples.shift();
        bar?.update(pair.copy, copyRate(samples));
      }
      await sleep(pairPollIntervalMs, interrupt.signal);
      if (interrupt.signal.aborted) {
        throw new OperationError(
          `interrupted: the pair of group '${group}' was created and keeps copying on the node; follow it with \`tidemark pair status ${group} --node ${context.client.label}\``,
        );
      }
      let answer;
      try {
        answer = await context.client.call(mgmtRoutes.pair, { params: { group } }, getPairOptions(group));
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        throw new OperationError(`the pair of group '${group}' was created, but following its initial copy failed: ${message}`);
      }
      pair = answer.value;
      raw = answer.raw;
    }
    if (pair.state === "replicating") seen = pair.lastCopy ?? seen;
    if (pair.state === "replicating" && seen !== null) bar?.update({ ...seen, doneBytes: seen.totalBytes }, copyRate(samples));
  } finally {
    process.off("SIGINT", onSigint);
    bar?.stop();
  }
  if (pair.state !== "replicating") {
    const why = pair.reason ?? "the node gave no reason";
    const what = pair.state === "failed" ? "failed" : `is ${pair.state}`;
    throw new OperationError(`the initial copy of group '${group}' ${what}: ${why}; see \`tidemark pair status ${group}\``);
  }
  // What was sent: only the blocks that hold data (the node says so once the copy is done).
  const dataBytes = pair.lastCopy?.dataBytes;
  const sent = dataBytes === undefined ? "" : ` (${formatBytes(dataBytes)} of data sent)`;
  const copied = seen === null ? "" : `, initial copy of ${copyAmount(seen)}${sent} took ${formatElapsed(performance.now() - startMs)}`;
  const where = `group ${pair.remoteGroup} on ${pair.remoteNode}${pair.remoteUrl === null ? "" : ` (${pair.remoteUrl})`}`;
  context.print(raw, () => `pair of group ${group} is replicating to ${where}${copied}\n`);
}

/**
 * `pair wait`: note the newest host write's sequence once (writeSequence; acceptedSequence from
 * an older node), then poll until reflectedSequence reaches it. Time advances after it need
 * no reflection: they carry no data.
 */
async function waitReflected(context: MgmtContext, group: string, timeoutMs: number): Promise<void> {
  const startMs = performance.now();
  const deadlineMs = startMs + timeoutMs;
  // One request must not outlast the whole wait by much.
  const client = new ApiClient(context.client.baseUrl, { timeoutMs: Math.min(context.client.timeoutMs, Math.max(1000, timeoutMs)) });
  let { value: pair, raw } = await client.call(mgmtRoutes.pair, { params: { group } }, getPairOptions(group));
  if (pair.role !== "primary") {
    throw new OperationError(`group '${group}' on ${client.label} is the secondary of its pair; run \`tidemark pair wait\` against the primary`);
  }
  const target = pair.writeSequence ?? pair.acceptedSequence;
  for (;;) {
    if (pair.reflectedSequence >= target) break;
    // A fenced primary whose secondary took over sends nothing more: waiting cannot end.
    if (pair.state === "failed" || pair.state === "takeover" || (pair.state === "fenced" && pair.fence?.peerTookOver === true)) {
      throw new OperationError(
        `the pair of group '${group}' is ${pair.state}${pair.reason === null ? "" : `: ${pair.reason}`}; reflected ${pair.reflectedSequence} of ${target}`,
      );
    }
    const leftMs = deadlineMs - performance.now();
    if (leftMs <= 0) {
      // A replicating pair may still say why it is behind (held behind another group of its domain: issue 8).
      const note = pair.state === "replicating" ? (pair.reason === null ? "" : ` (${pair.reason})`) : ` (pair is ${pair.state}${pair.reason === null ? "" : `: ${pair.reason}`})`;
      throw new OperationError(
        `timed out: reflected ${pair.reflectedSequence} of ${target} after ${formatElapsed(performance.now() - startMs)}${note}; see \`tidemark pair status ${group}\``,
      );
    }
    await sleep(Math.min(pairPollIntervalMs, leftMs));
    ({ value: pair, raw } = await client.call(mgmtRoutes.pair, { params: { group } }, getPairOptions(group)));
  }
  const tookMs = performance.now() - startMs;
  context.print(raw, () => `reflected through sequence ${target} on the secondary after ${formatElapsed(tookMs)}\n`);
}

// ---- status --check and --watch ----

/** One line of `pair status --check` for an unhealthy pair. */
export function checkLine(pair: PairInfo): string {
  return `${pair.group} (${pair.role}): ${pair.state}${pair.reason === null ? "" : `: ${oneLine(pair.reason)}`}\n`;
}

/** Clears the terminal and puts the cursor home: the next block is drawn in place. */
const redraw = "\u001b[H\u001b[2J";

/**
 * `pair status --watch`: the status every `intervalMs` (monotonic), drawn in place on a
 * terminal, a new block headed by the time otherwise; until SIGINT. A failed request is shown
 * in the block and tried again at the next interval (the node may be restarting).
 */
async function watchPairs(context: MgmtContext, fetchPairs: () => Promise<{ pairs: readonly PairInfo[]; raw: unknown; one: boolean }>, intervalMs: number): Promise<void> {
  const terminal = context.io.progressStream?.() ?? null;
  const interrupt = new AbortController();
  const onSigint = (): void => interrupt.abort();
  process.once("SIGINT", onSigint);
  try {
    while (!interrupt.signal.aborted) {
      const startMs = performance.now();
      let body: string;
      try {
        const { pairs, raw, one } = await fetchPairs();
        const [only] = pairs;
        body = context.json ? `${JSON.stringify(raw)}\n` : one && only !== undefined ? renderPair(only) : renderPairs(pairs);
      } catch (error) {
        body = `${oneLine(error instanceof Error ? error.message : String(error))}; trying again in ${formatElapsed(intervalMs)}\n`;
      }
      if (interrupt.signal.aborted) break;
      const heading = `${new Date().toISOString()}  every ${formatElapsed(intervalMs)}, Ctrl-C to stop\n`;
      if (context.json) context.io.stdout(body);
      else if (terminal !== null) context.io.stdout(`${redraw}${heading}\n${body}`);
      else context.io.stdout(`--- ${heading}${body}\n`);
      await sleep(Math.max(0, intervalMs - (performance.now() - startMs)), interrupt.signal);
    }
  } finally {
    process.off("SIGINT", onSigint);
  }
}

// ---- rendering ----

export function renderPairs(pairs: readonly PairInfo[]): string {
  if (pairs.length === 0) return "no pairs; create one with `tidemark pair create GROUP --to SECONDARY_MGMT_URL`\n";
  return pairs.map(renderPair).join("\n");
}

/** " (3.2s ago)" for an ISO time in the past, by this machine's clock (human-readable only). */
function ago(iso: string): string {
  const ms = Date.now() - Date.parse(iso);
  return Number.isFinite(ms) ? ` (${formatElapsed(Math.max(0, ms))} ago)` : "";
}

function formatLagSeconds(seconds: number): string {
  return seconds < 60 ? `${seconds.toFixed(1)}s` : formatSeconds(seconds);
}

/** One pair as a block of aligned "label: value" lines under a heading. */
export function renderPair(pair: PairInfo): string {
  const fields: Array<[string, string]> = [
    ["state", pair.state],
    ["remote", `group ${pair.remoteGroup} on ${pair.remoteNode}${pair.remoteUrl === null ? "" : ` (${pair.remoteUrl})`}`],
    ["transfer", `${pair.mode}, ${pair.transfer}, ${pair.streams} stream${pair.streams === 1 ? "" : "s"}, reflect ${pair.reflect}`],
    [
      "sequence",
      `accepted ${pair.acceptedSequence}  sent ${pair.sentSequence}  arrived ${pair.arrivedSequence}  reflected ${pair.reflectedSequence}`,
    ],
    ["lag", `${pair.lagRecords} record${pair.lagRecords === 1 ? "" : "s"}, ${formatBytes(pair.lagBytes)}, ${formatLagSeconds(pair.lagSeconds)}`],
    ["journal", formatUsage(pair.journalBytes, pair.journalBytesMax)],
    ["held writes", String(pair.heldWrites)],
  ];
  if (pair.consistentAsOf !== null) fields.push(["consistent as of", `${pair.consistentAsOf}${ago(pair.consistentAsOf)}`]);
  if (pair.reason !== null) fields.push(["reason", pair.reason]);
  const { link } = pair;
  fields.push([
    "link",
    `${link.connectedStreams}/${pair.streams} streams connected, ${link.reconnects} reconnect${link.reconnects === 1 ? "" : "s"}, last error: ${link.lastError ?? "none"}` +
    `${link.downSince === null ? "" : `, down since ${link.downSince}${ago(link.downSince)}`}`,
  ]);
  if (pair.lastContact !== null) fields.push(["last contact", `${pair.lastContact}${ago(pair.lastContact)}`]);
  if (pair.copy !== null) {
    fields.push(["copy", `${formatPercent(pair.copy.doneBytes, pair.copy.totalBytes)} (${formatBytes(pair.copy.doneBytes)} / ${copyAmount(pair.copy)})`]);
  }
  const width = Math.max(...fields.map(([label]) => label.length + 1));
  const lines = fields.map(([label, value]) => `  ${`${label}:`.padEnd(width)}  ${value}`.trimEnd());
  return `pair ${pair.group} (${pair.role}, id ${pair.pairId})\n${lines.join("\n")}\n`;
}

function describePrimary(primary: TakeoverResult["primary"]): string {
  if (primary === undefined) return "";
  if (primary.fenced && !primary.forced) return `; the primary is fenced (it accepted through sequence ${String(primary.lastAcceptedSequence)}, all kept)`;
  return `; forced: the primary was not fenced (pair generation ${primary.generation}; if it comes back it is refused and fences itself)`;
}

export function renderTakeover(results: readonly TakeoverResult[]): string {
  return results
    .map((result) => `${result.group}: kept through sequence ${result.reflectedSequence}, dropped ${result.droppedRecords} record${result.droppedRecords === 1 ? "" : "s"} beyond it, now ${result.state}${describePrimary(result.primary)}` +
      `${result.domainNote === undefined ? "" : `; ${result.domainNote}`}\n`)
    .join("");
}
