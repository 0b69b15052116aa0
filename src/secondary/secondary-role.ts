// A node's secondary role (issue 7 item 5): the groups that are the secondary of a pair.
// It owns them (SecondaryGroup: receiver, journal, read-ahead), their consistency domains
// (the Reflector), and runs their lifecycle: the pure machine of
// core/secondary-group-machine.ts decides, this class executes the effects in order and
// feeds back their completions (persisted, synced, joined ...). It answers the primary's
// POST /v1/pair-secondaries (prepare), recovers the secondaries at start, checkpoints for the
// reflector, takes groups over for the operator, and says their status. node.ts only wires
// it: node.json's store, the volume registry, the journal directories and the writable
// groups a takeover hands groups to are injected (SecondaryRoleOptions).
import { writeLogEffect } from "../node/logger.ts";
import type { Logger } from "pino";
import { assert, unreachable } from "../core/assert.ts";
import { faultInjected } from "../core/faults.ts";
import { namedDomainRefusal, type NamedDomainMember } from "../core/named-domain.ts";
import { joinPending, joinPendingText, reflectModeConflict, type JoinPoint } from "../core/consistency-domain.ts";
import { pairEndWritesWaitMsMax, takeoverAppendsWaitMsMax, takeoverJoinPollMs, takeoverJoinWaitMsMax, takeoverReadBytes } from "../core/limits.ts";
import {
  copyStalledReason, decidePrepare, describeSecondary, initialSecondaryState, newSecondaryRecord, openRefusal, primaryNodeOption, primarySuspended,
  type OperatorRefusalCode, type SecondaryFacts, type SecondaryGroupEffect, type SecondaryGroupEvent, type SecondaryRecordChange, type TakeoverOutcome,
} from "../core/secondary-group-machine.ts";
import { asAcceptNumber, asWriteTimeUs } from "../core/types.ts";
import { domainKeyOf, domainModeOf } from "../core/consistency-domain.ts";
import { atNode, comparePositions, formatPosition, type Position } from "../core/position.ts";
import { frontier, type SequencedPosition } from "../core/reflect.ts";
import {
  idleTakeover, stepTakeover, type DrainedGroup, type TakeoverRefusalCode, type NamedGroup, type TakeoverEffect, type TakeoverEvent, type TakeoverIntentGroup, type TakeoverState,
} from "../core/takeover.ts";
import { isStorageError } from "../node/group-stop.ts";
import { RecordKind, recordPayloadBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { HostWriteLedger, isoOfWallUs, noLag, pairHealthy, secondaryConsistentAsOfUs, secondaryLagSeconds } from "../core/pair-view.ts";
import type { ReplErrorCode } from "../protocol/repl-protocol.ts";
import { GroupJournal, type JournalOptions, type RecordCallback, type RecoveryReport } from "../storage/journal.ts";
import { makeDirectoryDurable } from "../storage/durable-fs.ts";
import type { FileSystem } from "../storage/fs.ts";
import type { VolumeFile } from "../storage/volume-file.ts";
import type { GroupRecord, NodeMetadata, SecondaryRecord, TakeoverIntentRecord } from "../metadata/metadata.ts";
import { ControlError, JournalClosedError } from "../core/errors.ts";
import type { GroupInfo, PairEndInfo, PairInfo, PairSecondaryCheckRequest, PairSecondaryInfo, PairSecondaryRequest, TakeoverOptions, TakeoverResult } from "../mgmt/control.ts";
import type { Clock } from "../node/clock.ts";
import type { JournalFigures } from "../node/metrics.ts";
import { emptySecondaryVolumes, saveWrittenMaps, volumeBytes } from "../volumes/volume-files.ts";
import { formatBytes } from "../cli/sizes.ts";
import { Reflector } from "./reflector.ts";
import { fencePrimary, type PrimaryFence } from "./fence-primary.ts";
import type { PeerReply, SecondaryHost, SecondaryStreams } from "./repl-server.ts";
import { SecondaryGroup, type SecondaryGroupObserver, type SecondaryVolume } from "./secondary-group.ts";

/** A volume of the node's registry, as the secondary role sees it. */
export interface RegistryVolume {
  readonly id: number;
  readonly name: string;
  readonly sizeBytes: number;
  readonly file: VolumeFile;
  /** The group it belongs to (writable or a pair's secondary), if any. */
  readonly owner: string | undefined;
}

export interface SecondaryRoleOptions {
  readonly nodeId: string;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly fileSystem: FileSystem;
  /** HOST:PORT a primary is told to open its replication streams to. */
  readonly replAddress: () => string;
  /** A new secondary group's journal size (bytes). */
  readonly journalBytesMax: number;
  /** node.json as last saved. */
  readonly metadata: () => NodeMetadata;
  /**
   * node.json's serialised read-modify-write (MetadataStore.update): `change` edits the draft
   * only, and the role's state follows the save once it resolved; `critical` writes may use
   * the space reserve.
   */
  readonly updateMetadata: (change: (metadata: NodeMetadata) => void, critical?: boolean) => Promise<void>;
  /** Runs a write the node cannot do without; on a full disk the space reserve is given back and it is tried once more. */
  readonly withSpaceReserve: <T>(what: string, write: () => Promise<T>) => Promise<T>;
  readonly volumes: {
    byName(name: string): RegistryVolume | undefined;
    byId(id: number): RegistryVolume | undefined;
    /** Creates a volume (the node's volume create, with its checks and errors). */
    create(name: string, sizeBytes: number): Promise<void>;
    /** The volume is the secondary of a pair now (read-only, the reflected image), or no longer (undefined). */
    setSecondary(volumeId: number, group: SecondaryGroup | undefined): void;
    /** Grows a volume to a size, idempotently: node.json first, then its file and map (VolumeRegistry.grow). */
    grow(volumeId: number, sizeBytes: number): Promise<void>;
  };
  /** A group id for a new group (unique even before it is saved). */
  readonly reserveGroupId: () => number;
  readonly journalDir: (record: Pick<GroupRecord, "id" | "journalGeneration">) => string;
  /** Opens (recovers) a group's journal; one it cannot trust throws with what to do. */
  readonly openJournal: (record: GroupRecord, options: Omit<JournalOptions, "fileSystem">, onRecord?: RecordCallback) => Promise<{ journal: GroupJournal; report: RecoveryReport }>;
  /** A taken-over group becomes an ordinary writable group over `journal` (the node's writer). */
  readonly becomeWritable: (record: GroupRecord, journal: GroupJournal) => void;
}

/** What one run of the takeover machine collects for its caller. */
interface TakeoverRun {
  results?: readonly TakeoverResult[];
  /** How the takeover dealt with each group's primary (fence-primary.ts), by group name. */
  fences?: Map<string, PrimaryFence>;
  refusal?: { readonly code: TakeoverRefusalCode; readonly text: string };
}

/** What one run of a lifecycle event collects for its caller. */
interface RunContext {
  /** The stream of the peer's message (peer events only). */
  readonly reply?: PeerReply;
  /** The reflector's checkpoint request: done, or not now. */
  checkpointDone?: boolean;
  /** The operator's takeover: the result, or the refusal. */
  result?: TakeoverOutcome;
  refusal?: { readonly code: OperatorRefusalCode; readonly text: string };
  /** The error behind the last failed completion (a takeover that fails throws it). */
  error?: unknown;
}

export class SecondaryRole implements SecondaryHost {
  private readonly options: SecondaryRoleOptions;
  private readonly logger: Logger;
  private readonly groups = new Map<string, SecondaryGroup>();
  readonly reflector: Reflector;
  private streams: SecondaryStreams | undefined;
  /** The operator's takeover (core/takeover.ts): one at a time. */
  private takeoverState: TakeoverState = idleTakeover;
  /** Journals a lifecycle step opened (or retired) and that are not the group's live one, by generation. */
  private readonly staged = new Map<SecondaryGroup, Map<number, GroupJournal>>();
  private readonly observer: SecondaryGroupObserver = {
    execute: (group, effects) => {
      for (const effect of effects) {
        const completion = this.execute(group, effect, {});
        assert(completion === undefined, () => `a step group ${group.name} took itself has no completion (${effect.type})`);
      }
    },
    arrived: () => this.reflector.kick(),
  };

  constructor(options: SecondaryRoleOptions) {
    this.options = options;
    this.logger = options.logger;
    this.reflector = new Reflector({
      groups: () => [...this.groups.values()],
      logger: this.logger.child({ component: "reflector" }),
      clock: options.clock,
      checkpointGroup: (group, force) => this.checkpoint(group, force),
      onReflected: (group) => this.streams?.reportReflected(group),
    });
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** The replication listener: the group-wide stream actions the lifecycle asks for go to it. */
  connectStreams(streams: SecondaryStreams): void {
    this.streams = streams;
  }

  findSecondary(name: string): SecondaryGroup | undefined {
    return this.groups.get(name);
  }

  has(name: string): boolean {
    return this.groups.has(name);
  }

  get size(): number {
    return this.groups.size;
  }

  // ---- start and stop -------------------------------------------------------------------

  /** A secondary from node.json: journal recovered (not replayed: the reflector does that), volumes read-only. */
  async recover(record: GroupRecord, secondary: SecondaryRecord): Promise<void> {
    const volumes: SecondaryVolume[] = record.volumeIds.map((volumeId) => {
      const live = this.options.volumes.byId(volumeId);
      assert(live !== undefined, `secondary ${record.name} names volume ${volumeId} that exists`);
      return { volumeId, name: live.name, file: live.file };
    });
    // The host writes the journal holds past the checkpoint are the lag until reflected (core/pair-view.ts).
    const recovered = new HostWriteLedger();
    const { journal, report } = await this.options.openJournal(record, { bytesMax: record.journalBytesMax, nextSequence: secondary.startSequence }, (journalRecord) => {
      if ((journalRecord.kind === RecordKind.write || journalRecord.kind === RecordKind.zeroes) && journalRecord.sequence > secondary.reflectedSequence) {
        recovered.note(journalRecord.sequence, recordPayloadBytes(journalRecord.kind, journalRecord.lengthBytes), journalRecord.wallTimeUs, undefined);
      }
    });
    const lastRecordPosition = report.records > 0 ? { writeTimeUs: asWriteTimeUs(report.maxWriteTimeUs), acceptNumber: asAcceptNumber(report.maxAcceptNumber) } : undefined;
    const group = new SecondaryGroup({
      groupId: record.id, name: record.name, record: structuredClone(secondary), journalGeneration: record.journalGeneration ?? 0, journal, volumes,
      logger: this.logger.child({ component: "secondary", group: record.name }), lastRecordPosition, clock: this.options.clock, nodeId: this.options.nodeId,
      observer: this.observer,
      hostWrites: recovered,
      growVolume: (volumeId, sizeBytes) => this.options.volumes.grow(volumeId, sizeBytes),
    });
    this.groups.set(record.name, group);
    for (const volume of volumes) this.options.volumes.setSecondary(volume.volumeId, group);
    // A group of an unfinished takeover stays out of its domain: it is applied only through its cut (finishTakeover).
    // A group of an unfinished pair delete, too (finishPairEnds).
    if (secondary.state === "replicating" && !this.heldForTakeover(record) && secondary.ending === undefined) this.reflector.recovered(group);
    // A crash between a checkpoint's metadata save and its trim leaves records the checkpoint
    // covers in the journal: trim them now. Nothing else would (a restarted reflector has
    // nothing dirty to checkpoint), and a journal full of them refused every batch for ever
    // (whole-node simulation, a crash point right after the save).
    if (secondary.state === "replicating" && secondary.reflectedSequence >= journal.firstSequence && !faultInjected("no-trim-at-start")) {
      try {
        await group.trimThrough(secondary.reflectedSequence);
      } catch (error) {
        group.stopWith(error as Error, journal.dir);
      }
    }
    if (report.records > 0 || report.tornBytesCut > 0) {
      this.logger.info({ event: "secondary_journal_recovered", group: record.name, records: report.records, tornBytesCut: report.tornBytesCut, reflected: secondary.reflectedSequence, arrived: group.arrivedSequence }, "secondary journal recovered");
    }
  }

  /** At start: reflect to the recomputed frontier before anyone reads a secondary's image. */
  async replayToFrontier(): Promise<void> {
    if (!faultInjected("skip-recovery-replay")) await this.reflector.drain();
  }

  /** Clean stop: reflection checkpointed, journals closed. */
  async stop(): Promise<void> {
    await this.reflector.stop();
    for (const secondary of this.groups.values()) {
      try {
        await secondary.close();
        await secondary.journal.close();
      } catch (error) {
        this.logger.error({ event: "secondary_close_failed", group: secondary.name, err: error }, "secondary journal did not close cleanly");
      }
    }
  }

  // ---- prepare: the primary's POST /v1/pair-secondaries ----------------------------------

  /** Makes (or checks) the secondary group of a pair; the group name is validated by the caller. */
  async prepare(request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    const nodeId = this.options.nodeId;
    if (request.primaryNode === nodeId) {
      // Before anything else: pairing a node with itself would find its own group and volumes.
      throw new ControlError("TM_ERR_INVALID", `--to names node ${nodeId}, the primary itself (or a node with the same --id): a pair needs two different nodes; give --to the secondary's management URL`);
    }
    const info: PairSecondaryInfo = { nodeId, group: request.group, replAddress: this.options.replAddress() };
    const decision = decidePrepare(this.options.metadata().groups.find((g) => g.name === request.group), request, nodeId);
    if (decision.kind === "answer") return info;
    if (decision.kind === "refuse") throw new ControlError(decision.code, decision.text);
    this.checkNamedDomain(request);
    // All groups of a consistency domain use one reflect mode (CONTRACT.md, issue 8).
    const mixed = reflectModeConflict(this.liveSecondaryRecords(), { group: request.group, reflect: request.reflect, primaryNode: request.primaryNode, domain: request.domain });
    if (mixed !== undefined) throw new ControlError("TM_ERR_CONFLICT", mixed);
    const registry = this.options.volumes;
    for (const volume of request.volumes) {
      const live = registry.byName(volume.name);
      if (live === undefined) continue;
      if (live.sizeBytes !== volume.sizeBytes) {
        throw new ControlError("TM_ERR_CONFLICT",
          `volume ${volume.name} on the secondary (node ${nodeId}) is ${formatBytes(live.sizeBytes)} (${live.sizeBytes} bytes) but the primary's ${volume.name} is ${formatBytes(volume.sizeBytes)} (${volume.sizeBytes} bytes); ` +
          `a pair needs equal sizes: pair with a secondary that has no volume ${volume.name} (pair create makes it) or one of ${formatBytes(volume.sizeBytes)}`);
      }
      if (live.owner !== undefined) throw new ControlError("TM_ERR_CONFLICT", `volume ${volume.name} on node ${nodeId} already belongs to group ${live.owner}`);
      // The initial copy replaces every byte: data a user wrote there is lost unless they said so.
      const heldBytes = live.file.written.markedBytes;
      if (heldBytes > 0 && request.force !== true) {
        throw new ControlError("TM_ERR_CONFLICT",
          `volume ${volume.name} on node ${nodeId} already holds data (up to ${formatBytes(heldBytes)} written); the initial copy would overwrite it. ` +
          "To overwrite it, run pair create again with --force; to keep it, use --remote-group with another name or move the volume away");
      }
      if (heldBytes > 0) this.logger.warn({ event: "pair_target_overwrites_data", volume: volume.name, writtenBytes: heldBytes, primary: request.primaryNode }, "pair create --force: the initial copy overwrites data on this volume");
    }
    const members: RegistryVolume[] = [];
    for (const volume of request.volumes) {
      if (registry.byName(volume.name) === undefined) await registry.create(volume.name, volume.sizeBytes);
      const created = registry.byName(volume.name);
      assert(created !== undefined, "secondary volume exists");
      members.push(created);
    }
    const id = this.options.reserveGroupId();
    const secondary: SecondaryRecord = structuredClone(newSecondaryRecord(request)) as SecondaryRecord;
    const record: GroupRecord = {
      id, name: request.group, volumeIds: members.map((v) => v.id), checkpointSequence: 0, nextSequence: 1, journalBytesMax: this.options.journalBytesMax,
      createdAt: new Date(this.options.clock.wallMs()).toISOString(), secondary,
    };
    await makeDirectoryDurable(this.options.fileSystem, this.options.journalDir(record));
    await this.options.updateMetadata((m) => {
      m.nextGroupId = Math.max(m.nextGroupId, id + 1);
      m.groups.push(record);
    });
    await this.recover(record, secondary);
    this.logger.info({ event: "pair_secondary_created", group: request.group, pairId: request.pairId, primary: request.primaryNode }, "pair secondary created");
    return info;
  }

  /**
   * `pair create --domain NAME`: groups of several primaries share a domain only when their
   * write times are comparable (core/named-domain.ts); refused before anything is made.
   * Errors: ControlError TM_ERR_DOMAIN_INCOMPARABLE.
   */
  private checkNamedDomain(request: PairSecondaryRequest): void {
    const domain = request.domain;
    if (domain === undefined || request.reflect !== "time") return;
    const members: NamedDomainMember[] = [];
    for (const g of this.options.metadata().groups) {
      const s = g.secondary;
      if (s?.domain === undefined || s.state === "takeover" || s.reflect !== "time") continue;
      members.push({ group: g.name, primaryNode: s.primaryNode, domain: s.domain });
    }
    const refusal = namedDomainRefusal(request.primaryNode, request.group, domain, members);
    if (refusal === undefined) return;
    this.logger.warn({ event: "pair_domain_refused", group: request.group, domain: domain.name, primary: request.primaryNode, writeTime: domain.writeTimePolicy, maxClockSkewMs: domain.maxClockSkewMs, code: "TM_ERR_DOMAIN_INCOMPARABLE" }, refusal);
    throw new ControlError("TM_ERR_DOMAIN_INCOMPARABLE", refusal);
  }

  // ---- the replication listener (SecondaryHost) -----------------------------------------

  refuseOpen(name: string, pairId: string): { readonly code: ReplErrorCode; readonly text: string; readonly cutSequence?: number } {
    const record = this.options.metadata().groups.find((g) => g.name === name);
    if (record?.secondary !== undefined) {
      const refusal = openRefusal(this.stateOf(record, record.secondary), pairId, this.options.nodeId);
      if (refusal !== undefined) return refusal;
    }
    return { code: "UNKNOWN_GROUP", text: `group ${name} is not a pair secondary on node ${this.options.nodeId}` };
  }

  async deliver(group: SecondaryGroup, event: SecondaryGroupEvent, reply: PeerReply): Promise<void> {
    const context: RunContext = { reply };
    try {
      await this.run(group, event, context);
    } catch (error) {
      // An effect of a lifecycle step threw (not a disk refusal the machine hears of): the step
      // is over, and the machine answers the peer; otherwise the stream's own handling fails it.
      if (group.lifecycle.step === undefined) throw error;
      await this.run(group, { type: "stepAbandoned", error: (error as Error).message }, context);
    }
  }

  lifecycle(group: SecondaryGroup, event: SecondaryGroupEvent, reply: PeerReply): Promise<void> {
    const running = group.lifecycleChain.then(() => (reply.gone() ? undefined : this.deliver(group, event, reply)));
    group.lifecycleChain = running.catch(() => undefined);
    return running;
  }

  kickReflector(): void {
    this.reflector.kick();
  }

  frontierHolder(group: SecondaryGroup): string | undefined {
    return this.reflector.frontierHolder(group)?.name;
  }

  /** The frontier holder's primary node, when another primary than `group`'s (a named domain). */
  private frontierHolderPrimary(group: SecondaryGroup): string | undefined {
    const holder = this.reflector.frontierHolder(group)?.record.primaryNode;
    return holder === group.record.primaryNode ? undefined : holder;
  }

  // ---- running the machine ------------------------------------------------------------------

  /**
   * Steps `event` and executes the effects in order; an effect's completion (a save done, a
   * copy synced, a batch received ...) is the next event. Effects with a completion end their
   * list (the machine's contract, checked here).
   */
  private async run(group: SecondaryGroup, event: SecondaryGroupEvent, context: RunContext): Promise<void> {
    let next: SecondaryGroupEvent | undefined = event;
    while (next !== undefined) {
      const effects = group.step(next);
      next = undefined;
      for (const effect of effects) {
        assert(next === undefined, () => `an effect with a completion ends its list (group ${group.name}, then ${effect.type})`);
        const completion = this.execute(group, effect, context);
        next = completion instanceof Promise ? await completion : completion;
      }
    }
  }

  /** Executes one effect; returns its completion event (a promise of it when it does I/O). */
  private execute(group: SecondaryGroup, effect: SecondaryGroupEffect, context: RunContext): SecondaryGroupEvent | undefined | Promise<SecondaryGroupEvent | undefined> {
    switch (effect.type) {
      case "persist":
        return this.persist(group, effect.change, effect.critical).then(() => ({ type: "persisted" }), (error: unknown) => {
          context.error = error;
          return { type: "persistFailed", error: (error as Error).message };
        });
      case "emptyVolumes":
        return emptySecondaryVolumes(group, this.logger).then(() => undefined);
      case "growVolumes":
        return (async () => {
          for (const volume of effect.volumes) await group.growVolume(volume.volumeId, volume.sizeBytes);
          return undefined;
        })();
      case "copyRunsAgain":
        // Matters only after the copy's own fdatasync failed (COPY_DONE): every extent comes again.
        for (const volume of group.volumes) volume.file.syncFailureRepaired();
        return undefined;
      case "openJournal":
        return this.openJournal(group, effect.generation, effect.nextSequence, effect.reserve).then(() => undefined);
      case "useJournal": {
        const staged = this.stagedOf(group);
        const journal = staged.get(effect.generation);
        assert(journal !== undefined, () => `journal generation ${effect.generation} of ${group.name} was opened`);
        staged.delete(effect.generation);
        staged.set(effect.replacing, group.journal);
        group.startCopyOver(journal);
        return undefined;
      }
      case "removeJournal":
        return this.removeJournal(group, effect.generation, true).then(() => undefined);
      case "dropJournal":
        return this.removeJournal(group, effect.generation, false).then(() => undefined);
      case "syncCopiedVolumes":
        return this.syncCopiedVolumes(group).then(() => ({ type: "copySynced" }), (error: unknown) => {
          context.error = error;
          return { type: "copySyncFailed", error: (error as Error).message };
        });
      case "joinDomain": {
        // The membership is saved with the join point the domain's machine recorded (issue 8, kind 3).
        const save = (joinPoint: JoinPoint | null): Promise<void> => this.persist(group, { ...effect.change, secondary: { ...effect.change.secondary, domainJoin: joinPoint } }, false);
        const afterSequence = Math.max(effect.change.secondary.consistentFromSequence ?? 0, group.reflectedSequence);
        return this.reflector.join(group, save, afterSequence).then((refusal) => (refusal === undefined ? { type: "persisted" } : { type: "joinRefused", reason: refusal }));
      }
      case "leaveDomain":
        this.reflector.leave(group, effect.why);
        return undefined;
      case "domainMemberStopped":
      case "domainMemberResumed":
        this.reflector.memberStopChanged(group);
        return undefined;
      case "writeCopyChunk": {
        const write = context.reply?.writeCopy;
        assert(write !== undefined, "a copy chunk is written for the stream that sent it");
        return write(effect).then(() => undefined);
      }
      case "receiveBatch": {
        const receive = context.reply?.receive;
        assert(receive !== undefined, "a batch is received for the stream that sent it");
        return receive();
      }
      case "syncVolumes":
        return this.syncReflectedVolumes(group).then(() => undefined);
      case "persistCheckpoint":
        return this.options.updateMetadata((m) => {
          const record = m.groups.find((g) => g.id === group.groupId);
          if (record?.secondary === undefined) return; // taken over meanwhile
          Object.assign(record.secondary, structuredClone(effect.change.secondary));
        }).then(() => ({ type: "checkpointSaved" }));
      case "trimJournal":
        return group.trimThrough(effect.throughSequence).then(() => undefined);
      case "checkpointAnswer":
        context.checkpointDone = effect.done;
        return undefined;
      case "kickReflection":
        this.reflector.kick();
        return undefined;
      case "roomAgain":
        this.streams?.roomAgain(group);
        return undefined;
      case "schedulePulls":
        this.streams?.schedulePulls(group);
        return undefined;
      case "closeStreams":
        this.streams?.closeStreams(group, effect.why, effect.text);
        return undefined;
      case "answerPeer":
        assert(context.reply !== undefined, "a peer is answered on its stream");
        context.reply.answer(effect.message);
        return undefined;
      case "refusePeer":
        assert(context.reply !== undefined, "a peer is refused on its stream");
        context.reply.refuse(effect);
        return undefined;
      case "failStream":
        assert(context.reply !== undefined, "a stream is failed by its own message");
        if (effect.code === "INTERNAL") group.lastError = effect.text;
        context.reply.fail(effect.code, effect.text);
        return undefined;
      case "retireSecondary":
        return this.retire(group).then(() => undefined);
      case "becomeWritable": {
        const staged = this.stagedOf(group);
        const journal = staged.get(effect.generation);
        assert(journal !== undefined, () => `journal generation ${effect.generation} of ${group.name} was opened`);
        staged.delete(effect.generation);
        this.staged.delete(group);
        this.groups.delete(group.name);
        this.options.becomeWritable(this.groupRecord(group), journal);
        return undefined;
      }
      case "answerOperator":
        context.result = effect.result;
        return undefined;
      case "refuseOperator":
        context.refusal = { code: effect.code, text: effect.text };
        return undefined;
      case "log":
        writeLogEffect(this.logger, effect);
        return undefined;
    }
  }

  private stagedOf(group: SecondaryGroup): Map<number, GroupJournal> {
    let staged = this.staged.get(group);
    if (staged === undefined) {
      staged = new Map();
      this.staged.set(group, staged);
    }
    return staged;
  }

  private groupRecord(group: SecondaryGroup): GroupRecord {
    const record = this.options.metadata().groups.find((g) => g.id === group.groupId);
    assert(record !== undefined, () => `group ${group.name} is in the metadata`);
    return record;
  }

  /** Saves a lifecycle change to node.json (the group's `secondary` record and its group fields). */
  private persist(group: SecondaryGroup, change: SecondaryRecordChange, critical: boolean): Promise<void> {
    return this.options.updateMetadata((m) => {
      const record = m.groups.find((g) => g.id === group.groupId);
      assert(record?.secondary !== undefined, "secondary group is in the metadata");
      Object.assign(record.secondary, structuredClone(change.secondary));
      const fields = change.group;
      if (fields?.journalGeneration !== undefined) record.journalGeneration = fields.journalGeneration;
      if (fields?.checkpointSequence !== undefined) record.checkpointSequence = fields.checkpointSequence;
      if (fields?.nextSequence !== undefined) record.nextSequence = fields.nextSequence;
    }, critical);
  }

  /** A fresh journal in the directory of `generation`, beside the live one. */
  private async openJournal(group: SecondaryGroup, generation: number, nextSequence: number, reserve: boolean): Promise<void> {
    const record = this.groupRecord(group);
    const dir = this.options.journalDir({ id: group.groupId, journalGeneration: generation });
    const open = async (): Promise<GroupJournal> => {
      await makeDirectoryDurable(this.options.fileSystem, dir);
      const { journal } = await GroupJournal.open(dir, { fileSystem: this.options.fileSystem, bytesMax: record.journalBytesMax, nextSequence });
      return journal;
    };
    const journal = reserve ? await this.options.withSpaceReserve("take over", open) : await open();
    this.stagedOf(group).set(generation, journal);
  }

  /** Closes the journal of `generation` if a step left it open aside, and (`removeDirectory`) removes its directory. */
  private async removeJournal(group: SecondaryGroup, generation: number, removeDirectory: boolean): Promise<void> {
    const staged = this.stagedOf(group);
    const journal = staged.get(generation);
    if (journal !== undefined) {
      staged.delete(generation);
      await journal.close().catch((error: unknown) => this.logger.warn({ event: "secondary_journal_close_failed", group: group.name, err: error }, "an old journal did not close cleanly; it is removed"));
    }
    if (removeDirectory) await this.options.fileSystem.removeTree(this.options.journalDir({ id: group.groupId, journalGeneration: generation }));
  }

  /** The copy's writes have no journal: volumes fdatasync'd and their written maps saved. */
  private async syncCopiedVolumes(group: SecondaryGroup): Promise<void> {
    for (const volume of group.volumes) await volume.file.datasync();
    await saveWrittenMaps(group.volumes);
  }

  /** Before a checkpoint is saved: what reflection applied is durable (docs/volumes.md). */
  private async syncReflectedVolumes(group: SecondaryGroup): Promise<void> {
    group.volumesWrittenSinceCheckpoint = false;
    try {
      for (const volume of group.volumes) await volume.file.datasync();
      await saveWrittenMaps(group.volumes);
    } catch (error) {
      group.volumesWrittenSinceCheckpoint = true;
      throw error;
    }
  }

  /** A takeover's end of the secondary: its stop and resume end, volumes synced, maps saved, journal closed (removed after the save). */
  private async retire(group: SecondaryGroup): Promise<void> {
    await group.close();
    for (const volume of group.volumes) await volume.file.datasync();
    // A takeover must work on a full disk (the secondary's disk filling is a reason to take over):
    // its writes may use the space reserve.
    await this.options.withSpaceReserve("take over", () => saveWrittenMaps(group.volumes));
    // A stopped group's journal may be abandoned already; it is removed after the save either way.
    await group.journal.close().catch((error: unknown) => this.logger.warn({ event: "takeover_journal_close_failed", group: group.name, err: error }, "the old journal did not close cleanly; it is removed"));
  }

  // ---- the reflector's checkpoints -------------------------------------------------------------

  /**
   * Reflector checkpoint of one group: volumes durable through the reflected sequence, then
   * persisted, then the journal trimmed; the lifecycle decides whether now (idle groups at most
   * every secondaryIdleCheckpointIntervalMs unless forced). False: not done now, ask again.
   * Errors: the disk's (the reflector stops the group) and the save's.
   */
  private async checkpoint(group: SecondaryGroup, force: boolean): Promise<boolean> {
    if (this.groups.get(group.name) !== group) return true; // taken over meanwhile
    const context: RunContext = {};
    try {
      await this.run(group, {
        type: "checkpointDue", nowMs: this.options.clock.monotonicMs(), force, reflectedSequence: group.reflectedSequence, reflectedPosition: group.reflectedPosition, reflectedWallTimeUs: group.reflectedWallTimeUs,
        volumesWritten: group.volumesWrittenSinceCheckpoint, checkpointable: group.checkpointable,
      }, context);
    } catch (error) {
      if (group.lifecycle.checkpoint !== undefined) group.step({ type: "checkpointAbandoned" });
      throw error;
    }
    assert(context.checkpointDone !== undefined, "a checkpoint request is answered");
    return context.checkpointDone;
  }

  // ---- the operator: pair takeover -------------------------------------------------------------

  /**
   * Takes the named groups over at one cut, all or nothing (core/takeover.ts decides; the
   * rules: docs/replication.md, "Takeover"): every check first (a refusal changes nothing),
   * then the groups are held, reflection drains, the cut is computed and saved as the
   * intent in node.json before anything is converted; then each group is applied through its
   * cut and converted into a writable group. A crash after the intent's save is finished at
   * the next start (finishTakeover). Errors: ControlError with the refusal's code.
   */
  async takeover(groupNames: readonly string[], options: TakeoverOptions = {}): Promise<readonly TakeoverResult[]> {
    const metadata = this.options.metadata();
    const groups = groupNames.map((name): NamedGroup => {
      const record = metadata.groups.find((g) => g.name === name);
      if (record === undefined) return { kind: "missing", name };
      if (record.secondary === undefined) return { kind: "writable", name };
      if (record.secondary.state === "takeover") {
        return { kind: "takenOver", name, result: { group: name, reflectedSequence: record.secondary.takeover?.keptSequence ?? 0, droppedRecords: record.secondary.takeover?.droppedRecords ?? 0, state: "takeover" } };
      }
      const secondary = this.groups.get(name);
      assert(secondary !== undefined, () => `secondary group ${name} is live`);
      return { kind: "secondary", name, lifecycle: secondary.lifecycle, arrivedSequence: secondary.arrivedSequence };
    });
    const run = await this.runTakeover({ type: "requested", groups, force: options.force === true, atIso: new Date(this.options.clock.wallMs()).toISOString() });
    if (run.refusal !== undefined) {
      // Its fenced groups hold their frontier again: an unfence on the primary (which may not
      // open the group again) sends more, and nothing may be reflected past what it sends.
      for (const name of groupNames) {
        const group = this.groups.get(name);
        if (group !== undefined) group.primaryFencedThrough = undefined;
      }
    }
    this.reflector.kick();
    if (run.refusal !== undefined) throw new ControlError(run.refusal.code, run.refusal.text);
    assert(run.results !== undefined, "a takeover ends with its results or its refusal");
    const fences = run.fences;
    return run.results.map((r) => {
      const primary = fences?.get(r.group);
      return primary === undefined ? r : { ...r, primary };
    });
  }

  /**
   * At start, after the groups are recovered and before reflection replays: node.json holds
   * an unfinished takeover (a crash after its intent was saved), and it is finished at exactly
   * the saved cuts. Throws when it cannot be finished now (the disk's error): the node cannot
   * decide anything else for those groups, and a start after the cause is fixed finishes it.
   */
  async finishTakeover(): Promise<void> {
    const metadata = this.options.metadata();
    const intent = metadata.takeoverIntent;
    if (intent === undefined || faultInjected("takeover-not-durable")) return;
    // Converted: node.json says it is taken over, or it is no secondary any more (deleted since, a clear of the intent having failed).
    const convertedNames = intent.groups.filter((g) => {
      const secondary = metadata.groups.find((r) => r.id === g.groupId)?.secondary;
      return secondary === undefined || secondary.state === "takeover";
    }).map((g) => g.name);
    const run = await this.runTakeover({ type: "restarted", intent, convertedNames });
    if (run.refusal !== undefined) throw new Error(`the unfinished takeover of ${intent.groups.map((g) => g.name).join(",")} could not be finished: ${run.refusal.text}`);
  }

  /** Whether node.json holds an unfinished takeover of this group: it is recovered outside its domain. */
  heldForTakeover(record: GroupRecord): boolean {
    return this.options.metadata().takeoverIntent?.groups.some((g) => g.groupId === record.id) === true && !faultInjected("takeover-not-durable");
  }

  /** Steps the takeover machine from `first` and executes its effects in order, feeding back completions. */
  private async runTakeover(first: TakeoverEvent): Promise<TakeoverRun> {
    const run: TakeoverRun = {};
    let next: TakeoverEvent | undefined = first;
    while (next !== undefined) {
      const { state, effects } = stepTakeover(this.takeoverState, next, this.options.nodeId);
      this.takeoverState = state;
      next = undefined;
      for (const effect of effects) {
        assert(next === undefined, () => `a takeover effect with a completion ends its list (then ${effect.type})`);
        next = await this.executeTakeover(effect, run);
      }
    }
    return run;
  }

  private liveGroup(name: string): SecondaryGroup {
    const group = this.groups.get(name);
    assert(group !== undefined, () => `group ${name} of the takeover is a live secondary`);
    return group;
  }

  /** Runs one of a held group's takeover steps; the machine checked it can take it (a refusal here is a bug). */
  private async stepHeld(name: string, event: SecondaryGroupEvent): Promise<void> {
    const context: RunContext = {};
    await this.run(this.liveGroup(name), event, context);
    assert(context.refusal === undefined, () => `group ${name} takes the takeover's ${event.type}: ${context.refusal?.text ?? ""}`);
  }

  private async executeTakeover(effect: TakeoverEffect, run: TakeoverRun): Promise<TakeoverEvent | undefined> {
    switch (effect.type) {
      case "fence":
        // The primary is fenced first (or, with --force, declared lost): docs/replication.md, "Fencing".
        try {
          const fences = await fencePrimary(effect.names.map((name) => this.liveGroup(name)), {
            streams: this.streams, clock: this.options.clock, logger: this.logger, nodeId: this.options.nodeId, force: effect.force, raiseGeneration: (g) => this.raiseGeneration(g),
          });
          run.fences = new Map([...fences].map(([g, f]) => [g.name, f]));
          return { type: "fenced", keepAtLeast: [...fences].flatMap(([g, f]) => (f.fenced && !f.forced && f.lastWriteSequence !== null ? [{ name: g.name, sequence: f.lastWriteSequence }] : [])) };
        } catch (error) {
          if (!(error instanceof ControlError)) throw error;
          return { type: "fenceRefused", code: error.code, text: error.message };
        }
      case "hold":
        await this.stepHeld(effect.name, { type: "takeover" });
        return undefined;
      case "release":
        await this.stepHeld(effect.name, { type: "takeoverAbort" });
        return undefined;
      case "drain":
        try {
          return await this.drainForTakeover(effect.names.map((name) => this.liveGroup(name)));
        } catch (error) {
          if (!isStorageError(error) && !(error instanceof JournalClosedError)) throw error;
          return { type: "drainFailed", error: (error as Error).message };
        }
      case "leaveDomain":
        await this.stepHeld(effect.name, { type: "takeoverDrained", reflectedSequence: effect.keepThroughSequence });
        return undefined;
      case "persistIntent":
        return this.options.updateMetadata((m) => {
          m.takeoverIntent = structuredClone(effect.intent) as TakeoverIntentRecord;
        }, true).then((): TakeoverEvent => ({ type: "intentSaved" }), (error: unknown): TakeoverEvent => ({ type: "intentSaveFailed", error: (error as Error).message }));
      case "adopt":
        await this.stepHeld(effect.name, { type: "takeoverResumed" });
        return undefined;
      case "tellPrimary":
        await this.stepHeld(effect.name, { type: "takeoverDecided" });
        return undefined;
      case "reflectToCut":
        try {
          await this.reflectToCut(effect.groups);
          return { type: "reflectedToCut" };
        } catch (error) {
          // A disk error, or a group stopped by one meanwhile (its journal closed until it resumes).
          if (!isStorageError(error) && !(error instanceof JournalClosedError)) throw error;
          return { type: "reflectFailed", error: (error as Error).message };
        }
      case "convert": {
        const group = this.liveGroup(effect.group.name);
        try {
          const result = await this.runOperator(group, { type: "takeoverConvert", keptSequence: effect.group.keepThroughSequence, droppedRecords: effect.group.droppedRecords, atIso: effect.atIso });
          assert(result !== undefined, "a conversion ends with its result");
          return { type: "converted", result };
        } catch (error) {
          return { type: "convertFailed", name: effect.group.name, error: (error as Error).message };
        }
      }
      case "clearIntent":
        return this.options.updateMetadata((m) => {
          delete m.takeoverIntent;
        }, true).then((): TakeoverEvent => ({ type: "intentCleared" }), (error: unknown): TakeoverEvent => ({ type: "intentClearFailed", error: (error as Error).message }));
      case "answer":
        run.results = effect.results;
        return undefined;
      case "refuse":
        run.refusal = { code: effect.code, text: effect.text };
        return undefined;
      case "log":
        writeLogEffect(this.logger, effect);
        return undefined;
      default:
        return unreachable(effect, "takeover effect");
    }
  }

  /**
   * The held groups once nothing more arrives: appends in flight done, reflection drained,
   * and what the cut needs read from each journal (time mode: the records after the reflected
   * one through the first past the frontier of the named groups of its domain).
   */
  private async drainForTakeover(groups: readonly SecondaryGroup[]): Promise<TakeoverEvent> {
    const appendsDeadlineMs = this.options.clock.monotonicMs() + takeoverAppendsWaitMsMax;
    for (const group of groups) {
      while (group.pendingAppends > 0) {
        if (this.options.clock.monotonicMs() >= appendsDeadlineMs) {
          return { type: "drainFailed", error: `group ${group.name} still has ${group.pendingAppends} records being written to its journal after ${takeoverAppendsWaitMsMax / 1000} s (the disk does not answer); take over once it does, or restart the node` };
        }
        await this.options.clock.sleep(2);
      }
    }
    await this.reflector.drain();
    // A group stopped by a full disk or an I/O error is taken over like any other (its cut is
    // applied again from its checkpoint), unless its journal is closed while a resume re-reads it.
    // Positions of a domain over several primaries compare with their node (position.ts); a group whose
    // fenced primary's records all arrived is complete and holds no frontier (docs/replication.md, "Fencing").
    // One snapshot of what arrived: the journal reads below await, and the core's plan must see
    // the very facts the reads were bounded by (seeds 7422, 8904: a group that became complete
    // meanwhile raised the core's frontier past where the reads had stopped, and it asserted).
    const facts = new Map(groups.map((g) => [g.groupId, { reflectedSequence: g.reflectedSequence, arrivedSequence: g.arrivedSequence, arrivedPosition: g.arrivedPosition, complete: g.complete }] as const));
    const factsOf = (group: SecondaryGroup): { reflectedSequence: number; arrivedSequence: number; arrivedPosition: Position; complete: boolean } => {
      const fact = facts.get(group.groupId);
      assert(fact !== undefined, () => `group ${group.name} is one of the takeover's`);
      return fact;
    };
    const frontiers = new Map<string, Position | undefined>();
    for (const group of groups) {
      const key = domainKeyOf(group.record);
      if (!frontiers.has(key)) {
        frontiers.set(key, frontier(groups.filter((g) => domainKeyOf(g.record) === key).map((g) => ({ arrivedPosition: atNode(factsOf(g).arrivedPosition, g.record.primaryNode), complete: factsOf(g).complete }))));
      }
    }
    const drained: DrainedGroup[] = [];
    for (const group of groups) {
      const mode = domainModeOf(group.record.reflect);
      const key = domainKeyOf(group.record);
      const entries: SequencedPosition[] = [];
      const bound = frontiers.get(key);
      const { reflectedSequence, arrivedSequence, arrivedPosition, complete } = factsOf(group);
      let next = reflectedSequence + 1;
      while (mode === "time" && next <= arrivedSequence) {
        let records: JournalRecord[];
        try {
          records = await group.journal.readFrom(next, takeoverReadBytes);
        } catch (error) {
          if (!(error instanceof JournalClosedError)) throw error;
          return { type: "drainFailed", error: `group ${group.name} is stopped (${group.stopped?.reason ?? "its journal is closed"}) and its journal is being re-read; take over once it resumed, or restart the node (a start recovers its journal)` };
        }
        assert(records.length > 0, () => `the journal of ${group.name} holds its arrived records`);
        let past = false;
        for (const record of records) {
          if (record.sequence > arrivedSequence) break;
          const position: Position = { writeTimeUs: record.writeTimeUs, acceptNumber: record.acceptNumber };
          entries.push({ sequence: record.sequence, position });
          next = record.sequence + 1;
          if (bound === undefined || comparePositions(atNode(position, group.record.primaryNode), bound) > 0) {
            past = true;
            break;
          }
        }
        if (past) break;
      }
      drained.push({
        groupId: group.groupId, name: group.name, node: group.record.primaryNode, complete, domainKey: key, mode, consistentFromSequence: group.record.consistentFromSequence,
        reflectedSequence, arrivedSequence, arrivedPosition,
        entries, reorderRecords: group.receiver.reorderRecords,
      });
    }
    return { type: "drained", groups: drained };
  }

  /**
   * Applies each group's journal from its saved checkpoint through its cut, in position order
   * across the groups (what was applied since the checkpoint again: idempotent, and a failed
   * fdatasync may have dropped it). The groups are out of their domains: nobody else applies.
   * Errors: the disk's (the takeover is then finished by the next start).
   */
  private async reflectToCut(cut: readonly Pick<TakeoverIntentGroup, "name" | "keepThroughSequence">[]): Promise<void> {
    await this.reflector.idle();
    const members = cut.map((c) => ({ group: this.liveGroup(c.name), keep: c.keepThroughSequence }));
    for (const m of members) {
      await m.group.rewindToCheckpoint();
      assert(m.group.reflectedSequence <= m.keep, () => `group ${m.group.name}'s checkpoint (${m.group.reflectedSequence}) is not past its cut (${m.keep})`);
      assert(m.group.arrivedSequence >= m.keep, () => `the journal of ${m.group.name} holds its records through its cut (${m.group.arrivedSequence} < ${m.keep})`);
    }
    let applied = 0;
    for (;;) {
      const unread = members.filter((m) => m.group.reflectedSequence < m.keep && m.group.needsFill);
      if (unread.length > 0) await Promise.all(unread.map((m) => m.group.fill()));
      let best: { readonly group: SecondaryGroup; readonly record: JournalRecord } | undefined;
      for (const m of members) {
        if (m.group.reflectedSequence >= m.keep) continue;
        const record = m.group.peek();
        assert(record !== undefined, () => `group ${m.group.name} reads its next record before its cut`);
        if (best === undefined || comparePositions(atNode(record, m.group.record.primaryNode), atNode(best.record, best.group.record.primaryNode)) < 0) {
          best = { group: m.group, record };
        }
      }
      if (best === undefined) break;
      await best.group.applyNext(best.record);
      applied += 1;
    }
    this.logger.info({ event: "takeover_reflected_to_cut", applied, groups: members.map((m) => ({ group: m.group.name, keepThroughSequence: m.keep })) }, "takeover: every group applied through its cut");
  }

  /** A forced takeover: the pair's generation one higher, saved (the group's `secondary` record). */
  private async raiseGeneration(group: SecondaryGroup): Promise<number> {
    const saved = this.options.metadata().groups.find((g) => g.id === group.groupId)?.secondary?.generation;
    const generation = (saved ?? group.record.generation ?? 1) + 1;
    await this.options.withSpaceReserve("take over", () => this.options.updateMetadata((m) => {
      const record = m.groups.find((g) => g.id === group.groupId);
      assert(record?.secondary !== undefined, "secondary group is in the metadata");
      record.secondary.generation = generation;
    }, true));
    return generation;
  }

  /** Runs an operator's event; a refusal throws (a failed save or disk write with its own error). */
  private async runOperator(group: SecondaryGroup, event: SecondaryGroupEvent): Promise<TakeoverOutcome | undefined> {
    const context: RunContext = {};
    try {
      await this.run(group, event, context);
    } catch (error) {
      if (group.lifecycle.takeover?.phase !== "converting") throw error;
      context.error = error;
      await this.run(group, { type: "stepAbandoned", error: (error as Error).message }, context);
    }
    const refusal = context.refusal;
    if (refusal !== undefined) {
      if (context.error instanceof Error) throw context.error;
      throw new ControlError(refusal.code, refusal.text);
    }
    return context.result;
  }

  // ---- pair set: the primary checks the secondary's new address ---------------------------

  /**
   * `pair set` (the primary asks the secondary's new management address): this node's id and
   * replication address when it holds the secondary side of `pairId` from `primaryNode` under
   * `group` (taken over or not: the primary learns that at its handshake). ControlError
   * TM_ERR_CONFLICT naming what it holds instead.
   */
  check(request: PairSecondaryCheckRequest): PairSecondaryInfo {
    const nodeId = this.options.nodeId;
    const secondary = this.options.metadata().groups.find((g) => g.name === request.group)?.secondary;
    if (secondary === undefined) throw new ControlError("TM_ERR_CONFLICT", `node ${nodeId} holds no pair secondary named ${request.group}`);
    if (secondary.pairId !== request.pairId || secondary.primaryNode !== request.primaryNode) {
      throw new ControlError("TM_ERR_CONFLICT", `group ${request.group} on node ${nodeId} is the secondary of pair ${secondary.pairId} from node ${secondary.primaryNode}, not of pair ${request.pairId}`);
    }
    return { nodeId, group: request.group, replAddress: this.options.replAddress() };
  }

  // ---- the pair's end: pair delete (issue 9; docs/replication.md, "Ending a pair") ------------

  /**
   * Ends the pair of secondary group `name` on this node and keeps its image: the primary is
   * told to wait (its streams closed, GROUP_BUSY), every record that arrived (the contiguous
   * prefix, durable here) is reflected, and the group becomes an ordinary group over a fresh
   * journal, read-only unless `promote` (node.json's `readOnly`). Durable in two saves: the
   * decision (`secondary.ending`, with the last sequence kept) before the group leaves its
   * consistency domain, and the conversion; a start between them finishes it
   * (finishPairEnds). A group of the pair's domain is no longer held by it.
   * `pairId`: only that pair (a primary's call): another pair, or none, answers deleted false.
   * `force`: a group taken over earlier forgets its takeover too (its old primary is then no
   * longer refused and fenced when it comes back, only its pair fails).
   * Errors: ControlError TM_ERR_STATE (still in its initial copy, not consistent yet, taken over
   * without `force`, being taken over), the disk's and the saves' (before the first save nothing
   * changed; after it a restart finishes).
   */
  async endPair(name: string, options: { readonly pairId?: string | undefined; readonly primaryNode?: string | undefined; readonly promote: boolean; readonly force: boolean }): Promise<PairEndInfo> {
    const nodeId = this.options.nodeId;
    const none: PairEndInfo = { group: name, deleted: false, role: null, readOnly: false, keptSequence: null };
    const record = this.options.metadata().groups.find((g) => g.name === name);
    const secondary = record?.secondary;
    if (record === undefined || secondary === undefined) return none;
    if (options.pairId !== undefined && (secondary.pairId !== options.pairId || (options.primaryNode !== undefined && secondary.primaryNode !== options.primaryNode))) return none;
    if (secondary.state === "takeover") {
      // The old primary's own call (its pair delete): its side is gone, so nothing can come back
      // with this pair; the takeover is forgotten without asking. The operator here needs --force:
      // this node cannot know whether the old primary still holds its side.
      const fromOldPrimary = options.pairId !== undefined;
      if (!options.force && !fromOldPrimary) {
        const at = secondary.takeover === null ? "" : ` at ${secondary.takeover.at}`;
        throw new ControlError("TM_ERR_STATE", `group ${name} was taken over on node ${nodeId}${at} (pair ${secondary.pairId} from node ${secondary.primaryNode}): it is an ordinary writable group here already, and deleting the pair only forgets the takeover. ` +
          `While this node remembers it, the old primary (node ${secondary.primaryNode}) is refused if it comes back with its pair and fences itself; once forgotten, it only fails. ` +
          `Delete the pair on node ${secondary.primaryNode} first (tidemark pair delete ${secondary.primaryGroup} --force ${primaryNodeOption(secondary)}): it tells this node, which then forgets the takeover by itself; or forget it here anyway: tidemark pair delete ${name} --force`);
      }
      await this.options.updateMetadata((m) => {
        const saved = m.groups.find((g) => g.id === record.id);
        if (saved !== undefined) delete saved.secondary;
      });
      this.logger.warn({ event: "pair_deleted", group: name, role: "secondary", pairId: secondary.pairId, takenOver: true, byOldPrimary: fromOldPrimary },
        fromOldPrimary ? "pair deleted by its old primary: the taken-over group forgets its pair" : "pair deleted: the taken-over group forgets its pair; a returning old primary now only fails");
      return { group: name, deleted: true, role: "secondary", readOnly: false, keptSequence: secondary.takeover?.keptSequence ?? null, takenOver: true };
    }
    const group = this.groups.get(name);
    assert(group !== undefined, () => `secondary group ${name} is live`);
    if (secondary.ending !== undefined || group.lifecycle.takeover !== undefined || this.takeoverState.phase !== "idle") {
      throw new ControlError("TM_ERR_STATE", `group ${name} is being taken over or its pair deleted right now; try again in a moment (tidemark pair status ${name})`);
    }
    if (secondary.state !== "replicating" || group.lifecycle.step !== undefined) {
      if (!options.force) {
        // The primary's own call (its --force): this side holds no consistent image, so it is not
        // ended with the primary's; only the operator here ends it, knowing what it keeps.
        throw new ControlError("TM_ERR_STATE", `group ${name} on node ${nodeId} is still in its initial copy (${secondary.state}): its volumes hold no consistent image, so its side is not ended with the primary's`);
      }
      return this.abandonCopy(group, options.promote);
    }
    // Held: the primary's streams close and it is told to wait (GROUP_BUSY), as for a takeover.
    const held: RunContext = {};
    await this.run(group, { type: "takeover", for: "pairDelete" }, held);
    if (held.refusal !== undefined) throw new ControlError(held.refusal.code, held.refusal.text);
    let keep: number;
    try {
      const deadlineMs = this.options.clock.monotonicMs() + pairEndWritesWaitMsMax;
      while (group.pendingAppends > 0) {
        if (this.options.clock.monotonicMs() >= deadlineMs) {
          throw new ControlError("TM_ERR_STATE", `group ${name} still has ${group.pendingAppends} records being written to its journal after ${pairEndWritesWaitMsMax / 1000} s (the disk does not answer); nothing was deleted: try again once it does, or restart the node`);
        }
        await this.options.clock.sleep(2);
      }
      keep = group.arrivedSequence;
      if (keep < secondary.consistentFromSequence) {
        throw new ControlError("TM_ERR_STATE", `group ${name} holds ${keep} of the ${secondary.consistentFromSequence} records it needs after its initial copy: its image is not consistent yet; try again once the primary sent them (tidemark pair status ${name})`);
      }
      const ending = { keepThroughSequence: keep, promote: options.promote, at: new Date(this.options.clock.wallMs()).toISOString() };
      await this.options.updateMetadata((m) => {
        const saved = m.groups.find((g) => g.id === record.id);
        assert(saved?.secondary !== undefined, "secondary group is in the metadata");
        saved.secondary.ending = ending;
      }, true);
    } catch (error) {
      await this.run(group, { type: "takeoverAbort" }, {});
      throw error;
    }
    // Decided (saved): out of its domain; the others are no longer held by it.
    await this.run(group, { type: "takeoverDrained", reflectedSequence: keep }, {});
    return this.finishEnd(group, keep, options.promote);
  }

  /**
   * `pair delete --force` on the secondary during its initial copy (or before it began): the
   * group stops receiving (the primary is told to wait), the copy's chunks and appends in flight
   * finish (at most pairEndWritesWaitMsMax), the volumes are fdatasync'd and their written maps
   * saved, and one save makes it an ordinary group over a fresh journal, marked `incompleteCopy`
   * and read-only unless `promote`: its image is partly old, partly new, consistent with no point
   * in time. Before that save nothing changed (the group goes on copying); a crash after it
   * leaves at most the old journal's directory behind. Errors: ControlError TM_ERR_STATE (a step
   * of the copy runs, writes that do not finish), the disk's and the save's.
   */
  private async abandonCopy(group: SecondaryGroup, promote: boolean): Promise<PairEndInfo> {
    const name = group.name;
    const held: RunContext = {};
    await this.run(group, { type: "abandonCopy" }, held);
    if (held.refusal !== undefined) throw new ControlError(held.refusal.code, held.refusal.text);
    const record = this.groupRecord(group);
    const secondary = record.secondary;
    assert(secondary !== undefined, "a secondary group has its record");
    const fromGeneration = record.journalGeneration ?? 0;
    const generation = fromGeneration + 1;
    const dir = this.options.journalDir({ id: group.groupId, journalGeneration: generation });
    let journal: GroupJournal | undefined;
    const at = new Date(this.options.clock.wallMs()).toISOString();
    try {
      const deadlineMs = this.options.clock.monotonicMs() + pairEndWritesWaitMsMax;
      while (group.copyWritesInFlight > 0 || group.pendingAppends > 0) {
        if (this.options.clock.monotonicMs() >= deadlineMs) {
          throw new ControlError("TM_ERR_STATE", `group ${name} still has ${group.copyWritesInFlight} copy chunks and ${group.pendingAppends} records being written after ${pairEndWritesWaitMsMax / 1000} s (the disk does not answer); nothing was deleted: try again once it does, or restart the node`);
        }
        await this.options.clock.sleep(2);
      }
      // What the copy wrote is durable and its written maps saved before the group counts as
      // ordinary: a later pair from this node copies only the extents they mark.
      for (const volume of group.volumes) await volume.file.datasync();
      await this.options.withSpaceReserve("delete the pair", () => saveWrittenMaps(group.volumes));
      journal = await this.openEndedJournal(dir, record);
      const readOnly = promote ? undefined : {
        reason: `it holds an incomplete initial copy from node ${secondary.primaryNode} (its pair was deleted during the copy): consistent with no point in time; make it writable with: tidemark pair delete ${name} --promote`,
        since: at,
      };
      await this.saveEnded(group, generation, readOnly, { primaryNode: secondary.primaryNode, pairId: secondary.pairId, at });
    } catch (error) {
      if (journal !== undefined) await journal.close().catch(() => undefined);
      await this.options.fileSystem.removeTree(dir).catch(() => undefined);
      await this.run(group, { type: "takeoverAbort" }, {});
      throw error;
    }
    // Saved: an ordinary group now. The old journal (records that arrived during the copy) goes.
    await group.close();
    await group.journal.close().catch((error: unknown) => this.logger.warn({ event: "secondary_journal_close_failed", group: name, err: error }, "the ended copy's journal did not close cleanly; it is removed"));
    await this.becomeOrdinary(group, fromGeneration, journal);
    this.logger.warn({ event: "pair_deleted", group: name, role: "secondary", pairId: secondary.pairId, incompleteCopy: true, copiedBytes: group.copyBytes, promoted: promote },
      `pair deleted during its initial copy: the volumes keep an incomplete copy, consistent with no point in time${promote ? "" : " (read-only)"}`);
    return { group: name, deleted: true, role: "secondary", readOnly: !promote, keptSequence: null, incompleteCopy: true, promoted: promote };
  }

  /** The fresh journal an ended pair's group writes to as an ordinary group (generation `dir`), made within the space reserve. */
  private async openEndedJournal(dir: string, record: GroupRecord): Promise<GroupJournal> {
    return this.options.withSpaceReserve("delete the pair", async () => {
      await makeDirectoryDurable(this.options.fileSystem, dir);
      return (await GroupJournal.open(dir, { fileSystem: this.options.fileSystem, bytesMax: record.journalBytesMax, nextSequence: 1 })).journal;
    });
  }

  /** Saves the group as an ordinary one over journal `generation` (read-only unless `readOnly` is undefined); the save's error is thrown. */
  private async saveEnded(group: SecondaryGroup, generation: number, readOnly: GroupRecord["readOnly"], incompleteCopy: GroupRecord["incompleteCopy"]): Promise<void> {
    await this.options.updateMetadata((m) => {
      const saved = m.groups.find((g) => g.id === group.groupId);
      assert(saved !== undefined, "secondary group is in the metadata");
      delete saved.secondary;
      saved.journalGeneration = generation;
      saved.checkpointSequence = 0;
      saved.nextSequence = 1;
      if (incompleteCopy !== undefined) saved.incompleteCopy = incompleteCopy;
      if (readOnly === undefined) delete saved.readOnly;
      else saved.readOnly = readOnly;
    }, true);
  }

  /** Once saved: the group leaves this role, the ended pair's journal directory goes, and the node writes it as an ordinary group. */
  private async becomeOrdinary(group: SecondaryGroup, fromGeneration: number, journal: GroupJournal): Promise<void> {
    this.groups.delete(group.name);
    this.staged.delete(group);
    await this.options.fileSystem.removeTree(this.options.journalDir({ id: group.groupId, journalGeneration: fromGeneration }))
      .catch((error: unknown) => this.logger.warn({ event: "secondary_journal_left", group: group.name, err: error }, "the ended pair's journal directory could not be removed; nothing reads it again"));
    this.options.becomeWritable(this.groupRecord(group), journal);
    this.reflector.kick();
  }

  /** At start, after finishTakeover: a pair delete a crash interrupted after its decision was saved is finished. */
  async finishPairEnds(): Promise<void> {
    for (const record of this.options.metadata().groups) {
      const ending = record.secondary?.ending;
      const group = this.groups.get(record.name);
      if (ending === undefined || group === undefined) continue;
      this.logger.warn({ event: "pair_delete_resumed", group: record.name, keepThroughSequence: ending.keepThroughSequence }, "a pair delete the node did not finish before it stopped is finished now");
      await this.run(group, { type: "takeoverResumed" }, {});
      await this.finishEnd(group, ending.keepThroughSequence, ending.promote);
    }
  }

  /** The decided end of a group out of its domain: reflected through `keep`, converted, saved; then an ordinary group. */
  private async finishEnd(group: SecondaryGroup, keep: number, promote: boolean): Promise<PairEndInfo> {
    const name = group.name;
    await this.reflectToCut([{ name, keepThroughSequence: keep }]);
    await this.retire(group);
    const record = this.groupRecord(group);
    const fromGeneration = record.journalGeneration ?? 0;
    const generation = fromGeneration + 1;
    const dir = this.options.journalDir({ id: group.groupId, journalGeneration: generation });
    const journal = await this.openEndedJournal(dir, record);
    const primaryNode = group.record.primaryNode;
    const readOnly = promote ? undefined : { reason: `the image its pair from node ${primaryNode} left (pair deleted); make it writable with: tidemark pair delete ${name} --promote`, since: new Date(this.options.clock.wallMs()).toISOString() };
    try {
      await this.saveEnded(group, generation, readOnly, undefined);
    } catch (error) {
      await journal.close().catch(() => undefined);
      throw error;
    }
    await this.becomeOrdinary(group, fromGeneration, journal);
    this.logger.info({ event: "pair_deleted", group: name, role: "secondary", keptSequence: keep, promoted: promote }, promote ? "pair deleted: the image is kept and the group is writable" : "pair deleted: the image is kept, read-only");
    return { group: name, deleted: true, role: "secondary", readOnly: !promote, keptSequence: keep };
  }

  // ---- consistency domains: detach, attach, takeover of part of one (issue 8, kind 3 and 4) -----

  /** The live secondary groups' records (not taken over), for the reflect-mode check of a new pair. */
  private liveSecondaryRecords(): { readonly name: string; readonly reflect: "time" | "seq" | "marker"; readonly primaryNode: string; readonly domain: { readonly name: string } | undefined }[] {
    return this.options.metadata().groups.flatMap((g) => (g.secondary === undefined || g.secondary.state === "takeover" ? [] : [{ name: g.name, reflect: g.secondary.reflect, primaryNode: g.secondary.primaryNode, domain: g.secondary.domain }]));
  }

  /** The live replicating group of that name, for an operator's domain command; refusals as ControlError. */
  private domainCommandGroup(name: string, verb: "detach" | "attach"): SecondaryGroup {
    const nodeId = this.options.nodeId;
    const record = this.options.metadata().groups.find((g) => g.name === name);
    if (record === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `group ${name} does not exist on node ${nodeId}`);
    if (record.secondary === undefined) throw new ControlError("TM_ERR_STATE", `group ${name} is not the secondary of a pair on node ${nodeId}; run pair ${verb} against the secondary, where its consistency domain is`);
    const group = this.groups.get(name);
    if (record.secondary.state === "takeover" || group === undefined) throw new ControlError("TM_ERR_STATE", `group ${name} was taken over on node ${nodeId}; it is in no consistency domain`);
    if (group.lifecycle.takeover !== undefined) throw new ControlError("TM_ERR_STATE", `group ${name} is being taken over`);
    if (record.secondary.state !== "replicating") throw new ControlError("TM_ERR_STATE", `group ${name} is still in its initial copy (${record.secondary.state}); it joins its consistency domain when the copy is done`);
    return group;
  }

  /** Saves the group's domain membership fields (`detached`, `domainJoin`) to node.json. */
  private saveMembership(group: SecondaryGroup, fields: { readonly detached: boolean; readonly domainJoin: JoinPoint | null }): Promise<void> {
    return this.options.updateMetadata((m) => {
      const record = m.groups.find((g) => g.id === group.groupId);
      assert(record?.secondary !== undefined, "secondary group is in the metadata");
      record.secondary.detached = fields.detached;
      record.secondary.domainJoin = fields.domainJoin === null ? null : { ...fields.domainJoin };
    });
  }

  /** Other groups of the domain a detached group left (same primary node and reflect mode, not taken over, not detached). */
  private formerMembers(group: SecondaryGroup): string[] {
    const key = domainKeyOf(group.record);
    return [...this.groups.values()].filter((g) => g !== group && domainKeyOf(g.record) === key && g.record.state === "replicating" && !this.reflector.isDetached(g)).map((g) => g.name);
  }

  /**
   * `pair detach GROUP` (on the secondary): the group leaves its consistency domain; the
   * others are no longer held by it, and it is no longer consistent with them (status and
   * takeover say so). Detaching a detached group changes nothing. Errors: ControlError
   * (TM_ERR_NOT_FOUND, TM_ERR_STATE), the save's.
   */
  async detach(name: string): Promise<PairInfo> {
    const group = this.domainCommandGroup(name, "detach");
    if (!this.reflector.isDetached(group)) {
      const others = this.reflector.otherMembers(group);
      await this.reflector.detach(group, () => this.saveMembership(group, { detached: true, domainJoin: null }));
      this.logger.warn({ event: "domain_detached", group: name, others: others.join(",") }, "group detached from its consistency domain: the others go on without it, and it is no longer consistent with them");
    }
    return this.statusOf(group);
  }

  /**
   * `pair attach GROUP` (on the secondary): a detached group joins its domain again, under
   * the join rule (checkpoint first; consistent with the others once it reflected past its
   * join point). Attaching an attached group changes nothing. Errors: ControlError
   * (TM_ERR_NOT_FOUND, TM_ERR_STATE when the domain refuses the join now), the save's.
   */
  async attach(name: string): Promise<PairInfo> {
    const group = this.domainCommandGroup(name, "attach");
    if (this.reflector.isDetached(group)) {
      const refusal = await this.reflector.attach(group, (joinPoint) => this.saveMembership(group, { detached: false, domainJoin: joinPoint }));
      if (refusal !== undefined) throw new ControlError("TM_ERR_STATE", refusal.replace("the initial copy ends once it can", `run pair attach ${name} again once it can`));
      this.logger.info({ event: "domain_attached", group: name }, "group attached to its consistency domain again");
    }
    return this.statusOf(group);
  }

  private statusOf(group: SecondaryGroup): PairInfo {
    const record = this.groupRecord(group);
    assert(record.secondary !== undefined, "a live secondary has its record");
    return this.status(record, record.secondary);
  }

  /**
   * A takeover of `groupNames` with the consistency domains' rules around it (issue 8): a
   * group whose join of its domain is pending, named with another member, is waited for (up
   * to takeoverJoinWaitMsMax, while it can still get there) and the takeover is refused with
   * the reason if it does not get there; before anything is taken. A takeover of part of a
   * domain detaches the named groups from the rest: each result says from which groups.
   */
  async takeoverInDomains(groupNames: readonly string[], options: TakeoverOptions = {}): Promise<readonly TakeoverResult[]> {
    const named = groupNames.flatMap((name) => {
      const group = this.groups.get(name);
      return group === undefined || group.record.state !== "replicating" ? [] : [group];
    });
    const deadlineMs = this.options.clock.monotonicMs() + takeoverJoinWaitMsMax;
    for (;;) {
      const refusal = this.reflector.takeoverRefusal(named);
      if (refusal === undefined) break;
      // It can still get there while its primary sends or records wait to be reflected.
      const moving = named.some((g) => g.domainJoinPoint !== null && (g.streams.size > 0 || g.arrivedSequence > g.reflectedSequence));
      if (!moving || this.options.clock.monotonicMs() >= deadlineMs) {
        this.logger.warn({ event: "takeover_refused_join_pending", groups: groupNames.join(","), reason: refusal }, "takeover refused: a group is not consistent with the others yet");
        throw new ControlError("TM_ERR_STATE", refusal);
      }
      await this.options.clock.sleep(takeoverJoinPollMs);
    }
    const names = new Set(groupNames);
    const leftBehind = new Map(named.map((g) => [g.name, (this.reflector.isDetached(g) ? this.formerMembers(g) : this.reflector.otherMembers(g)).filter((n) => !names.has(n))]));
    const detachedBefore = new Set(named.filter((g) => this.reflector.isDetached(g)).map((g) => g.name));
    const results = await this.takeover(groupNames, options);
    return results.map((result) => {
      const rest = leftBehind.get(result.group);
      if (rest === undefined || rest.length === 0) return result;
      const domainNote = detachedBefore.has(result.group)
        ? `was detached from its consistency domain before: not consistent with ${rest.join(", ")}`
        : `taken over without the rest of its consistency domain: detached from ${rest.join(", ")}, which go on replicating`;
      if (!detachedBefore.has(result.group)) this.logger.warn({ event: "takeover_detached", group: result.group, others: rest.join(",") }, "takeover of part of a consistency domain: the group is detached from the rest");
      return { ...result, domainNote };
    });
  }

  /** The held fact of status: the holder, why it holds, since when. */
  private heldFact(group: SecondaryGroup | undefined): SecondaryFacts["held"] {
    if (group === undefined) return undefined;
    const held = this.reflector.heldState(group);
    if (held === undefined) return undefined;
    const holder = held.holder;
    let why: string;
    if (holder === undefined) why = "no longer live";
    else if (holder.stopped !== undefined) why = `stopped: ${holder.stopped.reason}`;
    else if (holder.streams.size === 0) {
      const said = primarySuspended(holder.peerCloseText) ? "the pair is suspended on its primary" : holder.peerCloseText === undefined ? "the link or the primary is down" : `the primary said: ${holder.peerCloseText}`;
      why = `no replication stream from its primary${holder.noStreamSinceIso === undefined ? " since this node started" : ` since ${holder.noStreamSinceIso}`}: ${said}`;
    } else {
      why = `its records have arrived only up to sequence ${holder.arrivedSequence}, position ${formatPosition(holder.arrivedPosition)}`;
    }
    return { holder: held.holderName, why, sinceIso: held.sinceIso, shown: held.shown };
  }

  /** The status reason of a held group (group list, health), or null. */
  private heldReason(group: SecondaryGroup): string | null {
    const described = describeSecondary(group.lifecycle, this.facts(group));
    return described.state === "held" ? described.reason : null;
  }

  private facts(secondary: SecondaryGroup): SecondaryFacts {
    return {
      reflectedSequence: secondary.reflectedSequence, arrivedSequence: secondary.arrivedSequence, rewinding: secondary.rewinding, reapplyThrough: secondary.reapplyThrough,
      streams: secondary.streams.size, noStreamSinceIso: secondary.noStreamSinceIso, peerCloseText: secondary.peerCloseText,
      noStreamForMs: secondary.streams.size === 0 ? this.options.clock.monotonicMs() - secondary.noStreamSinceMs : 0,
      held: this.heldFact(secondary), frontierHolder: this.frontierHolder(secondary), frontierHolderPrimary: this.frontierHolderPrimary(secondary),
      joinPendingText: secondary.domainJoinPoint !== null && joinPending(secondary.domainJoinPoint, secondary) ? joinPendingText(secondary.domainJoinPoint, secondary) : undefined,
      detachedFrom: this.reflector.isDetached(secondary) ? this.formerMembers(secondary) : undefined,
      journalUsedBytes: secondary.journal.usedBytes, journalBytesMax: secondary.journal.bytesMax, lastError: secondary.lastError,
    };
  }

  // ---- status ---------------------------------------------------------------------------------

  /** The lifecycle state of a group that is not live (taken over), from its record. */
  private stateOf(record: GroupRecord, secondary: SecondaryRecord): ReturnType<typeof initialSecondaryState> {
    return initialSecondaryState({ groupId: record.id, name: record.name, volumes: [], record: secondary, journalGeneration: record.journalGeneration ?? 0 });
  }

  status(record: GroupRecord, secondaryRecord: SecondaryRecord): PairInfo {
    const name = record.name;
    const secondary = this.groups.get(name);
    const described = describeSecondary(secondary?.lifecycle ?? this.stateOf(record, secondaryRecord), secondary === undefined ? undefined : this.facts(secondary));
    const heldForMs = secondary === undefined ? 0 : this.reflector.heldState(secondary)?.forMs ?? 0;
    const shown = secondary?.record ?? secondaryRecord;
    const reflected = secondary?.reflectedSequence ?? secondaryRecord.reflectedSequence;
    const arrived = secondary?.arrivedSequence ?? secondaryRecord.reflectedSequence;
    // Exact: the host writes arrived here and not reflected yet (core/pair-view.ts).
    secondary?.hostWrites.dropThrough(reflected);
    const lag = secondary?.hostWrites.figures(arrived) ?? noLag;
    const nowWallUs = Math.floor(this.options.clock.wallMs() * 1000);
    // The group's own image (a join into its domain still pending says so in the reason; what a
    // takeover of this group gives back is consistent as of this time either way).
    const consistentAsOfUs = secondary === undefined ? undefined : secondaryConsistentAsOfUs({ consistent: secondary.consistentAlone, reflectedWallTimeUs: secondary.reflectedWallTimeUs });
    return {
      group: name, role: "secondary", state: described.state,
      healthy: pairHealthy(described.state) && (secondary === undefined || copyStalledReason(secondary.lifecycle, this.facts(secondary)) === undefined),
      pairId: shown.pairId, remoteNode: shown.primaryNode, remoteUrl: shown.primaryUrl ?? null, remoteGroup: shown.primaryGroup,
      mode: "async", transfer: shown.transfer, streams: shown.streams, reflect: shown.reflect,
      acceptedSequence: arrived, sentSequence: arrived, arrivedSequence: arrived, reflectedSequence: reflected,
      lagRecords: lag.records, lagBytes: lag.bytes,
      // The age of the oldest host write held here unreflected (by the primary's wall time; time
      // advances waiting behind another member are no lag); cut off from the primary or stopped,
      // at least the age of the last record reflected (core/pair-view.ts).
      lagSeconds: secondary === undefined ? 0 : secondaryLagSeconds({
        nowWallUs, oldestUnreflectedWallTimeUs: lag.records > 0 ? lag.oldestWallTimeUs : undefined,
        cutOff: described.state === "disconnected" || described.state === "stopped", reflectedWallTimeUs: secondary.reflectedWallTimeUs, heldForMs,
      }),
      consistentAsOf: isoOfWallUs(consistentAsOfUs),
      lastContact: secondary?.lastContactIso ?? null,
      journalBytes: secondary?.journal.usedBytes ?? 0, journalBytesMax: secondary?.journal.bytesMax ?? 0,
      // The primary decides what it sends (its written extents) and says how much only in
      // COPY_DONE: until then the secondary can only show the volumes' size as the total.
      copy: described.state === "copying" && secondary !== undefined
        ? { doneBytes: secondary.copyBytes, totalBytes: Math.max(secondary.copyBytes, volumeBytes(secondary.volumes)), volumeBytes: volumeBytes(secondary.volumes) }
        : null,
      heldWrites: 0, reason: described.reason,
      link: {
        connectedStreams: secondary?.streams.size ?? 0, reconnects: 0, lastError: secondary?.lastError ?? null, sentBytes: 0, receivedBytes: secondary?.receivedBytes ?? 0,
        downSince: described.state === "disconnected" ? (secondary?.noStreamSinceIso ?? null) : null,
      },
    };
  }

  /** `group list` for a live secondary group, undefined for any other. */
  groupInfo(record: GroupRecord, volumeName: (id: number) => string): GroupInfo | undefined {
    const secondary = this.groups.get(record.name);
    if (secondary === undefined) return undefined;
    return {
      name: record.name,
      volumes: record.volumeIds.map(volumeName),
      nextSequence: secondary.arrivedSequence + 1,
      appliedSequence: secondary.reflectedSequence,
      durableSequence: secondary.journal.durableSequence,
      journalBytes: secondary.journal.usedBytes,
      journalBytesMax: secondary.journal.bytesMax,
      journalSegments: secondary.journal.segmentCount,
      lastWriteTimeUs: secondary.reflectedPosition.writeTimeUs,
      state: secondary.stopped === undefined ? "ok" : "stopped",
      heldWrites: 0,
      reason: secondary.stopped?.reason ?? secondary.spaceReason(this.frontierHolder(secondary)) ?? this.heldReason(secondary),
    };
  }

  /** Health: every secondary whose journal is full, that is held, or whose initial copy will not move on by itself, with why. */
  healthReasons(): string[] {
    const reasons: string[] = [];
    for (const secondary of this.groups.values()) {
      const reason = secondary.stopped === undefined ? secondary.spaceReason(this.frontierHolder(secondary)) ?? this.heldReason(secondary) ?? copyStalledReason(secondary.lifecycle, this.facts(secondary)) ?? null : null;
      if (reason !== null) reasons.push(`group ${secondary.name}: ${reason}`);
    }
    return reasons;
  }

  journalFigures(): JournalFigures[] {
    return [...this.groups.values()].map((secondary) => ({
      group: secondary.name,
      usedBytes: secondary.journal.usedBytes,
      bytesMax: secondary.journal.bytesMax,
      fsyncs: secondary.journal.fsyncCount,
      bytesWritten: secondary.journal.bytesWritten,
      nextSequence: secondary.arrivedSequence + 1,
      appliedSequence: secondary.reflectedSequence,
      heldWrites: 0,
      stopped: secondary.stopped === undefined ? 0 : 1,
      role: "secondary",
    }));
  }
}
