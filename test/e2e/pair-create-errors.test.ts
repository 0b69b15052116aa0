// Proves that `pair create` fails as a new user meets it with one clear line (review of issue 6,
// R11), real nodes on 127.0.0.1: --to where nothing listens, --to a port that does not speak
// HTTP (the secondary's replication port), --to the primary itself (with or without
// --remote-group), a secondary whose volume of that name has another size (both sizes named),
// each with exit 1, nothing on stdout, one line on stderr saying what to check, and nothing
// created on either node; and a secondary whose replication address cannot be reached from the
// primary: the pair is created, and pair create stops following it after a bounded wait with
// what to check, instead of waiting for ever.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pairCreateLinkWaitMsMax } from "../../src/core/limits.ts";
import type { NodeStatus } from "../../src/mgmt/control.ts";
import { cli, cliOk, freePort, mgmtJson, startNode, type RunResult, type RunningNode } from "./harness.ts";

function failsWithOneLine(result: RunResult, what: string, reason: RegExp, remedy: RegExp): string {
  const context = `${what}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.equal(result.code, 1, context);
  assert.equal(result.stdout, "", `nothing on stdout: ${context}`);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `one line on stderr: ${context}`);
  const line = lines[0] ?? "";
  assert.match(line, /^tidemark: cannot create a pair for group 'g': /, context);
  assert.match(line, reason, `says what is wrong: ${context}`);
  assert.match(line, remedy, `says what to do: ${context}`);
  return line;
}

async function groupsOf(node: RunningNode): Promise<string[]> {
  return ((await mgmtJson(node.mgmtUrl, "/v1/status")) as NodeStatus).groups.map((g) => g.name).sort();
}

async function pairsOf(node: RunningNode): Promise<unknown[]> {
  return ((await mgmtJson(node.mgmtUrl, "/v1/pairs")) as { pairs: unknown[] }).pairs;
}

void test("pair create refused with one line saying what to check: nothing listens, not HTTP, the primary itself, volume sizes differ", { timeout: 120_000 }, async () => {
  const primary = await startNode({ id: "pce-p" });
  const secondary = await startNode({ id: "pce-s" });
  await cliOk(["volume", "create", "v", "--size", "4M"], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v"], { node: primary.mgmtUrl });
  await cliOk(["volume", "create", "v", "--size", "8M"], { node: secondary.mgmtUrl });
  const nothing = `http://127.0.0.1:${String(await freePort())}`;

  const create = (to: string, ...more: string[]): Promise<RunResult> => cli(["pair", "create", "g", "--to", to, ...more], { node: primary.mgmtUrl, timeoutMs: 60_000 });
  failsWithOneLine(await create(nothing), "nothing listens", /refused the connection \(ECONNREFUSED\)/, /`tidemark node` runs on the secondary.*--to is its management address/);
  failsWithOneLine(await create(`http://127.0.0.1:${String(secondary.replPort)}`), "the replication port", /does not speak HTTP: it is not a management API/, /give --to the secondary's management URL/);
  // Before: "group g already exists on node pce-p; choose another --remote-group", and with one,
  // "volume v ... already belongs to group g": never that the node is itself.
  failsWithOneLine(await create(primary.mgmtUrl), "the primary itself", /--to names node pce-p, the primary itself/, /a pair needs two different nodes; give --to the secondary's management URL/);
  failsWithOneLine(await create(primary.mgmtUrl, "--remote-group", "g2"), "the primary itself, another group name", /the primary itself/, /two different nodes/);
  failsWithOneLine(await create(secondary.mgmtUrl), "sizes differ", /volume v on the secondary \(node pce-s\) is 8\.0 MiB \(8388608 bytes\) but the primary's v is 4\.0 MiB \(4194304 bytes\)/, /a pair needs equal sizes: pair with a secondary that has no volume v/);

  // Nothing was created on either side.
  assert.deepEqual(await pairsOf(primary), []);
  assert.deepEqual(await pairsOf(secondary), []);
  assert.deepEqual(await groupsOf(primary), ["g"]);
  assert.deepEqual(await groupsOf(secondary), []);
  await primary.stop();
  await secondary.stop();
});

void test("pair create to a secondary whose replication address the primary cannot reach: it stops waiting after a bound and says what to check; the pair stays", { timeout: 120_000 }, async () => {
  const deadPort = await freePort();
  const secondary = await startNode({ id: "pce-s2", extraArgs: ["--repl-advertise", `127.0.0.1:${String(deadPort)}`] });
  const primary = await startNode({ id: "pce-p2" });
  await cliOk(["volume", "create", "v", "--size", "4M"], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v"], { node: primary.mgmtUrl });
  const startMs = performance.now();
  // Before: pair create followed a copy that never started, for ever.
  const result = await cli(["pair", "create", "g", "--to", secondary.mgmtUrl], { node: primary.mgmtUrl, timeoutMs: pairCreateLinkWaitMsMax + 40_000 });
  const elapsedMs = performance.now() - startMs;
  const context = `exit ${String(result.code)} after ${Math.round(elapsedMs)} ms\n--- stderr\n${result.stderr}`;
  assert.equal(result.code, 1, context);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, context);
  assert.match(lines[0] ?? "", new RegExp(`^tidemark: the pair of group 'g' was created, but in \\d+(\\.\\d+)?s the primary could not open a replication stream to the secondary: link to \\S+ at 127\\.0\\.0\\.1:${String(deadPort)} down since \\S+ \\(last error: .*ECONNREFUSED`), context);
  assert.match(lines[0] ?? "", /Check the secondary's --repl address \(and --repl-advertise behind NAT or a proxy\) and the firewalls between the nodes; the pair keeps retrying: follow it with `tidemark pair status g/, context);
  assert.ok(elapsedMs >= pairCreateLinkWaitMsMax, `it waited the bound first (${Math.round(elapsedMs)} ms)`);
  assert.equal((await pairsOf(primary)).length, 1, "the pair stays, retrying");
  await primary.stop();
  await secondary.stop();
});
