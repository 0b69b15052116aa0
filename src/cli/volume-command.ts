// `tidemark volume create NAME --size SIZE`, `volume list`, `volume resize NAME --size SIZE`
// and `volume delete NAME [--force]` (CONTRACT.md).
import type { Command } from "commander";
import { volumeBytesMax, volumeBytesMin } from "../core/limits.ts";
import type { VolumeInfo } from "../mgmt/control.ts";
import { mgmtRoutes } from "../mgmt/contract.ts";
import { checkName, mgmtContext, parseSizeFlag, withMgmtOptions, type CliIo } from "./command-kit.ts";
import { oneLine } from "./errors.ts";
import { formatBytes, renderTable, yesNo } from "./format.ts";

export function registerVolumeCommands(program: Command, io: CliIo): void {
  const volume = program.command("volume").description("create, list, grow and delete volumes (exported over NBD under their names)");

  withMgmtOptions(
    volume
      .command("create")
      .description("create a volume (a sparse file on the node)")
      .argument("<NAME>", "volume name: letters, digits, '.', '_', '-' (up to 64)")
      .requiredOption("--size <SIZE>", "size in bytes, or with a K, M, G or T suffix (powers of 1024), e.g. 10G"),
  ).action(async (nameText: string, flags: { size: string }, command: Command) => {
    const name = checkName("volume", nameText);
    const sizeBytes = parseSizeFlag("--size", flags.size, volumeBytesMin, volumeBytesMax);
    const context = mgmtContext(command, io);
    const { value, raw } = await context.client.call(mgmtRoutes.createVolume, { body: { name, sizeBytes } }, {
      what: `create volume '${name}'`,
      hints: { TM_ERR_EXISTS: "pick another name, or see `tidemark volume list`" },
    });
    context.print(raw, () => `created volume ${value.volume.name} (${formatBytes(value.volume.sizeBytes)})\n`);
    // On stderr, so stdout stays the answer (--json carries it as the volume's `warning`).
    const warning = value.volume.warning;
    if (warning !== undefined && warning !== null) io.stderr(`tidemark: warning: ${oneLine(warning)}\n`);
  });

  withMgmtOptions(
    volume
      .command("resize")
      .description("grow a volume (grow only; in a pair the secondary grows too, at the same point of the history)")
      .argument("<NAME>", "volume name")
      .requiredOption("--size <SIZE>", "the new size, at least the current one: bytes, or with a K, M, G or T suffix (powers of 1024), e.g. 20G"),
  ).action(async (nameText: string, flags: { size: string }, command: Command) => {
    const name = checkName("volume", nameText);
    const sizeBytes = parseSizeFlag("--size", flags.size, volumeBytesMin, volumeBytesMax);
    const context = mgmtContext(command, io);
    const { value, raw } = await context.client.call(mgmtRoutes.resizeVolume, { params: { volume: name }, body: { sizeBytes } }, {
      what: `resize volume '${name}'`,
      hints: { TM_ERR_NOT_FOUND: "see `tidemark volume list`" },
    });
    // NBD clients connected now keep the size they were given until they reconnect (docs/volumes.md).
    context.print(raw, () => (value.changed
      ? `volume ${name} is now ${formatBytes(value.volume.sizeBytes)}; NBD clients connected now see the new size once they reconnect\n`
      : `volume ${name} is ${formatBytes(value.volume.sizeBytes)} already; nothing to do\n`));
  });

  withMgmtOptions(
    volume
      .command("delete")
      .description("delete a volume in no group, and its data (a volume that holds data only with --force)")
      .argument("<NAME>", "volume name")
      .option("--force", "delete it even though it holds data (what was written there is lost)"),
  ).action(async (nameText: string, flags: { force?: boolean }, command: Command) => {
    const name = checkName("volume", nameText);
    const context = mgmtContext(command, io);
    const force = flags.force === true;
    const { value, raw } = await context.client.call(mgmtRoutes.deleteVolume, { params: { volume: name }, query: force ? { force: "true" } : {} }, {
      what: `delete volume '${name}'`,
      hints: { TM_ERR_STATE: "see `tidemark volume list`" },
    });
    context.print(raw, () => (value.deleted ? `deleted volume ${name}\n` : `volume ${name} does not exist; nothing to delete\n`));
  });

  withMgmtOptions(volume.command("list").description("list the node's volumes")).action(
    async (_flags: unknown, command: Command) => {
      const context = mgmtContext(command, io);
      const { value, raw } = await context.client.call(mgmtRoutes.listVolumes, {}, { what: "list volumes" });
      context.print(raw, () => renderVolumes(value.volumes));
    },
  );
}

export function renderVolumes(volumes: readonly VolumeInfo[]): string {
  if (volumes.length === 0) return "no volumes; create one with `tidemark volume create NAME --size SIZE`\n";
  // WRITTEN EXTENTS: the bytes of the 1 MiB extents ever written (the written map), what an
  // initial copy reads: the data is at most that. Only from nodes that report it.
  const written = volumes.some((volume) => volume.writtenBytes !== undefined);
  const table = renderTable(
    [
      { header: "NAME" }, { header: "SIZE", align: "right" }, { header: "ALLOCATED", align: "right" },
      ...(written ? [{ header: "WRITTEN EXTENTS", align: "right" as const }] : []), { header: "GROUP" }, { header: "RO" },
    ],
    volumes.map((volume) => [
      volume.name,
      formatBytes(volume.sizeBytes),
      formatBytes(volume.allocatedBytes),
      ...(written ? [volume.writtenBytes === undefined ? "-" : formatBytes(volume.writtenBytes)] : []),
      volume.group ?? "-",
      yesNo(volume.readOnly),
    ]),
  );
  const warnings = volumes.flatMap((volume) => (volume.warning === undefined || volume.warning === null ? [] : [`warning: ${oneLine(volume.warning)}\n`]));
  return table + warnings.join("");
}
