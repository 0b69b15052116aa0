// The management API has no authentication yet (CONTRACT.md, issue 9 item 5): `tidemark node`
// listens for it on a non-loopback address only with --insecure-mgmt, and says why otherwise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkMgmtExposure, isLoopbackHost, parseListenAddress } from "../../src/cli/address.ts";
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
      assert.ok(!error.message.includes("\n"), "one line");
      return true;
    });
    assert.doesNotThrow(() => checkMgmtExposure(parseListenAddress("--mgmt", text), true));
  }
});
