// Proves the one-line reasons `tidemark node` and `pair create` give for the mistakes a new user
// makes first (review of issue 6, R11): for each errno a data directory, a listener or the
// secondary's management API can fail with, the line names the option and the path or address,
// says what is wrong and what to do. And that making a data directory where mkdir answers ENOENT
// though the parent exists (/proc) fails at once: Node's recursive mkdir spins there for ever.
// The same failures with real processes are in test/e2e/node-cli.test.ts and pair-create-errors.test.ts.
import { NodeStartError } from "../../src/core/errors.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dataDirError, listenError } from "../../src/node/start-errors.ts";
import { peerUnreachable } from "../../src/transport/peer-client.ts";
import { nodeFileSystem } from "../../src/storage/node-fs.ts";
import { makeDirectoryDurable } from "../../src/storage/durable-fs.ts";
import { removeDir, tempDir } from "./journal-helpers.ts";

function errno(code: string, path?: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: something, mkdir '${path ?? ""}'`);
  error.code = code;
  if (path !== undefined) error.path = path;
  return error;
}

function assertOneLine(error: Error, what: RegExp, todo: RegExp): void {
  assert.ok(error instanceof NodeStartError, `a start error, shown without a stack: ${error.message}`);
  assert.doesNotMatch(error.message, /\n/, "one line");
  assert.match(error.message, what, `says what is wrong: ${error.message}`);
  assert.match(error.message, todo, `says what to do: ${error.message}`);
}

void test("data directory errors name --data, the path, the errno and what to do", () => {
  const dir = "/srv/tm";
  assertOneLine(dataDirError(dir, errno("ENOTDIR", "/srv/tm")), /--data \/srv\/tm: \/srv\/tm is a file, not a directory \(ENOTDIR\)/, /give --data a directory/);
  assertOneLine(dataDirError(dir, errno("EEXIST", "/srv/tm")), /is a file, not a directory/, /give --data a directory/);
  assertOneLine(dataDirError(dir, errno("EACCES", "/srv/tm/tidemark.lock")), /permission denied on \/srv\/tm\/tidemark\.lock \(EACCES\)/, /this user may write|owner or mode/);
  assertOneLine(dataDirError(dir, errno("EPERM", "/srv")), /permission denied on \/srv \(EPERM\)/, /this user may write/);
  assertOneLine(dataDirError(dir, errno("EROFS", "/srv/tm")), /read-only file system \(EROFS\)/, /writable file system/);
  assertOneLine(dataDirError("/proc/zz", errno("ENOENT", "/proc/zz")), /cannot create \/proc\/zz \(ENOENT/, /writable file system/);
  assertOneLine(dataDirError(dir, errno("ENOSPC", "/srv/tm/node.json")), /no space left for \/srv\/tm\/node\.json \(ENOSPC\)/, /free space|another file system/);
  assertOneLine(dataDirError(dir, errno("EIO")), /--data \/srv\/tm: cannot use \/srv\/tm/, /another directory/);
  const bug = new Error("invariant violated");
  assert.equal(dataDirError(dir, bug), bug, "an error without an errno is a bug: passed on as it is (with its stack)");
});

void test("listener errors name the option, the address and what to do", () => {
  assertOneLine(listenError("--nbd", "127.0.0.1", 10809, errno("EADDRINUSE")), /--nbd 127\.0\.0\.1:10809 is already in use by another process \(EADDRINUSE\)/, /give --nbd another HOST:PORT/);
  assertOneLine(listenError("--mgmt", "0.0.0.0", 80, errno("EACCES")), /not allowed to listen on --mgmt 0\.0\.0\.0:80 \(EACCES/, /port of 1024 or more/);
  assertOneLine(listenError("--repl", "10.9.9.9", 7400, errno("EADDRNOTAVAIL")), /10\.9\.9\.9 is not an address of this machine/, /give --repl one of its addresses, e\.g\. 127\.0\.0\.1:7400/);
  assertOneLine(listenError("--host-port", "nosuch.invalid", 7410, errno("ENOTFOUND")), /host name nosuch\.invalid does not resolve/, /IP address/);
  assertOneLine(listenError("--repl", "::1", 7400, errno("EADDRINUSE")), /--repl \[::1\]:7400/, /another HOST:PORT/);
});

void test("pair create: the secondary's management API unreachable, silent, or not one: what to check", () => {
  const fetchFailed = (cause: object): Error => Object.assign(new TypeError("fetch failed"), { cause });
  const url = "http://10.0.0.2:7480";
  assert.match(peerUnreachable(url, fetchFailed({ code: "ECONNREFUSED" })), /refused the connection \(ECONNREFUSED\).*`tidemark node` runs on the secondary.*--mgmt, not --repl or --nbd/);
  assert.match(peerUnreachable(url, fetchFailed({ code: "ENOTFOUND" })), /does not resolve.*check the name/);
  assert.match(peerUnreachable(url, fetchFailed({ code: "EHOSTUNREACH" })), /cannot connect.*network route and the firewalls/);
  assert.match(peerUnreachable(url, fetchFailed({ name: "HTTPParserError", message: "Response does not match the HTTP/1.1 protocol" })), /does not speak HTTP.*not a management API.*--mgmt/);
  const timeout = new DOMException("The operation was aborted due to timeout", "TimeoutError");
  assert.match(peerUnreachable(url, timeout), /did not answer within 30 s.*firewall/);
  for (const message of [peerUnreachable(url, fetchFailed({ code: "ECONNRESET", message: "other side closed" })), peerUnreachable(url, new Error("boom"))]) {
    assert.match(message, /secondary at http:\/\/10\.0\.0\.2:7480/);
    assert.match(message, /check that --to is its management URL/);
    assert.doesNotMatch(message, /\n/);
  }
});

void test("making a data directory under /proc fails at once with ENOENT (Node's recursive mkdir spins there for ever); a file in the way is named", { timeout: 10_000 }, async () => {
  const started = performance.now();
  await assert.rejects(makeDirectoryDurable(nodeFileSystem, "/proc/tidemark-unit-zz/a"), (error: NodeJS.ErrnoException) => error.code === "ENOENT" && error.path === "/proc/tidemark-unit-zz");
  assert.ok(performance.now() - started < 5_000, "fails fast, no retry loop");
  const dir = await tempDir("mkdir-file");
  try {
    const file = join(dir, "file");
    await writeFile(file, "x");
    await assert.rejects(makeDirectoryDurable(nodeFileSystem, join(file, "sub", "x")), (error: NodeJS.ErrnoException) => error.code === "ENOTDIR" && error.path === file);
    await assert.rejects(makeDirectoryDurable(nodeFileSystem, file), (error: NodeJS.ErrnoException) => error.code === "ENOTDIR" && error.path === file);
    await makeDirectoryDurable(nodeFileSystem, join(dir, "a", "b", "c"));
    await makeDirectoryDurable(nodeFileSystem, join(dir, "a", "b", "c")); // there already: fine
    assert.ok((await nodeFileSystem.stat(join(dir, "a", "b", "c"))) !== undefined);
  } finally {
    await removeDir(dir);
  }
});
