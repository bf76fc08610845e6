//! Kubernetes objects from manifest files, for `ferry check -k` and `ferry run -k`: the same
//! translation as the live watch, fed from disk. Files are YAML (several documents separated by
//! `---`, or a `kind: List`) or JSON; directories are read for `*.yaml`, `*.yml` and `*.json`. Every
//! object remembers where it was written, so a problem is reported at `FILE:LINE:COL` of the field it
//! names. Objects without a namespace are in `default`, as kubectl applies them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use marked_yaml::types::Node;
use serde_json::{Map, Value};

use super::ingress::{Objects, Output};
use super::{ObjectRef, Problem, Severity};
use crate::config::{PortRef, ServiceRef};
use crate::discovery::slice::{self, SliceView};

/// Where an object was written: its file and its node (for field positions).
struct Source {
    file: PathBuf,
    node: Node,
    /// Lines before the node's document in its file.
    offset: usize,
}

/// Objects read from files.
#[derive(Default)]
pub struct Manifests {
    pub objects: Objects,
    /// Gateway API objects (with the same Services and Secrets, and the Namespaces for selectors).
    pub gateway: super::gateway::Objects,
    pub slices: Vec<EndpointSlice>,
    sources: BTreeMap<ObjectRef, Source>,
}

/// A file that could not be read or an object that is not valid: `FILE[:LINE:COL]: message`.
pub type ReadError = String;

/// YAML's core schema for a plain scalar; quoted scalars stay strings.
fn to_json(n: &Node) -> Value {
    match n {
        Node::Scalar(s) => {
            let t = s.as_str();
            if !s.may_coerce() {
                return Value::String(t.to_string());
            }
            match t {
                "null" | "~" | "" | "Null" | "NULL" => Value::Null,
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => {
                    if let Ok(i) = t.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(f) = t.parse::<f64>().ok().filter(|f| f.is_finite() && !t.starts_with('.')) {
                        Value::from(f)
                    } else {
                        Value::String(t.to_string())
                    }
                }
            }
        }
        Node::Sequence(s) => Value::Array(s.iter().map(to_json).collect()),
        Node::Mapping(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.as_str().to_string(), to_json(v))).collect::<Map<String, Value>>())
        }
    }
}

fn files_of(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: cannot read: {e}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            let ext = e.extension().and_then(|x| x.to_str()).unwrap_or("");
            if e.is_dir() || matches!(ext, "yaml" | "yml" | "json") {
                files_of(&e, out)?;
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// The documents of a multi-document YAML text: (first line, text).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            out.push((start, std::mem::take(&mut cur)));
            start = i + 1;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    out.push((start, cur));
    out
}

impl Manifests {
    /// Reads every file (and directory) given.
    pub fn read(paths: &[PathBuf]) -> Result<Manifests, Vec<ReadError>> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            if let Err(e) = files_of(p, &mut files) {
                errors.push(e);
            }
        }
        let mut m = Manifests::default();
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: cannot read: {e}", f.display()));
                    continue;
                }
            };
            for (first, doc) in documents(&text) {
                if doc.trim().is_empty() || doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                {
                    continue;
                }
                let node = match crate::config::parse_yaml_document(&doc) {
                    Ok(n) => n,
                    Err(e) => {
                        errors.push(format!("{}: document at line {}: {}", f.display(), first + 1, e));
                        continue;
                    }
                };
                m.add(&f, node, first, &mut errors);
            }
        }
        m.gateway.services = m.objects.services.clone();
        m.gateway.secrets = m.objects.secrets.clone();
        if errors.is_empty() {
            Ok(m)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, file: &Path, node: Node, offset: usize, errors: &mut Vec<ReadError>) {
        let at = pos(file, &node, offset);
        let Some(map) = node.as_mapping() else {
            errors.push(format!("{at}: not a Kubernetes object (a mapping with kind)"));
            return;
        };
        let kind = map.get_scalar("kind").map(|k| k.as_str().to_string()).unwrap_or_default();
        if kind == "List" {
            for item in map.get_sequence("items").into_iter().flat_map(|s| s.iter()) {
                self.add(file, item.clone(), offset, errors);
            }
            return;
        }
        let mut v = to_json(&node);
        let cluster_scoped = matches!(kind.as_str(), "IngressClass" | "GatewayClass" | "Namespace");
        if !cluster_scoped && v["metadata"]["namespace"].is_null() && v["metadata"].is_object() {
            v["metadata"]["namespace"] = Value::String("default".into());
        }
        let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let bad = |e: serde_json::Error| format!("{at}: {kind} {ns}/{name}: {e}");
        let key = (ns.clone(), name.clone());
        let kind_static: &'static str = match kind.as_str() {
            "Ingress" => match serde_json::from_value::<Ingress>(v) {
                Ok(o) => {
                    self.objects.ingresses.push(o);
                    "Ingress"
                }
                Err(e) => return errors.push(bad(e)),
            },
            "IngressClass" => match serde_json::from_value::<IngressClass>(v) {
                Ok(o) => {
                    self.objects.classes.push(o);
                    "IngressClass"
                }
                Err(e) => return errors.push(bad(e)),
            },
            "Service" => match serde_json::from_value::<Service>(v) {
                Ok(o) => {
                    self.objects.services.insert(key, o);
                    "Service"
                }
                Err(e) => return errors.push(bad(e)),
            },
            "Secret" => {
                // kubectl folds stringData into data.
                if let Some(Value::Object(sd)) = v.get("stringData").cloned() {
                    use base64::Engine as _;
                    let data = v["data"].as_object().cloned().unwrap_or_default();
                    let mut data = data;
                    for (k, s) in sd {
                        let text = s.as_str().unwrap_or_default();
                        data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
                    }
                    v["data"] = Value::Object(data);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("stringData");
                    }
                }
                match serde_json::from_value::<Secret>(v) {
                    Ok(o) => {
                        self.objects.secrets.insert(key, o);
                        "Secret"
                    }
                    Err(e) => return errors.push(bad(e)),
                }
            }
            "EndpointSlice" => match serde_json::from_value::<EndpointSlice>(v) {
                Ok(o) => {
                    self.slices.push(o);
                    "EndpointSlice"
                }
                Err(e) => return errors.push(bad(e)),
            },
            "GatewayClass" | "Gateway" | "HTTPRoute" | "TLSRoute" | "TCPRoute" | "ReferenceGrant" => {
                match serde_json::from_value::<kube::api::DynamicObject>(v) {
                    Ok(o) => {
                        let g = &mut self.gateway;
                        let (list, k) = match kind.as_str() {
                            "GatewayClass" => (&mut g.classes, "GatewayClass"),
                            "Gateway" => (&mut g.gateways, "Gateway"),
                            "HTTPRoute" => (&mut g.http_routes, "HTTPRoute"),
                            "TLSRoute" => (&mut g.tls_routes, "TLSRoute"),
                            "TCPRoute" => (&mut g.tcp_routes, "TCPRoute"),
                            _ => (&mut g.grants, "ReferenceGrant"),
                        };
                        list.push(o);
                        k
                    }
                    Err(e) => return errors.push(bad(e)),
                }
            }
            "Namespace" => match serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(v) {
                Ok(o) => {
                    self.gateway.namespaces.insert(name.clone(), o);
                    "Namespace"
                }
                Err(e) => return errors.push(bad(e)),
            },
            // Anything else (Deployments beside the Ingress in one file) is not ferry's to read.
            _ => return,
        };
        let r = ObjectRef { kind: kind_static, namespace: if cluster_scoped { String::new() } else { ns }, name };
        self.sources.insert(r, Source { file: file.to_path_buf(), node, offset });
    }

    /// `FILE:LINE:COL` of a problem's field (or of the nearest enclosing node written).
    pub fn position(&self, p: &Problem) -> String {
        let Some(src) = self.sources.get(&p.object) else { return p.object.to_string() };
        let mut node = &src.node;
        for seg in segments(&p.field) {
            let next = match (&seg, node) {
                (Seg::Key(k), Node::Mapping(m)) => m.get_node(k),
                (Seg::Index(i), Node::Sequence(s)) => s.get_node(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        pos(&src.file, node, src.offset)
    }

    /// A problem as `ferry check -k` prints it.
    pub fn render(&self, p: &Problem) -> String {
        let level = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}: {level}: {}: {}: {}", self.position(p), p.object, p.field, p.message)
    }

    /// For running without a cluster: every Service backend of the translation becomes the static
    /// addresses its EndpointSlices on disk list (as discovery would select them; none: `[]`,
    /// which answers 503).
    pub fn resolve_services(&self, out: &mut Output) {
        self.resolve_backends(&mut out.backends);
        // What the parser read named the Services: read again.
        out.parsed = None;
    }

    /// [`Manifests::resolve_services`] for any translation's backends.
    pub fn resolve_backends(&self, backends: &mut Map<String, Value>) {
        let views: Vec<(String, String, SliceView)> = self
            .slices
            .iter()
            .filter_map(|s| {
                let svc = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?.clone();
                Some((s.metadata.namespace.clone().unwrap_or_else(|| "default".into()), svc, SliceView::from_slice(s)?))
            })
            .collect();
        for b in backends.values_mut() {
            let Some(svc) = b.get("service").and_then(Value::as_str).map(str::to_string) else { continue };
            let (name, ns) = svc.split_once('.').unwrap_or((svc.as_str(), "default"));
            let port = match &b["port"] {
                Value::Number(n) => PortRef::Number(n.as_u64().unwrap_or(0) as u16),
                v => PortRef::Name(v.as_str().unwrap_or_default().to_string()),
            };
            let r = ServiceRef {
                name: name.to_string(),
                namespace: Some(ns.to_string()),
                port,
                include_not_ready: false,
                pod: None,
            };
            let ports = self.objects.services.get(&(ns.to_string(), name.to_string())).map(slice::service_ports);
            let mine = views.iter().filter(|(vns, vs, _)| vns == ns && vs == name).map(|(_, _, v)| v);
            let addrs: Vec<Value> =
                slice::select(mine, ports.as_ref(), &r).iter().map(|d| Value::String(d.addr.to_string())).collect();
            let o = b.as_object_mut().expect("a backend is a mapping");
            o.remove("service");
            o.remove("port");
            o.insert("addresses".into(), Value::Array(addrs));
        }
    }
}

fn pos(file: &Path, n: &Node, offset: usize) -> String {
    match n.span().start() {
        Some(m) => format!("{}:{}:{}", file.display(), m.line() + offset, m.column()),
        None => file.display().to_string(),
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.rules[0].http` → spec, rules, 0, http; an annotation key (dots and all) is one segment.
fn segments(field: &str) -> Vec<Seg> {
    if let Some(k) = field.strip_prefix("metadata.annotations.") {
        return vec![Seg::Key("metadata".into()), Seg::Key("annotations".into()), Seg::Key(k.into())];
    }
    let mut out = Vec::new();
    for part in field.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            out.push(Seg::Key(rest[..b].to_string()));
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..end].parse() {
                    out.push(Seg::Index(i));
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}
