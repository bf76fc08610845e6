//! The upstream side, owned by neither the table nor the proxy: `pool` holds the pooled upstream
//! clients (kept across table swaps, keyed by their settings), `body` the request body as ferry
//! sends it (policed, retryable before it is sent), `replace` the streaming string replacement a
//! route may apply to response bodies (`body_replace`). The table holds a client per backend; the
//! proxy sends through it.

pub mod body;
pub mod pool;
pub mod replace;

/// The error type of the bodies ferry streams (both directions).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
