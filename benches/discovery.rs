//! How fast ferry follows the cluster, against the real control plane of tests/cluster (printed,
//! not asserted):
//! - API write → table published: a Pod's status is patched Ready; ferry's store announces a new
//!   table version (the EndpointSlice controller, the watch, and ferry's rebuild of one backend);
//! - API write → first request on the new pod: the same, until a request through ferry is answered
//!   by that pod.
//!
//! Table rebuild time and memory at 10k services / 100k endpoints are in `cargo bench --bench micro`.
//!
//!   cargo bench --bench discovery        # needs root (network namespaces), go, openssl, python3

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "support/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cluster::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

fn median(v: Vec<f64>) -> (f64, f64) {
    (common::percentile(&v, 50), common::percentile(&v, 90))
}

fn main() {
    let rounds = 15;
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
        let cfg = ferry::config::Config::parse(
            "bench.yaml",
            "admin: 127.0.0.1:0\nlisteners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: app } ] } ]\n\
             backends:\n  app: { service: app.bench, port: 80, retries: 0 }\n",
        )
        .unwrap();
        let f = ferry::start_with(
            cfg,
            ferry::Options {
                kube: Some(c.clone()),
                discovery: ferry::discovery::Mode::Endpointslices,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let web = f.addr("web").unwrap();
        let (mut published, mut first_request) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let name = format!("bench-{i}");
            let ip = net.add_pod(&name, &[8080]).unwrap();
            create_pod(&c, "bench", &name, json!({ "app": "bench" }), &[("http", 8080)]).await;
            let mut versions = f.store.subscribe();
            versions.borrow_and_update();
            let t0 = Instant::now();
            set_pod_status(&c, "bench", &name, ip, true).await;
            // Table published with the new pod in it.
            loop {
                let t = f.store.load();
                if t.backend("app").is_some_and(|b| b.endpoints.iter().any(|e| e.addr.ip() == std::net::IpAddr::V4(ip)))
                {
                    published.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                tokio::time::timeout(Duration::from_secs(30), versions.changed()).await.expect("no table").unwrap();
            }
            // First request through ferry answered by the new pod (round robin reaches it within
            // as many requests as there are pods).
            'outer: loop {
                for _ in 0..=i {
                    let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await.unwrap();
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out).await;
                    if out.contains(&format!("x-pod: {name}")) {
                        first_request.push(t0.elapsed().as_secs_f64() * 1000.0);
                        break 'outer;
                    }
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "the new pod never answered");
            }
        }
        let (p50, p90) = median(published.clone());
        println!(
            "discovery: API write (Pod Ready) → table published: median {p50:.1} ms, p90 {p90:.1} ms ({rounds} pods)"
        );
        let (p50, p90) = median(first_request);
        println!(
            "discovery: API write (Pod Ready) → first request on the new pod: median {p50:.1} ms, p90 {p90:.1} ms"
        );
        println!(
            "  (includes kube-controller-manager's EndpointSlice sync; ferry's own rebuild of one backend of 10k is"
        );
        println!("   about 0.16 ms in `cargo bench --bench micro`)");
        f.shutdown(Duration::ZERO, Duration::from_secs(5)).await;
    });
    drop(net);
    drop(cp);
}
