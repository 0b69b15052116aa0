// Proves that `pair create` never overwrites data on the secondary without being told
// (issue 6, kind 6): a secondary volume of the same name that holds data makes it fail with
// one line naming --force, leaving both nodes unchanged (no pair on the primary, no target
// group, the secondary's data intact); a volume of the same name that was never written is
// used without a word; with --force the copy replaces the data and the images end equal.
import assert from "node:assert/strict";
import { test } from "node:test";
import { assertSameImages, NbdClient, pairInfo, readExport } from "./drill-lib.ts";
import { cli, cliOk, mgmtJson, startNode } from "./harness.ts";

const mib = 1024 * 1024;

void test("pair create onto a secondary volume holding data: refused naming --force, nothing changed; --force overwrites; an unwritten volume is reused", { timeout: 120_000 }, async () => {
  const a = await startNode({ id: "ow-a" });
  const b = await startNode({ id: "ow-b" });
  for (const [name, size] of [["held", "8M"], ["blank", "8M"]] as const) {
    await cliOk(["volume", "create", name, "--size", size], { node: a.mgmtUrl });
    await cliOk(["volume", "create", name, "--size", size], { node: b.mgmtUrl });
  }
  await cliOk(["group", "create", "g", "--volumes", "held,blank"], { node: a.mgmtUrl });
  const onA = await NbdClient.connect(a.nbdPort, "held");
  await onA.write(0, Buffer.alloc(mib, 0xa1));
  await onA.flush();
  await onA.close();
  // The secondary's own data, written before anyone paired anything.
  const onB = await NbdClient.connect(b.nbdPort, "held");
  await onB.write(2 * mib, Buffer.alloc(64 * 1024, 0xb2));
  await onB.flush();
  await onB.close();
  const before = await readExport(b, "held");

  const refused = await cli(["pair", "create", "g", "--to", b.mgmtUrl], { node: a.mgmtUrl });
  assert.notEqual(refused.code, 0, "refused");
  const lines = refused.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line: ${refused.stderr}`);
  assert.match(lines[0] ?? "", /held.*already holds data.*--force/);
  assert.ok((await readExport(b, "held")).equals(before), "the secondary's data is untouched");
  const { pairs } = await mgmtJson(a.mgmtUrl, "/v1/pairs") as { pairs: unknown[] };
  assert.equal(pairs.length, 0, "no pair was made on the primary");
  const { groups } = await mgmtJson(b.mgmtUrl, "/v1/groups") as { groups: { name: string }[] };
  assert.deepEqual(groups.map((g) => g.name), [], "no target group was made on the secondary");

  await cliOk(["pair", "create", "g", "--to", b.mgmtUrl, "--force"], { node: a.mgmtUrl, timeoutMs: 60_000 });
  assert.equal((await pairInfo(a, "g")).state, "replicating");
  await cliOk(["pair", "wait", "g"], { node: a.mgmtUrl });
  await assertSameImages(a, b, "held");
  await assertSameImages(a, b, "blank");
  const copied = await readExport(b, "held");
  assert.equal(copied[2 * mib], 0, "the secondary's old data is gone (overwritten by the copy, as asked)");
  assert.equal(copied[0], 0xa1);
});
