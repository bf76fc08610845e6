//! What a route serves itself from disk: `static` (nginx `root`/`alias`, `index`, `try_files …
//! fallback`, `expires`, `gzip_static`), plus `compress` and `error_pages`, which listeners take too.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use marked_yaml::Spanned;

use super::diag::Errs;
use super::fields::{boolean, parse_duration, relative_to};
use super::raw::{RawErrorPages, RawStatic};
use super::{ErrorPages, StaticSite};

/// `cache`/`html_cache`: a duration is `max-age` in seconds (nginx `expires 7d`), `off` sends
/// nothing, anything else is sent as the Cache-Control value as written (`no-cache`,
/// `public, max-age=31536000, immutable`).
fn cache_control(v: &Spanned<String>, key: &str, errs: &mut Errs<'_>) -> Option<HeaderValue> {
    let t = v.trim();
    if t == "off" {
        return None;
    }
    let starts_with_digit = t.starts_with(|c: char| c.is_ascii_digit());
    if starts_with_digit {
        return match parse_duration(t) {
            Ok(d) => Some(HeaderValue::try_from(max_age(d)).expect("max-age=N is a valid header value")),
            Err(e) => {
                errs.span(v.span(), format!("{key}: {e}"));
                None
            }
        };
    }
    match HeaderValue::from_str(t) {
        Ok(h) if !t.is_empty() => Some(h),
        _ => {
            errs.span(v.span(), format!("{key}: `{t}` is neither a duration (7d), `off`, nor a Cache-Control value"));
            None
        }
    }
}

fn max_age(d: Duration) -> String {
    format!("max-age={}", d.as_secs())
}

/// A path inside the served directory, as `fallback` and `index` name it.
fn inside(v: &Spanned<String>, key: &str, errs: &mut Errs<'_>) -> Option<String> {
    let t = v.trim();
    let bad = t.is_empty() || t.contains(['\\', '\0', '?', '#']) || t.split('/').any(|s| s == "..");
    if bad {
        errs.span(v.span(), format!("{key}: `{t}` must be a path inside the directory (no `..`, `\\`, `?` or `#`)"));
        return None;
    }
    Some(t.to_string())
}

pub(super) fn static_site(
    r: &Spanned<RawStatic>,
    path_prefix: Option<&str>,
    exact_or_regex: bool,
    errs: &mut Errs<'_>,
) -> Option<StaticSite> {
    let before = errs.list.len();
    if let Some(f) = &r.file {
        let extra = [r.root.is_some(), r.alias.is_some(), r.index.is_some(), r.fallback.is_some()];
        if extra.iter().any(|x| *x) {
            errs.span(f.span(), "static.file serves one file: no root, alias, index or fallback beside it");
            return None;
        }
        let path = relative_to(errs.file, f);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            errs.span(f.span(), format!("static.file: `{}` names no file", f.as_str()));
            return None;
        };
        let cache = r.cache.as_ref().and_then(|c| cache_control(c, "static.cache", errs));
        let html_cache = match &r.html_cache {
            None => Some(HeaderValue::from_static("no-cache")),
            Some(c) => cache_control(c, "static.html_cache", errs),
        };
        let precompressed = boolean(&r.precompressed, "static.precompressed", true, errs);
        if errs.list.len() != before {
            return None;
        }
        return Some(StaticSite {
            dir: dir.to_path_buf(),
            alias: false,
            index: Vec::new(),
            fallback: None,
            cache,
            html_cache,
            precompressed,
            file: Some(name.to_string()),
            missing_next: false,
        });
    }
    let (dir, alias) = match (&r.root, &r.alias) {
        (Some(d), None) => (d, false),
        (None, Some(d)) => (d, true),
        (Some(_), Some(a)) => {
            errs.span(
                a.span(),
                "static takes `root` (the path is appended) or `alias` (the prefix is replaced), not both",
            );
            return None;
        }
        (None, None) => {
            errs.span(r.span(), "static needs `root: DIR`, `alias: DIR` or `file: FILE`");
            return None;
        }
    };
    if dir.trim().is_empty() {
        errs.span(dir.span(), "static directory is empty");
    }
    if alias && (path_prefix.is_none() || exact_or_regex) {
        errs.span(dir.span(), "static.alias replaces the route's match.path_prefix; the route has none (use root)");
    }
    let mut index = Vec::new();
    match &r.index {
        None => index.push("index.html".to_string()),
        Some(list) => {
            for i in list.iter() {
                if let Some(name) = inside(i, "static.index", errs) {
                    if name.contains('/') {
                        errs.span(i.span(), format!("static.index: `{name}` is a file name, without `/`"));
                    }
                    index.push(name);
                }
            }
        }
    }
    let fallback = r.fallback.as_ref().and_then(|f| {
        let p = inside(f, "static.fallback", errs)?;
        if !p.starts_with('/') {
            errs.span(f.span(), format!("static.fallback: `{p}` must start with `/` (a file in the directory)"));
            return None;
        }
        Some(p)
    });
    let cache = r.cache.as_ref().and_then(|c| cache_control(c, "static.cache", errs));
    let html_cache = match &r.html_cache {
        None => Some(HeaderValue::from_static("no-cache")),
        Some(c) => cache_control(c, "static.html_cache", errs),
    };
    let precompressed = boolean(&r.precompressed, "static.precompressed", true, errs);
    let missing_next = match r.missing.as_ref().map(|m| m.trim()) {
        None | Some("404") => false,
        Some("next") if fallback.is_none() => true,
        Some("next") => {
            errs.span(
                r.missing.as_ref().expect("set").span(),
                "static.missing: next and a fallback exclude each other",
            );
            false
        }
        Some(t) => {
            errs.span(r.missing.as_ref().expect("set").span(), format!("static.missing: `{t}` is `404` or `next`"));
            false
        }
    };
    if errs.list.len() != before {
        return None;
    }
    Some(StaticSite {
        missing_next,
        dir: relative_to(errs.file, dir),
        alias,
        index,
        fallback,
        cache,
        html_cache,
        precompressed,
        file: None,
    })
}

/// `error_pages: { 502: FILE, … }`: statuses 400–599, HTML files (read when the config is applied).
pub(super) fn error_pages(map: &RawErrorPages, errs: &mut Errs<'_>) -> ErrorPages {
    let mut pages: ErrorPages = Vec::new();
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (k, v) in entries {
        let code = k.trim().parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
        let Some(code) = code.filter(|c| (400..600).contains(&c.as_u16())) else {
            errs.span(k.span(), format!("error_pages: `{}` is not an error status (400–599)", k.as_str()));
            continue;
        };
        if v.trim().is_empty() {
            errs.span(v.span(), format!("error_pages: the file for {code} is empty"));
            continue;
        }
        pages.push((code, relative_to(errs.file, v)));
    }
    pages
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn errors(yaml: &str) -> String {
        match Config::parse("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const HEAD: &str = "listeners:\n  - name: web\n    bind: 127.0.0.1:0\n    routes:\n";

    #[test]
    fn static_routes_parse_with_nginx_like_defaults() {
        let c = Config::parse(
            "/etc/ferry/routes.yaml",
            &format!(
                "{HEAD}      - match: {{ path_prefix: /app }}\n        static: {{ alias: dist, fallback: /index.html, cache: 7d }}\n        compress: true\n"
            ),
        )
        .unwrap();
        let r = &c.listeners[0].routes[0];
        let s = r.files.as_ref().unwrap();
        assert!(s.alias);
        assert_eq!(s.dir, std::path::Path::new("/etc/ferry/dist"));
        assert_eq!(s.index, ["index.html"]);
        assert_eq!(s.fallback.as_deref(), Some("/index.html"));
        assert_eq!(s.cache.as_ref().unwrap(), "max-age=604800");
        assert_eq!(s.html_cache.as_ref().unwrap(), "no-cache");
        assert!(s.precompressed);
        assert_eq!(r.compress, Some(true));
    }

    #[test]
    fn static_mistakes_are_named_where_they_are() {
        let e = errors(&format!("{HEAD}      - static: {{ alias: /srv }}\n"));
        assert!(e.contains("t.yaml:5:") && e.contains("alias replaces the route's match.path_prefix"), "{e}");
        let e = errors(&format!("{HEAD}      - static: {{ root: /srv, alias: /srv }}\n"));
        assert!(e.contains("not both"), "{e}");
        let e = errors(&format!("{HEAD}      - static: {{ root: /srv, fallback: ../x }}\n"));
        assert!(e.contains("static.fallback") && e.contains("inside the directory"), "{e}");
        let e = errors(&format!("{HEAD}      - static: {{ root: /srv, cache: 7x }}\n"));
        assert!(e.contains("static.cache"), "{e}");
        let e = errors(&format!("{HEAD}      - static: {{ root: /srv }}\n        respond: {{ status: 200 }}\n"));
        assert!(e.contains("more than one of"), "{e}");
        let e = errors(&format!("{HEAD}      - static: {{ root: /srv }}\n        error_pages: {{ 302: x.html }}\n"));
        assert!(e.contains("`302` is not an error status"), "{e}");
    }
}
