//! Access logs, request IDs and trace context, over real sockets.
//!
//! - `combined` is compared byte for byte with real nginx's `combined` (the same raw requests sent
//!   to both, proxied to the same fixed-answer upstream; only the time differs) and parsed back by
//!   a strict parser that must recover what the client sent and got.
//! - `json` lines parse as JSON with typed fields; ferry's own variables name the route, backend
//!   and every upstream tried.
//! - A sink that stops reading: requests still all succeed, the queue stays within its bound and
//!   the lines it could not hold are counted.
//! - The ferry binary reopens its file on SIGUSR1 and when the file is renamed (logrotate).
//! - TCP listeners log a line per connection.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// An upstream whose answers depend only on the path: `/status/CODE` answers CODE, `/big` 10,000
/// bytes, anything else `hello\n` (so nginx and ferry relay identical bodies).
async fn fixed_upstream() -> SocketAddr {
    listen(|s| async move {
        let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
            let path = req.uri().path().to_string();
            let (status, body) = match path.strip_prefix("/status/") {
                Some(code) => (StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap(), Bytes::from("status\n")),
                None if path == "/big" => (StatusCode::OK, Bytes::from(vec![b'x'; 10_000])),
                None => (StatusCode::OK, Bytes::from("hello\n")),
            };
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            Ok::<_, Infallible>(r)
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
    })
    .await
}

/// ferry with one listener, `web`, sending everything to `up`, with this `access_log` setting.
async fn logging_ferry(up: SocketAddr, access_log: &str) -> ferry::Running {
    ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, access_log: {access_log}, routes: [ {{ backend: app }} ] }}
backends:
  app: {{ addresses: [ '{up}' ] }}
"
    ))
    .await
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Waits (bounded) until `path` holds at least `n` lines.
async fn lines_at_least(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let lines = read_lines(path);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never reached {n} lines: {:?}", path.display(), read_lines(path));
}

/// One line of nginx's combined format, strictly: every field where it must be, quoted fields
/// free of raw quotes (nginx escapes them), values unescaped.
#[derive(Debug, PartialEq)]
struct Combined {
    remote_addr: String,
    remote_user: String,
    time: String,
    request: Vec<u8>,
    status: u16,
    body_bytes_sent: u64,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).expect("\\xHH"));
            i += 4;
        } else {
            assert!(b[i] != b'\\' && b[i] != b'"' && b[i] >= 0x20 && b[i] < 0x7f, "unescaped byte in {s:?}");
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn parse_combined(line: &str) -> Combined {
    let re = regex::Regex::new(
        r#"^(\S+) - (\S+) \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    let c = re.captures(line).unwrap_or_else(|| panic!("not a combined line: {line:?}"));
    Combined {
        remote_addr: c[1].to_string(),
        remote_user: c[2].to_string(),
        time: c[3].to_string(),
        request: unescape(&c[4]),
        status: c[5].parse().unwrap(),
        body_bytes_sent: c[6].parse().unwrap(),
        referer: unescape(&c[7]),
        user_agent: unescape(&c[8]),
    }
}

/// Raw requests (each closes its connection) and what the client must see logged.
fn battery() -> Vec<(&'static [u8], &'static [u8], u16)> {
    vec![
        (b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.1", 200),
        (
            b"GET /search?q=%22x%22&a=1 HTTP/1.1\r\nHost: a.example\r\nReferer: https://ref.example/p?x=\"y\"\r\n\
              User-Agent: Mozilla/5.0 \"quoted\" \\back \xc3\xa9\r\nConnection: close\r\n\r\n",
            b"GET /search?q=%22x%22&a=1 HTTP/1.1",
            200,
        ),
        (
            b"POST /form HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            b"POST /form HTTP/1.1",
            200,
        ),
        (b"HEAD /big HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n", b"HEAD /big HTTP/1.1", 200),
        (b"GET /big HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n", b"GET /big HTTP/1.1", 200),
        (
            b"GET /status/404 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            b"GET /status/404 HTTP/1.1",
            404,
        ),
        (
            b"GET /private HTTP/1.1\r\nHost: a.example\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nConnection: close\r\n\r\n",
            b"GET /private HTTP/1.1",
            200,
        ),
        (b"GET /old HTTP/1.0\r\nHost: a.example\r\n\r\n", b"GET /old HTTP/1.0", 200),
        (
            b"GET /a%20b/c?x=%0A&y=\xe4\xb8\xad HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            b"GET /a%20b/c?x=%0A&y=\xe4\xb8\xad HTTP/1.1",
            200,
        ),
    ]
}

/// The body length of a raw HTTP/1.x answer (after the blank line), and its status.
fn answer(raw: &[u8]) -> (u16, u64) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    (status, (raw.len() - at) as u64)
}

async fn raw_bytes(to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.expect("answer in time").unwrap();
    out
}

#[tokio::test]
async fn combined_lines_are_nginx_s_byte_for_byte_and_parse_back() {
    let up = fixed_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ferry_log = dir.path().join("ferry.log");
    let nginx_log = dir.path().join("nginx.log");

    // nginx, proxying to the same upstream, logging `combined` (on another port if the one chosen
    // was taken before nginx could bind it).
    let conf = dir.path().join("nginx.conf");
    let mut started = Err(String::new());
    let mut port = 0;
    for _ in 0..5 {
        port = free_port();
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\nevents {{}}\nhttp {{\n  access_log {} combined;\n  server {{\n    listen 127.0.0.1:{port};\n    \
                 location / {{ proxy_pass http://{up}; }}\n  }}\n}}\n",
                nginx_log.display()
            ),
        )
        .unwrap();
        started = support::nginx::start(dir.path(), &conf).await;
        if !matches!(&started, Err(e) if support::nginx::port_taken(e)) {
            break;
        }
    }
    let mut nginx = started.unwrap();
    let nginx_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let f = logging_ferry(up, &format!("{{ to: {} }}", ferry_log.display())).await;
    let web = f.addr("web").unwrap();

    let cases = battery();
    let time = regex::Regex::new(r"\[[^\]]+\]").unwrap();
    for (i, (bytes, request, status)) in cases.iter().enumerate() {
        let a = raw_bytes(nginx_addr, bytes).await;
        let b = raw_bytes(web, bytes).await;
        assert_eq!(answer(&a).0, *status, "nginx, request {i}");
        assert_eq!(answer(&b).0, *status, "ferry, request {i}");
        f.flush_logs(PATIENCE);
        let ours = lines_at_least(&ferry_log, i + 1).await;
        let theirs = lines_at_least(&nginx_log, i + 1).await;
        let (ours, theirs) = (&ours[i], &theirs[i]);
        // Same line but for the time.
        assert_eq!(time.replace(ours, "[T]"), time.replace(theirs, "[T]"), "request {i}: ferry vs nginx");
        // And what it says is what happened.
        let c = parse_combined(ours);
        assert_eq!(c.remote_addr, "127.0.0.1");
        assert_eq!(c.request, request.to_vec(), "request {i}");
        assert_eq!(c.status, *status);
        assert_eq!(c.body_bytes_sent, answer(&b).1, "request {i}: body bytes the client got");
        assert!(!c.time.is_empty());
        let header = |name: &str| {
            let text = bytes.split(|&b| b == b'\n').find_map(|l| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let (n, v) = l.split_at(l.iter().position(|&b| b == b':')?);
                n.eq_ignore_ascii_case(name.as_bytes()).then(|| v[1..].trim_ascii().to_vec())
            });
            text.unwrap_or_else(|| b"-".to_vec())
        };
        assert_eq!(c.referer, header("referer"), "request {i}");
        assert_eq!(c.user_agent, header("user-agent"), "request {i}");
        let user = if bytes.windows(6).any(|w| w == b"Basic ") { "alice" } else { "-" };
        assert_eq!(c.remote_user, user);
    }
    let _ = nginx.kill().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn json_lines_are_typed_and_name_route_backend_and_every_upstream_tried() {
    let up = fixed_upstream().await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    access_log: {{ format: json, to: {} }}
    routes:
      - {{ name: api, match: {{ path_prefix: /api }}, backend: app }}
backends:
  app: {{ addresses: [ '{dead}', '{up}' ], balance: round_robin, retries: 1 }}
",
        log.display()
    ))
    .await;
    let web = f.addr("web").unwrap();
    // Round robin over a dead and a live endpoint: some requests try both.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = send(web, req("GET", web, "/api/x?y=1").header("user-agent", "t/1").body(String::new()).unwrap()).await;
        assert_eq!(r.status, 200);
        ids.push(r.headers["x-request-id"].to_str().unwrap().to_string());
    }
    let r = get(web, "/nowhere").await;
    assert_eq!(r.status, 404);
    f.flush_logs(PATIENCE);
    let lines = lines_at_least(&log, 5).await;
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let mut retried = 0;
    for (i, j) in v[..4].iter().enumerate() {
        assert_eq!(j["status"], 200, "{j}");
        assert!(j["request_time"].is_f64() || j["request_time"].is_u64(), "{j}");
        assert_eq!(j["body_bytes_sent"], 6, "{j}");
        assert_eq!(j["method"], "GET");
        assert_eq!(j["uri"], "/api/x?y=1");
        assert_eq!(j["protocol"], "HTTP/1.1");
        assert_eq!(j["route"], "api");
        assert_eq!(j["backend"], "app");
        assert_eq!(j["listener"], "web");
        assert_eq!(j["user_agent"], "t/1");
        assert_eq!(j["remote_user"], serde_json::Value::Null);
        assert_eq!(j["referer"], serde_json::Value::Null);
        assert_eq!(j["ferry_error"], serde_json::Value::Null);
        assert_eq!(j["request_id"], ids[i].as_str(), "the id the client got is the one logged");
        let addrs = j["upstream_addr"].as_str().unwrap();
        let statuses = j["upstream_status"].as_str().unwrap();
        assert!(addrs.ends_with(&up.to_string()), "{j}");
        assert!(statuses.ends_with("200"), "{j}");
        if addrs.contains(", ") {
            retried += 1;
            assert_eq!(addrs, format!("{dead}, {up}"));
            assert_eq!(statuses, "502, 200");
        }
        assert!(chrono_like(j["time"].as_str().unwrap()), "{j}");
    }
    assert!(retried >= 1, "round robin put some request on the dead endpoint first: {v:?}");
    let miss = &v[4];
    assert_eq!(miss["status"], 404);
    assert_eq!(miss["ferry_error"], "no_route");
    assert_eq!(miss["route"], serde_json::Value::Null);
    assert_eq!(miss["upstream_addr"], serde_json::Value::Null);
}

fn chrono_like(t: &str) -> bool {
    regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$").unwrap().is_match(t)
}

#[tokio::test]
async fn custom_formats_render_ferry_variables_and_escape_as_asked() {
    let up = fixed_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("custom.log");
    let f = ferry(&format!(
        r#"admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    access_log:
      to: {}
      escape: json
      format: '{{"rid":"$request_id","route":"$route","st":$status,"ct":"$upstream_connect_time","x":"$http_x_thing","ctype":"$sent_http_content_type","m":"$request_method $uri $args"}}'
    routes: [ {{ name: app-route, backend: app }} ]
backends:
  app: {{ addresses: [ '{up}' ] }}
"#,
        log.display()
    ))
    .await;
    let web = f.addr("web").unwrap();
    let first =
        send(web, req("GET", web, "/p?a=1").header("x-thing", "say \"hi\"\t\\").body(String::new()).unwrap()).await;
    let second = get(web, "/q").await;
    f.flush_logs(PATIENCE);
    let lines = lines_at_least(&log, 2).await;
    let a: serde_json::Value = serde_json::from_str(&lines[0]).expect("escape=json keeps it JSON");
    let b: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(a["rid"], first.headers["x-request-id"].to_str().unwrap());
    assert_eq!(b["rid"], second.headers["x-request-id"].to_str().unwrap());
    assert_eq!(a["route"], "app-route");
    assert_eq!(a["st"], 200);
    assert_eq!(a["x"], "say \"hi\"\t\\");
    assert_eq!(b["x"], "", "escape=json: a missing value is empty");
    assert_eq!(a["m"], "GET /p a=1");
    // The first request opened the connection; the second reused it (nginx logs 0.000 then).
    let ct: f64 = a["ct"].as_str().unwrap().parse().unwrap();
    assert!(ct >= 0.0);
    assert_eq!(b["ct"], "0.000");
    assert_eq!(a["ctype"], "");
}

#[tokio::test]
async fn request_ids_and_trace_context_reach_the_upstream_and_come_back() {
    let up = upstream("app").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, access_log: {{ to: off }}, trace_context: {{ sample: 1 }}, routes: [ {{ backend: app }} ] }}
  - {{ name: behind, bind: 127.0.0.1:0, trusted_proxies: [ 127.0.0.1 ], access_log: {{ to: off }}, routes: [ {{ backend: app }} ] }}
  - {{ name: plain, bind: 127.0.0.1:0, request_id: false, trace_context: {{ start: false }}, routes: [ {{ backend: app }} ] }}
backends:
  app: {{ addresses: [ '{}' ] }}
",
        up.addr
    ))
    .await;
    let (web, behind, plain) = (f.addr("web").unwrap(), f.addr("behind").unwrap(), f.addr("plain").unwrap());

    // Untrusted: a client's id is replaced; a new trace starts, sampled, with the id as trace ID.
    let r = send(web, req("GET", web, "/").header("x-request-id", "client-made").body(String::new()).unwrap()).await;
    let seen = r.json();
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "client-made");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(seen["headers"]["x-request-id"], id.as_str(), "the upstream got the id the client got");
    let tp = seen["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(tp, format!("00-{id}-{}-01", &tp[36..52]));
    // Ids differ per request.
    let again = get(web, "/").await;
    assert_ne!(again.headers["x-request-id"].to_str().unwrap(), id);

    // A valid traceparent and its tracestate are passed on untouched.
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let r = send(
        web,
        req("GET", web, "/").header("traceparent", given).header("tracestate", "v=1").body(String::new()).unwrap(),
    )
    .await;
    assert_eq!(r.json()["headers"]["traceparent"], given);
    assert_eq!(r.json()["headers"]["tracestate"], "v=1");
    // A malformed one is replaced, and its tracestate dropped.
    let r = send(
        web,
        req("GET", web, "/").header("traceparent", "00-zz").header("tracestate", "v=1").body(String::new()).unwrap(),
    )
    .await;
    let h = &r.json()["headers"];
    assert_ne!(h["traceparent"], "00-zz");
    assert_eq!(h["tracestate"], serde_json::Value::Null);

    // A trusted proxy's id is kept.
    let r = send(behind, req("GET", behind, "/").header("x-request-id", "edge-42").body(String::new()).unwrap()).await;
    assert_eq!(r.headers["x-request-id"], "edge-42");
    assert_eq!(r.json()["headers"]["x-request-id"], "edge-42");

    // Both off: the request goes up as it came.
    let r = send(plain, req("GET", plain, "/").header("x-request-id", "mine").body(String::new()).unwrap()).await;
    assert_eq!(r.json()["headers"]["x-request-id"], "mine");
    assert_eq!(r.json()["headers"]["traceparent"], serde_json::Value::Null);
    assert!(r.headers.get("x-request-id").is_none());
}

#[tokio::test]
async fn a_sink_that_stops_reading_costs_no_request_and_bounded_memory() {
    let up = fixed_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // A reader that opens the pipe and then reads nothing until told.
    // Told how many lines to expect, it reads until it has them.
    let (go, wait) = std::sync::mpsc::channel::<usize>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut f = std::fs::File::open(&fifo).unwrap();
            let want = wait.recv().unwrap();
            let (mut lines, mut buf) = (0, vec![0u8; 64 * 1024]);
            while lines < want {
                let n = f.read(&mut buf).unwrap();
                assert!(n > 0, "the pipe closed after {lines} of {want} lines");
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
            lines
        })
    };
    let f = logging_ferry(up, &format!("{{ to: {}, format: '$status $http_x_pad' }}", fifo.display())).await;
    let web = f.addr("web").unwrap();
    // 1,000 lines of 16 KiB: twice what the queue holds, far more than the pipe.
    let pad = "p".repeat(16 * 1024);
    let total = 1000;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _ in 0..total {
        let r = tokio::time::timeout(
            PATIENCE,
            client.request(
                Request::get(format!("http://{web}/")).header("x-pad", &pad).body(Full::new(Bytes::new())).unwrap(),
            ),
        )
        .await
        .expect("a request is never held by the log")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let metrics = http_text(f.admin, "/metrics").await;
    let name = fifo.display().to_string();
    let dropped = metric(&metrics, "ferry_access_log_dropped_total", &[("log", &name)]).unwrap();
    let queued = metric(&metrics, "ferry_access_log_queued_bytes", &[("log", &name)]).unwrap();
    assert!(dropped > 0.0, "lines beyond the bound are dropped and counted");
    assert!(queued <= ferry::access_log::MAX_QUEUED_BYTES as f64, "queue {queued} within its bound");
    assert!(queued > 1_000_000.0, "the queue did fill ({queued})");
    // Let the reader go: every line kept arrives (kept + dropped = every request).
    go.send(total - dropped as usize).unwrap();
    let written = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || reader.join().unwrap()))
        .await
        .expect("the kept lines arrive")
        .unwrap();
    assert_eq!(written, total - dropped as usize);
    f.flush_logs(PATIENCE);
    let metrics = http_text(f.admin, "/metrics").await;
    let lines = metric(&metrics, "ferry_access_log_lines_total", &[("log", &name)]).unwrap();
    assert_eq!(lines as usize, written, "every line written is counted");
}

async fn http_text(to: SocketAddr, path: &str) -> String {
    String::from_utf8_lossy(&get(to, path).await.body).into_owned()
}

#[tokio::test]
async fn tcp_listeners_log_a_line_per_connection() {
    // An upstream that echoes until the client's EOF.
    let echo = listen(|mut s| async move {
        let mut buf = vec![0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
    .await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tcp.log");
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: db, bind: 127.0.0.1:0, protocol: tcp, backend: db, access_log: {{ to: {log} }} }}
  - {{ name: gone, bind: 127.0.0.1:0, protocol: tcp, backend: gone, access_log: {{ to: {log}, format: json }} }}
backends:
  db: {{ addresses: [ '{echo}' ] }}
  gone: {{ addresses: [ '{dead}' ] }}
",
        log = log.display()
    ))
    .await;
    let mut s = TcpStream::connect(f.addr("db").unwrap()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello");
    drop(s);
    let mut s = TcpStream::connect(f.addr("gone").unwrap()).await.unwrap();
    let mut nothing = Vec::new();
    let _ = s.read_to_end(&mut nothing).await;
    // The line is written when ferry has closed both sides; wait for it.
    let lines = lines_at_least(&log, 2).await;
    let ok = lines.iter().find(|l| l.contains(" TCP ")).expect("the db connection's line");
    let re = regex::Regex::new(&format!(
        r#"^127\.0\.0\.1 \[[^\]]+\] TCP 200 5 5 \d+\.\d{{3}} "{}" "5" "5" "\d+\.\d{{3}}" -$"#,
        regex::escape(&echo.to_string())
    ))
    .unwrap();
    assert!(re.is_match(ok), "{ok}");
    let j: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.starts_with('{')).expect("the gone connection's line")).unwrap();
    assert_eq!(j["status"], 502);
    assert_eq!(j["ferry_error"], "connect");
    assert_eq!(j["bytes_sent"], 0);
    assert_eq!(j["listener"], "gone");
    assert_eq!(j["upstream_addr"], dead.to_string());
}

/// The binary, as deployed: logrotate renames the file, then SIGUSR1 (or nothing: the rename is
/// noticed within a second or so) makes ferry write a fresh file at the path.
#[tokio::test]
async fn the_binary_reopens_its_log_on_sigusr1_and_after_a_rename() {
    let up = fixed_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = dir.path().join("routes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, access_log: {{ to: access.log }}, routes: [ {{ backend: app }} ] }}
backends:
  app: {{ addresses: [ '{up}' ] }}
"
        ),
    )
    .unwrap();
    let p = spawn_ferry(&cfg).await;
    let web = p.listeners["web"];
    assert_eq!(get(web, "/one").await.status, 200);
    lines_at_least(&log, 1).await;

    // Rotated by rename, then SIGUSR1.
    let first: PathBuf = dir.path().join("access.log.1");
    std::fs::rename(&log, &first).unwrap();
    signal(&p.child, "USR1");
    wait_for_file(&log).await;
    assert_eq!(get(web, "/two").await.status, 200);
    let now = lines_at_least(&log, 1).await;
    assert!(now[0].contains("GET /two "), "{now:?}");
    let old = read_lines(&first);
    assert_eq!(old.len(), 1);
    assert!(old[0].contains("GET /one "), "{old:?}");

    // Rotated by rename, no signal: noticed on its own.
    let second = dir.path().join("access.log.2");
    std::fs::rename(&log, &second).unwrap();
    wait_for_file(&log).await;
    assert_eq!(get(web, "/three").await.status, 200);
    let now = lines_at_least(&log, 1).await;
    assert!(now[0].contains("GET /three "), "{now:?}");
    assert_eq!(read_lines(&second).len(), 1);
}

/// Waits (bounded) until `path` exists.
async fn wait_for_file(path: &Path) {
    for _ in 0..400 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never appeared", path.display());
}

/// The harness's nginx start notices a port taken before nginx could bind it (the access-log
/// comparison then moves to another port instead of talking to whoever holds it).
#[tokio::test]
async fn nginx_on_a_taken_port_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, format!("events {{}}\nhttp {{ server {{ listen 127.0.0.1:{port}; }} }}\n")).unwrap();
    let err = support::nginx::start(dir.path(), &conf).await.expect_err("the port is held");
    assert!(support::nginx::port_taken(&err), "{err}");
    drop(holder);
    let mut nginx = support::nginx::start(dir.path(), &conf).await.expect("the port is free now");
    let _ = nginx.kill().await;
}
