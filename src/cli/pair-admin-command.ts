// `tidemark pair delete` and `tidemark pair set` (CONTRACT.md, "Pairs"; issue 9 item 4): ending a
// pair while keeping both images, and pointing a pair at a secondary that moved.
import type { Command } from "commander";
import type { z } from "zod";
import { parseNodeUrl } from "./api-client.ts";
import { pairDeleteNodeWaitMsMax, pairSetNodeWaitMsMax } from "../core/limits.ts";
import { mgmtRoutes, type pairEndSchema } from "../mgmt/contract.ts";
import { checkName, mgmtContext, withMgmtOptions, type CliIo } from "./command-kit.ts";

export function registerPairAdminCommands(pair: Command, io: CliIo): void {
  withMgmtOptions(
    pair
      .command("delete")
      .description("end a pair and keep both images: run against the primary, it ends both sides and the group stays writable; the secondary's volumes stay read-only unless --promote")
      .argument("<GROUP>", "the paired group on this node")
      .option("--promote", "the secondary's volumes become an ordinary writable group (also later, on a group a pair delete left read-only)")
      .option("--force", "end it although the secondary would be left behind, is unreachable or refuses (this side only), or run on the secondary (this side only)"),
  ).action(async (groupText: string, flags: { force?: boolean; promote?: boolean }, command: Command) => {
    const group = checkName("group", groupText);
    const context = mgmtContext(command, io);
    const query = { ...(flags.force === true ? { force: "true" as const } : {}), ...(flags.promote === true ? { promote: "true" as const } : {}) };
    const { value, raw } = await context.waitingClient(pairDeleteNodeWaitMsMax).call(mgmtRoutes.deletePair, { params: { group }, query }, {
      what: `delete the pair of group '${group}'`,
      hints: { TM_ERR_NOT_FOUND: "see `tidemark pair status`" },
    });
    context.print(raw, () => renderPairEnd(value));
  });
  registerPairSet(pair, io);
}

function registerPairSet(pair: Command, io: CliIo): void {
  withMgmtOptions(
    pair
      .command("set")
      .description("the secondary moved (new addresses, same data directory): point the pair at it; same pair, no new copy (run against the primary)")
      .argument("<GROUP>", "the paired group on this node (the primary)")
      .requiredOption("--to <SECONDARY_MGMT_URL>", "the secondary's new management URL, e.g. http://10.0.0.3:7480"),
  ).action(async (groupText: string, flags: { to: string }, command: Command) => {
    const group = checkName("group", groupText);
    const to = parseNodeUrl(flags.to, "--to").href.replace(/\/$/, "");
    const context = mgmtContext(command, io);
    const { value, raw } = await context.waitingClient(pairSetNodeWaitMsMax).call(mgmtRoutes.setPair, { params: { group }, body: { to } }, {
      what: `point the pair of group '${group}' at ${to}`,
      hints: { TM_ERR_NOT_FOUND: "see `tidemark pair status`", TM_ERR_CONFLICT: "give --to the management URL of the pair's own secondary node" },
    });
    context.print(raw, () => `pair of group ${value.group} now replicates to node ${value.remoteNode} at ${value.remoteUrl ?? to} (same pair ${value.pairId}; no new copy)\n`);
  });
}

/** One line: what the delete did on this node (and on the secondary, run on the primary). */
export function renderPairEnd(end: z.infer<typeof pairEndSchema>): string {
  const incomplete = "an incomplete initial copy, consistent with no point in time";
  if (!end.deleted) {
    if (end.promoted === true) {
      return `group ${end.group} has no pair; its volumes are writable now (${end.incompleteCopy === true ? `they hold ${incomplete}` : "the image its deleted pair left"})\n`;
    }
    const state = end.readOnly ? "; it is read-only (writable with --promote)" : "";
    return `group ${end.group} has no pair; nothing to delete${state}\n`;
  }
  if (end.role === "primary") {
    const secondary = end.secondary;
    let there = "";
    if (secondary !== undefined && secondary.deleted) {
      const node = secondary.node === undefined ? "" : ` on node ${secondary.node}`;
      if (secondary.takenOver === true) there = `; the secondary${node} had taken the group over: it forgot the pair (its group stays writable there)`;
      else if (secondary.readOnly === false) there = `; the secondary's side is deleted too${node}: its volumes are writable (promoted)`;
      else if (secondary.readOnly === true) {
        const promote = `tidemark pair delete ${end.group} --promote${secondary.url === undefined ? "" : ` --node ${secondary.url}`}`;
        there = `; the secondary's side is deleted too${node}: its volumes keep the image, read-only (writable with: ${promote})`;
      } else there = "; the secondary's side is deleted too";
    } else if (secondary?.note != null) {
      there = `; the secondary's side: ${secondary.note}`;
    }
    return `deleted the pair of group ${end.group}: replication ended, the group stays writable${there}\n`;
  }
  if (end.takenOver === true) {
    return `deleted the pair of group ${end.group} on this node: it had taken the group over and forgets that now (a returning old primary then only fails instead of fencing itself); the group stays writable\n`;
  }
  const writable = end.readOnly ? `read-only (writable with: tidemark pair delete ${end.group} --promote)` : "writable";
  if (end.incompleteCopy === true) {
    return `deleted the pair of group ${end.group} on this node during its initial copy: its volumes hold ${incomplete.replace("an incomplete initial copy", "an incomplete copy")}, ${writable}\n`;
  }
  const kept = end.keptSequence === null ? "" : ` (through the primary's sequence ${end.keptSequence})`;
  return `deleted the pair of group ${end.group} on this node: its volumes keep the image${kept}, ${writable}\n`;
}
