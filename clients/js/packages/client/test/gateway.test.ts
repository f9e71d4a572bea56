// The SDK against a real gateway process: tokens, the WebSocket, acks, the unread count, the HTTP
// API, a drain and restart, and a revocation.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import WebSocket from "ws";

import { HeraldApi, HeraldApiError, HeraldClient, type Notification, type WebSocketConstructor } from "../src/index.js";
import type { GatewayProcess } from "@herald/testing";

import { publish, startGateway, userJwt } from "./gateway.js";

let gateway: GatewayProcess;

/** Every client a test made: closed at the end even when the test failed half-way, so that no
 * socket or timer keeps the test process alive. */
const clients: HeraldClient[] = [];

before(async () => {
  gateway = await startGateway();
});
after(async () => {
  for (const client of clients) client.close();
  await gateway?.dispose();
});

/** Resolves once `check` holds: now, or after any event of the client; rejects after 15 s. */
function when(client: HeraldClient, what: string, check: () => boolean): Promise<void> {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const stops: Array<() => void> = [];
    const done = (error?: Error) => {
      clearTimeout(timer);
      for (const stop of stops) stop();
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}`)), 15_000);
    const recheck = () => {
      if (check()) done();
    };
    for (const event of ["state", "connected", "notification", "unreadCount", "subscriptions", "error", "stopped"] as const) {
      stops.push(client.on(event, recheck));
    }
  });
}

let users = 0;
function session(options: { channels?: string[] } = {}) {
  const user = `sdk-user-${process.pid}-${++users}`;
  const api = new HeraldApi({ baseUrl: gateway.url, getJwt: () => userJwt(user) });
  const client = new HeraldClient({
    url: gateway.wsUrl,
    getToken: () => api.issueToken().then((t) => t.token),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: { initialMs: 100, maxMs: 1_000 },
    ...options,
  });
  clients.push(client);
  const received: Notification[] = [];
  client.on("notification", (n) => received.push(n));
  return { user, api, client, received };
}

const opened = (client: HeraldClient) => when(client, "open", () => client.state === "open");

describe("against a real gateway", () => {
  it("receives published notifications in order, acknowledges them, and follows the unread count", async () => {
    const { user, api, client, received } = session();
    client.connect();
    await opened(client);
    assert.equal(client.connection?.userId, user);
    const ids: string[] = [];
    // One at a time: each is received before the next is published, so `ids` is in `seq` order.
    for (const n of [1, 2, 3]) {
      ids.push(...(await publish(gateway, [user], { type: "new_like", title: `<b>Like ${n}</b>` })));
      await when(client, `notification ${n}`, () => received.length === n);
    }
    assert.deepEqual(received.map((n) => n.id), ids);
    assert.equal(received[0]?.title, "<b>Like 1</b>", "text arrives as sent, never interpreted");
    await when(client, "unread 3", () => client.unreadCount === 3);

    // Acknowledged: a new connection replays nothing.
    const page = await api.history({ limit: 2 });
    assert.deepEqual(page.items.map((i) => i.id), [ids[2], ids[1]], "newest first");
    assert.equal(page.unreadCount, 3);
    const next = await api.history({ cursor: page.nextCursor ?? "" });
    assert.deepEqual(next.items.map((i) => i.id), [ids[0]]);

    await api.markRead(ids[0] ?? "");
    await when(client, "unread 2", () => client.unreadCount === 2);
    assert.equal(await api.markAllRead(), 2);
    await when(client, "unread 0", () => client.unreadCount === 0);
    await api.delete(ids[1] ?? "");
    const error = await api.delete(ids[1] ?? "").catch((e: unknown) => e);
    assert.ok(error instanceof HeraldApiError);
    assert.equal(error.status, 404);
    assert.equal(error.code, "notification_not_found");

    const preferences = await api.updatePreferences({ types: { new_like: { inApp: false } } });
    assert.equal(preferences.types.new_like?.inApp, false);
    assert.equal((await api.preferences()).types.new_like?.inApp, false);
    const invalid = await api.updatePreferences({ types: { nope: { inApp: false } } } as never).catch((e: unknown) => e);
    assert.ok(invalid instanceof HeraldApiError && invalid.code === "validation_failed" && "types.nope" in invalid.fields);

    client.close();
    assert.equal(client.state, "idle");
  });

  it("comes back after a drain and restart, and replays what was published while it was offline, each once, in order", async () => {
    const { user, client, received } = session();
    client.connect();
    await opened(client);
    const first = await publish(gateway, [user], { type: "new_comment", title: "before" });
    await when(client, "the first", () => received.length === 1);

    const states: string[] = [];
    client.on("state", (s) => states.push(s));
    await gateway.stop("SIGTERM");
    await when(client, "reconnecting", () => states.includes("reconnecting"));
    await gateway.restart();
    await opened(client);
    const second = await publish(gateway, [user], { type: "new_comment", title: "after" });
    await when(client, "the second", () => received.length === 2);

    client.close();
    const offline = [
      ...(await publish(gateway, [user], { type: "new_comment", title: "offline 1" })),
      ...(await publish(gateway, [user], { type: "new_comment", title: "offline 2" })),
    ];
    client.connect();
    await when(client, "the replay", () => received.length === 4);
    assert.deepEqual(received.map((n) => n.id), [...first, ...second, ...offline], "each once, in order");
    client.close();
  });

  it("stops, without reconnecting, when the user's tokens are revoked", async () => {
    const { api, client } = session();
    client.connect();
    await opened(client);
    const reasons: string[] = [];
    client.on("stopped", (e) => reasons.push(e.message));
    await api.revokeTokens();
    await when(client, "stopped", () => reasons.length > 0);
    assert.match(reasons[0] ?? "", /revoked/);
    assert.equal(client.state, "stopped");
  });

  it("subscribes to the channels it is given, and a forbidden one is a typed error", async () => {
    const { client } = session({ channels: ["uploads"] });
    client.connect();
    await opened(client);
    await when(client, "subscribed to uploads", () => client.subscriptions.includes("uploads"));
    const errors: string[] = [];
    client.on("error", (e) => errors.push(e.code));
    client.subscribe(["no-such-channel"]);
    await when(client, "an error", () => errors.length > 0);
    assert.deepEqual(errors, ["unknown_channel"]);
    client.close();
  });
});
