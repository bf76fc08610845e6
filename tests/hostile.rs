//! Hostile clients, failing upstreams and a terminating replica; each test prints what it tried.
//!
//! - Request-smuggling probes and limits, each sent raw to ferry on its own connection, with an
//!   upstream that records every byte it receives. Each probe must be refused (the status it
//!   names) or handled per RFC 9112, and the recording must show nothing ambiguous: no head
//!   carrying both Content-Length and Transfer-Encoding or two lengths, and no request the client
//!   tried to smuggle inside another.
//! - Slow and many clients: a slow head, a stalled or trickling body, max_connections.
//! - Upstream faults, each alongside a normal request.
//!
//! The heavy tests that run ferry as a process (10,000 idle connections, SIGTERM under load) are
//! in tests/load.rs.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A stream that copies everything read from it into `log`.
struct Recording {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.log.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl AsyncWrite for Recording {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/1.1 upstream (hyper) that answers 200 "ok" after reading each body, recording the raw
/// bytes of every connection into one log.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let shared = log.clone();
    let addr = listen(move |s| {
        let io = Recording { inner: s, log: shared.clone() };
        async move {
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc).await;
        }
    })
    .await;
    (addr, log)
}

/// Sends `bytes` and returns the status of the first response ("closed" if the connection ends
/// without one). Reads up to the end of that response's head; with `to_close`, on until ferry
/// closes the connection (a hang here fails the test at PATIENCE).
async fn probe(to: SocketAddr, bytes: &[u8], to_close: bool) -> String {
    let fut = async {
        let mut s = TcpStream::connect(to).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        if to_close {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        text.split_whitespace().nth(1).filter(|_| text.starts_with("HTTP/1.1 ")).unwrap_or("closed").to_string()
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("a reply or a close in time")
}

/// What the upstream received, split into request heads (lower-cased).
fn heads(log: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(log).to_ascii_lowercase();
    text.split("\r\n\r\n").filter(|p| p.contains(" http/1.1\r\n")).map(str::to_string).collect()
}

fn ambiguous(head: &str) -> Option<&'static str> {
    let count = |name: &str| head.lines().filter(|l| l.starts_with(name)).count();
    if count("content-length:") > 0 && count("transfer-encoding:") > 0 {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if count("content-length:") > 1 {
        return Some("two Content-Length headers");
    }
    if count("transfer-encoding:") > 1 {
        return Some("two Transfer-Encoding headers");
    }
    if head.contains("smuggled") {
        return Some("a smuggled request");
    }
    None
}

struct Probe {
    name: &'static str,
    bytes: Vec<u8>,
    /// Acceptable first answers ("closed": the connection ended without one).
    allowed: &'static [&'static str],
    /// ferry must close the connection after answering (what follows cannot be trusted).
    must_close: bool,
}

fn p(name: &'static str, bytes: impl Into<Vec<u8>>, allowed: &'static [&'static str]) -> Probe {
    Probe { name, bytes: bytes.into(), allowed, must_close: false }
}

/// A probe carrying a smuggling attempt: refused, or read by Transfer-Encoding alone with the
/// connection closed after the answer (RFC 9112 6.1); either way the tail is never forwarded.
fn closing(name: &'static str, bytes: impl Into<Vec<u8>>, allowed: &'static [&'static str]) -> Probe {
    Probe { name, bytes: bytes.into(), allowed, must_close: true }
}

#[tokio::test]
async fn smuggling_probes_are_refused_and_nothing_ambiguous_reaches_the_upstream() {
    let (up, log) = recording_upstream().await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    max_header_bytes: 8192
    max_headers: 20
    max_uri_bytes: 256
    routes:
      - {{ match: {{ path_prefix: /small }}, max_body_bytes: 16, backend: b }}
      - {{ backend: b }}
backends:
  b: {{ addresses: [{up}], retries: 0 }}
"
    ))
    .await;
    let web = f.addr("web").unwrap();
    let smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let big_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let many_headers =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..30).map(|i| format!("X-H{i}: v\r\n")).collect::<String>());
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(300));
    let probes = vec![
        closing(
            "CL + TE (TE.CL smuggling)",
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400", "200"],
        ),
        closing(
            "TE + CL, other order",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400", "200"],
        ),
        p(
            "conflicting Content-Length",
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd{smuggle}"),
            &["400"],
        ),
        p("Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde", &["400"]),
        p("negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", &["400"]),
        p(
            "TE obs-fold",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400"],
        ),
        p(
            "TE chunked, identity",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400"],
        ),
        p(
            "TE xchunked",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400", "501"],
        ),
        p(
            "space before colon",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggle}"),
            &["400"],
        ),
        // Case is not significant in transfer codings (RFC 9112 7): handled, one request.
        p("TE CHUNKED casing", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n", &["200"]),
        // The client's body is at fault, not the upstream: 400, never 502.
        p("malformed chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n", &["400"]),
        p(
            "chunk size overflow",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhi\r\n0\r\n\r\n",
            &["400"],
        ),
        p("NUL in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", &["400"]),
        p("bare CR in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", &["400"]),
        // A recipient MAY take a bare LF as a line end (RFC 9112 2.2); either way one request.
        p("bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n", &["200", "400"]),
        p("no colon in a header", "GET / HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n", &["400"]),
        p("invalid method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", &["400"]),
        p("space in the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", &["400"]),
        closing("asterisk target with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", &["400"]),
        p("absolute-form target", "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", &["200"]),
        closing("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", &["400"]),
        closing("two Host headers", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", &["400"]),
        p("HTTP/2 preface garbage", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nnot frames at all", &["closed"]),
        p("header block too large", big_header, &["431"]),
        p("too many headers", many_headers, &["431"]),
        p("target too long", long_uri, &["414"]),
        p("declared body too large", "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n01234567890123456", &["413"]),
        p(
            "chunked body too large",
            "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n01234567890123456\r\n0\r\n\r\n",
            &["413"],
        ),
    ];

    println!("{:<30} {:>8} {:>10}  verdict", "probe", "answer", "forwarded");
    let (mut rejected, mut forwarded, mut failures) = (0, 0, Vec::new());
    for pr in &probes {
        let before = log.lock().unwrap().len();
        let status = probe(web, &pr.bytes, pr.must_close).await;
        // The upstream side settles after ferry's answer; a bounded wait for a straggler.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let got = log.lock().unwrap()[before..].to_vec();
        let hs = heads(&got);
        let bad: Vec<&str> = hs.iter().filter_map(|h| ambiguous(h)).collect();
        let ok = pr.allowed.contains(&status.as_str()) && bad.is_empty();
        if !status.starts_with('2') {
            rejected += 1;
        }
        if !hs.is_empty() {
            forwarded += 1;
        }
        println!(
            "{:<30} {:>8} {:>10}  {}",
            pr.name,
            status,
            hs.len(),
            if ok { "ok".to_string() } else { format!("FAIL (allowed {:?}; {bad:?})", pr.allowed) }
        );
        if !ok {
            failures.push(pr.name);
        }
    }
    println!("probes tried {} / rejected {rejected} / forwarded {forwarded} / failed {}", probes.len(), failures.len());
    assert!(failures.is_empty(), "probes not handled as required: {failures:?}");

    // The listener still works for a normal client.
    assert_eq!(get(web, "/fine").await.status, 200);
}

#[tokio::test]
async fn max_connections_refuses_cleanly_and_recovers() {
    let up = upstream("u").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, max_connections: 2, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    ))
    .await;
    let web = f.addr("web").unwrap();
    // Two keep-alive clients, each proven accepted by a served request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = TcpStream::connect(web).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        let r = http::Request::builder().uri("/").header("host", "x").body(http_body_util::Empty::<Bytes>::new());
        assert_eq!(tx.send_request(r.unwrap()).await.unwrap().status(), 200);
        held.push(tx);
    }
    let out = raw(web, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 503") && out.contains("x-ferry-error: max_connections"), "{out}");
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(hits, 2, "the refused request must not reach the upstream");
    // One client leaves; a new one gets in once ferry has seen the close.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out = raw(web, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never admitted again: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_head_is_cut_off() {
    let up = upstream("u").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, header_read_timeout: 300ms, routes: [ {{ backend: b }} ] }}
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    ))
    .await;
    let web = f.addr("web").unwrap();
    // Slowloris: half a head, then nothing. ferry ends the connection (with or without a 408).
    let mut slow = TcpStream::connect(web).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest)).await.expect("ferry closes a slow head").unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Sends a head declaring `len` body bytes (asking for `Connection: close` only with `close`),
/// then the body one byte every `every` (stopping at `len`, or when ferry stops reading); returns
/// everything ferry answered, up to its close.
async fn trickle(to: SocketAddr, path: &str, len: usize, every: std::time::Duration, close: bool) -> String {
    let s = TcpStream::connect(to).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..len {
            tokio::time::sleep(every).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
        wr
    });
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, rd.read_to_end(&mut out)).await.expect("an answer and a close in time").ok();
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_trickling_body_is_cut_off_with_408_and_a_steady_one_is_not() {
    let up = upstream("u").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  # body_timeout alone: no single wait over 300 ms.
  - {{ name: gap, bind: 127.0.0.1:0, body_timeout: 300ms, min_body_rate: 0, routes: [ {{ backend: b }} ] }}
  # 1 s of grace, then 1,000 bytes a second (counting only time spent waiting on the client).
  - {{ name: rate, bind: 127.0.0.1:0, body_timeout: 1s, min_body_rate: 1000, routes: [ {{ backend: b }} ] }}
  # The same trickle with no rate and a wide gap: it must go through.
  - {{ name: lenient, bind: 127.0.0.1:0, body_timeout: 10s, min_body_rate: 0, routes: [ {{ backend: b }} ] }}
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    ))
    .await;
    let ms = std::time::Duration::from_millis;

    // A body that stops: cut at body_timeout, 408, and ferry closes the connection.
    let (gap, rate, lenient) = (f.addr("gap").unwrap(), f.addr("rate").unwrap(), f.addr("lenient").unwrap());
    let out = trickle(gap, "/upload", 100, std::time::Duration::from_secs(3600), false).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-ferry-error: body_timeout"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");

    // A byte every 50 ms: every gap is well inside body_timeout, but 20 bytes/s is far below the
    // rate, so the allowance (1 s + 1 ms per byte) runs out after about a second of trickling.
    let out = trickle(rate, "/upload", 200, ms(50), false).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // The same trickle without a rate is served in full.
    let out = trickle(lenient, "/upload", 40, ms(50), true).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body_len\":40"), "{out}");

    // A steady 4 MiB upload on the rate listener is not disturbed.
    let body = vec![7u8; 4 << 20];
    let sum = checksum(&body, 0);
    let r = send(rate, req("POST", rate, "/upload").body(Full::new(Bytes::from(body))).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], 4 << 20);
    assert_eq!(r.json()["body_sum"], sum);
    // And the listener still serves after cutting clients off.
    assert_eq!(get(gap, "/after").await.status, 200);
}

/// The status and whether the body arrived whole, over a fresh connection.
async fn fetch(to: SocketAddr, path: &str) -> (u16, bool) {
    let fut = async {
        let s = TcpStream::connect(to).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        let r = http::Request::builder().uri(path).header("host", "x").body(http_body_util::Empty::<Bytes>::new());
        let resp = tx.send_request(r.unwrap()).await.expect("a response head");
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.is_ok())
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("an answer in time")
}

#[tokio::test]
async fn each_fault_loses_only_the_request_it_hits() {
    let healthy = upstream("ok").await;
    let midway = scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly the first bytes", false).await;
    let garbage = scripted(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false).await;
    let hang = scripted(b"", true).await;
    let (down1, down2) = (dead_addr().await, dead_addr().await);
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /midway }}, backend: midway }}
      - {{ match: {{ path_prefix: /garbage }}, backend: garbage }}
      - {{ match: {{ path_prefix: /hang }}, backend: hang }}
      - {{ match: {{ path_prefix: /down }}, backend: down }}
      - {{ backend: ok }}
backends:
  ok: {{ addresses: [{}] }}
  midway: {{ addresses: [{midway}] }}
  garbage: {{ addresses: [{garbage}] }}
  hang: {{ addresses: [{hang}], request_timeout: 300ms }}
  down: {{ addresses: [{down1}, {down2}] }}
",
        healthy.addr
    ))
    .await;
    let web = f.addr("web").unwrap();
    const ROUNDS: usize = 5;
    // (fault, path, the answer the client must see)
    let faults: [(&str, &str, (u16, bool)); 4] = [
        ("upstream dies mid-response", "/midway", (200, false)),
        ("upstream answers garbage", "/garbage", (502, true)),
        ("upstream hangs", "/hang", (504, true)),
        ("every endpoint down", "/down", (502, true)),
    ];
    println!("{:<28} {:>8} {:>18} {:>14} {:>12}", "fault", "injected", "client saw", "others served", "others lost");
    let mut failures = Vec::new();
    let (mut injected, mut lost) = (0, 0);
    for (name, path, want) in faults {
        let (mut seen, mut served, mut others_lost) = (Vec::new(), 0, 0);
        for _ in 0..ROUNDS {
            let (fault, normal) = tokio::join!(fetch(web, path), fetch(web, "/fine"));
            seen.push(fault);
            if normal == (200, true) {
                served += 1;
            } else {
                others_lost += 1;
            }
        }
        injected += ROUNDS;
        lost += others_lost;
        let all_as_wanted = seen.iter().all(|s| *s == want);
        let shown = |(st, whole): (u16, bool)| format!("{st}{}", if whole { "" } else { " cut off" });
        println!(
            "{name:<28} {ROUNDS:>8} {:>18} {served:>14} {others_lost:>12}",
            if all_as_wanted { shown(want) } else { format!("{seen:?}") }
        );
        if !all_as_wanted || others_lost > 0 {
            failures.push(name);
        }
    }
    println!("faults injected {injected} / other requests lost {lost}");
    assert!(failures.is_empty(), "faults not contained: {failures:?}");
}
