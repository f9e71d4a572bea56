// Typed errors: what the server said (`error` messages, HTTP refusals) and why the client stopped.

import type { ServerErrorCode } from "./protocol.js";

/** An `error` message from the server: the connection stays open. */
export class HeraldServerError extends Error {
  override readonly name = "HeraldServerError";
  constructor(
    readonly code: ServerErrorCode | (string & {}),
    message: string,
  ) {
    super(message);
  }
}

/** An HTTP refusal from the gateway: `{"error": {"code", "message", "fields"?}}`. */
export class HeraldApiError extends Error {
  override readonly name = "HeraldApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Of a `validation_failed`: each field path and what is wrong with it. */
    readonly fields: Record<string, string> = {},
    /** From `Retry-After`, when the server sent one. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** The client stopped reconnecting (a close code that says retrying cannot help, or an
 * authentication failure while fetching a token). */
export class HeraldStoppedError extends Error {
  override readonly name = "HeraldStoppedError";
}
