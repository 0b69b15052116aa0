// Proves the size and duration parsers: exact powers of 1024, clear reasons for bad input,
// and never a throw, with examples and fast-check properties (round trips, arbitrary garbage).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { formatBytes, parseSize } from "../../src/cli/sizes.ts";
import { formatSeconds, parseDuration } from "../../src/cli/durations.ts";
import { parseSizeFlag } from "../../src/cli/command-kit.ts";

const KiB = 1024;
const MiB = KiB * 1024;
const GiB = MiB * 1024;
const TiB = GiB * 1024;

void test("sizes: plain bytes and K/M/G/T suffixes are powers of 1024", () => {
  const cases: Array<[string, number]> = [
    ["4096", 4096],
    ["0", 0],
    ["512K", 512 * KiB],
    ["512k", 512 * KiB],
    ["512M", 512 * MiB],
    ["10G", 10 * GiB],
    ["2T", 2 * TiB],
    ["10GiB", 10 * GiB],
    ["10GB", 10 * GiB],
    ["10 G", 10 * GiB],
    [" 64M ", 64 * MiB],
    ["4096B", 4096],
    ["1.5G", 1.5 * GiB],
    ["0.5K", 512],
  ];
  for (const [text, bytes] of cases) assert.deepEqual(parseSize(text), { ok: true, bytes }, text);
});

void test("sizes: bad input gives a reason that names the problem", () => {
  const cases: Array<[string, RegExp]> = [
    ["12X", /unknown unit 'X'/],
    ["12iB", /unknown unit 'iB'/],
    ["12BiB", /unknown unit/],
    ["", /empty/],
    ["   ", /empty/],
    ["-5G", /negative/],
    ["G", /not understood/],
    ["1e9", /not understood/],
    ["0x100", /not understood/],
    ["1.2.3G", /not understood/],
    ["1.1", /not a whole number of bytes/],
    ["0.3K", /not a whole number of bytes/],
    ["9999999T", /too large/],
    ["9".repeat(100), /too long/],
  ];
  for (const [text, pattern] of cases) {
    const result = parseSize(text);
    assert.equal(result.ok, false, text);
    if (!result.ok) {
      assert.match(result.reason, pattern, text);
      assert.ok(!result.reason.includes("\n"), "one line");
    }
  }
});

void test("sizes: n followed by a unit parses back to n * 1024^k (property)", () => {
  const units: Array<[string, number]> = [["", 1], ["K", KiB], ["M", MiB], ["G", GiB], ["T", TiB]];
  fc.assert(
    fc.property(fc.nat({ max: 8191 }), fc.constantFrom(...units), fc.constantFrom("", "B", "iB"), (n, [unit, factor], tail) => {
      const text = unit === "" ? `${n}${tail === "iB" ? "" : tail}` : `${n}${unit}${tail}`;
      assert.deepEqual(parseSize(text), { ok: true, bytes: n * factor });
    }),
  );
});

void test("sizes: arbitrary strings never throw, and a success is a safe whole number", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (text) => {
      const result = parseSize(text);
      if (result.ok) {
        assert.ok(Number.isSafeInteger(result.bytes) && result.bytes >= 0);
      } else {
        assert.ok(result.reason.length > 0);
      }
    }),
    { numRuns: 2000 },
  );
});

void test("sizes: formatBytes shows one decimal in binary units", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(12 * MiB), "12.0 MiB");
  assert.equal(formatBytes(4 * GiB), "4.0 GiB");
  assert.equal(formatBytes(1.5 * TiB), "1.5 TiB");
  assert.equal(formatBytes(GiB - 1), "1.0 GiB");
});

void test("sizes: formatBytes output parses back to within 5% (property)", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1024, max: 2 ** 50 }), (bytes) => {
      const text = formatBytes(bytes).replace(" ", "");
      const match = /^([\d.]+)(\w+)$/.exec(text);
      assert.ok(match, text);
      const factor = { B: 1, KiB: KiB, MiB: MiB, GiB: GiB, TiB: TiB, PiB: TiB * 1024 }[match[2]!]!;
      const approx = Number(match[1]) * factor;
      assert.ok(Math.abs(approx - bytes) / bytes < 0.05, `${bytes} -> ${text}`);
    }),
  );
});

void test("durations: units, bare seconds, and clear errors", () => {
  assert.deepEqual(parseDuration("30s"), { ok: true, ms: 30_000 });
  assert.deepEqual(parseDuration("500ms"), { ok: true, ms: 500 });
  assert.deepEqual(parseDuration("2m"), { ok: true, ms: 120_000 });
  assert.deepEqual(parseDuration("1h"), { ok: true, ms: 3_600_000 });
  assert.deepEqual(parseDuration("1.5s"), { ok: true, ms: 1500 });
  assert.deepEqual(parseDuration("10"), { ok: true, ms: 10_000 });
  for (const bad of ["", "s", "10x", "-1s", "1e3s"]) {
    const result = parseDuration(bad);
    assert.equal(result.ok, false, bad);
  }
  const long = parseDuration("200h");
  assert.equal(long.ok, false);
  fc.assert(fc.property(fc.string({ maxLength: 40 }), (text) => void parseDuration(text)));
});

void test("durations: formatSeconds shows the two largest units", () => {
  assert.equal(formatSeconds(0), "0s");
  assert.equal(formatSeconds(59.9), "59s");
  assert.equal(formatSeconds(60), "1m");
  assert.equal(formatSeconds(3725), "1h 2m");
  assert.equal(formatSeconds(200), "3m 20s");
  assert.equal(formatSeconds(4 * 86_400 + 3 * 3600 + 5), "4d 3h");
});

void test("size flags: one line with the maximum, also past what a number holds (100P), and below the minimum", () => {
  const max = 16 * 2 ** 40;
  assert.throws(() => parseSizeFlag("--size", "100P", 4096, max), /^UsageError: --size 100P is above the maximum of 16\.0 TiB$/);
  assert.throws(() => parseSizeFlag("--size", "17T", 4096, max), /^UsageError: --size 17T is above the maximum of 16\.0 TiB$/);
  assert.throws(() => parseSizeFlag("--size", "1K", 4096, max), /below the minimum of 4\.0 KiB/);
  assert.equal(parseSizeFlag("--size", "16T", 4096, max), max);
  const huge = parseSize("100P");
  assert.ok(!huge.ok && huge.tooLarge === true && /too large \(more than 8\.0 PiB\)/.test(huge.reason));
});
