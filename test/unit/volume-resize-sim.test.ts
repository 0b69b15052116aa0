// Proves a volume resize is crash-safe at every point, over the simulated disk
// (test/sim/sim-disk.ts) through the real node: TidemarkNode, its VolumeRegistry, VolumeFile and
// written map, and for a grouped volume its GroupWriter and journal (the resize record). A
// resize is started, then the machine loses power (or the process dies) after 0, 1, 2 ... events
// of the simulation, which puts the crash between every two steps of the grow: the file
// extended, the journal's resize record durable, node.json saved, the map grown. The node then
// starts again on what the disk kept: it must start, the volume must have its old size or the
// new one (the new one whenever the resize was answered, and whenever the journal kept the
// record: the journal is the truth, the replay grows it and saves node.json), the FUA data
// written before must be there, and a write past the old end must work once the size is new.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { TidemarkNode } from "../../src/node/node.ts";
import { writtenMapExtentBytes } from "../../src/core/limits.ts";
import { Prng } from "../sim/prng.ts";
import { SimScheduler } from "../sim/scheduler.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { SimDisk } from "../sim/sim-disk.ts";
import { SimNetwork, type Incarnation } from "../sim/sim-network.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const oldBytes = 2 * MiB;
const newBytes = 6 * MiB;

class Machine {
  readonly scheduler = new SimScheduler();
  readonly disk: SimDisk;
  private readonly network: SimNetwork;
  private clock: SimClock | undefined;
  private incarnation: Incarnation = { dead: true };
  node: TidemarkNode | undefined;

  constructor(seed: number) {
    this.disk = new SimDisk({ seed, schedule: (delayMs, fn) => this.scheduler.schedule(delayMs, fn) });
    this.network = new SimNetwork(this.scheduler, new Prng(seed), { delayMsMin: 0.1, delayMsMax: 1, splitRate: 0 });
  }

  async start(): Promise<TidemarkNode> {
    this.incarnation = { dead: false };
    this.clock = new SimClock(this.scheduler);
    const at = (port: number): { host: string; port: number } => ({ host: "m", port });
    const node = new TidemarkNode({
      id: "m", dataDir: "/srv/m", mgmt: at(7480), nbd: at(10809), host: at(7410), repl: at(7400), writeTimePolicy: "counter",
      logger: pino({ level: "silent" }), clock: this.clock, transport: this.network.transportFor("m", this.incarnation),
      fileSystem: this.disk.mount(), serve: "replication",
    });
    this.node = node;
    await this.settle(node.start());
    return node;
  }

  /** Runs the simulation until `promise` settles (its value, or its error thrown). */
  async settle<T>(promise: Promise<T>, simMsMax = 120_000): Promise<T> {
    let done = false;
    const watched = promise.finally(() => {
      done = true;
    });
    watched.catch(() => undefined);
    const untilMs = this.scheduler.nowMs + simMsMax;
    while (!done && this.scheduler.nowMs < untilMs) await this.scheduler.runFor(5, () => done);
    assert.ok(done, "settled within the simulated time");
    return watched;
  }

  crash(kind: "process" | "power"): void {
    this.incarnation.dead = true;
    this.clock?.stopAll();
    this.network.nodeDown("m", kind);
    this.disk.crash(kind);
    this.node = undefined;
  }
}

/** Bytes written with FUA at the start, and past the old end once grown. */
const before = Buffer.alloc(64 * KiB, 0x5a);
const past = Buffer.alloc(64 * KiB, 0xa5);

async function crashDuringResize(seed: number, grouped: boolean, kind: "process" | "power", crashAfterEvents: number): Promise<{ answered: boolean; sizeAfter: number }> {
  const machine = new Machine(seed);
  const node = await machine.start();
  await machine.settle(node.createVolume("v", oldBytes));
  if (grouped) await machine.settle(node.createGroup("g", ["v"]));
  const handle = node.catalog().open("v");
  assert.ok(handle !== undefined);
  await machine.settle(handle.write(oldBytes - before.length, before, { fua: true }));

  let answered = false;
  const resizing = node.resizeVolume("v", newBytes).then(() => {
    answered = true;
  });
  resizing.catch(() => undefined);
  const stopAt = machine.scheduler.eventsRun + crashAfterEvents;
  await machine.scheduler.runUntilStopped(() => answered || machine.scheduler.eventsRun >= stopAt);
  machine.crash(kind);

  const again = await machine.start();
  const volume = again.listVolumes().find((v) => v.name === "v");
  assert.ok(volume !== undefined, "the volume is there after the restart");
  const sizeAfter = volume.sizeBytes;
  assert.ok(sizeAfter === oldBytes || sizeAfter === newBytes, `size ${sizeAfter} is the old or the new one`);
  if (answered) assert.equal(sizeAfter, newBytes, "an answered resize survives the crash");
  // The written map was grown, not set aside as untrusted (which would mark every extent).
  assert.equal(volume.writtenBytes, writtenMapExtentBytes, "the written map marks the one extent written, at either size");
  const reopened = again.catalog().open("v");
  assert.ok(reopened !== undefined);
  assert.equal(reopened.sizeBytes, sizeAfter, "exported at the size node.json says");
  assert.ok((await machine.settle(reopened.read(oldBytes - before.length, before.length))).equals(before), "FUA data before the resize is kept");
  if (sizeAfter === newBytes) {
    assert.ok((await machine.settle(reopened.read(oldBytes, newBytes - oldBytes))).equals(Buffer.alloc(newBytes - oldBytes)), "the grown part reads as zeroes");
    await machine.settle(reopened.write(newBytes - past.length, past, { fua: true }));
    assert.ok((await machine.settle(reopened.read(newBytes - past.length, past.length))).equals(past), "a write past the old end works");
  } else {
    // The resize did not survive: asking again grows it, from whatever the crash left.
    await machine.settle(again.resizeVolume("v", newBytes));
    assert.equal(again.listVolumes().find((v) => v.name === "v")?.sizeBytes, newBytes);
  }
  // The size holds across a clean stop and start too (node.json, file and written map agree).
  await machine.settle(again.stop());
  const third = await machine.start();
  assert.equal(third.listVolumes().find((v) => v.name === "v")?.sizeBytes, newBytes);
  await machine.settle(third.stop());
  return { answered, sizeAfter };
}

for (const grouped of [false, true]) {
  void test(`resize of a volume ${grouped ? "in a group (the journal's resize record)" : "in no group"}: a crash at every point leaves the old or the new size, never a node that cannot start`, async () => {
    const outcomes = new Set<string>();
    for (const kind of ["power", "process"] as const) {
      for (let events = 0; events <= 60; events += 1) {
        const seed = 1000 + events * 7 + (grouped ? 1 : 0);
        const { answered, sizeAfter } = await crashDuringResize(seed, grouped, kind, events);
        outcomes.add(`${answered ? "answered" : "unanswered"}:${sizeAfter === newBytes ? "new" : "old"}`);
        if (answered) break; // later crash points are after the answer
      }
    }
    // The crash points covered both sides: before anything was durable and after the answer.
    assert.ok(outcomes.has("unanswered:old"), [...outcomes].join(", "));
    assert.ok(outcomes.has("answered:new"), [...outcomes].join(", "));
    // In a group, a crash after the resize record was durable and before the answer: the journal
    // is the truth, its replay grows the volume and saves node.json.
    if (grouped) assert.ok(outcomes.has("unanswered:new"), [...outcomes].join(", "));
  });
}
