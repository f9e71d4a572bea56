//! Writes the seed corpora (`fuzz/corpus/<target>/`): a few valid and near-valid inputs per target,
//! signed with the fixtures of `src/lib.rs`. Run it again after changing a fixture:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`. Files it does not name are
//! left alone (libFuzzer adds its own findings to the same folders during a run, which we do not
//! commit).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_fuzz::{JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, NOW, TOKEN_KEYS, hs256, signing_keys};
use herald_gateway::domain::token::{ConnectionClaims, SigningKey, SigningKeys};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// 2100-01-01: far enough that a committed seed stays unexpired for the system-clock JWT checks.
const FAR_FUTURE_SECS: u64 = 4_102_444_800;
const ID: &str = "7f0c1a3e-8f51-4a51-9a43-5b4c3f0b8c11";

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, contents: &str| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), contents)
    };

    for (name, token) in connection_tokens() {
        write("connection_token", name, &token)?;
    }
    for (name, token) in user_jwts() {
        write("user_jwt", name, &token)?;
    }
    for (name, frame) in client_messages() {
        write("client_message", name, &frame)?;
    }
    for (name, body) in publish_bodies() {
        write("publish_body", name, &body.to_string())?;
    }
    write("publish_body", "not-json", "{\"userIds\": [\"a\",")?;
    write("publish_body", "not-an-object", "[1, 2]")?;
    Ok(())
}

fn claims(user_id: &str, expires_at: i64, allowed_channels: Option<Vec<&str>>) -> ConnectionClaims {
    ConnectionClaims {
        kid: String::new(),
        user_id: user_id.into(),
        issued_at: NOW - 1_000,
        expires_at,
        token_id: uuid::Uuid::from_u128(0x7f0c_1a3e_8f51_4a51_9a43_5b4c_3f0b_8c11),
        allowed_channels: allowed_channels.map(|c| c.into_iter().map(str::to_owned).collect()),
    }
}

fn connection_tokens() -> Vec<(&'static str, String)> {
    let keys = signing_keys();
    let sign = |keys: &SigningKeys, claims| keys.sign(claims, NOW).expect("sign").0;
    let (old_kid, old_secret, _) = TOKEN_KEYS[0];
    let old_only = SigningKeys::new(vec![SigningKey::new(old_kid, old_secret.to_vec(), 0).expect("key")]).expect("set");
    let stranger = SigningKeys::new(vec![
        SigningKey::new("stranger", b"someone else's key 0123456789abcdefgh".to_vec(), 0).expect("key"),
    ])
    .expect("set");

    let valid = sign(keys, claims("alice", NOW + 60_000, Some(vec!["uploads", "social"])));
    // The same payload under a MAC of another payload: a forgery attempt.
    let other = sign(keys, claims("mallory", NOW + 60_000, None));
    let (payload, _) = valid.split_once('.').expect("two parts");
    let (_, other_signature) = other.split_once('.').expect("two parts");
    // A payload with a field the claims refuse, correctly signed.
    let extra = URL_SAFE_NO_PAD.encode(
        json!({"kid": "new", "userId": "alice", "issuedAt": NOW, "expiresAt": NOW + 60_000,
               "tokenId": ID, "admin": true})
        .to_string(),
    );
    let (_, new_secret, _) = TOKEN_KEYS[1];
    vec![
        ("valid-new-key", valid.clone()),
        ("valid-old-key", sign(&old_only, claims("bob", NOW + 60_000, None))),
        ("valid-no-channels", sign(keys, claims("carol", NOW + 1, Some(vec![])))),
        ("expired", sign(keys, claims("alice", NOW, None))),
        ("unknown-kid", sign(&stranger, claims("alice", NOW + 60_000, None))),
        ("forged-signature", format!("{payload}.{other_signature}")),
        (
            "unknown-field",
            format!("{extra}.{}", hs256(new_secret, extra.as_bytes())),
        ),
        ("no-dot", "no-dot".into()),
        ("not-base64", "!!.??".into()),
    ]
}

fn jwt(header: Header, claims: Value) -> String {
    encode(&header, &claims, &EncodingKey::from_secret(JWT_SECRET)).expect("encode")
}

fn user_jwts() -> Vec<(&'static str, String)> {
    let hs = || Header::new(Algorithm::HS256);
    let base = |extra: Value| {
        let mut claims = json!({"sub": "alice", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": FAR_FUTURE_SECS,
                                "roles": ["admin", "ops"]});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        claims
    };
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let valid = jwt(hs(), base(json!({})));
    let (_, rest) = valid.split_once('.').expect("parts");
    let mut unknown_kid = hs();
    unknown_kid.kid = Some("k1".into());
    vec![
        ("valid", valid.clone()),
        (
            "valid-audience-list-role-string",
            jwt(hs(), base(json!({"aud": ["other", JWT_AUDIENCE], "roles": "a b,c"}))),
        ),
        ("valid-with-kid", jwt(unknown_kid, base(json!({"nbf": 0, "iat": 1})))),
        ("expired", jwt(hs(), base(json!({"exp": 1_000_000})))),
        ("not-yet-valid", jwt(hs(), base(json!({"nbf": FAR_FUTURE_SECS})))),
        ("wrong-issuer", jwt(hs(), base(json!({"iss": "https://evil.example"})))),
        ("wrong-audience", jwt(hs(), base(json!({"aud": "other"})))),
        ("empty-sub", jwt(hs(), base(json!({"sub": ""})))),
        ("numeric-sub", jwt(hs(), base(json!({"sub": 42})))),
        (
            "alg-none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(base(json!({})))
            ),
        ),
        (
            "alg-confusion-rs256",
            format!("{}.{rest}", b64(json!({"alg": "RS256", "typ": "JWT"}))),
        ),
        (
            "wrong-secret",
            encode(&hs(), &base(json!({})), &EncodingKey::from_secret(b"not the secret")).expect("encode"),
        ),
    ]
}

fn client_messages() -> Vec<(&'static str, String)> {
    let frame = |kind: &str, payload: Value| {
        json!({"id": ID, "type": kind, "timestamp": 1_700_000_000_000u64, "payload": payload}).to_string()
    };
    vec![
        ("ping", frame("ping", json!({}))),
        (
            "subscribe",
            frame("subscribe", json!({"channels": ["uploads", "social"]})),
        ),
        ("unsubscribe", frame("unsubscribe", json!({"channels": ["uploads"]}))),
        ("ack", frame("notification:ack", json!({"notificationId": ID}))),
        ("unknown-type", frame("dance", json!({}))),
        ("bad-channels", frame("subscribe", json!({"channels": ["ok", 1]}))),
        ("bad-ack", frame("notification:ack", json!({"notificationId": "nope"}))),
        (
            "simple-uuid-float-timestamp",
            r#"{"id":"7f0c1a3e8f514a519a435b4c3f0b8c11","type":"ping","timestamp":1.5e3,"payload":{}}"#.into(),
        ),
        (
            "no-payload",
            json!({"id": ID, "type": "ping", "timestamp": 1}).to_string(),
        ),
        ("not-an-object", "[1,2]".into()),
        ("not-json", "{\"id\":".into()),
    ]
}

fn publish_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "minimal",
            json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "Someone liked your MOC"}}),
        ),
        (
            "every-field",
            json!({"userIds": ["alice", "bob", "alice"], "notification": {
                "type": "upload_complete", "title": "  Upload done ", "body": "line 1\nline 2\ttab",
                "icon": "check", "actionUrl": "https://app.example/mocs/42?tab=1#top",
                "data": {"mocId": 42, "tags": ["a", "b"], "nested": {"x": null}},
                "expiresAt": NOW + 86_400_000, "channel": "uploads"}}),
        ),
        (
            "relative-link",
            json!({"userIds": ["u"], "notification": {"type": "new_comment", "title": "t", "actionUrl": "/mocs/1"}}),
        ),
        (
            "every-problem",
            json!({"userIds": ["ok", "", 7], "extra": 1, "notification": {
                "type": "launch_rockets", "title": "\u{7}", "body": "a\u{0}b", "icon": 5,
                "actionUrl": "javascript:alert(1)", "data": [1], "expiresAt": 5, "colour": "red"}}),
        ),
        (
            "unsafe-links",
            json!({"userIds": ["u"], "notification": {"type": "new_like", "title": "t",
                "actionUrl": "https://user@evil.example/"}}),
        ),
        (
            "protocol-relative",
            json!({"userIds": ["u"], "notification": {"type": "new_like", "title": "t", "actionUrl": "//evil.example"}}),
        ),
        (
            "empty-recipients",
            json!({"userIds": [], "notification": {"type": "new_like", "title": "t"}}),
        ),
        ("nulls", json!({"userIds": null, "notification": null})),
    ]
}
