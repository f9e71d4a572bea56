import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { HeraldApiError, HeraldClient, type HeraldClientOptions, type Notification } from "../src/index.js";
import { FakeClock, FakeSocket, notification, settle } from "./fakes.js";

let clock: FakeClock;
let tokens: number;

function client(options: Partial<HeraldClientOptions> = {}) {
  return new HeraldClient({
    url: "ws://gateway.test/ws",
    getToken: async () => `token-${++tokens}`,
    WebSocket: FakeSocket,
    timers: clock,
    now: () => clock.now,
    // The largest delay the backoff allows, so that bounds are visible.
    random: () => 0.999,
    ...options,
  });
}

async function connected(c: HeraldClient, overrides: Record<string, unknown> = {}) {
  c.connect();
  await settle();
  FakeSocket.last.connected(overrides);
  return FakeSocket.last;
}

beforeEach(() => {
  clock = new FakeClock();
  tokens = 0;
  FakeSocket.reset();
});

describe("connecting", () => {
  it("offers herald.v1 and a fresh token in the subprotocol on every connect", async () => {
    const c = client();
    const first = await connected(c);
    assert.deepEqual(first.protocols, ["herald.v1", "token.token-1"]);
    assert.equal(first.url, "ws://gateway.test/ws");
    assert.equal(c.state, "open");
    first.end(1011);
    await clock.advance(30_000);
    assert.equal(FakeSocket.all.length, 2);
    assert.deepEqual(FakeSocket.last.protocols, ["herald.v1", "token.token-2"], "tokens are single use");
  });

  it("reports its states in order", async () => {
    const c = client();
    const states: string[] = [];
    c.on("state", (s) => states.push(s));
    const socket = await connected(c);
    socket.end(1006);
    await clock.advance(1_000);
    FakeSocket.last.connected();
    c.close();
    assert.deepEqual(states, ["connecting", "open", "reconnecting", "open", "idle"]);
  });

  it("stops when the token endpoint refuses the user, and backs off when it is unreachable", async () => {
    const refused = client({
      getToken: async () => {
        throw new HeraldApiError(401, "jwt_expired", "expired");
      },
    });
    const stopped: string[] = [];
    refused.on("stopped", (e) => stopped.push(e.message));
    refused.connect();
    await settle();
    assert.equal(refused.state, "stopped");
    assert.match(stopped[0] ?? "", /jwt_expired/);
    assert.equal(FakeSocket.all.length, 0);

    let calls = 0;
    const unreachable = client({
      getToken: async () => {
        calls += 1;
        if (calls < 3) throw new TypeError("fetch failed");
        return "late-token";
      },
    });
    unreachable.connect();
    await clock.advance(60_000);
    assert.equal(calls, 3);
    assert.deepEqual(FakeSocket.last.protocols, ["herald.v1", "token.late-token"]);
  });
});

describe("reconnecting", () => {
  it("backs off exponentially with full jitter, bounded, and starts over after a stable connection", async () => {
    const c = client({ backoff: { initialMs: 100, maxMs: 1_000 }, stableAfterMs: 5_000 });
    const socket = await connected(c);
    const delays: number[] = [];
    let ended = socket;
    for (let attempt = 0; attempt < 6; attempt++) {
      ended.end(1006);
      const before = FakeSocket.all.length;
      const start = clock.now;
      while (FakeSocket.all.length === before) await clock.advance(1);
      delays.push(clock.now - start);
      ended = FakeSocket.last;
    }
    // random() = 0.999: just under each ceiling 100, 200, 400, 800, then the cap 1000.
    assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
    // Open long enough to count as stable: the next delay is the first one again.
    ended.connected();
    await clock.advance(5_000);
    ended.end(1006);
    const start = clock.now;
    const before = FakeSocket.all.length;
    while (FakeSocket.all.length === before) await clock.advance(1);
    assert.equal(clock.now - start, 99);
  });

  it("honours the going-away hint exactly, capped at a minute", async () => {
    const c = client();
    const socket = await connected(c);
    socket.end(1001, "going away: reconnect in 4321 ms");
    await clock.advance(4_320);
    assert.equal(FakeSocket.all.length, 1, "not before the hint");
    await clock.advance(1);
    assert.equal(FakeSocket.all.length, 2);
    FakeSocket.last.connected();
    FakeSocket.last.end(1001, "going away: reconnect in 9999999 ms");
    await clock.advance(60_000);
    assert.equal(FakeSocket.all.length, 3, "a hostile hint is capped");
  });

  for (const [code, reason] of [
    [4000, "protocol violations"],
    [1009, ""],
    [4004, "tokens revoked"],
  ] as const) {
    it(`does not reconnect after ${code} ${reason}`.trim(), async () => {
      const c = client();
      const stopped: Error[] = [];
      c.on("stopped", (e) => stopped.push(e));
      const socket = await connected(c);
      socket.end(code, reason);
      await clock.advance(10 * 60_000);
      assert.equal(FakeSocket.all.length, 1);
      assert.equal(c.state, "stopped");
      assert.equal(stopped.length, 1);
    });
  }

  for (const code of [4001, 4002, 4003, 4004, 1011, 1006]) {
    it(`reconnects with backoff after ${code}`, async () => {
      const c = client({ backoff: { initialMs: 1_000, maxMs: 1_000 } });
      const socket = await connected(c);
      socket.end(code, code === 4004 ? "connection expired" : "");
      await clock.advance(998);
      assert.equal(FakeSocket.all.length, 1);
      await clock.advance(1);
      assert.equal(FakeSocket.all.length, 2);
    });
  }

  it("gives up on a connection that stays silent past the heartbeat timeout", async () => {
    const c = client();
    const socket = await connected(c, { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 3_000 });
    // The server answers pings for a while...
    for (let i = 0; i < 5; i++) {
      await clock.advance(1_000);
      socket.deliver("pong", {});
    }
    assert.equal(socket.sentOf("ping").length, 5, "a ping every heartbeatIntervalMs");
    assert.equal(socket.closedByClient, undefined);
    // ...then nothing arrives any more (a half-open TCP connection).
    await clock.advance(3_000);
    assert.ok(socket.closedByClient, "the dead socket is closed");
    assert.equal(c.state, "reconnecting");
  });

  it("after close(), nothing runs: no pings, no reconnects, no timers", async () => {
    const c = client();
    const socket = await connected(c);
    c.close();
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: "client closed" });
    socket.end(1006);
    await clock.advance(10 * 60_000);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(socket.sentOf("ping").length, 0);
    assert.equal(clock.pending, 0);
  });
});

describe("notifications", () => {
  it("acknowledges every delivery and emits each notification once, across reconnects", async () => {
    const c = client();
    const seen: Notification[] = [];
    c.on("notification", (n) => seen.push(n));
    const socket = await connected(c);
    socket.deliver("notification", notification("n1"));
    socket.deliver("notification", notification("n2"));
    socket.deliver("notification", notification("n1"));
    assert.deepEqual(
      socket.sentOf("notification:ack").map((m) => m.payload.notificationId),
      ["n1", "n2", "n1"],
      "a re-send is acknowledged again",
    );
    socket.end(1006);
    await clock.advance(1_000);
    FakeSocket.last.connected();
    FakeSocket.last.deliver("notification", notification("n2"));
    FakeSocket.last.deliver("notification", notification("n3"));
    assert.deepEqual(
      seen.map((n) => n.id),
      ["n1", "n2", "n3"],
    );
    assert.equal(FakeSocket.last.sentOf("notification:ack").length, 2);
  });

  it("forgets the oldest ids past its bound", async () => {
    const c = client({ rememberedIds: 2 });
    const seen: string[] = [];
    c.on("notification", (n) => seen.push(n.id));
    const socket = await connected(c);
    for (const id of ["a", "b", "c", "a"]) socket.deliver("notification", notification(id));
    assert.deepEqual(seen, ["a", "b", "c", "a"], "a was forgotten when c arrived");
  });

  it("drops frames that do not have the documented shape", async () => {
    const c = client();
    const seen: string[] = [];
    c.on("notification", (n) => seen.push(n.id));
    const socket = await connected(c);
    socket.deliver("notification", { id: "x", title: "no type" });
    socket.deliver("notification", notification("y", { type: "not_a_type" }));
    socket.onmessage?.({ data: "not json" });
    socket.deliver("__proto__", {});
    assert.deepEqual(seen, []);
    assert.equal(socket.sentOf("notification:ack").length, 0);
  });

  it("keeps the unread count the server sends", async () => {
    const c = client();
    const counts: number[] = [];
    c.on("unreadCount", (n) => counts.push(n));
    const socket = await connected(c, { unreadCount: 4 });
    socket.deliver("unread_count", { unreadCount: 5 });
    socket.deliver("unread_count", { unreadCount: 0 });
    assert.deepEqual(counts, [4, 5, 0]);
    assert.equal(c.unreadCount, 0);
  });

  it("surfaces server errors as typed errors", async () => {
    const c = client();
    const errors: Array<{ code: string; message: string }> = [];
    c.on("error", (e) => errors.push({ code: e.code, message: e.message }));
    const socket = await connected(c);
    socket.deliver("error", { code: "forbidden_channel", message: "admin only" });
    assert.deepEqual(errors, [{ code: "forbidden_channel", message: "admin only" }]);
    assert.equal(c.state, "open");
  });
});

describe("subscriptions", () => {
  it("subscribes to what the server lacks on every connect, within the allowed channels", async () => {
    const c = client({ channels: ["social", "system", "admin"] });
    const socket = await connected(c);
    assert.deepEqual(socket.sentOf("subscribe").map((m) => m.payload.channels), [["social"]]);
    socket.end(1006);
    await clock.advance(1_000);
    FakeSocket.last.connected({ subscriptions: ["system", "social"] });
    assert.equal(FakeSocket.last.sentOf("subscribe").length, 0, "nothing missing");
  });

  it("queues subscription changes made while offline and sends them once connected", async () => {
    const c = client();
    c.subscribe(["uploads"]);
    c.unsubscribe(["system"]);
    c.subscribe(["social"]);
    const socket = await connected(c, { subscriptions: ["system"] });
    assert.deepEqual(socket.sentOf("unsubscribe").map((m) => m.payload.channels), [["system"]]);
    assert.deepEqual(socket.sentOf("subscribe").map((m) => m.payload.channels), [["uploads", "social"]]);
    // Online, changes go out at once.
    c.subscribe(["social"]);
    assert.equal(socket.sentOf("subscribe").length, 1, "already wanted");
    socket.deliver("subscribed", { channels: ["uploads", "social"] });
    assert.deepEqual([...c.subscriptions].sort(), ["social", "system", "uploads"]);
    socket.deliver("unsubscribed", { channels: ["system"] });
    assert.deepEqual([...c.subscriptions].sort(), ["social", "uploads"]);
  });
});
