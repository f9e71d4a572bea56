//! The `herald-operator` binary against the test kube-apiserver: it elects a leader through a Lease,
//! serves `/healthz` and `/metrics`, reconciles a gateway it was never told about directly (through its
//! watches), records events, a second replica follows instead of reconciling, and a leader that loses
//! the lease exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_operator::crd::{NotificationChannel, NotificationGateway};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;

/// Held by each test for its whole run. A cluster-wide operator (the leader test's) reconciles every
/// namespace, so one running beside the namespace-scoped test would reconcile the gateway that test
/// proves is left alone.
static ONE_OPERATOR_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running operator and the lines it has logged so far (JSON, one event a line).
struct Operator {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    /// How many logged lines are the event `message`.
    fn logged(&self, message: &str) -> usize {
        let needle = format!("\"message\":\"{message}\"");
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn operator_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors().nth(2).expect("target dir").join("herald-operator")
}

fn start_operator(namespace: &str, pod: &str, port: u16, env: &[(&str, &str)]) -> Operator {
    let mut child = Command::new(operator_binary())
        .env("HERALD_OPERATOR_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("POD_NAMESPACE", namespace)
        .env("POD_NAME", pod)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald-operator starts (built by scripts/test)");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    // Read until the process ends, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            sink.lock().expect("logs").push(line);
        }
    });
    Operator { child, logs }
}

/// Waits (at most 30 s) for `operator` to exit, and returns how it did.
async fn exit_of(operator: &mut Operator, who: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = operator.child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let logs = operator.logs.lock().expect("logs");
            let tail = logs.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n");
            panic!("timed out waiting for {who} to exit; its last lines:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms for up to 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client of the test apiserver with the CRDs installed, or `None` (loudly) when none runs.
async fn client() -> Option<Client> {
    herald_e2e::service_url("KUBECONFIG")?;
    let client = Client::try_default().await.expect("client");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in [
        NotificationGateway::crd(),
        herald_operator::crd::NotificationChannel::crd(),
    ] {
        let name = kube::ResourceExt::name_any(&crd);
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("herald-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .expect("CRD");
    }
    Some(client)
}

async fn create_namespace(client: &Client, namespace: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
}

/// An embedded gateway with the default image and no Secrets: one the operator renders.
async fn create_gateway(client: &Client, namespace: &str, name: &str) {
    let gateway: NotificationGateway = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway", "metadata": {"name": name},
        "spec": {"replicas": 1, "auth": {"jwksUrl": "https://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}
    }))
    .expect("gateway");
    Api::<NotificationGateway>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &gateway)
        .await
        .expect("gateway created");
}

#[tokio::test]
async fn an_operator_watching_one_namespace_reconciles_there_and_nowhere_else() {
    let _alone = ONE_OPERATOR_AT_A_TIME.lock().await;
    let Some(client) = client().await else { return };
    let watched = herald_e2e::unique_name("opw");
    let other = herald_e2e::unique_name("opo");
    create_namespace(&client, &watched).await;
    create_namespace(&client, &other).await;
    let port = herald_e2e::free_port();
    let _operator = start_operator(
        &watched,
        "operator-w",
        port,
        &[("HERALD_OPERATOR_WATCH_NAMESPACES", watched.as_str())],
    );
    // The unwatched gateway first: once the watched one is reconciled, a cluster-wide operator would
    // have reconciled this one too.
    create_gateway(&client, &other, "ignored").await;
    create_gateway(&client, &watched, "served").await;
    // Its status is written last, after every child.
    let served = Api::<NotificationGateway>::namespaced(client.clone(), &watched);
    eventually("the watched namespace's gateway", || async {
        served
            .get_status("served")
            .await
            .is_ok_and(|g| g.status.is_some_and(|s| s.observed_generation.is_some()))
    })
    .await;
    let config = |ns: &str, name: &str| {
        let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
        let name = format!("{name}-config");
        async move { api.get_opt(&name).await.expect("get") }
    };
    assert!(config(&watched, "served").await.is_some());
    let ignored = Api::<NotificationGateway>::namespaced(client.clone(), &other)
        .get_status("ignored")
        .await
        .expect("gateway");
    assert!(ignored.status.is_none(), "never reconciled: {:?}", ignored.status);
    assert!(config(&other, "ignored").await.is_none(), "no child either");
}

#[tokio::test]
async fn the_operator_leads_serves_metrics_reconciles_through_its_watches_and_exits_when_it_loses_the_lease() {
    let _alone = ONE_OPERATOR_AT_A_TIME.lock().await;
    let Some(client) = client().await else { return };
    let namespace = herald_e2e::unique_name("op");
    create_namespace(&client, &namespace).await;

    let port = herald_e2e::free_port();
    let leader = start_operator(&namespace, "operator-a", port, &[]);
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/healthz");
    eventually("/healthz", || async {
        http.get(&health).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = || async {
        leases
            .get_opt("herald-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    eventually("the lease", || async {
        holder().await.as_deref() == Some("operator-a")
    })
    .await;
    eventually("the leader's controllers", || async {
        leader.logged("operator:started") == 1
    })
    .await;
    assert_eq!(leader.logged("leader:elected"), 1);

    // A second replica follows, serving /healthz meanwhile: it finds the lease held, and again when it
    // looks a second time, and the lease stays with the first.
    let follower_port = herald_e2e::free_port();
    let follower = start_operator(&namespace, "operator-b", follower_port, &[]);
    let follower_health = format!("http://127.0.0.1:{follower_port}/healthz");
    eventually("the follower's /healthz", || async {
        http.get(&follower_health).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    eventually("the follower to follow twice", || async {
        follower.logged("leader:following") >= 2
    })
    .await;
    assert_eq!(holder().await.as_deref(), Some("operator-a"));
    assert_eq!(follower.logged("leader:elected"), 0);

    // The leader reconciles a gateway as soon as it appears.
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &namespace);
    create_gateway(&client, &namespace, "watched").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    eventually("the ConfigMap", || async {
        config_maps.get_opt("watched-config").await.ok().flatten().is_some()
    })
    .await;
    eventually("status", || async {
        gateways
            .get_status("watched")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| s.observed_generation.is_some())
    })
    .await;

    let scrape = |port: u16| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("metrics");
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; version=0.0.4; charset=utf-8"
            );
            let text = response.text().await.expect("text");
            // The gateway controller's reconciles, whatever their result.
            let reconciles: u64 = text
                .lines()
                .filter(|l| l.starts_with(r#"controller_runtime_reconcile_total{controller="notificationgateway","#))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum();
            (reconciles, text)
        }
    };
    let (reconciles, metrics) = scrape(port).await;
    assert!(reconciles >= 1, "{metrics}");
    for line in [
        "# TYPE controller_runtime_reconcile_errors_total counter",
        "# TYPE controller_runtime_reconcile_time_seconds histogram",
        "# TYPE controller_runtime_active_workers gauge",
        "# TYPE workqueue_retries_total counter",
        "# TYPE workqueue_work_duration_seconds histogram",
        r#"leader_election_master_status{name="herald-operator"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"controller_runtime_reconcile_time_seconds_count{controller="notificationgateway"}"#),
        "{metrics}"
    );
    // The gateway's Ready condition, from the leader's cache (which the status write reaches by watch).
    let ready = format!(r#"herald_operator_gateway_condition{{namespace="{namespace}",name="watched",type="Ready","#);
    eventually("the gateway's conditions in /metrics", || async {
        scrape(port)
            .await
            .1
            .lines()
            .any(|l| l.starts_with(&ready) && l.ends_with(" 1"))
    })
    .await;
    let (follower_reconciles, follower_metrics) = scrape(follower_port).await;
    assert_eq!(follower_reconciles, 0, "the follower does not reconcile");
    assert!(
        follower_metrics
            .lines()
            .any(|l| l == r#"leader_election_master_status{name="herald-operator"} 0"#),
        "{follower_metrics}"
    );

    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    eventually("an event about the gateway", || async {
        events.list(&ListParams::default()).await.is_ok_and(|list| {
            list.items
                .iter()
                .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("watched"))
        })
    })
    .await;

    // A channel of the gateway is accepted; once the gateway is deleted, it says so (the channel
    // controller watches gateways too).
    let channels: Api<NotificationChannel> = Api::namespaced(client.clone(), &namespace);
    let channel: NotificationChannel = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel", "metadata": {"name": "social"},
        "spec": {"gatewayRef": {"name": "watched"}, "types": ["new_like"]}
    }))
    .expect("channel");
    channels
        .create(&PostParams::default(), &channel)
        .await
        .expect("channel");
    let accepted = || async {
        channels
            .get_status("social")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Accepted"))
            .map(|c| (c.status, c.reason))
    };
    eventually("the channel accepted", || async {
        accepted().await == Some(("True".into(), "Accepted".into()))
    })
    .await;
    gateways
        .delete("watched", &Default::default())
        .await
        .expect("delete the gateway");
    eventually("the channel no longer accepted", || async {
        accepted().await == Some(("False".into(), "GatewayNotFound".into()))
    })
    .await;

    // The lease handed to the follower, as if the leader had been partitioned away: the leader exits
    // (non-zero) at its next renewal, and the follower leads.
    eventually("the lease handed over", || async {
        let Ok(mut lease) = leases.get("herald-operator").await else {
            return false;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = Some("operator-b".into());
        }
        // A conflict (the leader renewed meanwhile) is tried again.
        leases
            .replace("herald-operator", &PostParams::default(), &lease)
            .await
            .is_ok()
    })
    .await;
    eventually("the follower to lead", || async {
        follower.logged("leader:elected") == 1
    })
    .await;
    let mut leader = leader;
    assert!(!exit_of(&mut leader, "the leader").await.success());
    assert_eq!(leader.logged("leader:lost, stopping"), 1);
}

/// Short election timings for the tests below: a 6 s lease, a 4 s renew deadline, a 1 s retry.
const FAST_ELECTION: [(&str, &str); 3] = [
    ("HERALD_OPERATOR_LEASE_DURATION_SECONDS", "6"),
    ("HERALD_OPERATOR_RENEW_DEADLINE_SECONDS", "4"),
    ("HERALD_OPERATOR_RETRY_PERIOD_SECONDS", "1"),
];

#[tokio::test]
async fn a_paused_leader_never_acts_beside_the_one_that_took_over_and_a_stopped_one_hands_over_at_once() {
    let _alone = ONE_OPERATOR_AT_A_TIME.lock().await;
    let Some(client) = client().await else { return };
    let namespace = herald_e2e::unique_name("opp");
    create_namespace(&client, &namespace).await;
    // Each operator reconciles this namespace only: the test apiserver holds every other test's
    // gateways, whose reconciles a graceful stop would wait for.
    let mut env = FAST_ELECTION.to_vec();
    env.push(("HERALD_OPERATOR_WATCH_NAMESPACES", namespace.as_str()));
    let a = start_operator(&namespace, "operator-a", herald_e2e::free_port(), &env);
    eventually("a to lead", || async { a.logged("leader:elected") == 1 }).await;
    let b = start_operator(&namespace, "operator-b", herald_e2e::free_port(), &env);
    eventually("b to follow", || async { b.logged("leader:following") >= 1 }).await;
    create_gateway(&client, &namespace, "paused").await;
    eventually("a to reconcile", || async { a.logged("gateway:reconciling") >= 1 }).await;

    // The leader freezes (a paused VM, a long GC, SIGSTOP): b takes over once the lease record has
    // not changed for 6 s on b's own clock, and reconciles a change made meanwhile.
    herald_e2e::signal(a.child.id(), "STOP");
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &namespace);
    let change = json!({"spec": {"tokenTtlSeconds": 30}});
    gateways
        .patch(
            "paused",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&change),
        )
        .await
        .expect("a change while a is frozen");
    eventually("b to lead", || async { b.logged("leader:elected") == 1 }).await;
    eventually("b to reconcile", || async { b.logged("gateway:reconciling") >= 1 }).await;

    // a resumes long past its 4 s renew deadline: it stops at once, without another reconcile.
    // Lines are compared by their own timestamps: a line being written at the SIGSTOP may reach
    // the pipe only after the SIGCONT, though the reconcile it reports began before.
    let resumed_at = k8s_openapi::jiff::Timestamp::now();
    herald_e2e::signal(a.child.id(), "CONT");
    let mut a = a;
    assert!(!exit_of(&mut a, "a").await.success());
    // Its deadline timer, or the renewal it had in flight (answered: b holds the lease), stops it.
    assert_eq!(
        a.logged("leader:deadline-passed, stopping") + a.logged("leader:lost, stopping"),
        1
    );
    let after_resume: Vec<String> = a
        .logs
        .lock()
        .expect("logs")
        .iter()
        .filter(|line| line.contains("\"message\":\"gateway:reconciling\""))
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["timestamp"].as_str()?.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .is_some_and(|at| at >= resumed_at)
        })
        .cloned()
        .collect();
    assert!(
        after_resume.is_empty(),
        "a reconciled after it resumed: {after_resume:#?}"
    );

    // b stops cleanly (SIGTERM): it releases the lease, and c leads at its next look, well before
    // the 6 s a lease record must otherwise stay unchanged.
    let c = start_operator(&namespace, "operator-c", herald_e2e::free_port(), &env);
    eventually("c to follow", || async { c.logged("leader:following") >= 1 }).await;
    let stopped = Instant::now();
    herald_e2e::signal(b.child.id(), "TERM");
    let mut b = b;
    let status = exit_of(&mut b, "b").await;
    assert!(
        status.success(),
        "a clean stop: {status:?}\n{}",
        b.logs.lock().expect("logs").join("\n")
    );
    eventually("c to lead", || async { c.logged("leader:elected") == 1 }).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the released lease was taken in {:?}",
        stopped.elapsed()
    );
    assert_eq!(b.logged("leader:released"), 1);
}

/// A series a PromQL expression reads: its metric name, and what its equality matchers on literal
/// values (`name{label="value"}`) ask of its labels. Regex and negative matchers, and values naming a
/// Grafana variable (`$namespace`), ask nothing checkable here.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

/// The series a PromQL expression reads: Herald's own, controller-runtime's and client-go's (every
/// series the dashboard and the alerts use has one of these prefixes).
fn series_read_by(expr: &str) -> Vec<Selector> {
    const PREFIXES: [&str; 4] = ["herald_", "controller_runtime_", "workqueue_", "leader_election_"];
    let mut selectors = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && PREFIXES.iter().any(|p| expr[i..].starts_with(p)) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let (matchers, braces) = matchers(&expr[end..]);
            let labels = matchers
                .into_iter()
                .filter(|(_, operator, value)| operator == "=" && !value.contains('$'))
                .map(|(label, _, value)| (label, value))
                .collect();
            selectors.push(Selector {
                name: expr[i..end].to_owned(),
                labels,
            });
            i = end + braces;
        } else {
            i += 1;
        }
    }
    selectors
}

/// The label matchers in the braces `text` starts with (`{a="x", b=~"y"}`), as (label, operator,
/// value), and how many bytes the braces take; none and 0 when `text` starts with no braces. A
/// scraped series' labels (`{a="x",b="y"}`) read the same way, with `=` each.
fn matchers(text: &str) -> (Vec<(String, String, String)>, usize) {
    let Some(mut rest) = text.strip_prefix('{') else {
        return (Vec::new(), 0);
    };
    let mut found = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(after) = rest.strip_prefix('}') {
            return (found, text.len() - after.len());
        }
        let label_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("a label matcher in {text:?}"));
        let label = rest[..label_end].to_owned();
        rest = rest[label_end..].trim_start();
        let operator = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|operator| rest.starts_with(operator))
            .unwrap_or_else(|| panic!("a matcher's operator in {text:?}"));
        rest = rest[operator.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))
            .unwrap_or_else(|| panic!("a quoted value in {text:?}"));
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let close = loop {
            match chars.next() {
                Some((_, '\\')) if quote != '`' => value.extend(chars.next().map(|(_, c)| c)),
                Some((at, c)) if c == quote => break at,
                Some((_, c)) => value.push(c),
                None => panic!("an unterminated value in {text:?}"),
            }
        };
        found.push((label, operator.to_owned(), value));
        rest = &rest[1 + close + 1..];
    }
}

/// The label sets of each series of a scrape, by the series' name as exported (a histogram's
/// `_bucket`, `_sum` and `_count` apart).
fn series_labels(text: &str) -> std::collections::BTreeMap<String, Vec<Vec<(String, String)>>> {
    let mut series: std::collections::BTreeMap<String, Vec<Vec<(String, String)>>> = Default::default();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = matchers(&line[name_end..])
            .0
            .into_iter()
            .map(|(label, _, value)| (label, value))
            .collect();
        series.entry(line[..name_end].to_owned()).or_default().push(labels);
    }
    series
}

/// Whether some series of `selector`'s name has every label value its equality matchers ask for.
fn has_series_for(
    selector: &Selector,
    series: &std::collections::BTreeMap<String, Vec<Vec<(String, String)>>>,
) -> bool {
    series.get(&selector.name).is_some_and(|sets| {
        sets.iter()
            .any(|labels| selector.labels.iter().all(|wanted| labels.contains(wanted)))
    })
}

/// Each `# TYPE <name> <type>` of a scrape, as name -> type.
fn exported(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Whether `name` (as a query writes it) is a series of `types`: a histogram's `_bucket`, `_sum` and
/// `_count` belong to the histogram.
fn is_exported(name: &str, types: &std::collections::BTreeMap<String, String>) -> bool {
    types.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| types.get(base).is_some_and(|kind| kind == "histogram"))
        })
}

/// Issue 14: every series the Grafana dashboard and the alerts query is one a live gateway or the
/// leading operator exports (scraped from the binaries, after a gateway was reconciled so that the
/// per-gateway series exist), and every literal label value they ask for (`reason="slow_consumer"`)
/// is one of its series' values. The gateways are an embedded one and a cluster-mode one, so every
/// backend's series are seen. A renamed metric or label value fails here, not on a platform team's
/// empty panel.
#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_series_the_binaries_export() {
    let _alone = ONE_OPERATOR_AT_A_TIME.lock().await;
    let Some(client) = client().await else { return };
    let Some(cluster) = herald_e2e::cluster::Cluster::new(None) else {
        return;
    };
    let namespace = herald_e2e::unique_name("mon");
    create_namespace(&client, &namespace).await;
    let port = herald_e2e::free_port();
    let _operator = start_operator(
        &namespace,
        "operator-m",
        port,
        &[("HERALD_OPERATOR_WATCH_NAMESPACES", namespace.as_str())],
    );
    create_gateway(&client, &namespace, "scraped").await;
    let http = reqwest::Client::new();
    let operator_metrics = || {
        let http = http.clone();
        async move {
            let answer = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?;
            answer.text().await.ok()
        }
    };
    // The per-gateway series appear once the gateway has a status with keys and a rotation time.
    eventually("the operator's per-gateway series", || async {
        operator_metrics().await.is_some_and(|text| {
            text.contains("herald_operator_signing_key_next_rotation_timestamp_seconds{")
                && text.contains("herald_operator_gateway_condition{")
                && text.contains("leader_election_master_status{name=\"herald-operator\"} 1")
        })
    })
    .await;
    // The embedded gateway (SQLite) and a cluster-mode one (PostgreSQL and Redis): each exports the
    // series of its own backends.
    let scrapes = [
        operator_metrics().await.expect("operator metrics"),
        herald_e2e::GatewayProcess::start(&["--dev"], &[]).metrics().await,
        cluster.replica(&[]).metrics().await,
    ];
    let mut types = std::collections::BTreeMap::new();
    let mut series: std::collections::BTreeMap<String, Vec<Vec<(String, String)>>> = Default::default();
    for scrape in &scrapes {
        types.extend(exported(scrape));
        for (name, sets) in series_labels(scrape) {
            series.entry(name).or_default().extend(sets);
        }
    }
    assert!(
        ["sqlite", "postgres", "redis"].iter().all(|backend| {
            has_series_for(
                &Selector {
                    name: "herald_backend_errors_total".into(),
                    labels: vec![("backend".into(), (*backend).into())],
                },
                &series,
            )
        }),
        "every backend's series were scraped: {:?}",
        series.get("herald_backend_errors_total")
    );

    let chart = format!(
        "{}/../charts/herald-operator/files",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{chart}/grafana-dashboard.json")).expect("dashboard"))
            .expect("JSON");
    let rules: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(format!("{chart}/prometheus-rules.yaml")).expect("rules"))
            .expect("YAML");
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            queries.push((format!("panel {:?}", panel["title"]), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["definition"].as_str() {
            queries.push((format!("variable {:?}", variable["name"]), query.to_owned()));
        }
    }
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            queries.push((format!("alert {:?}", rule["alert"]), expr.to_owned()));
        }
    }
    assert!(
        queries.len() > 20,
        "the dashboard and the alerts were read: {queries:?}"
    );
    let missing: Vec<String> = queries
        .iter()
        .flat_map(|(whose, expr)| {
            series_read_by(expr)
                .into_iter()
                .filter(|selector| !is_exported(&selector.name, &types))
                .map(move |selector| format!("{whose}: {}", selector.name))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "queried but exported by neither binary: {missing:#?}"
    );
    // A label value no series has (a renamed reason, an operation never declared) is an empty panel
    // or an alert that cannot fire, as much as a renamed metric. Fixed label sets start at zero, so
    // their series exist from the start.
    let unmatched: Vec<String> = queries
        .iter()
        .flat_map(|(whose, expr)| {
            series_read_by(expr)
                .into_iter()
                .filter(|selector| !selector.labels.is_empty() && !has_series_for(selector, &series))
                .map(move |selector| format!("{whose}: {} {:?}", selector.name, selector.labels))
        })
        .collect();
    assert!(
        unmatched.is_empty(),
        "queried label values no exported series has: {unmatched:#?}"
    );
    let read = series_read_by(
        r#"rate(herald_a_total{namespace=~"$namespace", reason="slow", kind!="x"}[5m]) / on() herald_b_bucket{le='0.5',pod="$pod"}"#,
    );
    assert_eq!(
        read,
        [
            Selector {
                name: "herald_a_total".into(),
                labels: vec![("reason".into(), "slow".into())],
            },
            Selector {
                name: "herald_b_bucket".into(),
                labels: vec![("le".into(), "0.5".into())],
            },
        ],
        "the reader finds names and literal equality matchers"
    );
}
