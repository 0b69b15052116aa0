// `tidemark status`: the node (id, policy, listeners, uptime, recorded write time), then its
// volumes and groups as tables. `--json` prints GET /v1/status as the node answered it.
import type { Command } from "commander";
import { mgmtRoutes } from "../mgmt/contract.ts";
import { mgmtContext, withMgmtOptions, type CliIo } from "./command-kit.ts";
import { formatSeconds, formatWriteTimeUs, renderFields } from "./format.ts";
import { renderGroups } from "./group-command.ts";
import { renderVolumes } from "./volume-command.ts";
import type { NodeStatus } from "../mgmt/control.ts";

export function registerStatusCommand(program: Command, io: CliIo): void {
  withMgmtOptions(program.command("status").description("show a node: listeners, uptime, write time, volumes and groups")).action(
    async (_flags: unknown, command: Command) => {
      const context = mgmtContext(command, io);
      const { value, raw } = await context.client.call(mgmtRoutes.status, {}, { what: "get the node's status" });
      context.print(raw, () => renderStatus(value));
    },
  );
}

export function renderStatus(status: NodeStatus): string {
  const { listeners } = status;
  const node = renderFields([
    ["node", `${status.id} (tidemark ${status.version})`],
    ["write time policy", status.writeTimePolicy],
    ["listeners", `mgmt ${listeners.mgmt}  nbd ${listeners.nbd}  host ${listeners.host}  repl ${listeners.repl}`],
    ["uptime", `${formatSeconds(status.uptimeSeconds)} (since ${status.startedAt})`],
    ["recorded write time", formatWriteTimeUs(status.recordedWriteTimeUs, status.writeTimePolicy)],
    ["connections", `nbd ${status.connections.nbd}  host ${status.connections.host}`],
    ["data", status.dataDir],
  ]);
  return `${node}\nVOLUMES\n${renderVolumes(status.volumes)}\nGROUPS\n${renderGroups(status.groups)}`;
}
