/**
 * Reconnect delays, shared by the v1 client and the seed-compatible hook.
 *
 * Both reconnect after `base·2ⁿ` capped at `max`; they differ only in jitter. The hook keeps
 * seed C's exact schedule (1 s·2ⁿ ≤ 30 s, no jitter) so existing apps behave as before; the v1
 * client adds jitter so that thousands of tabs dropped by one server restart do not all come
 * back in the same millisecond.
 */

/** How a client waits between reconnect attempts. */
export interface BackoffPolicy {
  /** Delay before the first retry (ms). */
  baseMs: number;
  /** Largest delay (ms). */
  maxMs: number;
  /** Attempts before giving up (`Infinity` = never give up). */
  maxAttempts: number;
  /**
   * Fraction of each delay that is randomized, 0..1: with 0.5 a 4 s delay becomes a uniform
   * pick in 2..4 s. 0 = the exact schedule.
   */
  jitter: number;
}

/** Seed C's hook schedule: 1 s, 2 s, 4 s … 30 s, ten attempts, no jitter. */
export const SEED_BACKOFF: BackoffPolicy = {
  baseMs: 1000,
  maxMs: 30_000,
  maxAttempts: 10,
  jitter: 0,
};

/** The v1 client's default: the same curve with half jitter, retrying forever. */
export const DEFAULT_BACKOFF: BackoffPolicy = {
  baseMs: 1000,
  maxMs: 30_000,
  maxAttempts: Infinity,
  jitter: 0.5,
};

/**
 * Delay before retry number `attempt` (0 = the first retry), or `null` once the policy's
 * attempts are used up. `random` is injectable for tests.
 */
export function backoffDelay(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number | null {
  if (attempt >= policy.maxAttempts) return null;
  // 2ⁿ overflows to Infinity long before it matters; the cap keeps the result finite.
  const exact = Math.min(policy.baseMs * 2 ** attempt, policy.maxMs);
  const jitter = Math.min(Math.max(policy.jitter, 0), 1);
  return Math.round(exact * (1 - jitter * random()));
}
