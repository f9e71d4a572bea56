//! One client's WebSocket protocol, without the socket: the engine that `ws/session.rs` (the
//! transport) feeds with inbound frames, the way centrifuge's `handler_websocket.go` only hands data
//! to `client.Handle`. It owns the start sequence (`connected`, ready, replay), the per-connection
//! budgets (message rate, violations, subscription changes), the rule that acks of what the server
//! awaits are exempt from the message rate, and what each message does. It never touches a socket, a timer or the clock: the
//! transport passes the time of each message, so tests drive it with messages and times.

use std::sync::Arc;

use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
use crate::domain::protocol::{
    ClientMessage, ConnectedPayload, ProtocolError, ServerEnvelope, ServerMessage, close_code, parse_client_message,
};
use crate::domain::rate::{GcraState, RateDecision, RateLimit};
use crate::error::{Error, Result};

use super::Gateway;
use super::metrics::Limit;
use super::sessions::{CloseRequest, SendOutcome, SessionInbox};

/// A frame as the transport received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    Text(&'a str),
    /// Binary frames carry no message of the protocol: a violation.
    Binary,
    /// A WebSocket ping or pong frame: answered by the transport, but it costs a read and (for a
    /// ping) a write, so it counts against the message rate like any message.
    Control,
}

/// What the transport does after one inbound frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Send this to the client (through [`ClientSession::send`], behind what is already queued).
    Reply(ServerMessage),
    /// Close the session.
    Close(CloseRequest),
    /// The plan defines no reply (`notification:ack`).
    Nothing,
}

impl Answer {
    /// Only a successful `ping` (the plan's heartbeat) proves the client alive: the transport moves
    /// its heartbeat deadline when this is true.
    pub fn proves_liveness(&self) -> bool {
        matches!(self, Answer::Reply(ServerMessage::Pong {}))
    }
}

/// A GCRA budget of one connection.
struct Budget {
    limit: RateLimit,
    state: GcraState,
}

impl Budget {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: GcraState::default(),
        }
    }

    fn check(&mut self, now: UnixMs) -> RateDecision {
        self.state.check(self.limit, now)
    }
}

/// One client's session on this replica, from [`ClientSession::open`] to [`ClientSession::finish`].
pub struct ClientSession {
    gateway: Arc<Gateway>,
    /// Of the registered record, only what the session uses, each in one allocation shared with the
    /// replica's session index and delivery state (every idle connection pays for these); the allowed
    /// channels are also shared with every connection allowed the same channels.
    connection_id: Arc<str>,
    user_id: Arc<str>,
    allowed_channels: Arc<[String]>,
    messages: Budget,
    violations: Budget,
    subscription_changes: Budget,
}

impl ClientSession {
    /// Registers the session's outbound queue on this replica; the transport drains the inbox.
    pub fn open(gateway: Arc<Gateway>, record: ConnectionRecord) -> (Self, SessionInbox) {
        let settings = gateway.session_settings;
        let connection_id: Arc<str> = record.connection_id.into();
        let user_id: Arc<str> = record.user_id.into();
        let allowed_channels = gateway.subscriptions.share_channels(&record.allowed_channels);
        let inbox = gateway
            .sessions
            .open(connection_id.clone(), user_id.clone(), settings.outbound_queue);
        let session = Self {
            messages: Budget::new(RateLimit::per_second(settings.messages_per_second)),
            violations: Budget::new(RateLimit::per_minute(settings.violations_per_minute)),
            subscription_changes: Budget::new(RateLimit::per_minute(settings.subscription_changes_per_minute)),
            gateway,
            connection_id,
            user_id,
            allowed_channels,
        };
        (session, inbox)
    }

    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// `connected` first (connection id, heartbeat, unread count, subscriptions), then the replay of
    /// what the user missed, in order, before anything new.
    pub async fn start(&mut self) -> Result<(), CloseRequest> {
        self.try_start().await.map_err(|err| {
            tracing::error!(connection_id = %self.connection_id, error = %err, "websocket:start-failed");
            CloseRequest::new(close_code::INTERNAL_ERROR, "could not start the session, reconnect")
        })
    }

    async fn try_start(&mut self) -> Result<()> {
        let gateway = &self.gateway;
        let (connection_id, user_id) = (&*self.connection_id, &*self.user_id);
        // The user's events come here first: a revocation, a count or a subscription change
        // announced while the session starts reaches it, as every read below comes after.
        let interest = gateway.delivery.follow(user_id).await?;
        let settings = gateway.session_settings;
        let catalog = gateway.catalog.current();
        let subscriptions: Vec<String> = gateway
            .subscriptions
            .effective(user_id)
            .await?
            .into_iter()
            .filter(|channel| catalog.admits(&self.allowed_channels, channel))
            .collect();
        let counted = gateway.notifications.unread_count(user_id).await?;
        let connected = ServerMessage::Connected(ConnectedPayload {
            connection_id: connection_id.to_owned(),
            user_id: user_id.to_owned(),
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            heartbeat_timeout_ms: settings.heartbeat_timeout_ms,
            unread_count: counted.count,
            subscriptions,
            allowed_channels: catalog.admitted(&self.allowed_channels),
        });
        gateway
            .sessions
            .send(connection_id, &ServerEnvelope::new(connected, gateway.clock.now_ms()));
        // An unread count pushed while we were starting was held back so as not to precede
        // `connected`; the count in `connected` may predate it, so send the current one.
        if gateway.sessions.mark_ready(connection_id, counted) {
            let count = gateway.notifications.unread_count(user_id).await?;
            gateway.delivery.push_unread_to(connection_id, count);
        }
        gateway
            .delivery
            .attach(
                self.connection_id.clone(),
                self.user_id.clone(),
                self.allowed_channels.clone(),
                interest,
            )
            .await?;
        Ok(())
    }

    /// One inbound frame received at `now`.
    pub async fn handle(&mut self, inbound: Inbound<'_>, now: UnixMs) -> Answer {
        let parsed = match inbound {
            Inbound::Text(text) => parse_client_message(text),
            Inbound::Binary => Err(ProtocolError::BinaryFrame),
            Inbound::Control => {
                return if self.messages.check(now).is_allowed() {
                    Answer::Nothing
                } else {
                    self.too_many_messages()
                };
            }
        };
        // An ack of what the server sent and awaits is bounded by what it sends (a window at a
        // time), so it is exempt from the rate and costs no store access. Any other ack (a
        // duplicate, someone else's, an unknown id) counts against the rate like every message.
        let acked = match &parsed {
            Ok(envelope) => match envelope.message {
                ClientMessage::Ack { notification_id } => Some(notification_id),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(id) = acked {
            if self.gateway.notifications.acknowledge_awaited(&self.user_id, id).await {
                return Answer::Nothing;
            }
        }
        let is_ack = acked.is_some();
        if !self.messages.check(now).is_allowed() {
            return self.too_many_messages();
        }
        let envelope = match parsed {
            Ok(envelope) => envelope,
            Err(err) => return self.violation(now, ServerMessage::error(err.code(), err.to_string())),
        };
        match self.perform(envelope.message, now).await {
            Ok(Some(reply)) => Answer::Reply(reply),
            Ok(None) => Answer::Nothing,
            Err(Error::UnknownConnection(_)) => Answer::Close(CloseRequest::new(
                close_code::CONNECTION_EXPIRED,
                "registration expired",
            )),
            // An ack of nothing is a violation: it is how acks cannot be used to flood.
            Err(err) if is_ack => self.violation(now, ServerMessage::error(err.code(), err.public_message())),
            Err(err) => Answer::Reply(ServerMessage::error(err.code(), err.public_message())),
        }
    }

    fn too_many_messages(&self) -> Answer {
        self.gateway.metrics.count_rate_limited(Limit::Messages);
        Answer::Close(CloseRequest::new(
            close_code::RATE_LIMITED,
            "too many messages per second",
        ))
    }

    /// An invalid message: answered with `error`, until the violation budget is spent.
    fn violation(&mut self, now: UnixMs, error: ServerMessage) -> Answer {
        if self.violations.check(now).is_allowed() {
            Answer::Reply(error)
        } else {
            Answer::Close(CloseRequest::new(
                close_code::PROTOCOL_VIOLATIONS,
                "too many invalid messages",
            ))
        }
    }

    /// What a well-formed message does; `None` when the plan defines no reply.
    async fn perform(&mut self, message: ClientMessage, now: UnixMs) -> Result<Option<ServerMessage>> {
        if matches!(
            message,
            ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. }
        ) {
            if let RateDecision::Limited { retry_after_ms } = self.subscription_changes.check(now) {
                self.gateway.metrics.count_rate_limited(Limit::Subscriptions);
                return Err(Error::RateLimited { retry_after_ms });
            }
        }
        let gateway = &self.gateway;
        let user_id = &*self.user_id;
        match message {
            ClientMessage::Ping => {
                gateway.connections.heartbeat(user_id, &self.connection_id).await?;
                Ok(Some(ServerMessage::Pong {}))
            }
            ClientMessage::Subscribe { channels } => {
                gateway
                    .subscriptions
                    .subscribe(user_id, &self.allowed_channels, &channels)
                    .await?;
                Ok(Some(ServerMessage::Subscribed { channels }))
            }
            ClientMessage::Unsubscribe { channels } => {
                gateway.subscriptions.unsubscribe(user_id, &channels).await?;
                Ok(Some(ServerMessage::Unsubscribed { channels }))
            }
            ClientMessage::Ack { notification_id } => {
                // Not awaited here (`handle` tried that first): checked against the store.
                gateway
                    .notifications
                    .acknowledge_stored(user_id, notification_id)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Queues a reply behind what is already queued; a full queue closes the session as slow.
    pub fn send(&self, message: ServerMessage, now: UnixMs) -> Result<(), CloseRequest> {
        match self
            .gateway
            .sessions
            .send(&self.connection_id, &ServerEnvelope::new(message, now))
        {
            SendOutcome::SlowConsumer => Err(CloseRequest::new(close_code::SLOW_CONSUMER, "slow consumer")),
            SendOutcome::Queued | SendOutcome::Gone => Ok(()),
        }
    }

    /// The session is ending: nothing more is delivered to it or queued for it (called before the
    /// close frame is written, so nothing is counted as delivered to a closing socket).
    pub fn leave(&self) {
        let connection_id = &*self.connection_id;
        self.gateway.delivery.detach(connection_id);
        self.gateway.sessions.remove(connection_id);
    }

    /// The session ended (for `reason`): it leaves delivery, this replica and the registry.
    /// The session ended: `kind` is a fixed name for how (a close code's name, or how the client
    /// left), counted in `/metrics`; `reason` is logged.
    pub async fn finish(self, kind: &'static str, reason: &str) {
        self.gateway.metrics.count_close(kind);
        self.leave();
        let connection_id = &*self.connection_id;
        if let Err(err) = self
            .gateway
            .connections
            .disconnect(&self.user_id, connection_id, reason)
            .await
        {
            tracing::error!(connection_id, error = %err, "websocket:cleanup-failed");
        }
    }
}

#[cfg(test)]
mod tests;
