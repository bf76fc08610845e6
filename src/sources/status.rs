//! Status write-back for accepted Ingresses, by one replica: `status.loadBalancer.ingress` from
//! ferry's own Service (`--publish-service`, as ingress-nginx's flag of that name: its LoadBalancer
//! ingress if it has one, else the addresses of the nodes — ExternalIP, else InternalIP — for a
//! NodePort Service) or from addresses given outright (`--publish-status-address`). Only the
//! holder of a coordination.k8s.io Lease writes, so two replicas never fight over a field; the
//! Lease is taken when its holder stopped renewing it for its duration (client-go's leader election,
//! which kube-runtime does not provide, in its simplest form: get, then create or replace under
//! the object's resourceVersion, so a lost race is a conflict and not a second leader).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::ingress::Key;

/// Where the status addresses come from.
#[derive(Debug, Clone)]
pub enum Publish {
    /// (namespace, name) of ferry's Service.
    Service(Key),
    /// IPs or host names, written as they are.
    Addresses(Vec<String>),
}

/// The Lease that elects the one replica writing status.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub publish: Publish,
    pub election: Election,
}

/// The addresses to write, or `None` when they cannot be known now (keep what is written).
pub async fn addresses(client: &Client, p: &Publish) -> Option<Vec<IngressLoadBalancerIngress>> {
    let ip_or_host = |a: &str| {
        if a.parse::<std::net::IpAddr>().is_ok() {
            IngressLoadBalancerIngress { ip: Some(a.to_string()), ..Default::default() }
        } else {
            IngressLoadBalancerIngress { hostname: Some(a.to_string()), ..Default::default() }
        }
    };
    match p {
        Publish::Addresses(list) => Some(list.iter().map(|a| ip_or_host(a)).collect()),
        Publish::Service((ns, name)) => {
            let svc = Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
            let lb: Vec<IngressLoadBalancerIngress> = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .unwrap_or_default()
                .into_iter()
                .map(|i| IngressLoadBalancerIngress { ip: i.ip, hostname: i.hostname, ..Default::default() })
                .collect();
            if !lb.is_empty() {
                return Some(lb);
            }
            let spec = svc.spec.unwrap_or_default();
            if let Some(ext) = spec.external_ips.filter(|e| !e.is_empty()) {
                return Some(ext.iter().map(|a| ip_or_host(a)).collect());
            }
            if spec.type_.as_deref() == Some("NodePort") || spec.type_.as_deref() == Some("LoadBalancer") {
                let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.ok()?;
                let mut out: Vec<String> = nodes
                    .items
                    .iter()
                    .filter_map(|n| {
                        let addrs = n.status.as_ref()?.addresses.as_ref()?;
                        let pick = |t: &str| addrs.iter().find(|a| a.type_ == t).map(|a| a.address.clone());
                        pick("ExternalIP").or_else(|| pick("InternalIP"))
                    })
                    .collect();
                out.sort();
                out.dedup();
                return Some(out.iter().map(|a| ip_or_host(a)).collect());
            }
            spec.cluster_ip.filter(|ip| ip != "None").map(|ip| vec![ip_or_host(&ip)])
        }
    }
}

/// Writes `addrs` into each Ingress's status where it differs.
pub async fn write(
    client: &Client,
    ingresses: &[Ingress],
    addrs: &[IngressLoadBalancerIngress],
) -> Result<usize, kube::Error> {
    let mut written = 0;
    for i in ingresses {
        let have = i
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        if have == addrs {
            continue;
        }
        let (Some(ns), Some(name)) = (&i.metadata.namespace, &i.metadata.name) else { continue };
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": addrs}}});
        Api::<Ingress>::namespaced(client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        written += 1;
    }
    Ok(written)
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Takes or renews the Lease: true while this replica holds it.
pub async fn hold(client: &Client, e: &Election) -> Result<bool, kube::Error> {
    let api = Api::<Lease>::namespaced(client.clone(), &e.namespace);
    let secs = e.duration.as_secs().max(1) as i32;
    let mine = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(e.identity.clone()),
        lease_duration_seconds: Some(secs),
        acquire_time: acquired.or_else(|| Some(now())),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(lease) = api.get_opt(&e.name).await? else {
        let l = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..Default::default()
            },
            spec: Some(mine(0, None)),
        };
        return match api.create(&PostParams::default(), &l).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(r), Some(d)) => jiff::Timestamp::now().duration_since(r.0) > jiff::SignedDuration::from_secs(d.into()),
        _ => true,
    };
    if holder != e.identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != e.identity);
    let acquired = if holder == e.identity { spec.acquire_time.clone() } else { None };
    let mut next = lease;
    next.spec = Some(mine(transitions, acquired));
    match api.replace(&e.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
