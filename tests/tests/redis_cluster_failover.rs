//! The test Redis Cluster `scripts/services` keeps, and the failover helper the tests of Herald
//! against a Cluster use: a graceful failover promotes a replica and loses nothing written before it.
//! Runs against the shared cluster like every other test (in CI a missing cluster fails it).

use herald_e2e::redis_cluster::{self, cli, cluster_nodes};

#[test]
fn a_graceful_failover_promotes_a_replica_and_keeps_what_was_written() {
    let Some(url) = herald_e2e::redis_cluster_url() else {
        return;
    };
    let seed = redis_cluster::seed_ports(&url)[0];
    // Keys over every primary (30 random slots miss one of three with a chance of about 1 in 60 000;
    // a missed one only makes the test weaker), expiring so that runs leave nothing behind.
    let prefix = herald_e2e::unique_name("failover");
    let keys: Vec<String> = (0..30).map(|i| format!("{prefix}:{i}")).collect();
    for key in &keys {
        assert_eq!(cli(seed, &["-c", "SET", key, key, "EX", "600"]).trim(), "OK");
    }

    let (old, new) = redis_cluster::fail_over_one_primary(&url);

    assert_ne!(old, new);
    let nodes = cluster_nodes(seed);
    let by_port = |port| nodes.iter().find(|n| n.port == port).expect("node listed");
    assert!(by_port(new).is_primary(), "{new} is a primary: {nodes:?}");
    assert_eq!(
        by_port(old).primary_id.as_deref(),
        Some(by_port(new).id.as_str()),
        "{old} follows {new}"
    );
    for key in &keys {
        assert_eq!(
            cli(new, &["-c", "GET", key]).trim(),
            key.as_str(),
            "{key} after the failover"
        );
    }
}
