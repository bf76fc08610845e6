//! ferry's own HTTP/1.1 client (`upstream::h1`) against upstreams that frame their answers every
//! legal way (and some illegal ones), keep or drop pooled connections, close them while idle or
//! just as a request arrives, and answer before the request body is sent.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_backend(addr: SocketAddr, extra: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }}
backends:
  b: {{ addresses: [{addr}] {extra} }}
"
    )
}

/// The raw answer ferry gives to `head` (a complete request head asking for `Connection: close`).
async fn through(reply: &'static [u8], head: &str) -> String {
    let up = scripted(reply, false).await;
    let f = ferry(&one_backend(up, "")).await;
    raw(f.addr("web").unwrap(), head.as_bytes()).await
}

/// The body of a raw answer, de-chunked when it is chunked.
fn body_of(out: &str) -> String {
    let (head, mut rest) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {out}"));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return rest.to_string();
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap_or_else(|| panic!("bad chunking: {out}"));
        let n = usize::from_str_radix(size, 16).unwrap_or_else(|_| panic!("bad chunk size: {out}"));
        if n == 0 {
            return body;
        }
        body.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

const GET: &str = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn every_framing_reaches_the_client_intact() {
    // Chunked, with an extension and a trailer: the body, re-framed for the client.
    let out = through(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        GET,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(body_of(&out), "hello world", "{out}");
    // HTTP/1.0 without a length: the body runs to the upstream's close.
    let out = through(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the very end", GET).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(body_of(&out), "until the very end", "{out}");
    // Informational answers are skipped; the final one arrives.
    let out = through(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        GET,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 201 Created\r\n"), "{out}");
    assert_eq!(body_of(&out), "ok", "{out}");
    // A reason phrase of the upstream's own is passed on, as hyper's client did.
    let out = through(b"HTTP/1.1 299 Fine Thanks\r\nContent-Length: 0\r\n\r\n", GET).await;
    assert!(out.starts_with("HTTP/1.1 299 Fine Thanks\r\n"), "{out}");
    // Transfer-Encoding and Content-Length: chunked wins and the stale length does not reach the client.
    let out = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        GET,
    )
    .await;
    assert!(!out.to_ascii_lowercase().contains("content-length: 99"), "{out}");
    assert_eq!(body_of(&out), "abc", "{out}");
    // HEAD: the length of what GET would send, no body.
    let out = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        "HEAD /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.to_ascii_lowercase().contains("content-length: 100\r\n") && out.ends_with("\r\n\r\n"), "{out}");
    // 304 carries no body whatever its headers say.
    let out = through(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n", GET).await;
    assert!(out.starts_with("HTTP/1.1 304") && out.ends_with("\r\n\r\n"), "{out}");
    // Framing ferry cannot trust is a 502, never a guess.
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ] {
        let out = through(bad, GET).await;
        assert!(out.starts_with("HTTP/1.1 502"), "{:?} → {out}", String::from_utf8_lossy(bad));
    }
}

/// An upstream that answers every request on a connection with `answer` (keep-alive), counting
/// connections; after `per_conn` answers it closes (0: never), and with `ignore_last` it reads
/// the next request and closes without answering it (a keep-alive race lost).
async fn keepalive_upstream(per_conn: usize, ignore_last: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let addr = listen(move |mut s| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut answered = 0;
            while read_head(&mut s).await {
                if per_conn > 0 && answered == per_conn && ignore_last {
                    return;
                }
                let body = format!("answer {answered}");
                let out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                answered += 1;
                if per_conn > 0 && answered == per_conn && !ignore_last {
                    return;
                }
            }
        }
    })
    .await;
    (addr, conns)
}

#[tokio::test]
async fn pooled_connections_are_reused_and_dead_ones_are_not_used() {
    // A well-behaved upstream: one connection carries every request.
    let (up, conns) = keepalive_upstream(0, false).await;
    let f = ferry(&one_backend(up, "")).await;
    let web = f.addr("web").unwrap();
    for _ in 0..20 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "a pooled connection is reused");

    // An upstream that closes each connection after one answer, without saying so: the pooled
    // connection is dead by the next request, which must go on a fresh one, not fail.
    let (up, conns) = keepalive_upstream(1, false).await;
    let f = ferry(&one_backend(up, "")).await;
    let web = f.addr("web").unwrap();
    for i in 0..10 {
        let r = get(web, "/").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "answer 0".to_string()), "request {i}");
        // Give the FIN time to arrive, so the next checkout sees it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 10);

    // The race lost: the upstream takes the next request on the pooled connection and closes
    // without a byte of answer. A GET goes again on a fresh connection; a POST, even body-less,
    // may have been acted on (RFC 9112 §9.3.1): the client hears the failure, and the upstream
    // saw it once.
    let (up, conns) = keepalive_upstream(1, true).await;
    let f = ferry(&one_backend(up, "")).await;
    let web = f.addr("web").unwrap();
    let empty = || http_body_util::Empty::<Bytes>::new();
    for i in 0..4 {
        let r = send(web, req("GET", web, "/").body(empty()).unwrap()).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "answer 0".to_string()), "GET {i}");
    }
    let before = conns.load(Ordering::SeqCst);
    let r = send(web, req("POST", web, "/").body(empty()).unwrap()).await;
    assert_eq!(r.status, 502, "a POST on a connection that died under it is not sent again");
    assert_eq!(conns.load(Ordering::SeqCst), before, "no second connection for the POST");
    // Unless the backend says its POSTs are safe to repeat (nginx `proxy_next_upstream non_idempotent`).
    let (up, _) = keepalive_upstream(1, true).await;
    let f = ferry(&one_backend(up, ", retry_on: [connect, reset, non_idempotent]")).await;
    let web = f.addr("web").unwrap();
    for i in 0..4 {
        let r = send(web, req("POST", web, "/").body(empty()).unwrap()).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "answer 0".to_string()), "POST {i} with non_idempotent");
    }
    // With a body already sent, a POST is not repeated: the client hears the failure.
    let r = send(web, req("POST", web, "/").body(Full::new(Bytes::from_static(b"once only"))).unwrap()).await;
    let r2 = send(web, req("POST", web, "/").body(Full::new(Bytes::from_static(b"once only"))).unwrap()).await;
    assert!(r.status == 200 && r2.status == 502 || r.status == 502 && r2.status == 200, "{} {}", r.status, r2.status);
}

#[tokio::test]
async fn an_early_answer_stops_the_upload() {
    // The upstream refuses on seeing the head and never reads the 8 MiB body.
    let up =
        scripted(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much", true)
            .await;
    let f = ferry(&one_backend(up, "")).await;
    let web = f.addr("web").unwrap();
    let body = Bytes::from(vec![b'x'; 8 << 20]);
    let r = send(web, req("POST", web, "/upload").body(Full::new(body)).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.text()), (413, "too much".to_string()));
    // The listener is unaffected.
    let (ok, _) = keepalive_upstream(0, false).await;
    let g = ferry(&one_backend(ok, "")).await;
    assert_eq!(get(g.addr("web").unwrap(), "/").await.status, 200);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    // The upstream notes when ferry closes a connection it kept.
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    let up = listen(move |mut s: TcpStream| {
        let c = c.clone();
        async move {
            while read_head(&mut s).await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            }
            c.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let f = ferry(&one_backend(up, ", idle_timeout: 1s")).await;
    let web = f.addr("web").unwrap();
    assert_eq!(get(web, "/").await.status, 200);
    let waited = std::time::Instant::now();
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(waited.elapsed() < PATIENCE, "the idle connection was never closed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And the next request simply opens another.
    assert_eq!(get(web, "/").await.status, 200);
    let mut probe = TcpStream::connect(web).await.unwrap();
    probe.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    probe.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// A request body that ends in trailers (an HTTP/2 client's closing HEADERS frame) reaches the
/// upstream whole, chunked and terminated; the trailers themselves are dropped, as nginx does.
/// (The upload once counted a trailers frame as the end and never sent the last chunk.)
#[tokio::test]
async fn a_body_ending_in_trailers_is_sent_whole_to_an_http1_upstream() {
    let app = upstream("app").await;
    let f = ferry(&one_backend(app.addr, "")).await;
    let s = TcpStream::connect(f.addr("web").unwrap()).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"hello "))),
        Ok(http_body::Frame::data(Bytes::from_static(b"world"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = http::Request::post("http://web.test/upload").body(body).unwrap();
    let fut = async {
        let r = tx.send_request(req).await.unwrap();
        let status = r.status();
        let b = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        (status, serde_json::from_slice::<serde_json::Value>(&b).unwrap())
    };
    let (status, v) = tokio::time::timeout(PATIENCE, fut).await.expect("an answer, not a stalled upload");
    assert_eq!(status, 200);
    assert_eq!(v["body_len"], 11);
    assert_eq!(v["body_sum"], checksum(b"hello world", 0));
    assert!(v["headers"].get("x-checksum").is_none(), "trailers are not forwarded");
}
