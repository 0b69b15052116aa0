// Shared pieces of the remote-copy disaster drills (test/e2e/drill-*.test.ts, docs/drills.md):
// a seeded PRNG (the seed is printed and replayable), a tiny dependent NBD client, two-node
// pair setup over the CLI, self-describing write blocks and the I1 prefix checker, image
// comparison, and crash-safe teardown of FUSE + loop mounts whose NBD server was killed.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { TestContext } from "node:test";
import { HostClient } from "../../src/index.ts";
import { checksum } from "../../src/protocol/bytes.ts";
import {
  Cmd, CmdFlag, ClientFlag, Info, nbdGreetingBytes, nbdInitMagicHi, nbdInitMagicLo, nbdOptionReplyHeaderBytes,
  nbdSimpleReplyHeaderBytes, Opt, Rep, TransmissionFlag,
} from "../../src/protocol/nbd/constants.ts";
import { decodeOptionReplyHeader, encodeOption } from "../../src/protocol/nbd/handshake.ts";
import { decodeSimpleReplyHeader, encodeRequestHeader } from "../../src/protocol/nbd/transmission.ts";
import {
  cliOk, isMounted, mgmtJson, nbdfuseMount, onCleanup, run, sleep, stopDaemon, tmpDir, waitFor,
  type FuseMount, type NodeOptions, type RunningNode,
} from "./harness.ts";
import { startNodeRetrying } from "./node-start.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";

// ---------------------------------------------------------------------------------------------
// Seeds

/** mulberry32: small, seedable, good enough to pick moments and positions. */
export class Prng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

/**
 * The drill's seed: TIDEMARK_DRILL_SEED when set (replay), else random. Printed as a test
 * diagnostic and kept for failure messages.
 */
export function drillSeed(t: TestContext): number {
  const fromEnv = process.env.TIDEMARK_DRILL_SEED;
  const seed = fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) >>> 0 : randomBytes(4).readUInt32LE(0);
  t.diagnostic(`seed ${seed} (replay with TIDEMARK_DRILL_SEED=${seed})`);
  process.stderr.write(`# ${t.name}: seed ${seed} (replay with TIDEMARK_DRILL_SEED=${seed})\n`);
  return seed;
}

/** Logs "phase at +1.2s" diagnostics, so the report shows where a drill spends its time. */
export function phaseClock(t: TestContext): (what: string) => void {
  const startMs = Date.now();
  return (what: string) => {
    t.diagnostic(`+${((Date.now() - startMs) / 1000).toFixed(1)}s ${what}`);
  };
}

// ---------------------------------------------------------------------------------------------
// A tiny NBD client: fixed newstyle, NBD_OPT_GO, simple replies, one request at a time (every
// call awaits its reply before the next is sent, which is what a dependent writer wants).

export class NbdError extends Error {
  override name = "NbdError";
}

class SocketReader {
  readonly #socket: net.Socket;
  #chunks: Buffer[] = [];
  #length = 0;
  #waiter: (() => void) | undefined;
  #ended: Error | undefined;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#length += chunk.length;
      this.#wake();
    });
    socket.on("error", (error) => {
      this.#ended ??= error;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended ??= new NbdError("NBD connection closed");
      this.#wake();
    });
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  async read(n: number): Promise<Buffer> {
    while (this.#length < n) {
      if (this.#ended !== undefined) throw new NbdError(`NBD connection lost (${this.#ended.message}) while waiting for ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#length = rest.length;
    return out;
  }

  write(data: Buffer): void {
    this.#socket.write(data);
  }
}

export class NbdClient {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly #socket: net.Socket;
  readonly #reader: SocketReader;
  #cookie = 1;
  #busy = false;

  private constructor(socket: net.Socket, reader: SocketReader, sizeBytes: number, readOnly: boolean) {
    this.#socket = socket;
    this.#reader = reader;
    this.sizeBytes = sizeBytes;
    this.readOnly = readOnly;
  }

  static async connect(port: number, exportName: string, host = "127.0.0.1"): Promise<NbdClient> {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    const reader = new SocketReader(socket);
    try {
      const greeting = await reader.read(nbdGreetingBytes);
      if (greeting.readUInt32BE(0) !== nbdInitMagicHi || greeting.readUInt32BE(4) !== nbdInitMagicLo) throw new NbdError("not an NBD server");
      reader.write(Buffer.from([0, 0, 0, ClientFlag.fixedNewstyle | ClientFlag.noZeroes]));
      const name = Buffer.from(exportName, "utf8");
      const data = Buffer.alloc(4 + name.length + 2);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
      data.writeUInt16BE(0, 4 + name.length);
      reader.write(encodeOption(Opt.go, data));
      let sizeBytes: number | undefined;
      let flags = 0;
      for (;;) {
        const decoded = decodeOptionReplyHeader(await reader.read(nbdOptionReplyHeaderBytes));
        if (!decoded.ok) throw new NbdError(`bad option reply (${decoded.reason})`);
        const body = await reader.read(decoded.header.lengthBytes);
        const type = decoded.header.replyType;
        if (type === Rep.ack) break;
        if ((type & 0x8000_0000) !== 0) throw new NbdError(`NBD_OPT_GO ${exportName} refused: 0x${type.toString(16)} ${body.toString("utf8")}`);
        if (type === Rep.info && body.length >= 12 && body.readUInt16BE(0) === Info.export) {
          sizeBytes = Number(body.readBigUInt64BE(2));
          flags = body.readUInt16BE(10);
        }
      }
      if (sizeBytes === undefined) throw new NbdError("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
      return new NbdClient(socket, reader, sizeBytes, (flags & TransmissionFlag.readOnly) !== 0);
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  async #request(type: number, flags: number, offsetBytes: number, lengthBytes: number, payload?: Buffer): Promise<Buffer> {
    assert.ok(!this.#busy, "NbdClient sends one request at a time");
    this.#busy = true;
    try {
      const cookie = this.#cookie++;
      const header = encodeRequestHeader({ flags, type, cookieHi: 0, cookieLo: cookie, offsetBytes, lengthBytes });
      this.#reader.write(payload === undefined ? header : Buffer.concat([header, payload]));
      const reply = decodeSimpleReplyHeader(await this.#reader.read(nbdSimpleReplyHeaderBytes));
      if (!reply.ok) throw new NbdError(`bad NBD reply (${reply.reason})`);
      if (reply.cookieLo !== cookie) throw new NbdError(`NBD reply for cookie ${reply.cookieLo}, expected ${cookie}`);
      if (reply.errno !== 0) throw new NbdError(`NBD command ${type} at ${offsetBytes}+${lengthBytes} failed: errno ${reply.errno}`);
      return type === Cmd.read ? await this.#reader.read(lengthBytes) : Buffer.alloc(0);
    } finally {
      this.#busy = false;
    }
  }

  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.#request(Cmd.write, options.fua === true ? CmdFlag.fua : 0, offsetBytes, data.length, data);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.#request(Cmd.read, 0, offsetBytes, lengthBytes);
  }

  async flush(): Promise<void> {
    await this.#request(Cmd.flush, 0, 0, 0);
  }

  /** NBD_CMD_DISC and close. */
  async close(): Promise<void> {
    if (!this.#socket.destroyed) {
      this.#socket.write(encodeRequestHeader({ flags: 0, type: Cmd.disc, cookieHi: 0, cookieLo: 0, offsetBytes: 0, lengthBytes: 0 }));
      this.#socket.end();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#socket.destroy();
          resolve();
        }, 2_000);
        this.#socket.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

const readChunkBytes = 4 * 1024 * 1024;

/** Reads one range of an export over a fresh NBD connection. */
export async function readRange(node: RunningNode, volume: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const client = await NbdClient.connect(node.nbdPort, volume);
  try {
    return await client.read(offsetBytes, lengthBytes);
  } finally {
    await client.close();
  }
}

/** The whole export, read over NBD in 4 MiB requests. */
export async function readExport(node: RunningNode, exportName: string): Promise<Buffer> {
  const client = await NbdClient.connect(node.nbdPort, exportName);
  try {
    const image = Buffer.alloc(client.sizeBytes);
    for (let offset = 0; offset < client.sizeBytes; offset += readChunkBytes) {
      const n = Math.min(readChunkBytes, client.sizeBytes - offset);
      (await client.read(offset, n)).copy(image, offset);
    }
    return image;
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Nodes and pairs through the CLI

export type PairInfoView = PairInfo;

export async function pairInfo(node: RunningNode, group: string): Promise<PairInfoView> {
  return await mgmtJson(node.mgmtUrl, `/v1/pairs/${group}`) as PairInfoView;
}

/**
 * Waits (up to `timeoutMs`) until `node` shows the pair of `group` in `state`, and returns its
 * view. `pair wait` returns as soon as nothing accepted is outstanding, which after a restart
 * can be before the link is back; a test that then means "the pair carries on" waits for this.
 */
export async function waitPairState(node: RunningNode, group: string, state: PairInfoView["state"], timeoutMs = 30_000): Promise<PairInfoView> {
  let last: PairInfoView | undefined;
  try {
    return await waitFor(`the pair of ${group} on ${node.id} to be ${state}`, async () => {
      last = await pairInfo(node, group);
      return last.state === state ? last : undefined;
    }, { timeoutMs });
  } catch (error) {
    throw new Error(`${(error as Error).message}; last seen: ${last === undefined ? "nothing" : describePair(last)}`, { cause: error });
  }
}

export interface VolumeSpec {
  readonly name: string;
  readonly size: string;
}

/**
 * Creates volumes and one group holding them on `node`, then writes 4 KiB of zeroes at offset
 * 0 of each volume (no change to the image), so the group has journal records before it is
 * paired, as a group in use would.
 */
export async function makeGroup(node: RunningNode, group: string, volumes: readonly VolumeSpec[]): Promise<void> {
  for (const volume of volumes) await cliOk(["volume", "create", volume.name, "--size", volume.size], { node: node.mgmtUrl });
  await cliOk(["group", "create", group, "--volumes", volumes.map((v) => v.name).join(",")], { node: node.mgmtUrl });
  const host = await HostClient.connect({ port: node.hostPort });
  try {
    for (const volume of volumes) await (await host.open(volume.name)).write(0, Buffer.alloc(4096), { fua: true });
  } finally {
    await host.close();
  }
}

export interface PairOptions {
  readonly transfer?: "push" | "pull";
  readonly streams?: number;
  readonly reflect?: "time" | "seq";
}

/** `tidemark pair create GROUP --to B` on A; returns once the pair replicates. */
export async function pairCreate(primary: RunningNode, group: string, secondary: RunningNode, options: PairOptions = {}): Promise<void> {
  await cliOk([
    "pair", "create", group, "--to", secondary.mgmtUrl,
    "--transfer", options.transfer ?? "push",
    "--streams", String(options.streams ?? 4),
    "--reflect", options.reflect ?? "time",
  ], { node: primary.mgmtUrl, timeoutMs: 120_000 });
  const info = await pairInfo(primary, group);
  assert.equal(info.state, "replicating", `pair of ${group} replicating after create (${JSON.stringify(info)})`);
}

/** `tidemark pair wait GROUP` on the primary. */
export async function pairWait(primary: RunningNode, group: string, timeout = "60s"): Promise<string> {
  const result = await cliOk(["pair", "wait", group, "--timeout", timeout], { node: primary.mgmtUrl, timeoutMs: 120_000 });
  return result.stdout.trim();
}

/**
 * `tidemark pair takeover G1,G2` on the secondary; returns its output. `force`: the primary
 * was killed, so it cannot be fenced: the operator declares its site lost (`--force`).
 */
export async function takeover(secondary: RunningNode, groups: readonly string[], options: { readonly force?: boolean } = {}): Promise<string> {
  const result = await cliOk(["pair", "takeover", groups.join(","), ...(options.force === true ? ["--force"] : [])], { node: secondary.mgmtUrl, timeoutMs: 120_000 });
  return result.stdout.trim();
}

/**
 * Every drill that kills a node restarts it: after a takeover the killed primary starts
 * again on its data directory, serves again, and learns its pair was taken over (the
 * secondary refuses it at the handshake): it fences itself instead of replicating into the
 * taken-over copy, and reports the writes it accepted after the cut.
 */
export async function restartOldPrimary(primary: RunningNode, groups: readonly string[]): Promise<string> {
  await primary.restart();
  const states: string[] = [];
  for (const group of groups) {
    // Refused at the handshake, it fences itself (writes refused) and counts its writes past the cut.
    const info = await waitFor(`the restarted primary learns that ${group} was taken over and fences itself`, async () => {
      const view = await pairInfo(primary, group);
      return view.state === "fenced" && view.fence?.peerTookOver === true && view.fence.lateWrites !== null ? view : undefined;
    }, { timeoutMs: 30_000 });
    states.push(`${group}: ${info.state}, ${String(info.fence?.lateWrites)} late writes (${String(info.reason)})`);
  }
  return states.join("; ");
}

/** Nodes started by the running drill, for the failure report. */
const drillNodes: RunningNode[] = [];

/** Starts primary A and secondary B. */
export async function startPairNodes(options: { a?: Partial<NodeOptions>; b?: Partial<NodeOptions> } = {}): Promise<{ a: RunningNode; b: RunningNode }> {
  const [a, b] = await Promise.all([
    startNodeRetrying({ id: "drill-a", ...options.a }),
    startNodeRetrying({ id: "drill-b", ...options.b }),
  ]);
  drillNodes.push(a, b);
  return { a, b };
}

const failureLogLinesMax = 25;

/**
 * Runs a drill body; on failure, copies every node log of the drill to
 * $TMPDIR/tidemark-drill-logs/<time>-seed-<seed>/ and adds each node's warnings and errors
 * (and its last lines) to the error, so a CI failure can be read without rerunning.
 */
export async function runDrill(t: TestContext, body: (seed: number) => Promise<void>): Promise<void> {
  drillNodes.length = 0;
  const seed = drillSeed(t);
  try {
    await body(seed);
  } catch (error) {
    const keepDir = path.join(os.tmpdir(), "tidemark-drill-logs", `${new Date().toISOString().replaceAll(":", "-")}-seed-${seed}`);
    const digest: string[] = [`drill failed with seed ${seed} (replay: TIDEMARK_DRILL_SEED=${seed}); node logs copied to ${keepDir}`];
    try {
      await fsp.mkdir(keepDir, { recursive: true });
      for (const node of drillNodes) {
        await fsp.copyFile(node.logFile, path.join(keepDir, path.basename(node.logFile))).catch(() => undefined);
        const lines = (await fsp.readFile(node.logFile, "utf8").catch(() => "")).split("\n").filter((l) => l !== "");
        const notable = lines.filter((l) => /"level":(4|5|6)\d/.test(l) && !l.includes("repl_stream_lost"));
        digest.push(`--- ${node.id}: ${notable.length} warning/error lines (last ${failureLogLinesMax}), stream losses left out`);
        digest.push(...notable.slice(-failureLogLinesMax).map((l) => l.slice(0, 600)));
        digest.push(`--- ${node.id}: last 5 lines`, ...lines.slice(-5).map((l) => l.slice(0, 600)));
      }
    } catch (copyError) {
      digest.push(`(could not collect logs: ${String(copyError)})`);
    }
    const message = error instanceof Error ? error.message : String(error);
    const wrapped = new Error(`${message}\n${digest.join("\n")}`, { cause: error });
    if (error instanceof Error && error.stack !== undefined) wrapped.stack = `${wrapped.message}\n${error.stack.split("\n").slice(1).join("\n")}`;
    throw wrapped;
  }
}

/** Waits until B has reflected at least `count` records past what it had when called, for every group. */
export async function waitReflectedProgress(secondary: RunningNode, groups: readonly string[], count: number, timeoutMs = 30_000): Promise<void> {
  const start = new Map<string, number>();
  for (const group of groups) start.set(group, (await pairInfo(secondary, group)).reflectedSequence);
  let last = "";
  try {
    await waitFor(`B reflecting ${count} more records in ${groups.join(", ")}`, async () => {
      const views: string[] = [];
      let done = true;
      for (const group of groups) {
        const info = await pairInfo(secondary, group);
        views.push(`${group}: ${describePair(info)}`);
        if (info.reflectedSequence < (start.get(group) ?? 0) + count) done = false;
      }
      last = views.join("; ");
      return done;
    }, { timeoutMs, intervalMs: 100 });
  } catch (error) {
    throw new Error(`${String(error)}\nlast seen on B: ${last}`, { cause: error });
  }
}

/** One line: state, sequences, lag, link. */
export function describePair(info: PairInfoView): string {
  return `${info.state} accepted ${info.acceptedSequence} sent ${info.sentSequence} arrived ${info.arrivedSequence} ` +
    `reflected ${info.reflectedSequence} lag ${info.lagRecords} rec ${(info.lagBytes / 1048576).toFixed(1)} MiB ${info.lagSeconds.toFixed(3)} s ` +
    `link ${info.link.connectedStreams} streams ${info.link.reconnects} reconnects err ${String(info.link.lastError)} reason ${String(info.reason)}`;
}

// ---------------------------------------------------------------------------------------------
// Background load: random writes, several in flight, over the host protocol and NBD

export interface LoadTarget {
  readonly volume: string;
  readonly via: "host" | "nbd";
  readonly sizeBytes: number;
}

export interface LoadReport {
  writes: number;
  bytes: number;
  /** The first failure (the load stops at it), or "". */
  failure: string;
}

export interface Load {
  readonly report: LoadReport;
  /** Stops issuing, waits for what is in flight, flushes, closes; returns the report. */
  stop(): Promise<LoadReport>;
}

const loadWriteBytesMax = 128 * 1024;
const loadAlignBytes = 4096;
const loadBytesPerSecondDefault = 24 * 1024 * 1024;

/**
 * Starts one lane per target (host-protocol lanes with a host write time on every other
 * write), each writing random data of 4..128 KiB at random 4 KiB-aligned offsets until stopped.
 */
export async function startLoad(node: RunningNode, targets: readonly LoadTarget[], prng: Prng, options: { bytesPerSecondMax?: number } = {}): Promise<Load> {
  const report: LoadReport = { writes: 0, bytes: 0, failure: "" };
  const startMs = Date.now();
  const rate = options.bytesPerSecondMax ?? loadBytesPerSecondDefault;
  let stopped = false;
  const host = await HostClient.connect({ port: node.hostPort });
  const lanes = targets.map(async (target) => {
    const write = target.via === "host"
      ? await (async () => {
        const volume = await host.open(target.volume);
        let n = 0;
        return {
          write: (offsetBytes: number, data: Buffer) => volume.write(offsetBytes, data, (n++ % 2) === 0 ? { writeTimeUs: Date.now() * 1000 } : {}),
          flush: () => volume.flush(),
          close: () => Promise.resolve(),
        };
      })()
      : await (async () => {
        const client = await NbdClient.connect(node.nbdPort, target.volume);
        return { write: (offsetBytes: number, data: Buffer) => client.write(offsetBytes, data), flush: () => client.flush(), close: () => client.close() };
      })();
    try {
      while (!stopped && report.failure === "") {
        const lengthBytes = prng.int(1, loadWriteBytesMax / loadAlignBytes) * loadAlignBytes;
        const offsetBytes = prng.int(0, (target.sizeBytes - lengthBytes) / loadAlignBytes) * loadAlignBytes;
        await write.write(offsetBytes, randomBytes(lengthBytes));
        report.writes++;
        report.bytes += lengthBytes;
        // Keep the backlog small enough that catching up takes seconds, not minutes.
        const aheadMs = (report.bytes / rate) * 1000 - (Date.now() - startMs);
        if (aheadMs > 0) await sleep(aheadMs);
      }
      await write.flush();
    } catch (error) {
      report.failure ||= `${target.volume} via ${target.via}: ${String(error)}`;
    } finally {
      await write.close().catch(() => undefined);
    }
  });
  const all = Promise.all(lanes);
  return {
    report,
    stop: async () => {
      stopped = true;
      await all;
      await host.close().catch(() => undefined);
      return report;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Self-describing write blocks and the I1 prefix check

export const drillBlockBytes = 512;
const drillMagic = Buffer.from("TMDRILL1", "ascii");

/**
 * Block of write i: "TMDRILL1", run id (u32), i (u32), volume tag (u32), block index (u32),
 * filler derived from i, CRC-32 of bytes 0..507 at 508.
 */
export function encodeDrillBlock(runId: number, index: number, volumeTag: number, blockIndex: number): Buffer {
  const block = Buffer.alloc(drillBlockBytes);
  drillMagic.copy(block, 0);
  block.writeUInt32LE(runId >>> 0, 8);
  block.writeUInt32LE(index, 12);
  block.writeUInt32LE(volumeTag, 16);
  block.writeUInt32LE(blockIndex, 20);
  for (let at = 24; at < drillBlockBytes - 4; at += 4) block.writeUInt32LE((Math.imul(index, 2654435761) ^ at) >>> 0, at);
  block.writeUInt32LE(checksum(block.subarray(0, drillBlockBytes - 4)), drillBlockBytes - 4);
  return block;
}

export interface FoundWrite {
  readonly index: number;
  readonly volumeTag: number;
  readonly blockIndex: number;
}

/** Every intact drill block of `runId` in `image`; torn or foreign non-zero blocks are reported as problems. */
export function decodeDrillImage(image: Buffer, runId: number, volumeTag: number): { found: FoundWrite[]; problems: string[] } {
  const found: FoundWrite[] = [];
  const problems: string[] = [];
  for (let blockIndex = 0; blockIndex * drillBlockBytes < image.length; blockIndex++) {
    const block = image.subarray(blockIndex * drillBlockBytes, (blockIndex + 1) * drillBlockBytes);
    if (block.every((b) => b === 0)) continue;
    const where = `volume tag ${volumeTag} block ${blockIndex}`;
    if (!block.subarray(0, 8).equals(drillMagic)) {
      problems.push(`${where}: non-zero block without the drill magic`);
      continue;
    }
    if (block.readUInt32LE(drillBlockBytes - 4) !== checksum(block.subarray(0, drillBlockBytes - 4))) {
      problems.push(`${where}: torn or corrupt block (checksum mismatch)`);
      continue;
    }
    if (block.readUInt32LE(8) !== runId >>> 0) {
      problems.push(`${where}: block of another run ${block.readUInt32LE(8)}`);
      continue;
    }
    const write = { index: block.readUInt32LE(12), volumeTag: block.readUInt32LE(16), blockIndex: block.readUInt32LE(20) };
    if (write.volumeTag !== volumeTag || write.blockIndex !== blockIndex) {
      problems.push(`${where}: holds write ${write.index} meant for volume tag ${write.volumeTag} block ${write.blockIndex}`);
      continue;
    }
    found.push(write);
  }
  return { found, problems };
}

export interface PrefixVerdict {
  /** Writes 1..k all present. */
  readonly prefix: number;
  readonly present: number;
  readonly violations: string[];
}

/**
 * I1 on an image set: the writes present must be exactly 1..k for some k, with k at most
 * `acknowledged + inFlight` (the write in flight at the kill may or may not be there).
 * `describe(i)` names where write i lives, for messages.
 */
export function checkPrefix(found: readonly FoundWrite[], acknowledged: number, inFlight: number, describe: (index: number) => string): PrefixVerdict {
  const present = new Set<number>();
  const violations: string[] = [];
  for (const write of found) {
    if (present.has(write.index)) violations.push(`write ${write.index} found twice`);
    present.add(write.index);
  }
  let prefix = 0;
  while (present.has(prefix + 1)) prefix++;
  const beyond = [...present].filter((i) => i > prefix).sort((x, y) => x - y);
  if (beyond.length > 0) {
    const shown = beyond.slice(0, 5).map((i) => `write ${i} (${describe(i)})`).join(", ");
    violations.push(
      `I1 broken: ${beyond.length} write(s) present without earlier write ${prefix + 1} (${describe(prefix + 1)}), e.g. ${shown}` +
      ` (prefix 1..${prefix}, ${acknowledged} acknowledged)`,
    );
  }
  if (prefix > acknowledged + inFlight) {
    violations.push(`write ${prefix} present but only ${acknowledged} were acknowledged (+${inFlight} in flight): the secondary holds a write nobody sent`);
  }
  return { prefix, present: present.size, violations };
}

/** First differing offset of two images, or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const step = 64 * 1024;
  for (let at = 0; at < a.length; at += step) {
    const end = Math.min(at + step, a.length);
    if (a.subarray(at, end).equals(b.subarray(at, end))) continue;
    for (let i = at; i < end; i++) if (a[i] !== b[i]) return i;
  }
  return -1;
}

/** Asserts A's and B's exports of `volume` are byte for byte equal (B's is the reflected image). */
export async function assertSameImages(a: RunningNode, b: RunningNode, volume: string): Promise<void> {
  const [imageA, imageB] = await Promise.all([readExport(a, volume), readExport(b, volume)]);
  const at = firstDifference(imageA, imageB);
  assert.equal(at, -1, `volume ${volume}: A and B differ first at byte ${at} (block ${Math.floor(at / 4096)} of 4 KiB; A ${imageA.length} bytes, B ${imageB.length} bytes)`);
}

// ---------------------------------------------------------------------------------------------
// Filesystems on volumes whose node may be killed

export interface VolumeMount {
  readonly fuse: FuseMount;
  readonly dir: string;
  /** Clean: umount, losetup -d, fusermount3 -u. */
  unmount(): Promise<void>;
  /** After the NBD server died: umount -l, losetup -d, fusermount3 -uz, SIGKILL nbdfuse (aborts pending FUSE I/O). */
  crashUnmount(): Promise<void>;
}

async function loopDevicesOf(file: string): Promise<string[]> {
  const result = await run("losetup", ["-j", file], { timeoutMs: 10_000 });
  return result.stdout.split("\n").map((line) => line.split(":")[0] ?? "").filter((d) => d.startsWith("/dev/loop"));
}

/**
 * nbdfuse the export, then mount the ext4 in it on `dir` (created if missing) through an explicit
 * loop device, so a crash teardown can detach it. Registered for cleanup (crash-style, which is
 * also safe for a live node).
 */
export async function mountVolume(node: RunningNode, volume: string, dir: string, options: { readOnly?: boolean } = {}): Promise<VolumeMount> {
  const fuse = await nbdfuseMount(node.nbdUri(volume), { readOnly: options.readOnly });
  await fsp.mkdir(dir, { recursive: true });
  const loopArgs = ["-f", "--show", ...(options.readOnly === true ? ["-r"] : []), fuse.file];
  const attached = await run("losetup", loopArgs, { timeoutMs: 30_000 });
  if (attached.code !== 0) {
    await fuse.unmount();
    throw new Error(`losetup ${loopArgs.join(" ")}: ${attached.stderr.trim()}`);
  }
  const device = attached.stdout.trim();
  const mounted = await run("mount", [...(options.readOnly === true ? ["-o", "ro"] : []), device, dir], { timeoutMs: 60_000 });
  if (mounted.code !== 0) {
    await run("losetup", ["-d", device], { timeoutMs: 10_000 });
    await fuse.unmount();
    throw new Error(`mount ${device} ${dir}: ${mounted.stderr.trim()}`);
  }
  let done = false;
  const crashUnmount = async (): Promise<void> => {
    if (done) return;
    done = true;
    if (isMounted(dir)) await run("umount", ["-l", dir], { timeoutMs: 30_000 });
    await run("losetup", ["-d", device], { timeoutMs: 10_000 });
    if (isMounted(fuse.dir)) await run("fusermount3", ["-u", "-z", fuse.dir], { timeoutMs: 10_000 });
    killNbdfuse(fuse);
    await fuse.unmount().catch(() => undefined);
  };
  const handle = onCleanup(`crash-unmount ${dir}`, crashUnmount);
  return {
    fuse,
    dir,
    unmount: async () => {
      handle.release();
      if (done) return;
      done = true;
      const result = await run("umount", [dir], { timeoutMs: 60_000 });
      if (result.code !== 0) throw new Error(`umount ${dir}: ${result.stderr.trim()}`);
      for (const loop of await loopDevicesOf(fuse.file).catch(() => [device])) await run("losetup", ["-d", loop], { timeoutMs: 10_000 });
      await run("losetup", ["-d", device], { timeoutMs: 10_000 });
      await fuse.unmount();
    },
    crashUnmount: async () => {
      handle.release();
      await crashUnmount();
    },
  };
}

/** SIGKILLs our nbdfuse process, which aborts its FUSE connection (pending I/O fails instead of hanging). */
function killNbdfuse(fuse: FuseMount): void {
  try {
    if (fuse.pid > 0) process.kill(fuse.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Makes `dir` and its parents up to (not including) `/tmp` traversable by other users (postgres). */
export function openUpPath(dir: string): void {
  let current = path.resolve(dir);
  while (current !== "/" && current !== path.dirname(current) && current !== "/tmp") {
    try {
      fs.chmodSync(current, fs.statSync(current).mode | 0o755);
    } catch {
      // best effort
    }
    current = path.dirname(current);
  }
}

export { sleep, stopDaemon, tmpDir };
