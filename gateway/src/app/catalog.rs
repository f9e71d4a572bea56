//! The channel catalog in force, swappable at run time: a channel edit reaches running replicas
//! through the mounted settings file (`config::watch_channels`) without a restart, so no
//! connection drops. Every service reads the catalog through this handle, once per operation.

use std::sync::{Arc, RwLock};

use crate::domain::channel::ChannelCatalog;

/// A catalog and the checksum of the entries it was built from (`herald_contract::channels_checksum`;
/// the operator compares it with what it rendered).
#[derive(Debug)]
pub struct Served {
    pub catalog: Arc<ChannelCatalog>,
    pub checksum: String,
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

    pub fn replace(&self, catalog: ChannelCatalog, checksum: String) {
        *self.served.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Served {
            catalog: Arc::new(catalog),
            checksum,
        });
    }
}
