//! The HTTP listener: accept → PROXY header and TLS if configured → ferry's own HTTP/1 server
//! (`proxy::h1`; plain-text connections) or hyper's (TLS, h2c, and whatever `h1` hands over) → for each
//! request, the head checks, the path in normal form, the route (waiting for endpoints when the
//! backend holds), the limits and the upstream head (`proxy::head`); then `proxy::forward` runs the
//! attempts.
//!
//! Clients speak HTTP/1.1 or HTTP/2 (h2c with prior knowledge, or h2 by ALPN over TLS, detected per
//! connection). The table is loaded once per request; everything else a request touches is in it
//! or in the connection's context. Every answer ferry gives itself goes through `Conn::fail`: one
//! place that counts it (by route, or as `route="none"`) and logs it at debug.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::body::{ClientBody, ProxyBody};
use super::error::CloseConnection;
use super::h1::NoAnswer;

/// The service error that stands for [`NoAnswer`].
#[derive(Debug)]
struct NoAnswerError;

impl std::fmt::Display for NoAnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed without an answer (444)")
    }
}

impl std::error::Error for NoAnswerError {}
use super::h1;
use super::head;
use super::log;
use super::Active;
use crate::config::Limits;
use crate::metrics::RouteMetrics;
use crate::table::store::Store;
use crate::tls::ServerTls;

/// The TLS a listener terminates, if any: swapped by the control plane, read once per connection.
pub type TlsSlot = Arc<arc_swap::ArcSwapOption<ServerTls>>;

/// Shared by every connection of one HTTP listener.
pub struct HttpListener {
    pub name: Arc<str>,
    pub store: Arc<Store>,
    tls: TlsSlot,
    /// The hyper server settings for the listener's current limits, rebuilt when they change.
    builder: arc_swap::ArcSwap<(Limits, auto::Builder<TokioExecutor>)>,
    connections: IntCounter,
    active: IntGauge,
    /// The port clients connect to, for X-Forwarded-Port and `$server_port`.
    pub(super) port: HeaderValue,
    pub(super) port_number: u16,
    /// Requests answered without a route (no match, or refused before routing): `route="none"`.
    pub(super) unrouted: RouteMetrics,
}

/// hyper's server for these limits: a head over `max_header_bytes` or with more than `max_headers`
/// headers gets 431 from hyper itself; a head not complete within `header_read_timeout` closes.
fn http_builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .keep_alive(true)
        // A client may shut down its write side once its request is sent and still wait for the
        // answer (as nginx allows); without this hyper drops the request on that EOF.
        .half_close(true)
        .max_buf_size(l.max_header_bytes)
        .max_headers(l.max_headers);
    b.http2().timer(TokioTimer::new()).max_header_list_size(l.max_header_bytes.try_into().unwrap_or(u32::MAX));
    b
}

impl HttpListener {
    /// `port`: the port the listener is bound to.
    pub fn new(name: &str, port: u16, store: Arc<Store>, tls: TlsSlot) -> HttpListener {
        let m = &store.metrics;
        HttpListener {
            name: name.into(),
            port: HeaderValue::from(port),
            port_number: port,
            unrouted: m.route(name, "none", "none"),
            connections: m.connections.with_label_values(&[name]),
            active: m.connections_active.with_label_values(&[name]),
            tls,
            builder: arc_swap::ArcSwap::from_pointee((Limits::default(), http_builder(&Limits::default()))),
            store,
        }
    }

    fn builder_for(&self, limits: &Limits) -> auto::Builder<TokioExecutor> {
        let cur = self.builder.load();
        if cur.0 == *limits {
            return cur.1.clone();
        }
        let fresh = http_builder(limits);
        self.builder.store(Arc::new((limits.clone(), fresh.clone())));
        fresh
    }

    pub(super) fn error(&self, kind: &str) {
        self.store.metrics.proxy_errors.with_label_values(&[&self.name, kind]).inc();
    }
}

/// One client connection's context, shared by its requests.
pub(super) struct Conn {
    pub(super) listener: Arc<HttpListener>,
    /// The client: the socket's peer, or the address a PROXY header gave.
    pub(super) peer: SocketAddr,
    /// The client IP, formatted once for X-Forwarded-For.
    pub(super) client_ip: HeaderValue,
    /// For X-Forwarded-Proto.
    pub(super) proto: &'static str,
    /// The peer is a trusted proxy: its X-Forwarded-For is kept and appended to.
    pub(super) trusted: bool,
    /// On a TLS listener that asks for client certificates: what the handshake gave.
    pub(super) client_tls: std::sync::OnceLock<ClientTls>,
}

/// A TLS connection's client certificate, on a listener that asks for one (`tls.client_ca`).
#[derive(Debug)]
pub struct ClientTls {
    /// A request without a certificate gets 400 (`client_certificate: required`).
    pub required: bool,
    /// The certificate, verified against the CA by the handshake.
    pub cert: Option<crate::tls::ClientCert>,
}

/// Serves `listener` until `stop` turns true (or its sender is dropped); then stops accepting,
/// asks every connection to finish gracefully (HTTP/1: `Connection: close` after the in-flight
/// response, idle ones closed; HTTP/2: GOAWAY) and returns when they are all done.
pub async fn serve(listener: TcpListener, shared: Arc<HttpListener>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    // Tells ferry's own HTTP/1 connections to finish (hyper's are told through `graceful`, whose
    // watchers every connection holds, so `shutdown` below waits for both kinds).
    let (drain_tx, drain) = watch::channel(false);
    let mut accept_errors = 0u64;
    while !*stop.borrow() {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    super::accept_failed(&shared.name, &e, &mut accept_errors).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        shared.connections.inc();
        let Some(active) = Active::admit(&shared.store, &shared.name, &shared.active) else {
            shared.error("max_connections");
            tokio::spawn(refuse(stream));
            continue;
        };
        tokio::spawn(connection(shared.clone(), active, (graceful.watcher(), drain.clone()), stream, peer));
    }
    drop(listener);
    drain_tx.send_replace(true);
    graceful.shutdown().await;
}

/// Over max_connections: a plain 503 and close, without reading the request (a TLS client sees
/// the connection end instead).
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = "ferry: too many connections on this listener\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\n\
         x-ferry-error: max_connections\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// One client connection: PROXY header and TLS handshake if the listener has them, then HTTP.
async fn connection(
    shared: Arc<HttpListener>,
    _active: Active,
    (watcher, drain): (Watcher, watch::Receiver<bool>),
    mut stream: TcpStream,
    mut peer: SocketAddr,
) {
    // The listener's settings as of this connection's start.
    let table = shared.store.load();
    let listener = table.listener(&shared.name);
    if listener.is_some_and(|l| l.proxy_protocol) {
        match Box::pin(super::proxy_protocol::accept(&mut stream, peer)).await {
            Ok(client) => peer = client,
            Err(e) => {
                shared.error("proxy_protocol");
                debug!(listener = %shared.name, client = %peer, error = %e, "PROXY header refused");
                return;
            }
        }
    }
    // Boxed: kept for a hand-over to hyper, and small in the connection's task.
    let limits = Box::new(listener.map_or(&Limits::default(), |l| &l.limits).clone());
    let own = h1::Settings {
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    let ip = peer.ip().to_canonical();
    let trusted = listener.is_some_and(|l| l.trusted_proxies.iter().any(|n| n.contains(&ip)));
    drop(table);
    let tls = shared.tls.load_full();
    let conn = Arc::new(Conn {
        listener: shared.clone(),
        peer,
        client_ip: HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value"),
        proto: if tls.is_some() { "https" } else { "http" },
        trusted,
        client_tls: std::sync::OnceLock::new(),
    });
    let svc = {
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            let conn = conn.clone();
            async move {
                let resp = answer(conn, req.map(ClientBody::Hyper)).await;
                // `return 444`: hyper closes the connection (HTTP/1) or resets the stream (HTTP/2)
                // on a service error, writing nothing.
                match resp.extensions().get::<NoAnswer>() {
                    Some(_) => Err(NoAnswerError),
                    None => Ok(resp),
                }
            }
        })
    };
    // hyper's connection futures are large: boxed, so an idle connection on ferry's own server
    // (most of them) keeps a small task.
    let result = match tls {
        // Plain HTTP/1: ferry's own server, which hands anything unusual (h2c, upgrades, heads
        // it does not take) to hyper with the bytes it read.
        None => {
            let handle = |req: Request<h1::Body>| -> h1::Answer<ProxyBody> {
                Box::pin(answer(conn.clone(), req.map(ClientBody::Own)))
            };
            match h1::serve(stream, own, drain, handle).await {
                h1::Outcome::Closed => Ok(()),
                h1::Outcome::HandOff(stream, read) => {
                    let io = TokioIo::new(h1::Rewind::new(stream, read));
                    let builder = shared.builder_for(&limits);
                    Box::pin(watcher.watch(builder.serve_connection_with_upgrades(io, svc).into_owned())).await
                }
            }
        }
        // The handshake's result holds the TLS stream: boxed with the rest, off the task.
        Some(tls) => {
            Box::pin(async {
                match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        if let Some(auth) = &tls.client {
                            let der = s.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
                            let cert = der.and_then(|d| crate::tls::ClientCert::from_der(&d));
                            let _ = conn.client_tls.set(ClientTls { required: auth.required, cert });
                        }
                        // ALPN decides the protocol (RFC 7301, RFC 9113 §3.2): on a connection that
                        // chose h2 nothing but HTTP/2 is ever read or written (an invalid preface
                        // closes it, as §3.4 requires, instead of being answered in HTTP/1).
                        // hyper-util's `serve_connection_with_upgrades` sniffs the first bytes
                        // whatever the builder says, so h2 goes through `serve_connection` (HTTP/2
                        // has no Upgrade). Without ALPN, or with http/1.1, the first bytes decide,
                        // as on plain text.
                        let builder = shared.builder_for(&limits);
                        match s.get_ref().1.alpn_protocol() {
                            Some(b"h2") => {
                                let builder = builder.http2_only();
                                watcher.watch(builder.serve_connection(TokioIo::new(s), svc).into_owned()).await
                            }
                            _ => {
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
                                watcher.watch(conn.into_owned()).await
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        shared.error("tls_handshake");
                        debug!(listener = %shared.name, client = %peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        shared.error("tls_handshake");
                        Ok(())
                    }
                }
            })
            .await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "client connection ended with an error");
    }
}

/// One request's answer: request ID and trace context, the access log, `Conn::handle`, and the
/// `Connection: close` that errors and draining ask for.
async fn answer(conn: Arc<Conn>, mut req: Request<ClientBody>) -> Response<ProxyBody> {
    let h1 = req.version() <= Version::HTTP_11;
    let table = conn.listener.store.load();
    let mut rid = None;
    let mut pending = None;
    if let Some(l) = table.listener(&conn.listener.name) {
        let made = l.request_id.then(|| log::request_id(req.headers_mut(), conn.trusted));
        log::trace_context(req.headers_mut(), &l.trace_context, made.as_ref().and_then(|m| m.1));
        rid = made.map(|m| m.0);
        pending = l.access_log.clone().map(|log| {
            let client = log::Client {
                listener: &conn.listener.name,
                addr: conn.real_client(req.headers(), l),
                scheme: conn.proto,
                server_port: conn.listener.port_number,
            };
            log::Pending::new(log, &req, client, rid.clone())
        });
    }
    let mut info = log::Info::for_log(pending.as_ref());
    let mut resp = conn.handle(req, table, &mut info).await;
    if let Some(rid) = rid {
        resp.headers_mut().insert(log::X_REQUEST_ID.clone(), rid);
    }
    // Errors that leave the connection unusable say so; while draining, every answer does, so a
    // busy keep-alive client leaves after it, race-free, instead of having its idle connection
    // closed under it when the listener stops.
    let close = resp.extensions().get::<CloseConnection>().is_some()
        || (resp.status() != StatusCode::SWITCHING_PROTOCOLS && conn.listener.store.draining());
    if h1 && close {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(p) = pending {
        resp = p.finish(resp, info);
    }
    resp
}

impl Conn {
    /// The client as actions, balancing, `$remote_addr` and the access log see it: the peer, or
    /// behind a trusted proxy the address its X-Forwarded-For names (port unknown then: 0).
    pub(super) fn real_client(&self, headers: &http::HeaderMap, listener: &crate::table::ListenerRoutes) -> SocketAddr {
        if !self.trusted {
            return self.peer;
        }
        let ip = head::real_client(headers, &listener.trusted_proxies, self.peer.ip());
        SocketAddr::new(ip, if ip == self.peer.ip() { self.peer.port() } else { 0 })
    }
}
