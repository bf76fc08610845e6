//! The request path as the upstream will read it, so routes match what is served (nginx's
//! `merge_slashes` and dot-segment resolution, RFC 3986 §6.2.2 normalisation).
//!
//! - Percent-encoded unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded: `/%70rod-api`
//!   is `/prod-api`. Other escapes stay encoded, with upper-case hex digits.
//! - `.` and `..` segments are resolved; a `..` that would climb above the root is refused (400).
//! - Repeated slashes are merged: `//api///x` is `/api/x`.
//! - `%2F` (an encoded `/`) and `%5C` (`\`) stay encoded: they are data within a segment, as most
//!   application servers read them (Tomcat and Spring refuse them by default). But a segment that
//!   would hold a `.` or `..` piece if they were decoded (`..%2F..%2Fadmin`) is refused (400), so
//!   an upstream that does decode them cannot be walked above a route's prefix.
//! - `%00` (NUL) and a malformed escape (`%zz`, a `%` at the end) are refused (400).
//!
//! The path ferry routes on is the path it forwards: nothing is ever re-read differently upstream.
//! The query is not touched. A path already in normal form (nearly every request) is returned as
//! it is, without allocating.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    AboveRoot,
    Nul,
    BadEscape,
    EncodedTraversal,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::AboveRoot => "path climbs above the root with `..`",
            PathError::Nul => "path contains an encoded NUL (%00)",
            PathError::BadEscape => "path contains a malformed percent-escape",
            PathError::EncodedTraversal => "path hides a `.` or `..` segment behind an encoded slash",
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Could anything in this path change under normalisation?
fn maybe_irregular(p: &[u8]) -> bool {
    p.iter().enumerate().any(|(i, &b)| b == b'%' || (b == b'/' && matches!(p.get(i + 1), Some(b'/') | Some(b'.'))))
}

/// Normalises an origin-form path (starting with `/`). Anything else (`*`) is returned unchanged.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let p = path.as_bytes();
    if p.first() != Some(&b'/') || !maybe_irregular(p) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Decode unreserved escapes; refuse NUL and malformed escapes; upper-case the rest.
    let mut decoded = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] != b'%' {
            decoded.push(p[i]);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (p.get(i + 1).copied().and_then(hex), p.get(i + 2).copied().and_then(hex)) else {
            return Err(PathError::BadEscape);
        };
        let c = h << 4 | l;
        if c == 0 {
            return Err(PathError::Nul);
        }
        if unreserved(c) {
            decoded.push(c);
        } else {
            decoded.extend_from_slice(&[b'%', p[i + 1].to_ascii_uppercase(), p[i + 2].to_ascii_uppercase()]);
        }
        i += 3;
    }
    // 2. Segments: merge empty ones, resolve dot segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    for seg in decoded[1..].split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => {
                if hides_dot_segment(s) {
                    return Err(PathError::EncodedTraversal);
                }
                out.push(s);
            }
        }
    }
    let mut n = Vec::with_capacity(decoded.len());
    for s in &out {
        n.push(b'/');
        n.extend_from_slice(s);
    }
    if n.is_empty() || (trailing && !out.is_empty()) {
        n.push(b'/');
    }
    let n = String::from_utf8(n).expect("only ASCII was decoded into an ASCII path");
    Ok(if n == path { Cow::Borrowed(path) } else { Cow::Owned(n) })
}

/// Does a segment, split at `%2F` / `%5C`, contain a `.` or `..` piece?
fn hides_dot_segment(seg: &[u8]) -> bool {
    if !seg.contains(&b'%') {
        return false;
    }
    let s = String::from_utf8_lossy(seg).replace("%2F", "/").replace("%5C", "/");
    s.contains('/') && s.split('/').any(|piece| piece == "." || piece == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn spellings_of_the_same_path() {
        for p in [
            "/prod-api/x",
            "/%70rod-api/x",
            "/%70%72%6F%64-api/x",
            "//prod-api//x",
            "/prod-api/./x",
            "/./prod-api/x",
            "/other/../prod-api/x",
            "/prod-api/y/../x",
            "/prod%2Dapi/x",
            "/prod-api/%2E/x",
            "/prod-api/%2e%2e/prod-api/x",
            "/a/b/%2E%2E/../prod-api/x",
        ] {
            assert_eq!(n(p).as_deref(), Ok("/prod-api/x"), "{p}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/prod-api/x", "/a.b/c-d_e~f", "/x/", "*"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn trailing_slashes_and_root() {
        assert_eq!(n("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("//").as_deref(), Ok("/"));
        assert_eq!(n("/.").as_deref(), Ok("/"));
    }

    #[test]
    fn refusals() {
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/prod-api/../../hello.txt"), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
        assert_eq!(n("/a%zzb"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/public/..%2F..%2Fadmin"), Err(PathError::EncodedTraversal));
        assert_eq!(n("/public/..%5cadmin"), Err(PathError::EncodedTraversal));
    }

    #[test]
    fn other_escapes_stay_encoded_in_upper_case() {
        assert_eq!(n("/files/a%2fb").as_deref(), Ok("/files/a%2Fb"));
        assert_eq!(n("/q/%e4%b8%ad").as_deref(), Ok("/q/%E4%B8%AD"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn idempotent() {
        for p in ["/%70/..//x/%2f/./", "/a%2Fb/../c", "/~u/%7Eu"] {
            let once = n(p).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{p}");
        }
    }
}
