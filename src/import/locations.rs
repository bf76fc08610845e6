//! nginx's choice of `location` for a request path, as `ngx_http_core_find_location` makes it: the
//! reference the importer's route order is tested against.
//!
//! At one level: an `=` location whose name is the path wins outright. Otherwise the longest
//! prefix location that the path starts with (plain string prefix, case-sensitive: `/api` matches
//! `/apiary`) is remembered and its nested locations are searched the same way (an exact or regex
//! match in there wins). Then, unless that longest prefix is `^~`, this level's regex locations are
//! tried in file order and the first that matches wins (its own nested locations searched too);
//! else the remembered prefix. A path one `/` short of a location whose name ends in `/` and which
//! proxies (nginx's `auto_redirect`) gets a 301 to that name, unless a location is named exactly
//! as the path.

use regex::Regex;

#[derive(Debug, Clone)]
pub enum Kind {
    /// `location = /x`
    Exact,
    /// `location /x` (`noregex: false`) or `location ^~ /x` (`noregex: true`)
    Prefix { noregex: bool },
    /// `location ~ re` or `location ~* re` (compiled case-insensitive)
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct Location {
    pub kind: Kind,
    pub name: String,
    /// nginx sets this on a location ending in `/` that has `proxy_pass` (and the other `*_pass`).
    pub auto_redirect: bool,
    pub nested: Vec<Location>,
}

/// What nginx does with a path: the chosen location (as indices from the top level down through
/// nested ones), a 301 to the location of that path (`auto_redirect`), or nothing (no location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Location(Vec<usize>),
    Redirect(Vec<usize>),
    None,
}

enum Found {
    /// Exact, regex, or a redirect: final.
    Final(Choice),
    /// The longest prefix, still open to regexes above.
    Prefix(Vec<usize>),
    Nothing,
}

pub fn choose(locations: &[Location], path: &str) -> Choice {
    match find(locations, path, &[]) {
        Found::Final(c) => c,
        Found::Prefix(at) => Choice::Location(at),
        Found::Nothing => Choice::None,
    }
}

fn with(at: &[usize], i: usize) -> Vec<usize> {
    let mut v = at.to_vec();
    v.push(i);
    v
}

fn find(level: &[Location], path: &str, at: &[usize]) -> Found {
    if let Some(i) = level.iter().position(|l| matches!(l.kind, Kind::Exact) && l.name == path) {
        return Found::Final(Choice::Location(with(at, i)));
    }
    let named = |l: &Location| !matches!(l.kind, Kind::Regex(_)) && l.name == path;
    if !level.iter().any(named) {
        let redirect = level.iter().position(|l| {
            l.auto_redirect && !matches!(l.kind, Kind::Regex(_)) && l.name.strip_suffix('/') == Some(path)
        });
        if let Some(i) = redirect {
            return Found::Final(Choice::Redirect(with(at, i)));
        }
    }
    let longest = level
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.kind, Kind::Prefix { .. }) && path.starts_with(&l.name))
        .max_by_key(|(_, l)| l.name.len());
    let mut found = Found::Nothing;
    let mut noregex = false;
    if let Some((i, l)) = longest {
        noregex = matches!(l.kind, Kind::Prefix { noregex: true });
        let here = with(at, i);
        match find(&l.nested, path, &here) {
            Found::Final(c) => return Found::Final(c),
            Found::Prefix(deeper) => found = Found::Prefix(deeper),
            Found::Nothing => found = Found::Prefix(here),
        }
    }
    if !noregex {
        for (i, l) in level.iter().enumerate() {
            if let Kind::Regex(re) = &l.kind {
                if re.is_match(path) {
                    let here = with(at, i);
                    return match find(&l.nested, path, &here) {
                        Found::Final(c) => Found::Final(c),
                        Found::Prefix(deeper) => Found::Final(Choice::Location(deeper)),
                        Found::Nothing => Found::Final(Choice::Location(here)),
                    };
                }
            }
        }
    }
    found
}

/// Random levels of locations and paths over a small alphabet, so that prefixes, regexes, exact
/// names and auto-redirects collide often: what the order tests (`import::order`, `tests/import.rs`)
/// compare nginx's choice on. A regex location's `name` is its pattern.
#[doc(hidden)]
pub mod sample {
    use super::{Kind, Location};

    const REGEXES: [&str; 6] = [r"\.js$", r"^/a", r"(?i)\.PNG$", r"b/", r"^/a/b$", r"x"];
    const PIECES: [&str; 10] = ["/", "a", "b", "/a", "/b", ".js", ".png", "x", "/a/", "ab"];

    pub fn path(rng: &mut fastrand::Rng, max_pieces: usize) -> String {
        let mut s = String::from("/");
        for _ in 0..rng.usize(0..=max_pieces) {
            s.push_str(PIECES[rng.usize(..PIECES.len())]);
        }
        s.replace("//", "/")
    }

    /// Up to `max` locations, none that nginx would refuse as a duplicate; a prefix location may
    /// hold nested ones (two levels deep at most), named under its prefix as nginx requires.
    pub fn level(rng: &mut fastrand::Rng, max: usize) -> Vec<Location> {
        nested_level(rng, max, "", 2)
    }

    fn nested_level(rng: &mut fastrand::Rng, max: usize, under: &str, depth: usize) -> Vec<Location> {
        let mut level: Vec<Location> = Vec::new();
        let name = |rng: &mut fastrand::Rng| match under {
            "" => path(rng, 3),
            u => format!("{u}{}", path(rng, 2).trim_start_matches('/')),
        };
        for _ in 0..rng.usize(1..=max) {
            let (kind, name) = match rng.usize(0..4) {
                0 => (Kind::Exact, name(rng)),
                1 => (Kind::Prefix { noregex: true }, name(rng)),
                2 => (Kind::Prefix { noregex: false }, name(rng)),
                _ => {
                    let p = REGEXES[rng.usize(..REGEXES.len())];
                    (Kind::Regex(regex::Regex::new(p).expect("a valid regex")), p.to_string())
                }
            };
            let same =
                |l: &Location| l.name == name && std::mem::discriminant(&l.kind) == std::mem::discriminant(&kind);
            if !matches!(kind, Kind::Regex(_)) && level.iter().any(same) {
                continue; // nginx: duplicate location
            }
            let auto_redirect = name.ends_with('/') && rng.bool();
            let nested = match (&kind, depth > 0 && rng.usize(0..3) == 0) {
                (Kind::Prefix { .. }, true) => nested_level(rng, 4, &name, depth - 1),
                _ => vec![],
            };
            level.push(Location { kind, name, auto_redirect, nested });
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(name: &str) -> Location {
        Location { kind: Kind::Prefix { noregex: false }, name: name.into(), auto_redirect: false, nested: vec![] }
    }

    #[test]
    fn the_example_of_nginx_s_documentation() {
        // http://nginx.org/en/docs/http/ngx_http_core_module.html#location, configurations A–E.
        let locs = vec![
            Location { kind: Kind::Exact, ..prefix("/") },
            prefix("/"),
            prefix("/documents/"),
            Location { kind: Kind::Prefix { noregex: true }, ..prefix("/images/") },
            Location { kind: Kind::Regex(Regex::new(r"(?i)\.(gif|jpg|jpeg)$").unwrap()), ..prefix("") },
        ];
        let pick = |p| match choose(&locs, p) {
            Choice::Location(v) => v[0],
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(pick("/"), 0, "A");
        assert_eq!(pick("/index.html"), 1, "B");
        assert_eq!(pick("/documents/document.html"), 2, "C");
        assert_eq!(pick("/images/1.gif"), 3, "D");
        assert_eq!(pick("/documents/1.jpg"), 4, "E");
        assert_eq!(pick("/documents/1.JPG"), 4, "~* ignores case");
    }

    #[test]
    fn plain_prefixes_nesting_and_auto_redirect() {
        let mut api = prefix("/prod-api/");
        api.auto_redirect = true;
        let mut admin = prefix("/admin");
        admin.nested = vec![Location { kind: Kind::Regex(Regex::new(r"\.php$").unwrap()), ..prefix("") }];
        let locs =
            vec![prefix("/"), api, admin, Location { kind: Kind::Regex(Regex::new(r"^/adm").unwrap()), ..prefix("") }];
        assert_eq!(choose(&locs, "/prod-api"), Choice::Redirect(vec![1]), "one `/` short of a proxying location");
        assert_eq!(choose(&locs, "/prod-api/x"), Choice::Location(vec![1]));
        assert_eq!(
            choose(&locs, "/administrators"),
            Choice::Location(vec![3]),
            "a plain string prefix; the regex wins"
        );
        assert_eq!(choose(&locs, "/admin/x.php"), Choice::Location(vec![2, 0]), "the nested regex first");
        assert_eq!(choose(&[prefix("/a")], "/b"), Choice::None);
    }
}
