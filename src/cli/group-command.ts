// `tidemark group create NAME --volumes V1[,V2...]` and `tidemark group list` (CONTRACT.md).
import type { Command } from "commander";
import type { GroupInfo } from "../mgmt/control.ts";
import { mgmtRoutes } from "../mgmt/contract.ts";
import { journalBytesLimit, journalBytesMin } from "../core/limits.ts";
import { checkName, mgmtContext, parseNameList, parseSizeFlag, withMgmtOptions, type CliIo } from "./command-kit.ts";
import { formatUsage, renderTable } from "./format.ts";

export function registerGroupCommands(program: Command, io: CliIo): void {
  const group = program.command("group").description("create, list and delete consistency groups (volumes that share one write order)");

  withMgmtOptions(
    group
      .command("create")
      .description("create a consistency group from volumes that are in no group yet")
      .argument("<NAME>", "group name: letters, digits, '.', '_', '-' (up to 64)")
      .requiredOption("--volumes <V1[,V2...]>", "comma-separated volume names")
      .option("--journal-size <SIZE>", "size limit of the group's journal (default 4G, at least 64M: a full journal must still take the largest write, 32M); when a pair's secondary falls this far behind, host writes are slowed, then held"),
  ).action(async (nameText: string, flags: { volumes: string; journalSize?: string }, command: Command) => {
    const name = checkName("group", nameText);
    const volumes = parseNameList("volume", "--volumes", flags.volumes);
    const journalBytesMax = flags.journalSize === undefined ? undefined : parseSizeFlag("--journal-size", flags.journalSize, journalBytesMin, journalBytesLimit);
    const context = mgmtContext(command, io);
    const body = journalBytesMax === undefined ? { name, volumes } : { name, volumes, journalBytesMax };
    const { value, raw } = await context.client.call(mgmtRoutes.createGroup, { body }, {
      what: `create group '${name}'`,
      hints: {
        TM_ERR_EXISTS: "pick another name, or see `tidemark group list`",
        TM_ERR_NOT_FOUND: "create it first with `tidemark volume create`",
        TM_ERR_CONFLICT: "see `tidemark volume list`",
      },
    });
    context.print(raw, () => `created group ${value.group.name} with volumes ${value.group.volumes.join(", ")}\n`);
  });

  withMgmtOptions(
    group
      .command("delete")
      .description("delete a group: what it took is applied to its volumes, which stay, in no group (not while it has a pair)")
      .argument("<NAME>", "group name"),
  ).action(async (nameText: string, _flags: unknown, command: Command) => {
    const name = checkName("group", nameText);
    const context = mgmtContext(command, io);
    const { value, raw } = await context.client.call(mgmtRoutes.deleteGroup, { params: { group: name } }, {
      what: `delete group '${name}'`,
      hints: { TM_ERR_STATE: `see \`tidemark pair status ${name}\` and \`tidemark group list\`` },
    });
    context.print(raw, () => (value.deleted ? `deleted group ${name}; its volumes stay, in no group\n` : `group ${name} does not exist; nothing to delete\n`));
  });

  withMgmtOptions(group.command("list").description("list the node's consistency groups")).action(
    async (_flags: unknown, command: Command) => {
      const context = mgmtContext(command, io);
      const { value, raw } = await context.client.call(mgmtRoutes.listGroups, {}, { what: "list groups" });
      context.print(raw, () => renderGroups(value.groups));
    },
  );
}

export function renderGroups(groups: readonly GroupInfo[]): string {
  if (groups.length === 0) return "no groups; create one with `tidemark group create NAME --volumes V1[,V2...]`\n";
  const table = renderTable(
    [
      { header: "NAME" },
      { header: "STATE" },
      { header: "VOLUMES" },
      { header: "NEXT SEQ", align: "right" },
      { header: "APPLIED SEQ", align: "right" },
      { header: "DURABLE SEQ", align: "right" },
      { header: "JOURNAL", align: "right" },
      { header: "SEGMENTS", align: "right" },
    ],
    groups.map((group) => [
      group.name,
      group.state,
      group.volumes.join(","),
      String(group.nextSequence),
      String(group.appliedSequence),
      String(group.durableSequence),
      formatUsage(group.journalBytes, group.journalBytesMax),
      String(group.journalSegments),
    ]),
  );
  // Held writes and a full target journal are never silent either: one line each under the table.
  const reasons = groups.filter((group) => group.reason !== null).map((group) => `${group.name}: ${group.reason ?? ""}${group.heldWrites > 0 ? ` [${group.heldWrites} writes held]` : ""}\n`);
  return table + reasons.join("");
}
