//! The admin listener, separate from every data listener: `/` (the status page: HTML, CSS and JS
//! built into the binary, polling `/status.json`), `/healthz` (the process is up), `/readyz` (a
//! table is published and ferry is not draining), `/metrics` (Prometheus text) and `/routes` (the
//! live table as JSON, with each endpoint's state and counters, and the last config error if a
//! reload was refused). It reads the same store as the data plane; `stats` keeps the page's
//! one-minute window per route.

pub mod stats;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::HostMatch;
use crate::table::store::Store;
use crate::table::Table;

pub struct AdminState {
    pub store: Arc<Store>,
    pub live: stats::Live,
    pub started: std::time::Instant,
}

impl AdminState {
    pub fn new(store: Arc<Store>) -> AdminState {
        AdminState { store, live: stats::Live::default(), started: std::time::Instant::now() }
    }
}

/// Samples every route once a second for the status page, until `stop`.
async fn sample(state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => state.live.sample(&state.store.load()),
        }
    }
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let sampler = tokio::spawn(sample(state.clone(), stop.clone()));
    while !*stop.borrow() {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req)) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(graceful.watch(conn));
    }
    drop(listener);
    sampler.abort();
    graceful.shutdown().await;
}

const PAGE: &str = include_str!("status.html");
const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "admin endpoints take GET\n");
    }
    match req.uri().path() {
        "/" => asset(PAGE, "text/html; charset=utf-8"),
        "/status.css" => asset(CSS, "text/css; charset=utf-8"),
        "/status.js" => asset(JS, "text/javascript; charset=utf-8"),
        "/status.json" => {
            let body = serde_json::to_vec(&status_json(state)).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.store.draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !state.store.ready() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no routing table yet, or Kubernetes lists still loading\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" => {
            update_endpoint_gauges(&state.store);
            state.store.reuse.logs.update_gauges(&state.store.metrics);
            let mut r = text(StatusCode::OK, state.store.metrics.encode());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }
        "/routes" => {
            let table = state.store.load();
            let mut v = routes_json(&table);
            v["last_error"] = state.store.last_error().map(|e| Value::String(e.to_string())).unwrap_or(Value::Null);
            let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "admin: try /, /healthz, /readyz, /metrics, /routes or /status.json\n"),
    }
}

/// What the status page shows: the live table (as `/routes`), each route's last minute, the
/// discovery state, the access logs and the last config error.
fn status_json(state: &AdminState) -> Value {
    let store = &state.store;
    let table = store.load();
    let mut v = routes_json(&table);
    for (li, l) in table.listeners.iter().enumerate() {
        for (ri, r) in l.routes.iter().enumerate() {
            v["listeners"][li]["routes"][ri]["live"] = state.live.route(&l.name, &r.name);
        }
    }
    let m = &store.metrics;
    let kube = store.config().is_some_and(|c| c.uses_kubernetes());
    v["discovery"] = json!({
        "kubernetes": kube,
        "last_sync_age_s": store.last_sync_age(),
        "watch_restarts": {
            "endpoints": m.watch_restarts.with_label_values(&["endpoints"]).get(),
            "services": m.watch_restarts.with_label_values(&["services"]).get(),
        },
        "errors": m.discovery_errors.get(),
    });
    v["access_logs"] = store.reuse.logs.summary(m).into();
    v["last_error"] = store.last_error().map(|e| Value::String(e.to_string())).unwrap_or(Value::Null);
    v["ready"] = json!(store.ready() && !store.draining());
    v["draining"] = json!(store.draining());
    v["uptime_s"] = json!(state.started.elapsed().as_secs());
    v["ferry"] = json!(env!("CARGO_PKG_VERSION"));
    v
}

fn update_endpoint_gauges(store: &Store) {
    store.metrics.last_sync_age.set(store.last_sync_age().unwrap_or(-1.0));
    let table = store.load();
    let g = &store.metrics.endpoints;
    g.reset();
    for b in &table.backends {
        let ejected = b.endpoints.iter().filter(|e| e.stats.is_ejected()).count() as i64;
        g.with_label_values(&[&b.name, "healthy"]).set(b.endpoints.len() as i64 - ejected);
        g.with_label_values(&[&b.name, "ejected"]).set(ejected);
    }
}

/// The live table as JSON.
pub fn routes_json(t: &Table) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let listeners: Vec<Value> = t
        .listeners
        .iter()
        .map(|l| {
            let routes: Vec<Value> = l
                .routes
                .iter()
                .map(|r| {
                    let headers: serde_json::Map<String, Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (k.to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        })
                        .collect();
                    json!({
                        "name": &*r.name,
                        "match": {
                            "host": r.host.as_ref().map(HostMatch::to_string),
                            "path_prefix": r.path_prefix.as_deref(),
                            "path_exact": r.path_exact.as_deref(),
                            "path_starts_with": r.path_starts_with.as_deref(),
                            "path_regex": r.path_regex.as_ref().map(|re| re.as_str()),
                            "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                            "headers": headers,
                        },
                        "strip_prefix": r.strip_prefix,
                        "prefix_rewrite": r.prefix_rewrite.as_deref(),
                        "actions": r.actions.as_ref().map(|a| actions_json(a)),
                        "backend": r.backend.map(|b| &*t.backends[b].name),
                        "static": r.files.as_ref().map(|s| s.dir.display().to_string()),
                        "compress": r.compress,
                        "error_pages": r.error_pages.as_ref().map(|p| p.statuses()),
                        "split": r.split.as_ref().map(|s| {
                            let mut w = std::collections::BTreeMap::new();
                            for &k in s.cycle.iter() {
                                *w.entry(&*t.backends[s.backends[k as usize]].name).or_insert(0u32) += 1;
                            }
                            w
                        }),
                    })
                })
                .collect();
            json!({
                "name": &*l.name,
                "bind": l.bind.to_string(),
                "protocol": l.protocol.as_str(),
                "routes": routes,
                "backend": l.tcp_backend.map(|i| &*t.backends[i].name),
            })
        })
        .collect();
    let backends: Vec<Value> = t
        .backends
        .iter()
        .map(|b| {
            let endpoints: Vec<Value> = b
                .endpoints
                .iter()
                .map(|e| {
                    let s = &e.stats;
                    json!({
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "backup": e.backup,
                        "pod": e.pod.as_deref(),
                        "condition": e.condition,
                        "state": if s.is_ejected() { "ejected" } else { "healthy" },
                        "in_flight": s.in_flight.load(Relaxed),
                        "requests": s.requests.load(Relaxed),
                        "failures": s.failures.load(Relaxed),
                        "consecutive_failures": s.consecutive_failures(),
                    })
                })
                .collect();
            let set = &b.settings;
            json!({
                "name": &*b.name,
                "balance": set.balance.as_str(),
                "connect_timeout_ms": set.connect_timeout.as_millis() as u64,
                "request_timeout_ms": set.request_timeout.map(|d| d.as_millis() as u64),
                "retries": set.retries,
                "service": set.service.as_ref().map(|s| s.to_string()),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "version": t.version, "listeners": listeners, "backends": backends })
}

/// A route's actions as `/routes` shows them (templates as written).
fn actions_json(a: &crate::config::Actions) -> Value {
    use crate::config::actions::{HeaderActions, Rewrite};
    let headers = |h: &HeaderActions| {
        json!({
            "set": h.set.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            "add": h.add.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            "remove": h.remove.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        })
    };
    json!({
        "access": a.access.iter().map(|r| {
            let who = r.from.map_or("all".to_string(), |n| n.to_string());
            json!({ if r.allow { "allow" } else { "deny" }: who })
        }).collect::<Vec<_>>(),
        "rate_limit": a.rate_limit.as_ref().map(|l| json!({
            "rate_per_second": l.rate as f64 / 1000.0, "burst": l.burst, "status": l.status.as_u16(),
            "key": match &l.key { crate::config::actions::LimitKey::ClientIp => "client_ip".to_string(), crate::config::actions::LimitKey::Header(h) => format!("header:{h}") },
        })),
        "basic_auth": a.basic_auth.as_ref().map(|b| json!({ "realm": b.realm, "htpasswd": b.htpasswd.display().to_string() })),
        "redirect": a.redirect.as_ref().map(|r| json!({ "to": r.to.to_string(), "status": r.status.as_u16() })),
        "respond": a.respond.as_ref().map(|r| json!({ "status": r.status.as_u16(), "body": r.body.as_ref().map(|b| b.to_string()) })),
        "rewrite": a.rewrite.as_ref().map(|r| match r {
            Rewrite::Prefix(p) => json!({ "prefix": p }),
            Rewrite::Regex { regex, to, .. } => json!({ "regex": regex.as_str(), "to": to.to_string() }),
        }),
        "request_headers": headers(&a.request_headers),
        "response_headers": headers(&a.response_headers),
    })
}
