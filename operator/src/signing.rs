//! A gateway's signing-key Secret (`<gw>-signing-keys`, mounted into its pods as `keys.json`), kept
//! by the operator itself rather than by a CronJob (docs/architecture.md, "The operator rotates keys
//! itself"): created with one key, rotated on `spec.rotation`, rotated or revoked at once on request
//! (annotations).
//! The decisions are `rotation`'s pure functions; this module reads the Secret, applies them and
//! writes the result compare-and-swap on the Secret's `resourceVersion`, so two operators (an old
//! leader still finishing, or a restore) never lose each other's keys: the loser re-reads and
//! decides again.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::{KeyStatus, NotificationGateway};
use crate::keys;
use crate::render::{self, Names};
use crate::rotation::{self, Key, KeyState, Policy, Step};

/// Any new value rotates the gateway's keys at once (`kubectl annotate --overwrite ... =$(date +%s)`).
pub const ROTATE_ANNOTATION: &str = "herald.dev/rotate-keys";
/// Comma-separated key ids removed at once (a leaked key); ids not in the set are ignored.
pub const REVOKE_ANNOTATION: &str = "herald.dev/revoke-keys";
/// Most key ids one revoke annotation may name: more than a set ever holds.
pub const MAX_REVOKED: usize = 2 * rotation::MAX_KEYS;
/// Compare-and-swap attempts before a reconcile gives up (and is retried with backoff).
const ATTEMPTS: usize = 4;

/// Why the keys could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Secret exists but its `keys.json` is not a key set the gateway reads: it is left alone
    /// (it may be a restore in progress) and the gateway says so.
    #[error("Secret `{secret}`: {problem}")]
    Unreadable { secret: String, problem: String },
    /// Another writer changed the Secret between every read and write.
    #[error("Secret `{0}` kept changing while it was rotated")]
    Contended(String),
    #[error("spec.rotation: {0}")]
    Policy(String),
}

/// The rotation policy of a gateway: its interval and delays, its tokens' lifetime, the clock skew
/// the gateway allows.
pub fn policy(gateway: &NotificationGateway) -> Result<Policy, SigningError> {
    let spec = &gateway.spec;
    let interval = spec
        .rotation
        .interval()
        .ok_or_else(|| SigningError::Policy(format!("interval `{}` is not a duration", spec.rotation.interval)))?;
    Ok(Policy {
        interval,
        propagation: Duration::from_secs(u64::from(spec.rotation.propagation_seconds)),
        token_ttl: Duration::from_secs(u64::from(spec.token_ttl_seconds)),
        skew: Duration::from_secs(herald_contract::defaults::JWT_LEEWAY_SECONDS),
        grace: Duration::from_secs(u64::from(spec.rotation.grace_period_seconds)),
    })
}

/// What the gateway's annotations ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// A rotation request not acted on yet (its annotation value).
    pub rotate: Option<String>,
    /// Key ids to revoke.
    pub revoke: Vec<String>,
}

impl Requests {
    /// Reads the annotations: a rotate value equal to the one status says was handled is no request
    /// (so the annotation may stay, as GitOps keeps it); revoke ids are trimmed, blank ones skipped,
    /// at most [`MAX_REVOKED`] taken.
    pub fn of(gateway: &NotificationGateway) -> Self {
        let annotations = gateway.annotations();
        let handled = gateway
            .status
            .as_ref()
            .and_then(|s| s.rotation_request_handled.as_deref());
        let rotate = annotations
            .get(ROTATE_ANNOTATION)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty() && Some(*value) != handled)
            .map(str::to_owned);
        let revoke = annotations
            .get(REVOKE_ANNOTATION)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|kid| !kid.is_empty())
                    .take(MAX_REVOKED)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Self { rotate, revoke }
    }
}

/// What a run may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Revocations, then the scheduled or requested rotation.
    Everything,
    /// Revocations only: for a gateway that is paused or refused, whose children are otherwise left
    /// as they are, a leaked key must still go at once.
    RevocationsOnly,
}

/// The key set after one run at `now`: revocations first (a leaked key goes before anything else),
/// then the scheduled or requested rotation unless `scope` is revocations only.
pub fn plan(
    keys: &[Key],
    now: Timestamp,
    policy: &Policy,
    requests: &Requests,
    scope: Scope,
    new_key: &mut dyn FnMut() -> (String, String),
) -> (Vec<Key>, Vec<Step>) {
    let mut keys = keys.to_vec();
    let mut steps = Vec::new();
    for kid in &requests.revoke {
        let (next, done) = rotation::revoke(&keys, kid, now, new_key);
        keys = next;
        steps.extend(done);
    }
    if scope == Scope::RevocationsOnly {
        return (keys, steps);
    }
    let (keys, done) = rotation::rotate(&keys, now, policy, requests.rotate.is_some(), new_key);
    steps.extend(done);
    (keys, steps)
}

/// What a run of the keys left, for status, events and the next look.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The key set now in the Secret.
    pub keys: Vec<Key>,
    /// What this run changed.
    pub steps: Vec<Step>,
    /// The rotation request acted on, if one was.
    pub request_handled: Option<String>,
}

impl Outcome {
    /// The keys for status (ids, states, `notBefore`; never secrets), newest first.
    pub fn key_statuses(&self, now: Timestamp) -> Vec<KeyStatus> {
        rotation::states(&self.keys, now)
            .into_iter()
            .map(|(key, state)| KeyStatus {
                kid: key.kid.clone(),
                state: match state {
                    KeyState::Active => "Active",
                    KeyState::Pending => "Pending",
                    KeyState::Retiring => "Retiring",
                }
                .to_owned(),
                not_before: Time(key.not_before),
            })
            .collect()
    }

    /// Whether this run added a key.
    pub fn rotated(&self) -> bool {
        self.steps.iter().any(|step| matches!(step, Step::Added { .. }))
    }
}

fn fresh_key() -> (String, String) {
    (keys::new_kid(), keys::random_secret_base64())
}

/// Runs the gateway's keys at `now`: creates the Secret with one key if it does not exist, else
/// applies `plan` and writes only when something changed, compare-and-swap.
pub async fn keep(
    client: &Client,
    gateway: &NotificationGateway,
    now: Timestamp,
    scope: Scope,
) -> Result<Outcome, SigningError> {
    let namespace = gateway.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = Names::of(gateway).signing_keys;
    let policy = policy(gateway)?;
    let requests = Requests::of(gateway);
    for _ in 0..ATTEMPTS {
        let existing = api.get_opt(&name).await?;
        let current = match &existing {
            Some(secret) => read(secret).map_err(|problem| SigningError::Unreadable {
                secret: name.clone(),
                problem,
            })?,
            None => Vec::new(),
        };
        if scope == Scope::RevocationsOnly && existing.is_none() {
            // Nothing to revoke, and a paused or refused gateway gets no new Secret.
            return Ok(Outcome::default());
        }
        let (keys, steps) = plan(&current, now, &policy, &requests, scope, &mut fresh_key);
        // A request is acted on once a key is added, or while one is pending (the rotation under
        // way is the one asked for); a set without room keeps the request for a later run.
        let rotating = keys.iter().any(|key| key.not_before > now);
        let request_handled = requests
            .rotate
            .clone()
            .filter(|_| rotating && scope == Scope::Everything);
        let outcome = Outcome {
            keys,
            steps,
            request_handled,
        };
        if outcome.steps.is_empty() && existing.is_some() {
            return Ok(outcome);
        }
        let json = keys::to_json(&outcome.keys);
        let written = match existing {
            None => {
                let secret = render::signing_keys(gateway, &json);
                let params = PostParams {
                    field_manager: Some(crate::controller::MANAGER.into()),
                    ..PostParams::default()
                };
                api.create(&params, &secret).await.map(drop)
            }
            Some(secret) => {
                // A merge patch carrying `resourceVersion` is applied only if the Secret still has
                // that version: compare-and-swap without `update` on Secrets.
                let patch = json!({
                    "metadata": {"resourceVersion": secret.resource_version()},
                    "data": {"keys.json": base64::engine::general_purpose::STANDARD.encode(&json)},
                });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
        };
        match written {
            Ok(()) => return Ok(outcome),
            // Someone else wrote (or created) it first: decide again from what they wrote.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(SigningError::Contended(name))
}

/// The key set a signing-key Secret holds.
pub fn read(secret: &Secret) -> Result<Vec<Key>, String> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|data| data.get("keys.json"))
        .ok_or_else(|| "no keys.json".to_owned())?;
    let keys = keys::parse(&raw.0)?;
    if keys.is_empty() {
        return Err("keys.json holds no key".to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn gateway(annotations: &[(&str, &str)], handled: Option<&str>) -> NotificationGateway {
        let mut gateway: NotificationGateway = serde_json::from_value(json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
            "metadata": {"name": "alerts", "namespace": "apps"},
            "spec": {"auth": {"jwksUrl": "https://issuer/jwks"}},
        }))
        .expect("gateway");
        gateway.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        gateway.status = handled.map(|value| crate::crd::NotificationGatewayStatus {
            rotation_request_handled: Some(value.to_owned()),
            ..Default::default()
        });
        gateway
    }

    #[test]
    fn a_rotate_request_counts_once_and_revoke_ids_are_bounded() {
        assert_eq!(Requests::of(&gateway(&[], None)), Requests::default());
        let asked = Requests::of(&gateway(&[(ROTATE_ANNOTATION, "1764300000")], None));
        assert_eq!(asked.rotate.as_deref(), Some("1764300000"));
        let handled = Requests::of(&gateway(&[(ROTATE_ANNOTATION, "1764300000")], Some("1764300000")));
        assert_eq!(handled.rotate, None, "already acted on");
        assert_eq!(Requests::of(&gateway(&[(ROTATE_ANNOTATION, " ")], None)).rotate, None);
        let many = vec!["k"; 50].join(", ");
        let revoke = Requests::of(&gateway(&[(REVOKE_ANNOTATION, &many)], None)).revoke;
        assert_eq!(revoke.len(), MAX_REVOKED);
        let listed = Requests::of(&gateway(&[(REVOKE_ANNOTATION, "a, ,b,")], None)).revoke;
        assert_eq!(listed, ["a", "b"]);
    }

    #[test]
    fn the_policy_follows_the_spec() {
        let policy = policy(&gateway(&[], None)).expect("policy");
        assert_eq!(policy.interval, Duration::from_secs(720 * 3600));
        assert_eq!(policy.token_ttl, Duration::from_secs(60));
        assert_eq!(policy.skew, Duration::from_secs(30));
        let mut broken = gateway(&[], None);
        broken.spec.rotation.interval = "soon".into();
        assert!(matches!(super::policy(&broken), Err(SigningError::Policy(_))));
    }

    #[test]
    fn revocations_come_before_a_requested_rotation_and_unknown_ids_change_nothing() {
        let policy = policy(&gateway(&[], None)).expect("policy");
        let now: Timestamp = "2026-11-28T10:00:00Z".parse().expect("time");
        let mut n = 0;
        let mut new_key = move || {
            n += 1;
            (format!("k{n}"), format!("s{n}"))
        };
        let (keys, _) = plan(&[], now, &policy, &Requests::default(), Scope::Everything, &mut new_key);
        let requests = Requests {
            rotate: Some("x".into()),
            revoke: vec!["k1".into(), "nope".into()],
        };
        let (keys, steps) = plan(&keys, now, &policy, &requests, Scope::Everything, &mut new_key);
        // k1 revoked: k2 signs at once; then the requested rotation adds a pending k3.
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(rotation::active(&keys, now).map(|k| k.kid.as_str()), Some("k2"));
        let outcome = Outcome {
            keys,
            steps,
            request_handled: None,
        };
        let states: Vec<_> = outcome
            .key_statuses(now)
            .into_iter()
            .map(|k| (k.kid, k.state))
            .collect();
        assert_eq!(
            states,
            [("k3".into(), "Pending".into()), ("k2".into(), "Active".into())]
        );
        assert!(outcome.rotated());
        // Revocations only (a paused or refused gateway): the revoke happens, no rotation.
        let (only, steps) = plan(
            &outcome.keys,
            now,
            &policy,
            &Requests {
                rotate: Some("y".into()),
                revoke: vec!["k2".into()],
            },
            Scope::RevocationsOnly,
            &mut new_key,
        );
        assert!(only.iter().all(|k| k.kid != "k2"));
        assert!(
            steps
                .iter()
                .all(|s| !matches!(s, Step::Added { not_before, .. } if *not_before > now)),
            "{steps:?}"
        );
    }
}
