//! The authenticated caller of the HTTP API.

/// A user proven by a verified user JWT: `sub` is the id, roles come from the configured claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub id: String,
    pub roles: Vec<String>,
}

impl AuthenticatedUser {
    pub fn new(id: impl Into<String>, roles: Vec<String>) -> Self {
        Self { id: id.into(), roles }
    }
}
