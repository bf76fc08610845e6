//! `ferry import` proven against real nginx. Every config under tests/import runs twice: in nginx
//! (Debian's package) and, imported, in ferry — both with their listen ports moved to free loopback
//! ports and every upstream target (upstream `server`s, `proxy_pass` addresses, stream targets)
//! moved to a recording upstream of this test, certificates, htpasswd files and document roots to
//! files made here. The same battery of requests goes to both, built from the config: each server
//! name, each location's path (a regex location: a path its regex matches), a sub-path, a query,
//! the prefix without its slash and with a letter more, a large POST, a spoofed X-Forwarded-For,
//! credentials where a location asks for them, a websocket upgrade where a location passes one, an
//! unknown host, other methods. Compared per request: status, the upstream group reached, the
//! method, path and query it saw, every request header it saw (all but the hop-by-hop ones), the
//! body it received, the client-visible Location and every header the config adds, and the body
//! of answers made by the proxy itself with 200. A table is printed (`--nocapture`); every config
//! that imports with exit 0 must come out identical on every request.
//!
//! Left out on purpose: `Connection`/`Keep-Alive`/`TE`/`Transfer-Encoding`/`Content-Length` seen
//! by the upstream (nginx speaks HTTP/1.0 with `Connection: close` to upstreams unless told
//! otherwise; ferry keeps connections alive — the body received is compared instead), which member
//! of an upstream group answered (balancers may start at different members), and the bodies of
//! error pages.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry::import::parse::{self, Directive};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use regex_syntax::hir::{Class, Hir, HirKind};
use rustls_pki_types::ServerName;
use support::pki::Pki;
use support::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Nginx,
    Ferry,
}

/// One listen port of the original config and where each side listens for it.
#[derive(Clone, Debug)]
struct Port {
    nginx: u16,
    ferry: u16,
    ssl: bool,
    proxy_protocol: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Recording upstreams

/// An HTTP upstream answering with what it received (JSON); an upgrade is answered 101 with the
/// same JSON, hex-encoded, in `x-seen`. `x-recorder` names it (`group|member`).
fn http_recorder(name: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    async move { Ok::<_, std::convert::Infallible>(record(&name, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn record(name: &str, req: Request<Incoming>) -> http::Response<Full<Bytes>> {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers.entry(k.as_str().to_string()).and_modify(|x: &mut String| *x = format!("{x}, {v}")).or_insert(v);
    }
    let upgrade = req.headers().contains_key("upgrade");
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let (mut len, mut sum) = (0u64, 0u64);
    if !upgrade {
        let mut body = req.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                len += data.len() as u64;
                sum = support::checksum(&data, sum);
            }
        }
    }
    let seen = serde_json::json!({
        "method": method, "uri": uri, "headers": headers, "body_len": len, "body_sum": sum,
    })
    .to_string();
    // A Location built from the Host received, as Tomcat builds its redirects: what the proxy's
    // Location rewriting (nginx proxy_redirect) then does is compared.
    let location = format!("http://{}{}", headers.get("host").map_or("none", String::as_str), uri);
    // And a session cookie on the path it was sent, as an app under a context path sets one.
    let path = uri.split('?').next().unwrap_or("/");
    let cookie_path = match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i + 1],
    };
    let mut r = http::Response::builder()
        .header("x-recorder", name)
        .header("location", location)
        .header("set-cookie", format!("JSESSIONID=ab12; Path={cookie_path}; HttpOnly"));
    if upgrade {
        let hex: String = seen.bytes().map(|b| format!("{b:02x}")).collect();
        r = r.status(101).header("upgrade", "websocket").header("connection", "upgrade").header("x-seen", hex);
        r.body(Full::new(Bytes::new())).unwrap()
    } else {
        r.header("content-type", "application/json").body(Full::new(Bytes::from(seen))).unwrap()
    }
}

/// A TCP upstream that writes its name and a line end, then echoes.
fn tcp_recorder(name: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    let name = format!("{name}\n");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let name = name.clone();
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Rewriting a config for one side

/// Directives that name files or processes of the machine the config came from; they go.
const DROP: &[&str] = &[
    "user",
    "pid",
    "daemon",
    "master_process",
    "worker_processes",
    "error_log",
    "access_log",
    "load_module",
    "lock_file",
    "env",
    "worker_rlimit_nofile",
    "worker_cpu_affinity",
    "ssl_dhparam",
    "ssl_trusted_certificate",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_session_ticket_key",
    "ssl_password_file",
];

/// Directives of nginx's http context that may appear at the top of a conf.d snippet.
const HTTP_LEVEL: &[&str] = &["server", "upstream", "map", "limit_req_zone", "limit_conn_zone", "proxy_cache_path"];

/// What both sides share: recorders, files, ports.
struct World {
    dir: PathBuf,
    ports: BTreeMap<(bool, u16), Port>,
    recorders: HashMap<String, SocketAddr>,
    roots: BTreeMap<String, PathBuf>,
    cert: (PathBuf, PathBuf),
    htpasswd: PathBuf,
}

impl World {
    fn port(&mut self, stream: bool, orig: u16, ssl: bool, pp: bool) -> &Port {
        let p = self.ports.entry((stream, orig)).or_insert_with(|| Port {
            nginx: free_port(),
            ferry: free_port(),
            ssl: false,
            proxy_protocol: false,
        });
        p.ssl |= ssl;
        p.proxy_protocol |= pp;
        p
    }

    fn recorder(&mut self, key: &str, tcp: bool) -> SocketAddr {
        *self.recorders.entry(format!("{}{key}", if tcp { "tcp " } else { "" })).or_insert_with(|| {
            if tcp {
                tcp_recorder(key)
            } else {
                http_recorder(key)
            }
        })
    }

    fn root(&mut self, orig: &str) -> String {
        let n = self.roots.len();
        let dir = self.dir.clone();
        let d = self.roots.entry(orig.trim_end_matches('/').to_string()).or_insert_with(|| dir.join(format!("www{n}")));
        // An alias keeps its trailing slash: nginx appends the rest of the path to it as text.
        format!("{}{}", d.display(), if orig.ends_with('/') { "/" } else { "" })
    }
}

/// The port of a `listen` address (`80`, `*:80`, `[::]:80`, `10.0.0.1:8080`, `localhost`).
fn listen_port(addr: &str) -> Option<u16> {
    if addr.starts_with("unix:") {
        return None;
    }
    if let Ok(p) = addr.parse() {
        return Some(p);
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if !p.ends_with(']') => p.parse().ok(),
        _ => Some(80),
    }
}

struct Rewrite<'a> {
    side: Side,
    world: &'a mut World,
    upstreams: BTreeSet<String>,
}

impl Rewrite<'_> {
    fn level(&mut self, list: &mut Vec<Directive>, stream: bool, upstream: Option<&str>) {
        list.retain(|d| !DROP.contains(&d.name.as_str()));
        let mut seen_ports = BTreeSet::new();
        for d in list.iter_mut() {
            match (d.name.as_str(), d.block.is_some()) {
                ("listen", false) => {
                    let Some(orig) = d.args.first().and_then(|a| listen_port(a)) else { continue };
                    let ssl = d.args.iter().any(|a| a == "ssl");
                    let pp = d.args.iter().any(|a| a == "proxy_protocol");
                    let p = self.world.port(stream, orig, ssl, pp);
                    let port = if self.side == Side::Nginx { p.nginx } else { p.ferry };
                    d.args[0] = format!("127.0.0.1:{port}");
                    d.args.retain(|a| !a.starts_with("ipv6only"));
                    if !seen_ports.insert(port) {
                        d.name = "#dup".into();
                    }
                }
                ("server", false) if upstream.is_some() => {
                    if let Some(a) = d.args.first_mut().filter(|a| !a.starts_with("unix:")) {
                        *a = self.world.recorder(&format!("{}|{a}", upstream.unwrap_or_default()), stream).to_string();
                    }
                }
                ("proxy_pass", false) if stream => {
                    if let Some(a) = d.args.first_mut().filter(|a| !a.contains('$') && !self.upstreams.contains(*a)) {
                        *a = self.world.recorder(&format!("{a}|{a}"), true).to_string();
                    }
                }
                ("proxy_pass", false) => {
                    if let Some(a) = d.args.first_mut() {
                        *a = self.proxy_pass(a);
                    }
                }
                ("ssl_certificate", false) => d.args = vec![self.world.cert.0.display().to_string()],
                ("ssl_certificate_key", false) => d.args = vec![self.world.cert.1.display().to_string()],
                ("ssl_client_certificate", false) => d.args = vec![self.world.cert.0.display().to_string()],
                ("auth_basic_user_file", false) => d.args = vec![self.world.htpasswd.display().to_string()],
                // An alias of one file: a file the test made.
                ("alias", false) if d.args.first().is_some_and(|a| !a.contains('$') && looks_file(a)) => {
                    let parent = d.args[0].rsplit_once('/').map_or("/", |(p, _)| p).to_string();
                    d.args[0] = format!("{}/app.js", self.world.root(&parent).trim_end_matches('/'));
                }
                ("root" | "alias", false) if d.args.first().is_some_and(|a| !a.contains('$')) => {
                    d.args[0] = self.world.root(&d.args[0]);
                }
                ("proxy_cache_path", false) if !d.args.is_empty() => {
                    d.args[0] = self.world.dir.join("cache").display().to_string();
                }
                ("upstream", true) => {
                    let name = d.args.first().cloned().unwrap_or_default();
                    self.level(d.block.as_mut().unwrap(), stream, Some(&name));
                }
                ("stream", true) => {
                    self.upstreams = upstream_names(d);
                    self.level(d.block.as_mut().unwrap(), true, None);
                }
                // A stream map's targets (`$ssl_preread_server_name` → `host:port`): recorders too.
                ("map", true) if stream => {
                    for e in d.block.as_mut().unwrap().iter_mut() {
                        if let Some(a) = e.args.first_mut().filter(|a| a.contains(':') && !self.upstreams.contains(*a))
                        {
                            *a = self.world.recorder(&format!("{a}|{a}"), true).to_string();
                        }
                    }
                }
                ("http", true) => {
                    self.upstreams = upstream_names(d);
                    self.level(d.block.as_mut().unwrap(), false, None);
                }
                ("server", true) if !stream => {
                    let block = d.block.as_mut().unwrap();
                    if !block.iter().any(|x| x.name == "listen") {
                        block.insert(0, directive("listen", &["80"]));
                    }
                    self.level(block, false, None);
                }
                (_, true) => self.level(d.block.as_mut().unwrap(), stream, upstream),
                _ => {}
            }
        }
        list.retain(|d| d.name != "#dup");
        // The test client stands for the load balancer or front proxy the config trusts.
        if let Some(i) = list.iter().position(|d| d.name == "set_real_ip_from") {
            list.insert(i, directive("set_real_ip_from", &["127.0.0.1"]));
        }
    }

    /// `scheme://target[/uri]`: a target that is not an upstream name (nor a variable) becomes a
    /// recorder; https becomes http (the recorders speak plain HTTP).
    fn proxy_pass(&mut self, url: &str) -> String {
        let Some((_, rest)) = url.split_once("://") else { return url.to_string() };
        let (authority, uri) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('$') || self.upstreams.contains(authority) {
            return format!("http://{rest}");
        }
        let key = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        format!("http://{}{uri}", self.world.recorder(&format!("{key}|{key}"), false))
    }
}

/// `set $upstream_app app; set $upstream_port 8080; proxy_pass http://$upstream_app:$upstream_port;`
/// (linuxserver.io's samples): the target the variables name gets a recorder like any other, by
/// giving the variables its address — the proxy_pass keeps its variables, so both sides resolve
/// them. `sets`: the `set`s of the levels above (the last of a name counts).
fn pin_variable_targets(list: &mut Vec<Directive>, world: &mut World, sets: &[(String, String)]) {
    let mut here: Vec<(String, String)> = sets.to_vec();
    for d in list.iter() {
        if let (Some(n), Some(v)) = (d.args.first().filter(|_| d.name == "set"), d.args.get(1)) {
            here.push((n.trim_start_matches('$').to_string(), v.clone()));
        }
    }
    let lookup = |name: &str| here.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    // The proxy_pass of this level, if its scheme and authority are variables and literals only.
    let mut assign: Vec<(String, String)> = Vec::new();
    for d in list.iter_mut().filter(|d| d.name == "proxy_pass") {
        let Some(url) = d.args.first().cloned().filter(|u| u.contains('$')) else { continue };
        let Some((scheme, rest)) = url.split_once("://") else { continue };
        let (authority, uri) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host_t, port_t) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = match var(host_t) {
            Some(n) => lookup(n),
            None if !host_t.contains('$') => Some(host_t.to_string()),
            None => None,
        };
        let port = match port_t {
            None => Some("80".to_string()),
            Some(p) => match var(p) {
                Some(n) => lookup(n),
                None if !p.contains('$') => Some(p.to_string()),
                None => None,
            },
        };
        let (Some(host), Some(port)) = (host, port) else { continue };
        let addr = world.recorder(&format!("{host}:{port}|{host}:{port}"), false);
        if let Some(n) = var(host_t) {
            assign.push((n.to_string(), addr.ip().to_string()));
        }
        let port_part = match port_t.and_then(var) {
            Some(n) => {
                assign.push((n.to_string(), addr.port().to_string()));
                format!(":{}", port_t.unwrap_or_default())
            }
            None => format!(":{}", addr.port()),
        };
        if let Some(n) = var(scheme) {
            assign.push((n.to_string(), "http".into()));
        }
        let scheme = if var(scheme).is_some() { scheme } else { "http" };
        d.args[0] = format!("{scheme}://{host_t}{port_part}{uri}");
    }
    for d in list.iter_mut() {
        if d.name == "set" {
            let name = d.args.first().map(|n| n.trim_start_matches('$').to_string()).unwrap_or_default();
            if let Some((_, v)) = assign.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                d.args[1] = v.clone();
            }
        }
    }
    for d in list.iter_mut() {
        if let Some(b) = d.block.as_mut() {
            pin_variable_targets(b, world, &here);
        }
    }
    // A variable set above this level: set again here (a location's `set`s run after the
    // server's, the last one counts).
    for (n, v) in assign {
        let named = |d: &Directive| d.name == "set" && d.args.first().is_some_and(|a| a[1..].eq_ignore_ascii_case(&n));
        if !list.iter().any(named) {
            list.push(directive("set", &[&format!("${n}"), &v]));
        }
    }
}

/// A request target as a client writes a path that holds characters a URI may not (`%` not
/// followed by two hex digits, a space, UTF-8): percent-encoded.
fn encode_target(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::new();
    for (i, &c) in b.iter().enumerate() {
        let escape = c == b'%' && !(b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit());
        if escape || c <= b' ' || c >= 0x7f || b"\"<>\\^`{|}".contains(&c) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

/// A path naming a file rather than a directory (`/srv/favicon.ico`).
fn looks_file(p: &str) -> bool {
    !p.ends_with('/') && p.rsplit('/').next().is_some_and(|l| l.contains('.'))
}

/// `$name` → `name`.
fn var(t: &str) -> Option<&str> {
    t.strip_prefix('$').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

fn upstream_names(d: &Directive) -> BTreeSet<String> {
    d.children("upstream").filter_map(|u| u.args.first().cloned()).collect()
}

fn directive(name: &str, args: &[&str]) -> Directive {
    let at = parse::Pos { file: Path::new("diff").into(), line: 1, col: 1 };
    Directive { name: name.into(), args: args.iter().map(|a| a.to_string()).collect(), block: None, at }
}

/// The config for one side: what a conf.d snippet has at its top goes into `http`; nginx gets
/// `events`, the stream module, temp paths in the test directory and Debian's MIME types when the
/// config asked for them.
fn rewrite(top: &[Directive], side: Side, world: &mut World, mime: bool) -> Vec<Directive> {
    let mut top = top.to_vec();
    if !top.iter().any(|d| d.name == "http") && top.iter().any(|d| HTTP_LEVEL.contains(&d.name.as_str())) {
        let (inner, rest): (Vec<_>, Vec<_>) =
            top.into_iter().partition(|d| HTTP_LEVEL.contains(&d.name.as_str()) || d.name.starts_with("proxy_"));
        let mut http = directive("http", &[]);
        http.block = Some(inner);
        top = rest;
        top.push(http);
    }
    let mut r = Rewrite { side, world, upstreams: BTreeSet::new() };
    r.level(&mut top, false, None);
    if side == Side::Nginx {
        if !top.iter().any(|d| d.name == "events") {
            let mut e = directive("events", &[]);
            e.block = Some(Vec::new());
            top.insert(0, e);
        }
        if top.iter().any(|d| d.name == "stream") {
            top.insert(0, directive("load_module", &["/usr/lib/nginx/modules/ngx_stream_module.so"]));
        }
        let dir = world.dir.display().to_string();
        for d in top.iter_mut().filter(|d| d.name == "http") {
            let b = d.block.as_mut().unwrap();
            b.insert(0, directive("client_body_temp_path", &[&format!("{dir}/body")]));
            b.insert(0, directive("proxy_temp_path", &[&format!("{dir}/proxy")]));
            if mime {
                b.insert(0, directive("include", &["/etc/nginx/mime.types"]));
            }
        }
    }
    top
}

// ---------------------------------------------------------------------------------------------
// The battery

/// A string the regex matches (`None` when the regex crate cannot read it), built from the
/// first branch of each alternative, one of each repetition, a plain letter for a class.
fn regex_sample(pattern: &str, icase: bool) -> Option<String> {
    fn gen(h: &Hir, out: &mut String) {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(&String::from_utf8_lossy(&l.0)),
            HirKind::Class(Class::Unicode(c)) => {
                let has = |ch: char| c.ranges().iter().any(|r| r.start() <= ch && ch <= r.end());
                let ch = "abx01A-_.".chars().find(|&ch| has(ch)).or_else(|| c.ranges().first().map(|r| r.start()));
                out.push(ch.unwrap_or('a'));
            }
            HirKind::Class(Class::Bytes(c)) => {
                let has = |b: u8| c.ranges().iter().any(|r| r.start() <= b && b <= r.end());
                let b = b"abx01A-_.".iter().copied().find(|&b| has(b)).unwrap_or(b'a');
                out.push(b as char);
            }
            HirKind::Repetition(r) => {
                if r.max != Some(0) {
                    for _ in 0..r.min.max(1) {
                        gen(&r.sub, out);
                    }
                }
            }
            HirKind::Capture(c) => gen(&c.sub, out),
            HirKind::Concat(v) => v.iter().for_each(|x| gen(x, out)),
            HirKind::Alternation(v) => gen(&v[0], out),
        }
    }
    let hir = regex_syntax::ParserBuilder::new().case_insensitive(icase).build().parse(pattern).ok()?;
    let re = regex::RegexBuilder::new(pattern).case_insensitive(icase).build().ok()?;
    let mut s = String::new();
    gen(&hir, &mut s);
    [s.clone(), format!("/x{s}"), format!("/{s}")].into_iter().find(|c| c.starts_with('/') && re.is_match(c))
}

/// A host name a request can carry for a `server_name` entry.
fn host_sample(name: &str) -> Option<String> {
    let h = if let Some(re) = name.strip_prefix('~') {
        regex_sample(re, true).map(|s| s.trim_start_matches('/').to_string())?
    } else if let Some(rest) = name.strip_prefix("*.") {
        format!("www.{rest}")
    } else if let Some(rest) = name.strip_prefix('.') {
        rest.to_string()
    } else if let Some(rest) = name.strip_suffix(".*") {
        format!("{rest}.com")
    } else {
        name.to_string()
    };
    let ok = !h.is_empty() && h != "_" && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    ok.then_some(h)
}

#[derive(Clone, Debug)]
struct Probe {
    stream: bool,
    port: u16,
    host: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: usize,
}

impl Probe {
    fn get(port: u16, host: &str, path: &str) -> Probe {
        Probe { stream: false, port, host: host.into(), method: "GET", path: path.into(), headers: Vec::new(), body: 0 }
    }

    fn describe(&self) -> String {
        if self.stream {
            return format!("tcp :{}", self.port);
        }
        let extra: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        format!("{} {}:{}{} {}", self.method, self.host, self.port, self.path, extra.join(","))
    }
}

/// A location's paths and what it passes on, from the original config.
struct Loc {
    paths: Vec<String>,
    upgrade: bool,
    prefix: Option<String>,
}

fn locations(list: &[Directive], upgrade: bool, out: &mut Vec<Loc>) {
    let upgrade = upgrade
        || list
            .iter()
            .any(|d| d.name == "proxy_set_header" && d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("upgrade")));
    for d in list.iter().filter(|d| d.name == "location" && d.block.is_some()) {
        let block = d.block.as_deref().unwrap();
        let (modifier, pattern) = match d.args.as_slice() {
            [m, p] => (m.as_str(), p.as_str()),
            [p] => ("", p.as_str()),
            _ => continue,
        };
        let inner_upgrade = upgrade
            || block.iter().any(|x| {
                x.name == "proxy_set_header" && x.args.first().is_some_and(|a| a.eq_ignore_ascii_case("upgrade"))
            });
        let (path, prefix) = match modifier {
            "=" => (Some(pattern.to_string()), None),
            "~" | "~*" => (regex_sample(pattern, modifier == "~*"), None),
            "" | "^~" if !pattern.starts_with('@') => (Some(pattern.to_string()), Some(pattern.to_string())),
            _ => (None, None),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let mut paths = vec![p.clone(), format!("{p}?a=1&b=two%20x")];
            if let Some(pre) = &prefix {
                if let Some(bare) = pre.strip_suffix('/').filter(|b| !b.is_empty()) {
                    paths.push(bare.to_string());
                    paths.push(format!("{pre}sub/x"));
                    paths.push(format!("{pre}app.js"));
                } else if pre != "/" {
                    paths.push(format!("{pre}/sub"));
                    paths.push(format!("{pre}x"));
                } else {
                    paths.push("/app.js".into());
                    paths.push("/deep/link".into());
                }
            }
            out.push(Loc { paths, upgrade: inner_upgrade, prefix });
        }
        locations(block, inner_upgrade, out);
    }
}

/// The regex of every `rewrite` in `list`, blocks included.
fn rewrite_regexes(list: &[Directive]) -> Vec<String> {
    let mut out = Vec::new();
    for d in list {
        if d.name == "rewrite" {
            out.extend(d.args.first().cloned());
        }
        if let Some(b) = &d.block {
            out.extend(rewrite_regexes(b));
        }
    }
    out
}

/// What a request changes to meet one side of an `if`.
#[derive(Default, Clone)]
struct Meet {
    headers: Vec<(String, String)>,
    query: Option<String>,
    method: Option<&'static str>,
    path: Option<String>,
}

/// For every `if (COND)` in `list` (blocks included) on a variable a request sets (`$http_*`,
/// `$arg_*`, `$cookie_*`, `$request_method`, `$uri`, `$request_uri`): a request meeting it, and for
/// `!=` / `!~` one failing it.
fn if_meets(list: &[Directive]) -> Vec<Meet> {
    let mut out = Vec::new();
    for d in list {
        if d.name == "if" {
            let cond = d.args.join(" ");
            let inner = cond.trim().trim_start_matches('(').trim_end_matches(')').trim();
            let (var, op, value) = match inner.splitn(3, char::is_whitespace).collect::<Vec<_>>().as_slice() {
                [var] => (var.to_string(), "", "1".to_string()),
                [var, op, value] => (var.to_string(), *op, value.trim_matches(|c| c == '"' || c == '\'').to_string()),
                _ => (String::new(), "", String::new()),
            };
            let icase = op.ends_with('*');
            let values: Vec<String> = match op.trim_start_matches('!') {
                "" | "=" => vec![value.clone()],
                "~" | "~*" => {
                    let re = regex::RegexBuilder::new(&value).case_insensitive(icase).build().ok();
                    let mut v: Vec<String> = regex_value(&value, icase).into_iter().collect();
                    v.extend(
                        ["zz-nomatch".to_string()].into_iter().filter(|z| re.as_ref().is_some_and(|r| !r.is_match(z))),
                    );
                    v
                }
                _ => Vec::new(),
            };
            for v in values.into_iter().chain(op.starts_with('!').then(|| "other-value".to_string())) {
                let mut m = Meet::default();
                if let Some(h) = var.strip_prefix("$http_") {
                    m.headers.push((h.replace('_', "-"), v));
                } else if let Some(a) = var.strip_prefix("$arg_") {
                    m.query = Some(format!("{a}={v}"));
                } else if let Some(c) = var.strip_prefix("$cookie_") {
                    m.headers.push(("cookie".into(), format!("{c}={v}")));
                } else if var == "$request_method" {
                    m.method =
                        ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"].into_iter().find(|x| *x == v);
                    if m.method.is_none() {
                        continue;
                    }
                } else if (var == "$uri" || var == "$request_uri") && v.starts_with('/') {
                    m.path = Some(v);
                } else {
                    continue;
                }
                out.push(m);
            }
        }
        if let Some(b) = &d.block {
            out.extend(if_meets(b));
        }
    }
    out
}

/// A header or argument value `pattern` matches (printable, no spaces).
fn regex_value(pattern: &str, icase: bool) -> Option<String> {
    let re = regex::RegexBuilder::new(pattern).case_insensitive(icase).build().ok()?;
    let s = regex_sample(&format!("^/(?:{})", pattern.trim_start_matches('^')), icase)?;
    let v = s.trim_start_matches('/').to_string();
    (re.is_match(&v) && v.bytes().all(|b| b.is_ascii_graphic())).then_some(v)
}

fn battery(top: &[Directive], ports: &BTreeMap<(bool, u16), Port>, auth: bool) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut http_ports = BTreeSet::new();
    let mut walk_http = |list: &[Directive], out: &mut Vec<Probe>| {
        let http_upgrade = list
            .iter()
            .any(|d| d.name == "proxy_set_header" && d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("upgrade")));
        for s in list.iter().filter(|d| d.name == "server" && d.block.is_some()) {
            let block = s.block.as_deref().unwrap();
            let mut sports: Vec<u16> = block
                .iter()
                .filter(|d| d.name == "listen")
                .filter_map(|d| d.args.first().and_then(|a| listen_port(a)))
                .collect();
            if sports.is_empty() {
                sports.push(80);
            }
            sports.dedup();
            http_ports.extend(sports.iter().copied());
            let hosts: Vec<String> = block
                .iter()
                .filter(|d| d.name == "server_name")
                .flat_map(|d| d.args.iter())
                .filter_map(|n| host_sample(n))
                .collect();
            let first = hosts.first().cloned().unwrap_or_else(|| "localhost".into());
            let mut locs = Vec::new();
            locations(block, http_upgrade, &mut locs);
            for &port in &sports {
                for h in hosts.iter().skip(1).take(3) {
                    out.push(Probe::get(port, h, "/"));
                }
                out.push(Probe::get(port, &first, "/"));
                out.push(Probe { method: "HEAD", ..Probe::get(port, &first, "/") });
                out.push(Probe { method: "DELETE", ..Probe::get(port, &first, "/") });
            }
            let port = sports[0];
            // A path each `rewrite` regex of the server matches, with a query.
            for re in rewrite_regexes(block) {
                if let Some(p) = regex_sample(&re, false) {
                    out.push(Probe::get(port, &first, &p));
                    out.push(Probe::get(port, &first, &format!("{p}?a=1")));
                }
            }
            // Requests that meet (and fail) each `if` of the server, at `/` and each location.
            for m in if_meets(block) {
                for p in ["/".to_string()].iter().chain(locs.iter().map(|l| &l.paths[0])) {
                    let mut path = m.path.clone().unwrap_or_else(|| p.clone());
                    if let Some(q) = &m.query {
                        path = format!("{path}?{q}");
                    }
                    let probe = Probe::get(port, &first, &path);
                    out.push(Probe { headers: m.headers.clone(), method: m.method.unwrap_or("GET"), ..probe });
                }
            }
            for l in &locs {
                for p in &l.paths {
                    out.push(Probe::get(port, &first, p));
                }
                let p = &l.paths[0];
                for h in hosts.iter().skip(1).take(2) {
                    out.push(Probe::get(port, h, p));
                }
                out.push(Probe { method: "POST", body: 300 * 1024, ..Probe::get(port, &first, p) });
                out.push(Probe { method: "OPTIONS", ..Probe::get(port, &first, p) });
                out.push(Probe {
                    headers: vec![
                        ("x-forwarded-for".into(), "203.0.113.7".into()),
                        ("x-forwarded-proto".into(), "https".into()),
                    ],
                    ..Probe::get(port, &first, p)
                });
                if auth {
                    out.push(Probe {
                        headers: vec![("authorization".into(), "Basic YWRtaW46c2VjcmV0".into())],
                        ..Probe::get(port, &first, p)
                    });
                }
                if l.upgrade {
                    out.push(Probe {
                        headers: vec![
                            ("connection".into(), "Upgrade".into()),
                            ("upgrade".into(), "websocket".into()),
                            ("sec-websocket-version".into(), "13".into()),
                            ("sec-websocket-key".into(), "dGhlIHNhbXBsZSBub25jZQ==".into()),
                        ],
                        ..Probe::get(port, &first, p)
                    });
                }
                let _ = &l.prefix;
            }
        }
    };
    for d in top {
        match d.name.as_str() {
            "http" => walk_http(d.block.as_deref().unwrap_or_default(), &mut out),
            "server" if d.block.is_some() => walk_http(std::slice::from_ref(d), &mut out),
            _ => {}
        }
    }
    for port in http_ports {
        out.push(Probe::get(port, "unknown.invalid", "/"));
    }
    for &(stream, port) in ports.keys().filter(|k| k.0) {
        out.push(Probe { stream, ..Probe::get(port, "", "") });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sending and comparing

type Outcome = BTreeMap<String, String>;

/// Headers a hop may add, drop or change on its own.
const HOP: &[&str] = &["connection", "keep-alive", "te", "transfer-encoding", "content-length", "proxy-connection"];

struct Client {
    tls: tokio_rustls::TlsConnector,
    /// Response headers the config adds (`add_header`), compared with Location.
    added: BTreeSet<String>,
}

async fn send(c: &Client, world: &World, side: Side, p: &Probe) -> Outcome {
    let port = &world.ports[&(p.stream, p.port)];
    let to = SocketAddr::from(([127, 0, 0, 1], if side == Side::Nginx { port.nginx } else { port.ferry }));
    let norm = |s: &str| {
        let mut s = s.to_string();
        for ((_, orig), q) in &world.ports {
            s = s.replace(&q.nginx.to_string(), &orig.to_string()).replace(&q.ferry.to_string(), &orig.to_string());
        }
        s
    };
    let mut out = Outcome::new();
    let fut = async {
        let mut s = TcpStream::connect(to).await.map_err(|e| format!("connect: {e}"))?;
        if port.proxy_protocol {
            s.write_all(format!("PROXY TCP4 198.51.100.4 127.0.0.1 40000 {}\r\n", p.port).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        if p.stream {
            s.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.iter().filter(|&&b| b == b'\n').count() < 2 {
                let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // The group's name, not which member the balancer picked.
            let got = String::from_utf8_lossy(&got).into_owned();
            let group = got
                .split_once('|')
                .map_or(got.clone(), |(g, rest)| format!("{g}{}", &rest[rest.find('\n').unwrap_or(rest.len())..]));
            out.insert("tcp".into(), group);
            return Ok::<_, String>(());
        }
        let body = Full::new(Bytes::from((0..p.body).map(|i| (i % 251) as u8).collect::<Vec<u8>>()));
        let mut rb = Request::builder()
            .method(p.method)
            .uri(encode_target(&p.path))
            .header("host", &p.host)
            .header("user-agent", "ferry-diff/1")
            .header("accept", "*/*");
        // A probe's header replaces the default of that name (nginx 1.22 reads the first of two).
        for (k, _) in &p.headers {
            if let Some(h) = rb.headers_mut() {
                h.remove(k.as_str());
            }
        }
        for (k, v) in &p.headers {
            rb = rb.header(k.as_str(), v);
        }
        let req = rb.body(body).unwrap();
        let resp = if port.ssl {
            let sni =
                ServerName::try_from(p.host.clone()).unwrap_or_else(|_| ServerName::try_from("localhost").unwrap());
            let tls = c.tls.connect(sni.to_owned(), s).await.map_err(|e| format!("tls: {e}"))?;
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            tx.send_request(req).await.map_err(|e| format!("request: {e}"))?
        } else {
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn.with_upgrades());
            tx.send_request(req).await.map_err(|e| format!("request: {e}"))?
        };
        let (parts, body) = resp.into_parts();
        out.insert("status".into(), parts.status.as_u16().to_string());
        // A Location as the client follows it: a path is resolved against the request's URL.
        if let Some(l) = parts.headers.get("location").map(|v| norm(&String::from_utf8_lossy(v.as_bytes()))) {
            let scheme = if port.ssl { "https" } else { "http" };
            let l = if l.starts_with('/') { format!("{scheme}://{}:{}{l}", p.host, p.port) } else { l };
            out.insert("location".into(), l);
        }
        for name in c.added.iter().chain(["www-authenticate".to_string(), "set-cookie".to_string()].iter()) {
            // Framing is the proxy's own; a redirect's or an error's page (and its type) too.
            if name == "content-length" || (name == "content-type" && !parts.status.is_success()) {
                continue;
            }
            let vals: Vec<String> = parts
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| norm(&String::from_utf8_lossy(v.as_bytes())))
                .collect();
            if !vals.is_empty() {
                out.insert(format!("response {name}"), vals.join(" | "));
            }
        }
        let recorder = parts.headers.get("x-recorder").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let seen = if parts.status == 101 {
            parts.headers.get("x-seen").map(|v| {
                let h = v.as_bytes();
                (0..h.len() / 2)
                    .map(|i| u8::from_str_radix(std::str::from_utf8(&h[2 * i..2 * i + 2]).unwrap(), 16).unwrap())
                    .collect::<Vec<u8>>()
            })
        } else if p.method == "HEAD" || parts.status == 101 {
            None
        } else {
            Some(body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes().to_vec())
        };
        match (recorder, seen) {
            (Some(name), Some(seen))
                if !(parts.status.is_client_error() || parts.status.is_server_error()) || name.contains('|') =>
            {
                out.insert("upstream".into(), name.split('|').next().unwrap_or_default().to_string());
                let v: serde_json::Value = serde_json::from_slice(&seen).map_err(|e| format!("recorder body: {e}"))?;
                out.insert("method seen".into(), v["method"].as_str().unwrap_or_default().into());
                out.insert("uri seen".into(), norm(v["uri"].as_str().unwrap_or_default()));
                out.insert("body seen".into(), format!("{} bytes, sum {}", v["body_len"], v["body_sum"]));
                for (k, val) in v["headers"].as_object().into_iter().flatten() {
                    if !HOP.contains(&k.as_str()) {
                        out.insert(format!("header seen {k}"), norm(val.as_str().unwrap_or_default()));
                    }
                }
            }
            (_, Some(body)) if parts.status == 200 => {
                out.insert("body".into(), String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
            }
            _ => {}
        }
        Ok(())
    };
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(Ok(())) => out,
        Ok(Err(e)) => Outcome::from([("failed".to_string(), e)]),
        Err(_) => Outcome::from([("failed".to_string(), "no answer in time".to_string())]),
    }
}

fn first_difference(a: &Outcome, b: &Outcome) -> Option<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find(|k| a.get(*k) != b.get(*k)).map(|k| {
        let show = |o: &Outcome| o.get(k).map_or("(none)".to_string(), |v| format!("{v:?}"));
        let mut d = format!("{k}: nginx {} · ferry {}", show(a), show(b));
        // The status (or the failure) says most about a difference further down.
        for w in ["status", "failed"] {
            if *k != w && a.get(w) != b.get(w) {
                let v = |o: &Outcome| o.get(w).map_or("(none)".to_string(), |v| format!("{v:?}"));
                d.push_str(&format!(" ({w}: nginx {} · ferry {})", v(a), v(b)));
            }
        }
        d
    })
}

// ---------------------------------------------------------------------------------------------

struct Row {
    config: String,
    exit: u8,
    requests: usize,
    identical: usize,
    first: Option<String>,
    /// Differing requests by what differs first (`status`, `location`, `uri seen`, …).
    causes: BTreeMap<String, usize>,
    /// A port chosen for nginx or ferry was taken by another process before it could be bound:
    /// the config is run again on new ports.
    ports_taken: bool,
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.push(dir.join("split/nginx.conf"));
    v.sort();
    v
}

async fn run_config(path: &Path) -> Row {
    let name =
        path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")).unwrap().display().to_string();
    let mut row = Row {
        config: name,
        exit: 1,
        requests: 0,
        identical: 0,
        first: None,
        causes: BTreeMap::new(),
        ports_taken: false,
    };
    let (top, _) = parse::parse_file(path).unwrap();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mime = text.contains("mime.types") || path.parent().is_some_and(|d| d.ends_with("split"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let pki = Pki::new();
    let mut names = vec!["localhost".to_string()];
    collect_hosts(&top, &mut names);
    let (cert, key) = pki.leaf(&names.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    // admin:secret in Apache's MD5 form (`openssl passwd -apr1 -salt ferrysal secret`).
    std::fs::write(dir.join("htpasswd"), "admin:$apr1$ferrysal$jMDDcwJo2Ckwz1uDjI4060\n").unwrap();
    let mut world = World {
        dir: dir.clone(),
        ports: BTreeMap::new(),
        recorders: HashMap::new(),
        roots: BTreeMap::new(),
        cert: (dir.join("tls.crt"), dir.join("tls.key")),
        htpasswd: dir.join("htpasswd"),
    };
    let mut top = top;
    pin_variable_targets(&mut top, &mut world, &[]);
    let for_nginx = rewrite(&top, Side::Nginx, &mut world, mime);
    let for_ferry = rewrite(&top, Side::Ferry, &mut world, mime);
    let prefixes = prefix_paths(&top);
    for (i, root) in world.roots.values().enumerate() {
        fill_root(root, &prefixes, i);
    }

    // ferry's import of the same config (its exit code is the row's)
    let fconf = dir.join("ferry-nginx.conf");
    std::fs::write(&fconf, parse::print(&for_ferry)).unwrap();
    let yaml = match ferry::import::import(&fconf, None) {
        Ok(i) => {
            row.exit = i.exit_code();
            format!("admin: 127.0.0.1:0\n{}", i.yaml)
        }
        Err(e) => {
            row.first = Some(format!("rewritten config does not import: {e}"));
            return row;
        }
    };
    // nginx
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, parse::print(&for_nginx)).unwrap();
    let nginx = support::nginx::binary();
    let check =
        std::process::Command::new(&nginx).args(["-t", "-q"]).args(support::nginx::args(&dir, &conf)).output().unwrap();
    if !check.status.success() {
        let err = String::from_utf8_lossy(&check.stderr);
        row.first = Some(format!("nginx refuses it: {}", err.lines().next().unwrap_or_default()));
        return row;
    }
    let mut child = match support::nginx::start(&dir, &conf).await {
        Ok(c) => c,
        Err(e) => {
            row.ports_taken = support::nginx::port_taken(&e);
            row.first = Some(e);
            return row;
        }
    };

    let running = match ferry::config::Config::parse("imported.yaml", &yaml) {
        Ok(cfg) => ferry::start_with(cfg, support::quiet()).await,
        Err(e) => {
            row.first = Some(format!("ferry refuses the import: {e}"));
            return row;
        }
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            row.ports_taken = support::nginx::port_taken(&e.to_string());
            row.first = Some(format!("ferry does not start: {e}"));
            return row;
        }
    };

    let client = Client { tls: pki.connector(&[b"http/1.1"]), added: added_headers(&top) };
    let auth = text.contains("auth_basic");
    for probe in battery(&top, &world.ports, auth) {
        let a = send(&client, &world, Side::Nginx, &probe).await;
        let b = send(&client, &world, Side::Ferry, &probe).await;
        row.requests += 1;
        match first_difference(&a, &b) {
            None => row.identical += 1,
            Some(d) => {
                let cause = d.split(':').next().unwrap_or_default().to_string();
                *row.causes.entry(cause).or_default() += 1;
                if row.first.is_none() {
                    row.first = Some(format!("{} → {d}", probe.describe()));
                }
            }
        }
        if std::env::var_os("FERRY_DIFF_VERBOSE").is_some() {
            eprintln!("{}\n  nginx {a:?}\n  ferry {b:?}", probe.describe());
        }
    }
    drop(running);
    let _ = child.kill().await;
    row
}

fn collect_hosts(list: &[Directive], out: &mut Vec<String>) {
    for d in list {
        if d.name == "server_name" {
            out.extend(d.args.iter().filter_map(|n| host_sample(n)));
        }
        if let Some(b) = &d.block {
            collect_hosts(b, out);
        }
    }
    out.sort();
    out.dedup();
}

fn added_headers(list: &[Directive]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in list {
        if d.name == "add_header" {
            if let Some(n) = d.args.first() {
                out.insert(n.to_ascii_lowercase());
            }
        }
        if let Some(b) = &d.block {
            out.extend(added_headers(b));
        }
    }
    out
}

/// Every plain or `^~` location prefix of the config (document roots get files under each).
fn prefix_paths(list: &[Directive]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in list {
        if d.name == "location" {
            match d.args.as_slice() {
                [p] | [_, p] if p.starts_with('/') => drop(out.insert(p.clone())),
                _ => {}
            }
        }
        if let Some(b) = &d.block {
            out.extend(prefix_paths(b));
        }
    }
    out
}

/// A document root: index.html, app.js, 50x.html and 404.html at its top and under each location
/// prefix (a `root` serves `root + path`; an `alias` its directory).
fn fill_root(root: &Path, prefixes: &BTreeSet<String>, n: usize) {
    let mut dirs = vec![root.to_path_buf()];
    for p in prefixes {
        let rel = p.trim_start_matches('/');
        let rel = if rel.ends_with('/') || rel.is_empty() { rel.to_string() } else { format!("{rel}/") };
        if !rel.contains("..") && !rel.is_empty() {
            dirs.push(root.join(rel));
        }
    }
    for d in dirs {
        if std::fs::create_dir_all(&d).is_err() {
            continue; // a prefix that names a file (`/index.html`)
        }
        let label = d.display().to_string();
        for (f, body) in [
            ("index.html", format!("<!doctype html><p>index {n} {label}</p>\n")),
            ("app.js", format!("console.log('app {n} {label}');\n")),
            ("50x.html", format!("<p>50x {n}</p>\n")),
            ("404.html", format!("<p>404 {n}</p>\n")),
        ] {
            std::fs::write(d.join(f), body).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_configs_answer_as_nginx_does() {
    let mut rows = Vec::new();
    for path in corpus() {
        let mut row = run_config(&path).await;
        for _ in 0..3 {
            if !row.ports_taken {
                break;
            }
            row = run_config(&path).await;
        }
        rows.push(row);
    }
    let mut table =
        String::from("\nconfig                          exit  requests  identical  differing  first difference\n");
    for r in &rows {
        let _ = writeln!(
            table,
            "{:<32}{:>4}{:>10}{:>11}{:>11}  {}",
            r.config,
            r.exit,
            r.requests,
            r.identical,
            r.requests - r.identical,
            r.first.as_deref().unwrap_or("")
        );
    }
    let (requests, identical): (usize, usize) =
        rows.iter().fold((0, 0), |(r, i), row| (r + row.requests, i + row.identical));
    let _ = writeln!(table, "{} configs, {requests} requests, {identical} identical", rows.len());
    // What differs, over the whole corpus, and in which configs.
    let mut causes: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for r in &rows {
        for (c, n) in &r.causes {
            let e = causes.entry(c.as_str()).or_default();
            e.0 += n;
            e.1.push(r.config.as_str());
        }
    }
    let _ = writeln!(table, "\ndiffering requests by cause:");
    for (c, (n, configs)) in &causes {
        let _ = writeln!(table, "{n:>6}  {c}  ({})", configs.join(", "));
    }
    println!("{table}");
    assert!(rows.len() >= 25, "the corpus holds at least 25 configs, has {}", rows.len());
    let bad: Vec<&Row> = rows.iter().filter(|r| r.exit == 0 && (r.first.is_some() || r.requests == 0)).collect();
    assert!(bad.is_empty(), "configs that import cleanly but answer differently from nginx:{table}");
}
