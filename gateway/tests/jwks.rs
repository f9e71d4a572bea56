//! User JWTs verified against a real local JWKS endpoint serving RSA and EC keys.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{TempDir, TestGateway, options, start_config};
use herald_gateway::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Read where the test runs (the checkout cargo runs it from), not built in with `env!`: a build
/// reused from a checkout elsewhere would read that checkout's files.
fn fixture(name: &str) -> String {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs");
    std::fs::read_to_string(format!("{crate_dir}/tests/fixtures/{name}")).expect("fixture")
}

/// A JWKS endpoint whose key set can be swapped, counting its fetches.
#[derive(Clone)]
struct Issuer {
    jwks: Arc<std::sync::RwLock<String>>,
    fetches: Arc<AtomicUsize>,
    addr: SocketAddr,
}

impl Issuer {
    async fn start(jwks: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Issuer {
            jwks: Arc::new(std::sync::RwLock::new(jwks)),
            fetches: Arc::default(),
            addr,
        };
        let state = issuer.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let body = state.jwks.read().expect("lock").clone();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn serve(&self, jwks: String) {
        *self.jwks.write().expect("lock") = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn gateway(jwks_url: String, min_refetch: Duration) -> TestGateway {
    let dir = TempDir::new();
    let mut options = options(&dir);
    options.jwt_hs256_secret = None;
    options.jwt_jwks_url = Some(jwks_url);
    options.jwt_issuer = Some("https://issuer.test".into());
    options.jwt_audience = Some("herald".into());
    let mut config = Config::resolve(options).expect("config");
    config.jwt.jwks_min_refetch = min_refetch;
    start_config(dir, config).await
}

fn claims(sub: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    json!({"sub": sub, "iss": "https://issuer.test", "aud": "herald", "exp": now + 300, "roles": ["admin"]})
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(name).as_bytes()).expect("rsa key")
}

async fn issue_status(gw: &TestGateway, jwt: &str) -> (u16, Value) {
    let response = gw.post_token(Some(jwt)).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_jwks_issue_connection_tokens() {
    let issuer = Issuer::start(fixture("jwks.json")).await;
    let gw = gateway(issuer.url(), Duration::from_secs(60)).await;
    let rs = sign(Algorithm::RS256, "rsa-1", &rsa("rsa-private.pem"), &claims("alice"));
    assert_eq!(issue_status(&gw, &rs).await.0, 200);
    let ec_key = EncodingKey::from_ec_pem(fixture("ec-private.pem").as_bytes()).expect("ec key");
    let es = sign(Algorithm::ES256, "ec-1", &ec_key, &claims("bob"));
    assert_eq!(issue_status(&gw, &es).await.0, 200);
    assert_eq!(issuer.fetches(), 1, "the key set is cached");

    // Wrong issuer or audience, even when properly signed.
    let mut wrong = claims("alice");
    wrong["aud"] = json!("someone-else");
    let (status, body) = issue_status(&gw, &sign(Algorithm::RS256, "rsa-1", &rsa("rsa-private.pem"), &wrong)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("jwt_invalid")));
}

#[tokio::test]
async fn algorithm_confusion_and_hs256_are_refused_when_only_jwks_is_configured() {
    let issuer = Issuer::start(fixture("jwks.json")).await;
    let gw = gateway(issuer.url(), Duration::from_secs(60)).await;
    // HS256 keyed with the issuer's public JWKS material: the classic confusion attack.
    let confused = sign(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(fixture("jwks.json").as_bytes()),
        &claims("alice"),
    );
    assert_eq!(issue_status(&gw, &confused).await.0, 401);
    // An ES256 header over an RSA key id: refused, the key family must match the algorithm.
    let ec_key = EncodingKey::from_ec_pem(fixture("ec-private.pem").as_bytes()).expect("ec key");
    assert_eq!(
        issue_status(&gw, &sign(Algorithm::ES256, "rsa-1", &ec_key, &claims("alice")))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_to_pick_up_a_rotated_key() {
    let issuer = Issuer::start(fixture("jwks.json")).await;
    let gw = gateway(issuer.url(), Duration::ZERO).await;
    let old = sign(Algorithm::RS256, "rsa-1", &rsa("rsa-private.pem"), &claims("alice"));
    assert_eq!(issue_status(&gw, &old).await.0, 200);
    issuer.serve(fixture("jwks-rotated.json"));
    let new = sign(
        Algorithm::RS256,
        "rsa-2",
        &rsa("rsa-other-private.pem"),
        &claims("alice"),
    );
    assert_eq!(issue_status(&gw, &new).await.0, 200);
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn unknown_kids_cannot_make_the_gateway_hammer_the_issuer() {
    let issuer = Issuer::start(fixture("jwks.json")).await;
    let gw = gateway(issuer.url(), Duration::from_secs(60)).await;
    let known = sign(Algorithm::RS256, "rsa-1", &rsa("rsa-private.pem"), &claims("alice"));
    assert_eq!(issue_status(&gw, &known).await.0, 200);
    let unknown = sign(
        Algorithm::RS256,
        "rsa-2",
        &rsa("rsa-other-private.pem"),
        &claims("alice"),
    );
    for _ in 0..20 {
        let (status, body) = issue_status(&gw, &unknown).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("jwt_invalid")));
    }
    assert_eq!(issuer.fetches(), 1, "refetches are throttled");
}

#[tokio::test]
async fn an_unreachable_issuer_answers_503_not_401() {
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks.json", unused.local_addr().expect("addr"));
    drop(unused);
    let gw = gateway(url, Duration::ZERO).await;
    let jwt = sign(Algorithm::RS256, "rsa-1", &rsa("rsa-private.pem"), &claims("alice"));
    let (status, body) = issue_status(&gw, &jwt).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));
}
