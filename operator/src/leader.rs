//! Leader election through a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! reconciles at a time. The holder renews every third of the lease's duration; a lease not renewed
//! for its duration can be taken over. Updates carry the resourceVersion read, so two candidates
//! cannot both win. This module only decides and reports who leads; what to do on a loss (exit) is
//! the caller's.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// What a candidate should do with the lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a live lease: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease.
    Follow,
}

pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else { return Decision::Acquire };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
            if renewed + duration < now {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

/// How long a follower waits before looking at the lease again.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Why this replica stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("another replica holds the lease")]
    Taken,
    #[error("the lease was not renewed within its duration: {0}")]
    Expired(#[source] kube::Error),
}

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// Waits until this replica holds the lease (`leader:following` each round it does not,
    /// `leader:elected` once it does). An apiserver error ends the wait with that error.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        while !self.try_lead().await? {
            tracing::info!(identity = self.identity, "leader:following");
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
        tracing::info!(identity = self.identity, "leader:elected");
        Ok(())
    }

    /// Renews the lease while this replica leads; returns once it does not: another replica took the
    /// lease (`leader:lost, exiting`), or renewals failed for longer than the lease's duration
    /// (`leader:expired, exiting`). A failed renewal within that time is only a warning
    /// (`leader:renew-failed`).
    pub async fn hold(&self) -> Lost {
        let mut last_success = Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_lead().await {
                Ok(true) => last_success = Instant::now(),
                Ok(false) => {
                    tracing::error!(identity = self.identity, "leader:lost, exiting");
                    return Lost::Taken;
                }
                Err(err) if last_success.elapsed() < self.duration => {
                    tracing::warn!(error = %err, "leader:renew-failed");
                }
                Err(err) => {
                    tracing::error!(error = %err, "leader:expired, exiting");
                    return Lost::Expired(err);
                }
            }
        }
    }

    /// One round: acquire or renew when we may. `Ok(true)` while we lead.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        if decision == Decision::Follow {
            return Ok(false);
        }
        let previous = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::Acquire);
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if decision == Decision::Acquire {
                Some(MicroTime(now))
            } else {
                previous.acquire_time
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let outcome = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                // The resourceVersion read above makes this a compare-and-swap.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            // Someone else won the race this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).expect("time"))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn leases_are_acquired_renewed_followed_and_taken_over_when_stale() {
        let now = Timestamp::from_second(1_000).expect("time");
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(decide(Some(&spec("a", 995)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&spec("b", 995)), "a", now), Decision::Follow);
        assert_eq!(
            decide(Some(&spec("b", 980)), "a", now),
            Decision::Acquire,
            "b stopped renewing 20 s ago"
        );
        assert_eq!(decide(Some(&spec("", 999)), "a", now), Decision::Acquire);
    }
}
