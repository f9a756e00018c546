/**
 * `@sessiond/client`: the v1 realtime client and seed C's `useUserSession` hook.
 *
 * The hook is exported from here too; apps that do not use React import from
 * `@sessiond/client/client` to keep React out of their bundle.
 */

export * from "./client.js";
export * from "./protocol.js";
export * from "./presence.js";
export * from "./backoff.js";
export * from "./useUserSession.js";
export * from "./devices.js";
