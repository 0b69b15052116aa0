// The replication metrics of both nodes of a pair, scraped from /metrics while the pair
// replicates, while it is suspended (writes pile up on the primary), and after a kill and a
// restart of the secondary (reconnects counted, sent and received bytes carried on); and
// /v1/ready beside /v1/health (docs/metrics.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import { HostClient } from "../../src/index.ts";
import { cliOk, mgmtJson, startNode, waitFor } from "./harness.ts";
import type { PairInfo } from "../../src/mgmt/control.ts";
import { scrape, stateOf, value } from "./metrics-lib.ts";

const MiB = 1024 * 1024;

test("metrics: pair state, lag, link and byte totals on both nodes, in replicating, suspended and after a secondary restart; readiness", { timeout: 180_000 }, async () => {
  const primary = await startNode({ id: "met-a" });
  const secondary = await startNode({ id: "met-b" });
  for (const node of [primary, secondary]) {
    const ready = await fetch(`${node.mgmtUrl}/v1/ready`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "ready", id: node.id });
  }
  await cliOk(["volume", "create", "v1", "--size", String(16 * MiB)], { node: primary.mgmtUrl });
  await cliOk(["group", "create", "g", "--volumes", "v1"], { node: primary.mgmtUrl });
  const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
  const v1 = await client.open("v1");
  await v1.write(0, Buffer.alloc(MiB, 1));
  await cliOk(["pair", "create", "g", "--to", secondary.mgmtUrl], { node: primary.mgmtUrl, timeoutMs: 60_000 });
  for (let i = 0; i < 8; i++) await v1.write(MiB + i * 65536, Buffer.alloc(65536, 2 + i));
  await v1.flush();
  await cliOk(["pair", "wait", "g", "--timeout", "30s"], { node: primary.mgmtUrl, timeoutMs: 60_000 });

  // Replicating: both sides say so; nothing lags; what the primary sent the secondary received.
  const a1 = await scrape(primary);
  const b1 = await scrape(secondary);
  assert.match(a1, /^tidemark_build_info\{[^}]*version="\d+\.\d+\.\d+"[^}]*\} 1$/m);
  // Prometheus conventions: every series under one tidemark_ prefix, never a doubled one
  // (the process series were tidemark_process_process_*).
  const names = new Set(a1.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? line));
  for (const [, name, type] of a1.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (type !== "counter") assert.doesNotMatch(name ?? "", /_total$/, `${name} is a ${type}: _total is for counters`);
  }
  for (const name of names) {
    assert.match(name, /^tidemark_/, `${name} is under the tidemark_ prefix`);
    assert.doesNotMatch(name, /^tidemark_([a-z]+)_\1_/, `${name} has a doubled prefix`);
  }
  assert.ok(names.has("tidemark_process_cpu_seconds_total") && names.has("tidemark_nodejs_eventloop_lag_seconds"), "the process and runtime series");
  assert.match(a1, /# TYPE tidemark_pair_sent_bytes_total counter/);
  assert.match(a1, /# TYPE tidemark_journal_fsyncs_total counter/);
  assert.equal(stateOf(a1, "g", "primary"), "replicating");
  assert.equal(stateOf(b1, "g", "secondary"), "replicating");
  assert.equal(value(a1, "tidemark_pair_lag_records", { group: "g", role: "primary" }), 0);
  assert.equal(value(a1, "tidemark_pair_lag_bytes", { group: "g", role: "primary" }), 0);
  assert.ok(value(a1, "tidemark_pair_link_streams_connected", { group: "g", role: "primary" }) >= 1);
  const sent1 = value(a1, "tidemark_pair_sent_bytes_total", { group: "g", role: "primary" });
  const received1 = value(b1, "tidemark_pair_received_bytes_total", { group: "g", role: "secondary" });
  assert.ok(sent1 >= MiB + 8 * 65536, `the copy (1 MiB of data) and 8 records of 64 KiB were sent: ${sent1}`);
  assert.equal(received1, sent1, "the secondary received every byte the primary sent (one run, nothing lost)");
  assert.equal(value(a1, "tidemark_pair_reconnects_total", { group: "g", role: "primary" }), 0);
  // Consistent-as-of (Unix seconds) on both sides: recent, not in the future, the primary's at or past the secondary's.
  const nowSeconds = Date.now() / 1000;
  const asOfA1 = value(a1, "tidemark_pair_consistent_as_of_seconds", { group: "g", role: "primary" });
  const asOfB1 = value(b1, "tidemark_pair_consistent_as_of_seconds", { group: "g", role: "secondary" });
  assert.ok(asOfB1 > nowSeconds - 30 && asOfB1 <= nowSeconds + 1, `the secondary is consistent as of a recent time: ${asOfB1} (now ${nowSeconds})`);
  assert.ok(asOfA1 >= asOfB1 && asOfA1 <= nowSeconds + 1, `the primary knows it at least as far: ${asOfA1}`);
  assert.match(a1, /# TYPE tidemark_pair_consistent_as_of_seconds gauge/);
  assert.ok(value(a1, "tidemark_journal_used_bytes", { group: "g", role: "primary" }) > 0);
  assert.ok(value(a1, "tidemark_journal_limit_bytes", { group: "g", role: "primary" }) >= value(a1, "tidemark_journal_used_bytes", { group: "g", role: "primary" }));
  assert.ok(value(b1, "tidemark_journal_limit_bytes", { group: "g", role: "secondary" }) > 0, "the secondary's journal is there too, role secondary");

  // Suspended: the state moves, and the writes taken meanwhile are the lag, exactly.
  const suspended = (await mgmtJson(primary.mgmtUrl, "/v1/pairs/g/suspend", {})) as PairInfo;
  assert.equal(suspended.state, "suspended");
  for (let i = 0; i < 5; i++) await v1.write(4 * MiB + i * 4096, Buffer.alloc(4096, 9));
  await v1.flush();
  const a2 = await scrape(primary);
  assert.equal(stateOf(a2, "g", "primary"), "suspended");
  assert.equal(value(a2, "tidemark_pair_lag_records", { group: "g", role: "primary" }), 5, "five host writes wait");
  assert.ok(value(a2, "tidemark_pair_lag_bytes", { group: "g", role: "primary" }) >= 5 * 4096);
  assert.equal(value(a2, "tidemark_pair_link_streams_connected", { group: "g", role: "primary" }), 0);
  assert.ok(value(a2, "tidemark_pair_lag_seconds", { group: "g", role: "primary" }) > 0, "the oldest unreflected write has an age");
  assert.ok(value(a2, "tidemark_pair_consistent_as_of_seconds", { group: "g", role: "primary" }) < Date.now() / 1000, "suspended with writes waiting: consistent as of before the first of them");
  await mgmtJson(primary.mgmtUrl, "/v1/pairs/g/resume", {});
  await cliOk(["pair", "wait", "g", "--timeout", "30s"], { node: primary.mgmtUrl, timeoutMs: 60_000 });

  // The secondary killed and restarted: the primary counts its reconnects and goes on sending.
  await secondary.kill();
  await secondary.restart();
  await v1.write(6 * MiB, Buffer.alloc(65536, 7));
  await v1.flush();
  await cliOk(["pair", "wait", "g", "--timeout", "30s"], { node: primary.mgmtUrl, timeoutMs: 60_000 });
  await waitFor("reconnects counted", async () => value(await scrape(primary), "tidemark_pair_reconnects_total", { group: "g", role: "primary" }) >= 1, { timeoutMs: 30_000 });
  const a3 = await scrape(primary);
  const b3 = await scrape(secondary);
  assert.equal(stateOf(a3, "g", "primary"), "replicating");
  assert.equal(stateOf(b3, "g", "secondary"), "replicating", "the restarted secondary carries on");
  assert.ok(value(a3, "tidemark_pair_sent_bytes_total", { group: "g", role: "primary" }) > sent1, "the primary's total goes on");
  assert.ok(value(b3, "tidemark_pair_received_bytes_total", { group: "g", role: "secondary" }) >= 65536, "the restarted secondary counts from its start");
  assert.equal(value(a3, "tidemark_pair_lag_records", { group: "g", role: "primary" }), 0);
  assert.ok(value(b3, "tidemark_pair_consistent_as_of_seconds", { group: "g", role: "secondary" }) > asOfB1, "the restarted secondary's consistent-as-of moved on");
  await client.close();
});
