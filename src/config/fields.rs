//! Scalar fields: durations, whole numbers, booleans, addresses, host names, DNS labels and paths,
//! each parsed with an error at the value's position.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::{Span, Spanned};

use super::diag::Errs;
use super::HostMatch;

/// Parses a duration such as `1s`, `250ms`, `2m`, or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| format!("`{t}` is not a duration ({e}); write e.g. 500ms, 1s, 2m"))
}

/// Does a connection to `addr` reach a socket bound to `bind` on this host? (Same port, and the
/// same IP, or a wildcard bind reached through loopback.)
pub(super) fn loops_back(bind: SocketAddr, addr: SocketAddr) -> bool {
    bind.port() != 0
        && bind.port() == addr.port()
        && (bind.ip() == addr.ip()
            || (bind.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
}

pub(super) fn duration_key(
    node: Option<&marked_yaml::types::MarkedScalarNode>,
    default: Duration,
    errs: &mut Errs<'_>,
) -> Option<Duration> {
    match node {
        None => Some(default),
        Some(s) => match parse_duration(s.as_str()) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.span(s.span(), e);
                None
            }
        },
    }
}

pub(super) fn spanned_duration(v: &Option<Spanned<String>>, default: Duration, errs: &mut Errs<'_>) -> Duration {
    match v {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|e| {
            errs.span(s.span(), e);
            default
        }),
    }
}

/// A whole number field, parsed here (not by serde) so one bad value does not hide the others.
pub(super) fn number<T: std::str::FromStr>(
    v: &Option<Spanned<String>>,
    key: &str,
    default: T,
    errs: &mut Errs<'_>,
) -> T {
    match v {
        None => default,
        Some(s) => s.trim().parse().unwrap_or_else(|_| {
            errs.span(s.span(), format!("{key}: `{}` is not a whole number", s.as_str()));
            default
        }),
    }
}

pub(super) fn boolean(v: &Option<Spanned<String>>, key: &str, default: bool, errs: &mut Errs<'_>) -> bool {
    match v.as_ref().map(|s| (s, s.trim())) {
        None => default,
        Some((_, "true")) => true,
        Some((_, "false")) => false,
        Some((s, other)) => {
            errs.span(s.span(), format!("{key}: `{other}` is not true or false"));
            default
        }
    }
}

pub(super) fn parse_addr(s: &str, span: &Span, what: &str, errs: &mut Errs<'_>) -> Option<SocketAddr> {
    match s.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.span(
                span,
                format!("{what}: `{s}` is not an IP:port address (for example 127.0.0.1:8080 or [::1]:8080)"),
            );
            None
        }
    }
}

/// A path from the config: relative ones are taken from the config file's directory.
pub(super) fn relative_to(config_file: &str, p: &str) -> PathBuf {
    let p = Path::new(p.trim());
    match Path::new(config_file).parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

pub(super) fn host_match(h: &Spanned<String>, errs: &mut Errs<'_>) -> Option<HostMatch> {
    if let Some(re) = h.trim().strip_prefix('~') {
        return match regex::RegexBuilder::new(re).size_limit(1 << 20).build() {
            Ok(r) => Some(HostMatch::Regex(Box::new(r))),
            Err(e) => {
                errs.span(h.span(), format!("host `{}`: not a valid regex: {e}", h.as_str()));
                None
            }
        };
    }
    let s = h.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    };
    if let Some(rest) = s.strip_prefix("*.") {
        if valid(rest) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if let Some(rest) = s.strip_suffix(".*") {
        if valid(rest) {
            return Some(HostMatch::Prefix(format!("{rest}.")));
        }
    } else if valid(&s) {
        return Some(HostMatch::Exact(s));
    }
    errs.span(
        h.span(),
        format!(
            "host `{}` is not a host name; use an exact name, a wildcard (*.example.com, www.example.*) or ~REGEX (no port)",
            h.as_str()
        ),
    );
    None
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub(super) fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
