// Proves a real filesystem lives on a tidemark volume: ext4 is made on the NBD export (seen as a
// file through nbdfuse, mounted with a loop device), a ~20 MiB tree is copied in, and after umount
// e2fsck -fn finds it clean and every file's sha256 matches, again after a clean node restart.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { test } from "node:test";
import {
  cliOk, mountLoop, nbdfuseMount, requireRoot, requireTool, runOk, startNode, tmpDir,
} from "./harness.ts";

const treeBytesTarget = 20 * 1024 * 1024;

/** Writes random files of varied sizes into nested directories; returns relative path -> sha256. */
async function makeTree(root: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  const sizesBytes = [1, 511, 4096, 4097, 65_536, 131_071, 1_048_576, 3_000_000];
  let totalBytes = 0;
  for (let i = 0; totalBytes < treeBytesTarget; i++) {
    const dir = path.join(`d${i % 4}`, `e${i % 3}`, ...(i % 5 === 0 ? ["deep", `f${i % 2}`] : []));
    await fsp.mkdir(path.join(root, dir), { recursive: true });
    const sizeBytes = sizesBytes[i % sizesBytes.length]!;
    const data = randomBytes(sizeBytes);
    const relative = path.join(dir, `file-${i}.bin`);
    await fsp.writeFile(path.join(root, relative), data);
    sums.set(relative, createHash("sha256").update(data).digest("hex"));
    totalBytes += sizeBytes;
  }
  await fsp.mkdir(path.join(root, "empty", "dir"), { recursive: true });
  return sums;
}

async function sumTree(root: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  const entries = await fsp.readdir(root, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    sums.set(path.relative(root, full), createHash("sha256").update(await fsp.readFile(full)).digest("hex"));
  }
  return sums;
}

function assertSameTree(actual: Map<string, string>, expected: Map<string, string>, when: string): void {
  const missing = [...expected.keys()].filter((name) => !actual.has(name));
  const extra = [...actual.keys()].filter((name) => !expected.has(name));
  const changed = [...expected.keys()].filter((name) => actual.has(name) && actual.get(name) !== expected.get(name));
  assert.deepEqual({ missing, extra, changed }, { missing: [], extra: [], changed: [] }, `tree differs ${when}`);
}

/** nbdfuse the export, e2fsck -fn it, mount it, compare the tree, unmount everything. */
async function checkVolume(uri: string, expected: Map<string, string>, when: string): Promise<void> {
  const fuse = await nbdfuseMount(uri);
  await runOk("e2fsck", ["-fn", fuse.file], { timeoutMs: 120_000 });
  const mnt = await mountLoop(fuse.file, { readOnly: true });
  assertSameTree(await sumTree(path.join(mnt.dir, "tree")), expected, when);
  assert.ok(fs.statSync(path.join(mnt.dir, "tree", "empty", "dir")).isDirectory());
  await mnt.unmount();
  await fuse.unmount();
}

async function nextSequence(mgmtUrl: string, group: string): Promise<number> {
  const { stdout } = await cliOk(["group", "list", "--json"], { node: mgmtUrl });
  const parsed = JSON.parse(stdout) as { groups: { name: string; nextSequence: number }[] };
  const found = parsed.groups.find((g) => g.name === group);
  assert.ok(found !== undefined, `group ${group} listed`);
  return found.nextSequence;
}

void test("ext4 on a tidemark volume: mkfs, copy a tree, fsck clean, same checksums after remount and node restart", { timeout: 10 * 60_000 }, async (t) => {
  if (!requireTool(t, "nbdfuse", "fusermount3", "mkfs.ext4", "e2fsck", "mount", "umount", "losetup", "cp", "sync")) return;
  if (!requireRoot(t)) return;

  const node = await startNode({ id: "ext4" });
  await cliOk(["volume", "create", "v1", "--size", "256M"], { node: node.mgmtUrl });
  await cliOk(["group", "create", "g1", "--volumes", "v1"], { node: node.mgmtUrl });

  const source = await tmpDir("tidemark-tree-");
  const expected = await makeTree(path.join(source, "tree"));

  const fuse = await nbdfuseMount(node.nbdUri("v1"));
  await runOk("mkfs.ext4", ["-q", "-F", "-E", "nodiscard", fuse.file], { timeoutMs: 120_000 });
  const mnt = await mountLoop(fuse.file);
  await runOk("cp", ["-a", path.join(source, "tree"), mnt.dir], { timeoutMs: 300_000 });
  await runOk("sync", ["-f", mnt.dir]);
  await mnt.unmount();
  await fuse.unmount();
  const sequenceAfterCopy = await nextSequence(node.mgmtUrl, "g1");
  assert.ok(sequenceAfterCopy > 100, `the group's journal sequenced the filesystem's writes (next sequence ${sequenceAfterCopy})`);

  await checkVolume(node.nbdUri("v1"), expected, "after umount and remount");

  await node.restart();
  await checkVolume(node.nbdUri("v1"), expected, "after a clean node restart");
  await node.stop();
});
