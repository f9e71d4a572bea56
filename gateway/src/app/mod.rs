//! Services: the engine behind both transports. Handlers and WebSocket sessions call these and
//! nothing else; these call ports and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ports::{Clock, HealthProbe, UserVerifier};

pub mod catalog;
pub mod client_session;
pub mod connections;
pub mod delivery;
pub mod dev;
pub mod keys;
pub mod metrics;
pub mod notifications;
pub mod outbox;
pub mod preferences;
pub mod sessions;
pub mod subscriptions;
pub mod tokens;

pub use connections::{ConnectRequest, ConnectionService, ConnectionSettings};
pub use sessions::{LocalSessions, SessionSettings};
pub use tokens::{IssuedToken, TokenService, TokenSettings};

/// Everything a replica serves with, shared by HTTP handlers and WebSocket sessions.
pub struct Gateway {
    pub tokens: Arc<TokenService>,
    pub connections: Arc<ConnectionService>,
    pub sessions: Arc<LocalSessions>,
    pub subscriptions: Arc<subscriptions::SubscriptionService>,
    pub preferences: Arc<preferences::PreferenceService>,
    pub notifications: Arc<notifications::NotificationService>,
    pub delivery: Arc<delivery::DeliveryService>,
    /// The channels in force (reloaded from the settings file).
    pub catalog: Arc<catalog::LiveCatalog>,
    pub metrics: Arc<metrics::Metrics>,
    pub users: Arc<dyn UserVerifier>,
    pub health: Vec<Arc<dyn HealthProbe>>,
    pub clock: Arc<dyn Clock>,
    pub session_settings: SessionSettings,
    /// Proxies whose `X-Forwarded-For` names the real client (per-IP limits behind an ingress).
    pub trusted_proxies: Vec<crate::domain::ip_range::IpRange>,
    /// Web origins that may open a WebSocket (empty: any).
    pub allowed_origins: crate::domain::origin::AllowedOrigins,
    /// Present only in dev mode: mints user JWTs for trying the gateway out.
    pub dev: Option<dev::DevTokens>,
    pub lifecycle: Lifecycle,
}

impl Gateway {
    /// Every metric in the Prometheus text format, with what the sessions and the key set hold now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(metrics::Snapshot {
            sessions: self.sessions.stats(),
            signing_keys: self.tokens.signing_keys(),
        })
    }
}

/// Draining state and the tasks that must finish before the process exits.
#[derive(Debug, Default, Clone)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    /// Cancelled when the replica starts draining: every session closes with "going away".
    pub shutdown: CancellationToken,
    /// WebSocket sessions and background work that shutdown waits for.
    pub tasks: TaskTracker,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Readiness goes false first, then sessions are told to go away.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
    }
}
