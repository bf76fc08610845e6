//! `ferry import`'s location order, through ferry itself: random levels of nginx locations become
//! first-match rules, the rules become routes.yaml routes (`path_exact`, `path_starts_with`,
//! `path_regex`), ferry builds its table from that file, and for random paths ferry's own lookup
//! picks the location nginx's algorithm picks.

use std::collections::HashMap;

use ferry::import::locations::{choose, Choice, Kind, Location};
use ferry::import::order::{rules, Target};
use ferry::table::build::{build, BuildContext};

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn ferry_routes_the_imported_order_to_the_location_nginx_chooses() {
    let regexes = [r"\.js$", r"^/a", r"(?i)\.PNG$", r"b/", r"^/a/b$", r"x"];
    let pieces = ["/", "a", "b", "/a", "/b", ".js", ".png", "x", "/a/", "ab"];
    let mut rng = fastrand::Rng::with_seed(1515);
    let word = |rng: &mut fastrand::Rng, max: usize| {
        let mut s = String::from("/");
        for _ in 0..rng.usize(0..=max) {
            s.push_str(pieces[rng.usize(..pieces.len())]);
        }
        s.replace("//", "/")
    };
    let (mut configs, mut compared) = (0, 0);
    for _ in 0..200 {
        let mut level: Vec<Location> = Vec::new();
        for _ in 0..rng.usize(1..9) {
            let name = word(&mut rng, 3);
            let (kind, pattern) = match rng.usize(0..4) {
                0 => (Kind::Exact, None),
                1 => (Kind::Prefix { noregex: true }, None),
                2 => (Kind::Prefix { noregex: false }, None),
                _ => {
                    let p = regexes[rng.usize(..regexes.len())];
                    (Kind::Regex(regex::Regex::new(p).unwrap()), Some(p))
                }
            };
            let name = pattern.map_or(name, String::from);
            let same =
                |l: &Location| l.name == name && std::mem::discriminant(&l.kind) == std::mem::discriminant(&kind);
            if pattern.is_none() && level.iter().any(same) {
                continue; // nginx: duplicate location
            }
            let auto_redirect = name.ends_with('/') && rng.bool();
            level.push(Location { kind, name, auto_redirect, nested: vec![] });
        }
        let rules = rules(&level).unwrap();
        // Each rule a route answering with its target.
        let mut yaml = String::from("listeners:\n  - name: web\n    bind: 127.0.0.1:0\n    routes:\n");
        for r in &rules {
            let mut m = Vec::new();
            if let Some(e) = &r.exact {
                m.push(format!("path_exact: {}", quoted(e)));
            }
            if let Some(p) = &r.starts_with {
                m.push(format!("path_starts_with: {}", quoted(p)));
            }
            if let Some(i) = r.regex {
                m.push(format!("path_regex: {}", quoted(&level[i].name)));
            }
            let body = match r.target {
                Target::Location(i) => format!("L{i}"),
                Target::Redirect(i) => format!("R{i}"),
            };
            yaml.push_str(&format!("      - {{ match: {{ {} }}, respond: {{ body: {body} }} }}\n", m.join(", ")));
        }
        let cfg = ferry::config::Config::parse("rules.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let table = build(&cfg, 1, &BuildContext::default(), &HashMap::new());
        let web = table.listener("web").unwrap();
        configs += 1;
        for _ in 0..50 {
            let path = word(&mut rng, 4);
            let want = match choose(&level, &path) {
                Choice::Location(v) => Some(format!("L{}", v[0])),
                Choice::Redirect(v) => Some(format!("R{}", v[0])),
                Choice::None => None,
            };
            let got = web.lookup("h", &path, &http::Method::GET, &http::HeaderMap::new()).map(|r| {
                let body = r.actions.as_ref().and_then(|a| a.respond.as_ref()).and_then(|x| x.body.as_ref());
                body.map(|b| b.to_string()).unwrap_or_default()
            });
            assert_eq!(got, want, "{path}\n{yaml}");
            compared += 1;
        }
    }
    assert_eq!((configs, compared), (200, 10_000));
}
