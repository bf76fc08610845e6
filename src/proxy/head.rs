//! The request-head path ferry owns, free of I/O: the checks hyper leaves to ferry, the route
//! path normalisation, the route
//! choice, the per-route limits that a head alone decides, and the head as the upstream gets it
//! (hop-by-hop headers gone, forwarding headers set, prefix stripped). `proxy::http` calls these
//! in order for every request; `crate::fuzzing` drives them with arbitrary heads.

use http::header::{CONTENT_LENGTH, EXPECT, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use super::error::ProxyError;
pub use super::headers::Hop;
use super::headers::{
    add_forwarded_prefix, replace_prefix, routing_host, set_forwarded, strip_hop_by_hop, wants_upgrade,
};
use super::path::{normalize, PathError};
use crate::table::{ListenerRoutes, RouteEntry};

/// What hyper accepts but ferry must not forward: an HTTP/1.1 request without exactly one Host,
/// an asterisk target on anything but OPTIONS. (Content-Length with Transfer-Encoding never gets
/// here as such: hyper drops the length, reads the body as chunked and closes the connection
/// after the response, as RFC 9112 6.1 requires.)
pub fn ambiguous<B>(req: &Request<B>) -> Option<&'static str> {
    let h = req.headers();
    if req.version() == Version::HTTP_11 {
        match h.get_all(HOST).iter().count() {
            0 if req.uri().authority().is_none() => return Some("HTTP/1.1 request without Host"),
            0 | 1 => {}
            _ => return Some("more than one Host header"),
        }
    }
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Some("asterisk-form target on a method other than OPTIONS");
    }
    None
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
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
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
