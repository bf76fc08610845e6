//! `location` blocks: nginx's location tree read as `locations` sees it, each location's
//! directives as one route body (handler, access, headers, files), and the order of
//! `order::rules` so ferry picks the location nginx would.

use std::collections::BTreeMap;

use super::super::locations::{Kind, Location};
use super::super::order::{self, Target};
use super::model::{list, map, pairs, Fields, V};
use super::rewrite::one_line;
use super::{absolute, arg, Inherited, Level, Server, Translator, NO_OPS};
use crate::import::parse::{Directive, Pos};

impl Translator<'_> {
    /// One level of `location` blocks (and, under prefix locations, their nested ones): nginx's
    /// view of them, and their directives in the same shape.
    fn read_locations<'d>(&mut self, block: &'d [Directive]) -> (Vec<Location>, Vec<Node<'d>>) {
        let mut locs: Vec<Location> = Vec::new();
        let mut found: Vec<Node<'d>> = Vec::new();
        for d in block.iter().filter(|d| d.name == "location") {
            let Some((modifier, path)) = modifier(&d.args) else {
                self.diag(&d.at, Level::Warning, format!("location {}: not understood; skipped", d.args.join(" ")));
                continue;
            };
            let mut refused = false;
            let (kind, name) = match modifier {
                "=" => (Kind::Exact, path.to_string()),
                "^~" => (Kind::Prefix { noregex: true }, path.to_string()),
                "~" | "~*" => {
                    let pat = if modifier == "~*" { format!("(?i){path}") } else { path.to_string() };
                    match regex::Regex::new(&pat) {
                        Ok(re) => (Kind::Regex(re), pat),
                        // A regex ferry cannot run (look-around, back-references): its paths must
                        // not reach a neighbour, so a wider regex takes them and answers 503.
                        Err(e) => match wider(&pat).and_then(|w| regex::Regex::new(&w).ok().map(|re| (re, w))) {
                            Some((re, w)) => {
                                let message = format!(
                                    "location regex `{path}` is not valid for ferry ({}): the paths of `{w}` are \
                                     refused (503 unless the location refuses them itself; fail closed)",
                                    one_line(&e)
                                );
                                self.diag(&d.at, Level::Warning, message);
                                refused = true;
                                (Kind::Regex(re), w)
                            }
                            None => {
                                let message = format!(
                                    "location regex `{path}` is not valid for ferry ({}); skipped",
                                    one_line(&e)
                                );
                                self.diag(&d.at, Level::Warning, message);
                                continue;
                            }
                        },
                    }
                }
                "@" => continue, // named: reached by try_files/error_page only
                _ => (Kind::Prefix { noregex: false }, path.to_string()),
            };
            // Two locations that can never both match.
            let twin = locs.iter().zip(&found).find(|(l, _)| {
                l.name == name
                    && matches!(
                        (&l.kind, &kind),
                        (Kind::Regex(_), Kind::Regex(_))
                            | (Kind::Exact, Kind::Exact)
                            | (Kind::Prefix { .. }, Kind::Prefix { .. })
                    )
            });
            if let Some((l, first)) = twin {
                let message = match l.kind {
                    Kind::Regex(_) => format!(
                        "location {} can never match: the same regex at line {} takes every path first",
                        d.args.join(" "),
                        first.d.at.line
                    ),
                    _ => format!(
                        "location {} is defined twice (first at line {}): nginx refuses the config (duplicate location); \
                         the first is imported",
                        d.args.join(" "),
                        first.d.at.line
                    ),
                };
                self.diag(&d.at, Level::Warning, message);
                continue;
            }
            let lblock = d.block.as_deref().unwrap_or_default();
            let (nested, kids) = match (&kind, lblock.iter().any(|x| x.name == "location")) {
                (_, false) => (Vec::new(), Vec::new()),
                (Kind::Prefix { .. }, true) => self.read_locations(lblock),
                _ => {
                    let message = "locations nested in a regex or exact location are not carried over; the outer one is imported alone";
                    self.diag(&d.at, Level::Warning, message);
                    (Vec::new(), Vec::new())
                }
            };
            let proxies = lblock.iter().any(|x| x.name == "proxy_pass");
            locs.push(Location { auto_redirect: proxies && name.ends_with('/'), kind, name, nested });
            found.push(Node { d, kids, refused });
        }
        (locs, found)
    }

    /// Route bodies for every location of a level and below, by path; `parent`: what the level
    /// inherits.
    #[allow(clippy::too_many_arguments)]
    fn bodies(
        &mut self,
        locs: &[Location],
        nodes: &[Node<'_>],
        at: &[usize],
        parent: &Inherited,
        label: &str,
        maps: &Shared<'_>,
        out: &mut BTreeMap<Vec<usize>, Body>,
    ) {
        for (i, (l, n)) in locs.iter().zip(nodes).enumerate() {
            let mut path = at.to_vec();
            path.push(i);
            let mut body = self.location(n.d, &l.kind, &l.name, parent, label, maps);
            // A location that refuses anyway (`return 403`) refuses the wider regex's paths too.
            let refuses = body.fields.iter().any(|(k, v)| {
                *k == "respond"
                    && matches!(v, V::Map(m) if m.iter().any(|(k, v)| k == "status" && matches!(v, V::Num(c) if *c >= 400)))
            });
            if n.refused && !refuses {
                body.fields = vec![("respond", map([("status", 503u16.into())]))];
                body.except = None;
                body.pre.clear();
            }
            out.insert(path.clone(), body);
            if !l.nested.is_empty() {
                let block = n.d.block.as_deref().unwrap_or_default();
                let mut inh = self.quiet_level(block, parent);
                // nginx merges a proxying location's default proxy_redirect (its own proxy_pass URL)
                // into the locations nested in it: they keep it, not their own.
                if inh.proxy_redirect.is_none() {
                    if let Some((from, to)) =
                        block.iter().find(|x| x.name == "proxy_pass").and_then(|x| default_redirect(x, &l.name))
                    {
                        inh.proxy_redirect = Some(vec![super::Redirect::Rule(from, to, n.d.at.clone())]);
                    }
                }
                self.bodies(&l.nested, &n.kids, &path, &inh, label, maps, out);
            }
        }
    }

    /// The server's locations as route bodies, in ferry's order (host added per server_name).
    pub(super) fn locations(&mut self, s: &Server<'_>, label: &str, zones: &BTreeMap<String, String>) -> Vec<RouteOut> {
        let block = s.d.block.as_deref().unwrap_or_default();
        let (locs, nodes) = self.read_locations(block);
        // error_page URIs are served by the location nginx picks for them (internally redirected):
        // its root gives the file.
        let mut pages = BTreeMap::new();
        let error_pages = |inh: &Inherited, _: &[Directive]| -> Vec<String> {
            inh.error_pages.iter().flatten().map(|(_, u)| u.clone()).collect()
        };
        for uri in self.uris(s, &nodes, error_pages).into_iter().filter(|u| u.starts_with('/') && !u.contains('$')) {
            let root = match self.served_by(s, &locs, &nodes, &uri) {
                Some((_, d, _)) if served_otherwise(d) => continue,
                Some((inh, ..)) => inh.root,
                None => s.inh.root.clone(),
            };
            let root = root.unwrap_or_else(|| self.default_root());
            pages.insert(uri.clone(), format!("{root}{uri}"));
        }
        let mut bodies = BTreeMap::new();
        let auths = self.auth_targets(s, &locs, &nodes);
        let expires_at = self.expires_at(s, &locs, &nodes);
        let named: BTreeMap<String, Directive> = block
            .iter()
            .filter(|d| d.name == "location" && d.args.len() == 1 && arg(d, 0).starts_with('@'))
            .map(|d| (arg(d, 0).to_string(), d.clone()))
            .collect();
        let shared =
            Shared { zones, pages: &pages, auths: &auths, expires_at: &expires_at, named: &named, server: &s.inh };
        self.bodies(&locs, &nodes, &[], &s.inh, label, &shared, &mut bodies);
        let rules = order::rules(&locs).expect("read_locations nests only under prefix locations");
        rules
            .into_iter()
            .map(|r| {
                let mut m: Fields = Vec::new();
                if let Some(e) = &r.exact {
                    m.push(("path_exact", as_sent(e).into()));
                }
                if let Some(p) = &r.starts_with {
                    m.push(("path_starts_with", as_sent(p).into()));
                }
                if let Some(i) = &r.regex {
                    m.push(("path_regex", (&order::at(&locs, i).name).into()));
                }
                match r.target {
                    Target::Location(i) => RouteOut { matches: m, body: bodies[&i].clone() },
                    // nginx refuses a client an internal location before it would add the `/`.
                    Target::Redirect(i) if bodies[&i].internal => RouteOut { matches: m, body: bodies[&i].clone() },
                    Target::Redirect(i) => {
                        let (l, body) = (order::at(&locs, &i), &bodies[&i]);
                        let to = absolute(&format!("{}$is_args$args", l.name), &s.inh);
                        // Before access checks, as nginx's; the location's add_header still apply.
                        let fields = std::iter::once(("redirect", map([("to", to.into()), ("status", 301u16.into())])))
                            .chain(body.fields.iter().filter(|f| f.0 == "response_headers").cloned())
                            .collect();
                        RouteOut {
                            matches: m,
                            body: Body {
                                name: format!("{label}-{}-slash", l.name.trim_matches('/')),
                                comment: body.comment.clone() + " (nginx adds the `/`)",
                                at: body.at.clone(),
                                fields,
                                except: None,
                                pre: Vec::new(),
                                internal: false,
                                then: None,
                            },
                        }
                    }
                }
            })
            .collect()
    }

    /// The forward_auth of every `auth_request URI` the server uses: the location nginx picks for
    /// URI, if it proxies to a target ferry can name (its URI part as the auth request's target,
    /// its proxy_set_header as the auth request's headers).
    fn auth_targets(&mut self, s: &Server<'_>, locs: &[Location], nodes: &[Node<'_>]) -> BTreeMap<String, Option<V>> {
        let auth_requests = |inh: &Inherited, _: &[Directive]| -> Vec<String> {
            inh.auth_request.iter().map(|(u, _)| u.clone()).collect()
        };
        let mut out = BTreeMap::new();
        for uri in self.uris(s, nodes, auth_requests) {
            let auth = self.served_by(s, locs, nodes, &uri).and_then(|(inh, d, loc)| {
                let target = d.block.as_deref().unwrap_or_default().iter().find(|x| x.name == "proxy_pass")?;
                self.auth_target(target, &loc.kind, &loc.name, &uri, &inh)
            });
            out.insert(uri, auth);
        }
        out
    }

    /// Every URI `of` names at the server level and in each location (with what it inherits),
    /// sorted, once each.
    fn uris(
        &mut self,
        s: &Server<'_>,
        nodes: &[Node<'_>],
        of: impl Fn(&Inherited, &[Directive]) -> Vec<String>,
    ) -> Vec<String> {
        let mut uris = of(&s.inh, &[]);
        let mut stack: Vec<(&Node<'_>, Inherited)> = nodes.iter().map(|n| (n, s.inh.clone())).collect();
        while let Some((n, parent)) = stack.pop() {
            let block = n.d.block.as_deref().unwrap_or_default();
            let inh = self.quiet_level(block, &parent);
            uris.extend(of(&inh, block));
            stack.extend(n.kids.iter().map(|k| (k, inh.clone())));
        }
        uris.sort();
        uris.dedup();
        uris
    }

    /// The location nginx picks for `uri` (an internal redirect, a subrequest): what it inherits,
    /// its directive, and how it matches. `None`: no location takes it.
    fn served_by<'n, 'd>(
        &mut self,
        s: &Server<'_>,
        locs: &'n [Location],
        nodes: &'n [Node<'d>],
        uri: &str,
    ) -> Option<(Inherited, &'d Directive, &'n Location)> {
        let super::super::locations::Choice::Location(v) = super::super::locations::choose(locs, uri) else {
            return None;
        };
        let (mut inh, mut level, mut at) = (s.inh.clone(), nodes, locs);
        let mut found = None;
        for &i in &v {
            let n = &level[i];
            inh = self.quiet_level(n.d.block.as_deref().unwrap_or_default(), &inh);
            found = Some((n.d, &at[i]));
            (level, at) = (&n.kids, &at[i].nested);
        }
        found.map(|(d, l)| (inh, d, l))
    }

    /// See [`Shared::expires_at`].
    fn expires_at(
        &mut self,
        s: &Server<'_>,
        locs: &[Location],
        nodes: &[Node<'_>],
    ) -> BTreeMap<String, Option<String>> {
        // The HTML nginx reaches by an internal redirect: try_files' last URI, `/` + an index name.
        let redirected = |inh: &Inherited, block: &[Directive]| -> Vec<String> {
            let tf = block.iter().filter(|x| x.name == "try_files").filter_map(|x| x.args.last().cloned());
            tf.chain(inh.index.iter().flatten().map(|i| format!("/{i}"))).collect()
        };
        let mut out = BTreeMap::new();
        for uri in self.uris(s, nodes, redirected).into_iter().filter(|u| u.starts_with('/') && !u.contains('$')) {
            let expires = match self.served_by(s, locs, nodes, &uri) {
                Some((inh, ..)) => inh.expires,
                None => s.inh.expires.clone(),
            };
            out.insert(uri, expires);
        }
        out
    }

    /// `static` for files from `root` as nginx's static and index handlers serve them.
    pub(super) fn static_fields(
        &mut self,
        inh: &Inherited,
        root: String,
        try_files: Option<&Directive>,
        expires_at: Option<&BTreeMap<String, Option<String>>>,
    ) -> V {
        let V::Map(mut st) = self.files(inh, ("root", root), try_files, None) else { unreachable!("files is a map") };
        // The HTML nginx reaches by an internal redirect (the fallback, a directory's index) is
        // served with the Cache-Control of the location that takes its URI.
        let fallback = st.iter().find(|(k, _)| k == "fallback").and_then(|(_, v)| match v {
            V::Str(f) => Some(f.clone()),
            _ => None,
        });
        let index = inh.index.as_ref().and_then(|i| i.first()).map_or("/index.html".to_string(), |i| format!("/{i}"));
        let via = fallback.unwrap_or(index);
        if let (None, Some(Some(c))) = (&inh.expires, expires_at.and_then(|m| m.get(&via))) {
            st.retain(|(k, _)| k != "html_cache");
            st.push(("html_cache".into(), c.into()));
        }
        V::Map(st)
    }

    /// `static` for `root` / `alias` (its location `prefix`: a try_files fallback URI under it is a
    /// file of the alias) / `file`, with index, fallback and Cache-Control as nginx sends them
    /// (none unless `expires` says).
    fn files(
        &mut self,
        inh: &Inherited,
        (key, dir): (&'static str, String),
        try_files: Option<&Directive>,
        prefix: Option<&str>,
    ) -> V {
        let mut st: Vec<(String, V)> = vec![(key.into(), dir.into())];
        if let (Some(index), false) = (&inh.index, key == "file") {
            st.push(("index".into(), list(index.iter())));
        }
        if let (Some(tf), false) = (try_files, key == "file") {
            let last = tf.args.last().map(String::as_str).unwrap_or("");
            let ok_shape = tf.args.iter().take(tf.args.len().saturating_sub(1)).all(|a| a == "$uri" || a == "$uri/");
            let fallback = match prefix {
                None => Some(last),
                Some(p) => last.strip_prefix(p.trim_end_matches('/')).filter(|f| f.starts_with('/')),
            };
            match fallback {
                // `try_files $uri @app`: a path with no file goes on to the named location's route.
                _ if ok_shape && last.starts_with('@') => {
                    if !tf.args.iter().any(|a| a == "$uri/") {
                        st.retain(|(k, _)| k != "index");
                        st.push(("index".into(), V::List(Vec::new())));
                    }
                    st.push(("missing".into(), "next".into()));
                }
                Some(f) if ok_shape && f.starts_with('/') && !f.contains('$') => st.push(("fallback".into(), f.into())),
                _ if ok_shape && last == "=404" => {}
                _ => self.diag(
                    &tf.at,
                    Level::Warning,
                    format!("try_files {}: only `$uri $uri/ /FILE` is carried over", tf.args.join(" ")),
                ),
            }
        }
        if inh.gzip_static == Some(false) {
            st.push(("precompressed".into(), false.into()));
        }
        // nginx sends no Cache-Control unless `expires` says (ferry's default for HTML is no-cache).
        let cache = inh.expires.clone().unwrap_or_else(|| "off".into());
        if inh.expires.is_some() {
            st.push(("cache".into(), cache.clone().into()));
        }
        st.push(("html_cache".into(), cache.into()));
        V::Map(st)
    }

    fn location(
        &mut self,
        d: &Directive,
        kind: &Kind,
        name: &str,
        server: &Inherited,
        label: &str,
        maps: &Shared<'_>,
    ) -> Body {
        let (zones, pages) = (maps.zones, maps.pages);
        let block = d.block.as_deref().unwrap_or_default();
        let inh = self.level(block, server);
        let shown = match kind {
            Kind::Exact => format!("= {name}"),
            Kind::Prefix { noregex: true } => format!("^~ {name}"),
            Kind::Prefix { noregex: false } => name.to_string(),
            Kind::Regex(re) if re.as_str().starts_with("(?i)") => format!("~* {}", &name[4..]),
            Kind::Regex(_) => format!("~ {name}"),
        };
        let slug: String = match kind {
            Kind::Regex(_) => format!("regex{}", d.at.line),
            _ => name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect(),
        };
        let slug = slug.trim_matches('-').to_string();
        let mut body = Body {
            name: if slug.is_empty() { label.to_string() } else { format!("{label}-{slug}") },
            comment: format!("{}  location {shown}", d.at),
            at: d.at.clone(),
            fields: Vec::new(),
            except: None,
            pre: Vec::new(),
            internal: false,
            then: None,
        };
        // `internal`: nginx answers clients 404 before anything else runs.
        if block.iter().any(|x| x.name == "internal") {
            self.diag(&d.at, Level::Note, format!("location {shown} is internal: clients get 404, as from nginx"));
            body.fields = vec![("respond", map([("status", 404u16.into())]))];
            body.internal = true;
            return body;
        }
        let mut fields: Fields = Vec::new();
        let mut target = false;
        let mut alias = false;
        let mut scratch = Inherited::default();
        let mut guard = None;
        let (rewrite, early, redirects) = self.location_rewrites(block, &inh);
        // `if (COND) { return …; }` runs in the rewrite phase, before the location's handler and
        // before access checks: a route of its own ahead of the location's.
        let mut pre = Vec::new();
        pre.extend(redirects.into_iter().map(|r| ("rewrite".to_string(), r)));
        let mut answered = false;
        let mut idiom: Option<String> = None;
        for x in block {
            match x.name.as_str() {
                "return" => answered = true,
                "if" if !answered && missing_file_fallback(x).is_some() => {
                    // `if (!-e $request_filename) { rewrite ^(.*)$ /index.html last; }`: the
                    // try_files idiom of older configs.
                    idiom = missing_file_fallback(x);
                }
                "if" if !answered => match self.if_route(x, &inh) {
                    Some(r) => pre.push(("if".to_string(), r)),
                    None => {
                        self.other(x);
                        if guards(x) {
                            guard.get_or_insert(x.at.clone());
                        }
                    }
                },
                "if" => self.diag(&x.at, Level::Warning, "if after the location's return never runs; skipped"),
                n if super::ACCESS_REFUSED.contains(&n) => {
                    guard.get_or_insert(x.at.clone());
                }
                _ => {}
            }
        }
        let early_redirect = early.is_some();
        if let Some(r) = early {
            target = true;
            fields.extend(r);
        }
        for x in block {
            match x.name.as_str() {
                "proxy_pass" if target => {}
                "proxy_pass" => {
                    target = true;
                    fields.extend(self.proxy_pass(x, kind, name, &inh, rewrite.clone()));
                }
                "return" => {
                    target = true;
                    fields.extend(self.ret(x, &inh));
                }
                // Handlers ferry cannot run: the location answers 502, with the warning.
                "fastcgi_pass"
                | "uwsgi_pass"
                | "scgi_pass"
                | "grpc_pass"
                | "memcached_pass"
                | "content_by_lua"
                | "content_by_lua_block"
                | "content_by_lua_file"
                | "js_content" => {
                    target = true;
                    self.other(x);
                    fields.push(("respond", map([("status", 502u16.into())])));
                }
                "alias" => {
                    target = true;
                    alias = true;
                    let path = arg(x, 0);
                    let looks_file =
                        |p: &str| !p.ends_with('/') && p.rsplit('/').next().is_some_and(|l| l.contains('.'));
                    // An alias of one file (`location = /favicon.ico { alias /srv/icon.png; }`).
                    let one_file = looks_file(path) && (matches!(kind, Kind::Exact) || looks_file(name));
                    let (key, what) = if one_file { ("file", "static file") } else { ("alias", "static directory") };
                    self.must_exist(&x.at, path, what);
                    let dir = if one_file { path.to_string() } else { path.trim_end_matches('/').to_string() };
                    let tf = block.iter().find(|x| x.name == "try_files");
                    let st = self.files(&inh, (key, dir), tf, Some(name));
                    fields.push(("static", st));
                }
                "try_files" => {}
                "limit_req" => {
                    let zone = x.args.iter().find_map(|a| a.strip_prefix("zone=")).unwrap_or("");
                    let burst: u64 =
                        x.args.iter().find_map(|a| a.strip_prefix("burst=")).unwrap_or("0").parse().unwrap_or(0);
                    match zones.get(zone).and_then(|r| {
                        r.strip_suffix("r/s")
                            .map(|n| format!("{n}/s"))
                            .or_else(|| r.strip_suffix("r/m").map(|n| format!("{n}/m")))
                    }) {
                        Some(rate) => {
                            let status = inh.limit_req_status.unwrap_or(503);
                            fields.push((
                                "rate_limit",
                                map([("rate", rate.into()), ("burst", burst.into()), ("status", status.into())]),
                            ));
                        }
                        None => self.diag(
                            &x.at,
                            Level::Warning,
                            format!("limit_req zone={zone}: its limit_req_zone was not found"),
                        ),
                    }
                    if !x.args.iter().any(|a| a == "nodelay") {
                        self.diag(
                            &x.at,
                            Level::Warning,
                            "limit_req without nodelay delays requests past the rate; ferry refuses them at once",
                        );
                    }
                }
                "rewrite" | "limit_except" | "if" | "internal" => {}
                "location" | "include" => {}
                n if NO_OPS.contains(&n) => {}
                _ if self.inherit(x, &mut inh.clone(), &mut scratch) => {}
                _ => self.other(x),
            }
        }
        if !target {
            // Files from root (nginx's default handler).
            let root = inh.root.clone().unwrap_or_else(|| self.default_root());
            self.must_exist(&d.at, &root, "static directory");
            let from_if = idiom.as_ref().map(|f| Directive {
                name: "try_files".into(),
                args: vec!["$uri".into(), f.clone()],
                block: None,
                at: d.at.clone(),
            });
            let tf = block.iter().find(|x| x.name == "try_files").or(from_if.as_ref());
            // try_files … @app: the named location answers what has no file, right after.
            let named = tf.and_then(|t| t.args.last()).filter(|l| l.starts_with('@'));
            match named.and_then(|n| maps.named.get(n.as_str())) {
                Some(nd) => {
                    let kind = Kind::Prefix { noregex: false };
                    body.then = Some(Box::new(self.location(nd, &kind, arg(nd, 0), maps.server, label, maps)));
                }
                None if named.is_some() => {
                    let message =
                        format!("try_files: the named location {} is not there", named.cloned().unwrap_or_default());
                    self.diag(&d.at, Level::Warning, message);
                }
                None => {}
            }
            let st = self.static_fields(&inh, root, tf, Some(maps.expires_at));
            fields.push(("static", st));
        }
        let base = fields.clone();
        self.common(&d.at, &inh, &mut fields, !target || alias, pages);
        // auth_request: the auth location's proxy_pass as forward_auth, what auth_request_set
        // hands on as its copies; an auth location ferry cannot call fails closed.
        if let Some((uri, at)) = &inh.auth_request {
            match maps.auths.get(uri).cloned().flatten() {
                Some(V::Map(mut f)) => {
                    let copies = |list: Vec<(String, String)>| {
                        let list: Vec<(String, V)> = list.into_iter().map(|(k, h)| (k, h.into())).collect();
                        (!list.is_empty()).then_some(V::Map(list))
                    };
                    let to_request = inh.proxy_set_header.iter().flatten();
                    let to_request =
                        to_request.filter_map(|(k, v, _)| Some((k.clone(), inh.auth_header(v)?))).collect();
                    let to_response = inh.add_header.iter().flatten();
                    let to_response =
                        to_response.filter_map(|(k, v, ..)| Some((k.clone(), inh.auth_header(v)?))).collect();
                    f.extend(copies(to_request).map(|v| ("copy_to_request".to_string(), v)));
                    f.extend(copies(to_response).map(|v| ("copy_to_response".to_string(), v)));
                    fields.push(("forward_auth", V::Map(f)));
                }
                _ => {
                    let message = format!(
                        "auth_request {uri}: its location is not one ferry can call (a proxy_pass to a named target)"
                    );
                    self.diag(at, Level::Warning, message);
                    guard.get_or_insert(at.clone());
                }
            }
        }
        // A location answered by `return` (or a rewrite redirect) answers in nginx's rewrite phase,
        // before access, limit_req and auth_basic run.
        if answered || early_redirect {
            fields.retain(|f| !matches!(f.0, "access" | "basic_auth" | "rate_limit" | "forward_auth" | "satisfy"));
        }
        // limit_except METHODS { allow/deny, auth_basic }: those methods as the location says,
        // every other one with the block's access rules and credentials over the location's.
        body.except = block.iter().find(|x| x.name == "limit_except" && x.block.is_some()).map(|le| {
            let inner = le.block.as_deref().unwrap_or_default();
            for x in inner {
                if !matches!(x.name.as_str(), "allow" | "deny" | "auth_basic" | "auth_basic_user_file") {
                    self.diag(&x.at, Level::Warning, format!("`{}` inside limit_except is not carried over", x.name));
                }
            }
            let mut methods: Vec<String> = le.args.iter().map(|m| m.to_ascii_uppercase()).collect();
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".into());
            }
            let le_inh = self.level(inner, &inh);
            let mut other = base;
            self.common(&le.at, &le_inh, &mut other, !target || alias, pages);
            (methods, other)
        });
        body.fields = fields;
        body.pre = pre;
        // An access control ferry cannot carry over: the location answers 403 rather than let its
        // requests through unchecked.
        if let Some(at) = guard {
            self.diag(
                &at,
                Level::Warning,
                format!("location {shown} answers 403 (fail closed): its access control is not carried over"),
            );
            body.fields = vec![("respond", map([("status", 403u16.into())]))];
            body.except = None;
            body.pre.retain(|(what, _)| what == "rewrite");
        }
        body
    }

    /// A level's `add_header`, `expires` and `proxy_hide_header` as `response_headers`. A header
    /// whose value ferry cannot render (a variable it lacks) is left out alone, with a warning.
    pub(super) fn response_headers(&mut self, inh: &Inherited, files: bool) -> Option<(&'static str, V)> {
        // add_header … always: every answer; without `always` (and `expires`): nginx's success
        // statuses only.
        let mut always: Vec<(String, V)> = Vec::new();
        let mut success: Vec<(String, V)> = Vec::new();
        for (k, v, on_all, at) in inh.add_header.iter().flatten() {
            if inh.auth_request.is_some() && inh.auth_header(v).is_some() {
                continue; // forward_auth's copy_to_response sets it
            }
            let Some(v) = self.value(at, "add_header", k, v, &inh.sets) else { continue };
            match on_all {
                true => always.push((k.clone(), v.into())),
                false => success.push((k.clone(), v.into())),
            }
        }
        if let (Some(c), false) = (&inh.expires, files) {
            success.push(("Cache-Control".into(), c.into()));
        }
        success.dedup();
        let mut parts = Vec::new();
        if !always.is_empty() {
            parts.push(("add".to_string(), V::Map(always)));
        }
        if !inh.hide_header.is_empty() {
            parts.push(("remove".to_string(), list(inh.hide_header.iter())));
        }
        if !success.is_empty() {
            parts.push(("on_success".to_string(), map([("add", V::Map(success))])));
        }
        (!parts.is_empty()).then_some(("response_headers", V::Map(parts)))
    }

    /// Settings every route of a location carries: headers, access, auth, body limit, compress.
    pub(super) fn common(
        &mut self,
        at: &Pos,
        inh: &Inherited,
        fields: &mut Fields,
        files: bool,
        pages: &BTreeMap<String, String>,
    ) {
        if let Some(rules) = &inh.access {
            let rules = rules.iter().map(|(allow, a)| map([(if *allow { "allow" } else { "deny" }, a.into())]));
            fields.push(("access", V::List(rules.collect())));
        }
        if let Some((realm, file)) = &inh.auth {
            self.must_exist(at, file, "htpasswd file");
            fields.push(("basic_auth", map([("realm", realm.into()), ("htpasswd", file.into())])));
        }
        if inh.satisfy_any && inh.access.is_some() && (inh.auth.is_some() || inh.auth_request.is_some()) {
            fields.push(("satisfy", "any".into()));
        }
        // nginx's default client_max_body_size is 1m (ferry's static routes take no body anyway).
        match inh.max_body.unwrap_or(1024 * 1024) {
            0 => {}
            _ if files => {}
            n => fields.push(("max_body_bytes", n.into())),
        }
        let headers = self.response_headers(inh, files);
        fields.extend(headers);
        // error_page CODE… /FILE.html: the file nginx would serve for it, for ferry's own errors.
        let pages: Vec<(String, String)> = inh
            .error_pages
            .iter()
            .flatten()
            .filter_map(|(codes, uri)| Some((codes, pages.get(uri)?.clone())))
            .flat_map(|(codes, file)| {
                codes.iter().filter(|c| (400..600).contains(*c)).map(move |c| (c.to_string(), file.clone()))
            })
            .collect();
        for (_, file) in &pages {
            self.must_exist(at, file, "error page");
        }
        if !pages.is_empty() {
            fields.push(("error_pages", pairs(pages)));
        }
        // sub_filter: nginx matches ignoring case and, unless sub_filter_once off, each string once.
        if let Some(subs) = inh.sub_filter.as_ref().filter(|l| !l.is_empty()) {
            if files {
                let message =
                    "sub_filter on files ferry serves itself is not carried over (body_replace goes with a backend)";
                self.diag(&subs[0].2, Level::Warning, message);
            } else {
                let mut rules = Vec::new();
                for (from, to, at) in subs {
                    let to = super::variables::expand(to, &inh.sets);
                    if to.contains('$') {
                        let message =
                            format!("sub_filter {from} {to}: a replacement with variables is not carried over");
                        self.diag(at, Level::Warning, message);
                        continue;
                    }
                    rules.push(map([("from", from.into()), ("to", to.into())]));
                }
                if !rules.is_empty() {
                    fields.push(("body_replace", V::List(rules)));
                    if let Some(types) = &inh.sub_filter_types {
                        let mut t: Vec<String> = types.iter().filter(|t| *t != "*").cloned().collect();
                        if types.iter().any(|t| t == "*") {
                            let message = "sub_filter_types *: ferry replaces in the listed types only (text/html and those named)";
                            self.diag(&subs[0].2, Level::Warning, message);
                        }
                        if !t.iter().any(|x| x == "text/html") {
                            t.insert(0, "text/html".into()); // nginx always includes it
                        }
                        fields.push(("body_replace_types", list(t)));
                    }
                    if inh.sub_filter_once != Some(false) {
                        fields.push(("body_replace_once", true.into()));
                    }
                    fields.push(("body_replace_ignore_case", true.into()));
                }
            }
        }
        if let Some(rules) = inh.cookie_paths.as_ref().filter(|l| !l.is_empty() && !files) {
            let mut out = Vec::new();
            for (from, to, at) in rules {
                if from.starts_with('~') || from.contains('$') || to.contains('$') {
                    self.diag(at, Level::Warning, "proxy_cookie_path with a regex or variables is not carried over");
                    continue;
                }
                out.push(map([("from", from.into()), ("to", to.into())]));
            }
            if !out.is_empty() {
                fields.push(("rewrite_cookie_path", V::List(out)));
            }
        }
        if inh.gzip == Some(true) {
            fields.push(("compress", true.into()));
            if let Some(n) = inh.gzip_min {
                fields.push(("compress_min_bytes", n.into()));
            }
        }
    }
}

/// A location path as ferry routes on it: nginx compares locations with the decoded path, ferry
/// with the path in its normal form, where what is not a URI character (`%`, a space, UTF-8)
/// stays percent-encoded (upper-case hex).
fn as_sent(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// nginx's `proxy_redirect default` of a `proxy_pass` in location `loc`: its URL (with `/` when
/// it has no URI part) becomes the location (`/`). None with variables (nothing matches them).
pub(super) fn default_redirect(x: &Directive, loc: &str) -> Option<(String, String)> {
    let url = arg(x, 0);
    if url.contains('$') {
        return None;
    }
    let rest = url.split_once("://")?.1;
    Some(match rest.contains('/') {
        true => (url.to_string(), loc.to_string()),
        false => (format!("{url}/"), "/".to_string()),
    })
}

/// A location answered by other than files from its root (an error page URI it takes is not a file).
fn served_otherwise(d: &Directive) -> bool {
    d.block.as_deref().unwrap_or_default().iter().any(|x| matches!(x.name.as_str(), "proxy_pass" | "return" | "alias"))
}

/// A location's modifier and path, as nginx reads them: `= /x`, `^~ /x`, `~ RE`, `~* RE`, `@name`,
/// or the same glued to the path (`=/login`, `^~/api`, `~/app/(.*)`); `""` for a plain prefix.
fn modifier(args: &[String]) -> Option<(&str, &str)> {
    match args {
        [m, path] if matches!(m.as_str(), "=" | "^~" | "~" | "~*") => Some((m, path)),
        [one] => {
            for m in ["^~", "~*", "=", "~", "@"] {
                if let Some(rest) = one.strip_prefix(m).filter(|r| !r.is_empty()) {
                    return Some((m, if m == "@" { one } else { rest }));
                }
            }
            Some(("", one))
        }
        _ => None,
    }
}

/// A regex matching every path `re` matches, without what ferry's regex engine lacks: look-around
/// groups are dropped (each only narrows the match), a back-reference becomes `.*`.
pub(super) fn wider(re: &str) -> Option<String> {
    let b = re.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &re[i..];
        if rest.starts_with('\\') {
            match b.get(i + 1) {
                Some(c) if c.is_ascii_digit() && *c != b'0' => out.push_str(".*"),
                Some(_) => out.push_str(&rest[..2.min(rest.len())]),
                None => return None,
            }
            i += 2;
            continue;
        }
        if ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|p| rest.starts_with(p)) {
            // Skip to the matching `)`.
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 1,
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= b.len() {
                return None;
            }
            i = j + 1;
            continue;
        }
        let c = rest.chars().next()?;
        out.push(c);
        i += c.len_utf8();
    }
    (out != re).then_some(out)
}

/// `if (!-e $request_filename) { rewrite ^(.*)$ /FILE last; }` (or `!-f`, with `break`): the file
/// every missing path gets, as try_files' last argument.
fn missing_file_fallback(x: &Directive) -> Option<String> {
    let cond = x.args.join(" ");
    let cond = cond.trim().trim_start_matches('(').trim_end_matches(')').trim();
    if !matches!(cond, "!-e $request_filename" | "!-f $request_filename") {
        return None;
    }
    let block = x.block.as_deref()?;
    if block.iter().any(|d| !matches!(d.name.as_str(), "rewrite" | "break")) {
        return None;
    }
    let r = block.iter().find(|d| d.name == "rewrite")?;
    let all = matches!(arg(r, 0), "^(.*)$" | "^/(.*)$" | "^(.*)" | "(.*)" | ".*" | "^/(.*)" | "^");
    let target = arg(r, 1).split('?').next().unwrap_or_default();
    (all && matches!(arg(r, 2), "last" | "break") && target.starts_with('/') && !target.contains('$'))
        .then(|| target.to_string())
}

/// An `if` that guards: its block answers (`return`) or refuses (`deny`).
pub(super) fn guards(x: &Directive) -> bool {
    x.block.as_deref().unwrap_or_default().iter().any(|d| matches!(d.name.as_str(), "return" | "deny"))
}

/// A route ahead of a location's (an `if` or a rewrite redirect): its extra matches, its fields.
pub(super) type Ahead = (Fields, Fields);

#[derive(Clone)]
pub(super) struct Body {
    pub name: String,
    pub comment: String,
    pub at: Pos,
    pub fields: Fields,
    /// `limit_except`: the methods `fields` are for, and the fields for every other method.
    pub except: Option<(Vec<String>, Fields)>,
    /// Routes before the location's own handling (`if (COND) { … return …; }`, rewrite
    /// redirects): (name suffix, (extra matches, fields)).
    pub pre: Vec<(String, Ahead)>,
    /// An `internal` location (clients get 404).
    pub internal: bool,
    /// The route after this one for what it leaves (`try_files $uri @app`: the named location).
    pub then: Option<Box<Body>>,
}

/// A `location` directive and the ones nested in it, in the shape of [`Location`]'s tree.
struct Node<'d> {
    d: &'d Directive,
    kids: Vec<Node<'d>>,
    /// Its regex stands for a wider one: it answers 503.
    refused: bool,
}

/// What a server's locations share: rate-limit zones, error page files, and the forward_auth for
/// each auth_request URI (`None`: its location is not one ferry can call).
pub(super) struct Shared<'m> {
    zones: &'m BTreeMap<String, String>,
    pages: &'m BTreeMap<String, String>,
    auths: &'m BTreeMap<String, Option<V>>,
    /// For each URI nginx serves HTML at by an internal redirect (a try_files fallback, `/` + an
    /// index name): the `expires` of the location that serves it.
    expires_at: &'m BTreeMap<String, Option<String>>,
    /// The server's named locations (`location @app`), for a try_files that ends in one.
    named: &'m BTreeMap<String, Directive>,
    /// What the server level sets (a named location inherits it).
    server: &'m Inherited,
}

pub(super) struct RouteOut {
    pub matches: Fields,
    pub body: Body,
}
