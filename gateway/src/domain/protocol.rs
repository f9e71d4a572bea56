//! The WebSocket message protocol: the plan's client and server envelopes (section 6), exactly.
//!
//! Every message is `{id: uuid, type, timestamp: ms, payload}`. Parsing is done here, by hand over a
//! JSON value, so that each way a frame can be wrong has its own stable error code.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::UnixMs;
use super::notification::NotificationPayload;

/// A message a client may send, without its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Ping,
    Subscribe { channels: Vec<String> },
    Unsubscribe { channels: Vec<String> },
    Ack { notification_id: Uuid },
}

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEnvelope {
    pub id: Uuid,
    pub timestamp: f64,
    pub message: ClientMessage,
}

/// Why a client frame was not understood. Each is answered with an `error` message carrying
/// [`ProtocolError::code`]; the connection stays open unless violations repeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is not valid JSON")]
    InvalidJson,
    #[error("message envelope is invalid: {0}")]
    InvalidEnvelope(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("payload of `{kind}` is invalid: {reason}")]
    InvalidPayload { kind: &'static str, reason: String },
    #[error("only text frames carry messages")]
    BinaryFrame,
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::InvalidJson => "invalid_json",
            ProtocolError::InvalidEnvelope(_) => "invalid_message",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::InvalidPayload { .. } => "invalid_payload",
            ProtocolError::BinaryFrame => "unsupported_frame",
        }
    }
}

/// Parses one text frame into a client message.
pub fn parse_client_message(text: &str) -> Result<ClientEnvelope, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ProtocolError::InvalidJson)?;
    let Value::Object(mut object) = value else {
        return Err(ProtocolError::InvalidEnvelope("a message is a JSON object".into()));
    };
    let id = match object.get("id") {
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| envelope("`id` must be a UUID"))?,
        _ => return Err(envelope("`id` must be a UUID string")),
    };
    let timestamp = object
        .get("timestamp")
        .and_then(Value::as_f64)
        .ok_or_else(|| envelope("`timestamp` must be a number"))?;
    let kind = match object.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(envelope("`type` must be a string")),
    };
    let payload = match object.remove("payload") {
        Some(Value::Object(map)) => map,
        Some(_) | None => return Err(envelope("`payload` must be an object")),
    };
    let message = match kind.as_str() {
        "ping" => ClientMessage::Ping,
        "subscribe" => ClientMessage::Subscribe {
            channels: channels(&payload, "subscribe")?,
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            channels: channels(&payload, "unsubscribe")?,
        },
        "notification:ack" => ClientMessage::Ack {
            notification_id: notification_id(&payload)?,
        },
        _ => return Err(ProtocolError::UnknownType(truncate(&kind))),
    };
    Ok(ClientEnvelope { id, timestamp, message })
}

fn envelope(reason: &str) -> ProtocolError {
    ProtocolError::InvalidEnvelope(reason.to_owned())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn channels(payload: &Map<String, Value>, kind: &'static str) -> Result<Vec<String>, ProtocolError> {
    let invalid = || ProtocolError::InvalidPayload {
        kind,
        reason: "`channels` must be an array of strings".into(),
    };
    match payload.get("channels") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect(),
        _ => Err(invalid()),
    }
}

fn notification_id(payload: &Map<String, Value>) -> Result<Uuid, ProtocolError> {
    payload
        .get("notificationId")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ProtocolError::InvalidPayload {
            kind: "notification:ack",
            reason: "`notificationId` must be a UUID".into(),
        })
}

/// A message the server sends, without its envelope. The plan's types keep their exact shape;
/// `connected`, `unsubscribed` and `unread_count` are Herald's additions (DESIGN.md allows new server
/// messages, never changed ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "payload")]
pub enum ServerMessage {
    #[serde(rename = "pong")]
    Pong {},
    #[serde(rename = "error")]
    Error { code: String, message: String },
    #[serde(rename = "connected")]
    Connected(ConnectedPayload),
    #[serde(rename = "notification")]
    Notification(NotificationPayload),
    #[serde(rename = "subscribed")]
    Subscribed { channels: Vec<String> },
    #[serde(rename = "unsubscribed")]
    Unsubscribed { channels: Vec<String> },
    #[serde(rename = "unread_count")]
    UnreadCount {
        #[serde(rename = "unreadCount")]
        unread_count: u64,
    },
}

impl ServerMessage {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// First message of every connection: who the server thinks the client is and how to stay alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedPayload {
    pub connection_id: String,
    pub user_id: String,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub unread_count: u64,
    /// The channels this connection receives live.
    pub subscriptions: Vec<String>,
    /// The channels this connection may subscribe to (from its token).
    pub allowed_channels: Vec<String>,
}

/// A server message in its envelope, ready to serialize.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerEnvelope {
    pub id: Uuid,
    pub timestamp: UnixMs,
    #[serde(flatten)]
    pub message: ServerMessage,
}

impl ServerEnvelope {
    pub fn new(message: ServerMessage, now: UnixMs) -> Self {
        Self {
            id: Uuid::new_v4(),
            timestamp: now,
            message,
        }
    }

    pub fn to_json(&self) -> String {
        // Only strings, numbers and maps: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// WebSocket close codes Herald uses, documented in docs/protocol.md. 4000-4999 is the range RFC 6455
/// leaves to applications.
pub mod close_code {
    /// Normal closure (client asked, or server finished).
    pub const NORMAL: u16 = 1000;
    /// Server is shutting down or draining: reconnect (the reason carries a jittered delay hint).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame or message exceeded the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an internal error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Too many malformed or invalid messages in a short time.
    pub const PROTOCOL_VIOLATIONS: u16 = 4000;
    /// No `ping` within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// More messages per second than allowed.
    pub const RATE_LIMITED: u16 = 4002;
    /// The client did not read fast enough: its outbound queue filled or a write stalled.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The registration of this connection vanished (expired or removed elsewhere).
    pub const CONNECTION_EXPIRED: u16 = 4004;

    /// Every code Herald sends, in the order above.
    pub const ALL: [u16; 9] = [
        NORMAL,
        GOING_AWAY,
        MESSAGE_TOO_BIG,
        INTERNAL_ERROR,
        PROTOCOL_VIOLATIONS,
        HEARTBEAT_TIMEOUT,
        RATE_LIMITED,
        SLOW_CONSUMER,
        CONNECTION_EXPIRED,
    ];

    /// A fixed name for `code`, for metrics labels (`other` for a code Herald does not send).
    pub fn name(code: u16) -> &'static str {
        match code {
            NORMAL => "normal",
            GOING_AWAY => "going_away",
            MESSAGE_TOO_BIG => "message_too_big",
            INTERNAL_ERROR => "internal_error",
            PROTOCOL_VIOLATIONS => "protocol_violations",
            HEARTBEAT_TIMEOUT => "heartbeat_timeout",
            RATE_LIMITED => "rate_limited",
            SLOW_CONSUMER => "slow_consumer",
            CONNECTION_EXPIRED => "connection_expired",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7f0c1a3e-8f51-4a51-9a43-5b4c3f0b8c11";

    #[test]
    fn every_close_code_sent_has_a_name_of_its_own() {
        use close_code::*;
        let codes = ALL;
        let names: std::collections::HashSet<_> = codes.iter().map(|code| name(*code)).collect();
        assert_eq!(names.len(), codes.len());
        assert!(!names.contains("other"));
        assert_eq!(name(4999), "other");
    }

    #[test]
    fn parses_every_plan_client_message() {
        let ping = parse_client_message(&format!(
            r#"{{"id":"{ID}","type":"ping","timestamp":1,"payload":{{}}}}"#
        ))
        .expect("ping");
        assert_eq!(ping.message, ClientMessage::Ping);
        let sub = parse_client_message(&format!(
            r#"{{"id":"{ID}","type":"subscribe","timestamp":1.5,"payload":{{"channels":["uploads"]}}}}"#
        ))
        .expect("subscribe");
        assert_eq!(
            sub.message,
            ClientMessage::Subscribe {
                channels: vec!["uploads".into()]
            }
        );
        let ack = parse_client_message(&format!(
            r#"{{"id":"{ID}","type":"notification:ack","timestamp":1,"payload":{{"notificationId":"{ID}"}}}}"#
        ))
        .expect("ack");
        assert!(matches!(ack.message, ClientMessage::Ack { .. }));
    }

    #[test]
    fn each_kind_of_bad_frame_has_its_own_code() {
        let code = |text: &str| parse_client_message(text).expect_err("must fail").code();
        assert_eq!(code("{not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_message");
        assert_eq!(
            code(r#"{"id":"nope","type":"ping","timestamp":1,"payload":{}}"#),
            "invalid_message"
        );
        assert_eq!(
            code(&format!(r#"{{"id":"{ID}","type":"ping","payload":{{}}}}"#)),
            "invalid_message"
        );
        assert_eq!(
            code(&format!(r#"{{"id":"{ID}","type":"ping","timestamp":1}}"#)),
            "invalid_message"
        );
        assert_eq!(
            code(&format!(
                r#"{{"id":"{ID}","type":"dance","timestamp":1,"payload":{{}}}}"#
            )),
            "unknown_type"
        );
        assert_eq!(
            code(&format!(
                r#"{{"id":"{ID}","type":"subscribe","timestamp":1,"payload":{{"channels":[1]}}}}"#
            )),
            "invalid_payload"
        );
        assert_eq!(
            code(&format!(
                r#"{{"id":"{ID}","type":"notification:ack","timestamp":1,"payload":{{}}}}"#
            )),
            "invalid_payload"
        );
    }

    #[test]
    fn server_envelope_has_the_plan_shape() {
        let json: Value =
            serde_json::from_str(&ServerEnvelope::new(ServerMessage::Pong {}, 42).to_json()).expect("json");
        assert_eq!(json["type"], "pong");
        assert_eq!(json["timestamp"], 42);
        assert_eq!(json["payload"], serde_json::json!({}));
        assert!(Uuid::parse_str(json["id"].as_str().expect("id")).is_ok());
        let error = ServerEnvelope::new(ServerMessage::error("invalid_json", "bad"), 1).to_json();
        let error: Value = serde_json::from_str(&error).expect("json");
        assert_eq!(
            error["payload"],
            serde_json::json!({"code": "invalid_json", "message": "bad"})
        );
    }
}
