// An in-memory NodeControl for the HTTP layer's tests (validation, error mapping, CLI
// output). It stores nothing: the real node, with real files, is covered by the e2e suite.
import { ControlError, type GroupInfo, type NodeControl, type NodeStatus, type VolumeInfo } from "../../src/node/control.ts";

interface FakeVolume {
  name: string;
  sizeBytes: number;
  allocatedBytes: number;
  group: string | null;
  readOnly: boolean;
}

export class FakeControl implements NodeControl {
  readonly volumes = new Map<string, FakeVolume>();
  readonly groups = new Map<string, GroupInfo>();
  /** When set, every call throws it: for the error-mapping tests. */
  failWith: Error | null = null;

  status(): NodeStatus {
    this.maybeFail();
    return {
      id: "fake-a",
      version: "0.1.0",
      writeTimePolicy: "host",
      dataDir: "/nonexistent/fake",
      startedAt: "2025-01-01T00:00:00.000Z",
      uptimeSeconds: 3725,
      listeners: { mgmt: "127.0.0.1:7480", nbd: "127.0.0.1:10809", host: "127.0.0.1:7410", repl: "127.0.0.1:7400" },
      recordedWriteTimeUs: 1_735_689_600_000_000,
      volumes: this.listVolumes(),
      groups: this.listGroups(),
      connections: { nbd: 0, host: 0 },
    };
  }

  listVolumes(): readonly VolumeInfo[] {
    this.maybeFail();
    return [...this.volumes.values()].map((volume) => ({ ...volume }));
  }

  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.maybeFail();
    if (this.volumes.has(name)) return Promise.reject(new ControlError("TM_ERR_EXISTS", `volume '${name}' already exists`));
    const volume: FakeVolume = { name, sizeBytes, allocatedBytes: 0, group: null, readOnly: false };
    this.volumes.set(name, volume);
    return Promise.resolve({ ...volume });
  }

  listGroups(): readonly GroupInfo[] {
    this.maybeFail();
    return [...this.groups.values()];
  }

  createGroup(name: string, volumes: readonly string[]): Promise<GroupInfo> {
    this.maybeFail();
    if (this.groups.has(name)) return Promise.reject(new ControlError("TM_ERR_EXISTS", `group '${name}' already exists`));
    for (const volumeName of volumes) {
      const volume = this.volumes.get(volumeName);
      if (volume === undefined) {
        return Promise.reject(new ControlError("TM_ERR_NOT_FOUND", `volume '${volumeName}' does not exist`));
      }
      if (volume.group !== null) {
        return Promise.reject(new ControlError("TM_ERR_CONFLICT", `volume '${volumeName}' is already in group '${volume.group}'`));
      }
    }
    for (const volumeName of volumes) {
      const volume = this.volumes.get(volumeName);
      if (volume !== undefined) volume.group = name;
    }
    const group: GroupInfo = {
      name,
      volumes: [...volumes],
      nextSequence: 1,
      appliedSequence: 0,
      durableSequence: 0,
      journalBytes: 12 * 1024 * 1024,
      journalBytesMax: 4 * 1024 * 1024 * 1024,
      journalSegments: 1,
      lastWriteTimeUs: 0,
    };
    this.groups.set(name, group);
    return Promise.resolve(group);
  }

  metrics(): Promise<{ contentType: string; body: string }> {
    this.maybeFail();
    return Promise.resolve({
      contentType: "text/plain; version=0.0.4; charset=utf-8",
      body: `# HELP tidemark_volumes Volumes on this node.\n# TYPE tidemark_volumes gauge\ntidemark_volumes ${this.volumes.size}\n`,
    });
  }

  private maybeFail(): void {
    if (this.failWith !== null) throw this.failWith;
  }
}
