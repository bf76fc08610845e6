//! The admin status page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, from Debian's chromium-driver) loads the page while traffic flows and checks
//! what a person would see, in one page load: each backend and endpoint listed with its state,
//! counters rising as requests go through, an endpoint turning `ejected` after its upstream
//! dies, and a refused config reload shown at the top. It saves a screenshot
//! (`target/tmp/status-page.png`; `FERRY_SCREENSHOT=path` to put it elsewhere).
//!
//! Chromium is kept off every network but loopback, as in tests/browser.rs.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::Full;

use support::*;

/// chromedriver on a free loopback port, killed with the test.
async fn chromedriver() -> (tokio::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs (apt install chromium-driver)");
    support::nginx::wait_listening(port).await;
    (child, port)
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--no-pings",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1400,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

/// The text of the first element `css` finds, once there is one (bounded wait).
async fn text(c: &Client, css: &str) -> String {
    let e = c.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.text().await.unwrap()
}

/// Waits (bounded) until the text at `css` satisfies `ok`; returns it.
async fn until(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: never {what} (last: {last:?})");
}

fn number(t: &str) -> u64 {
    t.replace(',', "").trim().parse().unwrap_or_else(|_| panic!("not a count: {t:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_live_state_in_chromium() {
    let steady = upstream("steady").await;
    // The flaky pod: a server we can stop, leaving a refused port behind.
    let flaky_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky: SocketAddr = flaky_listener.local_addr().unwrap();
    // Its connections live in the task's JoinSet: stopping the task closes them all.
    let flaky_task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((s, _)) = flaky_listener.accept().await else { continue };
            conns.spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("flaky\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    access_log: {{ to: off }}
    routes:
      - {{ name: orders-api, match: {{ path_prefix: /api/orders }}, strip_prefix: true, backend: orders }}
      - {{ name: health, match: {{ path_exact: /ping }}, respond: {{ status: 200, body: pong }} }}
backends:
  orders: {{ addresses: [ '{}', '{flaky}' ], balance: round_robin, retries: 2 }}
",
        steady.addr
    );
    std::fs::write(&routes, &yaml).unwrap();
    let cfg = ferry::config::Config::load(&routes).unwrap();
    let f = ferry::start_with(cfg, quiet()).await.unwrap();
    let web = f.addr("web").unwrap();

    // Traffic: a request every few milliseconds until the test ends (bounded in count).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
            while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 50_000 {
                let uri = format!("http://{web}/api/orders/1");
                let _ = client.get(uri.parse().unwrap()).await;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    let (_driver, port) = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(port, profile.path()).await;
    c.goto(&format!("http://{}/", f.admin)).await.unwrap();

    // Listed: the routes in order, the backend, both endpoints healthy.
    until(&c, "body", "rendered", |t| !t.contains("loading…")).await;
    let route = text(&c, "tr[data-route='web/orders-api']").await;
    assert!(route.contains("/api/orders") && route.contains("orders"), "{route}");
    assert!(text(&c, "tr[data-route='web/health']").await.contains("respond 200"));
    assert!(text(&c, "h3[data-backend='orders']").await.contains("2 of 2 healthy"));
    let steady_row = format!("tr[data-endpoint='{}']", steady.addr);
    let flaky_row = format!("tr[data-endpoint='{flaky}']");
    assert_eq!(text(&c, &format!("{steady_row} .state")).await, "healthy");
    assert_eq!(text(&c, &format!("{flaky_row} .state")).await, "healthy");
    assert!(text(&c, &steady_row).await.contains("ready"));

    // Counters rise on the page itself (no reload).
    let first = number(&until(&c, &format!("{steady_row} .requests"), "counting", |t| number(t) > 0).await);
    until(&c, &format!("{steady_row} .requests"), "rising", |t| number(t) > first + 20).await;
    until(&c, "tr[data-route='web/orders-api'] .rps", "showing a rate", |t| t.parse::<f64>().is_ok_and(|r| r > 0.0))
        .await;
    until(&c, "tr[data-route='web/orders-api'] .p50", "showing latency", |t| t.ends_with(" ms")).await;

    // The flaky pod dies: ferry ejects it, and the page says so.
    flaky_task.abort();
    let _ = flaky_task.await;
    until(&c, &format!("{flaky_row} .state"), "ejected", |t| t == "ejected").await;
    assert!(text(&c, "h3[data-backend='orders']").await.contains("1 of 2 healthy"));
    assert_eq!(text(&c, &format!("{steady_row} .state")).await, "healthy");

    // A bad reload: the error is shown at the top, naming the file and line; traffic goes on.
    let bad = yaml.replace("balance: round_robin", "balance: fastest");
    std::fs::write(&routes, bad).unwrap();
    assert!(!f.reload_file(&routes).await, "the broken config is refused");
    let shown = until(&c, "#config-error", "shown", |t| !t.is_empty()).await;
    assert!(shown.contains("refused") && shown.contains("routes.yaml:") && shown.contains("fastest"), "{shown}");
    let before = number(&text(&c, &format!("{steady_row} .requests")).await);
    until(&c, &format!("{steady_row} .requests"), "still rising", |t| number(t) > before).await;

    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = std::env::var_os("FERRY_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png"));
    std::fs::write(&shot, &png).unwrap();
    println!("status page screenshot: {} ({} bytes)", shot.display(), png.len());

    c.close().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    assert!(sent.load(Ordering::Relaxed) > 0);
}
