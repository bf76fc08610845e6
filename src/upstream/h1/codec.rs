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
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// Hop-by-hop: read by the parsers, never kept (not a standard name in `http`).
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// What `Connection` field values say, as far as framing goes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some other token: a field name that is hop-by-hop for this message.
    pub other: bool,
}

impl ConnectionTokens {
    /// Adds one `Connection` field value; true when it says more than close/keep-alive (an
    /// upgrade, or fields that are hop-by-hop for this message).
    pub fn read(&mut self, v: &[u8]) -> bool {
        let mut more = false;
        for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                (self.upgrade, more) = (true, true);
            } else if !t.is_empty() {
                (self.other, more) = (true, true);
            }
        }
        more
    }

    /// HTTP/1.1: unless `close`; HTTP/1.0: only with `keep-alive`.
    pub fn reuse(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// The largest response head ferry reads (hyper's client allows ~400 KiB; nginx's default
/// proxy_buffer_size is 4–8 KiB and answers 502 beyond it).
pub const MAX_HEAD: usize = 64 * 1024;
/// Response header fields at most (hyper: 100).
pub const MAX_HEADERS: usize = 128;
/// Chunk extensions and trailer fields, in total per body (hyper: 16 KiB of extensions).
const MAX_CHUNK_META: usize = 16 * 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid chunked body: {0}")]
    Chunk(&'static str),
    #[error("the upstream closed the connection before the body ended ({0} bytes missing)")]
    Truncated(u64),
    #[error("the upstream closed the connection inside a chunked body")]
    TruncatedChunked,
}

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

/// The size line of a chunk: `{len:x}\r\n`.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The field name httparse found (a token), as `HeaderName::from_bytes` reads it, with the names
/// most messages carry matched first a word at a time (about a tenth of `from_bytes`'s
/// instructions, which lowercases into a buffer and then matches every standard name). Only for
/// tokens: OR-ing 0x20 lowercases a token's letters, and no other token byte becomes a letter or
/// `-` by it, so the comparison is exact.
pub fn token_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header::*;
    let is = |want: &[u8]| same_lowercase(raw, want);
    let known = match raw.len() {
        4 if is(b"date") => Some(DATE),
        4 if is(b"host") => Some(HOST),
        4 if is(b"etag") => Some(ETAG),
        4 if is(b"vary") => Some(VARY),
        6 if is(b"server") => Some(SERVER),
        6 if is(b"accept") => Some(ACCEPT),
        6 if is(b"cookie") => Some(COOKIE),
        6 if is(b"origin") => Some(ORIGIN),
        7 if is(b"referer") => Some(REFERER),
        7 if is(b"expires") => Some(EXPIRES),
        8 if is(b"location") => Some(LOCATION),
        10 if is(b"connection") => Some(CONNECTION),
        10 if is(b"user-agent") => Some(USER_AGENT),
        10 if is(b"set-cookie") => Some(SET_COOKIE),
        12 if is(b"content-type") => Some(CONTENT_TYPE),
        13 if is(b"last-modified") => Some(LAST_MODIFIED),
        13 if is(b"accept-ranges") => Some(ACCEPT_RANGES),
        13 if is(b"cache-control") => Some(CACHE_CONTROL),
        13 if is(b"authorization") => Some(AUTHORIZATION),
        14 if is(b"content-length") => Some(CONTENT_LENGTH),
        15 if is(b"accept-encoding") => Some(ACCEPT_ENCODING),
        15 if is(b"accept-language") => Some(ACCEPT_LANGUAGE),
        16 if is(b"content-encoding") => Some(CONTENT_ENCODING),
        17 if is(b"transfer-encoding") => Some(TRANSFER_ENCODING),
        _ => None,
    };
    match known {
        Some(n) => Ok(n),
        None => HeaderName::from_bytes(raw),
    }
}

/// `raw` OR 0x20 (per byte) equals `want` (same length), eight bytes at a time.
#[inline(always)]
fn same_lowercase(raw: &[u8], want: &[u8]) -> bool {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let (mut a, mut b) = (raw.chunks_exact(8), want.chunks_exact(8));
    for (x, y) in a.by_ref().zip(b.by_ref()) {
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("eight bytes"));
        if word(x) | LOWER != word(y) {
            return false;
        }
    }
    a.remainder().iter().zip(b.remainder()).all(|(x, y)| x | 0x20 == *y)
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
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(ParseError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::Head("too many header fields")),
        Err(e) => return Err(ParseError::Head(parse_error(e))),
    };
    if len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
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
            // The last coding of the last field decides.
            te = true;
            te_chunked = ends_chunked(h.value);
        } else if name == CONTENT_LENGTH {
            length = Some(match length {
                Some(Err(())) => Err(()),
                found => decimal_list(h.value, found.and_then(Result::ok)).ok_or(()),
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

/// Is `chunked` the last transfer coding of this field value?
fn ends_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// One Content-Length field value (a list, perhaps): every item the same decimal number, and the
/// same as `found` (the earlier fields'), else `None`.
fn decimal_list(v: &[u8], mut found: Option<u64>) -> Option<u64> {
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(f) if f != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

/// The response body's framing, and where its decoding stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Eof,
    /// Ended.
    Done,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The body has ended (the bytes after it, if any, are left in the buffer).
    End,
    /// More bytes are needed.
    More,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// The size being read, or the data left in the current chunk.
    size: u64,
    digits: u8,
    /// Extension and trailer bytes seen so far.
    meta: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Spaces or tabs after the size (before `;` or CR).
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    EndLf,
}

impl Decoder {
    /// Is the body known to have ended (nothing more to read)?
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = (*left).min(buf.len() as u64) as usize;
                *left -= take as u64;
                let data = buf.split_to(take).freeze();
                if *left == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            Decoder::Eof => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
            Decoder::Chunked(c) => {
                let r = c.decode(buf)?;
                if r == Decoded::End {
                    *self = Decoder::Done;
                }
                Ok(r)
            }
        }
    }

    /// The connection ended (read returned 0): the end of a close-delimited body, an error for
    /// any other unfinished one.
    pub fn eof(&mut self) -> Result<(), ParseError> {
        match self {
            Decoder::Eof | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            Decoder::Length(n) => Err(ParseError::Truncated(*n)),
            Decoder::Chunked(_) => Err(ParseError::TruncatedChunked),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        use ChunkState::*;
        let bad = |why| Err(ParseError::Chunk(why));
        loop {
            if self.state == Data {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = self.size.min(buf.len() as u64) as usize;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            let Some(&b) = buf.first() else { return Ok(Decoded::More) };
            buf.advance(1);
            match self.state {
                Size => match hex(b) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 16 {
                            return bad("chunk size too large");
                        }
                        self.size = self.size << 4 | u64::from(d);
                    }
                    None if self.digits == 0 => return bad("chunk size expected"),
                    None => match b {
                        b' ' | b'\t' => self.state = SizeSpace,
                        b';' => self.state = Extension,
                        b'\r' => self.state = SizeLf,
                        _ => return bad("invalid character in chunk size"),
                    },
                },
                SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    _ => return bad("invalid character after chunk size"),
                },
                Extension => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return bad("chunk extensions too long");
                    }
                    match b {
                        b'\r' => self.state = SizeLf,
                        b'\n' => return bad("bare LF in chunk extension"),
                        // Control characters other than HTAB have no place in an extension.
                        0..=8 | 10..=31 | 127 => return bad("control character in chunk extension"),
                        _ => {}
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return bad("chunk size line not ended by CRLF");
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => unreachable!("handled above"),
                DataCr => {
                    if b != b'\r' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = Size;
                }
                TrailerStart => match b {
                    b'\r' => self.state = EndLf,
                    _ => {
                        self.state = Trailer;
                        self.trailer_byte(b)?;
                    }
                },
                Trailer => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    } else {
                        self.trailer_byte(b)?;
                    }
                }
                TrailerLf => {
                    if b != b'\n' {
                        return bad("trailer line not ended by CRLF");
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if b != b'\n' {
                        return bad("chunked body not ended by CRLF");
                    }
                    return Ok(Decoded::End);
                }
            }
        }
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), ParseError> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(ParseError::Chunk("trailer fields too long"));
        }
        if b == b'\n' || (b < 32 && b != b'\t') || b == 127 {
            return Err(ParseError::Chunk("control character in a trailer field"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, ParseError> {
        parse_head(&mut BytesMut::from(raw), false)
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes; the body and what is left after it.
    fn decode_all(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut rest = wire;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::More if rest.is_empty() => {
                    d.eof()?;
                    return Ok((body, Vec::new()));
                }
                Decoded::More => {
                    let n = step.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
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
        assert_eq!(head(&big).unwrap_err(), ParseError::HeadTooLarge);
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
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6 \r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, rest) = decode_all(Decoder::Chunked(Chunked::default()), wire, step).unwrap();
            assert_eq!(body, b"hello world0123456789");
            // Whatever followed the body in the last piece read stays for the next response.
            assert!(b"NEXT".starts_with(&rest), "{rest:?}");
        }
    }

    #[test]
    fn bad_chunks_are_refused() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"x\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
        ] {
            let r = decode_all(Decoder::Chunked(Chunked::default()), wire, 64);
            assert!(r.is_err(), "{:?} accepted as {r:?}", String::from_utf8_lossy(wire));
        }
        // Truncated bodies are errors, a close-delimited one is not.
        assert!(matches!(decode_all(Decoder::Length(10), b"short", 64), Err(ParseError::Truncated(5))));
        assert!(decode_all(Decoder::Chunked(Chunked::default()), b"5\r\nhel", 64).is_err());
        assert_eq!(decode_all(Decoder::Eof, b"all of it", 4).unwrap().0, b"all of it");
    }

    /// The word-at-a-time names agree with `HeaderName::from_bytes` for every token that is one of
    /// them in any case, or one byte away from one (each byte replaced by every token byte).
    #[test]
    fn token_names_are_from_bytes_names() {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let names = [
            "date",
            "host",
            "etag",
            "vary",
            "server",
            "accept",
            "cookie",
            "origin",
            "referer",
            "expires",
            "location",
            "connection",
            "user-agent",
            "set-cookie",
            "content-type",
            "last-modified",
            "accept-ranges",
            "cache-control",
            "authorization",
            "content-length",
            "accept-encoding",
            "accept-language",
            "content-encoding",
            "transfer-encoding",
            "x-forwarded-for",
            "keep-alive",
            "a",
        ];
        let mut checked = 0;
        for n in names {
            for variant in [
                n.to_string(),
                n.to_ascii_uppercase(),
                n.split('-')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("-"),
            ] {
                let v = variant.as_bytes();
                assert_eq!(token_name(v).unwrap(), HeaderName::from_bytes(v).unwrap(), "{variant}");
                for i in 0..v.len() {
                    for b in (0..=255u8).filter(|&b| tchar(b)) {
                        let mut w = v.to_vec();
                        w[i] = b;
                        assert_eq!(
                            token_name(&w).ok(),
                            HeaderName::from_bytes(&w).ok(),
                            "{:?}",
                            String::from_utf8_lossy(&w)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
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
