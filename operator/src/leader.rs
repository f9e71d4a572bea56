//! Leader election through a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! reconciles at a time, with client-go's semantics (`k8s.io/client-go/tools/leaderelection`):
//!
//! - A follower never compares the holder's `renewTime` with its own clock (clocks of two nodes may
//!   disagree): it notes, on its own monotonic clock, when it last saw the lease record change, and
//!   takes the lease only once that record has stayed the same for the lease's duration.
//! - The leader retries its renewal every `retry` and stops leading at once when it has not renewed
//!   successfully within `renew_deadline` (shorter than the lease's duration) of the last successful
//!   renewal's start: it has stopped acting before any follower may take over.
//! - Writes carry the resourceVersion read, so two candidates cannot both win.
//! - On a clean shutdown the leader releases the lease (no holder, a one-second duration), so a
//!   follower takes over at once instead of after the lease's duration.
//! - A follower's API errors are retried, never fatal.
//!
//! No maintained crate fitted: `kube-leader-election` compares timestamps across machines, which the
//! first rule exists to avoid. This module decides and reports who leads; what to do on a loss
//! (exit) is the caller's.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

/// The three durations of an election. `renew_deadline` < `lease` and `retry` < `renew_deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease record must stay unchanged before a follower may take it.
    pub lease: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower looks.
    pub retry: Duration,
}

impl Timing {
    /// client-go's defaults, which controller-runtime uses too.
    pub const DEFAULT: Self = Self {
        lease: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry: Duration::from_secs(2),
    };

    /// Refuses timings under which a leader could still act when a follower takes over.
    pub fn new(lease: Duration, renew_deadline: Duration, retry: Duration) -> Result<Self, String> {
        if retry.is_zero() || retry >= renew_deadline || renew_deadline >= lease {
            return Err(format!(
                "leader election needs 0 < retry period ({retry:?}) < renew deadline ({renew_deadline:?}) < lease duration ({lease:?})"
            ));
        }
        Ok(Self {
            lease,
            renew_deadline,
            retry,
        })
    }
}

/// What a candidate should do with the lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a live lease: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a lease whose record changed less than its duration ago.
    Follow,
}

/// The lease record as last seen, and when (on this replica's monotonic clock) it last changed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>, Option<String>)>,
    changed_at: Option<Instant>,
}

/// Decides from the lease as read at `now` (monotonic), updating what was observed of it.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    observed: &mut Observed,
    now: Instant,
    timing: &Timing,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (
        spec.holder_identity.clone(),
        spec.renew_time.clone(),
        lease.metadata.resource_version.clone(),
    );
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.changed_at = Some(now);
    }
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            // The holder's own duration if it wrote one (at least a second), ours otherwise.
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(timing.lease, |s| Duration::from_secs(s.max(1)));
            let changed_at = observed.changed_at.unwrap_or(now);
            if now.duration_since(changed_at) >= duration {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

/// Why this replica stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("another replica holds the lease")]
    Taken,
    #[error("the lease was not renewed within the renew deadline")]
    DeadlinePassed,
}

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observed: tokio::sync::Mutex<Observed>,
    /// Until when this replica may act: the start of its last successful renewal plus the renew
    /// deadline. Read by [`LeaderElection::gated`] at every poll.
    leading_until: std::sync::Mutex<Option<Instant>>,
}

/// A future polled only while its election says this replica may act ([`LeaderElection::gated`]).
pub struct Gated<'a, F> {
    election: &'a LeaderElection,
    inner: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> std::future::Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        if !self.election.may_act() {
            // Never woken again: `hold` ends the process's leadership (and the caller's select).
            return std::task::Poll::Pending;
        }
        self.inner.as_mut().poll(cx)
    }
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: tokio::sync::Mutex::default(),
            leading_until: std::sync::Mutex::new(None),
        }
    }

    /// Whether this replica may act now: it renewed within the renew deadline, by the clock read
    /// now (not by a timer, which a process resumed after a pause may not have fired yet).
    pub fn may_act(&self) -> bool {
        self.leading_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| std::time::Instant::now() < until.into_std())
    }

    /// `work` (the controllers), polled only while [`LeaderElection::may_act`]: after a pause past
    /// the deadline, not one more step runs before `hold` notices.
    pub fn gated<F: std::future::Future>(&self, work: F) -> Gated<'_, F> {
        Gated {
            election: self,
            inner: Box::pin(work),
        }
    }

    fn leading_until(&self, until: Option<Instant>) {
        *self
            .leading_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// Waits until this replica holds the lease (`leader:following` each round it does not,
    /// `leader:elected` once it does); API errors are logged and retried. Returns when the winning
    /// write was started: the renew deadline counts from there.
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.try_lead().await {
                Ok(true) => {
                    tracing::info!(identity = self.identity, "leader:elected");
                    self.leading_until(Some(started + self.timing.renew_deadline));
                    return started;
                }
                Ok(false) => tracing::info!(identity = self.identity, "leader:following"),
                Err(err) => tracing::warn!(error = %err, "leader:lease-unreadable, retrying"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renews the lease every `retry` while this replica leads, from the renewal started at
    /// `renewed`; returns as soon as it does not lead: another replica holds the lease
    /// (`leader:lost`), or no renewal succeeded within the renew deadline (`leader:deadline-passed`;
    /// the deadline is a timer of its own, so a renewal that hangs, or a process paused and resumed
    /// past it, stops leading at once).
    pub async fn hold(&self, renewed: Instant) -> Lost {
        let mut deadline = renewed + self.timing.renew_deadline;
        let lost = self.renew_until_lost(&mut deadline).await;
        self.leading_until(None);
        lost
    }

    async fn renew_until_lost(&self, deadline: &mut Instant) -> Lost {
        loop {
            if Instant::now() >= *deadline {
                tracing::error!(identity = self.identity, "leader:deadline-passed, stopping");
                return Lost::DeadlinePassed;
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(*deadline) => {
                    tracing::error!(identity = self.identity, "leader:deadline-passed, stopping");
                    return Lost::DeadlinePassed;
                }
                () = tokio::time::sleep(self.timing.retry) => {}
            }
            let started = Instant::now();
            match tokio::time::timeout_at(*deadline, self.try_lead()).await {
                Ok(Ok(true)) => {
                    *deadline = started + self.timing.renew_deadline;
                    self.leading_until(Some(*deadline));
                }
                Ok(Ok(false)) => {
                    tracing::error!(identity = self.identity, "leader:lost, stopping");
                    return Lost::Taken;
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "leader:renew-failed"),
                Err(_) => {
                    tracing::error!(identity = self.identity, "leader:deadline-passed, stopping");
                    return Lost::DeadlinePassed;
                }
            }
        }
    }

    /// Gives the lease up if this replica holds it: no holder and a one-second duration, so that a
    /// follower takes over at its next look (`leader:released`).
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        tracing::info!(identity = self.identity, "leader:released");
        Ok(())
    }

    /// One round: acquire or renew when we may. `Ok(true)` while we lead.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let decision = {
            let mut observed = self.observed.lock().await;
            decide(
                current.as_ref(),
                &self.identity,
                &mut observed,
                Instant::now(),
                &self.timing,
            )
        };
        if decision == Decision::Follow {
            return Ok(false);
        }
        let now = Timestamp::now();
        let previous = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::Acquire);
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.timing.lease.as_secs()).unwrap_or(i32::MAX)),
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

    fn lease(holder: &str, renewed_second: i64, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).expect("time"))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_follower_times_the_lease_on_its_own_clock_from_the_last_change_it_saw() {
        let timing = Timing::DEFAULT;
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut observed = Observed::default();
        assert_eq!(decide(None, "a", &mut observed, at(0), &timing), Decision::Acquire);
        assert_eq!(
            decide(Some(&lease("a", 0, "1")), "a", &mut observed, at(0), &timing),
            Decision::Renew
        );
        // b's renewTime says 1970: a clock far behind ours is no reason to take over.
        let held = lease("b", 0, "2");
        assert_eq!(
            decide(Some(&held), "a", &mut observed, at(1), &timing),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&held), "a", &mut observed, at(15), &timing),
            Decision::Follow
        );
        // b renews (the record changes): the count starts again.
        let renewed = lease("b", 2, "3");
        assert_eq!(
            decide(Some(&renewed), "a", &mut observed, at(16), &timing),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&renewed), "a", &mut observed, at(30), &timing),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&renewed), "a", &mut observed, at(31), &timing),
            Decision::Acquire,
            "unchanged for the lease's 15 s"
        );
        let mut released = lease("", 3, "4");
        released.spec.as_mut().expect("spec").holder_identity = None;
        assert_eq!(
            decide(Some(&released), "a", &mut observed, at(32), &timing),
            Decision::Acquire
        );
    }

    #[test]
    fn timings_that_would_let_two_replicas_lead_are_refused() {
        let s = Duration::from_secs;
        assert!(Timing::new(s(15), s(10), s(2)).is_ok());
        assert!(
            Timing::new(s(10), s(10), s(2)).is_err(),
            "renew deadline as long as the lease"
        );
        assert!(Timing::new(s(15), s(2), s(2)).is_err(), "retry as long as the deadline");
        assert!(Timing::new(s(15), s(10), s(0)).is_err());
    }
}
