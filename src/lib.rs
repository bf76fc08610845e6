#![forbid(unsafe_code)]
//! # ferry
//!
//! An in-cluster L4/L7 reverse proxy for Kubernetes workloads.
//!
//! # Layout
//!
//! **config** reads routes.yaml into raw serde structs and validates them into a typed `Config`,
//! reporting every problem as `FILE:LINE:COL: message`.
//!
//! **table** is the immutable routing snapshot (`Table`), its pure builder (`table::build`) and the
//! one `ArcSwap<Table>` (`table::store`) where the control plane publishes and the data plane reads.
//!
//! **balance** picks endpoints (round robin, P2C least-request, client-IP consistent hashing) and
//! keeps per-endpoint state outside the snapshot, keyed by address, so swaps keep it.
//!
//! **proxy** is the data plane: `proxy::http` accepts connections and forwards requests through the
//! pooled upstream clients of `proxy::client`, with header hygiene (`proxy::headers`), a streaming
//! response body (`proxy::body`) and one error → status mapping (`proxy::error`).
//!
//! **discovery** follows Kubernetes: `discovery::slice` turns EndpointSlices (or Endpoints) into
//! endpoint sets purely, `discovery::kube` runs the watches and publishes changed backends.
//!
//! **tls** loads certificates (chosen per handshake by SNI, swapped when their files change),
//! builds upstream TLS configs and reads a ClientHello's server name for passthrough.
//!
//! **admin** serves /healthz, /readyz, /metrics and /routes on its own listener; **metrics** holds
//! the Prometheus handles; **demo** runs ferry against in-process upstreams.
//!
//! [`start_with`] binds every listener, publishes the first table, starts discovery and returns a
//! [`Running`] server. [`Running::apply`] swaps in a new config (starting new listeners, draining
//! removed ones, leaving unchanged ones alone), [`Running::watch_config`] does so when the file
//! changes, and [`Running::shutdown`] drains everything gracefully.

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod proxy;
pub mod table;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::config::{Config, Listener};
use crate::metrics::Metrics;
use crate::proxy::http::{HttpListener, TlsSlot};
use crate::table::store::Store;
use crate::tls::{CertSet, ServerTls};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error(
        "backend `{0}` names a Kubernetes Service but no Kubernetes client is configured \
         (no in-cluster environment, KUBECONFIG or ~/.kube/config)"
    )]
    NoKube(String),
    #[error("{0}")]
    Files(config::ConfigErrors),
}

/// How to start: the Kubernetes client (needed when a backend names a Service) and which
/// endpoint API to watch.
pub struct Options {
    pub kube: Option<kube::Client>,
    pub discovery: discovery::Mode,
}

impl Default for Options {
    fn default() -> Self {
        Options { kube: None, discovery: discovery::Mode::Endpointslices }
    }
}

/// Binds with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

struct ListenerHandle {
    /// As configured (port 0 stays 0), to tell whether a new config changes it.
    bind: SocketAddr,
    protocol: config::Protocol,
    /// As bound.
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// HTTP listeners: the TLS they terminate (empty slot: plain HTTP).
    tls: Option<TlsSlot>,
}

impl ListenerHandle {
    fn server_tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.as_ref().and_then(|t| t.load_full())
    }

    /// Installs the listener's TLS as the new config has it: new certificates into the existing
    /// acceptor (sessions and tickets stay valid), a new acceptor, or none.
    fn set_tls(&self, l: &Listener, certs: &mut HashMap<String, CertSet>) {
        let Some(slot) = &self.tls else { return };
        match (certs.remove(&l.name), &l.tls, slot.load_full()) {
            (Some(set), Some(t), Some(cur)) => cur.replace(set, t.certificates.clone()),
            (Some(set), Some(t), None) => slot.store(Some(ServerTls::new(set, t.certificates.clone()))),
            _ => slot.store(None),
        }
    }
}

fn bind_listener(l: &Listener) -> Result<TcpListener, StartError> {
    bind(l.bind).map_err(|source| StartError::Bind { what: format!("listener `{}`", l.name), addr: l.bind, source })
}

fn spawn_listener(
    l: &Listener,
    sock: TcpListener,
    store: &Arc<Store>,
    certs: &mut HashMap<String, CertSet>,
) -> ListenerHandle {
    let addr = sock.local_addr().expect("bound socket has an address");
    let (stop, rx) = watch::channel(false);
    let (task, tls) = match l.protocol {
        config::Protocol::Http => {
            let slot = TlsSlot::default();
            let shared = Arc::new(HttpListener::new(&l.name, store.clone(), slot.clone()));
            (tokio::spawn(proxy::http::serve(sock, shared, rx)), Some(slot))
        }
        config::Protocol::Tcp => {
            let shared = Arc::new(proxy::tcp::TcpProxy::new(&l.name, store.clone()));
            (tokio::spawn(proxy::tcp::serve(sock, shared, rx)), None)
        }
    };
    let h = ListenerHandle { bind: l.bind, protocol: l.protocol, addr, stop, task, tls };
    h.set_tls(l, certs);
    h
}

type Listeners = Arc<Mutex<HashMap<String, ListenerHandle>>>;

fn lock(l: &Listeners) -> std::sync::MutexGuard<'_, HashMap<String, ListenerHandle>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the directories of every certificate file in use (a mounted Secret swaps its `..data`
/// symlink) and reloads the certificates of the listeners using them.
struct CertWatch {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: HashSet<PathBuf>,
}

impl CertWatch {
    fn start(listeners: Listeners, store: Arc<Store>) -> CertWatch {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch certificate files; they are reloaded with the config only");
                None
            }
        };
        let me = Arc::downgrade(&listeners);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a burst (write, rename, symlink swap) settle; both files of a pair may change.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                let Some(listeners) = me.upgrade() else { return };
                let tls: Vec<(String, Arc<ServerTls>)> =
                    lock(&listeners).iter().filter_map(|(n, h)| Some((n.clone(), h.server_tls()?))).collect();
                for (name, t) in tls {
                    match t.reload() {
                        Ok(false) => {}
                        Ok(true) => {
                            store.metrics.cert_reloads.with_label_values(&[&name, "ok"]).inc();
                            info!(listener = %name, names = ?t.names(), "certificates reloaded");
                        }
                        Err(e) => {
                            store.metrics.cert_reloads.with_label_values(&[&name, "error"]).inc();
                            error!(listener = %name, "{e}; keeping the certificates in use");
                            store.reject(&config::ConfigErrors(vec![e]));
                        }
                    }
                }
            }
        });
        CertWatch { watcher, dirs: HashSet::new() }
    }

    /// Watches exactly the directories `config`'s certificate files are in.
    fn follow(&mut self, config: &Config) {
        use notify::Watcher;
        let Some(w) = self.watcher.as_mut() else { return };
        let want: HashSet<PathBuf> = config
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.certificates.iter())
            .flat_map(|p| [&p.cert, &p.key])
            .map(|f| f.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
            .collect();
        for gone in self.dirs.difference(&want) {
            let _ = w.unwatch(gone);
        }
        for dir in want.difference(&self.dirs) {
            if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory");
            }
        }
        self.dirs = want;
    }
}

/// A started ferry: its bound addresses, its store, and the handles to reconfigure and drain it.
pub struct Running {
    pub admin: SocketAddr,
    pub store: Arc<Store>,
    has_kube: bool,
    listeners: Listeners,
    certs: Mutex<CertWatch>,
    /// Listeners removed by a reload, still draining.
    retired: Mutex<Vec<JoinHandle<()>>>,
    configs: Option<mpsc::Sender<Config>>,
    discovery: Option<JoinHandle<()>>,
    stop_admin: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
}

/// Starts ferry without Kubernetes (every backend static).
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, Options::default()).await
}

/// Binds the admin and data listeners of `config` (port 0 picks a free port), publishes the first
/// table, starts discovery if a Kubernetes client is given, and starts serving. Fails, serving
/// nothing, if any address cannot be bound or a Service backend has no client.
pub async fn start_with(config: Config, opts: Options) -> Result<Running, StartError> {
    if opts.kube.is_none() {
        if let Some(b) = config.backends.iter().find(|b| b.service.is_some()) {
            return Err(StartError::NoKube(b.name.clone()));
        }
    }
    let mut certs = tls::load_files(&config).map_err(StartError::Files)?;
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(metrics));
    let admin_listener =
        bind(config.admin).map_err(|source| StartError::Bind { what: "admin".into(), addr: config.admin, source })?;
    let mut bound = Vec::new();
    for l in &config.listeners {
        bound.push((l.clone(), bind_listener(l)?));
    }
    let admin = admin_listener.local_addr().expect("bound socket has an address");
    // The first table: static backends serve at once; Service backends fill in as lists arrive.
    store.publish(Arc::new(config.clone()), HashMap::new());
    let listeners: Listeners = Arc::new(Mutex::new(
        bound.into_iter().map(|(l, sock)| (l.name.clone(), spawn_listener(&l, sock, &store, &mut certs))).collect(),
    ));
    let mut cert_watch = CertWatch::start(listeners.clone(), store.clone());
    cert_watch.follow(&config);
    let has_kube = opts.kube.is_some();
    let (configs, discovery) = match opts.kube {
        Some(client) => {
            let (tx, rx) = mpsc::channel(8);
            let task = tokio::spawn(discovery::kube::run(client, store.clone(), opts.discovery, config, rx));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let admin_state = Arc::new(AdminState { store: store.clone() });
    let (stop_admin, admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, admin_rx));
    Ok(Running {
        admin,
        store,
        has_kube,
        listeners,
        certs: Mutex::new(cert_watch),
        retired: Mutex::new(Vec::new()),
        configs,
        discovery,
        stop_admin,
        admin_task,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("discovery has stopped")]
    DiscoveryGone,
}

impl Running {
    /// The bound address of a listener by name.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.lock_listeners().get(listener).map(|h| h.addr)
    }

    /// (listener name, bound address), sorted by name.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.lock_listeners().iter().map(|(n, h)| (n.clone(), h.addr)).collect();
        v.sort();
        v
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, ListenerHandle>> {
        lock(&self.listeners)
    }

    /// Swaps in a new config without dropping connections: new listeners are bound first (a bind
    /// failure rejects the whole change and nothing moves), the table is published (through
    /// discovery when it runs, so Service backends keep their endpoints), listeners whose name
    /// and address are unchanged keep running untouched, and removed ones stop accepting and
    /// drain in the background.
    pub async fn apply(&self, config: Config) -> Result<(), ApplyError> {
        if !self.has_kube {
            if let Some(b) = config.backends.iter().find(|b| b.service.is_some()) {
                return Err(StartError::NoKube(b.name.clone()).into());
            }
        }
        let mut certs = tls::load_files(&config).map_err(StartError::Files)?;
        let mut fresh = Vec::new();
        {
            let running = self.lock_listeners();
            for l in &config.listeners {
                let same = running.get(&l.name).is_some_and(|h| h.bind == l.bind && h.protocol == l.protocol);
                if !same {
                    fresh.push((l.clone(), bind_listener(l)?));
                }
            }
        }
        match &self.configs {
            Some(tx) => tx.send(config.clone()).await.map_err(|_| ApplyError::DiscoveryGone)?,
            None => {
                self.store.publish(Arc::new(config.clone()), HashMap::new());
            }
        }
        self.store.metrics.config_reloads.inc();
        let mut running = self.lock_listeners();
        let mut retired = Vec::new();
        for l in &config.listeners {
            if let Some(h) = running.get(&l.name) {
                h.set_tls(l, &mut certs);
            }
        }
        for (l, sock) in fresh {
            let h = spawn_listener(&l, sock, &self.store, &mut certs);
            info!(listener = %l.name, addr = %h.addr, "listening");
            if let Some(old) = running.insert(l.name.clone(), h) {
                retired.push(old);
            }
        }
        let keep: std::collections::HashSet<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let gone: Vec<String> = running.keys().filter(|n| !keep.contains(n.as_str())).cloned().collect();
        for n in gone {
            retired.extend(running.remove(&n));
        }
        drop(running);
        self.certs.lock().unwrap_or_else(|p| p.into_inner()).follow(&config);
        let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for h in retired {
            info!(addr = %h.addr, "listener removed; draining");
            let _ = h.stop.send(true);
            r.push(h.task);
        }
        Ok(())
    }

    /// Reads `path` and applies it; an invalid file is logged (every error, FILE:LINE:COL), counted
    /// and shown on /routes, and the last good table keeps serving.
    pub async fn reload_file(&self, path: &Path) -> bool {
        match Config::load(path) {
            Err(errors) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                warn!(file = %path.display(), errors = errors.0.len(), "config rejected; keeping the last good one");
                self.store.reject(&errors);
                false
            }
            Ok(cfg) => match self.apply(cfg).await {
                Ok(()) => {
                    info!(file = %path.display(), "config reloaded");
                    true
                }
                Err(ApplyError::Start(StartError::Files(errors))) => {
                    for e in &errors.0 {
                        error!("{e}");
                    }
                    warn!(file = %path.display(), "config rejected; keeping the last good one");
                    self.store.reject(&errors);
                    false
                }
                Err(e) => {
                    let errors = config::ConfigErrors(vec![config::ConfigError {
                        file: path.display().to_string(),
                        line: 1,
                        column: 1,
                        message: e.to_string(),
                    }]);
                    error!("{errors}");
                    self.store.reject(&errors);
                    false
                }
            },
        }
    }

    /// Watches `path` (and its directory, so a ConfigMap's `..data` symlink swap is seen) and
    /// reloads when its content changes from `loaded`, the bytes the running config was parsed
    /// from. A change made before the watch was in place is caught by one check right after.
    /// Returns the watcher; dropping it stops watching.
    pub fn watch_config(
        self: &Arc<Self>,
        path: PathBuf,
        loaded: Vec<u8>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        use notify::Watcher;
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let first = tx.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.try_send(());
            }
        })?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let _ = first.try_send(());
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = Some(loaded);
            while rx.recv().await.is_some() {
                // Let a burst of events (write, rename, symlink swap) settle.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                let Some(me) = me.upgrade() else { return };
                me.reload_file(&path).await;
            }
        });
        Ok(watcher)
    }

    /// Graceful drain: /readyz turns 503 at once and HTTP/1 responses start carrying
    /// `Connection: close`; listeners keep accepting for `drain_delay` (so the Service can take
    /// this pod out); then they stop accepting, idle connections are closed and every other one is
    /// asked to finish (HTTP/1 `Connection: close`, HTTP/2 GOAWAY). In-flight requests get up to
    /// `shutdown_timeout`. Returns true if everything finished in time.
    pub async fn shutdown(self, drain_delay: Duration, shutdown_timeout: Duration) -> bool {
        self.store.start_draining();
        tokio::time::sleep(drain_delay).await;
        let mut tasks = JoinSet::new();
        let handles: Vec<ListenerHandle> = self.lock_listeners().drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.stop.send(true);
            tasks.spawn(async move {
                let _ = h.task.await;
            });
        }
        for t in std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner())) {
            tasks.spawn(async move {
                let _ = t.await;
            });
        }
        let drained =
            tokio::time::timeout(shutdown_timeout, async { while tasks.join_next().await.is_some() {} }).await.is_ok();
        if !drained {
            tasks.abort_all();
        }
        drop(self.configs);
        if let Some(d) = self.discovery {
            d.abort();
        }
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
        drained
    }
}
