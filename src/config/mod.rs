//! routes.yaml → validated [`Config`].
//!
//! Two stages, as sozu does it: the YAML is read into a tree of marked nodes (every value knows its
//! line and column), each piece is deserialized into a raw serde struct with `deny_unknown_fields`
//! (`raw`), and the validators (`validate` for the document, then `listener`, `route`, `backend`,
//! with scalar parsing in `fields`) turn the raw pieces into the typed model defined here. Every
//! problem found is reported, not only the first, each as `FILE:LINE:COL: message` (`diag`), the
//! way `nginx -t` is read. Nothing here touches the network or the routing table.

pub mod actions;
mod backend;
mod diag;
mod fields;
mod listener;
pub mod log;
mod raw;
pub mod route;
mod site;
mod summary;
pub mod template;
mod validate;
mod yaml;

/// One YAML document (a mapping at the top) as marked nodes, with what routes.yaml accepts beyond
/// marked-yaml (anchors, aliases, merge keys); quoted scalars are marked as not to be coerced.
pub use yaml::parse as parse_yaml_document;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

pub use actions::Actions;
pub use diag::{ConfigError, ConfigErrors, FileError, FileErrors, LoadError};
pub use fields::parse_duration;

/// Defaults, in one place so the README and the code cannot drift apart.
pub mod defaults {
    use std::time::Duration;
    /// nginx's `gzip_min_length 1k`, as real configs set it (nginx's own default, 20, is too low
    /// to pay for the gzip header).
    pub const COMPRESS_MIN_BYTES: u64 = 1024;
    pub const ADMIN: &str = "127.0.0.1:9901";
    pub const DRAIN_DELAY: Duration = Duration::from_secs(5);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Off: as in nginx, only the gaps between reads are limited (`READ_TIMEOUT`).
    pub const REQUEST_TIMEOUT: Duration = Duration::ZERO;
    /// nginx `proxy_read_timeout`.
    pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DNS_REFRESH: Duration = Duration::from_secs(30);
    /// nginx `proxy_send_timeout`.
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    pub const RETRIES: u32 = 2;
    pub const MAX_RETRIES: u32 = 8;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_IDLE_PER_ENDPOINT: usize = 128;
    pub const EJECT_AFTER: u32 = 3;
    pub const EJECT_FOR: Duration = Duration::from_secs(10);
    pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// A request head (request line + headers) larger than this gets 431. hyper's floor is 8 KiB.
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const MAX_HEADERS: usize = 100;
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    /// The longest a request body may keep ferry waiting for its next bytes (nginx's
    /// client_body_timeout), and the grace before `MIN_BODY_RATE` applies.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
    /// Bytes per second a request body must average, counting only time ferry waits on the client
    /// (Apache's mod_reqtimeout default).
    pub const MIN_BODY_RATE: u64 = 500;
    /// The largest rate_limit burst (a bucket's excess is kept in 24 bits, in thousandths).
    pub const MAX_BURST: u32 = 16_000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    ClientIp,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::ClientIp => "client_ip",
        }
    }
}

#[derive(Debug, Clone)]
pub enum HostMatch {
    /// Lower-case host name, no port.
    Exact(String),
    /// `*.example.com` is stored as `.example.com`; matches any deeper name, not the apex.
    Suffix(String),
    /// `www.example.*` (nginx's trailing wildcard) is stored as `www.example.`; matches any
    /// longer name.
    Prefix(String),
    /// `~REGEX` (nginx's regex `server_name`), matched against the lower-case host.
    Regex(Box<regex::Regex>),
}

impl PartialEq for HostMatch {
    fn eq(&self, other: &HostMatch) -> bool {
        match (self, other) {
            (HostMatch::Exact(a), HostMatch::Exact(b))
            | (HostMatch::Suffix(a), HostMatch::Suffix(b))
            | (HostMatch::Prefix(a), HostMatch::Prefix(b)) => a == b,
            (HostMatch::Regex(a), HostMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for HostMatch {}

impl HostMatch {
    /// `host`: lower case, no port, no trailing dot.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostMatch::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
            HostMatch::Regex(r) => r.is_match(host),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
            HostMatch::Prefix(p) => write!(f, "{p}*"),
            HostMatch::Regex(r) => write!(f, "~{}", r.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    /// Normalised: starts with `/`, no trailing `/` unless it is exactly `/`. At most one of
    /// `path_prefix`, `path_exact` and `path_regex` is set.
    pub path_prefix: Option<String>,
    /// Only this path (nginx `location = /x`).
    pub path_exact: Option<String>,
    /// nginx's prefix `location /x`: a plain string prefix (`/api` matches `/apiary`), kept as
    /// written; it may go with `path_regex` (both must match).
    pub path_starts_with: Option<String>,
    /// A regex on the path (nginx `location ~`); its captures are `$1`….
    pub path_regex: Option<regex::Regex>,
    /// `match.when`: conditions on request variables, all of which must hold (nginx `if`).
    pub when: Vec<route::Condition>,
    /// `rewrite_cookie_path` rules (nginx `proxy_cookie_path FROM TO`).
    pub cookie_paths: Vec<(String, String)>,
    /// `rewrite_location` of the route (`None`: the backend's).
    pub rewrite_location: Option<route::LocationRewrite>,
    /// Empty: any method.
    pub methods: Vec<http::Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// As written (it is also `actions.rewrite = Prefix("/")`).
    pub strip_prefix: bool,
    /// `None`: the route splits (`split`) or answers itself (`actions.redirect`, `actions.respond`).
    pub backend: Option<String>,
    /// (backend, weight): weighted traffic shifting, chosen per request.
    pub split: Vec<(String, u32)>,
    /// nginx `proxy_cookie_path`: Set-Cookie paths under what was sent upstream get the removed
    /// prefix back.
    pub rewrite_cookie_path: bool,
    /// nginx `sub_filter` (`sub_filter_once off`): (from, to) in order, applied to answers of
    /// `body_replace_types`.
    pub body_replace: Vec<(String, String)>,
    pub body_replace_types: Vec<String>,
    /// Each string replaced at its first occurrence only (nginx `sub_filter_once on`).
    pub body_replace_once: bool,
    /// Strings matched ignoring ASCII case (as nginx's sub_filter matches).
    pub body_replace_ignore_case: bool,
    /// A request body larger than this gets 413 (`None`: no limit).
    pub max_body_bytes: Option<u64>,
    pub actions: Actions,
    /// Files served from a directory instead of a backend.
    pub files: Option<StaticSite>,
    /// gzip/brotli/zstd for compressible answers; `None`: the listener's `compress`.
    pub compress: Option<bool>,
    /// Answers known to be smaller are sent as they are; `None`: the listener's.
    pub compress_min_bytes: Option<u64>,
    /// Over the listener's, status by status.
    pub error_pages: ErrorPages,
    /// Requests in progress per client address (nginx `limit_conn` on the client address): more
    /// get 503.
    pub max_requests_per_client: Option<u32>,
    /// nginx `proxy_intercept_errors` + `error_page` to a backend (ingress-nginx's
    /// `custom-http-errors` with `default-backend`).
    pub intercept_errors: Option<InterceptErrors>,
    /// ferry sets X-Forwarded-For/-Proto/-Host/-Port (and removes the forwarding headers a client
    /// may not vouch for); `false`: the request's own forwarding headers pass as they came and
    /// ferry adds none (nginx's behaviour, for `ferry import`; `request_headers` still apply).
    pub forwarded_headers: bool,
}

/// `intercept_errors`: an answer of one of `statuses` — the upstream's, or ferry's own (no
/// endpoint, a failed upstream) — is not passed on; a GET for the same URI goes to `backend`
/// instead, with the request's headers, `X-Code` (the status), `X-Format` (the client's `Accept`),
/// `X-Original-URI` and `headers`, and its answer, status included, is the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptErrors {
    pub backend: String,
    pub statuses: Vec<u16>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's `static`: files from a directory (nginx `root` or `alias`, `index`, `try_files $uri
/// $uri/ FALLBACK`, `expires`, `gzip_static`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSite {
    /// Relative paths are relative to the config file's directory.
    pub dir: PathBuf,
    /// nginx `alias`: the route's `path_prefix` is replaced by `dir`; else (`root`) the whole
    /// request path is looked up under `dir`.
    pub alias: bool,
    /// File names tried in order for a path ending in `/`.
    pub index: Vec<String>,
    /// A file (path from `dir`) served with 200 when nothing matched a navigation request.
    pub fallback: Option<String>,
    /// Cache-Control for files other than HTML (`None`: none sent).
    pub cache: Option<HeaderValue>,
    /// Cache-Control for HTML files (default `no-cache`: revalidated each time, by ETag).
    pub html_cache: Option<HeaderValue>,
    /// Serve `FILE.br`/`FILE.gz`/`FILE.zst` in place of FILE to clients that accept them.
    pub precompressed: bool,
    /// `file`: this one file of `dir` answers every request of the route (nginx `alias` of a
    /// file).
    pub file: Option<String>,
    /// `missing: next`: a path with no file goes on to the routes after this one (nginx
    /// `try_files $uri @app`), instead of 404.
    pub missing_next: bool,
}

/// `error_pages`: a status and the HTML file ferry's own answers of that status carry.
pub type ErrorPages = Vec<(http::StatusCode, PathBuf)>;

/// Limits on what a client may send, per listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// HTTP listeners: time to receive a complete request head (slowloris).
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    /// HTTP listeners: the longest wait for a request body's next bytes; with `min_body_rate`,
    /// the total wait may grow by one second per `min_body_rate` bytes received (408 when broken).
    pub body_timeout: Duration,
    /// Bytes per second; 0: only `body_timeout` applies.
    pub min_body_rate: u64,
    /// Open client connections; more are refused (HTTP: a 503 and close). `None`: no limit.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_headers: defaults::MAX_HEADERS,
            max_uri_bytes: defaults::MAX_URI_BYTES,
            body_timeout: defaults::BODY_TIMEOUT,
            min_body_rate: defaults::MIN_BODY_RATE,
            max_connections: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// HTTP listeners: routes in order. Empty for TCP.
    pub routes: Vec<Route>,
    /// TCP listeners: the one backend every connection goes to.
    pub backend: Option<String>,
    /// TCP listeners: a connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP listeners: terminate TLS with these certificates (chosen by SNI).
    pub tls: Option<ListenerTls>,
    /// Every connection starts with a PROXY protocol v1 or v2 header (from an outer load balancer).
    pub proxy_protocol: bool,
    /// TCP listeners: TLS passthrough, routed by the ClientHello's server name; first match wins,
    /// `backend` takes what matches none (or the connection is closed when there is none).
    pub sni: Vec<SniRoute>,
    /// Clients whose X-Forwarded-For is kept (ferry appends to it); from anyone else it is replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limits: Limits,
    /// HTTP listeners: the default of their routes' `compress`.
    pub compress: bool,
    /// HTTP listeners: the default of their routes' `compress_min_bytes` (nginx `gzip_min_length`).
    pub compress_min_bytes: u64,
    /// HTTP listeners: pages for ferry's own error answers (routes may override some).
    pub error_pages: ErrorPages,
    /// One line per request (HTTP) or connection (TCP); None: off.
    pub access_log: Option<log::AccessLog>,
    /// HTTP listeners: keep a trusted peer's `X-Request-Id` or make one; send it up and back.
    pub request_id: bool,
    /// HTTP listeners: W3C `traceparent` handling.
    pub trace_context: log::TraceContext,
}

/// A certificate chain and its private key, PEM files (a kubernetes.io/tls Secret's tls.crt and
/// tls.key). Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The first is the default for clients that send no (or an unknown) server name.
    pub certificates: Vec<CertPair>,
    /// Client certificates asked for and checked against this CA (nginx `ssl_verify_client`).
    pub client: Option<ClientAuth>,
}

/// `tls.client_ca` and `tls.client_certificate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: PathBuf,
    /// `required`: a request on a connection without a valid client certificate gets 400 (nginx
    /// `ssl_verify_client on`); `optional`: it goes on, `$ssl_client_verify` says `NONE`.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    pub server_names: Vec<HostMatch>,
    pub backend: String,
}

/// Upstream TLS: verify the upstream's certificate against `ca`, for `server_name` (default: the
/// endpoint's IP address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// The CA bundle the upstream's certificate must chain to; `None` only with
    /// `insecure_skip_verify`.
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    /// No certificate check at all (nginx's default `proxy_ssl_verify off`): encrypted, not
    /// authenticated.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// A Service port, as the backend names it: the Service's `port` number or the port's `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// A Kubernetes Service whose endpoints a backend follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub name: String,
    /// `None`: ferry's own namespace.
    pub namespace: Option<String>,
    pub port: PortRef,
    /// Route to endpoints that are not ready too (publishNotReadyAddresses-style backends).
    pub include_not_ready: bool,
    /// Only the endpoint of this pod (by pod name or hostname), e.g. `eureka-0`.
    pub pod: Option<String>,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.name, self.namespace.as_deref().unwrap_or("<own>"), self.port)?;
        if let Some(p) = &self.pod {
            write!(f, " pod {p}")?;
        }
        Ok(())
    }
}

/// nginx `proxy_next_upstream`: which failures move a request to another endpoint. Anything but
/// `connect` only for idempotent methods (unless `non_idempotent`), and never once a response byte
/// reached the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be made (nothing was sent).
    pub connect: bool,
    /// The connection broke before a response head (reset, close, garbage).
    pub reset: bool,
    /// `read_timeout` passed before the response head.
    pub timeout: bool,
    /// The upstream answered one of these (502, 503, 504).
    pub statuses: Vec<u16>,
    /// nginx `proxy_next_upstream non_idempotent`: a request that may have reached the upstream is
    /// sent again even when its method is not idempotent (POST, PATCH). Off by default, as RFC 9112
    /// §9.3.1 requires of a proxy that was not told the request is safe to repeat.
    pub non_idempotent: bool,
}

impl RetryOn {
    /// May a request with method `m`, which may have reached an upstream, be sent again?
    pub fn replays(&self, m: &http::Method) -> bool {
        self.non_idempotent || crate::config::idempotent(m)
    }
}

/// Methods that are safe to send twice (RFC 9110 §9.2.2).
pub fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn { connect: true, reset: true, timeout: false, statuses: Vec::new(), non_idempotent: false }
    }
}

/// A static endpoint with nginx's `server` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddress {
    pub addr: SocketAddr,
    /// Relative share of requests (1–1000).
    pub weight: u32,
    /// Used only when no primary is usable.
    pub backup: bool,
    /// Never used (kept in the file, e.g. during maintenance).
    pub down: bool,
}

/// A static endpoint named by host name (`eureka-0.eureka.ns.svc.cluster.local:8761`), resolved
/// at start and every `dns_refresh`; every address it resolves to is an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAddress {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
    pub down: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    /// Static endpoints; empty when `service` is set (discovery fills them in).
    pub addresses: Vec<StaticAddress>,
    /// Static endpoints by host name.
    pub names: Vec<NamedAddress>,
    /// How often `names` are resolved again.
    pub dns_refresh: Duration,
    pub service: Option<ServiceRef>,
    /// How long a request waits for an endpoint to appear when there is none (0: 503 at once).
    pub hold_for_endpoints: Duration,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// `None` means no limit.
    pub request_timeout: Option<Duration>,
    /// The longest wait for the upstream's next bytes: its response head after the request, or
    /// the next piece of its body. `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// The longest the upstream may stop taking a request body (nginx `proxy_send_timeout`).
    pub send_timeout: Option<Duration>,
    /// What a failed attempt may be retried on (nginx `proxy_next_upstream`).
    pub retry_on: RetryOn,
    /// nginx `proxy_redirect default`: a Location pointing at the endpoint becomes a path, and a
    /// path gets the route's removed prefix back.
    pub rewrite_location: bool,
    pub retries: u32,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub eject_after: u32,
    pub eject_for: Duration,
    pub preserve_host: bool,
    /// Speak TLS to the endpoints.
    pub tls: Option<UpstreamTls>,
    /// TCP listeners: start each upstream connection with a PROXY protocol header carrying the
    /// client's address.
    pub send_proxy_protocol: Option<ProxyProtocol>,
    /// Sticky sessions: a client is pinned to an endpoint by a cookie ferry sets.
    pub affinity_cookie: Option<AffinityCookie>,
}

/// `affinity_cookie` (ingress-nginx's `affinity: cookie`): the first answer to a client without
/// the cookie (or whose endpoint is gone, ejected or not ready) sets it to the endpoint that
/// served it; later requests go to that endpoint while it is usable. The value is a hash of the
/// endpoint's address, the same on every ferry replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AffinityCookie {
    pub name: String,
    pub path: String,
    pub max_age: Option<Duration>,
    /// `Expires` this long after the answer.
    pub expires: Option<Duration>,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    pub same_site: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: SocketAddr,
    pub drain_delay: Duration,
    pub shutdown_timeout: Duration,
    pub listeners: Vec<Listener>,
    pub backends: Vec<Backend>,
}

impl Config {
    /// Reads and validates a file. Errors name the file (and, for its content, the line and column).
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LoadError::Read(FileError::new(path, "cannot read", &e)))?;
        Config::parse(&path.display().to_string(), &text).map_err(LoadError::Invalid)
    }

    /// Parses and validates YAML text; `file` is used in error messages only.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let mut errs = diag::Errs::new(file);
        let root = diag::parse_yaml(file, text)?;
        let cfg = validate::document(&root, &mut errs);
        errs.finish(text, root.span().start(), cfg)
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn route_count(&self) -> usize {
        self.listeners.iter().map(|l| l.routes.len()).sum()
    }

    /// Does any backend follow a Kubernetes Service?
    pub fn uses_kubernetes(&self) -> bool {
        self.backends.iter().any(|b| b.service.is_some())
    }
}

#[cfg(test)]
mod tests;
