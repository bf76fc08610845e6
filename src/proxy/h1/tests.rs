//! The connection loop on real loopback sockets: every request of a pipelined write answered
//! in order (also after a half-close), bodies read whole, heads it does not take handed over
//! byte for byte, bytes that are not HTTP/1 closed unanswered, and the idle timeout and the
//! drain — the last two under paused time, so no test waits for a clock.
use super::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn settings() -> Settings {
    Settings { header_read_timeout: Duration::from_secs(10), max_header_bytes: 8192, max_headers: 64 }
}

/// A handler that answers each request with `METHOD TARGET body-length`.
fn echo(req: Request<Body>) -> Answer<Full<Bytes>> {
    Box::pin(async move {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let n = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(usize::MAX);
        Response::new(Full::new(Bytes::from(format!("{} {} {n}", parts.method, parts.uri))))
    })
}

/// A client socket and the server loop on its other end (running until it returns).
async fn pair(
    drain: watch::Receiver<bool>,
    s: Settings,
) -> (TcpStream, tokio::task::JoinHandle<(Outcome, Option<Bytes>)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    let task = tokio::spawn(async move {
        match serve(server, s, drain, echo).await {
            Outcome::HandOff(stream, read) => (Outcome::HandOff(stream, read.clone()), Some(read)),
            o => (o, None),
        }
    });
    (client, task)
}

/// Bodies of the responses in `raw`, in order.
fn bodies(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    text.split("HTTP/1.1 ").skip(1).filter_map(|r| r.split_once("\r\n\r\n").map(|(_, b)| b.to_string())).collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_even_after_a_half_close() {
    let (_tx, drain) = watch::channel(false);
    let (mut c, task) = pair(drain, settings()).await;
    let wire = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
                POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /4 HTTP/1.1\r\nHost: a\r\n\r\n";
    c.write_all(wire.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert_eq!(bodies(&out), ["GET /1 0", "POST /2 5", "POST /3 3", "GET /4 0"]);
    assert!(matches!(task.await.unwrap().0, Outcome::Closed));
}

#[tokio::test]
async fn heads_it_does_not_take_are_handed_over_byte_for_byte() {
    for wire in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ] {
        let (_tx, drain) = watch::channel(false);
        let (mut c, task) = pair(drain, settings()).await;
        c.write_all(wire).await.unwrap();
        let (outcome, read) = task.await.unwrap();
        assert!(matches!(outcome, Outcome::HandOff(..)), "{}", String::from_utf8_lossy(wire));
        assert_eq!(read.as_deref(), Some(wire), "the bytes read are handed over unchanged");
    }
}

#[tokio::test]
async fn bytes_that_are_not_http1_are_closed_unanswered() {
    for wire in [&b"INVALID CONNECTION PREFACE\r\n\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"SSH-2.0-x y\r\n"] {
        let (_tx, drain) = watch::channel(false);
        let (mut c, task) = pair(drain, settings()).await;
        c.write_all(wire).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty(), "answered {:?} to {:?}", String::from_utf8_lossy(&out), String::from_utf8_lossy(wire));
        drop(c);
        assert!(matches!(task.await.unwrap().0, Outcome::Closed));
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closes_at_the_header_read_timeout_and_on_drain() {
    // Idle past header_read_timeout (paused time runs ahead while everything waits).
    let (_tx, drain) = watch::channel(false);
    let (mut c, task) = pair(drain, settings()).await;
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut first = [0u8; 512];
    let n = c.read(&mut first).await.unwrap();
    assert_eq!(bodies(&first[..n]), ["GET /1 0"]);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty() && matches!(task.await.unwrap().0, Outcome::Closed));

    // A head that never completes is cut off the same way.
    let (_tx, drain) = watch::channel(false);
    let (mut c, task) = pair(drain, settings()).await;
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("200"), "{}", String::from_utf8_lossy(&out));
    assert!(matches!(task.await.unwrap().0, Outcome::Closed));

    // The drain closes an idle connection at once, long before the timeout.
    let (tx, drain) = watch::channel(false);
    let s = Settings { header_read_timeout: Duration::from_secs(3600), ..settings() };
    let (mut c, task) = pair(drain, s).await;
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let n = c.read(&mut first).await.unwrap();
    assert_eq!(bodies(&first[..n]), ["GET /1 0"]);
    let before = tokio::time::Instant::now();
    tx.send_replace(true);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(matches!(task.await.unwrap().0, Outcome::Closed));
    assert!(before.elapsed() < Duration::from_secs(3600), "closed by the drain, not the timeout");
}
