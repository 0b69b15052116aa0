// Where a buffer read from a volume holds data: the initial copy sends only these runs (docs/
// volumes.md, "The initial copy"), because the written map marks whole 1 MiB extents and a
// scattered 4 KiB write leaves the rest of its extent zero. The secondary's volume is empty
// before the copy, so a run of zeroes needs no message and allocates nothing there. Pure.
import { assert } from "./assert.ts";
import type { ByteRange } from "./extent-map.ts";

/** The granularity of the runs: a file system block (and the host's usual write size). */
export const dataRunBlockBytes = 4096;

const zeroBlock = new Uint8Array(dataRunBlockBytes);

/**
 * The runs of `data` that hold a byte other than zero, in order, offsets relative to `data`:
 * each covers whole blocks of `dataRunBlockBytes` (the last block of `data` may be shorter),
 * adjacent blocks that hold data are one run, blocks of zeroes are left out. An all-zero
 * buffer gives none; the runs and the zero blocks between them cover `data` exactly.
 */
export function nonZeroRuns(data: Uint8Array): ByteRange[] {
  const runs: ByteRange[] = [];
  let runStart = -1;
  for (let at = 0; at < data.length; at += dataRunBlockBytes) {
    const end = Math.min(at + dataRunBlockBytes, data.length);
    const zero = Buffer.compare(data.subarray(at, end), zeroBlock.subarray(0, end - at)) === 0;
    if (!zero && runStart < 0) runStart = at;
    if (zero && runStart >= 0) {
      runs.push({ offsetBytes: runStart, lengthBytes: at - runStart });
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push({ offsetBytes: runStart, lengthBytes: data.length - runStart });
  assert(runs.every((run) => run.lengthBytes > 0), "a run holds at least one block");
  return runs;
}
