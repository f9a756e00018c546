/**
 * Channel presence as the server describes it (docs/realtime.md §2.1): keyed by user, one
 * meta per connection of that user in the channel.
 *
 * The server sends one full `presence_state` after each subscribe, then `presence_diff`s. A
 * meta update arrives as a diff that leaves the old meta and joins the new one for the same
 * `connId`, so leaves are applied before joins; applying them the other way round would drop
 * the updated connection.
 */

/** One connection of a user in a channel. Apps may add fields through `meta`. */
export interface PresenceMeta {
  connId: string;
  deviceId: string;
  joinedAt: number;
  [field: string]: unknown;
}

/** Users present in a channel. */
export type PresenceMap = Record<string, { metas: PresenceMeta[] }>;

function isMeta(value: unknown): value is PresenceMeta {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { connId?: unknown }).connId === "string"
  );
}

/** Reads a presence object from a frame, keeping only well-formed metas. */
export function parsePresence(value: unknown): PresenceMap {
  const result: PresenceMap = {};
  if (typeof value !== "object" || value === null) return result;
  for (const [user, entry] of Object.entries(value as Record<string, unknown>)) {
    const metas = (entry as { metas?: unknown } | null)?.metas;
    if (!Array.isArray(metas)) continue;
    const valid = metas.filter(isMeta);
    if (valid.length > 0) result[user] = { metas: valid };
  }
  return result;
}

/** A new presence map with `leaves` removed (by `connId`) and then `joins` added. */
export function applyPresenceDiff(
  current: PresenceMap,
  joins: PresenceMap,
  leaves: PresenceMap,
): PresenceMap {
  const next: PresenceMap = {};
  for (const [user, entry] of Object.entries(current)) {
    next[user] = { metas: [...entry.metas] };
  }
  for (const [user, entry] of Object.entries(leaves)) {
    const present = next[user];
    if (!present) continue;
    const leaving = new Set(entry.metas.map((m) => m.connId));
    present.metas = present.metas.filter((m) => !leaving.has(m.connId));
    if (present.metas.length === 0) delete next[user];
  }
  for (const [user, entry] of Object.entries(joins)) {
    const present = next[user] ?? { metas: [] };
    const joining = new Set(entry.metas.map((m) => m.connId));
    present.metas = [...present.metas.filter((m) => !joining.has(m.connId)), ...entry.metas];
    next[user] = present;
  }
  return next;
}
