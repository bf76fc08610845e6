//! Values with nginx variables (`"https://$host$request_uri"`, `$http_x_user`, `${uri}x`, `$1`),
//! compiled once when the config is read: a template is a list of literal pieces and variables, so
//! nothing is parsed per request. Rendering asks a [`Vars`] (the request, in `proxy::actions`) for
//! each variable.
//!
//! Names are nginx's: `$host`, `$http_host`, `$remote_addr`, `$remote_port`, `$scheme`,
//! `$request_uri`, `$uri`, `$args` (`$query_string`), `$is_args`, `$arg_NAME`, `$cookie_NAME`,
//! `$server_port`, `$request_method`, `$proxy_add_x_forwarded_for`, `$http_NAME` (any request
//! header, `_` for `-`), `$request_id`, `$hostname`, `$remote_user`, `$https`, `$server_protocol`,
//! `$request`, `$content_type`, `$content_length`, `$msec`, `$time_local`, `$time_iso8601`,
//! `$date_gmt`, `$date_local`, and `$1`…`$9` (regex captures). As in nginx
//! there is no escape for a literal `$` followed by a name character.

use std::fmt;

use http::HeaderName;

/// One variable a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// The request's host, lower case, without port (nginx `$host`).
    Host,
    /// The Host header as sent (`$http_host`).
    HttpHost,
    /// The client address (the real client when the peer is a trusted proxy).
    RemoteAddr,
    RemotePort,
    /// `http` or `https`.
    Scheme,
    /// The request target as the client sent it, with its query.
    RequestUri,
    /// The path in normal form (after a rewrite: the rewritten path).
    Uri,
    /// The query string, without `?`.
    Args,
    /// `?` if there is a query string, else nothing.
    IsArgs,
    /// One query parameter (`$arg_page`).
    Arg(String),
    /// One cookie (`$cookie_SESSION`).
    Cookie(String),
    /// The port the listener accepted the connection on.
    ServerPort,
    RequestMethod,
    /// `X-Forwarded-For` with the client appended (as ferry would send it from a trusted peer).
    ProxyAddXForwardedFor,
    /// A request header (`$http_x_real_ip` → `x-real-ip`).
    Header(HeaderName),
    RequestId,
    /// This machine's name (in Kubernetes: the pod's name).
    Hostname,
    /// `$1`…`$9`: a capture of the route's `path_regex` or of the rewrite regex.
    Capture(u8),
    /// The user name of `Authorization: Basic` (nginx `$remote_user`).
    RemoteUser,
    /// `on` over TLS, else empty.
    Https,
    /// `HTTP/1.1`, `HTTP/2.0`.
    ServerProtocol,
    /// The request line: method, target as sent, protocol.
    Request,
    /// The request's Content-Type and Content-Length headers.
    ContentType,
    ContentLength,
    /// Now: seconds with milliseconds, the access log's local and ISO 8601 forms, and nginx's
    /// date forms (`Saturday, 05-Dec-2026 10:00:00 GMT`).
    Msec,
    TimeLocal,
    TimeIso8601,
    DateGmt,
    DateLocal,
    /// The TLS client certificate (a listener with `tls.client_ca`): `SUCCESS` or `NONE` (empty
    /// over plain HTTP); its subject and issuer (RFC 2253), serial, SHA-1 fingerprint, and the
    /// PEM URL-escaped.
    SslClientVerify,
    SslClientSDn,
    SslClientIDn,
    SslClientSerial,
    SslClientFingerprint,
    SslClientEscapedCert,
    /// Known once the upstream answered (empty before, and in request headers): the endpoint's
    /// address, its status, and the seconds since the request's head arrived (`0.012`).
    UpstreamAddr,
    UpstreamStatus,
    RequestTime,
}

impl Var {
    /// Known only once the upstream answered.
    pub fn is_late(&self) -> bool {
        matches!(self, Var::UpstreamAddr | Var::UpstreamStatus | Var::RequestTime)
    }
}

impl Var {
    /// The variable named `name` (without `$`), if ferry knows it.
    fn named(name: &str) -> Option<Var> {
        Some(match name {
            "host" => Var::Host,
            "http_host" => Var::HttpHost,
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "server_port" => Var::ServerPort,
            "request_method" => Var::RequestMethod,
            "proxy_add_x_forwarded_for" => Var::ProxyAddXForwardedFor,
            "request_id" => Var::RequestId,
            "hostname" => Var::Hostname,
            "remote_user" => Var::RemoteUser,
            "https" => Var::Https,
            "server_protocol" => Var::ServerProtocol,
            "request" => Var::Request,
            "content_type" => Var::ContentType,
            "content_length" => Var::ContentLength,
            "msec" => Var::Msec,
            "time_local" => Var::TimeLocal,
            "time_iso8601" => Var::TimeIso8601,
            "date_gmt" => Var::DateGmt,
            "date_local" => Var::DateLocal,
            "upstream_addr" => Var::UpstreamAddr,
            "upstream_status" => Var::UpstreamStatus,
            "request_time" => Var::RequestTime,
            "ssl_client_verify" => Var::SslClientVerify,
            "ssl_client_s_dn" => Var::SslClientSDn,
            "ssl_client_i_dn" => Var::SslClientIDn,
            "ssl_client_serial" => Var::SslClientSerial,
            "ssl_client_fingerprint" => Var::SslClientFingerprint,
            "ssl_client_escaped_cert" => Var::SslClientEscapedCert,
            _ => {
                if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    return HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok().map(Var::Header);
                }
                if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    return Some(Var::Arg(a.to_string()));
                }
                if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    return Some(Var::Cookie(c.to_string()));
                }
                if name.len() == 1 && name.as_bytes()[0].is_ascii_digit() {
                    return Some(Var::Capture(name.as_bytes()[0] - b'0'));
                }
                return None;
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<str>),
    Var(Var),
}

/// A value with variables, compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Box<[Piece]>,
    /// As written, for errors and `/routes`.
    text: Box<str>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a template is wrong: the byte offset of the `$` in the text, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// What a request tells a template.
pub trait Vars {
    /// Appends the value of `v` to `out` (nothing if the request has none, as nginx renders an
    /// unset variable as empty).
    fn var(&self, v: &Var, out: &mut String);
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A piece of text with variables, as written: literal runs and variable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    Lit(&'a str),
    /// A variable's name without `$` or braces, and the byte offset of its `$`.
    Name(&'a str, usize),
}

/// Splits `text` into literal runs and variable names, as nginx reads `$name`, `${name}` and `$1`.
/// Shared by header templates and access-log formats.
pub fn scan(text: &str) -> Result<Vec<Token<'_>>, TemplateError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = text[i..].find('$').map_or(b.len(), |n| i + n);
            out.push(Token::Lit(&text[i..next]));
            i = next;
            continue;
        }
        let at = i;
        let (name, end) = if b.get(i + 1) == Some(&b'{') {
            let close = text[i + 2..]
                .find('}')
                .map(|n| i + 2 + n)
                .ok_or_else(|| TemplateError { offset: at, message: "`${` without a closing `}`".into() })?;
            (&text[i + 2..close], close + 1)
        } else if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            // nginx: `$1x` is capture 1 followed by `x`.
            (&text[i + 1..i + 2], i + 2)
        } else {
            let len = b[i + 1..].iter().take_while(|&&c| name_char(c)).count();
            (&text[i + 1..i + 1 + len], i + 1 + len)
        };
        if name.is_empty() || !name.bytes().all(name_char) {
            return Err(TemplateError {
                offset: at,
                message: "`$` must start a variable name such as $host (nginx has no escape for a literal `$`)".into(),
            });
        }
        out.push(Token::Name(name, at));
        i = end;
    }
    Ok(out)
}

impl Template {
    /// Compiles `text`. Fails at the first unknown or malformed variable.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        for t in scan(text)? {
            let (name, at) = match t {
                Token::Lit(s) => {
                    lit.push_str(s);
                    continue;
                }
                Token::Name(name, at) => (name, at),
            };
            let var = Var::named(name).ok_or_else(|| TemplateError {
                offset: at,
                message: format!(
                    "unknown variable `${name}`; known: $host, $http_host, $remote_addr, $remote_port, $scheme, \
                     $request_uri, $uri, $args, $is_args, $arg_NAME, $cookie_NAME, $server_port, $request_method, \
                     $proxy_add_x_forwarded_for, $http_NAME, $request_id, $hostname, $remote_user, $https, \
                     $server_protocol, $request, $content_type, $content_length, $msec, $time_local, $time_iso8601, \
                     $date_gmt, $date_local, $ssl_client_verify, $ssl_client_s_dn, $ssl_client_i_dn, \
                     $ssl_client_serial, $ssl_client_fingerprint, $ssl_client_escaped_cert, $upstream_addr, \
                     $upstream_status, $request_time, $1..$9"
                ),
            })?;
            if var == Var::Capture(0) {
                return Err(TemplateError { offset: at, message: "captures are $1..$9".into() });
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit).into()));
            }
            pieces.push(Piece::Var(var));
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit.into()));
        }
        Ok(Template { pieces: pieces.into(), text: text.into() })
    }

    /// The text, if it has no variables.
    pub fn literal(&self) -> Option<&str> {
        match &*self.pieces {
            [] => Some(""),
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The highest capture it uses (0: none).
    pub fn max_capture(&self) -> u8 {
        self.vars().filter_map(|v| if let Var::Capture(n) = v { Some(*n) } else { None }).max().unwrap_or(0)
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| if let Piece::Var(v) = p { Some(v) } else { None })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Appends the rendered value to `out`.
    pub fn render_into(&self, vars: &dyn Vars, out: &mut String) {
        for p in self.pieces.iter() {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => vars.var(v, out),
            }
        }
    }

    /// Uses a variable known only once the upstream answered ([`Var::is_late`]).
    pub fn is_late(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Var(v) if v.is_late()))
    }

    /// The template with every variable but the late ones rendered now (the request's part of a
    /// response header), to be rendered whole when the upstream has answered.
    pub fn bind(&self, vars: &dyn Vars) -> Template {
        let pieces = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Var(v) if !v.is_late() => {
                    let mut s = String::new();
                    vars.var(v, &mut s);
                    Piece::Lit(s.into())
                }
                p => p.clone(),
            })
            .collect();
        Template { pieces, text: self.text.clone() }
    }

    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        self.render_into(vars, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Vars for Fixed {
        fn var(&self, v: &Var, out: &mut String) {
            out.push_str(&match v {
                Var::Host => "a.example".to_string(),
                Var::RequestUri => "/x?y=1".to_string(),
                Var::Header(h) => format!("<{h}>"),
                Var::Capture(n) => format!("[{n}]"),
                Var::Arg(a) => format!("arg:{a}"),
                other => format!("{other:?}"),
            })
        }
    }

    #[test]
    fn renders_literals_and_variables() {
        let t = Template::parse("https://$host$request_uri").unwrap();
        assert_eq!(t.render(&Fixed), "https://a.example/x?y=1");
        assert_eq!(Template::parse("${host}x-$http_x_real_ip").unwrap().render(&Fixed), "a.examplex-<x-real-ip>");
        assert_eq!(Template::parse("/$1x/$2").unwrap().render(&Fixed), "/[1]x/[2]");
        assert_eq!(Template::parse("$arg_page.").unwrap().render(&Fixed), "arg:page.");
        assert_eq!(Template::parse("plain").unwrap().literal(), Some("plain"));
        assert_eq!(Template::parse("").unwrap().literal(), Some(""));
        assert_eq!(Template::parse("/$2/$1").unwrap().max_capture(), 2);
    }

    #[test]
    fn refuses_what_nginx_refuses_with_the_offset() {
        let e = |t: &str| Template::parse(t).unwrap_err();
        assert_eq!(e("x $hots y").offset, 2);
        assert!(e("x $hots y").message.contains("unknown variable `$hots`"));
        assert_eq!(e("${host").offset, 0);
        assert_eq!(e("a$").offset, 1);
        assert_eq!(e("a$-b").offset, 1);
        assert!(e("$0").message.contains("$1..$9"));
        assert!(e("$http_").message.contains("unknown variable"));
    }
}
