//! OpenAPI schemas of the request bodies. The bodies are read loosely on purpose (so that every
//! problem is reported at once, see `domain::publish`), so deriving a schema from their Rust types
//! would document "any object". These say what is actually accepted, built from the same limits the
//! validation uses. Rules that JSON Schema cannot state (allowed link origins, a future `expiresAt`,
//! the channel of a type, text without control characters) are in the descriptions.

use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::notification::{MAX_BODY_BYTES, MAX_DATA_BYTES, MAX_TITLE_CHARS, NotificationType};
use crate::domain::preferences::PreferencesPatchBody;
use crate::domain::publish::{MAX_RECIPIENTS, PublishBody};
use crate::domain::user::MAX_USER_ID_BYTES;

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn boolean(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .description(Some(description))
        .build()
}

/// An object that refuses every property it does not list.
fn closed(object: ObjectBuilder) -> ObjectBuilder {
    object.additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

fn user_id() -> Object {
    string("A user id (a JWT `sub`): 1 to 255 bytes of UTF-8, no control characters.")
        .min_length(Some(1))
        .max_length(Some(MAX_USER_ID_BYTES))
        .build()
}

fn notification_content() -> Object {
    closed(ObjectBuilder::new())
        .description(Some(
            "What to show. Text is stored as sent or refused, never rewritten: no control characters \
             (line breaks allowed in `body`), no bidirectional overrides.",
        ))
        .property("type", NotificationType::schema())
        .required("type")
        .property(
            "title",
            string(&format!("1 to {MAX_TITLE_CHARS} characters on one line."))
                .min_length(Some(1))
                .max_length(Some(MAX_TITLE_CHARS)),
        )
        .required("title")
        .property(
            "body",
            string(&format!("At most {MAX_BODY_BYTES} bytes of UTF-8.")).max_length(Some(MAX_BODY_BYTES)),
        )
        .property(
            "icon",
            string(
                "A name of the client's icon set (`[a-z0-9][a-z0-9_-]{0,63}`, e.g. `bell`), or an https URL on an \
                 allowed icon origin (`HERALD_ICON_URL_ORIGINS`).",
            )
            .max_length(Some(255)),
        )
        .property(
            "actionUrl",
            string(
                "Where a click leads: a path on the application (`/uploads/1`) or an https URL on an \
                 allowed origin (`HERALD_ACTION_URL_ORIGINS`).",
            ),
        )
        .property(
            "data",
            ObjectBuilder::new().schema_type(Type::Object).description(Some(format!(
                "Anything the client needs, at most {MAX_DATA_BYTES} bytes of JSON."
            ))),
        )
        .property(
            "expiresAt",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .description(Some("Unix milliseconds, in the future; not delivered after.")),
        )
        .property(
            "channel",
            string("The type's channel, if named at all; a publisher limited to channels may only use those."),
        )
        .build()
}

impl PartialSchema for PublishBody {
    fn schema() -> RefOr<Schema> {
        closed(ObjectBuilder::new())
            .description(Some("One notification for each recipient."))
            .property(
                "userIds",
                ArrayBuilder::new()
                    .items(user_id())
                    .min_items(Some(1))
                    .max_items(Some(MAX_RECIPIENTS))
                    .description(Some("The recipients; a repeated id counts once.")),
            )
            .required("userIds")
            .property("notification", notification_content())
            .required("notification")
            .into()
    }
}

impl ToSchema for PublishBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "PublishRequest".into()
    }
}

/// `{inApp, email, push}`, each optional.
fn switches() -> ObjectBuilder {
    closed(ObjectBuilder::new())
        .property("inApp", boolean("Delivered in the application."))
        .property("email", boolean("Sent by email."))
        .property("push", boolean("Sent as a push notification."))
}

/// Names (of types or of channels) to their switches.
fn switches_by_name(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(switches()))
        .build()
}

impl PartialSchema for PreferencesPatchBody {
    fn schema() -> RefOr<Schema> {
        closed(ObjectBuilder::new())
            .description(Some("Only what changes; every field is optional and none may be null."))
            .property("inAppEnabled", boolean("In-app notifications at all."))
            .property("emailEnabled", boolean("Email at all."))
            .property("pushEnabled", boolean("Push at all."))
            .property("types", switches_by_name("By notification type name."))
            .property(
                "channels",
                switches_by_name("By channel name (the configured channels)."),
            )
            .into()
    }
}

impl ToSchema for PreferencesPatchBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "PreferencesPatch".into()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn json_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).expect("a schema serializes")
    }

    #[test]
    fn the_publish_schema_states_the_validation_limits() {
        let schema = json_of::<PublishBody>();
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["required"], json!(["userIds", "notification"]));
        let users = &schema["properties"]["userIds"];
        assert_eq!(users["maxItems"], json!(MAX_RECIPIENTS));
        assert_eq!(users["items"]["maxLength"], json!(MAX_USER_ID_BYTES));
        let content = &schema["properties"]["notification"];
        assert_eq!(content["required"], json!(["type", "title"]));
        assert_eq!(content["properties"]["title"]["maxLength"], json!(MAX_TITLE_CHARS));
        let names: Vec<&str> = NotificationType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(content["properties"]["type"]["enum"], json!(names), "the wire names");
    }

    #[test]
    fn the_preferences_patch_schema_lists_every_accepted_key() {
        let schema = json_of::<PreferencesPatchBody>();
        let keys: Vec<&String> = schema["properties"].as_object().expect("properties").keys().collect();
        // Sorted: serde_json's map orders keys.
        assert_eq!(
            keys,
            ["channels", "emailEnabled", "inAppEnabled", "pushEnabled", "types"]
        );
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(
            schema["properties"]["types"]["additionalProperties"]["additionalProperties"],
            json!(false)
        );
    }
}
