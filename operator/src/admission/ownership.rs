//! Whether the objects a gateway's reconcile would write are this gateway's to write. The operator
//! names a gateway's children after the gateway and force-applies them, so whoever may create a
//! gateway could otherwise name it after an existing Deployment, ConfigMap or Role of the namespace
//! and have the operator overwrite it with its own rights (issue 10, confused deputy). An object is
//! the gateway's only when the gateway controls it: an ownerReference with `controller: true` and the
//! gateway's uid, which only the operator's own applies (or a deliberate adoption) put there. Pure:
//! the controller reads each child's metadata and asks here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::NotificationGateway;
use crate::status::Refusal;

pub const NAME_CONFLICT: &str = "NameConflict";

/// Who controls an existing object, as far as one gateway is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// This gateway (same uid): the operator created it for this gateway, or it was adopted.
    ThisGateway,
    /// An earlier gateway of the same name, deleted since (names are unique, so a different uid
    /// under this name can only be a gateway that no longer exists): garbage not yet collected.
    EarlierGateway { uid: String },
    /// Anyone else, or no one.
    Other,
}

/// The controller of an object with `metadata`, seen from `gateway`. The owner's kind and API group
/// are compared, not its version: a reference written under an older version of the CRD is still
/// this gateway's.
pub fn control(gateway: &NotificationGateway, metadata: &ObjectMeta) -> Control {
    let group = |api_version: &str| api_version.split_once('/').map_or("", |(group, _)| group).to_owned();
    let gateway_group = group(&NotificationGateway::api_version(&()));
    let Some(owner) = metadata.owner_references.iter().flatten().find(|owner| {
        owner.controller == Some(true)
            && owner.kind == NotificationGateway::kind(&())
            && group(&owner.api_version) == gateway_group
    }) else {
        return Control::Other;
    };
    match gateway.uid() {
        Some(uid) if uid == owner.uid => Control::ThisGateway,
        _ if owner.name == gateway.name_any() => Control::EarlierGateway { uid: owner.uid.clone() },
        _ => Control::Other,
    }
}

/// An object a reconcile would write, as found in the gateway's namespace before writing:
/// `metadata` is `None` when no object of that kind and name exists.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub metadata: Option<&'a ObjectMeta>,
}

/// A gateway may be rendered when every child it would write is missing (the apply creates it) or
/// controlled by this gateway. Otherwise one refusal names every conflicting object and the way out:
/// the operator never takes over an object it did not create, and refuses objects an earlier gateway
/// of the same name left behind rather than adopting them (they are the garbage collector's; adopting
/// would write over objects on the strength of a name alone).
pub fn judge_children(gateway: &NotificationGateway, found: &[Found<'_>]) -> Result<(), Refusal> {
    let namespace = gateway.namespace().unwrap_or_default();
    let mut foreign = Vec::new();
    let mut leftover = Vec::new();
    for child in found {
        let Some(metadata) = child.metadata else { continue };
        let shown = format!("{} `{}`", child.kind, child.name);
        match control(gateway, metadata) {
            Control::ThisGateway => {}
            Control::EarlierGateway { uid } => leftover.push(format!("{shown} (owner uid {uid})")),
            Control::Other => foreign.push(shown),
        }
    }
    let mut messages = Vec::new();
    if !foreign.is_empty() {
        let (exist, are, them) = match foreign.len() {
            1 => ("exists", "is", "it"),
            _ => ("exist", "are", "them"),
        };
        messages.push(format!(
            "{} already {exist} in namespace `{namespace}` and {are} not controlled by this gateway; the operator does not take over objects it did not create: rename the gateway, or delete {them}, or adopt {them} by making this gateway (uid {}) {them_owner} controller ownerReference",
            foreign.join(", "),
            gateway.uid().unwrap_or_default(),
            them_owner = if foreign.len() == 1 { "its" } else { "their" },
        ));
    }
    if !leftover.is_empty() {
        let (belong, them) = match leftover.len() {
            1 => ("belongs", "it"),
            _ => ("belong", "them"),
        };
        messages.push(format!(
            "{} still {belong} to an earlier NotificationGateway `{}` that was deleted; the gateway is rendered once the garbage collector has removed {them} (or delete {them})",
            leftover.join(", "),
            gateway.name_any()
        ));
    }
    match messages.is_empty() {
        true => Ok(()),
        false => Err(Refusal {
            reason: NAME_CONFLICT,
            message: messages.join("; "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use super::*;
    use crate::crd::NotificationGatewaySpec;

    const UID: &str = "1f5a2b58-0000-4000-8000-000000000001";
    const EARLIER: &str = "0e0e0e0e-0000-4000-8000-000000000009";

    fn gateway() -> NotificationGateway {
        let spec: NotificationGatewaySpec =
            serde_json::from_value(json!({"auth": {"jwksUrl": "https://i/j"}})).expect("spec");
        let mut gateway = NotificationGateway::new("alerts", spec);
        gateway.metadata.namespace = Some("apps".into());
        gateway.metadata.uid = Some(UID.into());
        gateway
    }

    fn owned(api_version: &str, kind: &str, name: &str, uid: &str, controller: Option<bool>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: uid.into(),
                controller,
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    fn by_gateway(name: &str, uid: &str) -> ObjectMeta {
        owned("herald.dev/v1alpha1", "NotificationGateway", name, uid, Some(true))
    }

    fn found<'a>(kind: &'a str, name: &'a str, metadata: Option<&'a ObjectMeta>) -> Found<'a> {
        Found { kind, name, metadata }
    }

    #[test]
    fn only_a_controller_reference_with_this_gateways_uid_makes_an_object_its_own() {
        let gw = gateway();
        assert_eq!(control(&gw, &by_gateway("alerts", UID)), Control::ThisGateway);
        assert_eq!(
            control(
                &gw,
                &owned("herald.dev/v1beta1", "NotificationGateway", "alerts", UID, Some(true))
            ),
            Control::ThisGateway,
            "a reference written under another version of the CRD"
        );
        assert_eq!(
            control(&gw, &by_gateway("alerts", EARLIER)),
            Control::EarlierGateway { uid: EARLIER.into() }
        );
        for other in [
            ObjectMeta::default(),
            by_gateway("billing", "another-gateways-uid"),
            owned("herald.dev/v1alpha1", "NotificationGateway", "alerts", UID, Some(false)),
            owned("herald.dev/v1alpha1", "NotificationGateway", "alerts", UID, None),
            owned("apps/v1", "ReplicaSet", "alerts", UID, Some(true)),
            owned("evil.dev/v1alpha1", "NotificationGateway", "alerts", UID, Some(true)),
        ] {
            assert_eq!(control(&gw, &other), Control::Other, "{other:?}");
        }
        let mut without_uid = gw.clone();
        without_uid.metadata.uid = None;
        assert_ne!(control(&without_uid, &by_gateway("alerts", UID)), Control::ThisGateway);
    }

    #[test]
    fn missing_children_and_this_gateways_own_are_admitted() {
        let ours = by_gateway("alerts", UID);
        let found = [
            found("Deployment", "alerts", None),
            found("ConfigMap", "alerts-config", Some(&ours)),
        ];
        assert_eq!(judge_children(&gateway(), &found), Ok(()));
        assert_eq!(judge_children(&gateway(), &[]), Ok(()));
    }

    #[test]
    fn objects_the_gateway_does_not_control_are_named_with_the_way_out() {
        let foreign = ObjectMeta::default();
        let ours = by_gateway("alerts", UID);
        let found = [
            found("Deployment", "alerts", Some(&foreign)),
            found("ConfigMap", "alerts-config", Some(&foreign)),
            found("Service", "alerts", Some(&ours)),
        ];
        let refusal = judge_children(&gateway(), &found).expect_err("refused");
        assert_eq!(refusal.reason, NAME_CONFLICT);
        let message = refusal.message;
        assert!(
            message.starts_with(
                "Deployment `alerts`, ConfigMap `alerts-config` already exist in namespace `apps` and are not controlled"
            ),
            "{message}"
        );
        assert!(
            !message.contains("Service"),
            "this gateway's own is no conflict: {message}"
        );
        assert!(
            message.contains("rename the gateway") && message.contains("delete") && message.contains(UID),
            "says what to do: {message}"
        );
    }

    #[test]
    fn objects_an_earlier_gateway_of_the_same_name_left_are_refused_not_adopted() {
        let leftover = by_gateway("alerts", EARLIER);
        let foreign = ObjectMeta::default();
        let found = [
            found("Deployment", "alerts", Some(&leftover)),
            found("ConfigMap", "alerts-config", Some(&foreign)),
        ];
        let refusal = judge_children(&gateway(), &found).expect_err("refused");
        assert_eq!(refusal.reason, NAME_CONFLICT);
        assert!(
            refusal
                .message
                .starts_with("ConfigMap `alerts-config` already exists in namespace `apps` and is not controlled")
                && refusal
                    .message
                    .contains("delete it, or adopt it by making this gateway")
                && refusal.message.contains(&format!(
                    "Deployment `alerts` (owner uid {EARLIER}) still belongs to an earlier"
                ))
                && refusal.message.contains("garbage collector"),
            "{}",
            refusal.message
        );
    }
}
