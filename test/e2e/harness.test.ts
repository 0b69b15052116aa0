// Proves the e2e harness itself works on this machine, without a tidemark node: ports, commands,
// daemons, and the nbdfuse + loop-mount + ext4 path, driven against nbdkit's memory plugin.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
  freePorts, isMounted, mountLoop, nbdfuseMount, readTail, requireRoot, requireTool, run, runOk,
  spawnDaemon, stopDaemon, tmpDir,
} from "./harness.ts";

void test("freePorts gives distinct bindable ports", async () => {
  const ports = await freePorts(4);
  assert.equal(new Set(ports).size, 4);
  for (const port of ports) assert.ok(port > 0 && port < 65536);
});

void test("run captures output and exit codes, and times out", async () => {
  const ok = await run("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.equal(ok.code, 3);
  assert.equal(ok.stdout, "out\n");
  assert.equal(ok.stderr, "err\n");
  await assert.rejects(runOk("false", []), /exit 1/);
  const slow = await run("sleep", ["10"], { timeoutMs: 100 });
  assert.equal(slow.timedOut, true);
  assert.equal(slow.signal, "SIGKILL");
});

void test("stopDaemon stops with SIGTERM and escalates to SIGKILL", async () => {
  const dir = await tmpDir();
  const polite = spawnDaemon("sleep", ["30"], path.join(dir, "a.log"));
  const politeStop = await stopDaemon(polite);
  assert.equal(politeStop.obeyed, true);
  assert.equal(politeStop.exit.signal, "SIGTERM");
  const stubborn = spawnDaemon("sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], path.join(dir, "b.log"));
  while (!readTail(path.join(dir, "b.log")).includes("ready")) await new Promise((r) => setTimeout(r, 20));
  const stubbornStop = await stopDaemon(stubborn, "SIGTERM", 300);
  assert.equal(stubbornStop.obeyed, false);
  assert.equal(stubbornStop.exit.signal, "SIGKILL");
});

void test("nbdfuse + mkfs.ext4 + loop mount round trip against nbdkit memory", { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, "nbdkit", "nbdfuse", "fusermount3", "mkfs.ext4", "e2fsck", "mount", "umount", "losetup")) return;
  if (!requireRoot(t)) return;
  const dir = await tmpDir();
  const [port] = await freePorts(1);
  const server = spawnDaemon("nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(port), "memory", "64M"], path.join(dir, "nbdkit.log"));
  try {
    const deadline = Date.now() + 10_000;
    while ((await run("nbdinfo", ["--size", `nbd://127.0.0.1:${port}`], { timeoutMs: 5_000 })).code !== 0) {
      assert.ok(Date.now() < deadline, `nbdkit did not come up: ${readTail(path.join(dir, "nbdkit.log"))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const fuse = await nbdfuseMount(`nbd://127.0.0.1:${port}`);
    assert.equal(fs.statSync(fuse.file).size, 64 * 1024 * 1024);
    await runOk("mkfs.ext4", ["-q", "-F", "-E", "nodiscard", fuse.file]);
    const mnt = await mountLoop(fuse.file);
    fs.writeFileSync(path.join(mnt.dir, "hello"), "world");
    await mnt.unmount();
    assert.equal(isMounted(mnt.dir), false);
    await runOk("e2fsck", ["-fn", fuse.file]);
    const again = await mountLoop(fuse.file, { readOnly: true });
    assert.equal(fs.readFileSync(path.join(again.dir, "hello"), "utf8"), "world");
    await again.unmount();
    await fuse.unmount();
    assert.equal(isMounted(fuse.dir), false);
  } finally {
    await stopDaemon(server);
  }
});
