//! Which routes attach to which listeners of a Gateway (parentRefs by name, sectionName and port;
//! allowedRoutes namespaces and kinds; hostnames intersected), and ReferenceGrants.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

use super::listeners::{Listener, Namespaces};
use super::{
    key_of, parse, GatewaySpec, HttpRouteSpec, Key, Objects, Output, Parsed, RouteKind, TcpRouteSpec, TlsRouteSpec,
    GROUP,
};
use crate::sources::Severity;

/// A route's spec, by kind.
pub(crate) enum Spec {
    Http(HttpRouteSpec),
    Tls(TlsRouteSpec),
    Tcp(TcpRouteSpec),
}

/// One parentRef of a route that names this Gateway.
#[derive(Debug, Clone)]
pub(crate) struct Parent {
    /// As written in the route (status repeats it).
    pub reference: Value,
    /// Why it did not attach (reason, message).
    pub refused: Option<(&'static str, String)>,
}

/// A route that names this Gateway.
pub(crate) struct Route {
    pub kind: RouteKind,
    pub key: Key,
    pub generation: i64,
    pub created: Option<jiff::Timestamp>,
    pub spec: Option<Spec>,
    pub parents: Vec<Parent>,
    /// The listeners it attached to, each with the hostnames it serves there (empty: any).
    pub on: Vec<(usize, Vec<String>)>,
    /// Why a backend reference does not resolve (reason, message), set while building.
    pub unresolved: Option<(&'static str, String)>,
    /// Why part of the route is not served (an unsupported filter, say), set while building.
    pub unsupported: Option<String>,
}

/// Is `(from kind, from namespace)` granted the object `(group, kind, namespace, name)` by a
/// ReferenceGrant in the object's namespace?
pub(crate) fn granted(objects: &Objects, from: (&str, &str), to: (&str, &str, &str, &str)) -> bool {
    let (fkind, fns) = from;
    let (tgroup, tkind, tns, tname) = to;
    objects.grants.iter().filter(|g| g.metadata.namespace.as_deref() == Some(tns)).any(|g| {
        let Ok(p) = parse::<super::ReferenceGrantSpec>(g) else { return false };
        let from_ok = p.spec.from.iter().any(|f| f.group == GROUP && f.kind == fkind && f.namespace == fns);
        let to_ok = p.spec.to.iter().any(|t| {
            t.group == tgroup && t.kind == tkind && t.name.as_deref().is_none_or(|n| n.is_empty() || n == tname)
        });
        from_ok && to_ok
    })
}

fn selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let vals = e.values.clone().unwrap_or_default();
        let has = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => has.is_some_and(|v| vals.contains(v)),
            "NotIn" => has.is_none_or(|v| !vals.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn namespace_allowed(objects: &Objects, gw_ns: &str, l: &Listener, route_ns: &str) -> bool {
    match &l.namespaces {
        Namespaces::Same => gw_ns == route_ns,
        Namespaces::All => true,
        Namespaces::Selector(sel) => {
            let labels = objects.namespaces.get(route_ns).and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
            selector_matches(sel, &labels)
        }
    }
}

/// Does the wildcard `*.suffix` cover `name` (one or more labels in front of `suffix`)?
fn covers(wild: &str, name: &str) -> bool {
    match wild.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => false,
    }
}

/// The hostnames a route serves on a listener (empty: any host), or `None` when they do not meet.
pub(crate) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(l) = listener else { return Some(route) };
    if route.is_empty() {
        return Some(vec![l.to_string()]);
    }
    let mut out = Vec::new();
    for r in &route {
        let m = if r == l || covers(l, r) {
            Some(r.clone())
        } else if covers(r, l) {
            Some(l.to_string())
        } else {
            None
        };
        if let Some(m) = m {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn route_hostnames(spec: &Spec) -> Vec<String> {
    match spec {
        Spec::Http(s) => s.hostnames.clone().unwrap_or_default(),
        Spec::Tls(s) => s.hostnames.clone(),
        Spec::Tcp(_) => Vec::new(),
    }
}

fn read_routes(objects: &Objects) -> Vec<(RouteKind, &DynamicObject, Result<Spec, String>)> {
    let mut v = Vec::new();
    for o in &objects.http_routes {
        v.push((RouteKind::Http, o, parse::<HttpRouteSpec>(o).map(|p| Spec::Http(p.spec))));
    }
    for o in &objects.tls_routes {
        v.push((RouteKind::Tls, o, parse::<TlsRouteSpec>(o).map(|p| Spec::Tls(p.spec))));
    }
    for o in &objects.tcp_routes {
        v.push((RouteKind::Tcp, o, parse::<TcpRouteSpec>(o).map(|p| Spec::Tcp(p.spec))));
    }
    v
}

/// The routes that name this Gateway, each with the listeners it attached to; attached routes
/// are counted on their listeners.
pub(crate) fn attach(objects: &Objects, gw: &Parsed<GatewaySpec>, ls: &mut [Listener], out: &mut Output) -> Vec<Route> {
    let mut routes = Vec::new();
    for (kind, o, spec) in read_routes(objects) {
        if o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let key = key_of(o);
        let refs = o.data.pointer("/spec/parentRefs").and_then(Value::as_array).cloned().unwrap_or_default();
        let ours: Vec<Value> = refs
            .into_iter()
            .filter(|r| {
                r.get("group").and_then(Value::as_str).unwrap_or(GROUP) == GROUP
                    && r.get("kind").and_then(Value::as_str).unwrap_or("Gateway") == "Gateway"
                    && r.get("name").and_then(Value::as_str) == Some(gw.key.1.as_str())
                    && r.get("namespace").and_then(Value::as_str).unwrap_or(&key.0) == gw.key.0
            })
            .collect();
        if ours.is_empty() {
            continue;
        }
        let mut route = Route {
            kind,
            key: key.clone(),
            generation: o.metadata.generation.unwrap_or(0),
            created: o.metadata.creation_timestamp.as_ref().map(|t| t.0),
            spec: None,
            parents: Vec::new(),
            on: Vec::new(),
            unresolved: None,
            unsupported: None,
        };
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                out.problems.push(super::problem(kind.kind(), &key, "spec", Severity::Error, &e));
                route.parents = ours
                    .into_iter()
                    .map(|r| Parent {
                        reference: r,
                        refused: Some(("UnsupportedValue", format!("ferry cannot read it: {e}"))),
                    })
                    .collect();
                routes.push(route);
                continue;
            }
        };
        let hostnames = route_hostnames(&spec);
        for r in ours {
            let section = r.get("sectionName").and_then(Value::as_str);
            let port = r.get("port").and_then(Value::as_i64);
            let named: Vec<usize> = (0..ls.len())
                .filter(|&i| section.is_none_or(|s| ls[i].name == s))
                .filter(|&i| port.is_none_or(|p| i64::from(ls[i].port) == p))
                .collect();
            let refused = if named.is_empty() {
                Some(("NoMatchingParent", "no listener of the Gateway has this sectionName and port".to_string()))
            } else {
                let live: Vec<usize> = named.iter().copied().filter(|&i| ls[i].accepted()).collect();
                let kinds: Vec<usize> = live.iter().copied().filter(|&i| ls[i].kinds.contains(&kind)).collect();
                let nss: Vec<usize> =
                    kinds.iter().copied().filter(|&i| namespace_allowed(objects, &gw.key.0, &ls[i], &key.0)).collect();
                let mut hit = Vec::new();
                for &i in &nss {
                    let h = if kind == RouteKind::Tcp {
                        Some(Vec::new())
                    } else {
                        intersect(ls[i].hostname.as_deref(), &hostnames)
                    };
                    if let Some(h) = h {
                        hit.push((i, h));
                    }
                }
                if hit.is_empty() {
                    Some(if live.is_empty() {
                        ("NoMatchingParent", "the listeners it names are not accepted".to_string())
                    } else if kinds.is_empty() || nss.is_empty() {
                        (
                            "NotAllowedByListeners",
                            format!("no listener it names allows {} from namespace {}", kind.kind(), key.0),
                        )
                    } else {
                        ("NoMatchingListenerHostname", "its hostnames match no listener's hostname".to_string())
                    })
                } else {
                    for (i, h) in hit {
                        if let Some(e) = route.on.iter_mut().find(|(j, _)| *j == i) {
                            for x in h {
                                if !e.1.contains(&x) {
                                    e.1.push(x);
                                }
                            }
                        } else {
                            ls[i].attached += 1;
                            route.on.push((i, h));
                        }
                    }
                    None
                }
            };
            route.parents.push(Parent { reference: r, refused });
        }
        route.spec = Some(spec);
        routes.push(route);
    }
    // The spec's order: oldest first, then namespace/name.
    routes.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
    routes
}
