// Proves what issue 9 found by hand, as an operator types it against two real nodes:
// `pair create --mode sync` and `--reflect marker` are refused with one line (not supported
// yet) and not offered in help; the initial-copy summary states the bytes; `pair resume` does
// not call a reachable secondary unreachable; a takeover during the initial copy is refused
// with one line saying what is wrong and what to do (not "point --node at the secondary").
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClient } from "../../src/index.ts";
import { cli, cliOk, mgmtJson, waitFor, type RunResult } from "./harness.ts";
import { startNodeRetrying as startNode } from "./node-start.ts";
import { TcpProxy } from "./tcp-proxy.ts";

const MiB = 1024 * 1024;

function oneLine(result: RunResult, what: string): string {
  const context = `${what}: exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
  assert.notEqual(result.code, 0, context);
  assert.equal(result.stdout, "", context);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, context);
  return lines[0] ?? "";
}

void test("pair create refuses --mode sync and --reflect marker in one line and does not offer them; its summary states the bytes; resume does not call a reachable secondary unreachable", async () => {
  const primary = await startNode({ id: "hand-a" });
  const secondary = await startNode({ id: "hand-b" });
  const node = { node: primary.mgmtUrl };
  await cliOk(["volume", "create", "v1", "--size", "64M"], node);
  await cliOk(["group", "create", "g1", "--volumes", "v1"], node);

  const help = await cliOk(["pair", "create", "--help"], node);
  assert.doesNotMatch(help.stdout, /\bsync\b/, "help does not offer --mode sync");
  assert.doesNotMatch(help.stdout, /\bmarker\b/, "help does not offer --reflect marker");
  // CONTRACT.md's later flags and commands: one line, not available yet (exit 2), nothing sent.
  for (const [flag, value, pattern] of [
    ["--mode", "sync", /--mode sync is not available yet.*use --mode async/],
    ["--reflect", "marker", /--reflect marker is not available yet.*use --reflect time \(the default\) or seq/],
    ["--on-link-loss", "continue", /--on-link-loss is not available yet: it comes with --mode sync/],
  ] as const) {
    const refused = await cli(["pair", "create", "g1", "--to", secondary.mgmtUrl, flag, value], node);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(oneLine(refused, `${flag} ${value}`), pattern);
  }
  for (const later of [["consistency-point", "--primary", primary.mgmtUrl, "--secondary", secondary.mgmtUrl], ["snapshot", "list"], ["snapshot", "clone", "s1", "c1"], ["recover", "--secondary", secondary.mgmtUrl, "--to-marker", "3"], ["snapshot", "list", "--json"]]) {
    for (const where of [[], ["--node", primary.mgmtUrl]]) {
      const refused = await cli([...where, ...later], {});
    assert.equal(refused.code, 2, refused.stderr);
      const named = later[0] === "snapshot" ? `${later[0]} ${later[1] ?? ""}` : later[0] ?? "";
      assert.ok(oneLine(refused, later.join(" ")).startsWith(`tidemark: \`tidemark ${named}\` is not available yet: `), refused.stderr);
    }
  }
  for (const [flag, shown] of [["--mode", "use async"], ["--reflect", "use time or seq"]] as const) {
    assert.match(oneLine(await cli(["pair", "create", "g1", "--to", secondary.mgmtUrl, flag, "bogus"], node), flag), new RegExp(`${flag} "bogus" is not valid; ${shown}$`), "a refusal offers only what works");
  }
  assert.doesNotMatch((await cliOk(["--help"], {})).stdout, /snapshot|recover|consistency-point/, "--help offers none of them");
  // The node refuses them too, for a caller of the API.
  for (const body of [{ group: "g1", to: secondary.mgmtUrl, mode: "sync" }, { group: "g1", to: secondary.mgmtUrl, reflect: "marker" }]) {
    const answer = await fetch(`${primary.mgmtUrl}/v1/pairs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    assert.equal(answer.status, 400);
    assert.match(((await answer.json()) as { error: { message: string } }).error.message, /not supported yet/);
  }
  assert.deepEqual((await mgmtJson(primary.mgmtUrl, "/v1/pairs") as { pairs: unknown[] }).pairs, [], "nothing was paired");

  // 3 MiB of data: the summary names the bytes the copy read and sent.
  const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
  const volume = await client.open("v1");
  for (let i = 0; i < 3; i++) await volume.write(i * 8 * MiB, Buffer.alloc(MiB, i + 1));
  await volume.flush();
  await client.close();
  const created = await cliOk(["pair", "create", "g1", "--to", secondary.mgmtUrl], node);
  assert.match(created.stdout, /^pair of group g1 is replicating to group g1 on hand-b \(.*\), initial copy of up to 3\.0 MiB written of 64\.0 MiB \(3\.0 MiB of data sent\) took \d/);

  await cliOk(["pair", "suspend", "g1"], node);
  const resumed = await cliOk(["pair", "resume", "g1"], node);
  assert.match(resumed.stdout, /^resumed pair of group g1: now replicating\n$/, "the secondary is reachable: no reason printed");
  // A list resumes together (its own route): each line as true.
  await cliOk(["volume", "create", "v2", "--size", "16M"], node);
  await cliOk(["group", "create", "g2", "--volumes", "v2"], node);
  await cliOk(["pair", "create", "g2", "--to", secondary.mgmtUrl], node);
  await cliOk(["pair", "suspend", "g1,g2"], node);
  const listed = await cliOk(["pair", "resume", "g1,g2"], node);
  assert.equal(listed.stdout, "resumed pair of group g1: now replicating\nresumed pair of group g2: now replicating\n");
  await primary.stop();
  await secondary.stop();
});

void test("pair takeover during the initial copy: one line saying the image is not consistent yet and to wait for replicating", async () => {
  const secondaryProxy = await TcpProxy.start(); // no target: the copy never gets through
  const primary = await startNode({ id: "copy-a" });
  const secondary = await startNode({ id: "copy-b", extraArgs: ["--repl-advertise", `127.0.0.1:${secondaryProxy.port}`] });
  await cliOk(["volume", "create", "v1", "--size", "16M"], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g1", "--volumes", "v1"], { node: primary.mgmtUrl });
  await mgmtJson(primary.mgmtUrl, "/v1/pairs", { group: "g1", to: secondary.mgmtUrl });
  await waitFor("the secondary group exists, copying", async () => {
    const pairs = (await mgmtJson(secondary.mgmtUrl, "/v1/pairs")) as { pairs: Array<{ group: string; state: string }> };
    return pairs.pairs.some((pair) => pair.group === "g1" && pair.state === "copying") ? true : undefined;
  });
  const refused = await cli(["pair", "takeover", "g1"], { node: secondary.mgmtUrl });
  assert.equal(refused.code, 1, refused.stderr);
  const line = oneLine(refused, "takeover during the copy");
  assert.match(line, /group g1 is still in its initial copy \(not begun: nothing has arrived from the primary yet\): its image is .*consistent with no point in time, so it cannot be taken over/);
  assert.match(line, /wait until `tidemark pair status g1` here shows replicating, then take over \[TM_ERR_STATE\]$/);
  assert.doesNotMatch(line, /pointing at the secondary/, "it is the secondary: no advice to point --node at it");
  const after = (await mgmtJson(secondary.mgmtUrl, "/v1/pairs/g1")) as { state: string };
  assert.equal(after.state, "copying", "nothing changed");
  await primary.stop();
  await secondary.stop();
});
