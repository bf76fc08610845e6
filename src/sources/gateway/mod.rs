//! Gateway API → routes: the Gateways whose GatewayClass names ferry's controller, their
//! listeners, and the HTTPRoutes, TLSRoutes and TCPRoutes attached to them, as listeners, routes
//! and backends of the routes.yaml model, checked by ferry's own parser (as Ingress is), plus the
//! status the spec asks for: conditions of the GatewayClass, of each Gateway and listener (with
//! `attachedRoutes`), and of each route per parent.
//!
//! Objects are read as `DynamicObject`s and their spec parsed here, one object at a time, into the
//! types of kube-rs's `gateway-api` crate: an object whose spec those types refuse is that
//! object's problem (condition `Accepted: False`, reason `UnsupportedValue`), never the watch's.
//!
//! One translation serves one Gateway ([`translate`]): a data plane serves exactly its Gateway,
//! and the controller runs the same function for every Gateway to write the status, so what the
//! status says is what the data plane does. Semantics follow the spec (gateway-api v1.6):
//! - Listeners: HTTP, HTTPS (terminated with `certificateRefs` to Secrets, across namespaces only
//!   with a ReferenceGrant), TLS (`Passthrough`, by SNI) and TCP; several listeners may share a port
//!   when their protocols agree and hostnames differ (`Conflicted` otherwise).
//! - Attachment: `parentRefs` by name, `sectionName` and `port`; `allowedRoutes` namespaces
//!   (Same/All/Selector) and kinds; route hostnames intersected with the listener's.
//! - A request goes to the most specific listener whose hostname matches it, and only its routes
//!   decide (no match is 404); among them the spec's precedence: the most specific hostname, then
//!   Exact path, longest prefix, method, most headers, most query parameters, then the oldest
//!   route, then namespace/name, then rule and match order.

mod attach;
mod http;
mod listeners;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{ApiResource, DynamicObject};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::{ObjectRef, Problem, Severity};
pub use status::{Cond, ListenerStatus, ParentStatus};

pub use gateway_api::apis::experimental::tcproutes::TcpRouteSpec;
pub use gateway_api::apis::standard::gatewayclasses::GatewayClassSpec;
pub use gateway_api::apis::standard::gateways::GatewaySpec;
pub use gateway_api::apis::standard::httproutes::HttpRouteSpec;
pub use gateway_api::apis::standard::referencegrants::ReferenceGrantSpec;
pub use gateway_api::apis::standard::tlsroutes::TlsRouteSpec;

/// The API group of every Gateway API kind.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// ferry's GatewayClass `spec.controllerName`.
pub const CONTROLLER: &str = "ferry.dev/gateway-controller";

/// The Gateway API kinds ferry reads, as kube's dynamic API needs them (all served as v1 by the
/// v1.6 standard channel).
pub fn api_resource(kind: &str) -> ApiResource {
    let plural = match kind {
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "TLSRoute" => "tlsroutes",
        "TCPRoute" => "tcproutes",
        "ReferenceGrant" => "referencegrants",
        other => panic!("not a Gateway API kind ferry reads: {other}"),
    };
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// (namespace, name)
pub type Key = (String, String);

/// The objects a translation reads.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub classes: Vec<DynamicObject>,
    pub gateways: Vec<DynamicObject>,
    pub http_routes: Vec<DynamicObject>,
    pub tls_routes: Vec<DynamicObject>,
    pub tcp_routes: Vec<DynamicObject>,
    pub grants: Vec<DynamicObject>,
    pub services: BTreeMap<Key, Service>,
    pub secrets: BTreeMap<Key, Secret>,
    pub namespaces: BTreeMap<String, Namespace>,
}

/// How ferry serves Gateways.
#[derive(Debug, Clone)]
pub struct Settings {
    pub controller: String,
    /// The address listeners bind (`0.0.0.0` in a data plane pod).
    pub address: IpAddr,
    /// Bind every listener on port 0 (tests, `ferry run -k` on a workstation): each port's
    /// ferry listener is still named `gateway-PORT`.
    pub any_port: bool,
    /// Where Secret data (certificates) is kept as files.
    pub secrets_dir: PathBuf,
}

impl Settings {
    pub fn new(address: IpAddr, secrets_dir: PathBuf) -> Settings {
        Settings { controller: CONTROLLER.into(), address, any_port: false, secrets_dir }
    }
}

/// The name of the ferry listener that serves a Gateway port.
pub fn listener_name(port: u16) -> String {
    format!("gateway-{port}")
}

/// One object's metadata and parsed spec.
pub(crate) struct Parsed<S> {
    pub key: Key,
    pub generation: i64,
    pub spec: S,
}

pub fn key_of(o: &DynamicObject) -> Key {
    (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
}

/// The object's `spec` in the gateway-api crate's type.
pub(crate) fn parse<S: DeserializeOwned>(o: &DynamicObject) -> Result<Parsed<S>, String> {
    let spec = o.data.get("spec").cloned().unwrap_or_else(|| json!({}));
    let spec = serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))?;
    Ok(Parsed { key: key_of(o), generation: o.metadata.generation.unwrap_or(0), spec })
}

/// The route kinds ferry attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Tls,
    Tcp,
}

impl RouteKind {
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }
}

/// A route's status as far as this Gateway goes: one entry per parentRef naming it.
#[derive(Debug, Clone)]
pub struct RouteStatus {
    pub kind: RouteKind,
    pub key: Key,
    pub generation: i64,
    pub parents: Vec<ParentStatus>,
}

/// The status of one Gateway and its listeners.
#[derive(Debug, Clone, Default)]
pub struct GatewayStatus {
    pub generation: i64,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerStatus>,
}

/// What a translation of one Gateway gives.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub gateway: Key,
    /// routes.yaml listeners and backends.
    pub listeners: Vec<Value>,
    pub backends: Map<String, Value>,
    /// Secret data to write where the listeners name it: (path, bytes).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub problems: Vec<Problem>,
    pub status: GatewayStatus,
    pub routes: Vec<RouteStatus>,
    /// The listener ports (`spec.listeners[].port`, deduplicated) the data plane serves.
    pub ports: Vec<u16>,
    /// The document as ferry's parser read it (`None` only if it does not parse: a bug, named in
    /// `problems`).
    pub parsed: Option<crate::config::Config>,
}

impl Output {
    /// The whole document: these listeners and backends, with `admin` and the rest from `top`.
    pub fn document(&self, top: Map<String, Value>) -> Value {
        super::document(&self.listeners, &self.backends, top)
    }
}

/// Is this GatewayClass ferry's?
pub fn class_is_ours(c: &DynamicObject, s: &Settings) -> bool {
    c.data.pointer("/spec/controllerName").and_then(Value::as_str) == Some(s.controller.as_str())
}

/// The Gateways whose class is ferry's.
pub fn our_gateways<'a>(objects: &'a Objects, s: &Settings) -> Vec<&'a DynamicObject> {
    let classes: BTreeSet<&str> =
        objects.classes.iter().filter(|c| class_is_ours(c, s)).filter_map(|c| c.metadata.name.as_deref()).collect();
    let mut gws: Vec<&DynamicObject> = objects
        .gateways
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .filter(|g| {
            g.data.pointer("/spec/gatewayClassName").and_then(Value::as_str).is_some_and(|c| classes.contains(c))
        })
        .collect();
    gws.sort_by_key(|g| key_of(g));
    gws
}

fn problem(kind: &'static str, k: &Key, field: &str, severity: Severity, message: &str) -> Problem {
    Problem {
        object: ObjectRef { kind, namespace: k.0.clone(), name: k.1.clone() },
        field: field.to_string(),
        severity,
        message: message.to_string(),
    }
}

/// Translates one Gateway (which must be one of [`our_gateways`]).
pub fn translate(objects: &Objects, s: &Settings, gateway: &DynamicObject) -> Output {
    let key = key_of(gateway);
    let mut out = Output { gateway: key.clone(), ..Output::default() };
    let gw = match parse::<GatewaySpec>(gateway) {
        Ok(g) => g,
        Err(e) => {
            out.problems.push(problem("Gateway", &key, "spec", Severity::Error, &e));
            out.status.generation = gateway.metadata.generation.unwrap_or(0);
            out.status.conditions = vec![Cond::no("Accepted", "Invalid", &e), Cond::no("Programmed", "Invalid", &e)];
            return out;
        }
    };
    out.status.generation = gw.generation;
    let mut ls = listeners::read(objects, s, &gw, &mut out);
    let mut routes = attach::attach(objects, &gw, &mut ls, &mut out);
    out.ports = ls.iter().map(|l| l.port).collect::<BTreeSet<_>>().into_iter().collect();
    http::build(objects, s, &ls, &mut routes, &mut out);
    out.routes = routes.iter().map(route_status).collect();
    out.status.listeners = ls.iter().map(|l| l.status()).collect();
    let invalid = ls.iter().filter(|l| !l.accepted()).count();
    out.status.conditions = vec![if ls.is_empty() || invalid < ls.len() && invalid == 0 {
        Cond::yes("Accepted", "Accepted", "the Gateway is served by ferry")
    } else {
        Cond::yes(
            "Accepted",
            "ListenersNotValid",
            &format!("{invalid} of {} listeners are not valid; the others are served", ls.len()),
        )
    }];
    out.parsed = check(&mut out);
    out
}

fn route_status(r: &attach::Route) -> RouteStatus {
    let parents = r
        .parents
        .iter()
        .map(|p| {
            let accepted = match (&p.refused, &r.unsupported) {
                (Some((reason, m)), _) => Cond::no("Accepted", reason, m),
                (None, Some(m)) => Cond::no("Accepted", "UnsupportedValue", m),
                (None, None) => Cond::yes("Accepted", "Accepted", "the route is served"),
            };
            let resolved = match &r.unresolved {
                Some((reason, m)) => Cond::no("ResolvedRefs", reason, m),
                None => Cond::yes("ResolvedRefs", "ResolvedRefs", "every reference resolved"),
            };
            ParentStatus { parent_ref: p.reference.clone(), conditions: vec![accepted, resolved] }
        })
        .collect();
    RouteStatus { kind: r.kind, key: r.key.clone(), generation: r.generation, parents }
}

/// The document through ferry's parser; should it be refused (a bug in the translation), every
/// route of the refused listener answers 500 rather than the Gateway serving nothing.
fn check(out: &mut Output) -> Option<crate::config::Config> {
    let parse = |out: &Output| {
        let mut top = Map::new();
        top.insert("admin".into(), json!("127.0.0.1:9"));
        crate::config::Config::parse("<gateway>", &out.document(top).to_string())
    };
    match parse(out) {
        Ok(c) => Some(c),
        Err(e) => {
            let (ns, name) = out.gateway.clone();
            out.problems.push(problem(
                "Gateway",
                &(ns, name),
                "spec",
                Severity::Error,
                &format!("ferry's parser refuses the translation (a bug in ferry): {e}"),
            ));
            for l in &mut out.listeners {
                if l.get("routes").is_some() {
                    l["routes"] = json!([{"name": "refused", "respond": {"status": 500}}]);
                }
            }
            parse(out).ok()
        }
    }
}
