//! The data plane. `http` accepts HTTP connections and takes each request through its head checks
//! and routing (`h1` is ferry's own HTTP/1 server for plain-text connections, hyper serves the rest); `forward` runs the attempts (endpoint choice, retry decision, the response on its
//! way back); `tcp` serves raw TCP listeners. Pure pieces: `head` (the I/O-free request-head path:
//! checks, route choice, upstream head), `path` (the normal form of a request path), `headers`
//! (header hygiene, forwarding headers), `error` (the errors ferry answers itself, one status
//! mapping). `body` is the response body; `proxy_protocol` the PROXY header. Upstream connections
//! and the request body live in `crate::upstream`. Nothing here mutates the routing table: it is
//! loaded, read and dropped.

pub mod actions;
pub mod affinity;
pub mod body;
pub mod compress;
pub mod error;
pub mod forward;
pub mod h1;
pub mod head;
pub mod headers;
pub mod http;
pub mod log;
pub mod path;
pub mod proxy_protocol;
mod request;
pub mod tcp;

/// How long a client has to finish a PROXY header, a TLS handshake or a ClientHello.
pub(crate) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One accepted connection, counted in `ferry_connections_active` for as long as it lives.
pub(crate) struct Active(prometheus::IntGauge);

impl Active {
    /// Admits a connection unless the listener's `max_connections` is reached (the caller refuses it).
    pub(crate) fn admit(
        store: &crate::table::store::Store,
        listener: &str,
        gauge: &prometheus::IntGauge,
    ) -> Option<Active> {
        let max = store.load().listener(listener).and_then(|l| l.limits.max_connections);
        if max.is_some_and(|m| gauge.get() >= m as i64) {
            return None;
        }
        gauge.inc();
        Some(Active(gauge.clone()))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// After a failed accept (EMFILE and friends): back off briefly instead of spinning, and log the
/// first failure and every 1000th.
pub(crate) async fn accept_failed(listener: &str, e: &std::io::Error, count: &mut u64) {
    if *count % 1000 == 0 {
        tracing::warn!(listener, error = %e, "accept failed");
    }
    *count += 1;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}
