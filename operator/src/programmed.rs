//! Whether a gateway's replicas serve the channel set the operator rendered: the channels'
//! `Programmed` condition (as in the Gateway API: accepted is not the same as live). Gateways reload
//! channels from their mounted ConfigMap, which kubelet refreshes within about a minute, so the
//! operator asks each ready replica: the ready addresses of the `<gw>-internal` Service (its
//! EndpointSlices), `GET /channels` on the internal port, and a comparison of the reported checksum
//! with the one written on the ConfigMap.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Longest a replica may take to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most replicas asked (a gateway has at most 100).
pub const MAX_PROBED: usize = 100;

/// The label Kubernetes' EndpointSlice controller puts on the slices it maintains (from the
/// Service's selector): slices someone else wrote, naming any address, are not asked.
pub const MANAGED_BY_CONTROLLER: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);

/// The ready endpoints of the port named `port` in `slices`, deduplicated and bounded.
pub fn ready_endpoints(slices: &[EndpointSlice], port: &str) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    for slice in slices {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Ready unless said otherwise (the API's own rule for a missing `ready`).
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    let addr = SocketAddr::new(ip, number);
                    if !found.contains(&addr) {
                        found.push(addr);
                    }
                }
            }
        }
    }
    found.truncate(MAX_PROBED);
    found
}

/// Most bytes of a `/channels` answer read (the checksum and a few names fit in far less).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTP client of the probes: no redirects (a replica answers itself or not at all).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROBE_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// Asks each replica which channel set it serves; `None` for one that did not answer in time,
/// answered something else, or more than [`MAX_ANSWER_BYTES`].
pub async fn probe(http: &reqwest::Client, replicas: &[SocketAddr]) -> Vec<Option<String>> {
    join_all(replicas.iter().map(|addr| async move {
        let mut response = http
            .get(format!("http://{addr}/channels"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER_BYTES {
                return None;
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&body).ok()?;
        body.get("checksum")?.as_str().map(str::to_owned)
    }))
    .await
}

/// The `Programmed` condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub programmed: bool,
    pub reason: &'static str,
    pub message: String,
}

/// `Programmed` once every ready replica (at least one) reports the `expected` channel set.
pub fn verdict(expected: &str, reports: &[Option<String>]) -> Verdict {
    let serving = reports.iter().filter(|r| r.as_deref() == Some(expected)).count();
    let total = reports.len();
    if total == 0 {
        return Verdict {
            programmed: false,
            reason: "NoReadyReplicas",
            message: "no gateway replica is ready to serve it yet".to_owned(),
        };
    }
    if serving == total {
        return Verdict {
            programmed: true,
            reason: "Programmed",
            message: format!("served by {serving} of {total} ready replicas"),
        };
    }
    let unanswered = reports.iter().filter(|r| r.is_none()).count();
    Verdict {
        programmed: false,
        reason: "Pending",
        message: format!(
            "{serving} of {total} ready replicas serve the current channel set ({unanswered} did not answer); kubelet refreshes the mounted ConfigMap within about a minute"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(port: (&str, i32), endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "addressType": "IPv4",
            "ports": [{"name": port.0, "port": port.1}],
            "endpoints": endpoints.iter().map(|(ip, ready)| serde_json::json!({
                "addresses": [ip], "conditions": ready.map(|r| serde_json::json!({"ready": r})),
            })).collect::<Vec<_>>(),
        }))
        .expect("slice")
    }

    #[test]
    fn only_ready_endpoints_of_the_named_port_are_asked_once_each() {
        let slices = [
            slice(
                ("internal", 9090),
                &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false)), ("10.0.0.3", None)],
            ),
            slice(("internal", 9090), &[("10.0.0.1", Some(true))]),
            slice(("http", 8080), &[("10.0.0.9", Some(true))]),
        ];
        let found: Vec<String> = ready_endpoints(&slices, "internal")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["10.0.0.1:9090", "10.0.0.3:9090"]);
    }

    #[test]
    fn programmed_once_every_ready_replica_reports_the_set() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(verdict("a", &[]).reason, "NoReadyReplicas");
        assert!(verdict("a", &[some("a"), some("a")]).programmed);
        let pending = verdict("a", &[some("a"), some("b"), None]);
        assert!(!pending.programmed);
        assert_eq!(pending.reason, "Pending");
        assert!(
            pending.message.starts_with("1 of 3 ready replicas"),
            "{}",
            pending.message
        );
    }
}
