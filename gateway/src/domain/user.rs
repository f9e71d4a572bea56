//! The authenticated caller of the HTTP API, and the one rule every user id follows, wherever it
//! comes from (a user JWT's `sub`, a publish's `userIds`, `/dev/jwt?sub=`).

/// Longest user id, in bytes of UTF-8: the `user_id` columns are `VARCHAR(255)`, and counting bytes
/// keeps every accepted id within them whatever the characters.
pub const MAX_USER_ID_BYTES: usize = 255;

/// Why a string cannot be a user id; `Display` is the message clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    #[error("a user id must not be empty")]
    Empty,
    #[error("a user id must be at most {MAX_USER_ID_BYTES} bytes")]
    TooLong,
    #[error("a user id must not contain control, line-separator or bidirectional-override characters")]
    ForbiddenCharacter,
}

/// Checks `id` against the user-id rule: 1-255 bytes and no character that could forge or reorder
/// what a log line or an admin's screen shows (a newline in a `sub` split human log lines).
pub fn validate_user_id(id: &str) -> Result<(), InvalidUserId> {
    if id.is_empty() {
        Err(InvalidUserId::Empty)
    } else if id.len() > MAX_USER_ID_BYTES {
        Err(InvalidUserId::TooLong)
    } else if id.chars().any(is_forbidden) {
        Err(InvalidUserId::ForbiddenCharacter)
    } else {
        Ok(())
    }
}

/// C0 and C1 controls (newline, CR, tab, ESC, NEL, ...), the Unicode line and paragraph separators
/// (which some viewers break lines on), and the bidirectional embeddings, overrides and isolates
/// (which make text display in another order than it is stored: "Trojan Source").
fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_are_accepted() {
        for id in [
            "alice",
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "user@example.com",
            "Jörg Müller",
            "ユーザー",
            "a b",
        ] {
            assert_eq!(validate_user_id(id), Ok(()), "{id:?}");
        }
        assert_eq!(validate_user_id(&"x".repeat(MAX_USER_ID_BYTES)), Ok(()));
    }

    #[test]
    fn empty_and_too_long_ids_are_refused() {
        assert_eq!(validate_user_id(""), Err(InvalidUserId::Empty));
        assert_eq!(
            validate_user_id(&"x".repeat(MAX_USER_ID_BYTES + 1)),
            Err(InvalidUserId::TooLong)
        );
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        assert_eq!(validate_user_id(&"é".repeat(128)), Err(InvalidUserId::TooLong));
    }

    #[test]
    fn controls_separators_and_bidi_overrides_are_refused() {
        for c in [
            '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202a}',
            '\u{202e}', '\u{2066}', '\u{2069}',
        ] {
            assert_eq!(
                validate_user_id(&format!("alice{c}admin")),
                Err(InvalidUserId::ForbiddenCharacter),
                "U+{:04X}",
                c as u32
            );
        }
    }
}
