// Proves the replication listener's connection accounting over real TCP on 127.0.0.1, with the
// real ReplConnection on the primary side and a SecondaryHost that holds no groups (the accounting
// happens before any group is opened): a slot is free the moment its connection is gone, the
// pool of connections before HELLO closes its oldest member (ERROR PROTOCOL) so a real primary
// always gets in, HELLO past replConnectionsMax is refused (ERROR INTERNAL), and a connection
// that sends no HELLO is closed at replHelloTimeoutMs.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { replConnectionsMax, replHandshakesMax, replHelloTimeoutMs } from "../../src/core/limits.ts";
import { ReplConnection } from "../../src/transport/repl-connection.ts";
import { ReplServer, type SecondaryHost } from "../../src/secondary/repl-server.ts";
import type { ReplMessage } from "../../src/protocol/repl-protocol.ts";

const quiet = pino({ level: "silent" });

/** A secondary node that holds no pair targets. */
const noTargets: SecondaryHost = {
  nodeId: "secondary-under-test",
  findSecondary: () => undefined,
  refuseOpen: (name) => ({ code: "UNKNOWN_GROUP", text: `group ${name} is not a pair secondary here` }),
  deliver: () => Promise.resolve(),
  lifecycle: () => Promise.resolve(),
  kickReflector: () => undefined,
  frontierHolder: () => undefined,
};

/** The primary's side of one stream: the real ReplConnection, collecting what it receives. */
class Primary {
  readonly messages: ReplMessage[] = [];
  readonly connection: ReplConnection;
  readonly closed: Promise<string>;
  #wake: (() => void) | undefined;

  constructor(socket: net.Socket) {
    let closed: (reason: string) => void = () => undefined;
    this.closed = new Promise((resolve) => { closed = resolve; });
    this.connection = new ReplConnection(socket, "primary", quiet, {
      onMessage: (message) => {
        this.messages.push(message);
        this.#wake?.();
      },
      onBadContent: () => undefined,
      onClose: (reason) => {
        closed(reason);
        this.#wake?.();
      },
    });
  }

  static async connect(port: number): Promise<Primary> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    return new Primary(socket);
  }

  hello(): void {
    this.connection.send({ type: "HELLO", versionMin: 1, versionMax: 1, primaryNodeId: "primary-under-test", streamIndex: 0, streamCount: 1 });
  }

  /** The first message received (waits for it); undefined if the connection closed first. */
  async first(): Promise<ReplMessage | undefined> {
    while (this.messages.length === 0 && !this.connection.closed) {
      await new Promise<void>((resolve) => { this.#wake = resolve; });
    }
    return this.messages[0];
  }
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

void describe("replication listener: connection slots, the pool before HELLO, the HELLO deadline", () => {
  let server: ReplServer;
  let port: number;
  const open: Primary[] = [];

  before(async () => {
    server = new ReplServer(noTargets, quiet);
    port = await server.listen("127.0.0.1", 0);
  });

  after(async () => {
    for (const primary of open) primary.connection.close();
    await server.close();
  });

  void it("HELLO is answered, and a slot is free the moment its connection is gone", async () => {
    for (let i = 0; i < 20; i++) {
      const primary = await Primary.connect(port);
      primary.hello();
      const answer = await primary.first();
      assert.equal(answer?.type, "HELLO_OK");
      if (i % 2 === 0) primary.connection.close("done");
      else (primary.connection.socket as net.Socket).resetAndDestroy();
    }
    await until(() => server.connectionCount() === 0, "every slot to be free", 1_000);
  });

  void it("a full pool of connections before HELLO closes its oldest one, so a real primary always gets in", async () => {
    const silent: Primary[] = [];
    for (let i = 0; i < replHandshakesMax + 3; i++) silent.push(await Primary.connect(port));
    open.push(...silent);
    await until(() => server.handshakeCount() === replHandshakesMax, "the pool to fill");
    for (const primary of silent.slice(0, 3)) {
      const error = await primary.first();
      assert.ok(error?.type === "ERROR" && error.code === "PROTOCOL", JSON.stringify(error));
      await primary.closed;
    }
    const real = await Primary.connect(port);
    open.push(real);
    real.hello();
    assert.equal((await real.first())?.type, "HELLO_OK", "a real primary gets in with the pool full");
    await silent[3]!.closed; // by closing the oldest silent connection
    assert.equal(server.handshakeCount(), replHandshakesMax - 1);
    for (const primary of open.splice(0)) primary.connection.close();
    await until(() => server.connectionCount() === 0, "every slot to be free");
  });

  void it("HELLO past replConnectionsMax is refused; a freed slot serves the next primary", async () => {
    const streams = await Promise.all(Array.from({ length: replConnectionsMax }, async () => {
      const primary = await Primary.connect(port);
      primary.hello();
      assert.equal((await primary.first())?.type, "HELLO_OK");
      return primary;
    }));
    open.push(...streams);
    assert.deepEqual([server.connectionCount(), server.handshakeCount()], [replConnectionsMax, 0]);
    const refused = await Primary.connect(port);
    refused.hello();
    const error = await refused.first();
    assert.ok(error?.type === "ERROR" && error.code === "INTERNAL" && error.text.includes(`at most ${replConnectionsMax}`), JSON.stringify(error));
    await refused.closed;
    streams[0]!.connection.close();
    await until(() => server.connectionCount() === replConnectionsMax - 1, "a slot to free");
    const next = await Primary.connect(port);
    open.push(next);
    next.hello();
    assert.equal((await next.first())?.type, "HELLO_OK");
    for (const primary of open.splice(0)) primary.connection.close();
    await until(() => server.connectionCount() === 0, "every slot to be free");
  });

  void it("a connection that sends no HELLO is closed at the deadline", async () => {
    const primary = await Primary.connect(port);
    open.push(primary);
    const openedMs = performance.now();
    const error = await primary.first();
    assert.ok(error?.type === "ERROR" && error.code === "PROTOCOL" && /no HELLO within/.test(error.text), JSON.stringify(error));
    assert.ok(performance.now() - openedMs >= replHelloTimeoutMs * 0.9, "not before the deadline");
    await primary.closed;
    await until(() => server.connectionCount() === 0, "its slot to be free");
  });
});
