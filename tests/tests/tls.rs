//! PostgreSQL and Redis over TLS, as managed services require: the test services serve both with a
//! certificate of a CA `scripts/services` made (PostgreSQL on its usual port, Redis on a TLS-only
//! port). A cluster replica given that CA connects with TLS and verifies the servers; given another
//! CA it refuses to start, saying why; a CA for a plain `redis://` URL is a configuration error.

use std::process::Command;

use herald_e2e::cluster::{Cluster, connect, next_notification, publish, token};
use herald_e2e::{run_to_exit, service_url};

struct Tls {
    cluster: Cluster,
    ca: String,
    other_ca: String,
}

/// A cluster on the TLS Redis, or `None` (loudly) outside CI without the test services.
fn tls_cluster() -> Option<Tls> {
    let redis_tls = service_url("HERALD_TEST_REDIS_TLS_URL")?;
    Some(Tls {
        cluster: Cluster::new(Some(redis_tls))?,
        ca: service_url("HERALD_TEST_TLS_CA")?,
        other_ca: service_url("HERALD_TEST_TLS_OTHER_CA")?,
    })
}

/// Whether every connection PostgreSQL has to `database_url`'s database uses TLS (and there is one).
fn only_tls_connections(database_url: &str) -> (i64, i64) {
    let (admin_base, database) = database_url.rsplit_once('/').expect("a database in the URL");
    let query = format!(
        "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) FROM pg_stat_ssl \
         JOIN pg_stat_activity USING (pid) WHERE datname = '{database}'"
    );
    let output = Command::new("psql")
        .arg(format!("{admin_base}/postgres"))
        .args(["-tAc", &query])
        .output()
        .expect("psql (Debian's postgresql-client, installed with the test PostgreSQL)");
    let text = String::from_utf8_lossy(&output.stdout);
    let (tls, plain) = text.trim().split_once('|').expect("two counts");
    (tls.parse().expect("count"), plain.parse().expect("count"))
}

#[tokio::test]
async fn a_replica_talks_to_postgres_and_redis_over_verified_tls() {
    let Some(tls) = tls_cluster() else { return };
    let database_url = format!("{}?sslmode=verify-full", tls.cluster.database_url);
    let replica = tls.cluster.replica(&[
        ("DATABASE_URL", database_url.as_str()),
        ("HERALD_DATABASE_CA_FILE", tls.ca.as_str()),
        ("HERALD_REDIS_CA_FILE", tls.ca.as_str()),
    ]);
    let mut ws = connect(&replica, &token(&replica, "tls-alice").await)
        .await
        .expect("connect");
    assert_eq!(publish(&replica, &["tls-alice"], "over TLS").await.status(), 202);
    let notification = next_notification(&mut ws).await;
    assert_eq!(notification["payload"]["title"], "over TLS");
    let (encrypted, plain) = only_tls_connections(&tls.cluster.database_url);
    assert!(
        encrypted >= 1 && plain == 0,
        "{encrypted} TLS and {plain} plain connections"
    );

    // The CA alone turns TLS on for PostgreSQL (verify-full) when the URL names no sslmode.
    let implicit = tls.cluster.replica(&[
        ("HERALD_DATABASE_CA_FILE", tls.ca.as_str()),
        ("HERALD_REDIS_CA_FILE", tls.ca.as_str()),
    ]);
    assert_eq!(publish(&implicit, &["tls-bob"], "implicit").await.status(), 202);
    let (_, plain) = only_tls_connections(&tls.cluster.database_url);
    assert_eq!(plain, 0, "no plain connection from either replica");
}

#[test]
fn a_server_whose_certificate_another_ca_signed_is_refused_at_start() {
    let Some(tls) = tls_cluster() else { return };
    let base = [
        ("REDIS_URL", tls.cluster.redis_url.as_str()),
        ("HERALD_REDIS_PREFIX", tls.cluster.prefix.as_str()),
        ("HERALD_JWT_HS256_SECRET", herald_e2e::cluster::JWT_SECRET),
        herald_e2e::JWT_ISSUER_AND_AUDIENCE[0],
        herald_e2e::JWT_ISSUER_AND_AUDIENCE[1],
        ("WEBSOCKET_TOKEN_SECRET", herald_e2e::cluster::TOKEN_SECRET),
    ];
    let run = |database_ca: &str, redis_ca: &str| {
        let mut env = base.to_vec();
        env.extend([
            ("DATABASE_URL", tls.cluster.database_url.as_str()),
            ("HERALD_DATABASE_CA_FILE", database_ca),
            ("HERALD_REDIS_CA_FILE", redis_ca),
        ]);
        run_to_exit(&["serve"], &env)
    };
    let (status, output) = run(&tls.other_ca, &tls.ca);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("PostgreSQL") && output.to_lowercase().contains("certificate"),
        "{output}"
    );
    // `sslmode=require` with a CA still verifies (sqlx alone would not look at the CA).
    let require = format!("{}?sslmode=require", tls.cluster.database_url);
    let mut env = base.to_vec();
    env.extend([
        ("DATABASE_URL", require.as_str()),
        ("HERALD_DATABASE_CA_FILE", tls.other_ca.as_str()),
        ("HERALD_REDIS_CA_FILE", tls.ca.as_str()),
    ]);
    let (status, output) = run_to_exit(&["serve"], &env);
    assert!(!status.success() && output.contains("UnknownIssuer"), "{output}");
    let (status, output) = run(&tls.ca, &tls.other_ca);
    assert!(!status.success(), "{output}");
    assert!(output.contains("Redis"), "{output}");

    // A CA for a plain Redis URL: refused before connecting, naming both settings.
    let plain_redis = service_url("HERALD_TEST_REDIS_URL").expect("plain Redis");
    let mut env = base.to_vec();
    env.retain(|(name, _)| *name != "REDIS_URL");
    env.extend([
        ("DATABASE_URL", tls.cluster.database_url.as_str()),
        ("REDIS_URL", plain_redis.as_str()),
        ("HERALD_REDIS_CA_FILE", tls.ca.as_str()),
    ]);
    let (status, output) = run_to_exit(&["serve"], &env);
    assert!(!status.success());
    assert!(
        output.contains("HERALD_REDIS_CA_FILE is set but REDIS_URL is not rediss://"),
        "{output}"
    );
}
