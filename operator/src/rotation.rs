//! Signing-key rotation as one pure function over the key set, so that every rule is testable over
//! simulated time, whoever runs it (the operator's reconcile, or a command).
//!
//! The rules, and why:
//! - A new key is added *pending*: its `notBefore` is `now + propagation`, so every gateway has read
//!   it (kubelet refreshes a mounted Secret within about a minute) before any gateway signs with it.
//! - Never two pending keys: a second rotation before the first key is active would only add churn.
//! - A key is retired only once its successor has been active longer than a token's lifetime plus
//!   the allowed clock skew plus a grace: by then no token it signed is still valid anywhere.
//! - The set is never empty and never holds more than [`MAX_KEYS`]: a rotation waits for room rather
//!   than drop a key some token may still need.
//! - Running it again at the same instant changes nothing.
//! - Revoking a key (a leak) removes it at once; if it was the one signing, a replacement is
//!   active at once too: tokens it signed must fail now, which is the point.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Most keys a set holds: the retiring, the active and the pending one, and room for one more
/// after a revocation.
pub const MAX_KEYS: usize = 4;

/// A signing key: its id, its secret (base64) and when it starts signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub kid: String,
    pub secret: String,
    pub not_before: Timestamp,
}

/// When keys are rotated and how long they overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a key signs before it is replaced.
    pub interval: Duration,
    /// How long a new key waits before it signs: longer than gateways take to read the key set.
    pub propagation: Duration,
    /// A connection token's lifetime.
    pub token_ttl: Duration,
    /// The clock skew verification allows.
    pub skew: Duration,
    /// Extra time a replaced key keeps verifying.
    pub grace: Duration,
}

/// What a run did, for events and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A key was added, to sign from its `notBefore`.
    Added { kid: String, not_before: Timestamp },
    /// A key no token needs any more was removed.
    Retired { kid: String },
    /// A key was removed at once on request.
    Revoked { kid: String },
}

/// The state of a key at an instant, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Will sign from its `notBefore`; verifies already.
    Pending,
    /// Replaced; verifies tokens it signed until retired.
    Retiring,
}

fn after(at: Timestamp, duration: Duration) -> Timestamp {
    let duration = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

/// The key that signs at `now`: the newest whose `notBefore` has passed (the gateway's rule).
pub fn active(keys: &[Key], now: Timestamp) -> Option<&Key> {
    // On equal `notBefore` the last listed wins, as in the gateway.
    keys.iter()
        .filter(|key| key.not_before <= now)
        .max_by_key(|key| key.not_before)
}

/// Each key with its state at `now`, newest first.
pub fn states(keys: &[Key], now: Timestamp) -> Vec<(&Key, KeyState)> {
    let active_kid = active(keys, now).map(|key| key.kid.as_str());
    let mut states: Vec<_> = keys
        .iter()
        .map(|key| {
            let state = if key.not_before > now {
                KeyState::Pending
            } else if Some(key.kid.as_str()) == active_kid {
                KeyState::Active
            } else {
                KeyState::Retiring
            };
            (key, state)
        })
        .collect();
    states.sort_by_key(|(key, _)| std::cmp::Reverse(key.not_before));
    states
}

/// When the next key should be added: `interval` after the active key began signing (now, for an
/// empty set; never while a key is pending).
pub fn next_rotation(keys: &[Key], now: Timestamp, policy: &Policy) -> Option<Timestamp> {
    if keys.iter().any(|key| key.not_before > now) {
        return keys
            .iter()
            .filter(|key| key.not_before > now)
            .map(|key| after(key.not_before, policy.interval))
            .min();
    }
    Some(active(keys, now).map_or(now, |key| after(key.not_before, policy.interval)))
}

/// The next instant after `now` at which a run would change the set or its states: a pending key
/// starts signing, an old key may be retired, or the next rotation is due. The operator looks again
/// then (and at least every few minutes anyway).
pub fn next_change(keys: &[Key], now: Timestamp, policy: &Policy) -> Option<Timestamp> {
    let pending = keys.iter().map(|key| key.not_before).filter(|at| *at > now);
    let retirement = active(keys, now).and_then(|signing| {
        let older = keys.iter().any(|key| key.not_before < signing.not_before);
        let at = after(signing.not_before, policy.token_ttl + policy.skew + policy.grace);
        (older && at > now).then_some(at)
    });
    let rotation = next_rotation(keys, now, policy).filter(|at| *at > now);
    pending.chain(retirement).chain(rotation).min()
}

/// The key set after a rotation run at `now`. `new_key` makes a key (id and secret) when one is
/// needed; `force` adds one even before the interval has passed (the "rotate now" annotation).
/// Keys are retired first; a key is added only while the set has room: a key still inside its
/// overlap is never dropped to make room (rotations forced faster than the overlap wait).
pub fn rotate(
    keys: &[Key],
    now: Timestamp,
    policy: &Policy,
    force: bool,
    new_key: &mut dyn FnMut() -> (String, String),
) -> (Vec<Key>, Vec<Step>) {
    let mut keys = keys.to_vec();
    let mut steps = Vec::new();
    retire(&mut keys, now, policy, &mut steps);
    let room = keys.len() < MAX_KEYS;
    let pending = keys.iter().any(|key| key.not_before > now);
    match active(&keys, now).map(|key| key.not_before) {
        // Nothing signs (a new gateway, or every key is still pending): a key that signs at once.
        None if !pending => {
            add(&mut keys, &mut steps, new_key(), now);
        }
        Some(since) if !pending && room && (force || after(since, policy.interval) <= now) => {
            add(&mut keys, &mut steps, new_key(), after(now, policy.propagation));
        }
        _ => {}
    }
    (keys, steps)
}

/// Adds a key (id and secret from `made`) that signs from `not_before`.
fn add(keys: &mut Vec<Key>, steps: &mut Vec<Step>, made: (String, String), not_before: Timestamp) {
    let (kid, secret) = made;
    steps.push(Step::Added {
        kid: kid.clone(),
        not_before,
    });
    keys.push(Key {
        kid,
        secret,
        not_before,
    });
}

/// Removes the keys no valid token can need: every key older than the active one, once the active
/// one has signed for longer than a token lives (plus skew and grace).
fn retire(keys: &mut Vec<Key>, now: Timestamp, policy: &Policy, steps: &mut Vec<Step>) {
    let Some(active) = active(keys, now).cloned() else {
        return;
    };
    let overlap = policy.token_ttl + policy.skew + policy.grace;
    let retire_older = after(active.not_before, overlap) <= now;
    let mut kept = Vec::with_capacity(keys.len());
    for key in keys.drain(..) {
        if retire_older && key.not_before < active.not_before {
            steps.push(Step::Retired { kid: key.kid });
        } else {
            kept.push(key);
        }
    }
    kept.sort_by_key(|key| key.not_before);
    *keys = kept;
}

/// The key set without `kid`, revoked now. If it was the signing key, another signs at once: the
/// newest pending key if there is one, else a new key.
pub fn revoke(
    keys: &[Key],
    kid: &str,
    now: Timestamp,
    new_key: &mut dyn FnMut() -> (String, String),
) -> (Vec<Key>, Vec<Step>) {
    if !keys.iter().any(|key| key.kid == kid) {
        return (keys.to_vec(), Vec::new());
    }
    let was_active = active(keys, now).is_some_and(|key| key.kid == kid);
    let mut keys: Vec<Key> = keys.iter().filter(|key| key.kid != kid).cloned().collect();
    let mut steps = vec![Step::Revoked { kid: kid.to_owned() }];
    if was_active || active(&keys, now).is_none() {
        let promoted = keys
            .iter_mut()
            .filter(|key| key.not_before > now)
            .max_by(|a, b| a.not_before.cmp(&b.not_before));
        match promoted {
            Some(key) => key.not_before = now,
            None => {
                add(&mut keys, &mut steps, new_key(), now);
            }
        }
    }
    (keys, steps)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            interval: 24 * 60 * MINUTE,
            propagation: 2 * MINUTE,
            token_ttl: MINUTE,
            skew: Duration::from_secs(30),
            grace: 5 * MINUTE,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn keys_factory() -> impl FnMut() -> (String, String) {
        let mut n = 0;
        move || {
            n += 1;
            (format!("k{n}"), format!("secret-{n}"))
        }
    }

    #[test]
    fn an_empty_set_gets_a_key_that_signs_at_once_and_a_second_run_changes_nothing() {
        let mut new_key = keys_factory();
        let (keys, steps) = rotate(&[], at(0), &policy(), false, &mut new_key);
        assert_eq!(
            steps,
            [Step::Added {
                kid: "k1".into(),
                not_before: at(0)
            }]
        );
        assert_eq!(active(&keys, at(0)).map(|k| k.kid.as_str()), Some("k1"));
        let (again, steps) = rotate(&keys, at(0), &policy(), false, &mut new_key);
        assert_eq!((again, steps), (keys, vec![]));
    }

    #[test]
    fn a_rotation_adds_one_pending_key_then_retires_the_old_one_after_the_overlap() {
        let mut new_key = keys_factory();
        let p = policy();
        let (keys, _) = rotate(&[], at(0), &p, false, &mut new_key);
        let day = p.interval.as_secs() as i64;
        let (keys, steps) = rotate(&keys, at(day), &p, false, &mut new_key);
        let pending_from = at(day + 120);
        assert_eq!(
            steps,
            [Step::Added {
                kid: "k2".into(),
                not_before: pending_from
            }]
        );
        let states: Vec<_> = states(&keys, at(day))
            .into_iter()
            .map(|(k, s)| (k.kid.clone(), s))
            .collect();
        assert_eq!(
            states,
            [("k2".into(), KeyState::Pending), ("k1".into(), KeyState::Active)]
        );
        // Forced or not, never a second pending key.
        let (same, steps) = rotate(&keys, at(day + 1), &p, true, &mut new_key);
        assert_eq!((same.len(), steps), (2, vec![]));
        // k2 signs from day + 120 s; k1 goes once k2 has signed for ttl + skew + grace (390 s).
        let (kept, steps) = rotate(&keys, at(day + 120 + 389), &p, false, &mut new_key);
        assert_eq!((kept.len(), steps), (2, vec![]));
        let (keys, steps) = rotate(&keys, at(day + 120 + 390), &p, false, &mut new_key);
        assert_eq!(steps, [Step::Retired { kid: "k1".into() }]);
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2"]);
        assert_eq!(
            next_rotation(&keys, at(day + 510), &p),
            Some(after(pending_from, p.interval))
        );
    }

    #[test]
    fn the_next_change_is_the_earliest_of_activation_retirement_and_rotation() {
        let mut new_key = keys_factory();
        let p = policy();
        let (keys, _) = rotate(&[], at(0), &p, false, &mut new_key);
        let day = p.interval.as_secs() as i64;
        assert_eq!(
            next_change(&keys, at(5), &p),
            Some(at(day)),
            "only the rotation is ahead"
        );
        let (keys, _) = rotate(&keys, at(day), &p, false, &mut new_key);
        assert_eq!(
            next_change(&keys, at(day), &p),
            Some(at(day + 120)),
            "k2 starts signing"
        );
        assert_eq!(
            next_change(&keys, at(day + 120), &p),
            Some(at(day + 120 + 390)),
            "k1 may be retired"
        );
        let (keys, _) = rotate(&keys, at(day + 510), &p, false, &mut new_key);
        assert_eq!(next_change(&keys, at(day + 510), &p), Some(at(2 * day + 120)));
    }

    #[test]
    fn revoking_the_signing_key_makes_another_sign_at_once() {
        let mut new_key = keys_factory();
        let p = policy();
        let (keys, _) = rotate(&[], at(0), &p, false, &mut new_key);
        let (keys, _) = rotate(&keys, at(10), &p, true, &mut new_key);
        // The pending k2 is promoted: it signs now.
        let (after_revoke, steps) = revoke(&keys, "k1", at(20), &mut new_key);
        assert_eq!(steps, [Step::Revoked { kid: "k1".into() }]);
        assert_eq!(active(&after_revoke, at(20)).map(|k| k.kid.as_str()), Some("k2"));
        // Revoking the only key adds a new one that signs at once; an unknown id changes nothing.
        let (only, steps) = revoke(&after_revoke, "k2", at(30), &mut new_key);
        assert_eq!(
            steps,
            [
                Step::Revoked { kid: "k2".into() },
                Step::Added {
                    kid: "k3".into(),
                    not_before: at(30)
                }
            ]
        );
        assert_eq!(only.len(), 1);
        assert_eq!(revoke(&only, "nope", at(40), &mut new_key).1, vec![]);
    }

    /// One generated schedule: rotation runs at increasing instants (some forced), revocations
    /// never, and a gateway that sees the key set up to `propagation` late.
    fn schedule() -> impl Strategy<Value = Vec<(u32, bool)>> {
        proptest::collection::vec((1u32..7_200, any::<bool>()), 1..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Across any sequence of runs: the set is never empty nor over MAX_KEYS, re-running at the
        /// same instant changes nothing, and every token a gateway signs stays verifiable by every
        /// gateway (each seeing the set up to `propagation` late) for its whole lifetime plus skew.
        #[test]
        fn every_token_stays_valid_for_its_whole_lifetime(
            runs in schedule(),
            propagation in 1u64..=300,
            lag_percent in 0u64..=100,
        ) {
            // Any propagation delay, shorter or longer than the overlap, with gateways at most that late.
            let p = Policy { interval: 30 * MINUTE, propagation: Duration::from_secs(propagation), ..policy() };
            let lag = propagation * lag_percent / 100;
            let mut new_key = keys_factory();
            let mut now = at(0);
            // Every published set, with when it was published.
            let (mut keys, _) = rotate(&[], now, &p, false, &mut new_key);
            let mut history = vec![(now, keys.clone())];
            for (gap, force) in runs {
                now = after(now, Duration::from_secs(u64::from(gap)));
                let (next, _) = rotate(&keys, now, &p, force, &mut new_key);
                prop_assert!(!next.is_empty() && next.len() <= MAX_KEYS);
                prop_assert_eq!(rotate(&next, now, &p, false, &mut new_key).1, vec![]);
                keys = next;
                history.push((now, keys.clone()));
            }
            // What a gateway `lag` seconds behind holds at instant t: the last set published by t - lag.
            let seen = |t: Timestamp| -> &Vec<Key> {
                let cutoff = after_signed(t, -(lag as i64));
                &history.iter().rev().find(|(published, _)| *published <= cutoff).unwrap_or(&history[0]).1
            };
            let end = now;
            let mut t = at(0);
            while t < end {
                // A fresh gateway (no lag) signs; a lagging one verifies until expiry + skew.
                if let Some(signer) = active(&history.iter().rev().find(|(published, _)| *published <= t).expect("set").1, t) {
                    let expiry = after(t, p.token_ttl + p.skew);
                    let mut v = t;
                    while v <= expiry && v <= end {
                        prop_assert!(
                            seen(v).iter().any(|k| k.kid == signer.kid),
                            "a token signed by {} at {} fails at {}", signer.kid, t, v
                        );
                        v = after(v, Duration::from_secs(15));
                    }
                }
                t = after(t, Duration::from_secs(37));
            }
        }
    }

    fn after_signed(at: Timestamp, seconds: i64) -> Timestamp {
        at.checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MIN)
    }
}
