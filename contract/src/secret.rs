//! A value that must never reach a log line or an error message: `Debug` and `Display` print `***`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret (a password, a key, a URL with credentials). Read it with [`Secret::expose`], at the one
/// place that needs the plaintext.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// For clap, which parses flags and environment variables through `From<String>`.
impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{:?}", Some(Secret::new(b"bytes".to_vec()))), "Some(***)");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }

    #[test]
    fn serializes_as_the_plain_value() {
        let secret: Secret = serde_json::from_str("\"abc\"").expect("a string");
        assert_eq!(secret.expose(), "abc");
        assert_eq!(serde_json::to_string(&secret).expect("json"), "\"abc\"");
    }
}
