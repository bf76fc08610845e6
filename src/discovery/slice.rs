//! Pure conversion: the EndpointSlices (or core/v1 Endpoints) of one Service → the endpoints a
//! backend routes to. No I/O; the watcher feeds it, tests feed it synthetic objects.
//!
//! Rules, as kube-proxy and the Gateway implementations read them:
//! - The backend names a Service port by number or name. Slices carry the Service port's *name*
//!   and the resolved *target* port, which can differ between slices (a named `targetPort` whose
//!   number differs between pods), so the number is resolved per slice. A port number is mapped to
//!   its name through the Service spec; a Service with one port needs no mapping.
//! - Ready endpoints are used. When none is ready, endpoints that are still serving while they
//!   terminate are used (graceful shutdown keeps working). `include_not_ready` uses every endpoint.
//!   A nil `ready` or `serving` condition counts as true, as the API asks; nil `terminating`
//!   as false.
//! - FQDN slices are ignored; IPv4 and IPv6 slices both count (dual stack).
//! - The same address in two slices (a move between slices) is one endpoint, ready if either says so.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::{PortRef, ServiceRef};
use crate::table::{Condition, Discovered};

/// One endpoint as a slice describes it, before port resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub pod: Option<String>,
    pub hostname: Option<String>,
}

/// The part of one EndpointSlice (or one Endpoints subset) that routing needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceView {
    /// (Service port name, "" when unnamed; target port number)
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<EndpointView>,
}

/// A Service's ports: (name, port number).
pub type ServicePorts = Vec<(String, u16)>;

fn port_u16(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
}

impl SliceView {
    /// `None` for slices ferry cannot route to (FQDN addresses).
    pub fn from_slice(s: &EndpointSlice) -> Option<SliceView> {
        if s.address_type != "IPv4" && s.address_type != "IPv6" {
            return None;
        }
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), port_u16(p.port)?)))
            .collect();
        let endpoints = s
            .endpoints
            .iter()
            .flat_map(|e| {
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let pod =
                    e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone());
                e.addresses.iter().filter_map(move |a| {
                    Some(EndpointView {
                        ip: a.parse().ok()?,
                        ready,
                        serving,
                        terminating,
                        pod: pod.clone(),
                        hostname: e.hostname.clone(),
                    })
                })
            })
            .collect();
        Some(SliceView { ports, endpoints })
    }

    /// One view per subset of a core/v1 Endpoints object (`--discovery endpoints`).
    pub fn from_endpoints(e: &Endpoints) -> Vec<SliceView> {
        e.subsets
            .iter()
            .flatten()
            .map(|sub| {
                let ports = sub
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .filter_map(|p| Some((p.name.clone().unwrap_or_default(), port_u16(Some(p.port))?)))
                    .collect();
                let view = |a: &k8s_openapi::api::core::v1::EndpointAddress, ready: bool| {
                    Some(EndpointView {
                        ip: a.ip.parse().ok()?,
                        ready,
                        serving: ready,
                        terminating: false,
                        pod: a
                            .target_ref
                            .as_ref()
                            .filter(|r| r.kind.as_deref() == Some("Pod"))
                            .and_then(|r| r.name.clone()),
                        hostname: a.hostname.clone(),
                    })
                };
                let endpoints = sub
                    .addresses
                    .iter()
                    .flatten()
                    .filter_map(|a| view(a, true))
                    .chain(sub.not_ready_addresses.iter().flatten().filter_map(|a| view(a, false)))
                    .collect();
                SliceView { ports, endpoints }
            })
            .collect()
    }
}

/// The TCP ports of a Service spec.
pub fn service_ports(s: &Service) -> ServicePorts {
    s.spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| Some((p.name.clone().unwrap_or_default(), u16::try_from(p.port).ok()?)))
        .collect()
}

/// Which slice port carries the backend's Service port. `service` is `None` while the Service
/// object is not known (yet); a port number can then still be resolved when the slice has one port.
fn slice_port(view: &SliceView, want: &PortRef, service: Option<&ServicePorts>) -> Option<u16> {
    let name: Option<&str> = match want {
        PortRef::Name(n) => Some(n),
        PortRef::Number(p) => match service {
            Some(ports) => Some(ports.iter().find(|(_, n)| n == p).map(|(name, _)| name.as_str())?),
            None => None,
        },
    };
    match name {
        Some(n) => view.ports.iter().find(|(pn, _)| pn == n).map(|(_, p)| *p),
        None if view.ports.len() == 1 => Some(view.ports[0].1),
        None => None,
    }
}

/// The endpoints a backend following `r` routes to, sorted by address.
pub fn select<'a>(
    views: impl IntoIterator<Item = &'a SliceView>,
    service: Option<&ServicePorts>,
    r: &ServiceRef,
) -> Vec<Discovered> {
    // address → (ready, serving, terminating, pod), merged across slices.
    let mut merged: BTreeMap<SocketAddr, (bool, bool, bool, Option<String>)> = BTreeMap::new();
    for v in views {
        let Some(port) = slice_port(v, &r.port, service) else { continue };
        for e in &v.endpoints {
            if let Some(want) = &r.pod {
                if e.pod.as_deref() != Some(want) && e.hostname.as_deref() != Some(want) {
                    continue;
                }
            }
            let m = merged.entry(SocketAddr::new(e.ip, port)).or_insert((false, false, true, None));
            m.0 |= e.ready;
            m.1 |= e.serving;
            m.2 &= e.terminating;
            if m.3.is_none() {
                m.3.clone_from(&e.pod);
            }
        }
    }
    let all = merged.into_iter().map(|(addr, (ready, serving, terminating, pod))| {
        let condition = if ready {
            Condition::Ready
        } else if terminating {
            Condition::Terminating
        } else {
            Condition::NotReady
        };
        (Discovered { addr, condition, pod, weight: 1, backup: false }, serving)
    });
    let all: Vec<(Discovered, bool)> = all.collect();
    if r.include_not_ready {
        return all.into_iter().map(|(d, _)| d).collect();
    }
    let ready: Vec<Discovered> =
        all.iter().filter(|(d, _)| d.condition == Condition::Ready).map(|(d, _)| d.clone()).collect();
    if !ready.is_empty() {
        return ready;
    }
    all.into_iter().filter(|(d, serving)| *serving && d.condition == Condition::Terminating).map(|(d, _)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> SliceView {
        SliceView::from_slice(&serde_json::from_value::<EndpointSlice>(v).unwrap()).unwrap()
    }

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, pod: &str) -> serde_json::Value {
        json!({ "addresses": [ip], "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
                "targetRef": { "kind": "Pod", "name": pod } })
    }

    fn svc_ref(port: PortRef) -> ServiceRef {
        ServiceRef { name: "web".into(), namespace: None, port, include_not_ready: false, pod: None }
    }

    fn addrs(d: &[Discovered]) -> Vec<String> {
        d.iter().map(|d| d.addr.to_string()).collect()
    }

    #[test]
    fn named_target_port_resolves_per_slice() {
        // Service port 80 "http" → targetPort "web", which is 8080 on some pods and 9090 on others.
        let a = slice(json!({ "addressType": "IPv4", "metadata": {},
            "ports": [ { "name": "http", "port": 8080 }, { "name": "admin", "port": 9000 } ],
            "endpoints": [ ep("10.0.0.1", true, true, false, "a-0") ] }));
        let b = slice(json!({ "addressType": "IPv4", "metadata": {},
            "ports": [ { "name": "http", "port": 9090 } ],
            "endpoints": [ ep("10.0.0.2", true, true, false, "b-0") ] }));
        let svc: ServicePorts = vec![("http".into(), 80), ("admin".into(), 9000)];
        let by_number = select([&a, &b], Some(&svc), &svc_ref(PortRef::Number(80)));
        assert_eq!(addrs(&by_number), ["10.0.0.1:8080", "10.0.0.2:9090"]);
        let by_name = select([&a, &b], None, &svc_ref(PortRef::Name("http".into())));
        assert_eq!(by_number, by_name);
        // A number with no Service known yet: only single-port slices can be resolved.
        assert_eq!(addrs(&select([&a, &b], None, &svc_ref(PortRef::Number(80)))), ["10.0.0.2:9090"]);
        // A port the Service does not have: nothing.
        assert!(select([&a, &b], Some(&svc), &svc_ref(PortRef::Number(81))).is_empty());
    }

    #[test]
    fn ready_then_terminating_then_include_not_ready() {
        let s = slice(json!({ "addressType": "IPv4", "metadata": {}, "ports": [ { "port": 8080 } ],
            "endpoints": [ ep("10.0.0.1", true, true, false, "p1"), ep("10.0.0.2", false, true, true, "p2"),
                           ep("10.0.0.3", false, false, false, "p3"), ep("10.0.0.4", false, false, true, "p4") ] }));
        let r = svc_ref(PortRef::Number(8080));
        assert_eq!(addrs(&select([&s], None, &r)), ["10.0.0.1:8080"]);
        // No ready endpoint: fall back to those still serving while they terminate.
        let mut no_ready = s.clone();
        no_ready.endpoints.remove(0);
        let got = select([&no_ready], None, &r);
        assert_eq!(addrs(&got), ["10.0.0.2:8080"]);
        assert_eq!(got[0].condition, Condition::Terminating);
        let all = select([&s], None, &ServiceRef { include_not_ready: true, ..r });
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].condition, Condition::NotReady);
    }

    #[test]
    fn nil_conditions_mean_ready_and_duplicates_merge() {
        let a = slice(json!({ "addressType": "IPv4", "metadata": {}, "ports": [ { "port": 80 } ],
            "endpoints": [ { "addresses": ["10.0.0.1"] }, ep("10.0.0.2", false, false, false, "x") ] }));
        let b = slice(json!({ "addressType": "IPv4", "metadata": {}, "ports": [ { "port": 80 } ],
            "endpoints": [ ep("10.0.0.2", true, true, false, "x") ] }));
        let got = select([&a, &b], None, &svc_ref(PortRef::Number(80)));
        assert_eq!(addrs(&got), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(got.iter().all(|d| d.condition == Condition::Ready));
    }

    #[test]
    fn dual_stack_and_fqdn() {
        let v4 = slice(json!({ "addressType": "IPv4", "metadata": {}, "ports": [ { "name": "http", "port": 80 } ],
            "endpoints": [ ep("10.0.0.1", true, true, false, "p") ] }));
        let v6 = slice(json!({ "addressType": "IPv6", "metadata": {}, "ports": [ { "name": "http", "port": 80 } ],
            "endpoints": [ ep("fd00::1", true, true, false, "p") ] }));
        let fqdn: EndpointSlice = serde_json::from_value(json!({ "addressType": "FQDN", "metadata": {},
            "endpoints": [ { "addresses": ["db.example.com"] } ] }))
        .unwrap();
        assert!(SliceView::from_slice(&fqdn).is_none());
        let got = select([&v4, &v6], None, &svc_ref(PortRef::Name("http".into())));
        assert_eq!(addrs(&got), ["10.0.0.1:80", "[fd00::1]:80"]);
    }

    #[test]
    fn one_pod_by_name_or_hostname() {
        let s = slice(json!({ "addressType": "IPv4", "metadata": {}, "ports": [ { "name": "eureka", "port": 19011 } ],
            "endpoints": [ ep("10.0.0.1", true, true, false, "eureka-0"), ep("10.0.0.2", true, true, false, "eureka-1"),
                           { "addresses": ["10.0.0.3"], "hostname": "eureka-2" } ] }));
        let mut r = svc_ref(PortRef::Name("eureka".into()));
        r.pod = Some("eureka-1".into());
        assert_eq!(addrs(&select([&s], None, &r)), ["10.0.0.2:19011"]);
        r.pod = Some("eureka-2".into());
        assert_eq!(addrs(&select([&s], None, &r)), ["10.0.0.3:19011"]);
        r.pod = Some("eureka-9".into());
        assert!(select([&s], None, &r).is_empty());
    }

    #[test]
    fn core_v1_endpoints() {
        let e: Endpoints = serde_json::from_value(json!({ "metadata": { "name": "mysql-outer" }, "subsets": [
            { "addresses": [ { "ip": "192.0.2.10" } ], "notReadyAddresses": [ { "ip": "192.0.2.11" } ],
              "ports": [ { "port": 3306 } ] } ] }))
        .unwrap();
        let views = SliceView::from_endpoints(&e);
        let r = svc_ref(PortRef::Number(3306));
        assert_eq!(addrs(&select(&views, Some(&vec![(String::new(), 3306)]), &r)), ["192.0.2.10:3306"]);
        let all = select(&views, None, &ServiceRef { include_not_ready: true, ..r });
        assert_eq!(addrs(&all), ["192.0.2.10:3306", "192.0.2.11:3306"]);
    }
}
