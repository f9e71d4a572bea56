//! Channels: named sets of notification types that users subscribe to (AC20-AC22). A type belongs to
//! at most one channel, so a notification's channel follows from its type.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use herald_contract::{ChannelEntry, defaults};

use super::notification::NotificationType;

pub const DAY_MS: i64 = 24 * 60 * 60 * 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub description: Option<String>,
    pub types: Vec<NotificationType>,
    /// Only users with the admin role may subscribe.
    pub admin_only: bool,
    /// Only users with this role may subscribe.
    pub required_role: Option<String>,
    /// Users who never chose are subscribed.
    pub default_subscribed: bool,
    pub retention_ms: i64,
}

impl Channel {
    /// Open to every user: no admin role, no required role.
    pub fn is_open(&self) -> bool {
        !self.admin_only && self.required_role.is_none()
    }
}

/// The channels in force, indexed by name and by type.
#[derive(Debug, Clone)]
pub struct ChannelCatalog {
    channels: Vec<Channel>,
    by_type: HashMap<NotificationType, usize>,
    admin_role: String,
}

impl ChannelCatalog {
    /// Validates names and roles, and refuses a type claimed by two channels.
    pub fn new(channels: Vec<Channel>, admin_role: impl Into<String>) -> Result<Self, String> {
        let mut by_type = HashMap::new();
        for (index, channel) in channels.iter().enumerate() {
            if !valid_name(&channel.name) {
                return Err(format!(
                    "channel name `{}` must be 1-64 characters of a-z, 0-9, `-`, `_`, `.`",
                    channel.name
                ));
            }
            if channels[..index].iter().any(|c| c.name == channel.name) {
                return Err(format!("channel `{}` is defined twice", channel.name));
            }
            if channel.retention_ms <= 0 {
                return Err(format!("channel `{}` needs a positive retention", channel.name));
            }
            for kind in &channel.types {
                if let Some(previous) = by_type.insert(*kind, index) {
                    return Err(format!(
                        "type `{kind}` is claimed by channels `{}` and `{}`; a type belongs to at most one channel",
                        channels[previous].name, channel.name
                    ));
                }
            }
        }
        Ok(Self {
            channels,
            by_type,
            admin_role: admin_role.into(),
        })
    }

    /// From config entries; unknown types are refused by name.
    pub fn from_entries(
        specs: Vec<ChannelEntry>,
        admin_role: &str,
        default_retention_days: u32,
    ) -> Result<Self, String> {
        let channels = specs
            .into_iter()
            .map(|spec| {
                let types = spec
                    .types
                    .iter()
                    .map(|name| {
                        NotificationType::parse(name)
                            .ok_or_else(|| format!("channel `{}`: unknown notification type `{name}`", spec.name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Channel {
                    name: spec.name,
                    description: spec.description,
                    types,
                    admin_only: spec.admin_only,
                    required_role: spec.required_role,
                    default_subscribed: spec.default_subscribed,
                    retention_ms: i64::from(spec.retention_days.unwrap_or(default_retention_days)) * DAY_MS,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Self::new(channels, admin_role)
    }

    /// Without configuration: the plan's 14 types in five channels, all subscribed by default.
    pub fn default_set(retention_days: u32) -> Self {
        use NotificationType::*;
        let channel = |name: &str, description: &str, types: Vec<NotificationType>| Channel {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            types,
            admin_only: false,
            required_role: None,
            default_subscribed: true,
            retention_ms: i64::from(retention_days) * DAY_MS,
        };
        let channels = vec![
            channel(
                "uploads",
                "Upload and processing progress",
                vec![
                    UploadStarted,
                    UploadComplete,
                    UploadFailed,
                    ProcessingComplete,
                    ProcessingFailed,
                ],
            ),
            channel(
                "social",
                "Followers, likes and comments",
                vec![NewFollower, NewLike, NewComment],
            ),
            channel("mocs", "Published and featured MOCs", vec![MocPublished, MocFeatured]),
            channel("quota", "Quota warnings", vec![QuotaWarning, QuotaExceeded]),
            channel(
                "system",
                "Announcements and maintenance",
                vec![SystemAnnouncement, MaintenanceScheduled],
            ),
        ];
        // The default set is valid by construction; the fallback is never reached.
        Self::new(channels, defaults::ADMIN_ROLE).unwrap_or_else(|_| Self {
            channels: vec![],
            by_type: HashMap::new(),
            admin_role: defaults::ADMIN_ROLE.into(),
        })
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn channel_of(&self, kind: NotificationType) -> Option<&Channel> {
        self.by_type.get(&kind).map(|index| &self.channels[*index])
    }

    /// Whether a user with `roles` may subscribe to `channel`.
    pub fn may_access(&self, channel: &Channel, roles: &[String]) -> bool {
        let has = |role: &str| roles.iter().any(|r| r == role);
        (!channel.admin_only || has(&self.admin_role)) && channel.required_role.as_deref().is_none_or(has)
    }

    /// The channels a user with `roles` may subscribe to: what a connection token carries.
    pub fn allowed_for(&self, roles: &[String]) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| self.may_access(c, roles))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Whether a connection whose token allows `allowed` may receive `name` now. A channel open to
    /// every user (neither `adminOnly` nor `requiredRole`) needs no mention in the token: it may have
    /// been added after the token was issued (channels reload without a restart). A restricted one
    /// must be in the token, which was issued from the user's roles.
    pub fn admits(&self, allowed: &[String], name: &str) -> bool {
        self.get(name)
            .is_some_and(|channel| channel.is_open() || allowed.iter().any(|a| a == name))
    }

    /// The channels of this catalog a connection whose token allows `allowed` may receive.
    pub fn admitted(&self, allowed: &[String]) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| self.admits(allowed, &c.name))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Channels whose access rule is stricter here than in `before` (a role now required, or a
    /// different one): tokens issued under `before` may list them for users who may no longer
    /// receive them, so the connections holding such tokens must fetch new ones.
    pub fn tightened_since(&self, before: &ChannelCatalog) -> Vec<String> {
        self.channels
            .iter()
            .filter(|now| match before.get(&now.name) {
                // Deleted and added again restricted: an earlier token may list it as it was.
                None => !now.is_open(),
                Some(then) => {
                    (now.admin_only && !then.admin_only)
                        || (now.required_role.is_some() && now.required_role != then.required_role)
                        || (now.admin_only && self.admin_role != before.admin_role)
                }
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// The longest retention of any channel: older notifications are never replayed.
    pub fn max_retention_ms(&self) -> i64 {
        self.channels
            .iter()
            .map(|c| c.retention_ms)
            .max()
            .unwrap_or(i64::from(defaults::RETENTION_DAYS) * DAY_MS)
    }

    pub fn retention_ms(&self, channel: &str) -> i64 {
        self.get(channel)
            .map_or_else(|| self.max_retention_ms(), |c| c.retention_ms)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Lists of channel names, each distinct list kept once and shared. A connection's allowed channels
/// follow from its user's roles, and most users' subscriptions are the channel defaults: thousands of
/// connections hold a handful of distinct lists, so sharing them saves a copy per connection.
#[derive(Debug, Default)]
pub struct ChannelLists {
    lists: Mutex<HashSet<Arc<[String]>>>,
}

/// Distinct lists kept at most; past it the set starts over (lists handed out stay valid, only new
/// ones are no longer shared with them).
const MAX_CHANNEL_LISTS: usize = 1_024;

impl ChannelLists {
    /// The shared list equal to `channels`.
    pub fn share(&self, channels: &[String]) -> Arc<[String]> {
        let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = lists.get(channels) {
            return list.clone();
        }
        if lists.len() >= MAX_CHANNEL_LISTS {
            lists.clear();
        }
        let list: Arc<[String]> = channels.into();
        lists.insert(list.clone());
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, types: &[&str]) -> ChannelEntry {
        ChannelEntry {
            name: name.into(),
            description: None,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            admin_only: false,
            required_role: None,
            default_subscribed: true,
            retention_days: None,
        }
    }

    #[test]
    fn default_set_covers_all_fourteen_types_once() {
        let catalog = ChannelCatalog::default_set(7);
        for kind in NotificationType::ALL {
            assert!(catalog.channel_of(*kind).is_some(), "{kind} has no channel");
        }
        let names: Vec<_> = catalog.channels().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["uploads", "social", "mocs", "quota", "system"]);
        assert_eq!(catalog.max_retention_ms(), 7 * DAY_MS);
    }

    #[test]
    fn open_channels_need_no_mention_in_the_token_restricted_ones_do() {
        let mut ops = spec("ops", &["maintenance_scheduled"]);
        ops.admin_only = true;
        let catalog =
            ChannelCatalog::from_entries(vec![spec("social", &["new_like"]), ops], "admin", 7).expect("catalog");
        let token_of_a_user: Vec<String> = vec![];
        assert!(
            catalog.admits(&token_of_a_user, "social"),
            "added after the token was issued"
        );
        assert!(!catalog.admits(&token_of_a_user, "ops"));
        assert!(catalog.admits(&["ops".to_owned()], "ops"));
        assert!(!catalog.admits(&["gone".to_owned()], "gone"), "not in the catalog");
        assert_eq!(catalog.admitted(&token_of_a_user), ["social"]);
    }

    #[test]
    fn a_channel_that_now_needs_a_role_it_did_not_is_tightened() {
        let open =
            ChannelCatalog::from_entries(vec![spec("a", &["new_like"]), spec("b", &["new_follower"])], "admin", 7)
                .expect("catalog");
        let mut a = spec("a", &["new_like"]);
        a.required_role = Some("staff".into());
        let mut b = spec("b", &["new_follower"]);
        b.admin_only = true;
        let strict = ChannelCatalog::from_entries(vec![a.clone(), b], "admin", 7).expect("catalog");
        assert_eq!(strict.tightened_since(&open), ["a", "b"]);
        assert!(
            open.tightened_since(&strict).is_empty(),
            "loosening needs no new tokens"
        );
        assert!(strict.tightened_since(&strict).is_empty());
        a.required_role = Some("ops".into());
        let other_role = ChannelCatalog::from_entries(vec![a], "admin", 7).expect("catalog");
        assert_eq!(other_role.tightened_since(&strict), ["a"], "another role");
    }

    #[test]
    fn a_type_claimed_twice_is_refused() {
        let err = ChannelCatalog::from_entries(vec![spec("a", &["new_like"]), spec("b", &["new_like"])], "admin", 7)
            .expect_err("conflict");
        assert!(
            err.contains("new_like") && err.contains("`a`") && err.contains("`b`"),
            "{err}"
        );
    }

    #[test]
    fn bad_names_and_unknown_types_are_refused() {
        assert!(ChannelCatalog::from_entries(vec![spec("Bad Name", &[])], "admin", 7).is_err());
        assert!(ChannelCatalog::from_entries(vec![spec("ok", &["nope"])], "admin", 7).is_err());
        assert!(ChannelCatalog::from_entries(vec![spec("ok", &[]), spec("ok", &[])], "admin", 7).is_err());
    }

    #[test]
    fn admin_only_and_required_role_gate_access() {
        let mut ops = spec("ops", &["maintenance_scheduled"]);
        ops.admin_only = true;
        let mut beta = spec("beta", &["moc_featured"]);
        beta.required_role = Some("beta".into());
        let catalog =
            ChannelCatalog::from_entries(vec![ops, beta, spec("social", &["new_like"])], "admin", 7).expect("valid");
        assert_eq!(catalog.allowed_for(&[]), ["social"]);
        assert_eq!(catalog.allowed_for(&["admin".into()]), ["ops", "social"]);
        assert_eq!(catalog.allowed_for(&["beta".into()]), ["beta", "social"]);
    }

    #[test]
    fn yaml_accepts_snake_and_camel_case() {
        let specs: Vec<ChannelEntry> = serde_norway::from_str(
            "- name: ops\n  types: [maintenance_scheduled]\n  adminOnly: true\n  retentionDays: 30\n\
             - name: social\n  types: [new_like]\n  default_subscribed: false\n",
        )
        .expect("yaml");
        let catalog = ChannelCatalog::from_entries(specs, "admin", 7).expect("valid");
        let ops = catalog.get("ops").expect("ops");
        assert!(ops.admin_only);
        assert_eq!(ops.retention_ms, 30 * DAY_MS);
        assert!(!catalog.get("social").expect("social").default_subscribed);
    }

    #[test]
    fn equal_channel_lists_are_one_allocation() {
        let lists = ChannelLists::default();
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let a = lists.share(&names(&["social", "system"]));
        let b = lists.share(&names(&["social", "system"]));
        let c = lists.share(&names(&["system", "social"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c), "order is part of the list");
        assert_eq!(*c, ["system", "social"]);
        assert!(Arc::ptr_eq(&lists.share(&[]), &lists.share(&[])));
        for i in 0..MAX_CHANNEL_LISTS + 1 {
            lists.share(&[i.to_string()]);
        }
        assert!(lists.lists.lock().expect("lock").len() <= MAX_CHANNEL_LISTS, "bounded");
        assert_eq!(
            *lists.share(&names(&["social", "system"])),
            *a,
            "still correct after starting over"
        );
    }
}
