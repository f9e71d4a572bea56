//! `open-loop`: the platform team's workload. Users connect; notifications are published at an offered
//! rate whatever the server's answers (open loop), one recipient each; every notification is
//! acknowledged by its client; latency is publish request sent -> notification received. The same
//! driver runs every server (Herald embedded, Herald cluster, Socket.IO, Socket.IO + Redis, NATS),
//! one after another, each freshly started.
// The driver lands with the targets; until then the interface is only declared.
#![allow(dead_code)]

pub mod nats;
pub mod socketio;
pub mod target;
