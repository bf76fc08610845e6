//! nginx's location choice as an ordered list of first-match rules, ferry's way of routing.
//!
//! For one level of locations (a `server`'s), the rules are, in order:
//! 1. each `=` location: the exact path;
//! 2. each path one `/` short of a proxying location named `…/` (and not itself a location's
//!    name): a 301 to it (nginx's `auto_redirect`);
//! 3. the prefix locations, longest first. For each: first its nested locations' rules (the same
//!    four steps one level down, under its prefix); then, unless it is `^~`, one rule per regex
//!    location of its level (its prefix *and* that regex, in file order); then the regexes of the
//!    levels above that are still open (innermost first; a `^~` closes its own level only); then
//!    its prefix alone. Under the longest
//!    matching prefix nginx searches the nested locations, then tries the regexes, then takes the
//!    prefix;
//! 4. each regex location of the level alone, in file order (paths under no prefix location of
//!    that level; one level down, they still carry the outer prefix).
//!
//! A path under several prefixes meets the longest first, and no earlier rule can match it (a
//! longer prefix it does not start with; an exact path or a redirect it is not), so the first rule
//! that matches is nginx's choice; [`choose`](super::locations::choose) is the reference it is
//! tested against. ferry routes carry these rules as `path_exact`, `path_starts_with` and
//! `path_regex` (the last two together for rule 3).
//!
//! Locations are named by their path of indices from the top level down (`[2, 0]`: the first
//! location nested in the third).

use super::locations::{Kind, Location};

/// One rule: all its conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub exact: Option<String>,
    pub starts_with: Option<String>,
    /// The regex location whose regex must match.
    pub regex: Option<Vec<usize>>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Location(Vec<usize>),
    /// 301 to the location's name (with the query).
    Redirect(Vec<usize>),
}

/// The location at `path` (indices from the top level down).
pub fn at<'a>(level: &'a [Location], path: &[usize]) -> &'a Location {
    let (first, rest) = path.split_first().expect("a location path is never empty");
    rest.iter().fold(&level[*first], |l, &i| &l.nested[i])
}

/// The rules for the locations of a server. `Err` names a location nested where ferry cannot
/// follow (inside a regex or an exact location).
pub fn rules(level: &[Location]) -> Result<Vec<Rule>, Vec<usize>> {
    let mut out = Vec::new();
    one_level(level, &[], None, &[], &mut out)?;
    Ok(out)
}

/// `at`: this level's path; `within`: the prefix of the location it is nested in; `above`: the
/// regex locations of outer levels still to try (innermost first) once a prefix here is chosen.
fn one_level(
    level: &[Location],
    at: &[usize],
    within: Option<&str>,
    above: &[Vec<usize>],
    out: &mut Vec<Rule>,
) -> Result<(), Vec<usize>> {
    let here = |i: usize| {
        let mut v = at.to_vec();
        v.push(i);
        v
    };
    // One level down, every rule keeps the outer prefix, which an exact path states by itself.
    let rule = |exact: Option<&str>, starts_with: Option<&str>, regex, target| Rule {
        exact: exact.map(Into::into),
        starts_with: if exact.is_some() { None } else { starts_with.or(within).map(Into::into) },
        regex,
        target,
    };
    // An exact path outside the outer prefix never reaches this level.
    let reaches = |e: &str| within.is_none_or(|w| e.starts_with(w));
    for (i, l) in level.iter().enumerate() {
        if !l.nested.is_empty() && !matches!(l.kind, Kind::Prefix { .. }) {
            return Err(here(i));
        }
        if matches!(l.kind, Kind::Exact) && reaches(&l.name) {
            out.push(rule(Some(&l.name), None, None, Target::Location(here(i))));
        }
    }
    let named = |p: &str| level.iter().any(|l| !matches!(l.kind, Kind::Regex(_)) && l.name == p);
    for (i, l) in level.iter().enumerate() {
        if let (true, false, Some(short)) =
            (l.auto_redirect, matches!(l.kind, Kind::Regex(_)), l.name.strip_suffix('/'))
        {
            if !short.is_empty() && !named(short) && reaches(short) {
                out.push(rule(Some(short), None, None, Target::Redirect(here(i))));
            }
        }
    }
    let regexes: Vec<Vec<usize>> =
        (0..level.len()).filter(|&i| matches!(level[i].kind, Kind::Regex(_))).map(here).collect();
    let mut prefixes: Vec<usize> = (0..level.len()).filter(|&i| matches!(level[i].kind, Kind::Prefix { .. })).collect();
    // Longest first; equal lengths cannot both match one path unless equal (nginx refuses that).
    prefixes.sort_by_key(|&i| std::cmp::Reverse(level[i].name.len()));
    for &p in &prefixes {
        let name = level[p].name.as_str();
        // Regexes tried once this prefix is the longest here (after its nested locations): this
        // level's unless it is `^~`, then those still open above (a `^~` closes only its own level).
        let mut then: Vec<Vec<usize>> = Vec::new();
        if matches!(level[p].kind, Kind::Prefix { noregex: false }) {
            then.extend(regexes.iter().cloned());
        }
        then.extend(above.iter().cloned());
        if !level[p].nested.is_empty() {
            one_level(&level[p].nested, &here(p), Some(name), &then, out)?;
        }
        for r in &then {
            out.push(rule(None, Some(name), Some(r.clone()), Target::Location(r.clone())));
        }
        out.push(rule(None, Some(name), None, Target::Location(here(p))));
    }
    for r in regexes {
        out.push(rule(None, None, Some(r.clone()), Target::Location(r)));
    }
    Ok(())
}

/// The first rule that matches `path` (ferry's first-match lookup, on the rules alone).
pub fn first_match(level: &[Location], rules: &[Rule], path: &str) -> Option<Target> {
    rules
        .iter()
        .find(|r| {
            r.exact.as_deref().is_none_or(|e| e == path)
                && r.starts_with.as_deref().is_none_or(|p| path.starts_with(p))
                && r.regex.as_deref().is_none_or(|i| match &at(level, i).kind {
                    Kind::Regex(re) => re.is_match(path),
                    _ => false,
                })
        })
        .map(|r| r.target.clone())
}

#[cfg(test)]
mod tests {
    use super::super::locations::{choose, sample, Choice};
    use super::*;

    /// Random levels of locations (nested ones too) and random paths over a small alphabet (so
    /// prefixes, regexes and exact names collide often): the first matching rule is always
    /// nginx's choice.
    #[test]
    fn first_match_over_the_rules_is_nginx_s_choice() {
        let mut rng = fastrand::Rng::with_seed(15);
        let (mut compared, mut nested) = (0, 0);
        for _ in 0..3_000 {
            let level = sample::level(&mut rng, 7);
            nested += usize::from(level.iter().any(|l| !l.nested.is_empty()));
            let rules = rules(&level).unwrap();
            for _ in 0..40 {
                let path = sample::path(&mut rng, 4);
                let want = match choose(&level, &path) {
                    Choice::Location(v) => Some(Target::Location(v)),
                    Choice::Redirect(v) => Some(Target::Redirect(v)),
                    Choice::None => None,
                };
                let got = first_match(&level, &rules, &path);
                assert_eq!(got, want, "path {path} over {level:#?}\nrules {rules:#?}");
                compared += 1;
            }
        }
        assert_eq!(compared, 120_000);
        assert!(nested > 1_000, "only {nested} of 3,000 levels had nested locations");
    }
}
