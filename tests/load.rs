//! Heavy tests against ferry running as its own process, each printing what it measured:
//! 10,000 idle keep-alive connections while a normal client is served, and SIGTERM to one of two
//! replicas under load (nothing may fail).

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpStream;

/// Open-files limit for this test process, raised to the hard limit; at least `need`.
fn open_files(need: u64) {
    let n = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(n >= need, "this machine allows {n} open files per process; the test needs {need}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_a_normal_client() {
    const IDLE: usize = 10_000;
    // ferry runs as its own process, so each side holds one descriptor per connection.
    open_files(IDLE as u64 + 200);
    let up = upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        format!(
            "admin: 127.0.0.1:0
listeners:
  # Idle means idle: no head at all, so the head timeout must not end them during the count.
  - {{ name: web, bind: 127.0.0.1:0, header_read_timeout: 10m, routes: [ {{ backend: b }} ] }}
backends:
  b: {{ addresses: [{}] }}
",
            up.addr
        ),
    )
    .unwrap();
    let f = spawn_ferry(&path).await;
    let web = f.listeners["web"];
    let pid = f.child.id().unwrap();
    assert_eq!(get(web, "/warm").await.status, 200);
    let before = rss_kib(pid);

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(web).await.unwrap());
    }
    // Every one of them is accepted and counted by ferry, not just queued in the kernel.
    let active = async {
        loop {
            let m = get(f.admin, "/metrics").await.text();
            let n = metric(&m, "ferry_connections_active", &[("listener", "web")]).unwrap_or(0.0);
            if n >= IDLE as f64 {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let n = tokio::time::timeout(PATIENCE * 3, active).await.expect("ferry never held them all");
    let started = std::time::Instant::now();
    let r = get(web, "/normal").await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let after = rss_kib(pid);
    println!(
        "idle connections {n} held / normal request served 200 in {:.1} ms / ferry RSS +{} KiB ({:.1} KiB each)",
        took.as_secs_f64() * 1e3,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / IDLE as f64
    );
    // None of them was dropped while the normal request went through.
    for s in &idle {
        let mut b = [0u8; 1];
        assert!(matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    }
}

/// Two replicas as a Service sees them: new connections go to `a` until it is withdrawn (as the
/// endpoint is removed when the pod starts terminating), then to `b`.
#[derive(Clone)]
struct Replicas {
    a: SocketAddr,
    b: SocketAddr,
    withdrawn: Arc<std::sync::atomic::AtomicBool>,
}

type Connecting = Pin<Box<dyn std::future::Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower_service::Service<http::Uri> for Replicas {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Connecting {
        let to = if self.withdrawn.load(std::sync::atomic::Ordering::SeqCst) { self.b } else { self.a };
        Box::pin(async move {
            let s = TcpStream::connect(to).await?;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(s))
        })
    }
}

#[derive(Default)]
struct Tally {
    ok: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    /// Answered by the terminating replica after SIGTERM was sent.
    drained: std::sync::atomic::AtomicUsize,
    /// HTTP/2 requests the client's h2 refused to start because the connection's GOAWAY had just
    /// arrived (the pool handed out the connection a moment before): never sent, so sent again,
    /// as browsers and gRPC clients do. A second failure counts in `failed`.
    refused_by_goaway: std::sync::atomic::AtomicUsize,
    errors: Mutex<Vec<String>>,
}

/// Did the client refuse to send the request because the server's GOAWAY (graceful, NO_ERROR) had
/// arrived? hyper-util's pool does not retry these itself (it retries only canceled requests).
fn refused_by_goaway(e: &hyper_util::client::legacy::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("SendRequest") && text.contains("GoAway(") && text.contains("NO_ERROR") && text.contains("Remote")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let (ua, ub) = (
        upstream_with_delay("a", std::time::Duration::from_millis(10)).await,
        upstream_with_delay("b", std::time::Duration::from_millis(10)).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let spawn = |name: &str, up: SocketAddr| {
        let path = dir.path().join(format!("{name}.yaml"));
        let yaml = format!(
            "admin: 127.0.0.1:0
drain_delay: 1s
shutdown_timeout: 20s
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [{up}] }}
"
        );
        std::fs::write(&path, yaml).unwrap();
        async move { spawn_ferry(&path).await }
    };
    let mut fa = spawn("a", ua.addr).await;
    let fb = spawn("b", ub.addr).await;
    let withdrawn = Arc::new(AtomicBool::new(false));
    let replicas = Replicas { a: fa.listeners["web"], b: fb.listeners["web"], withdrawn: withdrawn.clone() };

    // 12 HTTP/1.1 and 4 HTTP/2 clients, each on its own connection, each sending one request
    // after another: ordinary pooled clients (hyper-util), which leave a connection after
    // `Connection: close` and open a new stream elsewhere after GOAWAY.
    const H1: usize = 12;
    const H2: usize = 4;
    let tally = Arc::new(Tally::default());
    let a_gone = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..H1 + H2 {
        let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        b.pool_max_idle_per_host(1);
        if i >= H1 {
            b.http2_only(true);
        }
        let client = b.build::<_, http_body_util::Empty<Bytes>>(replicas.clone());
        let (tally, a_gone, withdrawn) = (tally.clone(), a_gone.clone(), withdrawn.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: stop 20 requests after the terminating replica has exited, or at 5,000.
            let mut after_exit = 0;
            for _ in 0..5_000 {
                if a_gone.load(SeqCst) {
                    after_exit += 1;
                    if after_exit > 20 {
                        break;
                    }
                }
                let sent_after_signal = withdrawn.load(SeqCst);
                let uri: http::Uri = "http://ferry.test/work".parse().unwrap();
                let mut result = client.get(uri.clone()).await;
                if result.as_ref().is_err_and(refused_by_goaway) {
                    tally.refused_by_goaway.fetch_add(1, SeqCst);
                    result = client.get(uri).await;
                }
                match result {
                    Ok(resp) if resp.status() == 200 => {
                        let from_a = resp.headers().get("x-upstream").is_some_and(|v| v == "a");
                        match resp.into_body().collect().await {
                            Ok(_) => {
                                tally.ok.fetch_add(1, SeqCst);
                                if from_a && sent_after_signal {
                                    tally.drained.fetch_add(1, SeqCst);
                                }
                            }
                            Err(e) => {
                                tally.failed.fetch_add(1, SeqCst);
                                tally.errors.lock().unwrap().push(format!("body: {e}"));
                            }
                        }
                    }
                    Ok(resp) => {
                        tally.failed.fetch_add(1, SeqCst);
                        tally.errors.lock().unwrap().push(format!("status {}", resp.status()));
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, SeqCst);
                        tally.errors.lock().unwrap().push(format!("{e:?}"));
                    }
                }
            }
        }));
    }

    // Under load, take replica a out of the Service and send it SIGTERM.
    let warm = async {
        while ua.hits.load(SeqCst) < 300 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, warm).await.expect("the load never reached replica a");
    withdrawn.store(true, SeqCst);
    signal(&fa.child, "TERM");
    let status = tokio::time::timeout(PATIENCE * 2, fa.child.wait()).await.expect("replica a did not exit").unwrap();
    a_gone.store(true, SeqCst);
    assert!(status.success(), "replica a exited with {status:?}");
    for c in clients {
        tokio::time::timeout(PATIENCE * 2, c).await.expect("a client hung").unwrap();
    }
    let (ok, failed, drained) = (tally.ok.load(SeqCst), tally.failed.load(SeqCst), tally.drained.load(SeqCst));
    let refused = tally.refused_by_goaway.load(SeqCst);
    let errors = tally.errors.lock().unwrap().clone();
    println!(
        "SIGTERM under load: {} clients ({H1} HTTP/1.1, {H2} HTTP/2) / requests {} / answered by the terminating \
         replica after SIGTERM {drained} / refused by the client after GOAWAY and sent again {refused} / failed {failed}",
        H1 + H2,
        ok + failed
    );
    assert_eq!(failed, 0, "requests failed across the SIGTERM: {errors:?}");
    assert!(ub.hits.load(SeqCst) > 0, "the load never moved to replica b");
}
