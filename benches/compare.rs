//! ferry against nginx and HAProxy, side by side, in one run.
//!
//!   benches/setup.sh                       # nginx-light, haproxy, wrk (Debian), oha (crates.io)
//!   cargo bench --bench compare            # full run, several minutes
//!   FERRY_BENCH_QUICK=1 cargo bench --bench compare   # smoke run, about a minute
//!
//! Layout on this 2-core machine: each proxy pinned to CPU 0 with one worker (nginx
//! `worker_processes 1` + upstream keepalive; HAProxy `nbthread 1` + `http-reuse always`; ferry
//! `--threads 1`); the backend (an nginx serving fixed bodies) and the load generator pinned to
//! CPU 1. All three proxies run for the whole benchmark and are measured in interleaved rounds;
//! each figure is the median of the rounds. CPU per request is the proxy's utime+stime (its whole
//! process tree, from /proc) divided by the requests served. Everything binds 127.0.0.1 ports that
//! are checked free first, every loop is bounded, and every process started is stopped by PID.
//! The table is printed and written to target/bench-results/compare.txt, and ends with the
//! forwarding targets of issue 17 judged from the same run (CPU ≤ 0.75× the better peer, user CPU ≤
//! nginx's, added p99 ≤ the better peer's, idle connection ≤ 2 KiB), each marked met or not.
//!
//! ferry's proxy listener runs with its access log, request IDs, trace context and `X-Forwarded-*`
//! headers off, as nginx and HAProxy run here without a log or added headers; a separate row
//! measures the log (combined, to a file) on ferry and nginx, and ferry's defaults (log +
//! X-Request-Id + traceparent + X-Forwarded-For/-Proto/-Port/-Host), against the same route without.
//!
//! Two more sections use the same processes: L4 throughput (a 256 MiB download through ferry's tcp
//! listener and HAProxy's `mode tcp` with `option splice-auto`; CPU per GiB) and TLS handshakes
//! per second (ferry's and nginx's https listeners, an ECDSA P-256 certificate, `openssl s_time`
//! for full and resumed handshakes).
//!
//! Answers the proxies make themselves: static files (ferry `static`, nginx `alias` + sendfile; 1 KiB,
//! 1 MiB, 8 MiB) and compression of a 64 KiB text answer (ferry `compress` with gzip, brotli and
//! zstd; nginx `gzip on`, same level 6), CPU per request and per KiB compressed.
//!
//! Idle-connection memory is measured at 1k and 8k connections: this sandbox's hard open-files
//! limit is 20,000, and HAProxy needs two descriptors per connection (maxconn 9,700, plus pipes for splice).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// The L4 test file.
const BIG: usize = 256 << 20;

/// Ports of the extra listeners each proxy opens (L4 and TLS); 0 where a proxy has none.
#[derive(Clone, Copy, Default)]
struct Extra {
    tcp: u16,
    tls: u16,
    /// HAProxy only: the same L4 listener without splice, to see what splice itself is worth.
    tcp_copy: u16,
    /// nginx and ferry: the plain proxy route with an access log (combined, to a file).
    log: u16,
    /// ferry only: its defaults (the log, X-Request-Id, traceparent, X-Forwarded-* all on), log to a file.
    full: u16,
}

struct Settings {
    rounds: usize,
    secs: u64,
    conns: usize,
    rates: Vec<u32>,
    idle: Vec<usize>,
    churn_secs: u64,
    /// Downloads of the 256 MiB file per L4 measurement.
    l4_repeats: usize,
}

fn settings() -> Settings {
    if std::env::var_os("FERRY_BENCH_QUICK").is_some() {
        Settings { rounds: 3, secs: 2, conns: 32, rates: vec![2000], idle: vec![1000], churn_secs: 6, l4_repeats: 1 }
    } else {
        Settings {
            rounds: 3,
            secs: 5,
            conns: 32,
            rates: vec![2000, 5000, 10000],
            idle: vec![1000, 8000],
            churn_secs: 60,
            l4_repeats: 4,
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/root/.cargo/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Some(p);
        }
    }
    let out = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A free 127.0.0.1 port: bound to check it is free, then released for the server to take.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

fn wait_listening(port: u16, what: &str) {
    if !listening(port) {
        panic!("{what} did not start listening on {port}");
    }
}

/// Waits up to 5 s for something to accept on `port`.
fn listening(port: u16) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A started process, stopped (by its PID) on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cpu: &str, program: &Path, args: &[&str], log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        // Pinned to `cpu`. The open-files limit is inherited (the idle test needs 10k + a few).
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpu]).arg(program).args(args);
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { child }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PID and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
                if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                    let rest = stat.rsplit(')').next().unwrap_or("");
                    let ppid: u32 = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                    if ppid == parent && !all.contains(&p) {
                        all.push(p);
                    }
                }
            }
        }
        i += 1;
    }
    all
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime of the process tree, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, sys) = cpu_split(pid);
    user + sys
}

/// (utime, stime) of the process tree (every thread of each process), in seconds.
fn cpu_split(pid: u32) -> (f64, f64) {
    let (mut user, mut sys) = (0u64, 0u64);
    for s in tree(pid).iter().filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok()) {
        let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        sys += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    (user as f64 / clk_tck(), sys as f64 / clk_tck())
}

/// Resident memory of the process tree, KiB.
fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0))
            })
        })
        .sum()
}

#[derive(Default, Debug, Clone)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn ms(v: &str) -> f64 {
    let v = v.trim();
    if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().unwrap_or(0.0)
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(port: u16, path: &str, secs: u64, conns: usize, close: bool) -> Wrk {
    wrk_with(port, path, secs, conns, if close { &["Connection: close"] } else { &[] })
}

fn wrk_with(port: u16, path: &str, secs: u64, conns: usize, headers: &[&str]) -> Wrk {
    let url = format!("http://127.0.0.1:{port}{path}");
    let d = format!("{secs}s");
    let c = conns.to_string();
    let mut args = vec!["-c", "1", "wrk", "-t1", "-c", &c, "-d", &d, "--latency"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = Command::new("taskset").args(&args).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk::default();
    for line in text.lines() {
        let t = line.trim();
        if t.contains(" requests in ") {
            w.requests = t.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 3, write 0, timeout 0"
            w.errors += v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    w
}

#[derive(Default, Debug, Clone, Copy)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Fixed-rate latency with oha (latency-corrected: coordinated omission is accounted for).
fn oha(oha: &Path, port: u16, rate: u32, secs: u64) -> Option<Lat> {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(oha)
        .args([
            "-z",
            &format!("{secs}s"),
            "-q",
            &rate.to_string(),
            "-c",
            "32",
            "--latency-correction",
            "--no-tui",
            "--output-format",
            "json",
        ])
        .arg(format!("http://127.0.0.1:{port}/b100"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let p = &v["latencyPercentiles"];
    let get = |k: &str| p[k].as_f64().map(|s| s * 1000.0);
    Some(Lat { p50: get("p50")?, p99: get("p99")?, p999: get("p99.9")? })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Tells a proxy its new backend ports, its own way.
type Churn = Box<dyn Fn(&[u16])>;

struct Proxy {
    name: &'static str,
    port: u16,
    extra: Extra,
    proc: Proc,
    /// Switches the backend set (endpoint churn); returns when the proxy has been told.
    churn: Churn,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn nginx_backend(dir: &Path, nginx: &Path, ports: &[u16]) -> Proc {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (name, size) in [("b100", 100usize), ("b4k", 4096), ("b64k", 65536)] {
        write(&www.join(name), &"x".repeat(size));
    }
    std::fs::write(www.join("big"), vec![b'x'; BIG]).unwrap();
    // Static files (served by the proxies themselves) and a compressible text answer.
    std::fs::write(www.join("s1k"), text(1024)).unwrap();
    std::fs::write(www.join("s1m"), text(1 << 20)).unwrap();
    std::fs::write(www.join("s8m"), text(8 << 20)).unwrap();
    std::fs::write(www.join("t64k"), text(64 << 10)).unwrap();
    let listens: String = ports.iter().map(|p| format!("listen 127.0.0.1:{p} reuseport;\n")).collect();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/backend.pid; error_log {d}/backend.err;
events {{ worker_connections 19000; }}
worker_rlimit_nofile 20000;
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000000; keepalive_timeout 300s;
  server {{ {listens} root {www}; location / {{ default_type text/plain; }} }} }}\n",
        d = dir.display(),
        www = www.display()
    );
    write(&dir.join("backend.conf"), &conf);
    let p = Proc::spawn(
        "backend",
        "1",
        nginx,
        &["-c", dir.join("backend.conf").to_str().unwrap(), "-p", dir.to_str().unwrap()],
        &dir.join("backend.log"),
    );
    for port in ports {
        wait_listening(*port, "backend nginx");
    }
    p
}

/// Log-like text that compresses about 3:1 (as JSON and JavaScript do), `n` bytes.
fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!(
                "{{\"id\":{},\"sku\":\"A-{:05}\",\"qty\":{},\"state\":\"shipped\"}}\n",
                x >> 40,
                (x >> 20) % 100_000,
                x % 9
            )
            .as_bytes(),
        );
    }
    out.truncate(n);
    out
}

fn nginx_upstream(ports: &[u16]) -> String {
    ports.iter().map(|p| format!("server 127.0.0.1:{p};")).collect::<Vec<_>>().join(" ")
}

fn start_nginx(dir: &Path, nginx: &Path, port: u16, backends: &[u16], extra: Extra, pki: &Path) -> Proxy {
    let (tls, log) = (extra.tls, extra.log);
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d).unwrap();
    write(&d.join("upstream.conf"), &format!("upstream b {{ {} keepalive 64; }}\n", nginx_upstream(backends)));
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
http {{ access_log off; keepalive_requests 1000000000; keepalive_timeout 300s;
  include {d}/upstream.conf;
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}
    location /static/ {{ alias {www}/; sendfile on; }}
    location /gz/ {{ proxy_pass http://b/; proxy_http_version 1.1; proxy_set_header Connection \"\";
      gzip on; gzip_types text/plain; gzip_comp_level 6; gzip_min_length 1024; gzip_proxied any; }} }}
  server {{ listen 127.0.0.1:{tls} ssl; ssl_certificate {pki}/tls.crt; ssl_certificate_key {pki}/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}
  server {{ listen 127.0.0.1:{log}; access_log {d}/access.log combined;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        d = d.display(),
        pki = pki.display(),
        www = dir.join("www").display()
    );
    write(&d.join("nginx.conf"), &conf);
    let proc = Proc::spawn(
        "nginx",
        "0",
        nginx,
        &["-c", d.join("nginx.conf").to_str().unwrap(), "-p", d.to_str().unwrap()],
        &d.join("stderr"),
    );
    wait_listening(port, "nginx");
    wait_listening(tls, "nginx https");
    wait_listening(log, "nginx logging");
    let pid = proc.pid();
    let upstream = d.join("upstream.conf");
    Proxy {
        name: "nginx",
        port,
        extra,
        proc,
        churn: Box::new(move |set| {
            write(&upstream, &format!("upstream b {{ {} keepalive 64; }}\n", nginx_upstream(set)));
            // nginx's way: rewrite the upstream and reload (SIGHUP to the master).
            let _ = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
        }),
    }
}

/// HAProxy gets every backend port as a server up front (its runtime API changes server state,
/// not the server list); the ones not in `enabled` start in maintenance.
fn start_haproxy(dir: &Path, haproxy: &Path, port: u16, backends: &[u16], enabled: &[u16], extra: Extra) -> Proxy {
    let (tcp, tcp_copy) = (extra.tcp, extra.tcp_copy);
    let d = dir.join("haproxy");
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("admin.sock");
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server s{i} 127.0.0.1:{p}{}\n", if enabled.contains(p) { "" } else { " disabled" }))
        .collect();
    let conf = format!(
        "global
  nbthread 1
  maxconn 9700
  maxpipes 64
  stats socket {sock} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  balance roundrobin
{servers}
listen l4
  mode tcp
  option splice-auto
  bind 127.0.0.1:{tcp}
  server s0 127.0.0.1:{first}
listen l4copy
  mode tcp
  bind 127.0.0.1:{tcp_copy}
  server s0 127.0.0.1:{first}
",
        sock = sock.display(),
        first = backends[0]
    );
    write(&d.join("haproxy.cfg"), &conf);
    let proc = Proc::spawn(
        "haproxy",
        "0",
        haproxy,
        &["-f", d.join("haproxy.cfg").to_str().unwrap(), "-db"],
        &d.join("stderr"),
    );
    if !listening(port) || !listening(tcp) {
        panic!("haproxy did not start:\n{}", std::fs::read_to_string(d.join("stderr")).unwrap_or_default());
    }
    let all: Vec<u16> = backends.to_vec();
    Proxy {
        name: "haproxy",
        port,
        extra,
        proc,
        churn: Box::new(move |set| {
            // HAProxy's way: the runtime API, servers in and out of maintenance.
            for (i, p) in all.iter().enumerate() {
                let state = if set.contains(p) { "ready" } else { "maint" };
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) {
                    let _ = s.write_all(format!("set server b/s{i} state {state}\n").as_bytes());
                    let mut sink = String::new();
                    let _ = s.read_to_string(&mut sink);
                }
            }
        }),
    }
}

fn ferry_routes(port: u16, admin: u16, backends: &[u16], extra: Extra, pki: &Path, l4: u16, www: &Path) -> String {
    let list: Vec<String> = backends.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let files = format!("{{ match: {{ path_prefix: /static }}, static: {{ alias: '{}' }} }}", www.display());
    // As nginx and HAProxy run here (`access_log off`, no request IDs, no `X-Forwarded-*` headers
    // added): the log, X-Request-Id, traceparent and X-Forwarded-* off, except on the listeners
    // that measure them (web-full runs ferry's defaults).
    let quiet = "access_log: { to: off }, request_id: false, trace_context: { start: false }";
    let plain = "{ backend: b, forwarded_headers: false }";
    let logs = www.parent().expect("the bench's directory").join("ferry");
    format!(
        "admin: 127.0.0.1:{admin}\nlisteners:\n\
         - {{ name: web, bind: '127.0.0.1:{port}', {quiet}, routes: [ {act}, {files}, {gz}, {plain} ] }}\n\
         - {{ name: web-tls, bind: '127.0.0.1:{tls}', {quiet}, tls: {{ certificates: [ {{ cert: {pki}/tls.crt, key: {pki}/tls.key }} ] }}, routes: [ {plain} ] }}\n\
         - {{ name: web-log, bind: '127.0.0.1:{log}', access_log: {{ to: {logs}/access.log }}, request_id: false, trace_context: {{ start: false }}, routes: [ {plain} ] }}\n\
         - {{ name: web-full, bind: '127.0.0.1:{full}', access_log: {{ to: {logs}/access-full.log }}, routes: [ {{ backend: b }} ] }}\n\
         - {{ name: l4, bind: '127.0.0.1:{tcp}', protocol: tcp, access_log: {{ to: off }}, backend: l4 }}\n\
         backends:\n  b: {{ addresses: [{}], retries: 2 }}\n  l4: {{ addresses: ['127.0.0.1:{l4}'] }}\n",
        list.join(", "),
        tls = extra.tls,
        log = extra.log,
        full = extra.full,
        logs = logs.display(),
        tcp = extra.tcp,
        pki = pki.display(),
        act = ACTION_ROUTE,
        gz = "{ match: { path_prefix: /gz }, rewrite: { prefix: / }, compress: true, backend: b, forwarded_headers: false }",
    )
}

/// A route with a prefix rewrite and three header actions (two request, one response), for the
/// cost of actions: `/act/b100` reaches the backend as `/b100`.
const ACTION_ROUTE: &str = "{ match: { path_prefix: /act }, rewrite: { prefix: / }, \
     request_headers: { set: { X-Real-IP: $remote_addr, X-Host: $http_host } }, \
     response_headers: { set: { X-Frame-Options: DENY } }, forwarded_headers: false, backend: b }";

fn start_ferry(dir: &Path, port: u16, backends: &[u16], extra: Extra, pki: &Path) -> Proxy {
    let d = dir.join("ferry");
    std::fs::create_dir_all(&d).unwrap();
    let admin = free_port();
    let path = d.join("routes.yaml");
    let (pki, l4, www) = (pki.to_path_buf(), backends[0], dir.join("www"));
    write(&path, &ferry_routes(port, admin, backends, extra, &pki, l4, &www));
    let proc = Proc::spawn(
        "ferry",
        "0",
        Path::new(FERRY),
        &["run", "--threads", "1", "-c", path.to_str().unwrap()],
        &d.join("stderr"),
    );
    wait_listening(port, "ferry");
    wait_listening(extra.tls, "ferry https");
    wait_listening(extra.tcp, "ferry tcp");
    wait_listening(extra.log, "ferry logging");
    Proxy {
        name: "ferry",
        port,
        extra,
        proc,
        churn: Box::new(move |set| {
            // ferry's way: the routing table is swapped when its source changes (here the file;
            // in a cluster the EndpointSlice watch), with no reload of anything else.
            let tmp = path.with_extension("tmp");
            write(&tmp, &ferry_routes(port, admin, set, extra, &pki, l4, &www));
            std::fs::rename(&tmp, &path).unwrap();
        }),
    }
}

/// Opens `n` keep-alive connections, each after one request, and holds them; returns the proxy's
/// resident memory growth per connection in bytes.
fn idle_memory(pid: u32, port: u16, n: usize) -> f64 {
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { break };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /b100 HTTP/1.1\r\nHost: b\r\n\r\n").is_err() {
            break;
        }
        // Read the whole small response (headers + 100-byte body).
        let mut got = 0;
        while got < 100 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    got += k;
                    if buf[..k].windows(4).any(|w| w == b"\r\n\r\n") && got > 100 {
                        break;
                    }
                }
            }
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let opened = conns.len();
    drop(conns);
    if opened < n {
        eprintln!("  (only {opened} of {n} connections opened)");
    }
    (after.saturating_sub(before) as f64 * 1024.0) / opened.max(1) as f64
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let s = settings();
    let missing: Vec<&str> =
        ["nginx", "haproxy", "wrk", "taskset"].into_iter().filter(|t| which(t).is_none()).collect();
    if !missing.is_empty() {
        eprintln!("compare: missing {}: run benches/setup.sh", missing.join(", "));
        std::process::exit(2);
    }
    let (nginx, haproxy) = (which("nginx").unwrap(), which("haproxy").unwrap());
    let oha_bin = which("oha");
    let nofile = Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<usize>().ok())
        .unwrap_or(1024);
    let mut s = s;
    s.idle.retain(|&n| n + 100 <= nofile);
    let dir = tempfile::tempdir().unwrap();
    let backend_ports = [free_port(), free_port(), free_port()];
    let _backend = nginx_backend(dir.path(), &nginx, &backend_ports);
    let one = &backend_ports[..1];
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["bench.example.com".to_string()]).unwrap();
    write(&pki.join("tls.crt"), &cert.cert.pem());
    write(&pki.join("tls.key"), &cert.signing_key.serialize_pem());
    let proxies = vec![
        start_nginx(
            dir.path(),
            &nginx,
            free_port(),
            one,
            Extra { tls: free_port(), log: free_port(), ..Extra::default() },
            &pki,
        ),
        start_haproxy(
            dir.path(),
            &haproxy,
            free_port(),
            &backend_ports,
            one,
            Extra { tcp: free_port(), tcp_copy: free_port(), ..Extra::default() },
        ),
        start_ferry(
            dir.path(),
            free_port(),
            one,
            Extra { tcp: free_port(), tls: free_port(), log: free_port(), full: free_port(), ..Extra::default() },
            &pki,
        ),
    ];
    let mut out = String::new();
    let started = Instant::now();
    let say = |out: &mut String, line: String| {
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    };
    say(&mut out, format!(
        "ferry vs nginx {} vs HAProxy {} — proxies on CPU 0 (one worker), backend and load on CPU 1; {} rounds × {} s, {} connections",
        version(&nginx, &["-v"]), version(&haproxy, &["-v"]), s.rounds, s.secs, s.conns
    ));

    // 1. CPU per request at saturation, keep-alive, by body size; direct-to-backend as reference.
    let mut cpu: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut user: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut sys: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut rps: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let bodies = [("100 B", "/b100"), ("4 KiB", "/b4k"), ("64 KiB", "/b64k")];
    for round in 0..s.rounds {
        for (label, path) in bodies {
            let d = wrk(backend_ports[0], path, s.secs, s.conns, false);
            rps.entry(("direct", label)).or_default().push(d.rps);
            // Interleave, rotating the order each round so no proxy always goes first.
            for k in 0..proxies.len() {
                let p = &proxies[(k + round) % proxies.len()];
                let (u0, s0) = cpu_split(p.proc.pid());
                let w = wrk(p.port, path, s.secs, s.conns, false);
                let (u1, s1) = cpu_split(p.proc.pid());
                if w.requests > 0 {
                    let per = |a: f64, b: f64| (b - a) / w.requests as f64 * 1e6;
                    cpu.entry((p.name, label)).or_default().push(per(u0 + s0, u1 + s1));
                    user.entry((p.name, label)).or_default().push(per(u0, u1));
                    sys.entry((p.name, label)).or_default().push(per(s0, s1));
                }
                rps.entry((p.name, label)).or_default().push(w.rps);
            }
        }
    }
    say(&mut out, String::new());
    say(&mut out, "CPU per request (µs of proxy utime+stime; lower is better) and rate at saturation (req/s)".into());
    say(
        &mut out,
        format!(
            "{:<8} {:>14} {:>14} {:>14} {:>12} {:>12}   {:>11} {:>11} {:>11} {:>11}",
            "body",
            "ferry µs",
            "nginx µs",
            "haproxy µs",
            "ferry/nginx",
            "ferry/hap",
            "direct r/s",
            "ferry r/s",
            "nginx r/s",
            "hap r/s"
        ),
    );
    for (label, _) in bodies {
        let m = |n: &str| median(cpu.get(&(n, label)).cloned().unwrap_or_default());
        let r = |n: &str| median(rps.get(&(n, label)).cloned().unwrap_or_default());
        say(
            &mut out,
            format!(
                "{label:<8} {:>14.2} {:>14.2} {:>14.2} {:>12.2} {:>12.2}   {:>11.0} {:>11.0} {:>11.0} {:>11.0}",
                m("ferry"),
                m("nginx"),
                m("haproxy"),
                m("ferry") / m("nginx"),
                m("ferry") / m("haproxy"),
                r("direct"),
                r("ferry"),
                r("nginx"),
                r("haproxy")
            ),
        );
    }

    // The forwarding targets (issue 17), judged at the end from this run's medians.
    let mut targets: Vec<String> = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for label in ["100 B", "4 KiB"] {
        let m = |t: &BTreeMap<(&str, &str), Vec<f64>>, n: &str| median(t.get(&(n, label)).cloned().unwrap_or_default());
        let better = m(&cpu, "nginx").min(m(&cpu, "haproxy"));
        let ferry = m(&cpu, "ferry");
        targets.push(format!(
            "CPU per request ≤ 0.75 × the better peer, {label}: ferry {ferry:.2} µs = {:.2} × {better:.2} µs — {} \
             (ferry's system time alone is {:.2} ×)",
            ferry / better,
            verdict(ferry <= 0.75 * better),
            m(&sys, "ferry") / better
        ));
        let (fu, nu) = (m(&user, "ferry"), m(&user, "nginx"));
        targets.push(format!(
            "user CPU ≤ nginx's, {label}: ferry {fu:.2} µs, nginx {nu:.2} µs ({:.2} ×) — {}",
            fu / nu,
            verdict(fu <= nu)
        ));
    }

    say(&mut out, "user / system CPU per request (µs)".into());
    say(
        &mut out,
        format!(
            "{:<8} {:>16} {:>16} {:>16} {:>14}",
            "body", "ferry usr/sys", "nginx usr/sys", "haproxy usr/sys", "ferry/nginx usr"
        ),
    );
    for (label, _) in bodies {
        let m = |t: &BTreeMap<(&str, &str), Vec<f64>>, n: &str| median(t.get(&(n, label)).cloned().unwrap_or_default());
        let pair = |n: &str| format!("{:.2} / {:.2}", m(&user, n), m(&sys, n));
        say(
            &mut out,
            format!(
                "{label:<8} {:>16} {:>16} {:>16} {:>14.2}",
                pair("ferry"),
                pair("nginx"),
                pair("haproxy"),
                m(&user, "ferry") / m(&user, "nginx")
            ),
        );
    }

    // 1a. System calls per request (100 B, keep-alive), counted by `strace -c -f` attached to each
    // proxy for one short wrk run (strace slows the proxy down; only the counts are used).
    if let Some(strace) = which("strace") {
        say(&mut out, "system calls per request (100 B, keep-alive; strace -c, top calls)".into());
        for p in &proxies {
            if let Some((total, top)) = syscalls(&strace, p.proc.pid(), p.port) {
                say(&mut out, format!("  {:<8} {total:>6.2}   {top}", p.name));
            }
        }
    }

    // 1b. What route actions cost: ferry's plain route against one with a prefix rewrite and three
    // header actions, same backend answer (100 B), interleaved.
    let ferry = proxies.iter().find(|p| p.name == "ferry").expect("ferry runs");
    let mut act: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..s.rounds {
        let order = if round % 2 == 0 { ["/b100", "/act/b100"] } else { ["/act/b100", "/b100"] };
        for path in order {
            let c0 = cpu_seconds(ferry.proc.pid());
            let w = wrk(ferry.port, path, s.secs, s.conns, false);
            let c1 = cpu_seconds(ferry.proc.pid());
            if w.requests > 0 {
                act.entry(path).or_default().push((c1 - c0) / w.requests as f64 * 1e6);
            }
        }
    }
    let med = |p: &str| median(act.get(p).cloned().unwrap_or_default());
    let (plain, with) = (med("/b100"), med("/act/b100"));
    say(
        &mut out,
        format!(
            "route actions (100 B): plain route {plain:.2} µs, with a prefix rewrite + 3 header actions {with:.2} µs ({:+.1}%)",
            (with / plain - 1.0) * 100.0
        ),
    );

    // 1b'. What the access log costs (combined, to a file, 100 B answers): ferry's plain listener,
    // the same with the log on, and with its defaults (log + X-Request-Id + traceparent +
    // X-Forwarded-*); nginx
    // without and with `access_log … combined`. Interleaved, rotating the order.
    let nginx_p = proxies.iter().find(|p| p.name == "nginx").expect("nginx runs");
    let runs: [(&str, &Proxy, u16); 5] = [
        ("ferry off", ferry, ferry.port),
        ("ferry log", ferry, ferry.extra.log),
        ("ferry defaults", ferry, ferry.extra.full),
        ("nginx off", nginx_p, nginx_p.port),
        ("nginx log", nginx_p, nginx_p.extra.log),
    ];
    let mut logged: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..s.rounds {
        for k in 0..runs.len() {
            let (name, p, port) = runs[(k + round) % runs.len()];
            let c0 = cpu_seconds(p.proc.pid());
            let w = wrk(port, "/b100", s.secs, s.conns, false);
            let c1 = cpu_seconds(p.proc.pid());
            if w.requests > 0 {
                logged.entry(name).or_default().push((c1 - c0) / w.requests as f64 * 1e6);
            }
        }
    }
    let med = |p: &str| median(logged.get(p).cloned().unwrap_or_default());
    say(
        &mut out,
        format!(
            "access log (100 B, combined to a file): ferry {:.2} µs off, {:.2} µs on ({:+.1}%), {:.2} µs with \
             all defaults (+ request IDs, traceparent, X-Forwarded-*) ({:+.1}%); nginx {:.2} µs off, {:.2} µs on ({:+.1}%)",
            med("ferry off"),
            med("ferry log"),
            (med("ferry log") / med("ferry off") - 1.0) * 100.0,
            med("ferry defaults"),
            (med("ferry defaults") / med("ferry off") - 1.0) * 100.0,
            med("nginx off"),
            med("nginx log"),
            (med("nginx log") / med("nginx off") - 1.0) * 100.0
        ),
    );

    // 1c. Static files served by the proxy itself (ferry `static`, nginx `alias` + sendfile), and
    // compression of a 64 KiB text answer (ferry `compress`, nginx `gzip on`, both gzip level 6).
    let nginx_p = proxies.iter().find(|p| p.name == "nginx").expect("nginx runs");
    let cases: [(&str, &str, &[&str]); 6] = [
        ("static 1 KiB", "/static/s1k", &[]),
        ("static 1 MiB", "/static/s1m", &[]),
        ("static 8 MiB", "/static/s8m", &[]),
        ("gzip 64 KiB", "/gz/t64k", &["Accept-Encoding: gzip"]),
        ("br 64 KiB", "/gz/t64k", &["Accept-Encoding: br"]),
        ("zstd 64 KiB", "/gz/t64k", &["Accept-Encoding: zstd"]),
    ];
    // (proxy, case) → (CPU µs per request, requests per second), one of each per round.
    type Samples<'a> = BTreeMap<(&'a str, &'a str), (Vec<f64>, Vec<f64>)>;
    let mut own: Samples = BTreeMap::new();
    for round in 0..s.rounds {
        for (label, path, headers) in cases {
            let pair = if round % 2 == 0 { [ferry, nginx_p] } else { [nginx_p, ferry] };
            for p in pair {
                if p.name == "nginx" && !headers.is_empty() && !headers[0].ends_with("gzip") {
                    continue; // nginx-light has no brotli or zstd module
                }
                let c0 = cpu_seconds(p.proc.pid());
                let w = wrk_with(p.port, path, s.secs, s.conns, headers);
                let c1 = cpu_seconds(p.proc.pid());
                if w.requests > 0 && w.errors == 0 {
                    let e = own.entry((p.name, label)).or_default();
                    e.0.push((c1 - c0) / w.requests as f64 * 1e6);
                    e.1.push(w.rps);
                }
            }
        }
    }
    say(&mut out, String::new());
    say(
        &mut out,
        "served by the proxy itself: CPU per request (µs) and rate (req/s); compression also µs per KiB compressed"
            .into(),
    );
    for (label, _, _) in cases {
        let get = |n: &str| own.get(&(n, label)).map(|(c, r)| (median(c.clone()), median(r.clone())));
        let mut line = format!("  {label:<13}");
        let kib = if label.contains("64 KiB") { Some(64.0) } else { None };
        for n in ["ferry", "nginx"] {
            match (get(n), kib) {
                (Some((c, r)), Some(k)) => {
                    let _ = write!(line, " | {n} {c:.1} µs, {r:.0} req/s, {:.2} µs/KiB", c / k);
                }
                (Some((c, r)), None) => {
                    let _ = write!(line, " | {n} {c:.1} µs, {r:.0} req/s");
                }
                (None, _) => {}
            }
        }
        if let (Some((f, _)), Some((n, _))) = (get("ferry"), get("nginx")) {
            let _ = write!(line, " | ferry/nginx {:.2}", f / n);
        }
        say(&mut out, line);
    }

    // 2. Latency at fixed rates (oha, latency-corrected), added over direct.
    say(&mut out, String::new());
    match &oha_bin {
        None => {
            say(&mut out, "latency at fixed rates: skipped (oha not installed; benches/setup.sh installs it)".into())
        }
        Some(oha_path) => {
            say(
                &mut out,
                "latency at fixed rates, 100 B (ms; p50 / p99 / p99.9; added p99 = proxy p99 - direct p99)".into(),
            );
            for &rate in &s.rates {
                let mut lat: BTreeMap<&str, Vec<Lat>> = BTreeMap::new();
                for round in 0..s.rounds {
                    if let Some(l) = oha(oha_path, backend_ports[0], rate, s.secs) {
                        lat.entry("direct").or_default().push(l);
                    }
                    for k in 0..proxies.len() {
                        let p = &proxies[(k + round) % proxies.len()];
                        if let Some(l) = oha(oha_path, p.port, rate, s.secs) {
                            lat.entry(p.name).or_default().push(l);
                        }
                    }
                }
                let med = |n: &str| {
                    let v = lat.get(n).cloned().unwrap_or_default();
                    Lat {
                        p50: median(v.iter().map(|l| l.p50).collect()),
                        p99: median(v.iter().map(|l| l.p99).collect()),
                        p999: median(v.iter().map(|l| l.p999).collect()),
                    }
                };
                let direct = med("direct");
                let added = |n: &str| med(n).p99 - direct.p99;
                let better = added("nginx").min(added("haproxy"));
                targets.push(format!(
                    "added p99 ≤ the better peer's at {rate} req/s: ferry +{:.3} ms, better peer +{better:.3} ms — {}",
                    added("ferry"),
                    verdict(added("ferry") <= better)
                ));
                let mut line =
                    format!("{rate:>6} req/s  direct {:.3}/{:.3}/{:.3}", direct.p50, direct.p99, direct.p999);
                for n in ["ferry", "nginx", "haproxy"] {
                    let l = med(n);
                    let _ = write!(line, " | {n} {:.3}/{:.3}/{:.3} (+{:.3})", l.p50, l.p99, l.p999, l.p99 - direct.p99);
                }
                say(&mut out, line);
            }
        }
    }

    // 3. New connections (Connection: close on every request).
    say(&mut out, String::new());
    let mut newconn: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut newcpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..s.rounds {
        for k in 0..proxies.len() {
            let p = &proxies[(k + round) % proxies.len()];
            let c0 = cpu_seconds(p.proc.pid());
            let w = wrk(p.port, "/b100", s.secs, s.conns, true);
            let c1 = cpu_seconds(p.proc.pid());
            newconn.entry(p.name).or_default().push(w.rps);
            if w.requests > 0 {
                newcpu.entry(p.name).or_default().push((c1 - c0) / w.requests as f64 * 1e6);
            }
        }
    }
    let mut line = String::from("new connections (Connection: close): ");
    for n in ["ferry", "nginx", "haproxy"] {
        let _ = write!(
            line,
            "{n} {:.0} conn/s ({:.1} µs CPU each)  ",
            median(newconn[n].clone()),
            median(newcpu.get(n).cloned().unwrap_or_default())
        );
    }
    say(&mut out, line);

    // 4. Resident memory per idle keep-alive connection.
    for &n in &s.idle {
        let mut line = format!("memory per idle keep-alive connection ({n}): ");
        for p in &proxies {
            let b = idle_memory(p.proc.pid(), p.port, n);
            let _ = write!(line, "{} {:.0} B  ", p.name, b);
            if p.name == "ferry" {
                targets.push(format!(
                    "memory per idle keep-alive connection ≤ 2 KiB at {n}: {b:.0} B — {}",
                    verdict(b <= 2048.0)
                ));
            }
        }
        say(&mut out, line);
    }

    // 5. Endpoint churn: the backend set changes every second under a fixed load.
    say(&mut out, String::new());
    say(
        &mut out,
        format!(
            "endpoint churn: the backend set changes every second for {} s under load ({} connections)",
            s.churn_secs, s.conns
        ),
    );
    let sets: [&[u16]; 3] = [&backend_ports[..2], &backend_ports[1..], &[backend_ports[0], backend_ports[2]]];
    for p in &proxies {
        (p.churn)(&backend_ports);
        std::thread::sleep(Duration::from_millis(500));
        let port = p.port;
        let (secs, conns) = (s.churn_secs, s.conns);
        let load = std::thread::spawn(move || wrk(port, "/b100", secs, conns, false));
        let t0 = Instant::now();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(s.churn_secs.saturating_sub(1)) {
            std::thread::sleep(Duration::from_secs(1));
            (p.churn)(sets[i % sets.len()]);
            i += 1;
        }
        let w = load.join().unwrap();
        say(
            &mut out,
            format!(
                "  {:<8} {} changes: {} requests, {} failed (non-2xx or socket errors), p99 {:.2} ms",
                p.name, i, w.requests, w.errors, w.p99_ms
            ),
        );
        (p.churn)(&backend_ports[..1]);
    }
    // 6. L4 throughput: the big file through tcp listeners (ferry) / mode tcp with splice (HAProxy).
    say(&mut out, String::new());
    let mut gib_s: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu_gib: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..s.rounds {
        if let Some((rate, _)) = download(backend_ports[0], s.l4_repeats, None) {
            gib_s.entry("direct").or_default().push(rate);
        }
        for p in &proxies {
            for (name, port) in [(p.name, p.extra.tcp), ("haproxy-copy", p.extra.tcp_copy)] {
                if port == 0 {
                    continue;
                }
                if let Some((rate, cpu)) = download(port, s.l4_repeats, Some(p.proc.pid())) {
                    gib_s.entry(name).or_default().push(rate);
                    cpu_gib.entry(name).or_default().push(cpu);
                }
            }
        }
    }
    let med = |m: &BTreeMap<&str, Vec<f64>>, n: &str| median(m.get(n).cloned().unwrap_or_default());
    say(
        &mut out,
        format!(
            "L4 throughput (256 MiB × {} per round, one connection): direct {:.2} GiB/s | ferry {:.2} GiB/s, {:.3} CPU s/GiB | \
             haproxy splice {:.2} GiB/s, {:.3} CPU s/GiB | haproxy without splice {:.2} GiB/s, {:.3} CPU s/GiB | \
             ferry/hap-splice CPU {:.2}",
            s.l4_repeats,
            med(&gib_s, "direct"),
            med(&gib_s, "ferry"),
            med(&cpu_gib, "ferry"),
            med(&gib_s, "haproxy"),
            med(&cpu_gib, "haproxy"),
            med(&gib_s, "haproxy-copy"),
            med(&cpu_gib, "haproxy-copy"),
            med(&cpu_gib, "ferry") / med(&cpu_gib, "haproxy"),
        ),
    );

    // 7. TLS handshakes per second, full and resumed (openssl s_time, pinned to CPU 1).
    match which("openssl") {
        None => say(&mut out, "TLS handshakes: skipped (openssl not installed)".into()),
        Some(openssl) => {
            // s_time does not read TLS 1.3 tickets, so resumption is measured with TLS 1.2 session reuse.
            for (mode, flags) in [("full, TLS 1.3", &["-new"][..]), ("resumed, TLS 1.2", &["-reuse", "-tls1_2"][..])] {
                let mut hs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
                let mut hs_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
                for round in 0..s.rounds {
                    for k in 0..proxies.len() {
                        let p = &proxies[(k + round) % proxies.len()];
                        if p.extra.tls == 0 {
                            continue;
                        }
                        let c0 = cpu_seconds(p.proc.pid());
                        let n = s_time(&openssl, p.extra.tls, flags, s.secs);
                        let c1 = cpu_seconds(p.proc.pid());
                        if let Some((count, per_sec)) = n {
                            hs.entry(p.name).or_default().push(per_sec);
                            hs_cpu.entry(p.name).or_default().push((c1 - c0) / count as f64 * 1e6);
                        }
                    }
                }
                say(
                    &mut out,
                    format!(
                        "TLS handshakes, {mode}: ferry {:.0}/s ({:.0} µs CPU each) | nginx {:.0}/s ({:.0} µs) | ferry/nginx CPU {:.2}",
                        med(&hs, "ferry"),
                        med(&hs_cpu, "ferry"),
                        med(&hs, "nginx"),
                        med(&hs_cpu, "nginx"),
                        med(&hs_cpu, "ferry") / med(&hs_cpu, "nginx"),
                    ),
                );
            }
        }
    }

    say(&mut out, String::new());
    say(&mut out, "forwarding targets (issue 17), from this run:".into());
    for t in targets {
        say(&mut out, format!("  {t}"));
    }
    say(&mut out, format!("\n(total {:.0} s)", started.elapsed().as_secs_f64()));
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&results);
    let _ = std::fs::write(results.join("compare.txt"), &out);
    drop(proxies);
}

/// Downloads /big `repeats` times over one connection (curl, pinned to CPU 1, HTTP/1.1 through the
/// L4 listener); returns GiB/s and, given a PID, its CPU seconds per GiB.
/// Attaches `strace -c -f` to `pid`'s process tree for one 2 s wrk run on `port` (8 connections);
/// returns system calls per request and the five most frequent, per request.
fn syscalls(strace: &Path, pid: u32, port: u16) -> Option<(f64, String)> {
    let out = tempfile::NamedTempFile::new().ok()?;
    let mut args = vec!["-c".to_string(), "-f".into(), "-q".into(), "-o".into(), out.path().display().to_string()];
    for p in tree(pid) {
        args.push("-p".into());
        args.push(p.to_string());
    }
    let mut child = Command::new(strace).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let w = wrk(port, "/b100", 2, 8, false);
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    if w.requests == 0 {
        return None;
    }
    let text = std::fs::read_to_string(out.path()).ok()?;
    let mut rows: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            let calls = f.get(3)?.parse::<u64>().ok()?;
            Some((calls, f.last()?.to_string()))
        })
        .collect();
    let total = rows.iter().find(|r| r.1 == "total").map(|r| r.0)? as f64 / w.requests as f64;
    rows.retain(|r| r.1 != "total");
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let top: Vec<String> =
        rows.iter().take(5).map(|(c, n)| format!("{n} {:.2}", *c as f64 / w.requests as f64)).collect();
    Some((total, top.join(", ")))
}

fn download(port: u16, repeats: usize, pid: Option<u32>) -> Option<(f64, f64)> {
    let url = format!("http://127.0.0.1:{port}/big");
    let c0 = pid.map(cpu_seconds).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "curl", "-sf"]);
    for _ in 0..repeats {
        cmd.args(["-o", "/dev/null", &url]);
    }
    let ok = cmd.status().ok()?.success();
    let secs = t0.elapsed().as_secs_f64();
    let c1 = pid.map(cpu_seconds).unwrap_or(0.0);
    let gib = (repeats * BIG) as f64 / (1u64 << 30) as f64;
    ok.then(|| (gib / secs, (c1 - c0) / gib))
}

/// `openssl s_time` for `secs`: (handshakes, handshakes per second).
fn s_time(openssl: &Path, port: u16, flags: &[&str], secs: u64) -> Option<(u64, f64)> {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(openssl)
        .args(["s_time", "-connect", &format!("127.0.0.1:{port}"), "-time", &secs.to_string()])
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // "1234 connections in 5 real seconds, 0 bytes read per connection"
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("connections in") && l.contains("real seconds"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let count: u64 = words.first()?.parse().ok()?;
    let real: f64 = words.get(3)?.parse().ok()?;
    (real > 0.0).then(|| (count, count as f64 / real))
}

fn version(bin: &Path, args: &[&str]) -> String {
    let o = Command::new(bin)
        .args(args)
        .output()
        .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default();
    o.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) || w.contains('/'))
        .map(|w| w.trim_start_matches("nginx/").to_string())
        .unwrap_or_default()
}
