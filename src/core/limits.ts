// Every queue, buffer, frame and connection count has a named limit, here, with the
// relations between them checked once when the module loads.
import { assert } from "./assert.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Largest NBD READ/WRITE payload we accept (advertised as the maximum block size). */
export const nbdRequestBytesMax = 32 * MiB;
/** Longest export name or option payload in the NBD handshake. */
export const nbdOptionBytesMax = 64 * KiB;
/** Options a client may send before it must pick an export. */
export const nbdOptionsPerConnectionMax = 128;
/** Requests in flight on one NBD connection before we stop reading its socket. */
export const nbdRequestsInFlightMax = 256;
/** NBD connections past their handshake (in transmission) the node serves at once; past it a finished handshake is refused. */
export const nbdConnectionsMax = 256;
/**
 * NBD connections still in their handshake at once, counted apart from nbdConnectionsMax: when
 * the pool is full, the oldest handshaking connection is closed to admit the new one, so silent
 * connections cannot lock a real client out (docs/nbd.md, "Connection limits").
 */
export const nbdHandshakesMax = 256;
/** Payload bytes (write data held, read data asked for) in flight on one NBD connection before we stop reading. */
export const nbdInFlightBytesMax = 128 * MiB;
/** Longest string in the NBD handshake (the protocol's own cap on names and messages). */
export const nbdStringBytesMax = 4096;
/** A client must finish the NBD handshake within this time (monotonic), or its connection is closed. */
export const nbdHandshakeTimeoutMs = 5_000;
/** After the server ends a connection (DISC, a failed handshake), the peer's time to read the last replies and close before the socket is destroyed. */
export const nbdCloseLingerMs = 2_000;
/** Buffers the NBD server pooled for a burst (connections, large requests) and then left unused this long are given back to the system. */
export const nbdBufferIdleReleaseMs = 5_000;
/** How long closing the NBD server waits for requests in flight before it drops connections. */
export const nbdCloseGraceMs = 5_000;

/** Host protocol: largest payload of one request, and requests in flight per connection. */
export const hostRequestBytesMax = 32 * MiB;
export const hostRequestsInFlightMax = 256;
/** Host protocol connections past HELLO the node serves at once; past it HELLO is refused (EBUSY). */
export const hostConnectionsMax = 256;
/** Host protocol connections before HELLO at once, apart from hostConnectionsMax; when full the oldest is closed. */
export const hostHandshakesMax = 256;
export const hostVolumesPerConnectionMax = 64;
/** Host protocol: request payload bytes in flight per connection before we stop reading it. */
export const hostInFlightBytesMax = 128 * MiB;
/** Host protocol: longest UTF-8 error message carried in a reply. */
export const hostErrorMessageBytesMax = 1024;
/** Host protocol: a connection must complete HELLO within this time (monotonic), or it is closed (ETIMEDOUT). */
export const hostHelloTimeoutMs = 5_000;
/** Host protocol: after an error frame, how long the peer gets to close before we destroy the socket. */
export const hostCloseGraceMs = 2_000;

/** Journal record payload never exceeds one request. */
export const journalRecordPayloadBytesMax = nbdRequestBytesMax;
/** Bytes one journal record takes at most: its 64-byte header (journal-record.ts) and the largest payload. */
export const journalRecordBytesMax = 64 + journalRecordPayloadBytesMax;
/** A journal segment file is closed and a new one started past this size. */
export const journalSegmentBytesMax = 256 * MiB;
/** Default size limit of one group's journal (all segments). */
export const journalBytesMaxDefault = 4 * GiB;
/**
 * Smallest and largest journal size limit a group may be given (group create --journal-size;
 * a smaller limit in an older node.json is raised to it at start, with a log line). A full
 * journal can trim everything but its active segment, which is always below a segment's size
 * (a quarter of the limit, journal.ts); the smallest journal must still take one largest
 * record next to it, or a write of the largest size the front ends accept would wait forever.
 */
export const journalBytesMin = 64 * MiB;
export const journalBytesLimit = 1024 * GiB;
/** Bytes gathered into one journal writev before it is issued. */
export const journalBatchBytesMax = 8 * MiB;
/** Records gathered into one journal writev (also bounded by IOV_MAX). */
export const journalBatchRecordsMax = 512;
/** Journal recovery and readFrom read segment files in chunks of this size. */
export const journalReadChunkBytes = 1 * MiB;
/** The journal's sparse in-memory index keeps one offset per this many bytes or records, whichever comes first. */
export const journalIndexStrideBytes = 1 * MiB;
export const journalIndexStrideRecords = 1024;
/** Once this many bytes of journal are applied, the ingest checkpoints and trims. */
export const journalCheckpointBytes = 256 * MiB;
/**
 * Payload bytes a group holds in memory between answering a write and applying it to the
 * volume (after the journal's fdatasync). Past it, new writes wait for applies (held).
 */
export const groupApplyPendingBytesMax = 256 * MiB;
/** An answered write reaches its volume at most this long after the first write waiting for a group commit (then one is made). */
export const groupApplyDelayMsMax = 50;
/** Host writes one group may hold (journal full, slowed, volumes behind): every request the front ends may have in flight. */
export const heldWritesPerGroupMax = nbdConnectionsMax * nbdRequestsInFlightMax + hostConnectionsMax * hostRequestsInFlightMax;
/**
 * Downstreams one group's ingest feeds at once (GroupWriter.attach): the pairs it is the
 * primary of. Metadata allows one pair per group today; the cascade hop needs more.
 */
export const ingestObserversPerGroupMax = 16;
/** Operator commands (suspend, resume) one pair has waiting for their save at once; more are refused (TM_ERR_LIMIT). */
export const pairCommandsInFlightMax = 64;
/**
 * The log says when a group's host writes start being held, why, when the reason changes and
 * when none is held any more: at most one such line per this interval, however fast the state
 * flaps; a change within it is written when it ends, if still true then (docs/replication.md).
 */
export const heldLogIntervalMs = 2_000;
/**
 * `pair create` follows the initial copy; if in this long no replication stream of the new pair
 * has connected (the secondary's --repl address cannot be reached from the primary), it stops
 * following and says so, with what to check; the pair stays and keeps retrying.
 */
export const pairCreateLinkWaitMsMax = 20_000;
/**
 * `pair resume` waits at most this long for the node to drop its reason for each resumed pair
 * before it prints the pair's state: right after a resume no stream is connected yet, and
 * "secondary unreachable" would be printed for a secondary that is reachable. A reason still
 * there after the wait is printed as the node reports it (the pair keeps retrying).
 */
export const pairResumeLinkWaitMsMax = 5_000;
/** A stopped group (ENOSPC, EIO) tries to resume after this long, doubling up to the maximum. */
export const groupResumeDelayMsMin = 500;
export const groupResumeDelayMsMax = 5_000;
/**
 * Space a node keeps aside in its data directory (a file of written blocks) and gives back
 * when a metadata save or a takeover meets a full disk: node.json of a full node and a
 * takeover's new journal files fit in it many times over.
 */
export const metadataReserveBytes = 8 * MiB;

/** Replication protocol (docs/replication-protocol.md): largest frame, header included, either side accepts.
 * Holds one largest journal record (64-byte header + payload) with room to spare for the frame and batch headers. */
export const replFrameBytesMax = journalRecordPayloadBytesMax + 1 * MiB;
/** Volume data bytes in one COPY_DATA message of the initial copy. */
export const replCopyChunkBytesMax = 4 * MiB;
/** Longest pair id (printable ASCII) in OPEN_GROUP. */
export const replPairIdBytesMax = 64;
/** Longest UTF-8 text in ERROR, NACK and CLOSE. */
export const replMessageTextBytesMax = 1024;
/** A replication connection must complete HELLO / HELLO_OK within this time (monotonic), or it is closed. */
export const replHelloTimeoutMs = 5_000;
/** A takeover waits this long (monotonic) for the primary's FENCED answer to its FENCE, then refuses (or, with --force, goes on). */
export const fenceAnswerTimeoutMs = 10_000;
/**
 * After FENCED, a takeover waits this long (monotonic) for the records through the primary's
 * last accepted sequence to arrive (they are in flight); then it refuses, and the primary stays fenced.
 */
export const fenceArrivalTimeoutMs = 30_000;
/**
 * After FENCED, once every host write the primary accepted has arrived, a takeover waits at
 * most this much longer (monotonic) for the time advances after it; without them the group
 * may hold its domain's frontier, which only matters when the cut then misses a write.
 */
export const fenceTimeAdvanceGraceMs = 1_000;
/** `pair takeover` waits for the node's answer this much longer than the fence's own deadlines (the conversion's saves). */
export const takeoverCommandMarginMs = 30_000;
/** A fenced group logs the host writes it refuses at most once per this interval (with their count). */
export const fencedWriteLogIntervalMs = 1_000;
/** Each side sends PING after this long without sending anything. */
export const replPingIntervalMs = 1_000;
/** A replication connection that received nothing for this long is dead: close it and reconnect. */
export const replPeerTimeoutMs = 5_000;
/**
 * A request that expects an answer (BATCH -> ACK/NACK, COPY_DATA/COPY_ZEROES -> COPY_ACK)
 * and none came for this long, while the peer may still send PINGs: the stream is stuck (a
 * half-open or black-holed flow, a stuck peer); close it so that what it carried is sent
 * again on another stream. Generous: an ACK waits for the secondary's fdatasync.
 */
export const replAnswerTimeoutMs = 10_000;
/** Pull mode: a PULL unanswered for replPullWaitMs plus this long means the stream is stuck (the primary only reads its journal to answer). */
export const replPullAnswerGraceMs = 4_000;
/** Pull mode: the most a secondary asks for in one PULL (maxBytes); it asks for less when its journal has less room. */
export const replPullBytesMax = 4 * MiB;
/** Pull mode: pulled batches received and not yet journaled, per group, before the secondary asks for more. */
export const replPullsInHandMax = 4;
/** A secondary out of journal space refused a batch (NACK NO_SPACE): the primary sends again after this long, doubling to the maximum, or at once when the secondary says it has room. */
export const replNoSpaceRetryMsMin = 250;
export const replNoSpaceRetryMsMax = 5_000;
/** The primary holds a PULL it cannot serve yet at most this long before answering with an empty BATCH. */
export const replPullWaitMs = 1_000;
/** Reconnect backoff after a link loss: doubles from the minimum up to the maximum. */
export const replReconnectDelayMsMin = 100;
export const replReconnectDelayMsMax = 5_000;

/** A host write time more than this far ahead of the node's clock is lowered to it (never recorded for good). */
export const hostWriteTimeAheadUsMax = 60 * 1_000_000;
/** `tidemark node --max-clock-skew`: at most this (every host write answer waits it out: more is a typo, or clocks no one should compare). */
export const maxClockSkewMsMax = 1_000;
/** Write answers waiting out the clock skew (commit wait) on a node at once: every request the front ends let be in flight. */
export const commitWaitsPendingMax = nbdConnectionsMax * nbdRequestsInFlightMax + hostConnectionsMax * hostRequestsInFlightMax;
/**
 * A commit wait never lasts longer than this: the skew plus how far a host time may be ahead
 * of the clock (wallClockUs never goes back, so a write time is at most that far ahead).
 * Past it the write is answered with EIO and a log line (its record stays: a write answered
 * with an error may or may not be there, like any failed write).
 */
export const commitWaitMsMax = maxClockSkewMsMax + hostWriteTimeAheadUsMax / 1000 + 1_000;

/** Volume size limits. */
export const volumeBytesMin = 4 * KiB;
export const volumeBytesMax = 16 * 1024 * GiB;
export const volumesPerNodeMax = 4096;
export const groupsPerNodeMax = 1024;
export const volumesPerGroupMax = 256;
export const nameLengthMax = 64;
/**
 * The written map (docs/volumes.md) keeps one bit per extent of this size: set once any
 * byte of the extent was written. The initial copy reads only marked extents.
 */
export const writtenMapExtentBytes = 1 * MiB;
/** Bits of the largest volume's written map, in bytes (16 TiB / 1 MiB / 8 = 2 MiB). */
export const writtenMapBitsBytesMax = Math.ceil(volumeBytesMax / writtenMapExtentBytes / 8);

/** Largest value a sequence number, write time or byte offset may take (exact in a double). */
export const safeIntegerMax = Number.MAX_SAFE_INTEGER;

/** Management API body size. */
export const mgmtBodyBytesMax = 64 * KiB;
/** Longest management URL of another node (pair create --to) the API accepts. */
export const mgmtUrlLengthMax = 2048;
/** Largest management API answer the CLI reads (a status of a full node stays far below). */
export const mgmtResponseBytesMax = 16 * MiB;
/** How long the CLI waits for one management API answer unless told otherwise. */
export const mgmtRequestTimeoutMsDefault = 10_000;
/** Largest `tidemark node --config` file read (a real one is well under 4 KiB); a larger one is refused before it is parsed. */
export const nodeConfigBytesMax = 64 * KiB;

assert(journalRecordPayloadBytesMax <= journalSegmentBytesMax / 2, "a record must fit well inside a segment");
assert(journalBatchBytesMax >= nbdRequestBytesMax / 4, "a batch holds a useful share of the largest request");
assert(journalBatchRecordsMax <= 1024, "writev takes at most IOV_MAX (1024) buffers");
assert(nbdInFlightBytesMax >= nbdRequestBytesMax, "one largest NBD request always fits in flight");
assert(nbdOptionBytesMax >= nbdStringBytesMax + 8, "an NBD option can carry a longest name");
assert(volumeBytesMax < safeIntegerMax, "volume offsets stay exact in a double");
assert(journalCheckpointBytes < journalBytesMaxDefault, "checkpoints happen before the journal fills");
assert(journalBytesMin / 4 + journalRecordBytesMax <= journalBytesMin, "a full journal trimmed to its active segment (under a quarter of it) still takes one largest record");
assert(journalBytesMin <= journalBytesMaxDefault && journalBytesMaxDefault <= journalBytesLimit, "the default journal size is allowed");
assert(hostInFlightBytesMax >= hostRequestBytesMax, "one largest host request always fits in flight");
assert(groupApplyPendingBytesMax >= nbdRequestBytesMax && groupApplyPendingBytesMax >= hostRequestBytesMax, "one largest write always fits between answer and apply");
assert(commitWaitsPendingMax >= nbdConnectionsMax * nbdRequestsInFlightMax + hostConnectionsMax * hostRequestsInFlightMax, "every request the front ends let be in flight can wait out the clock skew");
assert(heldWritesPerGroupMax >= nbdConnectionsMax * nbdRequestsInFlightMax + hostConnectionsMax * hostRequestsInFlightMax, "a group can hold every request the front ends let be in flight");
assert(groupResumeDelayMsMin <= groupResumeDelayMsMax, "resume backoff range");
// A burst of well-formed clients up to the limit is accepted in one go before any of them has
// sent its handshake: none of them may be the "oldest" closed to admit the next.
assert(nbdHandshakesMax >= nbdConnectionsMax, "a burst of NBD clients up to the limit fits the handshake pool");
assert(hostHandshakesMax >= hostConnectionsMax, "a burst of host clients up to the limit fits the handshake pool");
assert(nbdCloseLingerMs < nbdHandshakeTimeoutMs && hostCloseGraceMs < hostHelloTimeoutMs, "a closing peer's grace is shorter than a handshake deadline");
assert(replFrameBytesMax >= journalRecordPayloadBytesMax + 64 + 64, "a replication frame holds the largest journal record with its header and the frame and batch headers");
assert(replCopyChunkBytesMax + 64 <= replFrameBytesMax, "a COPY_DATA frame fits in a frame");
assert(replCopyChunkBytesMax % writtenMapExtentBytes === 0, "copy chunks cover whole written-map extents");
assert(writtenMapBitsBytesMax <= 4 * MiB, "a volume's written map stays small enough to rewrite at every checkpoint");
assert(writtenMapExtentBytes % 4096 === 0, "written-map extents are whole 4 KiB blocks (O_DIRECT copy reads)");
assert(replPingIntervalMs * 3 <= replPeerTimeoutMs, "several pings fit in the peer timeout");
assert(replPullWaitMs * 2 <= replPullWaitMs + replPullAnswerGraceMs, "a held PULL is answered well before the secondary gives up on it");
assert(replNoSpaceRetryMsMin <= replNoSpaceRetryMsMax, "no-space retry range");
assert(replReconnectDelayMsMin <= replReconnectDelayMsMax, "reconnect backoff range");

// Replication (docs/replication.md). The sender bounds what is unacknowledged per pair;
// the receiver's reorder buffer only ever holds records from that window, so its bounds
// are at least the window plus one largest record (a batch always carries one record).
/** Parallel streams (connections) per pair. */
export const replStreamsMax = 16;
/** Replication connections past HELLO the secondary's listener serves at once; past it HELLO is refused. */
export const replConnectionsMax = replStreamsMax * 64;
/** Replication connections before HELLO at once, apart from replConnectionsMax; when full the oldest is closed. */
export const replHandshakesMax = replConnectionsMax;
/** Streams per pair when `pair create` is not told (CONTRACT.md). */
export const replStreamsDefault = 4;
/** A batch is cut at this size (but always carries at least one record). */
export const replBatchBytesMax = 1 * MiB;
/** Records in one batch. */
export const replBatchRecordsMax = 1024;
/** Batches sent on one stream and not yet answered. */
export const replBatchesInFlightPerStreamMax = 4;
/** Bytes and records sent and not yet acknowledged (durable on the secondary), per pair. */
export const replInFlightBytesMax = 64 * MiB;
export const replInFlightRecordsMax = 65_536;
/** The secondary's out-of-order records per group; over it a batch is refused, never buffered. */
export const replReorderBytesMax = 128 * MiB;
export const replReorderRecordsMax = replInFlightRecordsMax;
/** Records handed to the journal and not yet durable, per group on the secondary. */
export const replDurablePendingRecordsMax = replInFlightRecordsMax;
/** An idle replicating group gets a time-advance record this long after its last record, once another group of the node accepted a write since. */
export const timeAdvanceIntervalMs = 100;
/** With nothing accepted anywhere on the node, an idle group sends a time advance this often (a heartbeat: no write waits for it, so it can be slow; each costs an fdatasync on both nodes). */
export const timeAdvanceIdleIntervalMs = 5_000;
/**
 * Host writes one side of a pair tracks, unreflected, for exact lag figures (core/pair-view.ts);
 * past it neighbouring entries merge and the figures never understate (about 40 bytes each).
 */
export const pairLagWritesTrackedMax = 262_144;
/** `pair status --watch`: the default refresh interval, and the shortest and longest allowed. */
export const pairWatchIntervalMsDefault = 1_000;
export const pairWatchIntervalMsMin = 100;
export const pairWatchIntervalMsMax = 3_600_000;
/** A call to another node's management API (a primary asking the secondary to make the pair's group) gives up after this long. */
export const peerRequestTimeoutMs = 30_000;
/**
 * A secondary group whose records wait behind another member of its consistency domain that
 * still receives is shown `held` after this long without reflecting (at once when the holder
 * is stopped or has no stream). Well past timeAdvanceIdleIntervalMs: in an idle domain in step
 * a group's last record waits for the holder's next heartbeat, which comes that long after the
 * holder's last record, plus a tick and its delivery (at 5 s, the interval itself, a healthy
 * idle domain showed `held` for a moment at every heartbeat).
 */
export const domainHeldShownAfterMs = 10_000;
/** A takeover that names a group whose join of its consistency domain is pending waits at most this long for it to reflect past its join point (its next record: at worst an idle heartbeat, timeAdvanceIdleIntervalMs), then is refused with the reason. */
export const takeoverJoinWaitMsMax = 10_000;
/** How often that wait looks again. */
export const takeoverJoinPollMs = 20;
/** A takeover's journal reads (to compute its cut) take at most this much at a time (bytes). */
export const takeoverReadBytes = 4 * 1024 * 1024;
/** A takeover waits at most this long for the appends in flight of its groups to become durable (a disk that hangs), then is refused with the reason. */
export const takeoverAppendsWaitMsMax = 30_000;
/**
 * `pair delete` (without --force) waits at most this long for the secondary to acknowledge
 * every record accepted when the command began, then refuses, saying how many are missing.
 */
export const pairDeleteAckWaitMsMax = 10_000;
/** How often that wait looks again. */
export const pairDeleteAckPollMs = 50;
/**
 * `pair delete` on the secondary waits at most this long for the group's writes in flight (the
 * journal's appends, the initial copy's chunks) before it converts the group (a disk that hangs),
 * then refuses with the reason: well within the primary's call to it (peerRequestTimeoutMs).
 */
export const pairEndWritesWaitMsMax = 10_000;
/**
 * A secondary in its initial copy with no stream from its primary for this long says so in its
 * status and makes /v1/health degraded (the copy does not move: the primary's pair may be
 * deleted or its site lost; ending this side is `pair delete --force` there). At once when the
 * primary said it deleted the pair.
 */
export const secondaryCopyStalledMs = 60_000;

assert(replReorderBytesMax >= replInFlightBytesMax + journalRecordPayloadBytesMax + 64, "the reorder buffer holds the whole send window plus one largest record");
assert(replReorderRecordsMax >= replInFlightRecordsMax, "the reorder buffer holds every record of the send window");
assert(replBatchBytesMax * replBatchesInFlightPerStreamMax * replStreamsMax <= replInFlightBytesMax, "every stream can fill its window of batches");
assert(replBatchRecordsMax <= replInFlightRecordsMax, "one batch fits the record window");
assert(replPullBytesMax * replPullsInHandMax <= replInFlightBytesMax, "pulled batches in hand stay within a push window");
assert(replStreamsDefault >= 1 && replStreamsDefault <= replStreamsMax, "the default stream count is allowed");
assert(takeoverJoinWaitMsMax > timeAdvanceIdleIntervalMs, "a takeover waits long enough for an idle joiner's next heartbeat");
assert(domainHeldShownAfterMs >= 2 * timeAdvanceIdleIntervalMs, "an idle domain in step is not shown held while a group waits for the holder's next heartbeat");
assert(pairDeleteAckWaitMsMax < peerRequestTimeoutMs, "pair delete's wait for the secondary ends before a peer call would time out");
assert(pairEndWritesWaitMsMax * 2 < peerRequestTimeoutMs, "the secondary's pair delete answers the primary's call before it times out");
assert(replHandshakesMax >= replConnectionsMax, "every stream of a burst of reconnecting pairs fits the handshake pool");

/** The node samples every pair's lag in seconds this often for the dashboard's chart (GET /v1/lag-history). */
export const lagHistoryIntervalMs = 5_000;
/** Lag samples kept per pair: 5 minutes at lagHistoryIntervalMs. */
export const lagHistorySamplesMax = 60;

/**
 * Pair ends a primary still owes a secondary it could not reach at `pair delete --force`
 * (node.json `pairEndsOwed`), retried every pairEndRetryMs until delivered; past the maximum
 * the oldest is dropped with a log line (its secondary then needs `pair delete --force` there).
 */
export const pairEndsOwedMax = 64;
/**
 * How often a primary saves each pair's reflected sequence (the secondary's reports) in
 * node.json when it moved: after a crash the rebuilt lag overstates by at most what was
 * acknowledged in this last interval (a clean stop saves it exactly).
 */
export const pairReflectedSaveIntervalMs = 2_000;
export const pairEndRetryMs = 15_000;

// ---- how long the CLI waits for commands the node answers only after waiting itself --------
// Each CLI deadline is derived from the node's own longest wait for that command, plus a
// margin for its saves and the answer's way back: a CLI that gave up at the very moment the
// node answered (both 10 s for `pair delete`) told the user the node was stuck when it was
// about to say why it refused (docs/cli.md, "Deadlines").
/** What the CLI waits beyond the node's own longest wait for a command (its saves, the answer's way back). */
export const mgmtCommandMarginMs = 10_000;
/** `pair create`: the node asks the secondary to prepare its side (one peer call). */
export const pairCreateNodeWaitMsMax = peerRequestTimeoutMs;
/** `pair delete` on the primary: the wait for the secondary's acknowledgements, then the secondary's end (one peer call). */
export const pairDeleteNodeWaitMsMax = pairDeleteAckWaitMsMax + peerRequestTimeoutMs;
/** `pair set`: the node asks the node at the new address whether it holds the pair (one peer call). */
export const pairSetNodeWaitMsMax = peerRequestTimeoutMs;
/** `pair takeover`: the fence's answer and arrival, a pending domain join, the appends in flight, the conversion's saves (takeoverCommandMarginMs). */
export const takeoverNodeWaitMsMax = fenceAnswerTimeoutMs + fenceArrivalTimeoutMs + takeoverJoinWaitMsMax + takeoverAppendsWaitMsMax + takeoverCommandMarginMs;

/** The CLI's deadline for one call whose node-side handling waits at most `nodeWaitMsMax`. */
export function cliDeadlineMs(nodeWaitMsMax: number): number {
  return Math.max(mgmtRequestTimeoutMsDefault, nodeWaitMsMax + mgmtCommandMarginMs);
}

assert(cliDeadlineMs(pairDeleteNodeWaitMsMax) > pairDeleteNodeWaitMsMax, "the CLI waits longer than pair delete on the node");
assert(cliDeadlineMs(pairCreateNodeWaitMsMax) > pairCreateNodeWaitMsMax && cliDeadlineMs(pairSetNodeWaitMsMax) > pairSetNodeWaitMsMax, "the CLI waits longer than the node's peer call");
assert(cliDeadlineMs(takeoverNodeWaitMsMax) > takeoverNodeWaitMsMax, "the CLI waits longer than a takeover on the node");

