// Type-aware linting: no floating promises, no `any`, and a fence that keeps the
// functional core and the codecs free of I/O (DESIGN.md, "Shape of the code").
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const ioModules = ["node:fs", "node:fs/promises", "node:net", "node:http", "node:child_process", "node:timers", "node:timers/promises", "node:dgram"];

// The node's lifecycle code schedules through its Clock, so the simulation can run it on virtual time.
const lifecycleTimerRules = ["setTimeout", "setInterval", "setImmediate"].map((name) => ({
  selector: `CallExpression[callee.name='${name}']`,
  message: `Use the node's Clock (clock.setTimeout / setInterval / sleep / yieldToEvents), not ${name}: the simulation runs this code on virtual time.`,
})).concat([{ selector: "MemberExpression[object.name='performance'][property.name='now']", message: "Read the node's Clock (monotonicMs)." }]);

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", "eslint.config.js", "bin/**", "test/**/*.mjs"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "it", "describe", "suite", "before", "after", "beforeEach", "afterEach"] }] }],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["src/core/**/*.ts", "src/protocol/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        paths: ioModules.map((name) => ({ name, message: "core/ and protocol/ do no I/O: pass it in from the shell (node/, storage/)." })),
        patterns: [{ group: ["**/storage/**", "**/node/**", "**/cli/**"], message: "core/ and protocol/ must not depend on the shell." }],
      }],
      "no-restricted-syntax": ["error",
        { selector: "CallExpression[callee.object.name='Date'][callee.property.name='now']", message: "The core takes the clock as an argument." },
        { selector: "CallExpression[callee.object.name='Math'][callee.property.name='random']", message: "The core takes randomness as an argument." },
        { selector: "CallExpression[callee.name='setTimeout']", message: "No timers in the core." },
      ],
    },
  },
  {
    // Issue 6, kind 4: every timer, interval and deadline runs on the monotonic clock. The
    // node reads clocks only through the Clock it is given (src/node/clock.ts), so a wall
    // clock step can reach nothing but write times and the times shown to people.
    // The shell: every room but the front ends (their own rule below) and the CLI.
    files: ["src/node/**/*.ts", "src/storage/**/*.ts", "src/primary/**/*.ts", "src/secondary/**/*.ts", "src/metadata/**/*.ts", "src/volumes/**/*.ts", "src/transport/**/*.ts", "src/mgmt/**/*.ts"],
    ignores: ["src/node/clock.ts"],
    rules: {
      "no-restricted-syntax": ["error",
        { selector: "CallExpression[callee.object.name='Date'][callee.property.name='now']", message: "Read the node's Clock (monotonicMs for timers and deadlines, wallMs only for write times and display)." },
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: "new Date() reads the wall clock: use new Date(clock.wallMs())." },
        ...lifecycleTimerRules,
      ],
    },
  },
  {
    // Issue 7: every file the node touches goes through the FileSystem seam (src/storage/fs.ts),
    // so the simulation runs the journal, volumes, maps and metadata over its faulty disk.
    // Only the production implementation (src/storage/node-fs.ts) reaches node:fs.
    files: ["src/node/**/*.ts", "src/storage/**/*.ts", "src/primary/**/*.ts", "src/secondary/**/*.ts", "src/metadata/**/*.ts", "src/volumes/**/*.ts", "src/transport/**/*.ts", "src/mgmt/**/*.ts", "src/frontends/**/*.ts"],
    ignores: ["src/storage/node-fs.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        paths: ["node:fs", "node:fs/promises", "fs", "fs/promises"].map((name) => ({
          name, message: "Go through the node's FileSystem (src/storage/fs.ts; production: nodeFileSystem in src/storage/node-fs.ts): the simulation runs this code over its disk.",
        })),
      }],
    },
  },
  {
    // The NBD and host-protocol front ends batch replies with setImmediate on the hot path; the
    // simulation drives volumes through their handles, not through these sockets.
    files: ["src/frontends/nbd-server.ts", "src/frontends/host-server.ts"],
    rules: {
      "no-restricted-syntax": ["error",
        { selector: "CallExpression[callee.object.name='Date'][callee.property.name='now']", message: "Read the node's Clock." },
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: "new Date() reads the wall clock: use new Date(clock.wallMs())." },
      ],
    },
  },
  {
    // One transport seam (src/transport/transport.ts): the replication code opens and accepts
    // streams only through the Transport it is given, so TLS comes in one place and the
    // simulation runs it over its own network.
    files: ["src/primary/**/*.ts", "src/secondary/**/*.ts", "src/transport/repl-connection.ts", "src/transport/peer-client.ts", "src/node/**/*.ts", "src/metadata/**/*.ts", "src/volumes/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { paths: [{ name: "node:net", message: "Open and accept streams through the node's Transport (src/transport/transport.ts)." }] }],
    },
  },
  {
    files: ["test/**/*.ts", "bench/**/*.ts"],
    rules: { "@typescript-eslint/no-non-null-assertion": "off" },
  },
);
