// Test fixture for the host-protocol tests: a real VolumeCatalog over files in a tmp dir
// (pwrite, fdatasync), recording the options each write arrived with.
import { VolumeIoError } from "../../src/core/errors.ts";
import path from "node:path";
import { open, type FileHandle } from "node:fs/promises";
import { type ExportDescription, type VolumeCatalog, type VolumeHandle, type WriteOptions } from "../../src/core/volume-io.ts";

export interface WriteCall { readonly volume: string; readonly offsetBytes: number; readonly lengthBytes: number; readonly options: WriteOptions }

/** A real volume: a file in a tmp dir, written with pwrite, flushed with fdatasync. */
export class FileVolume implements VolumeHandle {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly #file: FileHandle;
  readonly #calls: WriteCall[];
  constructor(name: string, sizeBytes: number, readOnly: boolean, file: FileHandle, calls: WriteCall[]) {
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.readOnly = readOnly;
    this.#file = file;
    this.#calls = calls;
  }
  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const out = Buffer.alloc(lengthBytes);
    await this.#file.read(out, 0, lengthBytes, offsetBytes);
    return out;
  }
  async write(offsetBytes: number, data: Buffer, options: WriteOptions): Promise<void> {
    if (this.readOnly) throw new VolumeIoError("EPERM", "read-only");
    this.#calls.push({ volume: this.name, offsetBytes, lengthBytes: data.length, options });
    await this.#file.write(data, 0, data.length, offsetBytes);
    if (options.fua) await this.#file.datasync();
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    await this.write(offsetBytes, Buffer.alloc(lengthBytes), options);
  }
  async trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    await this.writeZeroes(offsetBytes, lengthBytes, options);
  }
  /** Handles released by the front end (its connection or slot closed). */
  releases = 0;
  release(): void {
    this.releases += 1;
  }

  async flush(): Promise<void> {
    await this.#file.datasync();
  }
}

export class FileCatalog implements VolumeCatalog {
  readonly volumes = new Map<string, FileVolume>();
  readonly calls: WriteCall[] = [];
  readonly files: FileHandle[] = [];
  async add(dir: string, name: string, sizeBytes: number, readOnly: boolean): Promise<void> {
    const file = await open(path.join(dir, `${name}.vol`), "w+");
    await file.truncate(sizeBytes);
    this.files.push(file);
    this.volumes.set(name, new FileVolume(name, sizeBytes, readOnly, file, this.calls));
  }
  open(name: string): VolumeHandle | undefined {
    return this.volumes.get(name);
  }
  list(): readonly ExportDescription[] {
    return [...this.volumes.values()].map((v) => ({ name: v.name, sizeBytes: v.sizeBytes, readOnly: v.readOnly }));
  }
  async closeFiles(): Promise<void> {
    for (const file of this.files) await file.close();
  }
}
