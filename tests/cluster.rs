//! Tests against a real Kubernetes control plane (kube-apiserver + etcd + kube-controller-manager
//! built from Go modules), with pods that are network namespaces on a private bridge.
//!
//! A custom harness: the control plane is started once for the whole binary and torn down at the
//! end, also when a test fails. It prints one `N passed, N failed` line. It needs root (network
//! namespaces), `ip` (iproute2), `go`, `openssl` and `python3`; if one is missing the run fails
//! with a message naming it rather than skipping silently.

#[path = "support/cluster.rs"]
mod cluster_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use cluster_support::*;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

struct Env<'a> {
    cp: &'a ControlPlane,
    net: &'a PodNet,
    client: Client,
}

type TestFn = for<'a> fn(&'a Env<'a>) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

fn main() -> ExitCode {
    for (tool, why) in [
        ("ip", "iproute2, for pod network namespaces"),
        ("go", "to build the control plane"),
        ("openssl", "for the control plane's certificates"),
        ("python3", "for the pods' upstreams"),
    ] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("cluster tests: `{tool}` is missing ({why})");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tests: Vec<(&str, TestFn)> = vec![
        ("endpoint_slices_follow_pods_and_readiness", |e| {
            Box::pin(endpoint_slices_follow_pods_and_readiness(e))
        }),
        ("selectorless_service_endpoints_are_mirrored", |e| {
            Box::pin(selectorless_service_endpoints_are_mirrored(e))
        }),
        ("service_account_token_gets_exactly_its_rbac", |e| {
            Box::pin(service_account_token_gets_exactly_its_rbac(e))
        }),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut passed, mut failed) = (0, 0);
    let mut pids = Vec::new();
    let netns;
    let bridge;
    {
        let cp = match ControlPlane::start() {
            Ok(cp) => cp,
            Err(e) => {
                eprintln!("cluster tests: cannot start the control plane: {e}");
                println!("0 passed, 1 failed");
                return ExitCode::FAILURE;
            }
        };
        pids.clone_from(&cp.pids);
        let net = match PodNet::create() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("cluster tests: cannot make the pod network: {e}");
                println!("0 passed, 1 failed");
                return ExitCode::FAILURE;
            }
        };
        bridge = net.bridge.clone();
        eprintln!("cluster tests: pod network {} on bridge {}", net.cidr(), net.bridge);
        let client = rt.block_on(cp.client());
        rt.block_on(ensure_node(&client));
        let env = Env {
            cp: &cp,
            net: &net,
            client,
        };
        for (name, test) in &tests {
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(test(&env))));
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!("test {name} ... ok ({:.1}s)", started.elapsed().as_secs_f64());
                }
                Err(_) => {
                    failed += 1;
                    println!("test {name} ... FAILED");
                }
            }
        }
        netns = net.netns_names();
        // Dropping `net` and `cp` here removes the namespaces, links and bridge, then stops the
        // control plane by PID.
    }
    // Teardown check: nothing we made is left.
    let mut leftovers = Vec::new();
    for (name, pid) in &pids {
        if alive(*pid) {
            leftovers.push(format!("process {name} ({pid})"));
        }
    }
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    for n in &netns {
        if namespaces
            .lines()
            .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        {
            leftovers.push(format!("network namespace {n}"));
        }
    }
    if std::process::Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap()
        .status
        .success()
    {
        leftovers.push(format!("bridge {bridge}"));
    }
    if leftovers.is_empty() {
        passed += 1;
        println!("test teardown_leaves_nothing_behind ... ok");
    } else {
        failed += 1;
        println!(
            "test teardown_leaves_nothing_behind ... FAILED: {}",
            leftovers.join(", ")
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // Pods need the namespace's default ServiceAccount, which the controller manager creates.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount", WAIT, || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
}

async fn service(client: &Client, ns: &str, spec: serde_json::Value) {
    let svc: Service = serde_json::from_value(spec).unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

/// Address → ready, over every slice of `service`, with the port named `port`.
async fn slice_view(client: &Client, ns: &str, service: &str) -> BTreeMap<String, (bool, Option<i32>)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let mut out = BTreeMap::new();
    for s in slices.list(&lp).await.unwrap() {
        let port = s.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port);
        for e in s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            for a in e.addresses {
                out.insert(a, (ready, port));
            }
        }
    }
    out
}

async fn http_get(addr: Ipv4Addr, port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect((addr, port)))
        .await
        .unwrap()
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

async fn endpoint_slices_follow_pods_and_readiness(env: &Env<'_>) {
    let c = &env.client;
    namespace(c, "smoke").await;
    service(
        c,
        "smoke",
        json!({ "metadata": { "name": "web" }, "spec": { "selector": { "app": "web" },
            "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
    )
    .await;
    let mut ips = Vec::new();
    for name in ["web-0", "web-1"] {
        let ip = env.net.add_pod(name, &[8080]).unwrap();
        create_pod(c, "smoke", name, json!({ "app": "web" }), &[("http", 8080)]).await;
        set_pod_status(c, "smoke", name, ip, true).await;
        // The pod is real: its upstream answers on its own address, through our bridge.
        let reply = http_get(ip, 8080, "/hello").await;
        assert!(reply.contains(&format!("{name} GET /hello")), "{reply}");
        ips.push(ip.to_string());
    }
    let want: BTreeMap<String, (bool, Option<i32>)> = ips.iter().map(|i| (i.clone(), (true, Some(8080)))).collect();
    eventually(
        "a slice with both ready pods, targetPort `http` resolved to 8080",
        WAIT,
        || async {
            let v = slice_view(c, "smoke", "web").await;
            (v == want).then_some(())
        },
    )
    .await;
    // web-1 turns not ready: it stays in the slice, marked not ready.
    let web1: Ipv4Addr = ips[1].parse().unwrap();
    set_pod_status(c, "smoke", "web-1", web1, false).await;
    eventually("web-1 marked not ready", WAIT, || async {
        let v = slice_view(c, "smoke", "web").await;
        (v.get(&ips[0]) == Some(&(true, Some(8080))) && v.get(&ips[1]) == Some(&(false, Some(8080)))).then_some(())
    })
    .await;
    // Deleting web-0: with no kubelet to confirm, the pod is terminating and its endpoint says so.
    let pods = Api::<Pod>::namespaced(c.clone(), "smoke");
    pods.delete("web-0", &Default::default()).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "smoke");
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    eventually("web-0 terminating", WAIT, || async {
        let list = slices.list(&lp).await.ok()?;
        let e = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.addresses.contains(&ips[0]))?;
        let cond = e.conditions.as_ref()?;
        (cond.terminating == Some(true) && cond.ready == Some(false)).then_some(())
    })
    .await;
    // What the kubelet does once the container has stopped: delete with no grace period.
    let now = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("web-0", &now).await.unwrap();
    pods.delete("web-1", &now).await.unwrap();
    eventually("both gone from the slice", WAIT, || async {
        slice_view(c, "smoke", "web").await.is_empty().then_some(())
    })
    .await;
}

async fn selectorless_service_endpoints_are_mirrored(env: &Env<'_>) {
    let c = &env.client;
    namespace(c, "outer").await;
    // An "external" MySQL: a pod-network address that no Pod object describes.
    let db = env.net.add_pod("mysql-outer", &[3306]).unwrap();
    service(
        c,
        "outer",
        json!({ "metadata": { "name": "mysql-outer" }, "spec": { "ports": [ { "port": 3306 } ] } }),
    )
    .await;
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": { "name": "mysql-outer" },
        "subsets": [ { "addresses": [ { "ip": db.to_string() } ], "ports": [ { "port": 3306 } ] } ]
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(c.clone(), "outer")
        .create(&PostParams::default(), &eps)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "outer");
    let lp = ListParams::default().labels(
        "kubernetes.io/service-name=mysql-outer,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io",
    );
    eventually("a mirrored EndpointSlice for mysql-outer", WAIT, || async {
        let list = slices.list(&lp).await.ok()?;
        let s = list.items.first()?;
        let addr = s.endpoints.first()?.addresses.first()?.clone();
        let port = s.ports.as_ref()?.first()?.port?;
        (addr == db.to_string() && port == 3306).then_some(())
    })
    .await;
    let reply = http_get(db, 3306, "/ping").await;
    assert!(reply.contains("mysql-outer GET /ping"), "{reply}");
}

async fn service_account_token_gets_exactly_its_rbac(env: &Env<'_>) {
    let c = &env.client;
    namespace(c, "rbac").await;
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "ferry" } })).unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "rbac");
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
    let token = sas
        .create_token_request("ferry", &PostParams::default(), &tr)
        .await
        .unwrap();
    let token = token.status.expect("token status").token;
    let kc = env.cp.token_kubeconfig("ferry-rbac", &token);
    let as_ferry = client_for(&kc).await;
    let slices: Api<EndpointSlice> = Api::namespaced(as_ferry.clone(), "rbac");
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403);
    assert!(
        forbidden(slices.list(&ListParams::default()).await.map(|_| ())),
        "listed slices with no grant"
    );
    let role: Role = serde_json::from_value(json!({ "metadata": { "name": "slices" },
        "rules": [ { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] } ] }))
    .unwrap();
    Api::<Role>::namespaced(c.clone(), "rbac")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({ "metadata": { "name": "slices" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "slices" },
        "subjects": [ { "kind": "ServiceAccount", "name": "ferry", "namespace": "rbac" } ] }))
    .unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), "rbac")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    eventually("the grant to take effect", WAIT, || async {
        slices.list(&ListParams::default()).await.ok()
    })
    .await;
    // Nothing beyond the grant.
    let pods: Api<Pod> = Api::namespaced(as_ferry.clone(), "rbac");
    assert!(
        forbidden(pods.list(&ListParams::default()).await.map(|_| ())),
        "the token can list pods"
    );
    let other: Api<EndpointSlice> = Api::namespaced(as_ferry, "smoke");
    assert!(
        forbidden(other.list(&ListParams::default()).await.map(|_| ())),
        "the grant leaked to another namespace"
    );
}
