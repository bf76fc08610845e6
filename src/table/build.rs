//! Config (+ endpoint sets) → [`Table`]. Deterministic and free of I/O: the only side inputs are
//! the registries that carry state across tables (endpoint stats and idle upstream connections
//! keyed by address, upstream clients keyed by their settings, metric handles), so rebuilding never resets what was learned
//! and never throws away a warm connection pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use http::HeaderValue;

use super::{BackendEntry, Endpoint, ListenerRoutes, RouteEntry, Split, Table};
use super::{Condition, Discovered};
use crate::auth::{UserFile, UserFiles};
use crate::balance::{Balancer, StatsRegistry};
use crate::config::actions::Rewrite;
use crate::config::{self, Backend, Config, StaticAddress};
use crate::files::Files;
use crate::limit::Limiters;
use crate::metrics::Metrics;
use crate::upstream::h1::Pools;
use crate::upstream::pool::ClientRegistry;

/// What builds reuse from one another: the state kept across tables (per-endpoint stats, upstream
/// pools, htpasswd files, rate-limit buckets) and the metric handles. The store owns one; a test or
/// benchmark makes its own with `BuildContext::default()`.
#[derive(Default)]
pub struct BuildContext {
    pub stats: StatsRegistry,
    pub clients: ClientRegistry,
    /// ferry's own HTTP/1 client's idle connections, per endpoint address.
    pub pools: Pools,
    pub metrics: Arc<Metrics>,
    /// htpasswd files, read before the build (a route whose file is missing refuses everyone).
    pub users: UserFiles,
    pub limiters: Limiters,
    pub concurrencies: crate::limit::Concurrencies,
    /// Static directories and error pages, read before the build.
    pub files: Files,
    /// Access-log destinations, opened before the build (a log whose sink is missing is off).
    pub logs: crate::access_log::Sinks,
}

impl BuildContext {
    pub fn new(metrics: Arc<Metrics>) -> BuildContext {
        BuildContext { metrics, ..Default::default() }
    }
}

pub fn endpoint(d: &Discovered, stats: &StatsRegistry, pools: &Pools) -> Endpoint {
    let addr = d.addr;
    let text = Bytes::from(addr.to_string());
    Endpoint {
        addr,
        weight: d.weight,
        backup: d.backup,
        pod: d.pod.as_deref().map(Into::into),
        condition: d.condition,
        authority: Authority::from_maybe_shared(text.clone()).expect("a socket address is a valid authority"),
        host_value: HeaderValue::from_maybe_shared(text).expect("a socket address is a valid header value"),
        stats: stats.get(addr),
        pool: pools.get(addr),
    }
}

/// A static backend's addresses as discovered endpoints (always ready; `down` ones left out).
pub fn static_endpoints(addrs: &[StaticAddress]) -> Vec<Discovered> {
    addrs
        .iter()
        .filter(|a| !a.down)
        .map(|a| Discovered {
            addr: a.addr,
            condition: Condition::Ready,
            pod: None,
            weight: a.weight,
            backup: a.backup,
        })
        .collect()
}

/// A backend's endpoints: a Service backend's are what was `found` for it (none yet if nothing);
/// a static backend's are its addresses plus what its host names resolved to.
pub fn endpoints(b: &Backend, found: Option<&Vec<Discovered>>) -> Vec<Discovered> {
    match &b.service {
        None => {
            let mut eps = static_endpoints(&b.addresses);
            eps.extend(found.into_iter().flatten().cloned());
            eps
        }
        Some(_) => found.cloned().unwrap_or_default(),
    }
}

pub fn backend(b: &Backend, eps: &[Discovered], ctx: &BuildContext) -> BackendEntry {
    let label = [b.name.as_str()];
    // Primaries first, then backups (each in their given order): the balancer's two tiers.
    let mut eps: Vec<&Discovered> = eps.iter().collect();
    eps.sort_by_key(|d| d.backup);
    let primaries = eps.iter().filter(|d| !d.backup).count();
    let addrs: Vec<SocketAddr> = eps.iter().map(|d| d.addr).collect();
    let weights: Vec<u32> = eps.iter().map(|d| d.weight.max(1)).collect();
    BackendEntry {
        name: b.name.as_str().into(),
        settings: b.clone(),
        endpoints: eps.iter().map(|d| endpoint(d, &ctx.stats, &ctx.pools)).collect(),
        balancer: Balancer::weighted(b.balance, &addrs, &weights, primaries),
        client: ctx.clients.get(b),
        connect_errors: ctx.metrics.connect_errors.with_label_values(&label),
        retries: ctx.metrics.retries.with_label_values(&label),
        ejections: ctx.metrics.ejections.with_label_values(&label),
    }
}

/// Builds a complete table from a validated config: static backends from their addresses (plus,
/// in `discovered`, what their host names resolved to), Service backends from `discovered`
/// (backend name → endpoints; missing means none yet).
pub fn build(
    config: &Config,
    version: u64,
    ctx: &BuildContext,
    discovered: &HashMap<String, Vec<Discovered>>,
) -> Table {
    let mut index = HashMap::new();
    let backends: Vec<Arc<BackendEntry>> = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            index.insert(b.name.as_str(), i);
            Arc::new(backend(b, &endpoints(b, discovered.get(&b.name)), ctx))
        })
        .collect();
    let listeners: Vec<ListenerRoutes> = config
        .listeners
        .iter()
        .map(|l| {
            let routes = l.routes.iter().map(|r| route(r, l, &index, ctx)).collect();
            let sni =
                l.sni.iter().map(|r| (r.server_names.clone().into_boxed_slice(), index[r.backend.as_str()])).collect();
            let pages = ctx.files.pages(&l.error_pages, &[]).map(Arc::new);
            let log = l.access_log.as_ref().and_then(|a| {
                let sink = ctx.logs.get(&a.to)?;
                Some(Arc::new(crate::access_log::AccessLog::new(a, l.protocol, sink)))
            });
            ListenerRoutes::new(l, routes, l.backend.as_deref().map(|b| index[b]), sni, pages, log)
        })
        .collect();
    Table { version, listeners: Arc::new(listeners), backends }
}

fn split(r: &config::Route, listener: &str, index: &HashMap<&str, usize>, ctx: &BuildContext) -> Option<Box<Split>> {
    let members: Vec<&(String, u32)> = r.split.iter().filter(|(_, w)| *w > 0).collect();
    if members.is_empty() {
        return None;
    }
    let weights: Vec<u32> = members.iter().map(|(_, w)| *w).collect();
    let cycle = crate::balance::smooth_cycle(&weights).into_boxed_slice();
    Some(Box::new(Split {
        backends: members.iter().map(|(b, _)| index[b.as_str()]).collect(),
        next: std::sync::atomic::AtomicUsize::new(fastrand::usize(..cycle.len())),
        cycle,
        metrics: members.iter().map(|(b, _)| ctx.metrics.route(listener, &r.name, b)).collect(),
    }))
}

fn route(r: &config::Route, l: &config::Listener, index: &HashMap<&str, usize>, ctx: &BuildContext) -> RouteEntry {
    let listener = l.name.as_str();
    let prefix_rewrite = match &r.actions.rewrite {
        Some(Rewrite::Prefix(p)) => Some(p.as_str().into()),
        _ => None,
    };
    // A prefix rewrite is done on the head path itself; anything else needs the actions.
    let mut rest = r.actions.clone();
    if prefix_rewrite.is_some() {
        rest.rewrite = None;
    }
    RouteEntry {
        name: r.name.as_str().into(),
        host: r.host.clone(),
        path_prefix: r.path_prefix.as_deref().map(Into::into),
        path_exact: r.path_exact.as_deref().map(Into::into),
        path_starts_with: r.path_starts_with.as_deref().map(Into::into),
        path_regex: r.path_regex.clone(),
        methods: r.methods.clone().into_boxed_slice(),
        headers: r.headers.clone().into_boxed_slice(),
        when: (!r.when.is_empty()).then(|| r.when.clone().into_boxed_slice()),
        rewrite_location: r.rewrite_location.clone(),
        late_headers: r.actions.response_headers.templates().any(|t| t.is_late()),
        strip_prefix: r.strip_prefix,
        prefix_rewrite,
        rewrite_cookie_path: r.rewrite_cookie_path,
        cookie_paths: (!r.cookie_paths.is_empty()).then(|| r.cookie_paths.clone().into_boxed_slice()),
        forwarded_headers: r.forwarded_headers,
        body_replace: (!r.body_replace.is_empty())
            .then(|| {
                crate::upstream::replace::Replacer::new(
                    &r.body_replace,
                    &r.body_replace_types,
                    r.body_replace_once,
                    r.body_replace_ignore_case,
                )
            })
            .flatten()
            .map(Arc::new),
        max_body_bytes: r.max_body_bytes,
        backend: r.backend.as_deref().map(|b| index[b]),
        auth_backend: r.actions.forward_auth.as_ref().map(|f| index[f.backend.as_str()]),
        intercept: r.intercept_errors.as_ref().map(|i| Box::new((index[i.backend.as_str()], i.clone()))),
        split: split(r, listener, index, ctx),
        limiter: r.actions.rate_limit.as_ref().map(|l| ctx.limiters.get(listener, &r.name, l.rate, l.burst)),
        concurrency: r.max_requests_per_client.map(|n| ctx.concurrencies.get(listener, &r.name, n)),
        auth: r
            .actions
            .basic_auth
            .as_ref()
            .map(|b| ctx.users.get(&b.htpasswd).unwrap_or_else(|| UserFile::empty(&b.htpasswd))),
        actions: (!rest.is_empty()).then(|| Box::new(rest)),
        files: r.files.as_ref().map(|s| {
            let prefix =
                r.path_prefix.clone().or_else(|| r.path_starts_with.as_deref().map(config::route::alias_prefix));
            Arc::new(ctx.files.site(s, prefix.as_deref()))
        }),
        compress: r.compress.unwrap_or(l.compress).then(|| r.compress_min_bytes.unwrap_or(l.compress_min_bytes)),
        error_pages: ctx.files.pages(&l.error_pages, &r.error_pages).map(Arc::new),
        metrics: ctx.metrics.route(
            listener,
            &r.name,
            r.backend.as_deref().or(r.split.first().map(|s| s.0.as_str())).unwrap_or("none"),
        ),
    }
}

/// A table like `old` with some backends replaced (by index); routes and the other backends are
/// shared, not rebuilt.
pub fn with_backends(old: &Table, version: u64, replaced: Vec<(usize, Arc<BackendEntry>)>) -> Table {
    let mut backends = old.backends.clone();
    for (i, b) in replaced {
        backends[i] = b;
    }
    Table { version, listeners: old.listeners.clone(), backends }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const CFG: &str = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - match: { host: www.test-gateway.net }
        backend: gateway
      - match: { path_prefix: /nacos, headers: { x-debug-user: alice } }
        backend: nacos-alice
      - match: { path_prefix: /nacos }
        backend: nacos
      - match: { host: '*.svc.local', path_prefix: /eureka }
        backend: eureka
      - match: { path_prefix: / }
        backend: gateway
backends:
  gateway: { addresses: [10.0.0.1:80, 10.0.0.2:80] }
  nacos-alice: { addresses: [10.0.1.1:8848] }
  nacos: { addresses: [10.0.1.2:8848] }
  eureka: { addresses: [10.0.2.1:19011], balance: client_ip }
";

    fn table() -> Table {
        let cfg = Config::parse("t", CFG).unwrap();
        build(&cfg, 1, &BuildContext::default(), &HashMap::new())
    }

    fn route<'a>(t: &'a Table, host: &str, path: &str, hdrs: &[(&str, &str)]) -> Option<&'a str> {
        let mut h = HeaderMap::new();
        for (k, v) in hdrs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let l = t.listener("web").unwrap();
        l.lookup(host, path, &http::Method::GET, &h).map(|r| &*t.backends[r.backend.unwrap()].name)
    }

    #[test]
    fn first_match_wins_in_order() {
        let t = table();
        assert_eq!(route(&t, "www.test-gateway.net", "/nacos/x", &[]), Some("gateway"));
        assert_eq!(route(&t, "other", "/nacos/x", &[("x-debug-user", "alice")]), Some("nacos-alice"));
        assert_eq!(route(&t, "other", "/nacos/x", &[("x-debug-user", "bob")]), Some("nacos"));
        assert_eq!(route(&t, "a.svc.local", "/eureka/apps", &[]), Some("eureka"));
        assert_eq!(route(&t, "svc.local", "/eureka/apps", &[]), Some("gateway"));
        assert_eq!(route(&t, "other", "/nacosx", &[]), Some("gateway"));
    }

    #[test]
    fn endpoints_keep_state_across_builds() {
        let cfg = Config::parse("t", CFG).unwrap();
        let ctx = BuildContext::default();
        let t1 = build(&cfg, 1, &ctx, &HashMap::new());
        t1.backends[0].endpoints[0].stats.requests.fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        let t2 = build(&cfg, 2, &ctx, &HashMap::new());
        assert!(Arc::ptr_eq(&t1.backends[0].endpoints[0].stats, &t2.backends[0].endpoints[0].stats));
        assert_eq!(t2.backends[0].endpoints[0].authority.as_str(), "10.0.0.1:80");
    }
}
