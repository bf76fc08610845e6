//! Kubernetes objects as a second config source: Ingress (and, later, Gateway API) objects compile
//! into the same routes.yaml model ferry runs from a file, and from there into the same table.
//!
//! `ingress` is the translation, pure: a snapshot of objects ([`ingress::Objects`]) in, a routes
//! document and the problems found (each naming its object and field) out. It is checked with
//! ferry's own config parser, object by object, so a bad object loses only its own part and every
//! other one keeps updating. Two things feed it the same snapshot: `manifests` reads objects from
//! files (`ferry check -k`, `ferry run -k`, and the tests), `watch` follows the cluster with
//! kube-runtime reflectors and writes back status, Events and a Lease. `secrets` keeps the Secret
//! data the config names (certificates, htpasswd files) as private files, since every file-backed
//! part of ferry (certificate reloads, htpasswd checks) reads files.

pub mod gateway;
pub mod gateway_watch;
pub mod ingress;
pub mod manifests;
pub mod provision;
pub mod secrets;
pub mod status;
pub mod watch;

use std::fmt;

/// The object a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How bad a problem is: an error left part of the object out (or made it answer 503); a warning
/// is about something ignored that the object still works without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem with one object, at one field (`spec.rules[0].http.paths[1].backend`, or
/// `metadata.annotations.nginx.ingress.kubernetes.io/proxy-body-size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub object: ObjectRef,
    pub field: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// The field path of an annotation, as problems name it.
pub fn annotation_field(key: &str) -> String {
    format!("metadata.annotations.{key}")
}

/// A routes document: `listeners` and `backends`, with `admin` and the rest from `top`.
pub fn document(
    listeners: &[serde_json::Value],
    backends: &serde_json::Map<String, serde_json::Value>,
    top: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut doc = top;
    doc.insert("listeners".into(), serde_json::Value::Array(listeners.to_vec()));
    doc.insert("backends".into(), serde_json::Value::Object(backends.clone()));
    serde_json::Value::Object(doc)
}

/// What a source's translation gives the feed: a routes document (already parsed, usually), the
/// Secret files it names, and a line for the log.
pub trait Translation: Send + Sync + 'static {
    /// The source, as logs and errors name it (`Ingress`, `Gateway`).
    const SOURCE: &'static str;
    fn parsed(&self) -> Option<&crate::config::Config>;
    fn document(&self, top: serde_json::Map<String, serde_json::Value>) -> serde_json::Value;
    fn files(&self) -> &[secrets::File];
    /// (objects served, problems)
    fn counts(&self) -> (usize, usize);
}

impl Translation for ingress::Output {
    const SOURCE: &'static str = "Ingress";
    fn parsed(&self) -> Option<&crate::config::Config> {
        self.parsed.as_ref()
    }
    fn document(&self, top: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        ingress::Output::document(self, top)
    }
    fn files(&self) -> &[secrets::File] {
        &self.files
    }
    fn counts(&self) -> (usize, usize) {
        (self.accepted.len(), self.problems.len())
    }
}

impl Translation for gateway::Output {
    const SOURCE: &'static str = "Gateway";
    fn parsed(&self) -> Option<&crate::config::Config> {
        self.parsed.as_ref()
    }
    fn document(&self, top: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        gateway::Output::document(self, top)
    }
    fn files(&self) -> &[secrets::File] {
        &self.files
    }
    fn counts(&self) -> (usize, usize) {
        (self.routes.len(), self.problems.len())
    }
}

/// A translation as a [`Config`](crate::config::Config): parsed by ferry's own parser, then added
/// to `base` (routes.yaml's listeners and backends, kept as they are) when given. `admin` is used
/// without a base.
pub fn config<T: Translation>(
    out: &T,
    base: Option<&crate::config::Config>,
    admin: std::net::SocketAddr,
) -> Result<crate::config::Config, String> {
    let source = T::SOURCE;
    let mut cfg = match out.parsed() {
        Some(c) => c.clone(),
        None => {
            let mut top = serde_json::Map::new();
            top.insert("admin".into(), serde_json::Value::String(admin.to_string()));
            crate::config::Config::parse(&format!("<{source}>"), &out.document(top).to_string())
                .map_err(|e| format!("the {source} translation does not pass ferry's parser (a bug in ferry): {e}"))?
        }
    };
    cfg.admin = admin;
    let Some(base) = base else { return Ok(cfg) };
    for l in &cfg.listeners {
        if let Some(b) = base.listeners.iter().find(|b| b.name == l.name || b.bind == l.bind) {
            return Err(format!(
                "routes.yaml listener `{}` ({}) clashes with the {source} listener `{}` ({})",
                b.name, b.bind, l.name, l.bind
            ));
        }
    }
    for b in &cfg.backends {
        if base.backend(&b.name).is_some() {
            return Err(format!("routes.yaml backend `{}` clashes with a {source} backend", b.name));
        }
    }
    let mut merged = base.clone();
    merged.listeners.append(&mut cfg.listeners);
    merged.backends.append(&mut cfg.backends);
    Ok(merged)
}
