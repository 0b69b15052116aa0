// Output helpers for people (aligned tables, sizes, percentages, times) and for scripts
// (--json prints what the API answered, as JSON). Pure: strings in, strings out.
import { formatBytes } from "./sizes.ts";
import { formatSeconds } from "./durations.ts";

export { formatBytes, formatSeconds };

export type Align = "left" | "right";

export interface Column {
  readonly header: string;
  readonly align?: Align;
}

/** Rows under a header, columns padded to their widest cell, two spaces apart, no trailing blanks. */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((column, index) =>
    Math.max(column.header.length, ...rows.map((row) => (row[index] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    columns
      .map((column, index) => {
        const cell = cells[index] ?? "";
        const width = widths[index] ?? 0;
        return column.align === "right" ? cell.padStart(width) : cell.padEnd(width);
      })
      .join("  ")
      .trimEnd();
  return [line(columns.map((column) => column.header)), ...rows.map(line)].join("\n") + "\n";
}

/** "label:  value" lines with the values aligned. */
export function renderFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...fields.map(([label]) => label.length + 1));
  return fields.map(([label, value]) => `${`${label}:`.padEnd(width)}  ${value}`.trimEnd()).join("\n") + "\n";
}

/** "0.3%", "100.0%"; "-" when there is no maximum. */
export function formatPercent(part: number, whole: number): string {
  if (!(whole > 0)) return "-";
  return `${((part / whole) * 100).toFixed(1)}%`;
}

/** Journal use as "12.0 MiB / 4.0 GiB (0.3%)". */
export function formatUsage(usedBytes: number, maxBytes: number): string {
  return `${formatBytes(usedBytes)} / ${formatBytes(maxBytes)} (${formatPercent(usedBytes, maxBytes)})`;
}

/** Microseconds since the epoch (host/clock policies) shown as ISO time; a counter or 0 as a plain number. */
export function formatWriteTimeUs(writeTimeUs: number, policy: string): string {
  if (writeTimeUs === 0) return "none yet";
  // Before 2001 in microseconds means it is not a time of day (counter policy, or a test clock).
  const plausibleEpochUs = 978_307_200_000_000;
  if (policy === "counter" || writeTimeUs < plausibleEpochUs) return `${writeTimeUs} (counter)`;
  const ms = Math.floor(writeTimeUs / 1000);
  const iso = new Date(ms).toISOString();
  const micros = String(writeTimeUs % 1_000_000).padStart(6, "0");
  return `${iso.slice(0, 19)}.${micros}Z`;
}

/** What `--json` prints: the API's answer, indented, one trailing newline. */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

export function yesNo(value: boolean): string {
  return value ? "yes" : "no";
}
