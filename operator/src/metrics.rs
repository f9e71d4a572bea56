//! The operator's metrics for `/metrics`, kept and encoded by `prometheus-client` in the classic
//! Prometheus text format (version 0.0.4), under the names controller-runtime and client-go give them
//! (`controller_runtime_*`, `workqueue_*`, `leader_election_master_status`), so that dashboards and
//! alerts written for Kubernetes operators work unchanged; plus two of Herald's own, read from the
//! gateways the controller has cached (`herald_operator_gateway_condition`,
//! `herald_operator_signing_key_age_seconds`). Also the per-object failure counts of the error backoff
//! (state the error policy needs, not metrics).
//!
//! This module measures and encodes; it never talks to the apiserver. Reconciles are measured by
//! [`Metrics::reconcile`] around the reconcile function, which is what controller-runtime measures
//! around `Reconcile` too.
//!
//! Left out, because they cannot be stated truthfully (no value is invented):
//! - `workqueue_depth`, `workqueue_adds_total`, `workqueue_queue_duration_seconds`: the controller's
//!   queue (its scheduler) is internal to `kube::runtime::Controller`: it merges a request for an
//!   object already scheduled with the pending one and holds back one whose reconcile is running, and
//!   exposes neither its length, nor what it merged, nor how long a request waited. The triggers could
//!   be counted before the queue, but that is not client-go's `adds` (items that were not queued yet).
//! - `controller_runtime_max_concurrent_reconciles`: the controllers run with kube-runtime's default
//!   concurrency, which has no limit (reconciles of one object never overlap; of different objects, any
//!   number may), so there is no maximum to state.
//! - `controller_runtime_reconcile_panics_total`, `controller_runtime_terminal_reconcile_errors_total`:
//!   kube-runtime re-raises a reconcile's panic in the controller, which stops the process (there is
//!   no count to keep), and no error is terminal (every failure is retried with a backoff).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{NotificationGateway, NotificationGatewayStatus};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// controller-runtime's buckets (seconds) of `controller_runtime_reconcile_time_seconds`: the same
/// `le` values as every other operator's, so that histograms can be aggregated across operators.
const RECONCILE_TIME_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5,
    1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
];

/// client-go's buckets of `workqueue_work_duration_seconds`: `ExponentialBuckets(10e-9, 10, 12)`,
/// 10 ns to 1000 s, computed the way Go computes them (by repeated multiplication) for the same `le`s.
fn work_duration_buckets() -> impl Iterator<Item = f64> {
    std::iter::successors(Some(10e-9), |bound| Some(bound * 10.0)).take(12)
}

/// The `result` of a reconcile in `controller_runtime_reconcile_total`. controller-runtime's four
/// values; `requeue` (an immediate requeue with the rate limiter's backoff) is never counted: a
/// kube-runtime reconcile cannot ask for one, and it stays at 0 as controller-runtime starts it.
const RESULTS: [&str; 4] = ["success", "error", "requeue", "requeue_after"];

/// controller-runtime's `result` for what a reconcile returned: `error`; `requeue_after` when it asked
/// to be looked at again after a delay (a gateway's periodic look, a refused gateway's recheck);
/// `success` when it waits for the next change.
fn result_of<E>(outcome: &Result<Action, E>) -> &'static str {
    match outcome {
        Err(_) => "error",
        Ok(action) if *action == Action::await_change() => "success",
        Ok(_) => "requeue_after",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

/// A controller's work queue: `name` is the controller's name, and current controller-runtime adds
/// the same value as `controller`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: &'static str,
    controller: &'static str,
}

impl QueueLabels {
    fn of(controller: &'static str) -> Self {
        Self {
            name: controller,
            controller,
        }
    }
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct LeaseLabels {
    name: String,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct GatewayLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: String,
    status: &'static str,
}

/// A condition's possible statuses: each gets a series, 1 for the current one (as kube-state-metrics
/// does), so that `== 1` selects a status and a missing series means a missing condition.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    reconcile_time: HistogramFamily<ControllerLabels>,
    retries: Family<QueueLabels, Counter>,
    work_duration: HistogramFamily<QueueLabels>,
    live: Arc<Live>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_clock(Timestamp::now)
    }
}

impl Metrics {
    /// Metrics whose scrape-time values (a signing key's age) are read from `clock`.
    pub fn with_clock(clock: fn() -> Timestamp) -> Self {
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ControllerLabels, Counter>::default();
        let reconcile_time: HistogramFamily<ControllerLabels> =
            Family::new_with_constructor(|| Histogram::new(RECONCILE_TIME_BUCKETS));
        let retries = Family::<QueueLabels, Counter>::default();
        let work_duration: HistogramFamily<QueueLabels> =
            Family::new_with_constructor(|| Histogram::new(work_duration_buckets()));
        let live = Arc::new(Live {
            clock,
            in_flight: Mutex::default(),
            leadership: Mutex::default(),
            gateways: Mutex::default(),
        });
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it. Help texts get their
        // final period from the encoder too (not those of the collector's). The help texts are
        // controller-runtime's and client-go's.
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            reconcile_time.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            retries.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            work_duration.clone(),
        );
        registry.register_collector(Box::new(live.clone()));
        Self {
            registry,
            reconciles,
            errors,
            reconcile_time,
            retries,
            work_duration,
            live,
            failures: Mutex::default(),
        }
    }

    /// Starts `controller`'s series at zero, as controller-runtime does when a controller starts, so
    /// that rates and `absent()` alerts see them before the first reconcile.
    pub fn controller_started(&self, controller: &'static str) {
        for result in RESULTS {
            self.reconciles
                .get_or_create(&ResultLabels { controller, result })
                .inc_by(0);
        }
        self.errors.get_or_create(&ControllerLabels { controller }).inc_by(0);
        self.retries.get_or_create(&QueueLabels::of(controller)).inc_by(0);
        lock(&self.live.in_flight).controllers.insert(controller);
    }

    /// Runs `reconcile` as one reconcile of `controller`: an active worker while it runs, then its
    /// duration and its result. A reconcile dropped before it ends (the controllers stopped) is only
    /// no longer active.
    pub async fn reconcile<E>(
        &self,
        controller: &'static str,
        reconcile: impl Future<Output = Result<Action, E>>,
    ) -> Result<Action, E> {
        let running = Running::start(&self.live, controller);
        let outcome = reconcile.await;
        let took = running.started.elapsed();
        drop(running);
        self.record(controller, result_of(&outcome), took);
        outcome
    }

    fn record(&self, controller: &'static str, result: &'static str, took: Duration) {
        let seconds = took.as_secs_f64();
        self.reconcile_time
            .get_or_create(&ControllerLabels { controller })
            .observe(seconds);
        self.work_duration
            .get_or_create(&QueueLabels::of(controller))
            .observe(seconds);
        self.reconciles
            .get_or_create(&ResultLabels { controller, result })
            .inc();
        match result {
            "error" => {
                self.errors.get_or_create(&ControllerLabels { controller }).inc();
            }
            // Put back in the queue after a delay: client-go counts every such add as a retry.
            "requeue_after" => self.retried(controller),
            _ => {}
        }
    }

    /// One object of `controller` put back in its queue after a delay by the error policy (its
    /// backoff): `workqueue_retries_total`, which client-go counts at every delayed add.
    pub fn retried(&self, controller: &'static str) {
        self.retries.get_or_create(&QueueLabels::of(controller)).inc();
    }

    /// Reports `leader_election_master_status{name=lease}`: 1 while `leading()` says this process
    /// leads, read at every scrape.
    pub fn report_leadership(&self, lease: &str, leading: impl Fn() -> bool + Send + Sync + 'static) {
        *lock(&self.live.leadership) = Some(Leadership {
            lease: lease.to_owned(),
            leading: Box::new(leading),
        });
    }

    /// Reports the conditions and signing-key age of the gateways in `store` (a controller's cache), at
    /// every scrape as they are then: a deleted gateway's series go with it.
    pub fn report_gateways(&self, store: Store<NotificationGateway>) {
        lock(&self.live.gateways).push(store);
    }

    /// Counts one more failure of the object `uid` and returns how many in a row.
    pub fn failures_of(&self, uid: &str) -> u32 {
        let mut failures = lock(&self.failures);
        let count = failures.entry(uid.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// The object `uid` reconciled: its backoff starts over.
    pub fn succeeded(&self, uid: &str) {
        lock(&self.failures).remove(uid);
    }

    /// Every metric in the Prometheus text format, to be served as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What is read at scrape time: the reconciles running now, the leadership, the cached gateways.
struct Live {
    clock: fn() -> Timestamp,
    in_flight: Mutex<InFlight>,
    leadership: Mutex<Option<Leadership>>,
    gateways: Mutex<Vec<Store<NotificationGateway>>>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// The reconciles running now, by an id of their own, and every controller seen (which report 0
/// when none of theirs runs).
#[derive(Default)]
struct InFlight {
    next: u64,
    running: HashMap<u64, (&'static str, Instant)>,
    controllers: BTreeSet<&'static str>,
}

/// One running reconcile, until dropped.
struct Running<'a> {
    live: &'a Live,
    id: u64,
    started: Instant,
}

impl<'a> Running<'a> {
    fn start(live: &'a Live, controller: &'static str) -> Self {
        let started = Instant::now();
        let mut in_flight = lock(&live.in_flight);
        let id = in_flight.next;
        in_flight.next += 1;
        in_flight.running.insert(id, (controller, started));
        in_flight.controllers.insert(controller);
        Self { live, id, started }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.live.in_flight).running.remove(&self.id);
    }
}

struct Leadership {
    lease: String,
    leading: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let now = Instant::now();
        let (workers, unfinished, longest) = {
            let in_flight = lock(&self.in_flight);
            let mut per_controller: BTreeMap<&'static str, (i64, f64, f64)> =
                in_flight.controllers.iter().map(|c| (*c, (0, 0.0, 0.0))).collect();
            for (controller, started) in in_flight.running.values() {
                let running = now.saturating_duration_since(*started).as_secs_f64();
                let (count, sum, max) = per_controller.entry(controller).or_default();
                *count += 1;
                *sum += running;
                *max = max.max(running);
            }
            let mut workers = Vec::new();
            let mut unfinished = Vec::new();
            let mut longest = Vec::new();
            for (controller, (count, sum, max)) in per_controller {
                workers.push((ControllerLabels { controller }, count));
                unfinished.push((QueueLabels::of(controller), sum));
                longest.push((QueueLabels::of(controller), max));
            }
            (workers, unfinished, longest)
        };
        gauges(
            &mut encoder,
            "controller_runtime_active_workers",
            "Number of currently used workers per controller.",
            &workers,
        )?;
        gauges(
            &mut encoder,
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by \
             work_duration. Large values indicate stuck threads. One can deduce the number of stuck \
             threads by observing the rate at which this increases.",
            &unfinished,
        )?;
        gauges(
            &mut encoder,
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            &longest,
        )?;

        let leader: Vec<_> = lock(&self.leadership)
            .iter()
            .map(|l| (LeaseLabels { name: l.lease.clone() }, i64::from((l.leading)())))
            .collect();
        gauges(
            &mut encoder,
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 \
             indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            &leader,
        )?;

        // Sorted, and once each even if two caches held the same gateway.
        let gateways: BTreeMap<(String, String), Arc<NotificationGateway>> = lock(&self.gateways)
            .iter()
            .flat_map(Store::state)
            .map(|gateway| ((gateway.namespace().unwrap_or_default(), gateway.name_any()), gateway))
            .collect();
        let now = (self.clock)();
        let mut conditions = Vec::new();
        let mut key_ages = Vec::new();
        let mut next_rotations = Vec::new();
        for ((namespace, name), gateway) in &gateways {
            let Some(status) = &gateway.status else { continue };
            conditions.extend(condition_series(namespace, name, status));
            let labels = || GatewayLabels {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if let Some(age) = signing_key_age(status, now) {
                key_ages.push((labels(), age));
            }
            if let Some(next) = &status.next_rotation_time {
                next_rotations.push((labels(), next.0.as_second()));
            }
        }
        gauges(
            &mut encoder,
            "herald_operator_gateway_condition",
            "The status of each condition of each NotificationGateway: 1 for its current status, 0 for the others.",
            &conditions,
        )?;
        gauges(
            &mut encoder,
            "herald_operator_signing_key_age_seconds",
            "Seconds since the key that signs a NotificationGateway's connection tokens now began signing \
             (its notBefore).",
            &key_ages,
        )?;
        gauges(
            &mut encoder,
            "herald_operator_signing_key_next_rotation_timestamp_seconds",
            "When the operator will next add a signing key to a NotificationGateway (status.nextRotationTime), \
             in seconds since the epoch: past it by much, the rotation is overdue.",
            &next_rotations,
        )
    }
}

/// One gauge family of `series`, in their order; nothing at all when there are none (as the registry
/// leaves out a family without series).
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue + Copy + fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, V)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// A series for each status of each condition the gateway's status shows, 1 for its current status.
fn condition_series<'a>(
    namespace: &'a str,
    name: &'a str,
    status: &'a NotificationGatewayStatus,
) -> impl Iterator<Item = (ConditionLabels, i64)> + 'a {
    status.conditions.iter().flat_map(move |condition| {
        CONDITION_STATUSES.into_iter().map(move |candidate| {
            let labels = ConditionLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                r#type: condition.type_.clone(),
                status: candidate,
            };
            (labels, i64::from(condition.status == candidate))
        })
    })
}

/// Whole seconds since the key signing at `now` began signing: the newest key in status whose
/// `notBefore` has passed (the gateway's rule, `rotation::active`). None while no key signs.
fn signing_key_age(status: &NotificationGatewayStatus, now: Timestamp) -> Option<i64> {
    let since = status
        .keys
        .iter()
        .map(|key| key.not_before.0)
        .filter(|not_before| *not_before <= now)
        .max()?;
    Some(now.duration_since(since).as_secs())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::{reflector, watcher};

    use super::*;
    use crate::crd::KeyStatus;

    const GATEWAYS: &str = "notificationgateway";
    const CHANNELS: &str = "notificationchannel";

    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "no `{line}` in:\n{text}");
        }
    }

    fn value_of(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
    }

    #[test]
    fn reconciles_count_by_controller_and_result_as_controller_runtime_does() {
        let metrics = Metrics::default();
        metrics.controller_started(GATEWAYS);
        metrics.controller_started(CHANNELS);
        metrics.record(GATEWAYS, "requeue_after", Duration::from_millis(250));
        metrics.record(GATEWAYS, "requeue_after", Duration::from_millis(20));
        metrics.record(GATEWAYS, "error", Duration::from_secs(2));
        metrics.record(CHANNELS, "success", Duration::from_millis(1));
        metrics.retried(GATEWAYS);
        let text = metrics.render();
        has_lines(
            &text,
            &[
                "# HELP controller_runtime_reconcile_total Total number of reconciliations per controller.",
                "# TYPE controller_runtime_reconcile_total counter",
                r#"controller_runtime_reconcile_total{controller="notificationgateway",result="requeue_after"} 2"#,
                r#"controller_runtime_reconcile_total{controller="notificationgateway",result="error"} 1"#,
                r#"controller_runtime_reconcile_total{controller="notificationgateway",result="success"} 0"#,
                r#"controller_runtime_reconcile_total{controller="notificationgateway",result="requeue"} 0"#,
                r#"controller_runtime_reconcile_total{controller="notificationchannel",result="success"} 1"#,
                r#"controller_runtime_reconcile_total{controller="notificationchannel",result="error"} 0"#,
                "# TYPE controller_runtime_reconcile_errors_total counter",
                r#"controller_runtime_reconcile_errors_total{controller="notificationgateway"} 1"#,
                r#"controller_runtime_reconcile_errors_total{controller="notificationchannel"} 0"#,
                "# TYPE controller_runtime_reconcile_time_seconds histogram",
                r#"controller_runtime_reconcile_time_seconds_sum{controller="notificationgateway"} 2.27"#,
                r#"controller_runtime_reconcile_time_seconds_count{controller="notificationgateway"} 3"#,
                r#"controller_runtime_reconcile_time_seconds_bucket{controller="notificationgateway",le="0.025"} 1"#,
                r#"controller_runtime_reconcile_time_seconds_bucket{controller="notificationgateway",le="0.25"} 2"#,
                r#"controller_runtime_reconcile_time_seconds_bucket{controller="notificationgateway",le="2"} 3"#,
                r#"controller_runtime_reconcile_time_seconds_bucket{controller="notificationgateway",le="60"} 3"#,
                r#"controller_runtime_reconcile_time_seconds_bucket{controller="notificationgateway",le="+Inf"} 3"#,
                r#"controller_runtime_reconcile_time_seconds_count{controller="notificationchannel"} 1"#,
                // Two delayed re-adds by the reconciles, one by the error policy.
                "# TYPE workqueue_retries_total counter",
                r#"workqueue_retries_total{name="notificationgateway",controller="notificationgateway"} 3"#,
                r#"workqueue_retries_total{name="notificationchannel",controller="notificationchannel"} 0"#,
                "# TYPE workqueue_work_duration_seconds histogram",
                r#"workqueue_work_duration_seconds_count{name="notificationgateway",controller="notificationgateway"} 3"#,
                r#"workqueue_work_duration_seconds_bucket{name="notificationgateway",controller="notificationgateway",le="1e-08"} 0"#,
                r#"workqueue_work_duration_seconds_bucket{name="notificationgateway",controller="notificationgateway",le="0.1"} 1"#,
                r#"workqueue_work_duration_seconds_bucket{name="notificationgateway",controller="notificationgateway",le="1"} 2"#,
                r#"workqueue_work_duration_seconds_bucket{name="notificationgateway",controller="notificationgateway",le="10"} 3"#,
                r#"workqueue_work_duration_seconds_bucket{name="notificationgateway",controller="notificationgateway",le="1000"} 3"#,
                "# TYPE controller_runtime_active_workers gauge",
                r#"controller_runtime_active_workers{controller="notificationgateway"} 0"#,
                r#"controller_runtime_active_workers{controller="notificationchannel"} 0"#,
                "# TYPE workqueue_longest_running_processor_seconds gauge",
                r#"workqueue_longest_running_processor_seconds{name="notificationgateway",controller="notificationgateway"} 0.0"#,
                r#"workqueue_unfinished_work_seconds{name="notificationchannel",controller="notificationchannel"} 0.0"#,
            ],
        );
        assert!(
            !text.contains("# EOF"),
            "the classic text format has no EOF marker:\n{text}"
        );
        assert!(
            !text.contains("herald_operator_reconcile"),
            "the old names are gone:\n{text}"
        );
        for unknowable in ["workqueue_depth", "workqueue_adds_total", "max_concurrent_reconciles"] {
            assert!(!text.contains(unknowable), "{unknowable} is not invented:\n{text}");
        }
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn a_result_is_what_the_reconcile_returned() {
        assert_eq!(result_of::<()>(&Ok(Action::await_change())), "success");
        assert_eq!(
            result_of::<()>(&Ok(Action::requeue(Duration::from_secs(300)))),
            "requeue_after"
        );
        assert_eq!(result_of(&Err::<Action, _>(())), "error");
    }

    #[tokio::test]
    async fn a_running_reconcile_is_an_active_worker_until_it_ends_or_is_dropped() {
        let metrics = Arc::new(Metrics::default());
        metrics.controller_started(GATEWAYS);
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let reconcile = tokio::spawn({
            let metrics = metrics.clone();
            async move {
                metrics
                    .reconcile(GATEWAYS, async move {
                        let _ = started.send(());
                        let _ = finished.await;
                        Ok::<_, ()>(Action::await_change())
                    })
                    .await
            }
        });
        running.await.expect("the reconcile runs");
        let text = metrics.render();
        has_lines(
            &text,
            &[r#"controller_runtime_active_workers{controller="notificationgateway"} 1"#],
        );
        let queue = r#"{name="notificationgateway",controller="notificationgateway"}"#;
        let longest = value_of(&text, &format!("workqueue_longest_running_processor_seconds{queue}"));
        assert!(longest > 0.0, "{text}");
        assert_eq!(
            value_of(&text, &format!("workqueue_unfinished_work_seconds{queue}")),
            longest
        );

        finish.send(()).expect("finish");
        assert_eq!(reconcile.await.expect("joined"), Ok(Action::await_change()));
        let text = metrics.render();
        has_lines(
            &text,
            &[
                r#"controller_runtime_active_workers{controller="notificationgateway"} 0"#,
                r#"controller_runtime_reconcile_total{controller="notificationgateway",result="success"} 1"#,
                r#"controller_runtime_reconcile_time_seconds_count{controller="notificationgateway"} 1"#,
            ],
        );

        // Dropped mid-flight (the lease lost): no longer active, and no result.
        let pending = metrics.reconcile(GATEWAYS, std::future::pending::<Result<Action, ()>>());
        let dropped = tokio::time::timeout(Duration::from_millis(10), pending).await;
        assert!(dropped.is_err());
        let text = metrics.render();
        has_lines(
            &text,
            &[
                r#"controller_runtime_active_workers{controller="notificationgateway"} 0"#,
                r#"controller_runtime_reconcile_time_seconds_count{controller="notificationgateway"} 1"#,
            ],
        );
    }

    #[test]
    fn leadership_is_read_at_every_scrape() {
        let metrics = Metrics::default();
        assert!(!metrics.render().contains("leader_election_master_status"));
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = leading.clone();
        metrics.report_leadership("herald-operator", move || {
            flag.load(std::sync::atomic::Ordering::SeqCst)
        });
        let text = metrics.render();
        has_lines(
            &text,
            &[
                "# TYPE leader_election_master_status gauge",
                r#"leader_election_master_status{name="herald-operator"} 0"#,
            ],
        );
        leading.store(true, std::sync::atomic::Ordering::SeqCst);
        has_lines(
            &metrics.render(),
            &[r#"leader_election_master_status{name="herald-operator"} 1"#],
        );
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn now() -> Timestamp {
        at("2026-11-27T12:00:00Z")
    }

    fn gateway(namespace: &str, name: &str, status: Option<NotificationGatewayStatus>) -> NotificationGateway {
        let mut gateway: NotificationGateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"auth": {"jwksUrl": "https://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}
        }))
        .expect("gateway");
        gateway.status = status;
        gateway
    }

    fn condition(kind: &str, status: &str) -> Condition {
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: "Because".into(),
            message: String::new(),
            last_transition_time: Time(now()),
            observed_generation: None,
        }
    }

    fn key(kid: &str, not_before: &str) -> KeyStatus {
        KeyStatus {
            kid: kid.into(),
            state: "Active".into(),
            not_before: Time(at(not_before)),
        }
    }

    #[test]
    fn gateway_conditions_and_key_ages_come_from_the_cache_and_go_with_a_deleted_gateway() {
        let metrics = Metrics::with_clock(now);
        let (store, mut writer) = reflector::store::<NotificationGateway>();
        metrics.report_gateways(store);
        let ready = gateway(
            "apps",
            "alerts",
            Some(NotificationGatewayStatus {
                conditions: vec![condition("Ready", "True"), condition("Degraded", "False")],
                // Status lists keys newest first; the pending one does not sign yet.
                keys: vec![
                    key("pending", "2026-11-27T12:01:00Z"),
                    key("active", "2026-11-26T12:00:00Z"),
                    key("retiring", "2026-10-01T00:00:00Z"),
                ],
                next_rotation_time: Some(Time(at("2026-12-26T12:00:00Z"))),
                ..NotificationGatewayStatus::default()
            }),
        );
        let unknown = gateway(
            "web",
            "chat",
            Some(NotificationGatewayStatus {
                conditions: vec![condition("Ready", "Unknown")],
                ..NotificationGatewayStatus::default()
            }),
        );
        let new = gateway("web", "new", None);
        for gateway in [&ready, &unknown, &new] {
            writer.apply_watcher_event(&watcher::Event::Apply(gateway.clone()));
        }
        let text = metrics.render();
        has_lines(
            &text,
            &[
                "# HELP herald_operator_gateway_condition The status of each condition of each NotificationGateway: 1 for its current status, 0 for the others.",
                "# TYPE herald_operator_gateway_condition gauge",
                r#"herald_operator_gateway_condition{namespace="apps",name="alerts",type="Ready",status="True"} 1"#,
                r#"herald_operator_gateway_condition{namespace="apps",name="alerts",type="Ready",status="False"} 0"#,
                r#"herald_operator_gateway_condition{namespace="apps",name="alerts",type="Ready",status="Unknown"} 0"#,
                r#"herald_operator_gateway_condition{namespace="apps",name="alerts",type="Degraded",status="True"} 0"#,
                r#"herald_operator_gateway_condition{namespace="apps",name="alerts",type="Degraded",status="False"} 1"#,
                r#"herald_operator_gateway_condition{namespace="web",name="chat",type="Ready",status="Unknown"} 1"#,
                r#"herald_operator_gateway_condition{namespace="web",name="chat",type="Ready",status="True"} 0"#,
                "# TYPE herald_operator_signing_key_age_seconds gauge",
                r#"herald_operator_signing_key_age_seconds{namespace="apps",name="alerts"} 86400"#,
                r#"herald_operator_signing_key_next_rotation_timestamp_seconds{namespace="apps",name="alerts"} 1798286400"#,
            ],
        );
        assert!(!text.contains(r#"name="new""#), "no status, no series:\n{text}");
        assert!(
            !text.contains(r#"herald_operator_signing_key_age_seconds{namespace="web""#),
            "no key signs, no age:\n{text}"
        );

        writer.apply_watcher_event(&watcher::Event::Delete(ready));
        let text = metrics.render();
        assert!(
            !text.contains(r#"name="alerts""#),
            "the deleted gateway's series are gone:\n{text}"
        );
        assert!(
            !text.contains("herald_operator_signing_key_age_seconds"),
            "no family without series:\n{text}"
        );
        has_lines(
            &text,
            &[r#"herald_operator_gateway_condition{namespace="web",name="chat",type="Ready",status="Unknown"} 1"#],
        );
    }

    #[test]
    fn the_backoff_counts_failures_in_a_row_per_object() {
        let metrics = Metrics::default();
        assert_eq!(metrics.failures_of("a"), 1);
        assert_eq!(metrics.failures_of("a"), 2);
        assert_eq!(metrics.failures_of("b"), 1);
        metrics.succeeded("a");
        assert_eq!(metrics.failures_of("a"), 1);
    }
}
