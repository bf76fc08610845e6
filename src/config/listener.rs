//! One listener: http (routes) or tcp (one backend, or SNI passthrough), its TLS, PROXY protocol,
//! trusted proxies and limits; settings that belong to the other protocol are errors.

use std::collections::HashSet;

use marked_yaml::{Node, Spanned};

use super::diag::Errs;
use super::fields::{boolean, host_match, number, parse_addr, relative_to, spanned_duration};
use super::raw::RawListenerHead;
use super::route::route;
use super::{defaults, CertPair, ClientAuth, HostMatch, Limits, Listener, ListenerTls, Protocol, SniRoute};

pub(super) fn listener(node: &Node, backends: &HashSet<&str>, errs: &mut Errs<'_>) -> Option<Listener> {
    let Some(map) = node.as_mapping() else {
        errs.span(node.span(), "a listener must be a mapping with name, bind and routes");
        return None;
    };
    // The head skips `routes`; each route is deserialized on its own so every bad route is reported.
    let head: RawListenerHead = errs.de(node, "listener")?;
    let routes_node = map.get_node("routes");
    let name = head.name.trim().to_string();
    if name.is_empty() {
        errs.span(head.name.span(), "listener name is empty");
    }
    let bind = parse_addr(&head.bind, head.bind.span(), "bind", errs);
    let protocol = match head.protocol.as_ref().map(|p| p.as_str()) {
        None | Some("http") => Some(Protocol::Http),
        Some("tcp") => Some(Protocol::Tcp),
        Some(other) => {
            let p = head.protocol.as_ref().expect("matched Some");
            errs.span(p.span(), format!("protocol `{other}` is not supported; expected `http` or `tcp`"));
            None
        }
    };
    let idle_timeout = spanned_duration(&head.idle_timeout, defaults::TCP_IDLE_TIMEOUT, errs);
    let proxy_protocol = boolean(&head.proxy_protocol, "proxy_protocol", false, errs);
    let mut trusted_proxies = Vec::new();
    for c in head.trusted_proxies.iter().flatten() {
        let t = c.trim();
        // A bare address trusts just that address.
        match t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => {
                errs.span(c.span(), format!("trusted_proxies: `{t}` is not a CIDR (10.0.0.0/8) or an IP address"))
            }
        }
    }
    let at_least = |v: &Option<Spanned<String>>, key: &str, default: usize, min: usize, errs: &mut Errs<'_>| {
        let n = number(v, key, default, errs);
        if n < min {
            errs.span(
                v.as_ref().expect("below the minimum only when set").span(),
                format!("{key} must be at least {min}"),
            );
        }
        n
    };
    let limits = Limits {
        header_read_timeout: spanned_duration(&head.header_read_timeout, defaults::HEADER_READ_TIMEOUT, errs),
        max_header_bytes: at_least(&head.max_header_bytes, "max_header_bytes", defaults::MAX_HEADER_BYTES, 8192, errs),
        max_headers: at_least(&head.max_headers, "max_headers", defaults::MAX_HEADERS, 1, errs),
        max_uri_bytes: at_least(&head.max_uri_bytes, "max_uri_bytes", defaults::MAX_URI_BYTES, 16, errs),
        body_timeout: spanned_duration(&head.body_timeout, defaults::BODY_TIMEOUT, errs),
        min_body_rate: number(&head.min_body_rate, "min_body_rate", defaults::MIN_BODY_RATE, errs),
        max_connections: head
            .max_connections
            .as_ref()
            .map(|_| at_least(&head.max_connections, "max_connections", 0, 1, errs)),
    };
    if limits.header_read_timeout.is_zero() {
        errs.span(
            head.header_read_timeout.as_ref().expect("zero only when set").span(),
            "header_read_timeout must be greater than 0",
        );
    }
    if limits.body_timeout.is_zero() {
        errs.span(
            head.body_timeout.as_ref().expect("zero only when set").span(),
            "body_timeout must be greater than 0",
        );
    }
    let mut routes = Vec::new();
    let mut backend = None;
    let known_backend = |b: &Spanned<String>, errs: &mut Errs<'_>| {
        if backends.contains(b.as_str()) {
            Some(b.to_string())
        } else {
            errs.span(b.span(), format!("listener `{name}` names backend `{}`, which is not defined", b.as_str()));
            None
        }
    };
    if protocol == Some(Protocol::Tcp) {
        if let Some(rn) = routes_node {
            errs.span(rn.span(), format!("listener `{name}` is tcp: it takes one `backend`, not `routes`"));
        }
        if let Some(t) = &head.tls {
            errs.span(
                t.span(),
                format!(
                    "listener `{name}` is tcp: TLS is terminated on http listeners; \
                     a tcp listener passes TLS through by server name with `sni`"
                ),
            );
        }
        let http_only = [
            ("header_read_timeout", &head.header_read_timeout),
            ("max_header_bytes", &head.max_header_bytes),
            ("max_headers", &head.max_headers),
            ("max_uri_bytes", &head.max_uri_bytes),
            ("body_timeout", &head.body_timeout),
            ("min_body_rate", &head.min_body_rate),
            ("compress", &head.compress),
            ("compress_min_bytes", &head.compress_min_bytes),
            ("request_id", &head.request_id),
        ];
        for (key, v) in http_only {
            if let Some(v) = v {
                errs.span(v.span(), format!("listener `{name}` is tcp: `{key}` applies to http listeners only"));
            }
        }
        if let Some((k, _)) = head.error_pages.as_ref().and_then(|p| p.iter().next()) {
            errs.span(k.span(), format!("listener `{name}` is tcp: `error_pages` applies to http listeners only"));
        }
        if let Some(t) = &head.trace_context {
            errs.span(t.span(), format!("listener `{name}` is tcp: `trace_context` applies to http listeners only"));
        }
        if let Some(t) = head.trusted_proxies.as_ref().and_then(|t| t.first()) {
            errs.span(
                t.span(),
                format!("listener `{name}` is tcp: `trusted_proxies` (X-Forwarded-For) applies to http listeners only"),
            );
        }
        let mut sni = Vec::new();
        for r in head.sni.iter().flat_map(|s| s.iter()) {
            let names: Vec<HostMatch> = r.server_names.iter().filter_map(|h| host_match(h, errs)).collect();
            if r.server_names.is_empty() {
                errs.span(r.server_names.span(), "server_names is empty");
            }
            if let Some(b) = known_backend(&r.backend, errs) {
                sni.push(SniRoute { server_names: names, backend: b });
            }
        }
        match &head.backend {
            None if head.sni.is_none() => {
                errs.span(node.span(), format!("tcp listener `{name}` needs a `backend` (or `sni` routes)"))
            }
            None => {}
            Some(b) => backend = known_backend(b, errs),
        }
        if idle_timeout.is_zero() {
            let s = head.idle_timeout.as_ref().expect("zero only when set");
            errs.span(s.span(), "idle_timeout must be greater than 0");
        }
        return Some(Listener {
            name,
            bind: bind?,
            protocol: Protocol::Tcp,
            routes,
            backend,
            idle_timeout,
            tls: None,
            proxy_protocol,
            sni,
            trusted_proxies,
            limits,
            compress: false,
            compress_min_bytes: defaults::COMPRESS_MIN_BYTES,
            error_pages: Vec::new(),
            access_log: super::log::access_log(head.access_log.as_ref(), Protocol::Tcp, errs),
            request_id: false,
            trace_context: super::log::TraceContext::default(),
        });
    }
    for (key, v) in [("backend", &head.backend), ("idle_timeout", &head.idle_timeout)] {
        if let Some(v) = v {
            errs.span(v.span(), format!("`{key}` goes with `protocol: tcp`; http listeners route with `routes`"));
        }
    }
    if let Some(s) = &head.sni {
        errs.span(s.span(), "`sni` (TLS passthrough) goes with `protocol: tcp`");
    }
    let tls = head.tls.as_ref().map(|t| {
        if t.certificates.is_empty() {
            errs.span(t.certificates.span(), format!("listener `{name}`: tls.certificates is empty"));
        }
        let certificates = t
            .certificates
            .iter()
            .map(|c| CertPair { cert: relative_to(errs.file, &c.cert), key: relative_to(errs.file, &c.key) })
            .collect();
        let client = match (&t.client_ca, &t.client_certificate) {
            (None, None) => None,
            (None, Some(c)) => {
                errs.span(c.span(), "tls.client_certificate needs tls.client_ca (the CA client certificates chain to)");
                None
            }
            (Some(ca), mode) => {
                let required = match mode.as_ref().map(|m| m.trim()) {
                    None | Some("required") => true,
                    Some("optional") => false,
                    Some(m) => {
                        let at = mode.as_ref().expect("set").span();
                        errs.span(at, format!("tls.client_certificate: `{m}` is `required` or `optional`"));
                        true
                    }
                };
                Some(ClientAuth { ca: relative_to(errs.file, ca), required })
            }
        };
        ListenerTls { certificates, client }
    });
    match routes_node {
        None => errs.span(node.span(), format!("listener `{name}` has no `routes`")),
        Some(rn) => match rn.as_sequence() {
            None => errs.span(rn.span(), "`routes` must be a list"),
            Some(seq) if seq.is_empty() => {
                errs.span(rn.span(), format!("listener `{name}` has an empty `routes` list"))
            }
            Some(seq) => {
                for (i, r) in seq.iter().enumerate() {
                    if let Some(r) = route(&name, i, r, backends, errs) {
                        routes.push(r);
                    }
                }
            }
        },
    }
    Some(Listener {
        name,
        bind: bind?,
        protocol: protocol?,
        routes,
        backend,
        idle_timeout,
        tls,
        proxy_protocol,
        sni: Vec::new(),
        trusted_proxies,
        limits,
        compress: boolean(&head.compress, "compress", false, errs),
        compress_min_bytes: number(&head.compress_min_bytes, "compress_min_bytes", defaults::COMPRESS_MIN_BYTES, errs),
        error_pages: head.error_pages.as_ref().map(|p| super::site::error_pages(p, errs)).unwrap_or_default(),
        access_log: super::log::access_log(head.access_log.as_ref(), Protocol::Http, errs),
        request_id: boolean(&head.request_id, "request_id", true, errs),
        trace_context: super::log::trace_context(head.trace_context.as_ref(), errs),
    })
}
