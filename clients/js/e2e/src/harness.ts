// What every browser test needs: a dev-mode gateway process (restartable on the same ports and
// data), a TCP proxy in front of it that a test can cut (a killed connection), and Chromium.

import { existsSync, mkdirSync } from "node:fs";
import { type Server, type Socket, createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { GatewayProcess } from "@herald/testing";
import { type Browser, type Page, chromium } from "playwright-core";

const CHROMIUM = process.env.HERALD_CHROMIUM ?? "/usr/bin/chromium";

/** A dev-mode gateway (`--dev`: the demo at /, /dev/jwt, /dev/publish). */
export async function startDevGateway(): Promise<DevGateway> {
  const gateway = await GatewayProcess.start({
    args: ["--dev"],
    // Browser tests connect often from one address.
    env: { HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP: "1000", WEBSOCKET_MAX_TOKENS_PER_MINUTE: "1000" },
  });
  return Object.assign(gateway, {
    /** Publishes one notification to `user` through the dev publisher; returns its id. */
    async publish(user: string, notification: Record<string, unknown>): Promise<string> {
      const [id] = await gateway.publishTo(`${gateway.url}/dev/publish`, { userIds: [user], notification });
      if (!id) throw new Error("nothing was created");
      return id;
    },
  });
}

export type DevGateway = GatewayProcess & { publish(user: string, notification: Record<string, unknown>): Promise<string> };

/** A loopback TCP proxy to `target`; `cut()` resets every connection through it (what a dropped
 * network or a killed connection looks like to the browser), new ones still pass. */
export class Proxy {
  private constructor(
    readonly server: Server,
    readonly port: number,
    readonly sockets: Set<Socket>,
  ) {}

  static async start(targetPort: number): Promise<Proxy> {
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect(targetPort, "127.0.0.1");
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        from.pipe(to);
        from.on("error", () => to.destroy());
        from.on("close", () => to.destroy());
        sockets.add(from);
        from.on("close", () => sockets.delete(from));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    return new Proxy(server, typeof address === "object" && address ? address.port : 0, sockets);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Resets every open connection; returns how many there were. */
  cut(): number {
    const count = this.sockets.size;
    for (const socket of this.sockets) socket.resetAndDestroy();
    return count;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Where screenshots go: HERALD_SCREENSHOTS_DIR (docs/screenshots when refreshing them), else a
 * temporary directory, so that a test run never changes the clone. */
export function screenshotPath(name: string): string {
  const dir = process.env.HERALD_SCREENSHOTS_DIR ?? join(tmpdir(), "herald-screenshots");
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}.png`);
}

/** Records, in the page, the server's `notification` frames on its WebSockets in order of arrival
 * (`window.__heraldFrames`), from before the page's own scripts run. */
export async function recordNotificationFrames(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const frames: unknown[] = [];
    (window as unknown as { __heraldFrames: unknown[] }).__heraldFrames = frames;
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        this.addEventListener("message", (event) => {
          const message = JSON.parse(String(event.data)) as { type: string; payload: unknown };
          if (message.type === "notification") frames.push(message.payload);
        });
      }
    };
  });
}

/** The frames recorded so far, once there are at least `count`. */
export async function notificationFrames(page: Page, count: number): Promise<Array<{ id: string; seq: number }>> {
  await page.waitForFunction(
    (n) => (window as unknown as { __heraldFrames: unknown[] }).__heraldFrames.length >= n,
    count,
    { timeout: 30_000 },
  );
  return page.evaluate(() => (window as unknown as { __heraldFrames: Array<{ id: string; seq: number }> }).__heraldFrames);
}
