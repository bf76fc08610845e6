//! Host names in static backend addresses (`eureka-0.eureka.ns.svc.cluster.local:8761`,
//! `mysql.example.com:3306`): resolved when a config is applied and again every `dns_refresh`;
//! every address a name resolves to is an endpoint. A lookup that fails keeps what the name last
//! resolved to (logged once per change, counted in `ferry_dns_errors_total{backend}`, shown on
//! /routes as `last_error`).
//!
//! The system resolver (getaddrinfo, so /etc/hosts and the pod's resolv.conf with its cluster
//! search domains apply, exactly as for every other program in the pod) runs on tokio's blocking
//! pool; tests inject their own [`Resolve`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::table::store::Store;
use crate::table::{Condition, Discovered};

pub type Lookup<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a host name to addresses.
pub trait Resolve: Send + Sync {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// getaddrinfo on the blocking pool.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// The config to resolve for, with a generation number; the task answers with the generation it
/// finished, so `apply` can wait for the first pass.
pub type Wanted = (u64, Option<Arc<Config>>);

/// Runs until the config sender is dropped.
pub async fn run(
    store: Arc<Store>,
    resolver: Arc<dyn Resolve>,
    mut wanted: watch::Receiver<Wanted>,
    done: watch::Sender<u64>,
) {
    // (backend, host, port) → the last good answer, and the last error seen (to log changes once).
    let mut last: HashMap<(String, String, u16), Vec<SocketAddr>> = HashMap::new();
    let mut failing: HashMap<(String, String, u16), String> = HashMap::new();
    loop {
        let (generation, config) = wanted.borrow_and_update().clone();
        let mut refresh = Duration::from_secs(3600);
        if let Some(config) = config {
            let mut updates = Vec::new();
            for b in config.backends.iter().filter(|b| !b.names.is_empty()) {
                refresh = refresh.min(b.dns_refresh);
                let mut set = Vec::new();
                for n in b.names.iter().filter(|n| !n.down) {
                    let key = (b.name.clone(), n.host.clone(), n.port);
                    match resolver.resolve(&n.host, n.port).await {
                        Ok(mut addrs) if !addrs.is_empty() => {
                            addrs.sort();
                            addrs.dedup();
                            if failing.remove(&key).is_some() || last.get(&key) != Some(&addrs) {
                                info!(backend = %b.name, host = %n.host, addresses = ?addrs, "host name resolved");
                            }
                            last.insert(key.clone(), addrs);
                        }
                        result => {
                            let why = match result {
                                Err(e) => e.to_string(),
                                Ok(_) => "no addresses".to_string(),
                            };
                            store.metrics.dns_errors.with_label_values(&[&b.name]).inc();
                            if failing.get(&key) != Some(&why) {
                                warn!(backend = %b.name, host = %n.host, error = %why, "host name lookup failed; keeping the last addresses");
                                store.reject(&format!(
                                    "backend `{}`: cannot resolve {}: {why}; keeping the last addresses",
                                    b.name, n.host
                                ));
                                failing.insert(key.clone(), why);
                            }
                        }
                    }
                    for &addr in last.get(&key).into_iter().flatten() {
                        set.push(Discovered {
                            addr,
                            condition: Condition::Ready,
                            pod: None,
                            weight: n.weight,
                            backup: n.backup,
                        });
                    }
                }
                set.sort();
                set.dedup_by(|a, b| a.addr == b.addr);
                updates.push((b.name.clone(), set));
            }
            last.retain(|(b, h, p), _| {
                config.backend(b).is_some_and(|be| be.names.iter().any(|n| &n.host == h && n.port == *p))
            });
            store.update_endpoints(updates);
        }
        let _ = done.send(generation);
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(refresh) => {}
        }
    }
}
