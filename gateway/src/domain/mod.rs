//! Pure types and rules of a gateway: tokens, connections, protocol messages, rate arithmetic.
//! Nothing here performs I/O or reads the clock; callers pass `now` in.

pub mod by_user;
pub mod channel;
pub mod client_ip;
pub mod connection;
pub mod ip_range;
pub mod link;
pub mod notification;
pub mod origin;
pub mod preferences;
pub mod protocol;
pub mod publish;
pub mod publisher;
pub mod rate;
pub mod text;
pub mod token;
pub mod user;

/// Milliseconds since the Unix epoch: the one time unit on the wire and in every record.
pub type UnixMs = i64;
