// Writes docs/errors.md from src/core/errors.ts: every TM_ERR_* code, the HTTP status the
// management API answers it with, and what it means, so the page cannot drift from the code
// (test/unit/errors-doc.test.ts checks the committed page). Run: node scripts/errors-doc.ts > docs/errors.md
import { fileURLToPath } from "node:url";
import { tmErrorCodes } from "../src/core/errors.ts";

export function errorsDoc(): string {
  const rows = Object.entries(tmErrorCodes).map(([code, { httpStatus, meaning }]) => `| \`${code}\` | ${String(httpStatus)} | ${meaning} |`);
  return [
    "# Error codes",
    "",
    "Generated from `src/core/errors.ts` by `node scripts/errors-doc.ts > docs/errors.md`; a unit test keeps",
    "the two equal. Every error tidemark raises on purpose has one of these codes, and a code is",
    "never renamed or reused. The management API answers `{\"error\":{\"code\",\"message\"}}` with the",
    "status below; the CLI prints the message, then the code in brackets, and exits 1 (docs/cli.md);",
    "logs carry it as `code`. Host I/O errors (NBD, the host protocol) carry an errno on the wire",
    "(`EIO`, `ENOSPC`, `EPERM`, `EINVAL`, `ESHUTDOWN`) and the code below in the node's log.",
    "",
    "| code | HTTP | meaning |",
    "|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(errorsDoc());
