//! The layering in src/lib.rs's layout note, checked against the source: a module uses only
//! modules below it (or itself). Reads every file under src/ and every `crate::NAME` path outside
//! comments; a use that points sideways or up fails with the file and line.

use std::path::Path;

/// (module, layer): higher layers may use lower ones only.
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("tls", 1),
    ("http1", 0),
    ("auth", 1),
    ("files", 1),
    ("import", 1),
    ("metrics", 1),
    ("access_log", 2),
    ("upstream", 2),
    ("balance", 2),
    ("limit", 2),
    ("table", 3),
    ("proxy", 4),
    ("discovery", 4),
    ("admin", 4),
    ("sources", 5),
    ("server", 6),
    // Outside the layers, on top: the demo and the fuzz targets drive everything.
    ("demo", 7),
    ("fuzzing", 7),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if first == "lib" || first == "main" {
            continue;
        }
        let Some(own) = layer(&first) else {
            wrong.push(format!("{}: module `{first}` is not in the layout's layers", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let name: String =
                    line[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                checked += 1;
                if name == first {
                    continue;
                }
                match layer(&name) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!("{}:{}: `{first}` uses `crate::{name}`", rel.display(), i + 1)),
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} crate:: paths found; is the scan reading the sources?");
    assert!(wrong.is_empty(), "uses against the layering:\n{}", wrong.join("\n"));
}

/// The modules of `proxy/` one file uses: `super::NAME` from a direct child, `super::super::NAME`
/// or `crate::proxy::NAME` from anywhere below (comments skipped).
fn proxy_uses(rel: &Path, text: &str) -> Vec<String> {
    let depth = rel.components().count(); // proxy/x.rs: 2; proxy/h1/x.rs: 3
    let is_mod = rel.file_name().is_some_and(|f| f == "mod.rs");
    // From proxy/h1/mod.rs `super::` is proxy; from proxy/h1/codec.rs it is h1.
    let sup = if depth == 2 || (depth == 3 && is_mod) { "super::" } else { "super::super::" };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for prefix in [sup, "crate::proxy::"] {
            for (at, _) in line.match_indices(prefix) {
                if prefix == "super::" && line[..at].ends_with("super::") {
                    continue;
                }
                let name: String =
                    line[at + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "super" {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// No module of `proxy/` uses one that uses it back, directly or around a longer loop (the
/// import circles the last review flagged: body ↔ h1 ↔ log), and ferry's HTTP/1 server does not
/// borrow its upstream client's module: both stand on `http1`.
#[test]
fn proxy_has_no_import_circle_and_the_server_does_not_use_the_client() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src.join("proxy"), &mut all);
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut wrong = Vec::new();
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let own = parts[1].trim_end_matches(".rs").to_string();
        if own == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        if own == "h1" && text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains("upstream::h1")) {
            wrong.push(format!("{}: the HTTP/1 server uses the upstream client's module", rel.display()));
        }
        for used in proxy_uses(rel, &text) {
            if used != own
                && all
                    .iter()
                    .any(|p| p.file_stem().is_some_and(|s| s == used.as_str()) || p.ends_with(format!("{used}/mod.rs")))
            {
                edges.entry(own.clone()).or_default().insert(used);
            }
        }
    }
    assert!(edges.values().map(|s| s.len()).sum::<usize>() > 10, "too few proxy edges found: {edges:?}");
    // A loop: some module reaches itself.
    for start in edges.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == start {
                    wrong.push(format!("import circle: {} → {start}", path.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    wrong.dedup();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
