// HeraldClient: one WebSocket to the gateway, kept open. A fresh connection token for every
// (re)connect (tokens are single use), heartbeats on the server's interval, reconnects with backoff
// and the server's hints, subscriptions restored, every notification acknowledged and delivered to
// listeners once (by id, across reconnects), the live unread count.

import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
import { decideOnClose } from "./close.js";
import { HeraldApiError, HeraldServerError, HeraldStoppedError } from "./errors.js";
import { Emitter } from "./emitter.js";
import { IdMemory } from "./ids.js";
import {
  type ClientMessageType,
  type ConnectedPayload,
  type Notification,
  SUBPROTOCOL,
  type ServerMessage,
  TOKEN_PROTOCOL_PREFIX,
  clientMessage,
  parseServerMessage,
} from "./protocol.js";

/** `idle` before `connect()` and after `close()`; `stopped` when the client gave up on its own
 * (see the `stopped` event for why). */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "stopped";

/** What the client needs of a WebSocket: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface HeraldClientOptions {
  /** The gateway's WebSocket URL, e.g. `wss://notify.example.com/ws`. */
  url: string;
  /** A fresh connection token (`POST /ws/token`, e.g. `() => api.issueToken().then(t => t.token)`);
   * called before every connect. A HeraldApiError with status 401 or 403 stops the client. */
  getToken: () => Promise<string>;
  /** Channels to be subscribed to; kept subscribed across reconnects. */
  channels?: string[];
  backoff?: Partial<BackoffOptions>;
  /** A connection open this long starts the backoff over (10 s). */
  stableAfterMs?: number;
  /** How many notification ids are remembered to drop repeats (1,000). */
  rememberedIds?: number;
  WebSocket?: WebSocketConstructor;
  random?: () => number;
  now?: () => number;
  timers?: Timers;
}

interface ClientEvents {
  state: ConnectionState;
  connected: ConnectedPayload;
  /** Each notification once, whatever the number of times it is delivered. */
  notification: Notification;
  unreadCount: number;
  subscriptions: string[];
  /** An `error` message of the server (the connection stays open). */
  error: HeraldServerError;
  stopped: HeraldStoppedError;
}

/** Most channels the client keeps track of (subscriptions are bounded on the server too). */
const MAX_CHANNELS = 256;

export class HeraldClient {
  readonly #options: Required<Omit<HeraldClientOptions, "backoff" | "channels">> & { backoff: BackoffOptions };
  readonly #events = new Emitter<ClientEvents>();
  readonly #seen: IdMemory;
  /** What the application wants subscribed. */
  readonly #wanted = new Set<string>();
  /** Unsubscribed while offline: to unsubscribe once connected, if the server still has them. */
  readonly #unwanted = new Set<string>();
  #socket: WebSocketLike | undefined;
  /** Bumped on every connect and close: callbacks of an older generation do nothing. */
  #generation = 0;
  #state: ConnectionState = "idle";
  #attempt = 0;
  #connected: ConnectedPayload | undefined;
  #subscriptions: string[] = [];
  #unreadCount = 0;
  #timers = new Set<unknown>();
  /** When the current connection last received a frame. */
  #lastHeard = 0;

  constructor(options: HeraldClientOptions) {
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketImpl) throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    this.#options = {
      url: options.url,
      getToken: options.getToken,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      stableAfterMs: options.stableAfterMs ?? 10_000,
      rememberedIds: options.rememberedIds ?? 1_000,
      WebSocket: WebSocketImpl,
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
      timers: options.timers ?? {
        setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
        clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
      },
    };
    this.#seen = new IdMemory(this.#options.rememberedIds);
    for (const channel of options.channels ?? []) this.#want(channel);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The user's unread notifications, as the server last said. */
  get unreadCount(): number {
    return this.#unreadCount;
  }

  /** What the server said on the current connection, if one is open. */
  get connection(): ConnectedPayload | undefined {
    return this.#connected;
  }

  /** The channels the server says this user is subscribed to. */
  get subscriptions(): readonly string[] {
    return this.#subscriptions;
  }

  /** Listens to an event; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }

  /** Opens the connection (and keeps it open) unless it is already. */
  connect(): void {
    if (this.#state === "connecting" || this.#state === "open" || this.#state === "reconnecting") return;
    this.#attempt = 0;
    void this.#open(this.#nextGeneration(), "connecting");
  }

  /** Closes the connection for good (until `connect()`). */
  close(): void {
    this.#nextGeneration();
    this.#drop(1000, "client closed");
    this.#setState("idle");
  }

  /** Subscribes to channels, now or once connected; they stay subscribed across reconnects. */
  subscribe(channels: string[]): void {
    const added = channels.filter((c) => this.#want(c));
    if (added.length > 0 && this.#state === "open") this.#send("subscribe", { channels: added });
  }

  /** Unsubscribes from channels, now or once connected. */
  unsubscribe(channels: string[]): void {
    for (const channel of channels) {
      this.#wanted.delete(channel);
      this.#unwanted.add(channel);
    }
    if (this.#state === "open") {
      this.#unwanted.clear();
      this.#send("unsubscribe", { channels });
    }
  }

  #want(channel: string): boolean {
    this.#unwanted.delete(channel);
    if (this.#wanted.has(channel)) return false;
    if (this.#wanted.size >= MAX_CHANNELS) throw new RangeError(`at most ${MAX_CHANNELS} channels`);
    this.#wanted.add(channel);
    return true;
  }

  #nextGeneration(): number {
    this.#generation += 1;
    for (const handle of this.#timers) this.#options.timers.clearTimeout(handle);
    this.#timers.clear();
    return this.#generation;
  }

  #after(generation: number, ms: number, callback: () => void): void {
    const handle = this.#options.timers.setTimeout(() => {
      this.#timers.delete(handle);
      if (generation === this.#generation) callback();
    }, ms);
    this.#timers.add(handle);
  }

  #setState(state: ConnectionState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }

  async #open(generation: number, state: "connecting" | "reconnecting"): Promise<void> {
    this.#setState(state);
    let token: string;
    try {
      token = await this.#options.getToken();
    } catch (error) {
      if (generation !== this.#generation) return;
      if (error instanceof HeraldApiError && (error.status === 401 || error.status === 403)) {
        this.#stop(`no connection token: ${error.code} (${error.status})`);
      } else {
        this.#reconnectLater();
      }
      return;
    }
    if (generation !== this.#generation) return;
    const socket = new this.#options.WebSocket(this.#options.url, [SUBPROTOCOL, TOKEN_PROTOCOL_PREFIX + token]);
    this.#socket = socket;
    socket.onmessage = (event) => {
      if (generation === this.#generation && typeof event.data === "string") this.#receive(generation, event.data);
    };
    socket.onclose = (event) => {
      if (generation === this.#generation) this.#closed(event.code, event.reason);
    };
    // An error is always followed by a close.
    socket.onerror = () => {};
  }

  #receive(generation: number, text: string): void {
    this.#lastHeard = this.#options.now();
    const message = parseServerMessage(text);
    if (message) this.#handle(generation, message);
  }

  #handle(generation: number, message: ServerMessage): void {
    switch (message.type) {
      case "connected":
        return this.#onConnected(generation, message.payload);
      case "notification": {
        const notification = message.payload;
        // Every delivery is acknowledged, repeats too: the server awaits the ack of a re-send.
        this.#send("notification:ack", { notificationId: notification.id });
        if (this.#seen.remember(notification.id)) this.#events.emit("notification", notification);
        return;
      }
      case "unread_count":
        return this.#setUnread(message.payload.unreadCount);
      case "subscribed":
        return this.#setSubscriptions([...new Set([...this.#subscriptions, ...message.payload.channels])]);
      case "unsubscribed": {
        const gone = new Set(message.payload.channels);
        return this.#setSubscriptions(this.#subscriptions.filter((c) => !gone.has(c)));
      }
      case "error":
        return this.#events.emit("error", new HeraldServerError(message.payload.code, message.payload.message));
      case "pong":
        return;
    }
  }

  #onConnected(generation: number, connected: ConnectedPayload): void {
    this.#connected = connected;
    this.#setSubscriptions(connected.subscriptions);
    this.#setUnread(connected.unreadCount);
    this.#setState("open");
    this.#events.emit("connected", connected);
    // Subscription changes made while offline, then what the server lacks.
    const unwanted = connected.subscriptions.filter((c) => this.#unwanted.has(c));
    this.#unwanted.clear();
    if (unwanted.length > 0) this.#send("unsubscribe", { channels: unwanted });
    const missing = [...this.#wanted].filter(
      (c) => !connected.subscriptions.includes(c) && connected.allowedChannels.includes(c),
    );
    if (missing.length > 0) this.#send("subscribe", { channels: missing });
    const interval = Math.max(1_000, connected.heartbeatIntervalMs);
    const ping = () => {
      this.#send("ping", {});
      this.#after(generation, interval, ping);
    };
    this.#after(generation, interval, ping);
    this.#after(generation, this.#options.stableAfterMs, () => {
      this.#attempt = 0;
    });
    // No frame within the heartbeat timeout (a pong is due every interval): the connection is dead
    // even if the socket has not noticed (a half-open TCP connection). Give up on it.
    const timeout = Math.max(interval, connected.heartbeatTimeoutMs);
    const check = () => {
      const silent = this.#options.now() - this.#lastHeard;
      if (silent >= timeout) this.#closed(1006, "no frame within the heartbeat timeout");
      else this.#after(generation, timeout - silent, check);
    };
    this.#after(generation, timeout, check);
  }

  #closed(code: number, reason: string): void {
    this.#drop(code, reason);
    const decision = decideOnClose(code, reason);
    if (decision.action === "stop") return this.#stop(decision.reason);
    if (decision.action === "reconnect-after") {
      this.#attempt = 0;
      const next = this.#nextGeneration();
      this.#setState("reconnecting");
      this.#after(next, decision.delayMs, () => void this.#open(next, "reconnecting"));
      return;
    }
    this.#reconnectLater();
  }

  #reconnectLater(): void {
    const next = this.#nextGeneration();
    this.#setState("reconnecting");
    const delay = backoffDelay(this.#attempt, this.#options.backoff, this.#options.random);
    this.#attempt += 1;
    this.#after(next, delay, () => void this.#open(next, "reconnecting"));
  }

  #stop(reason: string): void {
    this.#nextGeneration();
    this.#drop(1000, "stopped");
    this.#setState("stopped");
    this.#events.emit("stopped", new HeraldStoppedError(reason));
  }

  /** Forgets the current socket (closing it if it is still open). */
  #drop(code: number, reason: string): void {
    const socket = this.#socket;
    this.#socket = undefined;
    this.#connected = undefined;
    if (!socket) return;
    socket.onmessage = socket.onclose = socket.onerror = socket.onopen = null;
    try {
      // Browsers accept only 1000 and 3000-4999 from a client.
      socket.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 100));
    } catch {
      // Already closed.
    }
  }

  #send(type: ClientMessageType, payload: Record<string, unknown>): void {
    if (!this.#socket || this.#state !== "open") return;
    try {
      this.#socket.send(clientMessage(type, payload, newId(), this.#options.now()));
    } catch {
      // The close event follows.
    }
  }

  #setUnread(count: number): void {
    if (count === this.#unreadCount) return;
    this.#unreadCount = count;
    this.#events.emit("unreadCount", count);
  }

  #setSubscriptions(channels: string[]): void {
    this.#subscriptions = channels;
    this.#events.emit("subscriptions", channels);
  }
}

/** A UUID v4 for a message envelope. `crypto.randomUUID` needs a secure context in browsers; the
 * fallback is for plain-http pages (an id only needs to be unique, not secret). */
function newId(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  const hex = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16));
  hex[12] = "4";
  hex[16] = ((parseInt(hex[16] ?? "0", 16) & 0x3) | 0x8).toString(16);
  const s = hex.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}
