// Prometheus metrics of one node. Per-request observations go through pre-bound label
// children so the hot path does no label lookups; journal figures are read on scrape.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

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

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"frontend" | "op" | "result">;
  private readonly requestBytes: Counter<"frontend" | "op">;
  private readonly latency: Histogram<"frontend" | "op">;
  private readonly bound = new Map<string, { ok: Counter.Internal; error: Counter.Internal; bytes: Counter.Internal; latency: Histogram.Internal<"frontend" | "op"> }>();

  /** `processMetrics`: also the process's own (CPU, memory, event loop): off where many nodes share one process (the simulation). */
  constructor(nodeId: string, journals: () => readonly JournalFigures[], processMetrics = true) {
    this.registry.setDefaultLabels({ node: nodeId });
    if (processMetrics) collectDefaultMetrics({ register: this.registry, prefix: "tidemark_process_" });
    this.requests = new Counter({ name: "tidemark_requests_total", help: "Requests answered by the front ends", labelNames: ["frontend", "op", "result"], registers: [this.registry] });
    this.requestBytes = new Counter({ name: "tidemark_request_bytes_total", help: "Payload bytes read or written by the front ends", labelNames: ["frontend", "op"], registers: [this.registry] });
    this.latency = new Histogram({ name: "tidemark_request_duration_seconds", help: "Time from request decoded to reply sent", labelNames: ["frontend", "op"], buckets: latencyBucketsSeconds, registers: [this.registry] });
    const perGroup = (name: string, help: string, pick: (figures: JournalFigures) => number): void => {
      new Gauge({
        name, help, labelNames: ["group"], registers: [this.registry],
        collect() {
          this.reset();
          for (const figures of journals()) this.set({ group: figures.group }, pick(figures));
        },
      });
    };
    perGroup("tidemark_journal_bytes", "Bytes held in the group's journal", (f) => f.usedBytes);
    perGroup("tidemark_journal_bytes_max", "Size limit of the group's journal", (f) => f.bytesMax);
    perGroup("tidemark_journal_fsyncs", "fdatasync calls on the group's journal since start", (f) => f.fsyncs);
    perGroup("tidemark_journal_written_bytes", "Bytes written to the group's journal since start", (f) => f.bytesWritten);
    perGroup("tidemark_group_next_sequence", "Sequence number the next write in the group gets", (f) => f.nextSequence);
    perGroup("tidemark_group_applied_sequence", "Highest sequence applied to the group's volumes", (f) => f.appliedSequence);
    new Gauge({
      name: "tidemark_group_stopped", help: "1 while the group is stopped by a full disk or an I/O error (it resumes by itself; the reason is in group list)", labelNames: ["group", "role"], registers: [this.registry],
      collect() {
        this.reset();
        for (const figures of journals()) this.set({ group: figures.group, role: figures.role }, figures.stopped);
      },
    });
    perGroup("tidemark_group_held_writes", "Host writes held because the group's journal is full (the reason is in group list and pair status)", (f) => f.heldWrites);
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
