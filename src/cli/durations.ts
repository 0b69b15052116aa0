// Durations typed by people: "30s", "500ms", "2m", "1h", "1.5s"; a bare number is seconds.
// For `pair wait --timeout` and `consistency-point --interval` (CONTRACT.md). Parsing is a value.

export type ParseDurationResult =
  | { readonly ok: true; readonly ms: number }
  | { readonly ok: false; readonly reason: string };

const unitMs: Readonly<Record<string, number>> = { ms: 1, s: 1000, "": 1000, m: 60_000, h: 3_600_000 };

/** A week: anything longer is a typo, not a timeout. */
const durationMsMax = 7 * 24 * 3_600_000;

const durationPattern = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i;

const hint = "use a number with ms, s, m or h, e.g. 30s or 500ms";

export function parseDuration(text: string): ParseDurationResult {
  const trimmed = text.trim();
  const match = trimmed.length <= 32 ? durationPattern.exec(trimmed) : null;
  if (match === null) return { ok: false, reason: `duration '${trimmed}' is not understood; ${hint}` };
  const factor = unitMs[(match[2] ?? "").toLowerCase()];
  if (factor === undefined) return { ok: false, reason: `duration '${trimmed}' has an unknown unit; ${hint}` };
  const ms = Math.round(Number(match[1]) * factor);
  if (!Number.isFinite(ms) || ms > durationMsMax) {
    return { ok: false, reason: `duration '${trimmed}' is longer than a week` };
  }
  return { ok: true, ms };
}

/** "45s", "3m 20s", "2h 5m", "4d 3h": two most significant units. */
export function formatSeconds(totalSeconds: number): string {
  if (!Number.isFinite(totalSeconds) || totalSeconds < 0) return String(totalSeconds);
  const seconds = Math.floor(totalSeconds);
  if (seconds < 60) return `${seconds}s`;
  const parts: Array<[number, string]> = [
    [Math.floor(seconds / 86_400), "d"],
    [Math.floor((seconds % 86_400) / 3600), "h"],
    [Math.floor((seconds % 3600) / 60), "m"],
    [seconds % 60, "s"],
  ];
  const first = parts.findIndex(([value]) => value > 0);
  return parts
    .slice(first, first + 2)
    .filter(([value], index) => index === 0 || value > 0)
    .map(([value, unit]) => `${value}${unit}`)
    .join(" ");
}
