//! Static files, compression and error pages over real sockets: the "front end's dist/ plus
//! /prod-api/ → gateway" server block, conditional and range requests, precompressed siblings,
//! path escapes, content negotiation for gzip/br/zstd (static and proxied, streamed), and
//! nginx-style error pages.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::AsyncWriteExt;

fn write(dir: &Path, rel: &str, body: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// Text that compresses, but not to nothing (so encoders emit blocks as they go): `n` bytes.
fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("{:016x} ", x % 100_000).as_bytes());
        if out.len() % 80 < 17 {
            out.push(b'\n');
        }
    }
    out.truncate(n);
    out
}

/// A built front end: index.html, hashed assets, a sub-directory with its own index.
fn site() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(root, "index.html", b"<!doctype html><title>shop</title><div id=app></div>");
    write(root, "assets/app.3f2a.js", &text(20_000));
    write(root, "assets/style.css", b"body { margin: 0 }");
    write(root, "logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>");
    write(root, "fonts/a.woff2", b"wOF2....");
    write(root, "config.json", b"{\"api\":\"/prod-api\"}");
    write(root, "app.wasm", b"\0asm\x01\0\0\0");
    write(root, "docs/index.html", b"docs home");
    write(root, "old/index.htm", b"old home");
    write(root, "big.txt", &text(3_000_000));
    d
}

fn config(root: &Path, up: SocketAddr, extra_route: &str) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ name: api, match: {{ path_prefix: /prod-api/ }}, rewrite: {{ prefix: / }}, backend: gw }}
{extra_route}      - name: front
        match: {{ path_prefix: / }}
        static: {{ root: {root}, index: [index.html, index.htm], fallback: /index.html, cache: 7d }}
backends:
  gw: {{ addresses: [{up}] }}
",
        root = root.display()
    )
}

async fn get_with(to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_method(to, "GET", path, headers).await
}

async fn get_method(to: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut r = req(method, to, path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(to, r.body(Empty::<Bytes>::new()).unwrap()).await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_front_end_is_served_next_to_the_api_with_index_fallback_mime_types_and_cache_control() {
    let d = site();
    let up = upstream("gw").await;
    let f = ferry(&config(d.path(), up.addr, "")).await;
    let web = f.addr("web").unwrap();

    let r = get(web, "/").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<title>shop</title>"));
    assert_eq!(header(&r, "content-type"), "text/html");
    assert_eq!(header(&r, "cache-control"), "no-cache", "HTML is revalidated by default");
    assert!(header(&r, "etag").starts_with('"'));
    assert!(!header(&r, "last-modified").is_empty());

    // Single-page app: a navigation to a client-side route gets index.html with 200.
    for nav in ["/deep/link", "/orders/42/edit"] {
        let r = get(web, nav).await;
        assert_eq!((r.status.as_u16(), r.text().contains("<title>shop</title>")), (200, true), "{nav}");
    }
    // ... and so does a dotted route a browser navigates to (it accepts text/html).
    let r = get_with(web, "/users/john.doe", &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")]).await;
    assert_eq!(r.status, 200);
    // A missing asset is a 404, not the HTML page under a script's name.
    let r = get_with(web, "/assets/app.0000.js", &[("accept", "*/*")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(header(&r, "x-ferry-error"), "not_found");

    let types = [
        ("/assets/app.3f2a.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/logo.svg", "image/svg+xml"),
        ("/fonts/a.woff2", "font/woff2"),
        ("/config.json", "application/json"),
        ("/app.wasm", "application/wasm"),
    ];
    for (path, mime) in types {
        let r = get(web, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(header(&r, "content-type"), mime, "{path}");
        assert_eq!(header(&r, "cache-control"), "max-age=604800", "{path}: cache: 7d");
    }
    assert_eq!(get(web, "/assets/app.3f2a.js").await.body.len(), 20_000);

    // Directories: index files in order; without the slash, a redirect to it.
    assert_eq!(get(web, "/docs/").await.text(), "docs home");
    assert_eq!(get(web, "/old/").await.text(), "old home");
    let r = get(web, "/docs").await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(header(&r, "location"), "/docs/");
    assert_eq!(header(&get(web, "/docs?tab=2").await, "location"), "/docs/?tab=2");

    // The API next to it is proxied as before.
    let r = get(web, "/prod-api/user/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/user/1");

    // What is learned about a path is trusted for `FRESH`: a file deployed after a miss, or
    // changed, is served once that has passed.
    assert_eq!(get(web, "/new.txt").await.status, 404);
    write(d.path(), "new.txt", b"deployed");
    write(d.path(), "assets/style.css", b"body { margin: 1px }");
    tokio::time::sleep(ferry::files::FRESH + std::time::Duration::from_millis(100)).await;
    assert_eq!(get(web, "/new.txt").await.text(), "deployed");
    assert_eq!(get(web, "/assets/style.css").await.text(), "body { margin: 1px }");

    // Only GET and HEAD read files.
    let r = get_method(web, "POST", "/index.html", &[]).await;
    assert_eq!(r.status, 405);
    assert!(header(&r, "allow").contains("GET"));
}

#[tokio::test]
async fn conditional_range_and_head_requests_are_answered_from_the_file() {
    let d = site();
    let up = upstream("gw").await;
    let f = ferry(&config(d.path(), up.addr, "")).await;
    let web = f.addr("web").unwrap();

    let full = get(web, "/big.txt").await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body.len(), 3_000_000, "a file too large to keep in memory streams whole");
    assert_eq!(full.body.as_ref(), &text(3_000_000)[..]);
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    let etag = header(&full, "etag").to_string();
    let modified = header(&full, "last-modified").to_string();

    let r = get_with(web, "/big.txt", &[("if-none-match", &etag)]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (304, 0));
    assert_eq!(header(&r, "etag"), etag);
    let r = get_with(web, "/big.txt", &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, 304);
    let r = get_with(web, "/big.txt", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);

    let r = get_with(web, "/big.txt", &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(header(&r, "content-range"), "bytes 100-199/3000000");
    assert_eq!(r.body.as_ref(), &text(3_000_000)[100..200]);
    let r = get_with(web, "/big.txt", &[("range", "bytes=-10")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_ref()), (206, &text(3_000_000)[2_999_990..]));
    let r = get_with(web, "/big.txt", &[("range", "bytes=4000000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(header(&r, "content-range"), "bytes */3000000");
    // The same from a file kept in memory.
    let r = get_with(web, "/assets/app.3f2a.js", &[("range", "bytes=10-19")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_ref()), (206, &text(20_000)[10..20]));

    let r = get_method(web, "HEAD", "/big.txt", &[]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    assert_eq!(header(&r, "content-length"), "3000000");
    assert_eq!(header(&r, "etag"), etag);
}

#[tokio::test]
async fn precompressed_siblings_are_sent_to_clients_that_accept_them() {
    let d = site();
    write(d.path(), "assets/app.3f2a.js.gz", b"GZ-SIBLING");
    write(d.path(), "assets/app.3f2a.js.br", b"BR-SIBLING");
    let up = upstream("gw").await;
    let f = ferry(&config(d.path(), up.addr, "")).await;
    let web = f.addr("web").unwrap();

    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!((r.text().as_str(), header(&r, "content-encoding")), ("GZ-SIBLING", "gzip"));
    assert_eq!(header(&r, "content-type"), "text/javascript", "the type is the original file's");
    assert!(header(&r, "vary").to_ascii_lowercase().contains("accept-encoding"));
    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!((r.text().as_str(), header(&r, "content-encoding")), ("BR-SIBLING", "br"));
    let r = get(web, "/assets/app.3f2a.js").await;
    assert_eq!((r.body.len(), header(&r, "content-encoding")), (20_000, ""));
}

#[tokio::test]
async fn paths_that_leave_the_directory_are_refused() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("html");
    write(&root, "index.html", b"home");
    write(&root, "assets/a.js", b"asset");
    write(top.path(), "secret.txt", b"TOP-SECRET");
    write(top.path(), "private/key.pem", b"TOP-SECRET-KEY");
    std::os::unix::fs::symlink(top.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(top.path().join("private"), root.join("private")).unwrap();
    std::os::unix::fs::symlink(root.join("assets/a.js"), root.join("inside.js")).unwrap();
    let up = upstream("gw").await;
    let extra = format!(
        "      - name: files\n        match: {{ path_prefix: /files/ }}\n        static: {{ alias: {} }}\n",
        root.join("assets").display()
    );
    // No fallback here: a refused path must not turn into the index page either.
    let yaml = config(&root, up.addr, &extra).replace(", fallback: /index.html", "");
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();

    let attempts = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/..%5csecret.txt",
        "/..%5Csecret.txt",
        "/..\\secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "//../secret.txt",
        "/%00/secret.txt",
        "/index.html%00.js",
        "/leak.txt",
        "/private/key.pem",
        "/files/../../secret.txt",
        "/files/%2e%2e/%2e%2e/secret.txt",
        "/files/..%2f..%2fsecret.txt",
    ];
    for a in attempts {
        let out = raw(web, format!("GET {a} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let status: u16 = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(matches!(status, 400 | 404), "{a}: {status}\n{out}");
        assert!(!out.contains("TOP-SECRET"), "{a} leaked:\n{out}");
    }
    // A symlink that stays inside is followed; the alias route serves its directory.
    assert_eq!(get(web, "/inside.js").await.text(), "asset");
    assert_eq!(get(web, "/files/a.js").await.text(), "asset");
    let r = get(web, "/files").await;
    assert_eq!((r.status.as_u16(), header(&r, "location")), (301, "/files/"));
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn compression_is_negotiated_for_files_and_proxied_answers() {
    let d = site();
    // An upstream with a compressible JSON answer, an already gzipped one and a no-transform one.
    let json = Bytes::from(text(8_000));
    let gz_reply: &'static [u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\nGZIP";
    let (j, gz) = (json.clone(), scripted(gz_reply, false).await);
    let up = listen(move |s| {
        let j = j.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let j = j.clone();
                async move {
                    let mut r = hyper::Response::new(http_body_util::Full::new(j));
                    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                    if req.uri().path() == "/raw" {
                        r.headers_mut().insert("cache-control", "public, no-transform".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        }
    })
    .await;
    let extra = format!(
        "      - {{ name: pre, match: {{ path_prefix: /pre }}, backend: gz, compress: true }}
      - {{ name: tiny, match: {{ path_prefix: /tiny }}, static: {{ alias: {} }}, compress: true, compress_min_bytes: 10 }}
",
        d.path().display()
    );
    let yaml = config(d.path(), up, &extra)
        .replace("backend: gw }", "backend: gw, compress: true }")
        .replace("cache: 7d }\n", "cache: 7d }\n        compress: true\n")
        + &format!("  gz: {{ addresses: [{gz}] }}\n");
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let js = text(20_000);

    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert!(r.body.len() < js.len() / 2, "{} bytes", r.body.len());
    assert_eq!(gunzip(&r.body), js);
    assert!(header(&r, "vary").contains("accept-encoding"));
    assert_eq!(header(&r, "content-length"), "", "the compressed length is not the file's");
    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "br")]).await;
    assert_eq!(header(&r, "content-encoding"), "br");
    assert_eq!(unbrotli(&r.body), js);
    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "zstd")]).await;
    assert_eq!(header(&r, "content-encoding"), "zstd");
    assert_eq!(zstd::decode_all(&r.body[..]).unwrap(), js);
    let r = get_with(web, "/assets/app.3f2a.js", &[("accept-encoding", "gzip;q=0.5, br;q=0.9")]).await;
    assert_eq!(header(&r, "content-encoding"), "br", "the client's preference wins");
    // Without Accept-Encoding: as it is, still saying it varies.
    let r = get(web, "/assets/app.3f2a.js").await;
    assert_eq!((header(&r, "content-encoding"), r.body.len()), ("", 20_000));
    assert!(header(&r, "vary").contains("accept-encoding"));
    // Small, already compressed types and ranges are left alone.
    let r = get_with(web, "/assets/style.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "", "under 1 KiB");
    let r = get_with(web, "/tiny/assets/style.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "gzip", "compress_min_bytes: 10");
    assert_eq!(gunzip(&r.body), b"body { margin: 0 }");
    let r = get_with(web, "/fonts/a.woff2", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "");
    let r = get_with(web, "/big.txt", &[("accept-encoding", "gzip"), ("range", "bytes=0-99")]).await;
    assert_eq!((r.status.as_u16(), header(&r, "content-encoding"), r.body.len()), (206, "", 100));

    // Proxied: compressed when worth it, never twice, never against no-transform.
    let r = get_with(web, "/prod-api/data", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(gunzip(&r.body), json.to_vec());
    let r = get_with(web, "/prod-api/raw", &[("accept-encoding", "gzip")]).await;
    assert_eq!((header(&r, "content-encoding"), r.body.len()), ("", json.len()));
    let r = get_with(web, "/pre", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!((header(&r, "content-encoding"), r.text().as_str()), ("gzip", "GZIP"), "an encoded answer is untouched");
}

#[tokio::test]
async fn a_streamed_answer_is_compressed_as_it_comes() {
    // The upstream sends half of a 1 MiB answer, then waits until the client has seen compressed
    // bytes: they can only have come from the first half.
    let half = Arc::new(tokio::sync::Notify::new());
    let go_on = half.clone();
    let up = listen(move |mut s| {
        let go_on = go_on.clone();
        async move {
            if !read_head(&mut s).await {
                return;
            }
            let body = text(1 << 20);
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
            s.write_all(head).await.unwrap();
            for (i, chunk) in body.chunks(16 * 1024).enumerate() {
                if i == 32 {
                    go_on.notified().await;
                }
                s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
                s.write_all(chunk).await.unwrap();
                s.write_all(b"\r\n").await.unwrap();
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
        }
    })
    .await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    compress: true
    routes:
      - {{ backend: gw }}
backends:
  gw: {{ addresses: [{up}] }}
"
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let s = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let r = req("GET", web, "/stream").header("accept-encoding", "gzip").body(Empty::<Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(PATIENCE, tx.send_request(r)).await.unwrap().unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    // Compressed bytes arrive while the upstream is still holding back its second half.
    while got.is_empty() {
        let frame = tokio::time::timeout(PATIENCE, body.frame()).await.expect("no compressed bytes before the end");
        if let Ok(data) = frame.unwrap().unwrap().into_data() {
            got.extend_from_slice(&data);
        }
    }
    half.notify_one();
    while let Some(frame) = tokio::time::timeout(PATIENCE, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(gunzip(&got), text(1 << 20));
}

#[tokio::test]
async fn error_pages_replace_the_body_of_ferrys_own_answers() {
    let d = site();
    let pages = tempfile::tempdir().unwrap();
    write(pages.path(), "50x.html", b"<h1>We'll be right back</h1>");
    write(pages.path(), "404.html", b"<h1>No such page</h1>");
    write(pages.path(), "asset404.html", b"<h1>No such asset</h1>");
    let dead = dead_addr().await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    error_pages: {{ 502: {p}/50x.html, 503: {p}/50x.html, 404: {p}/404.html }}
    routes:
      - {{ name: api, match: {{ path_prefix: /prod-api/ }}, backend: dead }}
      - name: front
        match: {{ path_prefix: /app }}
        static: {{ alias: {root} }}
        error_pages: {{ 404: {p}/asset404.html }}
backends:
  dead: {{ addresses: [{dead}] }}
",
        p = pages.path().display(),
        root = d.path().display()
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let r = get(web, "/prod-api/x").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "<h1>We'll be right back</h1>");
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "x-ferry-error"), "connect");
    // The route's own 404 page over the listener's; the listener's for everything else.
    let r = get(web, "/app/missing.png").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (404, "<h1>No such asset</h1>"));
    let r = get(web, "/elsewhere").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (404, "<h1>No such page</h1>"), "before routing too");
    assert_eq!(header(&r, "x-ferry-error"), "no_route");

    // A page file that is missing stops the config, naming the file.
    let bad = yaml.replace("/404.html }", "/gone.html }");
    let cfg = ferry::config::Config::parse("test.yaml", &bad).unwrap();
    let e = f.apply(cfg).await.unwrap_err().to_string();
    assert!(e.contains("gone.html") && e.contains("error page"), "{e}");
    // ... and the running config is untouched.
    assert_eq!(get(web, "/elsewhere").await.text(), "<h1>No such page</h1>");
}

#[tokio::test]
async fn a_single_file_answers_its_route_as_an_nginx_alias_of_a_file() {
    let d = site();
    let up = upstream("gw").await;
    let logo = d.path().join("logo.svg");
    let extra = format!(
        "      - {{ name: icon, match: {{ path_exact: /favicon.ico }}, static: {{ file: {} }} }}
      - {{ name: brand, match: {{ path_starts_with: /brand.svg }}, static: {{ file: {}, cache: 1d }} }}
",
        logo.display(),
        logo.display()
    );
    let f = ferry(&config(d.path(), up.addr, &extra)).await;
    let web = f.addr("web").unwrap();
    let r = get_with(web, "/favicon.ico", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<svg xmlns='http://www.w3.org/2000/svg'/>");
    assert_eq!(header(&r, "content-type"), "image/svg+xml", "the file's own type, not the path's");
    let r = get_with(web, "/brand.svg", &[]).await;
    assert_eq!((r.status.as_u16(), header(&r, "cache-control")), (200, "max-age=86400"));
    // Under a prefix, only the prefix itself is the file (nginx appends the rest to the alias).
    assert_eq!(get_with(web, "/brand.svgx", &[]).await.status, 404);
    assert_eq!(get_with(web, "/brand.svg/x", &[]).await.status, 404);
    assert_eq!(get_method(web, "DELETE", "/favicon.ico", &[]).await.status, 405);
    // Beside root, alias, index or fallback it is refused.
    let e = refusal("[{ static: { file: /a.txt, root: /srv } }]");
    assert!(e.contains("static.file serves one file"), "{e}");
}

#[tokio::test]
async fn missing_next_lets_the_routes_after_answer_what_has_no_file() {
    let d = site();
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ name: files, match: {{ path_prefix: / }}, static: {{ root: {}, index: [], missing: next }} }}
      - {{ name: app, match: {{ path_prefix: / }}, backend: app }}
backends:
  app: {{ addresses: [{}] }}
",
        d.path().display(),
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let r = get_with(web, "/logo.svg", &[]).await;
    assert_eq!((r.status.as_u16(), header(&r, "content-type")), (200, "image/svg+xml"), "a file is served");
    // No file, a directory without `$uri/` (no index), an escaped name: the app answers.
    for path in ["/orders/42", "/docs/", "/docs", "/assets/missing.js", "/logo%2Esvg%2F"] {
        let r = get_with(web, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.text().contains("\"uri\""), "{path}: not the app's echo: {}", r.text());
    }
    // Escapes are decoded as the file system names them.
    std::fs::write(d.path().join("with space.txt"), b"spaced").unwrap();
    assert_eq!(get_with(web, "/with%20space.txt", &[]).await.text(), "spaced");
    let e = refusal("[{ static: { root: /srv, fallback: /index.html, missing: next } }]");
    assert!(e.contains("missing: next and a fallback exclude each other"), "{e}");
}
