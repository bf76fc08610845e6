//! ingress-nginx's annotations (`nginx.ingress.kubernetes.io/*`), read as ingress-nginx reads them
//! (its `internal/ingress/annotations/` parsers and documented defaults) into [`Annotations`].
//!
//! A bad value is handled as ingress-nginx handles it: for the access-control annotations (source
//! ranges, basic auth) the Ingress's paths are *denied* — they answer 503 rather than serve without
//! the protection the object asked for; any other bad value is ignored (the default applies) with
//! a warning. Snippets are never executed (CVE-2025-1974 came from running them), and every other
//! annotation under the prefix that ferry does not carry gets a warning saying it is ignored.

use std::collections::BTreeMap;

use super::super::{annotation_field, Severity};

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// ingress-nginx's default `proxy-body-size` (its ConfigMap default, nginx `client_max_body_size`).
pub const DEFAULT_BODY_SIZE: u64 = 1024 * 1024;

/// The CORS defaults ingress-nginx documents.
const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const CORS_MAX_AGE: u64 = 1_728_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    Http,
    Https,
}

/// `auth-secret-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSecretType {
    /// The Secret's `auth` key holds an htpasswd file.
    File,
    /// Each key is a user name, its value the password hash.
    Map,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// (namespace, name); the namespace defaults to the Ingress's.
    pub secret: (String, String),
    pub kind: AuthSecretType,
    pub realm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `*`, or the origins a request's `Origin` must be one of (echoed back when it is).
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub credentials: bool,
    pub max_age: u64,
    pub expose_headers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canary {
    pub by_header: Option<String>,
    pub by_header_value: Option<String>,
    pub by_cookie: Option<String>,
    pub weight: u32,
    pub weight_total: u32,
}

/// One Ingress's annotations, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub app_root: Option<String>,
    pub ssl_redirect: bool,
    pub force_ssl_redirect: bool,
    pub backend_protocol: BackendProtocol,
    /// `None`: no limit (`0`).
    pub body_size: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    /// ferry's `retry_on` list; `None`: ingress-nginx's default (`error timeout`).
    pub next_upstream: Option<Vec<&'static str>>,
    /// `proxy-next-upstream-tries` (total tries; 0 = as many as there are endpoints).
    pub next_upstream_tries: Option<u32>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub basic_auth: Option<BasicAuth>,
    pub canary: Option<Canary>,
    pub cors: Option<Cors>,
    /// (URL, status)
    pub redirect: Option<(String, u16)>,
    pub upstream_vhost: Option<String>,
    pub forwarded_prefix: Option<String>,
    /// (requests, per second (`true`) or per minute, burst)
    pub rate: Option<(u64, bool, u64)>,
    pub service_upstream: bool,
    /// `affinity: cookie`: ferry's `affinity_cookie` fields (name, path, max_age, expires, secure,
    /// same_site) as routes.yaml values.
    pub affinity: Option<Vec<(&'static str, String)>>,
    /// `limit-connections`: requests in progress per client address.
    pub connections: Option<u32>,
    /// `custom-http-errors` with `default-backend`: (statuses, (namespace, Service)).
    pub custom_errors: Option<(Vec<u16>, (String, String))>,
    /// Why the paths are denied (answer 503), if an access-control annotation is bad.
    pub denied: Option<String>,
}

/// A problem found while reading the annotations: (annotation key, severity, message).
pub type AnnProblem = (String, Severity, String);

fn boolean(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// nginx's size syntax: `8m`, `512k`, `1g`, bytes without a suffix.
pub fn size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mul) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// A comma-separated list of CIDRs or addresses.
fn cidrs(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = part.parse::<ipnet::IpNet>().is_ok() || part.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            return Err(format!("`{part}` is not a CIDR or an IP address"));
        }
        out.push(part.to_string());
    }
    Ok(out)
}

/// The snippet annotations ingress-nginx had; ferry never runs any of them.
fn is_snippet(name: &str) -> bool {
    name.ends_with("-snippet") || name == "modsecurity-snippet"
}

impl Annotations {
    /// Reads the annotations of an Ingress in `namespace`.
    pub fn parse(all: &BTreeMap<String, String>, namespace: &str) -> (Annotations, Vec<AnnProblem>) {
        let mut problems: Vec<AnnProblem> = Vec::new();
        let get = |n: &str| all.get(&format!("{PREFIX}{n}")).map(String::as_str);
        let mut early: Vec<AnnProblem> = Vec::new();
        let mut warn = |n: &str, m: String| problems.push((format!("{PREFIX}{n}"), Severity::Warning, m));
        let mut a = Annotations {
            rewrite_target: get("rewrite-target").map(str::to_string).filter(|s| !s.is_empty()),
            use_regex: false,
            app_root: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            backend_protocol: BackendProtocol::Http,
            body_size: Some(DEFAULT_BODY_SIZE),
            connect_timeout: None,
            read_timeout: None,
            send_timeout: None,
            next_upstream: None,
            next_upstream_tries: None,
            allow: Vec::new(),
            deny: Vec::new(),
            basic_auth: None,
            canary: None,
            cors: None,
            redirect: None,
            upstream_vhost: get("upstream-vhost").map(str::to_string).filter(|s| !s.is_empty()),
            forwarded_prefix: get("x-forwarded-prefix").map(str::to_string).filter(|s| !s.is_empty()),
            rate: None,
            service_upstream: false,
            affinity: None,
            custom_errors: None,
            connections: None,
            denied: None,
        };
        let flag = |n: &str, default: bool, warn: &mut dyn FnMut(&str, String)| match get(n) {
            None => default,
            Some(v) => boolean(v).unwrap_or_else(|| {
                warn(n, format!("`{v}` is not true or false; the default ({default}) applies"));
                default
            }),
        };
        a.use_regex = flag("use-regex", false, &mut warn);
        a.ssl_redirect = flag("ssl-redirect", true, &mut warn);
        a.force_ssl_redirect = flag("force-ssl-redirect", false, &mut warn);
        a.service_upstream = flag("service-upstream", false, &mut warn);
        if let Some(v) = get("app-root") {
            if v.starts_with('/') && !v.contains(char::is_whitespace) {
                a.app_root = Some(v.to_string());
            } else {
                warn("app-root", format!("`{v}` is not a path starting with /; ignored"));
            }
        }
        match get("backend-protocol").map(|v| v.trim().to_ascii_uppercase()) {
            None => {}
            Some(p) if p == "HTTP" => {}
            Some(p) if p == "HTTPS" => a.backend_protocol = BackendProtocol::Https,
            Some(p) => {
                // ferry has no h2 (gRPC) or FastCGI upstreams yet: the paths answer 503 rather
                // than speak the wrong protocol to the backend.
                early.push((
                    format!("{PREFIX}backend-protocol"),
                    Severity::Error,
                    format!("`{p}` is not supported (ferry speaks HTTP and HTTPS to backends); the paths answer 503"),
                ));
                a.denied = Some(format!("backend-protocol {p} is not supported"));
            }
        }
        if let Some(v) = get("proxy-body-size") {
            match size(v) {
                Some(0) => a.body_size = None,
                Some(n) => a.body_size = Some(n),
                None => warn("proxy-body-size", format!("`{v}` is not a size (like 8m); the default 1m applies")),
            }
        }
        let seconds = |n: &str, warn: &mut dyn FnMut(&str, String)| {
            let v = get(n)?;
            match v.trim().trim_end_matches('s').parse::<u64>() {
                Ok(s) => Some(s),
                Err(_) => {
                    warn(n, format!("`{v}` is not a number of seconds; the default applies"));
                    None
                }
            }
        };
        a.connect_timeout = seconds("proxy-connect-timeout", &mut warn);
        a.read_timeout = seconds("proxy-read-timeout", &mut warn);
        a.send_timeout = seconds("proxy-send-timeout", &mut warn);
        if let Some(v) = get("proxy-next-upstream") {
            let mut list = Vec::new();
            let mut bad = None;
            for w in v.split_whitespace() {
                match w {
                    "error" => list.extend(["connect", "reset"]),
                    "invalid_header" => list.push("reset"),
                    "timeout" => list.push("timeout"),
                    "http_500" => list.push("500"),
                    "http_502" => list.push("502"),
                    "http_503" => list.push("503"),
                    "http_504" => list.push("504"),
                    "http_429" => list.push("429"),
                    "non_idempotent" => list.push("non_idempotent"),
                    "off" => list.clear(),
                    // Statuses ferry does not retry on: ignored with a warning, the rest applies.
                    "http_403" | "http_404" => bad = Some(w.to_string()),
                    other => bad = Some(other.to_string()),
                }
            }
            if let Some(w) = bad {
                warn("proxy-next-upstream", format!("`{w}` is not supported; the other conditions apply"));
            }
            list.dedup();
            a.next_upstream = Some(list);
        }
        if let Some(v) = get("proxy-next-upstream-tries") {
            match v.trim().parse::<u32>() {
                Ok(n) => a.next_upstream_tries = Some(n),
                Err(_) => warn("proxy-next-upstream-tries", format!("`{v}` is not a number; the default (3) applies")),
            }
        }
        // Access control: a bad value denies the paths (ingress-nginx's `Denied`).
        let deny = |n: &str, m: String, problems: &mut Vec<AnnProblem>, denied: &mut Option<String>| {
            problems.push((format!("{PREFIX}{n}"), Severity::Error, format!("{m}; the paths answer 503")));
            *denied = Some(format!("{n}: {m}"));
        };
        problems.append(&mut early);
        for n in ["whitelist-source-range", "allowlist-source-range"] {
            if let Some(v) = get(n) {
                match cidrs(v) {
                    Ok(list) => a.allow.extend(list),
                    Err(m) => deny(n, m, &mut problems, &mut a.denied),
                }
            }
        }
        if let Some(v) = get("denylist-source-range") {
            match cidrs(v) {
                Ok(list) => a.deny = list,
                Err(m) => deny("denylist-source-range", m, &mut problems, &mut a.denied),
            }
        }
        match get("auth-type").map(str::trim) {
            None => {}
            Some("basic") => {
                let kind = match get("auth-secret-type").map(str::trim) {
                    None | Some("auth-file") => Some(AuthSecretType::File),
                    Some("auth-map") => Some(AuthSecretType::Map),
                    Some(other) => {
                        deny(
                            "auth-secret-type",
                            format!("`{other}` is not auth-file or auth-map"),
                            &mut problems,
                            &mut a.denied,
                        );
                        None
                    }
                };
                match (get("auth-secret").map(str::trim).filter(|s| !s.is_empty()), kind) {
                    (None, _) => {
                        deny("auth-secret", "auth-type basic needs auth-secret".into(), &mut problems, &mut a.denied)
                    }
                    (Some(s), Some(kind)) => {
                        let secret = match s.split_once('/') {
                            Some((ns, name)) => (ns.to_string(), name.to_string()),
                            None => (namespace.to_string(), s.to_string()),
                        };
                        let realm = get("auth-realm").unwrap_or("Authentication Required").to_string();
                        a.basic_auth = Some(BasicAuth { secret, kind, realm });
                    }
                    (Some(_), None) => {}
                }
            }
            Some(other) => {
                deny("auth-type", format!("`{other}` is not supported (ferry has basic)"), &mut problems, &mut a.denied)
            }
        }
        let mut warn = |n: &str, m: String| problems.push((format!("{PREFIX}{n}"), Severity::Warning, m));
        if let Some(v) = get("permanent-redirect") {
            let code = get("permanent-redirect-code").and_then(|c| c.trim().parse::<u16>().ok());
            let code = match code {
                Some(c) if (300..=308).contains(&c) => c,
                Some(c) => {
                    warn("permanent-redirect-code", format!("{c} is not a redirect status; 301 applies"));
                    301
                }
                None => 301,
            };
            a.redirect = Some((v.trim().to_string(), code));
        } else if let Some(v) = get("temporal-redirect") {
            let code = get("temporal-redirect-code").and_then(|c| c.trim().parse::<u16>().ok()).unwrap_or(302);
            a.redirect = Some((v.trim().to_string(), code));
        }
        if let Some(v) = get("limit-rps").or(get("limit-rpm")) {
            let per_second = get("limit-rps").is_some();
            let key = if per_second { "limit-rps" } else { "limit-rpm" };
            let mult = match get("limit-burst-multiplier").map(|m| m.trim().parse::<u64>()) {
                None => 5,
                Some(Ok(m)) if m > 0 => m,
                Some(_) => {
                    warn("limit-burst-multiplier", "not a positive number; 5 applies".into());
                    5
                }
            };
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => a.rate = Some((n, per_second, n * mult)),
                _ => warn(key, format!("`{v}` is not a positive number; no limit applies")),
            }
            if per_second && get("limit-rpm").is_some() {
                warn("limit-rpm", "ferry keeps one limit per path: limit-rps applies, limit-rpm is ignored".into());
            }
        }
        if let Some(v) = get("limit-connections") {
            match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => a.connections = Some(n),
                _ => warn("limit-connections", format!("`{v}` is not a positive number; no limit applies")),
            }
        }
        match (get("custom-http-errors"), get("default-backend").map(str::trim).filter(|s| !s.is_empty())) {
            (Some(codes), Some(svc)) => {
                let mut list = Vec::new();
                for c in codes.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    match c.parse::<u16>() {
                        Ok(n) if (300..=599).contains(&n) => list.push(n),
                        _ => warn("custom-http-errors", format!("`{c}` is not a status from 300 to 599; ignored")),
                    }
                }
                let svc = match svc.split_once('/') {
                    Some((ns, n)) => (ns.to_string(), n.to_string()),
                    None => (namespace.to_string(), svc.to_string()),
                };
                if !list.is_empty() {
                    a.custom_errors = Some((list, svc));
                }
            }
            (Some(_), None) => warn(
                "custom-http-errors",
                "needs default-backend (ferry has no global default backend); ignored".into(),
            ),
            (None, Some(_)) => warn(
                "default-backend",
                "is used by ferry with custom-http-errors only (a Service without endpoints answers 503); ignored"
                    .into(),
            ),
            (None, None) => {}
        }
        match get("affinity").map(str::trim) {
            None | Some("") => {}
            Some("cookie") => {
                let mut f = vec![("name", get("session-cookie-name").unwrap_or("INGRESSCOOKIE").trim().to_string())];
                if let Some(p) = get("session-cookie-path") {
                    f.push(("path", p.trim().to_string()));
                }
                for (ann, field) in [("session-cookie-max-age", "max_age"), ("session-cookie-expires", "expires")] {
                    if let Some(v) = get(ann) {
                        match v.trim().parse::<u64>() {
                            Ok(n) => f.push((field, format!("{n}s"))),
                            Err(_) => warn(ann, format!("`{v}` is not a number of seconds; ignored")),
                        }
                    }
                }
                if get("session-cookie-secure").and_then(boolean) == Some(true) {
                    f.push(("secure", "true".into()));
                }
                if let Some(v) = get("session-cookie-samesite") {
                    f.push(("same_site", v.trim().to_string()));
                }
                a.affinity = Some(f);
            }
            Some(other) => warn("affinity", format!("`{other}` is not supported (ferry has cookie); ignored")),
        }
        if get("enable-cors").and_then(boolean) == Some(true) {
            let origins: Vec<String> = get("cors-allow-origin")
                .map(|v| v.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect())
                .unwrap_or_default();
            let origins: Vec<String> = if origins.is_empty() { vec!["*".to_string()] } else { origins };
            a.cors = Some(Cors {
                origins,
                methods: get("cors-allow-methods").unwrap_or(CORS_METHODS).to_string(),
                headers: get("cors-allow-headers").unwrap_or(CORS_HEADERS).to_string(),
                credentials: get("cors-allow-credentials").and_then(boolean).unwrap_or(true),
                max_age: get("cors-max-age").and_then(|v| v.trim().parse().ok()).unwrap_or(CORS_MAX_AGE),
                expose_headers: get("cors-expose-headers").map(str::to_string),
            });
        }
        if get("canary").and_then(boolean) == Some(true) {
            let weight = get("canary-weight").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            let weight_total = get("canary-weight-total").and_then(|v| v.trim().parse().ok()).unwrap_or(100);
            a.canary = Some(Canary {
                by_header: get("canary-by-header").map(str::to_string).filter(|s| !s.is_empty()),
                by_header_value: get("canary-by-header-value").map(str::to_string).filter(|s| !s.is_empty()),
                by_cookie: get("canary-by-cookie").map(str::to_string).filter(|s| !s.is_empty()),
                weight: weight.min(weight_total),
                weight_total: weight_total.max(1),
            });
        }
        // Everything else under the prefix: said once each.
        for key in all.keys() {
            let Some(name) = key.strip_prefix(PREFIX) else { continue };
            if is_snippet(name) {
                problems.push((
                    key.clone(),
                    Severity::Warning,
                    "snippets are never executed by ferry; ignored".to_string(),
                ));
            } else if !KNOWN.contains(&name) {
                problems.push((key.clone(), Severity::Warning, "not supported by ferry; ignored".to_string()));
            }
        }
        (a, problems)
    }

    /// The CORS response headers for a request whose origin passed.
    pub fn cors_headers(c: &Cors) -> Vec<(&'static str, String)> {
        let origin = if c.origins.len() == 1 { c.origins[0].clone() } else { "$http_origin".to_string() };
        let mut h = vec![
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", c.methods.clone()),
            ("Access-Control-Allow-Headers", c.headers.clone()),
            ("Access-Control-Max-Age", c.max_age.to_string()),
        ];
        if c.credentials {
            h.push(("Access-Control-Allow-Credentials", "true".to_string()));
        }
        if let Some(e) = &c.expose_headers {
            h.push(("Access-Control-Expose-Headers", e.clone()));
        }
        h
    }
}

/// The annotations ferry reads (beside snippets, which it refuses to run).
const KNOWN: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "app-root",
    "ssl-redirect",
    "force-ssl-redirect",
    "backend-protocol",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-cookie",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "cors-expose-headers",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-vhost",
    "x-forwarded-prefix",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "service-upstream",
    "affinity",
    // ferry keeps a client on its endpoint while it is usable and re-pins it after a failure:
    // ingress-nginx's `persistent` mode with `session-cookie-change-on-failure`.
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-secure",
    "session-cookie-samesite",
    "session-cookie-change-on-failure",
    "custom-http-errors",
    "default-backend",
    "limit-connections",
];

/// The field name of an annotation key, for problems.
pub fn field(key: &str) -> String {
    annotation_field(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kv: &[(&str, &str)]) -> (Annotations, Vec<AnnProblem>) {
        let m = kv.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())).collect();
        Annotations::parse(&m, "ns")
    }

    #[test]
    fn sizes_are_nginx_sizes() {
        assert_eq!(size("8m"), Some(8 << 20));
        assert_eq!(size("512K"), Some(512 << 10));
        assert_eq!(size("100"), Some(100));
        assert_eq!(size("1.5m"), None);
        let (a, _) = parse(&[("proxy-body-size", "0")]);
        assert_eq!(a.body_size, None);
        let (a, p) = parse(&[]);
        assert_eq!(a.body_size, Some(DEFAULT_BODY_SIZE));
        assert!(p.is_empty());
    }

    #[test]
    fn a_bad_source_range_denies_and_a_bad_timeout_is_ignored() {
        let (a, p) = parse(&[("whitelist-source-range", "10.0.0.0/8, bogus"), ("proxy-read-timeout", "soon")]);
        assert!(a.denied.is_some());
        assert_eq!(a.read_timeout, None);
        assert!(p.iter().any(|(k, s, _)| k.ends_with("whitelist-source-range") && *s == Severity::Error));
        assert!(p.iter().any(|(k, s, _)| k.ends_with("proxy-read-timeout") && *s == Severity::Warning));
    }

    #[test]
    fn snippets_and_unknown_annotations_are_named() {
        let (_, p) = parse(&[
            ("configuration-snippet", "more_set_headers x;"),
            ("auth-url", "http://auth.example.com/"),
            ("use-regex", "true"),
        ]);
        let keys: Vec<&str> = p.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 2, "{p:?}");
        assert!(p.iter().any(|(k, _, m)| k.ends_with("configuration-snippet") && m.contains("never executed")));
        assert!(p.iter().any(|(k, _, m)| k.ends_with("auth-url") && m.contains("not supported")));
    }

    #[test]
    fn next_upstream_maps_to_retry_conditions() {
        let (a, _) = parse(&[("proxy-next-upstream", "error timeout http_503"), ("proxy-next-upstream-tries", "4")]);
        assert_eq!(a.next_upstream.unwrap(), ["connect", "reset", "timeout", "503"]);
        assert_eq!(a.next_upstream_tries, Some(4));
    }
}
