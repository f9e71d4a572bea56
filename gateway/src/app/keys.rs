//! The signing keys in force, swappable at run time when the mounted keys file changes.

use std::sync::{Arc, RwLock};

use crate::domain::token::SigningKeys;

#[derive(Debug)]
pub struct SigningKeyRing {
    current: RwLock<Arc<SigningKeys>>,
}

impl SigningKeyRing {
    pub fn new(keys: SigningKeys) -> Self {
        Self {
            current: RwLock::new(Arc::new(keys)),
        }
    }

    pub fn current(&self) -> Arc<SigningKeys> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, keys: SigningKeys) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }
}
