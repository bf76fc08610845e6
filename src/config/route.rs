//! One route of an http listener: its match (host, path prefix, headers) and what it does with a
//! request (the backend, strip_prefix, max_body_bytes). Route actions get their own file beside this.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};
use marked_yaml::Node;

use super::diag::Errs;
use super::fields::{boolean, host_match, number};
use super::raw::{RawMatch, RawRoute};
use super::Route;

pub(super) fn route(
    listener: &str,
    index: usize,
    node: &Node,
    backends: &HashSet<&str>,
    errs: &mut Errs<'_>,
) -> Option<Route> {
    let raw: RawRoute = errs.de(node, "route")?;
    let before = errs.list.len();
    let name = match &raw.name {
        Some(n) => n.trim().to_string(),
        None => format!("{listener}.{index}"),
    };
    if !backends.contains(raw.backend.as_str()) {
        let mut known: Vec<&str> = backends.iter().copied().collect();
        known.sort_unstable();
        errs.span(
            raw.backend.span(),
            format!(
                "route `{name}` names backend `{}`, which is not defined (defined: {})",
                raw.backend.as_str(),
                known.join(", ")
            ),
        );
    }
    let m = raw.matches.unwrap_or(RawMatch { host: None, path_prefix: None, headers: None });
    let host = m.host.as_ref().and_then(|h| host_match(h, errs));
    let path_prefix = m.path_prefix.as_ref().and_then(|p| {
        let s = p.trim();
        if !s.starts_with('/') {
            errs.span(p.span(), format!("path_prefix `{s}` must start with `/`"));
            return None;
        }
        if s.contains(['?', '#']) || s.contains(char::is_whitespace) {
            errs.span(p.span(), format!("path_prefix `{s}` may not contain `?`, `#` or spaces"));
            return None;
        }
        let trimmed = s.trim_end_matches('/');
        Some(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
    });
    let mut headers = Vec::new();
    if let Some(h) = &m.headers {
        let mut pairs: Vec<_> = h.iter().collect();
        pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (k, v) in pairs {
            let Ok(name) = HeaderName::from_bytes(k.trim().as_bytes()) else {
                errs.span(k.span(), format!("`{}` is not a valid header name", k.as_str()));
                continue;
            };
            let Ok(value) = HeaderValue::from_str(v.as_str()) else {
                errs.span(v.span(), format!("the value of header `{name}` is not a valid header value"));
                continue;
            };
            headers.push((name, value));
        }
    }
    let strip_prefix = boolean(&raw.strip_prefix, "strip_prefix", false, errs);
    if strip_prefix && path_prefix.is_none() {
        let s = raw.strip_prefix.as_ref().expect("strip_prefix was set");
        errs.span(s.span(), format!("route `{name}` sets strip_prefix but has no match.path_prefix to strip"));
    }
    let max_body_bytes = raw.max_body_bytes.as_ref().map(|_| number(&raw.max_body_bytes, "max_body_bytes", 0u64, errs));
    if errs.list.len() != before {
        return None;
    }
    Some(Route { name, host, path_prefix, headers, strip_prefix, backend: raw.backend.to_string(), max_body_bytes })
}
