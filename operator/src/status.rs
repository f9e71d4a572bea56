//! The statuses the reconcilers write, computed by pure functions from what a reconcile observed, the
//! previous status and the current time. Nothing here reads the clock or talks to the apiserver, so
//! the conditions' rules (and that an unchanged object gets an identical status) are tested alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{KeyStatus, NotificationChannelStatus, NotificationGatewayStatus};
use crate::programmed::Verdict;

/// Why something the operator was asked for is not served: a refused channel, or a gateway the
/// operator will not render. The reason is a condition's reason, the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// What one gateway reconcile observed; the gateway's next status follows from it and the previous one.
#[derive(Debug, Clone, Default)]
pub struct GatewayObservation {
    /// `metadata.generation` of the gateway reconciled.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired_replicas: i32,
    /// The Deployment's `status.readyReplicas`.
    pub ready_replicas: i32,
    /// The Deployment's `status.updatedReplicas`.
    pub updated_replicas: i32,
    /// The Deployment's `status.replicas`: pods of every spec, old ones still running included.
    pub total_replicas: i32,
    /// The pods' label selector (`status.selector`, for the scale subresource).
    pub selector: String,
    /// Channels of this gateway that were refused.
    pub refused_channels: usize,
    /// What the signing-key run left.
    pub keys: KeysObservation,
    /// Where the Deployment's rollout stands.
    pub rollout: Rollout,
}

/// What a run of the signing keys (`signing::keep`) left, for status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeysObservation {
    /// The key that signs now.
    pub active_key_id: Option<String>,
    /// Every key, newest first (never the secrets).
    pub keys: Vec<KeyStatus>,
    /// The run added a key.
    pub rotated: bool,
    /// When the next key is due.
    pub next_rotation: Option<Time>,
    /// The rotation request the run acted on.
    pub request_handled: Option<String>,
}

/// What the Deployment says of its rollout. Replica counts describe the generation the Deployment
/// controller last observed: until it has observed the one just applied, they say nothing about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The Deployment's `metadata.generation` (of the spec just applied).
    pub generation: Option<i64>,
    /// The Deployment's `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// The Deployment's `Progressing` condition is `False` with reason `ProgressDeadlineExceeded`.
    pub deadline_exceeded: bool,
}

impl Rollout {
    /// The Deployment controller has seen the spec just applied.
    fn observed(&self) -> bool {
        match (self.generation, self.observed_generation) {
            (Some(generation), Some(observed)) => observed >= generation,
            _ => false,
        }
    }
}

/// The gateway's next status: `Ready`, `Progressing` and `Degraded` conditions, the ready replicas and
/// the signing keys. `lastRotationTime` is now when this run added a key, else carried over, as is
/// the rotation request last handled.
pub fn gateway_status(
    previous: Option<&NotificationGatewayStatus>,
    observed: GatewayObservation,
    now: &Time,
) -> NotificationGatewayStatus {
    let GatewayObservation {
        generation,
        desired_replicas: desired,
        ready_replicas: ready,
        updated_replicas: updated,
        total_replicas: total,
        selector,
        refused_channels: refused,
        keys,
        rollout,
    } = observed;
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions);
    // Until the Deployment controller has observed the spec just applied, its counts are of the
    // previous one: not ready (so `kubectl wait --for=condition=Ready` waits), still progressing.
    let (ready_state, ready_reason, ready_message) = if !rollout.observed() {
        (
            false,
            "RolloutPending",
            format!(
                "the Deployment has not observed generation {} yet",
                rollout.generation.unwrap_or_default()
            ),
        )
    } else if ready >= desired && updated >= desired && total <= updated {
        // No pod of an older spec is left: the ready ones are the spec asked for (with a surge, an
        // old ready pod and a new unready one would otherwise count as "all ready").
        (true, "ReplicasReady", format!("{ready} of {desired} replicas ready"))
    } else {
        // Ready means the spec asked for is what serves: old replicas still up do not count.
        (
            false,
            "ReplicasNotReady",
            format!("{ready} of {desired} replicas ready, {updated} updated"),
        )
    };
    let (progressing, progressing_reason, progressing_message) = if rollout.deadline_exceeded {
        (
            false,
            "ProgressDeadlineExceeded",
            "the rollout did not progress within the Deployment's deadline".to_owned(),
        )
    } else if !rollout.observed() || updated < desired || ready < desired || total > updated {
        (true, "RollingOut", format!("{updated} of {desired} replicas updated"))
    } else {
        (false, "Complete", format!("{updated} of {desired} replicas updated"))
    };
    let (degraded, degraded_reason, degraded_message) = if rollout.deadline_exceeded {
        (true, "ProgressDeadlineExceeded", progressing_message.clone())
    } else if refused > 0 {
        (true, "ChannelsRefused", format!("{refused} channel(s) refused"))
    } else {
        (false, "AllChannelsAccepted", format!("{refused} channel(s) refused"))
    };
    let conditions = vec![
        condition(
            previous_conditions,
            "Ready",
            ready_state,
            ready_reason,
            ready_message,
            generation,
            now,
        ),
        condition(
            previous_conditions,
            "Progressing",
            progressing,
            progressing_reason,
            progressing_message,
            generation,
            now,
        ),
        condition(
            previous_conditions,
            "Degraded",
            degraded,
            degraded_reason,
            degraded_message,
            generation,
            now,
        ),
    ];
    NotificationGatewayStatus {
        observed_generation: generation,
        conditions,
        ready_replicas: Some(ready),
        replicas: Some(total),
        selector: Some(selector),
        active_key_id: keys.active_key_id,
        keys: keys.keys,
        last_rotation_time: if keys.rotated {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.last_rotation_time.clone())
        },
        next_rotation_time: keys.next_rotation,
        rotation_request_handled: keys
            .request_handled
            .or_else(|| previous.and_then(|p| p.rotation_request_handled.clone())),
    }
}

/// `status` with what a run of the keys left (a revocation while paused or refused): the keys'
/// fields as [`gateway_status`] sets them, the rest untouched.
pub fn overlay_keys(status: &mut NotificationGatewayStatus, keys: &KeysObservation, now: &Time) {
    status.active_key_id.clone_from(&keys.active_key_id);
    status.keys.clone_from(&keys.keys);
    if keys.rotated {
        status.last_rotation_time = Some(now.clone());
    }
    status.next_rotation_time.clone_from(&keys.next_rotation);
    if keys.request_handled.is_some() {
        status.rotation_request_handled.clone_from(&keys.request_handled);
    }
}

/// The status of a paused gateway (`spec.paused`): `Progressing` is `False` with reason `Paused`;
/// `Ready` and `Degraded` keep what they said, and `observedGeneration` stays the last one applied:
/// tools that read "observed generation is current and Ready" as "this spec is live" must not think
/// a change made while paused is.
pub fn paused_gateway_status(
    previous: Option<&NotificationGatewayStatus>,
    generation: Option<i64>,
    now: &Time,
) -> NotificationGatewayStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions);
    let mut conditions: Vec<Condition> = previous_conditions
        .iter()
        .filter(|c| c.type_ != "Progressing")
        .cloned()
        .collect();
    conditions.push(condition(
        previous_conditions,
        "Progressing",
        false,
        "Paused",
        "spec.paused is true: changes are not applied until it is false".to_owned(),
        generation,
        now,
    ));
    NotificationGatewayStatus {
        conditions,
        ..previous.cloned().unwrap_or_default()
    }
}

/// The status of a gateway the operator refuses to render (`admission`): not `Ready`, not
/// `Progressing` and `Degraded`, each with the refusal's reason and message. Its children are left as
/// they were last rendered, so the replica count and the active key are carried over.
pub fn refused_gateway_status(
    previous: Option<&NotificationGatewayStatus>,
    generation: Option<i64>,
    refusal: &Refusal,
    now: &Time,
) -> NotificationGatewayStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions);
    let conditions = [("Ready", false), ("Progressing", false), ("Degraded", true)]
        .into_iter()
        .map(|(kind, status)| {
            condition(
                previous_conditions,
                kind,
                status,
                refusal.reason,
                refusal.message.clone(),
                generation,
                now,
            )
        })
        .collect();
    NotificationGatewayStatus {
        observed_generation: generation,
        conditions,
        ..previous.cloned().unwrap_or_default()
    }
}

/// What became of a channel: refused, or accepted and (or not yet) served by its gateway's replicas.
#[derive(Debug, Clone, Copy)]
pub enum ChannelOutcome<'a> {
    Refused(&'a Refusal),
    Accepted(&'a Verdict),
}

/// The status of a gateway whose reconcile failed: `Ready` false and `Degraded` true with the
/// failure's reason and message; `Progressing` and everything else as they were (the children keep
/// what was last applied, and the reconcile is retried).
pub fn failed_gateway_status(
    previous: Option<&NotificationGatewayStatus>,
    generation: Option<i64>,
    failure: &Refusal,
    now: &Time,
) -> NotificationGatewayStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions);
    let mut conditions: Vec<Condition> = previous_conditions
        .iter()
        .filter(|c| c.type_ != "Ready" && c.type_ != "Degraded")
        .cloned()
        .collect();
    for (kind, status) in [("Ready", false), ("Degraded", true)] {
        conditions.push(condition(
            previous_conditions,
            kind,
            status,
            failure.reason,
            failure.message.clone(),
            generation,
            now,
        ));
    }
    conditions.sort_by_key(|c| ["Ready", "Progressing", "Degraded"].iter().position(|k| *k == c.type_));
    NotificationGatewayStatus {
        conditions,
        ..previous.cloned().unwrap_or_default()
    }
}

/// A channel's next status: `Accepted` (or not, with the refusal's reason and message) and
/// `Programmed` (every ready replica of its gateway serves it; a refused channel is not).
pub fn channel_status(
    previous: Option<&NotificationChannelStatus>,
    generation: Option<i64>,
    outcome: ChannelOutcome<'_>,
    now: &Time,
) -> NotificationChannelStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions);
    let (accepted, programmed) = match outcome {
        ChannelOutcome::Refused(refusal) => (
            (false, refusal.reason, refusal.message.clone()),
            (false, refusal.reason, format!("not accepted: {}", refusal.message)),
        ),
        ChannelOutcome::Accepted(verdict) => (
            (true, "Accepted", "accepted by its gateway".to_owned()),
            (verdict.programmed, verdict.reason, verdict.message.clone()),
        ),
    };
    let conditions = [("Accepted", accepted), ("Programmed", programmed)]
        .into_iter()
        .map(|(kind, (status, reason, message))| {
            condition(previous_conditions, kind, status, reason, message, generation, now)
        })
        .collect();
    NotificationChannelStatus {
        observed_generation: generation,
        conditions,
    }
}

/// A condition, keeping its previous transition time while its status holds (so an unchanged object
/// gets an identical status and nothing is written), and taking `now` when it flips.
pub fn condition(
    previous: &[Condition],
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("time"))
    }

    fn observed(ready: i32, updated: i32, refused: usize) -> GatewayObservation {
        GatewayObservation {
            generation: Some(3),
            desired_replicas: 2,
            ready_replicas: ready,
            updated_replicas: updated,
            total_replicas: updated.max(ready),
            selector: "app=x".into(),
            refused_channels: refused,
            keys: KeysObservation {
                active_key_id: Some("k1".into()),
                ..KeysObservation::default()
            },
            rollout: Rollout {
                generation: Some(7),
                observed_generation: Some(7),
                deadline_exceeded: false,
            },
        }
    }

    #[test]
    fn until_the_deployment_observes_the_new_spec_the_gateway_is_not_ready() {
        let mut observation = observed(2, 2, 0);
        observation.rollout.generation = Some(8);
        let status = gateway_status(None, observation, &at(100));
        assert_eq!(state(&status, "Ready"), ("False", "RolloutPending"));
        assert_eq!(
            find(&status, "Ready").message,
            "the Deployment has not observed generation 8 yet"
        );
        assert_eq!(state(&status, "Progressing"), ("True", "RollingOut"));
        let mut unknown = observed(2, 2, 0);
        unknown.rollout.observed_generation = None;
        assert_eq!(
            state(&gateway_status(None, unknown, &at(100)), "Ready"),
            ("False", "RolloutPending")
        );
    }

    #[test]
    fn an_old_pod_still_running_beside_the_new_ones_keeps_the_gateway_not_ready() {
        // maxSurge 1: one old ready pod, two new ones of which one is ready.
        let mut observation = observed(2, 2, 0);
        observation.total_replicas = 3;
        let status = gateway_status(None, observation, &at(100));
        assert_eq!(state(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(state(&status, "Progressing"), ("True", "RollingOut"));
    }

    #[test]
    fn a_rollout_past_its_deadline_is_degraded_and_no_longer_progressing() {
        let mut observation = observed(1, 1, 2);
        observation.rollout.deadline_exceeded = true;
        let status = gateway_status(None, observation, &at(100));
        assert_eq!(state(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(state(&status, "Progressing"), ("False", "ProgressDeadlineExceeded"));
        assert_eq!(state(&status, "Degraded"), ("True", "ProgressDeadlineExceeded"));
    }

    #[test]
    fn a_paused_gateway_says_so_and_keeps_its_other_conditions() {
        let ready = gateway_status(None, observed(2, 2, 0), &at(100));
        let paused = paused_gateway_status(Some(&ready), Some(4), &at(200));
        assert_eq!(state(&paused, "Progressing"), ("False", "Paused"));
        assert_eq!(state(&paused, "Ready"), ("True", "ReplicasReady"));
        assert_eq!(
            paused.observed_generation,
            Some(3),
            "the spec last applied, not the paused one"
        );
        assert_eq!(paused.active_key_id.as_deref(), Some("k1"));
    }

    fn find<'a>(status: &'a NotificationGatewayStatus, kind: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} condition"))
    }

    /// `(status, reason)` of the condition `kind`.
    fn state<'a>(status: &'a NotificationGatewayStatus, kind: &str) -> (&'a str, &'a str) {
        let condition = find(status, kind);
        (&condition.status, &condition.reason)
    }

    #[test]
    fn a_gateway_with_every_replica_updated_and_ready_is_ready_and_not_progressing() {
        let status = gateway_status(None, observed(2, 2, 0), &at(100));
        assert_eq!(state(&status, "Ready"), ("True", "ReplicasReady"));
        assert_eq!(state(&status, "Progressing"), ("False", "Complete"));
        assert_eq!(state(&status, "Degraded"), ("False", "AllChannelsAccepted"));
        assert_eq!(find(&status, "Ready").message, "2 of 2 replicas ready");
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.active_key_id.as_deref(), Some("k1"));
    }

    #[test]
    fn a_rollout_under_way_is_progressing_and_not_ready() {
        let status = gateway_status(None, observed(1, 2, 0), &at(100));
        assert_eq!(state(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(state(&status, "Progressing"), ("True", "RollingOut"));
        // Two ready, one of them still the old spec: not Ready until the new one is what serves.
        let status = gateway_status(None, observed(2, 1, 0), &at(100));
        assert_eq!(state(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(find(&status, "Ready").message, "2 of 2 replicas ready, 1 updated");
        assert_eq!(state(&status, "Progressing"), ("True", "RollingOut"));
        assert_eq!(find(&status, "Progressing").message, "1 of 2 replicas updated");
    }

    #[test]
    fn refused_channels_degrade_the_gateway() {
        let status = gateway_status(None, observed(2, 2, 2), &at(100));
        assert_eq!(state(&status, "Degraded"), ("True", "ChannelsRefused"));
        assert_eq!(find(&status, "Degraded").message, "2 channel(s) refused");
        assert_eq!(
            state(&status, "Ready"),
            ("True", "ReplicasReady"),
            "refusals do not unready"
        );
    }

    #[test]
    fn transition_times_hold_while_a_condition_holds_and_move_when_it_flips() {
        let first = gateway_status(None, observed(1, 2, 0), &at(100));
        assert!(first.conditions.iter().all(|c| c.last_transition_time == at(100)));

        let same = gateway_status(Some(&first), observed(1, 2, 0), &at(200));
        assert_eq!(same, first, "an unchanged observation gives an identical status");

        let ready = gateway_status(Some(&first), observed(2, 2, 0), &at(300));
        assert_eq!(find(&ready, "Ready").last_transition_time, at(300), "Ready flipped");
        assert_eq!(
            find(&ready, "Progressing").last_transition_time,
            at(300),
            "Progressing flipped"
        );
        assert_eq!(find(&ready, "Degraded").last_transition_time, at(100), "Degraded held");
    }

    #[test]
    fn observed_generation_follows_the_gateway_and_rotation_times_move_only_when_a_key_is_added() {
        let previous = NotificationGatewayStatus {
            observed_generation: Some(2),
            last_rotation_time: Some(at(50)),
            rotation_request_handled: Some("r1".into()),
            ..NotificationGatewayStatus::default()
        };
        let status = gateway_status(Some(&previous), observed(2, 2, 0), &at(100));
        assert_eq!(status.observed_generation, Some(3));
        assert!(status.conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(status.last_rotation_time, Some(at(50)), "carried over");
        assert_eq!(status.rotation_request_handled.as_deref(), Some("r1"), "carried over");
        let mut rotated = observed(2, 2, 0);
        rotated.keys.rotated = true;
        rotated.keys.request_handled = Some("r2".into());
        rotated.keys.next_rotation = Some(at(5_000));
        let status = gateway_status(Some(&previous), rotated, &at(200));
        assert_eq!(status.last_rotation_time, Some(at(200)));
        assert_eq!(status.next_rotation_time, Some(at(5_000)));
        assert_eq!(status.rotation_request_handled.as_deref(), Some("r2"));
    }

    #[test]
    fn a_failed_reconcile_is_not_ready_and_degraded_with_its_reason_keeping_the_rest() {
        let ready = gateway_status(None, observed(2, 2, 0), &at(100));
        let failure = Refusal {
            reason: "Forbidden",
            message: "reconcile failed (retried with backoff): persistentvolumeclaims is forbidden".into(),
        };
        let failed = failed_gateway_status(Some(&ready), Some(4), &failure, &at(200));
        let kinds: Vec<_> = failed
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Ready", "False", "Forbidden"),
                ("Progressing", "False", "Complete"),
                ("Degraded", "True", "Forbidden")
            ]
        );
        assert_eq!(failed.ready_replicas, ready.ready_replicas);
        assert_eq!(failed.active_key_id, ready.active_key_id);
        assert_eq!(
            failed_gateway_status(Some(&failed), Some(4), &failure, &at(300)),
            failed,
            "the same failure again writes nothing"
        );
    }

    #[test]
    fn a_refused_gateway_is_not_ready_and_says_why_keeping_what_it_had() {
        let ready = gateway_status(None, observed(2, 2, 0), &at(100));
        let refusal = Refusal {
            reason: "ImageNotAllowed",
            message: "image `evil:1` is not allowed".into(),
        };
        let refused = refused_gateway_status(Some(&ready), Some(4), &refusal, &at(200));
        assert_eq!(state(&refused, "Ready"), ("False", "ImageNotAllowed"));
        assert_eq!(state(&refused, "Progressing"), ("False", "ImageNotAllowed"));
        assert_eq!(state(&refused, "Degraded"), ("True", "ImageNotAllowed"));
        assert_eq!(find(&refused, "Ready").message, "image `evil:1` is not allowed");
        assert_eq!(find(&refused, "Ready").last_transition_time, at(200), "Ready flipped");
        assert_eq!(
            find(&refused, "Progressing").last_transition_time,
            at(100),
            "Progressing held"
        );
        assert_eq!(refused.observed_generation, Some(4));
        assert_eq!(refused.ready_replicas, Some(2), "the running children are untouched");
        assert_eq!(refused.active_key_id.as_deref(), Some("k1"));
        assert_eq!(
            refused_gateway_status(Some(&refused), Some(4), &refusal, &at(300)),
            refused,
            "still refused: nothing changes"
        );
    }

    #[test]
    fn a_channel_is_accepted_or_refused_with_the_refusals_reason() {
        let live = Verdict {
            programmed: true,
            reason: "Programmed",
            message: "served by 2 of 2 ready replicas".into(),
        };
        let accepted = channel_status(None, Some(1), ChannelOutcome::Accepted(&live), &at(100));
        assert_eq!(accepted.conditions[1].type_, "Programmed");
        assert_eq!(accepted.conditions[1].status, "True");
        assert_eq!(accepted.observed_generation, Some(1));
        let condition = &accepted.conditions[0];
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str()
            ),
            ("Accepted", "True", "Accepted")
        );

        let refusal = Refusal {
            reason: "TypeConflict",
            message: "new_like (claimed by older)".into(),
        };
        let refused = channel_status(Some(&accepted), Some(2), ChannelOutcome::Refused(&refusal), &at(200));
        assert_eq!(
            (
                refused.conditions[1].status.as_str(),
                refused.conditions[1].reason.as_str()
            ),
            ("False", "TypeConflict"),
            "a refused channel is not programmed"
        );
        let condition = &refused.conditions[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "TypeConflict")
        );
        assert_eq!(condition.message, "new_like (claimed by older)");
        assert_eq!(condition.last_transition_time, at(200));
        assert_eq!(
            channel_status(Some(&refused), Some(2), ChannelOutcome::Refused(&refusal), &at(300)),
            refused,
            "still refused: nothing changes"
        );
    }
}
