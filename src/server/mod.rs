//! A running ferry: its listeners, the store they read, discovery, the admin listener, and the
//! three things that change it — [`Running::apply`] (a new config), the certificate watch, and
//! [`Running::shutdown`] (the drain).
//!
//! Starting is applying the first config onto an empty server, so start and reload are one path:
//! check what the config needs (a Kubernetes client for Service backends, readable certificate and
//! CA files), [`listeners::plan`] what to bind, keep and retire, bind everything new first (a bind
//! failure rejects the whole change and nothing moves), publish the table (through discovery when it
//! runs, which acknowledges the publish, so `apply` returns after the new table is live in both
//! modes), then start new listeners, hand kept ones their new TLS, and drain retired ones.

pub mod dns;
pub mod feed;
pub mod listeners;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::config::{Config, FileErrors, LoadError};
use crate::discovery::{self, Publish};
use crate::metrics::Metrics;
use crate::table::store::Store;
use listeners::{bind, plan, ListenerHandle, Shape};
use watch::Watch;

/// Why a config could not be applied. The running server is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error(
        "backend `{0}` names a Kubernetes Service, but no Kubernetes config was found \
         (in-cluster environment, KUBECONFIG or ~/.kube/config)"
    )]
    NoKube(String),
    #[error("{0}")]
    Files(FileErrors),
    #[error("discovery has stopped")]
    DiscoveryGone,
}

/// Why a reload from the file did not take: the file, or applying it.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

/// How to start: the Kubernetes client (needed when a backend names a Service) and which
/// endpoint API to watch.
pub struct Options {
    pub kube: Option<kube::Client>,
    pub discovery: discovery::Mode,
    /// Watch every Service's endpoints, not only those the config names (the Ingress controller:
    /// a new Ingress naming a new Service then starts no new list).
    pub discovery_all: bool,
    /// Resolves host names in static addresses (default: the system resolver).
    pub resolver: Option<Arc<dyn dns::Resolve>>,
    /// Access-log lines bound for stdout are counted but not written: for ferry run inside another
    /// program's process (tests), whose stdout is not ferry's. Files are written either way.
    pub discard_stdout_access_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kube: None,
            discovery: discovery::Mode::Endpointslices,
            discovery_all: false,
            resolver: None,
            discard_stdout_access_log: false,
        }
    }
}

type Listeners = Arc<Mutex<HashMap<String, ListenerHandle>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A started ferry: its bound addresses, its store, and the handles to reconfigure and drain it.
pub struct Running {
    pub admin: SocketAddr,
    pub store: Arc<Store>,
    has_kube: bool,
    /// One apply at a time (a SIGHUP and a file change may race): each plans from what the last
    /// one left.
    applying: tokio::sync::Mutex<()>,
    listeners: Listeners,
    /// The directories of the certificate files in use; `None` if the platform cannot watch.
    certs: Mutex<Option<Watch>>,
    /// Listeners removed or replaced by a reload, still draining.
    retired: Mutex<Vec<JoinHandle<()>>>,
    configs: Option<mpsc::Sender<Publish>>,
    discovery: Option<JoinHandle<()>>,
    /// The config whose host names the DNS task resolves, and the generation it last finished.
    dns: tokio::sync::watch::Sender<dns::Wanted>,
    dns_done: Mutex<tokio::sync::watch::Receiver<u64>>,
    dns_task: JoinHandle<()>,
    stop_admin: tokio::sync::watch::Sender<bool>,
    admin_task: JoinHandle<()>,
}

/// Starts ferry without Kubernetes (every backend static).
pub async fn start(config: Config) -> Result<Running, ApplyError> {
    start_with(config, Options::default()).await
}

/// Binds the admin listener, then applies `config` onto an empty server (binding every listener,
/// publishing the first table, starting discovery if a Kubernetes client is given). Fails, serving
/// nothing, if any address cannot be bound or the config needs what is not there.
pub async fn start_with(config: Config, opts: Options) -> Result<Running, ApplyError> {
    let admin = config.admin;
    let admin_listener =
        bind(admin).map_err(|source| ApplyError::Bind { what: "admin".into(), addr: admin, source })?;
    let running = Running::empty(admin_listener, opts);
    running.apply(config).await?;
    Ok(running)
}

impl Running {
    /// A server with no config yet: the admin listener serving (not ready), discovery waiting for
    /// its first config, the certificate watch started.
    fn empty(admin_listener: tokio::net::TcpListener, opts: Options) -> Running {
        let admin = admin_listener.local_addr().expect("bound socket has an address");
        let store = Arc::new(Store::new(Arc::new(Metrics::new())));
        store.reuse.logs.discard_stdout.store(opts.discard_stdout_access_log, std::sync::atomic::Ordering::Relaxed);
        let listeners: Listeners = Arc::default();
        let certs = watch_files(Arc::downgrade(&listeners), store.clone());
        let has_kube = opts.kube.is_some();
        let (configs, discovery) = match opts.kube {
            Some(client) => {
                let (tx, rx) = mpsc::channel(8);
                let task =
                    tokio::spawn(discovery::kube::run(client, store.clone(), opts.discovery, opts.discovery_all, rx));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let (dns, wanted) = tokio::sync::watch::channel((0, None));
        let (done, dns_done) = tokio::sync::watch::channel(0);
        let resolver = opts.resolver.unwrap_or_else(|| Arc::new(dns::SystemResolver));
        let dns_task = tokio::spawn(dns::run(store.clone(), resolver, wanted, done));
        let (stop_admin, admin_rx) = tokio::sync::watch::channel(false);
        let admin_task =
            tokio::spawn(crate::admin::serve(admin_listener, Arc::new(AdminState::new(store.clone())), admin_rx));
        Running {
            admin,
            store,
            has_kube,
            applying: tokio::sync::Mutex::new(()),
            listeners,
            certs: Mutex::new(certs),
            retired: Mutex::new(Vec::new()),
            configs,
            discovery,
            dns,
            dns_done: Mutex::new(dns_done),
            dns_task,
            stop_admin,
            admin_task,
        }
    }

    /// The bound address of a listener by name.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        lock(&self.listeners).get(listener).map(|h| h.addr)
    }

    /// (listener name, bound address), sorted by name.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = lock(&self.listeners).iter().map(|(n, h)| (n.clone(), h.addr)).collect();
        v.sort();
        v
    }

    /// Swaps in a new config without dropping connections: new listeners are bound first (a bind
    /// failure rejects the whole change and nothing moves), the table is published (through
    /// discovery when it runs, so Service backends keep their endpoints) and is live when this
    /// returns, listeners whose name, address and protocol are unchanged keep running untouched,
    /// and removed ones stop accepting and drain in the background.
    pub async fn apply(&self, config: Config) -> Result<(), ApplyError> {
        let _one_at_a_time = self.applying.lock().await;
        if !self.has_kube {
            if let Some(b) = config.backends.iter().find(|b| b.service.is_some()) {
                return Err(ApplyError::NoKube(b.name.clone()));
            }
        }
        // Stage: read everything the config names, bind its new listeners, open its new access
        // logs; any failure here returns with nothing live changed (users, files, logs,
        // listeners, table) — the sockets just bound close as they drop.
        let mut certs = crate::tls::load_files(&config).map_err(ApplyError::Files)?;
        let reuse = &self.store.reuse;
        let users = reuse.users.stage(&config).map_err(ApplyError::Files)?;
        let files = reuse.files.stage(&config).map_err(ApplyError::Files)?;
        let current: HashMap<String, Shape> = lock(&self.listeners).iter().map(|(n, h)| (n.clone(), h.shape)).collect();
        let plan = plan(&current, &config);
        let mut fresh = Vec::new();
        for name in &plan.bind {
            let l = config.listeners.iter().find(|l| &l.name == name).expect("planned from this config");
            let sock = bind(l.bind).map_err(|source| ApplyError::Bind {
                what: format!("listener `{}`", l.name),
                addr: l.bind,
                source,
            })?;
            fresh.push((l, sock));
        }
        // Last, as it is the one stage that touches the disk: opening a new access-log file
        // creates it (a refused config leaves at most that empty file behind).
        let logs = reuse.logs.stage(&config, &self.store.metrics).map_err(ApplyError::Files)?;
        // Commit: the staged files become the live ones, then the table that uses them.
        reuse.users.commit(users);
        reuse.files.commit(files);
        reuse.logs.commit(logs);
        let first = self.store.config().is_none();
        match &self.configs {
            Some(tx) => {
                let (done, published) = oneshot::channel();
                tx.send(Publish { config: config.clone(), done }).await.map_err(|_| ApplyError::DiscoveryGone)?;
                published.await.map_err(|_| ApplyError::DiscoveryGone)?;
            }
            None => {
                self.store.publish(Arc::new(config.clone()), HashMap::new());
            }
        }
        if !first {
            self.store.metrics.config_reloads.inc();
        }
        if config.backends.iter().any(|b| !b.names.is_empty()) || self.dns.borrow().1.is_some() {
            // Resolve the new config's host names before returning (bounded: a slow resolver
            // delays nothing else, the names fill in when it answers).
            let generation = self.dns.borrow().0 + 1;
            self.dns.send_replace((generation, Some(Arc::new(config.clone()))));
            let mut done = lock(&self.dns_done).clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), done.wait_for(|g| *g >= generation)).await;
        }
        let mut retired = Vec::new();
        {
            let mut running = lock(&self.listeners);
            for name in &plan.keep {
                let l = config.listeners.iter().find(|l| &l.name == name).expect("planned from this config");
                running[name].set_tls(l, &mut certs);
            }
            for (l, sock) in fresh {
                let h = ListenerHandle::spawn(l, sock, &self.store);
                h.set_tls(l, &mut certs);
                if !first {
                    info!(listener = %l.name, addr = %h.addr, "listening");
                }
                retired.extend(running.insert(l.name.clone(), h));
            }
            for name in &plan.retire {
                retired.extend(running.remove(name));
            }
        }
        if let Some(w) = lock(&self.certs).as_mut() {
            let files = config.listeners.iter().filter_map(|l| l.tls.as_ref()).flat_map(|t| t.certificates.iter());
            let files = files.flat_map(|p| [p.cert.as_path(), p.key.as_path()]);
            let _ = w.follow(files.chain(crate::auth::files_of(&config)));
        }
        let mut draining = lock(&self.retired);
        for h in retired {
            info!(addr = %h.addr, "listener removed; draining");
            draining.push(h.stop());
        }
        Ok(())
    }

    /// Reads `path` and applies it. Any failure — unreadable, invalid (every error, FILE:LINE:COL),
    /// or not applicable (a bind, a certificate) — is logged, counted and shown on /routes, and the
    /// last good table keeps serving.
    pub async fn reload_file(&self, path: &Path) -> bool {
        let result = match Config::load(path) {
            Ok(cfg) => self.apply(cfg).await.map_err(ReloadError::from),
            Err(e) => Err(ReloadError::from(e)),
        };
        match result {
            Ok(()) => {
                info!(file = %path.display(), "config reloaded");
                true
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    error!("{line}");
                }
                warn!(file = %path.display(), "config rejected; keeping the last good one");
                self.store.reject(&e);
                false
            }
        }
    }

    /// Watches `path` (its directory, so a ConfigMap's `..data` symlink swap is seen) and reloads
    /// when its content changes from `loaded`, the bytes the running config was parsed from. A
    /// change made before the watch was in place is caught by one check right after. Returns the
    /// watch; dropping it stops watching.
    pub fn watch_config(self: &Arc<Self>, path: PathBuf, loaded: Vec<u8>) -> notify::Result<Watch> {
        let (mut w, mut changes) = Watch::new("the config file", Duration::from_millis(100))?;
        w.follow([path.as_path()])?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = Some(loaded);
            while changes.next().await {
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                let Some(me) = me.upgrade() else { return };
                me.reload_file(&path).await;
            }
        });
        Ok(w)
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
        let handles: Vec<ListenerHandle> = lock(&self.listeners).drain().map(|(_, h)| h).collect();
        let retired = std::mem::take(&mut *lock(&self.retired));
        for t in handles.into_iter().map(ListenerHandle::stop).chain(retired) {
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
        self.dns_task.abort();
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
        // The last requests' lines reach their files before the process ends.
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.reuse.logs.flush(Duration::from_secs(2))).await;
        drained
    }

    /// SIGUSR1: access-log files are reopened by path (after logrotate moved them).
    pub fn reopen_logs(&self) {
        self.store.reuse.logs.reopen();
    }

    /// Waits (up to `within`) until every access-log line so far is written. Blocking.
    pub fn flush_logs(&self, within: Duration) {
        self.store.reuse.logs.flush(within);
    }
}

/// Reloads the certificates of the listeners using a changed file, and changed htpasswd files; a
/// broken file is logged, counted and shown on /routes while what it held before keeps serving.
fn watch_files(listeners: Weak<Mutex<HashMap<String, ListenerHandle>>>, store: Arc<Store>) -> Option<Watch> {
    let (w, mut changes) = match Watch::new("certificate and htpasswd files", Duration::from_millis(200)) {
        Ok(ok) => ok,
        Err(e) => {
            warn!(error = %e, "cannot watch certificate files; they are reloaded with the config only");
            return None;
        }
    };
    tokio::spawn(async move {
        while changes.next().await {
            let Some(listeners) = listeners.upgrade() else { return };
            let tls: Vec<_> = lock(&listeners).iter().filter_map(|(n, h)| Some((n.clone(), h.server_tls()?))).collect();
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
                        store.reject(&e);
                    }
                }
            }
            for f in store.reuse.users.all() {
                match f.reload() {
                    Ok(false) => {}
                    Ok(true) => info!(file = %f.path.display(), users = f.users(), "htpasswd file reloaded"),
                    Err(e) => {
                        store.metrics.config_errors.inc();
                        error!("{e}; keeping the users read before");
                        store.reject(&e);
                    }
                }
            }
        }
    });
    Some(w)
}
