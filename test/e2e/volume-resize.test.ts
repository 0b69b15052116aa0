// `tidemark volume resize NAME --size SIZE` against real nodes (issue 9 item 4; docs/volumes.md,
// "Growing a volume"). Proves: grow only (a smaller size, an unknown volume, a bad size: one line
// and a non-zero exit; the same size again: success, nothing changed); a volume in no group and
// one in a group grow and keep their size and data across kill -9; NBD clients connected before
// keep the old size until they reconnect, new ones see the new size; a paired volume resized
// while a host writes grows on the secondary too (the resize travels in the group's sequence),
// a write past the old end reflects after it, and both images end equal byte for byte (sha256
// of the whole volumes) — also after kill -9 of the primary right after a resize, and with the
// secondary killed while the resize and the writes past the old end happen. A secondary that
// speaks replication protocol 1 or 2 (an older tidemark, made so by a proxy that offers no more
// in its HELLO): the resize is refused up front, or the pair fails once when it would meet it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as net from "node:net";
import { decodeFrame, encodeMessage, replHeaderBytes } from "../../src/protocol/repl-protocol.ts";
import { cli, cliOk, freePorts, mgmtJson, onCleanup, requireTool, runOk, startNode, waitFor, type RunningNode } from "./harness.ts";
import { NbdClient, Prng, drillSeed, makeGroup, pairCreate, pairInfo, pairWait, readExport, runDrill, startLoad, startPairNodes } from "./drill-lib.ts";

const MiB = 1024 * 1024;

interface ListedVolume { readonly name: string; readonly sizeBytes: number }

async function volumeSizes(node: RunningNode): Promise<Record<string, number>> {
  const listed = JSON.parse((await cliOk(["volume", "list", "--json"], { node: node.mgmtUrl })).stdout) as { volumes: ListedVolume[] };
  return Object.fromEntries(listed.volumes.map((v) => [v.name, v.sizeBytes]));
}

function oneLine(stderr: string): void {
  assert.equal(stderr.trim().split("\n").length, 1, stderr);
}

async function sha256Of(node: RunningNode, volume: string): Promise<{ sizeBytes: number; sha256: string }> {
  const image = await readExport(node, volume);
  return { sizeBytes: image.length, sha256: createHash("sha256").update(image).digest("hex") };
}

/** Both nodes list the volumes at the same sizes, and their whole images are equal (sha256). */
async function assertImagesEqual(a: RunningNode, b: RunningNode, volumes: readonly string[], expectSizes: Record<string, number>): Promise<void> {
  const sizesA = await volumeSizes(a);
  const sizesB = await volumeSizes(b);
  for (const volume of volumes) {
    assert.equal(sizesA[volume], expectSizes[volume], `${volume} on the primary is ${String(expectSizes[volume])} bytes`);
    assert.equal(sizesB[volume], expectSizes[volume], `${volume} on the secondary grew to ${String(expectSizes[volume])} bytes`);
    const [imageA, imageB] = [await sha256Of(a, volume), await sha256Of(b, volume)];
    assert.equal(imageA.sizeBytes, expectSizes[volume], `${volume} exported at its new size on the primary`);
    assert.deepEqual(imageB, imageA, `${volume}: the secondary's image equals the primary's`);
  }
}

test("volume resize: grow only, idempotent, one-line refusals; unpaired and grouped volumes keep size and data across kill -9; NBD clients see the new size on reconnect", { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const node = await startNode({ id: "vresize" });
  const at = { node: node.mgmtUrl };
  await cliOk(["volume", "create", "plain", "--size", "8M"], at);
  await cliOk(["volume", "create", "grouped", "--size", "8M"], at);
  await cliOk(["group", "create", "g", "--volumes", "grouped"], at);
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("plain"), "-c", "write -P 0x11 0 1M"], { timeoutMs: 30_000 });

  // A client connected before the resize keeps the size it was given.
  const before = await NbdClient.connect(node.nbdPort, "plain");
  assert.equal(before.sizeBytes, 8 * MiB);
  assert.equal((await cliOk(["volume", "resize", "plain", "--size", "24M"], at)).stdout, "volume plain is now 24.0 MiB; NBD clients connected now see the new size once they reconnect\n");
  await assert.rejects(before.write(8 * MiB, Buffer.alloc(4096, 1)), "a write past the old end on a connection opened before is refused");
  await before.close();
  const after = await NbdClient.connect(node.nbdPort, "plain");
  assert.equal(after.sizeBytes, 24 * MiB, "a new connection sees the new size");
  await after.close();
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("plain"), "-c", "write -P 0x22 20M 1M"], { timeoutMs: 30_000 });

  // Idempotent: the same size again succeeds and changes nothing.
  assert.equal((await cliOk(["volume", "resize", "plain", "--size", "24M"], at)).stdout, "volume plain is 24.0 MiB already; nothing to do\n");
  const again = JSON.parse((await cliOk(["volume", "resize", "plain", "--size", String(24 * MiB), "--json"], at)).stdout) as { changed: boolean; volume: ListedVolume };
  assert.deepEqual([again.changed, again.volume.sizeBytes], [false, 24 * MiB]);

  // Wrong input: one line, non-zero exit, nothing changed.
  for (const [args, pattern] of [
    [["volume", "resize", "plain", "--size", "16M"], /only grows, it cannot shrink/],
    [["volume", "resize", "nosuch", "--size", "16M"], /volume nosuch does not exist/],
    [["volume", "resize", "plain", "--size", "12Q"], /--size '12Q' has an unknown unit/],
    [["volume", "resize", "plain", "--size", String(24 * MiB + 100)], /multiple of 512 bytes/],
    [["volume", "resize", "plain", "--size", "17T"], /above the maximum/],
    [["volume", "resize", "plain"], /--size/],
  ] as const) {
    const refused = await cli(args, at);
    assert.notEqual(refused.code, 0, `${args.join(" ")} refused`);
    oneLine(refused.stderr);
    assert.match(refused.stderr, pattern);
  }

  // In a group without a pair: the resize is a record of the group's journal.
  await cliOk(["volume", "resize", "grouped", "--size", "40M"], at);
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("grouped"), "-c", "write -P 0x33 39M 1M"], { timeoutMs: 30_000 });
  assert.deepEqual(await volumeSizes(node), { plain: 24 * MiB, grouped: 40 * MiB });

  // kill -9 right after: the sizes and the data past the old ends are there after the restart.
  await cliOk(["volume", "resize", "grouped", "--size", "48M"], at);
  await node.kill();
  await node.restart();
  assert.deepEqual(await volumeSizes(node), { plain: 24 * MiB, grouped: 48 * MiB });
  await runOk("qemu-io", ["-f", "raw", "-r", node.nbdUri("plain"), "-c", "read -P 0x11 0 1M", "-c", "read -P 0x22 20M 1M", "-c", "read -P 0 8M 12M"], { timeoutMs: 30_000 });
  await runOk("qemu-io", ["-f", "raw", "-r", node.nbdUri("grouped"), "-c", "read -P 0x33 39M 1M", "-c", "read -P 0 40M 8M"], { timeoutMs: 30_000 });
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("grouped"), "-c", "write -P 0x44 47M 1M"], { timeoutMs: 30_000 });
});

test("volume resize of a paired volume while writing: the secondary grows at the same point; images equal after primary kill -9 and secondary kill", { timeout: 300_000 }, async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  await runDrill(t, async () => {
    const prng = new Prng(drillSeed(t));
    const { a, b } = await startPairNodes();
    await makeGroup(a, "g", [{ name: "v1", size: "8M" }, { name: "v2", size: "4M" }]);
    await pairCreate(a, "g", b, { streams: 4 });
    const sizes: Record<string, number> = { v1: 8 * MiB, v2: 4 * MiB };

    // The secondary's volumes follow the primary: resizing them there is refused.
    const onSecondary = await cli(["volume", "resize", "v1", "--size", "16M"], { node: b.mgmtUrl });
    assert.notEqual(onSecondary.code, 0);
    oneLine(onSecondary.stderr);
    assert.match(onSecondary.stderr, /secondary of the pair of group g: resize it on the primary/);

    // Resized while a host writes (inside the old size), then written past the old end.
    const load = await startLoad(a, [{ volume: "v1", via: "nbd", sizeBytes: 8 * MiB }, { volume: "v2", via: "host", sizeBytes: 4 * MiB }], prng, { bytesPerSecondMax: 8 * MiB });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await cliOk(["volume", "resize", "v1", "--size", "24M"], { node: a.mgmtUrl });
    sizes.v1 = 24 * MiB;
    await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "write -P 0xa1 20M 1M", "-c", "write -P 0xa2 8M 4k"], { timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const report = await load.stop();
    assert.equal(report.failure, "", "the host writes went on through the resize");
    await pairWait(a, "g");
    await assertImagesEqual(a, b, ["v1", "v2"], sizes);

    // kill -9 of the primary right after a resize: it restarts, the pair carries on, sizes agree.
    await cliOk(["volume", "resize", "v2", "--size", "12M"], { node: a.mgmtUrl });
    sizes.v2 = 12 * MiB;
    await a.kill();
    await a.restart();
    await waitFor("the pair replicates again after the primary's restart", async () => (await pairInfo(a, "g")).state === "replicating", { timeoutMs: 60_000 });
    await runOk("qemu-io", ["-f", "raw", a.nbdUri("v2"), "-c", "write -P 0xb1 11M 1M"], { timeoutMs: 30_000 });
    await pairWait(a, "g");
    await assertImagesEqual(a, b, ["v1", "v2"], sizes);

    // The secondary killed while the resize and the writes past the old end happen.
    await b.kill();
    await cliOk(["volume", "resize", "v1", "--size", "40M"], { node: a.mgmtUrl });
    sizes.v1 = 40 * MiB;
    await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "write -P 0xc1 39M 1M", "-c", "write -P 0xc2 24M 64k"], { timeoutMs: 30_000 });
    await b.restart();
    await pairWait(a, "g", "120s");
    await assertImagesEqual(a, b, ["v1", "v2"], sizes);
    const info = await mgmtJson(b.mgmtUrl, "/v1/pairs/g") as { state: string };
    assert.equal(info.state, "replicating");
  });
});

/**
 * A TCP proxy in front of a secondary's replication port that makes it look like an older
 * tidemark: the HELLO it forwards offers protocol versions 1..versionMax only, so the secondary
 * chooses versionMax, as an older secondary would (everything else passes unchanged).
 */
async function olderVersionProxy(versionMax: number, targetPort: () => number): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort(), "127.0.0.1");
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    upstream.pipe(client);
    let pending = Buffer.alloc(0);
    const onFirst = (chunk: Buffer): void => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < replHeaderBytes || pending.length < replHeaderBytes + pending.readUInt32LE(8)) return;
      client.off("data", onFirst);
      const frameBytes = replHeaderBytes + pending.readUInt32LE(8);
      const decoded = decodeFrame(pending.subarray(0, frameBytes));
      const first = decoded.ok && decoded.message.type === "HELLO" ? Buffer.concat(encodeMessage({ ...decoded.message, versionMax })) : pending.subarray(0, frameBytes);
      upstream.write(Buffer.concat([first, pending.subarray(frameBytes)]));
      client.pipe(upstream);
    };
    client.on("data", onFirst);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  onCleanup("version-one proxy", () => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: address.port, close: () => server.close() };
}

for (const olderVersion of [1, 2]) {
  test(`volume resize with a secondary that speaks replication protocol ${olderVersion} (an older tidemark): refused up front; a resize it would meet fails the pair once, saying to upgrade`, { timeout: 180_000 }, async () => {
    const [bMgmt, bNbd, bHost, bRepl] = await freePorts(4);
    const proxy = await olderVersionProxy(olderVersion, () => bRepl!);
    const b = await startNode({ id: `v${olderVersion}-b`, ports: [bMgmt!, bNbd!, bHost!, bRepl!] as const, extraArgs: ["--repl-advertise", `127.0.0.1:${proxy.port}`] });
    const a = await startNode({ id: `v${olderVersion}-a` });
    await makeGroup(a, "g", [{ name: "v1", size: "8M" }]);
    await pairCreate(a, "g", b, { streams: 2 });

    const refused = await cli(["volume", "resize", "v1", "--size", "16M"], { node: a.mgmtUrl });
    assert.notEqual(refused.code, 0);
    oneLine(refused.stderr);
    assert.match(refused.stderr, new RegExp(`cannot grow volumes \\(replication protocol ${olderVersion}\\); upgrade it first`));
    assert.equal((await volumeSizes(a)).v1, 8 * MiB, "nothing changed");

    // The primary restarted while the secondary is down does not know its version yet: the resize
    // is recorded; when the old secondary comes back, the record is never sent to it: the pair fails once.
    await b.kill();
    await a.kill();
    await a.restart();
    await cliOk(["volume", "resize", "v1", "--size", "16M"], { node: a.mgmtUrl });
    await b.restart();
    const failed = await waitFor("the pair fails, saying the secondary must be upgraded", async () => {
      const info = await pairInfo(a, "g");
      return info.state === "failed" && /cannot grow volumes/.test(JSON.stringify(info)) ? info : undefined;
    }, { timeoutMs: 60_000 });
    assert.match(JSON.stringify(failed), /upgrade the secondary/);
    assert.equal((await volumeSizes(b)).v1, 8 * MiB, "the secondary never got the resize");
    assert.ok(!b.logTail(100_000).includes("unknown record kind"), "no record of a kind it cannot read reached the secondary");
  });
}
