//! The data plane. `http` serves HTTP listeners, `tcp` raw TCP listeners; `client` owns upstream connection pools and the
//! request body type; `body` the response body; `headers` header hygiene; `error` the errors
//! ferry answers itself. Nothing here mutates the routing table: it is loaded, read and dropped.

pub mod body;
pub mod client;
pub mod error;
pub mod headers;
pub mod http;
pub mod proxy_protocol;
pub mod tcp;

/// After a failed accept (EMFILE and friends): back off briefly instead of spinning, and log the
/// first failure and every 1000th.
pub(crate) async fn accept_failed(listener: &str, e: &std::io::Error, count: &mut u64) {
    if *count % 1000 == 0 {
        tracing::warn!(listener, error = %e, "accept failed");
    }
    *count += 1;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}
