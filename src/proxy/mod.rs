//! The data plane. `http` serves HTTP listeners, `tcp` raw TCP listeners; `client` owns upstream connection pools and the
//! request body type; `body` the response body; `headers` header hygiene; `error` the errors
//! ferry answers itself. Nothing here mutates the routing table: it is loaded, read and dropped.

pub mod body;
pub mod client;
pub mod error;
pub mod headers;
pub mod http;
pub mod tcp;
