//! HTTP/1.1 framing towards clients, free of I/O so tests and the fuzzer drive it with bytes: the
//! request head (httparse, as hyper parses it) and the response head ferry writes (as hyper's
//! server writes it: the same framing headers, `date`, `connection`).
//!
//! Only the common request is taken: a well-formed HTTP/1.0 or 1.1 head whose body, if any, is
//! framed by one plain Content-Length or by `Transfer-Encoding: chunked` alone, with no upgrade,
//! no `Expect` and no CONNECT. Anything else — a malformed or oversized head, a framing that needs
//! judgment (both headers, a list, a coding other than chunked), an HTTP/2 preface — is
//! [`Parsed::Unusual`]: the connection goes to hyper with the bytes read so far, and hyper answers
//! exactly as it did before ferry had a server of its own.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::http1::{content_length, token_name, Chunked, ConnectionTokens, Decoder};

/// Header slots offered to httparse; a listener allowing more hands such heads to hyper.
pub const MAX_SLOTS: usize = 128;

/// A request head taken out of the buffer.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    /// How the body that follows is framed (`Done`: none).
    pub body: Decoder,
    /// The client allows another request on the connection after this one.
    pub keep_alive: bool,
}

// The head is the common outcome and is taken apart at once: boxing it would cost an allocation
// per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Head(Head),
    /// Not all of the head is here yet.
    Partial,
    /// Not for this codec: hyper takes the connection.
    Unusual,
    /// Not HTTP/1 at all: the connection closes without an answer (see [`not_http1`]).
    NotHttp1,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes that are not an HTTP/1 request and must get no HTTP/1 answer: a request line of two
/// words or more whose last word is not `HTTP/…` (another protocol, or a client that believes it speaks HTTP/2 with
/// prior knowledge and got the preface wrong), or something that starts like the HTTP/2 preface
/// and is not it. RFC 9113 §3.4: an invalid preface is a connection error — the connection
/// closes; an HTTP/1 400 written to an HTTP/2 client is noise it cannot read. A well-formed
/// request line with another HTTP version (`HTTP/2.0`, `HTTP/3`) is still answered by hyper (505).
/// `None`: not decided yet (the first line or the preface is incomplete).
fn not_http1(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] == PREFACE[..n] {
        return if n < PREFACE.len() { None } else { Some(false) };
    }
    if buf.starts_with(b"PRI * HTTP/2.0\r\n") {
        return Some(true);
    }
    let line = &buf[..buf.iter().position(|&b| b == b'\n')?];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let version = words.next_back();
    Some(words.count() >= 1 && version.is_some_and(|v| !v.starts_with(b"HTTP/")))
}

/// Parses a request head from the front of `buf`, taking it out of the buffer (what follows
/// stays). `max_bytes` and `max_headers` are the listener's limits: a head beyond either is
/// `Unusual` (hyper answers 431).
pub fn parse_request(buf: &mut BytesMut, max_bytes: usize, max_headers: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_SLOTS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots[..max_headers.min(MAX_SLOTS)]) {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => {
            return match not_http1(buf) {
                Some(true) => Parsed::NotHttp1,
                _ => Parsed::Partial,
            }
        }
        Err(_) if not_http1(buf) == Some(true) => return Parsed::NotHttp1,
        // The first line is still arriving: whether it is HTTP/1 at all (closed unanswered) or a
        // bad one (hyper answers 400) is decided once it ends, however the bytes were split.
        Err(_) if not_http1(buf).is_none() && buf.len() < max_bytes => return Parsed::Partial,
        _ => return Parsed::Unusual,
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parsed::Unusual,
    };
    let Ok(method) = Method::from_bytes(req.method.unwrap_or_default().as_bytes()) else { return Parsed::Unusual };
    if method == Method::CONNECT {
        return Parsed::Unusual;
    }
    // Where each piece sits in the buffer, so the head can become one `Bytes` and every value a
    // slice of it (no copy).
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = at(req.path.unwrap_or_default().as_bytes());
    // Sized to the head (an array for the most a listener allows would be zeroed per request).
    let mut fields = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let (ns, nl) = at(h.name.as_bytes());
        let (vs, vl) = at(h.value);
        fields.push((ns, nl, vs, vl));
    }
    let head = buf.split_to(len).freeze();
    match build(&head, target, &fields, version, method) {
        Some(h) => Parsed::Head(h),
        None => {
            // Put the head back in front of what follows: hyper reads it all.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Unusual
        }
    }
}

/// The request from a complete head (`head`, with the target and fields where httparse found
/// them); `None` when it is not one this codec takes.
fn build(
    head: &Bytes,
    target: (usize, usize),
    fields: &[(usize, usize, usize, usize)],
    version: Version,
    method: Method,
) -> Option<Head> {
    let n = fields.len();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1)).ok()?;

    let mut headers = HeaderMap::with_capacity(n);
    let (mut length, mut lengths, mut chunked, mut codings) = (None, 0, false, 0);
    let mut connection = ConnectionTokens::default();
    for &(ns, nl, vs, vl) in fields {
        let name = token_name(&head[ns..ns + nl]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)).ok()?;
        match name {
            CONTENT_LENGTH => {
                lengths += 1;
                length = Some(content_length(value.as_bytes())?);
            }
            TRANSFER_ENCODING => {
                codings += 1;
                chunked = value.as_bytes().eq_ignore_ascii_case(b"chunked");
            }
            CONNECTION => {
                // A value that is not visible ASCII says nothing to hyper (its `to_str` fails), so
                // persistence would be decided differently: hyper takes such heads whole (found
                // by the server_vs_hyper fuzz target).
                if value.to_str().is_err() {
                    return None;
                }
                connection.read(value.as_bytes());
                if connection.upgrade {
                    return None;
                }
            }
            EXPECT | UPGRADE => return None,
            _ => {}
        }
        headers.append(name, value);
    }
    let body = match (lengths, codings) {
        (0, 0) => Decoder::Done,
        (1, 0) => match length {
            Some(0) => Decoder::Done,
            Some(n) => Decoder::Length(n),
            None => return None,
        },
        (0, 1) if chunked && version == Version::HTTP_11 => Decoder::Chunked(Chunked::default()),
        _ => return None,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let keep_alive = connection.reuse(version);
    Some(Head { request, body, keep_alive })
}

/// How the response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (nothing for a body that may not have one).
    Length(u64),
    Chunked,
    /// Until ferry closes the connection.
    Close,
}

/// What [`encode_response`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// The connection ends after this response.
    pub last: bool,
    /// Trailer fields the response declared (sent after a chunked body, only these).
    pub trailers: Option<Vec<HeaderName>>,
}

/// What the body says of its length: `None` when it is already over.
pub type BodyLength = Option<Option<u64>>;

/// The request a response answers, as far as its head is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// The request was HEAD.
    pub head: bool,
    pub version: Version,
    /// The connection may stay open after this response (the client allows it, ferry is not
    /// closing it for another reason).
    pub keep_alive: bool,
}

/// Appends the response head, framed as hyper's server frames it: a Content-Length the response
/// carries is kept; else an empty body gets `content-length: 0`, a known size its length, an
/// unknown one chunked (or, to an HTTP/1.0 client, the connection's end). HEAD, 1xx, 204 and 304
/// get no body. `date` is added when missing; `connection: close` when the connection ends after
/// this response, `connection: keep-alive` to an HTTP/1.0 client that keeps it.
pub fn encode_response(
    dst: &mut Vec<u8>,
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &HeaderMap,
    body: BodyLength,
    asked: Asked,
    date: &[u8],
) -> Encoded {
    let head_only = asked.head;
    let no_content =
        status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let can_body = !head_only && !no_content;
    let v10 = asked.version == Version::HTTP_10;
    let mut last = !asked.keep_alive;
    dst.reserve(128 + headers.len() * 48);
    dst.extend_from_slice(if v10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(reason.unwrap_or(status.canonical_reason().unwrap_or("<none>").as_bytes()));
    dst.extend_from_slice(b"\r\n");
    let mut framing = None;
    let (mut wrote_date, mut conn_close, mut conn_keep) = (false, false, false);
    let mut trailers: Option<Vec<HeaderName>> = None;
    for (name, value) in headers {
        match *name {
            CONTENT_LENGTH => {
                if framing.is_some() || (body.is_none() && !head_only) {
                    continue;
                }
                let Some(n) = content_length(value.as_bytes()) else { continue };
                framing = Some(Framing::Length(n));
            }
            TRANSFER_ENCODING => {
                if v10 || !can_body || framing.is_some() {
                    continue;
                }
                if !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
                    continue;
                }
                framing = Some(Framing::Chunked);
            }
            CONNECTION => {
                for t in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    conn_close |= t.eq_ignore_ascii_case(b"close");
                    conn_keep |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            TRAILER => {
                if v10 || !can_body {
                    continue;
                }
                let names = value.to_str().unwrap_or_default().split(',');
                trailers
                    .get_or_insert_with(Vec::new)
                    .extend(names.filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()));
            }
            DATE => wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let framing = match framing {
        Some(f) => f,
        None => match body {
            Some(None) if v10 || !can_body => Framing::Close,
            Some(None) => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None | Some(Some(0)) => {
                if !head_only && !no_content {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(n)) => {
                if !no_content {
                    let _ = std::io::Write::write_fmt(dst, format_args!("content-length: {n}\r\n"));
                }
                Framing::Length(n)
            }
        },
    };
    let framing = if can_body { framing } else { Framing::Length(0) };
    last |= conn_close || framing == Framing::Close;
    if last && !conn_close && !v10 {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !last && v10 && !conn_keep {
        dst.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(date);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    let trailers = if framing == Framing::Chunked { trailers } else { None };
    Encoded { framing, last, trailers }
}

/// The trailer block ending a chunked body: the fields `allowed` names (and that may be trailers
/// at all), then the blank line.
pub fn encode_trailers(dst: &mut Vec<u8>, fields: &HeaderMap, allowed: &[HeaderName]) {
    dst.extend_from_slice(b"0\r\n");
    for (name, value) in fields {
        if allowed.contains(name) && may_trail(name) {
            dst.extend_from_slice(name.as_str().as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// Fields that frame, route or authenticate a message never come as trailers (RFC 9110 6.5.1).
fn may_trail(name: &HeaderName) -> bool {
    use http::header::*;
    ![
        AUTHORIZATION,
        CACHE_CONTROL,
        CONTENT_ENCODING,
        CONTENT_LENGTH,
        CONTENT_RANGE,
        CONTENT_TYPE,
        HOST,
        MAX_FORWARDS,
        SET_COOKIE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
    ]
    .contains(name)
}

/// The `date` value, formatted once per second per thread.
pub fn date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                c.1.copy_from_slice(s.as_bytes());
            }
            c.0 = secs;
        }
        f(&c.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Parsed {
        parse_request(&mut BytesMut::from(s), 8192, 100)
    }

    fn head(s: &str) -> Head {
        match parse(s) {
            Parsed::Head(h) => h,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn common_requests_are_taken_with_their_framing() {
        let h = head("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        assert_eq!(h.request.uri(), "/a?b=1");
        assert_eq!(h.request.headers().get_all("x-a").iter().count(), 2);
        assert!(h.keep_alive && h.body.is_done());
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, Decoder::Length(5));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(matches!(h.body, Decoder::Chunked(_)));
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n").request.uri().authority().is_some());
    }

    #[test]
    fn the_head_leaves_the_buffer_and_what_follows_stays() {
        let mut b = BytesMut::from("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET");
        assert!(matches!(parse_request(&mut b, 8192, 100), Parsed::Head(_)));
        assert_eq!(&b[..], b"hiGET");
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
    }

    #[test]
    fn anything_needing_judgment_goes_to_hyper() {
        for s in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            // Left whole in the buffer: hyper reads it from the start.
            let mut b = BytesMut::from(s);
            assert!(matches!(parse_request(&mut b, 8192, 100), Parsed::Unusual), "{s:?}");
            assert_eq!(&b[..], s.as_bytes());
        }
        // Over the limits: hyper answers 431.
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(101));
        assert!(matches!(parse(&many), Parsed::Unusual));
        let big = format!("GET / HTTP/1.1\r\nX-A: {}", "a".repeat(9000));
        assert!(matches!(parse(&big), Parsed::Unusual));
    }

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        body: BodyLength,
        method: Method,
        version: Version,
    ) -> (String, Encoded) {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut dst = Vec::new();
        let asked = Asked { head: method == Method::HEAD, version, keep_alive: true };
        let e = encode_response(&mut dst, StatusCode::from_u16(status).unwrap(), None, &h, body, asked, b"D");
        (String::from_utf8(dst).unwrap(), e)
    }

    #[test]
    fn responses_are_framed_as_hyper_frames_them() {
        let (s, e) = encode(200, &[("content-length", "5")], Some(Some(5)), Method::GET, Version::HTTP_11);
        assert_eq!(s, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: D\r\n\r\n");
        assert_eq!((e.framing, e.last), (Framing::Length(5), false));
        let (s, e) = encode(200, &[], Some(None), Method::GET, Version::HTTP_11);
        assert!(s.contains("transfer-encoding: chunked\r\n") && e.framing == Framing::Chunked);
        let (s, e) = encode(200, &[], Some(None), Method::GET, Version::HTTP_10);
        assert!(s.starts_with("HTTP/1.0 200 OK\r\n") && !s.contains("chunked") && e.last);
        let (s, e) = encode(200, &[], Some(Some(3)), Method::GET, Version::HTTP_10);
        assert!(s.contains("content-length: 3\r\nconnection: keep-alive\r\n") && !e.last);
        let (s, _) = encode(404, &[], None, Method::GET, Version::HTTP_11);
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n"));
        let (s, e) = encode(200, &[("content-length", "9")], None, Method::HEAD, Version::HTTP_11);
        assert!(s.contains("content-length: 9\r\n") && e.framing == Framing::Length(0));
        let (s, e) = encode(304, &[("etag", "\"a\"")], None, Method::GET, Version::HTTP_11);
        assert!(!s.contains("content-length") && e.framing == Framing::Length(0));
        let (s, e) = encode(200, &[("connection", "close")], Some(Some(1)), Method::GET, Version::HTTP_11);
        assert!(s.matches("connection").count() == 1 && e.last);
        let (s, _) = encode(200, &[("date", "X")], None, Method::GET, Version::HTTP_11);
        assert!(!s.contains("date: D"));
        let (_, e) = encode(200, &[("trailer", "x-sum, content-length")], Some(None), Method::GET, Version::HTTP_11);
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("1"));
        t.insert("x-other", HeaderValue::from_static("2"));
        t.insert("content-length", HeaderValue::from_static("3"));
        let mut dst = Vec::new();
        encode_trailers(&mut dst, &t, e.trailers.as_deref().unwrap());
        assert_eq!(dst, b"0\r\nx-sum: 1\r\n\r\n");
    }
}
