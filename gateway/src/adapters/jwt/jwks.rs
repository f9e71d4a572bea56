//! The issuer's key set (JWKS): fetched when a token needs it, kept for [`JWKS_MAX_AGE`], fetched
//! again when stale or when a token names a key the set lacks. This module owns every request the
//! gateway makes to the issuer and how often one may happen; it knows nothing of token claims.
//!
//! Tokens arrive from anyone, and an attacker chooses their `kid`: so at most one fetch runs at a
//! time, and every verification that needs the set waits for that one (single flight); a fetch gives
//! up after [`JWKS_FETCH_TIMEOUT`]; and after any fetch, successful or failed, the next one waits
//! [`JWKS_MIN_REFETCH`], whatever tokens arrive meanwhile (they are answered from what is known).
//! Before, each forged token fetched in turn: with the issuer silent, 8 tokens took 5 to 40 s.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use reqwest::Url;

use crate::domain::UnixMs;
use crate::error::{Error, Result};
use crate::ports::Clock;

/// How long a fetched key set is used before a token makes the gateway fetch it again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Shortest time between the end of one fetch and the start of the next: after a failure (negative
/// caching) and after a fetch an unknown `kid` caused, so forged tokens cannot hammer the issuer.
/// A rotated key is still picked up: the issuer publishes it, the first token naming it refetches.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// A fetch that has not completed by then (connect, answer and body) has failed.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted: issuers publish a few keys of a few hundred bytes each.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
pub const MAX_JWKS_KEYS: usize = 100;

/// `https://`, or plain `http://` to this machine only (a sidecar, tests). A key set fetched over
/// plain HTTP from anywhere else can be replaced in transit, and whoever replaces it can sign a JWT
/// for any user.
pub fn is_allowed_jwks_url(url: &Url) -> bool {
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => true,
        ("http", Some("localhost")) => true,
        ("http", Some(host)) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        _ => false,
    }
}

/// Where key sets come from: the issuer over HTTP when serving, a fake in tests.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The current key set, or why it could not be had (logged, and in a 503's log line).
    async fn fetch(&self) -> Result<JwkSet, String>;
}

/// The issuer's JWKS URL, read with a bounded body and redirects only to allowed URLs.
pub struct HttpJwks {
    url: Url,
    client: reqwest::Client,
}

impl HttpJwks {
    pub fn new(url: Url) -> Self {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if is_allowed_jwks_url(attempt.url()) {
                attempt.follow()
            } else {
                attempt.error("redirected to a URL that is neither https:// nor loopback")
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .timeout(JWKS_FETCH_TIMEOUT)
            .redirect(redirects)
            .build()
            .expect("a rustls client with timeouts and a redirect policy always builds");
        Self { url, client }
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let fetched: Result<Vec<u8>, String> = async {
            let mut response = self
                .client
                .get(self.url.clone())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| e.to_string())?;
            if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
        .await;
        let body = fetched.map_err(|e| format!("cannot fetch JWKS from {}: {e}", self.url))?;
        serde_json::from_slice(&body).map_err(|e| format!("JWKS from {} is not a key set: {e}", self.url))
    }
}

/// What a fetch ended with, shared by every verification that waited for it.
type Outcome = Result<Arc<JwkSet>, Arc<str>>;

/// The key set, when it was fetched, and the one fetch that may be running.
pub struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn JwksSource>,
    clock: Arc<dyn Clock>,
    min_refetch_ms: UnixMs,
    fetch_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last key set fetched, and when.
    keys: Option<(Arc<JwkSet>, UnixMs)>,
    /// When the last fetch ended, and its error if it failed.
    last_fetch: Option<(UnixMs, Option<Arc<str>>)>,
    /// The fetch running now, which every verification that needs the set awaits.
    in_flight: Option<Shared<BoxFuture<'static, Outcome>>>,
}

impl JwksCache {
    pub fn new(
        source: Arc<dyn JwksSource>,
        clock: Arc<dyn Clock>,
        min_refetch: Duration,
        fetch_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                clock,
                min_refetch_ms: UnixMs::try_from(min_refetch.as_millis()).unwrap_or(UnixMs::MAX),
                fetch_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The key a token signed with `alg` (naming `kid`) is checked with. 401 `jwt_invalid` when the
    /// issuer's current set has no such key; 503 `unavailable` when the set cannot be had and no
    /// cached key fits (the key may well exist: a retry can succeed).
    pub async fn find(&self, alg: Algorithm, kid: Option<&str>) -> Result<Jwk> {
        let fetch = {
            let now = self.inner.clock.now_ms();
            let mut state = self.inner.lock();
            if let Some((set, fetched_at)) = &state.keys {
                if now - fetched_at < JWKS_MAX_AGE.as_millis() as UnixMs {
                    if let Some(jwk) = select(set, alg, kid) {
                        return Ok(jwk);
                    }
                }
            }
            match &state.in_flight {
                Some(running) => running.clone(),
                None if state.may_fetch(now, self.inner.min_refetch_ms) => {
                    let started = Inner::start_fetch(&self.inner);
                    state.in_flight = Some(started.clone());
                    started
                }
                None => return state.answer_without_fetch(alg, kid),
            }
        };
        match fetch.await {
            Ok(set) => select(&set, alg, kid).ok_or_else(no_matching_key),
            // Keep serving from a stale set while the issuer is unreachable.
            Err(err) => match self
                .inner
                .lock()
                .keys
                .as_ref()
                .and_then(|(set, _)| select(set, alg, kid))
            {
                Some(jwk) => Ok(jwk),
                None => Err(Error::Unavailable(err.to_string())),
            },
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one fetch in a task of its own, so that it completes (and is remembered) even when every
    /// request waiting for it has gone.
    fn start_fetch(inner: &Arc<Inner>) -> Shared<BoxFuture<'static, Outcome>> {
        let this = inner.clone();
        let task = tokio::spawn(async move {
            let fetched = match tokio::time::timeout(this.fetch_timeout, this.source.fetch()).await {
                Ok(fetched) => fetched.and_then(within_bounds),
                Err(_) => Err(format!("no JWKS within {:?}", this.fetch_timeout)),
            };
            this.finish(fetched)
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::from(format!("the JWKS fetch failed: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// Remembers what a fetch ended with (and when: the next may start [`JWKS_MIN_REFETCH`] later).
    fn finish(&self, fetched: Result<JwkSet, String>) -> Outcome {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        state.in_flight = None;
        match fetched {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "jwks:fetched");
                let set = Arc::new(set);
                state.keys = Some((set.clone(), now));
                state.last_fetch = Some((now, None));
                Ok(set)
            }
            Err(err) => {
                tracing::warn!(error = %err, "jwks:fetch-failed");
                let err: Arc<str> = Arc::from(err);
                state.last_fetch = Some((now, Some(err.clone())));
                Err(err)
            }
        }
    }
}

impl State {
    fn may_fetch(&self, now: UnixMs, min_refetch_ms: UnixMs) -> bool {
        self.last_fetch
            .as_ref()
            .is_none_or(|(ended, _)| now - ended >= min_refetch_ms)
    }

    /// Too soon to fetch again: a cached key (even stale), else the last failure (503), else no key.
    fn answer_without_fetch(&self, alg: Algorithm, kid: Option<&str>) -> Result<Jwk> {
        if let Some(jwk) = self.keys.as_ref().and_then(|(set, _)| select(set, alg, kid)) {
            return Ok(jwk);
        }
        match &self.last_fetch {
            Some((_, Some(err))) => Err(Error::Unavailable(err.to_string())),
            _ => Err(no_matching_key()),
        }
    }
}

fn within_bounds(set: JwkSet) -> Result<JwkSet, String> {
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(format!(
            "the key set has {} keys, more than the {MAX_JWKS_KEYS} accepted",
            set.keys.len()
        ));
    }
    Ok(set)
}

fn no_matching_key() -> Error {
    Error::JwtInvalid("no JWKS key matches the token's kid and algorithm".into())
}

/// The key a token may be checked with: same `kid` (or the only candidate when the token names none),
/// a signing key, of the family the algorithm needs, and of the same `alg` when the JWK names one.
fn select(set: &JwkSet, alg: Algorithm, kid: Option<&str>) -> Option<Jwk> {
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter(|jwk| family_matches(jwk, alg))
        .filter(|jwk| {
            jwk.common
                .key_algorithm
                .is_none_or(|named| format!("{named:?}") == format!("{alg:?}"))
        })
        .collect();
    match kid {
        Some(kid) => candidates
            .into_iter()
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None if candidates.len() == 1 => candidates.first().map(|jwk| (*jwk).clone()),
        None => None,
    }
}

fn family_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
