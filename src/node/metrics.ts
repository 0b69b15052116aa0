// Prometheus metrics of one node. Per-request observations go through pre-bound label
// children so the hot path does no label lookups; journal figures are read on scrape.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { pairStates, type PairInfo } from "../mgmt/control.ts";

export type FrontEnd = "nbd" | "host";

const latencyBucketsSeconds = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export interface JournalFigures {
  readonly group: string;
  readonly usedBytes: number;
  readonly bytesMax: number;
  readonly fsyncs: number;
  readonly bytesWritten: number;
  readonly nextSequence: number;
  readonly appliedSequence: number;
  readonly heldWrites: number;
  /** 1 while the group is stopped by a full disk or an I/O error (docs/out-of-space.md), else 0. */
  readonly stopped: number;
  /** "primary" (takes host writes) or "secondary" (the secondary of a pair). */
  readonly role: "primary" | "secondary";
}

/** What the metrics read of a pair (mgmt/control.ts PairInfo). */
export type PairFigures = Pick<PairInfo, "group" | "role" | "state" | "lagRecords" | "lagBytes" | "lagSeconds" | "consistentAsOf" | "link">;

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"frontend" | "op" | "result">;
  private readonly requestBytes: Counter<"frontend" | "op">;
  private readonly latency: Histogram<"frontend" | "op">;
  private readonly bound = new Map<string, { ok: Counter.Internal; error: Counter.Internal; bytes: Counter.Internal; latency: Histogram.Internal<"frontend" | "op"> }>();

  /**
   * `journals` and `pairs` are read on every scrape. `processMetrics`: also the process's own
   * (CPU, memory, event loop): off where many nodes share one process (the simulation).
   */
  constructor(nodeId: string, version: string, journals: () => readonly JournalFigures[], pairs: () => readonly PairFigures[], processMetrics = true) {
    this.registry.setDefaultLabels({ node: nodeId });
    if (processMetrics) {
      collectDefaultMetrics({ register: this.registry, prefix: "tidemark_" });
      // prom-client names three gauges *_total, which Prometheus keeps for counters; their
      // per-type series (tidemark_nodejs_active_handles{type} ...) say the same and stay.
      for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(`tidemark_${name}`);
    }
    this.requests = new Counter({ name: "tidemark_requests_total", help: "Requests answered by the front ends", labelNames: ["frontend", "op", "result"], registers: [this.registry] });
    this.requestBytes = new Counter({ name: "tidemark_request_bytes_total", help: "Payload bytes read or written by the front ends", labelNames: ["frontend", "op"], registers: [this.registry] });
    this.latency = new Histogram({ name: "tidemark_request_duration_seconds", help: "Time from request decoded to reply sent", labelNames: ["frontend", "op"], buckets: latencyBucketsSeconds, registers: [this.registry] });
    const registry = this.registry;
    /**
     * One series per group (labels group, role), read on scrape from `rows`. A "counter" is a
     * total kept elsewhere since the node started (the journal, the pair link), set on scrape.
     */
    function perGroupOf<T extends { readonly group: string; readonly role: string }>(rows: () => readonly T[]) {
      return (name: string, help: string, pick: (row: T) => number, type: "gauge" | "counter" = "gauge"): void => {
        const collect = function (this: Gauge | Counter): void {
          this.reset();
          for (const row of rows()) {
            if (this instanceof Gauge) this.set({ group: row.group, role: row.role }, pick(row));
            else this.inc({ group: row.group, role: row.role }, pick(row));
          }
        };
        const options = { name, help, labelNames: ["group", "role"], registers: [registry], collect };
        if (type === "gauge") new Gauge(options);
        else new Counter(options);
      };
    }
    const perGroup = perGroupOf(journals);
    const perPair = perGroupOf(pairs);
    perGroup("tidemark_journal_used_bytes", "Bytes held in the group's journal", (f) => f.usedBytes);
    perGroup("tidemark_journal_limit_bytes", "Size limit of the group's journal (pair create --journal-size, group create)", (f) => f.bytesMax);
    perGroup("tidemark_journal_fsyncs_total", "fdatasync calls on the group's journal since the node started", (f) => f.fsyncs, "counter");
    perGroup("tidemark_journal_written_bytes_total", "Bytes written to the group's journal since the node started", (f) => f.bytesWritten, "counter");
    perGroup("tidemark_group_next_sequence", "Sequence number the next write in the group gets", (f) => f.nextSequence);
    perGroup("tidemark_group_applied_sequence", "Highest sequence applied to the group's volumes", (f) => f.appliedSequence);
    perGroup("tidemark_group_stopped", "1 while the group is stopped by a full disk or an I/O error (it resumes by itself; the reason is in group list)", (f) => f.stopped);
    perGroup("tidemark_group_held_writes", "Host writes held because the group's journal is full or filling (the reason is in group list and pair status)", (f) => f.heldWrites);

    new Gauge({
      name: "tidemark_pair_state", help: `1 for the pair's current state (one series per state: ${pairStates.join(", ")}); the reason is in pair status`,
      labelNames: ["group", "role", "state"], registers: [this.registry],
      collect() {
        this.reset();
        for (const pair of pairs()) for (const state of pairStates) this.set({ group: pair.group, role: pair.role, state }, pair.state === state ? 1 : 0);
      },
    });
    perPair("tidemark_pair_lag_records", "Host writes accepted on the primary and not yet reflected on the secondary (as this node knows; time advances and markers not counted)", (p) => p.lagRecords);
    perPair("tidemark_pair_lag_bytes", "Payload bytes of those host writes", (p) => p.lagBytes);
    perPair("tidemark_pair_lag_seconds", "Age of the oldest accepted host write not yet reflected (as this node knows); a secondary cut off from its primary: at least the age of its consistent-as-of time", (p) => p.lagSeconds);
    // No series while the image is not consistent (copying, catching up): absent, not 0.
    new Gauge({
      name: "tidemark_pair_consistent_as_of_seconds", help: "Unix time: every write the primary accepted by then is in the secondary's image (as this node knows); absent while not consistent",
      labelNames: ["group", "role"], registers: [this.registry],
      collect() {
        this.reset();
        for (const pair of pairs()) {
          if (pair.consistentAsOf === null) continue;
          const ms = Date.parse(pair.consistentAsOf);
          if (Number.isFinite(ms)) this.set({ group: pair.group, role: pair.role }, ms / 1000);
        }
      },
    });
    perPair("tidemark_pair_link_streams_connected", "Replication streams of the pair connected now", (p) => p.link.connectedStreams);
    perPair("tidemark_pair_reconnects_total", "Times a replication stream of the pair was lost and opened again, since the node started", (p) => p.link.reconnects, "counter");
    perPair("tidemark_pair_sent_bytes_total", "Journal records (encoded) and initial-copy data sent for the pair since the node started", (p) => p.link.sentBytes, "counter");
    perPair("tidemark_pair_received_bytes_total", "Journal records (encoded) and initial-copy data received for the pair since the node started", (p) => p.link.receivedBytes, "counter");
    new Gauge({ name: "tidemark_build_info", help: "1, labelled with the version of tidemark and of Node.js the node runs", labelNames: ["version", "nodejs"], registers: [this.registry] })
      .set({ version, nodejs: process.version }, 1);
  }

  observe(frontEnd: FrontEnd, op: string, bytes: number, latencySeconds: number, ok: boolean): void {
    const key = `${frontEnd}/${op}`;
    let children = this.bound.get(key);
    if (children === undefined) {
      children = {
        ok: this.requests.labels(frontEnd, op, "ok"),
        error: this.requests.labels(frontEnd, op, "error"),
        bytes: this.requestBytes.labels(frontEnd, op),
        latency: this.latency.labels(frontEnd, op),
      };
      this.bound.set(key, children);
    }
    (ok ? children.ok : children.error).inc();
    if (bytes > 0) children.bytes.inc(bytes);
    children.latency.observe(latencySeconds);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
