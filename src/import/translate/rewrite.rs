//! `return`, `rewrite` and `if`: what nginx's rewrite phase answers before a location's handler
//! (redirects, fixed answers, conditions on the method or a header), and the rewrite a
//! `proxy_pass` sends on.

use super::location::Ahead;
use super::model::{list, map, pairs, Fields, V};
use super::{absolute, arg, Inherited, Level, Translator};
use crate::import::parse::Directive;

/// A `rewrite`'s flag as nginx reads it: a replacement that starts with `http://`, `https://` or
/// `$scheme` redirects (302 unless `permanent`) whatever the flag says.
pub(super) fn flag(r: &Directive) -> &str {
    let to = arg(r, 1);
    let absolute = ["http://", "https://", "$scheme"].iter().any(|p| to.starts_with(p));
    match arg(r, 2) {
        "permanent" => "permanent",
        _ if absolute => "redirect",
        f => f,
    }
}

/// `redirect: { to, status }`.
fn redirect(to: String, status: u16) -> (&'static str, V) {
    ("redirect", map([("to", to.into()), ("status", status.into())]))
}

/// `respond: { status }`.
pub(super) fn respond(status: u16) -> (&'static str, V) {
    ("respond", map([("status", status.into())]))
}

/// A rewrite regex that matches every path and captures all of it (or nothing).
pub(super) fn every_path(re: &str) -> bool {
    matches!(re, "^" | "^(.*)$" | "^/(.*)$" | "^(.*)" | ".*" | "(.*)")
}

/// A regex error's last line (the regex crate's span its pattern over several).
pub(super) fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().trim_start_matches("error: ").to_string()
}

impl Translator<'_> {
    /// `rewrite ^(.*)$ https://$host$1 permanent;` and the like: a redirect of every request.
    pub(super) fn server_rewrite(&mut self, x: &Directive, inh: &Inherited) -> Option<Fields> {
        let every = every_path(arg(x, 0));
        let status = match flag(x) {
            "permanent" => 301,
            "redirect" => 302,
            _ => 0,
        };
        let to = arg(x, 1);
        let target_ok = ["http://", "https://", "$", "/"].iter().any(|p| to.starts_with(p));
        if !every || status == 0 || !target_ok {
            self.diag(
                &x.at,
                Level::Warning,
                format!("rewrite {}: only a redirect of every path is carried over here", x.args.join(" ")),
            );
            return None;
        }
        // The whole path was captured (`$1`); nginx's `$uri` is that path.
        let mut to = to.replace("$1", "$uri");
        if arg(x, 0) == "^/(.*)$" {
            to = to.replace("/$uri", "$uri");
        }
        match to.strip_suffix('?') {
            Some(t) => to = t.to_string(),
            None if !to.contains('?') && !to.contains("$request_uri") => to.push_str("$is_args$args"),
            None => {}
        }
        Some(vec![redirect(absolute(&to, inh), status)])
    }

    pub(super) fn ret(&mut self, x: &Directive, inh: &Inherited) -> Fields {
        let code: u16 = arg(x, 0).parse().unwrap_or(0);
        match (code, x.args.len()) {
            (301 | 302 | 303 | 307 | 308, 2) => {
                vec![redirect(absolute(arg(x, 1), inh), code)]
            }
            (0, 1) => vec![redirect(arg(x, 0).to_string(), 302)],
            (c, 1) if (100..600).contains(&c) => vec![respond(c)],
            (c, 2) if (100..600).contains(&c) => {
                // The text goes with `default_type`, as nginx's return sends it.
                let ty = inh.default_type.clone().unwrap_or_else(|| "text/plain".into());
                vec![("respond", map([("status", c.into()), ("body", arg(x, 1).into()), ("content_type", ty.into())]))]
            }
            _ => {
                self.diag(&x.at, Level::Warning, format!("return {}: not understood", x.args.join(" ")));
                vec![respond(500)]
            }
        }
    }

    /// `if (COND) { … }` whose block answers (`return`, a redirecting `rewrite`, with its
    /// `add_header`s): the extra matches and the fields of a route answering it, ahead of the
    /// level's own. COND is nginx's: `$var`, `$var = V`, `!=`, `~ RE`, `~*`, `!~`, `!~*` on any
    /// variable ferry knows (the method and a header `=` as `methods`/`headers`, the rest as
    /// `match.when`). `None`: not expressible (the caller warns, and fails closed if it guards).
    pub(super) fn if_route(&mut self, x: &Directive, inh: &Inherited) -> Option<Ahead> {
        let block = x.block.as_deref()?;
        // A refusal may test a wider regex than nginx's (one ferry's engine cannot run): it then
        // refuses more, never less.
        let refuses = block.iter().any(|d| d.name == "return" && arg(d, 0).parse::<u16>().is_ok_and(|c| c >= 400));
        let m = match condition(&x.args, &inh.sets, false) {
            Some(m) => m,
            None if refuses => {
                let m = condition(&x.args, &inh.sets, true)?;
                let message = "if: its regex is not valid for ferry; a wider one refuses (fail closed)";
                self.diag(&x.at, Level::Warning, message);
                m
            }
            None => return None,
        };
        if block.iter().any(|d| !matches!(d.name.as_str(), "return" | "add_header" | "rewrite" | "break")) {
            return None;
        }
        let answer = block.iter().find(|d| d.name == "return" || d.name == "rewrite")?;
        let mut fields = match answer.name.as_str() {
            "return" => self.ret(answer, inh),
            _ if matches!(arg(answer, 2), "redirect" | "permanent") => {
                let (matches, fields) = self.regex_redirect(answer, inh)?;
                // The rewrite's own regex narrows the paths: a second match of the route.
                let mut m = m.clone();
                m.extend(matches);
                let if_inh = self.quiet_level(block, inh);
                let headers = self.response_headers(&if_inh, false);
                let mut fields = fields;
                fields.extend(headers);
                return Some((m, fields));
            }
            _ => return None,
        };
        // An if block's add_headers are the answer's own (the CORS preflight): no inheritance warning.
        let if_inh = self.quiet_level(block, inh);
        let headers = self.response_headers(&if_inh, false);
        fields.extend(headers);
        Some((m, fields))
    }

    /// A location's `rewrite`s, in order: a redirect of every path answers the location (second
    /// value); a redirect of some paths, and a `last` (or flagless) rewrite, is a route of its own
    /// ahead of the location's (third: its `path_regex` and fields; a `last` one reroutes the new
    /// path); a final `rewrite REGEX TARGET break` before `proxy_pass` is the route's `rewrite`
    /// (first: nginx then sends the rewritten path as is). A replacement starting with `http://`,
    /// `https://` or `$scheme` redirects whatever the flag, as nginx's. The rest warns.
    pub(super) fn location_rewrites(
        &mut self,
        block: &[Directive],
        inh: &Inherited,
    ) -> (Option<V>, Option<Fields>, Vec<Ahead>) {
        let list: Vec<&Directive> = block.iter().filter(|x| x.name == "rewrite").collect();
        let proxies = block.iter().any(|x| x.name == "proxy_pass");
        let (mut rewrite, mut early, mut pre) = (None, None, Vec::new());
        for (i, r) in list.iter().enumerate() {
            if early.is_some() {
                self.diag(&r.at, Level::Warning, "rewrite after a redirect of every path never runs; skipped");
                continue;
            }
            match flag(r) {
                "redirect" | "permanent" if every_path(arg(r, 0)) => early = self.server_rewrite(r, inh),
                "redirect" | "permanent" => pre.extend(self.regex_redirect(r, inh)),
                "break" if proxies && i + 1 == list.len() => {
                    let to = arg(r, 1);
                    self.new_arguments(r);
                    rewrite = Some(map([("regex", arg(r, 0).into()), ("to", to.into())]));
                }
                "last" | "" => pre.extend(self.reroute(r)),
                flag => {
                    let why = match (flag, proxies) {
                        ("break", false) => "break outside a proxy_pass location",
                        _ => "a break before other rewrites",
                    };
                    let message = format!("rewrite {}: not carried over ({why})", r.args.join(" "));
                    self.diag(&r.at, Level::Warning, message);
                }
            }
        }
        (rewrite, early, pre)
    }

    /// nginx appends the request's arguments after new ones a replacement sets; ferry's rewrite
    /// replaces them.
    fn new_arguments(&mut self, r: &Directive) {
        let to = arg(r, 1);
        if to.contains('?') && !to.ends_with('?') {
            let message = "rewrite with new arguments: nginx appends the request's own after them, ferry's \
                           rewrite replaces them";
            self.diag(&r.at, Level::Warning, message);
        }
    }

    /// `rewrite REGEX TARGET last` (or with no flag): a route for the paths REGEX matches that
    /// rewrites them and routes the new path again (`reroute`), as nginx searches its locations
    /// again.
    pub(super) fn reroute(&mut self, r: &Directive) -> Option<Ahead> {
        if let Err(e) = regex::Regex::new(arg(r, 0)) {
            let message =
                format!("rewrite {}: its regex is not valid for ferry ({}); skipped", arg(r, 0), one_line(&e));
            self.diag(&r.at, Level::Warning, message);
            return None;
        }
        self.new_arguments(r);
        let mut to = arg(r, 1).to_string();
        if !to.starts_with('/') && !to.starts_with('$') {
            to.insert(0, '/');
        }
        let rewrite = map([("regex", arg(r, 0).into()), ("to", to.into()), ("reroute", true.into())]);
        Some((vec![("path_regex", arg(r, 0).into())], vec![("rewrite", rewrite)]))
    }

    /// `rewrite REGEX TARGET redirect|permanent` for the paths REGEX matches: (the `path_regex`
    /// match, the redirect) — its captures fill `$1`…`$9` of the target.
    pub(super) fn regex_redirect(&mut self, x: &Directive, inh: &Inherited) -> Option<Ahead> {
        let status = if arg(x, 2) == "permanent" { 301 } else { 302 };
        if let Err(e) = regex::Regex::new(arg(x, 0)) {
            let message =
                format!("rewrite {}: its regex is not valid for ferry ({}); skipped", arg(x, 0), one_line(&e));
            self.diag(&x.at, Level::Warning, message);
            return None;
        }
        let mut to = arg(x, 1).to_string();
        // nginx keeps the request's arguments unless the target ends in `?`.
        match to.strip_suffix('?') {
            Some(t) => to = t.to_string(),
            None if !to.contains('?') => to.push_str("$is_args$args"),
            None => {
                let message =
                    "rewrite with new arguments: nginx appends the request's own after them; ferry's redirect does not";
                self.diag(&x.at, Level::Warning, message);
            }
        }
        Some((vec![("path_regex", arg(x, 0).into())], vec![redirect(absolute(&to, inh), status)]))
    }
}

/// nginx's `if` condition (its arguments, parentheses included) as route matches; `None` when
/// ferry cannot test it (file tests such as `-f`, a variable ferry lacks, a regex its engine
/// refuses).
fn condition(args: &[String], sets: &[(String, String)], widen: bool) -> Option<Fields> {
    let mut words: Vec<String> = args.to_vec();
    // `(`/`)` stand alone or stick to the first/last word.
    let first = words.first_mut()?;
    *first = first.strip_prefix('(')?.to_string();
    let last = words.last_mut()?;
    *last = last.strip_suffix(')')?.to_string();
    words.retain(|w| !w.is_empty());
    let expand = |v: &str| super::variables::expand(v, sets);
    let var = words.first()?;
    if !var.starts_with('$') {
        return None; // -f, -d, -e, -x and their negations
    }
    let cond = |test: &'static str, v: V| {
        let c = V::Map(vec![("var".into(), var.clone().into()), (test.into(), v)]);
        Some(vec![("when", V::List(vec![c]))])
    };
    let parses = |t: &str| crate::config::template::Template::parse(t).is_ok();
    if !parses(var) {
        return None;
    }
    match words.as_slice() {
        [_] => cond("set", true.into()),
        [v, op, value] => {
            let value = expand(value);
            match op.as_str() {
                "=" if v == "$request_method" && !value.contains('$') => Some(vec![("methods", list([value]))]),
                "=" if v.starts_with("$http_") && !value.contains('$') && !value.is_empty() => {
                    Some(vec![("headers", pairs([(v["$http_".len()..].replace('_', "-"), value)]))])
                }
                "=" if parses(&value) => cond("equals", value.into()),
                "!=" if parses(&value) => cond("not_equals", value.into()),
                "~" | "~*" | "!~" | "!~*" => {
                    let mut re = if op.ends_with('*') { format!("(?i){value}") } else { value };
                    if regex::Regex::new(&re).is_err() {
                        // Only `~` may be widened: a wider `!~` would refuse less.
                        if !widen || op.starts_with('!') {
                            return None;
                        }
                        re = super::location::wider(&re)?;
                        regex::Regex::new(&re).ok()?;
                    }
                    cond(if op.starts_with('!') { "not_regex" } else { "regex" }, re.into())
                }
                _ => None,
            }
        }
        _ => None,
    }
}
