// @herald/client: Herald's WebSocket notification client and HTTP API, without a framework.

export { HeraldClient } from "./client.js";
export type {
  ConnectionState,
  HeraldClientOptions,
  Timers,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { HeraldApi } from "./api.js";
export type {
  HeraldApiOptions,
  HistoryItem,
  HistoryPage,
  HistoryQuery,
  IssuedToken,
  Preferences,
  PreferencesPatch,
  Switches,
} from "./api.js";
export { HeraldApiError, HeraldServerError, HeraldStoppedError } from "./errors.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { decideOnClose, MAX_HINT_MS } from "./close.js";
export type { CloseDecision } from "./close.js";
export { CloseCode, NOTIFICATION_TYPES, SUBPROTOCOL, parseServerMessage } from "./protocol.js";
export type { ConnectedPayload, Notification, NotificationType, ServerErrorCode, ServerMessage } from "./protocol.js";
export { safeHref, setText } from "./text.js";
