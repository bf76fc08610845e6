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

mod location;
mod model;
mod rewrite;
mod server;
mod upstream;
mod variables;

use std::collections::BTreeMap;

use super::parse::{Diag, Directive, Level, Pos};
use model::Output;
use variables::args_mention;

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

/// Access controls ferry does not carry over: a location using one answers 403 (fail closed).
const ACCESS_REFUSED: &[&str] = &[
    "auth_jwt",
    "auth_jwt_key_file",
    "auth_jwt_key_request",
    "auth_pam",
    "auth_ldap",
    "auth_gss",
    "auth_digest",
    "access_by_lua",
    "access_by_lua_block",
    "access_by_lua_file",
    "js_access",
    "perl_access",
    "secure_link",
    "secure_link_md5",
    "secure_link_secret",
];

/// Directives ferry refuses to guess at, with what to do instead.
fn refused(name: &str) -> Option<&'static str> {
    Some(match name {
        "if" => "not carried over; express the condition as a route match (host, path, headers)",
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

/// What a level (http, server, location) sets that inner levels inherit.
#[derive(Clone, Default)]
struct Inherited {
    /// (name, value, where)
    proxy_set_header: Option<Vec<(String, String, Pos)>>,
    /// (name, value, `always`)
    add_header: Option<Vec<(String, String, bool, Pos)>>,
    /// `set $NAME VALUE` (server level, then location level; the last one counts): nginx runs
    /// them in its rewrite phase, before the location's handler reads them.
    sets: Vec<(String, String)>,
    /// ssl_verify_client (with where), ssl_client_certificate (relative to nginx's prefix).
    ssl_verify_client: Option<(String, Pos)>,
    ssl_client_ca: Option<String>,
    /// ssl_certificate, ssl_certificate_key (relative to nginx's prefix).
    ssl_cert: Option<String>,
    ssl_key: Option<String>,
    /// proxy_ssl_verify, proxy_ssl_trusted_certificate, proxy_ssl_name, proxy_ssl_server_name.
    ssl_verify: Option<bool>,
    ssl_trusted: Option<String>,
    ssl_name: Option<String>,
    ssl_server_name: Option<bool>,
    /// `sub_filter FROM TO` (a level that sets one drops those above), `sub_filter_once`,
    /// `sub_filter_types`.
    sub_filter: Option<Vec<(String, String, Pos)>>,
    sub_filter_once: Option<bool>,
    sub_filter_types: Option<Vec<String>>,
    /// `proxy_cookie_path FROM TO` (`off`: an empty list).
    cookie_paths: Option<Vec<(String, String, Pos)>>,
    /// `satisfy any`.
    satisfy_any: bool,
    /// `default_type` (nginx's own default: text/plain): the type of a `return`'s text.
    default_type: Option<String>,
    /// `auth_request URI` (`off`: none).
    auth_request: Option<(String, Pos)>,
    /// `auth_request_set $VAR VALUE` (a level that sets one drops those above, as nginx merges).
    auth_request_set: Option<Vec<(String, String)>>,
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
    /// `proxy_redirect` (a level that sets one drops those above): `None` is nginx's `default`.
    proxy_redirect: Option<Vec<Redirect>>,
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

/// One `proxy_redirect`.
#[derive(Clone, Debug)]
pub(super) enum Redirect {
    Off,
    Default,
    Rule(String, String, Pos),
    /// A regex rule (`~`): not carried over.
    Unsupported(Pos),
}

impl Inherited {
    /// The auth answer's header a value stands for: `$VAR` set by `auth_request_set $VAR
    /// $upstream_http_NAME` is the header NAME of the auth service's answer.
    fn auth_header(&self, value: &str) -> Option<String> {
        let var = value.strip_prefix('$')?;
        let (_, v) = self.auth_request_set.iter().flatten().rev().find(|(n, _)| n.eq_ignore_ascii_case(var))?;
        Some(v.strip_prefix("$upstream_http_")?.replace('_', "-"))
    }
}

struct Server<'a> {
    d: &'a Directive,
    names: Vec<String>,
    inh: Inherited,
}

pub fn translate(top: &[Directive], opts: &Options) -> Imported {
    let mut t = Translator {
        diags: Vec::new(),
        out: Output::default(),
        opts,
        upstreams: BTreeMap::new(),
        names: BTreeMap::new(),
        real_ip_proxy_protocol: false,
    };
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
    for (at, name) in variables::unknown(top) {
        let message = format!(
            "`${name}` is not a variable nginx knows (nginx refuses the config); a template placeholder left unexpanded?"
        );
        t.diag(&at, Level::Warning, message);
    }
    for d in top {
        match d.name.as_str() {
            "http" => t.http(d),
            "stream" => t.stream(d),
            n if NO_OPS.contains(&n) => {}
            "include" => {}
            _ => t.other(d),
        }
    }
    let at = top
        .first()
        .map_or_else(|| Pos { file: std::path::Path::new("nginx.conf").into(), line: 1, col: 1 }, |d| d.at.clone());
    if t.out.listeners.is_empty() {
        t.diag(&at, Level::Error, "nothing to import: no `server` in an `http` or `stream` block");
        return Imported { yaml: String::new(), diags: t.diags };
    }
    let out = std::mem::take(&mut t.out);
    match out.finish(&mut t.diags, &at) {
        Some(yaml) => Imported { yaml, diags: t.diags },
        None => {
            t.diag(&at, Level::Error, "nothing ferry can serve is left after leaving out what it refuses");
            Imported { yaml: String::new(), diags: t.diags }
        }
    }
}

struct Translator<'o> {
    diags: Vec<Diag>,
    out: Output,
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
        if d.name == "proxy_cache" && arg(d, 0) == "off" {
            return; // nothing cached: what ferry does
        }
        if d.name == "proxy_pass_request_body" && arg(d, 0) == "off" {
            let message = "proxy_pass_request_body off: carried over where it matters, in an auth_request location \
                           (forward_auth sends no body); elsewhere the body is still passed";
            return self.diag(&d.at, Level::Note, message);
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
                let h = (arg(d, 0).into(), arg(d, 1).into(), d.at.clone());
                fresh.proxy_set_header.get_or_insert_with(Vec::new).push(h)
            }
            "add_header" => fresh.add_header.get_or_insert_with(Vec::new).push((
                arg(d, 0).into(),
                arg(d, 1).into(),
                arg(d, 2) == "always",
                d.at.clone(),
            )),
            "ssl_protocols" => {
                let modern: Vec<&String> =
                    d.args.iter().filter(|a| matches!(a.as_str(), "TLSv1.2" | "TLSv1.3")).collect();
                let old: Vec<&str> =
                    d.args.iter().map(String::as_str).filter(|a| !matches!(*a, "TLSv1.2" | "TLSv1.3")).collect();
                if modern.is_empty() {
                    let message = format!(
                        "ssl_protocols {}: ferry offers TLS 1.2 and 1.3 only (rustls); clients limited to these cannot connect",
                        d.args.join(" ")
                    );
                    self.diag(&d.at, Level::Warning, message);
                } else if !old.is_empty() {
                    let message =
                        format!("ssl_protocols: ferry does not offer {} (TLS 1.2 and 1.3 only)", old.join(" "));
                    self.diag(&d.at, Level::Note, message);
                }
            }
            "ssl_certificate" => inh.ssl_cert = Some(self.under_prefix(arg(d, 0))),
            "ssl_verify_client" => inh.ssl_verify_client = Some((arg(d, 0).to_string(), d.at.clone())),
            "ssl_client_certificate" => inh.ssl_client_ca = Some(self.under_prefix(arg(d, 0))),
            "ssl_verify_depth" | "ssl_trusted_certificate" => {}
            "ssl_certificate_key" => inh.ssl_key = Some(self.under_prefix(arg(d, 0))),
            "proxy_ssl_verify" => inh.ssl_verify = Some(arg(d, 0) == "on"),
            "proxy_ssl_trusted_certificate" => inh.ssl_trusted = Some(self.under_prefix(arg(d, 0))),
            "proxy_ssl_name" => inh.ssl_name = Some(arg(d, 0).to_string()),
            "proxy_ssl_server_name" => inh.ssl_server_name = Some(arg(d, 0) == "on"),
            "proxy_ssl_verify_depth" | "proxy_ssl_protocols" | "proxy_ssl_ciphers" | "proxy_ssl_session_reuse" => {}
            "sub_filter" => fresh.sub_filter.get_or_insert_with(Vec::new).push((
                arg(d, 0).to_string(),
                arg(d, 1).to_string(),
                d.at.clone(),
            )),
            "default_type" => inh.default_type = Some(arg(d, 0).to_string()),
            "satisfy" => inh.satisfy_any = arg(d, 0) == "any",
            "sub_filter_once" => inh.sub_filter_once = Some(arg(d, 0) == "on"),
            "sub_filter_types" => inh.sub_filter_types = Some(d.args.clone()),
            "sub_filter_last_modified" => {}
            "proxy_cookie_path" => {
                let list = fresh.cookie_paths.get_or_insert_with(Vec::new);
                if d.args.len() == 2 {
                    list.push((arg(d, 0).to_string(), arg(d, 1).to_string(), d.at.clone()));
                }
            }
            "auth_request" => {
                inh.auth_request = (arg(d, 0) != "off").then(|| (arg(d, 0).to_string(), d.at.clone()));
            }
            "auth_request_set" => fresh
                .auth_request_set
                .get_or_insert_with(Vec::new)
                .push((arg(d, 0).trim_start_matches('$').to_string(), arg(d, 1).to_string())),
            "set" if arg(d, 0).starts_with('$') => {
                let value = variables::expand(arg(d, 1), &inh.sets);
                inh.sets.push((arg(d, 0)[1..].to_string(), value));
            }
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
            "proxy_redirect" => {
                let r = match (arg(d, 0), d.args.len()) {
                    ("off", 1) => Redirect::Off,
                    ("default", 1) => Redirect::Default,
                    (from, 2) if !from.starts_with('~') => {
                        Redirect::Rule(from.to_string(), arg(d, 1).to_string(), d.at.clone())
                    }
                    _ => Redirect::Unsupported(d.at.clone()),
                };
                fresh.proxy_redirect.get_or_insert_with(Vec::new).push(r);
            }
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

    /// A header value with the `set` variables it uses filled in, if ferry can render it; else
    /// `None`, with a warning (the header alone is left out).
    fn value(&mut self, at: &Pos, directive: &str, name: &str, v: &str, sets: &[(String, String)]) -> Option<String> {
        let v = variables::expand(v, sets);
        match crate::config::template::Template::parse(&v) {
            Ok(_) => Some(v),
            Err(e) => {
                let message = format!("{directive} {name}: left out ({}), the rest is carried over", e.message);
                self.diag(at, Level::Warning, message);
                None
            }
        }
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
        // List directives: a level that sets one replaces the whole list above (nginx's merge).
        fn keep<T>(into: &mut Option<T>, fresh: Option<T>) {
            if fresh.is_some() {
                *into = fresh;
            }
        }
        keep(&mut inh.proxy_set_header, fresh.proxy_set_header);
        keep(&mut inh.add_header, fresh.add_header);
        keep(&mut inh.access, fresh.access);
        keep(&mut inh.sub_filter, fresh.sub_filter);
        keep(&mut inh.cookie_paths, fresh.cookie_paths);
        keep(&mut inh.proxy_redirect, fresh.proxy_redirect);
        keep(&mut inh.auth_request_set, fresh.auth_request_set);
        keep(&mut inh.error_pages, fresh.error_pages);
        inh
    }
}

/// Stands for the scheme, host and port nginx puts in front of a redirect to a path of its own
/// (`absolute_redirect on`, `port_in_redirect on`): filled in per listener by [`model::Route::fill_origin`].
pub(crate) const ORIGIN: &str = "\u{1}origin";

/// `ORIGIN` without the port (`port_in_redirect off`).
pub(crate) const ORIGIN_NO_PORT: &str = "\u{1}portless";

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

#[cfg(test)]
mod tests {
    use super::server::listen_bind;
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
