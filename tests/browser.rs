//! A web UI served under a path prefix, loaded by a real browser (headless Chromium). The app
//! redirects as Tomcat does — from the Host it received — and sets its session cookie for `/`.
//! Knowing nothing of the prefix, it writes `<base href="/">`, absolute links and a login form
//! posting to `/login`, and every subresource must still load through ferry (`strip_prefix`,
//! `rewrite_location`, `rewrite_cookie_path`, `body_replace`); told the prefix by
//! X-Forwarded-Prefix (Spring's forward-headers-strategy), it writes the prefix itself, and the
//! same route without `body_replace` must not double it.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;

/// The login page, for an app under `prefix` (`""` when it knows of none).
fn page(prefix: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><base href="{prefix}/"><link rel="stylesheet" href="{prefix}/css/app.css"><script src="{prefix}/js/app.js"></script></head>
<body><img id="logo" src="{prefix}/img/logo.svg" alt="logo"><div id="status">loading</div>
<form id="login" action="{prefix}/login" method="post"><input name="username"></form></body></html>
"#
    )
}

const SCRIPT: &str = r#"window.addEventListener('load', function () {
  var css = getComputedStyle(document.body).backgroundColor === 'rgb(1, 2, 3)';
  var img = document.getElementById('logo').naturalWidth > 0;
  document.getElementById('status').textContent = (css && img) ? 'ALL-LOADED' : ('BROKEN css=' + css + ' img=' + img);
});"#;

const LOGO: &str =
    r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#;

/// The app: `/` redirects to its own absolute `/login` and sets a session cookie for `/`.
/// Records (path, cookie) of every request.
/// Loads `url` in headless Chromium (kept off every network but loopback) and returns its output:
/// the DOM after scripts ran on stdout.
async fn chromium_dom(url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        PATIENCE * 3,
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--no-pings",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium runs (apt install chromium)")
}

async fn ui_app(seen: Arc<Mutex<Vec<(String, String)>>>) -> SocketAddr {
    listen(move |s| {
        let seen = seen.clone();
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string());
                    let cookie = header("cookie").unwrap_or_default();
                    seen.lock().unwrap().push((path.clone(), cookie));
                    // Tomcat: redirects from the Host it received; Spring with
                    // forward-headers-strategy: under the X-Forwarded-Prefix it was told.
                    let host = header("host").unwrap_or_default();
                    let prefix = header("x-forwarded-prefix").unwrap_or_default();
                    let (status, ct, body) = match path.as_str() {
                        "/" => (StatusCode::FOUND, "text/plain", String::new()),
                        "/login" => (StatusCode::OK, "text/html; charset=utf-8", page(&prefix)),
                        "/css/app.css" => {
                            (StatusCode::OK, "text/css", "body { background-color: rgb(1, 2, 3); }".into())
                        }
                        "/js/app.js" => (StatusCode::OK, "application/javascript", SCRIPT.into()),
                        "/img/logo.svg" => (StatusCode::OK, "image/svg+xml", LOGO.into()),
                        _ => (StatusCode::NOT_FOUND, "text/plain", "not found".into()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert("content-type", ct.parse().unwrap());
                    if path == "/" {
                        r.headers_mut().insert("location", format!("http://{host}{prefix}/login").parse().unwrap());
                        r.headers_mut().insert("set-cookie", "JSESSIONID=abc123; Path=/; HttpOnly".parse().unwrap());
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_less_ui_loads_whole_under_a_stripped_prefix_in_chromium() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = ui_app(seen.clone()).await;
    let yaml = format!(
        r#"admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      # Browsers ask for this at the root whatever the page says.
      - {{ match: {{ path_exact: /favicon.ico }}, respond: {{ status: 204 }} }}
      - match: {{ path_prefix: /eureka-ui/ }}
        strip_prefix: true
        rewrite_cookie_path: true
        body_replace:
          - {{ from: '<base href="/">', to: '<base href="/eureka-ui/">' }}
          - {{ from: 'href="/', to: 'href="/eureka-ui/' }}
          - {{ from: 'src="/', to: 'src="/eureka-ui/' }}
          - {{ from: 'action="/', to: 'action="/eureka-ui/' }}
        request_headers: {{ remove: [X-Forwarded-Prefix] }}
        backend: ui
      # The same app told the prefix: it writes it itself, so nothing is replaced.
      - match: {{ path_prefix: /aware-ui/ }}
        strip_prefix: true
        rewrite_cookie_path: true
        backend: ui
backends:
  ui: {{ addresses: [{app}] }}
"#
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // What the browser is told at the door: the redirect and the cookie, under the prefix.
    // The app redirects to http://ui.example/login (the Host it received): ferry maps it back
    // under the prefix, as nginx's proxy_redirect does for the Host it sent.
    for prefix in ["/eureka-ui", "/aware-ui"] {
        let req = format!("GET {prefix}/ HTTP/1.1\r\nHost: ui.example\r\nConnection: close\r\n\r\n");
        let head = raw(web, req.as_bytes()).await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 302"), "{head}");
        assert!(head.contains(&format!("\r\nlocation: {prefix}/login\r\n")), "{head}");
        assert!(head.contains(&format!("\r\nset-cookie: jsessionid=abc123; path={prefix}/; httponly\r\n")), "{head}");
    }
    seen.lock().unwrap().clear();
    for prefix in ["/eureka-ui", "/aware-ui"] {
        seen.lock().unwrap().clear();
        let out = chromium_dom(&format!("http://{web}{prefix}/")).await;
        let dom = String::from_utf8_lossy(&out.stdout);
        let requests = seen.lock().unwrap().clone();
        assert!(
            dom.contains("ALL-LOADED"),
            "{prefix}: the page did not load whole:\n{dom}\nstderr: {}\napp saw: {requests:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The login form posts under the prefix, once.
        assert!(dom.contains(&format!("action=\"{prefix}/login\"")), "{prefix}: {dom}");
        assert!(!dom.contains(&format!("{prefix}{prefix}")), "{prefix}: the prefix doubled: {dom}");
        // Every asset came through ferry, with the session cookie ferry moved under the prefix.
        for asset in ["/login", "/css/app.css", "/js/app.js", "/img/logo.svg"] {
            let hit = requests.iter().find(|(p, _)| p == asset);
            assert!(hit.is_some_and(|(_, c)| c.contains("JSESSIONID=abc123")), "{prefix}{asset}: {requests:?}");
        }
    }
    let m = get(f.admin, "/metrics").await.text();
    let misses = metric(&m, "ferry_proxy_errors_total", &[("kind", "no_route"), ("listener", "web")]).unwrap_or(0.0);
    assert_eq!(misses, 0.0, "a request missed the prefix: {m}");
}

/// `ferry demo` as a newcomer meets it: a client-side route of the front end (served from files,
/// compressed, through the SPA fallback) opens in a browser and its script reaches the gateway
/// pods through `/prod-api/`.
#[tokio::test]
async fn the_demo_front_end_loads_in_chromium_and_calls_the_api() {
    let (mut child, web) = spawn_demo().await;
    let run = chromium_dom(&format!("http://{web}/orders/42")).await;
    let dom = String::from_utf8_lossy(&run.stdout);
    assert!(dom.contains("ferry demo shop"), "{dom}\nstderr: {}", String::from_utf8_lossy(&run.stderr));
    assert!(dom.contains("gateway-") && dom.contains("answered GET /orders"), "the script's API call: {dom}");
    signal(&child, "TERM");
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("demo did not exit").unwrap();
    assert!(status.success(), "{status:?}");
}
