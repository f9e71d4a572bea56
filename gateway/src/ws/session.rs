//! One WebSocket session: a single task that reads client frames, drains the outbound queue, watches
//! the heartbeat and the close signals. One task per connection keeps memory per connection small
//! (see docs/benchmarks.md); every write has a deadline so a stalled client cannot pin the task.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use rand::Rng;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite;

use crate::app::Gateway;
use crate::app::sessions::{CloseRequest, SendOutcome};
use crate::domain::connection::ConnectionRecord;
use crate::domain::protocol::{
    ClientMessage, ConnectedPayload, ProtocolError, ServerEnvelope, ServerMessage, close_code, parse_client_message,
};
use crate::domain::rate::{GcraState, RateDecision, RateLimit};
use crate::error::Error;

/// How a session ended: sent to the client as a close frame when there is one, and logged as the
/// `reason` of `websocket:disconnected`.
struct Ending {
    close: Option<(u16, String)>,
    reason: String,
}

impl Ending {
    fn close(code: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            close: Some((code, reason.clone())),
            reason,
        }
    }

    /// No close frame can or need be sent (the client left, or the socket is stuck).
    fn silent(reason: impl Into<String>) -> Self {
        Self {
            close: None,
            reason: reason.into(),
        }
    }
}

pub async fn run(gateway: Arc<Gateway>, record: ConnectionRecord, mut socket: WebSocket) {
    let settings = gateway.session_settings;
    let connection_id = record.connection_id.clone();
    let mut inbox = gateway
        .sessions
        .open(&connection_id, &record.user_id, settings.outbound_queue);

    let heartbeat_timeout = Duration::from_millis(settings.heartbeat_timeout_ms);
    let write_timeout = Duration::from_millis(settings.write_timeout_ms);
    let message_limit = RateLimit::per_second(settings.messages_per_second);
    let violation_limit = RateLimit::per_minute(settings.violations_per_minute);
    let mut message_rate = GcraState::default();
    let mut violations = GcraState::default();
    let mut context = Context {
        connection_id: connection_id.clone(),
        user_id: record.user_id.clone(),
        allowed: record.allowed_channels.clone(),
        subscription_limit: RateLimit::per_minute(settings.subscription_changes_per_minute),
        subscription_rate: GcraState::default(),
    };
    let heartbeat_deadline = sleep_until(Instant::now() + heartbeat_timeout);
    tokio::pin!(heartbeat_deadline);

    let ending = if let Err(err) = start(&gateway, &record).await {
        tracing::error!(connection_id, error = %err, "websocket:start-failed");
        Ending::close(close_code::INTERNAL_ERROR, "could not start the session, reconnect")
    } else {
        loop {
            tokio::select! {
                biased;
                () = gateway.lifecycle.shutdown.cancelled() => {
                    let delay = rand::thread_rng().gen_range(0..=settings.reconnect_jitter_ms);
                    break Ending::close(close_code::GOING_AWAY, format!("going away: reconnect in {delay} ms"));
                }
                CloseRequest { code, reason } = inbox.closer.requested() => {
                    break Ending::close(code, reason);
                }
                () = &mut heartbeat_deadline => {
                    break Ending::close(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                }
                Some(frame) = inbox.outbound.recv() => {
                    match timeout(write_timeout, socket.send(Message::text(frame.as_ref()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break Ending::silent("connection lost"),
                        Err(_) => break Ending::silent("slow consumer: write stalled"),
                    }
                }
                frame = socket.recv() => {
                    let text = match frame {
                        None => break Ending::silent("client gone"),
                        Some(Err(err)) => break read_error(err),
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map_or(close_code::NORMAL, |f| f.code);
                            break Ending::silent(format!("client closed ({code})"));
                        }
                        // Control frames: tungstenite answers pings itself.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => Err(ProtocolError::BinaryFrame),
                        Some(Ok(Message::Text(text))) => Ok(text),
                    };
                    let now = gateway.clock.now_ms();
                    let parsed = text.and_then(|t| parse_client_message(t.as_str()));
                    // Acks answer the server's own sends, so they are bounded by what the server pushes (a
                    // replay can push hundreds at once); every other message counts against the rate.
                    let is_ack = matches!(&parsed, Ok(envelope) if matches!(envelope.message, ClientMessage::Ack { .. }));
                    if !is_ack && !message_rate.check(message_limit, now).is_allowed() {
                        break Ending::close(close_code::RATE_LIMITED, "too many messages per second");
                    }
                    let reply = match parsed {
                        Ok(envelope) => match handle(&gateway, &mut context, envelope.message, now).await {
                            Ok(None) => continue,
                            Ok(Some(reply)) => {
                                if matches!(reply, ServerMessage::Pong {}) {
                                    heartbeat_deadline.as_mut().reset(Instant::now() + heartbeat_timeout);
                                }
                                reply
                            }
                            Err(Error::UnknownConnection(_)) => {
                                break Ending::close(close_code::CONNECTION_EXPIRED, "registration expired");
                            }
                            Err(err) => {
                                // An ack of nothing is a violation: it is how acks cannot be used to flood.
                                if is_ack && !violations.check(violation_limit, now).is_allowed() {
                                    break Ending::close(close_code::PROTOCOL_VIOLATIONS, "too many invalid messages");
                                }
                                ServerMessage::error(err.code(), err.public_message())
                            }
                        },
                        Err(err) => {
                            if !violations.check(violation_limit, now).is_allowed() {
                                break Ending::close(close_code::PROTOCOL_VIOLATIONS, "too many invalid messages");
                            }
                            ServerMessage::error(err.code(), err.to_string())
                        }
                    };
                    if gateway.sessions.send(&connection_id, &ServerEnvelope::new(reply, now)) == SendOutcome::SlowConsumer {
                        break Ending::close(close_code::SLOW_CONSUMER, "slow consumer");
                    }
                }
            }
        }
    };

    gateway.delivery.detach(&connection_id);
    gateway.sessions.remove(&connection_id);
    if let Some((code, reason)) = ending.close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort: a client that does not read gets no close frame, only the TCP close.
        let _ = timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
    }
    if let Err(err) = gateway.connections.disconnect(&connection_id, &ending.reason).await {
        tracing::error!(connection_id, error = %err, "websocket:cleanup-failed");
    }
}

/// Who this session is, and its per-connection subscription-change budget.
struct Context {
    connection_id: String,
    user_id: String,
    allowed: Vec<String>,
    subscription_limit: RateLimit,
    subscription_rate: GcraState,
}

/// `connected` first (connection id, heartbeat, unread count, subscriptions), then the replay of
/// what the user missed, in order, before anything new.
async fn start(gateway: &Gateway, record: &ConnectionRecord) -> Result<(), Error> {
    let settings = gateway.session_settings;
    let subscriptions: Vec<String> = gateway
        .subscriptions
        .effective(&record.user_id)
        .await?
        .into_iter()
        .filter(|channel| record.allowed_channels.contains(channel))
        .collect();
    let connected = ServerMessage::Connected(ConnectedPayload {
        connection_id: record.connection_id.clone(),
        user_id: record.user_id.clone(),
        heartbeat_interval_ms: settings.heartbeat_interval_ms,
        heartbeat_timeout_ms: settings.heartbeat_timeout_ms,
        unread_count: gateway.notifications.unread_count(&record.user_id).await?,
        subscriptions,
        allowed_channels: record.allowed_channels.clone(),
    });
    gateway.sessions.send(
        &record.connection_id,
        &ServerEnvelope::new(connected, gateway.clock.now_ms()),
    );
    // An unread count pushed while we were starting was held back so as not to precede `connected`;
    // the count in `connected` may predate it, so send the current one.
    if gateway.sessions.mark_ready(&record.connection_id) {
        let unread_count = gateway.notifications.unread_count(&record.user_id).await?;
        let message = ServerMessage::UnreadCount { unread_count };
        gateway.sessions.send(
            &record.connection_id,
            &ServerEnvelope::new(message, gateway.clock.now_ms()),
        );
    }
    gateway
        .delivery
        .attach(&record.connection_id, &record.user_id, record.allowed_channels.clone())
        .await?;
    Ok(())
}

/// A message that passed parsing; `None` when the plan defines no reply (`notification:ack`). Only a
/// successful `ping` (the plan's heartbeat) counts as liveness: the caller resets the heartbeat
/// deadline when the reply is a `pong`.
async fn handle(
    gateway: &Gateway,
    context: &mut Context,
    message: ClientMessage,
    now: crate::domain::UnixMs,
) -> Result<Option<ServerMessage>, Error> {
    if matches!(
        message,
        ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. }
    ) {
        if let RateDecision::Limited { retry_after_ms } =
            context.subscription_rate.check(context.subscription_limit, now)
        {
            return Err(Error::RateLimited { retry_after_ms });
        }
    }
    match message {
        ClientMessage::Ping => {
            gateway.connections.heartbeat(&context.connection_id).await?;
            Ok(Some(ServerMessage::Pong {}))
        }
        ClientMessage::Subscribe { channels } => {
            gateway
                .subscriptions
                .subscribe(&context.user_id, &context.allowed, &channels)
                .await?;
            Ok(Some(ServerMessage::Subscribed { channels }))
        }
        ClientMessage::Unsubscribe { channels } => {
            gateway.subscriptions.unsubscribe(&context.user_id, &channels).await?;
            Ok(Some(ServerMessage::Unsubscribed { channels }))
        }
        ClientMessage::Ack { notification_id } => {
            gateway
                .notifications
                .acknowledge(&context.user_id, notification_id)
                .await?;
            Ok(None)
        }
    }
}

fn read_error(err: axum::Error) -> Ending {
    let oversize = err
        .into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)));
    if oversize {
        Ending::close(close_code::MESSAGE_TOO_BIG, "message too big")
    } else {
        Ending::silent("connection lost")
    }
}
