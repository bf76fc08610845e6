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

use super::build::{backend, build, endpoints, with_backends, BuildContext};
use super::Discovered;
use super::Table;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Default)]
struct Control {
    config: Option<Arc<Config>>,
    /// Backend name → the endpoints found for it: a Service backend's from discovery, a static
    /// backend's host names as resolved (its IP addresses are in the config).
    found: HashMap<String, Vec<Discovered>>,
}

pub struct Store {
    current: ArcSwap<Table>,
    control: Mutex<Control>,
    last_error: ArcSwapOption<String>,
    version: AtomicU64,
    versions: watch::Sender<u64>,
    needs_discovery: AtomicBool,
    discovery_synced: AtomicBool,
    /// Shutting down: /readyz says 503 and HTTP/1 responses ask clients to close.
    draining: AtomicBool,
    /// Milliseconds since `epoch()` of the last Kubernetes event; 0 = none yet.
    last_event_ms: AtomicU64,
    /// What every build reuses (pools, per-endpoint stats, htpasswd files, rate-limit buckets).
    pub reuse: BuildContext,
    /// The same handles as `reuse.metrics`, for the code that only counts.
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
            draining: AtomicBool::new(false),
            last_event_ms: AtomicU64::new(0),
            reuse: BuildContext::new(metrics.clone()),
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

    fn swap(&self, table: Table) -> u64 {
        let v = table.version;
        self.current.store(Arc::new(table));
        self.metrics.table_swaps.inc();
        self.metrics.table_version.set(v as i64);
        self.versions.send_replace(v);
        v
    }

    /// Builds a whole table from `config` (Service backends from `discovered`, which replaces what
    /// was known of them) and publishes it. Resolved host names are kept for the static backends
    /// that still have them.
    pub fn publish(&self, config: Arc<Config>, discovered: HashMap<String, Vec<Discovered>>) -> u64 {
        let mut control = self.lock();
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let resolved = |name: &String| config.backend(name).is_some_and(|b| b.service.is_none() && !b.names.is_empty());
        control.found.retain(|name, _| resolved(name));
        control.found.extend(discovered);
        let table = build(&config, version, &self.reuse, &control.found);
        self.needs_discovery.store(config.uses_kubernetes(), Ordering::Relaxed);
        control.config = Some(config);
        self.last_error.store(None);
        self.swap(table)
    }

    /// Replaces the endpoints found for some backends (a Service's from discovery, a static
    /// backend's resolved host names), rebuilding only those whose set changed. Returns the live
    /// version (unchanged when nothing changed).
    pub fn update_endpoints(&self, updates: Vec<(String, Vec<Discovered>)>) -> u64 {
        let mut control = self.lock();
        let Some(config) = control.config.clone() else { return self.version.load(Ordering::Relaxed) };
        let old = self.load();
        let mut replaced = Vec::new();
        for (name, set) in updates {
            if control.found.get(&name) == Some(&set) {
                continue;
            }
            let Some(i) = config.backends.iter().position(|b| b.name == name) else { continue };
            let eps = endpoints(&config.backends[i], Some(&set));
            replaced.push((i, Arc::new(backend(&config.backends[i], &eps, &self.reuse))));
            control.found.insert(name, set);
        }
        if replaced.is_empty() {
            return old.version;
        }
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        self.swap(with_backends(&old, version, replaced))
    }

    /// Records a rejected config (or certificate) change: the live table is untouched.
    pub fn reject(&self, error: &dyn std::fmt::Display) {
        self.metrics.config_errors.inc();
        self.last_error.store(Some(Arc::new(error.to_string())));
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

    /// Starts the drain: from now on /readyz answers 503 and every HTTP/1 response carries
    /// `Connection: close`, so busy keep-alive clients leave after their current request (and
    /// reconnect where the Service now sends them) while the listeners still accept.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready to take traffic: a table built from a config is live and, if the config follows
    /// Kubernetes Services, every watched list has arrived once.
    pub fn ready(&self) -> bool {
        self.current.load().version > 0
            && (!self.needs_discovery.load(Ordering::Relaxed) || self.discovery_synced.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "\
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: a }, { backend: b } ] } ]
backends:
  a: { service: a.ns, port: 80 }
  b: { service: b.ns, port: 80 }
  s: { addresses: [10.0.0.9:80] }
";

    fn eps(ips: &[&str]) -> Vec<Discovered> {
        ips.iter().map(|ip| Discovered::ready(format!("{ip}:80").parse().unwrap(), None)).collect()
    }

    #[test]
    fn an_endpoint_update_rebuilds_only_the_changed_backend() {
        let store = Store::new(Arc::new(Metrics::new()));
        let cfg = Arc::new(Config::parse("t", CFG).unwrap());
        let v1 = store.publish(cfg, HashMap::from([("a".to_string(), eps(&["10.0.0.1"]))]));
        let t1 = store.load();
        assert_eq!(t1.backend("a").unwrap().endpoints.len(), 1);
        assert!(t1.backend("b").unwrap().endpoints.is_empty());
        assert!(!store.ready(), "a config with Service backends is not ready before discovery has synced");
        store.set_discovery_synced();
        assert!(store.ready());

        let v2 = store.update_endpoints(vec![("b".into(), eps(&["10.0.1.1", "10.0.1.2"]))]);
        assert_eq!(v2, v1 + 1);
        let t2 = store.load();
        assert_eq!(t2.backend("b").unwrap().endpoints.len(), 2);
        // Everything else is shared with the previous table, not rebuilt.
        assert!(Arc::ptr_eq(&t1.listeners, &t2.listeners));
        assert!(Arc::ptr_eq(&t1.backends[0], &t2.backends[0]));
        assert!(Arc::ptr_eq(&t1.backends[2], &t2.backends[2]));
        assert!(!Arc::ptr_eq(&t1.backends[1], &t2.backends[1]));
        // Per-endpoint state survives: a's endpoint keeps its stats object.
        assert!(Arc::ptr_eq(&t1.backends[0].endpoints[0].stats, &t2.backends[0].endpoints[0].stats));

        // The same set again publishes nothing.
        assert_eq!(store.update_endpoints(vec![("b".into(), eps(&["10.0.1.1", "10.0.1.2"]))]), v2);
        // A name the config does not have is ignored.
        assert_eq!(store.update_endpoints(vec![("zzz".into(), eps(&["10.0.9.9"]))]), v2);
    }
}
