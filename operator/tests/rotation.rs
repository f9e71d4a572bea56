//! Key rotation end to end, without Kubernetes: two real gateway processes, each reading its keys
//! from a directory laid out the way kubelet mounts a Secret (`keys.json -> ..data/keys.json`,
//! `..data -> ..<n>`, swapped by renaming a new symlink over `..data`), rotated by
//! `herald_operator::rotation` and written to the two directories at different moments. Clients
//! take tokens from one gateway and connect with them to the other, continuously, through three
//! rotations: not one is refused. Then a revoked key's token is refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herald_e2e::{GatewayProcess, JWT_ISSUER_AND_AUDIENCE, KubeletMount, TempDir};
use herald_operator::keys::{random_secret_base64, to_json};
use herald_operator::rotation::{Policy, Step, active, revoke, rotate};
use k8s_openapi::jiff::Timestamp;

const JWT_SECRET: &str = "rotation-test-user-jwt-secret-0123456789-abcdef";
/// Tokens live 3 s here (60 s by default), so that three rotations fit in seconds.
const TOKEN_TTL_SECONDS: u64 = 3;

fn start_gateway(keys_file: &Path) -> GatewayProcess {
    let keys_file = keys_file.to_string_lossy().into_owned();
    let ttl = TOKEN_TTL_SECONDS.to_string();
    GatewayProcess::start(
        &[],
        &[
            ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
            JWT_ISSUER_AND_AUDIENCE[0],
            JWT_ISSUER_AND_AUDIENCE[1],
            ("HERALD_SIGNING_KEYS_FILE", keys_file.as_str()),
            ("WEBSOCKET_TOKEN_TTL_SECONDS", ttl.as_str()),
            ("WEBSOCKET_MAX_TOKENS_PER_MINUTE", "100000"),
            ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", "100000"),
        ],
    )
}

/// The whole seconds of now: key times are written with second precision.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("time")
}

#[tokio::test]
async fn tokens_of_one_gateway_always_connect_to_another_through_three_rotations_and_a_revoked_key_fails() {
    let policy = Policy {
        interval: Duration::from_secs(4),
        // Longer than the lag between the two directories' updates (0.5 s), plus second rounding.
        propagation: Duration::from_secs(3),
        token_ttl: Duration::from_secs(TOKEN_TTL_SECONDS),
        skew: Duration::ZERO,
        grace: Duration::from_secs(1),
    };
    let mut made = 0;
    let mut new_key = move || {
        made += 1;
        (format!("k{made}"), random_secret_base64())
    };
    let (mut keys, _) = rotate(&[], now(), &policy, false, &mut new_key);
    let dir = TempDir::new();
    let mut mount_a = KubeletMount::new(dir.path("a"), "keys.json", &to_json(&keys));
    let mut mount_b = KubeletMount::new(dir.path("b"), "keys.json", &to_json(&keys));
    let issuer = Arc::new(start_gateway(&mount_a.file()));
    let verifier = Arc::new(start_gateway(&mount_b.file()));

    // Clients: a token from the issuer, a connection to the verifier, again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients = {
        let (issuer, verifier, stop) = (issuer.clone(), verifier.clone(), stop.clone());
        let (connected, refusals) = (connected.clone(), refusals.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let jwt = herald_e2e::hs256_jwt(JWT_SECRET, &format!("user-{}", n % 50), 300, &[]);
                let token = issuer.issue_token(&jwt).await;
                match verifier.open_ws(&token).await {
                    Ok((ws, _)) => {
                        connected.fetch_add(1, Ordering::SeqCst);
                        drop(ws);
                    }
                    Err((status, body)) => refusals.lock().expect("lock").push(format!("{status} {body}")),
                }
            }
        })
    };

    // The rotation loop, as the operator runs it: the issuer's directory is updated at once, the
    // verifier's half a second later (kubelets refresh pods at different moments).
    let mut added = 0;
    let mut retired = 0;
    while added < 3 || retired < 3 {
        let (next, steps) = rotate(&keys, now(), &policy, false, &mut new_key);
        if !steps.is_empty() {
            added += steps.iter().filter(|s| matches!(s, Step::Added { .. })).count();
            retired += steps.iter().filter(|s| matches!(s, Step::Retired { .. })).count();
            keys = next;
            mount_a.update(&to_json(&keys));
            tokio::time::sleep(Duration::from_millis(500)).await;
            mount_b.update(&to_json(&keys));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    clients.await.expect("clients");
    let refusals = refusals.lock().expect("lock").clone();
    assert!(refusals.is_empty(), "refused during the rotations: {refusals:?}");
    assert!(connected.load(Ordering::SeqCst) > 50, "the clients kept connecting");

    // A leaked key is revoked: a token it signed is refused at once, though it has not expired.
    let jwt = herald_e2e::hs256_jwt(JWT_SECRET, "leaker", 300, &[]);
    let leaked_token = issuer.issue_token(&jwt).await;
    let leaked = active(&keys, now()).expect("a key signs").kid.clone();
    let (revoked, _) = revoke(&keys, &leaked, now(), &mut new_key);
    let successor = active(&revoked, now()).expect("another key signs").kid.clone();
    mount_a.update(&to_json(&revoked));
    mount_b.update(&to_json(&revoked));
    verifier.wait_for_line(|l| l.contains("signing-keys:reloaded") && l.contains(&successor) && !l.contains(&leaked));
    let Err((status, body)) = verifier.open_ws(&leaked_token).await else {
        panic!("a token of the revoked key connected");
    };
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token_invalid"), "{body}");
    let metrics = reqwest::get(verifier.internal_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("herald_connection_tokens_rejected_total{reason=\"unknown_key\"} 1"),
        "{metrics}"
    );
}
