//! One WebSocket session's transport: a single task that reads client frames and hands them to the
//! protocol engine (`app::client_session`), drains the outbound queue, and watches the heartbeat
//! deadline and the close signals. No protocol rule lives here: only the socket, the select loop,
//! timeouts and frame sizes. One task per connection keeps memory per connection small (see
//! docs/benchmarks.md); every write has a deadline so a stalled client cannot pin the task.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite;

use crate::app::Gateway;
use crate::app::client_session::{Answer, ClientSession, Inbound};
use crate::app::sessions::{CloseRequest, Frame, Next, SessionInbox};
use crate::domain::connection::ConnectionRecord;
use crate::domain::protocol::close_code;

/// How a session ended: sent to the client as a close frame when there is one, logged as the
/// `reason` of `websocket:disconnected`, and counted by `kind` in `/metrics`.
struct Ending {
    close: Option<(u16, String)>,
    kind: &'static str,
    reason: String,
}

impl From<CloseRequest> for Ending {
    fn from(closing: CloseRequest) -> Self {
        let reason = closing.reason.into_owned();
        Self {
            kind: close_code::name(closing.code),
            close: Some((closing.code, reason.clone())),
            reason,
        }
    }
}

impl Ending {
    /// No close frame can or need be sent (the client left, or the socket is stuck); `kind` is a
    /// fixed name for it.
    fn silent(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            close: None,
            kind,
            reason: reason.into(),
        }
    }
}

/// The session of `record` on `socket`, until it ends.
///
/// A plain function returning an `async move` block, not an `async fn`, and the session is opened
/// before the block: an `async fn` keeps its arguments in the task beside the locals they are moved
/// into, and this task's size is paid by every idle connection (544 bytes of the socket and record
/// twice, measured with `-Zprint-type-sizes`).
pub fn run(gateway: Arc<Gateway>, record: ConnectionRecord, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
    let settings = gateway.session_settings;
    let heartbeat_timeout = Duration::from_millis(settings.heartbeat_timeout_ms);
    let write_timeout = Duration::from_millis(settings.write_timeout_ms);
    let clock = gateway.clock.clone();
    let (mut session, mut inbox) = ClientSession::open(gateway, record);
    async move {
        // The heartbeat deadline and the drain reach the session through its inbox: the replica's
        // sweeper (`LocalSessions::watch`) closes it when the deadline passes or the replica drains.
        inbox.set_deadline(Instant::now() + heartbeat_timeout);

        // The engine's futures are boxed while they run: inlined, their largest state (a store query
        // deep inside) would be part of every idle session's task, all the time.
        let ending = match Box::pin(session.start()).await {
            Err(closing) => Ending::from(closing),
            Ok(()) => loop {
                tokio::select! {
                    biased;
                    next = inbox.next() => match next {
                    Next::Close(request) => break Ending::from(request),
                    // Boxed: the writes' state exists only while writing, not in every idle session.
                    Next::Frame(frame) => {
                        if let Err(ending) = Box::pin(write_burst(&mut socket, &mut inbox, frame, write_timeout)).await {
                            break ending;
                        }
                    }
                },
                frame = socket.recv() => {
                        let now = clock.now_ms();
                        let answer = match frame {
                            None => break Ending::silent("client_gone", "client gone"),
                            Some(Err(err)) => break read_error(err),
                            Some(Ok(Message::Close(frame))) => {
                                let code = frame.map_or(close_code::NORMAL, |f| f.code);
                                break Ending::silent("client_closed", format!("client closed ({code})"));
                            }
                            // tungstenite answers pings itself; the engine counts them.
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Box::pin(session.handle(Inbound::Control, now)).await,
                            Some(Ok(Message::Binary(_))) => Box::pin(session.handle(Inbound::Binary, now)).await,
                            Some(Ok(Message::Text(text))) => Box::pin(session.handle(Inbound::Text(text.as_str()), now)).await,
                        };
                        if answer.proves_liveness() {
                            inbox.set_deadline(Instant::now() + heartbeat_timeout);
                        }
                        match answer {
                            Answer::Nothing => {}
                            Answer::Close(closing) => break Ending::from(closing),
                            Answer::Reply(reply) => {
                                if let Err(closing) = session.send(reply, now) {
                                    break Ending::from(closing);
                                }
                            }
                        }
                    }
                }
            },
        };

        session.leave();
        if let Some((code, reason)) = &ending.close {
            let frame = CloseFrame {
                code: *code,
                reason: reason.as_str().into(),
            };
            // Best effort, one second at most: a client that does not read gets no close frame, only
            // the TCP close.
            let _ = Box::pin(timeout(CLOSE_HANDSHAKE, close_handshake(&mut socket, frame))).await;
        }
        Box::pin(session.finish(ending.kind, &ending.reason)).await;
    }
}

/// Frames written in a row before the session looks at anything else (the client's messages, the
/// heartbeat): a backlog drains without a pass through the whole `select!` per frame.
const WRITE_BURST: usize = 32;

/// Writes `first`, then whatever else is queued, up to [`WRITE_BURST`] frames; each write has its
/// deadline. A close request met on the way ends the session.
async fn write_burst(
    socket: &mut WebSocket,
    inbox: &mut SessionInbox,
    first: Frame,
    write_timeout: Duration,
) -> Result<(), Ending> {
    let mut frame = first;
    for written in 1..=WRITE_BURST {
        match timeout(write_timeout, socket.send(Message::text(frame.as_ref()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Ending::silent("connection_lost", "connection lost")),
            Err(_) => {
                return Err(Ending::silent(
                    close_code::name(close_code::SLOW_CONSUMER),
                    "slow consumer: write stalled",
                ));
            }
        }
        if written == WRITE_BURST {
            break;
        }
        frame = match inbox.try_next() {
            None => break,
            Some(Next::Close(request)) => return Err(Ending::from(request)),
            Some(Next::Frame(next)) => next,
        };
    }
    Ok(())
}

/// How long a closing session waits for its close frame to be written and answered.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Writes the close frame, then reads (and drops) what the client still sends until its own close
/// frame. Closing the TCP connection with unread bytes in the kernel's buffer would send a reset,
/// and a reset can destroy the close frame before the client reads it: a client closed for sending
/// too fast would never learn why.
async fn close_handshake(socket: &mut WebSocket, frame: CloseFrame) {
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
}

fn read_error(err: axum::Error) -> Ending {
    let oversize = err
        .into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)));
    if oversize {
        Ending::from(CloseRequest::new(close_code::MESSAGE_TOO_BIG, "message too big"))
    } else {
        Ending::silent("connection_lost", "connection lost")
    }
}
