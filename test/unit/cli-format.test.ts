// Proves the CLI's output helpers: aligned tables (left and right), label fields, journal
// use, write times per policy, and that any server text collapses to one printable line.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { formatPercent, formatUsage, formatWriteTimeUs, renderFields, renderTable } from "../../src/cli/format.ts";
import { oneLine } from "../../src/cli/errors.ts";

void test("renderTable pads columns to their widest cell, right-aligns numbers, trims line ends", () => {
  const text = renderTable(
    [{ header: "NAME" }, { header: "SIZE", align: "right" }, { header: "GROUP" }],
    [
      ["a", "1.0 GiB", "g"],
      ["longer-name", "512 B", ""],
    ],
  );
  assert.equal(text, ["NAME            SIZE  GROUP", "a            1.0 GiB  g", "longer-name    512 B", ""].join("\n"));
});

void test("renderTable: every line has the same column starts (property)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.stringMatching(/^[a-z]{1,12}$/), fc.stringMatching(/^[0-9]{1,9}$/)), { maxLength: 10 }),
      (rows) => {
        const lines = renderTable([{ header: "NAME" }, { header: "N", align: "right" }], rows).trimEnd().split("\n");
        const width = lines[0]!.length;
        for (const line of lines) assert.equal(line.length, width, "right-aligned last column ends in the same place");
      },
    ),
  );
});

void test("renderFields aligns values after the labels", () => {
  assert.equal(renderFields([["node", "a"], ["write time policy", "host"]]), "node:               a\nwrite time policy:  host\n");
});

void test("journal use reads as used / max (percent)", () => {
  assert.equal(formatUsage(12 * 1024 * 1024, 4 * 1024 ** 3), "12.0 MiB / 4.0 GiB (0.3%)");
  assert.equal(formatPercent(1, 0), "-");
  assert.equal(formatPercent(5, 5), "100.0%");
});

void test("write times: ISO with microseconds for clock/host, plain for counters and zero", () => {
  assert.equal(formatWriteTimeUs(1_735_689_600_123_456, "clock"), "2025-01-01T00:00:00.123456Z");
  assert.equal(formatWriteTimeUs(1_735_689_600_000_001, "host"), "2025-01-01T00:00:00.000001Z");
  assert.equal(formatWriteTimeUs(42, "counter"), "42 (counter)");
  assert.equal(formatWriteTimeUs(42, "host"), "42 (counter)");
  assert.equal(formatWriteTimeUs(0, "host"), "none yet");
});

void test("oneLine keeps any text on one printable line and bounds its length", () => {
  assert.equal(oneLine("a\nb\r\n\tc  d"), "a b c d");
  fc.assert(
    fc.property(fc.string({ maxLength: 3000 }), (text) => {
      const line = oneLine(text, 200);
      assert.ok([...line].every((char) => char.charCodeAt(0) >= 0x20 && char.charCodeAt(0) !== 0x7f));
      assert.ok(line.length <= 200);
    }),
  );
});
