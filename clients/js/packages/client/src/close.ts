// What to do when a connection ends, by close code (docs/protocol.md, "Close codes").

import { CloseCode, reconnectHint } from "./protocol.js";

export type CloseDecision =
  /** Reconnect after exactly this delay (the server said when), and start the backoff over. */
  | { action: "reconnect-after"; delayMs: number }
  /** Reconnect after the next backoff delay. */
  | { action: "backoff" }
  /** Do not reconnect: reconnecting would fail the same way (a client bug) or is not wanted. */
  | { action: "stop"; reason: string };

/** The longest server hint honoured; a larger one is capped (a hostile or broken server must not
 * park clients for hours). */
export const MAX_HINT_MS = 60_000;

export function decideOnClose(code: number, reason: string): CloseDecision {
  switch (code) {
    case CloseCode.GoingAway: {
      const hint = reconnectHint(reason);
      return hint === undefined ? { action: "backoff" } : { action: "reconnect-after", delayMs: Math.min(hint, MAX_HINT_MS) };
    }
    case CloseCode.MessageTooBig:
      return { action: "stop", reason: "a message was too big for the server (1009): fix the client" };
    case CloseCode.ProtocolViolations:
      return { action: "stop", reason: "too many invalid messages (4000): fix the client" };
    case CloseCode.ConnectionExpired:
      // After `DELETE /ws/token` the user's sessions are closed on purpose (log out everywhere).
      return reason.includes("tokens revoked")
        ? { action: "stop", reason: "the user's connection tokens were revoked (4004)" }
        : { action: "backoff" };
    default:
      // 1006 (no close frame), 1011, 4001 heartbeat, 4002 rate limited, 4003 slow consumer, ...
      return { action: "backoff" };
  }
}
