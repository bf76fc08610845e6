//! The one place control plane and data plane meet: an `ArcSwap<Table>`.
//!
//! Publishing builds a complete table and stores it in one step; readers see the old table or the
//! new one, never a mix. Endpoint changes rebuild only the backends that changed and share the
//! rest. Publishers (discovery, config reload) are serialised by a lock that readers never take.
//! The store also remembers the last config error for the admin API, whether discovery has
//! completed its first lists (for /readyz), and announces each new version (for requests holding
//! for endpoints).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use super::build::{backend, build, with_backends, BuildContext};
use super::Table;
use crate::balance::StatsRegistry;
use crate::config::{Config, ConfigErrors};
use crate::discovery::slice::Discovered;
use crate::metrics::Metrics;
use crate::proxy::client::ClientRegistry;

#[derive(Default)]
struct Control {
    config: Option<Arc<Config>>,
    /// Backend name → discovered endpoints, for Service backends.
    discovered: HashMap<String, Vec<Discovered>>,
}

pub struct Store {
    current: ArcSwap<Table>,
    control: Mutex<Control>,
    last_error: ArcSwapOption<String>,
    version: AtomicU64,
    versions: watch::Sender<u64>,
    needs_discovery: AtomicBool,
    discovery_synced: AtomicBool,
    /// Milliseconds since `epoch()` of the last Kubernetes event; 0 = none yet.
    last_event_ms: AtomicU64,
    pub stats: StatsRegistry,
    pub clients: ClientRegistry,
    pub metrics: Arc<Metrics>,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

impl Store {
    pub fn new(metrics: Arc<Metrics>) -> Store {
        Store {
            current: ArcSwap::from_pointee(Table::empty()),
            control: Mutex::new(Control::default()),
            last_error: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
            versions: watch::channel(0).0,
            needs_discovery: AtomicBool::new(false),
            discovery_synced: AtomicBool::new(false),
            last_event_ms: AtomicU64::new(0),
            stats: StatsRegistry::default(),
            clients: ClientRegistry::default(),
            metrics,
        }
    }

    /// The live table. Data-plane callers hold it for one request or connection.
    #[inline]
    pub fn load(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// The config the live table was built from.
    pub fn config(&self) -> Option<Arc<Config>> {
        self.lock().config.clone()
    }

    /// Wakes on every published version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ctx(&self) -> BuildContext<'_> {
        BuildContext { stats: &self.stats, clients: &self.clients, metrics: &self.metrics }
    }

    fn swap(&self, table: Table) -> u64 {
        let v = table.version;
        self.current.store(Arc::new(table));
        self.metrics.table_swaps.inc();
        self.metrics.table_version.set(v as i64);
        self.versions.send_replace(v);
        v
    }

    /// Builds a whole table from `config` (Service backends from `discovered`) and publishes it.
    pub fn publish(&self, config: Arc<Config>, discovered: HashMap<String, Vec<Discovered>>) -> u64 {
        let mut control = self.lock();
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let table = build(&config, version, &self.ctx(), &discovered);
        self.needs_discovery.store(config.uses_kubernetes(), Ordering::Relaxed);
        control.config = Some(config);
        control.discovered = discovered;
        self.last_error.store(None);
        self.swap(table)
    }

    /// Replaces the endpoints of some Service backends, rebuilding only those whose set changed.
    /// Returns the live version (unchanged when nothing changed).
    pub fn update_endpoints(&self, updates: Vec<(String, Vec<Discovered>)>) -> u64 {
        let mut control = self.lock();
        let Some(config) = control.config.clone() else { return self.version.load(Ordering::Relaxed) };
        let old = self.load();
        let mut replaced = Vec::new();
        for (name, set) in updates {
            if control.discovered.get(&name) == Some(&set) {
                continue;
            }
            let Some(i) = config.backends.iter().position(|b| b.name == name) else { continue };
            replaced.push((i, Arc::new(backend(&config.backends[i], &set, &self.ctx()))));
            control.discovered.insert(name, set);
        }
        if replaced.is_empty() {
            return old.version;
        }
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        self.swap(with_backends(&old, version, replaced))
    }

    /// Records a rejected config: the live table is untouched.
    pub fn reject(&self, errors: &ConfigErrors) {
        self.metrics.config_errors.inc();
        self.last_error.store(Some(Arc::new(errors.to_string())));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    pub fn set_discovery_synced(&self) {
        self.discovery_synced.store(true, Ordering::Relaxed);
    }

    /// Notes that the Kubernetes API just said something (for the last-sync-age metric).
    pub fn discovery_event(&self) {
        self.last_event_ms.store(epoch().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// Seconds since the last Kubernetes event, if any.
    pub fn last_sync_age(&self) -> Option<f64> {
        match self.last_event_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some((epoch().elapsed().as_millis() as u64 + 1).saturating_sub(ms) as f64 / 1000.0),
        }
    }

    /// Ready to take traffic: a table built from a config is live and, if the config follows
    /// Kubernetes Services, every watched list has arrived once.
    pub fn ready(&self) -> bool {
        self.current.load().version > 0
            && (!self.needs_discovery.load(Ordering::Relaxed) || self.discovery_synced.load(Ordering::Relaxed))
    }
}
