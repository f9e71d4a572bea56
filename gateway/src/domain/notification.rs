//! Notifications (plan section 6): the 14 types, the stored record, the wire payload, and the
//! validation of what a publisher sends (AC15), all before anything is stored. What text, links and
//! icons may hold is decided in `text` and `link`; content is stored as sent or refused, never
//! rewritten.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::UnixMs;
use super::link::{LinkPolicy, check_action_url, check_icon};
use super::text::{Lines, check_plain_text};

/// The plan's 14 types, shared with the operator (its `NotificationChannel` lists them).
pub use herald_contract::NotificationType;

/// Limits of AC15.
pub const MAX_TITLE_CHARS: usize = 255;
pub const MAX_BODY_BYTES: usize = 4 * 1024;
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// What a publisher asks to send, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationContent {
    pub kind: NotificationType,
    pub title: String,
    pub body: Option<String>,
    pub icon: Option<String>,
    pub action_url: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub expires_at: Option<UnixMs>,
    /// The channel the publisher named, if any; it must be the type's channel.
    pub channel: Option<String>,
}

/// Field path -> what is wrong with it, for a 400 that lists every problem at once.
pub type FieldErrors = BTreeMap<String, String>;

/// A user's unread count, with the version of the user's unread set it was counted at. Counts reach
/// a connection by several paths (a publish's fan-out, the announcement after a read mark, on any
/// replica) that may overtake each other; the version says which is newer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnreadCount {
    pub count: u64,
    /// Grows with every change of the user's unread set: the user's last `seq` plus the unread
    /// notifications they have read or deleted (the stores keep both, in the transaction of the
    /// change). 0: not known (an event from a replica that predates versions).
    pub version: u64,
}

impl UnreadCount {
    /// Whether this count may replace one of version `sent` already given to a connection: it is
    /// newer, or its version is not known (as before versions: the latest to arrive wins).
    pub fn supersedes(self, sent: u64) -> bool {
        self.version == 0 || self.version > sent
    }
}

/// A stored notification of one user. Serializable so that replicas can pass it to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    pub user_id: String,
    /// Per-user, strictly increasing: gaps tell a connection it missed something.
    pub seq: i64,
    pub kind: NotificationType,
    pub channel: String,
    pub title: String,
    pub body: Option<String>,
    pub icon: Option<String>,
    pub action_url: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
    pub read_at: Option<UnixMs>,
    /// When the user acknowledged receipt (`notification:ack`).
    pub delivered_at: Option<UnixMs>,
    /// Delivery rounds so far (first push and retries).
    pub attempts: i32,
}

impl Notification {
    pub fn is_expired(&self, now: UnixMs) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn payload(&self) -> NotificationPayload {
        NotificationPayload {
            id: self.id,
            kind: self.kind,
            title: self.title.clone(),
            body: self.body.clone(),
            icon: self.icon.clone(),
            action_url: self.action_url.clone(),
            data: self.data.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            channel: self.channel.clone(),
            seq: self.seq,
        }
    }
}

/// The plan's `NotificationPayloadSchema`, plus `channel` and `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPayload {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    #[schema(value_type = i64, format = Int64)]
    pub created_at: UnixMs,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, format = Int64)]
    pub expires_at: Option<UnixMs>,
    pub channel: String,
    pub seq: i64,
}

/// Validates a publisher's `notification` object. Every problem is reported, keyed by field path
/// (`notification.title`), and nothing is accepted that the client could render unsafely, provided
/// it renders text as text (docs/security.md).
pub fn parse_content(value: &Value, now: UnixMs, links: &LinkPolicy) -> Result<NotificationContent, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(object) = value.as_object() else {
        errors.insert("notification".into(), "must be an object".into());
        return Err(errors);
    };
    let field = |name: &str| format!("notification.{name}");
    const KNOWN: &[&str] = &[
        "type",
        "title",
        "body",
        "icon",
        "actionUrl",
        "data",
        "expiresAt",
        "channel",
    ];
    for key in object.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        errors.insert(field(key), "unknown field".into());
    }

    let kind = match object.get("type") {
        Some(Value::String(name)) => NotificationType::parse(name).or_else(|| {
            errors.insert(field("type"), format!("unknown notification type `{}`", truncate(name)));
            None
        }),
        _ => {
            errors.insert(field("type"), "required, one of the notification types".into());
            None
        }
    };
    let title = match object.get("title") {
        Some(Value::String(title)) => {
            let title = title.trim();
            if title.is_empty() {
                errors.insert(field("title"), "must not be empty".into());
            } else if title.chars().count() > MAX_TITLE_CHARS {
                errors.insert(field("title"), format!("at most {MAX_TITLE_CHARS} characters"));
            } else if let Err(reason) = check_plain_text(title, Lines::One) {
                errors.insert(field("title"), reason);
            }
            title.to_owned()
        }
        _ => {
            errors.insert(field("title"), "required string".into());
            String::new()
        }
    };
    let body = optional_string(object, "body", &mut errors).inspect(|body| {
        if body.len() > MAX_BODY_BYTES {
            errors.insert(field("body"), format!("at most {MAX_BODY_BYTES} bytes"));
        } else if let Err(reason) = check_plain_text(body, Lines::Many) {
            errors.insert(field("body"), reason);
        }
    });
    let icon = optional_string(object, "icon", &mut errors).inspect(|icon| {
        if let Err(reason) = check_icon(icon, links) {
            errors.insert(field("icon"), reason);
        }
    });
    let action_url = optional_string(object, "actionUrl", &mut errors).inspect(|url| {
        if let Err(reason) = check_action_url(url, links) {
            errors.insert(field("actionUrl"), reason);
        }
    });
    let data = match object.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let size = serde_json::to_vec(map).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_DATA_BYTES {
                errors.insert(field("data"), format!("at most {MAX_DATA_BYTES} bytes of JSON"));
            }
            Some(map.clone())
        }
        Some(_) => {
            errors.insert(field("data"), "must be a JSON object".into());
            None
        }
    };
    let expires_at = match object.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(at) if at > now => Some(at),
            Some(_) => {
                errors.insert(field("expiresAt"), "must be in the future (Unix milliseconds)".into());
                None
            }
            None => {
                errors.insert(field("expiresAt"), "must be an integer (Unix milliseconds)".into());
                None
            }
        },
    };
    let channel = optional_string(object, "channel", &mut errors);
    match kind {
        Some(kind) if errors.is_empty() => Ok(NotificationContent {
            kind,
            title,
            body,
            icon,
            action_url,
            data,
            expires_at,
            channel,
        }),
        _ => Err(errors),
    }
}

fn optional_string(object: &Map<String, Value>, name: &str, errors: &mut FieldErrors) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.insert(format!("notification.{name}"), "must be a string".into());
            None
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_plan_type_round_trips_by_name() {
        assert_eq!(NotificationType::ALL.len(), 14);
        for kind in NotificationType::ALL {
            assert_eq!(NotificationType::parse(kind.as_str()), Some(*kind));
            assert_eq!(serde_json::to_value(kind).expect("json"), json!(kind.as_str()));
        }
        assert_eq!(NotificationType::parse("nope"), None);
    }

    #[test]
    fn a_valid_notification_is_accepted_and_trimmed() {
        let content = parse_content(
            &json!({"type": "new_like", "title": "  Someone liked your MOC ", "body": "line 1\nline 2",
                    "icon": "heart", "actionUrl": "/mocs/42", "data": {"mocId": 42}, "expiresAt": 2_000}),
            1_000,
            &LinkPolicy::default(),
        )
        .expect("valid");
        assert_eq!(content.kind, NotificationType::NewLike);
        assert_eq!(content.title, "Someone liked your MOC");
        assert_eq!(content.expires_at, Some(2_000));
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let errors = parse_content(
            &json!({"type": "launch_rockets", "title": "x".repeat(256), "body": "a\u{7}b", "icon": "<svg/>",
                    "actionUrl": "javascript:alert(1)", "data": [1], "expiresAt": 5, "colour": "red"}),
            1_000,
            &LinkPolicy::default(),
        )
        .expect_err("invalid");
        for key in [
            "type",
            "title",
            "body",
            "icon",
            "actionUrl",
            "data",
            "expiresAt",
            "colour",
        ] {
            assert!(
                errors.contains_key(&format!("notification.{key}")),
                "{key} missing from {errors:?}"
            );
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let big_body = json!({"type": "new_like", "title": "t", "body": "b".repeat(MAX_BODY_BYTES + 1)});
        assert!(
            parse_content(&big_body, 0, &LinkPolicy::default())
                .expect_err("body")
                .contains_key("notification.body")
        );
        let big_data = json!({"type": "new_like", "title": "t", "data": {"k": "v".repeat(MAX_DATA_BYTES)}});
        assert!(
            parse_content(&big_data, 0, &LinkPolicy::default())
                .expect_err("data")
                .contains_key("notification.data")
        );
        let missing = parse_content(&json!({}), 0, &LinkPolicy::default()).expect_err("missing");
        assert!(missing.contains_key("notification.type") && missing.contains_key("notification.title"));
    }

    #[test]
    fn payload_has_the_plan_shape_plus_channel_and_seq() {
        let n = Notification {
            id: Uuid::nil(),
            user_id: "u".into(),
            seq: 3,
            kind: NotificationType::UploadComplete,
            channel: "uploads".into(),
            title: "Done".into(),
            body: None,
            icon: None,
            action_url: Some("/x".into()),
            data: None,
            created_at: 10,
            expires_at: None,
            read_at: None,
            delivered_at: None,
            attempts: 0,
        };
        let json = serde_json::to_value(n.payload()).expect("json");
        assert_eq!(
            json,
            json!({"id": Uuid::nil(), "type": "upload_complete", "title": "Done", "actionUrl": "/x",
                   "createdAt": 10, "channel": "uploads", "seq": 3})
        );
    }
}
