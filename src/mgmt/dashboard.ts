// The live dashboard at `/` of the management API (docs/dashboard.md): one static HTML file
// beside this module (dashboard.html, copied into dist/ by scripts/build-dist.ts), read once,
// served with a Content-Security-Policy that allows nothing but its own inline style and
// script (by their SHA-256 hashes) and requests to this node, so the page loads nothing from
// the network and injected markup could not run.
import { createHash } from "node:crypto";
// A program file shipped beside this module, read once at start, not node data on the (simulated) disk.
// eslint-disable-next-line no-restricted-imports -- the FileSystem seam is for the node's data
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { assert } from "../core/assert.ts";

/** Where the page is: beside this module, in src/mgmt/ in a checkout and dist/mgmt/ in the package. */
export const dashboardFile: string = fileURLToPath(new URL("./dashboard.html", import.meta.url));

export interface DashboardPage {
  readonly html: string;
  /** The Content-Security-Policy header value for the page. */
  readonly contentSecurityPolicy: string;
}

/** The one `<tag>...</tag>` block of the page (the file has exactly one of each). */
function inlineBlock(html: string, tag: "script" | "style"): string {
  const blocks = [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))];
  assert(blocks.length === 1, `dashboard.html has one inline <${tag}> (found ${blocks.length})`);
  const body = blocks[0]?.[1];
  assert(body !== undefined, `dashboard.html: empty <${tag}>`);
  return body;
}

const sha256 = (text: string): string => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;

/**
 * The page and its policy, from the HTML text: scripts and styles only by hash (no external
 * or injected ones), fetches to this origin only, images only inline (the blank favicon), no
 * forms, no framing.
 */
export function dashboardPage(html: string): DashboardPage {
  const contentSecurityPolicy = [
    "default-src 'none'",
    `script-src ${sha256(inlineBlock(html, "script"))}`,
    `style-src ${sha256(inlineBlock(html, "style"))}`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  return { html, contentSecurityPolicy };
}

let loaded: DashboardPage | undefined;

/** Reads dashboard.html once (throws if the file is missing: a broken install). */
export function loadDashboard(): DashboardPage {
  loaded ??= dashboardPage(readFileSync(dashboardFile, "utf8"));
  return loaded;
}

/**
 * The headers of GET `/` besides its media type (src/mgmt/contract.ts): the policy, no type
 * sniffing, no referrer, and no caching without asking (a node upgrade brings a new page).
 */
export function dashboardHeaders(page: DashboardPage): Record<string, string> {
  return {
    "content-security-policy": page.contentSecurityPolicy,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
  };
}
