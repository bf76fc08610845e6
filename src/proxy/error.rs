//! Errors ferry answers itself, and their one mapping to a status code and body.
//!
//! The match in [`ProxyError::status`] is exhaustive (no `_` arm): a new failure mode does not
//! compile until someone decides what the client sees.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// Marks a response after which an HTTP/1 connection must close (`Connection: close` is
/// written where the request's version is known).
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

#[derive(Debug)]
pub enum ProxyError {
    /// No route on this listener matched the request.
    NoRoute { listener: String, host: String, path: String },
    /// The route's backend has no endpoint to send to.
    NoEndpoints { route: String, backend: String },
    /// Could not connect to the endpoint(s) tried.
    Connect { route: String, backend: String, endpoint: String, cause: String },
    /// The upstream failed after the connection was made (reset, garbage, closed before a response).
    Upstream { route: String, backend: String, endpoint: String, cause: String },
    /// request_timeout passed before the response head arrived.
    Timeout { route: String, backend: String, endpoint: String, after_ms: u128 },
    /// A request hyper parsed but whose framing or target is ambiguous (RFC 9112 lets a server
    /// reject these; ferry does, and closes the connection).
    BadRequest { listener: String, reason: &'static str },
    /// A request transfer coding other than chunked (RFC 9112 §6.1).
    UnsupportedCoding { listener: String },
    /// CONNECT: ferry forwards no tunnels (see `head::Early::Connect`).
    MethodNotAllowed { listener: String, method: String },
    /// The request target is longer than the listener's max_uri_bytes.
    UriTooLong { listener: String, len: usize, max: usize },
    /// The request body is larger than the route's max_body_bytes.
    BodyTooLarge { route: String, max: u64 },
    /// The request body came slower than the listener's body_timeout / min_body_rate allow.
    BodyTimeout { route: String },
    /// The client's request body was malformed (an invalid chunk size) or broke off.
    ClientBody { route: String, cause: String },
    /// The route's `access` rules deny the client.
    Forbidden { route: String, client: std::net::IpAddr },
    /// The route's `basic_auth` wants (other) credentials.
    Unauthorized { route: String, realm: String },
    /// The route's `rate_limit` refused the request (with the status it names).
    RateLimited { route: String, status: StatusCode },
    /// The client already has the route's `max_requests_per_client` requests in progress.
    TooManyInProgress { route: String },
    /// A `static` route has no file for the path.
    FileNotFound { route: String, path: String },
    /// A `static` route's file exists but could not be read.
    FileUnreadable { route: String, path: String, cause: String },
    /// `forward_auth` refused the request (401, 403) or could not decide (500).
    AuthRefused { route: String, status: StatusCode, challenge: Option<HeaderValue> },
    /// `rewrite.reroute` rewrote the request more than [`MAX_REROUTES`] times (nginx answers a
    /// rewrite cycle with 500 too).
    RerouteLoop { route: String },
}

/// nginx's limit on `rewrite … last` cycles.
pub const MAX_REROUTES: usize = 10;

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UnsupportedCoding { .. } => StatusCode::NOT_IMPLEMENTED,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { status, .. } => *status,
            ProxyError::TooManyInProgress { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::FileNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::FileUnreadable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::RerouteLoop { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::AuthRefused { status, .. } => *status,
        }
    }

    /// Bounded label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::NoEndpoints { .. } => "no_endpoints",
            ProxyError::Connect { .. } => "connect",
            ProxyError::Upstream { .. } => "upstream",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::UnsupportedCoding { .. } => "unsupported_coding",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyTimeout { .. } => "body_timeout",
            ProxyError::ClientBody { .. } => "bad_body",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::TooManyInProgress { .. } => "max_requests_per_client",
            ProxyError::FileNotFound { .. } => "not_found",
            ProxyError::FileUnreadable { .. } => "file_unreadable",
            ProxyError::RerouteLoop { .. } => "reroute_loop",
            ProxyError::AuthRefused { .. } => "auth_refused",
        }
    }

    /// Must the client's HTTP/1 connection end after this answer? Yes when what follows on it
    /// cannot be trusted to be framed as the client meant (an ambiguous head), or the rest of a
    /// body is still on its way (a body cut off for being too slow).
    pub fn closes_connection(&self) -> bool {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::UnsupportedCoding { .. }
            | ProxyError::BodyTimeout { .. }
            | ProxyError::ClientBody { .. } => true,
            ProxyError::NoRoute { .. }
            | ProxyError::NoEndpoints { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::UriTooLong { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::Forbidden { .. }
            | ProxyError::Unauthorized { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::TooManyInProgress { .. }
            | ProxyError::FileNotFound { .. }
            | ProxyError::FileUnreadable { .. }
            | ProxyError::RerouteLoop { .. }
            | ProxyError::AuthRefused { .. } => false,
        }
    }

    /// What the client is told: the status, the kind and the route, never an address, an OS error
    /// or an upstream's words (those are in [`Display`](fmt::Display), for the log).
    pub fn public(&self) -> String {
        let what = match self {
            ProxyError::NoRoute { .. } => return "ferry: no route matches this request\n".into(),
            ProxyError::BadRequest { reason, .. } => return format!("ferry: bad request: {reason}\n"),
            ProxyError::MethodNotAllowed { method, .. } => {
                return format!("ferry: method {method} is not allowed (ferry forwards no tunnels)\n")
            }
            ProxyError::UnsupportedCoding { .. } => {
                return "ferry: request transfer codings other than chunked are not supported\n".into()
            }
            ProxyError::UriTooLong { max, .. } => {
                return format!("ferry: the request target is longer than max_uri_bytes {max}\n")
            }
            ProxyError::NoEndpoints { route, .. } => (route, "no endpoint is available".to_string()),
            ProxyError::Connect { route, .. } => (route, "cannot connect to the upstream".to_string()),
            ProxyError::Upstream { route, .. } => (route, "the upstream failed before answering".to_string()),
            ProxyError::Timeout { route, after_ms, .. } => {
                (route, format!("the upstream timed out after {after_ms} ms"))
            }
            ProxyError::BodyTooLarge { route, max } => {
                (route, format!("request body is larger than max_body_bytes {max}"))
            }
            ProxyError::BodyTimeout { route } => {
                (route, "request body arrived too slowly (body_timeout / min_body_rate)".to_string())
            }
            ProxyError::ClientBody { route, .. } => (route, "the request body is malformed".to_string()),
            ProxyError::Forbidden { route, .. } => (route, "access denied".to_string()),
            ProxyError::Unauthorized { route, .. } => (route, "authentication required".to_string()),
            ProxyError::RateLimited { route, .. } => (route, "too many requests".to_string()),
            ProxyError::TooManyInProgress { route } => (route, "too many requests in progress".to_string()),
            ProxyError::FileNotFound { route, .. } => (route, "not found".to_string()),
            ProxyError::FileUnreadable { route, .. } => (route, "the file cannot be read".to_string()),
            ProxyError::RerouteLoop { route } => (route, format!("rewritten more than {MAX_REROUTES} times")),
            ProxyError::AuthRefused { route, status, .. } => match status.as_u16() {
                401 => (route, "authentication required".to_string()),
                403 => (route, "access denied".to_string()),
                _ => (route, "the auth service did not decide".to_string()),
            },
        };
        format!("ferry: route '{}': {}\n", what.0, what.1)
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = self.public();
        let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp.headers_mut().insert("x-ferry-error", HeaderValue::from_static(self.kind()));
        if let ProxyError::MethodNotAllowed { .. } = &self {
            // RFC 9110 §15.5.6: a 405 lists the methods the target does support.
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"));
        }
        if self.closes_connection() {
            resp.extensions_mut().insert(CloseConnection);
        }
        if let ProxyError::AuthRefused { challenge: Some(c), .. } = &self {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if let ProxyError::Unauthorized { realm, .. } = &self {
            let challenge = format!("Basic realm=\"{realm}\""); // as nginx and Apache send it
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoRoute { listener, host, path } => {
                write!(f, "ferry: no route on listener '{listener}' for host '{host}' path '{path}'")
            }
            ProxyError::NoEndpoints { route, backend } => {
                write!(f, "ferry: route '{route}': backend '{backend}' has no endpoints")
            }
            ProxyError::Connect { route, backend, endpoint, cause } => {
                write!(f, "ferry: route '{route}': backend '{backend}': cannot connect to {endpoint}: {cause}")
            }
            ProxyError::Upstream { route, backend, endpoint, cause } => {
                write!(f, "ferry: route '{route}': backend '{backend}': upstream {endpoint} failed: {cause}")
            }
            ProxyError::Timeout { route, backend, endpoint, after_ms } => {
                write!(
                    f,
                    "ferry: route '{route}': backend '{backend}': upstream {endpoint} timed out after {after_ms} ms"
                )
            }
            ProxyError::BadRequest { listener, reason } => {
                write!(f, "ferry: listener '{listener}': bad request: {reason}")
            }
            ProxyError::UnsupportedCoding { listener } => {
                write!(f, "ferry: listener '{listener}': a request transfer coding other than chunked")
            }
            ProxyError::MethodNotAllowed { listener, method } => {
                write!(f, "ferry: listener '{listener}': {method} refused: ferry forwards no tunnels")
            }
            ProxyError::UriTooLong { listener, len, max } => {
                write!(
                    f,
                    "ferry: listener '{listener}': request target of {len} bytes is longer than max_uri_bytes {max}"
                )
            }
            ProxyError::BodyTooLarge { route, max } => {
                write!(f, "ferry: route '{route}': request body is larger than max_body_bytes {max}")
            }
            ProxyError::BodyTimeout { route } => {
                write!(f, "ferry: route '{route}': request body arrived too slowly (body_timeout / min_body_rate)")
            }
            ProxyError::ClientBody { route, cause } => {
                write!(f, "ferry: route '{route}': the client's request body failed: {cause}")
            }
            ProxyError::Forbidden { route, client } => {
                write!(f, "ferry: route '{route}': access denied to {client}")
            }
            ProxyError::Unauthorized { route, .. } => {
                write!(f, "ferry: route '{route}': missing or wrong credentials")
            }
            ProxyError::RateLimited { route, .. } => write!(f, "ferry: route '{route}': rate limit exceeded"),
            ProxyError::TooManyInProgress { route } => {
                write!(f, "ferry: route '{route}': too many requests in progress from this client")
            }
            ProxyError::FileNotFound { route, path } => write!(f, "ferry: route '{route}': no file for {path}"),
            ProxyError::FileUnreadable { route, path, cause } => {
                write!(f, "ferry: route '{route}': cannot read the file for {path}: {cause}")
            }
            ProxyError::RerouteLoop { route } => {
                write!(f, "ferry: route '{route}': rewritten and rerouted more than {MAX_REROUTES} times")
            }
            ProxyError::AuthRefused { route, status, .. } => {
                write!(f, "ferry: route '{route}': forward_auth answered {status}")
            }
        }
    }
}
