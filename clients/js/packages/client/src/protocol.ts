// The gateway's WebSocket protocol (docs/protocol.md, "WebSocket messages" and "Close codes"), typed.
// Everything the server sends is parsed defensively: a frame that does not have the documented shape
// is dropped, never trusted.

/** The subprotocol the client offers and the server selects. */
export const SUBPROTOCOL = "herald.v1";
/** Prefix of the subprotocol entry that carries the connection token (keeps it out of URLs). */
export const TOKEN_PROTOCOL_PREFIX = "token.";

/** The plan's 14 notification types. */
export const NOTIFICATION_TYPES = [
  "upload_started",
  "upload_complete",
  "upload_failed",
  "processing_complete",
  "processing_failed",
  "new_follower",
  "new_like",
  "new_comment",
  "moc_published",
  "moc_featured",
  "quota_warning",
  "quota_exceeded",
  "system_announcement",
  "maintenance_scheduled",
] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

/** A notification as delivered (and as listed by the history, which adds `readAt`). Its text is
 * plain text: show it as text, never as HTML. `data` is whatever the publisher sent: untrusted. */
export interface Notification {
  id: string;
  type: NotificationType;
  title: string;
  body?: string;
  icon?: string;
  actionUrl?: string;
  data?: Record<string, unknown>;
  createdAt: number;
  expiresAt?: number;
  channel: string;
  /** Per user, increasing by one per notification. */
  seq: number;
}

export interface ConnectedPayload {
  connectionId: string;
  userId: string;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  unreadCount: number;
  subscriptions: string[];
  allowedChannels: string[];
}

/** Codes of the server's `error` messages. */
export type ServerErrorCode =
  | "invalid_json"
  | "invalid_message"
  | "unknown_type"
  | "invalid_payload"
  | "unsupported_frame"
  | "unknown_channel"
  | "forbidden_channel"
  | "rate_limited"
  | "notification_not_found";

export type ServerMessage =
  | { type: "connected"; payload: ConnectedPayload }
  | { type: "notification"; payload: Notification }
  | { type: "subscribed"; payload: { channels: string[] } }
  | { type: "unsubscribed"; payload: { channels: string[] } }
  | { type: "unread_count"; payload: { unreadCount: number } }
  | { type: "pong"; payload: Record<string, never> }
  | { type: "error"; payload: { code: ServerErrorCode | (string & {}); message: string } };

export type ClientMessageType = "ping" | "subscribe" | "unsubscribe" | "notification:ack";

/** Close codes of docs/protocol.md. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  Abnormal: 1006,
  MessageTooBig: 1009,
  InternalError: 1011,
  ProtocolViolations: 4000,
  HeartbeatTimeout: 4001,
  RateLimited: 4002,
  SlowConsumer: 4003,
  ConnectionExpired: 4004,
} as const;

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isString = (v: unknown): v is string => typeof v === "string";
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v);

function isNotification(p: Json): boolean {
  return (
    isString(p.id) &&
    isString(p.type) &&
    (NOTIFICATION_TYPES as readonly string[]).includes(p.type) &&
    isString(p.title) &&
    optional(p.body, isString) &&
    optional(p.icon, isString) &&
    optional(p.actionUrl, isString) &&
    optional(p.data, isObject) &&
    isCount(p.createdAt) &&
    optional(p.expiresAt, isCount) &&
    isString(p.channel) &&
    isCount(p.seq)
  );
}

function isConnected(p: Json): boolean {
  return (
    isString(p.connectionId) &&
    isString(p.userId) &&
    isCount(p.heartbeatIntervalMs) &&
    isCount(p.heartbeatTimeoutMs) &&
    isCount(p.unreadCount) &&
    isStrings(p.subscriptions) &&
    isStrings(p.allowedChannels)
  );
}

const payloadChecks: Record<ServerMessage["type"], (p: Json) => boolean> = {
  connected: isConnected,
  notification: isNotification,
  subscribed: (p) => isStrings(p.channels),
  unsubscribed: (p) => isStrings(p.channels),
  unread_count: (p) => isCount(p.unreadCount),
  pong: () => true,
  error: (p) => isString(p.code) && isString(p.message),
};

/** The server message in a text frame, or `undefined` when the frame is not one. */
export function parseServerMessage(text: string): ServerMessage | undefined {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(frame) || !isString(frame.type) || !isObject(frame.payload)) return undefined;
  if (!Object.prototype.hasOwnProperty.call(payloadChecks, frame.type)) return undefined;
  const check = payloadChecks[frame.type as ServerMessage["type"]];
  if (!check(frame.payload)) return undefined;
  return { type: frame.type, payload: frame.payload } as ServerMessage;
}

/** A client message in the plan's envelope. */
export function clientMessage(type: ClientMessageType, payload: Json, id: string, now: number): string {
  return JSON.stringify({ id, type, timestamp: now, payload });
}

/** The delay a `going away: reconnect in <n> ms` (or `lifetime reached: ...`) close reason asks
 * for, or `undefined` when the reason carries none. */
export function reconnectHint(reason: string): number | undefined {
  const match = /reconnect in (\d{1,15}) ms/.exec(reason);
  return match ? Number(match[1]) : undefined;
}
