//! The watches: EndpointSlices (or core/v1 Endpoints) for the Services routes.yaml names, across
//! namespaces, plus those Services themselves (to map a port number to the port's name).
//!
//! kube-runtime's watcher does the list+watch, resumes from the last resourceVersion, re-lists
//! when it must, and backs off while the API is unreachable. Events go into the [`Catalog`];
//! after each burst (everything already waiting is taken in one go) only the backends whose
//! Service changed are rebuilt and published. Config changes come through here too, so a reload
//! is published with endpoint sets from the same catalog, in one swap.

use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::slice::{service_ports, SliceView};
use super::{services_of, Catalog, Mode, Publish, ServiceKey};
use crate::table::store::Store;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Watch events are boxed: a Service object is large and events are not on the request path.
enum Ev {
    Slice(Box<watcher::Result<Event<EndpointSlice>>>),
    Endpoints(Box<watcher::Result<Event<Endpoints>>>),
    Service(Box<watcher::Result<Event<Service>>>),
}

type Events = Pin<Box<dyn Stream<Item = Ev> + Send>>;

fn streams(client: &Client, mode: Mode, services: &BTreeSet<ServiceKey>, all: bool) -> Events {
    if services.is_empty() && !all {
        return Box::pin(futures_util::stream::pending());
    }
    let svc = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| Ev::Service(Box::new(e)));
    match mode {
        Mode::Endpointslices => {
            let cfg = if all {
                // Every Service's slices (those of a Service; not the mirrored ones of none).
                watcher::Config::default().labels(SERVICE_NAME_LABEL)
            } else {
                let names: BTreeSet<&str> = services.iter().map(|(_, n)| n.as_str()).collect();
                let selector = format!("{SERVICE_NAME_LABEL} in ({})", names.into_iter().collect::<Vec<_>>().join(","));
                watcher::Config::default().labels(&selector)
            };
            let slices = watcher::watcher(Api::<EndpointSlice>::all(client.clone()), cfg)
                .default_backoff()
                .map(|e| Ev::Slice(Box::new(e)));
            Box::pin(futures_util::stream::select(slices, svc))
        }
        Mode::Endpoints => {
            let eps = watcher::watcher(Api::<Endpoints>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .map(|e| Ev::Endpoints(Box::new(e)));
            Box::pin(futures_util::stream::select(eps, svc))
        }
    }
}

/// Applies one watcher event to a listing. `keyed` maps an object to (object key, Service key,
/// value), or `None` when the object is not one ferry follows.
fn apply<K, V>(
    ev: Event<K>,
    listing: &mut super::Listing<V>,
    changed: &mut HashSet<ServiceKey>,
    keyed: &Keyed<K, V>,
    restarts: &prometheus::IntCounter,
) where
    K: ResourceExt,
{
    match ev {
        Event::Init => {
            // The first list is not a restart; every later one follows a dropped watch.
            if listing.synced {
                restarts.inc();
            }
            listing.init();
        }
        Event::InitApply(o) => {
            if let Some((k, s, v)) = keyed(&o) {
                listing.init_apply(k, s, v);
            }
        }
        Event::InitDone => listing.init_done(changed),
        Event::Apply(o) => match keyed(&o) {
            Some((k, s, v)) => listing.apply(k, s, v, changed),
            // No longer one of ours (relabelled): forget it.
            None => listing.delete(&(o.namespace().unwrap_or_default(), o.name_any()), changed),
        },
        Event::Delete(o) => listing.delete(&(o.namespace().unwrap_or_default(), o.name_any()), changed),
    }
}

type Keyed<K, V> = Box<dyn Fn(&K) -> Option<(super::ObjKey, ServiceKey, V)> + Send>;

/// EndpointSlice → (slice key, its Service, its view), if the Service is watched (`None`: every
/// Service is).
fn slice_key(services: Option<&BTreeSet<ServiceKey>>) -> Keyed<EndpointSlice, Vec<SliceView>> {
    let services = services.cloned();
    Box::new(move |s| {
        let svc = (s.namespace()?, s.labels().get(SERVICE_NAME_LABEL)?.clone());
        services
            .as_ref()
            .is_none_or(|set| set.contains(&svc))
            .then(|| ((svc.0.clone(), s.name_any()), svc, SliceView::from_slice(s).into_iter().collect()))
    })
}

/// Endpoints (named after their Service) → views, if the Service is watched.
fn endpoints_key(services: Option<&BTreeSet<ServiceKey>>) -> Keyed<Endpoints, Vec<SliceView>> {
    let services = services.cloned();
    Box::new(move |o| {
        let svc = (o.namespace()?, o.name_any());
        services.as_ref().is_none_or(|set| set.contains(&svc)).then(|| (svc.clone(), svc, SliceView::from_endpoints(o)))
    })
}

/// Service → its ports, if watched.
fn service_key_of(services: Option<&BTreeSet<ServiceKey>>) -> Keyed<Service, super::slice::ServicePorts> {
    let services = services.cloned();
    Box::new(move |o| {
        let svc = (o.namespace()?, o.name_any());
        services.as_ref().is_none_or(|set| set.contains(&svc)).then(|| (svc.clone(), svc, service_ports(o)))
    })
}

/// Runs discovery until the config channel closes, publishing endpoint changes and the configs
/// sent to it (the first one starts the watches; static backends serve while the lists arrive);
/// marks the store synced after the first complete lists. `all`: watch every Service's endpoints
/// (an Ingress controller, whose Services come and go with each Ingress), so a config naming a
/// new Service starts no new list; otherwise only those of the Services the config names.
pub async fn run(client: Client, store: Arc<Store>, mode: Mode, all: bool, mut configs: mpsc::Receiver<Publish>) {
    let ns = client.default_namespace().to_string();
    let Some(first) = configs.recv().await else { return };
    let mut config = Arc::new(first.config);
    store.publish(config.clone(), Default::default());
    let _ = first.done.send(());
    let mut catalog = Catalog::default();
    let metrics = store.metrics.clone();
    let endpoint_restarts = metrics.watch_restarts.with_label_values(&["endpoints"]);
    let service_restarts = metrics.watch_restarts.with_label_values(&["services"]);
    let mut last_error = String::new();
    loop {
        let services = services_of(&config, &ns);
        if services.is_empty() && !all {
            store.set_discovery_synced();
        } else {
            info!(services = services.len(), all, mode = ?mode, namespace = %ns, "watching Kubernetes endpoints");
        }
        let mut events = streams(&client, mode, &services, all);
        let filter = (!all).then_some(&services);
        let (slice_keyed, endpoints_keyed, service_keyed) =
            (slice_key(filter), endpoints_key(filter), service_key_of(filter));
        let restart = loop {
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { break true };
                    let mut changed = HashSet::new();
                    let mut next = Some(ev);
                    // Take the whole burst that is already waiting, then publish once.
                    while let Some(ev) = next {
                        let err = match ev {
                            Ev::Slice(b) => match *b { Ok(e) => { apply(e, &mut catalog.endpoints, &mut changed, &slice_keyed, &endpoint_restarts); None } Err(e) => Some(e) },
                            Ev::Endpoints(b) => match *b { Ok(e) => { apply(e, &mut catalog.endpoints, &mut changed, &endpoints_keyed, &endpoint_restarts); None } Err(e) => Some(e) },
                            Ev::Service(b) => match *b { Ok(e) => { apply(e, &mut catalog.services, &mut changed, &service_keyed, &service_restarts); None } Err(e) => Some(e) },
                        };
                        if let Some(e) = err {
                            metrics.discovery_errors.inc();
                            let text = e.to_string();
                            if text != last_error {
                                warn!(error = %text, "Kubernetes watch failed; serving the last known endpoints and retrying");
                                last_error = text;
                            }
                        } else {
                            store.discovery_event();
                            last_error.clear();
                        }
                        next = events.next().now_or_never().flatten();
                    }
                    if !changed.is_empty() {
                        let updates = catalog.changed_for(&config, &ns, &changed);
                        if !updates.is_empty() {
                            let v = store.update_endpoints(updates);
                            debug!(version = v, services = changed.len(), "published endpoint changes");
                        }
                    }
                    if catalog.synced() {
                        store.set_discovery_synced();
                    }
                }
                new = configs.recv() => {
                    let Some(Publish { config: new, done }) = new else { return };
                    let new_services = services_of(&new, &ns);
                    config = Arc::new(new);
                    store.publish(config.clone(), catalog.all_for(&config, &ns));
                    let _ = done.send(());
                    if new_services != services && !all {
                        catalog.endpoints.retain_services(&new_services);
                        catalog.services.retain_services(&new_services);
                        break false;
                    }
                }
            }
        };
        if restart {
            warn!("Kubernetes watch stream ended; restarting it");
        }
    }
}
