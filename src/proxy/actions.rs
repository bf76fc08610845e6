//! Route actions at request time, as small functions on the head: `access` (allow/deny by client
//! address), `answer` (a route's own `redirect` or `respond`), `rewrite_target` (the regex rewrite),
//! `render_headers` / `apply_headers` (request and response header actions). Variables are rendered
//! from [`RequestVars`], the request as nginx's variables see it.
//!
//! Only routes with actions come here (`RouteEntry::actions` is `None` otherwise), so a plain route
//! pays one branch for all of this.

use std::cell::OnceCell;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};

use super::body::ProxyBody;
use crate::config::actions::{AccessRule, Actions, HeaderActions, Rewrite};
use crate::config::template::{Var, Vars};

/// The request as nginx's variables see it.
pub struct RequestVars<'a> {
    pub method: &'a Method,
    /// The request target in normal form (what ferry routed on).
    pub uri: &'a Uri,
    /// The target as the client sent it, when normalising changed it.
    pub original: Option<&'a PathAndQuery>,
    pub headers: &'a HeaderMap,
    /// Lower case, without port.
    pub host: &'a str,
    pub client: SocketAddr,
    pub client_ip: &'a HeaderValue,
    pub scheme: &'static str,
    pub server_port: u16,
    pub version: http::Version,
    /// The connection's client certificate, on a listener that asks for one.
    pub client_tls: Option<&'a super::http::ClientTls>,
    /// Of the rewrite regex if it matched, else of the route's path_regex.
    pub captures: Option<regex::Captures<'a>>,
    pub request_id: OnceCell<String>,
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl Vars for RequestVars<'_> {
    fn var(&self, v: &Var, out: &mut String) {
        match v {
            Var::Host => out.push_str(self.host),
            Var::HttpHost => {
                if let Some(h) = self.headers.get(HOST).and_then(|h| h.to_str().ok()) {
                    out.push_str(h)
                } else if let Some(a) = self.uri.authority() {
                    out.push_str(a.as_str())
                }
            }
            Var::RemoteAddr => out.push_str(self.client_ip.to_str().unwrap_or_default()),
            Var::RemotePort => out.push_str(&self.client.port().to_string()),
            Var::Scheme => out.push_str(self.scheme),
            Var::RequestUri => match (self.original, self.uri.path_and_query()) {
                (Some(o), _) => out.push_str(o.as_str()),
                (None, Some(pq)) => out.push_str(pq.as_str()),
                (None, None) => out.push('/'),
            },
            Var::Uri => out.push_str(self.uri.path()),
            Var::Args => out.push_str(self.uri.query().unwrap_or_default()),
            Var::IsArgs => {
                if self.uri.query().is_some() {
                    out.push('?')
                }
            }
            Var::Arg(name) => out.push_str(self.uri.query().and_then(|q| query_param(q, name)).unwrap_or_default()),
            Var::Cookie(name) => {
                let found = self.headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
                    line.split(';').find_map(|c| {
                        let (k, v) = c.trim().split_once('=')?;
                        (k == name).then_some(v)
                    })
                });
                out.push_str(found.unwrap_or_default());
            }
            Var::ServerPort => out.push_str(&self.server_port.to_string()),
            Var::RequestMethod => out.push_str(self.method.as_str()),
            Var::ProxyAddXForwardedFor => {
                for v in self.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
                    out.push_str(v);
                    out.push_str(", ");
                }
                out.push_str(self.client_ip.to_str().unwrap_or_default());
            }
            Var::RemoteUser => out.push_str(
                super::log::basic_user(self.headers.get(http::header::AUTHORIZATION)).as_deref().unwrap_or(""),
            ),
            Var::Https => {
                if self.scheme == "https" {
                    out.push_str("on")
                }
            }
            Var::ServerProtocol => out.push_str(super::log::protocol(self.version)),
            Var::Request => {
                let target = match (self.original, self.uri.path_and_query()) {
                    (Some(o), _) => o.as_str(),
                    (None, Some(pq)) => pq.as_str(),
                    (None, None) => "/",
                };
                out.push_str(&format!("{} {target} {}", self.method, super::log::protocol(self.version)));
            }
            Var::ContentType => {
                out.push_str(self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(""))
            }
            Var::ContentLength => {
                out.push_str(self.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or(""))
            }
            // Known once the upstream answered: empty here (see `Late`).
            Var::UpstreamAddr | Var::UpstreamStatus | Var::RequestTime => {}
            Var::SslClientVerify => {
                if self.scheme == "https" {
                    let cert = self.client_tls.and_then(|c| c.cert.as_ref());
                    out.push_str(if cert.is_some() { "SUCCESS" } else { "NONE" });
                }
            }
            Var::SslClientSDn
            | Var::SslClientIDn
            | Var::SslClientSerial
            | Var::SslClientFingerprint
            | Var::SslClientEscapedCert => {
                if let Some(c) = self.client_tls.and_then(|c| c.cert.as_ref()) {
                    out.push_str(match v {
                        Var::SslClientSDn => &c.subject,
                        Var::SslClientIDn => &c.issuer,
                        Var::SslClientSerial => &c.serial,
                        Var::SslClientFingerprint => &c.fingerprint,
                        _ => &c.escaped_pem,
                    });
                }
            }
            Var::Msec | Var::TimeLocal | Var::TimeIso8601 | Var::DateGmt | Var::DateLocal => {
                crate::access_log::now(v, out)
            }
            Var::Header(h) => {
                // nginx joins repeated headers with ", " (cookies with "; ").
                let sep = if *h == COOKIE { "; " } else { ", " };
                for (i, v) in self.headers.get_all(h).iter().filter_map(|v| v.to_str().ok()).enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    out.push_str(v);
                }
            }
            Var::RequestId => out.push_str(self.request_id.get_or_init(|| format!("{:032x}", fastrand::u128(..)))),
            Var::Hostname => out.push_str(crate::access_log::hostname()),
            Var::Capture(n) => {
                if let Some(m) = self.captures.as_ref().and_then(|c| c.get(usize::from(*n))) {
                    out.push_str(m.as_str());
                }
            }
        }
    }
}

/// nginx allow/deny: the first rule whose address matches decides; no match allows.
pub fn access(rules: &[AccessRule], client: IpAddr) -> bool {
    let ip = client.to_canonical();
    rules.iter().find(|r| r.from.is_none_or(|n| n.contains(&ip))).is_none_or(|r| r.allow)
}

/// The captures the route's actions may use: the rewrite regex's where it matches the path,
/// else the route's `path_regex`'s.
pub fn captures<'p>(
    actions: &Actions,
    route_regex: Option<&regex::Regex>,
    path: &'p str,
) -> Option<regex::Captures<'p>> {
    if !actions.needs_captures {
        return None;
    }
    let rewrite = match &actions.rewrite {
        Some(Rewrite::Regex { regex, .. }) => regex.captures(path),
        _ => None,
    };
    rewrite.or_else(|| route_regex.and_then(|r| r.captures(path)))
}

/// A header operation, rendered for one request.
pub enum HeaderOp {
    Remove(HeaderName),
    /// `None`: the value rendered empty (nginx then drops the header).
    Set(HeaderName, Option<HeaderValue>),
    Add(HeaderName, HeaderValue),
    /// Only for an answer of nginx's `add_header` statuses ([`success`]).
    OnSuccess(Vec<HeaderOp>),
    /// A value with `$upstream_addr`, `$upstream_status` or `$request_time`, rendered when the
    /// upstream has answered; `true`: added, `false`: set.
    Later(HeaderName, crate::config::template::Template, bool),
}

/// What an answer tells the late variables ([`Var::is_late`](crate::config::template::Var::is_late)).
pub struct Late {
    /// The endpoint that answered and its status, when an upstream did.
    pub upstream: Option<UpstreamAnswered>,
    pub elapsed: std::time::Duration,
}

/// On a response from an upstream (for a route with late header values only): who answered.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamAnswered {
    pub addr: SocketAddr,
    pub status: u16,
}

impl Vars for Late {
    fn var(&self, v: &Var, out: &mut String) {
        match v {
            Var::UpstreamAddr => {
                if let Some(u) = &self.upstream {
                    out.push_str(&u.addr.to_string());
                }
            }
            Var::UpstreamStatus => {
                if let Some(u) = &self.upstream {
                    out.push_str(&u.status.to_string());
                }
            }
            Var::RequestTime => {
                let ms = self.elapsed.as_millis();
                out.push_str(&format!("{}.{:03}", ms / 1000, ms % 1000));
            }
            _ => {}
        }
    }
}

/// The statuses nginx's `add_header` (without `always`) and `expires` apply to.
pub fn success(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308)
}

/// Renders a route's header actions for this request: remove, then set, then add.
pub fn render_headers(h: &HeaderActions, vars: &RequestVars<'_>) -> Vec<HeaderOp> {
    let mut ops = Vec::with_capacity(h.remove.len() + h.set.len() + h.add.len());
    ops.extend(h.remove.iter().map(|n| HeaderOp::Remove(n.clone())));
    let value = |t: &crate::config::template::Template| {
        let s = t.render(vars);
        if s.is_empty() {
            None
        } else {
            HeaderValue::from_str(&s).ok()
        }
    };
    for (n, t) in &h.set {
        match t.is_late() {
            true => ops.push(HeaderOp::Later(n.clone(), t.bind(vars), false)),
            false => ops.push(HeaderOp::Set(n.clone(), value(t))),
        }
    }
    for (n, t) in &h.add {
        if t.is_late() {
            ops.push(HeaderOp::Later(n.clone(), t.bind(vars), true));
        } else if let Some(v) = value(t) {
            ops.push(HeaderOp::Add(n.clone(), v));
        }
    }
    if let Some(s) = &h.on_success {
        ops.push(HeaderOp::OnSuccess(render_headers(s, vars)));
    }
    ops
}

/// Applies rendered header actions; `status`: the answer's (`None` for a request); `late`: what
/// the late variables render (empty without).
pub fn apply_headers(ops: &[HeaderOp], status: Option<http::StatusCode>, headers: &mut HeaderMap, late: Option<&Late>) {
    for op in ops {
        match op {
            HeaderOp::OnSuccess(ops) => {
                if status.is_some_and(success) {
                    apply_headers(ops, status, headers, late);
                }
            }
            HeaderOp::Later(n, t, add) => {
                let v = late.map(|l| t.render(l)).unwrap_or_default();
                match (HeaderValue::from_str(&v), *add) {
                    (Ok(v), true) if !v.is_empty() => drop(headers.append(n.clone(), v)),
                    (Ok(v), false) if !v.is_empty() => drop(headers.insert(n.clone(), v)),
                    (_, false) => drop(headers.remove(n)),
                    _ => {}
                }
            }
            HeaderOp::Remove(n) | HeaderOp::Set(n, None) => {
                headers.remove(n);
            }
            HeaderOp::Set(n, Some(v)) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderOp::Add(n, v) => {
                headers.append(n.clone(), v.clone());
            }
        }
    }
}

/// Does any set header action name `name`?
pub fn sets(ops: &[HeaderOp], name: &HeaderName) -> bool {
    ops.iter().any(|op| matches!(op, HeaderOp::Set(n, _) if n == name))
}

/// The route's own answer (`redirect` or `respond`), with its response header actions, if it has one.
pub fn answer(actions: &Actions, vars: &RequestVars<'_>) -> Option<Response<ProxyBody>> {
    let mut resp = if let Some(r) = &actions.redirect {
        let location = HeaderValue::from_str(&r.to.render(vars)).unwrap_or_else(|_| HeaderValue::from_static("/"));
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = r.status;
        resp.headers_mut().insert(LOCATION, location);
        resp
    } else if let Some(r) = &actions.respond {
        let mut resp = match &r.body {
            Some(b) => {
                let mut resp = Response::new(ProxyBody::full(Bytes::from(b.render(vars))));
                resp.headers_mut().insert(CONTENT_TYPE, r.content_type.clone());
                resp
            }
            None => Response::new(ProxyBody::empty()),
        };
        *resp.status_mut() = r.status;
        // nginx's own 444: close without an answer.
        if r.status.as_u16() == 444 {
            resp.extensions_mut().insert(super::h1::NoAnswer);
        }
        resp
    } else {
        return None;
    };
    if !actions.response_headers.is_empty() {
        let status = Some(resp.status());
        // An answer of the route's own: no upstream, and no time spent waiting for one.
        let late = Late { upstream: None, elapsed: std::time::Duration::ZERO };
        apply_headers(&render_headers(&actions.response_headers, vars), status, resp.headers_mut(), Some(&late));
    }
    Some(resp)
}

/// The upstream target after a regex rewrite, if the regex matches the path: `to` rendered; a `?`
/// in it sets the query (a trailing `?` drops it), otherwise the request's query is kept. `None`
/// when the regex does not match (the path is forwarded as it is) or the result is not a valid
/// target.
pub fn rewrite_target(actions: &Actions, vars: &RequestVars<'_>) -> Option<PathAndQuery> {
    let Some(Rewrite::Regex { regex, to, .. }) = &actions.rewrite else { return None };
    if !regex.is_match(vars.uri.path()) {
        return None;
    }
    let mut target = to.render(vars);
    // A `to` written ending in `?` drops the query; a `?` that only a variable left at the end
    // (`?$args` with none) stays, as nginx sends it.
    if to.as_str().ends_with('?') {
        target.pop();
    } else if let (false, Some(q)) = (target.contains('?'), vars.uri.query()) {
        target.push('?');
        target.push_str(q);
    }
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    PathAndQuery::try_from(target).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_first_match_decides_and_no_match_allows() {
        let rule = |allow, from: &str| AccessRule { allow, from: (from != "all").then(|| from.parse().unwrap()) };
        let rules = [rule(false, "10.1.2.3/32"), rule(true, "10.0.0.0/8"), rule(false, "all")];
        assert!(!access(&rules, "10.1.2.3".parse().unwrap()));
        assert!(access(&rules, "10.9.9.9".parse().unwrap()));
        assert!(!access(&rules, "192.168.1.1".parse().unwrap()));
        assert!(access(&rules[..2], "192.168.1.1".parse().unwrap()), "no match allows");
        assert!(!access(&rules, "::ffff:192.168.1.1".parse().unwrap()), "mapped IPv4 is IPv4");
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("a=1&page=2&b", "page"), Some("2"));
        assert_eq!(query_param("a=1&b", "b"), Some(""));
        assert_eq!(query_param("a=1", "page"), None);
    }
}
