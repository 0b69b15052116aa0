// Proves the NBD server over real TCP on 127.0.0.1 with a real file-backed catalog, using a
// hand-written raw-socket client: every handshake path, reads and writes landing in the file,
// errno mapping, read-only EPERM with drained payloads, pipelining with out-of-order replies,
// the in-flight limit (pause/resume), DISC, bad magic and garbage closing only their own
// connection, a clean close(); and connection accounting under churn: a slot free the moment its
// connection is gone, the transmission limit answered with ERR_POLICY, the handshake pool that
// closes its oldest member so a real client gets in, the handshake deadline, replies to a peer
// that never reads dropped with it, every pooled buffer back and given back to the system.
import { VolumeIoError } from "../../src/core/errors.ts";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  nbdBufferIdleReleaseMs, nbdCloseLingerMs, nbdConnectionsMax, nbdHandshakeTimeoutMs, nbdHandshakesMax, nbdRequestBytesMax,
  nbdRequestsInFlightMax,
} from "../../src/core/limits.ts";
import { type VolumeCatalog, type VolumeHandle } from "../../src/core/volume-io.ts";
import type { NbdOp, NbdServer } from "../../src/frontends/nbd-server.ts";
import { ClientFlag, Cmd, CmdFlag, Info, NbdErrno, Opt, Rep, TransmissionFlag } from "../../src/protocol/nbd/constants.ts";
import { decodeOptionReplyHeader, encodeInfoRequest, encodeOption } from "../../src/protocol/nbd/handshake.ts";
import { decodeSimpleReplyHeader, encodeRequestHeader } from "../../src/protocol/nbd/transmission.ts";
import { fileCatalog, RawClient, serve, type FileCatalog } from "./nbd-fixtures.ts";

const MiB = 1024 * 1024;

async function greet(port: number, flags = ClientFlag.fixedNewstyle | ClientFlag.noZeroes): Promise<RawClient> {
  const c = await RawClient.connect(port);
  const greeting = await c.read(18);
  assert.equal(greeting.subarray(0, 16).toString("latin1"), "NBDMAGICIHAVEOPT");
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags);
  c.send(b);
  return c;
}

interface OptReply { option: number; replyType: number; data: Buffer }

async function readOptReply(c: RawClient): Promise<OptReply> {
  const h = decodeOptionReplyHeader(await c.read(20));
  assert.ok(h.ok, "option reply magic");
  return { option: h.header.option, replyType: h.header.replyType, data: await c.read(h.header.lengthBytes) };
}

/** Reads option replies up to and including the final one (ACK or an error). */
async function readOptReplies(c: RawClient): Promise<OptReply[]> {
  const out: OptReply[] = [];
  for (;;) {
    const r = await readOptReply(c);
    out.push(r);
    if (r.replyType !== Rep.info && r.replyType !== Rep.server) return out;
  }
}

async function attach(port: number, name: string): Promise<{ c: RawClient; flags: number }> {
  const c = await greet(port);
  c.send(encodeOption(Opt.go, encodeInfoRequest({ name, infos: [Info.blockSize] })));
  const replies = await readOptReplies(c);
  assert.equal(replies.at(-1)?.replyType, Rep.ack, `GO ${name} acknowledged`);
  const exportInfo = replies.find((r) => r.data.readUInt16BE(0) === Info.export);
  assert.ok(exportInfo);
  return { c, flags: exportInfo.data.readUInt16BE(10) };
}

let cookies = 1;
function request(type: number, offsetBytes: number, lengthBytes: number, flags = 0, payload?: Buffer): { bytes: Buffer; cookie: number } {
  const cookie = cookies++;
  const header = encodeRequestHeader({ flags, type, cookieHi: 0xc0ffee, cookieLo: cookie, offsetBytes, lengthBytes });
  return { bytes: payload === undefined ? header : Buffer.concat([header, payload]), cookie };
}

async function readReply(c: RawClient): Promise<{ errno: number; cookie: number }> {
  const r = decodeSimpleReplyHeader(await c.read(16));
  assert.ok(r.ok, "simple reply magic");
  assert.equal(r.cookieHi, 0xc0ffee);
  return { errno: r.errno, cookie: r.cookieLo };
}

async function call(c: RawClient, type: number, offsetBytes: number, lengthBytes: number, flags = 0, payload?: Buffer): Promise<{ errno: number; data?: Buffer }> {
  const r = request(type, offsetBytes, lengthBytes, flags, payload);
  c.send(r.bytes);
  const reply = await readReply(c);
  assert.equal(reply.cookie, r.cookie);
  if (type === Cmd.read && reply.errno === 0) return { errno: 0, data: await c.read(lengthBytes) };
  return { errno: reply.errno };
}

async function fileBytes(cat: FileCatalog, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const out = Buffer.alloc(lengthBytes);
  await cat.volumes.get(name)!.file.read(out, 0, lengthBytes, offsetBytes);
  return out;
}

void describe("NBD server over TCP", () => {
  let cat: FileCatalog;
  let server: NbdServer;
  const seen: { op: NbdOp; bytes: number; errno: number }[] = [];

  before(async () => {
    cat = await fileCatalog([
      { name: "vol", sizeBytes: 4 * MiB },
      { name: "ro", sizeBytes: MiB, readOnly: true },
    ]);
    server = await serve(cat, { onRequest: (op, bytes, latencySeconds, errno) => {
      assert.ok(latencySeconds >= 0);
      seen.push({ op, bytes, errno });
    } });
  });
  after(async () => {
    await server.close();
    await cat.cleanup();
  });

  void it("GO enters transmission with the served flags", async () => {
    const { c, flags } = await attach(server.port, "vol");
    const expected = TransmissionFlag.hasFlags | TransmissionFlag.sendFlush | TransmissionFlag.sendFua |
      TransmissionFlag.sendTrim | TransmissionFlag.sendWriteZeroes | TransmissionFlag.canMultiConn;
    assert.equal(flags, expected);
    c.destroy();
  });

  void it("INFO, LIST, unknown option and unknown export answer and keep negotiating; ABORT acks and closes", async () => {
    const c = await greet(server.port);
    c.send(encodeOption(Opt.info, encodeInfoRequest({ name: "ro", infos: [Info.name] })));
    const info = await readOptReplies(c);
    assert.deepEqual(info.map((r) => r.replyType), [Rep.info, Rep.info, Rep.info, Rep.ack]);
    assert.ok(info[0]!.data.readUInt16BE(10) & TransmissionFlag.readOnly);
    c.send(encodeOption(Opt.list));
    const list = await readOptReplies(c);
    assert.deepEqual(list.map((r) => r.replyType), [Rep.server, Rep.server, Rep.ack]);
    c.send(encodeOption(Opt.structuredReply));
    assert.equal((await readOptReply(c)).replyType, Rep.errUnsup);
    c.send(encodeOption(12345, Buffer.alloc(1000, 7)));
    assert.equal((await readOptReply(c)).replyType, Rep.errUnsup);
    c.send(encodeOption(Opt.go, encodeInfoRequest({ name: "missing", infos: [] })));
    const unknown = await readOptReply(c);
    assert.equal(unknown.replyType, Rep.errUnknown);
    assert.match(unknown.data.toString(), /missing/);
    c.send(encodeOption(Opt.go, encodeInfoRequest({ name: "", infos: [] })));
    assert.equal((await readOptReply(c)).replyType, Rep.errUnknown, "no default export with two exports");
    c.send(encodeOption(Opt.abort));
    const ack = await readOptReply(c);
    assert.deepEqual([ack.option, ack.replyType], [Opt.abort, Rep.ack]);
    assert.ok(await c.closedByServer());
  });

  void it("EXPORT_NAME answers size and flags, with and without the 124 zeroes", async () => {
    for (const [clientFlags, bytes] of [[ClientFlag.fixedNewstyle | ClientFlag.noZeroes, 10], [ClientFlag.fixedNewstyle, 134]] as const) {
      const c = await greet(server.port, clientFlags);
      c.send(encodeOption(Opt.exportName, Buffer.from("vol")));
      const reply = await c.read(bytes);
      assert.equal(reply.readUInt32BE(4), 4 * MiB);
      const r = await call(c, Cmd.read, 0, 512);
      assert.equal(r.errno, 0);
      c.destroy();
    }
    const bad = await greet(server.port);
    bad.send(encodeOption(Opt.exportName, Buffer.from("nope")));
    assert.ok(await bad.closedByServer(), "unknown export by EXPORT_NAME closes");
  });

  void it("writes land in the file; reads, FUA, FLUSH, TRIM and WRITE_ZEROES work", async () => {
    const { c } = await attach(server.port, "vol");
    const data = randomBytes(64 * 1024);
    assert.equal((await call(c, Cmd.write, 12345, data.length, CmdFlag.fua, data)).errno, 0);
    assert.deepEqual(await fileBytes(cat, "vol", 12345, data.length), data);
    assert.deepEqual((await call(c, Cmd.read, 12345, data.length)).data, data);
    assert.equal((await call(c, Cmd.flush, 0, 0)).errno, 0);
    assert.equal((await call(c, Cmd.writeZeroes, 12345, 100, CmdFlag.noHole)).errno, 0);
    assert.equal((await call(c, Cmd.trim, 12345 + 100, 100, CmdFlag.fua)).errno, 0);
    const after = await fileBytes(cat, "vol", 12345, data.length);
    assert.ok(after.subarray(0, 200).every((b) => b === 0));
    assert.deepEqual(after.subarray(200), data.subarray(200));
    // the last byte of the volume, and a single byte
    assert.equal((await call(c, Cmd.write, 4 * MiB - 1, 1, 0, Buffer.from([0x5a]))).errno, 0);
    assert.deepEqual((await call(c, Cmd.read, 4 * MiB - 1, 1)).data, Buffer.from([0x5a]));
    c.destroy();
  });

  void it("out-of-range, zero-length, oversized-read and unknown requests get errnos, and the stream stays in step", async () => {
    const { c } = await attach(server.port, "vol");
    const size = 4 * MiB;
    assert.equal((await call(c, Cmd.read, size - 1, 2)).errno, NbdErrno.einval);
    assert.equal((await call(c, Cmd.read, 0, 0)).errno, NbdErrno.einval);
    assert.equal((await call(c, Cmd.read, 0, nbdRequestBytesMax + 1)).errno, NbdErrno.einval);
    assert.equal((await call(c, Cmd.write, size - 2, 4, 0, Buffer.from("abcd"))).errno, NbdErrno.enospc, "payload drained");
    assert.equal((await call(c, Cmd.write, 2 ** 52, 4, 0, Buffer.from("abcd"))).errno, NbdErrno.enospc);
    assert.equal((await call(c, Cmd.trim, size, 1)).errno, NbdErrno.einval);
    assert.equal((await call(c, Cmd.writeZeroes, 0, size + 1)).errno, NbdErrno.enospc);
    assert.equal((await call(c, Cmd.blockStatus, 0, 512)).errno, NbdErrno.einval);
    assert.equal((await call(c, 200, 0, 512)).errno, NbdErrno.einval);
    assert.equal((await call(c, Cmd.write, 0, 4, CmdFlag.df, Buffer.from("wxyz"))).errno, NbdErrno.einval, "bad flag, payload drained");
    assert.equal((await call(c, Cmd.read, 0, 4)).errno, 0, "still in step");
    c.destroy();
  });

  void it("a read-only export refuses writes with EPERM and drains their payloads", async () => {
    const { c, flags } = await attach(server.port, "ro");
    assert.ok(flags & TransmissionFlag.readOnly);
    const big = randomBytes(3 * MiB);
    assert.equal((await call(c, Cmd.write, 0, MiB, 0, big.subarray(0, MiB))).errno, NbdErrno.eperm);
    assert.equal((await call(c, Cmd.writeZeroes, 0, 512)).errno, NbdErrno.eperm);
    assert.equal((await call(c, Cmd.trim, 0, 512)).errno, NbdErrno.eperm);
    assert.equal((await call(c, Cmd.read, 0, 512)).errno, 0);
    assert.equal((await call(c, Cmd.flush, 0, 0)).errno, 0);
    assert.ok((await fileBytes(cat, "ro", 0, MiB)).every((b) => b === 0), "nothing was written");
    c.destroy();
  });

  void it("VolumeIoError codes map to NBD errnos; other failures answer EIO", async () => {
    const { c } = await attach(server.port, "vol");
    const vol = cat.volumes.get("vol")!;
    const codes = [["EINVAL", 22], ["EPERM", 1], ["ENOSPC", 28], ["EIO", 5], ["ESHUTDOWN", 108]] as const;
    for (const [code, errno] of codes) {
      vol.failNext = new VolumeIoError(code, "injected");
      assert.equal((await call(c, Cmd.write, 0, 4, 0, Buffer.from("abcd"))).errno, errno, code);
    }
    vol.failNext = new Error("not a VolumeIoError") as VolumeIoError;
    assert.equal((await call(c, Cmd.read, 0, 4)).errno, NbdErrno.eio);
    assert.equal((await call(c, Cmd.read, 0, 4)).errno, 0);
    c.destroy();
  });

  void it("pipelined large and small writes and reads in one send: bytes land exactly, replies never interleave", async () => {
    // Large payloads are read straight into their own buffers, small ones are views of the
    // receive slab, and replies share reply slabs: this mixes all of them in one stream.
    const { c } = await attach(server.port, "vol");
    const sizes = [MiB, 4096, 300 * 1024, 1, 65536, 65537, MiB - 1, 512, MiB - 7];
    let offset = 0;
    const writes = sizes.map((size) => {
      const w = { offset, data: randomBytes(size) };
      offset += size;
      return w;
    });
    assert.ok(offset <= 4 * MiB);
    const sent = writes.map((w) => request(Cmd.write, w.offset, w.data.length, 0, w.data));
    const reads = writes.map((w) => request(Cmd.read, w.offset, w.data.length));
    c.send(Buffer.concat(sent.map((s) => s.bytes)));
    for (let i = 0; i < sent.length; i++) assert.equal((await readReply(c)).errno, 0);
    for (const w of writes) assert.deepEqual(await fileBytes(cat, "vol", w.offset, w.data.length), w.data);
    // Again with new data, one at a time: payload buffers of finished writes are reused, and
    // every write still lands exactly (nothing of a reused buffer leaks into another write).
    const first = writes.map((w) => ({ ...w }));
    for (const w of writes) {
      w.data = randomBytes(w.data.length);
      assert.equal((await call(c, Cmd.write, w.offset, w.data.length, 0, w.data)).errno, 0);
    }
    for (const [i, w] of writes.entries()) {
      assert.deepEqual(await fileBytes(cat, "vol", w.offset, w.data.length), w.data);
      if (w.data.length > 16) assert.notDeepEqual(w.data, first[i]!.data, "the second round wrote new bytes");
    }
    c.send(Buffer.concat(reads.map((r) => r.bytes)));
    const byCookie = new Map(reads.map((r, i) => [r.cookie, writes[i]!.data]));
    for (let i = 0; i < reads.length; i++) {
      const r = await readReply(c);
      assert.equal(r.errno, 0);
      const expected = byCookie.get(r.cookie)!;
      assert.deepEqual(await c.read(expected.length), expected, "data follows its own header");
    }
    c.destroy();
  });

  void it("serves pipelined requests sent in one write, each reply with its cookie", async () => {
    const { c } = await attach(server.port, "vol");
    const writes = Array.from({ length: 100 }, (_, i) => ({ offset: 2 * MiB + i * 4096, data: randomBytes(4096) }));
    const sent = writes.map((w) => request(Cmd.write, w.offset, 4096, 0, w.data));
    c.send(Buffer.concat(sent.map((s) => s.bytes)));
    const got = new Set<number>();
    for (let i = 0; i < sent.length; i++) {
      const r = await readReply(c);
      assert.equal(r.errno, 0);
      got.add(r.cookie);
    }
    assert.deepEqual(got, new Set(sent.map((s) => s.cookie)));
    const reads = writes.map((w) => request(Cmd.read, w.offset, 4096));
    c.send(Buffer.concat(reads.map((r) => r.bytes)));
    const byCookie = new Map(reads.map((r, i) => [r.cookie, writes[i]!.data]));
    for (let i = 0; i < reads.length; i++) {
      const r = await readReply(c);
      assert.equal(r.errno, 0);
      assert.deepEqual(await c.read(4096), byCookie.get(r.cookie), "data follows its own header, never interleaved");
    }
    c.destroy();
  });

  void it("bad magic closes only that connection; another keeps working", async () => {
    const a = await attach(server.port, "vol");
    const b = await attach(server.port, "vol");
    const bad = request(Cmd.read, 0, 512).bytes;
    bad.writeUInt32BE(0xdeadbeef, 0);
    a.c.send(bad);
    assert.ok(await a.c.closedByServer());
    assert.equal((await call(b.c, Cmd.read, 0, 512)).errno, 0);
    b.c.destroy();
  });

  void it("garbage after the handshake, or instead of it, closes that connection and nothing else", async () => {
    const ok = await attach(server.port, "vol");
    for (let i = 0; i < 5; i++) {
      const { c } = await attach(server.port, "vol");
      c.send(randomBytes(5000));
      assert.ok(await c.closedByServer());
      const raw = await RawClient.connect(server.port);
      raw.send(randomBytes(300));
      assert.ok(await raw.closedByServer());
    }
    assert.equal((await call(ok.c, Cmd.read, 0, 512)).errno, 0);
    ok.c.destroy();
  });

  void it("a WRITE longer than the maximum payload closes the connection", async () => {
    const { c } = await attach(server.port, "vol");
    c.send(request(Cmd.write, 0, nbdRequestBytesMax + 1).bytes);
    assert.ok(await c.closedByServer());
  });

  void it("an option past the size limit gets an error and a close", async () => {
    const c = await greet(server.port);
    const header = encodeOption(Opt.go).subarray(0, 16);
    header.writeUInt32BE(0x7fff_ffff, 12);
    c.send(header);
    assert.equal((await readOptReply(c)).replyType, Rep.errTooBig);
    assert.ok(await c.closedByServer());
  });

  void it("DISC waits for requests in flight, then closes", async () => {
    const { c } = await attach(server.port, "vol");
    const w = request(Cmd.write, 0, MiB, CmdFlag.fua, randomBytes(MiB));
    c.send(Buffer.concat([w.bytes, request(Cmd.disc, 0, 0).bytes, request(Cmd.read, 0, 1).bytes]));
    const r = await readReply(c);
    assert.deepEqual(r, { errno: 0, cookie: w.cookie });
    assert.ok(await c.closedByServer());
  });

  void it("reports every request to onRequest", () => {
    const ops = new Set(seen.map((s) => s.op));
    for (const op of ["read", "write", "flush", "trim", "write_zeroes"] as const) assert.ok(ops.has(op), op);
    assert.ok(seen.some((s) => s.op === "write" && s.errno === NbdErrno.eperm && s.bytes === 0));
    assert.ok(seen.some((s) => s.op === "write" && s.errno === 0 && s.bytes === 64 * 1024));
  });
});

/** A catalog whose reads wait at a gate, to hold requests in flight. */
function gatedCatalog(inner: FileCatalog): { catalog: VolumeCatalog; open(): void; active(): number; maxActive(): number } {
  let release: () => void = () => undefined;
  let gate = new Promise<void>((resolve) => { release = resolve; });
  let active = 0;
  let maxActive = 0;
  const wrap = (h: VolumeHandle): VolumeHandle => ({
    name: h.name, sizeBytes: h.sizeBytes, readOnly: h.readOnly,
    async read(offsetBytes, lengthBytes, into) {
      active++;
      maxActive = Math.max(maxActive, active);
      await gate;
      active--;
      return h.read(offsetBytes, lengthBytes, into);
    },
    write: (o, d, opt) => h.write(o, d, opt),
    writeZeroes: (o, l, opt) => h.writeZeroes(o, l, opt),
    trim: (o, l, opt) => h.trim(o, l, opt),
    flush: () => h.flush(),
    release: () => h.release(),
  });
  return {
    catalog: { open: (name) => { const h = inner.open(name); return h === undefined ? undefined : wrap(h); }, list: () => inner.list() },
    open() {
      release();
      gate = new Promise<void>((resolve) => { release = resolve; });
    },
    active: () => active,
    maxActive: () => maxActive,
  };
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

void describe("NBD server limits", () => {
  void it("stops reading at nbdRequestsInFlightMax and resumes as replies drain", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const gated = gatedCatalog(cat);
    const server = await serve(gated.catalog);
    try {
      const { c } = await attach(server.port, "vol");
      const total = nbdRequestsInFlightMax + 50;
      const reqs = Array.from({ length: total }, (_, i) => request(Cmd.read, (i * 512) % MiB, 512));
      c.send(Buffer.concat(reqs.map((r) => r.bytes)));
      await until(() => gated.active() === nbdRequestsInFlightMax, "the in-flight limit to fill");
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(gated.active(), nbdRequestsInFlightMax, "no request past the limit started");
      gated.open();
      const got = new Set<number>();
      for (let i = 0; i < nbdRequestsInFlightMax; i++) {
        const r = await readReply(c);
        assert.equal(r.errno, 0);
        await c.read(512);
        got.add(r.cookie);
      }
      await until(() => gated.active() === total - nbdRequestsInFlightMax, "the rest to start after resuming");
      gated.open();
      for (let i = nbdRequestsInFlightMax; i < total; i++) {
        const r = await readReply(c);
        await c.read(512);
        got.add(r.cookie);
      }
      assert.equal(got.size, total);
      assert.equal(gated.maxActive(), nbdRequestsInFlightMax);
      c.destroy();
    } finally {
      gated.open();
      await server.close();
      await cat.cleanup();
    }
  });

  void it("close() lets requests in flight finish, then drops every connection and stops listening", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const gated = gatedCatalog(cat);
    const server = await serve(gated.catalog);
    const { c } = await attach(server.port, "vol");
    const handshaking = await RawClient.connect(server.port);
    const r = request(Cmd.read, 0, 4096);
    c.send(r.bytes);
    await until(() => gated.active() === 1, "the read to start");
    assert.equal(server.connections(), 2);
    const closed = server.close();
    assert.ok(await handshaking.closedByServer(), "a client still negotiating is dropped at once");
    await new Promise((res) => setTimeout(res, 50));
    gated.open();
    const reply = await readReply(c);
    assert.deepEqual(reply, { errno: 0, cookie: r.cookie });
    await c.read(4096);
    await closed;
    assert.ok(await c.closedByServer());
    assert.equal(server.connections(), 0);
    await assert.rejects(RawClient.connect(server.port));
    await cat.cleanup();
  });
});

/** GO for `name` on a fresh connection; the final option reply (ACK, or an error). */
async function go(port: number, name: string): Promise<{ c: RawClient; reply: OptReply }> {
  const c = await greet(port);
  c.send(encodeOption(Opt.go, encodeInfoRequest({ name, infos: [] })));
  const replies = await readOptReplies(c);
  return { c, reply: replies.at(-1)! };
}

/** A short session: READ 4 KiB, DISC, close our side. */
async function shortSession(c: RawClient): Promise<void> {
  assert.equal((await call(c, Cmd.read, 0, 4096)).errno, 0);
  c.send(request(Cmd.disc, 0, 0).bytes);
  c.socket.end();
}

void describe("NBD server connection slots, handshake pool and buffers", () => {
  void it("a slot is free the moment its connection is gone: after DISC the peer's close ends it at once, not after the linger", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const server = await serve(cat);
    try {
      for (let i = 0; i < 20; i++) {
        const { c } = await attach(server.port, "vol");
        await shortSession(c);
        assert.ok(await c.closedByServer(), "the server closes after DISC");
      }
      // Well within nbdCloseLingerMs (the old code held every slot until it ran out).
      await until(() => server.connections() === 0, "every slot to be free", nbdCloseLingerMs / 2);
      // And a peer that resets instead: gone at once too.
      const { c } = await attach(server.port, "vol");
      c.socket.resetAndDestroy();
      await until(() => server.connections() === 0, "the reset connection's slot", nbdCloseLingerMs / 2);
    } finally {
      await server.close();
      await cat.cleanup();
    }
  });

  void it("with nbdConnectionsMax in transmission a new GO is refused (ERR_POLICY) and EXPORT_NAME closed; a freed slot serves at once", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const server = await serve(cat);
    const clients: RawClient[] = [];
    try {
      for (let i = 0; i < nbdConnectionsMax; i++) clients.push((await attach(server.port, "vol")).c);
      assert.deepEqual([server.connections(), server.handshakes()], [nbdConnectionsMax, 0]);
      const refused = await go(server.port, "vol");
      assert.equal(refused.reply.replyType, Rep.errPolicy);
      assert.match(refused.reply.data.toString(), new RegExp(`at most ${nbdConnectionsMax} NBD connections`));
      assert.ok(await refused.c.closedByServer(), "a refused client is closed");
      const blind = await greet(server.port);
      blind.send(encodeOption(Opt.exportName, Buffer.from("vol")));
      assert.ok(await blind.closedByServer(), "EXPORT_NAME has no error reply: closed");
      await shortSession(clients.pop()!);
      const { c } = await attach(server.port, "vol");
      assert.equal((await call(c, Cmd.read, 0, 16)).errno, 0, "the freed slot serves the next client");
      clients.push(c);
    } finally {
      for (const c of clients) c.destroy();
      await server.close();
      await cat.cleanup();
    }
  });

  void it("a full handshake pool closes its oldest connection to admit a new one, so a real client always gets in", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const server = await serve(cat);
    const silent: RawClient[] = [];
    try {
      for (let i = 0; i < nbdHandshakesMax + 10; i++) {
        const c = await RawClient.connect(server.port);
        await c.read(18); // every one of them is greeted: none is refused
        silent.push(c);
      }
      assert.equal(server.handshakes(), nbdHandshakesMax);
      for (const c of silent.slice(0, 10)) assert.ok(await c.closedByServer(), "the oldest silent connections made room");
      assert.equal(silent[10]!.ended, false, "the rest wait for their deadline");
      const { c } = await attach(server.port, "vol");
      assert.equal((await call(c, Cmd.read, 0, 4096)).errno, 0, "a real client gets in with the pool full");
      assert.ok(await silent[10]!.closedByServer(), "by closing the oldest silent connection");
      assert.deepEqual([server.handshakes(), server.connections()], [nbdHandshakesMax - 1, nbdHandshakesMax]);
      c.destroy();
    } finally {
      for (const c of silent) c.destroy();
      await server.close();
      await cat.cleanup();
    }
  });

  void it("a connection that says nothing is closed at the handshake deadline", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: MiB }]);
    const server = await serve(cat);
    try {
      const c = await RawClient.connect(server.port);
      await c.read(18);
      const openedMs = performance.now();
      assert.ok(await c.closedByServer(nbdHandshakeTimeoutMs + 2_000), "closed by the deadline");
      assert.ok(performance.now() - openedMs >= nbdHandshakeTimeoutMs * 0.9, "not before it");
      await until(() => server.connections() === 0, "its slot to be free");
    } finally {
      await server.close();
      await cat.cleanup();
    }
  });

  void it("replies a peer never reads go with the connection; every pooled buffer comes back, and goes back to the system once idle", async () => {
    const cat = await fileCatalog([{ name: "vol", sizeBytes: 8 * MiB }]);
    const server = await serve(cat);
    try {
      const unread = await Promise.all(Array.from({ length: 16 }, async () => {
        const { c } = await attach(server.port, "vol");
        // 8 MiB of READ replies the client never reads: more than the socket buffers hold.
        c.send(Buffer.concat(Array.from({ length: 8 }, (_, i) => request(Cmd.read, i * MiB, MiB).bytes)));
        await c.read(16);
        return c;
      }));
      assert.ok(server.buffers().slotsInUse > 0, "replies wait in pooled buffers for a peer that does not read");
      for (const [i, c] of unread.entries()) {
        if (i % 2 === 0) c.socket.resetAndDestroy();
        else c.destroy();
      }
      // Mixed churn on top: clean sessions, resets with a READ in flight, closes mid-handshake.
      for (let i = 0; i < 60; i++) {
        if (i % 3 === 2) {
          const c = await greet(server.port);
          c.send(Buffer.from("IHAVE"));
          c.destroy();
          continue;
        }
        const { c } = await attach(server.port, "vol");
        if (i % 3 === 0) {
          await shortSession(c);
        } else {
          c.send(request(Cmd.read, 0, MiB).bytes);
          c.socket.resetAndDestroy();
        }
      }
      await until(() => server.connections() === 0, "every connection to be gone");
      await until(() => server.buffers().slotsInUse === 0, "every pooled buffer to be back");
      assert.ok(server.buffers().arenas > 0);
      await until(() => server.buffers().arenas === 0, "idle buffers to go back to the system", nbdBufferIdleReleaseMs + 3_000);
      const { c } = await attach(server.port, "vol");
      assert.equal((await call(c, Cmd.read, 0, MiB)).errno, 0, "buffers are made again on demand");
      c.destroy();
    } finally {
      await server.close();
      await cat.cleanup();
    }
  });
});
