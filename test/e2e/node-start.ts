// startNode() that tries again on fresh ports when a port picked by freePorts() was taken by
// another process before the node bound it (EADDRINUSE): other test files and engineers run
// nodes on this machine at the same time. Any other start failure is thrown at once.
import { startNode, type NodeOptions, type RunningNode } from "./harness.ts";

const startAttemptsMax = 3;

export async function startNodeRetrying(options: NodeOptions): Promise<RunningNode> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startNode(options);
    } catch (error) {
      if (attempt >= startAttemptsMax || !String(error).includes("EADDRINUSE")) throw error;
    }
  }
}
