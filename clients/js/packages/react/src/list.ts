// The notification list of useNotifications, as pure functions over its state: pages of the history
// and live notifications merged into one list (one entry per id, newest first), bounded.
//
// Live notifications can arrive for as long as a tab stays open, so the list keeps at most `maxItems`:
// past that the oldest are dropped and the list is marked `trimmed`. The history cursor then no
// longer follows the list's last item, so the next "load more" starts the history over from its
// first page (what is already listed is skipped by id) and pages on from there: nothing is missed.

import type { HistoryItem, HistoryPage, Notification } from "@herald/client";

export interface ListState {
  /** Newest (highest `seq`) first. */
  items: HistoryItem[];
  /** Where the history continues; `null` when it has no more (or was never read). */
  cursor: string | null;
  /** Items were dropped from the end: load more from the history's start. */
  trimmed: boolean;
}

export const EMPTY_LIST: ListState = { items: [], cursor: null, trimmed: false };

/** The default bound of the list. */
export const DEFAULT_MAX_ITEMS = 500;

/** Adds `incoming` to `items`, keeping what is already there for an id. */
function merge(items: HistoryItem[], incoming: HistoryItem[]): HistoryItem[] {
  const byId = new Map(items.map((item) => [item.id, item]));
  for (const item of incoming) if (!byId.has(item.id)) byId.set(item.id, item);
  return [...byId.values()].sort((a, b) => b.seq - a.seq);
}

/** After a history page: `first` when it is the first page (a refresh, or the restart after a trim).
 * The page's copy of an item wins (its read state is the server's). */
export function withPage(state: ListState, page: HistoryPage, first: boolean): ListState {
  const items = first ? merge(page.items, state.items) : merge(state.items, page.items);
  return { items, cursor: page.nextCursor, trimmed: first ? false : state.trimmed };
}

/** After a live notification. */
export function withLive(state: ListState, notification: Notification, maxItems: number): ListState {
  if (state.items.some((item) => item.id === notification.id)) return state;
  const items = merge(state.items, [{ ...notification, readAt: null }]);
  if (items.length <= maxItems) return { ...state, items };
  return { ...state, items: items.slice(0, maxItems), trimmed: true };
}

export function hasMore(state: ListState): boolean {
  return state.trimmed || state.cursor !== null;
}

/** The cursor "load more" asks the history for: `undefined` for its first page. */
export function moreFrom(state: ListState): string | undefined {
  return state.trimmed || state.cursor === null ? undefined : state.cursor;
}

export function withRead(state: ListState, id: string | undefined, at: number): ListState {
  const items = state.items.map((item) =>
    item.readAt === null && (id === undefined || item.id === id) ? { ...item, readAt: at } : item,
  );
  return { ...state, items };
}

export function without(state: ListState, id: string): ListState {
  return { ...state, items: state.items.filter((item) => item.id !== id) };
}
