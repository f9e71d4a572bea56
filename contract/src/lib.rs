//! What `herald-gateway` and `herald-operator` must agree on, defined once so that a renamed key or a
//! changed default cannot drift between them: the notification types, the gateway's settings (the
//! flag, environment variable and YAML key of each, and the file the operator renders), their
//! defaults, and the wrapper that keeps secrets out of logs.
//!
//! This crate holds data shapes only: no I/O beyond (de)serialization, no validation rules (those
//! are the gateway's), no Kubernetes types (those are the operator's).

pub mod defaults;
pub mod notification_type;
pub mod secret;
pub mod settings;

pub use notification_type::NotificationType;
pub use secret::Secret;
pub use settings::{ChannelEntry, LogFormat, Options, PublisherEntry, channels_checksum, env};
