//! Composition and serving: builds the adapters a configuration asks for, hands them to the services,
//! serves HTTP and WebSocket on the public listener and publishing and metrics on the internal one,
//! and drains both on shutdown within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listener::ListenerLimits;

use crate::adapters::clock::SystemClock;
use crate::adapters::coalesced::CoalescedPreferences;
use crate::adapters::jwt::JwtVerifier;
use crate::adapters::memory::{MemoryConnectionRegistry, MemoryEventBus, MemoryRateLimiter, MemoryTokenLedger};
use crate::adapters::postgres::{
    self, PostgresHealth, PostgresNotificationStore, PostgresPreferenceStore, PostgresSubscriptionStore,
};
use crate::adapters::preference_cache::PreferenceCache;
use crate::adapters::redis::{Redis, RedisConnectionRegistry, RedisEventBus, RedisRateLimiter, RedisTokenLedger};
use crate::adapters::sqlite::{
    self, SqliteHealth, SqliteNotificationStore, SqlitePreferenceStore, SqliteSubscriptionStore,
};
use crate::adapters::timed::Timed;
use crate::app::catalog::LiveCatalog;
use crate::app::delivery::DeliveryService;
use crate::app::dev::DevTokens;
use crate::app::keys::SigningKeyRing;
use crate::app::metrics::{Backend, Metrics};
use crate::app::notifications::NotificationService;
use crate::app::preferences::PreferenceService;
use crate::app::sessions::Drain;
use crate::app::subscriptions::SubscriptionService;
use crate::app::{ConnectionService, Gateway, Lifecycle, LocalSessions, TokenService};
use crate::config::{self, Config, KeySource, StoreConfig};
use crate::ports::{
    Clock, ConnectionRegistry, EventBus, HealthProbe, NotificationStore, PreferenceStore, RateLimiter,
    SubscriptionStore, TokenLedger,
};

/// How often expired registrations are purged (AC8).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The adapters a configuration asks for: the only place that chooses them.
struct Backends {
    preferences: Arc<dyn PreferenceStore>,
    notifications: Arc<dyn NotificationStore>,
    subscriptions: Arc<dyn SubscriptionStore>,
    ledger: Arc<dyn TokenLedger>,
    registry: Arc<dyn ConnectionRegistry>,
    limiter: Arc<dyn RateLimiter>,
    bus: Arc<dyn EventBus>,
    health: Vec<Arc<dyn HealthProbe>>,
}

/// A store, timed into the replica's metrics (`adapters::timed`).
fn timed<S>(store: S, metrics: &Metrics, backend: Backend) -> Arc<Timed<S>> {
    Arc::new(Timed::new(Arc::new(store), metrics.backend(), backend))
}

async fn backends(store: &StoreConfig, metrics: &Metrics) -> anyhow::Result<Backends> {
    Ok(match store {
        StoreConfig::Sqlite { url } => {
            let pool = sqlite::connect(url).await.context("opening the embedded database")?;
            let notifications = SqliteNotificationStore::with_metrics(pool.clone(), metrics.backend())
                .context("starting the embedded database's writer")?;
            Backends {
                preferences: timed(SqlitePreferenceStore::new(pool.clone()), metrics, Backend::Sqlite),
                notifications: timed(notifications, metrics, Backend::Sqlite),
                subscriptions: timed(SqliteSubscriptionStore::new(pool.clone()), metrics, Backend::Sqlite),
                ledger: Arc::new(MemoryTokenLedger::default()),
                registry: Arc::new(MemoryConnectionRegistry::default()),
                limiter: Arc::new(MemoryRateLimiter::default()),
                bus: Arc::new(MemoryEventBus::default()),
                health: vec![Arc::new(SqliteHealth(pool))],
            }
        }
        StoreConfig::Cluster {
            database_url,
            redis_url,
            redis_cluster,
            redis_prefix,
            database_ca_file,
            redis_ca_file,
            max_connections,
            migrate_on_start,
        } => {
            let pool = postgres::connect(database_url.expose(), *max_connections, database_ca_file.as_deref())
                .await
                .context("connecting to PostgreSQL")?;
            if *migrate_on_start {
                postgres::migrate(&pool).await.context("applying migrations")?;
            }
            let redis = Redis::connect(
                redis_url.expose(),
                *redis_cluster,
                redis_prefix,
                redis_ca_file.as_deref(),
            )
            .await
            .context("connecting to Redis")?
            .with_metrics(metrics.backend());
            let bus = RedisEventBus::start(redis.clone());
            Backends {
                // Preferences remembered per replica, checked at each publish's commit
                // (adapters/preference_cache.rs); the reads that reach PostgreSQL share one query
                // (adapters/coalesced.rs).
                preferences: Arc::new(PreferenceCache::new(Arc::new(CoalescedPreferences::new(timed(
                    PostgresPreferenceStore::new(pool.clone()),
                    metrics,
                    Backend::Postgres,
                ))))),
                notifications: timed(
                    PostgresNotificationStore::with_metrics(pool.clone(), metrics.backend()),
                    metrics,
                    Backend::Postgres,
                ),
                subscriptions: timed(PostgresSubscriptionStore::new(pool.clone()), metrics, Backend::Postgres),
                ledger: Arc::new(RedisTokenLedger::new(redis.clone())),
                registry: Arc::new(RedisConnectionRegistry::new(redis.clone())),
                limiter: Arc::new(RedisRateLimiter::new(redis.clone())),
                bus,
                health: vec![Arc::new(PostgresHealth(pool)), Arc::new(redis)],
            }
        }
    })
}

/// Waits until `store` has every migration this binary knows, looking every `every`, for at most
/// `within` (SQLite's are applied on every open: nothing to wait for).
pub async fn await_migrations(store: &StoreConfig, every: Duration, within: Duration) -> anyhow::Result<()> {
    let StoreConfig::Cluster {
        database_url,
        database_ca_file,
        ..
    } = store
    else {
        return Ok(());
    };
    let pool = postgres::connect(database_url.expose(), 1, database_ca_file.as_deref())
        .await
        .context("connecting to PostgreSQL")?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let pending = postgres::pending_migrations(&pool).await?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(?pending, "migrations:waiting");
        anyhow::ensure!(
            tokio::time::Instant::now() + every <= deadline,
            "migrations {pending:?} still not applied after {within:?}: has the migration Job run?"
        );
        tokio::time::sleep(every).await;
    }
}

/// Applies the database migrations of `store` (SQLite's are applied on every open).
pub async fn migrate(store: &StoreConfig) -> anyhow::Result<()> {
    match store {
        StoreConfig::Sqlite { url } => {
            sqlite::connect(url).await.context("opening the embedded database")?;
        }
        StoreConfig::Cluster {
            database_url,
            database_ca_file,
            ..
        } => {
            let pool = postgres::connect(database_url.expose(), 1, database_ca_file.as_deref())
                .await
                .context("connecting to PostgreSQL")?;
            postgres::migrate(&pool).await.context("applying migrations")?;
        }
    }
    Ok(())
}

/// Builds a gateway for `config`, reading time from `clock` (the system clock when serving; tests
/// pass a clock they move).
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Gateway>> {
    let metrics = Arc::new(Metrics::default());
    let Backends {
        preferences: preference_store,
        notifications: notification_store,
        subscriptions: subscription_store,
        ledger,
        registry,
        limiter,
        bus,
        health,
    } = backends(&config.store, &metrics).await?;
    let catalog = Arc::new(LiveCatalog::new(
        config.catalog.clone(),
        config.channels_checksum.clone(),
    ));

    let lifecycle = Lifecycle::default();
    let mut ring = SigningKeyRing::new(config.signing_keys.clone());
    if let KeySource::File(path) = &config.key_source {
        let path = path.clone();
        ring = ring.with_loader(Box::new(move || match config::read_keys_file(&path) {
            Ok(keys) => Some(keys),
            Err(err) => {
                tracing::error!(error = %err, "signing-keys:reload-failed, keeping the keys in force");
                None
            }
        }));
    }
    let keys = Arc::new(ring);
    let tokens = Arc::new(TokenService::new(
        keys.clone(),
        ledger,
        limiter.clone(),
        preference_store.clone(),
        catalog.clone(),
        clock.clone(),
        config.tokens,
        bus.clone(),
        metrics.clone(),
    ));
    let connections = Arc::new(ConnectionService::new(
        tokens.clone(),
        registry.clone(),
        limiter,
        clock.clone(),
        config.connections,
        metrics.clone(),
    ));
    let sessions = Arc::new(LocalSessions::with_max_lifetime(Duration::from_millis(
        config.session.max_session_ms,
    )));
    let subscriptions = Arc::new(SubscriptionService::new(
        subscription_store,
        registry,
        catalog.clone(),
        clock.clone(),
        bus.clone(),
    ));
    let preferences = Arc::new(PreferenceService::new(preference_store, catalog.clone()));
    let delivery = Arc::new(DeliveryService::new(
        notification_store.clone(),
        subscriptions.clone(),
        sessions.clone(),
        catalog.clone(),
        bus.clone(),
        clock.clone(),
        config.delivery,
        metrics.clone(),
    ));
    let notifications = Arc::new(NotificationService {
        store: notification_store,
        preferences: preferences.clone(),
        delivery: delivery.clone(),
        bus: bus.clone(),
        catalog: catalog.clone(),
        publishers: config.publishers.clone(),
        links: config.links.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        tasks: lifecycle.tasks.clone(),
        acks_in_flight: Arc::new(tokio::sync::Semaphore::new(crate::app::notifications::ACKS_IN_FLIGHT)),
        publisher_budgets: std::sync::Mutex::default(),
    });
    let catalog_handle = catalog;
    let dev = config.dev_jwt_secret.as_ref().map(|secret| {
        DevTokens::new(
            secret.expose(),
            &config.jwt.roles_claim,
            config.jwt.issuer.clone(),
            config.jwt.audience.clone(),
        )
        .with_publisher_key(config.dev_publisher_key.as_ref().map(|key| key.expose().to_owned()))
    });
    let gateway = Arc::new(Gateway {
        tokens,
        connections,
        sessions,
        subscriptions,
        preferences,
        notifications,
        delivery: delivery.clone(),
        catalog: catalog_handle,
        metrics,
        users: Arc::new(JwtVerifier::new(config.jwt.clone(), clock.clone())),
        health,
        clock,
        session_settings: config.session,
        trusted_proxies: config.trusted_proxies.clone(),
        allowed_origins: config.allowed_origins.clone(),
        dev,
        lifecycle,
    });
    let shutdown = gateway.lifecycle.shutdown.clone();
    let settings = gateway.session_settings;
    // Heartbeat deadlines are checked ten times per timeout (1 s at most): a silent client is closed
    // at most a tenth of the timeout late.
    let sweep = Duration::from_millis((settings.heartbeat_timeout_ms / 10).clamp(10, 1_000));
    // On shutdown the sessions are sent away in waves over the first half of the grace period;
    // delivery goes on until the last wave, so that a session waiting for its wave misses nothing.
    let drain = Drain::within(
        Duration::from_millis(config.shutdown_grace_ms),
        settings.reconnect_jitter_ms,
    );
    let sent_away = CancellationToken::new();
    tokio::spawn({
        let (sessions, shutdown, sent_away) = (gateway.sessions.clone(), shutdown.clone(), sent_away.clone());
        async move {
            sessions.watch(sweep, drain, shutdown).await;
            sent_away.cancel();
        }
    });
    tokio::spawn(delivery.clone().run(bus.subscribe(), sent_away.clone()));
    tokio::spawn(delivery.clone().run_retries(sent_away.clone()));
    // Attempts counted during the waves are written too: the recorder stops after the last wave.
    gateway.lifecycle.tasks.spawn(delivery.run_attempt_recorder(sent_away));
    spawn_purger(&gateway);
    if let Some(source) = &config.channel_source {
        let (sessions, jitter_ms) = (gateway.sessions.clone(), settings.reconnect_jitter_ms);
        let reload = config::ChannelReload {
            live: gateway.catalog.clone(),
            keys: keys.clone(),
            metrics: gateway.metrics.clone(),
            clock: gateway.clock.clone(),
            on_tightened: Box::new(move |_: &[String]| sessions.renew_all("channel access changed", jitter_ms)),
        };
        tokio::spawn(config::watch_channels(
            source.clone(),
            reload,
            config::RELOAD_INTERVAL,
            gateway.lifecycle.shutdown.clone(),
        ));
    }
    if let KeySource::File(path) = &config.key_source {
        tokio::spawn(config::watch_keys_file(
            path.clone(),
            keys,
            config::RELOAD_INTERVAL,
            gateway.lifecycle.shutdown.clone(),
        ));
    }
    Ok(gateway)
}

/// Drops expired registrations (AC8) and notifications past retention, every [`PURGE_INTERVAL`].
fn spawn_purger(gateway: &Arc<Gateway>) {
    let connections = gateway.connections.clone();
    let notifications = gateway.notifications.clone();
    let shutdown = gateway.lifecycle.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    match connections.purge_expired().await {
                        Ok(0) => {}
                        Ok(purged) => tracing::info!(purged, "websocket:purged-expired"),
                        Err(err) => tracing::warn!(error = %err, "websocket:purge-failed"),
                    }
                    if let Err(err) = notifications.purge().await {
                        tracing::warn!(error = %err, "notification:purge-failed");
                    }
                }
            }
        }
    });
}

/// The public listener's router: the WebSocket endpoint and the HTTP API for users. Anything else,
/// `/api/publish` and `/metrics` included, is 404 here.
pub fn public_router(gateway: Arc<Gateway>) -> axum::Router {
    let (routes, _document) = crate::api::public_api(gateway.dev.is_some()).split_for_parts();
    finish(routes, gateway)
}

/// The internal listener's router: publishing, metrics and health.
pub fn internal_router(gateway: Arc<Gateway>) -> axum::Router {
    let (routes, _document) = crate::api::internal_api().split_for_parts();
    finish(routes, gateway)
}

/// What both listeners answer outside their routes: a JSON 404 for an unknown path, a JSON 405 (with
/// `Allow`) for a known path and another method.
fn finish(routes: axum::Router<Arc<Gateway>>, gateway: Arc<Gateway>) -> axum::Router {
    routes
        .fallback(crate::http::error::not_found)
        .method_not_allowed_fallback(crate::http::error::method_not_allowed)
        .with_state(gateway)
}

/// A replica's two bound sockets: the public one (clients) and the internal one (publishers and
/// Prometheus).
pub struct Listeners {
    pub public: TcpListener,
    pub internal: TcpListener,
}

impl Listeners {
    /// Binds `config.listen` and `config.internal_listen` (port 0 picks a free port).
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))
        };
        Ok(Self {
            public: bind(config.listen).await?,
            internal: bind(config.internal_listen).await?,
        })
    }

    /// The bound addresses, public then internal (the actual ports when port 0 was asked for).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.internal.local_addr()?))
    }
}

/// Serves both listeners until `shutdown` resolves, then drains: readiness false, sessions told to go
/// away, both listeners stop accepting and finish their requests in flight; returns when everything
/// finished or after `grace`, whichever comes first.
///
/// Each listener has its own connection cap of `limits.max_connections`: a flood of public
/// connections at the cap must not lock publishers and Prometheus out (nor a runaway publisher the
/// clients), and the internal port is reachable only from inside the cluster.
pub async fn serve(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let lifecycle = gateway.lifecycle.clone();
    gateway.metrics.set_connection_limit(limits.max_connections);
    let refused = gateway.metrics.connections_over_capacity.clone();
    // Not `lifecycle.shutdown`: a drain begun by other means (tests) must not close the listeners.
    let stop = tokio_util::sync::CancellationToken::new();
    let public = crate::listener::serve(
        listeners.public,
        public_router(gateway.clone()),
        limits,
        refused.clone(),
        stop.clone().cancelled_owned(),
    );
    let internal = crate::listener::serve(
        listeners.internal,
        internal_router(gateway),
        limits,
        refused,
        stop.clone().cancelled_owned(),
    );
    let drain = lifecycle.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("gateway:draining");
        drain.begin_drain();
        stop.cancel();
    };
    let tasks = lifecycle.tasks.clone();
    let drained = async move {
        tokio::join!(public, internal, signal);
        tasks.close();
        tasks.wait().await;
        anyhow::Ok(())
    };
    let deadline = async {
        lifecycle.shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = drained => result?,
        () = deadline => tracing::warn!(grace_ms = grace.as_millis() as u64, "gateway:drain-deadline-passed"),
    }
    tracing::info!("gateway:stopped");
    Ok(())
}

/// A gateway serving in the background: for tests and embedding.
pub struct RunningGateway {
    /// The public listener's address.
    pub addr: SocketAddr,
    /// The internal listener's address (`/api/publish`, `/metrics`).
    pub internal_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningGateway {
    /// Binds `config.listen` and `config.internal_listen` (port 0 picks a free port), builds and
    /// serves.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`RunningGateway::start`], with time read from `clock`.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config).await?;
        let (addr, internal_addr) = listeners.local_addrs()?;
        let gateway = build(&config, clock).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = stop.clone();
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let task = tokio::spawn(serve(
            listeners,
            gateway.clone(),
            config.listener,
            async move { signal.cancelled().await },
            grace,
        ));
        Ok(Self {
            addr,
            internal_addr,
            gateway,
            stop,
            task,
        })
    }

    /// Drains as SIGTERM would and waits for the server to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "gateway:shutdown-requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "gateway:shutdown-requested"),
    }
}
