// Test doubles: a clock whose timers run only when the test advances it, and a WebSocket whose server
// side the test plays.

import type { Timers, WebSocketLike } from "../src/client.js";

/** Lets pending promise callbacks (the client's `await getToken()`) run. */
export const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

export class FakeClock implements Timers {
  now = 0;
  #next = 1;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, running every timer due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      await settle();
      let due: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (!due || entry[1].at < due[1].at)) due = entry;
      }
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].callback();
    }
    this.now = end;
    await settle();
  }
}

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readonly sent: Array<{ type: string; payload: Record<string, unknown> }> = [];
  closedByClient: { code?: number; reason?: string } | undefined;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeSocket.all.push(this);
  }

  static reset(): void {
    FakeSocket.all = [];
  }

  static get last(): FakeSocket {
    const socket = FakeSocket.all[FakeSocket.all.length - 1];
    if (!socket) throw new Error("no socket was opened");
    return socket;
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { ...(code === undefined ? {} : { code }), ...(reason === undefined ? {} : { reason }) };
  }

  /** The server sends a message. */
  deliver(type: string, payload: unknown): void {
    this.onmessage?.({ data: JSON.stringify({ id: "00000000-0000-4000-8000-000000000000", type, timestamp: 0, payload }) });
  }

  connected(overrides: Record<string, unknown> = {}): void {
    this.deliver("connected", {
      connectionId: "c1",
      userId: "alice",
      heartbeatIntervalMs: 30_000,
      heartbeatTimeoutMs: 90_000,
      unreadCount: 0,
      subscriptions: ["system"],
      allowedChannels: ["system", "social", "uploads"],
      ...overrides,
    });
  }

  /** The server (or the network) ends the connection. */
  end(code: number, reason = ""): void {
    this.onclose?.({ code, reason });
  }

  sentOf(type: string) {
    return this.sent.filter((m) => m.type === type);
  }
}

let seq = 0;
export function notification(id: string, overrides: Record<string, unknown> = {}) {
  seq += 1;
  return { id, type: "new_like", title: `Liked ${id}`, createdAt: 1, channel: "social", seq, ...overrides };
}
