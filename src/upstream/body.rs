//! The request body ferry sends upstream, policed as it streams ([`Guard`]: size and pace), and
//! made retryable when the upstream connection was never established.
//!
//! [`UpstreamBody::Recoverable`]: hyper polls a body only once it is writing on a connection, so
//! if the body is dropped unpolled (the client gave up on connect) it sends itself back through a
//! oneshot and the next attempt can carry it.
//!
//! The client's own body failing (a malformed chunk, a reset) is wrapped in [`ClientBodyError`],
//! so the request path can tell it from the upstream failing and answer 400, not 502.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::BoxError;

/// A client's request body, whichever server read it (ferry's own HTTP/1 server or hyper's):
/// boxed, so this layer needs no server's type; only requests that carry a body pay for the box.
pub type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The body ferry sends upstream.
pub enum UpstreamBody {
    Empty,
    Stream(ClientBody, Guard),
    Recoverable(Recoverable),
}

/// What ferry polices on a request body as it streams: the route's `max_body_bytes` (for a body
/// whose length was not declared up front) and the listener's `body_timeout` / `min_body_rate`.
/// A breach fails the body with a [`BodyRefused`] — the upstream sees an aborted request — which
/// the handler finds in the client's error to answer 413 or 408.
///
/// Only time spent waiting on the client counts: while the upstream is not taking the body, ferry
/// does not poll it and the clock is stopped. The client may wait at most `body_timeout` for any
/// one piece, and in total at most `body_timeout` plus one second per `min_body_rate` bytes it
/// has sent (Apache's `mod_reqtimeout` body rule), so a client that trickles a byte now and then
/// cannot hold a connection for ever.
pub struct Guard {
    /// Bytes still allowed by max_body_bytes (`None`: no limit).
    left: Option<u64>,
    timeout: Duration,
    /// Bytes per second; 0 = no rate.
    min_rate: u64,
    received: u64,
    waited: Duration,
    waiting_since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where the upload stands, for `send_timeout` and for starting `read_timeout` when it ends.
    progress: Option<Arc<Progress>>,
}

/// How a request body's upload to the upstream is going, watched from the attempt loop: hyper asks
/// for the next piece only when it has written the last, so a long silence while ferry has a
/// piece ready means the upstream stopped reading (nginx `proxy_send_timeout`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Milliseconds (since the process started) of hyper's last request for a piece.
    last_ms: AtomicU64,
    /// What the body is doing: `SENDING`, `WAITING` (on the client: its pace is body_timeout's
    /// business), or `DONE`.
    state: AtomicU8,
}

pub const SENDING: u8 = 0;
pub const WAITING: u8 = 1;
pub const DONE: u8 = 2;

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        let p = Arc::new(Progress::default());
        p.last_ms.store(now_ms(), Relaxed);
        p
    }

    fn set(&self, state: u8) {
        self.last_ms.store(now_ms(), Relaxed);
        self.state.store(state, Relaxed);
    }

    /// (state, milliseconds since it last changed).
    pub fn since(&self) -> (u8, Duration) {
        let ms = now_ms().saturating_sub(self.last_ms.load(Relaxed));
        (self.state.load(Relaxed), Duration::from_millis(ms))
    }
}

impl Guard {
    pub fn new(left: Option<u64>, timeout: Duration, min_rate: u64, progress: Option<Arc<Progress>>) -> Guard {
        Guard {
            left,
            timeout,
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            progress,
        }
    }

    fn fail(why: BodyRefused) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err(Box::new(why))))
    }

    /// The client has nothing for us: start (or keep) the clock on it.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.timeout.is_zero() {
            return Poll::Pending;
        }
        if self.waiting_since.is_none() {
            let now = tokio::time::Instant::now();
            self.waiting_since = Some(now);
            let mut allowed = self.timeout;
            if self.min_rate > 0 {
                let earned = self.timeout + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
                allowed = allowed.min(earned.saturating_sub(self.waited));
            }
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(now + allowed),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(now + allowed))),
            }
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Guard::fail(BodyRefused::TooSlow),
            _ => Poll::Pending,
        }
    }

    fn data(&mut self, len: usize) -> bool {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.received += len as u64;
        match self.left {
            Some(left) => match left.checked_sub(len as u64) {
                Some(rest) => {
                    self.left = Some(rest);
                    true
                }
                None => false,
            },
            None => true,
        }
    }
}

/// Why ferry cut a request body short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefused {
    /// Past the route's max_body_bytes.
    TooLarge,
    /// Slower than the listener's body_timeout / min_body_rate allow.
    TooSlow,
}

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyRefused::TooLarge => "request body larger than max_body_bytes",
            BodyRefused::TooSlow => "request body arriving slower than body_timeout / min_body_rate allow",
        })
    }
}

impl std::error::Error for BodyRefused {}

impl BodyRefused {
    /// The refusal somewhere in an upstream client error's chain of causes, if ferry's guard
    /// failed the body.
    pub fn in_chain(e: &(dyn std::error::Error + 'static)) -> Option<BodyRefused> {
        std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<BodyRefused>().copied())
    }
}

/// The client's request body failed while ferry was sending it on (a malformed chunk, an aborted
/// upload): the client's fault, not the upstream's.
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body failed: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl ClientBodyError {
    /// Is the client's body failure somewhere in an upstream client error's chain of causes?
    pub fn in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(e), |e| e.source()).any(|e| e.is::<ClientBodyError>())
    }
}

impl UpstreamBody {
    /// Wraps `body` so it comes back through the returned receiver if it is dropped unsent.
    pub fn recoverable(body: ClientBody, guard: Guard) -> (UpstreamBody, oneshot::Receiver<ClientBody>) {
        let (tx, rx) = oneshot::channel();
        (UpstreamBody::Recoverable(Recoverable { inner: Some(body), started: false, back: Some(tx), guard }), rx)
    }
}

pub struct Recoverable {
    inner: Option<ClientBody>,
    started: bool,
    back: Option<oneshot::Sender<ClientBody>>,
    guard: Guard,
}

/// Polls `b` under `guard`.
fn poll_guarded(
    b: &mut ClientBody,
    guard: &mut Guard,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let r = poll_client(b, guard, cx);
    if let Some(p) = &guard.progress {
        p.set(match &r {
            Poll::Pending => WAITING,
            // hyper may not ask again after the last piece of a body of known length.
            Poll::Ready(Some(Ok(_))) if !b.is_end_stream() => SENDING,
            Poll::Ready(_) => DONE,
        });
    }
    r
}

fn poll_client(
    b: &mut ClientBody,
    guard: &mut Guard,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match Pin::new(b).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            let len = frame.data_ref().map_or(0, |d| d.len());
            if !guard.data(len) {
                return Guard::fail(BodyRefused::TooLarge);
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => guard.pending(cx),
    }
}

impl Drop for Recoverable {
    fn drop(&mut self) {
        if !self.started {
            if let (Some(body), Some(tx)) = (self.inner.take(), self.back.take()) {
                let _ = tx.send(body);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Stream(b, guard) => poll_guarded(b, guard, cx),
            UpstreamBody::Recoverable(r) => {
                r.started = true;
                match r.inner.as_mut() {
                    Some(b) => poll_guarded(b, &mut r.guard, cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Stream(b, _) => b.is_end_stream(),
            UpstreamBody::Recoverable(r) => r.inner.as_ref().is_none_or(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Stream(b, _) => b.size_hint(),
            UpstreamBody::Recoverable(r) => r.inner.as_ref().map(|b| b.size_hint()).unwrap_or_default(),
        }
    }
}
