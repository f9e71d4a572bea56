//! The plan's 14 notification types (`NotificationTypeSchema`): what publishers send, what channels
//! group, and what the operator's `NotificationChannel` resources list.

use serde::{Deserialize, Serialize};

macro_rules! notification_types {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// A notification type of the plan (`NotificationTypeSchema`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        // Every name is its variant in snake_case. utoipa reads this, not the per-variant renames
        // (a macro's literal is opaque to it); the per-variant ones stay the source for serde.
        #[serde(rename_all = "snake_case")]
        pub enum NotificationType { $(#[serde(rename = $name)] $variant),* }

        impl NotificationType {
            /// Every type, in the plan's order.
            pub const ALL: &'static [NotificationType] = &[$(NotificationType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(NotificationType::$variant => $name),* }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(NotificationType::$variant),)* _ => None }
            }
        }
    };
}

notification_types! {
    UploadStarted => "upload_started",
    UploadComplete => "upload_complete",
    UploadFailed => "upload_failed",
    ProcessingComplete => "processing_complete",
    ProcessingFailed => "processing_failed",
    NewFollower => "new_follower",
    NewLike => "new_like",
    NewComment => "new_comment",
    MocPublished => "moc_published",
    MocFeatured => "moc_featured",
    QuotaWarning => "quota_warning",
    QuotaExceeded => "quota_exceeded",
    SystemAnnouncement => "system_announcement",
    MaintenanceScheduled => "maintenance_scheduled",
}

impl std::fmt::Display for NotificationType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        assert_eq!(NotificationType::ALL.len(), 14);
        for kind in NotificationType::ALL {
            let json = serde_json::to_string(kind).expect("json");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(NotificationType::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(NotificationType::parse("nope"), None);
    }
}
