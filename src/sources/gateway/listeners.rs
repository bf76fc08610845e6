//! A Gateway's listeners, read and checked: protocol, TLS certificates (Secrets, across namespaces
//! only with a ReferenceGrant), allowed route kinds and namespaces, and conflicts between listeners
//! on one port. Each listener keeps what its status will say.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTlsMode,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::status::{Cond, ListenerStatus};
use super::{attach, Objects, Output, Parsed, RouteKind, Settings, GROUP};
use crate::sources::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    Https,
    Tls,
    Tcp,
}

/// Which namespaces may attach routes.
#[derive(Debug, Clone)]
pub(crate) enum Namespaces {
    Same,
    All,
    Selector(LabelSelector),
}

#[derive(Debug, Clone)]
pub(crate) struct Listener {
    pub name: String,
    pub port: u16,
    pub proto: Option<Proto>,
    /// Lower-case; `None` matches any host.
    pub hostname: Option<String>,
    /// (cert file, key file) per certificateRef that resolved.
    pub certs: Vec<(String, String)>,
    pub namespaces: Namespaces,
    /// The route kinds allowed here that ferry supports.
    pub kinds: Vec<RouteKind>,
    /// Why the listener is not accepted (reason, message).
    pub refused: Option<(&'static str, String)>,
    /// Why its references do not resolve.
    pub unresolved: Option<(&'static str, String)>,
    /// Why it conflicts with another listener on its port.
    pub conflicted: Option<(&'static str, String)>,
    pub attached: i32,
}

impl Listener {
    /// Accepted and served (its port's ferry listener has its routes).
    pub fn accepted(&self) -> bool {
        self.refused.is_none() && self.conflicted.is_none()
    }

    /// Served: accepted, and for HTTPS with a certificate.
    pub fn programmed(&self) -> bool {
        self.accepted() && (self.proto != Some(Proto::Https) || !self.certs.is_empty())
    }

    pub fn status(&self) -> ListenerStatus {
        let mut conds = Vec::new();
        conds.push(match (&self.refused, &self.conflicted) {
            (Some((r, m)), _) | (None, Some((r, m))) => Cond::no("Accepted", r, m),
            _ => Cond::yes("Accepted", "Accepted", "the listener is served"),
        });
        conds.push(match &self.unresolved {
            Some((r, m)) => Cond::no("ResolvedRefs", r, m),
            None => Cond::yes("ResolvedRefs", "ResolvedRefs", "every reference resolved"),
        });
        conds.push(match &self.conflicted {
            Some((r, m)) => Cond::yes("Conflicted", r, m),
            None => Cond::no("Conflicted", "NoConflicts", "no conflict with another listener"),
        });
        conds.push(if self.programmed() {
            Cond::yes("Programmed", "Programmed", "the listener is served")
        } else {
            Cond::no("Programmed", "Invalid", "the listener is not served: see its other conditions")
        });
        ListenerStatus {
            name: self.name.clone(),
            supported_kinds: self.kinds.iter().map(|k| k.kind()).collect(),
            attached: self.attached,
            conditions: conds,
        }
    }
}

fn proto(p: &str) -> Option<Proto> {
    match p {
        "HTTP" => Some(Proto::Http),
        "HTTPS" => Some(Proto::Https),
        "TLS" => Some(Proto::Tls),
        "TCP" => Some(Proto::Tcp),
        _ => None,
    }
}

/// The route kinds a protocol carries.
pub(crate) fn kinds_for(p: Proto) -> &'static [RouteKind] {
    match p {
        Proto::Http | Proto::Https => &[RouteKind::Http],
        Proto::Tls => &[RouteKind::Tls],
        Proto::Tcp => &[RouteKind::Tcp],
    }
}

pub(crate) fn read(
    objects: &Objects,
    s: &Settings,
    gw: &Parsed<super::GatewaySpec>,
    out: &mut Output,
) -> Vec<Listener> {
    let mut ls: Vec<Listener> = gw.spec.listeners.iter().map(|l| one(objects, s, gw, l, out)).collect();
    conflicts(&mut ls);
    ls
}

fn one(
    objects: &Objects,
    s: &Settings,
    gw: &Parsed<super::GatewaySpec>,
    l: &GatewayListeners,
    out: &mut Output,
) -> Listener {
    let p = proto(&l.protocol);
    let mut me = Listener {
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        proto: p,
        hostname: l.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        certs: Vec::new(),
        namespaces: Namespaces::Same,
        kinds: Vec::new(),
        refused: None,
        unresolved: None,
        conflicted: None,
        attached: 0,
    };
    let Some(p) = p else {
        me.refused = Some((
            "UnsupportedProtocol",
            format!("protocol {} is not supported (HTTP, HTTPS, TLS, TCP are)", l.protocol),
        ));
        return me;
    };
    // Kinds: those asked for that the protocol carries; an unknown one is named.
    let allowed = l.allowed_routes.as_ref();
    match allowed.and_then(|a| a.kinds.as_ref()) {
        Some(asked) => {
            for k in asked {
                let group = k.group.as_deref().unwrap_or(GROUP);
                match kinds_for(p).iter().find(|rk| rk.kind() == k.kind && group == GROUP) {
                    Some(rk) => me.kinds.push(*rk),
                    None => {
                        me.unresolved = Some((
                            "InvalidRouteKinds",
                            format!("route kind {group}/{} is not supported on a {} listener", k.kind, l.protocol),
                        ))
                    }
                }
            }
        }
        None => me.kinds = kinds_for(p).to_vec(),
    }
    me.namespaces = match allowed.and_then(|a| a.namespaces.as_ref()) {
        None => Namespaces::Same,
        Some(n) => match n.from {
            Some(From::All) => Namespaces::All,
            Some(From::Selector) => {
                let sel = n.selector.as_ref();
                Namespaces::Selector(LabelSelector {
                    match_labels: sel.and_then(|s| s.match_labels.clone()),
                    match_expressions: sel.and_then(|s| s.match_expressions.as_ref()).map(|v| {
                        v.iter()
                            .map(|e| LabelSelectorRequirement {
                                key: e.key.clone(),
                                operator: e.operator.clone(),
                                values: e.values.clone(),
                            })
                            .collect()
                    }),
                })
            }
            Some(From::Same) | None => Namespaces::Same,
        },
    };
    let mode = l.tls.as_ref().and_then(|t| t.mode.clone());
    match p {
        Proto::Https => {
            if mode == Some(GatewayListenersTlsMode::Passthrough) {
                me.refused = Some((
                    "UnsupportedValue",
                    "an HTTPS listener terminates TLS; Passthrough is for TLS listeners".into(),
                ));
                return me;
            }
            let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.clone()).unwrap_or_default();
            if refs.is_empty() {
                me.unresolved = Some(("InvalidCertificateRef", "an HTTPS listener needs tls.certificateRefs".into()));
            }
            for (i, r) in refs.iter().enumerate() {
                let group = r.group.as_deref().unwrap_or("");
                let kind = r.kind.as_deref().unwrap_or("Secret");
                let ns = r.namespace.clone().unwrap_or_else(|| gw.key.0.clone());
                let why = if !group.is_empty() || kind != "Secret" {
                    Err(("InvalidCertificateRef", format!("certificateRefs[{i}]: {group}/{kind} is not a Secret")))
                } else if ns != gw.key.0
                    && !attach::granted(objects, ("Gateway", &gw.key.0), ("", "Secret", &ns, &r.name))
                {
                    Err((
                        "RefNotPermitted",
                        format!(
                            "certificateRefs[{i}]: Secret {ns}/{} is not granted to this namespace by a ReferenceGrant",
                            r.name
                        ),
                    ))
                } else {
                    crate::sources::secrets::tls_pair(
                        objects.secrets.get(&(ns.clone(), r.name.clone())),
                        &s.secrets_dir,
                    )
                    .map_err(|m| {
                        ("InvalidCertificateRef", format!("certificateRefs[{i}]: Secret {ns}/{}: {m}", r.name))
                    })
                };
                match why {
                    Ok((pair, files)) => {
                        if !me.certs.contains(&pair) {
                            me.certs.push(pair);
                        }
                        out.files.extend(files);
                    }
                    Err((reason, m)) => {
                        out.problems.push(super::problem(
                            "Gateway",
                            &gw.key,
                            &format!("spec.listeners[{}].tls", me.name),
                            Severity::Error,
                            &m,
                        ));
                        me.unresolved.get_or_insert((reason, m));
                    }
                }
            }
        }
        Proto::Tls => {
            if mode != Some(GatewayListenersTlsMode::Passthrough) {
                me.refused = Some((
                    "UnsupportedValue",
                    "ferry's TLS listeners pass TLS through by SNI (tls.mode: Passthrough); HTTPS terminates".into(),
                ));
            }
        }
        Proto::Http | Proto::Tcp => {}
    }
    me
}

/// Listeners on one port must agree on the protocol (ferry serves a port as HTTP, or as TCP with
/// SNI), and differ in hostname.
fn conflicts(ls: &mut [Listener]) {
    let mut ports: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        if l.refused.is_none() {
            ports.entry(l.port).or_default().push(i);
        }
    }
    for (port, idx) in ports {
        let family = |p: Option<Proto>| match p {
            Some(Proto::Http) => 0,
            Some(Proto::Https) => 1,
            Some(Proto::Tls) => 2,
            _ => 3,
        };
        let first = family(ls[idx[0]].proto);
        if idx.iter().any(|&i| family(ls[i].proto) != first) {
            for &i in &idx {
                ls[i].conflicted =
                    Some(("ProtocolConflict", format!("listeners on port {port} ask for different protocols")));
            }
            continue;
        }
        if first == 3 && idx.len() > 1 {
            for &i in &idx {
                ls[i].conflicted = Some(("ProtocolConflict", format!("only one TCP listener may use port {port}")));
            }
            continue;
        }
        for (a, &i) in idx.iter().enumerate() {
            for &j in &idx[a + 1..] {
                if ls[i].hostname == ls[j].hostname {
                    for k in [i, j] {
                        ls[k].conflicted = Some((
                            "HostnameConflict",
                            format!(
                                "listeners on port {port} share the hostname {}",
                                ls[i].hostname.as_deref().unwrap_or("(any)")
                            ),
                        ));
                    }
                }
            }
        }
    }
}
