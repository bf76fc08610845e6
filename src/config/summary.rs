//! `ferry check`'s summary of a valid config: listeners with their routes in order, backends, and
//! the backends no route uses. What `nginx -T` would show, in ferry's terms.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{Config, Protocol};

impl Config {
    /// A human-readable summary. `tls_names` gives, per listener name, the server names its
    /// certificates cover (read from the files, so it is the caller's to supply).
    pub fn summary(&self, file: &str, tls_names: &HashMap<String, Vec<String>>) -> String {
        let mut out = String::new();
        let addrs: usize = self.backends.iter().map(|b| b.addresses.len()).sum();
        let services = self.backends.iter().filter(|b| b.service.is_some()).count();
        let _ = writeln!(
            out,
            "{file}: ok: {} listener(s), {} route(s), {} backend(s) ({addrs} static address(es), {services} Kubernetes Service(s)); admin on {}",
            self.listeners.len(),
            self.route_count(),
            self.backends.len(),
            self.admin
        );
        for l in &self.listeners {
            let pp = if l.proxy_protocol { ", PROXY protocol" } else { "" };
            if l.protocol == Protocol::Tcp {
                let _ = writeln!(out, "  listener {} on {} (tcp{pp})", l.name, l.bind);
                for r in &l.sni {
                    let names: Vec<String> = r.server_names.iter().map(|h| h.to_string()).collect();
                    let _ = writeln!(out, "    sni {} -> {} (passthrough)", names.join(" "), r.backend);
                }
                if let Some(b) = &l.backend {
                    let _ = writeln!(out, "    -> {b}");
                }
                continue;
            }
            let tls = match tls_names.get(&l.name) {
                Some(names) => format!(", tls for {}", names.join(" ")),
                None => String::new(),
            };
            let _ = writeln!(out, "  listener {} on {} ({} routes{tls}{pp})", l.name, l.bind, l.routes.len());
            for r in &l.routes {
                let host = r.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
                let path = match (&r.path_prefix, &r.path_exact, &r.path_regex, &r.path_starts_with) {
                    (Some(p), _, _, _) => p.clone(),
                    (_, Some(p), _, _) => format!(" = {p}"),
                    (_, _, Some(re), Some(p)) => format!(" {p}* ~ {re}"),
                    (_, _, Some(re), None) => format!(" ~ {re}"),
                    (_, _, _, Some(p)) => format!(" {p}*"),
                    _ => "/".into(),
                };
                let methods: String = r.methods.iter().map(|m| format!(" {m}")).collect();
                let strip = match &r.actions.rewrite {
                    _ if r.strip_prefix => " (strip prefix)".to_string(),
                    Some(super::actions::Rewrite::Prefix(p)) => format!(" (prefix -> {p})"),
                    Some(super::actions::Rewrite::Regex { regex, to, .. }) => format!(" (rewrite {regex} -> {to})"),
                    None => String::new(),
                };
                let target = match (&r.backend, &r.actions.redirect, &r.actions.respond) {
                    (Some(b), _, _) => b.clone(),
                    _ if !r.split.is_empty() => {
                        let parts: Vec<String> = r.split.iter().map(|(b, w)| format!("{b} {w}")).collect();
                        format!("split {}", parts.join(" / "))
                    }
                    (_, Some(red), _) => format!("redirect {} {}", red.status.as_u16(), red.to),
                    (_, _, Some(resp)) => format!("respond {}", resp.status.as_u16()),
                    _ => match &r.files {
                        Some(s) => {
                            let kind = if s.alias { "alias" } else { "root" };
                            let fallback = s.fallback.as_ref().map(|f| format!(" (fallback {f})")).unwrap_or_default();
                            format!("static {kind} {}{fallback}", s.dir.display())
                        }
                        None => "?".into(),
                    },
                };
                let headers: String = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!(" [{k}: {}]", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                let compress = match r.compress.unwrap_or(l.compress) {
                    true => format!(" (compress ≥ {} B)", r.compress_min_bytes.unwrap_or(l.compress_min_bytes)),
                    false => String::new(),
                };
                let _ = writeln!(out, "    {}: {host}{path}{methods}{headers}{strip} -> {target}{compress}", r.name);
            }
        }
        for b in &self.backends {
            let used = self.listeners.iter().any(|l| {
                l.routes.iter().any(|r| {
                    r.backend.as_deref() == Some(&b.name)
                        || r.split.iter().any(|(s, _)| s == &b.name)
                        || r.actions.forward_auth.as_ref().is_some_and(|f| f.backend == b.name)
                        || r.intercept_errors.as_ref().is_some_and(|i| i.backend == b.name)
                }) || l.backend.as_deref() == Some(&b.name)
                    || l.sni.iter().any(|r| r.backend == b.name)
            });
            let note = if used { "" } else { "  (not used by any route)" };
            let source = match &b.service {
                Some(s) => format!("service {s}"),
                None => {
                    let (backup, down) = (
                        b.addresses.iter().filter(|a| a.backup).count(),
                        b.addresses.iter().filter(|a| a.down).count(),
                    );
                    let weighted = b.addresses.iter().any(|a| a.weight != 1);
                    let mut s = format!("{} address(es)", b.addresses.len() + b.names.len());
                    if !b.names.is_empty() {
                        s.push_str(&format!(", {} by host name", b.names.len()));
                    }
                    if weighted {
                        s.push_str(", weighted");
                    }
                    if backup > 0 {
                        s.push_str(&format!(", {backup} backup"));
                    }
                    if down > 0 {
                        s.push_str(&format!(", {down} down"));
                    }
                    s
                }
            };
            let tls = match &b.tls {
                Some(t) if t.insecure_skip_verify => ", tls NOT VERIFIED (insecure_skip_verify)",
                Some(_) => ", tls",
                None => "",
            };
            let _ = writeln!(out, "  backend {} [{}]: {source}{tls}{note}", b.name, b.balance.as_str());
        }
        out
    }
}
