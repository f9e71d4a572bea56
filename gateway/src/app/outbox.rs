//! One session's outbound queue and close signal, in a single small allocation.
//!
//! Every connected client has one of these, so its idle size is the gateway's memory per connection:
//! a bounded tokio `mpsc` channel plus a cancellation token cost about 1.2 kB per session before a
//! single message was queued (the channel allocates its first 32-slot block up front, and pads its
//! halves to cache lines). Here an idle session costs one `Arc` of about 100 bytes: the frames live
//! in a `VecDeque` that allocates when a message comes and is released again whenever it drains.
//! The consumer is the one session task, so one waker slot is enough.
//!
//! Beside the queue, one slot for a message whose newest value supersedes the older ones (the
//! unread count): a burst of notifications to a user then costs one count, not one per
//! notification, and never fills the queue. The slot is sent once the queue ahead of it is empty.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

/// A serialized server message. Queues hold these rather than message structs: a queue slot costs a
/// pointer, not a whole message, and a fan-out serializes once for every connection it reaches.
pub type Frame = Arc<str>;

/// Why the server closes a session from outside its own loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl CloseRequest {
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Capacity kept after the queue drains: none, so an idle session holds no buffer (allocating one
/// for the next message costs far less than the delivery it belongs to).
const RETAINED_CAPACITY: usize = 0;

#[derive(Debug)]
struct State {
    frames: VecDeque<Frame>,
    capacity: usize,
    /// The newest superseding frame, not sent yet.
    latest: Option<Frame>,
    /// The first close request; once set it is what the session sees next, ahead of any frame.
    close: Option<CloseRequest>,
    /// When the session is closed for silence unless it proves alive before (the heartbeat); a
    /// sweeper of the replica checks every session's, so no session keeps a timer of its own.
    deadline: Option<Instant>,
    waker: Option<Waker>,
    receiver_gone: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates a queue holding at most `capacity` frames (at least one).
pub fn outbox(capacity: usize) -> (OutboxSender, SessionInbox) {
    let shared = Arc::new(Mutex::new(State {
        frames: VecDeque::new(),
        capacity: capacity.max(1),
        latest: None,
        close: None,
        deadline: None,
        waker: None,
        receiver_gone: false,
    }));
    (OutboxSender(shared.clone()), SessionInbox(shared))
}

/// Why [`OutboxSender::try_send`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// `capacity` frames are waiting: the client is not reading.
    Full,
    /// The session is gone.
    Closed,
}

/// The pushing side: any task may queue frames or ask the session to close.
#[derive(Debug, Clone)]
pub struct OutboxSender(Shared);

impl OutboxSender {
    /// Queues `frame` without waiting.
    pub fn try_send(&self, frame: Frame) -> Result<(), TrySendError> {
        let mut state = lock(&self.0);
        if state.receiver_gone {
            return Err(TrySendError::Closed);
        }
        if state.frames.len() >= state.capacity {
            return Err(TrySendError::Full);
        }
        state.frames.push_back(frame);
        wake(state);
        Ok(())
    }

    /// Sets the superseding frame (replacing one not sent yet), sent after what is queued now.
    pub fn replace_latest(&self, frame: Frame) -> Result<(), TrySendError> {
        let mut state = lock(&self.0);
        if state.receiver_gone {
            return Err(TrySendError::Closed);
        }
        state.latest = Some(frame);
        wake(state);
        Ok(())
    }

    /// Frames waiting to be written (the superseding one included).
    pub fn queued(&self) -> usize {
        let state = lock(&self.0);
        state.frames.len() + usize::from(state.latest.is_some())
    }

    /// Whether the session's deadline (see [`SessionInbox::set_deadline`]) has passed at `now`.
    pub fn deadline_passed(&self, now: Instant) -> bool {
        lock(&self.0).deadline.is_some_and(|deadline| deadline <= now)
    }

    /// Asks the session to close; the first request wins.
    pub fn close(&self, request: CloseRequest) {
        let mut state = lock(&self.0);
        if state.close.is_none() {
            state.close = Some(request);
            wake(state);
        }
    }
}

fn wake(mut state: MutexGuard<'_, State>) {
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// What the session does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Close, for this reason: asked for from outside the session (slow consumer, replaced).
    Close(CloseRequest),
    /// Write this frame.
    Frame(Frame),
}

/// The session's receiving end. Dropping it makes every later send fail with `Closed` and frees
/// what was still queued.
#[derive(Debug)]
pub struct SessionInbox(Shared);

impl SessionInbox {
    /// A close request first, then the oldest frame; waits while there is neither.
    pub async fn next(&mut self) -> Next {
        poll_fn(|cx| {
            self.poll_with(cx, |state| {
                state
                    .close
                    .clone()
                    .map(Next::Close)
                    .or_else(|| pop(state).map(Next::Frame))
            })
        })
        .await
    }

    /// The session proved alive: it is closed for silence only if `deadline` passes first.
    pub fn set_deadline(&mut self, deadline: Instant) {
        lock(&self.0).deadline = Some(deadline);
    }

    /// What [`SessionInbox::next`] would answer now, without waiting.
    pub fn try_next(&mut self) -> Option<Next> {
        let mut state = lock(&self.0);
        state
            .close
            .clone()
            .map(Next::Close)
            .or_else(|| pop(&mut state).map(Next::Frame))
    }

    /// The oldest frame, whether or not a close was requested (tests read what was queued).
    pub async fn recv(&mut self) -> Frame {
        poll_fn(|cx| self.poll_with(cx, pop)).await
    }

    /// Resolves with the close request once there is one.
    pub async fn close_requested(&mut self) -> CloseRequest {
        poll_fn(|cx| self.poll_with(cx, |state| state.close.clone())).await
    }

    fn poll_with<T>(&mut self, cx: &mut Context<'_>, take: impl FnOnce(&mut State) -> Option<T>) -> Poll<T> {
        let mut state = lock(&self.0);
        if let Some(value) = take(&mut state) {
            return Poll::Ready(value);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The oldest queued frame, else the superseding one.
fn pop(state: &mut State) -> Option<Frame> {
    let Some(frame) = state.frames.pop_front() else {
        return state.latest.take();
    };
    if state.frames.is_empty() && state.frames.capacity() > RETAINED_CAPACITY {
        state.frames = VecDeque::new();
    }
    Some(frame)
}

impl Drop for SessionInbox {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.receiver_gone = true;
        state.waker = None;
        let frames = std::mem::take(&mut state.frames);
        let latest = state.latest.take();
        drop(state);
        drop((frames, latest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: &'static str) -> CloseRequest {
        CloseRequest::new(4000, reason)
    }

    #[tokio::test]
    async fn a_deadline_passes_only_once_it_is_reached() {
        let (sender, mut inbox) = outbox(1);
        let now = Instant::now();
        assert!(!sender.deadline_passed(now), "no deadline yet");
        inbox.set_deadline(now + std::time::Duration::from_secs(1));
        assert!(!sender.deadline_passed(now));
        assert!(sender.deadline_passed(now + std::time::Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn frames_come_out_in_order_until_the_queue_is_full() {
        let (sender, mut inbox) = outbox(2);
        assert_eq!(sender.try_send(Frame::from("a")), Ok(()));
        assert_eq!(sender.try_send(Frame::from("b")), Ok(()));
        assert_eq!(sender.try_send(Frame::from("c")), Err(TrySendError::Full));
        sender.replace_latest(Frame::from("count")).expect("set");
        assert_eq!(sender.queued(), 3, "two frames and the superseding one");
        assert_eq!(inbox.next().await, Next::Frame(Frame::from("a")));
        assert_eq!(sender.queued(), 2);
        assert_eq!(
            sender.try_send(Frame::from("d")),
            Ok(()),
            "room again once one was taken"
        );
        assert_eq!(inbox.next().await, Next::Frame(Frame::from("b")));
        assert_eq!(inbox.next().await, Next::Frame(Frame::from("d")));
        assert_eq!(inbox.next().await, Next::Frame(Frame::from("count")));
        assert_eq!(sender.queued(), 0);
    }

    #[tokio::test]
    async fn a_close_request_comes_before_queued_frames_and_the_first_one_wins() {
        let (sender, mut inbox) = outbox(4);
        sender.try_send(Frame::from("a")).expect("queued");
        sender.close(request("first"));
        sender.close(request("second"));
        assert_eq!(inbox.next().await, Next::Close(request("first")));
        assert_eq!(inbox.next().await, Next::Close(request("first")), "it stays the answer");
        assert_eq!(&*inbox.recv().await, "a", "queued frames stay readable");
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_on_a_frame_from_another_task() {
        let (sender, mut inbox) = outbox(4);
        let waiting = tokio::spawn(async move { inbox.next().await });
        tokio::task::yield_now().await;
        sender.try_send(Frame::from("late")).expect("queued");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(next, Next::Frame(Frame::from("late")));
    }

    #[tokio::test]
    async fn sends_after_the_session_is_gone_fail_and_nothing_is_kept() {
        let (sender, inbox) = outbox(4);
        let frame = Frame::from("kept?");
        sender.try_send(frame.clone()).expect("queued");
        drop(inbox);
        assert_eq!(Arc::strong_count(&frame), 1, "the queued frame was freed");
        assert_eq!(sender.try_send(frame), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_superseding_frame_keeps_only_its_newest_value_and_comes_after_the_queue() {
        let (sender, mut inbox) = outbox(1);
        sender.try_send(Frame::from("n1")).expect("queued");
        sender.replace_latest(Frame::from("count 1")).expect("set");
        sender.replace_latest(Frame::from("count 2")).expect("replaced");
        assert_eq!(
            sender.try_send(Frame::from("n2")),
            Err(TrySendError::Full),
            "the slot takes no room"
        );
        assert_eq!(&*inbox.recv().await, "n1");
        assert_eq!(&*inbox.recv().await, "count 2", "only the newest");
        sender.try_send(Frame::from("n2")).expect("queued");
        assert_eq!(&*inbox.recv().await, "n2", "nothing else was left");
        drop(inbox);
        assert_eq!(sender.replace_latest(Frame::from("late")), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_memory_back() {
        let (sender, mut inbox) = outbox(64);
        for _ in 0..64 {
            sender.try_send(Frame::from("x")).expect("queued");
        }
        for _ in 0..64 {
            inbox.recv().await;
        }
        assert_eq!(lock(&sender.0).frames.capacity(), 0);
    }
}
