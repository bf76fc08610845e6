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
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    Stream(Incoming, Option<Cap>),
    Recoverable(Recoverable),
}

/// A route's max_body_bytes on a body whose length is not known up front: past the limit the
/// body fails (the upstream sees an aborted request) and `tripped` tells the handler to answer 413.
pub struct Cap {
    pub left: u64,
    pub tripped: Arc<AtomicBool>,
}

#[derive(Debug)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body larger than max_body_bytes")
    }
}

impl std::error::Error for TooLarge {}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    /// Wraps `body` so it comes back through the returned receiver if it is dropped unsent.
    pub fn recoverable(body: Incoming, cap: Option<Cap>) -> (UpstreamBody, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (UpstreamBody::Recoverable(Recoverable { inner: Some(body), started: false, back: Some(tx), cap }), rx)
    }
}

pub struct Recoverable {
    inner: Option<Incoming>,
    started: bool,
    back: Option<oneshot::Sender<Incoming>>,
    cap: Option<Cap>,
}

/// Polls `b`, counting data against `cap`.
fn poll_capped(
    b: &mut Incoming,
    cap: &mut Option<Cap>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match Pin::new(b).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            if let (Some(c), Some(data)) = (cap.as_mut(), frame.data_ref()) {
                match c.left.checked_sub(data.len() as u64) {
                    Some(left) => c.left = left,
                    None => {
                        c.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                }
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
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
            UpstreamBody::Stream(b, cap) => poll_capped(b, cap, cx),
            UpstreamBody::Recoverable(r) => {
                r.started = true;
                match r.inner.as_mut() {
                    Some(b) => poll_capped(b, &mut r.cap, cx),
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
