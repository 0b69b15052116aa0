// The management API has no authentication yet (CONTRACT.md, issue 9 item 5): `tidemark node`
// listens for it on a non-loopback address only with --insecure-mgmt, and says why otherwise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkDistinctListeners, checkMgmtExposure, isLoopbackHost, parseListenAddress } from "../../src/cli/address.ts";
import { UsageError } from "../../src/cli/errors.ts";

void test("loopback addresses are this machine only; anything else is not", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1"]) assert.ok(isLoopbackHost(host), host);
  for (const host of ["0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "example.org", "128.0.0.1", "127.0.0.1.evil"]) assert.ok(!isLoopbackHost(host), host);
});

void test("--mgmt beyond loopback is refused with one line naming --insecure-mgmt, and allowed with it", () => {
  assert.doesNotThrow(() => checkMgmtExposure(parseListenAddress("--mgmt", "127.0.0.1:7480"), false));
  assert.doesNotThrow(() => checkMgmtExposure(parseListenAddress("--mgmt", "[::1]:7480"), false));
  for (const text of ["0.0.0.0:7480", "[::]:7480", "10.0.0.5:7480"]) {
    assert.throws(() => checkMgmtExposure(parseListenAddress("--mgmt", text), false), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, /--insecure-mgmt/);
      assert.ok(error.message.startsWith(`--mgmt ${text} would let anyone`), `the address as typed: ${error.message}`);
      assert.ok(!error.message.includes("\n"), "one line");
      return true;
    });
    assert.doesNotThrow(() => checkMgmtExposure(parseListenAddress("--mgmt", text), true));
  }
});

void test("two listeners of one node on the same port are refused up front, naming both options (not \"another process\")", () => {
  const at = (text: string) => parseListenAddress("--x", text);
  assert.throws(() => checkDistinctListeners([["--mgmt", at("127.0.0.1:7480")], ["--repl", at("127.0.0.1:7480")]]), /--mgmt and --repl both listen on port 7480 of 127\.0\.0\.1/);
  assert.throws(() => checkDistinctListeners([["--nbd", at("0.0.0.0:9000")], ["--host-port", at("127.0.0.1:9000")]]), /--nbd and --host-port both listen on port 9000/);
  assert.doesNotThrow(() => checkDistinctListeners([["--mgmt", at("127.0.0.1:0")], ["--repl", at("127.0.0.1:0")], ["--nbd", at("127.0.0.2:7480")], ["--host-port", at("127.0.0.1:7480")]]));
});
