//! How the gateway connects to Redis: one server or a Redis Cluster (its seed nodes), the command
//! connection every adapter shares, and the bus's subscription connection (`subscriber`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use super::subscriber::{self, Subscriber};
use crate::error::{Error, Result};

/// The command connection: one multiplexed connection to a single server, or the Cluster client's,
/// which routes each command to the primary of its key's slot.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A `PING` answered by one node. On a Cluster the client sends a keyless `PING` to every
    /// primary and fails if any of them fails; this one goes to a node picked at random, so that it
    /// asks whether this replica reaches the Cluster, not whether every slot is served now (the
    /// readiness probe's question: docs/architecture.md, "Readiness asks one node of a Cluster").
    pub(super) async fn ping_one_node(&mut self) -> RedisResult<Value> {
        let ping = redis::cmd("PING");
        match self {
            Connection::Single(c) => c.req_packed_command(&ping).await,
            Connection::Cluster(c) => {
                c.route_command(&ping, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is: the URLs, whether they name a Cluster, and the CA to verify it with.
pub(super) struct Target {
    pub(super) seeds: Vec<redis::ConnectionInfo>,
    pub(super) cluster: bool,
    pub(super) certificates: Option<redis::TlsCertificates>,
}

impl Target {
    /// A command connection: RESP3, reconnecting by itself.
    pub(super) async fn open(&self) -> Result<Connection> {
        let unreachable = |e: redis::RedisError| Error::Unavailable(format!("cannot connect to Redis: {e}"));
        if self.cluster {
            return Ok(Connection::Cluster(self.connect_cluster(None).await?));
        }
        let client = self.client()?;
        // One plain connection first, bounded: the connection manager retries a failing handshake
        // (a certificate another CA signed) without end, where starting must fail and say why.
        let first = tokio::time::timeout(CONNECT_WITHIN, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| Error::Unavailable("cannot connect to Redis: no answer within 5 s".into()))?
            .map_err(unreachable)?;
        drop(first);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_WITHIN)
            .set_response_timeout(COMMAND_WITHIN)
            .set_number_of_retries(2)
            // The crate's default factor (100) multiplies a 1 s first delay: its second reconnect
            // attempt came 100 s later, and every command waited for it (a PING to a Redis just
            // restarted took 118 s). At most a second between attempts.
            .set_max_delay(1_000);
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unreachable)?;
        Ok(Connection::Single(manager))
    }

    /// The subscription connection, passing what Redis pushes (and the word that a connection was
    /// lost) to `pushes`.
    pub(super) async fn open_subscriber(&self, pushes: mpsc::UnboundedSender<PushInfo>) -> Result<Subscriber> {
        if self.cluster {
            return Ok(Subscriber::Cluster(self.connect_cluster(Some(pushes)).await?));
        }
        Ok(Subscriber::Single(Box::new(subscriber::Single::new(
            self.client()?,
            pushes,
        ))))
    }

    /// A connection of the Cluster client, bounded by [`CONNECT_WITHIN`].
    async fn connect_cluster(&self, pushes: Option<mpsc::UnboundedSender<PushInfo>>) -> Result<ClusterConnection> {
        let client = self.cluster_client(pushes)?;
        tokio::time::timeout(CONNECT_WITHIN, client.get_async_connection())
            .await
            .map_err(|_| Error::Unavailable("cannot connect to the Redis Cluster: no answer within 5 s".into()))?
            .map_err(|e| Error::Unavailable(format!("cannot connect to Redis: {e}")))
    }

    fn client(&self) -> Result<redis::Client> {
        let seed = self.seeds[0].clone();
        match &self.certificates {
            Some(certificates) => redis::Client::build_with_tls(seed, certificates.clone()),
            None => redis::Client::open(seed),
        }
        .map_err(|e| Error::Backend(format!("invalid REDIS_URL: {e}")))
    }

    fn cluster_client(&self, pushes: Option<mpsc::UnboundedSender<PushInfo>>) -> Result<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.seeds.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(COMMAND_WITHIN)
            .response_timeout(COMMAND_WITHIN);
        if let Some(pushes) = pushes {
            builder = builder.push_sender(pushes);
        }
        if let Some(certificates) = &self.certificates {
            builder = builder.certs(certificates.clone());
        }
        builder
            .build()
            .map_err(|e| Error::Backend(format!("invalid REDIS_URL: {e}")))
    }
}

/// How long starting waits for Redis to answer, and each command afterwards.
pub(super) const CONNECT_WITHIN: Duration = Duration::from_secs(5);
pub(super) const COMMAND_WITHIN: Duration = Duration::from_secs(2);
