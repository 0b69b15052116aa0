// The package entry (`import { HostClient } from "tidemark"`): the client library of the
// timestamped host protocol. Kept to re-exports; see docs/host-protocol.md.
export { HostClient, HostProtocolError } from "./client/host-client.ts";
export type { HostClientOptions, HostVolume, HostWriteOptions } from "./client/host-client.ts";
export type { HostServerLimits } from "./protocol/host-protocol.ts";
