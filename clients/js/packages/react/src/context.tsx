// The provider: one HeraldClient and one HeraldApi shared by every hook and component below it.
//
// The client is made by the application (once, outside render) and handed in, so that React's
// StrictMode, which mounts, unmounts and mounts again, never makes a second connection: the
// provider connects while at least one provider using the client is mounted and closes the
// connection only when the last one has been gone for a tick.

import { createContext, type ReactNode, useContext, useEffect, useMemo } from "react";

import type { HeraldApi, HeraldClient } from "@herald/client";

export interface Herald {
  client: HeraldClient;
  api: HeraldApi;
}

const HeraldContext = createContext<Herald | null>(null);

const holders = new WeakMap<HeraldClient, { count: number; closing?: ReturnType<typeof setTimeout> }>();

function hold(client: HeraldClient): () => void {
  const holder = holders.get(client) ?? { count: 0 };
  holders.set(client, holder);
  holder.count += 1;
  if (holder.closing !== undefined) {
    clearTimeout(holder.closing);
    delete holder.closing;
  }
  client.connect();
  return () => {
    holder.count -= 1;
    if (holder.count === 0) {
      // A StrictMode remount comes back before this runs, and keeps the connection.
      holder.closing = setTimeout(() => {
        delete holder.closing;
        if (holder.count === 0) client.close();
      }, 0);
    }
  };
}

export function HeraldProvider({ client, api, children }: Herald & { children: ReactNode }) {
  useEffect(() => hold(client), [client]);
  const value = useMemo(() => ({ client, api }), [client, api]);
  return <HeraldContext.Provider value={value}>{children}</HeraldContext.Provider>;
}

/** The client and API of the nearest HeraldProvider. */
export function useHerald(): Herald {
  const herald = useContext(HeraldContext);
  if (!herald) throw new Error("Herald hooks need a <HeraldProvider> above them");
  return herald;
}
