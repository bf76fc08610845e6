//! `proxy_pass` and `upstream`: the backend a location forwards to (an upstream group, a
//! Service with `--namespace`, an address), the headers nginx sends it, and `stream` servers.

use super::super::locations::Kind;
use super::model::{list, map, pairs, Fields, Listener, V};
use super::rewrite::respond;
use super::server::listen_bind;
use super::{arg, time, Inherited, Level, Redirect, Translator};
use crate::import::parse::{Directive, Pos};

impl Translator<'_> {
    pub(super) fn proxy_pass(
        &mut self,
        x: &Directive,
        kind: &Kind,
        loc: &str,
        inh: &Inherited,
        rewrite: Option<V>,
    ) -> Fields {
        // With variables, nginx sends the URI part as it is, replacing the request's (its query
        // too); the target itself must come out of `set`s for ferry to name it.
        let variables = arg(x, 0).contains('$');
        let url = &super::variables::expand(arg(x, 0), &inh.sets);
        let (scheme, rest) = match url.split_once("://") {
            Some(("http", r)) => ("http", r),
            Some(("https", r)) => ("https", r),
            _ => {
                let message =
                    format!("proxy_pass {}: not an http(s) URL ferry can name; the location answers 502", arg(x, 0));
                self.diag(&x.at, Level::Warning, message);
                return vec![respond(502)];
            }
        };
        let (hostport, uri) = match rest.find(['/', '$']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if hostport.contains('$') || hostport.is_empty() {
            let message = format!(
                "proxy_pass {}: its target is a variable no `set` gives a value; the location answers 502",
                arg(x, 0)
            );
            self.diag(&x.at, Level::Warning, message);
            return vec![respond(502)];
        }
        if let (true, Some(uri), None) = (variables, uri, &rewrite) {
            let to = if uri.contains('?') { uri.to_string() } else { format!("{uri}?") };
            // `$1`… are the regex location's captures: its regex is the rewrite's.
            let regex = match kind {
                Kind::Regex(_) => loc.to_string(),
                _ => "^.*$".to_string(),
            };
            let mut fields: Fields = vec![("rewrite", map([("regex", regex.into()), ("to", to.into())]))];
            fields.extend(self.proxy_target(x, hostport, scheme, inh));
            fields.extend(self.redirects(inh, None));
            return fields;
        }
        let mut fields: Fields = Vec::new();
        let (backend, proxy_host) = self.backend_for(x, hostport, scheme, inh);
        if let Some(r) = rewrite {
            // nginx sends the rewritten path as it is; the URI part counts only where the
            // rewrite's regex does not match.
            if uri.is_some_and(|u| u != "/") {
                let message = "proxy_pass with a URI after `rewrite … break`: nginx replaces the prefix \
                               only for paths the rewrite does not match; not carried over";
                self.diag(&x.at, Level::Warning, message);
            }
            fields.push(("rewrite", r));
        } else if let Some(uri) = uri {
            match kind {
                Kind::Regex(_) => self.diag(
                    &x.at,
                    Level::Warning,
                    "proxy_pass with a URI in a regex location: nginx refuses it; the URI is dropped",
                ),
                Kind::Exact => fields.push(("rewrite", map([("regex", "^.*$".into()), ("to", uri.into())]))),
                Kind::Prefix { .. } => fields.push((
                    "rewrite",
                    map([("regex", format!("^{}(.*)$", regex::escape(loc)).into()), ("to", format!("{uri}$1").into())]),
                )),
            }
        }
        fields.extend(self.headers_to(&x.at, proxy_host, inh));
        fields.push(("backend", backend.into()));
        // nginx's default compares the proxy_pass URL as written: with variables, nothing matches.
        let default = match uri {
            Some(_) => (arg(x, 0).to_string(), loc.to_string()),
            None => (format!("{}/", arg(x, 0)), "/".to_string()),
        };
        fields.extend(self.redirects(inh, (!variables).then_some(default)));
        fields
    }

    /// `proxy_redirect` as the route's `rewrite_location`: nginx rewrites only by its rules — by
    /// default the proxy_pass URL to the location (`default`: FROM, TO).
    fn redirects(&mut self, inh: &Inherited, default: Option<(String, String)>) -> Option<(&'static str, V)> {
        let list = inh.proxy_redirect.clone().unwrap_or_else(|| vec![Redirect::Default]);
        // nginx's header filter then writes a Location that starts with `/` as an absolute URL:
        // the same for a client, unless `port_in_redirect off` drops the port.
        let portless = inh.port_in_redirect == Some(false) && inh.absolute_redirect != Some(false);
        let absolute = |to: String| if portless && to.starts_with('/') { super::absolute(&to, inh) } else { to };
        let last = portless.then(|| map([("from", "/".into()), ("to", absolute("/".into()).into())]));
        if list.iter().any(|r| matches!(r, Redirect::Off)) {
            return Some(("rewrite_location", last.map_or(false.into(), |l| V::List(vec![l]))));
        }
        let mut rules = Vec::new();
        for r in list {
            let mut at = None;
            let (from, to) = match r {
                Redirect::Off => continue,
                Redirect::Default => match &default {
                    Some(d) => d.clone(),
                    None => continue,
                },
                Redirect::Rule(from, to, pos) => {
                    at = Some(pos);
                    (super::variables::expand(&from, &inh.sets), super::variables::expand(&to, &inh.sets))
                }
                Redirect::Unsupported(at) => {
                    self.diag(&at, Level::Warning, "proxy_redirect with a regex is not carried over");
                    continue;
                }
            };
            let renders = |t: &str| crate::config::template::Template::parse(t).is_ok();
            if !renders(&from) || !renders(&to) {
                if let Some(at) = at {
                    let message = format!("proxy_redirect {from} {to}: uses a variable ferry lacks; left out");
                    self.diag(&at, Level::Warning, message);
                }
                continue;
            }
            rules.push(map([("from", from.into()), ("to", absolute(to).into())]));
        }
        rules.extend(last);
        Some(("rewrite_location", if rules.is_empty() { false.into() } else { V::List(rules) }))
    }

    /// forward_auth for an auth_request subrequest to `uri` served by this proxy_pass (in a
    /// location `kind`/`loc`): its backend, the target the auth service gets, the headers.
    pub(super) fn auth_target(
        &mut self,
        x: &Directive,
        kind: &Kind,
        loc: &str,
        uri: &str,
        inh: &Inherited,
    ) -> Option<V> {
        let variables = arg(x, 0).contains('$');
        let url = super::variables::expand(arg(x, 0), &inh.sets);
        let (scheme, rest) = match url.split_once("://") {
            Some((s @ ("http" | "https"), r)) => (s, r),
            _ => return None,
        };
        let (hostport, part) = match rest.find(['/', '$']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if hostport.contains('$') || hostport.is_empty() {
            return None;
        }
        let path = match (part, kind) {
            (None, _) => uri.to_string(),
            (Some(p), _) if variables => p.to_string(),
            (Some(p), Kind::Prefix { .. }) => format!("{p}{}", uri.strip_prefix(loc).unwrap_or("")),
            (Some(p), _) => p.to_string(),
        };
        let (backend, proxy_host) = self.backend_for(x, hostport, scheme, inh);
        let mut headers = vec![("Host".to_string(), V::from(proxy_host))];
        for (k, v, at) in inh.proxy_set_header.iter().flatten() {
            if ["Connection", "Upgrade", "Content-Length"].iter().any(|h| k.eq_ignore_ascii_case(h)) {
                continue; // the auth request has no body and no upgrade
            }
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
            if let Some(v) = self.value(at, "proxy_set_header", k, v, &inh.sets) {
                headers.push((k.clone(), v.into()));
            }
        }
        Some(V::Map(vec![
            ("backend".into(), backend.into()),
            ("path".into(), path.into()),
            ("headers".into(), V::Map(headers)),
        ]))
    }

    /// The headers and backend of a proxy_pass to `hostport` (no URI handling).
    fn proxy_target(&mut self, x: &Directive, hostport: &str, scheme: &str, inh: &Inherited) -> Fields {
        let (backend, proxy_host) = self.backend_for(x, hostport, scheme, inh);
        let mut fields = self.headers_to(&x.at, proxy_host, inh);
        fields.push(("backend", backend.into()));
        fields
    }

    /// What nginx sends the upstream: Host: $proxy_host, no X-Forwarded-* unless told to, the
    /// client's own forwarding headers as they came.
    fn headers_to(&mut self, at: &Pos, proxy_host: String, inh: &Inherited) -> Fields {
        let mut fields: Fields = Vec::new();
        let mut set: Vec<(String, String)> = vec![("Host".into(), proxy_host)];
        let mut remove: Vec<String> = Vec::new();
        for (k, v, at) in inh.proxy_set_header.iter().flatten() {
            if k.eq_ignore_ascii_case("Connection") || k.eq_ignore_ascii_case("Upgrade") {
                continue; // ferry handles upgrades and keep-alive itself
            }
            if inh.auth_request.is_some() && inh.auth_header(v).is_some() {
                continue; // forward_auth's copy_to_request sets it
            }
            set.retain(|(s, _)| !s.eq_ignore_ascii_case(k));
            remove.retain(|s| !s.eq_ignore_ascii_case(k));
            // A value ferry cannot render: the header is not sent at all (never the client's own).
            match self.value(at, "proxy_set_header", k, v, &inh.sets) {
                // nginx sends no header whose value is empty.
                Some(v) if v.is_empty() => remove.push(k.clone()),
                Some(v) => set.push((k.clone(), v)),
                None => remove.push(k.clone()),
            }
        }
        // nginx sends an upstream block's name as Host; Tomcat (Spring Boot) refuses a host name
        // with `_` (400), so such a name in Host is worth a look.
        if let Some((_, h)) =
            set.iter().find(|(k, v)| k.eq_ignore_ascii_case("Host") && v.contains('_') && !v.contains('$'))
        {
            let message = format!(
                "the upstream gets `Host: {h}` (nginx's $proxy_host); Tomcat and Spring Boot answer a host name with `_` \
                 with 400 — set proxy_set_header Host (e.g. $host) if the app checks it"
            );
            self.diag(at, Level::Warning, message);
        }
        let mut headers = vec![("set".to_string(), pairs(set))];
        if !remove.is_empty() {
            headers.push(("remove".to_string(), list(remove)));
        }
        fields.push(("request_headers", V::Map(headers)));
        fields.push(("forwarded_headers", false.into()));
        fields
    }

    /// The backend for `host[:port]` (an upstream block, a Service with --namespace, or an
    /// address) and nginx's `$proxy_host` for it.
    fn backend_for(&mut self, x: &Directive, hostport: &str, scheme: &str, inh: &Inherited) -> (String, String) {
        let mut settings: Fields = Vec::new();
        if let Some(t) = &inh.read_timeout {
            settings.push(("read_timeout", t.into()));
        }
        if let Some(t) = &inh.send_timeout {
            settings.push(("send_timeout", t.into()));
        }
        if let Some(t) = &inh.connect_timeout {
            settings.push(("connect_timeout", t.into()));
        }
        match inh.next_upstream.as_deref() {
            None => {}
            Some([]) => settings.push(("retries", 0u64.into())),
            Some(on) => settings.push(("retry_on", list(on.iter().copied()))),
        }
        if scheme == "https" {
            let mut tls: Vec<(String, V)> = Vec::new();
            match (inh.ssl_verify.unwrap_or(false), &inh.ssl_trusted) {
                (true, Some(ca)) => {
                    self.must_exist(&x.at, ca, "CA bundle");
                    tls.push(("ca".into(), ca.into()));
                }
                (true, None) => {
                    let message = "proxy_ssl_verify on without proxy_ssl_trusted_certificate: nginx refuses the \
                                   config; the backend is written without verification — give it `tls.ca`";
                    self.diag(&x.at, Level::Warning, message);
                    tls.push(("insecure_skip_verify".into(), true.into()));
                }
                (false, _) => {
                    let message = "proxy_pass https://: nginx does not verify the upstream's certificate \
                                   (proxy_ssl_verify off, its default); the backend says so with \
                                   `tls: { insecure_skip_verify: true }` — give it `tls.ca` to verify";
                    self.diag(&x.at, Level::Warning, message);
                    tls.push(("insecure_skip_verify".into(), true.into()));
                }
            }
            let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
            let name = inh.ssl_name.clone().or_else(|| {
                (inh.ssl_server_name == Some(true) && host.parse::<std::net::IpAddr>().is_err())
                    .then(|| host.to_string())
            });
            if let Some(n) = name {
                tls.push(("server_name".into(), n.into()));
            }
            settings.push(("tls", V::Map(tls)));
        }
        if let Some(up) = self.upstreams.get(hostport).cloned() {
            let mut fields: Fields = Vec::new();
            let mut addrs = Vec::new();
            let ublock = up.block.as_deref().unwrap_or_default();
            for s in ublock {
                match s.name.as_str() {
                    "server" => {
                        let a = arg(s, 0);
                        let a = if a.contains(':') { a.to_string() } else { format!("{a}:80") };
                        let mut member = vec![("address".to_string(), V::from(a))];
                        for p in s.args.iter().skip(1) {
                            if let Some(w) = p.strip_prefix("weight=") {
                                member.push(("weight".into(), w.into()));
                            } else if p == "backup" {
                                member.push(("backup".into(), true.into()));
                            } else if p == "down" {
                                member.push(("down".into(), true.into()));
                            } else if let Some(m) = p.strip_prefix("max_fails=") {
                                if m != "0" {
                                    fields.push(("eject_after", m.into()));
                                }
                            } else if let Some(t) = p.strip_prefix("fail_timeout=") {
                                if let Some(t) = time(t) {
                                    fields.push(("eject_for", t.into()));
                                }
                            }
                        }
                        addrs.push(V::Map(member));
                    }
                    "ip_hash" => fields.push(("balance", "client_ip".into())),
                    "hash" if arg(s, 0) == "$remote_addr" => fields.push(("balance", "client_ip".into())),
                    "least_conn" => fields.push(("balance", "least_request".into())),
                    "keepalive" | "keepalive_timeout" | "keepalive_requests" | "zone" => {}
                    _ => self.other(s),
                }
            }
            fields.sort_by(|a, b| a.0.cmp(b.0));
            fields.dedup();
            // One member that is a Service: ferry follows the Service's ready pods itself.
            let servers: Vec<&Directive> = ublock.iter().filter(|s| s.name == "server").collect();
            let one_service = match servers.as_slice() {
                [s] if s.args.iter().skip(1).all(|p| {
                    p.starts_with("weight=") || p.starts_with("max_fails") || p.starts_with("fail_timeout")
                }) =>
                {
                    let a = arg(s, 0);
                    let (host, port) = a.rsplit_once(':').unwrap_or((a, "80"));
                    let port = V::from(port.parse::<u64>().unwrap_or(80));
                    self.service_of(host).map(|svc| vec![("service", svc.into()), ("port", port)])
                }
                _ => None,
            };
            let mut all = one_service.unwrap_or_else(|| vec![("addresses", V::List(addrs))]);
            all.extend(fields);
            all.extend(settings);
            let name = self.add_backend(hostport, all);
            return (name, hostport.to_string());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
            _ => (hostport, if scheme == "https" { "443" } else { "80" }),
        };
        let service = self.service_of(host);
        let base = format!("{}-{port}", service.as_deref().unwrap_or(host));
        let mut fields: Fields = match service {
            Some(s) => vec![("service", s.into()), ("port", port.parse::<u64>().unwrap_or(80).into())],
            None => vec![("addresses", list([format!("{host}:{port}")]))],
        };
        fields.extend(settings);
        let name = self.add_backend(&base, fields);
        let default_port = (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
        // nginx's $proxy_host drops the scheme's own port, written or not.
        (name, if default_port { host.to_string() } else { hostport.to_string() })
    }

    /// With --namespace, the Service a host name names (`svc`, `svc.ns`, `svc.ns.svc`,
    /// `svc.ns.svc.cluster.local`) as `svc.ns`.
    fn service_of(&self, host: &str) -> Option<String> {
        let ns = self.opts.namespace.as_deref()?;
        let parts: Vec<&str> = host.split('.').collect();
        let svc = |n: &str| format!("{}.{}", parts[0], n);
        match parts.as_slice() {
            [_] => Some(svc(ns)),
            [_, n] => Some(svc(n)),
            [_, n, "svc"] | [_, n, "svc", "cluster", "local"] => Some(svc(n)),
            _ => None,
        }
        .filter(|_| host.parse::<std::net::IpAddr>().is_err())
    }

    /// A backend named after `base`; the same settings share one, different ones get `-2`, `-3`….
    fn add_backend(&mut self, base: &str, fields: Fields) -> String {
        let base: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '-' })
            .collect();
        for n in 1.. {
            let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            match self.out.backends.get(&name) {
                Some(b) if *b == fields => return name,
                Some(_) => continue,
                None => {
                    self.out.backends.insert(name.clone(), fields);
                    return name;
                }
            }
        }
        unreachable!()
    }

    pub(super) fn stream(&mut self, stream: &Directive) {
        let block = stream.block.as_deref().unwrap_or_default();
        for d in block {
            if d.name == "upstream" {
                self.upstreams.insert(arg(d, 0).into(), d.clone());
            }
        }
        for s in block.iter().filter(|d| d.name == "server") {
            let sblock = s.block.as_deref().unwrap_or_default();
            let listen = sblock.iter().find(|x| x.name == "listen").map(|x| arg(x, 0).to_string());
            let pass = sblock.iter().find(|x| x.name == "proxy_pass").map(|x| arg(x, 0).to_string());
            let (Some(listen), Some(pass)) = (listen, pass) else {
                self.diag(&s.at, Level::Warning, "stream server without listen and proxy_pass; skipped");
                continue;
            };
            let Some(bind) = listen_bind(&listen) else {
                self.diag(&s.at, Level::Warning, format!("listen {listen}: not carried over"));
                continue;
            };
            let port = bind.rsplit(':').next().unwrap_or("0").to_string();
            let (mut backend, mut sni) = (None, Vec::new());
            match pass.strip_prefix('$') {
                // `ssl_preread on` + `map $ssl_preread_server_name $var { NAME target; … }`:
                // TLS passthrough by server name, `default` for the rest.
                Some(var) => {
                    let map = block.iter().find(|d| {
                        d.name == "map"
                            && arg(d, 0) == "$ssl_preread_server_name"
                            && arg(d, 1).trim_start_matches('$') == var
                    });
                    let Some(map) = map else {
                        let message =
                            format!("proxy_pass {pass}: only a map of $ssl_preread_server_name is carried over here");
                        self.diag(&s.at, Level::Warning, message);
                        continue;
                    };
                    for e in map.block.as_deref().unwrap_or_default() {
                        let (key, target) = (e.name.as_str(), arg(e, 0));
                        if key == "hostnames" {
                            continue;
                        }
                        let (b, _) = self.backend_for(e, target, "tcp", &Inherited::default());
                        match key {
                            "default" => backend = Some(b),
                            k if k.starts_with('~') => self.diag(
                                &e.at,
                                Level::Warning,
                                format!("map entry {k}: a regex server name is not carried over"),
                            ),
                            k => {
                                let name = match k.strip_prefix('.') {
                                    Some(rest) => format!("*.{rest}"),
                                    None => k.to_ascii_lowercase(),
                                };
                                sni.push((vec![name], b));
                            }
                        }
                    }
                }
                None => backend = Some(self.backend_for(s, &pass, "tcp", &Inherited::default()).0),
            }
            self.out.listeners.insert(
                bind.clone(),
                Listener {
                    name: format!("tcp-{port}"),
                    bind,
                    tcp: true,
                    tcp_backend: backend,
                    sni,
                    at: Some(s.at.clone()),
                    ..Default::default()
                },
            );
        }
    }
}
