//! ferry's own HTTP/1.1 server (`proxy::h1`), over raw client sockets: several requests on one
//! connection (pipelined, HTTP/1.0 keep-alive, unread bodies read past), the head ferry writes,
//! half-closed clients, the hand-over to hyper in the middle of a connection (an upgrade after a
//! plain request, `Expect: 100-continue`, h2c), request bodies of every framing, and idle
//! connections ended by `header_read_timeout` and by shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    {extra}
    routes:
      - {{ match: {{ path_prefix: /up }}, backend: b }}
backends:
  b: {{ addresses: [{up}] }}
"
    )
}

/// One response read off a connection.
#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads responses from one connection, keeping what arrives after each.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    async fn fill(&mut self) -> usize {
        let mut b = [0u8; 16384];
        let n = tokio::time::timeout(PATIENCE, self.s.read(&mut b)).await.expect("an answer in time").unwrap_or(0);
        self.buf.extend_from_slice(&b[..n]);
        n
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return l;
            }
            assert!(self.fill().await > 0, "connection closed mid-line: {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response (`head`: it answers a HEAD request).
    async fn answer(&mut self, head: bool) -> Answer {
        let status_line = self.line().await;
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("a header line");
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut a = Answer { status_line, headers, body: Vec::new() };
        let code = a.status();
        if head || code == 204 || code == 304 || code < 200 {
            return a;
        }
        if a.header("transfer-encoding").is_some() {
            loop {
                let size = usize::from_str_radix(self.line().await.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                let data = self.take(size).await;
                a.body.extend_from_slice(&data);
                assert_eq!(self.line().await, "");
            }
        } else if let Some(n) = a.header("content-length") {
            a.body = self.take(n.parse().unwrap()).await;
        } else {
            while self.fill().await > 0 {}
            a.body = std::mem::take(&mut self.buf);
        }
        a
    }

    /// The connection ends with nothing more.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill().await == 0
    }
}

async fn connect(f: &ferry::Running) -> Reader {
    Reader { s: TcpStream::connect(f.addr("web").unwrap()).await.unwrap(), buf: Vec::new() }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "")).await;
    let mut c = connect(&f).await;
    let mut wire = String::new();
    for i in 0..5 {
        wire.push_str(&format!("GET /up/{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    wire.push_str("POST /up/post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    wire.push_str("HEAD /up/head HTTP/1.1\r\nHost: t\r\n\r\n");
    wire.push_str("GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    c.s.write_all(wire.as_bytes()).await.unwrap();
    for i in 0..5 {
        let a = c.answer(false).await;
        assert_eq!(a.status(), 200);
        assert_eq!(a.json()["uri"], format!("/up/{i}"));
        // As hyper writes it: lower-case names, a date, the length of what follows.
        assert!(a.header("date").is_some() && a.header("content-length").is_some(), "{a:?}");
        assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    }
    let a = c.answer(false).await;
    assert_eq!((a.json()["method"].as_str(), a.json()["body_len"].as_u64()), (Some("POST"), Some(5)));
    let a = c.answer(true).await;
    assert_eq!(a.status(), 200);
    assert!(a.header("content-length").is_some_and(|l| l != "0"), "HEAD keeps the length: {a:?}");
    assert_eq!(c.answer(false).await.status(), 404);
    // Still open for more.
    c.s.write_all(b"GET /up/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!((a.status(), a.header("connection")), (200, Some("close")));
    assert!(c.closed().await);
}

#[tokio::test]
async fn http10_clients_keep_alive_only_when_they_ask() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "")).await;
    let mut c = connect(&f).await;
    for _ in 0..2 {
        c.s.write_all(b"GET /up/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let a = c.answer(false).await;
        assert_eq!(a.status_line, "HTTP/1.0 200 OK");
        assert_eq!(a.header("connection"), Some("keep-alive"));
    }
    c.s.write_all(b"GET /up/b HTTP/1.0\r\n\r\n").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!(a.status(), 200);
    assert!(c.closed().await, "an HTTP/1.0 request without keep-alive ends the connection");
}

#[tokio::test]
async fn request_bodies_of_every_framing_arrive_whole_and_unread_ones_are_read_past() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "")).await;
    let mut c = connect(&f).await;
    // A chunked body in pieces, with an extension and a trailer.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.s.write_all(b"POST /up/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    for piece in data.chunks(70_000) {
        c.s.write_all(format!("{:x};ext=1\r\n", piece.len()).as_bytes()).await.unwrap();
        c.s.write_all(piece).await.unwrap();
        c.s.write_all(b"\r\n").await.unwrap();
    }
    c.s.write_all(b"0\r\nX-Sum: 1\r\n\r\n").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!(a.json()["body_len"].as_u64(), Some(data.len() as u64));
    assert_eq!(a.json()["body_sum"].as_u64(), Some(checksum(&data, 0)));
    // A length-framed body the route never reads (no route: 404): read past, connection kept.
    c.s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!((a.status(), a.header("connection")), (404, None));
    c.s.write_all(b"GET /up/after HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(false).await.json()["uri"], "/up/after");
    // A malformed chunk: 400, the connection ends.
    c.s.write_all(b"POST /up/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!(a.status(), 400);
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_answer() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "")).await;
    let mut c = connect(&f).await;
    c.s.write_all(b"GET /up/slow/100 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    c.s.shutdown().await.unwrap();
    let a = c.answer(false).await;
    assert_eq!(a.status(), 200);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn hyper_takes_over_mid_connection_for_upgrades_expect_and_h2c() {
    let ws = ws_echo().await;
    let up = upstream("u").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /ws }}, backend: ws }}
      - {{ match: {{ path_prefix: /up }}, backend: b }}
backends:
  b: {{ addresses: [{}] }}
  ws: {{ addresses: [{ws}] }}
",
        up.addr
    ))
    .await;
    // A plain request, then an upgrade on the same connection.
    let mut c = connect(&f).await;
    c.s.write_all(b"GET /up/first HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(false).await.status(), 200);
    c.s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let a = c.answer(true).await;
    assert_eq!(a.status(), 101, "{a:?}");
    // One masked text frame "hi"; the echo server sends it back unmasked.
    c.s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]).await.unwrap();
    let back = c.take(4).await;
    assert_eq!(back, [0x81, 2, b'h', b'i']);

    // Expect: 100-continue after a plain request.
    let mut c = connect(&f).await;
    c.s.write_all(b"GET /up/first HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(false).await.status(), 200);
    c.s.write_all(b"POST /up/e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.answer(false).await.status(), 100);
    c.s.write_all(b"abc").await.unwrap();
    let a = c.answer(false).await;
    assert_eq!(a.json()["body_len"].as_u64(), Some(3));

    // h2c with prior knowledge.
    let s = TcpStream::connect(f.addr("web").unwrap()).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://t/up/h2").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(PATIENCE, h2.send_request(req)).await.unwrap().unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, http::Version::HTTP_2));
}

#[tokio::test]
async fn idle_connections_end_at_header_read_timeout_and_at_shutdown() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "header_read_timeout: 300ms")).await;
    let mut c = connect(&f).await;
    c.s.write_all(b"GET /up/a HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(false).await.status(), 200);
    // Idle: ferry ends it (no answer: nothing was asked).
    assert!(c.closed().await);

    let f = ferry(&config(up.addr, "")).await;
    let mut c = connect(&f).await;
    c.s.write_all(b"GET /up/a HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(false).await.status(), 200);
    let stopped = tokio::spawn(f.shutdown(Duration::ZERO, PATIENCE));
    assert!(c.closed().await, "an idle connection is closed when the listener drains");
    assert!(stopped.await.unwrap(), "every connection finished");
}

// Several worker threads, so the reactor runs beside the connection's task: readiness that
// arrives during a read must not be lost (an upload that filled its window would wait for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_arrive_whole_on_a_multi_threaded_runtime() {
    let up = upstream("u").await;
    let f = ferry(&config(up.addr, "")).await;
    let data: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i % 253) as u8).collect());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (data, addr) = (data.clone(), f.addr("web").unwrap());
        tasks.push(tokio::spawn(async move {
            let mut c = Reader { s: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() };
            for _ in 0..2 {
                let head = format!("POST /up/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", data.len());
                c.s.write_all(head.as_bytes()).await.unwrap();
                for piece in data.chunks(3_000) {
                    c.s.write_all(piece).await.unwrap();
                }
                let a = c.answer(false).await;
                assert_eq!(a.json()["body_len"].as_u64(), Some(data.len() as u64));
                assert_eq!(a.json()["body_sum"].as_u64(), Some(checksum(&data, 0)));
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(PATIENCE, t).await.expect("every upload answered in time").unwrap();
    }
}
