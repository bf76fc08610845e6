//! nginx's location choice as an ordered list of first-match rules, ferry's way of routing.
//!
//! For one level of locations (a `server`'s), the rules are, in order:
//! 1. each `=` location: the exact path;
//! 2. each path one `/` short of a proxying location named `…/` (and not itself a location's
//!    name): a 301 to it (nginx's `auto_redirect`);
//! 3. the prefix locations, longest first; a `^~` one is one rule (its prefix), a plain one is one
//!    rule per regex location (its prefix *and* that regex, in file order) and then its prefix
//!    alone: under the longest matching prefix, nginx tries the regexes, then takes the prefix;
//! 4. each regex location alone, in file order (paths under no prefix location).
//!
//! A path under several prefixes meets the longest first, and no earlier rule can match it (a
//! longer prefix it does not start with; an exact path or a redirect it is not), so the first rule
//! that matches is nginx's choice; [`choose`](super::locations::choose) is the reference it is
//! tested against. ferry routes carry these rules as `path_exact`, `path_starts_with` and
//! `path_regex` (the last two together for rule 3).

use super::locations::{Kind, Location};

/// One rule: all its conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub exact: Option<String>,
    pub starts_with: Option<String>,
    /// The index of the regex location whose regex must match.
    pub regex: Option<usize>,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Location(usize),
    /// 301 to the location's name (with the query).
    Redirect(usize),
}

/// The rules for one level of locations; `Err` names a nested location (not carried over yet).
pub fn rules(level: &[Location]) -> Result<Vec<Rule>, usize> {
    if let Some(i) = level.iter().position(|l| !l.nested.is_empty()) {
        return Err(i);
    }
    let rule = |exact: Option<&str>, starts_with: Option<&str>, regex, target| Rule {
        exact: exact.map(Into::into),
        starts_with: starts_with.map(Into::into),
        regex,
        target,
    };
    let mut out = Vec::new();
    for (i, l) in level.iter().enumerate() {
        if matches!(l.kind, Kind::Exact) {
            out.push(rule(Some(&l.name), None, None, Target::Location(i)));
        }
    }
    let named = |p: &str| level.iter().any(|l| !matches!(l.kind, Kind::Regex(_)) && l.name == p);
    for (i, l) in level.iter().enumerate() {
        if let (true, false, Some(short)) =
            (l.auto_redirect, matches!(l.kind, Kind::Regex(_)), l.name.strip_suffix('/'))
        {
            if !short.is_empty() && !named(short) {
                out.push(rule(Some(short), None, None, Target::Redirect(i)));
            }
        }
    }
    let regexes: Vec<usize> = (0..level.len()).filter(|&i| matches!(level[i].kind, Kind::Regex(_))).collect();
    let mut prefixes: Vec<usize> = (0..level.len()).filter(|&i| matches!(level[i].kind, Kind::Prefix { .. })).collect();
    // Longest first; equal lengths cannot both match one path unless equal (nginx refuses that).
    prefixes.sort_by_key(|&i| std::cmp::Reverse(level[i].name.len()));
    for &p in &prefixes {
        let name = level[p].name.as_str();
        if matches!(level[p].kind, Kind::Prefix { noregex: false }) {
            for &r in &regexes {
                out.push(rule(None, Some(name), Some(r), Target::Location(r)));
            }
        }
        out.push(rule(None, Some(name), None, Target::Location(p)));
    }
    for &r in &regexes {
        out.push(rule(None, None, Some(r), Target::Location(r)));
    }
    Ok(out)
}

/// The first rule that matches `path` (ferry's first-match lookup, on the rules alone).
pub fn first_match(level: &[Location], rules: &[Rule], path: &str) -> Option<Target> {
    rules
        .iter()
        .find(|r| {
            r.exact.as_deref().is_none_or(|e| e == path)
                && r.starts_with.as_deref().is_none_or(|p| path.starts_with(p))
                && r.regex.is_none_or(|i| match &level[i].kind {
                    Kind::Regex(re) => re.is_match(path),
                    _ => false,
                })
        })
        .map(|r| r.target)
}

#[cfg(test)]
mod tests {
    use super::super::locations::{choose, sample, Choice};
    use super::*;

    /// Random levels of locations and random paths over a small alphabet (so prefixes, regexes and
    /// exact names collide often): the first matching rule is always nginx's choice.
    #[test]
    fn first_match_over_the_rules_is_nginx_s_choice() {
        let mut rng = fastrand::Rng::with_seed(15);
        let mut compared = 0;
        for _ in 0..3_000 {
            let level = sample::level(&mut rng, 7);
            let rules = rules(&level).unwrap();
            for _ in 0..40 {
                let path = sample::path(&mut rng, 4);
                let want = match choose(&level, &path) {
                    Choice::Location(v) => Some(Target::Location(v[0])),
                    Choice::Redirect(v) => Some(Target::Redirect(v[0])),
                    Choice::None => None,
                };
                let got = first_match(&level, &rules, &path);
                assert_eq!(got, want, "path {path} over {level:#?}\nrules {rules:#?}");
                compared += 1;
            }
        }
        assert_eq!(compared, 120_000);
    }
}
