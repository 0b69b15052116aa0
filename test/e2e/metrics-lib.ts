// Reading a node's /metrics in e2e tests (Prometheus text format 0.0.4).
import assert from "node:assert/strict";
import type { RunningNode } from "./harness.ts";

/** The node's /metrics text (asserts 200). */
export async function scrape(node: RunningNode): Promise<string> {
  const response = await fetch(`${node.mgmtUrl}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

/** The value of the one series `name{...}` whose labels include `labels` (asserts there is exactly one). */
export function value(text: string, name: string, labels: Record<string, string>): number {
  const lines = text.split("\n").filter((line) => line.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)));
  assert.equal(lines.length, 1, `one series ${name}${JSON.stringify(labels)}; found:\n${lines.join("\n") || text.split("\n").filter((l) => l.startsWith(name)).join("\n")}`);
  return Number((lines[0] as string).split(" ").at(-1));
}

/** The `state` label of the one `tidemark_pair_state{group,role}` series at 1 (asserts exactly one is). */
export function stateOf(text: string, group: string, role: string): string {
  const on = text.split("\n").filter((line) => line.startsWith("tidemark_pair_state{") && line.includes(`group="${group}"`) && line.includes(`role="${role}"`) && line.endsWith(" 1"));
  assert.equal(on.length, 1, `exactly one state is 1 for ${group}/${role}: ${on.join(" | ")}`);
  return /state="([a-z]+)"/.exec(on[0] as string)?.[1] ?? "";
}
