//! The request-head path ferry owns, free of I/O: the checks hyper leaves to ferry, the route
//! path normalisation, the route
//! choice, the per-route limits that a head alone decides, and the head as the upstream gets it
//! (hop-by-hop headers gone, forwarding headers set, prefix stripped). `proxy::http` calls these
//! in order for every request; `crate::fuzzing` drives them with arbitrary heads.

use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use super::error::ProxyError;
pub use super::headers::Hop;
use super::headers::{
    add_forwarded_prefix, replace_prefix, routing_host, set_forwarded, strip_hop_by_hop, wants_upgrade,
};
use super::path::{normalize, PathError};
use crate::table::{ListenerRoutes, RouteEntry};

/// Why the early phase refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// 400, with the reason.
    Bad(&'static str),
    /// CONNECT: 405. A CONNECT answered 2xx turns the connection into a tunnel (RFC 9112 §9.3.2
    /// and 9110 §9.3.6); ferry has no route kind for tunnels, so it never forwards one, and the
    /// connection closes after the answer (the client may already be sending tunnel bytes).
    Connect,
    /// A transfer coding other than chunked: 501 (RFC 9112 §6.1), and the connection closes (the
    /// body's end cannot be found).
    Coding,
}

/// The early phase: what a request's target and Host must be before anything reads them. Every
/// later phase (routing, actions, forwarding headers, the access log) reads the host from one
/// place, the Host header, which this makes true:
///
/// - RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and a Host that is not a valid
///   `host [":" port]` is refused (400) — see [`valid_authority`].
/// - RFC 9112 §3.2.2: an absolute-form target's authority replaces Host (the Host sent is
///   ignored, once checked); its scheme is http or https, and userinfo in it is refused (RFC 9110
///   §4.2.4). HTTP/2's `:authority` is the same thing; a Host that names another authority beside
///   it is refused (RFC 9113 §8.3.1).
/// - RFC 9112 §3.2.3/§3.2.4: authority-form only with CONNECT, asterisk-form only with OPTIONS,
///   and anything else starts with `/` (origin-form).
/// - CONNECT is refused ([`Early::Connect`]).
/// - RFC 9112 §6.1 and §7: a request's Transfer-Encoding (all its fields, as one list) is
///   `chunked` once and last; ferry decodes no other coding, so `chunked` alone — anything
///   else is 501 ([`Early::Coding`]), and `chunked` twice or not last is 400. (hyper, which takes
///   the unusual heads, accepts `gzip, chunked` and `chunked, chunked` and would hand over a body
///   whose coding the upstream is never told of.)
pub fn check_target<B>(req: &mut Request<B>) -> Result<(), Early> {
    use Early::Bad;
    if req.method() == Method::CONNECT {
        return Err(Early::Connect);
    }
    if req.headers().contains_key(TRANSFER_ENCODING) {
        let codings = req.headers().get_all(TRANSFER_ENCODING).iter().flat_map(|v| crate::http1::list(v.as_bytes()));
        let (mut chunked, mut other, mut last_chunked) = (0, 0, false);
        for c in codings {
            last_chunked = c.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                chunked += 1;
            } else {
                other += 1;
            }
        }
        if chunked > 1 || (chunked == 1 && !last_chunked) {
            return Err(Bad("chunked applied more than once, or not last"));
        }
        if other > 0 {
            return Err(Early::Coding);
        }
    }
    let uri = req.uri();
    let h2 = req.version() == Version::HTTP_2;
    if uri.path() == "*" && uri.authority().is_none() {
        if req.method() != Method::OPTIONS {
            return Err(Bad("asterisk-form target on a method other than OPTIONS"));
        }
    } else if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(Bad("authority-form target on a method other than CONNECT"));
    } else if !uri.path().starts_with('/') && uri.path() != "*" {
        return Err(Bad("request target is not origin-form"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Bad("absolute-form target with a scheme other than http or https"));
        }
    }
    let authority = match uri.authority() {
        Some(a) if a.as_str().contains('@') => return Err(Bad("userinfo in the request target")),
        Some(a) if !valid_authority(a.as_str().as_bytes()) => {
            return Err(Bad("invalid authority in the request target"))
        }
        Some(a) => Some(a.clone()),
        None => None,
    };
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Bad("more than one Host header"));
    }
    match host {
        Some(h) if !valid_authority(h.as_bytes()) => return Err(Bad("invalid Host header")),
        Some(h)
            if h2 && authority.as_ref().is_some_and(|a| !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes())) =>
        {
            return Err(Bad("Host header differs from :authority"))
        }
        Some(_) => {}
        None if req.version() == Version::HTTP_11 => return Err(Bad("HTTP/1.1 request without Host")),
        None => {}
    }
    if let Some(a) = authority {
        let v = HeaderValue::from_str(a.as_str()).map_err(|_| Bad("invalid authority in the request target"))?;
        req.headers_mut().insert(HOST, v);
    }
    Ok(())
}

/// RFC 3986 `host [":" port]`, as a Host header or a target's authority may carry it: an IP
/// literal in brackets, or a name of letters, digits, `-`, `.`, `_` and `~` (RFC 3986's
/// unreserved characters) with no empty label inside it (a trailing dot, the DNS root, is
/// allowed); then an optional port, up to 65535 (empty, as RFC 3986 allows, means none).
///
/// Stricter than RFC 3986's reg-name in one way, on purpose: percent-escapes and sub-delims
/// (`,` `;` `!` `$` `&` `'` `(` `)` `*` `+` `=`) are refused. No DNS name carries them, ferry
/// would route `admin%2etest` differently from what an upstream decodes, and `,` makes a Host
/// that other software reads as a list (nginx refuses `/`, `\` and empty labels for the same
/// reason).
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = match v.first() {
        Some(b'[') => match v.iter().position(|&b| b == b']') {
            Some(end) => {
                let inner = &v[1..end];
                let ok = !inner.is_empty()
                    && inner.iter().all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
                    && std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
                if !ok {
                    return false;
                }
                match &v[end + 1..] {
                    [] => return true,
                    [b':', port @ ..] => (&v[..0], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        },
    };
    if let Some(p) = port {
        let digits = p.len() <= 5 && p.iter().all(u8::is_ascii_digit);
        if !digits || p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) > 65535 {
            return false;
        }
    }
    if v.first() == Some(&b'[') {
        return true;
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    !name.is_empty()
        && name.split(|&b| b == b'.').all(|label| !label.is_empty())
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Replaces the request's path by its normal form (see `proxy::path`), so that routing and the
/// upstream read the same path; the query is kept as sent. Returns the target as sent when it
/// changed (for `$request_uri`). Fails for a path that must be refused (400).
pub fn normalize_target<B>(req: &mut Request<B>) -> Result<Option<PathAndQuery>, PathError> {
    let uri = req.uri();
    let path = match normalize(uri.path())? {
        std::borrow::Cow::Borrowed(_) => return Ok(None),
        std::borrow::Cow::Owned(p) => p,
    };
    let original = uri.path_and_query().cloned();
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| PathError::BadEscape)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::BadEscape)?;
    Ok(original)
}

/// The index of the route `listener` picks for `req`: by the URI's host (HTTP/2, absolute form)
/// or the Host header, then path and headers; first match in config order.
pub fn route_index<B>(listener: &ListenerRoutes, req: &Request<B>) -> Option<usize> {
    let host = routing_host(req.uri().host(), req.headers().get(HOST));
    listener.lookup_index(&host, req.uri().path(), req.method(), req.headers())
}

/// The limits a head alone decides: the target against `max_uri_bytes` (414), a declared
/// Content-Length against the route's `max_body_bytes` (413). A body of unknown length is counted
/// as it streams.
pub fn check_limits<B>(listener: &ListenerRoutes, route: &RouteEntry, req: &Request<B>) -> Result<(), ProxyError> {
    let max = listener.limits.max_uri_bytes;
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > max {
        return Err(ProxyError::UriTooLong { listener: listener.name.to_string(), len, max });
    }
    if let Some(max) = route.max_body_bytes {
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| crate::http1::content_length(v.as_bytes()));
        if declared.is_some_and(|len| len > max) {
            return Err(ProxyError::BodyTooLarge { route: route.name.to_string(), max });
        }
    }
    Ok(())
}

/// The real client behind trusted proxies (nginx `set_real_ip_from` with `real_ip_recursive on`):
/// walking `X-Forwarded-For` from the right, the first address that is not itself a trusted
/// proxy; the left-most if all are; `peer` if there is no usable header. Call only for a trusted
/// peer (anyone else's X-Forwarded-For says nothing).
pub fn real_client(headers: &HeaderMap, trusted: &[ipnet::IpNet], peer: std::net::IpAddr) -> std::net::IpAddr {
    let mut last = None;
    let lines: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for v in lines.iter().rev() {
        let Ok(text) = v.to_str() else { return last.unwrap_or(peer) };
        for item in text.rsplit(',') {
            let Ok(ip) = item.trim().parse::<std::net::IpAddr>() else { return last.unwrap_or(peer) };
            let ip = ip.to_canonical();
            if !trusted.iter().any(|n| n.contains(&ip)) {
                return ip;
            }
            last = Some(ip);
        }
    }
    last.unwrap_or(peer)
}

/// Is this an HTTP/1.1 upgrade (WebSocket) request?
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && wants_upgrade(req.headers())
}

/// The head as the upstream gets it, less the endpoint's authority (and Host, unless the backend
/// preserves it), which are set per attempt.
pub struct UpstreamHead {
    pub headers: HeaderMap,
    pub path_and_query: PathAndQuery,
}

/// Rewrites a routed request's head for the upstream: hop-by-hop headers removed (an upgrade's
/// `Connection: upgrade` and `Upgrade` kept), `Expect` removed (hyper answers 100-continue when
/// ferry reads the body), X-Forwarded-For/-Proto/-Host/-Port set, the Host kept when the backend
/// `preserve_host`s, and the target: `rewritten` (a regex rewrite) if given, else the path with the
/// route's prefix replaced (`strip_prefix`, `rewrite.prefix`, the removed prefix then going into
/// `X-Forwarded-Prefix`), else the path as routed.
pub fn upstream_head(
    route: &RouteEntry,
    preserve_host: bool,
    uri: &Uri,
    mut headers: HeaderMap,
    upgrade: bool,
    hop: &Hop<'_>,
    rewritten: Option<PathAndQuery>,
) -> UpstreamHead {
    let host_value =
        headers.get(HOST).cloned().or_else(|| uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    strip_hop_by_hop(&mut headers, upgrade);
    headers.remove(EXPECT);
    if route.forwarded_headers {
        set_forwarded(&mut headers, hop, host_value.clone());
    }
    if preserve_host && !headers.contains_key(HOST) {
        if let Some(h) = host_value {
            headers.insert(HOST, h);
        }
    }
    let path_and_query = match (rewritten, route.prefix_rewrite.as_deref(), route.path_prefix.as_deref()) {
        (Some(pq), _, _) => pq,
        (None, Some(with), Some(prefix)) => {
            if prefix != "/" {
                add_forwarded_prefix(&mut headers, prefix);
            }
            let pq = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            replace_prefix(&pq, prefix, with)
        }
        _ => uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    UpstreamHead { headers, path_and_query }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_client_is_the_right_most_untrusted_address() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let peer: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let with = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append("x-forwarded-for", l.parse().unwrap());
            }
            real_client(&h, &trusted, peer).to_string()
        };
        assert_eq!(with(&["203.0.113.9, 198.51.100.7, 10.0.0.5"]), "198.51.100.7", "a spoofed left part is ignored");
        assert_eq!(with(&["203.0.113.9", "198.51.100.7, 10.1.1.1"]), "198.51.100.7", "over several lines");
        assert_eq!(with(&["10.0.0.9, 10.0.0.5"]), "10.0.0.9", "all trusted: the left-most");
        assert_eq!(with(&[]), "127.0.0.1", "no header: the peer");
        assert_eq!(with(&["garbage, 10.0.0.5"]), "10.0.0.5", "stops at what it cannot read");
        assert_eq!(with(&["::ffff:198.51.100.7"]), "198.51.100.7");
    }
}
