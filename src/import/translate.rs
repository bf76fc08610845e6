//! nginx directives (as `parse` read them) → routes.yaml text, with a diagnostic for everything
//! that is not carried over exactly.
//!
//! Listeners are nginx's `listen` ports (`http-80`, `https-443`; `stream` servers become `tcp-N`).
//! A port's servers become its routes: servers with exact names first, then wildcard names
//! (longest first), then the default server (host-less) — nginx's server choice — and each named
//! server ends with a catch-all 404 for its hosts, so a path no location of it takes does not fall
//! through to another server. A server's locations become routes in the order of `order::rules`,
//! so ferry picks the location nginx would.
//!
//! Headers follow nginx, not ferry's defaults: the upstream gets `Host: $proxy_host` unless
//! `proxy_set_header Host` says otherwise, no `X-Forwarded-*` added unless the config sets them
//! and the client's own passed as sent (`forwarded_headers: false`);
//! `proxy_set_header` and `add_header` lists are inherited only by levels that set none of their own.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::locations::{Kind, Location};
use super::order::{self, Target};
use super::parse::{Diag, Directive, Level, Pos};

/// What an import produced: the routes.yaml text (if any) and every diagnostic, in input order.
pub struct Imported {
    pub yaml: String,
    pub diags: Vec<Diag>,
}

impl Imported {
    /// 0: all carried over (notes only); 3: written, with warnings; 1: nothing to write.
    pub fn exit_code(&self) -> u8 {
        match self.diags.iter().map(|d| d.level).max() {
            Some(Level::Error) => 1,
            Some(Level::Warning) => 3,
            _ => 0,
        }
    }
}

pub struct Options {
    /// nginx's prefix: relative paths (`root html`, `include conf.d/*.conf`) start here; the
    /// main file's directory.
    pub prefix: std::path::PathBuf,
    /// Host names that are Services of this namespace become `service:` backends.
    pub namespace: Option<String>,
}

/// Directives nginx users set that change nothing ferry does (tuning, buffers, logs, MIME types).
const NO_OPS: &[&str] = &[
    "user",
    "worker_processes",
    "worker_rlimit_nofile",
    "worker_connections",
    "pid",
    "error_log",
    "access_log",
    "log_format",
    "events",
    "sendfile",
    "tcp_nopush",
    "tcp_nodelay",
    "keepalive_timeout",
    "keepalive_requests",
    "types",
    "default_type",
    "server_tokens",
    "charset",
    "proxy_buffering",
    "proxy_buffer_size",
    "proxy_buffers",
    "proxy_busy_buffers_size",
    "client_body_buffer_size",
    "client_header_buffer_size",
    "large_client_header_buffers",
    "proxy_http_version",
    "multi_accept",
    "use",
    "types_hash_max_size",
    "server_names_hash_bucket_size",
    "server_names_hash_max_size",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_dhparam",
    "ssl_ecdh_curve",
    "gzip_vary",
    "gzip_proxied",
    "gzip_comp_level",
    "gzip_types",
    "gzip_buffers",
    "gzip_http_version",
    "gzip_disable",
    "proxy_temp_path",
    "client_body_temp_path",
    "open_file_cache",
    "open_file_cache_valid",
    "open_file_cache_errors",
    "open_file_cache_min_uses",
    "resolver",
    "resolver_timeout",
    "http2",
    "reset_timedout_connection",
    "client_body_timeout",
    "client_header_timeout",
    "send_timeout",
    "proxy_intercept_errors",
    "real_ip_recursive",
    "autoindex_exact_size",
    "autoindex_localtime",
    "etag",
    "if_modified_since",
    "expires_by_type",
    "lingering_close",
    "lingering_timeout",
    "aio",
    "directio",
    "output_buffers",
    "postpone_output",
    "server_name_in_redirect",
    "limit_req_log_level",
    "proxy_request_buffering",
    "underscores_in_headers",
    "ignore_invalid_headers",
    "log_not_found",
    "log_subrequest",
    "proxy_max_temp_file_size",
    "proxy_temp_file_write_size",
    "proxy_socket_keepalive",
    "variables_hash_max_size",
    "variables_hash_bucket_size",
    "map_hash_max_size",
    "map_hash_bucket_size",
    "proxy_headers_hash_max_size",
    "proxy_headers_hash_bucket_size",
    "worker_shutdown_timeout",
    "accept_mutex",
    "ssl_buffer_size",
    "ssl_session_ticket_key",
    "msie_padding",
];

/// Directives ferry refuses to guess at, with what to do instead.
/// A rewrite regex that matches every path and captures all of it (or nothing).
fn every_path(re: &str) -> bool {
    matches!(re, "^" | "^(.*)$" | "^/(.*)$" | "^(.*)" | ".*" | "(.*)")
}

/// A regex error's last line (the regex crate's span its pattern over several).
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().trim_start_matches("error: ").to_string()
}

fn refused(name: &str) -> Option<&'static str> {
    Some(match name {
        "if" => "not carried over; express the condition as a route match (host, path, headers)",
        "sub_filter" | "sub_filter_once" | "sub_filter_types" => "write the replacements as the route's `body_replace`",
        "auth_request" => "ferry has no subrequest authentication; put the auth service in front or use basic_auth",
        n if n.starts_with("proxy_cache") => "ferry does not cache; put a cache in front or rely on the upstream's",
        n if n.starts_with("lua") || n.starts_with("content_by_lua") || n.starts_with("access_by_lua") => {
            "Lua (OpenResty) has no equivalent in ferry"
        }
        n if n.starts_with("js_") => "njs has no equivalent in ferry",
        "fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass" => {
            "ferry proxies HTTP only; run the app behind an HTTP server"
        }
        "sticky" | "health_check" | "zone" | "ntlm" | "status_zone" => {
            "an NGINX Plus directive; ferry has no equivalent"
        }
        _ => return None,
    })
}

/// A YAML string: single-quoted, or double-quoted with escapes when it holds control characters.
fn q(s: &str) -> String {
    if s.chars().any(char::is_control) {
        return serde_json::to_string(s).expect("a string serialises");
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

/// What a level (http, server, location) sets that inner levels inherit.
#[derive(Clone, Default)]
struct Inherited {
    proxy_set_header: Option<Vec<(String, String)>>,
    /// (name, value, `always`)
    add_header: Option<Vec<(String, String, bool)>>,
    hide_header: Vec<String>,
    access: Option<Vec<(bool, String)>>,
    auth: Option<(String, String)>,
    root: Option<String>,
    index: Option<Vec<String>>,
    gzip: Option<bool>,
    gzip_min: Option<u64>,
    gzip_static: Option<bool>,
    max_body: Option<u64>,
    error_pages: Option<Vec<(Vec<u16>, String)>>,
    proxy_redirect_off: bool,
    read_timeout: Option<String>,
    /// `proxy_next_upstream`, as ferry's `retry_on` (`Some(empty)`: `off`).
    next_upstream: Option<Vec<&'static str>>,
    /// `limit_req_status` (nginx's default is 503).
    limit_req_status: Option<u16>,
    /// `expires`, as a Cache-Control value (`None`: not set or `off`).
    expires: Option<String>,
    send_timeout: Option<String>,
    connect_timeout: Option<String>,
    /// `absolute_redirect`, `port_in_redirect` (both on unless set).
    absolute_redirect: Option<bool>,
    port_in_redirect: Option<bool>,
}

struct Server<'a> {
    d: &'a Directive,
    names: Vec<String>,
    inh: Inherited,
}

pub fn translate(top: &[Directive], opts: &Options) -> Imported {
    let mut t = Translator {
        diags: Vec::new(),
        backends: BTreeMap::new(),
        opts,
        upstreams: BTreeMap::new(),
        names: BTreeMap::new(),
        real_ip_proxy_protocol: false,
    };
    let mut listeners: BTreeMap<String, ListenerOut> = BTreeMap::new();
    // A conf.d or sites-enabled file: its servers and upstreams are what an `http` block includes.
    let wrapped;
    let snippet = |d: &Directive| matches!(d.name.as_str(), "server" | "upstream" | "map" | "limit_req_zone");
    let top = match top.iter().any(|d| d.name == "http" || d.name == "stream") || !top.iter().any(snippet) {
        true => top,
        false => {
            let at = top.iter().find(|d| snippet(d)).map(|d| d.at.clone()).expect("one is there");
            t.diag(&at, Level::Note, "no `http` block: read as what one includes (a conf.d or sites-enabled file)");
            wrapped = [Directive { name: "http".into(), args: Vec::new(), block: Some(top.to_vec()), at }];
            &wrapped[..]
        }
    };
    for (at, name) in unknown_variables(top) {
        let message = format!(
            "`${name}` is not a variable nginx knows (nginx refuses the config); a template placeholder left unexpanded?"
        );
        t.diag(&at, Level::Warning, message);
    }
    for d in top {
        match d.name.as_str() {
            "http" => t.http(d, &mut listeners),
            "stream" => t.stream(d, &mut listeners),
            n if NO_OPS.contains(&n) => {}
            "include" => {}
            _ => t.other(d),
        }
    }
    if listeners.is_empty() {
        let at = top
            .first()
            .map_or_else(|| Pos { file: std::path::Path::new("nginx.conf").into(), line: 1, col: 1 }, |d| d.at.clone());
        t.diag(&at, Level::Error, "nothing to import: no `server` in an `http` or `stream` block");
        return Imported { yaml: String::new(), diags: t.diags };
    }
    let mut y = String::from("# Imported by `ferry import`; check with `ferry check -c FILE`.\nlisteners:\n");
    for l in listeners.values() {
        y.push_str(&l.render());
    }
    if !t.backends.is_empty() {
        y.push_str("backends:\n");
        for (name, b) in &t.backends {
            let _ = writeln!(y, "  {}:", q(name));
            for line in &b.lines {
                let _ = writeln!(y, "    {line}");
            }
        }
    }
    let at = top.first().map(|d| d.at.clone()).expect("a listener came from a directive");
    match repair(y, &mut t.diags, &at) {
        Some(yaml) => Imported { yaml, diags: t.diags },
        None => {
            t.diag(&at, Level::Error, "nothing ferry can serve is left after leaving out what it refuses");
            Imported { yaml: String::new(), diags: t.diags }
        }
    }
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// A line that starts one item of the output: a listener, a route, a backend.
fn is_item(l: &str) -> bool {
    l.starts_with("  - name:")
        || (indent(l) == 6 && l.trim_start().starts_with("- "))
        || (indent(l) == 2 && l.ends_with("':"))
}

/// The last safety net: while ferry's parser refuses the output, the item (route, backend or
/// listener) holding the first error is left out, with a warning at the nginx source the route's
/// comment cites; what names a left-out backend goes in the next round. `None` when nothing valid
/// is left. (Values nginx accepts and ferry does not — an address, a variable, a header name —
/// end here.)
fn repair(yaml: String, diags: &mut Vec<Diag>, fallback: &Pos) -> Option<String> {
    let mut lines: Vec<String> = yaml.lines().map(String::from).collect();
    for _ in 0..1000 {
        let text = lines.join("\n") + "\n";
        let errors = match crate::config::Config::parse("imported.yaml", &text) {
            Ok(_) => return Some(text),
            Err(e) => e,
        };
        let e = errors.0.first()?;
        let line = e.line.checked_sub(1).filter(|&l| l < lines.len())?;
        let start = (0..=line).rev().find(|&i| is_item(&lines[i]))?;
        let k = indent(&lines[start]);
        let mut from = start;
        while from > 0 && indent(&lines[from - 1]) == k && lines[from - 1].trim_start().starts_with('#') {
            from -= 1;
        }
        let end = (start + 1..lines.len())
            .find(|&i| {
                let l = &lines[i];
                !l.trim().is_empty()
                    && (indent(l) < k || (indent(l) == k && (is_item(l) || l.trim_start().starts_with('#'))))
            })
            .unwrap_or(lines.len());
        // `# FILE:LINE  location …` above a route says where it came from.
        let at = lines[from..start]
            .iter()
            .find_map(|c| {
                let c = c.trim_start().strip_prefix("# ")?;
                let (place, _) = c.split_once("  ")?;
                let (file, line) = place.rsplit_once(':')?;
                Some(Pos { file: std::path::Path::new(file).into(), line: line.parse().ok()?, col: 1 })
            })
            .unwrap_or_else(|| fallback.clone());
        let what = lines[start].trim().trim_start_matches("- ").to_string();
        diags.push(Diag {
            at,
            level: Level::Warning,
            message: format!("left out of the import, ferry refuses it: {} (in `{what}`)", e.message),
        });
        lines.drain(from..end);
    }
    None
}

struct BackendOut {
    lines: Vec<String>,
}

#[derive(Default)]
struct ListenerOut {
    name: String,
    bind: String,
    tcp_backend: Option<String>,
    certs: Vec<(String, String)>,
    proxy_protocol: bool,
    trusted: Vec<String>,
    /// (order key, route text)
    /// (order group, order, route text, server index)
    routes: Vec<(u8, usize, String, usize)>,
    /// The default server's routes (host-less) and whether `default_server` chose it.
    default: Option<(bool, String, usize)>,
}

impl ListenerOut {
    fn render(&self) -> String {
        let mut s = format!("  - name: {}\n    bind: {}\n", q(&self.name), q(&self.bind));
        if let Some(b) = &self.tcp_backend {
            let _ = writeln!(s, "    protocol: tcp\n    backend: {}", q(b));
            return s;
        }
        if self.proxy_protocol {
            s.push_str("    proxy_protocol: true\n");
        }
        // As nginx: no request IDs or trace context unless the config sets them itself.
        s.push_str(
            "    # nginx adds neither; delete these two lines to have ferry send X-Request-Id and traceparent\n    \
             request_id: false\n    trace_context: { start: false }\n",
        );
        if !self.trusted.is_empty() {
            let list: Vec<String> = self.trusted.iter().map(|t| q(t)).collect();
            let _ = writeln!(s, "    trusted_proxies: [{}]", list.join(", "));
        }
        if !self.certs.is_empty() {
            s.push_str("    tls:\n      certificates:\n");
            for (c, k) in &self.certs {
                let _ = writeln!(s, "        - {{ cert: {}, key: {} }}", q(c), q(k));
            }
        }
        s.push_str("    routes:\n");
        // A port whose only server is its default: that server's host-less routes say it all.
        let alone = self.default.as_ref().is_some_and(|d| self.routes.iter().all(|r| r.3 == d.2));
        let mut routes: Vec<&(u8, usize, String, usize)> = self.routes.iter().filter(|_| !alone).collect();
        routes.sort_by_key(|(k, i, _, _)| (*k, *i));
        for (_, _, r, _) in routes {
            s.push_str(r);
        }
        if let Some((_, r, _)) = &self.default {
            s.push_str(r);
        }
        s
    }
}

struct Translator<'o> {
    diags: Vec<Diag>,
    backends: BTreeMap<String, BackendOut>,
    opts: &'o Options,
    upstreams: BTreeMap<String, Directive>,
    /// (bind, server name) → where it was first defined: nginx keeps the first of a duplicate.
    names: BTreeMap<(String, String), Pos>,
    /// `real_ip_header proxy_protocol`: nginx's client is the PROXY header's, as ferry's.
    real_ip_proxy_protocol: bool,
}

fn arg(d: &Directive, i: usize) -> &str {
    d.args.get(i).map(String::as_str).unwrap_or("")
}

fn size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (n, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1024),
        'm' => (&s[..s.len() - 1], 1024 * 1024),
        'g' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (&s[..], 1),
    };
    n.parse::<u64>().ok().map(|n| n * mult)
}

/// nginx times (`60`, `60s`, `1m`, `500ms`) → ferry durations.
/// An nginx time (`ngx_parse_time`: `30`, `90s`, `1h30m`, `500ms`; `M` is 30 days, `y` 365) in
/// milliseconds.
fn nginx_ms(s: &str) -> Option<u64> {
    let (mut total, mut n, mut digits) = (0u64, 0u64, false);
    let b = s.trim().as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            digits = true;
            i += 1;
            continue;
        }
        let unit: u64 = match (c, b.get(i + 1)) {
            (b'm', Some(b's')) => {
                i += 1;
                1
            }
            (b'y', _) => 365 * 86_400_000,
            (b'M', _) => 30 * 86_400_000,
            (b'w', _) => 7 * 86_400_000,
            (b'd', _) => 86_400_000,
            (b'h', _) => 3_600_000,
            (b'm', _) => 60_000,
            (b's', _) => 1000,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        (n, digits) = (0, false);
        i += 1;
    }
    if digits {
        total = total.checked_add(n.checked_mul(1000)?)?; // a bare number is seconds
    }
    (!b.is_empty()).then_some(total)
}

/// An nginx time as a ferry duration.
fn time(s: &str) -> Option<String> {
    let ms = nginx_ms(s)?;
    Some(if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") })
}

impl Translator<'_> {
    /// Records a diagnostic once (a level read twice says it once).
    fn diag(&mut self, at: &Pos, level: Level, message: impl Into<String>) {
        let d = Diag { at: at.clone(), level, message: message.into() };
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    /// A file or directory the routes will name must exist where ferry runs; said once per path.
    fn must_exist(&mut self, at: &Pos, path: &str, what: &str) {
        if std::path::Path::new(path).exists() || self.diags.iter().any(|d| d.message.contains(&format!("`{path}`"))) {
            return;
        }
        self.diag(
            at,
            Level::Warning,
            format!("{what} `{path}` does not exist here; ferry check and ferry run need it where ferry runs"),
        );
    }

    /// A regex server_name's named captures become nginx variables; ferry has none of them.
    fn regex_name_captures(&mut self, s: &Server<'_>, re: &str) {
        let Ok(r) = regex::Regex::new(re) else { return };
        let block = s.d.block.as_deref().unwrap_or_default();
        for name in r.capture_names().flatten() {
            let var = format!("${name}");
            if args_mention(block, &var) {
                let message =
                    format!("server_name ~{re}: its capture {var} is used here, and ferry has no such variable");
                self.diag(&s.d.at, Level::Warning, message);
            }
        }
    }

    fn other(&mut self, d: &Directive) {
        // The settings of a handler ferry does not run: its `*_pass` carries the warning.
        let companion = ["fastcgi_", "uwsgi_", "scgi_", "grpc_", "memcached_"]
            .iter()
            .any(|p| d.name.starts_with(p) && !d.name.ends_with("_pass"));
        if companion {
            return self.diag(&d.at, Level::Note, format!("`{}` goes with a handler ferry does not run", d.name));
        }
        if d.name == "satisfy" && arg(d, 0) == "all" {
            return self.diag(
                &d.at,
                Level::Note,
                "satisfy all: nginx's default, and ferry's (access, then credentials)",
            );
        }
        if d.name == "satisfy" {
            let message = "satisfy any: ferry asks for both the address and the credentials; nginx lets either pass";
            return self.diag(&d.at, Level::Warning, message);
        }
        if let Some(why) = refused(&d.name) {
            self.diag(&d.at, Level::Warning, format!("`{}`: {why}", d.name));
        } else {
            self.diag(&d.at, Level::Warning, format!("`{}` is not carried over (ferry has no equivalent yet)", d.name));
        }
    }

    /// A directive that sets something inherited; `true` if it was one.
    fn inherit(&mut self, d: &Directive, inh: &mut Inherited, fresh: &mut Inherited) -> bool {
        match d.name.as_str() {
            "proxy_set_header" => {
                fresh.proxy_set_header.get_or_insert_with(Vec::new).push((arg(d, 0).into(), arg(d, 1).into()))
            }
            "add_header" => fresh.add_header.get_or_insert_with(Vec::new).push((
                arg(d, 0).into(),
                arg(d, 1).into(),
                arg(d, 2) == "always",
            )),
            "proxy_hide_header" => inh.hide_header.push(arg(d, 0).into()),
            "allow" | "deny" => fresh.access.get_or_insert_with(Vec::new).push((d.name == "allow", arg(d, 0).into())),
            "auth_basic" => match arg(d, 0) {
                "off" => inh.auth = None,
                realm => inh.auth = Some((realm.into(), inh.auth.clone().map(|a| a.1).unwrap_or_default())),
            },
            "auth_basic_user_file" => {
                let realm = inh.auth.clone().map(|a| a.0).unwrap_or_else(|| "Restricted".into());
                inh.auth = Some((realm, arg(d, 0).into()));
            }
            "root" => inh.root = Some(self.under_prefix(arg(d, 0).trim_end_matches('/'))),
            "index" => inh.index = Some(d.args.clone()),
            "gzip" => inh.gzip = Some(arg(d, 0) == "on"),
            "gzip_min_length" => inh.gzip_min = size(arg(d, 0)),
            "gzip_static" => inh.gzip_static = Some(arg(d, 0) != "off"),
            "client_max_body_size" => inh.max_body = size(arg(d, 0)),
            "error_page" => {
                let codes: Vec<u16> = d.args.iter().filter_map(|a| a.parse().ok()).collect();
                let uri = d.args.last().cloned().unwrap_or_default();
                fresh.error_pages.get_or_insert_with(Vec::new).push((codes, uri));
            }
            "proxy_redirect" => inh.proxy_redirect_off = arg(d, 0) == "off",
            "absolute_redirect" => inh.absolute_redirect = Some(arg(d, 0) != "off"),
            "port_in_redirect" => inh.port_in_redirect = Some(arg(d, 0) != "off"),
            "proxy_read_timeout" => inh.read_timeout = time(arg(d, 0)),
            "proxy_next_upstream" => {
                let mut on = Vec::new();
                for a in &d.args {
                    let add: &[&'static str] = match a.as_str() {
                        "off" => &[],
                        "error" => &["connect", "reset"],
                        "timeout" => &["timeout"],
                        "invalid_header" => &["reset"],
                        "http_429" => &["429"],
                        "http_500" => &["500"],
                        "http_502" => &["502"],
                        "http_503" => &["503"],
                        "http_504" => &["504"],
                        "non_idempotent" => &["non_idempotent"],
                        other => {
                            self.diag(
                                &d.at,
                                Level::Warning,
                                format!("proxy_next_upstream {other}: ferry does not retry on it"),
                            );
                            &[]
                        }
                    };
                    for x in add {
                        if !on.contains(x) {
                            on.push(*x);
                        }
                    }
                }
                inh.next_upstream = Some(on);
            }
            "limit_req_status" => inh.limit_req_status = arg(d, 0).parse().ok().filter(|c| (400..600).contains(c)),
            "expires" => {
                inh.expires = match arg(d, 0) {
                    "off" => None,
                    "max" => Some("max-age=315360000".into()),
                    "epoch" => Some("no-cache".into()),
                    t if t.starts_with('-') => Some("no-cache".into()),
                    t => match nginx_ms(t) {
                        Some(ms) => Some(format!("max-age={}", ms / 1000)),
                        None => {
                            self.diag(&d.at, Level::Warning, format!("expires {t}: not understood"));
                            None
                        }
                    },
                }
            }
            "proxy_send_timeout" => inh.send_timeout = time(arg(d, 0)),
            "proxy_connect_timeout" => inh.connect_timeout = time(arg(d, 0)),
            _ => return false,
        }
        true
    }

    /// `level` without diagnostics (for a second look at a block already read).
    fn quiet_level(&mut self, block: &[Directive], from: &Inherited) -> Inherited {
        let n = self.diags.len();
        let inh = self.level(block, from);
        self.diags.truncate(n);
        inh
    }

    /// nginx's `html` directory under its prefix, taken to be the main file's directory.
    fn default_root(&self) -> String {
        self.opts.prefix.join("html").display().to_string()
    }

    /// A relative path in nginx.conf is relative to nginx's prefix (the main file's directory).
    fn under_prefix(&self, p: &str) -> String {
        match p.starts_with('/') {
            true => p.to_string(),
            false => self.opts.prefix.join(p).display().to_string(),
        }
    }

    /// Reads a level's own settings over what it inherits (list directives replace as a whole).
    fn level(&mut self, block: &[Directive], from: &Inherited) -> Inherited {
        let mut inh = from.clone();
        let mut fresh = Inherited::default();
        for d in block {
            self.inherit(d, &mut inh, &mut fresh);
        }
        // The inheritance trap: one proxy_set_header (add_header) here drops every one above.
        let set =
            |i: &Inherited| i.proxy_set_header.as_ref().map(|v| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>());
        let added = |i: &Inherited| i.add_header.as_ref().map(|v| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>());
        for (directive, above, here) in
            [("proxy_set_header", set(from), set(&fresh)), ("add_header", added(from), added(&fresh))]
        {
            let (Some(above), Some(here)) = (above, here) else { continue };
            let lost: Vec<&String> = above.iter().filter(|a| !here.iter().any(|h| h.eq_ignore_ascii_case(a))).collect();
            if let (false, Some(first)) = (lost.is_empty(), block.iter().find(|d| d.name == directive)) {
                let lost: Vec<&str> = lost.iter().map(|s| s.as_str()).collect();
                let message = format!(
                    "{directive} here drops the ones set above it ({}): nginx inherits them only into levels that \
                     set none; the import does the same — repeat them here if they were meant",
                    lost.join(", ")
                );
                self.diag(&first.at, Level::Warning, message);
            }
        }
        if fresh.proxy_set_header.is_some() {
            inh.proxy_set_header = fresh.proxy_set_header;
        }
        if fresh.add_header.is_some() {
            inh.add_header = fresh.add_header;
        }
        if fresh.access.is_some() {
            inh.access = fresh.access;
        }
        if fresh.error_pages.is_some() {
            inh.error_pages = fresh.error_pages;
        }
        inh
    }

    fn http(&mut self, http: &Directive, listeners: &mut BTreeMap<String, ListenerOut>) {
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
        // Where nginx's realip module takes the client from (its default header is X-Real-IP).
        let trusted: Vec<String> = match (&real_ip_header, trusted.first()) {
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
        };
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
                Server { d, names, inh: self.level(sblock, &inh) }
            })
            .collect();
        for (si, s) in servers.iter().enumerate() {
            self.server(si, s, &zones, &trusted, listeners);
        }
    }

    fn server(
        &mut self,
        si: usize,
        s: &Server<'_>,
        zones: &BTreeMap<String, String>,
        trusted: &[String],
        listeners: &mut BTreeMap<String, ListenerOut>,
    ) {
        let block = s.d.block.as_deref().unwrap_or_default();
        let mut ports = Vec::new();
        let mut certs = (None, None);
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
                    self.must_exist(&d.at, arg(d, 0), "certificate");
                    certs.0 = Some(arg(d, 0).to_string())
                }
                "ssl_certificate_key" => {
                    self.must_exist(&d.at, arg(d, 0), "key");
                    certs.1 = Some(arg(d, 0).to_string())
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
                "include" => {}
                // The rewrite phase runs before a location is chosen: a server-level return answers
                // every request of the server.
                "return" if early.is_none() => early = Some(self.ret(d, &s.inh)),
                "rewrite"
                    if early.is_none() && matches!(arg(d, 2), "redirect" | "permanent") && !every_path(arg(d, 0)) =>
                {
                    if let Some(r) = self.regex_redirect(d, &s.inh) {
                        ifs.push(("rewrite", d.at.line, r));
                    }
                }
                "rewrite" if early.is_none() => early = self.server_rewrite(d, &s.inh),
                "if" if early.is_none() => match self.if_route(d, &s.inh) {
                    Some(r) => ifs.push(("if", d.at.line, r)),
                    None => self.other(d),
                },
                n if NO_OPS.contains(&n) => {}
                _ if self.inherit(d, &mut s.inh.clone(), &mut scratch) => {}
                _ => self.other(d),
            }
        }
        let early = early.map(|mut lines| {
            lines.extend(response_headers(&s.inh, false));
            lines
        });
        let server_ifs: Vec<RouteOut> = ifs
            .into_iter()
            .map(|(what, line, (matches, lines))| RouteOut {
                matches,
                body: Body {
                    name: format!("{server_label}-{what}{line}"),
                    comment: format!(
                        "# {}:{line}  {what} (server {server_label}, before its locations)",
                        s.d.at.file.display()
                    ),
                    lines,
                    except: None,
                    pre: Vec::new(),
                },
            })
            .collect();
        let routes = match early {
            Some(lines) => vec![RouteOut {
                matches: Vec::new(),
                body: Body {
                    name: format!("{server_label}-all"),
                    comment: format!(
                        "# {}:{}  server {server_label} (answers every request)",
                        s.d.at.file.display(),
                        s.d.at.line
                    ),
                    lines,
                    except: None,
                    pre: Vec::new(),
                },
            }],
            None => self.locations(s, &server_label, zones),
        };
        let routes: Vec<RouteOut> = server_ifs.into_iter().chain(routes).collect();
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
            let l = listeners.entry(bind.clone()).or_insert_with(|| ListenerOut {
                name: name.clone(),
                bind: bind.clone(),
                ..Default::default()
            });
            l.proxy_protocol |= pp;
            if pp && !self.real_ip_proxy_protocol {
                let message = "listen … proxy_protocol without `real_ip_header proxy_protocol`: nginx's client \
                               address ($remote_addr) stays the balancer's, ferry's is the one the PROXY header carries";
                self.diag(&at, Level::Warning, message);
            }
            if l.trusted.is_empty() {
                l.trusted = trusted.to_vec();
            }
            if tls {
                if let (Some(c), Some(k)) = (&certs.0, &certs.1) {
                    if !l.certs.contains(&(c.clone(), k.clone())) {
                        l.certs.push((c.clone(), k.clone()));
                    }
                }
            }
            // nginx's server choice: exact names, then leading wildcards (longest first), then
            // trailing ones (longest first), then regexes in file order, then the default.
            let mut hosts: Vec<(u8, String)> = Vec::new();
            // A name with a variable (a template placeholder) was warned about; it names no host.
            for n in s.names.iter().filter(|n| !n.contains('$')) {
                if let Some(re) = n.strip_prefix('~') {
                    self.regex_name_captures(s, re);
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
            let order = l.routes.len();
            // nginx's default server of a port: the one marked `default_server`, else the first.
            if default || l.default.is_none() {
                match &l.default {
                    Some((true, ..)) if default => self.diag(
                        &at,
                        Level::Warning,
                        format!("a second default server for {bind}; nginx refuses this config"),
                    ),
                    _ => {
                        let mut text = render_routes(&routes, None, &origin);
                        text.push_str(&unmatched(&server_label, None));
                        l.default = Some((default, text, si));
                    }
                }
            }
            for (k, h) in &hosts {
                let mut text = render_routes(&routes, Some(h), &origin);
                text.push_str(&unmatched(&server_label, Some(h)));
                // Wildcards: the longest first, whatever the server order.
                let order = if matches!(k, 1 | 2) { usize::MAX - h.len() } else { order };
                l.routes.push((*k, order, text, si));
            }
        }
    }

    /// One level of `location` blocks (and, under prefix locations, their nested ones): nginx's
    /// view of them, and their directives in the same shape.
    fn read_locations<'d>(&mut self, block: &'d [Directive]) -> (Vec<Location>, Vec<Node<'d>>) {
        let mut locs: Vec<Location> = Vec::new();
        let mut found: Vec<Node<'d>> = Vec::new();
        for d in block.iter().filter(|d| d.name == "location") {
            let (kind, name) = match (arg(d, 0), d.args.len()) {
                ("=", 2) => (Kind::Exact, arg(d, 1).to_string()),
                ("^~", 2) => (Kind::Prefix { noregex: true }, arg(d, 1).to_string()),
                (m @ ("~" | "~*"), 2) => {
                    let pat = if m == "~*" { format!("(?i){}", arg(d, 1)) } else { arg(d, 1).to_string() };
                    match regex::Regex::new(&pat) {
                        Ok(re) => (Kind::Regex(re), pat),
                        Err(e) => {
                            self.diag(
                                &d.at,
                                Level::Warning,
                                format!(
                                    "location regex `{}` is not valid for ferry ({}); skipped",
                                    arg(d, 1),
                                    one_line(&e)
                                ),
                            );
                            continue;
                        }
                    }
                }
                (n, 1) if n.starts_with('@') => continue, // named: reached by try_files/error_page only
                (n, 1) => (Kind::Prefix { noregex: false }, n.to_string()),
                _ => {
                    self.diag(&d.at, Level::Warning, format!("location {}: not understood; skipped", d.args.join(" ")));
                    continue;
                }
            };
            // Two locations that can never both match.
            let twin = locs.iter().zip(&found).find(|(l, _)| {
                l.name == name
                    && matches!(
                        (&l.kind, &kind),
                        (Kind::Regex(_), Kind::Regex(_))
                            | (Kind::Exact, Kind::Exact)
                            | (Kind::Prefix { .. }, Kind::Prefix { .. })
                    )
            });
            if let Some((l, first)) = twin {
                let message = match l.kind {
                    Kind::Regex(_) => format!(
                        "location {} can never match: the same regex at line {} takes every path first",
                        d.args.join(" "),
                        first.d.at.line
                    ),
                    _ => format!(
                        "location {} is defined twice (first at line {}): nginx refuses the config (duplicate location); \
                         the first is imported",
                        d.args.join(" "),
                        first.d.at.line
                    ),
                };
                self.diag(&d.at, Level::Warning, message);
                continue;
            }
            let lblock = d.block.as_deref().unwrap_or_default();
            let (nested, kids) = match (&kind, lblock.iter().any(|x| x.name == "location")) {
                (_, false) => (Vec::new(), Vec::new()),
                (Kind::Prefix { .. }, true) => self.read_locations(lblock),
                _ => {
                    let message = "locations nested in a regex or exact location are not carried over; the outer one is imported alone";
                    self.diag(&d.at, Level::Warning, message);
                    (Vec::new(), Vec::new())
                }
            };
            let proxies = lblock.iter().any(|x| x.name == "proxy_pass");
            locs.push(Location { auto_redirect: proxies && name.ends_with('/'), kind, name, nested });
            found.push(Node { d, kids });
        }
        (locs, found)
    }

    /// Route bodies for every location of a level and below, by path; `parent`: what the level
    /// inherits.
    #[allow(clippy::too_many_arguments)]
    fn bodies(
        &mut self,
        locs: &[Location],
        nodes: &[Node<'_>],
        at: &[usize],
        parent: &Inherited,
        label: &str,
        maps: (&BTreeMap<String, String>, &BTreeMap<String, String>),
        out: &mut BTreeMap<Vec<usize>, Body>,
    ) {
        for (i, (l, n)) in locs.iter().zip(nodes).enumerate() {
            let mut path = at.to_vec();
            path.push(i);
            out.insert(path.clone(), self.location(n.d, &l.kind, &l.name, parent, label, maps));
            if !l.nested.is_empty() {
                let inh = self.quiet_level(n.d.block.as_deref().unwrap_or_default(), parent);
                self.bodies(&l.nested, &n.kids, &path, &inh, label, maps, out);
            }
        }
    }

    /// The server's locations as route bodies, in ferry's order (host added per server_name).
    fn locations(&mut self, s: &Server<'_>, label: &str, zones: &BTreeMap<String, String>) -> Vec<RouteOut> {
        let block = s.d.block.as_deref().unwrap_or_default();
        let (locs, nodes) = self.read_locations(block);
        // error_page URIs are served by the location nginx picks for them (internally redirected):
        // its root gives the file.
        let mut pages = BTreeMap::new();
        let mut uris: Vec<String> = s.inh.error_pages.clone().unwrap_or_default().into_iter().map(|(_, u)| u).collect();
        let mut stack: Vec<(&Node<'_>, Inherited)> = nodes.iter().map(|n| (n, s.inh.clone())).collect();
        while let Some((n, parent)) = stack.pop() {
            let inh = self.quiet_level(n.d.block.as_deref().unwrap_or_default(), &parent);
            uris.extend(inh.error_pages.clone().unwrap_or_default().into_iter().map(|(_, u)| u));
            stack.extend(n.kids.iter().map(|k| (k, inh.clone())));
        }
        uris.retain(|u| u.starts_with('/') && !u.contains('$'));
        uris.sort();
        uris.dedup();
        for uri in uris {
            let root = match super::locations::choose(&locs, &uri) {
                super::locations::Choice::Location(v) => {
                    // What the chosen location inherits, down its path.
                    let (mut inh, mut level) = (s.inh.clone(), &nodes[..]);
                    let mut last = None;
                    for &i in &v {
                        let n = &level[i];
                        inh = self.quiet_level(n.d.block.as_deref().unwrap_or_default(), &inh);
                        last = Some(n.d);
                        level = &n.kids;
                    }
                    let lblock = last.and_then(|d| d.block.as_deref()).unwrap_or_default();
                    if lblock.iter().any(|x| matches!(x.name.as_str(), "proxy_pass" | "return" | "alias")) {
                        continue;
                    }
                    inh.root
                }
                _ => s.inh.root.clone(),
            };
            let root = root.unwrap_or_else(|| self.default_root());
            pages.insert(uri.clone(), format!("{root}{uri}"));
        }
        let mut bodies = BTreeMap::new();
        self.bodies(&locs, &nodes, &[], &s.inh, label, (zones, &pages), &mut bodies);
        let rules = match order::rules(&locs) {
            Ok(r) => r,
            Err(_) => return Vec::new(),
        };
        rules
            .into_iter()
            .map(|r| {
                let mut m = Vec::new();
                if let Some(e) = &r.exact {
                    m.push(format!("path_exact: {}", q(e)));
                }
                if let Some(p) = &r.starts_with {
                    m.push(format!("path_starts_with: {}", q(p)));
                }
                if let Some(i) = &r.regex {
                    m.push(format!("path_regex: {}", q(&order::at(&locs, i).name)));
                }
                match r.target {
                    Target::Location(i) => RouteOut { matches: m, body: bodies[&i].clone() },
                    Target::Redirect(i) => {
                        let (l, body) = (order::at(&locs, &i), &bodies[&i]);
                        RouteOut {
                            matches: m,
                            body: Body {
                                name: format!("{label}-{}-slash", l.name.trim_matches('/')),
                                comment: body.comment.clone() + " (nginx adds the `/`)",
                                // Before access checks, as nginx's; the location's add_header still apply.
                                lines: std::iter::once(format!(
                                    "redirect: {{ to: {}, status: 301 }}",
                                    q(&absolute(&format!("{}$is_args$args", l.name), &s.inh))
                                ))
                                .chain(body.lines.iter().filter(|l| l.starts_with("response_headers:")).cloned())
                                .collect(),
                                except: None,
                                pre: Vec::new(),
                            },
                        }
                    }
                }
            })
            .collect()
    }

    fn location(
        &mut self,
        d: &Directive,
        kind: &Kind,
        name: &str,
        server: &Inherited,
        label: &str,
        maps: (&BTreeMap<String, String>, &BTreeMap<String, String>),
    ) -> Body {
        let (zones, pages) = maps;
        let block = d.block.as_deref().unwrap_or_default();
        let inh = self.level(block, server);
        let mut lines = Vec::new();
        let mut target = false;
        let mut alias = false;
        let mut scratch = Inherited::default();
        let (rewrite, early, redirects) = self.location_rewrites(block, &inh);
        // `if (COND) { return …; }` runs in the rewrite phase, before the location's handler and
        // before access checks: a route of its own ahead of the location's.
        let mut pre = Vec::new();
        // A path_regex of its own goes with a prefix or exact location, not with a regex one.
        match (kind, redirects.is_empty()) {
            (_, true) => {}
            (Kind::Regex(_), false) => {
                let message = "a rewrite redirect of some paths inside a regex location is not carried over";
                self.diag(&d.at, Level::Warning, message);
            }
            _ => pre.extend(redirects.into_iter().map(|r| ("rewrite".to_string(), r))),
        }
        let mut answered = false;
        for x in block {
            match x.name.as_str() {
                "return" => answered = true,
                "if" if !answered => match self.if_route(x, &inh) {
                    Some(r) => pre.push(("if".to_string(), r)),
                    None => self.other(x),
                },
                "if" => self.diag(&x.at, Level::Warning, "if after the location's return never runs; skipped"),
                _ => {}
            }
        }
        let early_redirect = early.is_some();
        if let Some(r) = early {
            target = true;
            lines.extend(r);
        }
        for x in block {
            match x.name.as_str() {
                "proxy_pass" if target => {}
                "proxy_pass" => {
                    target = true;
                    lines.extend(self.proxy_pass(x, kind, name, &inh, rewrite.as_deref()));
                }
                "return" => {
                    target = true;
                    lines.extend(self.ret(x, &inh));
                }
                // Handlers ferry cannot run: the location answers 502, with the warning.
                "fastcgi_pass"
                | "uwsgi_pass"
                | "scgi_pass"
                | "grpc_pass"
                | "memcached_pass"
                | "content_by_lua"
                | "content_by_lua_block"
                | "content_by_lua_file"
                | "js_content" => {
                    target = true;
                    self.other(x);
                    lines.push("respond: { status: 502 }".into());
                }
                "alias" => {
                    target = true;
                    alias = true;
                    self.must_exist(&x.at, arg(x, 0), "static directory");
                    lines.push(format!("static: {{ alias: {} }}", q(arg(x, 0).trim_end_matches('/'))));
                }
                "try_files" => {}
                "limit_req" => {
                    let zone = x.args.iter().find_map(|a| a.strip_prefix("zone=")).unwrap_or("");
                    let burst = x.args.iter().find_map(|a| a.strip_prefix("burst=")).unwrap_or("0");
                    match zones.get(zone).and_then(|r| {
                        r.strip_suffix("r/s")
                            .map(|n| format!("{n}/s"))
                            .or_else(|| r.strip_suffix("r/m").map(|n| format!("{n}/m")))
                    }) {
                        Some(rate) => {
                            let status = inh.limit_req_status.unwrap_or(503);
                            lines.push(format!("rate_limit: {{ rate: {rate}, burst: {burst}, status: {status} }}"))
                        }
                        None => self.diag(
                            &x.at,
                            Level::Warning,
                            format!("limit_req zone={zone}: its limit_req_zone was not found"),
                        ),
                    }
                    if !x.args.iter().any(|a| a == "nodelay") {
                        self.diag(
                            &x.at,
                            Level::Warning,
                            "limit_req without nodelay delays requests past the rate; ferry refuses them at once",
                        );
                    }
                }
                "rewrite" | "limit_except" | "if" => {}
                "location" | "include" => {}
                n if NO_OPS.contains(&n) => {}
                _ if self.inherit(x, &mut inh.clone(), &mut scratch) => {}
                _ => self.other(x),
            }
        }
        if !target {
            // Files from root (nginx's default handler).
            let root = inh.root.clone().unwrap_or_else(|| self.default_root());
            self.must_exist(&d.at, &root, "static directory");
            let mut st = vec![format!("root: {}", q(&root))];
            if let Some(index) = &inh.index {
                let list: Vec<String> = index.iter().map(|i| q(i)).collect();
                st.push(format!("index: [{}]", list.join(", ")));
            }
            if let Some(tf) = block.iter().find(|x| x.name == "try_files") {
                let last = tf.args.last().map(String::as_str).unwrap_or("");
                let ok_shape =
                    tf.args.iter().take(tf.args.len().saturating_sub(1)).all(|a| a == "$uri" || a == "$uri/");
                if ok_shape && last.starts_with('/') && !last.contains('$') {
                    st.push(format!("fallback: {}", q(last)));
                } else if !(ok_shape && last == "=404") {
                    self.diag(
                        &tf.at,
                        Level::Warning,
                        format!("try_files {}: only `$uri $uri/ /FILE` is carried over", tf.args.join(" ")),
                    );
                }
            }
            if inh.gzip_static == Some(false) {
                st.push("precompressed: false".into());
            }
            if let Some(c) = &inh.expires {
                st.push(format!("cache: {}", q(c)));
                st.push(format!("html_cache: {}", q(c)));
            }
            lines.push(format!("static: {{ {} }}", st.join(", ")));
        }
        let base = lines.clone();
        self.common(&d.at, &inh, &mut lines, !target || alias, pages);
        // A location answered by `return` (or a rewrite redirect) answers in nginx's rewrite phase,
        // before access, limit_req and auth_basic run.
        if answered || early_redirect {
            lines.retain(|l| !["access:", "basic_auth:", "rate_limit:"].iter().any(|p| l.starts_with(p)));
        }
        // limit_except METHODS { allow/deny, auth_basic }: those methods as the location says,
        // every other one with the block's access rules and credentials over the location's.
        let except = block.iter().find(|x| x.name == "limit_except" && x.block.is_some()).map(|le| {
            let inner = le.block.as_deref().unwrap_or_default();
            for x in inner {
                if !matches!(x.name.as_str(), "allow" | "deny" | "auth_basic" | "auth_basic_user_file") {
                    self.diag(&x.at, Level::Warning, format!("`{}` inside limit_except is not carried over", x.name));
                }
            }
            let mut methods: Vec<String> = le.args.iter().map(|m| m.to_ascii_uppercase()).collect();
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".into());
            }
            let le_inh = self.level(inner, &inh);
            let mut other = base;
            self.common(&le.at, &le_inh, &mut other, !target || alias, pages);
            (methods, other)
        });
        let shown = match kind {
            Kind::Exact => format!("= {name}"),
            Kind::Prefix { noregex: true } => format!("^~ {name}"),
            Kind::Prefix { noregex: false } => name.to_string(),
            Kind::Regex(_) => format!("{} {}", arg(d, 0), arg(d, 1)),
        };
        let slug: String = match kind {
            Kind::Regex(_) => format!("regex{}", d.at.line),
            _ => name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect(),
        };
        let slug = slug.trim_matches('-').to_string();
        Body {
            name: if slug.is_empty() { label.to_string() } else { format!("{label}-{slug}") },
            comment: format!("# {}:{}  location {shown}", d.at.file.display(), d.at.line),
            lines,
            except,
            pre,
        }
    }

    /// Settings every route of a location carries: headers, access, auth, body limit, compress.
    fn common(
        &mut self,
        at: &Pos,
        inh: &Inherited,
        lines: &mut Vec<String>,
        files: bool,
        pages: &BTreeMap<String, String>,
    ) {
        if let Some(list) = &inh.access {
            let rules: Vec<String> = list
                .iter()
                .map(|(allow, a)| format!("{{ {}: {} }}", if *allow { "allow" } else { "deny" }, q(a)))
                .collect();
            lines.push(format!("access: [{}]", rules.join(", ")));
        }
        if let Some((_, file)) = &inh.auth {
            self.must_exist(at, file, "htpasswd file");
        }
        if let Some((realm, file)) = &inh.auth {
            lines.push(format!("basic_auth: {{ realm: {}, htpasswd: {} }}", q(realm), q(file)));
        }
        // nginx's default client_max_body_size is 1m (ferry's static routes take no body anyway).
        match inh.max_body.unwrap_or(1024 * 1024) {
            0 => {}
            _ if files => {}
            n => lines.push(format!("max_body_bytes: {n}")),
        }
        lines.extend(response_headers(inh, files));
        // error_page CODE… /FILE.html: the file nginx would serve for it, for ferry's own errors.
        let pages: Vec<String> = inh
            .error_pages
            .iter()
            .flatten()
            .filter_map(|(codes, uri)| Some((codes, pages.get(uri)?.clone())))
            .flat_map(|(codes, file)| codes.iter().filter(|c| (400..600).contains(*c)).map(move |c| (c, file.clone())))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(c, file)| {
                self.must_exist(at, &file, "error page");
                format!("{c}: {}", q(&file))
            })
            .collect();
        if !pages.is_empty() {
            lines.push(format!("error_pages: {{ {} }}", pages.join(", ")));
        }
        if inh.gzip == Some(true) {
            lines.push("compress: true".into());
            if let Some(n) = inh.gzip_min {
                lines.push(format!("compress_min_bytes: {n}"));
            }
        }
    }
}

/// A level's `add_header`, `expires` and `proxy_hide_header` as a `response_headers` line.
fn response_headers(inh: &Inherited, files: bool) -> Option<String> {
    {
        // add_header … always: every answer; without `always` (and `expires`): nginx's success
        // statuses only.
        let header = |(k, v, _): &(String, String, bool)| format!("{}: {}", q(k), q(v));
        let always: Vec<String> = inh.add_header.iter().flatten().filter(|h| h.2).map(header).collect();
        let mut success: Vec<String> = inh.add_header.iter().flatten().filter(|h| !h.2).map(header).collect();
        if let (Some(c), false) = (&inh.expires, files) {
            success.push(format!("Cache-Control: {}", q(c)));
        }
        success.dedup();
        let remove: Vec<String> = inh.hide_header.iter().map(|h| q(h)).collect();
        let mut parts = Vec::new();
        if !always.is_empty() {
            parts.push(format!("add: {{ {} }}", always.join(", ")));
        }
        if !remove.is_empty() {
            parts.push(format!("remove: [{}]", remove.join(", ")));
        }
        if !success.is_empty() {
            parts.push(format!("on_success: {{ add: {{ {} }} }}", success.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("response_headers: {{ {} }}", parts.join(", ")))
    }
}

impl Translator<'_> {
    /// `rewrite ^(.*)$ https://$host$1 permanent;` and the like: a redirect of every request.
    fn server_rewrite(&mut self, x: &Directive, inh: &Inherited) -> Option<Vec<String>> {
        let every = every_path(arg(x, 0));
        let status = match arg(x, 2) {
            "permanent" => 301,
            "redirect" => 302,
            _ => 0,
        };
        let to = arg(x, 1);
        let target_ok = ["http://", "https://", "$", "/"].iter().any(|p| to.starts_with(p));
        if !every || status == 0 || !target_ok {
            self.diag(
                &x.at,
                Level::Warning,
                format!("rewrite {}: only a redirect of every path is carried over here", x.args.join(" ")),
            );
            return None;
        }
        // The whole path was captured (`$1`); nginx's `$uri` is that path.
        let mut to = to.replace("$1", "$uri");
        if arg(x, 0) == "^/(.*)$" {
            to = to.replace("/$uri", "$uri");
        }
        match to.strip_suffix('?') {
            Some(t) => to = t.to_string(),
            None if !to.contains('?') && !to.contains("$request_uri") => to.push_str("$is_args$args"),
            None => {}
        }
        Some(vec![format!("redirect: {{ to: {}, status: {status} }}", q(&absolute(&to, inh)))])
    }

    fn ret(&mut self, x: &Directive, inh: &Inherited) -> Vec<String> {
        let code: u16 = arg(x, 0).parse().unwrap_or(0);
        match (code, x.args.len()) {
            (301 | 302 | 303 | 307 | 308, 2) => {
                vec![format!("redirect: {{ to: {}, status: {code} }}", q(&absolute(arg(x, 1), inh)))]
            }
            (0, 1) => vec![format!("redirect: {{ to: {}, status: 302 }}", q(arg(x, 0)))],
            (444, 1) => {
                let message = "return 444: nginx closes the connection without an answer; ferry answers 444";
                self.diag(&x.at, Level::Warning, message);
                vec!["respond: { status: 444 }".into()]
            }
            (c, 1) if (100..600).contains(&c) => vec![format!("respond: {{ status: {c} }}")],
            (c, 2) if (100..600).contains(&c) => vec![format!("respond: {{ status: {c}, body: {} }}", q(arg(x, 1)))],
            _ => {
                self.diag(&x.at, Level::Warning, format!("return {}: not understood", x.args.join(" ")));
                vec!["respond: { status: 500 }".into()]
            }
        }
    }

    /// `if ($request_method = M)` / `if ($http_NAME = VALUE)` holding a `return` (and
    /// `add_header`s): the extra matches and the lines of a route answering it. `None`: not
    /// expressible (the caller warns).
    fn if_route(&mut self, x: &Directive, inh: &Inherited) -> Option<Ahead> {
        let cond = x.args.join(" ");
        let cond = cond.trim().strip_prefix('(')?.strip_suffix(')')?.trim();
        let parts: Vec<&str> = cond.split_whitespace().collect();
        let [var, "=", value] = parts.as_slice() else { return None };
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        let m = if *var == "$request_method" {
            format!("methods: [{}]", q(value))
        } else if let Some(h) = var.strip_prefix("$http_") {
            format!("headers: {{ {}: {} }}", q(&h.replace('_', "-")), q(value))
        } else {
            return None;
        };
        let block = x.block.as_deref()?;
        let ret = block.iter().find(|d| d.name == "return")?;
        if block.iter().any(|d| !matches!(d.name.as_str(), "return" | "add_header")) {
            return None;
        }
        // An if block's add_headers are the answer's own (the CORS preflight): no inheritance warning.
        let if_inh = self.quiet_level(block, inh);
        let mut lines = self.ret(ret, inh);
        lines.extend(response_headers(&if_inh, false));
        Some((vec![m], lines))
    }

    /// A location's `rewrite`s: one `rewrite REGEX TARGET break` becomes the route's `rewrite` for
    /// its `proxy_pass` (nginx then sends the rewritten path as it is); a `redirect`/`permanent`
    /// of every path answers the location (second value). Anything else warns.
    /// A location's `rewrite`s, in order: a `redirect`/`permanent` of every path answers the
    /// location (second value); one of some paths is a route of its own ahead of the location's
    /// (third: its `path_regex` and lines); a final `rewrite REGEX TARGET break` before
    /// `proxy_pass` is the route's `rewrite` (first: nginx then sends the rewritten path as is).
    /// `last` and the rest warn.
    fn location_rewrites(
        &mut self,
        block: &[Directive],
        inh: &Inherited,
    ) -> (Option<String>, Option<Vec<String>>, Vec<Ahead>) {
        let list: Vec<&Directive> = block.iter().filter(|x| x.name == "rewrite").collect();
        let proxies = block.iter().any(|x| x.name == "proxy_pass");
        let (mut rewrite, mut early, mut pre) = (None, None, Vec::new());
        for (i, r) in list.iter().enumerate() {
            if early.is_some() {
                self.diag(&r.at, Level::Warning, "rewrite after a redirect of every path never runs; skipped");
                continue;
            }
            match arg(r, 2) {
                "redirect" | "permanent" if every_path(arg(r, 0)) => early = self.server_rewrite(r, inh),
                "redirect" | "permanent" => pre.extend(self.regex_redirect(r, inh)),
                "break" if proxies && i + 1 == list.len() => {
                    let to = arg(r, 1);
                    if to.contains('?') && !to.ends_with('?') {
                        let message = "rewrite with new arguments: nginx appends the request's own after them, \
                                       ferry's rewrite replaces them";
                        self.diag(&r.at, Level::Warning, message);
                    }
                    if to.bytes().any(|b| b == b'$')
                        && to.split('$').skip(1).any(|v| !v.starts_with(|c: char| c.is_ascii_digit()))
                    {
                        self.diag(
                            &r.at,
                            Level::Warning,
                            format!("rewrite {to}: only $1…$9 are carried over in its target"),
                        );
                    }
                    rewrite = Some(format!("rewrite: {{ regex: {}, to: {} }}", q(arg(r, 0)), q(to)));
                }
                flag => {
                    let why = match (flag, proxies) {
                        ("last" | "", _) => "it searches the locations again with the new path",
                        ("break", false) => "break outside a proxy_pass location",
                        _ => "a break before other rewrites",
                    };
                    let message = format!("rewrite {}: not carried over ({why})", r.args.join(" "));
                    self.diag(&r.at, Level::Warning, message);
                }
            }
        }
        (rewrite, early, pre)
    }

    /// `rewrite REGEX TARGET redirect|permanent` for the paths REGEX matches: (the `path_regex`
    /// match, the redirect) — its captures fill `$1`…`$9` of the target.
    fn regex_redirect(&mut self, x: &Directive, inh: &Inherited) -> Option<Ahead> {
        let status = if arg(x, 2) == "permanent" { 301 } else { 302 };
        if let Err(e) = regex::Regex::new(arg(x, 0)) {
            let message =
                format!("rewrite {}: its regex is not valid for ferry ({}); skipped", arg(x, 0), one_line(&e));
            self.diag(&x.at, Level::Warning, message);
            return None;
        }
        let mut to = arg(x, 1).to_string();
        // nginx keeps the request's arguments unless the target ends in `?`.
        match to.strip_suffix('?') {
            Some(t) => to = t.to_string(),
            None if !to.contains('?') => to.push_str("$is_args$args"),
            None => {
                let message =
                    "rewrite with new arguments: nginx appends the request's own after them; ferry's redirect does not";
                self.diag(&x.at, Level::Warning, message);
            }
        }
        let lines = vec![format!("redirect: {{ to: {}, status: {status} }}", q(&absolute(&to, inh)))];
        Some((vec![format!("path_regex: {}", q(arg(x, 0)))], lines))
    }

    fn proxy_pass(
        &mut self,
        x: &Directive,
        kind: &Kind,
        loc: &str,
        inh: &Inherited,
        rewrite: Option<&str>,
    ) -> Vec<String> {
        let url = arg(x, 0);
        let (scheme, rest) = match url.split_once("://") {
            Some(("http", r)) => ("http", r),
            Some(("https", r)) => ("https", r),
            _ => {
                self.diag(&x.at, Level::Warning, format!("proxy_pass {url}: not an http(s) URL; skipped"));
                return vec!["respond: { status: 502 }".into()];
            }
        };
        if url.contains('$') {
            let message =
                format!("proxy_pass {url}: variables in the target are not carried over; the location answers 502");
            self.diag(&x.at, Level::Warning, message);
            return vec!["respond: { status: 502 }".into()];
        }
        let (hostport, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let mut lines = Vec::new();
        let (backend, proxy_host) = self.backend_for(x, hostport, scheme, inh);
        if let Some(r) = rewrite {
            // nginx sends the rewritten path as it is; the URI part counts only where the
            // rewrite's regex does not match.
            if uri.is_some_and(|u| u != "/") {
                let message = "proxy_pass with a URI after `rewrite … break`: nginx replaces the prefix \
                               only for paths the rewrite does not match; not carried over";
                self.diag(&x.at, Level::Warning, message);
            }
            lines.push(r.to_string());
        } else if let Some(uri) = uri {
            match kind {
                Kind::Regex(_) => self.diag(
                    &x.at,
                    Level::Warning,
                    "proxy_pass with a URI in a regex location: nginx refuses it; the URI is dropped",
                ),
                Kind::Exact => lines.push(format!("rewrite: {{ regex: '^.*$', to: {} }}", q(uri))),
                Kind::Prefix { .. } => lines.push(format!(
                    "rewrite: {{ regex: {}, to: {} }}",
                    q(&format!("^{}(.*)$", regex_escape(loc))),
                    q(&format!("{uri}$1"))
                )),
            }
        }
        // nginx sends Host: $proxy_host, adds no X-Forwarded-* unless told to, and passes the
        // client's own forwarding headers as they came.
        let mut set: Vec<(String, String)> = vec![("Host".into(), proxy_host)];
        for (k, v) in inh.proxy_set_header.iter().flatten() {
            if k.eq_ignore_ascii_case("Connection") || k.eq_ignore_ascii_case("Upgrade") {
                continue; // ferry handles upgrades and keep-alive itself
            }
            set.retain(|(s, _)| !s.eq_ignore_ascii_case(k));
            set.push((k.clone(), v.clone()));
        }
        let set: Vec<String> = set.iter().map(|(k, v)| format!("{}: {}", q(k), q(v))).collect();
        lines.push(format!("request_headers: {{ set: {{ {} }} }}", set.join(", ")));
        lines.push("forwarded_headers: false".into());
        lines.push(format!("backend: {}", q(&backend)));
        lines
    }

    /// The backend for `host[:port]` (an upstream block, a Service with --namespace, or an
    /// address) and nginx's `$proxy_host` for it.
    fn backend_for(&mut self, x: &Directive, hostport: &str, scheme: &str, inh: &Inherited) -> (String, String) {
        let mut settings = Vec::new();
        if let Some(t) = &inh.read_timeout {
            settings.push(format!("read_timeout: {t}"));
        }
        if let Some(t) = &inh.send_timeout {
            settings.push(format!("send_timeout: {t}"));
        }
        if let Some(t) = &inh.connect_timeout {
            settings.push(format!("connect_timeout: {t}"));
        }
        if inh.proxy_redirect_off {
            settings.push("rewrite_location: false".into());
        }
        match inh.next_upstream.as_deref() {
            None => {}
            Some([]) => settings.push("retries: 0".into()),
            Some(on) => settings.push(format!("retry_on: [{}]", on.join(", "))),
        }
        if scheme == "https" {
            self.diag(&x.at, Level::Warning, "proxy_pass https://: set the backend's `tls: { ca: FILE }` by hand");
        }
        if let Some(up) = self.upstreams.get(hostport).cloned() {
            let mut lines = Vec::new();
            let mut addrs = Vec::new();
            let ublock = up.block.as_deref().unwrap_or_default();
            for s in ublock {
                match s.name.as_str() {
                    "server" => {
                        let a = arg(s, 0);
                        let a = if a.contains(':') { a.to_string() } else { format!("{a}:80") };
                        let mut fields = vec![format!("address: {}", q(&a))];
                        for p in s.args.iter().skip(1) {
                            if let Some(w) = p.strip_prefix("weight=") {
                                fields.push(format!("weight: {w}"));
                            } else if p == "backup" {
                                fields.push("backup: true".into());
                            } else if p == "down" {
                                fields.push("down: true".into());
                            } else if let Some(m) = p.strip_prefix("max_fails=") {
                                if m != "0" {
                                    lines.push(format!("eject_after: {m}"));
                                }
                            } else if let Some(t) = p.strip_prefix("fail_timeout=") {
                                if let Some(t) = time(t) {
                                    lines.push(format!("eject_for: {t}"));
                                }
                            }
                        }
                        addrs.push(format!("{{ {} }}", fields.join(", ")));
                    }
                    "ip_hash" => lines.push("balance: client_ip".into()),
                    "hash" if arg(s, 0) == "$remote_addr" => lines.push("balance: client_ip".into()),
                    "least_conn" => lines.push("balance: least_request".into()),
                    "keepalive" | "keepalive_timeout" | "keepalive_requests" | "zone" => {}
                    _ => self.other(s),
                }
            }
            lines.sort();
            lines.dedup();
            // One member that is a Service: ferry follows the Service's ready pods itself.
            let servers: Vec<&Directive> = ublock.iter().filter(|s| s.name == "server").collect();
            let one_service = match servers.as_slice() {
                [s] if s.args.iter().skip(1).all(|p| {
                    p.starts_with("weight=") || p.starts_with("max_fails") || p.starts_with("fail_timeout")
                }) =>
                {
                    let a = arg(s, 0);
                    let (host, port) = a.rsplit_once(':').unwrap_or((a, "80"));
                    self.service_of(host).map(|svc| vec![format!("service: {}", q(&svc)), format!("port: {port}")])
                }
                _ => None,
            };
            let mut all = one_service.unwrap_or_else(|| vec![format!("addresses: [{}]", addrs.join(", "))]);
            all.extend(lines);
            all.extend(settings);
            let name = self.add_backend(hostport, all);
            return (name, hostport.to_string());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
            _ => (hostport, if scheme == "https" { "443" } else { "80" }),
        };
        let service = self.service_of(host);
        let base = format!("{}-{port}", service.as_deref().unwrap_or(host));
        let mut lines = match service {
            Some(s) => vec![format!("service: {}", q(&s)), format!("port: {port}")],
            None => vec![format!("addresses: [{}]", q(&format!("{host}:{port}")))],
        };
        lines.extend(settings);
        let name = self.add_backend(&base, lines);
        let default_port = (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
        // nginx's $proxy_host drops the scheme's own port, written or not.
        (name, if default_port { host.to_string() } else { hostport.to_string() })
    }

    /// With --namespace, the Service a host name names (`svc`, `svc.ns`, `svc.ns.svc`,
    /// `svc.ns.svc.cluster.local`) as `svc.ns`.
    fn service_of(&self, host: &str) -> Option<String> {
        let ns = self.opts.namespace.as_deref()?;
        let parts: Vec<&str> = host.split('.').collect();
        let svc = |n: &str| format!("{}.{}", parts[0], n);
        match parts.as_slice() {
            [_] => Some(svc(ns)),
            [_, n] => Some(svc(n)),
            [_, n, "svc"] | [_, n, "svc", "cluster", "local"] => Some(svc(n)),
            _ => None,
        }
        .filter(|_| host.parse::<std::net::IpAddr>().is_err())
    }

    /// A backend named after `base`; the same settings share one, different ones get `-2`, `-3`….
    fn add_backend(&mut self, base: &str, lines: Vec<String>) -> String {
        let base: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '-' })
            .collect();
        for n in 1.. {
            let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            match self.backends.get(&name) {
                Some(b) if b.lines == lines => return name,
                Some(_) => continue,
                None => {
                    self.backends.insert(name.clone(), BackendOut { lines });
                    return name;
                }
            }
        }
        unreachable!()
    }

    fn stream(&mut self, stream: &Directive, listeners: &mut BTreeMap<String, ListenerOut>) {
        let block = stream.block.as_deref().unwrap_or_default();
        for d in block {
            if d.name == "upstream" {
                self.upstreams.insert(arg(d, 0).into(), d.clone());
            }
        }
        for s in block.iter().filter(|d| d.name == "server") {
            let sblock = s.block.as_deref().unwrap_or_default();
            let listen = sblock.iter().find(|x| x.name == "listen").map(|x| arg(x, 0).to_string());
            let pass = sblock.iter().find(|x| x.name == "proxy_pass").map(|x| arg(x, 0).to_string());
            let (Some(listen), Some(pass)) = (listen, pass) else {
                self.diag(&s.at, Level::Warning, "stream server without listen and proxy_pass; skipped");
                continue;
            };
            let Some(bind) = listen_bind(&listen) else {
                self.diag(&s.at, Level::Warning, format!("listen {listen}: not carried over"));
                continue;
            };
            let (backend, _) = self.backend_for(s, &pass, "tcp", &Inherited::default());
            let port = bind.rsplit(':').next().unwrap_or("0").to_string();
            listeners.insert(
                bind.clone(),
                ListenerOut { name: format!("tcp-{port}"), bind, tcp_backend: Some(backend), ..Default::default() },
            );
        }
    }
}

/// A route ahead of a location's (an `if` or a rewrite redirect): its extra matches, its lines.
type Ahead = (Vec<String>, Vec<String>);

#[derive(Clone)]
struct Body {
    name: String,
    comment: String,
    lines: Vec<String>,
    /// `limit_except`: the methods `lines` are for, and the lines for every other method.
    except: Option<(Vec<String>, Vec<String>)>,
    /// `if (COND) { … return …; }` before the location's own handling: (extra matches, lines).
    /// (name suffix, extra matches, lines)
    pre: Vec<(String, Ahead)>,
}

/// A `location` directive and the ones nested in it, in the shape of [`Location`]'s tree.
struct Node<'d> {
    d: &'d Directive,
    kids: Vec<Node<'d>>,
}

struct RouteOut {
    matches: Vec<String>,
    body: Body,
}

/// Variables of nginx's own (http and stream modules) and the prefixes of its families.
const NGINX_VARIABLES: &[&str] = &[
    "args",
    "binary_remote_addr",
    "body_bytes_sent",
    "bytes_sent",
    "bytes_received",
    "connection",
    "connection_requests",
    "connection_time",
    "content_length",
    "content_type",
    "date_gmt",
    "date_local",
    "document_root",
    "document_uri",
    "fastcgi_path_info",
    "fastcgi_script_name",
    "gzip_ratio",
    "host",
    "hostname",
    "http2",
    "https",
    "invalid_referer",
    "is_args",
    "limit_conn_status",
    "limit_rate",
    "limit_req_status",
    "msec",
    "msie",
    "nginx_version",
    "pid",
    "pipe",
    "protocol",
    "proxy_add_x_forwarded_for",
    "proxy_host",
    "proxy_port",
    "proxy_protocol_addr",
    "proxy_protocol_port",
    "proxy_protocol_server_addr",
    "proxy_protocol_server_port",
    "query_string",
    "realip_remote_addr",
    "realip_remote_port",
    "realpath_root",
    "remote_addr",
    "remote_port",
    "remote_user",
    "request",
    "request_body",
    "request_body_file",
    "request_completion",
    "request_filename",
    "request_id",
    "request_length",
    "request_method",
    "request_time",
    "request_uri",
    "scheme",
    "secure_link",
    "secure_link_expires",
    "server_addr",
    "server_name",
    "server_port",
    "server_protocol",
    "session_time",
    "slice_range",
    "status",
    "tcpinfo_rtt",
    "tcpinfo_rttvar",
    "tcpinfo_snd_cwnd",
    "tcpinfo_rcv_space",
    "time_iso8601",
    "time_local",
    "uid_got",
    "uid_reset",
    "uid_set",
    "uri",
    "ancient_browser",
    "modern_browser",
    "memcached_key",
    "binary_remote_addr",
];
const NGINX_VARIABLE_PREFIXES: &[&str] = &[
    "http_",
    "sent_http_",
    "sent_trailer_",
    "cookie_",
    "arg_",
    "upstream_",
    "ssl_",
    "geoip_",
    "jwt_",
    "proxy_protocol_tlv_",
];

/// `$name`s that nginx would not know: not its own, not made by `set`, `map`, `geo`,
/// `split_clients`, `js_set`/`perl_set`, nor a regex's named capture (each reported once).
fn unknown_variables(top: &[Directive]) -> Vec<(Pos, String)> {
    fn defined(list: &[Directive], out: &mut std::collections::BTreeSet<String>) {
        for d in list {
            let var = |i: usize| d.args.get(i).and_then(|a| a.strip_prefix('$')).map(|v| v.to_ascii_lowercase());
            let made = match d.name.as_str() {
                "set" | "js_set" | "perl_set" => var(0),
                "map" | "split_clients" => var(1),
                "geo" => var(d.args.len().saturating_sub(1)),
                _ => None,
            };
            out.extend(made);
            for a in &d.args {
                for marker in ["(?<", "(?P<", "(?'"] {
                    for (i, _) in a.match_indices(marker) {
                        let name: String = a[i + marker.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(name.to_ascii_lowercase());
                    }
                }
            }
            if let Some(b) = &d.block {
                defined(b, out);
            }
        }
    }
    fn walk(list: &[Directive], known: &std::collections::BTreeSet<String>, out: &mut Vec<(Pos, String)>) {
        for d in list {
            // A map's or geo's block holds values and patterns, not only variables.
            for a in &d.args {
                let b = a.as_bytes();
                let mut i = 0;
                while let Some(off) = a[i..].find('$') {
                    let start = i + off + 1;
                    let (name, end) = match b.get(start) {
                        Some(b'{') => match a[start + 1..].find('}') {
                            Some(close) => (&a[start + 1..start + 1 + close], start + close + 2),
                            None => ("", start + 1),
                        },
                        _ => {
                            let len =
                                a[start..].bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
                            (&a[start..start + len], start + len)
                        }
                    };
                    i = end.max(start);
                    let lower = name.to_ascii_lowercase();
                    let ours = NGINX_VARIABLES.contains(&lower.as_str())
                        || NGINX_VARIABLE_PREFIXES.iter().any(|p| lower.starts_with(p));
                    if !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && !ours
                        && !known.contains(&lower)
                        && !out.iter().any(|(_, n)| n == name)
                    {
                        out.push((d.at.clone(), name.to_string()));
                    }
                    if i >= a.len() {
                        break;
                    }
                }
            }
            if let (Some(b), false) = (&d.block, matches!(d.name.as_str(), "map" | "geo" | "split_clients" | "types")) {
                walk(b, known, out);
            }
        }
    }
    let mut known = std::collections::BTreeSet::new();
    defined(top, &mut known);
    let mut out = Vec::new();
    walk(top, &known, &mut out);
    out
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

/// Does any argument in `list` (blocks included) use the variable `var` (`$name` or `${name}`)?
fn args_mention(list: &[Directive], var: &str) -> bool {
    let braced = format!("${{{}}}", &var[1..]);
    list.iter().any(|d| {
        d.args.iter().any(|a| {
            a.match_indices(var)
                .any(|(i, _)| !a[i + var.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
                || a.contains(&braced)
        }) || d.block.as_deref().is_some_and(|b| args_mention(b, var))
    })
}

/// The routes after a server's locations: what nginx does with a path no location takes (its
/// static handler under the default `root html`, which has nothing: 404, and 405 for methods
/// other than GET, HEAD and POST), kept to the server's hosts so nothing falls through.
fn unmatched(label: &str, raw: Option<&str>) -> String {
    let (name, host) = match raw {
        Some(h) => (format!("{label}-{}-none", host_label(h)), format!("host: {}, ", q(h))),
        None => (format!("{label}-none"), String::new()),
    };
    let any = match host.is_empty() {
        true => String::new(),
        false => format!("match: {{ {} }}, ", host.trim_end_matches(", ")),
    };
    format!(
        "      # nothing else{}\n      - {{ name: {}, match: {{ {host}methods: [GET, HEAD, POST] }}, respond: {{ status: 404 }} }}\n      - {{ name: {}, {any}respond: {{ status: 405 }} }}\n",
        raw.map(|h| format!(" on {h}")).unwrap_or_default(),
        q(&name),
        q(&format!("{name}-method")),
    )
}

/// A `listen` address as a ferry bind (`80`, `*:80`, `[::]:80` → `0.0.0.0:80`); `None` for a
/// UNIX socket.
fn listen_bind(addr: &str) -> Option<String> {
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

/// Stands for the scheme, host and port nginx puts in front of a redirect to a path of its own
/// (`absolute_redirect on`, `port_in_redirect on`): filled in per listener by [`render_routes`].
const ORIGIN: &str = "\u{1}origin";

/// `ORIGIN` without the port (`port_in_redirect off`).
const ORIGIN_NO_PORT: &str = "\u{1}portless";

/// A redirect target as nginx sends it: a path gets the request's scheme, host and port (as
/// `absolute_redirect` and `port_in_redirect` say).
fn absolute(to: &str, inh: &Inherited) -> String {
    match (to.starts_with('/'), inh.absolute_redirect, inh.port_in_redirect) {
        (false, ..) | (true, Some(false), _) => to.to_string(),
        (true, _, Some(false)) => format!("{ORIGIN_NO_PORT}{to}"),
        (true, ..) => format!("{ORIGIN}{to}"),
    }
}

/// nginx's origin for redirects on a listener: `$scheme://$host`, and the port unless it is the
/// scheme's own.
fn origin(tls: bool, port: &str) -> String {
    match (tls, port) {
        (true, "443") => "https://$host".into(),
        (false, "80") => "http://$host".into(),
        (true, p) => format!("https://$host:{p}"),
        (false, p) => format!("http://$host:{p}"),
    }
}

fn render_routes(routes: &[RouteOut], host: Option<&str>, origin: &str) -> String {
    let mut s = String::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in routes {
        let mut m = r.matches.clone();
        if let Some(h) = host {
            m.insert(0, format!("host: {}", q(h)));
        }
        let base = match host {
            Some(h) => format!("{}@{}", r.body.name, host_label(h)),
            None => r.body.name.clone(),
        };
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let name = if *n == 1 { base } else { format!("{base}.{n}") };
        let _ = writeln!(s, "      {}", r.body.comment);
        let mut variants = Vec::new();
        for (i, (what, (cond, lines))) in r.body.pre.iter().enumerate() {
            let mut with = m.clone();
            with.extend(cond.iter().cloned());
            variants.push((format!("{name}-{what}{}", i + 1), with, lines));
        }
        let main = variants.len();
        variants.push((name.clone(), m.clone(), &r.body.lines));
        if let Some((methods, other)) = &r.body.except {
            variants[main].1.push(format!("methods: [{}]", methods.join(", ")));
            variants.push((format!("{name}-other-methods"), m, other));
        }
        for (name, m, lines) in variants {
            let _ = writeln!(s, "      - name: {}", q(&name));
            if !m.is_empty() {
                let _ = writeln!(s, "        match: {{ {} }}", m.join(", "));
            }
            // `scheme://$host` without a port: the origin up to its last `:PORT`.
            let portless = match origin.rsplit_once(':') {
                Some((o, p)) if p.bytes().all(|b| b.is_ascii_digit()) => o,
                _ => origin,
            };
            for l in lines {
                // Quoted, the markers read `\u0001origin`, `\u0001portless`.
                let l = l.replace(ORIGIN, origin).replace("\\u0001origin", origin);
                let _ =
                    writeln!(s, "        {}", l.replace(ORIGIN_NO_PORT, portless).replace("\\u0001portless", portless));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_times_read_as_ngx_parse_time_reads_them() {
        let cases = [
            ("30", Some(30_000)),
            ("90s", Some(90_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("1y", Some(365 * 86_400_000)),
            ("1M", Some(30 * 86_400_000)),
            ("2w", Some(14 * 86_400_000)),
            ("1d12h", Some(129_600_000)),
            ("", None),
            ("m", None),
            ("5x", None),
        ];
        for (t, want) in cases {
            assert_eq!(nginx_ms(t), want, "{t}");
        }
        assert_eq!(time("1500ms").as_deref(), Some("1500ms"));
        assert_eq!(time("2m").as_deref(), Some("120s"));
    }

    #[test]
    fn listen_addresses_become_binds() {
        let cases = [
            ("80", Some("0.0.0.0:80")),
            ("*:8080", Some("0.0.0.0:8080")),
            ("[::]:443", Some("0.0.0.0:443")),
            ("localhost:9000", Some("127.0.0.1:9000")),
            ("10.0.0.5", Some("10.0.0.5:80")),
            ("10.0.0.5:81", Some("10.0.0.5:81")),
            ("unix:/run/nginx.sock", None),
        ];
        for (a, want) in cases {
            assert_eq!(listen_bind(a).as_deref(), want, "{a}");
        }
        assert_eq!(origin(false, "80"), "http://$host");
        assert_eq!(origin(true, "443"), "https://$host");
        assert_eq!(origin(true, "8443"), "https://$host:8443");
    }
}
