//! One backend: static addresses or a Kubernetes Service (port by number or name), balancing,
//! timeouts, retries, passive health, upstream TLS and the PROXY header for tcp listeners.

use std::time::Duration;

use marked_yaml::{Node, Span, Spanned};

use super::diag::Errs;
use super::fields::{boolean, dns_label, number, parse_addr, relative_to, spanned_duration};
use super::raw::{RawAddress, RawBackend, RawUpstreamTls};
use super::{
    defaults, Backend, Balance, NamedAddress, PortRef, ProxyProtocol, RetryOn, ServiceRef, StaticAddress, UpstreamTls,
};

/// The most an address may weigh (nginx allows any; beyond this the balance is the same).
const MAX_WEIGHT: u32 = 1000;

/// An entry of `addresses`, by IP or by host name.
enum Entry {
    Addr(StaticAddress),
    Name(NamedAddress),
}

/// `IP:port`, or `host:port` with a DNS host name.
fn address(
    text: &str,
    span: &Span,
    what: &str,
    errs: &mut Errs<'_>,
) -> Option<Result<std::net::SocketAddr, (String, u16)>> {
    let t = text.trim();
    if let Ok(a) = t.parse::<std::net::SocketAddr>() {
        return Some(Ok(a));
    }
    let named = t.rsplit_once(':').and_then(|(host, port)| {
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        ok.then_some((host, port))
    });
    match named {
        Some(n) => Some(Err(n)),
        None => {
            parse_addr(t, span, what, errs);
            None
        }
    }
}

/// One entry of `addresses`: `IP:port` or `host:port`, or `{ address, weight, backup, down }`.
fn static_address(backend: &str, item: &Node, errs: &mut Errs<'_>) -> Option<Entry> {
    let what = format!("backend `{backend}` (IP:port or host:port)");
    if let Some(s) = item.as_scalar() {
        return Some(match address(s.as_str(), s.span(), &what, errs)? {
            Ok(addr) => Entry::Addr(StaticAddress { addr, weight: 1, backup: false, down: false }),
            Err((host, port)) => Entry::Name(NamedAddress { host, port, weight: 1, backup: false, down: false }),
        });
    }
    let raw: RawAddress = errs.de(item, &what)?;
    let target = address(&raw.address, raw.address.span(), &what, errs)?;
    let weight = number(&raw.weight, "weight", 1u32, errs);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        errs.span(
            raw.weight.as_ref().expect("set when out of range").span(),
            format!("weight must be 1 to {MAX_WEIGHT}"),
        );
        return None;
    }
    let backup = boolean(&raw.backup, "backup", false, errs);
    let down = boolean(&raw.down, "down", false, errs);
    Some(match target {
        Ok(addr) => Entry::Addr(StaticAddress { addr, weight, backup, down }),
        Err((host, port)) => Entry::Name(NamedAddress { host, port, weight, backup, down }),
    })
}

pub(super) fn backend(name: &str, name_span: &Span, node: &Node, errs: &mut Errs<'_>) -> Option<Backend> {
    let raw: RawBackend = errs.de(node, &format!("backend `{name}`"))?;
    let before = errs.list.len();
    let mut addresses: Vec<StaticAddress> = Vec::new();
    let mut names: Vec<NamedAddress> = Vec::new();
    let list = node.as_mapping().and_then(|m| m.get_node("addresses"));
    match (list, &raw.service) {
        (None, None) => errs.span(name_span, format!("backend `{name}` needs `addresses` or `service`")),
        (Some(a), Some(_)) => {
            errs.span(a.span(), format!("backend `{name}` has both `addresses` and `service`; use one"))
        }
        (None, Some(_)) => {}
        // An explicit empty list is allowed: the backend answers 503 until it has endpoints.
        (Some(list), None) => match list.as_sequence() {
            None => errs.span(list.span(), format!("backend `{name}`: `addresses` must be a list")),
            Some(seq) => {
                for item in seq.iter() {
                    match static_address(name, item, errs) {
                        Some(Entry::Addr(a)) => {
                            if addresses.iter().any(|b| b.addr == a.addr) {
                                errs.span(item.span(), format!("backend `{name}` lists {} twice", a.addr));
                            }
                            addresses.push(a);
                        }
                        Some(Entry::Name(n)) => {
                            if names.iter().any(|m| m.host == n.host && m.port == n.port) {
                                errs.span(item.span(), format!("backend `{name}` lists {}:{} twice", n.host, n.port));
                            }
                            names.push(n);
                        }
                        None => {}
                    }
                }
                let primaries = addresses.iter().filter(|a| !a.down && !a.backup).count()
                    + names.iter().filter(|n| !n.down && !n.backup).count();
                if (!addresses.is_empty() || !names.is_empty()) && primaries == 0 {
                    errs.span(list.span(), format!("backend `{name}` has no primary address that is not down"));
                }
            }
        },
    }
    let service = raw.service.as_ref().and_then(|svc| service_ref(name, name_span, svc, &raw, errs));
    if raw.service.is_none() {
        for (key, v) in [("port", &raw.port), ("include_not_ready", &raw.include_not_ready), ("pod", &raw.pod)] {
            if let Some(v) = v {
                errs.span(v.span(), format!("backend `{name}`: `{key}` goes with `service`"));
            }
        }
    }
    let balance = match &raw.balance {
        None => Balance::RoundRobin,
        Some(b) => match b.as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_request" | "least_connections" => Balance::LeastRequest,
            "client_ip" => Balance::ClientIp,
            other => {
                errs.span(
                    b.span(),
                    format!("balance `{other}` is unknown; expected round_robin, least_request or client_ip"),
                );
                Balance::RoundRobin
            }
        },
    };
    let connect_timeout = spanned_duration(&raw.connect_timeout, defaults::CONNECT_TIMEOUT, errs);
    if connect_timeout.is_zero() {
        let s = raw.connect_timeout.as_ref().expect("zero only when set");
        errs.span(s.span(), "connect_timeout must be greater than 0");
    }
    let request_timeout = spanned_duration(&raw.request_timeout, defaults::REQUEST_TIMEOUT, errs);
    let retries = number(&raw.retries, "retries", defaults::RETRIES, errs);
    if retries > defaults::MAX_RETRIES {
        let r = raw.retries.as_ref().expect("set");
        errs.span(r.span(), format!("retries {retries} is more than the maximum of {}", defaults::MAX_RETRIES));
    }
    let eject_after = number(&raw.eject_after, "eject_after", defaults::EJECT_AFTER, errs);
    if eject_after == 0 {
        let r = raw.eject_after.as_ref().expect("set");
        errs.span(r.span(), "eject_after must be at least 1");
    }
    let b = Backend {
        name: name.to_string(),
        addresses,
        service,
        hold_for_endpoints: spanned_duration(&raw.hold_for_endpoints, Duration::ZERO, errs),
        balance,
        connect_timeout,
        request_timeout: Some(request_timeout).filter(|d| !d.is_zero()),
        read_timeout: Some(spanned_duration(&raw.read_timeout, defaults::READ_TIMEOUT, errs)).filter(|d| !d.is_zero()),
        send_timeout: Some(spanned_duration(&raw.send_timeout, defaults::SEND_TIMEOUT, errs)).filter(|d| !d.is_zero()),
        retry_on: retry_on(name, &raw.retry_on, errs),
        names,
        dns_refresh: {
            let d = spanned_duration(&raw.dns_refresh, defaults::DNS_REFRESH, errs);
            if d < std::time::Duration::from_secs(1) {
                let v = raw.dns_refresh.as_ref().expect("below the default only when set");
                errs.span(v.span(), "dns_refresh must be at least 1s");
            }
            d
        },
        rewrite_location: boolean(&raw.rewrite_location, "rewrite_location", true, errs),
        retries,
        idle_timeout: spanned_duration(&raw.idle_timeout, defaults::IDLE_TIMEOUT, errs),
        max_idle_per_endpoint: number(
            &raw.max_idle_per_endpoint,
            "max_idle_per_endpoint",
            defaults::MAX_IDLE_PER_ENDPOINT,
            errs,
        ),
        eject_after,
        eject_for: spanned_duration(&raw.eject_for, defaults::EJECT_FOR, errs),
        preserve_host: boolean(&raw.preserve_host, "preserve_host", true, errs),
        tls: raw.tls.as_ref().and_then(|t| upstream_tls(name, t, errs)),
        affinity_cookie: raw.affinity_cookie.as_ref().and_then(|c| affinity_cookie(name, c, errs)),
        send_proxy_protocol: match raw.send_proxy_protocol.as_ref().map(|v| (v, v.trim())) {
            None => None,
            Some((_, "v1")) => Some(ProxyProtocol::V1),
            Some((_, "v2")) => Some(ProxyProtocol::V2),
            Some((v, other)) => {
                errs.span(v.span(), format!("send_proxy_protocol `{other}` is not v1 or v2"));
                None
            }
        },
    };
    (errs.list.len() == before).then_some(b)
}

/// `[connect, reset, timeout, non_idempotent, 502, 503, 504]`.
fn retry_on(backend: &str, v: &Option<Spanned<Vec<Spanned<String>>>>, errs: &mut Errs<'_>) -> RetryOn {
    let Some(list) = v else { return RetryOn::default() };
    let mut r = RetryOn { connect: false, reset: false, timeout: false, statuses: Vec::new(), non_idempotent: false };
    for item in list.iter() {
        match item.trim() {
            "connect" => r.connect = true,
            "reset" => r.reset = true,
            "timeout" => r.timeout = true,
            "non_idempotent" => r.non_idempotent = true,
            s @ ("500" | "502" | "503" | "504" | "429") => r.statuses.push(s.parse().expect("matched digits")),
            other => errs.span(
                item.span(),
                format!(
                    "backend `{backend}`: retry_on `{other}` is not connect, reset, timeout, non_idempotent, 429, 500, 502, 503 or 504"
                ),
            ),
        }
    }
    r
}

pub(super) fn upstream_tls(backend: &str, t: &Spanned<RawUpstreamTls>, errs: &mut Errs<'_>) -> Option<UpstreamTls> {
    let server_name = t.server_name.as_ref().map(|n| n.trim().to_string());
    if let (Some(n), Some(raw)) = (&server_name, &t.server_name) {
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            errs.span(
                raw.span(),
                format!("backend `{backend}`: tls.server_name `{n}` is not a DNS name or IP address"),
            );
            return None;
        }
    }
    let insecure = boolean(&t.insecure_skip_verify, "tls.insecure_skip_verify", false, errs);
    let ca = match (&t.ca, insecure) {
        (Some(ca), false) => Some(relative_to(errs.file, ca)),
        (None, true) => None,
        (Some(ca), true) => {
            errs.span(
                ca.span(),
                format!("backend `{backend}`: tls.ca and tls.insecure_skip_verify: true exclude each other"),
            );
            return None;
        }
        (None, false) => {
            errs.span(
                t.span(),
                format!(
                    "backend `{backend}`: tls needs `ca` (the CA bundle the upstream's certificate must chain to), or \
                     `insecure_skip_verify: true` to accept any certificate"
                ),
            );
            return None;
        }
    };
    Some(UpstreamTls { ca, server_name, insecure_skip_verify: insecure })
}

pub(super) fn service_ref(
    backend: &str,
    name_span: &Span,
    svc: &Spanned<String>,
    raw: &RawBackend,
    errs: &mut Errs<'_>,
) -> Option<ServiceRef> {
    let text = svc.trim();
    let (name, namespace) = match text.split_once('.') {
        Some((n, ns)) => (n, Some(ns)),
        None => (text, None),
    };
    let mut ok = true;
    if !dns_label(name) || namespace.is_some_and(|ns| !dns_label(ns)) {
        errs.span(
            svc.span(),
            format!("backend `{backend}`: service `{text}` is not `name` or `name.namespace` (lower-case DNS labels)"),
        );
        ok = false;
    }
    let port = match &raw.port {
        None => {
            errs.span(name_span, format!("backend `{backend}` names a service but no `port` (number or name)"));
            None
        }
        Some(p) => {
            let t = p.trim();
            match t.parse::<u16>() {
                Ok(0) => {
                    errs.span(p.span(), "port 0 is not a Service port");
                    None
                }
                Ok(n) => Some(PortRef::Number(n)),
                Err(_) if dns_label(t) && t.len() <= 15 => Some(PortRef::Name(t.to_string())),
                Err(_) => {
                    errs.span(p.span(), format!("port `{t}` is neither a port number nor a port name"));
                    None
                }
            }
        }
    };
    let include_not_ready = boolean(&raw.include_not_ready, "include_not_ready", false, errs);
    let pod = raw.pod.as_ref().map(|p| p.trim().to_string());
    if let (Some(p), Some(raw_pod)) = (&pod, &raw.pod) {
        if p.is_empty() || p.len() > 253 {
            errs.span(raw_pod.span(), "pod must be a pod name");
        }
    }
    Some(ServiceRef {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        port: port?,
        include_not_ready,
        pod,
    })
    .filter(|_| ok)
}

/// `affinity_cookie: { name, path, max_age, expires, secure, same_site }`.
fn affinity_cookie(
    backend: &str,
    raw: &marked_yaml::Spanned<super::raw::RawAffinityCookie>,
    errs: &mut Errs<'_>,
) -> Option<super::AffinityCookie> {
    let name = raw.name.as_ref().map_or("FERRY_AFFINITY".to_string(), |n| n.to_string());
    // RFC 6265 cookie-name: a token.
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !token(&name) {
        let at = raw.name.as_ref().map_or(raw.span(), |n| n.span());
        errs.span(at, format!("backend `{backend}`: affinity_cookie name `{name}` is not a cookie name"));
        return None;
    }
    let path = raw.path.as_ref().map_or("/".to_string(), |p| p.to_string());
    if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        errs.span(
            raw.path.as_ref().expect("set when not /").span(),
            format!("affinity_cookie path `{path}` is not a path"),
        );
        return None;
    }
    let dur = |v: &Option<marked_yaml::Spanned<String>>, errs: &mut Errs<'_>| {
        v.as_ref().map(|_| spanned_duration(v, Duration::ZERO, errs)).filter(|d| !d.is_zero())
    };
    let same_site = match raw.same_site.as_ref().map(|s| (s, s.trim().to_ascii_lowercase())) {
        None => None,
        Some((_, v)) if v == "strict" => Some("Strict".to_string()),
        Some((_, v)) if v == "lax" => Some("Lax".to_string()),
        Some((_, v)) if v == "none" => Some("None".to_string()),
        Some((s, _)) => {
            errs.span(s.span(), format!("affinity_cookie same_site `{}` is not Strict, Lax or None", s.as_str()));
            None
        }
    };
    Some(super::AffinityCookie {
        name,
        path,
        max_age: dur(&raw.max_age, errs),
        expires: dur(&raw.expires, errs),
        secure: boolean(&raw.secure, "secure", false, errs),
        same_site,
    })
}
