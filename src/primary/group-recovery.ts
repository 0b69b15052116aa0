// The replay of a writable group's journal at start (docs/journal.md): every record past the
// checkpoint is re-applied to the group's volumes in sequence order, which is idempotent
// whatever the volumes already held. A full disk or an I/O error while re-applying stops the
// group alone (the node starts; the group replays again when it resumes, and keeps its journal,
// so nothing is lost). GroupRegistry.recover runs it through the journal's record callback.
import { unreachable } from "../core/assert.ts";
import { faultInjected } from "../core/faults.ts";
import { RecordKind, resizeSizeBytes, type JournalRecord } from "../protocol/journal-record.ts";
import { isStorageError } from "../node/group-stop.ts";
import type { GroupVolume } from "./group-writer.ts";

/** One group's replay at start: the journal's record callback, and what it came to. */
export class JournalReplay {
  /** Records re-applied to the volumes. */
  replayed = 0;
  /** The storage error that ended the replay, if one did: the group starts stopped with it. */
  error: Error | undefined;
  private readonly groupName: string;
  private readonly checkpointSequence: number;
  private readonly volumes: ReadonlyMap<number, GroupVolume>;
  private readonly growVolume: GrowVolume;

  constructor(groupName: string, checkpointSequence: number, volumes: ReadonlyMap<number, GroupVolume>, growVolume: GrowVolume) {
    this.groupName = groupName;
    this.checkpointSequence = checkpointSequence;
    this.volumes = volumes;
    this.growVolume = growVolume;
  }

  /**
   * The journal's record callback (GroupJournal.open): re-applies a record past the
   * checkpoint, until a storage error ends the replay. Other errors (a damaged journal) are
   * thrown and stop the start.
   */
  readonly onRecord = async (record: JournalRecord): Promise<void> => {
    if (record.sequence <= this.checkpointSequence || this.error !== undefined) return;
    try {
      await replayRecord(this.groupName, this.volumes, record, this.growVolume);
    } catch (error) {
      if (!isStorageError(error)) throw error;
      this.error = error as Error;
      return;
    }
    this.replayed += 1;
  };
}

/** Grows a volume to a size, idempotently (node.json's size first, then the file and its map): VolumeRegistry.grow. */
export type GrowVolume = (volumeId: number, sizeBytes: number) => Promise<void>;

/**
 * Re-applies one recovered journal record of a writable group to its volume. Every record
 * kind the journal can hold is handled: markers and time advances change no volume; a resize
 * grows the volume (again: a crash may have come between the record and node.json's save;
 * a size at or below the volume's is nothing to do, as when a later resize was saved).
 * A record for a volume the group does not have, or a range past its end, is damage,
 * refused with what to do.
 */
export async function replayRecord(groupName: string, volumes: ReadonlyMap<number, GroupVolume>, record: JournalRecord, growVolume: GrowVolume): Promise<void> {
  if (faultInjected("replay-unknown-record-kind") && record.kind !== RecordKind.write && record.kind !== RecordKind.zeroes) {
    throw new Error(`journal of group ${groupName} has a record for unknown volume ${record.volumeId}`);
  }
  switch (record.kind) {
    case RecordKind.timeAdvance:
    case RecordKind.marker:
      return;
    case RecordKind.resize: {
      if (!volumes.has(record.volumeId)) {
        throw new Error(`journal of group ${groupName} has a resize (sequence ${record.sequence}) of volume ${record.volumeId}, which the group does not hold; the data directory is damaged or was edited: restore it from a backup`);
      }
      await growVolume(record.volumeId, resizeSizeBytes(record));
      return;
    }
    case RecordKind.write:
    case RecordKind.zeroes: {
      const volume = volumes.get(record.volumeId);
      if (volume === undefined || record.offsetBytes + record.lengthBytes > volume.file.sizeBytes) {
        throw new Error(`journal of group ${groupName} has a record (sequence ${record.sequence}) for volume ${record.volumeId} range ` +
          `${record.offsetBytes}+${record.lengthBytes}, which the group does not hold; the data directory is damaged or was edited: restore it from a backup`);
      }
      if (record.kind === RecordKind.write) await volume.file.write(record.offsetBytes, record.payload);
      else await volume.file.writeZeroes(record.offsetBytes, record.lengthBytes);
      return;
    }
    default:
      unreachable(record.kind, "journal record kind");
  }
}
