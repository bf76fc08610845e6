//! The live source: kube-runtime reflectors over Ingress, IngressClass, Service and Secret (all
//! namespaces). After the first complete list of all four, and then after every burst of changes
//! (everything already waiting is taken in one go), the objects are translated again and the result
//! sent on; problems become Kubernetes Events on their Ingress (each said once). A dropped watch
//! re-lists in the background while the last translation keeps serving.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::ingress::{self, Objects, Output, Settings};
use super::status::{self, StatusConfig};
use super::Severity;

/// Which reflector an event came from, and whether it completed a (re-)list.
pub(super) struct Tick {
    pub(super) which: usize,
    pub(super) init_done: bool,
    pub(super) error: Option<String>,
}

pub(super) fn tick<K>(which: usize, r: Result<Event<K>, watcher::Error>) -> Tick {
    match r {
        Ok(Event::InitDone) => Tick { which, init_done: true, error: None },
        Ok(_) => Tick { which, init_done: false, error: None },
        Err(e) => Tick { which, init_done: false, error: Some(e.to_string()) },
    }
}

/// A reflector over every object of kind `K`, its events as [`Tick`]s of stream `which`.
pub(super) fn follow<K>(
    client: &Client,
    writer: reflector::store::Writer<K>,
    which: usize,
) -> futures_util::stream::BoxStream<'static, Tick>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflector::reflector(writer, watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .map(move |r| tick(which, r))
        .boxed()
}

/// The stored Ingress (namespace, name), found by key.
fn stored(ings: &Store<Ingress>, ns: &str, name: &str) -> Option<std::sync::Arc<Ingress>> {
    ings.get(&reflector::ObjectRef::new(name).within(ns))
}

fn snapshot(
    ings: &Store<Ingress>,
    classes: &Store<IngressClass>,
    svcs: &Store<Service>,
    secrets: &Store<Secret>,
) -> Objects {
    let key = |ns: Option<String>, n: String| (ns.unwrap_or_default(), n);
    Objects {
        ingresses: ings.state().iter().map(|o| (**o).clone()).collect(),
        classes: classes.state().iter().map(|o| (**o).clone()).collect(),
        services: svcs.state().iter().map(|o| (key(o.namespace(), o.name_any()), (**o).clone())).collect(),
        secrets: secrets.state().iter().map(|o| (key(o.namespace(), o.name_any()), (**o).clone())).collect(),
    }
}

/// The live source's settings.
#[derive(Debug, Clone)]
pub struct Watch {
    pub settings: Settings,
    /// The Events' reporting controller (`None`: no Events).
    pub reporter: Option<String>,
    /// Status write-back (`None`: none).
    pub status: Option<StatusConfig>,
}

impl Watch {
    /// Follows the cluster until `tx` closes, sending a translation after the first complete lists
    /// and after every change; writes Events and, holding the Lease, status.
    pub async fn run(self, client: Client, tx: mpsc::Sender<Output>) {
        let (ings, w0) = reflector::store::<Ingress>();
        let (classes, w1) = reflector::store::<IngressClass>();
        let (svcs, w2) = reflector::store::<Service>();
        let (secrets, w3) = reflector::store::<Secret>();
        let streams =
            vec![follow(&client, w0, 0), follow(&client, w1, 1), follow(&client, w2, 2), follow(&client, w3, 3)];
        let mut events = futures_util::stream::select_all(streams);
        let recorder =
            self.reporter.clone().map(|r| Recorder::new(client.clone(), Reporter { controller: r, instance: None }));
        let mut said: HashSet<(String, String, String)> = HashSet::new();
        let mut synced = [false; 4];
        let mut last_error = String::new();
        let renew = self.status.as_ref().map_or(Duration::from_secs(3600), |s| s.election.duration / 3);
        let mut renewals = tokio::time::interval(renew.max(Duration::from_millis(100)));
        let mut leader = false;
        let mut accepted: Vec<super::ingress::Key> = Vec::new();
        loop {
            tokio::select! {
                t = events.next() => {
                    let Some(t) = t else { return };
                    let mut next = Some(t);
                    let mut changed = false;
                    while let Some(t) = next {
                        synced[t.which] |= t.init_done;
                        match t.error {
                            Some(e) if e != last_error => {
                                warn!(error = %e, "Kubernetes watch failed; serving the last translation and retrying");
                                last_error = e;
                            }
                            Some(_) => {}
                            None => changed = true,
                        }
                        next = events.next().now_or_never().flatten();
                    }
                    if !changed || !synced.iter().all(|s| *s) {
                        continue;
                    }
                    let objects = snapshot(&ings, &classes, &svcs, &secrets);
                    let out = ingress::translate(&objects, &self.settings);
                    debug!(ingresses = out.accepted.len(), problems = out.problems.len(), "translated Ingresses");
                    if let Some(rec) = &recorder {
                        publish_events(rec, &ings, &out, &mut said).await;
                    }
                    accepted.clone_from(&out.accepted);
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
                _ = renewals.tick() => {
                    let Some(st) = &self.status else { continue };
                    match status::hold(&client, &st.election).await {
                        Ok(now) => {
                            if now != leader {
                                info!(lease = %st.election.name, leader = now, "Ingress status writer");
                            }
                            leader = now;
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot renew the Lease; not writing Ingress status");
                            leader = false;
                        }
                    }
                }
            }
            if leader && synced.iter().all(|s| *s) {
                if let Some(st) = &self.status {
                    self.write_status(&client, st, &ings, &accepted).await;
                }
            }
        }
    }

    async fn write_status(
        &self,
        client: &Client,
        st: &StatusConfig,
        ings: &Store<Ingress>,
        accepted: &[super::ingress::Key],
    ) {
        let Some(addrs) = status::addresses(client, &st.publish).await else { return };
        let mine: Vec<Ingress> =
            accepted.iter().filter_map(|(ns, n)| stored(ings, ns, n)).map(|i| (*i).clone()).collect();
        match status::write(client, &mine, &addrs).await {
            Ok(0) => {}
            Ok(n) => debug!(ingresses = n, "wrote Ingress status"),
            Err(e) => warn!(error = %e, "cannot write Ingress status"),
        }
    }
}

/// Each problem of an Ingress as one Event on it (once per object, field and message).
async fn publish_events(
    rec: &Recorder,
    ings: &Store<Ingress>,
    out: &Output,
    said: &mut HashSet<(String, String, String)>,
) {
    for p in &out.problems {
        let Some(ing) = stored(ings, &p.object.namespace, &p.object.name) else { continue };
        let uid = ing.uid().unwrap_or_default();
        if !said.insert((uid, p.field.clone(), p.message.clone())) {
            continue;
        }
        let reference: ObjectReference = ing.object_ref(&());
        let ev = KubeEvent {
            // Both kinds are warnings to the object's owner; the reason tells them apart.
            type_: EventType::Warning,
            reason: match p.severity {
                Severity::Error => "Rejected".into(),
                Severity::Warning => "Ignored".into(),
            },
            note: Some(truncate(&format!("{}: {}", p.field, p.message))),
            action: "Translate".into(),
            secondary: None,
        };
        if let Err(e) = rec.publish(&ev, &reference).await {
            debug!(error = %e, "cannot publish an Event");
        }
    }
}

/// An Event's note is at most 1 KiB.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(1024);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
