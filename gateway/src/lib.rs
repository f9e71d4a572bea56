//! Herald gateway: one replica's connection tokens, WebSocket sessions and HTTP API.
//!
//! Hexagonal: `domain` (pure rules), `ports` (traits), `adapters` (their implementations), `app`
//! (services over ports), `http` and `ws` (transports over services). `api` lists the routes of each listener and
//! documents them (OpenAPI); `server` composes everything.

pub mod adapters;
pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod listener;
pub mod ports;
pub mod server;
pub mod telemetry;
pub mod ws;

pub use error::{Error, Result};
