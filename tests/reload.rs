//! Live reload of routes.yaml with the real binary: file rewrites under load, broken rewrites,
//! a ConfigMap-style `..data` symlink swap, SIGHUP, and listeners coming and going.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(admin: &str, listeners: &[(&str, &str)], backend: std::net::SocketAddr) -> String {
    let mut y = format!("admin: {admin}\ndrain_delay: 0s\nlisteners:\n");
    for (name, bind) in listeners {
        y.push_str(&format!("  - {{ name: {name}, bind: '{bind}', routes: [ {{ backend: b }} ] }}\n"));
    }
    y.push_str(&format!("backends:\n  b: {{ addresses: [{backend}] }}\n"));
    y
}

/// Replaces a file atomically, as editors and `kubectl cp` do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let ok = tokio::time::timeout(PATIENCE, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "gave up waiting for {what}");
}

#[tokio::test]
async fn a_rewrite_under_load_switches_routes_with_no_failed_request() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, config("127.0.0.1:0", &[("web", "127.0.0.1:0")], a.addr)).unwrap();
    let f = spawn_ferry(&path).await;
    let web = f.listeners["web"];

    // Load: 4 workers on keep-alive connections until told to stop (bounded by a request cap).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, from_b) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, from_b) = (stop.clone(), ok.clone(), failed.clone(), from_b.clone());
        workers.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(web).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = http::Request::get("/x")
                    .header("host", "t")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match tx.send_request(r).await {
                    Ok(resp) if resp.status() == 200 => {
                        if resp.headers()["x-upstream"] == "b" {
                            from_b.fetch_add(1, Ordering::Relaxed);
                        }
                        use http_body_util::BodyExt;
                        let _ = resp.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    until("load to start", async || ok.load(Ordering::Relaxed) > 200).await;
    replace(&path, &config("127.0.0.1:0", &[("web", "127.0.0.1:0")], b.addr));
    until("traffic to move to b", async || from_b.load(Ordering::Relaxed) > 200).await;
    // A broken rewrite changes nothing: b keeps answering, and the error is shown.
    replace(&path, "listeners: [ { name: web, bind: nowhere } ]\n");
    until("the error on /routes", async || get(f.admin, "/routes").await.json()["last_error"].is_string()).await;
    let before = from_b.load(Ordering::Relaxed);
    until("more traffic to b", async || from_b.load(Ordering::Relaxed) > before + 200).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during the reloads");
    let routes = get(f.admin, "/routes").await.json();
    let err = routes["last_error"].as_str().unwrap();
    assert!(err.contains("routes.yaml:1:") && err.contains("not an IP:port"), "{err}");
    assert_eq!(routes["backends"][0]["endpoints"][0]["address"], b.addr.to_string());
    let m = get(f.admin, "/metrics").await.text();
    assert!(m.contains("ferry_config_errors_total 1"), "{m}");
    assert!(m.contains("ferry_config_reloads_total 1"), "{m}");
    drop(f);
}

#[tokio::test]
async fn a_configmap_symlink_swap_and_sighup_reload_and_listeners_come_and_go() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    // The layout the kubelet makes for a ConfigMap volume: routes.yaml → ..data/routes.yaml,
    // ..data → a timestamped directory, swapped atomically on update.
    let v1 = dir.path().join("..2026_11_23_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("routes.yaml"), config("127.0.0.1:0", &[("web", "127.0.0.1:0")], a.addr)).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", dir.path().join("routes.yaml")).unwrap();
    let path: PathBuf = dir.path().join("routes.yaml");
    let f = spawn_ferry(&path).await;
    assert_eq!(get(f.listeners["web"], "/").await.upstream(), "a");

    // A keep-alive connection opened before the reloads: the unchanged listener must keep it.
    let mut kept = tokio::net::TcpStream::connect(f.listeners["web"]).await.unwrap();
    let ask = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    kept.write_all(ask).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("x-upstream: a"));

    // The ConfigMap update: a second listener appears and the backend moves to b.
    let free = dead_addr().await;
    let v2 = dir.path().join("..2026_11_23_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("routes.yaml"),
        config("127.0.0.1:0", &[("web", "127.0.0.1:0"), ("extra", &free.to_string())], b.addr),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_23_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    until("the symlink swap to be applied", async || get(f.listeners["web"], "/").await.upstream() == "b").await;
    until("the new listener", async || tokio::net::TcpStream::connect(free).await.is_ok()).await;
    assert_eq!(get(free, "/").await.upstream(), "b");
    kept.write_all(ask).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("x-upstream: b"), "the kept connection was not served");

    // SIGHUP after an edit the watcher cannot see (the same content is rewritten in place, then
    // the target changes behind the symlink without an event in the watched directory).
    std::fs::write(v2.join("routes.yaml"), config("127.0.0.1:0", &[("web", "127.0.0.1:0")], a.addr)).unwrap();
    signal(&f.child, "HUP");
    until("SIGHUP reload", async || get(f.listeners["web"], "/").await.upstream() == "a").await;
    // The removed listener stops accepting.
    until("the removed listener to close", async || tokio::net::TcpStream::connect(free).await.is_err()).await;
    kept.write_all(ask).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("x-upstream: a"));
    drop(f);
}

/// A reload refused at its last step (a listener's address is taken) leaves every live thing as
/// it was: the htpasswd users, the error pages, the access-log files, the listeners and the table.
#[tokio::test]
async fn a_refused_reload_leaves_users_files_logs_and_listeners_as_they_were() {
    let app = upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // alice:secret and bob:secret ({SHA} entries, as htpasswd -s writes them).
    std::fs::write(p.join("old.htpasswd"), "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
    std::fs::write(p.join("new.htpasswd"), "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
    std::fs::write(p.join("old404.html"), "old page").unwrap();
    std::fs::write(p.join("new404.html"), "new page").unwrap();
    let yaml = |suffix: &str, extra_listener: &str| {
        let d = p.display();
        format!(
            "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    access_log: {{ format: combined, to: {d}/{suffix}.log }}
    error_pages: {{ 404: {d}/{suffix}404.html }}
    routes:
      - {{ match: {{ path_prefix: /app }}, basic_auth: {{ realm: r, htpasswd: {d}/{suffix}.htpasswd }}, backend: app }}
{extra_listener}backends:
  app: {{ addresses: [{}] }}
",
            app.addr
        )
    };
    let parse = |y: String| ferry::config::Config::parse("test.yaml", &y).unwrap();
    let f = ferry::start_with(parse(yaml("old", "")), quiet()).await.unwrap();
    let before = f.listeners();
    let web = f.addr("web").unwrap();
    let auth = |user: &str| {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret")))
    };
    let status = |user: &'static str| {
        let a = auth(user);
        async move {
            send(web, req("GET", web, "/app").header("authorization", a).body(String::new()).unwrap()).await.status
        }
    };
    assert_eq!(status("alice").await, 200);

    // The new config changes all of them, and adds a listener on an address that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra =
        format!("  - {{ name: more, bind: '{}', routes: [ {{ backend: app }} ] }}\n", taken.local_addr().unwrap());
    let err = f.apply(parse(yaml("new", &extra))).await.expect_err("the bind must fail");
    assert!(err.to_string().contains(&taken.local_addr().unwrap().to_string()), "{err}");

    let reuse = &f.store.reuse;
    assert!(reuse.users.get(&p.join("old.htpasswd")).is_some(), "the live htpasswd file was forgotten");
    assert!(reuse.users.get(&p.join("new.htpasswd")).is_none(), "the refused config's htpasswd file was loaded");
    let page = |name: &str| reuse.files.pages(&[(http::StatusCode::NOT_FOUND, p.join(name))], &[]);
    assert!(page("old404.html").is_some(), "the live error page was forgotten");
    assert!(page("new404.html").is_none(), "the refused config's error page was loaded");
    let log = |name: &str| ferry::config::log::LogTarget::File(p.join(name));
    assert!(reuse.logs.get(&log("old.log")).is_some(), "the live access log was closed");
    assert!(reuse.logs.get(&log("new.log")).is_none(), "the refused config's access log was opened");
    assert!(!p.join("new.log").exists(), "the refused config's access log file was created");
    assert_eq!(f.listeners(), before, "listeners changed");
    assert_eq!(status("alice").await, 200, "alice no longer gets in");
    assert_eq!(status("bob").await, 401, "bob gets in on a refused config");

    // The same change without the taken address applies whole.
    drop(taken);
    f.apply(parse(yaml("new", ""))).await.unwrap();
    assert_eq!((status("alice").await.as_u16(), status("bob").await.as_u16()), (401, 200));
    assert!(p.join("new.log").exists());
    f.shutdown(Duration::ZERO, PATIENCE).await;
}
