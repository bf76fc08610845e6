//! Fuzz targets, shared by the cargo-fuzz crate (`tests/fuzz`, nightly, libFuzzer) and by the
//! corpus replay in `tests/fuzz.rs` (stable, every `cargo test`). Each takes arbitrary bytes and
//! panics only when ferry breaks one of its own promises, which the target states and checks.
//! Not part of ferry's API.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Uri, Version};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::head;
use crate::proxy::headers::routing_host;
use crate::table::store::Store;
use crate::table::{prefix_matches, Table};

/// routes.yaml loader: any text either loads into a config that builds into a table, or is
/// refused with errors that each name a line and column inside the text. Parsing is
/// deterministic (the same text gives the same result twice).
pub fn routes_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = Config::parse("fuzz.yaml", text);
    let again = Config::parse("fuzz.yaml", text);
    match (first, again) {
        (Ok(mut cfg), Ok(_)) => {
            for l in &cfg.listeners {
                for r in &l.routes {
                    assert!(
                        r.backend.as_deref().is_none_or(|b| cfg.backend(b).is_some()),
                        "route `{}` names a missing backend",
                        r.name
                    );
                }
            }
            // Building a client with `tls` reads its CA file, whatever path the input names.
            for b in &mut cfg.backends {
                b.tls = None;
            }
            let listeners = cfg.listeners.len();
            assert_eq!(published(cfg).listeners.len(), listeners);
        }
        (Err(a), Err(b)) => {
            assert!(!a.0.is_empty(), "refused without an error");
            assert_eq!(a.0, b.0, "the same text gave different errors");
            // YAML breaks lines at CR LF, CR and LF alike (a lone CR is a line end to the parser).
            let lines = 1 + text.replace("\r\n", "\n").bytes().filter(|&b| b == b'\n' || b == b'\r').count();
            for e in &a.0 {
                assert!(e.line >= 1 && e.line <= lines, "error line {} outside 1..={lines}: {e}", e.line);
                assert!(e.column >= 1, "error column 0: {e}");
                assert!(!e.message.trim().is_empty(), "empty error message at {}:{}", e.line, e.column);
            }
        }
        (a, b) => panic!("the same text loaded once and was refused once: {:?} / {:?}", a.err(), b.err()),
    }
}

/// The routes the request-head target runs against: exact, wildcard and no host; header matches;
/// prefixes with and without stripping; more than eight routes per host, so the first-segment
/// index is in play; a backend that preserves Host.
const HEAD_ROUTES: &str = r#"
listeners:
  - name: web
    bind: 127.0.0.1:0
    protocol: http
    routes:
      - { match: { host: api.example.com, path_prefix: /v1 }, strip_prefix: true, backend: api }
      - { match: { host: api.example.com, path_prefix: /v1/admin, headers: { x-admin: "yes" } }, backend: admin }
      - { match: { host: "*.example.com", path_prefix: /static }, backend: kept }
      - { match: { path_prefix: /eureka }, strip_prefix: true, backend: api }
      - { match: { path_prefix: /eureka/apps }, backend: admin }
      - { match: { path_prefix: /nacos, headers: { x-user: alice } }, strip_prefix: true, backend: kept }
      - { match: { path_prefix: /nacos }, backend: api }
      - { match: { path_prefix: /a/b/c }, strip_prefix: true, backend: api }
      - { match: { path_prefix: /a }, backend: kept }
      - { match: { host: api.example.com }, backend: admin }
      - { match: { path_prefix: /x%2F }, strip_prefix: true, backend: api }
      - { match: { path_exact: /exact }, backend: api }
      - { match: { path_exact: /a/b }, backend: admin }
      - { match: { path_regex: '^/re/(\d+)', methods: [GET, HEAD] }, backend: kept }
      - { match: { path_prefix: /old }, rewrite: { prefix: /new/ }, backend: api }
      - { match: { path_prefix: /config, headers: { x-env: prod } }, backend: kept }
backends:
  api: { addresses: [10.1.0.1:8080, 10.1.0.2:8080] }
  admin: { addresses: [10.1.0.3:8080] }
  kept: { addresses: ["[fd00::1]:8080"], preserve_host: true }
"#;

/// The table a fresh ferry would publish for `cfg` (no endpoints discovered yet).
fn published(cfg: Config) -> Arc<Table> {
    let store = Store::new(Arc::new(Metrics::new()));
    store.publish(Arc::new(cfg), HashMap::new());
    store.load()
}

fn head_table() -> &'static Table {
    static TABLE: OnceLock<Arc<Table>> = OnceLock::new();
    TABLE.get_or_init(|| published(Config::parse("head-routes.yaml", HEAD_ROUTES).expect("the fuzz routes are valid")))
}

/// Hop-by-hop headers that must never reach an upstream (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// The request-head path: one flags byte (bit 0: the peer is a trusted proxy, bit 1: TLS), then an
/// HTTP/1 request head, parsed by httparse (hyper's parser) and built into a request the way
/// hyper does; heads hyper would refuse are skipped. Checks, for what ferry forwards:
/// - the indexed lookup picks the same route as a scan of every route in config order;
/// - no hop-by-hop header, `Proxy-*` header, `Expect`, or header named in `Connection` survives,
///   except `Upgrade` + `Connection: upgrade` on an upgrade;
/// - the path ferry routes on is in normal form (no empty or dot segment), and stays so;
/// - one X-Forwarded-For, equal to the client unless the peer is trusted (then it ends with it),
///   and X-Forwarded-Proto as the listener speaks (or as a trusted peer sent it);
/// - a stripped path is what followed the prefix (or `/`), with the query kept, and every
///   upstream target is a valid origin-form URI for the endpoint's authority.
pub fn request_head(data: &[u8]) {
    let Some((&flags, raw)) = data.split_first() else { return };
    let (trusted, proto) = (flags & 1 == 1, if flags & 2 == 2 { "https" } else { "http" });
    let Some(mut req) = parse_head(raw) else { return };
    if head::normalize_target(&mut req).is_err() {
        return;
    }
    let normal = req.uri().path();
    if let Some(rest) = normal.strip_prefix('/') {
        let segments: Vec<&str> = rest.split('/').collect();
        let last = segments.len() - 1;
        assert!(
            segments.iter().enumerate().all(|(i, s)| *s != "." && *s != ".." && (!s.is_empty() || i == last)),
            "normalised path {normal:?} keeps an empty or dot segment"
        );
        let mut again = req.clone();
        assert!(head::normalize_target(&mut again).is_ok(), "normal form {normal:?} refused");
        assert_eq!(again.uri(), req.uri(), "normalising is not idempotent");
    }
    let table = head_table();
    let listener = &table.listeners[0];

    let host = routing_host(req.uri().host(), req.headers().get(header::HOST)).into_owned();
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    let indexed = head::route_index(listener, &req);
    let scanned = listener.routes.iter().position(|r| r.matches(&host, path, req.method(), req.headers(), &|_| false));
    assert_eq!(indexed, scanned, "the index and a full scan disagree for host {host:?} path {path:?}");

    if head::check_target(&mut req).is_err() {
        return;
    }
    let Some(ri) = indexed else { return };
    let route = &listener.routes[ri];
    if let Some(h) = &route.host {
        assert!(h.matches(&host), "route `{}` picked for host {host:?}", route.name);
    }
    if let Some(p) = &route.path_prefix {
        assert!(prefix_matches(p, path), "route `{}` picked for path {path:?}", route.name);
    }
    if head::check_limits(listener, route, &req).is_err() {
        return;
    }

    let Some(backend) = route.backend.map(|b| &table.backends[b]) else { return };
    let upgrade = head::is_upgrade(&req);
    let named: Vec<HeaderName> = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    let ip = HeaderValue::from_static("192.0.2.7");
    let port = HeaderValue::from_static("8080");
    let hop = head::Hop { client_ip: &ip, proto, port: &port, trusted };
    let sent_proto = req.headers().get("x-forwarded-proto").cloned();
    let (parts, ()) = req.into_parts();
    let up = head::upstream_head(route, backend.settings.preserve_host, &parts.uri, parts.headers, upgrade, &hop, None);
    let h = &up.headers;

    for name in HOP_BY_HOP {
        let allowed = upgrade && (name == "upgrade" || name == "connection");
        assert!(allowed || !h.contains_key(name), "hop-by-hop `{name}` forwarded");
    }
    if upgrade {
        assert_eq!(h.get_all(header::CONNECTION).iter().collect::<Vec<_>>(), ["upgrade"]);
    }
    assert!(!h.contains_key(header::EXPECT), "Expect forwarded");
    assert!(h.keys().all(|k| !k.as_str().starts_with("proxy-")), "a Proxy-* header forwarded");
    for n in &named {
        let rewritten = n.as_str().starts_with("x-forwarded-") || *n == header::HOST;
        let kept = upgrade && (*n == header::UPGRADE || *n == header::CONNECTION);
        assert!(rewritten || kept || !h.contains_key(n), "`{n}` was named in Connection and still forwarded");
    }
    let xff: Vec<&HeaderValue> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "X-Forwarded-For lines: {xff:?}");
    if trusted {
        assert!(xff[0] == ip || xff[0].as_bytes().ends_with(b", 192.0.2.7"), "appended wrong: {xff:?}");
    } else {
        assert_eq!(xff[0], ip, "an untrusted X-Forwarded-For was kept");
    }
    let want_proto = match sent_proto {
        Some(v) if trusted => v,
        _ => HeaderValue::from_static(proto),
    };
    assert_eq!(h.get("x-forwarded-proto"), Some(&want_proto), "X-Forwarded-Proto");

    let pq = &up.path_and_query;
    assert!(pq.path().starts_with('/'), "upstream path {:?} is not origin-form", pq.path());
    assert_eq!(pq.query(), parts.uri.query(), "the query changed");
    match (route.prefix_rewrite.as_deref(), route.path_prefix.as_deref()) {
        (Some(with), Some(prefix)) => {
            // What followed the prefix, after the replacement (less its trailing `/`); the bare
            // prefix becomes the replacement itself.
            let rest = if prefix == "/" { path } else { &path[prefix.len()..] };
            let want = if rest.is_empty() || (prefix == "/" && rest == "/") {
                with.to_string()
            } else {
                format!("{}{rest}", with.trim_end_matches('/'))
            };
            let want = if want.is_empty() { "/".to_string() } else { want };
            assert_eq!(pq.path(), want, "{prefix:?} replaced by {with:?} in {path:?}");
            if prefix != "/" {
                assert!(h.get("x-forwarded-prefix").is_some_and(|v| v.as_bytes().ends_with(prefix.as_bytes())));
            }
        }
        _ => assert_eq!(pq.path(), if path.is_empty() { "/" } else { path }, "the path changed without a rewrite"),
    }
    for ep in &backend.endpoints {
        let mut p = http::uri::Parts::default();
        p.scheme = Some(Scheme::HTTP);
        p.authority = Some(ep.authority.clone());
        p.path_and_query = Some(pq.clone());
        let uri = Uri::from_parts(p).expect("the upstream target is a valid URI");
        assert_eq!(uri.authority(), Some(&ep.authority));
    }
}

/// An HTTP/1 head as hyper's server would build it, or `None` where hyper answers 400/431 itself.
fn parse_head(raw: &[u8]) -> Option<Request<()>> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    if !matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri: Uri = parsed.path?.parse().ok()?;
    let version = if parsed.version? == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut req = Request::builder().method(method).uri(uri).version(version).body(()).ok()?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        req.headers_mut().append(name, value);
    }
    Some(req)
}

/// `ferry import`: any text either parses as nginx.conf or is refused with an error whose line is
/// inside the text; what parses translates into a routes.yaml that ferry's own parser accepts
/// (the importer's promise: whatever it writes passes `ferry check`).
pub fn nginx_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::import::parse::parse_str("fuzz.conf", text) {
        Err(e) => {
            let lines = text.split('\n').count() as u32;
            assert!(e.at.line >= 1 && e.at.line <= lines, "error at line {} of {lines}: {e}", e.at.line);
        }
        Ok(top) => {
            let opts = crate::import::Options { prefix: "/nonexistent-prefix".into(), namespace: Some("fuzz".into()) };
            let out = crate::import::translate::translate(&top, &opts);
            if out.exit_code() == 1 {
                return; // nothing to import, nothing written
            }
            if let Err(e) = Config::parse("imported.yaml", &out.yaml) {
                panic!("the import does not parse:\n{e}\n--- input\n{text}\n--- output\n{}", out.yaml);
            }
        }
    }
}

/// What an upstream's bytes were read as: status, header fields, body, and the bytes left after
/// the response (the next response's, on a reused connection).
type ReadResponse = (u16, Vec<(String, Vec<u8>)>, Vec<u8>, Vec<u8>);

/// Reads one response the way ferry's own HTTP/1 client does, the bytes arriving `step` at a time.
fn read_response(wire: &[u8], step: usize, head_request: bool) -> Result<ReadResponse, String> {
    use crate::http1::Decoded;
    use crate::upstream::h1::codec::parse_head;
    use bytes::BytesMut;
    let mut buf = BytesMut::new();
    let mut rest = wire;
    let mut feed = |buf: &mut BytesMut| {
        let n = step.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        n > 0
    };
    let head = loop {
        match parse_head(&mut buf, head_request).map_err(|e| e.to_string())? {
            Some(h) if h.status.is_informational() && h.status != http::StatusCode::SWITCHING_PROTOCOLS => continue,
            Some(h) => break h,
            None if !feed(&mut buf) => return Err("incomplete head".into()),
            None => {}
        }
    };
    let fields = head.headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    let mut decoder = head.body;
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Decoded::Data(d) => {
                assert!(!d.is_empty(), "an empty data piece");
                body.extend_from_slice(&d);
            }
            Decoded::End => break,
            Decoded::More if !feed(&mut buf) => {
                decoder.eof().map_err(|e| e.to_string())?;
                break;
            }
            Decoded::More => {}
        }
    }
    let mut left = buf.to_vec();
    left.extend_from_slice(rest);
    Ok((head.status.as_u16(), fields, body, left))
}

/// ferry's own HTTP/1 client's framing (`upstream::h1::codec`): one flags byte (bit 0: the
/// request was HEAD), one byte for the size of the pieces the bytes arrive in, then what an
/// upstream sent. Checks:
/// - the outcome does not depend on how the bytes arrive: read whole and read in pieces, the same
///   status, fields, body and leftover, or both refused;
/// - nothing is invented or lost: body + leftover is never more than what followed the head, and a
///   Content-Length body that ends is exactly that long (HEAD, 1xx, 204 and 304 have none);
/// - a chunked body that decodes, re-encoded in other chunk sizes, decodes to the same bytes.
pub fn upstream_response(data: &[u8]) {
    let [flags, step, wire @ ..] = data else { return };
    let head_request = flags & 1 == 1;
    let step = usize::from(*step).max(1);
    let whole = read_response(wire, wire.len().max(1), head_request);
    let pieces = read_response(wire, step, head_request);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "read whole and in pieces of {step}: different responses"),
        (Err(_), Err(_)) => {}
        _ => panic!("read whole: {whole:?}; in pieces of {step}: {pieces:?}"),
    }
    let Ok((status, fields, body, left)) = whole else { return };
    assert!(body.len() + left.len() <= wire.len(), "more bytes out than in");
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let chunked = field("transfer-encoding").is_some();
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    if let (Some(len), false, false) = (field("content-length"), chunked, bodiless) {
        if let Some(n) = std::str::from_utf8(&len).ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            assert_eq!(body.len(), n, "a Content-Length body of another length");
        }
    }
    if chunked && !body.is_empty() {
        let mut again = Vec::new();
        for piece in body.chunks(usize::from(*flags >> 1).max(1)) {
            again.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            again.extend_from_slice(piece);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(b"0\r\n\r\n");
        let mut buf = bytes::BytesMut::from(&again[..]);
        let mut d = crate::http1::Decoder::Chunked(Default::default());
        let mut out = Vec::new();
        while let crate::http1::Decoded::Data(x) = d.decode(&mut buf).expect("ferry's own chunking decodes") {
            out.extend_from_slice(&x);
        }
        assert_eq!(out, body, "a re-chunked body decodes differently");
    }
}

/// What [`client_request`] compares between two ways of reading the same bytes.
/// `Err`: closed as not HTTP/1.
type Read = Result<Option<(String, String, Vec<(String, Vec<u8>)>, String, bool, Vec<u8>)>, ()>;

/// ferry's own HTTP/1 server, request side: one byte for `max_headers`, one for the size of the
/// pieces the bytes arrive in, then what a client sent. Checks:
/// - the outcome does not depend on how the bytes arrive: read whole and read in pieces, the same
///   request (method, target, fields, framing, keep-alive) and the same bytes left, or both
///   handed to hyper;
/// - a request handed to hyper leaves every byte read in the buffer, in order;
/// - a request taken is one hyper would frame the same way: at most one Content-Length (plain
///   digits) or `Transfer-Encoding: chunked` alone on HTTP/1.1, never both, no `Expect`, no
///   upgrade, no CONNECT; its fields are exactly httparse's (each name's values in order);
/// - the response head ferry writes for it parses back (httparse) with one framing header at
///   most, and the one it promises.
pub fn client_request(data: &[u8]) {
    use crate::proxy::h1::codec::{self, Parsed};
    let [limit, step_byte, wire @ ..] = data else { return };
    let max_headers = usize::from(*limit % 64).max(1);
    let step = usize::from(*step_byte).max(1);
    let read = |step: usize| -> Read {
        let mut buf = bytes::BytesMut::new();
        let mut fed = 0;
        loop {
            let end = (fed + step).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
            match codec::parse_request(&mut buf, 4096, max_headers) {
                Parsed::Head(h) => {
                    let r = &h.request;
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&wire[fed..]);
                    let fields = r.headers().iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
                    let framing = format!("{:?}", h.body);
                    return Ok(Some((
                        r.method().to_string(),
                        r.uri().to_string(),
                        fields,
                        framing,
                        h.keep_alive,
                        rest,
                    )));
                }
                Parsed::Unusual => {
                    assert_eq!(&buf[..], &wire[..fed], "a request handed to hyper lost or changed bytes");
                    return Ok(None);
                }
                Parsed::NotHttp1 => {
                    let line = wire.split(|&b| b == b'\n').next().unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let last = line.split(|&b| b == b' ').rfind(|w| !w.is_empty()).unwrap_or_default();
                    let http2 = wire.starts_with(b"PRI * HTTP/2.0\r\n");
                    assert!(http2 || !last.starts_with(b"HTTP/"), "HTTP/1 request line closed unanswered");
                    return Err(());
                }
                Parsed::Partial if fed == wire.len() => return Ok(None),
                Parsed::Partial => {}
            }
        }
    };
    let whole = read(wire.len().max(1));
    let pieces = read(step);
    assert_eq!(whole, pieces, "read whole and in pieces of {step}: different outcomes");
    let Ok(Some((method, _, fields, framing, keep_alive, _))) = whole else { return };
    let count = |n: &str| fields.iter().filter(|(k, _)| k == n).count();
    assert!(method != "CONNECT" && count("expect") == 0 && count("upgrade") == 0, "an unusual request taken");
    assert!(count("content-length") + count("transfer-encoding") <= 1, "two framing headers taken");
    if let Some((_, v)) = fields.iter().find(|(k, _)| k == "transfer-encoding") {
        assert!(v.eq_ignore_ascii_case(b"chunked") && framing.starts_with("Chunked"), "transfer-encoding {v:?}");
    }
    if let Some((_, v)) = fields.iter().find(|(k, _)| k == "content-length") {
        let n: u64 = std::str::from_utf8(v).expect("digits").parse().expect("a plain number");
        assert!(framing == format!("Length({n})") || (n == 0 && framing == "Done"), "{framing} for length {n}");
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    assert!(req.parse(wire).is_ok_and(|s| s.is_complete()), "taken, but httparse does not parse it");
    let mut theirs: Vec<_> = req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    // A HeaderMap keeps the values of one name together (in their order); names in any order.
    let mut ours = fields.clone();
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    theirs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ours, theirs, "fields differ from httparse's");

    // The answer's head, framed for this request.
    let mut headers = http::HeaderMap::new();
    for (k, v) in fields.iter().take(4) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(v)) {
            headers.append(k, v);
        }
    }
    let status = http::StatusCode::from_u16(100 + u16::from(*limit) * 2 % 500).unwrap_or(http::StatusCode::OK);
    let body = match limit % 3 {
        0 => None,
        1 => Some(None),
        _ => Some(Some(u64::from(*step_byte))),
    };
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let asked = codec::Asked { head: method == "HEAD", version, keep_alive };
    let mut out = Vec::new();
    let enc = codec::encode_response(&mut out, status, None, &headers, body, asked, b"Thu, 01 Jan 1970 00:00:00 GMT");
    let mut slots = [httparse::EMPTY_HEADER; 80];
    let mut resp = httparse::Response::new(&mut slots);
    assert_eq!(resp.parse(&out), Ok(httparse::Status::Complete(out.len())), "ferry's response head does not parse");
    let has = |n: &str| resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
    assert!(has("date") >= 1, "no date");
    if enc.framing == codec::Framing::Chunked {
        assert!(has("transfer-encoding") == 1 && has("content-length") == 0, "chunked, but framed otherwise");
    }
    if enc.framing == codec::Framing::Close {
        assert!(enc.last, "a close-delimited body on a connection kept open");
    }
}

/// A request as a server hands it to its handler: method, target, version, fields in order,
/// body bytes.
type Handed = (String, String, String, Vec<(String, Vec<u8>)>, Vec<u8>);

/// One current-thread runtime per fuzzing thread, for the hyper side of the differential targets.
fn oracle_runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RT: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
        ));
    }
    RT.with(|r| *r)
}

/// What hyper's HTTP/1 server hands its handler for `wire` (sent whole, then the client's end),
/// request by request, until the connection ends or hyper refuses.
fn hyper_server_reads(wire: &[u8]) -> Vec<Handed> {
    use http_body_util::BodyExt;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (client, server) = tokio::io::duplex(wire.len() + 64 * 1024);
    let wire = wire.to_vec();
    let record = seen.clone();
    oracle_runtime().block_on(async move {
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let fields = parts.headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
                // A body hyper cannot read whole is not handed over as one.
                if let Ok(b) = body.collect().await {
                    let v = format!("{:?}", parts.version);
                    let handed = (parts.method.to_string(), parts.uri.to_string(), v, fields, b.to_bytes().to_vec());
                    record.lock().unwrap_or_else(|p| p.into_inner()).push(handed);
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        let serve = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let feed = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut rd, mut wr) = tokio::io::split(client);
            let _ = wr.write_all(&wire).await;
            let _ = wr.shutdown().await;
            let mut sink = Vec::new();
            let _ = rd.read_to_end(&mut sink).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(serve, feed) }).await;
    });
    let v = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    v
}

/// What ferry's own HTTP/1 server hands its handler for `wire`, request by request, as long as it
/// takes them itself: it stops at the first head it hands to hyper (`Unusual`), refuses (a body
/// it cannot read, not HTTP/1) or that is incomplete.
fn ferry_server_reads(wire: &[u8], max_headers: usize) -> Vec<Handed> {
    use crate::http1::Decoded;
    use crate::proxy::h1::codec::{self, Parsed};
    let mut buf = bytes::BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        let h = match codec::parse_request(&mut buf, 4096, max_headers) {
            Parsed::Head(h) => h,
            Parsed::Partial | Parsed::Unusual | Parsed::NotHttp1 => return out,
        };
        let r = &h.request;
        let fields = r.headers().iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        let (method, target, version) = (r.method().to_string(), r.uri().to_string(), format!("{:?}", r.version()));
        let mut decoder = h.body;
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                Ok(Decoded::End) => break,
                // The client's end inside the body, or a malformed body: refused (400).
                Ok(Decoded::More) | Err(_) => return out,
            }
        }
        out.push((method, target, version, fields, body));
        if !h.keep_alive {
            return out;
        }
    }
}

/// ferry's own HTTP/1 server against an independent oracle, hyper's HTTP/1 server, on the same
/// bytes: one byte for `max_headers`, then what a client sent. Every request ferry takes itself
/// must be handed over by hyper too, identically (method, target, version, every field in
/// order, body) and in the same place in the sequence; where ferry hands the connection to hyper
/// or refuses, there is nothing of ferry's to compare. So a request that ferry's own parser
/// would frame differently from hyper (a smuggling surface between the two) cannot hide.
pub fn server_vs_hyper(data: &[u8]) {
    let [limit, wire @ ..] = data else { return };
    let max_headers = usize::from(*limit % 64).max(1);
    let ours = ferry_server_reads(wire, max_headers);
    if ours.is_empty() {
        return;
    }
    let theirs = hyper_server_reads(wire);
    for (i, mine) in ours.iter().enumerate() {
        match theirs.get(i) {
            Some(t) => assert_eq!(mine, t, "request {i}: ferry's server and hyper's read it differently"),
            None => {
                panic!("request {i}: ferry's server took {mine:?}, hyper handed over only {} request(s)", theirs.len())
            }
        }
    }
}

/// A response as a client hands it on: status, fields in order, body.
type Answer = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

/// What hyper's HTTP/1 client reads for a response `wire` (the request was HEAD when `head`):
/// status, fields, body; `None` when it refuses.
fn hyper_client_reads(wire: &[u8], head: bool) -> Option<Answer> {
    use http_body_util::BodyExt;
    let (client, server) = tokio::io::duplex(wire.len() + 64 * 1024);
    let wire = wire.to_vec();
    oracle_runtime().block_on(async move {
        let upstream = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut rd, mut wr) = tokio::io::split(server);
            // Read the request head first, as an upstream does.
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match rd.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            let _ = wr.write_all(&wire).await;
            let _ = wr.shutdown().await;
            let _ = rd.read_to_end(&mut got).await;
        };
        let exchange = async move {
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client)).await.ok()?;
            tokio::spawn(conn);
            let method = if head { http::Method::HEAD } else { http::Method::GET };
            let req = Request::builder()
                .method(method)
                .uri("/")
                .header("host", "up")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .ok()?;
            let resp = tx.send_request(req).await.ok()?;
            let status = resp.status().as_u16();
            let fields = resp.headers().iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
            let body = resp.into_body().collect().await.ok()?.to_bytes().to_vec();
            Some((status, fields, body))
        };
        let run = async { tokio::join!(upstream, exchange).1 };
        tokio::time::timeout(std::time::Duration::from_secs(5), run).await.ok().flatten()
    })
}

/// ferry's own HTTP/1 client against hyper's HTTP/1 client, on the same upstream bytes: one flags
/// byte (bit 0: the request was HEAD), then what the upstream sent (and then it closed). Where
/// ferry reads a response, hyper must read the same status and body, and the same fields but
/// for the framing and hop-by-hop ones each client handles itself (Connection, Keep-Alive,
/// Content-Length, Transfer-Encoding): a response ferry would frame differently from hyper is a
/// desync waiting for a pooled connection.
pub fn client_vs_hyper(data: &[u8]) {
    let [flags, wire @ ..] = data else { return };
    let head = flags & 1 == 1;
    let Ok((status, fields, body, _left)) = read_response(wire, wire.len().max(1), head) else { return };
    if status == 101 {
        return;
    }
    let Some((t_status, t_fields, t_body)) = hyper_client_reads(wire, head) else {
        panic!("ferry read {status} {fields:?} body {body:?}; hyper refused the response");
    };
    let skip = |k: &str| matches!(k, "connection" | "keep-alive" | "content-length" | "transfer-encoding");
    // Fields of one name keep their order; fields of different names have none (RFC 9110 §5.3).
    let keep = |f: &[(String, Vec<u8>)]| {
        let mut v = f.iter().filter(|(k, _)| !skip(k)).cloned().collect::<Vec<_>>();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(
        (status, keep(&fields), &body),
        (t_status, keep(&t_fields), &t_body),
        "ferry's client and hyper's read the response differently"
    );
}
