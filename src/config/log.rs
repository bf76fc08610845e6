//! A listener's `access_log`, `request_id` and `trace_context`, read and checked.
//!
//! Access-log formats are nginx `log_format` strings compiled once (`$remote_addr - $remote_user
//! …`): literal pieces and variables, each variable checked against what the listener's protocol
//! can tell (an HTTP request, or a TCP connection). `combined` is nginx's own combined format;
//! `json` is one JSON object per line with stable, typed fields.

use std::path::PathBuf;

use http::HeaderName;
use marked_yaml::Spanned;

use super::diag::Errs;
use super::fields::{boolean, relative_to};
use super::raw::{RawAccessLog, RawTraceContext};
use super::template::{scan, Token};
use super::Protocol;

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// A TCP listener's `combined`: nginx's stream-module example format, plus how the connection ended.
pub const COMBINED_TCP: &str = r#"$remote_addr [$time_local] $protocol $status $bytes_sent $bytes_received $session_time "$upstream_addr" "$upstream_bytes_sent" "$upstream_bytes_received" "$upstream_connect_time" $ferry_error"#;

/// One variable of an access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogVar {
    RemoteAddr,
    RemotePort,
    /// The basic-auth user name.
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    /// Unix time with milliseconds.
    Msec,
    /// The request line: `GET /x?y HTTP/1.1`.
    Request,
    RequestMethod,
    RequestUri,
    /// The path, without the query.
    Uri,
    Args,
    ServerProtocol,
    Status,
    BodyBytesSent,
    /// Body and head.
    BytesSent,
    RequestTime,
    /// A request header (`$http_user_agent`).
    Http(HeaderName),
    /// A response header (`$sent_http_content_type`).
    SentHttp(HeaderName),
    Host,
    Scheme,
    ServerPort,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    UpstreamResponseTime,
    Route,
    Backend,
    RequestId,
    /// The `x-ferry-error` kind of an answer ferry gave itself (TCP: how the connection ended).
    FerryError,
    Listener,
    Pid,
    Hostname,
    // TCP connections.
    Protocol,
    BytesReceived,
    SessionTime,
    UpstreamBytesSent,
    UpstreamBytesReceived,
    /// The server name of a passed-through TLS ClientHello.
    SslPrereadServerName,
}

impl LogVar {
    fn named(name: &str, protocol: Protocol) -> Option<LogVar> {
        use LogVar::*;
        let both = match name {
            "remote_addr" => Some(RemoteAddr),
            "remote_port" => Some(RemotePort),
            "time_local" => Some(TimeLocal),
            "time_iso8601" => Some(TimeIso8601),
            "msec" => Some(Msec),
            "status" => Some(Status),
            "bytes_sent" => Some(BytesSent),
            "server_port" => Some(ServerPort),
            "upstream_addr" => Some(UpstreamAddr),
            "upstream_connect_time" => Some(UpstreamConnectTime),
            "backend" => Some(Backend),
            "ferry_error" => Some(FerryError),
            "listener" => Some(Listener),
            "pid" => Some(Pid),
            "hostname" => Some(Hostname),
            _ => None,
        };
        if both.is_some() {
            return both;
        }
        match protocol {
            super::Protocol::Http => Some(match name {
                "remote_user" => RemoteUser,
                "request" => Request,
                "request_method" => RequestMethod,
                "request_uri" => RequestUri,
                "uri" | "document_uri" => Uri,
                "args" | "query_string" => Args,
                "server_protocol" => ServerProtocol,
                "body_bytes_sent" => BodyBytesSent,
                "request_time" => RequestTime,
                "host" => Host,
                "scheme" => Scheme,
                "upstream_status" => UpstreamStatus,
                "upstream_header_time" => UpstreamHeaderTime,
                "upstream_response_time" => UpstreamResponseTime,
                "route" => Route,
                "request_id" => RequestId,
                _ => {
                    let header = |h: &str| HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok();
                    if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                        return header(h).map(Http);
                    }
                    if let Some(h) = name.strip_prefix("sent_http_").filter(|h| !h.is_empty()) {
                        return header(h).map(SentHttp);
                    }
                    return None;
                }
            }),
            super::Protocol::Tcp => Some(match name {
                "protocol" => Protocol,
                "bytes_received" => BytesReceived,
                "session_time" => SessionTime,
                "upstream_bytes_sent" => UpstreamBytesSent,
                "upstream_bytes_received" => UpstreamBytesReceived,
                "ssl_preread_server_name" => SslPrereadServerName,
                _ => return None,
            }),
        }
    }
}

const KNOWN_HTTP: &str = "$remote_addr, $remote_port, $remote_user, $time_local, $time_iso8601, $msec, $request, \
    $request_method, $request_uri, $uri, $args, $server_protocol, $status, $body_bytes_sent, $bytes_sent, \
    $request_time, $http_NAME, $sent_http_NAME, $host, $scheme, $server_port, $upstream_addr, $upstream_status, \
    $upstream_connect_time, $upstream_header_time, $upstream_response_time, $route, $backend, $request_id, \
    $ferry_error, $listener, $pid, $hostname";
const KNOWN_TCP: &str = "$remote_addr, $remote_port, $time_local, $time_iso8601, $msec, $protocol, $status, \
    $bytes_sent, $bytes_received, $session_time, $server_port, $upstream_addr, $upstream_bytes_sent, \
    $upstream_bytes_received, $upstream_connect_time, $ssl_preread_server_name, $backend, $ferry_error, \
    $listener, $pid, $hostname";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPiece {
    Lit(Box<str>),
    Var(LogVar),
}

/// How variable values are escaped (nginx `log_format … escape=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escape {
    /// `"`, `\`, control and non-ASCII bytes as `\xHH`; a missing value is `-`.
    #[default]
    Default,
    /// JSON string escapes; a missing value is empty.
    Json,
    /// As is; a missing value is `-`.
    None,
}

/// A compiled access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx-style: literal pieces and variables.
    Text { pieces: Box<[LogPiece]>, escape: Escape, text: Box<str> },
    /// One JSON object per line (fields fixed per protocol).
    Json,
}

impl LogFormat {
    /// Compiles a `log_format` string for a listener of `protocol`; on error, the byte offset of the
    /// variable and why.
    pub fn text(text: &str, escape: Escape, protocol: Protocol) -> Result<LogFormat, (usize, String)> {
        let mut pieces = Vec::new();
        for t in scan(text).map_err(|e| (e.offset, e.message))? {
            match t {
                Token::Lit(s) => pieces.push(LogPiece::Lit(s.into())),
                Token::Name(name, at) => match LogVar::named(name, protocol) {
                    Some(v) => pieces.push(LogPiece::Var(v)),
                    None => {
                        let (known, what) = match protocol {
                            Protocol::Http => (KNOWN_HTTP, "an http"),
                            Protocol::Tcp => (KNOWN_TCP, "a tcp"),
                        };
                        return Err((at, format!("unknown variable `${name}` for {what} listener; known: {known}")));
                    }
                },
            }
        }
        Ok(LogFormat::Text { pieces: pieces.into(), escape, text: text.into() })
    }

    /// The request headers it reads (`$http_NAME`), in order of first use.
    pub fn request_headers(&self) -> Vec<HeaderName> {
        self.vars(|v| if let LogVar::Http(h) = v { Some(h.clone()) } else { None })
    }

    /// The response headers it reads (`$sent_http_NAME`).
    pub fn response_headers(&self) -> Vec<HeaderName> {
        self.vars(|v| if let LogVar::SentHttp(h) = v { Some(h.clone()) } else { None })
    }

    fn vars(&self, pick: impl Fn(&LogVar) -> Option<HeaderName>) -> Vec<HeaderName> {
        let mut out: Vec<HeaderName> = Vec::new();
        if let LogFormat::Text { pieces, .. } = self {
            for p in pieces.iter() {
                if let Some(h) = match p {
                    LogPiece::Var(v) => pick(v),
                    LogPiece::Lit(_) => None,
                } {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
        }
        out
    }

    /// Reads the given variable anywhere in the format?
    pub fn uses(&self, v: &LogVar) -> bool {
        match self {
            LogFormat::Text { pieces, .. } => pieces.iter().any(|p| matches!(p, LogPiece::Var(x) if x == v)),
            LogFormat::Json => true,
        }
    }
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// A listener's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub format: LogFormat,
    pub to: LogTarget,
}

impl AccessLog {
    /// The default: `combined` to stdout.
    pub fn default_for(protocol: Protocol) -> AccessLog {
        let text = match protocol {
            Protocol::Http => COMBINED,
            Protocol::Tcp => COMBINED_TCP,
        };
        let format = LogFormat::text(text, Escape::Default, protocol).expect("the built-in formats compile");
        AccessLog { format, to: LogTarget::Stdout }
    }
}

/// `access_log:` → the log, or None for `to: off`.
pub(super) fn access_log(
    raw: Option<&Spanned<RawAccessLog>>,
    protocol: Protocol,
    errs: &mut Errs<'_>,
) -> Option<AccessLog> {
    let Some(raw) = raw else {
        return Some(AccessLog::default_for(protocol));
    };
    let to = match raw.to.as_ref().map(|t| (t, t.trim())) {
        None | Some((_, "stdout")) => LogTarget::Stdout,
        Some((_, "off")) => return None,
        Some((t, "")) => {
            errs.span(t.span(), "access_log.to is empty; expected stdout, off or a file path");
            LogTarget::Stdout
        }
        Some((t, _)) => LogTarget::File(relative_to(errs.file, t)),
    };
    let escape = match raw.escape.as_ref().map(|e| (e, e.trim())) {
        None | Some((_, "default")) => Escape::Default,
        Some((_, "json")) => Escape::Json,
        Some((_, "none")) => Escape::None,
        Some((e, other)) => {
            errs.span(e.span(), format!("access_log.escape `{other}`: expected default, json or none"));
            Escape::Default
        }
    };
    let format = match raw.format.as_ref().map(|f| (f, f.as_str())) {
        None | Some((_, "combined")) => AccessLog::default_for(protocol).format,
        Some((_, "json")) => LogFormat::Json,
        Some((f, text)) => match LogFormat::text(text, escape, protocol) {
            Ok(f) => f,
            Err((at, message)) => {
                errs.span(f.span(), format!("access_log.format: {message} (at character {})", at + 1));
                return None;
            }
        },
    };
    let custom = raw.format.as_ref().is_some_and(|f| !matches!(f.as_str(), "combined" | "json"));
    if let (Some(e), false) = (&raw.escape, custom) {
        errs.span(e.span(), "access_log.escape applies to a custom format only");
    }
    Some(AccessLog { format, to })
}

/// W3C trace context: what ferry does with `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceContext {
    /// Start a trace when a request has no (valid) `traceparent`.
    pub start: bool,
    /// The share of started traces marked sampled (0.0–1.0).
    pub sample: f64,
}

impl Default for TraceContext {
    /// Started, 10 % sampled: Spring Boot's own default probability, so a service that follows its
    /// parent's decision samples as much as it did without ferry in front.
    fn default() -> Self {
        TraceContext { start: true, sample: 0.1 }
    }
}

pub(super) fn trace_context(raw: Option<&Spanned<RawTraceContext>>, errs: &mut Errs<'_>) -> TraceContext {
    let mut t = TraceContext::default();
    let Some(raw) = raw else { return t };
    t.start = boolean(&raw.start, "trace_context.start", true, errs);
    if let Some(s) = &raw.sample {
        match s.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => t.sample = v,
            _ => errs.span(s.span(), format!("trace_context.sample `{}`: expected a number from 0 to 1", s.as_str())),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_compiles_to_nginx_pieces() {
        let f = AccessLog::default_for(Protocol::Http).format;
        let LogFormat::Text { pieces, .. } = &f else { panic!("text") };
        assert_eq!(pieces[0], LogPiece::Var(LogVar::RemoteAddr));
        assert_eq!(pieces[1], LogPiece::Lit(" - ".into()));
        assert_eq!(
            f.request_headers(),
            vec![HeaderName::from_static("referer"), HeaderName::from_static("user-agent")]
        );
        assert!(LogFormat::text(COMBINED_TCP, Escape::Default, Protocol::Tcp).is_ok());
    }

    #[test]
    fn unknown_and_wrong_protocol_variables_are_refused_at_their_offset() {
        let e = LogFormat::text("$remote_addr $bogus", Escape::Default, Protocol::Http).unwrap_err();
        assert_eq!(e.0, 13);
        assert!(e.1.contains("unknown variable `$bogus` for an http listener"), "{}", e.1);
        let e = LogFormat::text("$request_time", Escape::Default, Protocol::Tcp).unwrap_err();
        assert!(e.1.contains("for a tcp listener"), "{}", e.1);
        assert!(LogFormat::text("$session_time", Escape::Default, Protocol::Http).is_err());
        let f = LogFormat::text("$sent_http_content_type $http_x_a", Escape::Json, Protocol::Http).unwrap();
        assert_eq!(f.response_headers(), vec![HeaderName::from_static("content-type")]);
        assert_eq!(f.request_headers(), vec![HeaderName::from_static("x-a")]);
    }
}
