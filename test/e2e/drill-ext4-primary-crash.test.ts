// Proves a filesystem survives losing the primary mid-write: ext4 on a paired volume (nbdfuse +
// loop on A), `cp -r` of a file tree running with periodic syncs, A kill -9'd at a random
// moment; B takes over, its copy mounts (journal replay), `e2fsck -fn` then exits 0, and every
// file found on B holds a prefix of its source (ext4 data=ordered never exposes unwritten
// blocks, so anything else means the copy broke write order). Seeded; see docs/drills.md.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { test } from "node:test";
import {
  Prng, describePair, makeGroup, mountVolume, pairCreate, pairInfo, phaseClock, runDrill, sleep, startPairNodes, takeover,
  waitReflectedProgress,
  restartOldPrimary,
} from "./drill-lib.ts";
import { nbdfuseMount, onCleanup, requireRoot, requireTool, run, runOk, tmpDir } from "./harness.ts";

const treeBytesTarget = 24 * 1024 * 1024;
/** The job copies the tree again and again (tree1, tree2, ...), keeping the newest few, until A dies. */
const treesKept = 3;
const treeCopiesMax = 1000;

/** Random files of varied sizes in nested directories; returns relative path -> content. */
async function makeTree(root: string, prng: Prng): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const sizesBytes = [0, 1, 700, 4096, 5000, 65_536, 200_000, 1_048_576, 2_500_000];
  let totalBytes = 0;
  for (let i = 0; totalBytes < treeBytesTarget; i++) {
    const dir = path.join(`d${i % 5}`, `e${i % 3}`);
    await fsp.mkdir(path.join(root, dir), { recursive: true });
    const data = randomBytes(sizesBytes[prng.int(0, sizesBytes.length - 1)]!);
    const relative = path.join(dir, `f${i}.bin`);
    await fsp.writeFile(path.join(root, relative), data);
    files.set(relative, data);
    totalBytes += data.length;
  }
  return files;
}

interface TreeVerdict {
  complete: number;
  partial: number;
  empty: number;
  missing: number;
  problems: string[];
}

/** Every file on B must be a prefix of its source (possibly empty or whole). */
async function checkTree(root: string, source: Map<string, Buffer>): Promise<TreeVerdict> {
  const verdict: TreeVerdict = { complete: 0, partial: 0, empty: 0, missing: 0, problems: [] };
  const seen = new Set<string>();
  let entries: { parentPath: string; name: string; isFile(): boolean }[];
  try {
    entries = await fsp.readdir(root, { recursive: true, withFileTypes: true });
  } catch {
    verdict.missing = source.size; // cp had not created the top directory yet
    return verdict;
  }
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const relative = path.relative(root, path.join(entry.parentPath, entry.name));
    seen.add(relative);
    const expected = source.get(relative);
    if (expected === undefined) {
      verdict.problems.push(`${relative}: not in the source tree`);
      continue;
    }
    const actual = await fsp.readFile(path.join(root, relative));
    if (actual.length > expected.length) {
      verdict.problems.push(`${relative}: ${actual.length} bytes, longer than its source (${expected.length})`);
    } else if (!actual.equals(expected.subarray(0, actual.length))) {
      let at = 0;
      while (at < actual.length && actual[at] === expected[at]) at++;
      const zeroes = actual.subarray(at).every((b) => b === 0);
      verdict.problems.push(`${relative}: ${actual.length} of ${expected.length} bytes, differs from the source at byte ${at}${zeroes ? " (zeroes from there: data not written but size recorded)" : ""}; sha256 ${createHash("sha256").update(actual).digest("hex").slice(0, 12)}`);
    } else if (actual.length === expected.length) {
      verdict.complete++;
    } else if (actual.length === 0) {
      verdict.empty++;
    } else {
      verdict.partial++;
    }
  }
  verdict.missing = [...source.keys()].filter((name) => !seen.has(name)).length;
  return verdict;
}

/** `sh -c SCRIPT` in its own process group (so the whole job can be killed by its id). */
function spawnJob(script: string): { pid: number; done: Promise<number | null>; kill: () => void } {
  const child = spawn("sh", ["-c", script], { detached: true, stdio: "ignore" });
  const pid = child.pid ?? -1;
  const done = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let exited = false;
  void done.then(() => {
    exited = true;
  });
  const kill = (): void => {
    if (exited || pid <= 0) return;
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
  };
  onCleanup(`kill job ${pid}`, kill);
  return { pid, done, kill };
}

void test("drill 4: ext4 on a paired volume, cp -r running, kill -9 the primary; B's copy mounts, e2fsck -fn clean, files are prefixes", { timeout: 300_000 }, async (t) => {
  if (!requireTool(t, "nbdfuse", "fusermount3", "mkfs.ext4", "e2fsck", "mount", "umount", "losetup", "cp", "sync")) return;
  if (!requireRoot(t)) return;
  await runDrill(t, async (seed) => {
    const prng = new Prng(seed);
    const phase = phaseClock(t);
    const work = await tmpDir("tidemark-drill4-");
    const source = path.join(work, "source");
    const tree = await makeTree(source, prng);
    const { a, b } = await startPairNodes();
    await makeGroup(a, "gfs", [{ name: "vfs", size: "512M" }]);
    await pairCreate(a, "gfs", b, { transfer: "push", streams: 4 });
    phase(`nodes up, pair replicating; source tree ${tree.size} files`);

    const fuseA = await nbdfuseMount(a.nbdUri("vfs"));
    await runOk("mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", fuseA.file], { timeoutMs: 120_000 });
    await fuseA.unmount();
    const mountDir = path.join(work, "mnt");
    const mountA = await mountVolume(a, "vfs", mountDir);
    phase("mkfs.ext4 done, mounted on A");

    // cp -r of the tree again and again, removing old copies, with a sync after each copy and
    // every 200 ms beside it: a steady stream of writes, deletes and flushes until A dies.
    const job = spawnJob(
      `(while :; do sync -f '${mountDir}'; sleep 0.2; done) & syncer=$!; ` +
      `for i in $(seq 1 ${treeCopiesMax}); do cp -r '${source}' '${mountDir}/tree'$i || break; sync -f '${mountDir}' || break; ` +
      `rm -rf '${mountDir}/tree'$((i - ${treesKept})) || break; done; kill $syncer`,
    );
    let jobEnded = false;
    void job.done.then(() => {
      jobEnded = true;
    });
    await waitReflectedProgress(b, ["gfs"], 20, 60_000);
    const killAfterMs = prng.int(300, 3_000);
    await sleep(killAfterMs);
    const before = await pairInfo(a, "gfs");
    assert.ok(!jobEnded, "the copy job was still running at the kill (else this drill proves nothing; make the job longer)");
    await a.kill();
    phase(`A killed ${killAfterMs} ms after B reflected cp's first writes: ${describePair(before)}`);

    // A's mount is dead: detach it all (aborting the FUSE connection fails pending I/O), then end cp.
    await mountA.crashUnmount();
    job.kill();
    const cpExit = await job.done;
    phase(`A's mount torn down; cp job ended (exit ${String(cpExit)})`);

    const takeoverText = await takeover(b, ["gfs"], { force: true }); // A was killed: its site is declared lost
    phase(`takeover: ${takeoverText}`);

    // Before journal replay, for the record only (an unreplayed journal may show problems).
    const fuseB = await nbdfuseMount(b.nbdUri("vfs"));
    const preReplay = await run("e2fsck", ["-fn", fuseB.file], { timeoutMs: 120_000 });
    t.diagnostic(`e2fsck -fn before journal replay: exit ${String(preReplay.code)}: ${preReplay.stdout.trim().split("\n").slice(0, 3).join(" | ")}`);
    await fuseB.unmount();

    // Mounting replays ext4's journal, as after a power loss.
    const replay = await mountVolume(b, "vfs", mountDir);
    await replay.unmount();
    const fuseCheck = await nbdfuseMount(b.nbdUri("vfs"));
    const fsck = await run("e2fsck", ["-fn", fuseCheck.file], { timeoutMs: 120_000 });
    await fuseCheck.unmount();
    phase(`e2fsck -fn after replay: exit ${String(fsck.code)}`);
    assert.equal(fsck.code, 0, `e2fsck -fn on B's copy after journal replay must be clean (seed ${seed})\n${fsck.stdout}\n${fsck.stderr}`);

    const mountB = await mountVolume(b, "vfs", mountDir, { readOnly: true });
    const problems: string[] = [];
    const copies = (await fsp.readdir(mountDir)).filter((name) => /^tree\d+$/.test(name)).sort((x, y) => Number(x.slice(4)) - Number(y.slice(4)));
    t.diagnostic(`B holds ${copies.join(", ") || "no tree copy"}`);
    for (const copy of copies) {
      const verdict = await checkTree(path.join(mountDir, copy), tree);
      t.diagnostic(`B's ${copy}: ${verdict.complete} complete, ${verdict.partial} partial, ${verdict.empty} empty, ${verdict.missing} missing of ${tree.size}`);
      problems.push(...verdict.problems.map((p) => `${copy}/${p}`));
    }
    await mountB.unmount();
    assert.deepEqual(problems.slice(0, 10), [], `files on B that are not a prefix of their source (seed ${seed})`);
    phase("checked");
    phase(`A restarted: ${await restartOldPrimary(a, ["gfs"])}`);
  });
});
