//! Micro-benchmarks of the pieces on and next to the forwarding path:
//! route lookup (10, 1k, 10k routes), endpoint pick per policy (3 and 1,000 endpoints), table
//! build and incremental update at 10k services / 100k endpoints, and request header rewrite.
//!
//!   cargo bench --bench micro
//!
//! Besides criterion's timings it prints the resident memory a 10k-service / 100k-endpoint table
//! adds, measured from /proc/self/status around the build.

#[path = "support/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferry::balance::{Balancer, EndpointStats, Tried};
use ferry::config::{Balance, Config};
use ferry::proxy::headers::{routing_host, set_forwarded, strip_hop_by_hop};
use ferry::table::build::{backend, build, with_backends, BuildContext};
use ferry::table::Discovered;
use http::{HeaderMap, HeaderValue};

/// A config with `n` routes: a tenth match on host, the rest on path prefixes, and a catch-all.
fn routes_config(n: usize) -> Config {
    let mut y = String::from("admin: 127.0.0.1:0\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    routes:\n");
    for i in 0..n.saturating_sub(1) {
        if i % 10 == 0 {
            y.push_str(&format!("      - {{ match: {{ host: svc{i}.example.com }}, backend: b{} }}\n", i % 50));
        } else {
            y.push_str(&format!("      - {{ match: {{ path_prefix: /svc{i} }}, backend: b{} }}\n", i % 50));
        }
    }
    y.push_str("      - { backend: b0 }\nbackends:\n");
    for b in 0..50 {
        y.push_str(&format!("  b{b}: {{ addresses: [10.0.{}.{}:8080] }}\n", b / 200, b % 200 + 1));
    }
    Config::parse("bench", &y).expect("bench config")
}

/// A config with `services` Service backends (one route each).
fn services_config(services: usize) -> Config {
    let mut y = String::from("admin: 127.0.0.1:0\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    routes:\n");
    for i in 0..services {
        y.push_str(&format!("      - {{ match: {{ path_prefix: /s{i} }}, backend: s{i} }}\n"));
    }
    y.push_str("backends:\n");
    for i in 0..services {
        y.push_str(&format!("  s{i}: {{ service: svc{i}.ns, port: 80 }}\n"));
    }
    Config::parse("bench", &y).expect("bench config")
}

fn endpoints(service: usize, per: usize) -> Vec<Discovered> {
    (0..per)
        .map(|j| {
            let n = (service * per + j) as u32;
            let ip = IpAddr::from((0x0A00_0000u32 + n).to_be_bytes());
            Discovered::ready(SocketAddr::new(ip, 8080), None)
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    let ctx = BuildContext::default();
    let headers = HeaderMap::new();
    for n in [10usize, 1_000, 10_000] {
        let t = build(&routes_config(n), 1, &ctx, &HashMap::new());
        let l = t.listener("web").unwrap();
        // A path near the end of the list (the worst case for an ordered first-match scan) and
        // an exact host (indexed).
        let deep = format!("/svc{}/orders/42", n.saturating_sub(3));
        g.bench_with_input(BenchmarkId::new("path_deep", n), &n, |b, _| {
            b.iter(|| black_box(l.lookup(black_box("api.example.com"), black_box(&deep), &http::Method::GET, &headers)))
        });
        g.bench_with_input(BenchmarkId::new("host_exact", n), &n, |b, _| {
            b.iter(|| black_box(l.lookup(black_box("svc0.example.com"), black_box("/x"), &http::Method::GET, &headers)))
        });
    }
    g.finish();
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 1_000] {
        let addrs: Vec<SocketAddr> = endpoints(0, n).iter().map(|d| d.addr).collect();
        let stats: Vec<Arc<EndpointStats>> = (0..n).map(|_| Arc::new(EndpointStats::default())).collect();
        for policy in [Balance::RoundRobin, Balance::LeastRequest, Balance::ClientIp] {
            let bal = Balancer::new(policy, &addrs);
            let client: IpAddr = "192.0.2.77".parse().unwrap();
            g.bench_with_input(BenchmarkId::new(policy.as_str(), n), &n, |b, _| {
                b.iter(|| black_box(bal.pick(&stats, black_box(client), &Tried::default())))
            });
        }
    }
    g.finish();
}

fn table_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("table");
    g.sample_size(10);
    let ctx = BuildContext::default();
    let cfg = services_config(10_000);
    let discovered: HashMap<String, Vec<Discovered>> =
        (0..10_000).map(|i| (format!("s{i}"), endpoints(i, 10))).collect();
    let before = common::rss_kib();
    let t = build(&cfg, 1, &ctx, &discovered);
    let after = common::rss_kib();
    println!(
        "table: 10k services / 100k endpoints: {} backends, {} endpoints, resident memory +{:.1} MiB",
        t.backends.len(),
        t.backends.iter().map(|b| b.endpoints.len()).sum::<usize>(),
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    g.bench_function("build_10k_services_100k_endpoints", |b| b.iter(|| black_box(build(&cfg, 2, &ctx, &discovered))));
    let changed = endpoints(99_999, 11);
    g.bench_function("update_1_backend_of_10k", |b| {
        b.iter(|| {
            let nb = Arc::new(backend(&cfg.backends[4242], &changed, &ctx));
            black_box(with_backends(&t, 3, vec![(4242, nb)]))
        })
    });
    g.finish();
}

fn header_rewrite(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "www.test-gateway.net"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "zh-CN,zh;q=0.9,en;q=0.8"),
        ("cookie", "SESSION=5f1c2a; lang=zh"),
        ("connection", "keep-alive"),
        ("x-request-id", "4f0c7d7e-2a55-4b1e-9e0b-1d2c3b4a5f60"),
    ] {
        base.insert(http::HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let client = HeaderValue::from_static("192.0.2.77");
    let port = HeaderValue::from_static("8080");
    let hop = ferry::proxy::headers::Hop { client_ip: &client, proto: "http", port: &port, trusted: true };
    c.bench_function("header_rewrite", |b| {
        b.iter_batched(
            || base.clone(),
            |mut h| {
                let host = routing_host(None, h.get("host")).len();
                strip_hop_by_hop(&mut h, false);
                let xfh = h.get("host").cloned();
                set_forwarded(&mut h, &hop, xfh);
                black_box((h, host))
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, lookup, pick, table_build, header_rewrite);
criterion_main!(benches);
