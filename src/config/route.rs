//! One route of an http listener: its match (host, path prefix / exact path / regex, methods,
//! headers), its target (a backend, or an answer of its own: `redirect`, `respond`) and its
//! actions (validated in `actions`).

use std::collections::HashSet;

use http::{HeaderName, HeaderValue, Method};
use marked_yaml::{Node, Spanned};

use super::actions::{self, Actions, Rewrite};
use super::diag::Errs;
use super::fields::{boolean, host_match, number};
use super::raw::{RawCondition, RawLocationRule, RawMatch, RawRoute};
use super::site;
use super::template::{Template, Vars};
use super::Route;

/// A path to match: starts with `/`, no `?`, `#` or spaces.
fn path(p: &Spanned<String>, key: &str, errs: &mut Errs<'_>) -> Option<String> {
    let s = p.trim();
    if !s.starts_with('/') {
        errs.span(p.span(), format!("{key} `{s}` must start with `/`"));
        return None;
    }
    if s.contains(['?', '#']) || s.contains(char::is_whitespace) {
        errs.span(p.span(), format!("{key} `{s}` may not contain `?`, `#` or spaces"));
        return None;
    }
    Some(s.to_string())
}

/// nginx's `location /x/ { alias DIR/; }`: the prefix the directory replaces (the path keeps its
/// `/`), `/` for `location /`.
pub fn alias_prefix(starts_with: &str) -> String {
    match starts_with.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}

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
    if let Some(b) = &raw.backend {
        if !backends.contains(b.as_str()) {
            let mut known: Vec<&str> = backends.iter().copied().collect();
            known.sort_unstable();
            errs.span(
                b.span(),
                format!(
                    "route `{name}` names backend `{}`, which is not defined (defined: {})",
                    b.as_str(),
                    known.join(", ")
                ),
            );
        }
    }
    let mut split = Vec::new();
    if let Some(list) = &raw.split {
        if list.is_empty() {
            errs.span(list.span(), "split is empty");
        }
        for s in list.iter() {
            if !backends.contains(s.backend.as_str()) {
                errs.span(
                    s.backend.span(),
                    format!("split names backend `{}`, which is not defined", s.backend.as_str()),
                );
                continue;
            }
            match s.weight.trim().parse::<u32>() {
                Ok(w) if w <= 1000 => split.push((s.backend.to_string(), w)),
                _ => errs.span(s.weight.span(), "split weight must be a whole number from 0 to 1000"),
            }
        }
        if !split.is_empty() && split.iter().all(|(_, w)| *w == 0) {
            errs.span(list.span(), "every split weight is 0; at least one backend must get traffic");
        }
    }
    let targets = [
        raw.backend.is_some(),
        raw.split.is_some(),
        raw.redirect.is_some(),
        raw.respond.is_some(),
        raw.files.is_some(),
    ];
    // A route whose regex rewrite reroutes needs no target of its own: where the regex matches,
    // the new path is routed again; where it does not, the route answers 404.
    let reroutes = raw.rewrite.as_ref().is_some_and(|r| r.reroute.as_ref().is_some_and(|v| v.trim() == "true"));
    match targets.iter().filter(|t| **t).count() {
        1 => {}
        0 if reroutes => {}
        0 => errs.span(
            node.span(),
            format!("route `{name}` needs a `backend`, a `split`, `static` files, a `redirect` or a `respond`"),
        ),
        _ => errs.span(
            node.span(),
            format!(
                "route `{name}` has more than one of `backend`, `split`, `static`, `redirect` and `respond`; \
                 a route does one"
            ),
        ),
    }
    let m = raw.matches.unwrap_or(RawMatch {
        host: None,
        path_prefix: None,
        path_exact: None,
        path_starts_with: None,
        path_regex: None,
        methods: None,
        headers: None,
        when: None,
    });
    let host = m.host.as_ref().and_then(|h| host_match(h, errs));
    let path_prefix = m.path_prefix.as_ref().and_then(|p| {
        let s = path(p, "path_prefix", errs)?;
        let trimmed = s.trim_end_matches('/');
        Some(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
    });
    let path_exact = m.path_exact.as_ref().and_then(|p| path(p, "path_exact", errs));
    let path_regex = m.path_regex.as_ref().and_then(|p| actions::path_regex(p, errs));
    let path_starts_with = m.path_starts_with.as_ref().and_then(|p| path(p, "path_starts_with", errs));
    let paths = [m.path_prefix.as_ref(), m.path_exact.as_ref(), m.path_starts_with.as_ref(), m.path_regex.as_ref()];
    let set: Vec<_> = paths.iter().flatten().collect();
    // A plain prefix and a regex together is nginx's "under this prefix, this regex" order.
    let allowed_pair = set.len() == 2 && m.path_starts_with.is_some() && m.path_regex.is_some();
    if set.len() > 1 && !allowed_pair {
        errs.span(
            set[1].span(),
            "a route matches one of path_prefix, path_exact, path_starts_with and path_regex \
             (only path_starts_with goes with path_regex)",
        );
    }
    let mut methods = Vec::new();
    if let Some(list) = &m.methods {
        if list.is_empty() {
            errs.span(list.span(), "match.methods is empty");
        }
        for v in list.iter() {
            let t = v.trim();
            match Method::from_bytes(t.as_bytes()) {
                Ok(meth) if t.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(meth),
                _ => errs.span(v.span(), format!("match.methods: `{t}` is not an upper-case HTTP method such as GET")),
            }
        }
    }
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
    let mut when = Vec::new();
    for c in m.when.iter().flat_map(|l| l.iter()) {
        when.extend(condition(c, errs));
    }
    let strip_prefix = boolean(&raw.strip_prefix, "strip_prefix", false, errs);
    if strip_prefix && path_prefix.is_none() {
        let s = raw.strip_prefix.as_ref().expect("strip_prefix was set");
        errs.span(s.span(), format!("route `{name}` sets strip_prefix but has no match.path_prefix to strip"));
    }
    let max_body_bytes = raw.max_body_bytes.as_ref().map(|_| number(&raw.max_body_bytes, "max_body_bytes", 0u64, errs));

    let rewrite_location = node
        .as_mapping()
        .and_then(|m| m.get_node("rewrite_location"))
        .and_then(|n| location_rewrite(n, "rewrite_location", errs));
    // `true`: the removed prefix put back; a list: nginx `proxy_cookie_path FROM TO` rules.
    let cookie_node = node.as_mapping().and_then(|m| m.get_node("rewrite_cookie_path"));
    let (rewrite_cookie_path, cookie_paths) = match cookie_node
        .and_then(|n| location_rewrite(n, "rewrite_cookie_path", errs))
    {
        None | Some(LocationRewrite::Off) => (false, Vec::new()),
        Some(LocationRewrite::Auto) => (true, Vec::new()),
        Some(LocationRewrite::Rules(rules)) => {
            let literal: Vec<(String, String)> =
                rules.iter().filter_map(|(f, t)| Some((f.literal()?.to_string(), t.literal()?.to_string()))).collect();
            if literal.len() != rules.len() {
                errs.span(
                    cookie_node.expect("set").span(),
                    "rewrite_cookie_path rules are plain paths, without variables",
                );
            }
            (false, literal)
        }
    };
    if let (true, None) = (rewrite_cookie_path, &path_prefix) {
        let v = cookie_node.expect("set");
        errs.span(v.span(), "rewrite_cookie_path puts back a removed path_prefix; the route has none");
    }
    let mut body_replace = Vec::new();
    for r in raw.body_replace.iter().flat_map(|l| l.iter()) {
        if r.from.is_empty() {
            errs.span(r.from.span(), "body_replace.from is empty");
            continue;
        }
        body_replace.push((r.from.to_string(), r.to.to_string()));
    }
    let body_replace_once = boolean(&raw.body_replace_once, "body_replace_once", false, errs);
    let body_replace_ignore_case = boolean(&raw.body_replace_ignore_case, "body_replace_ignore_case", false, errs);
    for (set, key) in
        [(&raw.body_replace_once, "body_replace_once"), (&raw.body_replace_ignore_case, "body_replace_ignore_case")]
    {
        if let (Some(v), None) = (set, &raw.body_replace) {
            errs.span(v.span(), format!("{key} without body_replace"));
        }
    }
    let mut body_replace_types = vec!["text/html".to_string()];
    if let Some(types) = &raw.body_replace_types {
        body_replace_types.clear();
        for t in types.iter() {
            let media = t.trim().to_ascii_lowercase();
            if media.split('/').count() != 2 || media.contains([' ', ';']) {
                errs.span(t.span(), format!("body_replace_types: `{media}` is not a media type such as text/html"));
            }
            body_replace_types.push(media);
        }
        if raw.body_replace.is_none() {
            errs.span(types.span(), "body_replace_types without body_replace");
        }
    }
    let mut a = Actions::default();
    if let Some(list) = &raw.access {
        a.access = actions::access(list, errs);
    }
    a.basic_auth = raw.basic_auth.as_ref().and_then(|b| actions::basic_auth(b, errs));
    a.forward_auth = raw.forward_auth.as_ref().and_then(|f| actions::forward_auth(f, backends, errs));
    if let Some(v) = &raw.satisfy {
        match v.trim() {
            "all" => {}
            "any" if !a.access.is_empty() && (a.basic_auth.is_some() || a.forward_auth.is_some()) => {
                a.satisfy_any = true
            }
            "any" => {
                errs.span(v.span(), "satisfy: any needs `access` and `basic_auth` or `forward_auth` to choose between")
            }
            t => errs.span(v.span(), format!("satisfy: `{t}` is `all` or `any`")),
        }
    }
    a.rate_limit = raw.rate_limit.as_ref().and_then(|r| actions::rate_limit(r, errs));
    a.redirect = raw.redirect.as_ref().and_then(|r| actions::redirect(r, errs));
    a.respond = raw.respond.as_ref().and_then(|r| actions::respond(r, errs));
    a.rewrite = raw.rewrite.as_ref().and_then(|r| actions::rewrite(r, path_prefix.is_some(), errs));
    if let (true, Some(r)) = (strip_prefix, &raw.rewrite) {
        errs.span(r.span(), "strip_prefix is rewrite `{ prefix: / }`; use one of them");
    }
    if strip_prefix {
        a.rewrite = Some(Rewrite::Prefix("/".into()));
    }
    if let Some(h) = &raw.request_headers {
        a.request_headers = actions::header_actions(h, "request_headers", errs);
    }
    if let Some(h) = &raw.response_headers {
        a.response_headers = actions::header_actions(h, "response_headers", errs);
    }
    let forwards = raw.backend.is_some() || raw.split.is_some();
    let rerouting = matches!(a.rewrite, Some(Rewrite::Regex { reroute: true, .. }));
    if a.rewrite.is_some() && !forwards && !rerouting {
        errs.span(
            node.span(),
            format!("route `{name}` rewrites the path but answers itself; rewrite goes with `backend`"),
        );
    }
    if raw.request_headers.is_some() && !forwards {
        errs.span(node.span(), format!("route `{name}` sets request headers but sends the request nowhere"));
    }
    let groups = |r: Option<&regex::Regex>| r.map_or(0, |r| r.captures_len() - 1);
    let rewrite_groups = match &a.rewrite {
        Some(Rewrite::Regex { regex, .. }) => groups(Some(regex)),
        _ => 0,
    };
    actions::check_captures(&a, groups(path_regex.as_ref()).max(rewrite_groups), node.span(), errs);
    a.needs_captures = a.uses_captures();
    let files = raw.files.as_ref().and_then(|f| {
        // An alias replaces the prefix the route matched: a segment prefix, or nginx's plain one.
        let prefix = path_prefix.clone().or_else(|| path_starts_with.as_deref().map(alias_prefix));
        site::static_site(f, prefix.as_deref(), path_exact.is_some() || path_regex.is_some(), errs)
    });
    if files.is_some()
        && (!body_replace.is_empty() || rewrite_cookie_path || !cookie_paths.is_empty() || max_body_bytes.is_some())
    {
        errs.span(
            node.span(),
            format!("route `{name}` serves static files: body_replace, rewrite_cookie_path and max_body_bytes go with `backend`"),
        );
    }
    let compress = raw.compress.as_ref().map(|_| boolean(&raw.compress, "compress", false, errs));
    let compress_min_bytes =
        raw.compress_min_bytes.as_ref().map(|_| number(&raw.compress_min_bytes, "compress_min_bytes", 0u64, errs));
    let error_pages = raw.error_pages.as_ref().map(|p| site::error_pages(p, errs)).unwrap_or_default();
    let intercept_errors = raw.intercept_errors.as_ref().and_then(|i| intercept_errors(i, backends, errs));
    let max_requests_per_client = raw.max_requests_per_client.as_ref().map(|_| {
        let n = number(&raw.max_requests_per_client, "max_requests_per_client", 1u32, errs);
        if n == 0 {
            errs.span(
                raw.max_requests_per_client.as_ref().expect("set").span(),
                "max_requests_per_client must be at least 1",
            );
        }
        n.max(1)
    });
    let forwarded_headers = boolean(&raw.forwarded_headers, "forwarded_headers", true, errs);
    if errs.list.len() != before {
        return None;
    }
    Some(Route {
        name,
        host,
        path_prefix,
        path_exact,
        path_starts_with,
        path_regex,
        methods,
        headers,
        when,
        rewrite_location,
        strip_prefix,
        backend: raw.backend.map(|b| b.to_string()),
        split,
        rewrite_cookie_path,
        cookie_paths,
        body_replace,
        body_replace_types,
        body_replace_once,
        body_replace_ignore_case,
        max_body_bytes,
        actions: a,
        files,
        compress,
        compress_min_bytes,
        error_pages,
        intercept_errors,
        max_requests_per_client,
        forwarded_headers,
    })
}

/// One `match.when` condition (nginx's `if (VAR OP VALUE)`): `var` rendered for the request, then
/// tested.
#[derive(Debug, Clone)]
pub struct Condition {
    pub var: Template,
    pub test: Test,
}

#[derive(Debug, Clone)]
pub enum Test {
    /// `=`: the same text (the value may hold variables too).
    Equals(Template),
    /// `!=`.
    NotEquals(Template),
    /// `~` (`(?i)` for `~*`): the regex matches somewhere in it.
    Regex(regex::Regex),
    /// `!~`.
    NotRegex(regex::Regex),
    /// `if ($var)`: set (`true`, not empty and not `0`, as nginx reads it) or not (`false`).
    Set(bool),
}

impl Condition {
    /// Does the condition hold for the request `vars` describes?
    pub fn holds(&self, vars: &dyn Vars) -> bool {
        let mut have = String::new();
        self.var.render_into(vars, &mut have);
        match &self.test {
            Test::Equals(t) => t.render(vars) == have,
            Test::NotEquals(t) => t.render(vars) != have,
            Test::Regex(r) => r.is_match(&have),
            Test::NotRegex(r) => !r.is_match(&have),
            Test::Set(want) => (!have.is_empty() && have != "0") == *want,
        }
    }
}

fn condition(c: &RawCondition, errs: &mut Errs<'_>) -> Option<Condition> {
    let var = match Template::parse(&c.var) {
        Ok(t) => t,
        Err(e) => {
            errs.span(c.var.span(), format!("match.when.var: {}", e.message));
            return None;
        }
    };
    let template = |v: &Spanned<String>, errs: &mut Errs<'_>| match Template::parse(v) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.span(v.span(), format!("match.when: {}", e.message));
            None
        }
    };
    let regex = |v: &Spanned<String>, errs: &mut Errs<'_>| match regex::Regex::new(v) {
        Ok(r) => Some(r),
        Err(e) => {
            let line = e.to_string().lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().to_string();
            errs.span(v.span(), format!("match.when.regex `{}` is not a valid regex: {line}", v.as_str()));
            None
        }
    };
    let tests = [c.equals.is_some(), c.not_equals.is_some(), c.regex.is_some(), c.not_regex.is_some(), c.set.is_some()];
    if tests.iter().filter(|t| **t).count() != 1 {
        errs.span(
            c.var.span(),
            "match.when: each condition has `var` and one of equals, not_equals, regex, not_regex, set",
        );
        return None;
    }
    let test = if let Some(v) = &c.equals {
        Test::Equals(template(v, errs)?)
    } else if let Some(v) = &c.not_equals {
        Test::NotEquals(template(v, errs)?)
    } else if let Some(v) = &c.regex {
        Test::Regex(regex(v, errs)?)
    } else if let Some(v) = &c.not_regex {
        Test::NotRegex(regex(v, errs)?)
    } else {
        Test::Set(boolean(&c.set, "match.when.set", true, errs))
    };
    Some(Condition { var, test })
}

/// A route's `rewrite_location`: how `Location` and `Refresh` answers are rewritten.
#[derive(Debug, Clone)]
pub enum LocationRewrite {
    /// `false`: left as the upstream sent them (nginx `proxy_redirect off`).
    Off,
    /// `true`: ferry's own (the endpoint's address becomes a path, a removed prefix is put back).
    Auto,
    /// nginx `proxy_redirect FROM TO`: the first rule whose `from` starts the value (as written,
    /// case-sensitive) has that part replaced by `to`; both may hold variables.
    Rules(Vec<(Template, Template)>),
}

fn location_rewrite(n: &Node, key: &str, errs: &mut Errs<'_>) -> Option<LocationRewrite> {
    if let Some(s) = n.as_scalar() {
        return match s.as_str().trim() {
            "true" => Some(LocationRewrite::Auto),
            "false" => Some(LocationRewrite::Off),
            t => {
                errs.span(s.span(), format!("{key}: `{t}` is neither true, false nor a list of {{ from, to }}"));
                None
            }
        };
    }
    let Some(list) = n.as_sequence() else {
        errs.span(n.span(), format!("{key} is true, false or a list of {{ from, to }}"));
        return None;
    };
    let mut rules = Vec::new();
    for item in list.iter() {
        let r: RawLocationRule = errs.de(item, &format!("{key} rule"))?;
        let parse = |v: &Spanned<String>, errs: &mut Errs<'_>| match Template::parse(v) {
            Ok(t) if !v.trim().is_empty() => Some(t),
            Ok(_) => {
                errs.span(v.span(), format!("{key}: from and to may not be empty"));
                None
            }
            Err(e) => {
                errs.span(v.span(), format!("{key}: {}", e.message));
                None
            }
        };
        rules.push((parse(&r.from, errs)?, parse(&r.to, errs)?));
    }
    Some(LocationRewrite::Rules(rules))
}

/// `intercept_errors: { backend: NAME, statuses: [404, 503], headers: { X-Namespace: shop } }`.
fn intercept_errors(
    raw: &marked_yaml::Spanned<super::raw::RawInterceptErrors>,
    backends: &HashSet<&str>,
    errs: &mut Errs<'_>,
) -> Option<super::InterceptErrors> {
    let before = errs.list.len();
    if !backends.contains(raw.backend.as_str()) {
        errs.span(
            raw.backend.span(),
            format!("intercept_errors names backend `{}`, which is not defined", raw.backend.as_str()),
        );
    }
    let mut statuses = Vec::new();
    for s in raw.statuses.iter() {
        match s.trim().parse::<u16>() {
            Ok(n) if (300..=599).contains(&n) => statuses.push(n),
            _ => errs.span(s.span(), format!("intercept_errors: `{}` is not a status from 300 to 599", s.as_str())),
        }
    }
    if raw.statuses.is_empty() {
        errs.span(raw.statuses.span(), "intercept_errors.statuses is empty");
    }
    let mut headers = Vec::new();
    let mut pairs: Vec<_> = raw.headers.iter().flatten().collect();
    pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (k, v) in pairs {
        match (http::HeaderName::from_bytes(k.trim().as_bytes()), http::HeaderValue::from_str(v.as_str())) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => errs.span(
                k.span(),
                format!("intercept_errors.headers: `{}: {}` is not a valid header", k.as_str(), v.as_str()),
            ),
        }
    }
    (errs.list.len() == before).then(|| super::InterceptErrors {
        backend: raw.backend.trim().to_string(),
        statuses,
        headers,
    })
}
