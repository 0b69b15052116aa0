// Proves the host-protocol server and client over real TCP on 127.0.0.1 (port 0), against a small file-backed VolumeCatalog in a tmp dir: writes with and without write times reach the volume, read back, flush, pipelining, and every refusal (EPERM, range, ENOENT, bad version, garbage, oversized) answers or closes only the offending connection.
// And the connection accounting: a slot free the moment its connection is gone, HELLO past hostConnectionsMax answered EBUSY, the pool of connections before HELLO closing its oldest member so a real host always gets in, and the HELLO deadline.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { pino } from "pino";
import { startHostServer, type HostServer } from "../../src/frontends/host-server.ts";
import { HostClient, HostProtocolError } from "../../src/client/host-client.ts";
import { FileCatalog } from "./host-fixtures.ts";
import {
  FrameAssembler, HostOp, HostStatus, encodeHeader, encodeRequest, parseReply, replyPayloadBytesMax,
  type HostReply,
} from "../../src/protocol/host-protocol.ts";
import { hostConnectionsMax, hostHandshakesMax, hostHelloTimeoutMs, hostRequestBytesMax } from "../../src/core/limits.ts";

/** A raw connection speaking frames by hand, to send what the client library never would. */
class RawPeer {
  readonly socket: net.Socket;
  readonly #assembler = new FrameAssembler(replyPayloadBytesMax);
  readonly #replies: HostReply[] = [];
  #waiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  constructor(port: number) {
    this.socket = net.connect({ host: "127.0.0.1", port });
    this.socket.setNoDelay(true);
    this.socket.on("error", () => undefined);
    this.socket.on("data", (chunk: Buffer) => {
      this.#assembler.push(chunk);
      for (let event = this.#assembler.next(); event !== undefined; event = this.#assembler.next()) {
        assert.equal(event.kind, "frame", "the server sends well-formed frames");
        if (event.kind !== "frame") return;
        const parsed = parseReply(event.header, event.payload);
        assert.ok(parsed.ok, parsed.ok ? "" : parsed.detail);
        this.#replies.push(parsed.reply);
      }
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    });
    this.closed = new Promise((resolve) => this.socket.once("close", () => resolve()));
  }
  send(...buffers: Buffer[]): void {
    for (const b of buffers) this.socket.write(b);
  }
  async reply(): Promise<HostReply> {
    for (;;) {
      const next = this.#replies.shift();
      if (next !== undefined) return next;
      await Promise.race([new Promise<void>((resolve) => this.#waiters.push(resolve)), this.closed.then(() => { throw new Error("closed before a reply"); })]);
    }
  }
  async hello(versionMin = 1, versionMax = 1): Promise<HostReply> {
    this.send(...encodeRequest({ op: "hello", handle: 1n, versionMin, versionMax }));
    return this.reply();
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<HostProtocolError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HostProtocolError, `expected a HostProtocolError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail(`expected a rejection with ${code}`);
}

const sizeBytes = 1024 * 1024;

void describe("host protocol server and client over TCP", () => {
  let dir: string;
  let catalog: FileCatalog;
  let server: HostServer;
  const observed: { op: string; bytes: number; ok: boolean }[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-host-"));
    catalog = new FileCatalog();
    await catalog.add(dir, "data", sizeBytes, false);
    await catalog.add(dir, "log", sizeBytes, false);
    await catalog.add(dir, "replica", sizeBytes, true);
    server = await startHostServer({
      host: "127.0.0.1", port: 0, catalog, logger: pino({ level: "silent" }),
      onRequest: (op, bytes, _latency, ok) => observed.push({ op, bytes, ok }),
    });
  });

  after(async () => {
    await server.close();
    await catalog.closeFiles();
    await rm(dir, { recursive: true, force: true });
  });

  void it("writes with and without a write time, reads back, flushes", async () => {
    const client = await HostClient.connect({ host: "127.0.0.1", port: server.port });
    assert.equal(client.protocolVersion, 1);
    assert.equal(client.limits.requestBytesMax, hostRequestBytesMax);
    const vol = await client.open("data");
    assert.equal(vol.sizeBytes, sizeBytes);
    assert.equal(vol.readOnly, false);
    const a = Buffer.alloc(4096, 0xa1);
    const b = Buffer.alloc(512, 0xb2);
    const before = catalog.calls.length;
    await vol.write(0, a, { writeTimeUs: 1_700_000_000_000_000 });
    await vol.write(8192, b, { fua: true });
    await vol.flush();
    const calls = catalog.calls.slice(before);
    assert.deepEqual(calls.map((c) => [c.offsetBytes, c.lengthBytes, c.options.fua, c.options.hostWriteTimeUs]), [
      [0, 4096, false, 1_700_000_000_000_000],
      [8192, 512, true, undefined],
    ]);
    assert.deepEqual(await vol.read(0, 4096), a);
    assert.deepEqual(await vol.read(8192, 512), b);
    assert.deepEqual(await vol.read(4096, 16), Buffer.alloc(16));
    assert.deepEqual(await vol.read(sizeBytes - 1, 1), Buffer.alloc(1));
    assert.ok(observed.some((o) => o.op === "flush" && o.ok));
    assert.ok(observed.some((o) => o.op === "write" && o.bytes === 4096 && o.ok));
    assert.equal(server.connections(), 1);
    await client.close();
  });

  void it("pipelines many requests on one connection, across two volumes", async () => {
    const client = await HostClient.connect({ port: server.port });
    const data = await client.open("data");
    const log = await client.open("log");
    assert.notEqual(data.slot, log.slot);
    const count = 600; // more than the server's in-flight limit, so the client queues and the server pauses
    const writes: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const block = Buffer.alloc(1024, i & 0xff);
      block.writeUInt32LE(i, 0);
      writes.push((i % 2 === 0 ? data : log).write(i * 1024, block, { writeTimeUs: 1_000_000 + i }));
    }
    await Promise.all(writes);
    const reads = await Promise.all(Array.from({ length: count }, (_, i) => (i % 2 === 0 ? data : log).read(i * 1024, 1024)));
    reads.forEach((block, i) => {
      assert.equal(block.readUInt32LE(0), i);
      assert.equal(block[1023], i & 0xff);
    });
    await Promise.all([data.flush(), log.flush()]);
    await log.close();
    await rejectsWith(log.flush(), "EBADF");
    await client.close();
    await rejectsWith(data.flush(), "ESHUTDOWN");
  });

  void it("refuses writes to a read-only volume with EPERM, reads still work", async () => {
    const client = await HostClient.connect({ port: server.port });
    const replica = await client.open("replica");
    assert.equal(replica.readOnly, true);
    const error = await rejectsWith(replica.write(0, Buffer.alloc(512)), "EPERM");
    assert.equal(error.status, HostStatus.EPERM);
    assert.deepEqual(observed.at(-1), { op: "write", bytes: 0, ok: false }, "refused requests reach the metrics hook");
    assert.equal((await replica.read(0, 512)).length, 512);
    await client.close();
  });

  void it("refuses requests out of range, unknown volumes and bad arguments, and the connection keeps working", async () => {
    const client = await HostClient.connect({ port: server.port });
    const vol = await client.open("data");
    await rejectsWith(vol.write(sizeBytes - 100, Buffer.alloc(512)), "ENOSPC");
    await rejectsWith(vol.read(sizeBytes, 1), "EINVAL");
    await rejectsWith(vol.read(Number.MAX_SAFE_INTEGER - 10, 10), "EINVAL");
    await rejectsWith(client.open("no-such-volume"), "ENOENT");
    await rejectsWith(client.open(""), "EINVAL");
    await rejectsWith(client.open("x".repeat(65)), "ENAMETOOLONG");
    await rejectsWith(vol.write(0, Buffer.alloc(1), { writeTimeUs: 0 }), "EINVAL");
    await rejectsWith(vol.write(0, Buffer.alloc(hostRequestBytesMax + 1)), "EMSGSIZE");
    await vol.write(0, Buffer.from("still fine"));
    assert.equal((await vol.read(0, 10)).toString(), "still fine");
    await client.close();
  });

  void it("refuses more open volumes than a connection may hold", async () => {
    const client = await HostClient.connect({ port: server.port });
    const max = client.limits.volumesPerConnectionMax;
    for (let i = 0; i < max; i++) await client.open("data");
    await rejectsWith(client.open("data"), "EMFILE");
    await client.close();
  });

  void it("refuses a client whose versions the server does not speak, with a clear error, then closes", async () => {
    const peer = new RawPeer(server.port);
    const reply = await peer.hello(2, 3);
    assert.equal(reply.kind, "error");
    assert.equal(reply.kind === "error" ? reply.status : 0, HostStatus.EPROTO);
    assert.match(reply.kind === "error" ? reply.message : "", /offers 2\.\.3.*speaks 1\.\.1/);
    await peer.closed;
  });

  void it("refuses a request before HELLO with a fatal error frame", async () => {
    const peer = new RawPeer(server.port);
    peer.send(...encodeRequest({ op: "open", handle: 7n, name: "data" }));
    const reply = await peer.reply();
    assert.ok(reply.kind === "error" && reply.op === "fatal" && reply.status === HostStatus.EPROTO);
    await peer.closed;
  });

  void it("server-side checks the client never triggers: write time 0, bad flags, bad payload CRC, unknown op, bad slot", async () => {
    const peer = new RawPeer(server.port);
    assert.equal((await peer.hello()).kind, "ok");
    peer.send(...encodeRequest({ op: "open", handle: 2n, name: "data" }));
    const opened = await peer.reply();
    assert.ok(opened.kind === "ok" && opened.op === "open");
    const slot = opened.slot;
    const expectError = async (handle: bigint, status: number): Promise<void> => {
      const reply = await peer.reply();
      assert.equal(reply.handle, handle);
      assert.ok(reply.kind === "error", `handle ${handle} should fail`);
      assert.equal(reply.status, status, reply.message);
    };
    // WRITE with the write-time flag and a time of 0: parsed fine, refused by isValidHostWriteTimeUs.
    const [h1, p1] = encodeRequest({ op: "write", handle: 10n, slot, offsetBytes: 0, data: Buffer.alloc(8), fua: false, writeTimeUs: 0 });
    peer.send(h1!, p1!);
    await expectError(10n, HostStatus.EINVAL);
    // Corrupted payload under a good header CRC: EBADMSG, in step.
    const [h2, p2] = encodeRequest({ op: "write", handle: 11n, slot, offsetBytes: 0, data: Buffer.alloc(8, 1), fua: false, writeTimeUs: undefined });
    const flipped = Buffer.from(p2!);
    flipped.writeUInt8(flipped.readUInt8(3) ^ 0x40, 3);
    peer.send(h2!, flipped);
    await expectError(11n, HostStatus.EBADMSG);
    // Unknown op 0x33 with a sound header.
    peer.send(encodeHeader({ op: 0x33, flags: 0, status: 0, handle: 12n, slot: 0, payloadBytes: 0, offset: 0n, value: 0n, payloadCrc: 0 }));
    const unknown = await peer.reply();
    assert.ok(unknown.kind === "error" && unknown.op === "unknown" && unknown.status === HostStatus.EPROTO && unknown.handle === 12n);
    // Unknown op carrying a payload: its payload is skipped, the answer is the same.
    peer.send(encodeHeader({ op: 0x34, flags: 0, status: 0, handle: 17n, slot: 0, payloadBytes: 10, offset: 0n, value: 0n, payloadCrc: 0 }), Buffer.alloc(10, 0x34));
    const unknownWithPayload = await peer.reply();
    assert.ok(unknownWithPayload.kind === "error" && unknownWithPayload.op === "unknown" && unknownWithPayload.handle === 17n);
    // Flags not defined for FLUSH.
    peer.send(encodeHeader({ op: HostOp.flush, flags: 0x01, status: 0, handle: 13n, slot, payloadBytes: 0, offset: 0n, value: 0n, payloadCrc: 0 }));
    await expectError(13n, HostStatus.EINVAL);
    // A slot never opened.
    peer.send(...encodeRequest({ op: "read", handle: 14n, slot: slot + 100, offsetBytes: 0, lengthBytes: 1 }));
    await expectError(14n, HostStatus.EBADF);
    // A second HELLO.
    peer.send(...encodeRequest({ op: "hello", handle: 15n, versionMin: 1, versionMax: 1 }));
    await expectError(15n, HostStatus.EPROTO);
    // And the connection still serves.
    peer.send(...encodeRequest({ op: "flush", handle: 16n, slot }));
    const flushed = await peer.reply();
    assert.ok(flushed.kind === "ok" && flushed.handle === 16n);
    peer.socket.destroy();
  });

  void it("answers an oversized declared length with EMSGSIZE, skips the payload and stays in step", async () => {
    const peer = new RawPeer(server.port);
    assert.equal((await peer.hello()).kind, "ok");
    peer.send(...encodeRequest({ op: "open", handle: 2n, name: "data" }));
    const opened = await peer.reply();
    assert.ok(opened.kind === "ok" && opened.op === "open");
    const payloadBytes = hostRequestBytesMax + 4096;
    peer.send(encodeHeader({ op: HostOp.write, flags: 0, status: 0, handle: 20n, slot: opened.slot, payloadBytes, offset: 0n, value: 0n, payloadCrc: 0 }));
    const refused = await peer.reply(); // answered at the header, before the payload arrives
    assert.ok(refused.kind === "error" && refused.handle === 20n && refused.status === HostStatus.EMSGSIZE);
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    for (let sent = 0; sent < payloadBytes; sent += chunk.length) peer.send(chunk.subarray(0, Math.min(chunk.length, payloadBytes - sent)));
    peer.send(...encodeRequest({ op: "read", handle: 21n, slot: opened.slot, offsetBytes: 0, lengthBytes: 4 }));
    const read = await peer.reply();
    assert.ok(read.kind === "ok" && read.op === "read" && read.handle === 21n);
    assert.notDeepEqual(read.data, Buffer.alloc(4, 0x5a), "the skipped payload was never written");
    peer.socket.destroy();
  });

  void it("garbage bytes close only that connection while another keeps working", async () => {
    const good = await HostClient.connect({ port: server.port });
    const vol = await good.open("log");
    const bad = new RawPeer(server.port);
    assert.equal((await bad.hello()).kind, "ok");
    bad.send(Buffer.from("GET / HTTP/1.1\r\nHost: example\r\n\r\n".repeat(4)));
    const fatal = await bad.reply();
    assert.ok(fatal.kind === "error" && fatal.op === "fatal" && fatal.status === HostStatus.EPROTO);
    await bad.closed;
    // Garbage before any HELLO: closed as well.
    const rude = new RawPeer(server.port);
    rude.send(Buffer.alloc(100, 0xff));
    await rude.closed;
    await vol.write(0, Buffer.from("alive"), { writeTimeUs: 42 });
    assert.equal((await vol.read(0, 5)).toString(), "alive");
    assert.equal(server.connections(), 1);
    await good.close();
  });

  void it("the server answers every one of many more requests than its in-flight limit sent in one burst", async () => {
    const peer = new RawPeer(server.port);
    assert.equal((await peer.hello()).kind, "ok");
    peer.send(...encodeRequest({ op: "open", handle: 2n, name: "log" }));
    const opened = await peer.reply();
    assert.ok(opened.kind === "ok" && opened.op === "open");
    const count = 1000;
    const frames: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const handle = 1000n + BigInt(i);
      if (i % 2 === 0) frames.push(...encodeRequest({ op: "write", handle, slot: opened.slot, offsetBytes: i * 512, data: Buffer.alloc(512, i & 0xff), fua: false, writeTimeUs: 5_000_000 + i }));
      else frames.push(...encodeRequest({ op: "read", handle, slot: opened.slot, offsetBytes: 0, lengthBytes: 512 }));
    }
    peer.send(Buffer.concat(frames)); // one burst: the server must pause at its limit and resume
    const seen = new Set<bigint>();
    for (let i = 0; i < count; i++) {
      const reply = await peer.reply();
      assert.equal(reply.kind, "ok");
      seen.add(reply.handle);
    }
    assert.equal(seen.size, count);
    peer.socket.destroy();
  });

  void it("a client sees requests fail with ECONNRESET once its server stopped", async () => {
    const second = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: pino({ level: "silent" }) });
    const client = await HostClient.connect({ port: second.port });
    const vol = await client.open("data");
    await vol.write(0, Buffer.alloc(4096, 3));
    await second.close(); // finishes what is in flight, then closes every connection
    await rejectsWith(vol.read(0, 1), "ECONNRESET");
    await client.close();
  });

  void it("the client reports a closed client and a port where nobody listens", async () => {
    const client = await HostClient.connect({ port: server.port });
    const vol = await client.open("data");
    const idle = net.createServer();
    await new Promise<void>((resolve) => idle.listen(0, "127.0.0.1", resolve));
    const address = idle.address();
    assert.ok(address !== null && typeof address === "object");
    await new Promise<void>((resolve) => idle.close(() => resolve()));
    await rejectsWith(HostClient.connect({ port: address.port }), "ECONNREFUSED");
    await client.close();
    await rejectsWith(vol.read(0, 1), "ESHUTDOWN");
  });

  void it("the client times out on a peer that never answers HELLO", async () => {
    const silent = net.createServer((socket) => socket.on("error", () => undefined).resume()); // reads (and drops) HELLO, never answers
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const address = silent.address();
    assert.ok(address !== null && typeof address === "object");
    await rejectsWith(HostClient.connect({ port: address.port, connectTimeoutMs: 200 }), "ETIMEDOUT");
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });
});

function show(reply: HostReply): string {
  return JSON.stringify(reply, (_key, value: unknown) => typeof value === "bigint" ? String(value) : value);
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

void describe("host protocol server: connection slots, the pool before HELLO, the HELLO deadline", () => {
  let dir: string;
  let catalog: FileCatalog;
  const quiet = pino({ level: "silent" });

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-host-slots-"));
    catalog = new FileCatalog();
    await catalog.add(dir, "data", sizeBytes, false);
  });

  after(async () => {
    await catalog.closeFiles();
    await rm(dir, { recursive: true, force: true });
  });

  void it("a slot is free the moment its connection is gone", async () => {
    const server = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: quiet });
    try {
      for (let i = 0; i < 20; i++) {
        const client = await HostClient.connect({ port: server.port });
        await (await client.open("data")).read(0, 4096);
        await client.close();
      }
      const reset = new RawPeer(server.port);
      assert.equal((await reset.hello()).kind, "ok");
      reset.socket.resetAndDestroy();
      await until(() => server.connections() === 0, "every slot to be free", 1_000);
    } finally {
      await server.close();
    }
  });

  void it("HELLO past hostConnectionsMax is answered EBUSY and closed; a freed slot serves the next host", async () => {
    const server = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: quiet });
    const clients: HostClient[] = [];
    try {
      for (let i = 0; i < hostConnectionsMax; i++) clients.push(await HostClient.connect({ port: server.port }));
      assert.deepEqual([server.connections(), server.handshakes()], [hostConnectionsMax, 0]);
      const refused = await rejectsWith(HostClient.connect({ port: server.port }), "EBUSY");
      assert.match(refused.message, new RegExp(`at most ${hostConnectionsMax}`));
      await clients.pop()!.close();
      const next = await HostClient.connect({ port: server.port });
      assert.equal((await (await next.open("data")).read(0, 16)).length, 16);
      clients.push(next);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await server.close();
    }
  });

  void it("a full pool of connections before HELLO closes its oldest one (FATAL EBUSY), so a real host always gets in", async () => {
    const server = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: quiet });
    const silent: RawPeer[] = [];
    try {
      for (let i = 0; i < hostHandshakesMax + 5; i++) {
        const peer = new RawPeer(server.port);
        await new Promise<void>((resolve) => peer.socket.once("connect", () => resolve()));
        silent.push(peer);
      }
      await until(() => server.connections() === hostHandshakesMax, "the pool to fill");
      for (const peer of silent.slice(0, 5)) {
        const fatal = await peer.reply();
        assert.ok(fatal.kind === "error" && fatal.op === "fatal" && fatal.status === HostStatus.EBUSY, show(fatal));
        await peer.closed;
      }
      const client = await HostClient.connect({ port: server.port });
      assert.equal((await (await client.open("data")).read(0, 16)).length, 16, "a real host gets in with the pool full");
      await silent[5]!.closed; // by closing the oldest silent connection
      assert.equal(server.handshakes(), hostHandshakesMax - 1);
      await client.close();
    } finally {
      for (const peer of silent) peer.socket.destroy();
      await server.close();
    }
  });

  void it("a connection that sends no HELLO is closed at the deadline with FATAL ETIMEDOUT", async () => {
    const server = await startHostServer({ host: "127.0.0.1", port: 0, catalog, logger: quiet });
    try {
      const peer = new RawPeer(server.port);
      const openedMs = performance.now();
      const fatal = await peer.reply();
      assert.ok(fatal.kind === "error" && fatal.status === HostStatus.ETIMEDOUT, show(fatal));
      assert.ok(performance.now() - openedMs >= hostHelloTimeoutMs * 0.9, "not before the deadline");
      await peer.closed;
      await until(() => server.connections() === 0, "its slot to be free");
    } finally {
      await server.close();
    }
  });
});
