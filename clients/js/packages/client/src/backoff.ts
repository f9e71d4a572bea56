// Reconnect delays: exponential backoff with full jitter (a random delay between 0 and the capped
// exponential), so that thousands of clients cut off at once do not come back at once.

export interface BackoffOptions {
  /** The first attempt's ceiling. */
  initialMs: number;
  /** No delay is longer. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };

/** The delay before reconnect attempt `attempt` (0 for the first): uniform in
 * [0, min(maxMs, initialMs * 2^attempt)). `random` returns values in [0, 1). */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}
