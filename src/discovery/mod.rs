//! Kubernetes discovery: what the cluster says about the Services routes.yaml names.
//!
//! `slice` converts EndpointSlices (or core/v1 Endpoints) into endpoint sets, purely. `kube` runs
//! the watches and publishes into the store. In between sits the [`Catalog`]: the last complete
//! picture of every watched object, indexed by Service. Like kube-runtime's reflector it buffers a
//! re-list (after a dropped watch) and swaps it in only when the list is complete, so a re-list
//! never publishes a half or empty set; while the API is unreachable the catalog (and the table)
//! simply stay as they were.

pub mod kube;
pub mod slice;

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::config::{Config, ServiceRef};
use crate::table::Discovered;
use slice::{ServicePorts, SliceView};

/// (namespace, name) of a Service.
pub type ServiceKey = (String, String);

/// (namespace, name) of a watched object.
pub type ObjKey = (String, String);

/// How endpoints are read: `discovery.k8s.io/v1` EndpointSlices, or core/v1 Endpoints for
/// clusters older than 1.21.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Endpointslices,
    Endpoints,
}

/// A config for discovery to publish with the endpoint sets it knows; `done` is answered once the
/// table built from it is live.
pub struct Publish {
    pub config: Config,
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// The Service a backend follows, with its namespace resolved.
pub fn service_key(r: &ServiceRef, default_ns: &str) -> ServiceKey {
    (r.namespace.clone().unwrap_or_else(|| default_ns.to_string()), r.name.clone())
}

/// Every Service the config names.
pub fn services_of(config: &Config, default_ns: &str) -> BTreeSet<ServiceKey> {
    config.backends.iter().filter_map(|b| b.service.as_ref()).map(|r| service_key(r, default_ns)).collect()
}

/// One kind of watched object, by object key, indexed by the Service it belongs to.
#[derive(Debug)]
pub struct Listing<V> {
    current: HashMap<ObjKey, (ServiceKey, V)>,
    by_service: HashMap<ServiceKey, HashSet<ObjKey>>,
    /// A re-list in progress: filled by InitApply, swapped in at InitDone.
    pending: Option<HashMap<ObjKey, (ServiceKey, V)>>,
    /// True once the first complete list has arrived.
    pub synced: bool,
}

impl<V> Default for Listing<V> {
    fn default() -> Self {
        Listing { current: HashMap::new(), by_service: HashMap::new(), pending: None, synced: false }
    }
}

impl<V> Listing<V> {
    pub fn init(&mut self) {
        self.pending = Some(HashMap::new());
    }

    pub fn init_apply(&mut self, key: ObjKey, svc: ServiceKey, v: V) {
        self.pending.get_or_insert_with(HashMap::new).insert(key, (svc, v));
    }

    /// Swaps the completed list in. Returns every Service whose objects may have changed.
    pub fn init_done(&mut self, changed: &mut HashSet<ServiceKey>) {
        let Some(new) = self.pending.take() else { return };
        changed.extend(self.by_service.keys().cloned());
        self.by_service.clear();
        for (k, (svc, _)) in &new {
            self.by_service.entry(svc.clone()).or_default().insert(k.clone());
            changed.insert(svc.clone());
        }
        self.current = new;
        self.synced = true;
    }

    pub fn apply(&mut self, key: ObjKey, svc: ServiceKey, v: V, changed: &mut HashSet<ServiceKey>) {
        if let Some((old_svc, _)) = self.current.get(&key) {
            if *old_svc != svc {
                let old_svc = old_svc.clone();
                self.unindex(&key, &old_svc);
                changed.insert(old_svc);
            }
        }
        self.by_service.entry(svc.clone()).or_default().insert(key.clone());
        changed.insert(svc.clone());
        self.current.insert(key, (svc, v));
    }

    pub fn delete(&mut self, key: &ObjKey, changed: &mut HashSet<ServiceKey>) {
        if let Some((svc, _)) = self.current.remove(key) {
            self.unindex(key, &svc);
            changed.insert(svc);
        }
    }

    fn unindex(&mut self, key: &ObjKey, svc: &ServiceKey) {
        if let Some(set) = self.by_service.get_mut(svc) {
            set.remove(key);
            if set.is_empty() {
                self.by_service.remove(svc);
            }
        }
    }

    /// The objects of one Service.
    pub fn of(&self, svc: &ServiceKey) -> impl Iterator<Item = &V> {
        self.by_service.get(svc).into_iter().flatten().filter_map(|k| self.current.get(k).map(|(_, v)| v))
    }

    /// Keeps only the objects of `keep` (after the watched set shrank).
    pub fn retain_services(&mut self, keep: &BTreeSet<ServiceKey>) {
        self.current.retain(|_, (svc, _)| keep.contains(svc));
        self.by_service.retain(|svc, _| keep.contains(svc));
    }
}

/// The last complete picture of the watched Services' endpoints and ports.
#[derive(Debug, Default)]
pub struct Catalog {
    /// EndpointSlices (one view each) or Endpoints (one view per subset).
    pub endpoints: Listing<Vec<SliceView>>,
    pub services: Listing<ServicePorts>,
}

impl Catalog {
    pub fn synced(&self) -> bool {
        self.endpoints.synced && self.services.synced
    }

    /// The endpoints a backend following `r` routes to now.
    pub fn select(&self, r: &ServiceRef, default_ns: &str) -> Vec<Discovered> {
        let key = service_key(r, default_ns);
        let ports = self.services.of(&key).next();
        slice::select(self.endpoints.of(&key).flatten(), ports, r)
    }

    /// Endpoint sets for every Service backend of `config` (backend name → endpoints).
    pub fn all_for(&self, config: &Config, default_ns: &str) -> HashMap<String, Vec<Discovered>> {
        config
            .backends
            .iter()
            .filter_map(|b| Some((b.name.clone(), self.select(b.service.as_ref()?, default_ns))))
            .collect()
    }

    /// Endpoint sets for the backends whose Service is in `changed`.
    pub fn changed_for(
        &self,
        config: &Config,
        default_ns: &str,
        changed: &HashSet<ServiceKey>,
    ) -> Vec<(String, Vec<Discovered>)> {
        config
            .backends
            .iter()
            .filter_map(|b| {
                let r = b.service.as_ref()?;
                changed.contains(&service_key(r, default_ns)).then(|| (b.name.clone(), self.select(r, default_ns)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRef;
    use slice::EndpointView;

    fn view(ips: &[&str]) -> Vec<SliceView> {
        vec![SliceView {
            ports: vec![(String::new(), 80)],
            endpoints: ips
                .iter()
                .map(|ip| EndpointView {
                    ip: ip.parse().unwrap(),
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: None,
                    hostname: None,
                })
                .collect(),
        }]
    }

    fn key(n: &str) -> ObjKey {
        ("ns".into(), n.into())
    }

    fn r() -> ServiceRef {
        ServiceRef {
            name: "web".into(),
            namespace: Some("ns".into()),
            port: PortRef::Number(80),
            include_not_ready: false,
            pod: None,
        }
    }

    fn ips(c: &Catalog) -> Vec<String> {
        c.select(&r(), "default").iter().map(|d| d.addr.ip().to_string()).collect()
    }

    #[test]
    fn a_relist_is_invisible_until_complete() {
        let mut c = Catalog::default();
        let web = key("web");
        let mut changed = HashSet::new();
        c.endpoints.init();
        c.endpoints.init_apply(key("web-a"), web.clone(), view(&["10.0.0.1"]));
        assert!(ips(&c).is_empty(), "nothing before InitDone");
        c.endpoints.init_done(&mut changed);
        c.endpoints.init();
        c.endpoints.init_apply(key("web-b"), web.clone(), view(&["10.0.0.2"]));
        c.endpoints.init_done(&mut changed);
        assert!(changed.contains(&web));
        assert_eq!(ips(&c), ["10.0.0.2"]);
        assert!(c.endpoints.synced);

        // The watch drops; a re-list starts. Until it completes, the old picture stays whole.
        c.endpoints.init();
        assert_eq!(ips(&c), ["10.0.0.2"]);
        c.endpoints.init_apply(key("web-c"), web.clone(), view(&["10.0.0.3"]));
        assert_eq!(ips(&c), ["10.0.0.2"], "half a re-list is never visible");
        let mut changed = HashSet::new();
        c.endpoints.init_done(&mut changed);
        // web-b was deleted while the watch was down: the re-list brings no stale endpoint.
        assert_eq!(ips(&c), ["10.0.0.3"]);
        assert!(changed.contains(&web));
    }

    #[test]
    fn applies_and_deletes_track_services() {
        let mut c = Catalog::default();
        let mut changed = HashSet::new();
        c.endpoints.apply(key("web-a"), key("web"), view(&["10.0.0.1"]), &mut changed);
        c.endpoints.apply(key("web-b"), key("web"), view(&["10.0.0.2"]), &mut changed);
        assert_eq!(ips(&c), ["10.0.0.1", "10.0.0.2"]);
        c.endpoints.delete(&key("web-a"), &mut changed);
        assert_eq!(ips(&c), ["10.0.0.2"]);
        // A slice that moves to another service leaves the first.
        let mut changed = HashSet::new();
        c.endpoints.apply(key("web-b"), key("api"), view(&["10.0.0.2"]), &mut changed);
        assert!(ips(&c).is_empty());
        assert!(changed.contains(&key("web")) && changed.contains(&key("api")));
    }
}
