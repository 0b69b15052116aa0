// Sizes typed by people: "4096", "512K", "10G", "1.5T", "64MiB". Units are powers of 1024
// (CONTRACT.md). Parsing is a value, never a throw: the caller turns `reason` into a usage error.

export type ParseSizeResult =
  | { readonly ok: true; readonly bytes: number }
  | { readonly ok: false; readonly reason: string; readonly tooLarge?: boolean };

const unitShift: Readonly<Record<string, number>> = { "": 0, b: 0, k: 10, m: 20, g: 30, t: 40, p: 50 };

/** Longest size string we look at; anything longer is certainly a mistake. */
const sizeTextLengthMax = 64;

const sizePattern = /^(\d+(?:\.\d+)?)\s*([a-z]?)(i?b)?$/i;

const hint = "use a number of bytes or a K, M, G or T suffix (powers of 1024), e.g. 512M or 10G";

export function parseSize(text: string): ParseSizeResult {
  const trimmed = text.trim();
  if (trimmed.length === 0) return { ok: false, reason: `size is empty; ${hint}` };
  if (trimmed.length > sizeTextLengthMax) return { ok: false, reason: `size is too long; ${hint}` };
  if (trimmed.startsWith("-")) return { ok: false, reason: `size '${trimmed}' is negative; ${hint}` };
  const match = sizePattern.exec(trimmed);
  if (match === null) return { ok: false, reason: `size '${trimmed}' is not understood; ${hint}` };
  const numberText = match[1] ?? "";
  const unitLetter = (match[2] ?? "").toLowerCase();
  const unitTail = match[3] ?? "";
  // "iB" without a unit letter ("12iB") means nothing; a lone "B" is bytes.
  if (unitLetter === "" && unitTail !== "" && unitTail.toLowerCase() !== "b") {
    return { ok: false, reason: `size '${trimmed}' has an unknown unit '${unitTail}'; ${hint}` };
  }
  const shift = unitShift[unitLetter];
  if (shift === undefined) {
    return { ok: false, reason: `size '${trimmed}' has an unknown unit '${match[2] ?? ""}${unitTail}'; ${hint}` };
  }
  if (unitLetter === "b" && unitTail !== "") {
    return { ok: false, reason: `size '${trimmed}' has an unknown unit '${match[2] ?? ""}${unitTail}'; ${hint}` };
  }
  return scale(trimmed, numberText, shift);
}

function scale(trimmed: string, numberText: string, shift: number): ParseSizeResult {
  const [wholeText = "", fractionText = ""] = numberText.split(".");
  // Exact arithmetic in BigInt: "1.5G" must be 1610612736, not a rounded double.
  const denominator = 10n ** BigInt(fractionText.length);
  const numerator = BigInt(wholeText + fractionText) << BigInt(shift);
  if (numerator % denominator !== 0n) {
    return { ok: false, reason: `size '${trimmed}' is not a whole number of bytes; ${hint}` };
  }
  const bytes = numerator / denominator;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { ok: false, reason: `size '${trimmed}' is too large (more than ${formatBytes(Number.MAX_SAFE_INTEGER)})`, tooLarge: true };
  }
  return { ok: true, bytes: Number(bytes) };
}

const unitNames = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] as const;

/** "512 B", "12.0 MiB", "4.0 GiB": one decimal, powers of 1024. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return String(bytes);
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < unitNames.length - 1) {
    value /= 1024;
    unit += 1;
  }
  // 1023.96 KiB would print as "1024.0 KiB"; move to the next unit instead.
  if (value.toFixed(1) === "1024.0" && unit < unitNames.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${unitNames[unit] ?? "?"}`;
}
