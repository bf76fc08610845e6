//! Test upstreams and helpers. Everything binds 127.0.0.1:0 and talks only to loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub mod nginx;
pub mod pki;

/// Upper bound for anything a test waits for; reaching it is a failure, not a measurement.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Binds 127.0.0.1:0 and runs `handle` on every accepted connection in its own task.
pub async fn listen<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// An HTTP/1.1 upstream that answers with a JSON description of what it received.
///
/// Paths: `/slow/MS` waits MS milliseconds first; `/status/CODE` answers CODE; `/upload` reads the
/// body as it streams and reports its length and a checksum; anything else echoes.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Fires once the first body chunk of an `/upload` has arrived.
    pub first_chunk: Arc<tokio::sync::Notify>,
}

pub async fn upstream(name: &str) -> Upstream {
    upstream_with_delay(name, Duration::ZERO).await
}

/// Like [`upstream`], but every answer waits `delay` first (a slow pod).
pub async fn upstream_with_delay(name: &str, delay: Duration) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let first_chunk = Arc::new(tokio::sync::Notify::new());
    let (n, h, f) = (name.to_string(), hits.clone(), first_chunk.clone());
    let addr = listen(move |s| {
        let (n, h, f) = (n.clone(), h.clone(), f.clone());
        async move {
            let svc = service_fn(move |req| {
                let (n, h, f) = (n.clone(), h.clone(), f.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(answer(&n, &h, &f, req).await)
                }
            });
            let _ =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).with_upgrades().await;
        }
    })
    .await;
    Upstream { name: name.into(), addr, hits, first_chunk }
}

async fn answer(
    name: &str,
    hits: &AtomicUsize,
    first: &tokio::sync::Notify,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let mut status = StatusCode::OK;
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    }
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut body = req.into_body();
    let (mut len, mut sum, mut chunks) = (0u64, 0u64, 0u64);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if chunks == 0 {
                first.notify_one();
            }
            chunks += 1;
            len += data.len() as u64;
            sum = data.iter().fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
        }
    }
    let v = serde_json::json!({
        "upstream": name, "method": method, "uri": uri, "version": version,
        "headers": headers, "body_len": len, "body_sum": sum,
    });
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&v).unwrap())));
    *r.status_mut() = status;
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

/// Checksum the upstream reports, computed the same way.
pub fn checksum(data: &[u8], mut sum: u64) -> u64 {
    for &b in data {
        sum = sum.wrapping_mul(31).wrapping_add(b as u64);
    }
    sum
}

/// Accepts connections, reads the request head, and closes without answering.
pub async fn closer() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = listen(move |mut s| {
        let h = h.clone();
        async move {
            if read_head(&mut s).await {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    (addr, hits)
}

/// Reads until the end of a request head (`\r\n\r\n`); false if the peer closed first.
pub async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// An address nobody listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A WebSocket echo upstream.
pub async fn ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    listen(|s| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() || m.is_binary() {
                if ws.send(m).await.is_err() {
                    break;
                }
            } else if m.is_close() {
                break;
            }
        }
    })
    .await
}

/// Starts ferry in-process from YAML text.
pub async fn ferry(yaml: &str) -> ferry::Running {
    let cfg =
        ferry::config::Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("bad test config:\n{e}\n{yaml}"));
    ferry::start_with(cfg, quiet()).await.unwrap()
}

/// The error a one-listener config with these `routes` is refused with.
pub fn refusal(routes: &str) -> String {
    let text = format!("listeners:\n  - name: w\n    bind: 127.0.0.1:0\n    routes: {routes}\n");
    match ferry::config::Config::parse("r.yaml", &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Options for ferry inside the test process: its stdout access-log lines are counted, not
/// printed among the test runner's output (tests that read the log write it to a file).
#[allow(dead_code)]
pub fn quiet() -> ferry::Options {
    ferry::Options { discard_stdout_access_log: true, ..Default::default() }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn upstream(&self) -> String {
        self.headers.get("x-upstream").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
}

/// Connects from `from` (any 127.0.0.0/8 address works on Linux) to `to`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from, 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends one HTTP/1.1 request on a new connection and reads the whole reply.
pub async fn send<B>(to: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send_from([127, 0, 0, 1].into(), to, req).await
}

pub async fn send_from<B>(from: IpAddr, to: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let fut = async {
        let s = connect_from(from, to).await;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        let resp = tx.send_request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("no reply in time")
}

pub fn req(method: &str, to: SocketAddr, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path).header("host", to.to_string())
}

pub async fn get(to: SocketAddr, path: &str) -> Reply {
    send(to, req("GET", to, path).body(http_body_util::Empty::<Bytes>::new()).unwrap()).await
}

pub async fn get_host(to: SocketAddr, host: &str, path: &str) -> Reply {
    let r = Request::builder().uri(path).header("host", host).body(http_body_util::Empty::<Bytes>::new()).unwrap();
    send(to, r).await
}

/// Writes raw bytes and reads until the peer closes (send `Connection: close`).
pub async fn raw(to: SocketAddr, bytes: &[u8]) -> String {
    let fut = async {
        let mut s = TcpStream::connect(to).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("no raw reply in time")
}

/// The `ferry` binary, built by cargo for the integration tests.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A `ferry run` child process (killed if the test drops it) and the addresses it logged.
pub struct FerryProcess {
    pub child: tokio::process::Child,
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
}

/// Runs `ferry run -c path` (2 worker threads, JSON logs) and waits until its admin listener is
/// up, collecting every data listener's address from the "listening" log lines on the way. The
/// rest of stderr keeps being read so ferry never blocks on a full pipe.
/// `ferry demo` on ephemeral ports, as a child process (killed if dropped), and the address of
/// its web listener (from the first line it prints).
pub async fn spawn_demo() -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(FERRY)
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, out.next_line()).await.unwrap().unwrap().unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .parse()
        .unwrap();
    // Keep reading what it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    (child, addr)
}

pub async fn spawn_ferry(path: &std::path::Path) -> FerryProcess {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(FERRY)
        .args(["run", "--threads", "2", "--log-format", "json", "-c"])
        .arg(path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut listeners = std::collections::HashMap::new();
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let addr = v["addr"].as_str().map(|a| a.parse().unwrap());
            match (v["message"].as_str(), v["listener"].as_str(), addr) {
                (Some("listening"), Some(name), Some(a)) => {
                    listeners.insert(name.to_string(), a);
                }
                (Some("admin listening"), _, Some(a)) => return a,
                _ => {}
            }
        }
        panic!("ferry exited before listening");
    };
    let admin = tokio::time::timeout(PATIENCE, find).await.expect("ferry did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    FerryProcess { child, listeners, admin }
}

/// Sends signal `name` (TERM, HUP, ...) to a child this test started.
pub fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let ok = std::process::Command::new("kill").arg(format!("-{name}")).arg(&pid).status().unwrap();
    assert!(ok.success(), "kill -{name} {pid}");
}

/// The value of one sample in Prometheus text: metric `name` with exactly the label set `labels`,
/// in whatever order ferry writes them. `None` when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    want.sort();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, mut have) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
        };
        have.sort();
        (n == name && have == want).then(|| value.parse().ok()).flatten()
    })
}

/// `a="x",b="y \"q\""` → pairs, unescaping values.
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => v.push(match chars.next()?.1 {
                    'n' => '\n',
                    c => c,
                }),
                (_, c) => v.push(c),
            }
        };
        out.push((k.trim_start_matches(',').to_string(), v));
        s = &rest[end + 1..];
    }
    Some(out)
}

/// An upstream that reads a request head, writes `reply` (then, with `hang`, waits forever
/// instead of closing).
pub async fn scripted(reply: &'static [u8], hang: bool) -> SocketAddr {
    listen(move |mut s| async move {
        if !read_head(&mut s).await {
            return;
        }
        let _ = s.write_all(reply).await;
        if hang {
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// The Kubernetes documentation's path-matching examples (Ingress, "Examples" table): the paths
/// of one Ingress as (path, pathType), a request path, and the index of the path that serves it
/// (`None`: the default backend). tests/ingress.rs and tests/cluster.rs run every row.
#[allow(dead_code)]
pub type PathRow = (&'static [(&'static str, &'static str)], &'static str, Option<usize>);

#[allow(dead_code)]
pub const PATH_TABLE: &[PathRow] = &[
    (&[("/", "Prefix")], "/anything/at/all", Some(0)),
    (&[("/foo", "Exact")], "/foo", Some(0)),
    (&[("/foo", "Exact")], "/bar", None),
    (&[("/foo", "Exact")], "/foo/", None),
    (&[("/foo/", "Exact")], "/foo", None),
    (&[("/foo", "Prefix")], "/foo", Some(0)),
    (&[("/foo", "Prefix")], "/foo/", Some(0)),
    (&[("/foo/", "Prefix")], "/foo", Some(0)),
    (&[("/foo/", "Prefix")], "/foo/", Some(0)),
    (&[("/aaa/bb", "Prefix")], "/aaa/bbb", None),
    (&[("/aaa/bbb", "Prefix")], "/aaa/bbb", Some(0)),
    (&[("/aaa/bbb/", "Prefix")], "/aaa/bbb", Some(0)),
    (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/", Some(0)),
    (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", Some(0)),
    (&[("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", None),
    (&[("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", Some(1)),
    (&[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/aaa/bbb", Some(2)),
    (&[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/ccc", Some(0)),
    (&[("/aaa", "Prefix")], "/ccc", None),
    (&[("/foo", "Prefix"), ("/foo", "Exact")], "/foo", Some(1)),
];

/// Manifests of a Service `name` (one port, named `http`, of number `port`) and its EndpointSlice
/// whose one ready endpoint is `up`: what `ferry run -k` reads instead of a cluster.
#[allow(dead_code)]
pub fn service_manifests(ns: &str, name: &str, port: u16, up: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: {ns} }}
spec:
  clusterIP: {ip}
  ports: [ {{ name: http, port: {port}, targetPort: {target} }} ]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: {ns}
  labels: {{ kubernetes.io/service-name: {name} }}
addressType: IPv4
ports: [ {{ name: http, port: {target} }} ]
endpoints:
  - addresses: [{ip}]
    conditions: {{ ready: true }}
---
",
        ip = up.ip(),
        target = up.port()
    )
}
