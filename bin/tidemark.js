#!/usr/bin/env node
// Entry point for `npx tidemark`: runs the TypeScript CLI directly (Node 26 strips types).
import "../src/cli/main.ts";
