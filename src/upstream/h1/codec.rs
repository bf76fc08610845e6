//! HTTP/1.1 framing towards an upstream, free of I/O so tests and the fuzzer drive it with bytes:
//! the request head ferry writes, the response head it reads (httparse, as hyper parses), and the
//! response body's framing (RFC 9112 §6.3), decoded zero-copy out of the connection's read buffer.
//!
//! Strict where a lenient reading could desynchronise the connection (the classic smuggling
//! surfaces): a chunk-size line is hex digits, optional extensions and CRLF — no bare LF, no
//! sign, no overflow; Content-Length values must all agree; Transfer-Encoding on an HTTP/1.0
//! response, or heads beyond [`MAX_HEAD`], are errors. A response that carries both
//! Transfer-Encoding and Content-Length is read as chunked, its Content-Length dropped and its
//! connection not reused.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use crate::http1::{content_length_list, ends_chunked, token_name, Chunked, ConnectionTokens, KEEP_ALIVE};
pub use crate::http1::{Decoded, Decoder, ParseError};

/// The largest response head ferry reads (hyper's client allows ~400 KiB; nginx's default
/// proxy_buffer_size is 4–8 KiB and answers 502 beyond it).
pub const MAX_HEAD: usize = 64 * 1024;
/// Response header fields at most (hyper: 100).
pub const MAX_HEADERS: usize = 100;
/// How the request body is framed on the wire (chosen by [`request_framing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (nothing written after the head).
    None,
    /// Content-Length bytes as they come (the header is in the head).
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How the request body goes out, as hyper's client decides it: no body → nothing (a
/// Content-Length the client sent is kept); a declared length → as is; a known size → a
/// Content-Length is added; otherwise chunked. (The client's own Transfer-Encoding is hop-by-hop
/// and already gone.)
pub fn request_framing(headers: &HeaderMap, has_body: bool, exact: Option<u64>) -> (Framing, Option<u64>) {
    if !has_body {
        return (Framing::None, None);
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return (Framing::Length, None);
    }
    match exact {
        Some(n) => (Framing::Length, Some(n)),
        None => (Framing::Chunked, None),
    }
}

/// Appends the request head: request line, `host` (when given, in place of the headers' own),
/// every header as `name: value`, the framing header when [`request_framing`] asks for one, and
/// the blank line.
pub fn encode_head(
    dst: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: Option<&HeaderValue>,
    framing: Framing,
    add_length: Option<u64>,
) {
    dst.reserve(64 + target.len() + headers.len() * 40);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(h) = host {
        dst.extend_from_slice(b"host: ");
        dst.extend_from_slice(h.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if host.is_some() && name == http::header::HOST {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if let Some(n) = add_length {
        let _ = std::io::Write::write_fmt(dst, format_args!("content-length: {n}\r\n"));
    } else if framing == Framing::Chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// A response head, parsed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The reason phrase, when it is not the status's canonical one (hyper passes it on).
    pub reason: Option<Bytes>,
    pub headers: HeaderMap,
    /// How the body that follows is framed.
    pub body: Decoder,
    /// May the connection carry another request once this response is read?
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, taking it out of the buffer (the body's bytes
/// stay). `Ok(None)`: not all of it is here yet. `head_request`: the request was HEAD (no body
/// follows whatever the headers say).
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, ParseError> {
    // Uninitialised slots: nothing to clear per response.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(ParseError::HeadTooLarge(MAX_HEAD)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::Head("too many header fields")),
        Err(e) => return Err(ParseError::Head(parse_error(e))),
    };
    if len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge(MAX_HEAD));
    }
    let code = resp.code.expect("a complete head has a status code");
    let status = StatusCode::from_u16(code).map_err(|_| ParseError::Head("status code out of range"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // The head's own copy, which the values share: the read buffer stays free for reuse however
    // long the headers live.
    let head = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| s.as_ptr() as usize - base;
    let reason = resp.reason.filter(|r| status.canonical_reason() != Some(*r) && !r.is_empty());
    let reason = reason.map(|r| head.slice(at(r.as_bytes())..at(r.as_bytes()) + r.len()));
    // One pass builds the map and reads the framing fields as they go by (no lookups after).
    // `Connection` naming only close/keep-alive, and `Keep-Alive`, are hop-by-hop and say
    // nothing more: read here, never put in the map (ferry would strip them from it).
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut connection = ConnectionTokens::default();
    let (mut te, mut te_chunked) = (false, false);
    // Content-Length: `Some(Ok(n))` while every value agrees, `Some(Err)` once one does not.
    let mut length: Option<Result<u64, ()>> = None;
    for h in resp.headers.iter() {
        let name = token_name(h.name.as_bytes()).map_err(|_| ParseError::Head("invalid header name"))?;
        let v = at(h.value);
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + h.value.len()))
            .map_err(|_| ParseError::Head("invalid header value"))?;
        if name == CONNECTION {
            if !connection.read(h.value) {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            // A value of other than visible ASCII is framing nobody reads alike (hyper ignores
            // it and reads to the close; its last word may say chunked): refused, not guessed.
            if !h.value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                return Err(ParseError::Head("Transfer-Encoding is not visible ASCII"));
            }
            // The last coding of the last field decides.
            te = true;
            te_chunked = ends_chunked(h.value);
        } else if name == CONTENT_LENGTH {
            length = Some(match length {
                Some(Err(())) => Err(()),
                found => content_length_list(h.value, found.and_then(Result::ok)).ok_or(()),
            });
        } else if name == KEEP_ALIVE {
            continue;
        }
        headers.append(name, value);
    }
    buf.advance(len);
    let mut keep_alive = connection.reuse(version);
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = if head_request || bodiless {
        Decoder::Done
    } else if te {
        if version == Version::HTTP_10 {
            return Err(ParseError::Head("Transfer-Encoding in an HTTP/1.0 response"));
        }
        if length.is_some() {
            // Both: chunked wins (RFC 9112 §6.3), and the connection is not trusted afterwards.
            headers.remove(CONTENT_LENGTH);
            keep_alive = false;
        }
        if te_chunked {
            Decoder::Chunked(Chunked::default())
        } else {
            keep_alive = false;
            Decoder::Eof
        }
    } else if let Some(length) = length {
        match length {
            Ok(0) => Decoder::Done,
            Ok(n) => Decoder::Length(n),
            Err(()) => return Err(ParseError::Head("invalid Content-Length")),
        }
    } else {
        keep_alive = false;
        Decoder::Eof
    };
    Ok(Some(Head { status, version, reason, headers, body, keep_alive }))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid version",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::body::tests::decode_all;
    use crate::http1::chunk_size_line;

    fn head(raw: &str) -> Result<Option<Head>, ParseError> {
        parse_head(&mut BytesMut::from(raw), false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
        assert!(matches!(h.body, Decoder::Chunked(_)));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (Decoder::Eof, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (Decoder::Eof, false));
        // Both: chunked, Content-Length dropped, connection not reused.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert!(matches!(h.body, Decoder::Chunked(_)));
        assert!(!h.keep_alive && !h.headers.contains_key(CONTENT_LENGTH));
        for s in [204, 304] {
            let h = head(&format!("HTTP/1.1 {s} X\r\nContent-Length: 9\r\n\r\n")).unwrap().unwrap();
            assert_eq!(h.body, Decoder::Done);
        }
        let h = parse_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"), true).unwrap().unwrap();
        assert_eq!(h.body, Decoder::Done);
        assert_eq!(head("HTTP/1.1 100 Continue\r\n\r\n").unwrap().unwrap().status, StatusCode::CONTINUE);
        // HTTP/1.0: reused only when asked.
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(
            head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().keep_alive
        );
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: x, close\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().keep_alive
        );
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(head(raw).is_err(), "{raw:?} accepted");
        }
        // Equal values (also in a list) are one length.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, Decoder::Length(5));
        // Partial, then too large.
        assert!(head("HTTP/1.1 200 OK\r\nX: y").unwrap().is_none());
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD));
        assert_eq!(head(&big).unwrap_err(), ParseError::HeadTooLarge(MAX_HEAD));
    }

    #[test]
    fn values_share_the_head_and_the_body_stays_in_the_buffer() {
        let mut buf = BytesMut::from("HTTP/1.1 299 Fine Thanks\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\nokNEXT");
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status.as_u16(), 299);
        assert_eq!(h.reason.as_deref(), Some(&b"Fine Thanks"[..]));
        let all: Vec<_> = h.headers.get_all("x-a").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(&buf[..], b"okNEXT");
        let (body, rest) = decode_all(h.body, &buf.split().freeze(), 3).unwrap();
        assert_eq!(&body[..], b"ok");
        assert!(b"NEXT".starts_with(&rest), "{rest:?}");
        // A canonical reason is not kept.
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap().reason.is_none());
    }

    #[test]
    fn request_heads_frame_their_bodies() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        let mut out = Vec::new();
        let (f, add) = request_framing(&h, true, None);
        encode_head(&mut out, &Method::POST, "/p?q=1", &h, None, f, add);
        assert_eq!(out, b"POST /p?q=1 HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n");
        out.clear();
        let (f, add) = request_framing(&h, true, Some(1234));
        h.insert("x-b", HeaderValue::from_static("c"));
        encode_head(&mut out, &Method::PUT, "/", &h, Some(&HeaderValue::from_static("up:80")), f, add);
        assert_eq!(out, b"PUT / HTTP/1.1\r\nhost: up:80\r\nx-b: c\r\ncontent-length: 1234\r\n\r\n");
        h.insert("content-length", HeaderValue::from_static("7"));
        assert_eq!(request_framing(&h, true, Some(7)), (Framing::Length, None));
        assert_eq!(request_framing(&h, false, None), (Framing::None, None));
        for (n, line) in [(1usize, "1\r\n"), (255, "ff\r\n"), (4096, "1000\r\n"), (0, "0\r\n")] {
            assert_eq!(&chunk_size_line(n)[..], line.as_bytes());
        }
    }
}
