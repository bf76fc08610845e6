//! TCP listeners over real loopback sockets: half-close, a large transfer by hash, balancing,
//! connect failover and the idle timeout.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP upstream: says its name, then echoes everything; after the client's EOF it writes
/// "|bye", a checksum line of what it received, and closes.
async fn tcp_upstream(name: &'static str) -> SocketAddr {
    listen(move |mut s| async move {
        if s.write_all(format!("{name}|").as_bytes()).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let (mut len, mut sum) = (0u64, 0u64);
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    len += n as u64;
                    sum = checksum(&buf[..n], sum);
                    // Echo only small messages; big transfers are just counted.
                    if len <= 1024 && s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.write_all(format!("|bye {len} {sum}").as_bytes()).await;
    })
    .await
}

fn tcp_config(backend: &str, extra: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: db, bind: 127.0.0.1:0, protocol: tcp, backend: b{extra} }}
backends:
  b: {{ addresses: {backend} }}
"
    )
}

async fn talk(to: SocketAddr, send: &[u8]) -> String {
    let fut = async {
        let mut s = TcpStream::connect(to).await.unwrap();
        s.write_all(send).await.unwrap();
        // Half-close: we are done sending, but still read the whole answer.
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("tcp exchange did not finish")
}

#[tokio::test]
async fn echo_with_half_close_both_ways() {
    let up = tcp_upstream("mysql-0").await;
    let f = ferry(&tcp_config(&format!("[{up}]"), "")).await;
    let db = f.addr("db").unwrap();
    let reply = talk(db, b"SELECT 1").await;
    // The upstream saw our EOF (so it wrote its farewell) and its close reached us (read_to_end ended).
    assert_eq!(reply, format!("mysql-0|SELECT 1|bye 8 {}", checksum(b"SELECT 1", 0)));
    let m = get(f.admin, "/metrics").await.text();
    let bytes = [("direction", "client_to_upstream"), ("listener", "db")];
    assert_eq!(metric(&m, "ferry_tcp_bytes_total", &bytes), Some(8.0), "{m}");
    assert_eq!(metric(&m, "ferry_connections_total", &[("listener", "db")]), Some(1.0), "{m}");
}

#[tokio::test]
async fn a_100_mb_transfer_arrives_intact() {
    let up = tcp_upstream("sink").await;
    let f = ferry(&tcp_config(&format!("[{up}]"), "")).await;
    let db = f.addr("db").unwrap();
    let fut = async {
        let mut s = TcpStream::connect(db).await.unwrap();
        let (mut r, mut w) = s.split();
        let send = async {
            let mut sum = 0u64;
            let mut chunk = vec![0u8; 1 << 20];
            for i in 0..100u32 {
                // Deterministic, varying content.
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = (j as u32).wrapping_mul(2_654_435_761).wrapping_add(i).to_le_bytes()[1];
                }
                sum = checksum(&chunk, sum);
                w.write_all(&chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
            sum
        };
        let recv = async {
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::join!(send, recv)
    };
    let (sum, reply) = tokio::time::timeout(PATIENCE * 3, fut).await.expect("100 MB did not get through");
    assert!(reply.ends_with(&format!("|bye {} {sum}", 100u64 << 20)), "{reply}");
}

#[tokio::test]
async fn connections_are_balanced_and_a_refused_endpoint_is_skipped() {
    let ups = [tcp_upstream("a").await, tcp_upstream("b").await, tcp_upstream("c").await];
    let list = format!("[{}, {}, {}]", ups[0], ups[1], ups[2]);
    let f = ferry(&tcp_config(&list, "")).await;
    let db = f.addr("db").unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let reply = talk(db, b"x").await;
        *counts.entry(reply.split('|').next().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "round robin over three: {counts:?}");

    let dead = dead_addr().await;
    let good = tcp_upstream("good").await;
    let f = ferry(&tcp_config(&format!("[{dead}, {good}]"), "").replace("addresses:", "eject_after: 1000, addresses:"))
        .await;
    let db = f.addr("db").unwrap();
    for _ in 0..6 {
        assert!(talk(db, b"q").await.starts_with("good|q|bye"));
    }
    // Every connection succeeded although the refused endpoint was tried (how often depends on
    // where round robin starts: a failed pick advances it too).
    let m = get(f.admin, "/metrics").await.text();
    let refused = metric(&m, "ferry_upstream_connect_errors_total", &[("backend", "b")]).unwrap_or(0.0);
    assert!((1.0..=6.0).contains(&refused), "{m}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_no_endpoint_refuses() {
    let up = tcp_upstream("idle").await;
    let f = ferry(&tcp_config(&format!("[{up}]"), ", idle_timeout: 200ms")).await;
    let db = f.addr("db").unwrap();
    let mut s = TcpStream::connect(db).await.unwrap();
    let mut out = Vec::new();
    // Nothing is sent; ferry closes the connection once it has been idle (we read the upstream's
    // greeting, then EOF).
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.expect("idle connection left open").unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "idle|");

    let f = ferry(&tcp_config("[]", "")).await;
    let mut s = TcpStream::connect(f.addr("db").unwrap()).await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.expect("not closed");
    assert!(r.is_err() || out.is_empty(), "a backend with no endpoints closes the connection");
    let m = get(f.admin, "/metrics").await.text();
    let errors = [("kind", "no_endpoints"), ("listener", "db")];
    assert_eq!(metric(&m, "ferry_proxy_errors_total", &errors), Some(1.0), "{m}");
}
