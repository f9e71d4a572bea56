import assert from "node:assert/strict";
import { describe, it } from "node:test";

import type { HistoryItem, HistoryPage, Notification } from "@herald/client";

import { EMPTY_LIST, hasMore, moreFrom, withLive, withPage, withRead, without } from "../src/list.js";

const notification = (seq: number): Notification => ({
  id: `n${seq}`,
  type: "new_like",
  title: `Like ${seq}`,
  createdAt: seq,
  channel: "social",
  seq,
});
const item = (seq: number, readAt: number | null = null): HistoryItem => ({ ...notification(seq), readAt });
const page = (seqs: number[], nextCursor: string | null): HistoryPage => ({
  items: seqs.map((s) => item(s)),
  nextCursor,
  unreadCount: 0,
});
const seqs = (state: { items: HistoryItem[] }) => state.items.map((i) => i.seq);

describe("the notification list", () => {
  it("merges pages and live notifications: one entry per id, newest first", () => {
    let state = withLive(EMPTY_LIST, notification(1), 10);
    state = withLive(state, notification(2), 10);
    // The first page arrives after the replay of 1 and 2 (older than the page): both stay.
    state = withPage(state, page([5, 4, 3], "c1"), true);
    assert.deepEqual(seqs(state), [5, 4, 3, 2, 1]);
    state = withLive(state, notification(5), 10);
    assert.deepEqual(seqs(state), [5, 4, 3, 2, 1], "a repeat is not added twice");
    assert.equal(moreFrom(state), "c1");
    state = withPage(state, page([2, 1, 0], null), false);
    assert.deepEqual(seqs(state), [5, 4, 3, 2, 1, 0]);
    assert.equal(hasMore(state), false);
  });

  it("keeps the server's read state of an item the first page lists again", () => {
    let state = withLive(EMPTY_LIST, notification(3), 10);
    state = withPage(state, { items: [item(3, 99)], nextCursor: null, unreadCount: 0 }, true);
    assert.equal(state.items[0]?.readAt, 99);
  });

  it("is bounded: past maxItems the oldest go, and load more starts the history over", () => {
    let state = withPage(EMPTY_LIST, page([3, 2, 1], null), true);
    assert.equal(hasMore(state), false);
    for (const seq of [4, 5]) state = withLive(state, notification(seq), 3);
    assert.deepEqual(seqs(state), [5, 4, 3]);
    assert.equal(state.trimmed, true);
    assert.equal(hasMore(state), true, "what was dropped can be loaded again");
    assert.equal(moreFrom(state), undefined, "from the first page");
    state = withPage(state, page([5, 4, 3], "c2"), true);
    assert.equal(state.trimmed, false);
    state = withPage(state, page([2, 1], null), false);
    assert.deepEqual(seqs(state), [5, 4, 3, 2, 1]);
  });

  it("marks read and removes", () => {
    let state = withPage(EMPTY_LIST, page([3, 2, 1], null), true);
    state = withRead(state, "n2", 7);
    assert.deepEqual(state.items.map((i) => i.readAt), [null, 7, null]);
    state = withRead(state, undefined, 8);
    assert.deepEqual(state.items.map((i) => i.readAt), [8, 7, 8], "read ones keep their time");
    assert.deepEqual(seqs(without(state, "n3")), [2, 1]);
  });
});
