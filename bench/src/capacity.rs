//! `herald-bench capacity`: a model, not a measurement. It places a population of connections on N
//! replicas (seeded, so every run prints the same numbers), then works out, from per-operation costs
//! measured on the benchmark machine (docs/scaling.md says how each was measured), the load on each
//! replica, each Redis primary and PostgreSQL, for the bus before sharding (one channel every
//! replica reads) and after (one sharded channel per user, read only where the user is connected).
//!
//! Rates are expectations: recipients are drawn uniformly from the connected users, so a replica's
//! share of deliveries is its share of connections, and of sharded bus messages its share of users.

use std::fmt::Write as _;

use anyhow::{Context, bail};

/// Declares [`Costs`]: each cost's name (also its key in `--cost` and `--costs`), measured value and
/// unit, documented once.
macro_rules! costs {
    ($($(#[doc = $doc:literal])+ $name:ident: $value:expr, $unit:literal;)+) => {
        /// Per-operation costs, measured on the benchmark machine (2 vCPU) unless said otherwise.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Costs {
            $($(#[doc = $doc])+ pub $name: f64,)+
        }

        impl Costs {
            /// The values measured for docs/scaling.md.
            pub const MEASURED: Costs = Costs { $($name: $value,)+ };

            /// Every cost as (name, value, unit, description).
            pub fn rows(&self) -> Vec<(&'static str, f64, &'static str, &'static str)> {
                vec![$((stringify!($name), self.$name, $unit, concat!($($doc),+).trim()),)+]
            }

            fn field(&mut self, name: &str) -> Option<&mut f64> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)+
                    _ => None,
                }
            }
        }
    };
}

costs! {
    /// Gateway CPU per publish request on the replica that takes it: HTTP, validation, the
    /// preferences read, the group commit, the bus message (155-164 measured at 2,000/s).
    gw_publish_us: 160.0, "us";
    /// Gateway CPU per further recipient of a publish, on that replica (100-recipient publishes).
    gw_recipient_us: 6.5, "us";
    /// After sharding: gateway CPU per further bus message a publish sends (one SPUBLISH per recipient).
    gw_send_us: 5.6, "us";
    /// Gateway CPU per bus message received with its first notification, delivered or dropped (4.9
    /// at 175,000 messages/s, 16 at 17,600/s, 23.5 at 2,000/s: it falls as messages come together).
    gw_message_us: 8.0, "us";
    /// Gateway CPU per further notification decoded out of a received bus message.
    gw_message_notification_us: 5.2, "us";
    /// Gateway CPU per delivery to a connection of its own, decoding aside: the frame, its write, the
    /// ack read, the batched ack and attempt writes (31-32 at 10,000/s in 100-recipient publishes,
    /// 82-87 at 2,000/s single-recipient ones).
    gw_delivery_us: 35.0, "us";
    /// Gateway CPU per connection opened: the token request, the upgrade, registration, replay.
    gw_connect_us: 500.0, "us";
    /// Gateway CPU per heartbeat (a client ping, its registry refresh); an estimate, not measured.
    gw_heartbeat_us: 20.0, "us";
    /// Gateway resident memory per idle connection (docs/benchmarks.md).
    gw_connection_bytes: 4_000.0, "B";
    /// Gateway resident memory with no connection.
    gw_base_mib: 15.0, "MiB";
    /// Redis CPU per command that arrives on its own (read, parse, reply), 50 clients, no pipelining
    /// (0.85 pipelined 16 deep).
    redis_command_us: 7.3, "us";
    /// Redis CPU per byte of a command's arguments.
    redis_input_ns_per_byte: 0.18, "ns";
    /// Redis CPU per pub/sub message written to a subscriber, its bytes aside.
    redis_message_us: 1.75, "us";
    /// Redis CPU per byte written to a subscriber.
    redis_output_ns_per_byte: 0.6, "ns";
    /// Redis CPU per SSUBSCRIBE of a channel (commands in flight together, as a replica sends them).
    redis_ssubscribe_us: 1.9, "us";
    /// Redis CPU per SUNSUBSCRIBE of a channel.
    redis_sunsubscribe_us: 1.0, "us";
    /// Redis memory per subscribed sharded channel.
    redis_subscription_bytes: 218.0, "B";
    /// Redis round trips per connection opened: two rate-limit scripts, two revocation reads, the
    /// single-use claim, the registering script (after sharding one more, the global index's ZADD,
    /// and the SSUBSCRIBE counted apart).
    redis_connect_commands: 6.0, "";
    /// Redis CPU per connection opened, its round trips included.
    redis_connect_us: 120.0, "us";
    /// Redis CPU per connection closed (the removing script and its round trip).
    redis_disconnect_us: 18.0, "us";
    /// Redis CPU per heartbeat (the registry's refreshing script and its round trip).
    redis_heartbeat_us: 17.0, "us";
    /// Redis memory per connection: its registry hash and index entries, its token's claim and rate
    /// limit keys.
    redis_connection_bytes: 1_071.0, "B";
    /// PostgreSQL CPU per transaction (every statement is one: a round trip with its parse, execute,
    /// commit, TLS and the pool's check of the connection).
    pg_statement_us: 190.0, "us";
    /// PostgreSQL CPU per row written (a notification inserted, or a row updated).
    pg_row_us: 11.5, "us";
    /// PostgreSQL WAL bytes per row written (184 in single-recipient batches).
    pg_wal_bytes_per_row: 280.0, "B";
    /// A replica's writer: its statements' time per row written (notifications inserted, acks and
    /// attempt counts); one writer per replica, so a replica writes at most 1 / this rows per second.
    pg_writer_row_us: 26.0, "us";
    /// A replica writer's cycle when it has little to write (its statement and the WAL flush).
    pg_commit_ms: 2.5, "ms";
    /// PostgreSQL statements per connection opened (reads: preferences, subscriptions twice,
    /// sequence, replay, unread count).
    pg_connect_statements: 6.0, "";
}

impl Costs {
    /// [`Costs::MEASURED`] with the values of `file` (a JSON object of cost names and numbers), then
    /// each `name=value` of `overrides`.
    pub fn load(file: Option<&std::path::Path>, overrides: &[String]) -> anyhow::Result<Costs> {
        let mut costs = Costs::MEASURED;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            costs
                .apply_json(&text)
                .with_context(|| format!("in {}", file.display()))?;
        }
        for assignment in overrides {
            let (name, value) = assignment
                .split_once('=')
                .with_context(|| format!("--cost {assignment}: expected name=value"))?;
            let value: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("--cost {assignment}: not a number"))?;
            costs.set(name.trim(), value)?;
        }
        Ok(costs)
    }

    fn apply_json(&mut self, text: &str) -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let object = value
            .as_object()
            .context("expected a JSON object of cost names and numbers")?;
        for (name, value) in object {
            let number = value.as_f64().with_context(|| format!("`{name}` is not a number"))?;
            self.set(name, number)?;
        }
        Ok(())
    }

    fn set(&mut self, name: &str, value: f64) -> anyhow::Result<()> {
        if !value.is_finite() || value < 0.0 {
            bail!("cost `{name}` must be a finite number, at least 0");
        }
        let known = Costs::MEASURED
            .rows()
            .iter()
            .map(|row| row.0)
            .collect::<Vec<_>>()
            .join(", ");
        *self
            .field(name)
            .with_context(|| format!("no cost named `{name}` (known: {known})"))? = value;
        Ok(())
    }
}

/// Where a user's connections land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Each connection drawn on its own (a load balancer that knows nothing of users): a user with
    /// two connections may be on two replicas.
    Random,
    /// Every connection of a user on one replica (routing by user).
    User,
}

/// What the model is asked about.
#[derive(Debug, Clone)]
pub struct Workload {
    pub connections: u64,
    /// Notifications stored per second (a publish to K recipients stores K).
    pub notifications_per_s: f64,
    pub recipients: u32,
    /// Connections per connected user, on average (at least 1).
    pub connections_per_user: f64,
    /// Share of notifications whose recipient is connected (the others are stored only).
    pub online: f64,
    /// Connections opened per second (and as many closed).
    pub churn_per_s: f64,
    /// Seconds between two heartbeats of a connection.
    pub heartbeat_s: f64,
    pub primaries: u32,
    /// Bytes of one notification and its unread count in a bus message.
    pub bytes_per_notification: f64,
    /// Bytes of a bus message around its notifications (envelope, channel name, RESP framing).
    pub bytes_per_message: f64,
    pub placement: Placement,
    /// Replica `r` (from 0) is drawn with weight 1 / (r + 1)^skew: 0 is even.
    pub skew: f64,
    pub seed: u64,
}

impl Workload {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(self.recipients > 0, "--recipients must be at least 1");
        anyhow::ensure!(self.primaries > 0, "--primaries must be at least 1");
        anyhow::ensure!(
            self.connections_per_user >= 1.0,
            "--connections-per-user must be at least 1"
        );
        anyhow::ensure!((0.0..=1.0).contains(&self.online), "--online is a share, 0 to 1");
        anyhow::ensure!(self.heartbeat_s > 0.0, "--heartbeat-seconds must be above 0");
        anyhow::ensure!(self.skew >= 0.0, "--skew must be at least 0");
        Ok(())
    }

    fn publishes_per_s(&self) -> f64 {
        self.notifications_per_s / f64::from(self.recipients)
    }

    /// Bytes of the one bus message a publish makes before sharding.
    fn event_bytes(&self) -> f64 {
        self.bytes_per_message + f64::from(self.recipients) * self.bytes_per_notification
    }

    /// Bytes of one sharded message (one recipient's notification).
    fn message_bytes(&self) -> f64 {
        self.bytes_per_message + self.bytes_per_notification
    }
}

/// SplitMix64: small, seeded, the same numbers everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where the population landed: per replica and per Redis primary (users go to primaries by the
/// slot of their channel, drawn uniformly).
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub connections: Vec<u64>,
    /// Distinct users with a connection on each replica: the sharded channels it subscribes to.
    pub users: Vec<u64>,
    pub total_users: u64,
    pub primary_users: Vec<u64>,
    /// Subscriptions to the channels of each primary's users (a user on two replicas counts twice).
    pub primary_subscriptions: Vec<u64>,
}

impl Layout {
    /// Places `workload`'s connections on `replicas` replicas.
    pub fn place(workload: &Workload, replicas: u32) -> Layout {
        let n = replicas.max(1) as usize;
        let primaries = workload.primaries.max(1) as usize;
        let weights: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(workload.skew)).collect();
        let total: f64 = weights.iter().sum();
        let cumulative: Vec<f64> = weights
            .iter()
            .scan(0.0, |sum, w| {
                *sum += w / total;
                Some(*sum)
            })
            .collect();
        let draw = |rng: &mut Rng| {
            let u = rng.unit();
            cumulative.partition_point(|&c| c <= u).min(n - 1)
        };
        let mut rng = Rng(workload.seed);
        let mut layout = Layout {
            connections: vec![0; n],
            users: vec![0; n],
            total_users: 0,
            primary_users: vec![0; primaries],
            primary_subscriptions: vec![0; primaries],
        };
        let whole = workload.connections_per_user.floor();
        let fraction = workload.connections_per_user - whole;
        let mut held = Vec::new();
        let mut left = workload.connections;
        while left > 0 {
            let count = (whole as u64 + u64::from(rng.unit() < fraction)).clamp(1, left);
            left -= count;
            let primary = (rng.next() % primaries as u64) as usize;
            let home = draw(&mut rng);
            held.clear();
            for _ in 0..count {
                let replica = match workload.placement {
                    Placement::User => home,
                    Placement::Random => draw(&mut rng),
                };
                layout.connections[replica] += 1;
                if !held.contains(&replica) {
                    held.push(replica);
                    layout.users[replica] += 1;
                }
            }
            layout.total_users += 1;
            layout.primary_users[primary] += 1;
            layout.primary_subscriptions[primary] += held.len() as u64;
        }
        layout
    }

    fn subscriptions(&self) -> u64 {
        self.users.iter().sum()
    }
}

/// A replica's bus, before or after sharding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bus {
    /// Bus messages received per second.
    pub messages: f64,
    pub bytes: f64,
    /// CPU cores spent receiving and decoding them.
    pub decode_cores: f64,
    /// CPU cores of the whole replica.
    pub cores: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLoad {
    pub connections: f64,
    pub users: f64,
    pub deliveries: f64,
    pub before: Bus,
    pub after: Bus,
    pub memory_mib: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrimaryLoad {
    /// Commands received per second (publishes, subscription changes, registry, claims, limits).
    pub commands: f64,
    /// Pub/sub messages written to subscribers per second.
    pub messages_out: f64,
    pub bytes_out: f64,
    /// Channel subscriptions held.
    pub subscriptions: f64,
    pub memory_mib: f64,
    pub cores: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PostgresLoad {
    pub statements: f64,
    /// Commits waiting for a WAL flush (each replica writer's publish statements).
    pub flushed_commits: f64,
    pub rows_inserted: f64,
    pub rows_updated: f64,
    pub wal_bytes: f64,
    pub cores: f64,
    /// How busy each replica's writer is (1 or more: it cannot keep up).
    pub writer_load: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub replicas: u32,
    /// Connected users, and their sharded channels' subscriptions (a user on two replicas: two).
    pub users: u64,
    pub subscriptions: u64,
    pub replica: Vec<ReplicaLoad>,
    pub before: Vec<PrimaryLoad>,
    pub after: Vec<PrimaryLoad>,
    pub postgres: PostgresLoad,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The load of `workload` on `layout` (from [`Layout::place`]).
pub fn model(workload: &Workload, costs: &Costs, layout: &Layout) -> Outcome {
    let c = costs;
    let n = layout.connections.len() as f64;
    let k = f64::from(workload.recipients);
    let publishes = workload.publishes_per_s();
    let connections = workload.connections as f64;
    let users = layout.total_users.max(1) as f64;
    // Notifications per second to each connected user.
    let per_user = workload.notifications_per_s * workload.online / users;
    let churn = workload.churn_per_s;
    let heartbeats = connections / workload.heartbeat_s;

    let replica = layout
        .connections
        .iter()
        .zip(&layout.users)
        .map(|(&here, &users_here)| {
            let here = here as f64;
            let users_here = users_here as f64;
            let deliveries = per_user * here;
            let publishes_here = publishes / n;
            let common_us = publishes_here * (c.gw_publish_us + (k - 1.0) * c.gw_recipient_us)
                + deliveries * c.gw_delivery_us
                + churn * here / connections * c.gw_connect_us
                + here / workload.heartbeat_s * c.gw_heartbeat_us;
            let before_decode = publishes * (c.gw_message_us + (k - 1.0) * c.gw_message_notification_us);
            let after_messages = per_user * users_here;
            // One notification per sharded message.
            let after_decode = after_messages * c.gw_message_us;
            let sends = publishes_here * (k - 1.0) * c.gw_send_us;
            ReplicaLoad {
                connections: here,
                users: users_here,
                deliveries,
                before: Bus {
                    messages: publishes,
                    bytes: publishes * workload.event_bytes(),
                    decode_cores: before_decode / 1e6,
                    cores: (common_us + before_decode) / 1e6,
                },
                after: Bus {
                    messages: after_messages,
                    bytes: after_messages * workload.message_bytes(),
                    decode_cores: after_decode / 1e6,
                    cores: (common_us + after_decode + sends) / 1e6,
                },
                memory_mib: c.gw_base_mib + here * c.gw_connection_bytes / MIB,
            }
        })
        .collect();

    // Registry, claims and rate limits: the same before and after, spread over primaries by key.
    let other_commands = churn * (c.redis_connect_commands + 1.0) + heartbeats;
    let other_us = churn * (c.redis_connect_us + c.redis_disconnect_us) + heartbeats * c.redis_heartbeat_us;
    let registry_bytes = connections * c.redis_connection_bytes;
    let m = layout.primary_users.len();
    let replicas = layout.connections.len();

    // Before: one channel. Every primary sees every publish (a classic PUBLISH on a Redis Cluster
    // reaches every node); each replica subscribes on one primary (replica r on primary r mod M).
    let event_bytes = workload.event_bytes();
    let before = (0..m)
        .map(|j| {
            let subscribers = (0..replicas).filter(|r| r % m == j).count() as f64;
            let messages_out = publishes * subscribers;
            let us = publishes * (c.redis_command_us + event_bytes * c.redis_input_ns_per_byte / 1e3)
                + messages_out * (c.redis_message_us + event_bytes * c.redis_output_ns_per_byte / 1e3)
                + other_us / m as f64;
            PrimaryLoad {
                commands: (publishes + other_commands) / m as f64,
                messages_out,
                bytes_out: messages_out * event_bytes,
                subscriptions: subscribers,
                memory_mib: registry_bytes / m as f64 / MIB,
                cores: us / 1e6,
            }
        })
        .collect();

    // After: a channel per user, on the user's primary; one SPUBLISH per recipient.
    let message_bytes = workload.message_bytes();
    let after = (0..m)
        .map(|j| {
            let share = layout.primary_users[j] as f64 / users;
            let subscriptions = layout.primary_subscriptions[j] as f64;
            let spublishes = workload.notifications_per_s * share;
            let messages_out = per_user * subscriptions;
            // A connection whose user had none on its replica subscribes; its leaving unsubscribes.
            let changes = churn * subscriptions / connections;
            let us = spublishes * (c.redis_command_us + message_bytes * c.redis_input_ns_per_byte / 1e3)
                + messages_out * (c.redis_message_us + message_bytes * c.redis_output_ns_per_byte / 1e3)
                + changes * (c.redis_ssubscribe_us + c.redis_sunsubscribe_us)
                + other_us * share;
            PrimaryLoad {
                commands: spublishes + 2.0 * changes + other_commands * share,
                messages_out,
                bytes_out: messages_out * message_bytes,
                subscriptions,
                memory_mib: (subscriptions * c.redis_subscription_bytes + registry_bytes * share) / MIB,
                cores: us / 1e6,
            }
        })
        .collect();

    Outcome {
        replicas: replicas as u32,
        users: layout.total_users,
        subscriptions: layout.subscriptions(),
        replica,
        before,
        after,
        postgres: postgres(workload, costs, layout),
    }
}

/// The most writes a replica's writer takes in one batch (`adapters/group_commit.rs`).
const MAX_BATCH: f64 = 512.0;

/// PostgreSQL: the same before and after (sharding the bus changes nothing there).
fn postgres(workload: &Workload, c: &Costs, layout: &Layout) -> PostgresLoad {
    let n = layout.connections.len() as f64;
    let publishes = workload.publishes_per_s();
    let notifications = workload.notifications_per_s;
    let deliveries = notifications * workload.online * workload.connections as f64 / layout.total_users.max(1) as f64;
    // Each replica's writer takes what waits, one statement (and one flushed commit) per cycle; a
    // cycle lasts the commit plus the rows' time, so it stretches as the rows grow. A writer writes
    // its replica's publishes and the acks and attempt counts of its replica's deliveries.
    let writer_load = (notifications + 2.0 * deliveries) / n * c.pg_writer_row_us / 1e6;
    let cycles = if writer_load < 1.0 {
        1e3 * (1.0 - writer_load) / c.pg_commit_ms.max(f64::MIN_POSITIVE)
    } else {
        // Past its capacity a writer commits its largest batches back to back.
        let rows = MAX_BATCH * f64::from(workload.recipients);
        1e3 / (c.pg_commit_ms + rows * c.pg_writer_row_us / 1e3).max(f64::MIN_POSITIVE)
    };
    let batches = (publishes / n).min(cycles);
    // Acknowledgements and attempt counts: a statement each per cycle, when there are any.
    let side_statements = 2.0 * (deliveries / n).min(cycles.max(batches));
    let rows_inserted = notifications;
    // Each notification bumps its user's sequence and kept unread count; each delivery is stamped
    // when acknowledged and counted as an attempt.
    let rows_updated = 2.0 * notifications + 2.0 * deliveries;
    let statements = publishes + n * (batches + side_statements) + workload.churn_per_s * c.pg_connect_statements;
    PostgresLoad {
        statements,
        flushed_commits: n * batches,
        rows_inserted,
        rows_updated,
        wal_bytes: (rows_inserted + rows_updated) * c.pg_wal_bytes_per_row,
        cores: (statements * c.pg_statement_us + (rows_inserted + rows_updated) * c.pg_row_us) / 1e6,
        writer_load,
    }
}

/// Runs the model for each count of `replicas` and prints it as Markdown.
pub fn run(workload: &Workload, costs: &Costs, replicas: &[u32]) -> anyhow::Result<String> {
    workload.check()?;
    anyhow::ensure!(
        !replicas.is_empty() && replicas.iter().all(|&n| n > 0),
        "--replicas lists replica counts, each at least 1"
    );
    let outcomes: Vec<Outcome> = replicas
        .iter()
        .map(|&n| model(workload, costs, &Layout::place(workload, n)))
        .collect();
    Ok(report(workload, costs, &outcomes))
}

/// `x` with thousands separators, no decimals.
fn count(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < -0.5 { format!("-{out}") } else { out }
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

fn whole(x: f64) -> String {
    format!("{x:.0}")
}

fn cores(x: f64) -> String {
    format!("{x:.2}")
}

fn busiest<T>(items: &[T], key: impl Fn(&T) -> f64) -> f64 {
    items.iter().map(key).fold(0.0, f64::max)
}

/// A Redis primary runs commands on one thread: past this many cores of work it is saturated.
const REDIS_SATURATED: f64 = 0.8;

fn flag(x: f64, limit: f64) -> String {
    if x >= limit {
        format!("**{}**", cores(x))
    } else {
        cores(x)
    }
}

/// How a number is shown in a table.
type Show = fn(f64) -> String;

/// A quantity of a `T` shown in a table: its header, how it is read, how it is shown.
type Quantity<T> = (&'static str, fn(&T) -> f64, Show);

/// A column of a report table: its header and its cell for one replica count.
type Column = (String, Box<dyn Fn(&Outcome) -> String>);

fn column(header: &str, cell: impl Fn(&Outcome) -> String + 'static) -> Column {
    (header.to_owned(), Box::new(cell))
}

/// A quantity before sharding and after, as two columns.
fn before_after(
    header: &str,
    before: impl Fn(&Outcome) -> String + 'static,
    after: impl Fn(&Outcome) -> String + 'static,
) -> [Column; 2] {
    [column(&format!("{header}, before"), before), column("after", after)]
}

/// Appends `title`, then a Markdown table of one row per outcome: its replica count, then `columns`.
fn table(out: &mut String, title: &str, outcomes: &[Outcome], columns: &[Column]) {
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let headers: Vec<&str> = columns.iter().map(|(header, _)| header.as_str()).collect();
    let _ = writeln!(out, "{title}\n\n| replicas | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    for o in outcomes {
        let cells: Vec<String> = columns.iter().map(|(_, cell)| cell(o)).collect();
        let _ = writeln!(out, "| {} | {} |", o.replicas, cells.join(" | "));
    }
}

fn report(w: &Workload, costs: &Costs, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let placement = match w.placement {
        Placement::Random => "each connection on a replica drawn on its own",
        Placement::User => "each user's connections on one replica",
    };
    let _ = writeln!(
        out,
        "Workload: {} connections ({:.2} per user, {} users), {} notifications/s in publishes to {} \
         recipient(s) ({} publishes/s), {:.0} % to connected users; {} connects/s and as many \
         disconnects; a heartbeat every {} s; bus: {} B per notification + {} B per message; Redis \
         primaries: {}; placement: {placement}, skew {}, seed {}.\n",
        count(w.connections as f64),
        w.connections_per_user,
        count(outcomes.first().map_or(0, |o| o.users) as f64),
        count(w.notifications_per_s),
        w.recipients,
        count(w.publishes_per_s()),
        w.online * 100.0,
        count(w.churn_per_s),
        w.heartbeat_s,
        w.bytes_per_notification,
        w.bytes_per_message,
        w.primaries,
        w.skew,
        w.seed,
    );
    if *costs != Costs::MEASURED {
        let _ = writeln!(out, "Costs differing from the measured ones:\n");
        for ((name, value, unit, _), (_, measured, _, _)) in costs.rows().into_iter().zip(Costs::MEASURED.rows()) {
            if value != measured {
                let _ = writeln!(out, "- `{name}` = {value} {unit} (measured: {measured})");
            }
        }
        out.push('\n');
    }

    // A replica's column; a replica's bus, before and after sharding, as two columns.
    let replica = |header: &str, pick: fn(&ReplicaLoad) -> f64, show: Show| {
        column(header, move |o| show(busiest(&o.replica, pick)))
    };
    let bus = |header: &str, pick: fn(&Bus) -> f64, show: Show| {
        before_after(
            header,
            move |o| show(busiest(&o.replica, |x| pick(&x.before))),
            move |o| show(busiest(&o.replica, |x| pick(&x.after))),
        )
    };
    let mut columns = vec![
        replica("connections", |x| x.connections, count),
        replica("deliveries/s", |x| x.deliveries, count),
    ];
    columns.extend(bus("bus messages in/s", |b| b.messages, count));
    columns.extend(bus("bus MB/s in", |b| b.bytes, mb));
    columns.extend(bus("decode CPU cores", |b| b.decode_cores, cores));
    columns.extend(bus("CPU cores", |b| b.cores, cores));
    columns.push(replica("memory MiB", |x| x.memory_mib, whole));
    table(
        &mut out,
        "Per replica (the busiest replica for each column; before = one channel for all, after = one \
         sharded channel per user):",
        outcomes,
        &columns,
    );

    let redis: [Quantity<PrimaryLoad>; 6] = [
        ("commands/s", |x| x.commands, count),
        ("messages out/s", |x| x.messages_out, count),
        ("MB/s out", |x| x.bytes_out, mb),
        ("subscriptions", |x| x.subscriptions, count),
        ("memory MiB", |x| x.memory_mib, whole),
        ("CPU cores", |x| x.cores, |x| flag(x, REDIS_SATURATED)),
    ];
    let columns: Vec<Column> = redis
        .into_iter()
        .flat_map(|(header, pick, show)| {
            before_after(
                header,
                move |o| show(busiest(&o.before, pick)),
                move |o| show(busiest(&o.after, pick)),
            )
        })
        .collect();
    table(
        &mut out,
        &format!("Per Redis primary (the busiest; bold: past {REDIS_SATURATED} of its one core, saturated):"),
        outcomes,
        &columns,
    );

    let postgres: [Quantity<PostgresLoad>; 7] = [
        ("statements/s", |p| p.statements, count),
        ("flushed commits/s", |p| p.flushed_commits, count),
        ("rows inserted/s", |p| p.rows_inserted, count),
        ("rows updated/s", |p| p.rows_updated, count),
        ("WAL MB/s", |p| p.wal_bytes, mb),
        ("CPU cores", |p| p.cores, cores),
        ("writer load per replica", |p| p.writer_load, |x| flag(x, 1.0)),
    ];
    let columns: Vec<Column> = postgres
        .into_iter()
        .map(|(header, pick, show)| column(header, move |o| show(pick(&o.postgres))))
        .collect();
    table(
        &mut out,
        "PostgreSQL (the same before and after; bold writer load: a replica's writer cannot keep up):",
        outcomes,
        &columns,
    );
    out
}

/// The costs as a Markdown table (`--list-costs`).
pub fn costs_table(costs: &Costs) -> String {
    let mut out = String::from("| cost | value | unit | what |\n|---|---|---|---|\n");
    for (name, value, unit, what) in costs.rows() {
        let _ = writeln!(out, "| `{name}` | {value} | {unit} | {what} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            connections: 10_000,
            notifications_per_s: 1_000.0,
            recipients: 1,
            connections_per_user: 1.0,
            online: 1.0,
            churn_per_s: 10.0,
            heartbeat_s: 30.0,
            primaries: 1,
            bytes_per_notification: 400.0,
            bytes_per_message: 100.0,
            placement: Placement::Random,
            skew: 0.0,
            seed: 7,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
    }

    fn run_on(w: &Workload, replicas: u32) -> Outcome {
        model(w, &Costs::MEASURED, &Layout::place(w, replicas))
    }

    #[test]
    fn placement_holds_every_connection_and_is_reproducible() {
        let w = Workload {
            connections_per_user: 1.5,
            ..workload()
        };
        let layout = Layout::place(&w, 7);
        assert_eq!(layout.connections.iter().sum::<u64>(), w.connections);
        assert_eq!(layout.primary_users.iter().sum::<u64>(), layout.total_users);
        assert_eq!(layout.primary_subscriptions.iter().sum::<u64>(), layout.subscriptions());
        let users = layout.total_users as f64;
        assert!(
            (users - 10_000.0 / 1.5).abs() < 200.0,
            "{users} users for 1.5 connections each"
        );
        assert_eq!(layout, Layout::place(&w, 7), "same seed, same layout");
        assert_ne!(layout, Layout::place(&Workload { seed: 8, ..w }, 7), "another seed");
    }

    #[test]
    fn before_every_replica_receives_every_publish() {
        let w = Workload {
            recipients: 10,
            ..workload()
        };
        let o = run_on(&w, 5);
        for r in &o.replica {
            assert!(close(r.before.messages, 100.0), "1,000 notifications in 100 publishes");
            assert!(close(r.before.bytes, 100.0 * (100.0 + 10.0 * 400.0)));
        }
    }

    #[test]
    fn after_the_replicas_receive_one_message_per_delivery_when_users_have_one_connection() {
        for replicas in [1, 3, 10] {
            let o = run_on(&workload(), replicas);
            let received: f64 = o.replica.iter().map(|r| r.after.messages).sum();
            let delivered: f64 = o.replica.iter().map(|r| r.deliveries).sum();
            assert!(close(received, delivered), "{received} received, {delivered} delivered");
            assert!(close(delivered, 1_000.0));
            let out: f64 = o.after.iter().map(|p| p.messages_out).sum();
            assert!(close(out, received), "what Redis writes is what the replicas read");
        }
    }

    #[test]
    fn after_users_on_several_replicas_are_received_on_each_and_delivered_once_per_connection() {
        let w = Workload {
            connections_per_user: 2.0,
            ..workload()
        };
        let o = run_on(&w, 10);
        let received: f64 = o.replica.iter().map(|r| r.after.messages).sum();
        let delivered: f64 = o.replica.iter().map(|r| r.deliveries).sum();
        assert!(close(delivered, 2_000.0), "two connections per recipient");
        // Two connections of a user land on one replica about one time in ten.
        assert!(received > 1_000.0 && received < delivered, "{received}");
        let by_user = run_on(
            &Workload {
                placement: Placement::User,
                ..w
            },
            10,
        );
        let received: f64 = by_user.replica.iter().map(|r| r.after.messages).sum();
        assert!(close(received, 1_000.0), "routed by user: one message per notification");
    }

    #[test]
    fn decoding_costs_a_message_and_each_further_notification_in_it() {
        let c = Costs::MEASURED;
        let w = Workload {
            recipients: 100,
            ..workload()
        };
        let o = run_on(&w, 2);
        let per_publish = c.gw_message_us + 99.0 * c.gw_message_notification_us;
        assert!(close(o.replica[0].before.decode_cores, 10.0 * per_publish / 1e6));
        let after = &o.replica[0].after;
        assert!(close(after.decode_cores, after.messages * c.gw_message_us / 1e6));
    }

    #[test]
    fn skewed_placement_loads_the_first_replica_and_keeps_the_sums() {
        let w = Workload {
            skew: 1.0,
            ..workload()
        };
        let o = run_on(&w, 4);
        let connections: Vec<f64> = o.replica.iter().map(|r| r.connections).collect();
        // Weights 1, 1/2, 1/3, 1/4: the first holds 12/25 of the connections.
        assert!((connections[0] / 10_000.0 - 0.48).abs() < 0.02, "{connections:?}");
        assert!(connections.windows(2).all(|pair| pair[0] > pair[1]), "{connections:?}");
        let received: f64 = o.replica.iter().map(|r| r.after.messages).sum();
        assert!(close(received, 1_000.0));
        assert!(o.replica[0].after.cores > o.replica[3].after.cores);
        assert!(
            close(o.replica[0].before.messages, o.replica[3].before.messages),
            "before: all alike"
        );
    }

    #[test]
    fn before_every_primary_carries_every_publish_after_they_share_them() {
        let w = Workload {
            primaries: 4,
            ..workload()
        };
        let o = run_on(&w, 8);
        for p in &o.before {
            assert!(
                close(p.messages_out, 1_000.0 * 2.0),
                "two replicas subscribe on each primary"
            );
        }
        let spread: f64 = o.after.iter().map(|p| p.messages_out).sum();
        assert!(close(spread, 1_000.0));
        for p in &o.after {
            assert!((p.messages_out - 250.0).abs() < 20.0, "{}", p.messages_out);
        }
        let before_cores = busiest(&o.before, |p| p.cores);
        let after_cores = busiest(&o.after, |p| p.cores);
        assert!(after_cores < before_cores);
    }

    #[test]
    fn subscription_churn_follows_connections() {
        let w = Workload {
            churn_per_s: 100.0,
            ..workload()
        };
        let o = run_on(&w, 5);
        let commands: f64 = o.after.iter().map(|p| p.commands).sum();
        let heartbeats = 10_000.0 / 30.0;
        let other = 100.0 * (Costs::MEASURED.redis_connect_commands + 1.0) + heartbeats;
        // One user per connection: every connect subscribes and every disconnect unsubscribes.
        assert!(close(commands, 1_000.0 + 200.0 + other), "{commands}");
    }

    #[test]
    fn postgres_counts_rows_and_finds_the_writer_limit() {
        let o = run_on(&workload(), 2);
        let p = o.postgres;
        assert!(close(p.rows_inserted, 1_000.0));
        assert!(close(p.rows_updated, 4_000.0), "sequence, unread count, ack, attempt");
        assert!(close(p.wal_bytes, 5_000.0 * Costs::MEASURED.pg_wal_bytes_per_row));
        assert!(p.writer_load < 1.0);
        let heavy = run_on(
            &Workload {
                notifications_per_s: 100_000.0,
                ..workload()
            },
            2,
        );
        assert!(heavy.postgres.writer_load >= 1.0, "50,000 rows/s is past one writer");
        // Each writer commits batches of 512 back to back.
        let cycle_ms = Costs::MEASURED.pg_commit_ms + 512.0 * Costs::MEASURED.pg_writer_row_us / 1e3;
        assert!(close(heavy.postgres.flushed_commits, 2.0 * 1e3 / cycle_ms));
    }

    #[test]
    fn costs_come_from_a_file_and_flags_and_unknown_names_are_refused() {
        let mut costs = Costs::MEASURED;
        costs
            .apply_json(r#"{"gw_delivery_us": 40, "redis_command_us": 2.5}"#)
            .expect("known names");
        assert_eq!(costs.gw_delivery_us, 40.0);
        assert_eq!(costs.redis_command_us, 2.5);
        assert!(costs.apply_json(r#"{"gw_delivery": 1}"#).is_err());
        assert!(costs.apply_json(r#"{"gw_delivery_us": "x"}"#).is_err());
        let flagged = Costs::load(None, &["pg_row_us=3".to_owned()]).expect("a flag");
        assert_eq!(flagged.pg_row_us, 3.0);
        assert!(Costs::load(None, &["pg_row_us".to_owned()]).is_err());
        assert!(Costs::load(None, &["pg_row_us=-1".to_owned()]).is_err());
    }

    #[test]
    fn the_report_is_a_table_per_component_and_the_same_every_time() {
        let w = workload();
        let first = run(&w, &Costs::MEASURED, &[2, 5]).expect("runs");
        assert_eq!(first, run(&w, &Costs::MEASURED, &[2, 5]).expect("runs"));
        assert_eq!(first.matches("\n| 2 |").count(), 3, "{first}");
        assert!(run(&w, &Costs::MEASURED, &[]).is_err());
        assert_eq!(count(1_234_567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
    }
}
