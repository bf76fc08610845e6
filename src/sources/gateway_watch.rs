//! Gateway API, live: kube-runtime reflectors over the Gateway API kinds (as `DynamicObject`s),
//! Services, Secrets and Namespaces, all namespaces, one watch per kind. Two roles share them:
//! - a data plane (`ferry run --gateway NS/NAME`) translates its one Gateway after the first
//!   complete lists and after every burst of changes and sends it to the feed (applied like a
//!   reload: no restart, no dropped connection);
//! - the controller (`ferry gateway-controller`), holding a Lease, writes the status of the
//!   GatewayClasses, Gateways and routes (the same translation, so the status says what the data
//!   planes do), and provisions each Gateway's data plane (sources::provision).
//!
//! A kind the API server does not serve (TLSRoute or TCPRoute CRDs not installed) is treated as
//! empty; a dropped watch re-lists in the background while the last translation keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::gateway::{self, status as gst, Key, Objects, Output, RouteKind, Settings};
use super::provision::{self, Provision};
use super::status::Election;
use super::watch::{tick, Tick};

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "ferry-gateway-controller";

/// The features ferry declares on its GatewayClass (`status.supportedFeatures`): what the
/// conformance suite then tests.
pub const FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
    "TLSRoute",
    "TCPRoute",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteQueryParamMatching",
    "HTTPRoutePathRedirect",
    "HTTPRoutePortRedirect",
    "HTTPRouteSchemeRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRequestTimeout",
];

type Ticks = futures_util::stream::BoxStream<'static, Tick>;

fn follow_typed<K>(client: &Client, which: usize) -> (Store<K>, Ticks)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    (store, super::watch::follow(client, writer, which))
}

fn follow_dynamic(client: &Client, ar: &ApiResource, which: usize) -> (Store<DynamicObject>, Ticks) {
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), ar);
    let s = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(move |r| tick(which, r))
        .boxed();
    (store, s)
}

/// Does the API server serve this kind? (A CRD not installed answers 404.)
async fn served(client: &Client, ar: &ApiResource) -> bool {
    let api = Api::<DynamicObject>::all_with(client.clone(), ar);
    !matches!(api.list(&ListParams::default().limit(1)).await, Err(kube::Error::Api(s)) if s.code == 404)
}

const KINDS: [&str; 6] = ["GatewayClass", "Gateway", "HTTPRoute", "TLSRoute", "TCPRoute", "ReferenceGrant"];

/// The stores of every kind a translation reads.
struct Stores {
    dynamic: Vec<Option<Store<DynamicObject>>>,
    services: Store<Service>,
    secrets: Store<Secret>,
    namespaces: Store<Namespace>,
}

impl Stores {
    fn list(&self, i: usize) -> Vec<DynamicObject> {
        self.dynamic[i].as_ref().map(|s| s.state().iter().map(|o| (**o).clone()).collect()).unwrap_or_default()
    }

    fn snapshot(&self) -> Objects {
        let key = |ns: Option<String>, n: String| (ns.unwrap_or_default(), n);
        Objects {
            classes: self.list(0),
            gateways: self.list(1),
            http_routes: self.list(2),
            tls_routes: self.list(3),
            tcp_routes: self.list(4),
            grants: self.list(5),
            services: self.services.state().iter().map(|o| (key(o.namespace(), o.name_any()), (**o).clone())).collect(),
            secrets: self.secrets.state().iter().map(|o| (key(o.namespace(), o.name_any()), (**o).clone())).collect(),
            namespaces: self.namespaces.state().iter().map(|o| (o.name_any(), (**o).clone())).collect(),
        }
    }
}

/// The controller's part.
#[derive(Debug, Clone)]
pub struct Controller {
    pub provision: Provision,
    pub election: Election,
}

/// What to follow the cluster for.
#[derive(Debug, Clone)]
pub struct GatewayWatch {
    pub settings: Settings,
    /// Serve this Gateway (a data plane).
    pub serve: Option<Key>,
    /// Write status and provision data planes (the controller).
    pub controller: Option<Controller>,
}

impl GatewayWatch {
    /// Follows the cluster until `tx` closes (or forever without one).
    pub async fn run(self, client: Client, tx: Option<mpsc::Sender<Output>>) {
        let mut streams = Vec::new();
        let mut dynamic = Vec::new();
        let mut synced = vec![false; KINDS.len() + 3];
        for (i, kind) in KINDS.iter().enumerate() {
            let ar = gateway::api_resource(kind);
            if served(&client, &ar).await {
                let (store, s) = follow_dynamic(&client, &ar, i);
                dynamic.push(Some(store));
                streams.push(s);
            } else {
                info!(kind, "not served by this API server (CRD not installed); treated as empty");
                dynamic.push(None);
                synced[i] = true;
            }
        }
        let n = KINDS.len();
        let (services, s) = follow_typed::<Service>(&client, n);
        streams.push(s);
        let (secrets, s) = follow_typed::<Secret>(&client, n + 1);
        streams.push(s);
        let (namespaces, s) = follow_typed::<Namespace>(&client, n + 2);
        streams.push(s);
        let stores = Stores { dynamic, services, secrets, namespaces };
        let mut events = futures_util::stream::select_all(streams);
        let mut last_error = String::new();
        let renew = self.controller.as_ref().map_or(Duration::from_secs(3600), |c| c.election.duration / 3);
        let mut renewals = tokio::time::interval(renew.max(Duration::from_millis(100)));
        let mut leader = false;
        let mut dirty = false;
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
                    dirty = true;
                    if let (Some(key), Some(tx)) = (&self.serve, &tx) {
                        let objects = stores.snapshot();
                        let out = serve_one(&objects, &self.settings, key);
                        debug!(routes = out.routes.len(), problems = out.problems.len(), "translated the Gateway");
                        if tx.send(out).await.is_err() {
                            return;
                        }
                    }
                }
                _ = renewals.tick() => {
                    let Some(c) = &self.controller else { continue };
                    match super::status::hold(&client, &c.election).await {
                        Ok(now) => {
                            if now != leader {
                                info!(lease = %c.election.name, leader = now, "Gateway controller");
                                dirty = true;
                            }
                            leader = now;
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot renew the Lease; not writing Gateway status");
                            leader = false;
                        }
                    }
                }
            }
            if let Some(c) = &self.controller {
                if leader && dirty && synced.iter().all(|s| *s) {
                    dirty = false;
                    let objects = stores.snapshot();
                    if let Err(e) = reconcile(&client, &self.settings, c, &objects).await {
                        warn!(error = %e, "Gateway reconcile failed; retrying at the next change or renewal");
                        dirty = true;
                    }
                }
            }
        }
    }
}

/// A data plane's translation: its Gateway if it is ferry's, else nothing served.
pub fn serve_one(objects: &Objects, s: &Settings, key: &Key) -> Output {
    let gws = gateway::our_gateways(objects, s);
    match gws.iter().find(|g| gateway::key_of(g) == *key) {
        Some(g) => gateway::translate(objects, s, g),
        None => {
            let mut out = Output { gateway: key.clone(), ..Output::default() };
            out.parsed = crate::config::Config::parse(
                "<gateway>",
                &out.document(serde_json::Map::from_iter([("admin".to_string(), json!("127.0.0.1:9"))])).to_string(),
            )
            .ok();
            out
        }
    }
}

/// The Service type a GatewayClass asks for: its parametersRef ConfigMap's `serviceType`, else
/// NodePort (the clusters ferry is made for have no load balancer).
async fn service_type(client: &Client, class: Option<&DynamicObject>) -> String {
    let p = class.and_then(|c| c.data.pointer("/spec/parametersRef"));
    if let Some(p) = p {
        if p["kind"] == "ConfigMap" && p.get("group").and_then(Value::as_str).unwrap_or("").is_empty() {
            let (ns, name) = (p["namespace"].as_str().unwrap_or("default"), p["name"].as_str().unwrap_or_default());
            if let Ok(Some(cm)) = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await {
                if let Some(t) = cm.data.as_ref().and_then(|d| d.get("serviceType")) {
                    return t.clone();
                }
            }
        }
    }
    "NodePort".into()
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Writes status everywhere it changed and provisions every Gateway's data plane.
pub async fn reconcile(client: &Client, s: &Settings, c: &Controller, objects: &Objects) -> Result<(), kube::Error> {
    // GatewayClasses.
    let classes = Api::<DynamicObject>::all_with(client.clone(), &gateway::api_resource("GatewayClass"));
    for class in objects.classes.iter().filter(|c| gateway::class_is_ours(c, s)) {
        let old = class.data.get("status");
        let new = gst::gateway_class(old, class.metadata.generation.unwrap_or(0), FEATURES);
        if old.is_none_or(|o| !same_status(o, &new)) {
            let patch = json!({ "status": new });
            classes.patch_status(&class.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    // Gateways: translate, provision, status.
    let mut routes: BTreeMap<(RouteKind, Key), (i64, Vec<gateway::ParentStatus>)> = BTreeMap::new();
    let mut namespaces = BTreeSet::new();
    for gw in gateway::our_gateways(objects, s) {
        let out = gateway::translate(objects, s, gw);
        let (ns, name) = gateway::key_of(gw);
        namespaces.insert(ns.clone());
        for r in &out.routes {
            let e = routes.entry((r.kind, r.key.clone())).or_insert((r.generation, Vec::new()));
            e.1.extend(r.parents.iter().cloned());
        }
        let class_name = gw.data.pointer("/spec/gatewayClassName").and_then(Value::as_str).unwrap_or_default();
        let class = objects.classes.iter().find(|c| c.metadata.name.as_deref() == Some(class_name));
        let type_ = service_type(client, class).await;
        let pp = apply_params();
        let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
        sas.patch(provision::DATA_PLANE_ACCOUNT, &pp, &Patch::Apply(provision::service_account(&ns))).await?;
        let deploys = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns);
        let dname = provision::name(&name);
        deploys.patch(&dname, &pp, &Patch::Apply(provision::deployment(&c.provision, gw, &out.ports))).await?;
        let svcs = Api::<Service>::namespaced(client.clone(), &ns);
        let addresses = match provision::service(gw, &out.ports, &type_) {
            Some(svc) => provision::addresses(&svcs.patch(&dname, &pp, &Patch::Apply(svc)).await?),
            None => Vec::new(),
        };
        let old = gw.data.get("status");
        let new = gst::gateway(&out.status, &addresses, old);
        if old.is_none_or(|o| !same_status(o, &new)) {
            let gws = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &gateway::api_resource("Gateway"));
            gws.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({ "status": new }))).await?;
        }
    }
    if !namespaces.is_empty() {
        let crbs = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone());
        let ns: Vec<String> = namespaces.into_iter().collect();
        crbs.patch(provision::DATA_PLANE_ACCOUNT, &apply_params(), &Patch::Apply(provision::binding(&ns))).await?;
    }
    // Routes: ours replaced, others' kept; a route no Gateway of ours takes any more loses ours.
    for (kind, list) in [
        (RouteKind::Http, &objects.http_routes),
        (RouteKind::Tls, &objects.tls_routes),
        (RouteKind::Tcp, &objects.tcp_routes),
    ] {
        let ar = gateway::api_resource(kind.kind());
        for o in list {
            let key = gateway::key_of(o);
            let old = o.data.get("status");
            let had = old
                .and_then(|o| o.get("parents"))
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["controllerName"] == s.controller.as_str()));
            let (generation, mine) =
                routes.remove(&(kind, key.clone())).unwrap_or((o.metadata.generation.unwrap_or(0), Vec::new()));
            if mine.is_empty() && !had {
                continue;
            }
            let new = gst::route_parents(&s.controller, &mine, generation, old);
            if old.is_none_or(|o| !same_status(o, &new)) {
                let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.0, &ar);
                api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&json!({ "status": new }))).await?;
            }
        }
    }
    Ok(())
}

/// Two statuses that differ at most in condition times.
fn same_status(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(a) == strip(b)
}
