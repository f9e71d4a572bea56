//! Polling a mounted file for changes. Kubernetes updates a mounted ConfigMap or Secret by
//! repointing a `..data` symlink, and the new file can carry the old one's mtime: the content is
//! compared, not the modification time.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Every `every` until `shutdown`, reads `path` and calls `changed` when its content differs from
/// the last content `changed` accepted (returned `true` for). Nothing is accepted before the first
/// tick, so a change between the caller's first read (at start-up) and this task's start is not
/// missed; a `false` makes the next tick call again with the same content.
pub async fn on_change(path: &Path, every: Duration, shutdown: CancellationToken, mut changed: impl FnMut() -> bool) {
    let mut seen = None;
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                let now = std::fs::read(path).ok();
                if now == seen {
                    continue;
                }
                seen = if changed() { now } else { None };
            }
        }
    }
}
