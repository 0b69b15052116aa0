// `tidemark volume delete` against a real node (issue 9 item 4): an empty volume goes at once;
// one that holds data only with --force; one in a group, or open by a host (NBD or the host
// protocol), is refused with one line saying what to do; deleting again is not an error; the
// file is gone and a restart does not bring the volume back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { HostClient } from "../../src/index.ts";
import { cli, cliOk, requireTool, run, runOk, startNode } from "./harness.ts";

const MiB = 1024 * 1024;

async function volumeNames(mgmtUrl: string): Promise<string[]> {
  const listed = JSON.parse((await cliOk(["volume", "list", "--json"], { node: mgmtUrl })).stdout) as { volumes: { name: string }[] };
  return listed.volumes.map((v) => v.name).sort();
}

test("volume delete: empty at once, data only with --force, refused while grouped or open; again is a no-op; survives a restart", { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, "qemu-io")) return;
  const node = await startNode({ id: "vdel" });
  for (const name of ["empty", "full", "grouped", "held"]) await cliOk(["volume", "create", name, "--size", String(8 * MiB)], { node: node.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "grouped"], { node: node.mgmtUrl });
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("full"), "-c", "write -P 0x42 0 64k"], { timeoutMs: 30_000 });

  assert.equal((await cliOk(["volume", "delete", "empty"], { node: node.mgmtUrl })).stdout, "deleted volume empty\n");
  assert.equal((await cliOk(["volume", "delete", "empty"], { node: node.mgmtUrl })).stdout, "volume empty does not exist; nothing to delete\n");

  const oneLine = (stderr: string): void => assert.equal(stderr.trim().split("\n").length, 1, stderr);
  const data = await cli(["volume", "delete", "full"], { node: node.mgmtUrl });
  assert.notEqual(data.code, 0);
  oneLine(data.stderr);
  assert.match(data.stderr, /holds data.*--force/);
  const grouped = await cli(["volume", "delete", "grouped"], { node: node.mgmtUrl });
  assert.notEqual(grouped.code, 0);
  oneLine(grouped.stderr);
  assert.match(grouped.stderr, /in group g; delete the group first/);

  // Held open by a host: refused until it lets go (the host protocol), then gone.
  const client = await HostClient.connect({ host: "127.0.0.1", port: node.hostPort });
  const held = await client.open("held");
  await held.write(0, Buffer.alloc(4096, 7));
  const busy = await cli(["volume", "delete", "held", "--force"], { node: node.mgmtUrl });
  assert.notEqual(busy.code, 0);
  oneLine(busy.stderr);
  assert.match(busy.stderr, /open by 1 host connection/);
  await client.close();
  await cliOk(["volume", "delete", "held", "--force"], { node: node.mgmtUrl });

  // An NBD client reading while the delete comes: refused while connected.
  const reader = run("qemu-io", ["-f", "raw", "-r", node.nbdUri("full"), "-c", "sleep 1500", "-c", "read -P 0x42 0 64k"], { timeoutMs: 30_000 });
  await new Promise((resolve) => setTimeout(resolve, 500));
  const whileRead = await cli(["volume", "delete", "full", "--force"], { node: node.mgmtUrl });
  assert.match(whileRead.stderr, /open by 1 host connection/);
  assert.equal((await reader).code, 0, "the reader was not disturbed");
  const forced = await cliOk(["volume", "delete", "full", "--force"], { node: node.mgmtUrl });
  assert.equal(forced.stdout, "deleted volume full\n");
  assert.equal(existsSync(path.join(node.dataDir, "volumes", "2.vol")), false, "its file is gone");
  const gone = await run("qemu-io", ["-f", "raw", "-r", node.nbdUri("full"), "-c", "read 0 4k"], { timeoutMs: 30_000 });
  assert.notEqual(gone.code, 0, "no export of that name any more");

  const bad = await cli(["volume", "delete", "bad/name"], { node: node.mgmtUrl });
  assert.equal(bad.code, 2, bad.stderr);
  oneLine(bad.stderr);

  assert.deepEqual(await volumeNames(node.mgmtUrl), ["grouped"]);
  await node.kill();
  await node.restart();
  assert.deepEqual(await volumeNames(node.mgmtUrl), ["grouped"], "a restart does not bring them back");
  await runOk("qemu-io", ["-f", "raw", node.nbdUri("grouped"), "-c", "write -P 0x10 0 4k"], { timeoutMs: 30_000 });
});
