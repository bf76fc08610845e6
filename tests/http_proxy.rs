//! Black-box tests of the HTTP proxy: real ferry, real upstreams, real sockets on loopback.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use support::*;

fn list(addrs: &[SocketAddr]) -> String {
    let v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("[{}]", v.join(", "))
}

#[tokio::test]
async fn host_path_header_routing_in_first_match_order() {
    let (gw, nacos, alice, eureka, wild) = (
        upstream("gw").await,
        upstream("nacos").await,
        upstream("alice").await,
        upstream("eureka").await,
        upstream("wild").await,
    );
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - match: {{ host: www.test-gateway.net }}
        backend: gateway
      - match: {{ host: '*.apps.local' }}
        backend: wild
      - match: {{ path_prefix: /nacos, headers: {{ x-debug-user: alice }} }}
        backend: nacos-alice
      - match: {{ path_prefix: /nacos }}
        backend: nacos
      - match: {{ path_prefix: /eureka }}
        backend: eureka
      - match: {{ path_prefix: / }}
        backend: gateway
backends:
  gateway: {{ addresses: [{}] }}
  nacos: {{ addresses: [{}] }}
  nacos-alice: {{ addresses: [{}] }}
  eureka: {{ addresses: [{}] }}
  wild: {{ addresses: [{}] }}
",
        gw.addr, nacos.addr, alice.addr, eureka.addr, wild.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // Host wins over a later, more specific path: first match in order.
    assert_eq!(get_host(web, "www.test-gateway.net", "/nacos/x").await.upstream(), "gw");
    assert_eq!(get_host(web, "WWW.Test-Gateway.NET:8080", "/eureka").await.upstream(), "gw");
    assert_eq!(get_host(web, "a.b.apps.local", "/nacos").await.upstream(), "wild");
    assert_eq!(get_host(web, "apps.local", "/nacos").await.upstream(), "nacos");
    let with_header =
        |v: &str| req("GET", web, "/nacos/v1/console").header("x-debug-user", v).body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(send(web, with_header("alice")).await.upstream(), "alice");
    assert_eq!(send(web, with_header("bob")).await.upstream(), "nacos");
    assert_eq!(get(web, "/eureka").await.upstream(), "eureka");
    assert_eq!(get(web, "/eureka/apps").await.upstream(), "eureka");
    // Segment boundary: /eurekax is not under /eureka.
    assert_eq!(get(web, "/eurekax").await.upstream(), "gw");
    assert_eq!(get(web, "/").await.upstream(), "gw");
}

#[tokio::test]
async fn strip_prefix_keeps_the_query() {
    let up = upstream("eureka").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - match: {{ path_prefix: /eureka/ }}
        strip_prefix: true
        backend: e
      - match: {{ path_prefix: /keep }}
        backend: e
backends:
  e: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    assert_eq!(get(web, "/eureka/apps/ORDER?status=UP&x=%20y").await.json()["uri"], "/apps/ORDER?status=UP&x=%20y");
    assert_eq!(get(web, "/eureka").await.json()["uri"], "/");
    assert_eq!(get(web, "/eureka?a=1").await.json()["uri"], "/?a=1");
    assert_eq!(get(web, "/keep/this?q=1").await.json()["uri"], "/keep/this?q=1");
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_three() {
    let ups = [upstream("a").await, upstream("b").await, upstream("c").await];
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: {}, balance: round_robin }}
",
        list(&ups.iter().map(|u| u.addr).collect::<Vec<_>>())
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(get(web, "/").await.upstream()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "uneven: {counts:?}");
}

#[tokio::test]
async fn least_request_steers_away_from_a_slow_upstream() {
    let slow = upstream_with_delay("slow", std::time::Duration::from_millis(300)).await;
    let fast = upstream("fast").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [{}, {}], balance: least_request, retries: 0 }}
",
        slow.addr, fast.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // 4 concurrent workers, 15 sequential requests each. Round robin would give each upstream 30.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..15 {
                got.push(get(web, "/work").await.upstream());
            }
            got
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for u in t.await.unwrap() {
            *counts.entry(u).or_default() += 1;
        }
    }
    let (s, fa) = (counts.get("slow").copied().unwrap_or(0), counts.get("fast").copied().unwrap_or(0));
    assert_eq!(s + fa, 60, "{counts:?}");
    assert!(s < 15, "least_request sent {s} of 60 to the slow upstream: {counts:?}");
}

fn one_backend(addrs: &str, extra: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: {addrs}{extra} }}
"
    )
}

#[tokio::test]
async fn client_ip_is_sticky_and_a_removal_moves_only_its_clients() {
    let ups = [upstream("a").await, upstream("b").await, upstream("c").await];
    let all: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let f = ferry(&one_backend(&list(&all), ", balance: client_ip")).await;
    let web = f.addr("web").unwrap();
    // 40 clients, each from its own loopback address.
    let clients: Vec<IpAddr> = (2..42u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let mut first = HashMap::new();
    for &c in &clients {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(send_from(c, web, req("GET", web, "/").body(Empty::<Bytes>::new()).unwrap()).await.upstream());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "client {c} moved between {seen:?}");
        first.insert(c, seen[0].clone());
    }
    let used: std::collections::HashSet<&String> = first.values().collect();
    assert!(used.len() >= 2, "40 clients all hashed to one endpoint: {first:?}");
    // Hot swap: "c" leaves. Only the clients that were on c may move.
    let fewer = ferry::config::Config::parse("t", &one_backend(&list(&all[..2]), ", balance: client_ip")).unwrap();
    // Same listener (name and configured address): it keeps running; only the table changes.
    f.apply(fewer).await.unwrap();
    assert_eq!(f.addr("web"), Some(web));
    assert_eq!(get(f.admin, "/routes").await.json()["version"], 2);
    let mut moved = 0;
    for &c in &clients {
        let now = send_from(c, web, req("GET", web, "/").body(Empty::<Bytes>::new()).unwrap()).await.upstream();
        if now != first[&c] {
            assert_eq!(first[&c], "c", "client {c} moved from {} to {now} although {} stayed", first[&c], first[&c]);
            moved += 1;
        }
        assert_ne!(now, "c");
    }
    assert_eq!(moved, first.values().filter(|u| *u == "c").count());
}

#[tokio::test]
async fn retries_hide_a_dead_endpoint_for_any_method() {
    let (dead, good) = (dead_addr().await, upstream("good").await);
    let f = ferry(&one_backend(&list(&[dead, good.addr]), ", retries: 2, eject_after: 1000")).await;
    let web = f.addr("web").unwrap();
    for i in 0..8 {
        let r = get(web, "/").await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "good".to_string()), "GET {i}: {}", r.text());
        // Connection refused means nothing was sent, so even a POST with a body is retried.
        let body = format!("payload-{i}");
        let r = send(web, req("POST", web, "/orders").body(Full::new(Bytes::from(body.clone()))).unwrap()).await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        assert_eq!(r.json()["body_len"], body.len() as u64);
    }
    let metrics = get(f.admin, "/metrics").await.text();
    assert!(metric(&metrics, "ferry_upstream_retries_total", &[("backend", "b")]).is_some(), "{metrics}");
}

#[tokio::test]
async fn a_post_is_not_retried_once_its_connection_was_established() {
    let ((closer, closer_hits), good) = (closer().await, upstream("good").await);
    let f = ferry(&one_backend(&list(&[closer, good.addr]), ", retries: 2, eject_after: 1000")).await;
    let web = f.addr("web").unwrap();
    for i in 0..6 {
        let r = get(web, "/").await;
        assert_eq!(r.status, 200, "GET {i} should be retried past the closer: {}", r.text());
    }
    let before = closer_hits.load(std::sync::atomic::Ordering::SeqCst);
    let mut failed = 0;
    for _ in 0..6 {
        let r = send(web, req("POST", web, "/pay").body(Full::new(Bytes::from_static(b"x=1"))).unwrap()).await;
        match r.status.as_u16() {
            200 => assert_eq!(r.upstream(), "good"),
            502 => {
                assert!(r.text().contains("upstream") && r.text().contains("failed"), "{}", r.text());
                failed += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let hits = closer_hits.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(failed >= 1, "no POST reached the closing upstream");
    assert_eq!(failed, hits, "each POST that reached the closer must fail, not be replayed");
}

#[tokio::test]
async fn error_answers_name_the_route_and_nothing_internal() {
    let (dead, slow) = (dead_addr().await, upstream_with_delay("slow", Duration::from_secs(3)).await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ name: refused, match: {{ path_prefix: /refused }}, backend: dead }}
      - {{ name: empty, match: {{ path_prefix: /empty }}, backend: none }}
      - {{ name: slow, match: {{ path_prefix: /slow }}, backend: slow }}
      - {{ match: {{ host: only.example }}, backend: dead }}
backends:
  dead: {{ addresses: [{dead}] }}
  none: {{ addresses: [] }}
  slow: {{ addresses: [{}], request_timeout: 200ms }}
",
        slow.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let (dead_text, slow_text) = (dead.to_string(), slow.addr.to_string());
    let cases = [
        ("/nothing", 404, "no_route", vec!["no route"]),
        ("/refused", 502, "connect", vec!["route 'refused'", "cannot connect"]),
        ("/empty", 503, "no_endpoints", vec!["route 'empty'", "no endpoint"]),
        ("/slow", 504, "timeout", vec!["route 'slow'", "timed out after 200 ms"]),
    ];
    for (path, status, kind, words) in cases {
        let r = get(web, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.headers["x-ferry-error"], kind);
        assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = r.text();
        assert_eq!(text.lines().count(), 1, "one line: {text:?}");
        for w in words {
            assert!(text.contains(w), "{path}: {text:?} lacks {w:?}");
        }
        // Addresses, OS errors and backend names stay in ferry's log.
        for secret in [dead_text.as_str(), slow_text.as_str(), "127.0.0.1", "os error", "backend '"] {
            assert!(!text.contains(secret), "{path}: {text:?} tells the client {secret:?}");
        }
    }
    let m = get(f.admin, "/metrics").await.text();
    for kind in ["no_route", "connect", "no_endpoints", "timeout"] {
        let n = metric(&m, "ferry_proxy_errors_total", &[("kind", kind), ("listener", "web")]);
        assert_eq!(n, Some(1.0), "ferry_proxy_errors_total kind={kind}: {m}");
    }
}

#[tokio::test]
async fn a_chunked_upload_streams_through_without_buffering() {
    let up = upstream("sink").await;
    let f = ferry(&one_backend(&list(&[up.addr]), "")).await;
    let web = f.addr("web").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)), rx))
    });
    let body = StreamBody::new(stream);
    let request = req("POST", web, "/upload").body(body).unwrap();
    let reply = tokio::spawn(send(web, request));
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    tx.send(chunk.clone()).await.unwrap();
    // The upstream sees the first chunk while the client is still sending: nothing is buffered whole.
    tokio::time::timeout(PATIENCE, up.first_chunk.notified()).await.expect("first chunk never reached the upstream");
    let mut sum = checksum(&chunk, 0);
    let mut len = chunk.len() as u64;
    for i in 0..63u8 {
        let c = Bytes::from(vec![i; 32 * 1024 + i as usize]);
        sum = checksum(&c, sum);
        len += c.len() as u64;
        tx.send(c).await.unwrap();
    }
    drop(tx);
    let r = reply.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["body_len"], len);
    assert_eq!(j["body_sum"], sum);
    assert_eq!(j["headers"]["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = ws_echo().await;
    let f = ferry(&one_backend(&list(&[ws]), "")).await;
    let web = f.addr("web").unwrap();
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut sock, resp) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(format!("ws://{web}/ws"), stream))
            .await
            .unwrap()
            .expect("websocket handshake through ferry");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let msg = format!("hello {i}");
        sock.send(Message::text(msg.clone())).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, sock.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    sock.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    let back = tokio::time::timeout(PATIENCE, sock.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255]);
    sock.close(None).await.unwrap();
}

#[tokio::test]
async fn hop_by_hop_headers_stop_and_forwarded_headers_are_set() {
    let up = upstream("echo").await;
    let f = ferry(&one_backend(&list(&[up.addr]), "")).await;
    let web = f.addr("web").unwrap();
    let request = "GET /h?x=1 HTTP/1.1\r\nHost: shop.example:8080\r\nConnection: close, X-Secret\r\n\
                   X-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\
                   Proxy-Connection: keep-alive\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
                   X-Kept: yes\r\n\r\n";
    let out = raw(web, request.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &j["headers"];
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization", "proxy-connection", "upgrade"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["host"], "shop.example:8080", "Host is kept by default");
    // The client is not a trusted proxy: its X-Forwarded-For (a spoofed address) is replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8080");
    assert_eq!(j["uri"], "/h?x=1");
    assert_eq!(j["version"], "HTTP/1.1");

    // From a trusted proxy (the front nginx, say) it is kept and the peer appended.
    let trusted = one_backend(&list(&[up.addr]), "")
        .replace("bind: 127.0.0.1:0, routes", "bind: 127.0.0.1:0, trusted_proxies: [127.0.0.0/8], routes");
    let f = ferry(&trusted).await;
    let out = raw(f.addr("web").unwrap(), request.as_bytes()).await;
    let j: serde_json::Value = serde_json::from_str(&out[out.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(j["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_reach_http1_upstreams() {
    let up = upstream("echo").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ match: {{ host: h2.example }}, backend: b }} ] }} ]
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let s = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..10 {
        let r = http::Request::get(format!("http://h2.example/eureka/{i}")).body(Empty::<Bytes>::new()).unwrap();
        streams.push(tx.send_request(r));
    }
    for (i, s) in streams.into_iter().enumerate() {
        let resp = tokio::time::timeout(PATIENCE, s).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["version"], "HTTP/1.1");
        assert_eq!(j["headers"]["host"], "h2.example");
        assert_eq!(j["uri"], format!("/eureka/{i}"));
    }
}

#[tokio::test]
async fn admin_reports_health_metrics_and_the_live_table() {
    let up = upstream("echo").await;
    let f = ferry(&one_backend(&list(&[up.addr]), "")).await;
    let web = f.addr("web").unwrap();
    assert_eq!(get(f.admin, "/healthz").await.status, 200);
    assert_eq!(get(f.admin, "/readyz").await.status, 200);
    // Admin paths on a data listener are routed like any path, never answered by the admin.
    let r = get(web, "/metrics").await;
    assert_eq!(r.upstream(), "echo");
    let m = get(f.admin, "/metrics").await.text();
    let requests = [("backend", "b"), ("class", "2xx"), ("listener", "web"), ("route", "web.0")];
    assert_eq!(metric(&m, "ferry_requests_total", &requests), Some(1.0), "{m}");
    let duration = [("listener", "web"), ("route", "web.0")];
    assert_eq!(metric(&m, "ferry_request_duration_seconds_count", &duration), Some(1.0), "{m}");
    assert!(m.contains("ferry_table_swaps_total 1"), "{m}");
    assert_eq!(metric(&m, "ferry_backend_endpoints", &[("backend", "b"), ("state", "healthy")]), Some(1.0), "{m}");
    let routes = get(f.admin, "/routes").await.json();
    assert_eq!(routes["version"], 1);
    assert_eq!(routes["listeners"][0]["routes"][0]["backend"], "b");
    let ep = &routes["backends"][0]["endpoints"][0];
    assert_eq!(ep["address"], up.addr.to_string());
    assert_eq!(ep["requests"], 1);
    assert_eq!(ep["state"], "healthy");
    assert_eq!(get(f.admin, "/nope").await.status, 404);
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_traffic_goes_elsewhere() {
    let (dead, good) = (dead_addr().await, upstream("good").await);
    let f = ferry(&one_backend(&list(&[dead, good.addr]), ", eject_after: 2, eject_for: 1h")).await;
    let web = f.addr("web").unwrap();
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    let routes = get(f.admin, "/routes").await.json();
    let eps = routes["backends"][0]["endpoints"].as_array().unwrap().clone();
    let dead_ep = eps.iter().find(|e| e["address"] == dead.to_string()).unwrap();
    assert_eq!(dead_ep["state"], "ejected", "{eps:?}");
    // Once ejected it is not tried any more: exactly eject_after failures were needed.
    assert_eq!(dead_ep["failures"], 2, "{eps:?}");
    let m = get(f.admin, "/metrics").await.text();
    assert_eq!(metric(&m, "ferry_endpoint_ejections_total", &[("backend", "b")]), Some(1.0), "{m}");
    assert_eq!(metric(&m, "ferry_backend_endpoints", &[("backend", "b"), ("state", "ejected")]), Some(1.0), "{m}");
}
