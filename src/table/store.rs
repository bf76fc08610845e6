//! The one place control plane and data plane meet: an `ArcSwap<Table>`.
//!
//! Publishing builds a complete table and stores it in one step; readers see the old table or the
//! new one, never a mix. The store also remembers the last config error so the admin API can show
//! why a reload was refused while the last good table keeps serving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::build::{build, BuildContext};
use super::Table;
use crate::balance::StatsRegistry;
use crate::config::{Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::proxy::client::ClientRegistry;

pub struct Store {
    current: ArcSwap<Table>,
    config: ArcSwapOption<Config>,
    last_error: ArcSwapOption<String>,
    version: AtomicU64,
    pub stats: StatsRegistry,
    pub clients: ClientRegistry,
    pub metrics: Arc<Metrics>,
}

impl Store {
    pub fn new(metrics: Arc<Metrics>) -> Store {
        Store {
            current: ArcSwap::from_pointee(Table::empty()),
            config: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
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
        self.config.load_full()
    }

    /// Builds a table from `config` and publishes it. Returns the new version.
    pub fn publish(&self, config: Config) -> u64 {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let ctx = BuildContext {
            stats: &self.stats,
            clients: &self.clients,
            metrics: &self.metrics,
        };
        let table = build(&config, version, &ctx);
        self.config.store(Some(Arc::new(config)));
        self.current.store(Arc::new(table));
        self.last_error.store(None);
        self.metrics.table_swaps.inc();
        self.metrics.table_version.set(version as i64);
        version
    }

    /// Records a rejected config: the live table is untouched.
    pub fn reject(&self, errors: &ConfigErrors) {
        self.metrics.config_errors.inc();
        self.last_error.store(Some(Arc::new(errors.to_string())));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// True once a table built from a config has been published.
    pub fn has_table(&self) -> bool {
        self.current.load().version > 0
    }
}
