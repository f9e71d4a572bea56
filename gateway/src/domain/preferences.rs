//! Notification preferences (AC16-AC19): global email / push / in-app switches, and per-type and
//! per-channel overrides. Stored sparse (only what the user changed); served with defaults filled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::channel::ChannelCatalog;
use super::notification::{FieldErrors, NotificationType};

/// Switches for one type or channel; `None` means "not set here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Switches {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_app: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<bool>,
}

impl Switches {
    fn merge(&mut self, patch: Switches) {
        self.in_app = patch.in_app.or(self.in_app);
        self.email = patch.email.or(self.email);
        self.push = patch.push.or(self.push);
    }
}

/// The sparse per-type and per-channel settings kept in the `preferences` JSON column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub types: BTreeMap<String, Switches>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, Switches>,
}

impl Overrides {
    pub fn from_json(value: &Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Default::default()))
    }
}

/// A user's preferences as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub in_app_enabled: bool,
    pub email_enabled: bool,
    pub push_enabled: bool,
    pub overrides: Overrides,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            in_app_enabled: true,
            email_enabled: true,
            push_enabled: true,
            overrides: Overrides::default(),
        }
    }
}

/// Why a recipient gets no in-app notification (the publish answer's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    InAppDisabled,
    TypeDisabled,
    ChannelDisabled,
}

impl Preferences {
    /// Whether a notification of `kind` in `channel` is delivered in-app (AC18).
    pub fn in_app_decision(&self, kind: NotificationType, channel: &str) -> Result<(), SkipReason> {
        if !self.in_app_enabled {
            return Err(SkipReason::InAppDisabled);
        }
        if self.overrides.channels.get(channel).and_then(|s| s.in_app) == Some(false) {
            return Err(SkipReason::ChannelDisabled);
        }
        if self.overrides.types.get(kind.as_str()).and_then(|s| s.in_app) == Some(false) {
            return Err(SkipReason::TypeDisabled);
        }
        Ok(())
    }

    /// Applies a validated patch.
    pub fn apply(&mut self, patch: PreferencesPatch) {
        self.in_app_enabled = patch.in_app_enabled.unwrap_or(self.in_app_enabled);
        self.email_enabled = patch.email_enabled.unwrap_or(self.email_enabled);
        self.push_enabled = patch.push_enabled.unwrap_or(self.push_enabled);
        for (name, switches) in patch.types {
            self.overrides.types.entry(name).or_default().merge(switches);
        }
        for (name, switches) in patch.channels {
            self.overrides.channels.entry(name).or_default().merge(switches);
        }
    }

    /// What `GET /notifications/preferences` answers: every known type and channel, defaults filled.
    pub fn effective(&self, catalog: &ChannelCatalog) -> PreferencesView {
        let filled = |set: Option<&Switches>| {
            let set = set.copied().unwrap_or_default();
            EffectiveSwitches {
                in_app: set.in_app.unwrap_or(true),
                email: set.email.unwrap_or(true),
                push: set.push.unwrap_or(true),
            }
        };
        let types = NotificationType::ALL
            .iter()
            .map(|kind| {
                (
                    kind.as_str().to_owned(),
                    filled(self.overrides.types.get(kind.as_str())),
                )
            })
            .collect();
        let channels = catalog
            .channels()
            .iter()
            .map(|channel| (channel.name.clone(), filled(self.overrides.channels.get(&channel.name))))
            .collect();
        PreferencesView {
            in_app_enabled: self.in_app_enabled,
            email_enabled: self.email_enabled,
            push_enabled: self.push_enabled,
            types,
            channels,
        }
    }
}

/// A user's effective preferences, as `GET` and `PATCH /notifications/preferences` answer them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesView {
    pub in_app_enabled: bool,
    pub email_enabled: bool,
    pub push_enabled: bool,
    pub types: BTreeMap<String, EffectiveSwitches>,
    pub channels: BTreeMap<String, EffectiveSwitches>,
}

/// The switches of one type or channel with defaults filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSwitches {
    pub in_app: bool,
    pub email: bool,
    pub push: bool,
}

/// A partial update (`PATCH /notifications/preferences`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreferencesPatch {
    pub in_app_enabled: Option<bool>,
    pub email_enabled: Option<bool>,
    pub push_enabled: Option<bool>,
    pub types: BTreeMap<String, Switches>,
    pub channels: BTreeMap<String, Switches>,
}

/// The body of `PATCH /notifications/preferences` as received: any JSON object. It stays loose so
/// that [`parse_patch`] reports every problem at once (a typed field would stop at the first, and
/// would read `null` as "unchanged" where it is refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct PreferencesPatchBody(pub Map<String, Value>);

/// Validates a patch body: known keys only, booleans, known type and channel names.
pub fn parse_patch(body: PreferencesPatchBody, catalog: &ChannelCatalog) -> Result<PreferencesPatch, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut patch = PreferencesPatch::default();
    for (key, value) in body.0 {
        match key.as_str() {
            "inAppEnabled" | "emailEnabled" | "pushEnabled" => match value.as_bool() {
                Some(flag) => match key.as_str() {
                    "inAppEnabled" => patch.in_app_enabled = Some(flag),
                    "emailEnabled" => patch.email_enabled = Some(flag),
                    _ => patch.push_enabled = Some(flag),
                },
                None => {
                    errors.insert(key.clone(), "must be true or false".into());
                }
            },
            "types" | "channels" => {
                let Some(entries) = value.as_object() else {
                    errors.insert(key.clone(), "must be an object of name -> {inApp, email, push}".into());
                    continue;
                };
                for (name, switches) in entries {
                    let path = format!("{key}.{name}");
                    let known = if key == "types" {
                        NotificationType::parse(name).is_some()
                    } else {
                        catalog.get(name).is_some()
                    };
                    if !known {
                        errors.insert(
                            path,
                            format!(
                                "unknown {}",
                                if key == "types" { "notification type" } else { "channel" }
                            ),
                        );
                        continue;
                    }
                    match serde_json::from_value::<Switches>(switches.clone()) {
                        Ok(parsed) if key == "types" => {
                            patch.types.insert(name.clone(), parsed);
                        }
                        Ok(parsed) => {
                            patch.channels.insert(name.clone(), parsed);
                        }
                        Err(_) => {
                            errors.insert(path, "must be an object with boolean inApp, email, push".into());
                        }
                    }
                }
            }
            other => {
                errors.insert(other.to_owned(), "unknown field".into());
            }
        }
    }
    if errors.is_empty() { Ok(patch) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_follow_global_channel_and_type_switches() {
        let mut prefs = Preferences::default();
        assert_eq!(prefs.in_app_decision(NotificationType::NewLike, "social"), Ok(()));
        prefs.overrides.types.insert(
            "new_like".into(),
            Switches {
                in_app: Some(false),
                ..Switches::default()
            },
        );
        assert_eq!(
            prefs.in_app_decision(NotificationType::NewLike, "social"),
            Err(SkipReason::TypeDisabled)
        );
        assert_eq!(prefs.in_app_decision(NotificationType::NewComment, "social"), Ok(()));
        prefs.overrides.channels.insert(
            "social".into(),
            Switches {
                in_app: Some(false),
                ..Switches::default()
            },
        );
        assert_eq!(
            prefs.in_app_decision(NotificationType::NewComment, "social"),
            Err(SkipReason::ChannelDisabled)
        );
        prefs.in_app_enabled = false;
        assert_eq!(
            prefs.in_app_decision(NotificationType::UploadComplete, "uploads"),
            Err(SkipReason::InAppDisabled)
        );
    }

    fn patch_body(value: serde_json::Value) -> PreferencesPatchBody {
        serde_json::from_value(value).expect("an object reads as a patch body")
    }

    const ON: EffectiveSwitches = EffectiveSwitches {
        in_app: true,
        email: true,
        push: true,
    };

    #[test]
    fn patches_are_partial_and_validated() {
        let catalog = ChannelCatalog::default_set(7);
        let patch = parse_patch(
            patch_body(json!({"emailEnabled": false, "types": {"new_like": {"inApp": false}}})),
            &catalog,
        )
        .expect("valid");
        let mut prefs = Preferences::default();
        prefs.apply(patch);
        let second = parse_patch(patch_body(json!({"types": {"new_like": {"push": false}}})), &catalog).expect("valid");
        prefs.apply(second);
        let effective = prefs.effective(&catalog);
        assert!(!effective.email_enabled);
        assert!(effective.in_app_enabled);
        assert_eq!(
            effective.types["new_like"],
            EffectiveSwitches {
                in_app: false,
                email: true,
                push: false
            }
        );
        assert_eq!(effective.types["new_comment"], ON);
        assert_eq!(effective.channels["social"], ON);

        let errors = parse_patch(
            patch_body(
                json!({"inAppEnabled": "no", "pushEnabled": null, "types": {"nope": {}}, "channels": {"social": {"inApp": 1}}, "x": 1}),
            ),
            &catalog,
        )
        .expect_err("invalid");
        for key in ["inAppEnabled", "pushEnabled", "types.nope", "channels.social", "x"] {
            assert!(errors.contains_key(key), "{key} missing from {errors:?}");
        }
        let errors = parse_patch(patch_body(json!({"types": [], "channels": null})), &catalog).expect_err("invalid");
        assert!(
            errors.contains_key("types") && errors.contains_key("channels"),
            "{errors:?}"
        );
    }

    #[test]
    fn overrides_round_trip_through_json_sparsely() {
        let mut overrides = Overrides::default();
        overrides.channels.insert(
            "social".into(),
            Switches {
                email: Some(false),
                ..Switches::default()
            },
        );
        let json = overrides.to_json();
        assert_eq!(json, json!({"channels": {"social": {"email": false}}}));
        assert_eq!(Overrides::from_json(&json), overrides);
    }
}
