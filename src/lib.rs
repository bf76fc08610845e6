#![forbid(unsafe_code)]
//! # ferry
//!
//! An in-cluster L4/L7 reverse proxy for Kubernetes workloads.
//!
//! # Layout
//!
//! Modules are layered; a module uses only modules below it (checked by `tests/layout.rs`):
//!
//! ```text
//! server                      start, apply, reload, watch files, drain
//! sources                     Kubernetes objects (Ingress) → the routes model; manifests on disk; the live watch
//! proxy  discovery  admin     data plane · Kubernetes watches · admin listener
//! table                       the immutable snapshot, its pure builder, the one ArcSwap
//! upstream  balance  limit    upstream pools and request body · endpoint choice and state · rate limits
//! access_log                  access-log lines rendered, queued and written off the request path
//! tls  auth  files  metrics   certificates · htpasswd files · static files, error pages · Prometheus handles
//! config  http1               routes.yaml → validated model · the HTTP/1 wire rules (framing, Connection
//!                             tokens, Content-Length, chunked)
//! ```
//!
//! **config** reads routes.yaml into raw serde structs (`raw`) and validates them into a typed
//! `Config` (`validate`, `listener`, `route`, `backend`, scalar fields in `fields`), reporting every
//! problem as `FILE:LINE:COL: message` (`diag`); file problems (certificates) name the file only.
//!
//! **tls** loads certificates (chosen per handshake by SNI), builds upstream TLS configs and reads a
//! ClientHello's server name for passthrough. **auth** reads htpasswd files and checks basic-auth
//! credentials. **files** serves a route's static directory (tower-http's ServeDir over a backend
//! that keeps every path inside it) and holds the error pages. **metrics** holds the Prometheus
//! handles.
//!
//! **http1** holds the HTTP/1 wire rules once, for ferry's own server and its own upstream client:
//! field names, `Connection` tokens, the one strict Content-Length reader, the body decoder
//! (length, chunked, close-delimited), the readiness-exact read and the `writev` queue. The two
//! head codecs (`proxy::h1::codec` for requests, `upstream::h1::codec` for responses) are built on
//! it; neither uses the other.
//!
//! **upstream** owns the pooled upstream clients (kept across table swaps) and the request body as
//! ferry sends it (policed for size and pace, retryable before it is sent). **balance** picks
//! endpoints (round robin, P2C least-request, client-IP consistent hashing) and keeps per-endpoint
//! state outside the snapshot, keyed by address, so swaps keep it. **limit** holds the per-key
//! token buckets of `rate_limit`, in fixed tables of atomic slots, also kept across swaps.
//!
//! **import** reads nginx.conf files as nginx does (tokens, quoting, includes with globs), for
//! `ferry import`.
//!
//! **table** is the immutable routing snapshot (`Table`) and its input (`Discovered` endpoints, from
//! discovery or a static address list), its pure builder (`table::build`) and the one
//! `ArcSwap<Table>` (`table::store`) where the control plane publishes and the data plane reads.
//!
//! **proxy** is the data plane: `proxy::http` accepts connections (ferry's own HTTP/1 server,
//! `proxy::h1`, generic in its response body; hyper for the rest) and wraps each request in its
//! envelope (request ID, trace context, access log); `proxy::request` runs its named phases —
//! early (`proxy::head`: target, Host, CONNECT and transfer-coding rules; `proxy::path`) → route →
//! actions → forward (`proxy::forward`: attempts and the retry decision) or files → respond (the
//! one response filter); `proxy::tcp` forwards raw TCP. **discovery** follows Kubernetes:
//! `discovery::slice` turns EndpointSlices (or Endpoints) into endpoint sets purely,
//! `discovery::kube` runs the watches and publishes. **admin** serves /healthz, /readyz, /metrics
//! and /routes on its own listener.
//!
//! **sources** is the second config source: `sources::ingress` translates Ingress objects (and
//! ingress-nginx's annotations) into the routes.yaml model, checked by config's own parser, with
//! every problem naming its object and field; `sources::manifests` reads objects from files
//! (`ferry check -k`, `ferry run -k`), `sources::watch` follows the cluster with kube-runtime
//! reflectors and turns problems into Events; `sources::secrets` keeps the Secret data routes name
//! as private files.
//!
//! **server** is a running ferry: [`start_with`] applies the first config onto an empty server,
//! [`Running::apply`] swaps in a new one (`server::listeners::plan` decides what to bind, keep and
//! retire), `server::watch` follows the files on disk, and [`Running::shutdown`] drains.
//!
//! Outside the layers: **demo** runs ferry against in-process upstreams; **fuzzing** holds the
//! fuzz targets (driven by `tests/fuzz`).

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod balance;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod import;
pub mod limit;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod sources;
pub mod table;
pub mod tls;
pub mod upstream;

pub use server::{start, start_with, ApplyError, Options, Running};
