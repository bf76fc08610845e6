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
mod backends;
mod check;
mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{json, Map, Value};

use super::{ObjectRef, Problem, Severity};
use annotations::Annotations;
use backends::{backend, error_backend};
use check::{check_backends, checked, whole};
use routes::{cors_variants, default_route, host_match, path_match, route_fields, with_host};

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

fn problem(k: &Key, field: &str, severity: Severity, message: &str) -> Problem {
    Problem { object: obj(k), field: field.to_string(), severity, message: message.to_string() }
}

impl Output {
    /// The whole document: these listeners and backends, with `admin` and the rest from `top`.
    pub fn document(&self, top: Map<String, Value>) -> Value {
        super::document(&self.listeners, &self.backends, top)
    }
}
