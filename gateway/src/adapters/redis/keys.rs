//! Names of Redis keys and channels. Whatever belongs to one user carries the user as a hash tag
//! (`{u:<user>}`): on a Redis Cluster it all lives in the user's slot, so one script may touch it
//! atomically, and the user's bus channel lives on the same primary.
//!
//! Redis hashes the text between the first `{` and the first `}` after it, or the whole key when
//! that text is empty. The `u:` keeps it from being empty (a user id may start with `}`); a user id
//! holding braces of its own moves the boundary, but the same way in every key of that user, so
//! their keys still share a slot. A prefix holding `{...}` would put every key in one slot: correct,
//! and not spread.

/// `<prefix><kind>:{u:<user>}`.
pub fn tagged(prefix: &str, kind: &str, user_id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + kind.len() + user_id.len() + 5);
    key.push_str(prefix);
    key.push_str(kind);
    key.push_str(":{u:");
    key.push_str(user_id);
    key.push('}');
    key
}

/// `<prefix><kind>:{u:<user>}:<rest>`.
pub fn tagged_with(prefix: &str, kind: &str, user_id: &str, rest: &str) -> String {
    let mut key = tagged(prefix, kind, user_id);
    key.push(':');
    key.push_str(rest);
    key
}

/// `<prefix><parts joined by :>`: keys of their own slot (a token claim, a rate limit, an index).
pub fn plain(prefix: &str, parts: &[&str]) -> String {
    let mut key = prefix.to_owned();
    key.push_str(&parts.join(":"));
    key
}

/// The user of a channel made by [`tagged`] with `kind`, if it is one.
pub fn user_of<'a>(prefix: &str, kind: &str, channel: &'a str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix)?
        .strip_prefix(kind)?
        .strip_prefix(":{u:")?
        .strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot Redis Cluster computes for `key` (CRC16/XMODEM of the hash tag, modulo 16384).
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match bytes.iter().position(|&b| b == b'{') {
            Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for &byte in hashed {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16_384
    }

    #[test]
    fn the_slot_function_matches_redis() {
        // Values from the Redis Cluster specification (CRC16 of "123456789" is 0x31C3) and
        // `CLUSTER KEYSLOT` (12182 for "foo").
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    #[test]
    fn a_users_keys_and_channel_share_one_slot_whatever_the_user_id_holds() {
        for user in [
            "alice",
            "a}b",
            "}a",
            "x{y}",
            "{}",
            "}",
            "ünïcödé",
            "user:with:colons",
            "a b",
        ] {
            let slots = [
                slot(&tagged("herald:ns:gw:", "events", user)),
                slot(&tagged_with(
                    "herald:ns:gw:",
                    "conn",
                    user,
                    "0b6c1a52-1c67-4d5e-a1b2-9c0f3e1d2a4b",
                )),
                slot(&tagged_with("herald:ns:gw:", "user", user, "conns")),
                slot(&tagged_with("herald:ns:gw:", "user", user, "pings")),
            ];
            assert!(slots.iter().all(|s| *s == slots[0]), "{user}: {slots:?}");
        }
        // Different users spread over the slots.
        let spread: std::collections::HashSet<u16> = (0..1_000)
            .map(|i| slot(&tagged("herald:", "events", &format!("user-{i}"))))
            .collect();
        assert!(spread.len() > 900, "{}", spread.len());
    }

    #[test]
    fn a_channel_names_its_user() {
        let channel = tagged("herald:", "events", "a}b");
        assert_eq!(user_of("herald:", "events", &channel), Some("a}b"));
        assert_eq!(user_of("herald:", "events", "herald:other:{u:a}"), None);
        assert_eq!(user_of("other:", "events", &channel), None);
    }
}
