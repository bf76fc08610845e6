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
//! **admin** serves /healthz, /readyz, /metrics and /routes on its own listener; **metrics** holds
//! the Prometheus handles; **demo** runs ferry against in-process upstreams.
//!
//! [`start`] binds every listener, publishes the first table and returns a [`Running`] server whose
//! [`Running::shutdown`] drains it gracefully.

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod proxy;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::AdminState;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::http::HttpListener;
use crate::table::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// A started ferry: its bound addresses, its store, and the handles to drain it.
pub struct Running {
    /// (listener name, bound address), in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    pub store: Arc<Store>,
    admin_state: Arc<AdminState>,
    stop_data: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    data: JoinSet<()>,
    admin_task: tokio::task::JoinHandle<()>,
}

/// Binds the admin and data listeners of `config` (port 0 picks a free port), publishes the first
/// table and starts serving. Fails, binding nothing, if any address cannot be bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(metrics));
    let admin_listener = bind(config.admin).map_err(|source| StartError::Bind {
        what: "admin".into(),
        addr: config.admin,
        source,
    })?;
    let mut bound = Vec::new();
    for l in &config.listeners {
        let sock = bind(l.bind).map_err(|source| StartError::Bind {
            what: format!("listener `{}`", l.name),
            addr: l.bind,
            source,
        })?;
        bound.push((l.name.clone(), sock));
    }
    let admin = admin_listener.local_addr().expect("bound socket has an address");
    let listeners: Vec<(String, SocketAddr)> = bound
        .iter()
        .map(|(n, s)| (n.clone(), s.local_addr().expect("bound socket has an address")))
        .collect();

    store.publish(config);

    let (stop_data, stop_rx) = watch::channel(false);
    let mut data = JoinSet::new();
    for (name, sock) in bound {
        let shared = Arc::new(HttpListener::new(&name, store.clone()));
        data.spawn(proxy::http::serve(sock, shared, stop_rx.clone()));
    }
    let admin_state = Arc::new(AdminState {
        store: store.clone(),
        draining: false.into(),
    });
    let (stop_admin, admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state.clone(), admin_rx));
    Ok(Running {
        listeners,
        admin,
        store,
        admin_state,
        stop_data,
        stop_admin,
        data,
        admin_task,
    })
}

impl Running {
    /// The bound address of a listener by name.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| a.to_owned())
    }

    /// Publishes a new table built from `config` for the listeners already bound.
    /// Returns the new table version.
    pub fn reload(&self, config: Config) -> u64 {
        self.store.publish(config)
    }

    /// Graceful drain: /readyz turns 503 at once; listeners keep accepting for `drain_delay` (so
    /// the Service can take this pod out); then they stop accepting and every connection is asked to
    /// finish (HTTP/1 `Connection: close`, HTTP/2 GOAWAY). In-flight requests get up to
    /// `shutdown_timeout`. Returns true if everything finished in time.
    pub async fn shutdown(mut self, drain_delay: Duration, shutdown_timeout: Duration) -> bool {
        self.admin_state.draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(drain_delay).await;
        let _ = self.stop_data.send(true);
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while self.data.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            self.data.abort_all();
        }
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
        drained
    }
}
