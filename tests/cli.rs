//! Tests of the `ferry` binary itself: `check`, `run` with SIGTERM drain, and `demo`.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn check_lists_every_error_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        &dir,
        "bad.yaml",
        "admin: 127.0.0.1:9901
listeners:
  - name: web
    bind: 0.0.0.0:8080
    routes:
      - match: { path_prefix: /eureka }
        backend: eurka
      - match: { path_prefix: nacos }
        backend: nacos
backends:
  nacos:
    addresses: [10.0.0.1:8848]
    balance: fastest
  eureka:
    addresses: [10.0.0.2]
    retries: many
",
    );
    let out = std::process::Command::new(FERRY).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for (line, col, words) in [
        (7, 18, "backend `eurka`, which is not defined"),
        (8, 31, "path_prefix `nacos` must start with `/`"),
        (13, 14, "balance `fastest` is unknown"),
        (15, 17, "`10.0.0.2` is not an IP:port"),
        (16, 14, "retries: `many` is not a whole number"),
    ] {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&prefix) && l.contains(words)),
            "expected `{prefix}…{words}…` in:\n{err}"
        );
    }
    let positions: Vec<(usize, usize)> = err
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{file}:")))
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "errors not in file order: {positions:?}");
    assert!(err.contains("5 error(s)"), "{err}");
    // `run` refuses the same file without binding anything.
    let out = std::process::Command::new(FERRY).args(["run", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not starting"));
}

#[tokio::test]
async fn check_accepts_the_shipped_routes_yaml() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml");
    let out = std::process::Command::new(FERRY).args(["check", "-c", path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("ok: 1 listener(s), 7 route(s), 5 backend(s) (12 static address(es), 0 Kubernetes Service(s))"),
        "{text}"
    );
    assert!(text.contains("nacos-alice: */nacos [x-debug-user: alice] -> nacos-alice"), "{text}");
    assert!(text.contains("eureka-api: */eureka -> eureka\n"), "Eureka's API path is forwarded unstripped: {text}");
}

#[tokio::test]
async fn check_reads_static_directories_and_error_pages_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dist")).unwrap();
    write(&dir, "50x.html", "<h1>sorry</h1>");
    let yaml = "listeners:
  - name: web
    bind: 0.0.0.0:8080
    compress: true
    error_pages: { 502: 50x.html }
    routes:
      - { name: front, static: { root: dist, fallback: /index.html } }
";
    let good = write(&dir, "good.yaml", yaml);
    let out = std::process::Command::new(FERRY).args(["check", "-c"]).arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown =
        format!("front: */ -> static root {}/dist (fallback /index.html) (compress ≥ 1024 B)", dir.path().display());
    assert!(text.contains(&shown), "{text}");
    // A missing page and a missing directory are both named.
    let bad = write(&dir, "bad.yaml", &yaml.replace("50x.html", "gone.html").replace("root: dist", "root: nodist"));
    let out = std::process::Command::new(FERRY).args(["check", "-c"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("gone.html: error page:") && err.contains("nodist: static directory:"), "{err}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let slow = upstream_with_delay("slow", Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "routes.yaml",
        &format!(
            "admin: 127.0.0.1:0
drain_delay: 300ms
shutdown_timeout: 20s
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [{}] }}
",
            slow.addr
        ),
    );
    let FerryProcess { mut child, listeners, admin } = spawn_ferry(&cfg).await;
    let web = listeners["web"];
    assert_eq!(get(admin, "/readyz").await.status, 200);
    // An idle keep-alive connection: one request answered, then left open.
    let mut idle = tokio::net::TcpStream::connect(web).await.unwrap();
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, idle.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let inflight = tokio::spawn(get(web, "/slow-report"));
    // Wait until the upstream holds the request, then signal.
    let held = async {
        while slow.hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, held).await.expect("request never reached the upstream");
    signal(&child, "TERM");
    let not_ready = async {
        loop {
            if get(admin, "/readyz").await.status == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, not_ready).await.expect("/readyz never turned 503 while draining");
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream(), "slow");
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("ferry did not exit").unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn demo_serves_the_three_services_and_shows_balancing() {
    let (mut child, addr) = spawn_demo().await;
    let mut config_pods = std::collections::HashSet::new();
    for _ in 0..6 {
        let t = get(addr, "/config/application.yml").await.text();
        assert!(t.contains("answered GET /application.yml"), "{t}");
        config_pods.insert(t.split_whitespace().next().unwrap().to_string());
    }
    assert_eq!(config_pods.len(), 3, "round robin over three config pods: {config_pods:?}");
    assert!(get(addr, "/eureka/apps").await.text().starts_with("eureka-"));
    assert!(get(addr, "/prod-api/orders").await.text().starts_with("gateway-"));
    // The front end is served from files, client-side routes fall back to it.
    for page in ["/", "/orders/42"] {
        let r = get(addr, page).await;
        assert_eq!(r.status, 200, "{page}");
        assert!(r.text().contains("ferry demo shop"), "{page}: {}", r.text());
    }
    let js = get(addr, "/assets/app.js").await;
    assert!(js.text().contains("/prod-api/orders"));
    signal(&child, "TERM");
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("demo did not exit").unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn run_refuses_a_service_backend_without_a_kubernetes_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "routes.yaml",
        "admin: 127.0.0.1:0
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: eureka } ] } ]
backends:
  eureka: { service: eureka.test-basic-eureka, port: eureka }
",
    );
    // No in-cluster environment, no KUBECONFIG file, and a HOME without ~/.kube/config.
    let out = std::process::Command::new(FERRY)
        .args(["run", "-c"])
        .arg(&cfg)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend `eureka` names a Kubernetes Service, but no Kubernetes config was found"), "{err}");
    // `check` still validates it offline.
    let out = std::process::Command::new(FERRY).args(["check", "-c"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn import_writes_routes_yaml_and_says_what_it_could_not_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        &dir,
        "nginx.conf",
        "events {}\nhttp {\n  server {\n    listen 8080;\n    location / { proxy_pass http://10.0.0.9:8080; }\n  }\n}\n",
    );
    let out_file = dir.path().join("routes.yaml");
    let out = std::process::Command::new(FERRY).arg("import").arg(&conf).arg("-o").arg(&out_file).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(&out_file).unwrap();
    assert!(yaml.contains("nginx.conf:5:5  location /"), "{yaml}");
    let check = std::process::Command::new(FERRY).args(["check", "-c"]).arg(&out_file).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // A directive it cannot carry over: written anyway, exit 3, a warning at its line.
    let conf = write(&dir, "cache.conf", "http {\n  server {\n    listen 80;\n    proxy_cache_path /tmp/c keys_zone=c:1m;\n    location / { proxy_pass http://10.0.0.9; }\n  }\n}\n");
    let out = std::process::Command::new(FERRY).arg("import").arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cache.conf:4:5: warning: `proxy_cache_path`: ferry does not cache"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("backend: '10.0.0.9-80'"));
    // Unparsable: exit 1, nothing on stdout.
    let conf = write(&dir, "bad.conf", "http {\n");
    let out = std::process::Command::new(FERRY).arg("import").arg(&conf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.conf:1:6: error:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
