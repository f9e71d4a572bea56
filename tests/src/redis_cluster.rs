//! The test Redis Cluster `scripts/services` starts (six nodes on loopback: three primaries with one
//! replica each), seen and steered through `redis-cli`, as [`crate::fresh_database`] uses `psql`: a
//! test of Herald against a Cluster must be able to move a primary while the gateway runs, and this
//! crate has no Redis client of its own.
//!
//! The cluster is shared by every test and reused from one run to the next, so these helpers assume
//! nothing about which nodes are primaries now: they read it from `CLUSTER NODES` each time.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failover, or the cluster settling after one, may take before the test fails. A graceful
/// failover takes well under a second on loopback; Redis gives a manual failover 5 s.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// One node as `CLUSTER NODES` lists it.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub id: String,
    pub host: String,
    pub port: u16,
    /// The id of its primary when it is a replica; `None` for a primary.
    pub primary_id: Option<String>,
    /// Its flags (`myself`, `master`, `slave`, `fail?`, `handshake`, ...).
    pub flags: Vec<String>,
    /// The slot ranges it serves, as listed (`0-5460`); empty for a replica.
    pub slots: Vec<String>,
}

impl ClusterNode {
    pub fn is_primary(&self) -> bool {
        self.primary_id.is_none() && self.flags.iter().any(|f| f == "master")
    }

    /// Failing, suspected of failing, or not yet a full member.
    fn is_troubled(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
    }
}

/// The seed nodes' ports of a cluster URL (`redis://127.0.0.1:56400,redis://127.0.0.1:56401,...`).
pub fn seed_ports(cluster_url: &str) -> Vec<u16> {
    cluster_url
        .split(',')
        .map(|url| {
            let url = url.trim().trim_end_matches('/');
            let (_, port) = url
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("no port in the cluster seed URL {url:?}"));
            port.parse()
                .unwrap_or_else(|_| panic!("bad port in the cluster seed URL {url:?}"))
        })
        .collect()
}

/// `redis-cli -h 127.0.0.1 -p port args...`: its standard output, carriage returns removed. Panics
/// when redis-cli cannot run or cannot reach the node; an error reply is output like any other.
pub fn cli(port: u16, args: &[&str]) -> String {
    try_cli(port, args).unwrap_or_else(|error| panic!("redis-cli -p {port} {}: {error}", args.join(" ")))
}

fn try_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (Debian's redis-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// The value of `field` in an INFO-style reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
}

/// The cluster as the node on `port` sees it.
pub fn cluster_nodes(port: u16) -> Vec<ClusterNode> {
    parse_cluster_nodes(&cli(port, &["CLUSTER", "NODES"]))
}

/// The cluster as the first seed node that answers sees it.
fn seen_from_a_seed(cluster_url: &str) -> Result<Vec<ClusterNode>, String> {
    let seeds = seed_ports(cluster_url);
    seeds
        .iter()
        .find_map(|&seed| try_cli(seed, &["CLUSTER", "NODES"]).ok())
        .map(|text| parse_cluster_nodes(&text))
        .ok_or_else(|| format!("none of the seed nodes {seeds:?} answers"))
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            // <id> <ip:port@cport[,hostname]> <flags> <primary|-> <ping> <pong> <epoch> <link> <slot>...
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 8, "unexpected CLUSTER NODES line {line:?}");
            let address = fields[1].split([',', '@']).next().unwrap_or_default();
            let (host, port) = address
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("no port in CLUSTER NODES line {line:?}"));
            ClusterNode {
                id: fields[0].to_owned(),
                host: host.to_owned(),
                port: port
                    .parse()
                    .unwrap_or_else(|_| panic!("bad port in CLUSTER NODES line {line:?}")),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                flags: fields[2].split(',').map(str::to_owned).collect(),
                slots: fields[8..].iter().map(|s| (*s).to_owned()).collect(),
            }
        })
        .collect()
}

/// The primaries that serve slots, by port.
fn primaries_with_slots(nodes: &[ClusterNode]) -> Vec<&ClusterNode> {
    let mut primaries: Vec<&ClusterNode> = nodes.iter().filter(|n| n.is_primary() && !n.slots.is_empty()).collect();
    primaries.sort_by_key(|n| n.port);
    primaries
}

/// What keeps the cluster from being whole, as seen now; `Ok` when it is whole: every node says
/// `cluster_state:ok` with all 16384 slots served, every node's view has the same primaries and none
/// of them failing, and every replica's link to its primary is up (so that it could take over without
/// losing anything, which the next graceful failover needs).
fn trouble(cluster_url: &str) -> Result<(), String> {
    let nodes = seen_from_a_seed(cluster_url)?;
    let ids =
        |nodes: &[ClusterNode]| -> Vec<String> { primaries_with_slots(nodes).iter().map(|n| n.id.clone()).collect() };
    let expected = ids(&nodes);
    for node in &nodes {
        let port = node.port;
        let info = try_cli(port, &["CLUSTER", "INFO"])?;
        if info_field(&info, "cluster_state") != Some("ok") || info_field(&info, "cluster_slots_ok") != Some("16384") {
            return Err(format!(
                "{port}: {}",
                info.lines().take(3).collect::<Vec<_>>().join(" ")
            ));
        }
        let view = parse_cluster_nodes(&try_cli(port, &["CLUSTER", "NODES"])?);
        if let Some(troubled) = view.iter().find(|n| n.is_troubled()) {
            return Err(format!("{port} sees {} as {:?}", troubled.port, troubled.flags));
        }
        if ids(&view) != expected {
            return Err(format!("{port} does not agree yet on which nodes are primaries"));
        }
        let replication = try_cli(port, &["INFO", "replication"])?;
        let role = info_field(&replication, "role");
        if role != Some(if node.is_primary() { "master" } else { "slave" }) {
            return Err(format!("{port} reports role {role:?}"));
        }
        if role == Some("slave") && info_field(&replication, "master_link_status") != Some("up") {
            return Err(format!("{port}: its link to its primary is not up"));
        }
    }
    Ok(())
}

/// Waits until the cluster is whole (see [`trouble`]), at most [`FAILOVER_WAIT`]; panics with what
/// was still wrong otherwise. Tests call it before and after changing the cluster's topology.
pub fn wait_until_whole(cluster_url: &str) {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        let Err(problem) = trouble(cluster_url) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "the test Redis Cluster is not whole after {FAILOVER_WAIT:?}: {problem}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails over one primary of the test cluster to its replica, gracefully (`CLUSTER FAILOVER` sent to
/// the replica: the primary stops taking writes, the replica catches up with it and takes its slots,
/// so nothing written is lost), and waits until the cluster is whole again with the replica as
/// primary and the old primary as its replica. Returns `(old_primary_port, new_primary_port)`.
///
/// Reusable as often as needed on the cluster `scripts/services` keeps from run to run: each call
/// picks whichever primary (the lowest port) has a replica now, so a cluster earlier calls rearranged
/// is fine. Calls within one test binary take turns (a lock): two manual failovers at once compete
/// for the primaries' votes, and one of them may time out.
pub fn fail_over_one_primary(cluster_url: &str) -> (u16, u16) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    wait_until_whole(cluster_url);
    let nodes = seen_from_a_seed(cluster_url).unwrap_or_else(|problem| panic!("{problem}"));
    let (primary, replica) = primaries_with_slots(&nodes)
        .into_iter()
        .find_map(|primary| {
            let replica = nodes
                .iter()
                .filter(|n| n.primary_id.as_deref() == Some(primary.id.as_str()))
                .min_by_key(|n| n.port)?;
            Some((primary, replica))
        })
        .unwrap_or_else(|| panic!("no primary of the test Redis Cluster has a replica: {nodes:?}"));

    let deadline = Instant::now() + FAILOVER_WAIT;
    let promoted = || info_field(&cli(replica.port, &["INFO", "replication"]), "role") == Some("master");
    // Redis abandons a manual failover that has not completed within 5 s: ask again then.
    let mut asked: Option<Instant> = None;
    loop {
        if asked.is_none_or(|at| at.elapsed() > Duration::from_secs(6)) {
            let answer = cli(replica.port, &["CLUSTER", "FAILOVER"]);
            // (Not OK when the replica was promoted just before being asked again.)
            assert!(
                answer.trim() == "OK" || promoted(),
                "CLUSTER FAILOVER on {}: {answer}",
                replica.port
            );
            asked = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
        if promoted() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not take over from {} within {FAILOVER_WAIT:?}",
            replica.port,
            primary.port
        );
    }
    wait_until_whole(cluster_url);
    let old = cli(primary.port, &["INFO", "replication"]);
    assert_eq!(
        (info_field(&old, "role"), info_field(&old, "master_port")),
        (Some("slave"), Some(replica.port.to_string().as_str())),
        "the old primary {} follows the new one {}",
        primary.port,
        replica.port
    );
    (primary.port, replica.port)
}
