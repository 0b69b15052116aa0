// An in-memory NodeControl & PairControl for the HTTP layer's tests (validation, error mapping,
// CLI output). It stores nothing: the real node, with real files, is covered by the e2e suite.
// Pairs move when read: the initial copy advances one step per GET of the pair, and the
// sequence numbers advance with wall time (see FakePairMotion), so `pair create` and
// `pair wait` have something to watch.
import pino from "pino";
import { ControlError } from "../../src/core/errors.ts";
import { buildMgmtApp } from "../../src/mgmt/mgmt-api.ts";
import type { LagHistoryView } from "../../src/core/lag-history.ts";
import { type CreatePairRequest, type GroupInfo, type NodeControl, type NodeHealth, type NodeReadiness, type NodeStatus, type PairControl, type PairEndInfo, type PairInfo, type PairSecondaryCheckRequest, type PairSecondaryEndRequest, type PairSecondaryInfo, type PairSecondaryRequest, type TakeoverResult, type VolumeInfo } from "../../src/mgmt/control.ts";

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** How a fake pair's numbers move while it is read. */
export interface FakePairMotion {
  /** Added to acceptedSequence on every read of the pair (writes keep coming). */
  acceptedPerRead: number;
  /** reflectedSequence (and sent/arrived) advance this many records per second, never past acceptedSequence. */
  reflectedPerSecond: number;
}

interface FakePair {
  info: Mutable<PairInfo>;
  motion: FakePairMotion;
  /** Wall time of the last advance of reflectedSequence, and the fraction of a record carried over. */
  movedAtMs: number;
  carryRecords: number;
  copyReadsLeft: number;
  copyStepBytes: number;
}

interface FakeVolume {
  name: string;
  sizeBytes: number;
  allocatedBytes: number;
  group: string | null;
  readOnly: boolean;
}

export class FakeControl implements NodeControl, PairControl {
  readonly volumes = new Map<string, FakeVolume>();
  readonly groups = new Map<string, GroupInfo>();
  readonly pairs = new Map<string, FakePair>();
  /** Requests the pair calls received, newest last: what the CLI sent. */
  readonly pairRequests: Array<CreatePairRequest | PairSecondaryRequest | { takeover: readonly string[] }> = [];
  /** When set, every call throws it: for the error-mapping tests. */
  failWith: Error | null = null;
  /** GETs of a new pair until its initial copy is done. */
  copyReads = 3;
  /** When set, the initial copy ends with the pair failed for this reason. */
  copyFailure: string | null = null;
  /** When set, createPair fails as if the secondary could not be reached. */
  secondaryUnreachable = false;
  /** Motion given to pairs created from now on. */
  motion: FakePairMotion = { acceptedPerRead: 0, reflectedPerSecond: 0 };

  ready(): NodeReadiness {
    return { ready: true, status: "ready" };
  }

  health(): NodeHealth {
    return { status: "ok", reasons: [] };
  }

  lagHistory(): readonly LagHistoryView[] {
    return [];
  }

  status(): NodeStatus {
    this.maybeFail();
    return {
      id: "fake-a",
      version: "0.1.0",
      writeTimePolicy: "host",
      dataDir: "/nonexistent/fake",
      startedAt: "2025-01-01T00:00:00.000Z",
      uptimeSeconds: 3725,
      listeners: { mgmt: "127.0.0.1:7480", nbd: "127.0.0.1:10809", host: "127.0.0.1:7410", repl: "127.0.0.1:7400" },
      recordedWriteTimeUs: 1_735_689_600_000_000,
      volumes: this.listVolumes(),
      groups: this.listGroups(),
      connections: { nbd: 0, host: 0 },
    };
  }

  listVolumes(): readonly VolumeInfo[] {
    this.maybeFail();
    return [...this.volumes.values()].map((volume) => ({ ...volume }));
  }

  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.maybeFail();
    if (this.volumes.has(name)) return Promise.reject(new ControlError("TM_ERR_EXISTS", `volume '${name}' already exists`));
    const volume: FakeVolume = { name, sizeBytes, allocatedBytes: 0, group: null, readOnly: false };
    this.volumes.set(name, volume);
    return Promise.resolve({ ...volume });
  }

  resizeVolume(name: string, sizeBytes: number): Promise<{ volume: VolumeInfo; changed: boolean }> {
    this.maybeFail();
    const volume = this.volumes.get(name);
    if (volume === undefined) return Promise.reject(new ControlError("TM_ERR_NOT_FOUND", `volume ${name} does not exist`));
    if (sizeBytes < volume.sizeBytes) return Promise.reject(new ControlError("TM_ERR_INVALID", `volume ${name} cannot shrink`));
    const changed = sizeBytes > volume.sizeBytes;
    volume.sizeBytes = sizeBytes;
    return Promise.resolve({ volume: { ...volume }, changed });
  }

  listGroups(): readonly GroupInfo[] {
    this.maybeFail();
    return [...this.groups.values()];
  }

  deleteVolume(name: string, force: boolean): Promise<boolean> {
    this.maybeFail();
    const volume = this.volumes.get(name);
    if (volume === undefined) return Promise.resolve(false);
    if (volume.group !== null) return Promise.reject(new ControlError("TM_ERR_STATE", `volume ${name} is in group ${volume.group}`));
    if (volume.allocatedBytes > 0 && !force) return Promise.reject(new ControlError("TM_ERR_CONFLICT", `volume ${name} holds data; tidemark volume delete ${name} --force`));
    this.volumes.delete(name);
    return Promise.resolve(true);
  }

  deleteGroup(name: string): Promise<boolean> {
    this.maybeFail();
    const group = this.groups.get(name);
    if (group === undefined) return Promise.resolve(false);
    if (this.pairs.has(name)) return Promise.reject(new ControlError("TM_ERR_STATE", `group ${name} has a pair; a paired group cannot be deleted`));
    for (const volume of this.volumes.values()) if (volume.group === name) volume.group = null;
    this.groups.delete(name);
    return Promise.resolve(true);
  }

  createGroup(name: string, volumes: readonly string[]): Promise<GroupInfo> {
    this.maybeFail();
    if (this.groups.has(name)) return Promise.reject(new ControlError("TM_ERR_EXISTS", `group '${name}' already exists`));
    for (const volumeName of volumes) {
      const volume = this.volumes.get(volumeName);
      if (volume === undefined) {
        return Promise.reject(new ControlError("TM_ERR_NOT_FOUND", `volume '${volumeName}' does not exist`));
      }
      if (volume.group !== null) {
        return Promise.reject(new ControlError("TM_ERR_CONFLICT", `volume '${volumeName}' is already in group '${volume.group}'`));
      }
    }
    for (const volumeName of volumes) {
      const volume = this.volumes.get(volumeName);
      if (volume !== undefined) volume.group = name;
    }
    const group: GroupInfo = {
      name,
      volumes: [...volumes],
      nextSequence: 1,
      appliedSequence: 0,
      durableSequence: 0,
      journalBytes: 12 * 1024 * 1024,
      journalBytesMax: 4 * 1024 * 1024 * 1024,
      journalSegments: 1,
      lastWriteTimeUs: 0,
      state: "ok",
      heldWrites: 0,
      reason: null,
    };
    this.groups.set(name, group);
    return Promise.resolve(group);
  }

  metrics(): Promise<{ contentType: string; body: string }> {
    this.maybeFail();
    return Promise.resolve({
      contentType: "text/plain; version=0.0.4; charset=utf-8",
      body: `# HELP tidemark_volumes Volumes on this node.\n# TYPE tidemark_volumes gauge\ntidemark_volumes ${this.volumes.size}\n`,
    });
  }

  // ---- pairs ----

  createPair(request: CreatePairRequest): Promise<PairInfo> {
    this.maybeFail();
    this.pairRequests.push(request);
    const group = this.groups.get(request.group);
    if (group === undefined) return Promise.reject(new ControlError("TM_ERR_NOT_FOUND", `group '${request.group}' does not exist`));
    if (this.pairs.has(request.group)) return Promise.reject(new ControlError("TM_ERR_EXISTS", `group '${request.group}' already has a pair`));
    if (request.mode === "sync") return Promise.reject(new ControlError("TM_ERR_INVALID", "mode sync needs a cascade, which this node does not run yet"));
    if (this.secondaryUnreachable) {
      // As the node says it (peerUnreachable in src/transport/peer-client.ts): what is wrong and what to check.
      return Promise.reject(new ControlError("TM_ERR_UNREACHABLE", `the secondary at ${request.to} refused the connection (ECONNREFUSED): nothing listens there; check that \`tidemark node\` runs on the secondary and that --to is its management address (its --mgmt, not --repl or --nbd)`));
    }
    const totalBytes = group.volumes.reduce((sum, name) => sum + (this.volumes.get(name)?.sizeBytes ?? 0), 0);
    const pair = this.addPair({
      group: request.group,
      remoteUrl: request.to,
      remoteGroup: request.remoteGroup ?? request.group,
      mode: request.mode,
      transfer: request.transfer,
      streams: request.streams,
      reflect: request.reflect,
      state: this.copyReads > 0 ? "copying" : "replicating",
      copy: this.copyReads > 0 ? { doneBytes: 0, totalBytes } : null,
    });
    pair.copyReadsLeft = this.copyReads;
    pair.copyStepBytes = Math.ceil(totalBytes / Math.max(1, this.copyReads));
    return Promise.resolve({ ...pair.info });
  }

  /** A pair in a given shape (a secondary one, a failed one, ...), for tests. */
  addPair(fields: Partial<PairInfo> & { group: string }, motion: FakePairMotion = this.motion): FakePair {
    const info: Mutable<PairInfo> = {
      role: "primary",
      state: "replicating",
      pairId: `fake-a/${fields.group}`,
      remoteNode: "fake-b",
      remoteUrl: null,
      remoteGroup: fields.group,
      mode: "async",
      transfer: "push",
      streams: 4,
      reflect: "time",
      acceptedSequence: 0,
      sentSequence: 0,
      arrivedSequence: 0,
      reflectedSequence: 0,
      lagRecords: 0,
      lagBytes: 0,
      lagSeconds: 0,
      consistentAsOf: null,
      lastContact: null,
      journalBytes: 12 * 1024 * 1024,
      journalBytesMax: 4 * 1024 * 1024 * 1024,
      copy: null,
      heldWrites: 0,
      reason: null,
      link: { connectedStreams: fields.streams ?? 4, reconnects: 0, lastError: null, sentBytes: 0, downSince: null, receivedBytes: 0 },
      ...fields,
    };
    const pair: FakePair = { info, motion: { ...motion }, movedAtMs: Date.now(), carryRecords: 0, copyReadsLeft: 0, copyStepBytes: 0 };
    this.refreshLag(pair);
    this.pairs.set(fields.group, pair);
    return pair;
  }

  listPairs(): readonly PairInfo[] {
    this.maybeFail();
    return [...this.pairs.values()].map((pair) => ({ ...pair.info }));
  }

  pair(group: string): PairInfo {
    this.maybeFail();
    const pair = this.findPair(group);
    this.advance(pair);
    const answer = { ...pair.info };
    // New writes arrive between reads: the next read sees them.
    if (pair.info.state === "replicating" || pair.info.state === "copying") pair.info.acceptedSequence += pair.motion.acceptedPerRead;
    this.refreshLag(pair);
    return answer;
  }

  suspendPair(group: string): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    if (pair.info.state !== "replicating" && pair.info.state !== "copying") {
      return Promise.reject(new ControlError("TM_ERR_STATE", `pair of group '${group}' is ${pair.info.state}; only a copying or replicating pair can be suspended`));
    }
    pair.info.state = "suspended";
    pair.info.reason = "suspended by the operator";
    pair.info.link = { ...pair.info.link, connectedStreams: 0 };
    return Promise.resolve({ ...pair.info });
  }

  resumePair(group: string): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    if (pair.info.state !== "suspended") {
      return Promise.reject(new ControlError("TM_ERR_STATE", `pair of group '${group}' is ${pair.info.state}, not suspended`));
    }
    pair.info.state = "replicating";
    pair.info.reason = null;
    pair.info.link = { ...pair.info.link, connectedStreams: pair.info.streams };
    return Promise.resolve({ ...pair.info });
  }

  async suspendPairs(groups: readonly string[]): Promise<readonly PairInfo[]> {
    for (const group of groups) this.findPair(group);
    const result: PairInfo[] = [];
    for (const group of groups) result.push(await this.suspendPair(group));
    return result;
  }

  async resumePairs(groups: readonly string[]): Promise<readonly PairInfo[]> {
    for (const group of groups) {
      if (this.findPair(group).info.state !== "suspended") throw new ControlError("TM_ERR_STATE", `pair of group '${group}' is not suspended`);
    }
    const result: PairInfo[] = [];
    for (const group of groups) result.push(await this.resumePair(group));
    return result;
  }

  detachPair(group: string): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    if (pair.info.role !== "secondary") return Promise.reject(new ControlError("TM_ERR_STATE", `group '${group}' is the primary of its pair; run pair detach on the secondary`));
    pair.info.reason = "detached from its consistency domain";
    return Promise.resolve({ ...pair.info });
  }

  attachPair(group: string): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    if (pair.info.role !== "secondary") return Promise.reject(new ControlError("TM_ERR_STATE", `group '${group}' is the primary of its pair; run pair attach on the secondary`));
    pair.info.reason = null;
    return Promise.resolve({ ...pair.info });
  }

  unfencePair(group: string, force: boolean): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    if (pair.info.state !== "fenced") return Promise.reject(new ControlError("TM_ERR_STATE", `pair of group '${group}' is ${pair.info.state}, not fenced`));
    if (pair.info.fence?.peerTookOver === true && !force) return Promise.reject(new ControlError("TM_ERR_PEER_TOOK_OVER", `the secondary took over ${group}; run pair unfence ${group} --force`));
    pair.info.state = pair.info.fence?.peerTookOver === true ? "failed" : "replicating";
    pair.info.fence = null;
    pair.info.reason = null;
    return Promise.resolve({ ...pair.info });
  }

  takeover(groups: readonly string[], options: { readonly force?: boolean | undefined } = {}): Promise<readonly TakeoverResult[]> {
    this.maybeFail();
    this.pairRequests.push({ takeover: groups, ...(options.force === true ? { force: true } : {}) });
    const pairs: FakePair[] = [];
    for (const group of groups) {
      const pair = this.pairs.get(group);
      if (pair === undefined) return Promise.reject(new ControlError("TM_ERR_NOT_FOUND", `group '${group}' has no pair`));
      if (pair.info.role !== "secondary") {
        return Promise.reject(new ControlError("TM_ERR_STATE", `group '${group}' is the primary of its pair; run takeover on the secondary`));
      }
      pairs.push(pair);
    }
    return Promise.resolve(
      pairs.map((pair) => {
        const dropped = pair.info.arrivedSequence - pair.info.reflectedSequence;
        pair.info.state = "takeover";
        pair.info.arrivedSequence = pair.info.reflectedSequence;
        return { group: pair.info.group, reflectedSequence: pair.info.reflectedSequence, droppedRecords: dropped, state: pair.info.state };
      }),
    );
  }

  async preparePairSecondary(request: PairSecondaryRequest): Promise<PairSecondaryInfo> {
    this.maybeFail();
    this.pairRequests.push(request);
    for (const wanted of request.volumes) {
      const have = this.volumes.get(wanted.name);
      if (have !== undefined && have.sizeBytes !== wanted.sizeBytes) {
        throw new ControlError("TM_ERR_CONFLICT", `volume '${wanted.name}' exists with ${have.sizeBytes} bytes, not ${wanted.sizeBytes}`);
      }
    }
    for (const wanted of request.volumes) {
      if (!this.volumes.has(wanted.name)) await this.createVolume(wanted.name, wanted.sizeBytes);
    }
    if (!this.groups.has(request.group)) await this.createGroup(request.group, request.volumes.map((volume) => volume.name));
    this.addPair({ group: request.group, role: "secondary", pairId: request.pairId, remoteNode: request.primaryNode, remoteGroup: request.primaryGroup, state: "copying" });
    return { nodeId: "fake-a", group: request.group, replAddress: "127.0.0.1:7400" };
  }

  deletePair(group: string, options: { readonly force: boolean; readonly promote: boolean }): Promise<PairEndInfo> {
    this.maybeFail();
    const pair = this.pairs.get(group);
    if (pair === undefined) return Promise.resolve({ group, deleted: false, role: null, readOnly: false, keptSequence: null });
    if (pair.info.role === "secondary" && !options.force) return Promise.reject(new ControlError("TM_ERR_STATE", `group ${group} is the secondary of a pair: run pair delete against the primary`));
    this.pairs.delete(group);
    const secondary = pair.info.role === "primary";
    return Promise.resolve({ group, deleted: true, role: pair.info.role, readOnly: !secondary && !options.promote, keptSequence: secondary ? null : pair.info.reflectedSequence, ...(secondary ? { secondary: { deleted: true, note: null } } : {}) });
  }

  setPairSecondary(group: string, to: string): Promise<PairInfo> {
    this.maybeFail();
    const pair = this.findPair(group);
    pair.info.remoteUrl = to;
    return Promise.resolve({ ...pair.info });
  }

  checkPairSecondary(request: PairSecondaryCheckRequest): PairSecondaryInfo {
    const pair = this.pairs.get(request.group);
    if (pair?.info.pairId !== request.pairId) throw new ControlError("TM_ERR_CONFLICT", `no pair ${request.pairId} here`);
    return { nodeId: "fake-a", group: request.group, replAddress: "127.0.0.1:7400" };
  }

  endPairSecondary(request: PairSecondaryEndRequest): Promise<PairEndInfo> {
    return this.deletePair(request.group, { force: true, promote: request.promote });
  }

  private findPair(group: string): FakePair {
    const pair = this.pairs.get(group);
    if (pair === undefined) throw new ControlError("TM_ERR_NOT_FOUND", `group '${group}' has no pair`);
    return pair;
  }

  private advance(pair: FakePair): void {
    const { info, motion } = pair;
    if (info.state === "copying" && pair.copyReadsLeft > 0 && info.copy !== null) {
      pair.copyReadsLeft -= 1;
      const doneBytes = Math.min(info.copy.totalBytes, info.copy.doneBytes + pair.copyStepBytes);
      info.copy = { doneBytes, totalBytes: info.copy.totalBytes };
      if (pair.copyReadsLeft === 0) {
        info.copy = null;
        info.state = this.copyFailure === null ? "replicating" : "failed";
        info.reason = this.copyFailure;
      }
    }
    const nowMs = Date.now();
    if (info.state === "replicating" || info.state === "copying") {
      const records = pair.carryRecords + ((nowMs - pair.movedAtMs) / 1000) * motion.reflectedPerSecond;
      const whole = Math.floor(records);
      pair.carryRecords = records - whole;
      info.reflectedSequence = Math.min(info.acceptedSequence, info.reflectedSequence + whole);
      info.arrivedSequence = Math.max(info.arrivedSequence, info.reflectedSequence);
      info.sentSequence = Math.max(info.sentSequence, info.arrivedSequence);
    }
    pair.movedAtMs = nowMs;
    this.refreshLag(pair);
  }

  private refreshLag(pair: FakePair): void {
    const { info } = pair;
    info.lagRecords = info.acceptedSequence - info.reflectedSequence;
    info.lagBytes = info.lagRecords * 4096;
    info.lagSeconds = info.lagRecords / 1000;
  }

  private maybeFail(): void {
    if (this.failWith !== null) throw this.failWith;
  }
}

/** A FakeControl holding volume v1 in group g1, and the management app over it (silent log). */
export async function fakeAppWithGroup(): Promise<{ control: FakeControl; app: ReturnType<typeof buildMgmtApp> }> {
  const control = new FakeControl();
  await control.createVolume("v1", 1 << 20);
  await control.createGroup("g1", ["v1"]);
  return { control, app: buildMgmtApp(control, pino({ level: "silent" })) };
}
