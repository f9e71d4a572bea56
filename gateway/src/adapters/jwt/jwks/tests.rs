use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::*;
use crate::adapters::clock::ManualClock;

const JWKS: &str = include_str!("../../../../tests/fixtures/jwks.json");
const ROTATED: &str = include_str!("../../../../tests/fixtures/jwks-rotated.json");

#[derive(Clone)]
enum Answer {
    Keys(String),
    Fail,
    Never,
}

/// An issuer that answers as told and counts the fetches it saw.
struct FakeIssuer {
    answer: Mutex<Answer>,
    fetches: AtomicUsize,
}

impl FakeIssuer {
    fn new(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(answer),
            fetches: AtomicUsize::new(0),
        })
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JwksSource for FakeIssuer {
    async fn fetch(&self) -> Result<JwkSet, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("lock").clone();
        match answer {
            Answer::Keys(json) => Ok(serde_json::from_str(&json).expect("a key set")),
            Answer::Fail => Err("connection refused".into()),
            Answer::Never => std::future::pending().await,
        }
    }
}

const TIMEOUT: Duration = Duration::from_millis(200);

fn cache(issuer: &Arc<FakeIssuer>, clock: &Arc<ManualClock>) -> Arc<JwksCache> {
    Arc::new(JwksCache::new(issuer.clone(), clock.clone(), JWKS_MIN_REFETCH, TIMEOUT))
}

fn setup(answer: Answer) -> (Arc<FakeIssuer>, Arc<ManualClock>, Arc<JwksCache>) {
    let issuer = FakeIssuer::new(answer);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cache = cache(&issuer, &clock);
    (issuer, clock, cache)
}

fn advance(clock: &ManualClock, by: Duration) {
    clock.advance(by.as_millis() as i64);
}

#[tokio::test]
async fn concurrent_forged_kids_share_one_fetch_bounded_by_one_timeout() {
    let (issuer, _clock, cache) = setup(Answer::Never);
    let started = Instant::now();
    let lookups = (0..16).map(|i| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.find(Algorithm::RS256, Some(&format!("forged-{i}"))).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert!(matches!(lookup.expect("task"), Err(Error::Unavailable(_))));
    }
    assert!(
        started.elapsed() < TIMEOUT * 4,
        "one timeout, not one per token: {:?}",
        started.elapsed()
    );
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn a_failed_fetch_is_remembered_until_the_minimum_interval_passed() {
    let (issuer, clock, cache) = setup(Answer::Fail);
    for _ in 0..5 {
        assert!(matches!(
            cache.find(Algorithm::RS256, Some("rsa-1")).await,
            Err(Error::Unavailable(_))
        ));
    }
    assert_eq!(issuer.fetches(), 1, "negative caching");
    issuer.answer(Answer::Keys(JWKS.into()));
    advance(&clock, JWKS_MIN_REFETCH - Duration::from_millis(1));
    assert!(cache.find(Algorithm::RS256, Some("rsa-1")).await.is_err());
    advance(&clock, Duration::from_millis(1));
    assert!(cache.find(Algorithm::RS256, Some("rsa-1")).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval_and_pick_up_rotated_keys() {
    let (issuer, clock, cache) = setup(Answer::Keys(JWKS.into()));
    assert!(cache.find(Algorithm::RS256, Some("rsa-1")).await.is_ok());
    for i in 0..20 {
        assert!(matches!(
            cache.find(Algorithm::RS256, Some(&format!("forged-{i}"))).await,
            Err(Error::JwtInvalid(_))
        ));
    }
    assert_eq!(issuer.fetches(), 1, "forged kids fetch nothing within the interval");
    // The issuer rotates: the first token naming the new key after the interval fetches it.
    issuer.answer(Answer::Keys(ROTATED.into()));
    advance(&clock, JWKS_MIN_REFETCH);
    assert!(cache.find(Algorithm::RS256, Some("rsa-2")).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn a_stale_set_keeps_serving_while_the_issuer_fails() {
    let (issuer, clock, cache) = setup(Answer::Keys(JWKS.into()));
    assert!(cache.find(Algorithm::RS256, Some("rsa-1")).await.is_ok());
    issuer.answer(Answer::Fail);
    advance(&clock, JWKS_MAX_AGE);
    assert!(
        cache.find(Algorithm::RS256, Some("rsa-1")).await.is_ok(),
        "stale key served"
    );
    assert!(
        cache.find(Algorithm::ES256, Some("ec-1")).await.is_ok(),
        "no refetch yet"
    );
    assert_eq!(issuer.fetches(), 2);
    // A key the stale set lacks cannot be vouched for while the issuer fails: 503, not 401.
    assert!(matches!(
        cache.find(Algorithm::RS256, Some("rsa-2")).await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_fetch_completes_and_is_remembered_when_its_waiters_are_gone() {
    let (issuer, _clock, cache) = setup(Answer::Keys(JWKS.into()));
    // Polled once (the fetch starts), then dropped, as when a client disconnects.
    let abandoned = cache.find(Algorithm::RS256, Some("rsa-1")).now_or_never();
    assert!(abandoned.is_none(), "still waiting when dropped: {abandoned:?}");
    let finished = tokio::time::timeout(Duration::from_secs(5), async {
        while cache.inner.lock().in_flight.is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(finished.is_ok(), "the fetch ran to its end");
    assert!(cache.find(Algorithm::RS256, Some("rsa-1")).await.is_ok());
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn a_set_with_too_many_keys_is_refused() {
    let many = serde_json::json!({"keys": (0..=MAX_JWKS_KEYS).map(|i| serde_json::json!({
        "kty": "oct", "kid": format!("k{i}"), "k": "c2VjcmV0"
    })).collect::<Vec<_>>()})
    .to_string();
    let (_issuer, _clock, cache) = setup(Answer::Keys(many));
    assert!(matches!(
        cache.find(Algorithm::RS256, Some("k1")).await,
        Err(Error::Unavailable(err)) if err.contains("more than")
    ));
}

#[test]
fn only_https_or_loopback_http_urls_are_allowed() {
    for allowed in [
        "https://issuer.example/.well-known/jwks.json",
        "https://10.0.0.1/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://127.0.0.2/jwks",
        "http://[::1]:9000/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST:80/jwks",
    ] {
        assert!(is_allowed_jwks_url(&Url::parse(allowed).expect("url")), "{allowed}");
    }
    for refused in [
        "http://issuer.example/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.evil.example/jwks",
        "http://127.0.0.1.evil.example/jwks",
        "http://[::ffff:10.0.0.1]/jwks",
        "ftp://issuer.example/jwks",
        "file:///etc/jwks.json",
    ] {
        assert!(!is_allowed_jwks_url(&Url::parse(refused).expect("url")), "{refused}");
    }
}

#[tokio::test]
async fn an_oversized_key_set_is_not_read_past_the_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await;
        // No Content-Length: the bound must hold while reading, not only on the header.
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"keys\":[")
            .await;
        let filler = vec![b' '; 64 * 1024];
        for _ in 0..32 {
            if socket.write_all(&filler).await.is_err() {
                break;
            }
        }
    });
    let err = HttpJwks::new(url).fetch().await.expect_err("too large");
    assert!(err.contains("larger than"), "{err}");
}
