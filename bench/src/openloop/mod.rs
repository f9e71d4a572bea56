//! `open-loop`: the platform team's workload. Users connect; notifications are published at an offered
//! rate whatever the server's answers (open loop), one recipient each (or `--recipients` consecutive
//! users each); every notification is
//! acknowledged by its client; latency is publish request sent -> notification received. The same
//! driver runs every server (Herald embedded, Herald cluster, Socket.IO, Socket.IO + Redis, NATS),
//! one after another, each freshly started. Bounded: a fixed number of users and notifications, a
//! deadline for the stragglers, loopback only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore};

pub mod herald;
pub mod nats;
pub mod process;
pub mod socketio;
pub mod target;

use target::{Client, Target};

/// A server the benchmark can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    Herald,
    HeraldCluster,
    Socketio,
    SocketioRedis,
    Nats,
}

const BENCH_SERVICES_DIR: &str = "/var/tmp/herald-bench";
const BENCH_PG_DIR: &str = "/var/tmp/herald-bench/postgres";
const BENCH_REDIS_PORT: u16 = 56389;
const BENCH_REDIS_TLS_PORT: u16 = 56390;
/// The first of the six Redis Cluster nodes `scripts/services` starts for the tests (their bus ports
/// 1,000 higher): away from the test instance's (56400-56405), which the script refuses to touch.
const BENCH_REDIS_CLUSTER_PORT: u16 = 56420;

/// The durable PostgreSQL (fsync on) and the Redis cluster-mode servers use: instances of the
/// benchmark's own, started by `scripts/services` beside (never instead of) the test ones.
struct Services {
    postgres_admin_url: String,
    redis_url: String,
}

impl Services {
    fn start() -> anyhow::Result<Self> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
        let output = std::process::Command::new(&script)
            .env("HERALD_TEST_SERVICES_DIR", BENCH_SERVICES_DIR)
            .env("HERALD_TEST_PG_PORT", "55442")
            .env("HERALD_TEST_REDIS_PORT", BENCH_REDIS_PORT.to_string())
            // The script also starts a TLS-only Redis for the tests; its port must not be the
            // test instance's either.
            .env("HERALD_TEST_REDIS_TLS_PORT", BENCH_REDIS_TLS_PORT.to_string())
            .env("HERALD_TEST_REDIS_CLUSTER_PORT", BENCH_REDIS_CLUSTER_PORT.to_string())
            .env("HERALD_TEST_PG_DURABLE", "1")
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(output.status.success(), "scripts/services failed");
        let exports = String::from_utf8(output.stdout)?;
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .with_context(|| format!("scripts/services printed no {name}"))
        };
        let services = Self {
            postgres_admin_url: value("HERALD_TEST_DATABASE_URL")?,
            redis_url: value("HERALD_TEST_REDIS_URL")?,
        };
        services.drop_old_databases()?;
        let fsync = std::process::Command::new("psql")
            .args([services.postgres_admin_url.as_str(), "-qAtc", "SHOW fsync"])
            .output()?;
        anyhow::ensure!(
            String::from_utf8_lossy(&fsync.stdout).trim() == "on",
            "the benchmark's PostgreSQL must run with fsync on"
        );
        Ok(services)
    }
}

impl Services {
    /// Drops the databases of earlier runs: each run makes a fresh one, and every database left
    /// behind adds files to each of PostgreSQL's checkpoints.
    fn drop_old_databases(&self) -> anyhow::Result<()> {
        let listed = std::process::Command::new("psql")
            .args([
                self.postgres_admin_url.as_str(),
                "-qAtc",
                r"SELECT datname FROM pg_database WHERE datname LIKE 'herald\_t\_%'",
            ])
            .output()
            .context("listing earlier databases")?;
        for name in String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let dropped = std::process::Command::new("psql")
                .args([
                    self.postgres_admin_url.as_str(),
                    "-qc",
                    &format!("DROP DATABASE \"{name}\""),
                ])
                .output()
                .context("dropping an earlier database")?;
            anyhow::ensure!(dropped.status.success(), "could not drop database {name}");
        }
        Ok(())
    }
}

/// Starts each server in turn, runs `plan` against it, prints the table, and writes it into the
/// open-loop section of `write` when given.
pub async fn run_all(
    servers: &[ServerKind],
    plan: Plan,
    gateway_env: &[(String, String)],
    write: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let needs_services = servers
        .iter()
        .any(|s| matches!(s, ServerKind::HeraldCluster | ServerKind::SocketioRedis));
    let services = if needs_services { Some(Services::start()?) } else { None };
    let services = || services.as_ref().context("services");
    let mut outcomes = Vec::new();
    for kind in servers {
        let target: Arc<dyn Target> = match kind {
            ServerKind::Herald => Arc::new(herald::Herald::embedded(gateway_env)),
            ServerKind::HeraldCluster => {
                let s = services()?;
                Arc::new(herald::Herald::cluster(
                    &s.postgres_admin_url,
                    &s.redis_url,
                    gateway_env,
                ))
            }
            ServerKind::Nats => Arc::new(nats::Nats::start()?),
            ServerKind::Socketio => Arc::new(socketio::SocketIo::start(None)?),
            ServerKind::SocketioRedis => Arc::new(socketio::SocketIo::start(Some(&services()?.redis_url))?),
        };
        eprintln!("open-loop: {} ...", target.name());
        // PostgreSQL and Redis work for the cluster rows; their CPU is reported beside the server's.
        // Their processes are listed when the publishing starts and again when it ends: the pool's
        // connections open after the servers start.
        let store = match kind {
            ServerKind::HeraldCluster | ServerKind::SocketioRedis => {
                Some(|| process::service_pids(BENCH_PG_DIR, BENCH_REDIS_PORT))
            }
            _ => None,
        };
        let outcome = run(target.clone(), plan, store).await?;
        eprintln!("{}", table(std::slice::from_ref(&outcome)));
        eprintln!(
            "{}: publish answered p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            outcome.name,
            outcome.answered_percentile_ms(50.0),
            outcome.answered_percentile_ms(90.0),
            outcome.answered_percentile_ms(99.0),
            outcome.answered_percentile_ms(100.0),
        );
        for line in target.own_account().await {
            eprintln!("{}: {line}", outcome.name);
        }
        outcomes.push(outcome);
    }
    let report = report(&outcomes, plan);
    println!("{report}");
    if let Some(path) = write {
        write_section(path, &report)?;
    }
    Ok(())
}

const SECTION_BEGIN: &str = "<!-- open-loop:begin (written by `herald-bench open-loop --write`) -->";
const SECTION_END: &str = "<!-- open-loop:end -->";

/// The table with the machine, the exact command and the caveats.
fn report(outcomes: &[Outcome], plan: Plan) -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let mut out = format!(
        "Command: `herald-bench {}` (release build). Machine: {}. Run {}.\n\n",
        command.join(" "),
        machine(),
        date()
    );
    let recipients = if plan.recipients == 1 {
        "one recipient each".to_owned()
    } else {
        format!(
            "{} recipients each, so {} notifications",
            plan.recipients,
            plan.notifications * plan.recipients
        )
    };
    out.push_str(&format!(
        "{} users connected, {} publishes ({recipients}) at an offered {} publishes/s; every \
         notification acknowledged by its client; latency = publish request sent -> notification received.\n\n",
        plan.users, plan.notifications, plan.rate
    ));
    out.push_str(&table(outcomes));
    for o in outcomes.iter().filter(|o| !o.caveat.is_empty()) {
        out.push_str(&format!("\n- {}: {}", o.name, o.caveat));
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} x {cpu}")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces what stands between the section markers of `path` with `report`.
fn write_section(path: &std::path::Path, report: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (before, rest) = text
        .split_once(SECTION_BEGIN)
        .with_context(|| format!("{} has no `{SECTION_BEGIN}` marker", path.display()))?;
    let (_, after) = rest
        .split_once(SECTION_END)
        .with_context(|| format!("{} has no `{SECTION_END}` marker", path.display()))?;
    std::fs::write(path, format!("{before}{SECTION_BEGIN}\n{report}\n{SECTION_END}{after}"))?;
    Ok(())
}

/// One run's shape.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub users: usize,
    /// Publishes made.
    pub notifications: usize,
    /// Recipients of each publish: publish `k` goes to users `k * recipients + j` (mod `users`),
    /// `j < recipients`.
    pub recipients: usize,
    /// Offered publishes per second.
    pub rate: u64,
    /// How long after the last publish stragglers may still arrive.
    pub drain: Duration,
    pub connect_concurrency: usize,
    /// Publishes in flight at most; past it the driver waits, and the achieved offered rate says so.
    pub max_in_flight: usize,
}

/// What one server did under the plan.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub caveat: &'static str,
    pub plan: Plan,
    /// Publishes per second actually offered (lower than planned when `max_in_flight` was reached).
    pub offered_rate: f64,
    pub publish_errors: usize,
    pub delivered: usize,
    pub duplicates: usize,
    /// Deliveries per second from the first publish to the last delivery.
    pub delivered_rate: f64,
    /// Publish sent -> notification received, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Publish sent -> the server's answer, in microseconds, sorted: the part of the latency spent
    /// before the server let go of the request (Herald: until the commit).
    pub answered_us: Vec<u64>,
    pub server_cpu_s: f64,
    /// PostgreSQL and Redis, for the rows that use them.
    pub store_cpu_s: f64,
    pub client_cpu_s: f64,
    pub rss_idle_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_after_kib: u64,
}

impl Outcome {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    /// The `p`th percentile of publish sent -> answered, in milliseconds.
    pub fn answered_percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.answered_us, p)
    }

    /// Server CPU per delivered notification, in milliseconds.
    pub fn cpu_per_notification_ms(&self) -> f64 {
        self.server_cpu_s * 1_000.0 / self.delivered.max(1) as f64
    }

    /// Resident memory per connected user, in bytes (RSS growth while connecting).
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_connected_kib.saturating_sub(self.rss_idle_kib) * 1_024) as f64 / self.plan.users.max(1) as f64
    }
}

/// The `p`th percentile of `sorted_us` (sorted, microseconds), in milliseconds; NaN when empty.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[rank.min(sorted_us.len() - 1)] as f64 / 1_000.0
}

impl Plan {
    /// The users publish `key` goes to.
    fn recipients_of(&self, key: usize) -> Vec<usize> {
        let first = self.first_recipient(key);
        (0..self.recipients).map(|j| (first + j) % self.users).collect()
    }

    fn first_recipient(&self, key: usize) -> usize {
        key * self.recipients % self.users
    }

    /// Which delivery `user` receiving `key` is (`key * recipients + j`), if `user` is a recipient.
    fn delivery_index(&self, key: usize, user: usize) -> Option<usize> {
        let j = (user + self.users - self.first_recipient(key)) % self.users;
        (j < self.recipients).then_some(key * self.recipients + j)
    }
}

/// Delivery bookkeeping shared by every reader task.
struct Tally {
    started: Instant,
    plan: Plan,
    /// When each key was published, in microseconds since `started` (0: not yet).
    sent_us: Vec<AtomicU64>,
    /// One per delivery (publish and recipient).
    seen: Vec<AtomicBool>,
    delivered: AtomicUsize,
    duplicates: AtomicUsize,
    last_delivery_us: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    /// Publish sent -> the server's answer (Herald: the `202` after the commit), in microseconds.
    answered_us: std::sync::Mutex<Vec<u64>>,
    all_delivered: Notify,
}

impl Tally {
    fn new(plan: Plan) -> Self {
        let deliveries = plan.notifications * plan.recipients;
        Self {
            started: Instant::now(),
            plan,
            sent_us: (0..plan.notifications).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..deliveries).map(|_| AtomicBool::new(false)).collect(),
            delivered: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            last_delivery_us: AtomicU64::new(0),
            latencies_us: std::sync::Mutex::new(Vec::with_capacity(deliveries)),
            answered_us: std::sync::Mutex::new(Vec::with_capacity(plan.notifications)),
            all_delivered: Notify::new(),
        }
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// `user` received the notification of publish `key`.
    fn received(&self, key: u64, user: usize) {
        let now = self.now_us();
        let Some(key) = usize::try_from(key).ok().filter(|k| *k < self.sent_us.len()) else {
            return;
        };
        let Some(index) = self.plan.delivery_index(key, user) else {
            return;
        };
        if self.seen[index].swap(true, Ordering::SeqCst) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = self.sent_us[key].load(Ordering::SeqCst);
        self.latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(now.saturating_sub(sent));
        self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        if self.delivered.fetch_add(1, Ordering::SeqCst) + 1 == self.seen.len() {
            self.all_delivered.notify_one();
        }
    }
}

/// Runs `plan` against `target`: connect every user, publish at the offered rate, wait for every
/// delivery (or the drain deadline), measure.
pub async fn run(
    target: Arc<dyn Target>,
    plan: Plan,
    store_pids: Option<impl Fn() -> Vec<u32>>,
) -> anyhow::Result<Outcome> {
    let pids = target.pids();
    let rss_idle_kib = process::rss_kib(&pids)?;
    let clients: Vec<Box<dyn Client>> = futures_util::stream::iter(0..plan.users)
        .map(|user| {
            let target = target.clone();
            async move {
                target
                    .connect(user)
                    .await
                    .with_context(|| format!("connecting user {user}"))
            }
        })
        .buffered(plan.connect_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let rss_connected_kib = process::rss_kib(&pids)?;

    let tally = Arc::new(Tally::new(plan));
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(user, mut client)| {
            let tally = tally.clone();
            tokio::spawn(async move {
                loop {
                    match client.next().await {
                        Ok(Some(key)) => tally.received(key, user),
                        Ok(None) => {
                            eprintln!("user {user}: the server closed the connection");
                            break;
                        }
                        Err(err) => {
                            eprintln!("user {user}: {err:#}");
                            break;
                        }
                    }
                }
            })
        })
        .collect();

    let server_cpu_before = process::cpu_seconds(&pids)?;
    let store_cpu_before = store_pids.as_ref().map(|pids| process::cpu_by_pid(&pids()));
    let client_cpu_before = process::own_cpu_seconds()?;
    let publish_errors = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight));
    let publish_started = tally.now_us();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate.max(1) as f64));
    // Behind schedule (timer granularity is a millisecond): catch up, so the average rate holds.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for key in 0..plan.notifications {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (target, tally, errors) = (target.clone(), tally.clone(), publish_errors.clone());
        tokio::spawn(async move {
            let sent_us = tally.now_us().max(1);
            tally.sent_us[key].store(sent_us, Ordering::SeqCst);
            match target.publish(&plan.recipients_of(key), key as u64).await {
                Ok(()) => tally
                    .answered_us
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(tally.now_us().saturating_sub(sent_us)),
                Err(err) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("first publish error: {err:#}");
                    }
                }
            }
            drop(permit);
        });
    }
    let publish_window_s = (tally.now_us() - publish_started) as f64 / 1e6;
    let everything = tally.all_delivered.notified();
    if tally.delivered.load(Ordering::SeqCst) < tally.seen.len() {
        let _ = tokio::time::timeout(plan.drain, everything).await;
    }
    let server_cpu_s = process::cpu_seconds(&pids)? - server_cpu_before;
    let store_cpu_s = match (&store_pids, &store_cpu_before) {
        (Some(pids), Some(before)) => process::cpu_since(before, &pids()),
        _ => 0.0,
    };
    let client_cpu_s = process::own_cpu_seconds()? - client_cpu_before;
    let rss_after_kib = process::rss_kib(&pids)?;
    for reader in readers {
        reader.abort();
    }

    let delivered = tally.delivered.load(Ordering::SeqCst);
    let delivery_window_s = (tally
        .last_delivery_us
        .load(Ordering::SeqCst)
        .saturating_sub(publish_started)) as f64
        / 1e6;
    let latencies_us = take_sorted(&tally.latencies_us);
    let answered_us = take_sorted(&tally.answered_us);
    Ok(Outcome {
        name: target.name(),
        caveat: target.caveat(),
        plan,
        offered_rate: plan.notifications as f64 / publish_window_s.max(1e-6),
        publish_errors: publish_errors.load(Ordering::SeqCst),
        delivered,
        duplicates: tally.duplicates.load(Ordering::SeqCst),
        delivered_rate: delivered as f64 / delivery_window_s.max(1e-6),
        latencies_us,
        answered_us,
        server_cpu_s,
        store_cpu_s,
        client_cpu_s,
        rss_idle_kib,
        rss_connected_kib,
        rss_after_kib,
    })
}

/// The durations recorded in `recorded`, sorted (and taken out).
fn take_sorted(recorded: &std::sync::Mutex<Vec<u64>>) -> Vec<u64> {
    let mut taken = std::mem::take(&mut *recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    taken.sort_unstable();
    taken
}

/// The results as a Markdown table, one row per server.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| server | offered publishes/s | delivered | delivered/s | p50 ms | p90 ms | p99 ms | max ms | server CPU s | CPU per notification ms | store CPU s | memory per connection kB | RSS after MiB | client CPU s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let mut errors = String::new();
        if o.publish_errors > 0 {
            errors.push_str(&format!(" ({} publish errors)", o.publish_errors));
        }
        if o.duplicates > 0 {
            errors.push_str(&format!(" (+{} received twice)", o.duplicates));
        }
        out.push_str(&format!(
            "| {} | {:.0} | {} of {}{errors} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.3} | {} | {:.1} | {:.1} | {:.2} |\n",
            o.name,
            o.offered_rate,
            o.delivered,
            o.plan.notifications * o.plan.recipients,
            o.delivered_rate,
            o.percentile_ms(50.0),
            o.percentile_ms(90.0),
            o.percentile_ms(99.0),
            o.percentile_ms(100.0),
            o.server_cpu_s,
            o.cpu_per_notification_ms(),
            if o.store_cpu_s > 0.0 { format!("{:.2}", o.store_cpu_s) } else { "-".to_owned() },
            o.bytes_per_connection() / 1_000.0,
            o.rss_after_kib as f64 / 1_024.0,
            o.client_cpu_s,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(latencies_us: Vec<u64>) -> Outcome {
        Outcome {
            name: "x".into(),
            caveat: "",
            plan: Plan {
                users: 2,
                notifications: 4,
                recipients: 1,
                rate: 1,
                drain: Duration::ZERO,
                connect_concurrency: 1,
                max_in_flight: 1,
            },
            offered_rate: 1.0,
            publish_errors: 0,
            delivered: 4,
            duplicates: 0,
            delivered_rate: 1.0,
            latencies_us,
            answered_us: Vec::new(),
            server_cpu_s: 0.004,
            store_cpu_s: 0.0,
            client_cpu_s: 0.0,
            rss_idle_kib: 100,
            rss_connected_kib: 102,
            rss_after_kib: 0,
        }
    }

    #[test]
    fn percentiles_cpu_and_memory_are_computed_from_the_samples() {
        let o = outcome(vec![1_000, 2_000, 3_000, 10_000]);
        assert_eq!(o.percentile_ms(0.0), 1.0);
        assert_eq!(o.percentile_ms(50.0), 3.0);
        assert_eq!(o.percentile_ms(100.0), 10.0);
        assert!((o.cpu_per_notification_ms() - 1.0).abs() < 1e-9);
        assert_eq!(o.bytes_per_connection(), 1_024.0);
        assert!(outcome(vec![]).percentile_ms(99.0).is_nan());
    }

    fn plan(users: usize, notifications: usize, recipients: usize) -> Plan {
        Plan {
            users,
            notifications,
            recipients,
            rate: 1,
            drain: Duration::ZERO,
            connect_concurrency: 1,
            max_in_flight: 1,
        }
    }

    #[test]
    fn the_tally_counts_each_key_once_and_keeps_its_latency() {
        let tally = Tally::new(plan(2, 2, 1));
        tally.sent_us[0].store(1, Ordering::SeqCst);
        tally.received(0, 0);
        tally.received(0, 0);
        tally.received(7, 0);
        tally.received(0, 1);
        assert_eq!(
            tally.delivered.load(Ordering::SeqCst),
            1,
            "user 1 is not publish 0's recipient"
        );
        assert_eq!(tally.duplicates.load(Ordering::SeqCst), 1);
        assert_eq!(tally.latencies_us.lock().expect("lock").len(), 1);
    }

    #[test]
    fn each_recipient_of_a_publish_is_a_delivery_of_its_own() {
        let plan = plan(5, 4, 3);
        // Publish 1 goes to users 3, 4 and 0 (wrapping around).
        assert_eq!(plan.recipients_of(1), [3, 4, 0]);
        assert_eq!(plan.delivery_index(1, 3), Some(3));
        assert_eq!(plan.delivery_index(1, 0), Some(5));
        assert_eq!(plan.delivery_index(1, 1), None);
        let tally = Tally::new(plan);
        for user in plan.recipients_of(1) {
            tally.received(1, user);
        }
        assert_eq!(tally.delivered.load(Ordering::SeqCst), 3);
        assert_eq!(tally.duplicates.load(Ordering::SeqCst), 0);
    }
}
