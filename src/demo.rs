//! `ferry demo`: ferry in front of in-process demo upstreams, no cluster needed.
//!
//! Three small HTTP servers each stand in for the pods of "config", "eureka" and "gateway"
//! (the Spring Cloud trio ferry is built for), on ephemeral loopback ports. Each answers with its
//! pod name, so balancing is visible from curl.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const SERVICES: [&str; 3] = ["config", "eureka", "gateway"];
pub const PODS_PER_SERVICE: usize = 3;

/// One demo pod: answers every request with who it is and what it was asked.
async fn pod(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let body = format!(
                    "{} answered {} {} (host {})\n",
                    name,
                    req.method(),
                    req.uri(),
                    req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("-")
                );
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut().insert("x-demo-pod", HeaderValue::from_str(&name).expect("pod names are ASCII"));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Starts the demo pods; returns (service, pod addresses) in [`SERVICES`] order.
pub async fn start_pods() -> std::io::Result<Vec<(&'static str, Vec<SocketAddr>)>> {
    let mut out = Vec::new();
    for svc in SERVICES {
        let mut addrs = Vec::new();
        for i in 0..PODS_PER_SERVICE {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?);
            tokio::spawn(pod(l, format!("{svc}-{i}")));
        }
        out.push((svc, addrs));
    }
    Ok(out)
}

/// The routes.yaml the demo runs, with the pods' addresses filled in.
pub fn config_yaml(listen: SocketAddr, admin: SocketAddr, pods: &[(&str, Vec<SocketAddr>)]) -> String {
    let mut y = format!(
        "# ferry demo: generated at start\nadmin: {admin}\ndrain_delay: 0s\nlisteners:\n  - name: web\n    bind: {listen}\n    routes:\n      \
         - match: {{ path_prefix: /config }}\n        strip_prefix: true\n        backend: config\n      \
         - match: {{ path_prefix: /eureka }}\n        strip_prefix: true\n        backend: eureka\n      \
         - match: {{ path_prefix: / }}\n        backend: gateway\nbackends:\n"
    );
    for (svc, addrs) in pods {
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let balance = if *svc == "eureka" { "client_ip" } else { "round_robin" };
        y.push_str(&format!("  {svc}:\n    addresses: [{}]\n    balance: {balance}\n", list.join(", ")));
    }
    y
}
