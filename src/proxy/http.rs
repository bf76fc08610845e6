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

use std::cell::OnceCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ACCEPT_ENCODING, CONNECTION, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::actions;
use super::body::{ClientBody, ProxyBody};
use super::compress::compress;
use super::error::{CloseConnection, ProxyError};
use super::forward::Forward;
use super::h1;
use super::head;
use super::headers::routing_host;
use super::log;
use super::Active;
use crate::config::actions::LimitKey;
use crate::config::{Actions, Balance, Limits};
use crate::files::{FileBody, Served, Site};
use crate::metrics::RouteMetrics;
use crate::table::store::Store;
use crate::table::{RouteEntry, Table};
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
    port: HeaderValue,
    port_number: u16,
    /// Requests answered without a route (no match, or refused before routing): `route="none"`.
    unrouted: RouteMetrics,
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

    fn error(&self, kind: &str) {
        self.store.metrics.proxy_errors.with_label_values(&[&self.name, kind]).inc();
    }
}

/// What a route's actions leave for forwarding.
#[derive(Default)]
struct Todo {
    /// The target after a regex rewrite.
    target: Option<http::uri::PathAndQuery>,
    request_headers: Option<Vec<actions::HeaderOp>>,
    response_headers: Option<Vec<actions::HeaderOp>>,
}

/// One client connection's context, shared by its requests.
struct Conn {
    listener: Arc<HttpListener>,
    /// The client: the socket's peer, or the address a PROXY header gave.
    peer: SocketAddr,
    /// The client IP, formatted once for X-Forwarded-For.
    client_ip: HeaderValue,
    /// For X-Forwarded-Proto.
    proto: &'static str,
    /// The peer is a trusted proxy: its X-Forwarded-For is kept and appended to.
    trusted: bool,
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
    });
    let svc = {
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(answer(conn, req.map(ClientBody::Hyper)).await) }
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
    fn real_client(&self, headers: &http::HeaderMap, listener: &crate::table::ListenerRoutes) -> SocketAddr {
        if !self.trusted {
            return self.peer;
        }
        let ip = head::real_client(headers, &listener.trusted_proxies, self.peer.ip());
        SocketAddr::new(ip, if ip == self.peer.ip() { self.peer.port() } else { 0 })
    }

    fn fail(&self, route: Option<&RouteEntry>, e: ProxyError) -> Response<ProxyBody> {
        self.listener.error(e.kind());
        let status = e.status();
        match route {
            Some(r) => r.metrics.count(status.as_u16()),
            None => self.listener.unrouted.count(status.as_u16()),
        }
        debug!(listener = %self.listener.name, client = %self.peer, error = %e, "request failed");
        let mut resp = e.into_response();
        // nginx `error_page`: the route's (or, before routing, the listener's) page for this status.
        let page = |pages: Option<&crate::files::Pages>| pages.and_then(|p| p.get(status)).cloned();
        let page = match route {
            Some(r) => page(r.error_pages.as_deref()),
            None => {
                page(self.listener.store.load().listener(&self.listener.name).and_then(|l| l.error_pages.as_deref()))
            }
        };
        if let Some(body) = page {
            *resp.body_mut() = ProxyBody::full(body);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        }
        resp
    }

    /// A `static` route's answer: the file (or what the request's conditional and range headers
    /// ask for), its fallback, or a 404 through `fail` (so it gets the route's 404 page).
    async fn serve_files(
        &self,
        site: &Site,
        route: &RouteEntry,
        req: &Request<ClientBody>,
        response_headers: Option<&[actions::HeaderOp]>,
    ) -> Response<ProxyBody> {
        let path = || req.uri().path().to_string();
        let mut resp = match site.serve(req).await {
            Served::Answer(r) => r.map(|b| match b {
                FileBody::Memory(b) => ProxyBody::full(b),
                FileBody::Stream(s) => ProxyBody::boxed(s),
            }),
            Served::Redirect(to) => {
                let mut r = Response::new(ProxyBody::empty());
                *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                r.headers_mut().insert(LOCATION, to);
                r
            }
            Served::NotFound => {
                return self.fail(Some(route), ProxyError::FileNotFound { route: route.name.to_string(), path: path() })
            }
            Served::Failed(e) => {
                let cause = e.to_string();
                return self.fail(
                    Some(route),
                    ProxyError::FileUnreadable { route: route.name.to_string(), path: path(), cause },
                );
            }
        };
        route.metrics.count(resp.status().as_u16());
        if let Some(ops) = response_headers {
            let status = Some(resp.status());
            actions::apply_headers(ops, status, resp.headers_mut());
        }
        match route.compress {
            Some(min) => compress(req.headers().get(ACCEPT_ENCODING), resp, min),
            None => resp,
        }
    }

    /// Waits up to `hold` for a table in which `backend` has an endpoint.
    async fn hold_for_endpoints(&self, backend: &str, hold: Duration) -> Option<Arc<Table>> {
        let store = &self.listener.store;
        let mut versions = store.subscribe();
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let t = store.load();
            if t.backend(backend).is_some_and(|b| !b.endpoints.is_empty()) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, versions.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Runs a route's actions on the request: `Err(Ok(answer))` when the route answers itself
    /// (redirect, respond), `Err(Err(e))` when it refuses (access), else what forwarding needs.
    #[allow(clippy::result_large_err)]
    async fn act(
        &self,
        a: &Actions,
        route: &RouteEntry,
        req: &Request<ClientBody>,
        original: Option<&http::uri::PathAndQuery>,
        client: SocketAddr,
        with_id: bool,
    ) -> Result<Todo, Result<Response<ProxyBody>, ProxyError>> {
        if !a.access.is_empty() && !actions::access(&a.access, client.ip()) {
            return Err(Err(ProxyError::Forbidden { route: route.name.to_string(), client: client.ip() }));
        }
        if let (Some(l), Some(limiter)) = (&a.rate_limit, &route.limiter) {
            let ip;
            let key: Option<&[u8]> = match &l.key {
                LimitKey::ClientIp => {
                    ip = client.ip().to_canonical().to_string();
                    Some(ip.as_bytes())
                }
                LimitKey::Header(h) => req.headers().get(h).map(|v| v.as_bytes()).filter(|v| !v.is_empty()),
            };
            if key.is_some_and(|k| !limiter.admit(k)) {
                return Err(Err(ProxyError::RateLimited { route: route.name.to_string(), status: l.status }));
            }
        }
        if let (Some(b), Some(users)) = (&a.basic_auth, &route.auth) {
            if !users.check(req.headers().get(http::header::AUTHORIZATION)).await {
                return Err(Err(ProxyError::Unauthorized { route: route.name.to_string(), realm: b.realm.clone() }));
            }
        }
        let real_ip;
        let client_ip = if client == self.peer {
            &self.client_ip
        } else {
            real_ip = HeaderValue::from_str(&client.ip().to_string()).expect("an IP is a valid header value");
            &real_ip
        };
        let host = routing_host(req.uri().host(), req.headers().get(HOST));
        let vars = actions::RequestVars {
            method: req.method(),
            uri: req.uri(),
            original,
            headers: req.headers(),
            host: &host,
            client,
            client_ip,
            scheme: self.proto,
            server_port: self.listener.port_number,
            captures: actions::captures(a, route.path_regex.as_ref(), req.uri().path()),
            // The listener's X-Request-Id (set on the way in) is `$request_id`; else one is made
            // if a template asks.
            request_id: match req.headers().get(&log::X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
                Some(id) if with_id => OnceCell::from(id.to_string()),
                _ => OnceCell::new(),
            },
        };
        if let Some(resp) = actions::answer(a, &vars) {
            route.metrics.count(resp.status().as_u16());
            return Err(Ok(resp));
        }
        let render =
            |h: &crate::config::actions::HeaderActions| (!h.is_empty()).then(|| actions::render_headers(h, &vars));
        Ok(Todo {
            target: actions::rewrite_target(a, &vars),
            request_headers: render(&a.request_headers),
            response_headers: render(&a.response_headers),
        })
    }

    /// One request: the head checks, the path in normal form, the route (waiting for endpoints if
    /// the backend says so), the limits, the upstream head; then the attempts (`proxy::forward`).
    async fn handle(
        &self,
        mut req: Request<ClientBody>,
        mut table: Arc<Table>,
        info: &mut log::Info,
    ) -> Response<ProxyBody> {
        let bad = |reason| ProxyError::BadRequest { listener: self.listener.name.to_string(), reason };
        match head::check_target(&mut req) {
            Ok(()) => {}
            Err(head::Early::Bad(reason)) => return self.fail(None, bad(reason)),
            Err(head::Early::Coding) => {
                return self.fail(None, ProxyError::UnsupportedCoding { listener: self.listener.name.to_string() })
            }
            Err(head::Early::Connect) => {
                let method = req.method().to_string();
                return self
                    .fail(None, ProxyError::MethodNotAllowed { listener: self.listener.name.to_string(), method });
            }
        }
        let original = match head::normalize_target(&mut req) {
            Ok(original) => original,
            Err(e) => return self.fail(None, bad(e.reason())),
        };
        let started = Instant::now();
        let find = |t: &Table, req: &Request<ClientBody>| {
            let li = t.listener_index(&self.listener.name)?;
            Some((li, head::route_index(&t.listeners[li], req)?))
        };
        let mut found = find(&table, &req);
        if let Some(b) = found.and_then(|(li, ri)| table.listeners[li].routes[ri].backend) {
            let b = &table.backends[b];
            let hold = b.settings.hold_for_endpoints;
            if b.endpoints.is_empty() && !hold.is_zero() {
                let name = b.name.clone();
                if let Some(t) = self.hold_for_endpoints(&name, hold).await {
                    table = t;
                    found = find(&table, &req);
                }
            }
        }
        let Some((li, ri)) = found else {
            let host = routing_host(req.uri().host(), req.headers().get(HOST)).into_owned();
            let path = req.uri().path().to_string();
            return self.fail(None, ProxyError::NoRoute { listener: self.listener.name.to_string(), host, path });
        };
        let listener = &table.listeners[li];
        let route = &listener.routes[ri];
        if info.on {
            info.route = Some(route.name.clone());
        }
        if let Err(e) = head::check_limits(listener, route, &req) {
            return self.fail(Some(route), e);
        }
        // Behind a trusted proxy the client is the one its X-Forwarded-For names; read only where
        // something uses it (actions, client_ip balancing).
        let real_client = |req: &Request<ClientBody>| self.real_client(req.headers(), listener);
        let mut client = None;
        let mut todo = Todo::default();
        if let Some(a) = route.actions.as_deref() {
            let c = *client.insert(real_client(&req));
            // Boxed, here and for static files below: their futures are large and a plain
            // proxied request never needs them, while hyper keeps room for this whole future per
            // connection (touched pages stay resident while the connection idles).
            match Box::pin(self.act(a, route, &req, original.as_ref(), c, listener.request_id)).await {
                Ok(t) => todo = t,
                Err(Ok(resp)) => return resp,
                Err(Err(e)) => return self.fail(Some(route), e),
            }
        }
        let Some((backend, metrics)) = route.target().map(|(b, m)| (&*table.backends[b], m)) else {
            if let Some(site) = &route.files {
                return Box::pin(self.serve_files(site, route, &req, todo.response_headers.as_deref())).await;
            }
            // Every route without a backend answers itself (the config refuses anything else).
            let e = ProxyError::NoEndpoints { route: route.name.to_string(), backend: "none".into() };
            return self.fail(Some(route), e);
        };
        if info.on {
            info.backend = Some(backend.name.clone());
        }
        let client = match (client, backend.balancer.policy) {
            (Some(c), _) => c.ip(),
            (None, Balance::ClientIp) => real_client(&req).ip(),
            (None, _) => self.peer.ip(),
        };
        let accept = match route.compress {
            Some(_) => req.headers().get(ACCEPT_ENCODING).cloned(),
            None => None,
        };
        let upgrade = head::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let hop = head::Hop {
            client_ip: &self.client_ip,
            proto: self.proto,
            port: &self.listener.port,
            trusted: self.trusted,
        };
        let preserve_host = backend.settings.preserve_host;
        let head::UpstreamHead { mut headers, path_and_query } =
            head::upstream_head(route, preserve_host, &parts.uri, parts.headers, upgrade, &hop, todo.target);
        if let Some(ops) = &todo.request_headers {
            actions::apply_headers(ops, None, &mut headers);
        }
        if route.body_replace.is_some() {
            // Ask for an uncompressed answer: the replacement needs the text.
            headers.remove(http::header::ACCEPT_ENCODING);
        }
        let forward = Forward {
            route,
            metrics,
            backend,
            limits: &listener.limits,
            client,
            method: parts.method,
            headers,
            path_and_query,
            body: (!body.is_end_stream()).then(|| UnsyncBoxBody::new(body)),
            upgrade: client_upgrade,
            started,
            host_from_route: todo.request_headers.as_deref().is_some_and(|ops| actions::sets(ops, &HOST)),
            response_headers: todo.response_headers,
            info,
        };
        match forward.run().await {
            Ok(resp) => match route.compress {
                Some(min) => compress(accept.as_ref(), resp, min),
                None => resp,
            },
            Err(e) => self.fail(Some(route), e),
        }
    }
}
