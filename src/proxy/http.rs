//! The HTTP data plane: accept → route lookup → pick an endpoint → pooled upstream → response.
//!
//! Clients speak HTTP/1.1 or HTTP/2 (h2c with prior knowledge, or h2 by ALPN over TLS, detected
//! per connection), optionally behind a PROXY protocol header and/or TLS (certificate by SNI, see
//! `crate::tls`); upstreams get HTTP/1.1 (or HTTPS) over pooled keep-alive connections. Bodies stream both ways. The table is loaded
//! once per request; everything else a request touches is in it or in the connection's context.
//! Retries move a request to another endpoint after a connect failure (any method: nothing was
//! sent) or a failure before any response byte (idempotent methods only).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONNECTION, HOST};
use http::uri::Scheme;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::body::ProxyBody;
use super::client::{BodyRefused, Guard, UpstreamBody};
use super::error::{CloseConnection, ProxyError};
use super::head;
use super::headers::{routing_host, strip_hop_by_hop};
use super::Active;
use crate::balance::{InFlight, Tried};
use crate::config::Limits;
use crate::table::store::Store;
use crate::table::{BackendEntry, RouteEntry, Table};
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
}

/// hyper's server for these limits: a head over `max_header_bytes` or with more than `max_headers`
/// headers gets 431 from hyper itself; a head not complete within `header_read_timeout` closes.
fn http_builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(l.max_header_bytes)
        .max_headers(l.max_headers);
    b.http2().timer(TokioTimer::new()).max_header_list_size(l.max_header_bytes.try_into().unwrap_or(u32::MAX));
    b
}

impl HttpListener {
    pub fn new(name: &str, store: Arc<Store>, tls: TlsSlot) -> HttpListener {
        let m = &store.metrics;
        HttpListener {
            name: name.into(),
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
        tokio::spawn(connection(shared.clone(), active, graceful.watcher(), stream, peer));
    }
    drop(listener);
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
    watcher: Watcher,
    mut stream: TcpStream,
    mut peer: SocketAddr,
) {
    // The listener's settings as of this connection's start.
    let table = shared.store.load();
    let listener = table.listener(&shared.name);
    if listener.is_some_and(|l| l.proxy_protocol) {
        match super::proxy_protocol::accept(&mut stream, peer).await {
            Ok(client) => peer = client,
            Err(e) => {
                shared.error("proxy_protocol");
                debug!(listener = %shared.name, client = %peer, error = %e, "PROXY header refused");
                return;
            }
        }
    }
    let builder = shared.builder_for(listener.map_or(&Limits::default(), |l| &l.limits));
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
    let svc = service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        async move {
            let h1 = req.version() <= Version::HTTP_11;
            let mut resp = conn.handle(req).await;
            // Errors that leave the connection unusable say so; while draining, every answer does,
            // so a busy keep-alive client leaves after it, race-free, instead of having its idle
            // connection closed under it when the listener stops.
            let close = resp.extensions().get::<CloseConnection>().is_some()
                || (resp.status() != StatusCode::SWITCHING_PROTOCOLS && conn.listener.store.draining());
            if h1 && close {
                resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let result = match tls {
        None => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned()).await,
        Some(tls) => match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
            Ok(Ok(s)) => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(s), svc).into_owned()).await,
            Ok(Err(e)) => {
                shared.error("tls_handshake");
                debug!(listener = %shared.name, client = %peer, error = %e, "TLS handshake failed");
                Ok(())
            }
            Err(_) => {
                shared.error("tls_handshake");
                Ok(())
            }
        },
    };
    if let Err(e) = result {
        debug!(error = %e, "client connection ended with an error");
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: Connection refused").
fn causes(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Conn {
    fn fail(&self, route: Option<&RouteEntry>, e: ProxyError) -> Response<ProxyBody> {
        self.listener.store.metrics.proxy_errors.with_label_values(&[&self.listener.name, e.kind()]).inc();
        if let Some(r) = route {
            r.metrics.count(e.status().as_u16());
        }
        debug!(listener = %self.listener.name, client = %self.peer, error = %e, "request failed");
        e.into_response()
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

    async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        if let Some(reason) = head::ambiguous(&req) {
            return self.fail(None, ProxyError::BadRequest { listener: self.listener.name.to_string(), reason });
        }
        let started = Instant::now();
        let mut table = self.listener.store.load();
        let find = |t: &Table, req: &Request<Incoming>| {
            let li = t.listener_index(&self.listener.name)?;
            Some((li, head::route_index(&t.listeners[li], req)?))
        };
        let mut found = find(&table, &req);
        if let Some((li, ri)) = found {
            let b = &table.backends[table.listeners[li].routes[ri].backend];
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
        let route = &table.listeners[li].routes[ri];
        let backend: &BackendEntry = &table.backends[route.backend];
        if let Err(e) = head::check_limits(&table.listeners[li], route, &req) {
            return self.fail(Some(route), e);
        }

        let upgrade = head::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let client = head::Client { ip: &self.client_ip, proto: self.proto, trusted: self.trusted };
        let head::UpstreamHead { mut headers, path_and_query: pq } =
            head::upstream_head(route, backend.settings.preserve_host, &parts.uri, parts.headers, upgrade, &client);
        let method = parts.method;
        let deadline = backend.settings.request_timeout.map(|d| tokio::time::Instant::now() + d);
        // Retrying needs somewhere else to go.
        let retry_budget = if backend.endpoints.len() > 1 { backend.settings.retries } else { 0 };
        let has_body = !body.is_end_stream();
        let mut pending_body = has_body.then_some(body);
        let mut tried = Tried::default();
        let mut last_error = None;
        // Bodies are policed as they stream: size (when not declared up front) and pace.
        let limits = &table.listeners[li].limits;
        let guard = || Guard::new(route.max_body_bytes, limits.body_timeout, limits.min_body_rate);

        loop {
            let Some(i) = backend.balancer.pick(&backend.endpoints, self.peer.ip(), &tried) else {
                let e = last_error.unwrap_or_else(|| ProxyError::NoEndpoints {
                    route: route.name.to_string(),
                    backend: backend.name.to_string(),
                });
                return self.fail(Some(route), e);
            };
            tried.push(i);
            let ep = &backend.endpoints[i];
            let may_retry = tried.len() as u32 <= retry_budget;
            let (up_body, mut back) = match pending_body.take() {
                None => (UpstreamBody::Empty, None),
                Some(b) if may_retry => {
                    let (b, rx) = UpstreamBody::recoverable(b, guard());
                    (b, Some(rx))
                }
                Some(b) => (UpstreamBody::Stream(b, guard()), None),
            };
            let mut up = Request::new(up_body);
            *up.method_mut() = method.clone();
            *up.version_mut() = Version::HTTP_11;
            let mut up_parts = http::uri::Parts::default();
            up_parts.scheme = Some(if backend.settings.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP });
            up_parts.authority = Some(ep.authority.clone());
            up_parts.path_and_query = Some(pq.clone());
            *up.uri_mut() = Uri::from_parts(up_parts).expect("scheme, authority and path make a valid URI");
            *up.headers_mut() = if may_retry { headers.clone() } else { std::mem::take(&mut headers) };
            if !backend.settings.preserve_host {
                up.headers_mut().insert(HOST, ep.host_value.clone());
            }

            let flight = ep.stats.start();
            let sent = backend.client.request(up);
            let result = match deadline {
                Some(d) => tokio::time::timeout_at(d, sent).await,
                None => Ok(sent.await),
            };
            match result {
                Err(_elapsed) => {
                    let after_ms = backend.settings.request_timeout.unwrap_or_default().as_millis();
                    let e = ProxyError::Timeout {
                        route: route.name.to_string(),
                        backend: backend.name.to_string(),
                        endpoint: ep.addr.to_string(),
                        after_ms,
                    };
                    return self.fail(Some(route), e);
                }
                Ok(Ok(resp)) => {
                    ep.stats.record_success();
                    let deadline = if client_upgrade.is_some() { None } else { deadline };
                    return self.respond(resp, route, flight, started, deadline, client_upgrade);
                }
                Ok(Err(err)) => {
                    drop(flight);
                    match BodyRefused::in_chain(&err) {
                        Some(BodyRefused::TooLarge) => {
                            let max = route.max_body_bytes.unwrap_or_default();
                            let e = ProxyError::BodyTooLarge { route: route.name.to_string(), max };
                            return self.fail(Some(route), e);
                        }
                        Some(BodyRefused::TooSlow) => {
                            let e = ProxyError::BodyTimeout { route: route.name.to_string() };
                            return self.fail(Some(route), e);
                        }
                        None => {}
                    }
                    let connect = err.is_connect();
                    if connect {
                        backend.connect_errors.inc();
                    }
                    backend.endpoint_failed(ep);
                    if let Some(rx) = back.as_mut() {
                        pending_body = rx.try_recv().ok();
                    }
                    let body_ok = !has_body || pending_body.is_some();
                    let (route_name, backend_name, endpoint, cause) =
                        (route.name.to_string(), backend.name.to_string(), ep.addr.to_string(), causes(&err));
                    last_error = Some(if connect {
                        ProxyError::Connect { route: route_name, backend: backend_name, endpoint, cause }
                    } else {
                        ProxyError::Upstream { route: route_name, backend: backend_name, endpoint, cause }
                    });
                    if may_retry && body_ok && (connect || idempotent(&method)) {
                        backend.retries.inc();
                        continue;
                    }
                    let e = last_error.take().expect("set just above");
                    return self.fail(Some(route), e);
                }
            }
        }
    }

    fn respond(
        &self,
        mut resp: Response<Incoming>,
        route: &RouteEntry,
        flight: InFlight,
        started: Instant,
        deadline: Option<tokio::time::Instant>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<ProxyBody> {
        let status = resp.status();
        route.metrics.count(status.as_u16());
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client) = client_upgrade {
                let upstream = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client, upstream, flight));
                let (mut parts, _) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, true);
                return Response::from_parts(parts, ProxyBody::empty());
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = ProxyBody::upstream(body, flight, started, route.metrics.duration.clone(), deadline);
        Response::from_parts(parts, body)
    }
}

/// Joins the client's and the upstream's upgraded connections and copies both ways until either
/// side closes. The endpoint counts as busy for as long as the tunnel lives.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, flight: InFlight) {
    let (c, u) = tokio::join!(client, upstream);
    match (c, u) {
        (Ok(c), Ok(u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        (c, u) => debug!(client = c.is_ok(), upstream = u.is_ok(), "upgrade did not complete"),
    }
    drop(flight);
}
