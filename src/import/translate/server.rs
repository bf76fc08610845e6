//! The `http` and `server` levels: listeners from `listen`, a server's names as nginx chooses
//! among them, what a server answers before its locations (`return`, `rewrite`, `if`), and what
//! it answers for a path none of its locations takes.

use std::collections::BTreeMap;

use super::location::guards;
use super::location::{Body, RouteOut};
use super::model::{list, map, Fields, Listener, Route, V};
use super::rewrite::{every_path, flag, respond};
use super::variables::args_mention;
use super::{arg, origin, Inherited, Level, Server, Translator, ACCESS_REFUSED, NO_OPS};
use crate::import::parse::{Directive, Pos};

impl Translator<'_> {
    pub(super) fn http(&mut self, http: &Directive) {
        let block = http.block.as_deref().unwrap_or_default();
        let inh = self.level(block, &Inherited::default());
        let mut trusted = Vec::new();
        let mut real_ip_header = None;
        for d in block {
            match d.name.as_str() {
                "upstream" => {
                    self.upstreams.insert(arg(d, 0).into(), d.clone());
                }
                "set_real_ip_from" => trusted.push((arg(d, 0).to_string(), d.at.clone())),
                "real_ip_header" => real_ip_header = Some((arg(d, 0).to_string(), d.at.clone())),
                "map" if d.args.get(1).is_some_and(|v| v == "$connection_upgrade") => self.diag(
                    &d.at,
                    Level::Note,
                    "map $http_upgrade $connection_upgrade: not needed, ferry passes WebSocket upgrades as they are",
                ),
                "map" => {
                    // Used only for logs, a map changes nothing ferry does.
                    let var = arg(d, 1);
                    let users: Vec<Directive> =
                        block.iter().filter(|x| !matches!(x.name.as_str(), "map" | "log_format")).cloned().collect();
                    let (level, what) = match var.starts_with('$') && args_mention(&users, var) {
                        true => (Level::Warning, "what uses it is not carried over as nginx runs it"),
                        false => (Level::Note, "used for logs only here"),
                    };
                    self.diag(&d.at, level, format!("map {} {var}: ferry has no maps; {what}", arg(d, 0)));
                }
                _ => {}
            }
        }
        let real_ip = (trusted, real_ip_header);
        let trusted = self.real_ip(&real_ip.0, &real_ip.1);
        let mut servers = Vec::new();
        for d in block {
            let mut scratch = Inherited::default();
            match d.name.as_str() {
                "server" => servers.push(d),
                "upstream" | "set_real_ip_from" | "real_ip_header" | "map" | "include" => {}
                "limit_req_zone" | "limit_conn_zone" => {}
                n if NO_OPS.contains(&n) => {}
                _ if self.inherit(d, &mut inh.clone(), &mut scratch) => {}
                _ => self.other(d),
            }
        }
        let zones: BTreeMap<String, String> = block
            .iter()
            .filter(|d| d.name == "limit_req_zone")
            .filter_map(|d| {
                let zone = d.args.iter().find_map(|a| a.strip_prefix("zone="))?.split(':').next()?.to_string();
                let rate = d.args.iter().find_map(|a| a.strip_prefix("rate="))?.to_string();
                Some((zone, rate))
            })
            .collect();
        let servers: Vec<Server> = servers
            .into_iter()
            .map(|d| {
                let sblock = d.block.as_deref().unwrap_or_default();
                let names: Vec<String> = sblock
                    .iter()
                    .filter(|x| x.name == "server_name")
                    .flat_map(|x| x.args.iter().cloned())
                    .filter(|n| !n.is_empty() && n != "_")
                    .collect();
                let mut sinh = inh.clone();
                // nginx's $server_name: the server's first name, known here; $upstream_cache_status
                // is empty where nothing is cached (ferry caches nothing).
                let first = sblock.iter().find(|x| x.name == "server_name").and_then(|x| x.args.first());
                sinh.sets.push(("server_name".into(), first.cloned().unwrap_or_default()));
                sinh.sets.push(("upstream_cache_status".into(), String::new()));
                Server { d, names, inh: self.level(sblock, &sinh) }
            })
            .collect();
        for (si, s) in servers.iter().enumerate() {
            self.server(si, s, &zones, &trusted, &real_ip.1);
        }
    }

    /// Where nginx's realip module takes the client from (its default header is X-Real-IP): the
    /// trusted peers when the header is X-Forwarded-For.
    fn real_ip(&mut self, trusted: &[(String, Pos)], header: &Option<(String, Pos)>) -> Vec<String> {
        match (header, trusted.first()) {
            (_, None) => Vec::new(),
            (Some((h, _)), Some(_)) if h.eq_ignore_ascii_case("X-Forwarded-For") => {
                trusted.iter().map(|t| t.0.clone()).collect()
            }
            (Some((h, at)), Some(_)) if h == "proxy_protocol" => {
                self.real_ip_proxy_protocol = true;
                let message = "real_ip_header proxy_protocol: ferry takes the client from the PROXY header of any \
                               peer of a proxy_protocol listener, nginx only from set_real_ip_from peers";
                self.diag(at, Level::Note, message);
                Vec::new()
            }
            (h, Some((_, first))) => {
                let (h, at) = h.clone().unwrap_or_else(|| ("X-Real-IP (nginx's default)".into(), first.clone()));
                let message = format!(
                    "real_ip_header {h}: ferry reads the real client from X-Forwarded-For (trusted_proxies) or \
                     the PROXY header only; the client address stays the peer's"
                );
                self.diag(&at, Level::Warning, message);
                Vec::new()
            }
        }
    }

    fn server(
        &mut self,
        si: usize,
        s: &Server<'_>,
        zones: &BTreeMap<String, String>,
        trusted: &[String],
        http_real_ip: &Option<(String, Pos)>,
    ) {
        let block = s.d.block.as_deref().unwrap_or_default();
        // A server's own set_real_ip_from replaces the http level's (nginx merges the list whole).
        let own: Vec<(String, Pos)> = block
            .iter()
            .filter(|d| d.name == "set_real_ip_from")
            .map(|d| (arg(d, 0).to_string(), d.at.clone()))
            .collect();
        let header = block.iter().rfind(|d| d.name == "real_ip_header").map(|d| (arg(d, 0).to_string(), d.at.clone()));
        let server_trusted;
        let trusted = match own.is_empty() {
            true => trusted,
            false => {
                server_trusted = self.real_ip(&own, &header.or_else(|| http_real_ip.clone()));
                &server_trusted[..]
            }
        };
        let mut ports = Vec::new();
        // The server's certificate, or the one it inherits from `http`.
        let certs = (s.inh.ssl_cert.clone(), s.inh.ssl_key.clone());
        // ssl_verify_client on|optional with ssl_client_certificate: the listener asks for client
        // certificates. `on` without a CA (nginx refuses that config) fails closed.
        let verify =
            block.iter().rfind(|d| d.name == "ssl_verify_client").map(|d| (arg(d, 0).to_string(), d.at.clone()));
        let verify = verify.or_else(|| s.inh.ssl_verify_client.clone());
        let ca = block.iter().rfind(|d| d.name == "ssl_client_certificate").map(|d| self.under_prefix(arg(d, 0)));
        let ca = ca.or_else(|| s.inh.ssl_client_ca.clone());
        let client = match (verify.as_ref().map(|(m, at)| (m.as_str(), at)), ca) {
            (Some(("on", _)), Some(ca)) => Some((ca, true)),
            (Some(("optional", _)), Some(ca)) => Some((ca, false)),
            (Some(("on", at)), None) => {
                let message =
                    "the server answers 403 (fail closed): ssl_verify_client on without ssl_client_certificate"
                        .to_string();
                self.diag(at, Level::Warning, message);
                None
            }
            (Some((m @ ("optional_no_ca" | "optional"), at)), _) => {
                let message = format!(
                    "ssl_verify_client {m}: not carried over (ferry verifies client certificates against a CA)"
                );
                self.diag(at, Level::Warning, message);
                None
            }
            _ => None,
        };
        let no_ca_required = verify.as_ref().is_some_and(|(m, _)| m == "on") && client.is_none();
        let mut ssl_on = false;
        for d in block {
            match d.name.as_str() {
                "listen" => {
                    let ssl = d.args.iter().any(|a| a == "ssl");
                    let pp = d.args.iter().any(|a| a == "proxy_protocol");
                    let default = d.args.iter().any(|a| a == "default_server" || a == "default");
                    match listen_bind(arg(d, 0)) {
                        Some(bind) => ports.push((bind, ssl, pp, default, d.at.clone())),
                        None => self.diag(&d.at, Level::Warning, format!("listen {}: not carried over", arg(d, 0))),
                    }
                }
                "ssl_certificate" => {
                    let c = s.inh.ssl_cert.clone().unwrap_or_default();
                    self.must_exist(&d.at, &c, "certificate");
                }
                "ssl_certificate_key" => {
                    let k = s.inh.ssl_key.clone().unwrap_or_default();
                    self.must_exist(&d.at, &k, "key");
                }
                "ssl" if arg(d, 0) == "on" => {
                    ssl_on = true;
                    self.diag(
                        &d.at,
                        Level::Warning,
                        "`ssl on` was removed from nginx (1.25); the imported listener uses TLS as `listen … ssl` does",
                    )
                }
                _ => {}
            }
        }
        if ports.is_empty() {
            ports.push(("0.0.0.0:80".to_string(), false, false, false, s.d.at.clone()));
        }
        // `listen 80` and `listen [::]:80` are one ferry listener.
        let mut seen = std::collections::BTreeSet::new();
        ports.retain(|p| seen.insert(p.0.clone()));
        let server_label = s
            .names
            .first()
            .filter(|n| !n.starts_with('~') && *n != "_" && !n.contains('$'))
            .cloned()
            .unwrap_or_else(|| format!("server{si}"));
        let mut scratch = Inherited::default();
        let mut early = None;
        let mut ifs = Vec::new();
        for d in block {
            match d.name.as_str() {
                "listen" | "server_name" | "location" | "ssl_certificate" | "ssl_certificate_key" | "ssl" => {}
                "set_real_ip_from" | "real_ip_header" => {}
                "include" => {}
                // The rewrite phase runs before a location is chosen: a server-level return answers
                // every request of the server.
                "return" if early.is_none() => early = Some(self.ret(d, &s.inh)),
                "rewrite" if early.is_none() => match flag(d) {
                    "redirect" | "permanent" if every_path(arg(d, 0)) => early = self.server_rewrite(d, &s.inh),
                    "redirect" | "permanent" => {
                        if let Some(r) = self.regex_redirect(d, &s.inh) {
                            ifs.push(("rewrite", d.at.clone(), r));
                        }
                    }
                    // Before the location search: the new path is routed (nginx does not run the
                    // server's rewrites again; ferry would, so one whose result it matches again
                    // is not carried over).
                    _ if rewrites_again(d) => {
                        let message = format!(
                            "rewrite {}: not carried over (ferry would apply it again to its own result)",
                            d.args.join(" ")
                        );
                        self.diag(&d.at, Level::Warning, message);
                    }
                    _ => {
                        if let Some(r) = self.reroute(d) {
                            ifs.push(("rewrite", d.at.clone(), r));
                        }
                    }
                },
                "if" if early.is_none() => {
                    match self.if_route(d, &s.inh) {
                        Some(r) => ifs.push(("if", d.at.clone(), r)),
                        None => {
                            self.other(d);
                            if guards(d) {
                                let message = format!("server {server_label} answers 403 (fail closed): its `if` guard is not carried over");
                                self.diag(&d.at, Level::Warning, message);
                                early = Some(vec![respond(403)]);
                            }
                        }
                    }
                }
                // Client certificates: the listener's tls.client_ca (below).
                "ssl_verify_client" | "ssl_client_certificate" | "ssl_verify_depth" | "ssl_trusted_certificate" => {}
                n if ACCESS_REFUSED.contains(&n) => {
                    self.other(d);
                    let message = format!("server {server_label} answers 403 (fail closed): `{n}` is not carried over");
                    self.diag(&d.at, Level::Warning, message);
                    early = Some(vec![respond(403)]);
                }
                n if NO_OPS.contains(&n) => {}
                _ if self.inherit(d, &mut s.inh.clone(), &mut scratch) => {}
                _ => self.other(d),
            }
        }
        if no_ca_required {
            early = Some(vec![respond(403)]);
        }
        let headers = self.response_headers(&s.inh, false);
        let early = early.map(|mut fields: Fields| {
            fields.extend(headers);
            fields
        });
        let server_ifs: Vec<RouteOut> = ifs
            .into_iter()
            .map(|(what, at, (matches, fields))| RouteOut {
                matches,
                body: Body {
                    name: format!("{server_label}-{what}{}", at.line),
                    comment: format!("{at}  {what} (server {server_label}, before its locations)"),
                    at,
                    fields,
                    except: None,
                    pre: Vec::new(),
                    internal: false,
                    then: None,
                },
            })
            .collect();
        let routes = match early {
            Some(fields) => vec![RouteOut {
                matches: Vec::new(),
                body: Body {
                    name: format!("{server_label}-all"),
                    comment: format!("{}  server {server_label} (answers every request)", s.d.at),
                    at: s.d.at.clone(),
                    fields,
                    except: None,
                    pre: Vec::new(),
                    internal: false,
                    then: None,
                },
            }],
            None => self.locations(s, &server_label, zones),
        };
        let routes: Vec<RouteOut> = server_ifs.into_iter().chain(routes).collect();
        for n in &s.names {
            if let Some(re) = n.strip_prefix('~').filter(|_| !n.contains('$')) {
                self.regex_name_captures(s, re);
            }
        }
        for (bind, ssl, pp, default, at) in ports {
            let tls = ssl || ssl_on;
            if !tls && certs.0.is_some() && bind.ends_with(":443") {
                self.diag(
                    &at,
                    Level::Warning,
                    "listen 443 with ssl_certificate but no `ssl`: nginx would serve plain HTTP here",
                );
            }
            let port = bind.rsplit(':').next().unwrap_or("80").to_string();
            let origin = origin(tls, &port);
            let name = format!("{}-{port}", if tls { "https" } else { "http" });
            if pp && !self.real_ip_proxy_protocol {
                let message = "listen … proxy_protocol without `real_ip_header proxy_protocol`: nginx's client \
                               address ($remote_addr) stays the balancer's, ferry's is the one the PROXY header carries";
                self.diag(&at, Level::Warning, message);
            }
            let unmatched = |t: &mut Self, host: Option<&str>| t.unmatched(s, &server_label, host);
            let none = unmatched(self, None);
            let by_host: Vec<Vec<Route>> = hosts_of(s).iter().map(|(_, h)| unmatched(self, Some(h))).collect();
            let l = self.out.listeners.entry(bind.clone()).or_insert_with(|| Listener {
                name: name.clone(),
                bind: bind.clone(),
                at: Some(s.d.at.clone()),
                ..Default::default()
            });
            l.proxy_protocol |= pp;
            if l.trusted.is_empty() {
                l.trusted = trusted.to_vec();
            }
            if tls {
                if let (Some(c), Some(k)) = (&certs.0, &certs.1) {
                    if !l.certs.contains(&(c.clone(), k.clone())) {
                        l.certs.push((c.clone(), k.clone()));
                    }
                }
                // The strictest server of the port decides (ferry asks per listener).
                if let Some((ca, required)) = &client {
                    match &l.client {
                        Some((_, true)) => {}
                        _ => l.client = Some((ca.clone(), *required)),
                    }
                }
            }
            let hosts = hosts_of(s);
            for (_, h) in &hosts {
                match self.names.get(&(bind.clone(), h.clone())) {
                    Some(first) => {
                        let message = format!(
                            "server_name {h} on {bind} is already defined at {first}; nginx ignores this server for it"
                        );
                        self.diag(&s.d.at, Level::Warning, message);
                    }
                    None => drop(self.names.insert((bind.clone(), h.clone()), s.d.at.clone())),
                }
            }
            let l = self.out.listeners.get_mut(&bind).expect("made above");
            let order = l.servers.len();
            // nginx's default server of a port: the one marked `default_server`, else the first.
            let mut second = false;
            if default || l.default.is_none() {
                match &l.default {
                    Some((true, ..)) if default => second = true,
                    _ => {
                        let mut list = render_routes(&routes, None, &origin);
                        list.extend(none);
                        l.default = Some((default, list, si));
                    }
                }
            }
            for ((k, h), rest) in hosts.iter().zip(by_host) {
                let mut list = render_routes(&routes, Some(h), &origin);
                list.extend(rest);
                // Wildcards: the longest first, whatever the server order.
                let order = if matches!(k, 1 | 2) { usize::MAX - h.len() } else { order };
                l.servers.push((*k, order, list, si));
            }
            if second {
                let message = format!("a second default server for {bind}; nginx refuses this config");
                self.diag(&at, Level::Warning, message);
            }
        }
    }
}

/// A host as part of a route name: a regex is `regex-` and a short digest of it.
fn host_label(h: &str) -> String {
    match h.strip_prefix('~') {
        None => h.to_string(),
        Some(re) => {
            let digest =
                re.bytes().fold(0xcbf2_9ce4_8422_2325u64, |a, b| (a ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            format!("regex-{:06x}", digest & 0xff_ffff)
        }
    }
}

/// A `listen` address as a ferry bind (`80`, `*:80`, `[::]:80` → `0.0.0.0:80`); `None` for a
/// UNIX socket.
pub(super) fn listen_bind(addr: &str) -> Option<String> {
    if addr.starts_with("unix:") {
        return None;
    }
    if !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("0.0.0.0:{addr}"));
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !p.ends_with(']') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (addr, "80"),
    };
    let host = match host {
        "*" | "[::]" | "" | "0.0.0.0" => "0.0.0.0",
        "localhost" | "[::1]" => "127.0.0.1",
        h => h,
    };
    Some(format!("{host}:{port}"))
}

/// nginx's server choice for a server's names: (group, host) — exact names (0), leading
/// wildcards (1), trailing ones (2), regexes (3). A name with a variable (a template placeholder)
/// was warned about; it names no host.
fn hosts_of(s: &Server<'_>) -> Vec<(u8, String)> {
    let mut hosts = Vec::new();
    for n in s.names.iter().filter(|n| !n.contains('$')) {
        if n.starts_with('~') {
            hosts.push((3, n.clone()));
        } else if let Some(rest) = n.strip_prefix('.') {
            hosts.push((0, rest.to_string()));
            hosts.push((1, format!("*.{rest}")));
        } else if n.starts_with("*.") {
            hosts.push((1, n.to_ascii_lowercase()));
        } else if n.ends_with(".*") {
            hosts.push((2, n.to_ascii_lowercase()));
        } else if !n.is_empty() && n != "_" {
            hosts.push((0, n.to_ascii_lowercase()));
        }
    }
    hosts
}

/// A server's routes for one of its hosts (`None`: as the port's default server), in order:
/// each location's routes ahead of it (`if`, rewrite redirects), the location's, and for
/// `limit_except` the other methods'.
fn render_routes(routes: &[RouteOut], host: Option<&str>, origin: &str) -> Vec<Route> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in routes {
        let mut m = r.matches.clone();
        if let Some(h) = host {
            m.insert(0, ("host", h.into()));
        }
        let base = match host {
            Some(h) => format!("{}@{}", r.body.name, host_label(h)),
            None => r.body.name.clone(),
        };
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let name = if *n == 1 { base } else { format!("{base}.{n}") };
        let mut variants = Vec::new();
        for (i, (what, (cond, fields))) in r.body.pre.iter().enumerate() {
            let mut with = m.clone();
            // Two path regexes (a rewrite's inside a regex location): the location's is tested on
            // $uri, the same path.
            if cond.iter().any(|(k, _)| *k == "path_regex") {
                if let Some(i) = with.iter().position(|(k, _)| *k == "path_regex") {
                    let (_, re) = with.remove(i);
                    let c = V::Map(vec![("var".into(), "$uri".into()), ("regex".into(), re)]);
                    match with.iter_mut().find(|(k, _)| *k == "when") {
                        Some((_, V::List(l))) => l.push(c),
                        _ => with.push(("when", V::List(vec![c]))),
                    }
                }
            }
            with.extend(cond.iter().cloned());
            variants.push((format!("{name}-{what}{}", i + 1), with, fields));
        }
        let main = variants.len();
        variants.push((name.clone(), m.clone(), &r.body.fields));
        if let Some((methods, other)) = &r.body.except {
            variants[main].1.push(("methods", list(methods.iter())));
            variants.push((format!("{name}-other-methods"), m.clone(), other));
        }
        if let Some(then) = &r.body.then {
            variants.push((
                format!("{name}-then-{}", then.name.rsplit('-').next().unwrap_or("named")),
                m.clone(),
                &then.fields,
            ));
        }
        for (i, (name, matches, fields)) in variants.into_iter().enumerate() {
            let mut route = Route {
                name,
                comment: if i == 0 { r.body.comment.clone() } else { String::new() },
                at: r.body.at.clone(),
                matches,
                fields: fields.clone(),
            };
            route.fill_origin(origin);
            out.push(route);
        }
    }
    out
}

impl Translator<'_> {
    /// The routes after a server's locations, kept to the server's hosts so nothing falls
    /// through to another server: nginx's static handler for a path no location takes, from the
    /// server's `root` (404, and 405 for methods other than GET, HEAD and POST, when it has no
    /// root of its own and nginx's `html` is not there).
    fn unmatched(&mut self, s: &Server<'_>, label: &str, raw: Option<&str>) -> Vec<Route> {
        let name = match raw {
            Some(h) => format!("{label}-{}-none", host_label(h)),
            None => format!("{label}-none"),
        };
        let host: Fields = raw.map(|h| ("host", V::from(h))).into_iter().collect();
        let comment = format!("{}  nothing else{}", s.d.at, raw.map(|h| format!(" on {h}")).unwrap_or_default());
        let root = s.inh.root.clone().or_else(|| {
            let html = self.default_root();
            std::path::Path::new(&html).is_dir().then_some(html)
        });
        if let Some(root) = root {
            let mut fields = vec![("static", self.static_fields(&s.inh, root, None, None))];
            self.common(&s.d.at, &s.inh, &mut fields, true, &BTreeMap::new());
            return vec![Route { name, comment, at: s.d.at.clone(), matches: host, fields }];
        }
        let mut get = host.clone();
        get.push(("methods", list(["GET", "HEAD", "POST"])));
        // The server's `add_header … always` go on these answers too.
        let headers = self.response_headers(&s.inh, false);
        let status = |c: u16| {
            let mut f: Fields = vec![("respond", map([("status", c.into())]))];
            f.extend(headers.clone());
            f
        };
        vec![
            Route { name: name.clone(), comment, at: s.d.at.clone(), matches: get, fields: status(404) },
            Route {
                name: format!("{name}-method"),
                comment: String::new(),
                at: s.d.at.clone(),
                matches: host,
                fields: status(405),
            },
        ]
    }
}

/// Would a server-level `rewrite` match its own result again? (ferry reroutes through the
/// server's routes, nginx does not rerun them.) The result with every variable as `x` is tried.
fn rewrites_again(d: &Directive) -> bool {
    let Ok(re) = regex::Regex::new(arg(d, 0)) else { return false };
    let mut sample = String::new();
    let mut rest = arg(d, 1);
    while let Some(i) = rest.find('$') {
        sample.push_str(&rest[..i]);
        sample.push('x');
        let n = rest[i + 1..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        rest = &rest[i + 1 + n..];
    }
    sample.push_str(rest);
    let sample = sample.split('?').next().unwrap_or_default();
    re.is_match(sample)
}
