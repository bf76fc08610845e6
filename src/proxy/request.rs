//! One request's lifecycle, in named phases (pingora's `ProxyHttp` is the model). A reader finds
//! where a thing happens by its phase:
//!
//! 1. **early** — the rules a request must meet before anything reads it (`head::check_target`:
//!    target forms, Host, absolute-form authority, CONNECT, transfer codings) and its path in
//!    normal form. Refusals here are counted as `route="none"`.
//! 2. **route** — the listener's route for the request's host, path, method and headers; a
//!    backend without endpoints may hold the request until one appears (`hold_for_endpoints`);
//!    then the limits the head alone decides (414, 413).
//! 3. **actions** — access, rate limit, basic auth; an answer of the route's own (redirect,
//!    respond); else what forwarding needs: the rewritten target and the header operations.
//! 4. **forward** (`proxy::forward`: endpoints, attempts, retries, one send through ferry's
//!    client or hyper's) or **files** (a static route).
//! 5. **respond** — the one response filter every answer goes through: ferry's own errors become
//!    their response (and the route's or listener's error page), the status is counted once (by
//!    the route's handles for the backend chosen, or `route="none"`), and on answers that came
//!    through: the route's body replacement, its response header actions and compression.
//!
//! The context a request needs is computed once and passed along: the table (loaded once, or
//! the one a hold waited for), the routing host, the target as sent, the real client (when
//! something asks for it). The envelope around the phases — request ID, trace context, access
//! log, `Connection: close` — is `proxy::http::answer`.

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, LOCATION};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use tracing::debug;

use super::actions::{self, HeaderOp};
use super::body::{ClientBody, ProxyBody};
use super::compress::compress;
use super::error::{ProxyError, MAX_REROUTES};
use super::forward::Forward;
use super::head;
use super::headers::{self, routing_host};
use super::http::Conn;
use super::log;
use crate::config::actions::{ForwardAuth, LimitKey, Rewrite};
use crate::config::route::LocationRewrite;
use crate::config::{Actions, Balance};
use crate::files::{FileBody, Served, Site};
use crate::metrics::RouteMetrics;
use crate::table::{BackendEntry, ListenerRoutes, RouteEntry, Table};

/// The head of a `forward_auth` request: the client's headers without hop-by-hop ones and body
/// framing, the route's `headers` over them (an empty value removes), and the target; `None` when
/// the target does not render to a valid one.
fn auth_request(
    f: &ForwardAuth,
    req: &Request<ClientBody>,
    vars: &actions::RequestVars<'_>,
) -> Option<(HeaderMap, PathAndQuery)> {
    let mut headers = req.headers().clone();
    headers::strip_hop_by_hop(&mut headers, false);
    for h in [http::header::CONTENT_LENGTH, http::header::EXPECT] {
        headers.remove(h);
    }
    for (name, t) in &f.headers {
        match HeaderValue::from_str(&t.render(vars)) {
            Ok(v) if !v.is_empty() => drop(headers.insert(name.clone(), v)),
            _ => drop(headers.remove(name)),
        }
    }
    Some((headers, PathAndQuery::try_from(f.path.render(vars)).ok()?))
}

/// Where a side request's timing goes (`forward_auth`, `intercept_errors`): not a route's duration
/// (the request it serves is timed as a whole), and not exported.
static SIDE_DURATION: std::sync::LazyLock<prometheus::Histogram> = std::sync::LazyLock::new(|| {
    prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("side_request", "not exported"))
        .expect("valid histogram")
});
use crate::upstream::replace::{Replaced, Replacer};

/// What a route's actions leave for forwarding.
#[derive(Default)]
struct Todo {
    /// The target after a regex rewrite.
    target: Option<PathAndQuery>,
    request_headers: Option<Vec<HeaderOp>>,
    response_headers: Option<Vec<HeaderOp>>,
}

/// How a phase ended the request early.
enum Reply {
    /// The route answers itself (redirect, respond); boxed, as it is the rare outcome.
    Answer(Box<Response<ProxyBody>>),
    /// Refused: ferry's own error response.
    Error(Box<ProxyError>),
}

/// What the response filter needs to know about how the answer came about.
struct Filter<'t> {
    route: Option<&'t RouteEntry>,
    /// The handles the status is counted on (a split route has one per backend).
    metrics: Option<&'t RouteMetrics>,
    /// The answer came through (upstream or files): body replacement, header actions and
    /// compression apply.
    through: bool,
    head_request: bool,
    response_headers: Option<Vec<HeaderOp>>,
    accept_encoding: Option<HeaderValue>,
    /// When the request's head arrived (`$request_time`), for a route whose headers need it.
    started: Option<Instant>,
}

impl<'t> Filter<'t> {
    fn unrouted() -> Filter<'t> {
        Filter {
            route: None,
            metrics: None,
            through: false,
            head_request: false,
            response_headers: None,
            accept_encoding: None,
            started: None,
        }
    }

    /// The late variables of a route's response headers, if it has any.
    fn late(&self, resp: &Response<ProxyBody>) -> Option<actions::Late> {
        let started = self.started.filter(|_| self.route.is_some_and(|r| r.late_headers))?;
        let upstream = resp.extensions().get::<actions::UpstreamAnswered>().copied();
        Some(actions::Late { upstream, elapsed: started.elapsed() })
    }

    fn routed(route: &'t RouteEntry) -> Filter<'t> {
        Filter { route: Some(route), metrics: Some(&route.metrics), ..Filter::unrouted() }
    }
}

impl Conn {
    /// One request through the phases.
    pub(super) async fn handle(
        &self,
        mut req: Request<ClientBody>,
        table: Arc<Table>,
        info: &mut log::Info,
    ) -> Response<ProxyBody> {
        // 1. early
        let original = match self.early(&mut req) {
            Ok(o) => o,
            Err(e) => return self.respond(Err(e), Filter::unrouted(), &table),
        };
        // The host every later phase routes and renders with (Host now agrees with the target).
        let host = routing_host(req.uri().host(), req.headers().get(HOST)).into_owned();
        let started = Instant::now();

        // 2. route (again with the new path after a `rewrite.reroute`, as nginx's `last`)
        let (mut original, mut table, mut rerouted) = (original, table, 0);
        let (table, li, ri) = loop {
            let (t, li, ri) = match self.route(table, &req, original.as_ref(), &host).await {
                Ok(found) => found,
                Err((table, e)) => return self.respond(Err(e), Filter::unrouted(), &table),
            };
            let (listener, route) = (&t.listeners[li], &t.listeners[li].routes[ri]);
            let Some(target) = self.reroute(route, listener, &req, original.as_ref(), &host) else {
                break (t, li, ri);
            };
            rerouted += 1;
            if rerouted > MAX_REROUTES {
                let e = ProxyError::RerouteLoop { route: route.name.to_string() };
                return self.respond(Err(e), Filter::routed(route), &t);
            }
            // `$request_uri` stays what the client sent.
            if original.is_none() {
                original = req.uri().path_and_query().cloned();
            }
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(target);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            table = t;
        };
        let listener = &table.listeners[li];
        let route = &listener.routes[ri];
        if info.on {
            info.route = Some(route.name.clone());
        }
        let mut filter = Filter::routed(route);
        filter.started = Some(started);
        if let Err(e) = head::check_limits(listener, route, &req) {
            return self.respond(Err(e), filter, &table);
        }

        // 3. actions
        // Behind a trusted proxy the client is the one its X-Forwarded-For names; read only where
        // something uses it (actions, client_ip balancing).
        let mut client = None;
        let mut todo = Todo::default();
        if let Some(a) = route.actions.as_deref() {
            let c = *client.insert(self.real_client(req.headers(), listener));
            // Boxed, here and for static files below: their futures are large and a plain
            // proxied request never needs them, while hyper keeps room for this whole future per
            // connection (touched pages stay resident while the connection idles).
            match Box::pin(self.actions(a, route, listener, &table, &req, original.as_ref(), &host, c)).await {
                Ok(t) => todo = t,
                Err(Reply::Answer(resp)) => return self.respond(Ok(*resp), filter, &table),
                Err(Reply::Error(e)) => {
                    if !a.response_headers.is_empty() {
                        let captures = actions::captures(a, route.path_regex.as_ref(), req.uri().path());
                        let (o, h) = (original.as_ref(), &host);
                        let ops = self.vars_for(&req, o, h, listener, Some(c), captures, |vars| {
                            actions::render_headers(&a.response_headers, vars)
                        });
                        filter.response_headers = Some(ops);
                    }
                    return self.respond(Err(*e), filter, &table);
                }
            }
        }
        filter.through = true;
        filter.head_request = req.method() == Method::HEAD;
        filter.response_headers = todo.response_headers.take();
        if route.compress.is_some() {
            filter.accept_encoding = req.headers().get(ACCEPT_ENCODING).cloned();
        }

        // `max_requests_per_client`: a place held until the answer's body has ended.
        let held = match &route.concurrency {
            None => None,
            Some(c) => {
                let ip = client.unwrap_or_else(|| self.real_client(req.headers(), listener)).ip();
                match c.acquire(ip.to_string().as_bytes()) {
                    Some(h) => Some(h),
                    None => {
                        let e = ProxyError::TooManyInProgress { route: route.name.to_string() };
                        return self.respond(Err(e), filter, &table);
                    }
                }
            }
        };

        // 4. files, or forward
        let Some((backend, metrics)) = route.target().map(|(b, m)| (&*table.backends[b], m)) else {
            if let Some(site) = &route.files {
                let served = Box::pin(self.files(site, route, &req)).await;
                return holding(self.respond(served, filter, &table), held);
            }
            // A route that only reroutes, whose regex did not match: nothing here takes the path.
            let reroutes = route.actions.as_deref().is_some_and(|a| matches!(a.rewrite, Some(Rewrite::Regex { .. })));
            let e = match reroutes {
                true => ProxyError::NoRoute {
                    listener: listener.name.to_string(),
                    host: host.clone(),
                    path: req.uri().path().to_string(),
                },
                // Every other route without a backend answers itself (the config refuses the rest).
                false => ProxyError::NoEndpoints { route: route.name.to_string(), backend: "none".into() },
            };
            return holding(self.respond(Err(e), filter, &table), held);
        };
        if info.on {
            info.backend = Some(backend.name.clone());
        }
        let client = match (client, backend.balancer.policy) {
            (Some(c), _) => c.ip(),
            (None, Balance::ClientIp) => self.real_client(req.headers(), listener).ip(),
            (None, _) => self.peer.ip(),
        };
        // `rewrite_location` rules, rendered for this request (a literal costs no rendering).
        let redirects = match &route.rewrite_location {
            Some(LocationRewrite::Rules(rules)) => {
                Some(self.with_vars(&req, original.as_ref(), &host, listener, None, |vars| {
                    let text = |t: &crate::config::template::Template| {
                        t.literal().map_or_else(|| t.render(vars), str::to_string)
                    };
                    rules.iter().map(|(from, to)| (text(from), text(to))).collect()
                }))
            }
            _ => None,
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
            actions::apply_headers(ops, None, &mut headers, None);
        }
        if route.body_replace.is_some() {
            // Ask for an uncompressed answer: the replacement needs the text.
            headers.remove(ACCEPT_ENCODING);
        }
        // `intercept_errors`: what the error request needs, kept only on routes that have it.
        let intercept = route.intercept.as_deref().map(|ic| {
            let uri = original.clone().or_else(|| parts.uri.path_and_query().cloned());
            (ic, headers.clone(), uri)
        });
        let forward = Forward {
            route,
            backend,
            limits: &listener.limits,
            client,
            method: parts.method,
            headers,
            path_and_query,
            body: (!body.is_end_stream()).then(|| UnsyncBoxBody::new(body)),
            upgrade: client_upgrade,
            started,
            duration: &metrics.duration,
            host_from_route: todo.request_headers.as_deref().is_some_and(|ops| actions::sets(ops, &HOST)),
            redirects,
            info,
        };
        let mut result = forward.run().await;
        if let Some((ic, headers, uri)) = intercept {
            result = Box::pin(self.intercept(ic, result, route, listener, &table, headers, uri, client, info)).await;
        }
        if result.is_ok() {
            filter.metrics = Some(metrics);
        }
        holding(self.respond(result, filter, &table), held)
    }

    /// `intercept_errors`: an answer of a listed status (the upstream's or ferry's own) is replaced
    /// by the error backend's answer to a GET for the same URI (nginx `proxy_intercept_errors` and
    /// `error_page CODE = @loc`: the error backend's status is the client's). If the error backend
    /// does not answer, the first error stands.
    #[allow(clippy::too_many_arguments)]
    async fn intercept(
        &self,
        (backend, ic): &(usize, crate::config::InterceptErrors),
        result: Result<Response<ProxyBody>, ProxyError>,
        route: &RouteEntry,
        listener: &ListenerRoutes,
        table: &Table,
        mut headers: HeaderMap,
        uri: Option<PathAndQuery>,
        client: std::net::IpAddr,
        info: &mut log::Info,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        if !ic.statuses.contains(&status.as_u16()) {
            return result;
        }
        let Some(uri) = uri else { return result };
        let format = headers.get(http::header::ACCEPT).cloned().unwrap_or(HeaderValue::from_static("text/html"));
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert("x-code", HeaderValue::from(status.as_u16()));
        headers.insert("x-format", format);
        if let Ok(v) = HeaderValue::from_str(uri.as_str()) {
            headers.insert("x-original-uri", v);
        }
        for (k, v) in &ic.headers {
            headers.insert(k.clone(), v.clone());
        }
        let errors = Forward {
            route,
            backend: &table.backends[*backend],
            limits: &listener.limits,
            client,
            method: Method::GET,
            headers,
            path_and_query: uri,
            body: None,
            upgrade: None,
            started: Instant::now(),
            duration: &SIDE_DURATION,
            host_from_route: false,
            redirects: None,
            info,
        };
        match errors.run().await {
            Ok(r) => {
                drop(result);
                Ok(r)
            }
            Err(e) => {
                debug!(route = %route.name, error = %e, "intercept_errors: the error backend did not answer");
                result
            }
        }
    }

    /// Phase 1: the request's target and Host (see `head::check_target`) and its path in normal
    /// form; the target as sent, when normalising changed it (for `$request_uri`).
    fn early(&self, req: &mut Request<ClientBody>) -> Result<Option<PathAndQuery>, ProxyError> {
        let listener = || self.listener.name.to_string();
        match head::check_target(req) {
            Ok(()) => {}
            Err(head::Early::Bad(reason)) => return Err(ProxyError::BadRequest { listener: listener(), reason }),
            Err(head::Early::Coding) => return Err(ProxyError::UnsupportedCoding { listener: listener() }),
            Err(head::Early::Connect) => {
                return Err(ProxyError::MethodNotAllowed { listener: listener(), method: req.method().to_string() })
            }
        }
        // nginx `ssl_verify_client on`: no certificate, 400 (one that did not verify ended the
        // handshake).
        if self.client_tls.get().is_some_and(|c| c.required && c.cert.is_none()) {
            let reason = "no required TLS client certificate was sent";
            return Err(ProxyError::BadRequest { listener: listener(), reason });
        }
        head::normalize_target(req).map_err(|e| ProxyError::BadRequest { listener: listener(), reason: e.reason() })
    }

    /// Phase 2: the route, in `table` or — when its backend has no endpoint and holds requests —
    /// in the first table within the hold where it has one.
    #[allow(clippy::result_large_err)]
    async fn route(
        &self,
        mut table: Arc<Table>,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
    ) -> Result<(Arc<Table>, usize, usize), (Arc<Table>, ProxyError)> {
        let mut found = self.pick(&table, req, original, host).await;
        if let Some(b) = found.and_then(|(li, ri)| table.listeners[li].routes[ri].backend) {
            let b = &table.backends[b];
            let hold = b.settings.hold_for_endpoints;
            if b.endpoints.is_empty() && !hold.is_zero() {
                let name = b.name.clone();
                if let Some(t) = self.hold_for_endpoints(&name, hold).await {
                    table = t;
                    found = self.pick(&table, req, original, host).await;
                }
            }
        }
        match found {
            Some((li, ri)) => Ok((table, li, ri)),
            None => {
                let path = req.uri().path().to_string();
                let e = ProxyError::NoRoute { listener: self.listener.name.to_string(), host: host.to_string(), path };
                Err((table, e))
            }
        }
    }

    /// The first route of `t` that takes the request: (listener, route). A static route with
    /// `missing: next` takes the path only if it has a file for it (nginx `try_files $uri @app`);
    /// else the routes after it are asked.
    async fn pick(
        &self,
        t: &Table,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
    ) -> Option<(usize, usize)> {
        let li = t.listener_index(&self.listener.name)?;
        let l = &t.listeners[li];
        // `match.when`: the request's variables, made only for a route that has conditions.
        let when = |conditions: &[crate::config::route::Condition]| {
            self.with_vars(req, original, host, l, None, |vars| conditions.iter().all(|c| c.holds(vars)))
        };
        let mut from = 0;
        loop {
            let ri = l.lookup_when(host, req.uri().path(), req.method(), req.headers(), &when, from)?;
            match l.routes[ri].files.as_ref().filter(|s| s.missing_next()) {
                Some(site) if !site.has_file(req.uri().path()).await => from = ri + 1,
                _ => return Some((li, ri)),
            }
        }
    }

    /// The request's variables (before any action ran), for `f`.
    fn with_vars<R>(
        &self,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
        listener: &ListenerRoutes,
        captures: Option<regex::Captures<'_>>,
        f: impl FnOnce(&actions::RequestVars<'_>) -> R,
    ) -> R {
        self.vars_for(req, original, host, listener, None, captures, f)
    }

    /// [`with_vars`](Self::with_vars) with the client already known (`client`).
    #[allow(clippy::too_many_arguments)]
    fn vars_for<R>(
        &self,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
        listener: &ListenerRoutes,
        client: Option<SocketAddr>,
        captures: Option<regex::Captures<'_>>,
        f: impl FnOnce(&actions::RequestVars<'_>) -> R,
    ) -> R {
        let client = client.unwrap_or_else(|| self.real_client(req.headers(), listener));
        let real_ip;
        let client_ip = if client == self.peer {
            &self.client_ip
        } else {
            real_ip = HeaderValue::from_str(&client.ip().to_string()).expect("an IP is a valid header value");
            &real_ip
        };
        f(&actions::RequestVars {
            method: req.method(),
            uri: req.uri(),
            original,
            headers: req.headers(),
            host,
            client,
            client_ip,
            scheme: self.proto,
            server_port: self.listener.port_number,
            version: req.version(),
            client_tls: self.client_tls.get(),
            captures,
            // The listener's X-Request-Id (set on the way in) is `$request_id`; else one is made
            // if a template asks.
            request_id: match req.headers().get(&log::X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
                Some(id) if listener.request_id => OnceCell::from(id.to_string()),
                _ => OnceCell::new(),
            },
        })
    }

    /// `rewrite.reroute`: the new target, if the route's rewrite regex matches the path.
    fn reroute(
        &self,
        route: &RouteEntry,
        listener: &ListenerRoutes,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
    ) -> Option<PathAndQuery> {
        let a = route.actions.as_deref()?;
        let Some(Rewrite::Regex { regex, reroute: true, .. }) = &a.rewrite else { return None };
        let captures = regex.captures(req.uri().path())?;
        self.with_vars(req, original, host, listener, Some(captures), |vars| actions::rewrite_target(a, vars))
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

    /// Phase 3: the route's actions — a refusal (access, rate limit, auth), an answer of its own
    /// (redirect, respond), or what forwarding needs.
    #[allow(clippy::too_many_arguments)]
    async fn actions(
        &self,
        a: &Actions,
        route: &RouteEntry,
        listener: &ListenerRoutes,
        table: &Table,
        req: &Request<ClientBody>,
        original: Option<&PathAndQuery>,
        host: &str,
        client: SocketAddr,
    ) -> Result<Todo, Reply> {
        let refuse = |e| Err(Reply::Error(Box::new(e)));
        let by_address = a.access.is_empty() || actions::access(&a.access, client.ip());
        if !by_address && !a.satisfy_any {
            return refuse(ProxyError::Forbidden { route: route.name.to_string(), client: client.ip() });
        }
        // satisfy any: an address `access` allows needs no credentials.
        let credentials = !(a.satisfy_any && by_address);
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
                return refuse(ProxyError::RateLimited { route: route.name.to_string(), status: l.status });
            }
        }
        if let (Some(b), Some(users), true) = (&a.basic_auth, &route.auth, credentials) {
            if !users.check(req.headers().get(http::header::AUTHORIZATION)).await {
                return refuse(ProxyError::Unauthorized { route: route.name.to_string(), realm: b.realm.clone() });
            }
        }
        let mut from_auth = None;
        if let (Some(f), Some(b), true) = (&a.forward_auth, route.auth_backend, credentials) {
            let captures = actions::captures(a, route.path_regex.as_ref(), req.uri().path());
            let ask =
                self.vars_for(req, original, host, listener, Some(client), captures, |vars| auth_request(f, req, vars));
            from_auth = Some(self.forward_auth(f, route, listener, &table.backends[b], req, ask, client).await?);
        }
        let captures = actions::captures(a, route.path_regex.as_ref(), req.uri().path());
        let mut todo = self.vars_for(req, original, host, listener, Some(client), captures, |vars| {
            if let Some(resp) = actions::answer(a, vars) {
                return Err(Reply::Answer(Box::new(resp)));
            }
            let render =
                |h: &crate::config::actions::HeaderActions| (!h.is_empty()).then(|| actions::render_headers(h, vars));
            Ok(Todo {
                target: actions::rewrite_target(a, vars),
                request_headers: render(&a.request_headers),
                response_headers: render(&a.response_headers),
            })
        })?;
        // What the auth answer hands on goes first: the route's own header actions still win.
        if let Some((to_request, to_response)) = from_auth {
            for (ops, extra) in [(&mut todo.request_headers, to_request), (&mut todo.response_headers, to_response)] {
                if !extra.is_empty() {
                    let mut all = extra;
                    all.extend(ops.take().unwrap_or_default());
                    *ops = Some(all);
                }
            }
        }
        Ok(todo)
    }

    /// `forward_auth`: the client's method and headers (no body) to the auth backend at `path`.
    /// 2xx: the request goes on, with the header operations the answer hands on (for the upstream
    /// request, for the client's response); 401 (its WWW-Authenticate passed on) and 403 are the
    /// client's answer; anything else, or no answer, is 500 — as nginx's auth_request.
    #[allow(clippy::too_many_arguments)]
    async fn forward_auth(
        &self,
        f: &ForwardAuth,
        route: &RouteEntry,
        listener: &ListenerRoutes,
        backend: &BackendEntry,
        req: &Request<ClientBody>,
        ask: Option<(HeaderMap, PathAndQuery)>,
        client: SocketAddr,
    ) -> Result<(Vec<HeaderOp>, Vec<HeaderOp>), Reply> {
        let failed = |status| {
            Reply::Error(Box::new(ProxyError::AuthRefused { route: route.name.to_string(), status, challenge: None }))
        };
        let Some((headers, path_and_query)) = ask else {
            return Err(failed(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let mut info = log::Info::default();
        let auth = Forward {
            route,
            backend,
            limits: &listener.limits,
            client: client.ip(),
            method: req.method().clone(),
            headers,
            path_and_query,
            body: None,
            upgrade: None,
            started: Instant::now(),
            duration: &SIDE_DURATION,
            host_from_route: f.headers.iter().any(|(n, _)| n == HOST),
            redirects: None,
            info: &mut info,
        };
        let resp = match Box::pin(auth.run()).await {
            Ok(r) => r,
            Err(e) => {
                debug!(route = %route.name, error = %e, "forward_auth: the auth service did not answer");
                return Err(failed(StatusCode::INTERNAL_SERVER_ERROR));
            }
        };
        let status = resp.status();
        let copy = |list: &[(http::HeaderName, http::HeaderName)]| -> Vec<HeaderOp> {
            list.iter()
                .map(|(to, from)| {
                    HeaderOp::Set(to.clone(), resp.headers().get(from).filter(|v| !v.is_empty()).cloned())
                })
                .collect()
        };
        match status.as_u16() {
            // To the response the values are added (nginx add_header), beside the upstream's own.
            200..=299 => {
                let add = f.copy_to_response.iter().filter_map(|(to, from)| {
                    let v = resp.headers().get(from).filter(|v| !v.is_empty())?;
                    Some(HeaderOp::Add(to.clone(), v.clone()))
                });
                Ok((copy(&f.copy_to_request), add.collect()))
            }
            401 => {
                let challenge = resp.headers().get(http::header::WWW_AUTHENTICATE).cloned();
                Err(Reply::Error(Box::new(ProxyError::AuthRefused {
                    route: route.name.to_string(),
                    status,
                    challenge,
                })))
            }
            403 => Err(failed(StatusCode::FORBIDDEN)),
            _ => Err(failed(StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }

    /// Phase 4, for a `static` route: the file (or what the request's conditional and range
    /// headers ask for), its fallback, or an error (a 404 gets the route's page in `respond`).
    async fn files(
        &self,
        site: &Site,
        route: &RouteEntry,
        req: &Request<ClientBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path = || req.uri().path().to_string();
        match site.serve(req).await {
            Served::Answer(r) => Ok(r.map(|b| match b {
                FileBody::Memory(b) => ProxyBody::full(b),
                FileBody::Stream(s) => ProxyBody::boxed(s),
            })),
            Served::Redirect(to) => {
                let mut r = Response::new(ProxyBody::empty());
                *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                r.headers_mut().insert(LOCATION, to);
                Ok(r)
            }
            Served::NotFound => Err(ProxyError::FileNotFound { route: route.name.to_string(), path: path() }),
            Served::Failed(e) => {
                let cause = e.to_string();
                Err(ProxyError::FileUnreadable { route: route.name.to_string(), path: path(), cause })
            }
        }
    }

    /// Phase 5, the one response filter (see the module note).
    fn respond(
        &self,
        result: Result<Response<ProxyBody>, ProxyError>,
        f: Filter<'_>,
        table: &Table,
    ) -> Response<ProxyBody> {
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let mut resp = self.error_response(f.route, e, table);
                // The route's headers for every answer (nginx `add_header … always`) go on its
                // errors too: a CORS header on a 401, HSTS on a 404.
                if let Some(ops) = &f.response_headers {
                    let status = Some(resp.status());
                    let late = f.late(&resp);
                    actions::apply_headers(ops, status, resp.headers_mut(), late.as_ref());
                }
                self.count(f.route.map(|r| &r.metrics), resp.status());
                return resp;
            }
        };
        self.count(f.metrics, resp.status());
        if !f.through {
            return resp;
        }
        if let Some(r) = f.route.and_then(|r| r.body_replace.as_ref()) {
            resp = replace_body(resp, r, f.head_request);
        }
        if let Some(ops) = &f.response_headers {
            let status = Some(resp.status());
            let late = f.late(&resp);
            actions::apply_headers(ops, status, resp.headers_mut(), late.as_ref());
        }
        match f.route.and_then(|r| r.compress) {
            Some(min) if resp.status() != StatusCode::SWITCHING_PROTOCOLS => {
                compress(f.accept_encoding.as_ref(), resp, min)
            }
            _ => resp,
        }
    }

    /// Counts an answer's status: on the route's handles, or as `route="none"`.
    fn count(&self, metrics: Option<&RouteMetrics>, status: StatusCode) {
        match metrics {
            Some(m) => m.count(status.as_u16()),
            None => self.listener.unrouted.count(status.as_u16()),
        }
    }

    /// ferry's own error: counted by kind, logged at debug, its response with the route's (or,
    /// before routing, the listener's) page for the status — nginx's `error_page`.
    fn error_response(&self, route: Option<&RouteEntry>, e: ProxyError, table: &Table) -> Response<ProxyBody> {
        self.listener.error(e.kind());
        let status = e.status();
        debug!(listener = %self.listener.name, client = %self.peer, error = %e, "request failed");
        let mut resp = e.into_response();
        let pages = match route {
            Some(r) => r.error_pages.as_deref(),
            None => table.listener(&self.listener.name).and_then(|l| l.error_pages.as_deref()),
        };
        if let Some(body) = pages.and_then(|p| p.get(status)).cloned() {
            *resp.body_mut() = ProxyBody::full(body);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        }
        resp
    }
}

/// The route's `body_replace` on an answer it applies to (a listed, uncompressed type with a body):
/// the length is dropped, since the body changes.
fn replace_body(resp: Response<ProxyBody>, r: &Arc<Replacer>, head_request: bool) -> Response<ProxyBody> {
    let s = resp.status();
    if head_request || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED || !r.applies(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, ProxyBody::Replaced(Box::new(Replaced::new(body, r.clone()))))
}

/// A `max_requests_per_client` place, released when the answer's body ends (or is dropped).
struct Release(#[allow(dead_code)] crate::limit::Held);

impl super::body::Ended for Release {
    fn ended(self: Box<Self>, _body_bytes: u64) {}
}

/// The answer, holding its request's place until its body has ended.
fn holding(resp: Response<ProxyBody>, held: Option<crate::limit::Held>) -> Response<ProxyBody> {
    match held {
        None => resp,
        Some(h) => resp.map(|b| ProxyBody::counted(b, Box::new(Release(h)))),
    }
}
