// The primary role of a node: the pairs its writable groups are the primary of. It creates
// them (asking the secondary's management API to prepare its side, then saving the pair),
// opens them at start, carries the operator's suspend and resume to their machines
// (core/primary-pair.ts, run by each PairLink), runs the one time-advance ticker for every
// pair, and answers their status. node.ts wires it: the groups' writers, the volumes and
// node.json's serialised saves are given to it, never reached for.
import type { HostWriteLedger, LinkDown } from "../core/pair-view.ts";
import type { WriteTimePolicy } from "../core/types.ts";
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { assert } from "../core/assert.ts";
import { pairDeleteAckPollMs, pairDeleteAckWaitMsMax, pairEndRetryMs, pairEndsOwedMax, pairReflectedSaveIntervalMs, timeAdvanceIntervalMs } from "../core/limits.ts";
import type { PrimaryPairChange } from "../core/primary-pair.ts";
import { ControlError } from "../core/errors.ts";
import type { CreatePairRequest, PairEndInfo, PairInfo, PairSecondaryCheckRequest, PairSecondaryEndRequest, PairSecondaryInfo, PairSecondaryRequest } from "../mgmt/control.ts";
import type { GroupRecord, NodeMetadata, PairEndOwedRecord, PairRecord } from "../metadata/metadata.ts";
import type { Clock, Timer } from "../node/clock.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import type { Transport } from "../transport/transport.ts";
import type { GroupWriter } from "./group-writer.ts";
import { PairLink } from "./pair-link.ts";
import { replPairDeletedCloseText } from "../protocol/repl-protocol.ts";

/** A volume of this node, as the primary role needs it. */
export interface PrimaryVolume {
  readonly name: string;
  readonly sizeBytes: number;
  readonly file: VolumeFile;
}

export interface PrimaryRoleOptions {
  readonly nodeId: string;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly transport: Transport;
  /** node.json as last saved (read only). */
  readonly metadata: () => NodeMetadata;
  /** Serialised read-modify-write of node.json: `change` edits the draft; resolves once it is on disk. */
  readonly updateMetadata: (change: (metadata: NodeMetadata) => void, critical?: boolean) => Promise<void>;
  /** The writable group of that name, if any. */
  readonly writer: (group: string) => GroupWriter | undefined;
  /** Whether `group` is the secondary of a pair on this node. */
  readonly isSecondary: (group: string) => boolean;
  readonly volume: (volumeId: number) => PrimaryVolume | undefined;
  /** Asks the secondary's management API at `baseUrl` to prepare its side (ControlError naming it on failure). */
  readonly prepareSecondary: (baseUrl: string, request: PairSecondaryRequest) => Promise<PairSecondaryInfo>;
  /** Asks the secondary's management API at `baseUrl` to end its side of a pair (ControlError naming it on failure). */
  readonly endSecondary: (baseUrl: string, request: PairSecondaryEndRequest) => Promise<PairEndInfo>;
  /** Asks the management API at `baseUrl` whether it holds the secondary side of a pair (ControlError naming it on failure). */
  readonly checkSecondary: (baseUrl: string, request: PairSecondaryCheckRequest) => Promise<PairSecondaryInfo>;
  /** What this node declares of its write times to a named domain's secondary (`--write-time`, `--max-clock-skew` in ms, 0: none). */
  readonly writeTimes: () => { readonly writeTimePolicy: WriteTimePolicy; readonly maxClockSkewMs: number };
}

export class PrimaryRole {
  private readonly options: PrimaryRoleOptions;
  /** Pairs by the name of the group they replicate (one per group in node.json today). */
  private readonly links = new Map<string, PairLink>();
  private timeAdvanceTimer: Timer | undefined;
  private pairEndTimer: Timer | undefined;
  private reflectedSaveTimer: Timer | undefined;
  /** The reflected sequence last saved per group (by this timer); a save runs at most once at a time. */
  private readonly reflectedSaved = new Map<string, number>();
  private reflectedSaving = false;
  /** The delivery of owed pair ends running now (one at a time). */
  private delivering: Promise<void> | undefined;

  constructor(options: PrimaryRoleOptions) {
    this.options = options;
  }

  /** Opens the pairs and starts the time-advance ticker. */
  start(): void {
    for (const link of this.links.values()) link.start();
    // One timer for every pair's time advances (not one per pair: idle pairs cost wakeups).
    this.timeAdvanceTimer = this.options.clock.setInterval(() => {
      for (const link of this.links.values()) link.maybeTimeAdvance();
    }, Math.max(10, Math.floor(timeAdvanceIntervalMs / 2)));
    this.pairEndTimer = this.options.clock.setInterval(() => void this.deliverOwedEnds(), pairEndRetryMs);
    this.reflectedSaveTimer = this.options.clock.setInterval(() => void this.saveReflected(), pairReflectedSaveIntervalMs);
    void this.deliverOwedEnds();
  }

  /**
   * Saves in node.json the reflected sequence of every pair whose secondary reported more since
   * the last save (one save for all), so a restart after a crash rebuilds the lag from there
   * (pairReflectedSaveIntervalMs). A save the disk refuses is tried again on the next tick.
   */
  private async saveReflected(): Promise<void> {
    if (this.reflectedSaving) return;
    const moved = new Map<string, number>();
    for (const [group, link] of this.links) {
      const reflected = link.reflectedNow();
      if (reflected > (this.reflectedSaved.get(group) ?? 0)) moved.set(group, reflected);
    }
    if (moved.size === 0) return;
    this.reflectedSaving = true;
    try {
      await this.options.updateMetadata((m) => {
        for (const g of m.groups) {
          const reflected = g.pair === undefined ? undefined : moved.get(g.name);
          if (g.pair !== undefined && reflected !== undefined) g.pair.reflectedSequence = Math.max(g.pair.reflectedSequence ?? 0, reflected);
        }
      });
      for (const [group, reflected] of moved) this.reflectedSaved.set(group, reflected);
    } catch (error) {
      this.options.logger.debug({ event: "pair_reflected_save_failed", err: error instanceof Error ? error.message : String(error) }, "could not save the pairs' reflected sequences; trying again");
    } finally {
      this.reflectedSaving = false;
    }
  }

  /**
   * Tells each secondary this node owes a pair end (node.json `pairEndsOwed`: `pair delete
   * --force` could not reach it) that the pair is deleted, when it can be reached: the
   * secondary then keeps its image read-only and stops holding its consistency domain. An
   * unreachable secondary is tried again every pairEndRetryMs; one that answers anything else
   * is forgotten, with a log line saying what to type there. `onlyUrl`: just the ends owed to
   * that management URL (before a new pair with it). Never throws.
   */
  deliverOwedEnds(onlyUrl?: string): Promise<void> {
    const run = async (): Promise<void> => {
      for (const owed of this.options.metadata().pairEndsOwed ?? []) {
        if (onlyUrl !== undefined && owed.remoteUrl !== onlyUrl) continue;
        const there = `tidemark pair delete ${owed.remoteGroup} --force --node ${owed.remoteUrl}`;
        let keep = false;
        try {
          const answer = await this.options.endSecondary(owed.remoteUrl, { pairId: owed.pairId, primaryNode: this.options.nodeId, group: owed.remoteGroup, promote: false });
          this.options.logger.info({ event: "pair_end_delivered", group: owed.group, pairId: owed.pairId, secondary: owed.remoteNode, deletedThere: answer.deleted },
            answer.deleted ? "told the secondary that the pair deleted here is deleted: it keeps its image" : "the secondary had no such pair any more");
        } catch (error) {
          if (error instanceof ControlError && error.code === "TM_ERR_UNREACHABLE") {
            keep = true;
          } else {
            this.options.logger.warn({ event: "pair_end_refused", group: owed.group, pairId: owed.pairId, secondary: owed.remoteNode, err: error instanceof Error ? error.message : String(error) },
              `the secondary did not take the end of the pair deleted here; end it there with: ${there}`);
          }
        }
        if (keep) continue;
        try {
          await this.options.updateMetadata((m) => {
            m.pairEndsOwed = (m.pairEndsOwed ?? []).filter((o) => o.pairId !== owed.pairId);
            if (m.pairEndsOwed.length === 0) delete m.pairEndsOwed;
          });
        } catch (error) {
          // The disk refused the save: it is tried again with the next round (the end is idempotent there).
          this.options.logger.warn({ event: "pair_end_save_failed", pairId: owed.pairId, err: error instanceof Error ? error.message : String(error) }, "could not save that the pair end was delivered; trying again later");
        }
      }
    };
    const previous = this.delivering ?? Promise.resolve();
    const next = previous.then(run, run).finally(() => {
      if (this.delivering === next) this.delivering = undefined;
    });
    this.delivering = next;
    return next;
  }

  /** The node stops: no more time advances, every pair's streams close. */
  stop(): void {
    this.options.clock.clear(this.timeAdvanceTimer);
    this.timeAdvanceTimer = undefined;
    this.options.clock.clear(this.pairEndTimer);
    this.pairEndTimer = undefined;
    this.options.clock.clear(this.reflectedSaveTimer);
    this.reflectedSaveTimer = undefined;
    for (const link of this.links.values()) link.stop("node stopping");
  }

  /** Opens the pair of a recovered writable group (started with the role). */
  openPair(record: GroupRecord, pair: PairRecord, writer: GroupWriter, hostWrites?: HostWriteLedger, linkDown?: LinkDown): PairLink {
    const volumes = pair.volumes.map((mapping) => {
      const volume = this.options.volume(mapping.volumeId);
      assert(volume !== undefined, `pair of ${record.name} maps volume ${mapping.volumeId} that exists`);
      return { volumeId: mapping.volumeId, remoteVolume: mapping.remoteVolume, file: volume.file };
    });
    const link = new PairLink({
      record: pair,
      groupName: record.name,
      nodeId: this.options.nodeId,
      writer,
      volumes,
      logger: this.options.logger.child({ component: "pair", group: record.name }),
      clock: this.options.clock,
      transport: this.options.transport,
      // Every save of the pair's record carries what the link knows reflected (a suspend, a fence:
      // the next start counts its lag from it, even if no checkpoint or stop can save it later).
      persist: (change) => this.options.updateMetadata((m) => applyToPair(m, record.id, change, this.links.get(record.name)?.reflectedNow())),
      hostWrites,
      linkDown,
    });
    this.links.set(record.name, link);
    return link;
  }

  hasPair(group: string): boolean {
    return this.links.has(group);
  }

  /** Why a volume of `group` cannot be resized now because of its pair (PairLink.resizeRefusal), or undefined. */
  resizeRefusal(group: string): string | undefined {
    return this.links.get(group)?.resizeRefusal();
  }

  /** The pair's acknowledged sequence (what the secondary holds durably), for the group's checkpoint. */
  ackedSequence(group: string): number | undefined {
    return this.links.get(group)?.ackedSequence;
  }

  /** The pair's reflected sequence as this node knows it, for the group's checkpoint (the next start's lag counts from it). */
  reflectedSequence(group: string): number | undefined {
    return this.links.get(group)?.reflectedNow();
  }

  /** Status of the pair of `group` if this node is its primary. */
  pairStatus(group: string): PairInfo | undefined {
    const info = this.links.get(group)?.status();
    return info === undefined ? undefined : this.withDomainHolders(info, [...this.links.values()].map((link) => link.status()));
  }

  pairStatuses(): PairInfo[] {
    const all = [...this.links.values()].map((link) => link.status());
    return all.map((info) => this.withDomainHolders(info, all));
  }

  /**
   * Issue 8, kind 4: a pair whose records wait on the secondary while another pair of its
   * consistency domain there (same secondary node, time mode) is suspended or failed here
   * says which one may be holding its reflection, and what the operator can do. The
   * secondary's own status says for sure (it may have detached that group).
   */
  private withDomainHolders(info: PairInfo, all: readonly PairInfo[]): PairInfo {
    if (info.reason !== null || info.state !== "replicating" || info.reflect !== "time" || info.reflectedSequence >= (info.writeSequence ?? info.acceptedSequence)) return info;
    const holders = all.filter((o) => o.group !== info.group && o.remoteNode === info.remoteNode && o.reflect === "time" && (o.state === "suspended" || o.state === "failed"));
    if (holders.length === 0) return info;
    const names = holders.map((h) => `${h.group} (${h.state})`).join(", ");
    return {
      ...info,
      reason: `its reflection on ${info.remoteNode} may be held behind ${names} of the same consistency domain (see tidemark pair status${secondaryNode(info)}): resume it, or suspend them together ` +
        `(tidemark pair suspend ${[info.group, ...holders.map((h) => h.group)].join(",")}), or detach it on the secondary (tidemark pair detach ${holders[0]?.remoteGroup ?? ""}${secondaryNode(info)})`,
    };
  }

  /** `primaryUrl`: this node's management URL as its operator reaches it, recorded by the secondary for its hints. */
  /**
   * Asks the secondary to make its group. A secondary older than the `primaryUrl` field refuses
   * it as unknown (its schema is strict): asked again without it, it pairs, and its hints keep a
   * placeholder for this node's URL.
   */
  private async prepareSecondary(to: string, request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    try {
      return await this.prepareSecondaryOnce(to, request);
    } catch (error) {
      // A group of that name is there already (a pair deleted before left it): say what to type, in order, on which node.
      if (error instanceof ControlError && error.code === "TM_ERR_CONFLICT" && error.message.includes(`group ${request.group} already exists on node`)) {
        const g = request.group;
        const steps = `${error.message.includes("read-only") ? `tidemark pair delete ${g} --promote --node ${to}, then ` : ""}tidemark group delete ${g} --node ${to} (its volumes stay), then this pair create again with --force (the copy overwrites them)`;
        throw new ControlError(error.code, `${error.message}. To pair into it: ${steps}`);
      }
      throw error;
    }
  }

  private async prepareSecondaryOnce(to: string, request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    try {
      return await this.options.prepareSecondary(to, request);
    } catch (error) {
      if (request.primaryUrl === undefined || !(error instanceof ControlError) || error.code !== "TM_ERR_INVALID" || !error.message.includes("primaryUrl")) throw error;
      const { primaryUrl: _older, ...without } = request;
      this.options.logger.info({ event: "pair_secondary_older", to }, "the secondary does not know the primaryUrl field (an older tidemark): asked again without it");
      return await this.options.prepareSecondary(to, without);
    }
  }

  async createPair(request: CreatePairRequest, primaryUrl?: string): Promise<PairInfo> {
    const writer = this.options.writer(request.group);
    if (writer === undefined) {
      if (this.options.isSecondary(request.group)) throw new ControlError("TM_ERR_STATE", `group ${request.group} is itself the secondary of a pair; create pairs from the primary`);
      throw new ControlError("TM_ERR_NOT_FOUND", `group ${request.group} does not exist; create it with: tidemark group create ${request.group} --volumes V1[,V2...]`);
    }
    if (this.links.has(request.group)) throw new ControlError("TM_ERR_EXISTS", `group ${request.group} already has a pair (see: tidemark pair status ${request.group})`);
    const stopped = writer.stopped;
    if (stopped !== undefined) throw new ControlError("TM_ERR_STATE", `group ${request.group} is stopped (${stopped.reason}); create the pair once it has resumed`);
    if (request.mode === "sync") throw new ControlError("TM_ERR_INVALID", "--mode sync (cascade) is not supported yet; use --mode async");
    if (request.reflect === "marker") throw new ControlError("TM_ERR_INVALID", "--reflect marker needs consistency points, which are not supported yet; use --reflect time or seq");
    const record = this.options.metadata().groups.find((g) => g.name === request.group);
    assert(record !== undefined, "a live group is in the metadata");
    const remoteGroup = request.remoteGroup ?? request.group;
    const nodeId = this.options.nodeId;
    const pairId = `${nodeId}/${request.group}/${randomUUID().slice(0, 8)}`;
    const members = record.volumeIds.map((id) => {
      const volume = this.options.volume(id);
      assert(volume !== undefined, "group volumes exist");
      return { id, ...volume };
    });
    const secondaryRequest: PairSecondaryRequest = {
      pairId, primaryNode: nodeId, primaryGroup: request.group, group: remoteGroup, ...(primaryUrl === undefined ? {} : { primaryUrl }),
      volumes: members.map((v) => ({ name: v.name, sizeBytes: v.sizeBytes })), reflect: request.reflect, transfer: request.transfer, streams: request.streams,
      ...(request.force === true ? { force: true } : {}),
      ...(request.domain === undefined ? {} : { domain: { name: request.domain, ...this.options.writeTimes() } }),
    };
    // A pair end still owed to that node goes first: its group there may be the one asked for again.
    await this.deliverOwedEnds(request.to);
    const secondary = await this.prepareSecondary(request.to, secondaryRequest);
    if (secondary.nodeId === nodeId) throw new ControlError("TM_ERR_INVALID", `--to ${request.to} is this node itself; pair with another node`);
    // S0: everything accepted so far is covered by the initial copy; the stream starts after it.
    const copyStartSequence = writer.nextSequence - 1;
    const pair: PairRecord = {
      pairId, remoteNode: secondary.nodeId, remoteUrl: request.to, remoteGroup, remoteReplAddress: secondary.replAddress,
      transfer: request.transfer, streams: request.streams, reflect: request.reflect, state: "copying",
      copyStartSequence, consistentFromSequence: 0, copyDone: false, ackedSequence: copyStartSequence, reason: null,
      volumes: members.map((v) => ({ volumeId: v.id, remoteVolume: v.name })),
      ...(request.domain === undefined ? {} : { domain: { name: request.domain, maxClockSkewMs: this.options.writeTimes().maxClockSkewMs } }),
    };
    await this.options.updateMetadata((m) => {
      groupRecordById(m, record.id).pair = pair;
    });
    const updated = groupRecordById(this.options.metadata(), record.id);
    const link = this.openPair(updated, structuredClone(pair), writer);
    link.start();
    this.options.logger.info({ event: "pair_created", group: request.group, pairId, secondary: secondary.nodeId, remoteGroup, copyStartSequence }, "pair created");
    return link.status();
  }

  /** Suspends the pair of `group` once saved; a suspended pair answers at once, a failed one is refused (TM_ERR_STATE). */
  async suspendPair(group: string): Promise<PairInfo> {
    const link = this.primaryLink(group);
    await link.suspend();
    return link.status();
  }

  /** Resumes a suspended pair once saved; one that runs already answers as it is; a failed or fenced one is refused (TM_ERR_STATE). */
  async resumePair(group: string): Promise<PairInfo> {
    const link = this.primaryLink(group);
    await link.resume();
    return link.status();
  }

  /** Makes a fenced group writable again once saved; refused (TM_ERR_STATE) if it is not fenced, (TM_ERR_PEER_TOOK_OVER) without `force` when its secondary took over. */
  async unfencePair(group: string, force: boolean): Promise<PairInfo> {
    const link = this.primaryLink(group);
    await link.unfence(force);
    return link.status();
  }

  /**
   * `pair suspend g1,g2` (issue 8): the pairs of every listed group, suspended together so the
   * secondary holds none of them behind another: every name is checked first (a pair on this
   * node, not failed), then each is suspended. Errors: ControlError before anything changed,
   * or a save's (the ones before it are suspended).
   */
  async suspendPairs(groups: readonly string[]): Promise<PairInfo[]> {
    const links = this.primaryLinks(groups);
    for (const link of links) {
      const info = link.status();
      if (info.state === "failed") throw new ControlError("TM_ERR_STATE", `pair of ${info.group} has failed (${info.reason ?? "unknown"}); it cannot be suspended, so none of ${groups.join(", ")} is`);
    }
    const result: PairInfo[] = [];
    for (const link of links) {
      await link.suspend();
      result.push(link.status());
    }
    return result;
  }

  /** `pair resume g1,g2`: no listed pair may be failed or fenced (checked first), then each resumes (one that runs already stays as it is). Errors as suspendPairs. */
  async resumePairs(groups: readonly string[]): Promise<PairInfo[]> {
    const links = this.primaryLinks(groups);
    for (const link of links) {
      const info = link.status();
      // A pair that runs already is resumed as it is (idempotent); a failed or fenced one refuses the list.
      if (info.state === "failed" || info.state === "fenced" || info.state === "takeover") {
        throw new ControlError("TM_ERR_STATE", `pair of ${info.group} is ${info.state}, not suspended; none of ${groups.join(", ")} was resumed`);
      }
    }
    const result: PairInfo[] = [];
    for (const link of links) {
      await link.resume();
      result.push(link.status());
    }
    return result;
  }

  /**
   * `pair delete GROUP` on the primary (docs/replication.md, "Ending a pair"): ends the pair on
   * both sides and keeps both images; the group stays an ordinary writable group. Without
   * `force` it first waits (up to pairDeleteAckWaitMsMax) until the secondary holds every record
   * accepted when the command began, and refuses when it does not (saying how many are
   * missing), when the initial copy is not done, when the group is fenced, or when the
   * secondary cannot be reached or refuses (nothing changed then). With `force` this side ends
   * whatever the secondary says (its answer is in `secondary.note`). Then the link stops and
   * node.json forgets the pair (saved before the answer). No pair on this node: deleted false.
   * Errors: ControlError (TM_ERR_STATE, TM_ERR_UNREACHABLE and the secondary's codes), the save's.
   */
  async deletePair(group: string, options: { readonly force: boolean; readonly promote: boolean }): Promise<PairEndInfo> {
    const link = this.links.get(group);
    if (link === undefined) return { group, deleted: false, role: null, readOnly: false, keptSequence: null };
    const writer = this.options.writer(group);
    assert(writer !== undefined, "a pair's group has its writer");
    const info = link.status();
    const { force } = options;
    const record = this.options.metadata().groups.find((g) => g.name === group);
    const pair = record?.pair;
    assert(record !== undefined && pair !== undefined, "a live pair is in node.json");
    const again = `tidemark pair delete ${group} --force`;
    if (!force && info.state === "fenced") {
      throw new ControlError("TM_ERR_STATE", `group ${group} is fenced (${info.reason ?? "its secondary took over or is taking over"}): ending the pair here makes it writable beside the secondary's copy. To do so anyway: ${again}`);
    }
    if (!force && info.state === "copying") {
      const copy = info.copy === null ? "" : ` (${info.copy.doneBytes} of ${info.copy.totalBytes} bytes copied)`;
      throw new ControlError("TM_ERR_STATE", `the initial copy of ${group} is not done${copy}: the secondary holds no consistent image yet. Wait for it (tidemark pair status ${group}), or end the pair on this node only: ${again}`);
    }
    if (!force) await this.waitForSecondary(link, group, info.writeSequence ?? info.acceptedSequence);
    let secondary: { deleted: boolean; note: string | null; readOnly?: boolean; takenOver?: boolean; node: string; url: string };
    let owed = false;
    // Whatever is to be typed on the secondary names it (--node), never "there".
    const there = `tidemark pair delete ${pair.remoteGroup} --force --node ${pair.remoteUrl}`;
    const copying = info.state === "copying" ? " (its volumes then keep an incomplete copy, consistent with no point in time)" : "";
    // The secondary ends its side first and closes the streams: not a loss of the link.
    link.beginEnd();
    try {
      const answer = await this.options.endSecondary(pair.remoteUrl, { pairId: pair.pairId, primaryNode: this.options.nodeId, group: pair.remoteGroup, promote: options.promote });
      secondary = {
        deleted: answer.deleted, note: answer.deleted ? null : `node ${pair.remoteNode} had no pair ${pair.pairId} (deleted there before)`, node: pair.remoteNode, url: pair.remoteUrl,
        ...(answer.deleted ? { readOnly: answer.readOnly } : {}), ...(answer.takenOver === true ? { takenOver: true } : {}),
      };
    } catch (error) {
      if (!(error instanceof ControlError) || !force) link.endRefused();
      if (!(error instanceof ControlError)) throw error;
      if (!force) {
        const thisSideOnly = `To end the pair on this node only: ${again} (then, once node ${pair.remoteNode} is back: ${there})`;
        throw new ControlError(error.code, `${error.message}; nothing was deleted. ${thisSideOnly}`);
      }
      owed = error.code === "TM_ERR_UNREACHABLE";
      secondary = {
        deleted: false, node: pair.remoteNode, url: pair.remoteUrl,
        note: owed
          ? `not reached (${error.message}): this node tells it once it can (every ${pairEndRetryMs / 1000} s); to end it there now: ${there}${copying}`
          : `left as it is: ${error.message}; end it on node ${pair.remoteNode} with: ${there}${copying}`,
      };
    }
    link.end(replPairDeletedCloseText);
    this.links.delete(group);
    const owedEnd: PairEndOwedRecord = { pairId: pair.pairId, group, remoteNode: pair.remoteNode, remoteUrl: pair.remoteUrl, remoteGroup: pair.remoteGroup, since: new Date(this.options.clock.wallMs()).toISOString() };
    await this.options.updateMetadata((m) => {
      delete groupRecordById(m, record.id).pair;
      if (owed) {
        const list = [...(m.pairEndsOwed ?? []), owedEnd];
        const dropped = list.splice(0, Math.max(0, list.length - pairEndsOwedMax));
        for (const old of dropped) this.options.logger.warn({ event: "pair_end_dropped", pairId: old.pairId, secondary: old.remoteNode }, `too many pair ends owed: no longer telling node ${old.remoteNode}; end it there with: tidemark pair delete ${old.remoteGroup} --force --node ${old.remoteUrl}`);
        m.pairEndsOwed = list;
      }
    });
    if (writer.fenced !== undefined) writer.unfence();
    this.options.logger.info({ event: "pair_deleted", group, role: "primary", pairId: pair.pairId, secondary: pair.remoteNode, secondaryDeleted: secondary.deleted, forced: force }, "pair deleted: replication ended, the group stays writable");
    return { group, deleted: true, role: "primary", readOnly: false, keptSequence: null, secondary };
  }

  /**
   * `pair set GROUP --to URL`: the secondary moved (new addresses, same data directory). The
   * node at `to` must answer that it is the pair's secondary node and holds this very pair;
   * then node.json's management URL and replication address are saved, and the pair's link
   * starts again from the saved record toward the new address: the handshake resumes from
   * what the secondary holds (no new copy). Errors: ControlError TM_ERR_NOT_FOUND / TM_ERR_STATE
   * (no pair here, a secondary), TM_ERR_CONFLICT (another node, or it does not hold this pair),
   * TM_ERR_UNREACHABLE, the save's.
   */
  async setSecondary(group: string, to: string): Promise<PairInfo> {
    const link = this.primaryLink(group);
    const writer = this.options.writer(group);
    const record = this.options.metadata().groups.find((g) => g.name === group);
    const pair = record?.pair;
    assert(writer !== undefined && record !== undefined && pair !== undefined, "a live pair has its writer and its record");
    const answer = await this.options.checkSecondary(to, { pairId: pair.pairId, primaryNode: this.options.nodeId, group: pair.remoteGroup });
    if (answer.nodeId !== pair.remoteNode) {
      throw new ControlError("TM_ERR_CONFLICT", `the node at ${to} is ${answer.nodeId}, not ${pair.remoteNode}, the secondary of this pair; give --to the management URL of node ${pair.remoteNode}`);
    }
    if (this.links.get(group) !== link) throw new ControlError("TM_ERR_CONFLICT", `the pair of ${group} changed meanwhile; see tidemark pair status ${group}`);
    const from = { url: pair.remoteUrl, repl: pair.remoteReplAddress };
    await this.options.updateMetadata((m) => {
      const saved = groupRecordById(m, record.id).pair;
      assert(saved !== undefined, "the pair is in node.json");
      saved.remoteUrl = to;
      saved.remoteReplAddress = answer.replAddress;
    });
    // A link down (logged pair_disconnected) stays down in the new one until a stream is
    // up there: then pair_reconnected is logged, once.
    const linkDown = link.linkDown;
    link.end("the secondary moved (pair set)");
    const updated = groupRecordById(this.options.metadata(), record.id);
    assert(updated.pair !== undefined, "the pair is in node.json");
    const moved = this.openPair(updated, structuredClone(updated.pair), writer, undefined, linkDown);
    moved.start();
    this.options.logger.info({ event: "pair_secondary_moved", group, pairId: pair.pairId, fromUrl: from.url, toUrl: to, fromRepl: from.repl, toRepl: answer.replAddress }, "pair set: the secondary's new address is saved; the pair reconnects there");
    return moved.status();
  }

  /** Waits until the secondary acknowledged `throughSequence`; refuses (TM_ERR_STATE, how many are missing) after pairDeleteAckWaitMsMax. */
  private async waitForSecondary(link: PairLink, group: string, throughSequence: number): Promise<void> {
    const deadlineMs = this.options.clock.monotonicMs() + pairDeleteAckWaitMsMax;
    while (link.ackedSequence < throughSequence) {
      // Only a running pair can catch up: a suspended, failed or stopped one is refused at once.
      const moving = link.status().state === "replicating";
      if (!moving || this.options.clock.monotonicMs() >= deadlineMs || this.links.get(group) !== link) {
        const missing = throughSequence - link.ackedSequence;
        throw new ControlError("TM_ERR_STATE",
          `${missing} record${missing === 1 ? "" : "s"} accepted here (through sequence ${throughSequence}) ${missing === 1 ? "is" : "are"} not on the secondary yet (it holds through ${link.ackedSequence})${whySecondaryBehind(link.status())}: ` +
          `deleting the pair now would leave it behind. Let it catch up (tidemark pair status ${group}; pair resume if suspended) and run this again, or leave it behind: tidemark pair delete ${group} --force`);
      }
      await this.options.clock.sleep(pairDeleteAckPollMs);
    }
  }

  /** The links of every listed group; the first refusal says that none was changed. */
  private primaryLinks(groups: readonly string[]): PairLink[] {
    try {
      return groups.map((group) => this.primaryLink(group));
    } catch (error) {
      if (error instanceof ControlError) throw new ControlError(error.code, `${error.message}; none of ${groups.join(", ")} was changed`);
      throw error;
    }
  }

  private primaryLink(group: string): PairLink {
    const link = this.links.get(group);
    if (link !== undefined) return link;
    if (this.options.isSecondary(group)) throw new ControlError("TM_ERR_STATE", `group ${group} is the secondary of its pair; run this against the primary`);
    throw new ControlError("TM_ERR_NOT_FOUND", `group ${group} has no pair on this node`);
  }
}

/** ` --node URL` of a pair's secondary (what to type to run a command there), or "" when unknown. */
function secondaryNode(info: PairInfo): string {
  return info.remoteUrl === null ? "" : ` --node ${info.remoteUrl}`;
}

/**
 * Why the secondary of a pair does not acknowledge: it cannot be reached (no stream, the link's
 * last error, the last contact), the pair is suspended or failed, or "" while it replicates.
 */
export function whySecondaryBehind(info: PairInfo): string {
  const node = `node ${info.remoteNode}${info.remoteUrl === null ? "" : ` (${info.remoteUrl})`}`;
  const contact = info.lastContact === null ? "no contact since this node started" : `last contact ${info.lastContact}`;
  if (info.state === "suspended" || info.state === "failed" || info.state === "fenced") return ` (the pair is ${info.state})`;
  if (info.state === "disconnected" || info.link.connectedStreams === 0) {
    return `: the secondary ${node} cannot be reached (${info.link.lastError ?? "no replication stream is connected"}; ${contact})`;
  }
  return info.state === "replicating" ? ` (the secondary ${node} did not acknowledge them in time; ${contact})` : ` (the pair is ${info.state})`;
}

/** Writes a pair machine's change into the draft of node.json, with the reflected sequence the link knows (only up, except where the change lowers acknowledged). */
function applyToPair(metadata: NodeMetadata, groupId: number, change: PrimaryPairChange, reflectedSequence: number | undefined): void {
  const pair = metadata.groups.find((g) => g.id === groupId)?.pair;
  if (pair === undefined) return; // deleted meanwhile (pair delete): a save the link queued before it ended

  Object.assign(pair, change.record);
  if (reflectedSequence !== undefined) pair.reflectedSequence = Math.max(pair.reflectedSequence ?? 0, reflectedSequence);
  if (change.ackedSequenceAtMost !== undefined) {
    pair.ackedSequence = Math.min(pair.ackedSequence, change.ackedSequenceAtMost);
    if (pair.reflectedSequence !== undefined) pair.reflectedSequence = Math.min(pair.reflectedSequence, change.ackedSequenceAtMost);
  }
}

/** The metadata record of a group that must exist (a live group always has one). */
function groupRecordById(metadata: NodeMetadata, id: number): GroupRecord {
  const group = metadata.groups.find((g) => g.id === id);
  assert(group !== undefined, () => `group ${id} is in the metadata`);
  return group;
}
