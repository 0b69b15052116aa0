// Proves how the management API serves the dashboard (docs/dashboard.md): `/` is the HTML file
// beside src/mgmt/dashboard.ts, as text/html, with a Content-Security-Policy whose hashes are
// those of the page's one inline script and one inline style (so a browser runs exactly them
// and nothing else), and that names no external resource. The page itself runs in headless
// Chromium in test/e2e/dashboard.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { pino } from "pino";
import { buildMgmtApp } from "../../src/mgmt/mgmt-api.ts";
import { dashboardFile, dashboardPage } from "../../src/mgmt/dashboard.ts";
import { FakeControl } from "./mgmt-fake-control.ts";

const hashOf = (text: string): string => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;

void test("GET / serves the dashboard file with a policy that allows its own inline script and style only", async () => {
  const app = buildMgmtApp(new FakeControl(), pino({ level: "silent" }));
  const response = await app.inject({ method: "GET", url: "/" });
  assert.equal(response.statusCode, 200);
  assert.equal(response.headers["content-type"], "text/html; charset=utf-8");
  assert.equal(response.headers["x-content-type-options"], "nosniff");
  const html = readFileSync(dashboardFile, "utf8");
  assert.equal(response.body, html);
  const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1] ?? "";
  const style = /<style>([\s\S]*?)<\/style>/.exec(html)?.[1] ?? "";
  const policy = String(response.headers["content-security-policy"]).split("; ");
  assert.ok(policy.includes("default-src 'none'"), policy.join("; "));
  assert.ok(policy.includes(`script-src ${hashOf(script)}`), "the script by its hash");
  assert.ok(policy.includes(`style-src ${hashOf(style)}`), "the style by its hash");
  assert.ok(policy.includes("connect-src 'self'"));
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i, "no external resource named");
  assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, "data goes in as text, never as markup");
  const head = await app.inject({ method: "HEAD", url: "/" });
  assert.equal(head.statusCode, 200);
  await app.close();
});

void test("a page with a second inline script is refused (it would not be covered by the policy)", () => {
  assert.throws(() => dashboardPage("<style>a{}</style><script>1</script><script>2</script>"), /one inline <script>/);
  assert.throws(() => dashboardPage("<script>1</script>"), /one inline <style>/);
});
