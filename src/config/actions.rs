//! What a route does besides forwarding, as nginx users write it: `access` (allow/deny),
//! `redirect` (`return 301 URL`), `respond` (`return 200 "text"`), `rewrite` (a prefix replaced, as
//! `proxy_pass http://b/new/;` does, or a regex, as `rewrite ... break`), `request_headers`
//! (`proxy_set_header`) and `response_headers` (`add_header`, `proxy_hide_header`). Values take
//! nginx variables (`template`). Each is validated here with errors at its line and column; a route
//! with none of them gets no [`Actions`] at all, so it pays nothing for them.

use http::{HeaderName, HeaderValue, StatusCode};
use marked_yaml::Spanned;
use regex::Regex;

use super::diag::Errs;
use super::raw::{
    RawAccess, RawBasicAuth, RawForwardAuth, RawHeaderActions, RawRateLimit, RawRedirect, RawRespond, RawRewrite,
};
use super::template::Template;

/// One allow/deny line; `from: None` is `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    pub from: Option<ipnet::IpNet>,
}

/// nginx `auth_basic REALM; auth_basic_user_file FILE;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub realm: String,
    /// Relative paths are taken from the config file's directory.
    pub htpasswd: std::path::PathBuf,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (the real client behind trusted proxies).
    ClientIp,
    /// A request header's value; requests without it are not limited (nginx: an empty key).
    Header(HeaderName),
}

/// nginx `limit_req zone=... burst=N nodelay` with its zone's `rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Thousandths of a request per second.
    pub rate: u64,
    pub burst: u32,
    pub key: LimitKey,
    pub status: StatusCode,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub to: Template,
    pub status: StatusCode,
}

#[derive(Debug, Clone)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Option<Template>,
    pub content_type: HeaderValue,
}

#[derive(Debug, Clone)]
pub enum Rewrite {
    /// The matched `path_prefix` is replaced by this (`/` strips it).
    Prefix(String),
    /// The path, where the regex matches, becomes `to` (captures as `$1`…). A `?` in `to` sets the
    /// query (a trailing `?` drops it); otherwise the query is kept. `reroute`: the rewritten
    /// request is routed again on the listener (nginx `rewrite … last`).
    Regex { regex: Regex, to: Template, reroute: bool },
}

/// `set` replaces (an empty result removes, as nginx's `proxy_set_header`), `add` appends,
/// `remove` removes; applied in that order: remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderActions {
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
    pub remove: Vec<HeaderName>,
    /// Response headers only: actions for answers of status 200, 201, 204, 206, 301, 302, 303,
    /// 304, 307 or 308 alone (nginx's `add_header` without `always`), applied after the others.
    pub on_success: Option<Box<HeaderActions>>,
}

impl HeaderActions {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty() && self.on_success.is_none()
    }

    pub fn templates(&self) -> Box<dyn Iterator<Item = &Template> + '_> {
        let own = self.set.iter().chain(&self.add).map(|(_, t)| t);
        match &self.on_success {
            None => Box::new(own),
            Some(s) => Box::new(own.chain(s.templates())),
        }
    }
}

/// `forward_auth`: before the request goes on, a request to an auth service decides (nginx
/// `auth_request`, Traefik's forwardAuth, Envoy's ext_authz): 2xx lets it through, 401 and 403
/// are the client's answer, anything else (or no answer) is 500.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    pub backend: String,
    /// The auth request's target (default `$request_uri`).
    pub path: Template,
    /// Set on the auth request, which otherwise carries the client's headers and method, no body.
    pub headers: Vec<(HeaderName, Template)>,
    /// Upstream request header ← the auth answer's header (nginx `auth_request_set` +
    /// `proxy_set_header`).
    pub copy_to_request: Vec<(HeaderName, HeaderName)>,
    /// Client response header ← the auth answer's header (oauth2-proxy's cookie refresh).
    pub copy_to_response: Vec<(HeaderName, HeaderName)>,
}

/// Everything a route does besides choosing a backend, in the order it is applied.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub access: Vec<AccessRule>,
    pub basic_auth: Option<BasicAuth>,
    pub forward_auth: Option<ForwardAuth>,
    /// `satisfy: any` (nginx): a client `access` allows needs no credentials, one it denies may
    /// still pass with them; by default (`all`) both must pass.
    pub satisfy_any: bool,
    pub rate_limit: Option<RateLimit>,
    pub redirect: Option<Redirect>,
    pub respond: Option<Respond>,
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderActions,
    pub response_headers: HeaderActions,
    /// Some template renders `$1`…`$9`: the request's regex captures are needed (worked out once
    /// when the route is read, not per request).
    pub needs_captures: bool,
}

impl Actions {
    pub fn is_empty(&self) -> bool {
        self.access.is_empty()
            && self.basic_auth.is_none()
            && self.forward_auth.is_none()
            && self.rate_limit.is_none()
            && self.redirect.is_none()
            && self.respond.is_none()
            && self.rewrite.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
    }

    /// Every template the actions render.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let redirect = self.redirect.iter().map(|r| &r.to);
        let body = self.respond.iter().filter_map(|r| r.body.as_ref());
        let rewrite = self.rewrite.iter().filter_map(|r| match r {
            Rewrite::Regex { to, .. } => Some(to),
            Rewrite::Prefix(_) => None,
        });
        let auth =
            self.forward_auth.iter().flat_map(|f| std::iter::once(&f.path).chain(f.headers.iter().map(|h| &h.1)));
        redirect
            .chain(body)
            .chain(rewrite)
            .chain(auth)
            .chain(self.request_headers.templates())
            .chain(self.response_headers.templates())
    }

    /// Does anything render `$N` captures? (What `needs_captures` is set from.)
    pub fn uses_captures(&self) -> bool {
        self.templates().any(|t| t.max_capture() > 0)
    }
}

/// A template from a config value, or an error at the value naming the variable.
pub(super) fn template(v: &Spanned<String>, what: &str, errs: &mut Errs<'_>) -> Option<Template> {
    match Template::parse(v.as_str()) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.span(v.span(), format!("{what}: {} (at character {})", e.message, e.offset + 1));
            None
        }
    }
}

fn status(v: &Spanned<String>, allowed: &[u16], what: &str, errs: &mut Errs<'_>) -> Option<StatusCode> {
    let n = v.trim().parse::<u16>().ok().filter(|n| allowed.is_empty() || allowed.contains(n));
    match n.and_then(|n| StatusCode::from_u16(n).ok()).filter(|s| s.as_u16() >= 200 || !allowed.is_empty()) {
        Some(s) => Some(s),
        None if allowed.is_empty() => {
            errs.span(v.span(), format!("{what}: `{}` is not a status code from 200 to 999", v.trim()));
            None
        }
        None => {
            let list: Vec<String> = allowed.iter().map(u16::to_string).collect();
            errs.span(v.span(), format!("{what}: status `{}` is not one of {}", v.trim(), list.join(", ")));
            None
        }
    }
}

pub(super) fn access(rules: &Spanned<Vec<RawAccess>>, errs: &mut Errs<'_>) -> Vec<AccessRule> {
    let mut out = Vec::new();
    if rules.is_empty() {
        errs.span(rules.span(), "access: the list is empty (write `- allow: all` to allow everyone)");
    }
    for r in rules.iter() {
        let (allow, v) = match (&r.allow, &r.deny) {
            (Some(v), None) => (true, v),
            (None, Some(v)) => (false, v),
            _ => {
                errs.span(rules.span(), "access: each entry is either `allow: CIDR|IP|all` or `deny: CIDR|IP|all`");
                continue;
            }
        };
        let t = v.trim();
        let from = if t == "all" {
            None
        } else {
            match t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
                Ok(n) => Some(n),
                Err(_) => {
                    errs.span(v.span(), format!("access: `{t}` is not a CIDR (10.0.0.0/8), an IP address or `all`"));
                    continue;
                }
            }
        };
        out.push(AccessRule { allow, from });
    }
    out
}

/// `10/s`, `600/m`, nginx's `10r/s`.
fn rate(v: &Spanned<String>, errs: &mut Errs<'_>) -> Option<u64> {
    let t = v.trim();
    let parsed = t.split_once('/').and_then(|(n, unit)| {
        let n: u64 = n.trim_end_matches('r').parse().ok().filter(|n| *n > 0 && *n <= 1_000_000)?;
        match unit {
            "s" => Some(n * 1000),
            "m" => Some((n * 1000 / 60).max(1)),
            _ => None,
        }
    });
    if parsed.is_none() {
        errs.span(v.span(), format!("rate_limit.rate `{t}` is not a rate such as 10/s or 600/m"));
    }
    parsed
}

pub(super) fn rate_limit(r: &RawRateLimit, errs: &mut Errs<'_>) -> Option<RateLimit> {
    let rate = rate(&r.rate, errs);
    let burst = match &r.burst {
        None => Some(0),
        Some(b) => match b.trim().parse::<u32>() {
            Ok(n) if n <= super::defaults::MAX_BURST => Some(n),
            _ => {
                errs.span(
                    b.span(),
                    format!("rate_limit.burst must be a whole number up to {}", super::defaults::MAX_BURST),
                );
                None
            }
        },
    };
    let key = match r.key.as_ref().map(|k| (k, k.trim())) {
        None | Some((_, "client_ip")) => Some(LimitKey::ClientIp),
        Some((k, t)) => match t.strip_prefix("header:").map(|h| HeaderName::from_bytes(h.trim().as_bytes())) {
            Some(Ok(h)) => Some(LimitKey::Header(h)),
            _ => {
                errs.span(k.span(), format!("rate_limit.key `{t}` is not `client_ip` or `header:NAME`"));
                None
            }
        },
    };
    let status = match &r.status {
        None => Some(StatusCode::TOO_MANY_REQUESTS),
        Some(s) => status(s, &[], "rate_limit", errs).filter(|s| s.as_u16() >= 400).or_else(|| {
            errs.span(s.span(), "rate_limit.status must be 400 to 599");
            None
        }),
    };
    Some(RateLimit { rate: rate?, burst: burst?, key: key?, status: status? })
}

pub(super) fn basic_auth(r: &RawBasicAuth, errs: &mut Errs<'_>) -> Option<BasicAuth> {
    let realm = r.realm.as_ref().map_or("Restricted".to_string(), |v| v.trim().to_string());
    if realm.contains(['"', '\\']) || HeaderValue::from_str(&realm).is_err() {
        errs.span(
            r.realm.as_ref().expect("only a set realm is checked").span(),
            "basic_auth.realm may not contain quotes, backslashes or control characters",
        );
        return None;
    }
    if r.htpasswd.trim().is_empty() {
        errs.span(r.htpasswd.span(), "basic_auth.htpasswd is empty");
        return None;
    }
    Some(BasicAuth { realm, htpasswd: super::fields::relative_to(errs.file, &r.htpasswd) })
}

pub(super) fn redirect(r: &RawRedirect, errs: &mut Errs<'_>) -> Option<Redirect> {
    let status = match &r.status {
        None => StatusCode::FOUND,
        Some(s) => status(s, &[301, 302, 303, 307, 308], "redirect", errs)?,
    };
    let to = template(&r.to, "redirect.to", errs)?;
    if to.as_str().trim().is_empty() {
        errs.span(r.to.span(), "redirect.to is empty");
        return None;
    }
    Some(Redirect { to, status })
}

pub(super) fn respond(r: &RawRespond, errs: &mut Errs<'_>) -> Option<Respond> {
    let status = match &r.status {
        None => StatusCode::OK,
        Some(s) => status(s, &[], "respond", errs)?,
    };
    let body = match &r.body {
        None => None,
        Some(b) => Some(template(b, "respond.body", errs)?),
    };
    let content_type = match &r.content_type {
        None => HeaderValue::from_static("text/plain; charset=utf-8"),
        Some(c) => match HeaderValue::from_str(c.trim()) {
            Ok(v) if !c.trim().is_empty() => v,
            _ => {
                errs.span(c.span(), "respond.content_type is not a valid header value");
                return None;
            }
        },
    };
    if let (None, Some(c)) = (&body, &r.content_type) {
        errs.span(c.span(), "respond.content_type without a body");
    }
    Some(Respond { status, body, content_type })
}

/// `regex` syntax errors, one line.
fn compile(v: &Spanned<String>, what: &str, errs: &mut Errs<'_>) -> Option<Regex> {
    match regex::RegexBuilder::new(v.as_str()).size_limit(1 << 20).build() {
        Ok(r) => Some(r),
        Err(e) => {
            let msg = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
            errs.span(v.span(), format!("{what}: not a valid regex: {msg}"));
            None
        }
    }
}

pub(super) fn path_regex(v: &Spanned<String>, errs: &mut Errs<'_>) -> Option<Regex> {
    compile(v, "match.path_regex", errs)
}

/// `has_prefix`: the route matches a `path_prefix` (a prefix rewrite needs one).
pub(super) fn rewrite(r: &Spanned<RawRewrite>, has_prefix: bool, errs: &mut Errs<'_>) -> Option<Rewrite> {
    match (&r.prefix, &r.regex, &r.to) {
        (Some(p), None, None) if r.reroute.is_some() => {
            errs.span(p.span(), "rewrite.reroute goes with a regex rewrite, not a prefix one");
            None
        }
        (Some(p), None, None) => {
            let t = p.trim();
            if !t.starts_with('/') || t.contains(['?', '#']) || t.contains(char::is_whitespace) {
                errs.span(p.span(), format!("rewrite.prefix `{t}` must start with `/` and have no `?`, `#` or spaces"));
                return None;
            }
            if !has_prefix {
                errs.span(p.span(), "rewrite.prefix replaces the route's match.path_prefix, which it does not have");
                return None;
            }
            Some(Rewrite::Prefix(t.to_string()))
        }
        (None, Some(re), Some(to)) => {
            let regex = compile(re, "rewrite.regex", errs)?;
            let to_t = template(to, "rewrite.to", errs)?;
            if !to.as_str().starts_with('/') && !to.as_str().starts_with('$') {
                errs.span(to.span(), "rewrite.to must be a path starting with `/`");
                return None;
            }
            let groups = regex.captures_len() - 1;
            if usize::from(to_t.max_capture()) > groups {
                errs.span(
                    to.span(),
                    format!("rewrite.to uses ${} but rewrite.regex has {groups} capture group(s)", to_t.max_capture()),
                );
                return None;
            }
            let reroute = super::fields::boolean(&r.reroute, "rewrite.reroute", false, errs);
            Some(Rewrite::Regex { regex, to: to_t, reroute })
        }
        _ => {
            errs.span(
                r.span(),
                "rewrite is either `{ prefix: /new/ }` or `{ regex: '^/old/(.*)$', to: '/new/$1' }` (with `reroute: true` \
                 to route the new path again)",
            );
            None
        }
    }
}

pub(super) fn header_actions(raw: &RawHeaderActions, what: &str, errs: &mut Errs<'_>) -> HeaderActions {
    let mut out = HeaderActions::default();
    let name = |k: &Spanned<String>, errs: &mut Errs<'_>| match HeaderName::from_bytes(k.trim().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.span(k.span(), format!("{what}: `{}` is not a valid header name", k.as_str()));
            None
        }
    };
    for (list, into) in [(&raw.set, &mut out.set), (&raw.add, &mut out.add)] {
        let mut pairs: Vec<_> = list.iter().flatten().collect();
        pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (k, v) in pairs {
            let (Some(n), Some(t)) = (name(k, errs), template(v, &format!("{what}.{}", k.trim()), errs)) else {
                continue;
            };
            if let Some(lit) = t.literal() {
                if HeaderValue::from_str(lit).is_err() {
                    errs.span(v.span(), format!("{what}.{n}: not a valid header value"));
                    continue;
                }
            }
            into.push((n, t));
        }
    }
    for k in raw.remove.iter().flatten() {
        if let Some(n) = name(k, errs) {
            out.remove.push(n);
        }
    }
    if let Some(s) = &raw.on_success {
        if what != "response_headers" || s.on_success.is_some() {
            errs.span(s.span(), format!("{what}.on_success: only response_headers has it, and only once"));
        } else {
            let inner = header_actions(s, &format!("{what}.on_success"), errs);
            out.on_success = (!inner.is_empty()).then(|| Box::new(inner));
        }
    }
    out
}

/// The `$N` a route's actions use must exist: `groups` is the number of capture groups in the
/// route's `path_regex` and rewrite regex (the larger, since either may supply them).
pub(super) fn check_captures(actions: &Actions, groups: usize, at: &marked_yaml::Span, errs: &mut Errs<'_>) {
    let max = actions.templates().map(Template::max_capture).max().unwrap_or(0);
    if usize::from(max) > groups {
        let why = if groups == 0 { "no path_regex or rewrite.regex".to_string() } else { format!("{groups} group(s)") };
        errs.span(at, format!("the route uses ${max} but has {why} to capture it"));
    }
}

pub(super) fn forward_auth(
    r: &RawForwardAuth,
    backends: &std::collections::HashSet<&str>,
    errs: &mut Errs<'_>,
) -> Option<ForwardAuth> {
    let before = errs.list.len();
    if !backends.contains(r.backend.as_str()) {
        errs.span(
            r.backend.span(),
            format!("forward_auth names backend `{}`, which is not defined", r.backend.as_str()),
        );
    }
    let path = match &r.path {
        Some(p) => {
            let t = template(p, "forward_auth.path", errs);
            if !p.starts_with('/') && !p.starts_with('$') {
                errs.span(p.span(), "forward_auth.path must start with `/`");
            }
            t
        }
        None => Template::parse("$request_uri").ok(),
    };
    let name = |k: &Spanned<String>, what: &str, errs: &mut Errs<'_>| match HeaderName::from_bytes(k.trim().as_bytes())
    {
        Ok(n) => Some(n),
        Err(_) => {
            errs.span(k.span(), format!("forward_auth.{what}: `{}` is not a valid header name", k.as_str()));
            None
        }
    };
    let mut headers = Vec::new();
    let mut pairs: Vec<_> = r.headers.iter().flatten().collect();
    pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (k, v) in pairs {
        if let (Some(n), Some(t)) = (name(k, "headers", errs), template(v, "forward_auth.headers", errs)) {
            headers.push((n, t));
        }
    }
    let mut copies = [Vec::new(), Vec::new()];
    for (i, (list, what)) in
        [(&r.copy_to_request, "copy_to_request"), (&r.copy_to_response, "copy_to_response")].into_iter().enumerate()
    {
        let mut pairs: Vec<_> = list.iter().flatten().collect();
        pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (k, v) in pairs {
            if let (Some(to), Some(from)) = (name(k, what, errs), name(v, what, errs)) {
                copies[i].push((to, from));
            }
        }
    }
    let [copy_to_request, copy_to_response] = copies;
    if errs.list.len() != before {
        return None;
    }
    Some(ForwardAuth { backend: r.backend.trim().to_string(), path: path?, headers, copy_to_request, copy_to_response })
}
