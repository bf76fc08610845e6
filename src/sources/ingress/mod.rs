//! Ingress v1 → routes: which Ingresses are ferry's (IngressClass), and their hosts, paths, TLS and
//! annotations as listeners, routes and backends of the routes.yaml model — a JSON document that
//! ferry's own config parser then reads, so an Ingress is held to exactly the rules a routes.yaml
//! is.
//!
//! Semantics (the Kubernetes Ingress documentation, and ingress-nginx where it leaves room):
//! - Class: `spec.ingressClassName` naming an IngressClass whose `spec.controller` is ferry's (the
//!   class named by `--ingress-class` counts as ferry's when no IngressClass of that name exists);
//!   else the legacy `kubernetes.io/ingress.class` annotation equal to that name; else, with no
//!   class at all, ferry's class being the default one (`ingressclass.kubernetes.io/is-default-class`).
//! - Paths: `Exact` is the path alone; `Prefix` matches element-wise on `/` with a trailing slash
//!   ignored; `ImplementationSpecific` is ingress-nginx's meaning, nginx's plain prefix location.
//!   Within a host, Exact paths come first, then longer paths before shorter (nginx's longest
//!   prefix; a `Prefix` path `/p` is nginx's `/p/`, so it outranks `ImplementationSpecific` `/p`).
//!   With `use-regex` or `rewrite-target` on any Ingress of a host, every path of that host is a
//!   case-insensitive regex anchored at the start (`~* "^PATH"`), in ingress-nginx's order
//!   (longer first), as ingress-nginx applies it.
//! - Hosts: exact names, and `*.example.com` for exactly one label. A host's paths are merged
//!   across Ingresses, oldest first; the same path twice goes to the oldest Ingress and the other
//!   gets a problem. A request for a known host that no path takes goes to the host's
//!   `defaultBackend` (of the oldest Ingress with one) or gets 404; it never falls to the rules of
//!   another host. Rules without a host, then the oldest `spec.defaultBackend`, take the rest.
//! - TLS: `spec.tls` Secrets (kubernetes.io/tls) are served by SNI on the HTTPS listener; a host
//!   with TLS is redirected from HTTP to HTTPS (308) unless `ssl-redirect: "false"`.

pub mod annotations;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use serde_json::{json, Map, Value};

use super::{ObjectRef, Problem, Severity};
use annotations::{Annotations, BackendProtocol};

/// The annotation that marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy class annotation.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// ferry's IngressClass `spec.controller`.
pub const CONTROLLER: &str = "ferry.dev/ingress-controller";

/// Names of the listeners the Ingress routes go on.
pub const HTTP_LISTENER: &str = "ingress-http";
pub const HTTPS_LISTENER: &str = "ingress-https";

/// How ferry reads Ingresses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub class: String,
    pub controller: String,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Where Secret data the routes name is kept as files.
    pub secrets_dir: PathBuf,
}

impl Settings {
    pub fn new(http: SocketAddr, https: SocketAddr, secrets_dir: PathBuf) -> Settings {
        Settings { class: "ferry".into(), controller: CONTROLLER.into(), http, https, secrets_dir }
    }
}

/// (namespace, name)
pub type Key = (String, String);

/// The objects a translation reads.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub ingresses: Vec<Ingress>,
    pub classes: Vec<IngressClass>,
    pub services: BTreeMap<Key, Service>,
    pub secrets: BTreeMap<Key, Secret>,
}

/// What a translation gives.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// `{ listeners: [...], backends: {...} }` in the routes.yaml model.
    pub listeners: Vec<Value>,
    pub backends: Map<String, Value>,
    /// Secret data to write where the routes name it: (path, bytes).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// The Ingresses that are ferry's, oldest first (their status is ferry's to write).
    pub accepted: Vec<Key>,
    pub problems: Vec<Problem>,
    /// The listeners and backends as ferry's parser read them (`None` only if the whole does not
    /// parse even after every refused part answers 503: a bug).
    pub parsed: Option<crate::config::Config>,
}

fn key_of(i: &Ingress) -> Key {
    (i.metadata.namespace.clone().unwrap_or_default(), i.metadata.name.clone().unwrap_or_default())
}

fn obj(k: &Key) -> ObjectRef {
    ObjectRef { kind: "Ingress", namespace: k.0.clone(), name: k.1.clone() }
}

/// Is this Ingress ferry's?
pub fn is_ours(i: &Ingress, classes: &[IngressClass], s: &Settings) -> bool {
    let ours = |name: &str| match classes.iter().find(|c| c.metadata.name.as_deref() == Some(name)) {
        Some(c) => c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(s.controller.as_str()),
        None => name == s.class,
    };
    if let Some(name) = i.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
        return ours(name);
    }
    if let Some(legacy) = i.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)) {
        return legacy == &s.class;
    }
    classes.iter().any(|c| {
        c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).map(String::as_str)
            == Some("true")
            && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(s.controller.as_str())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Exact,
    Prefix,
    Specific,
}

/// One path of one Ingress, as routed.
#[derive(Debug, Clone)]
struct Loc {
    /// Index into the accepted Ingresses.
    ing: usize,
    field: String,
    path: String,
    kind: Kind,
    /// The backend's name, or why the path answers 503.
    backend: Result<String, String>,
    /// (Service name, port) the path names, for ingress-nginx's error headers.
    service: Option<(String, String)>,
}

impl Loc {
    /// nginx's location length for the longest-prefix order (a Prefix `/p` is `location /p/`).
    fn order_len(&self) -> usize {
        match self.kind {
            Kind::Prefix if self.path != "/" && !self.path.ends_with('/') => self.path.len() + 1,
            _ => self.path.len(),
        }
    }
}

#[derive(Debug, Default)]
struct Server {
    locs: Vec<Loc>,
    /// Canary paths: (path, kind-less) → (canary Ingress index, backend).
    canaries: BTreeMap<String, (usize, String)>,
    regex: bool,
    tls: bool,
    /// The oldest defaultBackend among the host's Ingresses.
    default: Option<Result<String, String>>,
    app_root: Option<String>,
}

/// One accepted Ingress, read.
struct Ing<'a> {
    key: Key,
    obj: &'a Ingress,
    ann: Annotations,
    /// `custom-http-errors` with `default-backend`: the error backend's name, once made.
    errors_backend: Option<String>,
}

/// Translates the objects: listeners (HTTP, and HTTPS when any certificate is usable), routes and
/// backends, with every problem named.
pub fn translate(objects: &Objects, s: &Settings) -> Output {
    let mut out = Output::default();
    let mut mine: Vec<&Ingress> = objects.ingresses.iter().filter(|i| is_ours(i, &objects.classes, s)).collect();
    // Oldest first: the oldest Ingress wins a conflict (ingress-nginx's rule).
    mine.sort_by(|a, b| {
        let t = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| key_of(a).cmp(&key_of(b)))
    });
    let mut ings = Vec::new();
    for i in mine {
        let key = key_of(i);
        if i.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (ann, probs) = Annotations::parse(&i.metadata.annotations.clone().unwrap_or_default(), &key.0);
        for (k, severity, message) in probs {
            out.problems.push(Problem { object: obj(&key), field: annotations::field(&k), severity, message });
        }
        out.accepted.push(key.clone());
        ings.push(Ing { key, obj: i, ann, errors_backend: None });
    }

    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    let mut certs: Vec<(String, String)> = Vec::new();
    let mut catch_all: Option<Result<String, String>> = None;
    let mut auth_files: BTreeMap<usize, Result<String, String>> = BTreeMap::new();
    for ing in ings.iter_mut() {
        if let Some((_, (ns, name))) = ing.ann.custom_errors.clone() {
            let field = annotations::field(&format!("{}default-backend", annotations::PREFIX));
            ing.errors_backend = error_backend(objects, ing, &ns, &name, &field, &mut out);
        }
    }
    for (n, ing) in ings.iter().enumerate() {
        let spec = ing.obj.spec.clone().unwrap_or_default();
        let canary = ing.ann.canary.is_some();
        // TLS first: which hosts it covers.
        for (t, tls) in spec.tls.iter().flatten().enumerate() {
            let field = format!("spec.tls[{t}].secretName");
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                out.problems.push(problem(
                    &ing.key,
                    &field,
                    Severity::Warning,
                    "no secretName: ferry has no default certificate for these hosts",
                ));
                continue;
            };
            match super::secrets::tls_pair(
                objects.secrets.get(&(ing.key.0.clone(), secret.to_string())),
                &s.secrets_dir,
            ) {
                Ok((pair, files)) => {
                    if !certs.contains(&pair) {
                        certs.push(pair);
                    }
                    out.files.extend(files);
                    for h in tls.hosts.iter().flatten() {
                        servers.entry(h.to_ascii_lowercase()).or_default().tls = true;
                    }
                }
                Err(m) => out.problems.push(problem(
                    &ing.key,
                    &field,
                    Severity::Error,
                    &format!("Secret {}/{secret}: {m}", ing.key.0),
                )),
            }
        }
        if let Some(a) = &ing.ann.basic_auth {
            let r = super::secrets::htpasswd(objects.secrets.get(&a.secret), a, &s.secrets_dir);
            let r = match r {
                Ok((path, file)) => {
                    out.files.push(file);
                    Ok(path)
                }
                Err(m) => {
                    out.problems.push(problem(
                        &ing.key,
                        &annotations::field(&format!("{}auth-secret", annotations::PREFIX)),
                        Severity::Error,
                        &format!("{m}; the paths answer 503"),
                    ));
                    Err(m)
                }
            };
            auth_files.insert(n, r);
        }
        if let Some(b) = &spec.default_backend {
            let r = backend(objects, ing, b, "spec.defaultBackend", &mut out);
            if !canary && catch_all.is_none() {
                catch_all = Some(r.clone());
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
                let srv = servers.entry(host).or_default();
                if srv.default.is_none() && !canary {
                    srv.default = Some(r.clone());
                }
            }
        }
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            let srv = servers.entry(host.clone()).or_default();
            if ing.ann.use_regex || ing.ann.rewrite_target.is_some() {
                srv.regex = true;
            }
            if srv.app_root.is_none() && !canary {
                srv.app_root.clone_from(&ing.ann.app_root);
            }
            for (p, path) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let field = format!("spec.rules[{r}].http.paths[{p}]");
                let kind = match path.path_type.as_str() {
                    "Exact" => Kind::Exact,
                    "Prefix" => Kind::Prefix,
                    "ImplementationSpecific" => Kind::Specific,
                    other => {
                        out.problems.push(problem(
                            &ing.key,
                            &format!("{field}.pathType"),
                            Severity::Error,
                            &format!("unknown pathType `{other}`; the path is left out"),
                        ));
                        continue;
                    }
                };
                let p = path.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
                let b = backend(objects, ing, &path.backend, &format!("{field}.backend"), &mut out);
                let srv = servers.get_mut(&host).expect("made above");
                if canary {
                    if let Ok(b) = b {
                        srv.canaries.entry(p).or_insert((n, b));
                    }
                    continue;
                }
                if let Some(other) = srv.locs.iter().find(|l| l.path == p && l.kind == kind && l.ing != n) {
                    let winner = &ings[other.ing].key;
                    out.problems.push(problem(
                        &ing.key,
                        &field,
                        Severity::Error,
                        &format!(
                            "path {p} of host {} is already served by Ingress {}/{} (older); this one is left out",
                            if host.is_empty() { "*" } else { &host },
                            winner.0,
                            winner.1
                        ),
                    ));
                    continue;
                }
                let service = path.backend.service.as_ref().map(|s| {
                    let port = s.port.as_ref();
                    let port = port
                        .and_then(|p| p.number.map(|n| n.to_string()))
                        .or_else(|| port.and_then(|p| p.name.clone()));
                    (s.name.clone(), port.unwrap_or_default())
                });
                srv.locs.push(Loc { ing: n, field, path: p, kind, backend: b, service });
            }
        }
    }
    let https = !certs.is_empty();
    let mut http_routes = Vec::new();
    let mut https_routes = Vec::new();
    // Exact hosts, then wildcards (longer first), then the rules without a host.
    let mut order: Vec<&String> = servers.keys().collect();
    order.sort_by_key(|h| (h.is_empty(), h.starts_with("*."), std::cmp::Reverse(h.len())));
    for host in order {
        let srv = &servers[host];
        let mut locs = srv.locs.clone();
        if srv.regex {
            locs.sort_by(|a, b| b.path.cmp(&a.path));
            locs.sort_by_key(|l| std::cmp::Reverse(l.path.len()));
        } else {
            locs.sort_by_key(|l| (l.kind != Kind::Exact, std::cmp::Reverse(l.order_len())));
        }
        let hm = host_match(host);
        if let Some(root) = &srv.app_root {
            let r = json!({"name": format!("{}:app-root", if host.is_empty() { "*" } else { host }), "match": with_host(&hm, json!({"path_exact": "/"})), "redirect": {"to": format!("$scheme://$http_host{root}"), "status": 302}});
            http_routes.push((None, r.clone()));
            https_routes.push((None, r));
        }
        for l in &locs {
            let ing = &ings[l.ing];
            let m = path_match(l, srv.regex);
            let base = route_fields(ing, l, auth_files.get(&l.ing));
            let canary = srv.canaries.get(&l.path).map(|(ci, b)| (&ings[*ci], b.clone()));
            let name = format!("{}/{}:{}", ing.key.0, ing.key.1, l.field);
            let routes =
                cors_variants(&name, with_host(&hm, m), base, l.backend.as_ref().ok(), canary, ing.ann.cors.as_ref());
            let redirect = (https && srv.tls && ing.ann.ssl_redirect) || ing.ann.force_ssl_redirect;
            for r in routes {
                if redirect {
                    let mut rr = Map::new();
                    rr.insert("name".into(), r["name"].clone());
                    rr.insert("match".into(), r["match"].clone());
                    rr.insert("redirect".into(), json!({"to": "https://$host$request_uri", "status": 308}));
                    http_routes.push((None, Value::Object(rr)));
                } else {
                    http_routes.push((Some((l.ing, l.field.clone())), r.clone()));
                }
                https_routes.push((Some((l.ing, l.field.clone())), r));
            }
        }
        // The host's own default: its paths never fall to another host's rules.
        let fallback = srv.default.clone().or_else(|| if host.is_empty() { catch_all.clone() } else { None });
        let r = default_route(
            &format!("{}:default", if host.is_empty() { "*" } else { host }),
            with_host(&hm, json!({"path_prefix": "/"})),
            fallback,
        );
        http_routes.push((None, r.clone()));
        https_routes.push((None, r));
    }
    if !servers.contains_key("") {
        let r = default_route("*:default", json!({"path_prefix": "/"}), catch_all.clone());
        http_routes.push((None, r.clone()));
        https_routes.push((None, r));
    }
    let listeners = |out: &mut Output, http: Vec<Value>, https_routes: Vec<Value>| {
        out.listeners.clear();
        out.listeners.push(json!({"name": HTTP_LISTENER, "bind": s.http.to_string(), "routes": http}));
        if https {
            let certificates: Vec<Value> = certs.iter().map(|(c, k)| json!({"cert": c, "key": k})).collect();
            out.listeners.push(json!({"name": HTTPS_LISTENER, "bind": s.https.to_string(), "tls": {"certificates": certificates}, "routes": https_routes}));
        }
    };
    // The whole document through ferry's parser; kept when it passes (the usual case: one parse
    // per translation). When it does not, every backend and route is checked on its own, so only
    // what is refused answers 503 and gets its problem.
    let strip = |v: &[(Option<(usize, String)>, Value)]| v.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
    listeners(&mut out, strip(&http_routes), strip(&https_routes));
    match whole(&out) {
        Ok(cfg) => out.parsed = Some(cfg),
        Err(_) => {
            check_backends(&mut out);
            let http = checked(http_routes, &ings, &mut out, true);
            let https_checked = checked(https_routes, &ings, &mut out, false);
            listeners(&mut out, http, https_checked);
            out.parsed = whole(&out).ok();
        }
    }
    out.problems.dedup();
    out
}

/// The admin address a translation is parsed with; the real one is set after.
const CHECK_ADMIN: &str = "127.0.0.1:9";

fn whole(out: &Output) -> Result<crate::config::Config, crate::config::ConfigErrors> {
    let mut top = Map::new();
    top.insert("admin".into(), json!(CHECK_ADMIN));
    crate::config::Config::parse("<ingress>", &out.document(top).to_string())
}

fn problem(k: &Key, field: &str, severity: Severity, message: &str) -> Problem {
    Problem { object: obj(k), field: field.to_string(), severity, message: message.to_string() }
}

/// `*.example.com` (one label) as ferry's regex host; an exact host as it is.
fn host_match(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    match host.strip_prefix("*.") {
        Some(rest) => Some(format!("~^[^.]+\\.{}$", regex::escape(rest))),
        None => Some(host.to_string()),
    }
}

fn with_host(host: &Option<String>, mut m: Value) -> Value {
    if let Some(h) = host {
        m["host"] = json!(h);
    }
    m
}

fn path_match(l: &Loc, regex: bool) -> Value {
    if regex {
        return json!({"path_regex": format!("(?i)^{}", l.path)});
    }
    match l.kind {
        Kind::Exact => json!({"path_exact": l.path}),
        Kind::Prefix => json!({"path_prefix": l.path}),
        Kind::Specific => json!({"path_starts_with": l.path}),
    }
}

fn default_route(name: &str, m: Value, to: Option<Result<String, String>>) -> Value {
    match to {
        Some(Ok(b)) => json!({"name": name, "match": m, "backend": b}),
        Some(Err(_)) => json!({"name": name, "match": m, "respond": {"status": 503}}),
        None => json!({"name": name, "match": m, "respond": {"status": 404, "body": "404 page not found\n"}}),
    }
}

/// A route's fields other than its name, match and target, from its Ingress's annotations.
fn route_fields(ing: &Ing<'_>, l: &Loc, auth: Option<&Result<String, String>>) -> Map<String, Value> {
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

/// The backend of `default-backend` (its Service's first port), or `None` with a problem.
fn error_backend(
    objects: &Objects,
    ing: &Ing<'_>,
    ns: &str,
    name: &str,
    field: &str,
    out: &mut Output,
) -> Option<String> {
    let Some(svc) = objects.services.get(&(ns.to_string(), name.to_string())) else {
        out.problems.push(problem(
            &ing.key,
            field,
            Severity::Error,
            &format!("Service {ns}/{name} not found; custom-http-errors is ignored"),
        ));
        return None;
    };
    let Some(port) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p.first()).map(|p| p.port) else {
        out.problems.push(problem(
            &ing.key,
            field,
            Severity::Error,
            &format!("Service {ns}/{name} has no port; custom-http-errors is ignored"),
        ));
        return None;
    };
    let b = format!("{ns}/{name}:{port}#errors");
    out.backends.insert(b.clone(), json!({"service": format!("{name}.{ns}"), "port": port}));
    Some(b)
}

/// Adds a `match.when` condition to a match.
fn add_when(m: &mut Value, cond: Value) {
    match m["when"].as_array_mut() {
        Some(list) => list.push(cond),
        None => m["when"] = json!([cond]),
    }
}

/// With CORS for several origins, the path's routes twice: first for a request whose `Origin` is
/// one of them (echoed back), then for any other (no CORS headers), as ingress-nginx decides.
fn cors_variants(
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
fn with_canary(
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

/// The backend an Ingress backend names, or why it cannot be served.
fn backend(
    objects: &Objects,
    ing: &Ing<'_>,
    b: &IngressBackend,
    field: &str,
    out: &mut Output,
) -> Result<String, String> {
    let mut fail = |f: String, m: String| {
        out.problems.push(problem(&ing.key, &f, Severity::Error, &format!("{m}; requests for it get 503")));
        Err(m)
    };
    let Some(svc) = &b.service else {
        return fail(field.to_string(), "only Service backends are supported (not `resource`)".into());
    };
    let ns = &ing.key.0;
    let port = svc.port.as_ref();
    let (port_json, port_text): (Value, String) = match (port.and_then(|p| p.number), port.and_then(|p| p.name.clone()))
    {
        (Some(n), _) => (json!(n), n.to_string()),
        (None, Some(n)) if !n.is_empty() => (json!(n), n),
        _ => return fail(format!("{field}.service.port"), "the Service port has neither a number nor a name".into()),
    };
    let Some(service) = objects.services.get(&(ns.clone(), svc.name.clone())) else {
        return fail(format!("{field}.service.name"), format!("Service {ns}/{} not found", svc.name));
    };
    let spec = service.spec.clone().unwrap_or_default();
    let sport = spec.ports.iter().flatten().find(|p| match &port_json {
        Value::Number(n) => n.as_i64() == Some(p.port.into()),
        _ => p.name.as_deref() == Some(port_text.as_str()),
    });
    let Some(sport) = sport else {
        return fail(format!("{field}.service.port"), format!("Service {ns}/{} has no port {port_text}", svc.name));
    };
    let name = format!("{ns}/{}/{}:{port_text}", ing.key.1, svc.name);
    let a = &ing.ann;
    let mut f = Map::new();
    if spec.type_.as_deref() == Some("ExternalName") {
        let host = spec.external_name.clone().unwrap_or_default();
        f.insert("addresses".into(), json!([format!("{host}:{}", sport.port)]));
    } else if a.service_upstream && spec.cluster_ip.as_deref().is_some_and(|ip| ip != "None" && !ip.is_empty()) {
        let ip: String = spec.cluster_ip.clone().unwrap_or_default();
        let addr = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", sport.port),
            _ => format!("{ip}:{}", sport.port),
        };
        f.insert("addresses".into(), json!([addr]));
    } else {
        f.insert("service".into(), json!(format!("{}.{ns}", svc.name)));
        f.insert("port".into(), port_json);
    }
    if let Some(t) = a.connect_timeout {
        f.insert("connect_timeout".into(), json!(format!("{t}s")));
    }
    if let Some(t) = a.read_timeout {
        f.insert("read_timeout".into(), json!(format!("{t}s")));
    }
    if let Some(t) = a.send_timeout {
        f.insert("send_timeout".into(), json!(format!("{t}s")));
    }
    // ingress-nginx's default proxy_next_upstream is `error timeout`.
    let retry_on = a.next_upstream.clone().unwrap_or_else(|| vec!["connect", "reset", "timeout"]);
    if retry_on.is_empty() {
        f.insert("retries".into(), json!(0));
    } else {
        f.insert("retry_on".into(), json!(retry_on));
        // proxy_next_upstream_tries counts every try (0: no limit); ferry counts extra ones.
        let tries = a.next_upstream_tries.unwrap_or(3);
        let extra = if tries == 0 {
            crate::config::defaults::MAX_RETRIES
        } else {
            (tries - 1).min(crate::config::defaults::MAX_RETRIES)
        };
        f.insert("retries".into(), json!(extra));
    }
    if let Some(fields) = &a.affinity {
        let cookie: Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        f.insert("affinity_cookie".into(), Value::Object(cookie));
    }
    if a.backend_protocol == BackendProtocol::Https {
        f.insert("tls".into(), json!({"insecure_skip_verify": true}));
    }
    out.backends.insert(name.clone(), Value::Object(f));
    Ok(name)
}

const STUB_LISTENER: &str = "v";

/// Parses a one-listener document with ferry's parser: the first problem's message.
fn refused(routes: Vec<Value>, backends: Map<String, Value>) -> Option<String> {
    let doc =
        json!({"listeners": [{"name": STUB_LISTENER, "bind": "127.0.0.1:9", "routes": routes}], "backends": backends});
    match crate::config::Config::parse("ingress", &doc.to_string()) {
        Ok(_) => None,
        Err(e) => Some(e.0.first().map(|e| e.message.clone()).unwrap_or_else(|| e.to_string())),
    }
}

/// Drops backends ferry's parser refuses (their routes then answer 503).
fn check_backends(out: &mut Output) {
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
fn checked(
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
fn path_of(m: &Value) -> String {
    for k in ["path_exact", "path_prefix", "path_starts_with"] {
        if let Some(p) = m[k].as_str() {
            return p.to_string();
        }
    }
    let re = m["path_regex"].as_str().unwrap_or("/");
    re.strip_prefix("(?i)^").unwrap_or(re).to_string()
}

fn route_backends(r: &Value) -> BTreeSet<String> {
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

impl Output {
    /// The whole document: these listeners and backends, with `admin` and the rest from `top`.
    pub fn document(&self, top: Map<String, Value>) -> Value {
        let mut doc = top;
        doc.insert("listeners".into(), Value::Array(self.listeners.clone()));
        doc.insert("backends".into(), Value::Object(self.backends.clone()));
        Value::Object(doc)
    }
}
