//! WebSocket transport: the pre-upgrade checks (`GET /ws`) and the per-connection session loop.

mod session;
pub mod upgrade;

/// The subprotocol a client offers (`Sec-WebSocket-Protocol: herald.v1, token.<token>`) and the server
/// selects in its answer.
pub const SUBPROTOCOL: &str = "herald.v1";
/// Prefix of the subprotocol entry that carries the connection token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "token.";
