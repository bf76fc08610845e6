//! deploy/ end to end, on real nodes: the control plane of tests/cluster.rs plus kube-scheduler,
//! and two nodes (tests/cluster/node.sh: each a network and mount namespace running Debian's
//! containerd and runc, the CNI bridge, and a kubelet and kube-proxy built from the same
//! Kubernetes release). `kubectl apply -k tests/deploy/overlay` (deploy/ with only the image
//! replaced by one built here from the ferry binary under test) must give two Ready ferry pods
//! behind the NodePort, and under steady load through the NodePorts of both nodes a rolling update
//! of the backend, a deleted ferry pod, a rolling update of ferry, scaling the backend 3 → 1 → 3
//! and a ConfigMap edit must fail no request. A pod whose readiness probe fails gets none. A table of scenario, requests,
//! failed and time to converge is printed at the end.
//!
//! One cluster for the whole binary, torn down by the last trial, which checks that nothing made
//! here is left (processes, namespaces, links, cgroups), also when a scenario failed. Needs root
//! and the tools named in `main`; a missing one fails the run with its name.

#[path = "support/cluster.rs"]
mod cluster_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::{alive, list_only, panic_text, tools_present, ControlPlane};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::json;

/// How many nodes: two, so the NodePort is proven from every node and ferry's anti-affinity
/// spreads its pods.
const NODES: usize = 2;
/// The NodePort deploy/service.yaml fixes.
const NODE_PORT: u16 = 30080;
/// Upper bound for any one wait (the cluster is slow only when the machine is).
const WAIT: Duration = Duration::from_secs(180);
/// Load: this many clients, each one request at a time with this pause between requests, for at
/// most this many requests each (every scenario also ends as soon as it has converged). Half keep
/// their connection alive (as a browser, or a front nginx with upstream keepalive); half open a new
/// one per request (a front nginx without it), so every change of kube-proxy's rules is crossed
/// by new connections all the time.
const CLIENTS: usize = 8;
const PAUSE: Duration = Duration::from_millis(5);
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.stderr(Stdio::piped()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nodes node.sh made, taken down (everything node.sh started or made) on drop.
struct Nodes {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Nodes {
    fn net() -> Result<Nodes, String> {
        let dir = tempfile::Builder::new().prefix("ferry-nodes-").tempdir().map_err(|e| e.to_string())?;
        // Made before node.sh runs, so whatever it made before a failure is taken down.
        let mut nodes = Nodes { dir, env: BTreeMap::new() };
        run(Command::new(repo().join("tests/cluster/node.sh"))
            .arg("net")
            .arg(nodes.dir.path())
            .arg(NODES.to_string()))?;
        let env = std::fs::read_to_string(nodes.dir.path().join("nodes.env")).map_err(|e| e.to_string())?;
        nodes.env =
            env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(nodes)
    }

    fn var(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_else(|| panic!("{key} missing from nodes.env"))
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        self.var(&format!("NODE{i}_IP")).parse().expect("node address")
    }

    fn start(&self, cp: &ControlPlane, images: &[PathBuf]) -> Result<(), String> {
        let mut cmd = Command::new(repo().join("tests/cluster/node.sh"));
        cmd.arg("start").arg(self.dir.path()).args(images).env("FERRY_K8S_ENV", cp.dir.path().join("env"));
        run(&mut cmd).map(|_| ())
    }

    /// (name, PID) of every process node.sh started.
    fn pids(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(self.dir.path().join("node-pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (n, p) = l.split_once(' ')?;
                Some((n.to_string(), p.trim().parse().ok()?))
            })
            .collect()
    }

    /// The directories node.sh made outside its own: cgroups above the nodes' roots, and mount
    /// points on the host for the nodes' tmpfs (absolute paths).
    fn dirs_made(&self) -> Vec<String> {
        (1..=NODES)
            .map(|i| format!("node{i}/cgroups-made"))
            .chain(["dirs-made".to_string()])
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// The cgroup each node's pods live under (as the kubelet was told: `cgroupRoot`).
    fn cgroup_roots(&self) -> Vec<String> {
        (1..=NODES)
            .filter_map(|i| std::fs::read_to_string(self.dir.path().join(format!("node{i}/cgroup-root"))).ok())
            .map(|s| s.trim().to_string())
            .collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/cluster/node.sh")).arg("down").arg(self.dir.path()).status();
    }
}

/// The image the test deploys: the ferry binary under test (debug info stripped when objcopy is
/// there), with the shared libraries it links, as a docker-archive tar.
fn ferry_image(dir: &Path) -> Result<PathBuf, String> {
    let bin = dir.join("ferry");
    if run(Command::new("objcopy").arg("--strip-debug").arg(env!("CARGO_BIN_EXE_ferry")).arg(&bin)).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_ferry"), &bin).map_err(|e| e.to_string())?;
    }
    let tar = dir.join("ferry.tar");
    run(Command::new("python3")
        .arg(repo().join("tests/cluster/mkimage.py"))
        .arg(&tar)
        .arg("ferry.invalid/ferry:test")
        .args([
            "--entrypoint",
            "/usr/local/bin/ferry",
            "--cmd",
            "run -c /etc/ferry/routes.yaml",
            "--user",
            "65532:65532",
        ])
        .arg("--file")
        .arg(format!("{}=/usr/local/bin/ferry", bin.display()))
        .arg("--with-libs")
        .arg(&bin))?;
    Ok(tar)
}

struct Env {
    // Field order is drop order: the nodes go first (their kubelets need nothing of the control
    // plane to stop), then the control plane.
    nodes: Nodes,
    cp: ControlPlane,
    client: Client,
    rt: tokio::runtime::Runtime,
}

/// One line of the closing table.
struct Row {
    scenario: &'static str,
    counts: Counts,
    converged: Duration,
}

type Rows = Arc<Mutex<Vec<Row>>>;
type TestFn = for<'a> fn(&'a Env, &'a Rows) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

const TESTS: &[(&str, TestFn)] = &[
    ("deploy_applies_and_both_nodes_answer_on_the_node_port", |e, r| Box::pin(deploy_applies(e, r))),
    ("a_rolling_update_of_the_backend_fails_no_request", |e, r| Box::pin(backend_rolling_update(e, r))),
    ("deleting_a_ferry_pod_fails_no_request", |e, r| Box::pin(delete_a_ferry_pod(e, r))),
    ("a_rolling_update_of_ferry_fails_no_request", |e, r| Box::pin(ferry_rolling_update(e, r))),
    ("scaling_the_backend_3_1_3_fails_no_request", |e, r| Box::pin(scale_backend(e, r))),
    ("a_configmap_edit_reaches_both_pods_without_a_restart", |e, r| Box::pin(configmap_edit(e, r))),
    ("an_ingress_is_served_on_both_nodes_with_its_status", |e, r| Box::pin(ingress_on_real_nodes(e, r))),
];

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let names: Vec<&str> = TESTS.iter().map(|t| t.0).chain(["teardown_leaves_nothing_behind"]).collect();
    if let Some(code) = list_only(&args, &names) {
        return code;
    }
    if !tools_present(
        "deploy tests",
        &[
            ("ip", "iproute2, for the nodes' network namespaces"),
            ("nsenter", "util-linux, to run the node daemons in their namespaces"),
            ("go", "to build the control plane, kubelet and kube-proxy"),
            ("openssl", "for the control plane's certificates"),
            ("python3", "to write the images"),
            ("gcc", "to build the pause image"),
            ("containerd", "Debian's containerd, the nodes' container runtime"),
            ("runc", "Debian's runc"),
            ("ctr", "containerd's client, to import the images"),
            ("iptables", "for kube-proxy"),
        ],
    ) {
        return ExitCode::FAILURE;
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("deploy tests: the CNI plugins are missing (Debian's containernetworking-plugins)");
        return ExitCode::FAILURE;
    }
    let env = match setup() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("deploy tests: {e}");
            return ExitCode::FAILURE;
        }
    };
    let made = Made {
        pids: env.cp.pids().into_iter().chain(env.nodes.pids()).collect(),
        netns: (1..=NODES).map(|i| env.nodes.var(&format!("NODE{i}_NETNS")).to_string()).collect(),
        bridge: env.nodes.var("BRIDGE").to_string(),
        cgroups: env.nodes.cgroup_roots(),
        dirs_made: env.nodes.dirs_made(),
    };
    let env = Arc::new(Mutex::new(Some(env)));
    let rows: Rows = Arc::default();
    let mut trials: Vec<Trial> = TESTS
        .iter()
        .map(|&(name, test)| {
            let (env, rows) = (env.clone(), rows.clone());
            Trial::test(name, move || {
                let guard = env.lock().unwrap_or_else(|p| p.into_inner());
                let env = guard.as_ref().ok_or("the cluster is already down")?;
                std::panic::catch_unwind(AssertUnwindSafe(|| env.rt.block_on(test(env, &rows))))
                    .map_err(|p| panic_text(&p).into())
            })
        })
        .collect();
    let (last, made2, rows2) = (env.clone(), made.clone(), rows.clone());
    trials.push(Trial::test("teardown_leaves_nothing_behind", move || {
        print_table(&rows2);
        teardown(&last, &made2)
    }));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = teardown(&env, &made) {
        eprintln!("deploy tests: {e:?}");
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

fn setup() -> Result<Env, String> {
    let nodes = Nodes::net()?;
    let host = nodes.var("HOST_IP").to_string();
    let cp = ControlPlane::start_with(&[("FERRY_K8S_NODES", "1"), ("FERRY_K8S_ADDRESS", &host)])?;
    let image = ferry_image(nodes.dir.path())?;
    nodes.start(&cp, &[image])?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let client = rt.block_on(cp.client());
    eprintln!("deploy tests: {NODES} node(s) on {} ({host}), control plane up", nodes.var("BRIDGE"));
    Ok(Env { nodes, cp, client, rt })
}

#[derive(Clone)]
struct Made {
    pids: Vec<(String, u32)>,
    netns: Vec<String>,
    bridge: String,
    cgroups: Vec<String>,
    dirs_made: Vec<String>,
}

fn teardown(env: &Arc<Mutex<Option<Env>>>, made: &Made) -> Result<(), Failed> {
    drop(env.lock().unwrap_or_else(|p| p.into_inner()).take());
    let mut left = Vec::new();
    for (name, pid) in &made.pids {
        if alive(*pid) {
            left.push(format!("process {name} ({pid})"));
        }
    }
    let namespaces = run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for n in &made.netns {
        if namespaces.lines().any(|l| l.split_whitespace().next() == Some(n.as_str())) {
            left.push(format!("network namespace {n}"));
        }
    }
    if run(Command::new("ip").args(["link", "show", &made.bridge])).is_ok() {
        left.push(format!("bridge {}", made.bridge));
    }
    for root in &made.cgroups {
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let p = h.path().join(root.trim_start_matches('/'));
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
    }
    for dir in &made.dirs_made {
        if Path::new(dir).exists() {
            left.push(format!("directory {dir}"));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind: {}", left.join(", ")).into())
    }
}

fn print_table(rows: &Rows) {
    let rows = rows.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = String::from("\ndeploy end to end (load through the NodePort of every node)\n");
    t += &format!(
        "{:<44} {:>9} {:>7} {:>8} {:>9} {:>12}\n",
        "scenario", "requests", "failed", "retried", "upstreams", "converged"
    );
    for r in rows.iter() {
        t += &format!(
            "{:<44} {:>9} {:>7} {:>8} {:>9} {:>11.1}s\n",
            r.scenario,
            r.counts.ok + r.counts.failed,
            r.counts.failed,
            r.counts.retried,
            r.counts.upstreams.len(),
            r.converged.as_secs_f64()
        );
    }
    eprintln!("{t}");
}

// ---------------------------------------------------------------------------------------------
// Load through the NodePorts

#[derive(Default, Clone, Debug)]
struct Counts {
    ok: u64,
    failed: u64,
    /// Requests sent again on a new connection because a kept-alive one had closed before the
    /// request could be written (what HTTP clients do); a retry that fails counts in `failed`.
    retried: u64,
    /// The pods that answered (`gateway <pod>` bodies).
    upstreams: BTreeSet<String>,
    /// The first few failures, for the assertion message.
    errors: Vec<String>,
}

impl Counts {
    fn merge(&mut self, o: Counts) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.retried += o.retried;
        self.upstreams.extend(o.upstreams);
        for e in o.errors {
            if self.errors.len() < 10 {
                self.errors.push(e);
            }
        }
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Counts>>,
}

impl Load {
    /// Starts `CLIENTS` clients spread over the node addresses.
    fn start(targets: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..CLIENTS)
            .map(|i| {
                let (stop, to) = (stop.clone(), targets[i % targets.len()]);
                tokio::spawn(client(to, i % 4 < 2, stop))
            })
            .collect();
        Load { stop, clients }
    }

    async fn finish(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Counts::default();
        for c in self.clients {
            all.merge(c.await.expect("load client"));
        }
        all
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(to: SocketAddr) -> Result<Sender, String> {
    let s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| format!("connect to {to}: timed out"))?
        .map_err(|e| format!("connect to {to}: {e}"))?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(tx)
}

/// One request; Ok(body) on a 200.
async fn once(tx: &mut Sender, to: SocketAddr) -> Result<(String, bool), (String, bool)> {
    let req = hyper::Request::get("/orders/1").header("host", to.to_string()).body(Empty::new()).unwrap();
    let fut = async {
        tx.ready().await.map_err(|e| (format!("not ready: {e}"), true))?;
        let resp = tx.send_request(req).await.map_err(|e| {
            // The kept-alive connection closed before the request went out: nothing was sent, so
            // it may be sent again (hyper-util's pooled client does the same). One that closes
            // after the request was written fails it.
            (format!("send: {e}"), e.is_canceled())
        })?;
        let status = resp.status();
        let close = resp.headers().get("connection").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp.into_body().collect().await.map_err(|e| (format!("body: {e}"), false))?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err((format!("status {status}: {}", body.trim()), false));
        }
        Ok((body, close))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| ("no answer in 10 s".to_string(), false))?
}

async fn client(to: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>) -> Counts {
    let mut c = Counts::default();
    let mut conn: Option<Sender> = None;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < MAX_REQUESTS_PER_CLIENT {
        sent += 1;
        let fresh = conn.is_none();
        let mut tx = match conn.take() {
            Some(tx) => tx,
            None => match connect(to).await {
                Ok(tx) => tx,
                Err(e) => {
                    c.failed += 1;
                    note(&mut c, e);
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            },
        };
        let mut result = once(&mut tx, to).await;
        if let Err((_, true)) = &result {
            if !fresh {
                // A kept-alive connection closed under the request: once more on a new one.
                c.retried += 1;
                result = match connect(to).await {
                    Ok(new) => {
                        tx = new;
                        once(&mut tx, to).await
                    }
                    Err(e) => Err((e, false)),
                };
            }
        }
        match result {
            Ok((body, close)) => {
                let who = body.trim().strip_prefix("gateway ").unwrap_or(body.trim()).to_string();
                if who == "never-ready" || !body.starts_with("gateway ") {
                    c.failed += 1;
                    note(&mut c, format!("answered by {:?}", body.trim()));
                } else {
                    c.ok += 1;
                    c.upstreams.insert(who);
                }
                if keep_alive && !close {
                    conn = Some(tx);
                }
            }
            Err((e, _)) => {
                c.failed += 1;
                note(&mut c, e);
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    c
}

fn note(c: &mut Counts, e: String) {
    if c.errors.len() < 10 {
        c.errors.push(e);
    }
}

fn targets(env: &Env) -> Vec<SocketAddr> {
    (1..=NODES).map(|i| SocketAddr::from((env.nodes.ip(i), NODE_PORT))).collect()
}

/// Runs `action` under load, then waits for `converged`; records and checks the counts.
async fn under_load<A, C>(env: &Env, rows: &Rows, scenario: &'static str, action: A, converged: C)
where
    A: std::future::Future<Output = ()>,
    C: std::future::Future<Output = ()>,
{
    let load = Load::start(targets(env));
    // A moment of load before the change, so connections are established and kept alive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    action.await;
    converged.await;
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = load.finish().await;
    eprintln!("deploy tests: {scenario}: {counts:?}, converged in {took:.1?}");
    rows.lock().unwrap().push(Row { scenario, counts: counts.clone(), converged: took });
    assert!(counts.ok > 0, "{scenario}: no request succeeded");
    assert_eq!(counts.failed, 0, "{scenario}: failed requests, first ones: {:?}", counts.errors);
}

// ---------------------------------------------------------------------------------------------
// Cluster helpers

fn kubectl(env: &Env, args: &[&str]) -> String {
    env.cp.kubectl(args).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn pods(env: &Env, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    api.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

/// Waits until exactly `n` pods match, all Ready, none terminating; returns them.
async fn settled(env: &Env, ns: &str, selector: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} ready pods {selector} in {ns}"), || async {
        let pods = pods(env, ns, selector).await;
        (pods.len() == n && pods.iter().all(ready)).then_some(pods)
    })
    .await
}

async fn rolled_out(env: &Env, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    eventually(&format!("deployment {ns}/{name} rolled out"), || async {
        let d = api.get(name).await.ok()?;
        let want = d.spec.as_ref()?.replicas.unwrap_or(1);
        let s = d.status.as_ref()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.ready_replicas == Some(want)
            && s.replicas == Some(want);
        done.then_some(())
    })
    .await;
}

fn pod_ip(p: &Pod) -> Ipv4Addr {
    p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).and_then(|ip| ip.parse().ok()).expect("pod IP")
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// One GET on a new connection: to a NodePort, or straight to a pod (the host routes each node's
/// pod CIDR over the nodes' bridge).
async fn get(to: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_host(to, "deploy-test", path).await
}

async fn get_host(to: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut tx = connect(to).await.ok()?;
    let req = hyper::Request::get(path).header("host", host).body(Empty::new()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

// ---------------------------------------------------------------------------------------------
// Scenarios

const FERRY: &str = "app.kubernetes.io/name=ferry";
const UPSTREAM: &str = "app=gateway,role=upstream";

async fn deploy_applies(env: &Env, rows: &Rows) {
    let nodes: Api<Node> = Api::all(env.client.clone());
    let t0 = Instant::now();
    eventually("every node Ready", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let ready = list.items.iter().filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        (ready.count() == NODES).then_some(())
    })
    .await;
    let backend = repo().join("tests/deploy/backend.yaml");
    kubectl(env, &["apply", "-f", backend.to_str().unwrap()]);
    let overlay = repo().join("tests/deploy/overlay");
    kubectl(env, &["apply", "-k", overlay.to_str().unwrap()]);
    let upstreams = settled(env, "test-basic-gateway", UPSTREAM, 3).await;
    let ferries = settled(env, "ferry", FERRY, 2).await;
    // kube-proxy programs the NodePort once it sees the Service and its ready endpoints.
    for to in targets(env) {
        eventually(&format!("the NodePort {to} to answer"), || async {
            get(to, "/orders/1").await.filter(|(status, _)| *status == 200)
        })
        .await;
    }
    let took = t0.elapsed();

    // The anti-affinity spreads the two ferry pods over the two nodes.
    let on: BTreeSet<_> = ferries.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    assert_eq!(on.len(), NODES.min(2), "ferry pods on nodes {on:?}");

    // The securityContext holds, as the kernel sees the ferry processes: not root, no
    // capabilities, no privilege gain, a read-only root file system.
    let procs = ferry_processes(env);
    assert_eq!(procs.len(), 2, "ferry processes of the two pods: {procs:?}");
    for pid in procs {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |k: &str| {
            status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.split_whitespace().collect::<Vec<_>>()).unwrap()
        };
        assert!(field("Uid:").iter().all(|u| *u == "65532"), "uids {:?}", field("Uid:"));
        assert!(field("Gid:").iter().all(|g| *g == "65532"), "gids {:?}", field("Gid:"));
        assert_eq!(field("CapEff:"), ["0000000000000000"]);
        assert_eq!(field("CapBnd:"), ["0000000000000000"]);
        assert_eq!(field("NoNewPrivs:"), ["1"]);
        assert_eq!(field("Seccomp:"), ["2"], "RuntimeDefault seccomp filter");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mounts.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("root mount");
        let opts = root.split_whitespace().nth(5).unwrap_or("");
        assert!(opts.split(',').any(|o| o == "ro"), "root file system mounted {opts}");
    }

    // Every node's NodePort answers, from the backend pods, never from the one that is not ready.
    let never = pods(env, "test-basic-gateway", "role=never-ready").await;
    assert_eq!(never.len(), 1);
    assert!(!ready(&never[0]), "the never-ready pod is not Ready");
    let names: BTreeSet<String> = upstreams.iter().filter_map(|p| p.metadata.name.clone()).collect();
    for to in targets(env) {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            let (status, body) = get(to, "/orders/1").await.expect("the NodePort answers");
            assert_eq!(status, 200, "{to}: {body}");
            let who = body.trim().strip_prefix("gateway ").expect("a gateway answer").to_string();
            assert!(names.contains(&who), "{to}: answered by {who}, not one of {names:?}");
            seen.insert(who);
        }
        assert!(seen.len() > 1, "{to}: every answer from {seen:?}");
    }
    let counts = {
        let load = Load::start(targets(env));
        tokio::time::sleep(Duration::from_secs(3)).await;
        load.finish().await
    };
    assert_eq!(counts.failed, 0, "steady load: {:?}", counts.errors);
    assert_eq!(counts.upstreams, names, "steady load reached every ready backend pod and no other");
    rows.lock().unwrap().push(Row { scenario: "apply -k, then steady load", counts, converged: took });
}

/// PIDs of the ferry processes of deploy/'s pods (`-c /etc/ferry/routes.yaml`) on our nodes.
fn ferry_processes(env: &Env) -> Vec<u32> {
    let roots = env.nodes.cgroup_roots();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("/etc/ferry/routes.yaml") {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if roots.iter().any(|r| cgroup.contains(r.as_str())) {
            found.push(pid);
        }
    }
    found
}

async fn backend_rolling_update(env: &Env, rows: &Rows) {
    rolling_update(env, rows, "rolling update of the backend (3 pods)", "test-basic-gateway", "gateway", UPSTREAM, 3)
        .await;
}

/// `kubectl rollout restart` under load; converged when every pod is a new one and ready.
async fn rolling_update(
    env: &Env,
    rows: &Rows,
    scenario: &'static str,
    ns: &str,
    name: &str,
    selector: &str,
    n: usize,
) {
    let before: BTreeSet<_> = settled(env, ns, selector, n).await.into_iter().filter_map(|p| p.metadata.uid).collect();
    under_load(
        env,
        rows,
        scenario,
        async {
            kubectl(env, &["-n", ns, "rollout", "restart", &format!("deployment/{name}")]);
        },
        async {
            rolled_out(env, ns, name).await;
            let now = settled(env, ns, selector, n).await;
            let uids = now.iter().filter_map(|p| p.metadata.uid.as_deref());
            assert!(uids.clone().all(|u| !before.contains(u)), "every pod replaced");
        },
    )
    .await;
}

async fn delete_a_ferry_pod(env: &Env, rows: &Rows) {
    let before = settled(env, "ferry", FERRY, 2).await;
    let victim = before[0].metadata.name.clone().unwrap();
    under_load(
        env,
        rows,
        "one ferry pod deleted (SIGTERM drain)",
        async {
            kubectl(env, &["-n", "ferry", "delete", "pod", &victim, "--wait=false"]);
        },
        async {
            // Converged: the old pod is gone and two ready ones serve again.
            let pods = settled(env, "ferry", FERRY, 2).await;
            assert!(pods.iter().all(|p| p.metadata.name.as_deref() != Some(victim.as_str())));
        },
    )
    .await;
}

async fn ferry_rolling_update(env: &Env, rows: &Rows) {
    rolling_update(env, rows, "rolling update of ferry itself (2 pods)", "ferry", "ferry", FERRY, 2).await;
}

async fn scale_backend(env: &Env, rows: &Rows) {
    under_load(env, rows, "backend scaled 3 -> 1 -> 3", async {}, async {
        kubectl(env, &["-n", "test-basic-gateway", "scale", "deployment/gateway", "--replicas=1"]);
        settled(env, "test-basic-gateway", UPSTREAM, 1).await;
        kubectl(env, &["-n", "test-basic-gateway", "scale", "deployment/gateway", "--replicas=3"]);
        settled(env, "test-basic-gateway", UPSTREAM, 3).await;
    })
    .await;
}

async fn configmap_edit(env: &Env, rows: &Rows) {
    let before = settled(env, "ferry", FERRY, 2).await;
    let uids: BTreeSet<_> = before.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let restarts_before: i32 = before.iter().map(restarts).sum();
    let routes = std::fs::read_to_string(repo().join("deploy/routes.yaml")).unwrap();
    let anchor = "      - name: api\n";
    assert!(routes.contains(anchor), "deploy/routes.yaml keeps its catch-all route `api`");
    let added = routes.replacen(
        anchor,
        &format!("      - name: added-live\n        match: {{ path_prefix: /added-live }}\n        respond: {{ status: 200, body: \"added live\\n\" }}\n{anchor}"),
        1,
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "ferry");
    under_load(
        env,
        rows,
        "ConfigMap edited (a new route)",
        async {
            let patch = json!({ "data": { "routes.yaml": added } });
            cms.patch("ferry-routes", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch ConfigMap");
        },
        async {
            for p in &before {
                let to = SocketAddr::from((pod_ip(p), 8080));
                eventually(&format!("the new route on {}", p.metadata.name.as_deref().unwrap_or("?")), || async {
                    let (status, body) = get(to, "/added-live/x").await?;
                    (status == 200 && body == "added live\n").then_some(())
                })
                .await;
            }
        },
    )
    .await;
    // The same pods, not restarted: the file changed under them and ferry swapped its table.
    let after = settled(env, "ferry", FERRY, 2).await;
    let uids_after: BTreeSet<_> = after.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(uids, uids_after, "the ferry pods were replaced");
    assert_eq!(after.iter().map(restarts).sum::<i32>(), restarts_before, "a ferry container restarted");
}

/// deploy/ is also the Ingress controller: an Ingress created while routes.yaml's NodePort is under
/// load fails none of its requests, is served through the Ingress NodePort of both nodes, and
/// gets the nodes' addresses as its status (deploy/ publishes the NodePort Service ferry/ferry).
async fn ingress_on_real_nodes(env: &Env, rows: &Rows) {
    use k8s_openapi::api::networking::v1::Ingress;
    const INGRESS_NODE_PORT: u16 = 30081;
    let ingress: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": "shop", "namespace": "test-basic-gateway" },
        "spec": { "ingressClassName": "ferry", "rules": [ { "host": "shop.deploy-test", "http": { "paths": [
            { "path": "/", "pathType": "Prefix",
              "backend": { "service": { "name": "gateway", "port": { "name": "http" } } } } ] } } ] }
    }))
    .unwrap();
    let api: Api<Ingress> = Api::namespaced(env.client.clone(), "test-basic-gateway");
    let ingress_ports: Vec<SocketAddr> =
        (1..=NODES).map(|i| SocketAddr::from((env.nodes.ip(i), INGRESS_NODE_PORT))).collect();
    under_load(
        env,
        rows,
        "Ingress created (served on both nodes)",
        async {
            api.create(&kube::api::PostParams::default(), &ingress).await.expect("create the Ingress");
        },
        async {
            for to in &ingress_ports {
                eventually(&format!("the Ingress through {to}"), || async {
                    let (status, body) = get_host(*to, "shop.deploy-test", "/orders/2").await?;
                    (status == 200 && body.starts_with("gateway ")).then_some(())
                })
                .await;
            }
        },
    )
    .await;
    // Another host on the same port: the Ingress's host only.
    let (status, _) = get_host(ingress_ports[0], "other.deploy-test", "/").await.expect("an answer");
    assert_eq!(status, 404);
    let want: BTreeSet<String> = (1..=NODES).map(|i| env.nodes.ip(i).to_string()).collect();
    eventually("the Ingress's status: both nodes' addresses", || async {
        let i = api.get("shop").await.ok()?;
        let lb = i.status?.load_balancer?.ingress?;
        let got: BTreeSet<String> = lb.into_iter().filter_map(|a| a.ip).collect();
        (got == want).then_some(())
    })
    .await;
}
