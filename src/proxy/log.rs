//! What the access log and tracing need from a request: request IDs and W3C trace context on the
//! way in, a [`Pending`] line captured at the start (only when the listener logs), the route and
//! upstream attempts noted in an [`Info`] on the way through, and a [`Logged`] body that writes the
//! line when the response body ends (or is dropped: a client gone mid-body is logged too).
//!
//! A listener without an access log pays one branch per request here; its `Info` records nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};

use super::body::{Ended, ProxyBody};
use crate::access_log::{seconds, AccessLog, Fields};
use crate::config::log::{LogVar, TraceContext};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static X_FERRY_ERROR: HeaderName = HeaderName::from_static("x-ferry-error");

/// A fresh 128-bit identifier (thread-local wyrand, seeded from the OS: unique across replicas
/// without coordination).
fn fresh_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A request ID as clients and services see it: 32 lower-case hex digits.
fn id_value(id: u128) -> HeaderValue {
    HeaderValue::from_str(&format!("{id:032x}")).expect("hex is a valid header value")
}

/// The request's `X-Request-Id`: a trusted peer's is kept (if sane), anyone else's replaced.
/// Returns the ID the request now carries, and its 128 bits when ferry made it (a trace started
/// for this request reuses them as its trace ID, so the log line and the trace share one ID).
pub fn request_id(headers: &mut HeaderMap, trusted: bool) -> (HeaderValue, Option<u128>) {
    if trusted {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic()) {
                return (v.clone(), None);
            }
        }
    }
    let id = fresh_id();
    let v = id_value(id);
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    (v, Some(id))
}

/// W3C trace context: a valid `traceparent` is passed on untouched (ferry records no spans of its
/// own, so the caller's span stays the parent); a missing or malformed one is replaced by a new
/// trace (`tracestate` without a valid parent is dropped, as the spec asks).
pub fn trace_context(headers: &mut HeaderMap, t: &TraceContext, id: Option<u128>) {
    if !t.start {
        return;
    }
    if headers.get(&TRACEPARENT).is_some_and(|v| valid_traceparent(v.as_bytes())) {
        return;
    }
    headers.remove(&TRACESTATE);
    let trace = id.unwrap_or_else(fresh_id);
    let span = loop {
        let s = fastrand::u64(..);
        if s != 0 {
            break s;
        }
    };
    let sampled = t.sample > 0.0 && fastrand::f64() < t.sample;
    let v = format!("00-{trace:032x}-{span:016x}-{:02x}", sampled as u8);
    headers.insert(TRACEPARENT.clone(), HeaderValue::from_str(&v).expect("hex is a valid header value"));
}

/// `version-traceid-parentid-flags` per W3C Trace Context: lower-case hex, IDs not all zero,
/// version `ff` invalid; version 00 exactly 55 bytes, a later version at least that (extra fields
/// after a `-`).
pub fn valid_traceparent(b: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    if !hex(version) || version == b"ff" || !hex(trace) || !hex(parent) || !hex(flags) {
        return false;
    }
    if !nonzero(trace) || !nonzero(parent) {
        return false;
    }
    match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    }
}

/// One try at an upstream, for `$upstream_addr`, `$upstream_status` and the times.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub addr: SocketAddr,
    pub status: u16,
    pub started: Instant,
    /// Until the response head (None: no head came).
    pub header: Option<Duration>,
    /// Connecting, if this request opened the connection (0 when it reused a pooled one).
    pub connect: Option<Duration>,
}

/// What routing and forwarding learned, for the log line. Records nothing unless `on`.
#[derive(Default)]
pub struct Info {
    pub on: bool,
    /// The format reads `$upstream_connect_time` (the connect is timed through a task-local).
    pub connect_time: bool,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub attempts: Vec<Attempt>,
}

impl Info {
    pub fn for_log(pending: Option<&Pending>) -> Info {
        match pending {
            None => Info::default(),
            Some(p) => Info { on: true, connect_time: p.log.uses(&LogVar::UpstreamConnectTime), ..Info::default() },
        }
    }

    pub fn attempt(&mut self, a: Attempt) {
        if self.on {
            self.attempts.push(a);
        }
    }
}

/// A request's line in the making: what the format needs from the request, taken before the
/// request is handed on.
pub struct Pending {
    log: Arc<AccessLog>,
    started: Instant,
    listener: Arc<str>,
    client: SocketAddr,
    scheme: &'static str,
    server_port: u16,
    method: Method,
    /// As the client sent it (before normal form).
    target: Uri,
    version: Version,
    host: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    user: Option<Box<str>>,
    headers: Box<[Option<HeaderValue>]>,
}

/// Who is asking, as the request line and headers say.
pub struct Client<'a> {
    pub listener: &'a Arc<str>,
    pub addr: SocketAddr,
    pub scheme: &'static str,
    pub server_port: u16,
}

impl Pending {
    pub fn new<B>(log: Arc<AccessLog>, req: &Request<B>, c: Client<'_>, request_id: Option<HeaderValue>) -> Pending {
        let h = req.headers();
        let user = log.uses(&LogVar::RemoteUser).then(|| basic_user(h.get(AUTHORIZATION))).flatten();
        let headers = log.request_headers.iter().map(|n| h.get(n).cloned()).collect();
        Pending {
            started: Instant::now(),
            listener: c.listener.clone(),
            client: c.addr,
            scheme: c.scheme,
            server_port: c.server_port,
            method: req.method().clone(),
            target: req.uri().clone(),
            version: req.version(),
            host: h.get(HOST).cloned(),
            request_id: request_id.or_else(|| h.get(&X_REQUEST_ID).cloned()),
            user,
            headers,
            log,
        }
    }

    /// The response, its body wrapped to write the line when it ends.
    pub fn finish(self, resp: Response<ProxyBody>, info: Info) -> Response<ProxyBody> {
        let (parts, body) = resp.into_parts();
        let sent = self.log.response_headers.iter().map(|n| parts.headers.get(n).cloned()).collect();
        let head_bytes = 17 + parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>() + 2;
        let done = Done {
            status: parts.status.as_u16(),
            error: parts.headers.get(&X_FERRY_ERROR).cloned(),
            sent,
            head_bytes: head_bytes as u64,
            body_bytes: 0,
            info,
            p: self,
        };
        Response::from_parts(parts, ProxyBody::counted(body, Box::new(done)))
    }
}

/// The user name of `Authorization: Basic`, verified or not (nginx `$remote_user`).
pub(super) fn basic_user(v: Option<&HeaderValue>) -> Option<Box<str>> {
    use base64::Engine;
    let b = v?.as_bytes();
    let rest = b.get(..6).filter(|p| p.eq_ignore_ascii_case(b"basic ")).map(|_| &b[6..])?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim_ascii()).ok()?;
    let user = decoded.split(|&c| c == b':').next()?;
    Some(String::from_utf8_lossy(user).into())
}

struct Done {
    p: Pending,
    info: Info,
    status: u16,
    error: Option<HeaderValue>,
    sent: Box<[Option<HeaderValue>]>,
    head_bytes: u64,
    body_bytes: u64,
}

fn list<T>(items: &[T], out: &mut Vec<u8>, mut one: impl FnMut(&T, &mut Vec<u8>)) -> bool {
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        one(a, out);
    }
    !items.is_empty()
}

impl Fields for Done {
    fn field(&self, v: &LogVar, out: &mut Vec<u8>) -> bool {
        use std::io::Write;
        let p = &self.p;
        let text = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            true
        };
        let attempts = &self.info.attempts;
        match v {
            LogVar::RemoteAddr => write!(out, "{}", p.client.ip().to_canonical()).is_ok(),
            LogVar::RemotePort => write!(out, "{}", p.client.port()).is_ok(),
            LogVar::RemoteUser => p.user.as_deref().is_some_and(|u| text(out, u)),
            LogVar::Request => {
                let _ = write!(out, "{} {} {}", p.method, p.target, protocol(p.version));
                true
            }
            LogVar::RequestMethod => text(out, p.method.as_str()),
            LogVar::RequestUri => {
                text(out, p.target.path_and_query().map_or_else(|| p.target.path(), |pq| pq.as_str()))
            }
            LogVar::Uri => text(out, p.target.path()),
            LogVar::Args => p.target.query().is_some_and(|q| text(out, q)),
            LogVar::ServerProtocol => text(out, protocol(p.version)),
            LogVar::Status => write!(out, "{}", self.status).is_ok(),
            LogVar::BodyBytesSent => write!(out, "{}", self.body_bytes).is_ok(),
            LogVar::BytesSent => write!(out, "{}", self.head_bytes + self.body_bytes).is_ok(),
            LogVar::RequestTime => {
                seconds(p.started.elapsed(), out);
                true
            }
            LogVar::Http(name) => captured(&p.log.request_headers, &p.headers, name, out),
            LogVar::SentHttp(name) => captured(&p.log.response_headers, &self.sent, name, out),
            LogVar::Host => {
                let host = super::headers::routing_host(p.target.host(), p.host.as_ref());
                !host.is_empty() && text(out, &host)
            }
            LogVar::Scheme => text(out, p.scheme),
            LogVar::ServerPort => write!(out, "{}", p.server_port).is_ok(),
            LogVar::UpstreamAddr => list(attempts, out, |a, out| {
                let _ = write!(out, "{}", a.addr);
            }),
            LogVar::UpstreamStatus => list(attempts, out, |a, out| {
                let _ = write!(out, "{}", a.status);
            }),
            LogVar::UpstreamConnectTime => list(attempts, out, |a, out| match a.connect {
                Some(d) => seconds(d, out),
                None => out.push(b'-'),
            }),
            LogVar::UpstreamHeaderTime => list(attempts, out, |a, out| match a.header {
                Some(d) => seconds(d, out),
                None => out.push(b'-'),
            }),
            LogVar::UpstreamResponseTime => {
                let last = attempts.len().saturating_sub(1);
                let mut i = 0;
                list(attempts, out, |a, out| {
                    // Earlier tries ended with their head (or failure); the last one with the body.
                    let d = if i == last { a.started.elapsed() } else { a.header.unwrap_or_default() };
                    i += 1;
                    seconds(d, out)
                })
            }
            LogVar::Route => self.info.route.as_deref().is_some_and(|r| text(out, r)),
            LogVar::Backend => self.info.backend.as_deref().is_some_and(|b| text(out, b)),
            LogVar::RequestId => p.request_id.as_ref().is_some_and(|v| {
                out.extend_from_slice(v.as_bytes());
                true
            }),
            LogVar::FerryError => self.error.as_ref().is_some_and(|v| {
                out.extend_from_slice(v.as_bytes());
                true
            }),
            LogVar::Listener => text(out, &p.listener),
            LogVar::Pid => write!(out, "{}", std::process::id()).is_ok(),
            LogVar::Hostname => text(out, crate::access_log::hostname()),
            _ => false,
        }
    }
}

/// A header captured for the log (`values[i]` is `names[i]`'s value), appended if present.
fn captured(names: &[HeaderName], values: &[Option<HeaderValue>], name: &HeaderName, out: &mut Vec<u8>) -> bool {
    match names.iter().position(|n| n == name).and_then(|i| values[i].as_ref()) {
        Some(v) => {
            out.extend_from_slice(v.as_bytes());
            true
        }
        None => false,
    }
}

pub(super) fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

impl Ended for Done {
    /// The body ended, failed or was dropped: the line is written.
    fn ended(mut self: Box<Self>, body_bytes: u64) {
        self.body_bytes = body_bytes;
        self.p.log.log(&*self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation_follows_the_spec() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok));
        assert!(valid_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"",
        ] {
            assert!(!valid_traceparent(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn started_traces_are_valid_and_share_the_request_id() {
        let mut h = HeaderMap::new();
        h.insert(&TRACESTATE, HeaderValue::from_static("a=b"));
        h.insert(&TRACEPARENT, HeaderValue::from_static("garbage"));
        let (rid, id) = request_id(&mut h, false);
        trace_context(&mut h, &TraceContext { start: true, sample: 1.0 }, id);
        let tp = h[&TRACEPARENT].to_str().unwrap().to_string();
        assert!(valid_traceparent(tp.as_bytes()), "{tp}");
        assert_eq!(&tp[3..35], rid.to_str().unwrap());
        assert!(tp.ends_with("-01"));
        assert!(h.get(&TRACESTATE).is_none());
        // A valid one is left alone, tracestate too.
        let mut h = HeaderMap::new();
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        h.insert(&TRACEPARENT, HeaderValue::from_static(given));
        h.insert(&TRACESTATE, HeaderValue::from_static("a=b"));
        trace_context(&mut h, &TraceContext { start: true, sample: 1.0 }, None);
        assert_eq!(h[&TRACEPARENT], given);
        assert_eq!(h[&TRACESTATE], "a=b");
    }

    #[test]
    fn request_ids_kept_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&mut h.clone(), true).0, "abc-123");
        let (v, id) = request_id(&mut h, false);
        assert_ne!(v, "abc-123");
        assert_eq!(v.len(), 32);
        assert_eq!(h[&X_REQUEST_ID], v);
        assert!(id.is_some());
        assert_eq!(basic_user(Some(&HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"))).as_deref(), Some("alice"));
        assert_eq!(basic_user(Some(&HeaderValue::from_static("Bearer x"))), None);
    }
}
