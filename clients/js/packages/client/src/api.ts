// The gateway's HTTP API for a signed-in user (docs/protocol.md, "HTTP"; docs/openapi.json): a
// connection token, the history, read state, deletion and preferences. Every call sends the user's
// JWT as `Authorization: Bearer`; every refusal becomes a HeraldApiError.

import { HeraldApiError } from "./errors.js";
import type { Notification, NotificationType } from "./protocol.js";

export interface IssuedToken {
  token: string;
  expiresAt: number;
  tokenId: string;
}

export interface HistoryItem extends Notification {
  /** When it was read, `null` while unread. */
  readAt: number | null;
}

export interface HistoryPage {
  items: HistoryItem[];
  /** Pass back as `cursor` for the next page; `null` on the last. */
  nextCursor: string | null;
  unreadCount: number;
}

export interface HistoryQuery {
  /** 1 to 100 (20 when absent). */
  limit?: number;
  cursor?: string;
  unread?: boolean;
  type?: NotificationType;
  channel?: string;
}

export interface Switches {
  inApp: boolean;
  email: boolean;
  push: boolean;
}

export interface Preferences {
  inAppEnabled: boolean;
  emailEnabled: boolean;
  pushEnabled: boolean;
  types: Record<string, Switches>;
  channels: Record<string, Switches>;
}

export interface PreferencesPatch {
  inAppEnabled?: boolean;
  emailEnabled?: boolean;
  pushEnabled?: boolean;
  types?: Record<string, Partial<Switches>>;
  channels?: Record<string, Partial<Switches>>;
}

export interface HeraldApiOptions {
  /** The gateway's public base URL, e.g. `https://notify.example.com` (no trailing path). */
  baseUrl: string;
  /** The user's JWT, asked for on every call (so a refreshed JWT is used as soon as there is one). */
  getJwt: () => string | Promise<string>;
  fetch?: typeof fetch;
}

export class HeraldApi {
  readonly #baseUrl: string;
  readonly #getJwt: () => string | Promise<string>;
  readonly #fetch: typeof fetch;

  constructor(options: HeraldApiOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#getJwt = options.getJwt;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** A fresh, single-use connection token (what HeraldClient's `getToken` should return). */
  issueToken(): Promise<IssuedToken> {
    return this.#call("POST", "/ws/token");
  }

  /** Revokes every connection token of the user and closes their live connections everywhere. */
  async revokeTokens(): Promise<void> {
    await this.#call("DELETE", "/ws/token");
  }

  history(query: HistoryQuery = {}): Promise<HistoryPage> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined) params.set(key, String(value));
    }
    const search = params.toString();
    return this.#call("GET", `/notifications${search ? `?${search}` : ""}`);
  }

  async markRead(id: string): Promise<void> {
    await this.#call("POST", `/notifications/${encodeURIComponent(id)}/read`);
  }

  /** Returns how many were unread. */
  async markAllRead(): Promise<number> {
    const answer = await this.#call<{ updated: number }>("POST", "/notifications/read-all");
    return answer.updated;
  }

  async delete(id: string): Promise<void> {
    await this.#call("DELETE", `/notifications/${encodeURIComponent(id)}`);
  }

  preferences(): Promise<Preferences> {
    return this.#call("GET", "/notifications/preferences");
  }

  updatePreferences(patch: PreferencesPatch): Promise<Preferences> {
    return this.#call("PATCH", "/notifications/preferences", patch);
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${await this.#getJwt()}` };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.#fetch(`${this.#baseUrl}${path}`, init);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok) throw apiError(response, json);
    return json as T;
  }
}

function apiError(response: Response, json: unknown): HeraldApiError {
  const error = (json as { error?: { code?: unknown; message?: unknown; fields?: unknown } } | undefined)?.error;
  const code = typeof error?.code === "string" ? error.code : `http_${response.status}`;
  const message = typeof error?.message === "string" ? error.message : response.statusText;
  const fields =
    error?.fields && typeof error.fields === "object" ? (error.fields as Record<string, string>) : {};
  const retryAfter = Number(response.headers.get("retry-after"));
  return new HeraldApiError(
    response.status,
    code,
    message,
    fields,
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
  );
}
