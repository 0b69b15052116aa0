// Proves the `tidemark` command line end to end over HTTP: spawns `node bin/tidemark.js ...`
// against the management API started in-process (port 0, fake control) and checks stdout,
// stderr (one line on failure) and exit codes (0 ok, 1 failed, 2 usage) for every command.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startMgmtApi, type MgmtApi } from "../../src/mgmt/mgmt-api.ts";
import { FakeControl } from "./mgmt-fake-control.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const GiB = 1024 ** 3;

let api: MgmtApi;
let control: FakeControl;
let nodeUrl: string;

before(async () => {
  control = new FakeControl();
  api = await startMgmtApi({ host: "127.0.0.1", port: 0, control, logger: pino({ level: "silent" }) });
  nodeUrl = `http://127.0.0.1:${api.port}`;
});

after(async () => {
  await api.close();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function tidemark(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["bin/tidemark.js", ...args],
      { cwd: repoRoot, timeout: 20_000, env: { ...process.env, NO_COLOR: "1" } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A failure: the exit status, nothing on stdout, exactly one line on stderr starting "tidemark: ". */
function assertFailure(run: Run, code: number, pattern: RegExp): void {
  assert.equal(run.code, code, `exit status; stderr: ${run.stderr}`);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, /^tidemark: [^\n]+\n$/, "one line on stderr");
  assert.match(run.stderr, pattern);
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

void test("volume create, group create, then list and status, human and --json", async () => {
  const db = await tidemark("volume", "create", "db", "--size", "10G", "--node", nodeUrl);
  assert.equal(db.code, 0, db.stderr);
  assert.equal(db.stdout, "created volume db (10.0 GiB)\n");
  assert.equal(db.stderr, "");
  assert.equal(control.volumes.get("db")?.sizeBytes, 10 * GiB);

  const logs = await tidemark("volume", "create", "logs", "--size", "512M", "--node", nodeUrl, "--json");
  assert.equal(logs.code, 0, logs.stderr);
  assert.deepEqual(JSON.parse(logs.stdout), {
    volume: { name: "logs", sizeBytes: 512 * 1024 * 1024, allocatedBytes: 0, group: null, readOnly: false },
  });

  const group = await tidemark("group", "create", "g1", "--volumes", "db,logs", "--node", nodeUrl);
  assert.equal(group.code, 0, group.stderr);
  assert.equal(group.stdout, "created group g1 with volumes db, logs\n");

  const [volumes, volumesJson, groups, groupsJson, status, statusJson] = await Promise.all([
    tidemark("volume", "list", "--node", nodeUrl),
    tidemark("volume", "list", "--node", nodeUrl, "--json"),
    tidemark("group", "list", "--node", nodeUrl),
    tidemark("group", "list", "--json", "--node", nodeUrl),
    tidemark("status", "--node", nodeUrl),
    tidemark("status", "--node", nodeUrl, "--json"),
  ]);
  for (const run of [volumes, volumesJson, groups, groupsJson, status, statusJson]) assert.equal(run.code, 0, run.stderr);

  assert.equal(
    volumes.stdout,
    [
      "NAME       SIZE  ALLOCATED  GROUP  RO",
      "db     10.0 GiB        0 B  g1     no",
      "logs  512.0 MiB        0 B  g1     no",
      "",
    ].join("\n"),
  );
  assert.deepEqual(JSON.parse(volumesJson.stdout), { volumes: control.listVolumes() });

  const groupLines = groups.stdout.split("\n");
  assert.match(groupLines[0]!, /^NAME\s+STATE\s+VOLUMES\s+NEXT SEQ\s+APPLIED SEQ\s+DURABLE SEQ\s+JOURNAL\s+SEGMENTS$/);
  assert.match(groupLines[1]!, /^g1\s+ok\s+db,logs\s+1\s+0\s+0\s+12\.0 MiB \/ 4\.0 GiB \(0\.3%\)\s+1$/);
  assert.deepEqual(JSON.parse(groupsJson.stdout), { groups: control.listGroups() });

  assert.match(status.stdout, /^node:\s+fake-a \(tidemark 0\.1\.0\)$/m);
  assert.match(status.stdout, /^write time policy:\s+host$/m);
  assert.match(status.stdout, /^listeners:\s+mgmt 127\.0\.0\.1:7480 {2}nbd 127\.0\.0\.1:10809 {2}host 127\.0\.0\.1:7410 {2}repl 127\.0\.0\.1:7400$/m);
  assert.match(status.stdout, /^uptime:\s+1h 2m \(since 2025-01-01T00:00:00\.000Z\)$/m);
  assert.match(status.stdout, /^recorded write time:\s+2025-01-01T00:00:00\.000000Z$/m);
  assert.match(status.stdout, /^VOLUMES\nNAME\s+SIZE\s+ALLOCATED\s+GROUP\s+RO\ndb\s/m);
  assert.match(status.stdout, /^GROUPS\nNAME\s+STATE\s+VOLUMES.*\ng1\s+ok\s+db,logs/m);
  assert.deepEqual(JSON.parse(statusJson.stdout), JSON.parse(JSON.stringify(control.status())));
});

void test("empty lists say how to create the first one", async () => {
  const empty = new FakeControl();
  const emptyApi = await startMgmtApi({ host: "127.0.0.1", port: 0, control: empty, logger: pino({ level: "silent" }) });
  try {
    const url = `http://127.0.0.1:${emptyApi.port}`;
    const [volumes, groups] = await Promise.all([tidemark("volume", "list", "--node", url), tidemark("group", "list", "--node", url)]);
    assert.equal(volumes.code, 0);
    assert.match(volumes.stdout, /^no volumes; create one with `tidemark volume create NAME --size SIZE`\n$/);
    assert.match(groups.stdout, /^no groups; /);
  } finally {
    await emptyApi.close();
  }
});

void test("API errors: exit 1 and one line with the node's message, code and a hint", async () => {
  const first = await tidemark("volume", "create", "dup", "--size", "1M", "--node", nodeUrl);
  assert.equal(first.code, 0, first.stderr);
  const [again, missing, tiny] = await Promise.all([
    tidemark("volume", "create", "dup", "--size", "1M", "--node", nodeUrl),
    tidemark("group", "create", "g2", "--volumes", "nope", "--node", nodeUrl),
    tidemark("volume", "create", "tiny", "--size", "1K", "--node", nodeUrl),
  ]);
  assertFailure(again, 1, /^tidemark: cannot create volume 'dup': volume 'dup' already exists \[TM_ERR_EXISTS\]; pick another name/);
  assertFailure(missing, 1, /volume 'nope' does not exist \[TM_ERR_NOT_FOUND\]; create it first with `tidemark volume create`/);
  assertFailure(tiny, 2, /^tidemark: --size 1K is below the minimum of 4\.0 KiB/);
});

void test("usage errors: exit 2 and one line that says what to do", async () => {
  const runs = await Promise.all([
    tidemark("volume", "create", "x", "--node", nodeUrl),
    tidemark("volume", "create", "x", "--size", "12X", "--node", nodeUrl),
    tidemark("volumes"),
    tidemark("volume", "shrink", "x"),
    tidemark("volume", "create", "x", "--size", "1G", "--colour", "red"),
    tidemark("volume"),
    tidemark(),
    tidemark("volume", "create", "bad/name", "--size", "1G"),
    tidemark("group", "create", "g", "--volumes", "a,,b"),
    tidemark("status", "--node", "ftp://x"),
    tidemark("volume", "list", "extra"),
    tidemark("--node", "ftp://x", "status"),
  ]);
  const expected: RegExp[] = [
    /required option '--size <SIZE>' not specified; see `tidemark volume create --help`/,
    /--size '12X' has an unknown unit 'X'; use a number of bytes or a K, M, G or T suffix/,
    /unknown command 'volumes' \(Did you mean volume\?\); see `tidemark --help`/,
    /unknown command 'shrink'; see `tidemark volume --help`/,
    /unknown option '--colour'; see `tidemark volume create --help`/,
    /`tidemark volume` needs a subcommand \(create, resize, delete, list\); see `tidemark volume --help`/,
    /`tidemark` needs a command \(node, volume, group, status, pair, demo\); see `tidemark --help`/,
    /volume name "bad\/name" may only hold letters, digits/,
    /--volumes "a,,b" has an empty name/,
    /--node "ftp:\/\/x" must use http:\/\/ or https:\/\//,
    /too many arguments for 'list'/,
    /--node "ftp:\/\/x" must use http:\/\/ or https:\/\//,
  ];
  runs.forEach((run, index) => assertFailure(run, 2, expected[index]!));
  assert.equal(control.volumes.has("x"), false, "nothing was created by a usage error");
});

void test("an unreachable node: exit 1, one line naming the URL and what to do", async () => {
  const port = await closedPort();
  const run = await tidemark("status", "--node", `http://127.0.0.1:${port}`);
  assertFailure(
    run,
    1,
    new RegExp(`^tidemark: cannot reach node at http://127\\.0\\.0\\.1:${port} \\(connection refused\\); is \`tidemark node\` running\\? use --node URL\n$`),
  );
});

void test("--help and --version print to stdout and exit 0", async () => {
  const [help, subHelp, version, helpCommand] = await Promise.all([
    tidemark("--help"),
    tidemark("volume", "create", "--help"),
    tidemark("--version"),
    tidemark("help", "group"),
  ]);
  assert.equal(helpCommand.code, 0);
  assert.match(helpCommand.stdout, /^Usage: tidemark group /);
  assert.equal(helpCommand.stderr, "");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: tidemark /);
  assert.match(help.stdout, /volume/);
  assert.equal(subHelp.code, 0);
  assert.match(subHelp.stdout, /--size <SIZE>/);
  assert.match(subHelp.stdout, /--node <URL>/);
  assert.match(subHelp.stdout, /--json/);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
});
