//! The channel catalog in force, swappable at run time: a channel edit reaches running replicas
//! through the mounted settings file (`config::watch_channels`) without a restart, so no
//! connection drops. Every service reads the catalog through this handle, once per operation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::UnixMs;
use crate::domain::channel::ChannelCatalog;

/// A catalog and the checksum of the entries it was built from (`herald_contract::channels_checksum`;
/// the operator compares it with what it rendered).
#[derive(Debug)]
pub struct Served {
    pub catalog: Arc<ChannelCatalog>,
    pub checksum: String,
    /// When each channel whose access a reload made stricter was last made so: a token issued
    /// before that instant may list it under the looser rule, and must not grant it.
    pub tightened_at: HashMap<String, UnixMs>,
}

#[derive(Debug)]
pub struct LiveCatalog {
    served: RwLock<Arc<Served>>,
}

impl LiveCatalog {
    pub fn new(catalog: ChannelCatalog, checksum: String) -> Self {
        Self {
            served: RwLock::new(Arc::new(Served {
                catalog: Arc::new(catalog),
                checksum,
                tightened_at: HashMap::new(),
            })),
        }
    }

    /// A catalog that is never replaced (tests, and gateways without a settings file).
    pub fn fixed(catalog: ChannelCatalog) -> Arc<Self> {
        Arc::new(Self::new(catalog, String::new()))
    }

    /// The catalog in force: hold it for one operation, so that the operation sees one catalog.
    pub fn current(&self) -> Arc<ChannelCatalog> {
        self.served().catalog.clone()
    }

    pub fn served(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Installs `catalog`; `tightened` are its channels whose access became stricter at `now`.
    pub fn replace(&self, catalog: ChannelCatalog, checksum: String, tightened: &[String], now: UnixMs) {
        let mut served = self.served.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tightened_at = served.tightened_at.clone();
        tightened_at.retain(|name, _| catalog.get(name).is_some());
        for name in tightened {
            tightened_at.insert(name.clone(), now);
        }
        *served = Arc::new(Served {
            catalog: Arc::new(catalog),
            checksum,
            tightened_at,
        });
    }

    /// The channels of a token issued at `issued_at` that it may still grant: those listed, less
    /// any whose access was made stricter after it was issued.
    pub fn still_granted(&self, listed: Vec<String>, issued_at: UnixMs) -> Vec<String> {
        let served = self.served();
        if served.tightened_at.is_empty() {
            return listed;
        }
        listed
            .into_iter()
            .filter(|name| served.tightened_at.get(name).is_none_or(|at| issued_at >= *at))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use herald_contract::ChannelEntry;

    use super::*;

    fn catalog(admin_only: bool) -> ChannelCatalog {
        let entry = ChannelEntry {
            name: "ops".into(),
            description: None,
            types: vec!["maintenance_scheduled".into()],
            admin_only,
            required_role: None,
            default_subscribed: true,
            retention_days: None,
        };
        ChannelCatalog::from_entries(vec![entry], "admin", 7).expect("catalog")
    }

    #[test]
    fn a_token_issued_before_a_channel_was_tightened_no_longer_grants_it() {
        let live = LiveCatalog::new(catalog(false), String::new());
        let listed = || vec!["ops".to_owned(), "social".to_owned()];
        assert_eq!(live.still_granted(listed(), 5), listed(), "nothing tightened yet");
        live.replace(catalog(true), "b".into(), &["ops".to_owned()], 1_000);
        assert_eq!(
            live.still_granted(listed(), 999),
            ["social"],
            "issued before: ops dropped"
        );
        assert_eq!(
            live.still_granted(listed(), 1_000),
            listed(),
            "issued under the new rule"
        );
        // Another reload keeps the instant; a channel removed is forgotten.
        live.replace(catalog(true), "b".into(), &[], 2_000);
        assert_eq!(live.still_granted(listed(), 999), ["social"]);
    }
}
