// A real herald-gateway process for the clients' tests: the binary the Rust build made
// (HERALD_GATEWAY_BIN, or CARGO_TARGET_DIR/debug/herald-gateway), on free loopback ports, with its own
// data directory, restartable on the same ports and data (a gateway that comes back).

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

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

export interface GatewayOptions {
  args?: string[];
  env?: Record<string, string>;
}

export class GatewayProcess {
  #child: ChildProcess | undefined;
  #output = "";
  readonly #dataDir = mkdtempSync(join(tmpdir(), "herald-client-tests-"));

  private constructor(
    readonly port: number,
    readonly internalPort: number,
    readonly options: GatewayOptions,
  ) {}

  static async start(options: GatewayOptions = {}): Promise<GatewayProcess> {
    const gateway = new GatewayProcess(await freePort(), await freePort(), options);
    await gateway.restart();
    return gateway;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get internalUrl(): string {
    return `http://127.0.0.1:${this.internalPort}`;
  }

  /** Starts the process (again, on the same ports and data) and waits until it answers (10 s). */
  async restart(): Promise<void> {
    const child = spawn(gatewayBinary(), this.options.args ?? [], {
      env: {
        ...process.env,
        HERALD_LISTEN: `127.0.0.1:${this.port}`,
        HERALD_INTERNAL_LISTEN: `127.0.0.1:${this.internalPort}`,
        HERALD_DATA_DIR: this.#dataDir,
        // A SIGTERM'd gateway waits this long for sessions to go, not 20 s.
        HERALD_SHUTDOWN_GRACE_SECONDS: "2",
        RUST_LOG: "warn",
        ...this.options.env,
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

  /** Sends `signal` (SIGTERM: a drain, clients are told to reconnect) and waits for the exit. */
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

  /** POSTs a publish body to `url`; returns the created notification ids. */
  async publishTo(url: string, body: unknown, headers: Record<string, string> = {}): Promise<string[]> {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    if (response.status !== 202) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
    const receipt = (await response.json()) as { created: Array<{ id: string }> };
    return receipt.created.map((c) => c.id);
  }
}
