//! One path of an Ingress as routes: its match (host, path kind, the host-wide regex of
//! `use-regex`), its fields from the annotations, and the routes some annotations add before it
//! (the CORS preflight, a canary's header and cookie routes, a list of CORS origins).

use serde_json::{json, Map, Value};

use super::annotations::{self, Annotations};
use super::{Ing, Kind, Loc};

/// `*.example.com` (one label) as ferry's regex host; an exact host as it is.
pub(super) fn host_match(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    match host.strip_prefix("*.") {
        Some(rest) => Some(format!("~^[^.]+\\.{}$", regex::escape(rest))),
        None => Some(host.to_string()),
    }
}

pub(super) fn with_host(host: &Option<String>, mut m: Value) -> Value {
    if let Some(h) = host {
        m["host"] = json!(h);
    }
    m
}

pub(super) fn path_match(l: &Loc, regex: bool) -> Value {
    if regex {
        return json!({"path_regex": format!("(?i)^{}", l.path)});
    }
    match l.kind {
        Kind::Exact => json!({"path_exact": l.path}),
        Kind::Prefix => json!({"path_prefix": l.path}),
        Kind::Specific => json!({"path_starts_with": l.path}),
    }
}

pub(super) fn default_route(name: &str, m: Value, to: Option<Result<String, String>>) -> Value {
    match to {
        Some(Ok(b)) => json!({"name": name, "match": m, "backend": b}),
        Some(Err(_)) => json!({"name": name, "match": m, "respond": {"status": 503}}),
        None => json!({"name": name, "match": m, "respond": {"status": 404, "body": "404 page not found\n"}}),
    }
}

/// A route's fields other than its name, match and target, from its Ingress's annotations.
pub(super) fn route_fields(ing: &Ing<'_>, l: &Loc, auth: Option<&Result<String, String>>) -> Map<String, Value> {
    let a = &ing.ann;
    let mut f = Map::new();
    if let Some(why) = a.denied.as_ref().or(l.backend.as_ref().err()).or(auth.and_then(|r| r.as_ref().err())) {
        let _ = why;
        f.insert("respond".into(), json!({"status": 503}));
        return f;
    }
    if let Some((to, status)) = &a.redirect {
        f.insert("redirect".into(), json!({"to": to, "status": status}));
        return f;
    }
    if let Some(n) = a.body_size {
        f.insert("max_body_bytes".into(), json!(n));
    }
    if !a.allow.is_empty() || !a.deny.is_empty() {
        let mut rules: Vec<Value> = a.deny.iter().map(|c| json!({"deny": c})).collect();
        if a.allow.is_empty() {
            rules.push(json!({"allow": "all"}));
        } else {
            rules.extend(a.allow.iter().map(|c| json!({"allow": c})));
            rules.push(json!({"deny": "all"}));
        }
        f.insert("access".into(), Value::Array(rules));
    }
    if let (Some(b), Some(Ok(path))) = (&a.basic_auth, auth) {
        f.insert("basic_auth".into(), json!({"realm": b.realm, "htpasswd": path}));
    }
    if let Some(n) = a.connections {
        f.insert("max_requests_per_client".into(), json!(n));
    }
    if let Some((n, per_second, burst)) = a.rate {
        let unit = if per_second { "s" } else { "m" };
        f.insert("rate_limit".into(), json!({"rate": format!("{n}/{unit}"), "burst": burst, "status": 503}));
    }
    if let Some(t) = &a.rewrite_target {
        if *t != l.path {
            f.insert("rewrite".into(), json!({"regex": format!("(?i){}", l.path), "to": t}));
        }
    }
    let mut set = Map::new();
    if let Some(h) = &a.upstream_vhost {
        set.insert("Host".into(), json!(h));
    }
    if let Some(p) = &a.forwarded_prefix {
        set.insert("X-Forwarded-Prefix".into(), json!(p));
    }
    if !set.is_empty() {
        f.insert("request_headers".into(), json!({"set": set}));
    }
    if let Some(c) = &a.cors {
        let add: Map<String, Value> =
            Annotations::cors_headers(c).into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        f.insert("response_headers".into(), json!({"set": add}));
    }
    if let (Some((codes, _)), Some(b)) = (&a.custom_errors, &ing.errors_backend) {
        // What ingress-nginx tells its default backend about the request.
        let (svc, port) = l.service.clone().unwrap_or_default();
        let headers = json!({"X-Namespace": ing.key.0, "X-Ingress-Name": ing.key.1, "X-Service-Name": svc, "X-Service-Port": port});
        f.insert("intercept_errors".into(), json!({"backend": b, "statuses": codes, "headers": headers}));
    }
    f
}

/// Adds a `match.when` condition to a match.
pub(super) fn add_when(m: &mut Value, cond: Value) {
    match m["when"].as_array_mut() {
        Some(list) => list.push(cond),
        None => m["when"] = json!([cond]),
    }
}

/// With CORS for several origins, the path's routes twice: first for a request whose `Origin` is
/// one of them (echoed back), then for any other (no CORS headers), as ingress-nginx decides.
pub(super) fn cors_variants(
    name: &str,
    m: Value,
    base: Map<String, Value>,
    primary: Option<&String>,
    canary: Option<(&Ing<'_>, String)>,
    cors: Option<&annotations::Cors>,
) -> Vec<Value> {
    let Some(c) = cors.filter(|c| c.origins.len() > 1) else {
        return with_canary(name, m, base, primary, canary);
    };
    let alternatives: Vec<String> = c.origins.iter().map(|o| regex::escape(o)).collect();
    let mut mm = m.clone();
    add_when(&mut mm, json!({"var": "$http_origin", "regex": format!("^({})$", alternatives.join("|"))}));
    let mut out = with_canary(&format!("{name}#cors"), mm, base.clone(), primary, canary.clone());
    let mut plain = base;
    plain.remove("response_headers");
    out.extend(with_canary(name, m, plain, primary, canary));
    out
}

/// The routes of one path: the canary's header and cookie routes first (ingress-nginx's order:
/// header, then cookie, then weight), then the path itself, split by weight when a canary asks.
/// With CORS, a preflight (OPTIONS) route before them answers 204.
pub(super) fn with_canary(
    name: &str,
    m: Value,
    base: Map<String, Value>,
    primary: Option<&String>,
    canary: Option<(&Ing<'_>, String)>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let answers_itself = base.contains_key("respond") || base.contains_key("redirect");
    let route = |suffix: &str, mut m: Value, target: Value| {
        if let Value::Object(o) = &mut m {
            o.retain(|_, v| !v.is_null());
        }
        let mut r = base.clone();
        r.insert("name".into(), json!(format!("{name}{suffix}")));
        r.insert("match".into(), m);
        if !answers_itself {
            if let Value::Object(t) = target {
                r.extend(t);
            }
        }
        Value::Object(r)
    };
    if !answers_itself && base.contains_key("response_headers") {
        let mut pre = base.clone();
        let mut mm = m.clone();
        mm["methods"] = json!(["OPTIONS"]);
        // ingress-nginx answers the preflight in nginx's rewrite phase, before access and auth.
        pre.retain(|k, _| k == "response_headers");
        pre.insert("name".into(), json!(format!("{name}#cors-preflight")));
        pre.insert("match".into(), mm);
        pre.insert("respond".into(), json!({"status": 204}));
        out.push(Value::Object(pre));
    }
    let Some(primary) = primary else {
        out.push(route("", m, Value::Null));
        return out;
    };
    let to = |b: &str| json!({"backend": b});
    if let Some((c, cb)) = canary.as_ref() {
        let k = c.ann.canary.clone().unwrap_or_default();
        if let Some(h) = &k.by_header {
            let mut mm = m.clone();
            let v = k.by_header_value.clone().unwrap_or_else(|| "always".into());
            mm["headers"] = json!({ h.as_str(): v });
            out.push(route("#canary-header", mm, to(cb)));
            if k.by_header_value.is_none() {
                let mut mm = m.clone();
                mm["headers"] = json!({ h.as_str(): "never" });
                out.push(route("#canary-header-never", mm, to(primary)));
            }
        }
        if let Some(ck) = &k.by_cookie {
            for (v, b, suffix) in
                [("always", cb.as_str(), "#canary-cookie"), ("never", primary.as_str(), "#canary-cookie-never")]
            {
                let mut mm = m.clone();
                add_when(&mut mm, json!({"var": format!("$cookie_{ck}"), "equals": v}));
                out.push(route(suffix, mm, to(b)));
            }
        }
        if k.weight > 0 {
            let split = json!({"split": [{"backend": primary, "weight": k.weight_total - k.weight}, {"backend": cb, "weight": k.weight}]});
            out.push(route("", m, split));
            return out;
        }
    }
    out.push(route("", m, to(primary)));
    out
}
