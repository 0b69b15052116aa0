// Writes in flight to overlapping ranges of one volume reach the file in acceptance
// (sequence) order. Without this, two concurrent writes to one block could land in the
// file in the opposite order to the journal, and the primary's image would differ from
// what a replay or a secondary builds from the same journal.
import { assert } from "../core/assert.ts";
import { nbdRequestsInFlightMax, hostRequestsInFlightMax, nbdConnectionsMax } from "../core/limits.ts";

interface InFlight {
  readonly startBytes: number;
  readonly endBytes: number;
  readonly done: Promise<void>;
}

/** A bound that can never be reached by well-behaved front ends; a guard against leaks. */
const inFlightPerVolumeMax = (nbdRequestsInFlightMax + hostRequestsInFlightMax) * nbdConnectionsMax;

export class ApplyOrder {
  private readonly inFlight = new Set<InFlight>();

  /**
   * Runs `apply` for [startBytes, endBytes) once every earlier overlapping apply has
   * finished. Must be called in acceptance order (it is, synchronously, from the ingest).
   */
  run(startBytes: number, endBytes: number, apply: () => Promise<void>): Promise<void> {
    assert(endBytes > startBytes, "apply range is not empty");
    assert(this.inFlight.size < inFlightPerVolumeMax, "applies in flight per volume stay bounded");
    const earlier: Promise<void>[] = [];
    for (const other of this.inFlight) {
      if (other.startBytes < endBytes && startBytes < other.endBytes) earlier.push(other.done);
    }
    const done = earlier.length === 0 ? apply() : Promise.allSettled(earlier).then(apply);
    const entry: InFlight = { startBytes, endBytes, done };
    this.inFlight.add(entry);
    const remove = (): void => {
      this.inFlight.delete(entry);
    };
    done.then(remove, remove);
    return done;
  }

  /**
   * Settles once every apply started so far that overlaps [startBytes, endBytes) has
   * finished; undefined when none does (the common case costs no promise). A read waits on
   * it: a write is answered before it reaches the volume (journal before volume), and a
   * read after the answer must see it.
   */
  settledOver(startBytes: number, endBytes: number): Promise<unknown> | undefined {
    if (this.inFlight.size === 0) return undefined;
    let overlapping: Promise<void>[] | undefined;
    for (const other of this.inFlight) {
      if (other.startBytes < endBytes && startBytes < other.endBytes) (overlapping ??= []).push(other.done);
    }
    return overlapping === undefined ? undefined : Promise.allSettled(overlapping);
  }

  get size(): number {
    return this.inFlight.size;
  }

  /** Resolves once everything started so far has finished (used before a checkpoint or close). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inFlight].map((entry) => entry.done));
  }
}
