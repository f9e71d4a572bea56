//! Which channels a gateway serves. A type belongs to at most one channel: when two channels claim a
//! type, the older one (by creation time, then name) keeps it and the newer one is refused with a
//! reason, without breaking the others.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::{NotificationChannel, NotificationType};
use crate::status::Refusal;

/// The verdict for each channel of one gateway, in a stable order.
pub struct Verdicts<'a> {
    pub accepted: Vec<&'a NotificationChannel>,
    pub refused: Vec<(&'a NotificationChannel, Refusal)>,
}

pub fn judge(channels: &[NotificationChannel]) -> Verdicts<'_> {
    let mut ordered: Vec<&NotificationChannel> = channels
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect();
    ordered.sort_by(|a, b| {
        let created = |c: &NotificationChannel| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let mut owner_of: BTreeMap<NotificationType, String> = BTreeMap::new();
    let mut verdicts = Verdicts {
        accepted: Vec::new(),
        refused: Vec::new(),
    };
    for channel in ordered {
        let conflicts: Vec<String> = channel
            .spec
            .types
            .iter()
            .filter_map(|t| owner_of.get(t).map(|owner| format!("{} (claimed by {owner})", t)))
            .collect();
        if conflicts.is_empty() {
            for t in &channel.spec.types {
                owner_of.insert(*t, channel.name_any());
            }
            verdicts.accepted.push(channel);
        } else {
            let message = format!(
                "types already claimed by another channel of this gateway: {}",
                conflicts.join(", ")
            );
            verdicts.refused.push((
                channel,
                Refusal {
                    reason: "TypeConflict",
                    message,
                },
            ));
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::{GatewayRef, NotificationChannelSpec};

    fn channel(name: &str, created_second: i64, types: Vec<NotificationType>) -> NotificationChannel {
        let mut channel = NotificationChannel::new(
            name,
            NotificationChannelSpec {
                gateway_ref: GatewayRef { name: "gw".into() },
                description: None,
                types,
                admin_only: false,
                required_role: None,
                default_subscribed: true,
                retention_days: None,
            },
        );
        channel.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created_second).expect("time"),
        ));
        channel
    }

    #[test]
    fn the_older_channel_keeps_a_contested_type_and_the_others_are_unaffected() {
        use NotificationType::*;
        let channels = vec![
            channel("newer", 20, vec![NewLike, MocFeatured]),
            channel("older", 10, vec![NewLike, NewComment]),
            channel("uploads", 30, vec![UploadComplete]),
        ];
        let verdicts = judge(&channels);
        let accepted: Vec<String> = verdicts.accepted.iter().map(|c| c.name_any()).collect();
        assert_eq!(accepted, ["older", "uploads"]);
        assert_eq!(verdicts.refused.len(), 1);
        let (refused, why) = &verdicts.refused[0];
        assert_eq!(refused.name_any(), "newer");
        assert_eq!(why.reason, "TypeConflict");
        assert!(why.message.contains("new_like (claimed by older)"), "{}", why.message);
    }
}
