//! Request and response header hygiene (RFC 9110 §7.6.1): hop-by-hop headers stop at ferry, the
//! forwarding headers are set, and the request target is rewritten for the upstream.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

use crate::http1::KEEP_ALIVE;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Proxy-*`, and `Upgrade` unless `upgrade` is true (then
/// `Connection: upgrade` is written back so the upgrade reaches the next hop).
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // One pass over the names (cheap comparisons of standard names, no hashing) finds which are
    // here; most messages carry none, or only `Connection: keep-alive`.
    const FIXED: [(u8, &HeaderName); 5] = [
        (1 << 1, &header::TE),
        (1 << 2, &header::TRAILER),
        (1 << 3, &header::TRANSFER_ENCODING),
        (1 << 4, &header::UPGRADE),
        (1 << 5, &KEEP_ALIVE),
    ];
    let (mut present, mut proxy) = (0u8, false);
    for k in h.keys() {
        if k == header::CONNECTION {
            present |= 1;
        } else if let Some((bit, _)) = FIXED.iter().find(|(_, n)| k == *n) {
            present |= bit;
        } else if k.as_str().starts_with("proxy-") {
            proxy = true;
        }
    }
    if upgrade {
        present &= !(1 << 4);
    }
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            for t in crate::http1::list(v.as_bytes()) {
                if t.is_empty() || t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t) {
                    if !(upgrade && n == header::UPGRADE) {
                        named.push(n);
                    }
                }
            }
        }
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    for (bit, name) in FIXED {
        if present & bit != 0 {
            h.remove(name);
        }
    }
    if proxy {
        let names: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for n in names {
            h.remove(n);
        }
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Is this an HTTP/1.1 upgrade request (`Connection: upgrade` plus an `Upgrade` header)?
///
/// Never for `h2c` (RFC 9113 §3.1 retired the HTTP/1.1 upgrade to cleartext HTTP/2): forwarded,
/// it would let a client switch its connection to the upstream into an HTTP/2 tunnel that ferry
/// neither routes nor checks ("h2c smuggling"). Such a request goes as a plain one, its
/// `Upgrade` removed with the other hop-by-hop fields.
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    let h2c = |v: &HeaderValue| crate::http1::list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"h2c"));
    h.get(header::UPGRADE).is_some_and(|v| !h.get_all(header::UPGRADE).iter().any(h2c) && !v.is_empty())
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| crate::http1::list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// Forwarding headers ferry does not set itself but a proxy in front may have: kept from a trusted
/// peer, removed from anyone else (a client could otherwise steer the app's redirects or its idea
/// of the client address).
static UNVOUCHED: [&HeaderName; 3] = [&X_FORWARDED_PREFIX, &X_REAL_IP, &header::FORWARDED];

/// What the forwarding headers say about this hop.
pub struct Hop<'a> {
    /// The client IP, formatted once per connection.
    pub client_ip: &'a HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The port the client connected to (the listener's).
    pub port: &'a HeaderValue,
    /// The peer is a trusted proxy (`trusted_proxies`).
    pub trusted: bool,
}

/// Sets X-Forwarded-For/-Proto/-Host/-Port. From a trusted peer (a front proxy that terminated
/// TLS, say) its X-Forwarded-For is kept and appended to, and its X-Forwarded-Proto, -Host and
/// -Port (and X-Forwarded-Prefix, X-Real-IP, Forwarded) are kept when present, since they describe
/// the client's original request. From anyone else every forwarding header is ferry's own:
/// X-Forwarded-For is the peer's address, -Proto/-Host/-Port this hop's, and the headers ferry
/// does not set are removed.
pub fn set_forwarded(h: &mut HeaderMap, hop: &Hop<'_>, host: Option<HeaderValue>) {
    // Which forwarding headers came with the request: one pass comparing names (no hashing);
    // most requests carry none, and then nothing is looked up or removed.
    let (mut xff, mut proto, mut port, mut xfh, mut unvouched) = (false, false, false, false, false);
    for k in h.keys() {
        if k == X_FORWARDED_FOR {
            xff = true;
        } else if k == X_FORWARDED_PROTO {
            proto = true;
        } else if k == X_FORWARDED_PORT {
            port = true;
        } else if k == X_FORWARDED_HOST {
            xfh = true;
        } else if UNVOUCHED.contains(&k) {
            unvouched = true;
        }
    }
    let xff = match xff {
        false => hop.client_ip.clone(),
        true if !hop.trusted => hop.client_ip.clone(),
        true => {
            // Fold every existing X-Forwarded-For line into one, then append.
            let mut buf = BytesMut::with_capacity(64);
            for v in h.get_all(&X_FORWARDED_FOR) {
                if !buf.is_empty() {
                    buf.put_slice(b", ");
                }
                buf.put_slice(v.as_bytes());
            }
            buf.put_slice(b", ");
            buf.put_slice(hop.client_ip.as_bytes());
            HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| hop.client_ip.clone())
        }
    };
    h.insert(X_FORWARDED_FOR.clone(), xff);
    if hop.trusted {
        if !proto {
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(hop.proto));
        }
        if !port {
            h.insert(X_FORWARDED_PORT.clone(), hop.port.clone());
        }
        if let (false, Some(host)) = (xfh, host) {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
        return;
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(hop.proto));
    h.insert(X_FORWARDED_PORT.clone(), hop.port.clone());
    match host {
        Some(host) => {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
        None if xfh => {
            h.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
    if unvouched {
        for n in UNVOUCHED {
            h.remove(n);
        }
    }
}

/// Records the path prefix a route removed or replaced in `X-Forwarded-Prefix` (Spring's
/// forwarded-header support builds links with it), after a trusted peer's own prefix if it sent one.
pub fn add_forwarded_prefix(h: &mut HeaderMap, removed: &str) {
    let value = match h.get(&X_FORWARDED_PREFIX).and_then(|v| v.to_str().ok()) {
        Some(outer) => format!("{}{removed}", outer.trim_end_matches('/')),
        None => removed.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(X_FORWARDED_PREFIX.clone(), v);
    }
}

/// A path the upstream wrote (a redirect target, a cookie path) as the client must ask for it: the
/// route sent `with…` upstream for the client's `prefix…`, so an upstream path under `with` gets
/// `prefix` back. Paths outside `with` are left alone (`None`).
pub fn restore_prefix(path: &str, prefix: &str, with: &str) -> Option<String> {
    // Already under the prefix: an app told it by X-Forwarded-Prefix wrote it itself.
    let p = prefix.trim_end_matches('/');
    if !p.is_empty() && path.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with(['/', '?', '#'])) {
        return Some(path.to_string());
    }
    let with = with.trim_end_matches('/');
    let rest = path.strip_prefix(with)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') || rest.starts_with('#')) {
        return None;
    }
    let prefix = prefix.trim_end_matches('/');
    Some(match rest {
        "" => format!("{prefix}/"),
        r => format!("{prefix}{r}"),
    })
}

/// Each redirect target of an answer — `Location`, and the URL of `Refresh: N; url=…` — given to
/// `fix`; what it returns replaces the target.
fn map_redirects(h: &mut HeaderMap, mut fix: impl FnMut(&str) -> Option<String>) {
    for name in [header::LOCATION, header::REFRESH] {
        let Some(v) = h.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        let (lead, target) = match name {
            header::REFRESH => match v.find("url=").or_else(|| v.find("URL=")) {
                Some(i) => (&v[..i + 4], &v[i + 4..]),
                None => continue,
            },
            _ => ("", v),
        };
        let Some(fixed) = fix(target).filter(|f| f != target) else { continue };
        if let Ok(v) = HeaderValue::from_str(&format!("{lead}{fixed}")) {
            h.insert(name, v);
        }
    }
}

/// Each `Set-Cookie`'s `Path=` given to `fix`; what it returns replaces it.
fn map_cookie_paths(h: &mut HeaderMap, fix: impl Fn(&str) -> Option<String>) {
    if !h.contains_key(header::SET_COOKIE) {
        return;
    }
    let cookies: Vec<HeaderValue> = h.get_all(header::SET_COOKIE).iter().cloned().collect();
    h.remove(header::SET_COOKIE);
    for c in cookies {
        let fixed = c.to_str().ok().and_then(|text| {
            let mut changed = false;
            let parts: Vec<String> = text
                .split(';')
                .map(|attr| {
                    let t = attr.trim_start();
                    let path = t.get(..5).filter(|k| k.eq_ignore_ascii_case("path=")).map(|_| &t[5..]);
                    match path.and_then(&fix) {
                        Some(p) => {
                            changed = true;
                            format!(" Path={p}")
                        }
                        None => attr.to_string(),
                    }
                })
                .collect();
            changed.then(|| parts.join(";")).and_then(|t| HeaderValue::from_str(&t).ok())
        });
        h.append(header::SET_COOKIE, fixed.unwrap_or(c));
    }
}

/// nginx `proxy_redirect default`: a `Location` (or `Refresh: N; url=…`) that points at the
/// endpoint itself (`http://10.1.2.3:8761/login`) or at the Host the upstream was sent (an app
/// builds its redirects from it) becomes a path, and a path gets the route's
/// removed prefix back (`/login` behind a stripped `/eureka-ui` → `/eureka-ui/login`). A Location
/// pointing anywhere else is left alone.
pub fn rewrite_location(
    h: &mut HeaderMap,
    endpoint: &http::uri::Authority,
    sent_host: Option<&HeaderValue>,
    prefix: Option<(&str, &str)>,
) {
    map_redirects(h, |target| {
        let own = match target.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() => {
                let port = u.port_u16().unwrap_or(if u.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
                let same = u
                    .host()
                    .is_some_and(|host| host.trim_matches(['[', ']']) == endpoint.host().trim_matches(['[', ']']))
                    && Some(port) == endpoint.port_u16();
                // Built from the Host the upstream was sent, as Tomcat builds its redirects.
                let from_host = sent_host
                    .and_then(|v| v.to_str().ok())
                    .zip(u.authority())
                    .is_some_and(|(h, a)| a.as_str().eq_ignore_ascii_case(h));
                if !same && !from_host {
                    return None;
                }
                u.path_and_query().map_or("/", |pq| pq.as_str()).to_string()
            }
            _ if target.starts_with('/') && !target.starts_with("//") => target.to_string(),
            _ => return None,
        };
        Some(match prefix {
            Some((prefix, with)) => restore_prefix(&own, prefix, with).unwrap_or(own),
            None => own,
        })
    });
}

/// nginx `proxy_redirect FROM TO`: in `Location` and in the URL of `Refresh`, the first rule whose
/// `from` starts the value (case-sensitive, as nginx compares) has that part replaced by `to`.
pub fn redirect_rules(h: &mut HeaderMap, rules: &[(String, String)]) {
    map_redirects(h, |target| replace_start(target, rules));
}

/// `value` with the start the first of `rules` matches replaced (nginx's rewrite of a redirect or a
/// cookie path: `from` compared as written).
fn replace_start(value: &str, rules: &[(String, String)]) -> Option<String> {
    let (from, to) = rules.iter().find(|(from, _)| value.starts_with(from.as_str()))?;
    Some(format!("{to}{}", &value[from.len()..]))
}

/// `rewrite_cookie_path: true`: a `Set-Cookie` whose `Path=` lies under what the route sent
/// upstream gets the removed prefix back (`Path=/` behind a stripped `/eureka-ui` →
/// `Path=/eureka-ui/`).
pub fn rewrite_cookie_paths(h: &mut HeaderMap, prefix: &str, with: &str) {
    map_cookie_paths(h, |path| restore_prefix(path, prefix, with));
}

/// nginx `proxy_cookie_path FROM TO`: a `Set-Cookie` whose `Path=` starts with FROM of the first
/// rule that matches has that part replaced by TO.
pub fn cookie_path_rules(h: &mut HeaderMap, rules: &[(String, String)]) {
    map_cookie_paths(h, |path| replace_start(path, rules));
}

/// The request's host for routing: lower case, without port. From the URI authority
/// (HTTP/2, absolute-form) or the Host header.
pub fn routing_host<'a>(uri_host: Option<&'a str>, host_header: Option<&'a HeaderValue>) -> std::borrow::Cow<'a, str> {
    let raw = match uri_host {
        Some(h) => h,
        None => match host_header.and_then(|v| v.to_str().ok()) {
            Some(h) => strip_port(h),
            None => "",
        },
    };
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(raw.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map(|i| &h[..=i]).unwrap_or(h);
    }
    match h.rfind(':') {
        Some(i) if h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
        _ => h,
    }
}

/// Replaces `prefix` (segment-aligned, already matched) in the path by `with`, keeping the query:
/// what followed the prefix is appended to `with` less its trailing `/`, and the bare prefix
/// becomes `with` itself. With `with` = `/` (strip_prefix): `/eureka/apps?x=1` → `/apps?x=1`,
/// `/eureka` → `/`; with `/v1/`: `/api/x` → `/v1/x`, `/api` → `/v1/`.
pub fn replace_prefix(pq: &PathAndQuery, prefix: &str, with: &str) -> PathAndQuery {
    if prefix == "/" && with == "/" {
        return pq.clone();
    }
    let skip = if prefix == "/" { 0 } else { prefix.len() };
    let rest = &pq.path()[skip.min(pq.path().len())..];
    let mut buf = BytesMut::with_capacity(pq.as_str().len() + with.len());
    if rest.is_empty() || rest == "/" && prefix == "/" {
        buf.put_slice(with.as_bytes());
    } else {
        buf.put_slice(with.trim_end_matches('/').as_bytes());
        buf.put_slice(rest.as_bytes());
    }
    if buf.is_empty() {
        buf.put_u8(b'/');
    }
    if let Some(q) = pq.query() {
        buf.put_u8(b'?');
        buf.put_slice(q.as_bytes());
    }
    PathAndQuery::from_maybe_shared(Bytes::from(buf)).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn upgrade_kept_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_for_a_trusted_peer_and_is_replaced_otherwise() {
        let client = HeaderValue::from_static("10.0.0.9");
        let port = HeaderValue::from_static("8080");
        let hop = |proto, trusted| Hop { client_ip: &client, proto, port: &port, trusted };
        let spoofed = || {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
            h.append("x-forwarded-for", "2.2.2.2".parse().unwrap());
            h.insert("x-forwarded-host", "evil.example".parse().unwrap());
            h
        };
        let mut h = spoofed();
        set_forwarded(&mut h, &hop("http", true), Some(HeaderValue::from_static("a.b")));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "evil.example", "a trusted peer's X-Forwarded-Host is kept");
        let mut h = spoofed();
        set_forwarded(&mut h, &hop("https", false), None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn host_normalised() {
        let hv = HeaderValue::from_static("WWW.Example.com:8080");
        assert_eq!(routing_host(None, Some(&hv)), "www.example.com");
        assert_eq!(routing_host(Some("a.b"), Some(&hv)), "a.b");
        let v6 = HeaderValue::from_static("[::1]:80");
        assert_eq!(routing_host(None, Some(&v6)), "[::1]");
    }

    #[test]
    fn strip_keeps_query() {
        let s = |p: &str, pre: &str| replace_prefix(&p.parse::<PathAndQuery>().unwrap(), pre, "/").to_string();
        assert_eq!(s("/eureka/apps?x=1&y", "/eureka"), "/apps?x=1&y");
        assert_eq!(s("/eureka", "/eureka"), "/");
        assert_eq!(s("/eureka?q", "/eureka"), "/?q");
        assert_eq!(s("/a/b", "/"), "/a/b");
    }

    #[test]
    fn nginx_rules_replace_the_start_of_redirects_and_cookie_paths() {
        let rules = [("http://eureka:8761/".to_string(), "/ui/".to_string()), ("/".to_string(), "/x/".to_string())];
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "http://eureka:8761/login".parse().unwrap());
        h.insert(header::REFRESH, "5; url=/later".parse().unwrap());
        redirect_rules(&mut h, &rules);
        assert_eq!(h[header::LOCATION], "/ui/login", "the first rule that matches");
        assert_eq!(h[header::REFRESH], "5; url=/x/later");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "HTTP://eureka:8761/login".parse().unwrap());
        redirect_rules(&mut h, &rules[..1]);
        assert_eq!(h[header::LOCATION], "HTTP://eureka:8761/login", "compared as written");
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, "a=1; Path=/; HttpOnly".parse().unwrap());
        h.append(header::SET_COOKIE, "b=2".parse().unwrap());
        cookie_path_rules(&mut h, &rules[1..]);
        let got: Vec<&str> = h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(got, ["a=1; Path=/x/; HttpOnly", "b=2"]);
    }

    #[test]
    fn redirects_and_cookies_get_the_prefix_back() {
        let ep: http::uri::Authority = "10.1.2.3:8761".parse().unwrap();
        let loc = |v: &str, prefix: Option<(&str, &str)>| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, v.parse().unwrap());
            let sent = HeaderValue::from_static("ui.example:8080");
            rewrite_location(&mut h, &ep, Some(&sent), prefix);
            h[header::LOCATION].to_str().unwrap().to_string()
        };
        let strip = Some(("/eureka-ui", "/"));
        assert_eq!(loc("http://10.1.2.3:8761/login", strip), "/eureka-ui/login");
        assert_eq!(loc("/login?next=%2F", strip), "/eureka-ui/login?next=%2F");
        assert_eq!(loc("http://10.1.2.3:8761/login", None), "/login");
        assert_eq!(loc("https://sso.example/login", strip), "https://sso.example/login", "elsewhere: untouched");
        assert_eq!(loc("http://10.1.2.3:9999/x", strip), "http://10.1.2.3:9999/x", "another port is elsewhere");
        assert_eq!(loc("/v1/orders", Some(("/api", "/v1/"))), "/api/orders");
        assert_eq!(loc("/other", Some(("/api", "/v1/"))), "/other", "outside what was sent upstream");
        let mut h = HeaderMap::new();
        h.insert(header::REFRESH, "3; url=http://10.1.2.3:8761/".parse().unwrap());
        rewrite_location(&mut h, &ep, None, strip);
        assert_eq!(h[header::REFRESH], "3; url=/eureka-ui/");
        // From the Host it was sent (Tomcat); an app that wrote the prefix itself is left alone.
        assert_eq!(loc("http://UI.example:8080/login", strip), "/eureka-ui/login");
        assert_eq!(loc("http://ui.example:8080/eureka-ui/login", strip), "/eureka-ui/login");
        assert_eq!(loc("http://ui.example/login", strip), "http://ui.example/login", "another authority");

        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, "JSESSIONID=abc; Path=/; HttpOnly".parse().unwrap());
        h.append(header::SET_COOKIE, "x=1; path=/app; Secure".parse().unwrap());
        h.append(header::SET_COOKIE, "y=2".parse().unwrap());
        rewrite_cookie_paths(&mut h, "/eureka-ui", "/");
        let got: Vec<&str> = h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(got, ["JSESSIONID=abc; Path=/eureka-ui/; HttpOnly", "x=1; Path=/eureka-ui/app; Secure", "y=2"]);
    }

    #[test]
    fn replace_puts_the_rest_after_the_new_prefix() {
        let r =
            |p: &str, pre: &str, with: &str| replace_prefix(&p.parse::<PathAndQuery>().unwrap(), pre, with).to_string();
        assert_eq!(r("/prod-api/x?y=1", "/prod-api", "/"), "/x?y=1");
        assert_eq!(r("/prod-api", "/prod-api", "/"), "/");
        assert_eq!(r("/api/x", "/api", "/v1/"), "/v1/x");
        assert_eq!(r("/api/x", "/api", "/v1"), "/v1/x");
        assert_eq!(r("/api", "/api", "/v1/"), "/v1/");
        assert_eq!(r("/api/", "/api", "/v1/"), "/v1/");
        assert_eq!(r("/x/y", "/", "/v1/"), "/v1/x/y");
        assert_eq!(r("/", "/", "/v1/"), "/v1/");
    }
}
