//! Publishing (AC23, AC24): the body of `POST /api/publish` as it arrives, the validated request the
//! service works with, and the receipt that answers it (and that an `Idempotency-Key` replays).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::UnixMs;
use super::link::LinkPolicy;
use super::notification::{FieldErrors, NotificationContent, parse_content};
use super::preferences::SkipReason;
use super::user::validate_user_id;

/// Most recipients of one publish.
pub const MAX_RECIPIENTS: usize = 1_000;

/// The body of `POST /api/publish` as received: `{"userIds": [...], "notification": {...}}`. Its
/// parts stay loose so that [`PublishRequest::parse`] reports every problem at once, where a strict
/// deserializer would stop at the first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishBody {
    pub user_ids: Option<Value>,
    pub notification: Option<Value>,
    /// Every other top-level field; each is refused by name.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A validated publish: recipients (1-1000, deduplicated, order kept) and sanitized content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishRequest {
    pub user_ids: Vec<String>,
    pub content: NotificationContent,
}

impl PublishRequest {
    /// Validates a publish body; every problem is reported, keyed by field path. `links` are the
    /// origins links and icons may point to.
    pub fn parse(body: PublishBody, now: UnixMs, links: &LinkPolicy) -> Result<Self, FieldErrors> {
        let mut errors: FieldErrors = body
            .unknown
            .into_keys()
            .map(|key| (key, "unknown field".to_owned()))
            .collect();
        let mut user_ids = Vec::new();
        match body.user_ids {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_RECIPIENTS => {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str().map(|id| (id, validate_user_id(id))) {
                        Some((id, Ok(()))) => {
                            if seen.insert(id.to_owned()) {
                                user_ids.push(id.to_owned());
                            }
                        }
                        Some((_, Err(invalid))) => {
                            errors.insert(format!("userIds[{i}]"), invalid.to_string());
                        }
                        None => {
                            errors.insert(format!("userIds[{i}]"), "a user id must be a string".into());
                        }
                    }
                }
            }
            _ => {
                errors.insert("userIds".into(), format!("an array of 1 to {MAX_RECIPIENTS} user ids"));
            }
        }
        let content = match parse_content(body.notification.as_ref().unwrap_or(&Value::Null), now, links) {
            Ok(content) => Some(content),
            Err(content_errors) => {
                errors.extend(content_errors);
                None
            }
        };
        match content {
            Some(content) if errors.is_empty() => Ok(Self { user_ids, content }),
            _ => Err(errors),
        }
    }

    /// What an `Idempotency-Key` remembers of the request: the hex SHA-256 of its JSON. The validated
    /// request is hashed rather than the raw body, so the hash does not depend on whitespace, key
    /// order, duplicate recipients or untrimmed titles: requests that would store the same
    /// notifications are the same request. Its serialization is canonical (fields in declaration
    /// order, `data` keys sorted by serde_json's ordered map), so the hash is stable. Changing what
    /// the request serializes changes every hash: for the keys' 24 hours after such a deploy (and
    /// after this one, which replaced the hash of the raw body), a retry of an earlier request
    /// answers 422 `idempotency_key_reused` instead of the first receipt.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("strings, numbers and JSON maps always serialize");
        Sha256::digest(canonical).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The answer to a publish (202): who got a notification and who was skipped, and why. Stored with
/// an `Idempotency-Key` and answered again, unchanged, to a retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishReceipt {
    pub created: Vec<CreatedNotification>,
    pub skipped: Vec<SkippedRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedNotification {
    pub user_id: String,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedRecipient {
    pub user_id: String,
    pub reason: SkipReason,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> PublishBody {
        serde_json::from_value(value).expect("an object reads as a publish body")
    }

    #[test]
    fn recipients_are_deduplicated_in_order() {
        let request = PublishRequest::parse(
            body(json!({"userIds": ["bob", "alice", "bob"], "notification": {"type": "new_like", "title": "t"}})),
            0,
            &LinkPolicy::default(),
        )
        .expect("valid");
        assert_eq!(request.user_ids, ["bob", "alice"]);
    }

    #[test]
    fn every_problem_of_a_body_is_reported_at_once() {
        let errors = PublishRequest::parse(
            body(json!({"userIds": ["ok", "", 7], "notification": {"type": "nope", "title": ""}, "extra": 1})),
            0,
            &LinkPolicy::default(),
        )
        .expect_err("invalid");
        for key in [
            "userIds[1]",
            "userIds[2]",
            "notification.type",
            "notification.title",
            "extra",
        ] {
            assert!(errors.contains_key(key), "{key} missing from {errors:?}");
        }
        let errors =
            PublishRequest::parse(body(json!({"userIds": null})), 0, &LinkPolicy::default()).expect_err("invalid");
        assert!(
            errors.contains_key("userIds") && errors.contains_key("notification"),
            "{errors:?}"
        );
        let too_many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        let errors = PublishRequest::parse(
            body(json!({"userIds": too_many, "notification": {"type": "new_like", "title": "t"}})),
            0,
            &LinkPolicy::default(),
        )
        .expect_err("too many");
        assert!(errors.contains_key("userIds"));
    }

    #[test]
    fn recipients_follow_the_user_id_rule_of_user_jwts() {
        let errors = PublishRequest::parse(
            body(
                json!({"userIds": ["alice\nadmin", "bob\u{202e}", "x".repeat(256), "carol"],
                        "notification": {"type": "new_like", "title": "t"}}),
            ),
            0,
            &LinkPolicy::default(),
        )
        .expect_err("invalid");
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            ["userIds[0]", "userIds[1]", "userIds[2]"]
        );
        assert!(errors["userIds[1]"].contains("bidirectional"), "{errors:?}");
    }

    #[test]
    fn the_fingerprint_depends_on_what_would_be_stored_only() {
        let fingerprint = |value: Value| {
            PublishRequest::parse(body(value), 0, &LinkPolicy::default())
                .expect("valid")
                .fingerprint()
        };
        let first = fingerprint(
            json!({"userIds": ["a", "b"], "notification": {"type": "new_like", "title": "t", "data": {"x": 1, "y": 2}}}),
        );
        assert_eq!(first.len(), 64);
        let same = fingerprint(
            json!({"notification": {"data": {"y": 2, "x": 1}, "title": " t ", "type": "new_like"}, "userIds": ["a", "b", "a"]}),
        );
        assert_eq!(first, same);
        let other = fingerprint(
            json!({"userIds": ["b", "a"], "notification": {"type": "new_like", "title": "t", "data": {"x": 1, "y": 2}}}),
        );
        assert_ne!(first, other, "recipient order is part of the request");
    }

    #[test]
    fn the_receipt_has_the_documented_shape_and_reads_back() {
        let receipt = PublishReceipt {
            created: vec![CreatedNotification {
                user_id: "alice".into(),
                id: Uuid::nil(),
            }],
            skipped: vec![SkippedRecipient {
                user_id: "bob".into(),
                reason: SkipReason::ChannelDisabled,
            }],
        };
        let json = serde_json::to_value(&receipt).expect("json");
        assert_eq!(
            json,
            json!({"created": [{"userId": "alice", "id": Uuid::nil()}],
                   "skipped": [{"userId": "bob", "reason": "channel_disabled"}]})
        );
        assert_eq!(
            serde_json::from_value::<PublishReceipt>(json).expect("read back"),
            receipt
        );
    }
}
