// Proves `tidemark pair ...` end to end over HTTP: spawns `node bin/tidemark.js pair ...`
// against the management API started in-process (port 0) over the fake control, whose pairs
// move while they are read (copy steps per GET, reflected sequence with wall time), and checks
// stdout, the one stderr line on failure, exit codes (0/1/2), and what the CLI sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { replStreamsMax } from "../../src/core/limits.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { startMgmtApi } from "../../src/mgmt/mgmt-api.ts";
import { FakeControl } from "./mgmt-fake-control.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const MiB = 1024 * 1024;
const secondaryUrl = "http://127.0.0.1:7481";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

function tidemark(...args: string[]): Promise<Run> {
  const startMs = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["bin/tidemark.js", ...args],
      { cwd: repoRoot, timeout: 20_000, env: { ...process.env, NO_COLOR: "1" } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
        resolve({ code, stdout, stderr, elapsedMs: Date.now() - startMs });
      },
    );
  });
}

function assertFailure(run: Run, code: number, pattern: RegExp): void {
  assert.equal(run.code, code, `exit status; stderr: ${run.stderr}`);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, /^tidemark: [^\n]+\n$/, "one line on stderr");
  assert.match(run.stderr, pattern);
}

function assertOk(run: Run): void {
  assert.equal(run.code, 0, `exit status; stderr: ${run.stderr}`);
  assert.equal(run.stderr, "");
}

/** A node (API over a fake control) with group g1 of one 1 MiB volume; closed after `body`. */
async function withNode(body: (control: FakeControl, node: string) => Promise<void>): Promise<void> {
  const control = new FakeControl();
  await control.createVolume("v1", MiB);
  await control.createGroup("g1", ["v1"]);
  const api = await startMgmtApi({ host: "127.0.0.1", port: 0, control, logger: pino({ level: "silent" }) });
  try {
    await body(control, `http://127.0.0.1:${api.port}`);
  } finally {
    await api.close();
  }
}

void test("pair create without a terminal: no bar, waits for the copy, prints one final line; defaults sent", async () => {
  await withNode(async (control, node) => {
    control.copyReads = 3;
    const run = await tidemark("pair", "create", "g1", "--to", `${secondaryUrl}/`, "--node", node);
    assertOk(run);
    assert.match(
      run.stdout,
      /^pair of group g1 is replicating to group g1 on fake-b \(http:\/\/127\.0\.0\.1:7481\), initial copy of 1\.0 MiB took \d+\.\ds\n$/,
    );
    assert.ok(run.elapsedMs >= 3 * 200, "it polled until the copy was done");
    assert.deepEqual(control.pairRequests, [{ group: "g1", to: secondaryUrl, mode: "async", transfer: "push", streams: 4, reflect: "time" }]);
    assert.equal(control.pairs.get("g1")?.info.state, "replicating");
  });
});

void test("pair create passes every option, and --json prints the final PairInfo", async () => {
  await withNode(async (control, node) => {
    control.copyReads = 2;
    const run = await tidemark(
      "pair", "create", "g1", "--to", "127.0.0.1:7481", "--remote-group", "g1-dr", "--mode", "async",
      "--transfer", "pull", "--streams", String(replStreamsMax), "--reflect", "seq", "--node", node, "--json",
    );
    assertOk(run);
    const pair = JSON.parse(run.stdout) as PairInfo;
    assert.equal(pair.state, "replicating");
    assert.equal(pair.copy, null);
    assert.equal(pair.remoteGroup, "g1-dr");
    assert.deepEqual(control.pairRequests, [
      { group: "g1", to: secondaryUrl, remoteGroup: "g1-dr", mode: "async", transfer: "pull", streams: replStreamsMax, reflect: "seq" },
    ]);
  });
});

void test("pair create: a failed copy, an unreachable secondary and an existing pair exit 1 with one line; sync mode exits 2 (not available yet)", async () => {
  await withNode(async (control, node) => {
    control.copyReads = 2;
    control.copyFailure = "secondary volume v1 could not be written (ENOSPC)";
    assertFailure(
      await tidemark("pair", "create", "g1", "--to", secondaryUrl, "--node", node),
      1,
      /^tidemark: the initial copy of group 'g1' failed: secondary volume v1 could not be written \(ENOSPC\); see `tidemark pair status g1`\n$/,
    );
    assertFailure(
      await tidemark("pair", "create", "g1", "--to", secondaryUrl, "--node", node),
      1,
      /cannot create a pair for group 'g1': group 'g1' already has a pair \[TM_ERR_EXISTS\]; see `tidemark pair status g1`/,
    );
    control.pairs.clear();
    control.secondaryUnreachable = true;
    assertFailure(
      await tidemark("pair", "create", "g1", "--to", secondaryUrl, "--node", node),
      1,
      /refused the connection \(ECONNREFUSED\): nothing listens there; check that `tidemark node` runs on the secondary and that --to is its management address \(its --mgmt, not --repl or --nbd\) \[TM_ERR_UNREACHABLE\]\n$/,
    );
    control.secondaryUnreachable = false;
    // Later (CONTRACT.md): refused by the CLI itself, exit 2, nothing sent.
    const asked = control.pairRequests.length;
    assertFailure(await tidemark("pair", "create", "g1", "--to", secondaryUrl, "--mode", "sync", "--node", node), 2, /^tidemark: --mode sync is not available yet: .*use --mode async \(the default\)\n$/);
    assert.equal(control.pairRequests.length, asked, "nothing was sent to the node");
    assertFailure(
      await tidemark("pair", "create", "nope", "--to", secondaryUrl, "--node", node),
      1,
      /group 'nope' does not exist \[TM_ERR_NOT_FOUND\]; create the group first with `tidemark group create`/,
    );
  });
});

const hasScript = spawnSync("script", ["--version"]).status === 0;

void test("pair create on a terminal draws a progress bar and ends at 100%", { skip: hasScript ? false : "util-linux `script` not installed" }, async () => {
  await withNode(async (control, node) => {
    control.copyReads = 4;
    const command = ["node", "bin/tidemark.js", "pair", "create", "g1", "--to", secondaryUrl, "--node", node].join(" ");
    const run = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile("script", ["-qec", command, "/dev/null"], { cwd: repoRoot, timeout: 20_000, env: { ...process.env, PATH: `${process.execPath.replace(/\/[^/]+$/, "")}:${process.env.PATH ?? ""}` } }, (error, stdout) => {
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, out: stdout });
      });
    });
    assert.equal(run.code, 0, run.out);
    assert.match(run.out, /copying g1 \[[^\]]*\] \d+% \| [\d.]+ (B|KiB|MiB) \/ 1\.0 MiB \|/);
    assert.match(run.out, /copying g1 \[[^\]]*\] 100% \| 1\.0 MiB \/ 1\.0 MiB/);
    assert.match(run.out, /pair of group g1 is replicating to group g1 on fake-b/);
  });
});

void test("pair status: every field for one pair and for all, --json as the API answered, empty and missing", async () => {
  await withNode(async (control, node) => {
    const none = await tidemark("pair", "status", "--node", node);
    assertOk(none);
    assert.equal(none.stdout, "no pairs; create one with `tidemark pair create GROUP --to SECONDARY_MGMT_URL`\n");

    control.addPair({
      group: "g1", remoteUrl: secondaryUrl, remoteGroup: "g1-dr", streams: 8, transfer: "pull", reflect: "marker", state: "copying",
      acceptedSequence: 1500, sentSequence: 1450, arrivedSequence: 1300, reflectedSequence: 1200, heldWrites: 3,
      reason: "journal 92% full: writes are slowed", copy: { doneBytes: 256 * 1024, totalBytes: MiB },
      link: { connectedStreams: 6, reconnects: 2, lastError: "ECONNRESET from 127.0.0.1:7400", sentBytes: 0, downSince: null, receivedBytes: 0 },
    });
    control.addPair({ group: "s1", role: "secondary", remoteNode: "node-a", acceptedSequence: 9, arrivedSequence: 9, reflectedSequence: 9 });
    const one = await tidemark("pair", "status", "g1", "--node", node);
    assertOk(one);
    assert.equal(
      one.stdout,
      [
        "pair g1 (primary, id fake-a/g1)",
        "  state:        copying",
        "  remote:       group g1-dr on fake-b (http://127.0.0.1:7481)",
        "  transfer:     async, pull, 8 streams, reflect marker",
        "  sequence:     accepted 1500  sent 1450  arrived 1300  reflected 1200",
        "  lag:          300 records, 1.2 MiB, 0.3s",
        "  journal:      12.0 MiB / 4.0 GiB (0.3%)",
        "  held writes:  3",
        "  reason:       journal 92% full: writes are slowed",
        "  link:         6/8 streams connected, 2 reconnects, last error: ECONNRESET from 127.0.0.1:7400",
        "  copy:         25.0% (256.0 KiB / 1.0 MiB)",
        "",
      ].join("\n"),
    );
    const all = await tidemark("pair", "status", "--node", node);
    assertOk(all);
    assert.match(all.stdout, /^pair g1 \(primary, id fake-a\/g1\)\n[\s\S]*\n\npair s1 \(secondary, id fake-a\/s1\)\n {2}state: {8}replicating\n/);
    assert.doesNotMatch(all.stdout.split("\n\n")[1]!, /reason:|copy:/, "no reason or copy lines when there is none");

    const json = await tidemark("pair", "status", "--node", node, "--json");
    assertOk(json);
    assert.deepEqual(JSON.parse(json.stdout), { pairs: control.listPairs() });
    const oneJson = await tidemark("pair", "status", "s1", "--json", "--node", node);
    assert.equal((JSON.parse(oneJson.stdout) as PairInfo).role, "secondary");

    assertFailure(
      await tidemark("pair", "status", "g9", "--node", node),
      1,
      /cannot get the pair of group 'g9': group 'g9' has no pair \[TM_ERR_NOT_FOUND\]/,
    );
  });
});

void test("pair wait returns once what was accepted at the start is reflected, though writes go on", async () => {
  await withNode(async (control, node) => {
    // accepted grows by 100 on every read; reflected catches up at 2000 records/s: it passes 1500 but never the moving end.
    control.addPair({ group: "g1", acceptedSequence: 1500, sentSequence: 1500, arrivedSequence: 1200, reflectedSequence: 1000 }, { acceptedPerRead: 100, reflectedPerSecond: 2000 });
    const run = await tidemark("pair", "wait", "g1", "--timeout", "10s", "--node", node);
    assertOk(run);
    assert.match(run.stdout, /^reflected through sequence 1500 on the secondary after \d+\.\ds\n$/);
    const info = control.pairs.get("g1")!.info;
    assert.ok(info.reflectedSequence >= 1500);
    assert.ok(info.acceptedSequence > 1500, "the primary kept accepting");

    const json = await tidemark("pair", "wait", "g1", "--node", node, "--json");
    assertOk(json);
    assert.equal((JSON.parse(json.stdout) as PairInfo).group, "g1");
  });
});

void test("pair wait: timeout says how far it got; a failed pair or a secondary exits 1 at once", async () => {
  await withNode(async (control, node) => {
    control.addPair({ group: "g1", acceptedSequence: 1500, arrivedSequence: 1300, reflectedSequence: 1200 }, { acceptedPerRead: 0, reflectedPerSecond: 0 });
    const slow = await tidemark("pair", "wait", "g1", "--timeout", "1s", "--node", node);
    assertFailure(slow, 1, /^tidemark: timed out: reflected 1200 of 1500 after 1\.\ds; see `tidemark pair status g1`\n$/);
    assert.ok(slow.elapsedMs >= 1000, `waited the whole timeout (${slow.elapsedMs} ms)`);

    control.addPair({ group: "g2", acceptedSequence: 10, reflectedSequence: 5, state: "suspended", reason: "suspended by the operator" });
    assertFailure(
      await tidemark("pair", "wait", "g2", "--timeout", "300ms", "--node", node),
      1,
      /timed out: reflected 5 of 10 after 0\.\ds \(pair is suspended: suspended by the operator\)/,
    );

    control.addPair({ group: "g3", acceptedSequence: 10, reflectedSequence: 5, state: "failed", reason: "secondary refused: journal corrupt" });
    const failed = await tidemark("pair", "wait", "g3", "--timeout", "30s", "--node", node);
    assertFailure(failed, 1, /the pair of group 'g3' is failed: secondary refused: journal corrupt; reflected 5 of 10/);
    assert.ok(failed.elapsedMs < 10_000);

    control.addPair({ group: "s1", role: "secondary", acceptedSequence: 10, reflectedSequence: 5 });
    assertFailure(await tidemark("pair", "wait", "s1", "--node", node), 1, /is the secondary of its pair; run `tidemark pair wait` against the primary/);

    control.addPair({ group: "g4", acceptedSequence: 7, reflectedSequence: 7 });
    const done = await tidemark("pair", "wait", "g4", "--timeout", "0s", "--node", node);
    assertOk(done);
    assert.match(done.stdout, /^reflected through sequence 7 on the secondary after 0\.\ds\n$/);
  });
});

void test("pair suspend and resume print the new state; the wrong state exits 1", async () => {
  await withNode(async (control, node) => {
    control.addPair({ group: "g1" });
    const suspended = await tidemark("pair", "suspend", "g1", "--node", node);
    assertOk(suspended);
    assert.equal(suspended.stdout, "suspended pair of group g1: now suspended (suspended by the operator)\n");
    assertFailure(
      await tidemark("pair", "suspend", "g1", "--node", node),
      1,
      /cannot suspend the pair of group 'g1': .* \[TM_ERR_STATE\]; see `tidemark pair status g1`/,
    );
    const resumed = await tidemark("pair", "resume", "g1", "--node", node, "--json");
    assertOk(resumed);
    assert.equal((JSON.parse(resumed.stdout) as PairInfo).state, "replicating");
    assertFailure(await tidemark("pair", "resume", "g9", "--node", node), 1, /\[TM_ERR_NOT_FOUND\]/);
  });
});

void test("pair suspend and resume take a comma list (CONTRACT.md, issue 8): the node checks every name first and changes nothing if one is refused, then each in order", async () => {
  await withNode(async (control, node) => {
    control.addPair({ group: "g1" });
    control.addPair({ group: "g2" });
    const both = await tidemark("pair", "suspend", "g1,g2", "--node", node);
    assertOk(both);
    assert.equal(both.stdout, "suspended pair of group g1: now suspended (suspended by the operator)\nsuspended pair of group g2: now suspended (suspended by the operator)\n");
    assertFailure(await tidemark("pair", "resume", "g1,,g2", "--node", node), 2, /empty name/);
    assertFailure(await tidemark("pair", "resume", "g1,g1", "--node", node), 2, /listed twice/);
    const partly = await tidemark("pair", "resume", "g1,g9,g2", "--node", node);
    assert.equal(partly.code, 1);
    assert.match(partly.stderr, /cannot resume the pairs of 'g1', 'g9', 'g2': .*'g9'.*\[TM_ERR_NOT_FOUND\]/);
    assert.equal(partly.stdout, "");
    assert.equal(control.pairs.get("g1")?.info.state, "suspended", "g1 was not resumed: g9 was refused first");
  });
});

void test("pair takeover prints per group what was kept and dropped; on a primary it exits 1", async () => {
  await withNode(async (control, node) => {
    control.addPair({ group: "s1", role: "secondary", acceptedSequence: 1500, arrivedSequence: 1400, reflectedSequence: 1200 });
    control.addPair({ group: "s2", role: "secondary", acceptedSequence: 80, arrivedSequence: 80, reflectedSequence: 79 });
    control.addPair({ group: "g1" });
    const run = await tidemark("pair", "takeover", "s1,s2", "--node", node);
    assertOk(run);
    assert.equal(
      run.stdout,
      "s1: kept through sequence 1200, dropped 200 records beyond it, now takeover\ns2: kept through sequence 79, dropped 1 record beyond it, now takeover\n",
    );
    assert.deepEqual(control.pairRequests.at(-1), { takeover: ["s1", "s2"] });

    control.addPair({ group: "s3", role: "secondary", arrivedSequence: 4, reflectedSequence: 4 });
    const json = await tidemark("pair", "takeover", "s3", "--json", "--node", node);
    assertOk(json);
    assert.deepEqual(JSON.parse(json.stdout), { results: [{ group: "s3", reflectedSequence: 4, droppedRecords: 0, state: "takeover" }] });

    assertFailure(
      await tidemark("pair", "takeover", "g1", "--node", node),
      1,
      /cannot take over group 'g1': .*primary.*\[TM_ERR_STATE\]; run takeover with --node pointing at the secondary/,
    );
  });
});

void test("wrong input: exit 2 with one line that says what to do, and nothing sent", async () => {
  await withNode(async (control, node) => {
    const cases: Array<[string[], RegExp]> = [
      [["pair", "create", "g1", "--to", secondaryUrl, "--transfer", "teleport"], /--transfer "teleport" is not valid; use push or pull/],
      [["pair", "create", "g1", "--to", secondaryUrl, "--streams", "0"], new RegExp(`--streams "0" is not valid; use a whole number from 1 to ${replStreamsMax}`)],
      [["pair", "create", "g1", "--to", secondaryUrl, "--streams", "99"], /--streams "99" is not valid/],
      [["pair", "create", "g1", "--to", secondaryUrl, "--streams", "four"], /--streams "four" is not valid/],
      [["pair", "create", "g1", "--to", secondaryUrl, "--mode", "semi"], /--mode "semi" is not valid; use async\n/],
      [["pair", "create", "g1", "--to", secondaryUrl, "--reflect", "random"], /--reflect "random" is not valid; use time or seq\n/],
      [["pair", "create", "g1"], /required option '--to <SECONDARY_MGMT_URL>' not specified; see `tidemark pair create --help`/],
      [["pair", "create", "g1", "--to", "ftp://host"], /--to "ftp:\/\/host" must use http:\/\/ or https:\/\//],
      [["pair", "create", "g1", "--to", "http://[::1"], /--to "http:\/\/\[::1" is not a URL/],
      [["pair", "create", "g1", "--to", secondaryUrl, "--remote-group", "a/b"], /group name "a\/b" may only hold/],
      [["pair", "create", "bad name", "--to", secondaryUrl], /group name "bad name" may only hold/],
      [["pair", "create", "--to", secondaryUrl], /missing required argument 'GROUP'/],
      [["pair", "takeover"], /missing required argument 'GROUP\[,GROUP\.\.\.\]'/],
      [["pair", "takeover", ","], /takeover needs at least one group name/],
      [["pair", "takeover", "a,,b"], /groups "a,,b" have an empty name; separate names with single commas/],
      [["pair", "takeover", "a,a"], /group 'a' is listed twice/],
      [["pair", "wait", "g1", "--timeout", "5 parsecs"], /--timeout '5 parsecs' is not understood; use a number with ms, s, m or h/],
      [["pair", "wait"], /missing required argument 'GROUP'/],
      [["pair", "status", "a", "b"], /too many arguments for 'status'/],
      [["pair", "split", "g1"], /unknown command 'split'/],
    ];
    const runs = await Promise.all(cases.map(([args]) => tidemark(...args, "--node", node)));
    runs.forEach((run, index) => assertFailure(run, 2, cases[index]![1]));
    const [bare, before] = await Promise.all([tidemark("pair"), tidemark("pair", "--node", node, "--json", "status")]);
    assertFailure(bare, 2, /`tidemark pair` needs a subcommand \(create, status, wait, suspend, resume, detach, attach, takeover, unfence, delete, set\); see `tidemark pair --help`/);
    assertOk(before);
    assert.deepEqual(Object.keys(JSON.parse(before.stdout) as object), ["pairs"], "--node and --json before the subcommand are taken");
    assert.equal(control.pairRequests.length, 0, "no usage error reached the node");
  });
});
