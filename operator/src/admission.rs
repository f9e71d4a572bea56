//! Whether a NotificationGateway may be rendered at all. The operator runs the gateway's image with
//! the Secrets its spec names in that container's environment, so whoever may create a gateway would
//! otherwise choose both what runs and which Secret of the namespace it reads: a confused deputy
//! (issue 10). Two rules close it: the image must be on the operator's allow-list, and every Secret
//! the gateway would read must have opted in (a label) or be the operator's own Secret of this
//! gateway. A third (`ownership`) keeps the operator from writing over objects that are not the
//! gateway's. Pure: the controller reads the Secrets' metadata (never their data) and asks here.

pub mod image;
pub mod ownership;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use self::image::{ImagePattern, ImageReference};
use self::ownership::Control;
use crate::crd::{DEFAULT_GATEWAY_IMAGE, DEFAULT_GATEWAY_REPOSITORY, NotificationGateway, NotificationGatewaySpec};
use crate::render::Names;
use crate::status::Refusal;

/// The label by which a Secret opts in to being read by the gateways of its namespace.
pub const SECRET_OPT_IN_LABEL: &str = "herald.dev/gateway-secret";
pub const SECRET_OPT_IN_VALUE: &str = "true";

pub const IMAGE_NOT_ALLOWED: &str = "ImageNotAllowed";
pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
pub use self::ownership::NAME_CONFLICT;

/// The images gateways may run: the operator's default (`--default-gateway-image`), and those on its
/// allow-list (`--allowed-images`).
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    allowed: Vec<ImagePattern>,
    default_image: String,
}

impl ImagePolicy {
    pub fn new(allowed: Vec<ImagePattern>, default_image: String) -> Self {
        Self { allowed, default_image }
    }

    /// The image a gateway runs: its own, or the operator's default.
    pub fn image_of<'a>(&'a self, spec: &'a NotificationGatewaySpec) -> &'a str {
        spec.image.as_deref().unwrap_or(&self.default_image)
    }

    /// The default image is always allowed: whoever installed the operator chose it (a mirror of
    /// the published image, say), so the allow-list need not repeat it.
    pub fn judge(&self, image: &str) -> Result<(), Refusal> {
        if image == self.default_image {
            return Ok(());
        }
        let shown: String = image.chars().take(256).collect();
        let reference: ImageReference = image.parse().map_err(|err| Refusal {
            reason: IMAGE_NOT_ALLOWED,
            message: format!("{err}"),
        })?;
        if self.allowed.iter().any(|pattern| pattern.allows(&reference)) {
            return Ok(());
        }
        let allowed: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
        Err(Refusal {
            reason: IMAGE_NOT_ALLOWED,
            message: format!(
                "image `{shown}` is not allowed; the operator allows [{}] (chart value gateway.allowedImages)",
                allowed.join(", ")
            ),
        })
    }
}

/// The published gateway image of this version, and any tag or digest of its repository.
impl Default for ImagePolicy {
    fn default() -> Self {
        let pattern = DEFAULT_GATEWAY_REPOSITORY
            .parse()
            .expect("the default repository is a valid pattern");
        Self::new(vec![pattern], DEFAULT_GATEWAY_IMAGE.to_owned())
    }
}

/// A Secret the gateway would read, and where its name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    /// The spec field naming it, or the operator's own Secret of the gateway.
    pub source: &'static str,
    /// A referenced Secret must exist; the signing-key Secret is created when missing.
    pub must_exist: bool,
}

/// Every Secret a gateway's pods would read: those its spec names, and its signing keys (whose name
/// follows from the gateway's name, so a gateway named after an existing `<x>-signing-keys` Secret
/// would otherwise mount someone else's Secret).
pub fn secret_uses(gateway: &NotificationGateway) -> Vec<SecretUse> {
    let spec: &NotificationGatewaySpec = &gateway.spec;
    let named = [
        (
            "spec.postgres.urlSecretRef",
            spec.postgres.as_ref().map(|p| &p.url_secret_ref),
        ),
        (
            "spec.redis.urlSecretRef",
            spec.redis.as_ref().map(|r| &r.url_secret_ref),
        ),
        (
            "spec.postgres.migrationUrlSecretRef",
            spec.postgres.as_ref().and_then(|p| p.migration_url_secret_ref.as_ref()),
        ),
        (
            "spec.postgres.caSecretRef",
            spec.postgres.as_ref().and_then(|p| p.ca_secret_ref.as_ref()),
        ),
        (
            "spec.redis.caSecretRef",
            spec.redis.as_ref().and_then(|r| r.ca_secret_ref.as_ref()),
        ),
        ("spec.auth.hs256SecretRef", spec.auth.hs256_secret_ref.as_ref()),
        ("spec.publisherKeysSecretRef", spec.publisher_keys_secret_ref.as_ref()),
    ];
    let mut uses: Vec<SecretUse> = named
        .into_iter()
        .filter_map(|(source, reference)| {
            reference.map(|r| SecretUse {
                name: r.name.clone(),
                source,
                must_exist: true,
            })
        })
        .collect();
    uses.push(SecretUse {
        name: Names::of(gateway).signing_keys,
        source: "the gateway's signing keys",
        must_exist: false,
    });
    uses
}

/// A Secret may be read by this gateway when it carries the opt-in label, or when this gateway
/// controls it (the operator created it for this gateway). `metadata` is `None` for a missing Secret.
pub fn judge_secret(
    gateway: &NotificationGateway,
    secret: &SecretUse,
    metadata: Option<&ObjectMeta>,
) -> Result<(), Refusal> {
    let namespace = gateway.namespace().unwrap_or_default();
    let name = &secret.name;
    let Some(metadata) = metadata else {
        return match secret.must_exist {
            false => Ok(()),
            true => Err(Refusal {
                reason: SECRET_NOT_FOUND,
                message: format!(
                    "Secret `{name}` ({}) does not exist in namespace `{namespace}`; create it with the label {SECRET_OPT_IN_LABEL}={SECRET_OPT_IN_VALUE}",
                    secret.source
                ),
            }),
        };
    };
    let opted_in = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SECRET_OPT_IN_LABEL))
        .is_some_and(|value| value == SECRET_OPT_IN_VALUE);
    let controlled_by_gateway = ownership::control(gateway, metadata) == Control::ThisGateway;
    if opted_in || controlled_by_gateway {
        return Ok(());
    }
    Err(Refusal {
        reason: SECRET_NOT_ALLOWED,
        message: format!(
            "Secret `{name}` ({}) is not opted in for Herald gateways; to allow it: kubectl -n {namespace} label secret {name} {SECRET_OPT_IN_LABEL}={SECRET_OPT_IN_VALUE}",
            secret.source
        ),
    })
}

/// Every refusal of one gateway in one condition: the first one's reason (the image before the
/// Secrets, in spec order) and every message, so one edit can fix them all.
pub fn combine(refusals: Vec<Refusal>) -> Option<Refusal> {
    let reason = refusals.first()?.reason;
    let messages: Vec<String> = refusals.into_iter().map(|r| r.message).collect();
    Some(Refusal {
        reason,
        message: messages.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use super::*;

    const UID: &str = "1f5a2b58-0000-4000-8000-000000000001";

    fn gateway(spec: serde_json::Value) -> NotificationGateway {
        let spec: NotificationGatewaySpec = serde_json::from_value(spec).expect("spec");
        let mut gateway = NotificationGateway::new("alerts", spec);
        gateway.metadata.namespace = Some("apps".into());
        gateway.metadata.uid = Some(UID.into());
        gateway
    }

    fn policy(patterns: &[&str]) -> ImagePolicy {
        ImagePolicy::new(
            patterns.iter().map(|p| p.parse().expect("pattern")).collect(),
            "mirror.local/herald/gateway:1.0.0".into(),
        )
    }

    fn labelled(value: &str) -> ObjectMeta {
        ObjectMeta {
            labels: Some(BTreeMap::from([(SECRET_OPT_IN_LABEL.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "herald.dev/v1alpha1".into(),
                kind: "NotificationGateway".into(),
                name: "alerts".into(),
                uid: uid.into(),
                controller: Some(controller),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    fn referenced(name: &str) -> SecretUse {
        SecretUse {
            name: name.into(),
            source: "spec.auth.hs256SecretRef",
            must_exist: true,
        }
    }

    #[test]
    fn the_default_policy_allows_the_operators_own_gateway_image_only() {
        let policy = ImagePolicy::default();
        let gw = gateway(json!({"auth": {"jwksUrl": "https://i/j"}}));
        let default_image = policy.image_of(&gw.spec);
        assert_eq!(
            default_image,
            format!("ghcr.io/herald-dev/herald-gateway:{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(policy.judge(default_image).is_ok(), "{default_image}");
        assert!(
            policy.judge("ghcr.io/herald-dev/herald-gateway:0.0.9").is_ok(),
            "any tag of the repository"
        );
        let refusal = ImagePolicy::default()
            .judge("evil.example/miner:1")
            .expect_err("refused");
        assert_eq!(refusal.reason, IMAGE_NOT_ALLOWED);
        assert!(
            refusal.message.contains("`evil.example/miner:1`")
                && refusal.message.contains("[ghcr.io/herald-dev/herald-gateway]"),
            "names the image and the allowed list: {}",
            refusal.message
        );
    }

    #[test]
    fn an_image_is_judged_against_every_allowed_pattern() {
        let policy = policy(&["registry.local/herald/*", "ghcr.io/herald-dev/herald-gateway:0.1.0"]);
        assert!(policy.judge("registry.local/herald/gateway:dev").is_ok());
        assert!(policy.judge("ghcr.io/herald-dev/herald-gateway:0.1.0").is_ok());
        assert!(policy.judge("ghcr.io/herald-dev/herald-gateway:0.2.0").is_err());
        let malformed = policy.judge("registry.local/herald/Gateway").expect_err("malformed");
        assert_eq!(malformed.reason, IMAGE_NOT_ALLOWED);
        assert!(
            super::tests::policy(&[])
                .judge("registry.local/herald/gateway")
                .is_err()
        );
    }

    #[test]
    fn a_gateway_without_an_image_runs_the_operators_default_which_is_always_allowed() {
        let policy = policy(&["registry.local/herald/*"]);
        let unset = gateway(json!({"auth": {"jwksUrl": "https://i/j"}}));
        assert_eq!(policy.image_of(&unset.spec), "mirror.local/herald/gateway:1.0.0");
        assert!(
            policy.judge(policy.image_of(&unset.spec)).is_ok(),
            "not on the list, yet the default"
        );
        let named = gateway(json!({"image": "registry.local/herald/gateway:2", "auth": {"jwksUrl": "https://i/j"}}));
        assert_eq!(policy.image_of(&named.spec), "registry.local/herald/gateway:2");
        assert!(
            policy.judge("mirror.local/herald/gateway:1.0.1").is_err(),
            "only the default itself, not its repository's other tags"
        );
    }

    #[test]
    fn every_secret_the_pods_would_read_is_judged() {
        let gw = gateway(json!({
            "replicas": 2,
            "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
            "redis": {"urlSecretRef": {"name": "cache", "key": "url"}},
            "auth": {"hs256SecretRef": {"name": "jwt", "key": "secret"}},
            "publisherKeysSecretRef": {"name": "publishers", "key": "keys"},
        }));
        let uses: Vec<(String, bool)> = secret_uses(&gw).into_iter().map(|u| (u.name, u.must_exist)).collect();
        let expected = [
            ("db", true),
            ("cache", true),
            ("jwt", true),
            ("publishers", true),
            ("alerts-signing-keys", false),
        ]
        .map(|(name, must)| (name.to_owned(), must));
        assert_eq!(uses, expected);
    }

    #[test]
    fn a_secret_is_used_only_when_labelled_or_controlled_by_this_gateway() {
        let gw = gateway(json!({"auth": {"hs256SecretRef": {"name": "jwt", "key": "secret"}}}));
        let jwt = referenced("jwt");
        assert!(judge_secret(&gw, &jwt, Some(&labelled("true"))).is_ok());
        assert!(judge_secret(&gw, &jwt, Some(&owned_by(UID, true))).is_ok());

        for metadata in [
            ObjectMeta::default(),
            labelled("false"),
            labelled("alerts"),
            owned_by("another-gateway-uid", true),
            owned_by(UID, false),
        ] {
            let refusal = judge_secret(&gw, &jwt, Some(&metadata)).expect_err("refused");
            assert_eq!(refusal.reason, SECRET_NOT_ALLOWED, "{metadata:?}");
            assert!(
                refusal
                    .message
                    .contains("kubectl -n apps label secret jwt herald.dev/gateway-secret=true"),
                "says how to opt in: {}",
                refusal.message
            );
            assert!(
                refusal.message.contains("spec.auth.hs256SecretRef"),
                "{}",
                refusal.message
            );
        }
        let missing = judge_secret(&gw, &jwt, None).expect_err("missing");
        assert_eq!(missing.reason, SECRET_NOT_FOUND);
    }

    #[test]
    fn a_missing_signing_key_secret_is_fine_but_someone_elses_is_refused() {
        let gw = gateway(json!({"auth": {"jwksUrl": "https://i/j"}}));
        let keys = secret_uses(&gw).pop().expect("signing keys");
        assert!(judge_secret(&gw, &keys, None).is_ok(), "the operator creates it");
        assert!(judge_secret(&gw, &keys, Some(&owned_by(UID, true))).is_ok());
        let refusal = judge_secret(&gw, &keys, Some(&ObjectMeta::default())).expect_err("not ours");
        assert_eq!(refusal.reason, SECRET_NOT_ALLOWED);
    }

    #[test]
    fn refusals_are_reported_together_under_the_first_reason() {
        assert_eq!(combine(Vec::new()), None);
        let combined = combine(vec![
            Refusal {
                reason: IMAGE_NOT_ALLOWED,
                message: "image".into(),
            },
            Refusal {
                reason: SECRET_NOT_ALLOWED,
                message: "secret".into(),
            },
        ])
        .expect("refused");
        assert_eq!(combined.reason, IMAGE_NOT_ALLOWED);
        assert_eq!(combined.message, "image; secret");
    }
}
