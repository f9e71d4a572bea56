//! The default of every gateway setting, in the unit its option uses. The gateway's settings types
//! (`Default` impls) and the operator's CRD defaults both read them from here, so each default is
//! written once. docs/configuration.md lists them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The port the gateway listens on, in a container and by default.
pub const PORT: u16 = 8080;
/// Loopback only by default: exposing the gateway is a decision (`HERALD_LISTEN=0.0.0.0:8080`).
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT));
/// The port of the internal listener (`/api/publish`, `/metrics`), in a container and by default.
pub const INTERNAL_PORT: u16 = 9090;
/// Loopback only by default, like [`LISTEN`]: publishers and Prometheus reach it through a Service
/// that is not the public one (`HERALD_INTERNAL_LISTEN=0.0.0.0:9090` in a container).
pub const INTERNAL_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, INTERNAL_PORT));
/// Directory of the embedded default's SQLite file.
pub const DATA_DIR: &str = ".herald-data";
/// Prefix of every Redis key and channel.
pub const REDIS_PREFIX: &str = "herald:";
pub const DATABASE_MAX_CONNECTIONS: u32 = 10;

pub const JWT_ROLES_CLAIM: &str = "roles";
pub const JWT_LEEWAY_SECONDS: u64 = 30;

/// Plan section 11: connection tokens live 60 s.
pub const TOKEN_TTL_SECONDS: u64 = 60;
pub const MAX_TOKENS_PER_MINUTE: u32 = 10;
pub const MAX_CONNECTIONS_PER_USER: u32 = 5;
pub const MAX_CONNECTS_PER_MINUTE_PER_IP: u32 = 5;
pub const MAX_MESSAGES_PER_SECOND: u32 = 10;
pub const MAX_VIOLATIONS_PER_MINUTE: u32 = 5;
pub const MAX_SUBSCRIPTION_CHANGES_PER_MINUTE: u32 = 20;
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Half of it is the delivery window: 128 notifications in flight per connection (and 256 KiB at
/// most). With 64 (a window of 32), a connection past saturation kept finding its window full and
/// read its backlog back from the store 16 at a time: 100-recipient publishes past saturation went
/// 19,100-21,500/s at 0.058-0.066 ms of CPU each, and 27,600-28,200/s at 0.042-0.043 with 256
/// (docs/benchmarks.md).
pub const OUTBOUND_QUEUE: usize = 256;
pub const WRITE_TIMEOUT_MS: u64 = 10_000;
pub const HEARTBEAT_INTERVAL_SECONDS: u64 = 30;
pub const HEARTBEAT_TIMEOUT_SECONDS: u64 = 90;
/// Plan: registry entries expire after 2 h without a heartbeat.
pub const CONNECTION_TTL_SECONDS: u64 = 2 * 60 * 60;

pub const ADMIN_ROLE: &str = "admin";
/// Plan, open question 3: undelivered notifications are kept 7 days.
pub const RETENTION_DAYS: u32 = 7;
pub const ACK_TIMEOUT_MS: u64 = 30_000;
pub const MAX_DELIVERY_ATTEMPTS: u32 = 3;
/// Notifications per second a publisher may have stored on one replica unless configured otherwise:
/// far above any one product's traffic, low enough that a runaway loop cannot fill the database.
pub const PUBLISHER_NOTIFICATIONS_PER_SECOND: u32 = 20_000;
/// TCP connections each listener of a replica holds at most (HTTP and WebSocket): past it new ones are
/// closed at once, before anything is read, so file descriptors and memory stay bounded.
pub const MAX_CONNECTIONS: usize = 50_000;
/// How long a request's headers (and an idle keep-alive connection's next request) and a request's
/// body may take to arrive.
pub const HTTP_TIMEOUT_SECONDS: u64 = 10;
/// Longest a WebSocket session lives before it is told to reconnect (with a new token), so that role
/// changes and revocations reach every connection.
pub const MAX_SESSION_SECONDS: u64 = 60 * 60;
/// The drain on SIGTERM (sessions are sent away in waves over its first half); a pod's termination
/// grace must be longer.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 20;
