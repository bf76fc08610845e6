//! `ferry demo`: ferry in front of in-process demo upstreams, no cluster needed.
//!
//! Three small HTTP servers each stand in for the pods of "config", "eureka" and "gateway"
//! (the Spring Cloud trio ferry is built for), on ephemeral loopback ports. Each answers with its
//! pod name, so balancing is visible from curl. A small front end (an index.html and a script)
//! is served from files at `/`, next to the gateway at `/prod-api/`: the "front end's dist/ plus
//! API" server block most Spring Cloud teams write in nginx.

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

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ferry demo shop</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<h1>ferry demo shop</h1>
<p>This page is a file ferry serves itself (route <code>front</code>, <code>static</code>); the API
calls go to the gateway pods through <code>/prod-api/</code>, with the prefix removed.</p>
<ul>
  <li><a href="/prod-api/orders">/prod-api/orders</a>: the gateway, round robin</li>
  <li><a href="/config/application.yml">/config/application.yml</a>: config server</li>
  <li><a href="/eureka/apps">/eureka/apps</a>: eureka, the same pod for you (client_ip)</li>
  <li><a href="/orders/42">/orders/42</a>: a client-side route; no such file, so this page again (SPA fallback)</li>
</ul>
<p>Last API answer: <output id="answer">…</output> <button id="again">call /prod-api/orders</button></p>
<script src="/assets/app.js"></script>
</body>
</html>
"#;

const APP_JS: &str = r#"// Calls the API through ferry and shows which gateway pod answered.
async function call() {
  const out = document.getElementById("answer");
  try {
    const r = await fetch("/prod-api/orders");
    out.textContent = (await r.text()).trim();
  } catch (e) {
    out.textContent = "failed: " + e;
  }
}
document.getElementById("again").addEventListener("click", call);
call();
"#;

const STYLE_CSS: &str = "body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }\n\
                         code, output { background: #f3f3f3; padding: 0 .25rem; }\n";

/// Writes the demo front end (index.html, assets/app.js, assets/style.css) under `dir`.
pub fn write_front_end(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("assets"))?;
    std::fs::write(dir.join("index.html"), INDEX_HTML)?;
    std::fs::write(dir.join("assets/app.js"), APP_JS)?;
    std::fs::write(dir.join("assets/style.css"), STYLE_CSS)
}

/// The routes.yaml the demo runs, with the pods' addresses and the front end's directory filled in.
pub fn config_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    pods: &[(&str, Vec<SocketAddr>)],
    front_end: &std::path::Path,
) -> String {
    let mut y = format!(
        "# ferry demo: generated at start\nadmin: {admin}\ndrain_delay: 0s\nlisteners:\n  - name: web\n    bind: {listen}\n    \
         compress: true\n    routes:\n      \
         - match: {{ path_prefix: /config }}\n        strip_prefix: true\n        backend: config\n      \
         - match: {{ path_prefix: /eureka }}\n        strip_prefix: true\n        backend: eureka\n      \
         - name: prod-api\n        match: {{ path_prefix: /prod-api }}\n        strip_prefix: true\n        backend: gateway\n      \
         - name: front\n        match: {{ path_prefix: / }}\n        static: {{ root: '{}', fallback: /index.html, cache: 1h }}\n\
         backends:\n",
        front_end.display()
    );
    for (svc, addrs) in pods {
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let balance = if *svc == "eureka" { "client_ip" } else { "round_robin" };
        y.push_str(&format!("  {svc}:\n    addresses: [{}]\n    balance: {balance}\n", list.join(", ")));
    }
    y
}
