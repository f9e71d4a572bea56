// The hooks: the connection (useWebSocket), the unread count, the notification list and the
// preferences. They read the shared client through useSyncExternalStore, so every component sees
// the same state in the same render, and none opens a connection of its own.

import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";

import type {
  ConnectedPayload,
  ConnectionState,
  HeraldClient,
  HistoryItem,
  Notification,
  Preferences,
  PreferencesPatch,
  Switches,
} from "@herald/client";

import { useHerald } from "./context.js";
import {
  DEFAULT_MAX_ITEMS,
  EMPTY_LIST,
  type ListState,
  hasMore,
  moreFrom,
  withLive,
  withPage,
  withRead,
  without,
} from "./list.js";

type ClientEvent = Parameters<HeraldClient["on"]>[0];

function useClientValue<T>(events: ClientEvent[], read: (client: HeraldClient) => T): T {
  const { client } = useHerald();
  const subscribe = useCallback(
    (changed: () => void) => {
      const stops = events.map((event) => client.on(event, changed));
      return () => stops.forEach((stop) => stop());
    },
    // The event list is a literal of each caller: it never changes between renders.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [client],
  );
  return useSyncExternalStore(subscribe, () => read(client), () => read(client));
}

export interface WebSocketView {
  state: ConnectionState;
  /** The current connection's `connected` message, while open. */
  connection: ConnectedPayload | undefined;
  subscriptions: readonly string[];
  subscribe: (channels: string[]) => void;
  unsubscribe: (channels: string[]) => void;
}

/** The shared connection: its state and subscriptions (the plan's `useWebSocket`). */
export function useWebSocket(): WebSocketView {
  const { client } = useHerald();
  const state = useClientValue(["state"], (c) => c.state);
  const connection = useClientValue(["state", "connected"], (c) => c.connection);
  const subscriptions = useClientValue(["subscriptions"], (c) => c.subscriptions);
  const subscribe = useCallback((channels: string[]) => client.subscribe(channels), [client]);
  const unsubscribe = useCallback((channels: string[]) => client.unsubscribe(channels), [client]);
  return { state, connection, subscriptions, subscribe, unsubscribe };
}

/** The user's unread count, live. */
export function useUnreadCount(): number {
  return useClientValue(["unreadCount"], (c) => c.unreadCount);
}

/** Calls `listener` with every new notification (each once), for as long as the component lives. */
export function useNotificationListener(listener: (notification: Notification) => void): void {
  const { client } = useHerald();
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => client.on("notification", (n) => latest.current(n)), [client]);
}

export interface NotificationsView {
  /** Newest first: the history, with live notifications added as they arrive. */
  items: HistoryItem[];
  loading: boolean;
  error: Error | undefined;
  hasMore: boolean;
  loadMore: () => Promise<void>;
  refresh: () => Promise<void>;
  markRead: (id: string) => Promise<void>;
  markAllRead: () => Promise<void>;
  remove: (id: string) => Promise<void>;
}

/** The user's notifications (the plan's `useNotifications`): the first page of the history, then
 * `loadMore`; live ones are added as they arrive (at most `maxItems` kept, see list.ts); read,
 * read-all and delete update the list. */
export function useNotifications(options: { pageSize?: number; maxItems?: number } = {}): NotificationsView {
  const { api } = useHerald();
  const pageSize = options.pageSize ?? 20;
  const maxItems = options.maxItems ?? DEFAULT_MAX_ITEMS;
  const [list, setList] = useState<ListState>(EMPTY_LIST);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | undefined>();
  const mounted = useRef(true);
  const latest = useRef(list);
  latest.current = list;

  const run = useCallback(async (work: () => Promise<void>) => {
    setError(undefined);
    try {
      await work();
    } catch (e) {
      if (mounted.current) setError(e instanceof Error ? e : new Error(String(e)));
    }
  }, []);

  const refresh = useCallback(
    () =>
      run(async () => {
        setLoading(true);
        try {
          const page = await api.history({ limit: pageSize });
          if (mounted.current) setList((current) => withPage(current, page, true));
        } finally {
          if (mounted.current) setLoading(false);
        }
      }),
    [api, pageSize, run],
  );

  useEffect(() => {
    mounted.current = true;
    void refresh();
    return () => {
      mounted.current = false;
    };
  }, [refresh]);

  useNotificationListener((notification) => {
    setList((current) => withLive(current, notification, maxItems));
  });

  const loadMore = useCallback(
    () =>
      run(async () => {
        if (!hasMore(latest.current)) return;
        setLoading(true);
        try {
          // After a trim the history starts over; pages whose items are all listed already are
          // skipped, so that one "load more" shows something new (at most the pages the list holds).
          // Each page is applied to the list as it is then (live notifications, reads and deletes
          // that happened during the request stay), never to a copy taken before the requests.
          let first = latest.current.trimmed;
          for (let pages = 0; pages <= Math.ceil(maxItems / pageSize) + 1; pages++) {
            const before = latest.current;
            const cursor = first ? undefined : moreFrom(before);
            const page = await api.history(cursor === undefined ? { limit: pageSize } : { limit: pageSize, cursor });
            if (!mounted.current) return;
            const isFirst = first;
            const known = new Set(latest.current.items.map((item) => item.id));
            const added = page.items.some((item) => !known.has(item.id));
            setList((current) => withPage(current, page, isFirst));
            latest.current = withPage(latest.current, page, isFirst);
            first = false;
            if (added || page.nextCursor === null) break;
          }
        } finally {
          if (mounted.current) setLoading(false);
        }
      }),
    [api, maxItems, pageSize, run],
  );

  const markRead = useCallback(
    (id: string) =>
      run(async () => {
        await api.markRead(id);
        setList((current) => withRead(current, id, Date.now()));
      }),
    [api, run],
  );

  const markAllRead = useCallback(
    () =>
      run(async () => {
        await api.markAllRead();
        setList((current) => withRead(current, undefined, Date.now()));
      }),
    [api, run],
  );

  const remove = useCallback(
    (id: string) =>
      run(async () => {
        await api.delete(id);
        setList((current) => without(current, id));
      }),
    [api, run],
  );

  return {
    items: list.items,
    loading,
    error,
    hasMore: hasMore(list),
    loadMore,
    refresh,
    markRead,
    markAllRead,
    remove,
  };
}

export interface PreferencesView {
  preferences: Preferences | undefined;
  loading: boolean;
  error: Error | undefined;
  update: (patch: PreferencesPatch) => Promise<void>;
}

/** `preferences` with `patch` applied, as the server will answer it. */
function applyPatch(preferences: Preferences, patch: PreferencesPatch): Preferences {
  const merged = (
    current: Record<string, Switches>,
    changes: Record<string, Partial<Switches>> | undefined,
  ): Record<string, Switches> => {
    const next = { ...current };
    for (const [name, switches] of Object.entries(changes ?? {})) {
      const previous = next[name];
      if (previous) next[name] = { ...previous, ...switches };
    }
    return next;
  };
  return {
    inAppEnabled: patch.inAppEnabled ?? preferences.inAppEnabled,
    emailEnabled: patch.emailEnabled ?? preferences.emailEnabled,
    pushEnabled: patch.pushEnabled ?? preferences.pushEnabled,
    types: merged(preferences.types, patch.types),
    channels: merged(preferences.channels, patch.channels),
  };
}

/** The user's preferences, and `update` to change some. */
export function usePreferences(): PreferencesView {
  const { api } = useHerald();
  const [preferences, setPreferences] = useState<Preferences | undefined>();
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | undefined>();
  const latest = useRef(preferences);
  latest.current = preferences;
  useEffect(() => {
    let live = true;
    api
      .preferences()
      .then((p) => live && setPreferences(p))
      .catch((e: unknown) => live && setError(e instanceof Error ? e : new Error(String(e))))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [api]);
  const update = useCallback(
    async (patch: PreferencesPatch) => {
      setError(undefined);
      // Shown at once (a checkbox follows the click), then replaced by what the server answers, or
      // put back if it refuses.
      const before = latest.current;
      setPreferences(before && applyPatch(before, patch));
      try {
        setPreferences(await api.updatePreferences(patch));
      } catch (e) {
        setPreferences(before);
        setError(e instanceof Error ? e : new Error(String(e)));
      }
    },
    [api],
  );
  return { preferences, loading, error, update };
}
