//! Tests against a real Kubernetes control plane (kube-apiserver + etcd + kube-controller-manager
//! built from Go modules), with pods that are network namespaces on a private bridge.
//!
//! libtest-mimic runs them as cargo's own harness would (filters, `--list`, the usual summary), one
//! at a time: the control plane is started once for the whole binary and torn down by the last
//! test, which checks that nothing the harness made is left (also when a test fails). It needs
//! root (network namespaces), `ip` (iproute2), `go`, `openssl` and `python3`; if one is missing
//! the run fails with a message naming it rather than skipping silently.

#[path = "support/cluster.rs"]
mod cluster_support;
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_support::*;
use ferry::discovery::Mode;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// What every test gets: the control plane, the pod network and an admin client.
struct Env {
    cp: ControlPlane,
    net: PodNet,
    client: Client,
}

impl Env {
    fn net_ip(&self, pod: &str) -> Ipv4Addr {
        self.net.ip_of(pod).unwrap_or_else(|| panic!("no pod network namespace named {pod}"))
    }
}

type TestFn = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The tests, in the order they run (one at a time: they share one cluster).
const TESTS: &[(&str, TestFn)] = &[
    ("endpoint_slices_follow_pods_and_readiness", |e| Box::pin(endpoint_slices_follow_pods_and_readiness(e))),
    ("selectorless_service_endpoints_are_mirrored", |e| Box::pin(selectorless_service_endpoints_are_mirrored(e))),
    ("service_account_token_gets_exactly_its_rbac", |e| Box::pin(service_account_token_gets_exactly_its_rbac(e))),
    ("ferry_follows_adds_removals_readiness_and_termination", |e| {
        Box::pin(ferry_follows_adds_removals_readiness_and_termination(e))
    }),
    ("ferry_routes_one_pod_by_name_and_selectorless_services", |e| {
        Box::pin(ferry_routes_one_pod_by_name_and_selectorless_services(e, Mode::Endpointslices, "byname"))
    }),
    ("ferry_with_discovery_endpoints_does_the_same", |e| {
        Box::pin(ferry_routes_one_pod_by_name_and_selectorless_services(e, Mode::Endpoints, "byname-ep"))
    }),
    ("hold_for_endpoints_answers_a_request_sent_before_the_pod", |e| {
        Box::pin(hold_for_endpoints_answers_a_request_sent_before_the_pod(e))
    }),
    ("apiserver_restart_keeps_serving_and_resyncs", |e| Box::pin(apiserver_restart_keeps_serving_and_resyncs(e))),
    ("deploy_dry_run_and_its_rbac_is_exactly_enough", |e| Box::pin(deploy_dry_run_and_its_rbac_is_exactly_enough(e))),
    ("ingress_classes_paths_and_live_updates", |e| Box::pin(ingress_classes_paths_and_live_updates(e))),
    ("ingress_tls_secret_swap_status_lease_and_events", |e| {
        Box::pin(ingress_tls_secret_swap_status_lease_and_events(e))
    }),
    ("ingress_path_table_wildcards_defaults_and_annotations_live", |e| {
        Box::pin(ingress_path_table_wildcards_defaults_and_annotations_live(e))
    }),
    ("one_bad_ingress_among_fifty_keeps_the_rest_updating", |e| {
        Box::pin(one_bad_ingress_among_fifty_keeps_the_rest_updating(e))
    }),
    ("gateway_api_status_provisioning_and_live_routes", |e| {
        Box::pin(gateway_api_status_provisioning_and_live_routes(e))
    }),
];

/// The cluster for the tests, taken down by the last one (or after the run, if it was filtered out).
type Shared = Arc<Mutex<Option<Env>>>;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One cluster, shared: the tests run one after another.
    args.test_threads = Some(1);
    let names: Vec<&str> = TESTS.iter().map(|t| t.0).chain(["teardown_leaves_nothing_behind"]).collect();
    if let Some(code) = list_only(&args, &names) {
        return code;
    }
    if !tools_present(
        "cluster tests",
        &[
            ("ip", "iproute2, for pod network namespaces"),
            ("go", "to build the control plane"),
            ("openssl", "for the control plane's certificates"),
            ("python3", "for the pods' upstreams"),
        ],
    ) {
        return ExitCode::FAILURE;
    }
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let cp = match ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cluster tests: cannot start the control plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let net = match PodNet::create() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cluster tests: cannot make the pod network: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("cluster tests: pod network {} on bridge {}", net.cidr(), net.bridge);
    let client = rt.block_on(cp.client());
    rt.block_on(ensure_node(&client));
    let made = Made { pids: cp.pids(), netns: net.netns_names(), bridge: net.bridge.clone() };
    let env: Shared = Arc::new(Mutex::new(Some(Env { cp, net, client })));
    let mut trials: Vec<Trial> = TESTS
        .iter()
        .map(|&(name, test)| {
            let (env, rt) = (env.clone(), rt.clone());
            Trial::test(name, move || {
                let guard = env.lock().unwrap_or_else(|p| p.into_inner());
                let env = guard.as_ref().ok_or("the cluster is already down")?;
                std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(test(env)))).map_err(|p| panic_text(&p).into())
            })
        })
        .collect();
    let (last, made2) = (env.clone(), made.clone());
    trials.push(Trial::test("teardown_leaves_nothing_behind", move || teardown(&last, &made2)));
    let conclusion = libtest_mimic::run(&args, trials);
    // The teardown trial was filtered out: take the cluster down all the same.
    if let Err(e) = teardown(&env, &made) {
        eprintln!("cluster tests: {e:?}");
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

/// What the harness made, to check that none of it is left.
#[derive(Clone)]
struct Made {
    pids: Vec<(String, u32)>,
    netns: Vec<String>,
    bridge: String,
}

/// Drops the cluster (removing the namespaces, links and bridge, then stopping the control plane
/// by PID) and checks that nothing it made is left.
fn teardown(env: &Shared, made: &Made) -> Result<(), Failed> {
    drop(env.lock().unwrap_or_else(|p| p.into_inner()).take());
    let mut leftovers = Vec::new();
    for (name, pid) in &made.pids {
        if alive(*pid) {
            leftovers.push(format!("process {name} ({pid})"));
        }
    }
    let namespaces = std::process::Command::new("ip").args(["netns", "list"]).output().map_err(|e| e.to_string())?;
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    for n in &made.netns {
        if namespaces.lines().any(|l| l.split_whitespace().next() == Some(n.as_str())) {
            leftovers.push(format!("network namespace {n}"));
        }
    }
    let bridge = std::process::Command::new("ip").args(["link", "show", &made.bridge]).output();
    if bridge.is_ok_and(|o| o.status.success()) {
        leftovers.push(format!("bridge {}", made.bridge));
    }
    if leftovers.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind: {}", leftovers.join(", ")).into())
    }
}

async fn service(client: &Client, ns: &str, spec: serde_json::Value) {
    let svc: Service = serde_json::from_value(spec).unwrap();
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), &svc).await.unwrap();
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
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect((addr, port))).await.unwrap().unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

async fn endpoint_slices_follow_pods_and_readiness(env: &Env) {
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
    eventually("a slice with both ready pods, targetPort `http` resolved to 8080", WAIT, || async {
        let v = slice_view(c, "smoke", "web").await;
        (v == want).then_some(())
    })
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
        let e = list.items.iter().flat_map(|s| &s.endpoints).find(|e| e.addresses.contains(&ips[0]))?;
        let cond = e.conditions.as_ref()?;
        (cond.terminating == Some(true) && cond.ready == Some(false)).then_some(())
    })
    .await;
    // What the kubelet does once the container has stopped: delete with no grace period.
    let now = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    pods.delete("web-0", &now).await.unwrap();
    pods.delete("web-1", &now).await.unwrap();
    eventually("both gone from the slice", WAIT, || async {
        slice_view(c, "smoke", "web").await.is_empty().then_some(())
    })
    .await;
}

async fn selectorless_service_endpoints_are_mirrored(env: &Env) {
    let c = &env.client;
    namespace(c, "outer").await;
    // An "external" MySQL: a pod-network address that no Pod object describes.
    let db = env.net.add_pod("mysql-outer", &[3306]).unwrap();
    service(c, "outer", json!({ "metadata": { "name": "mysql-outer" }, "spec": { "ports": [ { "port": 3306 } ] } }))
        .await;
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": { "name": "mysql-outer" },
        "subsets": [ { "addresses": [ { "ip": db.to_string() } ], "ports": [ { "port": 3306 } ] } ]
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(c.clone(), "outer").create(&PostParams::default(), &eps).await.unwrap();
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

async fn service_account_token_gets_exactly_its_rbac(env: &Env) {
    let c = &env.client;
    namespace(c, "rbac").await;
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "ferry" } })).unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "rbac");
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
    let token = sas.create_token_request("ferry", &PostParams::default(), &tr).await.unwrap();
    let token = token.status.expect("token status").token;
    let kc = env.cp.token_kubeconfig("ferry-rbac", &token);
    let as_ferry = client_for(&kc).await;
    let slices: Api<EndpointSlice> = Api::namespaced(as_ferry.clone(), "rbac");
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403);
    assert!(forbidden(slices.list(&ListParams::default()).await.map(|_| ())), "listed slices with no grant");
    let role: Role = serde_json::from_value(json!({ "metadata": { "name": "slices" },
        "rules": [ { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] } ] }))
    .unwrap();
    Api::<Role>::namespaced(c.clone(), "rbac").create(&PostParams::default(), &role).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({ "metadata": { "name": "slices" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "slices" },
        "subjects": [ { "kind": "ServiceAccount", "name": "ferry", "namespace": "rbac" } ] }))
    .unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), "rbac").create(&PostParams::default(), &rb).await.unwrap();
    eventually("the grant to take effect", WAIT, || async { slices.list(&ListParams::default()).await.ok() }).await;
    // Nothing beyond the grant.
    let pods: Api<Pod> = Api::namespaced(as_ferry.clone(), "rbac");
    assert!(forbidden(pods.list(&ListParams::default()).await.map(|_| ())), "the token can list pods");
    let other: Api<EndpointSlice> = Api::namespaced(as_ferry, "smoke");
    assert!(forbidden(other.list(&ListParams::default()).await.map(|_| ())), "the grant leaked to another namespace");
}

// ---------- ferry itself against the cluster ----------

async fn start_ferry(client: &Client, mode: Mode, yaml: &str) -> ferry::Running {
    let cfg = ferry::config::Config::parse("cluster-test.yaml", yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    ferry::start_with(cfg, ferry::Options { kube: Some(client.clone()), discovery: mode, ..support::quiet() })
        .await
        .unwrap()
}

/// Which pod answered (the first word of the upstream's reply), or `status N`.
async fn who(web: std::net::SocketAddr, path: &str) -> String {
    let r = support::get(web, path).await;
    if r.status == 200 {
        r.text().split_whitespace().next().unwrap_or("").to_string()
    } else {
        format!("status {}", r.status.as_u16())
    }
}

/// The pods that answer `n` requests.
async fn answering(web: std::net::SocketAddr, path: &str, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        seen.insert(who(web, path).await);
    }
    seen
}

fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Backend endpoints as /routes shows them: (pod, condition).
async fn table_view(f: &ferry::Running, backend: &str) -> Vec<(String, String)> {
    let routes = support::get(f.admin, "/routes").await.json();
    let b = routes["backends"].as_array().unwrap().iter().find(|b| b["name"] == backend).unwrap().clone();
    b["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pod"].as_str().unwrap_or("").to_string(), e["condition"].as_str().unwrap_or("").to_string()))
        .collect()
}

async fn add_ready_pod(env: &Env, ns: &str, name: &str, labels: serde_json::Value, port: u16) -> Ipv4Addr {
    let ip = env.net.add_pod(name, &[port]).unwrap();
    create_pod(&env.client, ns, name, labels, &[("http", port)]).await;
    set_pod_status(&env.client, ns, name, ip, true).await;
    ip
}

async fn ferry_follows_adds_removals_readiness_and_termination(env: &Env) {
    let c = &env.client;
    namespace(c, "follow").await;
    service(
        c,
        "follow",
        json!({ "metadata": { "name": "gateway" }, "spec": { "selector": { "app": "gw" },
            "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
    )
    .await;
    let f = start_ferry(
        c,
        Mode::Endpointslices,
        "admin: 127.0.0.1:0
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: gw } ] } ]
backends:
  gw: { service: gateway.follow, port: 80, retries: 0 }
",
    )
    .await;
    let web = f.addr("web").unwrap();
    eventually("/readyz after the first lists", WAIT, || async {
        (support::get(f.admin, "/readyz").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(who(web, "/").await, "status 503", "no pods yet");
    let gw0 = add_ready_pod(env, "follow", "gw-0", json!({ "app": "gw" }), 8080).await;
    add_ready_pod(env, "follow", "gw-1", json!({ "app": "gw" }), 8080).await;
    eventually("both pods answering", WAIT, || async {
        (answering(web, "/", 12).await == set(&["gw-0", "gw-1"])).then_some(())
    })
    .await;
    // A pod whose named targetPort `http` is 9090, not 8080: resolved per slice.
    add_ready_pod(env, "follow", "gw-2", json!({ "app": "gw" }), 9090).await;
    eventually("gw-2 on its own port", WAIT, || async {
        (answering(web, "/", 18).await == set(&["gw-0", "gw-1", "gw-2"])).then_some(())
    })
    .await;
    // Readiness flip: gw-1 leaves the table, and no request reaches it afterwards.
    let gw1_ip = env.net_ip("gw-1");
    set_pod_status(c, "follow", "gw-1", gw1_ip, false).await;
    eventually("gw-1 out of the table", WAIT, || async {
        (!table_view(&f, "gw").await.iter().any(|(p, _)| p == "gw-1")).then_some(())
    })
    .await;
    assert_eq!(answering(web, "/", 20).await, set(&["gw-0", "gw-2"]));
    // Deleted pods terminate; with gw-1 not ready there is no ready endpoint, so ferry falls back
    // to the ones still serving while they terminate.
    let pods = Api::<Pod>::namespaced(c.clone(), "follow");
    pods.delete("gw-0", &Default::default()).await.unwrap();
    pods.delete("gw-2", &Default::default()).await.unwrap();
    eventually("terminating fallback", WAIT, || async {
        let v = table_view(&f, "gw").await;
        (v.len() == 2 && v.iter().all(|(_, c)| c == "terminating")).then_some(())
    })
    .await;
    assert_eq!(answering(web, "/", 10).await, set(&["gw-0", "gw-2"]));
    // gw-1 ready again: ready endpoints win over terminating ones.
    set_pod_status(c, "follow", "gw-1", gw1_ip, true).await;
    eventually("gw-1 back", WAIT, || async { (answering(web, "/", 6).await == set(&["gw-1"])).then_some(()) }).await;
    let now = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    for p in ["gw-0", "gw-1", "gw-2"] {
        pods.delete(p, &now).await.unwrap();
    }
    eventually("no endpoints: 503", WAIT, || async { (who(web, "/").await == "status 503").then_some(()) }).await;
    let _ = gw0;
    let m = support::get(f.admin, "/metrics").await.text();
    assert!(support::metric(&m, "ferry_discovery_last_sync_age_seconds", &[]).is_some(), "{m}");
    f.shutdown(Duration::ZERO, WAIT).await;
}

async fn ferry_routes_one_pod_by_name_and_selectorless_services(env: &Env, mode: Mode, ns: &str) {
    let c = &env.client;
    namespace(c, ns).await;
    service(
        c,
        ns,
        json!({ "metadata": { "name": "eureka" }, "spec": { "clusterIP": "None", "selector": { "app": "eureka" },
            "ports": [ { "name": "eureka", "port": 19011, "targetPort": 19011 } ] } }),
    )
    .await;
    for i in 0..3 {
        let name = format!("{ns}-eureka-{i}");
        let ip = env.net.add_pod(&name, &[19011]).unwrap();
        create_pod(c, ns, &name, json!({ "app": "eureka" }), &[("eureka", 19011)]).await;
        set_pod_status(c, ns, &name, ip, true).await;
    }
    // An external database behind a selectorless Service with hand-made Endpoints.
    let db = env.net.add_pod(&format!("{ns}-db"), &[3306]).unwrap();
    service(c, ns, json!({ "metadata": { "name": "mysql-outer" }, "spec": { "ports": [ { "port": 3306 } ] } })).await;
    let eps: Endpoints = serde_json::from_value(json!({ "metadata": { "name": "mysql-outer" },
        "subsets": [ { "addresses": [ { "ip": db.to_string() } ], "ports": [ { "port": 3306 } ] } ] }))
    .unwrap();
    Api::<Endpoints>::namespaced(c.clone(), ns).create(&PostParams::default(), &eps).await.unwrap();
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /eureka-1 }}, strip_prefix: true, backend: one }}
      - {{ match: {{ path_prefix: /eureka }}, strip_prefix: true, backend: all }}
      - {{ match: {{ path_prefix: /db }}, backend: db }}
backends:
  one: {{ service: eureka.{ns}, port: eureka, pod: {ns}-eureka-1 }}
  all: {{ service: eureka.{ns}, port: 19011 }}
  db: {{ service: mysql-outer.{ns}, port: 3306 }}
"
    );
    let f = start_ferry(c, mode, &yaml).await;
    let web = f.addr("web").unwrap();
    let all = set(&[&format!("{ns}-eureka-0"), &format!("{ns}-eureka-1"), &format!("{ns}-eureka-2")]);
    eventually("all three eureka pods", WAIT, || async {
        (answering(web, "/eureka/apps", 18).await == all).then_some(())
    })
    .await;
    assert_eq!(answering(web, "/eureka-1/", 10).await, set(&[&format!("{ns}-eureka-1")]), "pod: selects one pod");
    eventually("the selectorless service", WAIT, || async {
        (who(web, "/db/ping").await == format!("{ns}-db")).then_some(())
    })
    .await;
    // A reload goes through discovery; when apply returns, the new table is live (discovery
    // acknowledged the publish) with the endpoints discovery already knows: no waiting here.
    let moved = yaml.replace("path_prefix: /db }", "path_prefix: /mysql }");
    let moved = ferry::config::Config::parse("cluster-test.yaml", &moved).unwrap_or_else(|e| panic!("{e}"));
    f.apply(moved).await.unwrap();
    assert_eq!(who(web, "/mysql/ping").await, format!("{ns}-db"), "the new route serves as soon as apply returns");
    assert_eq!(who(web, "/db/ping").await, "status 404", "the old route is gone as soon as apply returns");
    f.shutdown(Duration::ZERO, WAIT).await;
}

async fn hold_for_endpoints_answers_a_request_sent_before_the_pod(env: &Env) {
    let c = &env.client;
    namespace(c, "late").await;
    service(
        c,
        "late",
        json!({ "metadata": { "name": "eureka" }, "spec": { "selector": { "app": "late" },
            "ports": [ { "port": 80, "targetPort": 8080 } ] } }),
    )
    .await;
    let f = start_ferry(
        c,
        Mode::Endpointslices,
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - { match: { path_prefix: /now }, backend: now }
      - { backend: held }
backends:
  held: { service: eureka.late, port: 80, hold_for_endpoints: 25s }
  now: { service: eureka.late, port: 80 }
",
    )
    .await;
    let web = f.addr("web").unwrap();
    eventually("/readyz", WAIT, || async { (support::get(f.admin, "/readyz").await.status == 200).then_some(()) })
        .await;
    // Without hold: 503 at once. With hold: the request waits for the pod.
    assert_eq!(who(web, "/now").await, "status 503");
    let waiting = tokio::spawn(who(web, "/apps"));
    add_ready_pod(env, "late", "late-0", json!({ "app": "late" }), 8080).await;
    assert_eq!(waiting.await.unwrap(), "late-0");
    f.shutdown(Duration::ZERO, WAIT).await;
}

async fn apiserver_restart_keeps_serving_and_resyncs(env: &Env) {
    let c = &env.client;
    namespace(c, "restart").await;
    service(
        c,
        "restart",
        json!({ "metadata": { "name": "api" }, "spec": { "selector": { "app": "api" },
            "ports": [ { "port": 80, "targetPort": 8080 } ] } }),
    )
    .await;
    for p in ["api-0", "api-1"] {
        add_ready_pod(env, "restart", p, json!({ "app": "api" }), 8080).await;
    }
    let f = start_ferry(
        c,
        Mode::Endpointslices,
        "admin: 127.0.0.1:0
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: api } ] } ]
backends:
  api: { service: api.restart, port: 80 }
",
    )
    .await;
    let web = f.addr("web").unwrap();
    let both = set(&["api-0", "api-1"]);
    eventually("both pods", WAIT, || async { (answering(web, "/", 12).await == both).then_some(()) }).await;
    let args = env.cp.stop_component("kube-apiserver");
    // Bring it back even if an assertion below fails, so later tests have an API.
    struct Restart<'a>(&'a ControlPlane, Vec<String>, bool);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            if !self.2 {
                self.0.start_component("kube-apiserver", &self.1);
            }
        }
    }
    let mut guard = Restart(&env.cp, args.clone(), false);
    // The API is gone: the last table keeps serving every request.
    for _ in 0..3 {
        assert_eq!(answering(web, "/", 10).await, both);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let errors = |m: &str| support::metric(m, "ferry_discovery_errors_total", &[]).unwrap_or(0.0);
    eventually("the watch failure to be counted", WAIT, || async {
        (errors(&support::get(f.admin, "/metrics").await.text()) > 0.0).then_some(())
    })
    .await;
    assert_eq!(support::get(f.admin, "/readyz").await.status, 200, "an API outage does not make ferry unready");
    guard.2 = true;
    env.cp.start_component("kube-apiserver", &args);
    eventually("the apiserver back", Duration::from_secs(60), || async {
        Api::<Namespace>::all(c.clone()).get_opt("restart").await.ok().flatten()
    })
    .await;
    // A change after the outage is followed: the resync brings no stale endpoint.
    let now = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    Api::<Pod>::namespaced(c.clone(), "restart").delete("api-1", &now).await.unwrap();
    eventually("api-1 gone after the resync", Duration::from_secs(60), || async {
        (answering(web, "/", 10).await == set(&["api-0"])).then_some(())
    })
    .await;
    f.shutdown(Duration::ZERO, WAIT).await;
}

async fn deploy_dry_run_and_its_rbac_is_exactly_enough(env: &Env) {
    let c = &env.client;
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    // The namespace must exist for a server-side dry run of the objects in it.
    env.cp.kubectl(&["create", "namespace", "ferry"]).unwrap();
    let out = env.cp.kubectl(&["apply", "--dry-run=server", "-k", deploy]).unwrap_or_else(|e| panic!("{e}"));
    for kind in [
        "serviceaccount/ferry",
        "clusterrole.rbac.authorization.k8s.io/ferry",
        "deployment.apps/ferry",
        "service/ferry",
        "configmap/ferry-routes",
        "poddisruptionbudget.policy/ferry",
        "ingressclass.networking.k8s.io/ferry",
        "clusterrole.rbac.authorization.k8s.io/ferry-ingress",
        "role.rbac.authorization.k8s.io/ferry-ingress-lease",
    ] {
        assert!(out.contains(kind), "dry run did not cover {kind}:\n{out}");
    }
    // Grant exactly deploy/'s RBAC for real, then run ferry as that ServiceAccount.
    for f in ["serviceaccount.yaml", "rbac.yaml", "rbac-ingress.yaml", "ingressclass.yaml"] {
        env.cp.kubectl(&["apply", "-n", "ferry", "-f", &format!("{deploy}/{f}")]).unwrap();
    }
    namespace(c, "granted").await;
    service(
        c,
        "granted",
        json!({ "metadata": { "name": "app" }, "spec": { "selector": { "app": "granted" },
            "ports": [ { "name": "web", "port": 80, "targetPort": 8080 } ] } }),
    )
    .await;
    add_ready_pod(env, "granted", "granted-0", json!({ "app": "granted" }), 8080).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "ferry");
    let tr: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
    let token = sas.create_token_request("ferry", &PostParams::default(), &tr).await.unwrap().status.unwrap().token;
    let as_ferry = client_for(&env.cp.token_kubeconfig("ferry-sa", &token)).await;
    let f = start_ferry(
        &as_ferry,
        Mode::Endpointslices,
        "admin: 127.0.0.1:0
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: app } ] } ]
backends:
  app: { service: app.granted, port: 80 }
",
    )
    .await;
    let web = f.addr("web").unwrap();
    eventually("ferry, as its ServiceAccount, routing to the pod", WAIT, || async {
        (who(web, "/").await == "granted-0").then_some(())
    })
    .await;
    assert_eq!(support::get(f.admin, "/readyz").await.status, 200);
    let m = support::get(f.admin, "/metrics").await.text();
    assert_eq!(support::metric(&m, "ferry_discovery_errors_total", &[]), Some(0.0), "the grant was not enough:\n{m}");
    // And no more than that.
    let forbidden = |r: Result<(), kube::Error>| matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403);
    let pods: Api<Pod> = Api::namespaced(as_ferry.clone(), "granted");
    assert!(forbidden(pods.list(&ListParams::default()).await.map(|_| ())), "ferry's grant can list pods");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(as_ferry.clone(), "ferry");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({ "metadata": { "name": "x" }, "stringData": { "a": "b" } })).unwrap();
    assert!(
        forbidden(secrets.create(&PostParams::default(), &secret).await.map(|_| ())),
        "ferry's grant can write secrets"
    );
    let svcs: Api<Service> = Api::namespaced(as_ferry.clone(), "granted");
    let new_svc: Service =
        serde_json::from_value(json!({ "metadata": { "name": "x" }, "spec": { "ports": [ { "port": 1 } ] } })).unwrap();
    assert!(forbidden(svcs.create(&PostParams::default(), &new_svc).await.map(|_| ())), "ferry's grant can write");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(as_ferry.clone(), "granted");
    assert!(
        forbidden(leases.list(&ListParams::default()).await.map(|_| ())),
        "the Lease grant leaked out of ferry's namespace"
    );
    f.shutdown(Duration::ZERO, WAIT).await;
    // The Ingress controller, as the same ServiceAccount: serving, Events, the Lease and status
    // all work with deploy/'s grant.
    use ferry::sources::status::{Election, Publish, StatusConfig};
    use k8s_openapi::api::networking::v1::Ingress;
    let status = StatusConfig {
        publish: Publish::Addresses(vec!["198.51.100.20".into()]),
        election: Election {
            namespace: "ferry".into(),
            name: "ferry-ingress-status".into(),
            identity: "granted-test".into(),
            duration: Duration::from_secs(3),
        },
    };
    let (f, tasks) = start_ingress(&as_ferry, Some(status)).await;
    let web = f.addr(ferry::sources::ingress::HTTP_LISTENER).unwrap();
    create::<Ingress>(
        c,
        Some("granted"),
        ingress_json("granted", "ferry", "granted.example.com", &[("/", "Prefix", "app")]),
    )
    .await;
    create::<Ingress>(
        c,
        Some("granted"),
        ingress_json("granted-broken", "ferry", "gb.example.com", &[("/", "Prefix", "absent")]),
    )
    .await;
    eventually("the Ingress served as ferry's ServiceAccount", WAIT, || async {
        (who_host(web, "granted.example.com", "/").await == "granted-0").then_some(())
    })
    .await;
    let ings = Api::<Ingress>::namespaced(c.clone(), "granted");
    eventually("its status written as ferry's ServiceAccount", WAIT, || async {
        let lb = ings.get("granted").await.ok()?.status?.load_balancer?.ingress?;
        (lb.first()?.ip.as_deref() == Some("198.51.100.20")).then_some(())
    })
    .await;
    eventually("an Event written as ferry's ServiceAccount", WAIT, || async {
        (!event_notes(c, "granted", "granted-broken").await.is_empty()).then_some(())
    })
    .await;
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}

// ---------- ferry as the Ingress controller ----------

/// The watch and feed tasks of an in-process Ingress controller, stopped on drop, and the
/// directory of its Secret files.
struct Tasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _secrets: tempfile::TempDir,
}

impl Tasks {
    /// Stops both tasks and waits until they are gone (the feed may hold ferry while applying).
    async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// ferry following the cluster's Ingresses (the live watch and feed `ferry run --ingress` runs),
/// in-process, listening on loopback.
async fn start_ingress(
    client: &Client,
    status: Option<ferry::sources::status::StatusConfig>,
) -> (Arc<ferry::Running>, Tasks) {
    use ferry::sources::{ingress, watch::Watch};
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = ingress::Settings::new(any, any, dir.path().join("secrets"));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let watch = Watch { settings: settings.clone(), reporter: Some("ferry".into()), status };
    let watching = tokio::spawn(watch.run(client.clone(), tx));
    let feed = ferry::server::feed::Feed { base: None, admin: any, secrets_dir: settings.secrets_dir.clone() };
    let opts = ferry::Options { kube: Some(client.clone()), discovery_all: true, ..support::quiet() };
    let (running, follow) = feed.start(rx, None, opts).await.unwrap();
    (running, Tasks { tasks: vec![watching, follow], _secrets: dir })
}

async fn create<K>(client: &Client, ns: Option<&str>, v: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let o: K = serde_json::from_value(v).unwrap();
    Api::<K>::namespaced(client.clone(), ns.unwrap_or("default")).create(&PostParams::default(), &o).await.unwrap();
}

async fn ingress_class(client: &Client, name: &str, controller: &str) {
    use k8s_openapi::api::networking::v1::IngressClass;
    let c: IngressClass =
        serde_json::from_value(json!({ "metadata": { "name": name }, "spec": { "controller": controller } })).unwrap();
    let api = Api::<IngressClass>::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        api.create(&PostParams::default(), &c).await.unwrap();
    }
}

fn ingress_json(name: &str, class: &str, host: &str, paths: &[(&str, &str, &str)]) -> serde_json::Value {
    let paths: Vec<_> = paths
        .iter()
        .map(|(p, t, svc)| json!({ "path": p, "pathType": t, "backend": { "service": { "name": svc, "port": { "number": 80 } } } }))
        .collect();
    json!({ "metadata": { "name": name }, "spec": { "ingressClassName": class,
        "rules": [ { "host": host, "http": { "paths": paths } } ] } })
}

/// Which pod answered a request for `host`, or `status N`.
async fn who_host(web: std::net::SocketAddr, host: &str, path: &str) -> String {
    let r = support::get_host(web, host, path).await;
    if r.status == 200 {
        r.text().split_whitespace().next().unwrap_or("").to_string()
    } else {
        format!("status {}", r.status.as_u16())
    }
}

/// The notes of the Events (events.k8s.io/v1) about one object.
async fn event_notes(client: &Client, ns: &str, name: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let evs = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    evs.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect()
}

async fn ingress_classes_paths_and_live_updates(env: &Env) {
    use k8s_openapi::api::networking::v1::Ingress;
    let c = &env.client;
    namespace(c, "ing").await;
    for (svc, app) in [("web", "web"), ("api", "api")] {
        service(
            c,
            "ing",
            json!({ "metadata": { "name": svc }, "spec": { "selector": { "app": app },
                "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
        )
        .await;
    }
    add_ready_pod(env, "ing", "web-0", json!({ "app": "web" }), 8080).await;
    add_ready_pod(env, "ing", "api-0", json!({ "app": "api" }), 8080).await;
    ingress_class(c, "ferry", ferry::sources::ingress::CONTROLLER).await;
    ingress_class(c, "other", "example.com/other").await;
    let (f, tasks) = start_ingress(c, None).await;
    let web = f.addr(ferry::sources::ingress::HTTP_LISTENER).unwrap();
    assert_eq!(who_host(web, "shop.example.com", "/").await, "status 404", "no Ingress yet");
    // An Ingress of ferry's class is served as soon as it exists.
    create::<Ingress>(c, Some("ing"), ingress_json("shop", "ferry", "shop.example.com", &[("/", "Prefix", "web")]))
        .await;
    create::<Ingress>(c, Some("ing"), ingress_json("theirs", "other", "theirs.example.com", &[("/", "Prefix", "web")]))
        .await;
    eventually("the Ingress served", WAIT, || async {
        (who_host(web, "shop.example.com", "/x").await == "web-0").then_some(())
    })
    .await;
    assert_eq!(who_host(web, "theirs.example.com", "/").await, "status 404", "another controller's class");
    // A path added to the live Ingress; Exact beats Prefix; the element-wise Prefix rule.
    let api = Api::<Ingress>::namespaced(c.clone(), "ing");
    let patch = ingress_json(
        "shop",
        "ferry",
        "shop.example.com",
        &[("/", "Prefix", "web"), ("/api", "Prefix", "api"), ("/api/v1", "Exact", "web")],
    );
    api.patch("shop", &PatchParams::apply("test").force(), &Patch::Apply(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": { "name": "shop" }, "spec": patch["spec"] })))
        .await
        .unwrap();
    eventually("the new path served", WAIT, || async {
        (who_host(web, "shop.example.com", "/api/x").await == "api-0").then_some(())
    })
    .await;
    assert_eq!(who_host(web, "shop.example.com", "/api").await, "api-0");
    assert_eq!(who_host(web, "shop.example.com", "/apix").await, "web-0", "Prefix matches whole path elements");
    assert_eq!(who_host(web, "shop.example.com", "/api/v1").await, "web-0", "Exact beats Prefix");
    assert_eq!(who_host(web, "shop.example.com", "/api/v1/x").await, "api-0");
    // A new pod of the Service is followed (discovery, as for routes.yaml).
    add_ready_pod(env, "ing", "api-1", json!({ "app": "api" }), 8080).await;
    eventually("both api pods answering", WAIT, || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            seen.insert(who_host(web, "shop.example.com", "/api").await);
        }
        (seen == set(&["api-0", "api-1"])).then_some(())
    })
    .await;
    // Deleted: gone.
    api.delete("shop", &Default::default()).await.unwrap();
    eventually("the deleted Ingress no longer served", WAIT, || async {
        (who_host(web, "shop.example.com", "/").await == "status 404").then_some(())
    })
    .await;
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}

async fn ingress_tls_secret_swap_status_lease_and_events(env: &Env) {
    use base64::Engine as _;
    use ferry::sources::status::{Election, Publish, StatusConfig};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Secret};
    use k8s_openapi::api::networking::v1::Ingress;
    let c = &env.client;
    namespace(c, "tls").await;
    service(
        c,
        "tls",
        json!({ "metadata": { "name": "web" }, "spec": { "selector": { "app": "tweb" },
            "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
    )
    .await;
    add_ready_pod(env, "tls", "tweb-0", json!({ "app": "tweb" }), 8080).await;
    // ferry's own Service, NodePort: the status is the nodes' addresses.
    service(
        c,
        "tls",
        json!({ "metadata": { "name": "ferry" }, "spec": { "type": "NodePort", "selector": { "app": "ferry" },
            "ports": [ { "name": "http", "port": 80, "targetPort": 8080 } ] } }),
    )
    .await;
    let addrs = json!({ "status": { "addresses": [ { "type": "InternalIP", "address": "192.0.2.7" } ] } });
    Api::<Node>::all(c.clone()).patch_status(NODE, &PatchParams::default(), &Patch::Merge(&addrs)).await.unwrap();
    ingress_class(c, "ferry", ferry::sources::ingress::CONTROLLER).await;
    let pki = support::pki::Pki::new();
    let secret = |cert: &str, key: &str| {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({ "metadata": { "name": "site-tls" }, "type": "kubernetes.io/tls",
            "data": { "tls.crt": b(cert), "tls.key": b(key) } })
    };
    let (cert1, key1) = pki.leaf(&["secure.example.com"]);
    create::<Secret>(c, Some("tls"), secret(&cert1, &key1)).await;
    let mut ing = ingress_json("secure", "ferry", "secure.example.com", &[("/", "Prefix", "web")]);
    ing["spec"]["tls"] = json!([ { "hosts": ["secure.example.com"], "secretName": "site-tls" } ]);
    create::<Ingress>(c, Some("tls"), ing).await;
    // One with a Service that does not exist: an Event names the field.
    create::<Ingress>(
        c,
        Some("tls"),
        ingress_json("broken", "ferry", "broken.example.com", &[("/", "Prefix", "nope")]),
    )
    .await;
    let status = StatusConfig {
        publish: Publish::Service(("tls".into(), "ferry".into())),
        election: Election {
            namespace: "tls".into(),
            name: "ferry-ingress-status".into(),
            identity: "ferry-test-0".into(),
            duration: Duration::from_secs(3),
        },
    };
    let (f, tasks) = start_ingress(c, Some(status)).await;
    let web = f.addr(ferry::sources::ingress::HTTP_LISTENER).unwrap();
    let https =
        eventually("the HTTPS listener", WAIT, || async { f.addr(ferry::sources::ingress::HTTPS_LISTENER) }).await;
    let r = support::get_host(web, "secure.example.com", "/p").await;
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (308, "https://secure.example.com/p"));
    let served = |https: std::net::SocketAddr| {
        let connector = pki.connector(&[b"http/1.1"]);
        async move {
            let tcp = tokio::net::TcpStream::connect(https).await.ok()?;
            let name = rustls_pki_types::ServerName::try_from("secure.example.com").unwrap();
            let tls = connector.connect(name, tcp).await.ok()?;
            Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
        }
    };
    let der = |pem: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    };
    assert_eq!(served(https).await, Some(der(&cert1)));
    // The Secret changes: the new certificate is served, on the same listener.
    let (cert2, key2) = pki.leaf(&["secure.example.com", "www.secure.example.com"]);
    let mut s2 = secret(&cert2, &key2);
    s2["apiVersion"] = json!("v1");
    s2["kind"] = json!("Secret");
    Api::<Secret>::namespaced(c.clone(), "tls")
        .patch("site-tls", &PatchParams::apply("test").force(), &Patch::Apply(&s2))
        .await
        .unwrap();
    eventually("the swapped certificate served", WAIT, || async {
        (served(https).await == Some(der(&cert2))).then_some(())
    })
    .await;
    assert_eq!(f.addr(ferry::sources::ingress::HTTPS_LISTENER), Some(https), "the listener was kept");
    // Status: written by the Lease holder, from the NodePort Service's node addresses.
    let ings = Api::<Ingress>::namespaced(c.clone(), "tls");
    eventually("status.loadBalancer.ingress written", WAIT, || async {
        let i = ings.get("secure").await.ok()?;
        let lb = i.status?.load_balancer?.ingress?;
        (lb.len() == 1 && lb[0].ip.as_deref() == Some("192.0.2.7")).then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(c.clone(), "tls").get("ferry-ingress-status").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("ferry-test-0"));
    // Events on the broken Ingress name the field.
    eventually("an Event on the broken Ingress", WAIT, || async {
        let notes = event_notes(c, "tls", "broken").await;
        notes
            .iter()
            .any(|n| {
                n.contains("spec.rules[0].http.paths[0].backend.service.name")
                    && n.contains("Service tls/nope not found")
            })
            .then_some(())
    })
    .await;
    assert_eq!(who_host(web, "broken.example.com", "/").await, "status 503");
    // An Ingress of another class gets no status.
    ingress_class(c, "other", "example.com/other").await;
    create::<Ingress>(c, Some("tls"), ingress_json("theirs", "other", "theirs.example.com", &[("/", "Prefix", "web")]))
        .await;
    let mut probe = ingress_json("probe", "ferry", "probe.example.com", &[("/", "Prefix", "web")]);
    probe["metadata"]["name"] = json!("probe");
    create::<Ingress>(c, Some("tls"), probe).await;
    eventually("the probe Ingress's status", WAIT, || async {
        ings.get("probe").await.ok()?.status?.load_balancer?.ingress.filter(|l| !l.is_empty()).map(|_| ())
    })
    .await;
    let theirs = ings.get("theirs").await.unwrap();
    assert!(theirs.status.and_then(|s| s.load_balancer).and_then(|l| l.ingress).unwrap_or_default().is_empty());
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}

async fn one_bad_ingress_among_fifty_keeps_the_rest_updating(env: &Env) {
    use k8s_openapi::api::networking::v1::Ingress;
    let c = &env.client;
    namespace(c, "fifty").await;
    service(
        c,
        "fifty",
        json!({ "metadata": { "name": "web" }, "spec": { "selector": { "app": "fweb" },
            "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
    )
    .await;
    add_ready_pod(env, "fifty", "fweb-0", json!({ "app": "fweb" }), 8080).await;
    ingress_class(c, "ferry", ferry::sources::ingress::CONTROLLER).await;
    let (f, tasks) = start_ingress(c, None).await;
    let web = f.addr(ferry::sources::ingress::HTTP_LISTENER).unwrap();
    let mut bad = ingress_json("bad", "ferry", "bad.example.com", &[("/", "Prefix", "web")]);
    bad["metadata"]["annotations"] = json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "not-a-cidr" });
    create::<Ingress>(c, Some("fifty"), bad).await;
    for i in 0..50 {
        create::<Ingress>(
            c,
            Some("fifty"),
            ingress_json(&format!("good{i}"), "ferry", &format!("g{i}.example.com"), &[("/", "Prefix", "web")]),
        )
        .await;
    }
    eventually("all fifty served", WAIT, || async {
        for i in 0..50 {
            if who_host(web, &format!("g{i}.example.com"), "/").await != "fweb-0" {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(who_host(web, "bad.example.com", "/").await, "status 503", "the bad allowlist denies");
    eventually("the bad one's Event", WAIT, || async {
        let notes = event_notes(c, "fifty", "bad").await;
        notes.iter().any(|n| n.contains("whitelist-source-range") && n.contains("not-a-cidr")).then_some(())
    })
    .await;
    // The others keep updating while the bad one stays bad.
    let api = Api::<Ingress>::namespaced(c.clone(), "fifty");
    api.delete("good7", &Default::default()).await.unwrap();
    create::<Ingress>(c, Some("fifty"), ingress_json("good50", "ferry", "g50.example.com", &[("/", "Prefix", "web")]))
        .await;
    eventually("good7 gone and good50 served", WAIT, || async {
        (who_host(web, "g7.example.com", "/").await == "status 404"
            && who_host(web, "g50.example.com", "/").await == "fweb-0")
            .then_some(())
    })
    .await;
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}

/// The Kubernetes documentation's path-matching table, wildcards, default backends and a set of
/// annotations, through the live watch (tests/ingress.rs holds each annotation in detail, from
/// manifests through the same translation).
async fn ingress_path_table_wildcards_defaults_and_annotations_live(env: &Env) {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::networking::v1::Ingress;
    let c = &env.client;
    namespace(c, "table").await;
    for p in ["a", "b", "c"] {
        service(
            c,
            "table",
            json!({ "metadata": { "name": format!("s-{p}") }, "spec": { "selector": { "app": format!("t{p}") },
                "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] } }),
        )
        .await;
        add_ready_pod(env, "table", &format!("t{p}-0"), json!({ "app": format!("t{p}") }), 8080).await;
    }
    ingress_class(c, "ferry", ferry::sources::ingress::CONTROLLER).await;
    let (f, tasks) = start_ingress(c, None).await;
    let web = f.addr(ferry::sources::ingress::HTTP_LISTENER).unwrap();
    let table = support::PATH_TABLE;
    let svcs = ["s-a", "s-b", "s-c"];
    for (n, (paths, _, _)) in table.iter().enumerate() {
        let p: Vec<(&str, &str, &str)> = paths.iter().enumerate().map(|(i, (p, t))| (*p, *t, svcs[i])).collect();
        create::<Ingress>(
            c,
            Some("table"),
            ingress_json(&format!("row{n}"), "ferry", &format!("row{n}.example.com"), &p),
        )
        .await;
    }
    // A wildcard host, a defaultBackend, and annotations.
    create::<Ingress>(c, Some("table"), ingress_json("wild", "ferry", "*.wild.example.com", &[("/", "Prefix", "s-b")]))
        .await;
    let mut with_default = ingress_json("dflt", "ferry", "dflt.example.com", &[("/x", "Prefix", "s-a")]);
    with_default["spec"]["defaultBackend"] = json!({ "service": { "name": "s-c", "port": { "number": 80 } } });
    create::<Ingress>(c, Some("table"), with_default).await;
    let annotated = |name: &str, host: &str, path: (&str, &str, &str), ann: serde_json::Value| {
        let mut i = ingress_json(name, "ferry", host, &[path]);
        i["metadata"]["annotations"] = ann;
        i
    };
    let p = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    create::<Ingress>(
        c,
        Some("table"),
        annotated(
            "rw",
            "rw.example.com",
            ("/app(/|$)(.*)", "ImplementationSpecific", "s-a"),
            json!({ p("rewrite-target"): "/$2", p("use-regex"): "true" }),
        ),
    )
    .await;
    create::<Ingress>(
        c,
        Some("table"),
        annotated(
            "deny",
            "deny.example.com",
            ("/", "Prefix", "s-a"),
            json!({ p("whitelist-source-range"): "192.0.2.0/24" }),
        ),
    )
    .await;
    create::<Ingress>(c, Some("table"), annotated("primary", "canary.example.com", ("/", "Prefix", "s-a"), json!({})))
        .await;
    create::<Ingress>(
        c,
        Some("table"),
        annotated(
            "canary",
            "canary.example.com",
            ("/", "Prefix", "s-b"),
            json!({ p("canary"): "true", p("canary-by-header"): "X-Canary" }),
        ),
    )
    .await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    create::<Secret>(
        c,
        Some("table"),
        json!({ "metadata": { "name": "users" }, "stringData": { "auth": format!("u:{hash}\n") } }),
    )
    .await;
    create::<Ingress>(
        c,
        Some("table"),
        annotated(
            "auth",
            "auth.example.com",
            ("/", "Prefix", "s-a"),
            json!({ p("auth-type"): "basic", p("auth-secret"): "users" }),
        ),
    )
    .await;
    eventually("every Ingress served", WAIT, || async {
        (who_host(web, "auth.example.com", "/").await == "status 401").then_some(())
    })
    .await;
    for (n, (paths, request, want)) in table.iter().enumerate() {
        let got = who_host(web, &format!("row{n}.example.com"), request).await;
        let want = match want {
            Some(i) => ["ta-0", "tb-0", "tc-0"][*i].to_string(),
            None => "status 404".to_string(),
        };
        assert_eq!(got, want, "row {n}: paths {paths:?}, request {request}");
    }
    assert_eq!(who_host(web, "one.wild.example.com", "/").await, "tb-0");
    // Not under the wildcard (exactly one label): the oldest spec.defaultBackend takes it.
    assert_eq!(who_host(web, "two.one.wild.example.com", "/").await, "tc-0", "exactly one label");
    assert_eq!(who_host(web, "dflt.example.com", "/x/1").await, "ta-0");
    assert_eq!(who_host(web, "dflt.example.com", "/elsewhere").await, "tc-0", "the host's defaultBackend");
    let r = support::get_host(web, "rw.example.com", "/app/new/path").await;
    assert!(r.text().starts_with("ta-0 GET /new/path"), "{}", r.text());
    assert_eq!(who_host(web, "deny.example.com", "/").await, "status 403");
    let canary = support::send(
        web,
        http::Request::get("/")
            .header("host", "canary.example.com")
            .header("x-canary", "always")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert!(canary.text().starts_with("tb-0"), "{}", canary.text());
    assert_eq!(who_host(web, "canary.example.com", "/").await, "ta-0");
    use base64::Engine as _;
    let authed = support::send(
        web,
        http::Request::get("/")
            .header("host", "auth.example.com")
            .header("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:pw")))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert!(authed.text().starts_with("ta-0"), "{}", authed.text());
    // The cluster is shared with the tests after this one: its catch-all default goes.
    Api::<Ingress>::namespaced(c.clone(), "table").delete("dflt", &Default::default()).await.unwrap();
    eventually("the catch-all default gone", WAIT, || async {
        (who_host(web, "unknown.example.com", "/").await == "status 404").then_some(())
    })
    .await;
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}

/// The Gateway API CRDs (standard channel, the conformance suite's release), applied once.
fn gateway_crds(env: &Env) {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/gateway-crds.sh"))
        .output()
        .expect("tests/tools/gateway-crds.sh runs");
    assert!(out.status.success(), "gateway-crds.sh: {}", String::from_utf8_lossy(&out.stderr));
    let file = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    env.cp.kubectl(&["apply", "--server-side", "-f", &file]).unwrap_or_else(|e| panic!("{e}"));
    env.cp
        .kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/referencegrants.gateway.networking.k8s.io",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
}

fn dynamic(client: &Client, ns: Option<&str>, kind: &str) -> Api<kube::api::DynamicObject> {
    let ar = ferry::sources::gateway::api_resource(kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn apply_dynamic(client: &Client, ns: Option<&str>, kind: &str, v: serde_json::Value) {
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let mut v = v;
    v["apiVersion"] = json!("gateway.networking.k8s.io/v1");
    v["kind"] = json!(kind);
    dynamic(client, ns, kind).patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&v)).await.unwrap();
}

/// The condition `type_` of a status conditions list: (status, reason).
fn condition(conds: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    conds.as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        (c["status"].as_str().unwrap_or_default().to_string(), c["reason"].as_str().unwrap_or_default().to_string())
    })
}

/// The Gateway controller and one Gateway's data plane (both in-process, as `ferry
/// gateway-controller` and `ferry run --gateway` run them) against the real apiserver: the
/// status the spec asks for, the data plane provisioned (Deployment and Service owned by the
/// Gateway, the binding of its ServiceAccount), and traffic through a route that changes live.
async fn gateway_api_status_provisioning_and_live_routes(env: &Env) {
    use ferry::sources::{gateway, gateway_watch, provision, status::Election};
    let c = &env.client;
    gateway_crds(env);
    namespace(c, "gw").await;
    namespace(c, "gw-apps").await;
    for app in ["one", "two"] {
        service(
            c,
            "gw-apps",
            json!({ "metadata": { "name": app }, "spec": { "selector": { "app": app },
                "ports": [ { "name": "http", "port": 8080, "targetPort": "http" } ] } }),
        )
        .await;
        add_ready_pod(env, "gw-apps", &format!("{app}-0"), json!({ "app": app }), 8080).await;
    }
    // deploy/gateway as it is (its GatewayClass, RBAC and controller Deployment); the controller
    // itself runs here, with its ServiceAccount's token, as the data plane does with its own.
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/gateway");
    env.cp.kubectl(&["apply", "-k", deploy]).unwrap_or_else(|e| panic!("{e}"));
    let token_of = |ns: &'static str, sa: &'static str| async move {
        let tr: TokenRequest =
            serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
        let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
        let t = sas.create_token_request(sa, &PostParams::default(), &tr).await.unwrap().status.unwrap().token;
        client_for(&env.cp.token_kubeconfig(sa, &t)).await
    };
    let as_controller = token_of("ferry", "ferry-gateway-controller").await;
    apply_dynamic(c, Some("gw"), "Gateway", json!({ "metadata": { "name": "edge", "namespace": "gw" },
        "spec": { "gatewayClassName": "ferry", "listeners": [
            { "name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": { "namespaces": { "from": "All" } } } ] } }))
    .await;
    let route = |path: &str, svc: &str| {
        json!({ "metadata": { "name": "shop", "namespace": "gw-apps" }, "spec": {
            "parentRefs": [ { "name": "edge", "namespace": "gw" } ],
            "hostnames": [ "shop.example.com" ],
            "rules": [ { "matches": [ { "path": { "type": "PathPrefix", "value": path } } ],
                         "backendRefs": [ { "name": svc, "port": 8080 } ] } ] } })
    };
    apply_dynamic(c, Some("gw-apps"), "HTTPRoute", route("/", "one")).await;

    let dir = tempfile::tempdir().unwrap();
    let settings = gateway::Settings::new([127, 0, 0, 1].into(), dir.path().join("secrets"));
    let controller = gateway_watch::GatewayWatch {
        settings: settings.clone(),
        serve: None,
        controller: Some(gateway_watch::Controller {
            provision: provision::Provision {
                image: "ferry.invalid/ferry:test".into(),
                image_pull_policy: "Never".into(),
                replicas: 2,
            },
            election: Election {
                namespace: "ferry".into(),
                name: "ferry-gateway-controller-test".into(),
                identity: "test-controller".into(),
                duration: Duration::from_secs(15),
            },
        }),
    };
    let controlling = tokio::spawn(controller.run(as_controller, None));

    // GatewayClass: Accepted, with the features ferry declares.
    eventually("the GatewayClass Accepted", WAIT, || async {
        let gc = dynamic(c, None, "GatewayClass").get("ferry").await.ok()?;
        let st = gc.data.get("status")?;
        let features: Vec<&str> =
            st["supportedFeatures"].as_array()?.iter().filter_map(|f| f["name"].as_str()).collect();
        (condition(&st["conditions"], "Accepted") == Some(("True".into(), "Accepted".into()))
            && features.contains(&"HTTPRoute"))
        .then_some(())
    })
    .await;
    // The data plane: a Deployment and a Service owned by the Gateway.
    let gw = dynamic(c, Some("gw"), "Gateway").get("edge").await.unwrap();
    let uid = gw.metadata.uid.clone().unwrap();
    let deploy = eventually("the data plane Deployment", WAIT, || async {
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), "gw").get_opt("edge-ferry").await.ok()?
    })
    .await;
    assert_eq!(deploy.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    let pod = deploy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(provision::DATA_PLANE_ACCOUNT));
    assert_eq!(pod.containers[0].args.as_ref().unwrap()[..3], ["run", "--gateway", "gw/edge"]);
    let svc = eventually("the data plane Service", WAIT, || async {
        Api::<Service>::namespaced(c.clone(), "gw").get_opt("edge-ferry").await.ok()?
    })
    .await;
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.unwrap()[0].port, 80);
    let cluster_ip = spec.cluster_ip.unwrap();
    eventually("the data plane account bound", WAIT, || async {
        let crbs = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(c.clone());
        let crb = crbs.get_opt(provision::DATA_PLANE_ACCOUNT).await.ok()??;
        crb.subjects?.iter().any(|s| s.namespace.as_deref() == Some("gw")).then_some(())
    })
    .await;
    // Gateway status: Accepted, Programmed with the Service's address, the listener with its route.
    eventually("the Gateway's status", WAIT, || async {
        let gw = dynamic(c, Some("gw"), "Gateway").get("edge").await.ok()?;
        let st = gw.data.get("status")?;
        let l = &st["listeners"][0];
        (condition(&st["conditions"], "Accepted").map(|c| c.0) == Some("True".into())
            && condition(&st["conditions"], "Programmed").map(|c| c.0) == Some("True".into())
            && st["addresses"][0]["value"] == cluster_ip.as_str()
            && l["attachedRoutes"] == 1
            && condition(&l["conditions"], "Programmed").map(|c| c.0) == Some("True".into())
            && st["conditions"][0]["observedGeneration"] == gw.metadata.generation.unwrap())
        .then_some(())
    })
    .await;
    // Route status: one parent, ferry's, Accepted and ResolvedRefs.
    eventually("the HTTPRoute's status", WAIT, || async {
        let r = dynamic(c, Some("gw-apps"), "HTTPRoute").get("shop").await.ok()?;
        let p = &r.data.pointer("/status/parents")?[0];
        (p["controllerName"] == gateway::CONTROLLER
            && condition(&p["conditions"], "Accepted").map(|c| c.0) == Some("True".into())
            && condition(&p["conditions"], "ResolvedRefs").map(|c| c.0) == Some("True".into()))
        .then_some(())
    })
    .await;

    // The data plane, serving on loopback, with the ServiceAccount the controller made and bound.
    let as_data_plane = token_of("gw", provision::DATA_PLANE_ACCOUNT).await;
    let mut dp = settings.clone();
    dp.any_port = true;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let watch =
        gateway_watch::GatewayWatch { settings: dp, serve: Some(("gw".into(), "edge".into())), controller: None };
    let watching = tokio::spawn(watch.run(as_data_plane.clone(), Some(tx)));
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let feed = ferry::server::feed::Feed { base: None, admin: any, secrets_dir: settings.secrets_dir.clone() };
    let opts = ferry::Options { kube: Some(as_data_plane), discovery_all: true, ..support::quiet() };
    let (f, follow) = feed.start(rx, None, opts).await.unwrap();
    let tasks = Tasks { tasks: vec![watching, follow, controlling], _secrets: dir };
    let web = f.addr(&gateway::listener_name(80)).unwrap();
    eventually("the route served", WAIT, || async {
        (who_host(web, "shop.example.com", "/x").await == "one-0").then_some(())
    })
    .await;
    assert_eq!(who_host(web, "other.example.com", "/x").await, "status 404", "not the route's hostname");
    // A rule added to the live route reaches traffic; a backend that does not exist answers 500
    // and the status says why.
    let mut r = route("/", "one");
    r["spec"]["rules"].as_array_mut().unwrap().push(json!({
        "matches": [ { "path": { "type": "PathPrefix", "value": "/two" } } ],
        "backendRefs": [ { "name": "two", "port": 8080 } ] }));
    r["spec"]["rules"].as_array_mut().unwrap().push(json!({
        "matches": [ { "path": { "type": "PathPrefix", "value": "/gone" } } ],
        "backendRefs": [ { "name": "gone", "port": 8080 } ] }));
    apply_dynamic(c, Some("gw-apps"), "HTTPRoute", r).await;
    eventually("the new rule served", WAIT, || async {
        (who_host(web, "shop.example.com", "/two/x").await == "two-0").then_some(())
    })
    .await;
    assert_eq!(who_host(web, "shop.example.com", "/gone").await, "status 500");
    eventually("ResolvedRefs False, BackendNotFound", WAIT, || async {
        let r = dynamic(c, Some("gw-apps"), "HTTPRoute").get("shop").await.ok()?;
        let p = &r.data.pointer("/status/parents")?[0];
        (condition(&p["conditions"], "ResolvedRefs") == Some(("False".into(), "BackendNotFound".into()))).then_some(())
    })
    .await;
    tasks.stop().await;
    Arc::try_unwrap(f).ok().expect("only the test holds ferry").shutdown(Duration::ZERO, WAIT).await;
}
