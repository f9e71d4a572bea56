//! Client frames (`domain::protocol::parse_client_message`): every text frame a WebSocket client
//! sends goes through it before the session engine looks at the message.
//!
//! Asserts, for any UTF-8 input of at most the default frame limit (what the transport lets
//! through):
//! - parsing never panics;
//! - an accepted message, written back in the canonical envelope (hyphenated UUIDs, the same
//!   timestamp and payload), parses to the same id and message, and to the same timestamp within
//!   a unit in the last place;
//! - the reply the server sends for it (`pong`, or `subscribed`/`unsubscribed` echoing the channels)
//!   is at most the frame's size plus a fixed envelope overhead, so a client cannot make the server
//!   write more than it sent; the reply of a frame within the limit stays within the limit plus that
//!   overhead.

#![no_main]

use herald_contract::defaults::MAX_MESSAGE_BYTES;
use herald_fuzz::NOW;
use herald_gateway::domain::protocol::{
    ClientEnvelope, ClientMessage, ServerEnvelope, ServerMessage, parse_client_message,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// What a reply's envelope may add to the frame it answers: a canonical 36-character id where the
/// client may send a 32-character simple UUID, a 13-digit server timestamp where the client may send
/// `0`, and `subscribed` where the client sent `subscribe`.
const REPLY_OVERHEAD: usize = 4 + 12 + 1;

fuzz_target!(|data: &[u8]| {
    // Binary frames are refused before parsing, and longer frames by the WebSocket codec.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > MAX_MESSAGE_BYTES {
        return;
    }
    let Ok(envelope) = parse_client_message(text) else {
        return;
    };

    let canonical = canonical(&envelope).to_string();
    let again = parse_client_message(&canonical)
        .unwrap_or_else(|e| panic!("the canonical form {canonical} of {text:?} is refused: {e}"));
    assert_eq!(
        (again.id, &again.message),
        (envelope.id, &envelope.message),
        "the canonical form {canonical} of {text:?} parses differently"
    );
    // serde_json parses floats best-effort (its `float_roundtrip` feature is off): a printed f64 can
    // read back one unit in the last place away. The gateway never reads the client's timestamp.
    assert!(
        within_one_ulp(again.timestamp, envelope.timestamp),
        "timestamp {} reads back as {}",
        envelope.timestamp,
        again.timestamp
    );

    let reply = match envelope.message {
        ClientMessage::Ping => Some(ServerMessage::Pong {}),
        ClientMessage::Subscribe { channels } => Some(ServerMessage::Subscribed { channels }),
        ClientMessage::Unsubscribe { channels } => Some(ServerMessage::Unsubscribed { channels }),
        ClientMessage::Ack { .. } => None,
    };
    if let Some(reply) = reply {
        let reply = ServerEnvelope::new(reply, NOW).to_json();
        assert!(
            reply.len() <= text.len() + REPLY_OVERHEAD,
            "a {}-byte frame got a {}-byte reply: {text:?} -> {reply}",
            text.len(),
            reply.len()
        );
    }
});

fn canonical(envelope: &ClientEnvelope) -> serde_json::Value {
    let (kind, payload) = match &envelope.message {
        ClientMessage::Ping => ("ping", json!({})),
        ClientMessage::Subscribe { channels } => ("subscribe", json!({ "channels": channels })),
        ClientMessage::Unsubscribe { channels } => ("unsubscribe", json!({ "channels": channels })),
        ClientMessage::Ack { notification_id } => ("notification:ack", json!({ "notificationId": notification_id })),
    };
    json!({
        "id": envelope.id,
        "type": kind,
        "timestamp": envelope.timestamp,
        "payload": payload,
    })
}

fn within_one_ulp(a: f64, b: f64) -> bool {
    // Finite floats of one sign are ordered like their bit patterns.
    a == b || (a.is_sign_negative() == b.is_sign_negative() && a.to_bits().abs_diff(b.to_bits()) <= 1)
}
