//! The ports of one Gateway as ferry listeners: HTTP and HTTPS ports carry the attached
//! HTTPRoutes' rules as routes in the spec's precedence; TLS ports pass TLSRoutes through by SNI;
//! a TCP port goes to its TCPRoute's backend.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HeaderType,
    HttpRouteRulesMatchesPathType as PathType, HttpRouteRulesMatchesQueryParamsType as QueryType,
};
use serde_json::{json, Map, Value};

use super::attach::{granted, Route, Spec};
use super::listeners::{Listener, Proto};
use super::{listener_name, Objects, Output, Settings};

/// A resolved backendRef: the backend's name in the document, and its weight.
type Resolved = Result<Vec<(String, i64)>, (&'static str, String)>;

/// One reference to a Service (by the fields every route kind has).
struct BackendRef<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<i32>,
    weight: Option<i32>,
}

/// A backendRef of any route kind (their generated types differ, their fields do not).
macro_rules! backend_ref {
    ($b:expr) => {
        BackendRef {
            group: $b.group.as_deref(),
            kind: $b.kind.as_deref(),
            name: &$b.name,
            namespace: $b.namespace.as_deref(),
            port: $b.port,
            weight: $b.weight,
        }
    };
}

/// The backend a TLSRoute or TCPRoute sends its connections to: its first backendRef of weight
/// above 0 that resolves (a stream is not split); a reference that does not resolve is noted on
/// the route.
fn stream_backend(objects: &Objects, route: &mut Route, out: &mut Output) -> Option<String> {
    let refs: Vec<BackendRef<'_>> = match &route.spec {
        Some(Spec::Tls(spec)) => spec.rules.iter().flat_map(|r| &r.backend_refs).map(|b| backend_ref!(b)).collect(),
        Some(Spec::Tcp(spec)) => spec.rules.iter().flat_map(|r| &r.backend_refs).map(|b| backend_ref!(b)).collect(),
        _ => return None,
    };
    match resolve(objects, route, &refs, None, out) {
        Ok(bs) => bs.into_iter().find(|(_, w)| *w > 0).map(|(b, _)| b),
        Err(e) => {
            route.unresolved.get_or_insert(e);
            None
        }
    }
}

/// Resolves backendRefs to backends in `out` (made once per Service, port and timeout).
fn resolve(
    objects: &Objects,
    route: &Route,
    refs: &[BackendRef<'_>],
    timeout: Option<&str>,
    out: &mut Output,
) -> Resolved {
    let mut ok = Vec::new();
    let mut first_err = None;
    for r in refs {
        let group = r.group.unwrap_or("");
        let kind = r.kind.unwrap_or("Service");
        let ns = r.namespace.unwrap_or(&route.key.0);
        let err = if !group.is_empty() || kind != "Service" {
            Some(("InvalidKind", format!("backendRef {group}/{kind} {}: only Services are supported", r.name)))
        } else if ns != route.key.0 && !granted(objects, (route.kind.kind(), &route.key.0), ("", "Service", ns, r.name))
        {
            Some((
                "RefNotPermitted",
                format!("Service {ns}/{} is not granted to this namespace by a ReferenceGrant", r.name),
            ))
        } else {
            match objects.services.get(&(ns.to_string(), r.name.to_string())) {
                None => Some(("BackendNotFound", format!("Service {ns}/{} not found", r.name))),
                Some(svc) => match r.port {
                    None => Some(("BackendNotFound", format!("backendRef to Service {ns}/{} has no port", r.name))),
                    Some(p) if !svc.spec.iter().flat_map(|s| s.ports.iter().flatten()).any(|sp| sp.port == p) => {
                        Some(("BackendNotFound", format!("Service {ns}/{} has no port {p}", r.name)))
                    }
                    Some(p) => {
                        let mut name = format!("{ns}/{}:{p}", r.name);
                        let mut b = json!({"service": format!("{}.{ns}", r.name), "port": p});
                        if let Some(t) = timeout {
                            name = format!("{name}@{t}");
                            b["request_timeout"] = json!(t);
                        }
                        out.backends.insert(name.clone(), b);
                        ok.push((name, i64::from(r.weight.unwrap_or(1))));
                        None
                    }
                },
            }
        };
        if let Some(e) = err {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        // The valid ones still serve their share (the spec asks 500 for the invalid share).
        Some(e) if ok.is_empty() => Err(e),
        _ => Ok(ok),
    }
}

/// The target of a rule: its backends as `backend` or `split`, or 500 when none is usable.
fn target(resolved: &Resolved, r: &mut Map<String, Value>) {
    match resolved {
        Ok(bs) => {
            let live: Vec<&(String, i64)> = bs.iter().filter(|(_, w)| *w > 0).collect();
            match live.as_slice() {
                [] => {
                    r.insert("respond".into(), json!({"status": 500}));
                }
                [(b, _)] => {
                    r.insert("backend".into(), json!(b));
                }
                many => {
                    let split: Vec<Value> = many.iter().map(|(b, w)| json!({"backend": b, "weight": w})).collect();
                    r.insert("split".into(), Value::Array(split));
                }
            }
        }
        Err(_) => {
            r.insert("respond".into(), json!({"status": 500}));
        }
    }
}

/// How specific a hostname is: exact names before wildcards, longer before shorter, any host last.
fn host_rank(h: Option<&str>) -> (u8, usize) {
    match h {
        None => (0, 0),
        Some(h) if h.starts_with('*') => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

/// The precedence of one match (higher sorts first), after the hostname.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Precedence {
    host: Reverse<(u8, usize)>,
    path_kind: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    queries: Reverse<usize>,
    order: usize,
}

fn header_var(name: &str) -> String {
    format!("$http_{}", name.to_ascii_lowercase().replace('-', "_"))
}

/// A match as ferry's `match`, and its precedence parts.
fn matcher(m: &HttpRouteRulesMatches) -> (Map<String, Value>, u8, usize, Option<String>) {
    let mut out = Map::new();
    let (kind, value) = match &m.path {
        Some(p) => (p.r#type.clone().unwrap_or(PathType::PathPrefix), p.value.clone().unwrap_or_else(|| "/".into())),
        None => (PathType::PathPrefix, "/".into()),
    };
    let (rank, len, prefix) = match kind {
        PathType::Exact => {
            out.insert("path_exact".into(), json!(value));
            (0, value.len(), None)
        }
        PathType::RegularExpression => {
            out.insert("path_regex".into(), json!(format!("^(?:{value})$")));
            (1, value.len(), None)
        }
        PathType::PathPrefix => {
            let p = if value.len() > 1 { value.trim_end_matches('/').to_string() } else { value.clone() };
            let p = if p.is_empty() { "/".to_string() } else { p };
            out.insert("path_prefix".into(), json!(p));
            (2, p.len(), Some(p))
        }
    };
    if let Some(method) = &m.method {
        let name = serde_json::to_value(method).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        out.insert("methods".into(), json!([name]));
    }
    let mut when = Vec::new();
    let mut headers = Map::new();
    for h in m.headers.iter().flatten() {
        match h.r#type.clone().unwrap_or(HeaderType::Exact) {
            HeaderType::Exact => {
                if !headers.contains_key(&h.name.to_ascii_lowercase()) {
                    headers.insert(h.name.to_ascii_lowercase(), json!(h.value));
                }
            }
            HeaderType::RegularExpression => when.push(json!({"var": header_var(&h.name), "regex": h.value})),
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Object(headers));
    }
    for q in m.query_params.iter().flatten() {
        let var = format!("$arg_{}", q.name);
        match q.r#type.clone().unwrap_or(QueryType::Exact) {
            QueryType::Exact => when.push(json!({"var": var, "equals": q.value})),
            QueryType::RegularExpression => when.push(json!({"var": var, "regex": q.value})),
        }
    }
    if !when.is_empty() {
        out.insert("when".into(), Value::Array(when));
    }
    (out, rank, len, prefix)
}

fn modifier(set: Vec<(String, String)>, add: Vec<(String, String)>, remove: Vec<String>) -> Value {
    let obj = |v: Vec<(String, String)>| Value::Object(v.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let mut m = Map::new();
    if !set.is_empty() {
        m.insert("set".into(), obj(set));
    }
    if !add.is_empty() {
        m.insert("add".into(), obj(add));
    }
    if !remove.is_empty() {
        m.insert("remove".into(), json!(remove));
    }
    Value::Object(m)
}

/// The rule's filters applied to a route; `Err` names a filter ferry does not carry out.
fn filters(
    fs: &[HttpRouteRulesFilters],
    l: &Listener,
    prefix: Option<&str>,
    r: &mut Map<String, Value>,
    redirect_rest: &mut Option<String>,
) -> Result<bool, String> {
    let mut redirected = false;
    for f in fs {
        if let Some(h) = &f.request_header_modifier {
            let set = h.set.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect();
            let add = h.add.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect();
            let remove = h.remove.clone().unwrap_or_default();
            let mut m = modifier(set, add, remove);
            if let Some(prev) = r.get("request_headers") {
                merge(&mut m, prev);
            }
            r.insert("request_headers".into(), m);
        }
        if let Some(h) = &f.response_header_modifier {
            let set = h.set.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect();
            let add = h.add.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect();
            let remove = h.remove.clone().unwrap_or_default();
            r.insert("response_headers".into(), modifier(set, add, remove));
        }
        if let Some(rd) = &f.request_redirect {
            let listener_scheme = if l.proto == Some(Proto::Https) { "https" } else { "http" };
            let scheme = rd
                .scheme
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            let port = match (rd.port, &scheme) {
                (Some(p), _) => Some(p),
                (None, Some(s)) => Some(if s == "https" { 443 } else { 80 }),
                (None, None) => Some(i32::from(l.port)),
            };
            let scheme = scheme.unwrap_or_else(|| listener_scheme.to_string());
            let host = rd.hostname.clone().unwrap_or_else(|| "$host".into());
            let port = match port {
                Some(80) if scheme == "http" => String::new(),
                Some(443) if scheme == "https" => String::new(),
                Some(p) => format!(":{p}"),
                None => String::new(),
            };
            let path = match rd.path.as_ref() {
                Some(p) if p.replace_full_path.is_some() => {
                    format!("{}$is_args$query_string", p.replace_full_path.clone().unwrap_or_default())
                }
                Some(p) if p.replace_prefix_match.is_some() => {
                    if prefix.is_none() {
                        return Err("RequestRedirect ReplacePrefixMatch needs a PathPrefix match".into());
                    }
                    let with = p.replace_prefix_match.clone().unwrap_or_default();
                    *redirect_rest = Some(with.clone());
                    // Filled in per route: the rest of the path after the prefix.
                    "$gateway_rest$is_args$query_string".into()
                }
                _ => "$request_uri".into(),
            };
            let status = rd.status_code.unwrap_or(302);
            r.insert("redirect".into(), json!({"to": format!("{scheme}://{host}{port}{path}"), "status": status}));
            redirected = true;
        }
        if let Some(u) = &f.url_rewrite {
            if let Some(h) = &u.hostname {
                let mut m = json!({"set": {"Host": h}});
                if let Some(prev) = r.get("request_headers") {
                    merge(&mut m, prev);
                }
                r.insert("request_headers".into(), m);
            }
            if let Some(p) = &u.path {
                if let Some(full) = &p.replace_full_path {
                    r.insert("rewrite".into(), json!({"regex": "^.*$", "to": full}));
                } else if let Some(with) = &p.replace_prefix_match {
                    if prefix.is_none() {
                        return Err("URLRewrite ReplacePrefixMatch needs a PathPrefix match".into());
                    }
                    r.insert("rewrite".into(), json!({"prefix": with}));
                }
            }
        }
        if f.request_mirror.is_some() {
            return Err("the RequestMirror filter is not supported yet".into());
        }
        if f.extension_ref.is_some() {
            return Err("ExtensionRef filters are not supported".into());
        }
        if f.cors.is_some() {
            return Err("the CORS filter is not supported yet".into());
        }
    }
    Ok(redirected)
}

/// Adds the keys of `prev` (a header modifier) that `m` does not set.
fn merge(m: &mut Value, prev: &Value) {
    for k in ["set", "add"] {
        if let Some(p) = prev.get(k).and_then(Value::as_object) {
            let e = m.as_object_mut().expect("object").entry(k).or_insert_with(|| json!({}));
            for (n, v) in p {
                e.as_object_mut().expect("object").entry(n.clone()).or_insert(v.clone());
            }
        }
    }
    if let Some(p) = prev.get("remove").and_then(Value::as_array) {
        let e = m.as_object_mut().expect("object").entry("remove").or_insert_with(|| json!([]));
        e.as_array_mut().expect("array").extend(p.iter().cloned());
    }
}

/// The routes of one HTTP(S) listener of the Gateway, each with its precedence.
fn http_routes(
    objects: &Objects,
    l: &Listener,
    li: usize,
    routes: &mut [Route],
    out: &mut Output,
) -> Vec<(Precedence, Value)> {
    let mut v = Vec::new();
    let mut order = 0usize;
    for route in routes.iter_mut() {
        let Some((_, hosts)) = route.on.iter().find(|(i, _)| *i == li).cloned() else { continue };
        let Some(Spec::Http(spec)) = &route.spec else { continue };
        let rules: Vec<HttpRouteRules> = spec.rules.clone().unwrap_or_default();
        let hosts: Vec<Option<String>> =
            if hosts.is_empty() { vec![None] } else { hosts.into_iter().map(Some).collect() };
        for (ri, rule) in rules.iter().enumerate() {
            let refs: Vec<BackendRef<'_>> = rule.backend_refs.iter().flatten().map(|b| backend_ref!(b)).collect();
            let timeout = rule.timeouts.as_ref().and_then(|t| t.request.as_deref()).filter(|t| *t != "0s");
            let resolved = resolve(objects, route, &refs, timeout, out);
            if let Err(e) = &resolved {
                if !refs.is_empty() {
                    route.unresolved.get_or_insert(e.clone());
                }
            }
            let default_match = vec![HttpRouteRulesMatches::default()];
            let matches = rule.matches.as_ref().filter(|m| !m.is_empty()).unwrap_or(&default_match);
            for (mi, m) in matches.iter().enumerate() {
                let (mat, rank, len, prefix) = matcher(m);
                let mut r = Map::new();
                r.insert("name".into(), json!(format!("{}/{}:rules[{ri}].matches[{mi}]", route.key.0, route.key.1)));
                let mut rest = None;
                let redirected =
                    match filters(rule.filters.as_deref().unwrap_or_default(), l, prefix.as_deref(), &mut r, &mut rest)
                    {
                        Ok(redirected) => redirected,
                        Err(e) => {
                            route.unsupported.get_or_insert(e);
                            r.retain(|k, _| k == "name");
                            r.insert("respond".into(), json!({"status": 500}));
                            true
                        }
                    };
                if !redirected {
                    target(&resolved, &mut r);
                }
                let headers = m.headers.as_ref().map_or(0, Vec::len);
                let queries = m.query_params.as_ref().map_or(0, Vec::len);
                for h in &hosts {
                    let prec = Precedence {
                        host: Reverse(host_rank(h.as_deref())),
                        path_kind: rank,
                        path_len: Reverse(len),
                        method: Reverse(m.method.is_some()),
                        headers: Reverse(headers),
                        queries: Reverse(queries),
                        order,
                    };
                    let mut mh = mat.clone();
                    if let Some(h) = h {
                        mh.insert("host".into(), json!(h));
                    }
                    match (&rest, &prefix) {
                        (Some(with), Some(p)) => {
                            // ReplacePrefixMatch: the prefix itself, then what follows it.
                            for (exact, to_path) in redirect_split(p, with) {
                                let mut rr = r.clone();
                                let mut mm = mh.clone();
                                mm.remove("path_prefix");
                                if exact {
                                    mm.insert("path_exact".into(), json!(p));
                                } else {
                                    mm.insert(
                                        "path_regex".into(),
                                        json!(format!("^{}(/.*)$", regex_escape(p.trim_end_matches('/')))),
                                    );
                                }
                                rr.insert("match".into(), Value::Object(mm));
                                let to = rr["redirect"]["to"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .replace("$gateway_rest", &to_path);
                                rr["redirect"]["to"] = json!(to);
                                v.push((prec.clone(), Value::Object(rr)));
                            }
                        }
                        _ => {
                            let mut rr = r.clone();
                            rr.insert("match".into(), Value::Object(mh));
                            v.push((prec, Value::Object(rr)));
                        }
                    }
                }
                order += 1;
            }
        }
    }
    v
}

/// ReplacePrefixMatch for a redirect: (exact prefix?, the new path), for the prefix alone and for
/// the prefix with more path after it (`$1`).
fn redirect_split(prefix: &str, with: &str) -> Vec<(bool, String)> {
    let trimmed = with.trim_end_matches('/');
    let alone = if with.is_empty() { "/".to_string() } else { with.to_string() };
    if prefix == "/" {
        return vec![(false, format!("{trimmed}$1"))];
    }
    vec![(true, alone), (false, format!("{trimmed}$1"))]
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

fn bind(s: &Settings, port: u16) -> String {
    let port = if s.any_port { 0 } else { port };
    std::net::SocketAddr::new(s.address, port).to_string()
}

/// Every port of the Gateway as a ferry listener.
pub(crate) fn build(objects: &Objects, s: &Settings, ls: &[Listener], routes: &mut [Route], out: &mut Output) {
    let mut ports: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        if l.programmed() {
            ports.entry(l.port).or_default().push(i);
        }
    }
    for (port, mut idx) in ports {
        idx.sort_by_key(|&i| Reverse(host_rank(ls[i].hostname.as_deref())));
        let proto = ls[idx[0]].proto;
        let name = listener_name(port);
        match proto {
            Some(Proto::Http) | Some(Proto::Https) => {
                let mut all = Vec::new();
                for &i in &idx {
                    let mut rs = http_routes(objects, &ls[i], i, routes, out);
                    rs.sort_by(|a, b| a.0.cmp(&b.0));
                    all.extend(rs.into_iter().map(|(_, r)| r));
                    // A request for this listener's hostname is its routes' alone.
                    if let Some(h) = &ls[i].hostname {
                        all.push(json!({"name": format!("{}:no-route", ls[i].name), "match": {"host": h}, "respond": {"status": 404}}));
                    }
                }
                all.push(json!({"name": "no-route", "respond": {"status": 404}}));
                let mut l = json!({"name": name, "bind": bind(s, port), "routes": all});
                if proto == Some(Proto::Https) {
                    let mut certs = Vec::new();
                    for &i in &idx {
                        for (c, k) in &ls[i].certs {
                            let v = json!({"cert": c, "key": k});
                            if !certs.contains(&v) {
                                certs.push(v);
                            }
                        }
                    }
                    l["tls"] = json!({"certificates": certs});
                }
                out.listeners.push(l);
            }
            Some(Proto::Tls) => {
                let mut sni = Vec::new();
                for &i in &idx {
                    for route in routes.iter_mut() {
                        let Some((_, hosts)) = route.on.iter().find(|(j, _)| *j == i).cloned() else { continue };
                        if !matches!(route.spec, Some(Spec::Tls(_))) {
                            continue;
                        }
                        if let Some(b) = stream_backend(objects, route, out) {
                            let names = if hosts.is_empty() { vec!["*".to_string()] } else { hosts };
                            sni.push(json!({"server_names": names, "backend": b}));
                        }
                    }
                }
                out.listeners.push(json!({"name": name, "bind": bind(s, port), "protocol": "tcp", "sni": sni}));
            }
            Some(Proto::Tcp) => {
                let mut backend = None;
                for route in routes.iter_mut() {
                    if !route.on.iter().any(|(j, _)| *j == idx[0]) {
                        continue;
                    }
                    if !matches!(route.spec, Some(Spec::Tcp(_))) {
                        continue;
                    }
                    let b = stream_backend(objects, route, out);
                    backend = backend.or(b);
                }
                let backend = backend.unwrap_or_else(|| {
                    out.backends.insert("none".into(), json!({"addresses": []}));
                    "none".into()
                });
                out.listeners.push(json!({"name": name, "bind": bind(s, port), "protocol": "tcp", "backend": backend}));
            }
            None => {}
        }
    }
}
