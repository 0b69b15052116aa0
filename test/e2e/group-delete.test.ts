// `tidemark group delete` against real nodes (issue 9 item 4): what the group took is in its
// volumes, which stay, writable, in no group, also after a restart; deleting again is not an
// error; a paired group, a pair's secondary, a group with a volume open by a host and a bad name are refused with one line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { cli, cliOk, requireTool, runOk, startNode, waitFor } from "./harness.ts";
import { handshakeExportName, RawConnection } from "./node-nbd-raw.ts";

const MiB = 1024 * 1024;

test("group delete: volumes keep what the group took and stay writable; again is a no-op; refusals are one line", { timeout: 180_000 }, async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const a = await startNode({ id: "gdel-a" });
  const b = await startNode({ id: "gdel-b" });
  await cliOk(["volume", "create", "v1", "--size", String(8 * MiB)], { node: a.mgmtUrl });
  await cliOk(["volume", "create", "v2", "--size", String(8 * MiB)], { node: a.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v1"], { node: a.mgmtUrl });
  await cliOk(["group", "create", "p", "--volumes", "v2"], { node: a.mgmtUrl });
  // Written through the group's journal, no flush: the delete must put it into the volume.
  await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "write -P 0x5a 1M 256k"], { timeoutMs: 30_000 });

  // A host connection open on a member: refused, as volume delete refuses (its writes would fail mid-way).
  const host = await RawConnection.connect(a.nbdPort);
  await handshakeExportName(host, "v1");
  const busy = await cli(["group", "delete", "g"], { node: a.mgmtUrl });
  assert.notEqual(busy.code, 0);
  assert.equal(busy.stderr.trim().split("\n").length, 1, busy.stderr);
  assert.match(busy.stderr, /volumes open by host connections \(NBD or host protocol\): v1 \(1\); disconnect them first/);
  host.socket.destroy();
  await host.closed;
  await waitFor("the NBD connection to be gone from the node", async () => {
    const status = JSON.parse((await cliOk(["status", "--json"], { node: a.mgmtUrl })).stdout) as { connections: { nbd: number } };
    return status.connections.nbd === 0;
  });

  const deleted = await cliOk(["group", "delete", "g"], { node: a.mgmtUrl });
  assert.equal(deleted.stdout, "deleted group g; its volumes stay, in no group\n");
  const groups = JSON.parse((await cliOk(["group", "list", "--json"], { node: a.mgmtUrl })).stdout) as { groups: { name: string }[] };
  assert.deepEqual(groups.groups.map((g) => g.name), ["p"]);
  const volumes = JSON.parse((await cliOk(["volume", "list", "--json"], { node: a.mgmtUrl })).stdout) as { volumes: { name: string; group: string | null }[] };
  assert.equal(volumes.volumes.find((v) => v.name === "v1")?.group, null, "v1 is in no group");
  assert.equal(existsSync(path.join(a.dataDir, "journals", "1")), false, "the group's journal directory is gone");
  await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "read -P 0x5a 1M 256k"], { timeoutMs: 30_000 });
  await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "write -P 0x33 4M 64k"], { timeoutMs: 30_000 });

  const again = await cliOk(["group", "delete", "g"], { node: a.mgmtUrl });
  assert.equal(again.stdout, "group g does not exist; nothing to delete\n");
  const bad = await cli(["group", "delete", "no/such"], { node: a.mgmtUrl });
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);

  // A paired group is refused on the primary, and its secondary on the secondary.
  await cliOk(["pair", "create", "p", "--to", b.mgmtUrl], { node: a.mgmtUrl, timeoutMs: 60_000 });
  for (const [node, group] of [[a, "p"], [b, "p"]] as const) {
    const refused = await cli(["group", "delete", group], { node: node.mgmtUrl });
    assert.notEqual(refused.code, 0);
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    assert.match(refused.stderr, /TM_ERR_STATE/);
    assert.match(refused.stderr, node === a ? /has a pair; end it first \(tidemark pair delete p\)/ : /secondary of a pair.*End the pair first \(tidemark pair delete p, against the primary/);
  }

  // A kill and a restart: the group stays gone, the volume holds both writes, the pair carries on.
  await a.kill();
  await a.restart();
  const after = JSON.parse((await cliOk(["group", "list", "--json"], { node: a.mgmtUrl })).stdout) as { groups: { name: string }[] };
  assert.deepEqual(after.groups.map((g) => g.name), ["p"]);
  await runOk("qemu-io", ["-f", "raw", a.nbdUri("v1"), "-c", "read -P 0x5a 1M 256k", "-c", "read -P 0x33 4M 64k"], { timeoutMs: 30_000 });
  await runOk("qemu-io", ["-f", "raw", a.nbdUri("v2"), "-c", "write -P 0x11 0 64k"], { timeoutMs: 30_000 });
  await cliOk(["pair", "wait", "p", "--timeout", "30s"], { node: a.mgmtUrl, timeoutMs: 60_000 });
});
