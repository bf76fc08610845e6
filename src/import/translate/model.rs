//! The import's output as values: listeners, routes and backends built from typed fields,
//! checked one by one with ferry's own config parser (a refused route fails closed, see
//! [`Route::fail_closed`]) and rendered once as routes.yaml.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::super::parse::{Diag, Level, Pos};

/// One value of the output: written in YAML flow style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum V {
    Str(String),
    Num(u64),
    Bool(bool),
    List(Vec<V>),
    Map(Vec<(String, V)>),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::Str(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::Str(s)
    }
}
impl From<&String> for V {
    fn from(s: &String) -> V {
        V::Str(s.clone())
    }
}
impl From<u64> for V {
    fn from(n: u64) -> V {
        V::Num(n)
    }
}
impl From<u16> for V {
    fn from(n: u16) -> V {
        V::Num(n.into())
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::Bool(b)
    }
}

/// A mapping, in the order given.
pub(crate) fn map<K: Into<String>, const N: usize>(kv: [(K, V); N]) -> V {
    V::Map(kv.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A mapping from pairs.
pub(crate) fn pairs<K: Into<String>, T: Into<V>>(kv: impl IntoIterator<Item = (K, T)>) -> V {
    V::Map(kv.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
}

/// A sequence.
pub(crate) fn list<T: Into<V>>(items: impl IntoIterator<Item = T>) -> V {
    V::List(items.into_iter().map(Into::into).collect())
}

/// A YAML string: single-quoted, or double-quoted with escapes when it holds control characters.
pub(crate) fn q(s: &str) -> String {
    if s.chars().any(char::is_control) {
        return serde_json::to_string(s).expect("a string serialises");
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// A mapping key: plain when it is a plain word (a field name, a status code), quoted otherwise.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        q(k)
    }
}

impl V {
    fn render(&self, out: &mut String) {
        match self {
            V::Str(s) => out.push_str(&q(s)),
            V::Num(n) => {
                let _ = write!(out, "{n}");
            }
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.render(out);
                }
                out.push(']');
            }
            V::Map(kv) => {
                out.push_str("{ ");
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&key(k));
                    out.push_str(": ");
                    v.render(out);
                }
                out.push_str(" }");
            }
        }
    }

    /// Every string in the value, to edit in place.
    fn each_string(&mut self, f: &mut impl FnMut(&mut String)) {
        match self {
            V::Str(s) => f(s),
            V::List(items) => items.iter_mut().for_each(|v| v.each_string(f)),
            V::Map(kv) => kv.iter_mut().for_each(|(_, v)| v.each_string(f)),
            V::Num(_) | V::Bool(_) => {}
        }
    }
}

/// The fields of a route or a backend, in the order written.
pub(crate) type Fields = Vec<(&'static str, V)>;

/// Renders `key: value` lines at `indent`.
fn fields(out: &mut String, indent: &str, f: &Fields) {
    for (k, v) in f {
        out.push_str(indent);
        out.push_str(k);
        out.push_str(": ");
        v.render(out);
        out.push('\n');
    }
}

/// One route of a listener, as it will be written.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub name: String,
    /// `FILE:LINE  location …`: where it came from (written above it).
    pub comment: String,
    /// The nginx source it came from (for diagnostics).
    pub at: Pos,
    pub matches: Fields,
    pub fields: Fields,
}

impl Route {
    fn render(&self, out: &mut String) {
        if !self.comment.is_empty() {
            let _ = writeln!(out, "      # {}", self.comment);
        }
        let _ = writeln!(out, "      - name: {}", q(&self.name));
        if !self.matches.is_empty() {
            let m = V::Map(self.matches.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
            out.push_str("        match: ");
            m.render(out);
            out.push('\n');
        }
        fields(out, "        ", &self.fields);
    }

    /// Replaces the markers `\u{1}origin` / `\u{1}portless` in every value by the listener's origin.
    pub(crate) fn fill_origin(&mut self, origin: &str) {
        // `scheme://$host` without a port: the origin up to its last `:PORT`.
        let portless = match origin.rsplit_once(':') {
            Some((o, p)) if p.bytes().all(|b| b.is_ascii_digit()) => o,
            _ => origin,
        };
        for (_, v) in &mut self.fields {
            v.each_string(&mut |s| {
                if s.contains('\u{1}') {
                    *s = s.replace(super::ORIGIN, origin).replace(super::ORIGIN_NO_PORT, portless);
                }
            });
        }
    }

    /// The route, kept where it is so no neighbour takes its requests, answering `status`: what the
    /// import does with a route ferry refuses or whose access control it cannot carry over.
    pub(crate) fn fail_closed(&mut self, status: u16) {
        self.fields = vec![("respond", map([("status", status.into())]))];
    }

    /// The backends the route names.
    fn backends(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.fields {
            match (k, v) {
                (&"backend", V::Str(b)) => out.push(b.clone()),
                (&"forward_auth", V::Map(kv)) => {
                    out.extend(kv.iter().filter(|(k, _)| k == "backend").filter_map(|(_, v)| match v {
                        V::Str(s) => Some(s.clone()),
                        _ => None,
                    }))
                }
                (&"split", V::List(items)) => {
                    for i in items {
                        if let V::Map(kv) = i {
                            out.extend(kv.iter().filter(|(k, _)| k == "backend").filter_map(|(_, v)| match v {
                                V::Str(s) => Some(s.clone()),
                                _ => None,
                            }));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One listener, as it will be written.
#[derive(Default)]
pub(crate) struct Listener {
    pub name: String,
    pub bind: String,
    /// A `stream` server: `protocol: tcp`, its backend and its SNI routes.
    pub tcp: bool,
    pub tcp_backend: Option<String>,
    /// (server names, backend)
    pub sni: Vec<(Vec<String>, String)>,
    pub certs: Vec<(String, String)>,
    /// (client CA, required): `tls.client_ca`, `tls.client_certificate`.
    pub client: Option<(String, bool)>,
    pub proxy_protocol: bool,
    pub trusted: Vec<String>,
    /// (order group, order, routes, server index)
    pub servers: Vec<(u8, usize, Vec<Route>, usize)>,
    /// The default server's routes (host-less) and whether `default_server` chose it.
    pub default: Option<(bool, Vec<Route>, usize)>,
    /// The source of the first server (for diagnostics).
    pub at: Option<Pos>,
}

impl Listener {
    /// The listener's own fields, without routes.
    fn head(&self, out: &mut String) {
        let _ = write!(out, "  - name: {}\n    bind: {}\n", q(&self.name), q(&self.bind));
        if self.tcp {
            out.push_str("    protocol: tcp\n");
            if let Some(b) = &self.tcp_backend {
                let _ = writeln!(out, "    backend: {}", q(b));
            }
            if !self.sni.is_empty() {
                out.push_str("    sni:\n");
                for (names, b) in &self.sni {
                    let _ =
                        writeln!(out, "      - {{ server_names: {}, backend: {} }}", render(&list(names.iter())), q(b));
                }
            }
            return;
        }
        if self.proxy_protocol {
            out.push_str("    proxy_protocol: true\n");
        }
        // As nginx: no request IDs or trace context unless the config sets them itself.
        out.push_str(
            "    # nginx adds neither; delete these two lines to have ferry send X-Request-Id and traceparent\n    \
             request_id: false\n    trace_context: { start: false }\n",
        );
        if !self.trusted.is_empty() {
            let _ = writeln!(out, "    trusted_proxies: {}", render(&list(self.trusted.iter())));
        }
        if !self.certs.is_empty() {
            out.push_str("    tls:\n      certificates:\n");
            for (c, k) in &self.certs {
                let _ = writeln!(out, "        - {{ cert: {}, key: {} }}", q(c), q(k));
            }
            if let Some((ca, required)) = &self.client {
                let mode = if *required { "required" } else { "optional" };
                let _ = writeln!(out, "      client_ca: {}\n      client_certificate: {mode}", q(ca));
            }
        }
    }

    /// The routes in the order written: named servers (exact, wildcards, regexes), then the
    /// default server.
    fn routes_mut(&mut self) -> Vec<&mut Route> {
        // A port whose only server is its default: that server's host-less routes say it all.
        let alone = self.default.as_ref().is_some_and(|d| self.servers.iter().all(|r| r.3 == d.2));
        if alone {
            self.servers.clear();
        }
        self.servers.sort_by_key(|(k, i, _, _)| (*k, *i));
        let mut out: Vec<&mut Route> = self.servers.iter_mut().flat_map(|s| s.2.iter_mut()).collect();
        if let Some((_, r, _)) = &mut self.default {
            out.extend(r.iter_mut());
        }
        out
    }
}

fn render(v: &V) -> String {
    let mut s = String::new();
    v.render(&mut s);
    s
}

/// The whole output.
#[derive(Default)]
pub(crate) struct Output {
    pub listeners: BTreeMap<String, Listener>,
    /// name → fields
    pub backends: BTreeMap<String, Fields>,
}

/// A listener for checking a backend on its own.
const STUB: &str =
    "listeners:\n  - name: v\n    bind: 127.0.0.1:9\n    routes:\n      - { respond: { status: 404 } }\n";

/// Checks `yaml` with ferry's parser: the first problem's message.
fn refused(yaml: &str) -> Option<String> {
    match crate::config::Config::parse("imported.yaml", yaml) {
        Ok(_) => None,
        Err(e) => Some(e.0.first().map(|e| e.message.clone()).unwrap_or_else(|| e.to_string())),
    }
}

impl Output {
    fn backend_yaml(out: &mut String, name: &str, f: &Fields) {
        let _ = writeln!(out, "  {}:", q(name));
        fields(out, "    ", f);
    }

    /// Checks every backend, listener and route on its own with ferry's parser. A refused backend
    /// is left out (warning), and a route naming it fails closed (503); a refused route fails
    /// closed (503) where it stands; a refused listener is left out. Then renders the whole.
    pub(crate) fn finish(mut self, diags: &mut Vec<Diag>, fallback: &Pos) -> Option<String> {
        let mut gone = Vec::new();
        let names: Vec<String> = self.backends.keys().cloned().collect();
        for name in names {
            let mut y = format!("{STUB}backends:\n");
            Self::backend_yaml(&mut y, &name, &self.backends[&name]);
            if let Some(why) = refused(&y) {
                diags.push(Diag {
                    at: fallback.clone(),
                    level: Level::Warning,
                    message: format!("backend `{name}` is left out, ferry refuses it: {why}"),
                });
                self.backends.remove(&name);
                gone.push(name);
            }
        }
        let binds: Vec<String> = self.listeners.keys().cloned().collect();
        for bind in binds {
            let l = self.listeners.get_mut(&bind).expect("listed");
            let mut head = String::from("listeners:\n");
            l.head(&mut head);
            let at = l.at.clone().unwrap_or_else(|| fallback.clone());
            if !l.tcp {
                head.push_str("    routes:\n      - { respond: { status: 404 } }\n");
            }
            let mut named: Vec<&String> = l.tcp_backend.iter().chain(l.sni.iter().map(|(_, b)| b)).collect();
            named.sort();
            named.dedup();
            if let Some(b) = named.iter().find(|b| gone.contains(b) || !self.backends.contains_key(**b)) {
                diags.push(Diag {
                    at,
                    level: Level::Warning,
                    message: format!("listener {bind} is left out: its backend `{b}` is"),
                });
                self.listeners.remove(&bind);
                continue;
            }
            if !named.is_empty() {
                let _ = writeln!(head, "backends:");
                for b in named {
                    Self::backend_yaml(&mut head, b, &self.backends[b]);
                }
            }
            if let Some(why) = refused(&head) {
                diags.push(Diag {
                    at,
                    level: Level::Warning,
                    message: format!("listener {bind} is left out, ferry refuses it: {why}"),
                });
                self.listeners.remove(&bind);
                continue;
            }
            let backends = &self.backends;
            for r in l.routes_mut() {
                let missing: Vec<String> = r.backends().into_iter().filter(|b| !backends.contains_key(b)).collect();
                let why = match missing.first() {
                    Some(b) => Some(format!("its backend `{b}` was left out")),
                    None => {
                        let mut y = String::from("listeners:\n  - name: v\n    bind: 127.0.0.1:9\n    routes:\n");
                        r.render(&mut y);
                        let mut named = r.backends();
                        named.sort();
                        named.dedup();
                        if !named.is_empty() {
                            y.push_str("backends:\n");
                            for b in &named {
                                Self::backend_yaml(&mut y, b, &backends[b]);
                            }
                        }
                        refused(&y)
                    }
                };
                if let Some(why) = why {
                    diags.push(Diag {
                        at: r.at.clone(),
                        level: Level::Warning,
                        message: format!(
                            "route `{}` answers 503 (fail closed), ferry refuses it as imported: {why}",
                            r.name
                        ),
                    });
                    r.fail_closed(503);
                }
            }
        }
        if self.listeners.is_empty() {
            return None;
        }
        let mut y = String::from("# Imported by `ferry import`; check with `ferry check -c FILE`.\nlisteners:\n");
        for l in self.listeners.values_mut() {
            l.head(&mut y);
            if l.tcp {
                continue;
            }
            y.push_str("    routes:\n");
            for r in l.routes_mut() {
                r.render(&mut y);
            }
        }
        if !self.backends.is_empty() {
            y.push_str("backends:\n");
            for (name, f) in &self.backends {
                Self::backend_yaml(&mut y, name, f);
            }
        }
        // The parts passed one by one; what only the whole can refuse (none known) is a bug.
        if let Some(why) = refused(&y) {
            diags.push(Diag {
                at: fallback.clone(),
                level: Level::Error,
                message: format!("the import does not pass ferry check as a whole (a bug in ferry import): {why}"),
            });
            return None;
        }
        Some(y)
    }
}
