//! TLS termination (SNI, wildcard, ALPN h2, live certificate swap, a broken pair refused), TLS
//! passthrough by SNI, upstream TLS, and the PROXY protocol in both directions. Certificates come
//! from a throwaway CA made per test; every socket is on loopback.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::pki::Pki;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Writes a certificate pair as a mounted Secret looks: `dir/tls.crt -> ..data/tls.crt`,
/// `..data -> ..VERSION`; a later call with another version swaps `..data` atomically.
fn mount_secret(dir: &Path, version: &str, (cert, key): &(String, String)) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("tls.crt"), cert).unwrap();
    std::fs::write(v.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

async fn handshake(connector: &tokio_rustls::TlsConnector, to: SocketAddr, sni: &str) -> TlsStream<TcpStream> {
    let fut = async {
        let tcp = TcpStream::connect(to).await.unwrap();
        connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await
    };
    tokio::time::timeout(PATIENCE, fut).await.expect("handshake in time").expect("handshake")
}

/// The DNS names of the certificate the server presented.
fn served_names(s: &TlsStream<TcpStream>) -> Vec<String> {
    let der = &s.get_ref().1.peer_certificates().expect("a certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

fn served_der(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A keep-alive HTTP/1.1 client over an established TLS stream.
async fn h1(s: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    tx
}

async fn get_on(tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, host: &str) -> serde_json::Value {
    let req = Request::builder().uri("/tls").header("host", host).body(Empty::new()).unwrap();
    let fut = async {
        let resp = tx.send_request(req).await.expect("request");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let body = tokio::time::timeout(PATIENCE, fut).await.expect("reply in time");
    serde_json::from_slice(&body).unwrap()
}

fn https_config(dir: &Path, certs: &[(&str, &str)], backend: SocketAddr) -> String {
    let list: Vec<String> = certs.iter().map(|(c, k)| format!("{{ cert: {c}, key: {k} }}")).collect();
    let cfg = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    tls: {{ certificates: [{}] }}
    routes: [ {{ backend: b }} ]
backends:
  b: {{ addresses: [{backend}] }}
",
        list.join(", ")
    );
    let path = dir.join("routes.yaml");
    std::fs::write(&path, &cfg).unwrap();
    cfg
}

async fn start_file(dir: &Path) -> ferry::Running {
    let path = dir.join("routes.yaml");
    let cfg = ferry::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    ferry::start_with(cfg, quiet()).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn sni_chooses_the_certificate_including_a_wildcard_and_requests_flow() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |tag: &str, names: &[&str]| {
        let (c, k) = pki.leaf(names);
        std::fs::write(dir.path().join(format!("{tag}.crt")), c).unwrap();
        std::fs::write(dir.path().join(format!("{tag}.key")), k).unwrap();
    };
    write("eureka", &["eureka.example.com"]);
    write("apps", &["*.apps.example.com"]);
    let up = upstream("u").await;
    // Relative paths: taken from the config file's directory.
    https_config(dir.path(), &[("eureka.crt", "eureka.key"), ("apps.crt", "apps.key")], up.addr);
    let f = start_file(dir.path()).await;
    let addr = f.addr("web").unwrap();
    let tls = pki.connector(&[b"http/1.1"]);

    let s = handshake(&tls, addr, "eureka.example.com").await;
    assert_eq!(served_names(&s), ["eureka.example.com"]);
    let mut tx = h1(s).await;
    let v = get_on(&mut tx, "eureka.example.com").await;
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["host"], "eureka.example.com");

    let s = handshake(&tls, addr, "nacos.apps.example.com").await;
    assert_eq!(served_names(&s), ["*.apps.example.com"]);
    // A name no certificate has gets the first (default) one; the client then refuses it.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = tls.connect(ServerName::try_from("other.test").unwrap(), tcp).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name") && err.to_string().contains("eureka.example.com"), "{err}");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn alpn_h2_over_tls_reaches_the_upstream() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = pki.leaf(&["ui.example.com"]);
    std::fs::write(dir.path().join("ui.crt"), c).unwrap();
    std::fs::write(dir.path().join("ui.key"), k).unwrap();
    let up = upstream("u").await;
    https_config(dir.path(), &[("ui.crt", "ui.key")], up.addr);
    let f = start_file(dir.path()).await;

    let s = handshake(&pki.connector(&[b"h2", b"http/1.1"]), f.addr("web").unwrap(), "ui.example.com").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().uri("https://ui.example.com/h2").body(Empty::<Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(PATIENCE, tx.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["uri"], "/h2");
    assert_eq!(v["version"], "HTTP/1.1", "upstreams get HTTP/1.1");
}

/// Reads /metrics until `pred` holds for the text.
async fn wait_metrics(admin: SocketAddr, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = get(admin, "/metrics").await.text();
        if pred(&m) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}:\n{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_swapped_secret_serves_new_handshakes_old_connections_live_and_a_broken_pair_is_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    mount_secret(&secret, "v1", &pki.leaf(&["gw.example.com", "v1.example.com"]));
    let up = upstream("u").await;
    https_config(dir.path(), &[("secret/tls.crt", "secret/tls.key")], up.addr);
    let f = start_file(dir.path()).await;
    let addr = f.addr("web").unwrap();
    let tls = pki.connector(&[b"http/1.1"]);

    let old = handshake(&tls, addr, "gw.example.com").await;
    assert!(served_names(&old).contains(&"v1.example.com".to_string()));
    let mut old_conn = h1(old).await;
    get_on(&mut old_conn, "gw.example.com").await;

    mount_secret(&secret, "v2", &pki.leaf(&["gw.example.com", "v2.example.com"]));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = handshake(&tls, addr, "gw.example.com").await;
        if served_names(&s).contains(&"v2.example.com".to_string()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The connection made with the old certificate goes on working.
    get_on(&mut old_conn, "gw.example.com").await;
    let current = served_der(&handshake(&tls, addr, "gw.example.com").await);

    // A key that belongs to another certificate: refused, the v2 certificate keeps serving.
    let (cert, _) = pki.leaf(&["gw.example.com", "v3.example.com"]);
    let (_, other_key) = pki.leaf(&["elsewhere.example.com"]);
    mount_secret(&secret, "v3", &(cert, other_key));
    wait_metrics(f.admin, "a certificate reload error", |m| {
        metric(m, "ferry_tls_certificate_reloads_total", &[("listener", "web"), ("result", "error")]).unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert_eq!(served_der(&handshake(&tls, addr, "gw.example.com").await), current);
    let routes = get(f.admin, "/routes").await.json();
    let last = routes["last_error"].as_str().unwrap_or_default().to_string();
    assert!(last.contains("tls.key") && last.contains("does not belong"), "{last}");
    get_on(&mut old_conn, "gw.example.com").await;
}

#[tokio::test]
async fn a_bad_pair_at_start_or_reload_is_an_error_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = pki.leaf(&["a.example.com"]);
    let (_, k) = pki.leaf(&["b.example.com"]);
    std::fs::write(dir.path().join("a.crt"), c).unwrap();
    std::fs::write(dir.path().join("b.key"), k).unwrap();
    let up = upstream("u").await;
    https_config(dir.path(), &[("a.crt", "b.key")], up.addr);
    let cfg = ferry::config::Config::load(&dir.path().join("routes.yaml")).unwrap();
    let e = ferry::start(cfg).await.err().expect("a mismatched pair must not start");
    assert!(e.to_string().contains("b.key") && e.to_string().contains("does not belong"), "{e}");

    https_config(dir.path(), &[("a.crt", "missing.key")], up.addr);
    let cfg = ferry::config::Config::load(&dir.path().join("routes.yaml")).unwrap();
    let e = ferry::start(cfg).await.err().expect("a missing key must not start");
    assert!(e.to_string().contains("missing.key") && e.to_string().contains("cannot read"), "{e}");
}

/// A TLS acceptor with a CA-signed certificate for `host` (an upstream's own TLS).
fn acceptor_for(pki: &Pki, host: &str) -> tokio_rustls::TlsAcceptor {
    let (c, k) = pki.leaf(&[host]);
    let chain = vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(ferry::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A TLS server with its own certificate that says its name and closes.
async fn tls_named_upstream(pki: &Pki, name: &'static str, host: &str) -> SocketAddr {
    let acceptor = acceptor_for(pki, host);
    listen(move |s| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut t) = acceptor.accept(s).await {
                let _ = t.write_all(name.as_bytes()).await;
                let _ = t.shutdown().await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn passthrough_routes_by_server_name_without_terminating() {
    let pki = Pki::new();
    let a = tls_named_upstream(&pki, "mysql-a", "a.db.example.com").await;
    let b = tls_named_upstream(&pki, "mysql-b", "b.db.example.com").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: tls-in
    bind: 127.0.0.1:0
    protocol: tcp
    sni:
      - {{ server_names: [a.db.example.com], backend: a }}
      - {{ server_names: ['*.b.example.com', b.db.example.com], backend: b }}
backends:
  a: {{ addresses: [{a}] }}
  b: {{ addresses: [{b}] }}
"
    ))
    .await;
    let addr = f.addr("tls-in").unwrap();
    let tls = pki.connector(&[]);
    for (sni, want) in [("a.db.example.com", "mysql-a"), ("b.db.example.com", "mysql-b")] {
        let mut s = handshake(&tls, addr, sni).await;
        // The certificate is the upstream's own: ferry did not terminate.
        assert_eq!(served_names(&s), [sni]);
        let mut got = String::new();
        tokio::time::timeout(PATIENCE, s.read_to_string(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    // No route for the name and no default backend: the connection is closed, nothing forwarded.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let r = tokio::time::timeout(PATIENCE, tls.connect(ServerName::try_from("c.db.example.com").unwrap(), tcp))
        .await
        .unwrap();
    assert!(r.is_err());
    let m = get(f.admin, "/metrics").await.text();
    let errors = [("kind", "no_route"), ("listener", "tls-in")];
    assert_eq!(metric(&m, "ferry_proxy_errors_total", &errors), Some(1.0), "{m}");
}

#[tokio::test]
async fn a_passthrough_listener_sends_plain_tcp_to_its_default_backend_as_ssl_preread_does() {
    let echo = listen(|mut s| async move {
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf).await {
            let _ = s.write_all(&buf[..n]).await;
        }
    })
    .await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: mixed
    bind: 127.0.0.1:0
    protocol: tcp
    backend: plain
    sni:
      - {{ server_names: [a.example.com], backend: plain }}
backends:
  plain: {{ addresses: [{echo}] }}
"
    ))
    .await;
    let mut s = TcpStream::connect(f.addr("mixed").unwrap()).await.unwrap();
    s.write_all(b"SSH-2.0-probe\r\n").await.unwrap();
    let mut got = vec![0u8; 15];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"SSH-2.0-probe\r\n", "the bytes read for a ClientHello are replayed");
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca_file(dir.path());
    let secure = https_upstream(&pki, "config.internal").await;
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong_ca = Pki::new().ca_file(wrong_dir.path());
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /good }}, backend: good }}
      - {{ match: {{ path_prefix: /bad }}, backend: bad }}
backends:
  good: {{ addresses: [{secure}], tls: {{ ca: {}, server_name: config.internal }} }}
  bad: {{ addresses: [{secure}], tls: {{ ca: {}, server_name: config.internal }}, retries: 0 }}
",
        ca.display(),
        wrong_ca.display()
    ))
    .await;
    let addr = f.addr("web").unwrap();
    let r = get(addr, "/good/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "secure /good/x");
    let r = get(addr, "/bad/x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    // The handshake failure is a connect failure; its details (the certificate error) go to the log.
    assert_eq!(r.headers["x-ferry-error"], "connect", "{}", r.text());
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate_and_says_so() {
    let pki = Pki::new();
    let secure = https_upstream(&pki, "config.internal").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /any }}, backend: any }}
      - {{ match: {{ path_prefix: /none }}, backend: none }}
backends:
  any: {{ addresses: [{secure}], tls: {{ insecure_skip_verify: true }} }}
  none: {{ addresses: [{secure}], retries: 0 }}
"
    );
    let f = ferry(&yaml).await;
    let addr = f.addr("web").unwrap();
    let r = get(addr, "/any/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "secure /any/x");
    // Plain HTTP to the same TLS port is no answer at all.
    assert_eq!(get(addr, "/none/x").await.status, 502);
    // tls needs `ca` unless verification is given up in so many words, and not both.
    for (tls, needle) in [
        ("{ server_name: a.example }", "tls needs `ca`"),
        ("{ ca: ca.pem, insecure_skip_verify: true }", "exclude each other"),
    ] {
        let text = format!(
            "listeners:\n  - name: w\n    bind: 127.0.0.1:0\n    routes: [{{ backend: b }}]\nbackends:\n  b: {{ addresses: [127.0.0.1:9], tls: {tls} }}\n"
        );
        let e = ferry::config::Config::parse("r.yaml", &text).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

/// An HTTPS upstream (certificate for `host`) answering "secure PATH".
async fn https_upstream(pki: &Pki, host: &str) -> SocketAddr {
    let acceptor = acceptor_for(pki, host);
    listen(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(t) = acceptor.accept(s).await else { return };
            let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = format!("secure {}", req.uri().path());
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(t), svc).await;
        }
    })
    .await
}

fn body_json(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_set_the_client_address() {
    let up = upstream("u").await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: web, bind: 127.0.0.1:0, proxy_protocol: true, routes: [ {{ backend: b }} ] }}
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    ))
    .await;
    let addr = f.addr("web").unwrap();
    let request = b"GET /pp HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n";

    let mut v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 80\r\n".to_vec();
    v1.extend_from_slice(request);
    let v = body_json(&raw(addr, &v1).await);
    let xff = v["headers"]["x-forwarded-for"].as_str().unwrap().to_string();
    assert!(xff.ends_with("203.0.113.7"), "{xff}");

    let src: SocketAddr = "[2001:db8::42]:40000".parse().unwrap();
    let dst: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let mut v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, dst),
    )
    .build()
    .unwrap();
    v2.extend_from_slice(request);
    let v = body_json(&raw(addr, &v2).await);
    let xff = v["headers"]["x-forwarded-for"].as_str().unwrap().to_string();
    assert!(xff.ends_with("2001:db8::42"), "{xff}");

    // Without the header the connection is refused before anything is forwarded.
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    let out = raw(addr, request).await;
    assert!(out.is_empty(), "{out}");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), hits);
}

#[tokio::test]
async fn tcp_listener_passes_the_client_address_on_with_proxy_protocol() {
    // An upstream that reads a PROXY header and answers with the source address it carried.
    let up = listen(|mut s| async move {
        let mut buf = vec![0u8; 512];
        let mut n = 0;
        loop {
            let k = s.read(&mut buf[n..]).await.unwrap_or(0);
            if k == 0 {
                return;
            }
            n += k;
            let answer = match ppp::HeaderResult::parse(&buf[..n]) {
                ppp::HeaderResult::V2(Ok(h)) => format!("{:?}", h.addresses),
                ppp::HeaderResult::V1(Ok(h)) => format!("{:?}", h.addresses),
                _ if n < 16 => continue,
                other => format!("bad {other:?}"),
            };
            let _ = s.write_all(answer.as_bytes()).await;
            return;
        }
    })
    .await;
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: db, bind: 127.0.0.1:0, protocol: tcp, proxy_protocol: true, backend: b }}
backends:
  b: {{ addresses: [{up}], send_proxy_protocol: v2 }}
"
    ))
    .await;
    let mut s = TcpStream::connect(f.addr("db").unwrap()).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51.100.9 10.0.0.1 41000 3306\r\n").await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut got)).await.unwrap().unwrap();
    assert!(got.contains("198.51.100.9") && got.contains("41000"), "{got}");
}

/// A client certificate for `cn` (O=Shop) signed by `pki`'s CA, as a connector presenting it.
fn client_with_cert(trust: &Pki, signer: &Pki, cn: &str) -> tokio_rustls::TlsConnector {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Shop");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, &signer.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.ca.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(ferry::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn get_over(connector: &tokio_rustls::TlsConnector, to: SocketAddr) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(to).await.unwrap();
    let s = tokio::time::timeout(PATIENCE, connector.connect(ServerName::try_from("shop.example").unwrap(), tcp))
        .await
        .unwrap()
        .map_err(|e| format!("handshake: {e}"))?;
    let mut tx = h1(s).await;
    let req = Request::get("/").header("host", "shop.example").body(Empty::<Bytes>::new()).unwrap();
    let resp = tx.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn client_certificates_are_asked_for_checked_and_told_as_nginx_ssl_verify_client() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(&["shop.example"]);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let ca = pki.ca_file(dir.path());
    let listener = |name: &str, mode: &str| {
        format!(
            "  - name: {name}
    bind: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: {d}/tls.crt, key: {d}/tls.key }}], client_ca: {ca}, client_certificate: {mode} }}
    routes:
      - respond: {{ status: 200, body: 'v=$ssl_client_verify dn=$ssl_client_s_dn issuer=$ssl_client_i_dn' }}
",
            d = dir.path().display(),
            ca = ca.display()
        )
    };
    let yaml = format!(
        "admin: 127.0.0.1:0\nlisteners:\n{}{}",
        listener("required", "required"),
        listener("optional", "optional")
    );
    let f = ferry(&yaml).await;
    let (required, optional) = (f.addr("required").unwrap(), f.addr("optional").unwrap());
    let alice = client_with_cert(&pki, &pki, "alice");
    let (s, body) = get_over(&alice, required).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(body, "v=SUCCESS dn=CN=alice,O=Shop issuer=CN=ferry test CA");
    // No certificate: the handshake completes, the request gets 400 (as nginx); optional: NONE.
    let anonymous = pki.connector(&[b"http/1.1"]);
    assert_eq!(get_over(&anonymous, required).await.unwrap().0, 400);
    assert_eq!(get_over(&anonymous, optional).await.unwrap(), (200, "v=NONE dn= issuer=".to_string()));
    // A certificate of another CA does not get a request through.
    let mallory = client_with_cert(&pki, &Pki::new(), "mallory");
    for to in [required, optional] {
        assert!(get_over(&mallory, to).await.is_err(), "an unverified certificate was let through");
    }
    // The CA file is checked with the config.
    let text = yaml.replace(&ca.display().to_string(), "/nonexistent/ca.pem");
    let cfg = ferry::config::Config::parse("r.yaml", &text).unwrap();
    let e = ferry::tls::load_files(&cfg).unwrap_err().to_string();
    assert!(e.contains("client CA bundle"), "{e}");
}
