// The demo's user session: a dev-minted JWT (`POST /dev/jwt`, dev mode only), minted again when the
// gateway no longer accepts it (a restarted dev gateway has new secrets), and the gateway's own
// origin for the API and the WebSocket.

import { HeraldApi, HeraldApiError, HeraldClient } from "@herald/client";

/** The user of this page: `?user=` (letters, digits, `-`, `_`, `.`, `@`; 1-64), or alice. */
export function pageUser(search: string): string {
  const user = new URLSearchParams(search).get("user") ?? "alice";
  return /^[A-Za-z0-9_.@-]{1,64}$/.test(user) ? user : "alice";
}

export function devSession(user: string, origin: string) {
  let jwt: Promise<string> | undefined;
  const mint = async (): Promise<string> => {
    const response = await fetch(`${origin}/dev/jwt?sub=${encodeURIComponent(user)}`, { method: "POST" });
    if (!response.ok) throw new HeraldApiError(response.status, "dev_jwt_failed", "POST /dev/jwt failed");
    return ((await response.json()) as { jwt: string }).jwt;
  };
  const getJwt = () => (jwt ??= mint().catch((error: unknown) => {
    jwt = undefined;
    throw error;
  }));
  const api = new HeraldApi({ baseUrl: origin, getJwt });
  const getToken = async () => {
    try {
      return (await api.issueToken()).token;
    } catch (error) {
      if (!(error instanceof HeraldApiError) || error.status !== 401) throw error;
      jwt = undefined;
      return (await api.issueToken()).token;
    }
  };
  const wsUrl = `${origin.replace(/^http/, "ws")}/ws`;
  const client = new HeraldClient({ url: wsUrl, getToken, channels: ["uploads", "social", "mocs", "quota", "system"] });
  return { api, client };
}

/** Publishes a test notification to `user` through the dev publisher (`POST /dev/publish`). */
export async function publishTest(origin: string, user: string, notification: Record<string, unknown>) {
  const response = await fetch(`${origin}/dev/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userIds: [user], notification }),
  });
  const answer = (await response.json()) as { error?: { message: string }; skipped?: Array<{ reason: string }> };
  if (!response.ok) throw new Error(answer.error?.message ?? `HTTP ${response.status}`);
  return answer;
}
