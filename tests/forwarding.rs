//! What the upstream is told about the request: the forwarding headers (who may set which), and
//! the path, which ferry routes on and forwards in one normal form so that no spelling reaches a
//! backend its route would not send it to. Also: every answered request is counted.

mod support;

use std::net::SocketAddr;

use support::*;

/// Sends a raw HTTP/1.1 request and returns (status line, the echo upstream's JSON if it answered).
async fn exchange(to: SocketAddr, head: &str) -> (String, Option<serde_json::Value>) {
    let out = raw(to, head.as_bytes()).await;
    let status = out.lines().next().unwrap_or_default().to_string();
    let body = out.find("\r\n\r\n").map(|i| &out[i + 4..]).unwrap_or_default();
    (status, serde_json::from_str(body).ok())
}

fn one_route(up: SocketAddr, listener_extra: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0{listener_extra}, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [{up}] }}
"
    )
}

const SPOOFED: &str = "X-Forwarded-Port: 6666\r\nX-Forwarded-Prefix: /evil\r\nX-Real-IP: 203.0.113.9\r\n\
                       Forwarded: for=203.0.113.9;host=evil.test;proto=https\r\nX-Forwarded-Proto: https\r\n\
                       X-Forwarded-Host: evil.test\r\nX-Forwarded-For: 203.0.113.9\r\n";

#[tokio::test]
async fn an_untrusted_client_cannot_steer_the_forwarding_headers() {
    let up = upstream("echo").await;
    let f = ferry(&one_route(up.addr, "")).await;
    let web = f.addr("web").unwrap();
    let head = format!("GET /login HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n{SPOOFED}\r\n");
    let (status, j) = exchange(web, &head).await;
    assert!(status.contains(" 200 "), "{status}");
    let h = &j.unwrap()["headers"];
    // ferry's own view of this hop, whatever the client claimed.
    assert_eq!(h["x-forwarded-port"], web.port().to_string(), "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "shop.example", "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    for gone in ["x-forwarded-prefix", "x-real-ip", "forwarded"] {
        assert!(h.get(gone).is_none(), "{gone} from an untrusted client reached the upstream: {h}");
    }

    // Without any forwarding headers, X-Forwarded-Port is still the listener's port.
    let (_, j) = exchange(web, "GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(j.unwrap()["headers"]["x-forwarded-port"], web.port().to_string());
}

#[tokio::test]
async fn a_trusted_proxy_keeps_what_it_says_about_the_original_request() {
    // The front nginx terminated TLS on 443 and says so.
    let up = upstream("echo").await;
    let f = ferry(&one_route(up.addr, ", trusted_proxies: [127.0.0.1]")).await;
    let web = f.addr("web").unwrap();
    let head = "GET /login HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\nX-Forwarded-Proto: https\r\n\
                X-Forwarded-Host: www.shop.example\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /shop\r\n\
                X-Real-IP: 198.51.100.4\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n";
    let (_, j) = exchange(web, head).await;
    let h = &j.unwrap()["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-forwarded-host"], "www.shop.example", "{h}");
    assert_eq!(h["x-forwarded-port"], "443", "{h}");
    assert_eq!(h["x-forwarded-prefix"], "/shop", "{h}");
    assert_eq!(h["x-real-ip"], "198.51.100.4", "{h}");
    assert_eq!(h["x-forwarded-for"], "198.51.100.4, 127.0.0.1", "{h}");

    // What the trusted peer leaves out, ferry fills in.
    let (_, j) = exchange(web, "GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n").await;
    let h = &j.unwrap()["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-port"], web.port().to_string(), "{h}");
    assert_eq!(h["x-forwarded-host"], "shop.example", "{h}");
}

#[tokio::test]
async fn every_spelling_of_a_path_routes_and_forwards_as_the_upstream_reads_it() {
    let (api, site) = (upstream("api").await, upstream("site").await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ name: api, match: {{ path_prefix: /prod-api }}, backend: api }}
      - {{ name: site, match: {{ path_prefix: / }}, backend: site }}
backends:
  api: {{ addresses: [{}] }}
  site: {{ addresses: [{}] }}
",
        api.addr, site.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // (as sent, backend, path the upstream gets)
    let cases = [
        ("/prod-api/x", "api", "/prod-api/x"),
        ("/%70rod-api/x", "api", "/prod-api/x"),
        ("/%70%72%6f%64%2D%61%70%69/x", "api", "/prod-api/x"),
        ("//prod-api//x", "api", "/prod-api/x"),
        ("/./prod-api/./x", "api", "/prod-api/x"),
        ("/static/../prod-api/x", "api", "/prod-api/x"),
        ("/static/%2e%2e/prod-api/x?q=%2e%2e", "api", "/prod-api/x?q=%2e%2e"),
        ("/prod-api/a/b/../../x", "api", "/prod-api/x"),
        ("/prod-api/../hello.txt", "site", "/hello.txt"),
        ("/prod-api/%2E%2E/hello.txt", "site", "/hello.txt"),
        ("/prod-api%2Fx", "site", "/prod-api%2Fx"),
        ("/prod-apix", "site", "/prod-apix"),
        ("/files/a%2fb", "site", "/files/a%2Fb"),
    ];
    for (sent, backend, want) in cases {
        let (status, j) = exchange(web, &get(sent)).await;
        assert!(status.contains(" 200 "), "{sent}: {status}");
        let j = j.unwrap();
        assert_eq!(j["upstream"], backend, "{sent} went to the wrong backend");
        assert_eq!(j["uri"], want, "{sent} was forwarded as something else");
    }
    // Spellings that would climb out of the root or hide a traversal are refused, not forwarded.
    let before =
        (api.hits.load(std::sync::atomic::Ordering::SeqCst), site.hits.load(std::sync::atomic::Ordering::SeqCst));
    for sent in ["/..", "/prod-api/../../etc/passwd", "/%2e%2e/x", "/public/..%2F..%2Fprod-api", "/a%00b", "/a%zz"] {
        let (status, _) = exchange(web, &get(sent)).await;
        assert!(status.contains(" 400 "), "{sent}: {status}");
    }
    let after =
        (api.hits.load(std::sync::atomic::Ordering::SeqCst), site.hits.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(before, after, "a refused path reached an upstream");
}

#[tokio::test]
async fn requests_without_a_route_are_counted_as_requests() {
    let up = upstream("u").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ match: {{ host: only.example }}, backend: b }} ] }} ]
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    assert_eq!(get_host(web, "only.example", "/").await.status, 200);
    assert_eq!(get_host(web, "other.example", "/").await.status, 404);
    assert_eq!(get_host(web, "other.example", "/").await.status, 404);
    let (status, _) = exchange(web, "GET /../x HTTP/1.1\r\nHost: only.example\r\nConnection: close\r\n\r\n").await;
    assert!(status.contains(" 400 "), "{status}");
    let m = get(f.admin, "/metrics").await.text();
    let requests = |route: &str, backend: &str, class: &str| {
        let labels = [("listener", "web"), ("route", route), ("backend", backend), ("class", class)];
        metric(&m, "ferry_requests_total", &labels)
    };
    assert_eq!(requests("web.0", "b", "2xx"), Some(1.0), "{m}");
    assert_eq!(requests("none", "none", "4xx"), Some(3.0), "{m}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_one_it_names() {
    let up = upstream("echo").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]
    routes:
      - match: {{ path_prefix: /admin }}
        access: [ {{ deny: 198.51.100.0/24 }}, {{ allow: all }} ]
        backend: b
      - request_headers: {{ set: {{ X-Real-IP: $remote_addr }} }}
        backend: b
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // The front proxy (127.0.0.1) passes on a client that itself came through 10.0.0.5.
    let xff = "X-Forwarded-For: 203.0.113.1, 198.51.100.7, 10.0.0.5\r\n";
    let (_, j) = exchange(web, &format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{xff}\r\n")).await;
    let h = &j.unwrap()["headers"];
    assert_eq!(h["x-real-ip"], "198.51.100.7", "{h}");
    assert_eq!(h["x-forwarded-for"], "203.0.113.1, 198.51.100.7, 10.0.0.5, 127.0.0.1", "the hop record is kept whole");
    let (status, _) = exchange(web, &format!("GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{xff}\r\n")).await;
    assert!(status.contains(" 403 "), "access sees the real client: {status}");
    let (status, _) = exchange(web, "GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(status.contains(" 200 "), "without the header the client is the peer: {status}");
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream_with_delay("slow", std::time::Duration::from_millis(100)).await;
    let f = ferry(&one_route(up.addr, "")).await;
    let web = f.addr("web").unwrap();
    let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    s.shutdown().await.unwrap(); // FIN: nothing more from the client, as `nc -N` does
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut out)).await.expect("an answer in time").unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.contains("\"body_len\":5"), "{out}");
}
