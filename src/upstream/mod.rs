//! The upstream side, owned by neither the table nor the proxy: `h1` is ferry's own HTTP/1.1
//! client for plain-text upstreams (an idle-connection stack per endpoint), `pool` holds hyper's
//! pooled clients for TLS upstreams and upgrades (kept across table swaps, keyed by their
//! settings), `body` the request body as ferry sends it (policed, retryable before it is sent),
//! `replace` the streaming string replacement a route may apply to response bodies
//! (`body_replace`). The table holds a client and a pool per backend endpoint; the proxy sends
//! through them.

pub mod body;
pub mod h1;
pub mod pool;
pub mod replace;

pub use crate::config::idempotent;

/// The error type of the bodies ferry streams (both directions).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
