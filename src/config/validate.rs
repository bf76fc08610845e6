//! The document: top-level keys, the backends and listeners (each validated in its own file), and
//! the checks across them (unique names and binds, settings used on the wrong side, a static
//! address that is ferry itself).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use marked_yaml::Node;

use super::backend::backend;
use super::diag::Errs;
use super::fields::{duration_key, loops_back, parse_addr};
use super::listener::listener;
use super::raw::TOP_KEYS;
use super::{defaults, Config, Protocol};

pub(super) fn document(root: &Node, errs: &mut Errs<'_>) -> Option<Config> {
    let map = root.as_mapping()?;
    for (k, _) in map.iter() {
        if !TOP_KEYS.contains(&k.as_str()) {
            errs.span(k.span(), super::diag::unknown_key_message(k.as_str(), TOP_KEYS));
        }
    }
    let admin = match map.get_scalar("admin") {
        Some(s) => parse_addr(s.as_str(), s.span(), "admin", errs),
        None => defaults::ADMIN.parse().ok(),
    };
    let drain_delay = duration_key(map.get_scalar("drain_delay"), defaults::DRAIN_DELAY, errs);
    let shutdown_timeout = duration_key(map.get_scalar("shutdown_timeout"), defaults::SHUTDOWN_TIMEOUT, errs);
    for key in ["admin", "drain_delay", "shutdown_timeout"] {
        if let Some(n) = map.get_node(key) {
            if n.as_scalar().is_none() {
                errs.span(n.span(), format!("`{key}` must be a plain value"));
            }
        }
    }

    let mut backends = Vec::new();
    match map.get_node("backends") {
        // A config may have none: every route serves files or answers itself (a route naming one
        // that is not defined is an error of its own).
        None => {}
        Some(node) => match node.as_mapping() {
            None => errs.span(node.span(), "`backends` must be a mapping of name → backend"),
            Some(m) => {
                for (name, body) in m.iter() {
                    if let Some(b) = backend(name.as_str(), name.span(), body, errs) {
                        backends.push(b);
                    }
                }
            }
        },
    }
    let names: HashSet<&str> =
        map.get_mapping("backends").map(|m| m.keys().map(|k| k.as_str()).collect()).unwrap_or_default();

    let mut listeners = Vec::new();
    match map.get_node("listeners") {
        None => errs.span(root.span(), "missing `listeners`: at least one listener is needed"),
        Some(node) => match node.as_sequence() {
            None => errs.span(node.span(), "`listeners` must be a list"),
            Some(seq) if seq.is_empty() => errs.span(node.span(), "`listeners` is empty"),
            Some(seq) => {
                for l in seq.iter() {
                    if let Some(l) = listener(l, &names, errs) {
                        listeners.push(l);
                    }
                }
            }
        },
    }
    let mut seen_names = HashMap::new();
    let mut seen_binds = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if let Some(j) = seen_names.insert(l.name.clone(), i) {
            let _ = j;
            errs.span(root.span(), format!("listener name `{}` is used twice", l.name));
        }
        if l.bind.port() != 0 {
            if let Some(other) = seen_binds.insert(l.bind, l.name.clone()) {
                errs.span(root.span(), format!("listeners `{other}` and `{}` both bind {}", l.name, l.bind));
            }
        }
    }
    // Settings that make sense on one side only.
    for l in &listeners {
        let used: Vec<&str> = match l.protocol {
            Protocol::Tcp => l.backend.iter().chain(l.sni.iter().map(|r| &r.backend)).map(String::as_str).collect(),
            Protocol::Http => l
                .routes
                .iter()
                .flat_map(|r| {
                    let auth = r.actions.forward_auth.as_ref().map(|f| f.backend.as_str());
                    let errors = r.intercept_errors.as_ref().map(|i| i.backend.as_str());
                    r.backend
                        .as_deref()
                        .into_iter()
                        .chain(r.split.iter().map(|(b, _)| b.as_str()))
                        .chain(auth)
                        .chain(errors)
                })
                .collect(),
        };
        for b in backends.iter().filter(|b| used.contains(&b.name.as_str())) {
            let bad = match l.protocol {
                Protocol::Tcp if b.tls.is_some() => "sets `tls`, which tcp listeners do not originate (passthrough keeps the client's TLS)",
                Protocol::Http if b.send_proxy_protocol.is_some() => {
                    "sets `send_proxy_protocol`, which only tcp listeners send (pooled HTTP connections carry many clients)"
                }
                _ => continue,
            };
            let span = map.get_mapping("backends").and_then(|m| m.get_node(&b.name)).map(|n| *n.span());
            errs.span(
                &span.unwrap_or(*root.span()),
                format!("backend `{}` {bad}; it is used by listener `{}`", b.name, l.name),
            );
        }
    }
    // A static address that is one of ferry's own listeners would send requests back into ferry:
    // a loop that ends only when descriptors run out.
    let own = listeners.iter().map(|l| (l.bind, format!("listener `{}`", l.name)));
    let own: Vec<(SocketAddr, String)> = own.chain(admin.map(|a| (a, "the admin listener".to_string()))).collect();
    for b in &backends {
        for a in b.addresses.iter().map(|a| a.addr) {
            if let Some((_, what)) = own.iter().find(|(bind, _)| loops_back(*bind, a)) {
                let node = map.get_mapping("backends").and_then(|m| m.get_mapping(&b.name));
                let span = node.and_then(|m| m.get_node("addresses")).map(|n| *n.span()).unwrap_or(*root.span());
                errs.span(
                    &span,
                    format!("backend `{}`: {a} is {what} of this ferry; requests would loop back into it", b.name),
                );
            }
        }
    }
    Some(Config { admin: admin?, drain_delay: drain_delay?, shutdown_timeout: shutdown_timeout?, listeners, backends })
}
