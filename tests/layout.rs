//! The layering in src/lib.rs's layout note, checked against the source: a module uses only
//! modules below it (or itself). Reads every file under src/ and every `crate::NAME` path outside
//! comments; a use that points sideways or up fails with the file and line.

use std::path::Path;

/// (module, layer): higher layers may use lower ones only.
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("tls", 1),
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
    ("server", 5),
    // Outside the layers, on top: the demo and the fuzz targets drive everything.
    ("demo", 6),
    ("fuzzing", 6),
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
