//! `herald-bench`: numbers that matter, measured against the real binary and a peer on the same
//! machine. Every run is bounded (a fixed number of connections) and targets loopback only.
//!
//! - `idle-memory`: resident memory per idle WebSocket connection, herald-gateway versus a bare axum
//!   echo server with the same buffer settings (the peer DESIGN.md's figures come from), plus how fast
//!   connections are established (token + upgrade).
//! - `peer-echo`: the peer itself (started by `idle-memory`).
//! - `capacity`: a model (no server started) of the load of many connections and notifications on
//!   replicas, Redis primaries and PostgreSQL, from measured per-operation costs (docs/scaling.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use herald_e2e::{GatewayProcess, Ws, recv_json};

mod capacity;
mod cluster;
mod openloop;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Memory per idle connection and connection rate, gateway versus peer.
    IdleMemory {
        /// Connections to open and hold on each server (bounded by the open-files limit).
        #[arg(long, default_value_t = 5_000)]
        connections: usize,
        /// How many connections are opened concurrently.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Cluster mode: publish throughput (1 and 100 recipients per request) and publish-to-receive
    /// latency at a paced rate across two replicas sharing PostgreSQL and Redis (the test services:
    /// `eval "$(scripts/services)"` first).
    ClusterPublish {
        /// Single-recipient publishes for the throughput run.
        #[arg(long, default_value_t = 4_000)]
        single: usize,
        /// 100-recipient publishes for the throughput run.
        #[arg(long, default_value_t = 200)]
        batched: usize,
        /// Concurrent publishers in the throughput runs.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Paced publish rate of the latency run, per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Length of the latency run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Users connected to the receiving replica.
        #[arg(long, default_value_t = 100)]
        users: usize,
    },
    /// The platform team's open-loop workload (users connected, notifications published at an
    /// offered rate, to one recipient each by default, every one acknowledged) against Herald and its peers, one
    /// server after another, each freshly started. Cluster servers use a durable PostgreSQL (fsync
    /// on) and a Redis of the benchmark's own (`scripts/services` with HERALD_TEST_PG_DURABLE=1).
    OpenLoop {
        /// Connected users; publishes go round-robin over them.
        #[arg(long, default_value_t = 2_000)]
        users: usize,
        /// Publishes made (each to `--recipients` users).
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
        /// Recipients of each publish (consecutive users, at most `--users`): every publish delivers
        /// this many notifications.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        recipients: u16,
        /// Offered publishes per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Servers to run, in order: herald, herald-cluster, socketio, socketio-redis, nats.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "herald,herald-cluster,socketio,socketio-redis,nats"
        )]
        servers: Vec<openloop::ServerKind>,
        /// How long stragglers may arrive after the last publish.
        #[arg(long, default_value_t = 30)]
        drain_seconds: u64,
        /// Publishes in flight at most (past it the offered rate drops, and the table says so).
        #[arg(long, default_value_t = 4_096)]
        max_in_flight: usize,
        /// Replace the open-loop section of this Markdown file (docs/benchmarks.md) with the results.
        #[arg(long)]
        write: Option<std::path::PathBuf>,
        /// A setting for Herald's gateways, `NAME=VALUE` (repeatable; e.g. `HERALD_OUTBOUND_QUEUE=64`):
        /// they start with a cleared environment, so the bench's own does not reach them.
        #[arg(long = "gateway-env", value_name = "NAME=VALUE", value_parser = openloop::herald::parse_setting)]
        gateway_env: Vec<(String, String)>,
    },
    /// A model, not a run: the load of a population of connections and a notification rate on each
    /// replica, Redis primary and PostgreSQL, before and after sharding the bus, from measured
    /// per-operation costs (docs/scaling.md). Deterministic for a given seed.
    Capacity {
        /// Connections held across all replicas.
        #[arg(long, default_value_t = 1_000_000)]
        connections: u64,
        /// Notifications stored per second (a publish to N recipients stores N).
        #[arg(long, default_value_t = 100_000.0)]
        notifications_per_second: f64,
        /// Recipients of each publish.
        #[arg(long, default_value_t = 1)]
        recipients: u32,
        /// Replica counts to model, one table row each.
        #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,50,100")]
        replicas: Vec<u32>,
        /// Redis primaries (a Redis Cluster's; 1: one Redis).
        #[arg(long, default_value_t = 1)]
        primaries: u32,
        /// Connections per connected user, on average (a browser tab and a phone: 2).
        #[arg(long, default_value_t = 1.5)]
        connections_per_user: f64,
        /// Share of notifications whose recipient is connected (the others are only stored).
        #[arg(long, default_value_t = 1.0)]
        online: f64,
        /// Connections opened per second, and as many closed [default: every connection once per
        /// 57 minutes, the mean session lifetime: 1 h, each ending between 0.9 and 1 of it].
        #[arg(long)]
        churn: Option<f64>,
        /// Seconds between two heartbeats of a connection.
        #[arg(long, default_value_t = 30.0)]
        heartbeat_seconds: f64,
        /// Bytes of one notification and its unread count in a bus message.
        #[arg(long, default_value_t = 400.0)]
        bytes_per_notification: f64,
        /// Bytes of a bus message around its notifications (envelope, channel name, framing).
        #[arg(long, default_value_t = 120.0)]
        bytes_per_message: f64,
        /// How connections are placed on replicas.
        #[arg(long, value_enum, default_value_t = capacity::Placement::Random)]
        placement: capacity::Placement,
        /// Uneven placement: replica r (from 0) drawn with weight 1 / (r + 1)^skew.
        #[arg(long, default_value_t = 0.0)]
        skew: f64,
        /// Seed of the placement.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A JSON object of per-operation costs (names as `--list-costs` prints them) replacing the
        /// measured ones.
        #[arg(long)]
        costs: Option<std::path::PathBuf>,
        /// One cost, `name=value` (after `--costs`); repeatable.
        #[arg(long = "cost", value_name = "NAME=VALUE")]
        cost: Vec<String>,
        /// Print the per-operation costs and stop.
        #[arg(long)]
        list_costs: bool,
    },
    /// A bare axum WebSocket echo server (4 KiB read buffer, no write buffer).
    PeerEcho {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// A session lasts at most an hour (the gateway's default) and ends between nine tenths and the
/// whole of it: 57 minutes on average, after which its client reconnects.
const MEAN_SESSION_SECONDS: f64 = 0.95 * 3_600.0;

pub(crate) const JWT_SECRET: &str = "bench-user-jwt-secret-0123456789-abcdefghij";
pub(crate) const TOKEN_SECRET: &str = "bench-token-secret-0123456789-ABCDEFGHIJKL";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::PeerEcho { listen } => peer_echo(listen).await,
        Bench::Capacity {
            connections,
            notifications_per_second,
            recipients,
            replicas,
            primaries,
            connections_per_user,
            online,
            churn,
            heartbeat_seconds,
            bytes_per_notification,
            bytes_per_message,
            placement,
            skew,
            seed,
            costs,
            cost,
            list_costs,
        } => {
            let costs = capacity::Costs::load(costs.as_deref(), &cost)?;
            if list_costs {
                print!("{}", capacity::costs_table(&costs));
                return Ok(());
            }
            let workload = capacity::Workload {
                connections,
                notifications_per_s: notifications_per_second,
                recipients,
                connections_per_user,
                online,
                churn_per_s: churn.unwrap_or(connections as f64 / MEAN_SESSION_SECONDS),
                heartbeat_s: heartbeat_seconds,
                primaries,
                bytes_per_notification,
                bytes_per_message,
                placement,
                skew,
                seed,
            };
            print!("{}", capacity::run(&workload, &costs, &replicas)?);
            Ok(())
        }
        Bench::OpenLoop {
            users,
            notifications,
            recipients,
            rate,
            servers,
            drain_seconds,
            max_in_flight,
            write,
            gateway_env,
        } => {
            anyhow::ensure!(
                usize::from(recipients) <= users,
                "--recipients ({recipients}) cannot exceed --users ({users})"
            );
            let plan = openloop::Plan {
                users,
                notifications,
                recipients: usize::from(recipients),
                rate,
                drain: Duration::from_secs(drain_seconds),
                connect_concurrency: 64,
                max_in_flight,
            };
            openloop::run_all(&servers, plan, &gateway_env, write.as_deref()).await
        }
        Bench::IdleMemory {
            connections,
            concurrency,
        } => idle_memory(connections, concurrency).await,
        Bench::ClusterPublish {
            single,
            batched,
            concurrency,
            rate,
            seconds,
            users,
        } => {
            cluster::run(cluster::Plan {
                single,
                batched,
                concurrency,
                rate,
                seconds,
                users,
            })
            .await
        }
    }
}

async fn peer_echo(listen: SocketAddr) -> anyhow::Result<()> {
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) || socket.send(message).await.is_err() {
                break;
            }
        }
    }
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(|upgrade: WebSocketUpgrade| async move {
            upgrade.read_buffer_size(4 * 1024).write_buffer_size(0).on_upgrade(echo)
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // Same line shape as the gateway's, so one process runner serves both.
    println!("INFO gateway:listening address=http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

pub(crate) fn user_jwt(sub: &str) -> String {
    herald_e2e::hs256_jwt(JWT_SECRET, sub, 3_600, &[])
}

/// A connection token for `user` from `POST /ws/token` at `token_url` (the bench's HS256 user JWT).
pub(crate) async fn connection_token(client: &reqwest::Client, token_url: &str, user: &str) -> anyhow::Result<String> {
    let body: serde_json::Value = client
        .post(token_url)
        .bearer_auth(user_jwt(user))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["token"].as_str().context("no token in the answer")?.to_owned())
}

struct Measured {
    name: &'static str,
    baseline_kib: u64,
    loaded_kib: u64,
    connections: usize,
    elapsed: Duration,
}

impl Measured {
    fn per_connection_bytes(&self) -> f64 {
        (self.loaded_kib.saturating_sub(self.baseline_kib) * 1024) as f64 / self.connections as f64
    }
}

/// Opens `count` connections with `open`, `concurrency` at a time, and keeps them.
async fn open_all<F, Fut>(count: usize, concurrency: usize, open: F) -> anyhow::Result<(Vec<Ws>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Ws>>,
{
    let started = Instant::now();
    let sockets: Vec<Ws> = futures_util::stream::iter(0..count)
        .map(open)
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    Ok((sockets, started.elapsed()))
}

/// Pings every connection once so each one is proven alive while measured.
async fn ping_all(sockets: &mut [Ws]) -> anyhow::Result<()> {
    for ws in sockets.iter_mut() {
        ws.send(herald_e2e::ping_message()).await?;
    }
    for ws in sockets.iter_mut() {
        let reply = recv_json(ws).await;
        if reply.is_null() {
            bail!("no reply");
        }
    }
    Ok(())
}

async fn settle_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_kib(pid)
}

async fn measure_gateway(connections: usize, concurrency: usize) -> anyhow::Result<Measured> {
    let limit = (connections * 2).to_string();
    let gateway = GatewayProcess::start(
        &[],
        &[
            ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
            herald_e2e::JWT_ISSUER_AND_AUDIENCE[0],
            herald_e2e::JWT_ISSUER_AND_AUDIENCE[1],
            ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
            ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", &limit),
        ],
    );
    let client = reqwest::Client::new();
    // Warm up: one full connection, so lazily allocated state is in the baseline.
    let token_url = gateway.url("/ws/token");
    let addr = gateway.addr;
    let open = |i: usize| {
        let client = client.clone();
        let token_url = token_url.clone();
        async move {
            let token = connection_token(&client, &token_url, &format!("user-{i}")).await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await?;
            recv_json(&mut ws).await;
            anyhow::Ok(ws)
        }
    };
    let warm = open(usize::MAX).await?;
    let baseline_kib = settle_rss(gateway.pid()).await?;
    let (mut sockets, elapsed) = open_all(connections, concurrency, open).await?;
    ping_all(&mut sockets).await?;
    let loaded_kib = settle_rss(gateway.pid()).await?;
    drop((warm, sockets));
    Ok(Measured {
        name: "herald-gateway",
        baseline_kib,
        loaded_kib,
        connections,
        elapsed,
    })
}

async fn measure_peer(connections: usize, concurrency: usize) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let peer = GatewayProcess::start_binary(&exe, &["peer-echo"], &[]);
    let addr = peer.addr;
    let open = |_: usize| async move {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        anyhow::Ok(ws)
    };
    let warm = open(0).await?;
    let baseline_kib = settle_rss(peer.pid()).await?;
    let (mut sockets, elapsed) = open_all(connections, concurrency, open).await?;
    ping_all(&mut sockets).await?;
    let loaded_kib = settle_rss(peer.pid()).await?;
    drop((warm, sockets));
    Ok(Measured {
        name: "peer: bare axum echo",
        baseline_kib,
        loaded_kib,
        connections,
        elapsed,
    })
}

async fn idle_memory(connections: usize, concurrency: usize) -> anyhow::Result<()> {
    let gateway = measure_gateway(connections, concurrency).await?;
    let peer = measure_peer(connections, concurrency).await?;
    println!(
        "| server | connections | RSS before (KiB) | RSS with connections (KiB) | bytes per connection | connect rate (/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for m in [&gateway, &peer] {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} |",
            m.name,
            m.connections,
            m.baseline_kib,
            m.loaded_kib,
            m.per_connection_bytes(),
            m.connections as f64 / m.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
