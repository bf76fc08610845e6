//! ferry as the Ingress controller, measured (printed, not asserted):
//! - against the real control plane of tests/cluster: an Ingress created → ferry's new table
//!   published, → the first request served through ferry for its host (on a kept-alive client
//!   connection, polling), and a path added to a live Ingress → the first request for that path,
//!   median and p99 over the rounds (`FERRY_BENCH_ROUNDS`, default 30) (ingress-nginx regenerates nginx.conf and
//!   reloads nginx for the same, which its users measure in seconds);
//! - 1,000 Ingresses (3 paths each, annotations on a third of them): translation, ferry's parser,
//!   and the table build, each timed, and the resident memory they add.
//!
//!   cargo bench --bench ingress          # needs root (network namespaces), go, openssl, python3

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "support/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cluster::*;
use ferry::sources::ingress::{self, Objects, Settings};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn percentiles(v: Vec<f64>) -> (f64, f64) {
    (common::percentile(&v, 50), common::percentile(&v, 99))
}

fn ingress_json(name: &str, host: &str, paths: &[&str]) -> serde_json::Value {
    let paths: Vec<_> = paths
        .iter()
        .map(|p| json!({ "path": p, "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } }))
        .collect();
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": { "name": name },
        "spec": { "ingressClassName": "ferry", "rules": [ { "host": host, "http": { "paths": paths } } ] } })
}

type Client = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A kept-alive client connection to ferry (each poll is one request on it, as a browser's).
async fn client(web: std::net::SocketAddr) -> Client {
    let s = tokio::net::TcpStream::connect(web).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    tx
}

/// Status of one request for `host` `path` (0: no answer).
async fn status(c: &mut Client, host: &str, path: &str) -> u16 {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(path).header("host", host).body(http_body_util::Empty::new()).unwrap();
    let Ok(resp) = c.send_request(req).await else { return 0 };
    let s = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    s
}

async fn until_served(web: std::net::SocketAddr, host: &str, path: &str, t0: Instant) -> f64 {
    let mut c = client(web).await;
    loop {
        if status(&mut c, host, path).await == 200 {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{host}{path} never served");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn live(rounds: usize) {
    let cp = ControlPlane::start().expect("control plane");
    let net = PodNet::create().expect("pod network");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = cp.client().await;
        ensure_node(&c).await;
        namespace(&c, "bench").await;
        let svc: Service = serde_json::from_value(json!({ "metadata": { "name": "app" }, "spec": {
            "selector": { "app": "bench" }, "ports": [ { "port": 80, "targetPort": 8080 } ] } }))
        .unwrap();
        Api::<Service>::namespaced(c.clone(), "bench").create(&PostParams::default(), &svc).await.unwrap();
        let ip = net.add_pod("bench-0", &[8080]).unwrap();
        create_pod(&c, "bench", "bench-0", json!({ "app": "bench" }), &[("http", 8080)]).await;
        set_pod_status(&c, "bench", "bench-0", ip, true).await;
        let class: IngressClass = serde_json::from_value(
            json!({ "metadata": { "name": "ferry" }, "spec": { "controller": ingress::CONTROLLER } }),
        )
        .unwrap();
        Api::<IngressClass>::all(c.clone()).create(&PostParams::default(), &class).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let settings = Settings::new(any, any, dir.path().join("secrets"));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let watch = ferry::sources::watch::Watch { settings: settings.clone(), reporter: None, status: None };
        let watching = tokio::spawn(watch.run(c.clone(), tx));
        let feed = ferry::server::feed::Feed { base: None, admin: any, secrets_dir: settings.secrets_dir.clone() };
        let opts = ferry::Options { kube: Some(c.clone()), discovery_all: true, ..Default::default() };
        let (f, follow) = feed.start(rx, None, opts).await.unwrap();
        let web = f.addr(ingress::HTTP_LISTENER).unwrap();
        let api = Api::<Ingress>::namespaced(c.clone(), "bench");
        let (mut created, mut added, mut published) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..rounds {
            let (name, host) = (format!("ing-{i}"), format!("h{i}.bench"));
            let ing: Ingress = serde_json::from_value(ingress_json(&name, &host, &["/a"])).unwrap();
            let mut versions = f.store.subscribe();
            versions.borrow_and_update();
            let t0 = Instant::now();
            api.create(&PostParams::default(), &ing).await.unwrap();
            tokio::time::timeout(Duration::from_secs(30), versions.changed()).await.expect("no table").unwrap();
            published.push(t0.elapsed().as_secs_f64() * 1000.0);
            created.push(until_served(web, &host, "/a", t0).await);
            let patch = ingress_json(&name, &host, &["/a", "/b"]);
            let t0 = Instant::now();
            api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&patch)).await.unwrap();
            added.push(until_served(web, &host, "/b", t0).await);
        }
        let (p50, p99) = percentiles(published);
        println!("ingress: Ingress created → new table published: median {p50:.1} ms, p99 {p99:.1} ms");
        let (p50, p99) = percentiles(created);
        println!(
            "ingress: Ingress created → first request served: median {p50:.1} ms, p99 {p99:.1} ms ({rounds} Ingresses)"
        );
        let (p50, p99) = percentiles(added);
        println!("ingress: path added to a live Ingress → first request on it: median {p50:.1} ms, p99 {p99:.1} ms");
        watching.abort();
        follow.abort();
        let _ = follow.await;
        if let Ok(f) = std::sync::Arc::try_unwrap(f) {
            f.shutdown(Duration::ZERO, Duration::from_secs(5)).await;
        }
    });
    drop(net);
    drop(cp);
}

/// `n` Ingresses of 3 paths each over `n / 10` Services, a third with annotations.
fn objects(n: usize) -> Objects {
    let mut o = Objects::default();
    for s in 0..n / 10 {
        let svc: Service =
            serde_json::from_value(json!({ "metadata": { "name": format!("svc{s}"), "namespace": "team" },
            "spec": { "ports": [ { "name": "http", "port": 80 } ] } }))
            .unwrap();
        o.services.insert(("team".into(), format!("svc{s}")), svc);
    }
    for i in 0..n {
        let svc = format!("svc{}", i % (n / 10));
        let paths: Vec<_> = ["/api", "/static", "/"]
            .iter()
            .zip(["Prefix", "ImplementationSpecific", "Prefix"])
            .map(|(p, t)| json!({ "path": p, "pathType": t, "backend": { "service": { "name": svc, "port": { "name": "http" } } } }))
            .collect();
        let mut ann = BTreeMap::new();
        if i % 3 == 0 {
            ann.insert("nginx.ingress.kubernetes.io/proxy-body-size".to_string(), "8m".to_string());
            ann.insert("nginx.ingress.kubernetes.io/proxy-read-timeout".to_string(), "120".to_string());
            ann.insert("nginx.ingress.kubernetes.io/whitelist-source-range".to_string(), "10.0.0.0/8".to_string());
        }
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": { "name": format!("ing{i}"), "namespace": "team", "annotations": ann,
                "creationTimestamp": format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60) },
            "spec": { "ingressClassName": "ferry", "rules": [ { "host": format!("app{i}.example.com"), "http": { "paths": paths } } ] }
        }))
        .unwrap();
        o.ingresses.push(ing);
    }
    o
}

fn thousand() {
    let n = 1000;
    let objs = objects(n);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = Settings::new(any, any, std::env::temp_dir().join("ferry-bench-secrets"));
    let admin: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Warm up once, then time the median of a few rounds of each stage.
    let _ = ferry::sources::config(&ingress::translate(&objs, &settings), None, admin).unwrap();
    let rounds = 5;
    let (mut tr, mut parse, mut build) = (Vec::new(), Vec::new(), Vec::new());
    let ctx = ferry::table::build::BuildContext::default();
    let before = common::rss_kib();
    let mut keep = Vec::new();
    for r in 0..rounds {
        let t = Instant::now();
        let out = ingress::translate(&objs, &settings);
        tr.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let cfg = ferry::sources::config(&out, None, admin).unwrap();
        parse.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let table = ferry::table::build::build(&cfg, r as u64 + 1, &ctx, &HashMap::new());
        build.push(t.elapsed().as_secs_f64() * 1000.0);
        if r == 0 {
            println!(
                "ingress: {n} Ingresses → {} routes, {} backends, {} problems",
                cfg.route_count(),
                cfg.backends.len(),
                out.problems.len()
            );
            keep.push((cfg, table));
        }
    }
    let after = common::rss_kib();
    let m = |v: Vec<f64>| percentiles(v).0;
    let (t, p, b) = (m(tr), m(parse), m(build));
    println!(
        "ingress: {n} Ingresses, full rebuild: translate {t:.1} ms + parse {p:.1} ms + table build {b:.1} ms = {:.1} ms (median of {rounds})",
        t + p + b
    );
    println!(
        "ingress: resident memory of one config and table of {n} Ingresses: +{:.1} MiB",
        after.saturating_sub(before) as f64 / 1024.0
    );
    drop(keep);
}

fn main() {
    thousand();
    let rounds = std::env::var("FERRY_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    live(rounds);
}
