// Proves a database split over two groups survives losing the primary: PostgreSQL 15 with its
// data directory on ext4 on vdata (group gdata) and its WAL (initdb -X) on ext4 on vwal (group
// gwal), both paired to B with reflect time; pgbench runs, A is kill -9'd at a random moment;
// B takes over both groups, its copies are mounted at the same paths, PostgreSQL recovers on
// them, and pgbench's books balance: sum(abalance) = sum(tbalance) = sum(bbalance) = sum(delta).
// Without cross-group ordering (I1), the data files could hold pages whose WAL is missing.
// Seeded; see docs/drills.md.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { test } from "node:test";
import {
  Prng, describePair, makeGroup, mountVolume, openUpPath, pairCreate, pairInfo, phaseClock, runDrill, sleep, startPairNodes,
  takeover, waitReflectedProgress, type VolumeMount,
  restartOldPrimary,
} from "./drill-lib.ts";
import {
  freePort, nbdfuseMount, onCleanup, requireRoot, requireThat, requireTool, run, runOk, spawnDaemon, stopDaemon, tmpDir, waitFor,
  type Daemon, type RunningNode,
} from "./harness.ts";

const pgBin = "/usr/lib/postgresql/15/bin";
const pgUser = "postgres";

function asPostgres(command: string, args: readonly string[]): [string, string[]] {
  return ["runuser", ["-u", pgUser, "--", path.join(pgBin, command), ...args]];
}

async function pgRun(command: string, args: readonly string[], timeoutMs = 120_000): Promise<string> {
  const [cmd, full] = asPostgres(command, args);
  return (await runOk(cmd, full, { timeoutMs })).stdout;
}

/** Pids of every live descendant of `pid` (from /proc), children first found first. */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry), ppid);
    } catch {
      // gone
    }
  }
  const found: number[] = [];
  const frontier = [pid];
  while (frontier.length > 0) {
    const parent = frontier.pop()!;
    for (const [child, ppid] of parentOf) {
      if (ppid === parent && !found.includes(child)) {
        found.push(child);
        frontier.push(child);
      }
    }
  }
  return found;
}

function killTree(pid: number): void {
  for (const target of [pid, ...descendants(pid)]) {
    try {
      process.kill(target, "SIGKILL");
    } catch {
      // gone
    }
  }
}

interface Postgres {
  readonly daemon: Daemon;
  readonly port: number;
  psql(sql: string): Promise<string>;
}

/** Starts the postmaster (as postgres) on `dataDir` listening on 127.0.0.1:port; waits until it answers. */
async function startPostgres(dataDir: string, socketDir: string, logFile: string): Promise<Postgres> {
  const port = await freePort();
  const [cmd, args] = asPostgres("postgres", ["-D", dataDir, "-p", String(port), "-k", socketDir, "-c", "listen_addresses=127.0.0.1"]);
  const daemon = spawnDaemon(cmd, args, logFile);
  // A postmaster stuck on a dead mount ignores SIGTERM: kill its whole tree at cleanup.
  onCleanup(`kill postgres tree ${daemon.pid}`, () => killTree(daemon.pid));
  const psql = async (sql: string): Promise<string> => {
    const [c, a] = asPostgres("psql", ["-h", "127.0.0.1", "-p", String(port), "-U", pgUser, "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    return (await runOk(c, a, { timeoutMs: 60_000 })).stdout.trim();
  };
  await waitFor(`postgres on port ${port} (log ${logFile})`, async () => {
    if (daemon.exitInfo() !== null) throw new Error(`postgres exited: ${fs.readFileSync(logFile, "utf8").slice(-2000)}`);
    const [c, a] = asPostgres("pg_isready", ["-h", "127.0.0.1", "-p", String(port), "-t", "2"]);
    return (await run(c, a, { timeoutMs: 10_000 })).code === 0;
  }, { timeoutMs: 120_000, intervalMs: 250 });
  return { daemon, port, psql };
}

async function mkfsOn(node: RunningNode, volume: string): Promise<void> {
  const fuse = await nbdfuseMount(node.nbdUri(volume));
  await runOk("mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", fuse.file], { timeoutMs: 120_000 });
  await fuse.unmount();
}

interface Books {
  readonly accounts: string;
  readonly tellers: string;
  readonly branches: string;
  readonly history: string;
  readonly historyRows: string;
}

async function books(pg: Postgres): Promise<Books> {
  const [accounts, tellers, branches, history, historyRows] = (await pg.psql(
    "select (select coalesce(sum(abalance),0) from pgbench_accounts), (select coalesce(sum(tbalance),0) from pgbench_tellers), " +
    "(select coalesce(sum(bbalance),0) from pgbench_branches), (select coalesce(sum(delta),0) from pgbench_history), (select count(*) from pgbench_history)",
  )).split("|");
  return { accounts: accounts ?? "?", tellers: tellers ?? "?", branches: branches ?? "?", history: history ?? "?", historyRows: historyRows ?? "?" };
}

void test("drill 5: PostgreSQL with data and WAL in two paired groups, pgbench, kill -9 the primary; on B it recovers and the books balance", { timeout: 360_000 }, async (t) => {
  if (!requireTool(t, "nbdfuse", "fusermount3", "mkfs.ext4", "mount", "umount", "losetup", "runuser")) return;
  if (!requireRoot(t)) return;
  if (!requireThat(t, fs.existsSync(path.join(pgBin, "postgres")) && fs.existsSync(path.join(pgBin, "pgbench")), `PostgreSQL 15 binaries under ${pgBin}`)) return;
  await runDrill(t, async (seed) => {
    const prng = new Prng(seed);
    const phase = phaseClock(t);
    const work = await tmpDir("tidemark-drill5-");
    openUpPath(work);
    const dataMnt = path.join(work, "data");
    const walMnt = path.join(work, "wal");
    const socketDir = path.join(work, "sock");
    await fsp.mkdir(socketDir);
    await runOk("chown", [`${pgUser}:`, socketDir]);

    const { a, b } = await startPairNodes();
    await makeGroup(a, "gdata", [{ name: "vdata", size: "512M" }]);
    await makeGroup(a, "gwal", [{ name: "vwal", size: "512M" }]);
    await pairCreate(a, "gdata", b, { transfer: "push", streams: 4, reflect: "time" });
    await pairCreate(a, "gwal", b, { transfer: "push", streams: 2, reflect: "time" });
    phase("nodes up, gdata and gwal replicating");

    await mkfsOn(a, "vdata");
    await mkfsOn(a, "vwal");
    const mountsA: VolumeMount[] = [await mountVolume(a, "vdata", dataMnt), await mountVolume(a, "vwal", walMnt)];
    await runOk("chown", [`${pgUser}:`, dataMnt, walMnt]);
    const pgData = path.join(dataMnt, "pgdata");
    const pgWal = path.join(walMnt, "pg_wal");
    await pgRun("initdb", ["-D", pgData, "-X", pgWal, "-A", "trust", "-U", pgUser, "--no-instructions"]);
    // Written by us, not by postgres: fsync it, or a crash may leave its new tail as NULs
    // (the first run of this drill did exactly that: the size update was journaled before the
    // appended bytes, which sat in A's page cache, ever reached the device).
    const conf = await fsp.open(path.join(pgData, "postgresql.conf"), "a");
    await conf.appendFile([
      "", "# tidemark drill 5",
      "shared_buffers = 32MB", "max_wal_size = 128MB", "min_wal_size = 32MB", "checkpoint_timeout = 30s",
      "fsync = on", "synchronous_commit = on", "full_page_writes = on", "max_connections = 20", "",
    ].join("\n"));
    await conf.sync();
    await conf.close();
    await runOk("sync", ["-f", pgData]);
    phase(`ext4 on both volumes, initdb -D ${pgData} -X ${pgWal}`);

    const pgA = await startPostgres(pgData, socketDir, path.join(work, "postgres-a.log"));
    const [bc, ba] = asPostgres("pgbench", ["-h", "127.0.0.1", "-p", String(pgA.port), "-U", pgUser, "-i", "-s", "2", "-q", "postgres"]);
    await runOk(bc, ba, { timeoutMs: 180_000 });
    phase("postgres up on A, pgbench -i -s 2 done");

    const [rc, ra] = asPostgres("pgbench", ["-h", "127.0.0.1", "-p", String(pgA.port), "-U", pgUser, "-c", "4", "-j", "2", "-T", "120", "-P", "1", "postgres"]);
    const pgbenchLog = path.join(work, "pgbench.log");
    const bench = spawnDaemon(rc, ra, pgbenchLog);
    await waitReflectedProgress(b, ["gdata", "gwal"], 50, 60_000);
    const killAfterMs = prng.int(2_000, 8_000);
    await sleep(killAfterMs);
    const before = { gdata: await pairInfo(a, "gdata"), gwal: await pairInfo(a, "gwal") };
    assert.equal(bench.exitInfo(), null, `pgbench was still running at the kill\n${fs.readFileSync(pgbenchLog, "utf8").slice(-2000)}`);
    await a.kill();
    phase(`A killed ${killAfterMs} ms after B reflected pgbench writes in both groups; gdata ${describePair(before.gdata)}; gwal ${describePair(before.gwal)}`);

    // postgres and pgbench on A now hang on dead mounts: kill them, tear the mounts down.
    killTree(pgA.daemon.pid);
    killTree(bench.pid);
    for (const mount of mountsA) await mount.crashUnmount();
    await stopDaemon(pgA.daemon, "SIGKILL", 30_000);
    await stopDaemon(bench, "SIGKILL", 30_000);
    const progress = fs.readFileSync(pgbenchLog, "utf8").split("\n").filter((l) => l.startsWith("progress:")).slice(-2).join(" | ");
    phase(`postgres and pgbench on A gone, mounts torn down; pgbench last said: ${progress}`);

    const takeoverText = await takeover(b, ["gdata", "gwal"], { force: true }); // A was killed: its site is declared lost
    phase(`takeover: ${takeoverText.replaceAll("\n", "; ")}`);

    // B's copies at the same paths, so the pg_wal symlink in the data directory still points right.
    const mountsB: VolumeMount[] = [await mountVolume(b, "vdata", dataMnt), await mountVolume(b, "vwal", walMnt)];
    await fsp.rm(path.join(pgData, "postmaster.pid"), { force: true }); // A's postmaster is gone; its pid may be reused
    assert.equal(await fsp.readlink(path.join(pgData, "pg_wal")), pgWal, "the data directory's pg_wal symlink points at the WAL mount");
    const pgLogB = path.join(work, "postgres-b.log");
    const pgB = await startPostgres(pgData, socketDir, pgLogB);
    const recoveryLines = fs.readFileSync(pgLogB, "utf8").split("\n").filter((l) => /recover|redo|consistent|database system/i.test(l));
    phase(`postgres recovered on B: ${recoveryLines.slice(-4).join(" | ")}`);

    const sums = await books(pgB);
    t.diagnostic(`books on B: accounts ${sums.accounts}, tellers ${sums.tellers}, branches ${sums.branches}, history ${sums.history} (${sums.historyRows} transactions)`);
    assert.ok(sums.accounts === sums.tellers && sums.tellers === sums.branches && sums.branches === sums.history,
      `pgbench's books do not balance on B after recovery (seed ${seed}): sum(abalance) ${sums.accounts}, sum(tbalance) ${sums.tellers}, sum(bbalance) ${sums.branches}, sum(delta) ${sums.history}`);
    assert.ok(Number(sums.historyRows) > 0, `B kept no pgbench transaction at all (seed ${seed})`);
    const accounts = await pgB.psql("select count(*) from pgbench_accounts");
    assert.equal(accounts, "200000", "pgbench -s 2 made 200000 accounts; all are there");

    await pgRun("pg_ctl", ["stop", "-D", pgData, "-m", "fast", "-w", "-t", "60"]);
    await stopDaemon(pgB.daemon, "SIGTERM", 30_000);
    for (const mount of mountsB) await mount.unmount();
    phase("postgres on B stopped, B's mounts unmounted");
    phase(`A restarted: ${await restartOldPrimary(a, ["gdata", "gwal"])}`);
  });
});
