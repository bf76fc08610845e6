//! The routing table: an immutable snapshot of everything a request needs (listeners' ordered
//! routes, backends with their endpoints, balancers, upstream clients and metric handles).
//!
//! The control plane builds a complete new [`Table`] ([`build`]) and publishes it with one store
//! ([`store`]); the data plane loads it once per request and never locks. Route matching is
//! precompiled: exact hosts are indexed in a hash map whose entries list, in config order, the
//! routes that can match that host, so a request scans only its candidates and first match wins.

pub mod build;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use prometheus::IntCounter;
use serde::Serialize;

use crate::balance::{Balancer, EndpointStats};
use crate::config::{self, HostMatch};
use crate::metrics::RouteMetrics;
use crate::upstream::pool::UpstreamClient;

#[derive(Debug)]
pub struct Table {
    pub version: u64,
    /// Shared between tables that differ only in endpoints.
    pub listeners: Arc<Vec<ListenerRoutes>>,
    pub backends: Vec<Arc<BackendEntry>>,
}

#[derive(Debug)]
pub struct ListenerRoutes {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub protocol: crate::config::Protocol,
    pub routes: Vec<RouteEntry>,
    /// TCP listeners: index into [`Table::backends`].
    pub tcp_backend: Option<usize>,
    pub idle_timeout: std::time::Duration,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// TCP listeners: (server names, backend index) for TLS passthrough, in config order.
    pub sni: Vec<(Box<[HostMatch]>, usize)>,
    /// Peers whose X-Forwarded-For is appended to rather than replaced.
    pub trusted_proxies: Box<[ipnet::IpNet]>,
    pub limits: config::Limits,
    /// Pages for ferry's own answers to requests no route took.
    pub error_pages: Option<Arc<crate::files::Pages>>,
    /// A line per request (HTTP) or connection (TCP), if on.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// HTTP: keep a trusted peer's X-Request-Id or make one.
    pub request_id: bool,
    pub trace_context: config::log::TraceContext,
    /// Exact host → the routes that can match it (its own and the host-less/wildcard ones).
    by_host: HashMap<Box<str>, Candidates>,
    /// Routes that can match a host with no exact entry: host-less and wildcard routes.
    other_hosts: Candidates,
}

#[derive(Debug)]
pub struct RouteEntry {
    pub name: Arc<str>,
    pub host: Option<HostMatch>,
    pub path_prefix: Option<Box<str>>,
    pub path_exact: Option<Box<str>>,
    /// A plain string prefix (nginx `location /x`).
    pub path_starts_with: Option<Box<str>>,
    pub path_regex: Option<regex::Regex>,
    /// Empty: any method.
    pub methods: Box<[Method]>,
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// Its response headers use `$upstream_addr`, `$upstream_status` or `$request_time`: the
    /// upstream's answer is marked with who answered.
    pub late_headers: bool,
    /// The route's `rewrite_location` (`None`: the backend's).
    pub rewrite_location: Option<config::route::LocationRewrite>,
    /// `match.when`: conditions on request variables; `None` for nearly every route.
    pub when: Option<Box<[config::route::Condition]>>,
    pub strip_prefix: bool,
    /// What replaces the matched `path_prefix` before forwarding (`/` for `strip_prefix`), if the
    /// route rewrites it.
    pub prefix_rewrite: Option<Box<str>>,
    pub rewrite_cookie_path: bool,
    /// `rewrite_cookie_path` rules: a cookie's Path starting with FROM gets TO instead.
    pub cookie_paths: Option<Box<[(String, String)]>>,
    /// `forwarded_headers` (see [`crate::config::Route`]).
    pub forwarded_headers: bool,
    /// `body_replace`, compiled.
    pub body_replace: Option<Arc<crate::upstream::replace::Replacer>>,
    pub max_body_bytes: Option<u64>,
    /// Index into [`Table::backends`]; `None` for a route that answers itself.
    pub backend: Option<usize>,
    /// Weighted traffic shifting between backends, instead of `backend`.
    pub split: Option<Box<Split>>,
    /// The route's buckets, for `rate_limit`.
    pub limiter: Option<Arc<crate::limit::Limiter>>,
    /// `forward_auth`'s backend (index into [`Table::backends`]).
    pub auth_backend: Option<usize>,
    /// `max_requests_per_client`: the in-progress counts (kept across table swaps).
    pub concurrency: Option<Arc<crate::limit::Concurrency>>,
    /// `intercept_errors`, with its backend's index.
    pub intercept: Option<Box<(usize, config::InterceptErrors)>>,
    /// The route's htpasswd file, for `basic_auth`.
    pub auth: Option<Arc<crate::auth::UserFile>>,
    /// The route's other actions; `None` (nothing to do, nothing to pay) for most routes.
    pub actions: Option<Box<config::Actions>>,
    /// `static`: the route serves these files.
    pub files: Option<Arc<crate::files::Site>>,
    /// Compress answers worth it (at least this long, if their length is known) for clients that
    /// accept it (`compress` and `compress_min_bytes`, the route's or the listener's); `None`: off.
    pub compress: Option<u64>,
    /// The listener's and route's `error_pages`, for ferry's own answers on this route.
    pub error_pages: Option<Arc<crate::files::Pages>>,
    pub metrics: RouteMetrics,
}

/// A route's `split`: the backends, a smooth weighted cycle over them (as the balancer's), and
/// the route's metric handles per backend.
#[derive(Debug)]
pub struct Split {
    pub backends: Box<[usize]>,
    pub cycle: Box<[u32]>,
    pub next: std::sync::atomic::AtomicUsize,
    pub metrics: Box<[RouteMetrics]>,
}

#[derive(Debug)]
pub struct BackendEntry {
    pub name: Arc<str>,
    pub settings: config::Backend,
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
    /// hyper's pooled client: TLS upstreams and upgrades (plain requests use `Endpoint::pool`).
    pub client: UpstreamClient,
    pub connect_errors: IntCounter,
    pub retries: IntCounter,
    pub ejections: IntCounter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Ready,
    Terminating,
    NotReady,
}

/// An endpoint a backend routes to, as discovery (or a static backend's address list) gives it:
/// the input of [`build`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Discovered {
    pub addr: SocketAddr,
    pub condition: Condition,
    pub pod: Option<String>,
    /// Relative share (static addresses may set it; discovered endpoints weigh 1).
    pub weight: u32,
    /// Used only when no primary is usable.
    pub backup: bool,
}

impl Discovered {
    /// A ready endpoint of weight 1.
    pub fn ready(addr: SocketAddr, pod: Option<String>) -> Discovered {
        Discovered { addr, condition: Condition::Ready, pod, weight: 1, backup: false }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// The pod behind it, when discovery knows.
    pub pod: Option<Box<str>>,
    pub condition: Condition,
    /// `ip:port` as a URI authority and as a Host value, built once.
    pub authority: Authority,
    pub host_value: HeaderValue,
    pub stats: Arc<EndpointStats>,
    /// Idle connections of ferry's own HTTP/1 client to this address.
    pub pool: Arc<crate::upstream::h1::Pool>,
}

impl BackendEntry {
    /// Records a failed attempt on `ep` (connect failure, or a reset before any response byte)
    /// for passive health; counts and logs the ejection when this failure causes one. Shared by
    /// the HTTP and TCP data planes.
    pub fn endpoint_failed(&self, ep: &Endpoint) {
        if ep.stats.record_failure(self.settings.eject_after, self.settings.eject_for) {
            self.ejections.inc();
            tracing::warn!(backend = %self.name, endpoint = %ep.addr, "endpoint ejected after consecutive failures");
        }
    }
}

impl AsRef<EndpointStats> for Endpoint {
    fn as_ref(&self) -> &EndpointStats {
        &self.stats
    }
}

impl Table {
    /// The table before any config is published: no listeners, no backends, version 0.
    pub fn empty() -> Table {
        Table { version: 0, listeners: Arc::new(Vec::new()), backends: Vec::new() }
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<BackendEntry>> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerRoutes> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// The index of listener `name` in [`Table::listeners`].
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| &*l.name == name)
    }
}

/// Decides a route's `match.when` conditions for the request being routed.
pub type When<'a> = dyn Fn(&[config::route::Condition]) -> bool + 'a;

/// Does `path` fall under `prefix` on a segment boundary? (`/eureka` matches `/eureka` and
/// `/eureka/x`, not `/eurekax`; `/` matches everything.)
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || (path.starts_with(prefix) && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

impl RouteEntry {
    /// Does this route match? (The listener's index only narrows which routes are asked.) `when`
    /// decides the route's `match.when` conditions, if it has any.
    pub fn matches(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap, when: &When<'_>) -> bool {
        if self.host.as_ref().is_some_and(|h| !h.matches(host)) {
            return false;
        }
        if let Some(p) = &self.path_prefix {
            if !prefix_matches(p, path) {
                return false;
            }
        }
        if self.path_exact.as_deref().is_some_and(|p| p != path) {
            return false;
        }
        if self.path_starts_with.as_deref().is_some_and(|p| !path.starts_with(p)) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        if !self.headers.iter().all(|(k, v)| headers.get_all(k).iter().any(|have| have == v)) {
            return false;
        }
        if !self.path_regex.as_ref().is_none_or(|r| r.is_match(path)) {
            return false;
        }
        self.when.as_deref().is_none_or(when)
    }

    /// The backend for this request and the metrics to count it in: the route's `backend`, or the
    /// next in its `split` cycle. `None` for a route that answers itself.
    pub fn target(&self) -> Option<(usize, &RouteMetrics)> {
        match &self.split {
            None => self.backend.map(|b| (b, &self.metrics)),
            Some(s) => {
                let k = s.cycle[s.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % s.cycle.len()] as usize;
                Some((s.backends[k], &s.metrics[k]))
            }
        }
    }

    /// The route's path: the prefix or exact path it matches (`/` for a regex or no path).
    pub fn path_label(&self) -> String {
        match (&self.path_prefix, &self.path_exact, &self.path_regex, &self.path_starts_with) {
            (Some(p), _, _, _) => p.to_string(),
            (_, Some(p), _, _) => format!("= {p}"),
            (_, _, Some(r), Some(p)) => format!("{p}* ~ {r}"),
            (_, _, Some(r), None) => format!("~ {r}"),
            (_, _, _, Some(p)) => format!("{p}*"),
            _ => "/".to_string(),
        }
    }
}

/// Route indices (in config order) that can match, further split by the request path's first
/// segment: a route whose prefix starts with `/svc` can only match paths whose first segment is
/// `svc`; routes with no prefix (or `/`) can match any path and are merged into every list, so a
/// lookup scans only routes that could match, still in config order.
#[derive(Debug, Default)]
struct Candidates {
    by_segment: HashMap<Box<str>, Box<[u32]>>,
    any_segment: Box<[u32]>,
}

/// The first segment of a path or prefix: `/eureka/apps` → `eureka`, `/` → ``.
fn first_segment(path: &str) -> &str {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split('/').next().unwrap_or("")
}

impl Candidates {
    fn new(indices: &[u32], routes: &[RouteEntry]) -> Candidates {
        // A short list scans faster than it hashes.
        if indices.len() <= 8 {
            return Candidates { by_segment: HashMap::new(), any_segment: indices.into() };
        }
        // A route that can match only paths whose first segment is known: a prefix (other than
        // `/`) or an exact path. Regex and path-less routes can match any path.
        let seg_of = |i: u32| {
            let r = &routes[i as usize];
            // A plain prefix fixes the first segment only when it goes past it (`/api/` does,
            // `/api` also matches `/apiary`).
            let starts = r.path_starts_with.as_deref().filter(|p| p.len() > 1 && p[1..].contains('/'));
            r.path_prefix.as_deref().filter(|p| *p != "/").or(r.path_exact.as_deref()).or(starts).map(first_segment)
        };
        let mut by_segment: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for &i in indices {
            if let Some(seg) = seg_of(i) {
                by_segment.entry(seg.into()).or_default();
            }
        }
        let mut any = Vec::new();
        for &i in indices {
            match seg_of(i) {
                Some(seg) => by_segment.get_mut(seg).expect("seeded above").push(i),
                None => {
                    for list in by_segment.values_mut() {
                        list.push(i);
                    }
                    any.push(i);
                }
            }
        }
        Candidates {
            by_segment: by_segment.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(),
            any_segment: any.into_boxed_slice(),
        }
    }

    fn for_path(&self, path: &str) -> &[u32] {
        if self.by_segment.is_empty() {
            return &self.any_segment;
        }
        self.by_segment.get(first_segment(path)).unwrap_or(&self.any_segment)
    }
}

impl ListenerRoutes {
    pub(crate) fn new(
        l: &crate::config::Listener,
        routes: Vec<RouteEntry>,
        tcp_backend: Option<usize>,
        sni: Vec<(Box<[HostMatch]>, usize)>,
        error_pages: Option<Arc<crate::files::Pages>>,
        access_log: Option<Arc<crate::access_log::AccessLog>>,
    ) -> ListenerRoutes {
        let (name, bind): (Arc<str>, SocketAddr) = (l.name.as_str().into(), l.bind);
        let mut by_host: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for r in &routes {
            if let Some(HostMatch::Exact(h)) = &r.host {
                by_host.entry(h.as_str().into()).or_default();
            }
        }
        let mut other = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            match &r.host {
                Some(HostMatch::Exact(h)) => by_host.get_mut(h.as_str()).expect("seeded above").push(i),
                _ => {
                    for list in by_host.values_mut() {
                        list.push(i);
                    }
                    other.push(i);
                }
            }
        }
        let by_host = by_host.into_iter().map(|(k, v)| (k, Candidates::new(&v, &routes))).collect();
        let other_hosts = Candidates::new(&other, &routes);
        ListenerRoutes {
            name,
            bind,
            protocol: l.protocol,
            routes,
            tcp_backend,
            idle_timeout: l.idle_timeout,
            proxy_protocol: l.proxy_protocol,
            sni,
            trusted_proxies: l.trusted_proxies.clone().into_boxed_slice(),
            limits: l.limits.clone(),
            error_pages,
            access_log,
            request_id: l.request_id,
            trace_context: l.trace_context,
            by_host,
            other_hosts,
        }
    }

    /// TCP listeners: the backend for a ClientHello's server name (lower case): the first `sni`
    /// route naming it, else the listener's `backend`.
    pub fn sni_backend(&self, name: Option<&str>) -> Option<usize> {
        name.and_then(|n| self.sni.iter().find(|(names, _)| names.iter().any(|h| h.matches(n))).map(|(_, b)| *b))
            .or(self.tcp_backend)
    }

    /// First route that matches, in config order. `host` is lower case without a port. A route
    /// with `match.when` conditions does not match here (see [`lookup_when`](Self::lookup_when)).
    pub fn lookup(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<&RouteEntry> {
        self.lookup_index(host, path, method, headers).map(|i| &self.routes[i])
    }

    /// Like [`lookup`](Self::lookup), as an index into `routes`.
    pub fn lookup_index(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<usize> {
        self.lookup_when(host, path, method, headers, &|_| false, 0)
    }

    /// Like [`lookup_index`](Self::lookup_index), with `when` deciding `match.when` conditions,
    /// among the routes from index `from` on.
    pub fn lookup_when(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        when: &When<'_>,
        from: usize,
    ) -> Option<usize> {
        let by_host = if self.by_host.is_empty() {
            &self.other_hosts
        } else {
            self.by_host.get(host).unwrap_or(&self.other_hosts)
        };
        by_host
            .for_path(path)
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| i >= from)
            .find(|&i| self.routes[i].matches(host, path, method, headers, when))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_segment_of_paths() {
        assert_eq!(first_segment("/eureka/apps"), "eureka");
        assert_eq!(first_segment("/eureka"), "eureka");
        assert_eq!(first_segment("/"), "");
        assert_eq!(first_segment(""), "");
    }

    #[test]
    fn segment_boundaries() {
        assert!(prefix_matches("/eureka", "/eureka"));
        assert!(prefix_matches("/eureka", "/eureka/apps"));
        assert!(!prefix_matches("/eureka", "/eurekax"));
        assert!(!prefix_matches("/eureka", "/eurek"));
        assert!(prefix_matches("/", "/anything"));
    }
}
