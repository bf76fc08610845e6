//! `body_replace` (nginx `sub_filter`): literal strings replaced in a response body as it streams —
//! every occurrence, or (`body_replace_once`, nginx's `sub_filter_once on`) each string's first;
//! matched as written, or ignoring ASCII case (`body_replace_ignore_case`, as nginx matches).
//!
//! The patterns are one Aho-Corasick automaton (leftmost-first, as nginx tries its patterns in
//! order at each position). Each chunk is searched together with the tail of the one before it,
//! and only the last `longest pattern - 1` bytes are held back, since only they could begin a
//! match that the next chunk completes: a match split across chunks is still replaced, and the
//! memory held is bounded by the longest pattern, whatever the body's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// A route's compiled replacements and the content types they apply to.
#[derive(Debug)]
pub struct Replacer {
    ac: AhoCorasick,
    to: Box<[Bytes]>,
    longest: usize,
    types: Box<[String]>,
    /// Each string is replaced at its first occurrence only.
    once: bool,
}

impl Replacer {
    /// `rules`: (from, to) in order; `types`: media types (`text/html`) the replacement applies to.
    pub fn new(rules: &[(String, String)], types: &[String], once: bool, ignore_case: bool) -> Option<Replacer> {
        let from: Vec<&str> = rules.iter().map(|(f, _)| f.as_str()).collect();
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .ascii_case_insensitive(ignore_case)
            .build(&from)
            .ok()?;
        Some(Replacer {
            ac,
            to: rules.iter().map(|(_, t)| Bytes::from(t.clone())).collect(),
            longest: from.iter().map(|f| f.len()).max().unwrap_or(1),
            types: types.iter().map(|t| t.to_ascii_lowercase()).collect(),
            once,
        })
    }

    /// Does a response with this Content-Type (and Content-Encoding) get the replacement? Only
    /// uncompressed bodies of a listed type.
    pub fn applies(&self, headers: &http::HeaderMap) -> bool {
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        !encoded && self.types.contains(&media)
    }

    /// Replaces in `buf`; with `last`, everything, otherwise all but a tail that could still begin
    /// a match, which is returned to be searched with the next chunk. `used`: the strings already
    /// replaced once (for `once`).
    fn run(&self, buf: &[u8], last: bool, used: &mut Vec<bool>) -> (BytesMut, BytesMut) {
        let safe = if last { buf.len() } else { buf.len().saturating_sub(self.longest - 1) };
        let mut out = BytesMut::with_capacity(buf.len());
        let mut pos = 0;
        for m in self.ac.find_iter(buf) {
            if m.start() >= safe {
                break;
            }
            if self.once {
                let i = m.pattern().as_usize();
                if used.len() <= i {
                    used.resize(self.to.len(), false);
                }
                if std::mem::replace(&mut used[i], true) {
                    continue; // left as it is, passed on with the text around it
                }
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&self.to[m.pattern().as_usize()]);
            pos = m.end();
        }
        let keep_from = pos.max(safe);
        out.extend_from_slice(&buf[pos..keep_from]);
        (out, BytesMut::from(&buf[keep_from..]))
    }
}

/// A response body with the replacements applied as it streams.
pub struct Replaced<B> {
    inner: B,
    replacer: Arc<Replacer>,
    carry: BytesMut,
    done: bool,
    /// The strings replaced so far (`once` only).
    used: Vec<bool>,
}

impl<B> Replaced<B> {
    pub fn new(inner: B, replacer: Arc<Replacer>) -> Replaced<B> {
        Replaced { inner, replacer, carry: BytesMut::new(), done: false, used: Vec::new() }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Replaced<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let mut buf = std::mem::take(&mut this.carry);
                        buf.extend_from_slice(&data);
                        let (out, carry) = this.replacer.run(&buf, false, &mut this.used);
                        this.carry = carry;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    // Trailers end the body: flush what is held, then pass them on next time.
                    Err(trailers) => {
                        let (out, _) = this.replacer.run(&std::mem::take(&mut this.carry), true, &mut this.used);
                        if !out.is_empty() {
                            // The trailers are dropped here: HTTP/1.1 answers to clients rarely
                            // carry them, and a rewritten body's trailers (digests) would be wrong.
                            let _ = trailers;
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let (out, _) = this.replacer.run(&std::mem::take(&mut this.carry), true, &mut this.used);
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out.freeze()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace_in_chunks(r: &Replacer, chunks: &[&str]) -> String {
        let mut carry = BytesMut::new();
        let mut out = Vec::new();
        let mut used = Vec::new();
        for c in chunks {
            carry.extend_from_slice(c.as_bytes());
            let (o, rest) = r.run(&carry, false, &mut used);
            out.extend_from_slice(&o);
            carry = rest;
            assert!(carry.len() < r.longest, "held back more than the longest pattern");
        }
        let (o, _) = r.run(&carry, true, &mut used);
        out.extend_from_slice(&o);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn once_and_ignoring_case_as_sub_filter_does() {
        let rules = [("/app/".to_string(), "/ui/app/".to_string()), ("Title".to_string(), "T".to_string())];
        let page = "<a href=/APP/x>/app/y TITLE title";
        let r = Replacer::new(&rules, &["text/html".into()], true, true).unwrap();
        let want = "<a href=/ui/app/x>/app/y T title";
        for cut in 0..=page.len() {
            assert_eq!(replace_in_chunks(&r, &[&page[..cut], &page[cut..]]), want, "cut at {cut}");
        }
        let every = Replacer::new(&rules, &["text/html".into()], false, false).unwrap();
        assert_eq!(replace_in_chunks(&every, &[page]), "<a href=/APP/x>/ui/app/y TITLE title");
    }

    #[test]
    fn matches_split_anywhere_are_replaced() {
        let r = Replacer::new(
            &[("<base href=\"/\">".into(), "<base href=\"/ui/\">".into()), ("href=\"/".into(), "href=\"/ui/".into())],
            &["text/html".into()],
            false,
            false,
        )
        .unwrap();
        let page = "<head><base href=\"/\"><link href=\"/css/a.css\"></head><a href=\"/x\">x</a>";
        let want = "<head><base href=\"/ui/\"><link href=\"/ui/css/a.css\"></head><a href=\"/ui/x\">x</a>";
        assert_eq!(replace_in_chunks(&r, &[page]), want);
        // Every way of cutting the page in two, and one byte at a time.
        for cut in 0..=page.len() {
            assert_eq!(replace_in_chunks(&r, &[&page[..cut], &page[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<String> = page.chars().map(|c| c.to_string()).collect();
        let singles: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(replace_in_chunks(&r, &singles), want);
    }

    #[test]
    fn only_listed_uncompressed_types() {
        let r = Replacer::new(&[("a".into(), "b".into())], &["text/html".into()], false, false).unwrap();
        let h = |ct: &str, ce: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            if let Some(e) = ce {
                h.insert(http::header::CONTENT_ENCODING, e.parse().unwrap());
            }
            r.applies(&h)
        };
        assert!(h("text/html; charset=utf-8", None));
        assert!(h("TEXT/HTML", Some("identity")));
        assert!(!h("text/css", None));
        assert!(!h("text/html", Some("gzip")));
    }
}
