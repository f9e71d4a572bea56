//! OpenTelemetry traces, off unless a collector is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`): spans
//! are exported over OTLP/HTTP (protobuf, or JSON with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) from a
//! background thread, in batches. One publish is one trace: `publish` (the request, the root: its span
//! is `NotificationService::publish`'s), `store.publish`
//! (until its commit), `bus.publish` (the fan-out event), and on every replica that delivers it,
//! `deliver`, whose parent travels in the bus event as a W3C `traceparent`. The standard `OTEL_*`
//! variables (service name, resource attributes, sampler, batch delays) apply.
//!
//! Off, the span helpers return `Span::none()`: no span is made per request or per notification.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The spans exported: the publish path's. Every other span stays log context only.
pub const EXPORTED: [&str; 4] = ["publish", "store.publish", "bus.publish", "deliver"];

/// Whether the span or event `meta` describes is exported (events inside exported spans are
/// attached to them as span events).
pub(super) fn is_exported(meta: &tracing::Metadata<'_>) -> bool {
    !meta.is_span() || EXPORTED.contains(&meta.name())
}

pub(super) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether spans are exported (a collector is configured and the subscriber installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter; dropping it sends what is still buffered and stops its thread.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports to the OTLP/HTTP collector at `endpoint` (its base URL: `/v1/traces` is appended).
    pub(super) fn start(endpoint: &url::Url) -> Result<Self, String> {
        let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces)
            .build()
            .map_err(|err| err.to_string())?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("herald-gateway");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Self { provider })
    }

    pub(super) fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("herald-gateway"))
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("herald-gateway: traces not all sent: {err}");
        }
    }
}

/// Records the span's trace id as its `trace_id` field (which it must declare), so that log lines
/// inside it name the trace. Nothing when tracing is off.
pub fn record_trace_id(span: &Span) {
    if !enabled() {
        return;
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", trace_id.to_string());
    }
}

fn with_trace_id(span: Span) -> Span {
    record_trace_id(&span);
    span
}

/// A publish's write, until its commit (a child of the current span).
pub fn store_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!("store.publish")
}

/// A publish's event on the bus (a child of the current span).
pub fn bus_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!("bus.publish")
}

/// The current span's context as a W3C `traceparent`, to travel with the bus event; `None` when
/// tracing is off.
pub fn traceparent() -> Option<Arc<str>> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent").map(Arc::from)
}

/// The delivery of a published notification on this replica, continuing the publish's trace.
pub fn deliver_span(traceparent: Option<&str>) -> Span {
    let (true, Some(traceparent)) = (enabled(), traceparent) else {
        return Span::none();
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let span = tracing::info_span!("deliver", trace_id = tracing::field::Empty);
    // A malformed traceparent (from another version, or garbage on the bus) starts a new trace.
    let _ = span.set_parent(parent);
    with_trace_id(span)
}
