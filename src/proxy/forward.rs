//! The attempt loop: one routed request, sent to an endpoint and, when it is safe, to another.
//!
//! A request reaches here with its route and backend chosen and its upstream head built
//! (`proxy::head`). Each attempt picks an endpoint (skipping those tried), sends, and either
//! returns the response ([`respond`]: hop-by-hop headers off, the body tracked for metrics and the
//! deadline, an upgrade joined into a tunnel) or fails. [`classify`] says what a failure means, as
//! Pingora marks retryability on its errors: who is at fault, and whether another endpoint may be
//! tried. The loop then retries only when the backend has somewhere else to go, the request body
//! (if any) is still in hand, and the failure allows it for this method.
//!
//! Route actions that run on the response (the next issues' header actions) belong in `respond`.

use std::error::Error as StdError;
use std::time::Instant;

use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::affinity;
use super::body::{ProxyBody, UpBody};
use super::error::ProxyError;
use super::headers::strip_hop_by_hop;
use super::log::Attempt;
use crate::balance::{InFlight, Tried};
use crate::config::route::LocationRewrite;
use crate::config::Limits;
use crate::config::RetryOn;
use crate::table::{BackendEntry, Endpoint, RouteEntry};
use crate::upstream::body::{BodyRefused, ClientBody, ClientBodyError, Guard, Progress, UpstreamBody, DONE, SENDING};
use crate::upstream::h1;
use std::sync::Arc;

use prometheus::Histogram;

/// Whether a failed attempt may be repeated on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the upstream (the connection was never made): any method.
    Any,
    /// The request may have been seen: only methods that are safe to repeat (RFC 9112 §9.3.1),
    /// unless the backend's `retry_on` says `non_idempotent`.
    Idempotent,
    /// The request itself is at fault (its body), or ferry refused it: never.
    No,
}

impl Retry {
    pub fn allows(self, m: &Method, on: &RetryOn) -> bool {
        match self {
            Retry::Any => true,
            Retry::Idempotent => on.replays(m),
            Retry::No => false,
        }
    }
}

/// A failed send, from ferry's own HTTP/1 client or hyper's (TLS upstreams, upgrades).
#[derive(Debug)]
pub enum SendError {
    Own(h1::Error),
    Hyper(hyper_util::client::legacy::Error),
}

impl SendError {
    fn is_connect(&self) -> bool {
        match self {
            SendError::Own(e) => e.is_connect(),
            SendError::Hyper(e) => e.is_connect(),
        }
    }

    fn error(&self) -> &(dyn StdError + 'static) {
        match self {
            SendError::Own(e) => e,
            SendError::Hyper(e) => e,
        }
    }
}

/// What a failed attempt means for the client, and whether another endpoint may be tried.
pub fn classify(send: &SendError, route: &RouteEntry, backend: &BackendEntry, ep: &Endpoint) -> (ProxyError, Retry) {
    let err = send.error();
    let r = || route.name.to_string();
    match BodyRefused::in_chain(err) {
        Some(BodyRefused::TooLarge) => {
            return (ProxyError::BodyTooLarge { route: r(), max: route.max_body_bytes.unwrap_or_default() }, Retry::No)
        }
        Some(BodyRefused::TooSlow) => return (ProxyError::BodyTimeout { route: r() }, Retry::No),
        None => {}
    }
    if ClientBodyError::in_chain(err) {
        return (ProxyError::ClientBody { route: r(), cause: causes(err) }, Retry::No);
    }
    let (backend, endpoint, cause) = (backend.name.to_string(), ep.addr.to_string(), causes(err));
    if send.is_connect() {
        (ProxyError::Connect { route: r(), backend, endpoint, cause }, Retry::Any)
    } else {
        (ProxyError::Upstream { route: r(), backend, endpoint, cause }, Retry::Idempotent)
    }
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

/// A routed request, ready to send: its upstream head and body, and what it needs per attempt.
pub struct Forward<'a> {
    pub route: &'a RouteEntry,
    pub backend: &'a BackendEntry,
    pub limits: &'a Limits,
    pub client: std::net::IpAddr,
    pub method: Method,
    pub headers: HeaderMap,
    pub path_and_query: PathAndQuery,
    /// The request body, when there is one.
    pub body: Option<ClientBody>,
    /// The client's side of an HTTP/1.1 upgrade, when the request asks for one.
    pub upgrade: Option<OnUpgrade>,
    pub started: Instant,
    /// Where the request's duration is observed when its response body ends (the route's
    /// handles for the backend chosen).
    pub duration: &'a Histogram,
    /// The route's request headers set Host: the endpoint's address does not replace it.
    pub host_from_route: bool,
    /// The route's `rewrite_location` rules, rendered for this request (`from`, `to`).
    pub redirects: Option<Vec<(String, String)>>,
    /// The access log's notes (attempts), when the listener logs.
    pub info: &'a mut super::log::Info,
}

impl Forward<'_> {
    /// Runs the attempts; the response, or the error the client gets.
    pub async fn run(self) -> Result<Response<ProxyBody>, ProxyError> {
        let Forward {
            route,
            backend,
            limits,
            client,
            method,
            mut headers,
            path_and_query,
            body,
            upgrade,
            started,
            duration,
            host_from_route,
            redirects,
            info,
        } = self;
        let settings = &backend.settings;
        let deadline = settings.request_timeout.map(|d| tokio::time::Instant::now() + d);
        // Retrying needs somewhere else to go.
        let retry_budget = if backend.endpoints.len() > 1 { settings.retries } else { 0 };
        let has_body = body.is_some();
        let mut pending_body = body;
        let mut tried = Tried::default();
        let mut last_error = None;
        let read_timeout = |not_upgrade: bool| settings.read_timeout.filter(|_| not_upgrade);
        let (r, b) = (|| route.name.to_string(), || backend.name.to_string());
        // Bodies are policed as they stream: size (when not declared up front) and pace.
        let guard = |progress: &Option<Arc<Progress>>| {
            Guard::new(route.max_body_bytes, limits.body_timeout, limits.min_body_rate, progress.clone())
        };
        // Sticky sessions: the endpoint the client's cookie names, while it is usable.
        let affinity = settings.affinity_cookie.as_ref();
        let mut pinned = affinity.and_then(|a| affinity::pinned(a, &headers, &backend.endpoints));
        let mut cookie_ok = pinned.is_some();
        loop {
            let pick = match pinned.take() {
                Some(i) => Some(i),
                None => {
                    cookie_ok = false;
                    backend.balancer.pick(&backend.endpoints, client, &tried)
                }
            };
            let Some(i) = pick else {
                return Err(last_error.unwrap_or_else(|| ProxyError::NoEndpoints {
                    route: route.name.to_string(),
                    backend: backend.name.to_string(),
                }));
            };
            tried.push(i);
            let ep = &backend.endpoints[i];
            let may_retry = tried.len() as u32 <= retry_budget;
            // A body is watched as it uploads (send_timeout, and read_timeout from its end).
            let progress = pending_body.as_ref().map(|_| Progress::new());
            let (up_body, mut back) = match pending_body.take() {
                None => (UpstreamBody::Empty, None),
                Some(b) if may_retry => {
                    let (b, rx) = UpstreamBody::recoverable(b, guard(&progress));
                    (b, Some(rx))
                }
                Some(b) => (UpstreamBody::Stream(b, guard(&progress)), None),
            };
            // Plain-text upstreams without an upgrade go through ferry's own client; TLS upstreams
            // and upgrades through hyper's.
            let own = settings.tls.is_none() && upgrade.is_none();
            let host = (!settings.preserve_host && !host_from_route).then_some(&ep.host_value);
            let up_headers = &mut headers;
            let send = async {
                if own {
                    let s = h1::Settings {
                        connect_timeout: settings.connect_timeout,
                        idle_timeout: settings.idle_timeout,
                        max_idle: settings.max_idle_per_endpoint,
                    };
                    let req = h1::Request {
                        method: &method,
                        target: path_and_query.as_str(),
                        headers: up_headers,
                        host,
                        body: up_body,
                        replay: settings.retry_on.replays(&method),
                    };
                    h1::send(&ep.pool, ep.addr, s, req).await.map(|r| r.map(UpBody::Own)).map_err(SendError::Own)
                } else {
                    let mut up = Request::new(up_body);
                    *up.method_mut() = method.clone();
                    *up.version_mut() = Version::HTTP_11;
                    let mut parts = http::uri::Parts::default();
                    parts.scheme = Some(if settings.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP });
                    parts.authority = Some(ep.authority.clone());
                    parts.path_and_query = Some(path_and_query.clone());
                    *up.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a valid URI");
                    *up.headers_mut() = match may_retry {
                        true => up_headers.clone(),
                        false => {
                            // Taken whole, but the Host stays known for the redirects of the answer.
                            let all = std::mem::take(up_headers);
                            if let Some(h) = all.get(HOST) {
                                up_headers.insert(HOST, h.clone());
                            }
                            all
                        }
                    };
                    if let Some(h) = host {
                        up.headers_mut().insert(HOST, h.clone());
                    }
                    let r = backend.client.request(up).await;
                    r.map(|r| r.map(UpBody::Hyper)).map_err(SendError::Hyper)
                }
            };

            let flight = ep.stats.start();
            // Read the clock for the access log only.
            let attempt_started = info.on.then(Instant::now);
            let timed = info.on && info.connect_time;
            // Only a log that shows connect times pays for the task-local that carries them.
            let sent = if timed {
                futures_util::future::Either::Left(crate::upstream::pool::CONNECT_TIME.scope(
                    std::cell::Cell::new(None),
                    async {
                        let r = send.await;
                        // Nothing reported: a pooled connection, nginx's 0.000.
                        let c = crate::upstream::pool::CONNECT_TIME.with(|c| c.get()).unwrap_or_default();
                        (r, Some(c))
                    },
                ))
            } else {
                futures_util::future::Either::Right(async { (send.await, None) })
            };
            // The head must come within read_timeout (and within what is left of request_timeout).
            let read_deadline = settings.read_timeout.map(|d| tokio::time::Instant::now() + d);
            let head_deadline = match (deadline, read_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let result = match &progress {
                None => match head_deadline {
                    Some(d) => tokio::time::timeout_at(d, sent).await.map_err(|_| Waited::Read),
                    None => Ok(sent.await),
                },
                Some(p) => tokio::select! {
                    r = sent => Ok(r),
                    w = watch_upload(p, settings.send_timeout, settings.read_timeout, deadline) => Err(w),
                },
            };
            let (result, connect) = match result {
                Ok((r, connect)) => (Ok(r), connect),
                Err(w) => (Err(w), None),
            };
            let mut note = |status: u16, header: Option<std::time::Duration>| {
                let addr = ep.addr;
                if let Some(started) = attempt_started {
                    info.attempt(Attempt { addr, status, started, header, connect })
                }
            };
            // The request body, if any, back in hand for another attempt? (Only a body hyper never
            // started to send comes back.)
            let mut body_back = || {
                if let (None, Some(mut rx)) = (&pending_body, back.take()) {
                    pending_body = rx.try_recv().ok();
                }
                !has_body || pending_body.is_some()
            };
            // A failed attempt: what the client would be told, whether another endpoint may be
            // tried, and whether the endpoint is to blame (passive health).
            let (error, retry, blame) = match result {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    // Retried on its status only if another endpoint is left (else the client gets it).
                    let another = tried.len() < backend.endpoints.len();
                    let retried = settings.retry_on.statuses.contains(&status)
                        && may_retry
                        && another
                        && settings.retry_on.replays(&method)
                        && body_back();
                    note(status, attempt_started.map(|t| t.elapsed()));
                    if !retried {
                        ep.stats.record_success();
                        let deadline = if upgrade.is_some() { None } else { deadline };
                        let read = read_timeout(upgrade.is_none());
                        let mut resp = respond(resp, duration, flight, started, deadline, read, upgrade);
                        // The Host the upstream got (an app builds its redirects from it): read
                        // only for an answer that redirects.
                        let paths = Paths { rewrite_location: settings.rewrite_location, host, headers: &headers };
                        fix_paths(resp.headers_mut(), route, paths, ep, redirects.as_deref());
                        if route.late_headers {
                            let status = resp.status().as_u16();
                            resp.extensions_mut().insert(super::actions::UpstreamAnswered { addr: ep.addr, status });
                        }
                        if let (Some(a), false) = (affinity, cookie_ok) {
                            affinity::set(a, resp.headers_mut(), ep.addr);
                        }
                        return Ok(resp);
                    }
                    // Nothing of this answer has reached the client: try another endpoint.
                    let cause = format!("answered {status}");
                    let e = ProxyError::Upstream { route: r(), backend: b(), endpoint: ep.addr.to_string(), cause };
                    (e, Retry::Idempotent, true)
                }
                Err(waited) => {
                    let whole = waited == Waited::Whole
                        || deadline.is_some_and(|d| Some(d) == head_deadline && progress.is_none());
                    let after = match waited {
                        _ if whole => settings.request_timeout,
                        Waited::Send => settings.send_timeout,
                        _ => settings.read_timeout,
                    };
                    let after_ms = after.unwrap_or_default().as_millis();
                    let e = ProxyError::Timeout { route: r(), backend: b(), endpoint: ep.addr.to_string(), after_ms };
                    let read = !whole && waited == Waited::Read && settings.retry_on.timeout;
                    note(e.status().as_u16(), None);
                    (e, if read { Retry::Idempotent } else { Retry::No }, true)
                }
                Ok(Err(err)) => {
                    let (e, retry) = classify(&err, route, backend, ep);
                    if matches!(e, ProxyError::Connect { .. }) {
                        backend.connect_errors.inc();
                    }
                    let allowed = match retry {
                        Retry::Any => settings.retry_on.connect,
                        Retry::Idempotent => settings.retry_on.reset,
                        Retry::No => false,
                    };
                    // Retry::No from classify: ferry refused the request body; not the endpoint's fault.
                    let blame = retry != Retry::No;
                    note(e.status().as_u16(), None);
                    (e, if allowed { retry } else { Retry::No }, blame)
                }
            };
            drop(flight);
            if blame {
                backend.endpoint_failed(ep);
            }
            if retry != Retry::No && may_retry && retry.allows(&method, &settings.retry_on) && body_back() {
                backend.retries.inc();
                last_error = Some(error);
                continue;
            }
            return Err(error);
        }
    }
}

/// The upstream's response on its way to the client: counted, hop-by-hop headers removed, the body
/// tracked until its end (endpoint busy, duration, deadline); a 101 to an upgrade request joins
/// both connections into a tunnel.
fn respond(
    mut resp: Response<UpBody>,
    duration: &Histogram,
    flight: InFlight,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    read_timeout: Option<std::time::Duration>,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
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
    let body = ProxyBody::upstream(body, flight, started, duration.clone(), deadline, read_timeout);
    Response::from_parts(parts, body)
}

/// Which limit an attempt ran into before the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The upstream stopped taking the request body (`send_timeout`).
    Send,
    /// No head within `read_timeout` (counted from the end of the upload).
    Read,
    /// `request_timeout`.
    Whole,
}

/// Watches an upload while its response head is awaited: the upstream may not stop taking the
/// body for `send` (nginx `proxy_send_timeout`; while the client is the slow one, its own
/// body_timeout applies instead), and once the body is sent the head must come within `read`
/// (nginx starts `proxy_read_timeout` there too). Returns the limit reached.
async fn watch_upload(
    p: &Progress,
    send: Option<std::time::Duration>,
    read: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
) -> Waited {
    let never = std::time::Duration::from_secs(86_400);
    loop {
        let (state, since) = p.since();
        let limit = match state {
            SENDING => send,
            DONE => read,
            _ => None,
        };
        let left = match limit {
            Some(l) if since >= l => return if state == DONE { Waited::Read } else { Waited::Send },
            Some(l) => l - since,
            // Waiting on the client (or no limit for this state): look again in a while.
            None => send.or(read).unwrap_or(never).min(std::time::Duration::from_secs(1)),
        };
        let wake = tokio::time::Instant::now() + left;
        match deadline {
            Some(d) if d <= wake => {
                tokio::time::sleep_until(d).await;
                return Waited::Whole;
            }
            _ => tokio::time::sleep_until(wake).await,
        }
    }
}

/// The backend's `rewrite_location`, and where the Host the upstream was sent is: the endpoint's
/// (`host`) or the request's own.
struct Paths<'a> {
    rewrite_location: bool,
    host: Option<&'a http::HeaderValue>,
    headers: &'a http::HeaderMap,
}

/// Redirects and cookie paths as the client must see them (`rewrite_location`,
/// `rewrite_cookie_path`): the endpoint's own address becomes a path, and the prefix the route
/// removed is put back. Costs one pass over the names (no hashing) on a response without them.
fn fix_paths(
    h: &mut http::HeaderMap,
    route: &RouteEntry,
    paths: Paths<'_>,
    ep: &Endpoint,
    redirects: Option<&[(String, String)]>,
) {
    let rewrite_location = paths.rewrite_location;
    let prefix = route.prefix_rewrite.as_deref().zip(route.path_prefix.as_deref()).map(|(with, p)| (p, with));
    let auto = match &route.rewrite_location {
        None => rewrite_location,
        Some(LocationRewrite::Auto) => true,
        Some(LocationRewrite::Off | LocationRewrite::Rules(_)) => false,
    };
    let redirecting = || h.keys().any(|k| k == http::header::LOCATION || k == http::header::REFRESH);
    if let Some(rules) = redirects.filter(|_| redirecting()) {
        super::headers::redirect_rules(h, rules);
    } else if auto && redirecting() {
        let sent_host = paths.host.or_else(|| paths.headers.get(HOST));
        super::headers::rewrite_location(h, &ep.authority, sent_host, prefix);
    }
    if let (true, Some((p, with))) = (route.rewrite_cookie_path, prefix) {
        super::headers::rewrite_cookie_paths(h, p, with);
    }
    if let Some(rules) = &route.cookie_paths {
        super::headers::cookie_path_rules(h, rules);
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
