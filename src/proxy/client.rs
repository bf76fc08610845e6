//! Upstream side: pooled HTTP/1.1 keep-alive clients (hyper-util's pool) and the request body type.
//!
//! Clients are kept in a [`ClientRegistry`] keyed by their settings, outside the routing table, so
//! a table swap keeps every warm pooled connection. Connect timeout, idle timeout, pool size and
//! upstream TLS are per client, hence the key. Every client can speak TLS (hyper-rustls wraps the
//! connector; it only acts on `https` URIs, which ferry writes for backends with `tls`).
//!
//! [`UpstreamBody::Recoverable`] makes a streamed request body retryable when the upstream
//! connection was never established: hyper polls a body only once it is writing on a connection,
//! so if the body is dropped unpolled (the client gave up on connect) it sends itself back through
//! a oneshot and the next attempt can carry it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::config::{Backend, UpstreamTls};

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    tls: Option<UpstreamTls>,
}

/// Settings → client. Locked only while building a table.
#[derive(Default)]
pub struct ClientRegistry {
    map: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRegistry")
    }
}

impl ClientRegistry {
    pub fn get(&self, b: &Backend) -> UpstreamClient {
        let key = ClientKey {
            connect_timeout: b.connect_timeout,
            idle_timeout: b.idle_timeout,
            max_idle: b.max_idle_per_endpoint,
            tls: b.tls.clone(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_insert_with_key(new_client).clone()
    }
}

fn new_client(key: &ClientKey) -> UpstreamClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(key.connect_timeout));
    conn.set_keepalive(Some(Duration::from_secs(60)));
    conn.enforce_http(false);
    let tls = match &key.tls {
        // The files were checked before this config was accepted; should the CA have become
        // unreadable since, every handshake fails (502 naming the cause) rather than trusting anything.
        Some(t) => crate::tls::client_config(t).unwrap_or_else(|e| {
            tracing::error!(error = %e, "upstream CA unusable; TLS to this backend will fail");
            crate::tls::client_config_with_roots(rustls::RootCertStore::empty())
        }),
        None => crate::tls::client_config_with_roots(rustls::RootCertStore::empty()),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let https = match key.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.try_into().expect("validated when the config was read"),
        )),
        None => https,
    };
    let conn = https.enable_http1().wrap_connector(conn);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout)
        .pool_max_idle_per_host(key.max_idle)
        // ferry writes Host itself (the client's Host is kept by default).
        .set_host(false)
        .build(conn)
}

/// The body ferry sends upstream.
pub enum UpstreamBody {
    Empty,
    Stream(Incoming, Guard),
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
}

impl Guard {
    pub fn new(left: Option<u64>, timeout: Duration, min_rate: u64) -> Guard {
        Guard { left, timeout, min_rate, received: 0, waited: Duration::ZERO, waiting_since: None, timer: None }
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

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    /// Wraps `body` so it comes back through the returned receiver if it is dropped unsent.
    pub fn recoverable(body: Incoming, guard: Guard) -> (UpstreamBody, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (UpstreamBody::Recoverable(Recoverable { inner: Some(body), started: false, back: Some(tx), guard }), rx)
    }
}

pub struct Recoverable {
    inner: Option<Incoming>,
    started: bool,
    back: Option<oneshot::Sender<Incoming>>,
    guard: Guard,
}

/// Polls `b` under `guard`.
fn poll_guarded(
    b: &mut Incoming,
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
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
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
