//! Prometheus metrics: one struct of documented handles, created once and passed in (no global
//! registry, no macros). Label sets are bounded by the config (listeners, routes, backends), never
//! by request data. Per-route handles are resolved when a table is built ([`RouteMetrics`]), so a
//! request only increments atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// ferry_requests_total{listener,route,backend,class}
    pub requests: IntCounterVec,
    /// ferry_request_duration_seconds{listener,route}: from request head to the end of the response body.
    pub duration: HistogramVec,
    /// ferry_proxy_errors_total{listener,kind}: requests ferry answered itself with an error.
    pub proxy_errors: IntCounterVec,
    /// ferry_upstream_connect_errors_total{backend}
    pub connect_errors: IntCounterVec,
    /// ferry_upstream_retries_total{backend}
    pub retries: IntCounterVec,
    /// ferry_endpoint_ejections_total{backend}
    pub ejections: IntCounterVec,
    /// ferry_backend_endpoints{backend,state}: set from the live table at each scrape.
    pub endpoints: IntGaugeVec,
    /// ferry_connections_total{listener}
    pub connections: IntCounterVec,
    /// ferry_connections_active{listener}
    pub connections_active: IntGaugeVec,
    /// ferry_tcp_bytes_total{listener,direction}
    pub tcp_bytes: IntCounterVec,
    /// ferry_table_swaps_total
    pub table_swaps: IntCounter,
    /// ferry_table_version
    pub table_version: IntGauge,
    /// ferry_config_errors_total: config loads that were rejected (the last good table stayed).
    pub config_errors: IntCounter,
    /// ferry_config_reloads_total: config reloads applied.
    pub config_reloads: IntCounter,
    /// ferry_tls_certificate_reloads_total{listener, result}: certificate file changes acted on.
    pub cert_reloads: IntCounterVec,
    /// ferry_discovery_watch_restarts_total{resource}: re-lists after a dropped Kubernetes watch.
    pub watch_restarts: IntCounterVec,
    /// ferry_discovery_errors_total: failed Kubernetes list/watch calls (each retried with backoff).
    pub discovery_errors: IntCounter,
    /// ferry_discovery_last_sync_age_seconds: since the last event from the Kubernetes API.
    pub last_sync_age: prometheus::Gauge,
    /// ferry_dns_errors_total{backend}: failed lookups of static host names (the last addresses stay).
    pub dns_errors: IntCounterVec,
    /// ferry_access_log_lines_total{log}: lines written, by destination (stdout or a file path).
    pub access_log_lines: IntCounterVec,
    /// ferry_access_log_dropped_total{log}: lines dropped because the writer could not keep up.
    pub access_log_dropped: IntCounterVec,
    /// ferry_access_log_errors_total{log}: failed writes or reopens.
    pub access_log_errors: IntCounterVec,
    /// ferry_access_log_queued_bytes{log}: lines waiting for the writer, set at each scrape.
    pub access_log_queued: IntGaugeVec,
}

const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Registers a metric and hands back the handle. Names and labels are constants, so failure is a bug.
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: Result<M, prometheus::Error>) -> M {
    let m = m.expect("valid metric");
    r.register(Box::new(m.clone())).expect("metric registered once");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "ferry_request_duration_seconds",
                    "Time from the request head to the end of the response body, by listener and route.",
                )
                .buckets(BUCKETS.to_vec()),
                &["listener", "route"],
            ),
        );
        let endpoints = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "ferry_backend_endpoints",
                    "Endpoints of each backend in the live table, by state (healthy, ejected).",
                ),
                &["backend", "state"],
            ),
        );
        let connections_active = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("ferry_connections_active", "Client connections open now, by listener."),
                &["listener"],
            ),
        );
        let table_swaps = reg(&r, IntCounter::new("ferry_table_swaps_total", "Routing tables published."));
        let table_version = reg(&r, IntGauge::new("ferry_table_version", "Version of the live routing table."));
        let config_errors = reg(
            &r,
            IntCounter::new(
                "ferry_config_errors_total",
                "Config loads rejected as invalid; the last good table kept serving.",
            ),
        );
        let config_reloads = reg(&r, IntCounter::new("ferry_config_reloads_total", "Config reloads applied."));
        let discovery_errors = reg(&r, IntCounter::new(
            "ferry_discovery_errors_total",
            "Failed Kubernetes list/watch calls; each is retried with backoff while the last endpoints keep serving.",
        ));
        let last_sync_age = reg(
            &r,
            prometheus::Gauge::new(
                "ferry_discovery_last_sync_age_seconds",
                "Seconds since the last event from the Kubernetes API (-1 before the first).",
            ),
        );
        Metrics {
            tcp_bytes: counter_vec(
                &r,
                "ferry_tcp_bytes_total",
                "Bytes copied by tcp listeners, by listener and direction (client_to_upstream, upstream_to_client).",
                &["listener", "direction"],
            ),
            watch_restarts: counter_vec(
                &r,
                "ferry_discovery_watch_restarts_total",
                "Re-lists after a dropped Kubernetes watch, by resource (endpoints, services).",
                &["resource"],
            ),
            discovery_errors,
            last_sync_age,
            dns_errors: counter_vec(
                &r,
                "ferry_dns_errors_total",
                "Failed lookups of host names in static backend addresses, by backend (the last addresses stay).",
                &["backend"],
            ),
            cert_reloads: counter_vec(
                &r,
                "ferry_tls_certificate_reloads_total",
                "Certificate file changes acted on, by listener and result (ok: new certificates serve; error: the old ones stay).",
                &["listener", "result"],
            ),
            config_reloads,
            access_log_lines: counter_vec(
                &r,
                "ferry_access_log_lines_total",
                "Access log lines written, by destination (stdout or the file's path).",
                &["log"],
            ),
            access_log_dropped: counter_vec(
                &r,
                "ferry_access_log_dropped_total",
                "Access log lines dropped because the destination could not keep up (the queue is bounded), by destination.",
                &["log"],
            ),
            access_log_errors: counter_vec(
                &r,
                "ferry_access_log_errors_total",
                "Failed writes or reopens of an access log, by destination.",
                &["log"],
            ),
            access_log_queued: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "ferry_access_log_queued_bytes",
                        "Bytes of access log lines waiting to be written, by destination (bounded; beyond it lines are dropped).",
                    ),
                    &["log"],
                ),
            ),
            requests: counter_vec(
                &r,
                "ferry_requests_total",
                "Requests answered, by listener, route, backend and status class (1xx..5xx).",
                &["listener", "route", "backend", "class"],
            ),
            duration,
            proxy_errors: counter_vec(
                &r,
                "ferry_proxy_errors_total",
                "Requests ferry answered with its own error, by listener and kind (no_route, no_endpoints, connect, upstream, timeout; per connection: proxy_protocol, tls_handshake, client_hello).",
                &["listener", "kind"],
            ),
            connect_errors: counter_vec(
                &r,
                "ferry_upstream_connect_errors_total",
                "Failed connection attempts to upstream endpoints, by backend.",
                &["backend"],
            ),
            retries: counter_vec(&r, "ferry_upstream_retries_total", "Requests moved to another endpoint, by backend.", &["backend"]),
            ejections: counter_vec(
                &r,
                "ferry_endpoint_ejections_total",
                "Endpoints ejected by passive health checking, by backend.",
                &["backend"],
            ),
            endpoints,
            connections: counter_vec(&r, "ferry_connections_total", "Client connections accepted, by listener.", &["listener"]),
            connections_active,
            table_swaps,
            table_version,
            config_errors,
            registry: r,
        }
    }

    /// The handles one route uses per request.
    pub fn route(&self, listener: &str, route: &str, backend: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[listener, route, backend, c]);
        RouteMetrics {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.duration.with_label_values(&[listener, route]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Pre-resolved handles for one route.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    pub duration: Histogram,
}

impl RouteMetrics {
    /// (all answers, 5xx answers) so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.by_class.iter().map(|c| c.get()).sum(), self.by_class[4].get())
    }

    pub fn count(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[i].inc();
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}
