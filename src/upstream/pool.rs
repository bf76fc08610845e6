//! Pooled HTTP/1.1 keep-alive clients (hyper-util's pool), one per distinct set of settings, for
//! what ferry's own client (`upstream::h1`) leaves to hyper: TLS upstreams and upgrades.
//!
//! Clients are kept in a [`ClientRegistry`] keyed by their settings, outside the routing table, so
//! a table swap keeps every warm pooled connection. Connect timeout, idle timeout, pool size and
//! upstream TLS are per client, hence the key. Every client can speak TLS (hyper-rustls wraps the
//! connector; it only acts on `https` URIs, which ferry writes for backends with `tls`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::body::UpstreamBody;
use crate::config::{Backend, UpstreamTls};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub type UpstreamClient = Client<Timed<HttpsConnector<HttpConnector>>, UpstreamBody>;

tokio::task_local! {
    /// Set around a request whose access log wants `$upstream_connect_time`: a connection the
    /// request opened itself (not one taken from the pool) leaves how long connecting took.
    pub static CONNECT_TIME: std::cell::Cell<Option<Duration>>;
}

/// The connector, timed: a connect that runs in a request's task (hyper-util connects within the
/// request that needs a connection) reports its duration to that request's [`CONNECT_TIME`], if
/// set; otherwise it costs a clock read.
#[derive(Clone)]
pub struct Timed<C>(C);

impl<C> tower_service::Service<http::Uri> for Timed<C>
where
    C: tower_service::Service<http::Uri> + Send,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let r = connecting.await;
            if r.is_ok() {
                let _ = CONNECT_TIME.try_with(|t| t.set(Some(started.elapsed())));
            }
            r
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    tls: Option<UpstreamTls>,
}

/// Settings → client. Locked only while building a table.
#[derive(Default)]
pub struct ClientRegistry {
    map: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRegistry")
    }
}

impl ClientRegistry {
    pub fn get(&self, b: &Backend) -> UpstreamClient {
        let key = ClientKey {
            connect_timeout: b.connect_timeout,
            idle_timeout: b.idle_timeout,
            max_idle: b.max_idle_per_endpoint,
            tls: b.tls.clone(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_insert_with_key(new_client).clone()
    }
}

fn new_client(key: &ClientKey) -> UpstreamClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(key.connect_timeout));
    conn.set_keepalive(Some(Duration::from_secs(60)));
    conn.enforce_http(false);
    let tls = match &key.tls {
        // The files were checked before this config was accepted; should the CA have become
        // unreadable since, every handshake fails (502 naming the cause) rather than trusting anything.
        Some(t) => crate::tls::client_config(t).unwrap_or_else(|e| {
            tracing::error!(error = %e, "upstream CA unusable; TLS to this backend will fail");
            crate::tls::client_config_with_roots(rustls::RootCertStore::empty())
        }),
        None => crate::tls::client_config_with_roots(rustls::RootCertStore::empty()),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let https = match key.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.try_into().expect("validated when the config was read"),
        )),
        None => https,
    };
    let conn = https.enable_http1().wrap_connector(conn);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout)
        .pool_max_idle_per_host(key.max_idle)
        // ferry writes Host itself (the client's Host is kept by default).
        .set_host(false)
        .build(Timed(conn))
}
