// Proves that `tidemark node` has a decision for every signal that would end it: each signal
// Node knows on this platform whose default action terminates the process is either a clean
// stop, ignored with a log line, or left to its default for a stated reason (uncatchable,
// Node's own, or a crash of the process itself), and no signal is in two lists. The behaviour
// with real processes is in test/e2e/node-signals.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { constants } from "node:os";
import { defaultSignals, ignoredSignals, stopSignals } from "../../src/cli/node-signals.ts";

/** Signals whose default action does not end the process (ignore, stop, continue), and those Node itself ignores. */
const notEnding = new Set(["SIGCHLD", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH", "SIGPIPE", "SIGXFSZ"]);

void test("every signal that would end the node is a clean stop, ignored with a log line, or left to its default for a reason", () => {
  const numbers = constants.signals as Record<string, number>;
  const decided = new Map<number, string>();
  for (const [list, names] of [["stop", stopSignals], ["ignored", ignoredSignals], ["default", defaultSignals]] as const) {
    for (const name of names) {
      const number = numbers[name];
      assert.ok(number !== undefined, `${name} is a signal here`);
      const other = decided.get(number);
      assert.ok(other === undefined || other === list, `${name} is in ${list} and ${other ?? ""}`);
      decided.set(number, list);
    }
  }
  for (const [name, number] of Object.entries(numbers)) {
    if (notEnding.has(name)) continue;
    assert.ok(decided.has(number), `${name} would end the node silently: decide what it does (src/cli/node-signals.ts)`);
  }
  assert.ok(!(stopSignals as readonly string[]).includes("SIGUSR1") && !(ignoredSignals as readonly string[]).includes("SIGUSR1"), "SIGUSR1 stays Node's (the inspector)");
  for (const name of ["SIGQUIT", "SIGALRM", "SIGHUP", "SIGTERM", "SIGINT"]) assert.ok((stopSignals as readonly string[]).includes(name), `${name} is a clean stop`);
  assert.ok((ignoredSignals as readonly string[]).includes("SIGUSR2"), "SIGUSR2 is logged and ignored");
});
