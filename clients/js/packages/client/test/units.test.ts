import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { backoffDelay, decideOnClose, parseServerMessage, safeHref, setText } from "../src/index.js";
import { IdMemory } from "../src/ids.js";

describe("backoffDelay", () => {
  it("stays within [0, min(max, initial * 2^attempt)) for any attempt", () => {
    const options = { initialMs: 500, maxMs: 30_000 };
    for (let attempt = 0; attempt < 100; attempt++) {
      const ceiling = Math.min(30_000, 500 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, options, () => 0), 0);
      const top = backoffDelay(attempt, options, () => 0.9999999);
      assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top}`);
    }
  });
});

describe("decideOnClose", () => {
  it("reads the reconnect hint of 1001 and caps it", () => {
    assert.deepEqual(decideOnClose(1001, "going away: reconnect in 250 ms"), { action: "reconnect-after", delayMs: 250 });
    assert.deepEqual(decideOnClose(1001, "lifetime reached: reconnect in 0 ms"), { action: "reconnect-after", delayMs: 0 });
    assert.deepEqual(decideOnClose(1001, "going away: reconnect in 86400000 ms"), { action: "reconnect-after", delayMs: 60_000 });
    assert.deepEqual(decideOnClose(1001, ""), { action: "backoff" });
  });
});

describe("parseServerMessage", () => {
  it("accepts the documented shapes only", () => {
    assert.equal(parseServerMessage('{"type":"pong","payload":{}}')?.type, "pong");
    assert.equal(parseServerMessage('{"type":"unread_count","payload":{"unreadCount":-1}}'), undefined);
    assert.equal(parseServerMessage('{"type":"unread_count","payload":{"unreadCount":1.5}}'), undefined);
    assert.equal(parseServerMessage('{"type":"toString","payload":{}}'), undefined);
    assert.equal(parseServerMessage('{"type":"pong","payload":[]}'), undefined);
    assert.equal(parseServerMessage("[1]"), undefined);
  });
});

describe("safeHref", () => {
  it("allows same-site paths and https only", () => {
    assert.equal(safeHref("/mocs/42"), "/mocs/42");
    assert.equal(safeHref("https://shop.example/x"), "https://shop.example/x");
    for (const bad of ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "http://a.example", "//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "mocs/42", ""]) {
      assert.equal(safeHref(bad), undefined, bad);
    }
    assert.equal(safeHref(undefined), undefined);
  });
});

describe("setText", () => {
  it("puts markup in as text", () => {
    const element = { textContent: null as string | null };
    setText(element, "<img src=x onerror=alert(1)>");
    assert.equal(element.textContent, "<img src=x onerror=alert(1)>");
  });
});

describe("IdMemory", () => {
  it("is bounded and forgets the oldest first", () => {
    const ids = new IdMemory(3);
    for (const id of ["a", "b", "c", "d"]) assert.ok(ids.remember(id));
    assert.equal(ids.size, 3);
    assert.equal(ids.remember("b"), false);
    assert.equal(ids.remember("a"), true, "a was the oldest");
    assert.throws(() => new IdMemory(0), RangeError);
  });
});
