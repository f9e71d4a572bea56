//! The bus's subscription connection, apart from the one that carries every other command (see
//! `Redis::connect`): what Redis pushes on it (sharded messages, ended subscriptions) and the word
//! that it was lost reach the bus through the push channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Mutex, mpsc};

use super::timed::Timed;
use crate::app::metrics::BackendMetrics;

/// How long a subscription command may take before it counts as failed (and is retried).
const WITHIN: Duration = Duration::from_secs(2);

pub(super) enum Subscriber {
    /// One server: a multiplexed connection of our own, replaced after any failure, and its loss
    /// told to the bus at once. (The crate's connection manager reconnects at its own pace and
    /// wedged here: after Redis had been gone for a few seconds its subscription commands never
    /// answered, even once Redis was back.)
    Single(Box<Single>),
    /// A Redis Cluster: the Cluster client, which reconnects and follows moved slots by itself.
    Cluster(ClusterConnection),
}

pub(super) struct Single {
    client: redis::Client,
    pushes: mpsc::UnboundedSender<PushInfo>,
    /// The connection in use and its generation (a failure replaces only the one that failed).
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
    /// When connecting last failed: until [`RECONNECT_AFTER`] has passed, commands fail at once
    /// rather than each trying (a round may hold thousands).
    refused_at: std::sync::Mutex<Option<Instant>>,
}

const RECONNECT_AFTER: Duration = Duration::from_millis(200);

/// How often the subscription connection to one server is asked whether it still answers (see
/// [`Subscriber::check_alive`]).
pub(super) const ALIVE_EVERY: Duration = Duration::from_secs(2);

/// Checks of one connection that went unanswered in a row.
#[derive(Debug, Default)]
pub(super) struct Late {
    generation: u64,
    times: u32,
}

impl Single {
    pub(super) fn new(client: redis::Client, pushes: mpsc::UnboundedSender<PushInfo>) -> Self {
        Self {
            client,
            pushes,
            current: Mutex::new((0, None)),
            refused_at: std::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().await;
        if let Some(connection) = &current.1 {
            return Ok((current.0, connection.clone()));
        }
        let refused_at = *self
            .refused_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if refused_at.is_some_and(|at| at.elapsed() < RECONNECT_AFTER) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "Redis unreachable a moment ago",
            )));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(WITHIN)
            .set_response_timeout(WITHIN)
            .set_push_sender(self.pushes.clone());
        let connection = match self.client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(connection) => connection,
            Err(err) => {
                *self
                    .refused_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                return Err(err);
            }
        };
        current.0 += 1;
        current.1 = Some(connection.clone());
        Ok((current.0, connection))
    }

    /// The connection in use, if there is one (none is opened for asking).
    async fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.current.lock().await;
        current.1.clone().map(|connection| (current.0, connection))
    }

    /// The connection of `generation` failed: it goes, and with it every subscription on it, which
    /// the bus hears as a lost connection (and subscribes again, on a new one).
    async fn failed(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.0 == generation && current.1.take().is_some() {
            let _ = self.pushes.send(PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            });
        }
    }
}

impl Subscriber {
    /// Sends `name` (`SSUBSCRIBE`, `SUNSUBSCRIBE`) for `channel`, timed into `metrics`; an error, or
    /// no answer within [`WITHIN`], is a failure, and so is a subscription answered by anything but
    /// its own confirmation (the client may hand it an unasked `sunsubscribe` of another channel).
    pub(super) async fn send(&self, name: &'static str, channel: &str, metrics: &BackendMetrics) -> Result<(), String> {
        let mut command = redis::cmd(name);
        command.arg(channel);
        let answer = match self {
            Subscriber::Cluster(connection) => match ask(connection.clone(), &command, metrics).await {
                Asked::Answered(answer) => answer,
                Asked::Failed(err) => return Err(err.to_string()),
                Asked::Late => return Err("no answer in time".into()),
            },
            Subscriber::Single(single) => {
                let (generation, connection) = match tokio::time::timeout(WITHIN, single.connection()).await {
                    Ok(connected) => connected.map_err(|err| err.to_string())?,
                    Err(_) => return Err("no connection in time".into()),
                };
                match ask(connection, &command, metrics).await {
                    Asked::Answered(answer) => answer,
                    Asked::Failed(err) => {
                        single.failed(generation).await;
                        return Err(err.to_string());
                    }
                    Asked::Late => {
                        // No answer: the connection it went on is not to be trusted any more.
                        single.failed(generation).await;
                        return Err("no answer in time".into());
                    }
                }
            }
        };
        if name.eq_ignore_ascii_case("SSUBSCRIBE") && !confirms(&answer, channel) {
            return Err(format!("answered {answer:?}, not its confirmation"));
        }
        Ok(())
    }

    /// One server: `PING`s the subscription connection in use, timed into `metrics`. An error
    /// replaces it at once; no answer within [`WITHIN`] twice in a row replaces it too (one late
    /// answer may be a busy moment: a fork of Redis, a starved runtime, the PING queued behind a
    /// round of subscriptions, and replacing the connection resubscribes every user). Its loss
    /// reaches the bus, which subscribes again. A connection that died without a word (a partition,
    /// a NAT or firewall that forgot it: no reset, no close) carries no more pushes, and nothing
    /// else would notice: subscription commands go out only when sessions come and go, and TCP
    /// keepalive takes hours. A Cluster's connections are the Cluster client's own, which has no
    /// such check (docs/architecture.md). `late` is the checker's memory of unanswered checks.
    pub(super) async fn check_alive(&self, metrics: &BackendMetrics, late: &mut Late) {
        let Subscriber::Single(single) = self else {
            return;
        };
        let Some((generation, connection)) = single.current().await else {
            return;
        };
        if late.generation != generation {
            *late = Late { generation, times: 0 };
        }
        match ask(connection, &redis::cmd("PING"), metrics).await {
            Asked::Answered(_) => late.times = 0,
            Asked::Failed(err) => {
                tracing::warn!(error = %err, "bus: the subscription connection failed its check");
                single.failed(generation).await;
            }
            Asked::Late => {
                late.times += 1;
                if late.times >= 2 {
                    tracing::warn!("bus: the subscription connection did not answer two checks in time");
                    single.failed(generation).await;
                }
            }
        }
    }

    /// `CLIENT ID` of the connection (one server only): tests kill it to lose the subscriptions.
    #[cfg(test)]
    pub(super) async fn client_id(&self) -> i64 {
        let Subscriber::Single(single) = self else {
            panic!("one server only");
        };
        let (_, mut connection) = single.connection().await.expect("subscriber connects");
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut connection)
            .await
            .expect("CLIENT ID")
    }
}

/// What a command on a subscription connection got.
enum Asked {
    Answered(Value),
    Failed(redis::RedisError),
    /// No answer within [`WITHIN`].
    Late,
}

/// Sends `command` on `connection`, timed into `metrics`, waiting at most [`WITHIN`].
async fn ask<C: ConnectionLike + Send>(connection: C, command: &redis::Cmd, metrics: &BackendMetrics) -> Asked {
    let mut connection = Timed::new(connection, metrics.clone());
    match tokio::time::timeout(WITHIN, command.query_async::<Value>(&mut connection)).await {
        Ok(Ok(answer)) => Asked::Answered(answer),
        Ok(Err(err)) => Asked::Failed(err),
        Err(_) => Asked::Late,
    }
}

/// Whether `answer` is Redis' confirmation of a subscription to `channel`.
fn confirms(answer: &Value, channel: &str) -> bool {
    let data = match answer {
        Value::Push {
            kind: PushKind::SSubscribe,
            data,
        } => data,
        // RESP2 answers a subscription with an array: ["ssubscribe", channel, count].
        Value::Array(items) if items.len() == 3 => &items[1..],
        _ => return false,
    };
    data.first()
        .and_then(|named| redis::from_redis_value::<String>(named).ok())
        .is_some_and(|named| named == channel)
}

/// Shared by every clone of a [`super::Redis`].
pub(super) type SharedSubscriber = Arc<Subscriber>;

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn only_its_own_confirmation_confirms_a_subscription() {
        let ours = Value::Push {
            kind: PushKind::SSubscribe,
            data: vec![bulk("h:events:{u:alice}"), Value::Int(1)],
        };
        assert!(confirms(&ours, "h:events:{u:alice}"));
        assert!(!confirms(&ours, "h:events:{u:bob}"), "another channel's");
        let unasked = Value::Push {
            kind: PushKind::SUnsubscribe,
            data: vec![bulk("h:events:{u:alice}"), Value::Int(0)],
        };
        assert!(
            !confirms(&unasked, "h:events:{u:alice}"),
            "a slot moved, not a confirmation"
        );
        assert!(!confirms(&Value::Okay, "h:events:{u:alice}"));
        let resp2 = Value::Array(vec![bulk("ssubscribe"), bulk("h:events:{u:alice}"), Value::Int(1)]);
        assert!(confirms(&resp2, "h:events:{u:alice}"));
    }
}
