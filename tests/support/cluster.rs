//! A real Kubernetes control plane for tests (kube-apiserver, etcd, kube-controller-manager, built
//! by tests/cluster/build.sh and started by up.sh), and "pods" without a kubelet: each pod is a
//! network namespace on a private bridge running a real upstream, registered as a Pod whose
//! status (podIP, Ready) the harness sets, so the real EndpointSlice controller does the rest.
//!
//! Test traffic never leaves the machine: the pod subnet is chosen to overlap no existing route,
//! and before any pod is used the harness checks that the kernel routes it through its own bridge.
//! Everything made here (processes, namespaces, links, the bridge) is removed on drop, also after
//! a panic.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub const NODE: &str = "ferry-test-node";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    sh("ip", args)
}

/// The running control plane. Dropping it stops every process up.sh started.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pids: Mutex<Vec<(String, u32)>>,
}

impl ControlPlane {
    /// Builds (or reuses) the binaries and starts the control plane.
    pub fn start() -> Result<ControlPlane, String> {
        Self::start_with(&[])
    }

    /// The same, with environment for build.sh and up.sh (`FERRY_K8S_NODES=1`: also the node
    /// binaries; `FERRY_K8S_ADDRESS`: serve on the nodes' bridge, with a scheduler).
    pub fn start_with(env: &[(&str, &str)]) -> Result<ControlPlane, String> {
        let build = Command::new(repo().join("tests/cluster/build.sh"))
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("build.sh: {e}"))?;
        if !build.status.success() {
            return Err("tests/cluster/build.sh failed".into());
        }
        let bin = PathBuf::from(String::from_utf8_lossy(&build.stdout).lines().last().unwrap_or("").trim());
        let dir = tempfile::Builder::new().prefix("ferry-cluster-").tempdir().map_err(|e| e.to_string())?;
        let up = Command::new(repo().join("tests/cluster/up.sh"))
            .arg(dir.path())
            .envs(env.iter().copied())
            .env("FERRY_K8S_BIN", &bin)
            .status()
            .map_err(|e| format!("up.sh: {e}"))?;
        if !up.success() {
            return Err("tests/cluster/up.sh failed".into());
        }
        let pids = std::fs::read_to_string(dir.path().join("pids"))
            .map_err(|e| e.to_string())?
            .lines()
            .filter_map(|l| {
                let (n, p) = l.split_once(' ')?;
                Some((n.to_string(), p.trim().parse().ok()?))
            })
            .collect();
        let kubeconfig = dir.path().join("kubeconfig");
        Ok(ControlPlane { dir, bin, kubeconfig, pids: Mutex::new(pids) })
    }

    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let kc = self.kubeconfig.to_string_lossy().into_owned();
        let mut all = vec!["--kubeconfig", kc.as_str()];
        all.extend_from_slice(args);
        sh(&self.bin.join("kubectl").to_string_lossy(), &all)
    }

    /// Stops one component (by the PID up.sh recorded) and starts it again with the same
    /// command line; used to take the apiserver away and bring it back.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.pids.lock().unwrap().iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }

    /// (component, PID) of everything running now.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.pids.lock().unwrap().clone()
    }

    /// Writes a kubeconfig for the same cluster that authenticates with `token` (for example a
    /// ServiceAccount token from a TokenRequest) and returns its path.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let admin = std::fs::read_to_string(&self.kubeconfig).expect("admin kubeconfig");
        let server = admin.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server").to_string();
        let ca = admin.lines().find_map(|l| l.trim().strip_prefix("certificate-authority: ")).expect("ca").to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u }}\ncurrent-context: x\n"
        );
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Stops a component started by up.sh (by its recorded PID) and returns its command line.
    pub fn stop_component(&self, name: &str) -> Vec<String> {
        let pid = self.pid_of(name).expect("component started by up.sh");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let _ = sh("kill", &["-TERM", &pid.to_string()]);
        let t0 = std::time::Instant::now();
        for _ in 0..100 {
            if !alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            // Graceful shutdown is taking too long: make it an outage.
            let _ = sh("kill", &["-KILL", &pid.to_string()]);
            while alive(pid) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        eprintln!("cluster tests: {name} stopped after {:.1}s", t0.elapsed().as_secs_f64());
        args
    }

    /// Starts a component again with `args` and records its new PID (so down.sh stops it).
    pub fn start_component(&self, name: &str, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log");
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart component");
        let pid = child.id();
        // down.sh owns it from here (it is not waited on by this process).
        std::mem::forget(child);
        let mut pids = self.pids.lock().unwrap();
        pids.retain(|(n, _)| n != name);
        pids.push((name.to_string(), pid));
        let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
        std::fs::write(self.dir.path().join("pids"), text).expect("pids");
    }

    pub fn stop(&mut self) {
        let _ = Command::new(repo().join("tests/cluster/down.sh")).arg(self.dir.path()).status();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(cfg).expect("kube client")
}

/// Is a process with this PID still alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The pod network: a bridge with a /24 that overlaps no route on this machine.
pub struct PodNet {
    pub bridge: String,
    /// First three octets of the /24.
    pub base: [u8; 3],
    tag: String,
    next: Mutex<u8>,
    pods: Mutex<Vec<NetPod>>,
}

struct NetPod {
    name: String,
    ip: Ipv4Addr,
    netns: String,
    host_veth: String,
    procs: Vec<Child>,
}

/// Candidate pod subnets, tried in order; the first that collides with nothing is used.
const CANDIDATES: [[u8; 3]; 6] =
    [[10, 244, 0], [10, 244, 77], [10, 251, 13], [172, 31, 251], [192, 168, 251], [10, 99, 42]];

fn routes_overlap(base: [u8; 3]) -> Result<bool, String> {
    let net = u32::from(Ipv4Addr::new(base[0], base[1], base[2], 0));
    for line in ip(&["-4", "route", "show", "table", "all"])?.lines() {
        let dst = line.split_whitespace().next().unwrap_or("");
        let dst = match line.split_whitespace().next() {
            Some("local") | Some("broadcast") | Some("unreachable") | Some("blackhole") => {
                line.split_whitespace().nth(1).unwrap_or("")
            }
            _ => dst,
        };
        if dst == "default" {
            continue;
        }
        let (addr, len) = dst.split_once('/').unwrap_or((dst, "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            continue;
        };
        let len = len.min(32);
        let theirs = u32::from(addr);
        // Two prefixes overlap if they agree on the shorter prefix length.
        let common = len.min(24);
        let mask = if common == 0 { 0 } else { u32::MAX << (32 - common) };
        if theirs & mask == net & mask {
            return Ok(true);
        }
    }
    Ok(false)
}

impl PodNet {
    pub fn create() -> Result<PodNet, String> {
        let pid = std::process::id();
        let tag = format!("fy{}", pid % 1_000_000);
        let bridge = format!("{tag}br");
        let mut chosen = None;
        for c in CANDIDATES {
            if !routes_overlap(c)? {
                chosen = Some(c);
                break;
            }
        }
        let base = chosen.ok_or("every candidate pod subnet collides with a route on this machine")?;
        let net = PodNet { bridge: bridge.clone(), base, tag, next: Mutex::new(2), pods: Mutex::new(Vec::new()) };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.{}.{}.1/24", base[0], base[1], base[2]), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    pub fn cidr(&self) -> String {
        format!("{}.{}.{}.0/24", self.base[0], self.base[1], self.base[2])
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.base[0], self.base[1], self.base[2], 1)
    }

    /// Refuses unless the kernel sends `addr` out through our bridge.
    pub fn check_route(&self, addr: Ipv4Addr) -> Result<(), String> {
        let out = ip(&["-4", "route", "get", &addr.to_string()])?;
        let dev = out.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("");
        if dev != self.bridge {
            return Err(format!("route to {addr} goes through `{dev}`, not the test bridge {}: refusing", self.bridge));
        }
        Ok(())
    }

    /// Makes a network namespace with one address on the bridge and starts `upstream.py` in it,
    /// serving `ports`. Returns the pod's IP once its upstream is ready.
    pub fn add_pod(&self, name: &str, ports: &[u16]) -> Result<Ipv4Addr, String> {
        let n = {
            let mut next = self.next.lock().unwrap();
            let n = *next;
            *next += 1;
            n
        };
        let addr = Ipv4Addr::new(self.base[0], self.base[1], self.base[2], n);
        let netns = format!("{}-{n}", self.tag);
        let (host_veth, pod_veth) = (format!("{}h{n}", self.tag), format!("{}p{n}", self.tag));
        ip(&["netns", "add", &netns])?;
        // Record it now so that a failure below still cleans up.
        self.pods.lock().unwrap().push(NetPod {
            name: name.to_string(),
            ip: addr,
            netns: netns.clone(),
            host_veth: host_veth.clone(),
            procs: Vec::new(),
        });
        ip(&["link", "add", &host_veth, "type", "veth", "peer", "name", &pod_veth])?;
        ip(&["link", "set", &pod_veth, "netns", &netns])?;
        ip(&["link", "set", &host_veth, "master", &self.bridge, "up"])?;
        ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", &pod_veth])?;
        ip(&["-n", &netns, "link", "set", &pod_veth, "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", &self.host_ip().to_string()])?;
        self.check_route(addr)?;
        let script = repo().join("tests/cluster/upstream.py");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns, "python3", "-u"]).arg(&script).args(["--name", name]);
        for p in ports {
            cmd.args(["--port", &p.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
        let mut line = String::new();
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!("upstream in {netns} did not start"));
        }
        self.pods.lock().unwrap().last_mut().unwrap().procs.push(child);
        Ok(addr)
    }

    /// The address of the pod network namespace made for `name`.
    pub fn ip_of(&self, name: &str) -> Option<Ipv4Addr> {
        self.pods.lock().unwrap().iter().find(|p| p.name == name).map(|p| p.ip)
    }

    pub fn netns_names(&self) -> Vec<String> {
        self.pods.lock().unwrap().iter().map(|p| p.netns.clone()).collect()
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for mut p in self.pods.lock().unwrap().drain(..) {
            for c in &mut p.procs {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = ip(&["link", "del", &p.host_veth]);
            let _ = ip(&["netns", "del", &p.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Registers the harness's Node (once).
pub async fn ensure_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE).await.unwrap().is_some() {
        return;
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": NODE, "labels": { "kubernetes.io/hostname": NODE, "topology.kubernetes.io/zone": "test-a" } }
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({ "status": { "conditions": [ { "type": "Ready", "status": "True", "reason": "FerryTest",
        "message": "network namespaces on one host" } ] } });
    nodes.patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// Creates a namespace and waits for its default ServiceAccount (which the controller manager
/// creates, and Pods need).
pub async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount", Duration::from_secs(30), || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
}

/// Creates a Pod bound to the harness's node with the given labels and named container ports.
pub async fn create_pod(client: &Client, ns: &str, name: &str, labels: serde_json::Value, ports: &[(&str, u16)]) {
    let ports: Vec<_> = ports.iter().map(|(n, p)| json!({ "name": n, "containerPort": p })).collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "spec": {
            "nodeName": NODE, "hostname": name, "automountServiceAccountToken": false,
            "containers": [ { "name": "app", "image": "ferry-test/netns-upstream", "ports": ports } ]
        }
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap();
}

/// Sets a Pod's status as a kubelet would: Running with `ip`, and Ready or not.
pub async fn set_pod_status(client: &Client, ns: &str, name: &str, ip: Ipv4Addr, ready: bool) {
    let r = if ready { "True" } else { "False" };
    let status = json!({ "status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip.to_string(), "podIPs": [ { "ip": ip.to_string() } ],
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Initialized", "status": "True" },
            { "type": "ContainersReady", "status": r },
            { "type": "Ready", "status": r }
        ]
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Polls `check` every 50 ms until it returns Some, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of a caught panic.
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// For a harness-less test binary: `--list` prints `names` (and the run stops there), else nothing.
pub fn list_only(args: &libtest_mimic::Arguments, names: &[&str]) -> Option<std::process::ExitCode> {
    let trials = names.iter().map(|&n| libtest_mimic::Trial::test(n, || Ok(()))).collect();
    args.list.then(|| libtest_mimic::run(args, trials).exit_code())
}

/// Says which of `tools` (name, why it is needed) is not on PATH, naming `who` needs it; false
/// when one is missing.
pub fn tools_present(who: &str, tools: &[(&str, &str)]) -> bool {
    for (tool, why) in tools {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|o| o.status.success()) {
            eprintln!("{who}: `{tool}` is missing ({why})");
            return false;
        }
    }
    true
}
