//! Publishers: the domain services allowed to post notifications (AC23). A publisher is known by the
//! SHA-256 of its key, never the key itself, and may be limited to some notification types.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::notification::NotificationType;

/// Shortest publisher key accepted outside dev mode.
pub const MIN_KEY_CHARS: usize = 24;

#[derive(Clone)]
pub struct Publisher {
    pub name: String,
    key_sha256: [u8; 32],
    /// `None`: every type.
    pub types: Option<HashSet<NotificationType>>,
    /// `None`: every channel (DESIGN.md: publishers are scoped to channels).
    pub channels: Option<HashSet<String>>,
    /// Notifications (one per recipient) this publisher may have stored per second on one replica.
    pub notifications_per_second: u32,
}

/// Notifications per second a publisher may have stored on one replica unless configured otherwise
/// (`herald_contract::defaults::PUBLISHER_NOTIFICATIONS_PER_SECOND`).
pub const DEFAULT_NOTIFICATIONS_PER_SECOND: u32 = herald_contract::defaults::PUBLISHER_NOTIFICATIONS_PER_SECOND;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("types", &self.types)
            .field("channels", &self.channels)
            .field("notifications_per_second", &self.notifications_per_second)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn from_key(name: impl Into<String>, key: &str, types: Option<HashSet<NotificationType>>) -> Self {
        Self {
            name: name.into(),
            key_sha256: Sha256::digest(key.as_bytes()).into(),
            types,
            channels: None,
            notifications_per_second: DEFAULT_NOTIFICATIONS_PER_SECOND,
        }
    }

    /// Limited to `channels` (`None`: every channel).
    pub fn with_channels(mut self, channels: Option<HashSet<String>>) -> Self {
        self.channels = channels;
        self
    }

    pub fn with_notifications_per_second(mut self, limit: u32) -> Self {
        self.notifications_per_second = limit;
        self
    }

    pub fn may_publish_to(&self, channel: &str) -> bool {
        self.channels.as_ref().is_none_or(|channels| channels.contains(channel))
    }

    /// From a hex SHA-256 of the key, as written in config files.
    pub fn from_hash(
        name: impl Into<String>,
        hex_sha256: &str,
        types: Option<HashSet<NotificationType>>,
    ) -> Option<Self> {
        let hex = hex_sha256.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(Self {
            name: name.into(),
            key_sha256: hash,
            types,
            channels: None,
            notifications_per_second: DEFAULT_NOTIFICATIONS_PER_SECOND,
        })
    }

    pub fn may_publish(&self, kind: NotificationType) -> bool {
        self.types.as_ref().is_none_or(|types| types.contains(&kind))
    }
}

/// Every configured publisher; finds the one a presented key belongs to.
#[derive(Debug, Clone, Default)]
pub struct Publishers {
    /// Shared, so that an authenticated request holds its publisher without copying it.
    publishers: Vec<Arc<Publisher>>,
}

impl Publishers {
    pub fn new(publishers: Vec<Publisher>) -> Result<Self, String> {
        for (i, publisher) in publishers.iter().enumerate() {
            if publishers[..i].iter().any(|p| p.name == publisher.name) {
                return Err(format!("publisher `{}` is configured twice", publisher.name));
            }
            if publishers[..i].iter().any(|p| p.key_sha256 == publisher.key_sha256) {
                return Err(format!("publisher `{}` reuses another publisher's key", publisher.name));
            }
        }
        Ok(Self {
            publishers: publishers.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.publishers.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.publishers.iter().map(|p| p.name.as_str()).collect()
    }

    /// Compares the key's hash with every publisher's in constant time, so timing reveals nothing
    /// about which key, or how much of one, matched.
    pub fn authenticate(&self, key: &str) -> Option<&Arc<Publisher>> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for publisher in &self.publishers {
            if bool::from(publisher.key_sha256.ct_eq(&presented)) {
                found = Some(publisher);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_by_hash_and_types_are_enforced() {
        let uploads_only = [NotificationType::UploadComplete].into_iter().collect();
        let hash: String = Sha256::digest(b"social-key-0123456789abcdef")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let publishers = Publishers::new(vec![
            Publisher::from_key("uploads", "uploads-key-0123456789abcdef", Some(uploads_only)),
            Publisher::from_hash("social", &hash, None).expect("hex"),
        ])
        .expect("valid");
        let uploads = publishers.authenticate("uploads-key-0123456789abcdef").expect("known");
        assert_eq!(uploads.name, "uploads");
        assert!(uploads.may_publish(NotificationType::UploadComplete));
        assert!(!uploads.may_publish(NotificationType::NewLike));
        let social = publishers.authenticate("social-key-0123456789abcdef").expect("known");
        assert!(social.may_publish(NotificationType::NewLike));
        assert!(publishers.authenticate("guess").is_none());
        assert!(Publisher::from_hash("x", "zz", None).is_none());
    }

    #[test]
    fn duplicate_names_or_keys_are_refused() {
        let a = Publisher::from_key("a", "key-one-0123456789abcdef", None);
        let b = Publisher::from_key("a", "key-two-0123456789abcdef", None);
        assert!(Publishers::new(vec![a.clone(), b]).is_err());
        let c = Publisher::from_key("c", "key-one-0123456789abcdef", None);
        assert!(Publishers::new(vec![a, c]).is_err());
    }
}
