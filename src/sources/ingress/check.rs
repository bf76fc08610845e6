//! The translation checked with ferry's own config parser: the whole document at once (the
//! usual case, one parse), and, only when that is refused, every backend and route on its own, so
//! that just the refused parts answer 503 and get their problem.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::super::Severity;
use super::{problem, Ing, Output};

/// The admin address a translation is parsed with; the real one is set after.
pub(super) const CHECK_ADMIN: &str = "127.0.0.1:9";

pub(super) fn whole(out: &Output) -> Result<crate::config::Config, crate::config::ConfigErrors> {
    let mut top = Map::new();
    top.insert("admin".into(), json!(CHECK_ADMIN));
    crate::config::Config::parse("<ingress>", &out.document(top).to_string())
}

pub(super) const STUB_LISTENER: &str = "v";

/// Parses a one-listener document with ferry's parser: the first problem's message.
pub(super) fn refused(routes: Vec<Value>, backends: Map<String, Value>) -> Option<String> {
    let doc =
        json!({"listeners": [{"name": STUB_LISTENER, "bind": "127.0.0.1:9", "routes": routes}], "backends": backends});
    match crate::config::Config::parse("ingress", &doc.to_string()) {
        Ok(_) => None,
        Err(e) => Some(e.0.first().map(|e| e.message.clone()).unwrap_or_else(|| e.to_string())),
    }
}

/// Drops backends ferry's parser refuses (their routes then answer 503).
pub(super) fn check_backends(out: &mut Output) {
    let names: Vec<String> = out.backends.keys().cloned().collect();
    for name in names {
        let mut one = Map::new();
        one.insert(name.clone(), out.backends[&name].clone());
        if let Some(why) = refused(vec![json!({"respond": {"status": 404}})], one) {
            out.backends.remove(&name);
            let ns = name.split('/').next().unwrap_or_default().to_string();
            let ing = name.split('/').nth(1).unwrap_or_default().to_string();
            out.problems.push(problem(
                &(ns, ing),
                "spec",
                Severity::Error,
                &format!("backend {name} is refused: {why}"),
            ));
        }
    }
}

/// Each route checked on its own; a refused one stays where it is and answers 503.
pub(super) fn checked(
    routes: Vec<(Option<(usize, String)>, Value)>,
    ings: &[Ing<'_>],
    out: &mut Output,
    report: bool,
) -> Vec<Value> {
    let mut res = Vec::with_capacity(routes.len());
    for (src, mut r) in routes {
        let named: BTreeSet<String> = route_backends(&r);
        let missing = named.iter().find(|b| !out.backends.contains_key(*b)).cloned();
        let why = match missing {
            Some(b) => Some(format!("its backend {b} was refused")),
            None => {
                let bs: Map<String, Value> = named.iter().map(|b| (b.clone(), out.backends[b].clone())).collect();
                refused(vec![r.clone()], bs)
            }
        };
        if let Some(why) = why {
            if let (Some((i, field)), true) = (src, report) {
                out.problems.push(problem(
                    &ings[i].key,
                    &field,
                    Severity::Error,
                    &format!("ferry refuses this path ({why}); it answers 503"),
                ));
            }
            // Kept where it is, answering 503; when its match is what ferry refuses (a regex its
            // engine cannot compile), the same host and path as a plain prefix.
            let closed = json!({"name": r["name"].clone(), "match": r["match"].clone(), "respond": {"status": 503}});
            let mut literal = json!({"path_starts_with": path_of(&r["match"])});
            if let Some(h) = r["match"].get("host") {
                literal["host"] = h.clone();
            }
            let literal = json!({"name": r["name"].clone(), "match": literal, "respond": {"status": 503}});
            match [closed, literal].into_iter().find(|c| refused(vec![c.clone()], Map::new()).is_none()) {
                Some(c) => r = c,
                None => continue,
            }
        }
        res.push(r);
    }
    res
}

/// The path a route's match was written with (a regex's `(?i)^` removed).
pub(super) fn path_of(m: &Value) -> String {
    for k in ["path_exact", "path_prefix", "path_starts_with"] {
        if let Some(p) = m[k].as_str() {
            return p.to_string();
        }
    }
    let re = m["path_regex"].as_str().unwrap_or("/");
    re.strip_prefix("(?i)^").unwrap_or(re).to_string()
}

pub(super) fn route_backends(r: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(b) = r["backend"].as_str() {
        out.insert(b.to_string());
    }
    for s in r["split"].as_array().into_iter().flatten() {
        if let Some(b) = s["backend"].as_str() {
            out.insert(b.to_string());
        }
    }
    out
}
