// The plan's browser tests (section 8, "Real-time Notifications": toast, badge count, notification
// center, connection loss and reconnection) and issue 11's additions, in Debian's Chromium against a
// real dev-mode gateway serving the demo.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import type { Browser, Page } from "playwright-core";

import {
  type DevGateway,
  Proxy,
  launchBrowser,
  notificationFrames,
  recordNotificationFrames,
  screenshotPath,
  startDevGateway,
} from "./harness.js";

let gateway: DevGateway;
let browser: Browser;

before(async () => {
  gateway = await startDevGateway();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gateway?.dispose();
});

let users = 0;
const newUser = () => `e2e-${process.pid}-${++users}`;

interface Demo {
  page: Page;
  /** WebSockets the page opened. */
  sockets: () => number;
}

async function openDemo(user: string, base = gateway.url, page?: Page): Promise<Demo> {
  const tab = page ?? (await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage());
  let sockets = 0;
  tab.on("websocket", () => (sockets += 1));
  await tab.goto(`${base}/?user=${encodeURIComponent(user)}`);
  await connected(tab);
  return { page: tab, sockets: () => sockets };
}

const connected = (page: Page) => page.locator('.herald-status[data-state="open"]').waitFor({ timeout: 15_000 });
const bell = (page: Page) => page.getByRole("button", { name: /^Notifications, \d+ unread$/ });
const toast = (page: Page, title: string) =>
  page.getByRole("region", { name: "New notifications" }).getByRole("status").filter({ hasText: title });
const items = (page: Page) => page.getByRole("region", { name: "Notifications", exact: true }).locator(".herald-item");

async function unreadIs(page: Page, count: number): Promise<void> {
  await page.getByRole("button", { name: `Notifications, ${count} unread` }).waitFor({ timeout: 15_000 });
}

describe("the demo in Chromium", () => {
  it("shows a toast for a new notification, its title as text, never as HTML", async () => {
    const user = newUser();
    const { page } = await openDemo(user);
    const title = `<img src=x onerror="window.__injected=1">Upload ready ${user}`;
    await gateway.publish(user, { type: "upload_complete", title, body: "instructions.pdf" });
    await toast(page, title).waitFor();
    assert.equal(await toast(page, title).locator("strong").textContent(), title);
    assert.equal(await page.evaluate(() => (window as unknown as { __injected?: number }).__injected), undefined);
    assert.equal(await page.locator(".herald-toast img").count(), 0, "no element was made from the title");
    await page.screenshot({ path: screenshotPath("demo-toast") });
    await page.context().close();
  });

  it("counts unread notifications on the bell", async () => {
    const user = newUser();
    const { page } = await openDemo(user);
    await unreadIs(page, 0);
    assert.equal(await page.getByTestId("unread-badge").count(), 0);
    // One at a time, so that the bell is seen at every step.
    for (const n of [1, 2, 3]) {
      await gateway.publish(user, { type: "new_like", title: `Like ${n}` });
      await unreadIs(page, n);
    }
    assert.equal(await page.getByTestId("unread-badge").textContent(), "3");
    await page.getByRole("button", { name: "Mark read: Like 2" }).click();
    await unreadIs(page, 2);
    await page.context().close();
  });

  it("lists notifications in the center: load more, mark all read, delete", async () => {
    const user = newUser();
    for (let n = 1; n <= 12; n++) await gateway.publish(user, { type: "new_comment", title: `Comment ${n}` });
    const { page } = await openDemo(user);
    await unreadIs(page, 12);
    // The replay and the first history page: all twelve, newest first.
    await page.waitForFunction(() => document.querySelectorAll(".herald-item").length === 12);
    assert.equal(await items(page).first().locator(".herald-item-title").textContent(), "Comment 12");
    await page.screenshot({ path: screenshotPath("demo-center") });

    await page.getByRole("button", { name: "Mark all read" }).click();
    await unreadIs(page, 0);
    await page.waitForFunction(() => document.querySelectorAll(".herald-item.unread").length === 0);
    await page.getByRole("button", { name: "Delete: Comment 12" }).click();
    await page.waitForFunction(() => document.querySelectorAll(".herald-item").length === 11);

    // A fresh page reads the history: ten, then the last one with "Load more".
    await page.reload();
    await connected(page);
    await page.waitForFunction(() => document.querySelectorAll(".herald-item").length === 10);
    await page.getByRole("button", { name: "Load more" }).click();
    await page.waitForFunction(() => document.querySelectorAll(".herald-item").length === 11);
    assert.equal(await page.getByRole("button", { name: "Load more" }).count(), 0, "no more pages");
    assert.equal(await items(page).last().locator(".herald-item-title").textContent(), "Comment 1");
    await page.context().close();
  });

  it("works from the keyboard alone: the bell opens and closes the center, its buttons act", async () => {
    const user = newUser();
    await gateway.publish(user, { type: "new_like", title: "Keyboard like" });
    const { page } = await openDemo(user);
    await unreadIs(page, 1);
    // From the top of the page, Tab reaches the bell before anything else.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Notifications, 1 unread");
    assert.equal(await bell(page).getAttribute("aria-expanded"), "true");
    await page.keyboard.press("Enter");
    assert.equal(await bell(page).getAttribute("aria-expanded"), "false");
    assert.equal(await page.getByRole("region", { name: "Notifications", exact: true }).count(), 0);
    await page.keyboard.press("Enter");
    await page.getByRole("region", { name: "Notifications", exact: true }).waitFor();
    // Onwards to "Mark all read", then Space presses it.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Mark all read");
    await page.keyboard.press("Space");
    await unreadIs(page, 0);
    await page.context().close();
  });

  it("reconnects after the gateway restarts, and after its connection is killed", async () => {
    const user = newUser();
    const proxy = await Proxy.start(gateway.port);
    try {
      const { page } = await openDemo(user, proxy.url);
      await gateway.stop("SIGTERM");
      await page.locator('.herald-status[data-state="reconnecting"]').waitFor();
      await page.screenshot({ path: screenshotPath("demo-reconnecting") });
      await gateway.restart();
      await connected(page);
      await gateway.publish(user, { type: "system_announcement", title: "After the restart" });
      await toast(page, "After the restart").waitFor();

      assert.ok(proxy.cut() > 0, "the page's connection went through the proxy");
      await page.locator('.herald-status[data-state="reconnecting"]').waitFor();
      await connected(page);
      await gateway.publish(user, { type: "system_announcement", title: "After the cut" });
      await toast(page, "After the cut").waitFor();
      await page.context().close();
    } finally {
      await proxy.close();
    }
  });

  it("stops toasts of a type the user turns off in the preferences panel", async () => {
    const user = newUser();
    const { page } = await openDemo(user);
    const newLikes = page.getByRole("form", { name: "Notification preferences" }).getByRole("checkbox", { name: "New like" });
    await newLikes.waitFor();
    const saved = page.waitForResponse((r) => r.url().endsWith("/notifications/preferences") && r.request().method() === "PATCH");
    await newLikes.uncheck();
    assert.equal((await saved).status(), 200);
    await page.screenshot({ path: screenshotPath("demo-preferences") });
    const form = page.getByRole("form", { name: "Send a test notification" });
    await form.getByLabel("Type").selectOption("new_like");
    await form.getByLabel("Title").fill("A like you turned off");
    await form.getByRole("button", { name: "Send" }).click();
    await form.getByText("Not delivered: type disabled").waitFor();
    await form.getByLabel("Type").selectOption("new_comment");
    await form.getByLabel("Title").fill("A comment you still get");
    await form.getByRole("button", { name: "Send" }).click();
    await toast(page, "A comment you still get").waitFor();
    assert.equal(await toast(page, "A like you turned off").count(), 0);
    await page.context().close();
  });

  it("updates two tabs of one user, each over one WebSocket", async () => {
    const user = newUser();
    const context = await browser.newContext();
    const first = await openDemo(user, gateway.url, await context.newPage());
    const second = await openDemo(user, gateway.url, await context.newPage());
    await gateway.publish(user, { type: "moc_featured", title: "Featured in both tabs" });
    for (const { page } of [first, second]) {
      await toast(page, "Featured in both tabs").waitFor();
      await unreadIs(page, 1);
    }
    // StrictMode mounts twice and several components share the client: still one socket a tab.
    assert.equal(first.sockets(), 1);
    assert.equal(second.sockets(), 1);
    await context.close();
  });

  it("delivers 200 notifications that waited for an offline user, all, in order, once the page opens", async () => {
    const user = newUser();
    const published: string[] = [];
    for (let n = 1; n <= 200; n++) published.push(await gateway.publish(user, { type: "new_follower", title: `Follower ${n}` }));
    const page = await (await browser.newContext()).newPage();
    await recordNotificationFrames(page);
    await openDemo(user, gateway.url, page);
    await unreadIs(page, 200);
    const frames = await notificationFrames(page, 200);
    await page.waitForFunction(() => document.querySelectorAll(".herald-item").length === 200);
    const delivered = frames.map((f) => f.id);
    assert.deepEqual(delivered, published, "each once, in publish order");
    const seqs = frames.map((f) => f.seq);
    assert.ok(seqs.every((seq, i) => i === 0 || seq === (seqs[i - 1] ?? 0) + 1), "seq increases by one");
    await page.context().close();
  });
});
