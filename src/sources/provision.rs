//! A Gateway's own data plane, as the conformant implementations give each Gateway: a Deployment
//! of ferry serving exactly that Gateway (`ferry run --gateway NS/NAME`) and a Service exposing its
//! listener ports (NodePort unless the GatewayClass's parameters say otherwise). Both are owned by
//! the Gateway, so the garbage collector removes them with it. The pods read the cluster with the
//! ServiceAccount `ferry-gateway` of their namespace, bound to the ClusterRole of the same name by
//! one ClusterRoleBinding the controller keeps (deploy/gateway/).

use serde_json::{json, Value};

/// The ServiceAccount, ClusterRole and ClusterRoleBinding name of the data planes.
pub const DATA_PLANE_ACCOUNT: &str = "ferry-gateway";
/// The label naming a pod's Gateway (the spec's own label for it).
pub const GATEWAY_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The admin port of the data plane pods (probes, metrics).
pub const ADMIN_PORT: u16 = 9901;

/// How data planes are made.
#[derive(Debug, Clone)]
pub struct Provision {
    /// The ferry image the data planes run.
    pub image: String,
    pub image_pull_policy: String,
    pub replicas: i32,
}

/// The name of a Gateway's Deployment and Service: `NAME-ferry`, within the 63 characters a
/// Service name may have.
pub fn name(gateway: &str) -> String {
    let mut n = format!("{gateway}-ferry");
    if n.len() > 63 {
        let h = xxhash_rust::xxh3::xxh3_64(gateway.as_bytes());
        n = format!("{}-{:08x}-ferry", &gateway[..44.min(gateway.len())].trim_end_matches('-'), h as u32);
    }
    n
}

fn owner(gw: &kube::api::DynamicObject) -> Value {
    json!([{
        "apiVersion": format!("{}/v1", super::gateway::GROUP),
        "kind": "Gateway",
        "name": gw.metadata.name,
        "uid": gw.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

fn labels(gateway: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "ferry-gateway",
        "app.kubernetes.io/managed-by": "ferry-gateway-controller",
        GATEWAY_LABEL: gateway,
    })
}

/// The Deployment serving `gw` on `ports`.
pub fn deployment(p: &Provision, gw: &kube::api::DynamicObject, ports: &[u16]) -> Value {
    let gname = gw.metadata.name.clone().unwrap_or_default();
    let ns = gw.metadata.namespace.clone().unwrap_or_default();
    let container_ports: Vec<Value> = ports
        .iter()
        .map(|port| json!({"name": format!("p{port}"), "containerPort": port, "protocol": "TCP"}))
        .chain([json!({"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"})])
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name(&gname), "namespace": ns, "labels": labels(&gname), "ownerReferences": owner(gw) },
        "spec": {
            "replicas": p.replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": "ferry-gateway", GATEWAY_LABEL: gname } },
            "template": {
                "metadata": { "labels": labels(&gname) },
                "spec": {
                    "serviceAccountName": DATA_PLANE_ACCOUNT,
                    // Listener ports below 1024 without a capability: a namespaced sysctl of the
                    // pod's own network namespace, in Kubernetes' safe set.
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "sysctls": [ { "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" } ],
                    },
                    "terminationGracePeriodSeconds": 40,
                    "containers": [{
                        "name": "ferry",
                        "image": p.image,
                        "imagePullPolicy": p.image_pull_policy,
                        "args": ["run", "--gateway", format!("{ns}/{gname}"), "--admin", format!("0.0.0.0:{ADMIN_PORT}"),
                                 "--secrets-dir", "/var/run/ferry/secrets"],
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                        ],
                        "ports": container_ports,
                        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "admin" }, "periodSeconds": 2, "failureThreshold": 1 },
                        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "admin" }, "periodSeconds": 10, "failureThreshold": 3 },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [ { "name": "secrets", "mountPath": "/var/run/ferry/secrets" } ],
                    }],
                    "volumes": [ { "name": "secrets", "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } } ],
                },
            },
        },
    })
}

/// The Service in front of `gw`'s pods, of `type_` (NodePort, LoadBalancer, ClusterIP); `None`
/// when the Gateway has no port to serve.
pub fn service(gw: &kube::api::DynamicObject, ports: &[u16], type_: &str) -> Option<Value> {
    if ports.is_empty() {
        return None;
    }
    let gname = gw.metadata.name.clone().unwrap_or_default();
    let ports: Vec<Value> = ports
        .iter()
        .map(|port| json!({"name": format!("p{port}"), "port": port, "targetPort": port, "protocol": "TCP"}))
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name(&gname),
            "namespace": gw.metadata.namespace,
            "labels": labels(&gname),
            "ownerReferences": owner(gw),
        },
        "spec": {
            "type": type_,
            "selector": { "app.kubernetes.io/name": "ferry-gateway", GATEWAY_LABEL: gname },
            "ports": ports,
        },
    }))
}

/// The ServiceAccount the data planes of a namespace run as.
pub fn service_account(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": DATA_PLANE_ACCOUNT, "namespace": ns,
                      "labels": { "app.kubernetes.io/managed-by": "ferry-gateway-controller" } },
    })
}

/// The one ClusterRoleBinding that lets every namespace's data plane account read what a Gateway
/// needs (the ClusterRole `ferry-gateway`, from deploy/gateway/).
pub fn binding(namespaces: &[String]) -> Value {
    let subjects: Vec<Value> = namespaces
        .iter()
        .map(|ns| json!({"kind": "ServiceAccount", "name": DATA_PLANE_ACCOUNT, "namespace": ns}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": DATA_PLANE_ACCOUNT,
                      "labels": { "app.kubernetes.io/managed-by": "ferry-gateway-controller" } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": DATA_PLANE_ACCOUNT },
        "subjects": subjects,
    })
}

/// The addresses a Gateway answers on, from its Service: the load balancer's, else the cluster
/// IP (where the listener ports answer inside the cluster; a NodePort's node ports are not the
/// listener ports, so node addresses would not be the truth).
pub fn addresses(svc: &k8s_openapi::api::core::v1::Service) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in svc.status.iter().flat_map(|s| s.load_balancer.iter()).flat_map(|lb| lb.ingress.iter().flatten()) {
        if let Some(ip) = &i.ip {
            out.push(("IPAddress".to_string(), ip.clone()));
        } else if let Some(h) = &i.hostname {
            out.push(("Hostname".to_string(), h.clone()));
        }
    }
    if out.is_empty() {
        if let Some(ip) =
            svc.spec.as_ref().and_then(|s| s.cluster_ip.clone()).filter(|ip| !ip.is_empty() && ip != "None")
        {
            out.push(("IPAddress".to_string(), ip));
        }
    }
    out
}
