//! routes.yaml as written: serde structs with `deny_unknown_fields`, every value `Spanned` so the
//! validators can point at it. Scalars stay strings here and are parsed by `fields` (so one bad value
//! does not hide the others).

use std::collections::HashMap;

use marked_yaml::Spanned;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerHead {
    pub(super) name: Spanned<String>,
    /// Validated route by route from the node itself (so every bad route is reported); named here
    /// so an unknown listener key lists it among the valid ones.
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) routes: Option<serde::de::IgnoredAny>,
    pub(super) bind: Spanned<String>,
    #[serde(default)]
    pub(super) protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) backend: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tls: Option<Spanned<RawListenerTls>>,
    #[serde(default)]
    pub(super) proxy_protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sni: Option<Spanned<Vec<RawSniRoute>>>,
    #[serde(default)]
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) header_read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_header_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_headers: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_uri_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_connections: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) body_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) min_body_rate: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) compress: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) compress_min_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) error_pages: Option<RawErrorPages>,
    #[serde(default)]
    pub(super) access_log: Option<Spanned<RawAccessLog>>,
    #[serde(default)]
    pub(super) request_id: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trace_context: Option<Spanned<RawTraceContext>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    #[serde(default)]
    pub(super) format: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) to: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) escape: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraceContext {
    #[serde(default)]
    pub(super) start: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sample: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerTls {
    pub(super) certificates: Spanned<Vec<RawCertPair>>,
    #[serde(default)]
    pub(super) client_ca: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) client_certificate: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertPair {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSniRoute {
    pub(super) server_names: Spanned<Vec<Spanned<String>>>,
    pub(super) backend: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddress {
    pub(super) address: Spanned<String>,
    #[serde(default)]
    pub(super) weight: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) backup: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) down: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    #[serde(default)]
    pub(super) ca: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) insecure_skip_verify: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    pub(super) matches: Option<RawMatch>,
    #[serde(default)]
    pub(super) strip_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_body_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) backend: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) split: Option<Spanned<Vec<RawSplit>>>,
    /// `true`/`false`, or a list of `{ from, to }`: read from the node in `route`.
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) rewrite_cookie_path: Option<serde::de::IgnoredAny>,
    /// `true`/`false`, or a list of `{ from, to }`: read from the node in `route` (named here so an
    /// unknown key lists it).
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) rewrite_location: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) body_replace: Option<Spanned<Vec<RawReplace>>>,
    #[serde(default)]
    pub(super) body_replace_types: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) body_replace_once: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) body_replace_ignore_case: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) access: Option<Spanned<Vec<RawAccess>>>,
    #[serde(default)]
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
    #[serde(default)]
    pub(super) forward_auth: Option<Spanned<RawForwardAuth>>,
    #[serde(default)]
    pub(super) intercept_errors: Option<Spanned<RawInterceptErrors>>,
    #[serde(default)]
    pub(super) max_requests_per_client: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) satisfy: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub(super) redirect: Option<Spanned<RawRedirect>>,
    #[serde(default)]
    pub(super) respond: Option<Spanned<RawRespond>>,
    #[serde(default)]
    pub(super) rewrite: Option<Spanned<RawRewrite>>,
    #[serde(default)]
    pub(super) request_headers: Option<RawHeaderActions>,
    #[serde(default)]
    pub(super) response_headers: Option<RawHeaderActions>,
    #[serde(default, rename = "static")]
    pub(super) files: Option<Spanned<RawStatic>>,
    #[serde(default)]
    pub(super) compress: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) compress_min_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) error_pages: Option<RawErrorPages>,
    #[serde(default)]
    pub(super) forwarded_headers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatic {
    #[serde(default)]
    pub(super) root: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) alias: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) index: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) fallback: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) cache: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) html_cache: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) precompressed: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) missing: Option<Spanned<String>>,
}

/// `error_pages`: status → file.
pub(super) type RawErrorPages = HashMap<Spanned<String>, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    #[serde(default)]
    pub(super) host: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path_exact: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path_starts_with: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) headers: Option<HashMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    pub(super) when: Option<Spanned<Vec<RawCondition>>>,
}

/// One `match.when` condition: a variable and one test of it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
    pub(super) var: Spanned<String>,
    #[serde(default)]
    pub(super) equals: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) not_equals: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) not_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) set: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplace {
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocationRule {
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSplit {
    pub(super) backend: Spanned<String>,
    pub(super) weight: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    #[serde(default)]
    pub(super) allow: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) deny: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) rate: Spanned<String>,
    #[serde(default)]
    pub(super) burst: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) status: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    #[serde(default)]
    pub(super) realm: Option<Spanned<String>>,
    pub(super) htpasswd: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardAuth {
    pub(super) backend: Spanned<String>,
    #[serde(default)]
    pub(super) path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers: Option<HashMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    pub(super) copy_to_request: Option<HashMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    pub(super) copy_to_response: Option<HashMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub(super) to: Spanned<String>,
    #[serde(default)]
    pub(super) status: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespond {
    #[serde(default)]
    pub(super) status: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) body: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) content_type: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrite {
    #[serde(default)]
    pub(super) prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) to: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) reroute: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderActions {
    #[serde(default)]
    pub(super) set: Option<HashMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    pub(super) add: Option<HashMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    pub(super) remove: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) on_success: Option<Spanned<Box<RawHeaderActions>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    #[serde(default)]
    /// Each entry an `IP:port` or `{ address, weight, backup, down }`: read from the node in
    /// `backend` (named here so an unknown key lists it).
    #[allow(dead_code)]
    pub(super) addresses: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) service: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) port: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) include_not_ready: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) pod: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hold_for_endpoints: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) balance: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rewrite_location: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dns_refresh: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) send_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) retry_on: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) retries: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_idle_per_endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) eject_after: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) eject_for: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) preserve_host: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tls: Option<Spanned<RawUpstreamTls>>,
    #[serde(default)]
    pub(super) send_proxy_protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) affinity_cookie: Option<Spanned<RawAffinityCookie>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAffinityCookie {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) expires: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) secure: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) same_site: Option<Spanned<String>>,
}

pub(super) const TOP_KEYS: &[&str] = &["admin", "drain_delay", "shutdown_timeout", "listeners", "backends"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterceptErrors {
    pub(super) backend: Spanned<String>,
    pub(super) statuses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) headers: Option<HashMap<Spanned<String>, Spanned<String>>>,
}
