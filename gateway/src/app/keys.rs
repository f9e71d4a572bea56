//! The signing keys in force, swappable at run time when the mounted keys file changes, and re-read
//! at once (at most once a second) when a token names a key the ring does not hold: during a
//! rotation another replica may sign with a key this one has not polled yet.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::domain::UnixMs;
use crate::domain::token::{ConnectionClaims, SigningKeys, TokenRejection};

/// Least time between two reads for unknown keys: tokens naming keys that exist nowhere (forged)
/// cost at most one file read a second.
pub const UNKNOWN_KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Reads the key set again (the mounted file); `None` when it cannot be read (the keys in force stay).
pub type KeyLoader = Box<dyn Fn() -> Option<SigningKeys> + Send + Sync>;

pub struct SigningKeyRing {
    current: RwLock<Arc<SigningKeys>>,
    loader: Option<KeyLoader>,
    last_load: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SigningKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRing")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl SigningKeyRing {
    pub fn new(keys: SigningKeys) -> Self {
        Self {
            current: RwLock::new(Arc::new(keys)),
            loader: None,
            last_load: Mutex::new(None),
        }
    }

    /// With a way to read the key set again when a token names an unknown key.
    pub fn with_loader(mut self, loader: KeyLoader) -> Self {
        self.loader = Some(loader);
        self
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

    /// Replaces the keys only if `read_against` is still the set in force: a reader that read the
    /// file before another reader's newer read must not put its older set back. `false` when it did not.
    pub fn replace_if_current(&self, read_against: &Arc<SigningKeys>, keys: SigningKeys) -> bool {
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Arc::ptr_eq(&current, read_against) {
            return false;
        }
        *current = Arc::new(keys);
        true
    }

    /// Verifies with the keys in force; a token naming a key they lack makes the ring read its keys
    /// again (rate-limited) and try once more.
    pub fn verify(&self, token: &str, now: UnixMs) -> Result<ConnectionClaims, TokenRejection> {
        match self.current().verify(token, now) {
            Err(TokenRejection::UnknownKey) if self.reload() => self.current().verify(token, now),
            outcome => outcome,
        }
    }

    /// Reads the keys again unless that was done within [`UNKNOWN_KEY_RELOAD_INTERVAL`]; `true`
    /// when a key set was read.
    fn reload(&self) -> bool {
        let Some(loader) = &self.loader else {
            return false;
        };
        {
            let mut last = self.last_load.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_RELOAD_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let before = self.current();
        match loader() {
            Some(keys) => {
                let kids: Vec<&str> = keys.keys().iter().map(|k| k.kid()).collect();
                tracing::info!(?kids, "signing-keys:reloaded (a token named an unknown key)");
                // If the watcher installed a set meanwhile, it read the file at least as late.
                self.replace_if_current(&before, keys);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::token::SigningKey;

    fn token(signer: &SigningKeys) -> String {
        let claims = ConnectionClaims {
            kid: String::new(),
            user_id: "alice".into(),
            issued_at: 0,
            expires_at: 60_000,
            token_id: uuid::Uuid::new_v4(),
            allowed_channels: None,
        };
        signer.sign(claims, 0).expect("sign").0
    }

    fn keys(kids: &[&str]) -> SigningKeys {
        SigningKeys::new(
            kids.iter()
                .map(|kid| {
                    SigningKey::new(*kid, format!("{kid}-k9X2m4Q7p1Z8r5T3w6Y0u2I4o6P8a1S3").into_bytes(), 0)
                        .expect("key")
                })
                .collect(),
        )
        .expect("keys")
    }

    #[test]
    fn an_unknown_key_reads_the_keys_again_at_most_once_a_second() {
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let ring = SigningKeyRing::new(keys(&["a"])).with_loader(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Some(keys(&["a", "b"]))
        }));
        let signed_by_b = token(&keys(&["b"]));
        assert!(ring.verify(&signed_by_b, 10).is_ok(), "read again, then verified");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let signed_by_c = token(&keys(&["c"]));
        assert_eq!(ring.verify(&signed_by_c, 10), Err(TokenRejection::UnknownKey));
        assert_eq!(ring.verify(&signed_by_c, 10), Err(TokenRejection::UnknownKey));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "not again within a second");
        assert!(ring.verify(&signed_by_b, 10).is_ok(), "a known key reads nothing");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
