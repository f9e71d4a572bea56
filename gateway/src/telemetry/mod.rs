//! Logging and tracing. Logs: human-readable by default, JSON when asked; event names are the plan's
//! (`websocket:connected`, `websocket:disconnected`, ...), carried as the log message. Traces: off
//! unless an OTLP collector is configured ([`trace`]), then each publish is one trace from the HTTP
//! request through the store and the bus to its delivery on whichever replica holds the recipient.

pub mod trace;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

pub use trace::Tracing;

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). With `otlp` (the collector's
/// base URL), spans are exported there and JSON log lines carry their span's `trace_id`. Keep the
/// returned guard alive while serving: dropping it sends the spans still buffered.
pub fn init(format: LogFormat, otlp: Option<&url::Url>) -> Option<Tracing> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let tracing = otlp.and_then(|endpoint| match Tracing::start(endpoint) {
        Ok(tracing) => Some(tracing),
        Err(err) => {
            eprintln!("herald-gateway: traces not exported: {err}");
            None
        }
    });
    // Only the publish path's spans are exported (`trace::EXPORTED`): the other `#[instrument]` spans
    // (token issues, connects) stay log context, not traces of their own. A JSON log line lists its
    // spans' fields, so one inside a traced operation carries the root's `trace_id`.
    let otel = tracing.as_ref().map(|tracing| {
        tracing
            .layer()
            .with_filter(tracing_subscriber::filter::filter_fn(trace::is_exported))
    });
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter())
            .with(otel)
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init(),
        LogFormat::Human => tracing_subscriber::registry()
            .with(filter())
            .with(otel)
            .with(fmt.with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
    };
    // Already installed (tests start several servers in one process): keep the first.
    if result.is_ok() {
        trace::set_enabled(tracing.is_some());
    }
    tracing
}
