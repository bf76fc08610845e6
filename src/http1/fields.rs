//! Field-level rules: names, `Connection` tokens, Content-Length, the last transfer coding.

use http::{HeaderName, Version};

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
        for t in list(v) {
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

/// The items of a comma-separated field value (RFC 9110 §5.6.1), whitespace trimmed; empty
/// items are kept (callers skip them). Every list ferry reads — `Connection`, `Upgrade`,
/// `Transfer-Encoding` — is split here.
pub fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Is `chunked` the last transfer coding of this field value (RFC 9112 §6.1)?
pub fn ends_chunked(v: &[u8]) -> bool {
    list(v).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// One Content-Length value, strictly (RFC 9112 §8.6: `1*DIGIT`, surrounding whitespace
/// trimmed): no sign, no list, no hex, at most 19 digits (so no overflow). Every reader of a
/// Content-Length in ferry goes through here or [`content_length_list`].
pub fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// One Content-Length field value that may be a list (a response from an upstream that merged
/// fields): every item the same [`content_length`], and the same as `found` (the earlier
/// fields'), else `None` (RFC 9112 §6.3 rule 5).
pub fn content_length_list(v: &[u8], mut found: Option<u64>) -> Option<u64> {
    for part in v.split(|&b| b == b',') {
        let n = content_length(part)?;
        match found {
            Some(f) if f != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        for ok in ["0", "5", " 5 ", "005", "9999999999999999999"] {
            assert!(content_length(ok.as_bytes()).is_some(), "{ok:?}");
        }
        for bad in ["", "+5", "-5", "0x5", "5.0", "5e0", "5 5", "5,5", "\x0b5", "99999999999999999999"] {
            assert_eq!(content_length(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(content_length_list(b"5, 5", None), Some(5));
        assert_eq!(content_length_list(b"5, 6", None), None);
        assert_eq!(content_length_list(b"5", Some(6)), None);
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
}
