//! Logging: human-readable by default, JSON when asked. Event names are the plan's
//! (`websocket:connected`, `websocket:disconnected`, ...), carried as the log message.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Human => builder.with_ansi(std::io::stdout().is_terminal()).try_init(),
    };
    // Already installed (tests start several servers in one process): keep the first.
    let _ = result;
}
