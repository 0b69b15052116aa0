// Proves docs/errors.md is the codes the code has (scripts/errors-doc.ts over src/core/errors.ts),
// and that each error class carries the code its kind promises.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { errorsDoc } from "../../scripts/errors-doc.ts";
import {
  ControlError, isTmErrorCode, JournalAbandonedError, JournalClosedError, JournalCorruptError, JournalFormatError, JournalFullError, JournalTrimmedError,
  NodeStartError, TidemarkError, tmErrorCodes, VolumeIoError,
} from "../../src/core/errors.ts";

void test("docs/errors.md lists every TM_ERR_* code of src/core/errors.ts with its HTTP status", () => {
  const committed = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  assert.equal(committed, errorsDoc(), "docs/errors.md is stale: run `node scripts/errors-doc.ts > docs/errors.md`");
});

void test("every error class is a TidemarkError with a code from the table", () => {
  const errors: TidemarkError[] = [
    new ControlError("TM_ERR_STATE", "x"), new NodeStartError("TM_ERR_LISTEN", "x", "EADDRINUSE"),
    new JournalCorruptError("/j", 0, "r"), new JournalFormatError("/j", 0, "r"), new JournalFullError(1, 2, 3),
    new JournalClosedError("/j"), new JournalTrimmedError("/j", 1, 2), new JournalAbandonedError("/j"),
  ];
  for (const error of errors) {
    assert.ok(error instanceof TidemarkError && error instanceof Error);
    assert.ok(isTmErrorCode(error.code), `${error.name}: ${error.code}`);
    assert.notEqual(error.name, "TidemarkError", "each class names itself");
  }
  assert.equal(new NodeStartError("TM_ERR_LISTEN", "x", "EADDRINUSE").errno, "EADDRINUSE");
});

void test("a VolumeIoError keeps the errno the host is told and has the matching code", () => {
  const expected = { EINVAL: "TM_ERR_INVALID", EPERM: "TM_ERR_STATE", ENOSPC: "TM_ERR_NO_SPACE", EIO: "TM_ERR_IO", ESHUTDOWN: "TM_ERR_SHUTDOWN" } as const;
  for (const [errno, code] of Object.entries(expected) as [keyof typeof expected, string][]) {
    const error = new VolumeIoError(errno, "m");
    assert.equal(error.errno, errno);
    assert.equal(error.code, code);
  }
});

void test("isTmErrorCode takes only the table's codes (a peer's answer may hold anything)", () => {
  for (const code of Object.keys(tmErrorCodes)) assert.ok(isTmErrorCode(code));
  for (const other of ["TM_ERR_NOPE", "toString", "__proto__", "", 7, null, undefined]) assert.equal(isTmErrorCode(other), false, String(other));
});
