// Proves the live dashboard (issue 9, item 3; docs/dashboard.md) in a real browser: headless
// Chromium loads `/` from the management port of a primary with three pairs (one replicating,
// one suspended with a full journal holding host writes, one whose secondary was killed) and
// of their secondary, and the test compares what the page rendered (node id, health, group,
// role, state, consistent-as-of, journal use, held writes, the reason of each unhealthy pair,
// the lag chart) with what /v1/pairs and /v1/health answer; then it resumes a pair and the open
// page follows without a reload. The page loads nothing it is not allowed to (no CSP refusal,
// no script error). A second test serves markup in every string the page shows and checks it
// comes out as text. With TIDEMARK_UPDATE_SCREENSHOT=1 it writes docs/dashboard.png.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { pino } from "pino";
import { HostClient } from "../../src/index.ts";
import { buildMgmtApp } from "../../src/mgmt/mgmt-api.ts";
import type { NodeHealth, PairInfo } from "../../src/mgmt/control.ts";
import { FakeControl } from "../unit/mgmt-fake-control.ts";
import { chromiumBinary, startChromium, type BrowserPage } from "./chromium.ts";
import { cliOk, freePort, mgmtJson, onCleanup, repoRoot, requireThat, sleep, startNode, tmpDir, waitFor, type RunningNode } from "./harness.ts";

const MiB = 1024 * 1024;
const updateScreenshot = process.env.TIDEMARK_UPDATE_SCREENSHOT === "1";
const screenshotSize = { widthPx: 1280, heightPx: 620 };
/** How long the page runs before the docs' screenshot, so the lag charts show a slope. */
const screenshotSettleMs = 45_000;

/** One pair row as the page rendered it (textContent of its cells). */
interface RenderedPair {
  readonly group: string;
  readonly role: string;
  readonly state: string;
  readonly consistent: string;
  readonly journal: string;
  readonly held: string;
  readonly lagSeconds: string;
  readonly lagWrites: string;
  readonly reason: string | null;
  readonly chartPoints: number;
}

interface Rendered {
  readonly nodeId: string;
  readonly health: string;
  readonly healthReasons: readonly string[];
  readonly refreshes: number;
  readonly pairs: readonly RenderedPair[];
}

/** Reads the page's DOM (by the classes dashboard.html gives its cells). */
const readPage = `(() => {
  const text = (root, selector) => root.querySelector(selector)?.textContent ?? null;
  const pairs = [...document.querySelectorAll("tr.pair")].map((row) => {
    const group = row.getAttribute("data-group");
    const reasonRow = [...document.querySelectorAll("tr.reason-row")].find((r) => r.getAttribute("data-group") === group);
    const points = row.querySelector("svg.chart polyline")?.getAttribute("points") ?? "";
    return {
      group: text(row, ".c-group .group"), role: text(row, ".c-role"), state: text(row, ".c-state .state"),
      consistent: text(row, ".c-consistent .consistent-time"), journal: text(row, ".c-journal .journal-text"),
      held: text(row, ".c-held"), lagSeconds: text(row, ".c-lag .lag-seconds"), lagWrites: text(row, ".c-lag .sub"),
      reason: reasonRow ? text(reasonRow, ".reason") : null, chartPoints: points === "" ? 0 : points.split(" ").length,
    };
  });
  return {
    nodeId: text(document, "#node-id"), health: text(document, "#health"),
    healthReasons: [...document.querySelectorAll(".health-reasons li")].map((li) => li.textContent),
    refreshes: Number(document.body.getAttribute("data-refreshes") ?? "0"), pairs,
  };
})()`;

/** Sizes as an operator reads them (powers of 1024), written apart from the page's own code. */
function bytesText(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** The local time the page shows for an ISO time (the browser runs in this process's time zone). */
function localTimeText(iso: string): string {
  const date = new Date(iso);
  const pad = (n: number): string => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** The fields issue 9 adds to a pair's status (rendered when the node sends them). */
type PairStatus = PairInfo & { readonly consistentAsOf?: string | null; readonly lastContact?: string | null };

async function apiView(node: RunningNode): Promise<{ health: NodeHealth & { id: string }; pairs: readonly PairStatus[] }> {
  const health = (await mgmtJson(node.mgmtUrl, "/v1/health")) as NodeHealth & { id: string };
  const { pairs } = (await mgmtJson(node.mgmtUrl, "/v1/pairs")) as { pairs: PairStatus[] };
  return { health: { ...health, reasons: health.reasons ?? [] }, pairs };
}

/** Where the page and the API disagree on a pair (empty: they agree). */
function differences(rendered: RenderedPair | undefined, pair: PairStatus): string[] {
  if (rendered === undefined) return [`${pair.group}: no row`];
  const wrong: string[] = [];
  const expect = (what: string, shown: string | null, wanted: string | null): void => {
    if (shown !== wanted) wrong.push(`${pair.group} ${what}: shown ${JSON.stringify(shown)}, API ${JSON.stringify(wanted)}`);
  };
  expect("group", rendered.group, pair.group);
  expect("role", rendered.role, pair.role);
  expect("state", rendered.state, pair.state);
  expect("held writes", rendered.held, String(pair.heldWrites));
  expect("lag", rendered.lagWrites, `${pair.lagRecords} writes · ${bytesText(pair.lagBytes)}`);
  expect("journal", rendered.journal, `${bytesText(pair.journalBytes)} of ${bytesText(pair.journalBytesMax)}`);
  expect("consistent as of", rendered.consistent, typeof pair.consistentAsOf === "string" ? localTimeText(pair.consistentAsOf) : "—");
  if (pair.reason !== null) expect("reason", rendered.reason, pair.reason);
  else if (pair.state === "replicating") expect("reason", rendered.reason, null);
  return wrong;
}

/** Waits until the open page shows what the API says now (both read again each round), and returns both. */
async function pageAgrees(page: BrowserPage, node: RunningNode, what: string, extra: (rendered: Rendered, api: Awaited<ReturnType<typeof apiView>>) => string[] = () => []): Promise<{ rendered: Rendered; api: Awaited<ReturnType<typeof apiView>> }> {
  let last = "";
  return waitFor(`the dashboard of ${node.id} to show ${what}`, async () => {
    const api = await apiView(node);
    const rendered = await page.evaluate<Rendered>(readPage);
    const wrong: string[] = [];
    if (rendered.nodeId !== node.id) wrong.push(`node id ${rendered.nodeId}`);
    if (rendered.health !== api.health.status) wrong.push(`health shown ${rendered.health}, API ${api.health.status}`);
    if (api.health.status !== "ok") assert.deepEqual(rendered.healthReasons, api.health.reasons);
    if (rendered.pairs.length !== api.pairs.length) wrong.push(`${rendered.pairs.length} rows for ${api.pairs.length} pairs`);
    for (const pair of api.pairs) wrong.push(...differences(rendered.pairs.find((row) => row.group === pair.group), pair));
    wrong.push(...extra(rendered, api));
    last = wrong.join("; ");
    if (wrong.length > 0) throw new Error(last);
    return { rendered, api };
  }, { timeoutMs: 30_000, intervalMs: 250 });
}

async function screenshot(page: BrowserPage, file: string): Promise<void> {
  const { data } = (await page.send("Page.captureScreenshot", { format: "png" })) as { data: string };
  const png = Buffer.from(data, "base64");
  assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from("PNG")], "a PNG came back");
  writeFileSync(file, png);
}

void test("the dashboard in headless Chromium shows every pair of the node with its state, consistent-as-of, lag, journal use, held writes and the reason of the unhealthy ones, and follows changes", { timeout: 300_000 }, async (t: TestContext) => {
  if (!requireThat(t, chromiumBinary() !== null, "chromium is not installed (scripts/ensure-test-deps.sh installs it)")) return;
  const primary = await startNode({ id: "dash-a" });
  const secondary = await startNode({ id: "dash-b" });
  const lostSecondary = await startNode({ id: "dash-c" });
  const a = { node: primary.mgmtUrl };
  await cliOk(["volume", "create", "accounts-v", "--size", "16M"], a);
  await cliOk(["volume", "create", "ledger-v", "--size", "64M"], a);
  await cliOk(["volume", "create", "orders-v", "--size", "16M"], a);
  await cliOk(["group", "create", "accounts", "--volumes", "accounts-v"], a);
  await cliOk(["group", "create", "ledger", "--volumes", "ledger-v", "--journal-size", "64M"], a);
  await cliOk(["group", "create", "orders", "--volumes", "orders-v"], a);
  const client = await HostClient.connect({ host: "127.0.0.1", port: primary.hostPort });
  // Writes held on a suspended pair never end by themselves: close waits for them, so give it a
  // deadline (the nodes stop after it, which ends the connection).
  onCleanup("close the host client", () => Promise.race([client.close(), sleep(5_000)]));
  const volumes = { accounts: await client.open("accounts-v"), ledger: await client.open("ledger-v"), orders: await client.open("orders-v") };
  for (const volume of Object.values(volumes)) await volume.write(0, Buffer.alloc(MiB, 1));
  await cliOk(["pair", "create", "accounts", "--to", secondary.mgmtUrl], { ...a, timeoutMs: 60_000 });
  // Its own consistency domain on the secondary: suspending it does not hold accounts there.
  await cliOk(["pair", "create", "ledger", "--to", secondary.mgmtUrl, "--streams", "2", "--domain", "ledger-only"], { ...a, timeoutMs: 60_000 });
  await cliOk(["pair", "create", "orders", "--to", lostSecondary.mgmtUrl], { ...a, timeoutMs: 60_000 });
  for (let i = 0; i < 8; i++) await volumes.accounts.write(MiB + i * 65536, Buffer.alloc(65536, 2 + i));
  await volumes.accounts.flush();
  await cliOk(["pair", "wait", "accounts", "--timeout", "30s"], { ...a, timeoutMs: 60_000 });

  // orders: its secondary is gone; the writes taken since are its lag.
  await lostSecondary.kill();
  for (let i = 0; i < 6; i++) await volumes.orders.write(2 * MiB + i * 4096, Buffer.alloc(4096, 3));
  await volumes.orders.flush();
  // ledger: suspended while more is written than its journal holds; the rest is held.
  await mgmtJson(primary.mgmtUrl, "/v1/pairs/ledger/suspend", {});
  let ledgerAnswered = 0;
  let ledgerFailed: unknown = null;
  const ledgerWrites = Array.from({ length: 80 }, (_, i) => volumes.ledger.write((i % 64) * MiB, Buffer.alloc(MiB, i)).then(
    () => { ledgerAnswered += 1; },
    (error: unknown) => { ledgerFailed = error; },
  ));
  await waitFor("ledger's host writes held", async () => ((await mgmtJson(primary.mgmtUrl, "/v1/pairs/ledger")) as PairInfo).heldWrites > 0, { timeoutMs: 60_000 });
  await waitFor("orders disconnected (its secondary is gone)", async () => ((await mgmtJson(primary.mgmtUrl, "/v1/pairs/orders")) as PairInfo).state === "disconnected", { timeoutMs: 60_000 });

  const browser = await startChromium();
  const page = await browser.open(`${primary.mgmtUrl}/`, screenshotSize);
  await waitFor("the first refresh", async () => (await page.evaluate<Rendered>(readPage)).refreshes >= 1, { timeoutMs: 30_000 });
  await page.evaluate("window.sameDocument = true");

  const { rendered } = await pageAgrees(page, primary, "three pairs as the API has them", (shown) => (shown.refreshes >= 3 ? [] : ["fewer than 3 refreshes"]));
  const byGroup = new Map(rendered.pairs.map((pair) => [pair.group, pair]));
  assert.deepEqual([...byGroup.keys()], ["accounts", "ledger", "orders"], "one row per pair, by name");
  assert.equal(byGroup.get("accounts")?.state, "replicating");
  assert.equal(byGroup.get("accounts")?.reason, null, "a healthy pair has no reason line");
  assert.equal(byGroup.get("accounts")?.lagWrites, "0 writes · 0 B", "and no lag");
  assert.equal(byGroup.get("accounts")?.lagSeconds, "0 s");
  assert.match(byGroup.get("orders")?.lagWrites ?? "", /^6 writes · /, "the writes taken since its secondary went are its lag");
  assert.notEqual(byGroup.get("ledger")?.held, "0", "the suspended pair's held host writes are shown");
  assert.match(byGroup.get("ledger")?.reason ?? "", /suspended|journal full|held/, "the suspended pair holding writes says why");
  assert.equal(byGroup.get("orders")?.state, "disconnected", "the pair whose secondary is gone is disconnected");
  assert.match(byGroup.get("orders")?.reason ?? "", /^link to .* down since .*; retrying$/, "and says since when, the last error, and that it retries");
  for (const pair of rendered.pairs) assert.ok(pair.chartPoints >= 2, `${pair.group}: the lag chart has the samples of several refreshes (${pair.chartPoints})`);

  // The secondary's own view: role secondary, its consistent-as-of time when the node gives one.
  // Opened once the node has sampled each pair's lag twice (every 5 s): its charts start from
  // those samples (GET /v1/lag-history), not empty.
  await waitFor("two lag samples of each pair on the secondary", async () => {
    const history = await mgmtJson(secondary.mgmtUrl, "/v1/lag-history") as { pairs: { samples: unknown[] }[] };
    return history.pairs.length === 2 && history.pairs.every((pair) => pair.samples.length >= 2) ? true : undefined;
  }, { timeoutMs: 30_000 });
  const secondaryPage = await browser.open(`${secondary.mgmtUrl}/`, screenshotSize);
  const fresh = await waitFor("the fresh page's first refresh", async () => {
    const shown = await secondaryPage.evaluate<Rendered>(readPage);
    return shown.refreshes >= 1 ? shown : undefined;
  }, { timeoutMs: 30_000 });
  for (const pair of fresh.pairs) assert.ok(pair.chartPoints >= fresh.refreshes + 2, `${pair.group}: a fresh page's chart starts from the node's samples (${pair.chartPoints} points after ${fresh.refreshes} refreshes)`);
  const fromSecondary = await pageAgrees(secondaryPage, secondary, "its two secondary pairs");
  assert.deepEqual(fromSecondary.rendered.pairs.map((pair) => `${pair.group}/${pair.role}`), ["accounts/secondary", "ledger/secondary"]);
  secondaryPage.close();

  if (updateScreenshot) {
    await sleep(screenshotSettleMs);
    await pageAgrees(page, primary, "the pairs before the screenshot");
    await screenshot(page, path.join(repoRoot, "docs", "dashboard.png"));
  } else {
    await screenshot(page, path.join(await tmpDir("tidemark-dashboard-"), "dashboard.png"));
  }

  // The open page follows: ledger resumed, its held writes drain, and the row says replicating.
  await mgmtJson(primary.mgmtUrl, "/v1/pairs/ledger/resume", {});
  await Promise.all(ledgerWrites);
  assert.equal(ledgerFailed, null, "held writes were answered, not failed");
  assert.equal(ledgerAnswered, 80);
  await cliOk(["pair", "wait", "ledger", "--timeout", "60s"], { ...a, timeoutMs: 90_000 });
  await pageAgrees(page, primary, "ledger replicating again", (shown) => (shown.pairs.find((pair) => pair.group === "ledger")?.state === "replicating" ? [] : ["ledger not replicating yet"]));
  assert.equal(await page.evaluate<boolean>("window.sameDocument === true"), true, "the same page, not reloaded");
  assert.deepEqual(page.problems, [], "no script error and nothing refused by the Content-Security-Policy");
  page.close();
});

void test("the dashboard shows markup in names and reasons as text, and serves a policy that forbids external loads", async (t: TestContext) => {
  if (!requireThat(t, chromiumBinary() !== null, "chromium is not installed (scripts/ensure-test-deps.sh installs it)")) return;
  const markup = `<img src="http://203.0.113.1/x.png" onerror="document.title='pwned'"><b id="injected">bold</b>`;
  const control = new FakeControl();
  control.addPair({ group: `g${markup}`, state: "failed", remoteNode: `n${markup}`, reason: `reason ${markup}<script>document.title='pwned'</script>` });
  const app = buildMgmtApp(control, pino({ level: "silent" }));
  const port = await freePort();
  await app.listen({ host: "127.0.0.1", port });
  onCleanup("close the fake management API", () => app.close());

  const response = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  const policy = response.headers.get("content-security-policy") ?? "";
  assert.match(policy, /default-src 'none'/);
  assert.match(policy, /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/, "scripts only by hash");
  assert.match(policy, /connect-src 'self'/);
  assert.doesNotMatch(await response.text(), /(src|href)="(https?:)?\/\//, "the page names no external resource");

  const browser = await startChromium();
  const page = await browser.open(`http://127.0.0.1:${port}/`, screenshotSize);
  const shown = await waitFor("the fake pair rendered", async () => {
    const rendered = await page.evaluate<Rendered>(readPage);
    return rendered.pairs.length === 1 ? rendered : undefined;
  }, { timeoutMs: 30_000 });
  assert.equal(shown.pairs[0]?.group, `g${markup}`, "the group name as text");
  assert.equal(shown.pairs[0]?.reason, `reason ${markup}<script>document.title='pwned'</script>`, "the reason as text");
  assert.equal(await page.evaluate<number>("document.querySelectorAll('#injected, main img, main script').length"), 0, "no element made from the data");
  await sleep(500);
  assert.equal(await page.evaluate<string>("document.title"), "tidemark", "no handler from the data ran");
  assert.deepEqual(page.problems, [], "no script error and nothing refused by the Content-Security-Policy");
  page.close();
});
