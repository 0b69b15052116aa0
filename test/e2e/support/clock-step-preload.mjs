// Preloaded into a node under test (NODE_OPTIONS=--import): signals step the process's wall
// clock as an NTP step, a manual date change or a VM resume would, and leave the monotonic
// clocks (process.hrtime, performance.now) alone, as the kernel does for CLOCK_REALTIME.
// SIGUSR1: one step forward; SIGUSR2: one step back (TIDEMARK_TEST_CLOCK_STEP_MS, default 1 h).
const stepMs = Number(process.env.TIDEMARK_TEST_CLOCK_STEP_MS ?? 3_600_000);
let offsetMs = 0;
const realNow = Date.now.bind(Date);
const RealDate = Date;
Date.now = () => realNow() + offsetMs;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(realNow() + offsetMs);
    else super(...args);
  }
  static now() {
    return realNow() + offsetMs;
  }
};
process.on("SIGUSR1", () => {
  offsetMs += stepMs;
});
process.on("SIGUSR2", () => {
  offsetMs -= stepMs;
});
