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
pub mod metrics;
pub mod proxy;
pub mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::config::{Config, Listener};
use crate::metrics::Metrics;
use crate::proxy::http::HttpListener;
use crate::table::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error(
        "backend `{0}` names a Kubernetes Service but no Kubernetes client is configured \
         (no in-cluster environment, KUBECONFIG or ~/.kube/config)"
    )]
    NoKube(String),
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
}

fn bind_listener(l: &Listener) -> Result<TcpListener, StartError> {
    bind(l.bind).map_err(|source| StartError::Bind { what: format!("listener `{}`", l.name), addr: l.bind, source })
}

fn spawn_listener(l: &Listener, sock: TcpListener, store: &Arc<Store>) -> ListenerHandle {
    let addr = sock.local_addr().expect("bound socket has an address");
    let (stop, rx) = watch::channel(false);
    let task = match l.protocol {
        config::Protocol::Http => {
            tokio::spawn(proxy::http::serve(sock, Arc::new(HttpListener::new(&l.name, store.clone())), rx))
        }
        config::Protocol::Tcp => {
            tokio::spawn(proxy::tcp::serve(sock, Arc::new(proxy::tcp::TcpProxy::new(&l.name, store.clone())), rx))
        }
    };
    ListenerHandle { bind: l.bind, protocol: l.protocol, addr, stop, task }
}

/// A started ferry: its bound addresses, its store, and the handles to reconfigure and drain it.
pub struct Running {
    pub admin: SocketAddr,
    pub store: Arc<Store>,
    admin_state: Arc<AdminState>,
    has_kube: bool,
    listeners: Mutex<HashMap<String, ListenerHandle>>,
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
    let listeners = bound.into_iter().map(|(l, sock)| (l.name.clone(), spawn_listener(&l, sock, &store))).collect();
    let has_kube = opts.kube.is_some();
    let (configs, discovery) = match opts.kube {
        Some(client) => {
            let (tx, rx) = mpsc::channel(8);
            let task = tokio::spawn(discovery::kube::run(client, store.clone(), opts.discovery, config, rx));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let admin_state = Arc::new(AdminState { store: store.clone(), draining: false.into() });
    let (stop_admin, admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state.clone(), admin_rx));
    Ok(Running {
        admin,
        store,
        admin_state,
        has_kube,
        listeners: Mutex::new(listeners),
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
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
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
        for (l, sock) in fresh {
            let h = spawn_listener(&l, sock, &self.store);
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

    /// Graceful drain: /readyz turns 503 at once; listeners keep accepting for `drain_delay` (so
    /// the Service can take this pod out); then they stop accepting and every connection is asked to
    /// finish (HTTP/1 `Connection: close`, HTTP/2 GOAWAY). In-flight requests get up to
    /// `shutdown_timeout`. Returns true if everything finished in time.
    pub async fn shutdown(self, drain_delay: Duration, shutdown_timeout: Duration) -> bool {
        self.admin_state.draining.store(true, Ordering::Relaxed);
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
