//! routes.yaml → validated [`Config`].
//!
//! Two stages, as sozu does it: the YAML is read into a tree of marked nodes (every value knows its
//! line and column), each piece is deserialized into a raw serde struct with `deny_unknown_fields`,
//! and [`validate`](Config::parse) turns the raw pieces into a typed `Config`. Every problem found is
//! reported, not only the first, each as `FILE:LINE:COL: message`, the way `nginx -t` is read.
//! Nothing here touches the network or the routing table.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use marked_yaml::{LoadError, Marker, Node, Span, Spanned};
use serde::Deserialize;

/// Defaults, in one place so the README and the code cannot drift apart.
pub mod defaults {
    use std::time::Duration;
    pub const ADMIN: &str = "127.0.0.1:9901";
    pub const DRAIN_DELAY: Duration = Duration::from_secs(5);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
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
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found in one file. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host name, no port.
    Exact(String),
    /// `*.example.com` is stored as `.example.com`; matches any deeper name, not the apex.
    Suffix(String),
}

impl HostMatch {
    /// `host`: lower case, no port, no trailing dot.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    /// Normalised: starts with `/`, no trailing `/` unless it is exactly `/`.
    pub path_prefix: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub strip_prefix: bool,
    pub backend: String,
    /// A request body larger than this gets 413 (`None`: no limit).
    pub max_body_bytes: Option<u64>,
}

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
    pub ca: PathBuf,
    pub server_name: Option<String>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    /// Static endpoints; empty when `service` is set (discovery fills them in).
    pub addresses: Vec<SocketAddr>,
    pub service: Option<ServiceRef>,
    /// How long a request waits for an endpoint to appear when there is none (0: 503 at once).
    pub hold_for_endpoints: Duration,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// `None` means no limit.
    pub request_timeout: Option<Duration>,
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
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: SocketAddr,
    pub drain_delay: Duration,
    pub shutdown_timeout: Duration,
    pub listeners: Vec<Listener>,
    pub backends: Vec<Backend>,
}

// ---------- raw, as written ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerHead {
    name: Spanned<String>,
    bind: Spanned<String>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    #[serde(default)]
    backend: Option<Spanned<String>>,
    #[serde(default)]
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<Spanned<RawListenerTls>>,
    #[serde(default)]
    proxy_protocol: Option<Spanned<String>>,
    #[serde(default)]
    sni: Option<Spanned<Vec<RawSniRoute>>>,
    #[serde(default)]
    trusted_proxies: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    header_read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_header_bytes: Option<Spanned<String>>,
    #[serde(default)]
    max_headers: Option<Spanned<String>>,
    #[serde(default)]
    max_uri_bytes: Option<Spanned<String>>,
    #[serde(default)]
    max_connections: Option<Spanned<String>>,
    #[serde(default)]
    body_timeout: Option<Spanned<String>>,
    #[serde(default)]
    min_body_rate: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerTls {
    certificates: Spanned<Vec<RawCertPair>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertPair {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSniRoute {
    server_names: Spanned<Vec<Spanned<String>>>,
    backend: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    ca: Spanned<String>,
    #[serde(default)]
    server_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    matches: Option<RawMatch>,
    #[serde(default)]
    strip_prefix: Option<Spanned<String>>,
    #[serde(default)]
    max_body_bytes: Option<Spanned<String>>,
    backend: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<HashMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    #[serde(default)]
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    service: Option<Spanned<String>>,
    #[serde(default)]
    port: Option<Spanned<String>>,
    #[serde(default)]
    include_not_ready: Option<Spanned<String>>,
    #[serde(default)]
    pod: Option<Spanned<String>>,
    #[serde(default)]
    hold_for_endpoints: Option<Spanned<String>>,
    #[serde(default)]
    balance: Option<Spanned<String>>,
    #[serde(default)]
    connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    retries: Option<Spanned<String>>,
    #[serde(default)]
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_idle_per_endpoint: Option<Spanned<String>>,
    #[serde(default)]
    eject_after: Option<Spanned<String>>,
    #[serde(default)]
    eject_for: Option<Spanned<String>>,
    #[serde(default)]
    preserve_host: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<RawUpstreamTls>,
    #[serde(default)]
    send_proxy_protocol: Option<Spanned<String>>,
}

const TOP_KEYS: &[&str] = &["admin", "drain_delay", "shutdown_timeout", "listeners", "backends"];

/// Collects errors with the file name attached.
struct Errs<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    fn at(&mut self, marker: Option<&Marker>, message: impl Into<String>) {
        let (line, column) = marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        self.list.push(ConfigError { file: self.file.to_string(), line, column, message: message.into() });
    }

    fn span(&mut self, span: &Span, message: impl Into<String>) {
        self.at(span.start(), message)
    }

    /// Deserializes one node, recording the error (with its position) on failure.
    fn de<T: serde::de::DeserializeOwned>(&mut self, node: &Node, what: &str) -> Option<T> {
        match marked_yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                let mark = e.start_mark().or_else(|| node.span().start().copied());
                self.at(mark.as_ref(), format!("{what}: {}", lowercase_first(&e.to_string())));
                None
            }
        }
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn load_error(file: &str, text: &str, e: &LoadError) -> ConfigError {
    let (marker, message) = match e {
        LoadError::TopLevelMustBeMapping(m) => (*m, "the top level must be a mapping".to_string()),
        LoadError::TopLevelMustBeSequence(m) => (*m, "the top level must be a sequence".to_string()),
        LoadError::UnexpectedAnchor(m) => (*m, "YAML anchors and aliases are not supported".into()),
        LoadError::MappingKeyMustBeScalar(m) => (*m, "mapping keys must be plain strings".into()),
        LoadError::UnexpectedTag(m) => (*m, "YAML tags are not supported".to_string()),
        LoadError::ScanError(m, se) => (*m, format!("YAML syntax error: {}", se.info())),
        LoadError::DuplicateKey(inner) => {
            let m = inner.key.span().start().copied().unwrap_or(Marker::new(0, 0, 1, 1));
            (m, format!("duplicate key `{}`", inner.key.as_str()))
        }
    };
    let (line, column) = within(text, marker.line(), marker.column());
    ConfigError { file: file.to_string(), line, column, message }
}

/// The parser reports the end of a text that lacks a final line break as the start of the line
/// after it; point at the end of the last line instead, so the position exists in the file.
fn within(text: &str, line: usize, column: usize) -> (usize, usize) {
    let end = positions(text).last().map_or((1, 1), |(l, c, ch)| if is_break(ch) { (l + 1, 1) } else { (l, c + 1) });
    if line > end.0 {
        end
    } else {
        (line, column)
    }
}

fn is_break(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Each character with its line and column (1-based), lines breaking at CR LF, CR and LF as the
/// YAML parser counts them (the CR of a CR LF is reported at the LF's position).
fn positions(text: &str) -> impl Iterator<Item = (usize, usize, char)> + '_ {
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1, 1);
    std::iter::from_fn(move || {
        let c = chars.next()?;
        let at = (line, column, c);
        match c {
            '\r' if chars.peek() == Some(&'\n') => column += 1,
            '\r' | '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
        Some(at)
    })
}

/// The first character YAML does not allow (outside its printable set: tab, CR, LF, 0x20–0x7E,
/// NEL and the non-control ranges above), with its line and column. The YAML parser would stop
/// at a NUL as if the text ended there and report a position that does not exist, so these are
/// caught first.
fn unprintable(text: &str) -> Option<(usize, usize, char)> {
    positions(text).find(|&(_, _, c)| {
        let printable = matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}';
        !printable
    })
}

/// Parses a duration such as `1s`, `250ms`, `2m`, or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| format!("`{t}` is not a duration ({e}); write e.g. 500ms, 1s, 2m"))
}

impl Config {
    /// Reads and validates a file. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&file, &text),
            Err(e) => {
                Err(ConfigErrors(vec![ConfigError { file, line: 1, column: 1, message: format!("cannot read: {e}") }]))
            }
        }
    }

    /// Parses and validates YAML text; `file` is used in error messages only.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        if let Some((line, column, c)) = unprintable(text) {
            let message = format!(
                "character U+{:04X} is not allowed in YAML (control characters other than tab, CR and LF)",
                c as u32
            );
            return Err(ConfigErrors(vec![ConfigError { file: file.to_string(), line, column, message }]));
        }
        let opts = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let root = marked_yaml::parse_yaml_with_options(0, text, opts)
            .map_err(|e| ConfigErrors(vec![load_error(file, text, &e)]))?;
        let mut errs = Errs { file, list: Vec::new() };
        let cfg = validate(&root, &mut errs);
        match (cfg, errs.list.is_empty()) {
            (Some(cfg), true) => Ok(cfg),
            _ => {
                if errs.list.is_empty() {
                    errs.at(root.span().start(), "invalid configuration");
                }
                for e in &mut errs.list {
                    (e.line, e.column) = within(text, e.line, e.column);
                }
                errs.list.sort_by_key(|e| (e.line, e.column));
                errs.list.dedup();
                Err(ConfigErrors(errs.list))
            }
        }
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn route_count(&self) -> usize {
        self.listeners.iter().map(|l| l.routes.len()).sum()
    }
}

fn validate(root: &Node, errs: &mut Errs<'_>) -> Option<Config> {
    let map = root.as_mapping()?;
    for (k, _) in map.iter() {
        if !TOP_KEYS.contains(&k.as_str()) {
            errs.at(k.span().start(), format!("unknown key `{}`; expected one of {}", k.as_str(), TOP_KEYS.join(", ")));
        }
    }
    let admin = match map.get_scalar("admin") {
        Some(s) => parse_addr(s.as_str(), s.span(), "admin", errs),
        None => defaults::ADMIN.parse().ok(),
    };
    let drain_delay = duration_key(map.get_scalar("drain_delay"), defaults::DRAIN_DELAY, errs);
    let shutdown_timeout = duration_key(map.get_scalar("shutdown_timeout"), defaults::SHUTDOWN_TIMEOUT, errs);
    for key in ["admin", "drain_delay", "shutdown_timeout"] {
        if let Some(n) = map.get_node(key) {
            if n.as_scalar().is_none() {
                errs.span(n.span(), format!("`{key}` must be a plain value"));
            }
        }
    }

    let mut backends = Vec::new();
    match map.get_node("backends") {
        None => errs.span(root.span(), "missing `backends`: at least one backend is needed"),
        Some(node) => match node.as_mapping() {
            None => errs.span(node.span(), "`backends` must be a mapping of name → backend"),
            Some(m) => {
                for (name, body) in m.iter() {
                    if let Some(b) = backend(name.as_str(), name.span(), body, errs) {
                        backends.push(b);
                    }
                }
            }
        },
    }
    let names: HashSet<&str> =
        map.get_mapping("backends").map(|m| m.keys().map(|k| k.as_str()).collect()).unwrap_or_default();

    let mut listeners = Vec::new();
    match map.get_node("listeners") {
        None => errs.span(root.span(), "missing `listeners`: at least one listener is needed"),
        Some(node) => match node.as_sequence() {
            None => errs.span(node.span(), "`listeners` must be a list"),
            Some(seq) if seq.is_empty() => errs.span(node.span(), "`listeners` is empty"),
            Some(seq) => {
                for l in seq.iter() {
                    if let Some(l) = listener(l, &names, errs) {
                        listeners.push(l);
                    }
                }
            }
        },
    }
    let mut seen_names = HashMap::new();
    let mut seen_binds = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if let Some(j) = seen_names.insert(l.name.clone(), i) {
            let _ = j;
            errs.span(root.span(), format!("listener name `{}` is used twice", l.name));
        }
        if l.bind.port() != 0 {
            if let Some(other) = seen_binds.insert(l.bind, l.name.clone()) {
                errs.span(root.span(), format!("listeners `{other}` and `{}` both bind {}", l.name, l.bind));
            }
        }
    }
    // Settings that make sense on one side only.
    for l in &listeners {
        let used: Vec<&str> = match l.protocol {
            Protocol::Tcp => l.backend.iter().chain(l.sni.iter().map(|r| &r.backend)).map(String::as_str).collect(),
            Protocol::Http => l.routes.iter().map(|r| r.backend.as_str()).collect(),
        };
        for b in backends.iter().filter(|b| used.contains(&b.name.as_str())) {
            let bad = match l.protocol {
                Protocol::Tcp if b.tls.is_some() => "sets `tls`, which tcp listeners do not originate (passthrough keeps the client's TLS)",
                Protocol::Http if b.send_proxy_protocol.is_some() => {
                    "sets `send_proxy_protocol`, which only tcp listeners send (pooled HTTP connections carry many clients)"
                }
                _ => continue,
            };
            let span = map.get_mapping("backends").and_then(|m| m.get_node(&b.name)).map(|n| *n.span());
            errs.span(
                &span.unwrap_or(*root.span()),
                format!("backend `{}` {bad}; it is used by listener `{}`", b.name, l.name),
            );
        }
    }
    // A static address that is one of ferry's own listeners would send requests back into ferry:
    // a loop that ends only when descriptors run out.
    let own = listeners.iter().map(|l| (l.bind, format!("listener `{}`", l.name)));
    let own: Vec<(SocketAddr, String)> = own.chain(admin.map(|a| (a, "the admin listener".to_string()))).collect();
    for b in &backends {
        for a in &b.addresses {
            if let Some((_, what)) = own.iter().find(|(bind, _)| loops_back(*bind, *a)) {
                let node = map.get_mapping("backends").and_then(|m| m.get_mapping(&b.name));
                let span = node.and_then(|m| m.get_node("addresses")).map(|n| *n.span()).unwrap_or(*root.span());
                errs.span(
                    &span,
                    format!("backend `{}`: {a} is {what} of this ferry; requests would loop back into it", b.name),
                );
            }
        }
    }
    Some(Config { admin: admin?, drain_delay: drain_delay?, shutdown_timeout: shutdown_timeout?, listeners, backends })
}

/// Does a connection to `addr` reach a socket bound to `bind` on this host? (Same port, and the
/// same IP, or a wildcard bind reached through loopback.)
fn loops_back(bind: SocketAddr, addr: SocketAddr) -> bool {
    bind.port() != 0
        && bind.port() == addr.port()
        && (bind.ip() == addr.ip()
            || (bind.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
}

fn duration_key(
    node: Option<&marked_yaml::types::MarkedScalarNode>,
    default: Duration,
    errs: &mut Errs<'_>,
) -> Option<Duration> {
    match node {
        None => Some(default),
        Some(s) => match parse_duration(s.as_str()) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.span(s.span(), e);
                None
            }
        },
    }
}

fn spanned_duration(v: &Option<Spanned<String>>, default: Duration, errs: &mut Errs<'_>) -> Duration {
    match v {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|e| {
            errs.span(s.span(), e);
            default
        }),
    }
}

/// A whole number field, parsed here (not by serde) so one bad value does not hide the others.
fn number<T: std::str::FromStr>(v: &Option<Spanned<String>>, key: &str, default: T, errs: &mut Errs<'_>) -> T {
    match v {
        None => default,
        Some(s) => s.trim().parse().unwrap_or_else(|_| {
            errs.span(s.span(), format!("{key}: `{}` is not a whole number", s.as_str()));
            default
        }),
    }
}

fn boolean(v: &Option<Spanned<String>>, key: &str, default: bool, errs: &mut Errs<'_>) -> bool {
    match v.as_ref().map(|s| (s, s.trim())) {
        None => default,
        Some((_, "true")) => true,
        Some((_, "false")) => false,
        Some((s, other)) => {
            errs.span(s.span(), format!("{key}: `{other}` is not true or false"));
            default
        }
    }
}

fn parse_addr(s: &str, span: &Span, what: &str, errs: &mut Errs<'_>) -> Option<SocketAddr> {
    match s.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.span(
                span,
                format!("{what}: `{s}` is not an IP:port address (for example 127.0.0.1:8080 or [::1]:8080)"),
            );
            None
        }
    }
}

fn listener(node: &Node, backends: &HashSet<&str>, errs: &mut Errs<'_>) -> Option<Listener> {
    let Some(map) = node.as_mapping() else {
        errs.span(node.span(), "a listener must be a mapping with name, bind and routes");
        return None;
    };
    // Deserialize the head without `routes`, then each route on its own so every bad route is reported.
    let mut head_map = map.clone();
    let routes_node = head_map.remove("routes");
    let head: RawListenerHead = errs.de(&Node::from(head_map), "listener")?;
    let name = head.name.trim().to_string();
    if name.is_empty() {
        errs.span(head.name.span(), "listener name is empty");
    }
    let bind = parse_addr(&head.bind, head.bind.span(), "bind", errs);
    let protocol = match head.protocol.as_ref().map(|p| p.as_str()) {
        None | Some("http") => Some(Protocol::Http),
        Some("tcp") => Some(Protocol::Tcp),
        Some(other) => {
            let p = head.protocol.as_ref().expect("matched Some");
            errs.span(p.span(), format!("protocol `{other}` is not supported; expected `http` or `tcp`"));
            None
        }
    };
    let idle_timeout = spanned_duration(&head.idle_timeout, defaults::TCP_IDLE_TIMEOUT, errs);
    let proxy_protocol = boolean(&head.proxy_protocol, "proxy_protocol", false, errs);
    let mut trusted_proxies = Vec::new();
    for c in head.trusted_proxies.iter().flatten() {
        let t = c.trim();
        // A bare address trusts just that address.
        match t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => {
                errs.span(c.span(), format!("trusted_proxies: `{t}` is not a CIDR (10.0.0.0/8) or an IP address"))
            }
        }
    }
    let at_least = |v: &Option<Spanned<String>>, key: &str, default: usize, min: usize, errs: &mut Errs<'_>| {
        let n = number(v, key, default, errs);
        if n < min {
            errs.span(
                v.as_ref().expect("below the minimum only when set").span(),
                format!("{key} must be at least {min}"),
            );
        }
        n
    };
    let limits = Limits {
        header_read_timeout: spanned_duration(&head.header_read_timeout, defaults::HEADER_READ_TIMEOUT, errs),
        max_header_bytes: at_least(&head.max_header_bytes, "max_header_bytes", defaults::MAX_HEADER_BYTES, 8192, errs),
        max_headers: at_least(&head.max_headers, "max_headers", defaults::MAX_HEADERS, 1, errs),
        max_uri_bytes: at_least(&head.max_uri_bytes, "max_uri_bytes", defaults::MAX_URI_BYTES, 16, errs),
        body_timeout: spanned_duration(&head.body_timeout, defaults::BODY_TIMEOUT, errs),
        min_body_rate: number(&head.min_body_rate, "min_body_rate", defaults::MIN_BODY_RATE, errs),
        max_connections: head
            .max_connections
            .as_ref()
            .map(|_| at_least(&head.max_connections, "max_connections", 0, 1, errs)),
    };
    if limits.header_read_timeout.is_zero() {
        errs.span(
            head.header_read_timeout.as_ref().expect("zero only when set").span(),
            "header_read_timeout must be greater than 0",
        );
    }
    if limits.body_timeout.is_zero() {
        errs.span(
            head.body_timeout.as_ref().expect("zero only when set").span(),
            "body_timeout must be greater than 0",
        );
    }
    let mut routes = Vec::new();
    let mut backend = None;
    let known_backend = |b: &Spanned<String>, errs: &mut Errs<'_>| {
        if backends.contains(b.as_str()) {
            Some(b.to_string())
        } else {
            errs.span(b.span(), format!("listener `{name}` names backend `{}`, which is not defined", b.as_str()));
            None
        }
    };
    if protocol == Some(Protocol::Tcp) {
        if let Some(rn) = &routes_node {
            errs.span(rn.span(), format!("listener `{name}` is tcp: it takes one `backend`, not `routes`"));
        }
        if let Some(t) = &head.tls {
            errs.span(
                t.span(),
                format!(
                    "listener `{name}` is tcp: TLS is terminated on http listeners; \
                     a tcp listener passes TLS through by server name with `sni`"
                ),
            );
        }
        let http_only = [
            ("header_read_timeout", &head.header_read_timeout),
            ("max_header_bytes", &head.max_header_bytes),
            ("max_headers", &head.max_headers),
            ("max_uri_bytes", &head.max_uri_bytes),
            ("body_timeout", &head.body_timeout),
            ("min_body_rate", &head.min_body_rate),
        ];
        for (key, v) in http_only {
            if let Some(v) = v {
                errs.span(v.span(), format!("listener `{name}` is tcp: `{key}` applies to http listeners only"));
            }
        }
        if let Some(t) = head.trusted_proxies.as_ref().and_then(|t| t.first()) {
            errs.span(
                t.span(),
                format!("listener `{name}` is tcp: `trusted_proxies` (X-Forwarded-For) applies to http listeners only"),
            );
        }
        let mut sni = Vec::new();
        for r in head.sni.iter().flat_map(|s| s.iter()) {
            let names: Vec<HostMatch> = r.server_names.iter().filter_map(|h| host_match(h, errs)).collect();
            if r.server_names.is_empty() {
                errs.span(r.server_names.span(), "server_names is empty");
            }
            if let Some(b) = known_backend(&r.backend, errs) {
                sni.push(SniRoute { server_names: names, backend: b });
            }
        }
        match &head.backend {
            None if head.sni.is_none() => {
                errs.span(node.span(), format!("tcp listener `{name}` needs a `backend` (or `sni` routes)"))
            }
            None => {}
            Some(b) => backend = known_backend(b, errs),
        }
        if idle_timeout.is_zero() {
            let s = head.idle_timeout.as_ref().expect("zero only when set");
            errs.span(s.span(), "idle_timeout must be greater than 0");
        }
        return Some(Listener {
            name,
            bind: bind?,
            protocol: Protocol::Tcp,
            routes,
            backend,
            idle_timeout,
            tls: None,
            proxy_protocol,
            sni,
            trusted_proxies,
            limits,
        });
    }
    for (key, v) in [("backend", &head.backend), ("idle_timeout", &head.idle_timeout)] {
        if let Some(v) = v {
            errs.span(v.span(), format!("`{key}` goes with `protocol: tcp`; http listeners route with `routes`"));
        }
    }
    if let Some(s) = &head.sni {
        errs.span(s.span(), "`sni` (TLS passthrough) goes with `protocol: tcp`");
    }
    let tls = head.tls.as_ref().map(|t| {
        if t.certificates.is_empty() {
            errs.span(t.certificates.span(), format!("listener `{name}`: tls.certificates is empty"));
        }
        let certificates = t
            .certificates
            .iter()
            .map(|c| CertPair { cert: relative_to(errs.file, &c.cert), key: relative_to(errs.file, &c.key) })
            .collect();
        ListenerTls { certificates }
    });
    match routes_node.as_ref() {
        None => errs.span(node.span(), format!("listener `{name}` has no `routes`")),
        Some(rn) => match rn.as_sequence() {
            None => errs.span(rn.span(), "`routes` must be a list"),
            Some(seq) if seq.is_empty() => {
                errs.span(rn.span(), format!("listener `{name}` has an empty `routes` list"))
            }
            Some(seq) => {
                for (i, r) in seq.iter().enumerate() {
                    if let Some(r) = route(&name, i, r, backends, errs) {
                        routes.push(r);
                    }
                }
            }
        },
    }
    Some(Listener {
        name,
        bind: bind?,
        protocol: protocol?,
        routes,
        backend,
        idle_timeout,
        tls,
        proxy_protocol,
        sni: Vec::new(),
        trusted_proxies,
        limits,
    })
}

/// A path from the config: relative ones are taken from the config file's directory.
fn relative_to(config_file: &str, p: &str) -> PathBuf {
    let p = Path::new(p.trim());
    match Path::new(config_file).parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn route(listener: &str, index: usize, node: &Node, backends: &HashSet<&str>, errs: &mut Errs<'_>) -> Option<Route> {
    let raw: RawRoute = errs.de(node, "route")?;
    let before = errs.list.len();
    let name = match &raw.name {
        Some(n) => n.trim().to_string(),
        None => format!("{listener}.{index}"),
    };
    if !backends.contains(raw.backend.as_str()) {
        let mut known: Vec<&str> = backends.iter().copied().collect();
        known.sort_unstable();
        errs.span(
            raw.backend.span(),
            format!(
                "route `{name}` names backend `{}`, which is not defined (defined: {})",
                raw.backend.as_str(),
                known.join(", ")
            ),
        );
    }
    let m = raw.matches.unwrap_or(RawMatch { host: None, path_prefix: None, headers: None });
    let host = m.host.as_ref().and_then(|h| host_match(h, errs));
    let path_prefix = m.path_prefix.as_ref().and_then(|p| {
        let s = p.trim();
        if !s.starts_with('/') {
            errs.span(p.span(), format!("path_prefix `{s}` must start with `/`"));
            return None;
        }
        if s.contains(['?', '#']) || s.contains(char::is_whitespace) {
            errs.span(p.span(), format!("path_prefix `{s}` may not contain `?`, `#` or spaces"));
            return None;
        }
        let trimmed = s.trim_end_matches('/');
        Some(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
    });
    let mut headers = Vec::new();
    if let Some(h) = &m.headers {
        let mut pairs: Vec<_> = h.iter().collect();
        pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (k, v) in pairs {
            let Ok(name) = HeaderName::from_bytes(k.trim().as_bytes()) else {
                errs.span(k.span(), format!("`{}` is not a valid header name", k.as_str()));
                continue;
            };
            let Ok(value) = HeaderValue::from_str(v.as_str()) else {
                errs.span(v.span(), format!("the value of header `{name}` is not a valid header value"));
                continue;
            };
            headers.push((name, value));
        }
    }
    let strip_prefix = boolean(&raw.strip_prefix, "strip_prefix", false, errs);
    if strip_prefix && path_prefix.is_none() {
        let s = raw.strip_prefix.as_ref().expect("strip_prefix was set");
        errs.span(s.span(), format!("route `{name}` sets strip_prefix but has no match.path_prefix to strip"));
    }
    let max_body_bytes = raw.max_body_bytes.as_ref().map(|_| number(&raw.max_body_bytes, "max_body_bytes", 0u64, errs));
    if errs.list.len() != before {
        return None;
    }
    Some(Route { name, host, path_prefix, headers, strip_prefix, backend: raw.backend.to_string(), max_body_bytes })
}

fn host_match(h: &Spanned<String>, errs: &mut Errs<'_>) -> Option<HostMatch> {
    let s = h.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    };
    if let Some(rest) = s.strip_prefix("*.") {
        if valid(rest) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if valid(&s) {
        return Some(HostMatch::Exact(s));
    }
    errs.span(
        h.span(),
        format!(
            "host `{}` is not a host name; use an exact name or a leading wildcard such as *.example.com (no port)",
            h.as_str()
        ),
    );
    None
}

fn backend(name: &str, name_span: &Span, node: &Node, errs: &mut Errs<'_>) -> Option<Backend> {
    let raw: RawBackend = errs.de(node, &format!("backend `{name}`"))?;
    let before = errs.list.len();
    let mut addresses = Vec::new();
    match (&raw.addresses, &raw.service) {
        (None, None) => errs.span(name_span, format!("backend `{name}` needs `addresses` or `service`")),
        (Some(a), Some(_)) => {
            errs.span(a.span(), format!("backend `{name}` has both `addresses` and `service`; use one"))
        }
        (None, Some(_)) => {}
        // An explicit empty list is allowed: the backend answers 503 until it has endpoints.
        (Some(list), None) => {
            for a in list.iter() {
                if let Some(addr) = parse_addr(a, a.span(), &format!("backend `{name}`"), errs) {
                    if addresses.contains(&addr) {
                        errs.span(a.span(), format!("backend `{name}` lists {addr} twice"));
                    }
                    addresses.push(addr);
                }
            }
        }
    }
    let service = raw.service.as_ref().and_then(|svc| service_ref(name, name_span, svc, &raw, errs));
    if raw.service.is_none() {
        for (key, v) in [("port", &raw.port), ("include_not_ready", &raw.include_not_ready), ("pod", &raw.pod)] {
            if let Some(v) = v {
                errs.span(v.span(), format!("backend `{name}`: `{key}` goes with `service`"));
            }
        }
    }
    let balance = match &raw.balance {
        None => Balance::RoundRobin,
        Some(b) => match b.as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_request" | "least_connections" => Balance::LeastRequest,
            "client_ip" => Balance::ClientIp,
            other => {
                errs.span(
                    b.span(),
                    format!("balance `{other}` is unknown; expected round_robin, least_request or client_ip"),
                );
                Balance::RoundRobin
            }
        },
    };
    let connect_timeout = spanned_duration(&raw.connect_timeout, defaults::CONNECT_TIMEOUT, errs);
    if connect_timeout.is_zero() {
        let s = raw.connect_timeout.as_ref().expect("zero only when set");
        errs.span(s.span(), "connect_timeout must be greater than 0");
    }
    let request_timeout = spanned_duration(&raw.request_timeout, defaults::REQUEST_TIMEOUT, errs);
    let retries = number(&raw.retries, "retries", defaults::RETRIES, errs);
    if retries > defaults::MAX_RETRIES {
        let r = raw.retries.as_ref().expect("set");
        errs.span(r.span(), format!("retries {retries} is more than the maximum of {}", defaults::MAX_RETRIES));
    }
    let eject_after = number(&raw.eject_after, "eject_after", defaults::EJECT_AFTER, errs);
    if eject_after == 0 {
        let r = raw.eject_after.as_ref().expect("set");
        errs.span(r.span(), "eject_after must be at least 1");
    }
    let b = Backend {
        name: name.to_string(),
        addresses,
        service,
        hold_for_endpoints: spanned_duration(&raw.hold_for_endpoints, Duration::ZERO, errs),
        balance,
        connect_timeout,
        request_timeout: Some(request_timeout).filter(|d| !d.is_zero()),
        retries,
        idle_timeout: spanned_duration(&raw.idle_timeout, defaults::IDLE_TIMEOUT, errs),
        max_idle_per_endpoint: number(
            &raw.max_idle_per_endpoint,
            "max_idle_per_endpoint",
            defaults::MAX_IDLE_PER_ENDPOINT,
            errs,
        ),
        eject_after,
        eject_for: spanned_duration(&raw.eject_for, defaults::EJECT_FOR, errs),
        preserve_host: boolean(&raw.preserve_host, "preserve_host", true, errs),
        tls: raw.tls.as_ref().and_then(|t| upstream_tls(name, t, errs)),
        send_proxy_protocol: match raw.send_proxy_protocol.as_ref().map(|v| (v, v.trim())) {
            None => None,
            Some((_, "v1")) => Some(ProxyProtocol::V1),
            Some((_, "v2")) => Some(ProxyProtocol::V2),
            Some((v, other)) => {
                errs.span(v.span(), format!("send_proxy_protocol `{other}` is not v1 or v2"));
                None
            }
        },
    };
    (errs.list.len() == before).then_some(b)
}

fn upstream_tls(backend: &str, t: &RawUpstreamTls, errs: &mut Errs<'_>) -> Option<UpstreamTls> {
    let server_name = t.server_name.as_ref().map(|n| n.trim().to_string());
    if let (Some(n), Some(raw)) = (&server_name, &t.server_name) {
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            errs.span(
                raw.span(),
                format!("backend `{backend}`: tls.server_name `{n}` is not a DNS name or IP address"),
            );
            return None;
        }
    }
    Some(UpstreamTls { ca: relative_to(errs.file, &t.ca), server_name })
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn service_ref(
    backend: &str,
    name_span: &Span,
    svc: &Spanned<String>,
    raw: &RawBackend,
    errs: &mut Errs<'_>,
) -> Option<ServiceRef> {
    let text = svc.trim();
    let (name, namespace) = match text.split_once('.') {
        Some((n, ns)) => (n, Some(ns)),
        None => (text, None),
    };
    let mut ok = true;
    if !dns_label(name) || namespace.is_some_and(|ns| !dns_label(ns)) {
        errs.span(
            svc.span(),
            format!("backend `{backend}`: service `{text}` is not `name` or `name.namespace` (lower-case DNS labels)"),
        );
        ok = false;
    }
    let port = match &raw.port {
        None => {
            errs.span(name_span, format!("backend `{backend}` names a service but no `port` (number or name)"));
            None
        }
        Some(p) => {
            let t = p.trim();
            match t.parse::<u16>() {
                Ok(0) => {
                    errs.span(p.span(), "port 0 is not a Service port");
                    None
                }
                Ok(n) => Some(PortRef::Number(n)),
                Err(_) if dns_label(t) && t.len() <= 15 => Some(PortRef::Name(t.to_string())),
                Err(_) => {
                    errs.span(p.span(), format!("port `{t}` is neither a port number nor a port name"));
                    None
                }
            }
        }
    };
    let include_not_ready = boolean(&raw.include_not_ready, "include_not_ready", false, errs);
    let pod = raw.pod.as_ref().map(|p| p.trim().to_string());
    if let (Some(p), Some(raw_pod)) = (&pod, &raw.pod) {
        if p.is_empty() || p.len() > 253 {
            errs.span(raw_pod.span(), "pod must be a pod name");
        }
    }
    Some(ServiceRef {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        port: port?,
        include_not_ready,
        pod,
    })
    .filter(|_| ok)
}

impl Config {
    /// Does any backend follow a Kubernetes Service?
    pub fn uses_kubernetes(&self) -> bool {
        self.backends.iter().any(|b| b.service.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - match: { host: WWW.Example.com }
        backend: a
      - match: { path_prefix: /eureka/, headers: { x-user: alice } }
        strip_prefix: true
        backend: a
      - backend: a
backends:
  a:
    addresses: [127.0.0.1:1, '[::1]:2']
    balance: client_ip
    request_timeout: 0
";

    #[test]
    fn positions_name_places_that_exist_in_the_file() {
        let at = |text: &str| {
            let e = &Config::parse("t.yaml", text).unwrap_err().0[0];
            (e.line, e.column, e.message.clone())
        };
        // A NUL would end the parser's view of the text; it is reported where it is.
        let (line, column, message) = at("listeners: []\nbackends: {a: \0}\n");
        assert_eq!((line, column), (2, 15), "{message}");
        assert!(message.contains("U+0000"), "{message}");
        // A syntax error at the end of a text without a final line break is on its last line.
        let (line, column, message) = at("listeners:\n  - name: web\n  y#");
        assert_eq!((line, column), (3, 5), "{message}");
        // CR LF, CR and LF each end a line, as the parser counts them.
        let (line, _, message) = at("backends: {}\r\nlisteners: []\r\r\x07");
        assert_eq!(line, 4, "{message}");
    }

    #[test]
    fn http_limits_on_a_tcp_listener_are_refused() {
        let text = "\
listeners:
  - { name: db, bind: 127.0.0.1:0, protocol: tcp, backend: a, max_connections: 10, idle_timeout: 1m }
  - name: db2
    bind: 127.0.0.1:0
    protocol: tcp
    backend: a
    header_read_timeout: 5s
    min_body_rate: 100
    trusted_proxies: [10.0.0.0/8]
backends:
  a: { addresses: [10.0.0.1:3306] }
";
        let errs = Config::parse("t.yaml", text).unwrap_err().0;
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("t.yaml:7:") && lines[0].contains("`header_read_timeout` applies to http"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("t.yaml:8:") && lines[1].contains("`min_body_rate`"), "{lines:#?}");
        assert!(lines[2].starts_with("t.yaml:9:") && lines[2].contains("`trusted_proxies`"), "{lines:#?}");
    }

    #[test]
    fn a_backend_pointing_at_ferry_itself_is_refused() {
        let text = "\
admin: 127.0.0.1:9901
listeners:
  - { name: web, bind: 0.0.0.0:8080, routes: [ { backend: self } ] }
  - { name: db, bind: 127.0.0.1:3306, protocol: tcp, backend: admin }
backends:
  self: { addresses: [10.0.0.1:8080, 127.0.0.1:8080] }
  admin: { addresses: ['127.0.0.1:9901'] }
";
        let errs = Config::parse("t.yaml", text).unwrap_err().0;
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("t.yaml:6:") && lines[0].contains("127.0.0.1:8080 is listener `web`"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("t.yaml:7:") && lines[1].contains("the admin listener"), "{lines:#?}");
        // Another host on the same port is fine.
        assert!(Config::parse(
            "t.yaml",
            &text.replace(", 127.0.0.1:8080", "").replace("127.0.0.1:9901']", "10.0.0.2:9901']")
        )
        .is_ok());
    }

    #[test]
    fn parses_and_normalises() {
        let c = Config::parse("t.yaml", GOOD).unwrap();
        assert_eq!(c.admin, "127.0.0.1:9901".parse().unwrap());
        let r = &c.listeners[0].routes;
        assert_eq!(r[0].host, Some(HostMatch::Exact("www.example.com".into())));
        assert_eq!(r[1].path_prefix.as_deref(), Some("/eureka"));
        assert_eq!(r[1].headers[0].0.as_str(), "x-user");
        assert_eq!(r[2].name, "web.2");
        let b = &c.backends[0];
        assert_eq!(b.balance, Balance::ClientIp);
        assert_eq!(b.request_timeout, None);
        assert_eq!(b.connect_timeout, defaults::CONNECT_TIMEOUT);
        assert_eq!(b.addresses.len(), 2);
    }

    #[test]
    fn reports_every_error_with_position() {
        let text = "\
listeners:
  - name: web
    bind: nowhere
    routes:
      - match: { path_prefix: eureka }
        backend: missing
      - match: { host: 'a b' }
        backend: a
        colour: blue
backends:
  a:
    addresses: [127.0.0.1:1]
    balance: random
    connect_timeout: soon
";
        let errs = Config::parse("r.yaml", text).unwrap_err().0;
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str, line: usize| {
            errs.iter().any(|e| e.line == line && e.message.contains(needle) && e.file == "r.yaml")
        };
        assert!(has("balance `random`", 13), "{lines:#?}");
        assert!(has("not a duration", 14), "{lines:#?}");
        assert!(has("not an IP:port", 3), "{lines:#?}");
        assert!(has("must start with `/`", 5), "{lines:#?}");
        assert!(has("backend `missing`", 6), "{lines:#?}");
        assert!(has("colour", 7) || has("colour", 9), "{lines:#?}");
        assert!(lines.iter().all(|l| l.starts_with("r.yaml:")), "{lines:#?}");
    }

    #[test]
    fn tls_proxy_protocol_and_sni_settings_go_where_they_make_sense() {
        let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:8443
    proxy_protocol: yes
    sni: [ { server_names: [a.example.com], backend: plain } ]
    tls: { certificates: [ { cert: certs/tls.crt, key: /abs/tls.key } ] }
    routes: [ { backend: pp } ]
  - name: db
    bind: 127.0.0.1:3306
    protocol: tcp
    tls: { certificates: [] }
    sni: [ { server_names: ['*.db.example.com'], backend: secure } ]
backends:
  plain: { addresses: [10.0.0.1:80] }
  pp: { addresses: [10.0.0.2:80], send_proxy_protocol: v3 }
  secure: { addresses: [10.0.0.3:443], tls: { ca: ca.pem, server_name: 'not a name' } }
";
        let errs = Config::parse("/etc/ferry/routes.yaml", text).unwrap_err().0;
        let at = |line: usize, needle: &str| {
            assert!(
                errs.iter().any(|e| e.line == line && e.message.contains(needle)),
                "line {line} `{needle}`: {errs:#?}"
            )
        };
        at(4, "proxy_protocol: `yes` is not true or false");
        at(5, "`sni` (TLS passthrough) goes with `protocol: tcp`");
        at(11, "TLS is terminated on http listeners");
        at(15, "send_proxy_protocol `v3` is not v1 or v2");
        at(16, "tls.server_name `not a name` is not a DNS name");

        let ok = text
            .replace("proxy_protocol: yes", "proxy_protocol: true")
            .replace("    sni: [ { server_names: [a.example.com], backend: plain } ]\n", "")
            .replace("    tls: { certificates: [] }\n", "")
            .replace(", send_proxy_protocol: v3", "")
            .replace(", server_name: 'not a name'", "");
        // A backend with upstream TLS cannot serve a tcp listener (passthrough keeps the client's TLS).
        let errs = Config::parse("r.yaml", &ok).unwrap_err().0;
        assert!(errs.iter().any(|e| e.line == 14 && e.message.contains("backend `secure` sets `tls`")), "{errs:#?}");
        let ok = ok.replace(", tls: { ca: ca.pem }", "");
        let c = Config::parse("/etc/ferry/routes.yaml", &ok).unwrap_or_else(|e| panic!("{e}"));
        let certs = &c.listeners[0].tls.as_ref().unwrap().certificates[0];
        assert_eq!(certs.cert, Path::new("/etc/ferry/certs/tls.crt"));
        assert_eq!(certs.key, Path::new("/abs/tls.key"));
        assert!(c.listeners[0].proxy_protocol);
        assert_eq!(c.listeners[1].sni[0].server_names, [HostMatch::Suffix(".db.example.com".into())]);
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = Config::parse("s.yaml", "listeners:\n  - name: [web\n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("syntax"), "{:?}", errs[0]);
        assert!(errs[0].line >= 2, "{:?}", errs[0]);
    }

    #[test]
    fn unknown_top_key_and_duplicate_key() {
        let errs = Config::parse("u.yaml", "listners: []\n").unwrap_err().0;
        assert!(errs.iter().any(|e| e.line == 1 && e.message.contains("unknown key `listners`")), "{errs:?}");
        let dup = "backends:\n  a: { addresses: [127.0.0.1:1] }\n  a: { addresses: [127.0.0.1:2] }\nlisteners: []\n";
        let errs = Config::parse("d.yaml", dup).unwrap_err().0;
        assert!(errs[0].message.contains("duplicate key `a`"), "{errs:?}");
        assert_eq!(errs[0].line, 3);
    }

    #[test]
    fn wildcard_host_and_root_prefix() {
        let text = GOOD.replace("WWW.Example.com", "'*.Example.com'").replace("/eureka/", "/");
        let c = Config::parse("w.yaml", &text).unwrap();
        assert_eq!(c.listeners[0].routes[0].host, Some(HostMatch::Suffix(".example.com".into())));
        assert_eq!(c.listeners[0].routes[1].path_prefix.as_deref(), Some("/"));
    }

    #[test]
    fn service_backends() {
        let text = "\
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: eureka } ] } ]
backends:
  config: { service: jycloud-config.default, port: 8088 }
  eureka: { service: eureka.test-basic-eureka, port: eureka, balance: client_ip, pod: eureka-0 }
  nacos: { service: nacos-headless, port: 8848, include_not_ready: true, hold_for_endpoints: 30s }
";
        let c = Config::parse("k.yaml", text).unwrap();
        let svc = |i: usize| c.backends[i].service.clone().unwrap();
        assert_eq!(svc(0).namespace.as_deref(), Some("default"));
        assert_eq!(svc(0).port, PortRef::Number(8088));
        assert_eq!(svc(1).port, PortRef::Name("eureka".into()));
        assert_eq!(svc(1).pod.as_deref(), Some("eureka-0"));
        assert_eq!(svc(2).namespace, None);
        assert!(svc(2).include_not_ready);
        assert_eq!(c.backends[2].hold_for_endpoints, Duration::from_secs(30));
        assert!(c.uses_kubernetes());
        let bad = "\
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: a } ] } ]
backends:
  a: { service: Eureka_Svc, port: 80 }
  b: { service: x, addresses: [127.0.0.1:1], port: 1 }
  c: { service: y }
  d: { addresses: [127.0.0.1:1], pod: eureka-0 }
";
        let errs = Config::parse("b.yaml", bad).unwrap_err().0;
        let has = |line: usize, w: &str| errs.iter().any(|e| e.line == line && e.message.contains(w));
        assert!(has(3, "not `name` or `name.namespace`"), "{errs:?}");
        assert!(has(4, "both `addresses` and `service`"), "{errs:?}");
        assert!(has(5, "no `port`"), "{errs:?}");
        assert!(has(6, "`pod` goes with `service`"), "{errs:?}");
    }

    #[test]
    fn tcp_listeners() {
        let text = "\
listeners:
  - { name: mysql, bind: 127.0.0.1:0, protocol: tcp, backend: db, idle_timeout: 30s }
  - { name: bad, bind: 127.0.0.1:0, protocol: tcp, routes: [ { backend: db } ] }
  - { name: web, bind: 127.0.0.1:0, backend: db, routes: [ { backend: db } ] }
backends:
  db: { addresses: [127.0.0.1:3306], balance: least_connections }
";
        let errs = Config::parse("t.yaml", text).unwrap_err().0;
        let has = |line: usize, w: &str| errs.iter().any(|e| e.line == line && e.message.contains(w));
        assert!(has(3, "takes one `backend`, not `routes`"), "{errs:?}");
        assert!(has(3, "needs a `backend`"), "{errs:?}");
        assert!(has(4, "goes with `protocol: tcp`"), "{errs:?}");
        let good = text
            .lines()
            .filter(|l| !l.contains("name: bad") && !l.contains("name: web"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse("t.yaml", &good).unwrap();
        assert_eq!(c.listeners[0].protocol, Protocol::Tcp);
        assert_eq!(c.listeners[0].backend.as_deref(), Some("db"));
        assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(30));
        assert_eq!(c.backends[0].balance, Balance::LeastRequest);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
    }
}
