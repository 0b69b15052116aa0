// Proves nonZeroRuns (src/core/data-runs.ts), what the initial copy sends of a chunk: against a
// block-by-block model over random buffers, the runs are exactly the 4 KiB blocks holding a
// byte other than zero (the last block may be short), adjacent ones coalesced, in order; the
// runs and the zero blocks between them cover the buffer, so the copy's progress adds up.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { dataRunBlockBytes, nonZeroRuns } from "../../src/core/data-runs.ts";

const block = dataRunBlockBytes;

void test("nonZeroRuns: exactly the blocks that hold data, coalesced, in order", () => {
  const bufferArb = fc.record({
    blocks: fc.integer({ min: 0, max: 40 }),
    tailBytes: fc.integer({ min: 0, max: block - 1 }),
    pokes: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 1, max: 255 }) }), { maxLength: 30 }),
  });
  fc.assert(fc.property(bufferArb, ({ blocks, tailBytes, pokes }) => {
    const data = Buffer.alloc(blocks * block + tailBytes);
    for (const { at, value } of pokes) if (data.length > 0) data[at % data.length] = value;
    const runs = nonZeroRuns(data);
    const expected: { offsetBytes: number; lengthBytes: number }[] = [];
    for (let at = 0; at < data.length; at += block) {
      const end = Math.min(at + block, data.length);
      if (!data.subarray(at, end).some((byte) => byte !== 0)) continue;
      const last = expected[expected.length - 1];
      if (last !== undefined && last.offsetBytes + last.lengthBytes === at) last.lengthBytes += end - at;
      else expected.push({ offsetBytes: at, lengthBytes: end - at });
    }
    assert.deepEqual(runs, expected);
    let zeroBytes = data.length;
    for (const run of runs) {
      zeroBytes -= run.lengthBytes;
      assert.ok(run.offsetBytes % block === 0, "runs start on a block");
    }
    const outside = Buffer.from(data);
    for (const run of runs) outside.fill(0, run.offsetBytes, run.offsetBytes + run.lengthBytes);
    assert.ok(outside.every((byte) => byte === 0), "nothing outside the runs holds data");
    assert.ok(zeroBytes >= 0 && zeroBytes % 1 === 0);
  }), { numRuns: 500 });
});

void test("nonZeroRuns: a 4 MiB copy chunk with two scattered 4 KiB writes sends 8 KiB; an all-zero one sends nothing", () => {
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  assert.deepEqual(nonZeroRuns(chunk), []);
  chunk[12345] = 1;
  chunk[3 * 1024 * 1024 + 4095] = 2;
  assert.deepEqual(nonZeroRuns(chunk), [{ offsetBytes: 12288, lengthBytes: block }, { offsetBytes: 3 * 1024 * 1024, lengthBytes: block }]);
});
