// Proves durability across a real process crash and honesty on real I/O errors: a child
// process appends and syncs, reports each synced sequence on stdout, and is SIGKILLed;
// the parent reopens and finds every reported record. A child run under `ulimit -f`
// hits EFBIG mid-write: the journal fails, rejects what was pending and everything after,
// and what reopens is exactly a prefix of what was appended.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { GroupJournal } from "../../src/storage/journal.ts";
import { makeRecord, range, removeDir, reopen, tempDir } from "./journal-helpers.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";

const childDir = process.env["TM_JOURNAL_CHILD_DIR"];
const childMode = process.env["TM_JOURNAL_CHILD_MODE"];
const options = { fileSystem: nodeFileSystem, bytesMax: 1 << 30, nextSequence: 1, segmentBytesMax: 256 * 1024 };

/** Child: append bursts, sync some of them, report each sync, forever (until killed). */
async function childSyncLoop(dir: string): Promise<void> {
  const { journal } = await GroupJournal.open(dir, options);
  let burst = 0;
  for (;;) {
    burst += 1;
    const count = 1 + (burst * 7) % 40;
    for (let i = 0; i < count; i += 1) {
      const sequence = journal.nextSequence;
      void journal.append(makeRecord(sequence, (sequence * 97) % 9000)).catch(() => undefined);
    }
    if (burst % 3 === 0) continue; // leave some records unsynced when the kill comes
    const target = journal.lastSequence;
    await journal.sync();
    process.stdout.write(`synced ${target}\n`);
  }
}

/** Child under a file size limit: append until the journal fails, then report what it says. */
async function childFileTooBig(dir: string): Promise<void> {
  const { journal } = await GroupJournal.open(dir, options);
  let firstError: NodeJS.ErrnoException | undefined;
  let lastOk = 0;
  const inFlight: Promise<void>[] = [];
  for (let sequence = 1; sequence <= 2000 && firstError === undefined; sequence += 1) {
    inFlight.push(journal.append(makeRecord(sequence, 3000)).then(
      () => { lastOk = Math.max(lastOk, sequence); },
      (error: unknown) => { firstError ??= error as NodeJS.ErrnoException; },
    ));
    if (sequence % 10 === 0) await Promise.all(inFlight); // batches of ~30 KiB: several succeed, one is cut short
  }
  await Promise.all(inFlight);
  const afterAppend = await journal.append(makeRecord(journal.nextSequence, 10)).then(() => "ok", (e: unknown) => (e as NodeJS.ErrnoException).code);
  const afterSync = await journal.sync().then(() => "ok", (e: unknown) => (e as NodeJS.ErrnoException).code);
  const afterClose = await journal.close().then(() => "ok", (e: unknown) => (e as NodeJS.ErrnoException).code);
  process.stdout.write(JSON.stringify({
    error: firstError?.code, lastOk, written: journal.writtenSequence, durable: journal.durableSequence,
    failed: journal.failed !== undefined, afterAppend, afterSync, afterClose,
  }) + "\n");
}

function spawnChild(dir: string, mode: string, fileSizeLimitBlocks?: number): ReturnType<typeof spawn> {
  const env: NodeJS.ProcessEnv = { ...process.env, TM_JOURNAL_CHILD_DIR: dir, TM_JOURNAL_CHILD_MODE: mode };
  delete env["NODE_TEST_CONTEXT"];
  const file = fileURLToPath(import.meta.url);
  if (fileSizeLimitBlocks === undefined) return spawn(process.execPath, [file], { env, stdio: ["ignore", "pipe", "inherit"] });
  // `ulimit -f` counts 1024-byte blocks; writes past it fail with EFBIG (Node ignores SIGXFSZ).
  return spawn("bash", ["-c", `ulimit -f ${fileSizeLimitBlocks} && exec "$0" "$1"`, process.execPath, file], { env, stdio: ["ignore", "pipe", "inherit"] });
}

if (childDir !== undefined) {
  if (childMode === "sync-loop") await childSyncLoop(childDir);
  else if (childMode === "efbig") await childFileTooBig(childDir);
  else throw new Error(`unknown child mode ${childMode}`);
} else {
  void test("SIGKILL after sync: every record the child reported synced is there after reopen", async () => {
    const dir = await tempDir("crash");
    try {
      let syncedThrough = 0;
      for (let round = 1; round <= 3; round += 1) {
        const child = spawnChild(dir, "sync-loop");
        const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
        let reports = 0;
        let buffered = "";
        await new Promise<void>((resolve, reject) => {
          child.on("error", reject);
          child.stdout!.on("data", (chunk: Buffer) => {
            buffered += chunk.toString("utf8");
            let newline = buffered.indexOf("\n");
            while (newline >= 0) {
              const line = buffered.slice(0, newline);
              buffered = buffered.slice(newline + 1);
              const match = /^synced (\d+)$/.exec(line);
              assert.ok(match !== null, `child said ${line}`);
              syncedThrough = Math.max(syncedThrough, Number(match[1]));
              reports += 1;
              // Kill at a different moment each round, mid-stream.
              if (reports === 40 * round) {
                child.kill("SIGKILL");
                resolve();
              }
              newline = buffered.indexOf("\n");
            }
          });
          void exited.then(() => resolve());
        });
        assert.equal(await exited, "SIGKILL");
        const recovered = await reopen(dir, options);
        const last = recovered.sequences[recovered.sequences.length - 1] ?? 0;
        assert.ok(last >= syncedThrough, `round ${round}: synced through ${syncedThrough}, recovered through ${last}`);
        assert.deepEqual(recovered.sequences, range(1, last));
        assert.ok(recovered.allExpected, "every recovered record has the content that was appended");
        await recovered.journal.close();
        syncedThrough = last;
      }
      assert.ok(syncedThrough > 100, `the children got somewhere (${syncedThrough})`);
    } finally {
      await removeDir(dir);
    }
  });

  void test("a write error (EFBIG under ulimit -f) fails the journal and rejects everything pending and after", async () => {
    const dir = await tempDir("efbig");
    try {
      const child = spawnChild(dir, "efbig", 128); // 128 KiB per file, below the 256 KiB segments; records ~3 KiB
      let output = "";
      child.stdout!.on("data", (chunk: Buffer) => { output += chunk.toString("utf8"); });
      const code = await new Promise<number | null>((resolve) => child.on("exit", (exitCode) => resolve(exitCode)));
      assert.equal(code, 0, output);
      const result = JSON.parse(output) as Record<string, unknown>;
      assert.equal(result["error"], "EFBIG");
      assert.equal(result["failed"], true);
      assert.equal(result["afterAppend"], "EFBIG");
      assert.equal(result["afterSync"], "EFBIG");
      assert.equal(result["afterClose"], "EFBIG");
      assert.equal(result["lastOk"], result["written"], "an append resolved only if its bytes were written");
      assert.ok((result["written"] as number) >= 30, `some batches were written first (${String(result["written"])})`);
      const recovered = await reopen(dir, options);
      const last = recovered.sequences[recovered.sequences.length - 1] ?? 0;
      assert.deepEqual(recovered.sequences, range(1, last), "a prefix, in order");
      assert.ok(last >= (result["durable"] as number));
      assert.ok(recovered.allExpected);
      await recovered.journal.close();
    } finally {
      await removeDir(dir);
    }
  });
}
