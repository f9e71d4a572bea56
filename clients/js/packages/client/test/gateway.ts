// A real herald-gateway process for the integration tests: the binary the Rust build made
// (HERALD_GATEWAY_BIN, or CARGO_TARGET_DIR/debug/herald-gateway), on free loopback ports, with its
// own data directory, configured as production is (HS256 user JWTs with issuer and audience).

import { type ChildProcess, spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

export const JWT_SECRET = `client-tests-jwt-${randomBytes(16).toString("hex")}`;
const TOKEN_SECRET = `client-tests-token-${randomBytes(16).toString("hex")}`;
export const PUBLISHER_KEY = `client-tests-publisher-${randomBytes(16).toString("hex")}`;
const ISSUER = "https://issuer.herald.test/";
const AUDIENCE = "herald-client-tests";

export function gatewayBinary(): string {
  const binary =
    process.env.HERALD_GATEWAY_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/herald/target"), "debug/herald-gateway");
  if (!existsSync(binary)) {
    throw new Error(`no gateway binary at ${binary}: build it (cargo build -p herald-gateway) or set HERALD_GATEWAY_BIN`);
  }
  return binary;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** An HS256 user JWT the gateway accepts, valid for `seconds`. */
export function userJwt(sub: string, seconds = 600): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, iat: now, exp: now + seconds, iss: ISSUER, aud: AUDIENCE })}`;
  return `${unsigned}.${createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url")}`;
}

export class Gateway {
  #child: ChildProcess | undefined;
  readonly #dataDir = mkdtempSync(join(tmpdir(), "herald-client-tests-"));
  #output = "";

  private constructor(
    readonly publicPort: number,
    readonly internalPort: number,
  ) {}

  static async start(): Promise<Gateway> {
    const gateway = new Gateway(await freePort(), await freePort());
    await gateway.restart();
    return gateway;
  }

  get url(): string {
    return `http://127.0.0.1:${this.publicPort}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.publicPort}/ws`;
  }

  get internalUrl(): string {
    return `http://127.0.0.1:${this.internalPort}`;
  }

  /** Starts the process (again, on the same ports and data) and waits until it answers. */
  async restart(): Promise<void> {
    const child = spawn(gatewayBinary(), [], {
      env: {
        ...process.env,
        HERALD_LISTEN: `127.0.0.1:${this.publicPort}`,
        HERALD_INTERNAL_LISTEN: `127.0.0.1:${this.internalPort}`,
        HERALD_DATA_DIR: this.#dataDir,
        HERALD_JWT_HS256_SECRET: JWT_SECRET,
        HERALD_JWT_ISSUER: ISSUER,
        HERALD_JWT_AUDIENCE: AUDIENCE,
        WEBSOCKET_TOKEN_SECRET: TOKEN_SECRET,
        HERALD_PUBLISHER_KEYS: `tests=${PUBLISHER_KEY}`,
        // A SIGTERM'd gateway waits this long for sessions to go, not 20 s.
        HERALD_SHUTDOWN_GRACE_SECONDS: "2",
        RUST_LOG: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child = child;
    child.stdout?.on("data", (chunk) => (this.#output += chunk));
    child.stderr?.on("data", (chunk) => (this.#output += chunk));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`the gateway exited: ${this.#output}`);
      try {
        if ((await fetch(`${this.url}/healthz`)).ok) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`the gateway did not answer within 10 s: ${this.#output}`);
  }

  /** SIGTERM (a drain: clients are told to reconnect) and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  async dispose(): Promise<void> {
    await this.stop("SIGKILL");
    rmSync(this.#dataDir, { recursive: true, force: true });
  }

  /** Publishes one notification to `userIds`; returns the created ids. */
  async publish(userIds: string[], notification: Record<string, unknown>): Promise<string[]> {
    const response = await fetch(`${this.internalUrl}/api/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${PUBLISHER_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ userIds, notification }),
    });
    if (response.status !== 202) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
    const receipt = (await response.json()) as { created: Array<{ id: string }> };
    return receipt.created.map((c) => c.id);
  }
}
